//! Settings of one listener (`fulmar_broker::Listener`): a connection limit,
//! a Maximum QoS and a Topic Alias Maximum of its own, for the clients that
//! connect through it; the broker's hold on its other listeners.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::num::NonZeroU16;

use ProtocolVersion::{V5, V311};
use common::{Peer, wait_until};
use fulmar_broker::{Broker, BrokerHandle, Listener};
use fulmar_codec::{
    ConnAck, Connect, ConnectReasonCode, DisconnectReasonCode, MqttString, Packet, ProtocolVersion,
    QoS, SubAckReasonCode, SubscriptionOptions,
};

/// A broker with a plain listener (first address) and `special` (second).
async fn start_with_listener(special: Listener) -> (BrokerHandle, SocketAddr, SocketAddr) {
    let broker = Broker::builder()
        .tcp_listener("127.0.0.1:0")
        .listener(special)
        .start()
        .await
        .unwrap();
    let addrs = broker.local_addrs().to_vec();
    (broker, addrs[0], addrs[1])
}

fn connect(version: ProtocolVersion, id: &str) -> Connect {
    let mut connect = Connect::new(version, MqttString::from(id.to_owned()));
    connect.keep_alive = 0;
    connect
}

/// A listener's own connection limit refuses the client beyond it as the
/// broker's does (5.0: 0x88 Server unavailable; 3.1.1: 3), and only there:
/// the other listener takes more; a connection that closes makes room.
// v3:MQTT-3.2.2-5 v5:MQTT-3.2.2-7
#[tokio::test]
async fn a_listener_limits_its_own_connections() {
    let (broker, plain, limited) =
        start_with_listener(Listener::tcp("127.0.0.1:0").max_connections(1)).await;
    let first = Peer::connect(limited, V5, "first").await;
    for (version, refused) in [
        (V5, ConnectReasonCode::ServerUnavailable),
        (V311, ConnectReasonCode::ServerUnavailable),
    ] {
        let (mut peer, ack) = Peer::connect_with(limited, connect(version, "second")).await;
        assert_eq!(ack.reason_code, refused, "{version:?}");
        peer.expect_closed().await;
    }
    // The plain listener is not limited by it.
    let a = Peer::connect(plain, V5, "a").await;
    let b = Peer::connect(plain, V311, "b").await;
    assert_eq!(broker.stats().clients_connected, 3);
    first.disconnect().await;
    wait_until("the first gone", || broker.stats().clients_connected == 2).await;
    let again = Peer::connect(limited, V5, "again").await;
    for peer in [a, b, again] {
        peer.disconnect().await;
    }
    broker.shutdown().await;
}

/// The broker's own limit still counts the connections of every listener.
// v3:MQTT-3.2.2-5
#[tokio::test]
async fn the_brokers_connection_limit_counts_every_listener() {
    let broker = Broker::builder()
        .max_connections(2)
        .tcp_listener("127.0.0.1:0")
        .listener(Listener::tcp("127.0.0.1:0").max_connections(10))
        .start()
        .await
        .unwrap();
    let addrs = broker.local_addrs().to_vec();
    let a = Peer::connect(addrs[0], V311, "a").await;
    let b = Peer::connect(addrs[1], V311, "b").await;
    let (mut c, ack) = Peer::connect_with(addrs[1], connect(V311, "c")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::ServerUnavailable);
    c.expect_closed().await;
    a.disconnect().await;
    b.disconnect().await;
    broker.shutdown().await;
}

async fn connack(addr: SocketAddr, id: &str) -> (Peer, ConnAck) {
    Peer::connect_with(addr, connect(V5, id)).await
}

/// A listener's Maximum QoS is announced to its 5.0 clients, granted at
/// most to their subscriptions, and enforced on their PUBLISH (DISCONNECT
/// 0x9B) and will (CONNACK 0x9B); the plain listener keeps the broker's
/// (QoS 2: not announced).
// v5:MQTT-3.2.2-9 v5:MQTT-3.2.2-10 v5:MQTT-3.2.2-12 MQTT-3.8.4-8
#[tokio::test]
async fn a_listeners_maximum_qos_is_announced_granted_and_enforced() {
    let (broker, plain, limited) =
        start_with_listener(Listener::tcp("127.0.0.1:0").maximum_qos(QoS::AtLeastOnce)).await;
    let (mut peer, ack) = connack(limited, "limited").await;
    assert_eq!(ack.properties.maximum_qos, Some(QoS::AtLeastOnce));
    let sub = peer
        .subscribe(1, "t/#", SubscriptionOptions::new(QoS::ExactlyOnce))
        .await;
    assert_eq!(sub.reason_codes, [SubAckReasonCode::GrantedQoS1]);
    let (mut other, ack) = connack(plain, "plain").await;
    assert_eq!(ack.properties.maximum_qos, None);
    let sub = other
        .subscribe(1, "t/#", SubscriptionOptions::new(QoS::ExactlyOnce))
        .await;
    assert_eq!(sub.reason_codes, [SubAckReasonCode::GrantedQoS2]);
    // A QoS 2 message from the plain listener reaches the limited one's
    // subscription at the QoS it was granted.
    let mut publisher = Peer::connect(plain, V311, "publisher").await;
    publisher
        .send(common::publish("t/a", "two", QoS::ExactlyOnce))
        .await;
    assert!(matches!(publisher.recv().await, Packet::PubRec(_)));
    let got = peer.recv_publish().await;
    assert_eq!((got.qos, &got.payload[..]), (QoS::AtLeastOnce, &b"two"[..]));
    let got = other.recv_publish().await;
    assert_eq!((got.qos, &got.payload[..]), (QoS::ExactlyOnce, &b"two"[..]));
    // A QoS 2 PUBLISH through the limited listener is a protocol violation.
    peer.send(common::publish("t/b", "no", QoS::ExactlyOnce))
        .await;
    peer.expect_disconnect(DisconnectReasonCode::QoSNotSupported)
        .await;
    // So is a QoS 2 will.
    let mut with_will = connect(V5, "will");
    with_will.will = Some(fulmar_codec::Will {
        qos: QoS::ExactlyOnce,
        ..fulmar_codec::Will::new(MqttString::from("w"), bytes::Bytes::from_static(b"x"))
    });
    let (mut refused, ack) = Peer::connect_with(limited, with_will).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::QoSNotSupported);
    refused.expect_closed().await;
    other.disconnect().await;
    publisher.disconnect().await;
    broker.shutdown().await;
}

/// A listener's Topic Alias Maximum is the one its 5.0 clients are told and
/// held to: 0 announces none, and an alias is then a protocol error
/// (DISCONNECT 0x94); the plain listener takes the broker's.
// v5:MQTT-3.2.2-17 v5:MQTT-3.2.2-18 v5:MQTT-3.3.2-12
#[tokio::test]
async fn a_listeners_topic_alias_maximum_is_announced_and_enforced() {
    let (broker, plain, limited) =
        start_with_listener(Listener::tcp("127.0.0.1:0").topic_alias_maximum(0)).await;
    let aliased = || {
        let mut p = common::publish("a/b", "x", QoS::AtMostOnce);
        p.properties.topic_alias = NonZeroU16::new(1);
        p
    };
    let (mut other, ack) = connack(plain, "plain").await;
    let broker_max = ack.properties.topic_alias_maximum.unwrap_or(0);
    assert!(broker_max > 0, "{ack:?}");
    other
        .subscribe(1, "a/b", SubscriptionOptions::new(QoS::AtMostOnce))
        .await;
    other.send(aliased()).await;
    assert_eq!(&other.recv_publish().await.payload[..], b"x");
    let (mut peer, ack) = connack(limited, "limited").await;
    assert_eq!(ack.properties.topic_alias_maximum, None);
    peer.send(aliased()).await;
    peer.expect_disconnect(DisconnectReasonCode::TopicAliasInvalid)
        .await;
    // A listener may also allow more than the broker.
    let (broker2, _, more) = start_with_listener(
        Listener::tcp("127.0.0.1:0").topic_alias_maximum(broker_max.saturating_add(100)),
    )
    .await;
    let (peer, ack) = connack(more, "more").await;
    assert_eq!(
        ack.properties.topic_alias_maximum,
        Some(broker_max.saturating_add(100))
    );
    peer.disconnect().await;
    other.disconnect().await;
    broker.shutdown().await;
    broker2.shutdown().await;
}
