//! [`TopicRule`]: which topics a bridge forwards, which way, at what QoS,
//! and how their names change on the way (mosquitto's `topic` line).

use fulmar_codec::QoS;
use fulmar_topic::{TopicFilter, TopicName};

/// Which way a [`TopicRule`] forwards messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the remote broker to this one: the bridge subscribes there.
    In,
    /// From this broker to the remote one: what clients publish here is
    /// published there.
    Out,
    /// Both ways.
    Both,
}

impl Direction {
    /// Whether messages go from the remote broker to this one.
    #[must_use]
    pub fn is_in(self) -> bool {
        matches!(self, Self::In | Self::Both)
    }

    /// Whether messages go from this broker to the remote one.
    #[must_use]
    pub fn is_out(self) -> bool {
        matches!(self, Self::Out | Self::Both)
    }
}

impl std::str::FromStr for Direction {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "in" => Ok(Self::In),
            "out" => Ok(Self::Out),
            "both" => Ok(Self::Both),
            other => Err(RuleError::Direction(other.to_owned())),
        }
    }
}

/// A rule that a [`TopicRule`] breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// The pattern, or a prefix followed by it, is not a topic filter.
    #[error("topic pattern {0:?}: {1}")]
    Pattern(String, fulmar_topic::TopicError),
    /// A prefix holds a wildcard or U+0000.
    #[error("prefix {0:?}: a prefix is plain topic text, without + # or U+0000")]
    Prefix(String),
    /// An empty pattern maps one topic to another: both prefixes must be
    /// topic names then.
    #[error(
        "an empty pattern maps the local prefix to the remote prefix: both must be topic names"
    )]
    EmptyPattern,
    /// Not `in`, `out` or `both`.
    #[error("direction {0:?}: in, out or both")]
    Direction(String),
}

/// One `topic` line of a bridge, as mosquitto has it: `pattern`, a
/// direction, a QoS, and a prefix on each side.
///
/// A message matches when its topic is the side's prefix followed by a
/// topic that `pattern` matches; it leaves with the other side's prefix in
/// place of this side's. The remote broker is subscribed to the remote
/// prefix followed by the pattern. An empty pattern maps exactly one topic,
/// the local prefix to the remote prefix ([`with_prefixes`](Self::with_prefixes)).
/// A message goes at the lower of its own QoS and the rule's.
///
/// # Example
///
/// ```
/// use fulmar_bridge::{Direction, TopicRule};
/// use fulmar_codec::QoS;
///
/// let rule = TopicRule::new("sensors/#", Direction::Out)?
///     .qos(QoS::AtLeastOnce)
///     .prefixes("", "site-7/")?;
/// assert_eq!(rule.remote_filter(), "site-7/sensors/#");
/// let topic = "sensors/kitchen/temp".parse()?;
/// assert_eq!(rule.to_remote(&topic).as_deref(), Some("site-7/sensors/kitchen/temp"));
/// assert_eq!(rule.to_remote(&"other/x".parse()?), None);
/// assert_eq!(rule.to_local(&"site-7/sensors/hall".parse()?).as_deref(), Some("sensors/hall"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicRule {
    pattern: String,
    direction: Direction,
    qos: QoS,
    local_prefix: String,
    remote_prefix: String,
    /// The local prefix followed by the pattern.
    local_filter: TopicFilter,
    /// The remote prefix followed by the pattern.
    remote_filter: TopicFilter,
}

impl TopicRule {
    /// A rule for `pattern` (a topic filter) in `direction`, at QoS 0 and
    /// without prefixes (mosquitto's defaults).
    ///
    /// # Errors
    /// [`RuleError::Pattern`] when `pattern` is not a topic filter,
    /// [`RuleError::EmptyPattern`] when it is empty (see
    /// [`with_prefixes`](Self::with_prefixes)).
    pub fn new(pattern: &str, direction: Direction) -> Result<Self, RuleError> {
        Self::build(pattern, direction, QoS::AtMostOnce, "", "")
    }

    /// A rule for `pattern` in `direction` with its prefixes, at QoS 0: as
    /// [`new`](Self::new) then [`prefixes`](Self::prefixes), and the way to
    /// an empty pattern, which maps the topic `local` to the topic `remote`.
    ///
    /// ```
    /// use fulmar_bridge::{Direction, TopicRule};
    ///
    /// let rule = TopicRule::with_prefixes("", Direction::Out, "alarm", "site-7/alarm")?;
    /// assert_eq!(rule.to_remote(&"alarm".parse()?).as_deref(), Some("site-7/alarm"));
    /// assert_eq!(rule.to_remote(&"alarm/x".parse()?), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`new`](Self::new) and [`prefixes`](Self::prefixes).
    pub fn with_prefixes(
        pattern: &str,
        direction: Direction,
        local: &str,
        remote: &str,
    ) -> Result<Self, RuleError> {
        Self::build(pattern, direction, QoS::AtMostOnce, local, remote)
    }

    /// The highest QoS forwarded, and the QoS of the remote subscription.
    #[must_use]
    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    /// The prefixes in front of the pattern on this broker (`local`) and on
    /// the remote one (`remote`); empty for none.
    ///
    /// # Errors
    /// [`RuleError::Prefix`] for a prefix with a wildcard or U+0000,
    /// [`RuleError::Pattern`] when a prefix followed by the pattern is not
    /// a topic filter, [`RuleError::EmptyPattern`] when the pattern is empty
    /// and a prefix is not a topic name.
    pub fn prefixes(self, local: &str, remote: &str) -> Result<Self, RuleError> {
        Self::build(&self.pattern, self.direction, self.qos, local, remote)
    }

    fn build(
        pattern: &str,
        direction: Direction,
        qos: QoS,
        local: &str,
        remote: &str,
    ) -> Result<Self, RuleError> {
        for prefix in [local, remote] {
            if prefix.contains(['+', '#', '\0']) {
                return Err(RuleError::Prefix(prefix.to_owned()));
            }
        }
        if pattern.is_empty()
            && (local.parse::<TopicName>().is_err() || remote.parse::<TopicName>().is_err())
        {
            return Err(RuleError::EmptyPattern);
        }
        let filter = |prefix: &str| {
            let text = format!("{prefix}{pattern}");
            text.parse::<TopicFilter>()
                .map_err(|e| RuleError::Pattern(text, e))
        };
        Ok(Self {
            local_filter: filter(local)?,
            remote_filter: filter(remote)?,
            pattern: pattern.to_owned(),
            direction,
            qos,
            local_prefix: local.to_owned(),
            remote_prefix: remote.to_owned(),
        })
    }

    /// The pattern, without prefixes.
    #[must_use]
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Which way the rule forwards.
    #[must_use]
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The rule's QoS (see [`qos`](Self::qos)).
    #[must_use]
    pub fn max_qos(&self) -> QoS {
        self.qos
    }

    /// The filter the remote broker is subscribed to: the remote prefix
    /// followed by the pattern.
    #[must_use]
    pub fn remote_filter(&self) -> &str {
        self.remote_filter.as_str()
    }

    /// The remote topic of a local one that the rule matches, `None` when
    /// it does not match (whatever the direction).
    #[must_use]
    pub fn to_remote(&self, local: &TopicName) -> Option<String> {
        if !self.local_filter.matches(local) {
            return None;
        }
        map(local.as_str(), &self.local_prefix, &self.remote_prefix)
    }

    /// The filter of the topics the rule carries on this broker: the local
    /// prefix followed by the pattern.
    #[must_use]
    pub fn local_filter(&self) -> &str {
        self.local_filter.as_str()
    }

    /// The local topic of a remote one that the rule matches, `None` when
    /// it does not match (whatever the direction).
    #[must_use]
    pub fn to_local(&self, remote: &TopicName) -> Option<String> {
        if !self.remote_filter.matches(remote) {
            return None;
        }
        map(remote.as_str(), &self.remote_prefix, &self.local_prefix)
    }
}

/// `topic` with `from` in front replaced by `to`; `None` when `topic` does
/// not start with `from` or nothing but the prefix would be left of a
/// non-empty pattern's part (a filter `a/#` also matches `a`).
fn map(topic: &str, from: &str, to: &str) -> Option<String> {
    let rest = topic.strip_prefix(from)?;
    if rest.is_empty() && topic != from {
        return None;
    }
    let mapped = format!("{to}{rest}");
    (!mapped.is_empty()).then_some(mapped)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn name(s: &str) -> TopicName {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_are_swapped() {
        let rule = TopicRule::new("#", Direction::Both)
            .unwrap()
            .prefixes("local/", "remote/a/")
            .unwrap();
        assert_eq!(rule.remote_filter(), "remote/a/#");
        assert_eq!(
            rule.to_remote(&name("local/x/y")).as_deref(),
            Some("remote/a/x/y")
        );
        assert_eq!(rule.to_remote(&name("elsewhere/x")), None);
        // `local/#` matches `local` (MQTT-4.7.1-2), but there is nothing to map.
        assert_eq!(rule.to_remote(&name("local")), None);
        assert_eq!(
            rule.to_local(&name("remote/a/z")).as_deref(),
            Some("local/z")
        );
        assert_eq!(rule.to_local(&name("remote/b/z")), None);
    }

    #[test]
    fn an_empty_pattern_maps_one_topic() {
        let rule = TopicRule::new("", Direction::Out).unwrap_err().to_string();
        assert!(rule.contains("empty pattern"), "{rule}");
        let rule = TopicRule::build("", Direction::Out, QoS::AtMostOnce, "a/b", "c").unwrap();
        assert_eq!(rule.remote_filter(), "c");
        assert_eq!(rule.to_remote(&name("a/b")).as_deref(), Some("c"));
        assert_eq!(rule.to_remote(&name("a/b/c")), None);
        assert_eq!(rule.to_local(&name("c")).as_deref(), Some("a/b"));
    }

    // MQTT-4.7.1-1 (wildcards in filters only), MQTT-4.7.2-1 ($ topics and
    // leading wildcards).
    #[test]
    fn bad_patterns_and_prefixes_are_refused() {
        assert!(matches!(
            TopicRule::new("a/#/b", Direction::In),
            Err(RuleError::Pattern(..))
        ));
        assert!(matches!(
            TopicRule::new("#", Direction::In)
                .unwrap()
                .prefixes("a/+/", ""),
            Err(RuleError::Prefix(_))
        ));
        assert!(matches!(
            TopicRule::new("a", Direction::In)
                .unwrap()
                .prefixes("", "x#"),
            Err(RuleError::Prefix(_))
        ));
        assert_eq!("both".parse::<Direction>(), Ok(Direction::Both));
        assert!("sideways".parse::<Direction>().is_err());
        // A pattern starting with a wildcard does not match $ topics.
        let rule = TopicRule::new("#", Direction::Out).unwrap();
        assert_eq!(rule.to_remote(&name("$SYS/x")), None);
        let rule = TopicRule::new("$SYS/#", Direction::Out).unwrap();
        assert_eq!(rule.to_remote(&name("$SYS/x")).as_deref(), Some("$SYS/x"));
    }
}
