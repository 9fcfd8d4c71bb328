//! Wire primitives: a bounds-checked reader over a received packet, and the
//! [`Sink`] the encoder writes to (a `BytesMut`, or a byte counter so that
//! lengths are computed by the very code that encodes).

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::string::{MqttString, scan};
use crate::types::{PacketId, PacketType};

/// The largest value a Variable Byte Integer can hold (spec 1.5.5).
pub(crate) const MAX_VAR_INT: u32 = 268_435_455;

/// A cursor over part of a received packet. Every read is bounds-checked and
/// returns [`DecodeError::Truncated`] past the end; slices share the packet buffer.
pub(crate) struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf[start..]` (clamped to the buffer).
    pub(crate) fn new(buf: &'a Bytes, start: usize) -> Self {
        let end = buf.len();
        Self {
            buf,
            pos: start.min(end),
            end,
        }
    }

    /// Bytes left to read.
    pub(crate) fn remaining(&self) -> usize {
        self.end - self.pos
    }

    /// Whether every byte has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    fn take_slice(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(len).filter(|e| *e <= self.end);
        let slice = end.and_then(|end| self.buf.get(self.pos..end));
        match (slice, end) {
            (Some(s), Some(end)) => {
                self.pos = end;
                Ok(s)
            }
            _ => Err(DecodeError::Truncated { field }),
        }
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        let b = self
            .buf
            .get(self.pos)
            .filter(|_| self.pos < self.end)
            .copied();
        let b = b.ok_or(DecodeError::Truncated { field })?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        let s = self.take_slice(2, field)?;
        let mut a = [0u8; 2];
        a.copy_from_slice(s);
        Ok(u16::from_be_bytes(a))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let s = self.take_slice(4, field)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(s);
        Ok(u32::from_be_bytes(a))
    }

    /// A Variable Byte Integer; MQTT 5.0 requires the minimal encoding.
    pub(crate) fn var_int(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let rest = self.buf.get(self.pos..self.end).unwrap_or_default();
        match parse_var_int(rest)? {
            Some(v) => {
                if !v.minimal {
                    return Err(DecodeError::NonMinimalVarInt);
                }
                self.pos += v.len;
                Ok(v.value)
            }
            None => Err(DecodeError::Truncated { field }),
        }
    }

    /// `len` bytes as a zero-copy slice of the packet.
    pub(crate) fn bytes(&mut self, len: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        let start = self.pos;
        self.take_slice(len, field)?;
        Ok(self.buf.slice(start..self.pos))
    }

    /// Binary Data borrowed from the packet, for a field that is only
    /// compared (no reference to the packet buffer is taken).
    pub(crate) fn binary_slice(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u16(field)?;
        self.take_slice(usize::from(len), field)
    }

    /// Binary Data: a two-byte length and that many bytes (spec 1.5.6).
    pub(crate) fn binary(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u16(field)?;
        self.bytes(usize::from(len), field)
    }

    /// A UTF-8 Encoded String (spec 1.5.4), validated.
    #[inline]
    pub(crate) fn string(&mut self, field: &'static str) -> Result<MqttString, DecodeError> {
        self.scanned_string(field).map(|(s, _)| s)
    }

    /// A UTF-8 Encoded String, validated, and whether it contains a wildcard
    /// character (found by the same pass over its bytes).
    #[inline]
    pub(crate) fn scanned_string(
        &mut self,
        field: &'static str,
    ) -> Result<(MqttString, bool), DecodeError> {
        let raw = self.binary(field)?;
        let found = scan(&raw);
        match MqttString::from_scanned(raw, found) {
            Ok(s) => Ok((s, found.wildcard)),
            Err(error) => Err(DecodeError::InvalidString { field, error }),
        }
    }

    /// Where the next read starts, from the start of the buffer.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Everything left, as a zero-copy slice.
    #[cfg(test)]
    pub(crate) fn rest(&mut self) -> Bytes {
        let start = self.pos;
        self.pos = self.end;
        self.buf.slice(start..self.end)
    }

    /// A reader over the next `len` bytes; this reader skips past them.
    pub(crate) fn sub(&mut self, len: usize) -> Option<Reader<'a>> {
        let end = self.pos.checked_add(len).filter(|e| *e <= self.end)?;
        let sub = Reader {
            buf: self.buf,
            pos: self.pos,
            end,
        };
        self.pos = end;
        Some(sub)
    }
}

/// A decoded Variable Byte Integer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct VarInt {
    pub(crate) value: u32,
    /// Bytes used.
    pub(crate) len: usize,
    /// Whether it uses the minimum number of bytes.
    pub(crate) minimal: bool,
}

/// Parses a Variable Byte Integer at the start of `buf`: `Ok(None)` if `buf`
/// ends before its last byte, an error after four continuation bytes.
pub(crate) fn parse_var_int(buf: &[u8]) -> Result<Option<VarInt>, DecodeError> {
    let mut value: u32 = 0;
    for (i, &b) in buf.iter().take(4).enumerate() {
        value |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            let len = i + 1;
            return Ok(Some(VarInt {
                value,
                len,
                minimal: len == 1 || b != 0,
            }));
        }
    }
    if buf.len() >= 4 {
        Err(DecodeError::VarIntTooLong)
    } else {
        Ok(None)
    }
}

/// Bytes needed to encode `v` as a Variable Byte Integer.
pub(crate) const fn var_int_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Where the encoder writes: a buffer, or a counter.
pub(crate) trait Sink {
    /// Whether this sink only counts (the first pass of every encode, which validates).
    const COUNTING: bool = false;
    /// Counts `n` bytes without writing them (only meaningful for the counter).
    fn add_len(&mut self, _n: usize) {}
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_slice(&mut self, s: &[u8]);
    /// `prefix`, `v` (at most [`MAX_VAR_INT`]) as a Variable Byte Integer, then `suffix`.
    fn put_with_var_int<const P: usize, const N: usize>(
        &mut self,
        prefix: &[u8; P],
        v: u32,
        suffix: &[u8; N],
    );
}

impl Sink for BytesMut {
    #[inline]
    fn put_with_var_int<const P: usize, const N: usize>(
        &mut self,
        prefix: &[u8; P],
        v: u32,
        suffix: &[u8; N],
    ) {
        put_with_var_int(self, prefix, v, suffix);
    }
    #[inline]
    fn put_u8(&mut self, v: u8) {
        BufMut::put_u8(self, v);
    }
    #[inline]
    fn put_u16(&mut self, v: u16) {
        BufMut::put_u16(self, v);
    }
    #[inline]
    fn put_slice(&mut self, s: &[u8]) {
        BufMut::put_slice(self, s);
    }
}

/// A [`Sink`] that only counts bytes.
#[derive(Default)]
pub(crate) struct Counter(pub(crate) usize);

impl Sink for Counter {
    const COUNTING: bool = true;
    #[inline]
    fn put_with_var_int<const P: usize, const N: usize>(
        &mut self,
        _: &[u8; P],
        v: u32,
        _: &[u8; N],
    ) {
        self.0 += P + var_int_len(v as usize) + N;
    }
    #[inline]
    fn add_len(&mut self, n: usize) {
        self.0 += n;
    }
    #[inline]
    fn put_u8(&mut self, _: u8) {
        self.0 += 1;
    }
    #[inline]
    fn put_u16(&mut self, _: u16) {
        self.0 += 2;
    }
    #[inline]
    fn put_slice(&mut self, s: &[u8]) {
        self.0 += s.len();
    }
}

/// Writes `v` (at most [`MAX_VAR_INT`], checked by callers) as a Variable Byte Integer.
#[inline]
pub(crate) fn put_var_int<S: Sink>(s: &mut S, v: u32) {
    s.put_with_var_int(&[], v, &[]);
}

/// Appends `prefix`, `v` (at most [`MAX_VAR_INT`]) as a Variable
/// Byte Integer and `suffix` with one write of a size known at compile time
/// for each of the four lengths of `v`: a few stores, no call to `memcpy`.
/// Used for the fixed header followed by the first fixed-size field, and for
/// a packet identifier followed by the Property Length.
#[inline(always)]
pub(crate) fn put_with_var_int<const P: usize, const N: usize>(
    buf: &mut BytesMut,
    prefix: &[u8; P],
    v: u32,
    suffix: &[u8; N],
) {
    match v {
        0..=0x7F => put_with_var_int_of::<1, P, N>(buf, prefix, v, suffix),
        0x80..=0x3FFF => put_with_var_int_of::<2, P, N>(buf, prefix, v, suffix),
        0x4000..=0x1F_FFFF => put_with_var_int_of::<3, P, N>(buf, prefix, v, suffix),
        _ => put_with_var_int_of::<4, P, N>(buf, prefix, v, suffix),
    }
}

/// [`put_with_var_int`] for a `v` of `K` bytes.
#[inline(always)]
fn put_with_var_int_of<const K: usize, const P: usize, const N: usize>(
    buf: &mut BytesMut,
    prefix: &[u8; P],
    v: u32,
    suffix: &[u8; N],
) {
    const { assert!(P + K + N <= 16, "put_with_var_int writes at most 16 bytes") };
    let mut bytes = [0u8; 16];
    let (head, rest) = bytes.split_at_mut(P);
    head.copy_from_slice(prefix);
    let mut v = v;
    for (i, slot) in rest.iter_mut().take(K).enumerate() {
        // Truncation is intended: the low seven bits, with the continuation
        // bit on every byte but the last.
        *slot = (v & 0x7F) as u8 | if i + 1 < K { 0x80 } else { 0 };
        v >>= 7;
    }
    if let Some(tail) = rest.get_mut(K..K + N) {
        tail.copy_from_slice(suffix);
    }
    buf.extend_from_slice(bytes.get(..P + K + N).unwrap_or(&bytes));
}

/// A length as a Variable Byte Integer, or [`EncodeError::PacketTooLarge`].
pub(crate) fn checked_var_int(len: usize) -> Result<u32, EncodeError> {
    u32::try_from(len)
        .ok()
        .filter(|v| *v <= MAX_VAR_INT)
        .ok_or(EncodeError::PacketTooLarge(len))
}

pub(crate) fn put_string<S: Sink>(s: &mut S, v: &MqttString) {
    // MqttString guarantees at most 65 535 bytes.
    s.put_u16(u16::try_from(v.len()).unwrap_or(u16::MAX));
    s.put_slice(v.as_bytes());
}

/// Binary Data (spec 1.5.6), at most 65 535 bytes.
#[inline]
pub(crate) fn put_binary<S: Sink>(
    s: &mut S,
    v: &[u8],
    field: &'static str,
) -> Result<(), EncodeError> {
    let len = u16::try_from(v.len()).map_err(|_| EncodeError::BinaryTooLong {
        field,
        len: v.len(),
    })?;
    s.put_u16(len);
    s.put_slice(v);
    Ok(())
}

/// A non-zero Packet Identifier.
pub(crate) fn read_packet_id(
    r: &mut Reader<'_>,
    packet_type: PacketType,
) -> Result<PacketId, DecodeError> {
    PacketId::new(r.u16("packet identifier")?).ok_or(DecodeError::ZeroPacketId(packet_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: u32) -> Vec<u8> {
        let mut b = BytesMut::new();
        put_var_int(&mut b, v);
        b.to_vec()
    }

    #[test]
    fn var_int_spec_boundaries() {
        // Table 1-1 of spec 1.5.5
        for (v, bytes) in [
            (0u32, vec![0x00]),
            (127, vec![0x7F]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xFF, 0x7F]),
            (16_384, vec![0x80, 0x80, 0x01]),
            (2_097_151, vec![0xFF, 0xFF, 0x7F]),
            (2_097_152, vec![0x80, 0x80, 0x80, 0x01]),
            (268_435_455, vec![0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            assert_eq!(enc(v), bytes);
            assert_eq!(var_int_len(v as usize), bytes.len());
            let parsed = parse_var_int(&bytes).unwrap().unwrap();
            assert_eq!(
                parsed,
                VarInt {
                    value: v,
                    len: bytes.len(),
                    minimal: true
                }
            );
        }
    }

    #[test]
    fn var_int_incomplete_and_too_long() {
        assert_eq!(parse_var_int(&[]).unwrap(), None);
        assert_eq!(parse_var_int(&[0x80, 0x80]).unwrap(), None);
        assert_eq!(
            parse_var_int(&[0x80, 0x80, 0x80, 0x80]),
            Err(DecodeError::VarIntTooLong)
        );
        assert_eq!(
            parse_var_int(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            Err(DecodeError::VarIntTooLong)
        );
    }

    #[test]
    fn var_int_non_minimal() {
        // MQTT-1.5.5-1
        let v = parse_var_int(&[0x80, 0x00]).unwrap().unwrap();
        assert!(!v.minimal);
        assert_eq!(v.value, 0);
        let v = parse_var_int(&[0x81, 0x80, 0x00]).unwrap().unwrap();
        assert!(!v.minimal);
        let buf = Bytes::from_static(&[0x85, 0x00]);
        let mut r = Reader::new(&buf, 0);
        assert_eq!(r.var_int("x"), Err(DecodeError::NonMinimalVarInt));
    }

    #[test]
    fn reader_bounds() {
        let buf = Bytes::from_static(&[0, 3, b'a', b'b']);
        let mut r = Reader::new(&buf, 0);
        assert_eq!(
            r.string("topic"),
            Err(DecodeError::Truncated { field: "topic" })
        );
        let mut r = Reader::new(&buf, 0);
        assert_eq!(r.u32("x").unwrap(), 0x0003_6162);
        assert!(r.is_empty());
        assert_eq!(r.u8("y"), Err(DecodeError::Truncated { field: "y" }));
        let mut r = Reader::new(&buf, 1);
        let mut sub = r.sub(2).unwrap();
        assert_eq!(sub.u16("z").unwrap(), 0x0361);
        assert!(sub.is_empty());
        assert_eq!(r.remaining(), 1);
        assert!(r.sub(2).is_none());
        assert_eq!(r.rest(), Bytes::from_static(b"b"));
    }

    #[test]
    fn binary_too_long() {
        let mut c = Counter::default();
        let big = vec![0u8; 65_536];
        assert_eq!(
            put_binary(&mut c, &big, "password"),
            Err(EncodeError::BinaryTooLong {
                field: "password",
                len: 65_536
            })
        );
        assert!(put_binary(&mut c, &big[..65_535], "password").is_ok());
        assert_eq!(c.0, 65_537);
        assert_eq!(
            checked_var_int(268_435_456),
            Err(EncodeError::PacketTooLarge(268_435_456))
        );
    }
}
