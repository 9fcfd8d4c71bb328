//! Replays the committed fuzz corpus of the `ws_frames` target (`fuzz/corpus/ws_frames`)
//! through the same checks the cargo-fuzz target runs, on stable: the broker's WebSocket
//! frame decoder, fed each input whole and in pieces, must read it as a naive
//! transcription of RFC 6455 section 5 does (the same payload, error, close status code,
//! close and ping), without a panic.
//!
//! The checks live in `fuzz/src/ws_checks.rs` and are included here with `#[path]`.

#![cfg(feature = "websocket")]

use std::path::PathBuf;

#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/corpus.rs"]
mod corpus;
#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/ws_checks.rs"]
mod ws_checks;

/// Every file of `fuzz/corpus/ws_frames`, sorted (a missing directory is an empty list).
fn corpus() -> Vec<PathBuf> {
    corpus::files(env!("CARGO_MANIFEST_DIR"), "ws_frames")
}

/// The hand-made seeds (`seed-*`, written by `fuzz/examples/ws_seeds.rs`) and the
/// fuzzer's finds; fewer files than this means the corpus went missing.
const MIN_FILES: usize = 30;

#[test]
fn ws_frames_corpus_passes_the_checks() {
    // MQTT-6.0.0-1 MQTT-6.0.0-2
    let files = corpus();
    let outcomes = corpus::replay(&files, MIN_FILES, ws_checks::check_ws_frames);
    let payloads = outcomes.iter().filter(|o| !o.payload.is_empty()).count();
    let protocol_errors = outcomes
        .iter()
        .filter(|o| o.too_large == Some(false))
        .count();
    let too_large = outcomes
        .iter()
        .filter(|o| o.too_large == Some(true))
        .count();
    let closes = outcomes.iter().filter(|o| o.closed).count();
    let pings = outcomes.iter().filter(|o| o.ping.is_some()).count();
    // The corpus reaches every outcome, not only refusals.
    assert!(
        payloads >= 5 && protocol_errors >= 5 && too_large >= 1 && closes >= 3 && pings >= 1,
        "{payloads} with payload, {protocol_errors} protocol errors, {too_large} too large, \
         {closes} closes, {pings} pings"
    );
    println!(
        "{} inputs: {payloads} with payload, {protocol_errors} protocol errors, {too_large} \
         too large, {closes} closes, {pings} pings",
        files.len()
    );
}

/// A few inputs written here, so that a check that accepts anything would fail.
// MQTT-6.0.0-1
#[test]
fn the_checks_see_what_the_frames_hold() {
    // Limit 1 MiB (byte 0 = 7), whole reads (byte 1 = 0): a masked binary frame "hi".
    let mut input = vec![7, 0, 0x82, 0x82, 1, 2, 3, 4];
    input.extend([b'h' ^ 1, b'i' ^ 2]);
    let outcome = ws_checks::check_ws_frames(&input);
    assert_eq!(outcome.payload, b"hi");
    assert_eq!(outcome.too_large, None);
    // A text frame: refused with 1003.
    let outcome = ws_checks::check_ws_frames(&[7, 3, 0x81, 0x80, 0, 0, 0, 0]);
    assert_eq!(
        (outcome.too_large, outcome.close_code),
        (Some(false), Some(1003))
    );
}
