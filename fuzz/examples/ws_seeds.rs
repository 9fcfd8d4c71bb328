//! Writes the hand-made seed corpus of the `ws_frames` target (see
//! `fulmar_fuzz::ws_checks`): binary frames in every length form, fragmented messages,
//! pings, pongs and closes between fragments, close frames with valid and invalid
//! payloads, and each protocol error (text frame, reserved bits, unmasked, unknown opcode,
//! continuation without a message, a message within a message, long or fragmented control
//! frames, lengths not in minimal form or over 63 bits, frames and messages over the limit).
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example ws_seeds
//! ```
//!
//! Files are named `seed-<what>` and written into `fuzz/corpus/ws_frames/`; existing files
//! with the same name are overwritten, other files are left alone. Every seed is played
//! through `check_ws_frames` before it is written, and must come to what it was made for.

use std::fs;
use std::io;
use std::path::Path;

use fulmar_fuzz::ws_checks::{Outcome, check_ws_frames};

/// Byte 0 of an input: the limit (`ws_checks::LIMITS`): 300 bytes, or 1 MiB.
const SMALL: u8 = 5;
const LARGE: u8 = 7;

/// A masked client frame with the length in its minimal form.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, k)| b ^ k));
    out
}

/// A header with the given 7-bit length and extended length bytes, zero mask.
fn header(first: u8, short: u8, extended: &[u8]) -> Vec<u8> {
    [&[first, 0x80 | short][..], extended, &[0; 4]].concat()
}

fn main() -> io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/ws_frames");
    fs::create_dir_all(&dir)?;
    let connect = b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01a";
    let pingreq = [0xc0, 0x00];
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    type Expect = fn(&Outcome) -> bool;
    let ok: Expect = |o| o.too_large.is_none() && !o.payload.is_empty();
    let protocol: Expect = |o| o.too_large == Some(false) && o.close_code == Some(1002);
    let too_large: Expect = |o| o.too_large == Some(true) && o.close_code == Some(1009);
    let closed: Expect = |o| o.closed;
    let seeds: Vec<(&str, u8, u8, Vec<u8>, Expect)> = vec![
        ("connect", LARGE, 0, frame(0x82, connect), ok),
        (
            "two-packets-one-frame",
            LARGE,
            1,
            frame(0x82, &[&connect[..], &pingreq].concat()),
            ok,
        ),
        (
            "packet-over-two-frames",
            LARGE,
            3,
            [frame(0x82, &connect[..5]), frame(0x82, &connect[5..])].concat(),
            ok,
        ),
        (
            "fragmented",
            LARGE,
            70,
            [
                frame(0x02, &connect[..3]),
                frame(0x00, &connect[3..9]),
                frame(0x80, &connect[9..]),
            ]
            .concat(),
            ok,
        ),
        (
            "controls-between-fragments",
            LARGE,
            2,
            [
                frame(0x02, &connect[..3]),
                frame(0x89, b"ping"),
                frame(0x8a, b"pong"),
                frame(0x80, &connect[3..]),
            ]
            .concat(),
            |o| o.ping.as_deref() == Some(b"ping") && o.payload.len() == 15,
        ),
        ("length-16", LARGE, 64, frame(0x82, &big[..300]), ok),
        ("length-64", LARGE, 0, frame(0x82, &big), ok),
        (
            "empty-frames",
            LARGE,
            1,
            [frame(0x82, b""), frame(0x02, b""), frame(0x80, b"x")].concat(),
            ok,
        ),
        (
            "partial-header",
            LARGE,
            1,
            frame(0x82, &big[..300])[..3].to_vec(),
            |o| o.payload.is_empty() && o.too_large.is_none(),
        ),
        (
            "partial-payload",
            LARGE,
            5,
            frame(0x82, &big[..300])[..100].to_vec(),
            ok,
        ),
        ("ping", LARGE, 0, frame(0x89, &[b'p'; 125]), |o| {
            o.ping.as_ref().is_some_and(|p| p.len() == 125)
        }),
        ("empty-ping", LARGE, 0, frame(0x89, b""), |o| {
            o.ping.as_deref() == Some(b"")
        }),
        (
            "close-empty",
            LARGE,
            0,
            [frame(0x88, b""), frame(0x82, &pingreq)].concat(),
            |o| o.closed && o.close_code == Some(1000) && o.payload.is_empty(),
        ),
        (
            "close-1001",
            LARGE,
            1,
            frame(0x88, &1001u16.to_be_bytes()),
            |o| o.close_code == Some(1001),
        ),
        ("close-reason", LARGE, 0, frame(0x88, b"\x0f\xa0bye"), |o| {
            o.close_code == Some(4000)
        }),
        ("close-one-byte", LARGE, 0, frame(0x88, b"\x03"), |o| {
            o.closed && o.close_code == Some(1002)
        }),
        (
            "close-bad-utf8",
            LARGE,
            0,
            frame(0x88, b"\x03\xe8\xff\xfe"),
            |o| o.closed && o.close_code == Some(1002),
        ),
        (
            "close-1005",
            LARGE,
            0,
            frame(0x88, &1005u16.to_be_bytes()),
            |o| o.close_code == Some(1002),
        ),
        (
            "close-999",
            LARGE,
            0,
            frame(0x88, &999u16.to_be_bytes()),
            |o| o.close_code == Some(1002),
        ),
        (
            "data-then-close",
            LARGE,
            2,
            [
                frame(0x82, &pingreq),
                frame(0x88, &1000u16.to_be_bytes()),
                frame(0x82, &pingreq),
            ]
            .concat(),
            |o| o.closed && o.payload == [0xc0, 0],
        ),
        ("text", LARGE, 0, frame(0x81, b"hello"), |o| {
            o.close_code == Some(1003)
        }),
        (
            "data-then-text",
            LARGE,
            0,
            [frame(0x82, &pingreq), frame(0x81, b"x")].concat(),
            |o| o.close_code == Some(1003) && o.payload == [0xc0, 0],
        ),
        ("rsv1", LARGE, 0, frame(0xc2, &pingreq), protocol),
        ("rsv3", LARGE, 0, frame(0x92, &pingreq), protocol),
        ("unmasked", LARGE, 0, vec![0x82, 0x02, 0xc0, 0x00], protocol),
        ("opcode-3", LARGE, 0, frame(0x83, b""), protocol),
        ("opcode-b", LARGE, 0, frame(0x8b, b""), protocol),
        (
            "lone-continuation",
            LARGE,
            0,
            frame(0x80, &pingreq),
            protocol,
        ),
        (
            "message-in-message",
            LARGE,
            0,
            [frame(0x02, b"a"), frame(0x82, b"b")].concat(),
            protocol,
        ),
        ("fragmented-ping", LARGE, 0, frame(0x09, b"p"), protocol),
        ("long-ping", LARGE, 0, frame(0x89, &[0; 126]), protocol),
        (
            "long-close",
            LARGE,
            0,
            header(0x88, 127, &200u64.to_be_bytes()),
            protocol,
        ),
        (
            "length-16-not-minimal",
            LARGE,
            0,
            header(0x82, 126, &5u16.to_be_bytes()),
            protocol,
        ),
        (
            "length-64-not-minimal",
            LARGE,
            0,
            header(0x82, 127, &0xffffu64.to_be_bytes()),
            protocol,
        ),
        (
            "length-64-top-bit",
            LARGE,
            0,
            header(0x82, 127, &(1u64 << 63).to_be_bytes()),
            protocol,
        ),
        (
            "frame-over-limit",
            SMALL,
            0,
            frame(0x82, &big[..301]),
            too_large,
        ),
        (
            "message-over-limit",
            SMALL,
            7,
            [frame(0x02, &big[..200]), frame(0x80, &big[..101])].concat(),
            too_large,
        ),
        (
            "header-of-huge-frame",
            LARGE,
            1,
            header(0x82, 127, &(1u64 << 40).to_be_bytes()),
            too_large,
        ),
        (
            "close-after-fragment",
            LARGE,
            0,
            [frame(0x02, b"a"), frame(0x88, b"")].concat(),
            closed,
        ),
    ];
    for (name, limit, step, wire, expect) in seeds {
        let input = [&[limit, step][..], &wire].concat();
        let outcome = check_ws_frames(&input);
        assert!(expect(&outcome), "seed {name}: {outcome:?}");
        fs::write(dir.join(format!("seed-{name}")), &input)?;
    }
    Ok(())
}
