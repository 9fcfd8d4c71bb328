//! Wills, persistent sessions, offline queues, expiry, and the limits the
//! broker respects towards a client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::num::{NonZeroU16, NonZeroU32};
use std::time::Duration;

use bytes::Bytes;
use common::{GUARD, Peer, addr, next, publish, start, start_with};
use fulmar_broker::{Broker, BrokerHandle};
use fulmar_codec::{
    Connect, Disconnect, DisconnectReasonCode, MqttString, Packet, PacketId,
    ProtocolVersion::{self, V5, V311},
    PubAck, PubRec, QoS, Will,
};

fn connect(version: ProtocolVersion, id: &str, clean: bool) -> Connect {
    let mut c = Connect::new(version, MqttString::from(id.to_owned()));
    c.keep_alive = 0;
    c.clean_start = clean;
    c
}

fn with_will(mut c: Connect, topic: &str, retain: bool) -> Connect {
    let mut will = Will::new(
        MqttString::from(topic.to_owned()),
        Bytes::from_static(b"bye"),
    );
    will.qos = QoS::AtLeastOnce;
    will.retain = retain;
    c.will = Some(will);
    c
}

/// Publishes a marker and asserts it is the next message of `sub`: nothing
/// else was routed to it before.
async fn assert_nothing_before_marker(
    broker: &BrokerHandle,
    sub: &mut fulmar_broker::Subscription,
) {
    let topic = sub.filter().filter().as_str().replace('#', "marker");
    broker
        .publish(&topic, "marker", QoS::AtMostOnce, false)
        .unwrap();
    let got = next(sub).await;
    assert_eq!(got.payload, "marker", "unexpected message on {}", got.topic);
}

/// Waits (bounded by the guard) until the broker holds `n` sessions.
async fn wait_sessions(broker: &BrokerHandle, n: usize) {
    tokio::time::timeout(GUARD, async {
        while broker.stats().sessions != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("session count not reached");
}

/// Waits (bounded by the guard) until no client is connected.
async fn wait_sessions_disconnected(broker: &BrokerHandle) {
    wait_connected(broker, 0).await;
}

/// Waits (bounded by the guard) until `n` clients are connected.
async fn wait_connected(broker: &BrokerHandle, n: u64) {
    tokio::time::timeout(GUARD, async {
        while broker.stats().clients_connected != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("connected clients count not reached");
}

// v3:MQTT-3.1.2-8 v3:MQTT-3.1.2-16 v5:MQTT-3.1.2-7 v5:MQTT-3.1.2-8 v5:MQTT-3.1.2-14
#[tokio::test]
async fn will_is_published_when_the_connection_drops() {
    let broker = start().await;
    let mut sub = broker.subscribe("will/#").unwrap();
    for version in [V311, V5] {
        let (peer, _) = Peer::connect_with(
            addr(&broker),
            with_will(connect(version, "w", true), "will/w", false),
        )
        .await;
        drop(peer);
        let got = next(&mut sub).await;
        assert_eq!(
            (got.topic.as_str(), &got.payload[..]),
            ("will/w", &b"bye"[..])
        );
        assert_eq!(got.qos, QoS::AtLeastOnce);
        assert!(!got.retain);
    }
    broker.shutdown().await;
}

// v3:MQTT-3.1.2-17 v5:MQTT-3.1.2-15
#[tokio::test]
async fn will_retain_publishes_a_retained_message() {
    let broker = start().await;
    let (peer, _) = Peer::connect_with(
        addr(&broker),
        with_will(connect(V311, "wr", true), "will/r", true),
    )
    .await;
    let mut live = broker.subscribe("will/#").unwrap();
    drop(peer);
    next(&mut live).await;
    let mut late = broker.subscribe("will/r").unwrap();
    let got = next(&mut late).await;
    assert!(got.retain);
    assert_eq!(got.payload, "bye");
    broker.shutdown().await;
}

// v3:MQTT-3.14.4-3 v3:MQTT-3.1.2-10 v5:MQTT-3.14.4-3 v5:MQTT-3.1.2-10
#[tokio::test]
async fn normal_disconnect_discards_the_will() {
    let broker = start().await;
    let mut sub = broker.subscribe("will/#").unwrap();
    for version in [V311, V5] {
        let (peer, _) = Peer::connect_with(
            addr(&broker),
            with_will(connect(version, "n", true), "will/n", false),
        )
        .await;
        peer.disconnect().await;
        assert_nothing_before_marker(&broker, &mut sub).await;
    }
    broker.shutdown().await;
}

// v5:MQTT-3.1.2-8
#[tokio::test]
async fn v5_disconnect_with_will_message_publishes_it() {
    let broker = start().await;
    let mut sub = broker.subscribe("will/#").unwrap();
    let (mut peer, _) = Peer::connect_with(
        addr(&broker),
        with_will(connect(V5, "d4", true), "will/d4", false),
    )
    .await;
    peer.send(Disconnect::new(
        DisconnectReasonCode::DisconnectWithWillMessage,
    ))
    .await;
    peer.expect_closed().await;
    assert_eq!(next(&mut sub).await.topic, "will/d4");
    broker.shutdown().await;
}

// v5:MQTT-3.1.0-2 v5:MQTT-3.1.2-8
#[tokio::test]
async fn protocol_error_publishes_the_will() {
    let broker = start().await;
    let mut sub = broker.subscribe("will/#").unwrap();
    let c = with_will(connect(V5, "pe", true), "will/pe", false);
    let (mut peer, _) = Peer::connect_with(addr(&broker), c.clone()).await;
    peer.send(c).await;
    let Packet::Disconnect(d) = peer.recv().await else {
        panic!()
    };
    assert_eq!(d.reason_code, DisconnectReasonCode::ProtocolError);
    assert_eq!(next(&mut sub).await.topic, "will/pe");
    broker.shutdown().await;
}

// v3:MQTT-3.1.2-24 v5:MQTT-3.1.2-22
#[tokio::test]
async fn keep_alive_expiry_closes_and_publishes_the_will() {
    let broker = start().await;
    let mut sub = broker.subscribe("will/#").unwrap();
    for version in [V311, V5] {
        let mut c = with_will(connect(version, "ka", true), "will/ka", false);
        c.keep_alive = 1;
        let (mut peer, _) = Peer::connect_with(addr(&broker), c).await;
        if version == V5 {
            let Packet::Disconnect(d) = peer.recv().await else {
                panic!()
            };
            assert_eq!(d.reason_code, DisconnectReasonCode::KeepAliveTimeout);
        }
        peer.expect_closed().await;
        assert_eq!(next(&mut sub).await.topic, "will/ka");
    }
    broker.shutdown().await;
}

fn v5_session(id: &str, clean: bool, expiry: u32) -> Connect {
    let mut c = connect(V5, id, clean);
    c.properties.session_expiry_interval = Some(expiry);
    c
}

// v5:MQTT-3.1.2-8
#[tokio::test]
async fn v5_will_waits_for_the_will_delay_interval() {
    let broker = start().await;
    let mut sub = broker.subscribe("will/#").unwrap();
    let mut c = with_will(v5_session("wd", true, 60), "will/wd", false);
    c.will.as_mut().unwrap().properties.will_delay_interval = Some(1);
    let (peer, _) = Peer::connect_with(addr(&broker), c).await;
    drop(peer);
    assert_eq!(next(&mut sub).await.topic, "will/wd");
    // The session itself is still there.
    assert_eq!(broker.stats().sessions, 1);
    broker.shutdown().await;
}

/// A shutdown publishes the wills, as mosquitto does: of the clients still
/// connected (they did not send DISCONNECT) and of those gone whose delay
/// had not passed (the delay is not kept across a restart). They were
/// dropped, so that a retained "offline" will never replaced "online".
// MQTT-3.1.2-8
#[tokio::test]
async fn shutdown_publishes_the_wills_of_connected_clients_and_pending_ones() {
    let broker = start().await;
    let mut sub = broker.subscribe("will/#").unwrap();
    let mut gone = with_will(v5_session("gone", true, 3600), "will/gone", false);
    gone.will.as_mut().unwrap().properties.will_delay_interval = Some(3600);
    let (peer, _) = Peer::connect_with(addr(&broker), gone).await;
    drop(peer);
    wait_sessions_disconnected(&broker).await;
    let mut delayed = with_will(v5_session("delayed", true, 3600), "will/delayed", false);
    delayed
        .will
        .as_mut()
        .unwrap()
        .properties
        .will_delay_interval = Some(3600);
    let (_delayed, _) = Peer::connect_with(addr(&broker), delayed).await;
    let (_v3, _) = Peer::connect_with(
        addr(&broker),
        with_will(connect(V311, "v3", true), "will/v3", true),
    )
    .await;
    broker.shutdown().await;
    let mut topics = Vec::new();
    while let Some(m) = sub.recv().await {
        topics.push(m.topic.to_string());
    }
    topics.sort();
    assert_eq!(topics, ["will/delayed", "will/gone", "will/v3"]);
}

// v5:MQTT-3.1.3-9 v5:MQTT-3.1.2-5 v5:MQTT-3.2.2-3
#[tokio::test]
async fn v5_reconnect_within_the_will_delay_cancels_the_will() {
    let broker = start().await;
    let mut sub = broker.subscribe("will/#").unwrap();
    let mut c = with_will(v5_session("wc", false, 60), "will/wc", false);
    c.will.as_mut().unwrap().properties.will_delay_interval = Some(1);
    let (peer, _) = Peer::connect_with(addr(&broker), c).await;
    drop(peer);
    let (_again, ack) = Peer::connect_with(addr(&broker), v5_session("wc", false, 60)).await;
    assert!(ack.session_present);
    // Past the delay: the will must not have been published.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_nothing_before_marker(&broker, &mut sub).await;
    broker.shutdown().await;
}

// v5:MQTT-3.1.2-8
#[tokio::test]
async fn v5_will_is_published_when_the_session_ends_before_the_delay() {
    let broker = start().await;
    let mut sub = broker.subscribe("will/#").unwrap();
    let mut c = with_will(v5_session("we", true, 1), "will/we", false);
    c.will.as_mut().unwrap().properties.will_delay_interval = Some(3600);
    let (peer, _) = Peer::connect_with(addr(&broker), c).await;
    drop(peer);
    assert_eq!(next(&mut sub).await.topic, "will/we");
    wait_sessions(&broker, 0).await;
    broker.shutdown().await;
}

// v5:MQTT-3.1.2-8 (the will is published when its delay passes or the
// session ends, whichever first): a Clean Start ends the session, so a will
// still waiting out its delay goes at once; it was dropped with the session.
// After a lost connection, and at a take-over of a live one.
#[tokio::test]
async fn v5_clean_start_publishes_a_will_waiting_for_its_delay() {
    let broker = start().await;
    let mut sub = broker.subscribe("will/#").unwrap();
    for take_over in [false, true] {
        let id = if take_over { "cs-live" } else { "cs-gone" };
        let mut c = with_will(v5_session(id, true, 600), &format!("will/{id}"), false);
        c.will.as_mut().unwrap().properties.will_delay_interval = Some(300);
        let (peer, _) = Peer::connect_with(addr(&broker), c).await;
        if !take_over {
            drop(peer);
            wait_sessions_disconnected(&broker).await;
            let (_again, ack) = Peer::connect_with(addr(&broker), v5_session(id, true, 600)).await;
            assert!(!ack.session_present);
            assert_eq!(next(&mut sub).await.topic.as_str(), format!("will/{id}"));
        } else {
            let (_again, ack) = Peer::connect_with(addr(&broker), v5_session(id, true, 600)).await;
            assert!(!ack.session_present);
            assert_eq!(next(&mut sub).await.topic.as_str(), format!("will/{id}"));
            drop(peer);
        }
    }
    broker.shutdown().await;
}

// v5:MQTT-3.3.2-5 v5:MQTT-3.3.2-6: the time a message waits in a subscriber
// connection's queue (its session queue full) counts against its Message
// Expiry Interval, as in the session's own queue.
#[tokio::test]
async fn v5_expiry_counts_the_time_in_the_connection_queue() {
    let mut limits = fulmar_broker::Limits::default();
    limits.max_queued_messages = 2;
    let broker = start_with(Broker::builder().limits(limits)).await;
    let mut c = v5_session("slow", true, 0);
    c.properties.receive_maximum = NonZeroU16::new(1);
    let (mut sub, _) = Peer::connect_with(addr(&broker), c).await;
    sub.sub(1, "e/#", QoS::AtLeastOnce).await;
    let mut publisher = Peer::connect(addr(&broker), V5, "pub").await;
    for n in 1..=5u16 {
        let mut p = publish("e/x", "", QoS::AtLeastOnce);
        p.payload = Bytes::from(n.to_string());
        p.packet_id = PacketId::new(n);
        p.properties.message_expiry_interval = Some(1);
        publisher.send(p).await;
        assert!(matches!(publisher.recv().await, Packet::PubAck(_)));
    }
    // Message 1 in flight; 2 and 3 in the session's queue, 4 and 5 in the
    // connection's.
    let first = sub.recv_publish().await;
    assert_eq!(first.payload, "1");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    sub.send(PubAck::new(first.packet_id.unwrap())).await;
    // All the others expired while waiting: the next one is a later message.
    let mut later = publish("e/x", "later", QoS::AtLeastOnce);
    later.packet_id = PacketId::new(9);
    publisher.send(later).await;
    let next = sub.recv_publish().await;
    assert_eq!(next.payload, "later", "an expired message was sent");
    broker.shutdown().await;
}

// v3:MQTT-3.1.2-4 v3:MQTT-3.1.2-5 v3:MQTT-3.2.2-2 MQTT-4.5.0-1 v3:MQTT-3.1.3-2 v5:MQTT-3.1.3-2
#[tokio::test]
async fn v3_persistent_session_keeps_subscriptions_and_queues_qos1() {
    let broker = start().await;
    let (mut p, ack) = Peer::connect_with(addr(&broker), connect(V311, "persist", false)).await;
    assert!(!ack.session_present);
    p.sub(1, "p/#", QoS::AtLeastOnce).await;
    p.disconnect().await;
    for payload in ["1", "2", "3"] {
        broker
            .publish("p/x", payload, QoS::AtLeastOnce, false)
            .unwrap();
    }
    broker
        .publish("p/x", "qos0", QoS::AtMostOnce, false)
        .unwrap();
    let (mut p, ack) = Peer::connect_with(addr(&broker), connect(V311, "persist", false)).await;
    assert!(ack.session_present);
    for payload in ["1", "2", "3"] {
        let got = p.recv_publish().await;
        assert_eq!(got.payload, payload);
        assert_eq!(got.qos, QoS::AtLeastOnce);
        p.send(PubAck::new(got.packet_id.unwrap())).await;
    }
    // The subscription survived; the QoS 0 message was not queued.
    broker
        .publish("p/x", "live", QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(p.recv_publish().await.payload, "live");
    broker.shutdown().await;
}

// v3:MQTT-3.1.2-6 v3:MQTT-3.2.2-1 v5:MQTT-3.1.2-4 v5:MQTT-3.2.2-2 v3:MQTT-3.1.2-7
#[tokio::test]
async fn clean_start_discards_the_session() {
    let broker = start().await;
    broker
        .publish("keep/r", "r", QoS::AtMostOnce, true)
        .unwrap();
    for version in [V311, V5] {
        let mut c = connect(version, "cs", false);
        c.properties.session_expiry_interval = (version == V5).then_some(60);
        let (mut p, _) = Peer::connect_with(addr(&broker), c).await;
        p.sub(1, "cs/#", QoS::AtLeastOnce).await;
        p.disconnect().await;
        assert_eq!(broker.stats().subscriptions, 1);
        let (p, ack) = Peer::connect_with(addr(&broker), connect(version, "cs", true)).await;
        assert!(!ack.session_present);
        assert_eq!(broker.stats().subscriptions, 0);
        p.disconnect().await;
        wait_sessions(&broker, 0).await;
    }
    // Retained messages are not part of any session.
    assert_eq!(broker.stats().retained, 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn offline_queue_is_bounded_and_counts_drops() {
    let broker = start_with(Broker::builder().max_queued_messages(2)).await;
    let (mut p, _) = Peer::connect_with(addr(&broker), connect(V311, "bounded", false)).await;
    p.sub(1, "q", QoS::AtLeastOnce).await;
    p.disconnect().await;
    for payload in ["1", "2", "3", "4", "5"] {
        broker
            .publish("q", payload, QoS::AtLeastOnce, false)
            .unwrap();
    }
    assert_eq!(broker.stats().dropped_messages, 3);
    let (mut p, _) = Peer::connect_with(addr(&broker), connect(V311, "bounded", false)).await;
    for payload in ["1", "2"] {
        let got = p.recv_publish().await;
        assert_eq!(got.payload, payload);
        p.send(PubAck::new(got.packet_id.unwrap())).await;
    }
    broker
        .publish("q", "after", QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(p.recv_publish().await.payload, "after");
    broker.shutdown().await;
}

// MQTT-4.4.0-1 MQTT-3.3.1-1 v3:MQTT-4.6.0-1 v3:MQTT-2.3.1-4 v5:MQTT-2.2.1-4
#[tokio::test]
async fn unacknowledged_messages_are_resent_with_dup_on_resume() {
    let broker = start().await;
    for version in [V311, V5] {
        let mut c = connect(version, "dup", false);
        c.properties.session_expiry_interval = (version == V5).then_some(60);
        let (mut p, _) = Peer::connect_with(addr(&broker), c.clone()).await;
        p.sub(1, "d/+", QoS::ExactlyOnce).await;
        broker
            .publish("d/1", "one", QoS::AtLeastOnce, false)
            .unwrap();
        broker
            .publish("d/2", "two", QoS::ExactlyOnce, false)
            .unwrap();
        let first = p.recv_publish().await;
        let second = p.recv_publish().await;
        assert!(!first.dup && !second.dup);
        // Two messages in flight: two distinct (non-zero) identifiers.
        assert_ne!(first.packet_id, second.packet_id);
        // Acknowledge neither; drop the connection.
        drop(p);
        wait_for_offline(&broker, c.client_id.as_str()).await;
        let (mut p, ack) = Peer::connect_with(addr(&broker), c.clone()).await;
        assert!(ack.session_present);
        let again1 = p.recv_publish().await;
        let again2 = p.recv_publish().await;
        assert!(again1.dup && again2.dup);
        assert_eq!(
            (again1.packet_id, again2.packet_id),
            (first.packet_id, second.packet_id)
        );
        assert_eq!(
            (&again1.payload[..], &again2.payload[..]),
            (&b"one"[..], &b"two"[..])
        );
        p.send(PubAck::new(again1.packet_id.unwrap())).await;
        p.send(PubRec::new(again2.packet_id.unwrap())).await;
        let Packet::PubRel(rel) = p.recv().await else {
            panic!()
        };
        // Drop before PUBCOMP: the PUBREL is resent on resume.
        drop(p);
        wait_for_offline(&broker, c.client_id.as_str()).await;
        let (mut p, _) = Peer::connect_with(addr(&broker), c.clone()).await;
        let Packet::PubRel(again) = p.recv().await else {
            panic!()
        };
        assert_eq!(again.packet_id, rel.packet_id);
        p.send(fulmar_codec::PubComp::new(rel.packet_id)).await;
        p.disconnect().await;
        // Clean up for the next version.
        let (p, _) = Peer::connect_with(addr(&broker), connect(version, "dup", true)).await;
        p.disconnect().await;
    }
    broker.shutdown().await;
}

/// Waits until the broker noticed that client `id` went away (its
/// connection count dropped to zero).
async fn wait_for_offline(broker: &BrokerHandle, _id: &str) {
    tokio::time::timeout(GUARD, async {
        while broker.stats().connections != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("connection not closed");
}

// v5:MQTT-3.1.2-23 v5:MQTT-3.1.2-6 v5:MQTT-4.1.0-2
#[tokio::test]
async fn v5_session_expiry_removes_the_session() {
    let broker = start().await;
    let (p, _) = Peer::connect_with(addr(&broker), v5_session("exp", false, 1)).await;
    p.disconnect().await;
    assert_eq!(broker.stats().sessions, 1);
    wait_sessions(&broker, 0).await;
    let (_p, ack) = Peer::connect_with(addr(&broker), v5_session("exp", false, 1)).await;
    assert!(!ack.session_present);
    // Expiry 0 (the default): the session ends with the connection.
    let (p, _) = Peer::connect_with(addr(&broker), connect(V5, "zero", false)).await;
    p.disconnect().await;
    assert!(broker.stats().sessions <= 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn v5_disconnect_can_extend_the_session_expiry() {
    let broker = start().await;
    let (mut p, _) = Peer::connect_with(addr(&broker), v5_session("ext", false, 1)).await;
    p.sub(1, "ext", QoS::AtLeastOnce).await;
    let mut d = Disconnect::new(DisconnectReasonCode::NormalDisconnection);
    d.properties.session_expiry_interval = Some(3600);
    p.send(d).await;
    p.expect_closed().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_p, ack) = Peer::connect_with(addr(&broker), v5_session("ext", false, 1)).await;
    assert!(ack.session_present);
    broker.shutdown().await;
}

// v5:MQTT-3.3.2-5
#[tokio::test]
async fn v5_messages_expire_in_the_offline_queue() {
    let broker = start().await;
    let (mut p, _) = Peer::connect_with(addr(&broker), v5_session("mx", false, 60)).await;
    p.sub(1, "mx", QoS::AtLeastOnce).await;
    p.disconnect().await;
    let (mut sender, _) = Peer::connect_with(addr(&broker), connect(V5, "mx-pub", true)).await;
    let mut short = publish("mx", "short", QoS::AtLeastOnce);
    short.properties.message_expiry_interval = Some(1);
    sender.send(short).await;
    assert!(matches!(sender.recv().await, Packet::PubAck(_)));
    let mut long = publish("mx", "long", QoS::AtLeastOnce);
    long.packet_id = PacketId::new(2);
    long.properties.message_expiry_interval = Some(600);
    sender.send(long).await;
    assert!(matches!(sender.recv().await, Packet::PubAck(_)));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (mut p, _) = Peer::connect_with(addr(&broker), v5_session("mx", false, 60)).await;
    let got = p.recv_publish().await;
    assert_eq!(got.payload, "long");
    // v5:MQTT-3.3.2-6: the expiry counts the time spent waiting.
    assert!(got.properties.message_expiry_interval.unwrap() < 600);
    broker.shutdown().await;
}

/// Messages that were in the session when its client went away, one in
/// flight and one queued behind the client's Receive Maximum: the time away
/// counts against their Message Expiry Interval too, not only for the
/// messages that arrive meanwhile.
// v5:MQTT-3.3.2-5 v5:MQTT-3.3.2-6 MQTT-4.4.0-1
#[tokio::test]
async fn v5_time_away_counts_against_the_expiry_of_a_sessions_messages() {
    let broker = start().await;
    let mut c = v5_session("away", false, 60);
    c.properties.receive_maximum = NonZeroU16::new(1);
    let (mut p, _) = Peer::connect_with(addr(&broker), c.clone()).await;
    p.sub(1, "away", QoS::AtLeastOnce).await;
    let (mut sender, _) = Peer::connect_with(addr(&broker), connect(V5, "away-pub", true)).await;
    for (id, payload, interval) in [(1, "in flight", 600), (2, "queued", 1)] {
        let mut m = publish("away", payload, QoS::AtLeastOnce);
        m.packet_id = PacketId::new(id);
        m.properties.message_expiry_interval = Some(interval);
        sender.send(m).await;
        assert!(matches!(sender.recv().await, Packet::PubAck(_)));
    }
    let first = p.recv_publish().await;
    assert_eq!(first.payload, "in flight");
    // Gone without acknowledging it; the other waits behind Receive Maximum 1.
    drop(p);
    // Each step rounds the time it counts to the second: 3.1 s counts at
    // least 2 however it is split between the snapshot and the time away.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let (mut p, ack) = Peer::connect_with(addr(&broker), c).await;
    assert!(ack.session_present);
    let again = p.recv_publish().await;
    assert_eq!(again.payload, "in flight");
    assert!(again.dup);
    // At least 2 s of the 600 are gone.
    assert!(again.properties.message_expiry_interval.unwrap() <= 598);
    p.send(PubAck::new(again.packet_id.unwrap())).await;
    // The queued message expired while its client was away: not sent.
    let mut last = publish("away", "after", QoS::AtLeastOnce);
    last.packet_id = PacketId::new(3);
    sender.send(last).await;
    assert_eq!(p.recv_publish().await.payload, "after");
    broker.shutdown().await;
}

// v5:MQTT-3.1.2-24 v5:MQTT-3.1.2-25
#[tokio::test]
async fn v5_messages_above_the_client_maximum_packet_size_are_skipped() {
    let broker = start().await;
    let mut c = connect(V5, "small", true);
    c.properties.maximum_packet_size = NonZeroU32::new(64);
    let (mut p, _) = Peer::connect_with(addr(&broker), c).await;
    p.sub(1, "m", QoS::AtLeastOnce).await;
    broker
        .publish("m", vec![0u8; 200], QoS::AtLeastOnce, false)
        .unwrap();
    broker
        .publish("m", "fits", QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(p.recv_publish().await.payload, "fits");
    // Counted as dropped, as Stats::dropped_messages says of "a message
    // over a limit".
    common::wait_until("the drop counted", || broker.stats().dropped_messages == 1).await;
    broker.shutdown().await;
}

// v5:MQTT-3.1.2-26 v5:MQTT-3.3.2-11
#[tokio::test]
async fn v5_outbound_topic_aliases_stay_within_the_client_maximum() {
    let broker = start().await;
    let mut c = connect(V5, "alias-out", true);
    c.properties.topic_alias_maximum = Some(1);
    let (mut p, _) = Peer::connect_with(addr(&broker), c).await;
    p.sub(1, "long/topic/+", QoS::AtMostOnce).await;
    for _ in 0..2 {
        broker
            .publish("long/topic/a", "x", QoS::AtMostOnce, false)
            .unwrap();
    }
    let first = p.recv_publish().await;
    assert_eq!(first.topic, "long/topic/a");
    assert_eq!(first.properties.topic_alias, NonZeroU16::new(1));
    let second = p.recv_publish().await;
    assert!(second.topic.is_empty());
    assert_eq!(second.properties.topic_alias, NonZeroU16::new(1));
    broker.shutdown().await;
}

// v5:MQTT-3.3.4-9 v5:MQTT-4.9.0-2
#[tokio::test]
async fn v5_receive_maximum_of_the_client_limits_inflight_messages() {
    let broker = start().await;
    let mut c = connect(V5, "rm", true);
    c.properties.receive_maximum = NonZeroU16::new(1);
    let (mut p, _) = Peer::connect_with(addr(&broker), c).await;
    p.sub(1, "rm", QoS::AtLeastOnce).await;
    broker.publish("rm", "1", QoS::AtLeastOnce, false).unwrap();
    broker.publish("rm", "2", QoS::AtLeastOnce, false).unwrap();
    let first = p.recv_publish().await;
    assert_eq!(first.payload, "1");
    // PINGREQ is answered although the window is full (v5:MQTT-3.3.4-10),
    // and the second message is not in front of the PINGRESP.
    p.send(Packet::PingReq).await;
    assert_eq!(p.recv().await, Packet::PingResp);
    p.send(PubAck::new(first.packet_id.unwrap())).await;
    assert_eq!(p.recv_publish().await.payload, "2");
    broker.shutdown().await;
}

// v3:MQTT-3.1.2-12
#[tokio::test]
async fn no_will_flag_no_will() {
    let broker = start().await;
    let mut sub = broker.subscribe("#").unwrap();
    let (peer, _) = Peer::connect_with(addr(&broker), connect(V311, "nowill", true)).await;
    drop(peer);
    wait_sessions(&broker, 0).await;
    assert_nothing_before_marker(&broker, &mut sub).await;
    broker.shutdown().await;
}

// v5:MQTT-4.8.2-4
#[tokio::test]
async fn v5_shared_subscription_message_waits_for_an_offline_member() {
    let broker = start().await;
    let (mut p, _) = Peer::connect_with(addr(&broker), v5_session("member", false, 60)).await;
    p.sub(1, "$share/g/work", QoS::AtLeastOnce).await;
    p.disconnect().await;
    broker
        .publish("work", "job", QoS::AtLeastOnce, false)
        .unwrap();
    let (mut p, ack) = Peer::connect_with(addr(&broker), v5_session("member", false, 60)).await;
    assert!(ack.session_present);
    assert_eq!(p.recv_publish().await.payload, "job");
    broker.shutdown().await;
}

// MQTT-3.10.4-3
#[tokio::test]
async fn unsubscribe_completes_messages_already_in_flight() {
    let broker = start().await;
    let (mut p, _) = Peer::connect_with(addr(&broker), connect(V311, "inflight", false)).await;
    p.sub(1, "f", QoS::AtLeastOnce).await;
    broker
        .publish("f", "started", QoS::AtLeastOnce, false)
        .unwrap();
    let first = p.recv_publish().await;
    p.send(fulmar_codec::Unsubscribe::new(
        PacketId::new(2).unwrap(),
        vec![MqttString::from("f")],
    ))
    .await;
    assert!(matches!(p.recv().await, Packet::UnsubAck(_)));
    drop(p);
    wait_for_offline(&broker, "inflight").await;
    // The unacknowledged message is still delivered on resume.
    let (mut p, _) = Peer::connect_with(addr(&broker), connect(V311, "inflight", false)).await;
    let again = p.recv_publish().await;
    assert!(again.dup);
    assert_eq!(
        (again.packet_id, &again.payload[..]),
        (first.packet_id, &b"started"[..])
    );
    broker.shutdown().await;
}

// v5:MQTT-3.1.2-23: a session adopted from another node (cluster) ends when
// its Session Expiry Interval is over, like one that disconnected here.
#[tokio::test]
async fn an_adopted_session_expires_on_time() {
    let broker = start().await;
    let export = fulmar_broker::SessionExport {
        session: fulmar_broker::StoredSession {
            client_id: std::sync::Arc::from("moved"),
            expiry_interval: 1,
            disconnected_at: None,
            subscriptions: Vec::new(),
            will: None,
        },
        messages: Vec::new(),
        incoming: Vec::new(),
    };
    // Long enough for the broker's deadline task to be asleep, with nothing
    // to wait for.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(broker.adopt_session(export));
    assert_eq!(broker.stats().sessions, 1);
    wait_sessions(&broker, 0).await;
    broker.shutdown().await;
}

// take_session closes the holding connection as a take-over does (5.0: 0x8E)
// and its will is published; take_session_without_will drops the will
// instead (a cluster node giving up a session that another node took over,
// and whose will that node published already).
#[tokio::test]
async fn take_session_without_will_drops_the_connected_clients_will() {
    let broker = start().await;
    let mut wills = broker.subscribe("wills/#").unwrap();
    for (id, quiet) in [("loud", false), ("quiet", true)] {
        let mut c = with_will(connect(V5, id, false), &format!("wills/{id}"), false);
        c.properties.session_expiry_interval = Some(60);
        let (mut p, _) = Peer::connect_with(addr(&broker), c).await;
        let export = if quiet {
            broker.take_session_without_will(id).await
        } else {
            broker.take_session(id).await
        };
        assert!(export.is_some(), "{id}");
        let Packet::Disconnect(d) = p.recv().await else {
            panic!("{id}: expected DISCONNECT")
        };
        assert_eq!(d.reason_code, DisconnectReasonCode::SessionTakenOver);
        // A marker after the take-over: a will would have come before it.
        broker
            .publish(
                format!("wills/marker-{id}").as_str(),
                "m",
                QoS::AtLeastOnce,
                false,
            )
            .unwrap();
        let first = next(&mut wills).await;
        if quiet {
            assert_eq!(first.topic, "wills/marker-quiet");
        } else {
            assert_eq!(first.topic, "wills/loud");
            assert_eq!(next(&mut wills).await.topic, "wills/marker-loud");
        }
    }
    broker.shutdown().await;
}

// v3:MQTT-3.1.2-4 v5:MQTT-3.1.2-4 MQTT-4.1.0-1 v3:MQTT-3.8.4-1
// SUBSCRIBE packets read together with the end of the stream still change
// the session that is kept: its subscriptions are there on resume.
#[tokio::test]
async fn subscriptions_read_with_the_end_of_the_stream_are_kept() {
    let broker = start().await;
    let (mut p, ack) = Peer::connect_with(addr(&broker), connect(V311, "eof-subs", false)).await;
    assert!(!ack.session_present);
    // SUBSCRIBE id 1 "s/a" and id 2 "s/b", both QoS 1, in one write with
    // the end of the stream.
    p.send_raw(&[
        0x82, 0x08, 0x00, 0x01, 0x00, 0x03, b's', b'/', b'a', 0x01, //
        0x82, 0x08, 0x00, 0x02, 0x00, 0x03, b's', b'/', b'b', 0x01,
    ])
    .await;
    tokio::io::AsyncWriteExt::shutdown(&mut p.stream)
        .await
        .unwrap();
    // Whatever the broker answers before it closes.
    let mut rest = Vec::new();
    tokio::time::timeout(
        GUARD,
        tokio::io::AsyncReadExt::read_to_end(&mut p.stream, &mut rest),
    )
    .await
    .expect("not closed in time")
    .unwrap();
    wait_sessions_disconnected(&broker).await;
    for topic in ["s/a", "s/b"] {
        broker
            .publish(topic, topic, QoS::AtLeastOnce, false)
            .unwrap();
    }
    let (mut p, ack) = Peer::connect_with(addr(&broker), connect(V311, "eof-subs", false)).await;
    assert!(ack.session_present);
    for topic in ["s/a", "s/b"] {
        let got = p.recv_publish().await;
        assert_eq!(got.topic.as_str(), topic);
        p.send(PubAck::new(got.packet_id.unwrap())).await;
    }
    broker.shutdown().await;
}

/// A member of `$share/g/jobs/#` that ends its session (Session Expiry 0,
/// the connection dropped) with messages unacknowledged: the QoS 1 ones
/// still unacknowledged go to the other member (MQTT 5.0 section 4.8.2, a
/// SHOULD for QoS 1); the one it acknowledged does not, and the QoS 2 one
/// is not sent to another member (v5:MQTT-4.8.2-5). They were dropped with
/// the session. Both versions (a 3.1.1 client may use `$share` too).
// v5:MQTT-4.8.2-5
#[tokio::test]
async fn unacknowledged_shared_messages_go_to_another_member_when_a_session_ends() {
    for version in [V5, V311] {
        let broker = start().await;
        let mut w1 = Peer::connect(addr(&broker), version, "w1").await;
        w1.sub(1, "$share/g/jobs/#", QoS::ExactlyOnce).await;
        let jobs = [
            ("jobs/1", QoS::AtLeastOnce),
            ("jobs/2", QoS::AtLeastOnce),
            ("jobs/3", QoS::AtLeastOnce),
            ("jobs/4", QoS::ExactlyOnce),
        ];
        for (topic, qos) in jobs {
            broker.publish(topic, "job", qos, false).unwrap();
        }
        // The only member gets them all; it acknowledges the first only.
        let mut got = Vec::new();
        for _ in jobs {
            got.push(w1.recv_publish().await);
        }
        let topics: Vec<&str> = got.iter().map(|p| p.topic.as_str()).collect();
        assert_eq!(
            topics,
            ["jobs/1", "jobs/2", "jobs/3", "jobs/4"],
            "{version:?}"
        );
        w1.send(PubAck::new(got[0].packet_id.unwrap())).await;
        let mut w2 = Peer::connect(addr(&broker), version, "w2").await;
        w2.sub(1, "$share/g/jobs/#", QoS::ExactlyOnce).await;
        // Read in order: the PUBACK before the end of the stream.
        drop(w1);
        wait_sessions(&broker, 1).await;
        for topic in ["jobs/2", "jobs/3"] {
            let p = w2.recv_publish().await;
            assert_eq!(
                (p.topic.as_str(), p.qos, p.dup),
                (topic, QoS::AtLeastOnce, false),
                "{version:?}"
            );
            w2.send(PubAck::new(p.packet_id.unwrap())).await;
        }
        // Nothing else came before this one.
        broker
            .publish("jobs/next", "job", QoS::AtLeastOnce, false)
            .unwrap();
        assert_eq!(w2.recv_publish().await.topic, "jobs/next", "{version:?}");
        broker.shutdown().await;
    }
}

/// A member whose session outlives its connection keeps its
/// unacknowledged shared messages: they are resent to it when it comes
/// back (v5:MQTT-4.8.2-4 for QoS 2; QoS 1 too), not sent to another member.
// v5:MQTT-4.8.2-4
#[tokio::test]
async fn v5_a_kept_session_keeps_its_unacknowledged_shared_messages() {
    let broker = start().await;
    let (mut w1, _) = Peer::connect_with(addr(&broker), v5_session("w1", true, 60)).await;
    w1.sub(1, "$share/g/jobs/#", QoS::ExactlyOnce).await;
    broker
        .publish("jobs/1", "job", QoS::AtLeastOnce, false)
        .unwrap();
    broker
        .publish("jobs/2", "job", QoS::ExactlyOnce, false)
        .unwrap();
    assert_eq!(w1.recv_publish().await.topic, "jobs/1");
    assert_eq!(w1.recv_publish().await.topic, "jobs/2");
    let mut w2 = Peer::connect(addr(&broker), V5, "w2").await;
    w2.sub(1, "$share/g/jobs/#", QoS::ExactlyOnce).await;
    drop(w1);
    wait_connected(&broker, 1).await;
    broker
        .publish("jobs/next", "job", QoS::AtLeastOnce, false)
        .unwrap();
    // The message after goes to w2, the only connected member; nothing
    // of w1's comes first.
    assert_eq!(w2.recv_publish().await.topic, "jobs/next");
    let (mut w1, ack) = Peer::connect_with(addr(&broker), v5_session("w1", false, 60)).await;
    assert!(ack.session_present);
    let again: Vec<(String, bool)> = [w1.recv_publish().await, w1.recv_publish().await]
        .into_iter()
        .map(|p| (p.topic.to_string(), p.dup))
        .collect();
    assert_eq!(
        again,
        [("jobs/1".to_owned(), true), ("jobs/2".to_owned(), true)]
    );
    broker.shutdown().await;
}

/// A member whose session was kept after its connection: when the session
/// ends later (it expires, or the client comes back with Clean Start), the
/// QoS 1 messages a shared group sent it that it had not acknowledged go
/// to another member: those in flight when it left and those queued for it
/// while it was away. The QoS 2 one does not (v5:MQTT-4.8.2-5).
// v5:MQTT-4.8.2-5
#[tokio::test]
async fn v5_unacknowledged_shared_messages_of_a_kept_session_go_to_another_member_when_it_ends() {
    for ends_by_expiry in [false, true] {
        let broker = start().await;
        let expiry = if ends_by_expiry { 1 } else { 60 };
        let (mut w1, _) = Peer::connect_with(addr(&broker), v5_session("w1", true, expiry)).await;
        w1.sub(1, "$share/g/jobs/#", QoS::ExactlyOnce).await;
        broker
            .publish("jobs/1", "job", QoS::AtLeastOnce, false)
            .unwrap();
        broker
            .publish("jobs/2", "job", QoS::ExactlyOnce, false)
            .unwrap();
        assert_eq!(w1.recv_publish().await.topic, "jobs/1");
        assert_eq!(w1.recv_publish().await.topic, "jobs/2");
        drop(w1);
        wait_sessions_disconnected(&broker).await;
        // While it is away, the group's only member is w1: queued for it.
        broker
            .publish("jobs/3", "job", QoS::AtLeastOnce, false)
            .unwrap();
        let mut w2 = Peer::connect(addr(&broker), V5, "w2").await;
        w2.sub(1, "$share/g/jobs/#", QoS::ExactlyOnce).await;
        if ends_by_expiry {
            wait_sessions(&broker, 1).await;
        } else {
            let (_w1, ack) = Peer::connect_with(addr(&broker), v5_session("w1", true, 60)).await;
            assert!(!ack.session_present);
        }
        let mut got = Vec::new();
        for _ in 0..2 {
            let p = w2.recv_publish().await;
            w2.send(PubAck::new(p.packet_id.unwrap())).await;
            got.push((p.topic.to_string(), p.qos));
        }
        got.sort();
        assert_eq!(
            got,
            [
                ("jobs/1".to_owned(), QoS::AtLeastOnce),
                ("jobs/3".to_owned(), QoS::AtLeastOnce)
            ],
            "ends by expiry: {ends_by_expiry}"
        );
        broker
            .publish("jobs/next", "job", QoS::AtLeastOnce, false)
            .unwrap();
        assert_eq!(w2.recv_publish().await.topic, "jobs/next");
        broker.shutdown().await;
    }
}
