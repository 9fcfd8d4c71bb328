//! Structure-aware: a packet built from the input (first byte: the version), encoded,
//! decoded, compared (see `fulmar_fuzz::build`).
#![no_main]

use arbitrary::Unstructured;
use fulmar_codec::ProtocolVersion;
use fulmar_fuzz::build::{arbitrary_packet, check_built};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(v5) = u.arbitrary::<bool>() else {
        return;
    };
    let version = if v5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    };
    if let Ok(packet) = arbitrary_packet(&mut u, version) {
        check_built(&packet, version);
    }
});
