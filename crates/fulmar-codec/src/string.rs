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

/// Whether `s` contains a wildcard character (`+` or `#`), which a Topic Name must not.
pub(crate) fn has_wildcard(s: &str) -> bool {
    // Branch-free so that the compiler vectorizes it.
    s.bytes()
        .fold(false, |found, b| found | (b == b'+') | (b == b'#'))
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
    fn zero_copy_from_bytes() {
        let buf = Bytes::from_static(b"topic/a");
        let s = MqttString::try_from(buf.clone()).unwrap();
        assert_eq!(s.as_bytes().as_ptr(), buf.as_ptr());
    }
}
