//! CONNECT/CONNACK, keep-alive, DISCONNECT and protocol errors (spec 3.1, 3.2,
//! 3.12, 3.14, 4.13).

mod common;

use bytes::BytesMut;
use common::*;
use fulmar_codec::{
    ConnAck, ConnAckProperties, ConnectReasonCode, Disconnect, DisconnectProperties,
    DisconnectReasonCode, MqttString, Packet, ProtocolVersion, QoS, ReasonCode, SubAckReasonCode,
    Subscribe, SubscriptionOptions, Will,
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
fn client_sends_connect_first_and_nothing_else_before_connack() {
    // MQTT-3.1.0-1 v5:MQTT-3.1.2-30
    for version in VERSIONS {
        let now = t0();
        let mut client = Session::client(Config::default());
        client
            .publish(publish("t", QoS::AtLeastOnce, b"queued"), now)
            .unwrap();
        let mut connect = connect_packet(version, "c", true);
        if version == ProtocolVersion::V5 {
            connect.properties.authentication_method = Some(MqttString::from("SCRAM"));
        }
        client.connect(connect, now).unwrap();
        let out = drain(&mut client);
        assert!(matches!(out.as_slice(), [Packet::Connect(_)]), "{out:?}");
        let mut connack = ConnAck::new(false, ConnectReasonCode::Success);
        if version == ProtocolVersion::V5 {
            connack.properties.authentication_method = Some(MqttString::from("SCRAM"));
        }
        client.handle_packet(Packet::ConnAck(connack), now).unwrap();
        let out = drain(&mut client);
        assert!(
            matches!(out.as_slice(), [Packet::Publish(_)]),
            "queued message after CONNACK: {out:?}"
        );
    }
}

#[test]
fn server_closes_when_first_packet_is_not_connect() {
    // MQTT-3.1.0-1
    let now = t0();
    let mut server = Session::server(Config::default(), now);
    let err = server.handle_packet(Packet::PingReq, now).unwrap_err();
    assert!(matches!(
        err,
        Error::Protocol(ProtocolViolation::FirstPacketNotConnect(_))
    ));
    assert!(
        drain(&mut server).is_empty(),
        "no packet: the version is unknown"
    );
    assert!(server.is_closed());
    assert_eq!(
        disconnected(&events(&mut server)),
        Some((Initiator::Library, ReasonCode::ProtocolError))
    );
}

#[test]
fn second_connect_is_a_protocol_error() {
    // MQTT-3.1.0-2 v5:MQTT-4.13.1-1 v3:MQTT-4.8.0-1
    for version in VERSIONS {
        let now = t0();
        let mut server =
            connected_server(Config::default(), connect_packet(version, "c", true), now);
        let err = server.handle_packet(
            Packet::Connect(Box::new(connect_packet(version, "c", true))),
            now,
        );
        assert_eq!(err, Err(Error::Protocol(ProtocolViolation::SecondConnect)));
        let out = drain(&mut server);
        match version {
            ProtocolVersion::V5 => {
                assert_eq!(
                    out,
                    vec![Packet::Disconnect(Disconnect::new(
                        DisconnectReasonCode::ProtocolError
                    ))]
                );
            }
            ProtocolVersion::V31 | ProtocolVersion::V311 => {
                assert!(out.is_empty(), "3.1.1 closes without a packet")
            }
        }
        assert!(server.is_closed());
        // Sticky: later input is ignored.
        server.handle_packet(Packet::PingReq, now).unwrap();
        assert!(drain(&mut server).is_empty());
        assert_eq!(
            server.error(),
            Some(&Error::Protocol(ProtocolViolation::SecondConnect))
        );
    }
}

#[test]
fn accept_sets_session_present_from_clean_start_and_stored_state() {
    // v5:MQTT-3.2.2-2 v5:MQTT-3.2.2-3 v3:MQTT-3.2.2-1 v3:MQTT-3.2.2-2 v3:MQTT-3.2.2-3
    // v5:MQTT-3.1.2-4 v5:MQTT-3.1.2-5 v5:MQTT-3.1.2-6 v3:MQTT-3.1.2-4 v3:MQTT-3.1.2-6
    // v5:MQTT-3.1.4-4 v5:MQTT-3.1.4-5 v3:MQTT-3.1.4-3 v3:MQTT-3.1.4-4
    for version in VERSIONS {
        let now = t0();
        let mut old = connected_server(Config::default(), connect_packet(version, "c", false), now);
        old.publish(publish("t", QoS::AtLeastOnce, b"x"), now)
            .unwrap();
        let _ = drain(&mut old);
        old.connection_lost(now);
        let stored = old.session_state(now);
        assert_eq!(stored.outgoing().len(), 1);

        for (clean_start, state, present) in [
            (true, Some(stored.clone()), false),
            (false, Some(stored.clone()), true),
            (false, None, false),
        ] {
            let mut server = connect_received(connect_packet(version, "c", clean_start), now);
            assert!(matches!(server.poll_event(), Some(Event::Connect(_))));
            assert_eq!(
                server
                    .accept(ConnAckProperties::default(), state, now)
                    .unwrap(),
                present
            );
            let out = drain(&mut server);
            let Some(Packet::ConnAck(connack)) = out.first() else {
                panic!("{out:?}")
            };
            // MQTT 3.1 has no Session Present flag: resumed all the same.
            let flag = present && version != ProtocolVersion::V31;
            assert_eq!(connack.session_present, flag);
            assert_eq!(connack.reason_code, ConnectReasonCode::Success);
            assert_eq!(
                server.inflight_len(),
                usize::from(present),
                "a clean start discards the session"
            );
            wire(out[0].clone(), version);
        }
    }
}

#[test]
fn connack_is_the_first_packet_and_sent_once() {
    // v5:MQTT-3.2.0-1 v3:MQTT-3.2.0-1 v5:MQTT-3.2.0-2
    let now = t0();
    let mut server = Session::server(Config::default(), now);
    // The broker queues a message before it accepts: it waits for CONNACK.
    server
        .publish(publish("t", QoS::AtMostOnce, b"early"), now)
        .unwrap();
    server
        .handle_packet(
            Packet::Connect(Box::new(connect_packet(ProtocolVersion::V5, "c", true))),
            now,
        )
        .unwrap();
    assert!(drain(&mut server).is_empty());
    let _ = events(&mut server);
    server
        .accept(ConnAckProperties::default(), None, now)
        .unwrap();
    let out = drain(&mut server);
    assert!(
        matches!(out.as_slice(), [Packet::ConnAck(_), Packet::Publish(_)]),
        "{out:?}"
    );
    assert!(
        server
            .accept(ConnAckProperties::default(), None, now)
            .is_err(),
        "one CONNACK per connection"
    );

    // A client receiving a second CONNACK closes with a protocol error.
    let mut client = connected_client(
        Config::default(),
        connect_packet(ProtocolVersion::V5, "c", true),
        ConnAck::new(false, ConnectReasonCode::Success),
        now,
    );
    let err = client.handle_packet(
        Packet::ConnAck(ConnAck::new(false, ConnectReasonCode::Success)),
        now,
    );
    assert_eq!(err, Err(Error::Protocol(ProtocolViolation::SecondConnAck)));
    assert_eq!(
        drain(&mut client),
        vec![Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::ProtocolError
        ))]
    );
}

#[test]
fn client_rejects_packets_before_connack() {
    // v5:MQTT-3.2.0-1 v3:MQTT-3.2.0-1
    for version in VERSIONS {
        let now = t0();
        let mut client = Session::client(Config::default());
        client
            .connect(connect_packet(version, "c", true), now)
            .unwrap();
        let _ = drain(&mut client);
        let err = client
            .handle_packet(incoming("t", QoS::AtMostOnce, None, b"x"), now)
            .unwrap_err();
        assert!(matches!(
            err,
            Error::Protocol(ProtocolViolation::NotConnAckFirst(_))
        ));
        assert!(
            events(&mut client)
                .iter()
                .all(|e| !matches!(e, Event::Message(_)))
        );
    }
}

#[test]
fn reject_sends_a_failure_connack_and_closes() {
    // v5:MQTT-3.2.2-6 v5:MQTT-3.2.2-7 v3:MQTT-3.2.2-4 v3:MQTT-3.2.2-5 v5:MQTT-3.1.4-6 v3:MQTT-3.1.4-5
    // v5:MQTT-4.13.2-1
    for version in VERSIONS {
        let now = t0();
        let mut server = connect_received(connect_packet(version, "c", false), now);
        let _ = events(&mut server);
        server
            .reject(
                ConnectReasonCode::NotAuthorized,
                ConnAckProperties::default(),
                now,
            )
            .unwrap();
        // Anything the client sent after CONNECT is not processed.
        server
            .handle_packet(incoming("t", QoS::AtLeastOnce, Some(1), b"x"), now)
            .unwrap();
        let out = drain(&mut server);
        let [Packet::ConnAck(connack)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert!(!connack.session_present);
        assert_eq!(connack.reason_code, ConnectReasonCode::NotAuthorized);
        wire(out[0].clone(), version);
        assert!(server.is_closed());
        let evs = events(&mut server);
        assert!(evs.iter().all(|e| !matches!(e, Event::Message(_))));
        assert_eq!(
            disconnected(&evs),
            Some((Initiator::Local, ReasonCode::NotAuthorized))
        );

        // The client side: a failure CONNACK ends the connection.
        let mut client = Session::client(Config::default());
        client
            .connect(connect_packet(version, "c", true), now)
            .unwrap();
        let _ = drain(&mut client);
        client
            .handle_packet(Packet::ConnAck(connack.clone()), now)
            .unwrap();
        assert!(client.is_closed());
        assert_eq!(
            client.error(),
            Some(&Error::Refused(ConnectReasonCode::NotAuthorized))
        );
        assert_eq!(
            disconnected(&events(&mut client)),
            Some((Initiator::Remote, ReasonCode::NotAuthorized))
        );
    }
}

#[test]
fn v311_reject_without_a_return_code_closes_without_connack() {
    // v3:MQTT-3.2.2-6
    let now = t0();
    let mut server = connect_received(connect_packet(ProtocolVersion::V311, "c", true), now);
    let _ = events(&mut server);
    server
        .reject(ConnectReasonCode::Banned, ConnAckProperties::default(), now)
        .unwrap();
    assert!(drain(&mut server).is_empty());
    assert!(server.is_closed());
}

#[test]
fn v311_empty_client_id_needs_clean_session() {
    // v3:MQTT-3.1.3-8 v3:MQTT-3.1.3-7
    let now = t0();
    let mut server = connect_received(connect_packet(ProtocolVersion::V311, "", false), now);
    let out = drain(&mut server);
    let [Packet::ConnAck(connack)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(
        connack.reason_code.to_v311(),
        Some(2),
        "identifier rejected"
    );
    assert!(server.is_closed());
    assert!(
        events(&mut server)
            .iter()
            .all(|e| !matches!(e, Event::Connect(_)))
    );

    let mut client = Session::client(Config::default());
    assert!(
        client
            .connect(connect_packet(ProtocolVersion::V311, "", false), now)
            .is_err()
    );
    assert!(
        client
            .connect(connect_packet(ProtocolVersion::V311, "", true), now)
            .is_ok()
    );
}

#[test]
fn will_qos_or_retain_beyond_the_server_is_refused() {
    // v5:MQTT-3.2.2-12 v5:MQTT-3.2.2-13
    let now = t0();
    let config = Config {
        maximum_qos: QoS::AtLeastOnce,
        retain_available: false,
        ..Config::default()
    };
    for (qos, retain, code) in [
        (QoS::ExactlyOnce, false, ConnectReasonCode::QoSNotSupported),
        (QoS::AtMostOnce, true, ConnectReasonCode::RetainNotSupported),
    ] {
        let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
        let mut will = Will::new(MqttString::from("w"), bytes::Bytes::from_static(b"bye"));
        will.qos = qos;
        will.retain = retain;
        connect.will = Some(will);
        let mut server = Session::server(config.clone(), now);
        server
            .handle_packet(Packet::Connect(Box::new(connect)), now)
            .unwrap();
        let out = drain(&mut server);
        let [Packet::ConnAck(connack)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(connack.reason_code, code);
        assert!(server.is_closed());
    }
}

// MQTT-4.7.0-1 (no wildcard in a topic name), MQTT-4.7.3-1 (at least one
// character): a will could never be published to such a Will Topic. 5.0:
// CONNACK 0x90 Topic Name invalid; 3.1.1, which has no return code for it:
// closed without CONNACK. (It was accepted, and the will silently lost.)
#[test]
fn a_will_topic_with_a_wildcard_or_empty_is_refused() {
    let now = t0();
    for version in VERSIONS {
        for topic in ["t/#", "t/+", "+", ""] {
            let mut connect = connect_packet(version, "c", true);
            connect.will = Some(Will::new(
                MqttString::from(topic),
                bytes::Bytes::from_static(b"bye"),
            ));
            let mut server = connect_received(connect, now);
            let out = drain(&mut server);
            match version {
                ProtocolVersion::V5 => {
                    let [Packet::ConnAck(connack)] = out.as_slice() else {
                        panic!("{topic:?}: {out:?}")
                    };
                    assert_eq!(connack.reason_code, ConnectReasonCode::TopicNameInvalid);
                }
                ProtocolVersion::V31 | ProtocolVersion::V311 => {
                    assert_eq!(out, vec![], "{topic:?}")
                }
            }
            assert!(server.is_closed(), "{version:?} {topic:?}");
            assert_eq!(
                server.error(),
                Some(&Error::Protocol(ProtocolViolation::WillTopicInvalid))
            );
            assert!(
                !events(&mut server)
                    .iter()
                    .any(|e| matches!(e, Event::Connect(_))),
                "not handed to the application"
            );
        }
    }
}

// MQTT-4.7.0-1 MQTT-4.7.3-1: a client does not send a will it knows no
// server can publish.
#[test]
fn a_client_refuses_a_will_topic_with_a_wildcard_or_empty() {
    let now = t0();
    for topic in ["a/#", "+", ""] {
        let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
        connect.will = Some(Will::new(
            MqttString::from(topic),
            bytes::Bytes::from_static(b"bye"),
        ));
        let mut client = Session::client(Config::default());
        assert_eq!(
            client.connect(connect, now),
            Err(Error::Api(fulmar_session::ApiError::InvalidWillTopic)),
            "{topic:?}"
        );
        assert_eq!(drain(&mut client), vec![]);
    }
}

#[test]
fn server_announces_its_limits_in_connack() {
    // v5:MQTT-3.2.2-9 v5:MQTT-3.2.2-10
    let now = t0();
    let config = Config {
        maximum_qos: QoS::AtLeastOnce,
        retain_available: false,
        server_keep_alive: Some(30),
        ..Config::default()
    };
    let (mut server, connack) =
        accepted(config, connect_packet(ProtocolVersion::V5, "c", true), now);
    let props = &connack.properties;
    assert_eq!(props.maximum_qos, Some(QoS::AtLeastOnce));
    assert_eq!(props.retain_available, Some(false));
    assert_eq!(props.receive_maximum.map(|r| r.get()), Some(64));
    assert_eq!(props.server_keep_alive, Some(30));
    assert_eq!(props.topic_alias_maximum, Some(16));
    // A SUBSCRIBE asking for QoS 2 still reaches the broker for an answer.
    let sub = Subscribe::new(
        id(1),
        vec![(
            MqttString::from("a/#"),
            SubscriptionOptions::new(QoS::ExactlyOnce),
        )],
    );
    server.handle_packet(Packet::Subscribe(sub), now).unwrap();
    assert!(matches!(
        events(&mut server).as_slice(),
        [Event::Subscribe(_)]
    ));
    server
        .suback(
            id(1),
            vec![SubAckReasonCode::GrantedQoS1],
            Default::default(),
        )
        .unwrap();
    assert!(matches!(drain(&mut server).as_slice(), [Packet::SubAck(_)]));
}

#[test]
fn server_closes_after_one_and_a_half_keep_alive() {
    // v5:MQTT-3.1.2-22 v3:MQTT-3.1.2-24 v5:MQTT-3.2.2-22
    for version in VERSIONS {
        let now = t0();
        let mut connect = connect_packet(version, "c", true);
        connect.keep_alive = 10;
        let mut server = connected_server(Config::default(), connect, now);
        assert_eq!(server.keep_alive(), 10);
        assert_eq!(server.poll_timeout(), Some(now + secs(15)));
        // Activity pushes the deadline.
        server
            .handle_packet(Packet::PingReq, now + secs(10))
            .unwrap();
        assert_eq!(drain(&mut server), vec![Packet::PingResp]);
        let deadline = now + secs(25);
        assert_eq!(server.poll_timeout(), Some(deadline));
        server.handle_timeout(deadline - std::time::Duration::from_millis(1));
        assert!(server.is_connected(), "a spurious timeout does nothing");
        server.handle_timeout(deadline);
        let out = drain(&mut server);
        match version {
            ProtocolVersion::V5 => {
                assert_eq!(
                    out,
                    vec![Packet::Disconnect(Disconnect::new(
                        DisconnectReasonCode::KeepAliveTimeout
                    ))]
                );
            }
            ProtocolVersion::V31 | ProtocolVersion::V311 => assert!(out.is_empty()),
        }
        assert!(server.is_closed());
        assert_eq!(server.error(), Some(&Error::KeepAliveTimeout));
    }
}

#[test]
fn server_answers_pingreq() {
    // MQTT-3.12.4-1
    for version in VERSIONS {
        let mut pair = Pair::new(version);
        pair.connect(true);
        pair.server
            .handle_packet(Packet::PingReq, pair.now)
            .unwrap();
        assert_eq!(drain(&mut pair.server), vec![Packet::PingResp]);
    }
}

#[test]
fn client_sends_pingreq_when_idle_and_closes_without_pingresp() {
    // v5:MQTT-3.1.2-20 v3:MQTT-3.1.2-23
    for version in VERSIONS {
        let now = t0();
        let mut connect = connect_packet(version, "c", true);
        connect.keep_alive = 60;
        let mut client = connected_client(
            Config::default(),
            connect,
            ConnAck::new(false, ConnectReasonCode::Success),
            now,
        );
        assert_eq!(client.poll_timeout(), Some(now + secs(60)));
        // A packet from the server and one sent push both deadlines: the
        // keep alive counts from the last packet sent, the liveness probe
        // from the last packet received.
        client
            .handle_packet(incoming("t", QoS::AtMostOnce, None, b"in"), now + secs(30))
            .unwrap();
        client
            .publish(publish("t", QoS::AtMostOnce, b"x"), now + secs(40))
            .unwrap();
        assert_eq!(drain(&mut client).len(), 1);
        assert_eq!(client.poll_timeout(), Some(now + secs(90)));
        client.handle_timeout(now + secs(90));
        assert_eq!(drain(&mut client), vec![Packet::PingReq]);
        // PINGRESP answers it.
        client
            .handle_packet(Packet::PingResp, now + secs(91))
            .unwrap();
        assert_eq!(client.poll_timeout(), Some(now + secs(150)));
        client.handle_timeout(now + secs(150));
        assert_eq!(drain(&mut client), vec![Packet::PingReq]);
        // Nothing heard since 91 s: no second PINGREQ while one waits.
        assert_eq!(client.poll_timeout(), Some(now + secs(151)));
        client.handle_timeout(now + secs(151));
        assert!(drain(&mut client).is_empty());
        // No PINGRESP within the ping timeout: the client gives up.
        let deadline = client.poll_timeout().unwrap();
        assert_eq!(deadline, now + secs(160));
        client.handle_timeout(deadline);
        assert!(client.is_closed() || !drain(&mut client).is_empty());
        assert_eq!(client.error(), Some(&Error::KeepAliveTimeout));
    }
}

#[test]
fn a_client_that_only_sends_still_notices_a_silent_server() {
    // A client publishing at QoS 0 more often than its keep alive sends no
    // PINGREQ by MQTT-3.1.2-20's rule alone, and the server sends nothing
    // back: the client probes with a PINGREQ (it may send one at any time,
    // spec 3.12.4) once nothing was heard for a keep alive period, and gives
    // up when no PINGRESP comes.
    for version in VERSIONS {
        let now = t0();
        let mut connect = connect_packet(version, "c", true);
        connect.keep_alive = 60;
        let mut client = connected_client(
            Config::default(),
            connect,
            ConnAck::new(false, ConnectReasonCode::Success),
            now,
        );
        let mut pings = 0;
        let mut t = now;
        while !client.is_closed() && t < now + secs(600) {
            t += secs(10);
            client.handle_timeout(t);
            if !client.is_closed() {
                client
                    .publish(publish("t", QoS::AtMostOnce, b"x"), t)
                    .unwrap();
            }
            pings += drain(&mut client)
                .iter()
                .filter(|p| matches!(p, Packet::PingReq))
                .count();
        }
        assert_eq!(pings, 1, "{version:?}");
        assert_eq!(client.error(), Some(&Error::KeepAliveTimeout));
        // Keep alive 60 s, then the 10 s ping timeout (checked every 10 s).
        assert_eq!(t, now + secs(70), "{version:?}");
        // A live server answers, and the probe comes once per quiet period.
        let mut connect = connect_packet(version, "c", true);
        connect.keep_alive = 60;
        let mut client = connected_client(
            Config::default(),
            connect,
            ConnAck::new(false, ConnectReasonCode::Success),
            now,
        );
        let mut pings = 0;
        let mut t = now;
        while t < now + secs(600) {
            t += secs(10);
            client.handle_timeout(t);
            client
                .publish(publish("t", QoS::AtMostOnce, b"x"), t)
                .unwrap();
            for p in drain(&mut client) {
                if p == Packet::PingReq {
                    pings += 1;
                    client.handle_packet(Packet::PingResp, t).unwrap();
                }
            }
        }
        assert!(!client.is_closed());
        assert_eq!(pings, 10, "one per 60 s without a packet from the server");
    }
}

#[test]
fn server_keep_alive_replaces_the_clients() {
    // v5:MQTT-3.2.2-21 v5:MQTT-3.1.2-21
    let now = t0();
    let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
    connect.keep_alive = 60;
    let mut connack = ConnAck::new(false, ConnectReasonCode::Success);
    connack.properties.server_keep_alive = Some(5);
    let client = connected_client(Config::default(), connect, connack, now);
    assert_eq!(client.keep_alive(), 5);
    assert_eq!(client.poll_timeout(), Some(now + secs(5)));
}

/// A server with Server Keep Alive `server_keep_alive`, connected at `now` to
/// a client of `version` that asked for a keep alive of 60 s.
fn under_server_keep_alive(
    version: ProtocolVersion,
    server_keep_alive: u16,
    now: std::time::Instant,
) -> Session {
    let config = Config {
        server_keep_alive: Some(server_keep_alive),
        ..Config::default()
    };
    let mut connect = connect_packet(version, "c", true);
    connect.keep_alive = 60;
    connected_server(config, connect, now)
}

#[test]
fn a_server_keep_alive_is_what_the_server_holds_a_5_client_to() {
    // v5:MQTT-3.2.2-21 v5:MQTT-3.1.2-22
    let now = t0();
    let mut server = under_server_keep_alive(ProtocolVersion::V5, 10, now);
    assert_eq!(server.keep_alive(), 10);
    assert_eq!(server.poll_timeout(), Some(now + secs(15)));
    server.handle_timeout(now + secs(15));
    assert_eq!(server.error(), Some(&Error::KeepAliveTimeout));
}

#[test]
fn a_server_keep_alive_of_0_turns_keep_alive_off() {
    // v5:MQTT-3.2.2-21: the client sends nothing and must not be closed for
    // it, although its CONNECT asked for 60 s (which armed the deadline).
    let now = t0();
    let mut server = under_server_keep_alive(ProtocolVersion::V5, 0, now);
    assert_eq!(server.keep_alive(), 0);
    assert_eq!(server.poll_timeout(), None);
    server.handle_timeout(now + secs(3600));
    assert!(server.is_connected());
    assert!(drain(&mut server).is_empty());
    server
        .handle_packet(Packet::PingReq, now + secs(3600))
        .unwrap();
    assert_eq!(drain(&mut server), vec![Packet::PingResp]);
    assert_eq!(server.poll_timeout(), None);
}

#[test]
fn a_3_client_keeps_its_own_keep_alive_under_a_server_keep_alive() {
    // v3:MQTT-3.1.2-24: 3.1.1 has no Server Keep Alive, so the client cannot
    // be told: the server holds it to its own value, whether the Server Keep
    // Alive is shorter (closing a client that follows the rules) or 0
    // (which would stop checking it).
    for server_keep_alive in [10, 0] {
        let now = t0();
        let mut server = under_server_keep_alive(ProtocolVersion::V311, server_keep_alive, now);
        assert_eq!(server.keep_alive(), 60);
        assert_eq!(server.poll_timeout(), Some(now + secs(90)));
        server.handle_timeout(now + secs(16));
        assert!(server.is_connected());
        server.handle_timeout(now + secs(90));
        assert_eq!(server.error(), Some(&Error::KeepAliveTimeout));
    }
}

// Found by differential testing against mosquitto 2.0.11 (`max_keepalive
// 60`: a 5.0 client asking for 100 s or for 0 gets Server Keep Alive 60 in
// CONNACK; one asking for 30 s gets none; 3.1.1 clients keep their own).
#[test]
fn a_max_keep_alive_is_the_server_keep_alive_of_5_clients_asking_for_more_or_none() {
    // The CONNACK's Server Keep Alive and the keep alive the server then holds
    // a client of `version` asking for `asked` to, under a `max_keep_alive`
    // of 30 s.
    let under_max_keep_alive = |version: ProtocolVersion, asked: u16| -> (Option<u16>, u16) {
        let now = t0();
        let config = Config {
            max_keep_alive: std::num::NonZeroU16::new(30),
            ..Config::default()
        };
        let mut connect = connect_packet(version, "c", true);
        connect.keep_alive = asked;
        let (server, connack) = accepted(config, connect, now);
        (connack.properties.server_keep_alive, server.keep_alive())
    };
    // v5:MQTT-3.2.2-21: the client is told, and held to it.
    assert_eq!(
        under_max_keep_alive(ProtocolVersion::V5, 100),
        (Some(30), 30)
    );
    assert_eq!(under_max_keep_alive(ProtocolVersion::V5, 0), (Some(30), 30));
    // v5:MQTT-3.2.2-22: without a Server Keep Alive, the client's own.
    assert_eq!(under_max_keep_alive(ProtocolVersion::V5, 30), (None, 30));
    assert_eq!(under_max_keep_alive(ProtocolVersion::V5, 10), (None, 10));
    // v3:MQTT-3.1.2-24: a 3.1.1 client cannot be told; its own holds.
    for asked in [100, 0, 10] {
        assert_eq!(
            under_max_keep_alive(ProtocolVersion::V311, asked),
            (None, asked)
        );
    }
}

#[test]
fn assigned_client_identifier() {
    // v5:MQTT-3.2.2-16 v5:MQTT-3.1.3-6 v5:MQTT-3.1.3-7
    let mut pair = Pair::new(ProtocolVersion::V5);
    let now = pair.now;
    pair.server
        .handle_packet(
            Packet::Connect(Box::new(connect_packet(ProtocolVersion::V5, "", true))),
            now,
        )
        .unwrap();
    let _ = events(&mut pair.server);
    assert!(
        pair.server
            .accept(ConnAckProperties::default(), None, now)
            .is_err(),
        "an id must be assigned"
    );
    let props = ConnAckProperties {
        assigned_client_identifier: Some(MqttString::from("auto-1")),
        ..Default::default()
    };
    pair.server.accept(props, None, now).unwrap();
    assert_eq!(pair.server.client_id().map(|c| c.as_str()), Some("auto-1"));

    let mut client = Session::client(Config::default());
    client
        .connect(connect_packet(ProtocolVersion::V5, "", true), now)
        .unwrap();
    let _ = drain(&mut client);
    for p in drain(&mut pair.server) {
        client
            .handle_packet(wire(p, ProtocolVersion::V5), now)
            .unwrap();
    }
    assert_eq!(client.client_id().map(|c| c.as_str()), Some("auto-1"));
}

#[test]
fn session_present_without_a_session_is_a_protocol_error() {
    // v5:MQTT-3.2.2-4
    let now = t0();
    let mut client = Session::client(Config::default());
    client
        .connect(connect_packet(ProtocolVersion::V5, "c", true), now)
        .unwrap();
    let _ = drain(&mut client);
    let err = client.handle_packet(
        Packet::ConnAck(ConnAck::new(true, ConnectReasonCode::Success)),
        now,
    );
    assert_eq!(
        err,
        Err(Error::Protocol(ProtocolViolation::UnexpectedSessionPresent))
    );
    assert_eq!(
        drain(&mut client),
        vec![Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::ProtocolError
        ))]
    );
}

#[test]
fn no_session_on_the_server_discards_the_clients() {
    // v5:MQTT-3.2.2-5
    let mut pair = Pair::new(ProtocolVersion::V5);
    pair.connect(false);
    let a = pair
        .client
        .publish(publish("t", QoS::AtLeastOnce, b"a"), pair.now)
        .unwrap()
        .unwrap();
    let _ = drain(&mut pair.client);
    pair.client.connection_lost(pair.now);
    let _ = pair.take_client_events();
    // A server that lost the session: Session Present 0.
    pair.server = Session::server(Config::default(), pair.now);
    pair.stored = None;
    pair.connected_once = false;
    pair.client
        .connect(connect_packet(ProtocolVersion::V5, "pair", false), pair.now)
        .unwrap();
    pair.drive();
    let evs = pair.take_client_events();
    assert!(evs.contains(&Event::PublishDropped {
        packet_id: Some(a),
        reason: fulmar_session::DropReason::SessionDiscarded
    }));
    assert_eq!(pair.client.inflight_len(), 0);
    assert!(
        messages(&pair.take_server_events()).is_empty(),
        "nothing resent"
    );
}

#[test]
fn disconnect_is_the_last_packet() {
    // v5:MQTT-3.14.4-1 v5:MQTT-3.14.4-2 v3:MQTT-3.14.4-1 v3:MQTT-3.14.4-2
    for version in VERSIONS {
        let mut pair = Pair::new(version);
        pair.connect(true);
        pair.client
            .publish(publish("t", QoS::AtLeastOnce, b"x"), pair.now)
            .unwrap();
        pair.client
            .disconnect(
                DisconnectReasonCode::NormalDisconnection,
                DisconnectProperties::default(),
                pair.now,
            )
            .unwrap();
        let out = drain(&mut pair.client);
        assert!(
            matches!(out.as_slice(), [Packet::Disconnect(_)]),
            "nothing after DISCONNECT: {out:?}"
        );
        assert!(pair.client.is_closed());
        assert!(
            pair.client
                .publish(publish("t", QoS::AtMostOnce, b"y"), pair.now)
                .is_ok(),
            "queued for later"
        );
        assert!(drain(&mut pair.client).is_empty());
        pair.server
            .handle_packet(wire(out[0].clone(), version), pair.now)
            .unwrap();
        assert!(pair.server.is_closed());
        assert_eq!(
            disconnected(&events(&mut pair.server)),
            Some((Initiator::Remote, ReasonCode::NormalDisconnection))
        );
        assert_eq!(
            disconnected(&events(&mut pair.client)),
            Some((Initiator::Local, ReasonCode::NormalDisconnection))
        );
    }
}

#[test]
fn server_disconnect_under_v5_only() {
    // v5:MQTT-3.14.4-1
    for version in VERSIONS {
        let now = t0();
        let mut server =
            connected_server(Config::default(), connect_packet(version, "c", true), now);
        server
            .disconnect(
                DisconnectReasonCode::ServerShuttingDown,
                DisconnectProperties::default(),
                now,
            )
            .unwrap();
        let out = drain(&mut server);
        match version {
            ProtocolVersion::V5 => assert_eq!(out.len(), 1),
            ProtocolVersion::V31 | ProtocolVersion::V311 => {
                assert!(out.is_empty(), "a 3.1.1 server has no DISCONNECT")
            }
        }
        assert!(server.is_closed());
    }
}

#[test]
fn decode_errors_close_with_the_decoders_reason_code() {
    // v5:MQTT-4.13.1-1 v3:MQTT-4.8.0-1 v5:MQTT-3.1.4-1 v3:MQTT-3.1.4-1
    for version in VERSIONS {
        let now = t0();
        let mut server =
            connected_server(Config::default(), connect_packet(version, "c", true), now);
        // PUBLISH with both QoS bits set.
        let mut buf = BytesMut::from(&[0x36u8, 0x05, 0x00, 0x01, b't', 0x00, 0x01][..]);
        let err = fulmar_codec::decode(&mut buf, version, u32::MAX).unwrap_err();
        server.handle_decode_error(&err, now);
        let out = drain(&mut server);
        match version {
            ProtocolVersion::V5 => {
                assert_eq!(
                    out,
                    vec![Packet::Disconnect(Disconnect::new(
                        DisconnectReasonCode::MalformedPacket
                    ))]
                );
            }
            ProtocolVersion::V31 | ProtocolVersion::V311 => assert!(out.is_empty()),
        }
        assert!(server.is_closed());
        assert!(matches!(
            server.error(),
            Some(Error::Protocol(ProtocolViolation::Decode(_)))
        ));
    }
    // A malformed CONNECT: closed without CONNACK.
    let now = t0();
    let mut server = Session::server(Config::default(), now);
    let mut buf = BytesMut::from(&[0x10u8, 0x03, 0x00, 0x01, b'M'][..]);
    let err = fulmar_codec::decode(&mut buf, ProtocolVersion::V5, u32::MAX).unwrap_err();
    server.handle_decode_error(&err, now);
    assert!(drain(&mut server).is_empty());
    assert!(server.is_closed());
}

#[test]
fn unsupported_protocol_level_is_answered_in_the_clients_version() {
    // v3:MQTT-3.1.2-2 v5:MQTT-3.1.2-2
    for (level, expected_version) in [(3u8, ProtocolVersion::V311), (6, ProtocolVersion::V5)] {
        let now = t0();
        let mut server = Session::server(Config::default(), now);
        let mut buf = BytesMut::from(
            &[
                0x10u8, 0x0A, 0x00, 0x04, b'M', b'Q', b'T', b'T', level, 0x02, 0x00, 0x3C,
            ][..],
        );
        let err = fulmar_codec::decode(&mut buf, ProtocolVersion::V5, u32::MAX).unwrap_err();
        server.handle_decode_error(&err, now);
        let out = drain(&mut server);
        let [Packet::ConnAck(connack)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(
            connack.reason_code,
            ConnectReasonCode::UnsupportedProtocolVersion
        );
        assert_eq!(server.protocol_version(), expected_version);
        wire(out[0].clone(), expected_version);
        assert!(server.is_closed());
    }
}

#[test]
fn connect_timeout_on_both_sides() {
    let now = t0();
    let mut server = Session::server(Config::default(), now);
    assert_eq!(server.poll_timeout(), Some(now + secs(10)));
    server.handle_timeout(now + secs(10));
    assert!(server.is_closed());
    assert_eq!(server.error(), Some(&Error::ConnectTimeout));

    let mut client = Session::client(Config::default());
    client
        .connect(connect_packet(ProtocolVersion::V5, "c", true), now)
        .unwrap();
    let _ = drain(&mut client);
    client.handle_timeout(now + secs(10));
    assert_eq!(client.error(), Some(&Error::ConnectTimeout));
    // The client may try again.
    client
        .connect(
            connect_packet(ProtocolVersion::V5, "c", true),
            now + secs(11),
        )
        .unwrap();
    assert!(matches!(
        drain(&mut client).as_slice(),
        [Packet::Connect(_)]
    ));
}

#[test]
fn a_disconnect_instead_of_connack_ends_the_attempt() {
    let now = t0();
    let mut client = Session::client(Config::default());
    client
        .connect(connect_packet(ProtocolVersion::V5, "c", true), now)
        .unwrap();
    let _ = drain(&mut client);
    client
        .handle_packet(
            Packet::Disconnect(Disconnect::new(DisconnectReasonCode::ServerBusy)),
            now,
        )
        .unwrap();
    assert!(client.is_closed());
    assert!(drain(&mut client).is_empty());
    assert_eq!(
        disconnected(&events(&mut client)),
        Some((Initiator::Remote, ReasonCode::ServerBusy))
    );
}
