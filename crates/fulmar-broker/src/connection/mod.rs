//! One network connection: a tokio task that reads frames, feeds its server
//! [`Session`], writes what `poll_transmit` yields, sleeps until
//! `poll_timeout`, and answers the session's events from the shared state.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fulmar_codec::{
    AckProperties, CodecError, ConnAckProperties, Connect, ConnectReasonCode, DisconnectProperties,
    DisconnectReasonCode, MqttString, Packet, PacketId, ProtocolVersion, Publish, ReasonCode,
    RetainHandling, SubAckReasonCode, Subscribe, UnsubAckReasonCode, Unsubscribe, Will,
};
use fulmar_session::{DormantSession, Event, Initiator, Session, SessionState};

use crate::store::{StoreOp, StoredWill, WillDue, unix_millis};
use fulmar_topic::{SubscriptionFilter, TopicName};
use futures::FutureExt;
use futures::future::OptionFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

use crate::auth::{AuthDecision, ClientInfo, ConnectInfo};
use crate::broker::Shared;
use crate::config::OverloadPolicy;
use crate::frames::Frames;
use crate::listener::{ListenerShared, Peer, Slot};
use crate::observe::{BrokerEvent, Counted};

mod auth;
mod custom;
mod inbound;
mod tcp;
mod transport;

pub(crate) use custom::Custom;
pub(crate) use tcp::TcpIo;

use crate::state::{
    Control, ControlReceiver, Delivery, HeldWill, Inbound, Owner, PendingWill, Queued, State,
    SubOptions, Subscriber, age, secs, will_size,
};
use inbound::Refusal;
use transport::Transport;

/// How long a new connection waits for the old one to hand its session over.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a write still may take once another connection asks for the
/// session (well under [`HANDOVER_TIMEOUT`]): a write to a peer that stopped
/// reading would otherwise hold the session until the write timeout, and the
/// new connection would start without it.
const HANDOVER_WRITE_GRACE: Duration = Duration::from_secs(1);

/// Inbound packets handled before the answers are written.
const BATCH: usize = 64;

/// Payload bytes of inbound packets handled before the answers are written
/// (and the task yields): a publisher of large messages is read in turns
/// with the deliveries to their subscribers, as one of small ones is.
const BATCH_BYTES: usize = 256 * 1024;

/// Deliveries handled before they are written (with one flush).
const DELIVERY_BATCH: usize = 256;

/// How long a connection may take to close once the broker shuts down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long a closed connection waits for its peer to close too, reading
/// and dropping what it sends (at most [`LINGER_BYTES`]); see
/// `Transport::drain_input`.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// The byte stream of a connection.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sized + 'static {
    /// Whether its connections can hibernate.
    const HIBERNATES: bool = false;

    /// Makes the close of the stream a reset (TCP: a zero linger), for a
    /// peer the broker gave up on while writing: what is still queued for it
    /// is thrown away at once, and it does not see the stream end cleanly
    /// inside a packet.
    fn abort(&mut self) {}

    /// Takes the stream out of the runtime for the hibernation of `conn`;
    /// gives everything back when it cannot.
    fn into_asleep(
        conn: Box<Connection<Self>>,
        slot: Slot,
    ) -> Result<Asleep, (Box<Connection<Self>>, Slot)> {
        Err((conn, slot))
    }
}

impl Stream for TcpIo {
    const HIBERNATES: bool = cfg!(unix);

    fn abort(&mut self) {
        if let Self::Live(stream) = self {
            stream.abort();
        }
    }

    #[cfg(unix)]
    fn into_asleep(
        mut conn: Box<Connection<Self>>,
        slot: Slot,
    ) -> Result<Asleep, (Box<Connection<Self>>, Slot)> {
        if !conn.session.can_be_dormant() {
            return Err((conn, slot));
        }
        let Some(client) = conn.client.take() else {
            return Err((conn, slot));
        };
        let stream = match conn.transport.io_mut().sleep() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, "a connection could not hibernate");
                conn.client = Some(client);
                return Err((conn, slot));
            }
        };
        // What may hibernate has nothing buffered, queued or pending: only
        // what outlives the idle period is kept.
        let Connection {
            shared,
            session,
            peer,
            conn_id,
            control,
            auth,
            sent,
            naps,
            ..
        } = *conn;
        let mut session = match session.into_dormant() {
            Ok(session) => session,
            // Checked above: does not happen, but the connection goes on.
            Err(session) => {
                drop(shared);
                let parts = Parts {
                    listener: slot.listener().clone(),
                    peer,
                    conn_id,
                    control,
                    client,
                    auth,
                    sent,
                    naps,
                };
                return Err((parts.connection(session, stream), slot));
            }
        };
        let Client {
            id,
            info,
            will,
            will_delay,
            expiry,
            persistent,
            bridge,
        } = client;
        // The client identifier is kept once: in the session, unless the
        // session holds another one (then in `rare`).
        let own_id = (!session.share_client_id(&id)).then_some(id);
        let Peer { addr, certificate } = peer;
        let (addr, addr6) = match addr {
            std::net::SocketAddr::V4(v4) => (Some(v4), None),
            v6 @ std::net::SocketAddr::V6(_) => (None, Some(v6)),
        };
        let rare = Rare {
            username: info.username,
            will,
            auth,
            sent,
            certificate,
            addr6,
            id: own_id,
        };
        drop(shared);
        Ok(Asleep(Dormant {
            slot,
            session,
            addr,
            conn_id,
            control,
            will_delay,
            expiry,
            persistent,
            bridge,
            naps: naps.saturating_add(1),
            stream,
            rare: (!rare.is_empty()).then(|| Box::new(rare)),
        }))
    }
}

/// What a hibernating connection keeps: the state that outlives its idle
/// period, in its most compact form (its session a [`DormantSession`], no
/// second copy of the client identifier, what most clients do not have in
/// one box). The rest of a [`Connection`] (buffers, queues, bookkeeping of
/// flows in progress) is empty whenever it may hibernate.
struct Dormant {
    /// Counts the connection, and holds the broker's shared state.
    slot: Slot,
    session: DormantSession,
    /// The peer's address, unless it is an IPv6 one (in `rare`).
    addr: Option<std::net::SocketAddrV4>,
    conn_id: u64,
    control: ControlReceiver,
    // No field for the client identifier (`Client::id`): the session holds it
    // (`DormantSession::shared_client_id`), or else `rare`. Its 16 bytes made
    // the thread's entry for a hibernating connection 232 bytes, which the
    // broker's allocator (jemalloc) serves from its 256-byte class, the one
    // of the runtime's freed I/O registrations; 216 bytes are served as 224.
    will_delay: u32,
    expiry: u32,
    persistent: bool,
    bridge: bool,
    /// Hibernations so far, this one included (see [`idle_before_hibernating`]).
    naps: u8,
    stream: std::net::TcpStream,
    /// What most hibernating connections do not have.
    rare: Option<Box<Rare>>,
}

/// What a connection keeps by packet identifier about the QoS 1/2 messages
/// it sent, while their flows run.
#[derive(Debug, Default)]
struct Sent {
    /// Their keys in the store (a persistent session).
    seq: HashMap<PacketId, u64>,
    /// The QoS 1 ones a shared group sent ([`Delivery::shared`](crate::state::Delivery)).
    shared: HashSet<PacketId>,
}

/// The parts of a hibernating connection most do not have.
struct Rare {
    username: Option<String>,
    will: Option<Box<HeldWill>>,
    auth: Option<Box<auth::AuthState>>,
    // Boxed on purpose, as in `Connection`.
    #[allow(clippy::box_collection)]
    sent: Option<Box<Sent>>,
    certificate: Option<Box<bytes::Bytes>>,
    /// The peer's address when it is an IPv6 one.
    addr6: Option<std::net::SocketAddr>,
    /// The client identifier when the session holds another one.
    id: Option<Arc<str>>,
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.username.is_none()
            && self.will.is_none()
            && self.auth.is_none()
            && self.sent.is_none()
            && self.certificate.is_none()
            && self.addr6.is_none()
            && self.id.is_none()
    }
}

/// A connection taken apart, but for its session and socket.
struct Parts {
    listener: Arc<ListenerShared>,
    peer: Peer,
    conn_id: u64,
    control: ControlReceiver,
    client: Client,
    auth: Option<Box<auth::AuthState>>,
    // Boxed on purpose, as in `Connection`.
    #[allow(clippy::box_collection)]
    sent: Option<Box<Sent>>,
    /// Hibernations so far (see [`idle_before_hibernating`]).
    naps: u8,
}

impl Parts {
    /// The accepted connection again, its socket back in the runtime (on a
    /// runtime thread); a socket that cannot go back fails its first read.
    fn connection(self, session: Session, stream: std::net::TcpStream) -> Box<Connection<TcpIo>> {
        let Self {
            listener,
            peer,
            conn_id,
            control,
            client,
            auth,
            sent,
            naps,
        } = self;
        // Bytes (or the end) waiting in the socket: tokio learns of them
        // only at its next turn.
        let input_pending = !matches!(
            stream.peek(&mut [0u8; 1]),
            Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock
        );
        let io = match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => TcpIo::Live(stream),
            Err(error) => {
                tracing::debug!(%error, "a hibernated connection could not wake");
                TcpIo::Broken
            }
        };
        let version = session.protocol_version();
        // Only an accepted connection hibernates: it was not over the limit.
        let mut conn = Connection::new(listener, session, io, peer, false, conn_id, control);
        conn.transport.set_version(version);
        conn.client = Some(client);
        conn.auth = auth;
        conn.sent = sent;
        conn.session_accepted = true;
        conn.naps = naps;
        conn.input_pending = if input_pending { WOKEN_INPUT_TURNS } else { 0 };
        conn
    }
}

impl Dormant {
    /// The connection again (on a runtime thread), and its slot.
    fn wake(self) -> (Box<Connection<TcpIo>>, Slot) {
        let Self {
            slot,
            session,
            addr,
            conn_id,
            control,
            will_delay,
            expiry,
            persistent,
            bridge,
            naps,
            stream,
            rare,
        } = self;
        let Rare {
            username,
            will,
            auth,
            sent,
            certificate,
            addr6,
            id,
        } = rare.map_or(
            Rare {
                username: None,
                will: None,
                auth: None,
                sent: None,
                certificate: None,
                addr6: None,
                id: None,
            },
            |rare| *rare,
        );
        // Put in the session or in `rare` when it hibernated.
        let id = id
            .or_else(|| session.shared_client_id().cloned())
            .unwrap_or_else(|| Arc::from(""));
        let addr = addr.map_or_else(
            || addr6.unwrap_or(std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
            std::net::SocketAddr::V4,
        );
        let session = session.wake();
        let info = ClientInfo {
            client_id: id.to_string(),
            username,
            protocol_version: session.protocol_version(),
        };
        let parts = Parts {
            listener: slot.listener().clone(),
            peer: Peer { addr, certificate },
            conn_id,
            control,
            client: Client {
                id,
                info,
                will,
                will_delay,
                expiry,
                persistent,
                bridge,
            },
            auth,
            sent,
            naps,
        };
        (parts.connection(session, stream), slot)
    }
}

#[cfg(feature = "tls")]
impl<S: Stream> Stream for tokio_rustls::server::TlsStream<S> {
    fn abort(&mut self) {
        self.get_mut().0.abort();
    }
}

#[cfg(feature = "websocket")]
impl<S: Stream> Stream for crate::ws::WsIo<S> {
    fn abort(&mut self) {
        self.get_mut().abort();
    }
}

impl Stream for tokio::net::TcpStream {
    fn abort(&mut self) {
        // Fails only on a socket already gone: it closes as it can.
        let _ = self.set_zero_linger();
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for Custom<S> {}

/// A hibernating connection (see [`crate::hibernate`]): its state, its
/// socket out of the runtime.
pub(crate) struct Asleep(Dormant);

#[cfg(unix)]
impl Asleep {
    /// The socket, for the poller.
    pub(crate) fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.0.stream.as_raw_fd()
    }

    /// When the connection must run again at the latest (keep-alive).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.0.session.poll_timeout()
    }

    /// Its inbox, where a message for the connection wakes the waker set
    /// with `ControlInbox::set_waker`.
    pub(crate) fn inbox(&self) -> Arc<crate::state::ControlInbox> {
        self.0.control.inbox()
    }

    /// The broker's shared state.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        self.0.slot.shared()
    }

    /// Runs the connection again (on a runtime thread).
    pub(crate) async fn resume(self) {
        let (conn, slot) = self.0.wake();
        conn.serve(slot).await;
    }
}

/// The payload size of a PUBLISH read from the network (0 for anything else).
fn payload_len(frame: &Option<Result<Packet, CodecError>>) -> usize {
    match frame {
        Some(Ok(Packet::Publish(publish))) => publish.payload.len(),
        _ => 0,
    }
}

/// The first frame of a batch read from the network.
struct Batch {
    /// When it was read: the time of the batch (until a message of it is
    /// routed).
    now: Instant,
    /// Its payload bytes.
    bytes: usize,
    /// Whether it is a QoS 1/2 PUBLISH.
    acknowledged: bool,
}

/// A QoS 1/2 PUBLISH: the messages whose publishers are paced by the count of
/// queued messages.
fn is_acknowledged_publish(frame: &Option<Result<Packet, CodecError>>) -> bool {
    matches!(frame, Some(Ok(Packet::Publish(publish))) if publish.qos != fulmar_codec::QoS::AtMostOnce)
}

/// Why [`Connection::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    /// The connection is over.
    Closed,
    /// The connection is over, and the broker gave up on a write that the
    /// peer did not take (see [`GaveUp`]): it ends with a reset.
    Aborted,
    /// It has been idle long enough to hibernate.
    Hibernate,
}

/// Runs one connection to its end. The connection state is built here, on
/// the heap; the returned future holds little more than a pointer to it and
/// what it waits on. The connect timeout counts from `opened` (when the
/// connection was accepted, before a TLS or WebSocket handshake).
pub(crate) fn run<S: Stream>(
    shared: Arc<Shared>,
    stream: S,
    peer: Peer,
    over_limit: bool,
    slot: Slot,
    opened: Instant,
) -> impl Future<Output = ()> + Send {
    let control = ControlReceiver::new();
    let conn_id = shared.lock().next_id();
    let session = Session::server(slot.session_config().clone(), opened);
    let listener = slot.listener().clone();
    let conn = Connection::new(
        listener, session, stream, peer, over_limit, conn_id, control,
    );
    tracing::debug!(peer = %conn.peer.addr, conn_id = conn.conn_id, "connection opened");
    conn.serve(slot)
}

/// The client of an accepted connection.
struct Client {
    id: Arc<str>,
    info: ClientInfo,
    will: Option<Box<HeldWill>>,
    will_delay: u32,
    /// Session Expiry Interval in seconds (`u32::MAX`: never).
    expiry: u32,
    /// The session is kept in the store.
    persistent: bool,
    /// The client said it is a bridge ([`Connect::bridge`](fulmar_codec::Connect::bridge)):
    /// its subscriptions are No Local and Retain As Published.
    bridge: bool,
}

impl Client {
    /// Its subscriptions' key.
    fn key(&self) -> Subscriber {
        Subscriber::Client(self.id.clone())
    }

    /// Its will as the record of its session keeps it while it is
    /// connected: due its Will Delay Interval after the connection ends.
    fn stored_will(&self) -> Option<StoredWill> {
        let will = self.will.as_deref()?;
        Some(StoredWill {
            publish: will.publish.clone(),
            due: WillDue::AfterDisconnect(self.will_delay),
            username: self.info.username.clone(),
            protocol_version: self.info.protocol_version,
        })
    }

    /// Writes the record of its session (held by its connection) to the
    /// store, when it is persistent: its subscriptions and its will, which
    /// a crash must not lose (MQTT-3.1.2-8). Returns whether anything was
    /// written.
    fn persist_session(&self, state: &State) -> bool {
        self.persistent && state.persist_connected_session(&self.id, self.stored_will())
    }
}

pub(crate) struct Connection<S> {
    shared: Arc<Shared>,
    session: Session,
    transport: Transport<S>,
    peer: Peer,
    over_limit: bool,
    conn_id: u64,
    /// Deliveries and control messages for this connection.
    control: ControlReceiver,
    client: Option<Client>,
    /// Who ended the connection, and the reason code (from `Event::Disconnected`).
    closed: Option<(Initiator, ReasonCode)>,
    /// Refused inbound messages whose acknowledgements are rewritten (none
    /// most of the time: created on the first refusal, dropped when empty).
    refusals: Option<Box<Refusals>>,
    /// Connections waiting for this one to hand its session over, each with
    /// the time by which this one stops writing ([`HANDOVER_WRITE_GRACE`]
    /// after the take-over was seen).
    handovers: Vec<(oneshot::Sender<()>, tokio::time::Instant)>,
    shutting_down: bool,
    /// The last read batch was full: yield before reading on (fairness).
    yield_next: bool,
    /// The client identifier of the CONNECT, as sent (for a refusal event).
    connect_id: String,
    /// [`BrokerEvent::Refused`] was emitted for this connection.
    refusal_reported: bool,
    /// The CONNACK accepted the client: it counts as connected.
    session_accepted: bool,
    /// An enhanced authentication exchange waiting for the client's AUTH.
    pending_auth: Option<Box<auth::PendingAuth>>,
    /// Enhanced authentication only: created by the first use.
    auth: Option<Box<auth::AuthState>>,
    /// Store keys of the outbound messages of a persistent session, by packet
    /// identifier (created by the first one).
    // Boxed on purpose: 8 bytes instead of 48 for the connections without one.
    #[allow(clippy::box_collection)]
    sent: Option<Box<Sent>>,
    /// The journal's sequence number, when changes were journaled that the
    /// next acknowledgements depend on: they wait for it, not for what other
    /// connections journaled since (0: none).
    durable_at: u64,
    /// A message waited [`Limits::backpressure_timeout`](crate::Limits), or
    /// a take-over or the shutdown ended its wait, and the connection is
    /// being closed: the messages read after it wait no more.
    backpressure_expired: bool,
    /// When the connection hibernates if nothing happens before.
    hibernate_at: Option<tokio::time::Instant>,
    /// The last wait ended on a timer with nothing to read: the session's
    /// spare buffers were released then, and the next wait arms no timer for
    /// that (see [`RELEASE_AFTER`]).
    woken_quiet: bool,
    /// How often it hibernated: each time, it waits longer before the next.
    naps: u8,
    /// Woken from hibernation with input pending in the socket, which the
    /// runtime does not know of yet: the turns of the runtime left to read
    /// it before a past deadline counts (see [`WOKEN_INPUT_TURNS`]).
    input_pending: u8,
    /// The shared encoded headers of messages delivered to this connection
    /// and not sent yet, by the address of their payload, in delivery order
    /// (at most [`MAX_FRAMES`]).
    frames: VecDeque<(usize, Arc<Frames>)>,
    /// Held back by pacing, by the messages routed in this round: the
    /// transport is paused before the connection waits again.
    paced: Option<Box<inbound::Paced>>,
    /// [`BrokerHandle::reauthorize`](crate::BrokerHandle::reauthorize)
    /// rounds waiting for this connection to check its subscriptions again.
    reauthorize: Vec<mpsc::Sender<()>>,
    /// Retained messages a SUBSCRIBE matched that did not fit the session
    /// queue then: their topics, each with its subscription's options, in
    /// order. They are looked up again and handed to the session as its
    /// queue drains (the run loop), at most
    /// [`Limits::max_retained_messages`](crate::Limits) at once (the rest
    /// is dropped and counted). `None` when empty.
    // Boxed on purpose: 8 bytes for the connections without one.
    #[allow(clippy::box_collection)]
    retained_later: Option<Box<VecDeque<(TopicName, SubOptions)>>>,
}

/// Refused inbound QoS 1/2 messages of a connection.
#[derive(Default)]
struct Refusals {
    /// Inbound QoS 1/2 messages refused: their PUBACK/PUBREC carries the
    /// refusal's reason code (0x87 when the authorizer denied it; MQTT 5.0).
    deny_ack: HashMap<PacketId, Refusal>,
    /// PUBCOMPs answering the PUBREL we fed the session for a denied QoS 2
    /// message (so it forgets the identifier); not sent.
    drop_pubcomp: HashSet<PacketId>,
}

/// How long a connection that hibernated `naps` times before waits idle
/// before it hibernates again: 1/256 of `hibernate_after` the first time
/// (but not under [`MIN_IDLE`]), twice as long after each wake-up,
/// `hibernate_after` from the ninth time on. A client that connects and
/// stays quiet (most of a fleet of devices) gives its memory back within
/// milliseconds, so that even a storm of connections never has many awake
/// at once; one that keeps waking its connection soon stops paying for it
/// (a hibernation and a wake-up cost about 10 µs of CPU; it pays for at
/// most eight more than with a fixed `hibernate_after`).
fn idle_before_hibernating(hibernate_after: Duration, naps: u8) -> Duration {
    const HALVINGS: u8 = 8;
    let shortened = hibernate_after / (1u32 << HALVINGS.saturating_sub(naps));
    shortened.max(hibernate_after.min(MIN_IDLE))
}

/// How many turns of the runtime a connection woken with input in its
/// socket gives that input before a past keep-alive deadline counts (on a
/// multi-threaded runtime, one turn may pass before the I/O driver runs).
const WOKEN_INPUT_TURNS: u8 = 8;

/// The shortest idle period before a hibernation (unless `hibernate_after`
/// is shorter still).
const MIN_IDLE: Duration = Duration::from_millis(10);

/// How long a connection waits with nothing to do before it gives back its
/// spare buffers (its session's, [`Session::release_spare_capacity`], and
/// its write buffer): a subscriber that keeps up with a stream of messages
/// is idle between most of them, and releasing the buffers each time cost
/// the broker about a tenth of its work in a fan-out (growing them again
/// for the next messages).
const RELEASE_AFTER: Duration = Duration::from_millis(10);

/// At most this many deliveries waiting to be sent keep their shared
/// encoded headers (the rest are encoded by the connection).
const MAX_FRAMES: usize = 64;

impl<S: Stream> Connection<S> {
    /// A connection over `stream` with nothing going on yet, from
    /// `listener` (which its transport holds: see [`Counted`]).
    fn new(
        listener: Arc<ListenerShared>,
        session: Session,
        stream: S,
        peer: Peer,
        over_limit: bool,
        conn_id: u64,
        control: ControlReceiver,
    ) -> Box<Self> {
        let shared = listener.shared().clone();
        let max_packet_size = shared.limits.max_packet_size.get();
        let stream = Counted {
            inner: stream,
            listener,
        };
        Box::new(Self {
            session,
            transport: Transport::new(stream, max_packet_size),
            peer,
            over_limit,
            conn_id,
            control,
            client: None,
            closed: None,
            refusals: None,
            handovers: Vec::new(),
            shutting_down: false,
            yield_next: false,
            connect_id: String::new(),
            refusal_reported: false,
            session_accepted: false,
            pending_auth: None,
            auth: None,
            sent: None,
            durable_at: 0,
            backpressure_expired: false,
            hibernate_at: None,
            woken_quiet: false,
            naps: 0,
            input_pending: 0,
            frames: VecDeque::new(),
            paced: None,
            reauthorize: Vec::new(),
            retained_later: None,
            shared,
        })
    }

    /// Runs the connection to its end (or its hibernation), then closes it.
    async fn serve(mut self: Box<Self>, mut slot: Slot) {
        // Abandoned: the shutdown's grace ran out; aborted: a write was given up.
        let (abandoned, aborted) = loop {
            // The one watcher of the shutdown: it tells the connection (which
            // closes with a DISCONNECT), then gives it a grace period.
            let shutdown = self.shared.shutdown.clone();
            let inbox = self.control.inbox();
            let grace = async {
                shutdown.cancelled().await;
                let _ = inbox.send(Control::Shutdown);
                // Boxed: the timer takes no room in the task while the broker runs.
                Box::pin(tokio::time::sleep(SHUTDOWN_GRACE)).await;
            };
            let flow = tokio::select! {
                flow = self.run() => flow,
                // A peer that stopped reading must not hold up the shutdown.
                () = grace => break (true, true),
            };
            match flow {
                Flow::Closed => break (false, false),
                Flow::Aborted => break (false, true),
                Flow::Hibernate => {}
            }
            match self.hibernate(slot) {
                Ok(()) => return,
                // No hibernation, or the socket could not leave the
                // runtime (then the next read fails): carry on.
                Err((conn, back)) => {
                    self = conn;
                    slot = back;
                }
            }
        };
        if abandoned {
            tracing::debug!(peer = %self.peer.addr, "connection abandoned at shutdown");
        }
        self.finish();
        if aborted {
            // No close to write or to wait for: the peer takes nothing.
            self.transport.io_mut().abort();
            drop(slot);
            tracing::debug!(peer = %self.peer.addr, conn_id = self.conn_id, closed = ?self.closed, "connection reset");
            return;
        }
        // A TLS or WebSocket close writes too: a stalled peer must not hold it up.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.transport.shutdown()).await;
        drop(slot);
        if !abandoned {
            // A lingering close: what the peer still sends is read and
            // dropped until it closes too, so that the end of the stream
            // reaches it instead of a reset. Not beyond the broker's shutdown.
            let shared = self.shared.clone();
            let linger = tokio::time::timeout(LINGER, self.transport.drain_input(LINGER_BYTES));
            tokio::select! {
                _ = linger => {}
                () = shared.shutdown.cancelled() => {}
            }
        }
        tracing::debug!(peer = %self.peer.addr, conn_id = self.conn_id, closed = ?self.closed, "connection closed");
    }

    fn v5(&self) -> bool {
        self.session.protocol_version() == ProtocolVersion::V5
    }

    /// Hands the connection to the broker's hibernation thread; gives it
    /// back when it cannot.
    #[cfg(unix)]
    fn hibernate(self: Box<Self>, slot: Slot) -> Result<(), (Box<Self>, Slot)> {
        let Some(hibernator) = self.shared.hibernator.as_ref().map(Arc::clone) else {
            return Err((self, slot));
        };
        let asleep = S::into_asleep(self, slot)?;
        tracing::trace!(conn_id = asleep.0.conn_id, "connection hibernates");
        hibernator.park(asleep);
        Ok(())
    }

    #[cfg(not(unix))]
    fn hibernate(self: Box<Self>, slot: Slot) -> Result<(), (Box<Self>, Slot)> {
        Err((self, slot))
    }

    /// Whether the connection may hibernate when it stays idle: an accepted
    /// plain-TCP client with nothing in flight, queued, buffered or pending.
    fn may_hibernate(&self) -> bool {
        S::HIBERNATES
            && self.session_accepted
            && self.client.is_some()
            && self.session.is_connected()
            && self.session.inflight_len() == 0
            && self.session.pending_len() == 0
            && self.pending_auth.is_none()
            && self.refusals.is_none()
            && self.handovers.is_empty()
            && !self.shutting_down
            && self.durable_at == 0
            && !self.yield_next
            // `frames` is not checked: with nothing in flight or pending, what
            // it still holds belongs to messages the session dropped (too
            // large, expired), and hibernating drops it.
            && self.reauthorize.is_empty()
            && self.retained_later.is_none()
            && self.transport.is_idle()
            && !self.shared.shutdown.is_cancelled()
    }

    /// Frees the buffers a busy connection keeps between packets: its
    /// session's and the write buffer.
    fn release_spare_capacity(&mut self) {
        self.session.release_spare_capacity();
        self.transport.release_spare_capacity();
    }

    /// Handles the first frame of a batch; `None` when the connection is
    /// closed.
    fn start_batch(&mut self, frame: Option<Result<Packet, CodecError>>) -> Option<Batch> {
        // What was pending at the wake-up has been read.
        self.input_pending = 0;
        // One clock reading for the whole batch.
        let now = Instant::now();
        let first = Batch {
            now,
            bytes: payload_len(&frame),
            acknowledged: is_acknowledged_publish(&frame),
        };
        self.on_frame(frame, now).then_some(first)
    }

    async fn run(&mut self) -> Flow {
        loop {
            // Boxed: the answering future is large and only lives while answering.
            if let Err(error) = Box::pin(self.drive()).await {
                self.session.connection_lost(Instant::now());
                self.record_close_events();
                return if GaveUp::is(&error) {
                    Flow::Aborted
                } else {
                    Flow::Closed
                };
            }
            if self.session.is_closed() {
                return Flow::Closed;
            }
            // Asked for while handling a control message, or during a
            // back-pressure wait in `drive`: before waiting again.
            if !self.reauthorize.is_empty() {
                let rounds = std::mem::take(&mut self.reauthorize);
                // Boxed, with the rounds to answer inside: rare, and its
                // future would make every task larger.
                Box::pin(self.recheck_authorization(rounds)).await;
                continue;
            }
            if std::mem::take(&mut self.yield_next) {
                tokio::task::yield_now().await;
            }
            // Everything is answered. A connection that stays quiet for
            // `RELEASE_AFTER` keeps no spare buffers: they are released when
            // the timer ends the wait (below). Not before every wait: a busy
            // subscriber that catches up between two messages would give its
            // session's buffers back and grow them again each time.
            let woken_quiet = std::mem::take(&mut self.woken_quiet);
            let release_at = (!woken_quiet).then(|| later_by(RELEASE_AFTER));
            // One timer: the session's next deadline, the end of an
            // enhanced authentication, the release of spare buffers or the
            // hibernation, whichever comes first.
            let deadline = self.session.poll_timeout().map(tokio::time::Instant::from);
            // Kept in the connection, not in the future across the wait: the
            // task of every connection is that much smaller. A quiet wake-up
            // (only the release) leaves the hibernation where it was.
            if !woken_quiet || self.hibernate_at.is_none() {
                self.hibernate_at = match self.shared.limits.hibernate_after {
                    Some(after) if self.may_hibernate() => {
                        Some(later_by(idle_before_hibernating(after, self.naps)))
                    }
                    _ => None,
                };
            }
            let wake = [
                deadline,
                self.auth_deadline(),
                release_at,
                self.hibernate_at,
            ]
            .into_iter()
            .flatten()
            .min();
            let room = self.has_room();
            // Retained messages wait for room in the session queue: handed
            // over when there is some (the queue drains as `drive` writes
            // QoS 0 messages and as acknowledgements end QoS 1/2 flows).
            let feed_retained =
                room && self.retained_later.is_some() && self.session.is_connected();
            if let Some(paced) = self.paced.take() {
                // Held back: the transport reads nothing until then.
                let limits = &self.shared.limits;
                let limit = crate::config::PaceAbove::new(
                    limits.max_queued_bytes,
                    limits.max_queued_messages,
                );
                self.transport.pause(paced.into_wait(limit));
            }
            // The first frame of a batch (from the select, so that nothing
            // of it lives across the wait).
            let batch = tokio::select! {
                frame = self.transport.next() => {
                    let Some(first) = self.start_batch(frame) else {
                        return Flow::Closed;
                    };
                    Some(first)
                }
                inbound = self.control.recv(room) => {
                    match inbound {
                        Inbound::Delivery(delivery) => {
                            let now = Instant::now();
                            self.deliver_at(delivery, now);
                            for _ in 1..DELIVERY_BATCH {
                                if !self.has_room() {
                                    break;
                                }
                                match self.control.try_recv_delivery() {
                                    Some(delivery) => self.deliver_at(delivery, now),
                                    None => break,
                                }
                            }
                        }
                        Inbound::Control(control) => {
                            if !self.on_control(control) {
                                return Flow::Closed;
                            }
                        }
                    }
                    None
                }
                () = std::future::ready(()), if feed_retained => {
                    self.feed_retained();
                    None
                }
                // No deadline: the future is ready with `None` and the branch is off.
                Some(()) = OptionFuture::from(wake.map(tokio::time::sleep_until)) => {
                    let mut read_first = None;
                    let now = tokio::time::Instant::now();
                    let auth_expired = self.auth_deadline().is_some_and(|at| at <= now);
                    if auth_expired {
                        tracing::debug!(peer = %self.peer.addr, "enhanced authentication timed out");
                        self.pending_auth = None;
                        self.reject(ConnectReasonCode::NotAuthorized);
                    } else if self
                        .session
                        .poll_timeout()
                        .is_none_or(|at| tokio::time::Instant::from(at) > now)
                        && self.hibernate_at.is_some_and(|at| at <= now)
                        // Still idle: the read that was waiting may have
                        // buffered the first bytes of a packet meanwhile
                        // (they would be lost with the transport).
                        && self.may_hibernate()
                    {
                        // Hibernating keeps the session: without spare buffers.
                        self.release_spare_capacity();
                        return Flow::Hibernate;
                    } else if let Some(frame) = self.transport.next().now_or_never() {
                        // A packet may have waited unread while this task
                        // was busy (a slow authorizer, back-pressure, a slow
                        // write): read it before a keep-alive deadline
                        // counts, or a client that sent in time would be
                        // dropped (MQTT-3.1.2-22) and its will published.
                        // The timers come back round if still due.
                        let Some(first) = self.start_batch(frame) else {
                            return Flow::Closed;
                        };
                        read_first = Some(first);
                    } else if self.input_pending > 0 {
                        // Woken from hibernation with input in the socket,
                        // which the runtime learns of when its I/O driver
                        // next runs: a few turns (the yield at the top of
                        // the loop), then the timers come back round and
                        // read what is there. Not a wait for the rest of a
                        // packet, or sending its first byte would hold off
                        // the deadline.
                        self.input_pending -= 1;
                        self.yield_next = true;
                    } else {
                        self.session.handle_timeout(Instant::now());
                        // Nothing came since the last wait began, for at
                        // least as long as the first deadline: what the
                        // connection holds spare is given back.
                        self.release_spare_capacity();
                        self.woken_quiet = true;
                    }
                    read_first
                }
            };
            if let Some(batch) = batch {
                if self.transport.has_buffered_input() {
                    // Boxed: routing in the middle of a batch makes the
                    // future large, and it only lives while reading.
                    if !Box::pin(self.read_batch(batch)).await {
                        return Flow::Closed;
                    }
                } else {
                    self.yield_next = batch.bytes >= BATCH_BYTES;
                }
            }
        }
    }

    /// After the first frame of a batch, feeds what is already buffered to
    /// the session, so that [`drive`](Self::drive) writes the answers at
    /// once; false when the network connection is gone.
    async fn read_batch(&mut self, first: Batch) -> bool {
        let Batch {
            mut now,
            mut bytes,
            mut acknowledged,
        } = first;
        let route_each = self.shared.limits.overload_policy == OverloadPolicy::DropAndCount;
        let mut handled = 1;
        while handled < BATCH && bytes < BATCH_BYTES {
            if acknowledged && route_each {
                // A QoS 1/2 message is routed before reading on, not after
                // the batch: a publisher whose message took its queues over
                // the pacing threshold reads nothing more (a batch from each
                // of many publishers would overshoot the threshold up to the
                // queues' limit, and the surplus would be dropped). Under
                // back-pressure nothing is dropped (the surplus waits for
                // room), and the whole batch, acknowledgements included, is
                // handed to the session first.
                self.route_events().await;
                if self.paced.is_some() {
                    break;
                }
                // Routing may have waited (for an authorizer).
                now = Instant::now();
            }
            if !self.session.is_connected() {
                break;
            }
            let Some(frame) = self.transport.next().now_or_never() else {
                break;
            };
            bytes += payload_len(&frame);
            acknowledged = is_acknowledged_publish(&frame);
            if !matches!(frame, Some(Ok(_))) {
                // The end of the stream (or a read error) read in the same
                // batch as packets before it: what they asked for (a QoS 0
                // message, a retained message or its deletion) is done
                // before the connection is lost, which discards the
                // session's pending events. MQTT-3.3.1-5
                self.route_events().await;
            }
            if !self.on_frame(frame, now) {
                return false;
            }
            handled += 1;
        }
        // A full batch: more is waiting. Let the other tasks (the
        // subscribers' deliveries) run before reading on.
        self.yield_next = handled == BATCH || bytes >= BATCH_BYTES;
        true
    }

    /// When a pending enhanced authentication times out.
    fn auth_deadline(&self) -> Option<tokio::time::Instant> {
        self.pending_auth
            .as_deref()
            .map(auth::PendingAuth::deadline)
    }

    /// Feeds one frame read from the network to the session; false when the
    /// network connection is gone.
    fn on_frame(&mut self, frame: Option<Result<Packet, CodecError>>, now: Instant) -> bool {
        match frame {
            Some(Ok(packet)) => {
                let counters = &self.shared.counters;
                counters.packets_received.fetch_add(1, Ordering::Relaxed);
                if let Packet::Publish(publish) = &packet {
                    counters.publish_received.fetch_add(1, Ordering::Relaxed);
                    counters
                        .publish_bytes_received
                        .fetch_add(publish.payload.len() as u64, Ordering::Relaxed);
                }
                // A violation closes the session; it is reported as an event.
                let _ = self.session.handle_packet(packet, now);
                true
            }
            Some(Err(CodecError::Decode(error))) => {
                self.session.handle_decode_error(&error, now);
                true
            }
            #[cfg(feature = "websocket")]
            Some(Err(CodecError::Io(ref e)))
                if let Some(too_large) = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<crate::ws::MessageTooLarge>()) =>
            {
                // [MQTT-3.2.2-15] v5: a packet over the Maximum Packet Size
                // is answered with DISCONNECT 0x95, over WebSocket too.
                let error = fulmar_codec::DecodeError::PacketTooLarge {
                    size: too_large.size,
                    max: u32::try_from(too_large.max).unwrap_or(u32::MAX),
                };
                self.session.handle_decode_error(&error, now);
                true
            }
            Some(Err(_)) | None => {
                self.session.connection_lost(now);
                self.record_close_events();
                false
            }
        }
    }

    /// A control message: a take-over (5.0: DISCONNECT 0x8E, the session
    /// handed over when the connection ends), the shutdown (0x8B), or a
    /// [`BrokerHandle::reauthorize`](crate::BrokerHandle::reauthorize)
    /// round (done before the connection waits again). False when the
    /// session has closed already and there is no DISCONNECT to send (the
    /// caller just closes).
    fn on_control(&mut self, control: Control) -> bool {
        match control {
            Control::TakeOver(done, drop_will) => {
                let by = tokio::time::Instant::now() + HANDOVER_WRITE_GRACE;
                self.take_over(done, drop_will, by)
            }
            Control::Shutdown if self.shutting_down => true,
            Control::Shutdown => {
                self.shutting_down = true;
                self.disconnect(DisconnectReasonCode::ServerShuttingDown)
            }
            Control::Reauthorize(round) => {
                self.reauthorize.push(round);
                true
            }
            Control::DisconnectIf(which, code) => {
                if self.client.as_ref().is_some_and(|c| (which.0)(&c.info)) {
                    tracing::info!(client = ?self.client.as_ref().map(|c| &c.id), %code, "connection closed by the broker's owner");
                    self.disconnect(code)
                } else {
                    true
                }
            }
        }
    }

    /// Closes the connection for a take-over (5.0: DISCONNECT 0x8E); its
    /// will first dropped with `drop_will`. Hands the session over by `by`.
    fn take_over(
        &mut self,
        done: tokio::sync::oneshot::Sender<()>,
        drop_will: bool,
        by: tokio::time::Instant,
    ) -> bool {
        if drop_will
            && let Some(client) = &mut self.client
            && client.will.take().is_some()
        {
            // As when a will is dropped at close: the bridge forgets it too.
            let bridge = self.shared.lock().bridge.clone();
            if let Some(bridge) = bridge {
                bridge.will_cleared(&client.id);
            }
        }
        self.handovers.push((done, by));
        self.disconnect(DisconnectReasonCode::SessionTakenOver)
    }

    /// Handles the take-overs a write saw queued (5.0: DISCONNECT 0x8E);
    /// writes end by `by` from now on.
    fn accept_take_overs(&mut self, by: tokio::time::Instant) {
        for (done, drop_will) in self.control.take_take_overs() {
            self.take_over(done, drop_will, by);
        }
    }

    /// When writes must end because the session was taken over: the
    /// earliest deadline of the take-overs handled.
    fn handover_deadline(&self) -> Option<tokio::time::Instant> {
        self.handovers.iter().map(|(_, by)| *by).min()
    }

    fn disconnect(&mut self, code: DisconnectReasonCode) -> bool {
        self.session
            .disconnect(code, DisconnectProperties::default(), Instant::now())
            .is_ok()
    }

    /// Answers every event, then writes every packet, until both are drained.
    async fn drive(&mut self) -> Result<(), CodecError> {
        // With a journal that commits before acknowledging, the packets of a
        // round wait here until the store caught up; otherwise they are
        // written as they come. Local: an idle connection keeps no buffer.
        let mut outbox = Vec::new();
        let wait_for_store = self
            .shared
            .journal
            .as_ref()
            .is_some_and(|journal| journal.immediate());
        loop {
            let mut handled = false;
            while let Some(event) = self.session.poll_event() {
                handled = true;
                self.on_event(event).await;
            }
            // Periodic commits: acknowledgements do not wait for the store,
            // but none that depends on a change goes out while commits fail
            // (a crash would lose more than the one interval promised).
            if !wait_for_store && self.durable_at > 0 {
                let durable_at = std::mem::take(&mut self.durable_at);
                if let Some(journal) = self.shared.journal.clone() {
                    if journal.is_failing() {
                        return Err(CodecError::Io(std::io::Error::other(
                            "the store is failing: what depends on it is not acknowledged",
                        )));
                    }
                    // A store behind its publishers (a slow disk): this
                    // connection, which fed it, waits for its changes to be
                    // committed before going on, as under `Immediate`,
                    // rather than the journal growing without bound.
                    if journal.backlogged() && journal.wait(durable_at).await.is_err() {
                        return Err(CodecError::Io(std::io::Error::other(
                            "the store failed: what depends on it is not acknowledged",
                        )));
                    }
                }
            }
            let mut wrote = false;
            // The session knows the version once CONNECT was seen, even an undecodable one.
            let version = self.session.protocol_version();
            self.transport.set_version(version);
            while let Some(packet) = self.session.poll_transmit() {
                if let Packet::ConnAck(ack) = &packet
                    && ack.reason_code.is_error()
                {
                    self.report_refusal(ack.reason_code);
                }
                if let Some(packet) = self.rewrite(packet) {
                    // The client of a mount point gets its topics without
                    // the prefix (`Config::strip_topic_prefix`): such a
                    // topic does not fit the shared encoded headers
                    // (`Frames` compares topics).
                    self.journal_transmit(&packet);
                    if wait_for_store {
                        outbox.push(packet);
                    } else {
                        self.send(&packet).await?;
                        wrote = true;
                    }
                }
            }
            // Acknowledgements go out once what they promise is in the store.
            let durable_at = std::mem::take(&mut self.durable_at);
            if durable_at > 0
                && let Some(journal) = self.shared.journal.clone()
                && journal.immediate()
                && journal.wait(durable_at).await.is_err()
            {
                return Err(CodecError::Io(std::io::Error::other(
                    "the store failed: what depends on it is not acknowledged",
                )));
            }
            for packet in outbox.drain(..) {
                self.send(&packet).await?;
                wrote = true;
            }
            if wrote {
                let write_timeout = self.shared.limits.write_timeout;
                let by = self.handover_deadline();
                let flush = self.transport.flush();
                let (written, seen) =
                    write_unless_taken_over(&self.control, write_timeout, by, flush).await?;
                if let Some(by) = seen {
                    self.accept_take_overs(by);
                }
                if written.is_none() {
                    return Err(handed_over());
                }
            }
            // Sending may have reported something (a message too large for
            // the client, dropped): handled before sleeping.
            if !handled && !self.session.has_event() {
                return Ok(());
            }
        }
    }

    /// Encodes one packet for sending (written out once much is buffered).
    async fn send(&mut self, packet: &Packet) -> Result<(), CodecError> {
        let counters = &self.shared.counters;
        counters.packets_sent.fetch_add(1, Ordering::Relaxed);
        let frames = match packet {
            Packet::Publish(publish) => {
                counters.publish_sent.fetch_add(1, Ordering::Relaxed);
                counters
                    .publish_bytes_sent
                    .fetch_add(publish.payload.len() as u64, Ordering::Relaxed);
                self.take_frames(publish)
            }
            _ => None,
        };
        let write_timeout = self.shared.limits.write_timeout;
        let by = self.handover_deadline();
        let feed = self.transport.feed(packet, frames.as_deref());
        let (written, seen) =
            write_unless_taken_over(&self.control, write_timeout, by, feed).await?;
        if let Some(by) = seen {
            self.accept_take_overs(by);
        }
        let Some(reused) = written else {
            return Err(handed_over());
        };
        if reused {
            let counters = &self.shared.counters;
            counters.publish_reused.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Applies a refusal to an acknowledgement the session produced (the
    /// session acknowledges inbound QoS 1/2 on receipt).
    fn rewrite(&mut self, packet: Packet) -> Option<Packet> {
        let Some(refusals) = self.refusals.as_deref_mut() else {
            return Some(packet);
        };
        let packet = match packet {
            Packet::PubAck(mut ack) if refusals.deny_ack.contains_key(&ack.packet_id) => {
                if let Some(refusal) = refusals.deny_ack.remove(&ack.packet_id) {
                    ack.reason_code = refusal.puback();
                }
                Some(Packet::PubAck(ack))
            }
            Packet::PubRec(mut rec) if refusals.deny_ack.contains_key(&rec.packet_id) => {
                if let Some(refusal) = refusals.deny_ack.remove(&rec.packet_id) {
                    rec.reason_code = refusal.pubrec();
                }
                Some(Packet::PubRec(rec))
            }
            Packet::PubComp(comp) if refusals.drop_pubcomp.remove(&comp.packet_id) => None,
            other => Some(other),
        };
        if refusals.deny_ack.is_empty() && refusals.drop_pubcomp.is_empty() {
            self.refusals = None;
        }
        packet
    }

    /// Journals what an outgoing packet changes in a persistent session:
    /// a PUBREL (our QoS 2 message was received), a PUBCOMP (an inbound QoS 2
    /// identifier is free again).
    fn journal_transmit(&mut self, packet: &Packet) {
        let (Some(journal), Some(client)) = (&self.shared.journal, &self.client) else {
            return;
        };
        match packet {
            Packet::PubRel(rel) => {
                if let Some(&seq) = self.sent.as_ref().and_then(|m| m.seq.get(&rel.packet_id)) {
                    journal.push(StoreOp::MarkSent {
                        client: client.id.clone(),
                        seq,
                        packet_id: rel.packet_id,
                        released: true,
                    });
                    self.journaled();
                }
            }
            Packet::PubComp(comp) if client.persistent => {
                journal.push(StoreOp::RemoveIncoming {
                    client: client.id.clone(),
                    packet_id: comp.packet_id,
                });
                self.journaled();
            }
            _ => {}
        }
    }

    /// The QoS 1 messages in `stored` that a shared group sent and the
    /// client has not acknowledged: not sent yet, or sent without PUBACK.
    /// (QoS 2 ones are not tagged: they never go to another member,
    /// v5:MQTT-4.8.2-5.)
    fn unacknowledged_shared(&self, stored: &fulmar_session::SessionState) -> Vec<Publish> {
        let Some(shared) = self
            .sent
            .as_ref()
            .map(|s| &s.shared)
            .filter(|s| !s.is_empty())
        else {
            return Vec::new();
        };
        let tagged = |p: &Publish| p.packet_id.is_some_and(|id| shared.contains(&id));
        stored
            .outgoing()
            .iter()
            .filter_map(|o| match o {
                fulmar_session::Outgoing::Publish(p) if tagged(p) => Some((**p).clone()),
                _ => None,
            })
            .chain(stored.pending().iter().filter(|p| tagged(p)).cloned())
            .collect()
    }

    /// The flow of an outbound message ended (completed or dropped): its
    /// store record goes.
    fn forget_outbound(&mut self, packet_id: PacketId) {
        let Some(sent) = self.sent.as_mut() else {
            return;
        };
        sent.shared.remove(&packet_id);
        let seq = sent.seq.remove(&packet_id);
        if sent.seq.is_empty() && sent.shared.is_empty() {
            self.sent = None;
        }
        let Some(seq) = seq else {
            return;
        };
        if let (Some(journal), Some(client)) = (&self.shared.journal, &self.client) {
            journal.push(StoreOp::DeleteMessage {
                client: client.id.clone(),
                seq,
            });
        }
    }

    fn record_close_events(&mut self) {
        while let Some(event) = self.session.poll_event() {
            if let Event::Disconnected {
                initiator,
                reason_code,
                ..
            } = event
                && self.closed.is_none()
            {
                self.closed = Some((initiator, reason_code));
            }
        }
    }

    /// Handles the events of the packets read so far (their answers are
    /// written by [`drive`](Self::drive)).
    async fn route_events(&mut self) {
        while let Some(event) = self.session.poll_event() {
            self.on_event(event).await;
        }
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Connect(connect) => self.on_connect(*connect).await,
            Event::Message(publish) => self.on_message(publish).await,
            Event::Subscribe(mut subscribe) => {
                if let Some(prefix) = self.transport.mount_point() {
                    for (raw, _) in &mut subscribe.filters {
                        *raw = crate::mount::filter(prefix, raw);
                    }
                }
                self.on_subscribe(subscribe).await;
            }
            Event::Unsubscribe(mut unsubscribe) => {
                if let Some(prefix) = self.transport.mount_point() {
                    for raw in &mut unsubscribe.filters {
                        *raw = crate::mount::filter(prefix, raw);
                    }
                }
                self.on_unsubscribe(unsubscribe);
            }
            // The session checked its method and reason code.
            Event::Auth(auth) if self.pending_auth.is_some() => self.on_auth(auth).await,
            Event::Auth(auth) => self.on_reauth(auth).await,
            Event::PublishComplete { packet_id, .. } => self.forget_outbound(packet_id),
            Event::PublishDropped { packet_id, reason } => {
                // Over the client's Maximum Packet Size (MQTT-3.1.2-25), or no
                // room: dropped undelivered (an expired message is not counted).
                if matches!(
                    reason,
                    fulmar_session::DropReason::PacketTooLarge
                        | fulmar_session::DropReason::QueueFull
                ) {
                    self.shared.counters.drop_one();
                }
                if let Some(packet_id) = packet_id {
                    self.forget_outbound(packet_id);
                }
            }
            Event::Disconnected {
                initiator,
                reason_code,
                properties,
            } => {
                if initiator == Initiator::Remote
                    && let (Some(client), Some(expiry)) =
                        (&mut self.client, properties.session_expiry_interval)
                {
                    client.expiry = expiry.min(self.shared.limits.max_session_expiry);
                }
                if self.closed.is_none() {
                    self.closed = Some((initiator, reason_code));
                }
            }
            _ => {}
        }
    }

    /// Whether to take deliveries from the connection queue now. While the
    /// session queue holds [`Limits::max_queued_bytes`](crate::Limits) or
    /// [`Limits::max_queued_messages`](crate::Limits) they wait there, where
    /// they hold back their publishers (pacing; under back-pressure, once
    /// that queue is full too) and where the next ones are dropped when it
    /// is full.
    ///
    /// Also tells the publishers whether the session queue is full (see
    /// `ControlInbox::session_full`).
    fn has_room(&self) -> bool {
        let limits = &self.shared.limits;
        let pending = self.session.pending_len();
        let full = pending >= limits.max_queued_messages;
        self.control.set_session_full(full);
        self.control
            .set_outstanding(pending.saturating_add(self.session.inflight_len()));
        pending == 0 || (self.session.pending_bytes() < limits.max_queued_bytes && !full)
    }

    /// Changes the next acknowledgements depend on were just journaled.
    pub(super) fn journaled(&mut self) {
        if let Some(journal) = &self.shared.journal {
            self.durable_at = self.durable_at.max(journal.issued());
        }
    }

    /// Hands the session the next retained messages of
    /// [`retained_later`](Self::retained_later), as many as its queue has
    /// room for (at least one, at most [`DELIVERY_BATCH`]): each as it is
    /// in the store now (skipped if deleted or expired meanwhile), prepared
    /// as when the SUBSCRIBE was handled.
    fn feed_retained(&mut self) {
        let Some(later) = self.retained_later.as_deref_mut() else {
            return;
        };
        let limits = &self.shared.limits;
        let messages = limits
            .max_queued_messages
            .saturating_sub(self.session.pending_len())
            .clamp(1, DELIVERY_BATCH);
        let mut bytes = limits
            .max_queued_bytes
            .saturating_sub(self.session.pending_bytes());
        let now = Instant::now();
        let mut batch = Vec::with_capacity(messages.min(later.len()));
        let info = self.client.as_ref().map(|c| &c.info);
        let persistent = self.client.as_ref().filter(|c| c.persistent).map(|c| &c.id);
        {
            let mut state = self.shared.lock();
            while batch.len() < messages
                && (batch.is_empty() || bytes > 0)
                && let Some((topic, options)) = later.pop_front()
            {
                // Readable when it was subscribed to; the rules may have changed.
                if info.is_some_and(|info| !self.shared.may_read(info, topic.as_str())) {
                    continue;
                }
                if let Some(publish) = state.retained_now(&topic, options, now) {
                    bytes = bytes.saturating_sub(publish.memory_size());
                    // A persistent session's copy is in the store, as a routed one.
                    let seq = persistent.and_then(|id| state.store_message(id, &publish));
                    batch.push((publish, seq));
                }
            }
        }
        if later.is_empty() {
            self.retained_later = None;
        }
        for (publish, seq) in batch {
            self.publish_out_at(publish, seq, false, now);
        }
    }

    /// Boxed as it came through the inbox: changed where it lies, its
    /// message moved out once, into the session (a `Publish` is a large
    /// value, and every move is a copy).
    pub(super) fn deliver_at(&mut self, mut delivery: Box<Delivery>, now: Instant) {
        self.clear_retain_for_v3(&mut delivery.publish);
        // v5:MQTT-3.3.2-5 / v5:MQTT-3.3.2-6: the time it waited in the
        // connection's queue counts; expired there, it is not sent (nor
        // counted as dropped, as in the session's own queue).
        if !crate::state::age_in_place(&mut delivery.publish, delivery.since, now) {
            if let (Some(journal), Some(client), Some(seq)) =
                (&self.shared.journal, &self.client, delivery.seq)
            {
                journal.push(StoreOp::DeleteMessage {
                    client: client.id.clone(),
                    seq,
                });
            }
            return;
        }
        if let Some(frames) = delivery.frames.take() {
            if self.frames.len() >= MAX_FRAMES {
                self.frames.pop_front();
            }
            let payload = delivery.publish.payload.as_ptr() as usize;
            self.frames.push_back((payload, frames));
        }
        let (seq, shared) = (delivery.seq, delivery.shared);
        self.publish_out_at(delivery.publish, seq, shared, now);
    }

    /// v3:MQTT-3.3.1-9: a 3.1.1 client gets RETAIN 0 on a message sent
    /// because it matches a subscription, also through one its session kept
    /// from a 5.0 connection with Retain As Published (a bridge keeps RETAIN,
    /// as mosquitto's bridges expect).
    fn clear_retain_for_v3(&self, publish: &mut Publish) {
        if publish.retain && !self.v5() && self.client.as_ref().is_some_and(|c| !c.bridge) {
            publish.retain = false;
        }
    }

    /// The shared encoded headers of the message `publish` is a copy of, if
    /// it has them. They are matched by payload address: what the session
    /// sends is the delivered copy with its own packet identifier (and
    /// perhaps a Topic Alias or a reduced Message Expiry Interval: [`Frames`]
    /// tells variants apart). Entries delivered before it were dropped by
    /// the session or are sent without them.
    fn take_frames(&mut self, publish: &Publish) -> Option<Arc<Frames>> {
        let payload = publish.payload.as_ptr() as usize;
        if self.frames.front()?.0 != payload {
            // Rare: copies before it were dropped, or it has none.
            let i = self.frames.iter().position(|(at, _)| *at == payload)?;
            self.frames.drain(..i);
        }
        self.frames.pop_front().map(|(_, frames)| frames)
    }

    /// Hands a message to the session. For a persistent session, `seq` is
    /// its key in the store: kept by packet identifier until its flow ends;
    /// a QoS 2 message's identifier is journaled before it is sent.
    /// `shared`: a shared group sent it ([`Delivery::shared`](crate::state::Delivery)).
    fn publish_out_at(&mut self, publish: Publish, seq: Option<u64>, shared: bool, now: Instant) {
        let qos = publish.qos;
        let sent = match self.transport.mount_point() {
            Some(prefix) if crate::mount::is_prefix_only(prefix, publish.topic.as_str()) => Err(()),
            _ => self.session.publish(publish, now).map_err(drop),
        };
        match sent {
            Ok(Some(packet_id)) => {
                // QoS 1 only: a QoS 2 one never goes to another member
                // (v5:MQTT-4.8.2-5).
                if shared && qos == fulmar_codec::QoS::AtLeastOnce {
                    self.sent
                        .get_or_insert_with(Box::default)
                        .shared
                        .insert(packet_id);
                }
                let (Some(seq), Some(journal), Some(client)) =
                    (seq, &self.shared.journal, &self.client)
                else {
                    return;
                };
                self.sent
                    .get_or_insert_with(Box::default)
                    .seq
                    .insert(packet_id, seq);
                // Its identifier goes to the store: after a restart, even a
                // kill -9, it is resent with it and DUP [MQTT-4.4.0-1]. A
                // QoS 2 one's must be there before it is sent (exactly
                // once); a QoS 1 one's need not.
                journal.push(StoreOp::MarkSent {
                    client: client.id.clone(),
                    seq,
                    packet_id,
                    released: false,
                });
                if qos == fulmar_codec::QoS::ExactlyOnce {
                    self.journaled();
                }
            }
            Ok(None) => {}
            Err(_) => {
                self.shared.counters.drop_one();
                if let (Some(seq), Some(journal), Some(client)) =
                    (seq, &self.shared.journal, &self.client)
                {
                    journal.push(StoreOp::DeleteMessage {
                        client: client.id.clone(),
                        seq,
                    });
                }
            }
        }
    }

    fn reject(&mut self, code: ConnectReasonCode) {
        self.reject_with(code, ConnAckProperties::default());
    }

    fn reject_with(&mut self, code: ConnectReasonCode, properties: ConnAckProperties) {
        tracing::debug!(peer = %self.peer.addr, %code, "connection refused");
        self.report_refusal(code);
        let _ = self.session.reject(code, properties, Instant::now());
    }

    /// Emits [`BrokerEvent::Refused`], once per connection: for the
    /// broker's refusals, and for those of the session itself (a CONNECT
    /// that does not decode, or breaks a rule of the protocol), seen as the
    /// refusing CONNACK goes out.
    fn report_refusal(&mut self, code: ConnectReasonCode) {
        if std::mem::replace(&mut self.refusal_reported, true) {
            return;
        }
        let client_id = self.connect_id.clone();
        self.shared.emit(|| BrokerEvent::Refused {
            client_id,
            remote_addr: self.peer.addr,
            reason_code: code,
        });
    }

    async fn on_connect(&mut self, connect: Connect) {
        let v5 = connect.protocol_version == ProtocolVersion::V5;
        self.connect_id = connect.client_id.to_string();
        self.shared
            .counters
            .connects
            .fetch_add(1, Ordering::Relaxed);
        if self.over_limit || self.shared.shutdown.is_cancelled() {
            return self.reject(ConnectReasonCode::ServerUnavailable);
        }
        if let Some(redirect) = &self.shared.limits.server_reference {
            // MQTT 5.0 section 4.11: the client should use another server.
            let mut properties = ConnAckProperties::default();
            if v5 {
                properties.server_reference = Some(MqttString::from(redirect.reference.clone()));
            }
            let code = if !v5 {
                ConnectReasonCode::ServerUnavailable
            } else if redirect.permanent {
                ConnectReasonCode::ServerMoved
            } else {
                ConnectReasonCode::UseAnotherServer
            };
            return self.reject_with(code, properties);
        }
        if v5
            && connect
                .will
                .as_ref()
                .is_some_and(|w| !w.payload_format_is_valid())
        {
            return self.reject(ConnectReasonCode::PayloadFormatInvalid);
        }
        // MQTT-3.1.3-8 (5.0: v5:MQTT-3.1.3-8): the server may refuse a client
        // without an identifier instead of assigning one.
        if connect.client_id.is_empty() && !self.shared.limits.assign_client_ids {
            return self.reject(ConnectReasonCode::ClientIdentifierNotValid);
        }
        let info = ConnectInfo {
            client_id: connect.client_id.to_string(),
            username: connect.username.as_ref().map(ToString::to_string),
            password: connect.password.clone(),
            protocol_version: connect.protocol_version,
            remote_addr: Some(self.peer.addr),
            client_certificate: self.peer.certificate.as_deref().cloned(),
        };
        let method = connect.properties.authentication_method.clone();
        if let Some(method) = method.filter(|_| v5) {
            let authenticator = &self.shared.authenticator;
            let Some(exchange) = authenticator.auth_method(&info, method.as_str()) else {
                return self.reject(ConnectReasonCode::BadAuthenticationMethod);
            };
            let data = connect.properties.authentication_data.clone();
            return self.start_auth(connect, info, exchange, data).await;
        }
        let mut info = info;
        // Bounded like the rest of the connect: a hook that never answers
        // must not hold the connection (and its slot) for ever.
        let timeout = self.shared.limits.connect_timeout;
        let decided = tokio::time::timeout(timeout, self.shared.authenticator.authenticate(&info));
        match decided.await {
            Ok(AuthDecision::Allow) => {}
            Ok(AuthDecision::AllowAs(user)) => info.username = Some(user),
            Ok(AuthDecision::Reject(code)) => return self.reject(code),
            Err(_) => {
                tracing::warn!(
                    client_id = %info.client_id,
                    "the authenticator did not decide within connect_timeout: connection refused"
                );
                return self.reject(ConnectReasonCode::ServerUnavailable);
            }
        }
        self.complete_connect(connect, info, None).await;
    }

    /// Accepts an authenticated CONNECT: assigns the client identifier,
    /// checks the will, claims the session and sends CONNACK (with the final
    /// Authentication Data of an enhanced authentication).
    async fn complete_connect(
        &mut self,
        connect: Connect,
        info: ConnectInfo,
        auth_data: Option<bytes::Bytes>,
    ) {
        let v5 = connect.protocol_version == ProtocolVersion::V5;
        if v5 && connect.properties.authentication_method.is_some() {
            self.auth_state().info = Some(info.clone());
        }
        let mut properties = ConnAckProperties {
            authentication_data: auth_data,
            ..ConnAckProperties::default()
        };
        let id: Arc<str> = if connect.client_id.is_empty() {
            let id = self.assign_client_id();
            if v5 {
                properties.assigned_client_identifier = Some(MqttString::from(id.to_string()));
            }
            id
        } else {
            Arc::from(connect.client_id.as_str())
        };
        let client_info = ClientInfo {
            client_id: id.to_string(),
            username: info.username,
            protocol_version: connect.protocol_version,
        };
        let will_delay = connect
            .will
            .as_ref()
            .and_then(|w| w.properties.will_delay_interval)
            .unwrap_or(0);
        let mut will = connect.will.map(will_publish);
        if let (Some(will), Some(prefix)) = (&mut will, self.transport.mount_point()) {
            // A listener's mount point is put before the will's topic too.
            let Some(topic) = crate::mount::topic(prefix, &will.topic) else {
                return self.reject(ConnectReasonCode::TopicNameInvalid);
            };
            will.topic = topic;
        }
        if let Some(will) = &will {
            // The topic limits a PUBLISH is held to (0x90 there too); under
            // 3.1.1, which has no such return code, the connection is closed.
            if !self.shared.limits.topic_fits(will.topic.as_str()) {
                return self.reject(ConnectReasonCode::TopicNameInvalid);
            }
            // A will whose payload could not be published (as mosquitto's
            // message_size_limit): 0x95 Packet too large; 3.1.1, which has
            // no such return code, closes the connection.
            if self
                .shared
                .limits
                .max_payload_size
                .is_some_and(|most| will.payload.len() > most)
            {
                return self.reject(ConnectReasonCode::PacketTooLarge);
            }
            // The session refuses a 5.0 retained will already (MQTT-3.2.2-13);
            // a 3.1.1 one would be kept as a retained message, which this
            // broker does not keep: closed, as 3.1.1 has no return code for it.
            if will.retain && !self.shared.limits.retain_available {
                return self.reject(ConnectReasonCode::RetainNotSupported);
            }
            let allowed = (connect.bridge || !inbound::is_sys(will.topic.as_str()))
                && self
                    .shared
                    .authorizer
                    .authorize_publish(&client_info, will.topic.as_str())
                    .await;
            if !allowed {
                return self.reject(ConnectReasonCode::NotAuthorized);
            }
        }
        let max_expiry = self.shared.limits.max_session_expiry;
        let expiry = if v5 {
            let asked = connect.properties.session_expiry_interval.unwrap_or(0);
            if asked > max_expiry {
                properties.session_expiry_interval = Some(max_expiry);
            }
            asked.min(max_expiry)
        } else if connect.clean_start {
            0
        } else {
            max_expiry
        };

        let now = Instant::now();
        // A new session is not started beyond the limit (one that exists is
        // resumed or replaced). Connections claiming at once may each pass:
        // the limit is exceeded by at most as many.
        // A will that may outlive its connection (MQTT 5.0: a Will Delay
        // Interval, and a session that outlives the connection) takes its
        // share of `max_delayed_will_bytes` until it is published or
        // dropped; one that does not fit is refused.
        let delayed = will_delay > 0 && expiry > 0;
        let (room, charge) = {
            let state = self.shared.lock();
            let room = state.sessions.len() < self.shared.limits.max_sessions
                || state.sessions.contains_key(&*id);
            let charge = will.as_ref().filter(|_| delayed).map(|w| {
                state
                    .will_budget
                    .try_charge(will_size(w), self.shared.limits.max_delayed_will_bytes)
            });
            (room, charge)
        };
        let charge = match charge {
            Some(None) => {
                tracing::warn!(client = %id, max = self.shared.limits.max_delayed_will_bytes, "delayed will limit reached: CONNECT refused");
                return self.reject(ConnectReasonCode::QuotaExceeded);
            }
            Some(charge) => charge,
            None => None,
        };
        if !room {
            tracing::warn!(client = %id, max = self.shared.limits.max_sessions, "session limit reached: CONNECT refused");
            return self.reject(if v5 {
                ConnectReasonCode::QuotaExceeded
            } else {
                ConnectReasonCode::ServerUnavailable
            });
        }
        // A session that lives on another broker of a cluster comes here
        // first; one that cannot be brought now is not started without its
        // messages: the client is told to come back.
        if !connect.client_id.is_empty()
            && crate::broker::import_session(&self.shared, &id, connect.clean_start, expiry)
                .await
                .is_err()
        {
            return self.reject(ConnectReasonCode::ServerUnavailable);
        }
        let reader = self
            .shared
            .checks_reads
            .then(|| Arc::new(client_info.clone()));
        let (mut stored, mut offline, present) =
            self.claim(&id, connect.clean_start, expiry, reader).await;
        let persistent = self.shared.journal.is_some() && expiry > 0;
        let client = Client {
            id: id.clone(),
            info: client_info,
            will: will.map(|publish| Box::new(HeldWill { publish, charge })),
            will_delay,
            expiry,
            persistent,
            bridge: connect.bridge,
        };
        // The session's record, with the will: under Durability::Immediate
        // the CONNACK waits for it, so a will the client was told of
        // outlives a crash. A client without a will costs no more than
        // before; one whose session is not kept (Clean Session 1, Session
        // Expiry Interval 0) has no record, and its will does not outlive a
        // crash (keeping it would cost two writes per connection).
        if client.persistent && client.persist_session(&self.shared.lock()) {
            self.journaled();
        }
        self.client = Some(client);
        // The subscriptions of a resumed session were allowed to whoever
        // made them; the client may be another user now. The messages of the
        // subscriptions withdrawn go with them, the ones in flight too: they
        // would be resent [MQTT-4.4.0-1] to a client that may not read them.
        // With reads checked, the messages it may not read go too (queued
        // for a session restored from the store, or for another user).
        if present && self.shared.checks_subscriptions {
            let kept = Box::pin(self.recheck_subscriptions()).await;
            if kept.is_some() || self.shared.checks_reads {
                self.drop_unsubscribed(&id, kept.as_deref(), &mut offline, &mut stored);
            }
        }
        match self
            .session
            .accept(properties, present.then_some(stored), now)
        {
            Ok(session_present) => {
                tracing::debug!(peer = %self.peer.addr, session_present, "connection accepted");
                self.session_accepted = true;
                // Only a refusal reports it.
                self.connect_id = String::new();
                if let Some(client) = &self.client
                    && let Some(will) = &client.will
                    && let Some(bridge) = self.shared.lock().bridge.clone()
                {
                    bridge.will_set(&client.id, &will.publish, client.will_delay);
                }
                if let Some(client) = &self.client {
                    crate::broker::report_online(&self.shared, &client.id, false);
                }
                let counters = &self.shared.counters;
                let now_connected = counters.clients_connected.fetch_add(1, Ordering::Relaxed) + 1;
                counters
                    .clients_maximum
                    .fetch_max(now_connected, Ordering::Relaxed);
                if let Some(client) = &self.client {
                    self.shared.emit(|| BrokerEvent::Connected {
                        client_id: client.id.to_string(),
                        username: client.info.username.clone(),
                        protocol_version: client.info.protocol_version,
                        remote_addr: self.peer.addr,
                        session_present,
                    });
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot accept the connection");
                let _ = self.session.reject(
                    ConnectReasonCode::UnspecifiedError,
                    ConnAckProperties::default(),
                    now,
                );
                return;
            }
        }
        // Messages that expired while the client was away are dropped.
        for queued in offline {
            match age(queued.publish, queued.since, now) {
                Some(mut publish) => {
                    self.clear_retain_for_v3(&mut publish);
                    self.publish_out_at(publish, queued.seq, queued.shared, now);
                }
                None => {
                    if let (Some(seq), Some(journal)) = (queued.seq, &self.shared.journal)
                        && let Some(client) = &self.client
                    {
                        journal.push(StoreOp::DeleteMessage {
                            client: client.id.clone(),
                            seq,
                        });
                    }
                }
            }
        }
    }

    /// A client identifier for a client that sent none, unique in this broker.
    fn assign_client_id(&self) -> Arc<str> {
        let state = self.shared.lock();
        let mut n = self.conn_id;
        let prefix = &self.shared.limits.assigned_client_id_prefix;
        loop {
            let id = format!("{prefix}{n:x}");
            if !state.sessions.contains_key(id.as_str()) {
                return Arc::from(id);
            }
            n = n.wrapping_add(0x9e37_79b9);
        }
    }

    /// Makes this connection the holder of session `id` ([MQTT-3.1.4-3]):
    /// a connection holding it is told to disconnect (5.0: 0x8E) and store
    /// it, and this one waits for that; Clean Start discards the session.
    /// Returns the stored state, the messages queued while offline, and
    /// whether a session is resumed.
    async fn claim(
        &mut self,
        id: &Arc<str>,
        clean_start: bool,
        expiry: u32,
        reader: Option<Arc<ClientInfo>>,
    ) -> (SessionState, VecDeque<Queued>, bool) {
        loop {
            let (old, handed_over) = {
                let mut state = self.shared.lock();
                let holder = state
                    .sessions
                    .get(id)
                    .and_then(|e| e.owner.as_ref())
                    .filter(|o| !o.reads(&self.control));
                let (tx, rx) = oneshot::channel();
                match holder {
                    Some(owner) if owner.control.send(Control::TakeOver(tx, false)).is_ok() => {
                        (owner.control.clone(), rx)
                    }
                    // Nobody holds it (or the holder is gone): take it, in the
                    // same critical section so two newcomers cannot both win.
                    _ => {
                        let (stored, offline, present, sent, discarded) =
                            self.register(&mut state, id, clean_start, expiry, reader.clone());
                        drop(state);
                        if let Some(seq) = discarded {
                            // The CONNACK says the kept session is gone (or
                            // no longer kept): once the store says so too.
                            self.durable_at = self.durable_at.max(seq);
                        }
                        self.sent = (!sent.seq.is_empty() || !sent.shared.is_empty())
                            .then(|| Box::new(sent));
                        return (stored, offline, present);
                    }
                }
            };
            if tokio::time::timeout(HANDOVER_TIMEOUT, handed_over)
                .await
                .is_err()
            {
                tracing::warn!(%id, "old connection did not hand its session over in time");
                let old_inbox = old;
                let mut state = self.shared.lock();
                if let Some(entry) = state.sessions.get_mut(id)
                    && entry.owner.as_ref().is_some_and(|o| o.is(&old_inbox))
                {
                    entry.owner = None;
                    if clean_start {
                        // The session it holds ends with this take-over:
                        // its will is due when it ends.
                        old_inbox.session_ended.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    fn register(
        &self,
        state: &mut State,
        id: &Arc<str>,
        clean_start: bool,
        expiry: u32,
        reader: Option<Arc<ClientInfo>>,
    ) -> (SessionState, VecDeque<Queued>, bool, Sent, Option<u64>) {
        let existed = state.sessions.contains_key(id);
        let persistent = state.journal.is_some() && expiry > 0;
        // The journal position of a kept session's deletion: the CONNACK
        // waits for it [MQTT-3.1.2-6], or a crash brings the session back.
        let mut discarded = None;
        if existed && (clean_start || !persistent) {
            // A session that ends, or stops being kept, leaves the store.
            if let Some(journal) = &state.journal
                && state.sessions.get(id).is_some_and(|e| e.persistent)
            {
                discarded = Some(journal.push(StoreOp::DeleteSession(id.clone())));
            }
            if let Some(entry) = state.sessions.get_mut(id) {
                entry.persistent = false;
            }
        }
        if clean_start && existed {
            // The session ends: so does the delay of a will waiting for it.
            let limits = &self.shared.limits;
            state.end_session(
                id,
                limits.max_queued_messages,
                &self.shared.counters,
                Instant::now(),
            );
        }
        if persistent
            && !state.sessions.contains_key(id)
            && let Some(journal) = &state.journal
        {
            // A new session starts from nothing: what the store may still
            // hold under this identifier (records of a session whose own
            // record could not be read at start) is not its.
            journal.push(StoreOp::DeleteSession(id.clone()));
        }
        let entry = state.sessions.entry(id.clone()).or_default();
        entry.persistent = persistent;
        entry.expiry = expiry;
        // A reconnect within the Will Delay Interval cancels the will.
        // Taking what was kept while away cancels the expiry too.
        state.unschedule(id);
        let entry = state.sessions.entry(id.clone()).or_default();
        let cancelled = entry.take_will().is_some();
        entry.owner = Some(Owner {
            control: self.control.inbox(),
        });

        let away = entry.take_away();
        // Deliveries from now on are checked as this client's.
        if let (Some(reads), Some(reader)) = (state.reads.as_mut(), reader) {
            reads.clients.insert(id.clone(), reader);
        }
        let (mut stored, offline, mut inflight, mut shared) =
            (away.stored, away.offline, away.inflight, away.shared);
        if cancelled && let Some(bridge) = &state.bridge {
            bridge.will_cleared(id);
        }
        if let Some(at) = away.stored_at {
            // v5:MQTT-3.3.2-5 / v5:MQTT-3.3.2-6: the time the session was
            // away counts against the Message Expiry Interval of its messages.
            // Expired, not dropped: not counted in `dropped_messages`, as in
            // the offline queue.
            for publish in stored.age(Instant::now().saturating_duration_since(at)) {
                if let Some(pid) = publish.packet_id {
                    shared.remove(&pid);
                }
                if let (Some(journal), Some(seq)) = (
                    &state.journal,
                    publish.packet_id.and_then(|pid| inflight.remove(&pid)),
                ) {
                    journal.push(StoreOp::DeleteMessage {
                        client: id.clone(),
                        seq,
                    });
                }
            }
        }
        (
            stored,
            offline,
            existed && !clean_start,
            Sent {
                seq: inflight,
                shared,
            },
            discarded,
        )
    }

    /// A filter of a SUBSCRIBE or UNSUBSCRIBE. `$share/{group}/{filter}` is
    /// a shared subscription in both versions: 3.1.1 leaves `$` topics to
    /// the server, mosquitto shares them too, and a session must mean the
    /// same by its filters whichever version it resumes with (or is
    /// restored from the store).
    fn parse_filter(raw: &MqttString) -> Option<SubscriptionFilter> {
        raw.parse().ok()
    }

    async fn on_subscribe(&mut self, subscribe: Subscribe) {
        let Some(client) = &self.client else { return };
        let (id, key, info) = (client.id.clone(), client.key(), client.info.clone());
        let bridge = client.bridge;
        let now = Instant::now();
        let limits = &self.shared.limits;
        let sub_id = subscribe.properties.subscription_identifier;
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        // The filters whose retained messages are sent, in order, each with
        // the options of its last subscription in this packet.
        let mut retained_wanted: Vec<(SubscriptionFilter, SubOptions)> = Vec::new();
        let mut retained_at: HashMap<SubscriptionFilter, usize> = HashMap::new();
        for (raw, requested) in &subscribe.filters {
            let Some(filter) = Self::parse_filter(raw) else {
                codes.push(SubAckReasonCode::TopicFilterInvalid);
                continue;
            };
            if !limits.topic_fits(filter.filter().as_str()) {
                codes.push(SubAckReasonCode::TopicFilterInvalid);
                continue;
            }
            if filter.group().is_some() && requested.no_local {
                // MQTT-3.8.3-4: No Local on a shared subscription is a protocol error.
                self.disconnect(DisconnectReasonCode::ProtocolError);
                return;
            }
            let allowed = self
                .shared
                .authorizer
                .authorize_subscribe(&info, raw.as_str())
                .await;
            if !allowed {
                codes.push(SubAckReasonCode::NotAuthorized);
                continue;
            }
            // A bridge (another broker) gets neither its own messages back
            // nor retained ones with their flag cleared, as mosquitto treats
            // one; No Local stays off a shared subscription [MQTT-3.8.3-4].
            let options = SubOptions {
                qos: requested.qos.min(self.session.config().maximum_qos),
                no_local: requested.no_local || (bridge && filter.group().is_none()),
                retain_as_published: requested.retain_as_published || bridge,
                id: sub_id,
            };
            let mut state = self.shared.lock();
            let Some(entry) = state.sessions.get_mut(&id) else {
                codes.push(SubAckReasonCode::UnspecifiedError);
                continue;
            };
            if !entry.filters.contains(&filter)
                && (entry.filters.len() >= limits.max_subscriptions_per_client
                    || entry
                        .filters
                        .bytes()
                        .saturating_add(crate::state::subscription_size(&filter))
                        > limits.max_subscription_bytes_per_client)
            {
                codes.push(SubAckReasonCode::QuotaExceeded);
                continue;
            }
            entry.filters.insert(filter.clone());
            // MQTT-3.8.4-3: a subscription to the same filter replaces the old one.
            let existed = state
                .add_subscription(&filter, key.clone(), options)
                .is_some();
            codes.push(SubAckReasonCode::granted(options.qos));
            self.shared.emit(|| BrokerEvent::Subscribed {
                client_id: id.to_string(),
                filter: raw.to_string(),
                qos: options.qos,
            });
            let send_retained = filter.group().is_none()
                && match requested.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendAtSubscribeIfNew => !existed,
                    RetainHandling::DoNotSend => false,
                };
            // A filter repeated in one SUBSCRIBE gets its retained messages
            // once, with the options of its last subscription: the repeats
            // replace the subscription, and gathering them again would only
            // fill the queue with copies.
            match retained_at.get(&filter) {
                Some(&at) => {
                    if let Some(wanted) = retained_wanted.get_mut(at) {
                        wanted.1 = options;
                    }
                }
                None if send_retained => {
                    retained_at.insert(filter.clone(), retained_wanted.len());
                    retained_wanted.push((filter, options));
                }
                None => {}
            }
        }
        // What fits the session's queue now is gathered; of the rest, only
        // the topics are kept (bounded), looked up again as the queue drains
        // (`feed_retained`). Behind retained messages still waiting, all wait.
        let mut retained = Vec::new();
        if !retained_wanted.is_empty() {
            let room = if self.retained_later.is_some() {
                0
            } else {
                limits
                    .max_queued_messages
                    .saturating_sub(self.session.pending_len())
            };
            let max_later = limits.max_retained_messages;
            let mut later = self.retained_later.take().unwrap_or_default();
            let shared = &self.shared;
            let readable = |topic: &TopicName| shared.may_read(&info, topic.as_str());
            let mut state = shared.lock();
            for (filter, options) in &retained_wanted {
                let options = *options;
                let mut wait = |topic: &TopicName| {
                    if later.len() >= max_later {
                        return false;
                    }
                    later.push_back((topic.clone(), options));
                    true
                };
                let left_out = state.retained_split(
                    filter.filter(),
                    options,
                    now,
                    room,
                    &mut retained,
                    &mut wait,
                    &readable,
                );
                self.shared.counters.drop_many(left_out);
            }
            drop(state);
            if !later.is_empty() {
                self.retained_later = Some(later);
            }
        }
        let persistent = self.client.as_ref().is_some_and(|c| c.persistent);
        // A persistent session's copies of retained messages are in the
        // store, as routed ones: resent after a restart [MQTT-4.4.0-1], their
        // identifiers kept in use.
        let mut seqs = Vec::new();
        if persistent {
            let mut state = self.shared.lock();
            seqs.extend(retained.iter().map(|p| state.store_message(&id, p)));
            if self
                .client
                .as_ref()
                .is_some_and(|c| c.persist_session(&state))
            {
                drop(state);
                self.journaled();
            }
        }
        crate::broker::report_online(&self.shared, &id, true);
        let _ = self
            .session
            .suback(subscribe.packet_id, codes, AckProperties::default());
        let now = Instant::now();
        for (i, publish) in retained.into_iter().enumerate() {
            self.publish_out_at(publish, seqs.get(i).copied().flatten(), false, now);
        }
    }

    fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe) {
        let Some(client) = &self.client else { return };
        let (id, key) = (client.id.clone(), client.key());
        let mut codes = Vec::with_capacity(unsubscribe.filters.len());
        for raw in &unsubscribe.filters {
            let Some(filter) = Self::parse_filter(raw) else {
                codes.push(UnsubAckReasonCode::TopicFilterInvalid);
                continue;
            };
            let mut state = self.shared.lock();
            let removed = state.remove_subscription(&filter, &key).is_some();
            if let Some(entry) = state.sessions.get_mut(&id) {
                entry.filters.remove(&filter);
            }
            if removed {
                self.shared.emit(|| BrokerEvent::Unsubscribed {
                    client_id: id.to_string(),
                    filter: raw.to_string(),
                });
            }
            codes.push(if removed {
                UnsubAckReasonCode::Success
            } else {
                UnsubAckReasonCode::NoSubscriptionExisted
            });
        }
        if self
            .client
            .as_ref()
            .is_some_and(|c| c.persistent && c.persist_session(&self.shared.lock()))
        {
            self.journaled();
        }
        crate::broker::report_online(&self.shared, &id, true);
        // Retained messages still waiting for the filters removed are not
        // sent after the UNSUBACK [MQTT-3.10.4-2] (they were not buffered).
        if self.retained_later.is_some() {
            let filters: Vec<SubscriptionFilter> = {
                let state = self.shared.lock();
                let entry = state.sessions.get(&id);
                entry.map_or_else(Vec::new, |e| e.filters.iter().cloned().collect())
            };
            self.prune_retained_later(&filters);
        }
        let _ = self
            .session
            .unsuback(unsubscribe.packet_id, codes, AckProperties::default());
    }

    /// Keeps, of the retained messages waiting for room, those that one of
    /// `filters` (the session's subscriptions now) still matches.
    fn prune_retained_later(&mut self, filters: &[SubscriptionFilter]) {
        if let Some(later) = self.retained_later.as_deref_mut() {
            later.retain(|(topic, _)| {
                filters
                    .iter()
                    .any(|f| f.group().is_none() && f.filter().matches(topic))
            });
            if later.is_empty() {
                self.retained_later = None;
            }
        }
    }

    /// Asks the authorizer again about every subscription of this session
    /// and removes the ones it denies (after
    /// [`BrokerHandle::reauthorize`](crate::BrokerHandle::reauthorize), and
    /// when a session is resumed: the client may be another user now).
    /// Returns the filters kept when any was removed.
    async fn recheck_subscriptions(&mut self) -> Option<Vec<SubscriptionFilter>> {
        let client = self.client.as_ref()?;
        let (id, info) = (client.id.clone(), client.info.clone());
        let filters: Vec<SubscriptionFilter> = {
            let state = self.shared.lock();
            let entry = state.sessions.get(&id);
            entry.map_or_else(Vec::new, |e| e.filters.iter().cloned().collect())
        };
        let (mut kept, mut denied) = (Vec::new(), Vec::new());
        for filter in filters {
            let raw = filter.to_string();
            if self
                .shared
                .authorizer
                .authorize_subscribe(&info, &raw)
                .await
            {
                kept.push(filter);
            } else {
                denied.push((filter, raw));
            }
        }
        if denied.is_empty() {
            return None;
        }
        let key = Subscriber::Client(id.clone());
        let mut state = self.shared.lock();
        for (filter, raw) in denied {
            tracing::info!(client_id = %id, filter = %raw, "subscription withdrawn: the authorizer denies it now");
            state.remove_subscription(&filter, &key);
            if let Some(entry) = state.sessions.get_mut(&id) {
                entry.filters.remove(&filter);
            }
            self.shared.emit(|| BrokerEvent::Unsubscribed {
                client_id: id.to_string(),
                filter: raw,
            });
        }
        let persisted = self
            .client
            .as_ref()
            .is_some_and(|c| c.persist_session(&state));
        drop(state);
        // Retained messages still waiting go only to the subscriptions kept.
        self.prune_retained_later(&kept);
        if persisted {
            self.journaled();
        }
        crate::broker::report_online(&self.shared, &id, true);
        Some(kept)
    }

    /// Asks the authorizer again about the subscriptions and the will, then
    /// drops `rounds`, which tells each waiting
    /// [`BrokerHandle::reauthorize`](crate::BrokerHandle::reauthorize) that
    /// this connection is done.
    async fn recheck_authorization(&mut self, rounds: Vec<mpsc::Sender<()>>) {
        self.recheck_subscriptions().await;
        self.recheck_will().await;
        drop(rounds);
    }

    /// Asks the authorizer again about the will's topic (after
    /// [`BrokerHandle::reauthorize`](crate::BrokerHandle::reauthorize)): a
    /// will the client may no longer publish is dropped, as its PUBLISH
    /// would be.
    async fn recheck_will(&mut self) {
        let Some(client) = self.client.as_ref() else {
            return;
        };
        let Some(will) = client.will.as_ref() else {
            return;
        };
        let (info, topic) = (client.info.clone(), will.publish.topic.clone());
        let allowed = self
            .shared
            .authorizer
            .authorize_publish(&info, topic.as_str())
            .await;
        if !allowed && let Some(client) = self.client.as_mut() {
            tracing::info!(client_id = %client.id, topic = %topic, "will withdrawn: the authorizer denies its topic now");
            client.will = None;
            let state = self.shared.lock();
            // Nor after a crash: the session's record, without it.
            client.persist_session(&state);
            // The bridge was told of it at CONNACK.
            if let Some(bridge) = &state.bridge {
                bridge.will_cleared(&client.id);
            }
        }
    }

    /// Of the messages of a resumed session (queued while it was away, or
    /// queued and in flight in its session state), drops those that none of
    /// its `filters` matches (the ones
    /// [`recheck_subscriptions`](Self::recheck_subscriptions) kept; `None`:
    /// all were kept) and those its client may not read.
    fn drop_unsubscribed(
        &mut self,
        id: &Arc<str>,
        filters: Option<&[SubscriptionFilter]>,
        offline: &mut VecDeque<Queued>,
        stored: &mut SessionState,
    ) {
        let info = self.client.as_ref().map(|c| c.info.clone());
        let shared = self.shared.clone();
        let matched = |publish: &Publish| {
            let topic = publish.topic.as_str();
            info.as_ref()
                .is_none_or(|info| shared.may_read(info, topic))
                && filters.is_none_or(|filters| {
                    topic
                        .parse::<TopicName>()
                        .is_ok_and(|topic| filters.iter().any(|f| f.filter().matches(&topic)))
                })
        };
        for publish in stored.retain_messages(matched) {
            self.shared.counters.drop_one();
            if let Some(packet_id) = publish.packet_id {
                self.forget_outbound(packet_id);
            }
        }
        let state = self.shared.lock();
        offline.retain(|queued| {
            let kept = matched(&queued.publish);
            if !kept {
                self.shared.counters.drop_one();
                if let (Some(journal), Some(seq)) = (&state.journal, queued.seq) {
                    journal.push(StoreOp::DeleteMessage {
                        client: id.clone(),
                        seq,
                    });
                }
            }
            kept
        });
    }

    /// The connection is over: store or end the session, publish or schedule
    /// the will, and let a connection waiting for the session go on.
    fn finish(&mut self) {
        let now = Instant::now();
        self.session.connection_lost(now);
        self.record_close_events();
        if self.client.is_none() {
            return;
        }
        // Deliveries still in the channel stay with the session (with their
        // store keys: taken while the client is still known).
        for delivery in self.control.close_deliveries() {
            self.deliver_at(delivery, now);
        }
        let Some(client) = self.client.take() else {
            return;
        };
        if self.session_accepted {
            self.shared
                .counters
                .clients_connected
                .fetch_sub(1, Ordering::Relaxed);
            let (initiator, reason_code) = self
                .closed
                .unwrap_or((Initiator::Network, ReasonCode::UnspecifiedError));
            self.shared.emit(|| BrokerEvent::Disconnected {
                client_id: client.id.to_string(),
                initiator,
                reason_code,
            });
        }
        let normal = matches!(
            self.closed,
            Some((
                Initiator::Remote,
                ReasonCode::NormalDisconnection | ReasonCode::Success
            ))
        );
        let had_will = client.will.is_some();
        let will = client.will.filter(|_| !normal).map(|w| *w);
        // Its share of `max_delayed_will_bytes` goes with it to the session
        // while it waits out its delay, and is given back when it goes.
        let (will, charge) = match will {
            Some(HeldWill { publish, charge }) => (Some(publish), charge),
            None => (None, None),
        };
        let shutting_down = self.shared.shutdown.is_cancelled();
        let stored = self.session.session_state(now);
        let limits = &self.shared.limits;
        let (max_queued, counters) = (limits.max_queued_messages, &self.shared.counters);
        let mut notify = false;
        {
            let mut state = self.shared.lock();
            // At shutdown a will goes now, whatever its delay, as the wills
            // waiting out theirs do [MQTT-3.1.2-8], unless the store keeps
            // it with its session (see `BrokerHandle::shutdown`).
            let will_delay = if shutting_down
                && !state.keeps_wills_at_shutdown(client.persistent, client.expiry)
            {
                0
            } else {
                client.will_delay
            };
            let mine = state
                .sessions
                .get(&client.id)
                .and_then(|e| e.owner.as_ref())
                .is_some_and(|o| o.reads(&self.control));
            if !mine {
                // Taken over after a handover timeout (this task was held up
                // elsewhere than in a write): the session lives on elsewhere,
                // without what this connection still held.
                let unsent = stored
                    .outgoing()
                    .iter()
                    .filter(|o| matches!(o, fulmar_session::Outgoing::Publish(_)))
                    .count();
                let lost = unsent + stored.pending().len();
                if lost > 0 {
                    tracing::warn!(client_id = %client.id, lost, "messages of a session taken over late are dropped");
                    counters
                        .dropped
                        .fetch_add(u64::try_from(lost).unwrap_or(u64::MAX), Ordering::Relaxed);
                }
                // Their store records go too (a restart would bring back
                // what the session lost here).
                if let (Some(journal), Some(inflight)) = (&self.shared.journal, self.sent.take()) {
                    for seq in inflight.seq.into_values() {
                        journal.push(StoreOp::DeleteMessage {
                            client: client.id.clone(),
                            seq,
                        });
                    }
                }
                // The will goes now unless it has a delay and the new
                // connection resumed the session within it
                // (v5:MQTT-3.1.3-9). Had that connection started a new
                // session, the will was due when the old one ended
                // [MQTT-3.1.2-8]: it goes now, late.
                let ended = self.control.inbox().session_ended.load(Ordering::Relaxed);
                if let Some(will) = will.filter(|_| will_delay == 0 || ended) {
                    state.publish_will(&client.id, will, max_queued, counters, now);
                }
            } else if client.expiry == 0 {
                // The session ends with the connection; so does any will
                // delay. The QoS 1 messages shared groups sent it that it
                // did not acknowledge go to another member.
                let unacknowledged = self.unacknowledged_shared(&stored);
                let handed =
                    state.end_session_with(&client.id, unacknowledged, max_queued, counters, now);
                if handed > 0 {
                    tracing::debug!(client_id = %client.id, handed, "unacknowledged shared messages sent to other members");
                }
                if let Some(bridge) = &state.bridge {
                    bridge.session_gone(&client.id);
                }
                if let Some(will) = will {
                    state.publish_will(&client.id, will, max_queued, counters, now);
                }
            } else {
                let expires_at =
                    (client.expiry != u32::MAX).then(|| now.checked_add(secs(client.expiry)));
                let will_at = will.as_ref().map(|_| {
                    now.checked_add(secs(will_delay.min(client.expiry)))
                        .unwrap_or(now)
                });
                let mut deadlines = Vec::new();
                let mut publish_now = None;
                let now_unix = unix_millis();
                if let Some(entry) = state.sessions.get_mut(&client.id) {
                    entry.owner = None;
                    entry.expiry = client.expiry;
                    let away = entry.away();
                    away.stored = stored;
                    away.stored_at = Some(now);
                    let sent = self.sent.take().map(|m| *m).unwrap_or_default();
                    away.inflight = sent.seq;
                    away.shared = sent.shared;
                    away.expires_at = expires_at.flatten();
                    away.disconnected_at = Some(now_unix);
                    deadlines.extend(away.expires_at);
                    if let (Some(will), Some(at)) = (will, will_at) {
                        if at <= now {
                            publish_now = Some(will);
                        } else {
                            away.will = Some(Box::new(PendingWill {
                                publish: will,
                                at,
                                info: client.info.clone(),
                                _charge: charge,
                            }));
                            deadlines.push(at);
                        }
                    }
                }
                if let Some(will) = publish_now {
                    state.publish_will(&client.id, will, max_queued, counters, now);
                }
                // Its record: without the will unless it waits out its delay
                // (after the will's copies: a crash in between publishes it
                // twice rather than never). A normal DISCONNECT deleted it
                // (MQTT-3.1.2-10, v5 3.14.4).
                state.persist_session(&client.id, Some(now_unix));
                crate::broker::report_offline(&state, &client.id);
                for at in deadlines {
                    state.schedule(&client.id, at);
                    notify = true;
                }
            }
            // Published or dropped here, unless it waits for its delay.
            let pending = state
                .sessions
                .get(&client.id)
                .is_some_and(|e| e.owner.is_none() && e.has_will());
            if had_will
                && !pending
                && let Some(bridge) = &state.bridge
            {
                bridge.will_cleared(&client.id);
            }
        }
        if notify {
            self.shared.timers.notify_one();
        }
        self.handovers.clear();
        self.reauthorize.clear();
        // A take-over queued meanwhile finds the session free now: its sender
        // must not wait for the lingering close.
        self.control.close();
    }
}

/// The will of a CONNECT as the message to publish.
fn will_publish(will: Will) -> Publish {
    let mut publish = Publish::new(will.topic, will.payload);
    publish.qos = will.qos;
    publish.retain = will.retain;
    let (from, to) = (will.properties, &mut publish.properties);
    to.payload_format_indicator = from.payload_format_indicator;
    to.message_expiry_interval = from.message_expiry_interval;
    to.content_type = from.content_type;
    to.response_topic = from.response_topic;
    to.correlation_data = from.correlation_data;
    to.user_properties = from.user_properties;
    publish
}

/// Now plus `d`: a limit set far beyond any real wait (`Duration::MAX`
/// say) means "never", not a panic on the overflow.
pub(crate) fn later_by(d: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Runs `write` for at most `write_timeout`, and not beyond `handover_by`
/// (the session was taken over: [`HANDOVER_WRITE_GRACE`] after that was
/// seen). A take-over still queued starts that grace when it is seen; its
/// deadline is returned, for the caller to handle it. `None` when the write
/// was given up for a take-over: a peer that reads on gets its writes (and
/// the DISCONNECT 0x8E after them), one that stopped reading does not hold
/// the session until the write timeout.
async fn write_unless_taken_over<T>(
    control: &ControlReceiver,
    write_timeout: Duration,
    handover_by: Option<tokio::time::Instant>,
    write: impl Future<Output = Result<T, CodecError>>,
) -> Result<(Option<T>, Option<tokio::time::Instant>), CodecError> {
    let write = tokio::time::timeout(write_timeout, write);
    tokio::pin!(write);
    let (by, seen) = match handover_by {
        Some(by) => (by, None),
        None => {
            tokio::select! {
                biased;
                written = &mut write => {
                    return Ok((written.map_err(|_| stalled())??.into(), None));
                }
                () = control.taken_over() => {}
            }
            let by = tokio::time::Instant::now() + HANDOVER_WRITE_GRACE;
            (by, Some(by))
        }
    };
    match tokio::time::timeout_at(by, write).await {
        Ok(written) => Ok((Some(written.map_err(|_| stalled())??), seen)),
        Err(_) => Ok((None, seen)),
    }
}

/// The connection ends because its session was taken over while a write
/// was stuck.
fn handed_over() -> CodecError {
    GaveUp::error("the session was taken over while the peer was not reading")
}

/// A peer that has not taken our bytes for [`Limits::write_timeout`](crate::Limits).
fn stalled() -> CodecError {
    GaveUp::error("the peer stopped reading")
}

/// Why a write was given up half-way: the connection ends with a reset
/// (see [`Stream::abort`]).
#[derive(Debug)]
struct GaveUp(&'static str);

impl GaveUp {
    fn error(why: &'static str) -> CodecError {
        CodecError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, Self(why)))
    }

    fn is(error: &CodecError) -> bool {
        matches!(error, CodecError::Io(e) if e.get_ref().is_some_and(|e| e.is::<Self>()))
    }
}

impl std::fmt::Display for GaveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for GaveUp {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_period_before_hibernating_grows_with_each_nap() {
        let after = Duration::from_secs(5);
        let periods: Vec<u128> = (0..11)
            .map(|naps| idle_before_hibernating(after, naps).as_millis())
            .collect();
        // (19.53 ms the first time)
        assert_eq!(
            periods,
            [19, 39, 78, 156, 312, 625, 1250, 2500, 5000, 5000, 5000]
        );
        assert_eq!(idle_before_hibernating(after, u8::MAX), after);
    }

    #[test]
    fn the_idle_period_before_hibernating_has_a_floor() {
        // 1/256 of 1 s would be 3.9 ms: 10 ms instead.
        let second = Duration::from_secs(1);
        assert_eq!(idle_before_hibernating(second, 0), MIN_IDLE);
        assert_eq!(idle_before_hibernating(second, 8), second);
        // Shorter than the floor: as configured, from the first time on.
        let short = Duration::from_millis(5);
        assert_eq!(idle_before_hibernating(short, 0), short);
        assert_eq!(idle_before_hibernating(short, 9), short);
    }
}
