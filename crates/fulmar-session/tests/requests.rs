//! SUBSCRIBE/UNSUBSCRIBE answered by the application, lost requests, and the
//! per-PUBLISH rules a server enforces (spec 3.3.4, 3.8, 3.10, 3.2.2.3).

mod common;

use common::*;
use fulmar_codec::{
    ConnAck, ConnectReasonCode, Disconnect, DisconnectReasonCode, MqttString, Packet,
    ProtocolVersion, PubAck, PubRec, QoS, ReasonCode, SubAck, SubAckReasonCode,
    SubscriptionOptions,
};
use fulmar_session::{Config, Error, Event, Initiator, ProtocolViolation, Session};

/// MQTT 3.1 runs every flow of 3.1.1.
const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V31,
    ProtocolVersion::V311,
    ProtocolVersion::V5,
];

fn disconnected(events: &[Event]) -> Option<(Initiator, ReasonCode)> {
    events.iter().find_map(|e| match e {
        Event::Disconnected {
            initiator,
            reason_code,
            ..
        } => Some((*initiator, *reason_code)),
        _ => None,
    })
}

#[test]
fn suback_and_unsuback_answer_with_the_request_identifier_and_one_code_per_filter() {
    // v5:MQTT-3.8.4-1 v5:MQTT-3.8.4-2 v5:MQTT-3.8.4-6 v5:MQTT-3.9.3-1 v5:MQTT-3.9.3-2
    // v3:MQTT-3.8.4-1 v3:MQTT-3.8.4-2 v3:MQTT-3.8.4-5 v5:MQTT-3.10.4-4 v5:MQTT-3.10.4-5
    // v3:MQTT-3.10.4-4 v3:MQTT-3.10.4-5 v5:MQTT-3.11.3-1 v5:MQTT-3.11.3-2
    for version in VERSIONS {
        let mut pair = Pair::new(version);
        pair.connect(true);
        let _ = pair.take_client_events();
        let filters = vec![
            (
                MqttString::from("a/+"),
                SubscriptionOptions::new(QoS::AtLeastOnce),
            ),
            (
                MqttString::from("b/#"),
                SubscriptionOptions::new(QoS::ExactlyOnce),
            ),
        ];
        let sub = pair
            .client
            .subscribe(filters, Default::default(), pair.now)
            .unwrap();
        pair.drive();
        let evs = pair.take_client_events();
        let [
            Event::SubAck(SubAck {
                packet_id,
                reason_codes,
                ..
            }),
        ] = evs.as_slice()
        else {
            panic!("{evs:?}")
        };
        assert_eq!(*packet_id, sub);
        assert_eq!(
            reason_codes,
            &vec![SubAckReasonCode::GrantedQoS1, SubAckReasonCode::GrantedQoS2]
        );
        assert_eq!(pair.client.subscriptions().len(), 2);

        let unsub = pair
            .client
            .unsubscribe(vec![MqttString::from("a/+")], Default::default(), pair.now)
            .unwrap();
        pair.drive();
        let evs = pair.take_client_events();
        assert!(
            matches!(evs.as_slice(), [Event::UnsubAck(u)] if u.packet_id == unsub),
            "{evs:?}"
        );
        assert_eq!(pair.client.subscriptions().len(), 1);

        // The broker must answer every filter, for a request that exists.
        let sub2 = pair
            .client
            .subscribe(
                vec![(MqttString::from("c"), SubscriptionOptions::default())],
                Default::default(),
                pair.now,
            )
            .unwrap();
        for p in drain(&mut pair.client) {
            pair.server
                .handle_packet(wire(p, version), pair.now)
                .unwrap();
        }
        let _ = events(&mut pair.server);
        assert!(
            pair.server
                .suback(sub2, vec![], Default::default())
                .is_err()
        );
        assert!(
            pair.server
                .suback(
                    id(999),
                    vec![SubAckReasonCode::GrantedQoS0],
                    Default::default()
                )
                .is_err()
        );
        pair.server
            .suback(
                sub2,
                vec![SubAckReasonCode::NotAuthorized],
                Default::default(),
            )
            .unwrap();
        assert!(matches!(
            drain(&mut pair.server).as_slice(),
            [Packet::SubAck(_)]
        ));
    }
}

#[test]
fn suback_with_the_wrong_count_is_a_protocol_error_at_the_client() {
    let now = t0();
    let mut client = connected_client(
        Config::default(),
        connect_packet(ProtocolVersion::V5, "c", true),
        ConnAck::new(false, ConnectReasonCode::Success),
        now,
    );
    let sub = client.subscribe(
        vec![(MqttString::from("a"), SubscriptionOptions::default())],
        Default::default(),
        now,
    );
    let sub = sub.unwrap();
    let _ = drain(&mut client);
    let ack = SubAck::new(
        sub,
        vec![SubAckReasonCode::GrantedQoS0, SubAckReasonCode::GrantedQoS0],
    );
    assert!(matches!(
        client.handle_packet(Packet::SubAck(ack), now),
        Err(Error::Protocol(ProtocolViolation::ReasonCodeCount {
            expected: 1,
            got: 2
        }))
    ));
}

#[test]
fn connection_lost_reports_lost_requests_once() {
    let mut pair = Pair::new(ProtocolVersion::V5);
    pair.connect(true);
    let sub = pair
        .client
        .subscribe(
            vec![(MqttString::from("a"), SubscriptionOptions::default())],
            Default::default(),
            pair.now,
        )
        .unwrap();
    pair.client.connection_lost(pair.now);
    pair.client.connection_lost(pair.now);
    let evs = events(&mut pair.client);
    assert_eq!(
        evs.iter()
            .filter(|e| matches!(e, Event::Disconnected { .. }))
            .count(),
        1
    );
    assert!(evs.contains(&Event::RequestLost { packet_id: sub }));
    assert_eq!(
        disconnected(&evs),
        Some((Initiator::Network, ReasonCode::UnspecifiedError))
    );
}

#[test]
fn subscription_identifier_from_a_client_is_a_protocol_error() {
    // v5:MQTT-3.3.4-6
    let now = t0();
    let mut server = connected_server(
        Config::default(),
        connect_packet(ProtocolVersion::V5, "c", true),
        now,
    );
    let mut p = publish("t", QoS::AtMostOnce, b"x");
    p.properties
        .subscription_identifiers
        .push(std::num::NonZeroU32::MIN);
    assert!(
        server
            .handle_packet(Packet::Publish(p.clone()), now)
            .is_err()
    );
    assert_eq!(
        drain(&mut server),
        vec![Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::ProtocolError
        ))]
    );
    // And the client session refuses to send one.
    let mut client = Session::client(Config::default());
    assert!(client.publish(p, now).is_err());
}

#[test]
fn qos_and_retain_above_the_servers_limits() {
    // v5:MQTT-3.2.2-11 v5:MQTT-3.2.2-14
    let now = t0();
    let mut connack = ConnAck::new(false, ConnectReasonCode::Success);
    connack.properties.maximum_qos = Some(QoS::AtLeastOnce);
    connack.properties.retain_available = Some(false);
    let mut client = connected_client(
        Config::default(),
        connect_packet(ProtocolVersion::V5, "c", true),
        connack,
        now,
    );
    assert!(
        client
            .publish(publish("t", QoS::ExactlyOnce, b"x"), now)
            .is_err()
    );
    let mut retained = publish("t", QoS::AtMostOnce, b"x");
    retained.retain = true;
    assert!(client.publish(retained, now).is_err());
    assert!(
        client
            .publish(publish("t", QoS::AtLeastOnce, b"x"), now)
            .is_ok()
    );

    // The server enforces what it announced.
    let config = Config {
        maximum_qos: QoS::AtLeastOnce,
        retain_available: false,
        ..Config::default()
    };
    let mut server = connected_server(
        config.clone(),
        connect_packet(ProtocolVersion::V5, "c", true),
        now,
    );
    assert!(
        server
            .handle_packet(incoming("t", QoS::ExactlyOnce, Some(1), b"x"), now)
            .is_err()
    );
    assert_eq!(
        drain(&mut server),
        vec![Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::QoSNotSupported
        ))]
    );
    let mut server = connected_server(config, connect_packet(ProtocolVersion::V5, "c", true), now);
    let mut p = publish("t", QoS::AtMostOnce, b"x");
    p.retain = true;
    assert!(server.handle_packet(Packet::Publish(p), now).is_err());
    assert_eq!(
        drain(&mut server),
        vec![Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::RetainNotSupported
        ))]
    );
}

#[test]
fn unanswered_requests_at_the_server_are_bounded() {
    let now = t0();
    let sub = |n| {
        Packet::Subscribe(fulmar_codec::Subscribe::new(
            id(n),
            vec![(MqttString::from("a"), SubscriptionOptions::default())],
        ))
    };
    let config = Config {
        max_requests: 1,
        ..Config::default()
    };
    let mut server = connected_server(
        config.clone(),
        connect_packet(ProtocolVersion::V5, "c", true),
        now,
    );
    server.handle_packet(sub(1), now).unwrap();
    assert!(matches!(
        server.handle_packet(sub(2), now),
        Err(Error::Limit(
            fulmar_session::LimitExceeded::TooManyRequests(1)
        ))
    ));
    assert_eq!(
        drain(&mut server),
        vec![Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::QuotaExceeded
        ))]
    );

    // The same identifier twice while the first is unanswered is a protocol error.
    let mut server = connected_server(
        Config::default(),
        connect_packet(ProtocolVersion::V5, "c", true),
        now,
    );
    server.handle_packet(sub(1), now).unwrap();
    assert!(matches!(
        server.handle_packet(sub(1), now),
        Err(Error::Protocol(ProtocolViolation::PacketIdInUse(1)))
    ));
    assert_eq!(
        drain(&mut server),
        vec![Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::ProtocolError
        ))]
    );
}

#[test]
fn no_suback_or_unsuback_after_the_disconnect() {
    // MQTT-3.14.4-1
    // Found by the `session` fuzz target: a SUBSCRIBE answered after a later packet of the
    // same read broke the protocol (the server's DISCONNECT was queued) went out after the
    // DISCONNECT.
    for version in VERSIONS {
        let mut s = connected_server(Config::default(), connect_packet(version, "c", true), t0());
        let filter = (
            MqttString::from("a/b"),
            SubscriptionOptions::new(QoS::AtLeastOnce),
        );
        s.handle_packet(
            Packet::Subscribe(fulmar_codec::Subscribe::new(id(1), vec![filter])),
            t0(),
        )
        .unwrap();
        s.handle_packet(
            Packet::Unsubscribe(fulmar_codec::Unsubscribe::new(
                id(2),
                vec![MqttString::from("a/b")],
            )),
            t0(),
        )
        .unwrap();
        // A PUBLISH without topic: a protocol error that closes the connection.
        assert!(
            s.handle_packet(incoming("", QoS::AtMostOnce, None, b"x"), t0())
                .is_err()
        );
        let _ = events(&mut s);
        assert!(
            s.suback(
                id(1),
                vec![SubAckReasonCode::GrantedQoS1],
                Default::default()
            )
            .is_err()
        );
        assert!(
            s.unsuback(
                id(2),
                vec![fulmar_codec::UnsubAckReasonCode::Success],
                Default::default()
            )
            .is_err()
        );
        let sent = drain(&mut s);
        assert!(
            sent.iter()
                .all(|p| !matches!(p, Packet::SubAck(_) | Packet::UnsubAck(_))),
            "{sent:?}"
        );
        if version == ProtocolVersion::V5 {
            assert!(
                matches!(sent.last(), Some(Packet::Disconnect(_))),
                "{sent:?}"
            );
        }
        assert!(s.is_closed());
    }
}

/// A client connected at `t` without keep alive, with a request timeout
/// of 20 s.
fn with_request_timeout(version: ProtocolVersion, t: std::time::Instant) -> Session {
    let config = Config {
        request_timeout: Some(secs(20)),
        ..Config::default()
    };
    let mut connect = connect_packet(version, "c", true);
    connect.keep_alive = 0;
    connected_client(
        config,
        connect,
        ConnAck::new(false, ConnectReasonCode::Success),
        t,
    )
}

/// A server that answers PINGREQ but leaves a SUBSCRIBE (or UNSUBSCRIBE)
/// unanswered: the request kept its packet identifier, and the caller
/// waited, for as long as the connection lasted. Now the connection ends
/// once the oldest request outlived `Config::request_timeout` (DISCONNECT
/// 0x80 under 5.0), and the requests are reported lost; one answered in
/// time changes nothing, and the next deadline is the next request's.
// MQTT-2.2.1-3 (the identifier is released with the request)
#[test]
fn a_request_left_unanswered_ends_the_connection() {
    for version in VERSIONS {
        let t = t0();
        let mut c = with_request_timeout(version, t);
        let _ = events(&mut c);
        let filters = |f: &'static str| {
            vec![(
                MqttString::from(f),
                SubscriptionOptions::new(QoS::AtLeastOnce),
            )]
        };
        let answered = c.subscribe(filters("a"), Default::default(), t).unwrap();
        let ignored = c
            .unsubscribe(vec![MqttString::from("b")], Default::default(), t + secs(5))
            .unwrap();
        let _ = drain(&mut c);
        // The first is answered before its deadline.
        c.handle_timeout(t + secs(10));
        let suback = SubAck::new(answered, vec![SubAckReasonCode::GrantedQoS1]);
        c.handle_packet(wire(Packet::SubAck(suback), version), t + secs(10))
            .unwrap();
        assert!(matches!(events(&mut c).as_slice(), [Event::SubAck(_)]));
        // The second's deadline is 25 s: nothing before.
        c.handle_timeout(t + secs(24));
        assert!(drain(&mut c).is_empty(), "{version:?}");
        assert!(c.is_connected());
        assert_eq!(c.poll_timeout(), Some(t + secs(25)), "{version:?}");
        c.handle_timeout(t + secs(25));
        let out = drain(&mut c);
        if version == ProtocolVersion::V5 {
            assert!(
                matches!(out.as_slice(), [Packet::Disconnect(d)]
                    if d.reason_code == DisconnectReasonCode::UnspecifiedError),
                "{out:?}"
            );
        } else {
            assert!(out.is_empty(), "{version:?}: {out:?}");
        }
        assert_eq!(c.error(), Some(&Error::RequestTimeout));
        assert!(c.is_closed());
        c.connection_lost(t + secs(25));
        let evs = events(&mut c);
        assert!(
            evs.iter()
                .any(|e| matches!(e, Event::RequestLost { packet_id } if *packet_id == ignored)),
            "{version:?}: {evs:?}"
        );
    }
}

/// A server that answers PINGREQ but leaves a QoS 1/2 flow unanswered (no
/// PUBACK, no PUBREC, or no PUBCOMP after our PUBREL): the flow held its
/// packet identifier and a slot of the server's Receive Maximum, and the
/// caller waited, for as long as the connection lasted. Now each step must
/// be answered within `Config::request_timeout`, counted from the packet
/// that asks for the answer; flows answered in time change nothing.
// MQTT-4.4.0-1 (the flow is resent on the next connection)
#[test]
fn a_publish_flow_left_unanswered_ends_the_connection() {
    for version in VERSIONS {
        for stuck in ["PUBACK", "PUBREC", "PUBCOMP"] {
            let t = t0();
            let mut c = with_request_timeout(version, t);
            // One flow answered at once, then the one left hanging.
            let ok = c
                .publish(publish("t", QoS::AtLeastOnce, b"ok"), t)
                .unwrap()
                .unwrap();
            let _ = drain(&mut c);
            c.handle_packet(Packet::PubAck(PubAck::new(ok)), t).unwrap();
            let qos = if stuck == "PUBACK" {
                QoS::AtLeastOnce
            } else {
                QoS::ExactlyOnce
            };
            let id = c.publish(publish("t", qos, b"x"), t).unwrap().unwrap();
            let _ = drain(&mut c);
            let mut asked = t;
            if stuck == "PUBCOMP" {
                // PUBREC 15 s later: the PUBREL's own deadline counts from it.
                asked = t + secs(15);
                c.handle_packet(Packet::PubRec(PubRec::new(id)), asked)
                    .unwrap();
                let out = drain(&mut c);
                assert!(matches!(out.as_slice(), [Packet::PubRel(_)]), "{out:?}");
            }
            c.handle_timeout(asked + secs(19));
            assert!(drain(&mut c).is_empty(), "{version:?} {stuck}");
            assert!(c.is_connected(), "{version:?} {stuck}");
            assert_eq!(
                c.poll_timeout(),
                Some(asked + secs(20)),
                "{version:?} {stuck}"
            );
            c.handle_timeout(asked + secs(20));
            assert_eq!(
                c.error(),
                Some(&Error::RequestTimeout),
                "{version:?} {stuck}"
            );
            let out = drain(&mut c);
            assert!(c.is_closed(), "{version:?} {stuck}");
            assert_eq!(
                out.len(),
                usize::from(version == ProtocolVersion::V5),
                "{version:?} {stuck}: {out:?}"
            );
        }
    }
}
