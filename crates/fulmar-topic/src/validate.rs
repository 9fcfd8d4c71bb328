//! Validation rules shared by names, filters and share names.

use crate::TopicError;

/// The longest topic the two-byte length prefix can describe (MQTT-4.7.3-3).
pub(crate) const MAX_LEN: usize = 65_535;

/// Non-empty, at most [`MAX_LEN`] bytes, no U+0000. `s` is already UTF-8.
pub(crate) fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_LEN {
        return Err(TopicError::TooLong { len: s.len() });
    }
    if s.as_bytes().contains(&0) {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

/// The rules for a topic name: common rules and no wildcard character.
pub(crate) fn check_name(s: &str) -> Result<(), TopicError> {
    check_common(s)?;
    if s.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// The rules for a topic filter: common rules, `+` and `#` as whole levels, `#` last.
pub(crate) fn check_filter(s: &str) -> Result<(), TopicError> {
    check_common(s)?;
    let mut levels = s.as_bytes().split(|b| *b == b'/').peekable();
    while let Some(level) = levels.next() {
        if level.contains(&b'#') && (level != b"#" || levels.peek().is_some()) {
            return Err(TopicError::MisplacedMultiLevelWildcard);
        }
        if level.contains(&b'+') && level != b"+" {
            return Err(TopicError::MisplacedSingleLevelWildcard);
        }
    }
    Ok(())
}

/// Splits a topic into its levels (byte slices; `/` is ASCII so each level is UTF-8 too).
#[inline]
pub(crate) fn levels(s: &str) -> impl Iterator<Item = &[u8]> {
    s.as_bytes().split(|b| *b == b'/')
}
