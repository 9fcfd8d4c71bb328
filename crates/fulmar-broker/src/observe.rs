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
        /// The filter as sent (`$share/...` included), with the
        /// [mount point](crate::Listener::mount_point) of the client's listener.
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
        /// The filter as sent, with the
        /// [mount point](crate::Listener::mount_point) of the client's listener.
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
    /// Holds the counters (in the broker's shared state), and what the
    /// connection's listener sets for it (its mount point): the connection
    /// reaches it here, at no cost to connections without one.
    pub(crate) listener: std::sync::Arc<crate::listener::ListenerShared>,
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
            &self.listener.shared().counters.bytes_received,
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
            add(&self.listener.shared().counters.bytes_sent, *n);
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &result {
            add(&self.listener.shared().counters.bytes_sent, *n);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
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
    let mut sys = Sys::new(started);
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            _ = ticker.tick() => sys.publish(&shared),
        }
    }
}

/// The counters behind `$SYS/broker/load/...`, named as mosquitto names them.
const LOAD_COUNTERS: [&str; 9] = [
    "messages/received",
    "messages/sent",
    "publish/received",
    "publish/sent",
    "publish/dropped",
    "bytes/received",
    "bytes/sent",
    "connections",
    "sockets",
];

/// The windows of the load averages and their time constants, in seconds.
const LOAD_WINDOWS: [(&str, f64); 3] = [("1min", 60.0), ("5min", 300.0), ("15min", 900.0)];

/// The values of [`LOAD_COUNTERS`] in `stats`, in that order.
fn load_counts(stats: &crate::Stats) -> [u64; LOAD_COUNTERS.len()] {
    [
        stats.packets_received,
        stats.packets_sent,
        stats.messages_received,
        stats.messages_sent,
        stats.dropped_messages,
        stats.bytes_received,
        stats.bytes_sent,
        stats.connects,
        stats.connections_accepted,
    ]
}

/// Exponentially weighted moving averages of the rate of each of
/// [`LOAD_COUNTERS`], per minute, over [`LOAD_WINDOWS`], as mosquitto's
/// `$SYS/broker/load/...`: at each update, an average moves from its value
/// toward the rate since the last update by `1 - exp(-elapsed / window)`.
#[derive(Debug)]
pub(crate) struct LoadAverages {
    at: Instant,
    counts: [u64; LOAD_COUNTERS.len()],
    averages: [[f64; LOAD_WINDOWS.len()]; LOAD_COUNTERS.len()],
}

impl LoadAverages {
    /// Averages of zero, counting from `counts` at `at`.
    pub(crate) fn new(at: Instant, counts: [u64; LOAD_COUNTERS.len()]) -> Self {
        Self {
            at,
            counts,
            averages: [[0.0; LOAD_WINDOWS.len()]; LOAD_COUNTERS.len()],
        }
    }

    /// Folds in the counts at `now` (a time not after the last one changes
    /// nothing).
    pub(crate) fn update(&mut self, now: Instant, counts: [u64; LOAD_COUNTERS.len()]) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        if elapsed <= 0.0 {
            return;
        }
        for ((average, &count), &before) in self.averages.iter_mut().zip(&counts).zip(&self.counts)
        {
            // Counters only grow; one that went back counts as no change.
            let rate = count.saturating_sub(before) as f64 * 60.0 / elapsed;
            for (value, (_, window)) in average.iter_mut().zip(LOAD_WINDOWS) {
                let keep = (-elapsed / window).exp();
                *value = keep * *value + (1.0 - keep) * rate;
            }
        }
        self.at = now;
        self.counts = counts;
    }

    /// The average of counter `counter` (an index into [`LOAD_COUNTERS`])
    /// over window `window` (an index into [`LOAD_WINDOWS`]), per minute.
    pub(crate) fn get(&self, counter: usize, window: usize) -> f64 {
        self.averages
            .get(counter)
            .and_then(|a| a.get(window))
            .copied()
            .unwrap_or(0.0)
    }
}

/// The state of the `$SYS` task: what it published last, and the load.
struct Sys {
    started: Instant,
    /// The load topics, in the order of [`LoadAverages`]' values.
    load_topics: Vec<String>,
    load: LoadAverages,
    /// The value last published, by topic.
    last: std::collections::HashMap<String, String>,
}

impl Sys {
    fn new(started: Instant) -> Self {
        let load_topics = LOAD_COUNTERS
            .iter()
            .flat_map(|counter| {
                LOAD_WINDOWS
                    .iter()
                    .map(move |(window, _)| format!("$SYS/broker/load/{counter}/{window}"))
            })
            .collect();
        Self {
            started,
            load_topics,
            // The counters start at zero with the broker.
            load: LoadAverages::new(started, [0; LOAD_COUNTERS.len()]),
            last: std::collections::HashMap::new(),
        }
    }

    /// The value of each `$SYS` topic now.
    fn values(&mut self, shared: &Shared, now: Instant) -> Vec<(String, String)> {
        let stats = shared.stats();
        let uptime = now.saturating_duration_since(self.started).as_secs();
        let fixed = [
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
                "$SYS/broker/clients/maximum",
                stats.clients_maximum.to_string(),
            ),
            (
                "$SYS/broker/clients/expired",
                stats.sessions_expired.to_string(),
            ),
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
                "$SYS/broker/publish/bytes/received",
                stats.publish_bytes_received.to_string(),
            ),
            (
                "$SYS/broker/publish/bytes/sent",
                stats.publish_bytes_sent.to_string(),
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
        ];
        self.load.update(now, load_counts(&stats));
        let mut values: Vec<(String, String)> = fixed
            .into_iter()
            .map(|(topic, value)| (topic.to_owned(), value))
            .collect();
        for (at, topic) in self.load_topics.iter().enumerate() {
            let value = self
                .load
                .get(at / LOAD_WINDOWS.len(), at % LOAD_WINDOWS.len());
            values.push((topic.clone(), format!("{value:.2}")));
        }
        values
    }

    fn publish(&mut self, shared: &Shared) {
        let now = Instant::now();
        let topics = self.values(shared, now);
        let mut state = shared.lock();
        for (topic, value) in topics {
            let uptime = topic == "$SYS/broker/uptime";
            if !uptime && self.last.get(&topic) == Some(&value) {
                continue;
            }
            let Ok(name) = topic.parse::<TopicName>() else {
                continue;
            };
            self.last.insert(topic.clone(), value.clone());
            let mut publish = Publish::new(MqttString::from(topic), bytes::Bytes::from(value));
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
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: usize = LOAD_COUNTERS.len();

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 0.005
    }

    #[test]
    fn load_averages_move_toward_the_rate_per_minute() {
        let start = Instant::now();
        let mut load = LoadAverages::new(start, [0; N]);
        // 60 messages received in the first minute: each average moves
        // from 0 toward 60 per minute by 1 - exp(-60 s / window).
        let mut counts = [0; N];
        counts[2] = 60;
        load.update(start + Duration::from_secs(60), counts);
        assert!(close(load.get(2, 0), 60.0 * (1.0 - (-1.0f64).exp())));
        assert!(close(load.get(2, 1), 60.0 * (1.0 - (-0.2f64).exp())));
        assert!(close(load.get(2, 2), 60.0 * (1.0 - (-1.0f64 / 15.0).exp())));
        // The other counters did not move.
        assert_eq!(load.get(0, 0), 0.0);
        // A quiet minute: the 1 min average falls by exp(-1).
        let one_minute = load.get(2, 0);
        load.update(start + Duration::from_secs(120), counts);
        assert!(close(load.get(2, 0), one_minute * (-1.0f64).exp()));
    }

    #[test]
    fn load_averages_settle_at_a_steady_rate() {
        let start = Instant::now();
        let mut load = LoadAverages::new(start, [0; N]);
        // Two a second (120 per minute) on every counter for three hours,
        // updated every 10 s: every window settles at 120.
        for step in 1..=1080u64 {
            load.update(start + Duration::from_secs(step * 10), [step * 20; N]);
        }
        for counter in 0..N {
            for window in 0..LOAD_WINDOWS.len() {
                assert!(
                    close(load.get(counter, window), 120.0),
                    "{counter} {window}"
                );
            }
        }
    }

    #[test]
    fn load_averages_ignore_no_time_and_counters_that_go_back() {
        let start = Instant::now();
        let mut load = LoadAverages::new(start, [100; N]);
        // No time passed: nothing changes (no division by zero).
        load.update(start, [200; N]);
        assert_eq!(load.get(0, 0), 0.0);
        // A counter below its last value counts as no messages.
        load.update(start + Duration::from_secs(10), [50; N]);
        assert_eq!(load.get(0, 0), 0.0);
        assert!(load.get(0, 0).is_finite());
        // Out of range: zero, no panic.
        assert_eq!(load.get(N, 0), 0.0);
        assert_eq!(load.get(0, LOAD_WINDOWS.len()), 0.0);
    }
}
