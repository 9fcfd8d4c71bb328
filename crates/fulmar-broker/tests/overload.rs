//! Slow subscribers: a subscriber that stops reading never stalls the
//! others. Under `DropAndCount` its surplus is dropped and counted; under
//! `Backpressure` the publisher feeding it is slowed down (no PUBACK, not
//! read) and nothing acknowledged is dropped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::num::NonZeroU16;
use std::time::Duration;

use bytes::Bytes;
use common::{GUARD, Peer, addr, start_with, wait_until};
use fulmar_broker::{Broker, BrokerBuilder, BrokerHandle, OverloadPolicy};
use fulmar_codec::{Connect, MqttString, Packet, PacketId, ProtocolVersion, PubAck, Publish, QoS};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// Messages per test: 800 x 32 KiB overflows any loopback socket buffers.
const N: usize = 800;
const PAYLOAD: usize = 32 * 1024;
const QUEUE: usize = 20;

fn message(topic: &str, i: usize, id: u16) -> Publish {
    let mut payload = vec![0u8; PAYLOAD];
    payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
    let mut p = Publish::new(MqttString::from(topic.to_owned()), Bytes::from(payload));
    p.qos = QoS::AtLeastOnce;
    p.packet_id = PacketId::new(id);
    p
}

fn index(p: &Publish) -> usize {
    u64::from_be_bytes(p.payload[..8].try_into().unwrap()) as usize
}

/// Queues bounded at 256 KiB, far below their count bound (1000). Tests
/// that watch a publisher being paced add a `pacing_timeout` longer than
/// they take.
fn byte_bound() -> BrokerBuilder {
    Broker::builder()
        .max_queued_messages(1000)
        .max_queued_bytes(256 * 1024)
}

/// A v5 subscriber to `filter` at QoS 1 with Receive Maximum 5.
async fn subscriber(broker: &BrokerHandle, id: &str, filters: &[&str]) -> Peer {
    let mut connect = Connect::new(ProtocolVersion::V5, MqttString::from(id.to_owned()));
    connect.properties.receive_maximum = NonZeroU16::new(5);
    let (mut peer, ack) = Peer::connect_with(addr(broker), connect).await;
    assert!(!ack.reason_code.is_error());
    for (n, filter) in filters.iter().enumerate() {
        peer.sub(n as u16 + 1, filter, QoS::AtLeastOnce).await;
    }
    peer
}

/// Receives one PUBLISH and acknowledges it.
async fn take(peer: &mut Peer) -> Publish {
    let p = peer.recv_publish().await;
    if let Some(id) = p.packet_id {
        peer.send(PubAck::new(id)).await;
    }
    p
}

/// Some but not all of the `N` messages were dropped; the slow subscriber
/// now reads exactly what was not, in order.
async fn read_what_was_not_dropped(broker: &BrokerHandle, slow: &mut Peer) {
    let dropped = broker.stats().dropped_messages as usize;
    assert!(dropped > 0 && dropped < N, "dropped {dropped}");
    let mut last = None;
    for _ in 0..N - dropped {
        let i = index(&take(slow).await);
        assert!(last < Some(i), "{last:?} then {i}");
        last = Some(i);
    }
    assert_eq!(broker.stats().dropped_messages as usize, dropped);
}

/// The broker keeps to each subscriber's Receive Maximum and queues the
/// rest; a full queue drops (and counts) instead of stalling the publisher
/// or the fast subscriber.
// v5:MQTT-3.3.4-9 v5:MQTT-4.6.0-6
#[tokio::test]
async fn drop_and_count_keeps_fast_subscribers_whole() {
    let broker = start_with(Broker::builder().max_queued_messages(QUEUE)).await;
    let mut slow = subscriber(&broker, "slow", &["load/#"]).await;
    let mut fast = subscriber(&broker, "fast", &["load/#"]).await;
    let mut publisher = Peer::connect(addr(&broker), ProtocolVersion::V5, "pub").await;
    // The slow subscriber reads nothing from here on.
    for i in 0..N {
        let id = (i % 60_000) as u16 + 1;
        publisher.send(message("load/a", i, id)).await;
        match publisher.recv().await {
            Packet::PubAck(ack) => assert_eq!(ack.packet_id.get(), id),
            other => panic!("expected PUBACK, got {other:?}"),
        }
        // Lock step: the fast subscriber gets every message, in order.
        assert_eq!(index(&take(&mut fast).await), i);
    }
    read_what_was_not_dropped(&broker, &mut slow).await;
    broker.shutdown().await;
}

// v5:MQTT-3.3.4-9 v5:MQTT-4.6.0-6
#[tokio::test]
async fn backpressure_withholds_acks_and_drops_nothing_acknowledged() {
    let mut limits = fulmar_broker::Limits::default();
    // Never give up on the slow subscriber (a timeout too long to add to the
    // clock means "never", not a panic).
    limits.backpressure_timeout = Duration::MAX;
    let broker = start_with(
        Broker::builder()
            .limits(limits)
            .max_queued_messages(QUEUE)
            .overload_policy(OverloadPolicy::Backpressure),
    )
    .await;
    let mut slow = subscriber(&broker, "slow", &["load/#"]).await;
    let mut fast = subscriber(&broker, "fast", &["load/#", "other/#"]).await;
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    // The fast subscriber reads everything: A's N messages, B's 50, 3 QoS 0.
    let fast_task = tokio::spawn(async move {
        let mut load = Vec::new();
        for _ in 0..N + 50 + 3 {
            let p = take(&mut fast).await;
            if p.topic.as_str() == "load/a" {
                load.push(index(&p));
            }
            seen_tx.send(p.topic.to_string()).unwrap();
        }
        load
    });
    // Publisher A feeds the slow subscriber until it is held back.
    let mut a = Peer::connect(addr(&broker), ProtocolVersion::V5, "a").await;
    let (acked_tx, mut acked) = mpsc::unbounded_channel();
    let a_task = tokio::spawn(async move {
        for i in 0..N {
            let id = (i % 60_000) as u16 + 1;
            a.send(message("load/a", i, id)).await;
            match a.recv().await {
                Packet::PubAck(ack) => assert_eq!(ack.packet_id.get(), id),
                other => panic!("expected PUBACK, got {other:?}"),
            }
            acked_tx.send(i).unwrap();
        }
        a
    });
    wait_until("publisher A never held back", || {
        broker.stats().blocked_publishers == 1
    })
    .await;
    let acked_so_far = {
        let mut n = 0;
        while acked.try_recv().is_ok() {
            n += 1;
        }
        n
    };
    assert!(acked_so_far < N);
    // QoS 0 for the full queue is dropped and counted; the fast subscriber gets it.
    for _ in 0..3 {
        broker
            .publish("load/q0", vec![0u8; 8], QoS::AtMostOnce, false)
            .unwrap();
    }
    // Another publisher, not feeding the slow subscriber, is not held back.
    let mut b = Peer::connect(addr(&broker), ProtocolVersion::V5, "b").await;
    for i in 0..50 {
        let topic = if i == 49 { "other/end" } else { "other/b" };
        b.send(message(topic, i, i as u16 + 1)).await;
        assert!(matches!(b.recv().await, Packet::PubAck(_)));
    }
    // ... and the fast subscriber got B's messages and the QoS 0 ones meanwhile.
    let (mut other, mut q0) = (0, 0);
    while (other, q0) != (50, 3) {
        match seen.recv().await.unwrap().as_str() {
            "load/q0" => q0 += 1,
            "load/a" => {}
            _ => other += 1,
        }
    }
    assert_eq!(broker.stats().dropped_messages, 3);
    // The slow subscriber reads again: every QoS 1 message, in order; A completes.
    for i in 0..N {
        assert_eq!(index(&take(&mut slow).await), i);
    }
    let a = tokio::time::timeout(GUARD, a_task).await.unwrap().unwrap();
    drop(a);
    // The fast subscriber got all of A's messages, in order, none lost.
    let load = tokio::time::timeout(GUARD, fast_task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(load, (0..N).collect::<Vec<_>>());
    let stats = broker.stats();
    assert_eq!((stats.dropped_messages, stats.blocked_publishers), (3, 0));
    broker.shutdown().await;
}

/// A held-back message whose subscriber vanishes meanwhile stays with that
/// subscriber's persistent session: every message is either delivered after
/// the reconnection or counted as dropped, none silently lost.
// v5:MQTT-3.1.2-23
#[tokio::test]
async fn backpressure_target_vanishing_keeps_the_held_message() {
    let broker = start_with(
        Broker::builder()
            .max_queued_messages(QUEUE)
            .overload_policy(OverloadPolicy::Backpressure),
    )
    .await;
    let persistent = |clean: bool| {
        let mut c = Connect::new(ProtocolVersion::V5, MqttString::from("slow"));
        c.clean_start = clean;
        c.properties.receive_maximum = NonZeroU16::new(5);
        c.properties.session_expiry_interval = Some(300);
        c
    };
    let (mut slow, _) = Peer::connect_with(addr(&broker), persistent(true)).await;
    slow.sub(1, "load/#", QoS::AtLeastOnce).await;
    let mut a = Peer::connect(addr(&broker), ProtocolVersion::V5, "a").await;
    let a_task = tokio::spawn(async move {
        for i in 0..N {
            let id = (i % 60_000) as u16 + 1;
            a.send(message("load/a", i, id)).await;
            assert!(matches!(a.recv().await, Packet::PubAck(_)));
        }
    });
    wait_until("publisher A never held back", || {
        broker.stats().blocked_publishers == 1
    })
    .await;
    drop(slow);
    tokio::time::timeout(GUARD, a_task).await.unwrap().unwrap();
    // On resumption the offline queue joins the session queue, within its
    // bound: what does not fit is dropped and counted before the CONNACK.
    let (mut slow, ack) = Peer::connect_with(addr(&broker), persistent(false)).await;
    assert!(ack.session_present);
    let dropped = broker.stats().dropped_messages as usize;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < N - dropped {
        seen.insert(index(&take(&mut slow).await));
    }
    assert_eq!(broker.stats().dropped_messages as usize, dropped);
    broker.shutdown().await;
}

/// Under back-pressure the broker acknowledges each inbound message itself
/// once it is queued: the QoS 1 and QoS 2 flows are unchanged on the wire,
/// for both versions, and a refused message still gets its reason code.
// v5:MQTT-4.3.2-4 v5:MQTT-4.3.3-8
#[tokio::test]
async fn backpressure_keeps_qos_flows_and_refusals_on_the_wire() {
    let broker = start_with(
        Broker::builder()
            .overload_policy(OverloadPolicy::Backpressure)
            .max_retained_messages(0),
    )
    .await;
    let mut sub = broker.subscribe("q/#").unwrap();
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut p = Peer::connect(addr(&broker), version, "bp").await;
        let mut m = common::publish("q/1", "one", QoS::AtLeastOnce);
        m.packet_id = PacketId::new(1);
        p.send(m).await;
        p.expect_raw(&[0x40, 0x02, 0x00, 0x01]).await;
        let mut m = common::publish("q/2", "two", QoS::ExactlyOnce);
        m.packet_id = PacketId::new(2);
        p.send(m).await;
        p.expect_raw(&[0x50, 0x02, 0x00, 0x02]).await;
        p.send_raw(&[0x62, 0x02, 0x00, 0x02]).await;
        p.expect_raw(&[0x70, 0x02, 0x00, 0x02]).await;
        assert_eq!(common::next(&mut sub).await.payload, "one");
        assert_eq!(common::next(&mut sub).await.payload, "two");
        if version == ProtocolVersion::V5 {
            // Over the retained quota (0): PUBREC 0x97, the flow ends there.
            let mut m = common::publish("q/3", "three", QoS::ExactlyOnce);
            m.packet_id = PacketId::new(3);
            m.retain = true;
            p.send(m).await;
            p.expect_raw(&[0x50, 0x03, 0x00, 0x03, 0x97]).await;
        }
        p.disconnect().await;
    }
    broker.shutdown().await;
}

/// A subscriber that takes nothing for the write timeout is disconnected;
/// its persistent session stays.
#[tokio::test]
async fn a_stalled_subscriber_is_disconnected_after_the_write_timeout() {
    let mut limits = fulmar_broker::Limits::default();
    limits.write_timeout = Duration::from_millis(200);
    limits.max_queued_messages = QUEUE;
    let broker = start_with(Broker::builder().limits(limits)).await;
    let mut events = broker.events();
    let mut connect = Connect::new(ProtocolVersion::V5, MqttString::from("stalled"));
    connect.properties.session_expiry_interval = Some(300);
    let (mut slow, _) = Peer::connect_with(addr(&broker), connect).await;
    slow.sub(1, "load/#", QoS::AtMostOnce).await;
    // Publish until the broker gives up on the subscriber.
    let mut i = 0;
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            () = tokio::task::yield_now() => None,
        };
        if let Some(fulmar_broker::BrokerEvent::Disconnected {
            client_id,
            initiator,
            ..
        }) = event
        {
            assert_eq!(client_id, "stalled");
            assert_eq!(initiator, fulmar_broker::Initiator::Network);
            break;
        }
        if i < 10 * N {
            broker
                .publish("load/x", vec![0u8; PAYLOAD], QoS::AtMostOnce, false)
                .unwrap();
            i += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(broker.stats().sessions, 1);
    assert_eq!(broker.stats().clients_connected, 0);
    drop(slow);
    broker.shutdown().await;
}

/// The connection queue is bounded in bytes too: with room for 1000
/// messages but 256 KiB, 800 QoS 0 messages of 32 KiB for a subscriber
/// that does not read are dropped (and counted) once the bytes are used up,
/// while a subscriber that reads gets every one; what the slow subscriber
/// gets later is what was not dropped, in order.
// v5:MQTT-4.6.0-6 MQTT-4.3.1-1
#[tokio::test]
async fn queued_bytes_are_bounded() {
    let broker = start_with(byte_bound()).await;
    let mut slow = subscriber(&broker, "slow-bytes", &["bytes/#"]).await;
    let mut fast = subscriber(&broker, "fast-bytes", &["bytes/#"]).await;
    let mut publisher = Peer::connect(addr(&broker), ProtocolVersion::V5, "pub-bytes").await;
    for i in 0..N {
        let mut m = message("bytes/a", i, 1);
        m.qos = QoS::AtMostOnce;
        m.packet_id = None;
        publisher.send(m).await;
        let got = take(&mut fast).await;
        assert_eq!((index(&got), got.qos), (i, QoS::AtMostOnce));
    }
    read_what_was_not_dropped(&broker, &mut slow).await;
    broker.shutdown().await;
}

/// Nothing was dropped so far: the slow subscriber now reads all `n`
/// messages, in order.
async fn read_all_in_order(broker: &BrokerHandle, slow: &mut Peer, n: usize) {
    assert_eq!(broker.stats().dropped_messages, 0);
    for i in 0..n {
        assert_eq!(index(&take(slow).await), i);
    }
}

/// Subscribes `slow-{prefix}`, which reads nothing, to `{prefix}/#`; starts
/// `pub-{prefix}` sending the `N` messages to `{prefix}/a` in lock step;
/// waits until the publisher is paced. Returns the subscriber, the
/// publishing task and how many messages were acknowledged by then.
async fn publish_until_paced(
    broker: &BrokerHandle,
    prefix: &str,
) -> (Peer, tokio::task::JoinHandle<Peer>, usize) {
    let slow = subscriber(broker, &format!("slow-{prefix}"), &[&format!("{prefix}/#")]).await;
    let mut publisher =
        Peer::connect(addr(broker), ProtocolVersion::V5, &format!("pub-{prefix}")).await;
    let topic = format!("{prefix}/a");
    let (acked_tx, mut acked) = mpsc::unbounded_channel();
    let publishing = tokio::spawn(async move {
        for i in 0..N {
            let id = (i % 60_000) as u16 + 1;
            publisher.send(message(&topic, i, id)).await;
            match publisher.recv().await {
                Packet::PubAck(ack) => assert_eq!(ack.packet_id.get(), id),
                other => panic!("expected PUBACK, got {other:?}"),
            }
            // The caller stops counting once the publisher is paced.
            let _ = acked_tx.send(i);
        }
        publisher
    });
    wait_until("the publisher is paced", || {
        broker.stats().blocked_publishers == 1
    })
    .await;
    let mut sent = 0;
    while let Ok(i) = acked.try_recv() {
        sent = i + 1;
    }
    (slow, publishing, sent)
}

/// QoS 1 messages are not dropped for their size: a publisher whose message
/// takes a subscriber's connection queue over a quarter of `max_queued_bytes` reads
/// nothing more until that subscriber has taken enough (pacing), so the
/// broker holds about the byte bound for it, not every message sent. Once the
/// subscriber reads, it gets all of them, in order, and nothing was dropped.
// v5:MQTT-4.6.0-6
#[tokio::test]
async fn qos1_over_the_byte_bound_paces_the_publisher_and_drops_nothing() {
    // A timeout too long to add to the clock means "never", not a panic.
    let broker = start_with(byte_bound().pacing_timeout(Duration::MAX)).await;
    // The subscriber reads nothing: the publisher is held back long before
    // its 800 x 32 KiB (25 MiB) are all acknowledged.
    let (mut slow, publishing, sent) = publish_until_paced(&broker, "paced").await;
    assert!(
        sent < N,
        "all {sent} acknowledged while the subscriber read nothing"
    );
    read_all_in_order(&broker, &mut slow, N).await;
    let _publisher = publishing.await.unwrap();
    assert_eq!(broker.stats().dropped_messages, 0);
    wait_until("the publisher reads on", || {
        broker.stats().blocked_publishers == 0
    })
    .await;
    broker.shutdown().await;
}

/// Under `DropAndCount`, a QoS 1 publisher whose every subscriber lags is
/// paced once their queues hold a quarter of `max_queued_messages` (here
/// far below the byte bound): dropping its messages would help none of
/// them. The subscriber then gets every message, in order, and nothing was
/// dropped. (With a subscriber that keeps up, the slow one's messages are
/// dropped instead, as `drop_and_count_keeps_fast_subscribers_whole` shows.)
// v5:MQTT-4.6.0-6
#[tokio::test]
async fn qos1_to_lagging_subscribers_over_the_count_paces_the_publisher() {
    let broker = start_with(
        Broker::builder()
            .max_queued_messages(QUEUE)
            // Paced for as long as the test needs.
            .pacing_timeout(GUARD * 2),
    )
    .await;
    let (mut slow, publishing, sent) = publish_until_paced(&broker, "count").await;
    // 5 in flight, 20 in the session queue, a quarter of 20 in the
    // connection queue, and the one that took it over.
    assert!(
        sent <= 5 + QUEUE + QUEUE / 4 + 1,
        "{sent} acknowledged while the subscriber read nothing"
    );
    read_all_in_order(&broker, &mut slow, N).await;
    let _publisher = publishing.await.unwrap();
    assert_eq!(broker.stats().dropped_messages, 0);
    broker.shutdown().await;
}

/// A burst of QoS 1/2 messages read in one go is routed one message at a
/// time: the publisher is paced by the message that takes the queue over a
/// quarter of `max_queued_messages`, not after the whole burst, whose
/// surplus would find the queues full and be dropped. Here the subscriber,
/// which reads nothing, has room for 5 in flight + 8 queued + 8 in its
/// connection queue; the publisher sends 64 messages in one write.
async fn a_burst_is_paced_before_the_queues_are_full(qos: QoS) {
    use fulmar_codec::PubRel;
    const BURST: usize = 64;
    let broker = start_with(
        Broker::builder()
            .max_queued_messages(8)
            .pacing_timeout(GUARD * 2),
    )
    .await;
    let prefix = format!("burst{}", qos as u8);
    let mut slow = subscriber(
        &broker,
        &format!("slow-{prefix}"),
        &[&format!("{prefix}/#")],
    )
    .await;
    let mut publisher =
        Peer::connect(addr(&broker), ProtocolVersion::V5, &format!("pub-{prefix}")).await;
    let mut wire = bytes::BytesMut::new();
    for i in 0..BURST {
        let mut m = message(&format!("{prefix}/a"), i, i as u16 + 1);
        m.payload.truncate(8);
        m.qos = qos;
        Packet::from(m)
            .encode(ProtocolVersion::V5, &mut wire)
            .unwrap();
    }
    publisher.send_raw(&wire).await;
    let publishing = tokio::spawn(async move {
        let mut done = 0;
        while done < BURST {
            match publisher.recv().await {
                Packet::PubRec(rec) => {
                    assert!(!rec.reason_code.is_error());
                    publisher.send(PubRel::new(rec.packet_id)).await;
                }
                Packet::PubAck(_) | Packet::PubComp(_) => done += 1,
                other => panic!("expected an acknowledgement, got {other:?}"),
            }
        }
        publisher
    });
    wait_until("the publisher is paced", || {
        broker.stats().blocked_publishers == 1
    })
    .await;
    read_all_in_order(&broker, &mut slow, BURST).await;
    let _publisher = publishing.await.unwrap();
    assert_eq!(broker.stats().dropped_messages, 0);
    broker.shutdown().await;
}

// v5:MQTT-4.6.0-6
#[tokio::test]
async fn a_qos1_burst_is_paced_before_the_queues_are_full() {
    a_burst_is_paced_before_the_queues_are_full(QoS::AtLeastOnce).await;
}

// v5:MQTT-4.6.0-6
#[tokio::test]
async fn a_qos2_burst_is_paced_before_the_queues_are_full() {
    a_burst_is_paced_before_the_queues_are_full(QoS::ExactlyOnce).await;
}

/// A client subscribed to its own topic that does not read what it gets
/// back is never paced on its own queue: its connection reads nothing while
/// paced, its acknowledgements included, so that queue could not drain.
/// Its surplus is dropped instead, and every PUBLISH is acknowledged at once.
// v5:MQTT-4.6.0-6
#[tokio::test]
async fn a_publisher_is_not_paced_on_its_own_queue() {
    let broker = start_with(Broker::builder().max_queued_messages(QUEUE)).await;
    let mut peer = subscriber(&broker, "self", &["self/#"]).await;
    let watching = broker.clone();
    let watcher = tokio::spawn(async move {
        let mut paced = false;
        while !paced && watching.stats().messages_received < N as u64 {
            paced = watching.stats().blocked_publishers > 0;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        paced
    });
    for i in 0..N {
        let id = (i % 60_000) as u16 + 1;
        peer.send(message("self/a", i, id)).await;
        // Its own messages come back meanwhile; it takes none of them.
        loop {
            match peer.recv().await {
                Packet::PubAck(ack) => {
                    assert_eq!(ack.packet_id.get(), id);
                    break;
                }
                Packet::Publish(_) => {}
                other => panic!("expected PUBACK, got {other:?}"),
            }
        }
    }
    assert!(!watcher.await.unwrap(), "paced on its own queue");
    assert!(broker.stats().dropped_messages > 0);
    broker.shutdown().await;
}

/// A QoS 0 publisher whose every subscriber lags is paced too, rather than
/// dropped at the byte bound: reading it faster would help none of them.
/// (With a subscriber that keeps up, the slow one's messages are dropped
/// instead, as `queued_bytes_are_bounded` shows.)
// v5:MQTT-4.6.0-6 MQTT-4.3.1-1
#[tokio::test]
async fn qos0_to_lagging_subscribers_only_paces_the_publisher() {
    let broker = start_with(byte_bound().pacing_timeout(GUARD * 2)).await;
    let mut slow = subscriber(&broker, "slow-q0", &["paced0/#"]).await;
    let mut publisher = Peer::connect(addr(&broker), ProtocolVersion::V5, "pub-q0").await;
    let publishing = tokio::spawn(async move {
        for i in 0..N {
            let mut m = message("paced0/a", i, 1);
            m.qos = QoS::AtMostOnce;
            m.packet_id = None;
            publisher.send(m).await;
        }
        publisher
    });
    wait_until("the publisher is paced", || {
        broker.stats().blocked_publishers == 1
    })
    .await;
    assert_eq!(broker.stats().dropped_messages, 0);
    for i in 0..N {
        let got = take(&mut slow).await;
        assert_eq!((index(&got), got.qos), (i, QoS::AtMostOnce));
    }
    let _publisher = publishing.await.unwrap();
    assert_eq!(broker.stats().dropped_messages, 0);
    broker.shutdown().await;
}

/// A QoS 1 message whose copy for one subscriber is QoS 0 (granted QoS 0)
/// does not pace its publisher for that subscriber while another one keeps
/// up: the lagging QoS 0 subscriber loses messages instead.
// v5:MQTT-4.6.0-6
#[tokio::test]
async fn a_lagging_qos0_subscriber_does_not_pace_a_qos1_flow() {
    let broker = start_with(byte_bound()).await;
    let mut slow = Peer::connect(addr(&broker), ProtocolVersion::V5, "slow-q0-sub").await;
    slow.sub(1, "mixed/#", QoS::AtMostOnce).await;
    let mut fast = subscriber(&broker, "fast-q1-sub", &["mixed/#"]).await;
    let mut publisher = Peer::connect(addr(&broker), ProtocolVersion::V5, "pub-mixed").await;
    for i in 0..N {
        let id = (i % 60_000) as u16 + 1;
        publisher.send(message("mixed/a", i, id)).await;
        // Were the publisher paced for the slow subscriber, which reads
        // nothing, its next PUBLISH would not be read, nor acknowledged.
        match publisher.recv().await {
            Packet::PubAck(ack) => assert_eq!(ack.packet_id.get(), id),
            other => panic!("expected PUBACK, got {other:?}"),
        }
        let got = take(&mut fast).await;
        assert_eq!((index(&got), got.qos), (i, QoS::AtLeastOnce));
    }
    assert!(broker.stats().dropped_messages > 0);
    broker.shutdown().await;
}

/// A paced publisher's connection only stops reading: it still takes and
/// writes what is routed to it. Here the publisher, held back by a
/// subscriber that reads nothing, gets a message for its own subscription
/// while it waits; once the slow subscriber reads, everything arrives.
// v5:MQTT-4.6.0-6
#[tokio::test]
async fn a_paced_publisher_still_receives_its_own_messages() {
    use tokio::io::AsyncWriteExt;

    let broker = start_with(byte_bound().pacing_timeout(GUARD * 2)).await;
    let mut slow = subscriber(&broker, "slow-2", &["paced2/out"]).await;
    let publisher = subscriber(&broker, "pub-2", &["paced2/in"]).await;
    let Peer {
        stream,
        mut buf,
        version,
    } = publisher;
    let (mut rd, mut wr) = stream.into_split();
    // Writes without reading: blocks once the broker stops reading.
    let writing = tokio::spawn(async move {
        for i in 0..N {
            let mut wire = bytes::BytesMut::new();
            Packet::from(message("paced2/out", i, (i % 60_000) as u16 + 1))
                .encode(version, &mut wire)
                .unwrap();
            wr.write_all(&wire).await.unwrap();
        }
        wr
    });
    wait_until("the publisher is paced", || {
        broker.stats().blocked_publishers == 1
    })
    .await;
    broker
        .publish("paced2/in", &b"while paced"[..], QoS::AtLeastOnce, false)
        .unwrap();
    // Its PUBACKs come first; then the message.
    let got = loop {
        match recv_from(&mut rd, &mut buf, version).await {
            Packet::Publish(p) => break p,
            Packet::PubAck(_) => {}
            other => panic!("expected PUBACK or PUBLISH, got {other:?}"),
        }
    };
    assert_eq!(got.payload.as_ref(), b"while paced");
    // Held back meanwhile: its 25 MiB are not all written yet. (Not
    // `blocked_publishers`: the first wait may end as the slow subscriber's
    // session takes its first messages, before the one that lasts.)
    assert!(!writing.is_finished(), "the publisher was not held back");
    for i in 0..N {
        assert_eq!(index(&take(&mut slow).await), i);
    }
    let _wr = writing.await.unwrap();
    assert_eq!(broker.stats().dropped_messages, 0);
    broker.shutdown().await;
}

/// The next packet from a read half.
async fn recv_from(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut bytes::BytesMut,
    version: ProtocolVersion,
) -> Packet {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(packet) = fulmar_codec::decode(buf, version, u32::MAX).unwrap() {
            return packet;
        }
        let n = tokio::time::timeout(GUARD, rd.read_buf(buf))
            .await
            .expect("nothing received in time")
            .unwrap();
        assert!(n > 0, "connection closed");
    }
}

/// Under back-pressure, a QoS 2 message that waited `backpressure_timeout`
/// for a full queue was delivered already to the subscribers with room:
/// its publisher is disconnected (0x89) and, resending it, gets its PUBREC
/// at once without it being routed again, so those subscribers get it
/// exactly once. The copy for the full queue cannot follow without routing
/// it twice: it is dropped and counted.
// v5:MQTT-4.3.3-10 (PUBREC for a resent QoS 2 PUBLISH), MQTT-4.3.3-13
// (not delivered again to onward recipients), v5:MQTT-3.1.2-23 (the
// publisher's session kept across the disconnection).
#[tokio::test]
async fn a_qos2_message_held_back_too_long_is_delivered_once_and_its_drop_counted() {
    use fulmar_codec::{DisconnectReasonCode, PubComp, PubRec, PubRel};
    let mut limits = fulmar_broker::Limits::default();
    limits.overload_policy = OverloadPolicy::Backpressure;
    limits.backpressure_timeout = Duration::from_secs(1);
    limits.max_queued_messages = 1;
    let broker = start_with(Broker::builder().limits(limits)).await;
    // A subscriber that takes one message and never acknowledges it.
    let mut connect = Connect::new(ProtocolVersion::V5, MqttString::from("stuck"));
    connect.properties.receive_maximum = NonZeroU16::new(1);
    let (mut stuck, _) = Peer::connect_with(addr(&broker), connect).await;
    stuck.sub(1, "q2", QoS::ExactlyOnce).await;
    // One that completes every QoS 2 flow at once.
    let mut fast = subscriber(&broker, "fast", &[]).await;
    fast.sub(1, "q2", QoS::ExactlyOnce).await;
    let (got_tx, mut got) = mpsc::unbounded_channel();
    let fast_task = tokio::spawn(async move {
        loop {
            let p = fast.recv_publish().await;
            if let Some(id) = p.packet_id {
                fast.send(PubRec::new(id)).await;
                assert!(matches!(fast.recv().await, Packet::PubRel(_)));
                fast.send(PubComp::new(id)).await;
            }
            got_tx.send(p.payload).unwrap();
        }
    });
    let persistent = |clean: bool| {
        let mut c = Connect::new(ProtocolVersion::V5, MqttString::from("q2-pub"));
        c.clean_start = clean;
        c.keep_alive = 0;
        c.properties.session_expiry_interval = Some(300);
        c
    };
    let (mut publisher, _) = Peer::connect_with(addr(&broker), persistent(true)).await;
    let q2 = |n: u16, dup: bool| {
        let mut p = Publish::new(MqttString::from("q2"), Bytes::from(n.to_string()));
        p.qos = QoS::ExactlyOnce;
        p.packet_id = PacketId::new(n);
        p.dup = dup;
        p
    };
    // One QoS 2 flow after the other until one is held back too long.
    let mut n = 0;
    let held = loop {
        n += 1;
        assert!(n < 20, "never held back");
        publisher.send(q2(n, false)).await;
        match publisher.recv().await {
            Packet::PubRec(_) => {
                publisher.send(PubRel::new(PacketId::new(n).unwrap())).await;
                assert!(matches!(publisher.recv().await, Packet::PubComp(_)));
            }
            Packet::Disconnect(d) => {
                assert_eq!(d.reason_code, DisconnectReasonCode::ServerBusy);
                break n;
            }
            other => panic!("{other:?}"),
        }
    };
    // The fast subscriber got every message, the held one too.
    for i in 1..=held {
        assert_eq!(got.recv().await.unwrap(), i.to_string());
    }
    // The stuck subscriber's copy of it is lost, and counted.
    assert_eq!(broker.stats().dropped_messages, 1);
    drop(publisher);
    // The publisher resends it: acknowledged, not routed again.
    let (mut publisher, ack) = Peer::connect_with(addr(&broker), persistent(false)).await;
    assert!(ack.session_present);
    publisher.send(q2(held, true)).await;
    assert!(matches!(publisher.recv().await, Packet::PubRec(r) if r.packet_id.get() == held));
    publisher
        .send(PubRel::new(PacketId::new(held).unwrap()))
        .await;
    assert!(matches!(publisher.recv().await, Packet::PubComp(_)));
    let mut end = Publish::new(MqttString::from("q2"), Bytes::from_static(b"end"));
    end.qos = QoS::AtMostOnce;
    publisher.send(end).await;
    assert_eq!(got.recv().await.unwrap(), "end");
    // ... and nothing else but the QoS 0 copy for the stuck subscriber's
    // full queue.
    assert_eq!(broker.stats().dropped_messages, 2);
    fast_task.abort();
    drop(stuck);
    broker.shutdown().await;
}

/// A publisher held back by a full queue (back-pressure) still gives its
/// session up at once when its client connects again: the old connection
/// gets DISCONNECT 0x8E, instead of staying blocked until the back-pressure
/// timeout (30 s here) while the new one waits for the handover.
// v5:MQTT-3.1.4-3
#[tokio::test]
async fn a_publisher_held_back_is_taken_over_at_once() {
    use fulmar_codec::{DisconnectReasonCode, decode};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let broker = start_with(
        Broker::builder()
            .max_queued_messages(QUEUE)
            .overload_policy(OverloadPolicy::Backpressure),
    )
    .await;
    let _slow = subscriber(&broker, "slow", &["load/#"]).await;
    let publisher = Peer::connect(addr(&broker), ProtocolVersion::V5, "pub").await;
    let (mut read, mut write) = publisher.stream.into_split();
    let writer = tokio::spawn(async move {
        for i in 0..N {
            let mut wire = bytes::BytesMut::new();
            Packet::from(message("load/a", i, (i % 60_000) as u16 + 1))
                .encode(ProtocolVersion::V5, &mut wire)
                .unwrap();
            if write.write_all(&wire).await.is_err() {
                return;
            }
        }
    });
    wait_until("the publisher is held back", || {
        broker.stats().blocked_publishers == 1
    })
    .await;

    // The same client connects again.
    let _again = Peer::connect(addr(&broker), ProtocolVersion::V5, "pub").await;
    let mut buf = bytes::BytesMut::new();
    let disconnect = tokio::time::timeout(GUARD, async {
        loop {
            match decode(&mut buf, ProtocolVersion::V5, u32::MAX).unwrap() {
                Some(Packet::Disconnect(d)) => return d,
                Some(_) => {}
                None => assert!(read.read_buf(&mut buf).await.unwrap() > 0, "closed"),
            }
        }
    })
    .await
    .expect("the old connection is told at once");
    assert_eq!(
        disconnect.reason_code,
        DisconnectReasonCode::SessionTakenOver
    );
    writer.abort();
    broker.shutdown().await;
}

/// A client reconnects while the broker's connection to it is stuck in a
/// write (its old network path died: nothing is read any more). The old
/// connection gives the session up at once instead of at its write timeout,
/// so the new one gets it whole: the messages in flight are sent again with
/// DUP, rather than a session present with nothing in it (the new connection
/// used to take the session after a 3 s handover timeout, and the old one
/// dropped what it held when it ended).
// MQTT-4.4.0-1 v5:MQTT-3.2.2-2
#[tokio::test]
async fn a_session_taken_over_from_a_stuck_write_keeps_its_messages() {
    let mut limits = fulmar_broker::Limits::default();
    // Far beyond the test: only the take-over may end the stuck write.
    limits.write_timeout = Duration::from_secs(600);
    limits.max_queued_messages = 8;
    let broker = start_with(Broker::builder().limits(limits)).await;
    let mut connect = Connect::new(ProtocolVersion::V5, MqttString::from("roaming"));
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(300);
    let (mut old, _) = Peer::connect_with(addr(&broker), connect.clone()).await;
    old.sub(1, "load/#", QoS::AtLeastOnce).await;
    // The old peer reads nothing more. Publish until the broker drops
    // messages for it: its connection takes no more deliveries, stuck
    // writing (Receive Maximum 65 535: nothing holds messages back in the
    // session, so they fill the socket buffers).
    let payload = Bytes::from(vec![7u8; 64 * 1024]);
    let mut published = 0;
    while broker.stats().dropped_messages == 0 {
        assert!(published < 20_000, "the broker never dropped a message");
        broker
            .publish("load/x", payload.clone(), QoS::AtLeastOnce, false)
            .unwrap();
        published += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let dropped = broker.stats().dropped_messages;
    let (mut new, ack) = Peer::connect_with(addr(&broker), connect).await;
    assert!(ack.session_present);
    // The messages in flight on the old connection come again, with DUP.
    let first = new.recv_publish().await;
    assert!(first.dup, "{first:?}");
    assert_eq!(first.qos, QoS::AtLeastOnce);
    // Nothing the old connection held was dropped on the way.
    assert_eq!(broker.stats().dropped_messages, dropped);
    drop(old);
    drop(new);
    broker.shutdown().await;
}

/// The old connection of a session taken over while the broker was stuck
/// writing to it ends in a reset, not in an end of stream inside a packet
/// (the write it gave up on stopped half-way): its peer cannot mistake the
/// cut for a malformed packet, and the kernel drops at once what is still
/// queued for a peer that reads nothing, instead of keeping it until its
/// retries run out. (A stress round saw a 3.1.1 client whose CONNECT was
/// taken over before it read anything get a stream cut inside a PUBLISH.)
// v3:MQTT-3.1.4-2
#[tokio::test]
async fn a_connection_given_up_in_a_stuck_write_is_reset() {
    let mut limits = fulmar_broker::Limits::default();
    limits.write_timeout = Duration::from_secs(600);
    limits.max_queued_messages = 8;
    let broker = start_with(Broker::builder().limits(limits)).await;
    let connect = Connect::new(ProtocolVersion::V311, MqttString::from("cut"));
    let (mut old, _) = Peer::connect_with(addr(&broker), connect.clone()).await;
    old.sub(1, "load/#", QoS::AtMostOnce).await;
    // Odd sizes: the write that is given up stops inside a packet.
    let payload = Bytes::from(vec![7u8; 100_003]);
    let mut published = 0;
    while broker.stats().dropped_messages == 0 {
        assert!(published < 20_000, "the broker never dropped a message");
        broker
            .publish("load/x", payload.clone(), QoS::AtMostOnce, false)
            .unwrap();
        published += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (new, ack) = Peer::connect_with(addr(&broker), connect).await;
    assert_eq!(ack.reason_code, fulmar_codec::ConnectReasonCode::Success);
    // The old peer reads what reached it, then the end.
    let mut buf = vec![0u8; 256 * 1024];
    let end = loop {
        match tokio::time::timeout(GUARD, old.stream.read(&mut buf)).await {
            Ok(Ok(0)) => break Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => break Err(e.kind()),
            Err(_) => panic!("the old connection was never closed"),
        }
    };
    assert_eq!(end, Err(std::io::ErrorKind::ConnectionReset));
    drop(new);
    broker.shutdown().await;
}

/// A `Pacing::wait` dropped half-way (a bridge task aborted, a timeout)
/// leaves the counters and the store as a finished one would: the copy it
/// was handing over is given up and counted, and it no longer counts as a
/// blocked publisher. Both leaked (a review saw blocked_publishers stay at 3).
#[tokio::test]
async fn a_pacing_wait_dropped_half_way_leaves_nothing_behind() {
    let broker = start_with(
        Broker::builder()
            .max_queued_messages(2)
            .overload_policy(OverloadPolicy::Backpressure),
    )
    .await;
    let mut c = Connect::new(ProtocolVersion::V5, MqttString::from("stuck"));
    c.keep_alive = 0;
    c.properties.receive_maximum = NonZeroU16::new(1);
    let (mut stuck, _) = Peer::connect_with(addr(&broker), c).await;
    stuck.sub(1, "t/#", QoS::AtLeastOnce).await;
    let mut cut = 0;
    for i in 0..50 {
        let mut p = Publish::new(MqttString::from("t/x"), format!("{i}").into());
        p.qos = QoS::AtLeastOnce;
        let pacing = broker.inject_paced(&p).unwrap();
        // The subscriber reads nothing: once its queue is full, the wait
        // lasts until the back-pressure timeout (30 s); it is cut short.
        let wait = tokio::time::timeout(Duration::from_millis(50), pacing.wait());
        if wait.await.is_err() {
            cut += 1;
            if cut == 3 {
                break;
            }
        }
    }
    assert_eq!(cut, 3, "the queue never filled");
    let stats = broker.stats();
    assert_eq!(stats.blocked_publishers, 0);
    // A wait cut while the message was paced (queued already, its queue
    // over a quarter) gives up nothing; one cut while its copy waited for
    // room gives that copy up. Once the queue is full, every wait is that.
    assert!(
        (1..=3).contains(&stats.dropped_messages),
        "{}",
        stats.dropped_messages
    );
    drop(stuck);
    broker.shutdown().await;
}
