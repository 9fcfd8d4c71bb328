//! Retained messages sent at subscribe beyond what fits the session queue
//! at once: they follow as the queue drains, none is dropped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::{Peer, addr, start_with, wait_until};
use fulmar_broker::{Broker, BrokerHandle, Limits};
use fulmar_codec::{
    MqttString, Packet, PacketId, ProtocolVersion, ProtocolVersion::V5, ProtocolVersion::V311,
    PubAck, QoS, Subscribe, SubscriptionOptions,
};

/// A broker whose session queue holds `queued` messages, with `n` retained
/// QoS 1 messages on `prefix/t0` ...
async fn broker_with_retained(queued: usize, prefix: &str, n: usize) -> BrokerHandle {
    let mut limits = Limits::default();
    limits.max_queued_messages = queued;
    let broker = start_with(Broker::builder().limits(limits)).await;
    publish_retained(&broker, prefix, n);
    broker
}

fn publish_retained(broker: &BrokerHandle, prefix: &str, n: usize) {
    for i in 0..n {
        broker
            .publish(
                &format!("{prefix}/t{i}"),
                format!("m{i}"),
                QoS::AtLeastOnce,
                true,
            )
            .unwrap();
    }
}

/// Reads until `n` PUBLISH packets came (acknowledging QoS 1 ones at once
/// when `ack`), then checks with a PINGREQ that nothing else follows. Each
/// message must be retained at `qos` (but for a live one on `x/live`). Returns how often each topic came and
/// how many SUBACKs were read on the way.
async fn receive(
    peer: &mut Peer,
    n: usize,
    qos: QoS,
    ack: bool,
) -> (BTreeMap<String, usize>, usize) {
    let mut topics = BTreeMap::new();
    let mut subacks = 0;
    let mut got = 0;
    while got < n {
        match peer.recv().await {
            Packet::Publish(p) => {
                if p.topic.as_str() != "x/live" {
                    assert!(p.retain, "{p:?}");
                    assert_eq!(p.qos, qos, "{p:?}");
                }
                *topics.entry(p.topic.as_str().to_owned()).or_insert(0) += 1;
                if ack && let Some(id) = p.packet_id {
                    peer.send(PubAck::new(id)).await;
                }
                got += 1;
            }
            Packet::SubAck(_) => subacks += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    peer.send(Packet::PingReq).await;
    loop {
        match peer.recv().await {
            Packet::PingResp => break,
            Packet::SubAck(_) => subacks += 1,
            other => panic!("more than {n} messages: {other:?}"),
        }
    }
    (topics, subacks)
}

fn expected(prefix: &str, n: usize) -> BTreeMap<String, usize> {
    (0..n).map(|i| (format!("{prefix}/t{i}"), 1)).collect()
}

async fn all_retained_are_sent(version: ProtocolVersion, qos: QoS) {
    let broker = broker_with_retained(10, "x", 50).await;
    let mut peer = Peer::connect(addr(&broker), version, "fast").await;
    peer.sub(1, "x/#", qos).await;
    let (topics, _) = receive(&mut peer, 50, qos, true).await;
    assert_eq!(topics, expected("x", 50));
    assert_eq!(broker.stats().dropped_messages, 0);
    broker.shutdown().await;
}

// MQTT-3.3.1-9: every retained message matching the filter is sent, even
// beyond the session queue (max_queued_messages = 10, 50 retained).
#[tokio::test]
async fn v5_all_retained_messages_are_sent_qos0() {
    all_retained_are_sent(V5, QoS::AtMostOnce).await;
}

// MQTT-3.3.1-9
#[tokio::test]
async fn v5_all_retained_messages_are_sent_qos1() {
    all_retained_are_sent(V5, QoS::AtLeastOnce).await;
}

// v3:MQTT-3.3.1-6
#[tokio::test]
async fn v3_all_retained_messages_are_sent_qos0() {
    all_retained_are_sent(V311, QoS::AtMostOnce).await;
}

// v3:MQTT-3.3.1-6
#[tokio::test]
async fn v3_all_retained_messages_are_sent_qos1() {
    all_retained_are_sent(V311, QoS::AtLeastOnce).await;
}

// MQTT-3.3.1-9 v3:MQTT-3.3.1-6: a subscriber whose retained messages wait
// for its QoS 1 acknowledgements holds up no other subscriber's copies, and
// nothing is counted as dropped. A second SUBSCRIBE while some still wait
// gets its own retained messages after them; live messages come too.
#[tokio::test]
async fn retained_messages_waiting_for_one_subscriber_do_not_affect_another() {
    let broker = broker_with_retained(10, "x", 50).await;
    publish_retained(&broker, "y", 30);
    let mut slow = Peer::connect(addr(&broker), V5, "slow").await;
    slow.sub(1, "x/#", QoS::AtLeastOnce).await;
    // The first ones (what fits the queue), not acknowledged yet.
    let mut first = Vec::new();
    for _ in 0..10 {
        let p = slow.recv_publish().await;
        first.push((p.topic.as_str().to_owned(), p.packet_id.unwrap()));
    }
    let mut other = Peer::connect(addr(&broker), V311, "other").await;
    other.sub(1, "x/#", QoS::AtMostOnce).await;
    let (topics, _) = receive(&mut other, 50, QoS::AtMostOnce, false).await;
    assert_eq!(topics, expected("x", 50));

    // Appended to what still waits.
    slow.send(Subscribe::new(
        PacketId::new(2).unwrap(),
        vec![(
            MqttString::from("y/#"),
            SubscriptionOptions::new(QoS::AtLeastOnce),
        )],
    ))
    .await;
    // A live message routed meanwhile may come in between.
    broker
        .publish("x/live", "now", QoS::AtMostOnce, false)
        .unwrap();
    // Acknowledge the first ten now, then the rest as they come.
    for (_, id) in &first {
        slow.send(PubAck::new(*id)).await;
    }
    let (mut topics, subacks) = receive(&mut slow, 40 + 30 + 1, QoS::AtLeastOnce, true).await;
    assert_eq!(subacks, 1);
    for (topic, _) in first {
        *topics.entry(topic).or_insert(0) += 1;
    }
    let mut all = expected("x", 50);
    all.extend(expected("y", 30));
    all.insert("x/live".to_owned(), 1);
    assert_eq!(topics, all);
    assert_eq!(broker.stats().dropped_messages, 0);
    broker.shutdown().await;
}

// MQTT-3.3.1-9: one SUBSCRIBE repeating a filter a thousand times gets each
// retained message once (the repeats replace the subscription), however
// small the queue, and none is dropped.
#[tokio::test]
async fn a_repeated_filter_gets_each_retained_message_once() {
    let broker = broker_with_retained(5, "r", 20).await;
    let mut peer = Peer::connect(addr(&broker), V5, "many").await;
    let options = SubscriptionOptions::new(QoS::AtMostOnce);
    let filters = (0..1000)
        .map(|_| (MqttString::from("r/#"), options))
        .collect();
    peer.send(Subscribe::new(PacketId::new(1).unwrap(), filters))
        .await;
    let Packet::SubAck(ack) = peer.recv().await else {
        panic!("expected SUBACK")
    };
    assert_eq!(ack.reason_codes.len(), 1000);
    let (topics, _) = receive(&mut peer, 20, QoS::AtMostOnce, false).await;
    assert_eq!(topics, expected("r", 20));
    assert_eq!(broker.stats().dropped_messages, 0);
    broker.shutdown().await;
}

// MQTT-3.3.1-9: distinct filters each get their matching retained messages;
// what waits for room is bounded by max_retained_messages per connection,
// beyond which the rest is dropped and counted.
#[tokio::test]
async fn retained_messages_waiting_for_room_are_bounded() {
    let mut limits = Limits::default();
    limits.max_queued_messages = 5;
    limits.max_retained_messages = 20;
    let broker = start_with(Broker::builder().limits(limits)).await;
    publish_retained(&broker, "x", 20);
    let mut peer = Peer::connect(addr(&broker), V5, "three").await;
    let options = SubscriptionOptions::new(QoS::AtMostOnce);
    let filters = ["x/#", "#", "+/+"]
        .into_iter()
        .map(|f| (MqttString::from(f), options))
        .collect();
    peer.send(Subscribe::new(PacketId::new(1).unwrap(), filters))
        .await;
    assert!(matches!(peer.recv().await, Packet::SubAck(_)));
    // 60 matched: 5 fit the queue, 20 wait, 35 are dropped.
    let (topics, _) = receive(&mut peer, 25, QoS::AtMostOnce, false).await;
    assert_eq!(topics.values().sum::<usize>(), 25);
    wait_until("drops counted", || broker.stats().dropped_messages >= 35).await;
    assert_eq!(broker.stats().dropped_messages, 35);
    broker.shutdown().await;
}

// MQTT-3.10.4-2 (after UNSUBACK, no new message for the filter is added):
// the retained messages still waiting for room are not sent once the
// subscription is gone; only what the session had buffered may follow.
#[tokio::test]
async fn retained_messages_waiting_for_room_go_with_an_unsubscribe() {
    let broker = broker_with_retained(10, "x", 50).await;
    let mut connect = fulmar_codec::Connect::new(V5, MqttString::from("c"));
    connect.keep_alive = 0;
    connect.properties.receive_maximum = std::num::NonZeroU16::new(5);
    let (mut peer, _) = Peer::connect_with(addr(&broker), connect).await;
    peer.sub(1, "x/#", QoS::AtLeastOnce).await;
    let mut ids = Vec::new();
    while ids.len() < 5 {
        ids.push(peer.recv_publish().await.packet_id.unwrap());
    }
    let unsubscribe =
        fulmar_codec::Unsubscribe::new(PacketId::new(2).unwrap(), vec![MqttString::from("x/#")]);
    peer.send(unsubscribe).await;
    loop {
        match peer.recv().await {
            Packet::UnsubAck(_) => break,
            Packet::Publish(p) => ids.push(p.packet_id.unwrap()),
            other => panic!("{other:?}"),
        }
    }
    let mut total = ids.len();
    // Acknowledge everything that comes, until nothing has come for half a
    // second (the room each acknowledgement frees is what would let more
    // retained messages in).
    for id in ids.drain(..) {
        peer.send(PubAck::new(id)).await;
    }
    let quiet = std::time::Duration::from_millis(500);
    while let Ok(packet) = tokio::time::timeout(quiet, peer.recv()).await {
        let Packet::Publish(p) = packet else {
            panic!("{packet:?}")
        };
        total += 1;
        peer.send(PubAck::new(p.packet_id.unwrap())).await;
    }
    // 5 in flight and 10 in the session queue at most were buffered.
    assert!(
        total <= 15,
        "{total} messages, some added after the UNSUBACK"
    );
    broker.shutdown().await;
}
