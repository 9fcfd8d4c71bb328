//! Access control lists in mosquitto's `acl_file` format, and the authorizer
//! using one.
//!
//! ```text
//! # rules before the first `user` line apply to anonymous clients
//! topic read public/#
//! user alice
//! topic readwrite alice/#
//! topic deny alice/secret
//! # patterns apply to every client; %c is the client id, %u the user name
//! pattern write devices/%c/status
//! ```
//!
//! Access is `read`, `write`, `readwrite` (the default) or `deny`. With an
//! ACL file everything not granted is denied, and a `deny` rule wins over
//! any grant. `write` is checked against the topic of each PUBLISH (and the
//! will). `read` is checked against the topic of each message delivered, as
//! mosquitto does: a subscription to `a/#` with `topic read a/#` and `topic
//! deny a/secret` is granted, and `a/secret` is held back. A subscription
//! is refused (SUBACK 0x87) only when it could deliver nothing: its filter
//! (without `$share/{group}/`) overlaps no granted filter, or lies within a
//! denied one (mosquitto grants those too, and then delivers nothing).

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use fulmar_broker::{Authorizer, ClientInfo};

/// What a rule grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Access {
    fn reads(self) -> bool {
        matches!(self, Self::Read | Self::ReadWrite)
    }

    fn writes(self) -> bool {
        matches!(self, Self::Write | Self::ReadWrite)
    }
}

/// One `topic` or `pattern` line.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    access: Access,
    filter: String,
}

/// A parsed ACL file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Acl {
    /// `topic` rules before any `user` line.
    anonymous: Vec<Rule>,
    /// `topic` rules per user, in file order.
    users: Vec<(String, Vec<Rule>)>,
    /// `pattern` rules, for every client.
    patterns: Vec<Rule>,
}

impl Acl {
    /// Parses the text of an ACL file; errors name the line.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut acl = Self::default();
        let mut current: Option<usize> = None;
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = line.split_once([' ', '\t']).unwrap_or((line, ""));
            let rest = rest.trim();
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(format!("line {n}: `user` needs a user name"));
                    }
                    let index = match acl.users.iter().position(|(u, _)| u == rest) {
                        Some(index) => index,
                        None => {
                            acl.users.push((rest.to_owned(), Vec::new()));
                            acl.users.len() - 1
                        }
                    };
                    current = Some(index);
                }
                "topic" | "pattern" => {
                    let rule = parse_rule(rest).map_err(|e| format!("line {n}: {e}"))?;
                    if keyword == "pattern" {
                        acl.patterns.push(rule);
                    } else if let Some((_, rules)) = current.and_then(|c| acl.users.get_mut(c)) {
                        rules.push(rule);
                    } else {
                        acl.anonymous.push(rule);
                    }
                }
                other => {
                    return Err(format!(
                        "line {n}: unknown keyword {other:?} (expected user, topic or pattern)"
                    ));
                }
            }
        }
        Ok(acl)
    }

    /// Reads and parses the file at `path`.
    pub(crate) fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("auth.acl_file = {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("auth.acl_file = {}: {e}", path.display()))
    }

    /// A client's own rules: its user's, or the anonymous ones.
    fn own_rules<'a>(
        &'a self,
        username: Option<&'a str>,
    ) -> impl Iterator<Item = (Access, Cow<'a, str>)> + 'a {
        // An empty user name is an anonymous client, as in mosquitto 2.0.
        let own = match username.filter(|u| !u.is_empty()) {
            None => Some(&self.anonymous),
            Some(user) => self
                .users
                .iter()
                .find(|(u, _)| u == user)
                .map(|(_, rules)| rules),
        };
        own.into_iter()
            .flatten()
            .map(|r| (r.access, Cow::Borrowed(r.filter.as_str())))
    }

    /// The patterns, substituted for a client (only those with `%` are
    /// copied; one whose value is missing or unsafe does not apply). None
    /// at all for a client whose identifier or user name has a wildcard
    /// (`+`, `#`), even those without `%`: mosquitto 2.0 denies such a
    /// client everything its own rules did not decide.
    fn pattern_rules<'a>(
        &'a self,
        client_id: &'a str,
        username: Option<&'a str>,
    ) -> impl Iterator<Item = (Access, Cow<'a, str>)> + 'a {
        let wildcard = |v: &str| v.contains(['+', '#']);
        let patterns = if wildcard(client_id) || username.is_some_and(wildcard) {
            &[][..]
        } else {
            &self.patterns[..]
        };
        patterns.iter().filter_map(move |p| {
            let filter = if p.filter.contains('%') {
                Cow::Owned(substitute(&p.filter, client_id, username)?)
            } else {
                Cow::Borrowed(p.filter.as_str())
            };
            Some((p.access, filter))
        })
    }

    /// As mosquitto 2.0 decides: the client's own rules first, where a
    /// matching `deny` refuses and a matching grant of `access` allows; the
    /// patterns only when none of them decided, in the same way; else no.
    fn allows(
        &self,
        client_id: &str,
        username: Option<&str>,
        topic: &str,
        access: fn(Access) -> bool,
    ) -> bool {
        let decide = |rules: &mut dyn Iterator<Item = (Access, Cow<'_, str>)>| {
            let mut granted = false;
            for (rule, filter) in rules {
                if filter_matches(&filter, topic) {
                    if rule == Access::Deny {
                        return Some(false);
                    }
                    granted |= access(rule);
                }
            }
            granted.then_some(true)
        };
        decide(&mut self.own_rules(username))
            .or_else(|| decide(&mut self.pattern_rules(client_id, username)))
            .unwrap_or(false)
    }

    /// May this client publish to `topic`?
    pub(crate) fn may_write(&self, client_id: &str, username: Option<&str>, topic: &str) -> bool {
        self.allows(client_id, username, topic, Access::writes)
    }

    /// May this client receive a message published to `topic`?
    pub(crate) fn may_read(&self, client_id: &str, username: Option<&str>, topic: &str) -> bool {
        self.allows(client_id, username, topic, Access::reads)
    }

    /// May this client subscribe to `filter` (`$share/{group}/` allowed)?
    /// Yes when some topic it matches may be read (each message is then
    /// checked with [`may_read`](Self::may_read)): a read grant overlaps it,
    /// in the client's own rules or else in the patterns, and no `deny` of
    /// the same rules covers it whole.
    pub(crate) fn may_subscribe(
        &self,
        client_id: &str,
        username: Option<&str>,
        filter: &str,
    ) -> bool {
        let filter = strip_share(filter);
        let decide = |rules: &mut dyn Iterator<Item = (Access, Cow<'_, str>)>| {
            let mut granted = false;
            for (rule, rule_filter) in rules {
                if rule == Access::Deny && filter_covers(&rule_filter, filter) {
                    return Some(false);
                }
                granted |= rule.reads() && filters_overlap(&rule_filter, filter);
            }
            granted.then_some(true)
        };
        decide(&mut self.own_rules(username))
            .or_else(|| decide(&mut self.pattern_rules(client_id, username)))
            .unwrap_or(false)
    }
}

fn parse_rule(rest: &str) -> Result<Rule, String> {
    let (first, after) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
    let (access, filter) = match first {
        "read" => (Access::Read, after.trim()),
        "write" => (Access::Write, after.trim()),
        "readwrite" => (Access::ReadWrite, after.trim()),
        "deny" => (Access::Deny, after.trim()),
        // Without an access type the filter is one word (mosquitto: a
        // filter with a space needs the access type before it); a first
        // word that is none of them is a typo, refused as mosquitto does
        // rather than read as part of the filter.
        _ if !after.trim().is_empty() => {
            return Err(format!(
                "access type {first:?} is not read, write, readwrite or deny"
            ));
        }
        _ => (Access::ReadWrite, rest),
    };
    if filter.is_empty() {
        return Err("a topic filter is missing".to_owned());
    }
    let probe = filter.replace("%c", "c").replace("%u", "u");
    probe
        .parse::<fulmar_topic::TopicFilter>()
        .map_err(|e| format!("topic filter {filter:?}: {e}"))?;
    Ok(Rule {
        access,
        filter: filter.to_owned(),
    })
}

/// `%c` and `%u` replaced, in one pass over the pattern (a value that
/// contains `%c` or `%u` is taken literally); `None` when a value is missing
/// or could change the filter's structure (contains `/`, `+` or `#`) or reach
/// the server's topics (starts with `$`, MQTT-4.7.2-1), so the rule does not
/// apply.
fn substitute(pattern: &str, client_id: &str, username: Option<&str>) -> Option<String> {
    let unsafe_value = |v: &str| v.contains(['/', '+', '#']) || v.starts_with('$');
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let token = &rest[at..];
        let value = if token.starts_with("%c") {
            Some(client_id)
        } else if token.starts_with("%u") {
            username.filter(|u| !u.is_empty())
        } else {
            out.push('%');
            rest = &token[1..];
            continue;
        };
        out.push_str(value.filter(|v| !unsafe_value(v))?);
        rest = &token[2..];
    }
    out.push_str(rest);
    Some(out)
}

/// The filter part of a shared subscription `$share/{group}/{filter}`.
fn strip_share(filter: &str) -> &str {
    filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(filter, |(_, f)| f)
}

/// Whether a first-level wildcard would wrongly reach a `$` topic (spec 4.7.2).
fn dollar_guard(filter: &str, other: &str) -> bool {
    other.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#'))
}

/// Whether topic name `topic` matches `filter`.
fn filter_matches(filter: &str, topic: &str) -> bool {
    if dollar_guard(filter, topic) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every topic that `inner` matches is matched by `outer`.
fn filter_covers(outer: &str, inner: &str) -> bool {
    if dollar_guard(outer, inner) {
        return false;
    }
    let mut o = outer.split('/');
    let mut i = inner.split('/');
    loop {
        match (o.next(), i.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(a), Some(b)) if a == b && a != "+" && a != "#" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some topic name is matched by both filters.
fn filters_overlap(a: &str, b: &str) -> bool {
    if dollar_guard(a, b) || dollar_guard(b, a) {
        return false;
    }
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(p), Some(q)) if p == q => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Allows or denies by an [`Acl`], replaced in place when the file is
/// reloaded (SIGHUP); none (the configuration no longer names a file)
/// allows everything, as without an ACL.
#[derive(Debug)]
pub(crate) struct AclAuthorizer(pub(crate) Arc<ArcSwapOption<Acl>>);

#[async_trait::async_trait]
impl Authorizer for AclAuthorizer {
    async fn authorize_publish(&self, client: &ClientInfo, topic: &str) -> bool {
        let allowed =
            self.0.load().as_ref().is_none_or(|acl| {
                acl.may_write(&client.client_id, client.username.as_deref(), topic)
            });
        if !allowed {
            tracing::info!(client_id = %client.client_id, topic, "publish denied by the ACL");
        }
        allowed
    }

    async fn authorize_subscribe(&self, client: &ClientInfo, filter: &str) -> bool {
        let allowed = self.0.load().as_ref().is_none_or(|acl| {
            acl.may_subscribe(&client.client_id, client.username.as_deref(), filter)
        });
        if !allowed {
            tracing::info!(client_id = %client.client_id, filter, "subscription denied by the ACL");
        }
        allowed
    }

    fn checks_reads(&self) -> bool {
        true
    }

    fn authorize_read(&self, client: &ClientInfo, topic: &str) -> bool {
        self.0
            .load()
            .as_ref()
            .is_none_or(|acl| acl.may_read(&client.client_id, client.username.as_deref(), topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# anonymous clients
topic read public/#

user alice
topic readwrite alice/#
topic deny alice/secret
topic sensors/+/temp

user bob
topic write bob/out

pattern readwrite devices/%c/#
pattern read users/%u/inbox
";

    #[test]
    fn users_get_their_own_rules_and_the_patterns() {
        let acl = Acl::parse(FILE).unwrap();
        let alice = Some("alice");
        assert!(acl.may_write("c1", alice, "alice/x"));
        assert!(!acl.may_write("c1", alice, "alice/secret"));
        assert!(acl.may_write("c1", alice, "sensors/k/temp"));
        assert!(!acl.may_write("c1", alice, "bob/out"));
        assert!(acl.may_write("c1", Some("bob"), "bob/out"));
        assert!(!acl.may_read("c1", Some("bob"), "bob/out"));
        // Anonymous clients get the rules before the first `user` line.
        assert!(acl.may_subscribe("c1", None, "public/#"));
        assert!(acl.may_subscribe("c1", None, "public/+/x"));
        assert!(!acl.may_write("c1", None, "public/x"));
        assert!(!acl.may_subscribe("c1", alice, "public/#"));
        // Unknown users get the patterns only.
        assert!(!acl.may_write("c1", Some("eve"), "alice/x"));
    }

    #[test]
    fn patterns_substitute_client_id_and_user() {
        let acl = Acl::parse(FILE).unwrap();
        assert!(acl.may_write("dev7", None, "devices/dev7/status"));
        assert!(!acl.may_write("dev7", None, "devices/dev8/status"));
        assert!(acl.may_read("dev7", Some("eve"), "users/eve/inbox"));
        assert!(!acl.may_read("dev7", Some("eve"), "users/bob/inbox"));
        // No user name: a %u pattern does not apply; wildcards in ids are not substituted.
        assert!(!acl.may_read("dev7", None, "users//inbox"));
        assert!(!acl.may_write("#", None, "devices/x/status"));
    }

    // One-pass substitution: a client id or user name that looks like `%u` or
    // `%c` is taken literally, never substituted again.
    #[test]
    fn substituted_values_are_not_rescanned() {
        let acl = Acl::parse("pattern readwrite devices/%c/#\n").unwrap();
        let bob = Some("bob");
        assert!(!acl.may_write("%u", bob, "devices/bob/x"));
        assert!(!acl.may_subscribe("%u", bob, "devices/bob/#"));
        assert!(acl.may_write("%u", bob, "devices/%u/x"));
        let acl = Acl::parse("pattern readwrite users/%u/%c\n").unwrap();
        assert!(!acl.may_write("dev7", Some("%c"), "users/dev7/dev7"));
        assert!(acl.may_write("dev7", Some("%c"), "users/%c/dev7"));
        assert_eq!(
            substitute("a/%c/%u/%x%", "%u", Some("%c")),
            Some("a/%u/%c/%x%".to_owned())
        );
    }

    // MQTT-4.7.2-1: a client id or user name starting with `$` would put the
    // client into the server's `$` topics; the pattern then grants nothing.
    #[test]
    fn substituted_values_starting_with_dollar_are_refused() {
        let acl = Acl::parse("pattern readwrite %c/#\npattern read %u/#\n").unwrap();
        assert!(!acl.may_subscribe("$SYS", None, "$SYS/#"));
        assert!(!acl.may_read("$SYS", None, "$SYS/broker/uptime"));
        assert!(!acl.may_write("$SYS", None, "$SYS/broker/uptime"));
        assert!(!acl.may_subscribe("c1", Some("$SYS"), "$SYS/#"));
        assert_eq!(substitute("%c/#", "$SYS", None), None);
        assert_eq!(substitute("%u/#", "c1", Some("$share")), None);
        // Other values still work.
        assert!(acl.may_write("dev7", None, "dev7/x"));
        assert!(acl.may_subscribe("c1", Some("eve"), "eve/#"));
    }

    // As mosquitto: a subscription is granted when it can bring something
    // readable, and each message is checked against the reads granted.
    #[test]
    fn subscriptions_overlap_a_grant_and_each_message_is_checked() {
        let acl = Acl::parse(FILE).unwrap();
        let alice = Some("alice");
        assert!(acl.may_subscribe("c", alice, "alice/+/x"));
        assert!(acl.may_subscribe("c", alice, "$share/g/alice/inbox"));
        assert!(acl.may_subscribe("c", alice, "sensors/+/temp"));
        // Wider than the grant: granted, and the messages are filtered.
        assert!(acl.may_subscribe("c", alice, "sensors/#"));
        assert!(acl.may_subscribe("c", alice, "#"));
        assert!(acl.may_read("c", alice, "sensors/k/temp"));
        assert!(!acl.may_read("c", alice, "sensors/k/humidity"));
        // alice/# overlaps the denied alice/secret: granted, alice/secret held back.
        assert!(acl.may_subscribe("c", alice, "alice/#"));
        assert!(acl.may_read("c", alice, "alice/x"));
        assert!(!acl.may_read("c", alice, "alice/secret"));
        // Nothing it could bring is readable: refused.
        assert!(!acl.may_subscribe("c", alice, "alice/secret"));
        assert!(!acl.may_subscribe("c", alice, "bob/#"));
        assert!(!acl.may_subscribe("c", alice, "$SYS/#"));
        // Write-only grants give nothing to read.
        assert!(!acl.may_subscribe("c", Some("bob"), "bob/out"));
        assert!(!acl.may_read("c", Some("bob"), "bob/out"));
    }

    // Checked against mosquitto 2.0.11 with the same file: a client's own
    // rules decide first (a user grant beats a pattern deny, a user deny
    // beats a pattern grant); the patterns decide what they leave.
    #[test]
    fn own_rules_decide_before_the_patterns() {
        let acl = Acl::parse(
            "user alice\ntopic deny a/alice\ntopic read b/#\n\
             pattern read a/%u\npattern deny b/%u\npattern read c/%u\n",
        )
        .unwrap();
        let alice = Some("alice");
        assert!(!acl.may_read("c", alice, "a/alice"));
        assert!(acl.may_read("c", alice, "b/alice"));
        assert!(acl.may_read("c", alice, "b/x"));
        assert!(acl.may_read("c", alice, "c/alice"));
        assert!(!acl.may_read("c", alice, "c/bob"));
        // A write grant of one's own does not decide a read: the patterns do.
        let acl = Acl::parse("user bob\ntopic write d/#\npattern read d/%u\n").unwrap();
        assert!(acl.may_read("c", Some("bob"), "d/bob"));
    }

    // Checked against mosquitto 2.0.11 with the same file: a client whose
    // user name or identifier holds `+` or `#` gets nothing from the
    // patterns, not even from those that do not substitute it; its own
    // rules still apply. (config, no spec statement)
    #[test]
    fn wildcards_in_client_id_or_user_name_turn_the_patterns_off() {
        let acl = Acl::parse(
            "user x#y\ntopic read own/#\n\
             pattern read shared/#\npattern readwrite devices/%c/#\n",
        )
        .unwrap();
        assert!(acl.may_read("c1", Some("eve"), "shared/1"));
        assert!(!acl.may_read("c1", Some("x#y"), "shared/1"));
        assert!(!acl.may_write("c1", Some("x#y"), "devices/c1/s"));
        assert!(!acl.may_subscribe("c1", Some("x#y"), "shared/#"));
        assert!(acl.may_read("c1", Some("x#y"), "own/1"));
        assert!(!acl.may_read("c+d", Some("eve"), "shared/1"));
        assert!(!acl.may_read("c+d", None, "shared/1"));
        assert!(!acl.may_subscribe("c#", None, "shared/#"));
    }

    // Checked against mosquitto 2.0.11: a client with an empty user name
    // is anonymous, for the rules before any `user` line and for %u
    // (config, no spec statement)
    #[test]
    fn an_empty_user_name_is_anonymous() {
        let acl =
            Acl::parse("topic read public/#\nuser \"\"\ntopic read x/#\npattern read u/%u/#\n")
                .unwrap();
        assert!(acl.may_read("c", Some(""), "public/1"));
        assert!(!acl.may_read("c", Some(""), "u//1"));
        assert!(!acl.may_subscribe("c", Some(""), "u//#"));
    }

    #[test]
    fn filter_relations() {
        assert!(filter_matches("a/+/c", "a/b/c"));
        assert!(filter_matches("a/#", "a"));
        assert!(!filter_matches("#", "$SYS/x"));
        assert!(filter_covers("a/#", "a/+/b"));
        assert!(filter_covers("+/b", "x/b"));
        assert!(!filter_covers("a/+", "a/#"));
        assert!(!filter_covers("a/b", "a/+"));
        assert!(filters_overlap("a/+", "+/b"));
        assert!(filters_overlap("a/#", "a"));
        assert!(!filters_overlap("a/b", "a/c"));
        assert_eq!(strip_share("$share/g/a/b"), "a/b");
        assert_eq!(strip_share("a/b"), "a/b");
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        let e = Acl::parse("user alice\ntopc read a\n").unwrap_err();
        assert!(e.starts_with("line 2"), "{e}");
        let e = Acl::parse("\n\ntopic read a/#/b\n").unwrap_err();
        assert!(e.starts_with("line 3"), "{e}");
        let e = Acl::parse("topic read\n").unwrap_err();
        assert!(e.contains("missing"), "{e}");
    }

    // Checked against mosquitto 2.0.11, which refuses to start on each of
    // these lines ("Invalid topic access type"): an access type it does not
    // know is not part of the filter. (config, no spec statement)
    #[test]
    fn unknown_access_types_are_refused() {
        for line in [
            "topic raed a/#",
            "topic WRITE a/x",
            "topic a b",
            "pattern rw d/%c",
        ] {
            let e = Acl::parse(&format!("user alice\n{line}\n")).unwrap_err();
            assert!(e.starts_with("line 2") && e.contains("access type"), "{e}");
        }
        // One word: the filter, read and write (as mosquitto).
        let acl = Acl::parse("topic a/x\ntopic read b c\n").unwrap();
        assert!(acl.may_write("c", None, "a/x") && acl.may_read("c", None, "a/x"));
        assert!(acl.may_read("c", None, "b c") && !acl.may_write("c", None, "b c"));
    }
}
