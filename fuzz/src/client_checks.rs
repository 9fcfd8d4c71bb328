//! The checks of the `client` fuzz target, shared with the corpus replay test of
//! fulmar-client (`crates/fulmar-client/tests/fuzz_corpus.rs` includes this file and
//! `checks.rs` with `#[path]`). Only the public API of fulmar-client and fulmar-codec,
//! tokio, `bytes`, std and `crate::checks` may be used here.
//!
//! [`check_client`] connects a `fulmar_client::Client` over an in-memory pipe
//! (`Transport::custom`, reconnecting off) to a broker played by the script: the script
//! writes raw bytes and ready-made packets as the broker, closes the connection, and calls
//! the client's API as the application (publish at each QoS, subscribe, read messages,
//! disconnect), each call in a task of its own. At the end the broker side closes, and:
//!
//! - nothing panics (a panic inside a client task is reported by the replay test's hook);
//! - `Client::connect` and every API call the script made complete (with a result or an
//!   error) within [`END_GUARD`] once the connection is gone: nothing waits forever on a
//!   broker that misbehaved or left;
//! - what the client wrote decodes, in its protocol version, into whole canonical packets
//!   (`checks.rs`): CONNECT first and once (MQTT-3.1.0-1, MQTT-3.1.0-2), only packets a
//!   client sends, nothing after DISCONNECT (MQTT-3.14.4-1);
//! - a packet identifier is not reused while in flight (MQTT-2.2.1-3): the client sends a
//!   new QoS 1/2 PUBLISH (DUP 0) with an identifier at most once more than the script
//!   completed that identifier (PUBACK, PUBCOMP, or under 5.0 a PUBREC with an error
//!   code). Which acknowledgement came before which PUBLISH depends on timing, so this
//!   counts over the whole connection.
//!
//! # Input format
//!
//! Byte 0: bit 0 MQTT 5.0 (else 3.1.1), bit 1 manual acknowledgements, bit 2 Receive
//! Maximum 1 (else 8), bit 3 max in-flight 1 (else 4), bit 4 Topic Alias Maximum 2 (else 0),
//! bit 5 enhanced authentication with method [`AUTH_METHOD`] (5.0 only; see
//! [`ScriptAuthenticator`]), bit 6 streams of 300 bytes
//! ([`ConnectOptions::stream_capacity_bytes`]: full after a message or two).
//! Then steps, each an opcode byte (taken modulo 8, see [`ClientStep`]; 13 modulo 16 is
//! [`ClientStep::Reauthenticate`]) and its arguments.

use std::collections::HashMap;
use std::num::NonZeroU16;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fulmar_client::{AuthError, Authenticator, Client, ConnectOptions, Reconnect, Transport};
use fulmar_codec::{
    Auth, AuthProperties, AuthReasonCode, ConnAck, ConnectReasonCode, Disconnect,
    DisconnectReasonCode, MqttString, Packet, PacketId, ProtocolVersion, PubAck, PubComp, PubRec,
    PubRel, Publish, QoS, SubAck, SubAckReasonCode, UnsubAck, UnsubAckReasonCode, decode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::checks::check_encoding;
use crate::script::{Cursor, qos, settle};

/// Steps played at most.
pub const MAX_STEPS: usize = 256;

/// How long the client may take to give every caller an answer once its connection is
/// gone, and its pipe to be read to the end.
pub const END_GUARD: Duration = Duration::from_secs(20);

/// The most of the client's output that is recorded.
const OUTPUT_CAP: usize = 1 << 20;

/// The steps of a script (the opcode byte modulo 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientStep {
    /// A length byte and that many raw bytes from the broker.
    Raw = 0,
    /// A ready-made packet from the broker: a kind byte and an argument byte (see
    /// [`broker_packet`]).
    Packet = 1,
    /// The application publishes: a byte with the QoS (bits 0-1) and the topic (bit 2).
    Publish = 2,
    /// The application subscribes: a byte with the QoS (bits 0-1) and the filter (bit 2).
    Subscribe = 3,
    /// The application reads the messages delivered so far (and acknowledges them with
    /// manual acknowledgements).
    Read = 4,
    /// Lets the client's tasks run until they have nothing to do.
    Settle = 5,
    /// The broker closes the connection.
    Close = 6,
    /// The application disconnects.
    Disconnect = 7,
    /// The application re-authenticates (opcode 13 modulo 16).
    Reauthenticate = 13,
}

impl ClientStep {
    fn of(op: u8) -> Self {
        if op & 15 == 13 {
            return Self::Reauthenticate;
        }
        match op & 7 {
            0 => Self::Raw,
            1 => Self::Packet,
            2 => Self::Publish,
            3 => Self::Subscribe,
            4 => Self::Read,
            5 => Self::Settle,
            6 => Self::Close,
            _ => Self::Disconnect,
        }
    }
}

/// What one call of [`check_client`] saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientOutcome {
    /// Steps played.
    pub steps: usize,
    /// `Client::connect` succeeded.
    pub connected: bool,
    /// API calls made (publish, subscribe, disconnect).
    pub calls: usize,
    /// Of them, those that succeeded.
    pub succeeded: usize,
    /// Packets the client wrote.
    pub packets_out: usize,
    /// Messages the application read.
    pub messages: usize,
}

/// Plays `data` (see the module docs) and checks it. Panics when a check fails.
pub fn check_client(data: &[u8]) -> ClientOutcome {
    crate::script::runtime().block_on(play(data))
}

/// The Authentication Method of the scripts with enhanced authentication.
pub const AUTH_METHOD: &str = "FUZZ";

/// The client side of the scripts' enhanced authentication: starts with "fuzz",
/// answers a challenge reversed, but gives up on one starting with `x`; refuses a
/// broker whose final data is "bad".
pub struct ScriptAuthenticator;

impl Authenticator for ScriptAuthenticator {
    fn start(&mut self) -> Result<Option<Bytes>, AuthError> {
        Ok(Some(Bytes::from_static(b"fuzz")))
    }

    fn challenge(&mut self, data: Option<Bytes>) -> Result<Option<Bytes>, AuthError> {
        match data {
            Some(data) if data.starts_with(b"x") => Err("a challenge it cannot answer".into()),
            Some(data) => Ok(Some(data.iter().rev().copied().collect::<Vec<u8>>().into())),
            None => Ok(None),
        }
    }

    fn finish(&mut self, data: Option<Bytes>) -> Result<(), AuthError> {
        if data.as_deref() == Some(b"bad") {
            return Err("the broker's proof is wrong".into());
        }
        Ok(())
    }
}

fn options(setup: u8, pipes: mpsc::UnboundedSender<DuplexStream>) -> ConnectOptions {
    let version = if setup & 1 != 0 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    };
    let transport = Transport::custom(move || {
        let (client, broker) = tokio::io::duplex(64 * 1024);
        let sent = pipes.send(broker);
        async move {
            match sent {
                Ok(()) => Ok(client),
                Err(_) => Err(std::io::ErrorKind::ConnectionRefused.into()),
            }
        }
    });
    let options = ConnectOptions::new("script", 0)
        .transport(transport)
        .protocol_version(version)
        .client_id("fuzz")
        .manual_acks(setup & 2 != 0)
        .receive_maximum(if setup & 4 != 0 { 1 } else { 8 })
        .max_inflight(if setup & 8 != 0 { 1 } else { 4 })
        .topic_alias_maximum(if setup & 0x10 != 0 { 2 } else { 0 })
        // Streams full by their bytes after a message or two.
        .stream_capacity_bytes(if setup & 0x40 != 0 { 300 } else { 64 << 20 })
        .reconnect(Reconnect::disabled())
        .keep_alive(Duration::from_secs(60))
        .connect_timeout(END_GUARD);
    if setup & 0x20 != 0 && version == ProtocolVersion::V5 {
        options.authentication(AUTH_METHOD, ScriptAuthenticator)
    } else {
        options
    }
}

async fn play(data: &[u8]) -> ClientOutcome {
    let mut input = Cursor(data);
    let setup = input.byte();
    let version = if setup & 1 != 0 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    };
    let mut outcome = ClientOutcome::default();
    let (pipes_tx, mut pipes) = mpsc::unbounded_channel();
    let connecting = tokio::spawn(Client::connect(options(setup, pipes_tx)));
    let Some(pipe) = pipes.recv().await else {
        panic!("the client did not open its transport");
    };
    let (mut from_client, mut to_client) = tokio::io::split(pipe);
    let reader: JoinHandle<Vec<u8>> = tokio::spawn(async move {
        let mut output = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from_client.read(&mut buf).await {
                Ok(0) | Err(_) => return output,
                Ok(n) => {
                    if output.len() + n <= OUTPUT_CAP {
                        output.extend_from_slice(buf.get(..n).unwrap_or_default());
                    }
                }
            }
        }
    });
    let mut broker_open = true;
    let mut written = Vec::new();
    let mut client: Option<Client> = None;
    let mut connecting = Some(connecting);
    let mut calls: Vec<JoinHandle<bool>> = Vec::new();
    let mut subscriptions = Vec::new();

    while !input.is_empty() && outcome.steps < MAX_STEPS {
        outcome.steps += 1;
        let op = input.byte();
        match ClientStep::of(op) {
            ClientStep::Raw => {
                let len = usize::from(input.byte());
                let bytes = input.take(len).to_vec();
                broker_open = broker_open && write(&mut to_client, &bytes, &mut written).await;
            }
            ClientStep::Packet => {
                let (kind, arg) = (input.byte(), input.byte());
                let mut wire = BytesMut::new();
                if let Some(packet) = broker_packet(kind, arg)
                    && packet.encode(version, &mut wire).is_ok()
                {
                    broker_open = broker_open && write(&mut to_client, &wire, &mut written).await;
                }
            }
            ClientStep::Publish => {
                let b = input.byte();
                if let Some(client) = &client {
                    let client = client.clone();
                    let topic = if b & 4 != 0 { "a/b" } else { "x" };
                    let qos = qos(b);
                    calls.push(tokio::spawn(async move {
                        client.publish(topic, "payload").qos(qos).await.is_ok()
                    }));
                }
            }
            ClientStep::Subscribe => {
                let b = input.byte();
                if let Some(client) = &client {
                    let client = client.clone();
                    let filter = if b & 4 != 0 { "a/#" } else { "x" };
                    let qos = qos(b);
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    subscriptions.push(rx);
                    calls.push(tokio::spawn(async move {
                        match client.subscribe(filter, qos).await {
                            Ok(subscription) => {
                                let _ = tx.send(subscription);
                                true
                            }
                            Err(_) => false,
                        }
                    }));
                }
            }
            ClientStep::Read => {
                if let Some(client) = &client {
                    outcome.messages += read(client, &mut subscriptions).await;
                }
            }
            ClientStep::Settle => settle(64).await,
            ClientStep::Close => {
                if broker_open {
                    let _ = to_client.shutdown().await;
                    broker_open = false;
                }
            }
            ClientStep::Disconnect => {
                if let Some(client) = &client {
                    let client = client.clone();
                    calls.push(tokio::spawn(
                        async move { client.disconnect().await.is_ok() },
                    ));
                }
            }
            ClientStep::Reauthenticate => {
                if let Some(client) = &client {
                    let client = client.clone();
                    calls.push(tokio::spawn(async move {
                        client.reauthenticate().await.is_ok()
                    }));
                }
            }
        }
        settle(4).await;
        if client.is_none()
            && let Some(handle) = connecting.take_if(|h| h.is_finished())
        {
            match handle.await {
                Ok(Ok((connected, _connack))) => {
                    outcome.connected = true;
                    client = Some(connected);
                }
                Ok(Err(_)) => {}
                Err(e) => panic!("Client::connect panicked: {e}"),
            }
        }
    }

    // The end: the broker goes away; every caller gets an answer.
    let _ = to_client.shutdown().await;
    drop(to_client);
    if let Some(handle) = connecting.take() {
        match tokio::time::timeout(END_GUARD, handle).await {
            Ok(Ok(Ok((connected, _)))) => {
                outcome.connected = true;
                client = Some(connected);
            }
            Ok(Ok(Err(_))) => {}
            Ok(Err(e)) => panic!("Client::connect panicked: {e}"),
            Err(_) => panic!("Client::connect never returned after the broker left"),
        }
    }
    outcome.calls = calls.len();
    for (n, call) in calls.into_iter().enumerate() {
        match tokio::time::timeout(END_GUARD, call).await {
            Ok(Ok(ok)) => outcome.succeeded += usize::from(ok),
            Ok(Err(e)) => panic!("API call {n} panicked: {e}"),
            Err(_) => panic!("API call {n} never returned after the broker left"),
        }
    }
    drop(subscriptions);
    drop(client);
    let output = match tokio::time::timeout(END_GUARD, reader).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!("the broker side's reader failed: {e}"),
        Err(_) => panic!("the client never closed its side after the broker left"),
    };
    outcome.packets_out = check_client_output(&output, &written, version);
    outcome
}

/// Writes `bytes` as the broker and records them; false once the client closed its side.
async fn write(
    to_client: &mut tokio::io::WriteHalf<DuplexStream>,
    bytes: &[u8],
    written: &mut Vec<u8>,
) -> bool {
    match tokio::time::timeout(END_GUARD, to_client.write_all(bytes)).await {
        Ok(Ok(())) => {
            written.extend_from_slice(bytes);
            true
        }
        Ok(Err(_)) => false,
        // The client stopped reading: it must not, while its connection is open.
        Err(_) => panic!("the client does not read what the broker writes"),
    }
}

/// Per packet identifier, the acknowledgements in `written` (what the script sent as the
/// broker, decoded up to the first error, as the client decodes it) that complete a QoS
/// 1/2 PUBLISH of the client.
fn completions(written: &[u8], version: ProtocolVersion) -> HashMap<PacketId, usize> {
    let mut buf = BytesMut::from(written);
    let mut done: HashMap<PacketId, usize> = HashMap::new();
    while let Ok(Some(packet)) = decode(&mut buf, version, u32::MAX) {
        let id = match packet {
            Packet::PubAck(ack) => ack.packet_id,
            Packet::PubComp(comp) => comp.packet_id,
            Packet::PubRec(rec) if rec.reason_code.is_error() => rec.packet_id,
            _ => continue,
        };
        *done.entry(id).or_default() += 1;
    }
    done
}

/// Reads what the subscriptions hold now (acknowledging under manual acks).
async fn read(
    client: &Client,
    subscriptions: &mut [tokio::sync::oneshot::Receiver<fulmar_client::Subscription>],
) -> usize {
    let mut read = 0;
    for pending in subscriptions.iter_mut() {
        let Ok(mut subscription) = pending.try_recv() else {
            continue;
        };
        for _ in 0..64 {
            match tokio::time::timeout(Duration::ZERO, subscription.recv()).await {
                Ok(Some(message)) => {
                    read += 1;
                    let _ = tokio::time::timeout(END_GUARD, client.ack(&message)).await;
                }
                Ok(None) | Err(_) => break,
            }
        }
        // The subscription is dropped after one read: later messages go nowhere.
    }
    read
}

fn id(b: u8) -> PacketId {
    PacketId::new(u16::from(b & 7) + 1).unwrap_or(PacketId::ONE)
}

/// The broker's ready-made packet of a `Packet` step: `kind` picks the type, `arg` its
/// fields (mostly the packet identifier, 1 to 8).
pub fn broker_packet(kind: u8, arg: u8) -> Option<Packet> {
    let packet = match kind % 12 {
        0 => {
            let code = match arg & 3 {
                0 | 1 => ConnectReasonCode::Success,
                2 => ConnectReasonCode::NotAuthorized,
                _ => ConnectReasonCode::ServerUnavailable,
            };
            let mut ack = ConnAck::new(arg & 4 != 0, code);
            if arg & 8 != 0 {
                ack.properties.receive_maximum = Some(NonZeroU16::MIN);
                ack.properties.topic_alias_maximum = Some(1);
                ack.properties.maximum_qos = Some(QoS::AtLeastOnce);
            }
            if arg & 0x40 != 0 {
                ack.properties.authentication_method = Some(MqttString::from(AUTH_METHOD));
                ack.properties.authentication_data = Some(Bytes::from_static(if arg & 0x80 != 0 {
                    b"bad"
                } else {
                    b"good"
                }));
            }
            Packet::from(ack)
        }
        1 => {
            let code = if arg & 0x10 != 0 {
                SubAckReasonCode::UnspecifiedError
            } else {
                SubAckReasonCode::GrantedQoS1
            };
            Packet::from(SubAck::new(id(arg), vec![code]))
        }
        2 => Packet::from(UnsubAck::new(id(arg), vec![UnsubAckReasonCode::Success])),
        3 => Packet::from(PubAck::new(id(arg))),
        4 => Packet::from(PubRec::new(id(arg))),
        5 => Packet::from(PubRel::new(id(arg))),
        6 => Packet::from(PubComp::new(id(arg))),
        7 => {
            let mut p = Publish::new(
                MqttString::from(if arg & 0x20 != 0 { "a/b" } else { "x" }),
                Bytes::from_static(b"from broker"),
            );
            p.qos = qos(arg >> 3);
            p.packet_id = (p.qos != QoS::AtMostOnce).then(|| id(arg));
            p.dup = arg & 0x40 != 0 && p.qos != QoS::AtMostOnce;
            p.retain = arg & 0x80 != 0;
            Packet::from(p)
        }
        8 => Packet::PingResp,
        9 => Packet::from(Disconnect::new(DisconnectReasonCode::ServerShuttingDown)),
        // Enhanced authentication: a challenge (bit 4: one the client gives up on), or
        // the end of a re-authentication (bit 4: with a proof the client refuses); bit 5
        // another method. A CONNACK with the method is kind 0 with bit 6.
        10 | 11 => {
            let (reason_code, data): (_, &'static [u8]) = match (kind % 12, arg & 0x10 != 0) {
                (10, false) => (AuthReasonCode::ContinueAuthentication, b"challenge"),
                (10, true) => (AuthReasonCode::ContinueAuthentication, b"xchallenge"),
                (_, false) => (AuthReasonCode::Success, b"good"),
                (_, true) => (AuthReasonCode::Success, b"bad"),
            };
            let method = if arg & 0x20 != 0 {
                "OTHER"
            } else {
                AUTH_METHOD
            };
            Packet::Auth(Auth {
                reason_code,
                properties: AuthProperties {
                    authentication_method: Some(MqttString::from(method)),
                    authentication_data: Some(Bytes::from_static(data)),
                    ..AuthProperties::default()
                },
            })
        }
        _ => return None,
    };
    Some(packet)
}

/// Checks what the client wrote (see the module docs); returns the number of packets.
pub fn check_client_output(output: &[u8], written: &[u8], version: ProtocolVersion) -> usize {
    let completed = completions(written, version);
    let mut buf = BytesMut::from(output);
    let mut packets = 0;
    let mut ended = false;
    let mut first_sends: HashMap<PacketId, usize> = HashMap::new();
    loop {
        let before = buf.len();
        let packet = match decode(&mut buf, version, u32::MAX) {
            Ok(Some(packet)) => packet,
            Ok(None) if buf.is_empty() => return packets,
            Ok(None) => panic!("the client's last packet is cut off: {output:02x?}"),
            Err(e) => panic!("the client wrote an undecodable packet: {e}\n{output:02x?}"),
        };
        let start = output.len() - before;
        let frame = output
            .get(start..start + (before - buf.len()))
            .unwrap_or_default();
        check_encoding(frame, version);
        assert!(
            !ended,
            "packet {packets} follows the client's DISCONNECT: {packet:?}"
        );
        if packets == 0 {
            assert!(
                matches!(packet, Packet::Connect(_)),
                "the client's first packet is not CONNECT: {packet:?}"
            );
        }
        match &packet {
            Packet::Connect(_) => assert_eq!(packets, 0, "a second CONNECT"),
            Packet::Publish(p) => {
                if let (Some(id), false) = (p.packet_id, p.dup) {
                    let sends = first_sends.entry(id).or_default();
                    *sends += 1;
                    let done = completed.get(&id).copied().unwrap_or(0);
                    assert!(
                        *sends <= done + 1,
                        "identifier {id} used for {sends} new messages, completed {done} times"
                    );
                }
            }
            Packet::Disconnect(_) => ended = true,
            Packet::Auth(_) => assert_eq!(version, ProtocolVersion::V5, "AUTH under 3.1.1"),
            Packet::PubAck(_)
            | Packet::PubRec(_)
            | Packet::PubRel(_)
            | Packet::PubComp(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq => {}
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                panic!("a client does not send {packet:?}")
            }
        }
        packets += 1;
    }
}
