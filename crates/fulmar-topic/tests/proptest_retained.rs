//! The retained index against a naive scan of a map, under random stores and deletes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on bad fixtures

mod common;

use std::collections::BTreeMap;

use common::{filter, naive_matches, name};
use fulmar_topic::{RetainedIndex, TopicFilter, TopicName};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    // v5:MQTT-3.3.1-5 v5:MQTT-3.3.1-6 v3:MQTT-3.3.1-6 MQTT-4.7.2-1
    #[test]
    fn retained_agrees_with_naive_scan(
        ops in prop::collection::vec((name(), 0..4u32), 1..80),
        filters in prop::collection::vec(filter(), 1..12),
    ) {
        let mut index: RetainedIndex<Vec<u8>> = RetainedIndex::new();
        let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (i, (t, v)) in ops.iter().enumerate() {
            // Value 0 is an empty payload: a delete.
            let payload = if *v == 0 { Vec::new() } else { i.to_le_bytes().to_vec() };
            let topic: TopicName = t.parse().unwrap();
            let old = index.publish(topic, payload.clone());
            let expected = if payload.is_empty() {
                model.remove(t)
            } else {
                model.insert(t.clone(), payload)
            };
            prop_assert_eq!(old, expected);
            prop_assert_eq!(index.len(), model.len());
        }
        for f in &filters {
            let filter: TopicFilter = f.parse().unwrap();
            let mut got = Vec::new();
            index.matches(&filter, |t, v| got.push((t.to_string(), v.clone())));
            got.sort();
            let expected: Vec<(String, Vec<u8>)> = model
                .iter()
                .filter(|(t, _)| naive_matches(f, t))
                .map(|(t, v)| (t.clone(), v.clone()))
                .collect();
            prop_assert_eq!(got, expected, "filter {}", f);
        }
        for (t, v) in &model {
            let topic: TopicName = t.parse().unwrap();
            prop_assert_eq!(index.get(&topic), Some(v));
        }
    }
}
