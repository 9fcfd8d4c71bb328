//! MQTT 3.1 (`MQIsdp`): where its session rules differ from 3.1.1's. Every
//! other flow runs under 3.1 in the tests of `connect.rs`, `qos.rs`,
//! `resume.rs`, `requests.rs` and `availability.rs`.

mod common;

use common::*;
use fulmar_codec::{
    AckProperties, ConnAckProperties, ConnectReasonCode, Packet, ProtocolVersion, QoS,
    SubAckReasonCode, Subscribe, SubscriptionOptions,
};
use fulmar_session::{ApiError, Config, Error, Event, Session};

const V31: ProtocolVersion = ProtocolVersion::V31;

#[test]
fn an_empty_client_identifier_is_rejected_even_with_a_clean_session() {
    // 3.1: the client identifier is 1 to 23 characters; return code 2.
    for clean_start in [true, false] {
        let mut server = Session::server(Config::default(), t0());
        let connect = connect_packet(V31, "", clean_start);
        server
            .handle_packet(Packet::Connect(Box::new(connect)), t0())
            .unwrap();
        let out = drain(&mut server);
        let [Packet::ConnAck(connack)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(
            connack.reason_code,
            ConnectReasonCode::ClientIdentifierNotValid
        );
        assert!(!connack.session_present);
        assert_eq!(wire(out[0].clone(), V31), out[0]);
        assert!(server.is_closed());
        assert!(
            events(&mut server)
                .iter()
                .all(|e| !matches!(e, Event::Connect(_)))
        );
    }
    // The client session refuses to send one.
    let mut client = Session::client(Config::default());
    assert!(matches!(
        client.connect(connect_packet(V31, "", true), t0()),
        Err(Error::Api(ApiError::EmptyClientIdInV31))
    ));
}

#[test]
fn a_refused_subscription_is_answered_with_qos_0() {
    // 3.1 has no failure return code: the SUBACK grants QoS 0 for a filter
    // the application refused (and the broker subscribes nothing), as
    // mosquitto answers a 3.1 client.
    let now = t0();
    let mut server = connected_server(Config::default(), connect_packet(V31, "c", true), now);
    let subscribe = Subscribe::new(
        id(5),
        vec![
            ("ok".into(), SubscriptionOptions::new(QoS::ExactlyOnce)),
            ("denied".into(), SubscriptionOptions::new(QoS::AtLeastOnce)),
        ],
    );
    server
        .handle_packet(wire(subscribe.into(), V31), now)
        .unwrap();
    assert!(matches!(server.poll_event(), Some(Event::Subscribe(_))));
    server
        .suback(
            id(5),
            vec![
                SubAckReasonCode::GrantedQoS2,
                SubAckReasonCode::NotAuthorized,
            ],
            AckProperties::default(),
        )
        .unwrap();
    let out = drain(&mut server);
    let [Packet::SubAck(ack)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(
        ack.reason_codes,
        [SubAckReasonCode::GrantedQoS2, SubAckReasonCode::GrantedQoS0]
    );
    wire(out[0].clone(), V31);
}

#[test]
fn a_session_kept_by_the_server_is_resumed_without_the_flag() {
    // The server resumes a stored session but cannot say so in 3.1; the
    // client, having asked to keep its session, resends what was in flight.
    // MQTT-4.4.0-1 (resent with DUP, in its original order)
    let mut pair = Pair::new(V31);
    pair.connect(false);
    let first = pair
        .client
        .publish(publish("t", QoS::AtLeastOnce, b"1"), pair.now)
        .unwrap()
        .unwrap();
    // The PUBLISH leaves; the link breaks before the PUBACK comes back.
    let sent = drain(&mut pair.client);
    assert!(matches!(sent.as_slice(), [Packet::Publish(_)]));
    pair.break_link();
    pair.take_client_events();
    pair.connect(false);
    let events = pair.take_client_events();
    let connected = events.iter().find_map(|e| match e {
        Event::Connected(connack) => Some(connack),
        _ => None,
    });
    assert!(!connected.expect("connected").session_present);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::PublishComplete { packet_id, .. } if *packet_id == first)),
        "{events:?}"
    );
    let delivered = messages(&pair.take_server_events());
    assert_eq!(delivered.len(), 1, "the server had not received it before");
    assert!(delivered[0].dup);
}

#[test]
fn accept_reports_the_resumed_session_to_the_application() {
    let now = t0();
    let stored = {
        let mut server = connected_server(Config::default(), connect_packet(V31, "c", false), now);
        server.connection_lost(now);
        server.session_state(now)
    };
    let mut server = connect_received(connect_packet(V31, "c", false), now);
    assert!(matches!(server.poll_event(), Some(Event::Connect(_))));
    assert!(
        server
            .accept(ConnAckProperties::default(), Some(stored), now)
            .unwrap()
    );
    let out = drain(&mut server);
    let [Packet::ConnAck(connack)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert!(!connack.session_present);
}

#[test]
fn an_invalid_filter_closes_the_connection() {
    // 3.1 cannot refuse a filter in its SUBACK; granting QoS 0 for a filter
    // that is not one would tell the client it is subscribed. mosquitto
    // closes the connection; so does the session.
    let now = t0();
    let mut server = connected_server(Config::default(), connect_packet(V31, "c", true), now);
    let subscribe = Subscribe::new(
        id(6),
        vec![("a/#/b".into(), SubscriptionOptions::new(QoS::AtLeastOnce))],
    );
    server
        .handle_packet(wire(subscribe.into(), V31), now)
        .unwrap();
    assert!(matches!(server.poll_event(), Some(Event::Subscribe(_))));
    server
        .suback(
            id(6),
            vec![SubAckReasonCode::TopicFilterInvalid],
            AckProperties::default(),
        )
        .unwrap();
    assert!(
        drain(&mut server).is_empty(),
        "no SUBACK, no DISCONNECT in 3.1"
    );
    assert!(server.is_closed());
}
