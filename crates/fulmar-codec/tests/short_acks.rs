//! Acknowledgements without properties are decoded in place, apart from the
//! general path: both must agree on every input. A 5.0 acknowledgement with
//! a reason code can also carry an empty property list (remaining length 4),
//! which takes the general path: the two encodings of the same packet must
//! decode to the same packet, or fail with the same error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::BytesMut;
use fulmar_codec::{ProtocolVersion, decode};

fn run(version: ProtocolVersion, bytes: &[u8]) -> String {
    let mut buf = BytesMut::from(bytes);
    let result = decode(&mut buf, version, 1 << 20);
    format!("{result:?} left {}", buf.len())
}

#[test]
fn short_and_long_forms_of_every_acknowledgement_agree() {
    // v5: MQTT-3.4.2-1 MQTT-3.5.2-1 MQTT-3.6.2-1 MQTT-3.7.2-1 (ack reason codes)
    // MQTT-2.2.1-3 (a packet identifier is non-zero)
    for first in [0x40u8, 0x50, 0x62, 0x70] {
        for id in [0u16, 1, 0x2A, 0xFFFF] {
            let [hi, lo] = id.to_be_bytes();
            for code in 0..=255u8 {
                let short = run(ProtocolVersion::V5, &[first, 3, hi, lo, code]);
                let long = run(ProtocolVersion::V5, &[first, 4, hi, lo, code, 0]);
                assert_eq!(short, long, "type {first:#x} id {id} code {code:#x}");
            }
            // Success without a reason code is the same packet as with 0x00.
            let bare = run(ProtocolVersion::V5, &[first, 2, hi, lo]);
            let zero = run(ProtocolVersion::V5, &[first, 4, hi, lo, 0, 0]);
            assert_eq!(bare, zero, "type {first:#x} id {id}");
            // 3.1.1 has the identifier only: a third byte is malformed.
            let v3 = run(ProtocolVersion::V311, &[first, 2, hi, lo]);
            assert_eq!(v3, bare, "type {first:#x} id {id}");
            let extra = run(ProtocolVersion::V311, &[first, 3, hi, lo, 0]);
            let expected = if id == 0 {
                "Err(ZeroPacketId"
            } else {
                "Err(TrailingBytes"
            };
            assert!(extra.starts_with(expected), "{extra}");
        }
    }
}
