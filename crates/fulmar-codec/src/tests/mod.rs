//! Unit tests of decode and encode, one file per packet family.

mod acks;
mod connect;
mod encode_paths;
mod framing;
mod limits;
mod properties;
mod publish;
mod robustness;
mod subscribe;

use bytes::BytesMut;

use crate::{DecodeError, Packet, ProtocolVersion, decode};

pub(crate) const V3: ProtocolVersion = ProtocolVersion::V311;
pub(crate) const V5: ProtocolVersion = ProtocolVersion::V5;
pub(crate) const MAX: u32 = 268_435_460;

/// Decodes one whole packet from `bytes`, asserting every byte is consumed.
pub(crate) fn dec(bytes: &[u8], version: ProtocolVersion) -> Result<Packet, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let p = decode(&mut buf, version, MAX)?;
    let p = p.expect("a whole packet");
    assert!(buf.is_empty(), "decode left {} bytes", buf.len());
    Ok(p)
}

/// Encodes `p`, checking `encoded_len` agrees.
pub(crate) fn enc(p: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    p.encode(version, &mut buf).unwrap();
    assert_eq!(p.encoded_len(version).unwrap(), buf.len());
    buf.to_vec()
}

/// Encode then decode gives the same packet; also decodes byte by byte.
pub(crate) fn round_trip(p: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let bytes = enc(p, version);
    assert_eq!(&dec(&bytes, version).unwrap(), p);
    // Fed one byte at a time: Ok(None) until the last byte.
    let mut buf = BytesMut::new();
    for (i, b) in bytes.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        let r = decode(&mut buf, version, MAX).unwrap();
        if i + 1 < bytes.len() {
            assert!(r.is_none());
            assert_eq!(buf.len(), i + 1, "buffer untouched while incomplete");
        } else {
            assert_eq!(r.as_ref(), Some(p));
        }
    }
    bytes
}

/// Builds a packet from a first byte and a body, computing the remaining length.
pub(crate) fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![first];
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        v.push(b);
        if len == 0 {
            break;
        }
    }
    v.extend_from_slice(body);
    v
}

/// A two-byte-length string.
pub(crate) fn s(text: &str) -> Vec<u8> {
    let mut v = (text.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(text.as_bytes());
    v
}
