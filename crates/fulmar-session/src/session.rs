//! The [`Session`] type: state shared by both roles, the poll side, closing.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fulmar_codec::{
    AuthReasonCode, DecodeError, Disconnect, DisconnectProperties, DisconnectReasonCode,
    EncodeError, MqttString, Packet, PacketId, ProtocolVersion, PubAck, PubAckReasonCode, PubComp,
    PubRec, PubRecReasonCode, Publish, QoS, ReasonCode, SubAckReasonCode, SubscriptionOptions,
};

use crate::config::Config;
use crate::error::{ApiError, Error, Initiator, LimitExceeded, ProtocolViolation};
use crate::event::{DropReason, Event};
use crate::lazy::{InboundQos2, LazyOutbound, Subscriptions};
use crate::outbound::{Next, Outbound, SendAs};
use crate::state::SessionState;
use crate::timer::{Timer, Timers};
use crate::transmit::TxQueue;

/// Which end of the connection a session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sends CONNECT, receives CONNACK.
    Client,
    /// Receives CONNECT, sends CONNACK.
    Server,
}

/// Where a session is in the life of one network connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// No network connection.
    Idle,
    /// Client: CONNECT queued, waiting for CONNACK.
    AwaitConnAck,
    /// Server: waiting for CONNECT.
    AwaitConnect,
    /// Server: CONNECT reported, waiting for `accept`/`reject`.
    ConnectReceived,
    /// The handshake is done.
    Connected,
    /// A final packet (DISCONNECT, refusing CONNACK) waits to be drained.
    Closing,
    /// The network connection should be closed now.
    Closed,
}

impl State {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Idle => "Idle",
            Self::AwaitConnAck => "AwaitConnAck",
            Self::AwaitConnect => "AwaitConnect",
            Self::ConnectReceived => "ConnectReceived",
            Self::Connected => "Connected",
            Self::Closing => "Closing",
            Self::Closed => "Closed",
        }
    }
}

/// What the peer allows us to send (from CONNECT or CONNACK; MQTT 5.0).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerLimits {
    pub(crate) receive_maximum: u16,
    pub(crate) maximum_qos: QoS,
    pub(crate) retain_available: bool,
    pub(crate) maximum_packet_size: Option<u32>,
    pub(crate) topic_alias_maximum: u16,
    /// Wildcard Subscription Available (MQTT 5.0 CONNACK).
    pub(crate) wildcard_subscriptions: bool,
    /// Shared Subscription Available (MQTT 5.0 CONNACK).
    pub(crate) shared_subscriptions: bool,
    /// Subscription Identifiers Available (MQTT 5.0 CONNACK).
    pub(crate) subscription_identifiers: bool,
}

impl Default for PeerLimits {
    fn default() -> Self {
        Self {
            receive_maximum: u16::MAX,
            maximum_qos: QoS::ExactlyOnce,
            retain_available: true,
            maximum_packet_size: None,
            topic_alias_maximum: 0,
            wildcard_subscriptions: true,
            shared_subscriptions: true,
            subscription_identifiers: true,
        }
    }
}

/// A SUBSCRIBE or UNSUBSCRIBE waiting for its acknowledgement.
#[derive(Clone, Debug)]
pub(crate) enum Request {
    /// Client: our SUBSCRIBE.
    Subscribe(Vec<(MqttString, SubscriptionOptions)>),
    /// Client: our UNSUBSCRIBE.
    Unsubscribe(Vec<MqttString>),
    /// Server: the client's SUBSCRIBE: the number of filters the application
    /// answers, and the filters the session refused itself (position in the
    /// SUBSCRIBE and reason code, in order).
    InboundSubscribe {
        answered: usize,
        refused: Vec<(usize, SubAckReasonCode)>,
    },
    /// Server: the client's UNSUBSCRIBE with this many filters.
    InboundUnsubscribe(usize),
}

/// State that lives for one network connection.
#[derive(Debug, Default)]
pub(crate) struct Conn {
    pub(crate) peer: PeerLimits,
    /// Effective keep alive in seconds (0: disabled).
    pub(crate) keep_alive: u16,
    pub(crate) clean_start: bool,
    /// Server: the client sent Request Problem Information 0.
    pub(crate) no_problem_information: bool,
    /// Server: the client sent Request Response Information 1.
    pub(crate) response_information: bool,
    pub(crate) session_expiry_zero: bool,
    /// The Topic Alias Maximum we announced (0: none).
    pub(crate) in_alias_maximum: u16,
    /// Inbound topic aliases, created by the first PUBLISH that carries one.
    pub(crate) in_aliases: Option<Box<fulmar_codec::TopicAliasResolver>>,
    /// The peer's Topic Alias Maximum, for `out_aliases`.
    pub(crate) out_alias_maximum: u16,
    pub(crate) out_aliases: crate::alias::OutAliases,
    /// What most connections never need, created on first use.
    pub(crate) extra: Option<Box<ConnExtra>>,
    pub(crate) ping_outstanding: bool,
    pub(crate) reported_close: bool,
}

/// The part of [`Conn`] that most connections never use: an idle
/// connection keeps no room for it.
#[derive(Debug, Default)]
pub(crate) struct ConnExtra {
    /// The Authentication Method of the CONNECT (enhanced authentication).
    pub(crate) auth_method: Option<MqttString>,
    /// A re-authentication the client started (AUTH 0x19) that the server
    /// has not completed (AUTH 0x00) yet, on either side.
    pub(crate) reauthenticating: bool,
    /// SUBSCRIBE and UNSUBSCRIBE requests waiting for their acknowledgement.
    pub(crate) requests: HashMap<PacketId, Request, crate::packet_id::IdHash>,
    /// Client: the deadline of each of our requests, in the order sent
    /// ([`Config::request_timeout`]).
    pub(crate) request_deadlines: crate::deadlines::Deadlines,
    /// Client: since when the oldest of our QoS 1/2 flows waiting for an
    /// answer (the front of the in-flight table) has waited: it was sent
    /// into an empty table, or took the front's place when the flow before
    /// it completed, or got its PUBREC there, or the connection resumed
    /// the session ([`Config::request_timeout`]).
    pub(crate) oldest_flow_since: Option<Instant>,
    /// Server: packets that arrived before the CONNECT was answered.
    pub(crate) early: Vec<Packet>,
    /// Manual acks: inbound QoS 1/2 messages in order of receipt, and whether
    /// the application acknowledged each.
    pub(crate) unacked: VecDeque<(PacketId, QoS, bool)>,
    /// 5.0: inbound QoS 2 identifiers stored by an earlier connection whose
    /// PUBLISH has not come again on this one, sorted. The peer's send
    /// quota starts again at our Receive Maximum on every connection (spec
    /// 4.9), so they do not count against it.
    pub(crate) carried_qos2: Vec<PacketId>,
}

impl ConnExtra {
    fn is_empty(&self) -> bool {
        self.auth_method.is_none()
            && !self.reauthenticating
            && self.requests.is_empty()
            && self.request_deadlines.is_empty()
            && self.oldest_flow_since.is_none()
            && self.early.is_empty()
            && self.unacked.is_empty()
            && self.carried_qos2.is_empty()
    }
}

/// What [`Conn::extra`] reads when there is none.
static NO_EXTRA: ConnExtra = ConnExtra {
    auth_method: None,
    reauthenticating: false,
    requests: HashMap::with_hasher(std::hash::BuildHasherDefault::new()),
    request_deadlines: crate::deadlines::Deadlines::new(),
    oldest_flow_since: None,
    early: Vec::new(),
    unacked: VecDeque::new(),
    carried_qos2: Vec::new(),
};

impl Conn {
    /// The rarely used part, for reading.
    pub(crate) fn extra(&self) -> &ConnExtra {
        self.extra.as_deref().unwrap_or(&NO_EXTRA)
    }

    /// The rarely used part, created if needed.
    pub(crate) fn extra_mut(&mut self) -> &mut ConnExtra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// The Authentication Method of the CONNECT.
    pub(crate) fn auth_method(&self) -> Option<&MqttString> {
        self.extra().auth_method.as_ref()
    }

    /// Sets the Authentication Method (a new CONNECT).
    pub(crate) fn set_auth_method(&mut self, method: Option<MqttString>) {
        if method.is_some() || self.extra.is_some() {
            self.extra_mut().auth_method = method;
        }
    }

    /// 5.0, on resuming a session: the inbound QoS 2 identifiers it holds
    /// (sorted) came from an earlier connection.
    pub(crate) fn carry_qos2(&mut self, ids: Vec<PacketId>) {
        if !ids.is_empty() || self.extra.is_some() {
            self.extra_mut().carried_qos2 = ids;
        }
    }

    /// Manual acks: whether the inbound message `id` at `qos` waits for the
    /// application's acknowledgement.
    pub(crate) fn unacked(&self, id: PacketId, qos: QoS) -> bool {
        self.extra()
            .unacked
            .iter()
            .any(|(u, q, _)| *u == id && *q == qos)
    }

    /// The peer sent the PUBLISH or the PUBREL of `id` on this connection.
    pub(crate) fn uncarry_qos2(&mut self, id: PacketId) {
        if let Some(extra) = self.extra.as_mut()
            && let Ok(at) = extra.carried_qos2.binary_search(&id)
        {
            extra.carried_qos2.remove(at);
        }
    }

    /// Takes the packets that arrived before the CONNECT was answered.
    pub(crate) fn take_early(&mut self) -> Vec<Packet> {
        self.extra
            .as_mut()
            .map(|extra| std::mem::take(&mut extra.early))
            .unwrap_or_default()
    }
}

/// One MQTT connection's protocol state, for a client or a server, across
/// network connections: QoS 0/1/2 flows, packet identifiers, flow control,
/// keep-alive, topic aliases, session resumption.
///
/// No I/O, no clock, deterministic: time comes in as `now`, packets come in
/// through [`handle_packet`](Self::handle_packet) and go out through
/// [`poll_transmit`](Self::poll_transmit).
///
/// # Methods, in four groups
///
/// - **Inputs**: [`handle_packet`](Self::handle_packet),
///   [`handle_topic_alias`](Self::handle_topic_alias) (a PUBLISH not fed yet),
///   [`handle_decode_error`](Self::handle_decode_error),
///   [`handle_timeout`](Self::handle_timeout),
///   [`connection_lost`](Self::connection_lost).
/// - **Commands**: [`publish`](Self::publish), [`disconnect`](Self::disconnect),
///   [`ack`](Self::ack); client: [`connect`](Self::connect), [`subscribe`](Self::subscribe),
///   [`unsubscribe`](Self::unsubscribe); server: [`accept`](Self::accept),
///   [`reject`](Self::reject), [`suback`](Self::suback), [`unsuback`](Self::unsuback),
///   [`auth`](Self::auth).
/// - **Outputs**: [`poll_transmit`](Self::poll_transmit) (or
///   [`poll_transmit_into`](Self::poll_transmit_into) for bytes),
///   [`poll_event`](Self::poll_event), [`poll_timeout`](Self::poll_timeout).
/// - **Queries**: [`is_connected`](Self::is_connected),
///   [`is_closed`](Self::is_closed), [`error`](Self::error),
///   [`session_state`](Self::session_state) and the counters.
///
/// # Drain order
///
/// After every input or command:
/// 1. call [`poll_transmit`](Self::poll_transmit) until it returns `None`
///    and write each packet;
/// 2. call [`poll_event`](Self::poll_event) until it returns `None` and act
///    on each event (answering may queue more packets: go back to 1);
/// 3. re-arm the timer with [`poll_timeout`](Self::poll_timeout) and call
///    [`handle_timeout`](Self::handle_timeout) when it expires (a spurious
///    call is harmless);
/// 4. when [`is_closed`](Self::is_closed) is true, close the network connection.
///
/// `poll_transmit` takes no time argument: a packet counts as sent at the
/// `now` of the last input, which is exact when it is drained right away.
/// Draining it is also what arms the keep-alive and PINGRESP timers (a
/// packet counts as sent when it is taken): a session whose packets are
/// not taken sends no PINGREQ and notices no silent peer.
///
/// The event queue has no limit of its own: each input adds a few events
/// (one per message, acknowledgement or request it completes), so it stays
/// small when drained after every input, and grows with every packet fed
/// while it is not. Incoming QoS 0 messages are not paced by the protocol:
/// an application that cannot keep up stops reading the socket.
///
/// # Reconnecting (client)
///
/// When the network connection fails: call
/// [`connection_lost`](Self::connection_lost) (it reports
/// [`Event::Disconnected`] and an [`Event::RequestLost`] for each SUBSCRIBE or
/// UNSUBSCRIBE left unanswered), drop the old socket and what was buffered from
/// it, open a new one, and [`connect`](Self::connect) with Clean Start 0 (under
/// MQTT 5.0 the first CONNECT must have had a Session Expiry Interval above 0,
/// or the server kept nothing). After [`Event::Connected`]:
/// - Session Present 1: the QoS 1/2 messages in flight come out of
///   `poll_transmit` again (PUBLISH with DUP, PUBREL as is), in their
///   original order, then what was queued meanwhile;
/// - Session Present 0: the server has no session; the messages in flight
///   are reported as [`Event::PublishDropped`] with
///   [`DropReason::SessionDiscarded`](crate::DropReason::SessionDiscarded),
///   and [`Event::SubscriptionsLost`] lists the subscriptions to make again.
///
/// With [`Config::manual_acks`], acknowledge every QoS 1/2 message reported,
/// duplicates of a resumed session included: acknowledgements go out in the
/// order the messages came ([MQTT-4.6.0-2], [MQTT-4.6.0-3]), so one left
/// unacknowledged holds back all later ones.
///
/// # Roles
///
/// - **Client**: [`Session::client`] (or [`Session::client_with_state`]),
///   then [`connect`](Self::connect); [`Event::Connected`] reports the
///   CONNACK. The server's Receive Maximum, Maximum QoS, Retain Available,
///   Maximum Packet Size, Topic Alias Maximum and Server Keep Alive are
///   applied to everything sent afterwards. Keep-alive PINGREQs are sent when
///   nothing else was sent for a keep-alive period.
/// - **Server**: [`Session::server`] for each network connection. The CONNECT
///   is validated (first packet, no second CONNECT, version rules) and
///   reported as [`Event::Connect`]; the application answers with
///   [`accept`](Self::accept) (handing over a stored [`SessionState`]) or
///   [`reject`](Self::reject). [`Event::Message`] is a message to route;
///   [`Event::Subscribe`] and [`Event::Unsubscribe`] are answered with
///   [`suback`](Self::suback) and [`unsuback`](Self::unsuback), so that
///   authorization stays with the application. [`publish`](Self::publish)
///   delivers to the client within its Receive Maximum and Maximum Packet
///   Size. No packet within 1.5 times the keep alive closes the connection.
///
/// Inbound QoS 2 messages are delivered once, when the PUBLISH first arrives;
/// the packet identifier is stored until the PUBREL, so a resent PUBLISH is
/// acknowledged but not delivered again. With [`Config::manual_acks`] the
/// PUBACK/PUBREC waits for [`ack`](Self::ack).
///
/// # Errors are sticky
///
/// A protocol violation, an exceeded limit or a timeout closes the connection:
/// the final DISCONNECT (MQTT 5.0) can still be drained, every further packet
/// input is ignored, and [`error`](Self::error) tells what happened. The
/// session state survives: a client can [`connect`](Self::connect) again.
#[derive(Debug)]
pub struct Session {
    pub(crate) role: Role,
    /// Shared by the sessions of a server (see [`Session::server`]).
    pub(crate) config: Arc<Config>,
    pub(crate) version: ProtocolVersion,
    pub(crate) state: State,
    pub(crate) now: Option<Instant>,
    pub(crate) timers: Timers,
    pub(crate) transmit: TxQueue,
    pub(crate) events: VecDeque<Event>,
    /// The outbound half, created on first use; see [`LazyOutbound`].
    pub(crate) out: LazyOutbound,
    /// The packet identifier cursor while there is no outbound half.
    pub(crate) out_cursor: u16,
    /// Inbound QoS 2 identifiers awaiting PUBREL (snapshots list them sorted).
    pub(crate) incoming_qos2: InboundQos2,
    pub(crate) subscriptions: Subscriptions,
    pub(crate) conn: Conn,
    /// Boxed: it is rare, and inline it would take four words in every session.
    pub(crate) error: Option<Box<Error>>,
    pub(crate) client_id: Option<MqttString>,
}

impl Session {
    pub(crate) fn with_role(role: Role, config: Arc<Config>) -> Self {
        Self {
            role,
            config,
            version: ProtocolVersion::V5,
            state: State::Idle,
            now: None,
            timers: Timers::default(),
            transmit: TxQueue::default(),
            events: VecDeque::new(),
            out: LazyOutbound::default(),
            out_cursor: 0,
            incoming_qos2: InboundQos2::default(),
            subscriptions: Subscriptions::default(),
            conn: Conn::default(),
            error: None,
            client_id: None,
        }
    }

    /// Replaces the session state with `state`; messages queued so far stay
    /// queued, behind the restored ones, as far as `max_pending` allows (the
    /// rest are reported as [`DropReason::QueueFull`]).
    pub(crate) fn load_state(&mut self, state: SessionState, now: Instant) -> Result<(), ApiError> {
        state.validate().map_err(ApiError::InvalidSessionState)?;
        let SessionState {
            outgoing,
            pending,
            incoming_qos2,
            subscriptions,
            last_packet_id,
        } = state;
        let restored = Outbound::restore(outgoing, pending, last_packet_id, now);
        if let Some(queued) = self.out.replace(restored) {
            let max_pending = self.config.max_pending;
            self.out
                .get_mut(last_packet_id)
                .absorb_pending(*queued, max_pending, &mut self.events);
        }
        self.incoming_qos2.set(incoming_qos2);
        self.subscriptions.set(subscriptions);
        Ok(())
    }

    /// Discards the session state (Clean Start, or no session on the server).
    /// Queued messages that were never sent are kept.
    pub(crate) fn discard_session(&mut self) {
        if let Some(out) = self.out.existing_mut() {
            out.discard_inflight(&mut self.events);
        }
        self.incoming_qos2.clear();
        self.subscriptions.clear();
    }

    // ----- queries -----

    /// Client or server.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    /// The protocol version of the current (or last) connection.
    #[must_use]
    pub fn protocol_version(&self) -> ProtocolVersion {
        self.version
    }

    /// The configuration this session was made with.
    ///
    /// ```
    /// use std::time::Instant;
    /// use fulmar_session::{Config, Session};
    /// use fulmar_codec::QoS;
    ///
    /// let config = Config { maximum_qos: QoS::AtLeastOnce, ..Config::default() };
    /// let session = Session::server(config, Instant::now());
    /// assert_eq!(session.config().maximum_qos, QoS::AtLeastOnce);
    /// ```
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether the CONNECT/CONNACK handshake is done and the connection is open.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Whether the network connection should be closed: the session ended it
    /// (or never had one) and every packet has been drained.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed | State::Idle) && self.transmit.is_empty()
    }

    /// The error that closed the last connection, if one did.
    #[must_use]
    pub fn error(&self) -> Option<&Error> {
        self.error.as_deref()
    }

    /// The client identifier: the one sent in CONNECT (client) or received
    /// (server), replaced by the Assigned Client Identifier if there was one.
    #[must_use]
    pub fn client_id(&self) -> Option<&MqttString> {
        self.client_id.as_ref()
    }

    /// The keep alive in force on this connection, in seconds (0: none).
    /// A Server Keep Alive replaces the client's value.
    #[must_use]
    pub fn keep_alive(&self) -> u16 {
        self.conn.keep_alive
    }

    /// Outbound QoS 1/2 messages sent and not completely acknowledged.
    #[must_use]
    pub fn inflight_len(&self) -> usize {
        self.out.get().inflight_len()
    }

    /// QoS 1/2 PUBLISH packets sent on this connection and not yet acknowledged:
    /// never above the peer's Receive Maximum.
    #[must_use]
    pub fn send_window_used(&self) -> usize {
        self.out.get().live()
    }

    /// The most QoS 1/2 PUBLISH packets that may be unacknowledged at once on
    /// this connection (the peer's Receive Maximum, capped by `max_inflight`).
    #[must_use]
    pub fn send_window(&self) -> usize {
        usize::from(
            self.conn
                .peer
                .receive_maximum
                .min(self.config.max_inflight.get()),
        )
    }

    /// Messages accepted by `publish` and not sent yet.
    #[must_use]
    pub fn pending_len(&self) -> usize {
        self.out.get().pending_len()
    }

    /// Whether [`publish`](Self::publish) has room for a message of `qos`
    /// now: the queue of messages that wait is below
    /// [`Config::max_pending`](crate::Config::max_pending), or the message
    /// would not wait (connected, nothing queued before it, and for QoS 1/2
    /// room in the send window). When false, `publish` fails with
    /// [`LimitExceeded::PendingQueueFull`](crate::LimitExceeded::PendingQueueFull)
    /// (unless messages in the queue have expired); a caller that would
    /// rather wait tries again once the peer acknowledges something.
    ///
    /// ```
    /// use std::time::Instant;
    /// use fulmar_codec::{MqttString, Publish, QoS};
    /// use fulmar_session::{Config, Session};
    ///
    /// let mut session = Session::client(Config { max_pending: 1, ..Config::default() });
    /// let mut message = Publish::new(MqttString::from("t"), "m".into());
    /// message.qos = QoS::AtLeastOnce;
    /// assert!(session.can_queue(QoS::AtLeastOnce));
    /// // Not connected: it waits, and fills the queue.
    /// session.publish(message, Instant::now()).unwrap();
    /// assert!(!session.can_queue(QoS::AtLeastOnce));
    /// ```
    #[must_use]
    pub fn can_queue(&self, qos: QoS) -> bool {
        let out = self.out.get();
        out.pending_len() < self.config.max_pending
            || (self.state == State::Connected && out.sends_next(qos, self.send_window()))
    }

    /// Bytes of the messages accepted by `publish` and not sent yet
    /// ([`Publish::memory_size`](fulmar_codec::Publish::memory_size): topic,
    /// payload and properties): what a broker bounds in bytes, not only in
    /// messages.
    ///
    /// ```
    /// use std::time::Instant;
    /// use fulmar_codec::{MqttString, Publish, QoS};
    /// use fulmar_session::{Config, Session};
    ///
    /// let mut session = Session::client(Config::default());
    /// let mut message = Publish::new(MqttString::from("t"), vec![0u8; 100].into());
    /// message.qos = QoS::AtLeastOnce;
    /// // Not connected yet: the message waits in the queue.
    /// session.publish(message, Instant::now()).unwrap();
    /// // 100 bytes of payload and the 1-byte topic.
    /// assert_eq!((session.pending_len(), session.pending_bytes()), (1, 101));
    /// ```
    #[must_use]
    pub fn pending_bytes(&self) -> usize {
        self.out.get().pending_bytes()
    }

    /// Inbound QoS 2 packet identifiers stored until their PUBREL.
    #[must_use]
    pub fn incoming_qos2_len(&self) -> usize {
        self.incoming_qos2.len()
    }

    /// Client: subscriptions acknowledged by the server, with granted options.
    #[must_use]
    pub fn subscriptions(&self) -> &[(MqttString, SubscriptionOptions)] {
        self.subscriptions.as_slice()
    }

    /// A snapshot of the session state, to keep or persist. Queued messages'
    /// expiry intervals are reduced by the time they waited until `now`.
    #[must_use]
    pub fn session_state(&self, now: Instant) -> SessionState {
        let (outgoing, pending) = self.out.get().snapshot(now);
        SessionState {
            outgoing,
            pending,
            incoming_qos2: self.incoming_qos2.sorted(),
            subscriptions: self.subscriptions.as_slice().to_vec(),
            last_packet_id: self.out.cursor(self.out_cursor),
        }
    }

    // ----- outputs -----

    /// The next packet to write to the network, if any: encode it for
    /// [`protocol_version`](Self::protocol_version) (or let
    /// [`poll_transmit_into`](Self::poll_transmit_into) do it). Taking it
    /// counts it as sent (keep-alive, see the drain order).
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Packet> {
        // Each way out returns a packet built where this function returns
        // it: `Packet` is a large value, and every move is a copy.
        if let Some(ping) = self.transmit.front_small()
            && self
                .conn
                .peer
                .maximum_packet_size
                .is_none_or(|max| max >= TxQueue::SMALL_MAX)
        {
            // An acknowledgement without properties or a ping: nothing to
            // strip, and it fits.
            if self.state == State::Closing && self.transmit.len() == 1 {
                self.state = State::Closed;
            }
            self.on_sent(ping);
            return self.transmit.pop_front();
        }
        if !self.transmit.is_empty() {
            return self.poll_queued();
        }
        if self.state == State::Connected {
            return self.next_publish();
        }
        None
    }

    /// Client: a PUBLISH is sent while no QoS 1/2 flow is in flight, or a
    /// session with flows in flight is resumed (they are sent again now):
    /// the oldest flow must be answered within [`Config::request_timeout`]
    /// from now on. (A QoS 0 PUBLISH sets it too, harmlessly: it is read
    /// only while a flow waits.)
    ///
    /// One clock, for the oldest flow only (the front of the in-flight
    /// table), rather than a deadline per flow: it costs a comparison per
    /// answer, and a store when the answer is the oldest flow's. A server
    /// that leaves one flow unanswered while it answers the others is still
    /// caught: the flows sent before that one complete, it becomes the
    /// oldest, and its wait counts from then on (never from earlier than it
    /// was sent, or got its PUBREC: no flow is taken as lost before it has
    /// itself waited that long). Otherwise it would hold its `publish`
    /// call, and its slot of the server's Receive Maximum, for as long as
    /// the connection lasted; a new connection resends it (MQTT-4.4.0-1).
    #[inline]
    pub(crate) fn flows_start(&mut self, now: Instant) {
        if self.config.request_timeout.is_some() {
            self.conn.extra_mut().oldest_flow_since = Some(now);
        }
    }

    /// Client: the oldest QoS 1/2 flow was answered (PUBACK, PUBREC,
    /// PUBCOMP): its wait, or that of the flow behind it, starts now. An
    /// answer to another flow changes nothing.
    #[inline]
    fn oldest_flow_answered(&mut self) {
        if self.role == Role::Client
            && let Some(extra) = self.conn.extra.as_mut()
        {
            extra.oldest_flow_since = self.now;
        }
    }

    /// Client: the request `id` was answered (SUBACK, UNSUBACK): its
    /// deadline goes.
    pub(crate) fn request_answered(&mut self, id: PacketId) {
        if let Some(extra) = self.conn.extra.as_mut() {
            extra.request_deadlines.end(id);
        }
    }

    /// The next packet of the transmit queue, made to fit the peer's limits.
    fn poll_queued(&mut self) -> Option<Packet> {
        let mut out = self.transmit.pop_front();
        if let Some(packet) = &mut out {
            if self.conn.no_problem_information {
                strip_problem_information(packet);
            }
            if let Some(max) = self.conn.peer.maximum_packet_size {
                // Reason strings and user properties are dropped rather than
                // exceed the peer's Maximum Packet Size (e.g. MQTT-3.4.2-2,
                // MQTT-3.9.2-1). A PUBLISH was checked when it was queued.
                if packet.trim_to_fit(self.version, max) == Ok(false)
                    && !matches!(packet, Packet::Publish(_))
                {
                    return self.too_large_for_peer(packet, max);
                }
            }
            if self.state == State::Closing && self.transmit.is_empty() {
                self.state = State::Closed;
            }
            self.on_sent(matches!(packet, Packet::PingReq));
        }
        out
    }

    /// Encodes the next packet to send, if any, at the end of `buf` in the
    /// connection's protocol version; returns whether there was one. The same
    /// as [`poll_transmit`](Self::poll_transmit) followed by
    /// [`Packet::encode`], for drivers that write bytes.
    ///
    /// # Errors
    /// The packet cannot be encoded: a value from the application breaks a
    /// rule of the packet format. That packet is dropped, nothing is appended.
    pub fn poll_transmit_into(
        &mut self,
        buf: &mut bytes::BytesMut,
    ) -> Result<bool, fulmar_codec::EncodeError> {
        match self.poll_transmit() {
            Some(packet) => packet.encode(self.version, buf).map(|()| true),
            None => Ok(false),
        }
    }

    /// The next event for the application, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(out) = self.out.existing_mut() {
            // The number of a dropped QoS 0 message goes with its event.
            let qos0_dropped = matches!(
                self.events.front(),
                Some(Event::PublishDropped {
                    packet_id: None,
                    ..
                })
            );
            if qos0_dropped {
                out.last_dropped_qos0 = out.dropped_qos0.pop_front().unwrap_or(0);
            } else if out.last_dropped_qos0 != 0 {
                out.last_dropped_qos0 = 0;
            }
        }
        // Popped last, straight into the return value: an event is a large
        // value, and every move is a copy.
        self.events.pop_front()
    }

    /// Whether [`poll_event`](Self::poll_event) has an event to return. A
    /// driver that drained the events, then the packets to send, checks it
    /// before it sleeps: sending can report an event (a message dropped as
    /// too large for the peer, [`Event::PublishDropped`]).
    #[must_use]
    pub fn has_event(&self) -> bool {
        !self.events.is_empty()
    }

    /// How many messages [`publish`](Self::publish) has accepted: the one
    /// it accepted last has this number, the next one gets the next. A QoS 0
    /// message has no packet identifier: its number tells it apart when it
    /// is dropped (see [`dropped_number`](Self::dropped_number)).
    ///
    /// Numbers start again from 1 when
    /// [`release_spare_capacity`](Self::release_spare_capacity) found
    /// nothing queued, in flight or to report.
    #[must_use]
    pub fn published(&self) -> u64 {
        self.out.get().published
    }

    /// The number ([`published`](Self::published)) of the message of the
    /// [`Event::PublishDropped`] that [`poll_event`](Self::poll_event)
    /// returned last, when it is a QoS 0 message (its `packet_id` is
    /// `None`): which one was dropped, also when it was not the oldest
    /// queued (a Message Expiry Interval ran out while it waited). `None`
    /// after any other event, and for a message restored from a
    /// [`SessionState`](crate::SessionState) rather than given to `publish`.
    ///
    /// Together with the order of sending (QoS 0 messages are sent in the
    /// order `publish` accepted them, each after every older message was
    /// sent or dropped), this tells each QoS 0 message's outcome.
    #[must_use]
    pub fn dropped_number(&self) -> Option<u64> {
        Some(self.out.get().last_dropped_qos0).filter(|n| *n != 0)
    }

    /// Frees the buffers of the drained event and transmit queues (and of
    /// the other per-connection queues that are empty), and the outbound
    /// state, inbound QoS 2 store and subscription list when they hold
    /// nothing. For an application that keeps many connections waiting: call
    /// it before waiting, so that an idle session holds no spare capacity;
    /// everything is created again on the next input. Nothing else changes.
    pub fn release_spare_capacity(&mut self) {
        if self.events.is_empty() {
            self.events = VecDeque::new();
        }
        self.transmit.release_if_empty();
        if self.conn.extra.as_deref().is_some_and(ConnExtra::is_empty) {
            self.conn.extra = None;
        }
        self.out.release_if_empty(&mut self.out_cursor);
        self.incoming_qos2.release_if_empty();
        self.subscriptions.release_if_empty();
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timers = self.timers.next();
        match self.request_deadline() {
            Some(request) => Some(timers.map_or(request, |t| t.min(request))),
            None => timers,
        }
    }

    /// The next PUBLISH to send, if any.
    fn next_publish(&mut self) -> Option<Packet> {
        let now = self.now?;
        let limit = self.send_window();
        let peer = self.conn.peer;
        let (role, version) = (self.role, self.version);
        loop {
            // No outbound half: nothing to send.
            let outbound = self.out.existing_mut()?;
            let prefix = self.config.strip_topic_prefix.as_deref();
            let check = |p: &Publish| outbound_check(role, version, &peer, p, prefix);
            match outbound.prepare(limit, now, check) {
                Next::Ready => {
                    self.on_sent(false);
                    if role == Role::Client && self.out.get().inflight_len() == 0 {
                        self.flows_start(now);
                    }
                    let outbound = self.out.existing_mut()?;
                    let aliases = self.config.outbound_topic_aliases;
                    let prefix = self.config.strip_topic_prefix.as_deref();
                    let conn = &mut self.conn;
                    return outbound.take(now, prefix, |publish| SendAs {
                        no_properties: version.is_v3(),
                        alias: (!version.is_v3() && aliases && alias_fits(version, &peer, publish))
                            .then(|| conn.decide_out_alias(&publish.topic))
                            .flatten(),
                    });
                }
                Next::Dropped(packet_id, number, reason) => {
                    // MQTT-3.1.2-25: a server behaves as if it delivered a
                    // message too large for the client (nothing is sent,
                    // its flow is over); the application still learns of
                    // it, to forget what it kept for the flow.
                    outbound.report_dropped(packet_id, number, reason, &mut self.events);
                }
                Next::Nothing => return None,
            }
        }
    }

    /// `packet` (not a PUBLISH) does not fit the peer's Maximum Packet Size
    /// `max`, even trimmed: it is not sent [MQTT-3.1.2-24] [MQTT-3.2.2-15],
    /// and the connection ends. With DISCONNECT 0x95 where one may be sent
    /// (not in place of a CONNACK: nothing may come before it); a
    /// DISCONNECT that does not fit goes without its properties, or not at
    /// all. Returns the next packet to send.
    #[cold]
    fn too_large_for_peer(&mut self, packet: &Packet, max: u32) -> Option<Packet> {
        let size = packet.encoded_len(self.version).unwrap_or(usize::MAX);
        let error = Error::Limit(LimitExceeded::PacketTooLarge { size, max });
        match packet {
            Packet::Disconnect(d) => {
                let bare = Packet::Disconnect(Disconnect::new(d.reason_code));
                let fits = bare
                    .encoded_len(self.version)
                    .is_ok_and(|len| u64::try_from(len).is_ok_and(|len| len <= u64::from(max)));
                if fits {
                    if self.state == State::Closing && self.transmit.is_empty() {
                        self.state = State::Closed;
                    }
                    return Some(bare);
                }
                if self.transmit.is_empty() {
                    self.state = State::Closed;
                }
                self.poll_transmit()
            }
            Packet::ConnAck(_) => {
                self.error = Some(Box::new(error));
                self.transmit.clear();
                self.close(None, Initiator::Library, ReasonCode::PacketTooLarge);
                self.state = State::Closed;
                // The client still learns why: a bare CONNACK 0x95 Packet
                // too large (5 bytes) refuses the connection, if it fits.
                let refusal = Packet::ConnAck(fulmar_codec::ConnAck::new(
                    false,
                    fulmar_codec::ConnectReasonCode::PacketTooLarge,
                ));
                refusal
                    .encoded_len(self.version)
                    .is_ok_and(|len| u64::try_from(len).is_ok_and(|len| len <= u64::from(max)))
                    .then_some(refusal)
            }
            _ => {
                self.close_with(error, DisconnectReasonCode::PacketTooLarge);
                self.poll_transmit()
            }
        }
    }

    fn on_sent(&mut self, ping: bool) {
        let Some(now) = self.now else { return };
        if self.role == Role::Client
            && self.conn.keep_alive > 0
            && matches!(self.state, State::Connected | State::AwaitConnAck)
        {
            // Before CONNACK too: the first period counts from the CONNECT.
            self.timers
                .set(Timer::KeepAlive, now, secs(self.conn.keep_alive));
        }
        // The PINGRESP deadline counts from the first unanswered PINGREQ.
        if ping && self.timers.get(Timer::PingResp).is_none() {
            self.timers
                .set(Timer::PingResp, now, self.config.ping_timeout);
        }
    }

    // ----- inputs -----

    /// Feeds a packet received from the peer.
    ///
    /// # Errors
    /// The protocol violation or exceeded limit it caused; the connection is
    /// then closing (see the type docs). Ignored (`Ok`) once closed.
    pub fn handle_packet(&mut self, mut packet: Packet, now: Instant) -> Result<(), Error> {
        self.now = Some(now);
        if matches!(self.state, State::Idle | State::Closing | State::Closed) {
            return Ok(());
        }
        // The packets of the QoS flows, connected, are handled here for both
        // roles, a PUBLISH in place and reported from where it lies: a
        // `Packet` is a large value, and every move is a copy (also into a
        // role's handler).
        let result = if self.state != State::Connected {
            self.role_packet(packet, now)
        } else {
            match packet {
                Packet::Publish(_) => {
                    let accepted = match &mut packet {
                        Packet::Publish(publish) => match self.role {
                            Role::Server => {
                                // Whatever comes keeps the connection alive.
                                self.arm_idle(now);
                                self.check_client_publish(publish)
                                    .and_then(|()| self.accept_publish(publish))
                            }
                            Role::Client => self.accept_publish(publish),
                        },
                        _ => Ok(false),
                    };
                    match accepted {
                        Ok(true) => {
                            if let Packet::Publish(publish) = packet {
                                self.events.push_back(Event::Message(publish));
                            }
                            Ok(())
                        }
                        Ok(false) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
                Packet::PubAck(ack) => {
                    if self.role == Role::Server {
                        self.arm_idle(now);
                    }
                    self.receive_puback(ack);
                    Ok(())
                }
                Packet::PubRec(rec) => {
                    if self.role == Role::Server {
                        self.arm_idle(now);
                    }
                    self.receive_pubrec(rec);
                    Ok(())
                }
                Packet::PubRel(rel) => {
                    if self.role == Role::Server {
                        self.arm_idle(now);
                    }
                    self.receive_pubrel(rel.packet_id)
                }
                Packet::PubComp(comp) => {
                    if self.role == Role::Server {
                        self.arm_idle(now);
                    }
                    self.receive_pubcomp(comp);
                    Ok(())
                }
                other => self.role_packet(other, now),
            }
        };
        if self.role == Role::Client && self.state == State::Connected && self.conn.keep_alive > 0 {
            // The server was heard from: the liveness probe starts over.
            self.timers
                .set(Timer::Idle, now, secs(self.conn.keep_alive));
        }
        result.map_err(|e| self.fail(e))
    }

    /// Reports bytes that failed to decode: the connection is closed with the
    /// reason code the decoder chose (MQTT 5.0: DISCONNECT, or CONNACK when it
    /// was the CONNECT).
    pub fn handle_decode_error(&mut self, error: &DecodeError, now: Instant) {
        self.now = Some(now);
        if matches!(self.state, State::Idle | State::Closing | State::Closed) {
            return;
        }
        if self.role == Role::Server && self.state == State::AwaitConnect {
            self.refuse_undecodable_connect(error);
            return;
        }
        match error {
            // Under 5.0 the server knew the limit: only an error.
            DecodeError::PublishTooLarge {
                qos,
                packet_id: Some(id),
                ..
            } if self.version != ProtocolVersion::V5 => {
                self.acknowledge_dropped(*qos, *id, PubAckReasonCode::Success);
            }
            _ => {}
        }
        let code = DisconnectReasonCode::from_reason_code(error.reason_code())
            .unwrap_or(DisconnectReasonCode::MalformedPacket);
        self.close_with(
            Error::Protocol(ProtocolViolation::Decode(error.to_string())),
            code,
        );
    }

    /// Reports a PUBLISH that failed to decode for `error` although its
    /// framing, `qos` and `packet_id` are sound (a Response Topic with a
    /// wildcard that the server forwarded unaltered from another client),
    /// as fulmar-codec's `MqttCodec` reports it with
    /// `identify_refused_publishes` (`CodecError::InvalidPublish`):
    /// as [`handle_decode_error`](Self::handle_decode_error), but a client
    /// acknowledges the message first (MQTT 5.0: with a failure code), so
    /// that the server does not send it again on every connection.
    pub fn handle_invalid_publish(
        &mut self,
        error: &DecodeError,
        qos: QoS,
        packet_id: Option<PacketId>,
        now: Instant,
    ) {
        if let Some(id) = packet_id {
            // 5.0: a failure code, the reason's own where PUBACK has it.
            let code = PubAckReasonCode::try_from(error.reason_code().as_u8())
                .unwrap_or(PubAckReasonCode::UnspecifiedError);
            self.acknowledge_dropped(qos, id, code);
        }
        self.handle_decode_error(error, now);
    }

    /// A client drops a PUBLISH it cannot take: under MQTT 3.1.1 (or 3.1)
    /// one over its maximum packet size, which the server could not know;
    /// under either version one the decoder refused although its framing
    /// and Packet Identifier are sound (a Response Topic with a wildcard
    /// from another client, which the server forwarded unaltered). It
    /// acknowledges the message before the connection closes (under 5.0
    /// with `code`, a failure code, MQTT 4.13.2), as a 5.0 server that
    /// knew the limit would have discarded it and completed its flow (v5
    /// MQTT-3.1.2-25). Otherwise the server sends it first again on every
    /// connection of the session, and nothing behind it ever arrives. Not
    /// while earlier messages wait for the application's acknowledgement:
    /// acknowledgements keep the order of receipt (MQTT-4.6.0-2).
    fn acknowledge_dropped(&mut self, qos: QoS, id: PacketId, code: PubAckReasonCode) {
        if self.role != Role::Client
            || self.state != State::Connected
            || !self.conn.extra().unacked.is_empty()
        {
            return;
        }
        let v5 = self.version == ProtocolVersion::V5;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce if v5 => {
                let mut ack = PubAck::new(id);
                ack.reason_code = code;
                self.transmit.push_back(Packet::PubAck(ack));
            }
            QoS::AtLeastOnce => self.transmit.push_puback(id),
            QoS::ExactlyOnce if v5 => {
                let mut rec = PubRec::new(id);
                rec.reason_code = PubRecReasonCode::try_from(code.as_u8())
                    .unwrap_or(PubRecReasonCode::UnspecifiedError);
                self.transmit.push_back(Packet::PubRec(rec));
            }
            QoS::ExactlyOnce => self.transmit.push_pubrec(id),
        }
    }

    /// Advances timers to `now`: keep-alive PINGREQ, PINGRESP and keep-alive
    /// deadlines, connect timeout, message expiry. Spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        if self
            .request_deadline()
            .is_some_and(|deadline| deadline <= now)
        {
            self.fail(Error::RequestTimeout);
        }
        for timer in self.timers.expired(now) {
            match timer {
                Timer::Connect => {
                    self.fail(Error::ConnectTimeout);
                }
                Timer::KeepAlive => {
                    // Also while an earlier PINGREQ waits for its PINGRESP
                    // (a late one must not leave the client silent past its
                    // keep alive, MQTT-3.1.2-23). The timer is armed again
                    // when this one is sent. Not before CONNACK: the
                    // CONNACK arms it (see `on_connack`).
                    if self.state == State::Connected {
                        self.conn.ping_outstanding = true;
                        self.transmit.push_back(Packet::PingReq);
                    }
                }
                Timer::Idle if self.role == Role::Client => {
                    // Nothing heard for a keep alive period although the
                    // client kept sending: a PINGREQ, which a client may
                    // send at any time, and whose PINGRESP must come within
                    // `ping_timeout`. Not a second one while one waits.
                    if self.state == State::Connected && !self.conn.ping_outstanding {
                        self.conn.ping_outstanding = true;
                        self.transmit.push_back(Packet::PingReq);
                    }
                }
                Timer::PingResp | Timer::Idle => {
                    self.fail(Error::KeepAliveTimeout);
                }
            }
        }
        if let Some(out) = self.out.existing_mut() {
            out.expire(now, &mut self.events);
        }
    }

    /// The network connection is gone (read EOF, write error, or closed after
    /// [`is_closed`](Self::is_closed)). Connection state is reset; the session
    /// state stays for the next connection.
    pub fn connection_lost(&mut self, now: Instant) {
        self.now = Some(now);
        if self.state == State::Idle {
            return;
        }
        if !self.conn.reported_close {
            self.events.push_back(Event::Disconnected {
                initiator: Initiator::Network,
                reason_code: ReasonCode::UnspecifiedError,
                properties: DisconnectProperties::default(),
            });
        }
        self.reset_connection();
    }

    /// Forgets everything that lives for one network connection.
    pub(crate) fn reset_connection(&mut self) {
        let requests = self
            .conn
            .extra
            .as_mut()
            .map(|extra| std::mem::take(&mut extra.requests))
            .unwrap_or_default();
        for (packet_id, request) in requests {
            if matches!(request, Request::Subscribe(_) | Request::Unsubscribe(_)) {
                if let Some(out) = self.out.existing_mut() {
                    out.ids.release(packet_id);
                }
                self.events.push_back(Event::RequestLost { packet_id });
            }
        }
        self.conn = Conn::default();
        self.transmit.clear();
        self.timers.stop_all();
        if let Some(out) = self.out.existing_mut() {
            out.reset_connection();
        }
        self.state = State::Idle;
    }

    // ----- commands -----

    /// Queues an application message. QoS 1/2 messages get a packet
    /// identifier, returned here and reported again in
    /// [`Event::PublishComplete`]. The message is sent when connected and the
    /// peer's Receive Maximum allows; before that it waits in a queue bounded
    /// by [`Config::max_pending`] (also while disconnected). Messages leave in
    /// the order they were published, whatever their QoS: a QoS 0 message
    /// waits behind a QoS 1/2 message held back by flow control.
    ///
    /// Only messages that wait count against the bound: while connected, a
    /// message that the next [`poll_transmit`](Self::poll_transmit) sends
    /// (nothing queued or to resend before it; QoS 0, or send quota left) is
    /// accepted whatever the bound, also with a bound of 0. A caller that
    /// drains `poll_transmit` after each `publish` thus never meets the bound
    /// while the peer's Receive Maximum has room; one that publishes a batch
    /// before draining finds the messages after the first waiting.
    ///
    /// Server, between the CONNECT and [`accept`](Self::accept): the
    /// identifier is provisional. If the session state given to `accept`
    /// has a message in flight under it, the queued message takes another
    /// one (the stored flow keeps its own, which the client knows); publish
    /// after `accept` to rely on the identifier returned.
    ///
    /// The session owns `dup`, `packet_id` and the Topic Alias property: the
    /// values given are ignored.
    ///
    /// # Errors
    /// - [`LimitExceeded::PendingQueueFull`], [`LimitExceeded::NoPacketId`];
    /// - client, when the server's CONNACK said so: QoS or retain not
    ///   supported, [`LimitExceeded::PacketTooLarge`];
    /// - an empty topic, or (client) Subscription Identifiers;
    /// - client, MQTT 5.0: [`ApiError::PayloadFormatInvalid`], a payload
    ///   marked UTF-8 (Payload Format Indicator 1) that is not well-formed
    ///   UTF-8 (section 3.3.2.3.2). Before the first
    ///   [`connect`](Self::connect) the version is not known yet and the
    ///   message is checked as for 5.0. A server forwards what it received
    ///   unaltered ([MQTT-3.3.2-4]); checking an inbound payload against its
    ///   indicator is the receiving application's choice (0x99 Payload
    ///   format invalid).
    pub fn publish(
        &mut self,
        mut publish: Publish,
        now: Instant,
    ) -> Result<Option<PacketId>, Error> {
        self.now = Some(now);
        if publish.topic.is_empty() {
            return Err(ApiError::EmptyTopic.into());
        }
        publish.properties.topic_alias = None;
        if self.role == Role::Client {
            if !publish.properties.subscription_identifiers.is_empty() {
                return Err(ApiError::SubscriptionIdentifier.into());
            }
            // 3.1.1 sends no properties: its payload is bytes, whatever the
            // indicator said.
            if self.version == ProtocolVersion::V5 && !publish.payload_format_is_valid() {
                return Err(ApiError::PayloadFormatInvalid.into());
            }
            let size = sent_size(self.version, &mut publish).map_err(ApiError::Unencodable)?;
            if self.state == State::Connected {
                let peer = self.conn.peer;
                match outbound_check(self.role, self.version, &peer, &publish, None) {
                    Some(DropReason::QoSNotSupported) => {
                        return Err(ApiError::QoSNotSupported(publish.qos).into());
                    }
                    Some(DropReason::RetainNotSupported) => {
                        return Err(ApiError::RetainNotSupported.into());
                    }
                    Some(_) => {
                        let max = peer.maximum_packet_size.unwrap_or(u32::MAX);
                        return Err(LimitExceeded::PacketTooLarge { size, max }.into());
                    }
                    None => {}
                }
            }
        }
        let mut max_pending = self.config.max_pending;
        // Only a message that waits counts against `max_pending`: one that
        // the next `poll_transmit` sends is taken whatever the bound (looked
        // at only when the bound is reached).
        if self.out.get().pending_len() >= max_pending
            && self.state == State::Connected
            && self.out.get().sends_next(publish.qos, self.send_window())
        {
            max_pending = usize::MAX;
        }
        let out = self.out.get_mut(self.out_cursor);
        if out.pending_len() >= max_pending {
            out.expire(now, &mut self.events);
        }
        let (id, number) = out.admit(publish.qos, max_pending)?;
        publish.dup = false;
        publish.packet_id = id;
        out.push_pending(publish, now, number);
        Ok(id)
    }

    /// Ends the connection with a DISCONNECT (MQTT 5.0: with `reason_code`;
    /// a 3.1.1 server just closes, a 3.1.1 client sends a bare DISCONNECT).
    /// The session state is kept. A server's Session Expiry Interval property
    /// is dropped ([MQTT-3.14.2-2]); properties that would exceed the peer's
    /// Maximum Packet Size are dropped too.
    ///
    /// # Errors
    /// [`ApiError::InvalidState`] without an open connection (a server that has
    /// not answered CONNECT uses [`reject`](Self::reject));
    /// [`ApiError::SessionExpiryAfterZero`].
    pub fn disconnect(
        &mut self,
        reason_code: DisconnectReasonCode,
        properties: DisconnectProperties,
        now: Instant,
    ) -> Result<(), Error> {
        self.now = Some(now);
        let allowed = match self.role {
            Role::Client => matches!(self.state, State::Connected | State::AwaitConnAck),
            Role::Server => self.state == State::Connected,
        };
        if !allowed {
            return Err(ApiError::InvalidState(self.state.name()).into());
        }
        // MQTT-3.14.2-1: one of the codes its sender may use.
        if self.role == Role::Client && !client_may_send(reason_code) {
            return Err(ApiError::ServerOnlyReasonCode(reason_code).into());
        }
        // 3.1.1 has no properties: they are not sent, so they break no rule.
        let sets_expiry = properties.session_expiry_interval.is_some_and(|s| s > 0)
            && self.version == ProtocolVersion::V5;
        if self.role == Role::Client && self.conn.session_expiry_zero && sets_expiry {
            return Err(ApiError::SessionExpiryAfterZero.into());
        }
        let packet = match (self.role, self.version) {
            (Role::Server, ProtocolVersion::V31 | ProtocolVersion::V311) => None,
            (Role::Client, ProtocolVersion::V31 | ProtocolVersion::V311) => {
                Some(Disconnect::default())
            }
            (Role::Server, ProtocolVersion::V5) => {
                // MQTT-3.14.2-2: a server never sends a Session Expiry Interval.
                let properties = DisconnectProperties {
                    session_expiry_interval: None,
                    ..properties
                };
                Some(Disconnect {
                    reason_code,
                    properties,
                })
            }
            (Role::Client, ProtocolVersion::V5) => Some(Disconnect {
                reason_code,
                properties,
            }),
        };
        self.close(
            packet.map(Packet::Disconnect),
            Initiator::Local,
            reason_code.into(),
        );
        Ok(())
    }

    // ----- closing -----

    /// Records a fatal error and closes with its reason code.
    pub(crate) fn fail(&mut self, error: Error) -> Error {
        let code = match (self.role, error.reason_code()) {
            // 0x8D is sent by a server only (MQTT 5.0 3.14.2.1): a client
            // whose PINGRESP did not come says 0x80.
            (Role::Client, DisconnectReasonCode::KeepAliveTimeout) => {
                DisconnectReasonCode::UnspecifiedError
            }
            // The other server-only codes (0x8C Bad authentication method
            // for a server's wrong method, ...) are Protocol Errors when a
            // client reports them (MQTT-3.14.2-1: one of the codes it may use).
            (Role::Client, code) if !client_may_send(code) => DisconnectReasonCode::ProtocolError,
            (_, code) => code,
        };
        self.close_with(error.clone(), code);
        error
    }

    pub(crate) fn close_with(&mut self, error: Error, code: DisconnectReasonCode) {
        let send = self.version == ProtocolVersion::V5
            && match self.role {
                Role::Client => matches!(self.state, State::Connected | State::AwaitConnAck),
                Role::Server => self.state == State::Connected,
            };
        self.error = Some(Box::new(error));
        let packet = send.then(|| Packet::Disconnect(Disconnect::new(code)));
        self.close(packet, Initiator::Library, code.into());
    }

    /// Queues `last` (if any) as the final packet, stops every timer and
    /// reports the close.
    pub(crate) fn close(
        &mut self,
        last: Option<Packet>,
        initiator: Initiator,
        reason_code: ReasonCode,
    ) {
        if matches!(self.state, State::Idle | State::Closing | State::Closed) {
            return;
        }
        self.timers.stop_all();
        if let Some(packet) = last {
            self.transmit.push_back(packet);
        }
        // Packets queued before the final one still go out (MQTT-3.14.4-1: none after it).
        self.state = if self.transmit.is_empty() {
            State::Closed
        } else {
            State::Closing
        };
        self.report_close(initiator, reason_code, DisconnectProperties::default());
    }

    pub(crate) fn report_close(
        &mut self,
        initiator: Initiator,
        reason_code: ReasonCode,
        properties: DisconnectProperties,
    ) {
        if !self.conn.reported_close {
            self.conn.reported_close = true;
            self.events.push_back(Event::Disconnected {
                initiator,
                reason_code,
                properties,
            });
        }
    }

    /// The peer's DISCONNECT.
    pub(crate) fn on_disconnect(&mut self, disconnect: Disconnect) {
        self.timers.stop_all();
        self.state = if self.transmit.is_empty() {
            State::Closed
        } else {
            State::Closing
        };
        self.report_close(
            Initiator::Remote,
            disconnect.reason_code.into(),
            disconnect.properties,
        );
    }

    /// An AUTH from the peer: only on a connection whose CONNECT carried an
    /// Authentication Method ([MQTT-4.12.0-7]); it must carry the same one ([MQTT-4.12.0-5]),
    /// and a reason code its sender may use now: before CONNACK only 0x18
    /// Continue authentication ([MQTT-4.12.0-2], [MQTT-4.12.0-3]); after
    /// it, from the client 0x19 Re-authenticate or 0x18 ([MQTT-4.12.1-1]),
    /// from the server 0x00 Success or 0x18.
    pub(crate) fn receive_auth(&mut self, auth: fulmar_codec::Auth) -> Result<(), Error> {
        if self.conn.auth_method().is_none() {
            return Err(ProtocolViolation::UnexpectedAuth.into());
        }
        if auth.properties.authentication_method.as_ref() != self.conn.auth_method() {
            return Err(ProtocolViolation::AuthMethodMismatch.into());
        }
        let sender = match self.role {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        };
        if !self.auth_turn(sender, auth.reason_code) {
            return Err(ProtocolViolation::UnexpectedAuthReason(u8::from(auth.reason_code)).into());
        }
        self.events.push_back(Event::Auth(auth));
        Ok(())
    }

    /// A packet for the role's handler.
    fn role_packet(&mut self, packet: Packet, now: Instant) -> Result<(), Error> {
        match self.role {
            Role::Client => self.client_packet(packet, now),
            Role::Server => self.server_packet(packet, now),
        }
    }

    /// A PUBACK from the peer.
    #[inline]
    pub(crate) fn receive_puback(&mut self, ack: PubAck) {
        if let Some(out) = self.out.existing_mut()
            && out.on_puback(ack, &mut self.events)
        {
            self.oldest_flow_answered();
        }
    }

    /// A PUBREC from the peer.
    #[inline]
    pub(crate) fn receive_pubrec(&mut self, rec: PubRec) {
        let v5 = self.version == ProtocolVersion::V5;
        if self.out.get_mut(self.out_cursor).on_pubrec(
            rec,
            v5,
            &mut self.transmit,
            &mut self.events,
        ) {
            self.oldest_flow_answered();
        }
    }

    /// A PUBCOMP from the peer.
    #[inline]
    pub(crate) fn receive_pubcomp(&mut self, comp: PubComp) {
        if let Some(out) = self.out.existing_mut()
            && out.on_pubcomp(comp, &mut self.events)
        {
            self.oldest_flow_answered();
        }
    }

    /// Whether another inbound QoS 1/2 message would exceed our Receive Maximum.
    /// MQTT 5.0 only: a 3.1.1 peer is never told one (3.1.1 has no flow
    /// control), so it cannot break it. A server holds its clients to it; a
    /// client takes what its server sends beyond it (mosquitto 2.0 sends a
    /// resumed session's whole queue at once), which the spec does not make
    /// it refuse: what it keeps per message is bounded by the packet
    /// identifier space, and the application's pace holds the reading back.
    pub(crate) fn check_receive_maximum(&self) -> Result<(), LimitExceeded> {
        self.check_receive_maximum_after(0)
    }

    /// [`check_receive_maximum`](Self::check_receive_maximum) as it was
    /// before the last `stored` inbound QoS 2 identifiers were stored.
    #[inline]
    pub(crate) fn check_receive_maximum_after(&self, stored: usize) -> Result<(), LimitExceeded> {
        if self.version != ProtocolVersion::V5 || self.role == Role::Client {
            return Ok(());
        }
        let max = self.config.receive_maximum.get();
        let carried = self.conn.extra().carried_qos2.len();
        let qos1 = self
            .conn
            .extra()
            .unacked
            .iter()
            .filter(|(_, qos, _)| *qos == QoS::AtLeastOnce)
            .count();
        let qos2 = self.incoming_qos2.len().saturating_sub(stored);
        if qos2.saturating_sub(carried) + qos1 >= usize::from(max) {
            return Err(LimitExceeded::ReceiveMaximum(max));
        }
        Ok(())
    }
}

impl Session {
    /// Whether `sender` may send an AUTH with `code` now (MQTT 5.0 section
    /// 3.15.2.1, 4.12), for both directions: 0x19 from the client once
    /// connected, starting a re-authentication (one at a time); 0x18 from
    /// either before CONNACK or during a re-authentication; 0x00 from the
    /// server, ending one (the exchange before CONNACK ends with the
    /// CONNACK). When it may, the re-authentication starts or ends with it.
    pub(crate) fn auth_turn(&mut self, sender: Role, code: AuthReasonCode) -> bool {
        let reauthenticating = self.conn.extra().reauthenticating;
        let allowed = match (sender, self.state, code) {
            (Role::Client, State::Connected, AuthReasonCode::ReAuthenticate) => !reauthenticating,
            (_, State::Connected, AuthReasonCode::ContinueAuthentication)
            | (Role::Server, State::Connected, AuthReasonCode::Success) => reauthenticating,
            (_, _, AuthReasonCode::ContinueAuthentication) => true,
            _ => false,
        };
        match (allowed, code) {
            (true, AuthReasonCode::ReAuthenticate) => self.conn.extra_mut().reauthenticating = true,
            (true, AuthReasonCode::Success) => self.conn.extra_mut().reauthenticating = false,
            _ => {}
        }
        allowed
    }
}

/// Whether a client may send `code` in DISCONNECT (MQTT 5.0 table 3-10:
/// the codes marked "Client" or "Client or Server").
fn client_may_send(code: DisconnectReasonCode) -> bool {
    matches!(
        u8::from(code),
        0x00 | 0x04 | 0x80..=0x83 | 0x90 | 0x93..=0x99
    )
}

/// A new alias adds at most 4 bytes; only alias when that still fits.
/// `publish` is the stored message: it has the size of the copy sent
/// without an alias (DUP and a Message Expiry Interval change no size).
/// With [`Config::strip_topic_prefix`] the copy sent may be smaller: an
/// alias may then be declined that would have fit, never the other way
/// (sizing it here would take this check out of line on every send).
fn alias_fits(version: ProtocolVersion, peer: &PeerLimits, publish: &Publish) -> bool {
    match peer.maximum_packet_size {
        None => true,
        Some(max) => publish.encoded_len(version).is_ok_and(|len| {
            u64::try_from(len).unwrap_or(u64::MAX).saturating_add(4) <= u64::from(max)
        }),
    }
}

/// A copy of `publish` as sent without `prefix`, to size it. Cold: only a
/// server with [`Config::strip_topic_prefix`] whose client set a Maximum
/// Packet Size needs it.
#[cold]
fn without_prefix(publish: &Publish, prefix: &str) -> Publish {
    Publish {
        topic: crate::outbound::stripped_topic(&publish.topic, prefix),
        ..publish.clone()
    }
}

/// Whether the peer's limits forbid sending `publish`, whose topic goes
/// out without `prefix` ([`Config::strip_topic_prefix`]). Inlined: without
/// a Maximum Packet Size it is a few comparisons.
#[inline]
fn outbound_check(
    role: Role,
    version: ProtocolVersion,
    peer: &PeerLimits,
    publish: &Publish,
    prefix: Option<&str>,
) -> Option<DropReason> {
    if role == Role::Client {
        if publish.qos > peer.maximum_qos {
            return Some(DropReason::QoSNotSupported);
        }
        if publish.retain && !peer.retain_available {
            return Some(DropReason::RetainNotSupported);
        }
    }
    let max = peer.maximum_packet_size?;
    too_large(version, max, publish, prefix)
}

/// Whether `publish` exceeds the peer's Maximum Packet Size `max`, sent
/// without `prefix`.
#[inline(never)]
fn too_large(
    version: ProtocolVersion,
    max: u32,
    publish: &Publish,
    prefix: Option<&str>,
) -> Option<DropReason> {
    let size = match prefix {
        None => sent_len(version, publish),
        Some(prefix) => sent_len(version, &without_prefix(publish, prefix)),
    };
    match size {
        Some(size) if u64::try_from(size).unwrap_or(u64::MAX) <= u64::from(max) => None,
        _ => Some(DropReason::PacketTooLarge),
    }
}

/// The encoded size of `publish` as it will be sent: with a packet
/// identifier at QoS 1/2 (assigned later for a queued message), without
/// properties under 3.1.1. Computed in place; `publish` is left as it was.
#[inline]
fn sent_size(version: ProtocolVersion, publish: &mut Publish) -> Result<usize, EncodeError> {
    let id = publish.packet_id;
    if publish.qos != QoS::AtMostOnce && id.is_none() {
        publish.packet_id = Some(PacketId::ONE);
    }
    let result = if version.is_v3() {
        let properties = std::mem::take(&mut publish.properties);
        let result = publish.encoded_len(version);
        publish.properties = properties;
        result
    } else {
        publish.encoded_len(version)
    };
    publish.packet_id = id;
    result
}

/// [`sent_size`] of a message that cannot be changed, even for a moment;
/// `None` if it cannot be encoded at all.
fn sent_len(version: ProtocolVersion, publish: &Publish) -> Option<usize> {
    let needs_id = publish.qos != QoS::AtMostOnce && publish.packet_id.is_none();
    if version.is_v3() || needs_id {
        sent_size(version, &mut publish.clone()).ok()
    } else {
        publish.encoded_len(version).ok()
    }
}

/// v5 MQTT-3.1.2-29: after Request Problem Information 0, no Reason String
/// or User Properties except in PUBLISH, CONNACK and DISCONNECT.
fn strip_problem_information(packet: &mut Packet) {
    let props = match packet {
        Packet::PubAck(p) => &mut p.properties,
        Packet::PubRec(p) => &mut p.properties,
        Packet::PubRel(p) => &mut p.properties,
        Packet::PubComp(p) => &mut p.properties,
        Packet::SubAck(p) => &mut p.properties,
        Packet::UnsubAck(p) => &mut p.properties,
        Packet::Auth(p) => {
            p.properties.reason_string = None;
            p.properties.user_properties.clear();
            return;
        }
        _ => return,
    };
    props.reason_string = None;
    props.user_properties.clear();
}

/// `n` seconds.
pub(crate) fn secs(n: u16) -> Duration {
    Duration::from_secs(u64::from(n))
}

/// The filter part of a shared subscription's topic filter
/// (`$share/{ShareName}/{filter}`, [MQTT-4.8.2-1]), or `None` for a
/// non-shared filter. A `$share/` filter without a second `/` is shared
/// but malformed: its filter part is empty.
pub(crate) fn shared_filter(filter: &str) -> Option<&str> {
    let rest = filter.strip_prefix("$share/")?;
    Some(rest.split_once('/').map_or("", |(_, filter)| filter))
}

/// Whether a topic filter has a wildcard level (`+` or `#`). A `+` or `#`
/// inside a level makes the filter invalid rather than a wildcard one; that
/// is for the application to refuse.
pub(crate) fn has_wildcard(filter: &str) -> bool {
    filter.split('/').any(|level| level == "+" || level == "#")
}
