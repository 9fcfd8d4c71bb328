//! What the benchmark measures: the payload header, per-publisher sequence
//! sets, latency histograms, and the final report (text, JSON, CSV).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Bytes of the header each payload starts with, big-endian: [`MAGIC`]
/// (u32), the run's random identifier (u64), a send timestamp in nanoseconds
/// since the start of the run (u64), the publisher index (u32), and the
/// sequence number (u64). A payload without the magic number and this run's
/// identifier is foreign: another client's, or a retained message of an
/// earlier run.
pub(super) const HEADER_LEN: usize = 32;

/// The first bytes of every benchmark payload.
const MAGIC: u32 = u32::from_be_bytes(*b"fbh1");

/// What the header of one of this run's payloads says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    /// Nanoseconds since the start of the run when it was sent: when it was
    /// due by the `--rate` schedule (so that a publisher held up does not
    /// hide the wait), or when it was created without `--rate`.
    pub(super) nanos: u64,
    /// Index of the publisher.
    pub(super) publisher: u32,
    /// Sequence number within that publisher's messages.
    pub(super) seq: u64,
}

/// Writes the header of run `run` into the first [`HEADER_LEN`] bytes of `payload`.
pub(super) fn write_header(payload: &mut [u8], run: u64, header: Header) {
    let mut bytes = [0u8; HEADER_LEN];
    let fields = MAGIC
        .to_be_bytes()
        .into_iter()
        .chain(run.to_be_bytes())
        .chain(header.nanos.to_be_bytes())
        .chain(header.publisher.to_be_bytes())
        .chain(header.seq.to_be_bytes());
    for (dst, src) in bytes.iter_mut().zip(fields) {
        *dst = src;
    }
    if let Some(dst) = payload.get_mut(..HEADER_LEN) {
        dst.copy_from_slice(&bytes);
    }
}

/// Reads the header of a payload of run `run`: `None` if the payload is too
/// short, lacks the magic number or belongs to another run.
pub(super) fn read_header(payload: &[u8], run: u64) -> Option<Header> {
    let magic = u32::from_be_bytes(payload.get(..4)?.try_into().ok()?);
    let id = u64::from_be_bytes(payload.get(4..12)?.try_into().ok()?);
    if magic != MAGIC || id != run {
        return None;
    }
    Some(Header {
        nanos: u64::from_be_bytes(payload.get(12..20)?.try_into().ok()?),
        publisher: u32::from_be_bytes(payload.get(20..24)?.try_into().ok()?),
        seq: u64::from_be_bytes(payload.get(24..32)?.try_into().ok()?),
    })
}

/// A random u64 from the system's generator: run identifiers and client
/// identifier tags, so that no two runs mistake each other's messages or
/// sessions for their own.
pub(super) fn random_u64() -> Result<u64, String> {
    let rng = ring::rand::SystemRandom::new();
    let bytes: [u8; 8] = ring::rand::generate(&rng)
        .map_err(|_| "no random numbers from the system".to_owned())?
        .expose();
    Ok(u64::from_be_bytes(bytes))
}

/// A growable set of sequence numbers.
#[derive(Debug, Default, Clone)]
pub(super) struct SeqSet {
    words: Vec<u64>,
    len: u64,
}

impl SeqSet {
    /// Adds `seq`; false when it was already there.
    pub(super) fn insert(&mut self, seq: u64) -> bool {
        let Ok(word) = usize::try_from(seq / 64) else {
            return false;
        };
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let bit = 1u64 << (seq % 64);
        match self.words.get_mut(word) {
            Some(w) if *w & bit == 0 => {
                *w |= bit;
                self.len += 1;
                true
            }
            _ => false,
        }
    }

    /// Number of members.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Members of `self` missing from `other`.
    pub(super) fn missing_from(&self, other: &SeqSet) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let o = other.words.get(i).copied().unwrap_or(0);
                u64::from((w & !o).count_ones())
            })
            .sum()
    }
}

/// The largest latency the histograms tell apart: 10 minutes, in µs.
const MAX_LATENCY_US: u64 = 600_000_000;

/// Latency histograms in microseconds, sharded so that thousands of
/// subscribers do not each own one nor contend on a single lock.
pub(super) struct Latencies {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Latencies {
    /// Empty histograms, 3 significant digits, auto-resizing.
    pub(super) fn new(shards: usize) -> Result<Self, String> {
        let shards = (0..shards.max(1))
            .map(|_| Histogram::new(3).map(Mutex::new).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        Ok(Self { shards })
    }

    /// Records a batch of latencies (µs) into shard `key`.
    pub(super) fn record(&self, key: usize, batch: &mut Vec<u64>) {
        let Some(shard) = self.shards.get(key % self.shards.len().max(1)) else {
            return;
        };
        if let Ok(mut h) = shard.lock() {
            for v in batch.drain(..) {
                // Clamped into the bounds, so recording cannot fail.
                let _ = h.record(v.clamp(1, MAX_LATENCY_US));
            }
        }
    }

    /// All shards merged.
    pub(super) fn merged(&self) -> Result<Histogram<u64>, String> {
        let mut all =
            Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3).map_err(|e| e.to_string())?;
        for shard in &self.shards {
            let h = shard.lock().map_err(|_| "poisoned histogram".to_owned())?;
            all.add(&*h).map_err(|e| e.to_string())?;
        }
        Ok(all)
    }
}

/// Losses and duplicates of the messages published at one QoS.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct QosCounts {
    /// QoS of the publishers.
    pub(crate) qos: u8,
    /// Messages handed to the client session (for QoS 0 too: not
    /// necessarily written to the socket yet when the run ends).
    pub(crate) sent: u64,
    /// QoS 1/2: messages the broker acknowledged with a success code.
    pub(crate) acked: u64,
    /// Deliveries expected by the subscribers (each matching subscriber
    /// counts each message once).
    pub(crate) expected: u64,
    /// Deliveries that arrived (duplicates excluded).
    pub(crate) received: u64,
    /// QoS 1/2: acknowledged messages that some matching subscriber never
    /// received; QoS 0: expected minus received (messages handed to the
    /// session, written or not).
    pub(crate) lost: u64,
    /// Deliveries of a message a subscriber had already received.
    pub(crate) duplicated: u64,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct LatencyReport {
    /// Samples.
    pub(crate) count: u64,
    /// Median. Each percentile is the middle of the histogram bucket that
    /// holds it (`median_equivalent`): the exact value below 2048 µs,
    /// within 1/2048 of it above (3 significant digits of precision, no
    /// decimal rounding).
    pub(crate) p50_us: u64,
    /// 90th percentile.
    pub(crate) p90_us: u64,
    /// 99th percentile.
    pub(crate) p99_us: u64,
    /// 99.9th percentile.
    pub(crate) p999_us: u64,
    /// Largest: the upper bound of the highest bucket with a sample
    /// (`highest_equivalent`), never below the largest sample.
    pub(crate) max_us: u64,
    /// Mean.
    pub(crate) mean_us: f64,
}

impl LatencyReport {
    /// Percentiles of `h`.
    pub(super) fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50_us: quantile(h, 0.50),
            p90_us: quantile(h, 0.90),
            p99_us: quantile(h, 0.99),
            p999_us: quantile(h, 0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

/// The value at quantile `q` of `h`: the middle of its bucket.
fn quantile(h: &Histogram<u64>, q: f64) -> u64 {
    h.median_equivalent(h.value_at_quantile(q))
}

/// The outcome of a run.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct Report {
    /// Broker address.
    pub(crate) broker: String,
    /// "3.1.1" or "5".
    pub(crate) mqtt: String,
    /// Publisher, subscriber and idle connection counts.
    pub(crate) publishers: usize,
    /// Subscribers.
    pub(crate) subscribers: usize,
    /// Idle connections.
    pub(crate) idle: usize,
    /// Payload bytes per message.
    pub(crate) payload_size: usize,
    /// Seconds from the start signal until the publishers finished: the
    /// last send, write or acknowledgement of any publisher, and with
    /// `--duration` at least the time they were told to stop (a broker that
    /// stops answering does not shorten it).
    pub(crate) duration_s: f64,
    /// Seconds from the start signal until the last send of any publisher
    /// (with `--duration` at least the time they were told to stop): the
    /// sent rate's window, without the wait for the last acknowledgements.
    pub(crate) send_s: f64,
    /// Seconds from the start signal until the last delivery that counts
    /// (with `--duration` at least until publishing was told to stop).
    pub(crate) receive_s: f64,
    /// Seconds at the start whose messages (by send timestamp) count in
    /// neither latency nor throughput (`--warmup`).
    pub(crate) warmup_s: f64,
    /// Connections opened (CONNACK received) per second during the connect phase.
    pub(crate) connect_rate: f64,
    /// Seconds the connect phase took.
    pub(crate) connect_s: f64,
    /// Messages sent per second: `measured_sent` over `send_s` minus
    /// `warmup_s`.
    pub(crate) sent_msgs_per_s: f64,
    /// Payload MB (10^6 bytes) sent per second.
    pub(crate) sent_mb_per_s: f64,
    /// Messages received per second (all subscribers together, first
    /// deliveries only): `measured_received` over `receive_s` minus
    /// `warmup_s`.
    pub(crate) received_msgs_per_s: f64,
    /// Payload MB received per second.
    pub(crate) received_mb_per_s: f64,
    /// Messages handed to the client sessions (see [`QosCounts::sent`]).
    pub(crate) sent: u64,
    /// Deliveries of this run's messages, each message once per subscriber
    /// (duplicates are in `duplicated`).
    pub(crate) received: u64,
    /// Messages sent after the warm-up: the throughput's numerator.
    pub(crate) measured_sent: u64,
    /// First deliveries of messages sent after the warm-up: the received
    /// throughput's numerator, and the latency samples (with those of
    /// `unsent_due`).
    pub(crate) measured_received: u64,
    /// With `--rate --duration`: messages due before publishing stopped
    /// that a held-up publisher had not sent. Not sent, nor in `sent`;
    /// each (after the warm-up) is a latency sample from when it was due
    /// to when its publisher could have sent it (had room again) or gave
    /// up, a lower bound of its latency.
    pub(crate) unsent_due: u64,
    /// Repeated deliveries, left out of latency and throughput.
    pub(crate) duplicated: u64,
    /// Messages the subscribers received that were not this run's (another
    /// client's, a retained message, a header that names no message sent):
    /// not counted anywhere else.
    pub(crate) foreign: u64,
    /// End-to-end latency.
    pub(crate) latency: LatencyReport,
    /// Per QoS of the publishers.
    pub(crate) qos: Vec<QosCounts>,
    /// Things that went wrong: connections that failed (connect or during
    /// the run), a stalled run, and messages the broker rejected (one error
    /// for all of them). Any makes the exit status 1.
    pub(crate) errors: u64,
    /// The first few error messages.
    pub(crate) error_samples: Vec<String>,
    /// QoS 1/2 messages the broker acknowledged with an error reason code.
    pub(crate) rejected: u64,
    /// `rejected` by reason code.
    pub(crate) rejected_by_reason: BTreeMap<String, u64>,
    /// Broker RSS (kB) before connecting and after all connections were open
    /// (with `--broker-pid`).
    pub(crate) broker_rss_before_kb: Option<u64>,
    /// See `broker_rss_before_kb`.
    pub(crate) broker_rss_after_kb: Option<u64>,
    /// (after - before) / connections, in bytes.
    pub(crate) broker_bytes_per_connection: Option<f64>,
    /// CPU time the broker spent from the start of publishing until the
    /// last delivery (with `--broker-pid`), as the kernel charged it.
    pub(crate) broker_cpu: Option<CpuUse>,
    /// The same for this load generator.
    pub(crate) bench_cpu: Option<CpuUse>,
    /// Messages sent and received per interval of the run: (seconds since
    /// start, sent/s, received/s).
    pub(crate) timeline: Vec<(f64, f64, f64)>,
}

impl Report {
    /// Human-readable summary.
    pub(crate) fn text(&self) -> String {
        let mut out = format!(
            "fulmar bench: {} (MQTT {}), {} publishers, {} subscribers, {} idle, {} B payload\n",
            self.broker, self.mqtt, self.publishers, self.subscribers, self.idle, self.payload_size
        );
        out += &format!(
            "connect   {:.0} conn/s ({} connections in {})\n",
            self.connect_rate,
            self.publishers + self.subscribers + self.idle,
            show_seconds(self.connect_s)
        );
        let warm = |measured: u64, all: u64, secs: f64| {
            if self.warmup_s > 0.0 {
                format!(
                    "{measured} in {} after a {} warm-up; {all} in all",
                    show_seconds((secs - self.warmup_s).max(0.0)),
                    show_seconds(self.warmup_s)
                )
            } else {
                format!("{all} in {}", show_seconds(secs))
            }
        };
        out += &format!(
            "sent      {:>12.0} msg/s {:>10.2} MB/s  ({})\n",
            self.sent_msgs_per_s,
            self.sent_mb_per_s,
            warm(self.measured_sent, self.sent, self.send_s)
        );
        out += &format!(
            "received  {:>12.0} msg/s {:>10.2} MB/s  ({}; first deliveries)\n",
            self.received_msgs_per_s,
            self.received_mb_per_s,
            warm(self.measured_received, self.received, self.receive_s)
        );
        let l = &self.latency;
        out += &format!(
            "latency   p50 {} us, p90 {} us, p99 {} us, p99.9 {} us, max {} us ({} samples)\n",
            l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, l.count
        );
        if self.unsent_due > 0 {
            out += &format!(
                "unsent    {} messages due before publishing stopped were not sent (publishers \
                 held up); in the latency as their wait until a publisher could send\n",
                self.unsent_due
            );
        }
        if self.foreign > 0 {
            out += &format!(
                "foreign   {} messages not of this run (ignored)\n",
                self.foreign
            );
        }
        for q in &self.qos {
            let acked = if q.qos == 0 {
                String::new()
            } else {
                format!(" acked {},", q.acked)
            };
            out += &format!(
                "QoS {}     sent {},{acked} expected {}, received {}, lost {}, duplicated {}\n",
                q.qos, q.sent, q.expected, q.received, q.lost, q.duplicated
            );
        }
        if self.rejected > 0 {
            let reasons: Vec<String> = self
                .rejected_by_reason
                .iter()
                .map(|(reason, n)| format!("{reason} {n}"))
                .collect();
            out += &format!(
                "rejected  {} messages acknowledged with an error: {}\n",
                self.rejected,
                reasons.join(", ")
            );
        }
        if let (Some(before), Some(after)) = (self.broker_rss_before_kb, self.broker_rss_after_kb) {
            out += &format!(
                "broker    RSS {before} kB -> {after} kB, {:.0} B per connection\n",
                self.broker_bytes_per_connection.unwrap_or(0.0)
            );
        }
        if let Some(line) = cpu_line(self.broker_cpu.as_ref(), self.bench_cpu.as_ref()) {
            out += &line;
        }
        if self.errors > 0 {
            out += &format!("errors    {}\n", self.errors);
            for e in &self.error_samples {
                out += &format!("  {e}\n");
            }
        }
        out
    }

    /// One header line and one data line.
    pub(crate) fn csv(&self) -> String {
        let l = &self.latency;
        let mut header = String::from(
            "broker,mqtt,publishers,subscribers,idle,payload_size,duration_s,connect_rate,\
             sent,received,sent_msgs_per_s,sent_mb_per_s,received_msgs_per_s,received_mb_per_s,\
             p50_us,p90_us,p99_us,p999_us,max_us,errors,broker_bytes_per_connection,foreign,\
             receive_s,warmup_s,rejected,duplicated",
        );
        let mut row = format!(
            "{},{},{},{},{},{},{:.3},{:.1},{},{},{:.1},{:.3},{:.1},{:.3},{},{},{},{},{},{},{},{},{:.3},{:.3},{},{}",
            self.broker,
            self.mqtt,
            self.publishers,
            self.subscribers,
            self.idle,
            self.payload_size,
            self.duration_s,
            self.connect_rate,
            self.sent,
            self.received,
            self.sent_msgs_per_s,
            self.sent_mb_per_s,
            self.received_msgs_per_s,
            self.received_mb_per_s,
            l.p50_us,
            l.p90_us,
            l.p99_us,
            l.p999_us,
            l.max_us,
            self.errors,
            self.broker_bytes_per_connection
                .map_or_else(String::new, |b| format!("{b:.0}")),
            self.foreign,
            self.receive_s,
            self.warmup_s,
            self.rejected,
            self.duplicated,
        );
        for q in &self.qos {
            let n = q.qos;
            header += &format!(",qos{n}_sent,qos{n}_acked,qos{n}_lost,qos{n}_duplicated");
            row += &format!(",{},{},{},{}", q.sent, q.acked, q.lost, q.duplicated);
        }
        // Added later: at the end, after the per-QoS columns.
        header += ",measured_sent,measured_received,unsent_due,send_s";
        row += &format!(
            ",{},{},{},{:.3}",
            self.measured_sent, self.measured_received, self.unsent_due, self.send_s
        );
        for (who, cpu) in [("broker", &self.broker_cpu), ("bench", &self.bench_cpu)] {
            header += &format!(",{who}_cpu_user_s,{who}_cpu_system_s,{who}_cpu_us_per_msg");
            row += &match cpu {
                Some(c) => format!(
                    ",{:.3},{:.3},{}",
                    c.user_s,
                    c.system_s,
                    c.us_per_msg.map_or_else(String::new, |u| format!("{u:.1}"))
                ),
                None => ",,,".to_owned(),
            };
        }
        format!("{header}\n{row}\n")
    }

    /// Acknowledged QoS 1/2 messages some matching subscriber never received.
    pub(crate) fn lost_acknowledged(&self) -> u64 {
        self.qos.iter().filter(|q| q.qos > 0).map(|q| q.lost).sum()
    }
}

/// CPU time of a process (user and system), as Linux charges it in
/// `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct CpuTime {
    pub(super) user_s: f64,
    pub(super) system_s: f64,
}

/// Clock ticks per second of `/proc/PID/stat` (Linux's `USER_HZ`, 100 on
/// every architecture it exports to user space).
const USER_HZ: f64 = 100.0;

impl CpuTime {
    /// The CPU time of process `pid` (`None`: this one), `None` where
    /// there is no `/proc` (not Linux) or the process is gone.
    pub(super) fn of(pid: Option<u32>) -> Option<Self> {
        let path = match pid {
            Some(pid) => format!("/proc/{pid}/stat"),
            None => "/proc/self/stat".to_owned(),
        };
        Self::parse(&std::fs::read_to_string(path).ok()?)
    }

    /// Reads `utime` and `stime` (fields 14 and 15) of a `/proc/PID/stat`
    /// line. The command name (field 2) is in parentheses and may hold
    /// spaces and parentheses itself, so the fields are counted from its
    /// last `)`.
    pub(super) fn parse(stat: &str) -> Option<Self> {
        let (_, rest) = stat.rsplit_once(')')?;
        let mut fields = rest.split_whitespace().skip(11);
        let user: u64 = fields.next()?.parse().ok()?;
        let system: u64 = fields.next()?.parse().ok()?;
        Some(Self {
            user_s: user as f64 / USER_HZ,
            system_s: system as f64 / USER_HZ,
        })
    }

    /// What was spent from `self` to `later`, per message over `messages`.
    pub(super) fn until(self, later: Self, messages: u64) -> CpuUse {
        let user_s = (later.user_s - self.user_s).max(0.0);
        let system_s = (later.system_s - self.system_s).max(0.0);
        CpuUse {
            user_s,
            system_s,
            us_per_msg: (messages > 0).then(|| (user_s + system_s) * 1e6 / messages as f64),
        }
    }
}

/// CPU time spent during the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct CpuUse {
    /// Seconds in user space.
    pub(crate) user_s: f64,
    /// Seconds in the kernel on the process's behalf (system calls, page
    /// faults; interrupt work may be charged to no process).
    pub(crate) system_s: f64,
    /// (user + system) per message received by the subscribers, in
    /// microseconds (`None` when none was received). Ticks are 10 ms, so
    /// runs of a few seconds are needed for two digits.
    pub(crate) us_per_msg: Option<f64>,
}

/// The report's CPU line, if there is anything to say.
fn cpu_line(broker: Option<&CpuUse>, bench: Option<&CpuUse>) -> Option<String> {
    let show = |c: &CpuUse| {
        let per = c
            .us_per_msg
            .map_or_else(String::new, |u| format!("{u:.1} us/msg, "));
        format!("{per}user {:.2} s, system {:.2} s", c.user_s, c.system_s)
    };
    match (broker, bench) {
        (None, None) => None,
        (Some(b), None) => Some(format!("cpu       broker {}\n", show(b))),
        (None, Some(g)) => Some(format!("cpu       load generator {}\n", show(g))),
        (Some(b), Some(g)) => Some(format!(
            "cpu       broker {}; load generator {}\n",
            show(b),
            show(g)
        )),
    }
}

/// Seconds for people: milliseconds below one second.
pub(super) fn show_seconds(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.1} ms", secs * 1e3)
    } else {
        format!("{secs:.2} s")
    }
}

/// Microseconds in `d`, saturating.
pub(super) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        // A command name with spaces and parentheses; utime 250, stime 1234.
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 1520 0 0 0 250 1234 0 0 20 0 9 0";
        let t = CpuTime::parse(stat).expect("parsed");
        assert_eq!(t.user_s, 2.5);
        assert_eq!(t.system_s, 12.34);
        assert_eq!(CpuTime::parse("4242 (x) S 1 2"), None);
        assert_eq!(CpuTime::parse("no parenthesis"), None);
        let later = CpuTime {
            user_s: 3.5,
            system_s: 13.34,
        };
        let used = t.until(later, 1000);
        assert!((used.user_s - 1.0).abs() < 1e-9);
        assert!((used.us_per_msg.unwrap_or(0.0) - 2000.0).abs() < 1e-6);
        assert_eq!(t.until(later, 0).us_per_msg, None);
        // This process can read its own.
        if cfg!(target_os = "linux") {
            assert!(CpuTime::of(None).is_some());
        }
        let line = cpu_line(Some(&used), None).unwrap_or_default();
        assert!(line.contains("broker 2000.0 us/msg"), "{line}");
    }

    #[test]
    fn header_round_trip() {
        let header = Header {
            nanos: 123_456,
            publisher: 7,
            seq: 99,
        };
        let mut payload = vec![0u8; 40];
        write_header(&mut payload, 42, header);
        assert_eq!(read_header(&payload, 42), Some(header));
        assert_eq!(read_header(&payload[..HEADER_LEN - 1], 42), None);
        // Another run's message, or no bench message at all, is foreign.
        assert_eq!(read_header(&payload, 43), None);
        assert_eq!(
            read_header(b"this is definitely not a bench payload", 42),
            None
        );
        payload[0] ^= 1;
        assert_eq!(read_header(&payload, 42), None);
    }

    #[test]
    fn percentiles_are_the_middle_of_their_bucket() {
        let mut h = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap();
        for v in [4_321_000u64; 100] {
            h.record(v).unwrap();
        }
        // The bucket is 4 317 184-4 321 279: its middle for the
        // percentiles, its upper bound (not below the sample) for the max.
        let report = LatencyReport::from_histogram(&h);
        assert_eq!(
            (report.p50_us, report.p99_us, report.max_us),
            (4_319_232, 4_319_232, 4_321_279)
        );
        assert!(report.p99_us.abs_diff(4_321_000) * 2048 <= 4_321_000);
        assert_eq!(show_seconds(0.0042), "4.2 ms");
        assert_eq!(show_seconds(2.5), "2.50 s");
    }

    /// The reported maximum is not below the largest sample.
    #[test]
    fn max_is_not_below_the_largest_sample() {
        let mut h = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap();
        h.record(1004).unwrap(); // exact in the histogram (unit 1 below 2048)
        let r = LatencyReport::from_histogram(&h);
        assert!(
            r.max_us >= 1004,
            "max_us {} < largest sample 1004",
            r.max_us
        );
    }

    /// Percentiles stay within the histogram's precision: no decimal
    /// 3-digit rounding (up to 0.5% off, in either direction).
    #[test]
    fn rounding_stays_within_the_histograms_precision() {
        let mut h = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap();
        h.record(1005).unwrap();
        let r = LatencyReport::from_histogram(&h);
        let err = (r.p50_us as f64 - 1005.0).abs() / 1005.0;
        assert!(
            err <= 0.001,
            "p50 {} for a single 1005 us sample: {:.2}% off",
            r.p50_us,
            err * 100.0
        );
    }

    #[test]
    fn run_ids_differ() {
        assert_ne!(random_u64().unwrap(), random_u64().unwrap());
    }

    #[test]
    fn seq_set_counts_and_differences() {
        let mut a = SeqSet::default();
        let mut b = SeqSet::default();
        assert!(a.insert(0));
        assert!(a.insert(130));
        assert!(!a.insert(130));
        assert!(b.insert(130));
        assert_eq!(a.len(), 2);
        assert_eq!(a.missing_from(&b), 1);
        assert_eq!(b.missing_from(&a), 0);
    }
}
