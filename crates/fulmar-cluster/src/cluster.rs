//! [`Cluster`]: one node of a cluster of brokers over NATS, its
//! configuration and the tasks that route between NATS and the broker.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer, kv, stream};
use async_nats::{Client, Subscriber};
use bytes::{BufMut, Bytes, BytesMut};
use fulmar_broker::{Bridge, BrokerError, BrokerHandle, SessionClaim, StoredSession};
use fulmar_codec::{Packet, PacketId, ProtocolVersion, Publish, QoS};
use fulmar_topic::{SharedFilter, SubscriptionFilter, TopicName};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::ClusterError;
use crate::headers::{self, Origin};
use crate::sessions::{self, SessionEvent, Sessions};
use crate::subject::{Subjects, escape_level};

/// How a node authenticates to NATS.
#[derive(Clone)]
#[non_exhaustive]
pub enum Credentials {
    /// User name and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// An authentication token.
    Token(String),
    /// An NKey seed (`SU...`).
    NKey(String),
    /// A `.creds` file (JWT and NKey seed), as `nsc` writes it.
    CredsFile(PathBuf),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UserPassword { user, .. } => f
                .debug_struct("UserPassword")
                .field("user", user)
                .finish_non_exhaustive(),
            Self::Token(_) => f.write_str("Token(..)"),
            Self::NKey(_) => f.write_str("NKey(..)"),
            Self::CredsFile(path) => f.debug_tuple("CredsFile").field(path).finish(),
        }
    }
}

/// TLS towards the NATS servers.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct TlsOptions {
    /// Refuse servers that do not offer TLS.
    pub required: bool,
    /// PEM files of extra root certificates (a private CA).
    pub ca_files: Vec<PathBuf>,
    /// PEM files of a client certificate chain and its key, for servers
    /// that verify clients.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl TlsOptions {
    /// TLS required, with the system roots.
    #[must_use]
    pub fn required() -> Self {
        Self {
            required: true,
            ..Self::default()
        }
    }
}

/// How a node joins a cluster: [`Cluster::connect`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://127.0.0.1:4222`, `tls://...`); the client
    /// picks one and moves to another when it fails.
    pub urls: Vec<String>,
    /// This node's name, unique in the cluster (the host name will do). At
    /// most 200 bytes once escaped (letters, digits, `-` and `_` count one
    /// byte, every other byte three): it goes into subjects and keys.
    pub node_id: String,
    /// NATS authentication.
    pub credentials: Option<Credentials>,
    /// TLS to NATS.
    pub tls: Option<TlsOptions>,
    /// Replicas of the JetStream stream and bucket the cluster creates (1
    /// for a single NATS server, 3 for a NATS cluster of 3 or more). Used
    /// only when this node creates them.
    pub replicas: usize,
    /// First token of every subject, stream and bucket name of this
    /// cluster, so that several clusters can share NATS servers: ASCII
    /// letters, digits, `-` and `_`. Default `fulmar`.
    pub subject_prefix: String,
    /// How often the node writes its heartbeat key, and looks for the
    /// wills of gone nodes. Default 2 s.
    pub heartbeat_interval: Duration,
    /// How long a heartbeat key lives (the bucket's max age): a node is
    /// taken for gone when its key is older. Default 10 s. Used only when
    /// this node creates the bucket.
    pub heartbeat_ttl: Duration,
    /// Messages accepted locally that may wait to be published to NATS;
    /// beyond that they are dropped and counted
    /// ([`ClusterStats::dropped_outbound`]). Default 65 536.
    pub outbound_capacity: usize,
    /// The same bound in bytes (topics and payloads): beyond it messages
    /// are dropped and counted likewise, but one message always fits in an
    /// empty queue. Default 64 MiB. (Bounded by count alone, a queue of
    /// large messages could hold gigabytes while NATS is away.)
    pub outbound_max_bytes: usize,
    /// How many recent message ids a node remembers to inject a message
    /// once when several of its NATS subscriptions match it (`a/+` and
    /// `a/#`). Default 65 536; 0 turns the check off.
    pub dedupe_window: usize,
    /// How long a connecting client's node waits for each step of taking
    /// its session from another node (the registry, then the node that
    /// held it) before it starts a new session instead. Default 5 s.
    pub session_timeout: Duration,
    /// The NATS servers' `max_control_line`: their longest protocol line
    /// (a server closes the connection of a client that sends a longer
    /// one). Default 4096, the servers' default (NATS does not announce
    /// it). A filter whose subject, with its queue group, would not fit
    /// with room for the rest of the line is not subscribed to in NATS
    /// ([`ClusterStats::filters_too_long`]); a message whose topic's
    /// subject would not fit is not published there
    /// ([`ClusterStats::topics_too_long`]).
    pub max_control_line: usize,
}

impl ClusterConfig {
    /// A configuration with one NATS URL (more go in [`urls`](Self::urls))
    /// and defaults for everything else.
    #[must_use]
    pub fn new(url: impl Into<String>, node_id: impl Into<String>) -> Self {
        Self {
            urls: vec![url.into()],
            node_id: node_id.into(),
            credentials: None,
            tls: None,
            replicas: 1,
            subject_prefix: "fulmar".to_owned(),
            heartbeat_interval: Duration::from_secs(2),
            heartbeat_ttl: Duration::from_secs(10),
            outbound_capacity: 65_536,
            outbound_max_bytes: 64 * 1024 * 1024,
            dedupe_window: 65_536,
            session_timeout: Duration::from_secs(5),
            max_control_line: DEFAULT_MAX_CONTROL_LINE,
        }
    }
}

/// nats-server's default `max_control_line`.
const DEFAULT_MAX_CONTROL_LINE: usize = 4096;

/// Room a protocol line needs besides its subject and queue group: the
/// operation, a reply subject (an inbox), the sizes or the subscription
/// id, separators.
const CONTROL_LINE_OVERHEAD: usize = 128;

/// Counters of one node's cluster traffic: [`Cluster::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStats {
    /// Messages published to NATS (a retained one counts once, although it
    /// goes to the stream and to the routing subject).
    pub published: u64,
    /// Publishes NATS or JetStream refused or that failed, and those not
    /// tried because their subject is too long
    /// ([`topics_too_long`](Self::topics_too_long)).
    pub publish_errors: u64,
    /// Locally accepted messages not published to NATS because their
    /// topic's subject would not fit in a NATS protocol line
    /// ([`ClusterConfig::max_control_line`]): only this node's subscribers
    /// get them, and the retained stream does not keep them.
    pub topics_too_long: u64,
    /// Locally accepted messages not published to NATS because, with their
    /// headers, they are larger than the servers' `max_payload`: only this
    /// node's subscribers get them (also counted in
    /// [`publish_errors`](Self::publish_errors)). See
    /// [`Cluster::max_packet_size`] to keep clients below it.
    pub messages_too_large: u64,
    /// Filters of the local broker not subscribed to in NATS because their
    /// subject (with its queue group) would not fit in a NATS protocol line
    /// ([`ClusterConfig::max_control_line`]): their subscribers get only
    /// what this node's clients publish. Counted each time such a filter
    /// appears on this node.
    pub filters_too_long: u64,
    /// Locally accepted messages dropped because the outbound queue was full.
    pub dropped_outbound: u64,
    /// Messages received on routing subscriptions (plain and queue groups).
    pub received: u64,
    /// Messages injected into the local broker from plain subscriptions.
    pub injected: u64,
    /// Messages this node published, received back and ignored.
    pub own_ignored: u64,
    /// Copies of a message already injected (several subscriptions matched,
    /// or a retained message came from the routing subject and the stream),
    /// or delivered to a shared group by its publishing node (NATS was away).
    pub duplicates: u64,
    /// Messages whose subject or headers are not understood (missing or
    /// forged): dropped.
    pub invalid: u64,
    /// Messages delivered to a local member of a shared group.
    pub shared_delivered: u64,
    /// Messages NATS gave this node for a shared group that had no local
    /// member any more (it left in the meantime): lost for that group.
    pub shared_missed: u64,
    /// Retained messages injected from JetStream (at attach and since).
    pub retained_loaded: u64,
    /// Retained messages of this node the retained stream acknowledged.
    pub retained_stored: u64,
    /// Stores of a retained message tried again after JetStream refused or
    /// did not answer (a leader election, a server lost).
    pub retained_store_retries: u64,
    /// Retained messages of this node the retained stream never
    /// acknowledged, after every retry: other nodes and later nodes do
    /// not get them from the stream. One that a newer retained message of
    /// this node on its topic replaced is not counted.
    pub retained_store_failed: u64,
    /// NATS subscriptions this node holds for routing now.
    pub nats_subscriptions: u64,
    /// Wills of this node's clients written to the wills bucket.
    pub wills_stored: u64,
    /// Wills of this node's clients deleted from the wills bucket (the
    /// broker published or dropped them).
    pub wills_cleared: u64,
    /// Wills of gone nodes this node waits to publish (their delay runs).
    pub wills_pending: u64,
    /// Wills of gone nodes this node claimed and published.
    pub wills_published: u64,
    /// Wills of gone nodes this node did not publish because another node
    /// claimed them first (or their node wrote them again).
    pub wills_lost: u64,
    /// Connecting clients this node registered as holding their session
    /// (a compare-and-swap in the sessions bucket).
    pub sessions_claimed: u64,
    /// Sessions this node took from another node (with their messages).
    pub sessions_imported: u64,
    /// Sessions this node handed to another node.
    pub sessions_exported: u64,
    /// Sessions of a gone node restored here: from its state in JetStream
    /// when it kept one ([`Cluster::session_store`]), else from the
    /// registry's record (subscriptions only: the queued messages are lost).
    pub sessions_restored: u64,
    /// Of [`sessions_restored`](Self::sessions_restored), those restored
    /// whole from the gone node's state in JetStream (subscriptions, queued
    /// and in-flight messages, inbound QoS 2 identifiers).
    pub sessions_restored_whole: u64,
    /// CONNECTs refused with Server unavailable because the session's node
    /// is gone and what it kept in JetStream could not be read then (the
    /// client connects again later and gets its session whole).
    pub sessions_unavailable: u64,
    /// Sessions of gone nodes this node adopted before their clients came
    /// back (claimed in the registry, installed disconnected, with their
    /// messages), so that what is published meanwhile is kept for them.
    pub sessions_adopted: u64,
    /// Wills of a gone node's clients this node removed from the wills
    /// bucket before any node published them: their session resumed here
    /// within the Will Delay Interval.
    pub wills_cancelled: u64,
    /// Take-session requests that got no answer in time (or failed): a
    /// new session started instead.
    pub sessions_unanswered: u64,
    /// Malformed take-session requests and replies, dropped.
    pub sessions_invalid: u64,
    /// Failed reads and writes of the sessions bucket.
    pub session_registry_errors: u64,
    /// Records of this node's sessions written to the sessions bucket
    /// (when a client connects, and when it disconnects leaving its session).
    pub session_records_written: u64,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    publish_errors: AtomicU64,
    topics_too_long: AtomicU64,
    messages_too_large: AtomicU64,
    filters_too_long: AtomicU64,
    dropped_outbound: AtomicU64,
    received: AtomicU64,
    injected: AtomicU64,
    own_ignored: AtomicU64,
    duplicates: AtomicU64,
    invalid: AtomicU64,
    shared_delivered: AtomicU64,
    shared_missed: AtomicU64,
    retained_loaded: AtomicU64,
    retained_stored: AtomicU64,
    retained_store_retries: AtomicU64,
    retained_store_failed: AtomicU64,
    nats_subscriptions: AtomicU64,
    wills_stored: AtomicU64,
    wills_cleared: AtomicU64,
    wills_pending: AtomicU64,
    wills_published: AtomicU64,
    wills_lost: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The changes of the filters the local broker holds not handled yet: per
/// filter, how many more times it appeared than it went (the broker
/// reports each distinct filter appearing and going, so -1, 0 or 1). One
/// entry per filter however often it comes and goes meanwhile (NATS away,
/// or before `attach`).
#[derive(Default)]
struct FilterChanges {
    pending: Mutex<HashMap<SubscriptionFilter, i64>>,
    wake: tokio::sync::Notify,
}

impl FilterChanges {
    fn change(&self, filter: &SubscriptionFilter, by: i64) {
        {
            let mut pending = lock(&self.pending);
            let net = pending.entry(filter.clone()).or_default();
            *net += by;
            if *net == 0 {
                pending.remove(filter);
            }
        }
        self.wake.notify_one();
    }
}

/// The changes of the wills of the local broker's clients not written yet:
/// the last one per client (a will set, or cleared), however often it
/// changes meanwhile (NATS away, or before `attach`).
#[derive(Default)]
struct WillChanges {
    pending: Mutex<HashMap<String, WillChange>>,
    wake: tokio::sync::Notify,
}

/// The last change of a client's will.
enum WillChange {
    Set(Box<Publish>, u32),
    Cleared,
}

impl WillChanges {
    fn change(&self, client_id: &str, change: WillChange) {
        lock(&self.pending).insert(client_id.to_owned(), change);
        self.wake.notify_one();
    }

    /// What is pending, as events to handle.
    fn take(&self) -> Vec<WillEvent> {
        std::mem::take(&mut *lock(&self.pending))
            .into_iter()
            .map(|(client_id, change)| match change {
                WillChange::Set(will, delay) => WillEvent::Set {
                    client_id,
                    will,
                    delay,
                },
                WillChange::Cleared => WillEvent::Cleared(client_id),
            })
            .collect()
    }
}

/// A change of the wills of the local broker's clients.
enum WillEvent {
    Set {
        client_id: String,
        will: Box<Publish>,
        delay: u32,
    },
    Cleared(String),
}

/// The receiving ends that [`Cluster::attach`] hands to its tasks.
struct Receivers {
    outbound: mpsc::Receiver<Outbound>,
    fallback: mpsc::Receiver<(TopicName, Publish)>,
}

struct Inner {
    node_id: String,
    instance: u64,
    client: Client,
    js: jetstream::Context,
    /// Routing subjects: `{prefix}.msg...`.
    live: Subjects,
    /// Retained message subjects, in the retained stream: `{prefix}.ret...`.
    retained: Subjects,
    prefix: String,
    replicas: usize,
    heartbeat_interval: Duration,
    heartbeat_ttl: Duration,
    dedupe_window: usize,
    /// [`ClusterConfig::max_control_line`].
    max_control_line: usize,
    seq: AtomicU64,
    /// Numbers the barrier messages.
    barriers: AtomicU64,
    counters: Arc<Counters>,
    receivers: Mutex<Option<Receivers>>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The NATS subscriptions held now, for [`Cluster::subscriptions`].
    subscribed: Mutex<BTreeSet<String>>,
    heartbeat: Mutex<Option<kv::Store>>,
    /// The revision of this instance's last heartbeat once the node id is
    /// claimed ([`Cluster::claim_node_id`]): each heartbeat is written
    /// only over it (compare-and-swap), so that a namesake writing the same
    /// key is noticed.
    heartbeat_revision: Mutex<Option<u64>>,
    /// Whether [`Cluster::claim_node_id`] succeeded.
    claimed: AtomicBool,
    /// Why this node had to stop, once it had to (see [`Cluster::failed`]).
    failure: watch::Sender<Option<String>>,
    /// The wills bucket, once attached.
    wills: Mutex<Option<kv::Store>>,
    /// How many times this node made the cluster's streams and buckets
    /// again (NATS came back without its data): the tasks that keep one
    /// write back what this node holds when it changes.
    remade: watch::Sender<u64>,
    /// Whether [`Cluster::session_store`] opened the state stream here.
    state_stream_used: AtomicBool,
    /// When the heartbeat bucket's stream this node uses was created: one
    /// created later is another (NATS lost the first).
    nodes_created: Mutex<Option<i128>>,
    /// Set when a heartbeat found none of this instance to write over and
    /// wrote a new one: its bucket may have been made again by another node.
    heartbeat_rewritten: AtomicBool,
    /// How many times this node's heartbeat had expired when it wrote the
    /// next one (the node was frozen, or away from NATS, for longer than
    /// the TTL): other nodes may have taken it for dead meanwhile, adopted
    /// its sessions and published its clients' wills.
    lapsed: watch::Sender<u64>,
    /// Tests: the heartbeat is not written while set.
    heartbeat_paused: AtomicBool,
    /// Test hook: the next rebuild of the streams fails at once.
    fail_next_remake: AtomicBool,
    dedupe: Mutex<Dedupe>,
    /// Retained messages injected from the routing subject whose copy in
    /// the retained stream has not come yet, per topic.
    live_retained: Mutex<HashMap<TopicName, (MessageId, Instant)>>,
    /// Retained messages of this node not yet acknowledged by the retained
    /// stream: the sequence number of the newest per topic.
    retained_unstored: Mutex<HashMap<TopicName, u64>>,
    /// Held while a retained message is handed to NATS, so that a retry of
    /// an older message never goes out after a newer one on its topic.
    retained_send: tokio::sync::Mutex<()>,
    /// Retained messages waiting to be stored again: at most
    /// [`RETAINED_RETRY_LIMIT`].
    retained_retrying: AtomicUsize,
    /// The session registry and take-session requests.
    sessions: Arc<Sessions>,
    /// Filter changes for the control loop.
    filter_changes: Arc<FilterChanges>,
    /// Will changes for the wills loop.
    will_changes: Arc<WillChanges>,
    /// The shared filters of the local broker, for the messages NATS does
    /// not bring them (see [`deliver_local_shared`]).
    local_shared: Mutex<LocalShared>,
    /// The outbound queue is not read while set (a test hook).
    outbound_paused: AtomicBool,
    /// [`ClusterBridge::outbound_bytes`].
    outbound_bytes: Arc<AtomicUsize>,
}

/// The shared filters the local broker holds, each with how many filter
/// events added it (the broker reports each once, but removals must match).
#[derive(Default)]
struct LocalShared {
    /// Every one.
    all: HashMap<SharedFilter, usize>,
    /// Those not subscribed to in NATS (too long for a subject).
    local_only: HashMap<SharedFilter, usize>,
}

impl LocalShared {
    fn add(&mut self, filter: &SharedFilter, routed: bool) {
        *self.all.entry(filter.clone()).or_default() += 1;
        if !routed {
            *self.local_only.entry(filter.clone()).or_default() += 1;
        }
    }

    fn remove(&mut self, filter: &SharedFilter, routed: bool) {
        let release = |map: &mut HashMap<SharedFilter, usize>| {
            if let Some(count) = map.get_mut(filter) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    map.remove(filter);
                }
            }
        };
        release(&mut self.all);
        if !routed {
            release(&mut self.local_only);
        }
    }
}

/// A message's origin instance and sequence number.
type MessageId = (u64, u64);

/// How long [`Cluster::shutdown`] waits for its tasks beyond the session
/// timeout their drains are bounded by, before it stops them.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// How long a retained message injected from the routing subject makes
/// older stream messages on its topic stale (its own stream copy normally
/// comes well within it).
const LIVE_RETAINED_GRACE: Duration = Duration::from_secs(30);

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    fn is_own(&self, origin: &Origin) -> bool {
        origin.instance == self.instance && origin.node == self.node_id
    }

    /// Whether a protocol line with names (subject, queue group) of `len`
    /// bytes in all fits within the servers' `max_control_line`.
    fn fits(&self, len: usize) -> bool {
        fits_control_line(self.max_control_line, len)
    }
}

/// Whether a protocol line with names (subject, queue group) of `len`
/// bytes in all fits within `max_control_line`, with room for the rest.
pub(crate) fn fits_control_line(max_control_line: usize, len: usize) -> bool {
    len.saturating_add(CONTROL_LINE_OVERHEAD) <= max_control_line
}

/// The first characters of a long name, for a log line.
fn head(name: &str) -> String {
    name.chars().take(64).collect()
}

/// The [`Bridge`] a [`Cluster`] gives to the broker: it only queues.
struct ClusterBridge {
    filters: Arc<FilterChanges>,
    outbound: mpsc::Sender<Outbound>,
    /// Messages the outbound queue had no room for, for the local shared
    /// groups ([`fallback_loop`]).
    fallback: mpsc::Sender<(TopicName, Publish)>,
    /// The bytes in `outbound` ([`outbound_size`]), and their bound.
    outbound_bytes: Arc<AtomicUsize>,
    outbound_max_bytes: usize,
    wills: Arc<WillChanges>,
    counters: Arc<Counters>,
    sessions: Arc<Sessions>,
}

/// A message accepted locally, waiting to be published to NATS, with when
/// it was queued: the time it waits counts against its Message Expiry
/// Interval (v5:MQTT-3.3.2-5, v5:MQTT-3.3.2-6).
type Outbound = (TopicName, Publish, Instant);

/// `publish` after waiting since `queued`: its Message Expiry Interval
/// reduced by that time, or `None` once it has passed (the message is not
/// to be delivered any more).
fn aged(mut publish: Publish, queued: Instant) -> Option<Publish> {
    if let Some(expiry) = publish.properties.message_expiry_interval {
        let waited = queued.elapsed();
        if waited >= Duration::from_secs(u64::from(expiry)) {
            return None;
        }
        let waited = u32::try_from(waited.as_secs()).unwrap_or(u32::MAX);
        publish.properties.message_expiry_interval = Some(expiry.saturating_sub(waited).max(1));
    }
    Some(publish)
}

/// What a message counts against [`ClusterConfig::outbound_max_bytes`].
fn outbound_size(topic: &TopicName, publish: &Publish) -> usize {
    topic.as_str().len() + publish.payload.len()
}

impl Bridge for ClusterBridge {
    fn filter_added(&self, filter: &SubscriptionFilter) {
        self.filters.change(filter, 1);
    }

    fn filter_removed(&self, filter: &SubscriptionFilter) {
        self.filters.change(filter, -1);
    }

    fn message(&self, topic: &TopicName, publish: &Publish) {
        let size = outbound_size(topic, publish);
        let queued = self.outbound_bytes.fetch_add(size, Ordering::Relaxed);
        let fits = queued == 0 || queued.saturating_add(size) <= self.outbound_max_bytes;
        let sent = if fits {
            self.outbound
                .try_send((topic.clone(), publish.clone(), Instant::now()))
        } else {
            Err(mpsc::error::TrySendError::Full((
                topic.clone(),
                publish.clone(),
                Instant::now(),
            )))
        };
        if let Err(error) = sent {
            self.outbound_bytes.fetch_sub(size, Ordering::Relaxed);
            bump(&self.counters.dropped_outbound);
            // Not for other nodes, but this node's shared groups, which
            // local routing left to the cluster, still get it (the
            // broker's lock is held here: delivered by another task).
            let (topic, publish, _) = error.into_inner();
            let _ = self.fallback.try_send((topic, publish));
        }
    }

    fn will_set(&self, client_id: &str, will: &Publish, delay: u32) {
        self.wills
            .change(client_id, WillChange::Set(Box::new(will.clone()), delay));
    }

    fn will_cleared(&self, client_id: &str) {
        self.wills.change(client_id, WillChange::Cleared);
    }

    fn claim_session(&self, client_id: &str, clean_start: bool) -> SessionClaim {
        Box::pin(
            self.sessions
                .clone()
                .claim(client_id.to_owned(), clean_start),
        )
    }

    fn session_online(&self, client_id: &str, session: &StoredSession) {
        self.sessions.client_back(client_id);
        // One per connection, SUBSCRIBE and UNSUBSCRIBE and one when it
        // ends, written in order by one task; a record still waiting is
        // replaced by the next (see `registry_queue`).
        let record = sessions::encode_record(session);
        self.sessions
            .report(SessionEvent::Online(client_id.to_owned(), record));
    }

    fn session_offline(&self, client_id: &str, session: &StoredSession) {
        let record = sessions::encode_record(session);
        self.sessions
            .report(SessionEvent::Offline(client_id.to_owned(), record));
    }

    fn session_gone(&self, client_id: &str) {
        self.sessions.session_gone(client_id);
        self.sessions
            .report(SessionEvent::Gone(client_id.to_owned()));
    }

    fn routes_shared(&self) -> bool {
        true
    }

    /// The wills of this node's clients are in the wills bucket, published
    /// by another node when this one dies, or by this node's next instance:
    /// the broker's store must not keep them as well.
    fn keeps_wills(&self) -> bool {
        true
    }
}

/// Remembers the last ids injected, to inject a message once when several
/// NATS subscriptions of this node match it.
struct Dedupe {
    seen: HashSet<(u64, u64)>,
    order: VecDeque<(u64, u64)>,
    capacity: usize,
}

impl Dedupe {
    fn new(capacity: usize) -> Self {
        Self {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// Whether `id` is remembered.
    fn contains(&self, id: (u64, u64)) -> bool {
        self.seen.contains(&id)
    }

    /// Whether `id` is new (and remembers it).
    fn insert(&mut self, id: (u64, u64)) -> bool {
        if self.capacity == 0 {
            return true;
        }
        if !self.seen.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }
}

/// One node of a cluster of fulmar brokers over NATS.
///
/// 1. [`Cluster::connect`] connects to NATS;
/// 2. [`Cluster::bridge`] goes to
///    [`BrokerBuilder::bridge`](fulmar_broker::BrokerBuilder::bridge)
///    before the broker starts;
/// 3. [`Cluster::attach`] with the started broker loads the retained
///    messages and starts routing;
/// 4. [`Cluster::shutdown`] leaves the cluster (after the broker's shutdown).
///
/// Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
    bridge: Arc<ClusterBridge>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.inner.node_id)
            .field("instance", &format_args!("{:016x}", self.inner.instance))
            .finish_non_exhaustive()
    }
}

/// A random number per run, without a random number crate.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// A key-value key for a node id: letters, digits, `-` and `_` as they
/// are, every other byte `=XY`.
pub(crate) fn node_key(node_id: &str) -> String {
    let mut out = String::with_capacity(node_id.len());
    for b in node_id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// The prefix of a hashed [`client_kv_key`]: never the start of a
/// [`node_key`] (there `=` is followed by two hex digits).
const HASHED_KEY: &str = "==";

/// The key-value key of a client id (in the session registry and the wills
/// bucket): its [`node_key`], or, when that is longer than
/// [`MAX_KEY`](crate::state::MAX_KEY), `==` and a hash of the id, so that
/// the key fits in a NATS subject.
pub(crate) fn client_kv_key(client_id: &str) -> String {
    let key = node_key(client_id);
    if key.len() <= crate::state::MAX_KEY {
        return key;
    }
    format!("{HASHED_KEY}{}", crate::state::id_hash(client_id))
}

/// The client id of a [`client_kv_key`]; a hashed key as it is.
fn client_from_kv_key(key: &str) -> Option<String> {
    if key.starts_with(HASHED_KEY) {
        return Some(key.to_owned());
    }
    node_from_key(key)
}

pub(crate) fn node_from_key(key: &str) -> Option<String> {
    let mut out = Vec::with_capacity(key.len());
    let mut bytes = key.bytes();
    while let Some(b) = bytes.next() {
        if b == b'=' {
            let hex = [bytes.next()?, bytes.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

impl Cluster {
    /// Connects to NATS as node `config.node_id`. Nothing is routed until
    /// [`attach`](Self::attach).
    ///
    /// # Errors
    /// [`ClusterError::Config`] for an empty node id or URL list, a node id
    /// longer than 200 bytes once escaped (see [`ClusterConfig::node_id`]),
    /// or an invalid prefix; [`ClusterError::Connect`]; [`ClusterError::Credentials`].
    pub async fn connect(config: ClusterConfig) -> Result<Self, ClusterError> {
        if config.node_id.is_empty() {
            return Err(ClusterError::Config("empty node id".into()));
        }
        if node_key(&config.node_id).len() > crate::state::MAX_KEY {
            return Err(ClusterError::Config(format!(
                "node id longer than {} bytes once escaped",
                crate::state::MAX_KEY
            )));
        }
        if config.urls.is_empty() {
            return Err(ClusterError::Config("no NATS URL".into()));
        }
        let prefix = config.subject_prefix.clone();
        if prefix.is_empty()
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ClusterError::Config(format!(
                "subject prefix {prefix:?}: ASCII letters, digits, `-` and `_`"
            )));
        }
        let live = Subjects::new(&format!("{prefix}.msg"))
            .map_err(|e| ClusterError::Config(e.to_string()))?;
        let retained = Subjects::new(&format!("{prefix}.ret"))
            .map_err(|e| ClusterError::Config(e.to_string()))?;
        let mut options =
            async_nats::ConnectOptions::new().name(format!("fulmar {}", config.node_id));
        match config.credentials.clone() {
            None => {}
            Some(Credentials::UserPassword { user, password }) => {
                options = options.user_and_password(user, password);
            }
            Some(Credentials::Token(token)) => options = options.token(token),
            Some(Credentials::NKey(seed)) => options = options.nkey(seed),
            Some(Credentials::CredsFile(path)) => {
                options = options
                    .credentials_file(path)
                    .await
                    .map_err(ClusterError::Credentials)?;
            }
        }
        if let Some(tls) = &config.tls {
            options = options.require_tls(tls.required);
            for ca in &tls.ca_files {
                options = options.add_root_certificates(ca.clone());
            }
            if let Some((cert, key)) = &tls.client_cert {
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
        }
        let client = options
            .connect(config.urls.clone())
            .await
            .map_err(ClusterError::Connect)?;
        let js = jetstream::new(client.clone());
        let counters = Arc::new(Counters::default());
        let filter_changes = Arc::new(FilterChanges::default());
        let (outbound_tx, outbound) = mpsc::channel(config.outbound_capacity.max(1));
        let outbound_bytes = Arc::new(AtomicUsize::new(0));
        let (fallback_tx, fallback) = mpsc::channel(FALLBACK_CAPACITY);
        let will_changes = Arc::new(WillChanges::default());
        let sessions = Arc::new(Sessions::new(
            config.node_id.clone(),
            prefix.clone(),
            client.clone(),
            js.clone(),
            config.session_timeout,
        ));
        let instance = random_u64();
        tracing::info!(node = %config.node_id, instance = %format_args!("{instance:016x}"), "connected to NATS");
        let inner = Arc::new(Inner {
            node_id: config.node_id.clone(),
            instance,
            client,
            js,
            live,
            retained,
            prefix,
            replicas: config.replicas.max(1),
            heartbeat_interval: config.heartbeat_interval,
            heartbeat_ttl: config.heartbeat_ttl,
            dedupe_window: config.dedupe_window,
            max_control_line: config.max_control_line,
            seq: AtomicU64::new(0),
            barriers: AtomicU64::new(0),
            counters: counters.clone(),
            receivers: Mutex::new(Some(Receivers { outbound, fallback })),
            stop: watch::channel(false).0,
            tasks: Mutex::new(Vec::new()),
            subscribed: Mutex::new(BTreeSet::new()),
            heartbeat: Mutex::new(None),
            heartbeat_revision: Mutex::new(None),
            claimed: AtomicBool::new(false),
            failure: watch::channel(None).0,
            wills: Mutex::new(None),
            remade: watch::channel(0).0,
            state_stream_used: AtomicBool::new(false),
            nodes_created: Mutex::new(None),
            heartbeat_rewritten: AtomicBool::new(false),
            lapsed: watch::channel(0).0,
            heartbeat_paused: AtomicBool::new(false),
            fail_next_remake: AtomicBool::new(false),
            dedupe: Mutex::new(Dedupe::new(config.dedupe_window)),
            live_retained: Mutex::new(HashMap::new()),
            retained_unstored: Mutex::new(HashMap::new()),
            retained_send: tokio::sync::Mutex::new(()),
            retained_retrying: AtomicUsize::new(0),
            sessions: sessions.clone(),
            local_shared: Mutex::new(LocalShared::default()),
            outbound_paused: AtomicBool::new(false),
            outbound_bytes: outbound_bytes.clone(),
            filter_changes: filter_changes.clone(),
            will_changes: will_changes.clone(),
        });
        Ok(Self {
            inner,
            bridge: Arc::new(ClusterBridge {
                filters: filter_changes,
                outbound: outbound_tx,
                fallback: fallback_tx,
                outbound_bytes,
                outbound_max_bytes: config.outbound_max_bytes,
                wills: will_changes,
                counters,
                sessions,
            }),
        })
    }

    /// The [`Bridge`] to give to
    /// [`BrokerBuilder::bridge`](fulmar_broker::BrokerBuilder::bridge).
    /// It queues filter changes and messages until [`attach`](Self::attach)
    /// starts the tasks that handle them.
    #[must_use]
    pub fn bridge(&self) -> Arc<dyn Bridge> {
        self.bridge.clone()
    }

    /// This node's id.
    #[must_use]
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// A [`Store`](fulmar_broker::Store) for this node's broker that keeps
    /// its persistent sessions in JetStream (the stream `{prefix}_state`,
    /// created when missing), loaded with what this node id kept before.
    /// Give it to [`BrokerBuilder::store`](fulmar_broker::BrokerBuilder::store)
    /// before the broker starts. With it, a client whose node died resumes
    /// its session on any other node with its queued and in-flight QoS 1/2
    /// messages and its inbound QoS 2 identifiers, instead of its
    /// subscriptions only. See [`SessionStore`](crate::SessionStore).
    ///
    /// # Errors
    /// [`ClusterError::JetStream`] when the stream cannot be had or read.
    pub async fn session_store(&self) -> Result<Arc<crate::SessionStore>, ClusterError> {
        let inner = &self.inner;
        let stream = crate::state::state_stream(&inner.js, &inner.prefix, inner.replicas).await?;
        inner.state_stream_used.store(true, Ordering::Relaxed);
        let max_payload = inner.client.server_info().max_payload;
        let store = crate::SessionStore::open(
            &inner.client,
            inner.js.clone(),
            stream,
            &inner.prefix,
            &inner.node_id,
            max_payload,
            inner.sessions.timeout,
        )
        .await?;
        Ok(Arc::new(store))
    }

    /// The NATS client (for monitoring or tests).
    #[must_use]
    pub fn nats(&self) -> &Client {
        &self.inner.client
    }

    /// Starts routing for `broker`, which must have been built with
    /// [`bridge`](Self::bridge): creates the retained stream, the node
    /// bucket and the wills bucket when missing, injects every retained message of the cluster
    /// (before any client of this node should subscribe), then spawns the
    /// tasks that publish local messages to NATS, hold the NATS
    /// subscriptions, watch the retained stream, write the heartbeat, keep
    /// the wills of this node's clients and publish those of gone nodes.
    ///
    /// # Errors
    /// [`ClusterError::AlreadyAttached`]; [`ClusterError::JetStream`] when
    /// the stream, the bucket or the consumer cannot be had;
    /// [`ClusterError::Broker`] when the broker is shut down.
    pub async fn attach(&self, broker: &BrokerHandle) -> Result<(), ClusterError> {
        // The heartbeat bucket; the node id claimed (and its heartbeat kept
        // alive) first, if the caller did not already.
        let store = self.claim_node_id().await?;
        let Receivers { outbound, fallback } = lock(&self.inner.receivers)
            .take()
            .ok_or(ClusterError::AlreadyAttached)?;
        let inner = &self.inner;
        // Routing first: subscriptions and publishes do not wait for JetStream.
        let barrier_subject = inner.client.new_inbox();
        let barrier = inner
            .client
            .subscribe(barrier_subject.clone())
            .await
            .map_err(|e| ClusterError::jetstream("barrier subscription", e))?;
        self.spawn(control_loop(
            inner.clone(),
            broker.clone(),
            (barrier_subject, barrier),
            inner.stop.subscribe(),
        ));
        self.spawn(outbound_loop(
            inner.clone(),
            outbound,
            inner.stop.subscribe(),
        ));
        self.spawn(fallback_loop(
            inner.clone(),
            fallback,
            inner.stop.subscribe(),
        ));
        // Sessions: the registry, and the requests of other nodes.
        // Entries are removed by revision, leaving no marker.
        let sessions_store = unmarked_bucket(inner, "sessions").await?;
        let requests = inner
            .client
            .subscribe(sessions::take_subject(&inner.prefix, &inner.node_id))
            .await
            .map_err(|e| ClusterError::jetstream("take-session subscription", e))?;
        let _ = inner.sessions.store.set(sessions_store.clone());
        let _ = inner.sessions.broker.set(broker.clone());
        self.spawn(sessions::registry_loop(
            inner.sessions.clone(),
            sessions_store,
            inner.stop.subscribe(),
            inner.remade.subscribe(),
            inner.lapsed.subscribe(),
        ));
        self.spawn(sessions::take_loop(
            inner.sessions.clone(),
            broker.clone(),
            requests,
            inner.stop.subscribe(),
        ));
        // Retained messages.
        let (mut messages, mut pending) = retained_consumer(inner).await?;
        while pending > 0 {
            let message = match tokio::time::timeout(Duration::from_secs(30), messages.next()).await
            {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(e))) => return Err(ClusterError::jetstream("retained load", e)),
                Ok(None) => return Err(ClusterError::jetstream("retained load", "stream ended")),
                Err(_) => return Err(ClusterError::jetstream("retained load", "timed out")),
            };
            pending = message.info().map_or(0, |info| info.pending);
            on_retained(inner, broker, &message, true)?;
        }
        self.spawn(retained_loop(
            inner.clone(),
            broker.clone(),
            messages,
            inner.stop.subscribe(),
        ));
        // Wills: written only once the heartbeat is, so that a will in the
        // bucket always has its node's heartbeat written before it.
        // Cleared wills are removed by sequence, leaving no marker.
        let wills_store = unmarked_bucket(inner, "wills").await?;
        *lock(&inner.wills) = Some(wills_store.clone());
        let _ = inner.sessions.wills.set(wills_store.clone());
        // Before this instance writes any: the wills under this node id are
        // a previous instance's, which died without handling them.
        let previous = previous_wills(inner, &wills_store).await;
        *lock(&inner.sessions.previous_wills) = previous
            .iter()
            .map(|(key, will)| (key.clone(), will.revision))
            .collect();
        self.spawn(wills_loop(
            inner.clone(),
            wills_store.clone(),
            inner.stop.subscribe(),
        ));
        self.spawn(sweep_loop(
            inner.clone(),
            broker.clone(),
            store,
            wills_store,
            previous,
            inner.stop.subscribe(),
        ));
        tracing::info!(node = %inner.node_id, "attached to the cluster");
        Ok(())
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        lock(&self.inner.tasks).push(tokio::spawn(task));
    }

    /// The largest MQTT packet the cluster carries between nodes: the NATS
    /// server's `max_payload` (announced when connecting, 1 MiB by default),
    /// less room for the message's headers. Give it to the broker
    /// ([`Limits::max_packet_size`](fulmar_broker::Limits)) so that a client
    /// learns it (CONNACK Maximum Packet Size) and a larger PUBLISH is
    /// refused (0x95) rather than reaching this node's subscribers only. A
    /// message whose properties take more room than that still is not sent
    /// to NATS ([`ClusterStats::messages_too_large`]).
    #[must_use]
    pub fn max_packet_size(&self) -> u32 {
        let max_payload = self.inner.client.server_info().max_payload;
        // A small max_payload (tests): half of it for headers.
        let room = HEADER_ROOM.min(max_payload / 2);
        u32::try_from(max_payload.saturating_sub(room)).unwrap_or(u32::MAX)
    }

    /// The counters of this node's cluster traffic.
    #[must_use]
    pub fn stats(&self) -> ClusterStats {
        let c = &self.inner.counters;
        let s = &self.inner.sessions.counters;
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        ClusterStats {
            published: load(&c.published),
            publish_errors: load(&c.publish_errors),
            topics_too_long: load(&c.topics_too_long),
            messages_too_large: load(&c.messages_too_large),
            filters_too_long: load(&c.filters_too_long),
            dropped_outbound: load(&c.dropped_outbound),
            received: load(&c.received),
            injected: load(&c.injected),
            own_ignored: load(&c.own_ignored),
            duplicates: load(&c.duplicates),
            invalid: load(&c.invalid),
            shared_delivered: load(&c.shared_delivered),
            shared_missed: load(&c.shared_missed),
            retained_loaded: load(&c.retained_loaded),
            retained_stored: load(&c.retained_stored),
            retained_store_retries: load(&c.retained_store_retries),
            retained_store_failed: load(&c.retained_store_failed),
            nats_subscriptions: load(&c.nats_subscriptions),
            wills_stored: load(&c.wills_stored),
            wills_cleared: load(&c.wills_cleared),
            wills_pending: load(&c.wills_pending),
            wills_published: load(&c.wills_published),
            wills_lost: load(&c.wills_lost),
            sessions_claimed: load(&s.claimed),
            sessions_imported: load(&s.imported),
            sessions_exported: load(&s.exported),
            sessions_restored: load(&s.restored),
            sessions_restored_whole: load(&s.restored_whole),
            sessions_unavailable: load(&s.unavailable),
            sessions_adopted: load(&s.adopted),
            wills_cancelled: load(&s.wills_cancelled),
            sessions_unanswered: load(&s.unanswered),
            sessions_invalid: load(&s.invalid),
            session_registry_errors: load(&s.registry_errors),
            session_records_written: load(&s.registry_writes),
        }
    }

    /// The NATS subscriptions this node holds for routing now, sorted:
    /// `subject` for a plain one, `subject queue` for a queue group. A
    /// subscription is listed once the server has it (so a message
    /// published by another node from then on reaches this node).
    #[must_use]
    pub fn subscriptions(&self) -> Vec<String> {
        lock(&self.inner.subscribed).iter().cloned().collect()
    }

    /// The ids of the nodes whose heartbeat is alive, sorted.
    ///
    /// # Errors
    /// [`ClusterError::JetStream`] when the bucket cannot be read (or
    /// before [`attach`](Self::attach)).
    pub async fn nodes(&self) -> Result<Vec<String>, ClusterError> {
        let store = lock(&self.inner.heartbeat)
            .clone()
            .ok_or_else(|| ClusterError::jetstream("nodes", "not attached"))?;
        let keys = tokio::time::timeout(Duration::from_secs(10), live_node_keys(&store))
            .await
            .map_err(|_| ClusterError::jetstream("nodes", "timed out"))??;
        let mut nodes: Vec<String> = keys.iter().filter_map(|k| node_from_key(k)).collect();
        nodes.sort();
        Ok(nodes)
    }

    /// The wills held in the wills bucket, as (node id, client id), sorted:
    /// the wills of the connected clients of every node, and those of gone
    /// nodes not published yet. A client id whose escaped form is longer
    /// than 200 bytes is keyed, and listed, as `==` and a hash of it.
    ///
    /// # Errors
    /// [`ClusterError::JetStream`] when the bucket cannot be read (or
    /// before [`attach`](Self::attach)).
    pub async fn wills(&self) -> Result<Vec<(String, String)>, ClusterError> {
        let store = lock(&self.inner.wills)
            .clone()
            .ok_or_else(|| ClusterError::jetstream("wills", "not attached"))?;
        let list = async {
            let mut wills = Vec::new();
            for key in bucket_keys(&store, ">").await? {
                let entry = store
                    .entry(key.as_str())
                    .await
                    .map_err(|e| ClusterError::jetstream("wills", e))?;
                if entry.is_some_and(|e| e.operation == kv::Operation::Put)
                    && let Some((node, client)) = key.split_once('.')
                    && let (Some(node), Some(client)) =
                        (node_from_key(node), client_from_kv_key(client))
                {
                    wills.push((node, client));
                }
            }
            Ok::<_, ClusterError>(wills)
        };
        let mut wills = tokio::time::timeout(Duration::from_secs(10), list)
            .await
            .map_err(|_| ClusterError::jetstream("wills", "timed out"))??;
        wills.sort();
        Ok(wills)
    }

    /// The node that holds the session of `client_id` according to the
    /// session registry (`{prefix}_sessions`), or `None`.
    ///
    /// # Errors
    /// [`ClusterError::JetStream`] when the bucket cannot be read (or
    /// before [`attach`](Self::attach)).
    pub async fn session_owner(&self, client_id: &str) -> Result<Option<String>, ClusterError> {
        Ok(self
            .registry_value(client_id)
            .await?
            .and_then(|value| sessions::decode_value(&value).map(|(node, _)| node)))
    }

    /// The last record of `client_id`'s session in the session registry
    /// (its subscriptions and expiry, as its node last wrote them), or
    /// `None` when there is no entry or no record in it.
    ///
    /// # Errors
    /// [`ClusterError::JetStream`] when the bucket cannot be read (or
    /// before [`attach`](Self::attach)).
    pub async fn session_record(
        &self,
        client_id: &str,
    ) -> Result<Option<StoredSession>, ClusterError> {
        Ok(self
            .registry_value(client_id)
            .await?
            .and_then(|value| {
                let (_, record) = sessions::decode_value(&value)?;
                fulmar_broker::SessionExport::decode(record).ok()
            })
            .map(|export| export.session))
    }

    /// The value of `client_id`'s entry in the session registry, if any.
    async fn registry_value(&self, client_id: &str) -> Result<Option<Bytes>, ClusterError> {
        let store = self
            .inner
            .sessions
            .store
            .get()
            .ok_or_else(|| ClusterError::jetstream("sessions", "not attached"))?;
        let entry = tokio::time::timeout(
            Duration::from_secs(10),
            store.entry(client_kv_key(client_id)),
        )
        .await
        .map_err(|_| ClusterError::jetstream("sessions", "timed out"))?
        .map_err(|e| ClusterError::jetstream("sessions", e))?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| e.value))
    }

    /// Leaves the cluster: publishes what is still queued, stops the tasks
    /// (dropping the NATS subscriptions), deletes this node's wills (the
    /// broker's shutdown published those it had to, see
    /// [`BrokerHandle::shutdown`](fulmar_broker::BrokerHandle::shutdown)), then the heartbeat key, and
    /// flushes. Call it after the broker's shutdown.
    ///
    /// Bounded when NATS is away: what is still queued (messages, will
    /// and registry changes) is given up after
    /// [`ClusterConfig::session_timeout`] (the messages counted in
    /// [`ClusterStats::dropped_outbound`]), a task still busy then is
    /// stopped, and each later step waits a bounded time too.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        let _ = inner.stop.send(true);
        let tasks = std::mem::take(&mut *lock(&inner.tasks));
        // The tasks drain within the session timeout; one stuck (a NATS
        // call waiting for a reconnection) is stopped after it.
        let deadline = tokio::time::Instant::now() + inner.sessions.timeout + STOP_GRACE;
        let mut stopped = 0;
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                stopped += 1;
            }
        }
        if stopped > 0 {
            tracing::warn!(
                tasks = stopped,
                "cluster tasks stopped before they were done (NATS away?)"
            );
        }
        // The wills first: a node whose heartbeat is gone while its wills
        // are there is taken for dead.
        let wills = lock(&inner.wills).take();
        if let Some(wills) = wills {
            erase_node_wills(inner, &wills).await;
        }
        let store = lock(&inner.heartbeat).take();
        if let Some(store) = store {
            let key = node_key(&inner.node_id);
            match tokio::time::timeout(inner.sessions.timeout, store.delete(key)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot delete the heartbeat key"),
                Err(_) => tracing::warn!("heartbeat key not deleted in time"),
            }
        }
        // Bounded: with NATS gone a flush waits for a reconnection.
        let _ = tokio::time::timeout(inner.sessions.timeout, inner.client.flush()).await;
        lock(&inner.subscribed).clear();
        inner
            .counters
            .nats_subscriptions
            .store(0, Ordering::Relaxed);
        tracing::info!(node = %inner.node_id, "left the cluster");
    }

    /// Leaves the cluster as a crash would: stops every task at once,
    /// publishing nothing more, and leaves the heartbeat key to expire and
    /// this node's wills in the bucket, so that another node publishes
    /// them once the heartbeat expired. What the broker reports afterwards
    /// is ignored. For tests of failover (a real crash needs no call).
    pub fn abort(&self) {
        let inner = &self.inner;
        let _ = lock(&inner.heartbeat).take();
        let _ = lock(&inner.wills).take();
        for task in std::mem::take(&mut *lock(&inner.tasks)) {
            task.abort();
        }
        lock(&inner.subscribed).clear();
        tracing::info!(node = %inner.node_id, "aborted");
    }

    /// Keeps the registry naming this node after a CONNECT it refused
    /// because a gone node's state could not be read, as when the registry
    /// cannot be written then either: for tests of that case.
    #[doc(hidden)]
    pub fn fail_session_give_back_for_test(&self) {
        self.inner.sessions.keep_refused_claims_for_test();
    }

    /// For tests of what this node keeps in memory: the filter changes and
    /// the will changes queued for NATS, and the clients of adopted
    /// sessions whose gone node's will may still be cancelled.
    #[doc(hidden)]
    pub fn queued_for_test(&self) -> (usize, usize, usize) {
        let inner = &self.inner;
        (
            lock(&inner.filter_changes.pending).len(),
            lock(&inner.will_changes.pending).len(),
            inner.sessions.adopted_len(),
        )
    }

    /// Stops (`true`) or resumes reading the outbound queue, as when NATS
    /// takes messages slower than they come: for tests of a full queue.
    #[doc(hidden)]
    pub fn pause_outbound_for_test(&self, paused: bool) {
        self.inner.outbound_paused.store(paused, Ordering::SeqCst);
    }

    /// Stops the heartbeat without deleting the key, as a node that died
    /// would: for tests of liveness.
    #[doc(hidden)]
    pub fn stop_heartbeat_for_test(&self) {
        let _ = lock(&self.inner.heartbeat).take();
    }

    /// The next rebuild of the streams (NATS came back without its data)
    /// fails at once, as one NATS did not answer in time would: for tests
    /// of the retry.
    #[doc(hidden)]
    pub fn fail_next_remake_for_test(&self) {
        self.inner.fail_next_remake.store(true, Ordering::Relaxed);
    }

    /// Neither writes the heartbeat nor answers take-session requests while
    /// `frozen`, as a node whose process is stopped would (its connections
    /// stay open): for tests of what it does when it resumes.
    #[doc(hidden)]
    pub fn freeze_for_test(&self, frozen: bool) {
        self.inner.heartbeat_paused.store(frozen, Ordering::Relaxed);
        self.inner.sessions.frozen.store(frozen, Ordering::Relaxed);
    }
}

/// The retained stream, created when missing.
async fn retained_stream(inner: &Inner) -> Result<stream::Stream, ClusterError> {
    crate::state::get_or_create_stream(
        &inner.js,
        stream::Config {
            name: format!("{}_retained", inner.prefix),
            subjects: vec![format!("{}.>", inner.retained.root())],
            max_messages_per_subject: 1,
            num_replicas: inner.replicas,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        },
    )
    .await
}

/// A consumer of the last message of each topic in the retained stream
/// (created when missing), with how many it has to deliver now.
async fn retained_consumer(inner: &Inner) -> Result<(consumer::push::Ordered, u64), ClusterError> {
    let consumer = retained_stream(inner)
        .await?
        .create_consumer(consumer::push::OrderedConfig {
            deliver_subject: inner.client.new_inbox(),
            filter_subject: format!("{}.>", inner.retained.root()),
            deliver_policy: consumer::DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .map_err(|e| ClusterError::jetstream("retained consumer", e))?;
    let pending = consumer.cached_info().num_pending;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| ClusterError::jetstream("retained consumer", e))?;
    Ok((messages, pending))
}

/// The heartbeat bucket, created when missing: keys live a TTL and are
/// deleted with a marker.
async fn nodes_bucket(inner: &Inner) -> Result<kv::Store, ClusterError> {
    let store = bucket(inner, "nodes", |config| stream::Config {
        max_age: inner.heartbeat_ttl,
        duplicate_window: inner.heartbeat_ttl.min(Duration::from_secs(120)),
        deny_delete: true,
        ..config
    })
    .await?;
    *lock(&inner.nodes_created) = Some(store.stream.cached_info().created.unix_timestamp_nanos());
    Ok(store)
}

/// Whether the heartbeat bucket's stream is not the one this node made or
/// found (NATS lost it, and another node made it again).
async fn nodes_stream_renewed(inner: &Inner, heartbeats: &kv::Store) -> bool {
    let known = *lock(&inner.nodes_created);
    match inner.js.get_stream(&heartbeats.stream_name).await {
        Ok(stream) => {
            known.is_some_and(|known| stream.cached_info().created.unix_timestamp_nanos() != known)
        }
        Err(_) => false,
    }
}

/// Whether JetStream answers that stream `name` does not exist (and not
/// merely that it cannot answer now).
async fn stream_missing(js: &jetstream::Context, name: &str) -> bool {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::context::GetStreamErrorKind;
    match js.get_stream(name).await {
        Err(error) => matches!(
            error.kind(),
            GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND
        ),
        Ok(_) => false,
    }
}

/// NATS came back without the cluster's streams (a new disk, memory
/// storage): makes every stream and bucket this node uses again, and tells
/// the tasks that keep them to write back what this node holds: its
/// heartbeat (here), the wills of its clients, its entries in the session
/// registry, the retained messages it holds (each node holds all of them;
/// the first copy of each topic is kept, and a newer message published
/// meanwhile is never replaced). Not written back: the persistent sessions
/// that the state stream kept (written again as each changes).
async fn remake_streams(
    inner: &Arc<Inner>,
    heartbeats: &kv::Store,
    key: &str,
) -> Result<(), ClusterError> {
    tracing::warn!(node = %inner.node_id, "the cluster's streams are gone from NATS (it came back without its data): making them again");
    nodes_bucket(inner).await?;
    *lock(&inner.heartbeat_revision) = None;
    write_heartbeat(inner, heartbeats, key).await?;
    if inner.fail_next_remake.swap(false, Ordering::Relaxed) {
        return Err(ClusterError::JetStream("failed for the test".into()));
    }
    if lock(&inner.wills).is_some() {
        unmarked_bucket(inner, "wills").await?;
        unmarked_bucket(inner, "sessions").await?;
        retained_stream(inner).await?;
        if let Some(broker) = inner.sessions.broker.get() {
            // Not in the way of the next heartbeat.
            tokio::spawn(restore_retained(inner.clone(), broker.clone()));
        }
    }
    if inner.state_stream_used.load(Ordering::Relaxed) {
        crate::state::state_stream(&inner.js, &inner.prefix, inner.replicas).await?;
    }
    inner.remade.send_modify(|n| *n += 1);
    Ok(())
}

/// Writes the retained messages of `broker` into a retained stream made
/// again, each only where its topic has none yet (so that a message
/// published since, or another node's copy, is kept), marked
/// [`headers::RESTORED`]: the nodes running now hold them already.
async fn restore_retained(inner: Arc<Inner>, broker: BrokerHandle) {
    let (mut written, mut kept) = (0usize, 0usize);
    for publish in broker.retained_messages() {
        if *inner.stop.borrow() {
            return;
        }
        let topic = publish.topic.clone();
        let Ok(topic) = TopicName::try_from(topic.as_str()) else {
            continue;
        };
        let subject = inner.retained.topic(&topic);
        if !inner.fits(subject.len()) {
            continue;
        }
        let origin = Origin {
            node: inner.node_id.clone(),
            instance: inner.instance,
            seq: inner.seq.fetch_add(1, Ordering::Relaxed),
        };
        let mut headers = headers::encode(&publish, &origin);
        headers.insert(headers::RESTORED, "1");
        headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
        let stored = async {
            inner
                .js
                .publish_with_headers(subject, headers, publish.payload.clone())
                .await?
                .await
        };
        match tokio::time::timeout(inner.sessions.timeout, stored).await {
            Ok(Ok(_)) => written += 1,
            // Another copy is there already.
            Ok(Err(_)) => kept += 1,
            Err(_) => {
                tracing::warn!(
                    written,
                    "JetStream did not answer: retained messages not all written back"
                );
                return;
            }
        }
    }
    tracing::info!(
        written,
        kept,
        "retained messages written back into the retained stream"
    );
}

/// The key-value bucket `{prefix}_{name}`, created when missing, whose
/// entries may be removed by revision without leaving a delete marker
/// (deletes allowed on its stream).
async fn unmarked_bucket(inner: &Inner, name: &str) -> Result<kv::Store, ClusterError> {
    bucket(inner, name, |config| config).await
}

/// The key-value bucket `{prefix}_{name}`, created when missing with its
/// stream as `create_key_value` would make it (which first reads the
/// account info in a form NATS 2.9 does not answer), then changed by
/// `tune`.
async fn bucket(
    inner: &Inner,
    name: &str,
    tune: impl FnOnce(stream::Config) -> stream::Config,
) -> Result<kv::Store, ClusterError> {
    let bucket = format!("{}_{name}", inner.prefix);
    crate::state::get_or_create_stream(
        &inner.js,
        tune(stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: false,
            allow_direct: true,
            num_replicas: inner.replicas,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        }),
    )
    .await?;
    inner
        .js
        .get_key_value(&bucket)
        .await
        .map_err(|e| ClusterError::jetstream(&bucket, e))
}

/// The keys of a bucket under `filter` (`>` for all), from the subjects in
/// its stream (a key deleted with a marker is listed too).
async fn bucket_keys(store: &kv::Store, filter: &str) -> Result<Vec<String>, ClusterError> {
    let prefix = format!("$KV.{}.", store.name);
    let mut subjects = store
        .stream
        .info_with_subjects(format!("{prefix}{filter}"))
        .await
        .map_err(|e| ClusterError::jetstream(&store.name, e))?;
    let mut keys = Vec::new();
    while let Some(item) = subjects.next().await {
        let (subject, _) = item.map_err(|e| ClusterError::jetstream(&store.name, e))?;
        if let Some(key) = subject.strip_prefix(&prefix) {
            keys.push(key.to_owned());
        }
    }
    Ok(keys)
}

/// The heartbeat keys alive now: listed, then read (a key deleted or
/// expired reads as nothing).
async fn live_node_keys(store: &kv::Store) -> Result<HashSet<String>, ClusterError> {
    let mut live = HashSet::new();
    for key in bucket_keys(store, ">").await? {
        let value = store
            .get(key.as_str())
            .await
            .map_err(|e| ClusterError::jetstream("nodes", e))?;
        if value.is_some() {
            live.insert(key);
        }
    }
    Ok(live)
}

impl Cluster {
    /// Ready, with the reason, once this node had to stop serving: another
    /// instance writes its heartbeat (two live nodes with one node id). The
    /// broker given to [`attach`](Self::attach) is shut down then; a
    /// process that embeds them should exit (`fulmar broker` does, with an
    /// error). Pending for as long as the node runs.
    pub async fn failed(&self) -> String {
        let mut failure = self.inner.failure.subscribe();
        loop {
            if let Some(reason) = failure.borrow_and_update().clone() {
                return reason;
            }
            if failure.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Claims this node's id before the broker serves anything: a broker
    /// that loaded the sessions of a live node with the same id, or accepted
    /// clients, before [`attach`](Self::attach) refused it would have served
    /// them twice (a duplicate node id broke QoS 2's exactly once that way).
    /// Waits out a heartbeat of this id (see the crate docs), then writes
    /// this instance's own with a compare-and-swap: of two instances started
    /// at once with one id, one gets [`ClusterError::NodeIdInUse`]. Call it
    /// before opening the session store and starting the broker;
    /// [`attach`](Self::attach) calls it too (once claimed, at once).
    ///
    /// # Errors
    /// [`ClusterError::NodeIdInUse`]; [`ClusterError::JetStream`] when the
    /// bucket cannot be had.
    pub async fn claim_node_id(&self) -> Result<kv::Store, ClusterError> {
        let inner = &self.inner;
        let store = nodes_bucket(inner).await?;
        if inner.claimed.load(Ordering::Relaxed) {
            return Ok(store);
        }
        let key = node_key(&inner.node_id);
        let seen = refuse_a_live_namesake(inner, &store, &key).await?;
        // Over the (previous instance's) heartbeat watched, or where there
        // was none: not if another instance wrote one since.
        *lock(&inner.heartbeat_revision) = seen;
        if let Err(e) = write_heartbeat(inner, &store, &key).await {
            *lock(&inner.heartbeat_revision) = None;
            return Err(e);
        }
        inner.claimed.store(true, Ordering::Relaxed);
        // Kept alive from now on: opening the store and starting the broker
        // may take longer than the heartbeat's TTL.
        *lock(&inner.heartbeat) = Some(store.clone());
        self.spawn(heartbeat_loop(
            inner.clone(),
            store.clone(),
            key,
            inner.stop.subscribe(),
        ));
        Ok(store)
    }
}

/// Writes this instance's heartbeat over its previous one only: a failed
/// compare-and-swap means another instance writes under this node id.
async fn write_heartbeat(inner: &Inner, store: &kv::Store, key: &str) -> Result<(), ClusterError> {
    let in_use = || ClusterError::NodeIdInUse(inner.node_id.clone());
    let ours = format!("instance={:016x} ", inner.instance);
    // Whose heartbeat is there now: ours (a write whose answer was lost:
    // its revision), another instance's (a namesake), or none.
    let whose = || async {
        let current = store
            .entry(key)
            .await
            .map_err(|e| ClusterError::jetstream("heartbeat", e))?
            .filter(|e| e.operation == kv::Operation::Put);
        Ok::<_, ClusterError>(match current {
            Some(entry) if entry.value.starts_with(ours.as_bytes()) => Some(Ok(entry.revision)),
            Some(_) => Some(Err(in_use())),
            None => None,
        })
    };
    let create = || async {
        match store.create(key, heartbeat_value(inner)).await {
            Ok(revision) => Ok(revision),
            // Also what a create whose own write landed says when its answer
            // was lost (async-nats reads the entry then): look whose it is.
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => match whose().await? {
                Some(found) => found,
                None => Err(ClusterError::jetstream("heartbeat", e)),
            },
            Err(e) => Err(ClusterError::jetstream("heartbeat", e)),
        }
    };
    let last = *lock(&inner.heartbeat_revision);
    let revision = match last {
        Some(revision) => match store.update(key, heartbeat_value(inner), revision).await {
            Ok(revision) => revision,
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                // Another instance's heartbeat: a namesake. Ours: a write
                // whose answer was lost, carried on from. None (it expired
                // while NATS or this node was away): written anew.
                match whose().await? {
                    Some(found) => found?,
                    None => {
                        tracing::warn!(node = %inner.node_id, "this node's heartbeat had expired: written again");
                        let revision = create().await?;
                        inner.heartbeat_rewritten.store(true, Ordering::Relaxed);
                        revision
                    }
                }
            }
            Err(e) => return Err(ClusterError::jetstream("heartbeat", e)),
        },
        None => create().await?,
    };
    *lock(&inner.heartbeat_revision) = Some(revision);
    Ok(())
}

/// A heartbeat under this node id that is not this instance's is a previous
/// instance's (which died: a restart) or another live node's (two nodes
/// given the same id). A live one writes it again within a heartbeat
/// interval: watched that long, and refused if so. A restart after a crash
/// waits that long once.
/// Returns the revision of the heartbeat watched (`None`: there was none).
async fn refuse_a_live_namesake(
    inner: &Inner,
    store: &kv::Store,
    key: &str,
) -> Result<Option<u64>, ClusterError> {
    // A deleted key (a clean shutdown) leaves a marker entry: not a heartbeat.
    let read = || async {
        store
            .entry(key)
            .await
            .map(|entry| entry.filter(|e| e.operation == kv::Operation::Put))
            .map_err(|e| ClusterError::jetstream("heartbeat", e))
    };
    let Some(before) = read().await? else {
        return Ok(None);
    };
    tracing::info!(node = %inner.node_id, "a heartbeat of this node id exists: waiting a heartbeat interval to tell a previous instance from a live namesake");
    tokio::time::sleep(inner.heartbeat_interval.mul_f32(1.5)).await;
    match read().await? {
        Some(after) if after.revision != before.revision => {
            Err(ClusterError::NodeIdInUse(inner.node_id.clone()))
        }
        _ => Ok(Some(before.revision)),
    }
}

fn heartbeat_value(inner: &Inner) -> Bytes {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Bytes::from(format!("instance={:016x} time={now}", inner.instance))
}

async fn heartbeat_loop(
    inner: Arc<Inner>,
    store: kv::Store,
    key: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(inner.heartbeat_interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    // A rebuild that failed half way (NATS slow or cut off meanwhile) is
    // tried again at each heartbeat until it succeeds: the heartbeat
    // written again by then would no longer tell that one is due.
    let mut remake_due = false;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        if lock(&inner.heartbeat).is_none() {
            return;
        }
        if inner.heartbeat_paused.load(Ordering::Relaxed) {
            continue;
        }
        match write_heartbeat(&inner, &store, &key).await {
            Ok(()) => {
                let rewritten = inner.heartbeat_rewritten.swap(false, Ordering::Relaxed);
                if remake_due || rewritten {
                    if remake_due || nodes_stream_renewed(&inner, &store).await {
                        remake_due = false;
                        if let Err(e) = remake_streams(&inner, &store, &key).await {
                            tracing::warn!(error = %e, "the cluster's streams not made again: trying again at the next heartbeat");
                            remake_due = true;
                        }
                    } else {
                        // Taken for dead meanwhile: the sessions other
                        // nodes adopted are theirs, and the wills they
                        // claimed are to be written again.
                        inner.lapsed.send_modify(|n| *n += 1);
                    }
                }
            }
            Err(e @ ClusterError::NodeIdInUse(_)) => {
                // Two live instances with one node id serve the same
                // sessions: this one stops serving.
                tracing::error!(error = %e, "another instance writes this node's heartbeat: shutting the broker down");
                // The heartbeat and the wills under this id are the other
                // instance's now: the shutdown must not delete them.
                let _ = lock(&inner.heartbeat).take();
                let _ = lock(&inner.wills).take();
                inner.failure.send_replace(Some(e.to_string()));
                if let Some(broker) = inner.sessions.broker.get() {
                    broker.shutdown().await;
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat");
                if stream_missing(&inner.js, &store.stream_name).await
                    && let Err(e) = remake_streams(&inner, &store, &key).await
                {
                    tracing::warn!(error = %e, "the cluster's streams not made again: trying again at the next heartbeat");
                    remake_due = true;
                }
            }
        }
    }
}

/// Publishes every locally accepted message once to NATS.
async fn outbound_loop(
    inner: Arc<Inner>,
    mut outbound: mpsc::Receiver<Outbound>,
    mut stop: watch::Receiver<bool>,
) {
    // Once stopping, what was already accepted is published within the
    // session timeout (NATS may be away: its client then waits for it),
    // the message being published included; the rest is dropped.
    let deadline = loop {
        if inner.outbound_paused.load(Ordering::SeqCst) {
            tokio::select! {
                biased;
                _ = stop.changed() => break tokio::time::Instant::now() + inner.sessions.timeout,
                () = tokio::time::sleep(Duration::from_millis(10)) => continue,
            }
        }
        let next = tokio::select! {
            biased;
            next = outbound.recv() => next,
            _ = stop.changed() => None,
        };
        let Some((topic, publish, queued)) = next else {
            break tokio::time::Instant::now() + inner.sessions.timeout;
        };
        inner
            .outbound_bytes
            .fetch_sub(outbound_size(&topic, &publish), Ordering::Relaxed);
        let Some(publish) = aged(publish, queued) else {
            tracing::debug!(topic = %head(topic.as_str()), "message expired before it reached NATS");
            continue;
        };
        let publishing = publish_one(&inner, &topic, publish);
        tokio::pin!(publishing);
        let stopping = tokio::select! {
            biased;
            () = &mut publishing => false,
            _ = stop.changed() => true,
        };
        if stopping {
            let deadline = tokio::time::Instant::now() + inner.sessions.timeout;
            if tokio::time::timeout_at(deadline, publishing).await.is_err() {
                outbound.close();
                drop_outbound(&inner, 1 + outbound.len());
                return;
            }
            break deadline;
        }
    };
    outbound.close();
    while let Ok((topic, publish, queued)) = outbound.try_recv() {
        let Some(publish) = aged(publish, queued) else {
            continue;
        };
        let sent = tokio::time::timeout_at(deadline, publish_one(&inner, &topic, publish)).await;
        if sent.is_err() {
            drop_outbound(&inner, 1 + outbound.len());
            return;
        }
    }
}

/// At most this many messages the outbound queue had no room for wait to
/// be delivered to this node's shared groups; beyond it they are dropped.
const FALLBACK_CAPACITY: usize = 4096;

/// Delivers to this node's shared groups the messages published here that
/// the outbound queue had no room for (no node gets them through NATS).
async fn fallback_loop(
    inner: Arc<Inner>,
    mut fallback: mpsc::Receiver<(TopicName, Publish)>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let next = tokio::select! {
            biased;
            next = fallback.recv() => next,
            _ = stop.changed() => None,
        };
        let Some((topic, publish)) = next else {
            return;
        };
        deliver_local_shared(&inner, &topic, &publish, Groups::All);
    }
}

/// Counts `dropped` messages not published to NATS before the shutdown.
fn drop_outbound(inner: &Inner, dropped: usize) {
    inner.counters.dropped_outbound.fetch_add(
        u64::try_from(dropped).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    tracing::warn!(
        dropped,
        "messages not published to NATS before the shutdown: dropped"
    );
}

async fn publish_one(inner: &Arc<Inner>, topic: &TopicName, publish: Publish) {
    let counters = &inner.counters;
    // The routing subject: plain subscriptions of other nodes, and shared
    // groups everywhere (this node's included).
    let subject = inner.live.topic(topic);
    // The retained subject is as long (roots of the same length), but
    // checked all the same.
    let routed = inner.fits(subject.len())
        && (!publish.retain || inner.fits(inner.retained.topic(topic).len()));
    // The local shared groups NATS does not bring it to.
    deliver_local_shared(
        inner,
        topic,
        &publish,
        if routed {
            Groups::LocalOnly
        } else {
            Groups::All
        },
    );
    if !routed {
        // The server would close the connection on it.
        bump(&counters.topics_too_long);
        bump(&counters.publish_errors);
        tracing::warn!(
            topic = %head(topic.as_str()),
            len = topic.as_str().len(),
            "topic too long for a NATS subject: not published to the cluster"
        );
        return;
    }
    let origin = Origin {
        node: inner.node_id.clone(),
        instance: inner.instance,
        seq: inner.seq.fetch_add(1, Ordering::Relaxed),
    };
    let mut headers = headers::encode(&publish, &origin);
    // A retained one gets a `Nats-Msg-Id` header more in the stream.
    let msg_id = if publish.retain { 64 } else { 0 };
    let size = headers_len(&headers)
        .saturating_add(publish.payload.len())
        .saturating_add(msg_id);
    let max_payload = inner.client.server_info().max_payload;
    if max_payload > 0 && size > max_payload {
        // The client would refuse it: other nodes do not get it.
        bump(&counters.messages_too_large);
        bump(&counters.publish_errors);
        tracing::warn!(
            topic = %head(topic.as_str()),
            size,
            max_payload,
            "message larger than the NATS servers' max_payload: not published to the cluster"
        );
        deliver_local_shared(inner, topic, &publish, Groups::Routed);
        return;
    }
    // NATS away: the client keeps the message (or loses it), and this
    // node's groups would get it late or never; they get it now, and the
    // message says so to their queue subscriptions.
    let away = inner.client.connection_state() != async_nats::connection::State::Connected;
    if away {
        for group in deliver_local_shared(inner, topic, &publish, Groups::Routed) {
            headers.append(
                headers::SHARED_DELIVERED,
                queue_name(&inner.prefix, &group).as_str(),
            );
        }
    }
    if publish.retain {
        // The stream keeps it for the nodes that do not subscribe to it
        // now and for the nodes that start later.
        let mut stored = headers.clone();
        // Lets the stream drop a retry of a message it stored but whose
        // acknowledgement was lost.
        stored.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{:016x}-{}", origin.instance, origin.seq),
        );
        let attempt = {
            let _sending = inner.retained_send.lock().await;
            lock(&inner.retained_unstored).insert(topic.clone(), origin.seq);
            store_retained(inner, topic, stored.clone(), publish.payload.clone()).await
        };
        tokio::spawn(retained_acked(
            inner.clone(),
            topic.clone(),
            origin.seq,
            stored,
            publish.payload.clone(),
            attempt,
        ));
    }
    match inner
        .client
        .publish_with_headers(subject, headers, publish.payload.clone())
        .await
    {
        Ok(()) => bump(&counters.published),
        Err(e) => {
            bump(&counters.publish_errors);
            tracing::warn!(error = %e, "message not published to NATS");
            // No group gets it through NATS: this node's do here.
            if !away {
                deliver_local_shared(inner, topic, &publish, Groups::Routed);
            }
        }
    }
}

/// Room left for the headers of a message in [`Cluster::max_packet_size`]:
/// the fixed ones and the properties of most messages.
const HEADER_ROOM: usize = 8 * 1024;

/// The size of `headers` in a NATS message (`NATS/1.0` line, one line per
/// value, blank line).
fn headers_len(headers: &async_nats::HeaderMap) -> usize {
    let lines: usize = headers
        .iter()
        .map(|(name, values)| {
            let name = AsRef::<str>::as_ref(name).len();
            values
                .iter()
                .map(|v| name + 2 + v.as_str().len() + 2)
                .sum::<usize>()
        })
        .sum();
    "NATS/1.0\r\n".len() + lines + 2
}

/// Which of this node's shared groups [`deliver_local_shared`] delivers to.
#[derive(Clone, Copy)]
enum Groups {
    /// Those not subscribed to in NATS (the message is published there).
    LocalOnly,
    /// Those subscribed to in NATS (the message did not get there).
    Routed,
    /// All of them (the message is not published to NATS).
    All,
}

/// Delivers a message published here to the local shared groups whose
/// filter matches it and that NATS does not bring it to (`which`). (Local
/// routing leaves shared groups to the cluster, and no other node gets
/// such a message.) Returns the groups a member of which got it.
fn deliver_local_shared(
    inner: &Inner,
    topic: &TopicName,
    publish: &Publish,
    which: Groups,
) -> Vec<SharedFilter> {
    let groups: Vec<SharedFilter> = {
        let local = lock(&inner.local_shared);
        if local.all.is_empty() {
            return Vec::new();
        }
        local
            .all
            .keys()
            .filter(|group| match which {
                Groups::All => true,
                Groups::LocalOnly => local.local_only.contains_key(*group),
                Groups::Routed => !local.local_only.contains_key(*group),
            })
            .filter(|group| group.filter().matches(topic))
            .cloned()
            .collect()
    };
    let mut delivered = Vec::new();
    let Some(broker) = inner.sessions.broker.get() else {
        return delivered;
    };
    if groups.is_empty() {
        return delivered;
    }
    let mut publish = publish.clone();
    publish.topic = topic.as_str().to_owned().into();
    for group in groups {
        match broker.deliver_shared(&group, &publish) {
            Ok(true) => {
                bump(&inner.counters.shared_delivered);
                delivered.push(group);
            }
            Ok(false) => bump(&inner.counters.shared_missed),
            Err(_) => break,
        }
    }
    delivered
}

/// The first attempt to store a retained message (pending acknowledgement),
/// or why NATS did not take it.
type StoreAttempt = Result<jetstream::context::PublishAckFuture, jetstream::context::PublishError>;

/// Hands one retained message to the retained stream. `topic`'s subject
/// fits in a NATS protocol line ([`publish_one`] checked it).
async fn store_retained(
    inner: &Inner,
    topic: &TopicName,
    headers: async_nats::HeaderMap,
    payload: Bytes,
) -> StoreAttempt {
    inner
        .js
        .publish_with_headers(inner.retained.topic(topic), headers, payload)
        .await
}

/// The back-off between attempts to store a retained message: from
/// 250 ms, doubling, at most 4 s.
const RETAINED_RETRY_FIRST: Duration = Duration::from_millis(250);
const RETAINED_RETRY_MAX: Duration = Duration::from_secs(4);
/// How long a retained message is tried again: within the stream's
/// duplicate window (2 min), so that a retry of a message stored whose
/// acknowledgement was lost is dropped by the stream.
const RETAINED_RETRY_FOR: Duration = Duration::from_secs(90);
/// At most this many retained messages (one per topic) wait to be stored
/// again; beyond it a failed store is given up at once.
const RETAINED_RETRY_LIMIT: usize = 10_000;

/// Counts one retained message waiting to be stored again while it lives.
struct Retrying<'a>(&'a AtomicUsize);

impl<'a> Retrying<'a> {
    fn enter(count: &'a AtomicUsize) -> Option<Self> {
        count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < RETAINED_RETRY_LIMIT).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(count))
    }
}

impl Drop for Retrying<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits for the stream's acknowledgement of a retained message and, when
/// JetStream refuses it or does not answer (a leader election, a server
/// lost), tries again with a back-off, for as long as it is this node's
/// newest retained message on its topic and the node is not stopping.
async fn retained_acked(
    inner: Arc<Inner>,
    topic: TopicName,
    seq: u64,
    headers: async_nats::HeaderMap,
    payload: Bytes,
    mut attempt: StoreAttempt,
) {
    let counters = &inner.counters;
    let mut stop = inner.stop.subscribe();
    let started = Instant::now();
    let mut backoff = RETAINED_RETRY_FIRST;
    let newest = |inner: &Inner| lock(&inner.retained_unstored).get(&topic) == Some(&seq);
    let forget = |inner: &Inner| {
        let mut unstored = lock(&inner.retained_unstored);
        if unstored.get(&topic) == Some(&seq) {
            unstored.remove(&topic);
        }
    };
    let mut retrying = None;
    loop {
        let error = match attempt {
            Ok(ack) => match ack.await {
                Ok(_) => {
                    bump(&counters.retained_stored);
                    forget(&inner);
                    return;
                }
                Err(e) => e,
            },
            Err(e) => e,
        };
        bump(&counters.publish_errors);
        if !newest(&inner) {
            // A newer retained message of this node replaces it.
            return;
        }
        if retrying.is_none() {
            retrying = Retrying::enter(&inner.retained_retrying);
        }
        if retrying.is_none() || started.elapsed() >= RETAINED_RETRY_FOR || *stop.borrow() {
            bump(&counters.retained_store_failed);
            tracing::warn!(error = %error, topic = %topic, "retained message not stored in JetStream");
            forget(&inner);
            return;
        }
        tracing::debug!(error = %error, topic = %topic, "retained message not stored yet: trying again");
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => {}
        }
        backoff = (backoff * 2).min(RETAINED_RETRY_MAX);
        let _sending = inner.retained_send.lock().await;
        if !newest(&inner) {
            return;
        }
        bump(&counters.retained_store_retries);
        attempt = store_retained(&inner, &topic, headers.clone(), payload.clone()).await;
    }
}

/// The key of a will in the wills bucket: the escaped node id, `.`, the
/// client id's [`client_kv_key`].
pub(crate) fn will_key(node_id: &str, client_id: &str) -> String {
    format!("{}.{}", node_key(node_id), client_kv_key(client_id))
}

/// The largest will a node reads back from the bucket.
const MAX_WILL_SIZE: u32 = 268_435_455;

/// A will as the bucket keeps it: the delay in seconds (4 bytes, big
/// endian), then the will as an MQTT 5.0 PUBLISH packet (packet id 1 when
/// its QoS is 1 or 2).
fn encode_will(will: &Publish, delay: u32) -> Option<Bytes> {
    let mut publish = will.clone();
    publish.dup = false;
    publish.packet_id = match publish.qos {
        QoS::AtMostOnce => None,
        _ => PacketId::new(1),
    };
    let mut buf = BytesMut::new();
    buf.put_u32(delay);
    match Packet::from(publish).encode(ProtocolVersion::V5, &mut buf) {
        Ok(()) => Some(buf.freeze()),
        Err(e) => {
            tracing::warn!(error = %e, "will not encodable");
            None
        }
    }
}

/// The will and its delay from a bucket value; `None` when it is not one.
fn decode_will(value: &[u8]) -> Option<(Publish, u32)> {
    let (delay, packet) = value.split_first_chunk::<4>()?;
    let mut buf = BytesMut::from(packet);
    match fulmar_codec::decode(&mut buf, ProtocolVersion::V5, MAX_WILL_SIZE) {
        Ok(Some(Packet::Publish(mut publish))) if buf.is_empty() => {
            publish.packet_id = None;
            Some((publish, u32::from_be_bytes(*delay)))
        }
        _ => None,
    }
}

/// Writes and deletes the wills of this node's clients as the broker
/// reports them (the last change per client); at stop, handles what was
/// reported already.
async fn wills_loop(inner: Arc<Inner>, store: kv::Store, mut stop: watch::Receiver<bool>) {
    let mut revisions: HashMap<String, u64> = HashMap::new();
    // The will of each client connected here, to write back into a bucket
    // made again (shared with the broker's copy: reference counted).
    let mut current: HashMap<String, (Box<Publish>, u32)> = HashMap::new();
    let mut remade = inner.remade.subscribe();
    let mut lapsed = inner.lapsed.subscribe();
    let changes = inner.will_changes.clone();
    loop {
        tokio::select! {
            // A bucket made again, or wills claimed by other nodes while
            // this one was taken for dead: written again (before the changes
            // that keep coming, if they do).
            biased;
            _ = stop.changed() => break,
            _ = async { tokio::select! { r = remade.changed() => r, r = lapsed.changed() => r } } => {
                revisions.clear();
                for (client_id, (will, delay)) in &current {
                    let event = WillEvent::Set { client_id: client_id.clone(), will: will.clone(), delay: *delay };
                    on_will_event(&inner, &store, &mut revisions, event).await;
                }
            }
            () = changes.wake.notified() => {}
        }
        for event in changes.take() {
            match &event {
                WillEvent::Set {
                    client_id,
                    will,
                    delay,
                } => {
                    current.insert(client_id.clone(), (will.clone(), *delay));
                }
                WillEvent::Cleared(client_id) => {
                    current.remove(client_id);
                }
            }
            on_will_event(&inner, &store, &mut revisions, event).await;
        }
    }
    // Within the session timeout (NATS may be away): the wills left are
    // erased by the shutdown if it can, else published by another node.
    let deadline = tokio::time::Instant::now() + inner.sessions.timeout;
    let events = changes.take();
    let total = events.len();
    for (done, event) in events.into_iter().enumerate() {
        let handled = tokio::time::timeout_at(
            deadline,
            on_will_event(&inner, &store, &mut revisions, event),
        )
        .await;
        if handled.is_err() {
            tracing::warn!(
                left = total - done,
                "will changes not written before the shutdown"
            );
            break;
        }
    }
}

async fn on_will_event(
    inner: &Inner,
    store: &kv::Store,
    revisions: &mut HashMap<String, u64>,
    event: WillEvent,
) {
    match event {
        WillEvent::Set {
            client_id,
            will,
            delay,
        } => {
            let Some(value) = encode_will(&will, delay) else {
                return;
            };
            let key = will_key(&inner.node_id, &client_id);
            match store.put(&key, value).await {
                Ok(revision) => {
                    bump(&inner.counters.wills_stored);
                    revisions.insert(client_id, revision);
                }
                Err(e) => {
                    revisions.remove(&client_id);
                    tracing::warn!(error = %e, %key, "will not stored");
                }
            }
        }
        WillEvent::Cleared(client_id) => {
            let key = will_key(&inner.node_id, &client_id);
            let revision = revisions.remove(&client_id);
            erase_will(store, &key, revision).await;
            bump(&inner.counters.wills_cleared);
        }
    }
}

/// Removes the message of `key` (at `revision` when known, else the last
/// one) from the wills bucket, leaving no delete marker.
async fn erase_will(store: &kv::Store, key: &str, revision: Option<u64>) {
    let revision = match revision {
        Some(revision) => Some(revision),
        None => match store.entry(key).await {
            Ok(entry) => entry.map(|e| e.revision),
            Err(e) => {
                tracing::warn!(error = %e, %key, "will not read");
                None
            }
        },
    };
    if let Some(revision) = revision
        && let Err(e) = store.stream.delete_message(revision).await
    {
        // Gone already (claimed by another node, or replaced).
        tracing::debug!(error = %e, %key, "will not erased");
    }
}

/// Removes every will of this node from the bucket (a clean shutdown).
async fn erase_node_wills(inner: &Inner, store: &kv::Store) {
    let erase = async {
        let filter = format!("{}.>", node_key(&inner.node_id));
        for key in bucket_keys(store, &filter).await? {
            erase_will(store, &key, None).await;
        }
        Ok::<_, ClusterError>(())
    };
    match tokio::time::timeout(Duration::from_secs(10), erase).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "wills of this node not deleted"),
        Err(_) => tracing::warn!("wills of this node not deleted within 10 s"),
    }
}

/// A will of a gone node that this node publishes when `due`, if it can
/// still claim it at `revision`.
struct PendingWill {
    revision: u64,
    due: tokio::time::Instant,
    publish: Publish,
}

/// The will `entry` of the wills bucket holds, due its delay after `now`,
/// by its key; `None` for a delete marker, a claim whose node did not erase
/// it, or what does not decode, which are erased.
async fn due_will(
    wills: &kv::Store,
    entry: kv::Entry,
    now: tokio::time::Instant,
) -> Option<(String, PendingWill)> {
    let will = match entry.operation {
        kv::Operation::Put => decode_will(&entry.value),
        _ => None,
    };
    let Some((publish, delay)) = will else {
        if let Err(e) = wills.stream.delete_message(entry.revision).await {
            tracing::debug!(error = %e, key = %entry.key, "not erased");
        }
        return None;
    };
    let due = now + Duration::from_secs(u64::from(delay));
    tracing::debug!(key = %entry.key, delay, "will due");
    Some((
        entry.key,
        PendingWill {
            revision: entry.revision,
            due,
            publish,
        },
    ))
}

/// The wills under this node id in the bucket when it attaches: those of a
/// previous instance that died (this one writes none before), due after
/// their delay from now, as a gone node's.
async fn previous_wills(inner: &Inner, wills: &kv::Store) -> HashMap<String, PendingWill> {
    let read = async {
        let keys = bucket_keys(wills, &format!("{}.>", node_key(&inner.node_id))).await?;
        let mut found = HashMap::new();
        let now = tokio::time::Instant::now();
        for key in keys {
            let entry = wills
                .entry(key.as_str())
                .await
                .map_err(|e| ClusterError::jetstream("wills", e))?;
            let Some(entry) = entry else {
                continue;
            };
            if let Some((key, will)) = due_will(wills, entry, now).await {
                tracing::info!(%key, "will of this node's previous instance");
                found.insert(key, will);
            }
        }
        Ok::<_, ClusterError>(found)
    };
    match tokio::time::timeout(inner.sessions.timeout.max(Duration::from_secs(10)), read).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "wills of this node's previous instance not read");
            HashMap::new()
        }
        Err(_) => {
            tracing::warn!("wills of this node's previous instance not read in time");
            HashMap::new()
        }
    }
}

/// Finds the wills of gone nodes every heartbeat interval and publishes
/// each one after its delay, once in the cluster (`pending` those found
/// already).
async fn sweep_loop(
    inner: Arc<Inner>,
    broker: BrokerHandle,
    nodes: kv::Store,
    wills: kv::Store,
    mut pending: HashMap<String, PendingWill>,
    mut stop: watch::Receiver<bool>,
) {
    let interval = inner.heartbeat_interval.max(Duration::from_millis(10));
    let mut next_sweep = tokio::time::Instant::now() + interval;
    // One scan for gone nodes' sessions at a time: with NATS away its
    // requests wait (the client's command queue is full), and a scan
    // started at every sweep would pile up for as long as the outage lasts.
    let mut adopting: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let wake = pending
            .values()
            .map(|p| p.due)
            .min()
            .map_or(next_sweep, |due| due.min(next_sweep));
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep_until(wake) => {}
        }
        if tokio::time::Instant::now() >= next_sweep {
            let swept = sweep(&inner, &nodes, &wills, &mut pending);
            match tokio::time::timeout(Duration::from_secs(30), swept).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "wills of gone nodes"),
                Err(_) => tracing::warn!("wills of gone nodes: timed out"),
            }
            next_sweep = tokio::time::Instant::now() + interval;
            if adopting
                .as_ref()
                .is_none_or(tokio::task::JoinHandle::is_finished)
            {
                adopting = Some(tokio::spawn(adopt_gone(inner.clone(), nodes.clone())));
            }
        }
        publish_due(&inner, &broker, &wills, &mut pending).await;
        inner
            .counters
            .wills_pending
            .store(pending.len() as u64, Ordering::Relaxed);
    }
}

/// Adopts the sessions of nodes that kept them in JetStream and are gone
/// (no heartbeat, no commit for a heartbeat TTL); forgets a gone node's
/// commit journal once none of its sessions waits for anything.
async fn adopt_gone(inner: Arc<Inner>, nodes: kv::Store) {
    // Refused claims of this node back to their gone nodes first, so that
    // the gone nodes' records of them stay theirs.
    inner.sessions.retry_give_backs().await;
    let quiet = crate::state::quiet_nodes(&inner.js, &inner.prefix, inner.heartbeat_ttl).await;
    let candidates = match quiet {
        Ok(candidates) if !candidates.is_empty() => candidates,
        Ok(_) => return,
        Err(reason) => {
            tracing::debug!(reason, "state stream not listed");
            return;
        }
    };
    let Ok(live) = live_node_keys(&nodes).await else {
        return;
    };
    for node in candidates {
        if node == inner.node_id || live.contains(&node_key(&node)) {
            continue;
        }
        let left = inner.sessions.clone().adopt_node(node.clone()).await;
        if left == 0
            && let Err(reason) = crate::state::purge_journal(&inner.js, &inner.prefix, &node).await
        {
            tracing::debug!(node = %node, reason, "journal of a gone node not removed");
        }
    }
}

/// Adds the wills of nodes whose heartbeat is gone to `pending`, due after
/// their delay from now.
///
/// The wills are listed before the heartbeats: a node writes its heartbeat
/// before its first will and, on a clean shutdown, deletes its wills before
/// its heartbeat, so a will listed whose node has no heartbeat afterwards
/// belongs to a node that died (or is erased before it can be claimed).
async fn sweep(
    inner: &Inner,
    nodes: &kv::Store,
    wills: &kv::Store,
    pending: &mut HashMap<String, PendingWill>,
) -> Result<(), ClusterError> {
    let own = node_key(&inner.node_id);
    let keys: HashSet<String> = bucket_keys(wills, ">").await?.into_iter().collect();
    pending.retain(|key, _| keys.contains(key));
    let candidates: Vec<String> = keys
        .into_iter()
        .filter(|key| {
            key.split_once('.')
                .is_some_and(|(node, _)| node != own && !pending.contains_key(key))
        })
        .collect();
    if candidates.is_empty() {
        return Ok(());
    }
    let live = live_node_keys(nodes).await?;
    let mut entries = Vec::new();
    for key in candidates {
        if key
            .split_once('.')
            .is_some_and(|(node, _)| live.contains(node))
        {
            continue;
        }
        let entry = wills
            .entry(key.as_str())
            .await
            .map_err(|e| ClusterError::jetstream("wills", e))?;
        entries.extend(entry);
    }
    if entries.is_empty() {
        return Ok(());
    }
    // Again: a node that came back since wrote its heartbeat before any
    // will read above.
    let live = live_node_keys(nodes).await?;
    let now = tokio::time::Instant::now();
    for entry in entries {
        if entry
            .key
            .split_once('.')
            .is_none_or(|(node, _)| live.contains(node))
        {
            continue;
        }
        if let Some((key, will)) = due_will(wills, entry, now).await {
            tracing::info!(%key, "will of a gone node");
            pending.insert(key, will);
        }
    }
    Ok(())
}

/// Claims and publishes the pending wills that are due.
async fn publish_due(
    inner: &Arc<Inner>,
    broker: &BrokerHandle,
    wills: &kv::Store,
    pending: &mut HashMap<String, PendingWill>,
) {
    let now = tokio::time::Instant::now();
    let due: Vec<String> = pending
        .iter()
        .filter(|(_, p)| p.due <= now)
        .map(|(key, _)| key.clone())
        .collect();
    for key in due {
        let Some(will) = pending.remove(&key) else {
            continue;
        };
        lock(&inner.sessions.previous_wills).remove(&key);
        // A compare-and-swap on the revision: one node wins; the will's own
        // node writing or clearing it meanwhile wins too.
        match wills.update(&key, Bytes::new(), will.revision).await {
            Ok(claimed) => {
                if let Err(e) = wills.stream.delete_message(claimed).await {
                    tracing::debug!(error = %e, %key, "claimed will not erased");
                }
                tracing::info!(%key, "publishing the will of a gone node");
                publish_will(inner, broker, will.publish).await;
                bump(&inner.counters.wills_published);
            }
            Err(e) => {
                bump(&inner.counters.wills_lost);
                tracing::debug!(error = %e, %key, "will claimed elsewhere");
            }
        }
    }
}

/// Publishes a will in the cluster like a message a local client
/// published: to the local subscribers, then to NATS.
async fn publish_will(inner: &Arc<Inner>, broker: &BrokerHandle, publish: Publish) {
    let Ok(topic) = publish.topic.parse::<TopicName>() else {
        bump(&inner.counters.invalid);
        return;
    };
    if let Err(e) = broker.inject(&publish) {
        tracing::debug!(error = %e, "will not routed locally");
    }
    publish_one(inner, &topic, publish).await;
}

/// A NATS subscription held for a filter: reference counted, ended when
/// `stop` is dropped.
struct Held {
    count: usize,
    label: String,
    _stop: oneshot::Sender<()>,
}

/// The queue group of a shared subscription: from the prefix, the share
/// name and the filter, the same on every node.
fn queue_name(prefix: &str, filter: &SharedFilter) -> String {
    let mut queue = format!("{prefix}.");
    escape_level(filter.group(), &mut queue);
    queue.push('.');
    escape_level(filter.filter().as_str(), &mut queue);
    queue
}

/// Holds the NATS subscriptions for the filters of the local broker.
async fn control_loop(
    inner: Arc<Inner>,
    broker: BrokerHandle,
    mut barrier: (String, Subscriber),
    mut stop: watch::Receiver<bool>,
) {
    let mut held: HashMap<String, Held> = HashMap::new();
    // Plain subscriptions are read by one task (see `forward_plain`).
    let (plain, plain_rx) = mpsc::unbounded_channel();
    drop(tokio::spawn(forward_plain(
        inner.clone(),
        broker.clone(),
        plain_rx,
    )));
    let changes = inner.filter_changes.clone();
    loop {
        tokio::select! {
            () = changes.wake.notified() => {}
            _ = stop.changed() => break,
        }
        let batch = std::mem::take(&mut *lock(&changes.pending));
        // Filters that appeared first: one that went may share a subject
        // with one that came, which then stays subscribed.
        let (appeared, went): (Vec<_>, Vec<_>) = batch.into_iter().partition(|(_, net)| *net > 0);
        let mut added = false;
        for (filter, net) in appeared {
            for _ in 0..net {
                added |= add(&inner, &broker, &plain, &mut held, &filter).await;
            }
        }
        for (filter, net) in went {
            for _ in net..0 {
                remove(&inner, &mut held, &filter);
            }
        }
        if added {
            // The server handles a connection's protocol in order: once a
            // message published after the SUBs comes back, it has them.
            wait_barrier(&inner, &mut barrier).await;
        }
        let labels: BTreeSet<String> = held.values().map(|h| h.label.clone()).collect();
        inner
            .counters
            .nats_subscriptions
            .store(labels.len() as u64, Ordering::Relaxed);
        *lock(&inner.subscribed) = labels;
    }
}

async fn wait_barrier(inner: &Inner, (subject, barrier): &mut (String, Subscriber)) {
    let token = Bytes::from(inner.barriers.fetch_add(1, Ordering::Relaxed).to_string());
    if let Err(e) = inner.client.publish(subject.clone(), token.clone()).await {
        tracing::warn!(error = %e, "barrier");
        return;
    }
    let wait = async {
        while let Some(message) = barrier.next().await {
            if message.payload == token {
                return;
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .is_err()
    {
        tracing::warn!("NATS did not confirm new subscriptions within 10 s");
    }
}

/// The NATS subscriptions of `filter`: its subjects, its queue group when
/// shared. `None` when one of them would not fit in a NATS protocol line
/// (the server would close the connection, and the client would send it
/// again on every reconnection): such a filter is never subscribed to.
fn nats_subscriptions(
    inner: &Inner,
    filter: &SubscriptionFilter,
) -> Option<(Vec<String>, Option<String>)> {
    let queue = match filter {
        SubscriptionFilter::Shared(shared) => Some(queue_name(&inner.prefix, shared)),
        SubscriptionFilter::Plain(_) => None,
    };
    let subjects = inner.live.filter(filter.filter());
    let queue_len = queue.as_ref().map_or(0, String::len);
    subjects
        .iter()
        .all(|subject| inner.fits(subject.len().saturating_add(queue_len)))
        .then_some((subjects, queue))
}

/// Starts the NATS subscriptions of `filter` that are not held yet;
/// whether any was started.
async fn add(
    inner: &Arc<Inner>,
    broker: &BrokerHandle,
    plain: &mpsc::UnboundedSender<PlainSubscription>,
    held: &mut HashMap<String, Held>,
    filter: &SubscriptionFilter,
) -> bool {
    let mut started = false;
    let subscriptions = nats_subscriptions(inner, filter);
    if let SubscriptionFilter::Shared(shared) = filter {
        lock(&inner.local_shared).add(shared, subscriptions.is_some());
    }
    let Some((subjects, queue)) = subscriptions else {
        bump(&inner.counters.filters_too_long);
        tracing::warn!(
            filter = %head(&filter.to_string()),
            len = filter.filter().as_str().len(),
            "filter too long for a NATS subject: its subscribers get only this node's messages"
        );
        return false;
    };
    for subject in subjects {
        let label = match &queue {
            Some(queue) => format!("{subject} {queue}"),
            None => subject.clone(),
        };
        if let Some(h) = held.get_mut(&label) {
            h.count += 1;
            continue;
        }
        let subscribed = match &queue {
            Some(queue) => {
                inner
                    .client
                    .queue_subscribe(subject.clone(), queue.clone())
                    .await
            }
            None => inner.client.subscribe(subject.clone()).await,
        };
        let subscriber = match subscribed {
            Ok(subscriber) => subscriber,
            Err(e) => {
                tracing::warn!(error = %e, %subject, "NATS subscription failed");
                continue;
            }
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = match filter {
            SubscriptionFilter::Shared(shared) => Some(tokio::spawn(forward_shared(
                inner.clone(),
                broker.clone(),
                subscriber,
                stop_rx,
                shared.clone(),
            ))),
            SubscriptionFilter::Plain(_) => {
                // The forwarder ends with the control loop, which holds this.
                let _ = plain.send((subscriber, stop_rx));
                None
            }
        };
        drop(task);
        held.insert(
            label.clone(),
            Held {
                count: 1,
                label,
                _stop: stop_tx,
            },
        );
        started = true;
    }
    started
}

fn remove(inner: &Inner, held: &mut HashMap<String, Held>, filter: &SubscriptionFilter) {
    let subscriptions = nats_subscriptions(inner, filter);
    if let SubscriptionFilter::Shared(shared) = filter {
        lock(&inner.local_shared).remove(shared, subscriptions.is_some());
    }
    // A filter too long was never subscribed to: nothing of it is held.
    let Some((subjects, queue)) = subscriptions else {
        return;
    };
    for subject in subjects {
        let label = match &queue {
            Some(queue) => format!("{subject} {queue}"),
            None => subject,
        };
        if let Some(h) = held.get_mut(&label) {
            h.count -= 1;
            if h.count == 0 {
                // Dropping `stop` ends the forwarding task, which unsubscribes.
                held.remove(&label);
            }
        }
    }
}

/// A plain NATS subscription for [`forward_plain`], read until `stop`.
type PlainSubscription = (Subscriber, oneshot::Receiver<()>);

/// Hands the messages of every plain NATS subscription to the broker, one
/// at a time: while one waits for room at a subscriber
/// ([`BrokerHandle::inject_paced`]), nothing else is routed, so the
/// messages of a topic that several subscriptions bring keep their order
/// (each subscription's messages come in order, and the first copy of each
/// is the one routed). Each subscription ends (and unsubscribes, as its
/// `Subscriber` drops) when its `stop` sender is dropped.
async fn forward_plain(
    inner: Arc<Inner>,
    broker: BrokerHandle,
    mut added: mpsc::UnboundedReceiver<PlainSubscription>,
) {
    let mut streams = futures::stream::SelectAll::new();
    loop {
        let message = tokio::select! {
            biased;
            subscription = added.recv() => match subscription {
                Some((subscriber, stop)) => {
                    streams.push(subscriber.take_until(stop));
                    continue;
                }
                None => break,
            },
            Some(message) = streams.next() => message,
        };
        if let Err(BrokerError::Shutdown) = on_plain(&inner, &broker, message).await {
            break;
        }
    }
}

/// Hands the messages of one shared NATS subscription (a queue group) to
/// the broker until `stop`.
async fn forward_shared(
    inner: Arc<Inner>,
    broker: BrokerHandle,
    mut subscriber: Subscriber,
    mut stop: oneshot::Receiver<()>,
    group: SharedFilter,
) {
    loop {
        let message = tokio::select! {
            biased;
            _ = &mut stop => break,
            message = subscriber.next() => message,
        };
        let Some(message) = message else {
            return;
        };
        if let Err(BrokerError::Shutdown) = on_shared(&inner, &broker, &group, message).await {
            break;
        }
    }
    let _ = subscriber.unsubscribe().await;
}

/// Decodes a routed NATS message; `None` (counted) when it is not one.
fn decode_routed(inner: &Inner, message: async_nats::Message) -> Option<(Publish, Origin)> {
    bump(&inner.counters.received);
    let Some(topic) = inner.live.parse_topic(message.subject.as_str()) else {
        bump(&inner.counters.invalid);
        tracing::debug!(subject = %message.subject, "dropped: subject is not a topic");
        return None;
    };
    match headers::decode(topic, message.headers.as_ref(), message.payload) {
        Ok(decoded) => Some(decoded),
        Err(e) => {
            bump(&inner.counters.invalid);
            tracing::debug!(subject = %message.subject, error = %e, "dropped: headers");
            None
        }
    }
}

/// Injects a message of a plain subscription: routed here with the broker's
/// flow control ([`BrokerHandle::inject_paced`]), so that a burst from other
/// nodes slows this subscription's reading down to what the subscribers
/// take instead of being dropped at their full queues. A message that
/// several subscriptions of this node match comes once per subscription
/// (each read by its own task): the first copy is routed, and it is routed
/// under the lock that records it as seen, so that a later message of the
/// same topic, read by another task, cannot be routed before it.
async fn on_plain(
    inner: &Inner,
    broker: &BrokerHandle,
    message: async_nats::Message,
) -> Result<(), BrokerError> {
    let Some((publish, origin)) = decode_routed(inner, message) else {
        return Ok(());
    };
    if inner.is_own(&origin) {
        bump(&inner.counters.own_ignored);
        return Ok(());
    }
    let routed = {
        let mut dedupe = lock(&inner.dedupe);
        if inner.dedupe_window > 0 && !dedupe.insert((origin.instance, origin.seq)) {
            bump(&inner.counters.duplicates);
            return Ok(());
        }
        if publish.retain
            && let Ok(topic) = publish.topic.parse::<TopicName>()
        {
            // Stored and routed now; the stream's copy, when it comes, is a
            // duplicate, and older stream messages on this topic are stale.
            let mut live = lock(&inner.live_retained);
            if live.len() >= 4096 {
                live.retain(|_, (_, at)| at.elapsed() < LIVE_RETAINED_GRACE);
            }
            live.insert(topic, ((origin.instance, origin.seq), Instant::now()));
        }
        broker.inject_paced(&publish)
    };
    match routed {
        Ok(pacing) => {
            bump(&inner.counters.injected);
            // Nothing is acknowledged to anyone here: no wait for the store.
            pacing.wait_for_subscribers().await;
            Ok(())
        }
        Err(BrokerError::Shutdown) => Err(BrokerError::Shutdown),
        Err(e) => {
            bump(&inner.counters.invalid);
            tracing::debug!(error = %e, "inject refused");
            Ok(())
        }
    }
}

/// Delivers a message of a shared NATS subscription to a local member of
/// its group, with the flow control of a local PUBLISH
/// ([`BrokerHandle::deliver_shared_paced`]): this subscription is read no
/// faster than the member takes its messages (NATS buffers them meanwhile)
/// instead of dropping them at its full queue.
async fn on_shared(
    inner: &Inner,
    broker: &BrokerHandle,
    group: &SharedFilter,
    message: async_nats::Message,
) -> Result<(), BrokerError> {
    // The publishing node delivered it to the group itself (NATS was away).
    if message.headers.as_ref().is_some_and(|headers| {
        let queue = queue_name(&inner.prefix, group);
        headers
            .get_all(headers::SHARED_DELIVERED)
            .any(|value| value.as_str() == queue)
    }) {
        bump(&inner.counters.duplicates);
        return Ok(());
    }
    // A node's own messages count here: local routing left the group to us.
    let Some((publish, _origin)) = decode_routed(inner, message) else {
        return Ok(());
    };
    match broker.deliver_shared_paced(group, &publish)? {
        Some(pacing) => {
            bump(&inner.counters.shared_delivered);
            // Nothing is acknowledged to anyone here: no wait for the store.
            pacing.wait_for_subscribers().await;
        }
        None => bump(&inner.counters.shared_missed),
    }
    Ok(())
}

/// Injects one message of the retained stream.
fn on_retained(
    inner: &Inner,
    broker: &BrokerHandle,
    message: &jetstream::Message,
    loading: bool,
) -> Result<(), BrokerError> {
    if !loading
        && message
            .headers
            .as_ref()
            .is_some_and(|h| h.get(headers::RESTORED).is_some())
    {
        // Written back after NATS lost the stream, by a node that held it:
        // so does this one, and its subscribers had it long ago.
        return Ok(());
    }
    let Some(topic) = inner.retained.parse_topic(message.subject.as_str()) else {
        bump(&inner.counters.invalid);
        return Ok(());
    };
    let topic_name = topic.clone();
    let (mut publish, origin) =
        match headers::decode(topic, message.headers.as_ref(), message.payload.clone()) {
            Ok(decoded) => decoded,
            Err(e) => {
                bump(&inner.counters.invalid);
                tracing::debug!(error = %e, "retained message dropped: headers");
                return Ok(());
            }
        };
    if inner.is_own(&origin) {
        return Ok(());
    }
    let id = (origin.instance, origin.seq);
    let mut dedupe = lock(&inner.dedupe);
    if dedupe.contains(id) {
        // Injected already from the routing subject.
        bump(&inner.counters.duplicates);
        let mut live = lock(&inner.live_retained);
        if live.get(&topic_name).is_some_and(|(last, _)| *last == id) {
            live.remove(&topic_name);
        }
        return Ok(());
    }
    {
        let mut live = lock(&inner.live_retained);
        if let Some((routed, _)) = live.get(&topic_name)
            && *routed == id
        {
            // This very message came from the routing subject (the dedupe
            // window is off, or forgot it): a duplicate.
            bump(&inner.counters.duplicates);
            live.remove(&topic_name);
            return Ok(());
        }
        if let Some(((instance, seq), at)) = live.get(&topic_name) {
            // A message on this topic came from the routing subject and its
            // stream copy has not come yet. It is newer than this one unless
            // this one is a later message of the same instance: the stream
            // keeps the last message per subject, so it skips the copy of a
            // message replaced before it was delivered.
            let newer = *instance != origin.instance || *seq > origin.seq;
            if newer && at.elapsed() < LIVE_RETAINED_GRACE {
                // This one is older. Not marked as seen: if its routing copy
                // comes after all, that one is routed.
                return Ok(());
            }
            live.remove(&topic_name);
        }
    }
    // Marked as seen only once it is injected (a stream copy skipped above
    // leaves its routing copy to be routed), and injected under the same
    // lock as `on_plain` routes: a routing copy cannot be routed in between.
    publish.retain = true;
    if let Some(expiry) = publish.properties.message_expiry_interval
        && let Ok(info) = message.info()
    {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let published = u64::try_from(info.published.unix_timestamp()).unwrap_or(0);
        let age = now.saturating_sub(published);
        match u32::try_from(age) {
            Ok(age) if age < expiry => {
                publish.properties.message_expiry_interval = Some(expiry - age);
            }
            // Expired: a new subscriber must not get it (MQTT-3.3.2-5).
            _ => return Ok(()),
        }
    }
    match broker.inject(&publish) {
        Ok(()) => {
            dedupe.insert(id);
            bump(&inner.counters.retained_loaded);
            Ok(())
        }
        Err(BrokerError::Shutdown) => Err(BrokerError::Shutdown),
        Err(e) => {
            bump(&inner.counters.invalid);
            tracing::debug!(error = %e, "retained inject refused");
            Ok(())
        }
    }
}

/// Keeps injecting the retained messages other nodes publish.
async fn retained_loop(
    inner: Arc<Inner>,
    broker: BrokerHandle,
    mut messages: consumer::push::Ordered,
    mut stop: watch::Receiver<bool>,
) {
    let mut remade = inner.remade.subscribe();
    loop {
        let next = tokio::select! {
            next = messages.next() => next,
            _ = stop.changed() => return,
            _ = remade.changed() => {
                // A new stream: the consumer of the old one would ask for
                // sequence numbers past those the new one starts with.
                match retained_consumer(&inner).await {
                    Ok((new, _)) => messages = new,
                    Err(e) => tracing::warn!(error = %e, "retained stream: no new consumer"),
                }
                continue;
            }
        };
        match next {
            Some(Ok(message)) => {
                if on_retained(&inner, &broker, &message, false).is_err() {
                    return;
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "retained stream"),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_keys_round_trip() {
        for id in ["node-1", "a.b", "é x=y", ""] {
            let key = node_key(id);
            assert!(
                key.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b))
            );
            assert_eq!(node_from_key(&key).as_deref(), Some(id));
        }
    }

    #[test]
    fn wills_round_trip_through_their_bucket_value() {
        let mut will = Publish::new("wills/x".into(), Bytes::from_static(b"gone"));
        will.qos = QoS::ExactlyOnce;
        will.retain = true;
        will.properties.message_expiry_interval = Some(60);
        will.properties.content_type = Some("text/plain".into());
        let value = encode_will(&will, 7).unwrap();
        assert_eq!(decode_will(&value), Some((will.clone(), 7)));
        will.qos = QoS::AtMostOnce;
        let value = encode_will(&will, 0).unwrap();
        assert_eq!(decode_will(&value), Some((will, 0)));
        // A claim (empty), a short or a trailing value is no will.
        assert_eq!(decode_will(b""), None);
        assert_eq!(decode_will(&value[..value.len() - 1]), None);
        let mut longer = value.to_vec();
        longer.push(0);
        assert_eq!(decode_will(&longer), None);
    }

    #[test]
    fn will_keys_split_into_node_and_client() {
        let key = will_key("node.1", "client/é");
        let (node, client) = key.split_once('.').unwrap();
        assert_eq!(node_from_key(node).as_deref(), Some("node.1"));
        assert_eq!(node_from_key(client).as_deref(), Some("client/é"));
    }

    #[test]
    fn long_client_ids_are_hashed_into_valid_keys() {
        assert_eq!(client_kv_key("sensor-1"), "sensor-1");
        assert_eq!(client_kv_key("a.b"), "a=2Eb");
        let long = "é".repeat(2050);
        let key = client_kv_key(&long);
        assert!(key.len() <= crate::state::MAX_KEY && key.starts_with("=="));
        // What async-nats takes as a key, and no escaped id.
        assert!(
            key.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b))
        );
        assert_eq!(node_from_key(&key), None);
        assert_eq!(key, client_kv_key(&long));
        assert_ne!(key, client_kv_key(&"é".repeat(2051)));
        assert_eq!(client_from_kv_key(&key).as_deref(), Some(key.as_str()));
        let will = will_key("node", &long);
        assert_eq!(will.split_once('.'), Some(("node", key.as_str())));
    }

    #[test]
    fn protocol_lines_fit_with_room_for_the_rest() {
        assert!(fits_control_line(4096, 4096 - CONTROL_LINE_OVERHEAD));
        assert!(!fits_control_line(4096, 4097 - CONTROL_LINE_OVERHEAD));
        assert!(!fits_control_line(4096, usize::MAX));
    }

    #[test]
    fn dedupe_forgets_beyond_its_window() {
        let mut d = Dedupe::new(2);
        assert!(d.insert((1, 1)));
        assert!(!d.insert((1, 1)));
        assert!(d.insert((1, 2)));
        assert!(d.insert((1, 3)));
        assert!(d.insert((1, 1)), "forgotten");
        let mut off = Dedupe::new(0);
        assert!(off.insert((1, 1)) && off.insert((1, 1)));
    }

    #[test]
    fn queue_names_have_no_whitespace_nor_wildcards() {
        let f: SubscriptionFilter = "$share/my group/a b/#".parse().unwrap();
        let SubscriptionFilter::Shared(f) = f else {
            unreachable!()
        };
        let q = queue_name("fulmar", &f);
        assert_eq!(q, "fulmar.my%20group.a%20b/#");
        assert!(!q.contains([' ', '*', '>']));
    }
}
