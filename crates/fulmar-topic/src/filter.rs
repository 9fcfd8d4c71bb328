//! [`TopicFilter`]: the validated filter of a subscription, and single-filter matching.

use core::fmt;
use core::str::FromStr;

use bytes::Bytes;
use bytestring::ByteString;

use crate::validate::{check_filter, levels};
use crate::{TopicError, TopicName};

/// A validated MQTT topic filter, as sent in SUBSCRIBE and UNSUBSCRIBE.
///
/// Invariants, checked by every constructor (MQTT 5.0 section 4.7, MQTT 3.1.1 section 4.7):
/// - at least one byte, at most 65 535 bytes, well-formed UTF-8 without U+0000,
/// - `+` only as a whole level, `#` only as a whole level and only as the last level.
///
/// A filter is not interpreted as a shared subscription here: `$share/g/a` is a valid filter
/// whose first level is `$share`. Use [`SubscriptionFilter`](crate::SubscriptionFilter) to tell
/// shared subscriptions apart.
///
/// ```
/// use fulmar_topic::{TopicError, TopicFilter, TopicName};
///
/// let filter: TopicFilter = "sport/+/player1/#".parse()?;
/// assert!(filter.matches(&"sport/tennis/player1".parse()?));
/// assert!(!filter.matches(&"sport/tennis/player2".parse()?));
/// assert_eq!("sport#".parse::<TopicFilter>(), Err(TopicError::MisplacedMultiLevelWildcard));
/// # Ok::<(), TopicError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(ByteString);

impl TopicFilter {
    /// The longest topic filter, in bytes.
    pub const MAX_LEN: usize = crate::validate::MAX_LEN;

    /// Validates `bytes` (UTF-8 included) without copying them.
    ///
    /// # Errors
    /// The first rule that `bytes` breaks, see [`TopicError`].
    pub fn from_bytes(bytes: Bytes) -> Result<Self, TopicError> {
        let s = ByteString::try_from(bytes).map_err(|_| TopicError::InvalidUtf8)?;
        Self::try_from(s)
    }

    /// The filter as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The filter as UTF-8 bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The underlying buffer, for zero-copy encoding.
    #[must_use]
    pub fn into_bytes(self) -> Bytes {
        self.0.into_bytes()
    }

    /// The levels of the filter, split on `/`.
    pub fn levels(&self) -> impl Iterator<Item = &str> {
        self.as_str().split('/')
    }

    /// Whether the filter contains `+` or `#`.
    #[must_use]
    pub fn has_wildcards(&self) -> bool {
        self.as_bytes().iter().any(|b| *b == b'+' || *b == b'#')
    }

    /// Whether some topic name matches both this filter and `other` (as
    /// [`matches`](Self::matches) tells it): level by level, `#` overlaps
    /// everything from there on, `+` any one level, other levels only
    /// themselves; a filter starting with a wildcard overlaps no filter
    /// whose first level starts with `$` (MQTT-4.7.2-1). A `#` that would
    /// only meet the other filter in the topic name "" (`/#` and `+`, whose
    /// one common match would be the single empty level) does not overlap:
    /// "" is not a topic name (MQTT-4.7.3-1).
    ///
    /// Filters are compared as they are written: a shared subscription's
    /// `$share/GROUP/...` is taken literally (its first level starts with
    /// `$`), not as the filter after the group; compare
    /// [`SubscriptionFilter::filter`](crate::SubscriptionFilter::filter)s
    /// for that.
    ///
    /// ```
    /// use fulmar_topic::TopicFilter;
    ///
    /// let f = |s: &str| s.parse::<TopicFilter>().unwrap();
    /// assert!(f("a/+/c").overlaps(&f("a/b/#")));
    /// assert!(f("a/#").overlaps(&f("a")));
    /// assert!(!f("a/+").overlaps(&f("a/b/c")));
    /// assert!(!f("#").overlaps(&f("$SYS/x")));
    /// ```
    #[must_use]
    pub fn overlaps(&self, other: &Self) -> bool {
        let dollar = |f: &Self| f.as_bytes().first() == Some(&b'$');
        let wild = |f: &Self| matches!(f.as_bytes().first(), Some(b'+' | b'#'));
        if (dollar(self) && wild(other)) || (dollar(other) && wild(self)) {
            return false;
        }
        let mut a = levels(self.as_str());
        let mut b = levels(other.as_str());
        // Whether the common topic so far is the one empty level: a `#`
        // that matches only its parent level then stands for "", which is
        // no topic name.
        let mut empty_so_far = None;
        loop {
            match (a.next(), b.next()) {
                (Some(b"#"), None) | (None, Some(b"#")) => return empty_so_far != Some(true),
                (Some(b"#"), _) | (_, Some(b"#")) | (None, None) => return true,
                (Some(x), Some(y)) if x == y || x == b"+" || y == b"+" => {
                    // The common level is the literal one (`+` and `+`: any).
                    let empty = x.is_empty() || y.is_empty();
                    empty_so_far = Some(empty_so_far.is_none() && empty);
                }
                _ => return false,
            }
        }
    }

    /// Whether `name` matches this filter (MQTT 5.0 section 4.7).
    ///
    /// Levels are compared byte for byte, without normalisation (MQTT-4.7.3-4); `+` matches
    /// exactly one level, `#` the parent level and any number of child levels, and a filter
    /// starting with a wildcard does not match a name starting with `$` (MQTT-4.7.2-1).
    /// This is a linear scan of one filter; use
    /// [`SubscriptionTrie`](crate::SubscriptionTrie) to match many.
    #[must_use]
    pub fn matches(&self, name: &TopicName) -> bool {
        let first = self.as_bytes().first();
        if name.is_dollar() && matches!(first, Some(b'+' | b'#')) {
            return false;
        }
        let mut filter = levels(self.as_str());
        let mut topic = levels(name.as_str());
        loop {
            match (filter.next(), topic.next()) {
                (Some(b"#"), _) => return true,
                (Some(b"+"), Some(_)) => {}
                (Some(f), Some(t)) if f == t => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

impl From<TopicName> for TopicFilter {
    /// Every topic name is a filter that matches only itself.
    fn from(name: TopicName) -> Self {
        Self(ByteString::from(name))
    }
}

impl TryFrom<ByteString> for TopicFilter {
    type Error = TopicError;

    fn try_from(s: ByteString) -> Result<Self, TopicError> {
        check_filter(&s)?;
        Ok(Self(s))
    }
}

impl TryFrom<&str> for TopicFilter {
    type Error = TopicError;

    fn try_from(s: &str) -> Result<Self, TopicError> {
        check_filter(s)?;
        Ok(Self(ByteString::from(s)))
    }
}

impl TryFrom<String> for TopicFilter {
    type Error = TopicError;

    fn try_from(s: String) -> Result<Self, TopicError> {
        check_filter(&s)?;
        Ok(Self(ByteString::from(s)))
    }
}

impl TryFrom<Bytes> for TopicFilter {
    type Error = TopicError;

    fn try_from(b: Bytes) -> Result<Self, TopicError> {
        Self::from_bytes(b)
    }
}

impl FromStr for TopicFilter {
    type Err = TopicError;

    fn from_str(s: &str) -> Result<Self, TopicError> {
        Self::try_from(s)
    }
}

impl From<TopicFilter> for ByteString {
    fn from(filter: TopicFilter) -> Self {
        filter.0
    }
}

impl AsRef<str> for TopicFilter {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for TopicFilter {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for TopicFilter {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TopicFilter").field(&self.as_str()).finish()
    }
}
