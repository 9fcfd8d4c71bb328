//! A `fulmar_client::Client` over an in-memory pipe to a broker played by the script (raw
//! bytes, ready-made packets, a close) while the application publishes, subscribes, reads
//! and disconnects; nothing may panic, every call must get an answer once the broker is
//! gone, and what the client wrote must be a valid client side of the conversation (see
//! `fulmar_fuzz::client_checks`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fulmar_fuzz::client_checks::check_client(data);
});
