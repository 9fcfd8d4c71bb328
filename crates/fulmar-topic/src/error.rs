//! Parse errors for topic names, topic filters and shared subscription filters.

/// Why a topic name, topic filter or shared subscription filter was refused.
///
/// Messages quote the MQTT 5.0 statement ids; the MQTT 3.1.1 equivalents are given in each
/// variant's documentation where the numbering differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The topic is zero bytes long (MQTT-4.7.3-1 in both versions).
    #[error("[MQTT-4.7.3-1] topic is empty")]
    Empty,
    /// The topic is longer than 65 535 bytes (MQTT-4.7.3-3 in both versions).
    #[error("[MQTT-4.7.3-3] topic is {len} bytes long, the maximum is 65535")]
    TooLong {
        /// Length of the refused topic in bytes.
        len: usize,
    },
    /// The bytes are not well-formed UTF-8 (MQTT-1.5.4-1 in 5.0, MQTT-1.5.3-1 in 3.1.1).
    #[error("[MQTT-1.5.4-1] topic is not well-formed UTF-8")]
    InvalidUtf8,
    /// The topic contains U+0000 (MQTT-4.7.3-2 in both versions).
    #[error("[MQTT-4.7.3-2] topic contains the null character U+0000")]
    NullCharacter,
    /// A topic name contains `+` or `#` (MQTT-3.3.2-2; MQTT-4.7.0-1 in 5.0, MQTT-4.7.1-1 in 3.1.1).
    #[error("[MQTT-3.3.2-2] topic name contains a wildcard")]
    WildcardInName,
    /// `#` is not alone in its level or not the last level of a filter
    /// (MQTT-4.7.1-1 in 5.0, MQTT-4.7.1-2 in 3.1.1).
    #[error("[MQTT-4.7.1-1] '#' must occupy a whole level and be the last level of the filter")]
    MisplacedMultiLevelWildcard,
    /// `+` shares its level with other characters (MQTT-4.7.1-2 in 5.0, MQTT-4.7.1-3 in 3.1.1).
    #[error("[MQTT-4.7.1-2] '+' must occupy a whole level of the filter")]
    MisplacedSingleLevelWildcard,
    /// A shared subscription filter does not start with `$share/`, or its ShareName is empty.
    #[error("[MQTT-4.8.2-1] shared subscription filter needs '$share/' and a non-empty ShareName")]
    EmptyShareName,
    /// The ShareName contains `+` or `#`.
    #[error("[MQTT-4.8.2-2] ShareName contains '+' or '#'")]
    InvalidShareName,
    /// The ShareName is not followed by `/` and a non-empty topic filter.
    #[error("[MQTT-4.8.2-2] ShareName must be followed by '/' and a topic filter")]
    MissingSharedFilter,
}
