//! CONNECT and CONNACK.

use core::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};

use super::*;
use crate::{
    ConnAck, ConnAckProperties, Connect, ConnectProperties, ConnectReasonCode, EncodeError,
    PacketType, PayloadFormat, QoS, ReasonCode, Will, WillProperties,
};

fn connect_body(level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    [&s("MQTT")[..], &[level, flags, 0, 60], rest].concat()
}

#[test]
fn v311_minimal_connect_bytes() {
    let c = Connect::new(V3, "cid".into());
    let bytes = round_trip(&c.into(), V3);
    assert_eq!(bytes, frame(0x10, &connect_body(4, 0x02, &s("cid"))));
}

#[test]
fn version_argument_is_ignored_for_connect() {
    let c = Connect::new(V5, "x".into());
    let bytes = enc(&c.clone().into(), V3);
    // Decoding with either version gives the 5.0 CONNECT back.
    assert_eq!(dec(&bytes, V3).unwrap(), c.clone().into());
    assert_eq!(dec(&bytes, V5).unwrap(), c.into());
}

#[test]
fn v311_full_connect_round_trip() {
    let mut c = Connect::new(V3, "client-1".into());
    c.clean_start = false;
    c.keep_alive = 0;
    c.will = Some(Will {
        qos: QoS::ExactlyOnce,
        retain: true,
        ..Will::new("dead/client-1".into(), Bytes::from_static(b"gone"))
    });
    c.username = Some("user".into());
    c.password = Some(Bytes::from_static(b"\x00secret"));
    round_trip(&c.into(), V3);
}

#[test]
fn v5_full_connect_round_trip() {
    let mut c = Connect::new(V5, "".into());
    c.properties = ConnectProperties {
        session_expiry_interval: Some(u32::MAX),
        receive_maximum: NonZeroU16::new(20),
        maximum_packet_size: NonZeroU32::new(1 << 20),
        topic_alias_maximum: Some(10),
        request_response_information: Some(true),
        request_problem_information: Some(false),
        user_properties: vec![("a".into(), "b".into())],
        authentication_method: Some("SCRAM-SHA-1".into()),
        authentication_data: Some(Bytes::from_static(b"data")),
    };
    c.will = Some(Will {
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
    });
    assert!(c.will.as_ref().unwrap().payload_format_is_valid());
    // 5.0 allows a password without a user name.
    c.password = Some(Bytes::from_static(b"pw"));
    round_trip(&c.into(), V5);
}

#[test]
fn protocol_name_and_level() {
    // v5:MQTT-3.1.2-1 v3:MQTT-3.1.2-1
    let bytes = frame(0x10, &[&s("MQTX")[..], &[4, 2, 0, 60], &s("c")].concat());
    let err = dec(&bytes, V3).unwrap_err();
    assert_eq!(err, DecodeError::InvalidProtocolName { level: Some(4) });
    assert_eq!(err.reason_code(), ReasonCode::UnsupportedProtocolVersion);
    assert_eq!(err.protocol_level(), Some(4));
    // MQTT 3.1's name goes with its level only, and the other way round.
    for (name, level) in [("MQIsdp", 4), ("MQIsdp", 5), ("MQTT", 3)] {
        let bytes = frame(0x10, &[&s(name)[..], &[level, 2, 0, 60], &s("c")].concat());
        let err = dec(&bytes, V3).unwrap_err();
        assert_eq!(
            err,
            DecodeError::UnsupportedProtocolLevel(level),
            "{name} {level}"
        );
        assert_eq!(err.reason_code(), ReasonCode::UnsupportedProtocolVersion);
    }
    // v5:MQTT-3.1.2-2 v3:MQTT-3.1.2-2
    let bytes = frame(0x10, &connect_body(6, 2, &s("c")));
    let err = dec(&bytes, V5).unwrap_err();
    assert_eq!(err, DecodeError::UnsupportedProtocolLevel(6));
    assert_eq!(err.reason_code(), ReasonCode::UnsupportedProtocolVersion);
}

#[test]
fn reserved_connect_flag() {
    // MQTT-3.1.2-3
    let bytes = frame(0x10, &connect_body(4, 0x03, &s("c")));
    let err = dec(&bytes, V3).unwrap_err();
    assert_eq!(err, DecodeError::ConnectReservedFlag);
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
}

#[test]
fn will_flags_without_will() {
    // v5:MQTT-3.1.2-11 v5:MQTT-3.1.2-13 v3:MQTT-3.1.2-11 v3:MQTT-3.1.2-13 v3:MQTT-3.1.2-15
    for flags in [0x08u8, 0x10, 0x20] {
        let bytes = frame(0x10, &connect_body(5, flags, &[&[0][..], &s("c")].concat()));
        assert_eq!(dec(&bytes, V5), Err(DecodeError::WillFlagsWithoutWill));
    }
}

#[test]
fn will_qos_3() {
    // v5:MQTT-3.1.2-12 v3:MQTT-3.1.2-14
    let bytes = frame(
        0x10,
        &connect_body(4, 0x1C, &[&s("c")[..], &s("w"), &s("p")].concat()),
    );
    assert_eq!(dec(&bytes, V3), Err(DecodeError::InvalidQoS("will QoS")));
}

#[test]
fn will_fields_follow_will_flag() {
    // v5:MQTT-3.1.2-9 v3:MQTT-3.1.2-9 v3:MQTT-3.1.3-1: will topic and payload present with the flag
    let bytes = frame(
        0x10,
        &connect_body(4, 0x0E, &[&s("c")[..], &s("w/t"), &s("pl")].concat()),
    );
    let Packet::Connect(c) = dec(&bytes, V3).unwrap() else {
        panic!()
    };
    let will = c.will.unwrap();
    assert_eq!(will.topic, "w/t");
    assert_eq!(will.qos, QoS::AtLeastOnce);
    assert_eq!(&will.payload[..], b"pl");
    // Flag set but the fields missing.
    let bytes = frame(0x10, &connect_body(4, 0x06, &s("c")));
    assert_eq!(
        dec(&bytes, V3),
        Err(DecodeError::Truncated {
            field: "will topic"
        })
    );
}

#[test]
fn username_and_password_flags() {
    // v5:MQTT-3.1.2-17 v5:MQTT-3.1.2-19 v3:MQTT-3.1.2-19 v3:MQTT-3.1.2-21
    let bytes = frame(
        0x10,
        &connect_body(4, 0xC2, &[&s("c")[..], &s("u"), &s("p")].concat()),
    );
    let Packet::Connect(c) = dec(&bytes, V3).unwrap() else {
        panic!()
    };
    assert_eq!(c.username.as_deref(), Some("u"));
    assert_eq!(c.password.as_deref(), Some(&b"p"[..]));
    let bytes = frame(
        0x10,
        &connect_body(4, 0xC2, &[&s("c")[..], &s("u")].concat()),
    );
    assert_eq!(
        dec(&bytes, V3),
        Err(DecodeError::Truncated { field: "password" })
    );
    // v5:MQTT-3.1.2-16 v5:MQTT-3.1.2-18 v3:MQTT-3.1.2-18 v3:MQTT-3.1.2-20: no flag, no field.
    let bytes = frame(
        0x10,
        &connect_body(4, 0x02, &[&s("c")[..], &s("u")].concat()),
    );
    assert!(matches!(
        dec(&bytes, V3),
        Err(DecodeError::TrailingBytes { .. })
    ));
}

#[test]
fn will_topic_and_user_name_must_be_utf8() {
    // v5:MQTT-3.1.3-11 v5:MQTT-3.1.3-12 v3:MQTT-3.1.3-10 v3:MQTT-3.1.3-11
    let bad = [0u8, 2, 0xC0, 0x80];
    let bytes = frame(
        0x10,
        &connect_body(4, 0x06, &[&s("c")[..], &bad, &s("p")].concat()),
    );
    assert!(matches!(
        dec(&bytes, V3),
        Err(DecodeError::InvalidString {
            field: "will topic",
            ..
        })
    ));
    let bytes = frame(
        0x10,
        &connect_body(5, 0x82, &[&[0][..], &s("c"), &bad].concat()),
    );
    assert!(matches!(
        dec(&bytes, V5),
        Err(DecodeError::InvalidString {
            field: "user name",
            ..
        })
    ));
    // v5:MQTT-3.1.4-1 v3:MQTT-3.1.4-1: a malformed CONNECT is refused with the code to send.
    assert_eq!(
        dec(&bytes, V5).unwrap_err().reason_code(),
        ReasonCode::MalformedPacket
    );
}

#[test]
fn v5_payload_field_order() {
    // v5:MQTT-3.1.3-1: client id, will properties, will topic, will payload, user name, password.
    let body = connect_body(
        5,
        0xC4,
        &[
            &[0][..],
            &s("id"),
            &[2, 0x01, 1],
            &s("wt"),
            &s("wp"),
            &s("un"),
            &s("pw"),
        ]
        .concat(),
    );
    let Packet::Connect(c) = dec(&frame(0x10, &body), V5).unwrap() else {
        panic!()
    };
    assert_eq!(c.client_id, "id");
    let will = c.will.as_ref().unwrap();
    assert_eq!(
        will.properties.payload_format_indicator,
        Some(PayloadFormat::Utf8)
    );
    assert_eq!((will.topic.as_str(), &will.payload[..]), ("wt", &b"wp"[..]));
    assert_eq!(c.username.as_deref(), Some("un"));
    assert_eq!(c.password.as_deref(), Some(&b"pw"[..]));
    assert_eq!(enc(&Packet::Connect(c), V5), frame(0x10, &body));
}

#[test]
fn will_payload_format_is_checked_by_the_helper_not_the_codec() {
    let mut will = Will::new("w".into(), Bytes::from_static(&[0xFF]));
    will.properties.payload_format_indicator = Some(PayloadFormat::Utf8);
    assert!(!will.payload_format_is_valid());
    let mut c = Connect::new(V5, "c".into());
    c.will = Some(will);
    round_trip(&c.into(), V5);
}

#[test]
fn will_response_topic_with_wildcard() {
    let bytes = frame(
        0x10,
        &connect_body(
            5,
            0x06,
            &[&[0][..], &s("c"), &[4, 0x08, 0, 1, b'#'], &s("w"), &s("p")].concat(),
        ),
    );
    assert_eq!(dec(&bytes, V5), Err(DecodeError::ResponseTopicWildcard));
}

#[test]
fn password_without_username_in_v311() {
    // v3:MQTT-3.1.2-22
    let bytes = frame(
        0x10,
        &connect_body(4, 0x42, &[&s("c")[..], &s("p")].concat()),
    );
    assert_eq!(dec(&bytes, V3), Err(DecodeError::PasswordWithoutUsername));
    let mut c = Connect::new(V3, "c".into());
    c.password = Some(Bytes::from_static(b"p"));
    assert_eq!(
        c.encode(V3, &mut BytesMut::new()),
        Err(EncodeError::PasswordWithoutUsername)
    );
}

#[test]
fn client_id_must_be_first_and_utf8() {
    // v5:MQTT-3.1.3-3 v5:MQTT-3.1.3-4 v3:MQTT-3.1.3-3 v3:MQTT-3.1.3-4
    let bytes = frame(0x10, &connect_body(4, 0x02, &[]));
    assert_eq!(
        dec(&bytes, V3),
        Err(DecodeError::Truncated {
            field: "client identifier"
        })
    );
    let bytes = frame(0x10, &connect_body(4, 0x02, &[0, 1, 0xFF]));
    assert!(matches!(
        dec(&bytes, V3),
        Err(DecodeError::InvalidString {
            field: "client identifier",
            ..
        })
    ));
}

#[test]
fn v5_connect_properties_errors() {
    // Receive Maximum 0.
    let bytes = frame(
        0x10,
        &connect_body(5, 2, &[&[3, 0x21, 0, 0][..], &s("c")].concat()),
    );
    let err = dec(&bytes, V5).unwrap_err();
    assert_eq!(
        err,
        DecodeError::InvalidPropertyValue { id: 0x21, value: 0 }
    );
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
    // Maximum Packet Size 0.
    let bytes = frame(
        0x10,
        &connect_body(5, 2, &[&[5, 0x27, 0, 0, 0, 0][..], &s("c")].concat()),
    );
    assert_eq!(
        dec(&bytes, V5),
        Err(DecodeError::InvalidPropertyValue { id: 0x27, value: 0 })
    );
    // Request Problem Information 2.
    let bytes = frame(
        0x10,
        &connect_body(5, 2, &[&[2, 0x17, 2][..], &s("c")].concat()),
    );
    assert_eq!(
        dec(&bytes, V5),
        Err(DecodeError::InvalidPropertyValue { id: 0x17, value: 2 })
    );
    // Authentication Data without Method.
    let bytes = frame(
        0x10,
        &connect_body(5, 2, &[&[4, 0x16, 0, 1, 9][..], &s("c")].concat()),
    );
    assert_eq!(dec(&bytes, V5), Err(DecodeError::AuthDataWithoutMethod));
    // A Will property in CONNECT properties.
    let bytes = frame(
        0x10,
        &connect_body(5, 2, &[&[5, 0x18, 0, 0, 0, 1][..], &s("c")].concat()),
    );
    assert_eq!(
        dec(&bytes, V5),
        Err(DecodeError::PropertyNotAllowed {
            id: 0x18,
            context: "CONNECT"
        })
    );
    // Session Expiry in Will Properties.
    let bytes = frame(
        0x10,
        &connect_body(
            5,
            0x06,
            &[&[0][..], &s("c"), &[5, 0x11, 0, 0, 0, 1], &s("w"), &s("p")].concat(),
        ),
    );
    assert_eq!(
        dec(&bytes, V5),
        Err(DecodeError::PropertyNotAllowed {
            id: 0x11,
            context: "Will Properties"
        })
    );
}

#[test]
fn v311_connect_refuses_v5_fields() {
    let mut c = Connect::new(V3, "c".into());
    c.properties.session_expiry_interval = Some(1);
    assert_eq!(
        c.encode(V3, &mut BytesMut::new()),
        Err(EncodeError::NotInV311 {
            packet_type: PacketType::Connect,
            what: "properties"
        })
    );
    let mut c = Connect::new(V3, "c".into());
    let mut will = Will::new("w".into(), Bytes::new());
    will.properties.will_delay_interval = Some(1);
    c.will = Some(will);
    assert!(matches!(
        c.encoded_len(V3),
        Err(EncodeError::NotInV311 {
            what: "will properties",
            ..
        })
    ));
}

#[test]
fn will_payload_too_long() {
    let mut c = Connect::new(V3, "c".into());
    c.will = Some(Will::new("w".into(), Bytes::from(vec![0u8; 70_000])));
    assert_eq!(
        c.encode(V3, &mut BytesMut::new()),
        Err(EncodeError::BinaryTooLong {
            field: "will payload",
            len: 70_000
        })
    );
}

#[test]
fn connack_v311_bytes_and_return_codes() {
    // v3:MQTT-3.2.2-1
    let bytes = round_trip(&ConnAck::new(true, ConnectReasonCode::Success).into(), V3);
    assert_eq!(bytes, [0x20, 0x02, 0x01, 0x00]);
    for (code, reason) in [
        (1u8, ConnectReasonCode::UnsupportedProtocolVersion),
        (2, ConnectReasonCode::ClientIdentifierNotValid),
        (3, ConnectReasonCode::ServerUnavailable),
        (4, ConnectReasonCode::BadUserNameOrPassword),
        (5, ConnectReasonCode::NotAuthorized),
    ] {
        let bytes = round_trip(&ConnAck::new(false, reason).into(), V3);
        assert_eq!(bytes, [0x20, 0x02, 0x00, code]);
    }
    assert_eq!(
        dec(&[0x20, 0x02, 0x00, 0x06], V3),
        Err(DecodeError::InvalidReasonCode {
            packet_type: PacketType::ConnAck,
            code: 6
        })
    );
    // A 5.0 code without 3.1.1 equivalent cannot be sent to a 3.1.1 client.
    assert!(matches!(
        ConnAck::new(false, ConnectReasonCode::Banned).encode(V3, &mut BytesMut::new()),
        Err(EncodeError::NotInV311 {
            what: "reason code",
            ..
        })
    ));
}

#[test]
fn connack_session_present_on_error() {
    // v5:MQTT-3.2.2-6 v3:MQTT-3.2.2-4
    assert_eq!(
        dec(&[0x20, 0x02, 0x01, 0x05], V3),
        Err(DecodeError::SessionPresentOnError)
    );
    assert_eq!(
        dec(&[0x20, 0x03, 0x01, 0x87, 0x00], V5),
        Err(DecodeError::SessionPresentOnError)
    );
    assert_eq!(
        ConnAck::new(true, ConnectReasonCode::Banned).encode(V5, &mut BytesMut::new()),
        Err(EncodeError::SessionPresentOnError)
    );
}

#[test]
fn connack_reserved_flags() {
    // v5:MQTT-3.2.2-1
    assert_eq!(
        dec(&[0x20, 0x02, 0x02, 0x00], V3),
        Err(DecodeError::ConnAckReservedFlags)
    );
}

#[test]
fn connack_v5_round_trip() {
    // v5:MQTT-3.2.2-8
    let mut c = ConnAck::new(false, ConnectReasonCode::Success);
    assert_eq!(
        round_trip(&c.clone().into(), V5),
        [0x20, 0x03, 0x00, 0x00, 0x00]
    );
    c.properties = ConnAckProperties {
        session_expiry_interval: Some(10),
        receive_maximum: NonZeroU16::new(100),
        maximum_qos: Some(QoS::AtLeastOnce),
        retain_available: Some(false),
        maximum_packet_size: NonZeroU32::new(1024),
        assigned_client_identifier: Some("auto-1".into()),
        topic_alias_maximum: Some(5),
        reason_string: Some("welcome".into()),
        user_properties: vec![("x".into(), "y".into())],
        wildcard_subscription_available: Some(true),
        subscription_identifiers_available: Some(true),
        shared_subscription_available: Some(false),
        server_keep_alive: Some(30),
        response_information: Some("resp/".into()),
        server_reference: Some("other:1883".into()),
        authentication_method: Some("m".into()),
        authentication_data: Some(Bytes::from_static(b"d")),
    };
    round_trip(&c.into(), V5);
    for code in [0x80u8, 0x9F, 0x84] {
        let c = ConnAck::new(false, ConnectReasonCode::try_from(code).unwrap());
        round_trip(&c.into(), V5);
    }
}

#[test]
fn connack_v5_invalid_values() {
    // Maximum QoS 2 is not allowed.
    assert_eq!(
        dec(&[0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x02], V5),
        Err(DecodeError::InvalidPropertyValue { id: 0x24, value: 2 })
    );
    let mut c = ConnAck::default();
    c.properties.maximum_qos = Some(QoS::ExactlyOnce);
    assert!(matches!(
        c.encode(V5, &mut BytesMut::new()),
        Err(EncodeError::InvalidProperty(_))
    ));
    // A PUBACK-only code.
    assert_eq!(
        dec(&[0x20, 0x03, 0x00, 0x10, 0x00], V5),
        Err(DecodeError::InvalidReasonCode {
            packet_type: PacketType::ConnAck,
            code: 0x10
        })
    );
    // Missing property length.
    assert_eq!(
        dec(&[0x20, 0x02, 0x00, 0x00], V5),
        Err(DecodeError::Truncated {
            field: "property length"
        })
    );
    // Duplicate Retain Available.
    assert_eq!(
        dec(&[0x20, 0x07, 0x00, 0x00, 0x04, 0x25, 0x01, 0x25, 0x01], V5),
        Err(DecodeError::DuplicateProperty {
            id: 0x25,
            context: "CONNACK"
        })
    );
}

#[test]
fn connect_remaining_length_minimality_follows_its_own_version() {
    // v5:MQTT-1.5.5-1: the version is only known after the protocol level.
    let body5 = connect_body(5, 0x02, &[&[0][..], &s("c")].concat());
    let mut bytes = vec![0x10, 0x80 | body5.len() as u8, 0x00];
    bytes.extend(&body5);
    assert_eq!(dec(&bytes, V3), Err(DecodeError::NonMinimalVarInt));
    let body4 = connect_body(4, 0x02, &s("c"));
    let mut bytes = vec![0x10, 0x80 | body4.len() as u8, 0x00];
    bytes.extend(&body4);
    assert!(matches!(dec(&bytes, V5), Ok(Packet::Connect(_))));
}
