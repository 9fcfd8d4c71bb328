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
/// nats-server is not installed. Ready once its INFO line names it: the
/// port, free when picked, may be taken by another test's socket before
/// the server binds it (seen in CI: the broker's connection to "NATS" was
/// reset by whatever listened there); then the server exits and another
/// port is tried.
fn start_nats() -> Option<(Nats, u16)> {
    static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    for _ in 0..5 {
        let port = free_port();
        let store = temp_dir();
        let name = format!(
            "fulmar-cli-test-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["--server_name", &name, "-sd"])
            .arg(&store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut nats = Nats(child);
        let ours = format!("\"server_name\":\"{name}\"");
        for _ in 0..300 {
            if nats.0.try_wait().ok().flatten().is_some() {
                break;
            }
            if info_line(port).is_some_and(|info| info.contains(&ours)) {
                return Some((nats, port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("nats-server did not start (5 ports tried)");
}

/// The INFO line a NATS server sends first on a connection to `port`.
fn info_line(port: u16) -> Option<String> {
    use std::io::{BufRead, BufReader};
    let stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    line.starts_with("INFO ").then_some(line)
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

/// A loopback TCP proxy whose upstream port the test changes: clients keep
/// one address while the node behind it changes, as behind a load
/// balancer.
struct Proxy {
    port: u16,
    target: std::sync::Arc<std::sync::atomic::AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: u16) -> Self {
        use std::sync::atomic::{AtomicU16, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = std::sync::Arc::new(AtomicU16::new(target));
        let upstream = target.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let port = upstream.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { port, target, task }
    }

    fn switch_to(&self, port: u16) {
        self.target.store(port, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// SIGKILL of a node in the middle of QoS 1 and QoS 2 streams: a publisher
// and a subscriber with persistent sessions on node A, A killed, both
// clients reconnect (through a proxy now pointing at node B) and resume
// their sessions there from A's state in JetStream (the first of them to
// reconnect makes B adopt A's other sessions before its CONNACK). Every
// message whose publish was acknowledged (PUBACK, PUBCOMP) reaches the
// subscriber; no QoS 2 message twice.
// MQTT-4.3.2-2 / MQTT-4.3.3-2 (QoS 1 at least once, QoS 2 exactly once),
// v5:MQTT-3.1.2-5 / v3:MQTT-3.1.2-4 (sessions resumed), MQTT-4.4.0-1
// (resent after the reconnect). The subscriber speaks 3.1.1, the publisher
// 5.0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_during_qos_1_and_2_streams_loses_no_acknowledged_message() {
    use std::collections::{BTreeSet, HashMap};
    use std::sync::{Arc, Mutex};

    use fulmar_client::{Client, ConnectOptions, ProtocolVersion, QoS, Reconnect};
    use futures::StreamExt;

    let Some((_nats, nats_port)) = start_nats() else {
        eprintln!("SKIP a_node_killed_during_qos_1_and_2_streams: nats-server is not installed");
        return;
    };
    let url = format!("nats://127.0.0.1:{nats_port}");
    let (dir_a, dir_b) = (temp_dir(), temp_dir());
    let mut a = FulmarBroker::start(&["--cluster", &url, "--data-dir", dir_a.to_str().unwrap()]);
    let mut b = FulmarBroker::start(&["--cluster", &url, "--data-dir", dir_b.to_str().unwrap()]);
    a.wait_for("attached to the cluster");
    b.wait_for("attached to the cluster");
    a.wait_for("sessions kept in JetStream");
    let sub_proxy = Proxy::start(a.port).await;
    let pub_proxy = Proxy::start(a.port).await;
    let options = |port, id: &str, version| {
        let options = ConnectOptions::new("127.0.0.1", port)
            .protocol_version(version)
            .client_id(id)
            .clean_start(false);
        let options = if version == ProtocolVersion::V5 {
            options.session_expiry_interval(3600)
        } else {
            options
        };
        options.reconnect(Reconnect::exponential(
            Duration::from_millis(50),
            Duration::from_millis(300),
        ))
    };

    // The subscriber: every payload received, per topic.
    // The subscriber speaks 3.1.1, the publisher 5.0.
    let (subscriber, _) =
        Client::connect(options(sub_proxy.port, "kill-sub", ProtocolVersion::V311))
            .await
            .unwrap();
    let received: Arc<Mutex<HashMap<String, Vec<u32>>>> = Arc::default();
    let mut collectors = Vec::new();
    for (filter, qos) in [("kill/q1", QoS::AtLeastOnce), ("kill/q2", QoS::ExactlyOnce)] {
        let mut stream = subscriber.subscribe(filter, qos).await.unwrap();
        let received = received.clone();
        collectors.push(tokio::spawn(async move {
            while let Some(message) = stream.next().await {
                let n: u32 = std::str::from_utf8(&message.payload)
                    .unwrap()
                    .parse()
                    .unwrap();
                received
                    .lock()
                    .unwrap()
                    .entry(message.topic.to_string())
                    .or_default()
                    .push(n);
            }
        }));
    }

    // The publisher: even numbers at QoS 1 on kill/q1, odd at QoS 2 on
    // kill/q2, up to 64 publishes outstanding; what completed is acknowledged.
    let (publisher, _) = Client::connect(options(pub_proxy.port, "kill-pub", ProtocolVersion::V5))
        .await
        .unwrap();
    const N: u32 = 4000;
    let acked: Arc<Mutex<BTreeSet<u32>>> = Arc::default();
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let mut publishes = tokio::task::JoinSet::new();
    let mut killed = false;
    for i in 0..N {
        if !killed && acked.lock().unwrap().len() >= 800 {
            // Mid-stream: SIGKILL A; both clients move to B, in any order.
            a.kill();
            killed = true;
            sub_proxy.switch_to(b.port);
            pub_proxy.switch_to(b.port);
        }
        let permit = limit.clone().acquire_owned().await.unwrap();
        let publisher = publisher.clone();
        let acked = acked.clone();
        publishes.spawn(async move {
            let (topic, qos) = if i % 2 == 0 {
                ("kill/q1", QoS::AtLeastOnce)
            } else {
                ("kill/q2", QoS::ExactlyOnce)
            };
            if publisher
                .publish(topic, i.to_string())
                .qos(qos)
                .await
                .is_ok()
            {
                acked.lock().unwrap().insert(i);
            }
            drop(permit);
        });
    }
    assert!(killed, "A was killed mid-stream");
    tokio::time::timeout(Duration::from_secs(120), async {
        while publishes.join_next().await.is_some() {}
    })
    .await
    .expect("every publish settled within 120 s");
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 800,
        "acknowledged after the kill too: {}",
        acked.len()
    );

    // Everything acknowledged arrives.
    let missing = |received: &HashMap<String, Vec<u32>>| -> Vec<u32> {
        let got: BTreeSet<u32> = received.values().flatten().copied().collect();
        acked.iter().copied().filter(|n| !got.contains(n)).collect()
    };
    for _ in 0..600 {
        if missing(&received.lock().unwrap()).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = received.lock().unwrap().clone();
    let lost = missing(&received);
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost: {:?}\nB's log:\n{}",
        lost.len(),
        &lost[..lost.len().min(20)],
        b.log()
    );
    let q2 = received.get("kill/q2").cloned().unwrap_or_default();
    let distinct: BTreeSet<u32> = q2.iter().copied().collect();
    if distinct.len() != q2.len() {
        let mut seen = BTreeSet::new();
        let twice: Vec<u32> = q2.iter().copied().filter(|n| !seen.insert(*n)).collect();
        panic!(
            "{} QoS 2 messages delivered twice: {:?}\nA's log:\n{}\nB's log:\n{}",
            twice.len(),
            &twice[..twice.len().min(40)],
            a.log(),
            b.log()
        );
    }
    assert!(q2.iter().all(|n| n % 2 == 1));
    let q1 = received.get("kill/q1").cloned().unwrap_or_default();
    let q1_distinct: BTreeSet<u32> = q1.iter().copied().collect();
    eprintln!(
        "acknowledged {} of {N}; received QoS 1 {} ({} distinct), QoS 2 {}",
        acked.len(),
        q1.len(),
        q1_distinct.len(),
        q2.len()
    );
    drop(publisher);
    drop(subscriber);
    for collector in collectors {
        collector.abort();
    }
}
