//! Topics, filters and client identifiers longer than a NATS protocol line
//! may carry (nats-server's `max_control_line`, 4 KiB by default, closes a
//! connection that sends a longer one): the node keeps its NATS connection,
//! and the cluster carries on. One nats-server with JetStream per test, on
//! loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Node, next};
use fulmar_client::{Client, ConnectOptions, QoS};

/// How many times `node`'s NATS connection was established (1: never lost).
fn connects(node: &Node) -> u64 {
    node.cluster
        .nats()
        .statistics()
        .connects
        .load(Ordering::Relaxed)
}

/// A topic (or filter) of `len` bytes under `first/`.
fn long_name(first: &str, len: usize) -> String {
    let mut name = format!("{first}/");
    name.push_str(&"x".repeat(len - name.len()));
    name
}

#[tokio::test]
async fn a_filter_too_long_for_a_nats_subject_stays_local_and_the_connection_stays_up() {
    let nats = nats_or_skip!("long_filter");
    let a = Node::start(&nats, "a").await;
    let b = Node::start(&nats, "b").await;
    let long = long_name("long", 4100);
    let local = a.client("long-sub").await;
    let mut long_sub = local.subscribe(&long, QoS::AtLeastOnce).await.unwrap();
    // A shared group on such a filter too.
    let mut shared = local
        .subscribe(&format!("$share/g/{long}"), QoS::AtLeastOnce)
        .await
        .unwrap();
    // Subscriptions made afterwards reach NATS on the same connection.
    let mut sub = local.subscribe("normal/#", QoS::AtLeastOnce).await.unwrap();
    a.wait_subscription("fulmar.msg.t.normal.>", true).await;
    let publisher = b.client("pub").await;
    publisher
        .publish("normal/x", "crossed")
        .qos(QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(next(&mut sub).await.payload, "crossed");
    // The long subscriptions work on their node.
    let local_pub = a.client("long-pub").await;
    local_pub
        .publish(&long, "local")
        .qos(QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(next(&mut long_sub).await.payload, "local");
    assert_eq!(next(&mut shared).await.payload, "local");
    let sa = a.cluster.stats();
    assert_eq!(sa.filters_too_long, 2, "{sa:?}");
    assert!(
        a.cluster.subscriptions().iter().all(|s| s.len() < 4096),
        "{:?}",
        a.cluster.subscriptions()
    );
    // Unsubscribing a filter that never reached NATS leaves the others.
    drop(long_sub);
    drop(shared);
    publisher
        .publish("normal/y", "again")
        .qos(QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(next(&mut sub).await.payload, "again");
    assert_eq!((connects(&a), connects(&b)), (1, 1));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_publish_to_a_topic_too_long_for_a_nats_subject_is_dropped_and_counted() {
    let nats = nats_or_skip!("long_topic");
    let a = Node::start(&nats, "a").await;
    let b = Node::start(&nats, "b").await;
    let long = long_name("long", 4100);
    let receiver = a.client("sub").await;
    let mut sub = receiver
        .subscribe("normal/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    a.wait_subscription("fulmar.msg.t.normal.>", true).await;
    let local = b.client("local-sub").await;
    let mut local_sub = local.subscribe(&long, QoS::AtLeastOnce).await.unwrap();
    let publisher = b.client("pub").await;
    // Plain, then retained (which goes to the retained stream too).
    publisher
        .publish(&long, "plain")
        .qos(QoS::AtLeastOnce)
        .await
        .unwrap();
    publisher
        .publish(&long, "retained")
        .qos(QoS::AtLeastOnce)
        .retain(true)
        .await
        .unwrap();
    // Routed locally all the same.
    assert_eq!(next(&mut local_sub).await.payload, "plain");
    assert_eq!(next(&mut local_sub).await.payload, "retained");
    // What follows on B's NATS connection still crosses.
    publisher
        .publish("normal/x", "crossed")
        .qos(QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(next(&mut sub).await.payload, "crossed");
    let sb = b.cluster.stats();
    assert_eq!((sb.topics_too_long, sb.publish_errors), (2, 2), "{sb:?}");
    assert_eq!((connects(&a), connects(&b)), (1, 1));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_client_id_too_long_for_a_key_keeps_its_session_across_nodes() {
    let nats = nats_or_skip!("long_client_id");
    let a = Node::start_with_store(&nats, "a").await;
    let b = Node::start_with_store(&nats, "b").await;
    let id = "c".repeat(4100);
    let mut will = fulmar_client::Will::new("wills/long".into(), "gone".into());
    will.properties.will_delay_interval = Some(3600);
    let options = |port: u16| {
        ConnectOptions::new("127.0.0.1", port)
            .client_id(id.clone())
            .session_expiry_interval(3600)
            .will(will.clone())
            .connect_timeout(Duration::from_secs(20))
    };
    let (client, ack) = Client::connect(options(a.port())).await.unwrap();
    assert!(!ack.session_present);
    // (Dropping a subscription unsubscribes: kept until the end.)
    let _kept = client.subscribe("kept/#", QoS::AtLeastOnce).await.unwrap();
    // The will is in the bucket (named by a hash of the client id).
    common::wait_for_async("the will in the bucket", || async {
        a.cluster.wills().await.unwrap().len() == 1
    })
    .await;
    // Its record reaches the registry.
    common::wait_for_async("the record in the registry", || async {
        a.cluster
            .session_record(&id)
            .await
            .unwrap()
            .is_some_and(|s| s.subscriptions.len() == 1)
    })
    .await;
    client.disconnect().await.unwrap();
    // Resumed on B with its subscription.
    let (client, ack, mut messages) =
        Client::connect_with_messages(options(b.port()).clean_start(false))
            .await
            .unwrap();
    assert!(ack.session_present, "{ack:?}");
    assert_eq!(
        b.cluster.session_owner(&id).await.unwrap().as_deref(),
        Some("b")
    );
    b.wait_subscription("fulmar.msg.t.kept.>", true).await;
    let publisher = a.client("pub").await;
    publisher
        .publish("kept/x", "delivered")
        .qos(QoS::AtLeastOnce)
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), messages.recv())
        .await
        .expect("no message within 20 s")
        .expect("messages ended");
    assert_eq!(got.payload, "delivered");
    client.disconnect().await.unwrap();
    assert_eq!((connects(&a), connects(&b)), (1, 1));
    let (sa, sb) = (a.cluster.stats(), b.cluster.stats());
    assert_eq!(sa.sessions_exported, 1, "{sa:?}");
    assert_eq!(sb.sessions_imported, 1, "{sb:?}");
    a.stop().await;
    b.stop().await;
}
