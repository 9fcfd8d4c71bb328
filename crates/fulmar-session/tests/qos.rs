//! QoS 0, 1 and 2 flows in both directions and both versions (spec 4.3, 4.4, 4.6).

mod common;

use common::*;
use fulmar_codec::{
    ConnAck, ConnectReasonCode, Packet, ProtocolVersion, PubAck, PubAckReasonCode, PubComp,
    PubCompReasonCode, PubRec, PubRecReasonCode, PubRel, PubRelReasonCode, QoS, ReasonCode,
};
use fulmar_session::{Config, Event};

/// MQTT 3.1 runs every flow of 3.1.1.
const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V31,
    ProtocolVersion::V311,
    ProtocolVersion::V5,
];

fn client(version: ProtocolVersion) -> fulmar_session::Session {
    client_with(Config::default(), version)
}

/// A client session with `config`, connected (no session present).
fn client_with(config: Config, version: ProtocolVersion) -> fulmar_session::Session {
    connected_client(
        config,
        connect_packet(version, "c", true),
        ConnAck::new(false, ConnectReasonCode::Success),
        t0(),
    )
}

#[test]
fn qos0_is_sent_once_without_dup_and_not_acknowledged() {
    // MQTT-4.3.1-1 MQTT-3.3.1-2
    for version in VERSIONS {
        let mut pair = Pair::new(version);
        pair.connect(true);
        let id = pair
            .client
            .publish(publish("a/b", QoS::AtMostOnce, b"0"), pair.now)
            .unwrap();
        assert_eq!(id, None);
        let out = drain(&mut pair.client);
        let [Packet::Publish(p)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert!(!p.dup);
        assert_eq!(p.packet_id, None);
        pair.server
            .handle_packet(wire(out[0].clone(), version), pair.now)
            .unwrap();
        assert_eq!(messages(&events(&mut pair.server)).len(), 1);
        assert!(
            drain(&mut pair.server).is_empty(),
            "no acknowledgement for QoS 0"
        );
        assert_eq!(pair.client.inflight_len(), 0);
    }
}

#[test]
fn qos1_flow_client_to_server() {
    // MQTT-4.3.2-1 MQTT-4.3.2-2 v5:MQTT-4.3.2-3 v5:MQTT-4.3.2-4 MQTT-3.3.4-1
    for version in VERSIONS {
        let mut pair = Pair::new(version);
        pair.connect(true);
        let a = pair
            .client
            .publish(publish("t", QoS::AtLeastOnce, b"a"), pair.now)
            .unwrap()
            .unwrap();
        let b = pair
            .client
            .publish(publish("t", QoS::AtLeastOnce, b"b"), pair.now)
            .unwrap()
            .unwrap();
        assert_ne!(a, b, "an unused packet identifier per message");
        let out = drain(&mut pair.client);
        assert_eq!(out.len(), 2);
        for (packet, expected) in out.iter().zip([a, b]) {
            let Packet::Publish(p) = packet else { panic!() };
            assert_eq!(p.packet_id, Some(expected));
            assert_eq!(p.qos, QoS::AtLeastOnce);
            assert!(!p.dup);
        }
        assert_eq!(pair.client.inflight_len(), 2, "unacknowledged until PUBACK");
        for packet in out {
            pair.server
                .handle_packet(wire(packet, version), pair.now)
                .unwrap();
        }
        let acks = drain(&mut pair.server);
        assert_eq!(
            acks,
            vec![
                Packet::PubAck(PubAck::new(a)),
                Packet::PubAck(PubAck::new(b))
            ]
        );
        assert_eq!(messages(&events(&mut pair.server)).len(), 2);
        for ack in acks {
            pair.client
                .handle_packet(wire(ack, version), pair.now)
                .unwrap();
        }
        assert_eq!(completed(&events(&mut pair.client)), vec![a, b]);
        assert_eq!(pair.client.inflight_len(), 0);
    }
}

#[test]
fn qos1_same_identifier_after_puback_is_a_new_message() {
    // v5:MQTT-4.3.2-5 v3:MQTT-4.3.2-2
    for version in VERSIONS {
        let mut c = client(version);
        for _ in 0..2 {
            c.handle_packet(incoming("t", QoS::AtLeastOnce, Some(7), b"x"), t0())
                .unwrap();
            assert_eq!(drain(&mut c), vec![Packet::PubAck(PubAck::new(id(7)))]);
        }
        assert_eq!(messages(&events(&mut c)).len(), 2);
    }
}

#[test]
fn qos2_flow_client_to_server_delivers_exactly_once() {
    // MQTT-4.3.3-1 MQTT-4.3.3-2 v5:MQTT-4.3.3-3 v5:MQTT-4.3.3-4 v5:MQTT-4.3.3-5 v5:MQTT-4.3.3-8
    // v5:MQTT-4.3.3-10 v5:MQTT-4.3.3-11 v5:MQTT-4.3.3-12
    for version in VERSIONS {
        let mut pair = Pair::new(version);
        pair.connect(true);
        let a = pair
            .client
            .publish(publish("t", QoS::ExactlyOnce, b"a"), pair.now)
            .unwrap()
            .unwrap();
        let out = drain(&mut pair.client);
        let [Packet::Publish(p)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(
            (p.qos, p.packet_id, p.dup),
            (QoS::ExactlyOnce, Some(a), false)
        );
        // The same PUBLISH twice before PUBREL: PUBREC both times, one delivery.
        pair.server
            .handle_packet(wire(out[0].clone(), version), pair.now)
            .unwrap();
        let mut dup = p.clone();
        dup.dup = true;
        pair.server
            .handle_packet(Packet::Publish(dup), pair.now)
            .unwrap();
        assert_eq!(
            drain(&mut pair.server),
            vec![
                Packet::PubRec(PubRec::new(a)),
                Packet::PubRec(PubRec::new(a))
            ]
        );
        assert_eq!(messages(&events(&mut pair.server)).len(), 1);
        assert_eq!(pair.server.incoming_qos2_len(), 1);

        pair.client
            .handle_packet(Packet::PubRec(PubRec::new(a)), pair.now)
            .unwrap();
        assert_eq!(
            drain(&mut pair.client),
            vec![Packet::PubRel(PubRel::new(a))]
        );
        assert_eq!(
            pair.client.inflight_len(),
            1,
            "PUBREL unacknowledged until PUBCOMP"
        );
        assert!(events(&mut pair.client).is_empty());

        pair.server
            .handle_packet(Packet::PubRel(PubRel::new(a)), pair.now)
            .unwrap();
        assert_eq!(
            drain(&mut pair.server),
            vec![Packet::PubComp(PubComp::new(a))]
        );
        assert_eq!(pair.server.incoming_qos2_len(), 0);
        pair.client
            .handle_packet(Packet::PubComp(PubComp::new(a)), pair.now)
            .unwrap();
        assert_eq!(completed(&events(&mut pair.client)), vec![a]);
        assert_eq!(pair.client.inflight_len(), 0);

        // After PUBCOMP the identifier is free: the same id is a new message.
        pair.server
            .handle_packet(wire(out[0].clone(), version), pair.now)
            .unwrap();
        assert_eq!(messages(&events(&mut pair.server)).len(), 1);
    }
}

#[test]
fn qos2_flow_server_to_client() {
    // MQTT-4.3.3-1 v3:MQTT-4.3.3-2 v5:MQTT-4.5.0-2 v3:MQTT-4.5.0-2
    for version in VERSIONS {
        let mut pair = Pair::new(version);
        pair.connect(true);
        let id = pair
            .server
            .publish(publish("down", QoS::ExactlyOnce, b"d"), pair.now)
            .unwrap()
            .unwrap();
        pair.drive();
        let delivered = messages(&pair.take_client_events());
        assert_eq!(delivered.len(), 1);
        assert_eq!(delivered[0].topic, "down");
        assert_eq!(completed(&pair.take_server_events()), vec![id]);
        assert_eq!(pair.server.inflight_len(), 0);
        assert_eq!(pair.client.incoming_qos2_len(), 0);
    }
}

#[test]
fn pubrec_error_completes_without_pubrel_and_is_never_resent() {
    // v5:MQTT-4.4.0-2
    let mut c = client(ProtocolVersion::V5);
    let a = c
        .publish(publish("t", QoS::ExactlyOnce, b"a"), t0())
        .unwrap()
        .unwrap();
    assert_eq!(drain(&mut c).len(), 1);
    let mut rec = PubRec::new(a);
    rec.reason_code = PubRecReasonCode::QuotaExceeded;
    c.handle_packet(Packet::PubRec(rec), t0()).unwrap();
    assert!(drain(&mut c).is_empty(), "no PUBREL after an error PUBREC");
    let evs = events(&mut c);
    assert!(matches!(
        evs.as_slice(),
        [Event::PublishComplete {
            reason_code: ReasonCode::QuotaExceeded,
            qos: QoS::ExactlyOnce,
            ..
        }]
    ));
    assert_eq!(c.inflight_len(), 0);
    assert!(c.session_state(t0()).outgoing().is_empty());
}

#[test]
fn puback_error_completes_with_its_reason_code() {
    // v5:MQTT-4.4.0-2
    let mut c = client(ProtocolVersion::V5);
    let a = c
        .publish(publish("t", QoS::AtLeastOnce, b"a"), t0())
        .unwrap()
        .unwrap();
    let _ = drain(&mut c);
    let mut ack = PubAck::new(a);
    ack.reason_code = fulmar_codec::PubAckReasonCode::NotAuthorized;
    c.handle_packet(Packet::PubAck(ack), t0()).unwrap();
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::PublishComplete {
            reason_code: ReasonCode::NotAuthorized,
            ..
        }]
    ));
    assert_eq!(c.inflight_len(), 0);
}

#[test]
fn unknown_pubrel_gets_pubcomp_packet_identifier_not_found() {
    // v5:MQTT-4.3.3-11
    let mut c = client(ProtocolVersion::V5);
    c.handle_packet(Packet::PubRel(PubRel::new(id(9))), t0())
        .unwrap();
    let mut expected = PubComp::new(id(9));
    expected.reason_code = PubCompReasonCode::PacketIdentifierNotFound;
    assert_eq!(drain(&mut c), vec![Packet::PubComp(expected)]);
    // Unknown PUBREC: PUBREL with 0x92.
    c.handle_packet(Packet::PubRec(PubRec::new(id(10))), t0())
        .unwrap();
    let mut rel = PubRel::new(id(10));
    rel.reason_code = PubRelReasonCode::PacketIdentifierNotFound;
    assert_eq!(drain(&mut c), vec![Packet::PubRel(rel)]);
    // Unknown PUBACK / PUBCOMP are ignored.
    c.handle_packet(Packet::PubAck(PubAck::new(id(11))), t0())
        .unwrap();
    c.handle_packet(Packet::PubComp(PubComp::new(id(12))), t0())
        .unwrap();
    assert!(drain(&mut c).is_empty());
    assert!(c.is_connected());
}

#[test]
fn a_qos2_publish_completes_with_the_pubrec_reason_code_and_properties() {
    // v5:MQTT-3.5.2-1: the PUBREC's code (0x10 No matching subscribers here)
    // and properties are the outcome of the flow, which the PUBCOMP ends.
    let mut c = client(ProtocolVersion::V5);
    let a = c
        .publish(publish("t", QoS::ExactlyOnce, b"x"), t0())
        .unwrap()
        .unwrap();
    let _ = drain(&mut c);
    let mut rec = PubRec::new(a);
    rec.reason_code = PubRecReasonCode::NoMatchingSubscribers;
    rec.properties.reason_string = Some("nobody listens".into());
    c.handle_packet(Packet::PubRec(rec), t0()).unwrap();
    assert_eq!(drain(&mut c), vec![Packet::PubRel(PubRel::new(a))]);
    c.handle_packet(Packet::PubComp(PubComp::new(a)), t0())
        .unwrap();
    match events(&mut c).as_slice() {
        [
            Event::PublishComplete {
                reason_code,
                qos: QoS::ExactlyOnce,
                properties,
                ..
            },
        ] => {
            assert_eq!(*reason_code, ReasonCode::NoMatchingSubscribers);
            assert_eq!(properties.reason_string.as_deref(), Some("nobody listens"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn pubcomp_packet_identifier_not_found_completes_as_delivered() {
    // v5 table 3-7: 0x92 is not an error during recovery; the message was
    // the server's from its PUBREC on (MQTT-4.3.3-8), so the publish
    // completes with Success (an application that retried on an error
    // would break exactly once).
    let mut c = client(ProtocolVersion::V5);
    let a = c
        .publish(publish("t", QoS::ExactlyOnce, b"x"), t0())
        .unwrap()
        .unwrap();
    let _ = drain(&mut c);
    c.handle_packet(Packet::PubRec(PubRec::new(a)), t0())
        .unwrap();
    assert_eq!(drain(&mut c), vec![Packet::PubRel(PubRel::new(a))]);
    let mut comp = PubComp::new(a);
    comp.reason_code = PubCompReasonCode::PacketIdentifierNotFound;
    c.handle_packet(Packet::PubComp(comp), t0()).unwrap();
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::PublishComplete {
            reason_code: ReasonCode::Success,
            qos: QoS::ExactlyOnce,
            ..
        }]
    ));
    assert_eq!(c.inflight_len(), 0);
}

#[test]
fn unknown_pubrel_under_v311_gets_plain_pubcomp() {
    // v3:MQTT-4.3.3-2
    let mut c = client(ProtocolVersion::V311);
    c.handle_packet(Packet::PubRel(PubRel::new(id(9))), t0())
        .unwrap();
    let out = drain(&mut c);
    assert_eq!(out, vec![Packet::PubComp(PubComp::new(id(9)))]);
    wire(out[0].clone(), ProtocolVersion::V311);
}

#[test]
fn acknowledgements_follow_the_order_of_receipt() {
    // MQTT-4.6.0-2 MQTT-4.6.0-3 MQTT-4.6.0-4
    for version in VERSIONS {
        let mut c = client(version);
        for n in [5, 3, 9] {
            c.handle_packet(incoming("t", QoS::AtLeastOnce, Some(n), b"x"), t0())
                .unwrap();
        }
        let ids: Vec<u16> = drain(&mut c)
            .into_iter()
            .map(|p| match p {
                Packet::PubAck(a) => a.packet_id.get(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, vec![5, 3, 9]);
        for n in [8, 2, 4] {
            c.handle_packet(incoming("t", QoS::ExactlyOnce, Some(n), b"x"), t0())
                .unwrap();
        }
        let recs: Vec<Packet> = drain(&mut c);
        assert_eq!(
            recs,
            [8, 2, 4]
                .map(|n| Packet::PubRec(PubRec::new(id(n))))
                .to_vec()
        );

        // Our own QoS 2 messages: PUBRELs in the order the PUBRECs arrive.
        let a = c
            .publish(publish("t", QoS::ExactlyOnce, b"a"), t0())
            .unwrap()
            .unwrap();
        let b = c
            .publish(publish("t", QoS::ExactlyOnce, b"b"), t0())
            .unwrap()
            .unwrap();
        let _ = drain(&mut c);
        c.handle_packet(Packet::PubRec(PubRec::new(b)), t0())
            .unwrap();
        c.handle_packet(Packet::PubRec(PubRec::new(a)), t0())
            .unwrap();
        assert_eq!(
            drain(&mut c),
            vec![
                Packet::PubRel(PubRel::new(b)),
                Packet::PubRel(PubRel::new(a))
            ]
        );
    }
}

#[test]
fn an_acknowledgement_not_sent_yet_may_say_no_matching_subscribers() {
    // v5:MQTT-3.4.2-1 v5:MQTT-3.5.2-1
    let mut c = client(ProtocolVersion::V5);
    c.handle_packet(incoming("t", QoS::AtLeastOnce, Some(5), b"x"), t0())
        .unwrap();
    c.handle_packet(incoming("t", QoS::ExactlyOnce, Some(6), b"x"), t0())
        .unwrap();
    c.handle_packet(incoming("t", QoS::AtLeastOnce, Some(7), b"x"), t0())
        .unwrap();
    let none = PubAckReasonCode::NoMatchingSubscribers;
    assert!(c.set_ack_reason(id(5), none));
    assert!(c.set_ack_reason(id(6), none));
    // Error codes are not taken (refusing a message also ends its flow),
    // nor identifiers without a queued acknowledgement.
    assert!(!c.set_ack_reason(id(7), PubAckReasonCode::NotAuthorized));
    assert!(!c.set_ack_reason(id(9), none));
    let mut ack = PubAck::new(id(5));
    ack.reason_code = none;
    let mut rec = PubRec::new(id(6));
    rec.reason_code = PubRecReasonCode::NoMatchingSubscribers;
    assert_eq!(
        drain(&mut c),
        vec![
            Packet::PubAck(ack),
            Packet::PubRec(rec),
            Packet::PubAck(PubAck::new(id(7)))
        ]
    );
    // Sent already: too late.
    assert!(!c.set_ack_reason(id(5), none));
    // The QoS 2 flow goes on: 0x10 is not an error.
    c.handle_packet(Packet::PubRel(PubRel::new(id(6))), t0())
        .unwrap();
    assert_eq!(drain(&mut c), vec![Packet::PubComp(PubComp::new(id(6)))]);
    // 3.1.1 acknowledgements carry no reason code.
    let mut c = client(ProtocolVersion::V311);
    c.handle_packet(incoming("t", QoS::AtLeastOnce, Some(5), b"x"), t0())
        .unwrap();
    assert!(!c.set_ack_reason(id(5), none));
}

#[test]
fn dup_is_set_only_on_retransmission() {
    // MQTT-3.3.1-1 MQTT-3.3.1-3
    for version in VERSIONS {
        let mut pair = Pair::new(version);
        pair.connect(false);
        // A message received with DUP and forwarded: DUP is ours to decide.
        let mut forwarded = publish("t", QoS::AtLeastOnce, b"f");
        forwarded.dup = true;
        pair.server.publish(forwarded, pair.now).unwrap();
        let out = drain(&mut pair.server);
        let [Packet::Publish(first)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert!(!first.dup, "a first transmission never carries DUP");
        pair.break_link();
        pair.connect(false);
        let delivered = messages(&pair.take_client_events());
        assert_eq!(delivered.len(), 1);
        assert!(delivered[0].dup, "the retransmission on resume carries DUP");
        assert_eq!(
            delivered[0].packet_id, first.packet_id,
            "original identifier"
        );
    }
}

#[test]
fn manual_acks_wait_for_the_application_and_keep_the_order_of_receipt() {
    // MQTT-4.6.0-2 MQTT-4.6.0-3 v5:MQTT-4.3.2-4 v5:MQTT-4.3.3-8 v5:MQTT-4.3.3-10
    for version in VERSIONS {
        let config = Config {
            manual_acks: true,
            ..Config::default()
        };
        let mut c = client_with(config, version);
        c.handle_packet(incoming("t", QoS::AtLeastOnce, Some(1), b"a"), t0())
            .unwrap();
        c.handle_packet(incoming("t", QoS::ExactlyOnce, Some(2), b"b"), t0())
            .unwrap();
        c.handle_packet(incoming("t", QoS::ExactlyOnce, Some(2), b"b"), t0())
            .unwrap();
        assert_eq!(
            messages(&events(&mut c)).len(),
            2,
            "delivered on receipt, the duplicate once"
        );
        assert!(drain(&mut c).is_empty(), "nothing acknowledged yet");
        // Acknowledging the second first: held back behind the first.
        c.ack(id(2)).unwrap();
        assert!(drain(&mut c).is_empty());
        c.ack(id(1)).unwrap();
        assert_eq!(
            drain(&mut c),
            vec![
                Packet::PubAck(PubAck::new(id(1))),
                Packet::PubRec(PubRec::new(id(2)))
            ]
        );
        // Now a duplicate gets its PUBREC at once; unknown ids are refused.
        c.handle_packet(incoming("t", QoS::ExactlyOnce, Some(2), b"b"), t0())
            .unwrap();
        assert_eq!(drain(&mut c), vec![Packet::PubRec(PubRec::new(id(2)))]);
        assert!(c.ack(id(1)).is_err());
        assert!(
            client(version).ack(id(1)).is_err(),
            "manual acks are off by default"
        );
    }
}

#[test]
fn a_resent_qos1_publish_awaiting_its_manual_ack_is_not_queued_again() {
    // MQTT-2.2.1-3 v5:MQTT-4.3.2-5 MQTT-4.6.0-2
    // Found by the `session` fuzz target: under 3.1.1 (no Receive Maximum) every resend
    // of an unacknowledged QoS 1 PUBLISH was delivered and queued again, without bound.
    for version in VERSIONS {
        let config = Config {
            manual_acks: true,
            receive_maximum: std::num::NonZeroU16::new(2).unwrap(),
            ..Config::default()
        };
        let mut c = client_with(config, version);
        for _ in 0..1000 {
            c.handle_packet(incoming("t", QoS::AtLeastOnce, Some(1), b"a"), t0())
                .unwrap();
        }
        assert_eq!(messages(&events(&mut c)).len(), 1, "delivered once");
        assert!(drain(&mut c).is_empty(), "nothing acknowledged yet");
        c.ack(id(1)).unwrap();
        assert!(c.ack(id(1)).is_err(), "one message to acknowledge");
        assert_eq!(drain(&mut c), vec![Packet::PubAck(PubAck::new(id(1)))]);
        // After its PUBACK the identifier is free: the next PUBLISH with it is new.
        c.handle_packet(incoming("t", QoS::AtLeastOnce, Some(1), b"b"), t0())
            .unwrap();
        assert_eq!(messages(&events(&mut c)).len(), 1, "a new message");
        assert!(!c.is_closed());
    }
}

/// A server that sends more than our Receive Maximum (mosquitto 2.0 sends a
/// resumed session's queue at once) is not disconnected by the client: the
/// spec forbids the server to send them (section 3.3.4) but does not make the client
/// refuse it, and refusing left a durable consumer unable to ever catch up
/// (found by a CLI review against mosquitto). The messages are delivered
/// and acknowledged as usual. (A server holds its clients to its Receive
/// Maximum: see limits.rs.)
#[test]
fn a_client_takes_what_its_server_sends_beyond_its_receive_maximum() {
    let config = Config {
        manual_acks: true,
        receive_maximum: std::num::NonZeroU16::new(2).unwrap(),
        ..Config::default()
    };
    let mut c = client_with(config, ProtocolVersion::V5);
    for (n, qos) in [
        (1, QoS::AtLeastOnce),
        (2, QoS::ExactlyOnce),
        (3, QoS::AtLeastOnce),
        (4, QoS::ExactlyOnce),
    ] {
        c.handle_packet(incoming("t", qos, Some(n), b"m"), t0())
            .unwrap();
    }
    assert_eq!(messages(&events(&mut c)).len(), 4);
    assert!(!c.is_closed());
    for n in 1..=4 {
        c.ack(id(n)).unwrap();
    }
    assert_eq!(
        drain(&mut c),
        vec![
            Packet::PubAck(PubAck::new(id(1))),
            Packet::PubRec(PubRec::new(id(2))),
            Packet::PubAck(PubAck::new(id(3))),
            Packet::PubRec(PubRec::new(id(4))),
        ]
    );
}

#[test]
fn poll_transmit_into_encodes_in_the_connection_version() {
    // MQTT-3.3.4-1
    for version in VERSIONS {
        let mut pair = Pair::new(version);
        pair.connect(true);
        pair.client
            .publish(publish("t", QoS::AtLeastOnce, b"x"), pair.now)
            .unwrap();
        let mut buf = bytes::BytesMut::new();
        assert!(pair.client.poll_transmit_into(&mut buf).unwrap());
        assert!(
            !pair.client.poll_transmit_into(&mut buf).unwrap(),
            "nothing more to send"
        );
        let packet = fulmar_codec::decode(&mut buf, version, u32::MAX)
            .unwrap()
            .unwrap();
        assert!(
            matches!(packet, Packet::Publish(ref p) if p.qos == QoS::AtLeastOnce && p.topic == "t")
        );
        assert!(buf.is_empty());
    }
}

#[test]
fn qos2_acknowledgements_continue_after_the_message_expired() {
    // v5:MQTT-4.3.3-13: the receiver continues the QoS 2 acknowledgement
    // sequence even if it has applied Application Message expiry.
    let now = t0();
    let connect = connect_packet(ProtocolVersion::V5, "expiring", true);
    let mut server = connected_server(Config::default(), connect, now);
    let mut p = publish("t", QoS::ExactlyOnce, b"short-lived");
    p.packet_id = Some(id(9));
    p.properties.message_expiry_interval = Some(1);
    server.handle_packet(Packet::Publish(p), now).unwrap();
    assert_eq!(messages(&events(&mut server)).len(), 1);
    assert_eq!(
        drain(&mut server),
        vec![Packet::PubRec(fulmar_codec::PubRec::new(id(9)))]
    );
    // Long after the message expired, the PUBREL still gets its PUBCOMP.
    let later = now + secs(60);
    server.handle_timeout(later);
    server
        .handle_packet(Packet::PubRel(PubRel::new(id(9))), later)
        .unwrap();
    assert_eq!(
        drain(&mut server),
        vec![Packet::PubComp(PubComp::new(id(9)))]
    );

    // And as a sender: a QoS 2 message that expires while its PUBREC is
    // awaited is still released when the PUBREC comes.
    let mut out = publish("t", QoS::ExactlyOnce, b"also short-lived");
    out.properties.message_expiry_interval = Some(1);
    let pid = server.publish(out, later).unwrap().unwrap();
    assert!(matches!(
        drain(&mut server).as_slice(),
        [Packet::Publish(_)]
    ));
    let much_later = later + secs(60);
    server.handle_timeout(much_later);
    server
        .handle_packet(Packet::PubRec(fulmar_codec::PubRec::new(pid)), much_later)
        .unwrap();
    assert_eq!(drain(&mut server), vec![Packet::PubRel(PubRel::new(pid))]);
}

#[test]
fn a_pubrel_before_its_pubrec_is_a_protocol_violation() {
    // MQTT-4.3.3-1 v5:MQTT-4.3.3-4 MQTT-4.6.0-3
    // Found while writing the `session` fuzz target: with manual acks, a peer sending
    // PUBLISH (QoS 2) and PUBREL again and again, while the application acknowledged each
    // message and an older one stayed unacknowledged, queued a PUBREC per round without
    // bound (1000 rounds: 1001 packets held back).
    for version in VERSIONS {
        let config = Config {
            manual_acks: true,
            receive_maximum: std::num::NonZeroU16::new(3).unwrap(),
            ..Config::default()
        };
        let mut c = client_with(config, version);
        c.handle_packet(incoming("t", QoS::AtLeastOnce, Some(2), b"held"), t0())
            .unwrap();
        c.handle_packet(incoming("t", QoS::ExactlyOnce, Some(1), b"q2"), t0())
            .unwrap();
        c.ack(id(1)).unwrap();
        assert!(
            drain(&mut c).is_empty(),
            "the PUBREC waits behind message 2"
        );
        let err = c
            .handle_packet(Packet::PubRel(PubRel::new(id(1))), t0())
            .unwrap_err();
        assert_eq!(
            err,
            fulmar_session::Error::Protocol(fulmar_session::ProtocolViolation::PubRelBeforePubRec(
                1
            ))
        );
        let sent = drain(&mut c);
        assert!(c.is_closed());
        if version == ProtocolVersion::V5 {
            assert_eq!(
                sent,
                vec![Packet::Disconnect(fulmar_codec::Disconnect::new(
                    fulmar_codec::DisconnectReasonCode::ProtocolError
                ))]
            );
        }
    }
}
