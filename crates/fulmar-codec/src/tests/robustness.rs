//! Arbitrary and mutated input: decode never panics, and whatever decodes
//! re-encodes to a packet that decodes to the same value.

use core::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::{
    ConnAck, Connect, ConnectReasonCode, Disconnect, DisconnectReasonCode, PacketId, PayloadFormat,
    PubAck, PubAckReasonCode, Publish, QoS, RetainHandling, SubAck, SubAckReasonCode, Subscribe,
    SubscriptionOptions, UnsubAck, UnsubAckReasonCode, Unsubscribe, Will,
};

fn corpus(version: crate::ProtocolVersion) -> Vec<Vec<u8>> {
    let id = PacketId::new(7).unwrap();
    let mut publish = Publish::new("a/b".into(), Bytes::from_static(b"payload"));
    publish.qos = QoS::ExactlyOnce;
    publish.packet_id = Some(id);
    let mut connect = Connect::new(version, "client".into());
    connect.will = Some(Will::new("w".into(), Bytes::from_static(b"bye")));
    connect.username = Some("u".into());
    connect.password = Some(Bytes::from_static(b"p"));
    let mut packets: Vec<Packet> = vec![
        publish.clone().into(),
        connect.clone().into(),
        ConnAck::new(true, ConnectReasonCode::Success).into(),
        PubAck::new(id).into(),
        Subscribe::new(
            id,
            vec![("a/+".into(), SubscriptionOptions::new(QoS::AtLeastOnce))],
        )
        .into(),
        SubAck::new(id, vec![SubAckReasonCode::GrantedQoS1]).into(),
        Unsubscribe::new(id, vec!["a/#".into()]).into(),
        Packet::PingReq,
        Disconnect::default().into(),
    ];
    if version == V5 {
        publish.properties.topic_alias = NonZeroU16::new(2);
        publish.properties.payload_format_indicator = Some(PayloadFormat::Utf8);
        publish
            .properties
            .subscription_identifiers
            .push(NonZeroU32::new(300).unwrap());
        publish
            .properties
            .user_properties
            .push(("k".into(), "v".into()));
        connect.properties.receive_maximum = NonZeroU16::new(10);
        connect.properties.authentication_method = Some("m".into());
        let mut sub = Subscribe::new(
            id,
            vec![(
                "x".into(),
                SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::DoNotSend,
                },
            )],
        );
        sub.properties.subscription_identifier = NonZeroU32::new(5);
        let mut ack = PubAck::new(id);
        ack.reason_code = PubAckReasonCode::QuotaExceeded;
        ack.properties.reason_string = Some("r".into());
        packets.extend([
            publish.into(),
            connect.into(),
            sub.into(),
            ack.into(),
            UnsubAck::new(id, vec![UnsubAckReasonCode::NoSubscriptionExisted]).into(),
            Disconnect::new(DisconnectReasonCode::ServerMoved).into(),
            Packet::Auth(crate::Auth::default()),
        ]);
    }
    packets.iter().map(|p| enc(p, version)).collect()
}

/// Decodes everything in `bytes`; each decoded packet must survive a round trip.
fn check(bytes: &[u8], version: crate::ProtocolVersion) {
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(p)) = decode(&mut buf, version, 4096) {
        let mut out = BytesMut::new();
        // A CONNECT carries its own version.
        let v = match &p {
            Packet::Connect(c) => c.protocol_version,
            _ => version,
        };
        p.encode(v, &mut out).expect("a decoded packet encodes");
        let again = decode(&mut out, v, u32::MAX).unwrap().unwrap();
        assert_eq!(again, p);
        assert!(out.is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64), v5 in any::<bool>()) {
        check(&bytes, if v5 { V5 } else { V3 });
    }

    #[test]
    fn mutated_packets(
        index in any::<proptest::sample::Index>(),
        edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
        v5 in any::<bool>(),
    ) {
        let version = if v5 { V5 } else { V3 };
        let corpus = corpus(version);
        let mut bytes = index.get(&corpus).clone();
        for (at, value, kind) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match kind {
                0 => bytes[i] = value,
                1 => bytes.insert(i, value),
                _ => { bytes.remove(i); }
            }
        }
        check(&bytes, version);
    }
}
