//! `MqttString`: a zero-copy, validated MQTT UTF-8 Encoded String.

use core::borrow::Borrow;
use core::fmt;
use core::ops::Deref;

use bytes::Bytes;
use bytestring::ByteString;

use crate::error::StringError;

/// The longest string the two-byte length prefix can describe.
pub const MAX_STRING_LEN: usize = 65_535;

/// An MQTT UTF-8 Encoded String (MQTT 5.0 section 1.5.4, MQTT 3.1.1 section 1.5.3).
///
/// Invariants, checked by every constructor:
/// - well-formed UTF-8 (so no encoded surrogates U+D800..U+DFFF),
/// - no U+0000,
/// - at most 65 535 bytes.
///
/// The text is stored in [`Bytes`], so a string decoded from a packet is a
/// slice of the packet buffer (no copy), and cloning is a reference count
/// increment. A leading U+FEFF (BOM) is kept as is, never stripped.
///
/// ```
/// use fulmar_codec::MqttString;
///
/// let topic = MqttString::from("sensors/temp");
/// assert_eq!(topic, *"sensors/temp");
/// assert_eq!(topic.len(), 12);
/// assert!(MqttString::try_from(bytes::Bytes::from_static(b"a\0b")).is_err());
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct MqttString(ByteString);

impl MqttString {
    /// The empty string.
    #[must_use]
    pub const fn new() -> Self {
        Self(ByteString::new())
    }

    /// Validates and copies `s`.
    ///
    /// # Errors
    /// [`StringError::NullCharacter`] or [`StringError::TooLong`].
    pub fn try_new(s: &str) -> Result<Self, StringError> {
        check(s)?;
        Ok(Self(ByteString::from(s)))
    }

    /// Validates an owned `String` without copying it.
    ///
    /// # Errors
    /// [`StringError::NullCharacter`] or [`StringError::TooLong`].
    pub fn try_from_string(s: String) -> Result<Self, StringError> {
        check(&s)?;
        Ok(Self(ByteString::from(s)))
    }

    /// Validates a static string without copying it.
    ///
    /// # Errors
    /// [`StringError::NullCharacter`] or [`StringError::TooLong`].
    pub fn try_from_static(s: &'static str) -> Result<Self, StringError> {
        check(s)?;
        Ok(Self(ByteString::from_static(s)))
    }

    /// The text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The UTF-8 bytes, sharing the underlying buffer.
    #[must_use]
    pub fn as_bytes(&self) -> &Bytes {
        self.0.as_bytes()
    }

    /// The UTF-8 bytes, without copying.
    #[must_use]
    pub fn into_bytes(self) -> Bytes {
        self.0.into_bytes()
    }

    /// Number of bytes on the wire, not counting the two-byte length prefix.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the string is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What follows `prefix`, if the string starts with it, sharing its
    /// bytes (no copy, no new validation: the rest of a valid string is
    /// one).
    ///
    /// ```
    /// use fulmar_codec::MqttString;
    ///
    /// let topic = MqttString::from("tenant1/sensors/temp");
    /// assert_eq!(topic.strip_prefix("tenant1/").unwrap(), *"sensors/temp");
    /// assert!(topic.strip_prefix("tenant2/").is_none());
    /// ```
    #[must_use]
    pub fn strip_prefix(&self, prefix: &str) -> Option<Self> {
        let rest = self.as_str().strip_prefix(prefix)?;
        Some(Self(self.0.slice_ref(rest)))
    }

    /// Validates `bytes` whose [`scan`] is `found` (length, U+0000, UTF-8).
    #[inline]
    pub(crate) fn from_scanned(bytes: Bytes, found: Scan) -> Result<Self, StringError> {
        if bytes.len() > MAX_STRING_LEN {
            return Err(StringError::TooLong(bytes.len()));
        }
        if found.nul {
            return Err(StringError::NullCharacter);
        }
        ByteString::try_from(bytes)
            .map(Self)
            .map_err(|_| StringError::InvalidUtf8)
    }

    /// Number of bytes on the wire, including the two-byte length prefix.
    #[must_use]
    pub fn wire_len(&self) -> usize {
        2 + self.0.len()
    }
}

/// What one pass over the bytes of a string found (see [`scan`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    /// A U+0000 byte.
    pub(crate) nul: bool,
    /// A `+` or `#`, which a Topic Name must not contain.
    pub(crate) wildcard: bool,
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// The high bit of every byte of `v` that is zero is set (exact as a whole:
/// the result is non-zero iff some byte of `v` is zero).
#[inline(always)]
const fn zero_bytes(v: u64) -> u64 {
    v.wrapping_sub(LO) & !v & HI
}

/// NUL and wildcard bits of the eight bytes of `w` (SWAR).
#[inline(always)]
fn scan_word(w: u64) -> (u64, u64) {
    let wild = zero_bytes(w ^ (LO * u64::from(b'+'))) | zero_bytes(w ^ (LO * u64::from(b'#')));
    (zero_bytes(w), wild)
}

/// The eight bytes of `word` (eight long) as a little-endian integer.
#[inline(always)]
fn word(word: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(word);
    u64::from_le_bytes(a)
}

/// One pass over `bytes`: NUL and wildcard characters. Eight bytes at a
/// time (SWAR); the last word overlaps the one before instead of a byte loop.
#[inline]
pub(crate) fn scan(bytes: &[u8]) -> Scan {
    let len = bytes.len();
    if len < 8 {
        let mut nul = false;
        let mut wildcard = false;
        for &b in bytes {
            nul |= b == 0;
            wildcard |= (b == b'+') | (b == b'#');
        }
        return Scan { nul, wildcard };
    }
    let mut nul = 0;
    let mut wild = 0;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let (n, x) = scan_word(word(w));
        nul |= n;
        wild |= x;
    }
    if !words.remainder().is_empty()
        && let Some(last) = bytes.get(len - 8..)
    {
        let (n, x) = scan_word(word(last));
        nul |= n;
        wild |= x;
    }
    Scan {
        nul: nul != 0,
        wildcard: wild != 0,
    }
}

/// `b & WILDCARD_MASK == WILDCARD_BITS` holds exactly for `+` (0x2B) and `#`
/// (0x23), which differ only in bit 3.
const WILDCARD_MASK: u8 = 0xF7;
const WILDCARD_BITS: u8 = 0x23;

/// Marks (0xFF) the bytes of `chunk` that are `+` or `#`. A fixed-size,
/// branch-free loop: the compiler makes it one vector AND and one compare.
#[inline(always)]
fn wildcards_16(chunk: [u8; 16]) -> u128 {
    u128::from_ne_bytes(chunk.map(|b| {
        if b & WILDCARD_MASK == WILDCARD_BITS {
            0xFF
        } else {
            0
        }
    }))
}

/// Whether one of the eight bytes of `w` is `+` or `#` (SWAR).
#[inline(always)]
const fn wildcard_in_word(w: u64) -> bool {
    zero_bytes((w & (LO * WILDCARD_MASK as u64)) ^ (LO * WILDCARD_BITS as u64)) != 0
}

/// The first `N` bytes of `s` (which has at least `N`), else zeros.
#[inline(always)]
fn head<const N: usize>(s: &[u8]) -> [u8; N] {
    s.first_chunk().copied().unwrap_or([0; N])
}

/// The last `N` bytes of `s` (which has at least `N`), else zeros.
#[inline(always)]
fn tail<const N: usize>(s: &[u8]) -> [u8; N] {
    s.last_chunk().copied().unwrap_or([0; N])
}

/// Whether `s` contains a wildcard character (`+` or `#`), which a Topic Name
/// (MQTT-3.3.2-2) and a Response Topic (MQTT-3.3.2-14) must not. The encoders
/// run it on every PUBLISH, so it avoids a byte loop at every length: up to
/// 64 bytes, two or four overlapping reads cover the string (sixteen, eight
/// or four bytes each; three probes below four bytes), longer strings go
/// sixteen bytes a step.
#[inline(always)]
pub(crate) fn has_wildcard(s: &str) -> bool {
    let s = s.as_bytes();
    let len = s.len();
    if len > 64 {
        has_wildcard_long(s)
    } else if len > 32 {
        // [0, 32) and [len - 32, len).
        let (first, last) = (
            s.get(16..).unwrap_or_default(),
            s.get(..len - 16).unwrap_or_default(),
        );
        (wildcards_16(head(s))
            | wildcards_16(head(first))
            | wildcards_16(tail(last))
            | wildcards_16(tail(s)))
            != 0
    } else if len >= 16 {
        (wildcards_16(head(s)) | wildcards_16(tail(s))) != 0
    } else if len >= 8 {
        wildcard_in_word(u64::from_le_bytes(head(s)))
            | wildcard_in_word(u64::from_le_bytes(tail(s)))
    } else if len >= 4 {
        let first = u64::from(u32::from_le_bytes(head(s)));
        let last = u64::from(u32::from_le_bytes(tail(s)));
        wildcard_in_word(first | (last << 32))
    } else {
        // Zero to three bytes: the first, the middle and the last cover them all.
        let is_wild = |i: usize| {
            s.get(i)
                .is_some_and(|&b| b & WILDCARD_MASK == WILDCARD_BITS)
        };
        len > 0 && (is_wild(0) | is_wild(len / 2) | is_wild(len - 1))
    }
}

/// [`has_wildcard`] of more than 64 bytes: sixteen bytes a step, the last
/// step overlapping the one before.
#[inline(never)]
fn has_wildcard_long(s: &[u8]) -> bool {
    let mut chunks = s.chunks_exact(16);
    let mut found = 0;
    for chunk in &mut chunks {
        found |= wildcards_16(head(chunk));
    }
    if !chunks.remainder().is_empty() {
        found |= wildcards_16(tail(s));
    }
    found != 0
}

fn check(s: &str) -> Result<(), StringError> {
    if s.len() > MAX_STRING_LEN {
        return Err(StringError::TooLong(s.len()));
    }
    if scan(s.as_bytes()).nul {
        return Err(StringError::NullCharacter);
    }
    Ok(())
}

impl TryFrom<Bytes> for MqttString {
    type Error = StringError;

    /// Validates `bytes` (UTF-8, no U+0000, length) without copying them.
    fn try_from(bytes: Bytes) -> Result<Self, Self::Error> {
        let found = scan(&bytes);
        Self::from_scanned(bytes, found)
    }
}

impl From<&'static str> for MqttString {
    /// Wraps a static string without copying.
    ///
    /// # Panics
    /// If `s` contains U+0000 or is longer than 65 535 bytes; use
    /// [`MqttString::try_from_static`] for text that is not a literal.
    fn from(s: &'static str) -> Self {
        match Self::try_from_static(s) {
            Ok(s) => s,
            Err(e) => panic!("invalid MQTT string literal: {e}"),
        }
    }
}

impl From<String> for MqttString {
    /// Wraps an owned string without copying.
    ///
    /// # Panics
    /// If `s` contains U+0000 or is longer than 65 535 bytes; use
    /// [`MqttString::try_from_string`] for untrusted text.
    fn from(s: String) -> Self {
        match Self::try_from_string(s) {
            Ok(s) => s,
            Err(e) => panic!("invalid MQTT string: {e}"),
        }
    }
}

impl From<MqttString> for Bytes {
    fn from(s: MqttString) -> Self {
        s.into_bytes()
    }
}

impl Deref for MqttString {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for MqttString {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<[u8]> for MqttString {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl Borrow<str> for MqttString {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for MqttString {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for MqttString {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<MqttString> for str {
    fn eq(&self, other: &MqttString) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<MqttString> for &str {
    fn eq(&self, other: &MqttString) -> bool {
        *self == other.as_str()
    }
}

impl core::hash::Hash for MqttString {
    /// Hashes like `str`, as `Borrow<str>` requires.
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Display for MqttString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for MqttString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for MqttString {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for MqttString {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(deserializer)?;
        Self::try_from_string(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_strings() {
        let s = MqttString::try_from(Bytes::from_static("héllo".as_bytes())).unwrap();
        assert_eq!(s, "héllo");
        assert_eq!(s.len(), 6);
        assert_eq!(s.wire_len(), 8);
        assert_eq!(s.to_string(), "héllo");
        assert_eq!(format!("{s:?}"), "\"héllo\"");
        assert_eq!(
            s.clone().into_bytes(),
            Bytes::from_static("héllo".as_bytes())
        );
        assert!(MqttString::new().is_empty());
    }

    #[test]
    fn strip_prefix_shares_the_bytes() {
        let s = MqttString::try_from(Bytes::from_static("t/héllo".as_bytes())).unwrap();
        let rest = s.strip_prefix("t/").unwrap();
        assert_eq!(rest, "héllo");
        assert_eq!(rest.as_bytes().as_ptr(), s.as_bytes()[2..].as_ptr());
        assert!(s.strip_prefix("t/h\u{e9}llo").unwrap().is_empty());
        assert!(s.strip_prefix("x").is_none());
        assert_eq!(s.strip_prefix("").unwrap(), s);
    }

    #[test]
    fn rejects_ill_formed_utf8() {
        // MQTT-1.5.4-1 v3:MQTT-1.5.3-1: encoded surrogate U+D800 and a lone continuation byte
        assert_eq!(
            MqttString::try_from(Bytes::from_static(&[0xED, 0xA0, 0x80])),
            Err(StringError::InvalidUtf8)
        );
        assert_eq!(
            MqttString::try_from(Bytes::from_static(&[b'a', 0x80])),
            Err(StringError::InvalidUtf8)
        );
        // overlong encoding of '/'
        assert_eq!(
            MqttString::try_from(Bytes::from_static(&[0xC0, 0xAF])),
            Err(StringError::InvalidUtf8)
        );
    }

    #[test]
    fn rejects_null_character() {
        // MQTT-1.5.4-2 v3:MQTT-1.5.3-2
        assert_eq!(
            MqttString::try_from(Bytes::from_static(b"a\0")),
            Err(StringError::NullCharacter)
        );
        assert_eq!(MqttString::try_new("\0"), Err(StringError::NullCharacter));
        assert!(std::panic::catch_unwind(|| MqttString::from("x\0y")).is_err());
    }

    #[test]
    fn keeps_byte_order_mark() {
        // MQTT-1.5.4-3 v3:MQTT-1.5.3-3
        let s = MqttString::try_from(Bytes::from_static(&[0xEF, 0xBB, 0xBF, b'a'])).unwrap();
        assert_eq!(s.as_str(), "\u{FEFF}a");
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn length_limit() {
        // v5:MQTT-4.7.3-3 v3:MQTT-4.7.3-3
        let long = "a".repeat(MAX_STRING_LEN + 1);
        assert_eq!(
            MqttString::try_new(&long),
            Err(StringError::TooLong(MAX_STRING_LEN + 1))
        );
        assert!(MqttString::try_new(&long[..MAX_STRING_LEN]).is_ok());
        assert!(MqttString::try_from(Bytes::from(long.into_bytes())).is_err());
    }

    #[test]
    fn hashes_like_str() {
        let mut map = std::collections::HashMap::new();
        map.insert(MqttString::from("a/b"), 1);
        assert_eq!(map.get("a/b"), Some(&1));
    }

    #[test]
    fn scan_finds_nul_and_wildcards_at_every_position() {
        // MQTT-1.5.4-2 v3:MQTT-1.5.3-2 MQTT-3.3.2-2
        for len in 0..40 {
            let clean = vec![b'a'; len];
            assert_eq!(scan(&clean), Scan::default());
            for at in 0..len {
                for (byte, nul, wildcard) in
                    [(0, true, false), (b'+', false, true), (b'#', false, true)]
                {
                    let mut v = clean.clone();
                    v[at] = byte;
                    assert_eq!(scan(&v), Scan { nul, wildcard }, "{len} {at} {byte}");
                }
                // Bytes next to the searched ones, and non-ASCII, are not matches.
                let mut v = clean.clone();
                v[at] = 0x80 | b'+';
                if at + 1 < len {
                    v[at + 1] = 1;
                }
                assert_eq!(scan(&v), Scan::default(), "{len} {at}");
            }
        }
    }

    #[test]
    fn has_wildcard_finds_both_at_every_position() {
        // MQTT-3.3.2-2 v5:MQTT-3.3.2-14: every length through the three code
        // paths (probes, overlapping words, sixteen-byte steps), every position.
        for len in 0..70 {
            let clean = "a".repeat(len);
            assert!(!has_wildcard(&clean), "{len}");
            for at in 0..len {
                for wild in ['+', '#'] {
                    let mut v = clean.clone();
                    v.replace_range(at..=at, wild.encode_utf8(&mut [0; 4]));
                    assert!(has_wildcard(&v), "{len} {at} {wild}");
                }
                // Neighbours of the two (bit 3 or another bit flipped) are not wildcards.
                for near in ['\'', '*', '\u{3}', 'c', 'k', '/'] {
                    let mut v = clean.clone();
                    v.replace_range(at..=at, near.encode_utf8(&mut [0; 4]));
                    assert!(!has_wildcard(&v), "{len} {at} {near:?}");
                }
            }
        }
        // Multi-byte characters contain no 0x23 or 0x2B byte.
        assert!(!has_wildcard("é€\u{2A6D4}é€\u{2A6D4}é€"));
    }

    #[test]
    fn zero_copy_from_bytes() {
        let buf = Bytes::from_static(b"topic/a");
        let s = MqttString::try_from(buf.clone()).unwrap();
        assert_eq!(s.as_bytes().as_ptr(), buf.as_ptr());
    }
}
