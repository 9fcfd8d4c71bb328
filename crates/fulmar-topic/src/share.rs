//! Shared subscriptions: `$share/{ShareName}/{filter}` (MQTT 5.0 section 4.8.2).

use core::fmt;
use core::str::FromStr;

use bytestring::ByteString;

use crate::{TopicError, TopicFilter};

/// The prefix that marks a shared subscription filter.
const SHARE_PREFIX: &str = "$share/";

/// A shared subscription filter `$share/{ShareName}/{filter}`, parsed into its group and filter.
///
/// Rules (MQTT-4.8.2-1, MQTT-4.8.2-2): the filter starts with `$share/`, the ShareName is at
/// least one character and contains no `/`, `+` or `#`, and it is followed by `/` and a valid
/// [`TopicFilter`]. Only the filter takes part in matching.
///
/// ```
/// use fulmar_topic::{SharedFilter, TopicError};
///
/// let shared: SharedFilter = "$share/consumers/sport/tennis/+".parse()?;
/// assert_eq!(shared.group(), "consumers");
/// assert_eq!(shared.filter().as_str(), "sport/tennis/+");
/// assert_eq!("$share//x".parse::<SharedFilter>(), Err(TopicError::EmptyShareName));
/// # Ok::<(), TopicError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SharedFilter {
    group: ByteString,
    filter: TopicFilter,
}

impl SharedFilter {
    /// Builds a shared filter from a ShareName and a filter.
    ///
    /// # Errors
    /// [`TopicError::EmptyShareName`] or [`TopicError::InvalidShareName`] when `group` breaks the
    /// ShareName rules; [`TopicError::TooLong`] when `$share/{group}/{filter}` is over 65 535
    /// bytes (it could not travel in a SUBSCRIBE, nor be parsed back).
    pub fn new(group: &str, filter: TopicFilter) -> Result<Self, TopicError> {
        check_share_name(group)?;
        let len = "$share/".len() + group.len() + 1 + filter.as_str().len();
        if len > crate::validate::MAX_LEN {
            return Err(TopicError::TooLong { len });
        }
        Ok(Self {
            group: ByteString::from(group),
            filter,
        })
    }

    /// The ShareName: the group of sessions sharing the subscription.
    #[must_use]
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The topic filter that is matched against topic names.
    #[must_use]
    pub fn filter(&self) -> &TopicFilter {
        &self.filter
    }
}

fn check_share_name(group: &str) -> Result<(), TopicError> {
    if group.is_empty() {
        return Err(TopicError::EmptyShareName);
    }
    if group.bytes().any(|b| matches!(b, b'/' | b'+' | b'#')) {
        return Err(TopicError::InvalidShareName);
    }
    if group.as_bytes().contains(&0) {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

impl FromStr for SharedFilter {
    type Err = TopicError;

    fn from_str(s: &str) -> Result<Self, TopicError> {
        crate::validate::check_common(s)?;
        let rest = s
            .strip_prefix(SHARE_PREFIX)
            .ok_or(TopicError::EmptyShareName)?;
        let (group, filter) = rest.split_once('/').ok_or(if rest.is_empty() {
            TopicError::EmptyShareName
        } else if rest.bytes().any(|b| b == b'+' || b == b'#') {
            TopicError::InvalidShareName
        } else {
            TopicError::MissingSharedFilter
        })?;
        check_share_name(group)?;
        if filter.is_empty() {
            return Err(TopicError::MissingSharedFilter);
        }
        Ok(Self {
            group: ByteString::from(group),
            filter: filter.parse()?,
        })
    }
}

impl fmt::Display for SharedFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SHARE_PREFIX}{}/{}", self.group(), self.filter)
    }
}

impl fmt::Debug for SharedFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedFilter")
            .field("group", &self.group())
            .field("filter", &self.filter.as_str())
            .finish()
    }
}

/// The topic filter of a SUBSCRIBE or UNSUBSCRIBE entry: plain, or shared (MQTT 5.0).
///
/// Parsing applies the MQTT 5.0 rules: a filter starting with `$share/` is a shared
/// subscription and must obey the ShareName rules. MQTT 3.1.1 has no shared subscriptions
/// but leaves `$` topics to the server: one that keeps `$share/` plain there parses a
/// [`TopicFilter`] instead (fulmar's broker shares them in both versions, as mosquitto does).
///
/// ```
/// use fulmar_topic::{SubscriptionFilter, TopicError};
///
/// let plain: SubscriptionFilter = "a/+".parse()?;
/// assert!(matches!(plain, SubscriptionFilter::Plain(_)));
/// let shared: SubscriptionFilter = "$share/g/a/+".parse()?;
/// assert_eq!(shared.filter().as_str(), "a/+");
/// assert_eq!("$share/g+/a".parse::<SubscriptionFilter>(), Err(TopicError::InvalidShareName));
/// # Ok::<(), TopicError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum SubscriptionFilter {
    /// A non-shared subscription.
    Plain(TopicFilter),
    /// A shared subscription `$share/{ShareName}/{filter}`.
    Shared(SharedFilter),
}

impl SubscriptionFilter {
    /// The topic filter that is matched against topic names.
    #[must_use]
    pub fn filter(&self) -> &TopicFilter {
        match self {
            Self::Plain(f) => f,
            Self::Shared(s) => s.filter(),
        }
    }

    /// The ShareName, for a shared subscription.
    #[must_use]
    pub fn group(&self) -> Option<&str> {
        match self {
            Self::Plain(_) => None,
            Self::Shared(s) => Some(s.group()),
        }
    }
}

impl FromStr for SubscriptionFilter {
    type Err = TopicError;

    fn from_str(s: &str) -> Result<Self, TopicError> {
        if s.starts_with(SHARE_PREFIX) {
            s.parse().map(Self::Shared)
        } else {
            s.parse().map(Self::Plain)
        }
    }
}

impl From<TopicFilter> for SubscriptionFilter {
    fn from(f: TopicFilter) -> Self {
        Self::Plain(f)
    }
}

impl From<SharedFilter> for SubscriptionFilter {
    fn from(f: SharedFilter) -> Self {
        Self::Shared(f)
    }
}

impl fmt::Display for SubscriptionFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plain(p) => p.fmt(f),
            Self::Shared(s) => s.fmt(f),
        }
    }
}
