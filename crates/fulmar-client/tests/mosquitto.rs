//! Interop with a real mosquitto broker: connect (both versions),
//! publish/subscribe at QoS 0/1/2, retained messages, wills, streams.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Mosquitto, Proxy, guard};
use fulmar_client::{
    Client, ConnectOptions, DisconnectProperties, DisconnectReasonCode, Error, ProtocolVersion,
    PublishProperties, QoS, ReasonCode, Reconnect, RetainHandling, SubAckReasonCode,
    SubscribeProperties, SubscriptionOptions, Will, WillProperties,
};
use futures::StreamExt;

/// MQTT 3.1 as well: mosquitto still speaks it.
const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V31,
    ProtocolVersion::V311,
    ProtocolVersion::V5,
];

fn options(broker: &Mosquitto, version: ProtocolVersion, id: &str) -> ConnectOptions {
    ConnectOptions::new("127.0.0.1", broker.port)
        .protocol_version(version)
        .client_id(id)
        .reconnect(Reconnect::disabled())
}

async fn connect(broker: &Mosquitto, version: ProtocolVersion, id: &str) -> Client {
    let (client, _connack) = guard(Client::connect(options(broker, version, id)))
        .await
        .unwrap();
    client
}

// MQTT-3.1.0-1: CONNECT is the first packet; the broker answers CONNACK.
// MQTT-3.2.0-1: the first packet from the server is CONNACK.
// v5:MQTT-3.2.2-2 v3:MQTT-3.2.2-1: Clean Start 1 gives Session Present 0.
// v3:MQTT-7.1.2-1: the client runs over TCP, an ordered, lossless byte stream
// (TLS and WebSocket in tls.rs and websocket.rs).
#[tokio::test]
async fn connects_with_both_versions() {
    let broker = Mosquitto::start();
    for version in VERSIONS {
        let (client, connack) = guard(Client::connect(options(&broker, version, "both")))
            .await
            .unwrap();
        assert!(!connack.session_present);
        assert_eq!(
            connack.reason_code,
            fulmar_client::ConnectReasonCode::Success
        );
        guard(client.disconnect()).await.unwrap();
        assert!(matches!(
            guard(client.publish("t", "x")).await,
            Err(Error::Closed)
        ));
        assert!(client.is_closed());
    }
}

// v5:MQTT-3.2.2-16 v5:MQTT-3.1.3-7: an empty client id gets an Assigned Client Identifier.
#[tokio::test]
async fn v5_empty_client_id_is_assigned() {
    let broker = Mosquitto::start();
    let (client, connack) = guard(Client::connect(options(&broker, ProtocolVersion::V5, "")))
        .await
        .unwrap();
    assert!(connack.properties.assigned_client_identifier.is_some());
    guard(client.disconnect()).await.unwrap();
}

#[tokio::test]
async fn connect_to_a_closed_port_fails_with_io_error() {
    let port = common::free_port();
    let result = guard(Client::connect(
        ConnectOptions::new("127.0.0.1", port).reconnect(Reconnect::disabled()),
    ))
    .await;
    assert!(matches!(result, Err(Error::Io(_))), "{result:?}");
}

// v3:MQTT-3.2.2-5 v5:MQTT-3.2.2-7: a refusing CONNACK ends the connection; the
// client reports its reason code (3.1.1 return code 5 maps to 0x87).
#[tokio::test]
async fn refused_connection_reports_the_reason_code() {
    let broker = Mosquitto::with(common::Listener::Tcp, false);
    for version in VERSIONS {
        let result = guard(Client::connect(options(&broker, version, "refused"))).await;
        match result {
            Err(Error::Refused { reason_code, .. }) => {
                assert_eq!(reason_code, fulmar_client::ConnectReasonCode::NotAuthorized);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

// MQTT-4.3.2-1 MQTT-4.3.3-1 v5:MQTT-4.3.2-4 v5:MQTT-4.3.3-11: publish at QoS 0/1/2
// completes with the broker's acknowledgement; the subscriber receives each
// message once, with the granted QoS.
// v3:MQTT-3.8.4-1 v5:MQTT-3.8.4-1: SUBSCRIBE is answered by SUBACK.
// v3:MQTT-3.8.4-5 v5:MQTT-3.8.4-6: one reason code per filter.
#[tokio::test]
async fn publish_and_subscribe_at_every_qos() {
    let broker = Mosquitto::start();
    for version in VERSIONS {
        let sub = connect(&broker, version, "sub").await;
        let publisher = connect(&broker, version, "pub").await;
        let mut stream = guard(sub.subscribe("qos/+", QoS::ExactlyOnce))
            .await
            .unwrap();
        assert_eq!(
            stream.suback().reason_codes,
            vec![SubAckReasonCode::GrantedQoS2]
        );
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let topic = format!("qos/{}", u8::from(qos));
            let outcome = guard(
                publisher
                    .publish(topic.clone(), format!("m{}", u8::from(qos)))
                    .qos(qos),
            )
            .await
            .unwrap();
            assert_eq!(outcome.qos, qos);
            assert!(!outcome.reason_code.is_error());
            let message = guard(stream.next()).await.unwrap();
            assert_eq!(message.topic, topic.as_str());
            assert_eq!(message.qos, qos);
            assert_eq!(message.payload, format!("m{}", u8::from(qos)));
            assert!(!message.retain);
        }
        guard(sub.disconnect()).await.unwrap();
        guard(publisher.disconnect()).await.unwrap();
        // The stream ends when its client is closed.
        assert!(guard(stream.next()).await.is_none());
    }
}

// v3:MQTT-3.8.4-6 v5:MQTT-3.8.4-8: delivered QoS is the minimum of published and granted.
#[tokio::test]
async fn delivered_qos_is_capped_by_the_subscription() {
    let broker = Mosquitto::start();
    for version in VERSIONS {
        let client = connect(&broker, version, "cap").await;
        let mut stream = guard(client.subscribe("cap", QoS::AtLeastOnce))
            .await
            .unwrap();
        guard(client.publish("cap", "x").qos(QoS::ExactlyOnce))
            .await
            .unwrap();
        let m = guard(stream.next()).await.unwrap();
        assert_eq!(m.qos, QoS::AtLeastOnce);
        guard(client.disconnect()).await.unwrap();
    }
}

// v3:MQTT-3.3.1-5 v3:MQTT-3.3.1-6 v3:MQTT-3.3.1-8: a retained message is sent to a new
// subscription with RETAIN 1.
// v5:MQTT-3.3.1-5 v5:MQTT-3.3.1-9: Retain Handling 0 sends it.
// v3:MQTT-3.3.1-10 v3:MQTT-3.3.1-11 v5:MQTT-3.3.1-6 v5:MQTT-3.3.1-7: an empty retained
// message clears it.
#[tokio::test]
async fn retained_messages() {
    let broker = Mosquitto::start();
    for version in VERSIONS {
        let client = connect(&broker, version, "retain").await;
        let topic = format!("retained/{version:?}");
        guard(
            client
                .publish(topic.clone(), "kept")
                .qos(QoS::AtLeastOnce)
                .retain(true),
        )
        .await
        .unwrap();
        let mut stream = guard(client.subscribe(&topic, QoS::AtLeastOnce))
            .await
            .unwrap();
        let m = guard(stream.next()).await.unwrap();
        assert!(m.retain);
        assert_eq!(m.payload, "kept");
        // Clear it: a later subscriber gets nothing retained, only the next live message.
        guard(
            client
                .publish(topic.clone(), Bytes::new())
                .qos(QoS::AtLeastOnce)
                .retain(true),
        )
        .await
        .unwrap();
        let cleared = guard(stream.next()).await.unwrap();
        assert!(cleared.payload.is_empty());
        drop(stream);
        let mut again = guard(client.subscribe(&topic, QoS::AtLeastOnce))
            .await
            .unwrap();
        guard(client.publish(topic.clone(), "live").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        let m = guard(again.next()).await.unwrap();
        assert_eq!(m.payload, "live");
        assert!(!m.retain);
        guard(client.disconnect()).await.unwrap();
    }
}

// v5:MQTT-3.3.1-11: Retain Handling 2 sends no retained message.
#[tokio::test]
async fn v5_retain_handling_do_not_send() {
    let broker = Mosquitto::start();
    let client = connect(&broker, ProtocolVersion::V5, "rh").await;
    guard(
        client
            .publish("rh", "old")
            .qos(QoS::AtLeastOnce)
            .retain(true),
    )
    .await
    .unwrap();
    let options = SubscriptionOptions {
        retain_handling: RetainHandling::DoNotSend,
        ..SubscriptionOptions::new(QoS::AtLeastOnce)
    };
    let mut stream =
        guard(client.subscribe_with(vec![("rh".into(), options)], SubscribeProperties::default()))
            .await
            .unwrap();
    guard(client.publish("rh", "new").qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    assert_eq!(guard(stream.next()).await.unwrap().payload, "new");
    guard(client.disconnect()).await.unwrap();
}

// v3:MQTT-3.1.2-8 v5:MQTT-3.1.2-8 v3:MQTT-3.1.2-16 v5:MQTT-3.1.2-14: the will is published
// when the connection closes without DISCONNECT (non-retained here).
// v3:MQTT-3.1.2-17 v5:MQTT-3.1.2-15: with Will Retain 1 it is retained.
#[tokio::test]
async fn will_is_published_on_abrupt_close() {
    let broker = Mosquitto::start();
    for version in VERSIONS {
        let proxy = Proxy::start(broker.addr()).await;
        let watcher = connect(&broker, version, "watcher").await;
        let mut wills = guard(watcher.subscribe("wills/#", QoS::AtLeastOnce))
            .await
            .unwrap();
        let mut will = Will::new("wills/dying".into(), Bytes::from_static(b"gone"));
        will.qos = QoS::AtLeastOnce;
        will.retain = true;
        if version == ProtocolVersion::V5 {
            will.properties = WillProperties {
                content_type: Some("text/plain".into()),
                user_properties: vec![("why".into(), "test".into())],
                ..WillProperties::default()
            };
        }
        let dying_options = ConnectOptions::new("127.0.0.1", proxy.port)
            .protocol_version(version)
            .client_id("dying")
            .will(will)
            .reconnect(Reconnect::disabled());
        let (dying, _) = guard(Client::connect(dying_options)).await.unwrap();
        proxy.sever();
        let m = guard(wills.next()).await.unwrap();
        assert_eq!(m.topic, "wills/dying");
        assert_eq!(m.payload, "gone");
        if version == ProtocolVersion::V5 {
            assert_eq!(m.properties.content_type.as_deref(), Some("text/plain"));
            assert_eq!(m.properties.user_properties.len(), 1);
        }
        // Retained: a new subscriber sees it with RETAIN 1.
        let mut late = guard(watcher.subscribe("wills/dying", QoS::AtLeastOnce))
            .await
            .unwrap();
        let m = guard(late.next()).await.unwrap();
        assert!(m.retain);
        // The client with reconnect off closes itself.
        let closed = guard(async {
            loop {
                if dying.is_closed() {
                    break;
                }
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        closed.await;
        guard(watcher.publish("wills/dying", Bytes::new()).retain(true))
            .await
            .unwrap();
        guard(watcher.disconnect()).await.unwrap();
    }
}

// v3:MQTT-3.14.4-3 v5:MQTT-3.14.4-3 v3:MQTT-3.1.2-10 v5:MQTT-3.1.2-10: a normal
// DISCONNECT discards the will; v5 reason 0x04 publishes it anyway.
#[tokio::test]
async fn disconnect_discards_or_sends_the_will() {
    let broker = Mosquitto::start();
    for version in VERSIONS {
        let watcher = connect(&broker, version, "watcher2").await;
        let mut wills = guard(watcher.subscribe("will2/#", QoS::AtLeastOnce))
            .await
            .unwrap();
        for (id, with_will) in [("quiet", false), ("loud", true)] {
            if with_will && version == ProtocolVersion::V311 {
                continue;
            }
            let will = Will::new(format!("will2/{id}").into(), Bytes::from_static(b"w"));
            let (c, _) = guard(Client::connect(options(&broker, version, id).will(will)))
                .await
                .unwrap();
            if with_will {
                guard(c.disconnect_with(
                    DisconnectReasonCode::DisconnectWithWillMessage,
                    DisconnectProperties::default(),
                ))
                .await
                .unwrap();
            } else {
                guard(c.disconnect()).await.unwrap();
            }
        }
        // A marker published after both: the first message seen tells which wills came.
        guard(watcher.publish("will2/marker", "m").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        let first = guard(wills.next()).await.unwrap();
        if version == ProtocolVersion::V5 {
            assert_eq!(first.topic, "will2/loud");
            assert_eq!(guard(wills.next()).await.unwrap().topic, "will2/marker");
        } else {
            assert_eq!(first.topic, "will2/marker");
        }
        guard(watcher.disconnect()).await.unwrap();
    }
}

// v5 PUBLISH properties travel end to end (v5:MQTT-3.3.2-20: content type
// unaltered); the subscription identifier the client chose routes messages.
// v5:MQTT-3.3.4-3: the broker sends the subscription identifier with the message.
#[tokio::test]
async fn v5_properties_and_subscription_identifiers() {
    let broker = Mosquitto::start();
    let client = connect(&broker, ProtocolVersion::V5, "props").await;
    let mut narrow = guard(client.subscribe("p/a", QoS::AtLeastOnce))
        .await
        .unwrap();
    let mut wide = guard(client.subscribe("p/#", QoS::AtLeastOnce))
        .await
        .unwrap();
    let properties = PublishProperties {
        content_type: Some("application/json".into()),
        response_topic: Some("p/reply".into()),
        correlation_data: Some(Bytes::from_static(b"c1")),
        user_properties: vec![("k".into(), "v".into())],
        message_expiry_interval: Some(60),
        ..PublishProperties::default()
    };
    guard(
        client
            .publish("p/a", "{}")
            .qos(QoS::AtLeastOnce)
            .properties(properties),
    )
    .await
    .unwrap();
    let a = guard(narrow.next()).await.unwrap();
    let b = guard(wide.next()).await.unwrap();
    for m in [&a, &b] {
        assert_eq!(
            m.properties.content_type.as_deref(),
            Some("application/json")
        );
        assert_eq!(m.properties.response_topic.as_deref(), Some("p/reply"));
        assert_eq!(m.properties.correlation_data.as_deref(), Some(&b"c1"[..]));
        assert_eq!(m.properties.user_properties.len(), 1);
        // mosquitto sends one copy per matching subscription, each with its identifier.
        assert_eq!(m.properties.subscription_identifiers.len(), 1);
    }
    // p/b only matches the wide stream.
    guard(client.publish("p/b", "x").qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    let m = guard(wide.next()).await.unwrap();
    assert_eq!(m.topic, "p/b");
    assert_eq!(m.properties.subscription_identifiers.len(), 1);
    guard(client.disconnect()).await.unwrap();
    assert!(guard(narrow.next()).await.is_none());
}

// v3: no identifiers, messages are routed by filter matching; the catch-all
// stream sees everything; dropping a stream unsubscribes.
#[tokio::test]
async fn routing_catch_all_and_unsubscribe_on_drop() {
    let broker = Mosquitto::start();
    for version in VERSIONS {
        let client = connect(&broker, version, "routing").await;
        let mut all = guard(client.messages()).await.unwrap();
        let mut a = guard(client.subscribe("r/a", QoS::AtLeastOnce))
            .await
            .unwrap();
        let b = guard(client.subscribe("r/b", QoS::AtLeastOnce))
            .await
            .unwrap();
        guard(client.publish("r/b", "1").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        guard(client.publish("r/a", "2").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        assert_eq!(guard(a.next()).await.unwrap().payload, "2");
        assert_eq!(guard(all.next()).await.unwrap().payload, "1");
        assert_eq!(guard(all.next()).await.unwrap().payload, "2");
        // Dropping `b` unsubscribes r/b: the broker stops sending it.
        drop(b);
        // The UNSUBSCRIBE goes out before the next command is served (the
        // drop notice is queued first), so r/b is not delivered below.
        guard(client.publish("r/a", "sync").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        guard(client.publish("r/b", "3").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        guard(client.publish("r/a", "4").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        assert_eq!(guard(all.next()).await.unwrap().payload, "sync");
        assert_eq!(guard(all.next()).await.unwrap().payload, "4");
        guard(client.disconnect()).await.unwrap();
    }
}

// A filter with a misplaced wildcard is refused before anything is sent.
#[tokio::test]
async fn invalid_filters_and_topics_are_typed_errors() {
    let broker = Mosquitto::start();
    let client = connect(&broker, ProtocolVersion::V5, "invalid").await;
    assert!(matches!(
        guard(client.subscribe("a/#/b", QoS::AtMostOnce)).await,
        Err(Error::InvalidTopic(_))
    ));
    // MQTT-3.3.2-2: no wildcard in a topic name.
    assert!(matches!(
        guard(client.publish("a/+", "x")).await,
        Err(Error::InvalidTopic(_))
    ));
    guard(client.disconnect()).await.unwrap();
    // MQTT 3.1.1 has no subscription options beyond QoS: refused up front,
    // and the connection stays usable.
    let v3 = connect(&broker, ProtocolVersion::V311, "invalid3").await;
    let no_local = SubscriptionOptions {
        no_local: true,
        ..SubscriptionOptions::new(QoS::AtLeastOnce)
    };
    let refused =
        guard(v3.subscribe_with(vec![("x".into(), no_local)], SubscribeProperties::default()))
            .await;
    assert!(
        matches!(refused, Err(Error::InvalidOptions(_))),
        "{refused:?}"
    );
    let mut ok = guard(v3.subscribe("x", QoS::AtLeastOnce)).await.unwrap();
    guard(v3.publish("x", "still here").qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    assert_eq!(guard(ok.next()).await.unwrap().payload, "still here");
    guard(v3.disconnect()).await.unwrap();
}

// Every handle dropped: the task disconnects normally (the will is not sent).
#[tokio::test]
async fn dropping_every_handle_disconnects() {
    let broker = Mosquitto::start();
    let watcher = connect(&broker, ProtocolVersion::V5, "w3").await;
    let mut wills = guard(watcher.subscribe("will3/#", QoS::AtLeastOnce))
        .await
        .unwrap();
    let will = Will::new("will3/x".into(), Bytes::from_static(b"w"));
    let (c, _) = guard(Client::connect(
        options(&broker, ProtocolVersion::V5, "w3c").will(will),
    ))
    .await
    .unwrap();
    let clone = c.clone();
    drop(c);
    drop(clone);
    // Reconnecting with the same id would take over; instead prove the will
    // was not sent by a marker that arrives first.
    let (again, _) = guard(Client::connect(options(
        &broker,
        ProtocolVersion::V5,
        "w3c",
    )))
    .await
    .unwrap();
    guard(watcher.publish("will3/marker", "m").qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    assert_eq!(guard(wills.next()).await.unwrap().topic, "will3/marker");
    guard(again.disconnect()).await.unwrap();
    guard(watcher.disconnect()).await.unwrap();
}

#[tokio::test]
async fn publish_outcome_carries_the_reason_code() {
    let broker = Mosquitto::start();
    let client = connect(&broker, ProtocolVersion::V5, "rc").await;
    let outcome = guard(client.publish("nobody/listens", "x").qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    // mosquitto answers 0x10 No matching subscribers or 0x00.
    assert!(matches!(
        outcome.reason_code,
        ReasonCode::Success | ReasonCode::NoMatchingSubscribers
    ));
    guard(client.disconnect()).await.unwrap();
}

// v5:MQTT-3.1.2-24 v5:MQTT-3.1.2-25: the client announces its Maximum Packet
// Size; the broker drops what would exceed it and sends the rest.
#[tokio::test]
async fn v5_maximum_packet_size_is_announced() {
    let broker = Mosquitto::start();
    let (small, _) = guard(Client::connect(
        options(&broker, ProtocolVersion::V5, "small").maximum_packet_size(128),
    ))
    .await
    .unwrap();
    let mut stream = guard(small.subscribe("size/#", QoS::AtLeastOnce))
        .await
        .unwrap();
    let publisher = connect(&broker, ProtocolVersion::V5, "big").await;
    guard(
        publisher
            .publish("size/big", vec![b'x'; 1000])
            .qos(QoS::AtLeastOnce),
    )
    .await
    .unwrap();
    guard(
        publisher
            .publish("size/small", "fits")
            .qos(QoS::AtLeastOnce),
    )
    .await
    .unwrap();
    let m = guard(stream.next()).await.unwrap();
    assert_eq!(m.topic, "size/small");
    guard(small.disconnect()).await.unwrap();
    guard(publisher.disconnect()).await.unwrap();
}

// Two streams on the same filter share the broker's one subscription (the
// second SUBSCRIBE replaces the first, v5:MQTT-3.8.4-3 v3:MQTT-3.8.4-3): both
// receive, and after either is dropped the other still does.
#[tokio::test]
async fn streams_with_the_same_filter_share_the_subscription() {
    let broker = Mosquitto::start();
    for version in VERSIONS {
        let client = connect(&broker, version, "twins").await;
        let mut first = guard(client.subscribe("twins/+", QoS::AtLeastOnce))
            .await
            .unwrap();
        let mut second = guard(client.subscribe("twins/+", QoS::AtLeastOnce))
            .await
            .unwrap();
        guard(client.publish("twins/a", "1").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        assert_eq!(guard(first.next()).await.unwrap().payload, "1");
        assert_eq!(guard(second.next()).await.unwrap().payload, "1");
        drop(second);
        guard(client.publish("twins/a", "2").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        assert_eq!(guard(first.next()).await.unwrap().payload, "2");
        guard(client.disconnect()).await.unwrap();
    }
}

/// A persistent session `{name}-keeper` subscribed to `{name}/#` that went
/// away, and `n` QoS 1 messages to `{name}/x` (payloads "0", "1", ...)
/// queued for it meanwhile: its options, and the publisher.
async fn queued_while_away(
    broker: &Mosquitto,
    version: ProtocolVersion,
    name: &str,
    n: usize,
) -> (ConnectOptions, Client) {
    let options = options(broker, version, &format!("{name}-keeper")).clean_start(false);
    let persistent = if version == ProtocolVersion::V5 {
        options.session_expiry_interval(300)
    } else {
        options
    };
    let (client, _) = guard(Client::connect(persistent.clone())).await.unwrap();
    let stream = guard(client.subscribe(&format!("{name}/#"), QoS::AtLeastOnce))
        .await
        .unwrap();
    // Dropping the client without dropping the stream first keeps the
    // subscription: the disconnect goes out before the UNSUBSCRIBE.
    guard(client.disconnect()).await.unwrap();
    drop(stream);
    let publisher = connect(broker, version, &format!("{name}-filler")).await;
    for i in 0..n {
        guard(
            publisher
                .publish(format!("{name}/x"), i.to_string())
                .qos(QoS::AtLeastOnce),
        )
        .await
        .unwrap();
    }
    (persistent, publisher)
}

// MQTT-4.4.0-1 (a resumed session's messages are sent again): with plain
// `connect`, the queue of a resumed session, which arrives before any stream
// wants it, goes to the first subscription stream whose filter matches (up to
// a stream's capacity), in order. It was acknowledged and kept for a
// `messages()` stream only, so a consumer that subscribed after connecting
// lost it.
#[tokio::test]
async fn a_resumed_queue_goes_to_the_first_matching_subscription() {
    let broker = Mosquitto::start();
    for version in VERSIONS {
        let (persistent, publisher) = queued_while_away(&broker, version, "durable", 100).await;
        let (client, _) = guard(Client::connect(persistent)).await.unwrap();
        // The queue comes right after CONNACK, so before this SUBACK: every
        // message of it has arrived, for no stream, when this returns.
        let _other = guard(client.subscribe("other/#", QoS::AtLeastOnce))
            .await
            .unwrap();
        let mut stream = guard(client.subscribe("durable/#", QoS::AtLeastOnce))
            .await
            .unwrap();
        for i in 0..100 {
            let m = guard(stream.next()).await.unwrap();
            assert_eq!(m.payload, i.to_string(), "{version:?}");
        }
        guard(client.disconnect()).await.unwrap();
        guard(publisher.disconnect()).await.unwrap();
    }
}

// MQTT-4.4.0-1 (a resumed session's messages are sent again), v5:MQTT-3.1.2-4
// / v3:MQTT-3.1.2-4 (Clean Start 0 resumes the session): with
// `connect_with_messages`, the whole queue of a resumed session arrives,
// more than a stream's capacity, in order; messages a subscription stream
// takes do not also come to it.
#[tokio::test]
async fn connect_with_messages_gets_the_whole_queue_of_a_resumed_session() {
    let broker = Mosquitto::start();
    for version in VERSIONS {
        let (persistent, publisher) = queued_while_away(&broker, version, "q", 300).await;
        let (client, connack, mut leftovers) =
            guard(Client::connect_with_messages(persistent.clone()))
                .await
                .unwrap();
        // MQTT 3.1 has no Session Present flag: the queue comes all the same.
        assert!(
            connack.session_present || version == ProtocolVersion::V31,
            "{version:?}"
        );
        for i in 0..300 {
            let m = guard(leftovers.next()).await.unwrap();
            assert_eq!(m.payload, i.to_string(), "{version:?}");
        }
        let mut other = guard(client.subscribe("o/#", QoS::AtLeastOnce))
            .await
            .unwrap();
        guard(publisher.publish("o/1", "routed").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        guard(publisher.publish("q/x", "left").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        assert_eq!(guard(other.next()).await.unwrap().payload, "routed");
        assert_eq!(
            guard(leftovers.next()).await.unwrap().payload,
            "left",
            "{version:?}"
        );
        guard(client.disconnect()).await.unwrap();
        guard(publisher.disconnect()).await.unwrap();
    }
}

// A 3.1.1 broker cannot announce its Maximum Packet Size, and mosquitto
// closes the connection on a packet over it (v5:MQTT-3.2.2-15 is the 5.0
// rule). A QoS 1 message over it was sent again at every reconnection and
// never completed; with `maximum_outgoing_packet_size` the publish fails at
// once, and the connection carries on.
#[tokio::test]
async fn the_outgoing_packet_size_cap_refuses_what_the_broker_would_not_take() {
    let broker = Mosquitto::with_extra(common::Listener::Tcp, true, "max_packet_size 1000\n");
    for version in VERSIONS {
        let options = options(&broker, version, "capped").maximum_outgoing_packet_size(1000);
        let (client, _) = guard(Client::connect(options)).await.unwrap();
        let mut stream = guard(client.subscribe("capped/#", QoS::AtLeastOnce))
            .await
            .unwrap();
        let err = guard(
            client
                .publish("capped/big", vec![b'x'; 2000])
                .qos(QoS::AtLeastOnce),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Session(fulmar_client::SessionError::Limit(
                    fulmar_client::LimitExceeded::PacketTooLarge { max: 1000, .. }
                ))
            ),
            "{version:?}: {err:?}"
        );
        guard(client.publish("capped/small", "ok").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        assert_eq!(guard(stream.next()).await.unwrap().payload, "ok");
        guard(client.disconnect()).await.unwrap();
    }
}

// A 3.1.1 broker cannot know the client's Maximum Packet Size either. A
// message over it closed the connection unacknowledged, and the broker sent
// it first again on every connection of the session: the client reconnected
// in a loop and nothing behind it ever arrived. Now the client acknowledges
// what it drops before it closes (v3:MQTT-4.3.2-2 v3:MQTT-4.3.3-2; as a 5.0
// broker that knew the limit would have discarded it and completed its flow,
// v5:MQTT-3.1.2-25), reconnects, and the session goes on.
#[tokio::test]
async fn an_inbound_message_over_the_maximum_packet_size_is_dropped_under_v3() {
    let broker = Mosquitto::start();
    for version in [ProtocolVersion::V31, ProtocolVersion::V311] {
        let options = ConnectOptions::new("127.0.0.1", broker.port)
            .protocol_version(version)
            .client_id(format!("small-{version:?}"))
            .clean_start(false)
            .maximum_packet_size(1000)
            .reconnect(Reconnect::exponential(
                Duration::from_millis(5),
                Duration::from_millis(50),
            ));
        let (client, _) = guard(Client::connect(options)).await.unwrap();
        let publisher = connect(&broker, version, "big-publisher").await;
        for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let filter = format!("small/{}/#", qos.as_u8());
            let mut stream = guard(client.subscribe(&filter, qos)).await.unwrap();
            let topic = format!("small/{}/x", qos.as_u8());
            for payload in [
                Bytes::from("before"),
                vec![b'x'; 2000].into(),
                "after".into(),
            ] {
                guard(publisher.publish(topic.as_str(), payload).qos(qos))
                    .await
                    .unwrap();
            }
            assert_eq!(guard(stream.next()).await.unwrap().payload, "before");
            assert_eq!(
                guard(stream.next()).await.unwrap().payload,
                "after",
                "{version:?} {qos:?}"
            );
            let last = client.last_disconnection().unwrap();
            assert!(
                last.error
                    .to_string()
                    .contains("exceeds the maximum packet size"),
                "{last:?}"
            );
            guard(stream.unsubscribe()).await.unwrap();
        }
        guard(publisher.disconnect()).await.unwrap();
        guard(client.disconnect()).await.unwrap();
    }
}

/// Publishes, over a raw 5.0 connection, a QoS 1 message to `topic` with the
/// Response Topic `a/#`, which MQTT 5.0 forbids (v5:MQTT-3.3.2-14) and
/// mosquitto forwards all the same (v5:MQTT-3.3.2-15: unaltered).
async fn publish_with_a_wildcard_response_topic(broker: &Mosquitto, topic: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(broker.addr()).await.unwrap();
    // CONNECT: "MQTT" 5, Clean Start, keep alive 60, no properties, id "raw".
    let connect = [
        0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x00, 0x00, 0x03,
        b'r', b'a', b'w',
    ];
    socket.write_all(&connect).await.unwrap();
    let mut connack = [0u8; 64];
    let n = guard(socket.read(&mut connack)).await.unwrap();
    assert!(
        n >= 4 && connack[0] == 0x20 && connack[3] == 0,
        "{:?}",
        &connack[..n]
    );
    let topic = topic.as_bytes();
    let properties = [0x08, 0x00, 0x03, b'a', b'/', b'#'];
    let mut publish = vec![0x32, 0];
    publish.extend_from_slice(&u16::try_from(topic.len()).unwrap().to_be_bytes());
    publish.extend_from_slice(topic);
    publish.extend_from_slice(&[0x00, 0x01, 0x06]);
    publish.extend_from_slice(&properties);
    publish.extend_from_slice(b"bad");
    publish[1] = u8::try_from(publish.len() - 2).unwrap();
    socket.write_all(&publish).await.unwrap();
    // Its PUBACK: mosquitto took it.
    let mut puback = [0u8; 4];
    guard(socket.read_exact(&mut puback)).await.unwrap();
    assert_eq!(puback[0], 0x40);
    socket.write_all(&[0xE0, 0x00]).await.unwrap();
}

// A client that refuses a PUBLISH it received (here a Response Topic with a
// wildcard, v5:MQTT-3.3.2-14, which mosquitto forwarded from another client)
// closes the connection (MQTT 5.0 section 4.13.1). It used to close without
// acknowledging it, and the broker sent it first again on every connection
// of the session: the client reconnected about 50 times a second and
// nothing behind it ever arrived (paho takes the message). Now it answers
// PUBACK 0x80 first (v5:MQTT-4.3.2-4, a failure code as in section 4.13.2),
// reconnects, and the session goes on.
#[tokio::test]
async fn v5_a_refused_inbound_publish_is_acknowledged_and_the_session_goes_on() {
    let broker = Mosquitto::start();
    let options = ConnectOptions::new("127.0.0.1", broker.port)
        .client_id("refuser")
        .clean_start(false)
        .session_expiry_interval(300)
        .reconnect(Reconnect::exponential(
            Duration::from_millis(5),
            Duration::from_millis(50),
        ));
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    let mut stream = guard(client.subscribe("refused/#", QoS::AtLeastOnce))
        .await
        .unwrap();
    let publisher = connect(&broker, ProtocolVersion::V5, "refused-publisher").await;
    guard(
        publisher
            .publish("refused/x", "before")
            .qos(QoS::AtLeastOnce),
    )
    .await
    .unwrap();
    publish_with_a_wildcard_response_topic(&broker, "refused/x").await;
    guard(
        publisher
            .publish("refused/x", "after")
            .qos(QoS::AtLeastOnce),
    )
    .await
    .unwrap();
    assert_eq!(guard(stream.next()).await.unwrap().payload, "before");
    assert_eq!(guard(stream.next()).await.unwrap().payload, "after");
    let last = client.last_disconnection().unwrap();
    assert!(
        last.error.to_string().contains("response topic"),
        "{last:?}"
    );
    guard(publisher.disconnect()).await.unwrap();
    guard(client.disconnect()).await.unwrap();
}
