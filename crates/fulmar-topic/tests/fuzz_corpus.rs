//! Replays the committed fuzz corpus of the `topic_parse` target (`fuzz/corpus/topic_parse`)
//! through the same checks, on stable: topic parsing against the spec rules, and the
//! subscription trie and retained index against a naive model.
//!
//! The checks live in `fuzz/src/topic_checks.rs` and are included here with `#[path]`.

use std::fs;
use std::path::PathBuf;

// Shared with the fuzz crate, where these items are public API of `fulmar_fuzz::topic_checks`.
#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/corpus.rs"]
mod corpus;
#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/topic_checks.rs"]
mod topic_checks;

/// Every file of `fuzz/corpus/topic_parse`, sorted (a missing directory is an empty list).
fn corpus() -> Vec<PathBuf> {
    corpus::files(env!("CARGO_MANIFEST_DIR"), "topic_parse")
}

// Parsing agrees with the spec rules, matching with section 4.7:
// v3:MQTT-4.7.1-1 v3:MQTT-4.7.1-2 v3:MQTT-4.7.1-3 v5:MQTT-4.7.0-1 v5:MQTT-4.7.1-1
// v5:MQTT-4.7.1-2 MQTT-4.7.2-1 MQTT-4.7.3-1 MQTT-4.7.3-2 v5:MQTT-4.8.2-1 v5:MQTT-4.8.2-2
#[test]
fn topic_parse_corpus_agrees_with_the_naive_model() {
    let files = corpus();
    assert!(
        files.len() >= 25,
        "only {} corpus files for topic_parse",
        files.len()
    );
    for path in &files {
        let data = fs::read(path)
            .unwrap_or_else(|e| panic!("cannot read corpus input {}: {e}", path.display()));
        if std::panic::catch_unwind(|| topic_checks::check_topic(&data)).is_err() {
            panic!("corpus input {} fails the checks", path.display());
        }
    }
}

/// The oracle itself: the naive rules give the spec's own examples right.
#[test]
fn naive_rules_match_the_spec_examples() {
    use topic_checks::{naive_filter, naive_matches, naive_name, naive_shared};
    // Section 4.7.1.2 and 4.7.1.3 examples.
    assert!(naive_matches(
        "sport/tennis/player1/#",
        "sport/tennis/player1"
    ));
    assert!(naive_matches("sport/#", "sport"));
    assert!(naive_matches("sport/+", "sport/"));
    assert!(!naive_matches("sport/+", "sport"));
    assert!(naive_matches("+/+", "/finance"));
    assert!(!naive_matches("+", "/finance"));
    assert!(!naive_matches("#", "$SYS/x"));
    assert!(naive_matches("$SYS/#", "$SYS/x"));
    assert!(naive_filter("+/tennis/#") && !naive_filter("sport/tennis#"));
    assert!(!naive_filter("sport+") && !naive_filter("sport/#/ranking"));
    assert!(naive_name("a b/c") && !naive_name("a/+") && !naive_name(""));
    assert_eq!(naive_shared("$share/g/a/#"), Some(("g", "a/#")));
    assert_eq!(naive_shared("$share//a"), None);
    assert_eq!(naive_shared("$share/g"), None);
}
