//! [`TopicName`]: the validated topic of a PUBLISH packet.

use core::fmt;
use core::str::FromStr;

use bytes::Bytes;
use bytestring::ByteString;

use crate::TopicError;
use crate::validate::check_name;

/// A validated MQTT topic name: the topic a message is published to.
///
/// Invariants, checked by every constructor (MQTT 5.0 section 4.7, MQTT 3.1.1 section 4.7):
/// - at least one byte long, at most 65 535 bytes (MQTT-4.7.3-1, MQTT-4.7.3-3),
/// - well-formed UTF-8 without U+0000 (MQTT-4.7.3-2),
/// - no wildcard character `+` or `#` (MQTT-3.3.2-2).
///
/// The text is held in a [`ByteString`] over [`Bytes`]: a name taken from a packet buffer is not
/// copied and cloning is a reference count increment. No normalisation is ever applied
/// (MQTT-4.7.3-4): two names are equal when their bytes are equal.
///
/// ```
/// use fulmar_topic::{TopicError, TopicName};
///
/// let name: TopicName = "sport/tennis/player1".parse()?;
/// assert_eq!(name.levels().count(), 3);
/// assert_eq!("sport/+".parse::<TopicName>(), Err(TopicError::WildcardInName));
/// # Ok::<(), TopicError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(ByteString);

impl TopicName {
    /// The longest topic name, in bytes.
    pub const MAX_LEN: usize = crate::validate::MAX_LEN;

    /// Validates `bytes` (UTF-8 included) without copying them.
    ///
    /// # Errors
    /// The first rule that `bytes` breaks, see [`TopicError`].
    pub fn from_bytes(bytes: Bytes) -> Result<Self, TopicError> {
        let s = ByteString::try_from(bytes).map_err(|_| TopicError::InvalidUtf8)?;
        Self::try_from(s)
    }

    /// The name as text.
    #[inline]
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as UTF-8 bytes.
    #[inline]
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The underlying buffer, for zero-copy encoding.
    #[must_use]
    pub fn into_bytes(self) -> Bytes {
        self.0.into_bytes()
    }

    /// The levels of the name, split on `/`; `"a//b"` has three levels, the middle one empty.
    pub fn levels(&self) -> impl Iterator<Item = &str> {
        self.as_str().split('/')
    }

    /// Whether the name starts with `$` (such names are not matched by filters starting with a
    /// wildcard, MQTT-4.7.2-1).
    #[inline]
    #[must_use]
    pub fn is_dollar(&self) -> bool {
        self.as_bytes().first() == Some(&b'$')
    }
}

impl TryFrom<ByteString> for TopicName {
    type Error = TopicError;

    fn try_from(s: ByteString) -> Result<Self, TopicError> {
        check_name(&s)?;
        Ok(Self(s))
    }
}

impl TryFrom<&str> for TopicName {
    type Error = TopicError;

    fn try_from(s: &str) -> Result<Self, TopicError> {
        check_name(s)?;
        Ok(Self(ByteString::from(s)))
    }
}

impl TryFrom<String> for TopicName {
    type Error = TopicError;

    fn try_from(s: String) -> Result<Self, TopicError> {
        check_name(&s)?;
        Ok(Self(ByteString::from(s)))
    }
}

impl TryFrom<Bytes> for TopicName {
    type Error = TopicError;

    fn try_from(b: Bytes) -> Result<Self, TopicError> {
        Self::from_bytes(b)
    }
}

impl FromStr for TopicName {
    type Err = TopicError;

    fn from_str(s: &str) -> Result<Self, TopicError> {
        Self::try_from(s)
    }
}

impl From<TopicName> for ByteString {
    fn from(name: TopicName) -> Self {
        name.0
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for TopicName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for TopicName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TopicName").field(&self.as_str()).finish()
    }
}
