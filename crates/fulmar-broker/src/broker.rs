//! [`Broker`], its builder, and the [`BrokerHandle`] of a running broker.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fulmar_codec::{MqttString, Publish, QoS};
use fulmar_topic::{SharedFilter, SubscriptionFilter, TopicFilter, TopicName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{AllowAll, Authenticator, Authorizer, ClientInfo};
use crate::bridge::{Bridge, SessionExport, SessionUnavailable};
use crate::config::{Limits, OverloadPolicy, ServerReference};
use crate::error::BrokerError;
use crate::listener::{Listener, ListenerShared, Peer, Slot, accept_loop};
use crate::message::Subscription;
use crate::observe::{BrokerEvent, Events, sys_loop};
use crate::pacing::Pacing;
use crate::state::{
    Control, Counters, Held, Origin, Queued, SessionEntry, State, SubOptions, Subscriber,
};
use crate::store::journal::Journal;
use crate::store::recover::{expiry_deadline, instant_of};
use crate::store::{Durability, Store, StoreOp, StoredMessage, StoredSession, unix_millis};
#[cfg(feature = "tls")]
use crate::tls::TlsConfig;

/// State shared by every task of one broker.
pub(crate) struct Shared {
    pub(crate) limits: Limits,
    /// The configuration of every server session (from `limits`), shared.
    pub(crate) session_config: Arc<fulmar_session::Config>,
    state: Mutex<State>,
    pub(crate) counters: Counters,
    pub(crate) authenticator: Arc<dyn Authenticator>,
    pub(crate) authorizer: Arc<dyn Authorizer>,
    /// An authorizer was set: a resumed session's subscriptions are
    /// checked again (the client may be another user now).
    pub(crate) checks_subscriptions: bool,
    /// [`Authorizer::checks_reads`]: each delivery is checked.
    pub(crate) checks_reads: bool,
    pub(crate) shutdown: CancellationToken,
    /// Wakes the deadline task when a session deadline was added.
    pub(crate) timers: Notify,
    /// Observers of [`BrokerEvent`]s.
    pub(crate) events: broadcast::Sender<BrokerEvent>,
    /// Cancelled once every task has finished after a shutdown.
    pub(crate) stopped: CancellationToken,
    /// The write path to the store, when there is one.
    pub(crate) journal: Option<Arc<Journal>>,
    /// Keeps the hibernating connections (none when hibernation is off).
    #[cfg(unix)]
    pub(crate) hibernator: Option<Arc<crate::hibernate::Hibernator>>,
}

impl Drop for Shared {
    /// Nothing can write to the store any more (the broker was not shut
    /// down: its runtime was dropped): the writer commits what is queued
    /// and ends, which closes the store. Without it the writer thread kept
    /// the store, and its file lock, for the rest of the process.
    fn drop(&mut self) {
        if let Some(journal) = &self.journal {
            journal.close();
        }
    }
}

impl Shared {
    /// May `client` receive a message on `topic` (see
    /// [`Authorizer::authorize_read`])? Always, unless the authorizer checks reads.
    pub(crate) fn may_read(&self, client: &crate::ClientInfo, topic: &str) -> bool {
        !self.checks_reads || self.authorizer.authorize_read(client, topic)
    }

    /// Locks the broker state. Never held across an `.await`.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current counters.
    pub(crate) fn stats(&self) -> Stats {
        let c = &self.counters;
        let load = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
        let mut state = self.lock();
        // Expired retained messages are not counted.
        state.remove_expired_retained(Instant::now());
        Stats {
            connections: load(&c.connections),
            clients_connected: load(&c.clients_connected),
            clients_maximum: load(&c.clients_maximum),
            connects: load(&c.connects),
            connections_accepted: load(&c.sockets),
            sessions_expired: load(&c.sessions_expired),
            sessions: state.sessions.len(),
            subscriptions: state.subs.len(),
            shared_subscriptions: state.subs.shared_len(),
            retained: state.retained.len(),
            dropped_messages: load(&c.dropped),
            blocked_publishers: load(&c.blocked_publishers),
            packets_received: load(&c.packets_received),
            packets_sent: load(&c.packets_sent),
            messages_received: load(&c.publish_received),
            messages_sent: load(&c.publish_sent),
            publish_bytes_received: load(&c.publish_bytes_received),
            publish_bytes_sent: load(&c.publish_bytes_sent),
            messages_sent_preencoded: load(&c.publish_reused),
            bytes_received: load(&c.bytes_received),
            bytes_sent: load(&c.bytes_sent),
            read_ahead_bytes: c.read_ahead.load(Ordering::Relaxed),
            delayed_will_bytes: state.will_budget.used(),
            offline_bytes: state.offline_budget.used(),
            #[cfg(unix)]
            connections_hibernating: self.hibernator.as_ref().map_or(0, |h| h.asleep()),
            #[cfg(not(unix))]
            connections_hibernating: 0,
        }
    }
}

/// An embeddable MQTT 3.1.1 and 5.0 broker. Build one with [`Broker::builder`].
#[derive(Debug)]
pub struct Broker;

impl Broker {
    /// A builder with no listener, the default [`Limits`] and hooks that allow everything.
    #[must_use]
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::default()
    }
}

/// Configures and starts a broker.
pub struct BrokerBuilder {
    listeners: Vec<Listener>,
    limits: Limits,
    authenticator: Arc<dyn Authenticator>,
    authorizer: Arc<dyn Authorizer>,
    checks_subscriptions: bool,
    bridges: Vec<Arc<dyn Bridge>>,
    store: Option<Arc<dyn Store>>,
    durability: Durability,
}

impl Default for BrokerBuilder {
    fn default() -> Self {
        Self {
            listeners: Vec::new(),
            limits: Limits::default(),
            authenticator: Arc::new(AllowAll),
            authorizer: Arc::new(AllowAll),
            checks_subscriptions: false,
            bridges: Vec::new(),
            store: None,
            durability: Durability::default(),
        }
    }
}

impl std::fmt::Debug for BrokerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerBuilder")
            .field("listeners", &self.listeners)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl BrokerBuilder {
    /// Adds a TCP listener on `addr` (`"127.0.0.1:1883"`, `"[::]:1883"`;
    /// port 0 picks a free port, see [`BrokerHandle::local_addrs`]). May be
    /// called several times.
    #[must_use]
    pub fn tcp_listener(self, addr: impl Into<String>) -> Self {
        self.listener(Listener::tcp(addr))
    }

    /// Adds a TLS listener on `addr` (MQTT over TLS, port 8883 by
    /// convention). The certificates are checked by [`start`](Self::start).
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls_listener(self, addr: impl Into<String>, tls: TlsConfig) -> Self {
        self.listener(Listener::tls(addr, tls))
    }

    /// Adds a WebSocket listener on `addr` serving MQTT at the HTTP `path`
    /// (`"/mqtt"`), subprotocol `mqtt`. Requests for other paths get 404.
    #[cfg(feature = "websocket")]
    #[must_use]
    pub fn ws_listener(self, addr: impl Into<String>, path: impl Into<String>) -> Self {
        self.listener(Listener::ws(addr, path))
    }

    /// Adds a secure WebSocket listener (WebSocket over TLS) on `addr`
    /// serving MQTT at `path`.
    #[cfg(all(feature = "tls", feature = "websocket"))]
    #[must_use]
    pub fn wss_listener(
        self,
        addr: impl Into<String>,
        path: impl Into<String>,
        tls: TlsConfig,
    ) -> Self {
        self.listener(Listener::wss(addr, path, tls))
    }

    /// Adds a listener with settings of its own (see [`Listener`]). May be
    /// called several times.
    #[must_use]
    pub fn listener(mut self, listener: Listener) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Replaces all limits.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// See [`Limits::max_connections`].
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Self {
        self.limits.max_connections = n;
        self
    }

    /// See [`Limits::max_packet_size`].
    #[must_use]
    pub fn max_packet_size(mut self, bytes: NonZeroU32) -> Self {
        self.limits.max_packet_size = bytes;
        self
    }

    /// See [`Limits::max_subscriptions_per_client`].
    #[must_use]
    pub fn max_subscriptions_per_client(mut self, n: usize) -> Self {
        self.limits.max_subscriptions_per_client = n;
        self
    }

    /// See [`Limits::max_subscription_bytes_per_client`].
    #[must_use]
    pub fn max_subscription_bytes_per_client(mut self, bytes: usize) -> Self {
        self.limits.max_subscription_bytes_per_client = bytes;
        self
    }

    /// See [`Limits::max_queued_bytes`].
    #[must_use]
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_queued_bytes = bytes;
        self
    }

    /// See [`Limits::max_read_ahead_bytes`].
    #[must_use]
    pub fn max_read_ahead_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_read_ahead_bytes = bytes;
        self
    }

    /// See [`Limits::max_queued_messages`].
    #[must_use]
    pub fn max_queued_messages(mut self, n: usize) -> Self {
        self.limits.max_queued_messages = n;
        self
    }

    /// See [`Limits::hibernate_after`].
    #[must_use]
    pub fn hibernate_after(mut self, idle: Option<Duration>) -> Self {
        self.limits.hibernate_after = idle;
        self
    }

    /// See [`Limits::overload_policy`].
    #[must_use]
    pub fn overload_policy(mut self, policy: OverloadPolicy) -> Self {
        self.limits.overload_policy = policy;
        self
    }

    /// See [`Limits::pacing_timeout`].
    #[must_use]
    pub fn pacing_timeout(mut self, timeout: Duration) -> Self {
        self.limits.pacing_timeout = timeout;
        self
    }

    /// See [`Limits::sys_interval`]: `Some(interval)` publishes the
    /// `$SYS/broker/...` topics every `interval`; `None` (the default) does not.
    #[must_use]
    pub fn sys_interval(mut self, interval: Option<Duration>) -> Self {
        self.limits.sys_interval = interval;
        self
    }

    /// See [`Limits::server_keep_alive`].
    #[must_use]
    pub fn server_keep_alive(mut self, seconds: Option<u16>) -> Self {
        self.limits.server_keep_alive = seconds;
        self
    }

    /// See [`Limits::wildcard_subscription_available`].
    #[must_use]
    pub fn wildcard_subscription_available(mut self, available: bool) -> Self {
        self.limits.wildcard_subscription_available = available;
        self
    }

    /// See [`Limits::shared_subscription_available`].
    #[must_use]
    pub fn shared_subscription_available(mut self, available: bool) -> Self {
        self.limits.shared_subscription_available = available;
        self
    }

    /// See [`Limits::subscription_identifiers_available`].
    #[must_use]
    pub fn subscription_identifiers_available(mut self, available: bool) -> Self {
        self.limits.subscription_identifiers_available = available;
        self
    }

    /// See [`Limits::max_retained_bytes`].
    #[must_use]
    pub fn max_retained_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_retained_bytes = bytes;
        self
    }

    /// See [`Limits::max_delayed_will_bytes`].
    #[must_use]
    pub fn max_delayed_will_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_delayed_will_bytes = bytes;
        self
    }

    /// See [`Limits::max_offline_bytes`].
    #[must_use]
    pub fn max_offline_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_offline_bytes = bytes;
        self
    }

    /// See [`Limits::max_sessions`].
    #[must_use]
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.limits.max_sessions = n;
        self
    }

    /// See [`Limits::max_retained_messages`].
    #[must_use]
    pub fn max_retained_messages(mut self, n: usize) -> Self {
        self.limits.max_retained_messages = n;
        self
    }

    /// See [`Limits::server_reference`]: refuse every client, pointing it
    /// to `reference`.
    #[must_use]
    pub fn server_reference(mut self, reference: impl Into<String>, permanent: bool) -> Self {
        self.limits.server_reference = Some(ServerReference {
            reference: reference.into(),
            permanent,
        });
        self
    }

    /// See [`Limits::connect_timeout`].
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.limits.connect_timeout = timeout;
        self
    }

    /// Sets the hook that accepts or refuses each CONNECT.
    #[must_use]
    pub fn authenticator(mut self, authenticator: impl Authenticator) -> Self {
        self.authenticator = Arc::new(crate::auth::Guarded(authenticator));
        self
    }

    /// Sets the hook that allows or denies each PUBLISH and subscription.
    #[must_use]
    pub fn authorizer(mut self, authorizer: impl Authorizer) -> Self {
        self.authorizer = Arc::new(crate::auth::Guarded(authorizer));
        self.checks_subscriptions = true;
        self
    }

    /// Routes beyond this broker through `bridge` (a cluster, a bridge to
    /// another broker): see [`Bridge`]. Called again, it adds another one
    /// (a cluster and MQTT bridges, say): each is told of every change, in
    /// the order they were added; a connecting client's session is claimed
    /// from the first that brings one; shared subscriptions are left to the
    /// bridges if any of them [routes them](Bridge::routes_shared). A message
    /// one bridge [injects](BrokerHandle::inject) is handed to none of them.
    #[must_use]
    pub fn bridge(mut self, bridge: Arc<dyn Bridge>) -> Self {
        self.bridges.push(bridge);
        self
    }

    /// Keeps persistent sessions (their subscriptions, queued and in-flight
    /// QoS 1/2 messages, inbound QoS 2 identifiers) and retained messages in
    /// `store`, and recovers them from it at start. Without a store they
    /// live in memory only. See [`Store`], [`DiskStore`](crate::DiskStore).
    #[must_use]
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// When changes reach the store relative to the acknowledgements that
    /// depend on them ([`Durability::Immediate`] by default).
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Binds every listener and starts accepting connections. Must be called
    /// within a tokio runtime.
    ///
    /// # Errors
    /// - [`BrokerError::Tls`] when the TLS configuration of a TLS or secure
    ///   WebSocket listener is unusable: its certificate chain or private key
    ///   PEM does not parse or is empty, the key does not match the
    ///   certificate, or its client CA or client CRL PEM does not load.
    /// - [`BrokerError::Bind`] when a listener cannot be bound (or its local
    ///   address cannot be read).
    /// - [`BrokerError::Store`] when the store cannot be read
    ///   ([`Store::load`] fails, or the task loading it panics) or the
    ///   store's writer thread cannot be spawned.
    ///
    /// Listeners are set up in the order they were added, and the first error
    /// is returned. Nothing keeps running then: listeners already bound are
    /// closed.
    pub async fn start(self) -> Result<BrokerHandle, BrokerError> {
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        #[cfg(feature = "tls")]
        let mut tls = Vec::new();
        for spec in self.listeners {
            let (bound, local) = spec.bind().await?;
            #[cfg(feature = "tls")]
            tls.extend(bound.tls().map(|server| (local, server)));
            addrs.push(local);
            listeners.push(bound);
        }
        let event_capacity = self.limits.event_capacity.max(1);
        let bridge = crate::bridge::combine(self.bridges);
        // Read once: a broker checks every delivery or none.
        let checks_reads = self.authorizer.checks_reads();
        let mut state = State {
            bridge_shared: bridge.as_ref().is_some_and(|b| b.routes_shared()),
            bridge_wills: bridge.as_ref().is_some_and(|b| b.keeps_wills()),
            bridge,
            max_queued_bytes: self.limits.max_queued_bytes,
            max_offline_bytes: self.limits.max_offline_bytes,
            queue_qos0_offline: self.limits.queue_qos0_offline,
            max_retained: Some(self.limits.max_retained_messages),
            max_retained_bytes: self.limits.max_retained_bytes,
            retained_bytes: 0,
            system_retained: 0,
            reads: checks_reads.then(|| crate::state::Reads {
                authorizer: self.authorizer.clone(),
                clients: std::collections::HashMap::new(),
            }),
            ..State::default()
        };
        let mut writer = None;
        if let Some(store) = self.store {
            let loaded = {
                let store = store.clone();
                tokio::task::spawn_blocking(move || store.load())
                    .await
                    .map_err(|e| BrokerError::Store(crate::StoreError::Engine(e.to_string())))?
                    .map_err(BrokerError::Store)?
            };
            let (journal, thread) =
                Journal::start(store, self.durability).map_err(|e| BrokerError::Store(e.into()))?;
            let max_expiry = self.limits.max_session_expiry;
            let found = crate::store::recover::recover(&mut state, loaded, &journal, max_expiry);
            tracing::info!(
                sessions = found.sessions,
                expired_sessions = found.expired_sessions,
                messages = found.messages,
                retained = found.retained,
                skipped = found.skipped,
                "store recovered"
            );
            state.journal = Some(journal);
            writer = Some(thread);
        }
        let tracker = TaskTracker::new();
        #[cfg(unix)]
        let hibernator = match self.limits.hibernate_after {
            Some(_) => {
                match crate::hibernate::Hibernator::start(
                    tokio::runtime::Handle::current(),
                    tracker.clone(),
                ) {
                    Ok(hibernator) => Some(Arc::new(hibernator)),
                    Err(error) => {
                        tracing::warn!(%error, "idle connections will not hibernate");
                        None
                    }
                }
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            session_config: Arc::new(self.limits.session_config()),
            limits: self.limits,
            counters: Counters::default(),
            authenticator: self.authenticator,
            authorizer: self.authorizer,
            checks_subscriptions: self.checks_subscriptions,
            checks_reads,
            shutdown: CancellationToken::new(),
            timers: Notify::new(),
            events: broadcast::channel(event_capacity).0,
            stopped: CancellationToken::new(),
            journal: state.journal.clone(),
            state: Mutex::new(state),
            #[cfg(unix)]
            hibernator,
        });
        // The wills recovered from the store were allowed by the rules before
        // the restart: asked again, before any is published.
        recheck_waiting_wills(&shared).await;
        // Those due already (of clients connected at a crash, with no Will
        // Delay Interval; of sessions that ended while the broker was down)
        // go before a client can connect: a client that comes back at once
        // does not cancel a will that was due (MQTT-3.1.2-8).
        shared.lock().run_deadlines(
            shared.limits.max_queued_messages,
            &shared.counters,
            Instant::now(),
        );
        for listener in listeners {
            tracker.spawn(accept_loop(shared.clone(), listener, tracker.clone()));
        }
        tracker.spawn(deadline_loop(shared.clone()));
        // Zero is never, as `None` (a zero period would panic the task).
        if let Some(interval) = shared.limits.sys_interval.filter(|i| !i.is_zero()) {
            tracker.spawn(sys_loop(shared.clone(), interval));
        }
        tracing::info!(?addrs, "broker started");
        Ok(BrokerHandle {
            inner: Arc::new(HandleInner {
                direct: ListenerShared::direct(shared.clone()),
                shared,
                addrs,
                #[cfg(feature = "tls")]
                tls,
                tracker,
                writer: Mutex::new(writer),
            }),
        })
    }
}

/// Publishes delayed wills and ends expired sessions at their time.
async fn deadline_loop(shared: Arc<Shared>) {
    loop {
        let next = {
            let mut state = shared.lock();
            state.run_deadlines(
                shared.limits.max_queued_messages,
                &shared.counters,
                Instant::now(),
            )
        };
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            () = shared.timers.notified() => {}
            () = sleep => {}
        }
    }
}

struct HandleInner {
    shared: Arc<Shared>,
    /// What connections of [`BrokerHandle::serve_connection`] share.
    direct: Arc<ListenerShared>,
    addrs: Vec<SocketAddr>,
    /// The TLS and secure WebSocket listeners, by bound address.
    #[cfg(feature = "tls")]
    tls: Vec<(SocketAddr, crate::tls::TlsServer)>,
    tracker: TaskTracker,
    /// The store's writer thread, joined at shutdown.
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// A running broker: its addresses, in-process publish and subscribe, counters,
/// and shutdown. Cheap to clone. Dropping every handle does not stop the
/// broker: call [`shutdown`](Self::shutdown).
#[derive(Clone)]
pub struct BrokerHandle {
    inner: Arc<HandleInner>,
}

impl std::fmt::Debug for BrokerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerHandle")
            .field("addrs", &self.inner.addrs)
            .finish_non_exhaustive()
    }
}

/// A session the broker holds, from [`BrokerHandle::sessions`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// Its client identifier.
    pub client_id: String,
    /// A client is connected to it now (else it is kept for one that is away).
    pub connected: bool,
    /// Its Session Expiry Interval in seconds, as last known: 0 ends it with
    /// its connection, `u32::MAX` never (a 3.1.1 CleanSession 0 session).
    pub session_expiry_interval: u32,
    /// How many topic filters it subscribes to.
    pub subscriptions: usize,
}

/// Counters of a running broker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Open network connections.
    pub connections: u64,
    /// Accepted MQTT clients currently connected.
    pub clients_connected: u64,
    /// The most clients connected at once since the broker started.
    pub clients_maximum: u64,
    /// CONNECT packets the broker answered since it started, refused ones
    /// included (not those it could not decode).
    pub connects: u64,
    /// Network connections accepted since the broker started (those of
    /// [`BrokerHandle::serve_connection`] included).
    pub connections_accepted: u64,
    /// Sessions that ended because their Session Expiry Interval passed
    /// while their client was away, since the broker started.
    pub sessions_expired: u64,
    /// Sessions, connected or not.
    pub sessions: usize,
    /// Subscriptions, in-process ones and shared group memberships included.
    pub subscriptions: usize,
    /// Shared group memberships (`$share/{group}/{filter}` subscriptions), of
    /// [`subscriptions`](Self::subscriptions).
    pub shared_subscriptions: usize,
    /// Retained messages.
    pub retained: usize,
    /// Messages dropped undelivered: a queue was full (offline queue,
    /// connection queue, session queue, in-process subscription), a message
    /// over a limit was refused, a re-check withdrew the subscription it was
    /// queued for, or a session taken over late lost what its old connection
    /// held. Messages whose Message Expiry Interval passed are not counted.
    pub dropped_messages: u64,
    /// Publishers currently held back (not read) because a subscriber's
    /// queue is full, under
    /// [`OverloadPolicy::Backpressure`]
    /// (their message not acknowledged yet), or because their QoS 1/2 message
    /// took a subscriber's queue (QoS 0: every queue it went to) over a
    /// quarter of
    /// [`Limits::max_queued_bytes`](crate::Limits::max_queued_bytes) (at
    /// most 256 KiB) or of
    /// [`Limits::max_queued_messages`](crate::Limits::max_queued_messages) (pacing).
    pub blocked_publishers: u64,
    /// MQTT packets received from clients.
    pub packets_received: u64,
    /// MQTT packets sent to clients.
    pub packets_sent: u64,
    /// PUBLISH packets received from clients.
    pub messages_received: u64,
    /// PUBLISH packets sent to clients.
    pub messages_sent: u64,
    /// Payload bytes of the PUBLISH packets received from clients (topic,
    /// properties and headers not counted).
    pub publish_bytes_received: u64,
    /// Payload bytes of the PUBLISH packets sent to clients, counted as
    /// `publish_bytes_received` is.
    pub publish_bytes_sent: u64,
    /// Of the PUBLISH packets sent, the ones sent from an encoding shared with other
    /// subscribers of the same message (a message is encoded once per
    /// variant: protocol version, QoS, RETAIN, properties), with only the
    /// packet identifier written per connection.
    pub messages_sent_preencoded: u64,
    /// MQTT bytes read from client connections: the packets as encoded,
    /// counted above TLS and WebSocket (TLS records and handshakes, the
    /// WebSocket handshake and frame headers are not counted).
    pub bytes_received: u64,
    /// MQTT bytes written to client connections, counted as
    /// `bytes_received` is (without TLS and WebSocket framing).
    pub bytes_sent: u64,
    /// Idle connections hibernating now (see
    /// [`Limits::hibernate_after`](crate::Limits::hibernate_after)); they
    /// count in `connections` too.
    pub connections_hibernating: u64,
    /// Bytes set aside now for the rest of large packets being read (see
    /// [`Limits::max_read_ahead_bytes`](crate::Limits::max_read_ahead_bytes)).
    pub read_ahead_bytes: usize,
    /// Bytes of the wills with a delay held now, as
    /// [`Limits::max_delayed_will_bytes`](crate::Limits::max_delayed_will_bytes)
    /// counts them.
    pub delayed_will_bytes: usize,
    /// Bytes of the messages queued for absent clients, as
    /// [`Limits::max_offline_bytes`](crate::Limits::max_offline_bytes)
    /// counts them.
    pub offline_bytes: usize,
}

impl BrokerHandle {
    /// The bound address of each listener, in the order they were added.
    #[must_use]
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.inner.addrs
    }

    /// Replaces the certificate chain, key and client CA of the TLS or
    /// secure WebSocket listener bound to `addr` (one of
    /// [`local_addrs`](Self::local_addrs)): connections accepted from now on
    /// handshake with `tls`, those already open keep going. For a renewed
    /// certificate without a restart (`fulmar broker` does it on SIGHUP).
    ///
    /// # Errors
    /// [`BrokerError::Tls`] when `tls` does not parse or its key does not
    /// match its certificate (the listener keeps what it had), or when no
    /// TLS listener is bound to `addr`.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use fulmar_broker::{Broker, TlsConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let load = || -> std::io::Result<TlsConfig> {
    ///     Ok(TlsConfig::new(std::fs::read("cert.pem")?, std::fs::read("key.pem")?))
    /// };
    /// let broker = Broker::builder()
    ///     .tls_listener("127.0.0.1:8883", load()?)
    ///     .start()
    ///     .await?;
    /// // ... the certificate was renewed ...
    /// broker.reload_tls(broker.local_addrs()[0], &load()?)?;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "tls")]
    pub fn reload_tls(&self, addr: SocketAddr, tls: &TlsConfig) -> Result<(), BrokerError> {
        let Some((_, server)) = self.inner.tls.iter().find(|(bound, _)| *bound == addr) else {
            return Err(BrokerError::Tls {
                addr: addr.to_string(),
                reason: "no TLS listener is bound to this address".to_owned(),
            });
        };
        server.replace(tls.server_config(&addr.to_string())?);
        tracing::info!(%addr, "TLS configuration replaced");
        Ok(())
    }

    /// The current counters.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.inner.shared.stats()
    }

    /// A new observer of [`BrokerEvent`]s from now on (see [`Events`]).
    #[must_use]
    pub fn events(&self) -> Events {
        let shared = &self.inner.shared;
        Events::new(shared.events.subscribe(), shared.stopped.clone())
    }

    /// Serves one MQTT connection over a byte stream the application opened
    /// itself: a Unix domain socket, a QUIC stream, an in-memory pipe, a
    /// transport with its own handshake. The connection is one like those of
    /// the listeners: it counts towards
    /// [`Limits::max_connections`](crate::Limits::max_connections) and
    /// [`Stats::connections`], gets the same limits, authentication and
    /// authorization, and is closed by [`shutdown`](Self::shutdown), which
    /// waits for it (one served after the shutdown is closed at once without
    /// an answer). `peer` is the address the [`Authenticator`], the
    /// [`BrokerEvent`]s and the logs report for it; for a transport without
    /// one, pass an address that means something to the application.
    /// Such a connection never hibernates.
    ///
    /// The returned [`ServedConnection`] completes when the connection has
    /// ended; dropping it does not end the connection. Must be called within
    /// a tokio runtime.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use fulmar_broker::Broker;
    /// use fulmar_codec::{Connect, MqttString, Packet, ProtocolVersion, decode};
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // A broker without listeners: its one client is at the end of a pipe.
    /// let broker = Broker::builder().start().await?;
    /// let (mut client, server) = tokio::io::duplex(4096);
    /// let connection = broker.serve_connection(server, "127.0.0.1:0".parse()?);
    ///
    /// let mut wire = BytesMut::new();
    /// Packet::from(Connect::new(ProtocolVersion::V5, MqttString::from("pipe")))
    ///     .encode(ProtocolVersion::V5, &mut wire)?;
    /// client.write_all(&wire).await?;
    /// let mut answer = BytesMut::new();
    /// let connack = loop {
    ///     client.read_buf(&mut answer).await?;
    ///     if let Some(packet) = decode(&mut answer, ProtocolVersion::V5, 1 << 20)? {
    ///         break packet;
    ///     }
    /// };
    /// assert!(matches!(connack, Packet::ConnAck(ack) if !ack.reason_code.is_error()));
    /// assert_eq!(broker.stats().connections, 1);
    ///
    /// drop(client);
    /// connection.await;
    /// broker.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn serve_connection<S>(&self, stream: S, peer: SocketAddr) -> ServedConnection
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let shared = &self.inner.shared;
        let (slot, over_limit) = Slot::open(&self.inner.direct);
        let peer = Peer {
            addr: peer,
            certificate: None,
        };
        let stream = crate::connection::Custom(stream);
        ServedConnection(self.inner.tracker.spawn(crate::connection::run(
            shared.clone(),
            stream,
            peer,
            over_limit,
            slot,
            Instant::now(),
        )))
    }

    /// Publishes a message from the application, as a client would, without
    /// a socket. An empty retained payload deletes the retained message.
    ///
    /// It is routed at once and nothing is waited for: a subscriber whose
    /// queue is full misses it (counted as dropped), and with a store it is
    /// not yet committed when this returns. An application that publishes
    /// faster than its subscribers (or the store) take messages uses
    /// [`publish_paced`](Self::publish_paced) instead.
    ///
    /// # Errors
    /// [`BrokerError::InvalidTopic`]; [`BrokerError::LimitExceeded`] for a
    /// topic over the limits, a new retained topic over the quota, or a store
    /// that has fallen behind (a slow disk: the changes waiting for it passed
    /// the bound past which clients' publishes wait too; nothing was
    /// published, and [`publish_paced`](Self::publish_paced) would wait);
    /// [`BrokerError::Shutdown`].
    pub fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Result<(), BrokerError> {
        let shared = &self.inner.shared;
        let (name, publish) = self.app_message(topic, payload.into(), qos, retain)?;
        if shared.journal.as_ref().is_some_and(|j| j.backlogged()) {
            return Err(BrokerError::LimitExceeded("store backlog"));
        }
        self.route_app(&mut shared.lock(), &name, &publish, None)
    }

    /// [`publish`](Self::publish) with the flow control that a client's
    /// PUBLISH gets: the message is routed now, and [`Pacing::wait`] then
    /// waits as for [`inject_paced`](Self::inject_paced) (room in full
    /// queues under [`OverloadPolicy::Backpressure`], queues over their
    /// pacing threshold, the store's commit under [`Durability::Immediate`]
    /// or while the store has fallen behind). An application that awaits
    /// each `wait` publishes no faster than its subscribers and the store
    /// take the messages, and knows a QoS 1/2 message stored once it returns.
    ///
    /// # Errors
    /// As [`publish`](Self::publish), except for a store that has fallen
    /// behind (then [`Pacing::wait`] waits for it); [`Pacing::wait`] returns
    /// [`BrokerError::Store`] when the store failed to commit the message.
    ///
    /// # Example
    ///
    /// ```
    /// use fulmar_broker::Broker;
    /// use fulmar_codec::QoS;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), fulmar_broker::BrokerError> {
    /// let broker = Broker::builder().start().await?;
    /// let mut sub = broker.subscribe("jobs/#")?;
    /// for i in 0..3 {
    ///     broker
    ///         .publish_paced(&format!("jobs/{i}"), "run", QoS::AtLeastOnce, false)?
    ///         .wait()
    ///         .await?;
    /// }
    /// assert_eq!(sub.recv().await.unwrap().topic, "jobs/0");
    /// broker.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn publish_paced(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Result<Pacing, BrokerError> {
        let (name, publish) = self.app_message(topic, payload.into(), qos, retain)?;
        let (routed, pacing) =
            self.paced(|state, held| self.route_app(state, &name, &publish, Some(held)));
        routed.map(|()| pacing)
    }

    /// Routes an application's message (a new retained topic within the
    /// quota).
    fn route_app(
        &self,
        state: &mut State,
        name: &TopicName,
        publish: &Publish,
        held: Option<&mut Held>,
    ) -> Result<(), BrokerError> {
        let shared = &self.inner.shared;
        if !state.retained_fits(name, publish, Instant::now()) {
            return Err(BrokerError::LimitExceeded("retained messages"));
        }
        state.route(
            name,
            publish,
            Origin::App,
            shared.limits.max_queued_messages,
            &shared.counters,
            Instant::now(),
            held,
        );
        Ok(())
    }

    /// The checks of an application's message, and the message.
    fn app_message(
        &self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
    ) -> Result<(TopicName, Publish), BrokerError> {
        let shared = &self.inner.shared;
        if shared.shutdown.is_cancelled() {
            return Err(BrokerError::Shutdown);
        }
        let name: TopicName = topic.parse().map_err(BrokerError::InvalidTopic)?;
        let mut publish = Publish::new(MqttString::from(topic.to_owned()), payload);
        publish.qos = qos;
        publish.retain = retain;
        if !shared.limits.topic_fits(topic) {
            return Err(BrokerError::LimitExceeded("topic length or levels"));
        }
        Ok((name, publish))
    }

    /// Routes a message that a [`Bridge`] brought from elsewhere to the
    /// subscribers of this broker, as if a client had published it here: a
    /// retained one is stored (an empty retained payload deletes), QoS is
    /// downgraded per subscription, v5 properties are kept. It is not handed
    /// back to the bridge. Shared subscriptions get it only when the bridge
    /// does not [route them itself](Bridge::routes_shared).
    ///
    /// # Errors
    /// [`BrokerError::InvalidTopic`]; [`BrokerError::Shutdown`].
    pub fn inject(&self, publish: &Publish) -> Result<(), BrokerError> {
        let shared = &self.inner.shared;
        if shared.shutdown.is_cancelled() {
            return Err(BrokerError::Shutdown);
        }
        let name: TopicName = publish.topic.parse().map_err(BrokerError::InvalidTopic)?;
        shared.lock().route(
            &name,
            publish,
            Origin::Bridge,
            shared.limits.max_queued_messages,
            &shared.counters,
            Instant::now(),
            None,
        );
        Ok(())
    }

    /// [`inject`](Self::inject) with the flow control that a client's PUBLISH
    /// gets, for a [`Bridge`] that acknowledges a QoS 1/2 message to where it
    /// came from (and reads the next one) only once the returned [`Pacing`]
    /// is over, as the broker does for its clients. The message is routed
    /// now, before this returns (so a caller that keeps its own order, one
    /// message at a time, keeps it here); [`Pacing::wait`] then:
    ///
    /// - under [`OverloadPolicy::Backpressure`], hands each copy for a
    ///   subscriber whose connection queue was full to it once there is room,
    ///   for at most [`Limits::backpressure_timeout`] (then it is dropped and
    ///   counted): [`inject`](Self::inject) drops them at once, so a bridge
    ///   that acknowledged the message had lost it;
    /// - under both policies, when the message took a subscriber's queue over
    ///   a quarter of [`Limits::max_queued_messages`] or
    ///   [`Limits::max_queued_bytes`] (at most 256 KiB), waits until that queue is back under
    ///   it, or [`Limits::pacing_timeout`], so that the caller slows down to
    ///   what the subscribers take;
    /// - with a store whose [`Durability`] is immediate, or one that has
    ///   fallen behind (a slow disk: the changes waiting for it passed the
    ///   bound past which clients' publishes wait too), waits until what the
    ///   message left in the store is committed.
    ///
    /// # Errors
    /// [`BrokerError::InvalidTopic`]; [`BrokerError::Shutdown`].
    ///
    /// # Example
    ///
    /// ```
    /// use fulmar_broker::Broker;
    /// use fulmar_codec::{MqttString, Publish, QoS};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), fulmar_broker::BrokerError> {
    /// let broker = Broker::builder().start().await?;
    /// let mut sub = broker.subscribe("remote/#")?;
    /// let mut message = Publish::new(MqttString::from("remote/t"), "x".into());
    /// message.qos = QoS::AtLeastOnce;
    /// broker.inject_paced(&message)?.wait().await?;
    /// // ... now acknowledge it to the remote broker ...
    /// assert_eq!(sub.recv().await.unwrap().payload, "x");
    /// broker.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn inject_paced(&self, publish: &Publish) -> Result<Pacing, BrokerError> {
        let shared = &self.inner.shared;
        if shared.shutdown.is_cancelled() {
            return Err(BrokerError::Shutdown);
        }
        let name: TopicName = publish.topic.parse().map_err(BrokerError::InvalidTopic)?;
        let (_routed, pacing) = self.paced(|state, held| {
            state.route(
                &name,
                publish,
                Origin::Bridge,
                shared.limits.max_queued_messages,
                &shared.counters,
                Instant::now(),
                Some(held),
            )
        });
        Ok(pacing)
    }

    /// Runs `hand_over` (routing a message, with back-pressure and pacing
    /// noted in the [`Held`] it is given) under the state lock, and returns
    /// its result with the [`Pacing`] to wait on: the copies to deliver once
    /// there is room, the queues to wait on, the commit of what it journaled.
    fn paced<T>(&self, hand_over: impl FnOnce(&mut State, &mut Held) -> T) -> (T, Pacing) {
        let shared = &self.inner.shared;
        let mut held = Held {
            backpressure: shared.limits.overload_policy == OverloadPolicy::Backpressure,
            ..Held::default()
        };
        let mut state = shared.lock();
        let journaled = state.journal.as_ref().map(|j| j.issued());
        let result = hand_over(&mut state, &mut held);
        let durable_at = state
            .journal
            .as_ref()
            .map(|j| j.issued())
            .filter(|now| Some(*now) != journaled);
        drop(state);
        let pacing = Pacing {
            shared: shared.clone(),
            blocked: held.blocked,
            paced: held.paced,
            durable_at,
            in_hand: None,
        };
        (result, pacing)
    }

    /// Delivers `publish` to one member of the shared subscription `filter`
    /// on this broker, chosen as local routing would; `Ok(false)` when the
    /// group has no member here. For a [`Bridge`] that
    /// [routes shared subscriptions](Bridge::routes_shared).
    ///
    /// # Errors
    /// [`BrokerError::Shutdown`].
    pub fn deliver_shared(
        &self,
        filter: &SharedFilter,
        publish: &Publish,
    ) -> Result<bool, BrokerError> {
        let shared = &self.inner.shared;
        if shared.shutdown.is_cancelled() {
            return Err(BrokerError::Shutdown);
        }
        Ok(shared.lock().deliver_shared(
            filter,
            publish,
            shared.limits.max_queued_messages,
            &shared.counters,
            Instant::now(),
            None,
        ))
    }

    /// [`deliver_shared`](Self::deliver_shared) with the flow control of
    /// [`inject_paced`](Self::inject_paced): the copy for the chosen member
    /// waits for room in its connection's queue under
    /// [`OverloadPolicy::Backpressure`] instead of being dropped, and a
    /// queue taken past a quarter of its bound is waited on, both through
    /// the returned [`Pacing`]. `Ok(None)` when the group has no member here.
    /// For a bridge that brings a group the messages of a publisher
    /// elsewhere at the pace its member takes them, as a local publisher
    /// is paced.
    ///
    /// # Errors
    /// [`BrokerError::Shutdown`].
    pub fn deliver_shared_paced(
        &self,
        filter: &SharedFilter,
        publish: &Publish,
    ) -> Result<Option<Pacing>, BrokerError> {
        let shared = &self.inner.shared;
        if shared.shutdown.is_cancelled() {
            return Err(BrokerError::Shutdown);
        }
        let (delivered, pacing) = self.paced(|state, held| {
            state.deliver_shared(
                filter,
                publish,
                shared.limits.max_queued_messages,
                &shared.counters,
                Instant::now(),
                Some(held),
            )
        });
        Ok(delivered.then_some(pacing))
    }

    /// Subscribes in process to `filter` (shared filters `$share/{group}/...`
    /// included), at QoS 2. Matching retained messages are delivered first.
    ///
    /// # Errors
    /// [`BrokerError::InvalidFilter`]; [`BrokerError::Shutdown`].
    pub fn subscribe(&self, filter: &str) -> Result<Subscription, BrokerError> {
        let shared = &self.inner.shared;
        if shared.shutdown.is_cancelled() {
            return Err(BrokerError::Shutdown);
        }
        let filter: SubscriptionFilter = filter.parse().map_err(BrokerError::InvalidFilter)?;
        let capacity = shared.limits.max_queued_messages.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let options = SubOptions {
            qos: QoS::ExactlyOnce,
            no_local: false,
            retain_as_published: true,
            id: None,
        };
        let id = {
            let mut state = shared.lock();
            let id = state.next_id();
            if filter.group().is_none() {
                let mut retained = Vec::new();
                let now = Instant::now();
                let left_out =
                    state.retained_for(filter.filter(), options, now, capacity, &mut retained);
                shared.counters.drop_many(left_out);
                for publish in retained {
                    if tx.try_send(publish.into()).is_err() {
                        shared.counters.drop_one();
                    }
                }
            }
            state.add_subscription(&filter, Subscriber::Local(id), options);
            state.locals.insert(id, tx);
            id
        };
        Ok(Subscription {
            rx,
            id,
            filter,
            shared: shared.clone(),
        })
    }

    /// Takes the session of `client_id` away from this broker, for a
    /// [`Bridge`] that moves it to another one: a connection holding it is
    /// closed as a session takeover closes it (MQTT 5.0: DISCONNECT 0x8E
    /// Session taken over; its will is handled as the takeover would) and
    /// hands its state over; then the session is removed here, from the
    /// store too, its pending will dropped, and returned with its
    /// subscriptions, in-flight and queued QoS 1/2 messages and inbound
    /// QoS 2 identifiers. `None` when there is no such session.
    ///
    /// # Example
    ///
    /// ```
    /// use fulmar_broker::Broker;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), fulmar_broker::BrokerError> {
    /// let broker = Broker::builder().start().await?;
    /// assert!(broker.take_session("nobody").await.is_none());
    /// broker.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn take_session(&self, client_id: &str) -> Option<SessionExport> {
        self.take_session_with(client_id, false).await
    }

    /// [`take_session`](Self::take_session), but the will of a connected
    /// client is dropped, not published: for a [`Bridge`] whose other node
    /// published it already (it took the session over from this broker
    /// while this one was cut off, say).
    ///
    /// ```
    /// use fulmar_broker::Broker;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), fulmar_broker::BrokerError> {
    /// let broker = Broker::builder().start().await?;
    /// assert!(broker.take_session_without_will("nobody").await.is_none());
    /// broker.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn take_session_without_will(&self, client_id: &str) -> Option<SessionExport> {
        self.take_session_with(client_id, true).await
    }

    async fn take_session_with(&self, client_id: &str, drop_will: bool) -> Option<SessionExport> {
        let shared = &self.inner.shared;
        let id: Arc<str> = Arc::from(client_id);
        loop {
            let waiting = {
                let mut state = shared.lock();
                let owner = state.sessions.get(&id)?.owner.as_ref();
                let (tx, rx) = tokio::sync::oneshot::channel();
                match owner {
                    Some(owner) if owner.control.send(Control::TakeOver(tx, drop_will)).is_ok() => {
                        Some((owner.control.clone(), rx))
                    }
                    _ => {
                        let export = export_session(&mut state, &id);
                        if let Some(bridge) = &state.bridge {
                            bridge.session_gone(&id);
                        }
                        return export;
                    }
                }
            };
            if let Some((inbox, handed_over)) = waiting
                && tokio::time::timeout(HANDOVER_TIMEOUT, handed_over)
                    .await
                    .is_err()
            {
                tracing::warn!(%id, "connection did not hand its session over in time");
                let mut state = shared.lock();
                if let Some(entry) = state.sessions.get_mut(&id)
                    && entry.owner.as_ref().is_some_and(|o| o.is(&inbox))
                {
                    entry.owner = None;
                }
            }
        }
    }

    /// Asks the [`Authorizer`] again about the subscriptions of every
    /// connected client, and removes the ones it denies now. Call it when
    /// the rules behind the authorizer changed, for example after reloading
    /// an ACL file (`fulmar broker` does on SIGHUP). MQTT has no way to tell
    /// a client that a subscription was withdrawn: nothing more is routed to
    /// it through that subscription (what was queued for it already still
    /// arrives), and a [`BrokerEvent::Unsubscribed`] is emitted.
    /// A connected client's will is checked too, and so is a will waiting
    /// for its Will Delay Interval: one whose topic the authorizer denies now
    /// is dropped, as the client's PUBLISH would be. A disconnected
    /// session's subscriptions are checked when its client comes back, as
    /// are every resumed session's once an authorizer is set (the client may
    /// connect as another user than before). Returns once every connected
    /// client and waiting will was checked.
    ///
    /// # Example
    ///
    /// ```
    /// use fulmar_broker::{Authorizer, Broker, ClientInfo};
    ///
    /// struct ReadOnly;
    ///
    /// #[async_trait::async_trait]
    /// impl Authorizer for ReadOnly {
    ///     async fn authorize_publish(&self, _: &ClientInfo, _: &str) -> bool {
    ///         false
    ///     }
    ///     async fn authorize_subscribe(&self, _: &ClientInfo, filter: &str) -> bool {
    ///         filter.starts_with("public/")
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), fulmar_broker::BrokerError> {
    /// let broker = Broker::builder().authorizer(ReadOnly).start().await?;
    /// // ... the rules changed ...
    /// broker.reauthorize().await;
    /// broker.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn reauthorize(&self) {
        let (round, mut done) = mpsc::channel::<()>(1);
        {
            let state = self.inner.shared.lock();
            for owner in state.sessions.values().filter_map(|e| e.owner.as_ref()) {
                // A connection that is ending drops it at once.
                let _ = owner.control.send(Control::Reauthorize(round.clone()));
            }
        }
        drop(round);
        // `None` once every connection dropped its sender.
        let _ = done.recv().await;
        recheck_waiting_wills(&self.inner.shared).await;
    }

    /// Closes the connections of the clients `which` selects (by identifier
    /// or user name, say: a user removed from a password file), as the
    /// broker closes a connection itself: MQTT 5.0 DISCONNECT with `code`
    /// (0x87 Not authorized, for one), 3.1.1 a closed connection. Their
    /// sessions and wills are handled as for any connection the broker
    /// closes. Returns how many connections were asked (each decides with
    /// its own [`ClientInfo`]).
    ///
    /// ```
    /// use fulmar_broker::Broker;
    /// use fulmar_codec::DisconnectReasonCode;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), fulmar_broker::BrokerError> {
    /// let broker = Broker::builder().start().await?;
    /// broker.disconnect_clients(
    ///     |client| client.username.as_deref() == Some("bob"),
    ///     DisconnectReasonCode::NotAuthorized,
    /// );
    /// broker.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn disconnect_clients(
        &self,
        which: impl Fn(&ClientInfo) -> bool + Send + Sync + 'static,
        code: fulmar_codec::DisconnectReasonCode,
    ) -> usize {
        let which = crate::state::ClientFilter(Arc::new(which));
        let state = self.inner.shared.lock();
        let mut asked = 0;
        for owner in state.sessions.values().filter_map(|e| e.owner.as_ref()) {
            if owner
                .control
                .send(Control::DisconnectIf(which.clone(), code))
                .is_ok()
            {
                asked += 1;
            }
        }
        asked
    }
}

/// Asks the authorizer about the topic of every will waiting for its delay
/// (its client is gone, so no connection does), and drops those it denies
/// now: after [`BrokerHandle::reauthorize`], and at start for the wills
/// recovered from the store (the rules may have changed with the restart).
async fn recheck_waiting_wills(shared: &Shared) {
    let waiting: Vec<(Arc<str>, ClientInfo, String, Instant)> = shared
        .lock()
        .sessions
        .iter()
        .filter(|(_, e)| e.owner.is_none())
        .filter_map(|(id, e)| {
            let will = e.will()?;
            Some((
                id.clone(),
                will.info.clone(),
                will.publish.topic.to_string(),
                will.at,
            ))
        })
        .collect();
    for (id, info, topic, at) in waiting {
        if shared.authorizer.authorize_publish(&info, &topic).await {
            continue;
        }
        let mut state = shared.lock();
        // Unless it was published, cancelled or replaced meanwhile.
        let Some(entry) = state.sessions.get_mut(&id) else {
            continue;
        };
        if entry.owner.is_some() || entry.will().is_none_or(|w| w.at != at) {
            continue;
        }
        drop(entry.take_will());
        // Nor after a restart: the record, without it.
        state.persist_away_session(&id);
        tracing::info!(client_id = %id, topic = %topic, "will withdrawn: the authorizer denies its topic now");
        if let Some(bridge) = &state.bridge {
            bridge.will_cleared(&id);
        }
    }
}

impl BrokerHandle {
    /// Whether this broker holds a session for `client_id` (connected or
    /// not).
    ///
    /// ```
    /// use fulmar_broker::Broker;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), fulmar_broker::BrokerError> {
    /// let broker = Broker::builder().start().await?;
    /// assert!(!broker.has_session("sensor-7"));
    /// broker.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn has_session(&self, client_id: &str) -> bool {
        self.inner.shared.lock().sessions.contains_key(client_id)
    }

    /// Every session this broker holds, sorted by client identifier: the
    /// connected clients' and those kept for clients that are away (until
    /// their Session Expiry Interval runs out). A snapshot: clients come
    /// and go meanwhile; [`events`](Self::events) tells of each change.
    ///
    /// ```
    /// use fulmar_broker::Broker;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), fulmar_broker::BrokerError> {
    /// let broker = Broker::builder().start().await?;
    /// let connected = broker.sessions().iter().filter(|s| s.connected).count();
    /// assert_eq!(connected, 0);
    /// broker.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let mut all: Vec<SessionInfo> = self
            .inner
            .shared
            .lock()
            .sessions
            .iter()
            .map(|(id, entry)| SessionInfo {
                client_id: id.to_string(),
                connected: entry.owner.is_some(),
                session_expiry_interval: entry.expiry,
                subscriptions: entry.filters.len(),
            })
            .collect();
        all.sort_unstable_by(|a, b| a.client_id.cmp(&b.client_id));
        all
    }

    /// Every retained message this broker holds whose expiry has not
    /// passed, as a new subscription to `#` would get it (RETAIN set,
    /// Message Expiry Interval reduced by the time it was held), for a
    /// [`Bridge`] that writes them into a store of its own again. Topics
    /// starting with `$` are left out, as `#` leaves them out [MQTT-4.7.2-1].
    /// The payloads are shared, not copied.
    ///
    /// ```
    /// use fulmar_broker::Broker;
    /// use fulmar_codec::Publish;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), fulmar_broker::BrokerError> {
    /// let broker = Broker::builder().start().await?;
    /// let mut publish = Publish::new("lights/hall".into(), "on".into());
    /// publish.retain = true;
    /// broker.inject(&publish)?;
    /// let retained = broker.retained_messages();
    /// assert_eq!(retained.len(), 1);
    /// assert_eq!(&*retained[0].topic, "lights/hall");
    /// broker.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn retained_messages(&self) -> Vec<Publish> {
        let Ok(all) = TopicFilter::try_from("#") else {
            return Vec::new();
        };
        self.retained_matching(&all, usize::MAX).0
    }

    /// The retained messages matching `filter`, at most `max` of them, as a
    /// new subscription to it with QoS 2 and Retain As Published would get
    /// them (RETAIN set, Message Expiry Interval reduced by the time it was
    /// held; a filter starting with a wildcard leaves out topics starting
    /// with `$`, [MQTT-4.7.2-1]), and whether more matched. For a
    /// [`Bridge`] that hands them on (mosquitto's bridges publish the
    /// retained messages of their `out` topics to the remote broker each
    /// time they connect). The payloads are shared, not copied. The broker
    /// stops looking at the first match beyond `max` (how many more there
    /// are is not counted): the time it holds its lock for this grows with
    /// `max`, not with the number of retained messages.
    #[must_use]
    pub fn retained_matching(&self, filter: &TopicFilter, max: usize) -> (Vec<Publish>, bool) {
        self.retained_matching_where(filter, max, |_| true)
    }

    /// As [`retained_matching`](Self::retained_matching), only the messages
    /// whose topic `wanted` accepts (it is called under the broker's lock,
    /// for each live match until `max` are found and one more is: keep it
    /// short, and do not call the broker from it). Those it refuses count
    /// neither towards `max` nor as more.
    #[must_use]
    pub fn retained_matching_where(
        &self,
        filter: &TopicFilter,
        max: usize,
        mut wanted: impl FnMut(&TopicName) -> bool,
    ) -> (Vec<Publish>, bool) {
        let options = SubOptions {
            qos: QoS::ExactlyOnce,
            no_local: false,
            retain_as_published: true,
            id: None,
        };
        let mut out = Vec::new();
        let more = self.inner.shared.lock().retained_first(
            filter,
            options,
            Instant::now(),
            max,
            &mut out,
            &mut wanted,
        );
        (out, more)
    }

    /// Installs a session brought from elsewhere as a disconnected one, for
    /// a [`Bridge`] that takes over the sessions of a broker that is gone:
    /// its subscriptions start matching at once, its messages are queued
    /// (in-flight ones resent when the client connects), and it expires
    /// by its Session Expiry Interval counted from
    /// [`disconnected_at`](crate::StoredSession::disconnected_at) (from now
    /// when unknown). Kept in the store when it has one. Returns `false`,
    /// changing nothing, when this broker already has a session for that
    /// client (connected or not) or the session has expired.
    ///
    /// # Example
    ///
    /// ```
    /// use fulmar_broker::{Broker, SessionExport, StoredSession};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), fulmar_broker::BrokerError> {
    /// let broker = Broker::builder().start().await?;
    /// let export = SessionExport {
    ///     session: StoredSession {
    ///         client_id: "sensor-7".into(),
    ///         expiry_interval: 3600,
    ///         disconnected_at: None,
    ///         subscriptions: Vec::new(),
    ///         will: None,
    ///     },
    ///     messages: Vec::new(),
    ///     incoming: Vec::new(),
    /// };
    /// assert!(broker.adopt_session(export.clone()));
    /// assert_eq!(broker.stats().sessions, 1);
    /// assert!(!broker.adopt_session(export), "there is one already");
    /// broker.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn adopt_session(&self, export: SessionExport) -> bool {
        let shared = &self.inner.shared;
        let id = export.session.client_id.clone();
        // Held to this broker's limit, as a session recovered at start is.
        let expiry = export
            .session
            .expiry_interval
            .min(shared.limits.max_session_expiry);
        let now = Instant::now();
        let now_unix = unix_millis();
        let since = export.session.disconnected_at.unwrap_or(now_unix);
        let expires_at = expiry_deadline(expiry, since, now, now_unix);
        if expiry == 0 || expires_at.is_some_and(|at| at <= now) {
            return false;
        }
        let mut state = shared.lock();
        if state.sessions.contains_key(&id) {
            return false;
        }
        // A will brought along is the bridge's (`Bridge::will_set`).
        let record = StoredSession {
            disconnected_at: Some(since),
            expiry_interval: expiry,
            will: None,
            ..export.session.clone()
        };
        install_session(
            &mut state,
            export,
            expiry,
            shared.limits.max_queued_messages,
            shared.limits.max_queued_bytes,
            &shared.counters,
        );
        if let Some(journal) = &state.journal {
            journal.push(StoreOp::PutSession(record));
        }
        if let Some(entry) = state.sessions.get_mut(&id)
            && entry.owner.is_none()
        {
            entry.away().expires_at = expires_at;
            entry.away().disconnected_at = Some(since);
        }
        if let Some(at) = expires_at {
            state.schedule(&id, at);
            drop(state);
            // The deadline task sleeps until the deadlines it knew of.
            shared.timers.notify_one();
        }
        true
    }

    /// Completes once the broker begins to shut down ([`shutdown`](Self::shutdown)
    /// was called), for tasks that work on its behalf (a bridge) and must end
    /// with it.
    ///
    /// # Example
    ///
    /// ```
    /// use fulmar_broker::Broker;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), fulmar_broker::BrokerError> {
    /// let broker = Broker::builder().start().await?;
    /// let watcher = tokio::spawn({
    ///     let broker = broker.clone();
    ///     async move { broker.shutting_down().await }
    /// });
    /// broker.shutdown().await;
    /// watcher.await.unwrap();
    /// # Ok(())
    /// # }
    /// ```
    pub async fn shutting_down(&self) {
        self.inner.shared.shutdown.cancelled().await;
    }

    /// Stops the broker gracefully: stops accepting, disconnects every client
    /// (MQTT 5.0: DISCONNECT 0x8B Server shutting down), ends in-process
    /// subscriptions, and waits until every task has finished.
    ///
    /// The clients still connected are disconnected without having sent a
    /// DISCONNECT, so their wills are published (MQTT-3.1.2-8), as mosquitto
    /// does; persistent sessions and the retained messages in the store get
    /// them before it is closed.
    ///
    /// A will with a Will Delay Interval (MQTT 5.0), of a client still
    /// connected or of one gone and waiting out the delay, stays in the
    /// record of its session when the session is kept in the store (and no
    /// [`Bridge::keeps_wills`](crate::Bridge::keeps_wills)): the delay runs
    /// on from the disconnection, across the restart, and the will is
    /// published when it has passed (at once at the next start if it passed
    /// while the broker was down), unless the client came back within it
    /// (v5:MQTT-3.1.3-9). mosquitto publishes them all at shutdown instead.
    /// The other wills with a delay, of sessions that end with their
    /// connection or of a broker without a store, are published at
    /// shutdown, before their delay has passed: a will left waiting there
    /// would never be published (MQTT-3.1.2-8). (A crash keeps the wills of
    /// persistent sessions too: see [`WillDue`](crate::WillDue).)
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        let limits = &inner.shared.limits;
        let publish_pending_wills = || {
            inner.shared.lock().publish_pending_wills(
                limits.max_queued_messages,
                &inner.shared.counters,
                Instant::now(),
            );
        };
        // First while their subscribers are still connected.
        if !inner.shared.shutdown.is_cancelled() {
            publish_pending_wills();
        }
        inner.shared.shutdown.cancel();
        #[cfg(unix)]
        if let Some(hibernator) = &inner.shared.hibernator {
            hibernator.stop();
        }
        inner.tracker.close();
        inner.tracker.wait().await;
        // Those of connections that ended just before the shutdown began.
        publish_pending_wills();
        inner.shared.lock().locals.clear();
        // Every session was stored by its connection: commit the rest.
        if let Some(journal) = &inner.shared.journal {
            journal.close();
            let writer = inner
                .writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(writer) = writer {
                let _ = tokio::task::spawn_blocking(move || writer.join()).await;
            }
        }
        inner.shared.stopped.cancel();
        tracing::info!("broker stopped");
    }
}

/// A connection started by [`BrokerHandle::serve_connection`]: a future
/// that completes when the connection has ended (closed by either side, or
/// by the broker's shutdown). Dropping it does not end the connection.
#[derive(Debug)]
pub struct ServedConnection(tokio::task::JoinHandle<()>);

impl ServedConnection {
    /// Whether the connection has ended.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl Future for ServedConnection {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        // The task only fails by panicking, which the runtime has reported.
        std::pin::Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// How long [`BrokerHandle::take_session`] waits for a connection to hand
/// its session over.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a CONNECT waits for [`Bridge::claim_session`].
const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);

/// Tells the bridge that session `id` is connected here, with its record
/// ([`Bridge::session_online`]): at CONNACK, and, with `changed`, after its
/// subscriptions changed (only when it outlives its connection).
pub(crate) fn report_online(shared: &Shared, id: &Arc<str>, changed: bool) {
    let state = shared.lock();
    if let Some(bridge) = &state.bridge
        && (!changed || state.sessions.get(id).is_some_and(|e| e.expiry > 0))
        && let Some(record) = state.session_record(id, None)
    {
        bridge.session_online(id, &record);
    }
}

/// Tells the bridge that session `id` stays here without its connection
/// ([`Bridge::session_offline`]).
pub(crate) fn report_offline(state: &State, id: &Arc<str>) {
    if let Some(bridge) = &state.bridge
        && let Some(record) = state.session_record(id, Some(unix_millis()))
    {
        bridge.session_offline(id, &record);
    }
}

/// Removes the session `id`, which no connection holds, and returns it.
fn export_session(state: &mut State, id: &Arc<str>) -> Option<SessionExport> {
    let now = Instant::now();
    let now_unix = unix_millis();
    let session = state.session_record(id, Some(now_unix))?;
    let mut entry = state.remove_session(id)?;
    if entry.has_will()
        && let Some(bridge) = &state.bridge
    {
        // The session goes on elsewhere: as a reconnect would, it cancels the will.
        bridge.will_cleared(id);
    }
    let away = entry.take_away();
    // The messages of the stored session state have waited since it was
    // stored: stamped so, the broker that imports them counts that time
    // against their Message Expiry Interval (v5:MQTT-3.3.2-5, v5:MQTT-3.3.2-6).
    let stored_since = away.stored_at.map_or(now_unix, |at| {
        let away_for = u64::try_from(now.saturating_duration_since(at).as_millis());
        now_unix.saturating_sub(away_for.unwrap_or(u64::MAX))
    });
    let stored_message = |publish: Publish, packet_id, released| StoredMessage {
        publish,
        stored_at: stored_since,
        packet_id,
        released,
    };
    let mut messages = Vec::new();
    for out in away.stored.outgoing() {
        match out {
            fulmar_session::Outgoing::Publish(publish) => {
                let mut publish = (**publish).clone();
                let packet_id = publish.packet_id.take();
                publish.dup = false;
                messages.push(stored_message(publish, packet_id, false));
            }
            fulmar_session::Outgoing::PubRel(packet_id) => {
                // Only the identifier counts: the message was received.
                let mut publish = Publish::new(MqttString::from("-"), Bytes::new());
                publish.qos = QoS::ExactlyOnce;
                messages.push(stored_message(publish, Some(*packet_id), true));
            }
        }
    }
    for publish in away.stored.pending() {
        let mut publish = publish.clone();
        publish.packet_id = None;
        messages.push(stored_message(publish, None, false));
    }
    for queued in away.offline {
        let waited = u64::try_from(now.saturating_duration_since(queued.since).as_millis());
        messages.push(StoredMessage {
            publish: queued.publish,
            stored_at: now_unix.saturating_sub(waited.unwrap_or(u64::MAX)),
            packet_id: None,
            released: false,
        });
    }
    Some(SessionExport {
        session,
        messages,
        incoming: away.stored.incoming_qos2().to_vec(),
    })
}

/// Asks the bridge for the session of `id` (connecting with `clean_start`
/// and Session Expiry Interval `expiry`) and installs what it brings: its
/// subscriptions, its in-flight and queued messages, its inbound QoS 2
/// identifiers; kept in the store when the session is persistent here.
///
/// Returns [`SessionUnavailable`] when the bridge says the session lives
/// elsewhere and cannot be brought now: the CONNECT is refused then.
pub(crate) async fn import_session(
    shared: &Shared,
    id: &Arc<str>,
    clean_start: bool,
    expiry: u32,
) -> Result<(), SessionUnavailable> {
    let Some(bridge) = shared.lock().bridge.clone() else {
        return Ok(());
    };
    let claimed = tokio::time::timeout(CLAIM_TIMEOUT, bridge.claim_session(id, clean_start)).await;
    let export = match claimed {
        Ok(Ok(Some(export))) if !clean_start => export,
        Ok(Ok(_)) => return Ok(()),
        // Clean Start discards the session anyway.
        Ok(Err(SessionUnavailable)) if clean_start => return Ok(()),
        Ok(Err(unavailable)) => {
            tracing::warn!(%id, "the session lives elsewhere and cannot be brought now: CONNECT refused");
            return Err(unavailable);
        }
        Err(_) => {
            tracing::warn!(%id, "the bridge did not bring the session in time: a new one starts");
            return Ok(());
        }
    };
    if *export.session.client_id != **id {
        tracing::warn!(%id, other = %export.session.client_id, "the bridge brought another client's session");
        return Ok(());
    }
    let mut state = shared.lock();
    install_session(
        &mut state,
        export,
        expiry,
        shared.limits.max_queued_messages,
        shared.limits.max_queued_bytes,
        &shared.counters,
    );
    Ok(())
}

/// Installs a session brought from elsewhere, as a restart recovers one.
fn install_session(
    state: &mut State,
    export: SessionExport,
    expiry: u32,
    max_queued: usize,
    max_queued_bytes: usize,
    counters: &Counters,
) {
    let id = export.session.client_id.clone();
    if let Some(local) = state.sessions.get(&id) {
        if local.owner.is_some() {
            // Connected here too: the local takeover keeps the local session.
            tracing::warn!(%id, "session brought from elsewhere while connected here: dropped");
            return;
        }
        state.end_session(&id, max_queued, counters, Instant::now());
    }
    let now = Instant::now();
    let now_unix = unix_millis();
    let journal = state.journal.clone().filter(|_| expiry > 0);
    let mut entry = SessionEntry {
        persistent: journal.is_some(),
        expiry,
        ..SessionEntry::default()
    };
    if let Some(journal) = &journal {
        // It starts from what it brings: what the store may still hold under
        // this identifier (records of a session whose own record could not
        // be read at start) is not its.
        journal.push(StoreOp::DeleteSession(id.clone()));
        journal.push(StoreOp::PutSession(StoredSession {
            disconnected_at: None,
            expiry_interval: expiry,
            will: None,
            ..export.session.clone()
        }));
    }
    state.restore_subscriptions(&id, &export.session.subscriptions, &mut entry.filters);
    let mut outgoing: Vec<fulmar_session::Outgoing> = Vec::new();
    let (offline_budget, max_offline_bytes) =
        (state.offline_budget.clone(), state.max_offline_bytes);
    for message in export.messages {
        let seq = journal.as_ref().map(|journal| {
            state.next_seq += 1;
            journal.push(StoreOp::PutMessage {
                client: id.clone(),
                seq: state.next_seq,
                message: message.clone(),
            });
            state.next_seq
        });
        let in_flight = message.packet_id.filter(|pid| {
            message.publish.qos != QoS::AtMostOnce
                && (message.publish.qos == QoS::ExactlyOnce || !message.released)
                && !outgoing.iter().any(|o| o.packet_id() == Some(*pid))
        });
        if let Some(pid) = in_flight {
            if let Some(seq) = seq {
                entry.away().inflight.insert(pid, seq);
            }
            outgoing.push(if message.released {
                fulmar_session::Outgoing::PubRel(pid)
            } else {
                let mut publish = message.publish;
                publish.packet_id = Some(pid);
                publish.dup = true;
                crate::store::recover::age_in_flight(&mut publish, message.stored_at, now_unix);
                fulmar_session::Outgoing::Publish(Box::new(publish))
            });
        } else {
            let queued = (message.publish.qos != QoS::AtMostOnce && !message.released)
                && entry.queue_offline(
                    Queued {
                        publish: message.publish,
                        since: instant_of(message.stored_at, now, now_unix),
                        seq,
                        // Not kept in the store.
                        shared: false,
                    },
                    max_queued,
                    max_queued_bytes,
                    (&offline_budget, max_offline_bytes),
                );
            if !queued {
                counters.drop_one();
                if let (Some(journal), Some(seq)) = (&journal, seq) {
                    journal.push(StoreOp::DeleteMessage {
                        client: id.clone(),
                        seq,
                    });
                }
            }
        }
    }
    let mut incoming = export.incoming;
    incoming.sort_unstable();
    incoming.dedup();
    if let Some(journal) = &journal {
        for &packet_id in &incoming {
            journal.push(StoreOp::AddIncoming {
                client: id.clone(),
                packet_id,
            });
        }
    }
    entry.away().stored = fulmar_session::SessionState::from_parts(outgoing, incoming)
        .unwrap_or_else(|reason| {
            tracing::warn!(client = %id, reason, "in-flight state brought from elsewhere dropped");
            fulmar_session::SessionState::default()
        });
    // Aged up to now: the time until a connection takes it counts from here
    // (v5:MQTT-3.3.2-6).
    entry.away().stored_at = Some(now);
    state.sessions.insert(id, Box::new(entry));
}
