//! The checks of the `ws_frames` fuzz target, shared with the corpus replay test of
//! fulmar-broker (`crates/fulmar-broker/tests/ws_fuzz_corpus.rs` includes this file with
//! `#[path]`). Only fulmar-broker's doc-hidden `WsFrameDecoder` and std are used here.
//!
//! The input: byte 0 picks the decoder's limit (see [`LIMITS`]), byte 1 how the bytes are
//! cut into reads (see [`steps`]), the rest is what a WebSocket client sent after the
//! handshake. [`check_ws_frames`] decodes it with the broker's decoder, fed whole and in
//! pieces, and compares every outcome with [`model`], a naive transcription of RFC 6455
//! section 5 (and MQTT 5.0 section 6) that parses the whole input at once: the same
//! payload bytes, the same error (a protocol error or a frame over the limit) after them,
//! the same close status code, the same close, the same ping to answer. No panic, and no
//! more payload than input.

use fulmar_broker::WsFrameDecoder;

/// The decoder limits byte 0 picks from (the listeners use at least 64 KiB; small ones
/// reach the limit checks with small inputs).
pub const LIMITS: [usize; 8] = [0, 1, 7, 125, 126, 300, 65_536, 1 << 20];

/// What decoding the input came to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The payload bytes of binary frames and their continuations, unmasked, in order.
    pub payload: Vec<u8>,
    /// The error that ended the decoding: `Some(true)` a frame or message over the
    /// limit, `Some(false)` a protocol error.
    pub too_large: Option<bool>,
    /// The close status code to send.
    pub close_code: Option<u16>,
    /// A close frame came.
    pub closed: bool,
    /// The payload of the latest ping.
    pub ping: Option<Vec<u8>>,
}

/// The piece sizes byte 1 picks: 0 is the whole input, 1 to 64 a fixed size, and the
/// rest sizes 1, 2, 3... cycling up to `b - 60`.
pub fn steps(selector: u8, len: usize) -> Vec<usize> {
    match selector {
        0 => vec![len.max(1)],
        1..=64 => vec![usize::from(selector)],
        _ => (1..=usize::from(selector) - 60).collect(),
    }
}

/// Decodes `wire` with the broker's decoder, in reads of the sizes `steps` (cycled).
pub fn decode(wire: &[u8], max_message: usize, steps: &[usize]) -> Outcome {
    let mut decoder = WsFrameDecoder::new(max_message);
    let mut outcome = Outcome::default();
    let mut at = 0;
    let mut sizes = steps.iter().copied().cycle();
    while at < wire.len() {
        let size = sizes.next().unwrap_or(1).max(1);
        let end = at.saturating_add(size).min(wire.len());
        let mut raw = wire.get(at..end).unwrap_or_default().to_vec();
        at = end;
        let error = match decoder.decode(&mut raw) {
            Ok(n) => {
                assert!(n <= raw.len(), "{n} payload bytes out of {}", raw.len());
                outcome
                    .payload
                    .extend_from_slice(raw.get(..n).unwrap_or_default());
                decoder.take_error()
            }
            Err(error) => Some(error),
        };
        if let Some(error) = error {
            assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
            outcome.too_large = Some(WsFrameDecoder::is_too_large(&error));
            break;
        }
    }
    outcome.close_code = decoder.close_code();
    outcome.closed = decoder.closed();
    outcome.ping = decoder.ping().map(<[u8]>::to_vec);
    outcome
}

/// RFC 6455 7.4: the status codes a close frame may carry (the defined ones that are
/// not reserved for use outside close frames, and those of libraries and applications).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// A naive reading of the whole of `wire` (RFC 6455 section 5, one frame after another).
pub fn model(wire: &[u8], max_message: usize) -> Outcome {
    let mut out = Outcome::default();
    let fail = |out: &mut Outcome, code: u16, too_large: bool| {
        out.close_code.get_or_insert(code);
        out.too_large = Some(too_large);
    };
    let mut at = 0;
    // A fragmented binary message is open, and its length so far.
    let mut open = false;
    let mut message = 0u64;
    while !out.closed {
        let (Some(&b0), Some(&b1)) = (wire.get(at), wire.get(at + 1)) else {
            break;
        };
        at += 2;
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0f;
        let short = b1 & 0x7f;
        // 5.2: no extension negotiated, so RSV1-3 are 0; 5.1: clients mask.
        if b0 & 0x70 != 0 || b1 & 0x80 == 0 {
            fail(&mut out, 1002, false);
            break;
        }
        let control = opcode >= 8;
        match opcode {
            // [MQTT-6.0.0-1]: binary frames only; 1003 is "data it cannot accept".
            1 => {
                fail(&mut out, 1003, false);
                break;
            }
            // 5.4: a new message while one is open, a continuation without one.
            2 if open => {
                fail(&mut out, 1002, false);
                break;
            }
            0 if !open => {
                fail(&mut out, 1002, false);
                break;
            }
            0 | 2 => {}
            // 5.5: control frames are not fragmented and carry at most 125 bytes.
            8..=10 if !fin || short > 125 => {
                fail(&mut out, 1002, false);
                break;
            }
            8..=10 => {}
            // 5.2: opcodes 3-7 and 11-15 are reserved.
            _ => {
                fail(&mut out, 1002, false);
                break;
            }
        }
        let extended = match short {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let Some(length_bytes) = wire.get(at..at + extended) else {
            break;
        };
        let length = if extended == 0 {
            u64::from(short)
        } else {
            length_bytes
                .iter()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
        };
        let Some(mask) = wire.get(at + extended..at + extended + 4) else {
            break;
        };
        let mask: Vec<u8> = mask.to_vec();
        at += extended + 4;
        // 5.2: the minimal number of bytes, and the most significant bit 0.
        let minimal = match extended {
            2 => length >= 126,
            8 => length > 0xffff && length >> 63 == 0,
            _ => true,
        };
        if !minimal {
            fail(&mut out, 1002, false);
            break;
        }
        if !control {
            let total = message.saturating_add(length);
            let max = u64::try_from(max_message).unwrap_or(u64::MAX);
            if length > max || total > max {
                fail(&mut out, 1009, true);
                break;
            }
            message = if fin { 0 } else { total };
            open = !fin;
        }
        let available = wire.len() - at;
        let take = usize::try_from(length).unwrap_or(usize::MAX).min(available);
        let payload: Vec<u8> = wire
            .get(at..at + take)
            .unwrap_or_default()
            .iter()
            .zip(mask.iter().cycle())
            .map(|(b, k)| b ^ k)
            .collect();
        at += take;
        if !control {
            out.payload.extend_from_slice(&payload);
        }
        if u64::try_from(take).unwrap_or(u64::MAX) < length {
            // The rest of the frame has not come.
            break;
        }
        match opcode {
            9 => out.ping = Some(payload),
            8 => {
                out.closed = true;
                let code = match payload.as_slice() {
                    [] => 1000,
                    [_] => 1002,
                    [a, b, reason @ ..] => {
                        let code = u16::from_be_bytes([*a, *b]);
                        // 5.5.1: the reason is UTF-8.
                        if valid_close_code(code) && std::str::from_utf8(reason).is_ok() {
                            code
                        } else {
                            1002
                        }
                    }
                };
                out.close_code.get_or_insert(code);
            }
            _ => {}
        }
    }
    out
}

/// Runs the checks on one fuzz input; panics when one fails. Returns the model's outcome.
pub fn check_ws_frames(data: &[u8]) -> Outcome {
    let (Some(&limit), Some(&step)) = (data.first(), data.get(1)) else {
        return Outcome::default();
    };
    let max_message = LIMITS
        .get(usize::from(limit) % LIMITS.len())
        .copied()
        .unwrap_or(0);
    let wire = data.get(2..).unwrap_or_default();
    let expected = model(wire, max_message);
    assert!(expected.payload.len() <= wire.len());
    for steps in [vec![wire.len().max(1)], steps(step, wire.len())] {
        let got = decode(wire, max_message, &steps);
        assert_eq!(
            got, expected,
            "limit {max_message}, reads of {steps:?}, wire {wire:02x?}"
        );
    }
    expected
}
