//! MQTT topic names and filters as NATS subjects, and back.
//!
//! A topic maps level for level onto the tokens of a subject under a root
//! (`/` becomes `.`), and a filter onto a subscription subject (`+` becomes
//! `*`, `#` becomes `>`):
//!
//! | MQTT              | NATS (root `fulmar.msg`)                   |
//! |-------------------|--------------------------------------------|
//! | `a/b`             | `fulmar.msg.t.a.b`                         |
//! | `a/+/c`           | `fulmar.msg.t.a.*.c`                       |
//! | `a/#`             | `fulmar.msg.t.a` and `fulmar.msg.t.a.>`    |
//! | `$SYS/x`          | `fulmar.msg.d.$SYS.x`                      |
//! | `a.b/ /` (3 levels)| `fulmar.msg.t.a%2Eb.%20.%`                |
//!
//! - **The `$` rule** (MQTT-4.7.2-1: a filter starting with a wildcard does
//!   not match a topic starting with `$`): topics whose first level starts
//!   with `$` live under the namespace token `d`, the others under `t`. A
//!   filter starting with a wildcard subscribes under `t` only, so NATS
//!   matching keeps the rule.
//! - **`#` matches its parent level** (`a/#` matches `a`): a filter ending
//!   in `#` maps to two subjects, the parent and the parent with `>`. The
//!   subjects of one filter never match the same subject, so a queue group
//!   subscribed on both still gets each message once.
//! - **Escaping**: a level is carried byte for byte, except the bytes a
//!   subject token cannot carry, written `%XY` (two upper-case hex digits):
//!   `.`, `*`, `>`, the escape character `%` itself, ASCII control
//!   characters and space (0x00..=0x20, 0x7F), and every byte of a non-ASCII
//!   character. An empty level is the token `%` alone. Decoding accepts only
//!   this canonical form, so the mapping is a bijection between topic names
//!   and the subjects it produces.

use fulmar_topic::{TopicFilter, TopicName};

/// The escape character of a subject token.
pub const ESCAPE: char = '%';

/// Namespace token of topics that do not start with `$`.
const PLAIN: &str = "t";
/// Namespace token of topics whose first level starts with `$`.
const DOLLAR: &str = "d";

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Whether `b` cannot appear as itself in a subject token.
fn needs_escape(b: u8) -> bool {
    matches!(b, b'.' | b'*' | b'>' | b'%') || b <= 0x20 || b >= 0x7f
}

/// Appends the subject token of one MQTT level to `out`.
///
/// ```
/// let mut token = String::new();
/// fulmar_cluster::subject::escape_level("a.b c%", &mut token);
/// assert_eq!(token, "a%2Eb%20c%25");
/// ```
pub fn escape_level(level: &str, out: &mut String) {
    if level.is_empty() {
        out.push(ESCAPE);
        return;
    }
    for &b in level.as_bytes() {
        if needs_escape(b) {
            out.push(ESCAPE);
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        } else {
            out.push(char::from(b));
        }
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The MQTT level of a subject token written by [`escape_level`]; `None`
/// when the token is not in that canonical form or not UTF-8 once decoded.
///
/// ```
/// use fulmar_cluster::subject::unescape_level;
/// assert_eq!(unescape_level("a%2Eb%20c%25").as_deref(), Some("a.b c%"));
/// assert_eq!(unescape_level("%").as_deref(), Some(""));
/// assert_eq!(unescape_level("a%2eb"), None, "lower-case hex is not canonical");
/// assert_eq!(unescape_level("%61"), None, "`a` needs no escape");
/// ```
#[must_use]
pub fn unescape_level(token: &str) -> Option<String> {
    if token.len() == 1 && token.starts_with(ESCAPE) {
        return Some(String::new());
    }
    if token.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(token.len());
    let mut bytes = token.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let high = hex_value(bytes.next()?)?;
            let low = hex_value(bytes.next()?)?;
            let value = (high << 4) | low;
            if !needs_escape(value) {
                return None;
            }
            out.push(value);
        } else if needs_escape(b) {
            return None;
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// The subjects of MQTT topics and filters under one root subject.
///
/// ```
/// use fulmar_cluster::subject::Subjects;
/// use fulmar_topic::{TopicFilter, TopicName};
///
/// let subjects = Subjects::new("fulmar.msg").unwrap();
/// let topic: TopicName = "sensors/kitchen.1/temp".parse().unwrap();
/// let subject = subjects.topic(&topic);
/// assert_eq!(subject, "fulmar.msg.t.sensors.kitchen%2E1.temp");
/// assert_eq!(subjects.parse_topic(&subject), Some(topic));
///
/// let filter: TopicFilter = "sensors/#".parse().unwrap();
/// assert_eq!(
///     subjects.filter(&filter),
///     ["fulmar.msg.t.sensors", "fulmar.msg.t.sensors.>"]
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subjects {
    /// The root followed by `.`.
    root: String,
}

/// A root subject with an empty token, a wildcard or a character that
/// needs escaping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid root subject {0:?}: tokens of letters, digits, `-`, `_` and `$` separated by `.`")]
pub struct InvalidRoot(pub String);

impl Subjects {
    /// Subjects under `root` (`"fulmar.msg"`): tokens of ASCII letters,
    /// digits, `-`, `_` and `$`, separated by `.`.
    ///
    /// # Errors
    /// [`InvalidRoot`].
    pub fn new(root: &str) -> Result<Self, InvalidRoot> {
        let valid = !root.is_empty()
            && root.split('.').all(|token| {
                !token.is_empty()
                    && token
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'$'))
            });
        if !valid {
            return Err(InvalidRoot(root.to_owned()));
        }
        Ok(Self {
            root: format!("{root}."),
        })
    }

    /// The root subject, without the trailing `.`.
    #[must_use]
    pub fn root(&self) -> &str {
        self.root.strip_suffix('.').unwrap_or(&self.root)
    }

    /// The subject of a topic name.
    #[must_use]
    pub fn topic(&self, topic: &TopicName) -> String {
        let mut out = String::with_capacity(self.root.len() + 2 + topic.as_str().len() + 8);
        out.push_str(&self.root);
        out.push_str(if topic.is_dollar() { DOLLAR } else { PLAIN });
        for level in topic.levels() {
            out.push('.');
            escape_level(level, &mut out);
        }
        out
    }

    /// The topic name a subject written by [`topic`](Self::topic) stands
    /// for; `None` for any other subject (another root, a namespace that
    /// does not fit the first level, a token not in canonical form, a topic
    /// name MQTT rejects).
    #[must_use]
    pub fn parse_topic(&self, subject: &str) -> Option<TopicName> {
        let rest = subject.strip_prefix(self.root.as_str())?;
        let (namespace, levels) = rest.split_once('.')?;
        let mut topic = String::with_capacity(levels.len());
        for (i, token) in levels.split('.').enumerate() {
            if i > 0 {
                topic.push('/');
            }
            topic.push_str(&unescape_level(token)?);
        }
        let dollar = topic.starts_with('$');
        let expected = if dollar { DOLLAR } else { PLAIN };
        if namespace != expected {
            return None;
        }
        topic.parse().ok()
    }

    /// The subscription subjects of a filter: one, or two for a filter
    /// ending in `#` after at least one level (the parent level and
    /// everything below it). No subject matches both.
    #[must_use]
    pub fn filter(&self, filter: &TopicFilter) -> Vec<String> {
        let first = filter.levels().next().unwrap_or_default();
        let namespace = if first.starts_with('$') {
            DOLLAR
        } else {
            PLAIN
        };
        let mut out = String::with_capacity(self.root.len() + 2 + filter.as_str().len() + 8);
        out.push_str(&self.root);
        out.push_str(namespace);
        let mut parent = None;
        for level in filter.levels() {
            match level {
                "#" => {
                    // `#` is last (MQTT-4.7.1-1). `a/#` also matches `a`.
                    if out.len() > self.root.len() + namespace.len() {
                        parent = Some(out.clone());
                    }
                    out.push_str(".>");
                }
                "+" => out.push_str(".*"),
                level => {
                    out.push('.');
                    escape_level(level, &mut out);
                }
            }
        }
        match parent {
            Some(parent) => vec![parent, out],
            None => vec![out],
        }
    }
}

/// Whether the NATS subscription subject `pattern` matches the subject
/// `subject` (`*` one token, `>` one or more trailing tokens).
///
/// ```
/// use fulmar_cluster::subject::nats_matches;
/// assert!(nats_matches("a.*.c", "a.b.c"));
/// assert!(nats_matches("a.>", "a.b.c"));
/// assert!(!nats_matches("a.>", "a"));
/// ```
#[must_use]
pub fn nats_matches(pattern: &str, subject: &str) -> bool {
    let mut pattern = pattern.split('.');
    let mut subject = subject.split('.');
    loop {
        match (pattern.next(), subject.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(p), Some(s)) if p == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subjects() -> Subjects {
        Subjects::new("fulmar.msg").unwrap()
    }

    #[test]
    fn escapes_what_a_token_cannot_carry() {
        let s = subjects();
        let cases = [
            ("a/b", "fulmar.msg.t.a.b"),
            ("a.b/c*d/>", "fulmar.msg.t.a%2Eb.c%2Ad.%3E"),
            ("/", "fulmar.msg.t.%.%"),
            ("a//b", "fulmar.msg.t.a.%.b"),
            ("with space\t", "fulmar.msg.t.with%20space%09"),
            ("100%", "fulmar.msg.t.100%25"),
            ("$SYS/x", "fulmar.msg.d.$SYS.x"),
            ("a$", "fulmar.msg.t.a$"),
            ("é", "fulmar.msg.t.%C3%A9"),
        ];
        for (topic, subject) in cases {
            let name: TopicName = topic.parse().unwrap();
            assert_eq!(s.topic(&name), subject, "{topic}");
            assert_eq!(s.parse_topic(subject), Some(name), "{subject}");
        }
    }

    #[test]
    fn filters() {
        let s = subjects();
        let f = |f: &str| s.filter(&f.parse().unwrap());
        assert_eq!(f("#"), ["fulmar.msg.t.>"]);
        assert_eq!(f("+"), ["fulmar.msg.t.*"]);
        assert_eq!(f("a/#"), ["fulmar.msg.t.a", "fulmar.msg.t.a.>"]);
        assert_eq!(f("+/#"), ["fulmar.msg.t.*", "fulmar.msg.t.*.>"]);
        assert_eq!(f("$SYS/#"), ["fulmar.msg.d.$SYS", "fulmar.msg.d.$SYS.>"]);
        assert_eq!(f("/+"), ["fulmar.msg.t.%.*"]);
    }

    #[test]
    fn rejects_foreign_and_non_canonical_subjects() {
        let s = subjects();
        for subject in [
            "other.t.a",
            "fulmar.msg",
            "fulmar.msg.t",
            "fulmar.msg.x.a",
            "fulmar.msg.d.a",
            "fulmar.msg.t.$a",
            "fulmar.msg.t.a..b",
            "fulmar.msg.t.a%2e",
            "fulmar.msg.t.%41",
            "fulmar.msg.t.%C3",
            "fulmar.msg.t.a%",
            "fulmar.msg.t.*",
            "fulmar.msg.t.+",
            "fulmar.msg.t.a%00",
        ] {
            assert_eq!(s.parse_topic(subject), None, "{subject}");
        }
    }

    #[test]
    fn roots() {
        assert!(Subjects::new("fulmar").is_ok());
        assert!(Subjects::new("a.b-c_d").is_ok());
        for bad in ["", "a..b", "a.*", "a b", ".a", "a.", "a.>"] {
            assert!(Subjects::new(bad).is_err(), "{bad}");
        }
        assert_eq!(Subjects::new("x.y").unwrap().root(), "x.y");
    }
}
