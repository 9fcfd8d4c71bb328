//! Writes the hand-made seed corpus of the `session` target: scripts (see
//! `fulmar_fuzz::session_checks`) of CONNECT/CONNACK, PUBLISH and acknowledgement flows,
//! SUBSCRIBE/UNSUBSCRIBE, keep-alive, resumption, flow control and malformed input, for a
//! client and a server session in both protocol versions.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example session_seeds
//! ```
//!
//! Files are named `seed-<what>` and written into `fuzz/corpus/session/`; existing files
//! with the same name are overwritten, other files are left alone. Every seed is played
//! through `check_session` before it is written.

use std::fs;
use std::io;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use fulmar_codec::{
    ConnAck, Connect, ConnectReasonCode, MqttString, Packet, PacketId, ProtocolVersion, PubRel,
    Publish, QoS, SubAck, SubAckReasonCode, Subscribe, SubscriptionOptions,
};
use fulmar_fuzz::session_checks::{Op, check_session};

/// A script under construction.
struct Script {
    bytes: Vec<u8>,
    version: ProtocolVersion,
}

impl Script {
    /// Setup bytes: `server`, MQTT 5.0 or not, and the rest of bytes 0 and 1.
    fn new(server: bool, version: ProtocolVersion, b0: u8, b1: u8) -> Self {
        let v5 = version == ProtocolVersion::V5;
        let b0 = b0 | u8::from(server) | (u8::from(v5) << 1);
        Self {
            bytes: vec![b0, b1],
            version,
        }
    }

    fn op(mut self, op: Op, args: &[u8]) -> Self {
        self.bytes.push(op as u8);
        self.bytes.extend_from_slice(args);
        self
    }

    /// The peer's packet as raw bytes (in chunks of at most 255 bytes).
    fn raw(mut self, packet: Packet) -> Self {
        let version = match &packet {
            Packet::Connect(c) => c.protocol_version,
            _ => self.version,
        };
        let mut wire = BytesMut::new();
        if let Err(e) = packet.encode(version, &mut wire) {
            panic!("seed packet does not encode: {e}");
        }
        for chunk in wire.chunks(255) {
            self.bytes.push(Op::Raw as u8);
            self.bytes.push(u8::try_from(chunk.len()).unwrap_or(255));
            self.bytes.extend_from_slice(chunk);
        }
        self
    }

    fn garbage(mut self, bytes: &[u8]) -> Self {
        self.bytes.push(Op::Raw as u8);
        self.bytes.push(u8::try_from(bytes.len()).unwrap_or(255));
        self.bytes.extend_from_slice(bytes);
        self
    }

    fn respond_all(self) -> Self {
        self.op(Op::Respond, &[255])
    }
}

fn id(n: u16) -> PacketId {
    PacketId::new(n).unwrap_or(PacketId::ONE)
}

fn connect(version: ProtocolVersion, clean_start: bool, keep_alive: u16) -> Packet {
    let mut c = Connect::new(version, MqttString::from("peer"));
    c.clean_start = clean_start;
    c.keep_alive = keep_alive;
    c.into()
}

fn publish(qos: QoS, n: u16, topic: &'static str) -> Packet {
    let mut p = Publish::new(MqttString::from(topic), Bytes::from_static(b"payload"));
    p.qos = qos;
    p.packet_id = (qos != QoS::AtMostOnce).then(|| id(n));
    p.into()
}

/// `publish` op flags: QoS (0, 1, 2) in bits 0-1, topic index in bits 4-7.
fn pub_flags(qos: u8, topic: u8) -> u8 {
    qos | (topic << 4)
}

fn client_seeds(v: ProtocolVersion) -> Vec<(&'static str, Script)> {
    let v5 = v == ProtocolVersion::V5;
    let connack = |present: bool| Packet::from(ConnAck::new(present, ConnectReasonCode::Success));
    vec![
        (
            "flows",
            Script::new(false, v, 0x18, 0x3F)
                .op(Op::Connect, &[0])
                .respond_all()
                .op(Op::Publish, &[pub_flags(0, 0), 1])
                .op(Op::Publish, &[pub_flags(1, 1), 2])
                .op(Op::Publish, &[pub_flags(2, 2), 3])
                .respond_all()
                .respond_all()
                .op(Op::Subscribe, &[0x25])
                .op(Op::Unsubscribe, &[0x06])
                .respond_all()
                .op(Op::Disconnect, &[2]),
        ),
        (
            "inbound",
            Script::new(false, v, 0x18, 0x3F)
                .op(Op::Connect, &[0])
                .raw(connack(false))
                .raw(publish(QoS::AtMostOnce, 0, "a/b"))
                .raw(publish(QoS::AtLeastOnce, 1, "a/b"))
                .raw(publish(QoS::ExactlyOnce, 2, "x"))
                .raw(publish(QoS::ExactlyOnce, 2, "x"))
                .raw(PubRel::new(id(2)).into())
                .raw(PubRel::new(id(3)).into())
                .op(Op::Disconnect, &[0]),
        ),
        (
            "keepalive",
            Script::new(false, v, 0, 0)
                .op(Op::Connect, &[0x04])
                .respond_all()
                .op(Op::NextDeadline, &[])
                .respond_all()
                .op(Op::NextDeadline, &[])
                .op(Op::NextDeadline, &[])
                .op(Op::NextDeadline, &[]),
        ),
        (
            "resume",
            Script::new(false, v, 0x18, 0x3F)
                .op(Op::Connect, &[1 | 0x20])
                .respond_all()
                .op(Op::Publish, &[pub_flags(1, 1), 2])
                .op(Op::Publish, &[pub_flags(2, 2), 3])
                .op(Op::Lost, &[])
                .op(Op::Publish, &[pub_flags(1, 3), 4])
                .op(Op::Connect, &[1 | 0x20])
                .respond_all()
                .respond_all()
                .respond_all(),
        ),
        (
            "manual-acks",
            Script::new(false, v, 0x04 | 0x08, 0x3F)
                .op(Op::Connect, &[0])
                .respond_all()
                .raw(publish(QoS::AtLeastOnce, 1, "a"))
                .raw(publish(QoS::ExactlyOnce, 2, "a"))
                .raw(publish(QoS::AtLeastOnce, 3, "a"))
                .op(Op::Ack, &[1])
                .op(Op::Ack, &[0])
                .raw(PubRel::new(id(2)).into())
                .op(Op::Ack, &[0]),
        ),
        (
            "limits",
            Script::new(false, v, 0x60, 0x05)
                .op(Op::Connect, &[0])
                // CONNACK: Receive Maximum 1, Topic Alias Maximum 2, Maximum Packet Size 80.
                .op(Op::Peer, &[1, 0x04, 2, 10, 1])
                .op(Op::Publish, &[pub_flags(1, 0), 1])
                .op(Op::Publish, &[pub_flags(1, 0), 2])
                .op(Op::Publish, &[pub_flags(0, 5), 60])
                .op(Op::Publish, &[pub_flags(0, 1), 1])
                .op(Op::Publish, &[pub_flags(2, 1), 1])
                .respond_all()
                .respond_all()
                .respond_all(),
        ),
        (
            "offline-expiry",
            Script::new(false, v, 0, 0x0C)
                .op(Op::Publish, &[pub_flags(1, 0) | 8, 1])
                .op(Op::Publish, &[pub_flags(0, 0) | 8, 2])
                .op(Op::Publish, &[pub_flags(2, 0), 3])
                .op(Op::Time, &[130])
                .op(Op::Connect, &[0])
                .respond_all()
                .respond_all(),
        ),
        (
            "refused",
            Script::new(false, v, 0, 0)
                .op(Op::Connect, &[0])
                .raw(ConnAck::new(false, ConnectReasonCode::NotAuthorized).into())
                .op(Op::Connect, &[0])
                .raw(publish(QoS::AtMostOnce, 0, "a"))
                .op(Op::Connect, &[0])
                .respond_all()
                .raw(connack(false)),
        ),
        (
            "suback",
            Script::new(false, v, 0, 0x30)
                .op(Op::Connect, &[0])
                .respond_all()
                .op(Op::Subscribe, &[0x01])
                .raw(SubAck::new(id(1), vec![SubAckReasonCode::GrantedQoS0]).into())
                .raw(SubAck::new(id(9), vec![SubAckReasonCode::GrantedQoS0]).into()),
        ),
        (
            "malformed",
            Script::new(false, v, 0, 0)
                .op(Op::Connect, &[0])
                .respond_all()
                .garbage(&[0x32, 0x03, 0x00, 0x01, 0x61]),
        ),
        (
            "peer-script",
            Script::new(false, v, 0x78, 0xFF)
                .op(Op::Connect, &[if v5 { 0xA0 } else { 0 }])
                .op(Op::Peer, &[1, 0x00, 3, 0, 0])
                .op(Op::Peer, &[2, 0x11, 1, 1, 4])
                .op(Op::Peer, &[2, 0x82, 2, 0, 4])
                .op(Op::Peer, &[5, 0, 2, 0, 0])
                .op(Op::Peer, &[14, 0, 0, 0, 0])
                .op(Op::Peer, &[13, 3, 0, 0, 0]),
        ),
    ]
}

fn server_seeds(v: ProtocolVersion) -> Vec<(&'static str, Script)> {
    let v5 = v == ProtocolVersion::V5;
    let subscribe = Subscribe::new(
        id(7),
        vec![
            (
                MqttString::from("a/+"),
                SubscriptionOptions::new(QoS::AtLeastOnce),
            ),
            (
                MqttString::from("#"),
                SubscriptionOptions::new(QoS::ExactlyOnce),
            ),
        ],
    );
    let unsubscribe = fulmar_codec::Unsubscribe::new(id(8), vec![MqttString::from("a/+")]);
    vec![
        (
            "flows",
            Script::new(true, v, 0x18, 0x3F)
                .raw(connect(v, true, 30))
                .op(Op::Accept, &[0])
                .raw(publish(QoS::AtMostOnce, 0, "a"))
                .raw(publish(QoS::AtLeastOnce, 1, "a/b"))
                .raw(publish(QoS::ExactlyOnce, 2, "a/b"))
                .raw(PubRel::new(id(2)).into())
                .raw(subscribe.clone().into())
                .op(Op::Answer, &[0])
                .raw(unsubscribe.into())
                .op(Op::Answer, &[0])
                .raw(Packet::PingReq)
                .op(Op::Publish, &[pub_flags(1, 1), 1])
                .op(Op::Publish, &[pub_flags(2, 1), 1])
                .respond_all()
                .respond_all()
                .raw(fulmar_codec::Disconnect::default().into()),
        ),
        (
            "resume",
            Script::new(true, v, 0x18, 0x3F)
                .raw(connect(v, false, 0))
                .op(Op::Accept, &[0])
                .op(Op::Publish, &[pub_flags(1, 1), 1])
                .op(Op::Publish, &[pub_flags(2, 2), 1])
                .op(Op::Publish, &[pub_flags(2, 3), 1])
                .op(Op::Respond, &[1])
                .raw(publish(QoS::ExactlyOnce, 4, "a"))
                .op(Op::Lost, &[])
                .raw(connect(v, false, 0))
                .op(Op::Accept, &[1])
                .raw(publish(QoS::ExactlyOnce, 4, "a"))
                .respond_all()
                .respond_all(),
        ),
        (
            "manual-acks",
            Script::new(true, v, 0x04, 0x3F)
                .raw(connect(v, true, 0))
                .op(Op::Accept, &[0])
                .raw(publish(QoS::AtLeastOnce, 1, "a"))
                .raw(publish(QoS::AtLeastOnce, 2, "a"))
                .op(Op::Ack, &[0])
                .raw(publish(QoS::ExactlyOnce, 3, "a"))
                .op(Op::Ack, &[0])
                .op(Op::Ack, &[0]),
        ),
        (
            "early",
            Script::new(true, v, 0x18, 0x3F)
                .raw(connect(v, true, 10))
                .raw(publish(QoS::AtLeastOnce, 1, "a"))
                .raw(subscribe.into())
                .raw(Packet::PingReq)
                .op(Op::Accept, &[2])
                .op(Op::Answer, &[1])
                .op(Op::Answer, &[2]),
        ),
        (
            "reject",
            Script::new(true, v, 0, 0)
                .raw(connect(v, true, 0))
                .op(Op::Reject, &[0]),
        ),
        (
            "idle",
            Script::new(true, v, 0, 0x80)
                .raw(connect(v, true, 1))
                .op(Op::Accept, &[0])
                .op(Op::Time, &[10])
                .raw(Packet::PingReq)
                .op(Op::NextDeadline, &[]),
        ),
        (
            "connect-timeout",
            Script::new(true, v, 0, 0).op(Op::NextDeadline, &[]),
        ),
        (
            "malformed-connect",
            Script::new(true, v, 0, 0).garbage(&[
                0x10, 0x0A, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x09, 0x02, 0x00, 0x00,
            ]),
        ),
        (
            "not-connect-first",
            Script::new(true, v, 0, 0).raw(publish(QoS::AtMostOnce, 0, "a")),
        ),
        (
            "receive-maximum",
            Script::new(true, v, 0, 0x3F)
                .raw(connect(v, true, 0))
                .op(Op::Accept, &[0])
                .raw(publish(QoS::ExactlyOnce, 1, "a"))
                .raw(publish(QoS::ExactlyOnce, 2, "a"))
                .raw(publish(QoS::AtLeastOnce, 3, "a")),
        ),
        (
            "peer-script",
            Script::new(true, v, 0x38, 0x7F)
                .op(Op::Peer, &[0, u8::from(v5) | 0x24, 1, 2, 8])
                .op(Op::Accept, &[3])
                .op(Op::Peer, &[2, 0x71, 1, 1, 4])
                .op(Op::Peer, &[2, 0x70, 2, 1, 4])
                .op(Op::Peer, &[7, 9, 3, 1, 0])
                .op(Op::Publish, &[pub_flags(1, 5), 40])
                .op(Op::Peer, &[3, 1, 0, 0, 0])
                .op(Op::Peer, &[13, 2, 0, 0, 0]),
        ),
    ]
}

fn main() -> io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/session");
    fs::create_dir_all(&dir)?;
    let mut count = 0;
    for (v, tag) in [(ProtocolVersion::V311, "v3"), (ProtocolVersion::V5, "v5")] {
        for (role, seeds) in [("client", client_seeds(v)), ("server", server_seeds(v))] {
            for (name, script) in seeds {
                let outcome = check_session(&script.bytes);
                println!("{tag}-{role}-{name}: {outcome:?}");
                fs::write(dir.join(format!("seed-{tag}-{role}-{name}")), &script.bytes)?;
                count += 1;
            }
        }
    }
    println!("wrote {count} seed files under {}", dir.display());
    Ok(())
}
