//! The checks of the `topic_parse` fuzz target, shared with the corpus replay test of
//! fulmar-topic (`crates/fulmar-topic/tests/fuzz_corpus.rs` includes this file with
//! `#[path]`). Only fulmar-topic, `bytes` and std may be used here.
//!
//! [`check_topic`] runs two independent checks on the same input:
//!
//! - **Parsing**: the whole input, as a topic name, a topic filter, a shared filter and a
//!   subscription filter, is accepted exactly when a naive transcription of the spec rules
//!   (MQTT 5.0 sections 4.7 and 4.8.2) accepts it, and parsed values display as the input.
//!   If the input holds a newline, the text before it as a filter is matched against the
//!   text after it as a name, and [`TopicFilter::matches`] must agree with a naive matcher.
//! - **Trie**: the input is read as a script of subscribe / unsubscribe / publish /
//!   remove-key operations over a tiny alphabet of levels (so that filters and names
//!   collide); the [`SubscriptionTrie`] and the [`RetainedIndex`] must agree with a naive
//!   model at every step.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use fulmar_topic::{
    RetainedIndex, SharedFilter, SubscriptionFilter, SubscriptionTrie, TopicFilter, TopicName,
};

/// Runs every check on `data`; panics when one fails.
pub fn check_topic(data: &[u8]) {
    check_parsing(data);
    check_trie(data);
}

/// MQTT-4.7.3-1, MQTT-4.7.3-2, MQTT-4.7.3-3: 1 to 65 535 bytes, no U+0000.
fn naive_common(s: &str) -> bool {
    !s.is_empty() && s.len() <= 65_535 && !s.contains('\0')
}

/// MQTT-4.7.0-1: wildcards only in filters.
pub fn naive_name(s: &str) -> bool {
    naive_common(s) && !s.contains(['+', '#'])
}

/// MQTT-4.7.1-1, MQTT-4.7.1-2: `#` alone and last, `+` alone in its level.
pub fn naive_filter(s: &str) -> bool {
    let levels: Vec<&str> = s.split('/').collect();
    let last = levels.len() - 1;
    naive_common(s)
        && levels.iter().enumerate().all(|(i, l)| {
            (!l.contains('#') || (*l == "#" && i == last)) && (!l.contains('+') || *l == "+")
        })
}

/// MQTT-4.8.2-1, MQTT-4.8.2-2: `$share/`, a ShareName without `/`, `+`, `#`, then `/` and a
/// filter.
pub fn naive_shared(s: &str) -> Option<(&str, &str)> {
    let rest = s.strip_prefix("$share/")?;
    let (group, filter) = rest.split_once('/')?;
    (naive_common(s) && !group.is_empty() && !group.contains(['+', '#']) && naive_filter(filter))
        .then_some((group, filter))
}

/// Section 4.7: level by level; `+` one level, `#` the parent and everything below; no
/// wildcard-first filter matches a `$` name (MQTT-4.7.2-1).
pub fn naive_matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let f: Vec<&str> = filter.split('/').collect();
    let n: Vec<&str> = name.split('/').collect();
    for (i, level) in f.iter().enumerate() {
        if *level == "#" {
            return true;
        }
        match n.get(i) {
            Some(t) if *level == "+" || level == t => {}
            _ => return false,
        }
    }
    f.len() == n.len()
}

fn check_parsing(data: &[u8]) {
    let name = TopicName::from_bytes(Bytes::copy_from_slice(data));
    let filter = TopicFilter::from_bytes(Bytes::copy_from_slice(data));
    let Ok(s) = core::str::from_utf8(data) else {
        assert!(name.is_err(), "a topic name must be UTF-8");
        assert!(filter.is_err(), "a topic filter must be UTF-8");
        return;
    };
    assert_eq!(
        name,
        s.parse::<TopicName>(),
        "from_bytes and parse disagree"
    );
    assert_eq!(
        filter,
        s.parse::<TopicFilter>(),
        "from_bytes and parse disagree"
    );

    assert_eq!(
        name.is_ok(),
        naive_name(s),
        "TopicName validity of {s:?}: {name:?}"
    );
    if let Ok(n) = &name {
        assert_eq!(n.as_str(), s);
        assert_eq!(n.to_string(), s);
        assert_eq!(n.levels().collect::<Vec<_>>().join("/"), s);
        assert_eq!(n.is_dollar(), s.starts_with('$'));
    }
    assert_eq!(
        filter.is_ok(),
        naive_filter(s),
        "TopicFilter validity of {s:?}: {filter:?}"
    );
    if let Ok(f) = &filter {
        assert_eq!(f.as_str(), s);
        assert_eq!(f.to_string(), s);
        assert_eq!(f.levels().collect::<Vec<_>>().join("/"), s);
        assert_eq!(f.has_wildcards(), s.contains(['+', '#']));
    }
    if let (Ok(n), Ok(f)) = (&name, &filter) {
        // A filter without wildcards matches exactly the name it spells.
        assert!(f.matches(n), "{f} must match itself");
    }

    let shared = s.parse::<SharedFilter>();
    match (&shared, naive_shared(s)) {
        (Ok(sh), Some((group, f))) => {
            assert_eq!(sh.group(), group);
            assert_eq!(sh.filter().as_str(), f);
            assert_eq!(sh.to_string(), s);
        }
        (Err(_), None) => {}
        (got, want) => panic!("SharedFilter of {s:?}: got {got:?}, naive {want:?}"),
    }
    let sub = s.parse::<SubscriptionFilter>();
    if s.starts_with("$share/") {
        assert_eq!(sub.ok(), shared.ok().map(SubscriptionFilter::Shared));
    } else {
        assert_eq!(sub.ok(), filter.ok().map(SubscriptionFilter::Plain));
    }

    if let Some((f, n)) = s.split_once('\n')
        && let (Ok(tf), Ok(tn)) = (f.parse::<TopicFilter>(), n.parse::<TopicName>())
    {
        assert_eq!(tf.matches(&tn), naive_matches(f, n), "{f:?} against {n:?}");
    }
}

/// The level alphabet of the trie script: `$` levels, the empty level, non-ASCII text and
/// both wildcards.
const LEVELS: [&str; 8] = ["a", "b", "c", "", "$s", "+", "#", "é"];

/// At most this many operations per input, so that each run stays fast.
const MAX_OPS: usize = 64;

/// The naive model: (filter, share group, key) -> options.
type Model = BTreeMap<(String, Option<u8>, u8), u32>;

/// One operation of the trie script.
enum Op {
    Subscribe(String, Option<u8>, u8),
    Unsubscribe(String, Option<u8>, u8),
    Publish(String),
    RemoveKey(u8),
}

/// Reads the script: a header byte (bits 0-1 the operation, 2-3 the key, bit 4 shared, bit 5
/// the group), then for every operation but remove-key, level bytes (bits 0-2 pick the level,
/// bit 3 ends the topic).
fn script(data: &[u8]) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut bytes = data.iter().copied();
    while ops.len() < MAX_OPS
        && let Some(h) = bytes.next()
    {
        let key = (h >> 2) & 3;
        let group = (h & 0x10 != 0).then_some((h >> 5) & 1);
        if h & 3 == 3 {
            ops.push(Op::RemoveKey(key));
            continue;
        }
        let mut levels = Vec::new();
        for b in bytes.by_ref() {
            levels.push(LEVELS.get(usize::from(b & 7)).copied().unwrap_or("a"));
            if b & 8 != 0 || levels.len() >= 6 {
                break;
            }
        }
        let topic = levels.join("/");
        ops.push(match h & 3 {
            0 => Op::Subscribe(topic, group, key),
            1 => Op::Unsubscribe(topic, group, key),
            _ => Op::Publish(topic),
        });
    }
    ops
}

fn full_filter(filter: &str, group: Option<u8>) -> String {
    match group {
        Some(g) => format!("$share/g{g}/{filter}"),
        None => filter.to_owned(),
    }
}

/// The subscription filter of a script operation; `None` (checked against the naive rules)
/// when the levels do not make a valid filter.
fn parse_subscription(filter: &str, group: Option<u8>) -> Option<SubscriptionFilter> {
    let parsed = full_filter(filter, group)
        .parse::<SubscriptionFilter>()
        .ok();
    assert_eq!(
        parsed.is_some(),
        naive_filter(filter),
        "validity of {filter:?}"
    );
    parsed
}

fn check_trie(data: &[u8]) {
    let mut trie: SubscriptionTrie<u8, u32> = SubscriptionTrie::new();
    let mut model = Model::new();
    let mut retained: RetainedIndex<u32> = RetainedIndex::new();
    let mut names: BTreeMap<String, u32> = BTreeMap::new();
    let mut seq = 0u32;
    for op in script(data) {
        seq += 1;
        match op {
            Op::Subscribe(f, group, key) => {
                let Some(sf) = parse_subscription(&f, group) else {
                    continue;
                };
                let old = trie.subscribe(&sf, key, seq);
                assert_eq!(old, model.insert((f, group, key), seq), "subscribe {sf}");
                assert_eq!(trie.get(&sf, &key), Some(&seq));
                check_retained(&retained, &names, sf.filter());
            }
            Op::Unsubscribe(f, group, key) => {
                let Some(sf) = parse_subscription(&f, group) else {
                    continue;
                };
                let old = trie.unsubscribe(&sf, &key);
                assert_eq!(old, model.remove(&(f, group, key)), "unsubscribe {sf}");
                assert_eq!(trie.get(&sf, &key), None);
            }
            Op::Publish(t) => {
                let Ok(name) = t.parse::<TopicName>() else {
                    assert!(!naive_name(&t), "{t:?} is a valid name");
                    continue;
                };
                check_matches(&trie, &model, &name);
                let old = retained.insert(name, seq);
                assert_eq!(old, names.insert(t, seq), "retained insert");
            }
            Op::RemoveKey(key) => {
                let before = model.len();
                model.retain(|(_, _, k), _| *k != key);
                assert_eq!(
                    trie.remove_key(&key),
                    before - model.len(),
                    "remove_key {key}"
                );
            }
        }
        assert_eq!(trie.len(), model.len(), "trie length");
        assert_eq!(retained.len(), names.len(), "retained length");
    }
}

/// Every non-shared subscription whose filter matches, and one member of every matching
/// shared group.
fn check_matches(trie: &SubscriptionTrie<u8, u32>, model: &Model, name: &TopicName) {
    let t = name.as_str();
    let mut direct = Vec::new();
    let mut shared = Vec::new();
    trie.matches(name, |m| match m.share_group {
        None => direct.push((*m.key, *m.options)),
        Some(g) => shared.push((g.to_owned(), *m.key, *m.options)),
    });
    direct.sort_unstable();
    let mut expected: Vec<(u8, u32)> = model
        .iter()
        .filter(|((f, g, _), _)| g.is_none() && naive_matches(f, t))
        .map(|((_, _, k), o)| (*k, *o))
        .collect();
    expected.sort_unstable();
    assert_eq!(direct, expected, "non-shared matches of {t:?}");

    let groups: BTreeSet<(&str, u8)> = model
        .keys()
        .filter_map(|(f, g, _)| g.filter(|_| naive_matches(f, t)).map(|g| (f.as_str(), g)))
        .collect();
    let mut hit = BTreeSet::new();
    for (group, key, options) in &shared {
        let member = model
            .iter()
            .find(|((_, g, k), o)| g.is_some() && k == key && *o == options)
            .and_then(|((f, g, _), _)| g.map(|g| (f.as_str(), g)));
        let Some(member) = member else {
            panic!("shared match {group} {key} {options} is no subscription of the model");
        };
        assert_eq!(format!("g{}", member.1), *group, "share group name");
        assert!(groups.contains(&member), "{member:?} does not match {t:?}");
        assert!(
            hit.insert(member),
            "group {member:?} delivered twice for {t:?}"
        );
    }
    assert_eq!(
        hit, groups,
        "one delivery per matching shared group of {t:?}"
    );
}

/// The retained index finds exactly the stored names the filter matches.
fn check_retained(retained: &RetainedIndex<u32>, names: &BTreeMap<String, u32>, f: &TopicFilter) {
    let mut found: Vec<(String, u32)> = Vec::new();
    retained.matches(f, |n, v| found.push((n.as_str().to_owned(), *v)));
    found.sort_unstable();
    let expected: Vec<(String, u32)> = names
        .iter()
        .filter(|(n, _)| naive_matches(f.as_str(), n))
        .map(|(n, v)| (n.clone(), *v))
        .collect();
    assert_eq!(found, expected, "retained matches of {f}");
}
