//! The decode checks shared by the `decode_v311` / `decode_v5` fuzz targets and the
//! corpus replay test of fulmar-codec (`crates/fulmar-codec/tests/fuzz_corpus.rs`, which
//! includes this file with `#[path]`). Only fulmar-codec and `bytes` may be used here.
//!
//! For arbitrary input bytes, [`check_decode`] decodes packets from the front of the buffer
//! until the decoder asks for more bytes or refuses the input, and checks the decoder's
//! contract on every step:
//!
//! - `Ok(None)` leaves the buffer untouched; `Ok(Some(p))` consumes exactly one frame, no
//!   larger than the maximum packet size; `Err` has a reason code and a message.
//! - The same frame is refused as `PacketTooLarge` under a limit one byte smaller than its
//!   size, decodes the same at exactly its size, and one byte short needs more bytes.
//! - Every decoded packet encodes (in its own version, a CONNECT in the version it names),
//!   `encoded_len` equals the encoded size, and the encoding decodes to the same packet and
//!   re-encodes to the same bytes (the encoding is canonical).
//! - Every strict prefix of the encoding is "need more bytes" (checked for the prefix one
//!   byte short and the fixed header alone).

use bytes::BytesMut;
use fulmar_codec::{DecodeError, Packet, ProtocolVersion, decode};

/// The maximum packet size the checks decode with: large enough for any fuzz input, small
/// enough that a forged remaining length is refused before buffering.
pub const MAX_PACKET_SIZE: u32 = 1 << 20;

/// What one call of [`check_decode`] saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOutcome {
    /// Packets decoded (and round-tripped) from the front of the input.
    pub packets: usize,
    /// Whether decoding ended with an error (as opposed to "need more bytes").
    pub error: bool,
}

/// Decodes `data` as a stream of packets of `version` and checks each one (see the module
/// docs). Panics when a check fails.
pub fn check_decode(data: &[u8], version: ProtocolVersion) -> DecodeOutcome {
    let mut outcome = DecodeOutcome::default();
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.clone();
        match decode(&mut buf, version, MAX_PACKET_SIZE) {
            Ok(None) => {
                assert_eq!(buf, before, "Ok(None) must leave the buffer untouched");
                return outcome;
            }
            Ok(Some(packet)) => {
                let consumed = before.len() - buf.len();
                assert!(consumed >= 2, "a packet is at least two bytes");
                assert!(
                    consumed as u64 <= u64::from(MAX_PACKET_SIZE),
                    "decoded a {consumed}-byte packet over the {MAX_PACKET_SIZE}-byte limit"
                );
                assert_eq!(
                    buf[..],
                    before[consumed..],
                    "decode must consume only from the front"
                );
                check_frame_limits(&before[..consumed], version, &packet);
                check_round_trip(&packet, version);
                outcome.packets += 1;
            }
            Err(e) => {
                // The error must be reportable: a reason code and a message.
                let _code = e.reason_code();
                assert!(!e.to_string().is_empty(), "an error has a message");
                outcome.error = true;
                return outcome;
            }
        }
    }
}

/// Checks, for a `frame` that decoded to `packet`: with a maximum packet size one byte
/// smaller the frame is refused as too large, with exactly its size it decodes the same, and
/// the frame one byte short is "need more bytes".
fn check_frame_limits(frame: &[u8], version: ProtocolVersion, packet: &Packet) {
    let Ok(size) = u32::try_from(frame.len()) else {
        return;
    };
    let mut buf = BytesMut::from(frame);
    match decode(&mut buf, version, size - 1) {
        Err(DecodeError::PacketTooLarge { size: s, max }) => {
            assert_eq!((s, max), (frame.len(), size - 1), "PacketTooLarge fields");
        }
        other => panic!(
            "a {size}-byte packet over a limit of {}: {other:?}",
            size - 1
        ),
    }
    let mut buf = BytesMut::from(frame);
    match decode(&mut buf, version, size) {
        Ok(Some(p)) => assert_eq!(&p, packet, "the limit changed the packet"),
        other => panic!("a {size}-byte packet at a limit of {size}: {other:?}"),
    }
    let short = frame.len() - 1;
    let mut buf = BytesMut::from(&frame[..short]);
    match decode(&mut buf, version, size) {
        Ok(None) => assert_eq!(&buf[..], &frame[..short], "Ok(None) touched the buffer"),
        other => panic!("the packet one byte short must need more bytes: {other:?}"),
    }
}

/// The version `packet` is encoded in on a connection of `version`: a CONNECT carries its
/// own.
pub fn wire_version(packet: &Packet, version: ProtocolVersion) -> ProtocolVersion {
    match packet {
        Packet::Connect(c) => c.protocol_version,
        _ => version,
    }
}

/// Checks that a packet the decoder produced on a `version` connection encodes, that
/// `encoded_len` is exact, and that the encoding decodes back to the same packet and is
/// canonical. Returns the encoding.
pub fn check_round_trip(packet: &Packet, version: ProtocolVersion) -> BytesMut {
    let v = wire_version(packet, version);
    let mut wire = BytesMut::new();
    if let Err(e) = packet.encode(v, &mut wire) {
        panic!("a decoded packet must encode: {e}\npacket: {packet:?}");
    }
    match packet.encoded_len(v) {
        Ok(len) => assert_eq!(len, wire.len(), "encoded_len disagrees with encode"),
        Err(e) => panic!("encoded_len failed where encode succeeded: {e}"),
    }
    check_decodes_to(&wire, v, packet);
    wire
}

/// Checks that `wire` (one encoded packet) decodes on a `version` connection to exactly
/// `expected`, consuming every byte; that its strict prefixes are "need more bytes"; and
/// that the decoded packet re-encodes to `wire` again.
pub fn check_decodes_to(wire: &[u8], version: ProtocolVersion, expected: &Packet) {
    let decoded = check_encoding(wire, version);
    assert_eq!(
        &decoded, expected,
        "decode(encode(p)) != p\nwire: {wire:02x?}"
    );
}

/// Checks that `wire` (the output of an encoder) decodes on a `version` connection to one
/// packet, consuming every byte, that the packet re-encodes to `wire` (the encoding is
/// canonical), and that the strict prefixes of `wire` are "need more bytes". Returns the
/// packet.
pub fn check_encoding(wire: &[u8], version: ProtocolVersion) -> Packet {
    let mut again = BytesMut::from(wire);
    let decoded = match decode(&mut again, version, u32::MAX) {
        Ok(Some(p)) => p,
        Ok(None) => panic!("an encoded packet is complete\nwire: {wire:02x?}"),
        Err(e) => panic!("an encoded packet must decode: {e}\nwire: {wire:02x?}"),
    };
    assert!(
        again.is_empty(),
        "decode left {} bytes of one packet",
        again.len()
    );

    let mut re = BytesMut::new();
    if let Err(e) = decoded.encode(version, &mut re) {
        panic!("re-encoding failed: {e}");
    }
    assert_eq!(&re[..], wire, "the encoding is not canonical");

    // The fixed header is the type byte and a variable byte integer of 1 to 4 bytes.
    let header_len = 1 + wire
        .iter()
        .skip(1)
        .take(4)
        .position(|b| b & 0x80 == 0)
        .map_or(4, |i| i + 1);
    for cut in [wire.len() - 1, header_len.min(wire.len() - 1)] {
        let mut prefix = BytesMut::from(&wire[..cut]);
        match decode(&mut prefix, version, u32::MAX) {
            Ok(None) => assert_eq!(&prefix[..], &wire[..cut], "Ok(None) touched the buffer"),
            other => panic!("a {cut}-byte prefix of a packet must need more bytes: {other:?}"),
        }
    }
    decoded
}
