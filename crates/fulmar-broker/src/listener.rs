//! Listeners: TCP, TLS, WebSocket and secure WebSocket, each on its own
//! address. The accept loop only accepts; the TLS and WebSocket handshakes
//! run in the connection's own task, bounded by the connect timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use crate::broker::Shared;
use crate::error::BrokerError;
#[cfg(feature = "tls")]
use crate::tls::{TlsConfig, TlsServer};

/// A listener as configured on the builder.
#[derive(Clone, Debug)]
pub(crate) struct ListenerSpec {
    pub(crate) addr: String,
    pub(crate) kind: SpecKind,
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
}

impl ListenerSpec {
    /// Parses the TLS configuration and binds the address.
    pub(crate) async fn bind(self) -> Result<(Bound, SocketAddr), BrokerError> {
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
        let listener = TcpListener::bind(self.addr.as_str())
            .await
            .map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        Ok((
            Bound {
                listener,
                kind: Arc::new(kind),
            },
            local,
        ))
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

/// One open network connection, counted in `Stats::connections` until dropped.
pub(crate) struct Slot {
    shared: Arc<Shared>,
}

impl Slot {
    /// Counts a new connection; also says whether it is over the limit.
    pub(crate) fn open(shared: &Arc<Shared>) -> (Self, bool) {
        let open = shared.counters.connections.fetch_add(1, Ordering::Relaxed);
        shared.counters.sockets.fetch_add(1, Ordering::Relaxed);
        let over = usize::try_from(open).unwrap_or(usize::MAX) >= shared.limits.max_connections;
        (
            Self {
                shared: shared.clone(),
            },
            over,
        )
    }

    /// The broker's shared state.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl Slot {
    /// Whether this connection is more than [`REFUSALS`] over
    /// `max_connections`.
    fn beyond_refusals(&self) -> bool {
        let open = self.shared.counters.connections.load(Ordering::Relaxed);
        usize::try_from(open).unwrap_or(usize::MAX)
            > self.shared.limits.max_connections.saturating_add(REFUSALS)
    }
}

/// Connections accepted over `max_connections` only to be refused at their
/// CONNECT (0x88 Server unavailable, so that clients know why); beyond
/// these, new connections are closed at once.
pub(crate) const REFUSALS: usize = 64;

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared
            .counters
            .connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts connections until the broker shuts down.
pub(crate) async fn accept_loop(shared: Arc<Shared>, bound: Bound, tracker: TaskTracker) {
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            accepted = bound.listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let (slot, over_limit) = Slot::open(&shared);
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
