//! Byte-exact MQTT 5.0 vectors: every packet type with every property it
//! may carry, every reason code of every packet, the spec's own examples, the
//! remaining-length boundaries, and malformed inputs with the exact
//! `DecodeError` and the reason code the receiver must send.
//!
//! Properties are encoded in struct-field order; decoding accepts any order.
//! SUBSCRIBE to AUTH are in `vectors_v5_subscribe_auth.rs`, the fixed header
//! and remaining length in `vectors_framing.rs`.

// The helpers below panic on bad fixtures, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod common;

use core::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;
use common::{
    assert_decodes_to, assert_malformed, assert_vector, cat, code_table, decode_one, frame, hex,
    id, not_in, props, string,
};
use fulmar_codec::{
    AckProperties, ConnAck, ConnAckProperties, Connect, ConnectProperties, ConnectReasonCode,
    DecodeError, EncodeError, Packet, PacketId, PacketType, PayloadFormat, ProtocolVersion, PubAck,
    PubAckReasonCode, PubComp, PubCompReasonCode, PubRec, PubRecReasonCode, PubRel,
    PubRelReasonCode, Publish, PublishProperties, QoS, ReasonCode, StringError, Will,
    WillProperties,
};

const V5: ProtocolVersion = ProtocolVersion::V5;

fn encode_err(packet: impl Into<Packet>) -> EncodeError {
    common::encode_err(packet, V5)
}

fn malformed(wire: &[u8], error: DecodeError) {
    assert_malformed(wire, V5, error, ReasonCode::MalformedPacket);
}

fn protocol_error(wire: &[u8], error: DecodeError) {
    assert_malformed(wire, V5, error, ReasonCode::ProtocolError);
}

// Reason code tables, copied from the spec (sections 3.2.2.2 to 3.7.2.1).
const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_CODES: &[u8] = &[0x00, 0x92];
// ---------------------------------------------------------------- CONNECT

/// Spec 3.1.2.12, Figure 3-6: `00 04 'MQTT' 05 CE 00 0A`, then the
/// properties `05 11 00 00 00 0A` (Session Expiry Interval 10), then the
/// payload in its mandatory order.
// v5:MQTT-3.1.2-9 v5:MQTT-3.1.2-12 v5:MQTT-3.1.2-17 v5:MQTT-3.1.2-19
// v5:MQTT-3.1.3-1 v5:MQTT-3.1.3-3 v5:MQTT-3.1.3-4 v5:MQTT-3.1.3-11 v5:MQTT-3.1.3-12
// v5:MQTT-2.2.2-1
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
        properties: ConnectProperties {
            session_expiry_interval: Some(10),
            ..ConnectProperties::default()
        },
        ..Connect::new(V5, "fulmar".into())
    };
    let wire = hex("10 30 | 00 04 'MQTT' 05 CE 00 0A | 05 11 00 00 00 0A \
                    | 00 06 'fulmar' | 00 | 00 06 'will/t' | 00 03 'bye' | 00 04 'user' | 00 02 'pw'");
    assert_vector(&connect.into(), V5, &wire);
}

/// Every CONNECT property and every Will property, in struct-field order;
/// 5.0 allows a password without a user name.
// v5:MQTT-3.1.2-16 v5:MQTT-3.1.2-18 v5:MQTT-1.5.7-1
#[test]
fn connect_every_property() {
    let connect = Connect {
        will: Some(Will {
            properties: WillProperties {
                will_delay_interval: Some(30),
                payload_format_indicator: Some(PayloadFormat::Utf8),
                message_expiry_interval: Some(60),
                content_type: Some("text/plain".into()),
                response_topic: Some("r".into()),
                correlation_data: Some(Bytes::from_static(b"c")),
                user_properties: vec![("w".into(), "1".into())],
            },
            ..Will::new("will".into(), Bytes::from_static(b"bye"))
        }),
        password: Some(Bytes::from_static(b"pw")),
        properties: ConnectProperties {
            session_expiry_interval: Some(u32::MAX),
            receive_maximum: NonZeroU16::new(20),
            maximum_packet_size: NonZeroU32::new(1 << 20),
            topic_alias_maximum: Some(10),
            request_response_information: Some(true),
            request_problem_information: Some(false),
            user_properties: vec![("a".into(), "b".into())],
            authentication_method: Some("SCRAM-SHA-1".into()),
            authentication_data: Some(Bytes::from_static(b"data")),
        },
        ..Connect::new(V5, "".into())
    };
    let connect_props = hex(
        "11 FF FF FF FF | 21 00 14 | 27 00 10 00 00 | 22 00 0A | 19 01 | 17 00 \
                             | 26 00 01 'a' 00 01 'b' | 15 00 0B 'SCRAM-SHA-1' | 16 00 04 'data'",
    );
    let will_props = hex(
        "18 00 00 00 1E | 01 01 | 02 00 00 00 3C | 03 00 0A 'text/plain' \
                          | 08 00 01 'r' | 09 00 01 'c' | 26 00 01 'w' 00 01 '1'",
    );
    let body = cat(&[
        &hex("00 04 'MQTT' 05 46 00 3C"),
        &props(&connect_props),
        &hex("00 00"),
        &props(&will_props),
        &hex("00 04 'will' | 00 03 'bye' | 00 02 'pw'"),
    ]);
    assert_vector(&connect.into(), V5, &frame(0x10, &body));
}

/// A CONNECT carries its own version: decoding with either connection
/// version gives the 5.0 packet, and a 3.1.1 CONNECT decodes as 3.1.1.
#[test]
fn connect_decodes_in_its_own_version() {
    let wire = hex("10 0E | 00 04 'MQTT' 05 02 00 3C | 00 | 00 01 'c'");
    let connect: Packet = Connect::new(V5, "c".into()).into();
    assert_vector(&connect, V5, &wire);
    assert_decodes_to(&wire, ProtocolVersion::V311, &connect);
    assert_decodes_to(
        &hex("10 0D | 00 04 'MQTT' 04 02 00 3C | 00 01 'c'"),
        V5,
        &Connect::new(ProtocolVersion::V311, "c".into()).into(),
    );
}

// v5:MQTT-3.1.2-1 v5:MQTT-3.1.2-2 v5:MQTT-3.1.4-1
#[test]
fn connect_protocol_name_and_level() {
    assert_malformed(
        &hex("10 0F | 00 06 'MQIsdx' 03 02 00 3C | 00 01 'c'"),
        V5,
        DecodeError::InvalidProtocolName { level: Some(3) },
        ReasonCode::UnsupportedProtocolVersion,
    );
    for level in [0u8, 1, 2, 3, 6, 0x83, 0x86] {
        let body = cat(&[&hex("00 04 'MQTT'"), &[level, 0x02, 0, 60, 0], &string("c")]);
        assert_malformed(
            &frame(0x10, &body),
            V5,
            DecodeError::UnsupportedProtocolLevel(level),
            ReasonCode::UnsupportedProtocolVersion,
        );
    }
}

/// A bridge's CONNECT (mosquitto's `try_private`): level 0x85 is 5.0
/// with the bridge bit, kept through a round trip.
#[test]
fn connect_from_a_bridge() {
    let connect = Connect {
        bridge: true,
        ..Connect::new(ProtocolVersion::V5, "c".into())
    };
    let wire = hex("10 0E | 00 04 'MQTT' 85 02 00 3C | 00 | 00 01 'c'");
    assert_vector(&connect.into(), V5, &wire);
}

// v5:MQTT-3.1.2-3 v5:MQTT-3.1.2-11 v5:MQTT-3.1.2-12 v5:MQTT-3.1.2-13 v5:MQTT-3.1.4-1
#[test]
fn connect_flags() {
    malformed(
        &hex("10 0E | 00 04 'MQTT' 05 03 00 3C | 00 | 00 01 'c'"),
        DecodeError::ConnectReservedFlag,
    );
    for flags in [0x0A, 0x12, 0x1A, 0x22, 0x3A] {
        let body = cat(&[&hex("00 04 'MQTT' 05"), &[flags, 0, 60, 0], &string("c")]);
        malformed(&frame(0x10, &body), DecodeError::WillFlagsWithoutWill);
    }
    malformed(
        &hex("10 15 | 00 04 'MQTT' 05 1E 00 3C | 00 | 00 01 'c' | 00 | 00 01 'w' | 00 01 'x'"),
        DecodeError::InvalidQoS("will QoS"),
    );
}

// v5:MQTT-3.1.2-16 v5:MQTT-3.1.2-17 v5:MQTT-3.1.2-18 v5:MQTT-3.1.2-19 v5:MQTT-3.1.4-1
#[test]
fn connect_flags_must_match_the_payload() {
    malformed(
        &hex("10 0E | 00 04 'MQTT' 05 82 00 3C | 00 | 00 01 'c'"),
        DecodeError::Truncated { field: "user name" },
    );
    malformed(
        &hex("10 0E | 00 04 'MQTT' 05 42 00 3C | 00 | 00 01 'c'"),
        DecodeError::Truncated { field: "password" },
    );
    malformed(
        &hex("10 11 | 00 04 'MQTT' 05 02 00 3C | 00 | 00 01 'c' | 00 01 'u'"),
        DecodeError::TrailingBytes {
            packet_type: PacketType::Connect,
            count: 3,
        },
    );
    // A will flag without will properties, topic and payload.
    malformed(
        &hex("10 0E | 00 04 'MQTT' 05 06 00 3C | 00 | 00 01 'c'"),
        DecodeError::Truncated {
            field: "property length",
        },
    );
}

// v5:MQTT-3.1.3-4 v5:MQTT-3.1.3-11 v5:MQTT-3.1.3-12 v5:MQTT-1.5.4-1 v5:MQTT-1.5.4-2
#[test]
fn connect_strings_must_be_valid_utf8() {
    let bad = |field, error| DecodeError::InvalidString { field, error };
    malformed(
        &hex("10 0E | 00 04 'MQTT' 05 02 00 3C | 00 | 00 01 FF"),
        bad("client identifier", StringError::InvalidUtf8),
    );
    malformed(
        &hex("10 15 | 00 04 'MQTT' 05 06 00 3C | 00 | 00 01 'c' | 00 | 00 01 00 | 00 01 'x'"),
        bad("will topic", StringError::NullCharacter),
    );
    malformed(
        &hex("10 11 | 00 04 'MQTT' 05 82 00 3C | 00 | 00 01 'c' | 00 01 C1"),
        bad("user name", StringError::InvalidUtf8),
    );
}

#[test]
fn connect_authentication_data_without_method() {
    protocol_error(
        &hex("10 12 | 00 04 'MQTT' 05 02 00 3C | 04 16 00 01 'd' | 00 01 'c'"),
        DecodeError::AuthDataWithoutMethod,
    );
    let mut connect = Connect::new(V5, "c".into());
    connect.properties.authentication_data = Some(Bytes::from_static(b"d"));
    assert_eq!(encode_err(connect), EncodeError::AuthDataWithoutMethod);
}

/// A padded remaining length is refused even on a CONNECT.
// v5:MQTT-1.5.5-1
#[test]
fn connect_remaining_length_must_be_minimal() {
    malformed(
        &hex("10 8E 00 | 00 04 'MQTT' 05 02 00 3C | 00 | 00 01 'c'"),
        DecodeError::NonMinimalVarInt,
    );
}

// ---------------------------------------------------------------- CONNACK

/// Every Connect Reason Code, with an empty property block.
// v5:MQTT-3.2.2-8 v5:MQTT-2.2.2-1
#[test]
fn connack_every_reason_code() {
    for code in code_table::<ConnectReasonCode>(CONNACK_CODES) {
        assert_vector(
            &ConnAck::new(false, code).into(),
            V5,
            &[0x20, 0x03, 0x00, code.as_u8(), 0x00],
        );
    }
    assert_vector(
        &ConnAck::new(true, ConnectReasonCode::Success).into(),
        V5,
        &hex("20 03 01 00 00"),
    );
    for code in not_in(CONNACK_CODES) {
        protocol_error(
            &[0x20, 0x03, 0x00, code, 0x00],
            DecodeError::InvalidReasonCode {
                packet_type: PacketType::ConnAck,
                code,
            },
        );
    }
}

/// Every CONNACK property, in struct-field order.
// v5:MQTT-1.5.7-1
#[test]
fn connack_every_property() {
    let connack = ConnAck {
        session_present: true,
        reason_code: ConnectReasonCode::Success,
        properties: ConnAckProperties {
            session_expiry_interval: Some(60),
            receive_maximum: NonZeroU16::new(100),
            maximum_qos: Some(QoS::AtLeastOnce),
            retain_available: Some(false),
            maximum_packet_size: NonZeroU32::new(65_536),
            assigned_client_identifier: Some("auto-1".into()),
            topic_alias_maximum: Some(5),
            reason_string: Some("ok".into()),
            user_properties: vec![("k".into(), "v".into())],
            wildcard_subscription_available: Some(true),
            subscription_identifiers_available: Some(false),
            shared_subscription_available: Some(true),
            server_keep_alive: Some(30),
            response_information: Some("resp/".into()),
            server_reference: Some("other:1883".into()),
            authentication_method: Some("m".into()),
            authentication_data: Some(Bytes::from_static(b"d")),
        },
    };
    let properties = hex(
        "11 00 00 00 3C | 21 00 64 | 24 01 | 25 00 | 27 00 01 00 00 \
                          | 12 00 06 'auto-1' | 22 00 05 | 1F 00 02 'ok' | 26 00 01 'k' 00 01 'v' \
                          | 28 01 | 29 00 | 2A 01 | 13 00 1E | 1A 00 05 'resp/' \
                          | 1C 00 0A 'other:1883' | 15 00 01 'm' | 16 00 01 'd'",
    );
    let wire = frame(0x20, &cat(&[&hex("01 00"), &props(&properties)]));
    assert_vector(&connack.into(), V5, &wire);
}

// v5:MQTT-3.2.2-1 v5:MQTT-3.2.2-6 v5:MQTT-2.2.2-1
#[test]
fn connack_malformed() {
    malformed(&hex("20 03 02 00 00"), DecodeError::ConnAckReservedFlags);
    malformed(&hex("20 03 FE 00 00"), DecodeError::ConnAckReservedFlags);
    protocol_error(&hex("20 03 01 80 00"), DecodeError::SessionPresentOnError);
    assert_eq!(
        encode_err(ConnAck::new(true, ConnectReasonCode::ServerBusy)),
        EncodeError::SessionPresentOnError
    );
    // The Property Length is not optional in CONNACK.
    malformed(
        &hex("20 02 00 00"),
        DecodeError::Truncated {
            field: "property length",
        },
    );
    // Maximum QoS can only announce 0 or 1.
    protocol_error(
        &hex("20 05 00 00 02 24 02"),
        DecodeError::InvalidPropertyValue { id: 0x24, value: 2 },
    );
    let mut connack = ConnAck::new(false, ConnectReasonCode::Success);
    connack.properties.maximum_qos = Some(QoS::ExactlyOnce);
    assert!(matches!(
        encode_err(connack),
        EncodeError::InvalidProperty(_)
    ));
}

// ---------------------------------------------------------------- PUBLISH

fn publish(topic: &'static str, payload: &'static [u8], qos: QoS, packet_id: u16) -> Publish {
    let mut p = Publish::new(topic.into(), Bytes::from_static(payload));
    p.qos = qos;
    p.packet_id = PacketId::new(packet_id);
    p
}

/// Spec 3.3.2.3.9, Figure 3-9: topic `a/b`, packet identifier 10, no
/// properties (a Property Length of zero).
// v5:MQTT-3.3.2-1 v5:MQTT-2.2.2-1 v5:MQTT-2.2.1-3
#[test]
fn publish_spec_example_figure_3_9() {
    let p = publish("a/b", b"", QoS::AtLeastOnce, 10);
    assert_vector(&p.into(), V5, &hex("32 08 | 00 03 'a/b' | 00 0A | 00"));
}

// v5:MQTT-2.2.1-2 v5:MQTT-3.3.1-1 v5:MQTT-3.3.1-2
#[test]
fn publish_flags_and_packet_identifier() {
    assert_vector(
        &publish("a/b", b"hi", QoS::AtMostOnce, 0).into(),
        V5,
        &hex("30 08 | 00 03 'a/b' | 00 | 'hi'"),
    );
    let mut p = publish("t", b"x", QoS::ExactlyOnce, 0xFFFF);
    p.dup = true;
    p.retain = true;
    assert_vector(&p.into(), V5, &hex("3D 07 | 00 01 't' | FF FF | 00 | 'x'"));
    assert_eq!(
        encode_err(publish("t", b"", QoS::AtMostOnce, 1)),
        EncodeError::UnexpectedPacketId
    );
    let mut p = publish("t", b"", QoS::AtMostOnce, 0);
    p.dup = true;
    assert_eq!(encode_err(p), EncodeError::DupWithQoS0);
    malformed(&hex("38 04 | 00 01 't' | 00"), DecodeError::DupWithQoS0);
}

// v5:MQTT-3.3.1-4
#[test]
fn publish_qos_3() {
    malformed(
        &hex("36 06 | 00 01 't' | 00 01 | 00"),
        DecodeError::InvalidQoS("PUBLISH"),
    );
}

/// Every PUBLISH property, in struct-field order; a User Property name may
/// repeat and the order is kept; the Subscription Identifier may repeat.
// v5:MQTT-3.3.2-13 v5:MQTT-3.3.2-19 v5:MQTT-1.5.7-1
#[test]
fn publish_every_property() {
    let p = Publish {
        properties: PublishProperties {
            payload_format_indicator: Some(PayloadFormat::Utf8),
            message_expiry_interval: Some(3600),
            topic_alias: NonZeroU16::new(7),
            response_topic: Some("reply/1".into()),
            correlation_data: Some(Bytes::from_static(&[1, 2, 3])),
            user_properties: vec![("a".into(), "2".into()), ("a".into(), "1".into())],
            subscription_identifiers: vec![
                NonZeroU32::new(1).unwrap(),
                NonZeroU32::new(268_435_455).unwrap(),
            ],
            content_type: Some("text/plain".into()),
        },
        ..publish("t", b"{}", QoS::AtLeastOnce, 1)
    };
    let properties = hex(
        "01 01 | 02 00 00 0E 10 | 23 00 07 | 08 00 07 'reply/1' | 09 00 03 01 02 03 \
                          | 26 00 01 'a' 00 01 '2' | 26 00 01 'a' 00 01 '1' \
                          | 0B 01 | 0B FF FF FF 7F | 03 00 0A 'text/plain'",
    );
    let wire = frame(
        0x32,
        &cat(&[&hex("00 01 't' | 00 01"), &props(&properties), b"{}"]),
    );
    assert_vector(&p.into(), V5, &wire);
}

/// Properties may come in any order on the wire.
#[test]
fn publish_properties_in_any_order() {
    let mut p = publish("t", b"", QoS::AtMostOnce, 0);
    p.properties.content_type = Some("c".into());
    p.properties.payload_format_indicator = Some(PayloadFormat::Unspecified);
    assert_decodes_to(
        &hex("30 0A | 00 01 't' | 06 03 00 01 'c' 01 00"),
        V5,
        &p.clone().into(),
    );
    assert_vector(
        &p.into(),
        V5,
        &hex("30 0A | 00 01 't' | 06 01 00 03 00 01 'c'"),
    );
}

/// With a Topic Alias the Topic Name may be empty.
// v5:MQTT-3.3.2-8 v5:MQTT-4.7.3-1
#[test]
fn publish_topic_alias() {
    let mut p = publish("", b"x", QoS::AtMostOnce, 0);
    p.properties.topic_alias = NonZeroU16::new(1);
    assert_vector(&p.into(), V5, &hex("30 07 | 00 00 | 03 23 00 01 | 'x'"));
    assert_malformed(
        &hex("30 08 | 00 01 't' | 03 23 00 00 | 'x'"),
        V5,
        DecodeError::ZeroTopicAlias,
        ReasonCode::TopicAliasInvalid,
    );
    protocol_error(
        &hex("30 04 | 00 00 | 00 | 'x'"),
        DecodeError::EmptyTopicName,
    );
    assert_eq!(
        encode_err(publish("", b"", QoS::AtMostOnce, 0)),
        EncodeError::EmptyTopicName
    );
}

// v5:MQTT-3.3.2-2 v5:MQTT-3.3.2-14
#[test]
fn publish_wildcards() {
    assert_malformed(
        &hex("30 06 | 00 03 'a/+' | 00"),
        V5,
        DecodeError::TopicNameWildcard,
        ReasonCode::TopicNameInvalid,
    );
    protocol_error(
        &hex("30 0A | 00 01 't' | 06 08 00 03 'a/#'"),
        DecodeError::ResponseTopicWildcard,
    );
    let mut p = publish("t", b"", QoS::AtMostOnce, 0);
    p.properties.response_topic = Some("r/+".into());
    assert_eq!(encode_err(p), EncodeError::ResponseTopicWildcard);
}

// v5:MQTT-3.3.2-1 v5:MQTT-3.3.2-13 v5:MQTT-3.3.2-19 v5:MQTT-1.5.7-1
// v5:MQTT-1.5.4-1 v5:MQTT-1.5.4-2
#[test]
fn publish_strings_must_be_valid() {
    let bad = |field, error| DecodeError::InvalidString { field, error };
    malformed(
        &hex("30 05 | 00 02 C3 28 | 00"),
        bad("topic name", StringError::InvalidUtf8),
    );
    malformed(
        &hex("30 08 | 00 01 't' | 04 08 00 01 FF"),
        bad("response topic", StringError::InvalidUtf8),
    );
    malformed(
        &hex("30 09 | 00 01 't' | 05 03 00 02 'a' 00"),
        bad("content type", StringError::NullCharacter),
    );
    malformed(
        &hex("30 0B | 00 01 't' | 07 26 00 01 80 00 01 'v'"),
        bad("user property name", StringError::InvalidUtf8),
    );
    malformed(
        &hex("30 0B | 00 01 't' | 07 26 00 01 'k' 00 01 00"),
        bad("user property value", StringError::NullCharacter),
    );
}

/// Spec 1.5.4, Figure 1-2: "A𪛔" is `00 05 41 F0 AA 9B 94`; U+FEFF is kept.
// v5:MQTT-1.5.4-1 v5:MQTT-1.5.4-3
#[test]
fn utf8_string_spec_example_figure_1_2() {
    assert_vector(
        &publish("A\u{2A6D4}", b"", QoS::AtMostOnce, 0).into(),
        V5,
        &hex("30 08 | 00 05 41 F0 AA 9B 94 | 00"),
    );
    assert_vector(
        &publish("\u{FEFF}", b"", QoS::AtMostOnce, 0).into(),
        V5,
        &hex("30 06 | 00 03 EF BB BF | 00"),
    );
}

/// Property-level errors: duplicates, forbidden values, lengths.
// v5:MQTT-1.5.5-1
#[test]
fn publish_property_errors() {
    protocol_error(
        &hex("30 0E | 00 01 't' | 0A 02 00 00 00 01 02 00 00 00 02"),
        DecodeError::DuplicateProperty {
            id: 0x02,
            context: "PUBLISH",
        },
    );
    protocol_error(
        &hex("30 06 | 00 01 't' | 02 01 02"),
        DecodeError::InvalidPropertyValue { id: 0x01, value: 2 },
    );
    protocol_error(
        &hex("30 06 | 00 01 't' | 02 0B 00"),
        DecodeError::InvalidPropertyValue { id: 0x0B, value: 0 },
    );
    // A padded Subscription Identifier.
    malformed(
        &hex("30 07 | 00 01 't' | 03 0B 81 00"),
        DecodeError::NonMinimalVarInt,
    );
    // The Property Length runs past the packet.
    malformed(
        &hex("30 05 | 00 01 't' | 05 01"),
        DecodeError::PropertyLengthOverrun {
            len: 5,
            available: 1,
        },
    );
    // A padded Property Length.
    malformed(
        &hex("30 05 | 00 01 't' | 80 00"),
        DecodeError::NonMinimalVarInt,
    );
    // A property whose value runs past the Property Length.
    malformed(
        &hex("30 08 | 00 01 't' | 02 02 00 | 00 00"),
        DecodeError::Truncated { field: "property" },
    );
    // A padded property identifier.
    malformed(
        &hex("30 07 | 00 01 't' | 03 81 00 00"),
        DecodeError::NonMinimalVarInt,
    );
    // A two-byte property identifier (129) exists in no packet.
    malformed(
        &hex("30 06 | 00 01 't' | 02 81 01"),
        DecodeError::PropertyNotAllowed {
            id: 129,
            context: "PUBLISH",
        },
    );
    // No Property Length at all.
    malformed(
        &hex("30 03 | 00 01 't'"),
        DecodeError::Truncated {
            field: "property length",
        },
    );
    let mut p = publish("t", b"", QoS::AtMostOnce, 0);
    p.properties.subscription_identifiers = vec![NonZeroU32::new(268_435_456).unwrap()];
    assert!(matches!(encode_err(p), EncodeError::InvalidProperty(_)));
}

// v5:MQTT-2.2.1-3
#[test]
fn publish_packet_identifier_zero() {
    protocol_error(
        &hex("32 06 | 00 01 't' | 00 00 | 00"),
        DecodeError::ZeroPacketId(PacketType::Publish),
    );
}

/// The Payload Format Indicator is carried, not enforced: a receiver checks it.
#[test]
fn publish_payload_format_is_not_enforced_by_the_codec() {
    let wire = hex("30 07 | 00 01 't' | 02 01 01 | FF");
    let Packet::Publish(p) = decode_one(&wire, V5).unwrap() else {
        panic!("not a PUBLISH")
    };
    assert_eq!(
        p.properties.payload_format_indicator,
        Some(PayloadFormat::Utf8)
    );
    assert!(!p.payload_format_is_valid());
}

// ------------------------------------------------ PUBACK PUBREC PUBREL PUBCOMP

fn ack(first: u8, code: u8, properties: AckProperties) -> Packet {
    let packet_id = id(10);
    match first >> 4 {
        4 => PubAck {
            packet_id,
            reason_code: PubAckReasonCode::try_from(code).unwrap(),
            properties,
        }
        .into(),
        5 => PubRec {
            packet_id,
            reason_code: PubRecReasonCode::try_from(code).unwrap(),
            properties,
        }
        .into(),
        6 => PubRel {
            packet_id,
            reason_code: PubRelReasonCode::try_from(code).unwrap(),
            properties,
        }
        .into(),
        _ => PubComp {
            packet_id,
            reason_code: PubCompReasonCode::try_from(code).unwrap(),
            properties,
        }
        .into(),
    }
}

const ACKS: [(u8, PacketType, &[u8]); 4] = [
    (0x40, PacketType::PubAck, PUBACK_CODES),
    (0x50, PacketType::PubRec, PUBACK_CODES),
    (0x62, PacketType::PubRel, PUBREL_CODES),
    (0x70, PacketType::PubComp, PUBREL_CODES),
];

/// Every reason code of every acknowledgement: Success without properties is
/// the packet identifier alone; another code without properties omits the
/// Property Length; with properties everything is present.
// v5:MQTT-3.4.2-1 v5:MQTT-3.5.2-1 v5:MQTT-3.6.2-1 v5:MQTT-3.7.2-1 v5:MQTT-3.6.1-1
#[test]
fn acks_every_reason_code() {
    code_table::<PubAckReasonCode>(PUBACK_CODES);
    code_table::<PubRecReasonCode>(PUBACK_CODES);
    code_table::<PubRelReasonCode>(PUBREL_CODES);
    code_table::<PubCompReasonCode>(PUBREL_CODES);
    let with_props = AckProperties {
        reason_string: Some("r".into()),
        user_properties: vec![("k".into(), "v".into())],
    };
    let props_wire = props(&hex("1F 00 01 'r' | 26 00 01 'k' 00 01 'v'"));
    for (first, packet_type, codes) in ACKS {
        assert_vector(
            &ack(first, 0, AckProperties::default()),
            V5,
            &[first, 0x02, 0x00, 0x0A],
        );
        for &code in codes {
            if code != 0 {
                assert_vector(
                    &ack(first, code, AckProperties::default()),
                    V5,
                    &[first, 0x03, 0x00, 0x0A, code],
                );
            }
            let body = cat(&[&[0x00, 0x0A, code], &props_wire]);
            assert_vector(
                &ack(first, code, with_props.clone()),
                V5,
                &frame(first, &body),
            );
        }
        for code in not_in(codes) {
            protocol_error(
                &[first, 0x03, 0x00, 0x0A, code],
                DecodeError::InvalidReasonCode { packet_type, code },
            );
        }
    }
}

/// The long forms of Success are accepted too (spec 3.4.2.1, 3.4.2.2.1).
#[test]
fn acks_long_forms_of_success() {
    for (first, packet_type, _) in ACKS {
        let success = ack(first, 0, AckProperties::default());
        assert_decodes_to(&[first, 0x03, 0x00, 0x0A, 0x00], V5, &success);
        assert_decodes_to(&[first, 0x04, 0x00, 0x0A, 0x00, 0x00], V5, &success);
        protocol_error(
            &[first, 0x02, 0x00, 0x00],
            DecodeError::ZeroPacketId(packet_type),
        );
        malformed(
            &[first, 0x05, 0x00, 0x0A, 0x00, 0x05, 0x1F],
            DecodeError::PropertyLengthOverrun {
                len: 5,
                available: 1,
            },
        );
    }
}

/// Fitting an acknowledgement into the receiver's Maximum Packet Size
/// drops the Reason String first, then the User Properties.
// v5:MQTT-3.4.2-2 v5:MQTT-3.4.2-3
#[test]
fn ack_trimmed_to_the_maximum_packet_size() {
    let full = PubAck {
        packet_id: id(10),
        reason_code: PubAckReasonCode::NoMatchingSubscribers,
        properties: AckProperties {
            reason_string: Some("rrrr".into()),
            user_properties: vec![("k".into(), "v".into())],
        },
    };
    let mut p = Packet::from(full.clone());
    assert_eq!(p.trim_to_fit(V5, 20), Ok(true));
    assert_vector(
        &p,
        V5,
        &hex("40 12 | 00 0A | 10 | 0E 1F 00 04 'rrrr' 26 00 01 'k' 00 01 'v'"),
    );
    assert_eq!(p.trim_to_fit(V5, 13), Ok(true));
    assert_vector(
        &p,
        V5,
        &hex("40 0B | 00 0A | 10 | 07 26 00 01 'k' 00 01 'v'"),
    );
    let mut p = Packet::from(full);
    assert_eq!(p.trim_to_fit(V5, 12), Ok(true));
    assert_vector(&p, V5, &hex("40 03 | 00 0A | 10"));
    assert_eq!(p.trim_to_fit(V5, 4), Ok(false));
}

// v5:MQTT-3.6.1-1 v5:MQTT-2.1.3-1
#[test]
fn pubrel_reserved_flags() {
    for flags in (0..16u8).filter(|f| *f != 2) {
        malformed(
            &[0x60 | flags, 0x02, 0x00, 0x01],
            DecodeError::ReservedFlags {
                packet_type: PacketType::PubRel,
                flags,
            },
        );
    }
}
