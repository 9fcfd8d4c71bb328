//! [`MqttBridge`]: connections to other MQTT brokers that carry the topics
//! of their [`TopicRule`]s both ways.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fulmar_broker::{Bridge, BrokerError, BrokerHandle};
use fulmar_client::{
    Client, ConnectOptions, DropReason, Error as ClientError, Message, Messages, ProtocolVersion,
    PublishOutcome, QoS, Reconnect, RetainHandling, SubscribeProperties, Subscription,
    SubscriptionOptions, Will,
};
use fulmar_codec::{ConnAck, ConnectReasonCode, MqttString, Publish};
use fulmar_session::ApiError;
use fulmar_topic::{SubscriptionFilter, TopicName};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::rule::TopicRule;

/// How many messages a link has on their way to its remote broker at once:
/// below the client's hand-over queue (64), so that they keep their order,
/// and the most QoS 1/2 messages a bridge keeps in flight.
const WINDOW: usize = 60;

/// How long a link waits for its DISCONNECT to be written at shutdown.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One remote broker of an [`MqttBridge`]: how to connect to it and which
/// topics go which way.
///
/// The connection is a [`fulmar_client::Client`] with `options` (transport,
/// TLS, credentials, keep alive, session): give it a client identifier and a
/// session that outlives the connection (Clean Start 0 and a Session Expiry
/// Interval under 5.0, CleanSession 0 under 3.1.1) so that the remote broker
/// keeps the bridge's subscriptions and queues its QoS 1/2 messages while the
/// link is down.
#[derive(Clone, Debug)]
pub struct Remote {
    name: String,
    options: ConnectOptions,
    rules: Vec<TopicRule>,
    max_queued_messages: usize,
    max_queued_bytes: usize,
    try_private: bool,
    outgoing_retain: bool,
    queue_while_down: Option<QoS>,
    notification_topic: Option<String>,
    local_notifications: bool,
    remote_notifications: bool,
}

impl Remote {
    /// A remote broker named `name` (in logs and [`RemoteStats`]), reached
    /// with `options`, with no rules yet and room for 1000 messages on
    /// their way out.
    pub fn new(name: impl Into<String>, options: ConnectOptions) -> Self {
        Self {
            name: name.into(),
            options,
            rules: Vec::new(),
            max_queued_messages: 1000,
            max_queued_bytes: 16 << 20,
            try_private: true,
            outgoing_retain: true,
            queue_while_down: Some(QoS::AtMostOnce),
            notification_topic: None,
            local_notifications: true,
            remote_notifications: false,
        }
    }

    /// The topic the link's state (`1` up, `0` down, retained) is published
    /// on; default `$SYS/broker/connection/NAME/state`. mosquitto's default
    /// is `$SYS/broker/connection/CLIENT_ID/state` (its
    /// `notification_topic`).
    #[must_use]
    pub fn notification_topic(mut self, topic: impl Into<String>) -> Self {
        self.notification_topic = Some(topic.into());
        self
    }

    /// Publishes the link's state here (default on; off as mosquitto's
    /// `notifications false`, which publishes it nowhere): `1` once
    /// connected, `0` when the link is down, retained, at QoS 1.
    #[must_use]
    pub fn local_notifications(mut self, on: bool) -> Self {
        self.local_notifications = on;
        self
    }

    /// Also publishes the link's state on the remote broker (default off;
    /// mosquitto's `notifications`, on by default there): `1`, retained,
    /// once connected, and `0` as the connection's will (published by the
    /// remote when the link dies) and before a clean stop, so that the
    /// remote side sees whether this broker is connected. A remote that
    /// refuses the topic changes nothing else.
    #[must_use]
    pub fn remote_notifications(mut self, on: bool) -> Self {
        self.remote_notifications = on;
        self
    }

    /// Adds a topic rule. A message goes out once per remote however many
    /// rules match it (the first one maps it), and comes in by the first
    /// rule whose remote filter matches.
    #[must_use]
    pub fn rule(mut self, rule: TopicRule) -> Self {
        self.rules.push(rule);
        self
    }

    /// How many messages for the remote broker may wait while it is slow or
    /// unreachable (at least 1; default 1000, mosquitto's
    /// `max_queued_messages`). Beyond it, messages for it are dropped and
    /// counted in [`RemoteStats::dropped`]. Not counted in it: the at most
    /// 60 messages already handed to the connection (on their way, or
    /// waiting in the client while it reconnects) until the remote
    /// acknowledges them; up to `n` + 60 are held in all.
    #[must_use]
    pub fn max_queued_messages(mut self, n: usize) -> Self {
        self.max_queued_messages = n.max(1);
        self
    }

    /// How many payload bytes may wait for the remote broker (default 16
    /// MiB, as the broker's `max_queued_bytes` per connection). A message
    /// that would take the queue over it is dropped and counted, unless the
    /// queue is empty (so that one message larger than the bound still goes).
    #[must_use]
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued_bytes = bytes;
        self
    }

    /// Whether to tell a 3.1.1 remote broker that this client is a bridge
    /// (default on; mosquitto's `try_private`, see
    /// [`ConnectOptions::bridge`]): mosquitto and fulmar then send none of
    /// the bridge's own messages back. A remote that refuses it (CONNACK
    /// Unsupported Protocol Version) is connected to again at once without
    /// it. Until a first connection is made with it, three attempts in a
    /// row that the remote closes before its CONNACK are followed by one
    /// without it (and one closed without it by one with it again); a
    /// connection made without it stays without it.
    /// Under 5.0 the subscriptions' No Local does the same, and the bit is
    /// not sent.
    #[must_use]
    pub fn try_private(mut self, on: bool) -> Self {
        self.try_private = on;
        self
    }

    /// Whether messages keep their retain flag on their way to the remote
    /// broker (default on; mosquitto's `bridge_outgoing_retain`, for a
    /// remote that takes no retained messages and cannot say so under
    /// 3.1.1). Off, they go as the remote's CONNACK saying Retain Available
    /// 0 makes them go: without the flag, and the retained messages here
    /// are not pushed to the remote at each connection. The link's state on
    /// the remote ([`remote_notifications`](Self::remote_notifications))
    /// stays retained.
    #[must_use]
    pub fn outgoing_retain(mut self, on: bool) -> Self {
        self.outgoing_retain = on;
        self
    }

    /// The lowest QoS of the messages that wait for the remote broker while
    /// the link is down (default QoS 0: all of them); `None`: none wait.
    /// Those below it are dropped, not counted, as a broker drops them for
    /// a session away: mosquitto's bridge keeps QoS 1/2 ones with
    /// `cleansession false` and none with `cleansession true`. What was
    /// queued while the link was up still goes.
    #[must_use]
    pub fn queue_while_down(mut self, min: Option<QoS>) -> Self {
        self.queue_while_down = min;
        self
    }

    /// The name given to [`new`](Self::new).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The connect options given to [`new`](Self::new): where the remote is
    /// ([`ConnectOptions::addresses`], fallbacks included) and how to reach it.
    #[must_use]
    pub fn options(&self) -> &ConnectOptions {
        &self.options
    }
}

/// What [`MqttBridge::new`] refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// A remote without topic rules would carry nothing.
    #[error("bridge {0:?}: no topic rule")]
    NoRules(String),
    /// Two remotes with one name.
    #[error("two bridges are named {0:?}")]
    DuplicateName(String),
}

/// Counters of one remote broker of an [`MqttBridge`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteStats {
    /// The remote's name.
    pub name: String,
    /// Whether the connection to the remote is up (as mosquitto's state
    /// topic says), whether or not every filter of the `In` rules is
    /// subscribed: see [`unsubscribed_filters`](Self::unsubscribed_filters).
    pub connected: bool,
    /// Filters of the `In` rules not subscribed at the moment: refused by
    /// the remote (at first, or when it lost the session and the client
    /// subscribed again) and waiting to be asked for again, with backoff;
    /// refused by the client itself (the remote's CONNACK said it has no
    /// wildcard or shared subscriptions), asked for again at the next
    /// connection; or on their way in a SUBSCRIBE. 0 once all are granted.
    pub unsubscribed_filters: usize,
    /// Times a filter of the `In` rules was refused (each SUBACK failure
    /// code, each filter the client could not send).
    pub filters_refused: u64,
    /// Times the link came up: the first connection, each reconnection,
    /// whether the client made it by itself or the bridge made a new one.
    pub connects: u64,
    /// Messages published to the remote broker (QoS 0 written, QoS 1/2
    /// acknowledged).
    pub sent: u64,
    /// Messages from the remote broker routed here.
    pub received: u64,
    /// Messages for the remote broker that the remote refused (a PUBACK or
    /// PUBREC with an error reason code: not authorized, quota, ...).
    pub refused: u64,
    /// Messages lost: the queue to the remote was full, the connection was
    /// lost while a QoS 0 one was being written (the client reconnecting by
    /// itself), the bridge shut down with them on their way, or their topic
    /// could not be mapped. What a client that closes (reconnecting off)
    /// left unsettled, QoS 0 ones it had not written included, is not
    /// counted: the next client sends it; nor are the retained messages
    /// left out of the push at a connection for want of room (see
    /// [`MqttBridge`] on retained messages).
    pub dropped: u64,
}

/// One remote's side of the bridge.
struct Link {
    name: String,
    /// Where the link's state is published (see [`Remote::notification_topic`]).
    state_topic: String,
    /// [`Remote::local_notifications`].
    local_notifications: bool,
    /// [`Remote::remote_notifications`].
    remote_notifications: bool,
    options: ConnectOptions,
    rules: Vec<TopicRule>,
    try_private: bool,
    /// [`Remote::outgoing_retain`].
    outgoing_retain: bool,
    /// [`Remote::queue_while_down`].
    queue_while_down: Option<QoS>,
    max_queued_bytes: usize,
    /// Payload bytes in the queue to the remote.
    queued_bytes: AtomicUsize,
    /// The retained messages in the queue to the remote, by remote topic:
    /// the push of retained messages at each connection leaves those
    /// topics out (the queued one goes, and is at least as new). Taken
    /// around queueing a retained message, so that a push copy never goes
    /// behind a newer one queued meanwhile.
    queued_retained: Mutex<HashMap<MqttString, usize>>,
    /// Messages for the remote, with the time they were queued (it counts
    /// against their Message Expiry Interval).
    tx: mpsc::Sender<(Publish, Instant)>,
    /// Taken by [`MqttBridge::attach`].
    rx: Mutex<Option<mpsc::Receiver<(Publish, Instant)>>>,
    connected: AtomicBool,
    /// [`RemoteStats::unsubscribed_filters`].
    unsubscribed: AtomicUsize,
    filters_refused: AtomicU64,
    connects: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
    /// What was lost or refused since the last warning about it.
    losses: Mutex<Losses>,
}

/// How often, at most, a link warns that messages are lost or refused.
const LOSS_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Messages dropped or refused since the last warning, and when that was:
/// one line at most every [`LOSS_WARNING_EVERY`] per link (as mosquitto's
/// "Outgoing messages are being dropped"); what is left when losses stop is
/// warned about by [`flush`](Self::flush), called every
/// [`LOSS_WARNING_EVERY`].
#[derive(Debug, Default)]
struct Losses {
    dropped: u64,
    refused: u64,
    /// Why the last one was lost.
    last: &'static str,
    warned_at: Option<Instant>,
}

impl Losses {
    /// Counts `n` more messages dropped (or `refused`, for `why`) at
    /// `now`; the counts to warn about (dropped, refused), reset, when no
    /// warning was made in the last [`LOSS_WARNING_EVERY`].
    fn note(
        &mut self,
        refused: bool,
        n: u64,
        why: &'static str,
        now: Instant,
    ) -> Option<(u64, u64)> {
        if refused {
            self.refused = self.refused.saturating_add(n);
        } else {
            self.dropped = self.dropped.saturating_add(n);
        }
        self.last = why;
        self.flush(now, false)
    }

    /// The counts not warned about yet, reset, once no warning was made in
    /// the last [`LOSS_WARNING_EVERY`] (or at once, `force`d: the link's
    /// task ends); `None` when there are none, or a warning was made since.
    fn flush(&mut self, now: Instant, force: bool) -> Option<(u64, u64)> {
        if (self.dropped, self.refused) == (0, 0)
            || (!force
                && self
                    .warned_at
                    .is_some_and(|at| now.saturating_duration_since(at) < LOSS_WARNING_EVERY))
        {
            return None;
        }
        self.warned_at = Some(now);
        Some((
            std::mem::take(&mut self.dropped),
            std::mem::take(&mut self.refused),
        ))
    }
}

impl Link {
    /// Counts a message lost (`why`) in [`RemoteStats::dropped`], with a
    /// warning at most every [`LOSS_WARNING_EVERY`].
    fn drop_one(&self, why: &'static str) {
        self.drop_many(1, why);
    }

    /// Counts `n` messages lost, as [`drop_one`](Self::drop_one).
    fn drop_many(&self, n: u64, why: &'static str) {
        if n == 0 {
            return;
        }
        self.dropped.fetch_add(n, Ordering::Relaxed);
        self.lost(false, n, why);
    }

    /// Counts a message the remote refused, as [`drop_one`](Self::drop_one).
    fn refuse_one(&self, why: &'static str) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.lost(true, 1, why);
    }

    fn lost(&self, refused: bool, n: u64, why: &'static str) {
        let counts = self
            .losses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .note(refused, n, why, Instant::now());
        if let Some(counts) = counts {
            self.warn_losses(counts, why);
        }
    }

    /// Warns about the losses not warned about yet, once
    /// [`LOSS_WARNING_EVERY`] passed since the last warning (at once when
    /// `force`d): the end of a burst is told too, not only when more are
    /// lost.
    fn flush_losses(&self, force: bool) {
        let (counts, why) = {
            let mut losses = self.losses.lock().unwrap_or_else(PoisonError::into_inner);
            (losses.flush(Instant::now(), force), losses.last)
        };
        if let Some(counts) = counts {
            self.warn_losses(counts, why);
        }
    }

    fn warn_losses(&self, (dropped, refused): (u64, u64), why: &'static str) {
        tracing::warn!(
            bridge = %self.name,
            dropped,
            refused,
            last = why,
            "messages of the bridge are being dropped or refused (counts since the last such line, at most one every 10 s)"
        );
    }

    /// Whether the link speaks MQTT 5.0 (it can carry the relay mark).
    fn v5(&self) -> bool {
        self.options.version() == ProtocolVersion::V5
    }

    /// Records whether the connection is up (whatever filters were
    /// refused) and, when that changed,
    /// publishes it here, retained, at QoS 1, on
    /// `$SYS/broker/connection/NAME/state` (`1` or `0`, as mosquitto does).
    fn set_connected(&self, broker: &BrokerHandle, up: bool) {
        if self.connected.swap(up, Ordering::Relaxed) == up {
            return;
        }
        if up {
            self.connects.fetch_add(1, Ordering::Relaxed);
        }
        self.publish_state(broker, up);
    }

    /// Publishes the link's state (see [`set_connected`](Self::set_connected)).
    fn publish_state(&self, broker: &BrokerHandle, up: bool) {
        if !self.local_notifications {
            return;
        }
        let Ok(topic) = MqttString::try_from_string(self.state_topic.clone()) else {
            return;
        };
        let mut state = Publish::new(topic, if up { "1" } else { "0" }.into());
        state.retain = true;
        // As mosquitto's bridge queues it: a QoS 1 subscriber with a
        // session gets it while away.
        state.qos = QoS::AtLeastOnce;
        // Injected, as a message from elsewhere: it stays on this broker
        // (another bridge, a cluster, would carry it to brokers whose own
        // link to this remote is another one).
        if let Err(error) = broker.inject(&state) {
            tracing::debug!(bridge = %self.name, %error, "cannot publish the bridge's state");
        }
    }
}

struct Inner {
    links: Vec<Link>,
    /// This bridge's mark on what it relays from one remote to another:
    /// the value of a [`RELAY_MARK`] user property, drawn when it is made.
    mark: MqttString,
    shutdown: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Bridges a fulmar broker to other MQTT brokers, as mosquitto's bridges
/// do: each [`Remote`] is a client connection to another broker that
/// publishes there what clients publish here (rules [`Out`]) and brings
/// here what is published there (rules [`In`]), with topic prefixes
/// swapped on the way.
///
/// - Hand [`bridge`](Self::bridge) to
///   [`BrokerBuilder::bridge`](fulmar_broker::BrokerBuilder::bridge), start
///   the broker, then [`attach`](Self::attach) the handle: each remote gets a
///   task that connects (and connects again, with backoff, whenever the
///   connection is lost), subscribes to the filters of its `In` rules and
///   forwards. What waits for the remote when it connects (published
///   here while the link was down) is sent, and acknowledged, before it
///   subscribes: with a rule both ways, a retained value published here
///   meanwhile is newer than the one the remote sends at the SUBSCRIBE,
///   which would otherwise overwrite it here. The same holds before each
///   SUBSCRIBE the bridge makes again (for filters refused, or a SUBSCRIBE
///   lost with the connection), but not for the one the client makes by
///   itself when it reconnects and the remote lost the session: that one
///   goes out with the CONNACK, before what waits here, so the remote's
///   older retained value may then overwrite here one published while the
///   link was down. Filters the remote refuses, or refuses again
///   after it lost the session (every filter of a subscription, or some of
///   them: see [`Subscription::refused`](fulmar_client::Subscription::refused)),
///   are asked for again with backoff (200 ms doubling up to 30 s); the
///   link shows up meanwhile (in [`stats`](Self::stats) and `$SYS`, as
///   mosquitto's does), carries what it can, and counts the filters not
///   subscribed apart ([`RemoteStats::unsubscribed_filters`],
///   [`RemoteStats::filters_refused`]). A filter the client itself cannot
///   send on this connection (a wildcard filter to a 5.0 remote whose
///   CONNACK said Wildcard Subscription Available 0, a shared one without
///   Shared Subscription Available) is refused with a warning naming it,
///   the other filters are subscribed, and it is asked for again only at
///   the next connection. A filter granted later has
///   a subscription stream of its own: a message matching it and an
///   overlapping filter granted earlier may come in twice, and so may one
///   matching a filter refused in part after a lost session and granted
///   later (the client's stream that was refused it still routes it).
/// - No endless loops through the bridge: a message brought in from a
///   remote is routed to this broker's subscribers, never back out to the
///   remote it came from, and on to the other remotes (their out rules)
///   only from an MQTT 5.0 link to other 5.0 links. Such a relayed copy
///   carries the marks it came with plus a user property
///   `fulmar-bridge-relay` whose value names this bridge (drawn when it is
///   made); a message that comes in with this bridge's own mark went round
///   (through two links to one broker, or through another fulmar bridge
///   linked to the same remotes) and is dropped, one that comes in with 8
///   marks is delivered here but relayed no further, and the marks are
///   removed from the copy delivered here. So a message crosses from one
///   remote to another at most once through this bridge, two bridges
///   between the same remotes do not pass it to and fro, and what it
///   publishes to its remotes comes back here a bounded number of times,
///   whatever the links (a 3.1.1 link cannot carry the mark: what it brings
///   in stays here, and nothing is relayed onto a 3.1.1 link; mosquitto
///   relays there too, without any protection: [`new`](Self::new) warns
///   when an `In` rule of one link overlaps an `Out` rule of another and
///   either is 3.1.1). Under MQTT 5.0 the
///   remote subscriptions set No Local, so a remote does not send back on
///   the same link what the bridge published there, and Retain As
///   Published, so retained messages stay retained. Under 3.1.1 the same
///   comes from announcing the bridge ([`Remote::try_private`], on by
///   default, which mosquitto and fulmar understand); without it, a topic
///   that goes both ways comes back once on that link, and is delivered
///   here again. A message published here that comes back through another
///   link (one link `out`, another `in` on the same remote broker) is
///   delivered here again too, once per such link. Loops through other
///   brokers' own bridges are theirs to prevent.
/// - Pipelined: up to the remote's Receive Maximum, the client's
///   [`max_inflight`](fulmar_client::ConnectOptions::max_inflight) and 60
///   QoS 1/2 messages are on their way to a remote at once, in order.
/// - Observable: [`stats`](Self::stats) counts per remote, and the state of
///   each link is published here, retained, on
///   `$SYS/broker/connection/NAME/state` (`1` up, `0` down), as mosquitto
///   does. Messages for the remote that are dropped (queue full, expired,
///   lost) or refused by it are logged at WARN, one line at most every
///   10 s per remote with the counts since the last one (as mosquitto's
///   "Outgoing messages are being dropped").
/// - Downgraded, not dropped: a message above the remote's Maximum QoS
///   (MQTT 5.0 CONNACK) goes at that QoS, and one with the retain flag to a
///   remote that said Retain Available 0 goes without the flag (mosquitto
///   does the same). The limits are those of the current connection's
///   CONNACK ([`Client::connack`](fulmar_client::Client::connack)), taken
///   each time the link comes up: a reconnection that allows more again
///   lifts them. Messages handed to the connection before the bridge saw a
///   reconnection that lowered them (at most 60: in flight, or held by the
///   client while it reconnected) and that the client then refuses go
///   again, downgraded, each under its place in the order (a SUBSCRIBE
///   due behind it still waits for it), but on the wire behind those of
///   them the client took: among those at most 60, the refused ones arrive
///   after the others. What is queued later goes downgraded, in order.
/// - Retained messages: each time the link connects (the first time, each
///   reconnection), the retained messages here that its `Out` rules match
///   are queued for the remote, retained, mapped, at most as many as the
///   queue has room for (mosquitto's bridge does the same; those left out
///   are named in a warning, not counted in [`RemoteStats::dropped`]: the
///   broker stops looking at the first one beyond the room). Not to a
///   remote whose CONNACK said Retain Available 0 (they would reach its
///   subscribers as live messages with old values). Not those of `Both`
///   rules, nor those on a topic an `In` rule of this link brings here:
///   what is retained here may be a value the remote sent and has since
///   replaced. Not those on a topic an `In` rule of another link brings
///   here when either link is 3.1.1 (whether this broker's retained value
///   came over that link or was published here is not recorded: the topic
///   is left out either way); between two 5.0 links they go, without the
///   relay mark. Not a topic with a retained message already queued for
///   the remote or on its way (published here while the link was down, or
///   while the push was being read): that one goes, and a push copy never
///   goes behind a newer value.
/// - Bounded: at most [`Remote::max_queued_messages`] messages and
///   [`Remote::max_queued_bytes`] payload bytes wait for a remote, then
///   they are dropped and counted, plus the at most 60 already handed to
///   the connection (in flight, or held by the client while it
///   reconnects). QoS 1/2 messages on their way when a
///   connection drops are sent again when the session resumes, in order;
///   if the remote lost the session, they are published again, after those
///   already on their way. A connection lost before the SUBACK of the
///   bridge's subscriptions is no different: the client reconnects by
///   itself and the bridge subscribes again on it. A client that closes
///   (reconnecting is off in its options) leaves what it had on its way
///   (QoS 1/2 messages not acknowledged, QoS 0 ones it had not written) to
///   the next one, which resumes the remote session and sends it first, in
///   order. That client starts with no session state of its own and
///   numbers its packets anew: a QoS 1/2 message the remote had received
///   may arrive twice, and, while the remote still holds QoS 2 packet
///   identifiers of the old client awaiting their PUBREL, a new QoS 2
///   message that reuses one of them is taken by the remote for a
///   duplicate of the old one and not delivered there (lost, though
///   counted as sent). What still waits here when the bridge shuts down is
///   not kept.
/// - Sessions: with a session the remote keeps, what the remote queued for
///   the bridge while it was away (the process restarted, the link was
///   down) arrives first when it connects again, all of it, before it
///   subscribes anew (see [`Client::connect_with_messages`]).
/// - With a cluster (fulmar-cluster on the same broker): what one bridges
///   to the broker is not handed to the other, so each node that should
///   reach the remote needs its own bridge, with its own client identifier
///   (two nodes with one identifier would take the session from each other
///   on the remote).
///
/// [`Out`]: crate::Direction::Out
/// [`Client::connect_with_messages`]: fulmar_client::Client::connect_with_messages
/// [`In`]: crate::Direction::In
///
/// # Example
///
/// Two brokers in one process, the first forwarding `sensors/#` to the
/// second under `site-7/`:
///
/// ```
/// use fulmar_bridge::{Direction, MqttBridge, Remote, TopicRule};
/// use fulmar_broker::Broker;
/// use fulmar_client::{ConnectOptions, QoS};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let cloud = Broker::builder().tcp_listener("127.0.0.1:0").start().await?;
/// let port = cloud.local_addrs()[0].port();
/// let mut inbox = cloud.subscribe("site-7/#")?;
///
/// let rule = TopicRule::new("sensors/#", Direction::Out)?
///     .qos(QoS::AtLeastOnce)
///     .prefixes("", "site-7/")?;
/// let options = ConnectOptions::new("127.0.0.1", port).client_id("site-7");
/// let bridge = MqttBridge::new([Remote::new("cloud", options).rule(rule)])?;
/// let edge = Broker::builder().bridge(bridge.bridge()).start().await?;
/// bridge.attach(&edge);
/// bridge.wait_connected().await;
///
/// edge.publish("sensors/hall/temp", "21.5", QoS::AtLeastOnce, false)?;
/// let message = inbox.recv().await.expect("forwarded");
/// assert_eq!((&*message.topic, &message.payload[..]), ("site-7/sensors/hall/temp", &b"21.5"[..]));
///
/// bridge.shutdown().await;
/// edge.shutdown().await;
/// cloud.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MqttBridge {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MqttBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.inner.links.iter().map(|l| &l.name).collect();
        f.debug_struct("MqttBridge")
            .field("remotes", &names)
            .finish_non_exhaustive()
    }
}

impl MqttBridge {
    /// A bridge to `remotes`; nothing connects before
    /// [`attach`](Self::attach).
    ///
    /// # Errors
    /// [`BridgeError::NoRules`], [`BridgeError::DuplicateName`].
    pub fn new(remotes: impl IntoIterator<Item = Remote>) -> Result<Self, BridgeError> {
        let mut links: Vec<Link> = Vec::new();
        for remote in remotes {
            if remote.rules.is_empty() {
                return Err(BridgeError::NoRules(remote.name));
            }
            if links.iter().any(|l| l.name == remote.name) {
                return Err(BridgeError::DuplicateName(remote.name));
            }
            let (tx, rx) = mpsc::channel(remote.max_queued_messages);
            let state_topic = remote
                .notification_topic
                .unwrap_or_else(|| format!("$SYS/broker/connection/{}/state", remote.name));
            let mut options = remote.options;
            if remote.remote_notifications
                && let Ok(topic) = MqttString::try_from_string(state_topic.clone())
            {
                // The remote says "down" when the link dies.
                let mut will = Will::new(topic, "0".into());
                will.retain = true;
                will.qos = QoS::AtLeastOnce;
                options = options.will(will);
            }
            links.push(Link {
                name: remote.name,
                state_topic,
                local_notifications: remote.local_notifications,
                remote_notifications: remote.remote_notifications,
                options,
                rules: remote.rules,
                try_private: remote.try_private,
                outgoing_retain: remote.outgoing_retain,
                queue_while_down: remote.queue_while_down,
                max_queued_bytes: remote.max_queued_bytes,
                queued_bytes: AtomicUsize::new(0),
                queued_retained: Mutex::new(HashMap::new()),
                tx,
                rx: Mutex::new(Some(rx)),
                connected: AtomicBool::new(false),
                unsubscribed: AtomicUsize::new(0),
                filters_refused: AtomicU64::new(0),
                connects: AtomicU64::new(0),
                sent: AtomicU64::new(0),
                received: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                losses: Mutex::new(Losses::default()),
            });
        }
        warn_unrelayed(&links);
        Ok(Self {
            inner: Arc::new(Inner {
                links,
                mark: new_mark(),
                shutdown: CancellationToken::new(),
                tasks: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The seam to give [`BrokerBuilder::bridge`](fulmar_broker::BrokerBuilder::bridge):
    /// through it the broker hands over what its clients publish. Messages
    /// for the remotes wait in their queues until [`attach`](Self::attach).
    #[must_use]
    pub fn bridge(&self) -> Arc<dyn Bridge> {
        Arc::new(Seam(self.inner.clone()))
    }

    /// Starts a task per remote (in the current tokio runtime) that
    /// connects to it and forwards both ways, routing what comes in through
    /// `broker`. A second call does nothing.
    pub fn attach(&self, broker: &BrokerHandle) {
        let mut tasks = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (index, link) in self.inner.links.iter().enumerate() {
            let rx = link
                .rx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(rx) = rx {
                tasks.push(tokio::spawn(run(
                    self.inner.clone(),
                    index,
                    broker.clone(),
                    rx,
                )));
            }
        }
    }

    /// The counters of each remote, in the order given to
    /// [`new`](Self::new).
    #[must_use]
    pub fn stats(&self) -> Vec<RemoteStats> {
        self.inner
            .links
            .iter()
            .map(|l| RemoteStats {
                name: l.name.clone(),
                connected: l.connected.load(Ordering::Relaxed),
                unsubscribed_filters: l.unsubscribed.load(Ordering::Relaxed),
                filters_refused: l.filters_refused.load(Ordering::Relaxed),
                connects: l.connects.load(Ordering::Relaxed),
                sent: l.sent.load(Ordering::Relaxed),
                received: l.received.load(Ordering::Relaxed),
                refused: l.refused.load(Ordering::Relaxed),
                dropped: l.dropped.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Waits until every remote is connected and subscribed to the
    /// filters of its `In` rules (for tests and start-up scripts; it waits
    /// for ever for a remote that cannot be reached, and for one that is
    /// connected but refuses a filter, or cannot take it: a wildcard or
    /// shared filter to a remote without them, though
    /// [`RemoteStats::connected`] then says `true`).
    pub async fn wait_connected(&self) {
        while !self.inner.links.iter().all(|l| {
            l.connected.load(Ordering::Relaxed) && l.unsubscribed.load(Ordering::Relaxed) == 0
        }) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Disconnects from every remote (a normal DISCONNECT, so that no will
    /// is published there) and waits for the tasks to end. Messages still
    /// queued for a remote are not sent.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let tasks = std::mem::take(
            &mut *self
                .inner
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Warns at start, for each `In` rule of a link whose topics here an `Out`
/// rule of another link matches, when one of the two links is not MQTT 5.0:
/// what comes in over the first is not sent out over the second (see
/// [`MqttBridge`] on loops), where mosquitto's bridge would relay it.
fn warn_unrelayed(links: &[Link]) {
    let filter = |rule: &TopicRule| {
        rule.local_filter()
            .parse::<fulmar_topic::TopicFilter>()
            .ok()
    };
    for (i, from) in links.iter().enumerate() {
        for inbound in from.rules.iter().filter(|r| r.direction().is_in()) {
            let Some(a) = filter(inbound) else {
                continue;
            };
            for (j, to) in links.iter().enumerate() {
                if i == j || (from.v5() && to.v5()) {
                    continue;
                }
                let out = to
                    .rules
                    .iter()
                    .filter(|r| r.direction().is_out())
                    .find(|r| filter(r).is_some_and(|b| a.overlaps(&b)));
                if let Some(out) = out {
                    tracing::warn!(
                        from = %from.name,
                        to = %to.name,
                        in_topics = inbound.local_filter(),
                        out_topics = out.local_filter(),
                        "messages that come in over the first bridge are not sent out over the second: relaying between bridges needs MQTT 5.0 on both links (its loop protection rides on a user property); mosquitto would relay them"
                    );
                }
            }
        }
    }
}

/// What the broker holds: hands over the messages its clients publish.
struct Seam(Arc<Inner>);

impl Bridge for Seam {
    fn message(&self, topic: &TopicName, publish: &Publish) {
        self.0.forward(topic, publish, None);
    }
}

impl Inner {
    /// Queues `publish` (on `topic` here) for every remote with an out rule
    /// that matches it, except the one it came from. One brought in from a
    /// remote (`from`) goes only from an MQTT 5.0 link to the other 5.0
    /// ones, with this bridge's [`RELAY_MARK`]: see [`MqttBridge`] on loops.
    fn forward(&self, topic: &TopicName, publish: &Publish, from: Option<usize>) {
        let relayed = from.is_some();
        if let Some(from) = from
            && self.links.get(from).is_none_or(|l| !l.v5())
        {
            return;
        }
        if relayed
            && publish
                .properties
                .user_properties
                .iter()
                .filter(|(key, _)| key.as_str() == RELAY_MARK)
                .count()
                >= MAX_MARKS
        {
            tracing::debug!(topic = %topic, "a message relayed by {MAX_MARKS} bridges already goes no further");
            return;
        }
        for (index, link) in self.links.iter().enumerate() {
            if from == Some(index) || (relayed && !link.v5()) {
                continue;
            }
            let Some((remote, qos)) = link.out_route(topic) else {
                continue;
            };
            let topic = if remote == topic.as_str() {
                publish.topic.clone()
            } else {
                match MqttString::try_from_string(remote) {
                    Ok(topic) => topic,
                    Err(_) => {
                        link.drop_one("its topic cannot be mapped");
                        continue;
                    }
                }
            };
            let mut out = publish.clone();
            out.topic = topic;
            out.qos = out.qos.min(qos);
            clean(&mut out);
            if !link.connected.load(Ordering::Relaxed)
                && link.queue_while_down.is_none_or(|min| out.qos < min)
            {
                tracing::debug!(bridge = %link.name, topic = %out.topic, "the link is down: not kept (queue_while_down)");
                continue;
            }
            if relayed {
                out.properties
                    .user_properties
                    .push((MqttString::from(RELAY_MARK), self.mark.clone()));
            }
            link.enqueue(out);
        }
    }
}

impl Link {
    /// What `connack` allows on this link: without the retain flag when
    /// [`Remote::outgoing_retain`] is off, whatever the remote announced.
    fn caps(&self, connack: &ConnAck) -> Caps {
        let mut caps = Caps::of(connack);
        caps.retain &= self.outgoing_retain;
        caps
    }

    /// Where `topic` here goes on the remote, and at most at what QoS: the
    /// topic mapped by the first `Out` rule that matches it, at the highest
    /// QoS of all those that match (the rules are the bridge's
    /// subscriptions here, and a message that matches overlapping
    /// subscriptions goes once, at the highest of their QoS, as mosquitto's
    /// bridge sends it); `None` when no `Out` rule matches.
    fn out_route(&self, topic: &TopicName) -> Option<(String, QoS)> {
        let mut out = self.rules.iter().filter(|r| r.direction().is_out());
        let remote = out
            .by_ref()
            .find_map(|r| r.to_remote(topic).map(|t| (t, r.max_qos())))?;
        Some(out.fold(remote, |(t, qos), r| {
            if r.to_remote(topic).is_some() {
                (t, qos.max(r.max_qos()))
            } else {
                (t, qos)
            }
        }))
    }

    /// Queues `out` for the remote, within [`Remote::max_queued_bytes`] and
    /// [`Remote::max_queued_messages`]; dropped and counted beyond.
    fn enqueue(&self, out: Publish) {
        if out.retain {
            let mut queued = self
                .queued_retained
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let topic = out.topic.clone();
            if self.try_enqueue(out) {
                let n = queued.entry(topic).or_insert(0);
                *n = n.saturating_add(1);
            }
        } else {
            self.try_enqueue(out);
        }
    }

    /// [`enqueue`](Self::enqueue) without the count of retained messages;
    /// whether `out` was queued.
    fn try_enqueue(&self, out: Publish) -> bool {
        let size = out.payload.len();
        let before = self.queued_bytes.fetch_add(size, Ordering::Relaxed);
        if before > 0 && before.saturating_add(size) > self.max_queued_bytes {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            self.drop_one("max_queued_bytes reached");
            return false;
        }
        if self.tx.try_send((out, Instant::now())).is_err() {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            self.drop_one("max_queued_messages reached");
            return false;
        }
        true
    }

    /// `publish` left the queue (to be sent, or expired).
    fn dequeued(&self, publish: &Publish) {
        self.queued_bytes
            .fetch_sub(publish.payload.len(), Ordering::Relaxed);
        if publish.retain {
            let mut queued = self
                .queued_retained
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = queued.get_mut(&publish.topic) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    queued.remove(&publish.topic);
                }
            }
        }
    }
}

impl Inner {
    /// Queues for the remote of link `index` the retained messages of this
    /// broker that the link's `Out` rules match, retained, as mosquitto's
    /// bridge does each time it connects: at most as many as the queue has
    /// room for (the others are left out with a warning, not counted: the
    /// broker stops looking at the first one beyond). A message goes once,
    /// mapped by the first rule out that matches it (at the highest QoS of
    /// those that match), as [`Inner::forward`]
    /// maps it. Left out:
    /// - all of them when the remote has no retained messages (`caps`): they
    ///   would reach its subscribers as live messages with old values;
    /// - topics of a `Both` rule, or of an `In` rule of this link: what is
    ///   retained here may be what the remote sent, since replaced there;
    /// - topics of an `In` rule of another link when either link is 3.1.1:
    ///   what comes in over a link that cannot carry the relay mark is not
    ///   sent out over another, nor onto one (see [`MqttBridge`] on loops);
    /// - topics with a retained message queued for the remote, or on its
    ///   way (`on_its_way`, remote topics): that one goes, and is at least
    ///   as new (a message published here after the broker was asked is
    ///   queued by [`Inner::forward`] under the same lock as the check, so
    ///   the push copy never goes behind a newer value).
    fn push_retained(
        &self,
        index: usize,
        broker: &BrokerHandle,
        caps: Caps,
        on_its_way: &HashSet<MqttString>,
    ) {
        let Some(link) = self.links.get(index) else {
            return;
        };
        if !caps.retain {
            return;
        }
        // Whether an `In` rule brings `local` here in a way that must not
        // go back out on this link.
        let brought_in = |local: &TopicName| {
            self.links.iter().enumerate().any(|(i, other)| {
                (i == index || !other.v5() || !link.v5())
                    && other
                        .rules
                        .iter()
                        .any(|r| r.direction().is_in() && r.to_remote(local).is_some())
            })
        };
        for (at, rule) in link.rules.iter().enumerate() {
            if rule.direction() != crate::Direction::Out {
                continue;
            }
            let Ok(filter) = rule.local_filter().parse::<fulmar_topic::TopicFilter>() else {
                continue;
            };
            // This rule's, by the first rule out that matches.
            let wanted = |local: &TopicName| {
                link.rules
                    .iter()
                    .position(|r| r.direction().is_out() && r.to_remote(local).is_some())
                    == Some(at)
                    && !brought_in(local)
            };
            let room = link.tx.capacity();
            let (found, more) = broker.retained_matching_where(&filter, room, wanted);
            if more {
                tracing::warn!(bridge = %link.name, filter = %filter.as_str(), "more retained messages than the queue to the remote has room for (max_queued_messages): some are not sent");
            }
            for mut out in found {
                let Ok(local) = TopicName::from_bytes(out.topic.clone().into_bytes()) else {
                    continue;
                };
                let Some(remote) = rule
                    .to_remote(&local)
                    .and_then(|t| MqttString::try_from_string(t).ok())
                else {
                    link.drop_one("its topic cannot be mapped");
                    continue;
                };
                out.topic = remote;
                // The highest QoS of the out rules that match it, as forward sends it.
                let qos = link
                    .out_route(&local)
                    .map_or_else(|| rule.max_qos(), |(_, qos)| qos);
                out.qos = out.qos.min(qos);
                out.retain = true;
                clean(&mut out);
                if on_its_way.contains(&out.topic) {
                    continue;
                }
                let mut queued = link
                    .queued_retained
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if queued.contains_key(&out.topic) {
                    continue;
                }
                let topic = out.topic.clone();
                if link.try_enqueue(out) {
                    queued.insert(topic, 1);
                }
            }
        }
    }
}

/// The user property that marks a message one bridge relayed from a remote
/// to another (MQTT 5.0); its value names the bridge.
const RELAY_MARK: &str = "fulmar-bridge-relay";

/// A message brought in with this many relay marks (bridges it went
/// through) is delivered here but relayed no further.
const MAX_MARKS: usize = 8;

/// A mark for a new bridge: 16 hexadecimal digits, random (std's hasher
/// keys are drawn from the system's random source).
fn new_mark() -> MqttString {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    MqttString::from(format!("{random:016x}"))
}

/// A message that waited for the remote since `queued_at`, its Message
/// Expiry Interval reduced by that time (MQTT 5.0 3.3.2.3.3); `None` once it
/// expired. The wait was not counted: a message that expired while the
/// remote was away was still sent, with its whole interval.
fn aged(mut publish: Publish, queued_at: Instant) -> Option<Publish> {
    if let Some(interval) = publish.properties.message_expiry_interval {
        let waited = queued_at.elapsed().as_secs();
        publish.properties.message_expiry_interval =
            Some(fulmar_session::message_expiry_left(interval, waited)?);
    }
    Some(publish)
}

/// What a forwarded message must not carry over from its last hop.
fn clean(publish: &mut Publish) {
    publish.dup = false;
    publish.packet_id = None;
    publish.properties.topic_alias = None;
    publish.properties.subscription_identifiers.clear();
}

/// How a connection to a remote ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    /// The bridge or the broker shuts down.
    Shutdown,
    /// The client closed (it will not reconnect by itself): connect anew.
    Lost,
}

/// A connection that stayed up this long resets the reconnect backoff; one
/// that drops sooner (a remote that takes the CONNECT and then closes on the
/// SUBSCRIBE) backs off further.
const STABLE: Duration = Duration::from_secs(10);

/// What the bridge bit (3.1.1 `try_private`) does for the next attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Private {
    /// Not used: off, 5.0, or refused by the remote.
    Off,
    /// Sent; `settled` once a connection was made with it; `closes`:
    /// attempts with it in a row that the remote closed before a CONNACK.
    On { settled: bool, closes: u8 },
    /// Not sent for now: [`CLOSES`] attempts in a row with it were closed
    /// before their CONNACK, which a broker that does not know the bit may
    /// do (and a proxy whose backend is down, hence more than one).
    Suspended,
}

/// Attempts with the bridge bit closed before a CONNACK, in a row, before
/// one is made without it.
const CLOSES: u8 = 3;

/// Whether a CONNECT failed after the transport was up (the remote closed
/// the connection or sent garbage), not for want of a connection.
fn closed_during_handshake(error: &ClientError) -> bool {
    use std::io::ErrorKind;
    match error {
        ClientError::Io(e) => matches!(
            e.kind(),
            ErrorKind::UnexpectedEof
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::InvalidData
        ),
        ClientError::Closed => true,
        _ => false,
    }
}

/// A remote's task: [`connect_and_serve`], and the warnings about losses
/// not warned about yet every [`LOSS_WARNING_EVERY`] (and at the end).
async fn run(
    inner: Arc<Inner>,
    index: usize,
    broker: BrokerHandle,
    rx: mpsc::Receiver<(Publish, Instant)>,
) {
    let Some(link) = inner.links.get(index) else {
        return;
    };
    let flush = async {
        let mut every = tokio::time::interval(LOSS_WARNING_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            link.flush_losses(false);
        }
    };
    tokio::select! {
        () = connect_and_serve(&inner, index, &broker, rx) => {}
        () = flush => {}
    }
    link.flush_losses(true);
}

/// Connect, serve, and connect again.
async fn connect_and_serve(
    inner: &Inner,
    index: usize,
    broker: &BrokerHandle,
    mut rx: mpsc::Receiver<(Publish, Instant)>,
) {
    let Some(link) = inner.links.get(index) else {
        return;
    };
    let broker = broker.clone();
    // Down until connected; this also replaces a "1" a crash left retained.
    link.publish_state(&broker, false);
    let backoff = Reconnect::exponential(Duration::from_millis(200), Duration::from_secs(30));
    let mut failures: u32 = 0;
    // Messages a closed client left unsettled (QoS 1/2 ones not
    // acknowledged, QoS 0 ones not written: they failed with Closed): the
    // next one sends them first, in order.
    let mut carry: VecDeque<(Publish, Instant)> = VecDeque::new();
    // The bridge bit is for 3.1.1 (5.0 has No Local; mosquitto closes a 5.0
    // connection that sets it).
    let mut private = if link.try_private && link.options.version().is_v3() {
        Private::On {
            settled: false,
            closes: 0,
        }
    } else {
        Private::Off
    };
    loop {
        let options = link
            .options
            .clone()
            .manual_acks(true)
            .bridge(matches!(private, Private::On { .. }));
        // The stream for what no subscription stream takes exists before
        // the CONNECT: the queue the remote kept for this session comes
        // right after the CONNACK, before the bridge subscribes again.
        let connect = Client::connect_with_messages(options);
        let connected = tokio::select! {
            () = inner.shutdown.cancelled() => return,
            () = broker.shutting_down() => return,
            result = connect => result,
        };
        match connected {
            Ok((client, connack, leftovers)) => {
                if let Private::On { settled, .. } = &mut private {
                    *settled = true;
                }
                tracing::info!(bridge = %link.name, session_present = connack.session_present, "bridge connected");
                let since = tokio::time::Instant::now();
                let mut streams = Inbound::new(leftovers);
                let mut io = Io {
                    rx: &mut rx,
                    carry: &mut carry,
                    inbound: &mut streams,
                };
                let caps = link.caps(&connack);
                let ended = serve(inner, index, link, &client, &broker, caps, &mut io).await;
                link.set_connected(&broker, false);
                if ended == Ended::Shutdown {
                    if link.remote_notifications {
                        // A clean stop sends no will: "down" is said here.
                        let down = client
                            .publish(link.state_topic.clone(), "0")
                            .qos(QoS::AtLeastOnce)
                            .retain(true);
                        let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, down).await;
                    }
                    // Before the subscription stream is dropped (which
                    // unsubscribes): the remote keeps the subscriptions and
                    // queues for the session while the bridge is away.
                    let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, client.disconnect()).await;
                    return;
                }
                if since.elapsed() >= STABLE {
                    failures = 0;
                }
                tracing::warn!(bridge = %link.name, "bridge connection closed; connecting again");
            }
            Err(ClientError::Refused {
                reason_code: ConnectReasonCode::UnsupportedProtocolVersion,
                ..
            }) if matches!(private, Private::On { .. }) => {
                tracing::info!(bridge = %link.name, "the remote broker does not take bridges (try_private): connecting as a plain client");
                private = Private::Off;
                continue;
            }
            Err(error) => {
                match &error {
                    // Named as 3.1.1 has it (return code 5, not 5.0's 0x87).
                    ClientError::Refused { reason_code, .. } if link.options.version().is_v3() => {
                        let return_code = reason_code.to_v311().unwrap_or(u8::MAX);
                        tracing::warn!(bridge = %link.name, return_code, "bridge cannot connect: connection refused (MQTT 3.1.1 CONNACK return code)");
                    }
                    _ => tracing::warn!(bridge = %link.name, %error, "bridge cannot connect"),
                }
                // Closed before the CONNACK with the bit, CLOSES times in a
                // row and never connected with it: try without; closed
                // without it too: try with it again. (A connection made
                // without it stays so: the client reconnects by itself.)
                private = match private {
                    Private::On {
                        settled: false,
                        closes,
                    } if closed_during_handshake(&error) => {
                        if closes.saturating_add(1) >= CLOSES {
                            Private::Suspended
                        } else {
                            Private::On {
                                settled: false,
                                closes: closes.saturating_add(1),
                            }
                        }
                    }
                    Private::Suspended if closed_during_handshake(&error) => Private::On {
                        settled: false,
                        closes: 0,
                    },
                    other => other,
                };
            }
        }
        let delay = backoff.delay(failures, jitter());
        failures = failures.saturating_add(1);
        tokio::select! {
            () = inner.shutdown.cancelled() => return,
            () = broker.shutting_down() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Waits until `at` (for ever without one).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A number in [0, 1) for the backoff's jitter, from the clock.
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1000) / 1000.0
}

/// The filters of a link's in rules, with their subscription options.
type Filters = Vec<(String, SubscriptionOptions)>;

/// The streams messages from the remote come on; owned by [`run`], so that
/// the subscription streams outlive the DISCONNECT at shutdown.
struct Inbound {
    /// The subscriptions made for the in rules, each with the filters the
    /// remote granted it (at most one per rule: a filter refused is made
    /// again in a subscription of its own).
    subscriptions: Vec<(Filters, Subscription)>,
    /// Everything else: the remote's queue for a resumed session (it comes
    /// before the bridge subscribes again), messages of subscriptions it
    /// kept from an earlier connection.
    leftovers: Messages,
    /// `leftovers` ended (the client closed).
    leftovers_done: bool,
}

/// What [`Inbound::next`] brings.
// Returned and matched at once, never stored: boxing each message would
// cost an allocation per message for nothing.
#[allow(clippy::large_enum_variant)]
enum Incoming {
    Message(Message),
    /// A subscription stream ended while the client goes on (the remote
    /// lost the session and refused the client's new SUBSCRIBE): its
    /// filters are no longer subscribed.
    Ended(Filters),
    /// The remote lost the session and, when the client subscribed a
    /// stream's filters again, refused these while it granted the others:
    /// they are no longer subscribed (the stream goes on with the others).
    Refused(Filters),
    /// Every stream ended: the client closed.
    Closed,
}

impl Inbound {
    fn new(leftovers: Messages) -> Self {
        Self {
            subscriptions: Vec::new(),
            leftovers,
            leftovers_done: false,
        }
    }

    /// The next message. What waits in `leftovers` goes first: a resumed
    /// session's queue came before the messages of the new subscriptions.
    async fn next(&mut self) -> Incoming {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Incoming> {
        use std::task::Poll;
        if !self.leftovers_done {
            match self.leftovers.poll_next_unpin(cx) {
                Poll::Ready(Some(message)) => return Poll::Ready(Incoming::Message(message)),
                Poll::Ready(None) => self.leftovers_done = true,
                Poll::Pending => {}
            }
        }
        let mut ended = None;
        for (at, (_, subscription)) in self.subscriptions.iter_mut().enumerate() {
            match subscription.poll_next_unpin(cx) {
                Poll::Ready(Some(message)) => return Poll::Ready(Incoming::Message(message)),
                Poll::Ready(None) => {
                    ended = Some(at);
                    break;
                }
                Poll::Pending => {}
            }
        }
        for (filters, subscription) in &mut self.subscriptions {
            let Poll::Ready(refused) = subscription.poll_refused(cx) else {
                continue;
            };
            let (gone, kept): (Filters, Filters) = std::mem::take(filters)
                .into_iter()
                .partition(|(filter, _)| refused.contains(filter));
            *filters = kept;
            if !gone.is_empty() {
                return Poll::Ready(Incoming::Refused(gone));
            }
        }
        if let Some(at) = ended {
            let (filters, subscription) = self.subscriptions.remove(at);
            if subscription.error().is_some() {
                return Poll::Ready(Incoming::Ended(filters));
            }
            // Ended with the client: what is left in the others goes first.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if self.leftovers_done && self.subscriptions.is_empty() {
            Poll::Ready(Incoming::Closed)
        } else {
            Poll::Pending
        }
    }
}

/// What [`serve`] works with besides the client: the queue to the remote,
/// the messages a closed client left unsettled, the streams from the remote.
struct Io<'a> {
    rx: &'a mut mpsc::Receiver<(Publish, Instant)>,
    /// Messages a closed client left unsettled, with the time their
    /// Message Expiry Interval was last counted ([`aged`]).
    carry: &'a mut VecDeque<(Publish, Instant)>,
    inbound: &'a mut Inbound,
}

/// A SUBSCRIBE of the bridge's filters on its way.
type Subscribing<'a> = Pin<Box<dyn Future<Output = Result<Subscription, ClientError>> + Send + 'a>>;

/// A message from the remote being routed here ([`bring_in`]): it is
/// acknowledged to the remote once this completes.
type Landing<'a> = Pin<Box<dyn Future<Output = (Result<(), BrokerError>, Message)> + Send + 'a>>;

/// One client of a remote: subscribe for the in rules, then forward both
/// ways until the client closes or the bridge shuts down. The client
/// reconnects by itself; a SUBSCRIBE lost with a connection, filters the
/// remote refused, and those of a stream the client ended (the remote lost
/// the session and refused them again) are subscribed again, with backoff.
/// The link counts as up only while every filter is subscribed.
async fn serve(
    inner: &Inner,
    index: usize,
    link: &Link,
    client: &Client,
    broker: &BrokerHandle,
    mut caps: Caps,
    io: &mut Io<'_>,
) -> Ended {
    let v5 = link.options.version() == ProtocolVersion::V5;
    let filters: Filters = link
        .rules
        .iter()
        .filter(|r| r.direction().is_in())
        .map(|r| {
            let mut options = SubscriptionOptions::new(r.max_qos());
            if v5 {
                options.no_local = true;
                options.retain_as_published = true;
                options.retain_handling = RetainHandling::SendAtSubscribe;
            }
            (r.remote_filter().to_owned(), options)
        })
        .collect();
    // Subscribing goes on while messages come in: a resumed session's queue
    // arrives first, and with no Receive Maximum (3.1.1) more of it than a
    // stream holds may come before the SUBACK.
    // Filters to subscribe, the ones on their way, and when to try again
    // after a refusal.
    let mut pending = filters;
    let mut attempt: Filters = Vec::new();
    // Filters the client refused to send (the remote's CONNACK said it has
    // no wildcard or shared subscriptions): they cannot succeed on this
    // connection, and are asked for again at the next one. Each is named in
    // a warning once per client.
    let mut impossible: Filters = Vec::new();
    let mut warned: Vec<String> = Vec::new();
    let mut subscribing: Option<Subscribing<'_>> = None;
    // While one waits for the subscribers here, no other is read from the
    // remote, but the rest goes on (the outbound direction, shutdown).
    let mut landing: Option<Landing<'_>> = None;
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut failures: u32 = 0;
    // The messages numbered below it, queued for the remote before the
    // next SUBSCRIBE is due, settle first: with a rule both ways, what was
    // published here while the link was down is newer than what the remote
    // holds retained, which the SUBSCRIBE brings in.
    let mut barrier: Option<u64> = None;
    let backoff = Reconnect::exponential(Duration::from_millis(200), Duration::from_secs(30));
    // Another attempt after the backoff: the remote refused, or the
    // SUBSCRIBE was lost with the connection (the client reconnects).
    let again = |pending: &mut Filters, filters: Filters, failures: &mut u32| {
        pending.extend(filters);
        let delay = backoff.delay(*failures, jitter());
        *failures = failures.saturating_add(1);
        tokio::time::Instant::now() + delay
    };
    let mut up = client.is_connected();
    // With remote notifications: "1" on the remote at each connection (the
    // first, and each the client makes by itself), acknowledged alongside
    // the link's traffic.
    let announce = || -> Option<Pin<Box<dyn Future<Output = ()> + Send + '_>>> {
        link.remote_notifications.then(|| {
            let state = client
                .publish(link.state_topic.clone(), "1")
                .qos(QoS::AtLeastOnce)
                .retain(true);
            Box::pin(async move {
                if let Err(error) = state.await {
                    tracing::debug!(bridge = %link.name, %error, "the remote did not take the link's state");
                }
            }) as Pin<Box<dyn Future<Output = ()> + Send + '_>>
        })
    };
    let mut announcing = if up { announce() } else { None };
    if up {
        inner.push_retained(index, broker, caps, &HashSet::new());
    }
    // Messages on their way to the remote, at most WINDOW, by a sequence
    // number in the order they were handed to the client. Each publish is
    // handed to the client at its first poll, and FuturesUnordered polls
    // new futures first in the order they were pushed; the client's queue
    // to its connection task holds more than WINDOW, so that first poll
    // never waits: they reach the session, and the wire, in order.
    let mut window = FuturesUnordered::new();
    // With the time each one's Message Expiry Interval was last counted.
    let mut in_flight: BTreeMap<u64, (Publish, Instant)> = BTreeMap::new();
    let mut seq: u64 = 0;
    let ended = loop {
        // What a closed client left unsettled goes first.
        while window.len() < WINDOW {
            let Some((publish, at)) = io.carry.pop_front() else {
                break;
            };
            // The time it waited here counts too.
            let Some(publish) = aged(publish, at) else {
                tracing::debug!(bridge = %link.name, "a message expired waiting for the remote");
                link.drop_one("expired waiting for the remote");
                continue;
            };
            let publish = caps.apply(publish);
            in_flight.insert(seq, (publish.clone(), Instant::now()));
            window.push(send(client, seq, publish));
            seq = seq.wrapping_add(1);
        }
        let due = !pending.is_empty()
            && up
            && subscribing.is_none()
            && retry_at.is_none_or(|at| at <= tokio::time::Instant::now());
        if !due {
            barrier = None;
        } else if barrier.is_none() {
            let queued = io.carry.len().saturating_add(io.rx.len()) as u64;
            barrier = Some(seq.saturating_add(queued));
        }
        let flushed = barrier.is_some_and(|barrier| {
            seq >= barrier
                && in_flight
                    .keys()
                    .next()
                    .is_none_or(|first| *first >= barrier)
        });
        if due && flushed {
            retry_at = None;
            barrier = None;
            attempt = std::mem::take(&mut pending);
            subscribing = Some(Box::pin(
                client.subscribe_with(attempt.clone(), SubscribeProperties::default()),
            ));
        }
        // Up while connected, as mosquitto says, whatever was refused:
        // that is counted apart.
        link.set_connected(broker, up);
        link.unsubscribed.store(
            pending
                .len()
                .saturating_add(attempt.len())
                .saturating_add(impossible.len()),
            Ordering::Relaxed,
        );
        tokio::select! {
            () = inner.shutdown.cancelled() => break Ended::Shutdown,
            () = broker.shutting_down() => break Ended::Shutdown,
            subscribed = async { subscribing.as_mut()?.await.into() }, if subscribing.is_some() => {
                subscribing = None;
                let tried = std::mem::take(&mut attempt);
                match subscribed {
                    Some(Ok(subscription)) => {
                        let codes = &subscription.suback().reason_codes;
                        // A filter without a reason code counts as refused.
                        let mut granted = Filters::new();
                        let mut refused = Filters::new();
                        for (at, filter) in tried.into_iter().enumerate() {
                            if codes.get(at).is_some_and(|c| !c.is_error()) {
                                granted.push(filter);
                            } else {
                                refused.push(filter);
                            }
                        }
                        if refused.is_empty() {
                            if pending.is_empty() {
                                failures = 0;
                            }
                        } else {
                            link.filters_refused.fetch_add(refused.len() as u64, Ordering::Relaxed);
                            let refused_filters: Vec<_> = refused.iter().map(|(f, _)| f.as_str()).collect();
                            tracing::warn!(bridge = %link.name, filters = ?refused_filters, "the remote broker refused some of the bridge's subscriptions; trying them again later");
                            retry_at = Some(again(&mut pending, refused, &mut failures));
                        }
                        io.inbound.subscriptions.push((granted, subscription));
                    }
                    Some(Err(ClientError::SubscribeRejected(suback))) => {
                        let codes = &suback.reason_codes;
                        link.filters_refused.fetch_add(tried.len() as u64, Ordering::Relaxed);
                        tracing::warn!(bridge = %link.name, ?codes, "the remote broker refused every subscription of the bridge; trying again later");
                        retry_at = Some(again(&mut pending, tried, &mut failures));
                    }
                    Some(Err(ClientError::Session(fulmar_session::Error::Api(
                        why @ (ApiError::WildcardSubscriptionsNotSupported
                        | ApiError::SharedSubscriptionsNotSupported),
                    )))) => {
                        // Refused by the client before sending: those
                        // filters fail whatever the backoff, the others of
                        // the batch are subscribed at once.
                        let (cannot, can): (Filters, Filters) =
                            tried.into_iter().partition(|(filter, _)| unsendable(filter, &why));
                        // None found (cannot be): all of them, so that
                        // nothing is asked for in a loop.
                        let (cannot, can) = if cannot.is_empty() { (can, Vec::new()) } else { (cannot, can) };
                        link.filters_refused.fetch_add(cannot.len() as u64, Ordering::Relaxed);
                        for (filter, _) in &cannot {
                            if !warned.contains(filter) {
                                tracing::warn!(bridge = %link.name, %filter, reason = %why, "the remote broker cannot take this filter of the bridge: not subscribed (asked for again at the next connection)");
                                warned.push(filter.clone());
                            }
                        }
                        impossible.extend(cannot);
                        pending.extend(can);
                    }
                    Some(Err(error)) if client.is_closed() => {
                        tracing::warn!(bridge = %link.name, %error, "bridge subscribe failed");
                        pending.extend(tried);
                        break Ended::Lost;
                    }
                    Some(Err(error)) => {
                        // Lost with the connection (RequestLost,
                        // NotConnected): the client reconnects by itself,
                        // with its session and what it has in flight, and
                        // the bridge subscribes again then.
                        tracing::info!(bridge = %link.name, %error, "bridge subscribe failed; subscribing again once connected");
                        retry_at = Some(again(&mut pending, tried, &mut failures));
                    }
                    None => pending.extend(tried),
                }
            }
            () = sleep_until(retry_at), if retry_at.is_some() => retry_at = None,
            next = io.rx.recv(), if window.len() < WINDOW => match next {
                Some((publish, queued_at)) => {
                    link.dequeued(&publish);
                    let Some(publish) = aged(publish, queued_at) else {
                        tracing::debug!(bridge = %link.name, "a message expired waiting for the remote");
                        link.drop_one("expired waiting for the remote");
                        continue;
                    };
                    let publish = caps.apply(publish);
                    in_flight.insert(seq, (publish.clone(), Instant::now()));
                    window.push(send(client, seq, publish));
                    seq = seq.wrapping_add(1);
                }
                None => break Ended::Shutdown,
            },
            Some((sent, outcome)) = window.next(), if !window.is_empty() => {
                let Some((publish, at)) = in_flight.remove(&sent) else {
                    continue;
                };
                match settle(link, &mut caps, publish, outcome) {
                    Settled::Done => {}
                    Settled::Again(publish) => {
                        // Under its own number: it still holds back a
                        // SUBSCRIBE due behind it (the barrier), and a
                        // closed client leaves it to the next one in its
                        // place.
                        in_flight.insert(sent, (publish.clone(), at));
                        window.push(send(client, sent, publish));
                    }
                    Settled::Closed(publish) => {
                        // Not settled: kept for the next client.
                        in_flight.insert(sent, (publish, at));
                        break Ended::Lost;
                    }
                }
            }
            landed = async { landing.as_mut()?.await.into() }, if landing.is_some() => {
                landing = None;
                let Some((routed, message)) = landed else {
                    continue;
                };
                match routed {
                    Ok(()) => {}
                    Err(BrokerError::Shutdown) => break Ended::Shutdown,
                    // Not acknowledged: the remote sends it again when
                    // the session resumes.
                    Err(error) => {
                        tracing::warn!(bridge = %link.name, %error, "a message from the remote broker was not stored");
                        break Ended::Lost;
                    }
                }
                // Acknowledged to the remote once routed here (manual
                // acknowledgements): one that was not is sent again
                // when the session resumes.
                if client.ack(&message).await.is_err() {
                    break Ended::Lost;
                }
            }
            message = io.inbound.next(), if landing.is_none() => match message {
                Incoming::Message(message) => {
                    landing = Some(Box::pin(bring_in(inner, index, link, broker, message)));
                }
                Incoming::Ended(filters) => {
                    link.filters_refused.fetch_add(filters.len() as u64, Ordering::Relaxed);
                    tracing::warn!(bridge = %link.name, "the remote broker lost the session and refused the bridge's subscriptions again; trying again later");
                    retry_at = Some(again(&mut pending, filters, &mut failures));
                }
                Incoming::Refused(filters) => {
                    link.filters_refused.fetch_add(filters.len() as u64, Ordering::Relaxed);
                    let refused: Vec<_> = filters.iter().map(|(f, _)| f.as_str()).collect();
                    tracing::warn!(bridge = %link.name, filters = ?refused, "the remote broker lost the session and refused some of the bridge's subscriptions again; trying them again later");
                    retry_at = Some(again(&mut pending, filters, &mut failures));
                }
                Incoming::Closed => break Ended::Lost,
            },
            changed = client.wait_connected(!up) => {
                if changed.is_err() {
                    break Ended::Lost;
                }
                up = !up;
                tracing::info!(bridge = %link.name, connected = up, "bridge connection state");
                if up {
                    // This connection's limits: a reconnection's CONNACK
                    // may allow more than the last one did, or less.
                    if let Some(connack) = client.connack() {
                        caps = link.caps(&connack);
                    }
                    announcing = announce();
                    let on_its_way: HashSet<MqttString> = in_flight
                        .values()
                        .chain(io.carry.iter())
                        .filter(|(publish, _)| publish.retain)
                        .map(|(publish, _)| publish.topic.clone())
                        .collect();
                    inner.push_retained(index, broker, caps, &on_its_way);
                    // The new CONNACK may allow them.
                    pending.append(&mut impossible);
                }
            }
            () = async { if let Some(a) = announcing.as_mut() { a.await } }, if announcing.is_some() => {
                announcing = None;
            }
        }
    };
    if ended == Ended::Shutdown && subscribing.is_some() {
        // The SUBACK may still come, and the stream it brings would
        // unsubscribe when dropped: DISCONNECT first, while the pending
        // SUBSCRIBE holds it, so the remote keeps the session's
        // subscriptions.
        let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, client.disconnect()).await;
    }
    match ended {
        // Not sent: lost with the bridge.
        Ended::Shutdown => {
            let lost = in_flight.len().saturating_add(io.carry.len());
            link.drop_many(lost as u64, "the bridge shut down with them on their way");
            io.carry.clear();
        }
        // The client closed with them unsettled: the next one sends them
        // first, in the order they went out. It resumes the remote session
        // without the old client's packet identifiers: see [`MqttBridge`]
        // on what may then arrive twice, or not at all (QoS 2).
        Ended::Lost => {
            let mut carry: VecDeque<(Publish, Instant)> = in_flight.into_values().collect();
            carry.append(io.carry);
            *io.carry = carry;
        }
    }
    ended
}

/// Whether `filter` is one the client refuses to send for `why` (the
/// remote has no wildcard, or no shared, subscriptions).
fn unsendable(filter: &str, why: &ApiError) -> bool {
    let Ok(parsed) = filter.parse::<SubscriptionFilter>() else {
        return true;
    };
    match why {
        ApiError::SharedSubscriptionsNotSupported => parsed.group().is_some(),
        _ => parsed.filter().has_wildcards(),
    }
}

/// Publishes `publish` and hands back its number with the outcome.
async fn send(
    client: &Client,
    seq: u64,
    publish: Publish,
) -> (u64, Result<PublishOutcome, ClientError>) {
    (seq, client.publish_message(publish).await)
}

/// What [`settle`] makes of an outcome.
enum Settled {
    /// Counted: sent, refused or lost.
    Done,
    /// To send again: the remote lost the session it was in flight in.
    Again(Publish),
    /// The client closed before it settled: for the next client.
    Closed(Publish),
}

/// What the remote takes, as its CONNACK said (MQTT 5.0 Maximum QoS and
/// Retain Available) or as the client found when it refused a message
/// (after a reconnection whose CONNACK lowered them): messages go out at
/// most at `qos`, and without the retain flag unless `retain`, as
/// mosquitto's bridge downgrades them rather than drop them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Caps {
    qos: QoS,
    retain: bool,
}

impl Caps {
    /// What `connack` announced (3.1.1: everything).
    fn of(connack: &ConnAck) -> Self {
        Self {
            qos: connack.properties.maximum_qos.unwrap_or(QoS::ExactlyOnce),
            retain: connack.properties.retain_available.unwrap_or(true),
        }
    }

    /// `publish` as the remote takes it.
    fn apply(self, mut publish: Publish) -> Publish {
        publish.qos = publish.qos.min(self.qos);
        publish.retain &= self.retain;
        publish
    }
}

/// The QoS below `qos`; `None` below QoS 0.
fn lower(qos: QoS) -> Option<QoS> {
    match qos {
        QoS::ExactlyOnce => Some(QoS::AtLeastOnce),
        QoS::AtLeastOnce => Some(QoS::AtMostOnce),
        QoS::AtMostOnce => None,
    }
}

/// Counts the outcome of a publish to the remote. A message the client
/// refused for the remote's Maximum QoS or Retain Available (v5:MQTT-3.2.2-11,
/// v5:MQTT-3.2.2-14) lowers `caps` and goes again, downgraded.
fn settle(
    link: &Link,
    caps: &mut Caps,
    publish: Publish,
    outcome: Result<PublishOutcome, ClientError>,
) -> Settled {
    use fulmar_session::Error as SessionError;
    match outcome {
        Ok(_) => {
            link.sent.fetch_add(1, Ordering::Relaxed);
            Settled::Done
        }
        Err(
            ClientError::Session(SessionError::Api(ApiError::QoSNotSupported(_)))
            | ClientError::PublishDropped(DropReason::QoSNotSupported),
        ) => match lower(publish.qos) {
            Some(qos) => {
                tracing::debug!(bridge = %link.name, ?qos, "the remote broker's Maximum QoS is lower: messages go at it");
                caps.qos = caps.qos.min(qos);
                Settled::Again(caps.apply(publish))
            }
            None => {
                link.drop_one("the remote takes no QoS");
                Settled::Done
            }
        },
        Err(
            ClientError::Session(SessionError::Api(ApiError::RetainNotSupported))
            | ClientError::PublishDropped(DropReason::RetainNotSupported),
        ) => {
            tracing::debug!(bridge = %link.name, "the remote broker has no retained messages: messages go without the retain flag");
            caps.retain = false;
            Settled::Again(caps.apply(publish))
        }
        Err(ClientError::PublishRejected { reason_code, .. }) => {
            tracing::debug!(bridge = %link.name, topic = %publish.topic, ?reason_code, "the remote broker refused a message");
            link.refuse_one("refused by the remote broker");
            Settled::Done
        }
        // The remote lost the session it was in flight in: send it again
        // (behind the messages already on their way).
        Err(ClientError::PublishDropped(DropReason::SessionDiscarded)) => Settled::Again(publish),
        Err(ClientError::Closed) => Settled::Closed(publish),
        Err(error) => {
            tracing::debug!(bridge = %link.name, topic = %publish.topic, %error, "a message for the remote broker was lost");
            link.drop_one("lost on its way to the remote");
            Settled::Done
        }
    }
}

/// Routes a message from the remote here and, from an MQTT 5.0 link, to the
/// other 5.0 remotes. One that carries this bridge's own relay mark went
/// round (this bridge relayed it before): it is dropped. With the broker's
/// flow control ([`BrokerHandle::inject_paced`]): it returns once the
/// subscribers here took the message, or are slowed down enough, so that
/// the acknowledgement to the remote promises no more than a client's does.
///
/// # Errors
/// The broker shut down; the store failed to commit the message (it must
/// not be acknowledged).
async fn bring_in(
    inner: &Inner,
    index: usize,
    link: &Link,
    broker: &BrokerHandle,
    message: Message,
) -> (Result<(), BrokerError>, Message) {
    let routed = route_in(inner, index, link, broker, &message).await;
    (routed, message)
}

/// [`bring_in`] without the message handed back.
async fn route_in(
    inner: &Inner,
    index: usize,
    link: &Link,
    broker: &BrokerHandle,
    message: &Message,
) -> Result<(), BrokerError> {
    // What goes on to other remotes keeps the marks it came with (this
    // bridge adds its own): two bridges between the same remotes would
    // otherwise relay a message between them for ever, each removing the
    // other's mark.
    let mut publish = message.publish().clone();
    if publish
        .properties
        .user_properties
        .iter()
        .any(|(key, value)| key.as_str() == RELAY_MARK && *value == inner.mark)
    {
        tracing::debug!(bridge = %link.name, topic = %publish.topic, "a message this bridge relayed came back: dropped");
        return Ok(());
    }
    let local = TopicName::from_bytes(publish.topic.clone().into_bytes())
        .ok()
        .and_then(|remote| {
            link.rules
                .iter()
                .filter(|r| r.direction().is_in())
                .find_map(|r| r.to_local(&remote))
        })
        .and_then(|local| MqttString::try_from_string(local).ok());
    let Some(local) = local else {
        link.drop_one("an incoming topic cannot be mapped");
        return Ok(());
    };
    publish.topic = local;
    clean(&mut publish);
    // Marks are between bridges: not for this broker's clients.
    let mut here = publish.clone();
    here.properties
        .user_properties
        .retain(|(key, _)| key.as_str() != RELAY_MARK);
    let routed = match broker.inject_paced(&here) {
        Ok(pacing) => pacing.wait().await,
        Err(e) => Err(e),
    };
    match routed {
        Ok(()) => {}
        Err(e @ (BrokerError::Shutdown | BrokerError::Store(_))) => return Err(e),
        Err(_) => {
            link.drop_one("an incoming message was not taken here");
            return Ok(());
        }
    }
    link.received.fetch_add(1, Ordering::Relaxed);
    if let Ok(name) = TopicName::from_bytes(publish.topic.clone().into_bytes()) {
        inner.forward(&name, &publish, Some(index));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One warning at most every 10 s, with the counts since the last one
    /// (found by an operator review: drops were logged at debug only).
    #[test]
    fn losses_are_warned_about_at_most_every_ten_seconds() {
        let mut losses = Losses::default();
        let start = Instant::now();
        let note = |losses: &mut Losses, refused, at| losses.note(refused, 1, "test", at);
        assert_eq!(note(&mut losses, false, start), Some((1, 0)));
        assert_eq!(
            note(&mut losses, false, start + Duration::from_secs(1)),
            None
        );
        assert_eq!(
            note(&mut losses, true, start + Duration::from_secs(9)),
            None
        );
        assert_eq!(
            note(&mut losses, false, start + LOSS_WARNING_EVERY),
            Some((2, 1))
        );
        assert_eq!(
            note(
                &mut losses,
                true,
                start + LOSS_WARNING_EVERY + Duration::from_secs(1)
            ),
            None
        );
        assert_eq!(
            losses.note(false, 5, "test", start + LOSS_WARNING_EVERY * 2),
            Some((5, 1))
        );
    }

    /// Drops that follow a warning within 10 s and then stop are warned
    /// about by the periodic flush once 10 s passed (found by a review:
    /// only a later drop would report them, so the last burst never was).
    #[test]
    fn the_last_burst_of_losses_is_warned_about() {
        let mut losses = Losses::default();
        let start = Instant::now();
        assert_eq!(losses.note(false, 1, "test", start), Some((1, 0)));
        for i in 1..=999u64 {
            assert_eq!(
                losses.note(false, 1, "test", start + Duration::from_millis(i)),
                None
            );
        }
        assert_eq!(losses.flush(start + Duration::from_secs(9), false), None);
        assert_eq!(
            losses.flush(start + LOSS_WARNING_EVERY, false),
            Some((999, 0))
        );
        assert_eq!(
            losses.flush(start + LOSS_WARNING_EVERY * 3, false),
            None,
            "nothing left"
        );
        assert_eq!(
            losses.note(true, 1, "test", start + LOSS_WARNING_EVERY * 3),
            Some((0, 1))
        );
        assert_eq!(
            losses.note(false, 1, "test", start + LOSS_WARNING_EVERY * 3),
            None
        );
        // At the end of the link's task: at once.
        assert_eq!(
            losses.flush(start + LOSS_WARNING_EVERY * 3, true),
            Some((1, 0))
        );
    }

    /// Downgraded to what the CONNACK said, not dropped.
    // v5:MQTT-3.2.2-11 v5:MQTT-3.2.2-14
    #[test]
    fn messages_go_at_what_the_remote_takes() {
        let mut connack = ConnAck::new(false, ConnectReasonCode::Success);
        connack.properties.maximum_qos = Some(QoS::AtLeastOnce);
        connack.properties.retain_available = Some(false);
        let caps = Caps::of(&connack);
        let mut publish = Publish::new(MqttString::from("t"), "x".into());
        publish.qos = QoS::ExactlyOnce;
        publish.retain = true;
        let out = caps.apply(publish);
        assert_eq!((out.qos, out.retain), (QoS::AtLeastOnce, false));
        let all = Caps::of(&ConnAck::new(false, ConnectReasonCode::Success));
        assert_eq!(
            all,
            Caps {
                qos: QoS::ExactlyOnce,
                retain: true
            }
        );
        assert_eq!(lower(QoS::ExactlyOnce), Some(QoS::AtLeastOnce));
        assert_eq!(lower(QoS::AtMostOnce), None);
    }
}
