//! What sessions across nodes cost a CONNECT: CONNECT to CONNACK on one
//! broker without a cluster, and on cluster nodes (a new session, a session
//! resumed where it is, a session taken from another node with its
//! subscriptions and queued messages, a connected session taken over).
//! A measurement, not run by default (it prints p50/p99, asserts only that
//! each session is resumed with its messages):
//!
//! ```text
//! cargo test --release -p fulmar-cluster --test connect_latency -- --ignored --nocapture
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Nats, Node};
use fulmar_client::{Client, ConnectOptions, QoS, Reconnect};
use futures::StreamExt;

const N: usize = 200;

fn summary(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() - 1) as f64 * q) as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    println!(
        "{what}: n={} p50={:.2} ms p99={:.2} ms",
        samples.len(),
        at(0.5),
        at(0.99)
    );
}

fn options(port: u16, id: &str, persistent: bool) -> ConnectOptions {
    let options = ConnectOptions::new("127.0.0.1", port)
        .client_id(id)
        .reconnect(Reconnect::disabled());
    if persistent {
        options.clean_start(false).session_expiry_interval(3600)
    } else {
        options
    }
}

async fn timed(options: ConnectOptions) -> (Client, bool, Duration) {
    let start = Instant::now();
    let (client, ack) = Client::connect(options).await.unwrap();
    (client, ack.session_present, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn connect_latency() {
    let Some(nats) = Nats::start("connect_latency") else {
        return;
    };
    let single = fulmar_broker::Broker::builder()
        .tcp_listener("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let a = Node::start(&nats, "a").await;
    let b = Node::start(&nats, "b").await;

    let mut samples = Vec::new();
    for i in 0..N {
        let port = single.local_addrs()[0].port();
        let (client, _, took) = timed(options(port, &format!("s{i}"), false)).await;
        samples.push(took);
        client.disconnect().await.unwrap();
    }
    summary("one broker, no cluster, new session", samples);

    let mut samples = Vec::new();
    for i in 0..N {
        let (client, _, took) = timed(options(a.port(), &format!("n{i}"), false)).await;
        samples.push(took);
        client.disconnect().await.unwrap();
    }
    summary("cluster node, new session", samples);

    let mut samples = Vec::new();
    for i in 0..N {
        let (client, present, took) = timed(options(a.port(), "here", true)).await;
        assert_eq!(present, i > 0);
        samples.push(took);
        client.disconnect().await.unwrap();
    }
    summary("cluster node, session resumed on its node", samples);

    // 10 subscriptions, 10 queued QoS 1 messages of 100 bytes per move.
    let (client, _, _) = timed(options(a.port(), "mover", true)).await;
    let mut subscriptions = Vec::new();
    for f in 0..10 {
        let filter = format!("m/{f}");
        subscriptions.push(client.subscribe(&filter, QoS::AtLeastOnce).await.unwrap());
    }
    client.disconnect().await.unwrap();
    drop(subscriptions);
    let mut samples = Vec::new();
    for i in 0..N {
        let (holder, next) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        for f in 0..10 {
            let topic = format!("m/{f}");
            let payload = vec![0u8; 100];
            holder
                .broker
                .publish(&topic, payload, fulmar_codec::QoS::AtLeastOnce, false)
                .unwrap();
        }
        let (client, present, took) = timed(options(next.port(), "mover", true)).await;
        assert!(present, "move {i}");
        samples.push(took);
        let mut messages = client.messages().await.unwrap();
        for _ in 0..10 {
            tokio::time::timeout(Duration::from_secs(20), messages.next())
                .await
                .expect("queued message")
                .expect("stream");
        }
        client.disconnect().await.unwrap();
    }
    summary(
        "cluster node, session taken from the other node (10 subscriptions, 10 queued)",
        samples,
    );

    let mut samples = Vec::new();
    let (mut old, _, _) = timed(options(a.port(), "taken", true)).await;
    for i in 0..N {
        let next = if i % 2 == 0 { &b } else { &a };
        let (client, present, took) = timed(options(next.port(), "taken", true)).await;
        assert!(present, "takeover {i}");
        samples.push(took);
        old = client;
    }
    summary(
        "cluster node, connected session taken over from the other node",
        samples,
    );
    drop(old);
    single.shutdown().await;
    a.stop().await;
    b.stop().await;
}
