//! A script of client connections (raw bytes, ready-made packets, closes) and application
//! calls played on an embedded broker over in-memory pipes; nothing may panic or stall, and
//! what the broker writes to each client must be a valid server side of the conversation
//! (see `fulmar_fuzz::broker_checks`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fulmar_fuzz::broker_checks::check_broker_within(data, fulmar_fuzz::broker_checks::STEP_BUDGET);
});
