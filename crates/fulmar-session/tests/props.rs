//! proptest: random packet sequences from a peer, into each role. The session
//! never panics, everything it sends survives the codec, its queues stay
//! bounded, and it ends either still valid or closed with a defined error
//! whose reason code is the DISCONNECT it sent.

mod common;

use std::num::{NonZeroU16, NonZeroU32};
use std::time::Duration;

use bytes::Bytes;
use common::{connect_packet, drain, t0, wire};
use fulmar_codec::{
    ConnAck, ConnAckProperties, ConnectReasonCode, Disconnect, DisconnectReasonCode, MqttString,
    Packet, PacketId, ProtocolVersion, PubAck, PubComp, PubRec, PubRel, Publish, QoS, SubAck,
    SubAckReasonCode, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};
use fulmar_session::{Config, Error, Event, Role, Session};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Input {
    Packet(Box<Packet>),
    Publish(QoS, u8),
    Advance(u16),
    Lost,
    Reconnect,
    Ack(PacketId),
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn pid() -> impl Strategy<Value = PacketId> {
    (1u16..8).prop_map(|n| PacketId::new(n).unwrap_or(PacketId::ONE))
}

fn topic() -> impl Strategy<Value = MqttString> {
    prop_oneof![
        Just(MqttString::from("a")),
        Just(MqttString::from("b/c")),
        Just(MqttString::new())
    ]
}

fn publish_packet() -> impl Strategy<Value = Packet> {
    (
        qos(),
        pid(),
        topic(),
        any::<bool>(),
        proptest::option::of(0u16..20),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(qos, id, topic, dup, alias, retain, sub_id)| {
            let mut p = Publish::new(topic, Bytes::from_static(b"p"));
            p.qos = qos;
            p.retain = retain;
            if qos != QoS::AtMostOnce {
                p.packet_id = Some(id);
                p.dup = dup;
            }
            p.properties.topic_alias = alias.and_then(NonZeroU16::new);
            if sub_id {
                p.properties.subscription_identifiers.push(NonZeroU32::MIN);
            }
            Packet::Publish(p)
        })
}

fn packet() -> impl Strategy<Value = Packet> {
    prop_oneof![
        4 => publish_packet(),
        2 => pid().prop_map(|id| Packet::PubAck(PubAck::new(id))),
        2 => pid().prop_map(|id| Packet::PubRec(PubRec::new(id))),
        2 => pid().prop_map(|id| Packet::PubRel(PubRel::new(id))),
        2 => pid().prop_map(|id| Packet::PubComp(PubComp::new(id))),
        1 => (pid(), qos()).prop_map(|(id, q)| Packet::Subscribe(Subscribe::new(
            id,
            vec![(MqttString::from("a/#"), SubscriptionOptions::new(q))]
        ))),
        1 => pid().prop_map(|id| Packet::Unsubscribe(Unsubscribe::new(id, vec![MqttString::from("a/#")]))),
        1 => pid().prop_map(|id| Packet::SubAck(SubAck::new(id, vec![SubAckReasonCode::GrantedQoS1]))),
        1 => pid().prop_map(|id| Packet::UnsubAck(UnsubAck::new(id, vec![]))),
        1 => Just(Packet::PingReq),
        1 => Just(Packet::PingResp),
        1 => any::<bool>().prop_map(|sp| Packet::ConnAck(ConnAck::new(sp, ConnectReasonCode::Success))),
        1 => any::<bool>().prop_map(|clean| Packet::Connect(Box::new(connect_packet(ProtocolVersion::V5, "x", clean)))),
        1 => Just(Packet::Disconnect(Disconnect::new(DisconnectReasonCode::NormalDisconnection))),
    ]
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        12 => packet().prop_map(|p| Input::Packet(Box::new(p))),
        2 => (qos(), any::<u8>()).prop_map(|(q, b)| Input::Publish(q, b)),
        2 => (0u16..120).prop_map(Input::Advance),
        1 => Just(Input::Lost),
        1 => Just(Input::Reconnect),
        2 => pid().prop_map(Input::Ack),
    ]
}

fn config(manual_acks: bool) -> Config {
    Config {
        manual_acks,
        receive_maximum: NonZeroU16::new(3).unwrap_or(NonZeroU16::MIN),
        max_pending: 5,
        max_requests: 3,
        topic_alias_maximum: 4,
        ..Config::default()
    }
}

/// Feeds `inputs` to `session`, answering its events as an application would,
/// and checks the invariants after every step.
fn run(
    mut session: Session,
    inputs: Vec<Input>,
    client_version: ProtocolVersion,
) -> Result<(), TestCaseError> {
    let mut now = t0();
    let limits = config(false);
    for input in inputs {
        // The version in force: a server learns it from the CONNECT.
        let version = session.protocol_version();
        let from_peer = matches!(input, Input::Packet(_));
        let result = match input {
            Input::Packet(p) => {
                // Packets the codec cannot carry in this version never reach the session.
                let mut buf = bytes::BytesMut::new();
                if p.encode(version, &mut buf).is_err() {
                    continue;
                }
                session.handle_packet(wire(*p, version), now)
            }
            Input::Publish(qos, b) => {
                let mut p = Publish::new(MqttString::from("out"), Bytes::from(vec![b]));
                p.qos = qos;
                session.publish(p, now).map(|_| ())
            }
            Input::Advance(s) => {
                now += Duration::from_secs(u64::from(s));
                session.handle_timeout(now);
                Ok(())
            }
            Input::Lost => {
                session.connection_lost(now);
                Ok(())
            }
            Input::Ack(id) => session.ack(id),
            Input::Reconnect => {
                if session.role() == Role::Client && session.is_closed() {
                    let _ = session.connect(connect_packet(client_version, "c", false), now);
                }
                Ok(())
            }
        };
        let version = session.protocol_version();
        let sent = drain(&mut session);
        for p in &sent {
            wire(p.clone(), version);
        }
        let events: Vec<Event> = std::iter::from_fn(|| session.poll_event()).collect();
        for event in events {
            match event {
                Event::Connect(_) => {
                    let props = ConnAckProperties {
                        assigned_client_identifier: Some(MqttString::from("assigned")),
                        ..Default::default()
                    };
                    session
                        .accept(props, None, now)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
                Event::Subscribe(s) => {
                    let codes = vec![SubAckReasonCode::GrantedQoS0; s.filters.len()];
                    let _ = session.suback(s.packet_id, codes, Default::default());
                }
                Event::Unsubscribe(u) => {
                    let codes = vec![fulmar_codec::UnsubAckReasonCode::Success; u.filters.len()];
                    let _ = session.unsuback(u.packet_id, codes, Default::default());
                }
                _ => {}
            }
        }
        for p in drain(&mut session) {
            wire(p, version);
        }
        prop_assert!(session.incoming_qos2_len() <= usize::from(limits.receive_maximum.get()));
        prop_assert!(session.pending_len() <= limits.max_pending);
        prop_assert!(session.send_window_used() <= session.send_window());
        if let Err(error) = result {
            if !from_peer {
                // A refused command (queue full, not connected...) is not fatal.
                prop_assert!(!matches!(error, Error::Protocol(_)), "{error}");
                continue;
            }
            match error {
                Error::Protocol(_) | Error::Limit(_) => {
                    prop_assert!(session.is_closed(), "a fatal error closes: {error}");
                    prop_assert_eq!(session.error(), Some(&error));
                    if let Some(Packet::Disconnect(d)) = sent.last() {
                        prop_assert_eq!(d.reason_code, error.reason_code());
                    }
                    prop_assert!(
                        sent.iter()
                            .filter(|p| matches!(p, Packet::Disconnect(_)))
                            .count()
                            <= 1
                    );
                }
                Error::Api(_) => {}
                other => prop_assert!(false, "unexpected error {other}"),
            }
        }
    }
    Ok(())
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(ProtocolVersion::V311), Just(ProtocolVersion::V5)]
}

proptest! {
    // PROPTEST_CASES=n runs more cases.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(512),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// v5:MQTT-4.13.1-1 v3:MQTT-4.8.0-1
    #[test]
    fn server_survives_any_packet_sequence(version in version(), manual in any::<bool>(), inputs in prop::collection::vec(input(), 0..60)) {
        let now = t0();
        let mut server = Session::server(config(manual), now);
        let mut connect = connect_packet(version, "c", true);
        if version == ProtocolVersion::V5 {
            connect.properties.topic_alias_maximum = Some(2);
        }
        let mut inputs = inputs;
        inputs.insert(0, Input::Packet(Box::new(Packet::Connect(Box::new(connect)))));
        let _ = &mut server;
        run(server, inputs, version)?;
    }

    /// A server that never got a CONNECT: anything else closes it.
    #[test]
    fn fresh_server_survives_any_packet_sequence(version in version(), manual in any::<bool>(), inputs in prop::collection::vec(input(), 0..30)) {
        run(Session::server(config(manual), t0()), inputs, version)?;
    }

    /// v5:MQTT-4.13.1-1 v3:MQTT-4.8.0-1
    #[test]
    fn client_survives_any_packet_sequence(version in version(), manual in any::<bool>(), inputs in prop::collection::vec(input(), 0..60)) {
        let now = t0();
        let mut client = Session::client(config(manual));
        client.connect(connect_packet(version, "c", false), now).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let _ = drain(&mut client);
        run(client, inputs, version)?;
    }

    /// See [`stripped_prefix_case`]. v5:MQTT-3.1.2-24 v5:MQTT-3.1.2-25
    #[test]
    fn a_stripped_prefix_is_sized_as_sent(
        max in 16u32..80,
        messages in prop::collection::vec((0usize..5, qos(), 0usize..60), 1..24),
    ) {
        stripped_prefix_case(max, &messages)?;
    }
}

/// A server with a prefix to strip (a broker's mount point) and a 5.0
/// client with a Maximum Packet Size: each message goes out, its topic
/// without the prefix where it starts with it and is longer, exactly when
/// what is sent fits; otherwise it is reported dropped as too large.
/// v5:MQTT-3.1.2-24 v5:MQTT-3.1.2-25
fn stripped_prefix_case(max: u32, messages: &[(usize, QoS, usize)]) -> Result<(), TestCaseError> {
    const PREFIX: &str = "mount/";
    const TOPICS: [&str; 5] = [
        "mount/a",
        "mount/a/longer/topic",
        "mount/",
        "other/x",
        "mountain",
    ];
    let now = t0();
    let config = Config {
        strip_topic_prefix: Some(PREFIX.into()),
        ..Config::default()
    };
    let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
    connect.properties.maximum_packet_size = NonZeroU32::new(max);
    let mut server = common::connected_server(config, connect, now);
    let mut expected = Vec::new();
    let mut expected_drops = 0;
    for &(t, qos, size) in messages {
        let topic = TOPICS[t % TOPICS.len()];
        let payload = vec![b'x'; size];
        server
            .publish(common::publish(topic, qos, &payload), now)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let sent = match topic.strip_prefix(PREFIX) {
            Some(rest) if !rest.is_empty() => rest,
            _ => topic,
        };
        let mut probe = common::publish(sent, qos, &payload);
        if qos != QoS::AtMostOnce {
            probe.packet_id = Some(PacketId::ONE);
        }
        let len = Packet::Publish(probe)
            .encoded_len(ProtocolVersion::V5)
            .unwrap_or(usize::MAX);
        if u32::try_from(len).is_ok_and(|len| len <= max) {
            expected.push(sent.to_owned());
        } else {
            expected_drops += 1;
        }
    }
    let mut got = Vec::new();
    for packet in drain(&mut server) {
        let len = packet
            .encoded_len(ProtocolVersion::V5)
            .unwrap_or(usize::MAX);
        prop_assert!(
            u32::try_from(len).is_ok_and(|len| len <= max),
            "{len} > {max}"
        );
        if let Packet::Publish(p) = packet {
            got.push(p.topic.to_string());
        }
    }
    prop_assert_eq!(got, expected);
    let drops = common::events(&mut server)
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::PublishDropped {
                    reason: fulmar_session::DropReason::PacketTooLarge,
                    ..
                }
            )
        })
        .count();
    prop_assert_eq!(drops, expected_drops);
    Ok(())
}
