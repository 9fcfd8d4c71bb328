//! The connection task: owns the [`Session`] and the transport, reads
//! frames into the session, writes what it hands out, sleeps until its next
//! deadline, serves the handles' commands, routes messages to streams and
//! reconnects. Protocol rules stay in the session.

use std::collections::{HashMap, VecDeque};
use std::future::{pending, poll_fn};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fulmar_codec::{
    Auth, AuthProperties, AuthReasonCode, CodecError, ConnAck, DisconnectProperties,
    DisconnectReasonCode, EncodeError, MqttCodec, MqttString, Packet, PacketId, ProtocolVersion,
    Publish, QoS, ReasonCode, SubAck, SubscribeProperties, SubscriptionOptions, UnsubAck,
    UnsubscribeProperties,
};
use fulmar_session::{ApiError, Event, Initiator, Session};
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::codec::Framed;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::auth::{AuthError, Authentication};
use crate::channel::{StreamPermit, StreamRx, StreamTx, Unclaimed};
use crate::client::{
    Command, DisconnectCommand, Outgoing, PublishOutcome, Reply, SubscribeCommand,
};
use crate::client::{Disconnection, LastConnAck, LastDisconnection};
use crate::completion::{Key, Outcome, PublishQueue};
use crate::error::Error;
use crate::options::ConnectOptions;
use crate::router::{AckToken, Dropped, Message, Messages, Router, Subscription, Target};
use crate::transport::{self, Io};

/// A packet from the broker up to this size is read into a buffer of its
/// final size, reserved on its fixed header (not grown as its bytes arrive,
/// which copies a large message about once more). The broker is the peer
/// the client chose; larger packets, up to the client's maximum packet
/// size, still grow their buffer as they arrive.
const RESERVE_WHOLE_PACKETS: usize = 16 * 1024 * 1024;

/// The largest Subscription Identifier (MQTT 5.0 section 3.8.2.1.2).
const MAX_SUBSCRIPTION_ID: u32 = 268_435_455;

/// At most this many frames are taken per loop turn (with every queued
/// publish and at most one command) before the session's packets are
/// written (with one flush).
const BATCH: usize = 64;

/// QoS 1/2 messages parked beyond our Receive Maximum (a 3.1.1 broker, which
/// knows none, or a 5.0 broker that does not keep to it) are still read up
/// to this many bytes (topic and payload): reading stops only past both.
/// Had it stopped at the Receive Maximum, the acknowledgements and PINGRESPs
/// behind them would stay unread, and an application that awaits a publish
/// before it reads its stream again (a request/response loop) would wait
/// until the connection dropped for keep alive.
const MAX_PARKED_BYTES: usize = 4 * 1024 * 1024;

/// The most `subscribe` calls that wait for a request slot of the session;
/// beyond, they fail with `TooManyRequests`.
const MAX_SUBSCRIBE_LATER: usize = 1024;

/// Hashes a packet identifier (a `u16`) with one multiplication: the keys
/// come from the session, not from the network, and the table is small.
#[derive(Default)]
struct PacketIdHasher(u64);

impl Hasher for PacketIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type PacketIdMap<V> = HashMap<PacketId, V, BuildHasherDefault<PacketIdHasher>>;

/// Spawns the connection task and waits for the first CONNACK.
/// `with_messages`: a stream made before the first CONNECT that receives
/// everything no subscription stream takes, from the first message on (the
/// queue of a resumed session included).
pub(crate) async fn spawn(
    options: ConnectOptions,
    commands: mpsc::Receiver<Command>,
    publishes: Arc<PublishQueue>,
    (disconnections, connacks): (Arc<LastDisconnection>, Arc<LastConnAck>),
    with_messages: bool,
) -> Result<(ConnAck, watch::Receiver<bool>, Option<Messages>), Error> {
    // Refuse bad options before any network traffic.
    let _connect = options.connect_packet(false)?;
    let (ready_tx, ready_rx) = oneshot::channel();
    let span = info_span!(
        "mqtt_client",
        client_id = %options.client_id,
        broker = %format_args!("{}:{}", options.host, options.port),
    );
    let (connected_tx, connected_rx) = watch::channel(false);
    let mut driver = Driver::new(options, commands, publishes, ready_tx, connected_tx);
    driver.disconnections = disconnections;
    driver.connacks = connacks;
    let messages = with_messages.then(|| driver.leftovers());
    tokio::spawn(driver.run().instrument(span));
    let connack = ready_rx.await.map_err(|_| Error::Closed)??;
    Ok((connack, connected_rx, messages))
}

/// An error as logged: a CONNACK refusal under MQTT 3.1.1 by its return
/// code (the [`ConnectReasonCode`](fulmar_codec::ConnectReasonCode) it maps
/// to, `NotAuthorized (0x87)` for return code 5, is 5.0's).
struct Shown<'a>(&'a Error, ProtocolVersion);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Error::Refused { reason_code, .. } if self.1.is_v3() => match reason_code.to_v311() {
                Some(code) => write!(
                    f,
                    "[MQTT-3.2.2-7] connection refused: CONNACK return code {code}"
                ),
                None => self.0.fmt(f),
            },
            other => other.fmt(f),
        }
    }
}

/// Whether a failed first connection may succeed on another attempt
/// ([`ConnectOptions::retry_initial_connect`]): not after a refusal that
/// says who we are or what we asked for is wrong, nor after our own
/// authenticator failed.
fn worth_retrying(error: &Error) -> bool {
    use fulmar_codec::ConnectReasonCode as Code;
    match error {
        Error::Refused { reason_code, .. } => matches!(
            reason_code,
            Code::UnspecifiedError
                | Code::ImplementationSpecificError
                | Code::ServerUnavailable
                | Code::ServerBusy
                | Code::QuotaExceeded
                | Code::UseAnotherServer
                | Code::ServerMoved
                | Code::ConnectionRateExceeded
        ),
        Error::Authentication(_) => false,
        _ => true,
    }
}

/// The session's clock: tokio's, so that paused-time tests work.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// Room in the stream a blocked message waits for.
async fn reserve(room: Option<impl Future<Output = Option<StreamPermit>>>) -> Option<StreamPermit> {
    match room {
        Some(room) => room.await,
        None => pending().await,
    }
}

fn codec_error(e: CodecError) -> Error {
    match e {
        CodecError::Io(e) => Error::Io(e),
        CodecError::Encode(e) => Error::Encode(e),
        CodecError::Decode(e) => Error::Io(io::Error::new(io::ErrorKind::InvalidData, e)),
        other => Error::Io(io::Error::other(other.to_string())),
    }
}

/// Writes the buffered packets out. A write that takes nothing for `limit`
/// fails: a peer that stopped reading would otherwise hold the connection
/// task (no reads, no keep-alive, no commands) for ever. A write that makes
/// progress, however slowly, goes on. Progress is looked at every quarter
/// of `limit`, so a stall is noticed between `limit` and 1.25 times it
/// after the last progress.
async fn flush(
    framed: &mut Framed<Box<dyn Io>, MqttCodec>,
    limit: Option<Duration>,
) -> Result<(), Error> {
    let Some(limit) = limit else {
        return SinkExt::<Packet>::flush(framed).await.map_err(codec_error);
    };
    let step = (limit / 4).max(Duration::from_millis(1));
    let mut last_progress = tokio::time::Instant::now();
    loop {
        let before = framed.write_buffer().len();
        // Cancelling a flush loses nothing: what is not written stays in
        // the write buffer.
        match timeout(step, SinkExt::<Packet>::flush(framed)).await {
            Ok(result) => return result.map_err(codec_error),
            Err(_elapsed) if framed.write_buffer().len() < before => {
                last_progress = tokio::time::Instant::now();
            }
            Err(_elapsed) if last_progress.elapsed() < limit => {}
            Err(_elapsed) => return Err(write_stalled(limit)),
        }
    }
}

/// Flushes what is left and shuts the transport down, each within `limit`.
async fn close(
    framed: &mut Framed<Box<dyn Io>, MqttCodec>,
    limit: Option<Duration>,
) -> Result<(), Error> {
    flush(framed, limit).await?;
    let closing = SinkExt::<Packet>::close(framed);
    match limit {
        None => closing.await.map_err(codec_error),
        Some(limit) => match timeout(limit, closing).await {
            Ok(result) => result.map_err(codec_error),
            Err(_elapsed) => Err(write_stalled(limit)),
        },
    }
}

/// The broker's stream ended: our side of the transport is shut down too,
/// within `limit`, before it is dropped: TLS sends its close_notify (RFC 8446
/// 6.1: before closing the write side), a WebSocket its Close frame, TCP
/// its FIN. What the write buffer still holds is not written (the broker
/// reads no more packets); a failure only ends it sooner.
async fn shut_down(framed: &mut Framed<Box<dyn Io>, MqttCodec>, limit: Option<Duration>) {
    use tokio::io::AsyncWriteExt;
    let shutdown = framed.get_mut().shutdown();
    let result = match limit {
        None => shutdown.await,
        Some(limit) => timeout(limit, shutdown)
            .await
            .unwrap_or_else(|_elapsed| Err(io::ErrorKind::TimedOut.into())),
    };
    if let Err(e) = result {
        debug!(error = %e, "shutting the transport down after the broker's end of stream");
    }
}

fn write_stalled(limit: Duration) -> Error {
    Error::Io(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("the broker took nothing written for {limit:?}"),
    ))
}

/// Whether a SUBSCRIBE or UNSUBSCRIBE the session refused can be sent once
/// a request slot frees up or the connection is back.
fn retry_later(error: &fulmar_session::Error) -> bool {
    use fulmar_session::{ApiError, Error, LimitExceeded};
    matches!(
        error,
        Error::Limit(LimitExceeded::TooManyRequests(_) | LimitExceeded::NoPacketId)
            | Error::Api(ApiError::InvalidState(_))
    )
}

/// A SUBSCRIBE or UNSUBSCRIBE awaiting its acknowledgement.
enum Request {
    /// From [`Client::subscribe`](crate::Client::subscribe): the stream is
    /// handed out with the SUBACK.
    Subscribe {
        key: u64,
        reply: Reply<Subscription>,
        rx: StreamRx,
    },
    /// Re-subscribing stream `key` after the broker lost the session.
    Resubscribe { key: u64 },
    /// A dropped stream's filters, and the `unsubscribe` calls waiting for
    /// their UNSUBACK.
    Unsubscribe {
        filters: Vec<MqttString>,
        waiters: Vec<UnsubscribeWaiter>,
    },
}

/// A [`Subscription::unsubscribe`] call waiting for the UNSUBACK of its
/// filters.
struct UnsubscribeWaiter {
    filters: Vec<MqttString>,
    reply: oneshot::Sender<Result<(), Error>>,
}

impl UnsubscribeWaiter {
    /// Answers from the UNSUBACK of `sent`: refused when the broker refused
    /// every one of this call's filters that the UNSUBSCRIBE carried.
    fn answer(self, sent: &[MqttString], ack: &UnsubAck) {
        let codes: Vec<_> = self
            .filters
            .iter()
            .filter_map(|f| sent.iter().position(|g| g == f))
            .filter_map(|i| ack.reason_codes.get(i))
            .collect();
        let refused = !codes.is_empty() && codes.iter().all(|c| c.is_error());
        let result = if refused {
            Err(Error::UnsubscribeRejected(ack.clone()))
        } else {
            Ok(())
        };
        let _gone = self.reply.send(result);
    }
}

/// A manually acknowledged message not acknowledged yet.
struct Unacked {
    /// The number of its [`AckToken`].
    seq: u64,
    /// Copies handed to streams and not dropped unread since.
    copies: usize,
}

/// A message that a full stream has not taken yet, and the streams still to
/// receive it.
struct Blocked {
    message: Message,
    targets: VecDeque<Target>,
}

struct Driver {
    options: ConnectOptions,
    session: Session,
    commands: mpsc::Receiver<Command>,
    commands_open: bool,
    /// A command taken in a batch of publishes, handled once they are written.
    deferred: Option<Command>,
    dropped_tx: mpsc::UnboundedSender<Dropped>,
    dropped_rx: mpsc::UnboundedReceiver<Dropped>,
    router: Router,
    /// Messages that arrived while no stream wanted them (a resumed session's
    /// queue, before `messages()` was called), for the first catch-all
    /// stream; at most a stream's worth (`stream_capacity`,
    /// `stream_capacity_bytes`).
    unclaimed: Unclaimed,
    /// The handles' publishes and where their outcomes go.
    shared: Arc<PublishQueue>,
    /// Publishes taken from `shared`, being handed to the session.
    taken: VecDeque<Outgoing>,
    /// Outcomes not written to `shared` yet (one lock for a batch).
    done: Vec<(Key, Outcome)>,
    /// Scratch space for waking the publishers of `done`.
    wakers: Vec<std::task::Waker>,
    /// QoS 1/2 publishes awaiting PUBACK / PUBCOMP.
    in_flight: PacketIdMap<Key>,
    /// QoS 0 publishes awaiting their write, with the session's number of
    /// each ([`Session::published`]), in the order the session sends them.
    qos0: VecDeque<(u64, Key)>,
    /// QoS 0 messages written (`.0`) and lost with a failed write (`.1`)
    /// since the last `settle_qos0`: they are the oldest in `qos0` once the
    /// session's drops, reported by number, are taken out.
    qos0_written: (usize, usize),
    /// QoS 0 messages encoded into the write buffer and not flushed yet.
    qos0_unflushed: usize,
    /// A packet from the session that could not be encoded: `transmit`
    /// ends the connection with it.
    unencodable: Option<EncodeError>,
    requests: HashMap<PacketId, Request>,
    /// PUBLISH packets read but not fed to the session while a stream is full.
    parked: VecDeque<Publish>,
    /// QoS 0 messages among `parked` (kept as they come and go, not
    /// counted on each PUBLISH).
    parked_qos0: usize,
    /// The topics and payloads of `parked`, in bytes.
    parked_bytes: usize,
    /// QoS 0 messages dropped since the last SUBACK because they arrived
    /// for a full stream whose SUBACK had not arrived (nobody reads it yet,
    /// and waiting for room would keep the SUBACK unread for ever), or,
    /// whatever their topic, while a QoS 1/2 message waits for room in such
    /// a stream with a stream's worth of QoS 0 messages parked behind it.
    dropped_before_suback: u64,
    blocked: Option<Blocked>,
    ready: Option<oneshot::Sender<Result<ConnAck, Error>>>,
    connected_once: bool,
    /// The Client Identifier the broker assigned (the options had none): the
    /// later connections use it, so that the broker finds the session.
    assigned_client_id: Option<MqttString>,
    /// Reconnect attempts since the last connection that stayed up.
    attempt: u32,
    /// When the current connection's CONNACK arrived.
    connected_at: Option<Instant>,
    /// Which of the options' addresses the next attempt goes to.
    address: usize,
    subscription_ids: bool,
    last_subscription_id: u32,
    unsubscribe_later: Vec<MqttString>,
    /// Streams to subscribe again (the broker lost the session), by key, in
    /// order; each is sent as a request slot of the session frees up, and
    /// is queued again if its SUBSCRIBE is lost with the connection. At most
    /// one entry per live stream.
    resubscribe: VecDeque<u64>,
    /// The application's subscribes waiting for a request slot, in order
    /// (see [`wait_to_subscribe`](Self::wait_to_subscribe)).
    subscribe_later: VecDeque<Box<SubscribeCommand>>,
    /// `unsubscribe` calls whose filters wait in `unsubscribe_later`.
    unsubscribe_waiters: Vec<UnsubscribeWaiter>,
    /// The application asked to stop (disconnect, or every handle dropped).
    exit: bool,
    /// Stop now: nothing left to send.
    abort: bool,
    disconnect_reply: Option<Reply<()>>,
    last_close: Option<(Initiator, ReasonCode, DisconnectProperties)>,
    /// The broker's DISCONNECT on this connection, for [`Disconnection`].
    by_broker: Option<(ReasonCode, DisconnectProperties)>,
    /// Where [`Client::last_disconnection`](crate::Client::last_disconnection) reads.
    disconnections: Arc<LastDisconnection>,
    /// Where [`Client::connack`](crate::Client::connack) reads.
    connacks: Arc<LastConnAck>,
    /// Manual acknowledgements: the messages of this connection not
    /// acknowledged yet, with the number of stream copies not read yet. A
    /// message whose every copy is dropped unread is acknowledged by the
    /// client. At most one entry per unacknowledged packet identifier.
    unacked: PacketIdMap<Unacked>,
    /// The number of the last [`AckToken`].
    last_ack_seq: u64,
    /// Whether the session is connected, for [`Client::is_connected`](crate::Client::is_connected).
    connected: watch::Sender<bool>,
    /// `reauthenticate` calls waiting for the broker's AUTH 0x00 Success;
    /// not empty while a re-authentication runs.
    reauth_waiters: Vec<Reply<()>>,
    /// `reauthenticate` calls made while one ran: the next exchange's.
    reauth_next: Vec<Reply<()>>,
    /// When the running re-authentication fails if the broker has not
    /// completed it ([`ConnectOptions::connect_timeout`] after it began;
    /// none if that is too far to tell).
    reauth_deadline: Option<Instant>,
    /// Why our side of enhanced authentication ended this connection.
    auth_failure: Option<Error>,
}

impl Driver {
    /// A new stream's channel, with the capacities of the options.
    fn stream(&self) -> (StreamTx, StreamRx) {
        crate::channel::stream(
            self.options.stream_capacity,
            self.options.stream_capacity_bytes,
        )
    }

    /// A stream for what no subscription stream takes, made before the
    /// first CONNECT.
    fn leftovers(&mut self) -> Messages {
        let key = self.router.next_key();
        let (tx, rx) = self.stream();
        self.router.add_leftovers(key, tx);
        Messages::new(rx, key, self.dropped_tx.clone())
    }

    /// A new catch-all stream; what arrived before any stream wanted it
    /// comes first.
    fn catch_all(&mut self) -> Messages {
        let key = self.router.next_key();
        let (tx, rx) = self.stream();
        while let Some(message) = self.unclaimed.pop_front() {
            if let Err(TrySendError::Full(message) | TrySendError::Closed(message)) =
                tx.try_send(message)
            {
                // Kept for the next stream (it was dropped).
                self.unclaimed.push_front(message);
                break;
            }
        }
        self.router.add_catch_all(key, tx);
        Messages::new(rx, key, self.dropped_tx.clone())
    }

    fn new(
        options: ConnectOptions,
        commands: mpsc::Receiver<Command>,
        shared: Arc<PublishQueue>,
        ready: oneshot::Sender<Result<ConnAck, Error>>,
        connected: watch::Sender<bool>,
    ) -> Self {
        let (dropped_tx, dropped_rx) = mpsc::unbounded_channel();
        Self {
            session: Session::client(options.session_config()),
            options,
            commands,
            commands_open: true,
            deferred: None,
            dropped_tx,
            dropped_rx,
            router: Router::default(),
            unclaimed: Unclaimed::default(),
            shared,
            taken: VecDeque::new(),
            done: Vec::new(),
            wakers: Vec::new(),
            in_flight: PacketIdMap::default(),
            qos0: VecDeque::new(),
            qos0_written: (0, 0),
            qos0_unflushed: 0,
            unencodable: None,
            requests: HashMap::new(),
            parked: VecDeque::new(),
            parked_qos0: 0,
            parked_bytes: 0,
            dropped_before_suback: 0,
            blocked: None,
            ready: Some(ready),
            connected_once: false,
            assigned_client_id: None,
            attempt: 0,
            connected_at: None,
            address: 0,
            subscription_ids: false,
            last_subscription_id: 0,
            unsubscribe_later: Vec::new(),
            resubscribe: VecDeque::new(),
            subscribe_later: VecDeque::new(),
            unsubscribe_waiters: Vec::new(),
            exit: false,
            abort: false,
            disconnect_reply: None,
            last_close: None,
            by_broker: None,
            disconnections: Arc::default(),
            connacks: Arc::default(),
            unacked: PacketIdMap::default(),
            last_ack_seq: 0,
            connected,
            reauth_waiters: Vec::new(),
            reauth_next: Vec::new(),
            reauth_deadline: None,
            auth_failure: None,
        }
    }

    async fn run(mut self) {
        // Failed attempts in a row, for the first connection's pass over the
        // addresses.
        let mut failed_in_a_row = 0usize;
        loop {
            let error = self.connection().await;
            // Encoded as they were taken, never written: lost with the
            // connection.
            self.qos0_written.1 += std::mem::take(&mut self.qos0_unflushed);
            self.unencodable = None;
            let was_up = self.connected_at.is_some();
            // Only a connection that stayed up restarts the backoff: one the
            // broker accepts and ends at once (a session taken over back and
            // forth) is a failed attempt too.
            if self
                .connected_at
                .take()
                .is_some_and(|at| at.elapsed() >= self.options.reconnect.stable_after())
            {
                self.attempt = 0;
            }
            // The next address after a failed attempt; the first again after
            // a connection that was up.
            let addresses = self.options.fallbacks.len() + 1;
            if was_up {
                self.address = 0;
                failed_in_a_row = 0;
            } else {
                self.address = (self.address + 1) % addresses;
                failed_in_a_row += 1;
            }
            self.session.connection_lost(now());
            // The broker sends those messages again.
            self.unacked.clear();
            // Subscribes that waited for a request slot fail as those in
            // flight do.
            for subscribe in self.subscribe_later.drain(..) {
                let _gone = subscribe.reply.send(Err(Error::RequestLost));
            }
            // Unacknowledged by us: the broker sends them again on resume.
            self.parked.clear();
            self.parked_qos0 = 0;
            self.parked_bytes = 0;
            self.drain_events();
            // Unsubscribes waiting for an UNSUBACK are told too; their
            // UNSUBSCRIBE still goes out once connected again.
            let closing = self.exit;
            for waiter in self.unsubscribe_waiters.drain(..) {
                let error = if closing {
                    Error::Closed
                } else {
                    Error::RequestLost
                };
                let _gone = waiter.reply.send(Err(error));
            }
            // A re-authentication the broker refused ends with its
            // DISCONNECT (MQTT-4.12.1-2); one it answered wrongly with the
            // session's error.
            self.fail_reauth(|| match &error {
                Error::DisconnectedByBroker(code) => Error::DisconnectedByBroker(*code),
                Error::Session(e) => Error::Session(e.clone()),
                Error::Authentication(e) => Error::Authentication(e.clone()),
                _ if closing => Error::Closed,
                _ => Error::RequestLost,
            });
            if self.exit {
                self.connected.send_replace(false);
                info!("disconnected");
                break;
            }
            if self.ready.is_some() && !was_up && failed_in_a_row < addresses {
                // The first connection tries every address once.
                warn!(error = %Shown(&error, self.options.version), "connect failed: trying the next address");
                continue;
            }
            if let Some(ready) = self.ready.take() {
                if self.options.retry_initial_connect
                    && self.options.reconnect.is_enabled()
                    && worth_retrying(&error)
                {
                    // Retried below, as a lost connection is.
                    self.ready = Some(ready);
                } else {
                    self.connected.send_replace(false);
                    warn!(error = %Shown(&error, self.options.version), "connect failed");
                    let _gone = ready.send(Err(error));
                    break;
                }
            }
            let error = Arc::new(error);
            self.disconnections.set(Disconnection {
                error: error.clone(),
                by_broker: self.by_broker.take(),
                failed_attempts: self.attempt,
            });
            // After the record: whoever waits for the connection to go
            // down finds out why in `last_disconnection`.
            self.connected.send_replace(false);
            if !self.options.reconnect.is_enabled() {
                warn!(%error, "connection lost, reconnect is off");
                break;
            }
            let delay = self
                .options
                .reconnect
                .delay(self.attempt, rand::random::<f64>());
            self.attempt = self.attempt.saturating_add(1);
            warn!(error = %Shown(&error, self.options.version), ?delay, attempt = self.attempt, "connection lost, reconnecting");
            if !self.wait(delay).await {
                break;
            }
        }
        self.shutdown();
    }

    /// The address the next attempt goes to.
    fn current_address(&self) -> (&str, u16) {
        self.options
            .addresses()
            .nth(self.address)
            .unwrap_or_else(|| self.options.address())
    }

    /// One network connection, from transport connect to close. Returns why
    /// it ended.
    async fn connection(&mut self) -> Error {
        self.last_close = None;
        self.by_broker = None;
        self.auth_failure = None;
        self.reauth_deadline = None;
        let mut connect = match self.options.connect_packet(self.connected_once) {
            Ok(connect) => connect,
            Err(e) => return e,
        };
        if let Some(id) = &self.assigned_client_id {
            connect.client_id = id.clone();
        }
        let connecting = timeout(
            self.options.connect_timeout,
            transport::connect(&self.options, self.current_address()),
        );
        let io: Box<dyn Io> = match connecting.await {
            Err(_elapsed) => return Error::ConnectTimeout,
            Ok(Err(e)) => return e,
            Ok(Ok(io)) => io,
        };
        if let Some(authentication) = &self.options.authentication {
            // A new exchange per connection, once there is one (a nonce or
            // one-time token is not spent on an attempt that never connects).
            match authentication.start() {
                Ok(data) => connect.properties.authentication_data = data,
                Err(e) => return Error::Authentication(Arc::from(e)),
            }
        }
        debug!(clean_start = connect.clean_start, "sending CONNECT");
        if let Err(e) = self.session.connect(connect, now()) {
            return Error::Session(e);
        }
        let codec = MqttCodec::new(self.options.version, self.options.inbound_limit())
            .identify_refused_publishes(true)
            .reserve_whole_packets(RESERVE_WHOLE_PACKETS);
        let mut framed = Framed::new(io, codec);
        // A broker that keeps to our Receive Maximum never makes us stop
        // reading for QoS 1/2; QoS 0 messages have no quota, so a flood of
        // them is held back by the socket once a stream's worth is waiting.
        let max_parked_acked = usize::from(self.options.receive_maximum.get());
        let max_parked_qos0 = self.options.stream_capacity;
        // The session's next deadline; the timer is moved, not rebuilt, when
        // it comes earlier. A later deadline (the keep-alive moves with every
        // packet sent) leaves it where it is: it then fires early, the
        // session finds nothing due, and it is set again.
        let timer = sleep(std::time::Duration::ZERO);
        tokio::pin!(timer);
        let mut armed: Option<std::time::Instant> = None;
        loop {
            loop {
                self.unpark();
                self.flush_outcomes();
                if let Err(e) = self.transmit(&mut framed).await {
                    self.disconnect_failed(&e);
                    return e;
                }
                if !self.drain_events() {
                    break;
                }
            }
            if self.session.is_closed() || self.abort {
                // A failure to write what is queued (the DISCONNECT) is
                // reported to `disconnect`; one of the close after it is
                // not: the broker, having read the DISCONNECT, may already
                // have closed its end.
                let limit = self.options.write_timeout;
                match flush(&mut framed, limit).await {
                    Err(e) => {
                        debug!(error = %e, "writing the last packets");
                        self.disconnect_failed(&e);
                    }
                    Ok(()) => {
                        if let Err(e) = close(&mut framed, limit).await {
                            debug!(error = %e, "closing the transport");
                        }
                    }
                }
                return self.close_reason();
            }
            if let Some(command) = self.deferred.take() {
                self.on_command(Some(command));
                continue;
            }
            let deadline = self.session.poll_timeout();
            if let Some(deadline) = deadline
                && armed.is_none_or(|armed| deadline < armed)
            {
                timer.as_mut().reset(Instant::from_std(deadline));
                armed = Some(deadline);
            }
            let blocked = self
                .blocked
                .as_ref()
                .and_then(|b| b.targets.front().map(|t| t.tx.clone().reserve(&b.message)));
            let read = !self.closing() && self.may_read(max_parked_qos0, max_parked_acked);
            self.flush_outcomes();
            let shared = &*self.shared;
            // In a fixed order (no random start): the rare sources first, so
            // that a busy socket or publisher cannot keep them waiting; the
            // batch below serves publishes, a command and frames every turn.
            tokio::select! {
                biased;
                () = &mut timer, if deadline.is_some() => {
                    armed = None;
                    self.session.handle_timeout(now());
                }
                () = sleep_until_some(self.reauth_deadline) => {
                    // A broker that leaves a re-authentication unanswered
                    // has not authenticated us again: it failed (MQTT-4.12.1-2).
                    let limit = self.options.connect_timeout;
                    self.fail_authentication(
                        format!("the broker did not complete the re-authentication in {limit:?}")
                            .into(),
                    );
                }
                permit = reserve(blocked) => self.on_permit(permit),
                // Also with no stream routed: one ended early (its
                // re-SUBSCRIBE refused) may still hand back what it held.
                Some(dropped) = self.dropped_rx.recv() => self.on_stream_dropped(dropped),
                command = self.commands.recv(), if self.commands_open => {
                    self.on_command_after_publishes(command, Some(framed.write_buffer_mut()));
                }
                // Not while taken publishes wait for room in the session.
                () = poll_fn(|cx| shared.poll_queued(cx)), if !self.exit && self.taken.is_empty() => {
                    self.take_publishes(Some(framed.write_buffer_mut()));
                }
                frame = framed.next(), if read => {
                    let end = frame.is_none();
                    if let Some(e) = self.on_frame(frame) {
                        if end {
                            shut_down(&mut framed, self.options.write_timeout).await;
                        }
                        return e;
                    }
                }
            }
            // Whatever else is ready now goes out with the same write and flush.
            self.take_publishes(Some(framed.write_buffer_mut()));
            if self.commands_open && !self.exit && self.deferred.is_none() {
                match self.commands.try_recv() {
                    // After the publishes taken so far are written: the
                    // session sends its control packets first.
                    Ok(command) => self.deferred = Some(command),
                    Err(TryRecvError::Empty) => {}
                    Err(TryRecvError::Disconnected) => self.on_command(None),
                }
            }
            // One packet's events at a time: a full stream parks the PUBLISH
            // packets after it (`deliver` holds one blocked message).
            self.drain_events();
            for _ in 0..BATCH {
                if self.session.is_closed()
                    || self.closing()
                    || !self.may_read(max_parked_qos0, max_parked_acked)
                {
                    break;
                }
                // The waker of this poll is a no-op: the `select!` above
                // registers the task's own before the task sleeps.
                let Some(frame) = framed.next().now_or_never() else {
                    break;
                };
                let end = frame.is_none();
                if let Some(e) = self.on_frame(frame) {
                    if end {
                        shut_down(&mut framed, self.options.write_timeout).await;
                    }
                    return e;
                }
                self.drain_events();
            }
        }
    }

    /// Whether the session ended this connection (a malformed packet, a
    /// protocol error, a timeout, a DISCONNECT either way): nothing more is
    /// read, what it queued last (a DISCONNECT with its reason code) is
    /// written, and the connection ends with its reason. Reading on would
    /// find the end of the stream (the framing stops after a decode error)
    /// and lose both.
    fn closing(&self) -> bool {
        self.last_close.is_some()
    }

    /// Whether to read more frames: not while too many PUBLISH packets wait
    /// for a full stream. While that stream is one whose SUBACK has not
    /// arrived, QoS 0 messages do not stop the reading (the ones beyond
    /// `max_parked_qos0` are dropped instead, whatever their topic, see
    /// `on_packet`): the SUBACK that lets the application read the stream
    /// may be behind them.
    fn may_read(&self, max_parked_qos0: usize, max_parked_acked: usize) -> bool {
        if self.parked.is_empty() {
            return true;
        }
        let qos0 = self.parked_qos0;
        (qos0 < max_parked_qos0 || self.blocked_before_suback() || self.holds_for_first_stream())
            && (self.parked.len() - qos0 <= max_parked_acked
                || self.parked_bytes < MAX_PARKED_BYTES)
    }

    /// Parks a PUBLISH packet behind the blocked message.
    fn park(&mut self, publish: Publish) {
        if publish.qos == QoS::AtMostOnce {
            self.parked_qos0 += 1;
        }
        self.parked_bytes += parked_size(&publish);
        self.parked.push_back(publish);
    }

    /// Takes the oldest parked PUBLISH packet.
    fn unpark_one(&mut self) -> Option<Publish> {
        let publish = self.parked.pop_front()?;
        if publish.qos == QoS::AtMostOnce {
            self.parked_qos0 = self.parked_qos0.saturating_sub(1);
        }
        self.parked_bytes = self.parked_bytes.saturating_sub(parked_size(&publish));
        Some(publish)
    }

    /// Whether, under manual acknowledgements, inbound messages wait for the
    /// application's first stream (parked, not acknowledged): what a resumed
    /// session queued arrives before `subscribe` or `messages` was called,
    /// and acknowledging it unseen would lose it. Reading goes on (the
    /// SUBACK of that first stream is behind them); QoS 1/2 messages are
    /// bounded by our Receive Maximum, QoS 0 ones beyond a stream's worth
    /// are dropped.
    fn holds_for_first_stream(&self) -> bool {
        self.options.manual_acks && self.router.never_had_a_stream()
    }

    /// Whether delivery waits for room in a stream whose SUBACK has not
    /// arrived (nobody reads it until then).
    fn blocked_before_suback(&self) -> bool {
        self.blocked
            .as_ref()
            .and_then(|b| b.targets.front())
            .is_some_and(|t| self.router.waiting(t.key))
    }

    /// A QoS 0 message that arrived for a full stream whose SUBACK has not
    /// arrived is dropped: counted, logged with the SUBACK.
    fn drop_before_suback(&mut self, publish: &Publish) {
        debug!(topic = %publish.topic, "QoS 0 message for a full stream before its SUBACK, dropped");
        self.dropped_before_suback += 1;
    }

    /// Handles what the transport read; `Some` ends the connection.
    fn on_frame(&mut self, frame: Option<Result<Packet, CodecError>>) -> Option<Error> {
        match frame {
            Some(Ok(packet)) => self.on_packet(packet),
            Some(Err(CodecError::Decode(e))) => {
                warn!(error = %e, "malformed packet from the broker");
                self.session.handle_decode_error(&e, now());
            }
            Some(Err(CodecError::InvalidPublish {
                error,
                qos,
                packet_id,
            })) => {
                warn!(%error, "malformed PUBLISH from the broker");
                self.session
                    .handle_invalid_publish(&error, qos, packet_id, now());
            }
            Some(Err(e)) => return Some(codec_error(e)),
            None => {
                return Some(match self.last_close.take() {
                    Some((Initiator::Remote, code, _)) => Error::DisconnectedByBroker(code),
                    _ => Error::Io(io::ErrorKind::UnexpectedEof.into()),
                });
            }
        }
        None
    }

    /// Serves the handles while waiting `delay` before reconnecting. False:
    /// stop instead.
    async fn wait(&mut self, delay: std::time::Duration) -> bool {
        // None: too far to tell (a delay near `Duration::MAX`), never.
        let deadline = Instant::now().checked_add(delay);
        loop {
            if let Some(command) = self.deferred.take() {
                self.on_command(Some(command));
                self.drain_events();
                if self.exit {
                    return false;
                }
            }
            let blocked = self
                .blocked
                .as_ref()
                .and_then(|b| b.targets.front().map(|t| t.tx.clone().reserve(&b.message)));
            self.flush_outcomes();
            let shared = &*self.shared;
            tokio::select! {
                () = sleep_until_some(deadline) => return true,
                // Not while taken publishes wait for room in the session.
                () = poll_fn(|cx| shared.poll_queued(cx)), if !self.exit && self.taken.is_empty() => {
                    self.take_publishes(None);
                    self.drain_events();
                }
                command = self.commands.recv(), if self.commands_open => {
                    self.on_command_after_publishes(command, None);
                    self.drain_events();
                    if self.exit {
                        return false;
                    }
                }
                permit = reserve(blocked) => self.on_permit(permit),
                Some(dropped) = self.dropped_rx.recv() => self.on_stream_dropped(dropped),
            }
        }
    }

    /// Why the session closed the connection.
    fn close_reason(&mut self) -> Error {
        let last = self.last_close.take();
        if let Some(failure) = self.auth_failure.take() {
            return failure;
        }
        match self.session.error() {
            Some(fulmar_session::Error::Refused(reason_code)) => Error::Refused {
                reason_code: *reason_code,
                reason_string: last
                    .and_then(|(_, _, p)| p.reason_string)
                    .map(|s| s.to_string()),
            },
            Some(fulmar_session::Error::ConnectTimeout) => Error::ConnectTimeout,
            Some(e) => Error::Session(e.clone()),
            None => match last {
                Some((Initiator::Remote, code, _)) => Error::DisconnectedByBroker(code),
                _ => Error::Closed,
            },
        }
    }

    /// Writes every packet the session hands out, then flushes.
    async fn transmit(&mut self, framed: &mut Framed<Box<dyn Io>, MqttCodec>) -> Result<(), Error> {
        self.encode(framed.write_buffer_mut());
        let mut result = match self.unencodable.take() {
            Some(e) => Err(Error::Encode(e)),
            None => Ok(()),
        };
        // Flushed once for everything encoded since the last flush (here,
        // and as publishes were taken).
        if result.is_ok() && !framed.write_buffer().is_empty() {
            result = flush(framed, self.options.write_timeout).await;
        }
        // QoS 0 messages taken from the session are written, or lost with the
        // connection; which ones is settled once the session's events (its
        // drops, by number) are handled.
        let qos0 = std::mem::take(&mut self.qos0_unflushed);
        match result {
            Ok(()) => self.qos0_written.0 += qos0,
            Err(_) => self.qos0_written.1 += qos0,
        }
        result
    }

    /// Encodes every packet the session hands out at the end of `buf`, the
    /// transport's write buffer (what the codec's encoder does), for
    /// `transmit` to flush. Stops at a packet that cannot be encoded:
    /// `transmit` then ends the connection.
    fn encode(&mut self, buf: &mut BytesMut) {
        if self.unencodable.is_some() {
            return;
        }
        let version = self.options.version;
        while let Some(packet) = self.session.poll_transmit() {
            if matches!(&packet, Packet::Publish(p) if p.qos == QoS::AtMostOnce) {
                self.qos0_unflushed += 1;
            }
            if let Err(e) = packet.encode(version, buf) {
                self.unencodable = Some(e);
                return;
            }
        }
    }

    fn on_packet(&mut self, packet: Packet) {
        match packet {
            Packet::Publish(mut publish)
                if self.blocked.is_some()
                    || !self.parked.is_empty()
                    || self.holds_for_first_stream() =>
            {
                // Parked or dropped, its Topic Alias is taken now, in the
                // order of receipt: it applies to the packets after it.
                if let Err(error) = self.session.handle_topic_alias(&mut publish, now()) {
                    warn!(%error, "protocol error, closing the connection");
                    return;
                }
                // Reading goes on while the full stream waits for its SUBACK
                // (see `may_read`): QoS 0 beyond a stream's worth is dropped,
                // for whichever streams (parking it would not be bounded,
                // and not reading would leave the SUBACK unread).
                if publish.qos == QoS::AtMostOnce
                    && (self.blocked_before_suback() || self.holds_for_first_stream())
                    && self.parked_qos0 >= self.options.stream_capacity
                {
                    self.drop_before_suback(&publish);
                    return;
                }
                // Not fed, so not acknowledged: the broker's send quota (our
                // Receive Maximum) runs out instead of our memory.
                self.park(publish);
            }
            Packet::ConnAck(connack)
                if !connack.reason_code.is_error() && !self.session.is_connected() =>
            {
                match self.options.authentication.clone() {
                    Some(authentication) => self.on_authenticated_connack(&authentication, connack),
                    None => self.feed(Packet::ConnAck(connack)),
                }
            }
            packet => self.feed(packet),
        }
    }

    fn feed(&mut self, packet: Packet) {
        if let Err(error) = self.session.handle_packet(packet, now()) {
            warn!(%error, "protocol error, closing the connection");
        }
    }

    /// Feeds parked messages while the streams take them.
    fn unpark(&mut self) {
        while self.blocked.is_none() && !self.holds_for_first_stream() {
            let Some(publish) = self.unpark_one() else {
                break;
            };
            self.feed(Packet::Publish(publish));
            self.drain_events();
        }
    }

    /// Handles every pending event; true if there was one.
    fn drain_events(&mut self) -> bool {
        let mut any = false;
        while let Some(event) = self.session.poll_event() {
            any = true;
            self.on_event(event);
        }
        self.settle_qos0();
        any
    }

    /// The outcomes of the QoS 0 messages written (or lost) since the last
    /// call. The session sends QoS 0 messages in order, each after every
    /// older one was sent or dropped, and reports a drop (with the message's
    /// number) as it happens: once the events are handled, the messages
    /// written are the oldest left in `qos0`.
    fn settle_qos0(&mut self) {
        let (written, lost) = std::mem::take(&mut self.qos0_written);
        let written = written.min(self.qos0.len());
        for (_, key) in self.qos0.drain(..written) {
            let outcome = Ok(PublishOutcome {
                qos: QoS::AtMostOnce,
                reason_code: ReasonCode::Success,
                properties: Default::default(),
            });
            self.done.push((key, outcome));
        }
        let lost = lost.min(self.qos0.len());
        for (_, key) in self.qos0.drain(..lost) {
            self.done.push((key, Err(Error::RequestLost)));
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected(connack) => self.on_connected(connack),
            Event::Auth(auth) => self.on_auth(auth),
            Event::Message(publish) => {
                let targets: VecDeque<_> = self.router.targets(&publish).into();
                let packet_id = publish.packet_id.filter(|_| self.options.manual_acks);
                if targets.is_empty() {
                    if let Some(packet_id) = packet_id {
                        // Nobody will acknowledge it: do it now.
                        self.session_ack(packet_id);
                    }
                    // Kept for the first catch-all stream (without its ack token).
                    let message = Message::new(publish, None);
                    let (capacity, bytes) = (
                        self.options.stream_capacity,
                        self.options.stream_capacity_bytes,
                    );
                    if self.unclaimed.has_room(&message, capacity, bytes) {
                        self.unclaimed.push_back(message);
                    } else {
                        warn!(
                            topic = %message.topic,
                            kept = self.unclaimed.len(),
                            kept_bytes = self.unclaimed.bytes(),
                            "message for no stream, dropped (acknowledged): no subscription \
                             stream matches it and the buffer for the next one is full; \
                             see Client::connect_with_messages"
                        );
                    }
                    return;
                }
                let token = packet_id.map(|packet_id| {
                    self.last_ack_seq += 1;
                    let seq = self.last_ack_seq;
                    self.unacked.insert(packet_id, Unacked { seq, copies: 0 });
                    AckToken { packet_id, seq }
                });
                self.deliver(Message::new(publish, token), targets);
            }
            Event::PublishComplete {
                packet_id,
                qos,
                reason_code,
                properties,
            } => {
                if let Some(key) = self.in_flight.remove(&packet_id) {
                    let result = if reason_code.is_error() {
                        Err(Error::PublishRejected {
                            reason_code,
                            properties,
                        })
                    } else {
                        Ok(PublishOutcome {
                            qos,
                            reason_code,
                            properties,
                        })
                    };
                    self.done.push((key, result));
                }
            }
            Event::PublishDropped { packet_id, reason } => {
                warn!(?packet_id, ?reason, "publish dropped");
                let key = match packet_id {
                    Some(id) => self.in_flight.remove(&id),
                    // Not necessarily the oldest: its number tells which.
                    None => self.session.dropped_number().and_then(|number| {
                        let at = self.qos0.iter().position(|(n, _)| *n == number)?;
                        self.qos0.remove(at).map(|(_, key)| key)
                    }),
                };
                if let Some(key) = key {
                    self.done.push((key, Err(Error::PublishDropped(reason))));
                }
            }
            Event::SubAck(ack) => {
                if self.dropped_before_suback > 0 {
                    warn!(
                        dropped = self.dropped_before_suback,
                        "QoS 0 messages dropped before a SUBACK: for a full stream waiting for it, or behind a QoS 1/2 message waiting for room in one"
                    );
                    self.dropped_before_suback = 0;
                }
                self.on_suback(ack);
            }
            Event::UnsubAck(ack) => {
                if let Some(Request::Unsubscribe { filters, waiters }) =
                    self.requests.remove(&ack.packet_id)
                {
                    for waiter in waiters {
                        waiter.answer(&filters, &ack);
                    }
                }
                self.send_pending();
            }
            Event::RequestLost { packet_id } => match self.requests.remove(&packet_id) {
                Some(Request::Subscribe { key, reply, rx }) => {
                    self.unclaim(rx);
                    self.router.remove(key);
                    let _gone = reply.send(Err(Error::RequestLost));
                }
                Some(Request::Resubscribe { key }) if self.router.get(key).is_some() => {
                    self.resubscribe.push_back(key);
                }
                Some(Request::Unsubscribe { filters, waiters }) => {
                    self.unsubscribe_waiters.extend(waiters);
                    self.unsubscribe_later(filters);
                }
                Some(Request::Resubscribe { .. }) | None => {}
            },
            Event::Disconnected {
                initiator,
                reason_code,
                properties,
            } => {
                match initiator {
                    // 3.1.1 has no DISCONNECT reason codes: a refusing
                    // CONNACK's is named by its return code.
                    Initiator::Remote if self.options.version.is_v3() => {
                        let return_code =
                            fulmar_codec::ConnectReasonCode::try_from(u8::from(reason_code))
                                .ok()
                                .and_then(fulmar_codec::ConnectReasonCode::to_v311)
                                .filter(|code| *code != 0);
                        warn!(?return_code, "the broker closed the connection");
                    }
                    Initiator::Remote => warn!(
                        %reason_code,
                        reason = ?properties.reason_string,
                        "the broker closed the connection"
                    ),
                    Initiator::Library => warn!(
                        %reason_code,
                        error = ?self.session.error(),
                        "closing the connection"
                    ),
                    Initiator::Local | Initiator::Network => {
                        debug!(?initiator, %reason_code, "connection closed");
                    }
                }
                if initiator == Initiator::Remote {
                    self.by_broker = Some((reason_code, properties.clone()));
                }
                self.last_close = Some((initiator, reason_code, properties));
            }
            // Server-role events.
            _ => {}
        }
    }

    /// An AUTH from the broker. The session let through only what the
    /// broker may send now: 0x18 during an exchange, 0x00 at the end of a
    /// re-authentication we started, with the CONNECT's method.
    fn on_auth(&mut self, auth: Auth) {
        let Some(authentication) = self.options.authentication.clone() else {
            return;
        };
        let data = auth.properties.authentication_data;
        match auth.reason_code {
            AuthReasonCode::ContinueAuthentication => match authentication.challenge(data) {
                // MQTT-4.12.0-3: the answer is an AUTH 0x18 too.
                Ok(data) => {
                    let answer = Auth {
                        reason_code: AuthReasonCode::ContinueAuthentication,
                        properties: AuthProperties {
                            authentication_data: data,
                            ..AuthProperties::default()
                        },
                    };
                    if let Err(error) = self.session.auth(answer) {
                        debug!(%error, "the connection closed before the AUTH answer");
                    }
                }
                Err(e) => self.fail_authentication(e),
            },
            AuthReasonCode::Success => match authentication.finish(data) {
                Ok(()) => {
                    info!("re-authenticated");
                    self.reauth_deadline = None;
                    for waiter in self.reauth_waiters.drain(..) {
                        let _gone = waiter.send(Ok(()));
                    }
                    // Calls made during that exchange get one of their own.
                    let next = std::mem::take(&mut self.reauth_next);
                    if !next.is_empty() {
                        self.start_reauth(next);
                    }
                }
                Err(e) => self.fail_authentication(e),
            },
            AuthReasonCode::ReAuthenticate => {}
        }
    }

    /// A successful CONNACK on a connection with enhanced authentication:
    /// the authenticator checks the broker's last word before the session
    /// takes the CONNACK, so that a broker it does not accept changes
    /// nothing (a resumed session's PUBRELs, a session discarded by Session
    /// Present 0).
    fn on_authenticated_connack(&mut self, authentication: &Authentication, connack: ConnAck) {
        if connack.properties.authentication_method.as_deref()
            != Some(authentication.method.as_str())
        {
            // Not our method: the session refuses it as a protocol error
            // (MQTT-4.12.0-5), and the authenticator never sees data meant
            // for another method.
            self.feed(Packet::ConnAck(connack));
            return;
        }
        match authentication.finish(connack.properties.authentication_data.clone()) {
            Ok(()) => self.feed(Packet::ConnAck(connack)),
            Err(e) => self.fail_authentication(e),
        }
    }

    /// Our side of enhanced authentication gave up: a DISCONNECT 0x80 ends
    /// the connection (before CONNACK, MQTT-3.1.2-30 allows it; after it,
    /// MQTT-4.12.1-2), and the attempt fails with `error`.
    fn fail_authentication(&mut self, error: AuthError) {
        warn!(%error, "enhanced authentication failed, closing the connection");
        let error: Arc<dyn std::error::Error + Send + Sync> = Arc::from(error);
        self.fail_reauth(|| Error::Authentication(error.clone()));
        let properties = DisconnectProperties {
            reason_string: MqttString::try_new("authentication failed").ok(),
            ..DisconnectProperties::default()
        };
        if let Err(error) =
            self.session
                .disconnect(DisconnectReasonCode::UnspecifiedError, properties, now())
        {
            debug!(%error, "no connection to disconnect");
        }
        self.auth_failure = Some(Error::Authentication(error));
    }

    /// Fails every `reauthenticate` call waiting, running or queued.
    fn fail_reauth(&mut self, error: impl Fn() -> Error) {
        self.reauth_deadline = None;
        for waiter in self
            .reauth_waiters
            .drain(..)
            .chain(self.reauth_next.drain(..))
        {
            let _gone = waiter.send(Err(error()));
        }
    }

    /// A `reauthenticate` call: starts a re-authentication (AUTH 0x19), or,
    /// while one runs, waits to start the next one after it (the call may
    /// bring new credentials, a rotated token).
    fn reauthenticate(&mut self, reply: Reply<()>) {
        if self.options.authentication.is_none() {
            let _gone = reply.send(Err(Error::InvalidOptions(
                "re-authentication needs an Authentication Method \
                 (ConnectOptions::authentication)"
                    .into(),
            )));
            return;
        }
        if !self.session.is_connected() {
            let _gone = reply.send(Err(Error::NotConnected));
            return;
        }
        if self.reauth_waiters.is_empty() {
            self.start_reauth(vec![reply]);
        } else {
            self.reauth_next.push(reply);
        }
    }

    /// Starts a re-authentication for `replies`.
    fn start_reauth(&mut self, replies: Vec<Reply<()>>) {
        let Some(authentication) = self.options.authentication.clone() else {
            return;
        };
        let data = match authentication.start() {
            Ok(data) => data,
            Err(e) => {
                // Nothing was sent: the connection stays as it is.
                let e: Arc<dyn std::error::Error + Send + Sync> = Arc::from(e);
                for reply in replies {
                    let _gone = reply.send(Err(Error::Authentication(e.clone())));
                }
                return;
            }
        };
        // MQTT-4.12.1-1: 0x19, with the CONNECT's method (the session sets it).
        let auth = Auth {
            reason_code: AuthReasonCode::ReAuthenticate,
            properties: AuthProperties {
                authentication_data: data,
                ..AuthProperties::default()
            },
        };
        match self.session.auth(auth) {
            Ok(()) => {
                self.reauth_waiters = replies;
                // None (no deadline) for a timeout too large to add.
                self.reauth_deadline = Instant::now().checked_add(self.options.connect_timeout);
            }
            Err(e) => {
                for reply in replies {
                    let _gone = reply.send(Err(Error::from_session(e.clone())));
                }
            }
        }
    }
    /// A SUBACK: hands out the stream of a `subscribe`, or goes on with
    /// the re-SUBSCRIBEs; either way, sends what waited for a request slot
    /// (a deferred UNSUBSCRIBE, re-SUBSCRIBEs).
    fn on_suback(&mut self, ack: SubAck) {
        match self.requests.remove(&ack.packet_id) {
            Some(Request::Subscribe { key, reply, rx }) => {
                if ack.reason_codes.iter().all(|c| c.is_error()) {
                    // What arrived for it before the SUBACK is nobody's:
                    // its acknowledgements are not held back, and what it
                    // took from the unclaimed messages goes back there.
                    self.unclaim(rx);
                    self.router.remove(key);
                    let _gone = reply.send(Err(Error::SubscribeRejected(ack)));
                } else {
                    let ended = self.router.acked(key);
                    let stream = Subscription::new(rx, key, self.dropped_tx.clone(), ack, ended);
                    // If the caller gave up, dropping the stream unsubscribes.
                    let _gone = reply.send(Ok(stream));
                }
                // A request slot is free: what waited for one goes now.
                self.send_pending();
            }
            Some(Request::Resubscribe { key }) => {
                if ack.reason_codes.iter().all(|c| c.is_error()) {
                    warn!(codes = ?ack.reason_codes, "re-subscribe refused, the stream ends");
                    self.router.end(key, Error::SubscribeRejected(ack));
                } else if let Some(route) = self.router.get(key) {
                    // The stream goes on with the filters granted; it tells
                    // which ones were refused (a filter without a reason
                    // code counts as refused).
                    let refused: Vec<String> = route
                        .filters
                        .iter()
                        .enumerate()
                        .filter(|(at, _)| ack.reason_codes.get(*at).is_none_or(|c| c.is_error()))
                        .map(|(_, (filter, _))| filter.to_string())
                        .collect();
                    if !refused.is_empty() {
                        warn!(codes = ?ack.reason_codes, ?refused, "re-subscribe partly refused");
                    }
                    route.refused.set(refused);
                }
                self.send_pending();
            }
            _ => self.send_pending(),
        }
    }

    fn on_connected(&mut self, connack: ConnAck) {
        let (host, port) = self.current_address();
        info!(
            // The span's `broker` is the first address; this is the one
            // connected to (a fallback address, maybe).
            address = %format_args!("{host}:{port}"),
            session_present = connack.session_present,
            reconnect = self.connected_once,
            "connected"
        );
        self.connected_at = Some(Instant::now());
        // Before anything of this connection is reported (a publish refused
        // for its limits, the connected state).
        self.connacks.set(connack.clone());
        if self.options.client_id.is_empty() {
            // The session's identifier is the Assigned Client Identifier.
            self.assigned_client_id = self
                .session
                .client_id()
                .filter(|id| !id.is_empty())
                .cloned();
        }
        self.subscription_ids = self.options.version == ProtocolVersion::V5
            && connack.properties.subscription_identifiers_available != Some(false);
        if self.connected_once && self.options.version == ProtocolVersion::V31 {
            // MQTT 3.1 cannot say whether the broker kept the session:
            // subscribe again (harmless if it did) and still unsubscribe
            // what was dropped meanwhile.
            self.resubscribe = self.router.acked_keys().collect();
        } else if self.connected_once && !connack.session_present {
            // The broker has no subscriptions: every live stream's go again,
            // and there is nothing to unsubscribe.
            self.resubscribe = self.router.acked_keys().collect();
            self.unsubscribe_later.clear();
        }
        // Also what was lost with the last connection (the session may
        // have been resumed since).
        self.send_pending();
        self.connected_once = true;
        self.connected.send_replace(true);
        if let Some(ready) = self.ready.take() {
            let _gone = ready.send(Ok(connack));
        }
    }

    /// Sends the deferred UNSUBSCRIBE, then the re-SUBSCRIBEs, while the
    /// session has request slots; the rest waits for the next SUBACK or
    /// UNSUBACK (or connection).
    fn send_pending(&mut self) {
        if !self.session.is_connected() {
            return;
        }
        if self.unsubscribe_later.is_empty() {
            // Their filters are other streams' again: nothing to send.
            for waiter in self.unsubscribe_waiters.drain(..) {
                let _gone = waiter.reply.send(Ok(()));
            }
        } else {
            let filters = std::mem::take(&mut self.unsubscribe_later);
            match self
                .session
                .unsubscribe(filters.clone(), UnsubscribeProperties::default(), now())
            {
                Ok(packet_id) => {
                    let waiters = std::mem::take(&mut self.unsubscribe_waiters);
                    self.requests
                        .insert(packet_id, Request::Unsubscribe { filters, waiters });
                }
                Err(error) if retry_later(&error) => {
                    self.unsubscribe_later = filters;
                    return;
                }
                Err(error) => {
                    warn!(%error, "unsubscribe given up");
                    for waiter in self.unsubscribe_waiters.drain(..) {
                        let _gone = waiter.reply.send(Err(Error::Session(error.clone())));
                    }
                }
            }
        }
        while let Some(key) = self.resubscribe.pop_front() {
            let Some(route) = self.router.get(key) else {
                // Dropped since.
                continue;
            };
            let properties = SubscribeProperties {
                subscription_identifier: route.id.filter(|_| self.subscription_ids),
                ..Default::default()
            };
            match self
                .session
                .subscribe(route.filters.clone(), properties, now())
            {
                Ok(packet_id) => {
                    self.requests
                        .insert(packet_id, Request::Resubscribe { key });
                }
                Err(error) if retry_later(&error) => {
                    self.resubscribe.push_front(key);
                    return;
                }
                Err(error) => {
                    warn!(%error, "re-subscribe failed, the stream ends");
                    self.router.end(key, Error::from_session(error));
                }
            }
        }
        // Then the application's subscribes that waited for a slot, in order.
        while let Some(subscribe) = self.subscribe_later.pop_front() {
            let waiting = self.subscribe_later.len();
            self.subscribe_now(subscribe);
            if self.subscribe_later.len() > waiting {
                // Back at the end: no slot. Put it first again.
                if let Some(back) = self.subscribe_later.pop_back() {
                    self.subscribe_later.push_front(back);
                }
                return;
            }
        }
    }

    /// Sends the SUBSCRIBE of `subscribe`, or, when every request slot of
    /// the session is taken, keeps it until one is free (see
    /// [`wait_to_subscribe`](Self::wait_to_subscribe)).
    fn subscribe_now(&mut self, subscribe: Box<SubscribeCommand>) {
        let id = subscribe
            .properties
            .subscription_identifier
            .filter(|_| self.subscription_ids);
        match self.session.subscribe(
            subscribe.filters.clone(),
            subscribe.properties.clone(),
            now(),
        ) {
            Ok(packet_id) => {
                let SubscribeCommand {
                    filters,
                    matchers,
                    reply,
                    ..
                } = *subscribe;
                // A deferred UNSUBSCRIBE would end this subscription.
                self.unsubscribe_later
                    .retain(|f| !filters.iter().any(|(g, _)| g == f));
                let key = self.router.next_key();
                let (tx, rx) = self.stream();
                self.router.add(key, filters, matchers, id, tx.clone());
                self.claim_unclaimed(key, &tx);
                self.requests
                    .insert(packet_id, Request::Subscribe { key, reply, rx });
            }
            Err(e) if retry_later(&e) => self.wait_to_subscribe(subscribe),
            Err(e) => {
                let _gone = subscribe.reply.send(Err(Error::from_session(e)));
            }
        }
    }

    /// Messages that came while no stream wanted them (a resumed session's
    /// queue, before this subscription's SUBACK) and that match the new
    /// stream `key` go to it first, in order, as far as it has room.
    fn claim_unclaimed(&mut self, key: u64, tx: &StreamTx) {
        if self.unclaimed.is_empty() {
            return;
        }
        let mut left = Unclaimed::default();
        while let Some(message) = self.unclaimed.pop_front() {
            if self.router.wants(key, &message.publish().topic) {
                match tx.try_send(message) {
                    Ok(()) => continue,
                    Err(TrySendError::Full(message) | TrySendError::Closed(message)) => {
                        left.push_back(message);
                    }
                }
            } else {
                left.push_back(message);
            }
        }
        self.unclaimed = left;
    }

    /// A `subscribe` waits for a request slot (the session allows
    /// [`Config::max_requests`](fulmar_session::Config) SUBSCRIBE and
    /// UNSUBSCRIBE packets in flight), in order, up to
    /// [`MAX_SUBSCRIBE_LATER`]; beyond, it fails. They failed at once with
    /// `TooManyRequests` past the session's limit.
    fn wait_to_subscribe(&mut self, subscribe: Box<SubscribeCommand>) {
        if self.subscribe_later.len() < MAX_SUBSCRIBE_LATER {
            self.subscribe_later.push_back(subscribe);
        } else {
            let error = fulmar_session::Error::Limit(
                fulmar_session::LimitExceeded::TooManyRequests(MAX_SUBSCRIBE_LATER),
            );
            let _gone = subscribe.reply.send(Err(Error::Session(error)));
        }
    }

    /// Filters to unsubscribe once a request slot is free; not those a live
    /// stream subscribed to since.
    fn unsubscribe_later(&mut self, filters: Vec<MqttString>) {
        for filter in filters {
            if !self.router.uses(&filter) && !self.unsubscribe_later.contains(&filter) {
                self.unsubscribe_later.push(filter);
            }
        }
    }

    fn unsubscribe(&mut self, filters: Vec<MqttString>) {
        self.unsubscribe_later(filters);
        self.send_pending();
    }

    fn on_stream_dropped(&mut self, dropped: Dropped) {
        let Dropped {
            key,
            rx,
            reply,
            unsubscribe,
        } = dropped;
        if let Some(rx) = rx {
            self.discard(rx);
        }
        let mut filters = self.router.remove(key);
        if !unsubscribe {
            filters.clear();
        }
        match reply {
            Some(reply) if filters.is_empty() => {
                let _gone = reply.send(Ok(()));
            }
            // As a subscribe then; the UNSUBSCRIBE goes out once connected.
            Some(reply) if !self.session.is_connected() => {
                let _gone = reply.send(Err(Error::NotConnected));
            }
            Some(reply) => self.unsubscribe_waiters.push(UnsubscribeWaiter {
                filters: filters.clone(),
                reply,
            }),
            None => {}
        }
        if !filters.is_empty() {
            self.unsubscribe(filters);
        }
    }

    /// A stream that never reached the application (its SUBSCRIBE refused
    /// or lost): the unclaimed messages [`claim_unclaimed`](Self::claim_unclaimed)
    /// gave it (acknowledged already, no token) go back to the front of
    /// `unclaimed`, in order, for the next stream; the others are discarded.
    fn unclaim(&mut self, rx: StreamRx) {
        for message in self.take_unread(rx).into_iter().rev() {
            self.unclaimed.push_front(message);
        }
    }

    /// Drops what a stream nobody reads holds: each copy of a message
    /// with an ack token counts as dropped, so the acknowledgements that
    /// keep the order of receipt are not held back by it.
    fn discard(&mut self, rx: StreamRx) {
        drop(self.take_unread(rx));
    }

    /// Empties a stream nobody reads: the copies with an ack token count as
    /// dropped; the messages without one are returned, in order.
    fn take_unread(&mut self, mut rx: StreamRx) -> Vec<Message> {
        // This task is the only sender: after `close`, everything sent is
        // here to take.
        rx.close();
        let mut unread = Vec::new();
        while let Ok(message) = rx.try_recv() {
            match message.ack {
                Some(token) => self.copy_dropped(token),
                None => unread.push(message),
            }
        }
        unread
    }

    /// Hands `message` to each target in turn; stops at a full stream. A
    /// QoS 0 message for a full stream whose SUBACK has not arrived skips
    /// it (dropped for that stream): nobody reads the stream before the
    /// SUBACK, which may be behind this message.
    fn deliver(&mut self, message: Message, mut targets: VecDeque<Target>) {
        let token = message.ack;
        let qos0 = message.qos == QoS::AtMostOnce;
        let mut message = Some(message);
        while let Some(Target { key, tx }) = targets.front() {
            // The last stream takes the message itself, the others a copy.
            let item = if targets.len() == 1 {
                message.take()
            } else {
                message.clone()
            };
            let Some(item) = item else {
                return;
            };
            match tx.try_send(item) {
                Ok(()) => {
                    targets.pop_front();
                    self.copy_sent(token);
                }
                Err(TrySendError::Closed(_)) => {
                    targets.pop_front();
                }
                Err(TrySendError::Full(item)) if qos0 && self.router.waiting(*key) => {
                    self.drop_before_suback(&item);
                    targets.pop_front();
                }
                Err(TrySendError::Full(message)) => {
                    self.blocked = Some(Blocked { message, targets });
                    return;
                }
            }
        }
        if let Some(token) = token {
            self.delivered(token);
        }
    }

    fn on_permit(&mut self, permit: Option<StreamPermit>) {
        let Some(mut blocked) = self.blocked.take() else {
            return;
        };
        blocked.targets.pop_front();
        if let Some(permit) = permit {
            permit.send(blocked.message.clone());
            self.copy_sent(blocked.message.ack);
        }
        self.deliver(blocked.message, blocked.targets);
    }

    /// A copy of the message of `token` went into a stream.
    fn copy_sent(&mut self, token: Option<AckToken>) {
        if let Some(entry) = token.and_then(|t| self.unacked_entry(t)) {
            entry.copies += 1;
        }
    }

    /// Every stream had its turn with the message of `token`: if none took
    /// it, nobody will acknowledge it.
    fn delivered(&mut self, token: AckToken) {
        if self.unacked_entry(token).is_some_and(|e| e.copies == 0) {
            self.ack(token);
        }
    }

    /// A copy of the message of `token` was dropped unread with its stream:
    /// acknowledged once no copy is left to read, and none is to come.
    fn copy_dropped(&mut self, token: AckToken) {
        let Some(entry) = self.unacked_entry(token) else {
            return;
        };
        entry.copies = entry.copies.saturating_sub(1);
        let unread = entry.copies > 0;
        let delivering = self
            .blocked
            .as_ref()
            .is_some_and(|b| b.message.ack == Some(token));
        if !unread && !delivering {
            self.ack(token);
        }
    }

    /// The entry of `token`'s message while it is not acknowledged.
    fn unacked_entry(&mut self, token: AckToken) -> Option<&mut Unacked> {
        self.unacked
            .get_mut(&token.packet_id)
            .filter(|e| e.seq == token.seq)
    }

    /// A manual acknowledgement, from the application or for a message
    /// nobody reads. Once per message: one from an earlier connection is
    /// moot (the broker sends the message again), and so is a second one.
    fn ack(&mut self, token: AckToken) {
        if self.unacked_entry(token).is_none() {
            debug!(packet_id = %token.packet_id, "acknowledgement not needed");
            return;
        }
        self.unacked.remove(&token.packet_id);
        self.session_ack(token.packet_id);
    }

    fn session_ack(&mut self, packet_id: PacketId) {
        if !self.session.is_connected() {
            return;
        }
        if let Err(error) = self.session.ack(packet_id) {
            debug!(%error, "acknowledgement not needed");
        }
    }

    fn next_subscription_id(&mut self) -> NonZeroU32 {
        self.last_subscription_id = self.last_subscription_id % MAX_SUBSCRIPTION_ID + 1;
        NonZeroU32::new(self.last_subscription_id).unwrap_or(NonZeroU32::MIN)
    }

    fn on_command(&mut self, command: Option<Command>) {
        let Some(command) = command else {
            // Every handle is gone: disconnect normally.
            self.commands_open = false;
            self.stop(
                DisconnectReasonCode::NormalDisconnection,
                DisconnectProperties::default(),
            );
            return;
        };
        match command {
            Command::Subscribe(mut subscribe) => {
                if !self.session.is_connected() {
                    let _gone = subscribe.reply.send(Err(Error::NotConnected));
                    return;
                }
                if self.session.protocol_version().is_v3()
                    && (subscribe.properties != SubscribeProperties::default()
                        || subscribe
                            .filters
                            .iter()
                            .any(|(_, o)| *o != SubscriptionOptions::new(o.qos)))
                {
                    let _gone = subscribe.reply.send(Err(Error::InvalidOptions(
                        "subscription properties and options other than QoS need MQTT 5.0".into(),
                    )));
                    return;
                }
                if self.subscription_ids && subscribe.properties.subscription_identifier.is_none() {
                    subscribe.properties.subscription_identifier =
                        Some(self.next_subscription_id());
                }
                if self.subscribe_later.is_empty() {
                    self.subscribe_now(subscribe);
                } else {
                    self.wait_to_subscribe(subscribe);
                }
            }
            Command::Messages { reply } => {
                let _gone = reply.send(self.catch_all());
            }
            Command::Ack(token) => self.ack(token),
            Command::Reauthenticate(reply) => self.reauthenticate(reply),
            Command::Disconnect(disconnect) => {
                let DisconnectCommand {
                    reason_code,
                    properties,
                    reply,
                } = *disconnect;
                match self.session.disconnect(reason_code, properties, now()) {
                    // A request the broker would take for a Protocol Error
                    // (5.0 section 3.14.2.2.2): refused; the connection stays.
                    Err(
                        e @ fulmar_session::Error::Api(
                            ApiError::SessionExpiryAfterZero | ApiError::ServerOnlyReasonCode(_),
                        ),
                    ) => {
                        let _gone = reply.send(Err(Error::Session(e)));
                    }
                    disconnected => {
                        self.stopped(disconnected);
                        self.disconnect_reply = Some(reply);
                    }
                }
            }
        }
    }

    /// A command from the channel: handled after the publishes queued
    /// before it are written (deferred), or now if there are none. `buf`:
    /// see `take_publishes`.
    ///
    /// `None` (every handle dropped) also waits for the publishes queued
    /// before: a publish future dropped once its message was queued leaves
    /// the message to be sent. The closed channel says `None` again on the
    /// next turn, once they are written.
    fn on_command_after_publishes(&mut self, command: Option<Command>, buf: Option<&mut BytesMut>) {
        if self.take_publishes(buf) {
            if command.is_some() {
                self.deferred = command;
            }
        } else {
            self.on_command(command);
        }
    }

    /// Hands the queued publishes to the session, while connected as many
    /// as it has room for (the rest wait in `taken`, and the publishers
    /// behind them in line); true if it took one.
    /// Not once the application asked to stop: those fail at shutdown.
    ///
    /// Connected (`buf`, the transport's write buffer), what the session
    /// sends is encoded after each one, for `transmit` to flush: the
    /// session's queue, bounded by `max_buffered_publishes`, then holds
    /// only the publishes that wait (for send quota), not a whole batch.
    fn take_publishes(&mut self, mut buf: Option<&mut BytesMut>) -> bool {
        if self.exit {
            return false;
        }
        if self.taken.is_empty() {
            self.shared.take(&mut self.taken);
            if self.taken.is_empty() {
                return false;
            }
        }
        // One clock reading for the batch: they were taken together.
        let now = now();
        let mut any = false;
        while let Some(outgoing) = self.taken.front() {
            // Connected, a publish the session has no room for waits here
            // (its future pending, and those behind it in line) until
            // acknowledgements make room: back-pressure, not `QueueFull`.
            if self.session.is_connected() && !self.session.can_queue(outgoing.qos) {
                break;
            }
            let Some(outgoing) = self.taken.pop_front() else {
                break;
            };
            any = true;
            let (publish, key) = outgoing.into_publish();
            match self.session.publish(publish, now) {
                Ok(Some(packet_id)) => {
                    self.in_flight.insert(packet_id, key);
                }
                Ok(None) => self.qos0.push_back((self.session.published(), key)),
                Err(e) => self.done.push((key, Err(Error::from_session(e)))),
            }
            if let Some(buf) = buf.as_deref_mut() {
                self.encode(buf);
            }
        }
        any
    }

    /// Writes the outcomes gathered so far and wakes their publishers.
    fn flush_outcomes(&mut self) {
        self.shared.complete(&mut self.done, &mut self.wakers);
    }

    /// Ends the client: a DISCONNECT if connected, then the task stops.
    fn stop(&mut self, reason_code: DisconnectReasonCode, properties: DisconnectProperties) {
        let disconnected = self.session.disconnect(reason_code, properties, now());
        self.stopped(disconnected);
    }

    /// The task stops after the session's `disconnect` gave `disconnected`.
    fn stopped(&mut self, disconnected: Result<(), fulmar_session::Error>) {
        self.exit = true;
        if let Err(error) = disconnected {
            debug!(%error, "no connection to disconnect");
            self.abort = true;
        }
    }

    /// The transport failed while a requested DISCONNECT was on its way
    /// (being written or flushed): the
    /// `disconnect` call hears it, since the broker may not have received
    /// the DISCONNECT (and then publishes the will).
    fn disconnect_failed(&mut self, error: &Error) {
        if let Some(reply) = self.disconnect_reply.take() {
            let kind = match error {
                Error::Io(e) => e.kind(),
                _ => io::ErrorKind::Other,
            };
            let _gone = reply.send(Err(Error::Io(io::Error::new(
                kind,
                format!("the DISCONNECT may not have reached the broker: {error}"),
            ))));
        }
    }

    /// Fails everything still waiting; streams end as their senders drop.
    fn shutdown(&mut self) {
        // No publish is taken any more; the queued ones fail.
        self.shared.close();
        let taken = self.taken.drain(..).map(|o| o.key);
        let in_flight = self.in_flight.drain().map(|(_, key)| key);
        let qos0 = self.qos0.drain(..).map(|(_, key)| key);
        for key in taken.chain(in_flight).chain(qos0) {
            self.done.push((key, Err(Error::Closed)));
        }
        self.flush_outcomes();
        for (_, request) in self.requests.drain() {
            if let Request::Subscribe { reply, .. } = request {
                let _gone = reply.send(Err(Error::Closed));
            }
        }
        for subscribe in self.subscribe_later.drain(..) {
            let _gone = subscribe.reply.send(Err(Error::Closed));
        }
        self.fail_reauth(|| Error::Closed);
        self.router = Router::default();
        self.blocked = None;
        self.commands.close();
        while let Some(command) = self
            .deferred
            .take()
            .or_else(|| self.commands.try_recv().ok())
        {
            match command {
                Command::Subscribe(subscribe) => {
                    let _gone = subscribe.reply.send(Err(Error::Closed));
                }
                Command::Disconnect(disconnect) => {
                    let _gone = disconnect.reply.send(Ok(()));
                }
                Command::Reauthenticate(reply) => {
                    let _gone = reply.send(Err(Error::Closed));
                }
                Command::Messages { .. } | Command::Ack(_) => {}
            }
        }
        if let Some(reply) = self.disconnect_reply.take() {
            let _gone = reply.send(Ok(()));
        }
    }
}

/// Sleeps until `deadline`, or for ever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => pending().await,
    }
}

/// What a parked message counts against [`MAX_PARKED_BYTES`]: its topic
/// and payload, and the `Publish` that holds them (so that empty messages
/// are bounded too).
fn parked_size(publish: &Publish) -> usize {
    std::mem::size_of::<Publish>() + publish.topic.len() + publish.payload.len()
}

impl Drop for Driver {
    /// Also when the task is dropped without finishing (its runtime shut
    /// down): every publish handed over hears an outcome.
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use fulmar_codec::{ConnAck, DisconnectReasonCode, MqttCodec, Packet, ProtocolVersion};
    use fulmar_session::ProtocolViolation;
    use futures::{SinkExt, StreamExt};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio_util::codec::Framed;

    use super::*;

    /// A 3.1.1 refusal is logged by its return code, not by the 5.0 reason
    /// code it maps to (found by an operator review: return code 5 showed
    /// as `NotAuthorized (0x87)`).
    #[test]
    fn a_v311_refusal_is_shown_by_its_return_code() {
        let refused = Error::Refused {
            reason_code: fulmar_codec::ConnectReasonCode::from_v311(5).unwrap(),
            reason_string: None,
        };
        let v3 = Shown(&refused, ProtocolVersion::V311).to_string();
        assert!(v3.ends_with("return code 5"), "{v3}");
        let v5 = Shown(&refused, ProtocolVersion::V5).to_string();
        assert!(v5.contains("0x87"), "{v5}");
    }

    /// A driver for a scripted broker at `port`, and the ends of its channels.
    fn driver(port: u16) -> (Driver, mpsc::Sender<Command>) {
        let options = ConnectOptions::new("127.0.0.1", port)
            .client_id("unit")
            .reconnect(crate::Reconnect::disabled());
        let (commands_tx, commands) = mpsc::channel(8);
        let (ready, _ready_rx) = oneshot::channel();
        let (connected, _connected_rx) = watch::channel(false);
        let driver = Driver::new(
            options,
            commands,
            Arc::new(PublishQueue::default()),
            ready,
            connected,
        );
        (driver, commands_tx)
    }

    // v5:MQTT-3.3.1-4: a PUBLISH with both QoS bits set is malformed. The
    // client closes the connection with DISCONNECT 0x81 first (section
    // 4.13.1, the client's side of v5:MQTT-4.13.1-1; v5:MQTT-4.13.2-1) and
    // the connection ends with the session's error, not an end of file.
    #[tokio::test]
    async fn a_malformed_packet_is_answered_with_disconnect_0x81_and_reported() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let broker = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut wire = Framed::new(socket, MqttCodec::new(ProtocolVersion::V5, 1 << 20));
            let Some(Ok(Packet::Connect(_))) = wire.next().await else {
                panic!("expected CONNECT")
            };
            wire.send(Packet::ConnAck(ConnAck::default()))
                .await
                .unwrap();
            // PUBLISH, QoS bits 11: topic "a", packet identifier 1, no properties.
            let garbage = [0x36, 0x06, 0x00, 0x01, b'a', 0x00, 0x01, 0x00];
            wire.get_mut().write_all(&garbage).await.unwrap();
            wire.next().await
        });
        let (mut driver, _commands) = driver(port);
        let error = timeout(Duration::from_secs(20), driver.connection())
            .await
            .expect("the connection ends");
        assert!(
            matches!(
                &error,
                Error::Session(fulmar_session::Error::Protocol(ProtocolViolation::Decode(
                    _
                )))
            ),
            "{error:?}"
        );
        let received = timeout(Duration::from_secs(20), broker)
            .await
            .unwrap()
            .unwrap();
        match received {
            Some(Ok(Packet::Disconnect(d))) => {
                assert_eq!(d.reason_code, DisconnectReasonCode::MalformedPacket);
            }
            other => panic!("expected DISCONNECT 0x81, got {other:?}"),
        }
    }
}
