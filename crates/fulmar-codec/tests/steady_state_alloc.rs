//! The hot path does not allocate: decoding PUBLISH and acknowledgements from
//! a shared buffer, and encoding them into a buffer with room.
//!
//! A counting global allocator needs `unsafe impl GlobalAlloc`; this test
//! binary opts out of the workspace `unsafe_code = "deny"` for that alone.
//! The count is per thread, so tests running in parallel (and the test
//! harness) do not disturb each other's measurements.
#![allow(unsafe_code)]
// The helpers below panic on bad fixtures, like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::num::NonZeroU16;

use bytes::{Bytes, BytesMut};
use fulmar_codec::{
    AckProperties, Packet, PacketId, PayloadFormat, ProtocolVersion, PubAck, PubAckReasonCode,
    PubComp, PubCompReasonCode, PubRec, PubRecReasonCode, PubRel, PubRelReasonCode, Publish, QoS,
    decode,
};

#[path = "alloc_count/mod.rs"]
mod alloc_count;

use alloc_count::allocations;

/// Encodes `rounds` copies of `packets` into one buffer, decodes the first
/// packet (which promotes the buffer to a shared one: one allocation), then
/// returns how many allocations decoding all the others took.
fn decode_allocations(packets: &[Packet], version: ProtocolVersion, rounds: usize) -> usize {
    let mut wire = BytesMut::with_capacity(256 * 1024);
    for _ in 0..rounds {
        for p in packets {
            p.encode(version, &mut wire).unwrap();
        }
    }
    let first = decode(&mut wire, version, 1 << 20).unwrap().unwrap();
    assert_eq!(&first, &packets[0]);
    drop(first);

    let before = allocations();
    let mut decoded = 1;
    while let Some(p) = decode(&mut wire, version, 1 << 20).unwrap() {
        // Compare by reference: nothing is cloned.
        assert!(p == packets[decoded % packets.len()], "packet {decoded}");
        decoded += 1;
    }
    let spent = allocations() - before;
    assert_eq!(decoded, rounds * packets.len());
    spent
}

/// Allocations made by encoding `packets` into a buffer with enough room.
fn encode_allocations(packets: &[Packet], version: ProtocolVersion) -> usize {
    let mut out = BytesMut::with_capacity(64 * 1024);
    let before = allocations();
    for p in packets {
        p.encode(version, &mut out).unwrap();
    }
    let spent = allocations() - before;
    assert!(!out.is_empty());
    spent
}

#[test]
fn the_counter_counts_this_thread() {
    let before = allocations();
    let v: Vec<u8> = Vec::with_capacity(8);
    assert_eq!(allocations() - before, 1);
    drop(v);
    let handle = std::thread::spawn(|| Vec::<u8>::with_capacity(8).capacity());
    let before = allocations();
    assert_eq!(handle.join().unwrap(), 8);
    // The other thread's allocation is not counted here (the join itself may allocate nothing).
    assert!(allocations() - before <= 1);
}

#[test]
fn publish_and_acks_decode_and_encode_without_allocating() {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut publish = Publish::new("sensors/room-1/temp".into(), Bytes::from_static(b"21.5"));
        publish.qos = QoS::AtLeastOnce;
        publish.packet_id = PacketId::new(42);
        if version == ProtocolVersion::V5 {
            publish.properties.message_expiry_interval = Some(30);
        }
        let packets = [
            Packet::from(publish),
            Packet::from(PubAck::new(PacketId::new(42).unwrap())),
            Packet::from(PubRec::new(PacketId::new(43).unwrap())),
            Packet::from(PubRel::new(PacketId::new(43).unwrap())),
            Packet::from(PubComp::new(PacketId::new(43).unwrap())),
        ];
        assert_eq!(
            decode_allocations(&packets, version, 100),
            0,
            "decode allocated ({version})"
        );
        assert_eq!(
            encode_allocations(&packets, version),
            0,
            "encode allocated ({version})"
        );
    }
}

/// MQTT 5.0 PUBLISH at every QoS with several properties (no User
/// Properties and no Subscription Identifiers, which are lists), and every
/// acknowledgement with a non-success reason code, with and without a
/// Reason String.
#[test]
fn v5_publish_with_properties_and_acks_with_reason_codes_do_not_allocate() {
    let v5 = ProtocolVersion::V5;
    let id = PacketId::new(7).unwrap();
    let mut packets = Vec::new();
    for (qos, packet_id) in [
        (QoS::AtMostOnce, None),
        (QoS::AtLeastOnce, Some(id)),
        (QoS::ExactlyOnce, Some(id)),
    ] {
        let mut p = Publish::new("a/b/c".into(), Bytes::from_static(b"{\"t\":21.5}"));
        p.qos = qos;
        p.packet_id = packet_id;
        p.retain = qos == QoS::AtMostOnce;
        p.properties.payload_format_indicator = Some(PayloadFormat::Utf8);
        p.properties.message_expiry_interval = Some(60);
        p.properties.topic_alias = NonZeroU16::new(3);
        p.properties.response_topic = Some("reply/to".into());
        p.properties.correlation_data = Some(Bytes::from_static(b"\x01\x02"));
        p.properties.content_type = Some("application/json".into());
        packets.push(Packet::from(p));
    }
    // A PUBLISH under a Topic Alias alone.
    let mut aliased = Publish::new("".into(), Bytes::from_static(b"x"));
    aliased.properties.topic_alias = NonZeroU16::new(3);
    packets.push(Packet::from(aliased));

    for reason_string in [None, Some("because".into())] {
        let properties = AckProperties {
            reason_string,
            user_properties: Vec::new(),
        };
        packets.push(Packet::from(PubAck {
            packet_id: id,
            reason_code: PubAckReasonCode::NoMatchingSubscribers,
            properties: properties.clone(),
        }));
        packets.push(Packet::from(PubAck {
            packet_id: id,
            reason_code: PubAckReasonCode::QuotaExceeded,
            properties: properties.clone(),
        }));
        packets.push(Packet::from(PubRec {
            packet_id: id,
            reason_code: PubRecReasonCode::PayloadFormatInvalid,
            properties: properties.clone(),
        }));
        packets.push(Packet::from(PubRel {
            packet_id: id,
            reason_code: PubRelReasonCode::PacketIdentifierNotFound,
            properties: properties.clone(),
        }));
        packets.push(Packet::from(PubComp {
            packet_id: id,
            reason_code: PubCompReasonCode::PacketIdentifierNotFound,
            properties,
        }));
    }
    assert_eq!(decode_allocations(&packets, v5, 50), 0, "decode allocated");
    assert_eq!(encode_allocations(&packets, v5), 0, "encode allocated");

    // Encoding only the header of a PUBLISH (for vectored writes) does not allocate either.
    let mut out = BytesMut::with_capacity(1024);
    let before = allocations();
    for p in &packets {
        if let Packet::Publish(p) = p {
            p.encode_header(v5, &mut out).unwrap();
        }
    }
    assert_eq!(allocations() - before, 0, "encode_header allocated");
}

#[test]
fn acknowledgements_decode_from_a_private_buffer_without_allocating() {
    // MQTT-3.4.2-1 (v5: MQTT-3.4.2-1) (PUBACK: packet identifier, then reason code)
    // An acknowledgement without properties is read in place: even the first
    // packet of a buffer nobody shares yet does not promote it to a shared one.
    for (version, wire) in [
        (ProtocolVersion::V311, &[0x40, 0x02, 0x00, 0x2A][..]),
        (ProtocolVersion::V5, &[0x40, 0x02, 0x00, 0x2A][..]),
        (ProtocolVersion::V5, &[0x50, 0x03, 0x00, 0x2A, 0x10][..]),
        (ProtocolVersion::V5, &[0x62, 0x03, 0x00, 0x2A, 0x92][..]),
        (ProtocolVersion::V311, &[0x70, 0x02, 0xFF, 0xFF][..]),
    ] {
        let mut buf = BytesMut::from(wire);
        let before = allocations();
        let packet = decode(&mut buf, version, 1 << 20).unwrap().unwrap();
        let spent = allocations() - before;
        assert_eq!(
            spent, 0,
            "{packet:?} ({version:?}) took {spent} allocations"
        );
        assert!(buf.is_empty());
    }
}
