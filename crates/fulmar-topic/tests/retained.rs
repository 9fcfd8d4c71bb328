//! Behaviour of the retained-message index.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on bad fixtures

use bytes::Bytes;
use fulmar_topic::{RetainedIndex, TopicFilter, TopicName};

fn topic(s: &str) -> TopicName {
    s.parse().unwrap()
}

fn found(index: &RetainedIndex<Bytes>, filter: &str) -> Vec<String> {
    let f: TopicFilter = filter.parse().unwrap();
    let mut out = Vec::new();
    index.matches(&f, |t, _| out.push(t.to_string()));
    out.sort();
    out
}

fn store() -> RetainedIndex<Bytes> {
    let mut r = RetainedIndex::new();
    for t in [
        "sport",
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player2",
        "sport/golf",
        "/finance",
        "$SYS/uptime",
        "$SYS/monitor/Clients",
        "a/$b",
    ] {
        r.publish(topic(t), Bytes::from(t.to_owned()));
    }
    r
}

// v3:MQTT-3.3.1-6 MQTT-4.7.2-1
#[test]
fn finds_every_retained_name_matching_a_filter() {
    let r = store();
    assert_eq!(r.len(), 9);
    assert_eq!(
        found(&r, "sport/#"),
        [
            "sport",
            "sport/golf",
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player2"
        ]
    );
    assert_eq!(
        found(&r, "sport/tennis/+"),
        ["sport/tennis/player1", "sport/tennis/player2"]
    );
    assert_eq!(found(&r, "+/+"), ["/finance", "a/$b", "sport/golf"]);
    assert_eq!(found(&r, "+"), ["sport"]);
    assert_eq!(found(&r, "sport/golf"), ["sport/golf"]);
    assert_eq!(found(&r, "sport/golf/#"), ["sport/golf"]);
    assert_eq!(found(&r, "nothing/#"), Vec::<String>::new());
    // `#` and `+` first skip `$` names; naming `$SYS` explicitly finds them.
    assert_eq!(found(&r, "#").len(), 7);
    assert!(found(&r, "#").iter().all(|t| !t.starts_with('$')));
    assert_eq!(found(&r, "$SYS/#"), ["$SYS/monitor/Clients", "$SYS/uptime"]);
    assert_eq!(found(&r, "$SYS/monitor/+"), ["$SYS/monitor/Clients"]);
    assert_eq!(found(&r, "+/monitor/Clients"), Vec::<String>::new());
    assert_eq!(found(&r, "a/+"), ["a/$b"]);
}

/// `#` scans the slab of values while the store is dense; once most slots are free (a store
/// that shrank from a peak keeps its slab) it walks the tree instead, which used to cost the
/// peak's size (found by a review: 1.1 ms for one message left of a million). Both give the same
/// answer.
// v3:MQTT-3.3.1-6 MQTT-4.7.2-1
#[test]
fn hash_finds_the_same_in_a_store_that_shrank() {
    let mut r = store();
    let before = found(&r, "#");
    for i in 0..1000 {
        r.publish(topic(&format!("bulk/{i}")), Bytes::from_static(b"x"));
    }
    assert_eq!(found(&r, "#").len(), before.len() + 1000);
    for i in 0..1000 {
        r.publish(topic(&format!("bulk/{i}")), Bytes::new());
    }
    assert_eq!(found(&r, "#"), before);
    assert_eq!(found(&r, "$SYS/#"), ["$SYS/monitor/Clients", "$SYS/uptime"]);
}

// v5:MQTT-3.3.1-5 v3:MQTT-3.3.1-5 v3:MQTT-3.3.1-7
#[test]
fn a_new_retained_message_replaces_the_old_one() {
    let mut r = RetainedIndex::new();
    assert_eq!(r.publish(topic("a/b"), Bytes::from_static(b"1")), None);
    assert_eq!(
        r.publish(topic("a/b"), Bytes::from_static(b"2")),
        Some(Bytes::from_static(b"1"))
    );
    assert_eq!(r.len(), 1);
    assert_eq!(r.get(&topic("a/b")), Some(&Bytes::from_static(b"2")));
}

// v5:MQTT-3.3.1-6 v5:MQTT-3.3.1-7 v3:MQTT-3.3.1-10 v3:MQTT-3.3.1-11
#[test]
fn an_empty_payload_deletes_and_is_not_stored() {
    let mut r = store();
    assert_eq!(
        r.publish(topic("sport/tennis/player1"), Bytes::new()),
        Some(Bytes::from_static(b"sport/tennis/player1"))
    );
    assert_eq!(r.get(&topic("sport/tennis/player1")), None);
    assert_eq!(r.len(), 8);
    // The child below the deleted name is still there.
    assert_eq!(
        found(&r, "sport/tennis/#"),
        ["sport/tennis/player1/ranking", "sport/tennis/player2"]
    );
    // An empty payload for a name with nothing retained stores nothing.
    assert_eq!(r.publish(topic("new/topic"), Bytes::new()), None);
    assert_eq!(r.len(), 8);
    assert_eq!(found(&r, "new/#"), Vec::<String>::new());
}

#[test]
fn removing_everything_leaves_an_empty_index() {
    let mut r = store();
    let mut names = Vec::new();
    r.for_each(|t, _| names.push(t.clone()));
    assert_eq!(names.len(), 9);
    for n in &names {
        assert!(r.remove(n).is_some());
        assert!(r.remove(n).is_none());
    }
    assert!(r.is_empty());
    assert_eq!(found(&r, "#"), Vec::<String>::new());
    // And it is usable again afterwards.
    r.insert(topic("x/y"), Bytes::from_static(b"v"));
    assert_eq!(found(&r, "x/+"), ["x/y"]);
}
