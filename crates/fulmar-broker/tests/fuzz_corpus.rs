//! Replays the committed fuzz corpus of the `broker` target (`fuzz/corpus/broker`) through
//! the same checks the cargo-fuzz target runs, on stable: scripts of client connections
//! over in-memory pipes and application calls on an embedded broker, every one of which
//! must end without a panic or a stall and with a valid server side of each conversation.
//!
//! The checks live in `fuzz/src/broker_checks.rs` (which uses `fuzz/src/checks.rs`) and are
//! included here with `#[path]`: one copy of the logic, and only the public API of the
//! broker and the codec.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// Every file of `fuzz/corpus/broker`, sorted (a missing directory is an empty list).
fn corpus() -> Vec<PathBuf> {
    corpus::files(env!("CARGO_MANIFEST_DIR"), "broker")
}

/// The committed corpus holds the 32 hand-made seeds (`seed-*`, written by
/// `fuzz/examples/broker_seeds.rs`) and about 460 fuzzer finds (one per coverage edge,
/// 10 000 edges). Fewer files than this means the corpus went missing.
const MIN_FILES: usize = 300;

/// Panics anywhere in the process, broker tasks included (the runtime catches those, so
/// the script itself would not see them).
static PANICS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn broker_corpus_passes_the_checks() {
    // MQTT-3.2.0-1 v3:MQTT-3.2.2-5 v5:MQTT-3.2.2-7 v5:MQTT-3.14.4-1 v5:MQTT-3.1.2-24
    // v5:MQTT-3.1.2-26 v5:MQTT-3.1.2-27 v5:MQTT-3.3.4-9
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let files = corpus();
    assert!(
        files.len() >= MIN_FILES,
        "only {} corpus files for broker",
        files.len()
    );
    let mut total = broker_checks::BrokerOutcome::default();
    for path in &files {
        let data = fs::read(path)
            .unwrap_or_else(|e| panic!("cannot read corpus input {}: {e}", path.display()));
        let outcome = std::panic::catch_unwind(|| broker_checks::check_broker(&data))
            .unwrap_or_else(|_| panic!("corpus input {} fails the checks", path.display()));
        assert_eq!(
            PANICS.load(Ordering::SeqCst),
            0,
            "corpus input {} panicked inside the broker",
            path.display()
        );
        total.steps += outcome.steps;
        total.connections += outcome.connections;
        total.accepted += outcome.accepted;
        total.packets_out += outcome.packets_out;
        total.publishes_out += outcome.publishes_out;
    }
    // The corpus reaches the broker's routing, not only its refusals.
    assert!(total.accepted >= 20, "{total:?}");
    assert!(total.publishes_out >= 20, "{total:?}");
    println!("{} inputs: {total:?}", files.len());
}
