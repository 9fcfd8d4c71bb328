//! Replays the committed fuzz corpus (`fuzz/corpus/decode_v311`, `decode_v5` and `roundtrip`) through the
//! same checks the cargo-fuzz targets run, on stable, so that CI keeps every input the
//! fuzzer ever found interesting (and every past crash) passing.
//!
//! The checks live in `fuzz/src/checks.rs` and are included here with `#[path]`: one copy of
//! the logic, no fuzz-only API in the codec.

use std::fs;
use std::path::PathBuf;

use fulmar_codec::ProtocolVersion;

// Shared with the fuzz crate, where these items are public API of `fulmar_fuzz::checks`.
#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/build.rs"]
mod build;
#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/checks.rs"]
mod checks;
#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/corpus.rs"]
mod corpus;

/// Every file of `fuzz/corpus/<target>`, sorted (a missing directory is an empty list).
fn corpus(target: &str) -> Vec<PathBuf> {
    corpus::files(env!("CARGO_MANIFEST_DIR"), target)
}

/// Runs the decode checks on every corpus file of `target`; returns (files, packets, errors).
fn replay(target: &str, version: ProtocolVersion) -> (usize, usize, usize) {
    let files = corpus(target);
    let (mut packets, mut errors) = (0, 0);
    for path in &files {
        let data = fs::read(path)
            .unwrap_or_else(|e| panic!("cannot read corpus input {}: {e}", path.display()));
        let outcome = std::panic::catch_unwind(|| checks::check_decode(&data, version))
            .unwrap_or_else(|_| panic!("corpus input {} fails the checks", path.display()));
        packets += outcome.packets;
        errors += usize::from(outcome.error);
    }
    println!(
        "{target}: {} files, {packets} packets, {errors} refused",
        files.len()
    );
    (files.len(), packets, errors)
}

/// The committed corpus holds about 200 (3.1.1) and 400 (5.0) files: the seeds (a packet of
/// every type, dozens of malformed inputs) and the minimized fuzzer finds. Fewer files than
/// this means the corpus went missing.
const MIN_FILES: usize = 100;

#[test]
fn decode_v311_corpus_round_trips() {
    let (files, packets, errors) = replay("decode_v311", ProtocolVersion::V311);
    assert!(
        files >= MIN_FILES,
        "only {files} corpus files for decode_v311"
    );
    // Both sides of the decoder are exercised: packets that round-trip and refused input.
    assert!(
        packets >= 100,
        "only {packets} packets decoded from {files} files"
    );
    assert!(errors >= 50, "only {errors} of {files} files were refused");
}

/// MQTT 3.1 reads the packets of 3.1.1 with fewer checks (fixed header flags,
/// CONNECT's unused bit, CONNACK's flags): the 3.1.1 corpus goes through the
/// same checks on a 3.1 connection.
#[test]
fn decode_v311_corpus_round_trips_on_a_v31_connection() {
    let (files, packets, errors) = replay("decode_v311", ProtocolVersion::V31);
    assert!(
        files >= MIN_FILES,
        "only {files} corpus files for decode_v311"
    );
    assert!(
        packets >= 100,
        "only {packets} packets decoded from {files} files"
    );
    assert!(errors >= 50, "only {errors} of {files} files were refused");
}

#[test]
fn decode_v5_corpus_round_trips() {
    let (files, packets, errors) = replay("decode_v5", ProtocolVersion::V5);
    assert!(
        files >= MIN_FILES,
        "only {files} corpus files for decode_v5"
    );
    assert!(
        packets >= 200,
        "only {packets} packets decoded from {files} files"
    );
    assert!(errors >= 100, "only {errors} of {files} files were refused");
}

/// The `roundtrip` corpus: packets built from each input for both versions (and across them),
/// encoded and decoded back, as the fuzz target does (`fuzz/src/build.rs`). It holds, among
/// the fuzzer's finds, an AUTH built without an Authentication Method, which the codec came
/// to refuse (5.0 section 3.15.2.2.2) before the builder did.
#[test]
fn roundtrip_corpus_replays() {
    let files = corpus("roundtrip");
    assert!(
        files.len() >= MIN_FILES,
        "only {} corpus files for roundtrip",
        files.len()
    );
    for path in &files {
        let data = fs::read(path)
            .unwrap_or_else(|e| panic!("cannot read corpus input {}: {e}", path.display()));
        std::panic::catch_unwind(|| build::check_roundtrip(&data))
            .unwrap_or_else(|_| panic!("corpus input {} fails the checks", path.display()));
    }
}
