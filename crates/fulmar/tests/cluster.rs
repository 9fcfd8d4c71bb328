//! `fulmar broker --cluster`: two broker processes joined over a real
//! nats-server with JetStream. Skipped (with a line saying so) when
//! `nats-server` is not installed; `scripts/test.sh` installs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{FulmarBroker, Sub, free_port, publish_ok, temp_dir};

struct Nats(Child);

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A nats-server with JetStream on a free loopback port, or `None` when
/// nats-server is not installed.
fn start_nats() -> Option<(Nats, u16)> {
    let port = free_port();
    let store = temp_dir();
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(&store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let nats = Nats(child);
    for _ in 0..300 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((nats, port));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nats-server did not start on port {port}");
}

#[test]
fn two_brokers_on_one_nats_deliver_each_others_messages() {
    let Some((_nats, nats_port)) = start_nats() else {
        eprintln!(
            "SKIP two_brokers_on_one_nats_deliver_each_others_messages: nats-server is not installed"
        );
        return;
    };
    let url = format!("nats://127.0.0.1:{nats_port}");
    let mut a = FulmarBroker::start(&["--cluster", &url, "--no-persistence"]);
    let mut b = FulmarBroker::start(&["--cluster", &url, "--no-persistence"]);
    a.wait_for("cluster: connected to NATS");
    b.wait_for("cluster: connected to NATS");
    // A subscriber on B, a publisher on A. The NATS subscription follows the
    // SUBACK closely: publish until the subscriber has its message.
    let sub = Sub::start(b.port, &["-t", "cluster/#", "-C", "1", "-v"]);
    let mut child = sub;
    let mut delivered = None;
    for i in 0..150 {
        publish_ok(
            a.port,
            &["-t", "cluster/x", "-m", &format!("hello-{i}"), "-q", "1"],
        );
        if let Some(out) = child.try_output() {
            delivered = Some(out);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = delivered.expect("the subscriber on B never got A's message");
    assert!(out.starts_with("cluster/x hello-"), "{out:?}");
}

// A persistent session made on broker process A, messages published on B
// while it is away, resumed on C: session present (v5:MQTT-3.2.2-3), and
// the queued QoS 1 messages come from C, in order, once each
// (v5:MQTT-3.1.2-5).
#[tokio::test]
async fn a_session_made_on_one_broker_resumes_on_another() {
    use fulmar_client::{Client, ConnectOptions, QoS};
    use futures::StreamExt;

    let Some((_nats, nats_port)) = start_nats() else {
        eprintln!(
            "SKIP a_session_made_on_one_broker_resumes_on_another: nats-server is not installed"
        );
        return;
    };
    let url = format!("nats://127.0.0.1:{nats_port}");
    let mut brokers: Vec<FulmarBroker> = (0..3)
        .map(|_| FulmarBroker::start(&["--cluster", &url, "--no-persistence"]))
        .collect();
    for broker in &mut brokers {
        broker.wait_for("attached to the cluster");
    }
    let (a, b, c) = (brokers[0].port, brokers[1].port, brokers[2].port);
    let options = |port| {
        ConnectOptions::new("127.0.0.1", port)
            .client_id("cli-resume")
            .clean_start(false)
            .session_expiry_interval(3600)
    };
    let (client, ack) = Client::connect(options(a)).await.unwrap();
    assert!(!ack.session_present);
    let subscription = client
        .subscribe("resume/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    client.disconnect().await.unwrap();
    drop(subscription);
    // A's NATS subscription follows its SUBACK closely: the first messages
    // may come before it (lost for the session), the later ones are queued.
    const N: usize = 20;
    for i in 0..N {
        publish_ok(b, &["-t", "resume/x", "-m", &format!("{i}"), "-q", "1"]);
        std::thread::sleep(Duration::from_millis(100));
    }
    let (client, ack) = Client::connect(options(c)).await.unwrap();
    assert!(ack.session_present);
    let mut messages = client.messages().await.unwrap();
    let mut got = Vec::new();
    while got.last() != Some(&(N - 1)) {
        let message = tokio::time::timeout(Duration::from_secs(20), messages.next())
            .await
            .expect("the queued messages within 20 s")
            .expect("stream ended");
        got.push(
            std::str::from_utf8(&message.payload)
                .unwrap()
                .parse::<usize>()
                .unwrap(),
        );
    }
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, once: {got:?}"
    );
    client.disconnect().await.unwrap();
}
