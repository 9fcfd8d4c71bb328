//! `Limits::max_queued_bytes` bounds what a session holds for a subscriber
//! in bytes at every QoS, offline and connected: a subscriber that stops
//! reading, or stays away, holds that much whatever the size of the messages
//! (before, QoS 1/2 were bounded by count alone: 1000 messages of 1 MB held
//! a gigabyte per subscriber).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::num::NonZeroU16;

use bytes::Bytes;
use common::{Peer, addr, start_with, wait_until};
use fulmar_broker::{Broker, Limits, OverloadPolicy};
use fulmar_codec::{
    Connect, MqttString, Packet, PacketId, ProtocolVersion::V5, PubAck, Publish, QoS,
};

const SIZE: usize = 16 * 1024;
const BOUND: usize = 4 * SIZE;

fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_queued_bytes = BOUND;
    limits
}

fn persistent(id: &str, receive_maximum: u16) -> Connect {
    let mut connect = Connect::new(V5, MqttString::from(id.to_owned()));
    connect.keep_alive = 0;
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(300);
    connect.properties.receive_maximum = NonZeroU16::new(receive_maximum);
    connect
}

async fn ack(peer: &mut Peer, publish: &Publish) {
    peer.send(PubAck::new(publish.packet_id.unwrap())).await;
}

// v5:MQTT-3.1.2-5 (messages kept for an absent session, up to the server's limits)
#[tokio::test]
async fn the_offline_queue_is_bounded_in_bytes() {
    let broker = start_with(Broker::builder().limits(limits())).await;
    let (mut sub, _) = Peer::connect_with(addr(&broker), persistent("away", 100)).await;
    sub.sub(1, "big/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    for i in 0..20 {
        broker
            .publish(
                &format!("big/{i}"),
                vec![b'x'; SIZE],
                QoS::AtLeastOnce,
                false,
            )
            .unwrap();
    }
    // Three of them (payload and topic) fit the bound; a fourth would go
    // over it by its topic.
    assert_eq!(broker.stats().dropped_messages, 17);
    let (mut sub, connack) = Peer::connect_with(addr(&broker), persistent("away", 100)).await;
    assert!(connack.session_present);
    broker
        .publish("big/end", "end", QoS::AtLeastOnce, false)
        .unwrap();
    let mut topics = Vec::new();
    loop {
        let p = sub.recv_publish().await;
        ack(&mut sub, &p).await;
        if p.topic == "big/end" {
            break;
        }
        topics.push(p.topic.as_str().to_owned());
    }
    assert_eq!(topics, ["big/0", "big/1", "big/2"]);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_holds_no_more_than_the_bound() {
    let broker = start_with(Broker::builder().limits(limits())).await;
    // One message in flight at a time, and it is not acknowledged.
    let (mut sub, _) = Peer::connect_with(addr(&broker), persistent("stuck", 1)).await;
    sub.sub(1, "big/#", QoS::AtLeastOnce).await;
    for i in 0..40 {
        broker
            .publish(
                &format!("big/{i}"),
                vec![b'x'; SIZE],
                QoS::AtLeastOnce,
                false,
            )
            .unwrap();
    }
    // At most: one in flight, the session's queue and the connection's
    // queue (each within the bound), one let into an empty queue each.
    let dropped = broker.stats().dropped_messages;
    let kept = 40 - dropped;
    assert!(
        kept <= 1 + 2 * (BOUND / SIZE + 1) as u64,
        "{kept} messages of {SIZE} bytes kept"
    );
    // What was kept arrives, in order, as the subscriber acknowledges.
    let mut last = None;
    for _ in 0..kept {
        let p = sub.recv_publish().await;
        let n: u32 = p.topic.as_str()["big/".len()..].parse().unwrap();
        assert!(last.is_none_or(|l| n > l), "{n} after {last:?}");
        last = Some(n);
        ack(&mut sub, &p).await;
    }
    // A QoS 0 message after the drain is delivered: nothing else is queued.
    broker
        .publish("big/end", "end", QoS::AtMostOnce, false)
        .unwrap();
    match sub.recv().await {
        Packet::Publish(p) => assert_eq!(p.topic, "big/end"),
        other => panic!("{other:?}"),
    }
    broker.shutdown().await;
}

/// A QoS 1 PUBLISH of `SIZE` bytes whose bulk is in a user property.
fn bulky(i: u16) -> Publish {
    let mut p = Publish::new(MqttString::from(format!("big/{i}")), Bytes::new());
    p.qos = QoS::AtLeastOnce;
    p.packet_id = PacketId::new(i + 1);
    p.properties
        .user_properties
        .push((MqttString::from("k"), MqttString::from("v".repeat(SIZE))));
    p
}

// The bound counts what a message holds (Publish::memory_size), not its
// payload alone: a message may carry its bulk in its properties.
#[tokio::test]
async fn the_bound_counts_properties_too() {
    let broker = start_with(Broker::builder().limits(limits())).await;
    let (mut sub, _) = Peer::connect_with(addr(&broker), persistent("props", 100)).await;
    sub.sub(1, "big/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let mut publisher = Peer::connect(addr(&broker), V5, "props-pub").await;
    for i in 0..20 {
        publisher.send(bulky(i)).await;
        assert!(matches!(publisher.recv().await, Packet::PubAck(_)));
    }
    // Three fit under the bound with their topic and key (one more would go over).
    assert_eq!(broker.stats().dropped_messages, 17);
    broker.shutdown().await;
}

/// A QoS 1 PUBLISH whose bulk is `n` empty user properties: 5 bytes each
/// on the wire, a pair of strings ([`Publish::USER_PROPERTY_SLOT`]) each in
/// memory, in every copy of the message.
fn hollow(i: u16, n: usize) -> Publish {
    let mut p = Publish::new(MqttString::from(format!("up/{i}")), Bytes::new());
    p.qos = QoS::AtLeastOnce;
    p.packet_id = PacketId::new(i + 1);
    p.properties.user_properties = vec![(MqttString::new(), MqttString::new()); n];
    p
}

// v5:MQTT-3.3.2-17 (user properties are forwarded, so every queued copy
// keeps them): the bound counts what an empty user property takes in
// memory, not its empty strings. Before, a PUBLISH of 200 000 of them (1 MB
// on the wire) counted as its topic alone: 144 such messages to a
// subscriber that stopped reading took the release broker from 13 MB to
// 1.9 GB of RSS under the default 16 MiB bound.
#[tokio::test]
async fn the_bound_counts_empty_user_properties() {
    let broker = start_with(Broker::builder().limits(limits())).await;
    let (mut sub, _) = Peer::connect_with(addr(&broker), persistent("hollow", 100)).await;
    sub.sub(1, "up/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let mut publisher = Peer::connect(addr(&broker), V5, "hollow-pub").await;
    // Each message a little under half the bound.
    let n = BOUND / (2 * Publish::USER_PROPERTY_SLOT) - 10;
    for i in 0..20 {
        publisher.send(hollow(i, n)).await;
        assert!(matches!(publisher.recv().await, Packet::PubAck(_)));
    }
    // Two fit under the bound, the other 18 are dropped (before: none).
    assert_eq!(broker.stats().dropped_messages, 18);
    let (mut sub, connack) = Peer::connect_with(addr(&broker), persistent("hollow", 100)).await;
    assert!(connack.session_present);
    for i in 0..2 {
        let p = sub.recv_publish().await;
        assert_eq!(p.topic.as_str(), format!("up/{i}"));
        assert_eq!(p.properties.user_properties.len(), n);
        ack(&mut sub, &p).await;
    }
    broker.shutdown().await;
}

// Under OverloadPolicy::Backpressure a message over the bound waits with its
// publisher instead of being dropped (the wait itself is checked by the unit
// test a_sender_waits_for_bytes_as_for_room): nothing is lost, all in order.
#[tokio::test]
async fn under_backpressure_the_bound_holds_the_publisher() {
    let mut limits = limits();
    limits.overload_policy = OverloadPolicy::Backpressure;
    let broker = start_with(Broker::builder().limits(limits)).await;
    let (mut sub, _) = Peer::connect_with(addr(&broker), persistent("held", 1)).await;
    sub.sub(1, "big/#", QoS::AtLeastOnce).await;
    let mut publisher = Peer::connect(addr(&broker), V5, "held-pub").await;
    for i in 0..40 {
        let mut p = Publish::new(
            MqttString::from(format!("big/{i}")),
            vec![b'x'; SIZE].into(),
        );
        p.qos = QoS::AtLeastOnce;
        p.packet_id = PacketId::new(i + 1);
        publisher.send(p).await;
    }
    // The subscriber takes nothing: its queues fill to the bound, and the
    // publisher is held.
    wait_until("publisher held", || broker.stats().blocked_publishers > 0).await;
    // All of it arrives once the subscriber acknowledges, in order, nothing dropped.
    for i in 0..40 {
        let p = sub.recv_publish().await;
        assert_eq!(p.topic.as_str(), format!("big/{i}"));
        sub.send(PubAck::new(p.packet_id.unwrap())).await;
    }
    for _ in 0..40 {
        assert!(matches!(publisher.recv().await, Packet::PubAck(_)));
    }
    assert_eq!(broker.stats().dropped_messages, 0);
    broker.shutdown().await;
}
