//! fulmar-client against rumqttc 0.25, both over TCP to the same broker in
//! the same run, MQTT 3.1.1, 64-byte payloads, at most 20 QoS 1 messages in
//! flight on the wire and at most 64 requests waiting in the client for both.
//!
//! Brokers: an embedded `fulmar-broker` on 127.0.0.1 (an ephemeral port,
//! `OverloadPolicy::Backpressure`, so a slow subscriber slows the publisher
//! down instead of losing QoS 0 messages), and, if `mosquitto` is on `PATH`,
//! a mosquitto started with its own temporary configuration on a free port
//! and killed at the end.
//!
//! Groups, each with the functions `fulmar` and `rumqttc`:
//! - `q0_throughput/{broker}`: one publisher connection sends 5 000 QoS 0
//!   messages; an iteration ends when a subscriber (a second connection of
//!   the same library) has received all of them. fulmar keeps up to 64
//!   publish futures outstanding in a FIFO window, each awaited to its
//!   outcome (`FULMAR_BENCH_UNORDERED=1`: with `buffer_unordered` instead,
//!   the earlier harness); rumqttc's `publish_bytes` returns once the
//!   request is in its 64-slot channel.
//! - `q1_throughput/{broker}`: 2 000 QoS 1 messages, no subscriber; an
//!   iteration ends at the last PUBACK (fulmar: every publish future
//!   completed; rumqttc: the event loop counted 2 000 `PubAck`s).
//! - `q1_rtt/{broker}`: one QoS 1 publish, then wait for its PUBACK, one at a
//!   time (criterion's figure is the mean).
//!
//! After criterion, `q1_rtt` runs again outside criterion (alternating
//! blocks of 2 000 round trips per library, 10 000 each by default,
//! `FULMAR_BENCH_RTT=n` to change it), every round trip recorded in an
//! HdrHistogram, and p50 / p90 / p99 / p99.9 / max are printed per library.
//!
//! rumqttc's event loop runs in its own task that counts `PubAck`s and
//! inbound `Publish`es and wakes the bench task when a target count is
//! reached; fulmar's subscriber stream is read by a task of the same shape.
//!
//! `cargo bench -p fulmar-benches --bench client` (about a minute per broker).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failing connection or a lost message is a bench bug: stop loudly

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, SamplingMode, Throughput};
use fulmar_broker::{Broker, BrokerHandle, OverloadPolicy};
use fulmar_client::{Client, ConnectOptions, ProtocolVersion, PublishFuture, QoS, Reconnect};
use futures::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use tokio::runtime::Runtime;
use tokio::sync::Notify;

const PAYLOAD: [u8; 64] = [0x5a; 64];
/// QoS 1 messages in flight on the wire (fulmar `max_inflight`, rumqttc `set_inflight`).
const INFLIGHT: u16 = 20;
/// Requests waiting in the client: fulmar's outstanding publish futures,
/// rumqttc's request channel capacity (fulmar's command channel holds 64 too).
const WINDOW: usize = 64;
const N_Q0: u64 = 5_000;
const N_Q1: u64 = 2_000;
/// How long a batch may take before the bench gives up.
const BATCH_TIMEOUT: Duration = Duration::from_secs(60);
const RTT_BLOCK: u64 = 2_000;
/// QoS 0 messages the broker dropped during the QoS 0 throughput groups.
static QOS0_LOST: AtomicU64 = AtomicU64::new(0);

/// Counts events seen by a background task and wakes the bench task when a
/// target is reached.
#[derive(Default)]
struct Counter {
    count: AtomicU64,
    target: AtomicU64,
    notify: Notify,
}

impl Counter {
    fn hit(&self) {
        let count = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        if count == self.target.load(Ordering::Acquire) {
            self.notify.notify_one();
        }
    }

    /// Sets the target `n` events from now; call before causing them.
    fn arm(&self, n: u64) -> u64 {
        let target = self.count.load(Ordering::Acquire) + n;
        self.target.store(target, Ordering::Release);
        target
    }

    /// Waits for `target` like [`wait`](Self::wait), but a QoS 0 message the
    /// broker dropped (its queue for the subscriber was full) never comes:
    /// after a quiet second without progress the batch ends, and the
    /// shortfall is counted in `QOS0_LOST` (reported at the end).
    async fn wait_lossy(&self, target: u64) {
        let mut seen = self.count.load(Ordering::Acquire);
        while seen < target {
            let quiet = tokio::time::timeout(Duration::from_secs(1), self.notify.notified()).await;
            let now = self.count.load(Ordering::Acquire);
            if quiet.is_err() && now == seen {
                QOS0_LOST.fetch_add(target - now, Ordering::Relaxed);
                // The next batch counts from the same counter: make up the gap.
                self.count.store(target, Ordering::Release);
                return;
            }
            seen = now;
        }
    }

    async fn wait(&self, target: u64, what: &str) {
        let deadline = tokio::time::Instant::now() + BATCH_TIMEOUT;
        while self.count.load(Ordering::Acquire) < target {
            // A stale permit only costs one more look at the count.
            if tokio::time::timeout_at(deadline, self.notify.notified())
                .await
                .is_err()
            {
                panic!(
                    "{what}: {} of {target} after {BATCH_TIMEOUT:?}",
                    self.count.load(Ordering::Acquire)
                );
            }
        }
    }
}

/// A rumqttc connection whose event loop runs in a task that counts.
struct Rumq {
    client: AsyncClient,
    acks: Arc<Counter>,
    publishes: Arc<Counter>,
    subacks: Arc<Counter>,
}

async fn rumqttc_connect(port: u16, id: &str) -> Rumq {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(60))
        .set_clean_session(true)
        .set_inflight(INFLIGHT);
    let (client, mut eventloop) = AsyncClient::new(options, WINDOW);
    loop {
        match eventloop.poll().await.expect("rumqttc connect") {
            Event::Incoming(Packet::ConnAck(_)) => break,
            _ => continue,
        }
    }
    let acks = Arc::new(Counter::default());
    let publishes = Arc::new(Counter::default());
    let subacks = Arc::new(Counter::default());
    let (a, p, s) = (acks.clone(), publishes.clone(), subacks.clone());
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => a.hit(),
                Ok(Event::Incoming(Packet::Publish(_))) => p.hit(),
                Ok(Event::Incoming(Packet::SubAck(_))) => s.hit(),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    Rumq {
        client,
        acks,
        publishes,
        subacks,
    }
}

impl Rumq {
    async fn subscribe(&self, topic: &str) {
        let target = self.subacks.arm(1);
        self.client
            .subscribe(topic, rumqttc::QoS::AtMostOnce)
            .await
            .expect("rumqttc subscribe");
        self.subacks.wait(target, "rumqttc SUBACK").await;
    }

    async fn close(self) {
        let _ignored = self.client.disconnect().await;
    }
}

async fn fulmar_connect(port: u16, id: &str) -> Client {
    let options = ConnectOptions::new("127.0.0.1", port)
        .protocol_version(ProtocolVersion::V311)
        .client_id(id)
        .max_inflight(INFLIGHT)
        .reconnect(Reconnect::disabled());
    Client::connect(options).await.expect("fulmar connect").0
}

/// A fulmar subscriber whose stream is read by a task that counts.
async fn fulmar_subscriber(port: u16, id: &str, topic: &str) -> (Client, Arc<Counter>) {
    let client = fulmar_connect(port, id).await;
    let mut stream = client
        .subscribe(topic, QoS::AtMostOnce)
        .await
        .expect("fulmar subscribe");
    let counter = Arc::new(Counter::default());
    let c = counter.clone();
    tokio::spawn(async move {
        while stream.next().await.is_some() {
            c.hit();
        }
    });
    (client, counter)
}

/// `FULMAR_BENCH_UNORDERED=1`: the fulmar side uses the earlier harness.
static UNORDERED: LazyLock<bool> =
    LazyLock::new(|| std::env::var_os("FULMAR_BENCH_UNORDERED").is_some_and(|v| v == "1"));

async fn fulmar_publish(client: &Client, topic: &'static str, qos: QoS, n: u64) {
    if *UNORDERED {
        fulmar_publish_n_unordered(client, topic, qos, n).await;
    } else {
        fulmar_publish_n(client, topic, qos, n).await;
    }
}

/// Publishes `n` messages with fulmar, at most `WINDOW` publish futures
/// outstanding, completed in the order they were started (QoS 1 PUBACKs and
/// QoS 0 writes come back in that order; one that completes early waits in
/// its future until those before it are done).
async fn fulmar_publish_n(client: &Client, topic: &'static str, qos: QoS, n: u64) {
    let payload = Bytes::from_static(&PAYLOAD);
    let mut window: VecDeque<PublishFuture<'_>> = VecDeque::with_capacity(WINDOW);
    let mut started = 0;
    std::future::poll_fn(|cx| {
        loop {
            while let Some(front) = window.front_mut() {
                match Pin::new(front).poll(cx) {
                    Poll::Ready(outcome) => {
                        outcome.expect("fulmar publish");
                        window.pop_front();
                    }
                    Poll::Pending => break,
                }
            }
            if started == n && window.is_empty() {
                return Poll::Ready(());
            }
            if started == n || window.len() == WINDOW {
                return Poll::Pending;
            }
            while started < n && window.len() < WINDOW {
                let mut publish = client
                    .publish(topic, payload.clone())
                    .qos(qos)
                    .into_future();
                started += 1;
                match Pin::new(&mut publish).poll(cx) {
                    Poll::Ready(outcome) => {
                        outcome.expect("fulmar publish");
                    }
                    Poll::Pending => window.push_back(publish),
                }
            }
        }
    })
    .await;
}

/// [`fulmar_publish_n`] with `buffer_unordered` (the bench's earlier
/// harness; `FULMAR_BENCH_UNORDERED=1`).
async fn fulmar_publish_n_unordered(client: &Client, topic: &'static str, qos: QoS, n: u64) {
    let payload = Bytes::from_static(&PAYLOAD);
    futures::stream::iter(0..n)
        .map(|_| {
            client
                .publish(topic, payload.clone())
                .qos(qos)
                .into_future()
        })
        .buffer_unordered(WINDOW)
        .try_for_each(|_outcome| async { Ok(()) })
        .await
        .expect("fulmar publish");
}

async fn rumqttc_publish_n(client: &AsyncClient, topic: &'static str, qos: rumqttc::QoS, n: u64) {
    let payload = Bytes::from_static(&PAYLOAD);
    for _ in 0..n {
        client
            .publish_bytes(topic, qos, false, payload.clone())
            .await
            .expect("rumqttc publish");
    }
}

async fn fulmar_rtt(client: &Client) -> Duration {
    let start = Instant::now();
    client
        .publish("bench/f/rtt", Bytes::from_static(&PAYLOAD))
        .qos(QoS::AtLeastOnce)
        .await
        .expect("fulmar publish");
    start.elapsed()
}

async fn rumqttc_rtt(r: &Rumq) -> Duration {
    let start = Instant::now();
    let target = r.acks.arm(1);
    r.client
        .publish_bytes(
            "bench/r/rtt",
            rumqttc::QoS::AtLeastOnce,
            false,
            Bytes::from_static(&PAYLOAD),
        )
        .await
        .expect("rumqttc publish");
    r.acks.wait(target, "rumqttc PUBACK").await;
    start.elapsed()
}

fn q0_throughput(c: &mut Criterion, rt: &Runtime, broker: &str, port: u16) {
    let mut group = c.benchmark_group(format!("q0_throughput/{broker}"));
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(N_Q0));

    let (fpub, (fsub, fcount)) = rt.block_on(async {
        tokio::join!(
            fulmar_connect(port, "fulmar-q0-pub"),
            fulmar_subscriber(port, "fulmar-q0-sub", "bench/f/q0")
        )
    });
    group.bench_function("fulmar", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let target = fcount.arm(N_Q0);
                    fulmar_publish(&fpub, "bench/f/q0", QoS::AtMostOnce, N_Q0).await;
                    fcount.wait_lossy(target).await;
                }
                start.elapsed()
            })
        });
    });
    rt.block_on(async {
        let _ignored = fpub.disconnect().await;
        let _ignored = fsub.disconnect().await;
    });

    let (rpub, rsub) = rt.block_on(async {
        let (p, s) = tokio::join!(
            rumqttc_connect(port, "rumqttc-q0-pub"),
            rumqttc_connect(port, "rumqttc-q0-sub")
        );
        s.subscribe("bench/r/q0").await;
        (p, s)
    });
    group.bench_function("rumqttc", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let target = rsub.publishes.arm(N_Q0);
                    rumqttc_publish_n(&rpub.client, "bench/r/q0", rumqttc::QoS::AtMostOnce, N_Q0)
                        .await;
                    rsub.publishes.wait_lossy(target).await;
                }
                start.elapsed()
            })
        });
    });
    rt.block_on(async {
        rpub.close().await;
        rsub.close().await;
    });
    group.finish();
}

fn q1_throughput(c: &mut Criterion, rt: &Runtime, broker: &str, port: u16) {
    let mut group = c.benchmark_group(format!("q1_throughput/{broker}"));
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(N_Q1));

    let fpub = rt.block_on(fulmar_connect(port, "fulmar-q1-pub"));
    group.bench_function("fulmar", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    fulmar_publish(&fpub, "bench/f/q1", QoS::AtLeastOnce, N_Q1).await;
                }
                start.elapsed()
            })
        });
    });
    rt.block_on(async {
        let _ignored = fpub.disconnect().await;
    });

    let rpub = rt.block_on(rumqttc_connect(port, "rumqttc-q1-pub"));
    group.bench_function("rumqttc", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let target = rpub.acks.arm(N_Q1);
                    rumqttc_publish_n(&rpub.client, "bench/r/q1", rumqttc::QoS::AtLeastOnce, N_Q1)
                        .await;
                    rpub.acks.wait(target, "rumqttc PUBACKs").await;
                }
                start.elapsed()
            })
        });
    });
    rt.block_on(rpub.close());
    group.finish();
}

fn q1_rtt(c: &mut Criterion, rt: &Runtime, broker: &str, port: u16) {
    let mut group = c.benchmark_group(format!("q1_rtt/{broker}"));
    let (fpub, rpub) = rt.block_on(async {
        tokio::join!(
            fulmar_connect(port, "fulmar-rtt"),
            rumqttc_connect(port, "rumqttc-rtt")
        )
    });
    group.bench_function("fulmar", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += fulmar_rtt(&fpub).await;
                }
                total
            })
        });
    });
    group.bench_function("rumqttc", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += rumqttc_rtt(&rpub).await;
                }
                total
            })
        });
    });
    group.finish();
    rt.block_on(async {
        let _ignored = fpub.disconnect().await;
        rpub.close().await;
    });
}

/// Round trips recorded one by one, alternating blocks of the two libraries.
fn rtt_percentiles(rt: &Runtime, broker: &str, port: u16, per_client: u64) {
    let new_histogram = || Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    let (mut fh, mut rh) = (new_histogram(), new_histogram());
    rt.block_on(async {
        let (fpub, rpub) = tokio::join!(
            fulmar_connect(port, "fulmar-rtt-hdr"),
            rumqttc_connect(port, "rumqttc-rtt-hdr")
        );
        // Warm both connections up.
        for _ in 0..200 {
            fulmar_rtt(&fpub).await;
            rumqttc_rtt(&rpub).await;
        }
        let mut done = 0;
        while done < per_client {
            let block = RTT_BLOCK.min(per_client - done);
            for _ in 0..block {
                let d = fulmar_rtt(&fpub).await;
                fh.saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
            }
            for _ in 0..block {
                let d = rumqttc_rtt(&rpub).await;
                rh.saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
            }
            done += block;
        }
        let _ignored = fpub.disconnect().await;
        rpub.close().await;
    });
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "q1_rtt_hdr/{broker}: {per_client} round trips per library, alternating blocks of {RTT_BLOCK}"
    );
    println!(
        "  {:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "library", "mean us", "p50 us", "p90 us", "p99 us", "p99.9 us", "max us"
    );
    for (name, h) in [("fulmar", &fh), ("rumqttc", &rh)] {
        println!(
            "  {:<8} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            name,
            h.mean() / 1000.0,
            us(h, 0.5),
            us(h, 0.9),
            us(h, 0.99),
            us(h, 0.999),
            h.max() as f64 / 1000.0
        );
    }
    println!(
        "  p99 ratio rumqttc/fulmar: {:.2}, p50 ratio: {:.2}",
        us(&rh, 0.99) / us(&fh, 0.99),
        us(&rh, 0.5) / us(&fh, 0.5)
    );
}

/// A mosquitto on a free port of 127.0.0.1, killed when dropped.
struct Mosquitto {
    child: Child,
    config: PathBuf,
    port: u16,
}

impl Mosquitto {
    fn start() -> Option<Self> {
        let on_path = std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| dir.join("mosquitto").is_file())
        });
        if !on_path {
            return None;
        }
        // Bind, read the port, close: mosquitto binds it right after.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .ok()?
            .port();
        let config = std::env::temp_dir().join(format!(
            "fulmar-bench-mosquitto-{}.conf",
            std::process::id()
        ));
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence false\n\
                 set_tcp_nodelay true\n"
            ),
        )
        .ok()?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mosquitto = Self {
            child,
            config,
            port,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..100 {
            if TcpStream::connect(addr).is_ok() {
                return Some(mosquitto);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("mosquitto did not listen on {addr}: skipped");
        None
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ignored = self.child.kill();
        let _ignored = self.child.wait();
        let _ignored = std::fs::remove_file(&self.config);
    }
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fulmar_broker: BrokerHandle = rt.block_on(async {
        Broker::builder()
            .tcp_listener("127.0.0.1:0")
            .overload_policy(OverloadPolicy::Backpressure)
            .start()
            .await
            .unwrap()
    });
    let mut brokers = vec![("fulmar-broker", fulmar_broker.local_addrs()[0].port())];
    let mosquitto = Mosquitto::start();
    match &mosquitto {
        Some(m) => brokers.push(("mosquitto", m.port)),
        None => eprintln!("mosquitto not on PATH (or not started): fulmar-broker only"),
    }

    for &(broker, port) in &brokers {
        q0_throughput(&mut c, &rt, broker, port);
        q1_throughput(&mut c, &rt, broker, port);
        q1_rtt(&mut c, &rt, broker, port);
    }
    let per_client = std::env::var("FULMAR_BENCH_RTT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench_mode { 10_000 } else { 100 });
    for &(broker, port) in &brokers {
        rtt_percentiles(&rt, broker, port, per_client);
    }

    rt.block_on(fulmar_broker.shutdown());
    drop(mosquitto);
    let lost = QOS0_LOST.load(Ordering::Relaxed);
    if lost > 0 {
        println!("QoS 0 messages dropped by the brokers (full subscriber queues): {lost}");
    }
    c.final_summary();
}
