//! The topic <-> subject mapping against the MQTT topic rules (fulmar_topic
//! decides MQTT matching; NATS matching is token wise).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use fulmar_cluster::subject::{Subjects, nats_matches};
use fulmar_topic::{TopicFilter, TopicName};
use proptest::prelude::*;

fn subjects() -> Subjects {
    Subjects::new("fulmar.msg").unwrap()
}

/// A level of a topic name: tricky fixed ones, and arbitrary text without
/// `/`, wildcards or NUL.
fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "a", "b", "", "$", "$SYS", "a$", ".", "..", "*", ">", "%", "%25", "%2E", " ", "\t",
            "a b", "é", "日本", "\u{7f}", "\u{1}", "a.b", "x*", ">y", "\u{feff}", "\u{a0}",
        ])
        .prop_map(str::to_owned),
        1 => "[^/+#\u{0}]{0,6}",
    ]
}

fn topic() -> impl Strategy<Value = TopicName> {
    prop::collection::vec(level(), 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter_map("valid topic name", |s| s.parse().ok())
}

/// A filter built from levels of the same alphabet, `+` anywhere, `#` last.
fn filter() -> impl Strategy<Value = TopicFilter> {
    let level = prop_oneof![3 => level(), 1 => Just("+".to_owned())];
    (prop::collection::vec(level, 0..4), any::<bool>())
        .prop_map(|(mut levels, hash)| {
            if hash || levels.is_empty() {
                levels.push("#".to_owned());
            }
            levels.join("/")
        })
        .prop_filter_map("valid filter", |s| s.parse().ok())
}

/// A topic that often matches `filter`: its literal levels, a random level
/// for each `+`, zero or more for `#`.
fn topic_near(filter: &TopicFilter, extra: &[String], dollar: bool) -> Option<TopicName> {
    let mut extra = extra.iter();
    let mut levels = Vec::new();
    for level in filter.levels() {
        match level {
            "+" => levels.push(extra.next().cloned().unwrap_or_default()),
            "#" => levels.extend(extra.by_ref().cloned()),
            level => levels.push(level.to_owned()),
        }
    }
    let mut topic = levels.join("/");
    if dollar {
        topic.insert(0, '$');
    }
    topic.parse().ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_topic_name_round_trips(topic in topic()) {
        let s = subjects();
        let subject = s.topic(&topic);
        // A subject a NATS server accepts: no whitespace, no empty token,
        // no wildcard token, printable ASCII.
        prop_assert!(subject.bytes().all(|b| b.is_ascii_graphic()), "{subject:?}");
        prop_assert!(subject.split('.').all(|t| !t.is_empty() && !t.contains(['*', '>'])));
        prop_assert_eq!(s.parse_topic(&subject), Some(topic));
    }

    // MQTT-4.7.1-2, MQTT-4.7.1-3 (wildcards), MQTT-4.7.2-1 (the `$` rule).
    #[test]
    fn a_filter_matches_in_nats_exactly_what_it_matches_in_mqtt(
        filter in filter(),
        topic in topic(),
        extra in prop::collection::vec(level(), 0..4),
        dollar in any::<bool>(),
    ) {
        let s = subjects();
        let patterns = s.filter(&filter);
        prop_assert!(!patterns.is_empty() && patterns.len() <= 2);
        for pattern in &patterns {
            prop_assert!(pattern.split('.').all(|t| !t.is_empty()), "{pattern:?}");
        }
        let near = topic_near(&filter, &extra, dollar);
        for topic in std::iter::once(topic).chain(near) {
            let subject = s.topic(&topic);
            let hits = patterns.iter().filter(|p| nats_matches(p, &subject)).count();
            // One subject at most: a queue group on both gets a message once.
            prop_assert!(hits <= 1, "{filter} {topic}: {patterns:?}");
            prop_assert_eq!(
                hits == 1,
                filter.matches(&topic),
                "filter {} topic {:?} subject {} patterns {:?}",
                filter, topic.as_str(), subject, patterns
            );
        }
    }

    #[test]
    fn foreign_subjects_are_not_topics(subject in "[a-z%.*>$ ]{0,12}") {
        // Whatever parses must be the canonical subject of its topic.
        let s = subjects();
        let full = format!("fulmar.msg.{subject}");
        if let Some(topic) = s.parse_topic(&full) {
            prop_assert_eq!(s.topic(&topic), full);
        }
    }
}

#[test]
fn the_dollar_rule_in_subjects() {
    // MQTT-4.7.2-1
    let s = subjects();
    let sys: TopicName = "$SYS/broker/load".parse().unwrap();
    let subject = s.topic(&sys);
    for filter in ["#", "+/broker/load", "+/#"] {
        let patterns = s.filter(&filter.parse().unwrap());
        assert!(
            !patterns.iter().any(|p| nats_matches(p, &subject)),
            "{filter}"
        );
    }
    for filter in ["$SYS/#", "$SYS/+/load", "$SYS/broker/load"] {
        let patterns = s.filter(&filter.parse().unwrap());
        assert!(
            patterns.iter().any(|p| nats_matches(p, &subject)),
            "{filter}"
        );
    }
}
