//! fulmar-topic benchmarks: subscription matching, insert/remove throughput and retained lookups,
//! side by side with a naive linear matcher and the `mqtt-topic-engine` trie.
//!
//! `cargo bench -p fulmar-benches --bench topic` runs everything (about 6 minutes on 2 cores).
//! Under `cargo test --benches` (criterion's test mode, no `--bench` argument) only the 1 k
//! sizes are built, so the 1 M setups never run there.
#![allow(clippy::unwrap_used)] // fixtures are generated here and always valid

use std::collections::HashSet;
use std::hint::black_box;
use std::time::Duration;

use criterion::{
    BatchSize, BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main,
};
use fulmar_topic::{RetainedIndex, SubscriptionFilter, SubscriptionTrie, TopicFilter, TopicName};
use mqtt_topic_engine::topic_matcher::TopicMatcherNode;
use mqtt_topic_engine::{CacheStrategy, TopicPath, TopicPatternPath};

/// Whether criterion is really benchmarking (`cargo bench` passes `--bench`) with the large
/// sizes (`FULMAR_BENCH_QUICK=1` keeps only the 1 k sizes, for quick comparisons).
fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench") && std::env::var_os("FULMAR_BENCH_QUICK").is_none()
}

fn sizes() -> Vec<(&'static str, usize)> {
    if full_run() {
        vec![("1k", 1_000), ("100k", 100_000), ("1m", 1_000_000)]
    } else {
        vec![("1k", 1_000)]
    }
}

/// Subscription `i` of a fleet: site `i / 1000`, device `i % 1000`.
///
/// 70 % exact, 10 % `+` last, 10 % in the site's shared group `$share/g/site/{s}/+/+/temp`,
/// 9 % `site/{s}/+/{d}/temp`, 1 % `site/{s}/#`. Each key is its own client. A publish to
/// `site/{s}/device/{d}/temp` matches about a dozen subscriptions at every size.
fn subscription(i: usize) -> String {
    let (s, d) = (i / 1000, i % 1000);
    match i % 10 {
        0..=6 => format!("site/{s}/device/{d}/temp"),
        7 => format!("site/{s}/device/{d}/+"),
        8 => format!("$share/g/site/{s}/+/+/temp"),
        _ if i % 100 == 99 => format!("site/{s}/#"),
        _ => format!("site/{s}/+/{d}/temp"),
    }
}

/// Deterministic pseudo-random topics over the fleet.
fn topics(n_subs: usize, count: usize) -> Vec<String> {
    let sites = n_subs.div_ceil(1000);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let s = (x % sites as u64) as usize;
            let d = ((x >> 32) % 1000) as usize;
            format!("site/{s}/device/{d}/temp")
        })
        .collect()
}

type Peer = TopicMatcherNode<HashSet<u64>>;

/// The key standing for a whole shared group in the peer trie.
const GROUP: u64 = u64::MAX;

fn pattern(filter: &TopicFilter) -> TopicPatternPath {
    TopicPatternPath::new_from_string(filter.as_str(), CacheStrategy::NoCache).unwrap()
}

struct Fleet {
    subs: Vec<(SubscriptionFilter, u64)>,
}

impl Fleet {
    fn new(n: usize) -> Self {
        let subs = (0..n)
            .map(|i| (subscription(i).parse().unwrap(), i as u64))
            .collect();
        Self { subs }
    }

    fn fulmar(&self) -> SubscriptionTrie<u64, u8> {
        let mut trie = SubscriptionTrie::new();
        for (f, k) in &self.subs {
            trie.subscribe(f, *k, 1);
        }
        trie
    }

    /// The naive matcher: every filter checked in turn (shared filters by their inner filter).
    fn naive(&self) -> Vec<(TopicFilter, u64)> {
        self.subs
            .iter()
            .map(|(f, k)| (f.filter().clone(), *k))
            .collect()
    }

    /// The peer trie has no shared subscriptions: a shared group goes in as one placeholder
    /// subscriber on its filter (the caller would pick the member), so both tries visit the same
    /// number of subscribers per match.
    fn peer(&self) -> Peer {
        let mut peer = Peer::new();
        for (f, k) in &self.subs {
            let key = if f.group().is_some() { GROUP } else { *k };
            peer.get_or_create_subscription_table(&pattern(f.filter()))
                .insert(key);
        }
        peer
    }
}

fn configure(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>, n: usize) {
    if n >= 100_000 {
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(3));
    } else {
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
    }
}

/// Resident set size, from `/proc/self/statm` (Linux); `None` elsewhere.
fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Builds a structure and prints how much the resident set grew, per subscription.
fn measured<T>(what: &str, label: &str, n: usize, build: impl FnOnce() -> T) -> T {
    let before = rss_bytes();
    let built = build();
    if let (Some(before), Some(after)) = (before, rss_bytes()) {
        let per_sub = after.saturating_sub(before) / n;
        eprintln!("memory/{label}/{what}: ~{per_sub} bytes per subscription (RSS growth)");
    }
    built
}

fn bench_match(c: &mut Criterion) {
    for (label, n) in sizes() {
        let fleet = Fleet::new(n);
        let fulmar = measured("fulmar", label, n, || fleet.fulmar());
        let naive = fleet.naive();
        let peer = measured("mqtt-topic-engine", label, n, || fleet.peer());
        let names: Vec<TopicName> = topics(n, 1024).iter().map(|t| t.parse().unwrap()).collect();
        let paths: Vec<TopicPath> = topics(n, 1024)
            .into_iter()
            .map(|t| TopicPath::new(t).unwrap())
            .collect();

        let mut group = c.benchmark_group(format!("match/{label}"));
        configure(&mut group, n);
        let mut i = 0;
        group.bench_function("fulmar", |b| {
            b.iter(|| {
                i = (i + 1) % names.len();
                let mut hits = 0u64;
                fulmar.matches(&names[i], |m| hits = hits.wrapping_add(*m.key));
                black_box(hits)
            })
        });
        let mut i = 0;
        group.bench_function("naive", |b| {
            b.iter(|| {
                i = (i + 1) % names.len();
                let topic = &names[i];
                black_box(naive.iter().filter(|(f, _)| f.matches(topic)).count())
            })
        });
        let mut i = 0;
        group.bench_function("mqtt-topic-engine", |b| {
            b.iter(|| {
                i = (i + 1) % paths.len();
                let mut hits = 0u64;
                for set in peer.find_by_path(&paths[i]) {
                    for key in set {
                        hits = hits.wrapping_add(*key);
                    }
                }
                black_box(hits)
            })
        });
        group.finish();

        // The same tries, 8 hot topics in turn: the working set stays in cache, which shows the
        // algorithmic cost alone (it should not depend on the number of subscriptions).
        let mut group = c.benchmark_group(format!("match-hot/{label}"));
        configure(&mut group, 1_000);
        let mut i = 0;
        group.bench_function("fulmar", |b| {
            b.iter(|| {
                i = (i + 1) % 8;
                let mut hits = 0u64;
                fulmar.matches(&names[i], |m| hits = hits.wrapping_add(*m.key));
                black_box(hits)
            })
        });
        let mut i = 0;
        group.bench_function("mqtt-topic-engine", |b| {
            b.iter(|| {
                i = (i + 1) % 8;
                let mut hits = 0u64;
                for set in peer.find_by_path(&paths[i]) {
                    for key in set {
                        hits = hits.wrapping_add(*key);
                    }
                }
                black_box(hits)
            })
        });
        group.finish();
    }
}

fn bench_insert_remove(c: &mut Criterion) {
    let n = if full_run() { 100_000 } else { 1_000 };
    let label = if full_run() { "100k" } else { "1k" };
    let fleet = Fleet::new(n);
    let patterns: Vec<(TopicPatternPath, u64)> = fleet
        .subs
        .iter()
        .map(|(f, k)| {
            let key = if f.group().is_some() { GROUP } else { *k };
            (pattern(f.filter()), key)
        })
        .collect();

    let mut group = c.benchmark_group(format!("insert/{label}"));
    configure(&mut group, n);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("fulmar", |b| b.iter(|| black_box(fleet.fulmar().len())));
    group.bench_function("mqtt-topic-engine", |b| {
        b.iter(|| {
            let mut peer = Peer::new();
            for (p, k) in &patterns {
                peer.get_or_create_subscription_table(p).insert(*k);
            }
            black_box(peer.is_empty())
        })
    });
    group.finish();

    let mut group = c.benchmark_group(format!("remove/{label}"));
    configure(&mut group, n);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("fulmar", |b| {
        b.iter_batched(
            || fleet.fulmar(),
            |mut trie| {
                for (f, k) in &fleet.subs {
                    trie.unsubscribe(f, k);
                }
                assert!(trie.is_empty());
                trie
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("mqtt-topic-engine", |b| {
        b.iter_batched(
            || fleet.peer(),
            |mut peer| {
                for (p, k) in &patterns {
                    let _ = peer.update_node(p.slice(), |set| {
                        set.remove(k);
                    });
                }
                assert!(peer.is_empty());
                peer
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn bench_retained(c: &mut Criterion) {
    let (label, n) = if full_run() {
        ("1m", 1_000_000)
    } else {
        ("1k", 1_000)
    };
    let names: Vec<TopicName> = (0..n)
        .map(|i| {
            format!("site/{}/device/{}/status", i / 1000, i % 1000)
                .parse()
                .unwrap()
        })
        .collect();
    let mut fulmar = RetainedIndex::new();
    for (i, t) in names.iter().enumerate() {
        fulmar.insert(t.clone(), i as u64);
    }
    let naive: Vec<(TopicName, u64)> = names.iter().cloned().zip(0..).collect();

    let mut group = c.benchmark_group(format!("retained/{label}"));
    configure(&mut group, n.min(100_000));
    group.sample_size(10);
    for (case, filter) in [
        ("exact", "site/0/device/7/status"),
        ("plus", "site/+/device/7/status"),
        ("hash", "#"),
    ] {
        let filter: TopicFilter = filter.parse().unwrap();
        group.bench_function(format!("{case}/fulmar"), |b| {
            b.iter(|| {
                let mut hits = 0u64;
                fulmar.matches(&filter, |_, v| hits = hits.wrapping_add(*v));
                black_box(hits)
            })
        });
        group.bench_function(format!("{case}/naive"), |b| {
            b.iter(|| {
                let mut hits = 0u64;
                for (t, v) in &naive {
                    if filter.matches(t) {
                        hits = hits.wrapping_add(*v);
                    }
                }
                black_box(hits)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_match, bench_insert_remove, bench_retained);
criterion_main!(benches);
