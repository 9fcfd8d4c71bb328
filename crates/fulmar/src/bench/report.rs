//! Turns what the connections recorded into a [`Report`]: which subscriber
//! should have received which publisher's messages, what was lost, what
//! arrived twice.

use std::collections::BTreeMap;
use std::time::Duration;

use fulmar_codec::QoS;
use hdrhistogram::Histogram;

use super::stats::{CpuUse, LatencyReport, QosCounts, Report};
use super::workers::{PubResult, SubResult};

/// Error messages kept in the report.
const ERROR_SAMPLES: usize = 5;

/// Measurements of the run besides the per-connection results.
pub(super) struct Inputs {
    pub(super) broker: String,
    pub(super) mqtt: String,
    pub(super) publishers: usize,
    pub(super) subscribers: usize,
    pub(super) idle: usize,
    pub(super) payload_size: usize,
    /// Seconds from the start until the publishers finished (see
    /// [`publish_window`]).
    pub(super) publish_s: f64,
    /// Seconds from the start until the last send (with `--duration` at
    /// least until publishing was told to stop): the sent rate's window.
    pub(super) send_s: f64,
    /// Seconds from the start until the last delivery that counts.
    pub(super) receive_s: f64,
    /// Seconds of warm-up at the start (not measured).
    pub(super) warmup_s: f64,
    pub(super) connect_s: f64,
    /// Broker RSS in kB before and after connecting.
    pub(super) rss: (Option<u64>, Option<u64>),
    /// CPU time of the broker (with `--broker-pid`) and of this process
    /// from the start of publishing to the last delivery.
    pub(super) cpu: (Option<CpuUse>, Option<CpuUse>),
    pub(super) timeline: Vec<(f64, f64, f64)>,
}

/// Whether `topic` matches `filter` (MQTT 4.7: `+` one level, `#` the rest,
/// and a leading wildcard does not match a `$` topic).
pub(super) fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match level {
            "#" => return true,
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            exact => {
                if topic_levels.next() != Some(exact) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

/// For every subscriber, the publishers whose topic its filter matches.
fn matching<'a>(
    topics: &'a [(String, QoS)],
    filters: &'a [String],
) -> impl Iterator<Item = (usize, usize)> + 'a {
    filters.iter().enumerate().flat_map(move |(j, filter)| {
        topics
            .iter()
            .enumerate()
            .filter(move |(_, (topic, _))| topic_matches(filter, topic))
            .map(move |(i, _)| (j, i))
    })
}

/// Deliveries the subscribers should see, counting each message once per
/// matching subscriber: every QoS 0 message sent, every QoS 1/2 message the
/// broker acknowledged with a success code (a rejected one never comes).
pub(super) fn expected_deliveries(
    pubs: &[PubResult],
    topics: &[(String, QoS)],
    filters: &[String],
) -> u64 {
    matching(topics, filters)
        .filter_map(|(_, i)| pubs.get(i))
        .map(|p| match p.qos {
            QoS::AtMostOnce => p.sent,
            _ => p.acked.len(),
        })
        .sum()
}

/// Seconds from the start of publishing (`start_nanos` since the run's
/// base) to the latest time `last` gives of any publisher (its last send,
/// write or acknowledgement: [`PubResult::last_nanos`]; its last send:
/// [`PubResult::last_sent_nanos`]), as the publishers recorded them (not
/// when the coordinator, which looks every tick, noticed); `None` when no
/// publisher did anything after the start.
pub(super) fn publish_seconds(
    start_nanos: u64,
    pubs: &[PubResult],
    last: impl Fn(&PubResult) -> u64,
) -> Option<f64> {
    let end = pubs.iter().map(last).max()?;
    (end > start_nanos).then(|| Duration::from_nanos(end - start_nanos).as_secs_f64())
}

/// Seconds of publishing: to the last thing a publisher recorded
/// (`recorded`, see [`publish_seconds`]), and with `--duration` at least
/// until the publishers were told to stop (`told_to_stop`), so that a broker
/// that stops answering near the end does not make the run look shorter
/// (and faster); `fallback` when neither is known.
pub(super) fn publish_window(
    recorded: Option<f64>,
    told_to_stop: Option<f64>,
    fallback: f64,
) -> f64 {
    match (recorded, told_to_stop) {
        (Some(r), Some(t)) => r.max(t),
        (Some(r), None) => r,
        (None, Some(t)) => t,
        (None, None) => fallback,
    }
}

/// Builds the report.
pub(super) fn build(
    inputs: Inputs,
    pubs: &[PubResult],
    subs: &[SubResult],
    topics: &[(String, QoS)],
    filters: &[String],
    histogram: &Histogram<u64>,
    mut errors: Vec<String>,
) -> Report {
    let mut per_qos: Vec<QosCounts> = Vec::new();
    let counts_for = |per_qos: &mut Vec<QosCounts>, qos: QoS| -> usize {
        let n = qos as u8;
        match per_qos.iter().position(|c| c.qos == n) {
            Some(k) => k,
            None => {
                per_qos.push(QosCounts {
                    qos: n,
                    ..QosCounts::default()
                });
                per_qos.len() - 1
            }
        }
    };
    for p in pubs {
        let k = counts_for(&mut per_qos, p.qos);
        if let Some(c) = per_qos.get_mut(k) {
            c.sent += p.sent;
            c.acked += p.acked.len();
        }
        if let Some(e) = &p.error {
            errors.push(format!("publisher {}: {e}", p.index));
        }
    }
    for (j, s) in subs.iter().enumerate() {
        if let Some(e) = &s.error {
            errors.push(format!("subscriber {j}: {e}"));
        }
    }
    for (j, i) in matching(topics, filters) {
        let (Some(p), Some(s)) = (pubs.get(i), subs.get(j)) else {
            continue;
        };
        let index = p.index;
        let k = counts_for(&mut per_qos, p.qos);
        let Some(c) = per_qos.get_mut(k) else {
            continue;
        };
        let empty = Default::default();
        let got = s.received.get(&index).unwrap_or(&empty);
        c.received += got.len();
        c.duplicated += s.duplicates.get(&index).copied().unwrap_or(0);
        if p.qos == QoS::AtMostOnce {
            c.expected += p.sent;
            c.lost += p.sent.saturating_sub(got.len());
        } else {
            c.expected += p.acked.len();
            c.lost += p.acked.missing_from(got);
        }
    }
    per_qos.sort_by_key(|c| c.qos);

    let sent: u64 = pubs.iter().map(|p| p.sent).sum();
    let measured_sent: u64 = pubs.iter().map(|p| p.measured).sum();
    // First deliveries only: a duplicate is neither throughput nor latency.
    let received: u64 = subs
        .iter()
        .map(|s| s.received.values().map(|r| r.len()).sum::<u64>())
        .sum();
    let measured_received: u64 = subs.iter().map(|s| s.measured).sum();
    let duplicated: u64 = subs
        .iter()
        .map(|s| s.duplicates.values().sum::<u64>())
        .sum();
    let mut rejected_by_reason: BTreeMap<String, u64> = BTreeMap::new();
    for p in pubs {
        for (reason, n) in &p.rejected {
            *rejected_by_reason.entry(reason.clone()).or_default() += n;
        }
    }
    let rejected: u64 = rejected_by_reason.values().sum();
    if rejected > 0 {
        let reasons: Vec<String> = rejected_by_reason
            .iter()
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        errors.push(format!(
            "{rejected} QoS 1/2 messages acknowledged with an error reason code: {}",
            reasons.join(", ")
        ));
    }
    let foreign: u64 = subs.iter().map(|s| s.foreign).sum();
    let mb = |n: u64, secs: f64| n as f64 * inputs.payload_size as f64 / 1e6 / secs;
    // The measured windows start at the end of the warm-up (nothing is
    // measured in a run shorter than the warm-up: rates of 0).
    let send_s = (inputs.send_s - inputs.warmup_s).max(1e-9);
    let receive_s = (inputs.receive_s - inputs.warmup_s).max(1e-9);
    let unsent_due: u64 = pubs.iter().map(|p| p.unsent_due).sum();
    let connections = inputs.publishers + inputs.subscribers + inputs.idle;
    let bytes_per_connection = match inputs.rss {
        (Some(before), Some(after)) if connections > 0 => {
            Some(after.saturating_sub(before) as f64 * 1024.0 / connections as f64)
        }
        _ => None,
    };
    Report {
        broker: inputs.broker,
        mqtt: inputs.mqtt,
        publishers: inputs.publishers,
        subscribers: inputs.subscribers,
        idle: inputs.idle,
        payload_size: inputs.payload_size,
        duration_s: inputs.publish_s,
        send_s: inputs.send_s,
        receive_s: inputs.receive_s,
        warmup_s: inputs.warmup_s,
        connect_rate: connections as f64 / inputs.connect_s.max(1e-9),
        connect_s: inputs.connect_s,
        sent_msgs_per_s: measured_sent as f64 / send_s,
        sent_mb_per_s: mb(measured_sent, send_s),
        received_msgs_per_s: measured_received as f64 / receive_s,
        received_mb_per_s: mb(measured_received, receive_s),
        sent,
        received,
        measured_sent,
        measured_received,
        unsent_due,
        duplicated,
        foreign,
        latency: LatencyReport::from_histogram(histogram),
        qos: per_qos,
        errors: errors.len() as u64,
        error_samples: errors.into_iter().take(ERROR_SAMPLES).collect(),
        rejected,
        rejected_by_reason,
        broker_rss_before_kb: inputs.rss.0,
        broker_rss_after_kb: inputs.rss.1,
        broker_bytes_per_connection: bytes_per_connection,
        broker_cpu: inputs.cpu.0,
        bench_cpu: inputs.cpu.1,
        timeline: inputs.timeline,
    }
}

#[cfg(test)]
mod tests {
    use super::super::stats::SeqSet;
    use super::*;

    fn publisher(index: u32, sent: u64, last_nanos: u64) -> PubResult {
        PubResult {
            index,
            qos: QoS::AtMostOnce,
            sent,
            measured: sent,
            acked: SeqSet::default(),
            rejected: BTreeMap::new(),
            last_nanos,
            last_sent_nanos: last_nanos,
            unsent_due: 0,
            cut_short: None,
            error: None,
        }
    }

    fn inputs(publish_s: f64, receive_s: f64, warmup_s: f64) -> Inputs {
        Inputs {
            broker: String::new(),
            mqtt: "5".to_owned(),
            publishers: 1,
            subscribers: 1,
            idle: 0,
            payload_size: 100,
            publish_s,
            send_s: publish_s,
            receive_s,
            warmup_s,
            connect_s: 1.0,
            rss: (None, None),
            cpu: (None, None),
            timeline: Vec::new(),
        }
    }

    /// A broker that stops answering half-way through a 2 s run: the
    /// window is the 2 s asked for, not the 1 s until the last ack.
    #[test]
    fn a_stall_at_the_end_stays_in_the_window() {
        assert_eq!(publish_window(Some(1.0), Some(2.0), 9.0), 2.0);
        assert_eq!(publish_window(Some(2.5), Some(2.0), 9.0), 2.5);
        // --count: where the publishers' records put the end.
        assert_eq!(publish_window(Some(1.0), None, 9.0), 1.0);
        assert_eq!(publish_window(None, None, 9.0), 9.0);
    }

    /// QoS 1: 10 acknowledged, 2 rejected; a subscriber got 8 of them, 3
    /// of those twice, and 6 after a 1 s warm-up. Duplicates are neither
    /// throughput nor received; rejections are one error, by reason code;
    /// the 2 missing acknowledged messages are lost.
    #[test]
    fn duplicates_and_rejections_are_counted_apart() {
        let mut p = publisher(0, 12, 0);
        p.qos = QoS::AtLeastOnce;
        p.measured = 9;
        for seq in 0..10 {
            p.acked.insert(seq);
        }
        p.rejected.insert("QuotaExceeded".to_owned(), 2);
        let mut s = SubResult::default();
        for seq in 0..8 {
            s.received.entry(0).or_default().insert(seq);
        }
        s.duplicates.insert(0, 3);
        s.measured = 6;
        let topics = [("t".to_owned(), QoS::AtLeastOnce)];
        let filters = ["t".to_owned()];
        let pubs = [p];
        assert_eq!(expected_deliveries(&pubs, &topics, &filters), 10);
        let report = build(
            inputs(4.0, 3.0, 1.0),
            &pubs,
            &[s],
            &topics,
            &filters,
            &Histogram::new(3).unwrap(),
            Vec::new(),
        );
        assert_eq!((report.received, report.duplicated), (8, 3));
        assert_eq!((report.measured_sent, report.measured_received), (9, 6));
        // 9 in the 3 s after the warm-up; 6 in 2 s.
        assert!((report.sent_msgs_per_s - 3.0).abs() < 1e-9, "{report:?}");
        assert!(
            (report.received_msgs_per_s - 3.0).abs() < 1e-9,
            "{report:?}"
        );
        assert_eq!(report.rejected, 2);
        assert_eq!(report.rejected_by_reason.get("QuotaExceeded"), Some(&2));
        assert_eq!(report.errors, 1, "{report:?}");
        assert!(report.error_samples[0].contains("QuotaExceeded 2"));
        let qos = &report.qos[0];
        assert_eq!((qos.expected, qos.received, qos.lost), (10, 8, 2));
        assert_eq!(report.lost_acknowledged(), 2);
        let text = report.text();
        assert!(text.contains("rejected  2 messages"), "{text}");
        assert!(text.contains("after a 1.00 s warm-up"), "{text}");
    }

    /// The publish interval ends at the last thing a publisher recorded,
    /// not on a coordinator tick: 1000 messages between 1 s and 1.05 s
    /// after the base are 0.05 s of publishing and 20 000 msg/s.
    #[test]
    fn publish_interval_ends_at_the_last_recorded_send_or_ack() {
        let start = 1_000_000_000;
        let pubs = [
            publisher(0, 400, start + 30_000_000),
            publisher(1, 600, start + 50_000_000),
        ];
        let publish_s = publish_seconds(start, &pubs, |p| p.last_nanos).unwrap();
        assert!((publish_s - 0.05).abs() < 1e-12, "{publish_s}");
        // Nothing recorded after the start (or no publisher): no interval.
        assert_eq!(
            publish_seconds(start, &[publisher(0, 0, 0)], |p| p.last_nanos),
            None
        );
        assert_eq!(publish_seconds(start, &[], |p| p.last_nanos), None);

        let report = build(
            inputs(publish_s, publish_s, 0.0),
            &pubs,
            &[],
            &[],
            &[],
            &Histogram::new(3).unwrap(),
            Vec::new(),
        );
        assert_eq!(report.sent, 1000);
        assert!((report.duration_s - 0.05).abs() < 1e-12, "{report:?}");
        assert!(
            (report.sent_msgs_per_s - 20_000.0).abs() < 1e-6,
            "{report:?}"
        );
    }

    /// A --duration run whose broker stalled at the end: 4961 messages sent
    /// in the 5 s of publishing, the last acknowledgement at 6.45 s. The
    /// sent rate is over the 5 s of sending, not the wait for the acks.
    #[test]
    fn the_sent_rate_leaves_out_the_wait_for_the_last_acks() {
        let start = 1_000_000_000;
        let mut p = publisher(0, 4961, start + 6_450_000_000);
        p.last_sent_nanos = start + 4_950_000_000;
        p.unsent_due = 39;
        let pubs = [p];
        let publish_s = publish_window(
            publish_seconds(start, &pubs, |p| p.last_nanos),
            Some(5.0),
            9.0,
        );
        let send_s = publish_window(
            publish_seconds(start, &pubs, |p| p.last_sent_nanos),
            Some(5.0),
            9.0,
        );
        assert!((publish_s - 6.45).abs() < 1e-9 && (send_s - 5.0).abs() < 1e-9);
        let mut inputs = inputs(publish_s, publish_s, 0.0);
        inputs.send_s = send_s;
        let report = build(
            inputs,
            &pubs,
            &[],
            &[],
            &[],
            &Histogram::new(3).unwrap(),
            Vec::new(),
        );
        assert!((report.sent_msgs_per_s - 992.2).abs() < 1e-9, "{report:?}");
        assert!((report.duration_s - 6.45).abs() < 1e-9, "{report:?}");
        assert_eq!(report.unsent_due, 39);
        let text = report.text();
        assert!(text.contains("(4961 in 5.00 s)"), "{text}");
        assert!(text.contains("unsent    39 messages due"), "{text}");
    }

    /// A --count run shorter than --warmup: nothing measured, rates of 0,
    /// and no negative window.
    #[test]
    fn warmup_longer_than_a_count_run() {
        let mut p = publisher(0, 100, 0);
        p.measured = 0;
        let report = build(
            inputs(0.5, 0.5, 5.0),
            &[p],
            &[],
            &[],
            &[],
            &Histogram::new(3).unwrap(),
            Vec::new(),
        );
        let text = report.text();
        assert!(!text.contains(" in -"), "{text}");
        assert!(
            text.contains("0 in 0.0 ms after a 5.00 s warm-up"),
            "{text}"
        );
        assert_eq!(report.sent_msgs_per_s, 0.0);
    }

    #[test]
    fn wildcards_match_as_the_spec_says() {
        // The accounting's own matcher (the broker's is tested in fulmar-topic).
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(topic_matches("a/#", "a"));
        assert!(topic_matches("a/+/c", "a/b/c"));
        assert!(!topic_matches("a/+", "a/b/c"));
        assert!(topic_matches("a/b", "a/b"));
        assert!(!topic_matches("a/b", "a/b/c"));
        assert!(!topic_matches("#", "$SYS/x"));
    }
}
