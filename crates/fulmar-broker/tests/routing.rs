//! PUBLISH routing, subscription options, retained messages and
//! authorization, between raw peers and in-process subscribers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::num::NonZeroU32;

use bytes::Bytes;
use common::{Peer, addr, next, publish, start, start_with};
use fulmar_broker::{Authorizer, Broker, ClientInfo};
use fulmar_codec::{
    Connect, MqttString, Packet, PacketId, PayloadFormat, ProtocolVersion::V5,
    ProtocolVersion::V311, PubAck, PubAckReasonCode, PubCompReasonCode, PubRecReasonCode, PubRel,
    QoS, RetainHandling, SubAckReasonCode, Subscribe, SubscriptionOptions, UnsubAckReasonCode,
    Unsubscribe,
};

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

// MQTT-3.8.4-1 MQTT-3.8.4-2 v3:MQTT-3.8.4-5 MQTT-3.3.4-1 v3:MQTT-4.3.2-2 v5:MQTT-4.3.2-4
// v3:MQTT-4.3.2-1 v5:MQTT-4.3.2-2 v3:MQTT-3.3.2-3 v3:MQTT-3.3.1-3
#[tokio::test]
async fn v3_raw_subscribe_publish_qos1_round_trip() {
    let broker = start().await;
    let mut sub = Peer::connect(addr(&broker), V311, "sub").await;
    // SUBSCRIBE id 1, "a" at QoS 1.
    sub.send_raw(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x01])
        .await;
    sub.expect_raw(&[0x90, 0x03, 0x00, 0x01, 0x01]).await;
    let mut publisher = Peer::connect(addr(&broker), V311, "pub").await;
    // PUBLISH QoS 1, DUP set, id 7, "a", payload "x".
    publisher
        .send_raw(&[0x3a, 0x06, 0x00, 0x01, b'a', 0x00, 0x07, b'x'])
        .await;
    publisher.expect_raw(&[0x40, 0x02, 0x00, 0x07]).await;
    // The subscriber gets it with the broker's own packet identifier, DUP 0.
    sub.expect_raw(&[0x32, 0x06, 0x00, 0x01, b'a', 0x00, 0x01, b'x'])
        .await;
    sub.send_raw(&[0x40, 0x02, 0x00, 0x01]).await;
    broker.shutdown().await;
}

// v5:MQTT-3.8.4-6 v5:MQTT-3.8.4-7 v5:MQTT-4.3.3-8 v5:MQTT-4.3.3-11 v3:MQTT-4.3.3-2
#[tokio::test]
async fn v5_raw_subscribe_and_qos2_flow() {
    let broker = start().await;
    let mut peer = Peer::connect(addr(&broker), V5, "q2").await;
    // SUBSCRIBE id 2, no properties, "a" at QoS 2.
    peer.send_raw(&[0x82, 0x07, 0x00, 0x02, 0x00, 0x00, 0x01, b'a', 0x02])
        .await;
    peer.expect_raw(&[0x90, 0x04, 0x00, 0x02, 0x00, 0x02]).await;
    // PUBLISH QoS 2 id 9 to "b" (nobody subscribed).
    peer.send_raw(&[0x34, 0x07, 0x00, 0x01, b'b', 0x00, 0x09, 0x00, b'x'])
        .await;
    peer.expect_raw(&[0x50, 0x03, 0x00, 0x09, 0x10]).await;
    peer.send_raw(&[0x62, 0x02, 0x00, 0x09]).await;
    peer.expect_raw(&[0x70, 0x02, 0x00, 0x09]).await;
    broker.shutdown().await;
}

// v3:MQTT-2.3.1-7 v5:MQTT-2.2.1-6
// v3:MQTT-3.9.3-1 v5:MQTT-3.9.3-1 v3:MQTT-3.8.4-4 v5:MQTT-3.8.4-5 v5:MQTT-3.9.3-2 v3:MQTT-3.9.3-2
#[tokio::test]
async fn suback_codes_follow_filter_order() {
    let broker = start().await;
    for version in [V311, V5] {
        let mut peer = Peer::connect(addr(&broker), version, "order").await;
        let filters = vec![
            (
                MqttString::from("x/#"),
                SubscriptionOptions::new(QoS::ExactlyOnce),
            ),
            (
                MqttString::from("x/#/y"),
                SubscriptionOptions::new(QoS::AtMostOnce),
            ),
            (
                MqttString::from("y"),
                SubscriptionOptions::new(QoS::AtLeastOnce),
            ),
        ];
        peer.send(Subscribe::new(pid(3), filters)).await;
        let Packet::SubAck(ack) = peer.recv().await else {
            panic!()
        };
        assert_eq!(ack.packet_id, pid(3));
        // 3.1.1 has one failure code, 0x80.
        let failure = match version {
            fulmar_codec::ProtocolVersion::V31 | V311 => SubAckReasonCode::UnspecifiedError,
            V5 => SubAckReasonCode::TopicFilterInvalid,
        };
        assert_eq!(
            ack.reason_codes,
            [
                SubAckReasonCode::GrantedQoS2,
                failure,
                SubAckReasonCode::GrantedQoS1
            ]
        );
    }
    broker.shutdown().await;
}

// MQTT-3.8.4-6 v5:MQTT-3.8.4-8 v3:MQTT-3.3.5-1
#[tokio::test]
async fn delivery_is_downgraded_to_the_granted_qos() {
    let broker = start().await;
    let mut s0 = Peer::connect(addr(&broker), V311, "s0").await;
    s0.sub(1, "t", QoS::AtMostOnce).await;
    let mut s1 = Peer::connect(addr(&broker), V5, "s1").await;
    s1.sub(1, "t", QoS::AtLeastOnce).await;
    let mut p = Peer::connect(addr(&broker), V5, "p").await;
    p.send(publish("t", "m", QoS::ExactlyOnce)).await;
    assert!(matches!(p.recv().await, Packet::PubRec(_)));
    let got0 = s0.recv_publish().await;
    assert_eq!((got0.qos, got0.packet_id), (QoS::AtMostOnce, None));
    let got1 = s1.recv_publish().await;
    assert_eq!(got1.qos, QoS::AtLeastOnce);
    assert_eq!(got1.payload, "m");
    broker.shutdown().await;
}

// v5:MQTT-3.3.4-2 v5:MQTT-3.3.4-3 v5:MQTT-3.3.4-4 v3:MQTT-3.3.5-1
#[tokio::test]
async fn overlapping_subscriptions_deliver_once_with_every_identifier() {
    let broker = start().await;
    let mut s = Peer::connect(addr(&broker), V5, "over").await;
    for (n, filter, qos) in [(1u16, "a/+", QoS::AtMostOnce), (2, "a/#", QoS::AtLeastOnce)] {
        let mut subscribe = Subscribe::new(
            pid(n),
            vec![(MqttString::from(filter), SubscriptionOptions::new(qos))],
        );
        subscribe.properties.subscription_identifier = NonZeroU32::new(u32::from(n) * 10);
        s.send(subscribe).await;
        assert!(matches!(s.recv().await, Packet::SubAck(_)));
    }
    broker
        .publish("a/b", "one", QoS::AtLeastOnce, false)
        .unwrap();
    broker
        .publish("a/b", "two", QoS::AtMostOnce, false)
        .unwrap();
    let first = s.recv_publish().await;
    assert_eq!(first.payload, "one");
    assert_eq!(first.qos, QoS::AtLeastOnce);
    let mut ids: Vec<u32> = first
        .properties
        .subscription_identifiers
        .iter()
        .map(|i| i.get())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [10, 20]);
    s.send(PubAck::new(first.packet_id.unwrap())).await;
    // The next packet is the second message, not a copy of the first.
    assert_eq!(s.recv_publish().await.payload, "two");
    broker.shutdown().await;
}

// v5:MQTT-3.8.3-3
#[tokio::test]
async fn no_local_skips_the_publishing_client() {
    let broker = start().await;
    let mut me = Peer::connect(addr(&broker), V5, "me").await;
    let mut options = SubscriptionOptions::new(QoS::AtLeastOnce);
    options.no_local = true;
    me.subscribe(1, "chat", options).await;
    me.send(publish("chat", "mine", QoS::AtLeastOnce)).await;
    assert!(matches!(me.recv().await, Packet::PubAck(_)));
    let mut other = Peer::connect(addr(&broker), V5, "other").await;
    other.send(publish("chat", "theirs", QoS::AtMostOnce)).await;
    assert_eq!(me.recv_publish().await.payload, "theirs");
    broker.shutdown().await;
}

// v5:MQTT-3.3.1-12 v5:MQTT-3.3.1-13 v3:MQTT-3.3.1-9
#[tokio::test]
async fn retain_as_published_controls_the_retain_flag_of_live_messages() {
    let broker = start().await;
    let mut keep = Peer::connect(addr(&broker), V5, "keep").await;
    let mut options = SubscriptionOptions::new(QoS::AtMostOnce);
    options.retain_as_published = true;
    keep.subscribe(1, "r", options).await;
    let mut clear = Peer::connect(addr(&broker), V5, "clear").await;
    clear.sub(1, "r", QoS::AtMostOnce).await;
    let mut v3 = Peer::connect(addr(&broker), V311, "v3").await;
    v3.sub(1, "r", QoS::AtMostOnce).await;
    broker.publish("r", "live", QoS::AtMostOnce, true).unwrap();
    assert!(keep.recv_publish().await.retain);
    assert!(!clear.recv_publish().await.retain);
    assert!(!v3.recv_publish().await.retain);
    broker.shutdown().await;
}

// v5:MQTT-3.3.2-4 v5:MQTT-3.3.2-15 v5:MQTT-3.3.2-16 v5:MQTT-3.3.2-17 v5:MQTT-3.3.2-18
// v5:MQTT-3.1.3-10 v5:MQTT-3.3.2-6
#[tokio::test]
async fn v5_properties_pass_through_unchanged() {
    let broker = start().await;
    let mut s = Peer::connect(addr(&broker), V5, "props-sub").await;
    s.sub(1, "req", QoS::AtMostOnce).await;
    let mut p = Peer::connect(addr(&broker), V5, "props-pub").await;
    let mut message = publish("req", "{}", QoS::AtMostOnce);
    let props = &mut message.properties;
    props.payload_format_indicator = Some(PayloadFormat::Utf8);
    props.message_expiry_interval = Some(3600);
    props.content_type = Some(MqttString::from("application/json"));
    props.response_topic = Some(MqttString::from("resp/1"));
    props.correlation_data = Some(Bytes::from_static(b"\x00\x01"));
    props.user_properties = vec![
        (MqttString::from("z"), MqttString::from("1")),
        (MqttString::from("a"), MqttString::from("2")),
        (MqttString::from("z"), MqttString::from("3")),
    ];
    let sent = message.properties.clone();
    p.send(message).await;
    let got = s.recv_publish().await;
    let mut expected = sent;
    // The expiry counts down while the broker holds the message (0 or 1 s here).
    let expiry = got.properties.message_expiry_interval.unwrap();
    assert!((3599..=3600).contains(&expiry));
    expected.message_expiry_interval = Some(expiry);
    assert_eq!(got.properties, expected);
    broker.shutdown().await;
}

/// A Message Expiry Interval of 0 is a lifetime that ends as the message
/// arrives: it goes to the subscribers connected then (forwarded with 0),
/// and, retained, it replaces the retained message but goes to no later
/// subscription. (It went to nobody.)
// v5:MQTT-3.3.2-5 v5:MQTT-3.3.2-6
#[tokio::test]
async fn v5_a_message_expiry_of_zero_reaches_the_subscribers_of_the_moment() {
    let broker = start().await;
    let mut s = Peer::connect(addr(&broker), V5, "zero-sub").await;
    s.sub(1, "zero", QoS::AtLeastOnce).await;
    let mut p = Peer::connect(addr(&broker), V5, "zero-pub").await;
    broker
        .publish("zero", "old", QoS::AtMostOnce, true)
        .unwrap();
    assert_eq!(s.recv_publish().await.payload, "old");
    let mut m = publish("zero", "now", QoS::AtLeastOnce);
    m.retain = true;
    m.properties.message_expiry_interval = Some(0);
    p.send(m).await;
    assert!(matches!(p.recv().await, Packet::PubAck(_)));
    let got = s.recv_publish().await;
    assert_eq!(got.payload, "now");
    assert_eq!(got.properties.message_expiry_interval, Some(0));
    // A later subscription gets neither it nor the message it replaced.
    let mut late = Peer::connect(addr(&broker), V5, "zero-late").await;
    late.sub(1, "zero", QoS::AtLeastOnce).await;
    broker
        .publish("zero", "after", QoS::AtMostOnce, false)
        .unwrap();
    assert_eq!(late.recv_publish().await.payload, "after");
    broker.shutdown().await;
}

// v5:MQTT-3.3.1-5 v5:MQTT-3.3.1-6 v5:MQTT-3.3.1-7 v5:MQTT-3.3.1-8 v5:MQTT-3.3.1-9
// v3:MQTT-3.3.1-5 v3:MQTT-3.3.1-6 v3:MQTT-3.3.1-8 v3:MQTT-3.3.1-10 v3:MQTT-3.3.1-11 v3:MQTT-3.3.1-12
#[tokio::test]
async fn retained_messages_are_stored_replaced_and_deleted() {
    let broker = start().await;
    let mut p = Peer::connect(addr(&broker), V311, "retainer").await;
    let mut m = publish("home/t", "20", QoS::AtLeastOnce);
    m.retain = true;
    p.send(m.clone()).await;
    assert!(matches!(p.recv().await, Packet::PubAck(_)));
    m.payload = Bytes::from_static(b"21");
    p.send(m.clone()).await;
    assert!(matches!(p.recv().await, Packet::PubAck(_)));
    // Not retained: does not replace.
    p.send(publish("home/t", "99", QoS::AtMostOnce)).await;
    let mut gone = publish("home/gone", "x", QoS::AtMostOnce);
    gone.retain = true;
    p.send(gone.clone()).await;
    gone.payload = Bytes::new();
    p.send(gone).await;
    p.disconnect().await;
    assert_eq!(broker.stats().retained, 1);

    for version in [V311, V5] {
        let mut s = Peer::connect(addr(&broker), version, "late").await;
        s.sub(1, "home/#", QoS::AtMostOnce).await;
        let got = s.recv_publish().await;
        assert_eq!(
            (got.topic.as_str(), &got.payload[..]),
            ("home/t", &b"21"[..])
        );
        assert!(got.retain);
        assert_eq!(got.qos, QoS::AtMostOnce);
        s.disconnect().await;
    }
    broker.shutdown().await;
}

// v5:MQTT-3.3.1-9 v5:MQTT-3.3.1-10 v5:MQTT-3.3.1-11 v5:MQTT-3.8.4-3 v5:MQTT-3.8.4-4
#[tokio::test]
async fn retain_handling_0_1_2() {
    let broker = start().await;
    broker.publish("rh", "kept", QoS::AtMostOnce, true).unwrap();
    broker
        .publish("marker", "m", QoS::AtMostOnce, false)
        .unwrap();
    let mut s = Peer::connect(addr(&broker), V5, "rh").await;
    s.sub(9, "marker", QoS::AtMostOnce).await;
    let mut options = SubscriptionOptions::new(QoS::AtMostOnce);
    for (handling, sends) in [
        (RetainHandling::SendAtSubscribeIfNew, true),
        (RetainHandling::SendAtSubscribeIfNew, false),
        (RetainHandling::SendAtSubscribe, true),
        (RetainHandling::DoNotSend, false),
    ] {
        options.retain_handling = handling;
        s.subscribe(1, "rh", options).await;
        broker
            .publish("marker", "m", QoS::AtMostOnce, false)
            .unwrap();
        let first = s.recv_publish().await;
        if sends {
            assert_eq!(
                (first.topic.as_str(), first.retain),
                ("rh", true),
                "{handling:?}"
            );
            assert_eq!(s.recv_publish().await.topic, "marker");
        } else {
            assert_eq!(first.topic, "marker", "{handling:?}");
        }
    }
    broker.shutdown().await;
}

// v5:MQTT-4.8.2-1 v5:MQTT-4.8.2-2 v5:MQTT-4.8.2-3
#[tokio::test]
async fn shared_subscription_delivers_each_message_to_one_member() {
    let broker = start().await;
    let mut members = Vec::new();
    for id in ["w1", "w2"] {
        let mut m = Peer::connect(addr(&broker), V5, id).await;
        m.sub(1, "$share/g/jobs/+", QoS::AtLeastOnce).await;
        m.sub(2, "end", QoS::AtMostOnce).await;
        members.push(m);
    }
    for _ in 0..4 {
        broker
            .publish("jobs/1", "job", QoS::AtMostOnce, false)
            .unwrap();
    }
    broker.publish("end", "", QoS::AtMostOnce, false).unwrap();
    let mut total = 0;
    for m in &mut members {
        loop {
            let p = m.recv_publish().await;
            if p.topic == "end" {
                break;
            }
            assert_eq!(p.topic, "jobs/1");
            total += 1;
        }
    }
    assert_eq!(total, 4);
    // v5:MQTT-3.8.3-4 No Local on a shared subscription is a protocol error.
    let m = &mut members[0];
    let mut raw = vec![0x82, 0x10, 0x00, 0x05, 0x00, 0x00, 0x0a];
    raw.extend_from_slice(b"$share/g/x");
    raw.push(0x04);
    m.send_raw(&raw).await;
    m.expect_raw(&[0xe0, 0x01, 0x82]).await;
    m.expect_closed().await;
    broker.shutdown().await;
}

// v5:MQTT-4.8.2-2 (each message to one member): a member whose client is
// offline (its session kept) is passed over while another is connected, so
// QoS 0 messages are not lost on it and QoS 1 ones do not wait for it.
#[tokio::test]
async fn a_shared_group_passes_over_a_member_that_is_offline() {
    let broker = start().await;
    let mut away = Connect::new(V5, MqttString::from("away"));
    away.properties.session_expiry_interval = Some(3600);
    let (mut a, _) = Peer::connect_with(addr(&broker), away).await;
    a.sub(1, "$share/g/t", QoS::AtLeastOnce).await;
    let mut b = Peer::connect(addr(&broker), V5, "here").await;
    b.sub(1, "$share/g/t", QoS::AtLeastOnce).await;
    a.disconnect().await;
    common::wait_until("a offline", || broker.stats().clients_connected == 1).await;
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        for _ in 0..4 {
            broker.publish("t", "x", qos, false).unwrap();
        }
    }
    for _ in 0..8 {
        let p = b.recv_publish().await;
        if let Some(id) = p.packet_id {
            b.send(PubAck::new(id)).await;
        }
    }
    assert_eq!(broker.stats().dropped_messages, 0);
    broker.shutdown().await;
}

// v5:MQTT-4.8.2-2: a shared group passes over a member whose queue is
// full while another has room (found by a review: round robin kept picking
// the full member, and every message it got was dropped; mosquitto 2.0
// drops them too). In-process members: the slow one never reads, its
// channel holds `max_queued_messages`.
#[tokio::test]
async fn a_shared_group_passes_over_a_member_whose_queue_is_full() {
    let broker = start_with(Broker::builder().max_queued_messages(4)).await;
    let _slow = broker.subscribe("$share/g/jobs").unwrap();
    let mut fast = broker.subscribe("$share/g/jobs").unwrap();
    let mut got = 0;
    for i in 0..40u32 {
        broker
            .publish("jobs", i.to_string(), QoS::AtLeastOnce, false)
            .unwrap();
        // The fast member takes what it was given at once.
        while let Some(Some(_)) = futures::FutureExt::now_or_never(fast.recv()) {
            got += 1;
        }
    }
    assert_eq!(broker.stats().dropped_messages, 0, "fast member got {got}");
    assert_eq!(got, 40 - 4, "the slow member holds its 4");
    broker.shutdown().await;
}

// v5:MQTT-4.8.2-2: a shared group sends each message to its least busy
// member (the fewest messages in flight or waiting), so that a worker that
// acknowledges slowly does not pile up jobs while another waits for work.
// `busy` holds 5 unacknowledged messages from before `quick` joined; every
// message after goes to `quick`, which acknowledges each at once (round
// robin, as before, gave `busy` every other one).
#[tokio::test]
async fn a_shared_group_prefers_its_least_busy_member() {
    let broker = start().await;
    let mut busy = Peer::connect(addr(&broker), V5, "busy").await;
    busy.sub(1, "$share/g/jobs", QoS::AtLeastOnce).await;
    for i in 0..5u32 {
        broker
            .publish("jobs", i.to_string(), QoS::AtLeastOnce, false)
            .unwrap();
        busy.recv_publish().await;
    }
    let mut quick = Peer::connect(addr(&broker), V5, "quick").await;
    quick.sub(1, "$share/g/jobs", QoS::AtLeastOnce).await;
    for i in 5..15u32 {
        broker
            .publish("jobs", i.to_string(), QoS::AtLeastOnce, false)
            .unwrap();
        let p = quick.recv_publish().await;
        assert_eq!(&p.payload[..], i.to_string().as_bytes());
        quick.send(PubAck::new(p.packet_id.unwrap())).await;
    }
    // Nothing more went to `busy`: its next packet answers a ping.
    busy.send(Packet::PingReq).await;
    assert!(matches!(busy.recv().await, Packet::PingResp));
    broker.shutdown().await;
}

// v5:MQTT-4.8.2-2: `$share/` is a shared subscription for a 3.1.1 client
// too (3.1.1 leaves `$` topics to the server; mosquitto does the same), so a
// session means the same by it whichever version resumes it.
#[tokio::test]
async fn a_v311_client_can_join_a_shared_subscription() {
    let broker = start().await;
    let mut old = Peer::connect(addr(&broker), V311, "old").await;
    old.sub(1, "$share/g/jobs/+", QoS::AtLeastOnce).await;
    let mut new = Peer::connect(addr(&broker), V5, "new").await;
    new.sub(1, "$share/g/jobs/+", QoS::AtLeastOnce).await;
    for _ in 0..2 {
        broker
            .publish("jobs/1", "job", QoS::AtMostOnce, false)
            .unwrap();
    }
    // Round robin: one each.
    assert_eq!(old.recv_publish().await.topic, "jobs/1");
    assert_eq!(new.recv_publish().await.topic, "jobs/1");
    old.send(Unsubscribe::new(
        PacketId::new(2).unwrap(),
        vec![MqttString::from("$share/g/jobs/+")],
    ))
    .await;
    assert!(matches!(old.recv().await, Packet::UnsubAck(_)));
    broker
        .publish("jobs/1", "job", QoS::AtMostOnce, false)
        .unwrap();
    assert_eq!(new.recv_publish().await.topic, "jobs/1");
    broker.shutdown().await;
}

// v5:MQTT-3.10.4-1 v5:MQTT-3.10.4-2 v5:MQTT-3.10.4-4 v5:MQTT-3.10.4-5 v5:MQTT-3.10.4-6
// v3:MQTT-3.10.4-1 v3:MQTT-3.10.4-2 v3:MQTT-3.10.4-4 v3:MQTT-3.10.4-5 v3:MQTT-3.10.4-6
#[tokio::test]
async fn unsubscribe_stops_delivery_and_is_always_acknowledged() {
    let broker = start().await;
    for version in [V311, V5] {
        let mut s = Peer::connect(addr(&broker), version, "unsub").await;
        s.sub(1, "u/+", QoS::AtMostOnce).await;
        s.sub(2, "end", QoS::AtMostOnce).await;
        s.send(Unsubscribe::new(
            pid(3),
            vec![MqttString::from("u/+"), MqttString::from("u/#")],
        ))
        .await;
        let Packet::UnsubAck(ack) = s.recv().await else {
            panic!()
        };
        assert_eq!(ack.packet_id, pid(3));
        if version == V5 {
            assert_eq!(
                ack.reason_codes,
                [
                    UnsubAckReasonCode::Success,
                    UnsubAckReasonCode::NoSubscriptionExisted
                ]
            );
        }
        broker.publish("u/1", "x", QoS::AtMostOnce, false).unwrap();
        broker.publish("end", "e", QoS::AtMostOnce, false).unwrap();
        assert_eq!(s.recv_publish().await.topic, "end");
        s.disconnect().await;
    }
    broker.shutdown().await;
}

// v5:MQTT-3.3.2-12 v5:MQTT-3.3.2-7
#[tokio::test]
async fn inbound_topic_aliases_are_resolved() {
    let broker = start().await;
    let mut sub = broker.subscribe("alias/#").unwrap();
    let mut p = Peer::connect(addr(&broker), V5, "aliaser").await;
    let mut m = publish("alias/long/name", "1", QoS::AtMostOnce);
    m.properties.topic_alias = std::num::NonZeroU16::new(1);
    p.send(m.clone()).await;
    m.topic = MqttString::from("");
    m.payload = Bytes::from_static(b"2");
    p.send(m).await;
    for payload in ["1", "2"] {
        let got = next(&mut sub).await;
        assert_eq!(
            (got.topic.as_str(), &got.payload[..]),
            ("alias/long/name", payload.as_bytes())
        );
    }
    broker.shutdown().await;
}

// MQTT-4.7.2-1
#[tokio::test]
async fn dollar_topics_are_not_matched_by_leading_wildcards() {
    let broker = start().await;
    let mut all = broker.subscribe("#").unwrap();
    let mut sys = broker.subscribe("$SYS/#").unwrap();
    broker
        .publish("$SYS/x", "s", QoS::AtMostOnce, false)
        .unwrap();
    broker
        .publish("plain", "p", QoS::AtMostOnce, false)
        .unwrap();
    assert_eq!(next(&mut sys).await.topic, "$SYS/x");
    assert_eq!(next(&mut all).await.topic, "plain");
    broker.shutdown().await;
}

#[tokio::test]
async fn in_process_publish_and_subscribe_share_the_payload() {
    let broker = start().await;
    let mut a = broker.subscribe("x/+").unwrap();
    let mut b = broker.subscribe("x/#").unwrap();
    let payload = Bytes::from(vec![7u8; 1024]);
    broker
        .publish("x/y", payload.clone(), QoS::AtLeastOnce, false)
        .unwrap();
    let (ga, gb) = (next(&mut a).await, next(&mut b).await);
    assert_eq!(ga.payload, payload);
    // One buffer for every receiver.
    assert_eq!(ga.payload.as_ptr(), gb.payload.as_ptr());
    assert_eq!(ga.payload.as_ptr(), payload.as_ptr());
    assert!(broker.subscribe("bad/#/x").is_err());
    assert!(
        broker
            .publish("bad/+", "x", QoS::AtMostOnce, false)
            .is_err()
    );
    drop(a);
    assert_eq!(broker.stats().subscriptions, 1);
    broker.shutdown().await;
}

// v5:MQTT-3.4.2-1 v5:MQTT-3.5.2-1: a message the broker routed to nobody is
// acknowledged with 0x10 No matching subscribers (as mosquitto does; the
// spec lets a server that knows it say so), at QoS 1 and 2, and the QoS 2
// flow goes on (0x10 is not an error); with a subscriber, or under 3.1.1,
// the acknowledgement is a plain Success.
#[tokio::test]
async fn v5_a_message_routed_to_nobody_is_acknowledged_with_0x10() {
    let broker = start().await;
    let mut p = Peer::connect(addr(&broker), V5, "lonely").await;
    // QoS 1: PUBACK 0x10, exact bytes.
    p.send_raw(&[
        0x32, 0x0a, 0x00, 0x04, b'n', b'o', b'n', b'e', 0x00, 0x01, 0x00, b'x',
    ])
    .await;
    p.expect_raw(&[0x40, 0x03, 0x00, 0x01, 0x10]).await;
    // QoS 2: PUBREC 0x10, then PUBREL / PUBCOMP as usual.
    p.send(publish("none", "x", QoS::ExactlyOnce)).await;
    let Packet::PubRec(rec) = p.recv().await else {
        panic!()
    };
    assert_eq!(rec.reason_code, PubRecReasonCode::NoMatchingSubscribers);
    p.send(PubRel::new(rec.packet_id)).await;
    let Packet::PubComp(comp) = p.recv().await else {
        panic!()
    };
    assert_eq!(comp.reason_code, PubCompReasonCode::Success);
    // A retained message with nobody subscribed: 0x10 too, and it is kept.
    let mut retained = publish("kept", "r", QoS::AtLeastOnce);
    retained.retain = true;
    p.send(retained).await;
    let Packet::PubAck(ack) = p.recv().await else {
        panic!()
    };
    assert_eq!(ack.reason_code, PubAckReasonCode::NoMatchingSubscribers);
    assert_eq!(broker.stats().retained, 1);
    // With a subscriber (here in process): Success.
    let mut watch = broker.subscribe("some").unwrap();
    p.send(publish("some", "x", QoS::AtLeastOnce)).await;
    let Packet::PubAck(ack) = p.recv().await else {
        panic!()
    };
    assert_eq!(ack.reason_code, PubAckReasonCode::Success);
    assert_eq!(next(&mut watch).await.topic, "some");
    // 3.1.1 has no reason codes: a plain PUBACK.
    let mut q = Peer::connect(addr(&broker), V311, "lonely3").await;
    q.send_raw(&[
        0x32, 0x09, 0x00, 0x04, b'n', b'o', b'n', b'e', 0x00, 0x01, b'x',
    ])
    .await;
    q.expect_raw(&[0x40, 0x02, 0x00, 0x01]).await;
    broker.shutdown().await;
}

/// Panics on every topic or filter under `boom`.
struct Explosive;

#[async_trait::async_trait]
impl Authorizer for Explosive {
    async fn authorize_publish(&self, _client: &ClientInfo, topic: &str) -> bool {
        assert!(!topic.starts_with("boom"), "the application's bug");
        true
    }
    async fn authorize_subscribe(&self, _client: &ClientInfo, filter: &str) -> bool {
        assert!(!filter.starts_with("boom"), "the application's bug");
        true
    }
    fn checks_reads(&self) -> bool {
        true
    }
    fn authorize_read(&self, _client: &ClientInfo, topic: &str) -> bool {
        assert!(topic != "open/boom", "the application's bug");
        true
    }
}

// A hook that panics is a denial, and the connection goes on as after any
// denial: PUBACK / SUBACK 0x87, a read denied is not delivered, the broker
// stays usable; when the client then goes away its will is published and it
// is no longer counted as connected (the panic used to unwind the
// connection's task past its clean-up).
#[tokio::test]
async fn a_panicking_authorizer_denies_and_the_connection_stays_sound() {
    let broker = start_with(Broker::builder().authorizer(Explosive)).await;
    let mut wills = broker.subscribe("wills/#").unwrap();
    let mut connect = Connect::new(V5, MqttString::from("careless"));
    connect.will = Some(fulmar_codec::Will::new(
        MqttString::from("wills/careless"),
        Bytes::from_static(b"gone"),
    ));
    let (mut p, _) = Peer::connect_with(addr(&broker), connect).await;
    let mut m = publish("boom", "x", QoS::AtLeastOnce);
    m.packet_id = PacketId::new(1);
    p.send(m).await;
    let Packet::PubAck(ack) = p.recv().await else {
        panic!()
    };
    assert_eq!(ack.reason_code, PubAckReasonCode::NotAuthorized);
    let ack = p
        .subscribe(2, "boom/#", SubscriptionOptions::new(QoS::AtMostOnce))
        .await;
    assert_eq!(ack.reason_codes, [SubAckReasonCode::NotAuthorized]);
    let ack = p
        .subscribe(3, "open/#", SubscriptionOptions::new(QoS::AtMostOnce))
        .await;
    assert_eq!(ack.reason_codes, [SubAckReasonCode::GrantedQoS0]);
    broker
        .publish("open/boom", "unreadable", QoS::AtMostOnce, false)
        .unwrap();
    broker
        .publish("open/ok", "fine", QoS::AtMostOnce, false)
        .unwrap();
    let Packet::Publish(got) = p.recv().await else {
        panic!()
    };
    assert_eq!(got.topic, "open/ok", "the denied read was not delivered");
    assert_eq!(broker.stats().clients_connected, 1);
    drop(p);
    assert_eq!(next(&mut wills).await.payload, "gone");
    common::wait_until("the client counted as gone", || {
        broker.stats().clients_connected == 0
    })
    .await;
    broker.shutdown().await;
}

struct DenySecret;

#[async_trait::async_trait]
impl Authorizer for DenySecret {
    async fn authorize_publish(&self, _client: &ClientInfo, topic: &str) -> bool {
        !topic.starts_with("secret")
    }
    async fn authorize_subscribe(&self, _client: &ClientInfo, filter: &str) -> bool {
        !filter.starts_with("secret")
    }
}

// v5:MQTT-3.1.4-2 v5:MQTT-4.3.3-9 v5:MQTT-3.9.3-2
#[tokio::test]
async fn v5_authorizer_denials_use_0x87() {
    let broker = start_with(Broker::builder().authorizer(DenySecret)).await;
    let mut watch = broker.subscribe("#").unwrap();
    let mut p = Peer::connect(addr(&broker), V5, "denied").await;
    let ack = p
        .subscribe(1, "secret/#", SubscriptionOptions::new(QoS::AtMostOnce))
        .await;
    assert_eq!(ack.reason_codes, [SubAckReasonCode::NotAuthorized]);
    // QoS 1: PUBACK 0x87, exact bytes.
    p.send_raw(&[
        0x32, 0x0c, 0x00, 0x06, b's', b'e', b'c', b'r', b'e', b't', 0x00, 0x04, 0x00, b'x',
    ])
    .await;
    p.expect_raw(&[0x40, 0x03, 0x00, 0x04, 0x87]).await;
    // QoS 2: PUBREC 0x87, and the identifier is free again at once.
    let mut m = publish("secret", "x", QoS::ExactlyOnce);
    p.send(m.clone()).await;
    let Packet::PubRec(rec) = p.recv().await else {
        panic!()
    };
    assert_eq!(rec.reason_code, PubRecReasonCode::NotAuthorized);
    m.topic = MqttString::from("open");
    p.send(m).await;
    let Packet::PubRec(rec) = p.recv().await else {
        panic!()
    };
    assert_eq!(rec.reason_code, PubRecReasonCode::Success);
    p.send(PubRel::new(pid(1))).await;
    assert!(matches!(p.recv().await, Packet::PubComp(_)));
    // Only the allowed message was routed.
    assert_eq!(next(&mut watch).await.topic, "open");
    let _ = PubAckReasonCode::NotAuthorized;
    broker.shutdown().await;
}

// v3:MQTT-3.3.5-2 v3:MQTT-3.9.3-2
#[tokio::test]
async fn v3_authorizer_denials_ack_normally_and_suback_0x80() {
    let broker = start_with(Broker::builder().authorizer(DenySecret)).await;
    let mut watch = broker.subscribe("#").unwrap();
    let mut p = Peer::connect(addr(&broker), V311, "denied3").await;
    p.send_raw(&[
        0x82, 0x0b, 0x00, 0x01, 0x00, 0x06, b's', b'e', b'c', b'r', b'e', b't', 0x00,
    ])
    .await;
    p.expect_raw(&[0x90, 0x03, 0x00, 0x01, 0x80]).await;
    p.send_raw(&[
        0x32, 0x0b, 0x00, 0x06, b's', b'e', b'c', b'r', b'e', b't', 0x00, 0x04, b'x',
    ])
    .await;
    p.expect_raw(&[0x40, 0x02, 0x00, 0x04]).await;
    p.send(publish("open", "y", QoS::AtMostOnce)).await;
    assert_eq!(next(&mut watch).await.topic, "open");
    broker.shutdown().await;
}

// v5:MQTT-3.8.4-7
#[tokio::test]
async fn subscription_limit_per_client_is_quota_exceeded() {
    let broker = start_with(Broker::builder().max_subscriptions_per_client(2)).await;
    let mut p = Peer::connect(addr(&broker), V5, "greedy").await;
    p.sub(1, "a", QoS::AtMostOnce).await;
    p.sub(2, "b", QoS::AtMostOnce).await;
    // Replacing an existing subscription is fine; a third filter is not.
    p.sub(3, "a", QoS::AtLeastOnce).await;
    let ack = p
        .subscribe(4, "c", SubscriptionOptions::new(QoS::AtMostOnce))
        .await;
    assert_eq!(ack.reason_codes, [SubAckReasonCode::QuotaExceeded]);
    broker.shutdown().await;
}

/// The subscriptions of one client are bounded in memory too
/// (`Limits::max_subscription_bytes_per_client`, 1 MiB by default): each
/// 128-level filter counts 256 + 255 + 48 x 128 = 6 655 bytes, so 157 fit
/// and the 158th is refused (5.0: 0x97, 3.1.1: 0x80). Resubscribing takes
/// nothing more; an unsubscribed filter gives its room back.
// v5:MQTT-3.8.4-7
#[tokio::test]
async fn subscription_bytes_per_client_are_bounded() {
    let broker = start().await;
    // Distinct 128-level filters of `a` and `+`, all 255 bytes long.
    let deep = |n: u32| {
        (0..128)
            .map(|level| {
                if level < 32 && n >> level & 1 == 1 {
                    "+"
                } else {
                    "a"
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    };
    for (version, refused) in [(V5, 0x97), (V311, 0x80)] {
        let mut p = Peer::connect(addr(&broker), version, "deep").await;
        for n in 0..157 {
            p.sub(1, &deep(n), QoS::AtMostOnce).await;
        }
        let ack = p
            .subscribe(2, &deep(157), SubscriptionOptions::new(QoS::AtMostOnce))
            .await;
        assert_eq!(ack.reason_codes[0].as_u8(), refused, "{version:?}");
        // The same filter again replaces its subscription.
        p.sub(3, &deep(5), QoS::AtLeastOnce).await;
        p.send(Unsubscribe::new(pid(4), vec![MqttString::from(deep(0))]))
            .await;
        assert!(matches!(p.recv().await, Packet::UnsubAck(_)));
        p.sub(5, &deep(157), QoS::AtMostOnce).await;
        let ack = p
            .subscribe(6, &deep(158), SubscriptionOptions::new(QoS::AtMostOnce))
            .await;
        assert_eq!(ack.reason_codes[0].as_u8(), refused, "{version:?}");
        // Short filters still fit beside them: 3 741 bytes are left.
        p.sub(7, "x/y", QoS::AtMostOnce).await;
        p.disconnect().await;
    }
    broker.shutdown().await;
}

// v5:MQTT-3.3.4-5
#[tokio::test]
async fn shared_and_plain_matches_deliver_separate_copies_with_their_identifiers() {
    let broker = start().await;
    let mut s = Peer::connect(addr(&broker), V5, "both").await;
    for (n, filter) in [(1u16, "s/x"), (2, "$share/g/s/x")] {
        let mut subscribe = Subscribe::new(
            pid(n),
            vec![(
                MqttString::from(filter),
                SubscriptionOptions::new(QoS::AtMostOnce),
            )],
        );
        subscribe.properties.subscription_identifier = NonZeroU32::new(u32::from(n));
        s.send(subscribe).await;
        assert!(matches!(s.recv().await, Packet::SubAck(_)));
    }
    broker.publish("s/x", "m", QoS::AtMostOnce, false).unwrap();
    let mut ids: Vec<Vec<u32>> = Vec::new();
    for _ in 0..2 {
        let p = s.recv_publish().await;
        ids.push(
            p.properties
                .subscription_identifiers
                .iter()
                .map(|i| i.get())
                .collect(),
        );
    }
    ids.sort();
    assert_eq!(ids, [vec![1], vec![2]]);
    broker.shutdown().await;
}

// MQTT-3.10.4-4 v3:MQTT-3.10.4-5 v5:MQTT-3.10.4-5
#[tokio::test]
async fn raw_unsuback_bytes() {
    let broker = start().await;
    let mut v3 = Peer::connect(addr(&broker), V311, "raw-unsub3").await;
    // UNSUBSCRIBE id 4, "a" (never subscribed): UNSUBACK anyway.
    v3.send_raw(&[0xa2, 0x05, 0x00, 0x04, 0x00, 0x01, b'a'])
        .await;
    v3.expect_raw(&[0xb0, 0x02, 0x00, 0x04]).await;
    let mut v5 = Peer::connect(addr(&broker), V5, "raw-unsub5").await;
    v5.send_raw(&[0xa2, 0x06, 0x00, 0x04, 0x00, 0x00, 0x01, b'a'])
        .await;
    // Reason code 0x11: no subscription existed.
    v5.expect_raw(&[0xb0, 0x04, 0x00, 0x04, 0x00, 0x11]).await;
    broker.shutdown().await;
}

// The broker enforces its own Receive Maximum: a client that exceeds it is
// disconnected with 0x93 (MQTT 5.0 section 3.3.4).
#[tokio::test]
async fn v5_client_exceeding_the_receive_maximum_is_disconnected() {
    let mut limits = fulmar_broker::Limits::default();
    limits.receive_maximum = std::num::NonZeroU16::new(1).unwrap();
    let broker = start_with(Broker::builder().limits(limits)).await;
    let mut p = Peer::connect(addr(&broker), V5, "flood").await;
    // Two QoS 2 messages without PUBREL: the second exceeds the maximum of 1.
    p.send_raw(&[0x34, 0x07, 0x00, 0x01, b'a', 0x00, 0x01, 0x00, b'x'])
        .await;
    p.expect_raw(&[0x50, 0x03, 0x00, 0x01, 0x10]).await;
    p.send_raw(&[0x34, 0x07, 0x00, 0x01, b'a', 0x00, 0x02, 0x00, b'x'])
        .await;
    p.expect_raw(&[0xe0, 0x01, 0x93]).await;
    p.expect_closed().await;
    broker.shutdown().await;
}

// v5:MQTT-4.8.2-6
#[tokio::test]
async fn shared_message_refused_by_its_member_is_not_sent_to_another() {
    let broker = start().await;
    let mut a = Peer::connect(addr(&broker), V5, "a").await;
    let mut b = Peer::connect(addr(&broker), V5, "b").await;
    a.sub(1, "$share/g/job", QoS::AtLeastOnce).await;
    b.sub(1, "$share/g/job", QoS::AtLeastOnce).await;
    broker
        .publish("job", "first", QoS::AtLeastOnce, false)
        .unwrap();
    // Whichever member got it refuses it with PUBACK 0x80.
    let (mut got, mut other, p) = tokio::select! {
        p = a.recv_publish() => (a, b, p),
        p = b.recv_publish() => (b, a, p),
    };
    assert_eq!(p.payload, "first");
    let mut nack = PubAck::new(p.packet_id.unwrap());
    nack.reason_code = PubAckReasonCode::UnspecifiedError;
    got.send(nack).await;
    // It leaves the group; the other member then gets only the next message.
    got.send(Unsubscribe::new(
        pid(2),
        vec![MqttString::from("$share/g/job")],
    ))
    .await;
    assert!(matches!(got.recv().await, Packet::UnsubAck(_)));
    broker
        .publish("job", "second", QoS::AtLeastOnce, false)
        .unwrap();
    let p = other.recv_publish().await;
    assert_eq!(p.payload, "second");
    broker.shutdown().await;
}

// v5:MQTT-4.8.2-5: a QoS 2 shared-subscription message sent to a member
// whose session then ends before delivery completed is not sent to another
// member of the group. (A QoS 1 one is: see
// `unacknowledged_shared_messages_go_to_another_member_when_a_session_ends`
// in tests/sessions.rs.)
#[tokio::test]
async fn v5_unacknowledged_shared_message_of_an_ended_session_is_not_redistributed() {
    let broker = start().await;
    let mut a = Peer::connect(addr(&broker), V5, "member-a").await;
    a.sub(1, "$share/g/s", QoS::ExactlyOnce).await;
    broker
        .publish("s", "first", QoS::ExactlyOnce, false)
        .unwrap();
    let got = a.recv_publish().await;
    assert_eq!(&got.payload[..], b"first");
    // No PUBREC; another member joins, then A's session ends (expiry 0).
    let mut b = Peer::connect(addr(&broker), V5, "member-b").await;
    b.sub(1, "$share/g/s", QoS::ExactlyOnce).await;
    drop(a);
    for _ in 0..500 {
        if broker.stats().sessions == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(broker.stats().sessions, 1, "A's session ended");
    broker
        .publish("s", "second", QoS::ExactlyOnce, false)
        .unwrap();
    // B's first message is the new one: "first" was not handed to B.
    let got = b.recv_publish().await;
    assert_eq!(&got.payload[..], b"second");
    broker.shutdown().await;
}

/// Fan-out encodes a message once per variant: subscribers that get the
/// same packet but for the packet identifier share one encoding, and each
/// still gets its own identifier, QoS, Subscription Identifier and protocol
/// version. The 3.1.1 copies carry no properties.
// MQTT-3.3.4-1 v3:MQTT-2.3.1-4 v5:MQTT-2.2.1-4 v5:MQTT-3.3.4-3 v5:MQTT-3.3.4-5 v3:MQTT-3.3.5-1 v5:MQTT-3.3.2-17
#[tokio::test]
async fn fan_out_encodes_once_per_variant() {
    let broker = start().await;
    let a = addr(&broker);
    let mut subs = Vec::new();
    for (n, version) in [(0u16, V5), (1, V5), (2, V5), (3, V5), (4, V311), (5, V311)] {
        let mut s = Peer::connect(a, version, &format!("fan-{n}")).await;
        s.sub(1, "fan/x", QoS::AtLeastOnce).await;
        // Earlier messages for this subscriber only, so that packet identifiers differ.
        s.sub(2, &format!("warm/{n}"), QoS::AtLeastOnce).await;
        for _ in 0..n {
            broker
                .publish(&format!("warm/{n}"), "w", QoS::AtLeastOnce, false)
                .unwrap();
            let warm = s.recv_publish().await;
            s.send(PubAck::new(warm.packet_id.unwrap())).await;
        }
        subs.push((n, version, s));
    }
    let mut low = Peer::connect(a, V5, "fan-qos0").await;
    low.sub(1, "fan/x", QoS::AtMostOnce).await;
    let mut tagged = Peer::connect(a, V5, "fan-id").await;
    let mut subscribe = Subscribe::new(
        pid(1),
        vec![(
            MqttString::from("fan/+"),
            SubscriptionOptions::new(QoS::AtLeastOnce),
        )],
    );
    subscribe.properties.subscription_identifier = NonZeroU32::new(77);
    tagged.send(subscribe).await;
    assert!(matches!(tagged.recv().await, Packet::SubAck(_)));

    let before = broker.stats().messages_sent_preencoded;
    let mut p = Peer::connect(a, V5, "fan-pub").await;
    let mut message = publish("fan/x", "payload", QoS::AtLeastOnce);
    message.properties.content_type = Some(MqttString::from("text/plain"));
    message.properties.user_properties = vec![(MqttString::from("k"), MqttString::from("v"))];
    p.send(message.clone()).await;
    assert!(matches!(p.recv().await, Packet::PubAck(_)));

    for (n, version, s) in &mut subs {
        let got = s.recv_publish().await;
        let mut expected = message.clone();
        // Packet identifiers are allocated in order per session: the warm-up took n.
        expected.packet_id = PacketId::new(*n + 1);
        if *version == V311 {
            expected.properties = Default::default();
        }
        assert_eq!(got, expected, "subscriber {n}");
    }
    let got = low.recv_publish().await;
    assert_eq!((got.qos, got.packet_id), (QoS::AtMostOnce, None));
    assert_eq!(got.properties, message.properties);
    let got = tagged.recv_publish().await;
    assert_eq!(
        got.properties.subscription_identifiers.as_slice(),
        [NonZeroU32::new(77).unwrap()]
    );
    assert_eq!(got.packet_id, PacketId::new(1));
    // Four 5.0 QoS 1 copies share one encoding, two 3.1.1 copies another;
    // the QoS 0 and the tagged copies are variants of their own.
    assert_eq!(broker.stats().messages_sent_preencoded - before, 3 + 1);
    broker.shutdown().await;
}

// v5:MQTT-3.3.1-12 v5:MQTT-3.3.4-5: a retained message reaching overlapping
// subscriptions of one client, one keeping RETAIN (Retain As Published) and
// one clearing it, goes as two copies, each with its own identifiers (one
// copy with RETAIN 1 broke the rule of the other subscription; found by a
// differential test against mosquitto, which sends two as well).
#[tokio::test]
async fn overlapping_subscriptions_that_differ_on_retain_get_a_copy_each() {
    let broker = start().await;
    let mut s = Peer::connect(addr(&broker), V5, "rap").await;
    for (n, filter, rap) in [(1u16, "or/+", true), (2, "or/#", false)] {
        let mut options = SubscriptionOptions::new(QoS::AtMostOnce);
        options.retain_as_published = rap;
        let mut subscribe = Subscribe::new(pid(n), vec![(MqttString::from(filter), options)]);
        subscribe.properties.subscription_identifier = NonZeroU32::new(u32::from(n));
        s.send(subscribe).await;
        assert!(matches!(s.recv().await, Packet::SubAck(_)));
    }
    broker.publish("or/t", "r", QoS::AtMostOnce, true).unwrap();
    let mut copies = Vec::new();
    for _ in 0..2 {
        let p = s.recv_publish().await;
        let ids: Vec<u32> = p
            .properties
            .subscription_identifiers
            .iter()
            .map(|i| i.get())
            .collect();
        copies.push((p.retain, ids));
    }
    copies.sort();
    assert_eq!(copies, [(false, vec![2]), (true, vec![1])]);
    // Not retained: one copy, as before.
    broker
        .publish("or/t", "live", QoS::AtMostOnce, false)
        .unwrap();
    let p = s.recv_publish().await;
    assert_eq!((&p.payload[..], p.retain), (&b"live"[..], false));
    assert_eq!(p.properties.subscription_identifiers.len(), 2);
    broker.shutdown().await;
}

// v3:MQTT-3.3.1-9: a 3.1.1 client that resumes a session a 5.0 client made
// with Retain As Published gets RETAIN 0 on what matches its subscriptions,
// live or queued while it was away (it got RETAIN 1; mosquitto too).
#[tokio::test]
async fn a_3_1_1_client_resuming_a_5_0_session_gets_retain_cleared() {
    let broker = start().await;
    let connect = |version| {
        let mut c = Connect::new(version, MqttString::from("xv"));
        c.keep_alive = 0;
        c.clean_start = false;
        if version == V5 {
            c.properties.session_expiry_interval = Some(60);
        }
        c
    };
    let (mut v5, _) = Peer::connect_with(addr(&broker), connect(V5)).await;
    let mut options = SubscriptionOptions::new(QoS::AtLeastOnce);
    options.retain_as_published = true;
    let subscribe = Subscribe::new(pid(1), vec![(MqttString::from("xv/#"), options)]);
    v5.send(subscribe).await;
    assert!(matches!(v5.recv().await, Packet::SubAck(_)));
    v5.disconnect().await;
    broker
        .publish("xv/away", "q", QoS::AtLeastOnce, true)
        .unwrap();
    let (mut v3, ack) = Peer::connect_with(addr(&broker), connect(V311)).await;
    assert!(ack.session_present);
    let queued = v3.recv_publish().await;
    assert_eq!((&queued.topic[..], queued.retain), ("xv/away", false));
    v3.send(PubAck::new(queued.packet_id.unwrap())).await;
    broker
        .publish("xv/live", "l", QoS::AtLeastOnce, true)
        .unwrap();
    let live = v3.recv_publish().await;
    assert_eq!((&live.topic[..], live.retain), ("xv/live", false));
    broker.shutdown().await;
}

// `retained_matching` gives at most `max` and says whether more matched
// (it stops looking there: a bridge asks at each connection, under the
// broker's lock); `retained_matching_where` counts only the topics wanted.
#[tokio::test]
async fn retained_matching_is_bounded_and_says_whether_more_matched() {
    let broker = start().await;
    for t in 0..10 {
        let mut m = fulmar_codec::Publish::new(MqttString::from(format!("r/{t}")), "v".into());
        m.retain = true;
        broker.inject(&m).unwrap();
    }
    let filter: fulmar_topic::TopicFilter = "r/+".parse().unwrap();
    let (found, more) = broker.retained_matching(&filter, 3);
    assert_eq!((found.len(), more), (3, true));
    assert!(found.iter().all(|m| m.retain));
    let (found, more) = broker.retained_matching(&filter, 10);
    assert_eq!((found.len(), more), (10, false));
    let (found, more) = broker.retained_matching(&filter, 0);
    assert_eq!((found.len(), more), (0, true));
    let odd = |t: &fulmar_topic::TopicName| t.as_str().ends_with(['1', '3', '5', '7', '9']);
    let (found, more) = broker.retained_matching_where(&filter, 5, odd);
    assert_eq!((found.len(), more), (5, false));
    assert!(found.iter().all(|m| odd(&m.topic.parse().unwrap())));
    let (found, more) = broker.retained_matching_where(&filter, 4, odd);
    assert_eq!((found.len(), more), (4, true));
    broker.shutdown().await;
}

// v5:MQTT-4.8.2-2: the same with client members: a member that never
// acknowledges (Receive Maximum 1) fills its session queue; the group gives
// what follows to the member that keeps up (failed before: 20 of 40).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_group_passes_over_a_client_whose_queues_are_full() {
    let broker = start_with(Broker::builder().max_queued_messages(4)).await;
    let mut slow = Connect::new(V5, MqttString::from("slow"));
    slow.properties.receive_maximum = std::num::NonZeroU16::new(1);
    let (mut s, _) = Peer::connect_with(addr(&broker), slow).await;
    s.sub(1, "$share/g/jobs", QoS::AtLeastOnce).await;
    let mut f = Peer::connect(addr(&broker), V5, "fast").await;
    f.sub(1, "$share/g/jobs", QoS::AtLeastOnce).await;
    let reader = tokio::spawn(async move {
        let mut got = 0u32;
        while got < 1000 {
            let r = tokio::time::timeout(std::time::Duration::from_millis(500), f.recv()).await;
            match r {
                Ok(Packet::Publish(p)) => {
                    got += 1;
                    f.send(PubAck::new(p.packet_id.unwrap())).await;
                }
                Ok(other) => panic!("{other:?}"),
                Err(_) => break,
            }
        }
        got
    });
    for i in 0..40u32 {
        broker
            .publish("jobs", i.to_string(), QoS::AtLeastOnce, false)
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let got = reader.await.unwrap();
    let dropped = broker.stats().dropped_messages;
    drop(s);
    assert_eq!(dropped, 0, "fast got {got}");
    broker.shutdown().await;
}

// v5:MQTT-3.3.1-5 v3:MQTT-3.3.1-5 v5:MQTT-3.3.1-6 v3:MQTT-3.3.1-10
// Packets that arrived before the end of the stream are handled: a client
// that publishes several QoS 0 messages (here retained ones and their
// deletions) and closes at once loses none of them, even when they are all
// read in one batch together with the end of the stream.
#[tokio::test]
async fn publishes_read_with_the_end_of_the_stream_are_routed() {
    let broker = start().await;
    for version in [V311, V5] {
        let mut live = broker.subscribe("eof/#").unwrap();
        let mut setter = Peer::connect(addr(&broker), version, "setter").await;
        let mut wire = bytes::BytesMut::new();
        for n in 0..4 {
            let mut m = publish(&format!("eof/{n}"), "x", QoS::AtMostOnce);
            m.retain = true;
            Packet::from(m).encode(version, &mut wire).unwrap();
        }
        setter.send_raw(&wire).await;
        setter.disconnect().await;
        for _ in 0..4 {
            assert_eq!(next(&mut live).await.payload, &b"x"[..]);
        }
        assert_eq!(broker.stats().retained, 4);

        let mut clearer = Peer::connect(addr(&broker), version, "clearer").await;
        let mut wire = bytes::BytesMut::new();
        for n in 0..4 {
            let mut m = publish(&format!("eof/{n}"), "", QoS::AtMostOnce);
            m.retain = true;
            Packet::from(m).encode(version, &mut wire).unwrap();
        }
        // Every packet and the end of the stream in one write: no DISCONNECT.
        clearer.send_raw(&wire).await;
        tokio::io::AsyncWriteExt::shutdown(&mut clearer.stream)
            .await
            .unwrap();
        clearer.expect_closed().await;
        for _ in 0..4 {
            assert!(next(&mut live).await.payload.is_empty());
        }
        assert_eq!(broker.stats().retained, 0, "{version:?}");
    }
    broker.shutdown().await;
}
