//! The three kinds of benchmark connection, each one tokio task: publishers,
//! subscribers and idle connections.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fulmar_codec::{
    MqttString, PacketId, ProtocolVersion, Publish, PublishProperties, QoS, SubscribeProperties,
    SubscriptionOptions,
};
use fulmar_session::{Config, Event};
use tokio::sync::{Semaphore, mpsc, watch};

use super::Phase;
use super::conn::{Link, Tls, Wake};
use super::stats::{HEADER_LEN, Header, Latencies, SeqSet, micros, read_header, write_header};

/// A publisher stops generating while this many bytes wait to be written.
const HIGH_WATER: usize = 64 * 1024;
/// Payloads of at least this size are reused once sent and acknowledged
/// (see [`Payloads`]); smaller ones are cheaper to allocate.
const REUSE_PAYLOAD: usize = 4 * 1024;
/// Sent payloads kept for reuse, at most.
const PAYLOAD_POOL: usize = 64;
/// Latencies buffered by a subscriber before they go into a shared histogram.
const LATENCY_BATCH: usize = 256;

/// State shared by every connection of a run.
pub(super) struct Shared {
    /// Timestamps in payloads are nanoseconds since this instant.
    pub(super) base: Instant,
    /// This run's random identifier, in every payload header.
    pub(super) run: u64,
    /// Messages handed to sessions by publishers.
    pub(super) sent: AtomicU64,
    /// Messages handed to its session by each publisher, by index: a header
    /// naming another publisher or a later sequence number is not ours.
    pub(super) sent_by: Vec<AtomicU64>,
    /// Deliveries of this run's messages, each counted once per subscriber
    /// (duplicates are not): the timeline's received rate.
    pub(super) received: AtomicU64,
    /// Nanoseconds since `base` of the latest first delivery of a message
    /// sent after the warm-up.
    pub(super) last_received: AtomicU64,
    /// Nanoseconds since `base` from which messages count (by their send
    /// timestamp) in latency and throughput: the end of the warm-up.
    pub(super) measure_from: AtomicU64,
    /// Nanoseconds since `base` of the latest send, write or
    /// acknowledgement of any publisher: how the coordinator tells a stall.
    pub(super) activity: AtomicU64,
    /// Nanoseconds since `base` at which publishing stops with
    /// `--duration` (`u64::MAX` with `--count`): a `--rate` publisher sends
    /// only the messages due before it.
    pub(super) stop_at: AtomicU64,
    /// Set by the coordinator before it ends a stalled run: publishers cut
    /// short then do not report a drain timeout of their own.
    pub(super) stalled: AtomicBool,
    /// End-to-end latency.
    pub(super) latencies: Latencies,
}

impl Shared {
    /// State for a run of `publishers` publishers, identified by `run`.
    pub(super) fn new(run: u64, publishers: u32, latencies: Latencies) -> Self {
        Self {
            base: Instant::now(),
            run,
            sent: AtomicU64::new(0),
            sent_by: (0..publishers).map(|_| AtomicU64::new(0)).collect(),
            received: AtomicU64::new(0),
            last_received: AtomicU64::new(0),
            measure_from: AtomicU64::new(0),
            activity: AtomicU64::new(0),
            stop_at: AtomicU64::new(u64::MAX),
            stalled: AtomicBool::new(false),
            latencies,
        }
    }

    /// Nanoseconds since `base`.
    pub(super) fn nanos(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records publisher activity (a send, write or acknowledgement) at
    /// `nanos`.
    fn touch(&self, nanos: u64) {
        self.activity.fetch_max(nanos, Ordering::Relaxed);
    }

    /// The header of `payload` if it is one of this run's messages: this
    /// run's identifier, a publisher of the run, and a sequence number that
    /// publisher has sent. `None` for a foreign message.
    pub(super) fn accept(&self, payload: &[u8]) -> Option<Header> {
        let header = read_header(payload, self.run)?;
        let sent = self
            .sent_by
            .get(usize::try_from(header.publisher).ok()?)?
            .load(Ordering::Acquire);
        (header.seq < sent).then_some(header)
    }

    /// Records that `publisher` handed message `seq` to its session.
    fn record_sent(&self, publisher: u32, seq: u64) {
        if let Some(count) = usize::try_from(publisher)
            .ok()
            .and_then(|i| self.sent_by.get(i))
        {
            count.fetch_max(seq.saturating_add(1), Ordering::Release);
        }
        self.sent.fetch_add(1, Ordering::Relaxed);
    }
}

/// How every connection connects.
#[derive(Clone)]
pub(super) struct ConnectPlan {
    /// Broker address.
    pub(super) addr: SocketAddr,
    /// Protocol version.
    pub(super) version: ProtocolVersion,
    /// Keep alive in seconds.
    pub(super) keep_alive: u16,
    /// Subscribers keep their sessions (until the end of the run).
    pub(super) persistent: bool,
    /// Our outbound in-flight window for QoS 1/2.
    pub(super) inflight: u16,
    /// How long one connection may take to connect (and subscribe).
    pub(super) timeout: Duration,
    /// TLS over every connection.
    pub(super) tls: Option<Arc<Tls>>,
    /// Limits concurrent connection attempts (listen backlogs are finite).
    pub(super) gate: Arc<Semaphore>,
    /// Where each connection reports that it is connected (and subscribed).
    pub(super) ready: mpsc::UnboundedSender<Result<(), String>>,
}

impl ConnectPlan {
    /// Connects (and subscribes) within the connect timeout; a connection
    /// without subscription always starts (and ends) a clean session.
    async fn open(
        &self,
        client_id: String,
        subscribe: Option<(&str, QoS)>,
    ) -> Result<Link, String> {
        let _permit = self
            .gate
            .acquire()
            .await
            .map_err(|_| "connect gate closed".to_owned())?;
        tokio::time::timeout(self.timeout, self.open_now(client_id, subscribe))
            .await
            .map_err(|_| {
                format!(
                    "connect to {}: timed out after {:?}",
                    self.addr, self.timeout
                )
            })?
    }

    async fn open_now(
        &self,
        client_id: String,
        subscribe: Option<(&str, QoS)>,
    ) -> Result<Link, String> {
        let inflight =
            std::num::NonZeroU16::new(self.inflight).unwrap_or(std::num::NonZeroU16::MIN);
        let config = Config {
            // Clean sessions with room for everything the broker may send.
            receive_maximum: std::num::NonZeroU16::MAX,
            max_inflight: inflight,
            max_pending: usize::from(self.inflight) + 16,
            connect_timeout: Some(self.timeout),
            outbound_topic_aliases: false,
            ..Config::default()
        };
        let mut link = Link::connect(
            self.addr,
            self.tls.as_deref(),
            client_id,
            self.version,
            config,
            self.keep_alive,
            self.persistent && subscribe.is_some(),
        )
        .await?;
        if let Some((filter, asked)) = subscribe {
            link.session
                .subscribe(
                    vec![(
                        MqttString::from(filter.to_owned()),
                        SubscriptionOptions::new(asked),
                    )],
                    SubscribeProperties::default(),
                    Instant::now(),
                )
                .map_err(|e| e.to_string())?;
            'acked: loop {
                link.encode_transmits()?;
                while let Some(event) = link.session.poll_event() {
                    if let Event::Disconnected { reason_code, .. } = event {
                        return Err(format!("disconnected before SUBACK: {reason_code:?}"));
                    }
                    if let Event::SubAck(ack) = event {
                        match ack.reason_codes.first().and_then(|c| c.granted_qos()) {
                            Some(granted) if granted >= asked => break 'acked,
                            // What such a subscriber misses would count as
                            // lost QoS 1/2 messages.
                            Some(granted) => {
                                return Err(format!(
                                    "subscription to {filter}: the broker granted QoS {}, \
                                     less than the QoS {} asked (publish at most at the \
                                     broker's maximum with -q)",
                                    granted as u8, asked as u8
                                ));
                            }
                            None => return Err(format!("subscription to {filter} refused")),
                        }
                    }
                }
                link.step(None, None).await?;
            }
        }
        Ok(link)
    }

    /// Connects (and subscribes), reports readiness, and returns the link.
    async fn open_and_report(
        &self,
        client_id: String,
        subscribe: Option<(&str, QoS)>,
    ) -> Result<Link, String> {
        let opened = self.open(client_id, subscribe).await;
        // The coordinator may have given up already; nothing to do then.
        let _ = self
            .ready
            .send(opened.as_ref().map(|_| ()).map_err(Clone::clone));
        opened
    }
}

/// Serves the connection until the phase reaches `until`.
async fn wait_for(
    link: &mut Link,
    phase: &mut watch::Receiver<Phase>,
    until: Phase,
) -> Result<(), String> {
    loop {
        if *phase.borrow_and_update() >= until {
            return Ok(());
        }
        link.encode_transmits()?;
        link.step(None, Some(phase)).await?;
    }
}

/// What one publisher does.
pub(super) struct PubPlan {
    /// Index, written into each payload.
    pub(super) index: u32,
    /// Client identifier.
    pub(super) client_id: String,
    /// Topic name.
    pub(super) topic: String,
    /// QoS of every message.
    pub(super) qos: QoS,
    /// Messages to send, or until the phase says stop.
    pub(super) count: Option<u64>,
    /// Time between messages; `None`: as fast as possible.
    pub(super) interval: Option<Duration>,
    /// Payload bytes (at least [`HEADER_LEN`]).
    pub(super) payload_size: usize,
    /// Properties of every message (MQTT 5.0).
    pub(super) properties: PublishProperties,
}

/// What one publisher did.
pub(super) struct PubResult {
    /// Its index.
    pub(super) index: u32,
    /// Its QoS.
    pub(super) qos: QoS,
    /// Messages handed to the session.
    pub(super) sent: u64,
    /// Of those, messages sent after the warm-up (by send timestamp).
    pub(super) measured: u64,
    /// QoS 1/2: sequence numbers acknowledged with a success code.
    pub(super) acked: SeqSet,
    /// QoS 1/2: messages acknowledged with an error reason code, by code.
    pub(super) rejected: BTreeMap<String, u64>,
    /// Nanoseconds since [`Shared::base`] of its last send, write or
    /// acknowledgement (0: none): where its publishing ended.
    pub(super) last_nanos: u64,
    /// Nanoseconds since [`Shared::base`] of its last send (0: none): where
    /// its sending ended, the sent rate's window.
    pub(super) last_sent_nanos: u64,
    /// With `--rate --duration`: messages due before publishing stopped
    /// that it had not sent (it was held up); each is a latency sample (see
    /// [`Backlog`]).
    pub(super) unsent_due: u64,
    /// What it left undone when a stalled run ended it (QoS 1/2 messages
    /// unacknowledged, bytes unwritten): part of the run's stall error,
    /// not an error of its own.
    pub(super) cut_short: Option<(usize, usize)>,
    /// What went wrong, if anything.
    pub(super) error: Option<String>,
}

/// Runs one publisher task to the end.
pub(super) async fn publisher(
    connect: ConnectPlan,
    plan: PubPlan,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) -> PubResult {
    let mut result = PubResult {
        index: plan.index,
        qos: plan.qos,
        sent: 0,
        measured: 0,
        acked: SeqSet::default(),
        rejected: BTreeMap::new(),
        last_nanos: 0,
        last_sent_nanos: 0,
        unsent_due: 0,
        cut_short: None,
        error: None,
    };
    let mut backlog = None;
    let outcome = async {
        let mut link = connect
            .open_and_report(plan.client_id.clone(), None)
            .await?;
        wait_for(&mut link, &mut phase, Phase::Running).await?;
        publish_loop(
            &mut link,
            &plan,
            &shared,
            &mut phase,
            &mut result,
            &mut backlog,
        )
        .await?;
        if result.cut_short.is_some() {
            // A stalled broker may not read a DISCONNECT: the socket just
            // closes (as on a drain timeout).
            return Ok(());
        }
        link.disconnect().await
    }
    .await;
    // A backlog it never had room for again: its wait lasted at least
    // until the publisher gave up.
    if let Some(backlog) = backlog {
        result.unsent_due += backlog.record(&shared, plan.index, shared.nanos());
    }
    result.error = outcome.err();
    result
}

async fn publish_loop(
    link: &mut Link,
    plan: &PubPlan,
    shared: &Shared,
    phase: &mut watch::Receiver<Phase>,
    result: &mut PubResult,
    backlog: &mut Option<Backlog>,
) -> Result<(), String> {
    let topic = MqttString::from(plan.topic.clone());
    let size = plan.payload_size.max(HEADER_LEN);
    let limit = plan.count.unwrap_or(u64::MAX);
    let mut ids: HashMap<PacketId, u64> = HashMap::new();
    let mut payloads = Payloads::default();
    let mut schedule = plan
        .interval
        .map(|interval| Schedule::new(shared.nanos(), interval));
    let measure_from = shared.measure_from.load(Ordering::Relaxed);
    let stop_at = shared.stop_at.load(Ordering::Relaxed);
    let mut backlog_taken = false;
    loop {
        let current = *phase.borrow_and_update();
        if current >= Phase::Stop && !backlog_taken {
            // What was due before publishing stopped and is not sent.
            backlog_taken = true;
            *backlog = schedule.and_then(|s| {
                Backlog::new(s, stop_at, limit.saturating_sub(result.sent), measure_from)
            });
        }
        if current >= Phase::Finish {
            let left = (
                link.session.inflight_len() + link.session.pending_len(),
                link.pending_write(),
            );
            if shared.stalled.load(Ordering::Relaxed) {
                // The coordinator's stall error says it once for all.
                result.cut_short = Some(left);
                return Ok(());
            }
            return Err(format!(
                "drain timeout: {} QoS 1/2 messages unacknowledged, {} bytes unwritten",
                left.0, left.1
            ));
        }
        let stopping = current >= Phase::Stop || result.sent >= limit;
        let window = link.session.send_window().max(1);
        let room = |link: &Link| {
            link.pending_write() < HIGH_WATER
                && (plan.qos == QoS::AtMostOnce
                    || link.session.inflight_len() + link.session.pending_len() < window)
        };
        if !stopping {
            let now = shared.nanos();
            while result.sent < limit
                && room(link)
                && schedule.is_none_or(|s| s.due(now) && s.before(stop_at))
            {
                // With --rate, the time the message was due: a publisher
                // held up (by the broker's flow control or a full socket)
                // sends its backlog stamped with when each message should
                // have gone, so latency is response time, not service time.
                let nanos = match &mut schedule {
                    Some(schedule) => schedule.take(now),
                    None => shared.nanos(),
                };
                let header = Header {
                    nanos,
                    publisher: plan.index,
                    seq: result.sent,
                };
                let payload = payloads.next(size, |p| write_header(p, shared.run, header));
                let mut message = Publish::new(topic.clone(), payload);
                message.qos = plan.qos;
                message.properties = plan.properties.clone();
                let id = link
                    .session
                    .publish(message, Instant::now())
                    .map_err(|e| format!("publish: {e}"))?;
                if let Some(id) = id {
                    ids.insert(id, result.sent);
                }
                // Before the bytes are written: a subscriber accepts the
                // message only once this says it was sent.
                shared.record_sent(plan.index, result.sent);
                result.sent += 1;
                if header.nanos >= measure_from {
                    result.measured += 1;
                }
                result.last_nanos = now;
                result.last_sent_nanos = now;
                shared.touch(now);
                link.encode_transmits()?;
            }
        }
        link.encode_transmits()?;
        while let Some(event) = link.session.poll_event() {
            match event {
                Event::PublishComplete {
                    packet_id,
                    reason_code,
                    ..
                } => {
                    if let Some(seq) = ids.remove(&packet_id) {
                        result.last_nanos = shared.nanos();
                        shared.touch(result.last_nanos);
                        if reason_code.is_error() {
                            *result
                                .rejected
                                .entry(format!("{reason_code:?}"))
                                .or_default() += 1;
                        } else {
                            result.acked.insert(seq);
                        }
                    }
                }
                Event::PublishDropped { packet_id, reason } => {
                    if let Some(id) = packet_id {
                        ids.remove(&id);
                    }
                    return Err(format!("message dropped by the session: {reason:?}"));
                }
                Event::Disconnected { reason_code, .. } => {
                    return Err(format!("disconnected by the broker: {reason_code:?}"));
                }
                _ => {}
            }
        }
        // Room again after publishing stopped: the backlog could have gone
        // now, so its wait ends here.
        if stopping
            && room(link)
            && let Some(due) = backlog.take()
        {
            result.unsent_due += due.record(shared, plan.index, shared.nanos());
        }
        let idle = link.session.inflight_len() == 0
            && link.session.pending_len() == 0
            && link.pending_write() == 0;
        if (stopping || result.sent >= limit) && idle {
            return Ok(());
        }
        let deadline = schedule
            .filter(|s| !stopping && room(link) && s.before(stop_at))
            .and_then(|s| s.instant(shared.base));
        if link.step(deadline, Some(phase)).await? == Wake::Wrote {
            result.last_nanos = shared.nanos();
            shared.touch(result.last_nanos);
        }
    }
}

/// Lateness a `--rate` message is forgiven: the resolution of the tokio
/// timer, which wakes a publisher up to a millisecond after the time asked.
/// Without it every message would carry the load generator's own timer
/// delay (p50 about 1 ms higher, whatever the broker).
pub(super) const TIMER_SLACK_NANOS: u64 = 1_000_000;

/// When the messages of a `--rate` publisher are due, in nanoseconds since
/// [`Shared::base`]: one every interval from the start, whether or not the
/// earlier ones could go on time (a late publisher catches up as fast as it
/// can, and each message carries the time it was due, or up to
/// [`TIMER_SLACK_NANOS`] later when it goes later: never before it).
#[derive(Debug, Clone, Copy)]
pub(super) struct Schedule {
    /// When the next message is due.
    next: u64,
    /// Nanoseconds between two messages.
    interval: u64,
}

impl Schedule {
    /// The first message due at `start`, then one every `interval`.
    pub(super) fn new(start: u64, interval: Duration) -> Self {
        Self {
            next: start,
            interval: u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// Whether the next message is due at `now`.
    pub(super) fn due(&self, now: u64) -> bool {
        self.next <= now
    }

    /// Whether the next message is due before `end`.
    pub(super) fn before(&self, end: u64) -> bool {
        self.next < end
    }

    /// The send timestamp of the next message, sent at `now`: the time it
    /// was due, plus up to [`TIMER_SLACK_NANOS`] of its lateness (at most
    /// `now`). The one after it is next.
    pub(super) fn take(&mut self, now: u64) -> u64 {
        let due = self.next;
        self.next = self.next.saturating_add(self.interval);
        due.saturating_add(TIMER_SLACK_NANOS).min(now).max(due)
    }

    /// When the next message is due, on the clock of `base`; `None` beyond
    /// the clock's range.
    fn instant(&self, base: Instant) -> Option<tokio::time::Instant> {
        base.checked_add(Duration::from_nanos(self.next))
            .map(tokio::time::Instant::from_std)
    }
}

/// Coordinated omission at the end of a `--rate --duration` run: the
/// messages a held-up publisher still owed when publishing stopped (due
/// before [`Shared::stop_at`], not sent). They are not sent; each counts in
/// [`PubResult::unsent_due`] and as a latency sample of its wait: from when
/// it was due (less the timer slack, as [`Schedule::take`] stamps) to when
/// the publisher had room to send again after publishing stopped (its
/// in-flight window or socket no longer full), or gave up. A lower bound of
/// the latency it would have had: the broker's own time is not in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Backlog {
    /// When the first of them was due, in nanoseconds since [`Shared::base`].
    first: u64,
    /// Nanoseconds between two of them.
    interval: u64,
    /// How many.
    count: u64,
    /// Those due before this (the warm-up) are not latency samples.
    measure_from: u64,
}

impl Backlog {
    /// The messages of `schedule` due before `stop_at`, at most `limit`;
    /// `None` when there are none (or the interval is 0: no schedule to
    /// owe).
    pub(super) fn new(
        schedule: Schedule,
        stop_at: u64,
        limit: u64,
        measure_from: u64,
    ) -> Option<Self> {
        if schedule.interval == 0 || !schedule.before(stop_at) {
            return None;
        }
        let count = (stop_at - schedule.next)
            .div_ceil(schedule.interval)
            .min(limit);
        (count > 0).then_some(Self {
            first: schedule.next,
            interval: schedule.interval,
            count,
            measure_from,
        })
    }

    /// Records the latency samples of the backlog, whose wait ended at
    /// `now`, into shard `key` of the shared histograms; returns how many
    /// messages it held.
    pub(super) fn record(&self, shared: &Shared, key: u32, now: u64) -> u64 {
        let key = usize::try_from(key).unwrap_or(0);
        let mut batch = Vec::with_capacity(LATENCY_BATCH);
        for k in 0..self.count {
            let due = self.first.saturating_add(k.saturating_mul(self.interval));
            if due < self.measure_from {
                continue;
            }
            let stamp = due.saturating_add(TIMER_SLACK_NANOS).min(now).max(due);
            batch.push(micros(Duration::from_nanos(now.saturating_sub(stamp))));
            if batch.len() >= LATENCY_BATCH {
                shared.latencies.record(key, &mut batch);
            }
        }
        shared.latencies.record(key, &mut batch);
        self.count
    }
}

/// Payload buffers of one publisher. A large payload is written into a
/// buffer sent before, once nothing else holds it (the session has its
/// acknowledgement and the bytes are written), instead of a new zeroed one:
/// allocating and zeroing 1 MiB per message cost the load generator more
/// CPU than the broker's own work in the 1 MiB scenarios, on the cores
/// both share.
#[derive(Default)]
struct Payloads {
    /// Sent payloads, oldest first.
    sent: VecDeque<Bytes>,
}

impl Payloads {
    /// A payload of `size` bytes, `fill` writing its header.
    fn next(&mut self, size: usize, fill: impl FnOnce(&mut [u8])) -> Bytes {
        if size < REUSE_PAYLOAD {
            let mut payload = BytesMut::zeroed(size);
            fill(&mut payload);
            return payload.freeze();
        }
        let mut payload = match self.sent.pop_front().map(Bytes::try_into_mut) {
            Some(Ok(reused)) if reused.len() == size => reused,
            Some(Err(busy)) => {
                self.sent.push_front(busy);
                BytesMut::zeroed(size)
            }
            _ => BytesMut::zeroed(size),
        };
        fill(&mut payload);
        let payload = payload.freeze();
        if self.sent.len() < PAYLOAD_POOL {
            self.sent.push_back(payload.clone());
        }
        payload
    }
}

/// What one subscriber does.
pub(super) struct SubPlan {
    /// Index (for histogram sharding).
    pub(super) index: u32,
    /// Client identifier.
    pub(super) client_id: String,
    /// Topic filter.
    pub(super) filter: String,
    /// Maximum QoS requested.
    pub(super) qos: QoS,
}

/// What one subscriber received.
#[derive(Default)]
pub(super) struct SubResult {
    /// Sequence numbers received, per publisher index.
    pub(super) received: HashMap<u32, SeqSet>,
    /// Repeated deliveries, per publisher index.
    pub(super) duplicates: HashMap<u32, u64>,
    /// First deliveries of messages sent after the warm-up: one latency
    /// sample each.
    pub(super) measured: u64,
    /// Messages that are not this run's (see [`Shared::accept`]).
    pub(super) foreign: u64,
    /// What went wrong, if anything.
    pub(super) error: Option<String>,
}

/// Runs one subscriber task to the end.
pub(super) async fn subscriber(
    connect: ConnectPlan,
    plan: SubPlan,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) -> SubResult {
    let mut result = SubResult::default();
    let mut batch = Vec::with_capacity(LATENCY_BATCH);
    let shard = usize::try_from(plan.index).unwrap_or(0);
    let outcome = async {
        let mut link = connect
            .open_and_report(plan.client_id.clone(), Some((&plan.filter, plan.qos)))
            .await?;
        loop {
            if *phase.borrow_and_update() >= Phase::Finish {
                break;
            }
            while let Some(event) = link.session.poll_event() {
                match event {
                    Event::Message(message) => {
                        let now = shared.nanos();
                        let Some(header) = shared.accept(&message.payload) else {
                            result.foreign += 1;
                            continue;
                        };
                        let publisher = header.publisher;
                        let first = result
                            .received
                            .entry(publisher)
                            .or_default()
                            .insert(header.seq);
                        if !first {
                            // Neither a latency sample nor throughput.
                            *result.duplicates.entry(publisher).or_default() += 1;
                            continue;
                        }
                        shared.received.fetch_add(1, Ordering::Relaxed);
                        if header.nanos < shared.measure_from.load(Ordering::Relaxed) {
                            continue;
                        }
                        result.measured += 1;
                        shared.last_received.fetch_max(now, Ordering::Relaxed);
                        batch.push(micros(Duration::from_nanos(
                            now.saturating_sub(header.nanos),
                        )));
                        if batch.len() >= LATENCY_BATCH {
                            shared.latencies.record(shard, &mut batch);
                        }
                    }
                    Event::Disconnected { reason_code, .. } => {
                        return Err(format!("disconnected by the broker: {reason_code:?}"));
                    }
                    _ => {}
                }
            }
            link.encode_transmits()?;
            link.step(None, Some(&mut phase)).await?;
        }
        if connect.persistent && connect.version == ProtocolVersion::V5 {
            link.disconnect_ending_session().await
        } else {
            link.disconnect().await
        }
    }
    .await;
    shared.latencies.record(shard, &mut batch);
    // A persistent session must not outlive the run (it stays subscribed,
    // and a later run could resume it): 3.1.1 ends it with a clean-session
    // connection, and so does 5.0 when the DISCONNECT above was not sent.
    let ended = !connect.persistent
        || (connect.version == ProtocolVersion::V5 && outcome.is_ok())
        || match connect.open(plan.client_id.clone(), None).await {
            Ok(link) => link.disconnect().await.is_ok(),
            Err(_) => false,
        };
    result.error = match outcome {
        Err(e) if !ended => Some(format!("{e} (and its session could not be ended)")),
        Err(e) => Some(e),
        Ok(()) if !ended => Some("its persistent session could not be ended".to_owned()),
        Ok(()) => None,
    };
    result
}

/// Runs one idle connection: connects, keeps alive, disconnects at the end.
pub(super) async fn idle(
    connect: ConnectPlan,
    client_id: String,
    mut phase: watch::Receiver<Phase>,
) -> Option<String> {
    let outcome = async {
        let mut link = connect.open_and_report(client_id, None).await?;
        wait_for(&mut link, &mut phase, Phase::Finish).await?;
        link.disconnect().await
    }
    .await;
    outcome.err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_reused_only_when_nobody_holds_them() {
        let mut payloads = Payloads::default();
        let size = REUSE_PAYLOAD * 2;
        let first = payloads.next(size, |p| p[0] = 1);
        let at = first.as_ptr();
        // Still held (in flight): a new buffer.
        let second = payloads.next(size, |p| p[0] = 2);
        assert_ne!(second.as_ptr(), at);
        assert_eq!(first[0], 1, "a payload in flight was written to");
        drop(first);
        // Acknowledged and written: the first buffer again, with its new header.
        let third = payloads.next(size, |p| p[0] = 3);
        assert_eq!(third.as_ptr(), at);
        assert_eq!((third[0], third.len()), (3, size));
        assert_eq!(second[0], 2);
        // Small payloads are not pooled.
        let small = payloads.next(10, |p| p[0] = 4);
        assert_eq!((small[0], small.len()), (4, 10));
        assert_eq!(payloads.sent.len(), 2);
    }

    /// Only this run's messages count: the right run, an existing
    /// publisher, a sequence number that publisher has sent.
    #[test]
    fn foreign_headers_are_refused() {
        let shared = Shared::new(7, 2, Latencies::new(1).unwrap());
        let payload = |run, publisher, seq| {
            let mut p = vec![0u8; HEADER_LEN];
            let header = Header {
                nanos: 1,
                publisher,
                seq,
            };
            write_header(&mut p, run, header);
            p
        };
        assert_eq!(shared.accept(&payload(7, 0, 0)), None, "nothing sent yet");
        shared.record_sent(0, 0);
        shared.record_sent(0, 1);
        shared.record_sent(1, 0);
        assert_eq!(shared.sent.load(Ordering::Relaxed), 3);
        let ok = shared.accept(&payload(7, 0, 1)).unwrap();
        assert_eq!((ok.publisher, ok.seq), (0, 1));
        assert!(shared.accept(&payload(7, 1, 0)).is_some());
        assert_eq!(shared.accept(&payload(7, 0, 2)), None, "not sent yet");
        assert_eq!(shared.accept(&payload(7, 1, u64::MAX)), None);
        assert_eq!(shared.accept(&payload(7, 2, 0)), None, "no publisher 2");
        assert_eq!(shared.accept(&payload(8, 0, 0)), None, "another run");
        assert_eq!(
            shared.accept(b"this is definitely not a bench payload"),
            None
        );
    }

    /// Coordinated omission: a publisher held up for a second at 1000 msg/s
    /// sends its backlog stamped with when each message was due, so the
    /// wait shows in the latency of every message it held up.
    #[test]
    fn a_late_publisher_stamps_the_scheduled_time() {
        let ms = 1_000_000;
        let mut schedule = Schedule::new(5 * ms, Duration::from_millis(1));
        assert!(!schedule.due(4 * ms));
        assert!(schedule.due(5 * ms));
        assert_eq!(schedule.take(5 * ms), 5 * ms);
        assert!(!schedule.due(5 * ms));
        // The timer's own lateness (up to a millisecond) is forgiven.
        assert_eq!(schedule.take(6 * ms + ms / 2), 6 * ms + ms / 2);
        // Stalled until 1 s later: the messages due from 8 ms to 1007 ms
        // (1000) and the one due at 1007 ms itself go, each stamped when
        // it was due (the last one, due now, at now).
        let now = 1007 * ms;
        let mut stamps = Vec::new();
        while schedule.due(now) {
            stamps.push(schedule.take(now));
        }
        assert_eq!(stamps.len(), 1001);
        assert_eq!(stamps.first(), Some(&(8 * ms)));
        assert_eq!(stamps.get(500), Some(&(508 * ms)));
        assert_eq!(stamps.last(), Some(&(1007 * ms)));
        // The first of them shows most of the second it waited.
        assert_eq!(now - stamps[0], 999 * ms);
        // Back on schedule afterwards.
        assert!(!schedule.due(now));
        let base = Instant::now();
        let at = schedule.instant(base).unwrap();
        assert_eq!(
            at.into_std() - base,
            Duration::from_nanos(1008 * ms),
            "the deadline is on the run's clock"
        );
    }

    /// Coordinated omission at the end of a --rate --duration run: the
    /// messages due before the stop that a held-up publisher had not sent
    /// are counted, and each is a latency sample of its wait until the
    /// publisher had room again (less the timer slack, as if sent then).
    #[test]
    fn the_backlog_at_the_stop_is_a_latency_sample_each() {
        let ms = 1_000_000;
        let mut schedule = Schedule::new(0, Duration::from_millis(1));
        // Sent on time until 5 ms (6 messages), then held up; -d stops at 10 ms.
        for t in 0..6 {
            assert!(schedule.before(10 * ms));
            assert_eq!(schedule.take(t * ms), t * ms);
        }
        assert!(schedule.before(10 * ms) && !schedule.before(6 * ms));
        // Due at 6, 7, 8 and 9 ms: 4 unsent; the warm-up ended at 7 ms.
        let backlog = Backlog::new(schedule, 10 * ms, u64::MAX, 7 * ms).unwrap();
        assert_eq!(backlog.count, 4);
        // A -n limit caps it; nothing due before the stop, nothing owed.
        assert_eq!(Backlog::new(schedule, 10 * ms, 2, 0).unwrap().count, 2);
        assert_eq!(Backlog::new(schedule, 6 * ms, u64::MAX, 0), None);
        assert_eq!(Backlog::new(schedule, 10 * ms, 0, 0), None);
        let between = Schedule::new(0, Duration::from_micros(2500));
        assert_eq!(
            Backlog::new(between, 10 * ms, u64::MAX, 0).unwrap().count,
            4
        );
        // Room again 1 s later: 4 counted, the 3 after the warm-up sampled.
        let shared = Shared::new(7, 1, Latencies::new(1).unwrap());
        assert_eq!(backlog.record(&shared, 0, 1009 * ms), 4);
        let h = shared.latencies.merged().unwrap();
        assert_eq!(h.len(), 3);
        // Due at 9 ms, 8 ms, 7 ms, each less the 1 ms slack: 999, 1000,
        // 1001 ms (exact to the histogram's precision).
        assert_eq!(h.min(), h.lowest_equivalent(999_000));
        assert_eq!(h.max(), h.highest_equivalent(1_001_000));
    }

    #[test]
    fn the_pool_is_bounded() {
        let mut payloads = Payloads::default();
        let held: Vec<_> = (0..PAYLOAD_POOL + 10)
            .map(|_| payloads.next(REUSE_PAYLOAD, |_| {}))
            .collect();
        assert_eq!(payloads.sent.len(), PAYLOAD_POOL);
        drop(held);
    }
}
