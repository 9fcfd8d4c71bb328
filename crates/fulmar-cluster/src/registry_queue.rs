//! The session changes waiting for the registry loop, bounded: a change that
//! makes a waiting one pointless replaces it, so while NATS is away (each
//! write then waits for its timeout) the queue holds about one record and
//! one removal per client, not one entry per connection, SUBSCRIBE and
//! disconnection.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;

use crate::sessions::SessionEvent;

/// Records and removals waiting, at most (claims and releases are always
/// kept: they carry the revisions the registry writes depend on). Beyond,
/// a change is dropped and counted: the registry entry of its client stays
/// as it was until the client's next change.
pub(crate) const MAX_PENDING: usize = 1 << 20;

/// Where the waiting removal and record of one client are, by sequence
/// number, since its last claim or release.
#[derive(Clone, Copy, Default)]
struct Slots {
    gone: Option<u64>,
    record: Option<u64>,
}

#[derive(Default)]
struct Pending {
    /// In order; `None` where a change was replaced.
    events: VecDeque<Option<SessionEvent>>,
    /// The sequence number of `events[0]`.
    head: u64,
    clients: HashMap<String, Slots>,
    /// `None` entries in `events`.
    holes: usize,
    closed: bool,
}

/// Drops `client`'s entry if it points at nothing (a change was refused).
fn forget_if_empty(clients: &mut HashMap<String, Slots>, client: &str) {
    if clients
        .get(client)
        .is_some_and(|s| s.gone.is_none() && s.record.is_none())
    {
        clients.remove(client);
    }
}

/// The client an event is about.
fn client_of(event: &SessionEvent) -> &String {
    match event {
        SessionEvent::Claimed(c, _)
        | SessionEvent::Released(c, _)
        | SessionEvent::Online(c, _)
        | SessionEvent::Offline(c, _)
        | SessionEvent::Gone(c) => c,
    }
}

impl Pending {
    /// Drops the replaced entries once they are most of the queue, and
    /// numbers the rest again from `head`.
    fn compact(&mut self) {
        if self.holes <= 64 || self.holes * 2 <= self.events.len() {
            return;
        }
        self.events.retain(Option::is_some);
        self.holes = 0;
        self.clients.clear();
        for (seq, event) in (self.head..).zip(self.events.iter().flatten()) {
            let client = client_of(event);
            match event {
                SessionEvent::Claimed(..) | SessionEvent::Released(..) => {
                    self.clients.remove(client);
                }
                SessionEvent::Gone(_) => {
                    self.clients.entry(client.clone()).or_default().gone = Some(seq)
                }
                SessionEvent::Online(..) | SessionEvent::Offline(..) => {
                    self.clients.entry(client.clone()).or_default().record = Some(seq);
                }
            }
        }
    }
}

/// See the module documentation.
#[derive(Default)]
pub(crate) struct EventQueue {
    pending: Mutex<Pending>,
    ready: Notify,
}

impl EventQueue {
    /// Queues `event`, replacing what it makes pointless:
    /// - a record (`Online`/`Offline`) replaces the client's waiting record
    ///   in its place; it stays `Online` if either was (a connect's record
    ///   may create the entry);
    /// - a removal (`Gone`) is not queued twice; a second one drops the
    ///   client's record queued after the first (written and removed, it
    ///   would leave what the removal alone leaves), so a client that comes
    ///   and goes leaves at most a record, a removal and a record waiting;
    /// - a claim or release is queued as is, and what follows it for the
    ///   same client queues after it.
    ///
    /// Returns false when the change was dropped (the queue is closed, or
    /// [`MAX_PENDING`] changes wait).
    pub(crate) fn push(&self, event: SessionEvent) -> bool {
        let mut guard = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        guard.compact();
        let Pending {
            events,
            head,
            clients,
            holes,
            closed,
        } = &mut *guard;
        if *closed {
            return false;
        }
        let next = *head + events.len() as u64;
        let full = events.len() >= MAX_PENDING;
        let index = |seq: u64| usize::try_from(seq - *head).ok();
        match event {
            SessionEvent::Claimed(ref client, _) | SessionEvent::Released(ref client, _) => {
                clients.remove(client);
            }
            SessionEvent::Gone(ref client) => {
                let slots = clients.entry(client.clone()).or_default();
                if let Some(gone) = slots.gone {
                    // A record since that removal: written and removed, it
                    // would leave what the removal alone leaves.
                    if let Some(replaced) = slots
                        .record
                        .filter(|record| *record > gone)
                        .and_then(index)
                        .and_then(|slot| events.get_mut(slot))
                    {
                        *replaced = None;
                        *holes += 1;
                        slots.record = None;
                    }
                    return true;
                }
                // The first removal keeps the record before it: written, it
                // takes over an entry that names this node without this
                // node knowing its revision (after a restart), so that the
                // removal deletes it.
                if full {
                    forget_if_empty(clients, client);
                    return false;
                }
                slots.gone = Some(next);
            }
            SessionEvent::Online(ref client, _) | SessionEvent::Offline(ref client, _) => {
                let slots = clients.entry(client.clone()).or_default();
                // Replaced in its place unless a removal came after it.
                let replaceable = slots
                    .record
                    .filter(|record| slots.gone.is_none_or(|gone| *record > gone));
                if let Some(Some(Some(waiting))) =
                    replaceable.and_then(index).map(|slot| events.get_mut(slot))
                {
                    let online = matches!(waiting, SessionEvent::Online(..));
                    *waiting = match event {
                        SessionEvent::Offline(client, record) if online => {
                            SessionEvent::Online(client, record)
                        }
                        event => event,
                    };
                    return true;
                }
                if full {
                    forget_if_empty(clients, client);
                    return false;
                }
                slots.record = Some(next);
            }
        }
        events.push_back(Some(event));
        drop(guard);
        self.ready.notify_one();
        true
    }

    /// Takes up to `max` changes, in order (none when none waits).
    pub(crate) fn pop(&self, max: usize) -> Vec<SessionEvent> {
        let mut guard = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let Pending {
            events,
            head,
            clients,
            holes,
            ..
        } = &mut *guard;
        let mut out = Vec::new();
        while out.len() < max
            && let Some(slot) = events.pop_front()
        {
            let seq = *head;
            *head += 1;
            let Some(event) = slot else {
                *holes -= 1;
                continue;
            };
            let client = client_of(&event);
            if let Some(slots) = clients.get_mut(client) {
                if slots.gone == Some(seq) {
                    slots.gone = None;
                }
                if slots.record == Some(seq) {
                    slots.record = None;
                }
                if slots.gone.is_none() && slots.record.is_none() {
                    clients.remove(client);
                }
            }
            out.push(event);
        }
        out
    }

    /// Waits until a change may be waiting.
    pub(crate) async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Refuses changes from now on (they are still taken by `pop`).
    pub(crate) fn close(&self) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
    }

    /// Changes waiting (replaced ones included until taken).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .events
            .len()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn names(events: &[SessionEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                SessionEvent::Claimed(c, r) => format!("claimed {c} {r}"),
                SessionEvent::Released(c, r) => format!("released {c} {r}"),
                SessionEvent::Online(c, r) => format!("online {c} {r:?}"),
                SessionEvent::Offline(c, r) => format!("offline {c} {r:?}"),
                SessionEvent::Gone(c) => format!("gone {c}"),
            })
            .collect()
    }

    fn rec(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn queued(events: Vec<SessionEvent>) -> Vec<String> {
        let queue = EventQueue::default();
        for event in events {
            assert!(queue.push(event));
        }
        let out = queue.pop(usize::MAX);
        assert!(queue.pop(usize::MAX).is_empty());
        names(&out)
    }

    #[test]
    fn records_replaced_by_a_later_one_are_not_written() {
        let got = queued(vec![
            SessionEvent::Gone("x".into()),
            SessionEvent::Claimed("x".into(), 7),
            SessionEvent::Online("x".into(), rec("1")),
            SessionEvent::Online("y".into(), rec("a")),
            SessionEvent::Online("x".into(), rec("2")),
            SessionEvent::Offline("x".into(), rec("3")),
            SessionEvent::Gone("y".into()),
            SessionEvent::Online("y".into(), rec("b")),
            SessionEvent::Offline("y".into(), rec("c")),
        ]);
        assert_eq!(
            got,
            [
                "gone x",
                "claimed x 7",
                // In x's first record's place: clients' entries are apart.
                "online x b\"3\"",
                "online y b\"a\"",
                "gone y",
                "online y b\"c\"",
            ]
        );
    }

    #[test]
    fn a_release_keeps_its_place_among_the_records() {
        let got = queued(vec![
            SessionEvent::Claimed("x".into(), 7),
            SessionEvent::Online("x".into(), rec("1")),
            SessionEvent::Released("x".into(), 7),
            SessionEvent::Online("x".into(), rec("2")),
        ]);
        assert_eq!(
            got,
            [
                "claimed x 7",
                "online x b\"1\"",
                "released x 7",
                "online x b\"2\""
            ]
        );
    }

    // The bound: a client that connects, subscribes and disconnects over and
    // over while nothing is taken leaves a record, a removal and a record
    // waiting (the first record is kept: see `push`).
    #[test]
    fn a_client_coming_and_going_leaves_three_changes_waiting() {
        let queue = EventQueue::default();
        for i in 0..10_000 {
            let record = Bytes::from(format!("{i}"));
            assert!(queue.push(SessionEvent::Online("x".into(), record.clone())));
            assert!(queue.push(SessionEvent::Online("x".into(), record.clone())));
            assert!(queue.push(SessionEvent::Offline("x".into(), record)));
            assert!(queue.push(SessionEvent::Gone("x".into())));
        }
        assert!(queue.push(SessionEvent::Online("x".into(), rec("last"))));
        assert_eq!(
            names(&queue.pop(usize::MAX)),
            ["online x b\"0\"", "gone x", "online x b\"last\""]
        );
        assert!(queue.pop(usize::MAX).is_empty());
        // Replaced entries are dropped once they are most of the queue.
        for i in 0..10_000 {
            let (x, y) = (format!("x{}", i % 10), format!("y{}", i % 10));
            queue.push(SessionEvent::Online(x.clone(), rec("r")));
            queue.push(SessionEvent::Online(y.clone(), rec("r")));
            queue.push(SessionEvent::Gone(x));
        }
        assert!(queue.len() <= 2 * 65 + 60, "{}", queue.len());
        let left = names(&queue.pop(usize::MAX));
        // Per k: x's first record and its removal (the later records went
        // with the later removals), and y's record.
        assert_eq!(left.len(), 30, "{left:?}");
        assert!(left.contains(&"gone x3".to_owned()), "{left:?}");
        assert!(left.contains(&"online x3 b\"r\"".to_owned()), "{left:?}");
        assert!(left.contains(&"online y3 b\"r\"".to_owned()), "{left:?}");
    }

    #[test]
    fn taking_part_of_the_queue_keeps_the_replacement_rules() {
        let queue = EventQueue::default();
        queue.push(SessionEvent::Online("x".into(), rec("1")));
        queue.push(SessionEvent::Online("y".into(), rec("a")));
        assert_eq!(names(&queue.pop(1)), ["online x b\"1\""]);
        // x's record was taken: a new one queues after y's.
        queue.push(SessionEvent::Offline("x".into(), rec("2")));
        queue.push(SessionEvent::Offline("y".into(), rec("b")));
        assert_eq!(
            names(&queue.pop(usize::MAX)),
            ["online y b\"b\"", "offline x b\"2\""]
        );
    }

    #[test]
    fn a_full_or_closed_queue_refuses_changes_but_not_claims() {
        let queue = EventQueue::default();
        for i in 0..MAX_PENDING {
            assert!(queue.push(SessionEvent::Gone(format!("c{i}"))));
        }
        assert!(!queue.push(SessionEvent::Gone("more".into())));
        assert!(!queue.push(SessionEvent::Online("more".into(), rec("r"))));
        // Changes of a client already waiting still replace theirs.
        assert!(queue.push(SessionEvent::Gone("c0".into())));
        assert!(queue.push(SessionEvent::Claimed("more".into(), 3)));
        assert_eq!(queue.len(), MAX_PENDING + 1);
        queue.close();
        assert!(!queue.push(SessionEvent::Claimed("late".into(), 4)));
        assert_eq!(queue.pop(usize::MAX).len(), MAX_PENDING + 1);
    }
}
