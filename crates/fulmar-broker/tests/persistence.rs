//! Persistence: what a broker recovers from its store after a restart
//! (sessions, subscriptions, queued and in-flight QoS 1/2 messages, inbound
//! QoS 2 identifiers, retained messages), and when acknowledgements go out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{Peer, addr, next, publish, run, run_then_crash, start_with, wait_until};
use fulmar_broker::{
    Broker, BrokerHandle, DiskStore, Durability, MemoryStore, Snapshot, Store, StoreError, StoreOp,
    StoredMessage, StoredSession,
};
use fulmar_codec::{
    Connect, MqttString, Packet, PacketId, ProtocolVersion, ProtocolVersion::V5,
    ProtocolVersion::V311, PubComp, PubRec, PubRel, QoS, Will,
};

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

async fn broker_on(store: Arc<dyn Store>) -> BrokerHandle {
    start_with(Broker::builder().store(store)).await
}

/// A connection that keeps its session: 3.1.1 Clean Session 0, 5.0 Session
/// Expiry Interval one hour. Returns the peer and Session Present.
async fn connect_kept(broker: &BrokerHandle, version: ProtocolVersion, id: &str) -> (Peer, bool) {
    let mut c = Connect::new(version, MqttString::from(id.to_owned()));
    c.keep_alive = 0;
    c.clean_start = false;
    if version == V5 {
        c.properties.session_expiry_interval = Some(3600);
    }
    let (peer, ack) = Peer::connect_with(addr(broker), c).await;
    assert!(!ack.reason_code.is_error(), "{ack:?}");
    (peer, ack.session_present)
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fulmar-persist-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

// MQTT-3.3.1-5 (the retained message is stored), MQTT-3.3.1-6 (sent to new subscribers).
#[tokio::test]
async fn retained_messages_survive_a_restart_on_disk() {
    let dir = temp_dir("retained");
    let broker = broker_on(Arc::new(DiskStore::open(&dir).unwrap())).await;
    broker
        .publish("site/1/temp", "21.5", QoS::AtLeastOnce, true)
        .unwrap();
    broker
        .publish("site/2/temp", "19", QoS::AtMostOnce, true)
        .unwrap();
    broker
        .publish("site/2/temp", "", QoS::AtMostOnce, true)
        .unwrap();
    broker.shutdown().await;

    let broker = broker_on(Arc::new(DiskStore::open(&dir).unwrap())).await;
    assert_eq!(broker.stats().retained, 1, "the deleted one stays deleted");
    let mut sub = broker.subscribe("site/+/temp").unwrap();
    let m = next(&mut sub).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..], m.retain),
        ("site/1/temp", &b"21.5"[..], true)
    );
    broker.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The presence pattern: a client's retained will says "offline" where it
/// published "online". A shutdown publishes it into the store, so after the
/// restart the topic tells the truth until the client is back.
// MQTT-3.1.2-8 MQTT-3.3.1-5
#[tokio::test]
async fn a_retained_will_published_at_shutdown_survives_the_restart() {
    let dir = temp_dir("will-at-shutdown");
    let broker = broker_on(Arc::new(DiskStore::open(&dir).unwrap())).await;
    let mut c = Connect::new(V5, MqttString::from("device"));
    c.keep_alive = 0;
    let mut will = Will::new(MqttString::from("status/device"), "offline".into());
    will.retain = true;
    c.will = Some(will);
    let (mut device, _) = Peer::connect_with(addr(&broker), c).await;
    let mut online = publish("status/device", "online", QoS::AtLeastOnce);
    online.retain = true;
    online.packet_id = Some(pid(1));
    device.send(online).await;
    assert!(matches!(device.recv().await, Packet::PubAck(_)));
    broker.shutdown().await;

    let broker = broker_on(Arc::new(DiskStore::open(&dir).unwrap())).await;
    let mut sub = broker.subscribe("status/#").unwrap();
    let m = next(&mut sub).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("status/device", &b"offline"[..])
    );
    broker.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A 5.0 connection that keeps its session for `expiry` seconds, with a
/// retained will on `status/{id}` and a Will Delay Interval of `delay`.
async fn connect_with_delayed_will(
    broker: &BrokerHandle,
    id: &str,
    expiry: u32,
    delay: u32,
) -> Peer {
    let mut c = Connect::new(V5, MqttString::from(id.to_owned()));
    c.keep_alive = 0;
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(expiry);
    let mut will = Will::new(MqttString::from(format!("status/{id}")), "offline".into());
    will.retain = true;
    will.properties.will_delay_interval = Some(delay);
    c.will = Some(will);
    let (peer, ack) = Peer::connect_with(addr(broker), c).await;
    assert!(!ack.reason_code.is_error(), "{ack:?}");
    peer
}

/// The topics of the retained wills, as a new subscriber gets them.
async fn retained_wills(broker: &BrokerHandle, expected: usize) -> Vec<String> {
    let mut sub = broker.subscribe("status/+").unwrap();
    let mut topics = Vec::new();
    for _ in 0..expected {
        topics.push(next(&mut sub).await.topic.to_string());
    }
    topics.sort();
    topics
}

/// At shutdown, a will with a Will Delay Interval whose session the store
/// keeps stays in the session's record, of a client still connected or of
/// one gone and waiting out the delay: the delay runs on across the restart.
/// A client that comes back within it cancels it (v5:MQTT-3.1.3-9); once it
/// has passed, the restarted broker publishes it (MQTT-3.1.2-8). Wills
/// without a delay, and those of sessions that end with their connection,
/// are published at shutdown. (All of them were published at shutdown
/// before; a crash keeps them too: see `crash_wills.rs`.)
// v5:MQTT-3.1.3-9 v5:MQTT-3.1.2-8
#[tokio::test]
async fn wills_with_a_delay_of_kept_sessions_wait_across_a_restart() {
    let dir = temp_dir("delayed-will-at-shutdown");
    let broker = broker_on(Arc::new(DiskStore::open(&dir).unwrap())).await;
    // Connected when the broker shuts down.
    let connected = vec![
        connect_with_delayed_will(&broker, "patient", 3600, 3600).await,
        connect_with_delayed_will(&broker, "prompt", 3600, 0).await,
        connect_with_delayed_will(&broker, "fleeting", 0, 3600).await,
        connect_with_delayed_will(&broker, "brief", 3600, 1).await,
    ];
    // Gone before it, waiting out its delay.
    let away = connect_with_delayed_will(&broker, "away", 3600, 3600).await;
    drop(away);
    wait_until("the will of `away` waits", || {
        broker.stats().clients_connected == 4
    })
    .await;
    broker.shutdown().await;
    drop(connected);

    let kept = DiskStore::open(&dir).unwrap().load().unwrap();
    let mut waiting: Vec<&str> = kept
        .sessions
        .iter()
        .filter(|s| s.will.is_some())
        .map(|s| &*s.client_id)
        .collect();
    waiting.sort_unstable();
    assert_eq!(waiting, ["away", "brief", "patient"]);

    let broker = broker_on(Arc::new(DiskStore::open(&dir).unwrap())).await;
    // "brief" has waited out its second (now or soon after the restart).
    wait_until("the will of `brief` is published", || {
        broker.stats().retained == 3
    })
    .await;
    assert_eq!(
        retained_wills(&broker, 3).await,
        ["status/brief", "status/fleeting", "status/prompt"]
    );
    // "patient" comes back within its delay: its will is never published.
    let patient = connect_with_delayed_will(&broker, "patient", 3600, 0).await;
    patient.disconnect().await;
    broker.shutdown().await;

    let kept = DiskStore::open(&dir).unwrap().load().unwrap();
    let waiting: Vec<&str> = kept
        .sessions
        .iter()
        .filter(|s| s.will.is_some())
        .map(|s| &*s.client_id)
        .collect();
    assert_eq!(waiting, ["away"]);
    let broker = broker_on(Arc::new(DiskStore::open(&dir).unwrap())).await;
    assert_eq!(broker.stats().retained, 3, "no will of `patient`");
    broker.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

// MQTT-3.1.2-4 v3:MQTT-3.1.2-5 v5:MQTT-3.1.2-23 (the session is resumed, with its
// subscriptions and the QoS 1 messages that arrived while it was disconnected),
// MQTT-4.6.0-6 (in order).
#[tokio::test]
async fn a_kept_session_and_its_queued_messages_survive_a_restart() {
    for version in [V311, V5] {
        let dir = temp_dir(&format!("session-{version:?}"));
        let broker = broker_on(Arc::new(DiskStore::open(&dir).unwrap())).await;
        let (mut sub, present) = connect_kept(&broker, version, "kept").await;
        assert!(!present);
        sub.sub(1, "q/#", QoS::AtLeastOnce).await;
        sub.disconnect().await;
        let mut publisher = Peer::connect(addr(&broker), version, "pub").await;
        for (i, payload) in ["one", "two", "three"].into_iter().enumerate() {
            let mut p = publish("q/a", payload, QoS::AtLeastOnce);
            p.packet_id = Some(pid(10 + i as u16));
            publisher.send(p).await;
            assert!(matches!(publisher.recv().await, Packet::PubAck(_)));
        }
        broker.shutdown().await;

        let broker = broker_on(Arc::new(DiskStore::open(&dir).unwrap())).await;
        let (mut sub, present) = connect_kept(&broker, version, "kept").await;
        assert!(present, "{version:?}: the session was recovered");
        for expected in ["one", "two", "three"] {
            let p = sub.recv_publish().await;
            assert_eq!(
                (&p.payload[..], p.qos),
                (expected.as_bytes(), QoS::AtLeastOnce)
            );
            sub.send(Packet::PubAck(fulmar_codec::PubAck::new(
                p.packet_id.unwrap(),
            )))
            .await;
        }
        // The subscription came back too.
        broker
            .publish("q/b", "four", QoS::AtLeastOnce, false)
            .unwrap();
        let p = sub.recv_publish().await;
        assert_eq!(&p.payload[..], b"four");
        sub.send(Packet::PubAck(fulmar_codec::PubAck::new(
            p.packet_id.unwrap(),
        )))
        .await;
        sub.disconnect().await;
        broker.shutdown().await;

        // Acknowledged messages are gone from the store.
        let left = DiskStore::open(&dir).unwrap().load().unwrap();
        assert!(left.messages.is_empty(), "{:?}", left.messages);
        assert_eq!(left.sessions.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

// MQTT-4.3.3-2 v5:MQTT-4.3.3-4 (a QoS 2 PUBLISH keeps its packet identifier until
// PUBREC), MQTT-4.4.0-1 (resent with DUP on resume), v3:MQTT-4.3.3-1 (PUBREL resent).
#[tokio::test]
async fn an_outbound_qos2_flow_resumes_after_a_restart() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let broker = broker_on(store.clone()).await;
    let (mut sub, _) = connect_kept(&broker, V5, "q2").await;
    sub.sub(1, "x", QoS::ExactlyOnce).await;
    broker
        .publish("x", "once", QoS::ExactlyOnce, false)
        .unwrap();
    let first = sub.recv_publish().await;
    let id = first.packet_id.unwrap();
    drop(sub); // no PUBREC: the broker keeps the PUBLISH in flight.
    wait_for_sessions_disconnected(&broker).await;
    broker.shutdown().await;

    let broker = broker_on(store.clone()).await;
    let (mut sub, present) = connect_kept(&broker, V5, "q2").await;
    assert!(present);
    let again = sub.recv_publish().await;
    assert_eq!(
        (again.packet_id, again.dup, &again.payload[..]),
        (Some(id), true, &b"once"[..])
    );
    sub.send(Packet::PubRec(PubRec::new(id))).await;
    assert_eq!(sub.recv().await, Packet::PubRel(PubRel::new(id)));
    // The PUBREC was recorded: after another restart only the PUBREL is resent.
    drop(sub);
    wait_for_sessions_disconnected(&broker).await;
    broker.shutdown().await;

    let broker = broker_on(store.clone()).await;
    let (mut sub, _) = connect_kept(&broker, V5, "q2").await;
    assert_eq!(sub.recv().await, Packet::PubRel(PubRel::new(id)));
    sub.send(Packet::PubComp(PubComp::new(id))).await;
    sub.disconnect().await;
    broker.shutdown().await;
    assert!(store.load().unwrap().messages.is_empty());
}

// MQTT-4.6.0-1 (messages resent in the order they were first sent), MQTT-4.4.0-1
// (with DUP and their original identifiers), MQTT-4.6.0-2 (acknowledged in
// order): in-flight QoS 1 and QoS 2 messages, mixed, after a restart. (The
// QoS 1 identifiers reach the store when the connection ends: they came back
// with new ones, and "five", after the last QoS 2 one, without DUP.)
#[tokio::test]
async fn mixed_qos_in_flight_messages_come_back_in_order_after_a_restart() {
    for version in [V311, V5] {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let broker = broker_on(store.clone()).await;
        let (mut sub, _) = connect_kept(&broker, version, "mixed").await;
        sub.sub(1, "m", QoS::ExactlyOnce).await;
        let sent = [
            ("one", QoS::AtLeastOnce),
            ("two", QoS::ExactlyOnce),
            ("three", QoS::AtLeastOnce),
            ("four", QoS::ExactlyOnce),
            ("five", QoS::AtLeastOnce),
        ];
        let mut ids = Vec::new();
        for (payload, qos) in sent {
            broker.publish("m", payload, qos, false).unwrap();
            let p = sub.recv_publish().await;
            assert_eq!((&p.payload[..], p.qos), (payload.as_bytes(), qos));
            ids.push(p.packet_id.unwrap());
        }
        drop(sub); // nothing acknowledged: all five are in flight.
        wait_for_sessions_disconnected(&broker).await;
        broker.shutdown().await;

        let broker = broker_on(store.clone()).await;
        let (mut sub, present) = connect_kept(&broker, version, "mixed").await;
        assert!(present);
        let mut seen = Vec::new();
        for (i, (payload, qos)) in sent.into_iter().enumerate() {
            let p = sub.recv_publish().await;
            assert_eq!(
                (&p.payload[..], p.qos),
                (payload.as_bytes(), qos),
                "{version:?}: resent in the original order"
            );
            assert!(p.dup, "{version:?}: {payload} with DUP");
            let id = p.packet_id.unwrap();
            assert_eq!(id, ids[i], "{version:?}: {payload} keeps its identifier");
            seen.push(id);
        }
        for (id, (_, qos)) in seen.iter().zip(sent) {
            if qos == QoS::AtLeastOnce {
                sub.send(Packet::PubAck(fulmar_codec::PubAck::new(*id)))
                    .await;
            } else {
                sub.send(Packet::PubRec(PubRec::new(*id))).await;
                assert_eq!(sub.recv().await, Packet::PubRel(PubRel::new(*id)));
                sub.send(Packet::PubComp(PubComp::new(*id))).await;
            }
        }
        // A later message gets an identifier none of the resent ones holds.
        broker.publish("m", "six", QoS::AtLeastOnce, false).unwrap();
        let p = sub.recv_publish().await;
        assert_eq!((&p.payload[..], p.dup), (&b"six"[..], false));
        sub.send(Packet::PubAck(fulmar_codec::PubAck::new(
            p.packet_id.unwrap(),
        )))
        .await;
        sub.disconnect().await;
        broker.shutdown().await;
        assert!(
            store.load().unwrap().messages.is_empty(),
            "{version:?}: every acknowledged message left the store"
        );
    }
}

// v5:MQTT-3.1.2-25: a message too large for the client is discarded as if
// delivered; its store record goes too (it stayed for ever, and came back
// to the client after a restart).
#[tokio::test]
async fn messages_too_large_for_a_kept_session_leave_the_store() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let broker = broker_on(store.clone()).await;
    let mut c = Connect::new(V5, MqttString::from("small"));
    c.keep_alive = 0;
    c.properties.session_expiry_interval = Some(3600);
    c.properties.maximum_packet_size = std::num::NonZeroU32::new(200);
    let (mut sub, _) = Peer::connect_with(addr(&broker), c).await;
    sub.sub(1, "t/#", QoS::AtLeastOnce).await;
    let mut publisher = Peer::connect(addr(&broker), V5, "pub").await;
    for (i, size) in [1000, 1000, 1000, 10].into_iter().enumerate() {
        let mut p = publish("t/x", "", QoS::AtLeastOnce);
        p.payload = vec![b'x'; size].into();
        p.packet_id = Some(pid(10 + i as u16));
        publisher.send(p).await;
        assert!(matches!(publisher.recv().await, Packet::PubAck(_)));
    }
    let p = sub.recv_publish().await;
    assert_eq!(p.payload.len(), 10, "the large ones are not sent");
    puback(&mut sub, &p).await;
    shutdown_with_no_message_left(broker, &store, &mut sub).await;
}

// Under back-pressure, a copy for a full queue that is given up (after
// `backpressure_timeout`, its publisher not acknowledged and disconnected)
// leaves the store as well: after a restart it came back, next to the
// publisher's own resend.
#[tokio::test]
async fn a_copy_given_up_under_back_pressure_leaves_the_store() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut limits = fulmar_broker::Limits::default();
    limits.overload_policy = fulmar_broker::OverloadPolicy::Backpressure;
    limits.backpressure_timeout = std::time::Duration::from_millis(300);
    limits.max_queued_messages = 1;
    let broker = start_with(Broker::builder().store(store.clone()).limits(limits)).await;
    // Takes one message and never acknowledges it.
    let mut c = Connect::new(V5, MqttString::from("stuck"));
    c.keep_alive = 0;
    c.properties.session_expiry_interval = Some(300);
    c.properties.receive_maximum = std::num::NonZeroU16::new(1);
    let (mut stuck, _) = Peer::connect_with(addr(&broker), c).await;
    stuck.sub(1, "bp", QoS::AtLeastOnce).await;
    let mut publisher = Peer::connect(addr(&broker), V5, "bp-pub").await;
    let mut n = 0u16;
    let held = loop {
        n += 1;
        assert!(n < 20, "never held back");
        let mut p = publish("bp", "", QoS::AtLeastOnce);
        p.payload = n.to_string().into();
        p.packet_id = Some(pid(n));
        publisher.send(p).await;
        match publisher.recv().await {
            Packet::PubAck(_) => {}
            Packet::Disconnect(d) => {
                assert_eq!(
                    d.reason_code,
                    fulmar_codec::DisconnectReasonCode::ServerBusy
                );
                break n;
            }
            other => panic!("{other:?}"),
        }
    };
    // The stuck subscriber's session state was journaled before it ends.
    stuck.send(Packet::PingReq).await;
    while stuck.recv().await != Packet::PingResp {}
    broker.shutdown().await;
    let kept: Vec<String> = store
        .load()
        .unwrap()
        .messages
        .into_iter()
        .filter(|(client, _, _)| &**client == "stuck")
        .map(|(_, _, m)| String::from_utf8_lossy(&m.publish.payload).into_owned())
        .collect();
    assert!(!kept.is_empty(), "the acknowledged ones are kept");
    assert!(
        !kept.contains(&held.to_string()),
        "message {held}, not acknowledged to its publisher, is kept: {kept:?}"
    );
}

// v5:MQTT-3.3.2-6: an in-flight message recovered after a restart keeps
// ageing until its client comes back (it was aged up to the restart only).
#[tokio::test]
async fn a_recovered_in_flight_message_ages_until_its_client_returns() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let broker = broker_on(store.clone()).await;
    let (mut sub, _) = connect_kept(&broker, V5, "ager").await;
    sub.sub(1, "x", QoS::ExactlyOnce).await;
    let mut publisher = Peer::connect(addr(&broker), V5, "pub").await;
    let mut p = publish("x", "ages", QoS::ExactlyOnce);
    p.packet_id = Some(pid(1));
    p.properties.message_expiry_interval = Some(100);
    publisher.send(p).await;
    assert!(matches!(publisher.recv().await, Packet::PubRec(_)));
    assert_eq!(&sub.recv_publish().await.payload[..], b"ages");
    drop((sub, publisher)); // no PUBREC: in flight.
    wait_for_sessions_disconnected(&broker).await;
    broker.shutdown().await;

    let broker = broker_on(store.clone()).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (mut sub, present) = connect_kept(&broker, V5, "ager").await;
    assert!(present);
    let again = sub.recv_publish().await;
    assert!(again.dup);
    let left = again.properties.message_expiry_interval.unwrap();
    assert!(
        left <= 98,
        "{left} s left after 2 s away from a restarted broker"
    );
    broker.shutdown().await;
}

// Messages still in a connection's queue when it ends stay with the session;
// once acknowledged on the next connection their store records go (they
// stayed, and came back after a restart as duplicates).
#[tokio::test]
async fn messages_queued_at_a_disconnect_leave_the_store_once_acknowledged() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut limits = fulmar_broker::Limits::default();
    limits.max_queued_messages = 3;
    let broker = start_with(Broker::builder().store(store.clone()).limits(limits)).await;
    let mut c = Connect::new(V5, MqttString::from("q"));
    c.keep_alive = 0;
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(3600);
    c.properties.receive_maximum = std::num::NonZeroU16::new(1);
    let (mut sub, _) = Peer::connect_with(addr(&broker), c.clone()).await;
    sub.sub(1, "q", QoS::AtLeastOnce).await;
    for n in 0..6 {
        broker
            .publish("q", format!("m{n}"), QoS::AtLeastOnce, false)
            .unwrap();
    }
    // One in flight, the others in the session's and the connection's queues.
    assert_eq!(&sub.recv_publish().await.payload[..], b"m0");
    drop(sub);
    wait_for_sessions_disconnected(&broker).await;
    let (mut sub, ack) = Peer::connect_with(addr(&broker), c).await;
    assert!(ack.session_present);
    let quiet = std::time::Duration::from_millis(300);
    while let Ok(packet) = tokio::time::timeout(quiet, sub.recv()).await {
        let Packet::Publish(p) = packet else {
            panic!("{packet:?}")
        };
        puback(&mut sub, &p).await;
    }
    shutdown_with_no_message_left(broker, &store, &mut sub).await;
}

/// Acknowledges the QoS 1 message `p`.
async fn puback(peer: &mut Peer, p: &fulmar_codec::Publish) {
    let ack = fulmar_codec::PubAck::new(p.packet_id.unwrap());
    peer.send(Packet::PubAck(ack)).await;
}

/// Once the broker has read everything `peer` sent (a PINGREQ round trip),
/// shuts it down and checks that `store` holds no message record.
async fn shutdown_with_no_message_left(
    broker: BrokerHandle,
    store: &Arc<dyn Store>,
    peer: &mut Peer,
) {
    peer.send(Packet::PingReq).await;
    assert_eq!(peer.recv().await, Packet::PingResp);
    broker.shutdown().await;
    let left = store.load().unwrap().messages;
    assert!(left.is_empty(), "{} records left: {left:?}", left.len());
}

// v5:MQTT-4.3.3-10 v3:MQTT-4.3.3-2 (an inbound QoS 2 message is delivered once: a
// resent PUBLISH with the same identifier before PUBREL is not routed again, even
// across a restart).
#[tokio::test]
async fn an_inbound_qos2_identifier_survives_a_restart() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let broker = broker_on(store.clone()).await;
    let (mut watcher, _) = connect_kept(&broker, V5, "watcher").await;
    watcher.sub(1, "in", QoS::AtMostOnce).await;
    let (mut publisher, _) = connect_kept(&broker, V5, "publisher").await;
    let mut p = publish("in", "exactly-once", QoS::ExactlyOnce);
    p.packet_id = Some(pid(5));
    publisher.send(p.clone()).await;
    assert!(matches!(publisher.recv().await, Packet::PubRec(r) if r.packet_id == pid(5)));
    assert_eq!(&watcher.recv_publish().await.payload[..], b"exactly-once");
    drop(publisher);
    drop(watcher);
    wait_for_sessions_disconnected(&broker).await;
    broker.shutdown().await;

    let broker = broker_on(store).await;
    let (mut watcher, _) = connect_kept(&broker, V5, "watcher").await;
    let (mut publisher, present) = connect_kept(&broker, V5, "publisher").await;
    assert!(present);
    p.dup = true;
    publisher.send(p).await;
    assert!(matches!(publisher.recv().await, Packet::PubRec(r) if r.packet_id == pid(5)));
    publisher.send(Packet::PubRel(PubRel::new(pid(5)))).await;
    assert!(matches!(publisher.recv().await, Packet::PubComp(c) if c.packet_id == pid(5)));
    // Not routed again: the next message the watcher sees is a later one.
    broker
        .publish("in", "later", QoS::AtMostOnce, false)
        .unwrap();
    assert_eq!(&watcher.recv_publish().await.payload[..], b"later");
    broker.shutdown().await;
}

/// A store whose commits are slow, and that records when each finished.
struct SlowStore {
    inner: MemoryStore,
    /// A message for a session has been committed.
    message_committed: AtomicBool,
    /// Operations seen per commit.
    batches: Mutex<Vec<usize>>,
}

impl SlowStore {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryStore::new(),
            message_committed: AtomicBool::new(false),
            batches: Mutex::new(Vec::new()),
        })
    }
}

impl Store for SlowStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        self.inner.load()
    }

    fn commit(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        std::thread::sleep(std::time::Duration::from_millis(20));
        self.inner.commit(ops)?;
        if ops
            .iter()
            .any(|op| matches!(op, StoreOp::PutMessage { .. }))
        {
            self.message_committed.store(true, Ordering::SeqCst);
        }
        self.batches.lock().unwrap().push(ops.len());
        Ok(())
    }
}

// The PUBACK of a QoS 1 message for a kept session goes out only after the
// message is in the store (issue: durable before acknowledged).
#[tokio::test]
async fn puback_waits_until_the_message_is_committed() {
    let store = SlowStore::new();
    let broker = broker_on(store.clone()).await;
    let (mut sub, _) = connect_kept(&broker, V311, "durable").await;
    sub.sub(1, "d", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let mut publisher = Peer::connect(addr(&broker), V311, "p").await;
    publisher.send(publish("d", "kept", QoS::AtLeastOnce)).await;
    assert!(matches!(publisher.recv().await, Packet::PubAck(_)));
    assert!(
        store.message_committed.load(Ordering::SeqCst),
        "PUBACK before the message was durable"
    );
    broker.shutdown().await;
}

// Group commit: many publishers' messages share commits.
#[tokio::test]
async fn commits_are_shared_by_concurrent_publishers() {
    let store = SlowStore::new();
    let broker = broker_on(store.clone()).await;
    let (mut sub, _) = connect_kept(&broker, V311, "many").await;
    sub.sub(1, "m/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let mut tasks = Vec::new();
    for n in 0..8 {
        let addr = addr(&broker);
        tasks.push(tokio::spawn(async move {
            let mut p = Peer::connect(addr, V311, &format!("p{n}")).await;
            for i in 1..=10 {
                let mut m = publish("m/x", "v", QoS::AtLeastOnce);
                m.packet_id = Some(pid(i));
                p.send(m).await;
                assert!(matches!(p.recv().await, Packet::PubAck(_)));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let batches = store.batches.lock().unwrap().clone();
    let messages = store.inner.load().unwrap().messages.len();
    assert_eq!(messages, 80, "every acknowledged message is stored");
    // 80 messages, each waited for: fewer commits than messages means sharing.
    assert!(
        batches.len() < 80,
        "{} commits for 80 messages",
        batches.len()
    );
    broker.shutdown().await;
}

// Recovery: an expired session and its messages are dropped, orphan messages too.
#[tokio::test]
async fn recovery_drops_expired_sessions() {
    let store = Arc::new(MemoryStore::new());
    let message = StoredMessage {
        publish: publish("t", "old", QoS::AtLeastOnce),
        stored_at: 1_000,
        packet_id: None,
        released: false,
    };
    let ops = [
        StoreOp::PutSession(StoredSession {
            client_id: Arc::from("gone"),
            expiry_interval: 60,
            disconnected_at: Some(1_000), // 1970: long expired
            subscriptions: Vec::new(),
            will: None,
        }),
        StoreOp::PutMessage {
            client: Arc::from("gone"),
            seq: 1,
            message: message.clone(),
        },
        StoreOp::PutMessage {
            client: Arc::from("nobody"),
            seq: 2,
            message,
        },
        StoreOp::PutSession(StoredSession {
            client_id: Arc::from("forever"),
            expiry_interval: u32::MAX,
            disconnected_at: Some(1_000),
            subscriptions: Vec::new(),
            will: None,
        }),
    ];
    store.commit(&ops).unwrap();
    let broker = broker_on(store.clone()).await;
    assert_eq!(broker.stats().sessions, 1);
    broker.shutdown().await;
    let left = store.load().unwrap();
    assert_eq!(left.sessions.len(), 1);
    assert_eq!(&*left.sessions[0].client_id, "forever");
    assert!(left.messages.is_empty());
}

// v5:MQTT-3.3.2-5: a retained message whose Message Expiry Interval passed
// while the broker was down is not served after the restart, and its record
// is deleted; so is a record whose topic is not a topic name (corrupted: no
// subscription could ever match it, and it stayed for ever).
#[tokio::test]
async fn retained_messages_that_expired_while_down_are_not_recovered() {
    let store = Arc::new(MemoryStore::new());
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let put = |topic: &str, expiry: Option<u32>| {
        let mut p = publish(topic, "x", QoS::AtMostOnce);
        p.retain = true;
        p.properties.message_expiry_interval = expiry;
        StoreOp::PutRetained {
            topic: Arc::from(topic),
            message: StoredMessage {
                publish: p,
                // Stored 10 s ago.
                stored_at: now_unix - 10_000,
                packet_id: None,
                released: false,
            },
        }
    };
    store
        .commit(&[
            put("gone", Some(5)),
            put("left", Some(60)),
            put("kept", None),
            put("not/a/name/#", None),
        ])
        .unwrap();
    let broker = broker_on(store.clone()).await;
    assert_eq!(broker.stats().retained, 2);
    let mut sub = broker.subscribe("#").unwrap();
    let mut topics = vec![next(&mut sub).await.topic, next(&mut sub).await.topic];
    topics.sort();
    assert_eq!(topics, ["kept", "left"]);
    broker.shutdown().await;
    let mut stored: Vec<_> = store
        .load()
        .unwrap()
        .retained
        .into_iter()
        .map(|(topic, _)| topic.to_string())
        .collect();
    stored.sort();
    assert_eq!(stored, ["kept", "left"]);
}

// v5:MQTT-3.1.2-23: a session lasts its Session Expiry Interval, as the
// broker limits it now: lowering max_session_expiry shortens the sessions
// already stored too (a 3.1.1 session is stored as never expiring).
#[tokio::test]
async fn recovered_sessions_are_held_to_the_current_session_expiry_limit() {
    let store = Arc::new(MemoryStore::new());
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let session = |id: &str, away_secs: u64| {
        StoreOp::PutSession(StoredSession {
            client_id: Arc::from(id),
            expiry_interval: u32::MAX,
            disconnected_at: Some(now_unix - away_secs * 1000),
            subscriptions: Vec::new(),
            will: None,
        })
    };
    store
        .commit(&[session("old", 120), session("recent", 10)])
        .unwrap();
    let mut limits = fulmar_broker::Limits::default();
    limits.max_session_expiry = 60;
    let broker = start_with(Broker::builder().store(store.clone()).limits(limits)).await;
    assert_eq!(broker.stats().sessions, 1);
    broker.shutdown().await;
    let left = store.load().unwrap();
    assert_eq!(left.sessions.len(), 1);
    assert_eq!(&*left.sessions[0].client_id, "recent");
}

/// A store where the session records of "c" and "moved" could not be read
/// (as a corrupted record, or one written by a newer version, is skipped).
struct OneUnreadable(MemoryStore);

impl Store for OneUnreadable {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let mut snapshot = self.0.load()?;
        snapshot.skipped += 2;
        snapshot.unreadable_sessions = vec![Arc::from("c"), Arc::from("moved")];
        Ok(snapshot)
    }

    fn commit(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        self.0.commit(ops)
    }
}

// The messages and inbound QoS 2 identifiers of a session whose record
// could not be read are kept, not deleted as orphans; a new session under
// that identifier starts without them (MQTT-3.1.2-4 / v5:MQTT-3.1.2-4: a
// new session is empty). With every record read, orphans are deleted.
#[tokio::test]
async fn records_of_an_unreadable_session_are_kept_but_not_given_to_a_new_one() {
    let orphans = [
        StoreOp::PutMessage {
            client: Arc::from("c"),
            seq: 1,
            message: StoredMessage {
                publish: publish("t", "old", QoS::AtLeastOnce),
                stored_at: 1_000,
                packet_id: None,
                released: false,
            },
        },
        StoreOp::AddIncoming {
            client: Arc::from("c"),
            packet_id: pid(5),
        },
    ];
    let store = Arc::new(OneUnreadable(MemoryStore::new()));
    store.0.commit(&orphans).unwrap();
    let broker = broker_on(store.clone()).await;
    broker.shutdown().await;
    let left = store.0.load().unwrap();
    assert_eq!((left.messages.len(), left.incoming.len()), (1, 1));
    // The client comes back without a session (its record is unreadable).
    let broker = broker_on(store.clone()).await;
    let (peer, present) = connect_kept(&broker, V5, "c").await;
    assert!(!present);
    drop(peer);
    broker.shutdown().await;
    let left = store.0.load().unwrap();
    assert_eq!(left.sessions.len(), 1);
    assert_eq!((left.messages.len(), left.incoming.len()), (0, 0));

    // Every record read: orphans are deleted at start.
    let store = Arc::new(MemoryStore::new());
    store.commit(&orphans).unwrap();
    let broker = broker_on(store.clone()).await;
    broker.shutdown().await;
    let left = store.load().unwrap();
    assert_eq!((left.messages.len(), left.incoming.len()), (0, 0));
}

// A session brought from another node (cluster) starts from what it brings,
// held to this broker's max_session_expiry, as one recovered at start is;
// records left under its identifier are not its (v5:MQTT-3.1.2-23).
#[tokio::test]
async fn an_adopted_session_is_held_to_the_limits_and_starts_clean_in_the_store() {
    // Kept at start: some record could not be read (see OneUnreadable).
    let store = Arc::new(OneUnreadable(MemoryStore::new()));
    store
        .0
        .commit(&[StoreOp::AddIncoming {
            client: Arc::from("moved"),
            packet_id: pid(5),
        }])
        .unwrap();
    let mut limits = fulmar_broker::Limits::default();
    limits.max_session_expiry = 60;
    let broker = start_with(Broker::builder().store(store.clone()).limits(limits)).await;
    let export = fulmar_broker::SessionExport {
        session: StoredSession {
            client_id: Arc::from("moved"),
            expiry_interval: u32::MAX,
            disconnected_at: None,
            subscriptions: Vec::new(),
            will: None,
        },
        messages: Vec::new(),
        incoming: Vec::new(),
    };
    assert!(broker.adopt_session(export));
    broker.shutdown().await;
    let left = store.0.load().unwrap();
    assert_eq!(left.sessions.len(), 1);
    assert_eq!(left.sessions[0].expiry_interval, 60);
    assert!(left.incoming.is_empty(), "{:?}", left.incoming);
}

// A corrupted data file is a clear error, never a panic.
#[tokio::test]
async fn a_corrupted_store_file_is_an_error() {
    let dir = temp_dir("corrupt");
    {
        let store = DiskStore::open(&dir).unwrap();
        store
            .commit(&[StoreOp::PutRetained {
                topic: Arc::from("a"),
                message: StoredMessage {
                    publish: publish("a", "x", QoS::AtMostOnce),
                    stored_at: 1,
                    packet_id: None,
                    released: false,
                },
            }])
            .unwrap();
    }
    let file = dir.join("fulmar.redb");
    let len = std::fs::metadata(&file).unwrap().len();
    // Garbage over the header.
    let mut bytes = std::fs::read(&file).unwrap();
    for b in bytes.iter_mut().take(4096) {
        *b = 0xA5;
    }
    std::fs::write(&file, &bytes).unwrap();
    let error = DiskStore::open(&dir).unwrap_err();
    assert!(error.to_string().contains("fulmar.redb"), "{error}");
    // Truncated to half.
    std::fs::write(&file, &bytes[..(len / 2) as usize]).unwrap();
    assert!(DiskStore::open(&dir).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

// A store closed cleanly and damaged since (one 4 KiB page of garbage at a
// time, anywhere in the file) is an error when it is opened or loaded, never
// a panic: redb trusts a cleanly closed file, and a damaged page panicked
// `DiskStore::open` for 220 of 229 pages before the store checked the file.
// (robustness, no spec statement)
#[test]
fn a_store_with_a_damaged_page_is_an_error_not_a_panic() {
    let dir = temp_dir("damaged-pages");
    {
        let store = DiskStore::open(&dir).unwrap();
        let ops: Vec<StoreOp> = (0..500)
            .map(|i| StoreOp::PutRetained {
                topic: Arc::from(format!("retained/{i}").as_str()),
                message: StoredMessage {
                    publish: publish(
                        &format!("retained/{i}"),
                        "a hundred bytes of payload, so that 500 messages take many pages of the file, ..........",
                        QoS::AtMostOnce,
                    ),
                    stored_at: 1,
                    packet_id: None,
                    released: false,
                },
            })
            .collect();
        store.commit(&ops).unwrap();
    }
    let file = dir.join("fulmar.redb");
    let clean = std::fs::read(&file).unwrap();
    let pages = clean.len() / 4096;
    assert!(pages > 8, "{pages} pages");
    let (mut errors, mut panics) = (0, 0);
    for page in 1..pages {
        let mut bytes = clean.clone();
        for b in bytes.iter_mut().skip(page * 4096).take(4096) {
            *b = 0xA5;
        }
        std::fs::write(&file, &bytes).unwrap();
        let dir = dir.clone();
        let outcome = std::panic::catch_unwind(move || {
            DiskStore::open(&dir).and_then(|store| store.load().map(|_| ()))
        });
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(_)) => errors += 1,
            Err(_) => panics += 1,
        }
    }
    assert_eq!(
        panics, 0,
        "{panics} of {pages} damaged pages panicked ({errors} errors)"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn wait_for_sessions_disconnected(broker: &BrokerHandle) {
    for _ in 0..500 {
        if broker.stats().clients_connected == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("clients still connected");
}

/// Recovery time of a large store: 100 k persistent sessions (one
/// subscription and one queued QoS 1 message each) and 1 M retained
/// messages. A measurement, not a check: run with
/// `cargo test --release -p fulmar-broker --test persistence -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement: writes about 300 MB"]
async fn recovery_time_of_100k_sessions_and_1m_retained() {
    let dir = temp_dir("recovery-time");
    {
        let store = DiskStore::open(&dir).unwrap();
        let fill = std::time::Instant::now();
        let mut ops = Vec::new();
        for i in 0..100_000u64 {
            let client: Arc<str> = Arc::from(format!("client-{i}"));
            ops.push(StoreOp::PutSession(StoredSession {
                client_id: client.clone(),
                expiry_interval: u32::MAX,
                disconnected_at: Some(1),
                subscriptions: vec![fulmar_broker::StoredSubscription {
                    filter: format!("site/{}/device/{i}/+", i % 100),
                    qos: QoS::AtLeastOnce,
                    no_local: false,
                    retain_as_published: false,
                    id: None,
                }],
                will: None,
            }));
            ops.push(StoreOp::PutMessage {
                client,
                seq: i + 1,
                message: StoredMessage {
                    publish: publish("site/x", "queued", QoS::AtLeastOnce),
                    stored_at: 1,
                    packet_id: None,
                    released: false,
                },
            });
            if ops.len() >= 20_000 {
                store.commit(&ops).unwrap();
                ops.clear();
            }
        }
        for i in 0..1_000_000u64 {
            ops.push(StoreOp::PutRetained {
                topic: Arc::from(format!("site/{}/device/{}/state", i % 1000, i)),
                message: StoredMessage {
                    publish: publish("t", "retained-value-0123456789", QoS::AtMostOnce),
                    stored_at: 1,
                    packet_id: None,
                    released: false,
                },
            });
            if ops.len() >= 20_000 {
                store.commit(&ops).unwrap();
                ops.clear();
            }
        }
        store.commit(&ops).unwrap();
        eprintln!("filled in {:?}", fill.elapsed());
    }
    let size: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let started = std::time::Instant::now();
    let store = Arc::new(DiskStore::open(&dir).unwrap());
    let opened = started.elapsed();
    let load = std::time::Instant::now();
    let snapshot = store.load().unwrap();
    let loaded = load.elapsed();
    drop(snapshot);
    let start = std::time::Instant::now();
    let broker = Broker::builder().store(store).start().await.unwrap();
    let recovered = start.elapsed();
    let stats = broker.stats();
    eprintln!(
        "store {:.0} MiB: open {opened:?}, read all {loaded:?}, broker start with recovery {recovered:?} \
         ({} sessions, {} subscriptions, {} retained)",
        size as f64 / (1 << 20) as f64,
        stats.sessions,
        stats.subscriptions,
        stats.retained
    );
    assert_eq!((stats.sessions, stats.retained), (100_000, 1_000_000));
    broker.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

// Bounded disk use: delivered messages are deleted and their space reused;
// reopening compacts.
#[tokio::test]
async fn disk_use_stays_bounded_under_churn() {
    let dir = temp_dir("churn");
    let store = DiskStore::open(&dir).unwrap();
    let payload: &'static str = Box::leak("x".repeat(1024).into_boxed_str());
    let client: Arc<str> = Arc::from("churn");
    let mut seq = 0u64;
    // 20 MiB written in 200 commits, at most 1000 messages (1 MiB) live.
    for _ in 0..200 {
        let mut ops = Vec::new();
        for _ in 0..100 {
            seq += 1;
            ops.push(StoreOp::PutMessage {
                client: client.clone(),
                seq,
                message: StoredMessage {
                    publish: publish("churn", payload, QoS::AtLeastOnce),
                    stored_at: 1,
                    packet_id: None,
                    released: false,
                },
            });
            if seq > 1000 {
                ops.push(StoreOp::DeleteMessage {
                    client: client.clone(),
                    seq: seq - 1000,
                });
            }
        }
        store.commit(&ops).unwrap();
    }
    let file = store.path().to_owned();
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size < 16 << 20, "{size} bytes on disk for 1 MiB live");
    assert_eq!(store.load().unwrap().messages.len(), 1000);
    drop(store);
    let reopened = DiskStore::open(&dir).unwrap();
    let compacted = std::fs::metadata(&file).unwrap().len();
    assert!(compacted <= size, "{compacted} > {size}");
    assert_eq!(reopened.load().unwrap().messages.len(), 1000);
    eprintln!("churn: {size} bytes while running, {compacted} after reopening");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A store whose commits fail (a full disk, say).
struct BrokenStore;

impl Store for BrokenStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }

    fn commit(&self, _ops: &[StoreOp]) -> Result<(), StoreError> {
        Err(StoreError::Io(std::io::Error::other(
            "no space left on device",
        )))
    }
}

// MQTT-4.8.0-2: a transient error while processing an inbound packet (the
// store cannot make the message durable) closes the connection; the message is
// not acknowledged, so the publisher sends it again later.
#[tokio::test]
async fn a_failing_store_closes_the_connection_without_acknowledging() {
    for version in [V311, V5] {
        let broker = broker_on(Arc::new(BrokenStore)).await;
        let mut c = Connect::new(version, MqttString::from("p"));
        c.keep_alive = 0;
        c.clean_start = false;
        if version == V5 {
            c.properties.session_expiry_interval = Some(60);
        }
        // The session record cannot be written: not even the CONNACK goes out.
        let mut peer = Peer::open(addr(&broker), version).await;
        peer.send(c).await;
        peer.expect_closed().await;
        // A clean session needs no store: it works, and its QoS 1 message
        // for nobody is acknowledged.
        let mut clean = Peer::connect(addr(&broker), version, "clean").await;
        clean.send(publish("t", "x", QoS::AtLeastOnce)).await;
        assert!(matches!(clean.recv().await, Packet::PubAck(_)));
        broker.shutdown().await;
    }
}

/// A store whose commits fail, counting the attempts.
#[derive(Default)]
struct CountedBrokenStore(std::sync::atomic::AtomicUsize);

impl Store for CountedBrokenStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }

    fn commit(&self, _ops: &[StoreOp]) -> Result<(), StoreError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(StoreError::Io(std::io::Error::other(
            "no space left on device",
        )))
    }
}

// MQTT-4.8.0-2: under periodic commits, a message whose acknowledgement
// depends on a change is not acknowledged while the store fails (found by a
// review: periodic mode acknowledged every message of a full disk, for good).
#[tokio::test]
async fn periodic_commits_acknowledge_nothing_while_the_store_fails() {
    let store = Arc::new(CountedBrokenStore::default());
    let broker = start_with(
        Broker::builder()
            .store(store.clone())
            .durability(Durability::Periodic(std::time::Duration::from_millis(10))),
    )
    .await;
    // A first change, whose commit fails; the second attempt means the
    // journal knows it is failing.
    broker.publish("r1", "x", QoS::AtMostOnce, true).unwrap();
    while store.0.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // A clean session needs no store: it connects. Its retained QoS 1
    // message needs one: no PUBACK, the connection is closed.
    let mut peer = Peer::connect(addr(&broker), V5, "retainer").await;
    let mut p = publish("r2", "y", QoS::AtLeastOnce);
    p.retain = true;
    peer.send(p).await;
    peer.expect_closed().await;
    broker.shutdown().await;
}

/// Waits for the subscriber's copy of a retained message, then restarts the
/// broker on the same store and reconnects.
async fn restart_and_resume(
    broker: BrokerHandle,
    store: &Arc<dyn Store>,
    id: &str,
) -> (BrokerHandle, Peer) {
    wait_for_sessions_disconnected(&broker).await;
    broker.shutdown().await;
    let broker = broker_on(store.clone()).await;
    let (sub, present) = connect_kept(&broker, V5, id).await;
    assert!(present);
    (broker, sub)
}

// MQTT-4.4.0-1 MQTT-2.2.1-3: the copies of retained messages sent at
// SUBSCRIBE to a kept session are in the store as routed ones are (found by
// a review: they were not). A QoS 2 one whose PUBREL went out has it resent
// after a restart, and its identifier is not given to a new message; a QoS 1
// one not acknowledged is resent with DUP.
#[tokio::test]
async fn retained_messages_in_flight_at_subscribe_survive_a_restart() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let broker = broker_on(store.clone()).await;
    broker
        .publish("r2", "kept", QoS::ExactlyOnce, true)
        .unwrap();
    broker
        .publish("r1", "kept", QoS::AtLeastOnce, true)
        .unwrap();
    let (mut sub, _) = connect_kept(&broker, V5, "rs").await;
    sub.sub(1, "r2", QoS::ExactlyOnce).await;
    let first = sub.recv_publish().await;
    assert!(first.retain);
    let id = first.packet_id.unwrap();
    sub.send(Packet::PubRec(PubRec::new(id))).await;
    assert_eq!(sub.recv().await, Packet::PubRel(PubRel::new(id)));
    sub.sub(2, "r1", QoS::AtLeastOnce).await;
    let second = sub.recv_publish().await;
    assert_eq!(&second.payload[..], b"kept");
    drop(sub); // no PUBCOMP, no PUBACK
    let (broker, mut sub) = restart_and_resume(broker, &store, "rs").await;
    assert_eq!(sub.recv().await, Packet::PubRel(PubRel::new(id)));
    let again = sub.recv_publish().await;
    assert_eq!(
        (&again.topic[..], again.packet_id, again.dup),
        ("r1", second.packet_id, true)
    );
    sub.send(Packet::PubComp(PubComp::new(id))).await;
    sub.send(Packet::PubAck(fulmar_codec::PubAck::new(
        second.packet_id.unwrap(),
    )))
    .await;
    broker
        .publish("r2", "new", QoS::ExactlyOnce, false)
        .unwrap();
    let new = sub.recv_publish().await;
    assert_eq!(&new.payload[..], b"new");
    sub.disconnect().await;
    broker.shutdown().await;
    assert_eq!(
        store.load().unwrap().messages.len(),
        1,
        "only the new one, unacknowledged"
    );
}

/// The session record of `id` in `store`.
fn record(store: &MemoryStore, id: &str) -> Option<StoredSession> {
    let snapshot = store.load().unwrap();
    snapshot.sessions.into_iter().find(|s| &*s.client_id == id)
}

/// A broker on `store` with a kept session subscribed to `status/#` (QoS
/// 1), away: the wills are queued for it until it comes back.
async fn broker_with_watcher_away(store: &Arc<MemoryStore>) -> BrokerHandle {
    let broker = broker_on(store.clone()).await;
    let (mut watcher, _) = connect_kept(&broker, V5, "watcher").await;
    watcher.sub(1, "status/#", QoS::AtLeastOnce).await;
    watcher.disconnect().await;
    broker
}

/// Client `id` connects (MQTT 5.0, Clean Start 0) with Session Expiry
/// Interval `expiry` and a QoS 1 will on `status/{id}` with Will Delay
/// Interval `delay`, then its connection drops; returns once its record
/// with the waiting will is committed.
async fn leave_with_will(
    broker: &BrokerHandle,
    store: &MemoryStore,
    id: &str,
    delay: u32,
    expiry: u32,
) {
    let mut c = Connect::new(V5, MqttString::from(id.to_owned()));
    c.keep_alive = 0;
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(expiry);
    let mut will = Will::new(MqttString::from(format!("status/{id}")), "gone".into());
    will.qos = QoS::AtLeastOnce;
    will.properties.will_delay_interval = Some(delay);
    c.will = Some(will);
    let (peer, ack) = Peer::connect_with(addr(broker), c).await;
    assert!(!ack.reason_code.is_error(), "{ack:?}");
    drop(peer); // no DISCONNECT: the will stands
    wait_until(&format!("the will of {id} in the store"), || {
        record(store, id).is_some_and(|s| s.will.is_some())
    })
    .await;
}

/// The topic of the next will the watcher receives (acknowledged).
async fn next_will(watcher: &mut Peer) -> String {
    let p = watcher.recv_publish().await;
    assert_eq!(&p.payload[..], b"gone");
    watcher
        .send(Packet::PubAck(fulmar_codec::PubAck::new(
            p.packet_id.unwrap(),
        )))
        .await;
    p.topic.to_string()
}

// v5:MQTT-3.1.2-8: a will waiting out its Will Delay Interval when the
// broker crashed is published after the restart, once: when its delay
// passes (found by a review: the session came back and expired, the will
// was never published). `sentinel`'s will, due after `device`'s session
// has expired, comes next: nothing of `device` came twice meanwhile.
#[test]
fn a_will_waiting_out_its_delay_at_a_crash_is_published_after_the_restart() {
    let store = Arc::new(MemoryStore::new());
    run_then_crash(async {
        let broker = broker_with_watcher_away(&store).await;
        leave_with_will(&broker, &store, "device", 2, 3).await;
        leave_with_will(&broker, &store, "sentinel", 4, 3600).await;
    });
    let device = record(&store, "device").unwrap();
    let will = device
        .will
        .as_ref()
        .expect("not published before the crash");
    assert_eq!(
        (&will.publish.topic[..], will.protocol_version),
        ("status/device", V5)
    );
    run(async {
        let broker = broker_on(store.clone()).await;
        let (mut watcher, present) = connect_kept(&broker, V5, "watcher").await;
        assert!(present);
        assert_eq!(next_will(&mut watcher).await, "status/device");
        assert_eq!(next_will(&mut watcher).await, "status/sentinel");
        wait_until("device's session expires", || !broker.has_session("device")).await;
        watcher.disconnect().await;
        broker.shutdown().await;
    });
    assert!(record(&store, "device").is_none());
    assert!(record(&store, "sentinel").unwrap().will.is_none());
}

// v5:MQTT-3.1.2-8, v5:MQTT-3.1.2-10: a will published when its delay passed
// leaves the session's record (which lives on): a restart does not publish
// it again. The watcher gets its copy (queued while it was away) once,
// then `sentinel`'s will, which was still waiting at the crash.
#[test]
fn a_will_published_before_a_crash_is_not_published_again() {
    let store = Arc::new(MemoryStore::new());
    run_then_crash(async {
        let broker = broker_with_watcher_away(&store).await;
        leave_with_will(&broker, &store, "device", 1, 3600).await;
        wait_until("the will published and out of the record", || {
            let snapshot = store.load().unwrap();
            let queued = snapshot
                .messages
                .iter()
                .filter(|(client, ..)| &**client == "watcher")
                .count();
            queued == 1 && record(&store, "device").is_some_and(|s| s.will.is_none())
        })
        .await;
        leave_with_will(&broker, &store, "sentinel", 2, 3600).await;
    });
    assert!(record(&store, "sentinel").unwrap().will.is_some());
    run(async {
        let broker = broker_on(store.clone()).await;
        let (mut watcher, present) = connect_kept(&broker, V5, "watcher").await;
        assert!(present);
        assert_eq!(next_will(&mut watcher).await, "status/device");
        assert_eq!(next_will(&mut watcher).await, "status/sentinel");
        assert!(broker.has_session("device"));
        watcher.disconnect().await;
        broker.shutdown().await;
    });
}

// v5:MQTT-3.1.3-9, v5:MQTT-3.1.2-8: a client that came back within the
// Will Delay Interval cancelled its will, in the store too: a restart does
// not publish it. `sentinel`'s will, due after `device`'s was, is the first
// the watcher gets.
#[test]
fn a_will_cancelled_by_a_reconnect_before_a_crash_is_not_published() {
    let store = Arc::new(MemoryStore::new());
    run_then_crash(async {
        let broker = broker_with_watcher_away(&store).await;
        leave_with_will(&broker, &store, "device", 2, 3600).await;
        let (device, present) = connect_kept(&broker, V5, "device").await;
        assert!(present);
        wait_until("the record rewritten without the will", || {
            record(&store, "device")
                .is_some_and(|s| s.will.is_none() && s.disconnected_at.is_none())
        })
        .await;
        leave_with_will(&broker, &store, "sentinel", 2, 3600).await;
        drop(device); // connected at the crash
    });
    run(async {
        let broker = broker_on(store.clone()).await;
        let (mut watcher, present) = connect_kept(&broker, V5, "watcher").await;
        assert!(present);
        assert_eq!(next_will(&mut watcher).await, "status/sentinel");
        assert!(broker.has_session("device"));
        watcher.disconnect().await;
        broker.shutdown().await;
    });
}

// v5:MQTT-3.1.2-8: a session that ended while the broker was down is
// published its waiting will at start, as it ends; so is one whose delay
// passed meanwhile, its session kept.
#[tokio::test]
async fn wills_due_while_the_broker_was_down_are_published_at_start() {
    let store = Arc::new(MemoryStore::new());
    let will = |id: &str| {
        let mut publish = publish(&format!("status/{id}"), "gone", QoS::AtLeastOnce);
        publish.packet_id = None;
        Some(fulmar_broker::StoredWill {
            publish,
            due: fulmar_broker::WillDue::At(2_000),
            username: Some("alice".into()),
            protocol_version: V5,
        })
    };
    let session = |id: &str, expiry_interval: u32, will| {
        StoreOp::PutSession(StoredSession {
            client_id: Arc::from(id),
            expiry_interval,
            disconnected_at: Some(1_000), // 1970
            subscriptions: Vec::new(),
            will,
        })
    };
    let watcher = StoreOp::PutSession(StoredSession {
        client_id: Arc::from("watcher"),
        expiry_interval: u32::MAX,
        disconnected_at: Some(1_000),
        subscriptions: vec![fulmar_broker::StoredSubscription {
            filter: "status/#".into(),
            qos: QoS::AtLeastOnce,
            no_local: false,
            retain_as_published: false,
            id: None,
        }],
        will: None,
    });
    store
        .commit(&[
            watcher,
            session("ended", 60, will("ended")),
            session("kept", u32::MAX, will("kept")),
        ])
        .unwrap();
    let broker = broker_on(store.clone()).await;
    let (mut watcher, present) = connect_kept(&broker, V5, "watcher").await;
    assert!(present);
    let mut wills = vec![next_will(&mut watcher).await, next_will(&mut watcher).await];
    wills.sort();
    assert_eq!(wills, ["status/ended", "status/kept"]);
    wait_until("the ended session goes", || !broker.has_session("ended")).await;
    assert!(broker.has_session("kept"));
    watcher.disconnect().await;
    broker.shutdown().await;
    assert!(record(&store, "ended").is_none());
    assert!(record(&store, "kept").unwrap().will.is_none());
}

// v5:MQTT-3.1.2-23 (a session lasts its Session Expiry Interval, no longer):
// a session whose client was connected at a crash counts its expiry from the
// restart, and that start must be in the store: a later restart (here a
// clean one) counts on from it, not from itself again. Before, the record
// kept "connected" and every restart started the count anew: a broker
// restarted more often than the interval kept the session for ever.
#[test]
fn a_session_connected_at_a_crash_expires_counting_from_the_first_restart() {
    let store = Arc::new(MemoryStore::new());
    run_then_crash(async {
        let broker = broker_on(store.clone()).await;
        let mut c = Connect::new(V5, MqttString::from("dev"));
        c.keep_alive = 0;
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(1);
        let (mut peer, _) = Peer::connect_with(addr(&broker), c).await;
        peer.sub(1, "t", QoS::AtLeastOnce).await;
        std::mem::forget(peer); // connected at the crash
    });
    let stored = record(&store, "dev").unwrap();
    assert_eq!(stored.disconnected_at, None, "connected at the crash");
    // The first restart, stopped cleanly before the session's second is over.
    run(async {
        let broker = broker_on(store.clone()).await;
        assert!(broker.has_session("dev"));
        broker.shutdown().await;
    });
    // More than the session's interval after the first restart.
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    run(async {
        let broker = broker_on(store.clone()).await;
        assert!(
            !broker.has_session("dev"),
            "the session outlived its expiry interval"
        );
        broker.shutdown().await;
    });
    assert!(record(&store, "dev").is_none());
}
/// A store that fails its commits while `failing` is set.
#[derive(Default)]
struct FailingWhenSet {
    inner: MemoryStore,
    failing: AtomicBool,
}

impl Store for FailingWhenSet {
    fn load(&self) -> Result<Snapshot, StoreError> {
        self.inner.load()
    }

    fn commit(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Io(std::io::Error::other(
                "no space left on device",
            )));
        }
        self.inner.commit(ops)
    }
}

// MQTT-3.1.2-6 (3.1.1: CleanSession 1 discards the previous session),
// v5:MQTT-3.1.2-4 (Clean Start 1 discards it), v5:MQTT-3.1.2-23 (Session
// Expiry Interval 0: not stored after the connection): a CONNACK that
// discards a kept session, or stops keeping it, goes out only once the store
// has done so. Before, it went out at once: with the deletion not committed
// (a crash, or here a failing store), the discarded session came back after
// the restart with its subscriptions and queued messages.
#[tokio::test]
async fn a_connack_that_discards_a_kept_session_waits_for_the_store() {
    for (version, clean_start, expiry) in [
        (V311, true, None),
        (V5, true, Some(0)),
        (V5, false, Some(0)),
    ] {
        let store = Arc::new(FailingWhenSet::default());
        let broker = broker_on(store.clone()).await;
        let (mut kept, _) = connect_kept(&broker, version, "c").await;
        kept.sub(1, "t", QoS::AtLeastOnce).await;
        kept.disconnect().await;
        assert!(store.inner.load().unwrap().sessions.len() == 1);
        store.failing.store(true, Ordering::SeqCst);
        let mut c = Connect::new(version, MqttString::from("c"));
        c.keep_alive = 0;
        c.clean_start = clean_start;
        c.properties.session_expiry_interval = expiry;
        let mut peer = Peer::open(addr(&broker), version).await;
        peer.send(c).await;
        peer.expect_closed().await;
        broker.shutdown().await;
    }
}

/// A store whose commits wait while `closed` is set (a disk that has
/// become very slow), recording the payload bytes each commit carried.
#[derive(Default)]
struct GatedStore {
    inner: MemoryStore,
    closed: Mutex<bool>,
    opened: std::sync::Condvar,
    commits: Mutex<Vec<usize>>,
    /// Set while a commit waits for the gate.
    stuck: AtomicBool,
}

impl GatedStore {
    fn set_closed(&self, closed: bool) {
        *self.closed.lock().unwrap() = closed;
        self.opened.notify_all();
    }
}

impl Store for GatedStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        self.inner.load()
    }

    fn commit(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let mut closed = self.closed.lock().unwrap();
        while *closed {
            self.stuck.store(true, Ordering::SeqCst);
            closed = self.opened.wait(closed).unwrap();
        }
        self.stuck.store(false, Ordering::SeqCst);
        drop(closed);
        let bytes = ops
            .iter()
            .map(|op| match op {
                StoreOp::PutMessage { message, .. } => message.publish.payload.len(),
                _ => 0,
            })
            .sum();
        self.commits.lock().unwrap().push(bytes);
        self.inner.commit(ops)
    }
}

/// A broker with periodic commits into `store`, where the kept session
/// "slow-disk" (away) subscribes to "big" at QoS 1.
async fn slow_disk_broker(store: &Arc<GatedStore>, limits: fulmar_broker::Limits) -> BrokerHandle {
    let broker = start_with(
        Broker::builder()
            .store(store.clone())
            .limits(limits)
            .durability(Durability::Periodic(std::time::Duration::from_millis(10))),
    )
    .await;
    let (mut sub, _) = connect_kept(&broker, V5, "slow-disk").await;
    sub.sub(1, "big", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    wait_until("the subscription committed", || {
        record(&store.inner, "slow-disk").is_some_and(|s| s.subscriptions.len() == 1)
    })
    .await;
    broker
}

// Bounds: under periodic commits, a store that falls behind (a slow disk)
// holds back the publishers that feed it once the journal holds about 64 MiB,
// rather than letting the journal grow without bound in memory. Before, a
// publisher whose messages went to a kept session was acknowledged as fast as
// it sent while commits were stuck: all of its 100 MiB waited in memory.
#[tokio::test]
async fn a_store_that_falls_behind_holds_back_its_publishers() {
    const SIZE: usize = 512 * 1024;
    const COUNT: u16 = 200; // 100 MiB
    let store = Arc::new(GatedStore::default());
    let mut limits = fulmar_broker::Limits::default();
    limits.max_packet_size = std::num::NonZeroU32::new(2 * 1024 * 1024).unwrap();
    limits.max_queued_bytes = 1 << 30;
    let broker = slow_disk_broker(&store, limits).await;
    store.set_closed(true);
    let mut publisher = Peer::connect(addr(&broker), V5, "p").await;
    let payload = bytes::Bytes::from(vec![b'x'; SIZE]);
    let mut acknowledged = 0;
    let mut held = None;
    for i in 1..=COUNT {
        let mut p = publish("big", "", QoS::AtLeastOnce);
        p.payload = payload.clone();
        p.packet_id = Some(pid(i));
        publisher.send(p).await;
        // Held back: no PUBACK while the store is stuck (the wait ends the
        // loop; it asserts nothing about speed).
        let ack = tokio::time::timeout(std::time::Duration::from_secs(3), publisher.recv()).await;
        match ack {
            Ok(Packet::PubAck(ack)) => {
                assert_eq!(ack.packet_id, pid(i));
                acknowledged += 1;
            }
            Ok(other) => panic!("expected PUBACK, got {other:?}"),
            Err(_) => {
                held = Some(i);
                break;
            }
        }
    }
    let held = held.unwrap_or_else(|| {
        panic!(
            "all {COUNT} messages ({} MiB) acknowledged while nothing was committed",
            (usize::from(COUNT) * SIZE) >> 20
        )
    });
    assert!(
        acknowledged * SIZE <= 80 << 20,
        "{acknowledged} messages acknowledged while nothing was committed"
    );
    // The disk comes back: the held message is acknowledged, the rest too.
    store.set_closed(false);
    assert!(matches!(publisher.recv().await, Packet::PubAck(a) if a.packet_id == pid(held)));
    for i in held + 1..=COUNT {
        let mut p = publish("big", "", QoS::AtLeastOnce);
        p.payload = payload.clone();
        p.packet_id = Some(pid(i));
        publisher.send(p).await;
        assert!(matches!(publisher.recv().await, Packet::PubAck(_)));
    }
    broker.shutdown().await;
    let biggest = store.commits.lock().unwrap().iter().copied().max().unwrap();
    assert!(biggest <= 96 << 20, "a commit of {} MiB", biggest >> 20);
    assert_eq!(store.inner.load().unwrap().messages.len(), COUNT as usize);
}

// Bounds: the application's own publishes feed the store too. Under periodic
// commits, with a store that has fallen behind (a slow disk),
// `BrokerHandle::publish` refuses once the changes waiting for the store pass
// the bound that holds clients back (64 MiB waiting, besides the batch a
// commit took), instead of the journal
// growing without bound in memory; `publish_paced` waits for the commit
// instead. Before, both went on routing while nothing was committed.
#[tokio::test]
async fn a_store_that_falls_behind_holds_back_the_application() {
    const SIZE: usize = 512 * 1024;
    const COUNT: usize = 400; // 200 MiB
    let store = Arc::new(GatedStore::default());
    let mut limits = fulmar_broker::Limits::default();
    limits.max_queued_bytes = 1 << 30;
    limits.max_queued_messages = 1000;
    let broker = slow_disk_broker(&store, limits).await;
    store.set_closed(true);
    let payload = bytes::Bytes::from(vec![b'x'; SIZE]);
    let mut published = 0;
    let mut publish_until_refused = || loop {
        match broker.publish("big", payload.clone(), QoS::AtLeastOnce, false) {
            Ok(()) => published += 1,
            Err(e) => break e,
        }
        assert!(
            published < COUNT,
            "all {COUNT} messages published while nothing was committed"
        );
    };
    let refused = publish_until_refused();
    assert!(
        matches!(refused, fulmar_broker::BrokerError::LimitExceeded(_)),
        "{refused:?}"
    );
    // Once the writer has taken a batch into the stuck commit, the room it
    // left fills up again, and then stays full.
    wait_until("a commit stuck", || store.stuck.load(Ordering::SeqCst)).await;
    publish_until_refused();
    // Bounded: 64 MiB waiting and one message past it, besides the batch
    // the stuck commit took (what was waiting when it was taken: the same
    // bound).
    assert!(
        published * SIZE <= 130 << 20,
        "{published} messages published while nothing was committed"
    );
    // Paced: the wait lasts while the store is stuck (the timeout ends the
    // wait; it asserts nothing about speed), and ends once it is back.
    let pacing = broker
        .publish_paced("big", payload.clone(), QoS::AtLeastOnce, false)
        .unwrap();
    assert!(!pacing.is_done());
    let wait = tokio::spawn(pacing.wait());
    // So does a cluster node's, which does not wait for each commit.
    let mut injected = fulmar_codec::Publish::new(MqttString::from("big"), payload.clone());
    injected.qos = QoS::AtLeastOnce;
    let routing = tokio::spawn(
        broker
            .inject_paced(&injected)
            .unwrap()
            .wait_for_subscribers(),
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!wait.is_finished(), "waited for nothing");
    assert!(!routing.is_finished(), "waited for nothing");
    store.set_closed(false);
    wait.await.unwrap().unwrap();
    routing.await.unwrap();
    published += 2;
    // Caught up: publishing goes on.
    broker
        .publish("big", payload.clone(), QoS::AtLeastOnce, false)
        .unwrap();
    published += 1;
    broker.shutdown().await;
    assert_eq!(store.inner.load().unwrap().messages.len(), published);
}
