//! Rebuilding the broker's state from a [`Snapshot`] at start.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fulmar_codec::{PacketId, Publish, QoS};
use fulmar_session::{Outgoing, SessionState};
use fulmar_topic::TopicName;

use super::journal::Journal;
use super::{Snapshot, StoreOp, StoredMessage, StoredSession, WillDue, unix_millis};
use crate::ClientInfo;
use crate::state::{PendingWill, Queued, Retained, SessionEntry, State, offline_size, will_size};

/// What a recovery found.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Recovered {
    pub(crate) sessions: usize,
    pub(crate) expired_sessions: usize,
    pub(crate) messages: usize,
    pub(crate) retained: usize,
    pub(crate) skipped: usize,
}

/// The `Instant` of a Unix time in milliseconds, seen from `now` / `now_unix`.
pub(crate) fn instant_of(at: u64, now: Instant, now_unix: u64) -> Instant {
    let ago = Duration::from_millis(now_unix.saturating_sub(at));
    now.checked_sub(ago).unwrap_or(now)
}

/// The Unix time in milliseconds of an `Instant`, seen from `now` /
/// `now_unix` (the inverse of [`instant_of`]).
pub(crate) fn unix_of(at: Instant, now: Instant, now_unix: u64) -> u64 {
    match at.checked_duration_since(now) {
        Some(ahead) => {
            now_unix.saturating_add(u64::try_from(ahead.as_millis()).unwrap_or(u64::MAX))
        }
        None => {
            let ago = now.saturating_duration_since(at).as_millis();
            now_unix.saturating_sub(u64::try_from(ago).unwrap_or(u64::MAX))
        }
    }
}

/// Counts the time since `stored_at` (Unix milliseconds) against the Message
/// Expiry Interval of a message in flight (v5:MQTT-3.3.2-6): it is sent again
/// however long that was (MQTT-4.4.0-1), with what is left, 0 once its
/// lifetime has passed (see [`fulmar_session::message_expiry_left`]).
pub(crate) fn age_in_flight(publish: &mut Publish, stored_at: u64, now_unix: u64) {
    if let Some(interval) = &mut publish.properties.message_expiry_interval {
        let waited = now_unix.saturating_sub(stored_at) / 1000;
        let left = u64::from(*interval).saturating_sub(waited);
        *interval = u32::try_from(left).unwrap_or(0);
    }
}

/// When a disconnected session ends: its Session Expiry Interval counted
/// from `since` (Unix milliseconds); `None` when it never expires.
/// Counted on the Unix clock: `Instant`s cannot reach back before the
/// machine started, and a session stored before a reboot would live longer.
pub(crate) fn expiry_deadline(
    expiry: u32,
    since: u64,
    now: Instant,
    now_unix: u64,
) -> Option<Instant> {
    if expiry == u32::MAX {
        return None;
    }
    let lasts = u64::from(expiry).saturating_mul(1000);
    let left = lasts.saturating_sub(now_unix.saturating_sub(since));
    now.checked_add(Duration::from_millis(left))
}

/// When a stored will is due, in Unix milliseconds: the will of a client
/// connected when its record was written ([`WillDue::AfterDisconnect`]) its
/// Will Delay Interval after `since` (when its session's connection ended;
/// for a crash, the restart), and no later than the session's end, `expiry`
/// seconds after that (v5 3.1.3.2.2: the will is published when the delay
/// has passed or the session ends, whichever comes first).
pub(crate) fn due_time(due: WillDue, since: u64, expiry: u32) -> u64 {
    match due {
        WillDue::At(at) => at,
        WillDue::AfterDisconnect(delay) => {
            since.saturating_add(u64::from(delay.min(expiry)).saturating_mul(1000))
        }
    }
}

/// Loads `snapshot` into an empty `state`: sessions (expired ones are
/// dropped from the store), their subscriptions, queued and in-flight
/// messages and inbound QoS 2 identifiers, and retained messages.
/// A session keeps at most `max_session_expiry` (the broker's limit now,
/// which may be lower than when it was stored).
pub(crate) fn recover(
    state: &mut State,
    snapshot: Snapshot,
    journal: &Journal,
    max_session_expiry: u32,
) -> Recovered {
    let now = Instant::now();
    let now_unix = unix_millis();
    let unreadable: std::collections::HashSet<Arc<str>> =
        snapshot.unreadable_sessions.iter().cloned().collect();
    let mut found = Recovered {
        skipped: snapshot.skipped,
        ..Recovered::default()
    };
    let mut max_seq = 0;
    let mut messages: HashMap<Arc<str>, Vec<(u64, StoredMessage)>> = HashMap::new();
    for (client, seq, message) in snapshot.messages {
        max_seq = max_seq.max(seq);
        messages.entry(client).or_default().push((seq, message));
    }
    let mut incoming: HashMap<Arc<str>, Vec<PacketId>> = HashMap::new();
    for (client, id) in snapshot.incoming {
        incoming.entry(client).or_default().push(id);
    }
    for mut stored in snapshot.sessions {
        let id = stored.client_id.clone();
        // A session connected at the crash counts as disconnected now. That
        // start goes to the store (below): a later restart counts on from
        // it rather than from itself again, which kept a session for ever
        // on a broker restarted more often than its interval.
        let since = stored.disconnected_at.unwrap_or(now_unix);
        let expiry = stored.expiry_interval.min(max_session_expiry);
        if let Some(will) = &mut stored.will {
            // The will of a client connected at the crash: its connection
            // ended then, as far as anyone can tell (MQTT-3.1.2-8).
            will.due = WillDue::At(due_time(will.due, since, expiry));
        }
        let record_start = stored.disconnected_at.is_none().then(|| StoredSession {
            disconnected_at: Some(since),
            ..stored.clone()
        });
        let mut expires_at = expiry_deadline(expiry, since, now, now_unix);
        let will = stored.will.map(|will| PendingWill {
            // Counted, never refused: the limit may have been lowered since.
            _charge: Some(state.will_budget.charge(will_size(&will.publish))),
            // Already due: at once (at start, before the listeners).
            at: now
                .checked_add(Duration::from_millis(
                    due_time(will.due, since, expiry).saturating_sub(now_unix),
                ))
                .unwrap_or(now),
            info: ClientInfo {
                client_id: id.to_string(),
                username: will.username,
                protocol_version: will.protocol_version,
            },
            publish: will.publish,
        });
        if expires_at.is_some_and(|at| at <= now) && will.is_some() {
            // Ended while the broker was down: kept until the first round
            // of deadlines (at start) ends it, publishing its will
            // (MQTT-3.1.2-8).
            expires_at = Some(now);
        } else if expires_at.is_some_and(|at| at <= now) {
            journal.push(StoreOp::DeleteSession(id.clone()));
            messages.remove(&id);
            incoming.remove(&id);
            found.expired_sessions += 1;
            continue;
        }
        let mut entry = SessionEntry {
            persistent: true,
            expiry,
            ..SessionEntry::default()
        };
        entry.away().expires_at = expires_at;
        entry.away().disconnected_at = Some(since);
        if let Some(will) = will {
            state.schedule(&id, will.at);
            entry.away().will = Some(Box::new(will));
        }
        found.skipped +=
            state.restore_subscriptions(&id, &stored.subscriptions, &mut entry.filters);
        let mut list = messages.remove(&id).unwrap_or_default();
        list.sort_unstable_by_key(|(seq, _)| *seq);
        found.messages += list.len();
        let (outgoing, queued) = resume_order(&id, list, &mut entry, journal, now, now_unix);
        let mut ids = incoming.remove(&id).unwrap_or_default();
        ids.sort_unstable();
        ids.dedup();
        entry.away().stored = SessionState::from_parts(outgoing, ids).unwrap_or_else(|reason| {
            tracing::warn!(client = %id, reason, "stored in-flight state dropped");
            SessionState::default()
        });
        entry.away().offline_bytes = queued.iter().map(|q| q.publish.memory_size()).sum();
        // Counted, never refused: the limit may have been lowered since.
        entry.away().offline_charge = Some(
            state
                .offline_budget
                .charge(queued.iter().map(|q| offline_size(&q.publish)).sum()),
        );
        entry.away().offline = queued;
        // Aged up to now (`resume_order`): the time until a connection takes
        // it counts from here (v5:MQTT-3.3.2-6).
        entry.away().stored_at = Some(now);
        if let Some(at) = expires_at {
            state.schedule(&id, at);
        }
        if let Some(record) = record_start {
            journal.push(StoreOp::PutSession(record));
        }
        state.sessions.insert(id, Box::new(entry));
        found.sessions += 1;
    }
    // Messages and inbound identifiers of no session read: written after
    // the session ended, or their session's record could not be read. In
    // the second case they are kept (another version may read that record);
    // a new session under the same identifier clears them first (see the
    // connection's `register` and `install_session`), so they never join
    // another session.
    let mut kept = 0;
    for (client, list) in messages {
        if unreadable.contains(&client) {
            kept += list.len();
            continue;
        }
        for (seq, _) in list {
            journal.push(StoreOp::DeleteMessage {
                client: client.clone(),
                seq,
            });
        }
    }
    for (client, ids) in incoming {
        if unreadable.contains(&client) {
            kept += ids.len();
            continue;
        }
        for packet_id in ids {
            journal.push(StoreOp::RemoveIncoming {
                client: client.clone(),
                packet_id,
            });
        }
    }
    if kept > 0 {
        tracing::warn!(
            records = kept,
            sessions = unreadable.len(),
            "records of sessions that could not be read are kept"
        );
    }
    for (topic, m) in snapshot.retained {
        let Ok(name) = topic.parse::<TopicName>() else {
            // Never matched by a subscription: it would stay for ever.
            found.skipped += 1;
            journal.push(StoreOp::DeleteRetained { topic });
            continue;
        };
        let waited = Duration::from_millis(now_unix.saturating_sub(m.stored_at));
        let expiry = m.publish.properties.message_expiry_interval;
        if expiry.is_some_and(|interval| waited.as_secs() >= u64::from(interval)) {
            // Expired while the broker was down.
            journal.push(StoreOp::DeleteRetained { topic });
            continue;
        }
        let value = Retained {
            publish: m.publish,
            stored: instant_of(m.stored_at, now, now_unix),
            system: false,
        };
        state.put_retained(name, value);
        found.retained += 1;
    }
    state.next_seq = max_seq;
    found
}

/// Splits a session's stored messages (in `seq` order) into what goes back
/// in flight and what stays queued.
///
/// The store knows the packet identifier of a QoS 2 message once it was sent
/// (`MarkSent`), and that of a QoS 1 message once it went out (`MarkSent`
/// too, not waited for: one sent just before a crash may lack it). Messages go in
/// flight in `seq` order, so every message stored before the last one known
/// to be sent was sent too: those are resent first, in their original order
/// [MQTT-4.6.0-1], with DUP (those known with their identifier
/// [MQTT-4.4.0-1], the others with identifiers none of those holds). Later
/// messages stay queued.
fn resume_order(
    client: &Arc<str>,
    list: Vec<(u64, StoredMessage)>,
    entry: &mut SessionEntry,
    journal: &Journal,
    now: Instant,
    now_unix: u64,
) -> (Vec<Outgoing>, VecDeque<Queued>) {
    // Messages that keep their identifier: the first with each one (QoS 2
    // ones, and QoS 1 ones in flight when their connection ended).
    let mut kept = vec![false; list.len()];
    let mut used = std::collections::HashSet::new();
    for (i, (_, m)) in list.iter().enumerate() {
        if let Some(pid) = m.packet_id
            && m.publish.qos != QoS::AtMostOnce
            && used.insert(pid)
        {
            kept[i] = true;
        }
    }
    let last_sent = kept.iter().rposition(|k| *k);
    let mut free = (1..=u16::MAX)
        .filter_map(PacketId::new)
        .filter(|pid| !used.contains(pid));
    let mut outgoing = Vec::new();
    let mut queued = VecDeque::new();
    for (i, (seq, m)) in list.into_iter().enumerate() {
        let pid = if kept[i] {
            m.packet_id
        } else if last_sent.is_some_and(|last| i < last) && m.publish.qos != QoS::AtMostOnce {
            free.next()
        } else {
            None
        };
        let Some(pid) = pid else {
            queued.push_back(Queued {
                publish: m.publish,
                since: instant_of(m.stored_at, now, now_unix),
                seq: Some(seq),
                // Not kept in the store.
                shared: false,
            });
            continue;
        };
        entry.away().inflight.insert(pid, seq);
        if m.released && kept[i] {
            outgoing.push(Outgoing::PubRel(pid));
            continue;
        }
        if !kept[i] && m.publish.qos == QoS::ExactlyOnce {
            // Its new identifier, so that another restart resends it as sent.
            journal.push(StoreOp::MarkSent {
                client: client.clone(),
                seq,
                packet_id: pid,
                released: false,
            });
        }
        let mut publish = m.publish;
        publish.packet_id = Some(pid);
        publish.dup = true;
        age_in_flight(&mut publish, m.stored_at, now_unix);
        outgoing.push(Outgoing::Publish(Box::new(publish)));
    }
    (outgoing, queued)
}

#[cfg(test)]
mod tests {
    use fulmar_codec::MqttString;

    use super::*;

    // A message in flight is sent again however long it waited, with what
    // is left: 0 once its lifetime passed (it went with 1, as if a second
    // were left; found by a differential review); one that came with 0
    // keeps 0.
    // v5:MQTT-3.3.2-6
    #[test]
    fn a_message_in_flight_ages_but_is_sent_again() {
        let aged = |interval: u32, waited_ms: u64| {
            let mut p = Publish::new(MqttString::from("t"), bytes::Bytes::new());
            p.properties.message_expiry_interval = Some(interval);
            age_in_flight(&mut p, 1_000, 1_000 + waited_ms);
            p.properties.message_expiry_interval
        };
        assert_eq!(aged(60, 15_000), Some(45));
        assert_eq!(aged(60, 600_000), Some(0));
        assert_eq!(aged(0, 5_000), Some(0));
    }

    // v5:MQTT-3.1.2-8 (published once the Will Delay Interval has passed or
    // the session ends, whichever comes first): the will of a client
    // connected at a crash is due its delay after `since`, no later than
    // the session's end; one due at a time stays due then.
    #[test]
    fn a_will_of_a_connected_client_is_due_by_its_delay_or_the_session_end() {
        let since = 1_000_000;
        let due = |d, expiry| due_time(d, since, expiry);
        assert_eq!(due(WillDue::AfterDisconnect(0), 60), since);
        assert_eq!(due(WillDue::AfterDisconnect(30), 60), since + 30_000);
        assert_eq!(due(WillDue::AfterDisconnect(3600), 60), since + 60_000);
        assert_eq!(
            due(WillDue::AfterDisconnect(u32::MAX), u32::MAX),
            since + u64::from(u32::MAX) * 1000
        );
        assert_eq!(due(WillDue::At(5), 60), 5);
        assert_eq!(
            due_time(WillDue::AfterDisconnect(9), u64::MAX, 60),
            u64::MAX
        );
    }
}
