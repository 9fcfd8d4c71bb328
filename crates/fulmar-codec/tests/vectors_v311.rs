//! Byte-exact MQTT 3.1.1 vectors: every packet type, the spec's own examples,
//! the remaining-length boundaries, and malformed inputs with the exact
//! `DecodeError` (and the reason code a 5.0 peer would get for it).
//!
//! The fixed header and remaining length are in `vectors_framing.rs`.
//!
//! Each positive vector is checked both ways: the value encodes to exactly
//! these bytes, and the bytes decode to exactly this value.

// The helpers below panic on bad fixtures, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::{assert_decodes_to, assert_malformed, assert_vector, encode, frame, hex, id, string};
use fulmar_codec::{
    ConnAck, Connect, ConnectReasonCode, DecodeError, Disconnect, DisconnectReasonCode,
    EncodeError, Packet, PacketId, PacketType, ProtocolVersion, PubAck, PubAckReasonCode, PubComp,
    PubRec, PubRel, Publish, QoS, ReasonCode, RetainHandling, StringError, SubAck,
    SubAckReasonCode, Subscribe, SubscriptionOptions, UnsubAck, UnsubAckReasonCode, Unsubscribe,
    Will,
};

const V3: ProtocolVersion = ProtocolVersion::V311;

fn publish(topic: &'static str, payload: &'static [u8], qos: QoS, packet_id: u16) -> Publish {
    let mut p = Publish::new(topic.into(), Bytes::from_static(payload));
    p.qos = qos;
    p.packet_id = PacketId::new(packet_id);
    p
}

fn encode_err(packet: impl Into<Packet>) -> EncodeError {
    common::encode_err(packet, V3)
}

fn malformed(wire: &str, error: DecodeError) {
    assert_malformed(&hex(wire), V3, error, ReasonCode::MalformedPacket);
}

fn protocol_error(wire: &str, error: DecodeError) {
    assert_malformed(&hex(wire), V3, error, ReasonCode::ProtocolError);
}

// ---------------------------------------------------------------- CONNECT

/// Spec 3.1.2.11, Figure 3.6: the variable header `00 04 'MQTT' 04 CE 00 0A`
/// (user name, password, will QoS 1, will flag, clean session; keep alive 10),
/// followed by the payload fields in their mandatory order.
// v3:MQTT-3.1.2-9 v3:MQTT-3.1.2-14 v3:MQTT-3.1.2-19 v3:MQTT-3.1.2-21
// v3:MQTT-3.1.3-1 v3:MQTT-3.1.3-3 v3:MQTT-3.1.3-4 v3:MQTT-3.1.3-10 v3:MQTT-3.1.3-11
#[test]
fn connect_spec_example_figure_3_6() {
    let connect = Connect {
        keep_alive: 10,
        will: Some(Will {
            qos: QoS::AtLeastOnce,
            ..Will::new("will/t".into(), Bytes::from_static(b"bye"))
        }),
        username: Some("user".into()),
        password: Some(Bytes::from_static(b"pw")),
        ..Connect::new(V3, "fulmar".into())
    };
    let wire = hex("10 29 | 00 04 'MQTT' 04 CE 00 0A \
                    | 00 06 'fulmar' | 00 06 'will/t' | 00 03 'bye' | 00 04 'user' | 00 02 'pw'");
    assert_vector(&connect.into(), V3, &wire);
}

// v3:MQTT-3.1.2-11 v3:MQTT-3.1.2-18 v3:MQTT-3.1.2-20 v3:MQTT-3.1.3-3
#[test]
fn connect_minimal() {
    let connect = Connect::new(V3, "c".into());
    assert_vector(
        &connect.into(),
        V3,
        &hex("10 0D | 00 04 'MQTT' 04 02 00 3C | 00 01 'c'"),
    );
}

/// A zero-byte client identifier is a valid string; the decoder hands it to
/// the server, which applies its own rules.
#[test]
fn connect_empty_client_id_and_no_clean_session() {
    let connect = Connect {
        clean_start: false,
        keep_alive: 0,
        ..Connect::new(V3, "".into())
    };
    assert_vector(
        &connect.into(),
        V3,
        &hex("10 0C | 00 04 'MQTT' 04 00 00 00 | 00 00"),
    );
}

// v3:MQTT-3.1.2-9 v3:MQTT-3.1.2-14 v3:MQTT-3.1.2-19
#[test]
fn connect_will_qos2_retained_and_user_name_only() {
    let connect = Connect {
        keep_alive: 0xFFFF,
        will: Some(Will {
            qos: QoS::ExactlyOnce,
            retain: true,
            ..Will::new("w".into(), Bytes::new())
        }),
        username: Some("u".into()),
        ..Connect::new(V3, "c".into())
    };
    // flags: user name 0x80 | will retain 0x20 | will QoS 2 0x10 | will 0x04 | clean 0x02
    assert_vector(
        &connect.into(),
        V3,
        &hex("10 15 | 00 04 'MQTT' 04 B6 FF FF | 00 01 'c' | 00 01 'w' | 00 00 | 00 01 'u'"),
    );
}

/// MQTT 3.1 clients send `MQIsdp` level 3, which is read as MQTT 3.1 (the
/// "other specification" MQTT-3.1.2-1 allows). Another name is refused; the
/// error carries the level so a server can answer with return code 0x01.
// v3:MQTT-3.1.2-1 v3:MQTT-3.1.4-1
#[test]
fn connect_mqisdp_protocol_name() {
    let wire = hex("10 0F | 00 06 'MQIsdp' 03 02 00 3C | 00 01 'c'");
    let v31 = ProtocolVersion::V31;
    assert_decodes_to(&wire, V3, &Connect::new(v31, "c".into()).into());
    let wire = hex("10 0F | 00 06 'MQIsdx' 03 02 00 3C | 00 01 'c'");
    let err = DecodeError::InvalidProtocolName { level: Some(3) };
    assert_eq!(err.protocol_level(), Some(3));
    assert_malformed(&wire, V3, err, ReasonCode::UnsupportedProtocolVersion);
    // A name that ends before the level byte.
    assert_malformed(
        &hex("10 06 | 00 04 'MQTX'"),
        V3,
        DecodeError::InvalidProtocolName { level: None },
        ReasonCode::UnsupportedProtocolVersion,
    );
}

/// A bridge's CONNECT (mosquitto's `try_private`): level 0x84 is 3.1.1
/// with the bridge bit, kept through a round trip.
#[test]
fn connect_from_a_bridge() {
    let connect = Connect {
        bridge: true,
        ..Connect::new(V3, "c".into())
    };
    let wire = hex("10 0D | 00 04 'MQTT' 84 02 00 3C | 00 01 'c'");
    assert_vector(&connect.into(), V3, &wire);
}

// v3:MQTT-3.1.2-2
#[test]
fn connect_unsupported_protocol_level() {
    for level in [0u8, 3, 6, 0x83, 0xFF] {
        let mut body = hex("00 04 'MQTT'");
        body.extend([level, 0x02, 0x00, 0x3C]);
        body.extend(string("c"));
        let err = DecodeError::UnsupportedProtocolLevel(level);
        assert_eq!(err.protocol_level(), Some(level));
        assert_malformed(
            &frame(0x10, &body),
            V3,
            err,
            ReasonCode::UnsupportedProtocolVersion,
        );
    }
}

// v3:MQTT-3.1.2-3 v3:MQTT-3.1.4-1
#[test]
fn connect_reserved_flag() {
    malformed(
        "10 0D | 00 04 'MQTT' 04 03 00 3C | 00 01 'c'",
        DecodeError::ConnectReservedFlag,
    );
}

// v3:MQTT-3.1.2-11 v3:MQTT-3.1.2-13 v3:MQTT-3.1.2-15
#[test]
fn connect_will_qos_or_retain_without_will_flag() {
    // Will QoS 1 without the will flag.
    malformed(
        "10 0D | 00 04 'MQTT' 04 0A 00 3C | 00 01 'c'",
        DecodeError::WillFlagsWithoutWill,
    );
    // Will QoS 2 without the will flag.
    malformed(
        "10 0D | 00 04 'MQTT' 04 12 00 3C | 00 01 'c'",
        DecodeError::WillFlagsWithoutWill,
    );
    // Will Retain without the will flag.
    malformed(
        "10 0D | 00 04 'MQTT' 04 22 00 3C | 00 01 'c'",
        DecodeError::WillFlagsWithoutWill,
    );
}

// v3:MQTT-3.1.2-14
#[test]
fn connect_will_qos_3() {
    malformed(
        "10 13 | 00 04 'MQTT' 04 1E 00 3C | 00 01 'c' | 00 01 'w' | 00 01 'x'",
        DecodeError::InvalidQoS("will QoS"),
    );
}

// v3:MQTT-3.1.2-22
#[test]
fn connect_password_without_user_name() {
    malformed(
        "10 11 | 00 04 'MQTT' 04 42 00 3C | 00 01 'c' | 00 02 'pw'",
        DecodeError::PasswordWithoutUsername,
    );
    let connect = Connect {
        password: Some(Bytes::from_static(b"pw")),
        ..Connect::new(V3, "c".into())
    };
    assert_eq!(encode_err(connect), EncodeError::PasswordWithoutUsername);
}

// v3:MQTT-3.1.2-18 v3:MQTT-3.1.2-19 v3:MQTT-3.1.2-20 v3:MQTT-3.1.2-21 v3:MQTT-3.1.4-1
#[test]
fn connect_flags_must_match_the_payload() {
    // User name flag set, no user name.
    malformed(
        "10 0D | 00 04 'MQTT' 04 82 00 3C | 00 01 'c'",
        DecodeError::Truncated { field: "user name" },
    );
    // Password flag set, no password.
    malformed(
        "10 10 | 00 04 'MQTT' 04 C2 00 3C | 00 01 'c' | 00 01 'u'",
        DecodeError::Truncated { field: "password" },
    );
    // A user name without the flag.
    malformed(
        "10 10 | 00 04 'MQTT' 04 02 00 3C | 00 01 'c' | 00 01 'u'",
        DecodeError::TrailingBytes {
            packet_type: PacketType::Connect,
            count: 3,
        },
    );
    // A password after the user name without the password flag.
    malformed(
        "10 13 | 00 04 'MQTT' 04 82 00 3C | 00 01 'c' | 00 01 'u' | 00 01 'p'",
        DecodeError::TrailingBytes {
            packet_type: PacketType::Connect,
            count: 3,
        },
    );
    // Will flag set, no will topic.
    malformed(
        "10 0D | 00 04 'MQTT' 04 06 00 3C | 00 01 'c'",
        DecodeError::Truncated {
            field: "will topic",
        },
    );
}

// v3:MQTT-3.1.3-3
#[test]
fn connect_without_client_identifier() {
    malformed(
        "10 0A | 00 04 'MQTT' 04 02 00 3C",
        DecodeError::Truncated {
            field: "client identifier",
        },
    );
}

// v3:MQTT-3.1.3-4 v3:MQTT-3.1.3-10 v3:MQTT-3.1.3-11 v3:MQTT-1.5.3-1 v3:MQTT-1.5.3-2
#[test]
fn connect_strings_must_be_valid_utf8() {
    let bad = |field| DecodeError::InvalidString {
        field,
        error: StringError::InvalidUtf8,
    };
    malformed(
        "10 0D | 00 04 'MQTT' 04 02 00 3C | 00 01 FF",
        bad("client identifier"),
    );
    malformed(
        "10 13 | 00 04 'MQTT' 04 06 00 3C | 00 01 'c' | 00 01 C0 | 00 01 'x'",
        bad("will topic"),
    );
    malformed(
        "10 10 | 00 04 'MQTT' 04 82 00 3C | 00 01 'c' | 00 01 80",
        bad("user name"),
    );
    malformed(
        "10 0D | 00 04 'MQTT' 04 02 00 3C | 00 01 00",
        DecodeError::InvalidString {
            field: "client identifier",
            error: StringError::NullCharacter,
        },
    );
}

#[test]
fn connect_v5_data_cannot_be_sent_to_v311() {
    let mut connect = Connect::new(V3, "c".into());
    connect.properties.session_expiry_interval = Some(1);
    assert!(matches!(
        encode_err(connect),
        EncodeError::NotInV311 {
            packet_type: PacketType::Connect,
            what: "properties"
        }
    ));
}

// ---------------------------------------------------------------- CONNACK

/// The six 3.1.1 return codes, with and without Session Present.
// v3:MQTT-3.2.2-4
#[test]
fn connack_return_codes() {
    let codes = [
        (0x00, ConnectReasonCode::Success),
        (0x01, ConnectReasonCode::UnsupportedProtocolVersion),
        (0x02, ConnectReasonCode::ClientIdentifierNotValid),
        (0x03, ConnectReasonCode::ServerUnavailable),
        (0x04, ConnectReasonCode::BadUserNameOrPassword),
        (0x05, ConnectReasonCode::NotAuthorized),
    ];
    for (byte, code) in codes {
        assert_vector(
            &ConnAck::new(false, code).into(),
            V3,
            &[0x20, 0x02, 0x00, byte],
        );
    }
    assert_vector(
        &ConnAck::new(true, ConnectReasonCode::Success).into(),
        V3,
        &hex("20 02 01 00"),
    );
}

// v3:MQTT-3.2.2-4 v3:MQTT-3.2.2-6
#[test]
fn connack_malformed() {
    // 0x06..=0xFF are reserved return codes.
    for code in 6..=0xFF_u8 {
        protocol_error(
            &format!("20 02 00 {code:02x}"),
            DecodeError::InvalidReasonCode {
                packet_type: PacketType::ConnAck,
                code,
            },
        );
    }
    protocol_error("20 02 01 05", DecodeError::SessionPresentOnError);
    malformed("20 02 02 00", DecodeError::ConnAckReservedFlags);
    malformed("20 02 80 00", DecodeError::ConnAckReservedFlags);
    malformed(
        "20 01 00",
        DecodeError::Truncated {
            field: "connect reason code",
        },
    );
    malformed(
        "20 03 00 00 00",
        DecodeError::TrailingBytes {
            packet_type: PacketType::ConnAck,
            count: 1,
        },
    );
    malformed(
        "21 02 00 00",
        DecodeError::ReservedFlags {
            packet_type: PacketType::ConnAck,
            flags: 1,
        },
    );
}

#[test]
fn connack_encode_limits() {
    // A 5.0-only reason code has no 3.1.1 return code.
    assert!(matches!(
        encode_err(ConnAck::new(false, ConnectReasonCode::Banned)),
        EncodeError::NotInV311 { .. }
    ));
    // v3:MQTT-3.2.2-4
    assert_eq!(
        encode_err(ConnAck::new(true, ConnectReasonCode::NotAuthorized)),
        EncodeError::SessionPresentOnError
    );
}

// ---------------------------------------------------------------- PUBLISH

/// Spec 3.3.2.3, Figure 3.11: topic `a/b`, packet identifier 10 (QoS 1), and
/// here an empty payload, which is valid (3.3.3).
// v3:MQTT-3.3.2-1 v3:MQTT-2.3.1-1
#[test]
fn publish_spec_example_figure_3_11() {
    let p = publish("a/b", b"", QoS::AtLeastOnce, 10);
    assert_vector(&p.into(), V3, &hex("32 07 | 00 03 'a/b' | 00 0A"));
}

// v3:MQTT-2.3.1-5 v3:MQTT-3.3.2-1
#[test]
fn publish_qos0_has_no_packet_identifier() {
    let p = publish("a/b", b"hello", QoS::AtMostOnce, 0);
    assert_vector(&p.into(), V3, &hex("30 0A | 00 03 'a/b' | 'hello'"));
    // A QoS 0 PUBLISH with a packet identifier cannot be encoded.
    let bad = publish("a/b", b"", QoS::AtMostOnce, 1);
    assert_eq!(encode_err(bad), EncodeError::UnexpectedPacketId);
}

// v3:MQTT-3.3.1-1 v3:MQTT-2.3.1-1
#[test]
fn publish_flags() {
    let mut p = publish("t", b"x", QoS::ExactlyOnce, 0xFFFF);
    p.dup = true;
    p.retain = true;
    assert_vector(&p.into(), V3, &hex("3D 06 | 00 01 't' | FF FF | 'x'"));
    let mut p = publish("t", b"", QoS::AtMostOnce, 0);
    p.retain = true;
    assert_vector(&p.into(), V3, &hex("31 03 | 00 01 't'"));
    let mut p = publish("t", b"", QoS::AtLeastOnce, 1);
    p.dup = true;
    assert_vector(&p.into(), V3, &hex("3A 05 | 00 01 't' | 00 01"));
    // QoS 1 and 2 need a packet identifier.
    assert_eq!(
        encode_err(publish("t", b"", QoS::AtLeastOnce, 0)),
        EncodeError::MissingPacketId(1)
    );
    assert_eq!(
        encode_err(publish("t", b"", QoS::ExactlyOnce, 0)),
        EncodeError::MissingPacketId(2)
    );
}

/// Spec 1.5.3.1, Figure 1.2: "A𪛔" is `00 05 41 F0 AA 9B 94`.
// v3:MQTT-1.5.3-1 v3:MQTT-3.3.2-1
#[test]
fn utf8_string_spec_example_figure_1_2() {
    let p = publish("A\u{2A6D4}", b"", QoS::AtMostOnce, 0);
    assert_vector(&p.into(), V3, &hex("30 07 | 00 05 41 F0 AA 9B 94"));
}

/// U+FEFF is kept, never stripped.
// v3:MQTT-1.5.3-3
#[test]
fn byte_order_mark_is_kept() {
    let p = publish("\u{FEFF}a", b"", QoS::AtMostOnce, 0);
    assert_vector(&p.into(), V3, &hex("30 06 | 00 04 EF BB BF 'a'"));
}

// v3:MQTT-3.3.1-4
#[test]
fn publish_qos_3() {
    malformed(
        "36 07 | 00 03 'a/b' | 00 01",
        DecodeError::InvalidQoS("PUBLISH"),
    );
    malformed(
        "3E 07 | 00 03 'a/b' | 00 01",
        DecodeError::InvalidQoS("PUBLISH"),
    );
}

// v3:MQTT-3.3.1-2
#[test]
fn publish_dup_with_qos0() {
    malformed("38 05 | 00 03 'a/b'", DecodeError::DupWithQoS0);
    let mut p = publish("a/b", b"", QoS::AtMostOnce, 0);
    p.dup = true;
    assert_eq!(encode_err(p), EncodeError::DupWithQoS0);
}

// v3:MQTT-3.3.2-2
#[test]
fn publish_topic_with_wildcards() {
    for wire in [
        "30 05 | 00 03 'a/+'",
        "30 05 | 00 03 'a/#'",
        "30 03 | 00 01 '#'",
    ] {
        assert_malformed(
            &hex(wire),
            V3,
            DecodeError::TopicNameWildcard,
            ReasonCode::TopicNameInvalid,
        );
    }
    assert_eq!(
        encode_err(publish("a/+", b"", QoS::AtMostOnce, 0)),
        EncodeError::TopicNameWildcard
    );
}

/// A topic name is at least one character long (4.7.3): 3.1.1 has no topic alias.
// v3:MQTT-4.7.3-1 v3:MQTT-3.3.2-1
#[test]
fn publish_empty_topic() {
    protocol_error("30 02 | 00 00", DecodeError::EmptyTopicName);
    protocol_error("32 04 | 00 00 | 00 01", DecodeError::EmptyTopicName);
    assert_eq!(
        encode_err(publish("", b"", QoS::AtMostOnce, 0)),
        EncodeError::EmptyTopicName
    );
}

// v3:MQTT-2.3.1-1
#[test]
fn publish_packet_identifier_zero() {
    protocol_error(
        "32 07 | 00 03 'a/b' | 00 00",
        DecodeError::ZeroPacketId(PacketType::Publish),
    );
}

// v3:MQTT-3.3.2-1 v3:MQTT-1.5.3-1 v3:MQTT-1.5.3-2
#[test]
fn publish_topic_must_be_a_valid_string() {
    let bad = |error| DecodeError::InvalidString {
        field: "topic name",
        error,
    };
    malformed("30 04 | 00 02 C3 28", bad(StringError::InvalidUtf8));
    // An encoded surrogate (U+D800).
    malformed("30 05 | 00 03 ED A0 80", bad(StringError::InvalidUtf8));
    malformed("30 04 | 00 02 'a' 00", bad(StringError::NullCharacter));
    // The topic length points past the end of the packet.
    malformed(
        "30 03 | 00 05 'a'",
        DecodeError::Truncated {
            field: "topic name",
        },
    );
    malformed(
        "32 04 | 00 01 't' 00",
        DecodeError::Truncated {
            field: "packet identifier",
        },
    );
}

#[test]
fn publish_properties_cannot_be_sent_to_v311() {
    let mut p = publish("t", b"", QoS::AtMostOnce, 0);
    p.properties.message_expiry_interval = Some(1);
    assert!(matches!(
        encode_err(p),
        EncodeError::NotInV311 {
            packet_type: PacketType::Publish,
            ..
        }
    ));
}

// ------------------------------------------------ PUBACK PUBREC PUBREL PUBCOMP

// v3:MQTT-3.6.1-1
#[test]
fn acks() {
    assert_vector(&PubAck::new(id(10)).into(), V3, &hex("40 02 00 0A"));
    assert_vector(&PubRec::new(id(10)).into(), V3, &hex("50 02 00 0A"));
    assert_vector(&PubRel::new(id(10)).into(), V3, &hex("62 02 00 0A"));
    assert_vector(&PubComp::new(id(10)).into(), V3, &hex("70 02 00 0A"));
    assert_vector(&PubAck::new(id(0xFFFF)).into(), V3, &hex("40 02 FF FF"));
    assert_vector(&PubRel::new(id(0x0102)).into(), V3, &hex("62 02 01 02"));
}

/// A 3.1.1 acknowledgement is exactly a packet identifier.
#[test]
fn acks_malformed() {
    for (first, packet_type) in [
        (0x40, PacketType::PubAck),
        (0x50, PacketType::PubRec),
        (0x62, PacketType::PubRel),
        (0x70, PacketType::PubComp),
    ] {
        protocol_error(
            &format!("{first:02x} 02 00 00"),
            DecodeError::ZeroPacketId(packet_type),
        );
        malformed(
            &format!("{first:02x} 01 00"),
            DecodeError::Truncated {
                field: "packet identifier",
            },
        );
        malformed(
            &format!("{first:02x} 00"),
            DecodeError::Truncated {
                field: "packet identifier",
            },
        );
        // A 5.0 reason code is not part of a 3.1.1 ack.
        malformed(
            &format!("{first:02x} 03 00 01 00"),
            DecodeError::TrailingBytes {
                packet_type,
                count: 1,
            },
        );
    }
}

// v3:MQTT-3.6.1-1 v3:MQTT-2.2.2-1 v3:MQTT-2.2.2-2
#[test]
fn pubrel_reserved_flags() {
    for flags in (0..16u8).filter(|f| *f != 2) {
        malformed(
            &format!("{:02x} 02 00 01", 0x60 | flags),
            DecodeError::ReservedFlags {
                packet_type: PacketType::PubRel,
                flags,
            },
        );
    }
}

#[test]
fn ack_reason_codes_cannot_be_sent_to_v311() {
    let mut ack = PubAck::new(id(1));
    ack.reason_code = PubAckReasonCode::NoMatchingSubscribers;
    assert!(matches!(
        encode_err(ack),
        EncodeError::NotInV311 {
            packet_type: PacketType::PubAck,
            what: "reason code"
        }
    ));
    let mut ack = PubComp::new(id(1));
    ack.properties.reason_string = Some("why".into());
    assert!(matches!(
        encode_err(ack),
        EncodeError::NotInV311 {
            packet_type: PacketType::PubComp,
            what: "properties"
        }
    ));
}

// ---------------------------------------------------------------- SUBSCRIBE

/// Spec 3.8.2.1 and 3.8.3.1, Figures 3.21 and 3.23: packet identifier 10,
/// `a/b` at QoS 1 and `c/d` at QoS 2.
// v3:MQTT-3.8.1-1 v3:MQTT-3.8.3-1 v3:MQTT-2.3.1-1
#[test]
fn subscribe_spec_example_figures_3_21_and_3_23() {
    let sub = Subscribe::new(
        id(10),
        vec![
            ("a/b".into(), SubscriptionOptions::new(QoS::AtLeastOnce)),
            ("c/d".into(), SubscriptionOptions::new(QoS::ExactlyOnce)),
        ],
    );
    assert_vector(
        &sub.into(),
        V3,
        &hex("82 0E | 00 0A | 00 03 'a/b' 01 | 00 03 'c/d' 02"),
    );
}

#[test]
fn subscribe_qos0_wildcards() {
    let sub = Subscribe::new(
        id(1),
        vec![("+/#".into(), SubscriptionOptions::new(QoS::AtMostOnce))],
    );
    assert_vector(&sub.into(), V3, &hex("82 08 | 00 01 | 00 03 '+/#' 00"));
}

// v3:MQTT-3.8.1-1 v3:MQTT-2.2.2-1 v3:MQTT-2.2.2-2
#[test]
fn subscribe_reserved_flags() {
    for flags in (0..16u8).filter(|f| *f != 2) {
        malformed(
            &format!("{:02x} 08 | 00 01 | 00 03 'a/b' 00", 0x80 | flags),
            DecodeError::ReservedFlags {
                packet_type: PacketType::Subscribe,
                flags,
            },
        );
    }
}

// v3:MQTT-3.8.3-3
#[test]
fn subscribe_without_topic_filters() {
    protocol_error(
        "82 02 | 00 0A",
        DecodeError::NoTopicFilters(PacketType::Subscribe),
    );
    assert_eq!(
        encode_err(Subscribe::new(id(1), Vec::new())),
        EncodeError::EmptyPayload(PacketType::Subscribe)
    );
}

// v3:MQTT-3.8.3-4
#[test]
fn subscribe_reserved_bits_and_qos_3() {
    // Bits 2..7 are reserved in 3.1.1 (they carry 5.0 options).
    for bit in 2..8 {
        let options = 1u8 << bit;
        malformed(
            &format!("82 08 | 00 0A | 00 03 'a/b' {options:02x}"),
            DecodeError::SubscriptionOptionsReserved(options),
        );
    }
    malformed(
        "82 08 | 00 0A | 00 03 'a/b' 03",
        DecodeError::InvalidQoS("subscription options"),
    );
    // 5.0 options cannot be sent to a 3.1.1 server.
    let sub = Subscribe::new(
        id(1),
        vec![(
            "a".into(),
            SubscriptionOptions {
                retain_handling: RetainHandling::DoNotSend,
                ..SubscriptionOptions::default()
            },
        )],
    );
    assert!(matches!(
        encode_err(sub),
        EncodeError::NotInV311 {
            packet_type: PacketType::Subscribe,
            ..
        }
    ));
}

// v3:MQTT-3.8.3-1 v3:MQTT-4.7.3-1
#[test]
fn subscribe_topic_filter_must_be_a_non_empty_string() {
    malformed(
        "82 07 | 00 0A | 00 02 C3 28 00",
        DecodeError::InvalidString {
            field: "topic filter",
            error: StringError::InvalidUtf8,
        },
    );
    protocol_error(
        "82 05 | 00 0A | 00 00 00",
        DecodeError::EmptyTopicFilter(PacketType::Subscribe),
    );
    let empty = Subscribe::new(
        id(1),
        vec![("".into(), SubscriptionOptions::new(QoS::AtMostOnce))],
    );
    assert_eq!(encode_err(empty), EncodeError::EmptyTopicFilter);
    assert_eq!(
        encode_err(Unsubscribe::new(id(1), vec!["a".into(), "".into()])),
        EncodeError::EmptyTopicFilter
    );
    malformed(
        "82 07 | 00 0A | 00 03 'a/b'",
        DecodeError::Truncated {
            field: "subscription options",
        },
    );
    protocol_error(
        "82 08 | 00 00 | 00 03 'a/b' 00",
        DecodeError::ZeroPacketId(PacketType::Subscribe),
    );
}

// ---------------------------------------------------------------- SUBACK

/// Spec 3.9.3.1, Figure 3.27: return codes 0, 2 and 128 (Failure).
// v3:MQTT-3.9.3-2
// v3:MQTT-3.9.3-1 (the codec's share: the return codes keep their order on the wire)
#[test]
fn suback_spec_example_figure_3_27() {
    let suback = SubAck::new(
        id(10),
        vec![
            SubAckReasonCode::GrantedQoS0,
            SubAckReasonCode::GrantedQoS2,
            SubAckReasonCode::UnspecifiedError,
        ],
    );
    assert_vector(&suback.into(), V3, &hex("90 05 | 00 0A | 00 02 80"));
    assert_vector(
        &SubAck::new(id(1), vec![SubAckReasonCode::GrantedQoS1]).into(),
        V3,
        &hex("90 03 | 00 01 | 01"),
    );
}

/// Every 5.0 failure code goes out as 0x80, the only 3.1.1 failure.
// v3:MQTT-3.9.3-2
#[test]
fn suback_failures_are_sent_as_0x80() {
    let suback = SubAck::new(
        id(1),
        vec![
            SubAckReasonCode::NotAuthorized,
            SubAckReasonCode::GrantedQoS1,
            SubAckReasonCode::WildcardSubscriptionsNotSupported,
        ],
    );
    assert_eq!(encode(&suback.into(), V3), hex("90 05 | 00 01 | 80 01 80"));
}

// v3:MQTT-3.9.3-2
#[test]
fn suback_reserved_return_codes() {
    for code in (0..=0xFF_u8).filter(|c| !matches!(c, 0 | 1 | 2 | 0x80)) {
        protocol_error(
            &format!("90 03 00 01 {code:02x}"),
            DecodeError::InvalidReasonCode {
                packet_type: PacketType::SubAck,
                code,
            },
        );
    }
    protocol_error(
        "90 02 00 01",
        DecodeError::NoReasonCodes(PacketType::SubAck),
    );
    assert_eq!(
        encode_err(SubAck::new(id(1), Vec::new())),
        EncodeError::EmptyPayload(PacketType::SubAck)
    );
}

// ---------------------------------------------------------------- UNSUBSCRIBE

/// Spec 3.10.3.1, Figure 3.30: `a/b` and `c/d`.
// v3:MQTT-3.10.1-1 v3:MQTT-3.10.3-1 v3:MQTT-2.3.1-1
#[test]
fn unsubscribe_spec_example_figure_3_30() {
    let unsub = Unsubscribe::new(id(10), vec!["a/b".into(), "c/d".into()]);
    assert_vector(
        &unsub.into(),
        V3,
        &hex("A2 0C | 00 0A | 00 03 'a/b' | 00 03 'c/d'"),
    );
}

// v3:MQTT-3.10.1-1 v3:MQTT-3.10.3-1 v3:MQTT-3.10.3-2 v3:MQTT-2.2.2-1 v3:MQTT-2.2.2-2
#[test]
fn unsubscribe_malformed() {
    for flags in (0..16u8).filter(|f| *f != 2) {
        malformed(
            &format!("{:02x} 07 | 00 01 | 00 03 'a/b'", 0xA0 | flags),
            DecodeError::ReservedFlags {
                packet_type: PacketType::Unsubscribe,
                flags,
            },
        );
    }
    protocol_error(
        "A2 02 | 00 0A",
        DecodeError::NoTopicFilters(PacketType::Unsubscribe),
    );
    assert_eq!(
        encode_err(Unsubscribe::new(id(1), Vec::new())),
        EncodeError::EmptyPayload(PacketType::Unsubscribe)
    );
    malformed(
        "A2 06 | 00 0A | 00 02 'a' FF",
        DecodeError::InvalidString {
            field: "topic filter",
            error: StringError::InvalidUtf8,
        },
    );
    protocol_error(
        "A2 04 | 00 0A | 00 00",
        DecodeError::EmptyTopicFilter(PacketType::Unsubscribe),
    );
    protocol_error(
        "A2 05 | 00 00 | 00 01 'a'",
        DecodeError::ZeroPacketId(PacketType::Unsubscribe),
    );
}

// ---------------------------------------------------------------- UNSUBACK

#[test]
fn unsuback() {
    assert_vector(
        &UnsubAck::new(id(10), Vec::new()).into(),
        V3,
        &hex("B0 02 00 0A"),
    );
    // 3.1.1 has no unsubscribe reason codes.
    assert!(matches!(
        encode_err(UnsubAck::new(id(1), vec![UnsubAckReasonCode::Success])),
        EncodeError::NotInV311 {
            packet_type: PacketType::UnsubAck,
            ..
        }
    ));
    malformed(
        "B0 03 00 0A 00",
        DecodeError::TrailingBytes {
            packet_type: PacketType::UnsubAck,
            count: 1,
        },
    );
    protocol_error(
        "B0 02 00 00",
        DecodeError::ZeroPacketId(PacketType::UnsubAck),
    );
}

// ------------------------------------------------- PINGREQ PINGRESP DISCONNECT

// v3:MQTT-2.2.2-1 v3:MQTT-2.2.2-2 v3:MQTT-3.14.1-1
#[test]
fn ping_and_disconnect() {
    assert_vector(&Packet::PingReq, V3, &hex("C0 00"));
    assert_vector(&Packet::PingResp, V3, &hex("D0 00"));
    assert_vector(&Disconnect::default().into(), V3, &hex("E0 00"));
    for (first, packet_type) in [
        (0xC0, PacketType::PingReq),
        (0xD0, PacketType::PingResp),
        (0xE0, PacketType::Disconnect),
    ] {
        for flags in 1..16u8 {
            malformed(
                &format!("{:02x} 00", first | flags),
                DecodeError::ReservedFlags { packet_type, flags },
            );
        }
        malformed(
            &format!("{first:02x} 01 00"),
            DecodeError::TrailingBytes {
                packet_type,
                count: 1,
            },
        );
    }
    // 3.1.1 DISCONNECT has no reason code.
    assert!(matches!(
        encode_err(Disconnect::new(DisconnectReasonCode::ServerBusy)),
        EncodeError::NotInV311 {
            packet_type: PacketType::Disconnect,
            ..
        }
    ));
}

/// Reserved flags of every packet type but PUBLISH.
// v3:MQTT-2.2.2-1 v3:MQTT-2.2.2-2
#[test]
fn reserved_flags_of_every_fixed_flag_packet() {
    for nibble in 1..=14u8 {
        let packet_type = PacketType::from_nibble(nibble).unwrap();
        let Some(expected) = packet_type.fixed_flags() else {
            continue;
        };
        for flags in (0..16u8).filter(|f| *f != expected) {
            let first = (nibble << 4) | flags;
            assert_malformed(
                &[first, 0x00],
                V3,
                DecodeError::ReservedFlags { packet_type, flags },
                ReasonCode::MalformedPacket,
            );
        }
    }
}

/// Type 0 is reserved; type 15 (AUTH) does not exist in 3.1.1.
#[test]
fn reserved_packet_types() {
    malformed("00 00", DecodeError::ReservedPacketType(0));
    malformed("F0 00", DecodeError::ReservedPacketType(15));
    let auth = Packet::Auth(fulmar_codec::Auth::default());
    assert!(matches!(
        encode_err(auth),
        EncodeError::NotInV311 {
            packet_type: PacketType::Auth,
            ..
        }
    ));
}
