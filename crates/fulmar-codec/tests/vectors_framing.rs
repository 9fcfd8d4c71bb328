//! Byte-exact vectors of the fixed header, for both versions: reserved packet
//! types and flags, the remaining-length boundaries of spec Table 2.4 (3.1.1)
//! and Table 1-1 (5.0), the largest packet, padded and overlong lengths, the
//! maximum packet size, and a stream of packets back to back.

// The helpers below panic on bad fixtures, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod common;

mod v311 {
    use bytes::{Bytes, BytesMut};
    use fulmar_codec::{
        DecodeError, EncodeError, Packet, PacketType, ProtocolVersion, PubAck, Publish, ReasonCode,
        decode,
    };

    use super::common::{
        MAX, assert_decodes_to, assert_malformed, assert_vector, decode_one, hex, id,
    };

    const V3: ProtocolVersion = ProtocolVersion::V311;

    fn encode_err(packet: impl Into<Packet>) -> EncodeError {
        super::common::encode_err(packet, V3)
    }

    fn malformed(wire: &str, error: DecodeError) {
        assert_malformed(&hex(wire), V3, error, ReasonCode::MalformedPacket);
    }

    // ---------------------------------------------------------------- remaining length

    /// A QoS 0 PUBLISH to topic "a" with a payload that makes the remaining
    /// length exactly `remaining`.
    fn publish_with_remaining(remaining: usize) -> Publish {
        let payload = Bytes::from(vec![0xA5; remaining - 3]);
        Publish::new("a".into(), payload)
    }

    /// Spec 2.2.3 Table 2.4 boundaries, each encoded and decoded in full.
    #[test]
    fn remaining_length_boundaries() {
        assert_vector(&Packet::PingReq, V3, &hex("C0 00"));
        for (remaining, header) in [
            (127, "30 7F"),
            (128, "30 80 01"),
            (16_383, "30 FF 7F"),
            (16_384, "30 80 80 01"),
            (2_097_151, "30 FF FF 7F"),
            (2_097_152, "30 80 80 80 01"),
        ] {
            let p = publish_with_remaining(remaining);
            let mut wire = hex(header);
            wire.extend(hex("00 01 'a'"));
            wire.extend_from_slice(&p.payload);
            assert_vector(&p.into(), V3, &wire);
        }
    }

    /// Spec 2.2.3: 64 is `0x40`; 321 is `0xC1 0x02`.
    #[test]
    fn remaining_length_spec_examples() {
        let mut wire = hex("30 40 00 01 'a'");
        wire.extend([0xA5; 61]);
        assert_vector(&publish_with_remaining(64).into(), V3, &wire);
        let mut wire = hex("30 C1 02 00 01 'a'");
        wire.extend([0xA5; 318]);
        assert_vector(&publish_with_remaining(321).into(), V3, &wire);
    }

    /// The largest packet, 268 435 455 bytes of remaining length (`FF FF FF 7F`):
    /// its header is encoded without touching the payload, and a decoder that
    /// has only the fixed header asks for more bytes, or refuses it at once when
    /// it exceeds the maximum packet size.
    #[test]
    fn remaining_length_maximum() {
        // vec![0; n] is zero-allocated: the pages are never touched.
        let p = Publish::new("a".into(), Bytes::from(vec![0u8; 268_435_455 - 3]));
        let mut header = BytesMut::new();
        p.encode_header(V3, &mut header).unwrap();
        assert_eq!(&header[..], &hex("30 FF FF FF 7F 00 01 'a'")[..]);
        assert_eq!(
            Packet::from(p).encoded_len(V3).unwrap(),
            1 + 4 + 268_435_455
        );

        let too_big = Publish::new("a".into(), Bytes::from(vec![0u8; 268_435_456 - 3]));
        assert_eq!(
            encode_err(too_big),
            EncodeError::PacketTooLarge(268_435_456)
        );

        let mut buf = BytesMut::from(&hex("30 FF FF FF 7F 00 01 'a'")[..]);
        assert_eq!(decode(&mut buf, V3, MAX), Ok(None));
        assert_eq!(buf.len(), 8, "Ok(None) leaves the buffer as it was");
        assert_eq!(
            decode(&mut buf, V3, 1024),
            Err(DecodeError::PacketTooLarge {
                size: 268_435_460,
                max: 1024
            })
        );
    }

    #[test]
    fn remaining_length_malformed() {
        // A fifth length byte.
        malformed("30 FF FF FF FF 01", DecodeError::VarIntTooLong);
        malformed("30 80 80 80 80 00", DecodeError::VarIntTooLong);
        // Incomplete: more bytes needed, nothing consumed.
        let mut buf = BytesMut::from(&hex("30 FF FF FF")[..]);
        assert_eq!(decode(&mut buf, V3, MAX), Ok(None));
        assert_eq!(buf.len(), 4);
    }

    /// 3.1.1 has no minimal-encoding rule for the remaining length (5.0 added
    /// [MQTT-1.5.5-1]); a padded length is accepted.
    #[test]
    fn remaining_length_non_minimal_is_accepted() {
        assert_decodes_to(&hex("C0 80 00"), V3, &Packet::PingReq);
        assert_decodes_to(&hex("40 82 80 00 00 07"), V3, &PubAck::new(id(7)).into());
    }

    // ---------------------------------------------------------------- streams

    /// Several packets back to back decode one at a time, each consuming its own bytes.
    #[test]
    fn a_stream_of_packets() {
        let wire = hex("10 0D 00 04 'MQTT' 04 02 00 3C 00 01 'c' \
                    | 32 07 00 03 'a/b' 00 0A | 40 02 00 0A | C0 00 | E0 00");
        let mut buf = BytesMut::from(&wire[..]);
        let mut types = Vec::new();
        while let Some(p) = decode(&mut buf, V3, MAX).unwrap() {
            types.push(p.packet_type());
        }
        assert!(buf.is_empty());
        assert_eq!(
            types,
            [
                PacketType::Connect,
                PacketType::Publish,
                PacketType::PubAck,
                PacketType::PingReq,
                PacketType::Disconnect
            ]
        );
        // The payload is a zero-copy slice of the frame.
        let p = decode_one(&hex("30 06 00 01 't' 'xyz'"), V3).unwrap();
        let Packet::Publish(p) = p else {
            panic!("not a PUBLISH")
        };
        assert_eq!(p.payload, Bytes::from_static(b"xyz"));
    }
}

mod v5 {
    use bytes::{Bytes, BytesMut};
    use fulmar_codec::{
        DecodeError, Disconnect, EncodeError, Packet, PacketType, ProtocolVersion, Publish,
        ReasonCode, decode,
    };

    use super::common::{assert_malformed, assert_vector, cat, decode_one, hex};

    const V5: ProtocolVersion = ProtocolVersion::V5;

    fn encode_err(packet: impl Into<Packet>) -> EncodeError {
        super::common::encode_err(packet, V5)
    }

    fn malformed(wire: &[u8], error: DecodeError) {
        assert_malformed(wire, V5, error, ReasonCode::MalformedPacket);
    }

    // ---------------------------------------------------------------- fixed header

    /// Reserved flags of every packet type but PUBLISH, and packet type 0.
    // v5:MQTT-2.1.3-1
    #[test]
    fn reserved_flags_of_every_fixed_flag_packet() {
        for nibble in 1..=15u8 {
            let packet_type = PacketType::from_nibble(nibble).unwrap();
            let Some(expected) = packet_type.fixed_flags() else {
                continue;
            };
            for flags in (0..16u8).filter(|f| *f != expected) {
                malformed(
                    &[(nibble << 4) | flags, 0x00],
                    DecodeError::ReservedFlags { packet_type, flags },
                );
            }
        }
        malformed(&hex("00 00"), DecodeError::ReservedPacketType(0));
    }

    // ---------------------------------------------------------------- remaining length

    /// Spec 1.5.5 Table 1-1 boundaries, each encoded and decoded in full
    /// (a QoS 0 PUBLISH to "a" with an empty property block).
    // v5:MQTT-1.5.5-1
    #[test]
    fn remaining_length_boundaries() {
        assert_vector(&Disconnect::default().into(), V5, &hex("E0 00"));
        for (remaining, header) in [
            (127, "30 7F"),
            (128, "30 80 01"),
            (16_383, "30 FF 7F"),
            (16_384, "30 80 80 01"),
            (2_097_151, "30 FF FF 7F"),
            (2_097_152, "30 80 80 80 01"),
        ] {
            let p = Publish::new("a".into(), Bytes::from(vec![0x5A; remaining - 4]));
            let wire = cat(&[&hex(header), &hex("00 01 'a' 00"), &p.payload]);
            assert_vector(&p.into(), V5, &wire);
        }
    }

    /// 268 435 455 (`FF FF FF 7F`) is the largest remaining length: the header
    /// is encoded without touching the payload; one byte more cannot be encoded.
    #[test]
    fn remaining_length_maximum() {
        let p = Publish::new("a".into(), Bytes::from(vec![0u8; 268_435_455 - 4]));
        let mut header = BytesMut::new();
        p.encode_header(V5, &mut header).unwrap();
        assert_eq!(&header[..], &hex("30 FF FF FF 7F 00 01 'a' 00")[..]);
        assert_eq!(Packet::from(p).encoded_len(V5).unwrap(), 268_435_460);
        let p = Publish::new("a".into(), Bytes::from(vec![0u8; 268_435_456 - 4]));
        assert_eq!(encode_err(p), EncodeError::PacketTooLarge(268_435_456));
    }

    /// A padded remaining length is malformed in 5.0, on every packet type.
    // v5:MQTT-1.5.5-1
    #[test]
    fn remaining_length_must_be_minimal() {
        malformed(&hex("C0 80 00"), DecodeError::NonMinimalVarInt);
        malformed(&hex("40 82 00 00 01"), DecodeError::NonMinimalVarInt);
        malformed(
            &hex("30 85 80 00 00 01 't' 00 'x'"),
            DecodeError::NonMinimalVarInt,
        );
        malformed(&hex("30 FF FF FF FF 01"), DecodeError::VarIntTooLong);
    }

    /// A packet over the maximum size is refused from its fixed header alone,
    /// with reason code 0x95.
    #[test]
    fn packet_too_large_is_refused_from_the_fixed_header() {
        let mut buf = BytesMut::from(&hex("30 80 01")[..]);
        let err = decode(&mut buf, V5, 130).unwrap_err();
        assert_eq!(
            err,
            DecodeError::PacketTooLarge {
                size: 131,
                max: 130
            }
        );
        assert_eq!(err.reason_code(), ReasonCode::PacketTooLarge);
        // Exactly the maximum is fine.
        let mut buf = BytesMut::from(&hex("C0 00")[..]);
        assert_eq!(decode(&mut buf, V5, 2), Ok(Some(Packet::PingReq)));
        assert_eq!(decode_one(&hex("C0 00"), V5), Ok(Packet::PingReq));
    }
}

/// Field size limits: a UTF-8 string or Binary Data has a two-byte length,
/// so 65 535 bytes is the most; longer data cannot be encoded.
mod limits {
    use core::num::NonZeroU32;

    use bytes::{Bytes, BytesMut};
    use fulmar_codec::{
        Connect, DecodeError, EncodeError, MAX_STRING_LEN, MqttString, PacketId, ProtocolVersion,
        Publish, QoS, StringError, Subscribe, SubscriptionOptions, Will, decode,
    };

    use super::common::{MAX, assert_vector, cat, encode_err, hex};

    const V3: ProtocolVersion = ProtocolVersion::V311;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    /// The longest topic name, 65 535 bytes: length prefix `FF FF`.
    // MQTT-4.7.3-3
    #[test]
    fn longest_string() {
        let topic = "t".repeat(MAX_STRING_LEN);
        let p = Publish::new(MqttString::from(topic.clone()), Bytes::new());
        // Remaining length 2 + 65 535 = 65 537 = 0x81 0x80 0x04.
        let wire = cat(&[&hex("30 81 80 04 FF FF"), topic.as_bytes()]);
        assert_vector(&p.clone().into(), V3, &wire);
        let wire = cat(&[&hex("30 82 80 04 FF FF"), topic.as_bytes(), &[0x00]]);
        assert_vector(&p.into(), V5, &wire);
        // A string cannot be longer.
        assert_eq!(
            MqttString::try_new(&"t".repeat(MAX_STRING_LEN + 1)),
            Err(StringError::TooLong(MAX_STRING_LEN + 1))
        );
    }

    /// A string length pointing past the end of the packet.
    #[test]
    fn string_length_past_the_packet() {
        let mut buf = BytesMut::from(&hex("30 04 FF FF 't' 't'")[..]);
        assert_eq!(
            decode(&mut buf, V3, MAX),
            Err(DecodeError::Truncated {
                field: "topic name"
            })
        );
    }

    #[test]
    fn binary_data_longer_than_65535_bytes() {
        let too_long = Bytes::from(vec![0u8; 65_536]);
        let just_right = Bytes::from(vec![0u8; 65_535]);

        let mut p = Publish::new("t".into(), Bytes::new());
        p.properties.correlation_data = Some(too_long.clone());
        assert_eq!(
            encode_err(p.clone(), V5),
            EncodeError::BinaryTooLong {
                field: "correlation data",
                len: 65_536
            }
        );
        p.properties.correlation_data = Some(just_right.clone());
        assert_eq!(
            fulmar_codec::Packet::from(p).encoded_len(V5).unwrap(),
            // type, remaining length, topic, property length, identifier, length, data
            1 + 3 + 3 + 3 + 1 + 2 + 65_535
        );

        let mut connect = Connect::new(V3, "c".into());
        connect.will = Some(Will::new("w".into(), too_long.clone()));
        assert_eq!(
            encode_err(connect.clone(), V3),
            EncodeError::BinaryTooLong {
                field: "will payload",
                len: 65_536
            }
        );
        connect.will = None;
        connect.username = Some("u".into());
        connect.password = Some(too_long.clone());
        assert_eq!(
            encode_err(connect, V3),
            EncodeError::BinaryTooLong {
                field: "password",
                len: 65_536
            }
        );
        let mut connect = Connect::new(V5, "c".into());
        connect.properties.authentication_method = Some("m".into());
        connect.properties.authentication_data = Some(too_long);
        assert_eq!(
            encode_err(connect, V5),
            EncodeError::BinaryTooLong {
                field: "authentication data",
                len: 65_536
            }
        );
    }

    /// A Subscription Identifier is a Variable Byte Integer: 268 435 455 at most.
    #[test]
    fn subscription_identifier_above_the_maximum() {
        let mut sub = Subscribe::new(
            PacketId::new(1).unwrap(),
            vec![("a".into(), SubscriptionOptions::new(QoS::AtMostOnce))],
        );
        sub.properties.subscription_identifier = NonZeroU32::new(268_435_456);
        assert!(matches!(
            encode_err(sub, V5),
            EncodeError::InvalidProperty(_)
        ));
    }
}

/// A peer that sends only the fixed header of a huge packet does not make the
/// decoder reserve the whole packet: memory grows with the bytes that arrive.
#[test]
fn header_of_a_huge_packet_reserves_a_bounded_amount() {
    use bytes::BytesMut;
    use fulmar_codec::{ProtocolVersion, decode};
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        // PUBLISH with remaining length 268 435 455, the largest the spec allows.
        let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F][..]);
        assert!(decode(&mut buf, version, u32::MAX).unwrap().is_none());
        assert_eq!(buf.len(), 5, "Ok(None) leaves the bytes untouched");
        assert!(
            buf.capacity() <= 5 + fulmar_codec::MAX_RESERVE_AHEAD,
            "reserved {} bytes on the word of a header",
            buf.capacity()
        );
    }
}
