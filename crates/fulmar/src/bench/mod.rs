//! `fulmar bench`: a load generator for any MQTT broker.
//!
//! N publishers and M subscribers (plus idle connections) connect over lean
//! sans-IO sessions (`fulmar-session` + `fulmar-codec` on tokio sockets), all
//! subscribers are subscribed before the first message, then the publishers
//! send for a duration or a count, at a rate or as fast as the broker takes.
//! Each payload starts with a magic number, the run's random identifier, a
//! send timestamp, the publisher index and a sequence number, so subscribers
//! measure end-to-end latency, count duplicates, and set apart (as foreign)
//! messages that are not this run's; at the end every acknowledged QoS 1/2
//! message that a matching subscriber did not receive counts as lost.
//!
//! With `--rate` the load is open loop: each message is stamped with the
//! time it was due, so a publisher held up by the broker sends its backlog
//! with the wait in its latency (response time, no coordinated omission);
//! only the first millisecond of lateness, the timer's resolution, is
//! forgiven. With `--duration`, messages due before the end but not sent
//! (the publisher was held up) are latency samples of their wait too
//! (see `workers::Backlog`).
//! Without it the load is closed loop: publishers wait for the broker (its
//! in-flight window, a full socket) and stamp a message when they create
//! it, so latency is service time and a stall shows as lower throughput.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use fulmar_codec::{MqttString, ProtocolVersion, PublishProperties, QoS};
use indicatif::{ProgressBar, ProgressStyle};

use crate::pubsub::Failure;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

mod conn;
mod plot;
mod report;
mod stats;
mod workers;

use conn::Tls;
use stats::{CpuTime, HEADER_LEN, Latencies};
use workers::{ConnectPlan, PubPlan, PubResult, Shared, SubPlan, SubResult};

/// The protocol versions `fulmar bench` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mqtt {
    /// MQTT 3.1.1.
    #[value(name = "3.1.1")]
    V311,
    /// MQTT 5.0.
    #[value(name = "5")]
    V5,
}

/// Options of `fulmar bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Broker host name or address.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Broker port.
    #[arg(short, long, default_value_t = 1883)]
    port: u16,
    /// Ports the subscribers connect to instead, round robin (comma
    /// separated; on --host): to measure across the nodes of a cluster,
    /// publishers on --port and subscribers on the other nodes.
    #[arg(long, value_delimiter = ',', value_name = "PORTS")]
    sub_ports: Vec<u16>,
    /// Protocol version.
    #[arg(long, value_enum, default_value = "5")]
    mqtt: Mqtt,
    /// Publisher connections.
    #[arg(short = 'P', long, default_value_t = 1)]
    publishers: u32,
    /// Subscriber connections.
    #[arg(short = 'S', long, default_value_t = 1)]
    subscribers: u32,
    /// Extra connections that only connect and keep alive.
    #[arg(long, default_value_t = 0)]
    idle: u32,
    /// Subscribers keep their sessions during the run (3.1.1 Clean Session
    /// 0, 5.0 Session Expiry Interval one hour): a broker with a store
    /// persists what it queues for them. At the end they end them (5.0: a
    /// DISCONNECT with Session Expiry Interval 0; 3.1.1: a clean-session
    /// reconnect).
    #[arg(long)]
    persistent: bool,
    /// Topic of publisher i; `{i}` is replaced by i (modulo --topics when set).
    #[arg(short, long, default_value = "fulmar-bench/{i}")]
    topic: String,
    /// Topic filter of subscriber j; `{i}` is replaced by j (modulo --topics when set).
    #[arg(short, long, default_value = "fulmar-bench/#")]
    filter: String,
    /// Number of distinct topics: `{i}` counts modulo this (0: no modulo).
    #[arg(long, default_value_t = 0)]
    topics: u32,
    /// QoS of the publishers; a list (0,1,2) assigns them round robin.
    /// Subscribers ask for the highest.
    #[arg(short, long, value_delimiter = ',', default_value = "0")]
    qos: Vec<u8>,
    /// Payload bytes per message (at least 32: the header; a smaller size
    /// is raised to 32, with a warning).
    #[arg(short, long, default_value_t = 64)]
    size: usize,
    /// MQTT 5.0 user property on every message, as `KEY=VALUE`; repeat for more.
    #[arg(long = "user-property", value_name = "KEY=VALUE")]
    user_properties: Vec<String>,
    /// Messages per second per publisher (0: as fast as possible). Open
    /// loop: messages are stamped with the time they were due (lateness up
    /// to the timer's 1 ms forgiven), so latency includes any wait for the
    /// broker (response time); without a rate
    /// publishers wait for the broker and latency is service time. A rate
    /// not achieved is warned about.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seconds to publish (ignored with --count). Throughput is over at
    /// least this long minus --warmup, even when the broker stopped
    /// answering earlier. With --rate, messages due but not sent when it
    /// ends count in "unsent_due" and as latency samples.
    #[arg(short, long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds at the start whose messages (by send timestamp) count in
    /// neither latency nor throughput; they still count for losses.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Messages per publisher, instead of a duration.
    #[arg(short = 'n', long)]
    count: Option<u64>,
    /// QoS 1/2 messages in flight per publisher (capped by the broker's
    /// Receive Maximum; 0 is taken as 1, with a warning).
    #[arg(long, default_value_t = 20)]
    inflight: u16,
    /// Keep alive of every connection, in seconds.
    #[arg(long, default_value_t = 60)]
    keep_alive: u16,
    /// Connection attempts at a time (0 is taken as 1, with a warning).
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Seconds one connection may take to connect (TCP, TLS, CONNACK, and
    /// SUBACK for a subscriber) before it counts as failed.
    #[arg(long, default_value_t = 30.0)]
    connect_timeout: f64,
    /// Seconds to wait, once publishing stops, for the in-flight messages to
    /// be acknowledged and then for every expected delivery (one deadline
    /// for both). Also, with --count, how long the publishers may send and
    /// receive acknowledgements of nothing before the run ends with an
    /// error (plus one --rate interval).
    #[arg(long, default_value_t = 10.0)]
    drain_timeout: f64,
    /// Connect over TLS (the system's root certificates are trusted, and
    /// those of --cafile).
    #[arg(long)]
    tls: bool,
    /// Connect over TLS, trusting the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    cafile: Option<std::path::PathBuf>,
    /// PID of the broker: report its RSS before and after connecting, and
    /// the CPU time it spent per message received (Linux /proc).
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Print the report as JSON.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print the report as CSV (a header line and a data line).
    #[arg(long)]
    csv: bool,
    /// Write a latency CDF and a throughput-over-time chart to this SVG file.
    #[arg(long, value_name = "FILE")]
    plot: Option<std::path::PathBuf>,
}

/// Where a run is; every connection watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Phase {
    /// Connections are being opened.
    Connecting,
    /// Publishers publish.
    Running,
    /// Publishers finish what is in flight and disconnect.
    Stop,
    /// Everyone disconnects.
    Finish,
}

/// Interval of the progress bar and the throughput timeline.
const TICK: Duration = Duration::from_millis(200);

/// `fulmar bench --help`: what the exit status says.
pub(crate) const EXIT_STATUS_HELP: &str = "\
Exit status: 0 when the run completed without errors and no acknowledged \
QoS 1/2 message was lost. 1 when a connection could not be opened \
(connect, TLS, CONNACK or SUBACK failed or timed out: the run does not \
start and no report is printed, only the error), when no report could be \
made, or on errors during the run: a connection that failed or was \
closed, a publisher whose QoS 1/2 messages were still unacknowledged (or \
bytes unwritten) at the drain timeout, a --count run that stalled, QoS \
1/2 messages the broker acknowledged with an error reason code; the \
report is then printed and counts them in \"errors\". 2 when the run \
completed without errors but acknowledged QoS 1/2 messages never reached \
a matching subscriber (the report is printed). QoS 0 losses alone do not \
change the exit status.";

/// The exit status of a run whose report counts lost acknowledged QoS 1/2
/// messages, and no error.
pub(crate) const LOST_EXIT: u8 = 2;

/// Runs `fulmar bench` and prints its report; the exit status is in the
/// error (see [`EXIT_STATUS_HELP`]).
pub(crate) async fn run(args: BenchArgs) -> Result<(), Failure> {
    let addr = resolve(&args.host, args.port).await?;
    let mut sub_addrs = Vec::with_capacity(args.sub_ports.len());
    for port in &args.sub_ports {
        sub_addrs.push(resolve(&args.host, *port).await?);
    }
    let qos: Vec<QoS> = args
        .qos
        .iter()
        .map(|q| match q {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Ok(QoS::ExactlyOnce),
            other => Err(format!("no QoS {other}")),
        })
        .collect::<Result<_, _>>()?;
    let max_qos = qos.iter().copied().max().unwrap_or(QoS::AtMostOnce);
    if args.filter.starts_with("$share/") {
        return Err("shared subscriptions are not supported by the loss accounting".into());
    }
    let run_for = match args.count {
        Some(_) => Duration::ZERO,
        None => seconds("--duration", args.duration, false)
            .map_err(|e| format!("{e} (or give --count)"))?,
    };
    let drain = seconds("--drain-timeout", args.drain_timeout, true)?;
    let warmup = seconds("--warmup", args.warmup, true)?;
    if args.count.is_none() && warmup >= run_for {
        return Err(format!(
            "--warmup {}: must be shorter than --duration {}",
            show(args.warmup),
            show(args.duration)
        )
        .into());
    }
    if args.size < HEADER_LEN {
        warn(&format!(
            "-s {}: payloads are at least {HEADER_LEN} bytes (the header); sending {HEADER_LEN}",
            args.size
        ));
    }
    if args.inflight == 0 {
        warn("--inflight 0: taken as 1");
    }
    if args.connect_concurrency == 0 {
        warn("--connect-concurrency 0: taken as 1");
    }
    let connect_timeout = seconds("--connect-timeout", args.connect_timeout, false)?;
    let interval = rate_interval(args.rate)?;
    let version = match args.mqtt {
        Mqtt::V311 => ProtocolVersion::V311,
        Mqtt::V5 => ProtocolVersion::V5,
    };
    if !args.user_properties.is_empty() && version != ProtocolVersion::V5 {
        return Err("--user-property needs MQTT 5 (--mqtt 5)".into());
    }
    let mut properties = PublishProperties::default();
    for pair in &args.user_properties {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("--user-property {pair:?}: expected KEY=VALUE"))?;
        properties.user_properties.push((
            MqttString::from(key.to_owned()),
            MqttString::from(value.to_owned()),
        ));
    }
    let subscribers = args.subscribers as usize;
    let shared = Arc::new(Shared::new(
        stats::random_u64()?,
        args.publishers,
        Latencies::new(subscribers.clamp(1, 16))?,
    ));
    let (phase_tx, phase_rx) = watch::channel(Phase::Connecting);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let tls = match (&args.cafile, args.tls) {
        (None, false) => None,
        (cafile, _) => {
            let mut options = fulmar_client::TlsOptions::new();
            if let Some(path) = cafile {
                let pem =
                    std::fs::read(path).map_err(|e| format!("--cafile {}: {e}", path.display()))?;
                options = options
                    .ca_pem(&pem)
                    .map_err(|e| format!("--cafile {}: {e}", path.display()))?;
            }
            Some(Arc::new(Tls {
                options,
                host: args.host.clone(),
            }))
        }
    };
    let concurrency = args.connect_concurrency.max(1);
    let connect = ConnectPlan {
        addr,
        tls,
        version,
        keep_alive: args.keep_alive,
        inflight: args.inflight.max(1),
        persistent: args.persistent,
        timeout: connect_timeout,
        gate: Arc::new(Semaphore::new(concurrency)),
        ready: ready_tx,
    };
    // Client identifiers `fb<48 random bits>-{p,s,i}<index>`: a later run
    // never takes over (or resumes) this run's connections and sessions.
    let tag = format!("fb{:012x}", stats::random_u64()? >> 16);
    let substitute = |pattern: &str, i: u32| {
        let n = if args.topics > 0 { i % args.topics } else { i };
        pattern.replace("{i}", &n.to_string())
    };

    let connections = subscribers
        .saturating_add(args.publishers as usize)
        .saturating_add(args.idle as usize);
    // As many as the hard limit allows; a warning if still too few.
    let _ = crate::broker::raise_open_files_limit();
    warn_about_open_files(connections);
    let rss_before = args.broker_pid.and_then(rss_kb);
    let connect_start = Instant::now();
    let mut errors = Vec::new();
    let sub_plans: Vec<SubPlan> = (0..args.subscribers)
        .map(|j| SubPlan {
            index: j,
            client_id: format!("{tag}-s{j}"),
            filter: substitute(&args.filter, j),
            qos: max_qos,
        })
        .collect();
    let filters: Vec<String> = sub_plans.iter().map(|p| p.filter.clone()).collect();
    let sub_tasks: Vec<JoinHandle<SubResult>> = sub_plans
        .into_iter()
        .map(|plan| {
            let mut connect = connect.clone();
            if let Some(addr) = sub_addrs.get(plan.index as usize % sub_addrs.len().max(1)) {
                connect.addr = *addr;
            }
            tokio::spawn(workers::subscriber(
                connect,
                plan,
                shared.clone(),
                phase_rx.clone(),
            ))
        })
        .collect();
    await_ready(
        &mut ready_rx,
        subscribers,
        ready_deadline(subscribers, concurrency, connect_timeout),
        &mut errors,
    )
    .await;
    let pub_plans: Vec<PubPlan> = (0..args.publishers)
        .map(|i| PubPlan {
            index: i,
            client_id: format!("{tag}-p{i}"),
            topic: substitute(&args.topic, i),
            qos: qos
                .get(i as usize % qos.len().max(1))
                .copied()
                .unwrap_or(QoS::AtMostOnce),
            count: args.count,
            interval,
            payload_size: args.size.max(HEADER_LEN),
            properties: properties.clone(),
        })
        .collect();
    let topics: Vec<(String, QoS)> = pub_plans.iter().map(|p| (p.topic.clone(), p.qos)).collect();
    let pub_tasks: Vec<JoinHandle<PubResult>> = pub_plans
        .into_iter()
        .map(|plan| {
            tokio::spawn(workers::publisher(
                connect.clone(),
                plan,
                shared.clone(),
                phase_rx.clone(),
            ))
        })
        .collect();
    let idle_tasks: Vec<JoinHandle<Option<String>>> = (0..args.idle)
        .map(|k| {
            tokio::spawn(workers::idle(
                connect.clone(),
                format!("{tag}-i{k}"),
                phase_rx.clone(),
            ))
        })
        .collect();
    let others = (args.publishers as usize).saturating_add(args.idle as usize);
    await_ready(
        &mut ready_rx,
        others,
        ready_deadline(others, concurrency, connect_timeout),
        &mut errors,
    )
    .await;
    let connect_s = connect_start.elapsed().as_secs_f64();
    if !errors.is_empty() {
        let _ = phase_tx.send(Phase::Finish);
        // The subscribers end their sessions (--persistent) before the
        // process exits, within the drain timeout.
        let ending = async {
            for task in sub_tasks {
                let _ = task.await;
            }
        };
        let _ = within(Instant::now().checked_add(drain), ending).await;
        return Err(format!(
            "{} of {connections} connections failed; first: {}",
            errors.len(),
            errors.first().map_or("", String::as_str)
        )
        .into());
    }
    // Let the broker settle (and its RSS reflect the connections).
    let rss_after = match args.broker_pid {
        Some(pid) => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            rss_kb(pid)
        }
        None => None,
    };

    // Publish.
    let bar = Progress::new(
        args.count
            .map(|c| c.saturating_mul(u64::from(args.publishers))),
        run_for,
    );
    let start = Instant::now();
    let start_nanos = u64::try_from((start - shared.base).as_nanos()).unwrap_or(0);
    let warmup_nanos = u64::try_from(warmup.as_nanos()).unwrap_or(u64::MAX);
    // Before the publishers see the start.
    shared
        .measure_from
        .store(start_nanos.saturating_add(warmup_nanos), Ordering::Relaxed);
    shared.activity.store(start_nanos, Ordering::Relaxed);
    if args.count.is_none() {
        let run_nanos = u64::try_from(run_for.as_nanos()).unwrap_or(u64::MAX);
        shared
            .stop_at
            .store(start_nanos.saturating_add(run_nanos), Ordering::Relaxed);
    }
    // CPU time from here to the last delivery.
    let cpu_start = (
        args.broker_pid.and_then(|pid| CpuTime::of(Some(pid))),
        CpuTime::of(None),
    );
    let _ = phase_tx.send(Phase::Running);
    let mut timeline = Vec::new();
    let mut last = (0u64, 0u64, Instant::now());
    // With --duration: when publishing stops (`None` beyond the clock).
    let stop_at = match args.count {
        Some(_) => None,
        None => start.checked_add(run_for),
    };
    // With --count: publishers that neither send nor get an
    // acknowledgement for this long have stalled.
    let stall_limit = drain
        .max(TICK)
        .saturating_add(interval.unwrap_or(Duration::ZERO));
    let mut stalled = false;
    // Where the stall error is in `errors`, to add what was left undone.
    let mut stall_error = None;
    let mut next_tick = Instant::now() + TICK;
    loop {
        // The end of --duration is not rounded up to a tick.
        let wake = stop_at.map_or(next_tick, |end| end.min(next_tick));
        tokio::time::sleep_until(wake.into()).await;
        if Instant::now() >= next_tick {
            sample(&shared, &mut last, start, &mut timeline, &bar);
            next_tick = Instant::now() + TICK;
        }
        let done = match args.count {
            Some(_) if pub_tasks.iter().all(JoinHandle::is_finished) => true,
            Some(_) => {
                let quiet = shared
                    .nanos()
                    .saturating_sub(shared.activity.load(Ordering::Relaxed));
                if Duration::from_nanos(quiet) > stall_limit {
                    stall_error = Some(errors.len());
                    errors.push(format!(
                        "stalled: no message sent or acknowledged for {:.1} s \
                         (--drain-timeout {}); gave up",
                        Duration::from_nanos(quiet).as_secs_f64(),
                        show(args.drain_timeout)
                    ));
                    stalled = true;
                }
                stalled
            }
            None => stop_at.is_some_and(|end| Instant::now() >= end),
        };
        if done {
            break;
        }
    }
    let told_to_stop = start.elapsed().as_secs_f64();
    // A stalled run does not drain: it ends now.
    shared.stalled.store(stalled, Ordering::Relaxed);
    let _ = phase_tx.send(if stalled { Phase::Finish } else { Phase::Stop });
    // One deadline for the in-flight messages and the deliveries; no end
    // when the drain timeout is beyond the clock's range.
    let drain_end = Instant::now().checked_add(drain);
    while !pub_tasks.iter().all(JoinHandle::is_finished)
        && drain_end.is_none_or(|end| Instant::now() < end)
    {
        tick_until(drain_end).await;
        sample(&shared, &mut last, start, &mut timeline, &bar);
    }
    let stopped_s = start.elapsed().as_secs_f64();
    // Publishers still draining now give up.
    if !pub_tasks.iter().all(JoinHandle::is_finished) {
        let _ = phase_tx.send(Phase::Finish);
    }
    let mut pubs = Vec::with_capacity(pub_tasks.len());
    for task in pub_tasks {
        pubs.push(task.await.map_err(|e| format!("publisher task: {e}"))?);
    }
    // What the publishers left undone, in the stall error (not one
    // drain-timeout error per publisher on top of it).
    if let Some(error) = stall_error.and_then(|k| errors.get_mut(k)) {
        let (messages, bytes) = pubs
            .iter()
            .filter_map(|p| p.cut_short)
            .fold((0, 0), |(m, b), (pm, pb)| (m + pm, b + pb));
        *error +=
            &format!("; left {messages} QoS 1/2 messages unacknowledged, {bytes} bytes unwritten");
    }
    // Where the publishers' own records put the end (not the tick on
    // which the loops above noticed it), and with --duration not before
    // they were told to stop: a broker that stops answering early does
    // not shorten the run.
    let publish_s = report::publish_window(
        report::publish_seconds(start_nanos, &pubs, |p| p.last_nanos),
        args.count.is_none().then_some(told_to_stop),
        stopped_s,
    );
    // The sent rate's window: to the last send (not the acknowledgements
    // and writes after it), with --duration at least until publishing was
    // told to stop.
    let send_s = report::publish_window(
        report::publish_seconds(start_nanos, &pubs, |p| p.last_sent_nanos),
        args.count.is_none().then_some(told_to_stop),
        stopped_s,
    );
    // Wait for the deliveries: each of this run's messages once per
    // subscriber (duplicates and foreign messages do not bring the end
    // nearer), until all arrived or the drain timeout.
    let expected_total = report::expected_deliveries(&pubs, &topics, &filters);
    while !stalled
        && shared.received.load(Ordering::Relaxed) < expected_total
        && drain_end.is_none_or(|end| Instant::now() < end)
    {
        tick_until(drain_end).await;
        sample(&shared, &mut last, start, &mut timeline, &bar);
    }
    let received_all = shared.received.load(Ordering::Relaxed);
    let cpu_end = (
        args.broker_pid.and_then(|pid| CpuTime::of(Some(pid))),
        CpuTime::of(None),
    );
    let cpu_use = |start: Option<CpuTime>, end: Option<CpuTime>| {
        start.zip(end).map(|(s, e)| s.until(e, received_all))
    };
    let cpu = (
        cpu_use(cpu_start.0, cpu_end.0),
        cpu_use(cpu_start.1, cpu_end.1),
    );
    bar.bar.finish_and_clear();
    let _ = phase_tx.send(Phase::Finish);
    let mut subs = Vec::with_capacity(sub_tasks.len());
    for task in sub_tasks {
        subs.push(task.await.map_err(|e| format!("subscriber task: {e}"))?);
    }
    for task in idle_tasks {
        if let Some(error) = task.await.map_err(|e| format!("idle task: {e}"))? {
            errors.push(format!("idle: {error}"));
        }
    }

    let last_rx = shared.last_received.load(Ordering::Relaxed);
    let mut receive_s = if last_rx > start_nanos {
        Duration::from_nanos(last_rx - start_nanos).as_secs_f64()
    } else {
        publish_s
    };
    if args.count.is_none() {
        // Deliveries that stopped early do not shorten the run either.
        receive_s = receive_s.max(told_to_stop);
    }
    let histogram = shared.latencies.merged()?;
    let inputs = report::Inputs {
        broker: addr.to_string(),
        mqtt: match args.mqtt {
            Mqtt::V311 => "3.1.1".to_owned(),
            Mqtt::V5 => "5".to_owned(),
        },
        publishers: args.publishers as usize,
        subscribers,
        idle: args.idle as usize,
        payload_size: args.size.max(HEADER_LEN),
        publish_s,
        send_s,
        receive_s,
        warmup_s: warmup.as_secs_f64(),
        connect_s,
        rss: (rss_before, rss_after),
        cpu,
        timeline,
    };
    let report = report::build(inputs, &pubs, &subs, &topics, &filters, &histogram, errors);
    if let Some(path) = &args.plot {
        plot::write(path, &histogram, &report.timeline)?;
    }
    if args.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{json}");
    } else if args.csv {
        print!("{}", report.csv());
    } else {
        print!("{}", report.text());
    }
    if let Some(shortfall) = rate_shortfall(args.rate, args.publishers, args.count, &report) {
        warn(&shortfall);
    }
    if warmup > Duration::ZERO && report.measured_sent == 0 && report.sent > 0 {
        warn(&format!(
            "--warmup {}: the run ({}) was no longer than the warm-up; nothing was measured \
             (no throughput, no latency)",
            show(args.warmup),
            stats::show_seconds(send_s)
        ));
    }
    exit_status(&report)
}

/// The outcome of a run for the exit status (see [`EXIT_STATUS_HELP`]).
fn exit_status(report: &stats::Report) -> Result<(), Failure> {
    if report.errors > 0 {
        return Err(Failure {
            message: format!(
                "{} error(s), first: {}",
                report.errors,
                report.error_samples.first().map_or("", String::as_str)
            ),
            code: 1,
        });
    }
    match report.lost_acknowledged() {
        0 => Ok(()),
        lost => Err(Failure {
            message: format!(
                "{lost} acknowledged QoS 1/2 deliveries never reached their subscriber"
            ),
            code: LOST_EXIT,
        }),
    }
}

/// A warning when the publishers sent less than 95% of what `--rate`
/// asked: with `--duration`, fewer messages than were due before
/// publishing stopped (`sent` against `sent + unsent_due`); with `--count`
/// (every message is sent, late or not), a sent rate over the sending
/// window of at least half a second below the rate asked.
fn rate_shortfall(
    rate: f64,
    publishers: u32,
    count: Option<u64>,
    report: &stats::Report,
) -> Option<String> {
    let asked = rate * f64::from(publishers);
    if asked <= 0.0 {
        return None;
    }
    if count.is_none() {
        let due = report.sent.saturating_add(report.unsent_due);
        return (due > 0 && (report.sent as f64) < 0.95 * due as f64).then(|| {
            format!(
                "--rate {}: the publishers sent {} of the {due} messages due ({:.0} msg/s of \
                 the {asked:.0} asked); they fell behind: the wait is in the latency of what \
                 they sent late, and the {} due but not sent when publishing stopped are \
                 latency samples of their wait (\"unsent_due\")",
                show(rate),
                report.sent,
                report.sent_msgs_per_s,
                report.unsent_due
            )
        });
    }
    let window_s = report.send_s - report.warmup_s;
    let achieved = report.sent_msgs_per_s;
    (window_s >= 0.5 && achieved < 0.95 * asked).then(|| {
        format!(
            "--rate {}: the publishers sent {achieved:.0} msg/s of the {asked:.0} asked; \
             they fell behind (the wait is in the latency of what they sent)",
            show(rate)
        )
    })
}

/// Prints a warning on stderr.
fn warn(message: &str) {
    eprintln!("fulmar bench: warning: {message}");
}

/// Sleeps one tick, or until `deadline` if that is sooner.
async fn tick_until(deadline: Option<Instant>) {
    let tick = Instant::now() + TICK;
    let wake = deadline.map_or(tick, |end| end.min(tick));
    tokio::time::sleep_until(wake.into()).await;
}

/// Runs `work` until `deadline` (for ever without one); `None` if the
/// deadline came first.
async fn within<F: std::future::Future>(deadline: Option<Instant>, work: F) -> Option<F::Output> {
    let until = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        output = work => Some(output),
        () = until => None,
    }
}

/// The longest time between two messages of a publisher: `--rate` below one
/// message a year is refused.
const MAX_INTERVAL: Duration = Duration::from_secs(365 * 24 * 3600);

/// `value` seconds of flag `flag` as a duration: a number, not negative
/// (nor zero unless `zero_ok`), within a duration's range.
fn seconds(flag: &str, value: f64, zero_ok: bool) -> Result<Duration, String> {
    let what = if zero_ok { "0 or more" } else { "more than 0" };
    match Duration::try_from_secs_f64(value) {
        Ok(d) if zero_ok || !d.is_zero() => Ok(d),
        Err(_) if value.is_finite() && value > 0.0 => Err(format!(
            "{flag} {}: too many seconds (at most {})",
            show(value),
            u64::MAX
        )),
        _ => Err(format!(
            "{flag} {}: must be a number of seconds, {what}",
            show(value)
        )),
    }
}

/// The time between two messages of a publisher at `rate` messages per
/// second; `None` for 0 (as fast as possible).
fn rate_interval(rate: f64) -> Result<Option<Duration>, String> {
    if !rate.is_finite() || rate < 0.0 {
        return Err(format!(
            "--rate {}: must be a number of messages per second, 0 for no limit",
            show(rate)
        ));
    }
    if rate == 0.0 {
        return Ok(None);
    }
    match Duration::try_from_secs_f64(1.0 / rate) {
        Ok(interval) if interval <= MAX_INTERVAL => Ok(Some(interval)),
        _ => Err(format!(
            "--rate {}: at least one message a year ({:.1e} per second), or 0 for no limit",
            show(rate),
            1.0 / MAX_INTERVAL.as_secs_f64()
        )),
    }
}

/// A flag's number as written, in scientific notation when very large or small.
fn show(value: f64) -> String {
    let magnitude = value.abs();
    if value.is_finite() && magnitude != 0.0 && !(1e-4..1e9).contains(&magnitude) {
        format!("{value:e}")
    } else {
        format!("{value}")
    }
}

/// When `n` connection attempts, `concurrency` at a time and each given up
/// after `timeout`, have all reported at the latest (with a second to
/// spare); `None` beyond the clock's range.
fn ready_deadline(n: usize, concurrency: usize, timeout: Duration) -> Option<Instant> {
    let rounds = n.div_ceil(concurrency.max(1)).saturating_add(1);
    let rounds = u32::try_from(rounds).unwrap_or(u32::MAX);
    Instant::now().checked_add(
        timeout
            .saturating_mul(rounds)
            .saturating_add(Duration::from_secs(1)),
    )
}

/// Waits for `n` readiness reports, collecting failures, until `deadline`
/// (a report that never comes counts as a failure then).
async fn await_ready(
    ready: &mut mpsc::UnboundedReceiver<Result<(), String>>,
    n: usize,
    deadline: Option<Instant>,
    errors: &mut Vec<String>,
) {
    let until = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until);
    for done in 0..n {
        tokio::select! {
            report = ready.recv() => match report {
                Some(Ok(())) => {}
                Some(Err(e)) => errors.push(e),
                None => return,
            },
            () = &mut until => {
                errors.push(format!("{} connections did not report in time", n - done));
                return;
            }
        }
    }
}

/// Warns when `connections` need more file descriptors than the soft
/// limit lets this process open (Linux: /proc/self/limits), instead of
/// letting the connections beyond it fail one by one.
fn warn_about_open_files(connections: usize) {
    let Some((soft, hard)) = open_files_limit() else {
        return;
    };
    // A few more for the runtime, stdio and the broker's /proc file.
    let needed = u64::try_from(connections)
        .unwrap_or(u64::MAX)
        .saturating_add(32);
    if needed > soft {
        eprintln!(
            "fulmar bench: warning: {connections} connections need about {needed} file \
             descriptors, over the soft limit of {soft} (hard limit {hard}): raise it with \
             `ulimit -n`"
        );
    }
}

/// The soft and hard limits on open files, as /proc/self/limits gives
/// them ("unlimited" as `u64::MAX`).
fn open_files_limit() -> Option<(u64, String)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files_limit(&limits)
}

fn parse_open_files_limit(limits: &str) -> Option<(u64, String)> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut fields = line.trim_start_matches("Max open files").split_whitespace();
    let parse = |field: &str| match field {
        "unlimited" => Some(u64::MAX),
        number => number.parse().ok(),
    };
    let soft = parse(fields.next()?)?;
    let hard = fields.next()?.to_owned();
    Some((soft, hard))
}

/// The progress bar: over the message count (with `--count`) or over the
/// duration in milliseconds; hidden without a terminal.
struct Progress {
    bar: ProgressBar,
    by_time: bool,
}

impl Progress {
    fn new(total_messages: Option<u64>, duration: Duration) -> Self {
        let by_time = total_messages.is_none();
        if !std::io::stderr().is_terminal() {
            return Self {
                bar: ProgressBar::hidden(),
                by_time,
            };
        }
        let len = total_messages
            .unwrap_or_else(|| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
        let bar = ProgressBar::new(len.max(1));
        if let Ok(style) = ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {msg}") {
            bar.set_style(style);
        }
        Self { bar, by_time }
    }
}

/// Records one timeline point and updates the bar.
fn sample(
    shared: &Shared,
    last: &mut (u64, u64, Instant),
    start: Instant,
    timeline: &mut Vec<(f64, f64, f64)>,
    progress: &Progress,
) {
    let sent = shared.sent.load(Ordering::Relaxed);
    let received = shared.received.load(Ordering::Relaxed);
    let now = Instant::now();
    let dt = (now - last.2).as_secs_f64().max(1e-9);
    let sent_rate = sent.saturating_sub(last.0) as f64 / dt;
    let received_rate = received.saturating_sub(last.1) as f64 / dt;
    timeline.push(((now - start).as_secs_f64(), sent_rate, received_rate));
    *last = (sent, received, now);
    let position = if progress.by_time {
        u64::try_from((now - start).as_millis()).unwrap_or(u64::MAX)
    } else {
        sent
    };
    progress.bar.set_position(position);
    progress.bar.set_message(format!(
        "sent {sent_rate:.0} msg/s, received {received_rate:.0} msg/s"
    ));
}

/// The first address of `host:port`.
async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))
}

/// VmRSS of a process in kB.
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_flags_are_checked() {
        assert_eq!(seconds("-d", 1.5, false), Ok(Duration::from_millis(1500)));
        assert_eq!(seconds("--drain-timeout", 0.0, true), Ok(Duration::ZERO));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e300] {
            let e = seconds("-d", bad, false).unwrap_err();
            assert!(e.starts_with("-d "), "{e}");
        }
        assert_eq!(show(1e300), "1e300");
        assert_eq!(show(1.5), "1.5");
        assert_eq!(show(-1e-30), "-1e-30");
        assert_eq!(rate_interval(0.0), Ok(None));
        assert_eq!(rate_interval(4.0), Ok(Some(Duration::from_millis(250))));
        assert_eq!(rate_interval(1e300), Ok(Some(Duration::ZERO)));
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e-30, 1e-9] {
            assert!(rate_interval(bad).is_err(), "{bad}");
        }
    }

    /// The --rate shortfall: with --duration, sent against due (sent and
    /// unsent_due), whatever the wait for the last acknowledgements; with
    /// --count, the sent rate over the sending window.
    #[test]
    fn a_rate_shortfall_compares_sent_with_due() {
        let mut report = stats::Report {
            sent: 4961,
            unsent_due: 39,
            sent_msgs_per_s: 992.2,
            send_s: 5.0,
            duration_s: 6.45,
            ..stats::Report::default()
        };
        assert_eq!(rate_shortfall(1000.0, 1, None, &report), None);
        assert_eq!(rate_shortfall(0.0, 1, None, &report), None);
        report.unsent_due = 1039;
        let warning = rate_shortfall(1000.0, 1, None, &report).unwrap();
        assert!(
            warning.contains("sent 4961 of the 6000 messages due"),
            "{warning}"
        );
        // --count: 1000 messages in 2 s at --rate 1000 asked.
        let by_count = stats::Report {
            sent: 1000,
            sent_msgs_per_s: 500.0,
            send_s: 2.0,
            ..stats::Report::default()
        };
        assert!(rate_shortfall(1000.0, 1, Some(1000), &by_count).is_some());
        assert_eq!(rate_shortfall(500.0, 1, Some(1000), &by_count), None);
    }

    #[test]
    fn the_ready_deadline_saturates() {
        assert!(ready_deadline(10, 0, Duration::from_secs(1)).is_some());
        assert_eq!(ready_deadline(usize::MAX, 1, Duration::MAX), None);
    }

    #[test]
    fn the_open_files_limit_is_read() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max cpu time              unlimited            unlimited            seconds\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(
            parse_open_files_limit(limits),
            Some((1024, "524288".to_owned()))
        );
        assert_eq!(
            parse_open_files_limit("Max open files  unlimited  unlimited  files"),
            Some((u64::MAX, "unlimited".to_owned()))
        );
        assert_eq!(parse_open_files_limit(""), None);
    }
}
