//! PUBLISH.

use core::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};

use super::*;
use crate::{
    EncodeError, MqttString, PacketId, PacketType, PayloadFormat, Publish, PublishProperties, QoS,
    ReasonCode,
};

fn qos1(topic: &'static str, payload: &'static [u8], id: u16) -> Publish {
    Publish {
        qos: QoS::AtLeastOnce,
        packet_id: PacketId::new(id),
        ..Publish::new(MqttString::from(topic), Bytes::from_static(payload))
    }
}

#[test]
fn v311_qos0_bytes() {
    let p = Publish::new("a/b".into(), Bytes::from_static(b"hi"));
    let bytes = round_trip(&p.clone().into(), V3);
    assert_eq!(bytes, [&[0x30, 0x07][..], &s("a/b"), b"hi"].concat());
    assert_eq!(p.encoded_len(V3).unwrap(), 9);
}

#[test]
fn v311_qos1_dup_retain_bytes() {
    let mut p = qos1("t", b"", 10);
    p.dup = true;
    p.retain = true;
    let bytes = round_trip(&p.into(), V3);
    assert_eq!(bytes, [&[0x3B, 0x05][..], &s("t"), &[0x00, 0x0A]].concat());
}

#[test]
fn v5_empty_properties_are_a_zero_length() {
    // MQTT-2.2.2-1
    let p = Publish::new("t".into(), Bytes::from_static(b"x"));
    let bytes = round_trip(&p.into(), V5);
    assert_eq!(bytes, [&[0x30, 0x05][..], &s("t"), &[0x00], b"x"].concat());
}

#[test]
fn v5_all_properties_round_trip() {
    let mut p = qos1("sensors/1", b"{\"t\":21}", 7);
    p.qos = QoS::ExactlyOnce;
    p.properties = PublishProperties {
        payload_format_indicator: Some(PayloadFormat::Utf8),
        message_expiry_interval: Some(3600),
        topic_alias: NonZeroU16::new(3),
        response_topic: Some("reply/1".into()),
        correlation_data: Some(Bytes::from_static(&[1, 2, 3])),
        user_properties: vec![("k".into(), "v".into()), ("k".into(), "v2".into())],
        subscription_identifiers: vec![
            NonZeroU32::new(1).unwrap(),
            NonZeroU32::new(268_435_455).unwrap(),
        ],
        content_type: Some("application/json".into()),
    };
    assert!(p.payload_format_is_valid());
    round_trip(&p.into(), V5);
}

#[test]
fn qos_3_is_malformed() {
    // MQTT-3.3.1-4
    let bytes = frame(0x36, &[&s("t")[..], &[0, 1]].concat());
    let err = dec(&bytes, V3).unwrap_err();
    assert_eq!(err, DecodeError::InvalidQoS("PUBLISH"));
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
}

#[test]
fn dup_on_qos0() {
    // MQTT-3.3.1-2
    let bytes = frame(0x38, &s("t"));
    assert_eq!(dec(&bytes, V5), Err(DecodeError::DupWithQoS0));
    let mut p = Publish::new("t".into(), Bytes::new());
    p.dup = true;
    assert_eq!(
        p.encode(V5, &mut BytesMut::new()),
        Err(EncodeError::DupWithQoS0)
    );
}

#[test]
fn zero_packet_id() {
    // v5:MQTT-2.2.1-3 v3:MQTT-2.3.1-1
    let bytes = frame(0x32, &[&s("t")[..], &[0, 0]].concat());
    assert_eq!(
        dec(&bytes, V3),
        Err(DecodeError::ZeroPacketId(PacketType::Publish))
    );
    assert_eq!(
        dec(&bytes, V5).unwrap_err().reason_code(),
        ReasonCode::ProtocolError
    );
}

#[test]
fn packet_id_presence_follows_qos() {
    // v5:MQTT-2.2.1-2 v3:MQTT-2.3.1-5: no packet identifier at QoS 0.
    let mut p = Publish::new("t".into(), Bytes::new());
    p.packet_id = PacketId::new(1);
    assert_eq!(
        p.encode(V3, &mut BytesMut::new()),
        Err(EncodeError::UnexpectedPacketId)
    );
    let mut p = qos1("t", b"", 1);
    p.packet_id = None;
    assert_eq!(
        p.encode(V5, &mut BytesMut::new()),
        Err(EncodeError::MissingPacketId(1))
    );
    // A QoS 0 PUBLISH decodes with no identifier: the two bytes are payload.
    let bytes = frame(0x30, &[&s("t")[..], &[0, 1]].concat());
    let Packet::Publish(p) = dec(&bytes, V3).unwrap() else {
        panic!()
    };
    assert_eq!(p.packet_id, None);
    assert_eq!(&p.payload[..], &[0, 1]);
}

#[test]
fn empty_topic() {
    // v3:MQTT-4.7.3-1
    let bytes = frame(0x30, &s(""));
    assert_eq!(dec(&bytes, V3), Err(DecodeError::EmptyTopicName));
    // 5.0: an empty topic needs a Topic Alias.
    let bytes = frame(0x30, &[&s("")[..], &[0]].concat());
    assert_eq!(dec(&bytes, V5), Err(DecodeError::EmptyTopicName));
    let mut p = Publish::new(MqttString::new(), Bytes::from_static(b"x"));
    assert_eq!(
        p.encode(V5, &mut BytesMut::new()),
        Err(EncodeError::EmptyTopicName)
    );
    p.properties.topic_alias = NonZeroU16::new(1);
    round_trip(&p.clone().into(), V5);
    assert!(matches!(
        p.encode(V3, &mut BytesMut::new()),
        Err(EncodeError::NotInV311 { .. })
    ));
}

#[test]
fn topic_name_with_wildcards() {
    // MQTT-3.3.2-2 v5:MQTT-4.7.0-1 v3:MQTT-4.7.1-1
    for topic in ["a/+", "#", "a/#/b"] {
        let bytes = frame(0x30, &s(topic));
        assert_eq!(dec(&bytes, V3), Err(DecodeError::TopicNameWildcard));
    }
    assert_eq!(
        DecodeError::TopicNameWildcard.reason_code(),
        ReasonCode::TopicNameInvalid
    );
}

#[test]
fn wildcards_are_refused_on_encode() {
    let p = Publish::new("a/+".into(), Bytes::new());
    assert_eq!(
        p.encode(V3, &mut BytesMut::new()),
        Err(EncodeError::TopicNameWildcard)
    );
    let mut p = Publish::new("a".into(), Bytes::new());
    p.properties.response_topic = Some("r/#".into());
    assert_eq!(
        p.encode(V5, &mut BytesMut::new()),
        Err(EncodeError::ResponseTopicWildcard)
    );
}

#[test]
fn response_topic_with_wildcards() {
    // v5:MQTT-3.3.2-14
    let bytes = frame(0x30, &[&s("t")[..], &[4, 0x08, 0, 1, b'+']].concat());
    let err = dec(&bytes, V5).unwrap_err();
    assert_eq!(err, DecodeError::ResponseTopicWildcard);
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
}

#[test]
fn topic_name_must_be_utf8() {
    // MQTT-3.3.2-1 MQTT-1.5.4-1 v3:MQTT-1.5.3-1
    let bytes = frame(0x30, &[0x00, 0x02, 0xC3, 0x28]);
    let err = dec(&bytes, V3).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::InvalidString {
                field: "topic name",
                ..
            }
        ),
        "{err}"
    );
    // MQTT-1.5.4-2 v3:MQTT-1.5.3-2 v5:MQTT-4.7.3-2 v3:MQTT-4.7.3-2
    let bytes = frame(0x30, &[0x00, 0x02, b'a', 0x00]);
    assert!(matches!(
        dec(&bytes, V5),
        Err(DecodeError::InvalidString {
            error: crate::StringError::NullCharacter,
            ..
        })
    ));
}

#[test]
fn topic_length_beyond_packet() {
    let bytes = frame(0x30, &[0x00, 0x09, b'a']);
    assert_eq!(
        dec(&bytes, V3),
        Err(DecodeError::Truncated {
            field: "topic name"
        })
    );
}

#[test]
fn payload_format_indicator() {
    // 1 with a non-UTF-8 payload is not a codec error.
    let bytes = frame(0x30, &[&s("t")[..], &[2, 0x01, 1], &[0xFF]].concat());
    let Packet::Publish(p) = dec(&bytes, V5).unwrap() else {
        panic!()
    };
    assert_eq!(
        p.properties.payload_format_indicator,
        Some(PayloadFormat::Utf8)
    );
    assert!(!p.payload_format_is_valid());
    // Values other than 0 and 1 are.
    let bytes = frame(0x30, &[&s("t")[..], &[2, 0x01, 2]].concat());
    assert_eq!(
        dec(&bytes, V5),
        Err(DecodeError::InvalidPropertyValue { id: 1, value: 2 })
    );
}

#[test]
fn topic_alias_zero() {
    // v5:MQTT-3.3.2-8
    let bytes = frame(0x30, &[&s("t")[..], &[3, 0x23, 0, 0]].concat());
    let err = dec(&bytes, V5).unwrap_err();
    assert_eq!(err, DecodeError::ZeroTopicAlias);
    assert_eq!(err.reason_code(), ReasonCode::TopicAliasInvalid);
}

#[test]
fn subscription_identifier_zero_and_repeated() {
    let bytes = frame(0x30, &[&s("t")[..], &[2, 0x0B, 0]].concat());
    assert_eq!(
        dec(&bytes, V5),
        Err(DecodeError::InvalidPropertyValue { id: 0x0B, value: 0 })
    );
    let bytes = frame(0x30, &[&s("t")[..], &[4, 0x0B, 1, 0x0B, 2]].concat());
    let Packet::Publish(p) = dec(&bytes, V5).unwrap() else {
        panic!()
    };
    assert_eq!(p.properties.subscription_identifiers.len(), 2);
    let mut p = Publish::new("t".into(), Bytes::new());
    p.properties
        .subscription_identifiers
        .push(NonZeroU32::new(268_435_456).unwrap());
    assert!(matches!(
        p.encode(V5, &mut BytesMut::new()),
        Err(EncodeError::InvalidProperty(_))
    ));
}

#[test]
fn payload_is_zero_copy() {
    let bytes = frame(0x30, &[&s("topic")[..], b"payload"].concat());
    let mut buf = BytesMut::from(&bytes[..]);
    let base = buf.as_ptr() as usize;
    let Some(Packet::Publish(p)) = decode(&mut buf, V3, MAX).unwrap() else {
        panic!()
    };
    assert_eq!(p.payload.as_ptr() as usize, base + 2 + 7);
    assert_eq!(p.topic.as_bytes().as_ptr() as usize, base + 4);
}

#[test]
fn encode_header_then_payload_equals_encode() {
    let mut p = qos1("a/b", b"some payload bytes", 99);
    p.properties.message_expiry_interval = Some(5);
    let mut whole = BytesMut::new();
    p.encode(V5, &mut whole).unwrap();
    let mut header = BytesMut::new();
    p.encode_header(V5, &mut header).unwrap();
    header.extend_from_slice(&p.payload);
    assert_eq!(header, whole);
}

#[test]
fn v311_refuses_properties() {
    let mut p = Publish::new("t".into(), Bytes::new());
    p.properties.user_properties.push(("a".into(), "b".into()));
    let mut buf = BytesMut::new();
    assert_eq!(
        p.encode(V3, &mut buf),
        Err(EncodeError::NotInV311 {
            packet_type: PacketType::Publish,
            what: "properties"
        })
    );
    assert!(buf.is_empty());
}

#[test]
fn large_payload_remaining_length() {
    let payload = Bytes::from(vec![7u8; 200_000]);
    let p = Publish::new("big".into(), payload);
    let bytes = round_trip_fast(&p.into(), V5);
    assert_eq!(&bytes[..4], &[0x30, 0xC6, 0x9A, 0x0C]);
}

fn round_trip_fast(p: &Packet, version: crate::ProtocolVersion) -> Vec<u8> {
    let bytes = enc(p, version);
    assert_eq!(&dec(&bytes, version).unwrap(), p);
    bytes
}
