//! The broker's WebSocket frame decoder against a naive reading of RFC 6455, fed whole
//! and in pieces (see `fulmar_fuzz::ws_checks`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fulmar_fuzz::ws_checks::check_ws_frames(data);
});
