//! Mount points ([`Listener::mount_point`](crate::Listener::mount_point)):
//! the prefix a listener puts before the topics of its clients, and takes
//! off the topics of what it sends them, as mosquitto's `mount_point`. The
//! taking off is the session's
//! ([`Config::strip_topic_prefix`](fulmar_session::Config::strip_topic_prefix)):
//! it keeps the full topics, and sizes what it sends.
//!
//! The prefix is taken verbatim, as mosquitto concatenates it: `tenant1/`
//! and `a/b` make `tenant1/a/b`; `tenant1` and `a/b` make `tenant1a/b`.

use fulmar_codec::MqttString;

/// Why a prefix cannot be a mount point, if it cannot.
pub(crate) fn invalid(prefix: &str) -> Option<&'static str> {
    if prefix.is_empty() {
        Some("empty")
    } else if prefix.contains(['+', '#']) {
        Some("a wildcard ('+' or '#') cannot be part of a topic name")
    } else if prefix.contains('\0') {
        Some("U+0000 cannot be part of a topic name")
    } else if MqttString::try_new(prefix).is_err() {
        Some("longer than a topic name may be")
    } else {
        None
    }
}

/// `prefix` before `topic` (a topic name or filter); `None` if the result
/// is longer than an MQTT string may be.
fn prefixed(prefix: &str, topic: &str) -> Option<MqttString> {
    let mut full = String::with_capacity(prefix.len().saturating_add(topic.len()));
    full.push_str(prefix);
    full.push_str(topic);
    MqttString::try_from_string(full).ok()
}

/// The full topic name of a PUBLISH or will from a client of the mount
/// point; `None` if it is too long. An empty one (no topic name) stays empty.
pub(crate) fn topic(prefix: &str, topic: &MqttString) -> Option<MqttString> {
    if topic.is_empty() {
        return Some(MqttString::new());
    }
    prefixed(prefix, topic.as_str())
}

/// The full filter of a SUBSCRIBE or UNSUBSCRIBE filter from a client of the
/// mount point: `$share/{group}/{filter}` becomes
/// `$share/{group}/{prefix}{filter}`, any other `{prefix}{filter}`. A filter
/// too long with its prefix becomes the empty string, which no filter is
/// (the client is told its filter is invalid). What is invalid without the
/// prefix (an empty filter, `$share/{group}` without a filter) is left as
/// it is, invalid with it too.
pub(crate) fn filter(prefix: &str, raw: &MqttString) -> MqttString {
    if raw.is_empty() {
        return raw.clone();
    }
    let mounted = match raw.as_str().strip_prefix("$share/") {
        Some(rest) => match rest.split_once('/') {
            Some((group, filter)) if !filter.is_empty() => {
                let group = format!("$share/{group}/");
                prefixed(&group, &format!("{prefix}{filter}"))
            }
            _ => return raw.clone(),
        },
        None => prefixed(prefix, raw.as_str()),
    };
    mounted.unwrap_or_default()
}

/// Whether `topic` is the prefix itself: a client of the mount point could
/// only be sent it with an empty topic name, which is none. Not sent, as
/// mosquitto does not send it.
pub(crate) fn is_prefix_only(prefix: &str, topic: &str) -> bool {
    topic == prefix
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn s(s: &str) -> MqttString {
        MqttString::try_new(s).unwrap()
    }

    #[test]
    fn prefixes_are_validated() {
        assert_eq!(invalid("tenant1/"), None);
        assert_eq!(invalid("tenant1"), None);
        assert!(invalid("").is_some());
        assert!(invalid("a/+/").is_some());
        assert!(invalid("a/#").is_some());
        assert!(invalid("a\0").is_some());
        assert!(invalid(&"a".repeat(70_000)).is_some());
    }

    // (mount point, no spec statement)
    #[test]
    fn topics_and_filters_get_the_prefix() {
        assert_eq!(topic("tenant1/", &s("a/b")).unwrap(), s("tenant1/a/b"));
        assert_eq!(topic("tenant1", &s("a/b")).unwrap(), s("tenant1a/b"));
        assert_eq!(filter("t/", &s("a/#")), s("t/a/#"));
        assert_eq!(filter("t/", &s("#")), s("t/#"));
        assert_eq!(filter("t/", &s("$share/g/x/+")), s("$share/g/t/x/+"));
        // Invalid without the prefix, invalid with it.
        assert_eq!(filter("t/", &s("$share/g")), s("$share/g"));
        assert_eq!(filter("t/", &s("$share/g/")), s("$share/g/"));
        assert_eq!(filter("t/", &s("")), s(""));
        assert!(topic("t/", &s("")).unwrap().is_empty());
        assert_eq!(filter("t/", &s("$SYS/#")), s("t/$SYS/#"));
        let long = s(&"a".repeat(65_530));
        assert!(topic("tenant1/", &long).is_none());
        assert!(filter("tenant1/", &long).is_empty());
    }

    // (mount point, no spec statement)
    #[test]
    fn the_prefix_alone_is_not_sent() {
        assert!(is_prefix_only("t/", "t/"));
        assert!(!is_prefix_only("t/", "t/a"));
    }
}
