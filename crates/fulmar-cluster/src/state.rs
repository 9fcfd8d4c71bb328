//! [`SessionStore`]: a node's persistent sessions in JetStream, so that
//! another node can resume them, with their messages, when the node dies.
//!
//! One stream, `{prefix}_state`, keeps the last message per subject
//! (`max_messages_per_subject = 1`); each record of a node's store is one
//! subject under `{prefix}.st.{node}.{client}`:
//!
//! | subject suffix | record |
//! |---|---|
//! | `.s` | the session ([`SessionExport`] without messages) |
//! | `.m.{seq}` | a queued or in-flight message ([`StoredMessage::encode`]), first part |
//! | `.m.{seq}.{k}` | part `k` of a message larger than NATS takes at once |
//! | `.p.{seq}` | the QoS 2 packet identifier a message went out with, PUBREC flag |
//! | `.i.{id}` | an inbound QoS 2 identifier awaiting PUBREL |
//!
//! `{node}` and `{client}` are escaped as registry keys are (letters,
//! digits, `-` and `_` as they are, other bytes `=XY`); a client identifier
//! whose escaped form is longer than [`MAX_KEY`] is named by a hash of it.
//!
//! A record is a message on its subject, a removal an empty message
//! (which replaces the record; it is deleted by its stream sequence once
//! acknowledged).
//!
//! **Commits go to a journal.** A commit publishes one message on
//! `{prefix}.stj.{node}` (the commit journal, one per node, the last one
//! kept) holding every change not yet written as a record, and returns
//! when JetStream acknowledged it: the commit is durable and atomic then.
//! Whoever reads a node's records applies its journal over them (setting
//! and removing records is idempotent). Changes are written as records,
//! after the journal that holds them, once they are 100 ms old or the
//! journal passes a quarter of a NATS message; a change undone before that
//! (a message acknowledged by its subscriber within 100 ms) is never
//! written at all. (A commit larger than one NATS message writes what was
//! pending, an empty journal, then its changes one by one: a node dying in
//! its middle leaves a prefix of it.)

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::{self, consumer, stream};
use bytes::{BufMut, Bytes};
use fulmar_broker::{
    SessionExport, Snapshot, Store, StoreError, StoreOp, StoredMessage, StoredSession,
};
use fulmar_codec::PacketId;
use futures::StreamExt;

use crate::ClusterError;
use crate::cluster::{lock, node_key};

/// The longest escaped client identifier used in a subject as it is; longer
/// ones are hashed.
pub(crate) const MAX_KEY: usize = 200;

/// Changes published before waiting for their acknowledgements.
const PIPELINE: usize = 1000;

/// Room left in a NATS message for the subject and headers.
const PART_OVERHEAD: usize = 4096;

fn engine(context: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(format!("JetStream {context}: {err}"))
}

/// The subject token of a client identifier.
pub(crate) fn client_key(client_id: &str) -> String {
    let key = node_key(client_id);
    if key.len() <= MAX_KEY {
        return key;
    }
    format!("~{}", id_hash(client_id))
}

/// A hash of an identifier, in lower-case hex digits: stable across nodes
/// and runs.
pub(crate) fn id_hash(id: &str) -> String {
    // FNV-1a, twice with different offsets, and the length.
    let fnv = |offset: u64| {
        id.bytes().fold(offset, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}{:x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x8422_2325_cbf2_9ce4),
        id.len()
    )
}

/// The subject root of a node's records.
pub(crate) fn node_root(prefix: &str, node_id: &str) -> String {
    format!("{prefix}.st.{}", node_key(node_id))
}

/// The subject of a node's commit journal.
pub(crate) fn journal_subject(prefix: &str, node_id: &str) -> String {
    format!("{prefix}.stj.{}", node_key(node_id))
}

/// The name of the state stream.
pub(crate) fn stream_name(prefix: &str) -> String {
    format!("{prefix}_state")
}

/// The stream of `config`, created when missing. Two nodes that start at
/// once may both find it missing and both create it: the one that loses
/// the race (NATS 2.9: "subjects overlap with an existing stream") takes
/// the stream the other made. It failed to start before.
pub(crate) async fn get_or_create_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, ClusterError> {
    let name = config.name.clone();
    match js.get_or_create_stream(config).await {
        Ok(stream) => Ok(stream),
        Err(error) => js
            .get_stream(&name)
            .await
            .map_err(|_| ClusterError::jetstream(&name, error)),
    }
}

/// Creates the state stream when missing.
pub(crate) async fn state_stream(
    js: &jetstream::Context,
    prefix: &str,
    replicas: usize,
) -> Result<stream::Stream, ClusterError> {
    get_or_create_stream(
        js,
        stream::Config {
            name: stream_name(prefix),
            subjects: vec![format!("{prefix}.st.>"), format!("{prefix}.stj.>")],
            max_messages_per_subject: 1,
            num_replicas: replicas.max(1),
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        },
    )
    .await
}

/// What is kept of one message, to remove it again.
#[derive(Clone, Copy, Default)]
struct MessageKeys {
    /// Parts beyond the first.
    parts: u32,
    /// A `.p` record exists.
    marked: bool,
}

/// The records a client has in the stream now.
#[derive(Default)]
struct ClientKeys {
    session: bool,
    messages: BTreeMap<u64, MessageKeys>,
    incoming: BTreeSet<u16>,
}

/// What a commit changed in the index, to put back when it fails (the
/// broker commits the same operations again).
enum Undo {
    /// A client's whole entry, removed.
    Client(Arc<str>, ClientKeys),
    /// Whether a client had its session record.
    Session(Arc<str>, bool),
    /// A message's keys before.
    Message(Arc<str>, u64, Option<MessageKeys>),
    /// Whether an inbound identifier was there.
    Incoming(Arc<str>, u16, bool),
}

/// A node's persistent sessions in JetStream: a [`Store`] for the node's
/// broker ([`BrokerBuilder::store`](fulmar_broker::BrokerBuilder::store)),
/// made by [`Cluster::session_store`](crate::Cluster::session_store).
///
/// It keeps sessions, their queued and in-flight QoS 1/2 messages and the
/// inbound QoS 2 identifiers awaiting PUBREL. Retained messages are not
/// its business: the cluster keeps them in its retained stream and loads
/// them when it attaches. When a client connects to another node and its
/// node does not answer (it died), that node reads the client's records
/// from the stream and resumes the session with its messages.
///
/// [`Store::commit`] blocks its thread (the broker's store writer) on the
/// tokio runtime the store was made on, until JetStream acknowledged every
/// change (at most [`ClusterConfig::session_timeout`](crate::ClusterConfig::session_timeout)
/// for the whole commit; then the commit fails and the broker stops
/// acknowledging).
///
/// # Example
///
/// (Not run as a doc test: it needs `nats-server -js`.)
///
/// ```no_run
/// use fulmar_broker::Broker;
/// use fulmar_cluster::{Cluster, ClusterConfig};
///
/// # async fn node() -> Result<(), Box<dyn std::error::Error>> {
/// let cluster = Cluster::connect(ClusterConfig::new("nats://127.0.0.1:4222", "node-a")).await?;
/// let broker = Broker::builder()
///     .tcp_listener("0.0.0.0:1883")
///     .bridge(cluster.bridge())
///     .store(cluster.session_store().await?)
///     .start()
///     .await?;
/// cluster.attach(&broker).await?;
/// # Ok(())
/// # }
/// ```
pub struct SessionStore {
    js: jetstream::Context,
    stream: stream::Stream,
    root: String,
    journal: String,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
    max_part: usize,
    index: Mutex<HashMap<Arc<str>, ClientKeys>>,
    pending: Mutex<Pending>,
    loaded: Mutex<Option<Snapshot>>,
    /// Commits left to fail after their first publish (a test hook).
    fail_records: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// One publish of a commit.
#[derive(Clone)]
struct Change {
    subject: String,
    payload: Bytes,
    /// A record on a subject the stream never had one on (a message's, an
    /// inbound identifier's): removed before it is written, it is not
    /// written at all.
    new: bool,
}

impl Change {
    /// The removal of the record on `subject` (an empty message).
    fn removal(subject: String) -> Self {
        Self {
            subject,
            payload: Bytes::new(),
            new: false,
        }
    }
}

/// Changes the journal holds that are not written as records yet, by
/// subject (each the latest; an empty payload removes).
#[derive(Clone, Default)]
struct Pending {
    changes: HashMap<String, Change>,
    bytes: usize,
    since: Option<std::time::Instant>,
}

impl Pending {
    fn merge(&mut self, change: Change) {
        let size = change.subject.len() + change.payload.len() + 6;
        match self.changes.get_mut(&change.subject) {
            Some(old) if change.payload.is_empty() && old.new => {
                // Never written: nothing to remove.
                self.bytes = self
                    .bytes
                    .saturating_sub(old.subject.len() + old.payload.len() + 6);
                self.changes.remove(&change.subject);
            }
            Some(old) => {
                self.bytes = self.bytes.saturating_sub(old.payload.len()) + change.payload.len();
                old.payload = change.payload;
            }
            None => {
                self.bytes += size;
                self.since.get_or_insert_with(std::time::Instant::now);
                self.changes.insert(change.subject.clone(), change);
            }
        }
        if self.changes.is_empty() {
            self.since = None;
        }
    }
}

/// How long a change may stay in the journal only before it is written as
/// a record (its message acknowledged meanwhile: never written).
const WRITE_AFTER: Duration = Duration::from_millis(100);

impl SessionStore {
    /// Opens node `node_id`'s records and reads them (what
    /// [`Store::load`] returns). Tombstones found are deleted.
    pub(crate) async fn open(
        client: &Client,
        js: jetstream::Context,
        stream: stream::Stream,
        prefix: &str,
        node_id: &str,
        max_payload: usize,
        timeout: Duration,
    ) -> Result<Self, ClusterError> {
        let root = node_root(prefix, node_id);
        let journal = journal_subject(prefix, node_id);
        let mut records = read_records(&stream, client, &format!("{root}.>"), timeout)
            .await
            .map_err(|e| ClusterError::jetstream("state load", e))?;
        let last = last_journal(&stream, &journal)
            .await
            .map_err(|e| ClusterError::jetstream("state journal", e))?;
        apply_journal(&mut records, &root, &last, &format!("{root}."));
        let mut tombstones = Vec::new();
        let clients = assemble(&root, records, &mut tombstones);
        for seq in tombstones {
            let _ = stream.delete_message(seq).await;
        }
        let mut index = HashMap::new();
        let mut snapshot = Snapshot::default();
        for (_, client) in clients {
            let Some(session) = client.session else {
                snapshot.skipped += client.messages.len() + client.incoming.len();
                continue;
            };
            let id = session.client_id.clone();
            let keys = index.entry(id.clone()).or_insert_with(ClientKeys::default);
            keys.session = true;
            for (seq, (message, parts, marked)) in client.messages {
                keys.messages.insert(seq, MessageKeys { parts, marked });
                snapshot.messages.push((id.clone(), seq, message));
            }
            for packet_id in client.incoming {
                keys.incoming.insert(packet_id.get());
                snapshot.incoming.push((id.clone(), packet_id));
            }
            snapshot.skipped += client.skipped;
            snapshot.sessions.push(session);
        }
        Ok(Self {
            js,
            stream,
            root,
            journal,
            runtime: tokio::runtime::Handle::current(),
            timeout,
            max_part: max_payload.saturating_sub(PART_OVERHEAD).max(1024),
            index: Mutex::new(index),
            pending: Mutex::new(Pending::default()),
            loaded: Mutex::new(Some(snapshot)),
            fail_records: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Makes the next `commits` commits that write records fail after
    /// their first publish (the journal, acknowledged), as when JetStream
    /// refuses or does not acknowledge a record: for tests of failed
    /// commits.
    #[doc(hidden)]
    pub fn fail_record_writes_for_test(&self, commits: usize) {
        self.fail_records
            .store(commits, std::sync::atomic::Ordering::SeqCst);
    }

    fn subject(&self, client: &str, suffix: std::fmt::Arguments<'_>) -> String {
        format!("{}.{}.{suffix}", self.root, client_key(client))
    }

    /// Puts the index back as it was before the commit that made `undo`.
    fn undo(&self, undo: Vec<Undo>) {
        let mut index = lock(&self.index);
        for step in undo.into_iter().rev() {
            match step {
                Undo::Client(client, keys) => {
                    index.insert(client, keys);
                }
                Undo::Session(client, had) => {
                    index.entry(client).or_default().session = had;
                }
                Undo::Message(client, seq, keys) => {
                    let messages = &mut index.entry(client).or_default().messages;
                    match keys {
                        Some(keys) => messages.insert(seq, keys),
                        None => messages.remove(&seq),
                    };
                }
                Undo::Incoming(client, packet_id, had) => {
                    let incoming = &mut index.entry(client).or_default().incoming;
                    if had {
                        incoming.insert(packet_id);
                    } else {
                        incoming.remove(&packet_id);
                    }
                }
            }
        }
    }

    /// The publishes for `ops`, in order; updates the index, and returns
    /// what puts it back.
    fn plan(&self, ops: &[StoreOp]) -> (Vec<Change>, Vec<Undo>) {
        let mut index = lock(&self.index);
        let mut out = Vec::with_capacity(ops.len());
        let mut undo = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                StoreOp::PutSession(session) => {
                    let record = SessionExport {
                        session: session.clone(),
                        messages: Vec::new(),
                        incoming: Vec::new(),
                    }
                    .encode();
                    let keys = index.entry(session.client_id.clone()).or_default();
                    undo.push(Undo::Session(session.client_id.clone(), keys.session));
                    keys.session = true;
                    out.push(Change {
                        subject: self.subject(&session.client_id, format_args!("s")),
                        payload: Bytes::from(record),
                        new: false,
                    });
                }
                StoreOp::DeleteSession(client) => {
                    let Some(keys) = index.remove(client) else {
                        continue;
                    };
                    for (seq, message) in &keys.messages {
                        self.remove_message(client, *seq, *message, &mut out);
                    }
                    for packet_id in &keys.incoming {
                        out.push(Change::removal(
                            self.subject(client, format_args!("i.{packet_id}")),
                        ));
                    }
                    if keys.session {
                        out.push(Change::removal(self.subject(client, format_args!("s"))));
                    }
                    undo.push(Undo::Client(client.clone(), keys));
                }
                StoreOp::PutMessage {
                    client,
                    seq,
                    message,
                } => {
                    let record = message.encode();
                    let parts = self.put_message(client, *seq, &record, &mut out);
                    let before = index.entry(client.clone()).or_default().messages.insert(
                        *seq,
                        MessageKeys {
                            parts,
                            marked: false,
                        },
                    );
                    undo.push(Undo::Message(client.clone(), *seq, before));
                }
                StoreOp::MarkSent {
                    client,
                    seq,
                    packet_id,
                    released,
                } => {
                    let Some(keys) = index
                        .get_mut(client)
                        .and_then(|keys| keys.messages.get_mut(seq))
                    else {
                        continue;
                    };
                    undo.push(Undo::Message(client.clone(), *seq, Some(*keys)));
                    keys.marked = true;
                    let mut payload = Vec::with_capacity(3);
                    payload.put_u16(packet_id.get());
                    payload.put_u8(u8::from(*released));
                    out.push(Change {
                        subject: self.subject(client, format_args!("p.{seq}")),
                        payload: Bytes::from(payload),
                        new: false,
                    });
                }
                StoreOp::DeleteMessage { client, seq } => {
                    let Some(message) = index
                        .get_mut(client)
                        .and_then(|keys| keys.messages.remove(seq))
                    else {
                        continue;
                    };
                    undo.push(Undo::Message(client.clone(), *seq, Some(message)));
                    self.remove_message(client, *seq, message, &mut out);
                }
                StoreOp::AddIncoming { client, packet_id } => {
                    let added = index
                        .entry(client.clone())
                        .or_default()
                        .incoming
                        .insert(packet_id.get());
                    undo.push(Undo::Incoming(client.clone(), packet_id.get(), !added));
                    out.push(Change {
                        subject: self.subject(client, format_args!("i.{}", packet_id.get())),
                        payload: Bytes::from_static(&[1]),
                        // The broker adds an identifier that is not there.
                        new: true,
                    });
                }
                StoreOp::RemoveIncoming { client, packet_id }
                    if index
                        .get_mut(client)
                        .is_some_and(|keys| keys.incoming.remove(&packet_id.get())) =>
                {
                    undo.push(Undo::Incoming(client.clone(), packet_id.get(), true));
                    out.push(Change::removal(
                        self.subject(client, format_args!("i.{}", packet_id.get())),
                    ));
                }
                // Retained messages live in the cluster's retained stream.
                _ => {}
            }
        }
        (out, undo)
    }

    /// Publishes for a message record, in parts when it is larger than a
    /// NATS message may be; returns the parts beyond the first.
    fn put_message(&self, client: &str, seq: u64, record: &[u8], out: &mut Vec<Change>) -> u32 {
        let mut chunks = record.chunks(self.max_part);
        let first = chunks.next().unwrap_or_default();
        let rest: Vec<&[u8]> = chunks.collect();
        let parts = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        let mut head = Vec::with_capacity(4 + first.len());
        head.put_u32(parts);
        head.put_slice(first);
        out.push(Change {
            subject: self.subject(client, format_args!("m.{seq}")),
            payload: Bytes::from(head),
            // Message keys are never reused.
            new: true,
        });
        for (k, chunk) in rest.into_iter().enumerate() {
            out.push(Change {
                subject: self.subject(client, format_args!("m.{seq}.{}", k + 1)),
                payload: Bytes::copy_from_slice(chunk),
                new: true,
            });
        }
        parts
    }

    fn remove_message(&self, client: &str, seq: u64, keys: MessageKeys, out: &mut Vec<Change>) {
        out.push(Change::removal(
            self.subject(client, format_args!("m.{seq}")),
        ));
        for k in 1..=keys.parts {
            out.push(Change::removal(
                self.subject(client, format_args!("m.{seq}.{k}")),
            ));
        }
        if keys.marked {
            out.push(Change::removal(
                self.subject(client, format_args!("p.{seq}")),
            ));
        }
    }

    /// Publishes `changes` in order and waits for their acknowledgements,
    /// all within one timeout (NATS gone: the commit fails in bounded time).
    async fn publish(&self, changes: Vec<Change>) -> Result<Vec<u64>, StoreError> {
        tokio::time::timeout(self.timeout, self.publish_all(changes))
            .await
            .map_err(|_| engine("publish", "no acknowledgement in time"))?
    }

    async fn publish_all(&self, changes: Vec<Change>) -> Result<Vec<u64>, StoreError> {
        let mut tombstones = Vec::new();
        let mut changes = changes.into_iter().peekable();
        while changes.peek().is_some() {
            let mut acks = Vec::with_capacity(PIPELINE);
            for change in changes.by_ref().take(PIPELINE) {
                let empty = change.payload.is_empty();
                let ack = self
                    .js
                    .publish(change.subject, change.payload)
                    .await
                    .map_err(|e| engine("publish", e))?;
                acks.push((empty, ack));
            }
            for (empty, ack) in acks {
                let ack = ack.await.map_err(|e| engine("publish", e))?;
                if empty {
                    tombstones.push(ack.sequence);
                }
            }
        }
        Ok(tombstones)
    }
}

impl Store for SessionStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(lock(&self.loaded).take().unwrap_or_default())
    }

    /// Durable once JetStream acknowledged its journal (and the records
    /// due with it). A commit that fails leaves this store as if it had
    /// not been made (the broker commits the same operations again, with
    /// later ones after them): what was pending stays pending, in every
    /// journal from now on, until written as records; the index is put
    /// back; a record that may have been written meanwhile is removed
    /// again unless set again.
    fn commit(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let (changes, undo) = self.plan(ops);
        if changes.is_empty() {
            return Ok(());
        }
        let journal_change = |payload: Bytes| Change {
            subject: self.journal.clone(),
            payload,
            new: false,
        };
        let mut pending = lock(&self.pending);
        let mut merged = pending.clone();
        for change in changes.iter().cloned() {
            merged.merge(change);
        }
        let all: Vec<Change> = merged.changes.values().cloned().collect();
        let size: usize = 1 + all
            .iter()
            .map(|c| 6 + c.subject.len() + c.payload.len())
            .sum::<usize>();
        // The publishes, and what is pending once they are acknowledged.
        let (out, after) = if size <= self.max_part {
            let journal = encode_journal(&self.root, &all, self.max_part);
            // The journal holds every change not written yet: durable now.
            // Write them as records once they are old or many (the journal
            // stays small); the journal covers a write cut short.
            let due = merged.since.is_some_and(|t| t.elapsed() >= WRITE_AFTER)
                || merged.bytes > self.max_part / 4;
            let mut out = vec![journal_change(journal)];
            if due {
                out.extend(all);
                (out, Pending::default())
            } else {
                (out, merged)
            }
        } else {
            // Too large for one message: what was pending is written under
            // the journal that holds it, then this commit change by change.
            let mut out: Vec<Change> = pending.changes.values().cloned().collect();
            out.push(journal_change(encode_journal(&self.root, &[], 0)));
            out.extend(changes);
            (out, Pending::default())
        };
        let fail = out.len() > 1
            && self
                .fail_records
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |n| n.checked_sub(1),
                )
                .is_ok();
        let sent = if fail {
            out.iter().take(1).cloned().collect()
        } else {
            out.clone()
        };
        let result = self.runtime.block_on(self.publish(sent)).and_then(|t| {
            if fail {
                Err(engine("publish", "records refused (test hook)"))
            } else {
                Ok(t)
            }
        });
        let tombstones = match result {
            Ok(tombstones) => {
                *pending = after;
                tombstones
            }
            Err(error) => {
                // Records may have been written: a removal of one is
                // written, not dropped, and one set by this commit is
                // removed unless the commit made again sets it again.
                for change in out.into_iter().filter(|c| c.subject != self.journal) {
                    match pending.changes.get_mut(&change.subject) {
                        Some(old) => old.new = false,
                        None if !change.payload.is_empty() => {
                            pending.merge(Change::removal(change.subject));
                        }
                        None => {}
                    }
                }
                drop(pending);
                self.undo(undo);
                return Err(error);
            }
        };
        drop(pending);
        if !tombstones.is_empty() {
            // Cleanup, off the acknowledgement path: the records they
            // replaced are gone already.
            let stream = self.stream.clone();
            self.runtime.spawn(async move {
                for seq in tombstones {
                    let _ = stream.delete_message(seq).await;
                }
            });
        }
        Ok(())
    }
}

/// One record read back: subject and payload, with its stream sequence.
struct Record {
    subject: String,
    payload: Bytes,
    sequence: u64,
}

/// Every record under `filter`, in stream order.
async fn read_records(
    stream: &stream::Stream,
    client: &Client,
    filter: &str,
    timeout: Duration,
) -> Result<Vec<Record>, String> {
    let consumer = stream
        .create_consumer(consumer::push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: filter.to_owned(),
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut pending = consumer.cached_info().num_pending;
    let mut records = Vec::new();
    if pending == 0 {
        return Ok(records);
    }
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    while pending > 0 {
        let message = match tokio::time::timeout(timeout, messages.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(None) => return Err("stream ended".into()),
            Err(_) => return Err("timed out".into()),
        };
        let info = message.info().map_err(|e| e.to_string())?;
        pending = info.pending;
        let sequence = info.stream_sequence;
        records.push(Record {
            subject: message.subject.to_string(),
            payload: message.payload.clone(),
            sequence,
        });
    }
    Ok(records)
}

/// The journal version byte.
const JOURNAL_VERSION: u8 = 1;

/// A commit's changes as one message: a version byte, then per change the
/// subject below `root` (2-byte length) and the payload (4-byte length).
/// The version byte alone (no change) when that is larger than `max`: never
/// empty, so that it is not taken for a removal, and a node's journal
/// subject says it keeps state.
fn encode_journal(root: &str, changes: &[Change], max: usize) -> Bytes {
    const NONE: &[u8] = &[JOURNAL_VERSION];
    let mut size = 1;
    for change in changes {
        size += 6 + change.subject.len() + change.payload.len();
        if size > max {
            return Bytes::from_static(NONE);
        }
    }
    let mut out = Vec::with_capacity(size);
    out.put_u8(JOURNAL_VERSION);
    for change in changes {
        let below = change
            .subject
            .strip_prefix(root)
            .and_then(|s| s.strip_prefix('.'))
            .unwrap_or(&change.subject);
        let (Ok(len), Ok(payload_len)) = (
            u16::try_from(below.len()),
            u32::try_from(change.payload.len()),
        ) else {
            return Bytes::from_static(NONE);
        };
        out.put_u16(len);
        out.put_slice(below.as_bytes());
        out.put_u32(payload_len);
        out.put_slice(&change.payload);
    }
    Bytes::from(out)
}

/// Decodes [`encode_journal`]: `(subject below root, payload)` pairs, or
/// `None` when it is empty or malformed.
fn decode_journal(journal: &[u8]) -> Option<Vec<(String, Bytes)>> {
    let (&version, mut rest) = journal.split_first()?;
    if version != JOURNAL_VERSION {
        return None;
    }
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len));
        let subject = std::str::from_utf8(tail.get(..len)?).ok()?.to_owned();
        let tail = tail.get(len..)?;
        let (payload_len, tail) = tail.split_first_chunk::<4>()?;
        let payload_len = usize::try_from(u32::from_be_bytes(*payload_len)).ok()?;
        let payload = Bytes::copy_from_slice(tail.get(..payload_len)?);
        rest = tail.get(payload_len..)?;
        out.push((subject, payload));
    }
    Some(out)
}

/// A node's last commit journal (empty when it has none).
async fn last_journal(stream: &stream::Stream, subject: &str) -> Result<Bytes, String> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => Ok(message.payload),
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(Bytes::new()),
        Err(e) => Err(e.to_string()),
    }
}

/// Applies the changes of `journal` whose subject starts with `only` over
/// `records` (replacing or adding records; an empty payload removes).
fn apply_journal(records: &mut Vec<Record>, root: &str, journal: &[u8], only: &str) {
    if journal.is_empty() {
        return;
    }
    let Some(changes) = decode_journal(journal) else {
        tracing::warn!(root, "malformed commit journal ignored");
        return;
    };
    let mut at: HashMap<String, usize> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.subject.clone(), i))
        .collect();
    for (below, payload) in changes {
        let subject = format!("{root}.{below}");
        if !subject.starts_with(only) {
            continue;
        }
        match at.get(&subject) {
            Some(&i) => {
                if let Some(record) = records.get_mut(i) {
                    record.payload = payload;
                    // Replayed: not a stream message of its own to delete.
                    record.sequence = 0;
                }
            }
            None => {
                at.insert(subject.clone(), records.len());
                records.push(Record {
                    subject,
                    payload,
                    sequence: 0,
                });
            }
        }
    }
}

/// A client's records, read back.
#[derive(Default)]
struct ClientRecords {
    session: Option<StoredSession>,
    /// seq -> message, parts beyond the first, marked.
    messages: BTreeMap<u64, (StoredMessage, u32, bool)>,
    incoming: Vec<PacketId>,
    /// Records that could not be read.
    skipped: usize,
}

/// Groups the records under `root` by client and decodes them; the stream
/// sequences of tombstones go to `tombstones`.
fn assemble(
    root: &str,
    records: Vec<Record>,
    tombstones: &mut Vec<u64>,
) -> BTreeMap<String, ClientRecords> {
    #[derive(Default)]
    struct Raw {
        session: Option<Bytes>,
        heads: BTreeMap<u64, Bytes>,
        parts: HashMap<(u64, u32), Bytes>,
        marks: HashMap<u64, Bytes>,
        incoming: Vec<u16>,
        skipped: usize,
    }
    let mut raw: BTreeMap<String, Raw> = BTreeMap::new();
    for record in records {
        if record.payload.is_empty() {
            if record.sequence != 0 {
                tombstones.push(record.sequence);
            }
            continue;
        }
        let Some(rest) = record
            .subject
            .strip_prefix(root)
            .and_then(|rest| rest.strip_prefix('.'))
        else {
            continue;
        };
        let mut tokens = rest.split('.');
        let (Some(client), Some(kind)) = (tokens.next(), tokens.next()) else {
            continue;
        };
        let number = tokens.next().map(str::parse::<u64>);
        let part = tokens.next().map(str::parse::<u32>);
        let entry = raw.entry(client.to_owned()).or_default();
        match (kind, number, part) {
            ("s", None, None) => entry.session = Some(record.payload),
            ("m", Some(Ok(seq)), None) => {
                entry.heads.insert(seq, record.payload);
            }
            ("m", Some(Ok(seq)), Some(Ok(k))) => {
                entry.parts.insert((seq, k), record.payload);
            }
            ("p", Some(Ok(seq)), None) => {
                entry.marks.insert(seq, record.payload);
            }
            ("i", Some(Ok(id)), None) => match u16::try_from(id) {
                Ok(id) if id != 0 => entry.incoming.push(id),
                _ => entry.skipped += 1,
            },
            _ => entry.skipped += 1,
        }
    }
    raw.into_iter()
        .map(|(key, raw)| {
            let mut out = ClientRecords {
                skipped: raw.skipped,
                ..ClientRecords::default()
            };
            out.session = raw
                .session
                .and_then(|bytes| match SessionExport::decode(&bytes) {
                    Ok(export) => Some(export.session),
                    Err(_) => {
                        out.skipped += 1;
                        None
                    }
                });
            for (seq, head) in raw.heads {
                let Some(message) = join_parts(seq, &head, &raw.parts) else {
                    out.skipped += 1;
                    continue;
                };
                let (mut message, parts) = message;
                let mut marked = false;
                if let Some(mark) = raw.marks.get(&seq) {
                    if let [hi, lo, released] = mark[..] {
                        message.packet_id = PacketId::new(u16::from_be_bytes([hi, lo]));
                        message.released = released != 0;
                        marked = true;
                    } else {
                        out.skipped += 1;
                    }
                }
                out.messages.insert(seq, (message, parts, marked));
            }
            out.incoming = raw.incoming.into_iter().filter_map(PacketId::new).collect();
            (key, out)
        })
        .collect()
}

/// A message from its first part and the others; `None` when a part is
/// missing or the record does not decode.
fn join_parts(
    seq: u64,
    head: &[u8],
    parts: &HashMap<(u64, u32), Bytes>,
) -> Option<(StoredMessage, u32)> {
    let (count, first) = head.split_first_chunk::<4>()?;
    let count = u32::from_be_bytes(*count);
    let record = if count == 0 {
        std::borrow::Cow::Borrowed(first)
    } else {
        let mut all = first.to_vec();
        for k in 1..=count {
            all.extend_from_slice(parts.get(&(seq, k))?);
        }
        std::borrow::Cow::Owned(all)
    };
    Some((StoredMessage::decode(&record).ok()?, count))
}

/// The records node `node_id` keeps for `client_id`, as a session to
/// install elsewhere. `Ok(None)`: it kept no session for it, or there is no
/// state stream at all (no node of the cluster keeps its sessions in
/// JetStream). `Err`: the state could not be read now (JetStream
/// unavailable, a timeout).
pub(crate) async fn read_session(
    client: &Client,
    js: &jetstream::Context,
    prefix: &str,
    node_id: &str,
    client_id: &str,
    timeout: Duration,
) -> Result<Option<SessionExport>, String> {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::context::GetStreamErrorKind;
    if let Err(error) = js.get_stream(stream_name(prefix)).await {
        return match error.kind() {
            GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                Ok(None)
            }
            _ => Err(error.to_string()),
        };
    }
    let mut sessions = read_sessions(client, js, prefix, node_id, Some(client_id), timeout).await?;
    let found = sessions.pop();
    match found {
        Some(export) if *export.session.client_id == *client_id => Ok(Some(export)),
        Some(other) => {
            // Not this client's: a collision of the record keys' hash. Not
            // a state to restore, and trying again would not change it.
            tracing::warn!(client = %client_id, other = %other.session.client_id, "session records of another client under the same key");
            Ok(None)
        }
        None => Ok(None),
    }
}

/// The sessions node `node_id` keeps (only `client_id`'s when given), each
/// as a session to install elsewhere.
pub(crate) async fn read_sessions(
    client: &Client,
    js: &jetstream::Context,
    prefix: &str,
    node_id: &str,
    client_id: Option<&str>,
    timeout: Duration,
) -> Result<Vec<SessionExport>, String> {
    let stream = js
        .get_stream(stream_name(prefix))
        .await
        .map_err(|e| e.to_string())?;
    let root = node_root(prefix, node_id);
    let only = match client_id {
        Some(id) => format!("{root}.{}.", client_key(id)),
        None => format!("{root}."),
    };
    let mut records = read_records(&stream, client, &format!("{only}>"), timeout).await?;
    let last = last_journal(&stream, &journal_subject(prefix, node_id)).await?;
    apply_journal(&mut records, &root, &last, &only);
    let mut tombstones = Vec::new();
    let clients = assemble(&root, records, &mut tombstones);
    Ok(clients
        .into_values()
        .filter_map(|client| {
            let session = client.session?;
            // In flight first (they have their packet identifier), then
            // queued, each in the order they were stored.
            let (mut messages, queued): (Vec<_>, Vec<_>) = client
                .messages
                .into_values()
                .map(|(message, _, _)| message)
                .partition(|message| message.packet_id.is_some());
            messages.extend(queued);
            Some(SessionExport {
                session,
                messages,
                incoming: client.incoming,
            })
        })
        .collect())
}

/// The nodes that wrote a commit journal, none for at least `quiet`
/// (their last commit is older): candidates for being gone.
pub(crate) async fn quiet_nodes(
    js: &jetstream::Context,
    prefix: &str,
    quiet: Duration,
) -> Result<Vec<String>, String> {
    use futures::TryStreamExt;
    let Ok(stream) = js.get_stream(stream_name(prefix)).await else {
        // No state stream: no node kept sessions there.
        return Ok(Vec::new());
    };
    let root = format!("{prefix}.stj.");
    let subjects: Vec<(String, usize)> = stream
        .info_with_subjects(format!("{root}*"))
        .await
        .map_err(|e| e.to_string())?
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let quiet = quiet.as_secs().max(1);
    let mut nodes = Vec::new();
    for (subject, _) in subjects {
        let Some(node) = subject
            .strip_prefix(&root)
            .and_then(crate::cluster::node_from_key)
        else {
            continue;
        };
        let Ok(last) = stream.get_last_raw_message_by_subject(&subject).await else {
            continue;
        };
        let at = u64::try_from(last.time.unix_timestamp()).unwrap_or(0);
        if now.saturating_sub(at) >= quiet {
            nodes.push(node);
        }
    }
    Ok(nodes)
}

/// Removes node `node_id`'s commit journal (nothing of it is left).
pub(crate) async fn purge_journal(
    js: &jetstream::Context,
    prefix: &str,
    node_id: &str,
) -> Result<(), String> {
    let stream = js
        .get_stream(stream_name(prefix))
        .await
        .map_err(|e| e.to_string())?;
    stream
        .purge()
        .filter(journal_subject(prefix, node_id))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Removes every record node `node_id` keeps for `client_id` (its session
/// lives elsewhere now).
pub(crate) async fn purge_session(
    js: &jetstream::Context,
    prefix: &str,
    node_id: &str,
    client_id: &str,
) -> Result<(), String> {
    let stream = js
        .get_stream(stream_name(prefix))
        .await
        .map_err(|e| e.to_string())?;
    let filter = format!("{}.{}.>", node_root(prefix, node_id), client_key(client_id));
    stream
        .purge()
        .filter(filter)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_keys_are_subject_tokens_and_long_ids_are_hashed() {
        assert_eq!(client_key("sensor-1"), "sensor-1");
        assert_eq!(client_key("a.b c"), "a=2Eb=20c");
        let long = "x".repeat(500);
        let key = client_key(&long);
        assert!(key.len() <= MAX_KEY && key.starts_with('~'));
        assert_ne!(key, client_key(&"x".repeat(501)));
        assert_eq!(key, client_key(&long));
        for id in ["a>b", "*", "a.b", " ", "\u{e9}"] {
            let key = client_key(id);
            assert!(!key.contains(['.', '*', '>', ' ']), "{key}");
        }
    }

    fn record(subject: &str, payload: &[u8], sequence: u64) -> Record {
        Record {
            subject: subject.to_owned(),
            payload: Bytes::copy_from_slice(payload),
            sequence,
        }
    }

    #[test]
    fn assembling_skips_what_does_not_decode_and_collects_tombstones() {
        let root = "f.st.n";
        let records = vec![
            record("f.st.n.c.s", b"junk", 1),
            record("f.st.n.c.m.1", &[0, 0, 0, 0, 9], 2),
            record("f.st.n.c.m.2", &[0, 0, 0, 3], 3),
            record("f.st.n.c.m.3", b"", 4),
            record("f.st.n.c.i.0", &[1], 5),
            record("f.st.n.c.i.70000", &[1], 6),
            record("f.st.n.c.i.7", &[1], 7),
            record("f.st.n.c.zz", &[1], 8),
            record("f.st.other.c.s", &[1], 9),
        ];
        let mut tombstones = Vec::new();
        let clients = assemble(root, records, &mut tombstones);
        assert_eq!(tombstones, vec![4]);
        let client = clients.get("c").unwrap();
        assert!(client.session.is_none());
        assert!(client.messages.is_empty());
        assert_eq!(client.incoming, vec![PacketId::new(7).unwrap()]);
        // session, two messages, ids 0 and 70000, unknown kind.
        assert_eq!(client.skipped, 6);
    }

    #[test]
    fn the_journal_completes_a_commit_cut_short() {
        let root = "f.st.n";
        let change = |subject: &str, payload: &[u8]| Change {
            subject: format!("{root}.{subject}"),
            payload: Bytes::copy_from_slice(payload),
            new: false,
        };
        let commit = vec![
            change("c.i.7", &[1]),
            change("c.m.1", b"new"),
            change("c.m.0", b""),
            change("d.s", b"other client"),
        ];
        let journal = encode_journal(root, &commit, 1 << 20);
        assert_eq!(decode_journal(&journal).unwrap().len(), 4);
        // The node died after writing the first change only.
        let mut records = vec![
            record("f.st.n.c.m.0", b"old", 3),
            record("f.st.n.c.i.7", &[1], 4),
        ];
        apply_journal(&mut records, root, &journal, "f.st.n.c.");
        let mut got: Vec<(String, Vec<u8>, u64)> = records
            .into_iter()
            .map(|r| (r.subject, r.payload.to_vec(), r.sequence))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("f.st.n.c.i.7".to_owned(), vec![1], 0),
                ("f.st.n.c.m.0".to_owned(), vec![], 0),
                ("f.st.n.c.m.1".to_owned(), b"new".to_vec(), 0),
            ]
        );
        // Too large for one message: a journal without changes; truncated
        // or unknown: none.
        let none = encode_journal(root, &commit, 10);
        assert_eq!(decode_journal(&none), Some(Vec::new()));
        assert!(decode_journal(&journal[..journal.len() - 1]).is_none());
        assert!(decode_journal(&[9]).is_none());
        let mut untouched = vec![record("f.st.n.c.m.0", b"old", 3)];
        apply_journal(&mut untouched, root, &[1, 0xff], "f.st.n.");
        assert_eq!(untouched[0].payload, "old");
    }

    #[test]
    fn pending_changes_cancel_out_when_never_written() {
        let change = |subject: &str, payload: &[u8], new: bool| Change {
            subject: subject.to_owned(),
            payload: Bytes::copy_from_slice(payload),
            new,
        };
        let mut pending = Pending::default();
        pending.merge(change("c.m.1", b"message", true));
        pending.merge(change("c.s", b"session", false));
        assert!(pending.since.is_some());
        // Acknowledged before it was written: gone without a trace.
        pending.merge(change("c.m.1", b"", false));
        assert!(!pending.changes.contains_key("c.m.1"));
        // A record that may be in the stream is removed with an empty one.
        pending.merge(change("c.s", b"", false));
        assert_eq!(pending.changes["c.s"].payload, "");
        pending.merge(change("c.s", b"again", false));
        assert_eq!(pending.changes["c.s"].payload, "again");
        pending.merge(change("c.s", b"", false));
        assert_eq!(pending.changes.len(), 1);
        let mut only_new = Pending::default();
        only_new.merge(change("c.i.7", &[1], true));
        only_new.merge(change("c.i.7", b"", false));
        assert!(only_new.changes.is_empty() && only_new.since.is_none());
    }

    #[test]
    fn a_message_in_parts_joins_and_a_missing_part_is_skipped() {
        let message = StoredMessage {
            publish: fulmar_codec::Publish::new(
                fulmar_codec::MqttString::from("t"),
                Bytes::from(vec![7u8; 3000]),
            ),
            stored_at: 5,
            packet_id: None,
            released: false,
        };
        let record = message.encode();
        let (first, rest) = record.split_at(1000);
        let mut head = vec![0, 0, 0, 2];
        head.extend_from_slice(first);
        let mut parts = HashMap::new();
        parts.insert((9, 1), Bytes::copy_from_slice(&rest[..1000]));
        assert!(join_parts(9, &head, &parts).is_none());
        parts.insert((9, 2), Bytes::copy_from_slice(&rest[1000..]));
        assert_eq!(join_parts(9, &head, &parts), Some((message, 2)));
        assert!(join_parts(9, &[0, 0], &parts).is_none());
    }
}
