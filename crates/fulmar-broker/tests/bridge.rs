//! The [`Bridge`] seam: filters and messages reported to a bridge, messages
//! injected by it, and shared groups routed by it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::{Peer, addr, next, publish, start, start_with};
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

/// A bridge that moves sessions from another broker of this process (as a
/// cluster would over the network) and records the session notifications.
#[derive(Default)]
struct Mover {
    from: std::sync::OnceLock<fulmar_broker::BrokerHandle>,
    log: Mutex<Vec<String>>,
}

impl Bridge for Mover {
    fn claim_session(&self, client_id: &str, clean_start: bool) -> fulmar_broker::SessionClaim {
        let from = self.from.get().cloned();
        let id = client_id.to_owned();
        self.log
            .lock()
            .unwrap()
            .push(format!("claim {client_id} {clean_start}"));
        Box::pin(async move {
            let Some(from) = from else { return Ok(None) };
            let Some(export) = from.take_session(&id).await else {
                return Ok(None);
            };
            // Through the wire form, as a cluster sends it.
            Ok(Some(
                fulmar_broker::SessionExport::decode(&export.encode()).unwrap(),
            ))
        })
    }
    fn session_online(&self, client_id: &str, session: &fulmar_broker::StoredSession) {
        let subs: Vec<_> = session
            .subscriptions
            .iter()
            .map(|s| s.filter.clone())
            .collect();
        self.log
            .lock()
            .unwrap()
            .push(format!("online {client_id} {subs:?}"));
    }
    fn session_offline(&self, client_id: &str, session: &fulmar_broker::StoredSession) {
        let subs: Vec<_> = session
            .subscriptions
            .iter()
            .map(|s| s.filter.clone())
            .collect();
        self.log
            .lock()
            .unwrap()
            .push(format!("offline {client_id} {subs:?}"));
    }
    fn session_gone(&self, client_id: &str) {
        self.log.lock().unwrap().push(format!("gone {client_id}"));
    }
}

fn persistent(id: &str, version: fulmar_codec::ProtocolVersion) -> fulmar_codec::Connect {
    let mut c = fulmar_codec::Connect::new(version, MqttString::from(id.to_owned()));
    c.keep_alive = 0;
    c.clean_start = false;
    if version == V5 {
        c.properties.session_expiry_interval = Some(3600);
    }
    c
}

fn pid(n: u16) -> fulmar_codec::PacketId {
    fulmar_codec::PacketId::new(n).unwrap()
}

// A session moves between brokers through Bridge::claim_session and
// BrokerHandle::take_session: subscriptions, a QoS 2 flow whose PUBREL is
// pending, an inbound QoS 2 identifier, queued QoS 1/2 messages.
// v3:MQTT-3.1.2-4 / v5:MQTT-3.1.2-5 (the session is resumed), v3:MQTT-3.2.2-2
// / v5:MQTT-3.2.2-3 (session present 1), MQTT-4.4.0-1 (unacknowledged
// PUBLISH resent with its identifier and DUP (MQTT-3.3.1-1), PUBREL for a
// received PUBREC), v5:MQTT-4.3.3-10 (an inbound QoS 2 message resent
// before PUBREL is acknowledged, not delivered twice),
// both versions.
#[tokio::test]
async fn a_session_moves_between_brokers_with_its_messages() {
    for version in [V5, fulmar_codec::ProtocolVersion::V311] {
        let mover = Arc::new(Mover::default());
        let a = start_with(Broker::builder()).await;
        let b = start_with(
            Broker::builder()
                .bridge(mover.clone())
                .store(Arc::new(fulmar_broker::MemoryStore::new())),
        )
        .await;
        mover.from.set(a.clone()).unwrap();
        let id = "mover";
        let (mut peer, ack) = Peer::connect_with(addr(&a), persistent(id, version)).await;
        assert!(!ack.session_present);
        peer.sub(1, "m/#", QoS::ExactlyOnce).await;
        // An outbound QoS 2 message: PUBREC sent, PUBREL pending.
        a.publish("m/1", "first", QoS::ExactlyOnce, false).unwrap();
        let first = peer.recv_publish().await;
        assert_eq!(first.payload, "first");
        let first_id = first.packet_id.unwrap();
        peer.send(fulmar_codec::PubRec::new(first_id)).await;
        assert!(matches!(peer.recv().await, Packet::PubRel(r) if r.packet_id == first_id));
        // An outbound QoS 1 message never acknowledged.
        a.publish("m/1b", "unacked", QoS::AtLeastOnce, false)
            .unwrap();
        let unacked = peer.recv_publish().await;
        assert_eq!(unacked.payload, "unacked");
        // An inbound QoS 2 message: PUBREC received, PUBREL not sent.
        let mut inbound = publish("in/1", "inbound", QoS::ExactlyOnce);
        inbound.packet_id = Some(pid(7));
        let mut watch = a.subscribe("in/#").unwrap();
        peer.send(inbound.clone()).await;
        assert!(matches!(peer.recv().await, Packet::PubRec(r) if r.packet_id == pid(7)));
        assert_eq!(next(&mut watch).await.payload, "inbound");
        drop(peer);
        // Queued while offline.
        a.publish("m/2", "second", QoS::AtLeastOnce, false).unwrap();
        a.publish("m/3", "third", QoS::ExactlyOnce, false).unwrap();
        for _ in 0..500 {
            if a.stats().clients_connected == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }

        let (mut peer, ack) = Peer::connect_with(addr(&b), persistent(id, version)).await;
        assert!(ack.session_present, "{version:?}");
        assert_eq!(a.stats().sessions, 0, "taken from A");
        // The PUBREL of the first message, then the queued messages.
        assert!(matches!(peer.recv().await, Packet::PubRel(r) if r.packet_id == first_id));
        peer.send(fulmar_codec::PubComp::new(first_id)).await;
        // The unacknowledged QoS 1 message again, same identifier, DUP set.
        let again = peer.recv_publish().await;
        assert_eq!(
            (again.payload.as_ref(), again.packet_id, again.dup),
            (&b"unacked"[..], unacked.packet_id, true)
        );
        peer.send(fulmar_codec::PubAck::new(again.packet_id.unwrap()))
            .await;
        let second = peer.recv_publish().await;
        assert_eq!(
            (second.payload.as_ref(), second.qos),
            (&b"second"[..], QoS::AtLeastOnce)
        );
        peer.send(fulmar_codec::PubAck::new(second.packet_id.unwrap()))
            .await;
        let third = peer.recv_publish().await;
        assert_eq!(
            (third.payload.as_ref(), third.qos),
            (&b"third"[..], QoS::ExactlyOnce)
        );
        peer.send(fulmar_codec::PubRec::new(third.packet_id.unwrap()))
            .await;
        assert!(matches!(peer.recv().await, Packet::PubRel(_)));
        peer.send(fulmar_codec::PubComp::new(third.packet_id.unwrap()))
            .await;
        // The inbound message resent with DUP is not delivered again.
        let mut watch_b = b.subscribe("in/#").unwrap();
        inbound.dup = true;
        peer.send(inbound).await;
        assert!(matches!(peer.recv().await, Packet::PubRec(r) if r.packet_id == pid(7)));
        peer.send(fulmar_codec::PubRel::new(pid(7))).await;
        assert!(matches!(peer.recv().await, Packet::PubComp(r) if r.packet_id == pid(7)));
        // The subscription came along: a new message reaches the client.
        b.publish("m/4", "fourth", QoS::AtMostOnce, false).unwrap();
        assert_eq!(peer.recv_publish().await.payload, "fourth");
        b.publish("in/2", "marker", QoS::AtMostOnce, false).unwrap();
        assert_eq!(
            next(&mut watch_b).await.payload,
            "marker",
            "no duplicate before it"
        );
        assert_eq!(
            mover.log.lock().unwrap().clone(),
            [
                format!("claim {id} false"),
                format!("online {id} [\"m/#\"]")
            ]
        );
        peer.disconnect().await;
        a.shutdown().await;
        b.shutdown().await;
    }
}

// v5:MQTT-3.1.4-3 (a second connection with the same client id closes the
// first), across brokers: v5 DISCONNECT 0x8E Session taken over; Clean
// Start takes over but discards the session (v5:MQTT-3.1.2-4;
// v5:MQTT-3.2.2-2: session present 0).
#[tokio::test]
async fn take_session_closes_the_connection_that_holds_it() {
    let mover = Arc::new(Mover::default());
    let a = start_with(Broker::builder().bridge(mover.clone())).await;
    let b = start_with(Broker::builder().bridge(mover.clone())).await;
    mover.from.set(a.clone()).unwrap();
    let (mut old, _) = Peer::connect_with(addr(&a), persistent("t", V5)).await;
    old.sub(1, "t/#", QoS::AtLeastOnce).await;
    let mut fresh = persistent("t", V5);
    fresh.clean_start = true;
    let (mut new, ack) = Peer::connect_with(addr(&b), fresh).await;
    assert!(!ack.session_present);
    match old.recv().await {
        Packet::Disconnect(d) => assert_eq!(
            d.reason_code,
            fulmar_codec::DisconnectReasonCode::SessionTakenOver
        ),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    old.expect_closed().await;
    assert_eq!(a.stats().sessions, 0);
    // Discarded: no subscription on B.
    b.publish("t/1", "x", QoS::AtMostOnce, false).unwrap();
    b.publish("u/1", "y", QoS::AtMostOnce, false).unwrap();
    new.sub(2, "u/#", QoS::AtMostOnce).await;
    b.publish("u/2", "z", QoS::AtMostOnce, false).unwrap();
    assert_eq!(new.recv_publish().await.payload, "z");
    let log = mover.log.lock().unwrap().clone();
    assert_eq!(
        log,
        [
            "claim t false",
            "online t []",
            "online t [\"t/#\"]",
            "claim t true",
            "offline t [\"t/#\"]",
            "gone t",
            "online t []",
            "online t [\"u/#\"]",
        ]
    );
    a.shutdown().await;
    b.shutdown().await;
}

// v5:MQTT-3.1.4-3 with MQTT-4.4.0-1: a session taken over from a broker where
// its connection is open moves with its unacknowledged QoS 1 messages and
// the messages still queued there; both are sent on the new connection.
#[tokio::test]
async fn a_connected_session_moves_with_its_unacknowledged_messages() {
    let mover = Arc::new(Mover::default());
    let a = start_with(Broker::builder()).await;
    let b = start_with(Broker::builder().bridge(mover.clone())).await;
    mover.from.set(a.clone()).unwrap();
    let (mut old, _) = Peer::connect_with(addr(&a), persistent("busy", V5)).await;
    old.sub(1, "b/#", QoS::AtLeastOnce).await;
    for payload in ["one", "two", "three"] {
        a.publish("b/x", payload, QoS::AtLeastOnce, false).unwrap();
    }
    let mut ids = Vec::new();
    for payload in ["one", "two", "three"] {
        let p = old.recv_publish().await;
        assert_eq!(p.payload, payload);
        ids.push(p.packet_id);
    }
    let (mut new, ack) = Peer::connect_with(addr(&b), persistent("busy", V5)).await;
    assert!(ack.session_present);
    assert!(matches!(old.recv().await, Packet::Disconnect(_)));
    for (payload, id) in ["one", "two", "three"].into_iter().zip(ids) {
        let p = new.recv_publish().await;
        assert_eq!(
            (p.payload.as_ref(), p.packet_id, p.dup),
            (payload.as_bytes(), id, true)
        );
        new.send(fulmar_codec::PubAck::new(id.unwrap())).await;
    }
    b.publish("b/y", "after", QoS::AtLeastOnce, false).unwrap();
    assert_eq!(new.recv_publish().await.payload, "after");
    a.shutdown().await;
    b.shutdown().await;
}

/// A bridge that knows the session lives elsewhere but cannot bring it.
struct Unreachable;

impl Bridge for Unreachable {
    fn claim_session(&self, _: &str, _: bool) -> fulmar_broker::SessionClaim {
        Box::pin(std::future::ready(Err(fulmar_broker::SessionUnavailable)))
    }
}

// A session the bridge cannot bring now is not started without its
// messages: the CONNECT is refused with Server unavailable (v5: 0x88;
// v3: return code 3), and nothing is kept of the attempt; with Clean Start
// the old session is discarded anyway, so the connection is accepted.
// v5:MQTT-3.2.2-7 / v3:MQTT-3.2.2-5 (the Server closes the connection
// after a CONNACK with a failure code), v3:MQTT-3.2.2-4 and v5:MQTT-3.2.2-6
// (Session Present 0 with a failure code).
#[tokio::test]
async fn a_session_the_bridge_cannot_bring_refuses_the_connect() {
    for version in [V5, fulmar_codec::ProtocolVersion::V311] {
        let broker = start_with(Broker::builder().bridge(Arc::new(Unreachable))).await;
        let (mut peer, ack) = Peer::connect_with(addr(&broker), persistent("away", version)).await;
        assert_eq!(
            (ack.reason_code, ack.session_present),
            (fulmar_codec::ConnectReasonCode::ServerUnavailable, false),
            "{version:?}"
        );
        peer.expect_closed().await;
        assert_eq!(broker.stats().clients_connected, 0);
        let mut fresh = persistent("away", version);
        fresh.clean_start = true;
        let (_peer, ack) = Peer::connect_with(addr(&broker), fresh).await;
        assert_eq!(ack.reason_code, fulmar_codec::ConnectReasonCode::Success);
        broker.shutdown().await;
    }
}

/// Several bridges (a cluster and MQTT bridges, say): each is told of
/// every change, in order, and none gets what another injected; a session
/// is claimed from the first that can bring one, and one that cannot bring
/// it refuses the CONNECT whatever comes after it.
#[tokio::test]
async fn several_bridges_are_each_told_and_claimed_in_order() {
    let first = Arc::new(Recorder::default());
    let second = Arc::new(Recorder::default());
    let broker = start_with(
        Broker::builder()
            .bridge(first.clone())
            .bridge(second.clone()),
    )
    .await;
    let mut sub = broker.subscribe("t/#").unwrap();
    broker
        .publish("t/1", "local", QoS::AtMostOnce, false)
        .unwrap();
    assert_eq!(next(&mut sub).await.payload, "local");
    broker.inject(&message("t/2", "injected")).unwrap();
    assert_eq!(next(&mut sub).await.payload, "injected");
    for bridge in [&first, &second] {
        assert_eq!(bridge.take(), ["+t/#", "t/1=local"]);
    }
    broker.shutdown().await;

    // Neither bridge brings a session: a new one starts.
    let broker = start_with(
        Broker::builder()
            .bridge(Arc::new(Recorder::default()))
            .bridge(Arc::new(Recorder::default())),
    )
    .await;
    let (_peer, ack) = Peer::connect_with(addr(&broker), persistent("p", V5)).await;
    assert_eq!(
        (ack.reason_code, ack.session_present),
        (fulmar_codec::ConnectReasonCode::Success, false)
    );
    broker.shutdown().await;

    // The second cannot bring it: refused (v5:MQTT-3.2.2-6 Session Present 0 with a failure code).
    let broker = start_with(
        Broker::builder()
            .bridge(Arc::new(Recorder::default()))
            .bridge(Arc::new(Unreachable)),
    )
    .await;
    let (mut peer, ack) = Peer::connect_with(addr(&broker), persistent("p", V5)).await;
    assert_eq!(
        (ack.reason_code, ack.session_present),
        (fulmar_codec::ConnectReasonCode::ServerUnavailable, false)
    );
    peer.expect_closed().await;
    broker.shutdown().await;
}

/// A client that announces itself as a bridge (protocol level 0x84 / 0x85,
/// mosquitto's `try_private`) is another broker: its subscriptions are No
/// Local, so it gets none of its own messages back, and Retain As
/// Published, so what it forwards stays retained, under 3.1.1 too.
/// v5:MQTT-3.8.3-3 (No Local), v5:MQTT-3.3.1-12 (Retain As Published).
#[tokio::test]
async fn a_client_announcing_a_bridge_gets_no_local_and_retain_as_published() {
    for version in [V5, fulmar_codec::ProtocolVersion::V311] {
        let broker = start().await;
        let connect = fulmar_codec::Connect {
            bridge: true,
            ..fulmar_codec::Connect::new(version, "other-broker".into())
        };
        let (mut bridge, ack) = Peer::connect_with(addr(&broker), connect).await;
        assert_eq!(ack.reason_code, fulmar_codec::ConnectReasonCode::Success);
        bridge.sub(1, "t/#", QoS::AtMostOnce).await;
        bridge.send(publish("t/own", "x", QoS::AtMostOnce)).await;
        let mut other = Peer::connect(addr(&broker), version, "plain").await;
        let mut retained = publish("t/kept", "y", QoS::AtMostOnce);
        retained.retain = true;
        other.send(retained).await;
        let got = bridge.recv_publish().await;
        assert_eq!(
            (got.topic.as_str(), got.retain),
            ("t/kept", true),
            "{version:?}: its own message is not sent back, the retained one keeps its flag"
        );
        broker.shutdown().await;
    }
}
