//! Subscriptions are checked again when the rules may have changed: when a
//! session is resumed (the client may connect as another user than the one
//! who subscribed) and on `BrokerHandle::reauthorize` (the rules behind the
//! authorizer changed, e.g. an ACL file was reloaded).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use fulmar_broker::{
    AuthDecision, Authenticator, Authorizer, Broker, BrokerEvent, BrokerHandle, ClientInfo,
    ConnectInfo,
};
use fulmar_codec::{Connect, MqttString, Packet, ProtocolVersion, QoS};

const V5: ProtocolVersion = ProtocolVersion::V5;
const V3: ProtocolVersion = ProtocolVersion::V311;

/// `alice` may read `secret/#` while `secret_open` holds; everybody may
/// read `open/#`; anybody may publish.
struct Rules {
    secret_open: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl Authorizer for Rules {
    async fn authorize_publish(&self, _client: &ClientInfo, _topic: &str) -> bool {
        true
    }

    async fn authorize_subscribe(&self, client: &ClientInfo, filter: &str) -> bool {
        match filter {
            "open/#" => true,
            "secret/#" => {
                client.username.as_deref() == Some("alice")
                    && self.secret_open.load(Ordering::Relaxed)
            }
            _ => false,
        }
    }
}

async fn broker(secret_open: &Arc<AtomicBool>, hibernate: bool) -> BrokerHandle {
    let rules = Rules {
        secret_open: secret_open.clone(),
    };
    let after = hibernate.then_some(Duration::from_millis(50));
    start_with(Broker::builder().authorizer(rules).hibernate_after(after)).await
}

/// A session that outlives its connection, as `user`.
async fn connect_as(
    broker: &BrokerHandle,
    version: ProtocolVersion,
    id: &str,
    user: &str,
) -> (Peer, bool) {
    let mut connect = Connect::new(version, MqttString::from(id.to_owned()));
    connect.keep_alive = 0;
    connect.clean_start = false;
    connect.username = Some(MqttString::from(user.to_owned()));
    if version == V5 {
        connect.properties.session_expiry_interval = Some(3600);
    }
    let (peer, ack) = Peer::connect_with(addr(broker), connect).await;
    assert!(!ack.reason_code.is_error(), "refused: {ack:?}");
    (peer, ack.session_present)
}

/// The topics of the PUBLISH packets `peer` gets until `last` (included).
async fn topics_until(peer: &mut Peer, last: &str) -> Vec<String> {
    let mut topics = Vec::new();
    loop {
        match peer.recv().await {
            Packet::Publish(publish) => {
                if let Some(id) = publish.packet_id {
                    peer.send(fulmar_codec::PubAck::new(id)).await;
                }
                let topic = publish.topic.to_string();
                let done = topic == last;
                topics.push(topic);
                if done {
                    return topics;
                }
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

fn publish(broker: &BrokerHandle, topic: &str) {
    broker.publish(topic, "x", QoS::AtLeastOnce, false).unwrap();
}

// A session resumed by another user keeps only the subscriptions that user
// may have, and what was queued for the others is dropped (the session
// itself is resumed).
// v5:MQTT-3.1.2-5 v3:MQTT-3.1.2-4
#[tokio::test]
async fn a_session_resumed_by_another_user_keeps_only_what_it_may_read() {
    for version in [V5, V3] {
        let open = Arc::new(AtomicBool::new(true));
        let broker = broker(&open, false).await;
        let mut events = broker.events();
        let (mut alice, _) = connect_as(&broker, version, "shared-id", "alice").await;
        alice.sub(1, "secret/#", QoS::AtLeastOnce).await;
        alice.sub(2, "open/#", QoS::AtLeastOnce).await;
        // Received and not acknowledged: in flight, resent on resume.
        publish(&broker, "secret/0");
        assert_eq!(alice.recv_publish().await.topic.as_str(), "secret/0");
        alice.disconnect().await;
        wait_until("alice's session is offline", || {
            broker.stats().clients_connected == 0
        })
        .await;
        publish(&broker, "secret/1");
        publish(&broker, "open/1");
        let dropped = broker.stats().dropped_messages;

        let (mut bob, present) = connect_as(&broker, version, "shared-id", "bob").await;
        assert!(present, "{version:?}");
        // Neither the secret message in flight nor the one queued is
        // delivered; the open one is.
        assert_eq!(topics_until(&mut bob, "open/1").await, ["open/1"]);
        assert_eq!(broker.stats().dropped_messages, dropped + 2, "{version:?}");
        // Nor are new ones.
        publish(&broker, "secret/2");
        publish(&broker, "open/2");
        assert_eq!(topics_until(&mut bob, "open/2").await, ["open/2"]);
        assert_eq!(broker.stats().subscriptions, 1, "{version:?}");
        let withdrawn = tokio::time::timeout(GUARD, async {
            loop {
                if let Some(BrokerEvent::Unsubscribed { client_id, filter }) = events.recv().await {
                    return (client_id, filter);
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(withdrawn, ("shared-id".to_owned(), "secret/#".to_owned()));
        bob.disconnect().await;
        broker.shutdown().await;
    }
}

// The same user resuming its session keeps everything (nothing changed).
// v5:MQTT-3.1.2-5
#[tokio::test]
async fn a_session_resumed_by_the_same_user_keeps_everything() {
    let open = Arc::new(AtomicBool::new(true));
    let broker = broker(&open, false).await;
    let (mut alice, _) = connect_as(&broker, V5, "alice-1", "alice").await;
    alice.sub(1, "secret/#", QoS::AtLeastOnce).await;
    alice.sub(2, "open/#", QoS::AtLeastOnce).await;
    alice.disconnect().await;
    wait_until("the session is offline", || {
        broker.stats().clients_connected == 0
    })
    .await;
    publish(&broker, "secret/1");
    publish(&broker, "open/1");
    let (mut alice, present) = connect_as(&broker, V5, "alice-1", "alice").await;
    assert!(present);
    assert_eq!(
        topics_until(&mut alice, "open/1").await,
        ["secret/1", "open/1"]
    );
    assert_eq!(broker.stats().subscriptions, 2);
    alice.disconnect().await;
    broker.shutdown().await;
}

// Connected clients, awake or hibernating, lose the subscriptions the
// authorizer denies after `reauthorize`; the others go on.
#[tokio::test]
async fn reauthorize_withdraws_what_the_authorizer_denies_now() {
    for hibernate in [false, true] {
        let open = Arc::new(AtomicBool::new(true));
        let broker = broker(&open, hibernate).await;
        let (mut alice, _) = connect_as(&broker, V5, "alice-2", "alice").await;
        alice.sub(1, "secret/#", QoS::AtLeastOnce).await;
        alice.sub(2, "open/#", QoS::AtLeastOnce).await;
        let (mut carol, _) = connect_as(&broker, V3, "carol", "carol").await;
        carol.sub(1, "open/#", QoS::AtLeastOnce).await;
        if hibernate {
            wait_until("both connections hibernate", || {
                broker.stats().connections_hibernating == 2
            })
            .await;
        }
        // Nothing changed yet: nothing is withdrawn.
        broker.reauthorize().await;
        assert_eq!(broker.stats().subscriptions, 3);
        publish(&broker, "secret/1");
        assert_eq!(topics_until(&mut alice, "secret/1").await, ["secret/1"]);

        open.store(false, Ordering::Relaxed);
        broker.reauthorize().await;
        assert_eq!(broker.stats().subscriptions, 2, "hibernate {hibernate}");
        publish(&broker, "secret/2");
        publish(&broker, "open/2");
        assert_eq!(topics_until(&mut alice, "open/2").await, ["open/2"]);
        assert_eq!(topics_until(&mut carol, "open/2").await, ["open/2"]);
        // The client may subscribe again only if allowed again.
        let ack = alice
            .subscribe(
                3,
                "secret/#",
                fulmar_codec::SubscriptionOptions::new(QoS::AtLeastOnce),
            )
            .await;
        assert!(ack.reason_codes[0].is_error(), "{ack:?}");
        alice.disconnect().await;
        carol.disconnect().await;
        broker.shutdown().await;
    }
}

// Without clients, or with the default authorizer, it returns at once.
#[tokio::test]
async fn reauthorize_without_clients_or_authorizer_returns() {
    let broker = start().await;
    broker.reauthorize().await;
    let mut p = Peer::connect(addr(&broker), V5, "any").await;
    p.sub(1, "a/#", QoS::AtMostOnce).await;
    broker.reauthorize().await;
    assert_eq!(broker.stats().subscriptions, 1);
    p.disconnect().await;
    broker.shutdown().await;
}

/// Names every client "alice", whatever its CONNECT says (as a client
/// certificate's common name would).
struct AllAlice;

#[async_trait::async_trait]
impl Authenticator for AllAlice {
    async fn authenticate(&self, _connect: &ConnectInfo) -> AuthDecision {
        AuthDecision::AllowAs("alice".to_owned())
    }
}

// An authenticator may name the user: the authorizer and the events see
// that name, not the CONNECT's User Name.
#[tokio::test]
async fn the_authenticator_may_name_the_user() {
    let rules = Rules {
        secret_open: Arc::new(AtomicBool::new(true)),
    };
    let broker = start_with(Broker::builder().authenticator(AllAlice).authorizer(rules)).await;
    let mut events = broker.events();
    for (version, user) in [(V5, Some("mallory")), (V3, None)] {
        let mut connect = Connect::new(version, MqttString::from("named"));
        connect.keep_alive = 0;
        connect.username = user.map(|u| MqttString::from(u.to_owned()));
        let (mut peer, ack) = Peer::connect_with(addr(&broker), connect).await;
        assert!(!ack.reason_code.is_error(), "{ack:?}");
        peer.sub(1, "secret/#", QoS::AtLeastOnce).await;
        let username = tokio::time::timeout(GUARD, async {
            loop {
                if let Some(BrokerEvent::Connected { username, .. }) = events.recv().await {
                    return username;
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(username.as_deref(), Some("alice"));
        peer.disconnect().await;
    }
    broker.shutdown().await;
}

// A publisher held back (back-pressure) when `reauthorize` asks, idle
// afterwards (keep alive 0, nothing more to read): the round is done once
// the wait is over, not when the client next sends something.
#[tokio::test]
async fn reauthorize_reaches_a_publisher_held_back() {
    use fulmar_codec::{PacketId, PubAck, Publish};
    let mut limits = fulmar_broker::Limits::default();
    limits.overload_policy = fulmar_broker::OverloadPolicy::Backpressure;
    limits.max_queued_messages = 1;
    let rules = Rules {
        secret_open: Arc::new(AtomicBool::new(true)),
    };
    let broker = start_with(Broker::builder().limits(limits).authorizer(rules)).await;
    // A subscriber that takes one message at a time, and reads nothing yet.
    let mut connect = Connect::new(V5, MqttString::from("slow"));
    connect.keep_alive = 0;
    connect.properties.receive_maximum = std::num::NonZeroU16::new(1);
    let (mut slow, _) = Peer::connect_with(addr(&broker), connect).await;
    slow.sub(1, "open/#", QoS::AtLeastOnce).await;
    let mut publisher = Peer::connect(addr(&broker), V5, "publisher").await;
    let mut sent = 0u16;
    while broker.stats().blocked_publishers == 0 {
        sent += 1;
        assert!(sent < 50, "never held back");
        let mut p = Publish::new(MqttString::from(format!("open/{sent}")), "x".into());
        p.qos = QoS::AtLeastOnce;
        p.packet_id = PacketId::new(sent);
        publisher.send(p).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let round = tokio::spawn({
        let broker = broker.clone();
        async move { broker.reauthorize().await }
    });
    // Room again: the subscriber takes everything.
    let last = format!("open/{sent}");
    let topics = topics_until(&mut slow, &last).await;
    assert_eq!(topics.len(), usize::from(sent));
    tokio::time::timeout(GUARD, round)
        .await
        .expect("reauthorize still waits for the publisher")
        .unwrap();
    for _ in 0..sent {
        assert!(matches!(
            publisher.recv().await,
            Packet::PubAck(PubAck { .. })
        ));
    }
    broker.shutdown().await;
}

/// Anybody may publish on `alarm/#` while `open` holds; subscribing is free.
struct AlarmRules {
    open: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl Authorizer for AlarmRules {
    async fn authorize_publish(&self, _client: &ClientInfo, topic: &str) -> bool {
        !topic.starts_with("alarm/") || self.open.load(Ordering::Relaxed)
    }

    async fn authorize_subscribe(&self, _client: &ClientInfo, _filter: &str) -> bool {
        true
    }
}

// A will is a message its client publishes when it goes (MQTT-3.1.2-8): after
// `reauthorize`, a will on a topic the client may no longer publish to is
// dropped, as its PUBLISH would be refused.
#[tokio::test]
async fn reauthorize_withdraws_a_will_the_client_may_no_longer_publish() {
    let open = Arc::new(AtomicBool::new(true));
    let rules = AlarmRules { open: open.clone() };
    let broker = start_with(Broker::builder().authorizer(rules)).await;
    let mut alarms = broker.subscribe("alarm/#").unwrap();
    for version in [V3, V5] {
        let id = format!("dev-{version:?}");
        let mut c = Connect::new(version, MqttString::from(id.clone()));
        c.keep_alive = 0;
        c.will = Some(fulmar_codec::Will::new(
            MqttString::from(format!("alarm/{id}")),
            bytes::Bytes::from_static(b"gone"),
        ));
        let (peer, _) = Peer::connect_with(addr(&broker), c).await;
        open.store(false, Ordering::Relaxed);
        broker.reauthorize().await;
        drop(peer);
        // The connection is over (its will, if any, was routed) before the
        // rules change back.
        tokio::time::timeout(GUARD, async {
            while broker.stats().clients_connected != 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        open.store(true, Ordering::Relaxed);
        // Nothing on alarm/ before this marker.
        broker
            .publish("alarm/marker", "m", QoS::AtMostOnce, false)
            .unwrap();
        let got = next(&mut alarms).await;
        assert_eq!(
            got.topic, "alarm/marker",
            "{version:?}: the will was published"
        );
    }
    broker.shutdown().await;
}

/// Records what the broker tells a bridge about wills.
#[derive(Default)]
struct WillLog(std::sync::Mutex<Vec<String>>);

impl fulmar_broker::Bridge for WillLog {
    fn will_set(&self, id: &str, _: &fulmar_codec::Publish, _: u32) {
        self.0.lock().unwrap().push(format!("set {id}"));
    }

    fn will_cleared(&self, id: &str) {
        self.0.lock().unwrap().push(format!("cleared {id}"));
    }
}

// A will withdrawn by `reauthorize` is withdrawn at the bridge too, which
// was told of it at CONNACK (and would publish it if this node failed).
#[tokio::test]
async fn a_will_withdrawn_by_reauthorize_is_cleared_at_the_bridge() {
    let log = Arc::new(WillLog::default());
    let open = Arc::new(AtomicBool::new(true));
    let rules = AlarmRules { open: open.clone() };
    let broker = start_with(Broker::builder().bridge(log.clone()).authorizer(rules)).await;
    let mut c = Connect::new(V5, MqttString::from("w"));
    c.keep_alive = 0;
    c.will = Some(fulmar_codec::Will::new(
        MqttString::from("alarm/w"),
        bytes::Bytes::from_static(b"bye"),
    ));
    let (peer, _) = Peer::connect_with(addr(&broker), c).await;
    open.store(false, Ordering::Relaxed);
    broker.reauthorize().await;
    assert_eq!(
        *log.0.lock().unwrap(),
        vec!["set w".to_owned(), "cleared w".to_owned()]
    );
    drop(peer);
    broker.shutdown().await;
}

// A will waiting for its Will Delay Interval is checked too: its client is
// gone, so no connection asks for it. It was published after its delay
// (here: by the shutdown, which publishes waiting wills) although the
// authorizer denied its topic by then.
// v5:MQTT-3.1.2-8
#[tokio::test]
async fn reauthorize_withdraws_a_will_waiting_for_its_delay() {
    let log = Arc::new(WillLog::default());
    let open = Arc::new(AtomicBool::new(true));
    let rules = AlarmRules { open: open.clone() };
    let broker = start_with(Broker::builder().bridge(log.clone()).authorizer(rules)).await;
    let mut alarms = broker.subscribe("alarm/#").unwrap();
    let (mut kept, mut denied) = (Vec::new(), Vec::new());
    for (id, topic) in [("late", "alarm/late"), ("other", "status/other")] {
        let mut c = Connect::new(V5, MqttString::from(id));
        c.keep_alive = 0;
        c.properties.session_expiry_interval = Some(3600);
        let mut will =
            fulmar_codec::Will::new(MqttString::from(topic), bytes::Bytes::from_static(b"gone"));
        will.properties.will_delay_interval = Some(3600);
        c.will = Some(will);
        let (peer, _) = Peer::connect_with(addr(&broker), c).await;
        drop(peer);
        if topic.starts_with("alarm/") {
            denied.push(format!("cleared {id}"));
        } else {
            kept.push(topic);
        }
    }
    wait_until("clients gone", || broker.stats().clients_connected == 0).await;
    let mut status = broker.subscribe("status/#").unwrap();
    open.store(false, Ordering::Relaxed);
    broker.reauthorize().await;
    let log_now = log.0.lock().unwrap().clone();
    assert_eq!(
        log_now
            .iter()
            .filter(|l| l.starts_with("cleared"))
            .collect::<Vec<_>>(),
        denied.iter().collect::<Vec<_>>()
    );
    broker.shutdown().await;
    assert!(
        alarms.recv().await.is_none(),
        "the denied will was published"
    );
    let got = status.recv().await.unwrap();
    assert_eq!(kept, [got.topic.as_str()], "the allowed will stays");
}
