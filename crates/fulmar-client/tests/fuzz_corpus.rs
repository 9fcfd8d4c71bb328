//! Replays the committed fuzz corpus of the `client` target (`fuzz/corpus/client`) through
//! the same checks the cargo-fuzz target runs, on stable: a client over an in-memory pipe
//! to a broker played by each script, which must end without a panic, with an answer to
//! every call, and with a valid client side of the conversation.
//!
//! The checks live in `fuzz/src/client_checks.rs` (which uses `fuzz/src/checks.rs`) and are
//! included here with `#[path]`: one copy of the logic, and only the public API of the
//! client and the codec.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// Every file of `fuzz/corpus/client`, sorted (a missing directory is an empty list).
fn corpus() -> Vec<PathBuf> {
    corpus::files(env!("CARGO_MANIFEST_DIR"), "client")
}

/// The committed corpus holds the 14 hand-made seeds (`seed-*`, written by
/// `fuzz/examples/client_seeds.rs`) and about 340 fuzzer finds (one per coverage edge,
/// 7 200 edges). Fewer files than this means the corpus went missing.
const MIN_FILES: usize = 200;

/// Panics anywhere in the process, client tasks included.
static PANICS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn client_corpus_passes_the_checks() {
    // MQTT-3.1.0-1 MQTT-3.1.0-2 MQTT-3.14.4-1 MQTT-2.2.1-3
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let files = corpus();
    assert!(
        files.len() >= MIN_FILES,
        "only {} corpus files for client",
        files.len()
    );
    let mut total = client_checks::ClientOutcome::default();
    for path in &files {
        let data = fs::read(path)
            .unwrap_or_else(|e| panic!("cannot read corpus input {}: {e}", path.display()));
        let outcome = std::panic::catch_unwind(|| client_checks::check_client(&data))
            .unwrap_or_else(|_| panic!("corpus input {} fails the checks", path.display()));
        assert_eq!(
            PANICS.load(Ordering::SeqCst),
            0,
            "corpus input {} panicked inside the client",
            path.display()
        );
        total.steps += outcome.steps;
        total.connected |= outcome.connected;
        total.calls += outcome.calls;
        total.succeeded += outcome.succeeded;
        total.packets_out += outcome.packets_out;
        total.messages += outcome.messages;
    }
    // The corpus reaches the flows, not only refused connections.
    assert!(total.succeeded >= 10 && total.messages >= 5, "{total:?}");
    println!("{} inputs: {total:?}", files.len());
}
