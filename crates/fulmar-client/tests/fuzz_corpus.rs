//! Replays the committed fuzz corpus of the `client` target (`fuzz/corpus/client`) through
//! the same checks the cargo-fuzz target runs, on stable: a client over an in-memory pipe
//! to a broker played by each script, which must end without a panic, with an answer to
//! every call, and with a valid client side of the conversation.
//!
//! The checks live in `fuzz/src/client_checks.rs` (which uses `fuzz/src/checks.rs`) and are
//! included here with `#[path]`: one copy of the logic, and only the public API of the
//! client and the codec.

use std::path::PathBuf;

// Shared with the fuzz crate, where these items are public API of `fulmar_fuzz`.
#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/checks.rs"]
mod checks;
#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/client_checks.rs"]
mod client_checks;
#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/corpus.rs"]
mod corpus;
#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/script.rs"]
mod script;

/// Every file of `fuzz/corpus/client`, sorted (a missing directory is an empty list).
fn corpus() -> Vec<PathBuf> {
    corpus::files(env!("CARGO_MANIFEST_DIR"), "client")
}

/// The committed corpus holds the 14 hand-made seeds (`seed-*`, written by
/// `fuzz/examples/client_seeds.rs`) and about 400 fuzzer finds (one per coverage edge,
/// 7 400 edges). Fewer files than this means the corpus went missing.
const MIN_FILES: usize = 200;

#[test]
fn client_corpus_passes_the_checks() {
    // MQTT-3.1.0-1 MQTT-3.1.0-2 MQTT-3.14.4-1 MQTT-2.2.1-3
    let files = corpus();
    let outcomes = corpus::replay(&files, MIN_FILES, client_checks::check_client);
    let succeeded: usize = outcomes.iter().map(|o| o.succeeded).sum();
    let messages: usize = outcomes.iter().map(|o| o.messages).sum();
    // The corpus reaches the flows, not only refused connections.
    assert!(
        succeeded >= 10 && messages >= 5,
        "{succeeded} calls succeeded, {messages} messages"
    );
    println!(
        "{} inputs: {succeeded} calls succeeded, {messages} messages read",
        files.len()
    );
}
