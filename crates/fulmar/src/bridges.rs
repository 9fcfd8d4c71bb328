//! `[[bridge]]` tables of the configuration: connections to other MQTT
//! brokers (mosquitto's `connection` sections), run by fulmar-bridge.

use std::path::PathBuf;
use std::time::Duration;

use fulmar_bridge::{Direction, Remote, TopicRule};
use fulmar_client::{ConnectOptions, ProtocolVersion, QoS, TlsOptions, Transport};
use serde::{Deserialize, Serialize};

use crate::config::{Protocol, host_name};

/// One `[[bridge]]` table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BridgeConfig {
    /// Names the bridge in logs; part of the default client identifier.
    pub(crate) name: String,
    /// `host:port` of the remote broker (port 1883, or 8883 for tls, if left out).
    pub(crate) address: String,
    /// Other `host:port`s of the same remote service, tried in turn when a
    /// connection attempt to the one before fails; after a connection ends,
    /// `address` is tried first again (mosquitto's `address h1 h2` with
    /// `round_robin false`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) fallback_addresses: Vec<String>,
    /// tcp, tls, ws or wss.
    #[serde(default = "tcp")]
    pub(crate) protocol: Protocol,
    /// ws / wss: the HTTP path (default "/mqtt").
    pub(crate) path: Option<String>,
    /// "5" or "3.1.1".
    #[serde(default = "v5")]
    pub(crate) version: String,
    /// Default: the host name, a dot and the bridge's name.
    pub(crate) client_id: Option<String>,
    /// Start a new session on the remote at each connection (default false:
    /// the remote keeps the bridge's subscriptions and queues its messages).
    /// Under 5.0 the session then ends with each connection (Session Expiry
    /// Interval 0, whatever `session_expiry_secs`): a reconnection resumes
    /// nothing.
    #[serde(default)]
    pub(crate) clean_start: bool,
    /// 5.0: how long the remote keeps the session after a disconnection
    /// (unless `clean_start`).
    #[serde(default = "hour")]
    pub(crate) session_expiry_secs: u32,
    #[serde(default = "minute")]
    pub(crate) keep_alive_secs: u16,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    /// tls / wss: CA to verify the remote with (default: the system's roots).
    /// With `ca_file` or `ca_path`, only those CAs are trusted, as
    /// mosquitto's `bridge_cafile` / `bridge_capath` do.
    pub(crate) ca_file: Option<PathBuf>,
    /// tls / wss: a directory whose PEM certificate files are the CAs to
    /// verify the remote with (mosquitto's `bridge_capath`): every file
    /// that holds certificates is read; none at all is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ca_path: Option<PathBuf>,
    /// tls / wss: client certificate and key.
    pub(crate) cert: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
    /// tls / wss: the lowest TLS version, "1.2" (the default: TLS 1.2 or
    /// 1.3, as the remote picks) or "1.3" (TLS 1.3 only; mosquitto's
    /// `bridge_tls_version tlsv1.3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tls_version: Option<String>,
    /// 3.1.1: tell the remote this is a bridge (mosquitto's try_private).
    #[serde(default = "yes")]
    pub(crate) try_private: bool,
    /// Messages keep their retain flag on their way to the remote
    /// (mosquitto's bridge_outgoing_retain); off, they go without it, and
    /// the retained messages here are not sent at each connection.
    #[serde(default = "yes")]
    pub(crate) outgoing_retain: bool,
    /// What waits for the remote while the link is down: `all` (default),
    /// `qos12` (QoS 0 messages are dropped, as mosquitto's bridge with
    /// `cleansession false`) or `none` (mosquitto's with `cleansession true`).
    #[serde(default)]
    pub(crate) queue_while_down: QueueWhileDown,
    /// QoS 1/2 messages sent to the remote without acknowledgement (5.0: at
    /// most the remote's Receive Maximum).
    #[serde(default = "sixty_four")]
    pub(crate) max_inflight: u16,
    /// Messages for the remote that may wait while it is slow or away.
    #[serde(default = "thousand")]
    pub(crate) max_queued_messages: usize,
    /// Payload bytes for the remote that may wait.
    #[serde(default = "sixteen_mib")]
    pub(crate) max_queued_bytes: usize,
    /// Also publish the link's state (`1` / `0`, retained) on the remote
    /// broker, with a will that says `0` when the link dies (mosquitto's
    /// `notifications`, default true).
    #[serde(default = "yes")]
    pub(crate) notifications: bool,
    /// Publish the link's state here (default true; false as mosquitto's
    /// `notifications false`, which publishes it nowhere).
    #[serde(default = "yes")]
    pub(crate) local_notifications: bool,
    /// The state's topic, here and on the remote (default
    /// `$SYS/broker/connection/NAME/state`; from a mosquitto.conf, its
    /// `$SYS/broker/connection/CLIENT_ID/state`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) notification_topic: Option<String>,
    /// `[[bridge.topic]]` tables.
    #[serde(rename = "topic", default)]
    pub(crate) topics: Vec<TopicConfig>,
}

/// One `[[bridge.topic]]` table (mosquitto's `topic` line).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TopicConfig {
    pub(crate) pattern: String,
    /// in, out (default) or both.
    #[serde(default = "out")]
    pub(crate) direction: String,
    #[serde(default)]
    pub(crate) qos: u8,
    #[serde(default)]
    pub(crate) local_prefix: String,
    #[serde(default)]
    pub(crate) remote_prefix: String,
}

fn tcp() -> Protocol {
    Protocol::Tcp
}
fn v5() -> String {
    "5".to_owned()
}
fn hour() -> u32 {
    3600
}
/// [`BridgeConfig::queue_while_down`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum QueueWhileDown {
    #[default]
    All,
    Qos12,
    None,
}

impl QueueWhileDown {
    /// The lowest QoS kept ([`Remote::queue_while_down`]).
    fn min_qos(self) -> Option<QoS> {
        match self {
            Self::All => Some(QoS::AtMostOnce),
            Self::Qos12 => Some(QoS::AtLeastOnce),
            Self::None => None,
        }
    }
}

fn minute() -> u16 {
    60
}
fn yes() -> bool {
    true
}
fn sixty_four() -> u16 {
    64
}
fn thousand() -> usize {
    1000
}
fn sixteen_mib() -> usize {
    16 << 20
}
fn out() -> String {
    "out".to_owned()
}

impl BridgeConfig {
    /// Makes paths relative to the configuration file's directory.
    pub(crate) fn resolve(&mut self, base: &std::path::Path) {
        for path in [
            &mut self.ca_file,
            &mut self.ca_path,
            &mut self.cert,
            &mut self.key,
        ]
        .into_iter()
        .flatten()
        {
            *path = base.join(&*path);
        }
    }

    fn at(&self, n: usize) -> String {
        format!("bridge {n} ({})", self.name)
    }

    fn version(&self, n: usize) -> Result<ProtocolVersion, String> {
        match self.version.as_str() {
            "5" | "5.0" => Ok(ProtocolVersion::V5),
            "3.1.1" | "311" => Ok(ProtocolVersion::V311),
            "3.1" | "31" => Ok(ProtocolVersion::V31),
            other => Err(format!(
                "{}: version = {other:?}: \"5\", \"3.1.1\" or \"3.1\"",
                self.at(n)
            )),
        }
    }

    fn host_port(&self, n: usize, address: &str) -> Result<(String, u16), String> {
        let default = if matches!(self.protocol, Protocol::Tls | Protocol::Wss) {
            8883
        } else {
            1883
        };
        match address.rsplit_once(':') {
            // An IPv6 address without a port has colons but no brackets.
            Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
                let port = port
                    .parse()
                    .map_err(|_| format!("{}: address {address:?}: bad port", self.at(n)))?;
                Ok((host.trim_matches(['[', ']']).to_owned(), port))
            }
            _ if address.is_empty() => Err(format!("{}: `address` is empty", self.at(n))),
            _ => Ok((address.trim_matches(['[', ']']).to_owned(), default)),
        }
    }

    fn rules(&self, n: usize) -> Result<Vec<TopicRule>, String> {
        if self.topics.is_empty() {
            return Err(format!(
                "{}: no [[bridge.topic]]: the bridge would carry nothing",
                self.at(n)
            ));
        }
        self.topics
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let at = || format!("{} topic {}", self.at(n), i + 1);
                let direction: Direction =
                    t.direction.parse().map_err(|e| format!("{}: {e}", at()))?;
                let qos = QoS::try_from(t.qos)
                    .map_err(|_| format!("{}: qos = {}: 0, 1 or 2", at(), t.qos))?;
                TopicRule::with_prefixes(&t.pattern, direction, &t.local_prefix, &t.remote_prefix)
                    .map(|r| r.qos(qos))
                    .map_err(|e| format!("{}: {e}", at()))
            })
            .collect()
    }

    /// Checks what can be checked without reading files.
    pub(crate) fn check(&self, n: usize) -> Result<(), String> {
        if self.name.is_empty() || self.name.contains(['/', '+', '#', '\0']) {
            return Err(format!(
                "bridge {n}: name = {:?}: a bridge's name is a topic level \
                 ($SYS/broker/connection/NAME/state): not empty, no / + # or U+0000",
                self.name
            ));
        }
        if let Some(topic) = &self.notification_topic
            && (topic.is_empty() || topic.contains(['+', '#', '\0']))
        {
            return Err(format!(
                "{}: notification_topic = {topic:?}: a topic name (not empty, no + # or U+0000)",
                self.at(n)
            ));
        }
        for address in std::iter::once(&self.address).chain(&self.fallback_addresses) {
            if address.contains("://") {
                return Err(format!(
                    "{}: address {address:?}: host:port, without a scheme (see `protocol`)",
                    self.at(n),
                ));
            }
            self.host_port(n, address)?;
        }
        if self.max_queued_messages == 0 {
            return Err(format!("{}: max_queued_messages: at least 1", self.at(n)));
        }
        self.version(n)?;
        self.rules(n)?;
        let tls = matches!(self.protocol, Protocol::Tls | Protocol::Wss);
        if !tls
            && (self.ca_file.is_some()
                || self.ca_path.is_some()
                || self.cert.is_some()
                || self.key.is_some()
                || self.tls_version.is_some())
        {
            return Err(format!(
                "{}: `ca_file`, `ca_path`, `cert`, `key` and `tls_version` need protocol \"tls\" \
                 or \"wss\"",
                self.at(n)
            ));
        }
        if let Some(v) = self.tls_version.as_deref()
            && v != "1.2"
            && v != "1.3"
        {
            return Err(format!(
                "{}: tls_version = {v:?}: \"1.2\" or \"1.3\"",
                self.at(n)
            ));
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err(format!("{}: `cert` and `key` go together", self.at(n)));
        }
        if self.path.is_some() && !self.protocol.is_websocket() {
            return Err(format!(
                "{}: `path` needs protocol \"ws\" or \"wss\"",
                self.at(n)
            ));
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(format!("{}: `password` needs `username`", self.at(n)));
        }
        Ok(())
    }

    /// The Session Expiry Interval asked of a 5.0 remote. With
    /// `clean_start`, 0: the client reconnects with Clean Start 0 (to resume
    /// what a kept session holds), so only a session that ends with each
    /// connection makes every connection start a new one. It was
    /// `session_expiry_secs`, and the remote resumed the session.
    fn session_expiry(&self) -> u32 {
        if self.clean_start {
            0
        } else {
            self.session_expiry_secs
        }
    }

    /// The fulmar-bridge remote, reading the TLS files.
    pub(crate) fn to_remote(&self, n: usize) -> Result<Remote, String> {
        self.check(n)?;
        let version = self.version(n)?;
        let (host, port) = self.host_port(n, &self.address)?;
        let client_id = self
            .client_id
            .clone()
            .unwrap_or_else(|| format!("{}.{}", host_name(), self.name));
        let mut options = ConnectOptions::new(host, port)
            .protocol_version(version)
            .client_id(client_id)
            .clean_start(self.clean_start)
            .max_inflight(self.max_inflight)
            .keep_alive(Duration::from_secs(u64::from(self.keep_alive_secs)));
        for address in &self.fallback_addresses {
            let (host, port) = self.host_port(n, address)?;
            options = options.fallback_address(host, port);
        }
        if version == ProtocolVersion::V5 {
            options = options.session_expiry_interval(self.session_expiry());
        }
        match (&self.username, &self.password) {
            (Some(user), Some(password)) => {
                options = options.credentials(user.clone(), password.clone().into_bytes());
            }
            (Some(user), None) => options = options.username(user.clone()),
            _ => {}
        }
        let path = || self.path.clone().unwrap_or_else(|| "/mqtt".to_owned());
        let transport = match self.protocol {
            Protocol::Tcp => Transport::Tcp,
            Protocol::Ws => Transport::WebSocket { path: path() },
            Protocol::Tls => Transport::Tls(self.tls(n)?),
            Protocol::Wss => Transport::SecureWebSocket {
                path: path(),
                tls: self.tls(n)?,
            },
        };
        let mut remote = Remote::new(self.name.clone(), options.transport(transport))
            .max_queued_messages(self.max_queued_messages)
            .max_queued_bytes(self.max_queued_bytes)
            .try_private(self.try_private)
            .outgoing_retain(self.outgoing_retain)
            .queue_while_down(self.queue_while_down.min_qos())
            .local_notifications(self.local_notifications)
            .remote_notifications(self.notifications);
        if let Some(topic) = &self.notification_topic {
            remote = remote.notification_topic(topic.clone());
        }
        for rule in self.rules(n)? {
            remote = remote.rule(rule);
        }
        Ok(remote)
    }

    fn tls(&self, n: usize) -> Result<TlsOptions, String> {
        let read = |key: &str, path: &PathBuf| {
            std::fs::read(path)
                .map_err(|e| format!("{}: {key} = {}: {e}", self.at(n), path.display()))
        };
        let mut tls = TlsOptions::new();
        if self.ca_file.is_some() || self.ca_path.is_some() {
            // The CAs given, and only them (as mosquitto: its bridge trusts
            // the system's roots only without bridge_cafile / bridge_capath).
            tls = tls.without_system_roots();
        }
        if let Some(ca) = &self.ca_file {
            tls = tls
                .ca_pem(&read("ca_file", ca)?)
                .map_err(|e| format!("{}: ca_file: {e}", self.at(n)))?;
        }
        if let Some(dir) = &self.ca_path {
            for der in crate::ca_path::certificates(dir)
                .map_err(|e| format!("{}: ca_path: {e}", self.at(n)))?
            {
                tls = tls.ca_der(der);
            }
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            tls = tls
                .client_auth_pem(&read("cert", cert)?, &read("key", key)?)
                .map_err(|e| format!("{}: cert / key: {e}", self.at(n)))?;
        }
        if self.tls_version.as_deref() == Some("1.3") {
            tls = tls.tls13_only();
        }
        Ok(tls)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(text: &str) -> BridgeConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn a_bridge_table_becomes_a_remote() {
        let bridge = parse(
            r#"
            name = "cloud"
            address = "127.0.0.1:1884"
            version = "3.1.1"
            [[topic]]
            pattern = "sensors/#"
            qos = 1
            remote_prefix = "site/"
            [[topic]]
            pattern = "cmd/#"
            direction = "in"
            "#,
        );
        let remote = bridge.to_remote(1).unwrap();
        assert_eq!(remote.name(), "cloud");
        let rules = bridge.rules(1).unwrap();
        assert_eq!(rules[0].direction(), Direction::Out);
        assert_eq!(rules[0].remote_filter(), "site/sensors/#");
        assert_eq!(rules[1].max_qos(), QoS::AtMostOnce);
        assert_eq!(
            bridge.host_port(1, &bridge.address).unwrap(),
            ("127.0.0.1".into(), 1884)
        );
    }

    // v5:MQTT-3.1.2-23 (the remote keeps a session with an interval above 0)
    #[test]
    fn clean_start_asks_for_a_session_that_ends_with_the_connection() {
        let base = "name = \"b\"\naddress = \"h:1\"\n[[topic]]\npattern = \"x\"\n";
        assert_eq!(parse(base).session_expiry(), 3600);
        let clean = parse(&format!(
            "clean_start = true\nsession_expiry_secs = 60\n{base}"
        ));
        assert_eq!(clean.session_expiry(), 0);
    }

    #[test]
    fn mistakes_name_the_bridge_and_the_key() {
        let base = "name = \"b\"\naddress = \"h\"\n";
        let err = |extra: &str| parse(&format!("{base}{extra}")).check(2).unwrap_err();
        assert!(err("").contains("bridge 2 (b): no [[bridge.topic]]"));
        let named = parse("name = \"a/b\"\naddress = \"h\"\n[[topic]]\npattern = \"x\"\n");
        assert!(named.check(1).unwrap_err().contains("name = \"a/b\""));
        let topic_ = "[[topic]]\npattern = \"x\"\n";
        let scheme = parse(&format!(
            "name = \"b\"\naddress = \"mqtt://h:1883\"\n{topic_}"
        ));
        assert!(scheme.check(1).unwrap_err().contains("without a scheme"));
        assert!(err(&format!("max_queued_messages = 0\n{topic_}")).contains("at least 1"));
        let topic = "[[topic]]\npattern = \"a/#\"\n";
        assert!(err(&format!("version = \"4\"\n{topic}")).contains("version = \"4\""));
        assert!(err(&format!("ca_file = \"x\"\n{topic}")).contains("need protocol \"tls\""));
        assert!(err(&format!("tls_version = \"1.3\"\n{topic}")).contains("need protocol"));
        assert!(
            err(&format!(
                "protocol = \"tls\"\ntls_version = \"1.1\"\n{topic}"
            ))
            .contains("tls_version = \"1.1\"")
        );
        assert!(
            err("[[topic]]\npattern = \"a/#\"\ndirection = \"up\"\n")
                .contains("topic 1: direction \"up\"")
        );
        assert!(err("[[topic]]\npattern = \"a/#\"\nqos = 3\n").contains("qos = 3"));
        assert!(err("[[topic]]\npattern = \"a/#/b\"\n").contains("topic 1: topic pattern"));
        // No port: the protocol's default.
        let ok = parse(&format!("{base}protocol = \"tls\"\n{topic}"));
        assert_eq!(ok.host_port(1, &ok.address).unwrap(), ("h".into(), 8883));
        // Fallback addresses are checked as the address is.
        let two = parse(&format!(
            "{base}fallback_addresses = [\"h2:1884\", \"h3\"]\n{topic}"
        ));
        let remote = two.to_remote(1).unwrap();
        assert_eq!(
            remote.options().addresses().collect::<Vec<_>>(),
            [("h", 1883), ("h2", 1884), ("h3", 1883)]
        );
        assert!(err(&format!("fallback_addresses = [\"h2:x\"]\n{topic}")).contains("bad port"));
    }

    /// `ca_path` (mosquitto's `bridge_capath`): the CAs of every PEM file
    /// of the directory; a directory without one is an error (found by an
    /// operator review: the directive was ignored and the bridge ran in
    /// clear).
    #[test]
    fn ca_path_reads_the_certificates_of_a_directory() {
        let dir = std::env::temp_dir().join(format!("fulmar-ca-path-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = crate::ca_path::certificates(&dir).unwrap_err();
        assert!(err.contains("no PEM CA certificate"), "{err}");
        let ca = rcgen::generate_simple_self_signed(vec!["ca.example".to_owned()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["other.example".to_owned()]).unwrap();
        std::fs::write(dir.join("README"), "not a certificate").unwrap();
        std::fs::write(dir.join("a.pem"), ca.cert.pem()).unwrap();
        // A bundle with the same CA again and another one.
        std::fs::write(
            dir.join("bundle.crt"),
            format!("{}{}", ca.cert.pem(), other.cert.pem()),
        )
        .unwrap();
        let certs = crate::ca_path::certificates(&dir).unwrap();
        assert_eq!(certs, [ca.cert.der().to_vec(), other.cert.der().to_vec()]);
        let text = format!(
            "name = \"b\"\naddress = \"h\"\nprotocol = \"tls\"\nca_path = \"{}\"\n\
             [[topic]]\npattern = \"x\"\n",
            dir.display()
        );
        assert!(parse(&text).to_remote(1).is_ok());
        let plain = text.replace("protocol = \"tls\"\n", "");
        assert!(parse(&plain).check(1).unwrap_err().contains("ca_path"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
