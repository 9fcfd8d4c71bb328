//! Property Length and property identifier edge cases (MQTT 5.0 section 2.2.2).

use bytes::{Bytes, BytesMut};

use super::*;
use crate::{DisconnectReasonCode, EncodeError, Publish, ReasonCode};

/// A 5.0 QoS 0 PUBLISH to "t" whose variable header ends with `props`.
fn publish_with(props: &[u8]) -> Vec<u8> {
    frame(0x30, &[&s("t")[..], props].concat())
}

#[test]
fn missing_property_length() {
    assert_eq!(
        dec(&publish_with(&[]), V5),
        Err(DecodeError::Truncated {
            field: "property length"
        })
    );
}

#[test]
fn property_length_past_the_packet() {
    let err = dec(&publish_with(&[5, 0x02, 0, 0]), V5).unwrap_err();
    assert_eq!(
        err,
        DecodeError::PropertyLengthOverrun {
            len: 5,
            available: 3
        }
    );
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
}

#[test]
fn property_value_past_the_property_length() {
    // Property Length 3 but Message Expiry Interval needs 4 bytes.
    assert_eq!(
        dec(&publish_with(&[3, 0x02, 0, 0, 0, 1]), V5),
        Err(DecodeError::Truncated { field: "property" })
    );
}

#[test]
fn property_length_not_minimal() {
    // MQTT-1.5.5-1
    assert_eq!(
        dec(&publish_with(&[0x80, 0x00]), V5),
        Err(DecodeError::NonMinimalVarInt)
    );
}

#[test]
fn property_length_covering_the_payload_is_consistent() {
    // The property length decides where properties end; the rest is payload.
    let Packet::Publish(p) = dec(&publish_with(&[0, b'a', b'b']), V5).unwrap() else {
        panic!()
    };
    assert_eq!(&p.payload[..], b"ab");
}

#[test]
fn unknown_and_misplaced_identifiers() {
    // 0x00 and 0x04 are not property identifiers.
    assert_eq!(
        dec(&publish_with(&[2, 0x00, 0]), V5),
        Err(DecodeError::PropertyNotAllowed {
            id: 0,
            context: "PUBLISH"
        })
    );
    assert_eq!(
        dec(&publish_with(&[2, 0x04, 0]), V5),
        Err(DecodeError::PropertyNotAllowed {
            id: 4,
            context: "PUBLISH"
        })
    );
    // A two-byte identifier (128) is unknown.
    assert_eq!(
        dec(&publish_with(&[3, 0x80, 0x01, 0]), V5),
        Err(DecodeError::PropertyNotAllowed {
            id: 128,
            context: "PUBLISH"
        })
    );
    // A non-minimal identifier.
    assert_eq!(
        dec(&publish_with(&[3, 0x81, 0x00, 0]), V5),
        Err(DecodeError::NonMinimalVarInt)
    );
    // Receive Maximum belongs to CONNECT/CONNACK.
    assert_eq!(
        dec(&publish_with(&[3, 0x21, 0, 1]), V5),
        Err(DecodeError::PropertyNotAllowed {
            id: 0x21,
            context: "PUBLISH"
        })
    );
    // DISCONNECT allows Session Expiry Interval but not Topic Alias.
    assert_eq!(
        dec(&[0xE0, 0x05, 0x00, 0x03, 0x23, 0x00, 0x01], V5),
        Err(DecodeError::PropertyNotAllowed {
            id: 0x23,
            context: "DISCONNECT"
        })
    );
}

#[test]
fn duplicated_single_valued_property() {
    let err = dec(&publish_with(&[10, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2]), V5).unwrap_err();
    assert_eq!(
        err,
        DecodeError::DuplicateProperty {
            id: 0x02,
            context: "PUBLISH"
        }
    );
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
}

#[test]
fn user_properties_repeat_in_order() {
    // v5:MQTT-3.3.2-17 v5:MQTT-3.3.2-18 v5:MQTT-3.1.3-10: order is kept, duplicates allowed
    let mut props = vec![0u8];
    for (k, v) in [("b", "2"), ("a", "1"), ("b", "3")] {
        props.push(0x26);
        props.extend(s(k));
        props.extend(s(v));
    }
    props[0] = (props.len() - 1) as u8;
    let Packet::Publish(p) = dec(&publish_with(&props), V5).unwrap() else {
        panic!()
    };
    let got: Vec<_> = p
        .properties
        .user_properties
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(got, [("b", "2"), ("a", "1"), ("b", "3")]);
}

#[test]
fn user_property_strings_must_be_valid() {
    // MQTT-1.5.7-1
    let err = dec(&publish_with(&[6, 0x26, 0, 1, b'k', 0, 1]), V5).unwrap_err();
    assert_eq!(
        err,
        DecodeError::Truncated {
            field: "user property value"
        }
    );
    let err = dec(&publish_with(&[7, 0x26, 0, 1, b'k', 0, 1, 0]), V5).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::InvalidString {
            field: "user property value",
            ..
        }
    ));
}

#[test]
fn response_and_content_type_are_utf8() {
    // v5:MQTT-3.3.2-13 v5:MQTT-3.3.2-19
    let err = dec(&publish_with(&[4, 0x08, 0, 1, 0xFF]), V5).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::InvalidString {
            field: "response topic",
            ..
        }
    ));
    let err = dec(&publish_with(&[4, 0x03, 0, 1, 0xFF]), V5).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::InvalidString {
            field: "content type",
            ..
        }
    ));
}

#[test]
fn correlation_data_too_long_to_encode() {
    let mut p = Publish::new("t".into(), Bytes::new());
    p.properties.correlation_data = Some(Bytes::from(vec![0u8; 65_536]));
    assert_eq!(
        p.encode(V5, &mut BytesMut::new()),
        Err(EncodeError::BinaryTooLong {
            field: "correlation data",
            len: 65_536
        })
    );
}

#[test]
fn disconnect_property_length_edge_cases() {
    // Remaining length 1: reason code only, no property length.
    assert_eq!(
        dec(&[0xE0, 0x01, 0x8E], V5).unwrap(),
        Packet::Disconnect(crate::Disconnect::new(
            DisconnectReasonCode::SessionTakenOver
        ))
    );
    // Explicit empty properties.
    assert_eq!(
        dec(&[0xE0, 0x02, 0x00, 0x00], V5).unwrap(),
        Packet::Disconnect(crate::Disconnect::default())
    );
    // Property length announcing more than present.
    assert_eq!(
        dec(&[0xE0, 0x03, 0x00, 0x05, 0x11], V5),
        Err(DecodeError::PropertyLengthOverrun {
            len: 5,
            available: 1
        })
    );
}

#[test]
fn large_property_length_encoding() {
    // A property block over 127 bytes needs a two-byte Property Length.
    let mut p = Publish::new("t".into(), Bytes::new());
    p.properties.correlation_data = Some(Bytes::from(vec![1u8; 200]));
    let bytes = round_trip(&p.into(), V5);
    // header(3) + topic(3) + property length (2 bytes: 203 = 0xCB 0x01)
    assert_eq!(&bytes[6..8], &[0xCB, 0x01]);
}

#[test]
fn is_empty_checks_every_field() {
    // No spec statement: the helper behind the "no properties under 3.1.1" encode checks.
    assert!(crate::ConnAckProperties::default().is_empty());
    let p = crate::ConnAckProperties {
        server_reference: Some("other".into()),
        ..Default::default()
    };
    assert!(!p.is_empty());
    let mut p = crate::PublishProperties::default();
    assert!(p.is_empty());
    p.subscription_identifiers.push(core::num::NonZeroU32::MIN);
    assert!(!p.is_empty());
    let mut p = crate::UnsubscribeProperties::default();
    assert!(p.is_empty());
    p.user_properties.push(("a".into(), "b".into()));
    assert!(!p.is_empty());
    let p = crate::AuthProperties {
        authentication_data: Some(bytes::Bytes::from_static(b"x")),
        ..Default::default()
    };
    assert!(!p.is_empty());
}
