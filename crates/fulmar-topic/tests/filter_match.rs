//! Single-filter matching: the examples of section 4.7 of both specs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on bad fixtures

use fulmar_topic::{TopicFilter, TopicName};

fn m(filter: &str, name: &str) -> bool {
    let f: TopicFilter = filter.parse().unwrap();
    let n: TopicName = name.parse().unwrap();
    f.matches(&n)
}

// v5:MQTT-4.7.1-1 v3:MQTT-4.7.1-2
#[test]
fn multi_level_wildcard_matches_parent_and_children() {
    assert!(m("sport/tennis/player1/#", "sport/tennis/player1"));
    assert!(m("sport/tennis/player1/#", "sport/tennis/player1/ranking"));
    assert!(m(
        "sport/tennis/player1/#",
        "sport/tennis/player1/score/wimbledon"
    ));
    assert!(m("sport/#", "sport"));
    assert!(m("#", "anything/at/all"));
    assert!(!m("sport/tennis/player1/#", "sport/tennis/player2"));
}

// v5:MQTT-4.7.1-2 v3:MQTT-4.7.1-3
#[test]
fn single_level_wildcard_matches_one_level() {
    assert!(m("sport/tennis/+", "sport/tennis/player1"));
    assert!(m("sport/tennis/+", "sport/tennis/player2"));
    assert!(!m("sport/tennis/+", "sport/tennis/player1/ranking"));
    assert!(!m("sport/+", "sport"));
    assert!(m("sport/+", "sport/"));
    assert!(m("+/+", "/finance"));
    assert!(m("/+", "/finance"));
    assert!(!m("+", "/finance"));
    assert!(m("+/tennis/#", "sport/tennis/x/y"));
}

// MQTT-4.7.2-1
#[test]
fn mqtt_4_7_2_1_wildcard_first_filters_do_not_match_dollar_names() {
    assert!(!m("#", "$SYS/broker/uptime"));
    assert!(!m("+/monitor/Clients", "$SYS/monitor/Clients"));
    assert!(m("$SYS/#", "$SYS/monitor/Clients"));
    assert!(m("$SYS/monitor/+", "$SYS/monitor/Clients"));
    assert!(!m("+", "$"));
    // Only the first character counts: a `$` deeper down is an ordinary level.
    assert!(m("a/+", "a/$b"));
    assert!(m("a/#", "a/$b/c"));
}

// MQTT-4.7.3-4
#[test]
fn mqtt_4_7_3_4_levels_match_byte_for_byte() {
    assert!(!m("ACCOUNTS", "Accounts"));
    assert!(!m("/finance", "finance"));
    assert!(!m("finance", "/finance"));
    assert!(m("a//b", "a//b"));
    assert!(!m("a/b", "a//b"));
    assert!(m("a/+/b", "a//b"));
}

/// Two filters overlap when some topic name matches both; the witness
/// name of each overlapping pair matches both.
// v5:MQTT-4.7.2-1 (a leading wildcard does not match `$` topics)
#[test]
fn overlapping_filters_share_a_matching_name() {
    let f = |s: &str| s.parse::<TopicFilter>().unwrap();
    for (a, b, witness) in [
        ("a/b", "a/b", Some("a/b")),
        ("a/b", "a/c", None),
        ("a/+", "a/b", Some("a/b")),
        ("a/+", "a/b/c", None),
        ("a/#", "a", Some("a")),
        ("a/#", "a/b/c", Some("a/b/c")),
        ("+/b", "a/+", Some("a/b")),
        ("#", "x/y", Some("x/y")),
        ("#", "$SYS/x", None),
        ("+/x", "$SYS/x", None),
        ("$SYS/#", "$SYS/broker/x", Some("$SYS/broker/x")),
        ("a/b/c", "a/b", None),
        ("sensors/#", "cmd/#", None),
    ] {
        assert_eq!(f(a).overlaps(&f(b)), witness.is_some(), "{a} {b}");
        assert_eq!(f(b).overlaps(&f(a)), witness.is_some(), "{b} {a}");
        if let Some(name) = witness {
            assert!(m(a, name) && m(b, name), "{a} {b} {name}");
        }
    }
}
