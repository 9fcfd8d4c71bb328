//! Matching a topic allocates nothing up to 16 live branches (the claim of
//! the crate docs and of `SubscriptionTrie`), and does allocate beyond.
//!
//! A counting global allocator needs `unsafe impl GlobalAlloc`; this test
//! binary opts out of the workspace `unsafe_code = "deny"` for that alone.
//! The count is per thread, so tests running in parallel (and the test
//! harness) do not disturb each other's measurements.
#![allow(unsafe_code)]
// The helpers below panic on bad fixtures, like the tests themselves.
#![allow(clippy::unwrap_used)]

use fulmar_topic::{SubscriptionFilter, SubscriptionTrie, TopicName};

// The counting allocator of `fulmar-codec`'s allocation test.
#[path = "../../fulmar-codec/tests/alloc_count/mod.rs"]
mod alloc_count;

use alloc_count::allocations;

fn filter(s: &str) -> SubscriptionFilter {
    s.parse().unwrap()
}

fn topic(s: &str) -> TopicName {
    s.parse().unwrap()
}

/// The topic whose match keeps the most branches alive: `fan/x/x/x/x/end`.
const FAN_TOPIC: &str = "fan/x/x/x/x/end";

/// A broker-like trie: plain filters per device, `+` and `#` wildcards, shared
/// groups, `$SYS`, a filter with a wildcard first level, and the 16 filters
/// `fan/{x|+}/{x|+}/{x|+}/{x|+}/end`, which keep 2, 4, 8 and then 16 branches
/// alive while `FAN_TOPIC` is matched (each level doubles them: the literal
/// `x` and `+`).
fn realistic() -> SubscriptionTrie<u32, u8> {
    let mut trie = SubscriptionTrie::new();
    let mut key = 0;
    let mut add = |trie: &mut SubscriptionTrie<u32, u8>, f: &str| {
        key += 1;
        trie.subscribe(&filter(f), key, 1);
    };
    for site in 0..20 {
        for device in 0..20 {
            add(&mut trie, &format!("site/{site}/device/{device}/temp"));
            add(&mut trie, &format!("site/{site}/device/{device}/cmd"));
        }
        add(&mut trie, &format!("site/{site}/+/+/temp"));
        add(&mut trie, &format!("site/{site}/#"));
    }
    for f in [
        "site/+/device/+/temp",
        "site/+/device/#",
        "+/status",
        "#",
        "$SYS/#",
        "$SYS/broker/+/count",
    ] {
        add(&mut trie, f);
    }
    // Five members in each of two shared groups (one key each).
    for _ in 0..5 {
        add(&mut trie, "$share/workers/site/+/device/+/temp");
        add(&mut trie, "$share/loggers/#");
    }
    for mask in 0..16u32 {
        let level = |bit: u32| if mask & (1 << bit) == 0 { "x" } else { "+" };
        let f = format!(
            "fan/{}/{}/{}/{}/end",
            level(0),
            level(1),
            level(2),
            level(3)
        );
        add(&mut trie, &f);
    }
    trie
}

/// Matches every topic `rounds` times; returns the allocations made and the
/// matches seen per round.
fn measure(trie: &SubscriptionTrie<u32, u8>, topics: &[TopicName], rounds: usize) -> (usize, u64) {
    let mut seen = 0u64;
    let before = allocations();
    for _ in 0..rounds {
        for t in topics {
            trie.matches(t, |m| seen += u64::from(*m.options));
        }
    }
    let made = allocations() - before;
    (made, seen / rounds as u64)
}

// (memory, no spec statement)
#[test]
fn matching_allocates_nothing_up_to_16_live_branches() {
    let trie = realistic();
    // Parsed before measuring: a `TopicName` from a `&str` owns its bytes.
    let topics: Vec<TopicName> = [
        "site/3/device/7/temp",
        "site/3/device/7/cmd",
        "site/19/gateway/status",
        "site/42/device/1/temp",
        "plant/status",
        "$SYS/broker/clients/count",
        "unrelated/topic/with/many/levels/a/b/c",
        FAN_TOPIC,
        "fan/x/x/x/x/other",
    ]
    .iter()
    .map(|t| topic(t))
    .collect();

    // Warm-up, and the matches each round must find (the measured rounds do
    // reach the subscribers: nothing is skipped).
    let mut fan = 0;
    trie.matches(&topic(FAN_TOPIC), |_| fan += 1);
    // The 16 `fan/.../end` filters, `#` and one member of `$share/loggers/#`.
    assert_eq!(fan, 18);
    let mut expected = 0u64;
    for t in &topics {
        trie.matches(t, |_| expected += 1);
    }
    assert!(
        expected > 40,
        "the topics matched only {expected} subscriptions"
    );

    let (made, seen) = measure(&trie, &topics, 1000);
    assert_eq!(seen, expected);
    assert_eq!(made, 0, "{made} allocations over 1000 rounds of matches");
}

// (memory, no spec statement)
#[test]
fn matching_allocates_beyond_16_live_branches() {
    let mut trie = realistic();
    let topics = [topic(FAN_TOPIC)];
    let (made, _) = measure(&trie, &topics, 100);
    assert_eq!(made, 0, "16 live branches: {made} allocations");

    // One more filter at the last level: while `end` is matched, the 16
    // branches lead to 16 `end` nodes and, from `fan/x/x/x/x`, to its new
    // `+` node too: 17 alive at once.
    trie.subscribe(&filter("fan/x/x/x/x/+"), 9999, 1);
    let mut fan = 0;
    trie.matches(&topic(FAN_TOPIC), |_| fan += 1);
    assert_eq!(fan, 19);
    let (made, _) = measure(&trie, &topics, 100);
    assert!(
        made >= 100,
        "17 live branches: only {made} allocations in 100 matches"
    );
}
