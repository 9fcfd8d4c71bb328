//! Replays the committed fuzz corpus of the `broker` target (`fuzz/corpus/broker`) through
//! the same checks the cargo-fuzz target runs, on stable: scripts of client connections
//! over in-memory pipes and application calls on an embedded broker, every one of which
//! must end without a panic or a stall and with a valid server side of each conversation.
//!
//! The checks live in `fuzz/src/broker_checks.rs` (which uses `fuzz/src/checks.rs`) and are
//! included here with `#[path]`: one copy of the logic, and only the public API of the
//! broker and the codec.

use std::path::PathBuf;

// Shared with the fuzz crate, where these items are public API of `fulmar_fuzz`.
#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/broker_checks.rs"]
mod broker_checks;
#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/checks.rs"]
mod checks;
#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/corpus.rs"]
mod corpus;
#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/script.rs"]
mod script;

/// Every file of `fuzz/corpus/broker`, sorted (a missing directory is an empty list).
fn corpus() -> Vec<PathBuf> {
    corpus::files(env!("CARGO_MANIFEST_DIR"), "broker")
}

/// The committed corpus holds the 32 hand-made seeds (`seed-*`, written by
/// `fuzz/examples/broker_seeds.rs`) and about 500 fuzzer finds (one per coverage edge,
/// 10 300 edges). Fewer files than this means the corpus went missing.
const MIN_FILES: usize = 300;

#[test]
fn broker_corpus_passes_the_checks() {
    // MQTT-3.2.0-1 v3:MQTT-3.2.2-5 v5:MQTT-3.2.2-7 v5:MQTT-3.14.4-1 v5:MQTT-3.1.2-24
    // v5:MQTT-3.1.2-26 v5:MQTT-3.1.2-27 v5:MQTT-3.3.4-9
    let files = corpus();
    let outcomes = corpus::replay(&files, MIN_FILES, broker_checks::check_broker);
    let accepted: usize = outcomes.iter().map(|o| o.accepted).sum();
    let publishes: usize = outcomes.iter().map(|o| o.publishes_out).sum();
    // The corpus reaches the broker's routing, not only its refusals.
    assert!(
        accepted >= 20 && publishes >= 20,
        "{accepted} accepted, {publishes} publishes"
    );
    println!(
        "{} inputs: {accepted} connections accepted, {publishes} PUBLISH packets out",
        files.len()
    );
}
