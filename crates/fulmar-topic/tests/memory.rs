//! Bytes of heap per subscription, measured with a counting global allocator.
//!
//! The 1 M figure quoted in `benches/README.md` comes from the ignored test:
//! `cargo test --release -p fulmar-topic --test memory -- --ignored --nocapture`.
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on bad fixtures

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::num::NonZeroU32;

use fulmar_topic::{RetainedIndex, SubscriptionTrie, TopicFilter, TopicName};

/// Counts live heap bytes, per thread: tests run in parallel threads, and a
/// global counter would charge one test with another's allocations.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn add(delta: isize) {
    // `try_with`: the slot may be gone while a thread is being torn down.
    let _ = LIVE.try_with(|live| live.set(live.get() + delta));
}

/// Live heap bytes allocated by the current thread.
fn live() -> usize {
    LIVE.with(|live| usize::try_from(live.get()).unwrap_or(0))
}

// SAFETY: every call is forwarded unchanged to the system allocator; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        add(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size as isize);
            add(-(layout.size() as isize));
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Measurements run one at a time, to keep the peak memory of the test binary down.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Subscription options as a broker keeps them: 8 bytes.
#[allow(dead_code)]
#[derive(Clone, Copy)]
struct Options {
    qos: u8,
    no_local: bool,
    retain_as_published: bool,
    retain_handling: u8,
    subscription_identifier: Option<NonZeroU32>,
}

const OPTIONS: Options = Options {
    qos: 1,
    no_local: false,
    retain_as_published: false,
    retain_handling: 0,
    subscription_identifier: NonZeroU32::new(7),
};

/// `sites` x 1000 filters `site/{n}/device/{m}/+`, each subscribed by its own client (a `u64`
/// key), plus every 100th client also on `site/{n}/#` and every 1000th in a shared group.
/// Returns (subscriptions, heap bytes of the trie).
fn measure(sites: usize) -> (usize, usize) {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let filters: Vec<TopicFilter> = (0..sites)
        .flat_map(|n| (0..1000).map(move |m| format!("site/{n}/device/{m}/+")))
        .map(|f| f.parse().unwrap())
        .collect();
    let site_filters: Vec<TopicFilter> = (0..sites)
        .map(|n| format!("site/{n}/#").parse().unwrap())
        .collect();
    let shared: Vec<fulmar_topic::SharedFilter> = (0..sites)
        .map(|n| format!("$share/workers/site/{n}/#").parse().unwrap())
        .collect();

    let before = live();
    let mut trie: SubscriptionTrie<u64, Options> = SubscriptionTrie::new();
    for (i, f) in filters.iter().enumerate() {
        trie.insert(f, i as u64, OPTIONS);
        if i % 100 == 0 {
            trie.insert(&site_filters[i / 1000], i as u64, OPTIONS);
        }
        if i % 1000 == 0 {
            trie.insert_shared(&shared[i / 1000], i as u64, OPTIONS);
        }
    }
    let after = live();

    // The trie answers correctly at this size too.
    let topic: TopicName = "site/3/device/42/temp".parse().unwrap();
    let mut hits = 0;
    trie.matches(&topic, |_| hits += 1);
    assert_eq!(hits, 1 + 10 + 1, "exact, site/3/# and one shared member");
    let len = trie.len();
    drop(trie);
    (len, after - before)
}

#[test]
fn bytes_per_subscription_100k() {
    let (subs, bytes) = measure(100);
    let per_sub = bytes / subs;
    println!("{subs} subscriptions: {bytes} bytes, {per_sub} bytes per subscription");
    assert_eq!(subs, 100_000 + 1_000 + 100);
    assert!(per_sub <= 180, "{per_sub} bytes per subscription");
}

#[test]
fn retained_bytes_per_message_100k() {
    let names: Vec<TopicName> = (0..100)
        .flat_map(|n| (0..1000).map(move |m| format!("site/{n}/device/{m}/status")))
        .map(|t| t.parse().unwrap())
        .collect();
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let before = live();
    let mut retained: RetainedIndex<u64> = RetainedIndex::new();
    for (i, t) in names.iter().enumerate() {
        retained.insert(t.clone(), i as u64);
    }
    let bytes = live() - before;
    let per_msg = bytes / retained.len();
    println!(
        "{} retained: {bytes} bytes, {per_msg} bytes per message (names shared with the caller)",
        retained.len()
    );
    assert!(per_msg <= 230, "{per_msg} bytes per retained message");
}

/// The 1 M figure for the README; slow in debug builds, so run on demand.
#[test]
#[ignore = "builds 1 M subscriptions; run with --release --ignored"]
fn bytes_per_subscription_1m() {
    let (subs, bytes) = measure(1000);
    println!(
        "{subs} subscriptions: {bytes} bytes, {} bytes per subscription",
        bytes / subs
    );
    assert!(bytes / subs <= 180);
}
