//! A work queue: workers share one subscription (`$share/workers/jobs/#`),
//! so each job goes to one of them; each acknowledges a job only once it is
//! done (manual acknowledgements). One worker stops with jobs it took but
//! never finished: the broker hands those to the workers still there, and
//! every job gets done.
//!
//! ```text
//! cargo run -p fulmar-examples --example work_queue
//! ```
//!
//! Self-contained: it starts an embedded fulmar broker on 127.0.0.1. The
//! hand-over is MQTT 5.0's advice for shared subscriptions (section 4.8.2:
//! a QoS 1 message a member did not acknowledge goes to another member when
//! its session ends); QoS 2 messages are not handed over, so a work queue
//! uses QoS 1 and jobs that may run twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fulmar_broker::{Broker, BrokerHandle};
use fulmar_client::{Client, ConnectOptions, QoS};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const JOBS: u32 = 60;
const GROUP_FILTER: &str = "$share/workers/jobs/#";

/// Which worker finished which jobs.
type Done = Arc<Mutex<BTreeMap<u32, Vec<String>>>>;

/// A worker's connection: its session ends with it (Session Expiry 0, the
/// default), it acknowledges jobs itself, and it holds at most 4 jobs
/// unacknowledged at a time (its Receive Maximum), so the broker keeps the
/// rest for whichever worker has room.
async fn connect_worker(port: u16, name: &str) -> Result<Client, fulmar_client::Error> {
    let options = ConnectOptions::new("127.0.0.1", port)
        .client_id(name)
        .manual_acks(true)
        .receive_maximum(4);
    Ok(Client::connect(options).await?.0)
}

/// Takes jobs until `stop`, doing each in `work` and acknowledging it after.
async fn worker(
    port: u16,
    name: String,
    work: Duration,
    done: Done,
    mut stop: watch::Receiver<bool>,
) -> Result<(), BoxError> {
    let client = connect_worker(port, &name).await?;
    let mut jobs = client.subscribe(GROUP_FILTER, QoS::AtLeastOnce).await?;
    loop {
        let job = tokio::select! {
            job = jobs.recv() => job.ok_or("client closed")?,
            _ = stop.changed() => break,
        };
        let n: u32 = std::str::from_utf8(&job.payload)?.parse()?;
        sleep(work).await; // ... the job itself ...
        done.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(n)
            .or_default()
            .push(name.clone());
        client.ack(&job).await?;
    }
    client.disconnect().await?;
    Ok(())
}

/// Takes jobs and finishes none, until `stop`; then it stops (a crash or a
/// scale-in would do the same: its session ends). Returns the jobs it held.
async fn quitter(port: u16, mut stop: watch::Receiver<bool>) -> Result<BTreeSet<u32>, BoxError> {
    let client = connect_worker(port, "worker-quits").await?;
    let mut jobs = client.subscribe(GROUP_FILTER, QoS::AtLeastOnce).await?;
    let mut held = BTreeSet::new();
    loop {
        let job = tokio::select! {
            job = jobs.recv() => job.ok_or("client closed")?,
            _ = stop.changed() => break,
        };
        held.insert(std::str::from_utf8(&job.payload)?.parse()?);
    }
    // Not acknowledged: the broker still counts them as this session's.
    client.disconnect().await?;
    Ok(held)
}

/// Waits until the group has `n` members.
async fn wait_for_members(broker: &BrokerHandle, n: usize) -> Result<(), BoxError> {
    timeout(Duration::from_secs(10), async {
        while broker.stats().shared_subscriptions < n {
            sleep(Duration::from_millis(5)).await;
        }
    })
    .await?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let broker = Broker::builder()
        .tcp_listener("127.0.0.1:0")
        .start()
        .await?;
    let port = broker.local_addrs()[0].port();
    let done: Done = Arc::default();

    // The quitter first: the first job goes to the group's first member.
    let (quit, quit_now) = watch::channel(false);
    let quitting = tokio::spawn(quitter(port, quit_now));
    wait_for_members(&broker, 1).await?;
    let (stop, stopped) = watch::channel(false);
    let mut workers = JoinSet::new();
    for (name, ms) in [("worker-fast", 1), ("worker-slow", 10)] {
        workers.spawn(worker(
            port,
            name.to_owned(),
            Duration::from_millis(ms),
            done.clone(),
            stopped.clone(),
        ));
    }
    wait_for_members(&broker, 3).await?;

    let (producer, _) =
        Client::connect(ConnectOptions::new("127.0.0.1", port).client_id("producer")).await?;
    for n in 0..JOBS {
        producer
            .publish(format!("jobs/{n}"), n.to_string())
            .qos(QoS::AtLeastOnce)
            .await?;
        // A job every 2 ms: more than the slow worker can do, less than
        // the two together.
        sleep(Duration::from_millis(2)).await;
    }
    println!("producer: {JOBS} jobs published");

    quit.send_replace(true);
    let held = quitting.await??;
    println!("worker-quits: stopped holding jobs {held:?}, none done");
    let all_done = || done.lock().unwrap_or_else(PoisonError::into_inner).len() == JOBS as usize;
    let finished = timeout(Duration::from_secs(30), async {
        while !all_done() {
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    stop.send_replace(true);
    while let Some(result) = workers.join_next().await {
        result??;
    }

    producer.disconnect().await?;
    broker.shutdown().await;

    let done = done.lock().unwrap_or_else(PoisonError::into_inner);
    let mut per_worker: BTreeMap<&str, usize> = BTreeMap::new();
    for names in done.values() {
        for name in names {
            *per_worker.entry(name.as_str()).or_default() += 1;
        }
    }
    println!("done: {per_worker:?}");
    let missing: Vec<u32> = (0..JOBS).filter(|n| !done.contains_key(n)).collect();
    if finished.is_err() || !missing.is_empty() {
        return Err(format!("jobs not done in 30 s: {missing:?}").into());
    }
    let redone: Vec<&u32> = held.iter().filter(|n| done.contains_key(n)).collect();
    println!(
        "all {JOBS} jobs done; the {} worker-quits held were done by the others: {redone:?}",
        held.len()
    );
    if redone.len() != held.len() {
        return Err("a job the quitter held was not handed over".into());
    }
    Ok(())
}
