//! A listener's mount point (`Listener::mount_point`, mosquitto's
//! `mount_point`): its clients' topics and filters get the prefix, what is
//! sent to them loses it; the authorizer, the events, the retained messages
//! and the sessions see full topics. mosquitto's own behaviour is the
//! reference (no spec statement covers mount points).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ProtocolVersion::{V5, V311};
use common::{Peer, wait_until};
use fulmar_broker::{
    Authorizer, Broker, BrokerBuilder, BrokerError, BrokerEvent, BrokerHandle, ClientInfo, Listener,
};
use fulmar_codec::{
    Connect, MqttString, Packet, PacketId, ProtocolVersion, PubAckReasonCode, QoS,
    SubAckReasonCode, SubscriptionOptions, Unsubscribe, Will,
};

const PREFIX: &str = "tenant1/";

/// A broker from `builder` with a plain listener (first address) and one
/// with the mount point `prefix` (second).
async fn start_mounted(
    builder: BrokerBuilder,
    prefix: &str,
) -> (BrokerHandle, SocketAddr, SocketAddr) {
    let broker = builder
        .tcp_listener("127.0.0.1:0")
        .listener(Listener::tcp("127.0.0.1:0").mount_point(prefix))
        .start()
        .await
        .unwrap();
    let addrs = broker.local_addrs().to_vec();
    (broker, addrs[0], addrs[1])
}

async fn start() -> (BrokerHandle, SocketAddr, SocketAddr) {
    start_mounted(Broker::builder(), PREFIX).await
}

fn connect(version: ProtocolVersion, id: &str) -> Connect {
    let mut connect = Connect::new(version, MqttString::from(id.to_owned()));
    connect.keep_alive = 0;
    connect
}

/// The next PUBLISH's topic and payload; a QoS 1 one is acknowledged.
async fn next(peer: &mut Peer) -> (String, String) {
    let p = peer.recv_publish().await;
    if let Some(id) = p.packet_id {
        peer.send(Packet::PubAck(fulmar_codec::PubAck::new(id)))
            .await;
    }
    (
        p.topic.to_string(),
        String::from_utf8(p.payload.to_vec()).unwrap(),
    )
}

fn topic(t: &str, payload: &str) -> (String, String) {
    (t.to_owned(), payload.to_owned())
}

/// Publishes at QoS 1 and waits for the PUBACK.
async fn publish_acked(
    peer: &mut Peer,
    t: &str,
    payload: &'static str,
    retain: bool,
) -> PubAckReasonCode {
    let mut p = common::publish(t, payload, QoS::AtLeastOnce);
    p.retain = retain;
    peer.send(p).await;
    loop {
        match peer.recv().await {
            Packet::PubAck(ack) => return ack.reason_code,
            Packet::Publish(p) => {
                if let Some(id) = p.packet_id {
                    peer.send(Packet::PubAck(fulmar_codec::PubAck::new(id)))
                        .await;
                }
            }
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
}

// (mount point, no spec statement)
#[tokio::test]
async fn a_mounted_client_publishes_under_the_prefix() {
    let (broker, plain, mounted) = start().await;
    for version in [V5, V311] {
        let mut watcher = Peer::connect(plain, version, "watcher").await;
        watcher.sub(1, "#", QoS::AtLeastOnce).await;
        let mut device = Peer::connect(mounted, version, "device").await;
        assert_eq!(
            publish_acked(&mut device, "a/b", "one", false).await,
            PubAckReasonCode::Success
        );
        device
            .send(common::publish("c", "two", QoS::AtMostOnce))
            .await;
        assert_eq!(
            next(&mut watcher).await,
            topic("tenant1/a/b", "one"),
            "{version:?}"
        );
        assert_eq!(
            next(&mut watcher).await,
            topic("tenant1/c", "two"),
            "{version:?}"
        );
        device.disconnect().await;
        watcher.disconnect().await;
    }
    broker.shutdown().await;
}

// (mount point, no spec statement)
#[tokio::test]
async fn a_mounted_client_sees_only_the_topics_under_the_prefix_without_it() {
    let (broker, plain, mounted) = start().await;
    for version in [V5, V311] {
        let mut device = Peer::connect(mounted, version, "device").await;
        device.sub(1, "x", QoS::AtLeastOnce).await;
        device.sub(2, "#", QoS::AtMostOnce).await;
        let mut app = Peer::connect(plain, V5, "app").await;
        // Not under the prefix: never sent to the device, even through `#`.
        publish_acked(&mut app, "other/x", "no", false).await;
        publish_acked(&mut app, "x", "no", false).await;
        // The prefix alone would leave no topic name: not sent either.
        publish_acked(&mut app, "tenant1/", "no", false).await;
        publish_acked(&mut app, "tenant1/x", "yes", false).await;
        // Matched by both subscriptions: one copy (5.0) or two (3.1.1 may
        // send one per subscription), each without the prefix.
        let first = next(&mut device).await;
        assert_eq!(first, topic("x", "yes"), "{version:?}");
        publish_acked(&mut app, "tenant1/deeper/y", "last", false).await;
        let mut got = next(&mut device).await;
        if got.0 == "x" {
            got = next(&mut device).await;
        }
        assert_eq!(got, topic("deeper/y", "last"), "{version:?}");
        app.disconnect().await;
        device.disconnect().await;
    }
    broker.shutdown().await;
}

// (mount point, no spec statement)
#[tokio::test]
async fn retained_messages_cross_the_mount_point() {
    let (broker, plain, mounted) = start().await;
    let mut app = Peer::connect(plain, V5, "app").await;
    publish_acked(&mut app, "tenant1/from/app", "a", true).await;
    publish_acked(&mut app, "other/r", "o", true).await;
    let mut device = Peer::connect(mounted, V311, "device").await;
    publish_acked(&mut device, "from/device", "d", true).await;
    device.disconnect().await;
    for version in [V5, V311] {
        // A mounted subscriber gets both, stripped, and not `other/r`.
        let mut device = Peer::connect(mounted, version, "reader").await;
        device.sub(1, "#", QoS::AtMostOnce).await;
        let got: BTreeSet<_> = [next(&mut device).await, next(&mut device).await].into();
        assert_eq!(
            got,
            [topic("from/app", "a"), topic("from/device", "d")].into(),
            "{version:?}"
        );
        device.sub(2, "other/#", QoS::AtMostOnce).await;
        device.disconnect().await;
        // A plain one sees the device's with the prefix.
        let mut reader = Peer::connect(plain, version, "plain").await;
        reader.sub(1, "tenant1/#", QoS::AtMostOnce).await;
        let got: BTreeSet<_> = [next(&mut reader).await, next(&mut reader).await].into();
        assert_eq!(
            got,
            [
                topic("tenant1/from/app", "a"),
                topic("tenant1/from/device", "d")
            ]
            .into(),
            "{version:?}"
        );
        reader.disconnect().await;
    }
    // Kept with their full topics.
    let kept: BTreeSet<String> = broker
        .retained_messages()
        .iter()
        .map(|p| p.topic.to_string())
        .collect();
    assert_eq!(
        kept,
        ["other/r", "tenant1/from/app", "tenant1/from/device"]
            .map(String::from)
            .into()
    );
    app.disconnect().await;
    broker.shutdown().await;
}

// (mount point, no spec statement)
#[tokio::test]
async fn a_mounted_clients_will_goes_under_the_prefix() {
    let (broker, plain, mounted) = start().await;
    for version in [V5, V311] {
        let mut watcher = Peer::connect(plain, V5, "watcher").await;
        watcher.sub(1, "tenant1/status/#", QoS::AtLeastOnce).await;
        let mut c = connect(version, "device");
        c.will = Some(Will::new(
            MqttString::from("status/device"),
            bytes::Bytes::from_static(b"gone"),
        ));
        let (device, ack) = Peer::connect_with(mounted, c).await;
        assert!(!ack.reason_code.is_error());
        // Closed without DISCONNECT: the will is published.
        drop(device);
        assert_eq!(
            next(&mut watcher).await,
            topic("tenant1/status/device", "gone"),
            "{version:?}"
        );
        watcher.disconnect().await;
    }
    broker.shutdown().await;
}

// v5:MQTT-4.8.2-2 (the group's messages go to one member each)
#[tokio::test]
async fn shared_subscriptions_share_across_the_mount_point() {
    let (broker, plain, mounted) = start().await;
    let mut device = Peer::connect(mounted, V5, "device").await;
    device.sub(1, "$share/g/x", QoS::AtMostOnce).await;
    let mut app = Peer::connect(plain, V311, "app").await;
    app.sub(1, "$share/g/tenant1/x", QoS::AtMostOnce).await;
    let mut publisher = Peer::connect(plain, V5, "publisher").await;
    const N: usize = 40;
    for _ in 0..N {
        publish_acked(&mut publisher, "tenant1/x", "m", false).await;
    }
    publish_acked(&mut publisher, "tenant1/end", "end", false).await;
    // One group: N messages in all, each member's with its own topic.
    let mut total = 0;
    let (mut to_device, mut to_app) = (0, 0);
    while total < N {
        tokio::select! {
            p = device.recv_publish() => {
                assert_eq!(p.topic.as_str(), "x");
                to_device += 1;
            }
            p = app.recv_publish() => {
                assert_eq!(p.topic.as_str(), "tenant1/x");
                to_app += 1;
            }
        }
        total += 1;
    }
    assert_eq!(to_device + to_app, N);
    // Nothing more: with two groups each would have had N.
    device.sub(2, "end", QoS::AtMostOnce).await;
    app.sub(2, "tenant1/end", QoS::AtMostOnce).await;
    publish_acked(&mut publisher, "tenant1/end", "end", false).await;
    assert_eq!(next(&mut device).await, topic("end", "end"));
    assert_eq!(next(&mut app).await, topic("tenant1/end", "end"));
    // Unsubscribing through the mount point removes the prefixed filter.
    let unsubscribe = Unsubscribe::new(
        PacketId::new(3).unwrap(),
        vec![MqttString::from("$share/g/x")],
    );
    device.send(unsubscribe).await;
    match device.recv().await {
        Packet::UnsubAck(ack) => assert!(!ack.reason_codes[0].is_error(), "{ack:?}"),
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    for _ in 0..5 {
        publish_acked(&mut publisher, "tenant1/x", "m", false).await;
    }
    for _ in 0..5 {
        assert_eq!(next(&mut app).await, topic("tenant1/x", "m"));
    }
    broker.shutdown().await;
}

/// Records what it is asked; denies `tenant1/secret`.
#[derive(Clone, Default)]
struct Recorder {
    asked: Arc<Mutex<Vec<String>>>,
}

#[async_trait::async_trait]
impl Authorizer for Recorder {
    async fn authorize_publish(&self, _client: &ClientInfo, topic: &str) -> bool {
        self.asked.lock().unwrap().push(format!("pub {topic}"));
        topic != "tenant1/secret"
    }

    async fn authorize_subscribe(&self, _client: &ClientInfo, filter: &str) -> bool {
        self.asked.lock().unwrap().push(format!("sub {filter}"));
        filter != "tenant1/secret"
    }
}

// (mount point, no spec statement)
#[tokio::test]
async fn the_authorizer_and_the_events_see_full_topics() {
    let recorder = Recorder::default();
    let (broker, _plain, mounted) =
        start_mounted(Broker::builder().authorizer(recorder.clone()), PREFIX).await;
    let mut events = broker.events();
    let mut c = connect(V5, "device");
    c.will = Some(Will::new(
        MqttString::from("w"),
        bytes::Bytes::from_static(b"x"),
    ));
    let (mut device, ack) = Peer::connect_with(mounted, c).await;
    assert!(!ack.reason_code.is_error());
    device.sub(1, "a/#", QoS::AtLeastOnce).await;
    device.sub(2, "$share/g/b", QoS::AtLeastOnce).await;
    let ack = device
        .subscribe(3, "secret", SubscriptionOptions::new(QoS::AtMostOnce))
        .await;
    assert_eq!(ack.reason_codes, vec![SubAckReasonCode::NotAuthorized]);
    assert!(!publish_acked(&mut device, "c", "x", false).await.is_error());
    assert_eq!(
        publish_acked(&mut device, "secret", "x", false).await,
        PubAckReasonCode::NotAuthorized
    );
    assert_eq!(
        *recorder.asked.lock().unwrap(),
        [
            "pub tenant1/w",
            "sub tenant1/a/#",
            "sub $share/g/tenant1/b",
            "sub tenant1/secret",
            "pub tenant1/c",
            "pub tenant1/secret",
        ]
    );
    let mut subscribed = Vec::new();
    while subscribed.len() < 2 {
        let event = tokio::time::timeout(common::GUARD, events.recv())
            .await
            .unwrap()
            .unwrap();
        if let BrokerEvent::Subscribed { filter, .. } = event {
            subscribed.push(filter);
        }
    }
    assert_eq!(subscribed, ["tenant1/a/#", "$share/g/tenant1/b"]);
    device.disconnect().await;
    broker.shutdown().await;
}

/// A message fanned out to plain and mounted subscribers: the shared
/// encoded headers serve the plain ones; a mounted one is never sent the
/// full topic from them.
// (mount point, no spec statement)
#[tokio::test]
async fn shared_encodings_are_not_sent_with_the_wrong_topic() {
    let (broker, plain, mounted) = start().await;
    let mut peers = Vec::new();
    for i in 0..6 {
        let version = if i % 3 == 0 { V311 } else { V5 };
        let (addr, filter, expected) = if i % 2 == 0 {
            (plain, "tenant1/f", "tenant1/f")
        } else {
            (mounted, "f", "f")
        };
        let mut peer = Peer::connect(addr, version, &format!("s{i}")).await;
        peer.sub(1, filter, QoS::AtMostOnce).await;
        peers.push((peer, expected));
    }
    let mut publisher = Peer::connect(plain, V5, "publisher").await;
    for _ in 0..20 {
        // Shared encodings are made for messages with properties.
        let mut p = common::publish("tenant1/f", "payload", QoS::AtMostOnce);
        p.properties.content_type = Some(MqttString::from("text/plain"));
        publisher.send(p).await;
    }
    for (peer, expected) in &mut peers {
        for _ in 0..20 {
            assert_eq!(next(peer).await, topic(expected, "payload"));
        }
    }
    assert!(broker.stats().messages_sent_preencoded > 0);
    broker.shutdown().await;
}

/// A session subscribed through one listener and resumed through the
/// other: its full filters stay, and what does not start with the prefix
/// is sent unchanged (as mosquitto sends it).
// (mount point, no spec statement)
#[tokio::test]
async fn a_session_resumed_through_the_other_listener() {
    let (broker, plain, mounted) = start().await;
    let resume = |addr| async move {
        let mut c = connect(V5, "roamer");
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(600);
        let (peer, ack) = Peer::connect_with(addr, c).await;
        assert!(!ack.reason_code.is_error());
        peer
    };
    let mut roamer = resume(mounted).await;
    roamer.sub(1, "x", QoS::AtLeastOnce).await;
    roamer.disconnect().await;
    // Through the plain listener: the full topic.
    let mut roamer = resume(plain).await;
    roamer.sub(2, "other/y", QoS::AtLeastOnce).await;
    let mut app = Peer::connect(plain, V5, "app").await;
    publish_acked(&mut app, "tenant1/x", "1", false).await;
    assert_eq!(next(&mut roamer).await, topic("tenant1/x", "1"));
    roamer.disconnect().await;
    // Queued while away, sent through the mount point: stripped, or
    // unchanged when not under the prefix.
    publish_acked(&mut app, "tenant1/x", "2", false).await;
    publish_acked(&mut app, "other/y", "3", false).await;
    let mut roamer = resume(mounted).await;
    assert_eq!(next(&mut roamer).await, topic("x", "2"));
    assert_eq!(next(&mut roamer).await, topic("other/y", "3"));
    roamer.disconnect().await;
    app.disconnect().await;
    broker.shutdown().await;
}

/// A mounted connection that hibernates and wakes keeps its mount point
/// (it is the listener's, reached through the connection's slot).
// (mount point, no spec statement)
#[tokio::test]
async fn the_mount_point_outlives_hibernation() {
    let builder = Broker::builder().hibernate_after(Some(Duration::from_millis(20)));
    let (broker, plain, mounted) = start_mounted(builder, PREFIX).await;
    let mut device = Peer::connect(mounted, V311, "device").await;
    device.sub(1, "in", QoS::AtLeastOnce).await;
    let mut app = Peer::connect(plain, V5, "app").await;
    app.sub(1, "tenant1/out", QoS::AtLeastOnce).await;
    for round in 0..3 {
        wait_until("both hibernate", || {
            broker.stats().connections_hibernating >= 2
        })
        .await;
        publish_acked(&mut app, "tenant1/in", "ping", false).await;
        assert_eq!(
            next(&mut device).await,
            topic("in", "ping"),
            "round {round}"
        );
        wait_until("both hibernate", || {
            broker.stats().connections_hibernating >= 2
        })
        .await;
        publish_acked(&mut device, "out", "pong", false).await;
        assert_eq!(
            next(&mut app).await,
            topic("tenant1/out", "pong"),
            "round {round}"
        );
    }
    broker.shutdown().await;
}

// (mount point, no spec statement)
#[tokio::test]
async fn topic_aliases_resolve_before_the_prefix() {
    let (broker, plain, mounted) = start().await;
    let mut watcher = Peer::connect(plain, V311, "watcher").await;
    watcher.sub(1, "#", QoS::AtMostOnce).await;
    let mut device = Peer::connect(mounted, V5, "device").await;
    let mut p = common::publish("a/b", "1", QoS::AtMostOnce);
    p.properties.topic_alias = std::num::NonZeroU16::new(1);
    device.send(p).await;
    let mut p = common::publish("", "2", QoS::AtMostOnce);
    p.properties.topic_alias = std::num::NonZeroU16::new(1);
    device.send(p).await;
    assert_eq!(next(&mut watcher).await, topic("tenant1/a/b", "1"));
    assert_eq!(next(&mut watcher).await, topic("tenant1/a/b", "2"));
    broker.shutdown().await;
}

/// mosquitto concatenates: `tenant1` and `a` make `tenant1a`.
// (mount point, no spec statement)
#[tokio::test]
async fn a_prefix_without_a_slash_is_concatenated() {
    let (broker, plain, mounted) = start_mounted(Broker::builder(), "tenant1").await;
    let mut watcher = Peer::connect(plain, V5, "watcher").await;
    watcher.sub(1, "#", QoS::AtMostOnce).await;
    let mut device = Peer::connect(mounted, V5, "device").await;
    device.sub(1, "b/#", QoS::AtMostOnce).await;
    publish_acked(&mut device, "a", "1", false).await;
    assert_eq!(next(&mut watcher).await, topic("tenant1a", "1"));
    publish_acked(&mut watcher, "tenant1b/c", "2", false).await;
    assert_eq!(next(&mut device).await, topic("b/c", "2"));
    broker.shutdown().await;
}

// (mount point, no spec statement)
#[tokio::test]
async fn an_invalid_mount_point_refuses_to_start() {
    for prefix in ["", "a/+/", "#", "tenant/#", "a\0b"] {
        let started = Broker::builder()
            .listener(Listener::tcp("127.0.0.1:0").mount_point(prefix))
            .start()
            .await;
        match started {
            Err(BrokerError::MountPoint { prefix: p, .. }) => assert_eq!(p, prefix),
            Err(other) => panic!("{prefix:?}: {other}"),
            Ok(broker) => {
                broker.shutdown().await;
                panic!("{prefix:?} accepted");
            }
        }
    }
}

// The client's Maximum Packet Size counts the topic it is sent, without
// the prefix: a message that fits only once shortened is delivered; one
// too large even then is not (and the next one still is).
// v5:MQTT-3.1.2-24 v5:MQTT-3.1.2-25
#[tokio::test]
async fn the_maximum_packet_size_counts_the_topic_as_sent() {
    let prefix = "a-tenant-with-a-rather-long-name/";
    let (broker, plain, mounted) = start_mounted(Broker::builder(), prefix).await;
    let mut c = connect(V5, "device");
    c.properties.maximum_packet_size = std::num::NonZeroU32::new(40);
    let (mut device, _) = common::Peer::connect_with(mounted, c).await;
    device.sub(1, "#", QoS::AtLeastOnce).await;
    let mut app = Peer::connect(plain, V5, "app").await;
    // 2 + 34 (full topic) + 2 + 1 + 20 = 59 bytes of body; 27 as sent.
    let fits = "f".repeat(20).leak();
    let full = format!("{prefix}x");
    assert_eq!(
        publish_acked(&mut app, &full, fits, false).await,
        PubAckReasonCode::Success
    );
    assert_eq!(next(&mut device).await, topic("x", fits));
    let too_large = "t".repeat(40).leak();
    publish_acked(&mut app, &full, too_large, false).await;
    publish_acked(&mut app, &format!("{prefix}y"), "last", false).await;
    assert_eq!(next(&mut device).await, topic("y", "last"));
    app.disconnect().await;
    device.disconnect().await;
    broker.shutdown().await;
}
