//! The subscription trie against a naive linear scan, under random inserts and removes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on bad fixtures

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{filter, naive_matches, name};
use fulmar_topic::{SubscriptionFilter, SubscriptionTrie, TopicFilter, TopicName, group_matches};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Subscribe {
        filter: String,
        group: Option<u8>,
        key: u8,
    },
    Unsubscribe {
        filter: String,
        group: Option<u8>,
        key: u8,
    },
    RemoveKey(u8),
}

/// Random operations over `keys` subscriber keys and filters from `filters`.
fn ops_with(filters: impl Strategy<Value = String> + Clone, keys: u8) -> impl Strategy<Value = Op> {
    let group = prop::option::weighted(0.25, 0..2u8);
    prop_oneof![
        4 => (filters.clone(), group.clone(), 0..keys)
            .prop_map(|(filter, group, key)| Op::Subscribe { filter, group, key }),
        2 => (filters, group, 0..keys)
            .prop_map(|(filter, group, key)| Op::Unsubscribe { filter, group, key }),
        1 => (0..keys).prop_map(Op::RemoveKey),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    ops_with(filter(), 5)
}

/// Few filters, many keys: subscriber sets grow past the inline and vector forms.
fn crowded_op() -> impl Strategy<Value = Op> {
    let filters = prop::sample::select(&["a/#", "a/+", "a/b", "#", "+/b", "$x/+"][..])
        .prop_map(str::to_owned);
    ops_with(filters, 40)
}

fn full_filter(filter: &str, group: Option<u8>) -> String {
    match group {
        Some(g) => format!("$share/g{g}/{filter}"),
        None => filter.to_owned(),
    }
}

/// The model: (filter, group, key) -> options, options unique per subscribe.
type Model = BTreeMap<(String, Option<u8>, u8), u32>;

/// Applies `ops` to the trie and to the model, then compares matches for `topics`.
fn check(ops: &[Op], topics: &[String]) -> Result<(), TestCaseError> {
    let mut trie: SubscriptionTrie<u8, u32> = SubscriptionTrie::new();
    let mut model = Model::new();
    let mut next_opt = 0u32;
    for op in ops {
        match op {
            Op::Subscribe { filter, group, key } => {
                next_opt += 1;
                let f: SubscriptionFilter = full_filter(filter, *group).parse().unwrap();
                let old = trie.subscribe(&f, *key, next_opt);
                let expected = model.insert((filter.clone(), *group, *key), next_opt);
                prop_assert_eq!(old, expected);
            }
            Op::Unsubscribe { filter, group, key } => {
                let f: SubscriptionFilter = full_filter(filter, *group).parse().unwrap();
                let old = trie.unsubscribe(&f, key);
                prop_assert_eq!(old, model.remove(&(filter.clone(), *group, *key)));
            }
            Op::RemoveKey(key) => {
                let before = model.len();
                model.retain(|(_, _, k), _| k != key);
                prop_assert_eq!(trie.remove_key(key), before - model.len());
            }
        }
        prop_assert_eq!(trie.len(), model.len());
    }
    for t in topics {
        let topic: TopicName = t.parse().unwrap();
        let mut direct = Vec::new();
        let mut shared = Vec::new();
        trie.matches(&topic, |m| match m.share_group {
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
        prop_assert_eq!(&direct, &expected, "topic {}", t);

        // Overlap is reported when non-shared subscriptions of more than one filter
        // match; grouped without sorting then, each key still gets one delivery.
        let mut plain = Vec::new();
        let overlap = trie.collect_plain_matches(&topic, &mut plain);
        let filters: BTreeSet<&String> = model
            .keys()
            .filter(|(f, g, _)| g.is_none() && naive_matches(f, t))
            .map(|(f, _, _)| f)
            .collect();
        prop_assert_eq!(overlap, filters.len() > 1, "topic {}", t);
        let mut per_key: BTreeMap<u8, Vec<u32>> = BTreeMap::new();
        for (k, o) in &expected {
            per_key.entry(*k).or_default().push(*o);
        }
        let mut grouped: Vec<(u8, Vec<u32>)> = group_matches(&mut plain, overlap)
            .map(|g| {
                let mut options: Vec<u32> = g.iter().map(|m| *m.options).collect();
                options.sort_unstable();
                (*g[0].key, options)
            })
            .collect();
        grouped.sort_unstable();
        prop_assert_eq!(
            grouped,
            per_key.into_iter().collect::<Vec<_>>(),
            "topic {}",
            t
        );

        // Exactly one member of every matching shared group.
        let groups: BTreeSet<(String, u8)> = model
            .keys()
            .filter(|(f, g, _)| g.is_some() && naive_matches(f, t))
            .map(|(f, g, _)| (f.clone(), g.unwrap_or_default()))
            .collect();
        prop_assert_eq!(shared.len(), groups.len(), "topic {}", t);
        let mut hit = BTreeSet::new();
        for (g, k, o) in &shared {
            let member = model
                .iter()
                .find(|((_, mg, mk), mo)| **mo == *o && *mk == *k && mg.is_some())
                .map(|((f, mg, _), _)| (f.clone(), mg.unwrap_or_default()));
            let member = member.expect("shared match is a member of a group");
            prop_assert_eq!(format!("g{}", member.1), g.clone());
            prop_assert!(groups.contains(&member));
            prop_assert!(hit.insert(member), "group hit twice");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    // MQTT-3.3.2-3 MQTT-4.7.2-1 MQTT-4.7.3-4 MQTT-3.8.4-3 MQTT-3.10.4-1 v5:MQTT-3.3.4-2
    #[test]
    fn trie_agrees_with_naive_scan(
        ops in prop::collection::vec(op(), 1..60),
        topics in prop::collection::vec(name(), 1..12),
    ) {
        check(&ops, &topics)?;
    }

    // MQTT-3.3.2-3 MQTT-3.8.4-3
    #[test]
    fn crowded_trie_agrees_with_naive_scan(
        ops in prop::collection::vec(crowded_op(), 1..300),
        topics in prop::collection::vec(name(), 1..8),
    ) {
        check(&ops, &topics)?;
    }

    // MQTT-4.7.2-1 MQTT-4.7.3-4
    #[test]
    fn single_filter_matching_agrees_with_naive(f in filter(), t in name()) {
        let filter: TopicFilter = f.parse().unwrap();
        let topic: TopicName = t.parse().unwrap();
        prop_assert_eq!(filter.matches(&topic), naive_matches(&f, &t));
    }

    #[test]
    fn parse_never_panics_and_round_trips(s in "[a-c/+#$\\x00é]{0,12}") {
        if let Ok(n) = s.parse::<TopicName>() {
            prop_assert_eq!(n.as_str(), s.as_str());
            prop_assert!(s.parse::<TopicFilter>().is_ok());
        }
        if let Ok(f) = s.parse::<TopicFilter>() {
            prop_assert_eq!(f.as_str(), s.as_str());
        }
        if let Ok(f) = s.parse::<SubscriptionFilter>() {
            prop_assert_eq!(f.to_string(), s);
        }
    }
}
