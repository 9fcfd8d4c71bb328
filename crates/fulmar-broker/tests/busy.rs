//! A connection whose task is busy for a while (a slow authorizer stands in
//! for back-pressure, a slow write or a slow store): what the client sent
//! meanwhile still counts, and a take-over that comes meanwhile keeps the
//! rules of the will.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Peer, addr, start_with};
use fulmar_broker::{Authorizer, Broker, ClientInfo, MemoryStore, Store};
use fulmar_codec::{
    Connect, MqttString, Packet, ProtocolVersion::V5, ProtocolVersion::V311, Publish, QoS, Will,
};

/// Authorizes publishing on `slow` after `delay`; everything else at once.
struct SlowOn {
    delay: Duration,
}

#[async_trait::async_trait]
impl Authorizer for SlowOn {
    async fn authorize_publish(&self, _: &ClientInfo, topic: &str) -> bool {
        if topic == "slow" {
            tokio::time::sleep(self.delay).await;
        }
        true
    }

    async fn authorize_subscribe(&self, _: &ClientInfo, _: &str) -> bool {
        true
    }
}

fn slow_publish() -> Packet {
    Packet::Publish(Publish::new(
        MqttString::from("slow"),
        Bytes::from_static(b"1"),
    ))
}

// MQTT-3.1.2-22 (v5) / v3:MQTT-3.1.2-24: the server closes a connection only
// when nothing came from the client for 1.5 times its keep alive. PINGREQs
// sent in time but left unread while the connection's task was busy past
// that deadline count: the client stays connected, and its will is not
// published (MQTT-3.1.2-10 would apply only to a real failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_left_unread_while_busy_keep_the_client_alive() {
    let broker = start_with(Broker::builder().authorizer(SlowOn {
        delay: Duration::from_secs(4),
    }))
    .await;
    let mut wills = broker.subscribe("will/#").unwrap();
    let mut clients = Vec::new();
    for n in 0..8 {
        let at = addr(&broker);
        clients.push(tokio::spawn(async move {
            let version = if n % 2 == 0 { V311 } else { V5 };
            let mut c = Connect::new(version, MqttString::from(format!("busy{n}")));
            // Deadline 3 s after the last packet read; the task is busy
            // from 0 to 4 s; the PINGREQs go at 1 and 2 s.
            c.keep_alive = 2;
            c.will = Some(Will::new(
                MqttString::from(format!("will/{n}")),
                Bytes::from_static(b"gone"),
            ));
            let (mut peer, _) = Peer::connect_with(at, c).await;
            peer.send(slow_publish()).await;
            for _ in 0..2 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                peer.send(Packet::PingReq).await;
            }
            let mut answers = Vec::new();
            for _ in 0..2 {
                answers.push(peer.recv().await);
            }
            (n, answers, peer)
        }));
    }
    let mut peers = Vec::new();
    for client in clients {
        let (n, answers, peer) = client.await.unwrap();
        assert_eq!(
            answers,
            vec![Packet::PingResp, Packet::PingResp],
            "client {n} was dropped"
        );
        peers.push(peer);
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), wills.recv())
            .await
            .is_err(),
        "a will was published"
    );
    drop(peers);
    broker.shutdown().await;
}

// v5:MQTT-3.1.3-9: a will with a delay is not sent when a new connection to
// the session comes within the delay, also when the old connection answers
// the take-over late (its task busy past the hand-over timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_take_over_keeps_a_delayed_will_unsent() {
    let store = std::sync::Arc::new(MemoryStore::new());
    let broker = start_with(Broker::builder().store(store.clone()).authorizer(SlowOn {
        delay: Duration::from_millis(4500),
    }))
    .await;
    let mut wills = broker.subscribe("will/#").unwrap();
    let connect = || {
        let mut c = Connect::new(V5, MqttString::from("dev"));
        c.keep_alive = 0;
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(3600);
        let mut will = Will::new(MqttString::from("will/dev"), Bytes::from_static(b"gone"));
        will.properties.will_delay_interval = Some(60);
        c.will = Some(will);
        c
    };
    let (mut old, _) = Peer::connect_with(addr(&broker), connect()).await;
    // A QoS 1 message in flight to it, never acknowledged.
    old.sub(1, "q", QoS::AtLeastOnce).await;
    broker.publish("q", "m1", QoS::AtLeastOnce, false).unwrap();
    assert_eq!(&old.recv_publish().await.payload[..], b"m1");
    old.send(slow_publish()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (new, ack) = Peer::connect_with(addr(&broker), connect()).await;
    assert!(ack.session_present);
    // The old connection ends when the authorizer answers (4.5 s).
    let published = tokio::time::timeout(Duration::from_secs(6), wills.recv()).await;
    assert!(
        published.is_err(),
        "the delayed will was published although the client is connected: {published:?}"
    );
    drop((old, new));
    broker.shutdown().await;
    // The session went on without what the late connection held (counted
    // as dropped); its store records went too, or a restart would bring
    // them back.
    let records = store.load().unwrap().messages;
    assert!(records.is_empty(), "{records:?}");
}
