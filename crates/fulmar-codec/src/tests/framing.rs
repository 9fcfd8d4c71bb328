//! Fixed header, remaining length, size limit, streaming.

use bytes::BytesMut;

use super::*;
use crate::{DisconnectReasonCode, MqttString, PacketType, Publish, ReasonCode};

#[test]
fn empty_and_partial_input_need_more_bytes() {
    let mut buf = BytesMut::new();
    assert_eq!(decode(&mut buf, V5, MAX).unwrap(), None);
    let mut buf = BytesMut::from(&[0x30u8][..]);
    assert_eq!(decode(&mut buf, V5, MAX).unwrap(), None);
    assert_eq!(buf.len(), 1);
    let mut buf = BytesMut::from(&[0x30u8, 0x80, 0x80][..]);
    assert_eq!(decode(&mut buf, V5, MAX).unwrap(), None);
    assert_eq!(&buf[..], &[0x30, 0x80, 0x80]);
}

#[test]
fn ping_packets() {
    assert_eq!(round_trip(&Packet::PingReq, V3), vec![0xC0, 0x00]);
    assert_eq!(round_trip(&Packet::PingResp, V5), vec![0xD0, 0x00]);
    assert_eq!(Packet::PingReq.packet_type(), PacketType::PingReq);
}

#[test]
fn ping_with_body_is_trailing_bytes() {
    assert_eq!(
        dec(&[0xC0, 0x01, 0x00], V3),
        Err(DecodeError::TrailingBytes {
            packet_type: PacketType::PingReq,
            count: 1
        })
    );
    assert_eq!(
        dec(&[0xD0, 0x01, 0x00], V5).unwrap_err().reason_code(),
        ReasonCode::MalformedPacket
    );
}

#[test]
fn reserved_packet_types() {
    assert_eq!(
        dec(&[0x00, 0x00], V5),
        Err(DecodeError::ReservedPacketType(0))
    );
    // AUTH does not exist in 3.1.1.
    assert_eq!(
        dec(&[0xF0, 0x00], V3),
        Err(DecodeError::ReservedPacketType(15))
    );
    assert!(dec(&[0xF0, 0x00], V5).is_ok());
}

#[test]
fn reserved_fixed_header_flags() {
    // MQTT-2.1.3-1 v3:MQTT-2.2.2-1 v3:MQTT-2.2.2-2
    for (first, packet_type) in [
        (0xC1u8, PacketType::PingReq),
        (0xE8, PacketType::Disconnect),
        (0x41, PacketType::PubAck),
        (0x21, PacketType::ConnAck),
        (0x12, PacketType::Connect),
        (0xF1, PacketType::Auth),
    ] {
        assert_eq!(
            dec(&[first, 0x00], V5),
            Err(DecodeError::ReservedFlags {
                packet_type,
                flags: first & 0x0F
            })
        );
    }
}

#[test]
fn pubrel_subscribe_unsubscribe_flags_must_be_0010() {
    // MQTT-3.6.1-1 MQTT-3.8.1-1 MQTT-3.10.1-1
    for first in [0x60u8, 0x63, 0x80, 0x8A, 0xA0, 0xA6] {
        let err = dec(&[first, 0x02, 0x00, 0x01], V3).unwrap_err();
        assert!(
            matches!(err, DecodeError::ReservedFlags { .. }),
            "{first:#x}: {err}"
        );
        assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    }
    assert!(dec(&[0x62, 0x02, 0x00, 0x01], V3).is_ok());
}

#[test]
fn remaining_length_over_four_bytes() {
    let mut buf = BytesMut::from(&[0x30u8, 0xFF, 0xFF, 0xFF, 0xFF, 0x01][..]);
    assert_eq!(
        decode(&mut buf, V5, u32::MAX),
        Err(DecodeError::VarIntTooLong)
    );
}

#[test]
fn non_minimal_remaining_length() {
    // MQTT-1.5.5-1: PINGREQ with remaining length 0 encoded in two bytes.
    assert_eq!(
        dec(&[0xC0, 0x80, 0x00], V5),
        Err(DecodeError::NonMinimalVarInt)
    );
    // 3.1.1 does not require the minimal encoding.
    assert_eq!(dec(&[0xC0, 0x80, 0x00], V3), Ok(Packet::PingReq));
}

#[test]
fn packet_too_large_before_body_is_buffered() {
    // v5:MQTT-3.2.2-15 v5:MQTT-3.1.2-24: the receiver enforces its Maximum Packet Size.
    // A PUBLISH announcing 1000 bytes: only the header has arrived.
    let mut buf = BytesMut::from(&[0x30u8, 0xE8, 0x07][..]);
    let err = decode(&mut buf, V5, 100).unwrap_err();
    assert_eq!(
        err,
        DecodeError::PacketTooLarge {
            size: 1003,
            max: 100
        }
    );
    assert_eq!(err.reason_code(), ReasonCode::PacketTooLarge);
    // Exactly the maximum is accepted.
    let p = frame(0x30, &[&s("t")[..], b"x"].concat());
    let mut buf = BytesMut::from(&p[..]);
    assert!(decode(&mut buf, V3, p.len() as u32).unwrap().is_some());
    let mut buf = BytesMut::from(&p[..]);
    assert!(matches!(
        decode(&mut buf, V3, p.len() as u32 - 1),
        Err(DecodeError::PacketTooLarge { .. })
    ));
}

// An empty User Property is 5 bytes on the wire and a pair of strings in
// memory: a PUBLISH or CONNECT (will included) whose user properties would
// take more than the maximum packet size in memory (and more than
// MIN_USER_PROPERTY_BYTES) is refused as too large.
#[test]
fn user_properties_held_over_the_maximum_size_are_too_large() {
    let slot = Publish::USER_PROPERTY_SLOT;
    let empty = || (MqttString::new(), MqttString::new());
    let max = 2 * crate::MIN_USER_PROPERTY_BYTES as u32;
    let fit = max as usize / slot;
    let publish = |n: usize| {
        let mut p = Publish::new("t".into(), bytes::Bytes::new());
        p.properties.user_properties = vec![empty(); n];
        Packet::Publish(p)
    };
    let mut buf = BytesMut::from(&enc(&publish(fit), V5)[..]);
    assert!(decode(&mut buf, V5, max).unwrap().is_some());
    let mut buf = BytesMut::from(&enc(&publish(fit + 1), V5)[..]);
    assert!(buf.len() < max as usize / 10);
    let err = decode(&mut buf, V5, max).unwrap_err();
    let count = fit + 1;
    assert_eq!(err, DecodeError::TooManyUserProperties { count, max });
    assert_eq!(err.reason_code(), ReasonCode::PacketTooLarge);
    // Under a smaller maximum, MIN_USER_PROPERTY_BYTES holds: a packet that
    // fits the maximum on the wire is never refused for them.
    let small = crate::MIN_USER_PROPERTY_BYTES / slot;
    let wire = enc(&publish(small), V5);
    let mut buf = BytesMut::from(&wire[..]);
    assert!(decode(&mut buf, V5, wire.len() as u32).unwrap().is_some());
    let wire = enc(&publish(small + 1), V5);
    let mut buf = BytesMut::from(&wire[..]);
    assert!(matches!(
        decode(&mut buf, V5, wire.len() as u32),
        Err(DecodeError::TooManyUserProperties { .. })
    ));
    // A CONNECT's and its will's count together.
    let mut connect = crate::Connect::new(V5, "c".into());
    connect.properties.user_properties = vec![empty(); fit / 2];
    let mut will = crate::Will::new("w".into(), bytes::Bytes::new());
    will.properties.user_properties = vec![empty(); fit - fit / 2];
    connect.will = Some(will);
    let mut buf = BytesMut::from(&enc(&connect.clone().into(), V5)[..]);
    assert!(decode(&mut buf, V5, max).unwrap().is_some());
    if let Some(will) = &mut connect.will {
        will.properties.user_properties.push(empty());
    }
    let mut buf = BytesMut::from(&enc(&connect.into(), V5)[..]);
    assert_eq!(
        decode(&mut buf, V5, max),
        Err(DecodeError::TooManyUserProperties { count, max })
    );
}

#[test]
fn consumes_exactly_one_packet() {
    let mut bytes = enc(&Packet::PingReq, V5);
    bytes.extend(enc(
        &Packet::Disconnect(crate::Disconnect::new(DisconnectReasonCode::ServerBusy)),
        V5,
    ));
    bytes.push(0xC0);
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(decode(&mut buf, V5, MAX).unwrap(), Some(Packet::PingReq));
    assert!(matches!(
        decode(&mut buf, V5, MAX).unwrap(),
        Some(Packet::Disconnect(_))
    ));
    assert_eq!(decode(&mut buf, V5, MAX).unwrap(), None);
    assert_eq!(&buf[..], &[0xC0]);
}

#[test]
fn packet_enum_stays_small() {
    // 256 today: CONNACK (with its many optional properties) is the largest
    // unboxed variant, PUBLISH is 232.
    let size = size_of::<Packet>();
    assert!(size <= 256, "size_of::<Packet>() = {size}");
    assert!(size_of::<crate::Publish>() <= 240);
    // CONNECT is boxed.
    assert!(size_of::<crate::Connect>() > size);
}

#[test]
fn encode_reserves_once_and_appends() {
    let mut buf = BytesMut::with_capacity(0);
    buf.extend_from_slice(b"xy");
    Packet::PingReq.encode(V5, &mut buf).unwrap();
    assert_eq!(&buf[..], &[b'x', b'y', 0xC0, 0x00]);
}
