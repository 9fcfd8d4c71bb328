//! Structure-aware: a packet built from the input (first byte: the versions it is built and
//! encoded for), encoded, decoded, compared (see `fulmar_fuzz::build::check_roundtrip`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fulmar_fuzz::build::check_roundtrip(data);
});
