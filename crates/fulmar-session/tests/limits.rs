//! Flow control (spec 4.9), Maximum Packet Size, topic aliases, message
//! expiry, and every bounded queue.

mod common;

use std::num::{NonZeroU16, NonZeroU32};

use common::*;
use fulmar_codec::{
    ConnAck, ConnAckProperties, ConnectReasonCode, Disconnect, DisconnectReasonCode, MqttString,
    Packet, ProtocolVersion, PubAck, PubComp, PubRec, QoS, SubscribeProperties,
    SubscriptionOptions, UnsubscribeProperties,
};
use fulmar_session::{Config, DropReason, Error, Event, LimitExceeded, Session};

fn v5_client_with(connack: ConnAck) -> Session {
    connected_client(
        Config::default(),
        connect_packet(ProtocolVersion::V5, "c", true),
        connack,
        t0(),
    )
}

fn connack_with(f: impl FnOnce(&mut ConnAckProperties)) -> ConnAck {
    let mut c = ConnAck::new(false, ConnectReasonCode::Success);
    f(&mut c.properties);
    c
}

fn publishes(packets: &[Packet]) -> usize {
    packets
        .iter()
        .filter(|p| matches!(p, Packet::Publish(_)))
        .count()
}

#[test]
fn send_quota_follows_the_peers_receive_maximum() {
    // v5:MQTT-3.3.4-7 v5:MQTT-4.9.0-1 v5:MQTT-4.9.0-2 v5:MQTT-3.3.4-8 v5:MQTT-4.9.0-3
    let now = t0();
    // No request timeout: the requests and flows below wait 60 s unanswered.
    let mut c = connected_client(
        Config {
            request_timeout: None,
            ..Config::default()
        },
        connect_packet(ProtocolVersion::V5, "c", true),
        connack_with(|p| p.receive_maximum = NonZeroU16::new(2)),
        t0(),
    );
    assert_eq!(c.send_window(), 2);
    let ids: Vec<_> = (0..5)
        .map(|i| {
            c.publish(publish("t", QoS::AtLeastOnce, &[i]), now)
                .unwrap()
                .unwrap()
        })
        .collect();
    let out = drain(&mut c);
    assert_eq!(publishes(&out), 2, "quota of 2");
    assert_eq!(c.pending_len(), 3);
    assert_eq!(c.send_window_used(), 2);
    // Other packets are not held back by the quota; QoS 0 waits its turn in order.
    c.subscribe(
        vec![(MqttString::from("x"), SubscriptionOptions::default())],
        Default::default(),
        now,
    )
    .unwrap();
    c.handle_timeout(now + secs(60));
    let out = drain(&mut c);
    assert!(
        matches!(out.as_slice(), [Packet::Subscribe(_), Packet::PingReq]),
        "{out:?}"
    );
    // Each PUBACK frees one slot.
    c.handle_packet(Packet::PubAck(PubAck::new(ids[0])), now)
        .unwrap();
    let out = drain(&mut c);
    let [Packet::Publish(p)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(
        p.packet_id,
        Some(ids[2]),
        "queued messages keep their order"
    );
    assert_eq!(c.send_window_used(), 2);
}

#[test]
fn qos2_holds_quota_until_pubcomp_or_error_pubrec() {
    // v5:MQTT-4.9.0-2 v5:MQTT-3.3.4-9
    let now = t0();
    let mut c = v5_client_with(connack_with(|p| p.receive_maximum = NonZeroU16::new(1)));
    let a = c
        .publish(publish("t", QoS::ExactlyOnce, b"a"), now)
        .unwrap()
        .unwrap();
    c.publish(publish("t", QoS::ExactlyOnce, b"b"), now)
        .unwrap();
    assert_eq!(publishes(&drain(&mut c)), 1);
    c.handle_packet(Packet::PubRec(PubRec::new(a)), now)
        .unwrap();
    assert!(
        matches!(drain(&mut c).as_slice(), [Packet::PubRel(_)]),
        "still no quota after PUBREC"
    );
    c.handle_packet(Packet::PubComp(PubComp::new(a)), now)
        .unwrap();
    assert_eq!(publishes(&drain(&mut c)), 1, "PUBCOMP returns the quota");
}

#[test]
fn server_respects_the_clients_receive_maximum() {
    // v5:MQTT-3.3.4-9 v5:MQTT-3.3.4-10
    let now = t0();
    let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
    connect.properties.receive_maximum = NonZeroU16::new(3);
    let mut server = connected_server(Config::default(), connect, now);
    for i in 0..10u8 {
        server
            .publish(publish("t", QoS::AtLeastOnce, &[i]), now)
            .unwrap();
    }
    assert_eq!(publishes(&drain(&mut server)), 3);
    server.handle_packet(Packet::PingReq, now).unwrap();
    assert_eq!(
        drain(&mut server),
        vec![Packet::PingResp],
        "PINGRESP is not delayed by the quota"
    );
}

// v5:MQTT-3.3.4-9 (the Receive Maximum holds for the peer), v5:MQTT-3.3.4-7.
#[test]
fn exceeding_our_receive_maximum_disconnects_with_0x93() {
    let now = t0();
    let config = Config {
        receive_maximum: NonZeroU16::new(2).unwrap(),
        ..Config::default()
    };
    let mut server = connected_server(
        config.clone(),
        connect_packet(ProtocolVersion::V5, "c", true),
        now,
    );
    server
        .handle_packet(incoming("t", QoS::ExactlyOnce, Some(1), b"x"), now)
        .unwrap();
    server
        .handle_packet(incoming("t", QoS::ExactlyOnce, Some(2), b"x"), now)
        .unwrap();
    // A duplicate of a stored identifier does not count twice.
    server
        .handle_packet(incoming("t", QoS::ExactlyOnce, Some(2), b"x"), now)
        .unwrap();
    let err = server
        .handle_packet(incoming("t", QoS::ExactlyOnce, Some(3), b"x"), now)
        .unwrap_err();
    assert_eq!(err, Error::Limit(LimitExceeded::ReceiveMaximum(2)));
    let out = drain(&mut server);
    assert_eq!(
        out.last(),
        Some(&Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::ReceiveMaximumExceeded
        )))
    );
    assert_eq!(
        server.incoming_qos2_len(),
        2,
        "bounded by our receive maximum"
    );

    // 3.1.1 has no Receive Maximum on the wire: the peer was never told one,
    // so more in flight is no violation (a 3.1.1 broker may send more than
    // 64 to a client); the packet identifier space bounds what is kept.
    let mut server = connected_server(
        config,
        connect_packet(ProtocolVersion::V311, "c", true),
        now,
    );
    for n in 1..=10 {
        server
            .handle_packet(incoming("t", QoS::ExactlyOnce, Some(n), b"x"), now)
            .unwrap();
    }
    assert_eq!(server.incoming_qos2_len(), 10);
    assert!(!server.is_closed());
    assert!(
        drain(&mut server)
            .iter()
            .all(|p| !matches!(p, Packet::Disconnect(_)))
    );
}

/// A v5 server session (Receive Maximum 2) resumed from a connection that
/// left the QoS 2 messages 1 and 2 waiting for their PUBREL.
#[allow(clippy::unwrap_used)] // a fixture of the test below
fn resumed_with_qos2_stored() -> Session {
    let now = t0();
    let config = Config {
        receive_maximum: NonZeroU16::new(2).unwrap(),
        ..Config::default()
    };
    let connect = || connect_packet(ProtocolVersion::V5, "c", false);
    let mut first = connected_server(config.clone(), connect(), now);
    for n in [1, 2] {
        first
            .handle_packet(incoming("t", QoS::ExactlyOnce, Some(n), b"x"), now)
            .unwrap();
    }
    first.connection_lost(now);
    let mut server = Session::server(config, now);
    server
        .handle_packet(Packet::Connect(Box::new(connect())), now)
        .unwrap();
    let _ = events(&mut server);
    let state = first.session_state(now);
    assert!(server.accept(Default::default(), Some(state), now).unwrap());
    let _ = drain(&mut server);
    server
}

// v5:MQTT-4.9.0-1 v5:MQTT-3.3.4-9: the send quota starts again at the
// Receive Maximum on every connection (spec 4.9: it is not session state);
// identifiers stored from an earlier one, only waiting for their PUBREL, do
// not count against it, unless the client sends their PUBLISH again.
#[test]
fn qos2_ids_from_an_earlier_connection_leave_the_receive_maximum_to_the_new_one() {
    let now = t0();
    let pubrel = |n| Packet::PubRel(fulmar_codec::PubRel::new(id(n)));
    let mut server = resumed_with_qos2_stored();
    for n in [3, 4] {
        server
            .handle_packet(incoming("t", QoS::ExactlyOnce, Some(n), b"x"), now)
            .unwrap();
    }
    assert_eq!(server.incoming_qos2_len(), 4);
    let out = drain(&mut server);
    assert!(
        out.iter().all(|p| !matches!(p, Packet::Disconnect(_))),
        "{out:?}"
    );
    for n in [1, 2] {
        server.handle_packet(pubrel(n), now).unwrap();
    }
    let err = server
        .handle_packet(incoming("t", QoS::ExactlyOnce, Some(5), b"x"), now)
        .unwrap_err();
    assert_eq!(err, Error::Limit(LimitExceeded::ReceiveMaximum(2)));

    // The client got the PUBREC of 1 and resends only its PUBREL, but not
    // the PUBREC of 2: it sends that PUBLISH again, which counts.
    let mut server = resumed_with_qos2_stored();
    server.handle_packet(pubrel(1), now).unwrap();
    for n in [2, 3] {
        server
            .handle_packet(incoming("t", QoS::ExactlyOnce, Some(n), b"x"), now)
            .unwrap();
    }
    let err = server
        .handle_packet(incoming("t", QoS::ExactlyOnce, Some(4), b"x"), now)
        .unwrap_err();
    assert_eq!(err, Error::Limit(LimitExceeded::ReceiveMaximum(2)));
}

#[test]
fn pending_queue_is_bounded() {
    let now = t0();
    let mut c = Session::client(Config {
        max_pending: 3,
        ..Config::default()
    });
    for _ in 0..3 {
        c.publish(publish("t", QoS::AtLeastOnce, b"x"), now)
            .unwrap();
    }
    assert_eq!(
        c.publish(publish("t", QoS::AtMostOnce, b"x"), now),
        Err(Error::Limit(LimitExceeded::PendingQueueFull(3)))
    );
    assert_eq!(c.pending_len(), 3);
}

// (no spec statement) Config::max_pending bounds the messages that wait
// (for a connection, or for the peer's Receive Maximum), not those the next
// poll_transmit sends: with a bound of 0, a connected client still publishes
// (it refused every message, as each went through the queue).
#[test]
fn the_pending_bound_counts_only_messages_that_wait() {
    let now = t0();
    let mut c = connected_client(
        Config {
            max_pending: 0,
            ..Config::default()
        },
        connect_packet(ProtocolVersion::V5, "c", true),
        connack_with(|p| p.receive_maximum = NonZeroU16::new(1)),
        now,
    );
    events(&mut c);
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::AtMostOnce] {
        c.publish(publish("t", qos, b"x"), now).unwrap();
        assert_eq!(publishes(&drain(&mut c)), 1);
    }
    // The QoS 1 message in flight takes the send quota: another one waits.
    assert_eq!(
        c.publish(publish("t", QoS::AtLeastOnce, b"x"), now),
        Err(Error::Limit(LimitExceeded::PendingQueueFull(0)))
    );
    // Published before the first is drained, the second waits behind it.
    c.publish(publish("t", QoS::AtMostOnce, b"x"), now).unwrap();
    assert_eq!(
        c.publish(publish("t", QoS::AtMostOnce, b"x"), now),
        Err(Error::Limit(LimitExceeded::PendingQueueFull(0)))
    );
    assert_eq!(c.pending_len(), 1);
    // Not connected, every message waits.
    let mut offline = Session::client(Config {
        max_pending: 0,
        ..Config::default()
    });
    assert_eq!(
        offline.publish(publish("t", QoS::AtMostOnce, b"x"), now),
        Err(Error::Limit(LimitExceeded::PendingQueueFull(0)))
    );
}

#[test]
fn requests_and_early_packets_are_bounded() {
    let now = t0();
    let mut c = connected_client(
        Config {
            max_requests: 1,
            ..Config::default()
        },
        connect_packet(ProtocolVersion::V5, "c", true),
        ConnAck::new(false, ConnectReasonCode::Success),
        now,
    );
    let f = || vec![(MqttString::from("x"), SubscriptionOptions::default())];
    c.subscribe(f(), Default::default(), now).unwrap();
    assert_eq!(
        c.subscribe(f(), Default::default(), now),
        Err(Error::Limit(LimitExceeded::TooManyRequests(1)))
    );

    let mut server = connect_received(connect_packet(ProtocolVersion::V5, "c", true), now);
    let mut result = Ok(());
    for _ in 0..100 {
        result = server.handle_packet(Packet::PingReq, now);
        if result.is_err() {
            break;
        }
    }
    assert!(matches!(
        result,
        Err(Error::Limit(LimitExceeded::EarlyPackets(_)))
    ));
    assert!(server.is_closed());
}

// Packets that come before the CONNECT is answered (during an enhanced
// authentication exchange, from a client not authenticated yet) are bounded
// in bytes too: one large packet is kept, not 63 of them.
#[test]
fn early_packets_are_bounded_in_bytes() {
    let now = t0();
    let mut server = Session::server(Config::default(), now);
    let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
    connect.properties.authentication_method = Some(MqttString::from("m"));
    server
        .handle_packet(Packet::Connect(Box::new(connect)), now)
        .unwrap();
    let big = || Packet::Publish(publish("t", QoS::AtMostOnce, &[0; 40_000]));
    // The first is kept whatever its size; 64 KiB more after it.
    let first = Packet::Publish(publish("t", QoS::AtMostOnce, &[0; 70_000]));
    server.handle_packet(first, now).unwrap();
    server.handle_packet(Packet::PingReq, now).unwrap();
    server.handle_packet(big(), now).unwrap();
    assert_eq!(
        server.handle_packet(big(), now),
        Err(Error::Limit(LimitExceeded::EarlyBytes(64 * 1024)))
    );
    assert!(server.is_closed());
    // Small ones within the bound are kept.
    let mut server = connect_received(connect_packet(ProtocolVersion::V5, "c", true), now);
    for _ in 0..3 {
        server
            .handle_packet(
                Packet::Publish(publish("t", QoS::AtMostOnce, &[0; 10_000])),
                now,
            )
            .unwrap();
    }
}

#[test]
fn early_packets_are_processed_after_accept() {
    let now = t0();
    let mut server = connect_received(connect_packet(ProtocolVersion::V5, "c", true), now);
    server
        .handle_packet(incoming("t", QoS::AtLeastOnce, Some(1), b"x"), now)
        .unwrap();
    assert!(drain(&mut server).is_empty());
    let _ = events(&mut server);
    server
        .accept(ConnAckProperties::default(), None, now)
        .unwrap();
    let out = drain(&mut server);
    assert!(
        matches!(out.as_slice(), [Packet::ConnAck(_), Packet::PubAck(_)]),
        "{out:?}"
    );
    assert_eq!(messages(&events(&mut server)).len(), 1);
}

#[test]
fn client_refuses_a_subscribe_or_unsubscribe_above_the_servers_maximum() {
    // v5:MQTT-3.2.2-15: refused by the call, nothing sent, no identifier used.
    let now = t0();
    let mut c = v5_client_with(connack_with(|p| {
        p.maximum_packet_size = NonZeroU32::new(64)
    }));
    let many: Vec<MqttString> = (0..20)
        .map(|i| MqttString::from(format!("sensors/{i:02}")))
        .collect();
    let options = SubscriptionOptions::new(QoS::AtLeastOnce);
    let subscribe: Vec<_> = many.iter().map(|f| (f.clone(), options)).collect();
    assert!(matches!(
        c.subscribe(subscribe, SubscribeProperties::default(), now),
        Err(Error::Limit(LimitExceeded::PacketTooLarge { max: 64, .. }))
    ));
    assert!(matches!(
        c.unsubscribe(many, UnsubscribeProperties::default(), now),
        Err(Error::Limit(LimitExceeded::PacketTooLarge { max: 64, .. }))
    ));
    assert!(drain(&mut c).is_empty());
    let id = c
        .subscribe(
            vec![(MqttString::from("sensors/01"), options)],
            SubscribeProperties::default(),
            now,
        )
        .unwrap();
    let out = drain(&mut c);
    let [Packet::Subscribe(sent)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(sent.packet_id, id);
    assert!(
        Packet::Subscribe(sent.clone())
            .encoded_len(ProtocolVersion::V5)
            .unwrap()
            <= 64
    );
}

// v5:MQTT-3.3.2-14 (a Response Topic has no wildcards), MQTT-1.5.6 binary
// data up to 65 535 bytes, v5:MQTT-3.8.3-4 (No Local on a shared
// subscription): what cannot be encoded is refused when the application
// asks, connected or not, instead of being queued to end every connection
// that tries to send it.
#[test]
fn a_client_refuses_what_it_could_not_encode() {
    let now = t0();
    fn unencodable<T>(r: Result<T, Error>) -> bool {
        matches!(r, Err(Error::Api(fulmar_session::ApiError::Unencodable(_))))
    }
    let mut offline = Session::client(Config::default());
    let mut c = v5_client_with(ConnAck::new(false, ConnectReasonCode::Success));
    for session in [&mut offline, &mut c] {
        let mut p = publish("t", QoS::AtLeastOnce, b"x");
        p.properties.response_topic = Some(MqttString::from("replies/#"));
        assert!(unencodable(session.publish(p, now)));
        let mut p = publish("t", QoS::AtMostOnce, b"x");
        p.properties.correlation_data = Some(vec![0; 70_000].into());
        assert!(unencodable(session.publish(p, now)));
        assert!(unencodable(
            session.publish(publish("a/+", QoS::AtMostOnce, b"x"), now)
        ));
    }
    let mut options = SubscriptionOptions::new(QoS::AtLeastOnce);
    options.no_local = true;
    assert!(unencodable(c.subscribe(
        vec![(MqttString::from("$share/g/t"), options)],
        SubscribeProperties::default(),
        now,
    )));
    assert!(drain(&mut c).is_empty());
    // What can be encoded still goes.
    c.publish(publish("t", QoS::AtLeastOnce, b"x"), now)
        .unwrap();
    assert_eq!(publishes(&drain(&mut c)), 1);
}

#[test]
fn client_never_sends_a_packet_above_the_servers_maximum() {
    // v5:MQTT-3.2.2-15
    let now = t0();
    let mut c = v5_client_with(connack_with(|p| {
        p.maximum_packet_size = NonZeroU32::new(64)
    }));
    let big = publish("t", QoS::AtLeastOnce, &[0; 100]);
    assert!(matches!(
        c.publish(big.clone(), now),
        Err(Error::Limit(LimitExceeded::PacketTooLarge { max: 64, .. }))
    ));
    assert!(
        c.publish(publish("t", QoS::AtLeastOnce, &[0; 10]), now)
            .is_ok()
    );
    assert_eq!(publishes(&drain(&mut c)), 1);

    // Queued before the CONNACK told the limit: dropped and reported.
    let mut c = Session::client(Config::default());
    let id = c.publish(big, now).unwrap();
    c.connect(connect_packet(ProtocolVersion::V5, "c", true), now)
        .unwrap();
    let _ = drain(&mut c);
    c.handle_packet(
        Packet::ConnAck(connack_with(|p| {
            p.maximum_packet_size = NonZeroU32::new(64)
        })),
        now,
    )
    .unwrap();
    assert!(drain(&mut c).is_empty());
    assert!(events(&mut c).contains(&Event::PublishDropped {
        packet_id: id,
        reason: DropReason::PacketTooLarge
    }));
    assert_eq!(c.inflight_len(), 0);
}

#[test]
fn server_discards_a_message_too_large_for_the_client() {
    // v5:MQTT-3.1.2-24 v5:MQTT-3.1.2-25
    let now = t0();
    let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
    connect.properties.maximum_packet_size = NonZeroU32::new(64);
    let mut server = connected_server(Config::default(), connect, now);
    server
        .publish(publish("t", QoS::AtLeastOnce, &[0; 100]), now)
        .unwrap();
    server
        .publish(publish("t", QoS::AtLeastOnce, &[0; 10]), now)
        .unwrap();
    let out = drain(&mut server);
    assert_eq!(publishes(&out), 1);
    for p in &out {
        assert!(p.encoded_len(ProtocolVersion::V5).unwrap() <= 64);
    }
    assert_eq!(
        server.inflight_len(),
        1,
        "the large one behaves as completed"
    );
    // Nothing on the wire, as if delivered; the application learns of it
    // (to forget what it kept for the flow, e.g. a store record).
    let large = id(1);
    assert_eq!(
        events(&mut server),
        vec![Event::PublishDropped {
            packet_id: Some(large),
            reason: DropReason::PacketTooLarge
        }]
    );
}

#[test]
fn reason_strings_are_dropped_rather_than_exceed_the_maximum_packet_size() {
    // v5:MQTT-3.9.2-1 v5:MQTT-3.9.2-2 v5:MQTT-3.2.2-19 v5:MQTT-3.2.2-20 v5:MQTT-3.11.2-1 v5:MQTT-3.11.2-2
    let now = t0();
    let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
    connect.properties.maximum_packet_size = NonZeroU32::new(40);
    let mut server = connect_received(connect, now);
    let _ = events(&mut server);
    let long = MqttString::try_new(&"r".repeat(100)).unwrap();
    let props = ConnAckProperties {
        reason_string: Some(long.clone()),
        user_properties: vec![(long.clone(), long.clone())],
        ..Default::default()
    };
    server.accept(props, None, now).unwrap();
    let out = drain(&mut server);
    let [Packet::ConnAck(connack)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(connack.properties.reason_string, None);
    assert!(connack.properties.user_properties.is_empty());
    assert!(out[0].encoded_len(ProtocolVersion::V5).unwrap() <= 40);

    let sub = fulmar_codec::Subscribe::new(
        id(1),
        vec![(MqttString::from("a"), SubscriptionOptions::default())],
    );
    server.handle_packet(Packet::Subscribe(sub), now).unwrap();
    let _ = events(&mut server);
    let props = fulmar_codec::AckProperties {
        reason_string: Some(long.clone()),
        user_properties: vec![],
    };
    server
        .suback(
            id(1),
            vec![fulmar_codec::SubAckReasonCode::GrantedQoS0],
            props.clone(),
        )
        .unwrap();
    let out = drain(&mut server);
    assert!(matches!(out.as_slice(), [Packet::SubAck(s)] if s.properties.reason_string.is_none()));
    let unsub = fulmar_codec::Unsubscribe::new(id(2), vec![MqttString::from("a")]);
    server
        .handle_packet(Packet::Unsubscribe(unsub), now)
        .unwrap();
    let _ = events(&mut server);
    server
        .unsuback(
            id(2),
            vec![fulmar_codec::UnsubAckReasonCode::Success],
            props,
        )
        .unwrap();
    let out = drain(&mut server);
    assert!(
        matches!(out.as_slice(), [Packet::UnsubAck(s)] if s.properties.reason_string.is_none())
    );
}

#[test]
fn topic_aliases_between_two_sessions() {
    // v5:MQTT-3.3.2-9 v5:MQTT-3.3.2-10 v5:MQTT-3.3.2-11 v5:MQTT-3.3.2-12 v5:MQTT-3.2.2-17 v5:MQTT-3.1.2-26
    // v5:MQTT-3.3.2-8
    let client_config = Config {
        topic_alias_maximum: 1,
        ..Config::default()
    };
    let server_config = Config {
        topic_alias_maximum: 2,
        ..Config::default()
    };
    let mut pair = Pair::with_configs(ProtocolVersion::V5, client_config, server_config);
    pair.connect(true);
    for topic in ["a", "b", "a", "c", "a", "b"] {
        pair.client
            .publish(publish(topic, QoS::AtMostOnce, b"x"), pair.now)
            .unwrap();
        pair.server
            .publish(publish(topic, QoS::AtMostOnce, b"x"), pair.now)
            .unwrap();
    }
    let up = drain(&mut pair.client);
    let aliases: Vec<Option<u16>> = up
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => p.properties.topic_alias.map(|a| a.get()),
            _ => None,
        })
        .collect();
    // Two aliases for three topics: the least recently used one is replaced,
    // never an alias above the server's maximum of 2, never 0.
    assert_eq!(
        aliases,
        vec![Some(1), Some(2), Some(1), Some(2), Some(1), Some(2)]
    );
    let with_topic = up
        .iter()
        .filter(|p| matches!(p, Packet::Publish(p) if !p.topic.is_empty()))
        .count();
    assert_eq!(
        with_topic, 4,
        "two hits on \"a\" go out with an empty topic name"
    );
    let down = drain(&mut pair.server);
    assert!(down.iter().all(
        |p| matches!(p, Packet::Publish(p) if p.properties.topic_alias.is_none_or(|a| a.get() == 1))
    ));
    for p in up {
        pair.server
            .handle_packet(wire(p, ProtocolVersion::V5), pair.now)
            .unwrap();
    }
    for p in down {
        pair.client
            .handle_packet(wire(p, ProtocolVersion::V5), pair.now)
            .unwrap();
    }
    let topics = |evs: &[Event]| {
        messages(evs)
            .iter()
            .map(|m| m.topic.to_string())
            .collect::<Vec<_>>()
    };
    let expected = vec!["a", "b", "a", "c", "a", "b"];
    assert_eq!(topics(&events(&mut pair.server)), expected);
    let client_topics = topics(&events(&mut pair.client));
    assert_eq!(client_topics, expected);
}

#[test]
fn topic_aliases_do_not_survive_the_connection() {
    // v5:MQTT-3.3.2-7 v5:MQTT-3.2.2-18 v5:MQTT-3.1.2-27
    let mut pair = Pair::new(ProtocolVersion::V5);
    pair.connect(false);
    pair.client
        .publish(publish("a", QoS::AtMostOnce, b"x"), pair.now)
        .unwrap();
    pair.drive();
    pair.break_link();
    pair.connect(false);
    pair.client
        .publish(publish("a", QoS::AtMostOnce, b"x"), pair.now)
        .unwrap();
    let out = drain(&mut pair.client);
    let [Packet::Publish(p)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(
        p.topic, "a",
        "the alias is set up again with the topic name"
    );
    assert_eq!(p.properties.topic_alias.map(|a| a.get()), Some(1));
    // The server never aliases towards a client that announced no maximum.
    let mut server = connected_server(
        Config::default(),
        connect_packet(ProtocolVersion::V5, "c", true),
        pair.now,
    );
    server
        .publish(publish("a", QoS::AtMostOnce, b"x"), pair.now)
        .unwrap();
    assert!(
        matches!(drain(&mut server).as_slice(), [Packet::Publish(p)] if p.properties.topic_alias.is_none())
    );
    // An alias the session has no mapping for is a protocol error.
    let mut p = publish("", QoS::AtMostOnce, b"x");
    p.properties.topic_alias = NonZeroU16::new(1);
    server
        .publish(publish("b", QoS::AtMostOnce, b"x"), pair.now)
        .unwrap();
    assert!(server.handle_packet(Packet::Publish(p), pair.now).is_err());
    assert_eq!(
        drain(&mut server).last(),
        Some(&Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::ProtocolError
        )))
    );
}

#[test]
fn alias_above_our_maximum_is_topic_alias_invalid() {
    let now = t0();
    let mut server = connected_server(
        Config::default(),
        connect_packet(ProtocolVersion::V5, "c", true),
        now,
    );
    let mut p = publish("t", QoS::AtMostOnce, b"x");
    p.properties.topic_alias = NonZeroU16::new(17);
    assert!(server.handle_packet(Packet::Publish(p), now).is_err());
    assert_eq!(
        drain(&mut server),
        vec![Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::TopicAliasInvalid
        ))]
    );
}

#[test]
fn a_publish_not_fed_yet_sets_its_topic_alias_in_the_order_of_receipt() {
    // v5:MQTT-3.3.2-10: the client accepts every alias it allowed, also one
    // set by a PUBLISH it discards (a QoS 0 message it has no room for) or
    // holds back to feed later.
    let now = t0();
    let mut client = v5_client_with(ConnAck::new(false, ConnectReasonCode::Success));
    events(&mut client);
    let aliased = |topic: &str, alias: u16| {
        let mut p = publish(topic, QoS::AtMostOnce, b"x");
        p.properties.topic_alias = NonZeroU16::new(alias);
        p
    };
    // Held back: resolved now, fed later.
    let mut held = aliased("held", 1);
    client.handle_topic_alias(&mut held, now).unwrap();
    assert_eq!(
        (held.topic.as_str(), held.properties.topic_alias),
        ("held", None)
    );
    // Discarded, never fed: alias 1 is now "dropped".
    client
        .handle_topic_alias(&mut aliased("dropped", 1), now)
        .unwrap();
    client.handle_packet(Packet::Publish(held), now).unwrap();
    client
        .handle_packet(Packet::Publish(aliased("", 1)), now)
        .unwrap();
    let topics: Vec<String> = events(&mut client)
        .into_iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m.topic.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(topics, ["held", "dropped"]);
    // An alias never set closes the connection, as from handle_packet.
    let mut unknown = aliased("", 2);
    assert!(matches!(
        client.handle_topic_alias(&mut unknown, now),
        Err(Error::Protocol(_))
    ));
    assert_eq!(
        drain(&mut client),
        [Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::ProtocolError
        ))]
    );
}

#[test]
fn message_expiry_while_queued() {
    // v5:MQTT-3.3.2-5 v5:MQTT-3.3.2-6 v5:MQTT-4.3.3-7
    let now = t0();
    let mut server = Session::server(Config::default(), now);
    let mut short = publish("t", QoS::AtLeastOnce, b"short");
    short.properties.message_expiry_interval = Some(5);
    let mut long = publish("t", QoS::ExactlyOnce, b"long");
    long.properties.message_expiry_interval = Some(100);
    let short_id = server.publish(short, now).unwrap();
    let long_id = server.publish(long, now).unwrap();
    // The client connects 30 s later.
    let later = now + secs(30);
    server
        .handle_packet(
            Packet::Connect(Box::new(connect_packet(ProtocolVersion::V5, "c", true))),
            later,
        )
        .unwrap();
    let _ = events(&mut server);
    server
        .accept(ConnAckProperties::default(), None, later)
        .unwrap();
    let out = drain(&mut server);
    let [Packet::ConnAck(_), Packet::Publish(p)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(p.packet_id, long_id);
    assert_eq!(
        p.properties.message_expiry_interval,
        Some(70),
        "reduced by the 30 s it waited"
    );
    assert!(events(&mut server).contains(&Event::PublishDropped {
        packet_id: short_id,
        reason: DropReason::Expired
    }));
    // Once sent, a message does not expire: it is resent however long it
    // waited (MQTT-4.4.0-1), with what is left of its interval (0 once it
    // has passed).
    server.connection_lost(later);
    let state = server.session_state(later + secs(20));
    let [fulmar_session::Outgoing::Publish(kept)] = state.outgoing() else {
        panic!("{state:?}")
    };
    assert_eq!(kept.properties.message_expiry_interval, Some(50));
    let state = server.session_state(later + secs(1000));
    let [fulmar_session::Outgoing::Publish(kept)] = state.outgoing() else {
        panic!("{state:?}")
    };
    assert_eq!(kept.properties.message_expiry_interval, Some(0));
}

// A Message Expiry Interval of 0 is a lifetime that ends as the message
// arrives: it goes out at once (with 0) but not after waiting. It is not a
// message that can never be sent (it was, from both roles).
// v5:MQTT-3.3.2-5 v5:MQTT-3.3.2-6
#[test]
fn a_message_expiry_of_zero_goes_out_at_once_but_does_not_wait() {
    let now = t0();
    let zero = |payload: &[u8]| {
        let mut p = publish("t", QoS::AtLeastOnce, payload);
        p.properties.message_expiry_interval = Some(0);
        p
    };
    // A client sends it.
    let mut client = connected_client(
        Config::default(),
        connect_packet(ProtocolVersion::V5, "c", true),
        fulmar_codec::ConnAck::default(),
        now,
    );
    client.publish(zero(b"now"), now).unwrap();
    let out = drain(&mut client);
    let [Packet::Publish(p)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(p.properties.message_expiry_interval, Some(0));
    // Sent again after a reconnect, it keeps 0 (it is in flight: MQTT-4.4.0-1).
    client.connection_lost(now + secs(5));
    let state = client.session_state(now + secs(5));
    let [fulmar_session::Outgoing::Publish(kept)] = state.outgoing() else {
        panic!("{state:?}")
    };
    assert_eq!(kept.properties.message_expiry_interval, Some(0));

    // A server sends it to a client connected now...
    let mut server = connected_server(
        Config::default(),
        connect_packet(ProtocolVersion::V5, "s", true),
        now,
    );
    server.publish(zero(b"now"), now).unwrap();
    let out = drain(&mut server);
    let [Packet::Publish(p)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(p.properties.message_expiry_interval, Some(0));
    // ...but not to one that connects a second later.
    let mut away = Session::server(Config::default(), now);
    let id = away.publish(zero(b"later"), now).unwrap();
    let later = now + secs(1);
    away.handle_packet(
        Packet::Connect(Box::new(connect_packet(ProtocolVersion::V5, "a", true))),
        later,
    )
    .unwrap();
    let _ = events(&mut away);
    away.accept(ConnAckProperties::default(), None, later)
        .unwrap();
    let out = drain(&mut away);
    assert!(matches!(out.as_slice(), [Packet::ConnAck(_)]), "{out:?}");
    assert!(events(&mut away).contains(&Event::PublishDropped {
        packet_id: id,
        reason: DropReason::Expired
    }));
    // A session kept away ages it out too.
    let mut offline = Session::client(Config::default());
    offline.publish(zero(b"stored"), now).unwrap();
    let mut state = offline.session_state(now);
    assert_eq!(state.age(secs(1)).len(), 1);
}

#[test]
fn expired_messages_free_the_queue() {
    let now = t0();
    let mut c = Session::client(Config {
        max_pending: 1,
        ..Config::default()
    });
    let mut p = publish("t", QoS::AtLeastOnce, b"x");
    p.properties.message_expiry_interval = Some(1);
    c.publish(p.clone(), now).unwrap();
    assert!(c.publish(p.clone(), now).is_err());
    assert!(
        c.publish(p, now + secs(2)).is_ok(),
        "the expired one made room"
    );
    assert!(events(&mut c).iter().any(|e| matches!(
        e,
        Event::PublishDropped {
            reason: DropReason::Expired,
            ..
        }
    )));
}

// A QoS 0 message has no packet identifier: when one is dropped, its number
// (`published` right after `publish` accepted it) tells which, also when it
// was not the oldest queued. The other QoS 0 messages are sent in order.
// v5:MQTT-4.9.0-2 holds Y and what follows back.
#[test]
fn a_dropped_qos0_message_is_told_by_its_number() {
    let now = t0();
    let mut c = v5_client_with(connack_with(|p| p.receive_maximum = NonZeroU16::new(1)));
    let qos0 = |c: &mut Session, topic: &str, expiry: Option<u32>, at| {
        let mut p = publish(topic, QoS::AtMostOnce, b"0");
        p.properties.message_expiry_interval = expiry;
        assert_eq!(c.publish(p, at).unwrap(), None);
        c.published()
    };
    let x = c
        .publish(publish("x", QoS::AtLeastOnce, b"1"), now)
        .unwrap();
    c.publish(publish("y", QoS::AtLeastOnce, b"1"), now)
        .unwrap();
    let a = qos0(&mut c, "a", None, now);
    let b = qos0(&mut c, "b", Some(1), now);
    let cc = qos0(&mut c, "c", None, now);
    assert_eq!((a, b, cc), (3, 4, 5));
    // X goes out; Y waits for the quota, A, B and C wait behind it.
    assert_eq!(publishes(&drain(&mut c)), 1);
    let dropped = |c: &mut Session| {
        let mut dropped = Vec::new();
        while let Some(event) = c.poll_event() {
            match event {
                Event::PublishDropped {
                    packet_id: None,
                    reason,
                } => dropped.push((c.dropped_number(), reason)),
                _ => assert_eq!(c.dropped_number(), None),
            }
        }
        dropped
    };
    // B expires in the middle of the queue (on a timer), A still ahead.
    let later = now + secs(2);
    c.handle_timeout(later);
    assert_eq!(dropped(&mut c), [(Some(b), DropReason::Expired)]);
    // D expires too, and is dropped when its turn comes, between C and E.
    let d = qos0(&mut c, "d", Some(1), later);
    let e = qos0(&mut c, "e", None, later);
    let ack = PubAck::new(x.unwrap());
    c.handle_packet(Packet::PubAck(ack), later + secs(2))
        .unwrap();
    let topics: Vec<String> = drain(&mut c)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p.topic.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(topics, ["y", "a", "c", "e"]);
    assert_eq!(dropped(&mut c), [(Some(d), DropReason::Expired)]);
    assert_eq!((d, e), (6, 7));
}

#[test]
fn v311_strips_v5_properties_when_forwarding() {
    let now = t0();
    let mut server = connected_server(
        Config::default(),
        connect_packet(ProtocolVersion::V311, "c", true),
        now,
    );
    let mut p = publish("t", QoS::AtLeastOnce, b"x");
    p.properties.message_expiry_interval = Some(100);
    p.properties.content_type = Some(MqttString::from("text/plain"));
    server.publish(p, now).unwrap();
    let out = drain(&mut server);
    let [packet] = out.as_slice() else {
        panic!("{out:?}")
    };
    let Packet::Publish(sent) = wire(packet.clone(), ProtocolVersion::V311) else {
        panic!()
    };
    assert!(sent.properties.is_empty());
}

// A server with `strip_topic_prefix` (a broker's mount point) sends its
// topics without the prefix, and the client's Maximum Packet Size counts
// what is sent: a message that fits only once shortened goes out, one that
// does not fit even then is dropped, and a resumed session resends the
// shortened copy (the state keeps the full topic).
// v5:MQTT-3.1.2-24 v5:MQTT-3.1.2-25
#[test]
fn a_stripped_topic_is_what_the_maximum_packet_size_counts() {
    let now = t0();
    let prefix = "tenant-with-a-long-name/";
    let config = Config {
        strip_topic_prefix: Some(prefix.into()),
        outbound_topic_aliases: false,
        ..Config::default()
    };
    let mut connect = connect_packet(ProtocolVersion::V5, "c", false);
    connect.properties.maximum_packet_size = NonZeroU32::new(64);
    connect.properties.session_expiry_interval = Some(60);
    let mut server = connected_server(config.clone(), connect.clone(), now);
    let full = format!("{prefix}a");
    let payload = [7; 40];
    // 2 + 25 + 2 (id) + 1 (properties) + 40 = 70 bytes of body with the
    // full topic, 46 without the prefix.
    let sent = publish(&full, QoS::AtLeastOnce, &payload);
    let mut probe = sent.clone();
    probe.packet_id = Some(id(1));
    assert!(
        Packet::Publish(probe)
            .encoded_len(ProtocolVersion::V5)
            .unwrap()
            > 64
    );
    server.publish(sent, now).unwrap();
    // Not the prefix: unchanged (and too large: dropped).
    server
        .publish(
            publish(
                &format!("other/{}", "x".repeat(20)),
                QoS::AtLeastOnce,
                &payload,
            ),
            now,
        )
        .unwrap();
    // The prefix alone is no topic to shorten to: unchanged, too large.
    server
        .publish(publish(prefix, QoS::AtMostOnce, &payload), now)
        .unwrap();
    // QoS 0, moved out of the queue: shortened too.
    server
        .publish(publish(&format!("{prefix}b"), QoS::AtMostOnce, &[1]), now)
        .unwrap();
    let out = drain(&mut server);
    let topics: Vec<_> = out
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p.topic.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(topics, ["a", "b"]);
    for p in &out {
        assert!(p.encoded_len(ProtocolVersion::V5).unwrap() <= 64);
    }
    let dropped = events(&mut server)
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::PublishDropped {
                    reason: DropReason::PacketTooLarge,
                    ..
                }
            )
        })
        .count();
    assert_eq!(dropped, 2);

    // The stored message keeps its full topic; resent shortened, with DUP.
    server.connection_lost(now);
    let state = server.session_state(now);
    let Some(fulmar_session::Outgoing::Publish(stored)) = state.outgoing().first() else {
        panic!("{:?}", state.outgoing())
    };
    assert_eq!(stored.topic, *full.as_str());
    let mut again = Session::server(config, now);
    again
        .handle_packet(Packet::Connect(Box::new(connect)), now)
        .unwrap();
    let _ = events(&mut again);
    assert!(again.accept(Default::default(), Some(state), now).unwrap());
    let out = drain(&mut again);
    let resent: Vec<_> = out
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.topic.to_string(), p.dup)),
            _ => None,
        })
        .collect();
    assert_eq!(resent, [("a".to_owned(), true)]);
}

// Outbound topic aliases with a stripped prefix: the alias stands for the
// topic as sent, which goes with it the first time only.
// v5:MQTT-3.3.2-11 v5:MQTT-3.1.2-26
#[test]
fn an_alias_stands_for_the_stripped_topic() {
    let now = t0();
    let config = Config {
        strip_topic_prefix: Some("t/".into()),
        ..Config::default()
    };
    let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
    connect.properties.topic_alias_maximum = Some(2);
    connect.properties.maximum_packet_size = NonZeroU32::new(1000);
    let mut server = connected_server(config, connect, now);
    for _ in 0..2 {
        server
            .publish(publish("t/a", QoS::AtMostOnce, b"x"), now)
            .unwrap();
    }
    let sent: Vec<_> = drain(&mut server)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.topic.to_string(), p.properties.topic_alias)),
            _ => None,
        })
        .collect();
    let alias = NonZeroU16::new(1);
    assert_eq!(sent, [("a".to_owned(), alias), (String::new(), alias)]);
}
