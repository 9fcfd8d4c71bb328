//! Turns what the connections recorded into a [`Report`]: which subscriber
//! should have received which publisher's messages, what was lost, what
//! arrived twice.

use std::time::Duration;

use fulmar_codec::QoS;
use hdrhistogram::Histogram;

use super::stats::{LatencyReport, QosCounts, Report};
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
    /// [`publish_seconds`]).
    pub(super) publish_s: f64,
    /// Seconds from the start until the last delivery.
    pub(super) receive_s: f64,
    pub(super) connect_s: f64,
    /// Broker RSS in kB before and after connecting.
    pub(super) rss: (Option<u64>, Option<u64>),
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
/// matching subscriber.
pub(super) fn expected_deliveries(
    pubs: &[PubResult],
    topics: &[(String, QoS)],
    filters: &[String],
) -> u64 {
    matching(topics, filters)
        .filter_map(|(_, i)| pubs.get(i))
        .map(|p| p.sent)
        .sum()
}

/// Seconds from the start of publishing (`start_nanos` since the run's
/// base) to the last send, write or acknowledgement of any publisher, as the
/// publishers recorded them (not when the coordinator, which looks every
/// tick, noticed); `None` when no publisher did anything after the start.
pub(super) fn publish_seconds(start_nanos: u64, pubs: &[PubResult]) -> Option<f64> {
    let end = pubs.iter().map(|p| p.last_nanos).max()?;
    (end > start_nanos).then(|| Duration::from_nanos(end - start_nanos).as_secs_f64())
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
    let received: u64 = subs
        .iter()
        .map(|s| {
            s.received.values().map(|r| r.len()).sum::<u64>() + s.duplicates.values().sum::<u64>()
        })
        .sum();
    let foreign: u64 = subs.iter().map(|s| s.foreign).sum();
    let mb = |n: u64, secs: f64| n as f64 * inputs.payload_size as f64 / 1e6 / secs;
    let publish_s = inputs.publish_s.max(1e-9);
    let receive_s = inputs.receive_s.max(1e-9);
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
        connect_rate: connections as f64 / inputs.connect_s.max(1e-9),
        connect_s: inputs.connect_s,
        sent_msgs_per_s: sent as f64 / publish_s,
        sent_mb_per_s: mb(sent, publish_s),
        received_msgs_per_s: received as f64 / receive_s,
        received_mb_per_s: mb(received, receive_s),
        sent,
        received,
        foreign,
        latency: LatencyReport::from_histogram(histogram),
        qos: per_qos,
        errors: errors.len() as u64,
        error_samples: errors.into_iter().take(ERROR_SAMPLES).collect(),
        broker_rss_before_kb: inputs.rss.0,
        broker_rss_after_kb: inputs.rss.1,
        broker_bytes_per_connection: bytes_per_connection,
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
            acked: SeqSet::default(),
            last_nanos,
            error: None,
        }
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
        let publish_s = publish_seconds(start, &pubs).unwrap();
        assert!((publish_s - 0.05).abs() < 1e-12, "{publish_s}");
        // Nothing recorded after the start (or no publisher): no interval.
        assert_eq!(publish_seconds(start, &[publisher(0, 0, 0)]), None);
        assert_eq!(publish_seconds(start, &[]), None);

        let inputs = Inputs {
            broker: String::new(),
            mqtt: "5".to_owned(),
            publishers: 2,
            subscribers: 0,
            idle: 0,
            payload_size: 100,
            publish_s,
            receive_s: publish_s,
            connect_s: 1.0,
            rss: (None, None),
            timeline: Vec::new(),
        };
        let report = build(
            inputs,
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
