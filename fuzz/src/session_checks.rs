//! The checks of the `session` fuzz target, shared with the corpus replay test of
//! fulmar-session (`crates/fulmar-session/tests/fuzz_corpus.rs` includes this file and
//! `checks.rs` with `#[path]`). Only fulmar-session, fulmar-codec, `bytes`, std and
//! `crate::checks` may be used here, and only the public API of the session.
//!
//! [`check_session`] reads its input as a [`Session`] setup and a script of steps, plays the
//! script, and after every step (and after every packet decoded within a step) drains
//! `poll_transmit` and `poll_event` and checks:
//!
//! - nothing panics;
//! - every packet the session hands out encodes in the connection's version (a CONNECT in
//!   the version it names), and the encoding decodes to one packet and is canonical
//!   ([`check_encoding`]). The script only gives the session valid application values (topics
//!   without wildcards, at least one filter, ...), so no encode error is legitimate: the one
//!   documented encode error of the session (`poll_transmit_into`) is an application value
//!   that breaks the packet format;
//! - the first packet of a connection is CONNECT (client, MQTT-3.1.0-1) or CONNACK (server,
//!   MQTT-3.2.0-1), and nothing follows a DISCONNECT on the same connection (MQTT-3.14.4-1);
//! - a PUBLISH fits the peer's Maximum Packet Size (v5: MQTT-3.1.2-24, MQTT-3.2.2-15), its
//!   Topic Alias is within the peer's Topic Alias Maximum (v5: MQTT-3.1.2-26, MQTT-3.2.2-17),
//!   it has a topic name or an alias, and a packet identifier exactly when its QoS is 1 or 2
//!   (MQTT-2.2.1-2);
//! - a peer's violation (`handle_packet` returned `Err`) leaves the session closed once
//!   drained, and a session with an error that has not reconnected is closed;
//! - every queue is bounded by the [`Config`]: events and packets produced by one step,
//!   `pending_len() <= max_pending`, `inflight_len() <= max_inflight`,
//!   `send_window_used() <= send_window()`, SUBSCRIBE/UNSUBSCRIBE requests waiting for the
//!   application `<= max_requests`; under MQTT 5.0, in the server role,
//!   `incoming_qos2_len() <= receive_maximum` and inbound QoS 1/2 messages delivered and not
//!   yet acknowledged (manual acks) `<= receive_maximum` (a client takes what its server sends
//!   beyond its Receive Maximum: bounded by the identifiers). A 3.1.1 peer is told no Receive Maximum, so the session does not
//!   enforce one on it (`check_receive_maximum`): there, both are bounded by the 65 535 packet
//!   identifiers only, and what is checked is that no message is delivered twice while its
//!   acknowledgement is pending (each identifier is held at most once per QoS). Identifiers
//!   stored on a 3.1.1 connection stay in the session state when it is resumed on a 5.0
//!   connection, so the QoS 2 bound applies only to scripts without a 3.1.1 connection
//!   (the session then refuses new QoS 1/2 messages until PUBRELs bring it under). The session
//!   has no accessor for its queued events and packets or for its manual-ack queue: those are
//!   counted as they are drained (the application side of the script keeps the list of
//!   delivered, unacknowledged messages and of unanswered requests);
//! - `session_state` gives a state that `accept` takes back (no `InvalidSessionState`);
//! - after every step, a session with nothing to do (`can_be_dormant`) goes through
//!   `into_dormant` and `wake`, as a broker's idle connection does, keeping its deadline and
//!   connection state; the following steps and checks run on the woken session.
//!
//! # Input format
//!
//! Byte 0 and 1 choose the setup (missing bytes read as 0):
//!
//! - byte 0: bit 0 server (else client), bit 1 MQTT 5.0 (else 3.1.1), bit 2 manual acks,
//!   bits 3-4 `receive_maximum` (1, 2, 3, 64), bits 5-6 `topic_alias_maximum` (0, 1, 2, 16),
//!   bit 7 no outbound topic aliases;
//! - byte 1: bits 0-1 `max_inflight` (1, 2, 4, 256), bits 2-3 `max_pending` (0, 1, 4, 32),
//!   bits 4-5 `max_requests` (0, 1, 2, 8; with 8 also `strip_topic_prefix` `a/`, a mount
//!   point), bit 6 server Maximum QoS 1, bit 7 no retain and a Server Keep Alive of 1 s.
//!
//! Then steps, each an opcode byte (taken modulo 16, see [`Op`]) and its arguments.

use std::num::{NonZeroU16, NonZeroU32};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fulmar_codec::{
    AckProperties, Auth, ConnAck, ConnAckProperties, Connect, ConnectReasonCode, Disconnect,
    DisconnectProperties, DisconnectReasonCode, MqttString, Packet, PacketId, ProtocolVersion,
    PubAck, PubAckReasonCode, PubComp, PubRec, PubRecReasonCode, PubRel, Publish, QoS, SubAck,
    SubAckReasonCode, Subscribe, SubscribeProperties, SubscriptionOptions, UnsubAck,
    UnsubAckReasonCode, Unsubscribe, UnsubscribeProperties, Will, decode,
};
use fulmar_session::{Config, Event, Role, Session, SessionState};

use crate::checks::{check_encoding, wire_version};

/// The maximum packet size the script's decoder uses.
pub const MAX_PACKET_SIZE: u32 = 1 << 20;

/// Packets the early-packet buffer of a server holds before `accept` (the session's
/// `MAX_EARLY_PACKETS`, not public): each may produce an event and an answer on `accept`.
const EARLY_PACKETS: usize = 64;

/// Slack for the per-step bounds: a CONNACK, a DISCONNECT, a PINGRESP, the events of a close.
const SLACK: usize = 16;

/// Answers the peer side of the script remembers.
const MAX_REMEMBERED: usize = 64;

/// Topic names the script publishes to and the peer uses (valid, no wildcards).
const TOPICS: [&str; 6] = ["a", "a/b", "sensors/1", "x/y/z", "$SYS/up", "a/b/c/d/e/f"];

/// Topic filters the script subscribes to.
const FILTERS: [&str; 6] = ["a", "a/+", "#", "sensors/#", "+/+/+", "$share/g/a"];

/// The step opcodes (opcode byte modulo 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// `len`, then `len` raw bytes from the peer into the decoder.
    Raw = 0,
    /// `kind` and up to four argument bytes: a packet from the peer, built and encoded,
    /// then fed through the decoder (see [`peer_packet`]).
    Peer = 1,
    /// `k`: the peer answers the `k`-th (modulo) remembered packet the session sent that
    /// expects an answer (255: all of them, in order).
    Respond = 2,
    /// `d`: time advances by `d * 100 ms` (`d < 128`) or `(d - 128) * 10 s`, then
    /// `handle_timeout`.
    Time = 3,
    /// Time advances to `poll_timeout` (if any), then `handle_timeout`.
    NextDeadline = 4,
    /// `connection_lost`; a server session is replaced by a new one for the next network
    /// connection, and its `session_state` is kept for `accept`.
    Lost = 5,
    /// `flags`: client `connect` (see [`State::connect`]).
    Connect = 6,
    /// `flags`, `size`: `publish`.
    Publish = 7,
    /// `flags`: client `subscribe`.
    Subscribe = 8,
    /// `flags`: client `unsubscribe`.
    Unsubscribe = 9,
    /// `flags`: `disconnect`.
    Disconnect = 10,
    /// `k`: `ack` of the `k`-th (modulo) delivered, unacknowledged message (manual acks).
    Ack = 11,
    /// `flags`: server `accept` (bit 0: with the kept session state, bit 1: with an
    /// Assigned Client Identifier).
    Accept = 12,
    /// `code`: server `reject`.
    Reject = 13,
    /// `flags`: server `suback`/`unsuback` of the oldest unanswered request (bit 0: one
    /// reason code too many, bit 1: refuse the filters).
    Answer = 14,
    /// `len`, then raw bytes, like [`Op::Raw`].
    Raw2 = 15,
}

impl Op {
    /// The opcode of byte `b`.
    #[must_use]
    pub fn from_byte(b: u8) -> Self {
        match b % 16 {
            0 => Self::Raw,
            1 => Self::Peer,
            2 => Self::Respond,
            3 => Self::Time,
            4 => Self::NextDeadline,
            5 => Self::Lost,
            6 => Self::Connect,
            7 => Self::Publish,
            8 => Self::Subscribe,
            9 => Self::Unsubscribe,
            10 => Self::Disconnect,
            11 => Self::Ack,
            12 => Self::Accept,
            13 => Self::Reject,
            14 => Self::Answer,
            _ => Self::Raw2,
        }
    }
}

/// What one call of [`check_session`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionOutcome {
    /// Steps played.
    pub steps: usize,
    /// Packets fed to `handle_packet`.
    pub packets_in: usize,
    /// Packets drained from `poll_transmit`.
    pub packets_out: usize,
    /// Events drained from `poll_event`.
    pub events: usize,
    /// Connections established: a client's `Event::Connected`, a server's `accept`.
    pub connected: usize,
    /// Inputs the session refused: `handle_packet` errors and decode errors.
    pub violations: usize,
}

/// Reads bytes from the input; past the end every byte is 0.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// The [`Config`] that the first two bytes choose (see the module docs).
#[must_use]
pub fn config_of(b0: u8, b1: u8) -> Config {
    let pick16 = |sel: u8, values: [u16; 4]| values.get(usize::from(sel & 3)).copied();
    let pick = |sel: u8, values: [usize; 4]| values.get(usize::from(sel & 3)).copied();
    Config {
        receive_maximum: pick16(b0 >> 3, [1, 2, 3, 64])
            .and_then(NonZeroU16::new)
            .unwrap_or(NonZeroU16::MIN),
        topic_alias_maximum: pick16(b0 >> 5, [0, 1, 2, 16]).unwrap_or(0),
        outbound_topic_aliases: b0 & 0x80 == 0,
        manual_acks: b0 & 4 != 0,
        max_inflight: pick16(b1, [1, 2, 4, 256])
            .and_then(NonZeroU16::new)
            .unwrap_or(NonZeroU16::MIN),
        max_pending: pick(b1 >> 2, [0, 1, 4, 32]).unwrap_or(0),
        max_requests: pick(b1 >> 4, [0, 1, 2, 8]).unwrap_or(0),
        maximum_qos: if b1 & 0x40 != 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        },
        retain_available: b1 & 0x80 == 0,
        server_keep_alive: (b1 & 0x80 != 0).then_some(1),
        connect_timeout: Some(Duration::from_secs(10)),
        ping_timeout: Duration::from_secs(5),
        // A mount point: `a/b` goes out as `b`, `a` as it is; the peer's
        // Maximum Packet Size is checked on what is sent.
        strip_topic_prefix: (b1 & 0x30 == 0x30).then(|| "a/".into()),
        ..Config::default()
    }
}

fn id_of(b: u8) -> PacketId {
    PacketId::new(u16::from(b % 8) + 1).unwrap_or(PacketId::ONE)
}

fn qos_of(b: u8) -> QoS {
    match b % 3 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn topic_of(b: u8) -> MqttString {
    MqttString::from(
        TOPICS
            .get(usize::from(b) % TOPICS.len())
            .copied()
            .unwrap_or("a"),
    )
}

fn filters_of(b: u8) -> Vec<MqttString> {
    let n = usize::from(b % 3) + 1;
    (0..n)
        .map(|i| {
            let k = (usize::from(b >> 2) + i) % FILTERS.len();
            MqttString::from(FILTERS.get(k).copied().unwrap_or("a"))
        })
        .collect()
}

/// A packet of the session that the peer is expected to answer.
#[derive(Clone, Copy, Debug)]
enum Expects {
    /// CONNECT: a CONNACK (Session Present unless Clean Start).
    ConnAck { clean_start: bool },
    /// PUBLISH QoS 1: PUBACK.
    PubAck(PacketId),
    /// PUBLISH QoS 2: PUBREC.
    PubRec(PacketId),
    /// PUBREC: PUBREL.
    PubRel(PacketId),
    /// PUBREL: PUBCOMP.
    PubComp(PacketId),
    /// SUBSCRIBE with this many filters: SUBACK.
    SubAck(PacketId, usize),
    /// UNSUBSCRIBE with this many filters: UNSUBACK.
    UnsubAck(PacketId, usize),
    /// PINGREQ: PINGRESP.
    PingResp,
}

/// A SUBSCRIBE or UNSUBSCRIBE the server application has not answered yet.
#[derive(Clone, Copy, Debug)]
struct Request {
    packet_id: PacketId,
    filters: usize,
    subscribe: bool,
}

/// The script's world: the session, the clock, the peer's bytes, the application's lists.
struct State {
    config: Arc<Config>,
    session: Session,
    now: Instant,
    rx: BytesMut,
    outcome: SessionOutcome,
    /// The packets the peer may answer.
    expects: Vec<Expects>,
    /// Manual acks: delivered inbound messages the application has not acknowledged.
    unacked: Vec<(PacketId, QoS)>,
    /// Server: unanswered SUBSCRIBE/UNSUBSCRIBE requests.
    requests: Vec<Request>,
    /// Server: the state of the previous network connection, for `accept`.
    kept: Option<SessionState>,
    /// Packets the session sent on this network connection.
    sent_on_connection: usize,
    /// The session sent a DISCONNECT on this network connection.
    sent_disconnect: bool,
    /// The peer's Maximum Packet Size and Topic Alias Maximum on this connection (v5).
    peer_max_packet: Option<u32>,
    peer_alias_max: u16,
    /// `handle_packet` refused a packet since the last drain.
    violated: bool,
    /// A connection of the script ran MQTT 3.1.1: inbound QoS 2 identifiers it stored
    /// (no Receive Maximum there) may be carried into a 5.0 connection by a resumed
    /// session, so the 5.0 bound on them no longer holds.
    saw_v311: bool,
}

/// Plays the script `data` (see the module docs) and checks the session after every step.
/// Panics when a check fails.
pub fn check_session(data: &[u8]) -> SessionOutcome {
    let mut input = Reader { data };
    let b0 = input.byte();
    let b1 = input.byte();
    let config = Arc::new(config_of(b0, b1));
    let v5 = b0 & 2 != 0;
    #[allow(clippy::disallowed_methods)] // only differences of instants matter
    let now = Instant::now();
    let session = if b0 & 1 != 0 {
        Session::server(Arc::clone(&config), now)
    } else {
        Session::client(Config::clone(&config))
    };
    let mut state = State {
        config,
        session,
        now,
        rx: BytesMut::new(),
        outcome: SessionOutcome::default(),
        expects: Vec::new(),
        unacked: Vec::new(),
        requests: Vec::new(),
        kept: None,
        sent_on_connection: 0,
        sent_disconnect: false,
        peer_max_packet: None,
        peer_alias_max: 0,
        violated: false,
        saw_v311: false,
    };
    let version = if v5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    };
    // At most 256 steps: the work per input stays bounded.
    while !input.is_empty() && state.outcome.steps < 256 {
        state.outcome.steps += 1;
        state.step(&mut input, version);
        state.drain();
        state.nap();
    }
    state.outcome
}

impl State {
    /// A session with nothing to do goes to sleep and wakes again, as a
    /// broker's idle connection does: it must carry on exactly (the checks
    /// of the following steps run on the woken session).
    fn nap(&mut self) {
        if !self.session.can_be_dormant() {
            return;
        }
        let placeholder = Session::client(Config::default());
        let awake = std::mem::replace(&mut self.session, placeholder);
        let deadline = awake.poll_timeout();
        let connected = awake.is_connected();
        self.session = match awake.into_dormant() {
            Ok(dormant) => {
                assert_eq!(
                    dormant.poll_timeout(),
                    deadline,
                    "a dormant session moved its deadline"
                );
                assert_eq!(dormant.is_connected(), connected);
                dormant.wake()
            }
            Err(awake) => panic!(
                "can_be_dormant, but into_dormant refused: {:?}",
                awake.poll_timeout()
            ),
        };
        assert_eq!(
            self.session.poll_timeout(),
            deadline,
            "a woken session moved its deadline"
        );
        assert_eq!(self.session.is_connected(), connected);
    }

    fn is_server(&self) -> bool {
        self.session.role() == Role::Server
    }

    fn step(&mut self, input: &mut Reader<'_>, version: ProtocolVersion) {
        let now = self.now;
        match Op::from_byte(input.byte()) {
            Op::Raw | Op::Raw2 => {
                let len = usize::from(input.byte());
                let bytes = input.take(len);
                self.feed(bytes);
            }
            Op::Peer => {
                let args = [
                    input.byte(),
                    input.byte(),
                    input.byte(),
                    input.byte(),
                    input.byte(),
                ];
                let wire = self.session.protocol_version();
                if let Some(packet) = peer_packet(args, wire) {
                    self.send_peer(&packet, wire);
                }
            }
            Op::Respond => {
                let k = input.byte();
                self.respond(k);
            }
            Op::Time => {
                let d = input.byte();
                let step = if d < 128 {
                    Duration::from_millis(u64::from(d) * 100)
                } else {
                    Duration::from_secs(u64::from(d - 128) * 10)
                };
                self.now += step;
                self.session.handle_timeout(self.now);
            }
            Op::NextDeadline => {
                if let Some(at) = self.session.poll_timeout() {
                    self.now = self.now.max(at);
                }
                self.session.handle_timeout(self.now);
            }
            Op::Lost => self.lost(),
            Op::Connect => {
                let flags = input.byte();
                self.connect(flags, version);
            }
            Op::Publish => {
                let flags = input.byte();
                let size = input.byte();
                let mut publish = Publish::new(
                    topic_of(flags >> 4),
                    Bytes::from(vec![b'x'; usize::from(size) * 4]),
                );
                publish.qos = qos_of(flags);
                publish.retain = flags & 4 != 0;
                publish.properties.message_expiry_interval = match (flags >> 3) & 1 {
                    0 => None,
                    _ => Some(u32::from(size % 3)),
                };
                // Values the session owns and ignores.
                publish.dup = size & 1 != 0;
                publish.packet_id = Some(id_of(size));
                publish.properties.topic_alias = NonZeroU16::new(u16::from(size));
                let _ = self.session.publish(publish, now);
            }
            Op::Subscribe => {
                let flags = input.byte();
                let filters = filters_of(flags)
                    .into_iter()
                    .map(|f| (f, SubscriptionOptions::new(qos_of(flags >> 5))))
                    .collect();
                let _ = self
                    .session
                    .subscribe(filters, SubscribeProperties::default(), now);
            }
            Op::Unsubscribe => {
                let flags = input.byte();
                let _ = self.session.unsubscribe(
                    filters_of(flags),
                    UnsubscribeProperties::default(),
                    now,
                );
            }
            Op::Disconnect => {
                let flags = input.byte();
                let properties = DisconnectProperties {
                    session_expiry_interval: (flags & 1 != 0).then_some(60),
                    reason_string: (flags & 2 != 0).then(|| MqttString::from("bye")),
                    ..DisconnectProperties::default()
                };
                let code = if flags & 4 != 0 {
                    DisconnectReasonCode::DisconnectWithWillMessage
                } else {
                    DisconnectReasonCode::NormalDisconnection
                };
                let _ = self.session.disconnect(code, properties, now);
            }
            Op::Ack => {
                let k = usize::from(input.byte());
                if self.unacked.is_empty() {
                    // An unknown identifier: refused, nothing changes.
                    let _ = self.session.ack(id_of(u8::try_from(k).unwrap_or(0)));
                } else {
                    // `ack` takes the oldest unacknowledged message with this identifier:
                    // the application's list follows it (a peer that reuses an identifier
                    // for a QoS 1 and a QoS 2 message at once, against MQTT-2.2.1-3, makes
                    // the two indistinguishable to `ack`).
                    let id = self
                        .unacked
                        .get(k % self.unacked.len())
                        .map_or(PacketId::ONE, |(id, _)| *id);
                    if let Some(first) = self.unacked.iter().position(|(u, _)| *u == id) {
                        self.unacked.remove(first);
                    }
                    let _ = self.session.ack(id);
                }
            }
            Op::Accept => {
                let flags = input.byte();
                let properties = ConnAckProperties {
                    assigned_client_identifier: (flags & 2 != 0)
                        .then(|| MqttString::from("assigned")),
                    reason_string: (flags & 4 != 0).then(|| MqttString::from("welcome")),
                    ..ConnAckProperties::default()
                };
                let kept = if flags & 1 != 0 {
                    self.kept.clone()
                } else {
                    None
                };
                match self.session.accept(properties, kept, now) {
                    Ok(_) => self.outcome.connected += 1,
                    Err(fulmar_session::Error::Api(
                        fulmar_session::ApiError::InvalidSessionState(why),
                    )) => panic!("session_state gave a state accept refuses: {why}"),
                    Err(_) => {}
                }
            }
            Op::Reject => {
                let code = match input.byte() % 3 {
                    0 => ConnectReasonCode::NotAuthorized,
                    1 => ConnectReasonCode::BadUserNameOrPassword,
                    _ => ConnectReasonCode::QuotaExceeded,
                };
                let _ = self.session.reject(code, ConnAckProperties::default(), now);
            }
            Op::Answer => {
                let flags = input.byte();
                if self.requests.is_empty() {
                    let _ = self.session.suback(
                        id_of(flags),
                        vec![SubAckReasonCode::GrantedQoS0],
                        AckProperties::default(),
                    );
                    return;
                }
                let request = self.requests.remove(0);
                let n = request.filters + usize::from(flags & 1);
                let result = if request.subscribe {
                    let code = if flags & 2 != 0 {
                        SubAckReasonCode::NotAuthorized
                    } else {
                        SubAckReasonCode::GrantedQoS1
                    };
                    self.session
                        .suback(request.packet_id, vec![code; n], AckProperties::default())
                } else {
                    let code = if flags & 2 != 0 {
                        UnsubAckReasonCode::NoSubscriptionExisted
                    } else {
                        UnsubAckReasonCode::Success
                    };
                    self.session.unsuback(
                        request.packet_id,
                        vec![code; n],
                        AckProperties::default(),
                    )
                };
                if result.is_err() {
                    // A wrong count is refused; the request still waits.
                    self.requests.insert(0, request);
                }
            }
        }
    }

    /// Client `connect`. `flags`: bit 0 Clean Start 0, bit 1 the other protocol version,
    /// bits 2-3 keep alive (0, 1, 2, 60 s), bit 4 empty client identifier, bit 5 a Session
    /// Expiry Interval, bit 6 a will, bit 7 an Authentication Method.
    fn connect(&mut self, flags: u8, version: ProtocolVersion) {
        let version = match (flags & 2 != 0, version) {
            (false, v) => v,
            (true, ProtocolVersion::V5) => ProtocolVersion::V311,
            (true, _) => ProtocolVersion::V5,
        };
        let id = if flags & 0x10 != 0 { "" } else { "fuzz" };
        let mut connect = Connect::new(version, MqttString::from(id));
        connect.clean_start = flags & 1 == 0;
        connect.keep_alive = [0, 1, 2, 60]
            .get(usize::from((flags >> 2) & 3))
            .copied()
            .unwrap_or(0);
        if version == ProtocolVersion::V5 {
            connect.properties.session_expiry_interval = (flags & 0x20 != 0).then_some(300);
            connect.properties.authentication_method =
                (flags & 0x80 != 0).then(|| MqttString::from("SCRAM"));
        }
        if flags & 0x40 != 0 {
            let mut will = Will::new(topic_of(flags), Bytes::from_static(b"gone"));
            will.qos = qos_of(flags >> 3);
            connect.will = Some(will);
        }
        if self.session.connect(connect, self.now).is_ok() {
            self.new_connection();
        }
    }

    /// A new network connection: the peer's bytes and answers of the old one are gone.
    fn new_connection(&mut self) {
        self.rx.clear();
        self.expects.clear();
        self.unacked.clear();
        self.requests.clear();
        self.sent_on_connection = 0;
        self.sent_disconnect = false;
        self.peer_max_packet = None;
        self.peer_alias_max = 0;
    }

    fn lost(&mut self) {
        self.session.connection_lost(self.now);
        self.drain();
        assert!(
            self.session.is_closed(),
            "connection_lost leaves the session closed"
        );
        if self.is_server() {
            self.kept = Some(self.session.session_state(self.now));
            self.session = Session::server(Arc::clone(&self.config), self.now);
        }
        self.new_connection();
    }

    /// Encodes a peer's `packet` and feeds it through the decoder.
    fn send_peer(&mut self, packet: &Packet, version: ProtocolVersion) {
        let mut wire = BytesMut::new();
        // A packet that cannot be encoded in this version (AUTH under 3.1.1) is not sent.
        if packet
            .encode(wire_version(packet, version), &mut wire)
            .is_ok()
        {
            self.feed(&wire);
        }
    }

    /// The peer's bytes: decoded as the driver of fulmar-broker and fulmar-client do, a
    /// decode error reported with `handle_decode_error` (then nothing more is read).
    fn feed(&mut self, bytes: &[u8]) {
        self.rx.extend_from_slice(bytes);
        loop {
            let version = self.session.protocol_version();
            match decode(&mut self.rx, version, MAX_PACKET_SIZE) {
                Ok(None) => return,
                Ok(Some(packet)) => self.deliver(packet),
                Err(error) => {
                    self.outcome.violations += 1;
                    self.session.handle_decode_error(&error, self.now);
                    self.rx.clear();
                    self.drain();
                    return;
                }
            }
        }
    }

    /// One decoded packet into `handle_packet`, then drain.
    fn deliver(&mut self, packet: Packet) {
        self.outcome.packets_in += 1;
        // What the peer allows us to send, if the session takes this packet.
        let limits = match &packet {
            Packet::ConnAck(c) if !self.is_server() => Some((
                c.properties.maximum_packet_size,
                c.properties.topic_alias_maximum,
            )),
            Packet::Connect(c) if self.is_server() => Some((
                c.properties.maximum_packet_size,
                c.properties.topic_alias_maximum,
            )),
            _ => None,
        };
        let was_connected = self.session.is_connected();
        let awaiting_connect = self.is_server() && self.session.client_id().is_none();
        let result = self.session.handle_packet(packet, self.now);
        if let Some((max, aliases)) = limits {
            let accepted = if self.is_server() {
                awaiting_connect && result.is_ok()
            } else {
                !was_connected && self.session.is_connected()
            };
            if accepted && self.session.protocol_version() == ProtocolVersion::V5 {
                self.peer_max_packet = max.map(NonZeroU32::get);
                self.peer_alias_max = aliases.unwrap_or(0);
            }
        }
        if result.is_err() {
            self.outcome.violations += 1;
            self.violated = true;
        }
        self.drain();
    }

    /// The peer answers a remembered packet.
    fn respond(&mut self, k: u8) {
        if self.expects.is_empty() {
            return;
        }
        let chosen: Vec<Expects> = if k == 255 {
            std::mem::take(&mut self.expects)
        } else {
            vec![self.expects.remove(usize::from(k) % self.expects.len())]
        };
        let version = self.session.protocol_version();
        let v5 = version == ProtocolVersion::V5;
        for expects in chosen {
            let packet: Packet = match expects {
                Expects::ConnAck { clean_start } => {
                    let mut connack = ConnAck::new(!clean_start, ConnectReasonCode::Success);
                    if v5 {
                        connack.properties.receive_maximum = NonZeroU16::new(2);
                        connack.properties.topic_alias_maximum = Some(2);
                    }
                    connack.into()
                }
                Expects::PubAck(id) => PubAck::new(id).into(),
                Expects::PubRec(id) => PubRec::new(id).into(),
                Expects::PubRel(id) => PubRel::new(id).into(),
                Expects::PubComp(id) => PubComp::new(id).into(),
                Expects::SubAck(id, n) => {
                    SubAck::new(id, vec![SubAckReasonCode::GrantedQoS1; n]).into()
                }
                Expects::UnsubAck(id, n) => {
                    let codes = if v5 {
                        vec![UnsubAckReasonCode::Success; n]
                    } else {
                        Vec::new()
                    };
                    UnsubAck::new(id, codes).into()
                }
                Expects::PingResp => Packet::PingResp,
            };
            self.send_peer(&packet, version);
        }
    }

    /// Drains packets and events until both are empty, checking each, then the bounds.
    fn drain(&mut self) {
        let config = Arc::clone(&self.config);
        let (max_inflight, max_pending) =
            (usize::from(config.max_inflight.get()), config.max_pending);
        let receive_maximum = usize::from(config.receive_maximum.get());
        let step_bound =
            max_pending + 2 * max_inflight + config.max_requests + EARLY_PACKETS + SLACK;
        let (mut packets, mut events) = (0usize, 0usize);
        loop {
            while let Some(packet) = self.session.poll_transmit() {
                packets += 1;
                self.check_sent(&packet);
            }
            let mut any = false;
            while let Some(event) = self.session.poll_event() {
                any = true;
                events += 1;
                self.on_event(event);
            }
            if !any {
                break;
            }
        }
        self.outcome.packets_out += packets;
        self.outcome.events += events;
        assert!(
            packets <= step_bound,
            "{packets} packets from one input (bound {step_bound})"
        );
        assert!(
            events <= step_bound,
            "{events} events from one input (bound {step_bound})"
        );
        let s = &self.session;
        self.saw_v311 |= s.protocol_version() == ProtocolVersion::V311;
        assert!(
            s.pending_len() <= max_pending,
            "{} messages pending, max_pending {max_pending}",
            s.pending_len()
        );
        assert!(
            s.inflight_len() <= max_inflight,
            "{} messages in flight, max_inflight {max_inflight}",
            s.inflight_len()
        );
        assert!(
            s.send_window_used() <= s.send_window(),
            "{} PUBLISH unacknowledged on a send window of {}",
            s.send_window_used(),
            s.send_window()
        );
        // A client takes what its server sends beyond its Receive Maximum
        // (`check_receive_maximum`): bounded by the identifiers only.
        let holds_peer_to_it = s.role() == Role::Server;
        if !self.saw_v311 && holds_peer_to_it {
            assert!(
                s.incoming_qos2_len() <= receive_maximum,
                "{} inbound QoS 2 identifiers stored, receive_maximum {receive_maximum}",
                s.incoming_qos2_len()
            );
        }
        if s.protocol_version() == ProtocolVersion::V5 && holds_peer_to_it {
            assert!(
                self.unacked.len() <= receive_maximum,
                "{} inbound messages delivered and not acknowledged, receive_maximum {receive_maximum}",
                self.unacked.len()
            );
        }
        assert!(
            self.requests.len() <= config.max_requests,
            "{} requests wait for the application, max_requests {}",
            self.requests.len(),
            config.max_requests
        );
        if std::mem::take(&mut self.violated) {
            assert!(
                s.is_closed(),
                "a refused packet closes the connection (error: {:?})",
                s.error()
            );
        }
        if s.error().is_some() {
            assert!(
                s.is_closed(),
                "an error closed the connection: {:?}",
                s.error()
            );
        }
        assert!(
            self.expects.len() <= MAX_REMEMBERED,
            "the script remembers too much"
        );
    }

    /// The checks on one packet the session hands out.
    fn check_sent(&mut self, packet: &Packet) {
        let version = wire_version(packet, self.session.protocol_version());
        let mut wire = BytesMut::new();
        if let Err(e) = packet.encode(version, &mut wire) {
            panic!("the session handed out a packet that does not encode: {e}\n{packet:?}");
        }
        check_encoding(&wire, version);
        let server = self.is_server();
        if self.sent_on_connection == 0 {
            // MQTT-3.1.0-1 (client), MQTT-3.2.0-1 (server).
            let ok = match packet {
                Packet::Connect(_) => !server,
                Packet::ConnAck(_) => server,
                _ => false,
            };
            assert!(ok, "first packet of a connection: {packet:?}");
        }
        // MQTT-3.14.4-1: nothing after DISCONNECT.
        assert!(
            !self.sent_disconnect,
            "a packet after DISCONNECT: {packet:?}"
        );
        self.sent_on_connection += 1;
        let expects = match packet {
            Packet::Disconnect(_) => {
                self.sent_disconnect = true;
                None
            }
            Packet::Connect(c) => Some(Expects::ConnAck {
                clean_start: c.clean_start,
            }),
            Packet::Publish(p) => {
                // MQTT-2.2.1-2.
                assert_eq!(
                    p.qos == QoS::AtMostOnce,
                    p.packet_id.is_none(),
                    "PUBLISH QoS and packet identifier disagree"
                );
                assert!(
                    !p.topic.is_empty() || p.properties.topic_alias.is_some(),
                    "PUBLISH with neither topic nor alias"
                );
                if version == ProtocolVersion::V5 {
                    if let Some(max) = self.peer_max_packet {
                        let len = wire.len();
                        assert!(
                            u64::try_from(len).unwrap_or(u64::MAX) <= u64::from(max),
                            "a {len}-byte PUBLISH over the peer's maximum packet size {max}"
                        );
                    }
                    if let Some(alias) = p.properties.topic_alias {
                        assert!(
                            alias.get() <= self.peer_alias_max,
                            "topic alias {alias} above the peer's maximum {}",
                            self.peer_alias_max
                        );
                    }
                }
                match (p.qos, p.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => Some(Expects::PubAck(id)),
                    (QoS::ExactlyOnce, Some(id)) => Some(Expects::PubRec(id)),
                    _ => None,
                }
            }
            Packet::PubRec(r) => Some(Expects::PubRel(r.packet_id)),
            Packet::PubRel(r) => Some(Expects::PubComp(r.packet_id)),
            Packet::Subscribe(s) => Some(Expects::SubAck(s.packet_id, s.filters.len())),
            Packet::Unsubscribe(u) => Some(Expects::UnsubAck(u.packet_id, u.filters.len())),
            Packet::PingReq => Some(Expects::PingResp),
            _ => None,
        };
        if let Some(e) = expects {
            if self.expects.len() >= MAX_REMEMBERED {
                self.expects.remove(0);
            }
            self.expects.push(e);
        }
    }

    /// What the application does with an event.
    fn on_event(&mut self, event: Event) {
        match event {
            Event::Message(p) if self.config.manual_acks => {
                if let (QoS::AtLeastOnce | QoS::ExactlyOnce, Some(id)) = (p.qos, p.packet_id) {
                    assert!(
                        !self.unacked.contains(&(id, p.qos)),
                        "{:?} message {id} delivered again before it was acknowledged",
                        p.qos
                    );
                    self.unacked.push((id, p.qos));
                }
            }
            Event::Subscribe(s) => self.requests.push(Request {
                packet_id: s.packet_id,
                filters: s.filters.len(),
                subscribe: true,
            }),
            Event::Unsubscribe(u) => self.requests.push(Request {
                packet_id: u.packet_id,
                filters: u.filters.len(),
                subscribe: false,
            }),
            Event::Connected(_) => self.outcome.connected += 1,
            _ => {}
        }
    }
}

/// A packet from the peer, valid for `version`, built from `args[0]` (the kind, modulo 15)
/// and the argument bytes. `None` for a kind this role's peer would not build.
#[must_use]
pub fn peer_packet(args: [u8; 5], version: ProtocolVersion) -> Option<Packet> {
    let [kind, a, b, c, d] = args;
    let v5 = version == ProtocolVersion::V5;
    let id = id_of(b);
    Some(match kind % 15 {
        // CONNECT. a: bit 0 MQTT 5.0, bit 1 Clean Start 0, bits 2-3 keep alive (0, 1, 2,
        // 60), bit 4 empty client identifier, bit 5 a will of QoS (c), bit 6 Session Expiry,
        // bit 7 Authentication Method. b: Receive Maximum (0: none), c: Topic Alias Maximum
        // (low bits), d: Maximum Packet Size (0: none, else 16 * d).
        0 => {
            let version = if a & 1 != 0 {
                ProtocolVersion::V5
            } else {
                ProtocolVersion::V311
            };
            let client_id = if a & 0x10 != 0 { "" } else { "peer" };
            let mut connect = Connect::new(version, MqttString::from(client_id));
            connect.clean_start = a & 2 == 0;
            connect.keep_alive = [0, 1, 2, 60]
                .get(usize::from((a >> 2) & 3))
                .copied()
                .unwrap_or(0);
            if a & 0x20 != 0 {
                let mut will = Will::new(MqttString::from("will"), Bytes::from_static(b"w"));
                will.qos = qos_of(c >> 4);
                will.retain = c & 0x80 != 0;
                connect.will = Some(will);
            }
            if version == ProtocolVersion::V5 {
                let p = &mut connect.properties;
                p.session_expiry_interval = (a & 0x40 != 0).then_some(60);
                p.authentication_method = (a & 0x80 != 0).then(|| MqttString::from("SCRAM"));
                p.receive_maximum = NonZeroU16::new(u16::from(b % 5));
                p.topic_alias_maximum = Some(u16::from(c & 3));
                p.maximum_packet_size = NonZeroU32::new(u32::from(d) * 16);
            }
            connect.into()
        }
        // CONNACK. a: bit 0 Session Present, bit 1 refused, bits 2-3 Receive Maximum (none,
        // 1, 2, 3), bits 4-5 Maximum QoS (none, 0, 1, none), bit 6 Retain Available 0, bit 7
        // Server Keep Alive 1. b: Topic Alias Maximum (low bits), c: Maximum Packet Size
        // (0: none, else 8 * c), d: bit 0 Assigned Client Identifier.
        1 => {
            let code = if a & 2 != 0 {
                ConnectReasonCode::NotAuthorized
            } else {
                ConnectReasonCode::Success
            };
            let mut connack = ConnAck::new(a & 1 != 0 && a & 2 == 0, code);
            if v5 {
                let p = &mut connack.properties;
                p.receive_maximum = NonZeroU16::new(u16::from((a >> 2) & 3));
                p.maximum_qos = match (a >> 4) & 3 {
                    1 => Some(QoS::AtMostOnce),
                    2 => Some(QoS::AtLeastOnce),
                    _ => None,
                };
                p.retain_available = (a & 0x40 != 0).then_some(false);
                p.server_keep_alive = (a & 0x80 != 0).then_some(1);
                p.topic_alias_maximum = Some(u16::from(b & 3));
                p.maximum_packet_size = NonZeroU32::new(u32::from(c) * 8);
                p.assigned_client_identifier = (d & 1 != 0).then(|| MqttString::from("assigned"));
            }
            connack.into()
        }
        // PUBLISH. a: bits 0-1 QoS (3: QoS 0), bit 2 retain, bit 3 DUP, bits 4-6 topic (7:
        // empty), bit 7 Message Expiry 1 s. b: packet identifier. c: bits 0-2 Topic Alias
        // (0: none), bit 3 a Subscription Identifier. d: payload size.
        2 => {
            let topic = if (a >> 4) & 7 == 7 {
                MqttString::new()
            } else {
                topic_of((a >> 4) & 7)
            };
            let mut publish = Publish::new(topic, Bytes::from(vec![b'p'; usize::from(d)]));
            publish.qos = qos_of(a & 3);
            publish.retain = a & 4 != 0;
            publish.dup = a & 8 != 0 && publish.qos != QoS::AtMostOnce;
            publish.packet_id = (publish.qos != QoS::AtMostOnce).then_some(id);
            if v5 {
                let p = &mut publish.properties;
                p.topic_alias = NonZeroU16::new(u16::from(c & 7));
                p.message_expiry_interval = (a & 0x80 != 0).then_some(1);
                if c & 8 != 0 {
                    p.subscription_identifiers = NonZeroU32::new(7).into_iter().collect();
                }
            }
            publish.into()
        }
        // Acknowledgements. b: packet identifier, a: bit 0 an error reason code (5.0).
        3 => {
            let mut ack = PubAck::new(id);
            if v5 && a & 1 != 0 {
                ack.reason_code = PubAckReasonCode::NotAuthorized;
            }
            ack.into()
        }
        4 => {
            let mut rec = PubRec::new(id);
            if v5 && a & 1 != 0 {
                rec.reason_code = PubRecReasonCode::QuotaExceeded;
            }
            rec.into()
        }
        5 => PubRel::new(id).into(),
        6 => PubComp::new(id).into(),
        // SUBSCRIBE / UNSUBSCRIBE: b packet identifier, a the filters.
        7 => Subscribe::new(
            id,
            filters_of(a)
                .into_iter()
                .map(|f| (f, SubscriptionOptions::new(qos_of(c))))
                .collect(),
        )
        .into(),
        8 => {
            let n = usize::from(a % 4);
            SubAck::new(id, vec![SubAckReasonCode::GrantedQoS2; n.max(1)]).into()
        }
        9 => Unsubscribe::new(id, filters_of(a)).into(),
        10 => {
            let n = if v5 { usize::from(a % 4).max(1) } else { 0 };
            UnsubAck::new(id, vec![UnsubAckReasonCode::Success; n]).into()
        }
        11 => Packet::PingReq,
        12 => Packet::PingResp,
        // DISCONNECT. a: bit 0 an error, bit 1 Session Expiry Interval.
        13 => {
            let mut disconnect = Disconnect::new(if a & 1 != 0 {
                DisconnectReasonCode::ProtocolError
            } else {
                DisconnectReasonCode::NormalDisconnection
            });
            if v5 && a & 2 != 0 {
                disconnect.properties.session_expiry_interval = Some(30);
            }
            disconnect.into()
        }
        _ => {
            if !v5 {
                return None;
            }
            let mut auth = Auth::default();
            auth.properties.authentication_method = Some(MqttString::from("SCRAM"));
            auth.into()
        }
    })
}
