//! Connection options: the builder behind [`Client::connect`](crate::Client::connect).

use std::net::IpAddr;
use std::num::{NonZeroU16, NonZeroU32};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fulmar_codec::{Connect, MqttString, ProtocolVersion, Will};
use fulmar_session::Config;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::auth::{Authentication, Authenticator};
use crate::error::Error;
#[cfg(feature = "tls")]
use crate::tls::TlsOptions;
use crate::transport::Io;

/// How the client reaches the broker.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum Transport {
    /// Plain TCP (port 1883 by convention).
    #[default]
    Tcp,
    /// TLS over TCP (port 8883 by convention).
    #[cfg(feature = "tls")]
    Tls(TlsOptions),
    /// WebSocket, subprotocol `mqtt`, at `ws://host:port{path}`.
    #[cfg(feature = "websocket")]
    WebSocket {
        /// The HTTP path, e.g. `/mqtt`.
        path: String,
    },
    /// WebSocket over TLS, subprotocol `mqtt`, at `wss://host:port{path}`.
    #[cfg(all(feature = "websocket", feature = "tls"))]
    SecureWebSocket {
        /// The HTTP path, e.g. `/mqtt`.
        path: String,
        /// TLS settings.
        tls: TlsOptions,
    },
    /// A byte stream the application opens itself (see [`Transport::custom`]):
    /// a Unix domain socket, an in-memory pipe to an embedded broker, a
    /// tunnel. The host and port of [`ConnectOptions`] only name it in logs.
    Custom(Connector),
}

impl Transport {
    /// A transport that calls `connect` for every connection attempt (the
    /// first and each reconnect) and speaks MQTT over the stream it returns.
    ///
    /// ```no_run
    /// use fulmar_client::{Client, ConnectOptions, Transport};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), fulmar_client::Error> {
    /// # #[cfg(unix)] {
    /// let transport = Transport::custom(|| tokio::net::UnixStream::connect("/run/mqtt.sock"));
    /// let options = ConnectOptions::new("mqtt.sock", 0).transport(transport);
    /// let (client, _connack) = Client::connect(options).await?;
    /// # }
    /// # Ok(())
    /// # }
    /// ```
    pub fn custom<F, Fut, S>(connect: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::io::Result<S>> + Send + 'static,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Self::Custom(Connector(Arc::new(move || {
            let stream = connect();
            Box::pin(async move { Ok(Box::new(stream.await?) as Box<dyn Io>) })
        })))
    }
}

/// What opens the stream of a [`Transport::Custom`]; made by
/// [`Transport::custom`].
#[derive(Clone)]
pub struct Connector(Arc<ConnectFn>);

type ConnectFn =
    dyn Fn() -> Pin<Box<dyn Future<Output = std::io::Result<Box<dyn Io>>> + Send>> + Send + Sync;

impl Connector {
    /// Opens one stream.
    pub(crate) async fn connect(&self) -> std::io::Result<Box<dyn Io>> {
        (self.0)().await
    }
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connector")
    }
}

/// Reconnect policy: exponential backoff with jitter.
///
/// The delay before attempt `n` (from 0) is `min(initial * 2^n, max)`, of which
/// a random fraction up to `jitter` is taken off, so that many clients that
/// lost the same broker do not come back at the same instant. The attempt
/// counter restarts once a connection has stayed up for `max` after its
/// CONNACK: a broker that accepts and at once ends the connection (a session
/// taken over by another client with the same identifier) gets growing
/// delays.
#[derive(Clone, Debug, PartialEq)]
pub struct Reconnect {
    enabled: bool,
    initial: Duration,
    max: Duration,
    jitter: f64,
}

impl Default for Reconnect {
    /// On: 100 ms doubling up to 30 s, jitter 0.5.
    fn default() -> Self {
        Self {
            enabled: true,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            jitter: 0.5,
        }
    }
}

impl Reconnect {
    /// No reconnection: a lost connection closes the client.
    #[must_use]
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// Exponential backoff from `initial` up to `max`, jitter 0.5.
    #[must_use]
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        Self {
            enabled: true,
            initial,
            max: max.max(initial),
            jitter: 0.5,
        }
    }

    /// The largest fraction of each delay taken off at random (0 to 1; NaN
    /// is taken as 0).
    #[must_use]
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = unit(jitter);
        self
    }

    /// Whether reconnecting is on.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// How long a connection must stay up to restart the attempt counter.
    pub(crate) fn stable_after(&self) -> Duration {
        self.max
    }

    /// The delay before attempt `attempt` (0 for the first), with `random`
    /// in `[0, 1)` choosing the jitter (NaN is taken as 0).
    #[must_use]
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(31));
        let base = self.initial.saturating_mul(factor).min(self.max);
        // In [0, 1]: `mul_f64` panics on NaN.
        let kept = 1.0 - unit(self.jitter) * unit(random);
        // `mul_f64` also panics when the product rounds to more than
        // `Duration::MAX` (a base near it, kept whole): that is the base.
        Duration::try_from_secs_f64(base.as_secs_f64() * kept).unwrap_or(base)
    }
}

/// `x` clamped to `[0, 1]`, NaN taken as 0 (`clamp` keeps NaN).
fn unit(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

/// Everything [`Client::connect`](crate::Client::connect) needs: where the
/// broker is, the CONNECT fields, the limits the client announces and
/// enforces, and the reconnect policy.
///
/// ```
/// use std::time::Duration;
/// use fulmar_client::{ConnectOptions, ProtocolVersion, Reconnect};
///
/// let options = ConnectOptions::new("127.0.0.1", 1883)
///     .client_id("sensor-17")
///     .protocol_version(ProtocolVersion::V5)
///     .clean_start(false)
///     .session_expiry_interval(3600)
///     .keep_alive(Duration::from_secs(30))
///     .credentials("user", "secret")
///     .receive_maximum(32)
///     .reconnect(Reconnect::exponential(Duration::from_millis(50), Duration::from_secs(10)));
/// assert_eq!(options.address(), ("127.0.0.1", 1883));
/// ```
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) transport: Transport,
    pub(crate) version: ProtocolVersion,
    pub(crate) client_id: String,
    pub(crate) clean_start: bool,
    pub(crate) session_expiry_interval: Option<u32>,
    pub(crate) keep_alive: Duration,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<Bytes>,
    pub(crate) will: Option<Will>,
    pub(crate) receive_maximum: NonZeroU16,
    pub(crate) max_inflight: NonZeroU16,
    pub(crate) maximum_packet_size: Option<NonZeroU32>,
    pub(crate) maximum_outgoing_packet_size: Option<NonZeroU32>,
    pub(crate) topic_alias_maximum: u16,
    pub(crate) user_properties: Vec<(String, String)>,
    pub(crate) request_response_information: Option<bool>,
    pub(crate) request_problem_information: Option<bool>,
    pub(crate) reconnect: Reconnect,
    pub(crate) retry_initial_connect: bool,
    pub(crate) max_buffered: usize,
    pub(crate) stream_capacity: usize,
    pub(crate) stream_capacity_bytes: u32,
    pub(crate) connect_timeout: Duration,
    pub(crate) write_timeout: Option<Duration>,
    pub(crate) ping_timeout: Duration,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) manual_acks: bool,
    pub(crate) bridge: bool,
    /// Other addresses of the same service, in the order they are tried.
    pub(crate) fallbacks: Vec<(String, u16)>,
    /// The local address the TCP socket is bound to before it connects.
    pub(crate) local_address: Option<IpAddr>,
    /// MQTT 5.0 enhanced authentication: the method and its authenticator.
    pub(crate) authentication: Option<Authentication>,
}

/// The largest packet MQTT can encode (remaining length 268 435 455 plus the fixed header).
const MQTT_MAX_PACKET: u32 = 268_435_460;

impl ConnectOptions {
    /// Options for the broker at `host:port`, with MQTT 5.0, an empty client
    /// id (the broker assigns one), clean start, keep alive 60 s, Receive
    /// Maximum 64, reconnect on, TCP.
    #[must_use]
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            transport: Transport::Tcp,
            version: ProtocolVersion::V5,
            client_id: String::new(),
            clean_start: true,
            session_expiry_interval: None,
            keep_alive: Duration::from_secs(60),
            username: None,
            password: None,
            will: None,
            receive_maximum: NonZeroU16::new(64).unwrap_or(NonZeroU16::MIN),
            max_inflight: NonZeroU16::new(20).unwrap_or(NonZeroU16::MIN),
            maximum_packet_size: None,
            maximum_outgoing_packet_size: None,
            topic_alias_maximum: 16,
            user_properties: Vec::new(),
            request_response_information: None,
            request_problem_information: None,
            reconnect: Reconnect::default(),
            retry_initial_connect: false,
            max_buffered: 1024,
            stream_capacity: 128,
            stream_capacity_bytes: 64 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            write_timeout: Some(Duration::from_secs(30)),
            ping_timeout: Duration::from_secs(10),
            request_timeout: Some(Duration::from_secs(30)),
            manual_acks: false,
            bridge: false,
            fallbacks: Vec::new(),
            local_address: None,
            authentication: None,
        }
    }

    /// The broker's host and port.
    #[must_use]
    pub fn address(&self) -> (&str, u16) {
        (&self.host, self.port)
    }

    /// Adds another address of the same service (a standby broker, another
    /// node of a cluster), tried when an attempt at the address before it
    /// fails (no connection, no CONNACK, or a refusal): the first connection
    /// tries each in turn before it gives up, and a reconnection moves to the
    /// next after each failed attempt. Once a connection was up, the next
    /// reconnection starts from the first address again. The transport, TLS
    /// settings and credentials are the same for all.
    ///
    /// ```
    /// use fulmar_client::ConnectOptions;
    ///
    /// let options = ConnectOptions::new("broker-a.example", 1883)
    ///     .fallback_address("broker-b.example", 1883);
    /// assert_eq!(
    ///     options.addresses().collect::<Vec<_>>(),
    ///     [("broker-a.example", 1883), ("broker-b.example", 1883)]
    /// );
    /// ```
    #[must_use]
    pub fn fallback_address(mut self, host: impl Into<String>, port: u16) -> Self {
        self.fallbacks.push((host.into(), port));
        self
    }

    /// Every address, in the order they are tried: [`address`](Self::address)
    /// first, then each [`fallback_address`](Self::fallback_address).
    pub fn addresses(&self) -> impl Iterator<Item = (&str, u16)> {
        std::iter::once((self.host.as_str(), self.port))
            .chain(self.fallbacks.iter().map(|(h, p)| (h.as_str(), *p)))
    }

    /// Binds the connection's socket to this local address (any port)
    /// before it connects, as mosquitto's `-A` / `bind_address`: on a host
    /// with several interfaces or addresses, the one the broker sees the
    /// client come from, and so the interface it leaves by. Used by the
    /// TCP, TLS and WebSocket transports, for every address (see
    /// [`fallback_address`](Self::fallback_address)); a
    /// [`Transport::Custom`] opens its own stream and ignores it. Only the
    /// broker addresses of the same family (IPv4 or IPv6) are tried; with
    /// none, or an address the host does not have, connecting fails with
    /// [`Error::Io`]. Default: none, the system picks.
    ///
    /// ```
    /// use std::net::Ipv4Addr;
    /// use fulmar_client::ConnectOptions;
    ///
    /// let options = ConnectOptions::new("127.0.0.1", 1883)
    ///     .local_address(Ipv4Addr::LOCALHOST.into());
    /// assert_eq!(options.bind_address(), Some(Ipv4Addr::LOCALHOST.into()));
    /// ```
    #[must_use]
    pub fn local_address(mut self, address: IpAddr) -> Self {
        self.local_address = Some(address);
        self
    }

    /// The local address set with [`local_address`](Self::local_address), if any.
    #[must_use]
    pub fn bind_address(&self) -> Option<IpAddr> {
        self.local_address
    }

    /// The protocol version these options connect with (see
    /// [`protocol_version`](Self::protocol_version)).
    #[must_use]
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The transport (default TCP).
    #[must_use]
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// MQTT 5.0 (default), 3.1.1 or, for old brokers, 3.1. A 3.1 CONNACK
    /// cannot say whether the broker kept the session: after a reconnection
    /// the client subscribes its streams again, and resends what was in
    /// flight when it did not ask for a clean session.
    #[must_use]
    pub fn protocol_version(mut self, version: ProtocolVersion) -> Self {
        self.version = version;
        self
    }

    /// The Client Identifier. Empty (the default) asks the broker to assign
    /// one (MQTT 5.0; the client's later connections use the one assigned,
    /// so that a session is resumed) and needs clean start under 3.1.1.
    #[must_use]
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = client_id.into();
        self
    }

    /// Clean Start (5.0) / CleanSession (3.1.1) of the first connection.
    ///
    /// Reconnections under 5.0 always use Clean Start 0, so the session is
    /// resumed if the broker kept it (see
    /// [`session_expiry_interval`](Self::session_expiry_interval));
    /// under 3.1.1 they use this value, since a CleanSession 0 session never
    /// expires on the broker.
    #[must_use]
    pub fn clean_start(mut self, clean_start: bool) -> Self {
        self.clean_start = clean_start;
        self
    }

    /// Session Expiry Interval in seconds (MQTT 5.0): how long the broker
    /// keeps the session after the connection is lost. 0 (the default) ends
    /// the session with the connection, so nothing can be resumed. To resume
    /// it when the process starts again, also set a fixed
    /// [`client_id`](Self::client_id) and
    /// [`clean_start(false)`](Self::clean_start). MQTT 3.1.1 has no expiry
    /// (a CleanSession 0 session is kept until the broker drops it): set
    /// under 3.1.1, connecting fails with [`Error::InvalidOptions`].
    #[must_use]
    pub fn session_expiry_interval(mut self, seconds: u32) -> Self {
        self.session_expiry_interval = Some(seconds);
        self
    }

    /// Keep Alive, rounded down to whole seconds (0 disables it, max 65 535 s).
    #[must_use]
    pub fn keep_alive(mut self, keep_alive: Duration) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// User Name and Password.
    #[must_use]
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<Bytes>) -> Self {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }

    /// User Name only.
    #[must_use]
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// The Will Message, with its Will Properties under MQTT 5.0 (delay,
    /// expiry, content type, response topic, correlation data, user properties).
    #[must_use]
    pub fn will(mut self, will: Will) -> Self {
        self.will = Some(will);
        self
    }

    /// Receive Maximum (default 64): how many QoS 1/2 messages the broker may
    /// have unacknowledged towards this client. Announced under 5.0; it also
    /// bounds the messages the client holds for slow subscription streams.
    /// 0 is taken as 1.
    #[must_use]
    pub fn receive_maximum(mut self, receive_maximum: u16) -> Self {
        self.receive_maximum = NonZeroU16::new(receive_maximum).unwrap_or(NonZeroU16::MIN);
        self
    }

    /// The most QoS 1/2 messages the client sends without acknowledgement
    /// (default 20), below the broker's Receive Maximum under 5.0. MQTT 3.1.1
    /// has no Receive Maximum, and brokers there limit in-flight messages by
    /// configuration (mosquitto's `max_inflight_messages` is 20 by default).
    /// 0 is taken as 1.
    #[must_use]
    pub fn max_inflight(mut self, max: u16) -> Self {
        self.max_inflight = NonZeroU16::new(max).unwrap_or(NonZeroU16::MIN);
        self
    }

    /// Maximum Packet Size the client accepts: announced under 5.0, enforced
    /// on every inbound packet. Default: no limit beyond MQTT's own.
    ///
    /// An MQTT 3.1.1 (or 3.1) broker cannot know it. A message over it is
    /// dropped there: acknowledged (QoS 1/2, read up to its Packet
    /// Identifier, the rest never buffered) so that the broker does not
    /// send it again, and the connection is closed and, with
    /// [`reconnect`](Self::reconnect) on, established again
    /// ([`Client::last_disconnection`](crate::Client::last_disconnection)
    /// tells why). With [`manual_acks`](Self::manual_acks), while earlier
    /// messages wait for [`Client::ack`](crate::Client::ack), it is not
    /// acknowledged (acknowledgements keep the order of receipt) and comes
    /// again on the next connection.
    #[must_use]
    pub fn maximum_packet_size(mut self, bytes: u32) -> Self {
        self.maximum_packet_size = NonZeroU32::new(bytes);
        self
    }

    /// The largest packet the client sends, whatever the broker allows
    /// (default: the broker's Maximum Packet Size alone). An MQTT 3.1.1
    /// broker cannot announce its limit and closes the connection on a
    /// packet over it; without this, a QoS 1/2 message over it would be sent
    /// again at every reconnection and never complete. With it, such a
    /// publish fails at once with
    /// [`LimitExceeded::PacketTooLarge`](crate::LimitExceeded::PacketTooLarge)
    /// (in [`Error::Session`](crate::Error::Session)).
    /// Zero: no limit of the client's own.
    ///
    /// ```
    /// use fulmar_client::{ConnectOptions, ProtocolVersion};
    ///
    /// // mosquitto with `max_packet_size 1000`, spoken to in 3.1.1.
    /// let options = ConnectOptions::new("broker.local", 1883)
    ///     .protocol_version(ProtocolVersion::V311)
    ///     .maximum_outgoing_packet_size(1000);
    /// ```
    #[must_use]
    pub fn maximum_outgoing_packet_size(mut self, bytes: u32) -> Self {
        self.maximum_outgoing_packet_size = NonZeroU32::new(bytes);
        self
    }

    /// Topic Alias Maximum the client announces (MQTT 5.0, default 16).
    #[must_use]
    pub fn topic_alias_maximum(mut self, maximum: u16) -> Self {
        self.topic_alias_maximum = maximum;
        self
    }

    /// Adds a User Property to the CONNECT (MQTT 5.0).
    #[must_use]
    pub fn user_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.user_properties.push((key.into(), value.into()));
        self
    }

    /// Request Response Information (MQTT 5.0): `true` asks the broker for
    /// a Response Information string in its CONNACK (a base for response
    /// topics, [`ConnAck`](fulmar_codec::ConnAck)'s
    /// `properties.response_information`; a broker may send none). Not
    /// asked by default.
    #[must_use]
    pub fn request_response_information(mut self, on: bool) -> Self {
        self.request_response_information = Some(on);
        self
    }

    /// Request Problem Information (MQTT 5.0): `false` asks the broker to
    /// send no Reason String or User Properties except in PUBLISH, CONNACK
    /// and DISCONNECT (errors then come with their reason codes alone).
    /// Asked by default.
    #[must_use]
    pub fn request_problem_information(mut self, on: bool) -> Self {
        self.request_problem_information = Some(on);
        self
    }

    /// The reconnect policy (default: on, see [`Reconnect::default`]).
    #[must_use]
    pub fn reconnect(mut self, reconnect: Reconnect) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// Whether [`Client::connect`](crate::Client::connect) keeps trying
    /// until the first connection is made (default: off, it fails at the
    /// first failed attempt, after one pass over the
    /// [`fallback_address`](Self::fallback_address)es). On, a failed first attempt
    /// is retried as a lost connection is, with the
    /// [`reconnect`](Self::reconnect) policy's backoff (so nothing is
    /// retried when that is [`Reconnect::disabled`]): for a service that may
    /// start before its broker. Not retried: a refusal that another attempt
    /// would meet again (bad user name or password, not authorized, client
    /// identifier not valid, protocol version not supported, banned, ...:
    /// [`Error::Refused`](crate::Error::Refused)), and a failure of the
    /// [`authentication`](Self::authentication) exchange on our side. To
    /// give up after a while, wrap the call in a timeout. Each attempt is
    /// logged at warning level.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), fulmar_client::Error> {
    /// use std::time::Duration;
    /// use fulmar_client::{Client, ConnectOptions};
    ///
    /// let options = ConnectOptions::new("broker.local", 1883).retry_initial_connect(true);
    /// let Ok(connected) = tokio::time::timeout(Duration::from_secs(60), Client::connect(options)).await
    /// else {
    ///     panic!("no broker after a minute");
    /// };
    /// let (client, _connack) = connected?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn retry_initial_connect(mut self, on: bool) -> Self {
        self.retry_initial_connect = on;
        self
    }

    /// How many publishes may wait (default 1024): for a connection, or,
    /// while connected, for send quota (the broker's Receive Maximum, for
    /// QoS 1/2, and the QoS 0 messages behind them, which keep their
    /// order). Beyond it a `publish` waits for room while connected, and
    /// fails with [`Error::QueueFull`] while disconnected. A publish that is
    /// sent at once does not wait and does not count: with 0, nothing is
    /// buffered while disconnected, and while connected a publish beyond
    /// the send quota waits for it.
    #[must_use]
    pub fn max_buffered_publishes(mut self, max: usize) -> Self {
        self.max_buffered = max;
        self
    }

    /// Capacity of each subscription stream (default 128 messages). A full
    /// stream stops the client from taking further messages off the
    /// connection (see the crate docs on backpressure). 0 is taken as 1.
    #[must_use]
    pub fn stream_capacity(mut self, capacity: usize) -> Self {
        self.stream_capacity = capacity.max(1);
        self
    }

    /// Capacity of each subscription stream in bytes (default 64 MiB): the
    /// messages a stream holds unread count their topic, payload and
    /// properties (and about a hundred bytes each for the message itself)
    /// against it, and a full stream applies backpressure as one at
    /// [`stream_capacity`](Self::stream_capacity) messages does. It bounds
    /// the memory a stream that is not read can take when the broker sends
    /// large messages. A message larger than the whole capacity still goes
    /// through, once the stream is empty. 0 is taken as 1.
    ///
    /// ```
    /// use fulmar_client::ConnectOptions;
    ///
    /// // Messages of up to 4 MiB; at most 16 MiB waiting per stream.
    /// let options = ConnectOptions::new("broker.local", 1883)
    ///     .maximum_packet_size(4 << 20)
    ///     .stream_capacity_bytes(16 << 20);
    /// ```
    #[must_use]
    pub fn stream_capacity_bytes(mut self, bytes: u32) -> Self {
        self.stream_capacity_bytes = bytes.max(1);
        self
    }

    /// Time allowed for the transport to connect and for the CONNACK to
    /// arrive (default 10 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a write to the broker may go without progress (default
    /// 30 s) before the connection is taken as lost and, with reconnect on,
    /// made again. While a write waits nothing else runs on the connection
    /// (no reads, no keep-alive): a broker that stops reading would
    /// otherwise hold the client forever. A large message on a slow link is
    /// fine as long as some of it is taken within each period. "Taken" is
    /// seen when the operating system takes more into the socket's send
    /// buffer, which, once the buffer is full, it does only after about a
    /// third of the buffer went out (Linux grows that buffer up to
    /// `net.ipv4.tcp_wmem`'s maximum, 4 MiB by default): with the default
    /// period, a client that keeps writing more than a slow link carries
    /// (below a few KB/s) can be taken as stalled although its bytes still
    /// flow. On such links raise the period or turn it off. Zero turns the
    /// limit off.
    #[must_use]
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = Some(timeout).filter(|t| !t.is_zero());
        self
    }

    /// How long to wait for the PINGRESP to a PINGREQ (default 10 s) before
    /// the connection is taken as lost and, with reconnect on, made again: a
    /// dead connection is noticed at most the keep alive plus this after the
    /// last packet sent or received, whichever was earlier (a PINGREQ also
    /// goes out when nothing came from the broker for a keep-alive period,
    /// so a client that only publishes at QoS 0 notices too). A PINGREQ goes
    /// out at each keep-alive period while one is unanswered.
    ///
    /// ```
    /// use std::time::Duration;
    /// use fulmar_client::ConnectOptions;
    ///
    /// let options = ConnectOptions::new("broker.local", 1883)
    ///     .keep_alive(Duration::from_secs(10))
    ///     .ping_timeout(Duration::from_secs(2));
    /// ```
    #[must_use]
    pub fn ping_timeout(mut self, timeout: Duration) -> Self {
        self.ping_timeout = timeout;
        self
    }

    /// How long to wait for the answer to a SUBSCRIBE or UNSUBSCRIBE
    /// (SUBACK, UNSUBACK) and to the oldest QoS 1/2 publish waiting for
    /// its (PUBACK, PUBREC, PUBCOMP), counted from when it became the
    /// oldest: sent while no other publish waited, the publishes sent
    /// before it acknowledged, or its PUBREC received (default 30 s; zero:
    /// no limit). Answers to the other publishes do not count for it: a
    /// broker that acknowledges every publish but one is caught too (see
    /// [`Config::request_timeout`](fulmar_session::Config::request_timeout)).
    /// A broker that leaves them
    /// unanswered longer is taken as broken, as one that leaves a
    /// PINGREQ unanswered: the connection is dropped (and, with reconnect
    /// on, made again) and
    /// [`Client::last_disconnection`](crate::Client::last_disconnection)
    /// tells [`SessionError::RequestTimeout`](crate::SessionError::RequestTimeout).
    /// A `subscribe` or `unsubscribe` then fails with
    /// [`Error::RequestLost`](crate::Error::RequestLost); a publish is sent
    /// again on the resumed session (or fails as any publish in flight
    /// when the connection ends). Without it, a broker that answers
    /// PINGREQ but nothing else holds those calls (and their packet
    /// identifiers) for as long as the connection lasts. As with the
    /// PINGRESP, an acknowledgement behind messages that the application
    /// does not read is not read either.
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout).filter(|t| !t.is_zero());
        self
    }

    /// Manual acknowledgement of inbound QoS 1/2 messages (default off): the
    /// PUBACK / PUBREC waits for [`Client::ack`](crate::Client::ack), so a
    /// message is acknowledged only once the application has dealt with it.
    ///
    /// Until the application makes its first stream (`subscribe`,
    /// [`Client::messages`](crate::Client::messages)), what arrives (a
    /// resumed session's queue, right after the CONNACK) waits for it
    /// unacknowledged: QoS 1/2 messages as many as the broker may send
    /// unacknowledged ([`receive_maximum`](Self::receive_maximum)), QoS 0
    /// ones up to [`stream_capacity`](Self::stream_capacity) (more are
    /// dropped). Then they go where they would have gone.
    ///
    /// Once there is a stream, a message that no stream receives is
    /// acknowledged at once and kept for the next stream that wants it (up
    /// to [`stream_capacity`](Self::stream_capacity) of them; more are
    /// dropped), and so is a message once every stream that received it
    /// was dropped without reading it. A durable consumer that subscribes
    /// to several filters in turn can connect with
    /// [`Client::connect_with_messages`](crate::Client::connect_with_messages)
    /// instead, whose stream takes what the session queued.
    #[must_use]
    pub fn manual_acks(mut self, on: bool) -> Self {
        self.manual_acks = on;
        self
    }

    /// Authenticates with MQTT 5.0 enhanced authentication (section 4.12):
    /// every CONNECT carries `method` as its Authentication Method, and
    /// `authenticator` supplies the Authentication Data and answers the
    /// broker's challenges (see [`Authenticator`]).
    /// [`Client::reauthenticate`](crate::Client::reauthenticate) runs the
    /// exchange again on a live connection. A User Name and Password, if
    /// set, go in the same CONNECT. MQTT 5.0 only: under 3.1.1 connecting
    /// fails with [`Error::InvalidOptions`].
    ///
    /// Clones of these options share the authenticator: give each client
    /// options of its own, so that two exchanges never interleave.
    #[must_use]
    pub fn authentication(
        mut self,
        method: impl Into<String>,
        authenticator: impl Authenticator,
    ) -> Self {
        self.authentication = Some(Authentication::new(method.into(), authenticator));
        self
    }

    /// The Authentication Method set with
    /// [`authentication`](Self::authentication).
    #[must_use]
    pub fn authentication_method(&self) -> Option<&str> {
        self.authentication.as_ref().map(|a| a.method.as_str())
    }

    /// Announces this client as a bridge, another broker (default off): the
    /// CONNECT's protocol level has its high bit set, as mosquitto's 3.1.1
    /// bridges send it (`try_private`). Under 3.1.1, brokers that know it
    /// (mosquitto, fulmar) then send the client none of its own messages
    /// back and keep the RETAIN flag of what they forward; others refuse
    /// the connection (Unsupported Protocol Version) or close it. Under 5.0
    /// No Local and Retain As Published do the same, and mosquitto closes a
    /// 5.0 connection with the bit: leave it off there.
    #[must_use]
    pub fn bridge(mut self, on: bool) -> Self {
        self.bridge = on;
        self
    }

    /// The inbound packet size limit handed to the decoder.
    pub(crate) fn inbound_limit(&self) -> u32 {
        self.maximum_packet_size
            .map_or(MQTT_MAX_PACKET, |m| m.get())
    }

    /// The session limits.
    pub(crate) fn session_config(&self) -> Config {
        Config {
            receive_maximum: self.receive_maximum,
            max_inflight: self.max_inflight,
            max_pending: self.max_buffered,
            topic_alias_maximum: self.topic_alias_maximum,
            maximum_packet_size: self.maximum_packet_size,
            peer_maximum_packet_size: self.maximum_outgoing_packet_size,
            connect_timeout: Some(self.connect_timeout),
            manual_acks: self.manual_acks,
            ping_timeout: self.ping_timeout,
            request_timeout: self.request_timeout,
            ..Config::default()
        }
    }

    /// The CONNECT packet, validated. `reconnect`: for a later connection.
    pub(crate) fn connect_packet(&self, reconnect: bool) -> Result<Connect, Error> {
        let v5 = self.version == ProtocolVersion::V5;
        let string = |s: &str, what: &str| {
            MqttString::try_new(s).map_err(|e| Error::InvalidOptions(format!("{what}: {e}")))
        };
        let mut connect = Connect::new(self.version, string(&self.client_id, "client id")?);
        connect.bridge = self.bridge;
        connect.clean_start = if reconnect && v5 {
            false
        } else {
            self.clean_start
        };
        connect.keep_alive = u16::try_from(self.keep_alive.as_secs()).unwrap_or(u16::MAX);
        connect.username = match &self.username {
            Some(u) => Some(string(u, "user name")?),
            None => None,
        };
        connect.password.clone_from(&self.password);
        if !v5 {
            if self.password.is_some() && self.username.is_none() {
                return Err(Error::InvalidOptions(
                    "[MQTT-3.1.2-22] MQTT 3.1.1 needs a user name with a password".into(),
                ));
            }
            if self.client_id.is_empty() && !self.clean_start {
                return Err(Error::InvalidOptions(
                    "[MQTT-3.1.3-7] an empty client id needs clean session".into(),
                ));
            }
            if self.session_expiry_interval.is_some()
                || !self.user_properties.is_empty()
                || self.request_response_information.is_some()
                || self.request_problem_information.is_some()
                || self.authentication.is_some()
            {
                return Err(Error::InvalidOptions(
                    "session expiry, user properties, request response / problem \
                     information and enhanced authentication need MQTT 5.0"
                        .into(),
                ));
            }
            if self
                .will
                .as_ref()
                .is_some_and(|w| w.properties != Default::default())
            {
                return Err(Error::InvalidOptions(
                    "will properties need MQTT 5.0".into(),
                ));
            }
        }
        connect.will.clone_from(&self.will);
        if v5 {
            connect.properties.session_expiry_interval = self.session_expiry_interval;
            connect.properties.request_response_information = self.request_response_information;
            connect.properties.request_problem_information = self.request_problem_information;
            if let Some(authentication) = &self.authentication {
                // The Authentication Data comes from the authenticator, per
                // connection (the driver asks it).
                connect.properties.authentication_method =
                    Some(string(&authentication.method, "authentication method")?);
            }
            for (k, v) in &self.user_properties {
                connect
                    .properties
                    .user_properties
                    .push((string(k, "user property")?, string(v, "user property")?));
            }
        }
        Ok(connect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let r = Reconnect::exponential(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(r.delay(0, 0.0), Duration::from_millis(100));
        assert_eq!(r.delay(1, 0.0), Duration::from_millis(200));
        assert_eq!(r.delay(3, 0.0), Duration::from_millis(800));
        assert_eq!(r.delay(4, 0.0), Duration::from_secs(1));
        assert_eq!(r.delay(40, 0.0), Duration::from_secs(1));
        // Jitter takes off at most half (default jitter 0.5).
        assert_eq!(r.delay(4, 1.0), Duration::from_millis(500));
        let no_jitter = r.clone().jitter(0.0);
        assert_eq!(no_jitter.delay(2, 0.9), Duration::from_millis(400));
        assert!(!Reconnect::disabled().is_enabled());
    }

    // A NaN jitter (or random number) is taken as 0: no panic in the
    // connection task at its first reconnect.
    #[test]
    fn nan_jitter_is_no_jitter() {
        let r = Reconnect::exponential(Duration::from_millis(100), Duration::from_secs(1));
        let nan = r.clone().jitter(f64::NAN);
        assert_eq!(nan.delay(2, 0.5), Duration::from_millis(400));
        assert_eq!(r.delay(2, f64::NAN), Duration::from_millis(400));
        assert_eq!(
            r.jitter(f64::INFINITY).delay(2, 0.5),
            Duration::from_millis(200)
        );
    }

    // (no spec statement) A delay near `Duration::MAX`, kept whole (no
    // jitter drawn), rounds above it as `f64` seconds: `mul_f64` panicked.
    #[test]
    fn a_backoff_of_duration_max_does_not_panic() {
        let r = Reconnect::exponential(Duration::MAX, Duration::MAX);
        assert_eq!(r.delay(0, 0.0), Duration::MAX);
        assert_eq!(r.clone().jitter(0.0).delay(40, 0.7), Duration::MAX);
        assert!(r.delay(3, 1.0) < Duration::MAX);
    }

    // A reconnection under 5.0 asks to resume (Clean Start 0); 3.1.1 keeps the flag.
    #[test]
    fn the_ping_timeout_reaches_the_session() {
        assert_eq!(
            ConnectOptions::new("h", 1).session_config().ping_timeout,
            Duration::from_secs(10)
        );
        let o = ConnectOptions::new("h", 1).ping_timeout(Duration::from_secs(2));
        assert_eq!(o.session_config().ping_timeout, Duration::from_secs(2));
    }

    #[test]
    fn v5_reconnect_uses_clean_start_0() {
        let o = ConnectOptions::new("h", 1).client_id("c").clean_start(true);
        assert!(o.connect_packet(false).unwrap().clean_start);
        assert!(!o.connect_packet(true).unwrap().clean_start);
        let v3 = o.protocol_version(ProtocolVersion::V311);
        assert!(v3.connect_packet(true).unwrap().clean_start);
    }

    // v3:MQTT-3.1.3-7: an empty client id needs CleanSession 1
    // v3:MQTT-3.1.2-22: no password without user name
    #[test]
    fn v311_options_are_checked() {
        let o = ConnectOptions::new("h", 1)
            .protocol_version(ProtocolVersion::V311)
            .clean_start(false);
        assert!(matches!(
            o.connect_packet(false),
            Err(Error::InvalidOptions(_))
        ));
        let mut o = ConnectOptions::new("h", 1)
            .protocol_version(ProtocolVersion::V311)
            .client_id("c");
        o.password = Some(Bytes::from_static(b"pw"));
        assert!(matches!(
            o.connect_packet(false),
            Err(Error::InvalidOptions(_))
        ));
        let o = ConnectOptions::new("h", 1)
            .protocol_version(ProtocolVersion::V311)
            .user_property("k", "v");
        assert!(matches!(
            o.connect_packet(false),
            Err(Error::InvalidOptions(_))
        ));
    }

    #[test]
    fn v5_properties_go_into_connect() {
        let o = ConnectOptions::new("h", 1)
            .session_expiry_interval(60)
            .user_property("k", "v")
            .keep_alive(Duration::from_secs(100_000));
        let c = o.connect_packet(false).unwrap();
        assert_eq!(c.properties.session_expiry_interval, Some(60));
        assert_eq!(c.properties.user_properties.len(), 1);
        assert_eq!(c.keep_alive, u16::MAX);
    }
}
