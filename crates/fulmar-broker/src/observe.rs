//! What an application can observe of a running broker: the event stream,
//! the `$SYS/broker/...` topics, and the byte counting behind them.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use fulmar_codec::{ConnectReasonCode, MqttString, ProtocolVersion, Publish, QoS, ReasonCode};
use fulmar_session::Initiator;
use fulmar_topic::TopicName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::broker::Shared;
use crate::state::Origin;

/// Something that happened in the broker, from [`BrokerHandle::events`](crate::BrokerHandle::events).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BrokerEvent {
    /// A client was accepted (CONNACK sent with Success).
    Connected {
        /// Its client identifier (assigned by the broker if it sent none).
        client_id: String,
        /// The User Name of its CONNECT, or the name the authenticator gave
        /// ([`AuthDecision::AllowAs`](crate::AuthDecision::AllowAs)).
        username: Option<String>,
        /// The protocol version it speaks.
        protocol_version: ProtocolVersion,
        /// Its network address.
        remote_addr: SocketAddr,
        /// Whether a stored session was resumed.
        session_present: bool,
    },
    /// A CONNECT was refused.
    Refused {
        /// The client identifier of the CONNECT (may be empty).
        client_id: String,
        /// The network address of the client.
        remote_addr: SocketAddr,
        /// The CONNACK reason code (a 3.1.1 client got the matching return code).
        reason_code: ConnectReasonCode,
    },
    /// An accepted client's connection ended.
    Disconnected {
        /// Its client identifier.
        client_id: String,
        /// Who ended it: the client (`Remote`, it sent DISCONNECT), the
        /// broker (`Local`: take-over, shutdown; `Library`: a protocol
        /// violation or keep-alive timeout), or the network.
        initiator: Initiator,
        /// The reason code of the DISCONNECT sent or received
        /// (`UnspecifiedError` when the network connection was lost).
        reason_code: ReasonCode,
    },
    /// A client subscription was granted.
    Subscribed {
        /// The client identifier.
        client_id: String,
        /// The filter as sent (`$share/...` included).
        filter: String,
        /// The granted QoS.
        qos: QoS,
    },
    /// A client removed a subscription it had, or the broker withdrew it
    /// because the authorizer denies it now
    /// ([`BrokerHandle::reauthorize`](crate::BrokerHandle::reauthorize)).
    Unsubscribed {
        /// The client identifier.
        client_id: String,
        /// The filter as sent.
        filter: String,
    },
}

/// A stream of [`BrokerEvent`]s. Bounded ([`Limits::event_capacity`](crate::Limits::event_capacity)):
/// an observer that falls behind loses the oldest events, counted in
/// [`lost`](Self::lost); the broker never waits for observers.
#[derive(Debug)]
pub struct Events {
    rx: broadcast::Receiver<BrokerEvent>,
    stopped: CancellationToken,
    lost: u64,
}

impl Events {
    pub(crate) fn new(rx: broadcast::Receiver<BrokerEvent>, stopped: CancellationToken) -> Self {
        Self {
            rx,
            stopped,
            lost: 0,
        }
    }

    /// The next event; `None` once the broker has shut down and every event
    /// was read.
    pub async fn recv(&mut self) -> Option<BrokerEvent> {
        loop {
            tokio::select! {
                biased;
                received = self.rx.recv() => match received {
                    Ok(event) => return Some(event),
                    Err(broadcast::error::RecvError::Lagged(n)) => self.lost += n,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                () = self.stopped.cancelled() => return self.try_recv(),
            }
        }
    }

    /// The next event if one is ready, without waiting.
    pub fn try_recv(&mut self) -> Option<BrokerEvent> {
        loop {
            match self.rx.try_recv() {
                Ok(event) => return Some(event),
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.lost += n,
                Err(_) => return None,
            }
        }
    }

    /// Events this observer lost because it fell behind.
    #[must_use]
    pub fn lost(&self) -> u64 {
        self.lost
    }
}

impl Shared {
    /// Emits an event to the observers; `make` runs only if there is one.
    pub(crate) fn emit(&self, make: impl FnOnce() -> BrokerEvent) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(make());
        }
    }
}

/// A transport that adds what it reads and writes to the broker's byte counters.
pub(crate) struct Counted<S> {
    pub(crate) inner: S,
    /// Holds the counters.
    pub(crate) shared: std::sync::Arc<Shared>,
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        add(
            &self.shared.counters.bytes_received,
            buf.filled().len().saturating_sub(before),
        );
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &result {
            add(&self.shared.counters.bytes_sent, *n);
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Publishes the `$SYS/broker/...` topics, retained, at QoS 0: each at the
/// first tick, then every `interval` the ones whose value changed (as
/// mosquitto does), the uptime always.
pub(crate) async fn sys_loop(shared: std::sync::Arc<Shared>, interval: Duration) {
    let started = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = SysValues::default();
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            _ = ticker.tick() => publish_sys(&shared, started, &mut last),
        }
    }
}

/// The `$SYS` topics, in the order of [`sys_values`].
const SYS_TOPICS: usize = 16;

/// The values last published, by topic.
type SysValues = [Option<String>; SYS_TOPICS];

/// The value of each `$SYS` topic now.
fn sys_values(shared: &Shared, started: Instant) -> [(&'static str, String); SYS_TOPICS] {
    let stats = shared.stats();
    let uptime = started.elapsed().as_secs();
    [
        (
            "$SYS/broker/version",
            format!("fulmar {}", env!("CARGO_PKG_VERSION")),
        ),
        ("$SYS/broker/uptime", format!("{uptime} seconds")),
        (
            "$SYS/broker/clients/connected",
            stats.clients_connected.to_string(),
        ),
        (
            "$SYS/broker/clients/disconnected",
            (stats.sessions as u64)
                .saturating_sub(stats.clients_connected)
                .to_string(),
        ),
        ("$SYS/broker/clients/total", stats.sessions.to_string()),
        (
            "$SYS/broker/connections/open",
            stats.connections.to_string(),
        ),
        (
            "$SYS/broker/messages/received",
            stats.packets_received.to_string(),
        ),
        ("$SYS/broker/messages/sent", stats.packets_sent.to_string()),
        (
            "$SYS/broker/publish/messages/received",
            stats.messages_received.to_string(),
        ),
        (
            "$SYS/broker/publish/messages/sent",
            stats.messages_sent.to_string(),
        ),
        (
            "$SYS/broker/publish/messages/dropped",
            stats.dropped_messages.to_string(),
        ),
        (
            "$SYS/broker/bytes/received",
            stats.bytes_received.to_string(),
        ),
        ("$SYS/broker/bytes/sent", stats.bytes_sent.to_string()),
        // Counted apart, as mosquitto counts them.
        (
            "$SYS/broker/subscriptions/count",
            stats
                .subscriptions
                .saturating_sub(stats.shared_subscriptions)
                .to_string(),
        ),
        (
            "$SYS/broker/shared_subscriptions/count",
            stats.shared_subscriptions.to_string(),
        ),
        (
            "$SYS/broker/retained messages/count",
            stats.retained.to_string(),
        ),
    ]
}

fn publish_sys(shared: &Shared, started: Instant, last: &mut SysValues) {
    let topics = sys_values(shared, started);
    let now = Instant::now();
    let mut state = shared.lock();
    for ((topic, value), last) in topics.into_iter().zip(last.iter_mut()) {
        let uptime = topic == "$SYS/broker/uptime";
        if !uptime && last.as_ref() == Some(&value) {
            continue;
        }
        *last = Some(value.clone());
        let Ok(name) = topic.parse::<TopicName>() else {
            continue;
        };
        let mut publish = Publish::new(
            MqttString::from(topic.to_owned()),
            bytes::Bytes::from(value),
        );
        publish.retain = true;
        state.route(
            &name,
            &publish,
            Origin::System,
            shared.limits.max_queued_messages,
            &shared.counters,
            now,
            None,
        );
    }
}
