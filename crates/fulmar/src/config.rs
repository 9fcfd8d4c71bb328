//! The `fulmar broker` configuration file (TOML) and its defaults.

use std::num::{NonZeroU16, NonZeroU32};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::logging::LogFormat;

/// The whole configuration file. Every section and key is optional; a key
/// that is not known is an error (so a typo is not silently ignored).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    /// `[[listener]]` tables, in order.
    #[serde(rename = "listener")]
    pub(crate) listeners: Vec<ListenerConfig>,
    /// `[limits]`.
    pub(crate) limits: LimitsConfig,
    /// `[auth]`.
    pub(crate) auth: AuthConfig,
    /// `[log]`.
    pub(crate) log: LogConfig,
    /// `[sys]`.
    pub(crate) sys: SysConfig,
    /// `[metrics]`.
    pub(crate) metrics: MetricsConfig,
    /// `[persistence]`.
    pub(crate) persistence: PersistenceConfig,
    /// `[cluster]`.
    pub(crate) cluster: ClusterSection,
    /// `[[bridge]]` tables, in order.
    #[serde(rename = "bridge", skip_serializing_if = "Vec::is_empty")]
    pub(crate) bridges: Vec<crate::bridges::BridgeConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listeners: vec![ListenerConfig::tcp("127.0.0.1:1883".to_owned())],
            limits: LimitsConfig::default(),
            auth: AuthConfig::default(),
            log: LogConfig::default(),
            sys: SysConfig::default(),
            metrics: MetricsConfig::default(),
            persistence: PersistenceConfig::default(),
            cluster: ClusterSection::default(),
            bridges: Vec::new(),
        }
    }
}

/// The transport of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Protocol {
    /// MQTT over TCP.
    Tcp,
    /// MQTT over TLS.
    Tls,
    /// MQTT over WebSocket.
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
        }
    }

    pub(crate) fn needs_certificate(self) -> bool {
        matches!(self, Self::Tls | Self::Wss)
    }

    pub(crate) fn is_websocket(self) -> bool {
        matches!(self, Self::Ws | Self::Wss)
    }
}

/// One `[[listener]]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenerConfig {
    /// `tcp`, `tls`, `ws` or `wss`.
    #[serde(default = "default_protocol")]
    pub(crate) protocol: Protocol,
    /// `ADDR:PORT`.
    pub(crate) bind: String,
    /// Certificate chain (PEM), for `tls` and `wss`.
    pub(crate) cert: Option<PathBuf>,
    /// Private key (PEM), for `tls` and `wss`.
    pub(crate) key: Option<PathBuf>,
    /// CA certificates (PEM) for client certificates (mutual TLS).
    pub(crate) client_ca: Option<PathBuf>,
    /// A directory whose PEM files hold CA certificates for client
    /// certificates (mosquitto's `capath`), instead of or besides `client_ca`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) client_ca_path: Option<PathBuf>,
    /// With client CAs: whether a client must present a certificate (default true).
    pub(crate) require_certificate: Option<bool>,
    /// With client CAs: certificate revocation lists (PEM) of the CA; a
    /// client certificate they revoke is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) crl_file: Option<PathBuf>,
    /// Lowest TLS version accepted: "1.2" (default) or "1.3".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tls_version: Option<String>,
    /// HTTP path, for `ws` and `wss`.
    pub(crate) path: Option<String>,
    /// Connections open at once through this listener (besides
    /// `limits.max_connections`, which counts every listener).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_connections: Option<usize>,
    /// Maximum QoS of this listener's clients, instead of `limits.maximum_qos`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) maximum_qos: Option<u8>,
    /// Topic Alias Maximum of this listener's clients, instead of
    /// `limits.topic_alias_maximum`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) topic_alias_maximum: Option<u16>,
    /// The kernel's send buffer of each connection (`SO_SNDBUF`), in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) send_buffer_size: Option<u32>,
    /// The kernel's receive buffer of each connection (`SO_RCVBUF`), in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) receive_buffer_size: Option<u32>,
    /// The prefix of this listener's clients' topics (mosquitto's
    /// `mount_point`; see `fulmar_broker::Listener::mount_point`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) mount_point: Option<String>,
}

impl ListenerConfig {
    /// Whether the listener asks for client certificates: it names their
    /// CAs (`client_ca` or `client_ca_path`).
    pub(crate) fn has_client_ca(&self) -> bool {
        self.client_ca.is_some() || self.client_ca_path.is_some()
    }

    /// A plain TCP listener on `bind` (`ADDR:PORT`).
    pub(crate) fn tcp(bind: String) -> Self {
        Self {
            protocol: Protocol::Tcp,
            bind,
            cert: None,
            key: None,
            client_ca: None,
            client_ca_path: None,
            require_certificate: None,
            crl_file: None,
            tls_version: None,
            path: None,
            max_connections: None,
            maximum_qos: None,
            topic_alias_maximum: None,
            send_buffer_size: None,
            receive_buffer_size: None,
            mount_point: None,
        }
    }
}

fn default_protocol() -> Protocol {
    Protocol::Tcp
}

/// `[limits]`: the broker's [`fulmar_broker::Limits`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LimitsConfig {
    pub(crate) max_connections: usize,
    pub(crate) max_packet_size: NonZeroU32,
    pub(crate) max_read_ahead_bytes: usize,
    pub(crate) max_subscriptions_per_client: usize,
    pub(crate) max_subscription_bytes_per_client: usize,
    pub(crate) max_queued_messages: usize,
    pub(crate) max_queued_bytes: usize,
    pub(crate) max_retained_messages: usize,
    pub(crate) max_retained_bytes: usize,
    pub(crate) max_delayed_will_bytes: usize,
    pub(crate) max_offline_bytes: usize,
    pub(crate) max_topic_length: usize,
    pub(crate) max_topic_levels: usize,
    /// Largest payload of a client's PUBLISH; 0: no limit but the packet's.
    pub(crate) max_payload_size: usize,
    pub(crate) assign_client_ids: bool,
    pub(crate) assigned_client_id_prefix: String,
    pub(crate) queue_qos0_offline: bool,
    pub(crate) retain_available: bool,
    pub(crate) connect_timeout_secs: u64,
    /// Longest keep alive of an MQTT 5.0 client; 0: no maximum.
    pub(crate) max_keep_alive_secs: u16,
    pub(crate) receive_maximum: NonZeroU16,
    pub(crate) max_outbound_inflight: NonZeroU16,
    pub(crate) topic_alias_maximum: u16,
    pub(crate) maximum_qos: u8,
    pub(crate) wildcard_subscription_available: bool,
    pub(crate) shared_subscription_available: bool,
    pub(crate) subscription_identifiers_available: bool,
    pub(crate) max_session_expiry_secs: u32,
    pub(crate) max_sessions: usize,
    pub(crate) overload_policy: Overload,
    pub(crate) backpressure_timeout_secs: u64,
    /// Milliseconds a paced publisher waits at most.
    pub(crate) pacing_timeout_ms: u64,
    /// Milliseconds of idleness after which a plain TCP connection
    /// hibernates; 0: never.
    pub(crate) hibernate_after_ms: u64,
}

/// `limits.overload_policy`: [`fulmar_broker::OverloadPolicy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Overload {
    /// Drop and count.
    Drop,
    /// Hold the publisher back.
    Backpressure,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let limits = fulmar_broker::Limits::default();
        Self {
            max_connections: limits.max_connections,
            max_packet_size: limits.max_packet_size,
            max_read_ahead_bytes: limits.max_read_ahead_bytes,
            max_subscriptions_per_client: limits.max_subscriptions_per_client,
            max_subscription_bytes_per_client: limits.max_subscription_bytes_per_client,
            max_queued_messages: limits.max_queued_messages,
            max_queued_bytes: limits.max_queued_bytes,
            max_retained_messages: limits.max_retained_messages,
            max_retained_bytes: limits.max_retained_bytes,
            max_delayed_will_bytes: limits.max_delayed_will_bytes,
            max_offline_bytes: limits.max_offline_bytes,
            max_topic_length: limits.max_topic_length,
            max_topic_levels: limits.max_topic_levels,
            max_payload_size: limits.max_payload_size.unwrap_or(0),
            assign_client_ids: limits.assign_client_ids,
            assigned_client_id_prefix: limits.assigned_client_id_prefix,
            queue_qos0_offline: limits.queue_qos0_offline,
            retain_available: limits.retain_available,
            connect_timeout_secs: limits.connect_timeout.as_secs(),
            max_keep_alive_secs: limits.max_keep_alive.map_or(0, NonZeroU16::get),
            receive_maximum: limits.receive_maximum,
            max_outbound_inflight: limits.max_outbound_inflight,
            topic_alias_maximum: limits.topic_alias_maximum,
            maximum_qos: u8::from(limits.maximum_qos),
            wildcard_subscription_available: limits.wildcard_subscription_available,
            shared_subscription_available: limits.shared_subscription_available,
            subscription_identifiers_available: limits.subscription_identifiers_available,
            max_session_expiry_secs: limits.max_session_expiry,
            max_sessions: limits.max_sessions,
            overload_policy: match limits.overload_policy {
                fulmar_broker::OverloadPolicy::Backpressure => Overload::Backpressure,
                _ => Overload::Drop,
            },
            backpressure_timeout_secs: limits.backpressure_timeout.as_secs(),
            pacing_timeout_ms: u64::try_from(limits.pacing_timeout.as_millis()).unwrap_or(u64::MAX),
            hibernate_after_ms: limits
                .hibernate_after
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

impl LimitsConfig {
    /// The broker limits.
    pub(crate) fn to_limits(&self) -> Result<fulmar_broker::Limits, String> {
        let mut limits = fulmar_broker::Limits::default();
        limits.max_connections = self.max_connections;
        limits.max_packet_size = self.max_packet_size;
        limits.max_read_ahead_bytes = self.max_read_ahead_bytes;
        limits.max_subscriptions_per_client = self.max_subscriptions_per_client;
        limits.max_subscription_bytes_per_client = self.max_subscription_bytes_per_client;
        limits.max_queued_messages = self.max_queued_messages;
        limits.max_queued_bytes = self.max_queued_bytes;
        limits.max_retained_messages = self.max_retained_messages;
        limits.max_retained_bytes = self.max_retained_bytes;
        limits.max_delayed_will_bytes = self.max_delayed_will_bytes;
        limits.max_offline_bytes = self.max_offline_bytes;
        if self.max_topic_length == 0 || self.max_topic_levels == 0 {
            return Err(format!(
                "limits.max_topic_length = {}, max_topic_levels = {}: must be at least 1",
                self.max_topic_length, self.max_topic_levels
            ));
        }
        limits.max_topic_length = self.max_topic_length;
        limits.max_topic_levels = self.max_topic_levels;
        limits.max_payload_size = Some(self.max_payload_size).filter(|most| *most > 0);
        limits.assign_client_ids = self.assign_client_ids;
        limits
            .assigned_client_id_prefix
            .clone_from(&self.assigned_client_id_prefix);
        limits.queue_qos0_offline = self.queue_qos0_offline;
        limits.retain_available = self.retain_available;
        if self.connect_timeout_secs == 0 {
            return Err(
                "limits.connect_timeout_secs = 0: must be at least 1 (the time a client \
                        has to send its CONNECT)"
                    .into(),
            );
        }
        limits.connect_timeout = std::time::Duration::from_secs(self.connect_timeout_secs);
        limits.max_keep_alive = NonZeroU16::new(self.max_keep_alive_secs);
        limits.receive_maximum = self.receive_maximum;
        limits.max_outbound_inflight = self.max_outbound_inflight;
        limits.topic_alias_maximum = self.topic_alias_maximum;
        limits.maximum_qos = fulmar_codec::QoS::try_from(self.maximum_qos).map_err(|_| {
            format!(
                "limits.maximum_qos = {}: must be 0, 1 or 2",
                self.maximum_qos
            )
        })?;
        limits.wildcard_subscription_available = self.wildcard_subscription_available;
        limits.shared_subscription_available = self.shared_subscription_available;
        limits.subscription_identifiers_available = self.subscription_identifiers_available;
        limits.max_session_expiry = self.max_session_expiry_secs;
        limits.max_sessions = self.max_sessions;
        limits.overload_policy = match self.overload_policy {
            Overload::Drop => fulmar_broker::OverloadPolicy::DropAndCount,
            Overload::Backpressure => fulmar_broker::OverloadPolicy::Backpressure,
        };
        limits.backpressure_timeout =
            std::time::Duration::from_secs(self.backpressure_timeout_secs);
        limits.pacing_timeout = std::time::Duration::from_millis(self.pacing_timeout_ms);
        limits.hibernate_after = match self.hibernate_after_ms {
            0 => None,
            ms => Some(std::time::Duration::from_millis(ms)),
        };
        Ok(limits)
    }
}

/// `[auth]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AuthConfig {
    /// A mosquitto_passwd file.
    pub(crate) password_file: Option<PathBuf>,
    /// A mosquitto acl_file.
    pub(crate) acl_file: Option<PathBuf>,
    /// Whether clients without a user name are accepted (default: yes without
    /// a password file, no with one).
    pub(crate) allow_anonymous: Option<bool>,
    /// A client that presented a certificate (on a listener with a client
    /// CA) is its common name for the ACL, without a password.
    pub(crate) use_identity_as_username: bool,
    /// Only clients whose identifier starts with this are accepted
    /// (mosquitto's `clientid_prefixes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) client_id_prefix: Option<String>,
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogConfig {
    /// A tracing filter: `error`, `warn`, `info`, `debug`, `trace`, or per target.
    pub(crate) level: String,
    /// `text` or `json`.
    pub(crate) format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// `[sys]`: the `$SYS/` topics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SysConfig {
    /// Seconds between `$SYS` updates; 0 turns them off.
    pub(crate) interval_secs: u64,
}

/// `[metrics]`: Prometheus metrics over HTTP.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MetricsConfig {
    /// `ADDR:PORT` of the HTTP listener serving `/metrics`; none by default.
    pub(crate) bind: Option<String>,
}

/// `[persistence]`: the on-disk store.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PersistenceConfig {
    /// Keep persistent sessions and retained messages on disk.
    pub(crate) enabled: bool,
    /// The store's directory (`--data-dir` takes precedence).
    pub(crate) dir: PathBuf,
    /// `immediate` or `periodic`.
    pub(crate) durability: DurabilityConfig,
    /// With `periodic`: milliseconds between commits.
    pub(crate) flush_interval_ms: u64,
}

impl Default for PersistenceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: PathBuf::from("fulmar-data"),
            durability: DurabilityConfig::Immediate,
            flush_interval_ms: 1000,
        }
    }
}

/// `[persistence] durability`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DurabilityConfig {
    /// Acknowledgements wait for the commit (group commit).
    Immediate,
    /// Commits every `flush_interval_ms`; acknowledgements do not wait.
    Periodic,
}

impl PersistenceConfig {
    /// The broker's [`fulmar_broker::Durability`].
    pub(crate) fn durability(&self) -> fulmar_broker::Durability {
        match self.durability {
            DurabilityConfig::Immediate => fulmar_broker::Durability::Immediate,
            DurabilityConfig::Periodic => fulmar_broker::Durability::Periodic(
                std::time::Duration::from_millis(self.flush_interval_ms.max(1)),
            ),
        }
    }
}

/// This machine's host name ("fulmar" if unknown), for default identifiers
/// (a cluster node's, a bridge's client identifier).
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "fulmar".to_owned())
}

/// `[cluster]`: several brokers as one over NATS JetStream (fulmar-cluster).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ClusterSection {
    /// NATS server URLs; none: a single node (`--cluster` adds one).
    pub(crate) urls: Vec<String>,
    /// This node's name, unique in the cluster (default: host name and pid).
    pub(crate) node_id: Option<String>,
    /// NATS user and password.
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
    /// NATS token.
    pub(crate) token: Option<String>,
    /// NATS `.creds` file.
    pub(crate) creds_file: Option<PathBuf>,
    /// TLS to NATS: required, extra CA (PEM).
    pub(crate) tls: bool,
    pub(crate) ca_file: Option<PathBuf>,
    /// Replicas of the JetStream stream and bucket the cluster creates.
    pub(crate) replicas: usize,
    /// First token of the cluster's subjects, streams and buckets.
    pub(crate) subject_prefix: String,
    /// Where persistent sessions live: in JetStream, so that another node
    /// resumes them whole when this one dies, or in the local store.
    pub(crate) session_store: SessionStoreKind,
    /// How long a connecting client's node waits for each step of taking
    /// its session from another node.
    pub(crate) session_timeout_ms: u64,
}

/// `[cluster] session_store`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SessionStoreKind {
    /// The cluster's state stream in JetStream.
    #[default]
    Jetstream,
    /// The node's own store (`[persistence]`).
    Local,
}

impl Default for ClusterSection {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            node_id: None,
            user: None,
            password: None,
            token: None,
            creds_file: None,
            tls: false,
            ca_file: None,
            replicas: 1,
            subject_prefix: "fulmar".to_owned(),
            session_store: SessionStoreKind::Jetstream,
            session_timeout_ms: 5000,
        }
    }
}

impl ClusterSection {
    /// The fulmar-cluster configuration; `None` without NATS URLs.
    pub(crate) fn to_config(&self) -> Result<Option<fulmar_cluster::ClusterConfig>, String> {
        let Some(first) = self.urls.first() else {
            return Ok(None);
        };
        // Default: host name and process id (two nodes may share a host).
        let node_id = match &self.node_id {
            Some(id) => id.clone(),
            None => format!("{}-{}", host_name(), std::process::id()),
        };
        let mut config = fulmar_cluster::ClusterConfig::new(first.clone(), node_id);
        config.urls.clone_from(&self.urls);
        config.replicas = self.replicas.max(1);
        config.subject_prefix.clone_from(&self.subject_prefix);
        if self.session_timeout_ms == 0 {
            return Err("[cluster] session_timeout_ms: must be at least 1".to_owned());
        }
        config.session_timeout = std::time::Duration::from_millis(self.session_timeout_ms);
        config.credentials = match (&self.user, &self.password, &self.token, &self.creds_file) {
            (Some(user), password, None, None) => Some(fulmar_cluster::Credentials::UserPassword {
                user: user.clone(),
                password: password.clone().unwrap_or_default(),
            }),
            (None, None, Some(token), None) => {
                Some(fulmar_cluster::Credentials::Token(token.clone()))
            }
            (None, None, None, Some(file)) => {
                Some(fulmar_cluster::Credentials::CredsFile(file.clone()))
            }
            (None, None, None, None) => None,
            _ => {
                return Err(
                    "[cluster]: give one of user (+ password), token or creds_file".to_owned(),
                );
            }
        };
        if self.tls || self.ca_file.is_some() {
            let mut tls = fulmar_cluster::TlsOptions::required();
            tls.ca_files.extend(self.ca_file.clone());
            config.tls = Some(tls);
        }
        Ok(Some(config))
    }
}

/// The commented default configuration, as `--print-default-config` prints
/// it. It parses back to [`Config::default`] (tested).
pub(crate) const DEFAULT_CONFIG: &str = r#"# fulmar broker configuration (TOML). Every key is optional; the values
# below are the defaults. Unknown keys are an error.

# One [[listener]] table per socket. protocol: "tcp", "tls", "ws" (WebSocket)
# or "wss" (WebSocket over TLS). `fulmar broker -p PORT` overrides the port
# of the first listener. Relative paths are relative to this file. The cert,
# key, client_ca and crl_file files and the client_ca_path directory are read
# again on SIGHUP (certificate renewal): new connections use them, open ones
# keep theirs.
[[listener]]
protocol = "tcp"
bind = "127.0.0.1:1883"
# cert = "server.pem"           # tls / wss: certificate chain (PEM, leaf first)
# key = "server.key"            # tls / wss: private key (PEM)
# client_ca = "ca.pem"          # tls / wss: ask for client certificates from this CA
# client_ca_path = "cas/"       # ... or from the CAs of the PEM files in this directory
# require_certificate = true    # with client CAs: refuse clients without one
# crl_file = "crl.pem"          # with client CAs: refuse the certificates these CRLs revoke
# tls_version = "1.2"           # lowest TLS version: "1.2" or "1.3"
# path = "/mqtt"                # ws / wss: HTTP path (default "/mqtt"; "*": any path)
# What this listener's clients get instead of the [limits] below:
# max_connections = 1000        # open at once through it (limits.max_connections still counts all)
# maximum_qos = 1               # instead of limits.maximum_qos
# topic_alias_maximum = 0       # instead of limits.topic_alias_maximum
# The kernel's buffers of each of its connections, in bytes (default: the
# kernel's own sizing, on Linux up to 4 MiB to send and more to receive per
# connection; a client that stops reading holds that much of them):
# send_buffer_size = 65536      # SO_SNDBUF (Linux doubles it)
# receive_buffer_size = 65536   # SO_RCVBUF (Linux doubles it)
# Isolates this listener's clients under a prefix (mosquitto's mount_point):
# it is put before the topics they publish and subscribe to, and taken off
# the topics sent to them; they see nothing outside it. Taken verbatim:
# "tenant1/" makes a/b tenant1/a/b, "tenant1" makes it tenant1a/b. The
# authorizer (acl_file) sees the full topics.
# mount_point = "tenant1/"

[limits]
# Open network connections at once.
max_connections = 10000
# Largest packet accepted from a client, in bytes.
max_packet_size = 1048576
# Bytes all connections together may set aside for the rest of packets over
# 64 KiB before those bytes arrive (read in place, not copied as they come);
# beyond it, such a packet's buffer grows as its bytes arrive.
max_read_ahead_bytes = 67108864
# Subscriptions one client may hold.
max_subscriptions_per_client = 1024
# Memory the subscriptions of one client may take: each counts its filter's
# bytes, 256 bytes and 48 per topic level (a 128-level filter about 6.5 KB).
max_subscription_bytes_per_client = 1048576
# Messages queued for one session (offline or not yet sent); more are dropped.
# A QoS 1/2 publisher whose messages take every queue they go to over a
# quarter of this is paced (see pacing_timeout_ms).
max_queued_messages = 1000
# Bytes (topic, payload and properties) queued for one session (offline, or
# not yet sent); a message beyond is dropped and counted, and a QoS 1/2
# publisher is not read while the queue holds more than a quarter of this (a
# QoS 0 publisher: while every queue its message went to does).
max_queued_bytes = 16777216
# Retained messages kept at once; a retained PUBLISH for a new topic beyond it
# is refused (MQTT 5.0 0x97 Quota exceeded; QoS 0 and 3.1.1: dropped, counted).
max_retained_messages = 100000
# Bytes (topic, payload and properties, plus 512 per message and 64 per level of
# its topic for the retained index) of all retained messages together; a
# retained PUBLISH that would go beyond is refused the same way (one is always
# let into an empty store).
max_retained_bytes = 1073741824
# Bytes of the MQTT 5.0 wills that may outlive their connection (a Will Delay
# Interval and a Session Expiry Interval), all clients together, from the
# CONNECT until each is published or dropped (each counts its topic, payload
# and properties, plus 256 bytes). A CONNECT whose will would go beyond gets
# CONNACK 0x97 Quota exceeded.
max_delayed_will_bytes = 268435456
# Bytes of the messages queued for absent clients, all sessions together (each
# counts its topic, payload and properties, plus 256 bytes); beyond, a message
# for an absent client is dropped and counted, as for a full queue.
max_offline_bytes = 1073741824
# Longest topic name or filter in bytes, and most levels (`a/b/c` has 3). A
# PUBLISH beyond gets MQTT 5.0 0x90 Topic Name invalid (QoS 0 and 3.1.1:
# dropped and counted); a filter beyond, SUBACK 0x8F (3.1.1: 0x80).
max_topic_length = 65535
max_topic_levels = 128
# Largest payload of a PUBLISH from a client, in bytes: a larger one is
# acknowledged and dropped (MQTT 5.0 PUBACK/PUBREC 0x97 Quota exceeded; QoS 0
# and 3.1.1: dropped, counted), the connection stays; a CONNECT with a larger
# will is refused (0x95 Packet too large; 3.1.1: closed). Not announced to
# clients (max_packet_size is). 0: no limit but max_packet_size.
max_payload_size = 0
# A client without a Client Identifier is given one; false refuses it (MQTT 5.0
# CONNACK 0x85 Client Identifier not valid; 3.1.1: 2 Identifier rejected).
assign_client_ids = true
# How the identifiers given to such clients begin (a unique number follows).
assigned_client_id_prefix = "fulmar-"
# QoS 0 messages for a kept session whose client is away are queued for it too
# (within the limits above; in memory, not in the store); false: dropped.
queue_qos0_offline = false
# Retained messages are kept; false refuses them: MQTT 5.0 clients are told in
# CONNACK, and a retained PUBLISH closes the connection (5.0: DISCONNECT 0x9A
# Retain not supported), a retained will refuses the CONNECT.
retain_available = true
# Seconds a client has to send CONNECT.
connect_timeout_secs = 10
# Longest keep alive (seconds) of an MQTT 5.0 client: one asking for more, or
# for none (0), is told this one (Server Keep Alive in CONNACK) and held to it.
# A 3.1.1 client cannot be told: its own holds. 0: no maximum.
max_keep_alive_secs = 0
# Receive Maximum announced to MQTT 5.0 clients and enforced for them.
receive_maximum = 64
# QoS 1/2 messages sent to one client and not yet acknowledged, at most (an
# MQTT 5.0 client's Receive Maximum bounds them too); the rest wait in its queue.
max_outbound_inflight = 256
# Topic Alias Maximum announced to MQTT 5.0 clients.
topic_alias_maximum = 16
# Highest QoS granted: 0, 1 or 2.
maximum_qos = 2
# Features a client may use; false refuses them. MQTT 5.0 clients are told in
# CONNACK, and using a refused feature anyway is a protocol error (DISCONNECT
# 0xA2, 0x9E, 0xA1). MQTT 3.1.1 clients get SUBACK 0x80 for a wildcard or a
# shared filter (3.1.1 has no subscription identifiers).
wildcard_subscription_available = true
shared_subscription_available = true
subscription_identifiers_available = true
# Longest Session Expiry Interval granted, in seconds (4294967295: never expires).
max_session_expiry_secs = 4294967295
# Sessions held at once, connected or not (those kept for absent clients
# included); a CONNECT that would start one more is refused (MQTT 5.0 0x97
# Quota exceeded; 3.1.1: 3 Server unavailable). Resuming one is never refused.
max_sessions = 100000
# A QoS 1/2 message for a connected subscriber whose queues are full:
# "drop" (and count it) or "backpressure" (the publisher waits, its message
# unacknowledged, for at most backpressure_timeout_secs, then is disconnected).
overload_policy = "drop"
backpressure_timeout_secs = 30
# A publisher whose messages take every queue they go to over a quarter of
# max_queued_bytes (at most 256 KiB; QoS 1/2: any queue) or of
# max_queued_messages (QoS 1/2) is paced (QoS 1/2 under "drop": checked after
# each message, within a burst too): the broker reads nothing more from it
# until those queues are back under that level (it is woken once they are
# down to half of it), for at most
# this long (milliseconds) and half its keep alive. A queue that has not
# drained by then is not waited on again until its subscriber takes a message.
pacing_timeout_ms = 2000
# A plain TCP connection idle this long (milliseconds) hibernates: its task
# ends and one thread watches its socket until it is needed again, so an idle
# connection holds less memory. A new connection hibernates after 1/256 of
# this (at least 10 ms), twice as long after each wake-up, up to this. 0: never.
hibernate_after_ms = 5000

[auth]
# This section and both files are read again on SIGHUP (`kill -HUP PID`); a
# file that does not load is logged and the previous version stays (an ACL
# file named for a broker started without one waits for a restart). Clients
# the new settings refuse are disconnected: users no longer in the password
# file, anonymous clients once allow_anonymous is off. Other clients stay
# connected; their subscriptions are checked against a new ACL and the ones
# it denies are withdrawn.
# A mosquitto_passwd file (user:$7$... PBKDF2-SHA512, or $6$ SHA-512 lines).
# password_file = "passwd"
# A mosquitto acl_file: `user NAME`, `topic [read|write|readwrite|deny] FILTER`,
# `pattern [read|write|readwrite|deny] FILTER` with %c (client id) and %u (user).
# `read` is checked for each message delivered: a subscription wider than the
# reads granted is accepted and gets only what its user may read.
# acl_file = "acl"
# Clients without a user name: accepted by default without a password file,
# refused by default with one.
# allow_anonymous = true
# A client that presented a certificate (on a listener with client CAs) is
# the certificate's common name, for the ACL and the logs, without a password.
use_identity_as_username = false
# Only clients whose identifier starts with this are accepted; the others get
# CONNACK 0x87 Not authorized (3.1.1: 5), a client without an identifier too.
# Read again on SIGHUP, for new connections.
# client_id_prefix = "sensor-"

[log]
# error, warn, info, debug, trace, or a tracing filter such as
# "fulmar_broker=debug,info". RUST_LOG and -v take precedence.
level = "info"
# "text" or "json" (--log-format takes precedence).
format = "text"

[sys]
# Seconds between updates of the retained $SYS/broker/... topics (version,
# uptime, clients, messages, bytes, subscriptions, shared subscriptions,
# retained, load averages per minute over 1, 5 and 15 minutes; a topic is
# published again when its value changed); 0: none.
interval_secs = 0

[metrics]
# Prometheus metrics over HTTP at http://BIND/metrics: connections, clients,
# sessions, subscriptions, retained and dropped messages, packets, messages
# and bytes in and out; per [[bridge]], whether it is connected and its
# messages sent, received, refused and dropped. Off by default.
# bind = "127.0.0.1:9100"

[persistence]
# Keep persistent sessions (subscriptions, queued and in-flight QoS 1/2
# messages) and retained messages on disk, and recover them at start.
enabled = true
# Directory of the store; relative to this file (without a file: to the
# working directory). --data-dir takes precedence.
dir = "fulmar-data"
# "immediate": a QoS 1/2 message is acknowledged (PUBACK/PUBREC), and a
# subscription confirmed, only once it is on disk; commits are shared by all
# connections. "periodic": written every flush_interval_ms, acknowledgements
# do not wait (a crash loses up to one interval).
durability = "immediate"
flush_interval_ms = 1000

[cluster]
# Several fulmar brokers as one over NATS with JetStream (nats-server -js):
# messages, shared subscriptions, retained messages and sessions span the
# nodes. No URL: a single node, no NATS needed.
# `fulmar broker --cluster nats://127.0.0.1:4222` sets the first URL.
urls = []
# node_id = "broker-1"          # unique per node; default: host name and pid
# user = "fulmar"               # NATS credentials: user + password,
# password = "secret"           # or token = "...", or creds_file = "x.creds"
# tls = false                   # require TLS to NATS
# ca_file = "nats-ca.pem"       # extra CA for the NATS servers
replicas = 1                    # JetStream replicas (3 on a NATS cluster)
subject_prefix = "fulmar"       # first token of the cluster's subjects
# With [persistence] enabled, where persistent sessions (subscriptions,
# queued and in-flight QoS 1/2 messages) are kept: "jetstream" (a client
# whose node dies resumes its whole session on another node) or "local"
# (the node's own store: only its subscriptions come back elsewhere).
# Retained messages live in JetStream either way.
session_store = "jetstream"
session_timeout_ms = 5000       # each step of taking a session from a node

# Bridges to other MQTT brokers, as mosquitto's `connection` sections: one
# [[bridge]] table per remote broker, with one [[bridge.topic]] table per
# topic pattern. What clients publish here on an "out" pattern is published
# there; what is published there on an "in" pattern comes here ("both": the
# two). A prefix on each side replaces the other's on the way. The bridge
# reconnects by itself and keeps a session on the remote broker (clean_start
# false), so QoS 1/2 messages are not lost while it is away. None by default.
# [[bridge]]
# name = "cloud"                # in logs; default client id: HOSTNAME.NAME
# address = "127.0.0.1:1884"    # host:port (port 1883, 8883 for tls, if left out)
# fallback_addresses = []       # tried in turn when the one before fails; address first again after each connection
# protocol = "tcp"              # tcp, tls, ws or wss
# path = "/mqtt"                # ws / wss: HTTP path on the remote
# version = "5"                 # "5", "3.1.1" or "3.1"
# client_id = "edge-7"
# clean_start = false           # true: a new session at each connection
# session_expiry_secs = 3600    # 5.0: how long the remote keeps the session (not with clean_start)
# keep_alive_secs = 60
# username = "edge"
# password = "secret"
# ca_file = "cloud-ca.pem"      # tls / wss: CA of the remote (default: system roots)
# ca_path = "/etc/ssl/certs"    # tls / wss: or the CAs of a directory's PEM files
# cert = "edge.pem"             # tls / wss: client certificate and key
# key = "edge.key"
# tls_version = "1.2"           # tls / wss: lowest TLS version, "1.2" or "1.3" (mosquitto's bridge_tls_version)
# try_private = true            # 3.1.1: say it is a bridge (mosquitto's option)
# outgoing_retain = true        # false: messages go to the remote without the retain flag (mosquitto's bridge_outgoing_retain)
# queue_while_down = "all"      # what waits for the remote while the link is down: all, qos12 or none
# max_inflight = 64             # QoS 1/2 unacknowledged (the bridge keeps 60 at most on their way whatever this says; 5.0: and the remote's Receive Maximum)
# max_queued_messages = 1000    # waiting for the remote; more are dropped
# max_queued_bytes = 16777216   # bytes waiting for the remote, likewise
# notifications = true          # also publish the state (1/0, retained) on the remote, with a will of 0
# local_notifications = true    # publish the state (1/0, retained, QoS 1) here
# notification_topic = "$SYS/broker/connection/cloud/state"   # default: .../NAME/state
# [[bridge.topic]]
# pattern = "sensors/#"
# direction = "out"             # in, out or both
# qos = 1                       # highest QoS forwarded, and of the subscription
# local_prefix = ""
# remote_prefix = "site-7/"
"#;

impl Config {
    /// Parses a configuration; relative file paths are taken relative to `base`.
    pub(crate) fn parse(text: &str, base: &Path) -> Result<Self, String> {
        let mut config: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        for path in [&mut config.auth.password_file, &mut config.auth.acl_file]
            .into_iter()
            .flatten()
        {
            *path = base.join(&*path);
        }
        config.persistence.dir = base.join(&config.persistence.dir);
        for path in [&mut config.cluster.creds_file, &mut config.cluster.ca_file]
            .into_iter()
            .flatten()
        {
            *path = base.join(&*path);
        }
        for bridge in &mut config.bridges {
            bridge.resolve(base);
        }
        for listener in &mut config.listeners {
            for path in [
                &mut listener.cert,
                &mut listener.key,
                &mut listener.client_ca,
                &mut listener.client_ca_path,
                &mut listener.crl_file,
            ]
            .into_iter()
            .flatten()
            {
                *path = base.join(&*path);
            }
        }
        Ok(config)
    }

    /// Reads and parses the file at `path`: TOML, or mosquitto's format for
    /// a name ending in `.conf` (see [`crate::mosquitto_conf`]; what it
    /// ignores is printed to stderr).
    pub(crate) fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the configuration {}: {e}", path.display()))?;
        // Absolute: `--print-config` prints the paths as they are here,
        // and a file's relative paths would be taken relative to wherever
        // the printout is saved.
        let base = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let base = std::path::absolute(base)
            .map_err(|e| format!("cannot read the configuration {}: {e}", path.display()))?;
        let base = base.as_path();
        let bad = |e: String| format!("bad configuration {}: {}", path.display(), e.trim_end());
        if path.extension().is_some_and(|e| e == "conf") {
            let (config, notes) = crate::mosquitto_conf::parse(&text, base).map_err(bad)?;
            for note in notes {
                eprintln!("fulmar: {}: {note}", path.display());
            }
            return Ok(config);
        }
        Self::parse(&text, base).map_err(bad)
    }

    /// Checks what the broker cannot do or what is missing, with the key at
    /// fault in the message: certificates of TLS listeners, settings that
    /// fulmar-broker does not support yet.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.listeners.is_empty() {
            return Err("no [[listener]]: the broker would accept no connection".to_owned());
        }
        crate::logging::check_level(&self.log.level).map_err(|e| format!("[log] {e}"))?;
        for (i, listener) in self.listeners.iter().enumerate() {
            let at = format!("listener {} ({})", i + 1, listener.bind);
            check_bind(&listener.bind).map_err(|e| format!("{at}: bind: {e}"))?;
            if let Some(prefix) = &listener.mount_point
                && (prefix.is_empty() || prefix.contains(['+', '#', '\0']))
            {
                return Err(format!(
                    "{at}: mount_point = {prefix:?}: must be a non-empty start of a topic \
                     name, without '+', '#' or U+0000"
                ));
            }
            let protocol = listener.protocol;
            let tls_files = [
                ("cert", &listener.cert),
                ("key", &listener.key),
                ("client_ca", &listener.client_ca),
                ("client_ca_path", &listener.client_ca_path),
            ];
            if protocol.needs_certificate() {
                for (key, file) in tls_files {
                    match file {
                        None if key == "cert" || key == "key" => {
                            return Err(format!(
                                "{at}: protocol = \"{}\" needs `{key}`",
                                protocol.name()
                            ));
                        }
                        None => {}
                        Some(file) => {
                            if let Err(e) = std::fs::metadata(file) {
                                return Err(format!("{at}: {key} = {}: {e}", file.display()));
                            }
                        }
                    }
                }
                if listener.require_certificate.is_some() && !listener.has_client_ca() {
                    return Err(format!(
                        "{at}: `require_certificate` needs `client_ca` or `client_ca_path`"
                    ));
                }
                if let Some(crl) = &listener.crl_file {
                    if !listener.has_client_ca() {
                        return Err(format!(
                            "{at}: `crl_file` needs `client_ca` or `client_ca_path`"
                        ));
                    }
                    if let Err(e) = std::fs::metadata(crl) {
                        return Err(format!("{at}: crl_file = {}: {e}", crl.display()));
                    }
                }
                match listener.tls_version.as_deref() {
                    None | Some("1.2" | "1.3") => {}
                    Some(other) => {
                        return Err(format!("{at}: tls_version = {other:?}: \"1.2\" or \"1.3\""));
                    }
                }
            } else if let Some((key, _)) = tls_files.iter().find(|(_, f)| f.is_some()) {
                return Err(format!("{at}: `{key}` needs protocol \"tls\" or \"wss\""));
            } else if listener.crl_file.is_some() || listener.tls_version.is_some() {
                return Err(format!(
                    "{at}: `crl_file` and `tls_version` need protocol \"tls\" or \"wss\""
                ));
            } else if listener.require_certificate.is_some() {
                return Err(format!(
                    "{at}: `require_certificate` needs protocol \"tls\" or \"wss\""
                ));
            }
            if listener.path.is_some() && !protocol.is_websocket() {
                return Err(format!("{at}: `path` needs protocol \"ws\" or \"wss\""));
            }
            if let Some(qos) = listener.maximum_qos.filter(|q| *q > 2) {
                return Err(format!("{at}: maximum_qos = {qos}: must be 0, 1 or 2"));
            }
        }
        for (i, bridge) in self.bridges.iter().enumerate() {
            bridge.check(i + 1)?;
            if self.bridges[..i].iter().any(|b| b.name == bridge.name) {
                return Err(format!(
                    "bridge {}: two bridges are named {:?}",
                    i + 1,
                    bridge.name
                ));
            }
        }
        self.limits.to_limits()?;
        Ok(())
    }
}

/// Whether `bind` is an address with a port (`127.0.0.1:1883`, `[::1]:1883`,
/// `localhost:1883`); the host is resolved only when the broker starts.
fn check_bind(bind: &str) -> Result<(), String> {
    if bind.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    match bind.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.ends_with(':') => port
            .parse::<u16>()
            .map(drop)
            .map_err(|_| format!("{port:?} is not a port (0 to 65535)")),
        _ => Err("an address and a port are needed, as in \"127.0.0.1:1883\"".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_addresses_need_a_port() {
        for good in [
            "127.0.0.1:1883",
            "[::1]:0",
            "localhost:8883",
            "0.0.0.0:65535",
        ] {
            assert!(check_bind(good).is_ok(), "{good}");
        }
        for bad in [
            "127.0.0.1",
            "127.0.0.1:99999",
            "localhost",
            ":1883",
            "::1",
            "[::1]",
        ] {
            assert!(check_bind(bad).is_err(), "{bad}");
        }
    }

    // (mount point, no spec statement)
    #[test]
    fn a_listener_may_have_a_mount_point() {
        let c = Config::parse(
            "[[listener]]\nbind = \"127.0.0.1:1883\"\n\n\
             [[listener]]\nbind = \"127.0.0.1:1884\"\nmount_point = \"tenant1/\"\n",
            Path::new("."),
        )
        .unwrap();
        c.check().unwrap();
        let mounts: Vec<_> = c
            .listeners
            .iter()
            .map(|l| l.mount_point.as_deref())
            .collect();
        assert_eq!(mounts, [None, Some("tenant1/")]);
        for wrong in ["", "a/+/", "a/#"] {
            let c = Config::parse(
                &format!("[[listener]]\nbind = \"127.0.0.1:1883\"\nmount_point = {wrong:?}\n"),
                Path::new("."),
            )
            .unwrap();
            let e = c.check().unwrap_err();
            assert!(e.contains("mount_point"), "{e}");
        }
    }

    #[test]
    fn the_printed_default_parses_back_to_the_defaults() {
        let mut parsed = Config::parse(DEFAULT_CONFIG, Path::new("/etc/fulmar")).unwrap();
        assert_eq!(parsed.persistence.dir, Path::new("/etc/fulmar/fulmar-data"));
        parsed.persistence.dir = Config::default().persistence.dir;
        assert_eq!(parsed, Config::default());
        parsed.check().unwrap();
    }

    #[test]
    fn limits_map_onto_the_broker_limits() {
        let defaults = LimitsConfig::default().to_limits().unwrap();
        assert_eq!(defaults, fulmar_broker::Limits::default());
        let c = Config::parse(
            "[limits]\nmax_connections = 5\nmaximum_qos = 1\n",
            Path::new("."),
        )
        .unwrap();
        let limits = c.limits.to_limits().unwrap();
        assert_eq!(limits.max_connections, 5);
        assert_eq!(limits.maximum_qos, fulmar_codec::QoS::AtLeastOnce);
    }

    // The topic limits and the retained quota can be set from the file (a
    // deep topic tree needs more than 128 levels).
    #[test]
    fn topic_limits_and_the_retained_quota_are_settable() {
        let c = Config::parse(
            "[limits]\nmax_topic_levels = 300\nmax_topic_length = 1000\n\
             max_retained_messages = 7\n",
            Path::new("."),
        )
        .unwrap();
        let limits = c.limits.to_limits().unwrap();
        assert_eq!(
            (
                limits.max_topic_levels,
                limits.max_topic_length,
                limits.max_retained_messages
            ),
            (300, 1000, 7)
        );
        let zero = Config::parse("[limits]\nmax_topic_levels = 0\n", Path::new(".")).unwrap();
        let error = zero.limits.to_limits().unwrap_err();
        assert!(error.contains("max_topic_levels = 0"), "{error}");
    }

    #[test]
    fn subscription_features_map_onto_the_broker_limits() {
        let defaults = LimitsConfig::default().to_limits().unwrap();
        assert!(defaults.wildcard_subscription_available);
        assert!(defaults.shared_subscription_available);
        assert!(defaults.subscription_identifiers_available);
        for (key, pick) in [
            (
                "wildcard_subscription_available",
                (|l| l.wildcard_subscription_available) as fn(&fulmar_broker::Limits) -> bool,
            ),
            ("shared_subscription_available", |l| {
                l.shared_subscription_available
            }),
            ("subscription_identifiers_available", |l| {
                l.subscription_identifiers_available
            }),
        ] {
            let c = Config::parse(&format!("[limits]\n{key} = false\n"), Path::new(".")).unwrap();
            c.check().unwrap();
            let limits = c.limits.to_limits().unwrap();
            assert!(!pick(&limits), "{key}");
            // Only that one.
            let off = [
                limits.wildcard_subscription_available,
                limits.shared_subscription_available,
                limits.subscription_identifiers_available,
            ];
            assert_eq!(off.iter().filter(|on| !**on).count(), 1, "{key}");
            assert!(
                DEFAULT_CONFIG.contains(&format!("\n{key} = true\n")),
                "{key}"
            );
        }
        let e = Config::parse(
            "[limits]\nwildcard_subscription_available = 0\n",
            Path::new("."),
        )
        .unwrap_err();
        assert!(e.contains("wildcard_subscription_available"), "{e}");
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let e = Config::parse("[limits]\nmax_conections = 5\n", Path::new(".")).unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        assert!(e.contains("max_conections"), "{e}");
        let e = Config::parse("[limits]\n\nreceive_maximum = 0\n", Path::new(".")).unwrap_err();
        assert!(e.contains("line 3"), "{e}");
        let c = Config::parse("[limits]\nmaximum_qos = 3\n", Path::new(".")).unwrap();
        assert!(c.check().unwrap_err().contains("limits.maximum_qos"));
        let c = Config::parse(
            "[[listener]]\nbind = \"127.0.0.1:1\"\nmaximum_qos = 3\n",
            Path::new("."),
        )
        .unwrap();
        let e = c.check().unwrap_err();
        assert!(
            e.contains("listener 1 (127.0.0.1:1): maximum_qos = 3"),
            "{e}"
        );
        // 0 would end every connection before its CONNECT could arrive.
        let c = Config::parse("[limits]\nconnect_timeout_secs = 0\n", Path::new(".")).unwrap();
        assert!(
            c.check()
                .unwrap_err()
                .contains("limits.connect_timeout_secs = 0")
        );
    }

    #[test]
    fn cluster_session_settings() {
        let c = Config::parse(
            "[cluster]\nurls = [\"nats://127.0.0.1:4222\"]\nsession_store = \"local\"\nsession_timeout_ms = 250\n",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(c.cluster.session_store, SessionStoreKind::Local);
        let config = c.cluster.to_config().unwrap().unwrap();
        assert_eq!(
            config.session_timeout,
            std::time::Duration::from_millis(250)
        );
        let e = Config::parse("[cluster]\nsession_store = \"disk\"\n", Path::new(".")).unwrap_err();
        assert!(e.contains("session_store"), "{e}");
        let c = Config::parse(
            "[cluster]\nurls = [\"nats://x\"]\nsession_timeout_ms = 0\n",
            Path::new("."),
        )
        .unwrap();
        assert!(
            c.cluster
                .to_config()
                .unwrap_err()
                .contains("session_timeout_ms")
        );
    }

    #[test]
    fn relative_paths_are_relative_to_the_file() {
        let c = Config::parse(
            "[auth]\npassword_file = \"pw\"\nacl_file = \"/abs/acl\"\n",
            Path::new("/etc/fulmar"),
        )
        .unwrap();
        assert_eq!(c.auth.password_file, Some(PathBuf::from("/etc/fulmar/pw")));
        assert_eq!(c.auth.acl_file, Some(PathBuf::from("/abs/acl")));
    }

    #[test]
    fn unsupported_settings_and_missing_certificates_are_refused() {
        let tls = "[[listener]]\nprotocol = \"tls\"\nbind = \"127.0.0.1:8883\"\n";
        let e = Config::parse(tls, Path::new("."))
            .unwrap()
            .check()
            .unwrap_err();
        assert!(e.contains("needs `cert`"), "{e}");
        let missing = format!("{tls}cert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n");
        let e = Config::parse(&missing, Path::new("."))
            .unwrap()
            .check()
            .unwrap_err();
        assert!(e.contains("cert = /nonexistent/c.pem"), "{e}");
        let ws = "[[listener]]\nprotocol = \"ws\"\nbind = \"127.0.0.1:8080\"\n";
        Config::parse(ws, Path::new(".")).unwrap().check().unwrap();
        let e = Config::parse(&format!("{ws}cert = \"c.pem\"\n"), Path::new("."))
            .unwrap()
            .check()
            .unwrap_err();
        assert!(e.contains("`cert` needs protocol"), "{e}");
        let tcp = "[[listener]]\nbind = \"127.0.0.1:1\"\npath = \"/mqtt\"\n";
        let e = Config::parse(tcp, Path::new("."))
            .unwrap()
            .check()
            .unwrap_err();
        assert!(e.contains("`path` needs"), "{e}");
    }
}
