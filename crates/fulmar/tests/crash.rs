//! Crash safety of `fulmar broker`'s store: the broker is killed with SIGKILL
//! at random points while QoS 1 and QoS 2 publishers and persistent-session
//! subscribers (one of them disconnected meanwhile) run, and restarted on the
//! same data directory each time. Every message whose PUBACK/PUBCOMP a
//! publisher saw must reach each subscriber: at least once for QoS 1,
//! exactly once for QoS 2; retained messages must be intact.
//!
//! `FULMAR_CRASH_ROUNDS` sets the number of kills (default 6).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{free_port, fulmar, temp_dir, wait_for_line};
use fulmar_client::{Client, ConnectOptions, Reconnect};
use fulmar_codec::{ProtocolVersion, QoS};
use futures::StreamExt;

/// A broker process, killed when dropped (a failing assertion does not
/// leave it running).
struct Broker(Child);

impl std::ops::Deref for Broker {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Broker {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `fulmar broker` process on `port` with its store in `dir`; the offline
/// queue is large enough for the whole run (beyond it messages are dropped
/// by design, acknowledged or not).
fn start_broker(port: u16, dir: &std::path::Path) -> Broker {
    let config = dir.with_extension("toml");
    std::fs::write(&config, "[limits]\nmax_queued_messages = 1000000\n").unwrap();
    let mut child = fulmar()
        .args(["broker", "-p", &port.to_string(), "-c"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    wait_for_line(stderr, "listening on");
    Broker(child)
}

/// Options of a client that keeps its session and reconnects quickly.
fn options(port: u16, id: &str) -> ConnectOptions {
    ConnectOptions::new("127.0.0.1", port)
        .protocol_version(ProtocolVersion::V5)
        .client_id(id)
        .clean_start(false)
        .session_expiry_interval(3600)
        .keep_alive(Duration::from_secs(5))
        .max_inflight(20)
        .reconnect(Reconnect::exponential(
            Duration::from_millis(20),
            Duration::from_millis(200),
        ))
}

/// Payload -> times received.
type Seen = Arc<Mutex<HashMap<String, u32>>>;

/// Collects every message of `stream` into `seen`, in a task.
fn collect<S>(mut stream: S, seen: Seen)
where
    S: futures::Stream<Item = fulmar_client::Message> + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        while let Some(m) = stream.next().await {
            let payload = String::from_utf8_lossy(&m.publish().payload).into_owned();
            *seen.lock().unwrap().entry(payload).or_insert(0) += 1;
        }
    });
}

/// A tiny deterministic generator for the kill times (the seed is printed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

// MQTT-4.3.2-2 v5:MQTT-4.3.2-4 (QoS 1: at least once), MQTT-4.3.3-2 v5:MQTT-4.3.3-3
// (QoS 2: exactly once), MQTT-4.4.0-1 (resend on resume), MQTT-3.3.1-5 (retained stored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill() {
    let rounds: u32 = std::env::var("FULMAR_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash test: {rounds} kills, seed {seed}");
    let mut rng = Lcg(seed);
    let dir = temp_dir().join("data");
    let port = free_port();
    let mut broker = start_broker(port, &dir);

    // Subscribers with persistent sessions: QoS 1, QoS 2, and a QoS 2 one
    // that is offline during the crashes.
    let (sub1, _) = Client::connect(options(port, "sub-q1")).await.unwrap();
    let (sub2, _) = Client::connect(options(port, "sub-q2")).await.unwrap();
    let (away, _) = Client::connect(options(port, "sub-away")).await.unwrap();
    let seen1: Seen = Arc::default();
    let seen2: Seen = Arc::default();
    collect(
        sub1.subscribe("crash/#", QoS::AtLeastOnce).await.unwrap(),
        seen1.clone(),
    );
    collect(
        sub2.subscribe("crash/#", QoS::ExactlyOnce).await.unwrap(),
        seen2.clone(),
    );
    // Dropping a subscription stream unsubscribes: keep it past the disconnect.
    let away_subscription = away
        .subscribe("crash/q2/#", QoS::ExactlyOnce)
        .await
        .unwrap();
    away.disconnect().await.unwrap();
    drop(away_subscription);

    // Publishers: QoS 1 (every 10th message also retained on one of three
    // topics) and QoS 2, each message awaited; what was acknowledged is kept.
    let stop = Arc::new(AtomicBool::new(false));
    let acked_q1: Arc<Mutex<Vec<String>>> = Arc::default();
    let acked_q2: Arc<Mutex<Vec<String>>> = Arc::default();
    let acked_retained: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let sent_retained: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut publishers = Vec::new();
    for (id, qos, acked) in [
        ("pub-q1", QoS::AtLeastOnce, acked_q1.clone()),
        ("pub-q2", QoS::ExactlyOnce, acked_q2.clone()),
    ] {
        let (client, _) = Client::connect(options(port, id)).await.unwrap();
        let stop = stop.clone();
        let acked_retained = acked_retained.clone();
        let sent_retained = sent_retained.clone();
        publishers.push(tokio::spawn(async move {
            let level = if qos == QoS::AtLeastOnce { "q1" } else { "q2" };
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let payload = format!("{id}-{n}");
                let retained = qos == QoS::AtLeastOnce && n.is_multiple_of(10);
                let topic = if retained {
                    format!("crash/r/{}", n % 3)
                } else {
                    format!("crash/{level}/{}", n % 7)
                };
                if retained {
                    sent_retained.lock().unwrap().insert(topic.clone(), n);
                }
                let request = client
                    .publish(topic.clone(), payload.clone())
                    .qos(qos)
                    .retain(retained);
                match tokio::time::timeout(Duration::from_secs(30), request).await {
                    Ok(Ok(outcome)) if !outcome.reason_code.is_error() => {
                        acked.lock().unwrap().push(payload);
                        if retained {
                            acked_retained.lock().unwrap().insert(topic, n);
                        }
                    }
                    _ => {}
                }
            }
            client.disconnect().await.ok();
        }));
    }

    for round in 0..rounds {
        tokio::time::sleep(Duration::from_millis(100 + rng.next(500))).await;
        broker.kill().unwrap(); // SIGKILL
        broker.wait().unwrap();
        eprintln!(
            "round {round}: killed after {} QoS 1 and {} QoS 2 acknowledgements",
            acked_q1.lock().unwrap().len(),
            acked_q2.lock().unwrap().len()
        );
        broker = start_broker(port, &dir);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        p.await.unwrap();
    }
    let acked_q1 = acked_q1.lock().unwrap().clone();
    let acked_q2 = acked_q2.lock().unwrap().clone();
    assert!(
        !acked_q1.is_empty() && !acked_q2.is_empty(),
        "nothing was published"
    );

    // The offline subscriber comes back and gets what was queued for it.
    let (away, ack) = Client::connect(options(port, "sub-away")).await.unwrap();
    assert!(
        ack.session_present,
        "the offline session survived the crashes"
    );
    let seen_away: Seen = Arc::default();
    collect(away.messages().await.unwrap(), seen_away.clone());

    // Wait (bounded) until every acknowledged message arrived everywhere.
    let complete = |seen: &Seen, expected: &[String]| {
        let seen = seen.lock().unwrap();
        expected.iter().all(|p| seen.contains_key(p))
    };
    for _ in 0..600 {
        if complete(&seen1, &acked_q1)
            && complete(&seen1, &acked_q2)
            && complete(&seen2, &acked_q1)
            && complete(&seen2, &acked_q2)
            && complete(&seen_away, &acked_q2)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let missing = |seen: &Seen, expected: &[String]| -> Vec<String> {
        let seen = seen.lock().unwrap();
        expected
            .iter()
            .filter(|p| !seen.contains_key(*p))
            .cloned()
            .collect()
    };
    for (name, seen) in [("sub-q1", &seen1), ("sub-q2", &seen2)] {
        let lost: Vec<_> = missing(seen, &acked_q1)
            .into_iter()
            .chain(missing(seen, &acked_q2))
            .collect();
        assert!(
            lost.is_empty(),
            "{name} lost acknowledged messages: {lost:?}"
        );
    }
    let lost = missing(&seen_away, &acked_q2);
    assert!(
        lost.is_empty(),
        "sub-away lost acknowledged messages: {lost:?}"
    );
    // QoS 2 end to end (QoS 2 publisher, QoS 2 subscription): exactly once,
    // acknowledged or not.
    for (name, seen) in [("sub-q2", &seen2), ("sub-away", &seen_away)] {
        let seen = seen.lock().unwrap();
        let twice: Vec<_> = seen
            .iter()
            .filter(|(p, n)| p.starts_with("pub-q2-") && **n > 1)
            .collect();
        assert!(
            twice.is_empty(),
            "{name} got QoS 2 messages twice: {twice:?}"
        );
    }

    // Retained messages: each topic holds its last acknowledged value, or a
    // later one that was sent (and stored) but whose PUBACK was lost.
    let (fresh, _) = Client::connect(
        ConnectOptions::new("127.0.0.1", port)
            .client_id("retained-check")
            .protocol_version(ProtocolVersion::V5),
    )
    .await
    .unwrap();
    let mut retained = fresh
        .subscribe("crash/r/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let acked_retained = acked_retained.lock().unwrap().clone();
    let sent_retained = sent_retained.lock().unwrap().clone();
    let mut got = BTreeMap::new();
    while got.len() < acked_retained.len() {
        let m = tokio::time::timeout(Duration::from_secs(10), retained.next())
            .await
            .expect("retained messages")
            .unwrap();
        let p = m.publish();
        let n: u64 = String::from_utf8_lossy(&p.payload)
            .rsplit('-')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        got.insert(p.topic.to_string(), n);
    }
    for (topic, last_acked) in &acked_retained {
        let value = got.get(topic).copied();
        let last_sent = sent_retained.get(topic).copied().unwrap_or(0);
        assert!(
            value.is_some_and(|v| v >= *last_acked && v <= last_sent),
            "{topic}: retained {value:?}, last acknowledged {last_acked}, last sent {last_sent}"
        );
    }
    eprintln!(
        "crash test: {} QoS 1 and {} QoS 2 acknowledged messages delivered after {rounds} kills",
        acked_q1.len(),
        acked_q2.len()
    );
    broker.kill().unwrap();
    broker.wait().unwrap();
}

// MQTT-4.4.0-1: QoS 1 messages in flight when the broker is killed come
// back to the resumed session with their original packet identifiers and
// DUP (they came with new identifiers and without DUP: only a clean end of
// the connection put the identifiers in the store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_identifiers_survive_a_kill() {
    let dir = temp_dir().join("ids");
    let port = free_port();
    let mut broker = start_broker(port, &dir);
    let subscriber = || {
        options(port, "ids-sub")
            .manual_acks(true)
            .reconnect(Reconnect::disabled())
    };
    let (sub, _) = Client::connect(subscriber()).await.unwrap();
    let mut stream = sub.subscribe("ids/t", QoS::AtLeastOnce).await.unwrap();
    let (publisher, _) = Client::connect(options(port, "ids-pub")).await.unwrap();
    let mut first = Vec::new();
    for n in 0..3 {
        publisher
            .publish("ids/t", format!("m{n}"))
            .qos(QoS::AtLeastOnce)
            .await
            .unwrap();
        let m = stream.next().await.unwrap();
        first.push((m.payload.clone(), m.packet_id));
    }
    // Its PUBACK waits for its commit, which comes after those of the three
    // identifiers in the store's order.
    publisher
        .publish("ids/t", "m3")
        .qos(QoS::AtLeastOnce)
        .await
        .unwrap();
    broker.kill().unwrap(); // SIGKILL
    broker.wait().unwrap();
    drop((sub, publisher, stream));
    let mut broker = start_broker(port, &dir);
    let (_sub, _, mut resent) = Client::connect_with_messages(subscriber()).await.unwrap();
    for (payload, id) in first {
        let m = resent.next().await.unwrap();
        assert_eq!((&m.payload, m.packet_id, m.dup), (&payload, id, true));
    }
    broker.kill().unwrap();
    broker.wait().unwrap();
}

/// An empty store file (what a crash while the file was first created
/// leaves, or a file emptied by something else) starts an empty store, and
/// the log says so rather than losing what it held silently.
#[test]
fn an_empty_store_file_is_reported() {
    use std::io::BufRead;
    let dir = temp_dir();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("fulmar.redb"), b"").unwrap();
    let mut child = Broker(
        fulmar()
            .args(["broker", "-p", &free_port().to_string(), "--data-dir"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.stderr.take().unwrap();
    let mut before = Vec::new();
    for line in std::io::BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
    {
        if line.contains("listening on") {
            break;
        }
        before.push(line);
    }
    assert!(
        before
            .iter()
            .any(|line| line.contains("the store file is empty")),
        "{before:#?}"
    );
}
