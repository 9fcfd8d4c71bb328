//! Long churns of the subscription trie and the retained index checked against a model, the
//! deepest names and filters, and the defects a review of fulmar-topic found (each test failed
//! before its fix).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

use common::naive_matches;
use fulmar_topic::{
    RetainedIndex, SharedFilter, SubscriptionFilter, SubscriptionTrie, TopicError, TopicFilter,
    TopicName,
};

fn shared(s: &str) -> SharedFilter {
    match s.parse::<SubscriptionFilter>().unwrap() {
        SubscriptionFilter::Shared(s) => s,
        SubscriptionFilter::Plain(_) => panic!("not shared"),
    }
}

/// A key that counts how often it is compared.
#[derive(Clone, Debug)]
struct Counted(u32);

static COMPARED: AtomicU64 = AtomicU64::new(0);

impl std::hash::Hash for Counted {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}
impl PartialEq for Counted {
    fn eq(&self, other: &Self) -> bool {
        COMPARED.fetch_add(1, Ordering::Relaxed);
        self.0 == other.0
    }
}
impl Eq for Counted {}

/// `SubscriptionTrie::get` on a shared filter scanned the whole member list, although the group
/// keeps a member index for exactly this. The broker calls `get` for every subscription of a
/// session each time it stores it, so N persistent members of one group cost O(N^2).
// (cost, no spec statement)
#[test]
fn get_on_a_large_shared_group_does_not_scan_it() {
    const N: u32 = 10_000;
    let mut t = SubscriptionTrie::<Counted, u32>::new();
    let sf = shared("$share/g/jobs");
    for k in 0..N {
        t.insert_shared(&sf, Counted(k), k);
    }
    let filter = SubscriptionFilter::Shared(sf.clone());
    // Removal uses the index: a handful of comparisons.
    COMPARED.store(0, Ordering::Relaxed);
    assert_eq!(t.remove_shared(&sf, &Counted(N - 1)), Some(N - 1));
    let remove_cost = COMPARED.load(Ordering::Relaxed);
    t.insert_shared(&sf, Counted(N - 1), N - 1);
    // `get` of the same member.
    COMPARED.store(0, Ordering::Relaxed);
    assert_eq!(t.get(&filter, &Counted(N - 1)), Some(&(N - 1)));
    let get_cost = COMPARED.load(Ordering::Relaxed);
    assert!(
        get_cost < 10,
        "get compared {get_cost} keys (remove_shared: {remove_cost})"
    );
}

/// `SharedFilter::new` checked the ShareName but not the total length: it built a shared
/// filter whose text (`$share/{group}/{filter}`) is longer than 65 535 bytes, which no
/// SUBSCRIBE can carry and which did not parse back (Display/FromStr/serde did not round-trip).
// MQTT-4.7.3-3 v5:MQTT-4.8.2-1
#[test]
fn shared_filter_new_keeps_the_length_limit() {
    let filter: TopicFilter = "a".repeat(65_000).parse().unwrap();
    let group = "g".repeat(1_000);
    let built = SharedFilter::new(&group, filter);
    if let Ok(built) = built {
        let text = built.to_string();
        let back = text.parse::<SharedFilter>();
        assert!(
            back.as_ref().is_ok_and(|b| *b == built),
            "SharedFilter::new accepted a filter of {} bytes that does not parse back: {:?}",
            text.len(),
            back.err()
        );
    } else {
        assert_eq!(built, Err(TopicError::TooLong { len: 66_008 }));
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const LEVELS: &[&str] = &["a", "b", "", "$x", "c", "é", "dd"];

fn rand_name(r: &mut Rng) -> String {
    let n = 1 + r.below(7) as usize;
    let s: Vec<&str> = (0..n)
        .map(|_| LEVELS[r.below(LEVELS.len() as u64) as usize])
        .collect();
    let s = s.join("/");
    if s.is_empty() { "a".into() } else { s }
}

fn rand_filter(r: &mut Rng) -> String {
    let n = r.below(7) as usize;
    let mut s: Vec<&str> = (0..n)
        .map(|_| {
            if r.below(3) == 0 {
                "+"
            } else {
                LEVELS[r.below(LEVELS.len() as u64) as usize]
            }
        })
        .collect();
    if n == 0 || r.below(3) == 0 {
        s.push("#");
    }
    let s = s.join("/");
    if s.is_empty() { "#".into() } else { s }
}

/// Long churn of plain and shared subscriptions, deeper topics than the proptests, checked
/// against a model after every step batch; and the trie must shrink back when emptied.
// v3:MQTT-4.7.1-2 v3:MQTT-4.7.1-3 v5:MQTT-4.7.1-1 v5:MQTT-4.7.1-2 MQTT-4.7.2-1 v5:MQTT-4.8.2-2
#[test]
fn trie_churn_agrees_with_model() {
    churn(0x1234_5678_9abc_def1, 20, 60_000, rand_filter);
}

/// Many keys on few filters: large direct sets (hash maps) and groups past the member index
/// threshold (64).
// v3:MQTT-4.7.1-2 v3:MQTT-4.7.1-3 v5:MQTT-4.7.1-1 v5:MQTT-4.7.1-2 v5:MQTT-4.8.2-2
#[test]
fn trie_churn_crowded_agrees_with_model() {
    churn(0x7777_1234_5555_0001, 300, 120_000, |r| {
        ["a/+", "a/#", "#", "+/b", "a/b"][r.below(5) as usize].to_string()
    });
}

fn churn(seed: u64, keys: u64, steps: u32, gen_filter: fn(&mut Rng) -> String) {
    let mut r = Rng(seed);
    let mut t = SubscriptionTrie::<u32, u32>::new();
    // (filter text, group or "") -> key -> options
    let mut model: BTreeMap<(String, String, u32), u32> = BTreeMap::new();
    for step in 0..steps {
        let f = gen_filter(&mut r);
        let g = match r.below(4) {
            0 => "g1".to_string(),
            1 => "g2".to_string(),
            _ => String::new(),
        };
        let key = r.below(keys) as u32;
        let full = if g.is_empty() {
            f.clone()
        } else {
            format!("$share/{g}/{f}")
        };
        let sf: SubscriptionFilter = full.parse().unwrap();
        let (f_copy, g_copy) = (f.clone(), g.clone());
        match r.below(100) {
            0..=54 => {
                let old = t.subscribe(&sf, key, step);
                assert_eq!(old, model.insert((f, g, key), step), "subscribe {full}");
            }
            55..=98 => {
                let old = t.unsubscribe(&sf, &key);
                assert_eq!(old, model.remove(&(f, g, key)), "unsubscribe {full}");
            }
            _ => {
                let n = t.remove_key(&key);
                let before = model.len();
                model.retain(|(_, _, k), _| *k != key);
                assert_eq!(n, before - model.len());
            }
        }
        assert_eq!(t.len(), model.len());
        if step % 97 == 0 {
            assert_eq!(
                t.shared_len(),
                model.keys().filter(|(_, g, _)| !g.is_empty()).count()
            );
            let name = rand_name(&mut r);
            let topic: TopicName = name.parse().unwrap();
            let mut plain = BTreeSet::new();
            t.matches(&topic, |m| {
                if m.share_group.is_none() {
                    assert!(plain.insert((*m.key, *m.options)), "duplicate plain match");
                }
            });
            let expected: BTreeSet<(u32, u32)> = model
                .iter()
                .filter(|((f, g, _), _)| g.is_empty() && naive_matches(f, &name))
                .map(|((_, _, k), o)| (*k, *o))
                .collect();
            assert_eq!(plain, expected, "topic {name}");
            let mut n_shared = 0;
            t.matches(&topic, |m| {
                if let Some(g) = m.share_group {
                    n_shared += 1;
                    assert!(
                        model.iter().any(|((f, mg, k), o)| mg == g
                            && k == m.key
                            && o == m.options
                            && naive_matches(f, &name)),
                        "shared pick {g}/{} not a member",
                        m.key
                    );
                }
            });
            assert_eq!(
                t.get(&sf, &key),
                model.get(&(f_copy.clone(), g_copy.clone(), key))
            );
            let expected_groups: BTreeSet<(String, String)> = model
                .keys()
                .filter(|(f, g, _)| !g.is_empty() && naive_matches(f, &name))
                .map(|(f, g, _)| (f.clone(), g.clone()))
                .collect();
            assert_eq!(n_shared, expected_groups.len(), "topic {name}");
        }
    }
    for k in 0..keys as u32 {
        t.remove_key(&k);
    }
    assert_eq!(t.len(), 0);
    assert_eq!(t.shared_len(), 0);
    assert_eq!(
        format!("{t:?}"),
        "SubscriptionTrie { len: 0, nodes: 1, .. }"
    );
}

/// Long churn of the retained index, matched after deletions.
// v3:MQTT-3.3.1-10 v3:MQTT-3.3.1-11 v5:MQTT-3.3.1-5 v5:MQTT-3.3.1-6 v5:MQTT-3.3.1-7
// v3:MQTT-4.7.1-2 v3:MQTT-4.7.1-3 v5:MQTT-4.7.1-1 v5:MQTT-4.7.1-2 MQTT-4.7.2-1
#[test]
fn retained_churn_agrees_with_model() {
    let mut r = Rng(0x0fed_cba9_8765_4321);
    let mut idx: RetainedIndex<Vec<u8>> = RetainedIndex::new();
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for step in 0..60_000u32 {
        let name = rand_name(&mut r);
        let topic: TopicName = name.parse().unwrap();
        let v = if r.below(3) == 0 {
            Vec::new()
        } else {
            step.to_le_bytes().to_vec()
        };
        let old = idx.publish(topic, v.clone());
        let exp = if v.is_empty() {
            model.remove(&name)
        } else {
            model.insert(name, v)
        };
        assert_eq!(old, exp);
        if step % 101 == 0 {
            let f = rand_filter(&mut r);
            let filter: TopicFilter = f.parse().unwrap();
            let mut got = Vec::new();
            idx.matches(&filter, |t, v| got.push((t.to_string(), v.clone())));
            got.sort();
            let want: Vec<(String, Vec<u8>)> = model
                .iter()
                .filter(|(t, _)| naive_matches(&f, t))
                .map(|(t, v)| (t.clone(), v.clone()))
                .collect();
            assert_eq!(got, want, "filter {f}");
        }
    }
}

/// Deepest possible names and filters (65 535 levels for a name, 32 768 for a filter of `+`):
/// no recursion, no panic.
// MQTT-4.7.3-3 v3:MQTT-4.7.1-3 v5:MQTT-4.7.1-2
#[test]
fn deepest_topics_and_filters() {
    let name: TopicName = "/".repeat(65_534).parse().unwrap(); // 65 535 empty levels
    let plus = vec!["+"; 32_768].join("/");
    let plus: TopicFilter = plus.parse().unwrap();
    let mut hash = "/".repeat(65_533);
    hash.push('#');
    let hash: TopicFilter = hash.parse().unwrap();
    let mut trie = SubscriptionTrie::<u32, u32>::new();
    trie.insert(&plus, 1, 1);
    trie.insert(&hash, 2, 2);
    trie.insert(&TopicFilter::from(name.clone()), 3, 3);
    let mut n = 0;
    trie.matches(&name, |_| n += 1);
    let mut idx = RetainedIndex::new();
    idx.insert(name.clone(), 1u8);
    let mut m = 0;
    idx.matches(&hash, |_, _| m += 1);
    idx.matches(&plus, |_, _| m += 1);
    assert_eq!(
        trie.remove_key(&1) + trie.remove_key(&2) + trie.remove_key(&3),
        3
    );
    assert_eq!(idx.remove(&name), Some(1));
    // The name and the `#` filter match it; 32 768 `+` levels do not (the name has 65 535).
    assert_eq!((n, m), (2, 1));
}
