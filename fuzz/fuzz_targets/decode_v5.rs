//! Arbitrary bytes into `decode` on an MQTT 5.0 connection; every decoded packet must
//! round-trip (see `fulmar_fuzz::checks`).
#![no_main]

use fulmar_codec::ProtocolVersion;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fulmar_fuzz::checks::check_decode(data, ProtocolVersion::V5);
});
