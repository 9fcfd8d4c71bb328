//! SUBSCRIBE/UNSUBSCRIBE answered by the application, lost requests, and the
//! per-PUBLISH rules a server enforces (spec 3.3.4, 3.8, 3.10, 3.2.2.3).

mod common;

use common::*;
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use fulmar_codec::{
    ConnAck, ConnectReasonCode, Disconnect, DisconnectReasonCode, MqttString, Packet, PacketId,
    ProtocolVersion, PubAck, PubComp, PubRec, QoS, ReasonCode, SubAck, SubAckReasonCode,
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
        timed_out(&mut c, version);
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
            timed_out(&mut c, version);
        }
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The server's whole answer to the flow `id` at `now`: PUBACK, or PUBREC,
/// then PUBCOMP to the PUBREL it brings.
#[allow(clippy::unwrap_used)] // a test helper
fn answer(c: &mut Session, version: ProtocolVersion, qos: QoS, id: PacketId, now: Instant) {
    if qos == QoS::AtLeastOnce {
        c.handle_packet(wire(Packet::PubAck(PubAck::new(id)), version), now)
            .unwrap();
        return;
    }
    c.handle_packet(wire(Packet::PubRec(PubRec::new(id)), version), now)
        .unwrap();
    let out = drain(c);
    assert!(
        matches!(out.as_slice(), [Packet::PubRel(r)] if r.packet_id == id),
        "{out:?}"
    );
    c.handle_packet(wire(Packet::PubComp(PubComp::new(id)), version), now)
        .unwrap();
}

/// A CONNACK that resumes the session (MQTT 3.1 has no Session Present
/// flag: a session not cleaned is resumed).
fn resumed(version: ProtocolVersion) -> ConnAck {
    ConnAck::new(version != ProtocolVersion::V31, ConnectReasonCode::Success)
}

/// Publishes one message of `qos` at `now` and sends it; its identifier.
#[allow(clippy::unwrap_used)] // a test helper
fn send(c: &mut Session, qos: QoS, now: Instant) -> PacketId {
    let id = c.publish(publish("t", qos, b"m"), now).unwrap().unwrap();
    let out = drain(c);
    assert!(
        matches!(out.as_slice(), [Packet::Publish(p)] if p.packet_id == Some(id)),
        "{out:?}"
    );
    id
}

/// The connection ended on the request timeout at `now`: DISCONNECT 0x80
/// under 5.0, nothing under 3.1.1 (MQTT-3.14.2-1 has no DISCONNECT from a
/// server there; a 3.1.1 client just closes).
fn timed_out(c: &mut Session, version: ProtocolVersion) {
    assert_eq!(c.error(), Some(&Error::RequestTimeout), "{version:?}");
    let out = drain(c);
    if version == ProtocolVersion::V5 {
        assert!(
            matches!(out.as_slice(), [Packet::Disconnect(d)]
                if d.reason_code == DisconnectReasonCode::UnspecifiedError),
            "{out:?}"
        );
    } else {
        assert!(out.is_empty(), "{version:?}: {out:?}");
    }
    assert!(c.is_closed());
}

/// A server that answers every flow but one, one second after it was
/// sent, while the client publishes one message a second: the one flow
/// held its packet identifier, its slot of the server's Receive Maximum and
/// the caller's `publish`, for as long as the connection lasted, since the
/// other answers kept a clock shared by all flows going. Now the oldest
/// flow has its own: once the flows sent before it are answered, it must be
/// answered within `Config::request_timeout` of its sending (or of its
/// PUBREC, for its PUBCOMP), and the connection ends at that instant, not
/// before, whatever the other flows do. The flows are resent on the next
/// connection, and the wait starts over with it.
// MQTT-4.4.0-1 (resent with DUP on the new connection) MQTT-4.6.0-1 (in
// their order) MQTT-3.3.1-1
#[test]
fn one_flow_left_unanswered_among_answered_ones_ends_the_connection() {
    for version in VERSIONS {
        for stuck in ["PUBACK", "PUBREC", "PUBCOMP"] {
            let qos = if stuck == "PUBACK" {
                QoS::AtLeastOnce
            } else {
                QoS::ExactlyOnce
            };
            let t = t0();
            let mut c = with_request_timeout(version, t);
            let _ = events(&mut c);
            // Each second a flow goes, then the one of the second before
            // is answered, but for the one sent at 3 s: it is the oldest
            // from then on (the flow before it is answered right after).
            let mut previous = None;
            let mut ignored = None;
            // Its wait counts from its sending, or from its PUBREC (4 s).
            let deadline = t + secs(if stuck == "PUBCOMP" { 24 } else { 23 });
            for second in 0..23 {
                let now = t + secs(second);
                c.handle_timeout(now);
                assert!(c.is_connected(), "{version:?} {stuck} at {second} s");
                let id = send(&mut c, qos, now);
                if second == 3 {
                    ignored = Some(id);
                }
                match previous.take() {
                    // Its PUBREC comes, but never its PUBCOMP.
                    Some(p) if Some(p) == ignored && stuck == "PUBCOMP" => {
                        c.handle_packet(wire(Packet::PubRec(PubRec::new(p)), version), now)
                            .unwrap();
                        let out = drain(&mut c);
                        assert!(matches!(out.as_slice(), [Packet::PubRel(_)]), "{out:?}");
                    }
                    Some(p) if Some(p) == ignored => {}
                    Some(p) => answer(&mut c, version, qos, p, now),
                    None => {}
                }
                previous = Some(id);
                if second >= 4 {
                    assert_eq!(c.poll_timeout(), Some(deadline), "{version:?} {stuck}");
                }
            }
            let last = previous.unwrap();
            let ignored = ignored.unwrap();
            // Others keep being answered up to the deadline.
            answer(&mut c, version, qos, last, deadline - ms(1));
            c.handle_timeout(deadline - ms(1));
            assert!(c.is_connected(), "{version:?} {stuck}");
            assert_eq!(c.poll_timeout(), Some(deadline), "{version:?} {stuck}");
            c.handle_timeout(deadline);
            timed_out(&mut c, version);
            let completed: Vec<_> = events(&mut c)
                .into_iter()
                .filter_map(|e| match e {
                    Event::PublishComplete { packet_id, .. } => Some(packet_id),
                    _ => None,
                })
                .collect();
            assert_eq!(completed.len(), 22, "{version:?} {stuck}");
            assert!(!completed.contains(&ignored));

            // A new connection resends it, and its wait starts over.
            let again = deadline + secs(60);
            c.connection_lost(again);
            c.connect(connect_packet(version, "c", false), again)
                .unwrap();
            let _ = drain(&mut c);
            c.handle_packet(wire(Packet::ConnAck(resumed(version)), version), again)
                .unwrap();
            let out = drain(&mut c);
            match out.as_slice() {
                [Packet::Publish(p)] if stuck != "PUBCOMP" => {
                    assert!(p.dup && p.packet_id == Some(ignored), "{p:?}");
                }
                [Packet::PubRel(r)] if stuck == "PUBCOMP" => assert_eq!(r.packet_id, ignored),
                _ => panic!("{version:?} {stuck}: {out:?}"),
            }
            assert_eq!(
                c.poll_timeout(),
                Some(again + secs(20)),
                "{version:?} {stuck}"
            );
            c.handle_timeout(again + secs(20) - ms(1));
            assert!(c.is_connected());
            c.handle_timeout(again + secs(20));
            timed_out(&mut c, version);
        }
    }
}

/// No flow is taken as lost before it has itself waited
/// `Config::request_timeout`: the oldest flow answered just before its
/// deadline leaves the next one its own time (counted from when it became
/// the oldest), and a PUBREC just before the deadline gives the PUBCOMP
/// the whole timeout again.
#[test]
fn a_flow_answered_just_before_its_deadline_does_not_time_out() {
    for version in VERSIONS {
        for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let t = t0();
            let mut c = with_request_timeout(version, t);
            let _ = events(&mut c);
            let first = send(&mut c, qos, t);
            let second = send(&mut c, qos, t + secs(10));
            // Others come and go meanwhile.
            for s in 11..19 {
                let id = send(&mut c, qos, t + secs(s));
                answer(&mut c, version, qos, id, t + secs(s) + ms(500));
            }
            assert_eq!(c.poll_timeout(), Some(t + secs(20)), "{version:?} {qos:?}");
            let just_before = t + secs(20) - ms(1);
            c.handle_timeout(just_before);
            assert!(c.is_connected(), "{version:?} {qos:?}");
            if qos == QoS::ExactlyOnce {
                // PUBREC just in time: the PUBCOMP has 20 s from it.
                c.handle_packet(
                    wire(Packet::PubRec(PubRec::new(first)), version),
                    just_before,
                )
                .unwrap();
                let _ = drain(&mut c);
                c.handle_timeout(t + secs(20));
                assert!(c.is_connected(), "{version:?} {qos:?}");
                assert_eq!(c.poll_timeout(), Some(just_before + secs(20)));
                let later = just_before + secs(20) - ms(1);
                c.handle_timeout(later);
                assert!(c.is_connected(), "{version:?} {qos:?}");
                c.handle_packet(wire(Packet::PubComp(PubComp::new(first)), version), later)
                    .unwrap();
                // The second flow became the oldest only now.
                c.handle_timeout(later + ms(1));
                assert!(c.is_connected(), "{version:?} {qos:?}");
                assert_eq!(c.poll_timeout(), Some(later + secs(20)));
            } else {
                answer(&mut c, version, qos, first, just_before);
                // The second flow, sent at 10 s, is the oldest from now on:
                // not lost at 30 s, its own deadline, but 20 s from now.
                c.handle_timeout(t + secs(20));
                assert!(c.is_connected(), "{version:?} {qos:?}");
                assert_eq!(c.poll_timeout(), Some(just_before + secs(20)));
            }
            let deadline = c.poll_timeout().unwrap();
            answer(&mut c, version, qos, second, deadline - ms(1));
            // Nothing waits any more: no deadline at all.
            assert_eq!(c.poll_timeout(), None, "{version:?} {qos:?}");
            c.handle_timeout(deadline + secs(3600));
            assert!(c.is_connected(), "{version:?} {qos:?}");
            assert_eq!(c.error(), None);
        }
    }
}

/// Steady traffic, every flow answered 15 s after it was sent (within the
/// 20 s timeout), five flows a second, some answered out of order: never
/// a timeout, however long it lasts, and the deadline is always that of
/// the oldest flow.
#[test]
fn steady_answered_traffic_never_times_out() {
    for version in VERSIONS {
        for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let t = t0();
            let mut c = with_request_timeout(version, t);
            let mut waiting: std::collections::VecDeque<(Instant, Vec<PacketId>)> =
                Default::default();
            for tick in 0..600u64 {
                let now = t + ms(500 * tick);
                c.handle_timeout(now);
                assert!(c.is_connected(), "{version:?} {qos:?} at tick {tick}");
                let batch = (0..5).map(|_| send(&mut c, qos, now)).collect();
                waiting.push_back((now, batch));
                while waiting
                    .front()
                    .is_some_and(|(sent, _)| *sent + secs(15) <= now)
                {
                    let (_, mut batch) = waiting.pop_front().unwrap();
                    // The oldest of the batch last.
                    batch.rotate_left(1);
                    for id in batch {
                        answer(&mut c, version, qos, id, now);
                    }
                }
                let oldest = waiting.front().map(|(sent, _)| *sent);
                // The oldest flow's wait counts from when it became the
                // oldest: at most 20 s after its sending, never before.
                let deadline = c.poll_timeout().unwrap();
                assert!(
                    deadline >= oldest.unwrap() + secs(20),
                    "{version:?} {qos:?}"
                );
                assert!(deadline <= now + secs(20), "{version:?} {qos:?}");
            }
            assert_eq!(c.error(), None);
            let _ = events(&mut c);
        }
    }
}

/// A resumed session's flows are sent again on the new connection: the
/// oldest one's wait counts from there, not from the connection before;
/// one held back by the server's Receive Maximum (5.0) waits for nothing
/// until it is sent, and the first flow's answer just before its deadline
/// lets the next one go with 20 s of its own.
// MQTT-4.4.0-1 MQTT-4.9.0-2
#[test]
fn resumed_flows_wait_from_the_new_connection() {
    for version in VERSIONS {
        let t = t0();
        let mut c = with_request_timeout(version, t);
        let a = send(&mut c, QoS::AtLeastOnce, t);
        let b = send(&mut c, QoS::AtLeastOnce, t + secs(1));
        let again = t + secs(100);
        c.connection_lost(t + secs(5));
        c.connect(connect_packet(version, "c", false), again)
            .unwrap();
        let _ = drain(&mut c);
        let mut connack = resumed(version);
        if version == ProtocolVersion::V5 {
            connack.properties.receive_maximum = NonZeroU16::new(1);
        }
        c.handle_packet(wire(Packet::ConnAck(connack), version), again)
            .unwrap();
        let resent: Vec<_> = drain(&mut c)
            .into_iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => p.packet_id,
                _ => None,
            })
            .collect();
        if version == ProtocolVersion::V5 {
            assert_eq!(resent, [a], "b is held back");
        } else {
            assert_eq!(resent, [a, b]);
        }
        assert_eq!(c.poll_timeout(), Some(again + secs(20)), "{version:?}");
        let answered = again + secs(20) - ms(1);
        c.handle_timeout(answered);
        c.handle_packet(wire(Packet::PubAck(PubAck::new(a)), version), answered)
            .unwrap();
        if version == ProtocolVersion::V5 {
            let out = drain(&mut c);
            assert!(matches!(out.as_slice(), [Packet::Publish(p)] if p.packet_id == Some(b)));
        }
        c.handle_timeout(again + secs(20));
        assert!(c.is_connected(), "{version:?}");
        assert_eq!(c.poll_timeout(), Some(answered + secs(20)), "{version:?}");
        c.handle_timeout(answered + secs(20));
        timed_out(&mut c, version);
    }
}
