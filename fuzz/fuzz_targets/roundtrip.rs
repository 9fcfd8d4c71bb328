//! Structure-aware: a packet built from the input (first byte: the versions it is built and
//! encoded for), encoded, decoded, compared (see `fulmar_fuzz::build`).
#![no_main]

use arbitrary::Unstructured;
use fulmar_codec::ProtocolVersion;
use fulmar_fuzz::build::{arbitrary_packet, check_built};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(mode) = u.arbitrary::<u8>() else {
        return;
    };
    let (built_for, encode_for) = match mode & 0b11 {
        0 => (ProtocolVersion::V311, ProtocolVersion::V311),
        1 => (ProtocolVersion::V5, ProtocolVersion::V5),
        // Across versions: encoding may fail or be lossy, but never panics or lies.
        2 => (ProtocolVersion::V5, ProtocolVersion::V311),
        _ => (ProtocolVersion::V311, ProtocolVersion::V5),
    };
    if let Ok(packet) = arbitrary_packet(&mut u, built_for) {
        check_built(&packet, encode_for, built_for == encode_for);
    }
});
