//! Idle plain-TCP connections hibernate (`Limits::hibernate_after`): the
//! task ends and one poller thread watches the socket. Every flow that can
//! reach a hibernating connection wakes it, and the client sees nothing of
//! it: messages routed to it, its own packets, its keep-alive deadline, a
//! take-over, its socket closing, the broker shutting down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{GUARD, Peer, addr, publish, start_with};
use fulmar_broker::{Broker, BrokerHandle};
use fulmar_codec::{
    Connect, DisconnectReasonCode, MqttString, Packet, PacketId, ProtocolVersion, PubAck, QoS, Will,
};

/// Hibernation after 50 ms of idleness, so that tests see it quickly.
async fn broker() -> BrokerHandle {
    start_with(Broker::builder().hibernate_after(Some(Duration::from_millis(50)))).await
}

/// Waits until exactly `n` connections hibernate.
async fn hibernating(broker: &BrokerHandle, n: u64) {
    let wait = async {
        while broker.stats().connections_hibernating != n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(GUARD, wait).await.unwrap_or_else(|_| {
        panic!(
            "expected {n} hibernating connections, {} after {GUARD:?}",
            broker.stats().connections_hibernating
        )
    });
}

fn versions() -> [ProtocolVersion; 2] {
    [ProtocolVersion::V311, ProtocolVersion::V5]
}

#[tokio::test]
async fn a_hibernating_subscriber_gets_its_messages_and_hibernates_again() {
    // MQTT-4.3.2-1 MQTT-4.3.2-2 MQTT-4.3.2-3 (QoS 1 to a subscriber, in order)
    for version in versions() {
        let broker = broker().await;
        let mut sub = Peer::connect(addr(&broker), version, "sub").await;
        sub.sub(1, "t/#", QoS::AtLeastOnce).await;
        hibernating(&broker, 1).await;
        let mut publisher = Peer::connect(addr(&broker), version, "pub").await;
        for i in 1..=3u16 {
            let mut message = publish("t/a", "hello", QoS::AtLeastOnce);
            message.packet_id = PacketId::new(i);
            publisher.send(message).await;
            assert!(matches!(publisher.recv().await, Packet::PubAck(_)));
        }
        for _ in 1..=3 {
            let got = sub.recv_publish().await;
            assert_eq!(&got.topic[..], "t/a");
            assert_eq!(&got.payload[..], b"hello");
            assert_eq!(got.qos, QoS::AtLeastOnce);
            let id = got.packet_id.unwrap();
            sub.send(PubAck::new(id)).await;
        }
        // Both go back to sleep once everything is acknowledged.
        hibernating(&broker, 2).await;
        // And wake again for the next message.
        publisher
            .send(publish("t/b", "again", QoS::AtMostOnce))
            .await;
        assert_eq!(&sub.recv_publish().await.payload[..], b"again");
        hibernating(&broker, 2).await;
        assert_eq!(broker.stats().clients_connected, 2);
        broker.shutdown().await;
    }
}

// A connection that has read part of a packet is not idle: it must not
// hibernate (which drops its read buffer) while the rest is on its way.
// MQTT-4.6.0-6 (the message is delivered, not lost)
#[tokio::test]
async fn a_connection_with_part_of_a_packet_does_not_hibernate() {
    for version in versions() {
        let broker = broker().await;
        let mut sub = Peer::connect(addr(&broker), version, "sub").await;
        sub.sub(1, "t/#", QoS::AtMostOnce).await;
        let mut publisher = Peer::connect(addr(&broker), version, "pub").await;
        let mut wire = bytes::BytesMut::new();
        Packet::from(publish("t/half", "split in two", QoS::AtMostOnce))
            .encode(version, &mut wire)
            .unwrap();
        let (head, rest) = wire.split_at(wire.len() / 2);
        let read = broker.stats().bytes_received + head.len() as u64;
        publisher.send_raw(head).await;
        // The subscriber, idle as long, hibernates; the publisher does not.
        hibernating(&broker, 1).await;
        while broker.stats().bytes_received < read {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(broker.stats().connections_hibernating, 1);
        publisher.send_raw(rest).await;
        let got = sub.recv_publish().await;
        assert_eq!(&got.topic[..], "t/half");
        assert_eq!(&got.payload[..], b"split in two");
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn a_hibernating_connection_answers_pingreq() {
    // MQTT-3.12.4-1
    for version in versions() {
        let broker = broker().await;
        let mut peer = Peer::connect(addr(&broker), version, "pinger").await;
        for _ in 0..3 {
            hibernating(&broker, 1).await;
            peer.send_raw(&[0xC0, 0x00]).await;
            peer.expect_raw(&[0xD0, 0x00]).await;
        }
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn keep_alive_ends_a_hibernating_connection_and_its_will_is_published() {
    // v3: MQTT-3.1.2-24 v5: MQTT-3.1.2-22 (keep alive x 1.5, then closed)
    // MQTT-3.1.2-8 (the will is published when the connection is closed without DISCONNECT)
    for version in versions() {
        let broker = broker().await;
        let mut watcher = Peer::connect(addr(&broker), version, "watcher").await;
        watcher.sub(1, "wills/#", QoS::AtMostOnce).await;
        let mut connect = Connect::new(version, MqttString::from("sleepy".to_owned()));
        connect.keep_alive = 1;
        connect.will = Some(Will::new(
            MqttString::from("wills/sleepy".to_owned()),
            bytes::Bytes::from_static(b"gone"),
        ));
        let (mut sleepy, ack) = Peer::connect_with(addr(&broker), connect).await;
        assert!(!ack.reason_code.is_error());
        hibernating(&broker, 2).await;
        // Nothing is sent: 1.5 s later the broker closes the connection.
        let will = watcher.recv_publish().await;
        assert_eq!(&will.topic[..], "wills/sleepy");
        assert_eq!(&will.payload[..], b"gone");
        if version == ProtocolVersion::V5 {
            sleepy
                .expect_disconnect(DisconnectReasonCode::KeepAliveTimeout)
                .await;
        }
        sleepy.expect_closed().await;
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn a_take_over_wakes_the_hibernating_connection() {
    // v3: MQTT-3.1.4-2 v5: MQTT-3.1.4-3 (the existing client is disconnected, 5.0 with 0x8E)
    for version in versions() {
        let broker = broker().await;
        let mut old = Peer::connect(addr(&broker), version, "same").await;
        hibernating(&broker, 1).await;
        let _new = Peer::connect(addr(&broker), version, "same").await;
        if version == ProtocolVersion::V5 {
            old.expect_disconnect(DisconnectReasonCode::SessionTakenOver)
                .await;
        }
        old.expect_closed().await;
        hibernating(&broker, 1).await;
        assert_eq!(broker.stats().clients_connected, 1);
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn a_client_closing_its_socket_while_hibernating_is_gone() {
    // MQTT-3.1.2-8 (the will is published when the connection is closed without DISCONNECT)
    let broker = broker().await;
    let mut watcher = Peer::connect(addr(&broker), ProtocolVersion::V5, "watcher").await;
    watcher.sub(1, "wills/#", QoS::AtMostOnce).await;
    let mut connect = Connect::new(ProtocolVersion::V5, MqttString::from("leaver".to_owned()));
    connect.will = Some(Will::new(
        MqttString::from("wills/leaver".to_owned()),
        bytes::Bytes::from_static(b"bye"),
    ));
    let (leaver, _) = Peer::connect_with(addr(&broker), connect).await;
    hibernating(&broker, 2).await;
    drop(leaver);
    assert_eq!(&watcher.recv_publish().await.payload[..], b"bye");
    hibernating(&broker, 1).await;
    assert_eq!(broker.stats().clients_connected, 1);
    assert_eq!(broker.stats().connections, 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn shutdown_wakes_hibernating_connections() {
    // v5: MQTT-3.14.2-1 (the server's DISCONNECT carries a reason code: 0x8B Server shutting down)
    let broker = broker().await;
    let mut peers = Vec::new();
    for i in 0..4 {
        let id = format!("p{i}");
        peers.push(Peer::connect(addr(&broker), ProtocolVersion::V5, &id).await);
    }
    hibernating(&broker, 4).await;
    tokio::time::timeout(GUARD, broker.shutdown())
        .await
        .expect("shutdown waited for hibernating connections");
    for mut peer in peers {
        peer.expect_disconnect(DisconnectReasonCode::ServerShuttingDown)
            .await;
        peer.expect_closed().await;
    }
    assert_eq!(broker.stats().connections, 0);
}

#[tokio::test]
async fn a_new_quiet_connection_hibernates_long_before_hibernate_after() {
    // (memory: idle connections give their memory back soon, no spec statement)
    // 32 s configured: the first hibernation comes after 125 ms of idleness,
    // the second after 250 ms (both well inside GUARD, which is shorter than 32 s).
    let broker = start_with(Broker::builder().hibernate_after(Some(Duration::from_secs(32)))).await;
    let mut peer = Peer::connect(addr(&broker), ProtocolVersion::V5, "quiet").await;
    hibernating(&broker, 1).await;
    // MQTT-3.12.4-1 (a PINGREQ wakes it and is answered)
    peer.send_raw(&[0xC0, 0x00]).await;
    peer.expect_raw(&[0xD0, 0x00]).await;
    hibernating(&broker, 1).await;
    peer.send_raw(&[0xC0, 0x00]).await;
    peer.expect_raw(&[0xD0, 0x00]).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn nothing_hibernates_when_it_is_off() {
    // (memory: a limit turned off, no spec statement)
    let broker = start_with(Broker::builder().hibernate_after(None)).await;
    let mut peer = Peer::connect(addr(&broker), ProtocolVersion::V5, "awake").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(broker.stats().connections_hibernating, 0);
    peer.send_raw(&[0xC0, 0x00]).await;
    peer.expect_raw(&[0xD0, 0x00]).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_wake_and_sleep_again_without_losing_a_message() {
    // MQTT-4.3.2-1 MQTT-4.3.2-2 MQTT-4.3.2-3 (QoS 1 to each subscriber)
    // v5: MQTT-4.6.0-5 (v3: MQTT-4.6.0-6) (in order per topic)
    const SUBSCRIBERS: usize = 64;
    const ROUNDS: u16 = 5;
    const PER_ROUND: u16 = 20;
    let broker = broker().await;
    let mut subs = Vec::new();
    for i in 0..SUBSCRIBERS {
        let version = versions()[i % 2];
        let mut sub = Peer::connect(addr(&broker), version, &format!("s{i}")).await;
        sub.sub(1, "all", QoS::AtLeastOnce).await;
        subs.push(sub);
    }
    let mut publisher = Peer::connect(addr(&broker), ProtocolVersion::V5, "pub").await;
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut sub| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                while got.len() < usize::from(ROUNDS * PER_ROUND) {
                    let message = sub.recv_publish().await;
                    sub.send(PubAck::new(message.packet_id.unwrap())).await;
                    got.push(message.payload);
                }
                (sub, got)
            })
        })
        .collect();
    let mut next = 0u16;
    for _ in 0..ROUNDS {
        // Everyone, the publisher included, asleep before the round.
        hibernating(&broker, SUBSCRIBERS as u64 + 1).await;
        for _ in 0..PER_ROUND {
            next += 1;
            let mut message = publish("all", "", QoS::AtLeastOnce);
            message.packet_id = PacketId::new(next);
            message.payload = bytes::Bytes::from(next.to_be_bytes().to_vec());
            publisher.send(message).await;
            assert!(matches!(publisher.recv().await, Packet::PubAck(_)));
        }
    }
    for reader in readers {
        let (_sub, got) = tokio::time::timeout(GUARD, reader).await.unwrap().unwrap();
        let expected: Vec<bytes::Bytes> = (1..=ROUNDS * PER_ROUND)
            .map(|n| bytes::Bytes::from(n.to_be_bytes().to_vec()))
            .collect();
        assert_eq!(got, expected);
    }
    assert_eq!(broker.stats().dropped_messages, 0);
    broker.shutdown().await;
}

/// Lets a 5.0 client publish to `users/{its user name}/{its client id}` only.
struct OwnTopic;

#[async_trait::async_trait]
impl fulmar_broker::Authorizer for OwnTopic {
    async fn authorize_publish(&self, client: &fulmar_broker::ClientInfo, topic: &str) -> bool {
        let user = client.username.as_deref().unwrap_or("-");
        client.protocol_version == ProtocolVersion::V5
            && topic == format!("users/{user}/{}", client.client_id)
    }
    async fn authorize_subscribe(&self, _: &fulmar_broker::ClientInfo, _: &str) -> bool {
        true
    }
}

#[tokio::test]
async fn a_woken_connection_is_authorized_as_the_same_client() {
    // (authorization across a hibernation, no spec statement) The client's
    // identifier, user name and protocol version survive the compact
    // dormant form.
    let broker = start_with(
        Broker::builder()
            .hibernate_after(Some(Duration::from_millis(50)))
            .authorizer(OwnTopic),
    )
    .await;
    let mut connect = Connect::new(ProtocolVersion::V5, MqttString::from("dev1"));
    connect.username = Some(MqttString::from("alice"));
    let (mut peer, _) = Peer::connect_with(addr(&broker), connect).await;
    for (id, topic, allowed) in [
        (1, "users/alice/dev1", true),
        (2, "users/bob/dev1", false),
        (3, "users/alice/dev1", true),
    ] {
        hibernating(&broker, 1).await;
        let mut message = publish(topic, "x", QoS::AtLeastOnce);
        message.packet_id = PacketId::new(id);
        peer.send(message).await;
        let Packet::PubAck(ack) = peer.recv().await else {
            panic!("expected PUBACK")
        };
        // Allowed: accepted, and nobody is subscribed (0x10).
        let code = if allowed {
            fulmar_codec::PubAckReasonCode::NoMatchingSubscribers
        } else {
            fulmar_codec::PubAckReasonCode::NotAuthorized
        };
        assert_eq!(ack.reason_code, code, "{topic}");
    }
    broker.shutdown().await;
}

// A message with properties (delivered with shared encoded headers) that the
// session drops, here too large for the client (v5:MQTT-3.1.2-25), does not
// keep the connection awake for good.
#[tokio::test]
async fn a_message_dropped_for_its_size_does_not_keep_a_connection_awake() {
    let broker = broker().await;
    let mut c = Connect::new(ProtocolVersion::V5, MqttString::from("small"));
    c.keep_alive = 0;
    c.properties.maximum_packet_size = std::num::NonZeroU32::new(200);
    let (mut small, _) = Peer::connect_with(addr(&broker), c).await;
    small.sub(1, "t/#", QoS::AtMostOnce).await;
    let mut other = Peer::connect(addr(&broker), ProtocolVersion::V5, "other").await;
    other.sub(1, "t/#", QoS::AtMostOnce).await;
    hibernating(&broker, 2).await;
    let mut p = publish("t/x", "", QoS::AtMostOnce);
    p.payload = vec![b'x'; 1000].into();
    p.properties.content_type = Some(MqttString::from("text/plain"));
    broker.inject(&p).unwrap();
    assert_eq!(other.recv_publish().await.payload.len(), 1000);
    // `small` is awake and past the large message once this comes.
    broker
        .inject(&publish("t/y", "fits", QoS::AtMostOnce))
        .unwrap();
    assert_eq!(&small.recv_publish().await.payload[..], b"fits");
    hibernating(&broker, 2).await;
    drop((small, other));
    broker.shutdown().await;
}
