//! A script of peer bytes, timeouts, lost connections and application calls played on a
//! client or server `Session`; after every step the session's output must encode and its
//! queues must stay within the `Config` (see `fulmar_fuzz::session_checks`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fulmar_fuzz::session_checks::check_session(data);
});
