//! Replays the committed fuzz corpus of the `session` target (`fuzz/corpus/session`) through
//! the same checks the cargo-fuzz target runs, on stable, so that CI keeps every script the
//! fuzzer found interesting (and every past crash) passing.
//!
//! The checks live in `fuzz/src/session_checks.rs` (which uses `fuzz/src/checks.rs`) and are
//! included here with `#[path]`: one copy of the logic, and only the public API of the
//! session.

use std::fs;
use std::path::PathBuf;

// Shared with the fuzz crate, where these items are public API of `fulmar_fuzz`.
#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/checks.rs"]
mod checks;
#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/corpus.rs"]
mod corpus;
#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/session_checks.rs"]
mod session_checks;

/// Every file of `fuzz/corpus/session`, sorted (a missing directory is an empty list).
fn corpus() -> Vec<PathBuf> {
    corpus::files(env!("CARGO_MANIFEST_DIR"), "session")
}

/// The committed corpus holds the 44 hand-made seeds (`seed-*`, written by
/// `fuzz/examples/session_seeds.rs`), 3 minimized crashes (`crash-*`, fixed in the session)
/// and about 790 fuzzer finds (one per coverage edge). Fewer files than this means the
/// corpus went missing.
const MIN_FILES: usize = 400;

#[test]
fn session_corpus_passes_the_checks() {
    // MQTT-3.1.0-1 MQTT-3.2.0-1 MQTT-3.14.4-1 MQTT-2.2.1-2 MQTT-2.2.1-3
    // v5:MQTT-3.1.2-24 v5:MQTT-3.2.2-15 v5:MQTT-3.1.2-26 v5:MQTT-3.2.2-17 v5:MQTT-3.3.4-9
    let files = corpus();
    let mut total = session_checks::SessionOutcome::default();
    for path in &files {
        let data = fs::read(path)
            .unwrap_or_else(|e| panic!("cannot read corpus input {}: {e}", path.display()));
        let outcome = std::panic::catch_unwind(|| session_checks::check_session(&data))
            .unwrap_or_else(|_| panic!("corpus input {} fails the checks", path.display()));
        total.steps += outcome.steps;
        total.packets_in += outcome.packets_in;
        total.packets_out += outcome.packets_out;
        total.events += outcome.events;
        total.connected += outcome.connected;
        total.violations += outcome.violations;
    }
    println!("session: {} files, {total:?}", files.len());
    assert!(
        files.len() >= MIN_FILES,
        "only {} corpus files for session",
        files.len()
    );
    // Both sides are exercised: connections that were established, and refused input.
    assert!(
        total.connected >= 200,
        "only {} connections",
        total.connected
    );
    assert!(
        total.packets_in >= 1500,
        "only {} packets fed",
        total.packets_in
    );
    assert!(
        total.violations >= 300,
        "only {} violations",
        total.violations
    );
}
