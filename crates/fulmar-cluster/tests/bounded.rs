//! What a node keeps in memory stays bounded: changes the broker reports
//! faster than NATS takes them are coalesced, and what is remembered of a
//! client goes when its session does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Node, wait_for};
use fulmar_client::{Client, ConnectOptions, QoS};
use fulmar_cluster::{Cluster, ClusterConfig};
use fulmar_codec::Publish;
use fulmar_topic::SubscriptionFilter;

// A filter appearing and going, a will set and cleared, again and again
// while nothing takes them off (here: before `attach`; in production, NATS
// away): what waits is the last change per filter and per client.
#[tokio::test]
async fn filter_and_will_changes_queued_for_nats_are_coalesced() {
    let nats = nats_or_skip!("bounded_queues");
    let cluster = Cluster::connect(ClusterConfig::new(nats.url.clone(), "a"))
        .await
        .unwrap();
    let bridge = cluster.bridge();
    let filter: SubscriptionFilter = "a/#".parse().unwrap();
    let will = Publish::new("wills/x".into(), Bytes::from_static(b"gone"));
    for _ in 0..100_000 {
        bridge.filter_added(&filter);
        bridge.filter_removed(&filter);
        bridge.will_set("x", &will, 0);
        bridge.will_cleared("x");
    }
    bridge.filter_added(&filter);
    let (filters, wills, _) = cluster.queued_for_test();
    assert!(filters <= 1 && wills <= 1, "{filters} {wills}");
    cluster.shutdown().await;
}

// A session adopted from a dead node that expires without its client
// coming back: nothing of it stays in the adopting node's memory.
#[tokio::test]
async fn an_adopted_session_that_expires_is_forgotten() {
    let nats = nats_or_skip!("bounded_adopted");
    let config = |id: &str| {
        let mut config = ClusterConfig::new(nats.url.clone(), id);
        config.heartbeat_interval = Duration::from_millis(200);
        config.heartbeat_ttl = Duration::from_secs(1);
        config
    };
    let a = Node::build(config("a"), true).await.unwrap();
    let b = Node::build(config("b"), true).await.unwrap();
    let (client, _) = Client::connect(
        ConnectOptions::new("127.0.0.1", a.port())
            .client_id("short")
            .session_expiry_interval(5),
    )
    .await
    .unwrap();
    let _sub = client.subscribe("s/#", QoS::AtLeastOnce).await.unwrap();
    client.disconnect().await.unwrap();
    a.cluster.abort();
    wait_for("B adopted A's session", || {
        b.cluster.stats().sessions_adopted == 1
    })
    .await;
    assert_eq!(b.cluster.queued_for_test().2, 1);
    // (BrokerHandle::adopt_session schedules the expiry without waking the
    // broker's deadline task; a persistent session disconnecting does.)
    let (poke, _) = Client::connect(
        ConnectOptions::new("127.0.0.1", b.port())
            .client_id("poke")
            .session_expiry_interval(1),
    )
    .await
    .unwrap();
    poke.disconnect().await.unwrap();
    wait_for("the adopted session expired", || {
        b.broker.stats().sessions == 0
    })
    .await;
    assert_eq!(b.cluster.queued_for_test().2, 0);
    b.stop().await;
    a.stop().await;
}
