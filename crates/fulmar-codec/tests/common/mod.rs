//! Helpers shared by the integration tests: wire bytes written like a
//! transcript, and assertions that a value and its bytes correspond exactly.

#![allow(dead_code)]
// each test binary uses its own subset
// Fixture helpers: a bad fixture is a bug in the test, so they panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::BytesMut;
use fulmar_codec::{
    DecodeError, EncodeError, Packet, PacketId, ProtocolVersion, ReasonCode, decode,
};

/// A maximum packet size large enough for every vector.
pub(crate) const MAX: u32 = 268_435_460;

/// Parses a wire transcript into bytes.
///
/// Two hex digits make a byte; `'text'` is copied as ASCII/UTF-8; whitespace
/// and `|` (a visual separator between fields) are ignored.
///
/// ```text
/// hex("30 05 | 00 03 'a/b'") == [0x30, 0x05, 0x00, 0x03, b'a', b'/', b'b']
/// ```
pub(crate) fn hex(transcript: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = transcript.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() || c == '|' => {}
            '\'' => {
                let mut text = String::new();
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => text.push(c),
                        None => panic!("unterminated quote in {transcript:?}"),
                    }
                }
                out.extend_from_slice(text.as_bytes());
            }
            hi => {
                let lo = chars
                    .next()
                    .unwrap_or_else(|| panic!("odd number of hex digits in {transcript:?}"));
                let byte = u8::from_str_radix(&format!("{hi}{lo}"), 16)
                    .unwrap_or_else(|_| panic!("bad hex byte {hi}{lo} in {transcript:?}"));
                out.push(byte);
            }
        }
    }
    out
}

/// The encoding of a Variable Byte Integer (written independently of the codec).
pub(crate) fn var_int(mut value: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            return out;
        }
    }
}

/// A whole packet: first byte, remaining length, body.
pub(crate) fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    out.extend(var_int(body.len()));
    out.extend_from_slice(body);
    out
}

/// A two-byte length followed by the bytes of `text`.
pub(crate) fn string(text: &str) -> Vec<u8> {
    let mut out = u16::try_from(text.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out
}

/// Encodes `packet` for `version`.
pub(crate) fn encode(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    packet.encode(version, &mut buf).unwrap();
    buf.to_vec()
}

/// Decodes exactly one whole packet from `wire`.
pub(crate) fn decode_one(wire: &[u8], version: ProtocolVersion) -> Result<Packet, DecodeError> {
    let mut buf = BytesMut::from(wire);
    let packet = decode(&mut buf, version, MAX)?.expect("a whole packet");
    assert!(buf.is_empty(), "{} bytes left after the packet", buf.len());
    Ok(packet)
}

/// The vector holds in both directions: `packet` encodes to exactly `wire`
/// (and `encoded_len` agrees), and `wire` decodes to exactly `packet`,
/// consuming its own bytes and nothing of what follows.
#[track_caller]
pub(crate) fn assert_vector(packet: &Packet, version: ProtocolVersion, wire: &[u8]) {
    let encoded = encode(packet, version);
    assert_eq!(Hex(&encoded), Hex(wire), "encode of {packet:?} ({version})");
    assert_eq!(packet.encoded_len(version).unwrap(), wire.len());
    assert_eq!(&decode_one(wire, version).unwrap(), packet, "decode");
    let mut followed = BytesMut::from(wire);
    followed.extend_from_slice(&[0xC0, 0x00]);
    let first = decode(&mut followed, version, MAX).unwrap();
    assert_eq!(first.as_ref(), Some(packet));
    assert_eq!(&followed[..], &[0xC0, 0x00], "consumed only its own bytes");
}

/// `wire` decodes (it is accepted) to `packet`, but `packet` encodes
/// differently: for inputs that are valid yet not the codec's own encoding.
#[track_caller]
pub(crate) fn assert_decodes_to(wire: &[u8], version: ProtocolVersion, packet: &Packet) {
    assert_eq!(&decode_one(wire, version).unwrap(), packet);
}

/// `wire` is refused with exactly `error`, which maps to `reason`.
#[track_caller]
pub(crate) fn assert_malformed(
    wire: &[u8],
    version: ProtocolVersion,
    error: DecodeError,
    reason: ReasonCode,
) {
    let mut buf = BytesMut::from(wire);
    assert_eq!(
        decode(&mut buf, version, MAX),
        Err(error.clone()),
        "decode of {:?} ({version})",
        Hex(wire)
    );
    assert_eq!(error.reason_code(), reason, "reason code of {error:?}");
}

/// Bytes shown as hex in assertion messages.
#[derive(PartialEq, Eq)]
pub(crate) struct Hex<'a>(pub(crate) &'a [u8]);

impl core::fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A property block: the Property Length (a Variable Byte Integer) and the properties.
pub(crate) fn props(properties: &[u8]) -> Vec<u8> {
    let mut out = var_int(properties.len());
    out.extend_from_slice(properties);
    out
}

/// Concatenates wire fragments.
pub(crate) fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The packet identifier `n` (not zero).
pub(crate) fn id(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

/// Encoding `packet` for `version` fails; nothing is written, and
/// `encoded_len` reports the same error.
#[track_caller]
pub(crate) fn encode_err(packet: impl Into<Packet>, version: ProtocolVersion) -> EncodeError {
    let packet = packet.into();
    let mut buf = BytesMut::new();
    let err = packet.encode(version, &mut buf).unwrap_err();
    assert!(buf.is_empty(), "nothing is written on error");
    assert_eq!(packet.encoded_len(version), Err(err.clone()));
    err
}

/// Checks that the reason code enum `C` accepts exactly the `spec` values
/// (and converts back to them), and returns them typed.
#[track_caller]
pub(crate) fn code_table<C>(spec: &[u8]) -> Vec<C>
where
    C: TryFrom<u8> + Into<u8> + Copy + core::fmt::Debug,
{
    let mut typed = Vec::new();
    for value in 0..=0xFF_u8 {
        match C::try_from(value) {
            Ok(code) => {
                assert!(
                    spec.contains(&value),
                    "{code:?} ({value:#04x}) is not in the spec table"
                );
                assert_eq!(code.into(), value);
                typed.push(code);
            }
            Err(_) => assert!(!spec.contains(&value), "{value:#04x} is missing"),
        }
    }
    typed
}

/// The byte values that are not in a reason code table.
pub(crate) fn not_in(spec: &[u8]) -> impl Iterator<Item = u8> + '_ {
    (0..=0xFF_u8).filter(|v| !spec.contains(v))
}
