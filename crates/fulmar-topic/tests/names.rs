//! Validation of topic names, topic filters and shared subscription filters.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on bad fixtures

use bytes::Bytes;
use fulmar_topic::{SharedFilter, SubscriptionFilter, TopicError, TopicFilter, TopicName};

fn name(s: &str) -> Result<TopicName, TopicError> {
    s.parse()
}

fn filter(s: &str) -> Result<TopicFilter, TopicError> {
    s.parse()
}

// MQTT-4.7.3-1
#[test]
fn mqtt_4_7_3_1_names_and_filters_are_at_least_one_character() {
    assert_eq!(name(""), Err(TopicError::Empty));
    assert_eq!(filter(""), Err(TopicError::Empty));
    assert!(name("a").is_ok());
    // A name or filter of only "/" is valid: two empty levels.
    assert_eq!(name("/").unwrap().levels().collect::<Vec<_>>(), ["", ""]);
    assert!(filter("/").is_ok());
}

// MQTT-4.7.3-2 v5:MQTT-1.5.4-2 v3:MQTT-1.5.3-2
#[test]
fn mqtt_4_7_3_2_no_null_character() {
    assert_eq!(name("a\0b"), Err(TopicError::NullCharacter));
    assert_eq!(filter("a/\0/#"), Err(TopicError::NullCharacter));
    assert_eq!(
        "$share/g\0/a".parse::<SharedFilter>(),
        Err(TopicError::NullCharacter)
    );
}

// MQTT-4.7.3-3
#[test]
fn mqtt_4_7_3_3_at_most_65535_bytes() {
    let longest = "a".repeat(65_535);
    assert!(name(&longest).is_ok());
    assert!(filter(&longest).is_ok());
    let too_long = "a".repeat(65_536);
    assert_eq!(name(&too_long), Err(TopicError::TooLong { len: 65_536 }));
    assert_eq!(filter(&too_long), Err(TopicError::TooLong { len: 65_536 }));
    // The deepest legal topic, 65 536 empty levels, validates too.
    let slashes = "/".repeat(65_535);
    assert_eq!(name(&slashes).unwrap().levels().count(), 65_536);
}

// v5:MQTT-1.5.4-1 v3:MQTT-1.5.3-1 MQTT-3.3.2-1 MQTT-3.8.3-1 MQTT-3.10.3-1
#[test]
fn ill_formed_utf8_is_refused_from_bytes() {
    // An encoded surrogate (U+D800) and a lone continuation byte.
    for bad in [&b"a/\xED\xA0\x80"[..], b"\x80", b"a/\xFF"] {
        let bytes = Bytes::copy_from_slice(bad);
        assert_eq!(
            TopicName::from_bytes(bytes.clone()),
            Err(TopicError::InvalidUtf8)
        );
        assert_eq!(TopicFilter::from_bytes(bytes), Err(TopicError::InvalidUtf8));
    }
    let ok = TopicName::from_bytes(Bytes::from_static("sensé/°C".as_bytes())).unwrap();
    assert_eq!(ok.as_str(), "sensé/°C");
}

// v5:MQTT-1.5.4-3 v3:MQTT-1.5.3-3 MQTT-4.7.3-4
#[test]
fn byte_order_mark_is_kept_and_nothing_is_normalised() {
    let with_bom = name("\u{FEFF}a").unwrap();
    assert_eq!(with_bom.as_bytes(), b"\xEF\xBB\xBFa");
    assert_ne!(with_bom, name("a").unwrap());
    // Case, spaces, and composed vs decomposed forms stay distinct.
    assert_ne!(name("ACCOUNTS").unwrap(), name("Accounts").unwrap());
    assert!(name("Accounts payable").is_ok());
    assert_ne!(name("caf\u{e9}").unwrap(), name("cafe\u{301}").unwrap());
    assert!(
        !filter("caf\u{e9}")
            .unwrap()
            .matches(&name("cafe\u{301}").unwrap())
    );
}

// MQTT-3.3.2-2 v5:MQTT-4.7.0-1 v3:MQTT-4.7.1-1 v5:MQTT-3.3.2-14
#[test]
fn mqtt_3_3_2_2_topic_name_has_no_wildcards() {
    for bad in ["+", "#", "a/+", "a/#", "a+", "sport/tennis#", "+/x"] {
        assert_eq!(name(bad), Err(TopicError::WildcardInName), "{bad}");
    }
    // The same characters are fine in filters, as whole levels.
    assert!(filter("a/+/#").is_ok());
}

// v5:MQTT-4.7.1-1 v3:MQTT-4.7.1-2
#[test]
fn multi_level_wildcard_is_alone_and_last() {
    for ok in ["#", "sport/#", "sport/tennis/#", "/#", "+/#"] {
        assert!(filter(ok).is_ok(), "{ok}");
    }
    for bad in [
        "sport/tennis#",
        "sport/tennis/#/ranking",
        "#/",
        "##",
        "a/#b",
        "#/#",
    ] {
        assert_eq!(
            filter(bad),
            Err(TopicError::MisplacedMultiLevelWildcard),
            "{bad}"
        );
    }
}

// v5:MQTT-4.7.1-2 v3:MQTT-4.7.1-3
#[test]
fn single_level_wildcard_occupies_a_whole_level() {
    for ok in [
        "+",
        "+/tennis/#",
        "sport/+/player1",
        "+/+",
        "/+",
        "+/",
        "a/+/+/b",
    ] {
        assert!(filter(ok).is_ok(), "{ok}");
    }
    for bad in ["sport+", "a/+b", "++", "a/b+/c"] {
        assert_eq!(
            filter(bad),
            Err(TopicError::MisplacedSingleLevelWildcard),
            "{bad}"
        );
    }
}

// v5:MQTT-4.8.2-1
#[test]
fn shared_filter_needs_share_prefix_and_a_share_name() {
    assert_eq!(
        "$share//a".parse::<SharedFilter>(),
        Err(TopicError::EmptyShareName)
    );
    assert_eq!(
        "$share/".parse::<SharedFilter>(),
        Err(TopicError::EmptyShareName)
    );
    assert_eq!(
        "a/b".parse::<SharedFilter>(),
        Err(TopicError::EmptyShareName)
    );
    let s: SharedFilter = "$share/consumer1/sport/tennis/+".parse().unwrap();
    assert_eq!(s.group(), "consumer1");
    assert_eq!(s.filter().as_str(), "sport/tennis/+");
    assert_eq!(s.to_string(), "$share/consumer1/sport/tennis/+");
}

// v5:MQTT-4.8.2-2
#[test]
fn share_name_has_no_wildcard_and_is_followed_by_a_filter() {
    for bad in ["$share/g+/a", "$share/#/a", "$share/a#b/x", "$share/+"] {
        assert_eq!(
            bad.parse::<SharedFilter>(),
            Err(TopicError::InvalidShareName),
            "{bad}"
        );
    }
    for bad in ["$share/group", "$share/group/"] {
        assert_eq!(
            bad.parse::<SharedFilter>(),
            Err(TopicError::MissingSharedFilter),
            "{bad}"
        );
    }
    // The filter after the ShareName obeys the filter rules.
    assert_eq!(
        "$share/g/a#".parse::<SharedFilter>(),
        Err(TopicError::MisplacedMultiLevelWildcard)
    );
    // "$share/consumer1//finance" shares the filter "/finance".
    let s: SharedFilter = "$share/consumer1//finance".parse().unwrap();
    assert_eq!(s.filter().as_str(), "/finance");
    assert!(SharedFilter::new("g/h", s.filter().clone()).is_err());
}

#[test]
fn subscription_filter_tells_shared_from_plain() {
    let plain: SubscriptionFilter = "$shared/a".parse().unwrap();
    assert_eq!(plain.group(), None);
    assert_eq!(plain.filter().as_str(), "$shared/a");
    let plain: SubscriptionFilter = "$share".parse().unwrap();
    assert_eq!(plain.group(), None);
    let shared: SubscriptionFilter = "$share/g/#".parse().unwrap();
    assert_eq!(shared.group(), Some("g"));
    assert_eq!(shared.filter().as_str(), "#");
    assert_eq!(shared.to_string(), "$share/g/#");
}

#[test]
fn errors_quote_the_spec() {
    assert_eq!(
        TopicError::WildcardInName.to_string(),
        "[MQTT-3.3.2-2] topic name contains a wildcard"
    );
    assert!(
        TopicError::EmptyShareName
            .to_string()
            .starts_with("[MQTT-4.8.2-1]")
    );
}

#[test]
fn conversions_keep_the_text() {
    let n = TopicName::try_from(String::from("a/b")).unwrap();
    let f = TopicFilter::from(n.clone());
    assert_eq!(f, "a/b");
    assert!(f.matches(&n));
    assert!(!f.has_wildcards());
    assert_eq!(n.clone().into_bytes(), Bytes::from_static(b"a/b"));
    assert_eq!(format!("{n} {n:?}"), "a/b TopicName(\"a/b\")");
    assert!(name("$SYS/x").unwrap().is_dollar());
}
