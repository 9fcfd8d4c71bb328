//! The checks of the `broker` fuzz target, shared with the corpus replay test of
//! fulmar-broker (`crates/fulmar-broker/tests/fuzz_corpus.rs` includes this file and
//! `checks.rs` with `#[path]`). Only the public API of fulmar-broker and fulmar-codec,
//! tokio, `bytes`, `async-trait`, std and `crate::checks` may be used here.
//!
//! [`check_broker`] starts a broker without listeners on a single-threaded tokio runtime and
//! plays a script on it: up to four client connections, each an in-memory pipe served with
//! `BrokerHandle::serve_connection`, receive raw bytes, ready-made packets (so that the
//! fuzzer reaches the broker's routing, sessions, wills and retained messages without
//! having to find valid encodings first), and closes; the application publishes,
//! subscribes and takes sessions in process, and turns the rule of the broker's
//! authorizer (nothing under `a/`) on and off, each time having the broker check every
//! subscription again (`reauthorize`; a resumed session is checked too). Everything the broker writes to each
//! connection is recorded. At the end every connection is closed by its client, and:
//!
//! - nothing panics (a panic inside a broker task is reported by the replay test's hook);
//! - every served connection ends once its client has closed, and the broker shuts down,
//!   each within [`END_GUARD`] (no stall); the fuzz target ([`check_broker_within`]) also
//!   holds every step, the end of every connection and the shutdown to [`STEP_BUDGET`]:
//!   no step waits on a broker timeout (the handover of a session, a lingering close)
//!   except the back-pressure timeout, which the script sets to 20 ms;
//! - the broker counts no connection and no connected client afterwards, and still works: a
//!   new client connects, subscribes and gets a message the application publishes, as does
//!   an in-process subscription;
//! - what the broker wrote to a client that sent a valid CONNECT decodes, in that CONNECT's
//!   protocol version, into whole packets that are canonical encodings (`checks.rs`); the
//!   first is CONNACK (MQTT-3.2.0-1), a refusing CONNACK is the last packet (v3:
//!   MQTT-3.2.2-5, v5: MQTT-3.2.2-7), there is one CONNACK, nothing follows a DISCONNECT
//!   (v5: MQTT-3.14.4-1), and only packets a server may send appear (no DISCONNECT or AUTH
//!   under 3.1.1);
//! - under 5.0 every packet fits the client's Maximum Packet Size (MQTT-3.1.2-24), a Topic
//!   Alias is within the client's Topic Alias Maximum (MQTT-3.1.2-26, MQTT-3.1.2-27), and the
//!   QoS 1/2 PUBLISH packets (resent ones included) are at most the client's Receive Maximum
//!   plus the acknowledgements the client sent (MQTT-3.3.4-9);
//! - to a client whose first bytes are no valid CONNECT, the broker writes at most one
//!   refusing CONNACK (in either version) and nothing else.
//!
//! # Input format
//!
//! Byte 0 chooses the broker's limits (missing bytes read as 0): bits 0-1
//! `max_queued_messages` (1000, 1, 3, 16); bit 2 a Maximum Packet Size of 128 bytes; bit 3
//! the back-pressure overload policy; bit 4 Receive Maximum 2 and Topic Alias Maximum 2;
//! bit 5 two subscriptions per client, two retained messages, three topic levels; bit 6
//! Maximum QoS 1 and no wildcard, shared or identified subscriptions; bit 7 two
//! connections and 256 queued bytes per session.
//!
//! Then steps, each an opcode byte: bits 0-1 the connection slot, bits 2-4 the step (see
//! [`Step`]), and its arguments.

use std::num::{NonZeroU16, NonZeroU32};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fulmar_broker::{
    Authorizer, Broker, BrokerHandle, ClientInfo, Limits, OverloadPolicy, ServedConnection,
    Subscription,
};
use fulmar_codec::{
    Auth, AuthReasonCode, Connect, Disconnect, DisconnectReasonCode, MqttString, Packet, PacketId,
    ProtocolVersion, PubAck, PubComp, PubRec, PubRel, Publish, QoS, RetainHandling, Subscribe,
    SubscriptionOptions, Unsubscribe, Will, decode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, WriteHalf};
use tokio::task::JoinHandle;

use crate::checks::check_encoding;
use crate::script::{Cursor, qos, settle};

/// Steps played at most; the rest of a longer input is ignored.
pub const MAX_STEPS: usize = 256;

/// The most a connection's output is recorded (and checked); more is read and dropped.
pub const OUTPUT_CAP: usize = 1 << 20;

/// How long a connection may take to end after its client closed, and the broker to shut
/// down: far more than either needs, so that reaching it means a stall.
pub const END_GUARD: Duration = Duration::from_secs(20);

/// What the fuzz target allows one step, the end of one connection or the shutdown: above
/// every timer of the script's broker that a step may legitimately wait on (the 20 ms
/// back-pressure timeout, a few times), below the ones it must not (a session's handover,
/// 3 s; a lingering close, 2 s). The corpus replay in CI, on a loaded machine, uses
/// [`END_GUARD`] instead.
pub const STEP_BUDGET: Duration = Duration::from_millis(1500);

/// The pipe of one connection holds this much in each direction.
const PIPE: usize = 64 * 1024;

/// Topic names of ready-made PUBLISH packets and of in-process publishes.
const TOPICS: [&str; 4] = ["a/b", "a/b/c", "will/a", "x"];

/// Topic filters of ready-made SUBSCRIBE/UNSUBSCRIBE packets and in-process subscriptions.
const FILTERS: [&str; 8] = [
    "#",
    "a/+",
    "a/b",
    "$share/g/a/#",
    "will/#",
    "$SYS/#",
    "+/+",
    "a/b/c",
];

/// Client identifiers of ready-made CONNECT packets.
const CLIENT_IDS: [&str; 4] = ["a", "b", "", "a"];

/// The steps of a script (bits 2-4 of the opcode byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    /// A length byte and that many raw bytes for the slot's connection (opened first if
    /// the slot has none).
    Raw = 0,
    /// The same as `Raw` (raw bytes get three of the eight opcodes).
    Raw2 = 1,
    /// The same as `Raw`.
    Raw3 = 2,
    /// A ready-made packet for the slot's connection: a kind byte and an argument byte
    /// (see [`packet`]).
    Packet = 3,
    /// The client of the slot's connection closes it; the slot is free for a new one.
    Close = 4,
    /// Lets the broker's tasks run until they have nothing to do.
    Settle = 5,
    /// The application: a byte choosing an in-process publish, subscribe, read of the
    /// in-process subscriptions or end of one.
    Local = 6,
    /// The application takes a session away (`take_session`) or asks for one
    /// (`has_session`), or turns the authorizer's rule on or off and has the broker
    /// check every subscription again (`reauthorize`): a byte choosing which.
    Session = 7,
}

impl Step {
    fn of(op: u8) -> Self {
        match (op >> 2) & 7 {
            0 => Self::Raw,
            1 => Self::Raw2,
            2 => Self::Raw3,
            3 => Self::Packet,
            4 => Self::Close,
            5 => Self::Settle,
            6 => Self::Local,
            _ => Self::Session,
        }
    }
}

/// What one call of [`check_broker`] saw, for the replay test's totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BrokerOutcome {
    /// Steps played.
    pub steps: usize,
    /// Connections served.
    pub connections: usize,
    /// Connections whose CONNECT the broker accepted.
    pub accepted: usize,
    /// Packets the broker wrote, over all connections.
    pub packets_out: usize,
    /// PUBLISH packets among them.
    pub publishes_out: usize,
}

/// One served connection, from the client's side.
struct Conn {
    /// Every byte the client wrote.
    input: Vec<u8>,
    /// The client's writing half; `None` once closed (or once the broker stopped reading).
    writer: Option<WriteHalf<DuplexStream>>,
    /// Reads everything the broker writes, until the broker closes: (recorded bytes,
    /// whether more was dropped).
    reader: JoinHandle<(Vec<u8>, bool)>,
    served: ServedConnection,
    /// The version of the ready-made packets: the last ready-made CONNECT's.
    version: ProtocolVersion,
}

/// Plays `data` on a broker (see the module docs) and checks it, allowing each step up to
/// [`END_GUARD`]. Panics when a check fails.
pub fn check_broker(data: &[u8]) -> BrokerOutcome {
    check_broker_within(data, END_GUARD)
}

/// [`check_broker`], allowing each step, the end of each connection and the shutdown up to
/// `budget` of real time.
pub fn check_broker_within(data: &[u8], budget: Duration) -> BrokerOutcome {
    crate::script::runtime().block_on(play(data, budget))
}

/// The broker's limits from the setup byte.
fn limits(setup: u8) -> Limits {
    let mut limits = Limits::default();
    limits.max_queued_messages = [1000, 1, 3, 16][usize::from(setup & 3)];
    if setup & 0x04 != 0 {
        limits.max_packet_size = NonZeroU32::new(128).unwrap_or(NonZeroU32::MIN);
    }
    if setup & 0x08 != 0 {
        limits.overload_policy = OverloadPolicy::Backpressure;
    }
    if setup & 0x10 != 0 {
        limits.receive_maximum = NonZeroU16::new(2).unwrap_or(NonZeroU16::MIN);
        limits.topic_alias_maximum = 2;
    }
    if setup & 0x20 != 0 {
        limits.max_subscriptions_per_client = 2;
        limits.max_retained_messages = 2;
        limits.max_topic_levels = 3;
    }
    if setup & 0x40 != 0 {
        limits.maximum_qos = QoS::AtLeastOnce;
        limits.wildcard_subscription_available = false;
        limits.shared_subscription_available = false;
        limits.subscription_identifiers_available = false;
    }
    if setup & 0x80 != 0 {
        limits.max_connections = 2;
        limits.max_queued_bytes = 256;
    }
    // Nothing waits on real time longer than a script needs.
    limits.backpressure_timeout = Duration::from_millis(20);
    limits.write_timeout = Duration::from_secs(2);
    limits.connect_timeout = Duration::from_secs(5);
    limits.hibernate_after = None;
    limits.sys_interval = None;
    limits
}

/// The script's authorizer: while `strict` holds (a `Session` step sets it), nobody may
/// publish to or subscribe to anything under `a/`. Its subscriptions are checked again
/// when a session is resumed and on `reauthorize`.
struct Switch(Arc<AtomicBool>);

#[async_trait::async_trait]
impl Authorizer for Switch {
    async fn authorize_publish(&self, _client: &ClientInfo, topic: &str) -> bool {
        !(self.0.load(Ordering::Relaxed) && topic.contains("a/"))
    }

    async fn authorize_subscribe(&self, _client: &ClientInfo, filter: &str) -> bool {
        !(self.0.load(Ordering::Relaxed) && filter.contains("a/"))
    }
}

async fn play(data: &[u8], budget: Duration) -> BrokerOutcome {
    let mut input = Cursor(data);
    let setup = input.byte();
    let strict = Arc::new(AtomicBool::new(false));
    let builder = Broker::builder()
        .limits(limits(setup))
        .authorizer(Switch(strict.clone()));
    let broker = match builder.start().await {
        Ok(broker) => broker,
        Err(e) => panic!("the broker does not start: {e}"),
    };
    let mut outcome = BrokerOutcome::default();
    let mut conns: Vec<Conn> = Vec::new();
    let mut slots: [Option<usize>; 4] = [None; 4];
    let mut locals: Vec<Subscription> = Vec::new();

    while !input.is_empty() && outcome.steps < MAX_STEPS {
        outcome.steps += 1;
        let started = std::time::Instant::now();
        let op = input.byte();
        let slot = usize::from(op & 3);
        match Step::of(op) {
            Step::Raw | Step::Raw2 | Step::Raw3 => {
                let len = usize::from(input.byte());
                let bytes = input.take(len).to_vec();
                let conn = open(&broker, &mut conns, &mut slots, slot);
                write(conn, &bytes).await;
            }
            Step::Packet => {
                let kind = input.byte();
                let arg = input.byte();
                let conn = open(&broker, &mut conns, &mut slots, slot);
                if let Some(packet) = packet(kind, arg) {
                    let version = match &packet {
                        Packet::Connect(c) => c.protocol_version,
                        _ => conn.version,
                    };
                    let mut wire = BytesMut::new();
                    if packet.encode(version, &mut wire).is_ok() {
                        conn.version = version;
                        write(conn, &wire).await;
                    }
                }
            }
            Step::Close => {
                if let Some(i) = slots[slot].take()
                    && let Some(conn) = conns.get_mut(i)
                {
                    close(conn).await;
                }
            }
            Step::Settle => settle(64).await,
            Step::Local => local(&broker, &mut locals, input.byte()).await,
            Step::Session => {
                let b = input.byte();
                let id = CLIENT_IDS[usize::from(b >> 1) & 3];
                if b & 0x08 != 0 {
                    strict.store(b & 0x10 != 0, Ordering::Relaxed);
                    let checked = tokio::time::timeout(budget, broker.reauthorize()).await;
                    assert!(checked.is_ok(), "reauthorize stalled");
                } else if b & 1 == 0 {
                    let taken = tokio::time::timeout(budget, broker.take_session(id)).await;
                    assert!(taken.is_ok(), "take_session({id:?}) stalled");
                } else {
                    let _ = broker.has_session(id);
                }
            }
        }
        settle(4).await;
        let took = started.elapsed();
        assert!(
            took <= budget,
            "step {} ({op:#04x}) took {took:?}",
            outcome.steps
        );
    }

    // The end: the application lets go, every client closes.
    locals.clear();
    for conn in &mut conns {
        close(conn).await;
    }
    outcome.connections = conns.len();
    for (i, conn) in conns.into_iter().enumerate() {
        let ended = tokio::time::timeout(budget, conn.served).await;
        assert!(
            ended.is_ok(),
            "connection {i} did not end after its client closed"
        );
        let output = match tokio::time::timeout(budget, conn.reader).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => panic!("the reader of connection {i} failed: {e}"),
            Err(_) => panic!("the broker did not close connection {i}"),
        };
        let seen = check_conversation(&conn.input, &output.0, output.1);
        outcome.accepted += usize::from(seen.accepted);
        outcome.packets_out += seen.packets;
        outcome.publishes_out += seen.publishes;
    }
    let stats = broker.stats();
    assert_eq!(stats.connections, 0, "connections counted after all ended");
    assert_eq!(
        stats.clients_connected, 0,
        "clients counted after all ended"
    );
    if tokio::time::timeout(budget, probe(&broker)).await.is_err() {
        panic!("the broker no longer routes a message after the script");
    }
    let stopped = tokio::time::timeout(budget, broker.shutdown()).await;
    assert!(stopped.is_ok(), "the broker did not shut down");
    outcome
}

/// Checks that the broker still works after the script: a new client connects and
/// subscribes, and gets a message the application publishes, as does an in-process
/// subscription.
async fn probe(broker: &BrokerHandle) {
    let (mut client, server) = tokio::io::duplex(PIPE);
    let served = broker.serve_connection(server, std::net::SocketAddr::from(([127, 0, 0, 1], 1)));
    let mut wire = BytesMut::new();
    let mut connect = Connect::new(ProtocolVersion::V5, MqttString::from("probe"));
    connect.clean_start = true;
    let subscribe = Subscribe::new(
        PacketId::ONE,
        vec![(
            MqttString::from("probe/1"),
            SubscriptionOptions::new(QoS::AtLeastOnce),
        )],
    );
    for packet in [Packet::from(connect), Packet::from(subscribe)] {
        if let Err(e) = packet.encode(ProtocolVersion::V5, &mut wire) {
            panic!("the probe's packets encode: {e}");
        }
    }
    assert!(client.write_all(&wire).await.is_ok(), "the probe connects");
    let mut local = match broker.subscribe("probe/1") {
        Ok(sub) => sub,
        Err(e) => panic!("the application cannot subscribe after the script: {e}"),
    };
    let mut buf = BytesMut::new();
    let mut published = false;
    loop {
        match decode(&mut buf, ProtocolVersion::V5, u32::MAX) {
            Ok(Some(Packet::ConnAck(ack))) => {
                assert!(!ack.reason_code.is_error(), "the probe is refused: {ack:?}");
            }
            Ok(Some(Packet::SubAck(_))) if !published => {
                let sent = broker.publish("probe/1", "alive", QoS::AtLeastOnce, false);
                assert!(sent.is_ok(), "the application cannot publish: {sent:?}");
                published = true;
            }
            Ok(Some(Packet::Publish(p))) if p.topic.as_str() == "probe/1" => break,
            Ok(Some(other)) => panic!("the probe got {other:?}"),
            Ok(None) => match client.read_buf(&mut buf).await {
                Ok(0) | Err(_) => panic!("the broker closed the probe"),
                Ok(_) => {}
            },
            Err(e) => panic!("the probe's input does not decode: {e}"),
        }
    }
    assert!(
        local.recv().await.is_some(),
        "the in-process probe got nothing"
    );
    drop(client);
    served.await;
}

/// The connection of `slot`, opened (served) first if there is none.
fn open<'c>(
    broker: &BrokerHandle,
    conns: &'c mut Vec<Conn>,
    slots: &mut [Option<usize>; 4],
    slot: usize,
) -> &'c mut Conn {
    let i = match slots[slot] {
        Some(i) if i < conns.len() => i,
        _ => {
            let (client, server) = tokio::io::duplex(PIPE);
            let port = u16::try_from(50_000 + conns.len()).unwrap_or(0);
            let peer = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let served = broker.serve_connection(server, peer);
            let (mut read, writer) = tokio::io::split(client);
            let reader = tokio::spawn(async move {
                let mut output = Vec::new();
                let mut dropped = false;
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match read.read(&mut buf).await {
                        Ok(0) | Err(_) => return (output, dropped),
                        Ok(n) => {
                            let fresh = buf.get(..n).unwrap_or_default();
                            if dropped || output.len() + n > OUTPUT_CAP {
                                dropped = true;
                            } else {
                                output.extend_from_slice(fresh);
                            }
                        }
                    }
                }
            });
            conns.push(Conn {
                input: Vec::new(),
                writer: Some(writer),
                reader,
                served,
                version: ProtocolVersion::V5,
            });
            slots[slot] = Some(conns.len() - 1);
            conns.len() - 1
        }
    };
    match conns.get_mut(i) {
        Some(conn) => conn,
        None => panic!("slot {slot} names connection {i}, which does not exist"),
    }
}

/// Writes `bytes` from the client of `conn`. A broker that stopped reading (it closed the
/// connection) ends the client's writing.
async fn write(conn: &mut Conn, bytes: &[u8]) {
    let Some(writer) = conn.writer.as_mut() else {
        return;
    };
    // The pipe holds more than any script writes, so this never waits for the broker.
    match tokio::time::timeout(END_GUARD, writer.write_all(bytes)).await {
        Ok(Ok(())) => conn.input.extend_from_slice(bytes),
        Ok(Err(_)) => conn.writer = None,
        Err(_) => panic!(
            "a write of {} bytes into an empty pipe stalled",
            bytes.len()
        ),
    }
}

/// The client closes its side of `conn` (the broker reads the end of the stream).
async fn close(conn: &mut Conn) {
    if let Some(mut writer) = conn.writer.take() {
        let _ = writer.shutdown().await;
    }
}

/// The application's in-process step chosen by `b`.
async fn local(broker: &BrokerHandle, locals: &mut Vec<Subscription>, b: u8) {
    match b & 3 {
        0 => {
            let topic = TOPICS[usize::from(b >> 2) & 3];
            let qos = qos(b >> 4);
            let payload = if b & 0x80 != 0 {
                Bytes::new()
            } else {
                Bytes::from_static(b"local")
            };
            let _ = broker.publish(topic, payload, qos, b & 0x40 != 0);
        }
        1 => {
            if locals.len() < 4
                && let Ok(sub) = broker.subscribe(FILTERS[usize::from(b >> 2) & 7])
            {
                locals.push(sub);
            }
        }
        2 => {
            for sub in locals.iter_mut() {
                for _ in 0..1000 {
                    match tokio::time::timeout(Duration::ZERO, sub.recv()).await {
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
        _ => {
            let _ = locals.pop();
        }
    }
}

fn id(b: u8) -> PacketId {
    PacketId::new(u16::from(b & 3) + 1).unwrap_or(PacketId::ONE)
}

/// The ready-made packet of a `Packet` step: `kind` picks the type, `arg` its fields.
/// `None` for a kind without a packet.
pub fn packet(kind: u8, arg: u8) -> Option<Packet> {
    let packet = match kind % 12 {
        0 => Packet::from(connect(arg)),
        1 => {
            let filter = FILTERS[usize::from(arg) & 7];
            let mut options = SubscriptionOptions::new(qos(arg >> 3));
            options.no_local = arg & 0x20 != 0 && !filter.starts_with("$share/");
            options.retain_as_published = arg & 0x40 != 0;
            if arg & 0x80 != 0 {
                options.retain_handling = RetainHandling::DoNotSend;
            }
            Packet::from(Subscribe::new(
                id(arg >> 3),
                vec![(MqttString::from(filter), options)],
            ))
        }
        2 => Packet::from(Unsubscribe::new(
            id(arg >> 3),
            vec![MqttString::from(FILTERS[usize::from(arg) & 7])],
        )),
        3 => Packet::from(publish(arg)),
        4 => Packet::from(PubAck::new(id(arg))),
        5 => Packet::from(PubRec::new(id(arg))),
        6 => Packet::from(PubRel::new(id(arg))),
        7 => Packet::from(PubComp::new(id(arg))),
        8 => Packet::PingReq,
        9 => {
            let mut disconnect = Disconnect::new(if arg & 1 != 0 {
                DisconnectReasonCode::DisconnectWithWillMessage
            } else {
                DisconnectReasonCode::NormalDisconnection
            });
            if arg & 2 != 0 {
                disconnect.properties.session_expiry_interval = Some(0);
            }
            Packet::from(disconnect)
        }
        10 => {
            let mut auth = Auth {
                reason_code: AuthReasonCode::ReAuthenticate,
                ..Auth::default()
            };
            auth.properties.authentication_method = Some(MqttString::from("m"));
            Packet::from(auth)
        }
        _ => return None,
    };
    Some(packet)
}

/// A CONNECT from `flags`: bit 0 MQTT 5.0 (else 3.1.1), bits 1-2 the client id, bit 3
/// clean start, bit 4 a QoS 1 retained will on `will/a`, bit 5 a Session Expiry Interval
/// of 60 s, bit 6 Receive Maximum 1, Topic Alias Maximum 1 and Maximum Packet Size 64, bit
/// 7 keep alive 1 s.
fn connect(flags: u8) -> Connect {
    let version = if flags & 1 != 0 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    };
    let mut c = Connect::new(
        version,
        MqttString::from(CLIENT_IDS[usize::from(flags >> 1) & 3]),
    );
    c.clean_start = flags & 0x08 != 0;
    c.keep_alive = if flags & 0x80 != 0 { 1 } else { 0 };
    if flags & 0x10 != 0 {
        c.will = Some(Will {
            topic: MqttString::from("will/a"),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Default::default(),
        });
    }
    if version == ProtocolVersion::V5 {
        if flags & 0x20 != 0 {
            c.properties.session_expiry_interval = Some(60);
        }
        if flags & 0x40 != 0 {
            c.properties.receive_maximum = Some(NonZeroU16::MIN);
            c.properties.topic_alias_maximum = Some(1);
            c.properties.maximum_packet_size = NonZeroU32::new(64);
        }
    }
    c
}

/// A PUBLISH from `flags`: bits 0-1 the topic, bits 2-3 QoS (3: QoS 0 with Topic Alias 1
/// and no topic name), bit 4 retain, bit 5 DUP (QoS 1/2), bit 6 an empty payload, bit 7
/// Topic Alias 1 with the topic name (5.0; a 3.1.1 encode refuses it and the step is
/// skipped).
fn publish(flags: u8) -> Publish {
    let alias_only = (flags >> 2) & 3 == 3;
    let topic = if alias_only {
        MqttString::new()
    } else {
        MqttString::from(TOPICS[usize::from(flags) & 3])
    };
    let payload = if flags & 0x40 != 0 {
        Bytes::new()
    } else {
        Bytes::from_static(b"payload")
    };
    let mut p = Publish::new(topic, payload);
    p.qos = qos(flags >> 2);
    p.retain = flags & 0x10 != 0;
    p.packet_id = (p.qos != QoS::AtMostOnce).then(|| id(flags >> 5));
    p.dup = flags & 0x20 != 0 && p.qos != QoS::AtMostOnce;
    if alias_only || flags & 0x80 != 0 {
        p.properties.topic_alias = Some(NonZeroU16::MIN);
    }
    p
}

/// What [`check_conversation`] saw on one connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct Conversation {
    /// The broker accepted the client's CONNECT.
    pub accepted: bool,
    /// Packets the broker wrote.
    pub packets: usize,
    /// PUBLISH packets among them.
    pub publishes: usize,
}

/// The CONNECT at the front of `input`, if it is a valid one.
fn first_connect(input: &[u8]) -> Option<Connect> {
    for version in [ProtocolVersion::V5, ProtocolVersion::V311] {
        let mut buf = BytesMut::from(input);
        if let Ok(Some(Packet::Connect(c))) = decode(&mut buf, version, u32::MAX) {
            return Some(*c);
        }
    }
    None
}

/// Splits `output` into packets of `version`; `Err` with the reason when it is not a
/// sequence of whole packets (a cut-off last packet is allowed when `truncated`).
fn packets(
    output: &[u8],
    version: ProtocolVersion,
    truncated: bool,
) -> Result<Vec<(usize, Packet)>, String> {
    let mut buf = BytesMut::from(output);
    let mut found = Vec::new();
    loop {
        let before = buf.len();
        match decode(&mut buf, version, u32::MAX) {
            Ok(Some(packet)) => found.push((before - buf.len(), packet)),
            Ok(None) if buf.is_empty() || truncated => return Ok(found),
            Ok(None) => return Err(format!("{} bytes of a packet cut off", buf.len())),
            Err(e) => return Err(format!("undecodable after {} packets: {e}", found.len())),
        }
    }
}

/// The acknowledgements in what the client sent after its CONNECT that free a place in
/// the broker's send window: PUBACK, PUBCOMP and PUBREC with an error code.
fn acks_sent(input: &[u8], version: ProtocolVersion) -> usize {
    let mut buf = BytesMut::from(input);
    let mut acks = 0;
    while let Ok(Some(packet)) = decode(&mut buf, version, u32::MAX) {
        match packet {
            Packet::PubAck(_) | Packet::PubComp(_) => acks += 1,
            Packet::PubRec(rec) if rec.reason_code.is_error() => acks += 1,
            _ => {}
        }
    }
    acks
}

/// Checks what the broker wrote (`output`, `truncated` when more was dropped) to a client
/// that wrote `input` (see the module docs).
pub fn check_conversation(input: &[u8], output: &[u8], truncated: bool) -> Conversation {
    let mut seen = Conversation::default();
    let Some(connect) = first_connect(input) else {
        // No valid CONNECT: at most a refusing CONNACK, in either version.
        if output.is_empty() {
            return seen;
        }
        let refused = [ProtocolVersion::V311, ProtocolVersion::V5]
            .into_iter()
            .filter_map(|v| packets(output, v, false).ok())
            .any(|p| matches!(p.as_slice(), [(_, Packet::ConnAck(ack))] if ack.reason_code.is_error()));
        assert!(
            refused,
            "to a client without a valid CONNECT the broker wrote {output:02x?}"
        );
        seen.packets = 1;
        return seen;
    };
    let version = connect.protocol_version;
    let v5 = version == ProtocolVersion::V5;
    let found = match packets(output, version, truncated) {
        Ok(found) => found,
        Err(e) => panic!("the broker's output in {version:?}: {e}\noutput: {output:02x?}"),
    };
    let max_size = connect
        .properties
        .maximum_packet_size
        .map_or(usize::MAX, |m| m.get() as usize);
    let alias_max = connect.properties.topic_alias_maximum.unwrap_or(0);
    let receive_max = connect
        .properties
        .receive_maximum
        .map_or(65_535, NonZeroU16::get);
    let window = usize::from(receive_max) + acks_sent(input, version);
    let mut inflight = 0usize;
    let mut offset = 0;
    let mut ended = false;
    for (n, (len, packet)) in found.iter().enumerate() {
        let frame = output.get(offset..offset + len).unwrap_or_default();
        offset += len;
        check_encoding(frame, version);
        assert!(
            !ended,
            "packet {n} follows a refusing CONNACK or a DISCONNECT: {packet:?}"
        );
        if n == 0 {
            assert!(
                matches!(packet, Packet::ConnAck(_)),
                "the first packet is not CONNACK: {packet:?}"
            );
        }
        if v5 {
            assert!(
                *len <= max_size,
                "a {len}-byte packet over the client's Maximum Packet Size {max_size}"
            );
        }
        match packet {
            Packet::ConnAck(ack) => {
                assert_eq!(n, 0, "a second CONNACK");
                if ack.reason_code.is_error() {
                    ended = true;
                } else {
                    seen.accepted = true;
                }
            }
            Packet::Publish(p) => {
                seen.publishes += 1;
                if let Some(alias) = p.properties.topic_alias {
                    assert!(
                        alias.get() <= alias_max,
                        "Topic Alias {alias} over the client's maximum {alias_max}"
                    );
                }
                // Under 5.0 a PUBLISH is sent again only on a new connection, so on one
                // connection each QoS 1/2 PUBLISH takes a place in the window, resent or not.
                if v5 && p.qos != QoS::AtMostOnce {
                    inflight += 1;
                    assert!(
                        inflight <= window,
                        "{inflight} QoS 1/2 PUBLISH packets, Receive Maximum {receive_max} \
                         and {} acknowledgements",
                        window - usize::from(receive_max)
                    );
                }
            }
            Packet::Disconnect(_) => {
                assert!(v5, "a DISCONNECT to a 3.1.1 client");
                ended = true;
            }
            Packet::Auth(_) => assert!(v5, "an AUTH to a 3.1.1 client"),
            Packet::PubAck(_)
            | Packet::PubRec(_)
            | Packet::PubRel(_)
            | Packet::PubComp(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp => {}
            Packet::Connect(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq => panic!("a server does not send {packet:?}"),
        }
    }
    seen.packets = found.len();
    seen
}
