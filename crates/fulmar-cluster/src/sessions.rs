//! Sessions across nodes: the registry of which node holds each client's
//! session (`{prefix}_sessions`), taking a session from the node that holds
//! it, and answering such requests from other nodes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use async_nats::{Client, StatusCode, Subscriber};
use bytes::{BufMut, Bytes, BytesMut};
use fulmar_broker::{BrokerHandle, SessionExport, SessionUnavailable, StoredSession};
use futures::StreamExt;
use tokio::sync::watch;

use crate::cluster::{client_kv_key, lock, node_key};
use crate::registry_queue::EventQueue;

/// The version byte of registry values and take-session messages.
const VERSION: u8 = 1;

/// Take-session reply kinds.
const REPLY_NONE: u8 = 0;
const REPLY_PART: u8 = 1;
const REPLY_LAST: u8 = 2;
/// The node asked claimed the session from a gone node whose state it could
/// not read (it refused the CONNECT): the requester reads that node's state.
/// The part is the gone node's id.
const REPLY_GONE: u8 = 3;

/// Request flag: the requester discards the state (Clean Start).
const FLAG_DISCARD: u8 = 1;

/// The largest session export a node accepts from another one.
const MAX_EXPORT: usize = 256 * 1024 * 1024;

/// Registry writes retried when the entry changed meanwhile (the holder
/// writing its record, another node claiming it); each step waits a little
/// longer, and [`Sessions::timeout`] bounds them all.
const CLAIM_ATTEMPTS: u32 = 64;

#[derive(Default)]
pub(crate) struct SessionCounters {
    pub(crate) claimed: AtomicU64,
    pub(crate) imported: AtomicU64,
    pub(crate) exported: AtomicU64,
    pub(crate) restored: AtomicU64,
    pub(crate) restored_whole: AtomicU64,
    /// CONNECTs refused: a gone node's state could not be read.
    pub(crate) unavailable: AtomicU64,
    pub(crate) adopted: AtomicU64,
    pub(crate) unanswered: AtomicU64,
    pub(crate) invalid: AtomicU64,
    pub(crate) registry_errors: AtomicU64,
    pub(crate) registry_writes: AtomicU64,
    pub(crate) wills_cancelled: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A change the broker reported, for the registry.
pub(crate) enum SessionEvent {
    /// This node wrote the registry entry at this revision (at connect).
    Claimed(String, u64),
    /// This node gave the entry it wrote at this revision back to the node
    /// it had claimed it from (the CONNECT was refused).
    Released(String, u64),
    /// Connected here, or its subscriptions changed; the record (encoded
    /// as a [`SessionExport`] without messages).
    Online(String, Bytes),
    /// Disconnected, kept here; the record.
    Offline(String, Bytes),
    /// No longer here.
    Gone(String),
}

/// What the bridge and the tasks share about sessions.
pub(crate) struct Sessions {
    pub(crate) node_id: String,
    pub(crate) prefix: String,
    pub(crate) client: Client,
    /// To read the state of gone nodes ([`crate::state`]).
    pub(crate) js: jetstream::Context,
    /// The registry bucket, once attached.
    pub(crate) store: OnceLock<kv::Store>,
    /// The wills bucket, once attached.
    pub(crate) wills: OnceLock<kv::Store>,
    /// The local broker, once attached (to adopt the sessions of gone nodes).
    pub(crate) broker: OnceLock<BrokerHandle>,
    /// Gone nodes whose sessions this node is adopting now.
    adopting: Mutex<HashSet<String>>,
    /// Clients whose session this node is adopting now (claimed in the
    /// registry, not yet in the broker): a take request waits for them.
    adopting_clients: Mutex<HashSet<String>>,
    /// Clients whose connection is bringing their session in from a gone
    /// node right now (see `settle`).
    restoring: Mutex<HashSet<String>>,
    /// Sessions adopted from a gone node, by client: that node's will for
    /// the client is cancelled when the client comes back.
    adopted_from: Mutex<HashMap<String, String>>,
    /// Wills that this node id's previous instance left in the wills
    /// bucket (it crashed and this one started before its heartbeat
    /// expired), by key, with their revision: published after their delay
    /// unless their client comes back here first.
    pub(crate) previous_wills: Mutex<HashMap<String, u64>>,
    /// Sessions claimed here from a gone node whose state could not be read
    /// then (the CONNECT was refused), and whose registry entry could not
    /// be given back to the gone node either: the gone node and its last
    /// record, by client, for the client's next CONNECT, which finds the
    /// registry naming this node (here: the state is read again; elsewhere:
    /// this node tells the other one which node is gone). With the revision
    /// of this node's claim, to give it back later (`retry_give_backs`).
    unrestored: Mutex<HashMap<String, Refused>>,
    /// `retry_give_backs` is running.
    giving_back: std::sync::atomic::AtomicBool,
    /// Sessions of gone nodes that the registry says another node holds:
    /// by (gone node, client), that holder, the entry's revision and when
    /// it was first seen so. Their records are removed once it stayed so
    /// for [`HELD_ELSEWHERE_FOR`] timeouts.
    held_elsewhere: Mutex<HashMap<(String, String), HeldElsewhere>>,
    /// Tests: a refused claim is never given back.
    keep_refused_claims: std::sync::atomic::AtomicBool,
    /// Tests: take requests go unanswered, as by a frozen node.
    pub(crate) frozen: std::sync::atomic::AtomicBool,
    /// Bounds each registry step and each take request.
    pub(crate) timeout: Duration,
    pub(crate) counters: SessionCounters,
    /// Changes for the registry loop, bounded by replacing the pointless.
    pub(crate) events: EventQueue,
}

impl Sessions {
    /// Queues a change for the registry loop; one dropped (the queue is
    /// full: NATS has been away for long) is counted as a registry error.
    pub(crate) fn report(&self, event: SessionEvent) {
        if !self.events.push(event) {
            bump(&self.counters.registry_errors);
            tracing::debug!("session registry: change dropped, too many waiting");
        }
    }
}

/// The record of a session as the registry keeps it.
pub(crate) fn encode_record(session: &StoredSession) -> Bytes {
    Bytes::from(
        SessionExport {
            session: session.clone(),
            messages: Vec::new(),
            incoming: Vec::new(),
        }
        .encode(),
    )
}

/// A registry value: version, owner node id (2-byte length), then the
/// session record when known.
fn encode_value(node: &str, record: &[u8]) -> Bytes {
    let node = node.as_bytes();
    let node = node.get(..usize::from(u16::MAX)).unwrap_or(node);
    let mut buf = BytesMut::with_capacity(3 + node.len() + record.len());
    buf.put_u8(VERSION);
    buf.put_u16(u16::try_from(node.len()).unwrap_or(u16::MAX));
    buf.put_slice(node);
    buf.put_slice(record);
    buf.freeze()
}

/// The owner node and the record bytes of a registry value.
pub(crate) fn decode_value(value: &[u8]) -> Option<(String, &[u8])> {
    let (&version, rest) = value.split_first()?;
    if version != VERSION {
        return None;
    }
    let (len, rest) = rest.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    let node = std::str::from_utf8(rest.get(..len)?).ok()?.to_owned();
    Some((node, rest.get(len..)?))
}

/// Whether the session of a record is still there: it outlives its
/// connection, and it had not expired when its node was last heard of.
fn outlives(session: &StoredSession) -> bool {
    if session.expiry_interval == 0 {
        return false;
    }
    let Some(since) = session.disconnected_at else {
        // Connected when its node died: its expiry counts from then.
        return true;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    session.expiry_interval == u32::MAX
        || since.saturating_add(u64::from(session.expiry_interval) * 1000) > now
}

/// The subject on which `node` answers take-session requests.
pub(crate) fn take_subject(prefix: &str, node: &str) -> String {
    format!("{prefix}.session.{}", node_key(node))
}

/// Marks a client as restoring its session from a gone node while it lives.
struct Restoring<'a> {
    set: &'a Mutex<HashSet<String>>,
    id: String,
}

impl<'a> Restoring<'a> {
    fn new(set: &'a Mutex<HashSet<String>>, id: &str) -> Self {
        lock(set).insert(id.to_owned());
        Self {
            set,
            id: id.to_owned(),
        }
    }
}

impl Drop for Restoring<'_> {
    fn drop(&mut self) {
        lock(self.set).remove(&self.id);
    }
}

/// Who holds a session in the registry, as [`Sessions::claim_from`] found.
enum Holder {
    /// This node, now (it claimed the session from the gone node).
    Claimed,
    /// Another node (or this one, taking it for a connecting client): its
    /// id and the entry's revision.
    Other(String, u64),
    /// No entry: nobody holds the session, and no CONNECT reads the gone
    /// node's state for it.
    Missing,
    /// An entry not understood, or the registry failed.
    Unknown,
}

/// How many [`Sessions::timeout`]s a gone node's session must stay held by
/// the same other node, at the same registry revision, before the gone
/// node's records of it are removed: longer than a CONNECT that claimed it
/// takes to read them, or to give the entry back when it cannot.
const HELD_ELSEWHERE_FOR: u32 = 4;

/// A claim of a gone node's session whose CONNECT was refused (its state
/// could not be read) and that could not be given back yet.
#[derive(Clone)]
struct Refused {
    /// The gone node.
    gone: String,
    /// The session's last record in the registry.
    record: Vec<u8>,
    /// The revision of this node's claim.
    revision: u64,
}

/// A gone node's session that the registry says another node holds.
struct HeldElsewhere {
    holder: String,
    revision: u64,
    /// First seen so.
    since: tokio::time::Instant,
}

/// A registry entry naming this node, as [`Sessions::register`] left it.
struct Registered {
    /// The previous holder and its record (`None`: there was none).
    previous: Option<(String, Vec<u8>)>,
    /// The entry's revision now.
    revision: u64,
}

/// What the node that held a session answered.
enum Answer {
    Session(Box<SessionExport>),
    Nothing,
    /// Nobody listens on its subject: the node is gone.
    NoResponders,
    /// The node claimed the session from this gone node and could not read
    /// its state.
    Gone(String),
    /// A reply that is not understood (counted).
    Invalid(&'static str),
}

impl Sessions {
    pub(crate) fn new(
        node_id: String,
        prefix: String,
        client: Client,
        js: jetstream::Context,
        timeout: Duration,
    ) -> Self {
        Self {
            node_id,
            prefix,
            client,
            js,
            store: OnceLock::new(),
            wills: OnceLock::new(),
            broker: OnceLock::new(),
            adopting: Mutex::new(HashSet::new()),
            adopting_clients: Mutex::new(HashSet::new()),
            restoring: Mutex::new(HashSet::new()),
            adopted_from: Mutex::new(HashMap::new()),
            previous_wills: Mutex::new(HashMap::new()),
            unrestored: Mutex::new(HashMap::new()),
            giving_back: std::sync::atomic::AtomicBool::new(false),
            held_elsewhere: Mutex::new(HashMap::new()),
            keep_refused_claims: std::sync::atomic::AtomicBool::new(false),
            frozen: std::sync::atomic::AtomicBool::new(false),
            timeout,
            counters: SessionCounters::default(),
            events: EventQueue::default(),
        }
    }

    /// [`Bridge::claim_session`](fulmar_broker::Bridge::claim_session):
    /// registers this node as the holder of `client_id`'s session, then
    /// takes the session from the node that held it.
    pub(crate) async fn claim(
        self: Arc<Self>,
        client_id: String,
        clean_start: bool,
    ) -> Result<Option<SessionExport>, SessionUnavailable> {
        let Some(store) = self.store.get().cloned() else {
            return Ok(None);
        };
        let key = client_kv_key(&client_id);
        // Marked from before the registry names this node: from then on, a
        // node gone away is adopted without this session (the registry says
        // it is here), so the other clients' CONNACKs wait (`settle`) until
        // it is in the broker; otherwise what they publish meanwhile finds
        // no subscription of it anywhere.
        let early = (!clean_start).then(|| Restoring::new(&self.restoring, &client_id));
        let claimed =
            tokio::time::timeout(self.timeout, self.register(&store, &key, &client_id)).await;
        let (owner, record, revision) = match claimed {
            Ok(Some(Registered {
                previous: Some((owner, record)),
                revision,
            })) => (owner, record, revision),
            Ok(Some(Registered { previous: None, .. })) => return Ok(None),
            // Where the session is is not known: a session that outlives
            // its connection is not started here without it (the client
            // comes back); a clean one needs nothing from elsewhere.
            Ok(None) if clean_start => return Ok(None),
            Ok(None) => return Err(SessionUnavailable),
            Err(_) => {
                bump(&self.counters.registry_errors);
                if clean_start {
                    tracing::warn!(client = %client_id, "session registry: timed out; a new session starts here");
                    return Ok(None);
                }
                tracing::warn!(client = %client_id, "session registry: timed out; CONNECT refused");
                return Err(SessionUnavailable);
            }
        };
        // (An entry left from before another node claimed the session since
        // is dropped.)
        let unrestored = lock(&self.unrestored)
            .remove(&client_id)
            .filter(|_| owner == self.node_id);
        let (owner, record, answer) = match unrestored {
            // Claimed by an earlier CONNECT that had to be refused: the
            // gone node's state is read again.
            Some(Refused { gone, record, .. }) => (gone, record, Ok(Answer::NoResponders)),
            None if owner == self.node_id => {
                // Here already: the broker's own takeover handles it; if
                // this node is bringing in a gone node's sessions right
                // now, once they are in the broker.
                drop(early);
                self.settle().await;
                return Ok(None);
            }
            None => {
                let answer = self.take_from(&owner, &client_id, clean_start).await;
                match answer {
                    // That node claimed it from a gone node whose state it
                    // could not read: read it here.
                    Ok(Answer::Gone(gone)) if gone != self.node_id && gone != owner => {
                        tracing::debug!(client = %client_id, from = %owner, gone = %gone, "session of a gone node claimed elsewhere first");
                        (gone, record, Ok(Answer::NoResponders))
                    }
                    Ok(Answer::Gone(_)) => (
                        owner,
                        record,
                        Ok(Answer::Invalid("gone node is a live one")),
                    ),
                    answer => (owner, record, answer),
                }
            }
        };
        match answer {
            Ok(Answer::Session(export)) => {
                bump(&self.counters.imported);
                tracing::debug!(client = %client_id, from = %owner, "session taken over from another node");
                Ok(Some(*export))
            }
            Ok(Answer::Nothing) => Ok(None),
            // Handled above.
            Ok(Answer::Gone(_)) => Ok(None),
            Ok(Answer::Invalid(reason)) => {
                bump(&self.counters.invalid);
                tracing::warn!(client = %client_id, node = %owner, reason, "malformed take-session reply dropped; a new session starts here");
                Ok(None)
            }
            Ok(Answer::NoResponders) => {
                // The node is gone. What it kept of the session in the
                // state stream (when its store was a SessionStore) comes
                // back whole; else the last record it wrote in the
                // registry still has the subscriptions.
                if clean_start {
                    // Discarded: what the gone node kept of it is stale.
                    self.purge_later(owner, client_id);
                    return Ok(None);
                }
                // Other connections of the gone node's clients wait until
                // this one's session is in the broker (`settle`).
                let restoring = Restoring::new(&self.restoring, &client_id);
                let kept = tokio::time::timeout(
                    self.timeout,
                    crate::state::read_session(
                        &self.client,
                        &self.js,
                        &self.prefix,
                        &owner,
                        &client_id,
                        self.timeout,
                    ),
                )
                .await;
                let (export, whole) = match kept {
                    Ok(Ok(Some(export))) => (export, true),
                    // What it kept cannot be read now (JetStream electing
                    // leaders after losing a server, say): the client
                    // comes back later rather than resume without its
                    // queued messages. The registry names the gone node
                    // again, so that the next CONNECT, here or elsewhere,
                    // reads its state again; if it cannot be given back, the
                    // next CONNECT finds this node and is told (`answer`).
                    Ok(Err(_)) | Err(_) => {
                        bump(&self.counters.unavailable);
                        let reason = match &kept {
                            Ok(Err(reason)) => reason.as_str(),
                            _ => "not read in time",
                        };
                        tracing::warn!(client = %client_id, from = %owner, reason, "session state of the gone node unreadable: CONNECT refused");
                        drop(restoring);
                        if !self
                            .give_back(&store, &key, &client_id, &owner, &record, revision)
                            .await
                        {
                            lock(&self.unrestored).insert(
                                client_id,
                                Refused {
                                    gone: owner,
                                    record,
                                    revision,
                                },
                            );
                        }
                        return Err(SessionUnavailable);
                    }
                    Ok(Ok(None)) => {
                        if record.is_empty() {
                            return Ok(None);
                        }
                        match SessionExport::decode(&record) {
                            Ok(export) if *export.session.client_id == *client_id => {
                                (export, false)
                            }
                            _ => {
                                bump(&self.counters.invalid);
                                return Ok(None);
                            }
                        }
                    }
                };
                if !outlives(&export.session) {
                    return Ok(None);
                }
                bump(&self.counters.restored);
                if whole {
                    bump(&self.counters.restored_whole);
                    tracing::info!(client = %client_id, from = %owner, messages = export.messages.len(), "node gone: session restored from its state in JetStream");
                    // Its records there are the gone node's: removed once
                    // this node has committed the session as its own
                    // (the CONNACK waits for that commit).
                    self.purge_later(owner.clone(), client_id.clone());
                } else {
                    tracing::info!(client = %client_id, from = %owner, "node gone: session restored from the registry (subscriptions only)");
                }
                // In the broker now (as a disconnected session the
                // connection then resumes), so that `settle` can tell.
                let installed = self
                    .broker
                    .get()
                    .is_some_and(|broker| broker.adopt_session(export.clone()));
                drop(restoring);
                // The gone node's other sessions come here too, before this
                // client's CONNACK when that takes less than the timeout:
                // what this client publishes next finds them somewhere.
                if self.begin_adoption(&owner) {
                    tokio::spawn(self.clone().adopt_begun(owner.clone()));
                }
                self.settle().await;
                // Resumed within the Will Delay Interval: the gone node's
                // will for it is not to be published.
                if tokio::time::timeout(self.timeout, self.cancel_will(&owner, &client_id))
                    .await
                    .is_err()
                {
                    tracing::warn!(client = %client_id, "will of the gone node not cancelled in time");
                }
                // A stale copy here kept `adopt_session` from installing it:
                // the broker's import replaces it.
                Ok((!installed).then_some(export))
            }
            Err(reason) => {
                bump(&self.counters.unanswered);
                tracing::warn!(client = %client_id, node = %owner, reason, "session not taken over; a new session starts here");
                Ok(None)
            }
        }
    }

    /// Adopts every session gone node `dead` kept in JetStream (with a
    /// [`SessionStore`](crate::SessionStore)) that the registry still says
    /// it holds: claims it there (compare-and-swap, so that one node adopts
    /// each) and installs it in the local broker as a disconnected session
    /// ([`BrokerHandle::adopt_session`]), with its messages; the gone
    /// node's records of it are removed a timeout later. The records of
    /// sessions that ended or expired, that have no registry entry, or that
    /// another node held for [`HELD_ELSEWHERE_FOR`] timeouts are removed
    /// too. Returns how many sessions the gone node still has in the stream
    /// waiting for something (0: its journal may go).
    pub(crate) async fn adopt_node(self: Arc<Self>, dead: String) -> usize {
        if !self.begin_adoption(&dead) {
            return usize::MAX;
        }
        self.adopt_begun(dead).await
    }

    /// Marks `dead` as being adopted (what `settle` waits for); false when
    /// it is already, or cannot be.
    fn begin_adoption(&self, dead: &str) -> bool {
        self.broker.get().is_some()
            && self.store.get().is_some()
            && dead != self.node_id
            && lock(&self.adopting).insert(dead.to_owned())
    }

    /// [`adopt_node`](Self::adopt_node) once [`begin_adoption`](Self::begin_adoption) said yes.
    async fn adopt_begun(self: Arc<Self>, dead: String) -> usize {
        let (Some(broker), Some(registry)) = (self.broker.get(), self.store.get()) else {
            lock(&self.adopting).remove(&dead);
            return usize::MAX;
        };
        let read = tokio::time::timeout(
            self.timeout.saturating_mul(4),
            crate::state::read_sessions(
                &self.client,
                &self.js,
                &self.prefix,
                &dead,
                None,
                self.timeout,
            ),
        )
        .await;
        let sessions = match read {
            Ok(Ok(sessions)) => sessions,
            Ok(Err(reason)) => {
                tracing::warn!(node = %dead, reason, "sessions of the gone node not read");
                lock(&self.adopting).remove(&dead);
                return usize::MAX;
            }
            Err(_) => {
                tracing::warn!(node = %dead, "sessions of the gone node not read in time");
                lock(&self.adopting).remove(&dead);
                return usize::MAX;
            }
        };
        // The sessions whose records must stay: their holder is not known
        // (yet), or they were not removed.
        let mut pending = 0;
        let mut adopted = 0;
        let mut elsewhere = HashSet::new();
        for export in sessions {
            let id = export.session.client_id.to_string();
            if !outlives(&export.session) {
                // Ended or expired: nothing waits for these records.
                if !self.purge_now(&dead, &id).await {
                    pending += 1;
                }
                continue;
            }
            lock(&self.adopting_clients).insert(id.clone());
            let holder = self.claim_from(registry, &id, &dead).await;
            if let Holder::Claimed = holder {
                // Before it is in the broker, which may end it at once.
                lock(&self.adopted_from).insert(id.clone(), dead.clone());
                if broker.adopt_session(export) {
                    adopted += 1;
                    bump(&self.counters.adopted);
                } else {
                    lock(&self.adopted_from).remove(&id);
                }
                // Here now (or a copy here kept it out): the gone node's
                // records of it are stale.
                self.purge_later(dead.clone(), id.clone());
            }
            // In the broker now: a take request may have it.
            lock(&self.adopting_clients).remove(&id);
            match holder {
                Holder::Claimed => {}
                Holder::Other(holder, revision) => {
                    if self.held_elsewhere_long(&dead, &id, holder, revision) {
                        if !self.purge_now(&dead, &id).await {
                            pending += 1;
                        }
                    } else {
                        elsewhere.insert((dead.clone(), id));
                        pending += 1;
                    }
                }
                // No CONNECT reads them: stale.
                Holder::Missing => {
                    if !self.purge_now(&dead, &id).await {
                        pending += 1;
                    }
                }
                Holder::Unknown => pending += 1,
            }
        }
        lock(&self.held_elsewhere).retain(|key, _| key.0 != dead || elsewhere.contains(key));
        if adopted > 0 {
            tracing::info!(node = %dead, adopted, "sessions of a gone node adopted");
        }
        lock(&self.adopting).remove(&dead);
        pending
    }

    /// Whether the registry has said that `holder` holds gone node `dead`'s
    /// session of `client_id`, at `revision`, for [`HELD_ELSEWHERE_FOR`]
    /// timeouts (remembered from one look to the next).
    fn held_elsewhere_long(
        &self,
        dead: &str,
        client_id: &str,
        holder: String,
        revision: u64,
    ) -> bool {
        let now = tokio::time::Instant::now();
        let mut seen = lock(&self.held_elsewhere);
        let key = (dead.to_owned(), client_id.to_owned());
        let since = seen
            .get(&key)
            .filter(|held| held.holder == holder && held.revision == revision)
            .map(|held| held.since);
        match since {
            Some(since)
                if now.duration_since(since) >= self.timeout.saturating_mul(HELD_ELSEWHERE_FOR) =>
            {
                seen.remove(&key);
                true
            }
            Some(_) => false,
            None => {
                seen.insert(
                    key,
                    HeldElsewhere {
                        holder,
                        revision,
                        since: now,
                    },
                );
                false
            }
        }
    }

    /// Removes gone node `dead`'s records of `client_id` now; whether they
    /// are gone.
    async fn purge_now(&self, dead: &str, client_id: &str) -> bool {
        let purged = tokio::time::timeout(
            self.timeout,
            crate::state::purge_session(&self.js, &self.prefix, dead, client_id),
        )
        .await;
        match purged {
            Ok(Ok(())) => {
                tracing::debug!(client = %client_id, node = %dead, "stale state of a gone node removed");
                true
            }
            Ok(Err(reason)) => {
                tracing::debug!(client = %client_id, node = %dead, reason, "state of the gone node not removed");
                false
            }
            Err(_) => false,
        }
    }

    /// Waits (at most the timeout) until no gone node's session is on its
    /// way into the local broker: no adoption running, no connection of a
    /// gone node's client restoring its session. A connection of such a
    /// client gets its CONNACK after that, so that what it publishes next
    /// finds every session of the gone node that this node brings in.
    async fn settle(&self) {
        let deadline = tokio::time::Instant::now() + self.timeout;
        while (!lock(&self.adopting).is_empty() || !lock(&self.restoring).is_empty())
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Writes this node as the holder of `client_id`'s session in the
    /// registry if `dead` holds it there now.
    async fn claim_from(&self, registry: &kv::Store, client_id: &str, dead: &str) -> Holder {
        let key = client_kv_key(client_id);
        for _ in 0..CLAIM_ATTEMPTS {
            let entry = match registry.entry(key.as_str()).await {
                Ok(Some(entry)) if entry.operation == kv::Operation::Put => entry,
                Ok(_) => return Holder::Missing,
                Err(e) => {
                    bump(&self.counters.registry_errors);
                    tracing::warn!(error = %e, client = %client_id, "session registry not read");
                    return Holder::Unknown;
                }
            };
            let Some((holder, record)) = decode_value(&entry.value) else {
                return Holder::Unknown;
            };
            if holder != dead {
                return Holder::Other(holder, entry.revision);
            }
            let value = encode_value(&self.node_id, record);
            if let Ok(revision) = registry.update(key.as_str(), value, entry.revision).await {
                bump(&self.counters.claimed);
                self.report(SessionEvent::Claimed(client_id.to_owned(), revision));
                return Holder::Claimed;
            }
        }
        Holder::Unknown
    }

    /// Removes gone node `owner`'s records of `client_id` once this node
    /// committed the session as its own.
    fn purge_later(self: &Arc<Self>, owner: String, client_id: String) {
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(this.timeout).await;
            if let Err(reason) =
                crate::state::purge_session(&this.js, &this.prefix, &owner, &client_id).await
            {
                tracing::warn!(client = %client_id, node = %owner, reason, "state of the gone node not removed");
            }
        });
    }

    /// The client of a session adopted from a gone node is back (here, or
    /// its session taken by another node): the gone node's will for it is
    /// not to be published.
    pub(crate) fn client_back(self: &Arc<Self>, client_id: &str) {
        if let Some((key, revision)) = self.take_previous_will(client_id) {
            self.cancel_previous_will_later(key, revision, client_id.to_owned());
        }
        let Some(dead) = lock(&self.adopted_from).remove(client_id) else {
            return;
        };
        self.cancel_will_later(dead, client_id.to_owned());
    }

    /// The session of `client_id` is no longer in the local broker (ended,
    /// expired, or taken: a take request has cancelled the will already):
    /// what was remembered of its adoption goes.
    pub(crate) fn session_gone(&self, client_id: &str) {
        lock(&self.adopted_from).remove(client_id);
    }

    /// Cancels gone node `dead`'s will for `client_id`, in the background.
    fn cancel_will_later(self: &Arc<Self>, dead: String, id: String) {
        let this = self.clone();
        tokio::spawn(async move {
            if tokio::time::timeout(this.timeout, this.cancel_will(&dead, &id))
                .await
                .is_err()
            {
                tracing::warn!(client = %id, "will of the gone node not cancelled in time");
            }
        });
    }

    /// The key and revision of the will this node's previous instance kept
    /// for `client_id`, if it still waits; forgotten here.
    fn take_previous_will(&self, client_id: &str) -> Option<(String, u64)> {
        let mut previous = lock(&self.previous_wills);
        if previous.is_empty() {
            return None;
        }
        let key = crate::cluster::will_key(&self.node_id, client_id);
        previous.remove(&key).map(|revision| (key, revision))
    }

    /// Cancels the will of this node's previous instance for `id`, in the
    /// background.
    fn cancel_previous_will_later(self: &Arc<Self>, key: String, revision: u64, id: String) {
        let this = self.clone();
        tokio::spawn(async move {
            let cancel = this.cancel_previous_will(&key, &id, revision);
            if tokio::time::timeout(this.timeout, cancel).await.is_err() {
                tracing::warn!(client = %id, "will of the previous instance not cancelled in time");
            }
        });
    }

    /// Removes the will this node's previous instance kept for `client_id`
    /// (`key`, at `revision`), with a compare-and-swap on that revision:
    /// the sweep publishing it claims it the same way, and a will the
    /// client set since replaced it.
    async fn cancel_previous_will(&self, key: &str, client_id: &str, revision: u64) {
        let Some(wills) = self.wills.get() else {
            return;
        };
        match wills.update(key, Bytes::new(), revision).await {
            Ok(claimed) => {
                if let Err(e) = wills.stream.delete_message(claimed).await {
                    tracing::debug!(error = %e, %key, "cancelled will not erased");
                }
                bump(&self.counters.wills_cancelled);
                tracing::info!(client = %client_id, "will of the previous instance cancelled: the client is back");
            }
            Err(e) => {
                tracing::debug!(error = %e, %key, "will published or replaced first");
            }
        }
    }

    /// Removes the will that gone node `owner` kept for `client_id`, with a
    /// compare-and-swap on its revision: the node that would publish it
    /// claims it the same way, so exactly one of the two wins.
    async fn cancel_will(&self, owner: &str, client_id: &str) {
        let Some(wills) = self.wills.get() else {
            return;
        };
        let key = crate::cluster::will_key(owner, client_id);
        let entry = match wills.entry(key.as_str()).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => entry,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, client = %client_id, "wills bucket not read");
                return;
            }
        };
        match wills.update(&key, Bytes::new(), entry.revision).await {
            Ok(claimed) => {
                if let Err(e) = wills.stream.delete_message(claimed).await {
                    tracing::debug!(error = %e, %key, "cancelled will not erased");
                }
                bump(&self.counters.wills_cancelled);
                tracing::info!(client = %client_id, from = %owner, "will of the gone node cancelled: the session resumed");
            }
            Err(e) => {
                tracing::debug!(error = %e, %key, "will claimed by another node first");
            }
        }
    }

    /// Writes `owner` (a gone node) back as the holder of `client_id`'s
    /// session in the registry, with `record`, by a compare-and-swap on
    /// `revision` (this node's claim: nothing changes when another node
    /// claimed it since); whether it is back.
    async fn give_back(
        &self,
        store: &kv::Store,
        key: &str,
        client_id: &str,
        owner: &str,
        record: &[u8],
        revision: u64,
    ) -> bool {
        if self.keep_refused_claims.load(Ordering::Relaxed) {
            return false;
        }
        let value = encode_value(owner, record);
        match tokio::time::timeout(self.timeout, store.update(key, value, revision)).await {
            Ok(Ok(_)) => {
                // The registry loop no longer writes at the revision it had.
                self.report(SessionEvent::Released(client_id.to_owned(), revision));
                true
            }
            Ok(Err(e)) => {
                bump(&self.counters.registry_errors);
                tracing::warn!(error = %e, client = %client_id, node = %owner, "session registry not given back to the gone node");
                false
            }
            Err(_) => {
                bump(&self.counters.registry_errors);
                tracing::warn!(client = %client_id, node = %owner, "session registry not given back to the gone node in time");
                false
            }
        }
    }

    /// Gives the registry entries of refused claims (`unrestored`) back to
    /// their gone nodes, now that the registry may take it; forgets those
    /// claimed by another node since. A few at a time, one run at a time.
    pub(crate) async fn retry_give_backs(&self) {
        const AT_ONCE: usize = 64;
        let Some(store) = self.store.get() else {
            return;
        };
        if self.giving_back.swap(true, Ordering::Relaxed) {
            return;
        }
        let refused: Vec<(String, Refused)> = lock(&self.unrestored)
            .iter()
            .take(AT_ONCE)
            .map(|(client, refused)| (client.clone(), refused.clone()))
            .collect();
        for (
            client_id,
            Refused {
                gone,
                record,
                revision,
            },
        ) in refused
        {
            let key = client_kv_key(&client_id);
            let settled = self
                .give_back(store, &key, &client_id, &gone, &record, revision)
                .await
                || !self.still_holds(store, &key, revision).await;
            if settled {
                let mut unrestored = lock(&self.unrestored);
                if unrestored
                    .get(&client_id)
                    .is_some_and(|refused| refused.revision == revision)
                {
                    unrestored.remove(&client_id);
                }
            }
        }
        self.giving_back.store(false, Ordering::Relaxed);
    }

    /// Whether the registry entry `key` is still at `revision` (`true` when
    /// it cannot be read).
    async fn still_holds(&self, store: &kv::Store, key: &str, revision: u64) -> bool {
        match tokio::time::timeout(self.timeout, store.entry(key)).await {
            Ok(Ok(Some(entry))) => entry.revision == revision,
            Ok(Ok(None)) => false,
            Ok(Err(_)) | Err(_) => true,
        }
    }

    /// How many clients of adopted sessions are remembered (tests).
    pub(crate) fn adopted_len(&self) -> usize {
        lock(&self.adopted_from).len()
    }

    /// Tests: refused claims stay (as when the registry cannot be written).
    pub(crate) fn keep_refused_claims_for_test(&self) {
        self.keep_refused_claims.store(true, Ordering::Relaxed);
    }

    /// Writes this node as the holder of `key` with a compare-and-swap on
    /// the revision read. Returns the previous holder and its record, and
    /// the entry's revision, or `None` after an error.
    async fn register(&self, store: &kv::Store, key: &str, client_id: &str) -> Option<Registered> {
        for attempt in 0..CLAIM_ATTEMPTS {
            if attempt > 1 {
                let wait = Duration::from_millis(1 << (attempt - 2).min(6));
                tokio::time::sleep(wait).await;
            }
            let entry = match store.entry(key).await {
                Ok(entry) => entry,
                Err(e) => {
                    bump(&self.counters.registry_errors);
                    tracing::warn!(error = %e, client = %client_id, "session registry not read");
                    return None;
                }
            };
            let previous = entry
                .as_ref()
                .filter(|e| e.operation == kv::Operation::Put)
                .and_then(|e| decode_value(&e.value))
                .map(|(node, record)| (node, record.to_vec()));
            if let Some(entry) = &entry
                && previous
                    .as_ref()
                    .is_some_and(|(node, _)| *node == self.node_id)
            {
                return Some(Registered {
                    previous,
                    revision: entry.revision,
                });
            }
            // Keep the last record: if this node dies before it writes its
            // own, another one still finds the subscriptions.
            let record = previous.as_ref().map_or(&[][..], |(_, r)| r.as_slice());
            let value = encode_value(&self.node_id, record);
            let written = match &entry {
                Some(entry) => store
                    .update(key, value, entry.revision)
                    .await
                    .map_err(|e| e.to_string()),
                None => store.create(key, value).await.map_err(|e| e.to_string()),
            };
            match written {
                Ok(revision) => {
                    bump(&self.counters.claimed);
                    // Through the events, in order with the broker's
                    // reports: a report from before this claim (the session
                    // taken from here earlier) must not erase it.
                    self.report(SessionEvent::Claimed(client_id.to_owned(), revision));
                    return Some(Registered { previous, revision });
                }
                Err(e) => {
                    tracing::debug!(error = %e, client = %client_id, "session registry changed meanwhile");
                }
            }
        }
        bump(&self.counters.registry_errors);
        tracing::warn!(client = %client_id, "session registry: too many concurrent changes");
        None
    }

    /// Asks `node` for the session of `client_id`; the reply may come in
    /// several parts (NATS bounds a message's size).
    async fn take_from(
        &self,
        node: &str,
        client_id: &str,
        clean_start: bool,
    ) -> Result<Answer, &'static str> {
        if node_key(node).len() > crate::state::MAX_KEY {
            // No node has such an id (`Cluster::connect` refuses it), and
            // its subject could be too long for NATS.
            return Ok(Answer::Invalid("holder's node id too long"));
        }
        let inbox = self.client.new_inbox();
        let mut replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|_| "cannot subscribe to the reply inbox")?;
        let mut request = BytesMut::with_capacity(2 + client_id.len());
        request.put_u8(VERSION);
        request.put_u8(if clean_start { FLAG_DISCARD } else { 0 });
        request.put_slice(client_id.as_bytes());
        self.client
            .publish_with_reply(take_subject(&self.prefix, node), inbox, request.freeze())
            .await
            .map_err(|_| "request not published")?;
        let collect = async {
            let mut export = Vec::new();
            while let Some(message) = replies.next().await {
                if message.status == Some(StatusCode::NO_RESPONDERS) {
                    return Some(Answer::NoResponders);
                }
                let Some((&version, rest)) = message.payload.split_first() else {
                    return Some(Answer::Invalid("empty reply"));
                };
                let Some((&kind, part)) = rest.split_first() else {
                    return Some(Answer::Invalid("truncated reply"));
                };
                if version != VERSION {
                    return Some(Answer::Invalid("unknown reply version"));
                }
                match kind {
                    REPLY_NONE if export.is_empty() && part.is_empty() => {
                        return Some(Answer::Nothing);
                    }
                    REPLY_GONE if export.is_empty() => {
                        return Some(match std::str::from_utf8(part) {
                            Ok(gone)
                                if !gone.is_empty()
                                    && node_key(gone).len() <= crate::state::MAX_KEY =>
                            {
                                Answer::Gone(gone.to_owned())
                            }
                            _ => Answer::Invalid("gone node id not valid"),
                        });
                    }
                    REPLY_PART | REPLY_LAST => {
                        if export.len() + part.len() > MAX_EXPORT {
                            return Some(Answer::Invalid("reply too large"));
                        }
                        export.extend_from_slice(part);
                        if kind == REPLY_LAST {
                            return Some(match SessionExport::decode(&export) {
                                Ok(export) if *export.session.client_id == *client_id => {
                                    Answer::Session(Box::new(export))
                                }
                                _ => Answer::Invalid("reply is no session export"),
                            });
                        }
                    }
                    _ => return Some(Answer::Invalid("unknown reply kind")),
                }
            }
            None
        };
        match tokio::time::timeout(self.timeout, collect).await {
            Ok(Some(answer)) => Ok(answer),
            Ok(None) => Err("reply subscription ended"),
            Err(_) => Err("no answer in time"),
        }
    }
}

/// Keeps the registry entries of the sessions this node holds, in the
/// order the broker reports the changes.
pub(crate) async fn registry_loop(
    sessions: Arc<Sessions>,
    store: kv::Store,
    mut stop: watch::Receiver<bool>,
    mut remade: watch::Receiver<u64>,
    mut lapsed: watch::Receiver<u64>,
) {
    // The registry revision this node last wrote, per client it holds.
    let mut revisions = HashMap::new();
    // And the record it wrote then, to write back into a bucket made again.
    let mut records = HashMap::new();
    loop {
        // Also when events keep coming (the select below waits only when
        // there are none).
        if remade.has_changed().unwrap_or(false) {
            remade.borrow_and_update();
            rewrite(&sessions, &store, &mut revisions, &mut records).await;
        }
        if lapsed.has_changed().unwrap_or(false) {
            lapsed.borrow_and_update();
            give_up_moved(&sessions, &store, &mut revisions, &mut records).await;
        }
        let batch = sessions.events.pop(REGISTRY_BATCH);
        if batch.is_empty() {
            tokio::select! {
                biased;
                () = sessions.events.ready() => continue,
                _ = stop.changed() => break,
                _ = remade.changed() => {
                    rewrite(&sessions, &store, &mut revisions, &mut records).await;
                    continue;
                }
                _ = lapsed.changed() => {
                    give_up_moved(&sessions, &store, &mut revisions, &mut records).await;
                    continue;
                }
            }
        }
        let mut held = Held {
            revisions: &mut revisions,
            records: &mut records,
        };
        for event in batch {
            handle(&sessions, &store, &mut held, event).await;
        }
        if *stop.borrow() {
            break;
        }
    }
    // Stopping: write what the broker reported already (its shutdown
    // stored the sessions), so that the records stay current; within the
    // timeout (NATS may be away).
    sessions.events.close();
    let events = sessions.events.pop(usize::MAX);
    let deadline = tokio::time::Instant::now() + sessions.timeout;
    let total = events.len();
    let mut held = Held {
        revisions: &mut revisions,
        records: &mut records,
    };
    for (done, event) in events.into_iter().enumerate() {
        let handled =
            tokio::time::timeout_at(deadline, handle(&sessions, &store, &mut held, event)).await;
        if handled.is_err() {
            tracing::warn!(
                left = total - done,
                "session records not written before the shutdown"
            );
            break;
        }
    }
}

/// Registry events handled together, at most.
const REGISTRY_BATCH: usize = 256;

/// What the registry loop knows of the entries this node wrote.
struct Held<'a> {
    /// The revision of each, by client.
    revisions: &'a mut HashMap<String, u64>,
    /// The record in each (not yet for a claim whose record is to come).
    records: &'a mut HashMap<String, Bytes>,
}

/// The registry bucket was made again, empty (NATS came back without its
/// data): the entries this node wrote are created again with the records
/// they held, unless another node registered the client since. A claim
/// without a record yet is forgotten: its record will be created.
async fn rewrite(
    sessions: &Sessions,
    store: &kv::Store,
    revisions: &mut HashMap<String, u64>,
    records: &mut HashMap<String, Bytes>,
) {
    revisions.clear();
    let mut rewritten = 0usize;
    for (client_id, record) in records.iter() {
        let key = client_kv_key(client_id);
        let value = encode_value(&sessions.node_id, record);
        match tokio::time::timeout(sessions.timeout, store.create(&key, value)).await {
            Ok(Ok(revision)) => {
                bump(&sessions.counters.registry_writes);
                revisions.insert(client_id.clone(), revision);
                rewritten += 1;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, client = %client_id, "registry entry not written again");
            }
            Err(_) => {
                bump(&sessions.counters.registry_errors);
                tracing::warn!(client = %client_id, "session registry: write timed out");
            }
        }
    }
    records.retain(|client_id, _| revisions.contains_key(client_id));
    tracing::info!(entries = rewritten, "session registry written again");
}

/// This node's heartbeat had expired (it was frozen, or away from NATS):
/// other nodes may have taken it for dead and moved sessions it still
/// holds, whose registry entries name them now. Each such session is taken
/// away from the local broker (its connection closed as by a takeover:
/// 5.0 DISCONNECT 0x8E), so that its client connects again and finds it
/// where the registry says, instead of being served here as well.
async fn give_up_moved(
    sessions: &Sessions,
    store: &kv::Store,
    revisions: &mut HashMap<String, u64>,
    records: &mut HashMap<String, Bytes>,
) {
    let Some(broker) = sessions.broker.get() else {
        return;
    };
    let held: Vec<String> = revisions.keys().cloned().collect();
    let mut moved = 0usize;
    for client_id in held {
        let key = client_kv_key(&client_id);
        let entry = match tokio::time::timeout(sessions.timeout, store.entry(key.as_str())).await {
            Ok(Ok(entry)) => entry,
            Ok(Err(e)) => {
                bump(&sessions.counters.registry_errors);
                tracing::warn!(error = %e, client = %client_id, "session registry not read");
                continue;
            }
            Err(_) => {
                bump(&sessions.counters.registry_errors);
                continue;
            }
        };
        let elsewhere = entry
            .filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| {
                decode_value(&e.value)
                    .map(|(node, _)| node)
                    .filter(|node| *node != sessions.node_id)
            });
        if let Some(node) = elsewhere {
            tracing::warn!(client = %client_id, %node, "session moved to another node while this one was taken for dead: given up here");
            revisions.remove(&client_id);
            records.remove(&client_id);
            // The node that took it over published its will already.
            drop(broker.take_session_without_will(&client_id).await);
            moved += 1;
        }
    }
    if moved > 0 {
        tracing::warn!(
            moved,
            "sessions given up after this node's heartbeat had expired"
        );
    }
}

async fn handle(sessions: &Sessions, store: &kv::Store, held: &mut Held<'_>, event: SessionEvent) {
    let handled = on_event(sessions, store, held, event);
    if tokio::time::timeout(sessions.timeout, handled)
        .await
        .is_err()
    {
        bump(&sessions.counters.registry_errors);
        tracing::warn!("session registry: write timed out");
    }
}

async fn on_event(
    sessions: &Sessions,
    store: &kv::Store,
    held: &mut Held<'_>,
    event: SessionEvent,
) {
    let Held { revisions, records } = held;
    let (client_id, record, online) = match event {
        SessionEvent::Claimed(client_id, revision) => {
            revisions.insert(client_id, revision);
            return;
        }
        SessionEvent::Released(client_id, revision) => {
            if revisions.get(&client_id) == Some(&revision) {
                revisions.remove(&client_id);
                records.remove(&client_id);
            }
            return;
        }
        SessionEvent::Online(client_id, record) => (client_id, Some(record), true),
        SessionEvent::Offline(client_id, record) => (client_id, Some(record), false),
        SessionEvent::Gone(client_id) => (client_id, None, false),
    };
    let key = client_kv_key(&client_id);
    let known = revisions.get(&client_id).copied();
    let Some(record) = record else {
        records.remove(&client_id);
        if let Some(revision) = revisions.remove(&client_id) {
            // Removes exactly what this node wrote: nothing when another
            // node registered the session since (a newer revision).
            if let Err(e) = store.stream.delete_message(revision).await {
                tracing::debug!(error = %e, client = %client_id, "registry entry not erased");
            }
        }
        return;
    };
    let value = encode_value(&sessions.node_id, &record);
    let revision = match known {
        Some(revision) => Some(revision),
        // Connected without a claim of its own (the entry named this node
        // already, or the identifier was assigned here): create the
        // entry, or take over one that names this node; never one that
        // names another node.
        None if online => match store.create(&key, value.clone()).await {
            Ok(revision) => {
                bump(&sessions.counters.registry_writes);
                revisions.insert(client_id.clone(), revision);
                records.insert(client_id, record);
                return;
            }
            Err(_) => match store.entry(key.as_str()).await {
                Ok(Some(entry))
                    if entry.operation == kv::Operation::Put
                        && decode_value(&entry.value)
                            .is_some_and(|(node, _)| node == sessions.node_id) =>
                {
                    Some(entry.revision)
                }
                Ok(_) => None,
                Err(e) => {
                    bump(&sessions.counters.registry_errors);
                    tracing::warn!(error = %e, client = %client_id, "session registry not read");
                    None
                }
            },
        },
        None => None,
    };
    let Some(revision) = revision else {
        return;
    };
    match store.update(&key, value, revision).await {
        Ok(revision) => {
            bump(&sessions.counters.registry_writes);
            revisions.insert(client_id.clone(), revision);
            records.insert(client_id, record);
        }
        Err(e) => {
            // Another node registered it since: it is theirs now.
            tracing::debug!(error = %e, client = %client_id, "session registered elsewhere");
            revisions.remove(&client_id);
            records.remove(&client_id);
        }
    }
}

/// Answers take-session requests from other nodes.
pub(crate) async fn take_loop(
    sessions: Arc<Sessions>,
    broker: BrokerHandle,
    mut requests: Subscriber,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let next = tokio::select! {
            message = requests.next() => message,
            _ = stop.changed() => None,
        };
        let Some(message) = next else {
            break;
        };
        if sessions.frozen.load(Ordering::Relaxed) {
            continue;
        }
        let sessions = sessions.clone();
        let broker = broker.clone();
        tokio::spawn(async move { answer(&sessions, &broker, message).await });
    }
    let _ = requests.unsubscribe().await;
}

async fn answer(sessions: &Arc<Sessions>, broker: &BrokerHandle, message: async_nats::Message) {
    let Some(reply) = message.reply else {
        bump(&sessions.counters.invalid);
        return;
    };
    let request = message.payload;
    let parsed = match request.as_ref() {
        [VERSION, flags, id @ ..] if !id.is_empty() => std::str::from_utf8(id)
            .ok()
            .map(|id| (id.to_owned(), flags & FLAG_DISCARD != 0)),
        _ => None,
    };
    let Some((client_id, discard)) = parsed else {
        bump(&sessions.counters.invalid);
        tracing::debug!("malformed take-session request dropped");
        return;
    };
    // A session being adopted here right now: wait until it is in the
    // broker (bounded).
    for _ in 0..100 {
        if !lock(&sessions.adopting_clients).contains(&client_id) {
            break;
        }
        tokio::time::sleep(sessions.timeout / 100).await;
    }
    // Taken before the session (whose end forgets it): the gone node's
    // will is cancelled if the session moves on.
    let adopted = lock(&sessions.adopted_from).remove(&client_id);
    let previous = sessions.take_previous_will(&client_id);
    let export = broker.take_session(&client_id).await;
    if export.is_some()
        && !discard
        && let Some(dead) = adopted
    {
        sessions.cancel_will_later(dead, client_id.clone());
    }
    // So is this node's previous instance's.
    if export.is_some()
        && !discard
        && let Some((key, revision)) = previous
    {
        sessions.cancel_previous_will_later(key, revision, client_id.clone());
    }
    let publish = |payload: Bytes| sessions.client.publish(reply.clone(), payload);
    // Claimed here from a gone node whose state could not be read: the
    // requester reads it (it claimed the entry, with the gone node's record).
    let gone = lock(&sessions.unrestored).remove(&client_id);
    if export.is_none()
        && !discard
        && let Some(Refused { gone, .. }) = gone
    {
        let mut payload = BytesMut::with_capacity(2 + gone.len());
        payload.put_u8(VERSION);
        payload.put_u8(REPLY_GONE);
        payload.put_slice(gone.as_bytes());
        if let Err(e) = publish(payload.freeze()).await {
            tracing::warn!(error = %e, client = %client_id, "take-session reply not sent");
        }
        return;
    }
    let Some(export) = export.filter(|_| !discard) else {
        if let Err(e) = publish(Bytes::from_static(&[VERSION, REPLY_NONE])).await {
            tracing::warn!(error = %e, client = %client_id, "take-session reply not sent");
        }
        return;
    };
    bump(&sessions.counters.exported);
    let bytes = export.encode();
    let max = sessions
        .client
        .server_info()
        .max_payload
        .saturating_sub(64)
        .max(1024);
    let mut chunks = bytes.chunks(max).peekable();
    while let Some(chunk) = chunks.next() {
        let kind = if chunks.peek().is_some() {
            REPLY_PART
        } else {
            REPLY_LAST
        };
        let mut part = BytesMut::with_capacity(2 + chunk.len());
        part.put_u8(VERSION);
        part.put_u8(kind);
        part.put_slice(chunk);
        if let Err(e) = publish(part.freeze()).await {
            tracing::warn!(error = %e, client = %client_id, "take-session reply not sent: the session is lost");
            return;
        }
    }
    let _ = sessions.client.flush().await;
    tracing::debug!(client = %client_id, "session handed to another node");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_values_round_trip_and_reject_garbage() {
        let value = encode_value("node.1", b"record");
        let (node, record) = decode_value(&value).unwrap();
        assert_eq!((node.as_str(), record), ("node.1", &b"record"[..]));
        let value = encode_value("n", b"");
        assert_eq!(
            decode_value(&value).map(|(n, r)| (n, r.len())),
            Some(("n".into(), 0))
        );
        for cut in 0..value.len() {
            assert!(decode_value(&value[..cut]).is_none(), "cut {cut}");
        }
        assert!(decode_value(b"").is_none());
        assert!(decode_value(&[2, 0, 1, b'n']).is_none());
        assert!(decode_value(&[1, 0, 5, b'n']).is_none());
        assert!(decode_value(&[1, 0, 1, 0xff]).is_none());
    }
}
