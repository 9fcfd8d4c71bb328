//! MQTT 3.1 (protocol name `MQIsdp`, level 3): the packets of 3.1.1 with the
//! differences of the older protocol, byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use fulmar_codec::{
    ConnAck, Connect, ConnectReasonCode, Disconnect, EncodeError, MqttString, Packet, PacketId,
    PacketType, ProtocolVersion, PubAck, PubComp, PubRec, PubRel, Publish, QoS, SubAck,
    SubAckReasonCode, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe, Will, decode,
};

const V31: ProtocolVersion = ProtocolVersion::V31;

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

fn encode(packet: &Packet) -> Result<Vec<u8>, EncodeError> {
    let mut buf = BytesMut::new();
    packet.encode(V31, &mut buf)?;
    Ok(buf.to_vec())
}

fn decode_all(bytes: &[u8]) -> Packet {
    let mut buf = BytesMut::from(bytes);
    let packet = decode(&mut buf, V31, 1 << 20).unwrap().unwrap();
    assert!(buf.is_empty());
    packet
}

#[test]
fn connect_is_mqisdp_level_3() {
    let mut connect = Connect::new(V31, MqttString::from("dev-1"));
    connect.keep_alive = 60;
    connect.clean_start = false;
    connect.will = Some(Will::new("w".into(), Bytes::from_static(b"bye")));
    connect.username = Some("u".into());
    connect.password = Some(Bytes::from_static(b"p"));
    let bytes = encode(&connect.clone().into()).unwrap();
    let mut expected = vec![0x10, 33, 0, 6];
    expected.extend_from_slice(b"MQIsdp");
    // Level 3; flags: user name, password, will, clean session off.
    expected.extend_from_slice(&[3, 0xC4, 0, 60, 0, 5]);
    expected.extend_from_slice(b"dev-1");
    expected.extend_from_slice(&[0, 1, b'w', 0, 3, b'b', b'y', b'e', 0, 1, b'u', 0, 1, b'p']);
    assert_eq!(bytes, expected);
    assert_eq!(decode_all(&bytes), Packet::Connect(Box::new(connect)));
    // The generic encoder (used to size a packet) agrees with the fast one.
    assert_eq!(
        Packet::Connect(Box::new(Connect::new(V31, "c".into())))
            .encoded_len(V31)
            .unwrap(),
        2 + 12 + 3
    );
}

#[test]
fn connect_with_the_unused_flag_bit_is_accepted() {
    // 3.1 leaves bit 0 of the CONNECT flags unused; mosquitto accepts it set.
    let mut bytes = vec![0x10, 15, 0, 6];
    bytes.extend_from_slice(b"MQIsdp");
    bytes.extend_from_slice(&[3, 0x03, 0, 10, 0, 1, b'c']);
    let Packet::Connect(connect) = decode_all(&bytes) else {
        panic!("not a CONNECT")
    };
    assert_eq!(connect.protocol_version, V31);
    assert!(connect.clean_start);
    // Under 3.1.1 the same bit is malformed (MQTT-3.1.2-3).
    let mut v3 = vec![0x10, 13, 0, 4];
    v3.extend_from_slice(b"MQTT");
    v3.extend_from_slice(&[4, 0x03, 0, 10, 0, 1, b'c']);
    assert!(decode(&mut BytesMut::from(&v3[..]), ProtocolVersion::V311, 1 << 20).is_err());
}

/// 3.1 leaves the flags of CONNECT's fixed header unused, as mosquitto does;
/// the name in the body says the packet is 3.1, whatever the connection's
/// version was taken to be, and it is read whole before it is judged. Under
/// 3.1.1 and 5.0 the same bits are malformed at once.
// v3:MQTT-2.2.2-2 v5:MQTT-2.1.3-1
#[test]
fn connect_fixed_header_flags_are_unused_in_3_1_only() {
    let mut body = vec![0, 6];
    body.extend_from_slice(b"MQIsdp");
    body.extend_from_slice(&[3, 0x02, 0, 10, 0, 1, b'c']);
    for flags in 1..16u8 {
        let mut bytes = vec![0x10 | flags, 15];
        bytes.extend_from_slice(&body);
        for version in [V31, ProtocolVersion::V311, ProtocolVersion::V5] {
            // A byte at a time: undecided until the name is in.
            let mut buf = BytesMut::new();
            for (i, b) in bytes.iter().enumerate() {
                buf.extend_from_slice(&[*b]);
                let decoded = decode(&mut buf, version, 1 << 20).unwrap();
                assert_eq!(decoded.is_some(), i + 1 == bytes.len());
                if let Some(Packet::Connect(connect)) = decoded {
                    assert_eq!(connect.protocol_version, V31);
                }
            }
        }
        // 3.1.1 and 5.0 CONNECTs with the same flags are refused as soon as
        // the length of the name tells them apart, or with the header
        // alone when the packet has no body.
        for (name, level) in [(&b"MQTT"[..], 4u8), (b"MQTT", 5)] {
            let mut wire = vec![0x10 | flags, 13, 0, 4];
            wire.extend_from_slice(name);
            wire.extend_from_slice(&[level, 0x02, 0, 10, 0, 1, b'c']);
            for prefix in [4usize, wire.len()] {
                let mut buf = BytesMut::from(&wire[..prefix]);
                assert!(matches!(
                    decode(&mut buf, ProtocolVersion::V311, 1 << 20),
                    Err(fulmar_codec::DecodeError::ReservedFlags {
                        packet_type: PacketType::Connect,
                        ..
                    })
                ));
            }
        }
        let mut empty = BytesMut::from(&[0x10 | flags, 0][..]);
        assert!(matches!(
            decode(&mut empty, V31, 1 << 20),
            Err(fulmar_codec::DecodeError::ReservedFlags { .. })
        ));
        // The connection's version does not excuse a 3.1.1 CONNECT.
        let mut v311 = vec![0x10 | flags, 13, 0, 4];
        v311.extend_from_slice(b"MQTT");
        v311.extend_from_slice(&[4, 0x02, 0, 10, 0, 1, b'c']);
        assert!(decode(&mut BytesMut::from(&v311[..]), V31, 1 << 20).is_err());
        // A short CONNECT that starts as 3.1's would is judged when whole.
        let mut short = BytesMut::from(&[0x10 | flags, 3, 0, 6, b'M'][..]);
        assert!(matches!(
            decode(&mut short, V31, 1 << 20),
            Err(fulmar_codec::DecodeError::ReservedFlags { .. })
        ));
    }
}

#[test]
fn connack_has_no_session_present_flag() {
    let accepted = ConnAck::new(false, ConnectReasonCode::Success);
    assert_eq!(encode(&accepted.clone().into()).unwrap(), [0x20, 2, 0, 0]);
    assert_eq!(
        encode(&ConnAck::new(true, ConnectReasonCode::Success).into()),
        Err(EncodeError::NotInV31 {
            packet_type: PacketType::ConnAck,
            what: "Session Present",
        })
    );
    // The flags byte is reserved in 3.1: whatever is there, no session is reported.
    assert_eq!(decode_all(&[0x20, 2, 1, 0]), Packet::ConnAck(accepted));
    let refused = ConnAck::new(false, ConnectReasonCode::ClientIdentifierNotValid);
    assert_eq!(encode(&refused.clone().into()).unwrap(), [0x20, 2, 0, 2]);
    assert_eq!(decode_all(&[0x20, 2, 0, 2]), Packet::ConnAck(refused));
}

#[test]
fn suback_failure_is_0x80_both_ways() {
    let granted = SubAck::new(
        pid(7),
        vec![SubAckReasonCode::GrantedQoS0, SubAckReasonCode::GrantedQoS2],
    );
    assert_eq!(encode(&granted.into()).unwrap(), [0x90, 4, 0, 7, 0, 2]);
    // 3.1 has no failure code; the codec writes and reads 3.1.1's 0x80 (some
    // 3.1 brokers send it), and a fulmar server session grants QoS 0 instead.
    let failed = SubAck::new(pid(7), vec![SubAckReasonCode::NotAuthorized]);
    assert_eq!(encode(&failed.into()).unwrap(), [0x90, 3, 0, 7, 0x80]);
    assert_eq!(
        decode_all(&[0x90, 3, 0, 7, 0x80]),
        Packet::SubAck(SubAck::new(
            pid(7),
            vec![SubAckReasonCode::UnspecifiedError]
        ))
    );
}

#[test]
fn resent_subscribe_unsubscribe_and_pubrel_may_carry_dup() {
    // 3.1 sets DUP on a resent SUBSCRIBE, UNSUBSCRIBE or PUBREL; mosquitto
    // accepts these (and other) flags from a 3.1 client.
    let subscribe = Subscribe::new(
        pid(1),
        vec![("a/b".into(), SubscriptionOptions::new(QoS::AtLeastOnce))],
    );
    let mut bytes = encode(&subscribe.clone().into()).unwrap();
    assert_eq!(bytes[0], 0x82);
    bytes[0] = 0x8A;
    assert_eq!(decode_all(&bytes), Packet::Subscribe(subscribe));
    let unsubscribe = Unsubscribe::new(pid(2), vec!["a/b".into()]);
    let mut bytes = encode(&unsubscribe.clone().into()).unwrap();
    bytes[0] = 0xAA;
    assert_eq!(decode_all(&bytes), Packet::Unsubscribe(unsubscribe));
    assert_eq!(
        decode_all(&[0x6A, 2, 0, 3]),
        Packet::PubRel(PubRel::new(pid(3)))
    );
}

#[test]
fn the_other_packets_are_those_of_3_1_1() {
    let mut publish = Publish::new("t/1".into(), Bytes::from_static(b"hello"));
    publish.qos = QoS::ExactlyOnce;
    publish.packet_id = Some(pid(9));
    publish.retain = true;
    let packets: Vec<Packet> = vec![
        publish.into(),
        PubAck::new(pid(9)).into(),
        PubRec::new(pid(9)).into(),
        PubRel::new(pid(9)).into(),
        PubComp::new(pid(9)).into(),
        UnsubAck::new(pid(4), Vec::new()).into(),
        Packet::PingReq,
        Packet::PingResp,
        Disconnect::default().into(),
    ];
    for packet in packets {
        let mut v31 = BytesMut::new();
        packet.encode(V31, &mut v31).unwrap();
        let mut v311 = BytesMut::new();
        packet.encode(ProtocolVersion::V311, &mut v311).unwrap();
        assert_eq!(v31, v311, "{packet:?}");
        assert_eq!(decode_all(&v31), packet);
    }
    // What 3.1.1 cannot carry, 3.1 cannot either: no AUTH, no properties.
    assert!(decode(&mut BytesMut::from(&[0xF0u8, 0][..]), V31, 1 << 20).is_err());
    let mut with_properties = Publish::new("t".into(), Bytes::new());
    with_properties.properties.content_type = Some("text/plain".into());
    assert!(matches!(
        encode(&with_properties.into()),
        Err(EncodeError::NotInV311 { .. })
    ));
}

#[test]
fn connect_leniencies_of_mqtt_3_1() {
    // As mosquitto reads a 3.1 CONNECT: will QoS / retain bits without the
    // will flag mean nothing, and a user name or password flag whose field
    // is missing is taken as no user name or password.
    let connect = |flags: u8, tail: &[u8]| {
        let mut body = vec![0, 6];
        body.extend_from_slice(b"MQIsdp");
        body.extend_from_slice(&[3, flags, 0, 10, 0, 1, b'c']);
        body.extend_from_slice(tail);
        let mut bytes = vec![0x10, u8::try_from(body.len()).unwrap()];
        bytes.extend_from_slice(&body);
        let Packet::Connect(c) = decode_all(&bytes) else {
            panic!("not a CONNECT")
        };
        c
    };
    for flags in [0x0A, 0x22, 0x1A] {
        let c = connect(flags, &[]);
        assert!(c.will.is_none(), "{flags:#x}");
    }
    let c = connect(0xC2, &[]);
    assert_eq!((c.username, c.password), (None, None));
    let c = connect(0xC2, &[0, 1, b'u']);
    assert_eq!(c.username.as_deref(), Some("u"));
    assert_eq!(c.password, None);
}
