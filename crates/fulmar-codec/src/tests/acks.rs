//! PUBACK, PUBREC, PUBREL, PUBCOMP, DISCONNECT, AUTH.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::{
    AckProperties, Auth, AuthProperties, AuthReasonCode, Disconnect, DisconnectProperties,
    DisconnectReasonCode, EncodeError, PacketId, PacketType, PubAck, PubAckReasonCode, PubComp,
    PubCompReasonCode, PubRec, PubRecReasonCode, PubRel, PubRelReasonCode, ReasonCode,
};

fn id(v: u16) -> PacketId {
    PacketId::new(v).unwrap()
}

#[test]
fn v311_acks_bytes() {
    // v3:MQTT-2.3.1-6 v5:MQTT-2.2.1-5: the acks carry the packet identifier.
    assert_eq!(
        round_trip(&PubAck::new(id(0x0102)).into(), V3),
        [0x40, 0x02, 0x01, 0x02]
    );
    assert_eq!(
        round_trip(&PubRec::new(id(1)).into(), V3),
        [0x50, 0x02, 0x00, 0x01]
    );
    assert_eq!(
        round_trip(&PubRel::new(id(1)).into(), V3),
        [0x62, 0x02, 0x00, 0x01]
    );
    assert_eq!(
        round_trip(&PubComp::new(id(1)).into(), V3),
        [0x70, 0x02, 0x00, 0x01]
    );
}

#[test]
fn v5_ack_short_forms() {
    // Success without properties: packet id only.
    assert_eq!(
        round_trip(&PubAck::new(id(5)).into(), V5),
        [0x40, 0x02, 0x00, 0x05]
    );
    // A reason code without properties: no property length.
    let mut p = PubAck::new(id(5));
    p.reason_code = PubAckReasonCode::NoMatchingSubscribers;
    assert_eq!(round_trip(&p.into(), V5), [0x40, 0x03, 0x00, 0x05, 0x10]);
    // Explicit zero property length is accepted too.
    assert_eq!(
        dec(&[0x40, 0x04, 0x00, 0x05, 0x00, 0x00], V5).unwrap(),
        PubAck::new(id(5)).into()
    );
}

#[test]
fn v5_acks_with_properties_round_trip() {
    // MQTT-3.4.2-1 MQTT-3.5.2-1 MQTT-3.6.2-1 MQTT-3.7.2-1
    let props = AckProperties {
        reason_string: Some("why".into()),
        user_properties: vec![("a".into(), "1".into())],
    };
    for code in [0x00u8, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99] {
        let p = PubAck {
            packet_id: id(9),
            reason_code: PubAckReasonCode::try_from(code).unwrap(),
            properties: props.clone(),
        };
        round_trip(&p.into(), V5);
        let p = PubRec {
            packet_id: id(9),
            reason_code: PubRecReasonCode::try_from(code).unwrap(),
            properties: props.clone(),
        };
        round_trip(&p.into(), V5);
    }
    for code in [0x00u8, 0x92] {
        let p = PubRel {
            packet_id: id(9),
            reason_code: PubRelReasonCode::try_from(code).unwrap(),
            properties: props.clone(),
        };
        round_trip(&p.into(), V5);
        let p = PubComp {
            packet_id: id(9),
            reason_code: PubCompReasonCode::try_from(code).unwrap(),
            properties: AckProperties::default(),
        };
        round_trip(&p.into(), V5);
    }
}

#[test]
fn invalid_ack_reason_codes() {
    // MQTT-3.4.2-1 MQTT-3.6.2-1
    assert_eq!(
        dec(&[0x40, 0x03, 0x00, 0x01, 0x92], V5),
        Err(DecodeError::InvalidReasonCode {
            packet_type: PacketType::PubAck,
            code: 0x92
        })
    );
    assert_eq!(
        dec(&[0x62, 0x03, 0x00, 0x01, 0x10], V5),
        Err(DecodeError::InvalidReasonCode {
            packet_type: PacketType::PubRel,
            code: 0x10
        })
    );
}

#[test]
fn ack_errors() {
    assert_eq!(
        dec(&[0x40, 0x02, 0x00, 0x00], V3),
        Err(DecodeError::ZeroPacketId(PacketType::PubAck))
    );
    assert_eq!(
        dec(&[0x40, 0x01, 0x00], V3),
        Err(DecodeError::Truncated {
            field: "packet identifier"
        })
    );
    // 3.1.1 acks are exactly two bytes.
    assert_eq!(
        dec(&[0x70, 0x03, 0x00, 0x01, 0x00], V3),
        Err(DecodeError::TrailingBytes {
            packet_type: PacketType::PubComp,
            count: 1
        })
    );
    // Property not allowed in an ack.
    assert_eq!(
        dec(&[0x50, 0x06, 0x00, 0x01, 0x00, 0x02, 0x01, 0x01], V5),
        Err(DecodeError::PropertyNotAllowed {
            id: 0x01,
            context: "acknowledgement"
        })
    );
    // Reason String twice.
    let mut body = vec![0x00, 0x01, 0x00, 0x08];
    body.extend([0x1F, 0x00, 0x01, b'a', 0x1F, 0x00, 0x01, b'b']);
    assert_eq!(
        dec(&frame(0x40, &body), V5),
        Err(DecodeError::DuplicateProperty {
            id: 0x1F,
            context: "acknowledgement"
        })
    );
}

#[test]
fn v311_acks_refuse_v5_fields() {
    let mut p = PubAck::new(id(1));
    p.reason_code = PubAckReasonCode::NotAuthorized;
    assert_eq!(
        p.encode(V3, &mut BytesMut::new()),
        Err(EncodeError::NotInV311 {
            packet_type: PacketType::PubAck,
            what: "reason code"
        })
    );
    let mut p = PubRel::new(id(1));
    p.properties.reason_string = Some("x".into());
    assert_eq!(
        p.encoded_len(V3),
        Err(EncodeError::NotInV311 {
            packet_type: PacketType::PubRel,
            what: "properties"
        })
    );
}

#[test]
fn disconnect_forms() {
    assert_eq!(round_trip(&Disconnect::default().into(), V3), [0xE0, 0x00]);
    assert_eq!(round_trip(&Disconnect::default().into(), V5), [0xE0, 0x00]);
    let d = Disconnect::new(DisconnectReasonCode::DisconnectWithWillMessage);
    assert_eq!(round_trip(&d.clone().into(), V5), [0xE0, 0x01, 0x04]);
    assert!(matches!(
        d.encode(V3, &mut BytesMut::new()),
        Err(EncodeError::NotInV311 { .. })
    ));
    let d = Disconnect {
        reason_code: DisconnectReasonCode::ServerMoved,
        properties: DisconnectProperties {
            session_expiry_interval: Some(0),
            reason_string: Some("moved".into()),
            user_properties: vec![("k".into(), "v".into())],
            server_reference: Some("b:1883".into()),
        },
    };
    round_trip(&d.into(), V5);
    // MQTT-3.14.2-1
    assert_eq!(
        dec(&[0xE0, 0x01, 0x05], V5),
        Err(DecodeError::InvalidReasonCode {
            packet_type: PacketType::Disconnect,
            code: 0x05
        })
    );
    // 3.1.1 DISCONNECT has no body.
    assert!(matches!(
        dec(&[0xE0, 0x01, 0x00], V3),
        Err(DecodeError::TrailingBytes { .. })
    ));
    // MQTT-3.14.1-1 v3:MQTT-3.14.1-1
    assert!(matches!(
        dec(&[0xE1, 0x00], V3),
        Err(DecodeError::ReservedFlags { .. })
    ));
}

#[test]
fn every_disconnect_code_round_trips() {
    for v in 0..=255u8 {
        if let Ok(code) = DisconnectReasonCode::try_from(v) {
            round_trip(&Disconnect::new(code).into(), V5);
        }
    }
}

#[test]
fn auth_forms() {
    // MQTT-3.15.2-1
    assert_eq!(round_trip(&Auth::default().into(), V5), [0xF0, 0x00]);
    let a = Auth {
        reason_code: AuthReasonCode::ContinueAuthentication,
        properties: AuthProperties {
            authentication_method: Some("SCRAM-SHA-256".into()),
            authentication_data: Some(Bytes::from_static(b"nonce")),
            reason_string: Some("step".into()),
            user_properties: vec![],
        },
    };
    round_trip(&a.clone().into(), V5);
    assert_eq!(
        a.encode(V3, &mut BytesMut::new()),
        Err(EncodeError::NotInV311 {
            packet_type: PacketType::Auth,
            what: "AUTH packet"
        })
    );
    // MQTT-3.15.1-1
    assert!(matches!(
        dec(&[0xF2, 0x00], V5),
        Err(DecodeError::ReservedFlags { .. })
    ));
    assert_eq!(
        dec(&[0xF0, 0x02, 0x01, 0x00], V5),
        Err(DecodeError::InvalidReasonCode {
            packet_type: PacketType::Auth,
            code: 1
        })
    );
    // Authentication Data without Method.
    assert_eq!(
        dec(&[0xF0, 0x06, 0x18, 0x04, 0x16, 0x00, 0x01, 0x07], V5),
        Err(DecodeError::AuthDataWithoutMethod)
    );
    let mut a = Auth::default();
    a.properties.authentication_data = Some(Bytes::from_static(b"x"));
    assert_eq!(
        a.encode(V5, &mut BytesMut::new()),
        Err(EncodeError::AuthDataWithoutMethod)
    );
}

#[test]
fn decode_error_reason_code_maps_to_disconnect() {
    let err = dec(&[0x40, 0x03, 0x00, 0x01, 0x92], V5).unwrap_err();
    let code = DisconnectReasonCode::from_reason_code(err.reason_code()).unwrap();
    assert_eq!(code, DisconnectReasonCode::ProtocolError);
    assert_eq!(ReasonCode::from(code), ReasonCode::ProtocolError);
}

#[test]
fn ack_fast_path_matches_general_encoder() {
    // v5:MQTT-3.6.2-1 v3:MQTT-2.3.1-6: the one-write encoding of acks gives the bytes,
    // the length and the error of the general (counting) encoder, in both versions.
    let with_props = AckProperties {
        reason_string: Some("why".into()),
        ..AckProperties::default()
    };
    for version in [V3, V5] {
        for reason in [
            PubRelReasonCode::Success,
            PubRelReasonCode::PacketIdentifierNotFound,
        ] {
            for properties in [AckProperties::default(), with_props.clone()] {
                let ack = PubRel {
                    packet_id: id(0x0A0B),
                    reason_code: reason,
                    properties,
                };
                let mut fast = BytesMut::from(&b"x"[..]);
                let fast_result = ack.encode(version, &mut fast);
                let mut general = BytesMut::from(&b"x"[..]);
                let general_result = crate::encode::encode_counted(&ack, version, &mut general);
                assert_eq!(fast_result, general_result);
                assert_eq!(fast, general);
                assert_eq!(
                    ack.encoded_len(version),
                    crate::encode::encoded_len_counted(&ack, version)
                );
                if fast_result.is_ok() {
                    assert_eq!(ack.encoded_len(version).unwrap(), fast.len() - 1);
                }
            }
        }
    }
}
