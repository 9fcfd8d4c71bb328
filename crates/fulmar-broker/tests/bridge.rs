//! The [`Bridge`] seam: filters and messages reported to a bridge, messages
//! injected by it, and shared groups routed by it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::{Peer, addr, next, publish, start_with};
use fulmar_broker::{Bridge, Broker};
use fulmar_codec::{MqttString, Packet, ProtocolVersion::V5, Publish, QoS};
use fulmar_topic::{SubscriptionFilter, TopicName};
use futures::FutureExt;

/// Records what the broker tells it.
#[derive(Default)]
struct Recorder {
    log: Mutex<Vec<String>>,
    shared: bool,
}

impl Recorder {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

impl Bridge for Recorder {
    fn filter_added(&self, filter: &SubscriptionFilter) {
        self.log.lock().unwrap().push(format!("+{filter}"));
    }
    fn filter_removed(&self, filter: &SubscriptionFilter) {
        self.log.lock().unwrap().push(format!("-{filter}"));
    }
    fn message(&self, topic: &TopicName, publish: &Publish) {
        let payload = String::from_utf8_lossy(&publish.payload).into_owned();
        self.log.lock().unwrap().push(format!("{topic}={payload}"));
    }
    fn will_set(&self, client_id: &str, will: &Publish, delay: u32) {
        let topic = will.topic.to_string();
        self.log
            .lock()
            .unwrap()
            .push(format!("will+{client_id} {topic} {delay}"));
    }
    fn will_cleared(&self, client_id: &str) {
        self.log.lock().unwrap().push(format!("will-{client_id}"));
    }
    fn routes_shared(&self) -> bool {
        self.shared
    }
}

fn message(topic: &str, payload: &'static str) -> Publish {
    Publish::new(MqttString::from(topic.to_owned()), payload.into())
}

#[tokio::test]
async fn filters_are_reported_once_per_distinct_filter() {
    let bridge = Arc::new(Recorder::default());
    let broker = start_with(Broker::builder().bridge(bridge.clone())).await;
    let mut a = Peer::connect(addr(&broker), V5, "a").await;
    let mut b = Peer::connect(addr(&broker), V5, "b").await;
    a.sub(1, "x/+", QoS::AtLeastOnce).await;
    b.sub(1, "x/+", QoS::AtMostOnce).await;
    // Subscribing again replaces (MQTT-3.8.4-3): no new filter.
    b.sub(2, "x/+", QoS::AtLeastOnce).await;
    a.sub(2, "$share/g/x/+", QoS::AtLeastOnce).await;
    let local = broker.subscribe("y/#").unwrap();
    assert_eq!(bridge.take(), ["+x/+", "+$share/g/x/+", "+y/#"]);
    drop(local);
    a.send(Packet::Unsubscribe(fulmar_codec::Unsubscribe::new(
        fulmar_codec::PacketId::new(3).unwrap(),
        vec![MqttString::from("x/+")],
    )))
    .await;
    assert!(matches!(a.recv().await, Packet::UnsubAck(_)));
    assert_eq!(bridge.take(), ["-y/#"], "b still holds x/+");
    // b's session ends with its connection: its filters go.
    b.disconnect().await;
    a.disconnect().await;
    // Wait until both sessions were removed (the in-process view is synchronous).
    for _ in 0..200 {
        if broker.stats().sessions == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut removed = bridge.take();
    removed.sort();
    assert_eq!(removed, ["-$share/g/x/+", "-x/+"]);
    broker.shutdown().await;
}

#[tokio::test]
async fn published_messages_go_to_the_bridge_and_injected_ones_do_not_come_back() {
    let bridge = Arc::new(Recorder::default());
    let broker = start_with(Broker::builder().bridge(bridge.clone())).await;
    let mut sub = broker.subscribe("t/#").unwrap();
    let mut client = Peer::connect(addr(&broker), V5, "c").await;
    client
        .send(publish("t/1", "from-client", QoS::AtMostOnce))
        .await;
    assert_eq!(next(&mut sub).await.payload, "from-client");
    broker
        .publish("t/2", "from-app", QoS::AtMostOnce, false)
        .unwrap();
    assert_eq!(next(&mut sub).await.payload, "from-app");
    let mut injected = message("t/3", "from-elsewhere");
    injected.retain = true;
    broker.inject(&injected).unwrap();
    let got = next(&mut sub).await;
    assert_eq!(
        (got.payload.as_ref(), got.retain),
        (&b"from-elsewhere"[..], true)
    );
    assert_eq!(bridge.take(), ["+t/#", "t/1=from-client", "t/2=from-app"]);
    // The injected retained message was stored.
    assert_eq!(broker.stats().retained, 1);
    broker.shutdown().await;
}

// MQTT-4.8.2-3 (one member per group): the bridge decides which broker's group gets it.
#[tokio::test]
async fn a_bridge_that_routes_shared_groups_gets_them_delivered_once() {
    let bridge = Arc::new(Recorder {
        shared: true,
        ..Recorder::default()
    });
    let broker = start_with(Broker::builder().bridge(bridge.clone())).await;
    let mut m1 = broker.subscribe("$share/g/s/+").unwrap();
    let mut m2 = broker.subscribe("$share/g/s/+").unwrap();
    let mut plain = broker.subscribe("s/+").unwrap();
    // Local routing leaves the group alone: only the plain subscription gets it.
    broker
        .publish("s/1", "one", QoS::AtMostOnce, false)
        .unwrap();
    assert_eq!(next(&mut plain).await.payload, "one");
    // The bridge delivers to the group: one member each time, in turn.
    let group: SubscriptionFilter = "$share/g/s/+".parse().unwrap();
    let SubscriptionFilter::Shared(group) = group else {
        unreachable!()
    };
    for _ in 0..2 {
        assert!(broker.deliver_shared(&group, &message("s/1", "g")).unwrap());
    }
    assert_eq!(next(&mut m1).await.payload, "g");
    assert_eq!(next(&mut m2).await.payload, "g");
    // Deliveries to in-process subscriptions are synchronous: nothing else is queued.
    assert!(m1.recv().now_or_never().is_none());
    assert!(m2.recv().now_or_never().is_none());
    let other: SubscriptionFilter = "$share/h/s/+".parse().unwrap();
    let SubscriptionFilter::Shared(other) = other else {
        unreachable!()
    };
    assert!(!broker.deliver_shared(&other, &message("s/1", "h")).unwrap());
    broker.shutdown().await;
}

/// Waits until the recorder holds `n` lines; returns them.
async fn lines(bridge: &Recorder, n: usize) -> Vec<String> {
    for _ in 0..500 {
        if bridge.log.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    bridge.take()
}

fn with_will(id: &str, expiry: u32, delay: u32) -> fulmar_codec::Connect {
    let mut c = fulmar_codec::Connect::new(V5, MqttString::from(id.to_owned()));
    c.keep_alive = 0;
    c.clean_start = true;
    c.properties.session_expiry_interval = Some(expiry);
    let mut will = fulmar_codec::Will::new(MqttString::from(format!("wills/{id}")), "gone".into());
    will.properties.will_delay_interval = Some(delay);
    c.will = Some(will);
    c
}

// Wills are told to the bridge (so that a cluster can publish the wills of a
// node that died) and cleared once this broker handled them.
// v5:MQTT-3.1.2-8 (published on abnormal close) v5:MQTT-3.1.2-10 (removed on a normal DISCONNECT)
// v5:MQTT-3.1.3-9 (a reconnect within the Will Delay Interval cancels it)
#[tokio::test]
async fn wills_are_set_and_cleared_on_the_bridge() {
    let bridge = Arc::new(Recorder::default());
    let broker = start_with(Broker::builder().bridge(bridge.clone())).await;
    // A normal DISCONNECT: the will is dropped.
    let (peer, _) = Peer::connect_with(addr(&broker), with_will("calm", 0, 0)).await;
    peer.disconnect().await;
    assert_eq!(
        lines(&bridge, 2).await,
        ["will+calm wills/calm 0", "will-calm"]
    );
    // The connection breaks: the will is published here, then cleared.
    let (peer, _) = Peer::connect_with(addr(&broker), with_will("crash", 0, 0)).await;
    drop(peer);
    assert_eq!(
        lines(&bridge, 3).await,
        ["will+crash wills/crash 0", "wills/crash=gone", "will-crash"]
    );
    // A delayed will stays set while it waits; a reconnect cancels it.
    let (peer, _) = Peer::connect_with(addr(&broker), with_will("back", 60, 30)).await;
    drop(peer);
    assert_eq!(lines(&bridge, 1).await, ["will+back wills/back 30"]);
    let mut again = with_will("back", 60, 30);
    again.clean_start = false;
    again.will = None;
    let (_peer, _) = Peer::connect_with(addr(&broker), again).await;
    assert_eq!(lines(&bridge, 1).await, ["will-back"]);
    broker.shutdown().await;
}
