//! Listeners: TCP, TLS, WebSocket and secure WebSocket, each on its own
//! address. The accept loop only accepts; the TLS and WebSocket handshakes
//! run in the connection's own task, bounded by the connect timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fulmar_codec::QoS;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use crate::broker::Shared;
use crate::error::BrokerError;
#[cfg(feature = "tls")]
use crate::tls::{TlsConfig, TlsServer};

/// A listener to add with [`BrokerBuilder::listener`](crate::BrokerBuilder::listener):
/// an address, a transport, and settings that may differ from the broker's
/// [`Limits`](crate::Limits) for the clients that connect through it (as
/// mosquitto's `max_connections`, `max_qos` and `max_topic_alias` follow
/// the `listener` line they come after), and a
/// [mount point](Listener::mount_point) that isolates them under a prefix.
///
/// ```
/// use fulmar_broker::{Broker, Listener};
/// use fulmar_codec::QoS;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), fulmar_broker::BrokerError> {
/// let broker = Broker::builder()
///     // Inside: everything the broker allows.
///     .tcp_listener("127.0.0.1:0")
///     // For devices: QoS 1 at most, 1000 of them, no topic aliases, and at
///     // most 64 KiB of the kernel's memory per socket and direction.
///     .listener(
///         Listener::tcp("127.0.0.1:0")
///             .maximum_qos(QoS::AtLeastOnce)
///             .max_connections(1000)
///             .topic_alias_maximum(0)
///             .send_buffer_size(64 * 1024)
///             .receive_buffer_size(64 * 1024),
///     )
///     .start()
///     .await?;
/// assert_eq!(broker.local_addrs().len(), 2);
/// broker.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Listener {
    pub(crate) addr: String,
    pub(crate) kind: SpecKind,
    limits: ListenerLimits,
    /// The prefix of its clients' topics ([`Listener::mount_point`]).
    mount_point: Option<String>,
}

/// What a listener sets for itself; `None`: the broker's.
#[derive(Clone, Copy, Debug, Default)]
struct ListenerLimits {
    max_connections: Option<usize>,
    maximum_qos: Option<QoS>,
    topic_alias_maximum: Option<u16>,
    send_buffer_size: Option<u32>,
    receive_buffer_size: Option<u32>,
}

impl Listener {
    fn new(addr: impl Into<String>, kind: SpecKind) -> Self {
        Self {
            addr: addr.into(),
            kind,
            limits: ListenerLimits::default(),
            mount_point: None,
        }
    }

    /// A TCP listener on `addr` (`"127.0.0.1:1883"`, `"[::]:1883"`; port 0
    /// picks a free port, see
    /// [`BrokerHandle::local_addrs`](crate::BrokerHandle::local_addrs)).
    pub fn tcp(addr: impl Into<String>) -> Self {
        Self::new(addr, SpecKind::Tcp)
    }

    /// A TLS listener on `addr` (MQTT over TLS, port 8883 by convention).
    /// The certificates are checked by
    /// [`BrokerBuilder::start`](crate::BrokerBuilder::start).
    #[cfg(feature = "tls")]
    pub fn tls(addr: impl Into<String>, tls: TlsConfig) -> Self {
        Self::new(addr, SpecKind::Tls(tls))
    }

    /// A WebSocket listener on `addr` serving MQTT at the HTTP `path`
    /// (`"/mqtt"`), subprotocol `mqtt`. Requests for other paths get 404.
    #[cfg(feature = "websocket")]
    pub fn ws(addr: impl Into<String>, path: impl Into<String>) -> Self {
        Self::new(addr, SpecKind::Ws(path.into()))
    }

    /// A secure WebSocket listener (WebSocket over TLS) on `addr` serving
    /// MQTT at `path`.
    #[cfg(all(feature = "tls", feature = "websocket"))]
    pub fn wss(addr: impl Into<String>, path: impl Into<String>, tls: TlsConfig) -> Self {
        Self::new(addr, SpecKind::Wss(path.into(), tls))
    }

    /// At most this many network connections open at once through this
    /// listener (default: only the broker's
    /// [`Limits::max_connections`](crate::Limits::max_connections), which
    /// counts those of every listener and still applies). Beyond it a
    /// client is refused as beyond the broker's limit: CONNACK 0x88 Server
    /// unavailable (3.1.1: 3), and a flood beyond that closed at once.
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Self {
        self.limits.max_connections = Some(n);
        self
    }

    /// The Maximum QoS of the clients of this listener, in place of
    /// [`Limits::maximum_qos`](crate::Limits::maximum_qos): announced to
    /// MQTT 5.0 clients in CONNACK, enforced on their PUBLISH and will
    /// (5.0: 0x9B QoS not supported), and granted at most to their
    /// subscriptions. What a session subscribed to through another listener
    /// keeps the QoS it was granted there.
    #[must_use]
    pub fn maximum_qos(mut self, qos: QoS) -> Self {
        self.limits.maximum_qos = Some(qos);
        self
    }

    /// The Topic Alias Maximum announced to the MQTT 5.0 clients of this
    /// listener (0: none), in place of
    /// [`Limits::topic_alias_maximum`](crate::Limits::topic_alias_maximum).
    #[must_use]
    pub fn topic_alias_maximum(mut self, max: u16) -> Self {
        self.limits.topic_alias_maximum = Some(max);
        self
    }

    /// The kernel's send buffer of each accepted socket (`SO_SNDBUF`, set
    /// on the listening socket so that every connection inherits it),
    /// instead of the kernel's own sizing (on Linux it grows up to
    /// `net.ipv4.tcp_wmem`'s maximum, 4 MiB by default). That buffer is
    /// what a subscriber that stops reading holds of the broker's memory
    /// besides its queues ([`Limits::max_queued_bytes`](crate::Limits::max_queued_bytes)):
    /// a few MiB per such connection unless set. Linux doubles the value
    /// for its bookkeeping and keeps it within `net.core.wmem_max`. Too
    /// small a buffer slows large messages down.
    #[must_use]
    pub fn send_buffer_size(mut self, bytes: u32) -> Self {
        self.limits.send_buffer_size = Some(bytes);
        self
    }

    /// The kernel's receive buffer of each accepted socket (`SO_RCVBUF`,
    /// set on the listening socket, so that the TCP window is sized for it
    /// from the handshake on), instead of the kernel's own sizing (on Linux
    /// up to `net.ipv4.tcp_rmem`'s maximum). It holds what a publisher sent
    /// that the broker has not read yet: a publisher paced because a
    /// subscriber is slow (see
    /// [`Limits::max_queued_bytes`](crate::Limits::max_queued_bytes)) fills
    /// it before TCP holds it back. Linux doubles the value and keeps it
    /// within `net.core.rmem_max`.
    #[must_use]
    pub fn receive_buffer_size(mut self, bytes: u32) -> Self {
        self.limits.receive_buffer_size = Some(bytes);
        self
    }

    /// Isolates the clients of this listener under `prefix`, as mosquitto's
    /// `mount_point`: the prefix is put before the topic of every message
    /// they publish (and of their wills) and of every filter they subscribe
    /// or unsubscribe to (`$share/{group}/{filter}` becomes
    /// `$share/{group}/{prefix}{filter}`), and taken off the topic of every
    /// message sent to them. So they see only the topics under the prefix,
    /// and the broker's other clients see theirs with it.
    ///
    /// The prefix is taken verbatim, as mosquitto concatenates it: end it
    /// with `/` for a topic level of its own (`tenant1/` and `a/b` make
    /// `tenant1/a/b`; `tenant1` and `a/b` make `tenant1a/b`). It must be a
    /// valid start of a topic name: not empty, no `+`, `#` or U+0000,
    /// checked by [`BrokerBuilder::start`](crate::BrokerBuilder::start)
    /// ([`BrokerError::MountPoint`]).
    ///
    /// The [`Authorizer`](crate::Authorizer), the
    /// [`BrokerEvent`](crate::BrokerEvent)s, the retained messages and the
    /// stored sessions see the full topics and filters, prefix included. A
    /// message sent to a client of the listener whose topic does not start
    /// with the prefix (its session subscribed through another listener
    /// before) is sent unchanged; one whose topic is the prefix alone is
    /// not sent (it would have no topic name left).
    ///
    /// ```
    /// use fulmar_broker::{Broker, Listener};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), fulmar_broker::BrokerError> {
    /// let broker = Broker::builder()
    ///     // The back office sees every tenant's topics: `tenant1/a/b`, ...
    ///     .tcp_listener("127.0.0.1:0")
    ///     // Tenant 1's devices publish and subscribe to `a/b`.
    ///     .listener(Listener::tcp("127.0.0.1:0").mount_point("tenant1/"))
    ///     .start()
    ///     .await?;
    /// assert_eq!(broker.local_addrs().len(), 2);
    /// broker.shutdown().await;
    ///
    /// // A wildcard cannot be part of a mount point.
    /// let refused = Broker::builder()
    ///     .listener(Listener::tcp("127.0.0.1:0").mount_point("tenant/+/"))
    ///     .start()
    ///     .await;
    /// assert!(matches!(refused, Err(fulmar_broker::BrokerError::MountPoint { .. })));
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn mount_point(mut self, prefix: impl Into<String>) -> Self {
        self.mount_point = Some(prefix.into());
        self
    }
}

/// The transport of a configured listener.
#[derive(Clone, Debug)]
pub(crate) enum SpecKind {
    Tcp,
    #[cfg(feature = "tls")]
    Tls(TlsConfig),
    #[cfg(feature = "websocket")]
    Ws(String),
    #[cfg(all(feature = "tls", feature = "websocket"))]
    Wss(String, TlsConfig),
}

/// The transport of a bound listener, ready to accept.
enum Kind {
    Tcp,
    #[cfg(feature = "tls")]
    Tls(TlsServer),
    #[cfg(feature = "websocket")]
    Ws(String),
    #[cfg(all(feature = "tls", feature = "websocket"))]
    Wss(String, TlsServer),
}

/// A bound listener.
pub(crate) struct Bound {
    listener: TcpListener,
    kind: Arc<Kind>,
    limits: ListenerLimits,
    mount_point: Option<Box<str>>,
}

impl Listener {
    /// Parses the TLS configuration and binds the address.
    pub(crate) async fn bind(self) -> Result<(Bound, SocketAddr), BrokerError> {
        if let Some(prefix) = &self.mount_point
            && let Some(reason) = crate::mount::invalid(prefix)
        {
            return Err(BrokerError::MountPoint {
                addr: self.addr.clone(),
                prefix: prefix.clone(),
                reason,
            });
        }
        let kind = match self.kind {
            SpecKind::Tcp => Kind::Tcp,
            #[cfg(feature = "tls")]
            SpecKind::Tls(tls) => Kind::Tls(TlsServer::new(tls.server_config(&self.addr)?)),
            #[cfg(feature = "websocket")]
            SpecKind::Ws(path) => Kind::Ws(path),
            #[cfg(all(feature = "tls", feature = "websocket"))]
            SpecKind::Wss(path, tls) => {
                Kind::Wss(path, TlsServer::new(tls.server_config(&self.addr)?))
            }
        };
        let bind_error = |source| BrokerError::Bind {
            addr: self.addr.clone(),
            source,
        };
        let listener = if self.limits.send_buffer_size.is_none()
            && self.limits.receive_buffer_size.is_none()
        {
            TcpListener::bind(self.addr.as_str()).await
        } else {
            bind_with_buffers(&self.addr, self.limits).await
        }
        .map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        Ok((
            Bound {
                listener,
                kind: Arc::new(kind),
                limits: self.limits,
                mount_point: self.mount_point.map(String::into_boxed_str),
            },
            local,
        ))
    }
}

/// Binds `addr` (its first address that binds, as `TcpListener::bind`
/// does) with the socket buffer sizes set before `listen`, so that accepted
/// sockets inherit them.
async fn bind_with_buffers(addr: &str, limits: ListenerLimits) -> std::io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let bound = (|| {
            let socket = if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            // As `TcpListener::bind` does on Unix: a restarted broker binds
            // while connections of the last one are in TIME_WAIT.
            #[cfg(unix)]
            socket.set_reuseaddr(true)?;
            if let Some(size) = limits.send_buffer_size {
                socket.set_send_buffer_size(size)?;
            }
            if let Some(size) = limits.receive_buffer_size {
                socket.set_recv_buffer_size(size)?;
            }
            socket.bind(addr)?;
            socket.listen(1024)
        })();
        match bound {
            Ok(listener) => return Ok(listener),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "could not resolve to any address",
        )
    }))
}

/// What the connections of one listener share: the broker, and what the
/// listener sets for itself.
pub(crate) struct ListenerShared {
    shared: Arc<Shared>,
    /// The configuration of the listener's sessions (the broker's, unless
    /// the listener sets a Maximum QoS or Topic Alias Maximum of its own).
    pub(crate) session_config: Arc<fulmar_session::Config>,
    /// The listener's own connection limit.
    max_connections: Option<usize>,
    /// Its open connections.
    connections: AtomicU64,
    /// The prefix of its clients' topics ([`Listener::mount_point`]).
    mount_point: Option<Box<str>>,
}

impl ListenerShared {
    /// What connections served without a listener share: the broker's limits.
    pub(crate) fn direct(shared: Arc<Shared>) -> Arc<Self> {
        Self::new(shared, ListenerLimits::default(), None)
    }

    fn new(
        shared: Arc<Shared>,
        limits: ListenerLimits,
        mount_point: Option<Box<str>>,
    ) -> Arc<Self> {
        let session_config = if limits.maximum_qos.is_none()
            && limits.topic_alias_maximum.is_none()
            && mount_point.is_none()
        {
            shared.session_config.clone()
        } else {
            let broker = &shared.session_config;
            Arc::new(fulmar_session::Config {
                maximum_qos: limits.maximum_qos.unwrap_or(broker.maximum_qos),
                topic_alias_maximum: limits
                    .topic_alias_maximum
                    .unwrap_or(broker.topic_alias_maximum),
                // Its clients see their topics without the prefix; the
                // session (and the store) keep the full ones, so that a
                // resumed session's messages go out right through any
                // listener.
                strip_topic_prefix: mount_point.as_deref().map(Arc::from),
                ..(**broker).clone()
            })
        };
        Arc::new(Self {
            shared,
            session_config,
            max_connections: limits.max_connections,
            connections: AtomicU64::new(0),
            mount_point,
        })
    }

    /// The broker's shared state.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The prefix of its clients' topics, if it has one.
    pub(crate) fn mount_point(&self) -> Option<&str> {
        self.mount_point.as_deref()
    }

    /// Whether `open` connections through this listener are `slack` or
    /// more over its limit.
    fn over(&self, open: u64, slack: usize) -> bool {
        self.max_connections.is_some_and(|max| {
            usize::try_from(open).unwrap_or(usize::MAX) >= max.saturating_add(slack)
        })
    }
}

impl Bound {
    /// The configuration of a TLS or secure WebSocket listener, to replace.
    #[cfg(feature = "tls")]
    pub(crate) fn tls(&self) -> Option<TlsServer> {
        match &*self.kind {
            Kind::Tls(tls) => Some(tls.clone()),
            #[cfg(feature = "websocket")]
            Kind::Wss(_, tls) => Some(tls.clone()),
            _ => None,
        }
    }
}

/// What the transport knows about the peer of an accepted connection.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    /// The DER of the end-entity certificate the client presented over TLS.
    pub(crate) certificate: Option<Box<Bytes>>,
}

/// One open network connection, counted in `Stats::connections` (and by
/// its listener) until dropped.
pub(crate) struct Slot {
    listener: Arc<ListenerShared>,
}

impl Slot {
    /// Counts a new connection; also says whether it is over the limit
    /// (the broker's or its listener's).
    pub(crate) fn open(listener: &Arc<ListenerShared>) -> (Self, bool) {
        let shared = &listener.shared;
        let open = shared.counters.connections.fetch_add(1, Ordering::Relaxed);
        shared.counters.sockets.fetch_add(1, Ordering::Relaxed);
        let through = listener.connections.fetch_add(1, Ordering::Relaxed);
        let over = usize::try_from(open).unwrap_or(usize::MAX) >= shared.limits.max_connections
            || listener.over(through, 0);
        (
            Self {
                listener: listener.clone(),
            },
            over,
        )
    }

    /// The broker's shared state.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.listener.shared
    }

    /// What the connections of its listener share.
    pub(crate) fn listener(&self) -> &Arc<ListenerShared> {
        &self.listener
    }

    /// The configuration of a session of this connection.
    pub(crate) fn session_config(&self) -> &Arc<fulmar_session::Config> {
        &self.listener.session_config
    }

    /// Whether this connection is more than [`REFUSALS`] over
    /// `max_connections` (the broker's or its listener's).
    fn beyond_refusals(&self) -> bool {
        let shared = self.shared();
        let open = shared.counters.connections.load(Ordering::Relaxed);
        usize::try_from(open).unwrap_or(usize::MAX)
            > shared.limits.max_connections.saturating_add(REFUSALS)
            || self.listener.over(
                self.listener.connections.load(Ordering::Relaxed),
                REFUSALS.saturating_add(1),
            )
    }
}

/// Connections accepted over `max_connections` only to be refused at their
/// CONNECT (0x88 Server unavailable, so that clients know why); beyond
/// these, new connections are closed at once.
pub(crate) const REFUSALS: usize = 64;

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared()
            .counters
            .connections
            .fetch_sub(1, Ordering::Relaxed);
        self.listener.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts connections until the broker shuts down.
pub(crate) async fn accept_loop(shared: Arc<Shared>, bound: Bound, tracker: TaskTracker) {
    let listener = ListenerShared::new(shared.clone(), bound.limits, bound.mount_point);
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            accepted = bound.listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let (slot, over_limit) = Slot::open(&listener);
                    if over_limit && slot.beyond_refusals() {
                        // Too many to even be told why: closed at once, so a
                        // flood of sockets costs no task nor handshake.
                        tracing::debug!(%addr, "connection closed: over the limit");
                        drop(stream);
                        continue;
                    }
                    if matches!(*bound.kind, Kind::Tcp) {
                        // The connection is the task, without `serve` around
                        // it: every idle connection's task is that much smaller.
                        let _ = stream.set_nodelay(true);
                        let peer = Peer {
                            addr,
                            certificate: None,
                        };
                        let stream = crate::connection::TcpIo::Live(stream);
                        tracker.spawn(crate::connection::run(shared.clone(), stream, peer, over_limit, slot, Instant::now()));
                    } else {
                        tracker.spawn(serve(shared.clone(), stream, addr, bound.kind.clone(), slot, over_limit));
                    }
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off a little.
                    tracing::warn!(%error, "accept failed");
                    tokio::select! {
                        () = shared.shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
            },
        }
    }
}

/// Runs the transport handshake, then the MQTT connection.
async fn serve(
    shared: Arc<Shared>,
    stream: TcpStream,
    addr: SocketAddr,
    kind: Arc<Kind>,
    slot: Slot,
    over_limit: bool,
) {
    // The connect timeout counts from here, the transport handshake included.
    let opened = Instant::now();
    let _ = stream.set_nodelay(true);
    let peer = Peer {
        addr,
        certificate: None,
    };
    // The handshakes and the TLS or WebSocket connections are boxed, so every
    // plain TCP connection's task is not as large as theirs.
    match &*kind {
        Kind::Tcp => {
            let stream = crate::connection::TcpIo::Live(stream);
            crate::connection::run(shared, stream, peer, over_limit, slot, opened).await;
        }
        #[cfg(feature = "tls")]
        Kind::Tls(tls) => {
            Box::pin(async move {
                let handshake = tls.acceptor().accept(stream);
                let Some(tls) = handshake_within(&shared, addr, handshake).await else {
                    return;
                };
                let peer = Peer {
                    certificate: client_certificate(&tls).map(Box::new),
                    ..peer
                };
                crate::connection::run(shared, tls, peer, over_limit, slot, opened).await;
            })
            .await
        }
        #[cfg(feature = "websocket")]
        Kind::Ws(path) => {
            Box::pin(async move {
                let max = ws_max_message(&shared);
                let handshake = crate::ws::accept(stream, path, max);
                let Some(ws) = handshake_within(&shared, addr, handshake).await else {
                    return;
                };
                crate::connection::run(shared, ws, peer, over_limit, slot, opened).await;
            })
            .await
        }
        #[cfg(all(feature = "tls", feature = "websocket"))]
        Kind::Wss(path, tls) => {
            Box::pin(async move {
                let max = ws_max_message(&shared);
                let handshake = async {
                    let tls = tls.acceptor().accept(stream).await?;
                    let certificate = client_certificate(&tls);
                    let ws = crate::ws::accept(tls, path, max)
                        .await
                        .map_err(std::io::Error::other)?;
                    Ok::<_, std::io::Error>((ws, certificate))
                };
                let Some((ws, certificate)) = handshake_within(&shared, addr, handshake).await
                else {
                    return;
                };
                let peer = Peer {
                    certificate: certificate.map(Box::new),
                    ..peer
                };
                crate::connection::run(shared, ws, peer, over_limit, slot, opened).await;
            })
            .await
        }
    }
}

/// A WebSocket message may hold a whole packet of the maximum size and then some.
#[cfg(feature = "websocket")]
fn ws_max_message(shared: &Shared) -> usize {
    usize::try_from(shared.limits.max_packet_size.get())
        .unwrap_or(usize::MAX)
        .saturating_mul(2)
        .max(64 * 1024)
}

#[cfg(feature = "tls")]
fn client_certificate(tls: &tokio_rustls::server::TlsStream<TcpStream>) -> Option<Bytes> {
    let (_, connection) = tls.get_ref();
    connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| Bytes::copy_from_slice(cert.as_ref()))
}

/// Awaits a transport handshake for at most the connect timeout, and not past shutdown.
#[cfg(any(feature = "tls", feature = "websocket"))]
async fn handshake_within<T, E: std::fmt::Display>(
    shared: &Shared,
    addr: SocketAddr,
    handshake: impl Future<Output = Result<T, E>>,
) -> Option<T> {
    tokio::select! {
        () = shared.shutdown.cancelled() => None,
        done = tokio::time::timeout(shared.limits.connect_timeout, handshake) => match done {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(error)) => {
                // At the default level, as mosquitto logs them: an operator
                // whose clients cannot connect (an X.509 v1 client
                // certificate, which rustls does not take; an unknown CA) sees why.
                tracing::info!(%addr, %error, "transport handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%addr, "transport handshake timed out");
                None
            }
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The send and receive buffer sizes of the accepted socket.
    async fn accepted_buffers(listener: Listener) -> (u32, u32) {
        let (bound, addr) = listener.bind().await.unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (stream, _) = bound.listener.accept().await.unwrap();
        let socket = tokio::net::TcpSocket::from_std_stream(stream.into_std().unwrap());
        (
            socket.send_buffer_size().unwrap(),
            socket.recv_buffer_size().unwrap(),
        )
    }

    // (kernel memory per connection, no spec statement)
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_sockets_take_the_listeners_buffer_sizes() {
        // Linux doubles what is asked for (its bookkeeping), within
        // wmem_max / rmem_max (4 MiB by default). Without a setting, an
        // accepted loopback socket had a 4 MiB send buffer and a 128 KiB
        // receive buffer (growing to tcp_rmem's maximum) on this machine.
        let (send, receive) = accepted_buffers(Listener::tcp("127.0.0.1:0")).await;
        eprintln!("kernel's own sizes: send {send}, receive {receive}");
        for (asked_send, asked_receive) in [(16 * 1024, 24 * 1024), (96 * 1024, 512 * 1024)] {
            let (send, receive) = accepted_buffers(
                Listener::tcp("127.0.0.1:0")
                    .send_buffer_size(asked_send)
                    .receive_buffer_size(asked_receive),
            )
            .await;
            assert_eq!((send, receive), (2 * asked_send, 2 * asked_receive));
        }
    }

    #[tokio::test]
    async fn a_listener_with_buffer_sizes_reports_a_bad_address() {
        let error = Listener::tcp("not an address")
            .send_buffer_size(8 * 1024)
            .bind()
            .await
            .err()
            .unwrap();
        assert!(
            matches!(&error, BrokerError::Bind { addr, .. } if addr == "not an address"),
            "{error}"
        );
    }
}
