//! mosquitto's configuration format (`mosquitto.conf`), read into a
//! [`Config`]: `fulmar broker -c mosquitto.conf` runs with the settings of
//! a mosquitto 2.0 installation, so moving to fulmar needs no rewrite.
//!
//! Each directive fulmar has maps to its key: listeners (`listener`,
//! `protocol`, `certfile`, `keyfile`, `cafile`, `capath`, `crlfile`,
//! `require_certificate`, `tls_version`, `mount_point`),
//! authentication (`allow_anonymous`, `password_file`, `acl_file`,
//! `use_identity_as_username`), persistence (`persistence`,
//! `persistence_location`), limits (`max_connections`, `max_queued_messages`,
//! `max_inflight_messages` (the Receive Maximum, and what a client has unacknowledged),
//! `max_queued_bytes`, `max_packet_size`, `message_size_limit`, `max_qos`,
//! `max_keepalive` (MQTT 5.0 clients), `max_topic_alias`,
//! `retain_available`, `allow_zero_length_clientid`, `queue_qos0_messages`),
//! `clientid_prefixes`, `auto_id_prefix`, `persistent_client_expiration`,
//! `sys_interval`, `log_type`, `include_dir` (the `.conf` files of a
//! directory, in the order of their names), and bridges (`connection` sections: `address`,
//! `topic`, `bridge_protocol_version`, `remote_clientid`, `remote_username`,
//! `remote_password`, `cleansession`, `keepalive_interval`, `try_private`,
//! `bridge_outgoing_retain`,
//! `bridge_cafile`, `bridge_capath`, `bridge_certfile`, `bridge_keyfile`,
//! `bridge_tls_version`,
//! `bridge_session_expiry_interval`, `notifications`,
//! `notifications_local_only`). Directives of
//! mosquitto's that fulmar does not have are ignored with a note (printed
//! at start), except those without which the broker would be more open
//! than the file says (`psk_hint`, `psk_file`,
//! `bind_interface`, `check_retain_source true`, `use_subject_as_username`,
//! `use_username_as_clientid`, `plugin`, `auth_plugin`,
//! `listener_allow_anonymous false`,
//! `bridge_psk`, ...):
//! these are an error, and
//! fulmar does not start. A directive mosquitto does not know either is an
//! error, as it is for mosquitto.
//!
//! mosquitto 2.0's defaults apply where they differ from fulmar's: without a
//! `listener`, the broker listens on localhost:1883 (`listener PORT` without
//! an address listens on every IPv4 address); `allow_anonymous` defaults to
//! false once a listener is configured; persistence is off; `$SYS` topics
//! are published every 10 seconds; packets may be as large as MQTT allows;
//! connections are not limited in number; an MQTT 5.0 client without keep
//! alive is given 65535 seconds (`max_keepalive`). `port` (and `bind_address`) make
//! mosquitto's default listener, on every IPv4 address, next to those of
//! `listener` lines. As in mosquitto, `max_connections`, `max_qos` and
//! `max_topic_alias` after a `listener` line are that listener's (before
//! any, they hold for every listener). `mount_point` after a `listener`
//! line is that listener's; before any, it is the default listener's (the
//! one of `port`, or the implicit one without `listener` lines; with only
//! `listener` lines it is an error). A `$share/GROUP/FILTER` subscription
//! through a mount point stays shared, the prefix before FILTER (mosquitto
//! 2.0 puts it before `$share`, which makes it an ordinary, unshared
//! filter). Limits fulmar has and mosquitto does not stay at
//! fulmar's defaults (1 024 subscriptions per client, 100 000 retained
//! messages, queues bounded in bytes): set them in a TOML file if needed
//! (`--print-config` starts one).
//! As in mosquitto, a TLS listener asks clients for a certificate only with
//! `require_certificate true` (`cafile`, `capath` and `crlfile` are unused
//! without it); `use_identity_as_username true` on a TLS listener that
//! requires no certificate is an error, since mosquitto refuses every client
//! there and fulmar would let them in by password or anonymously.
//! One default of mosquitto's is not held: `check_retain_source` is true
//! there (a retained message is delivered only while its publisher may
//! still publish it), and fulmar does no such check.
//! `fulmar broker -c mosquitto.conf --print-config` prints the result as
//! fulmar's TOML.

use std::path::Path;

use crate::bridges::{BridgeConfig, QueueWhileDown, TopicConfig};
use crate::config::{Config, ListenerConfig, Protocol};

/// Directives mosquitto 2.0 has and fulmar ignores, with why (or what to
/// use instead).
const IGNORED: &[(&str, &str)] = &[
    (
        "autosave_interval",
        "fulmar commits each change (see [persistence] durability)",
    ),
    ("autosave_on_changes", "fulmar commits each change"),
    (
        "persistence_file",
        "fulmar's store is a directory (persistence_location)",
    ),
    ("user", "fulmar runs as the user that starts it"),
    ("pid_file", "not supported"),
    ("max_inflight_bytes", "the client's Receive Maximum sets it"),
    ("upgrade_outgoing_qos", "not supported"),
    ("set_tcp_nodelay", "fulmar sets TCP_NODELAY"),
    ("log_dest", "fulmar logs to stderr"),
    ("log_facility", "fulmar logs to stderr"),
    ("log_timestamp", "fulmar's log lines have timestamps"),
    ("log_timestamp_format", "fulmar's log lines have timestamps"),
    (
        "connection_messages",
        "connections are logged at debug level",
    ),
    ("websockets_log_level", "not supported"),
    ("websockets_headers_size", "not supported"),
    ("http_dir", "not supported"),
    ("socket_domain", "not supported"),
    ("ciphers", "rustls' default cipher suites are used"),
    ("ciphers_tls1.3", "rustls' default cipher suites are used"),
    ("tls_engine", "not supported"),
    ("tls_engine_kpass_sha1", "not supported"),
    ("tls_keyform", "not supported"),
    ("dhparamfile", "not supported"),
    (
        "accept_protocol_versions",
        "MQTT 3.1.1 and 5.0 are accepted",
    ),
    (
        "plugin_opt",
        "not supported (options of a plugin, which is not loaded)",
    ),
    (
        "auth_opt",
        "not supported (options of a plugin, which is not loaded)",
    ),
    ("plugin_use", "not supported"),
    ("memory_limit", "not supported (the queues are bounded)"),
    ("sys_interval_ms", "not supported"),
    ("enable_control_api", "not supported"),
    ("global_max_clients", "use max_connections"),
    ("global_max_connections", "use max_connections"),
    ("disable_client_cert_date_checks", "not supported"),
    // Bridge directives.
    ("bridge_insecure", "not supported"),
    ("bridge_attempt_unsubscribe", "not supported"),
    ("bridge_bind_address", "not supported"),
    ("bridge_alpn", "not supported"),
    ("bridge_keyfile_engine", "not supported"),
    ("bridge_max_packet_size", "not supported"),
    ("bridge_max_topic_alias", "not supported"),
    ("bridge_receive_maximum", "not supported"),
    ("bridge_reload_type", "not supported"),
    ("idle_timeout", "not supported"),
    ("local_cleansession", "not supported"),
    ("local_clientid", "not supported"),
    ("local_password", "not supported"),
    ("local_username", "not supported"),
    (
        "restart_timeout",
        "fulmar's bridge reconnects with its own back-off",
    ),
    (
        "round_robin",
        "the first address is preferred: tried first again after each connection",
    ),
    ("start_type", "a bridge always starts with the broker"),
    ("threshold", "not supported"),
];

/// The configuration a mosquitto.conf describes, and notes about what
/// was ignored (one per directive and line). Relative paths are taken
/// relative to `base`.
pub(crate) fn parse(text: &str, base: &Path) -> Result<(Config, Vec<String>), String> {
    let mut config = Config::default();
    config.listeners.clear();
    // mosquitto 2.0's defaults where they differ from fulmar's.
    config.persistence.enabled = false;
    // Relative to the file, as in fulmar's TOML (mosquitto: the working directory).
    config.persistence.dir = base.join(&config.persistence.dir);
    config.sys.interval_secs = 10;
    config.limits.max_packet_size = std::num::NonZeroU32::MIN.saturating_add(268_435_454);
    config.limits.max_connections = usize::MAX;
    // An MQTT 5.0 client without keep alive (0) is given mosquitto's
    // max_keepalive, 65535 seconds, as its Server Keep Alive.
    config.limits.max_keep_alive_secs = u16::MAX;
    // Identifiers given to clients are `auto-` and a number (mosquitto:
    // `auto-` and a UUID).
    "auto-".clone_into(&mut config.limits.assigned_client_id_prefix);
    let mut notes = Vec::new();
    let mut allow_anonymous = None;
    let mut levels: Vec<&str> = Vec::new();
    // The listener of `port` / `bind_address` (mosquitto's default
    // listener), first in `config.listeners` once there: host and port.
    let mut default: Option<(String, u16)> = None;
    let mut bridge: Option<usize> = None;
    // The bridges with `notifications_local_only true` (the last value in
    // their section): their state stays here whatever `notifications` says,
    // before or after it, as in mosquitto.
    let mut local_only: Vec<usize> = Vec::new();
    // `use_identity_as_username` of each listener (mosquitto's is set per
    // listener; fulmar's holds for every TLS listener).
    let mut identity: Vec<bool> = Vec::new();
    // Where `max_connections` was last set: mosquitto's is per listener.
    let mut max_connections_at: Option<String> = None;
    // Where `max_qos` and `max_topic_alias` were last set before any
    // `listener` line: mosquitto's hold for the listener they follow (after
    // one, they are that listener's here too).
    let mut per_listener_at: Vec<(&str, String)> = Vec::new();
    // Whether a `listener` line came: `max_connections`, `max_qos` and
    // `max_topic_alias` after it are the last listener's.
    let mut listener_lines = false;
    // A `mount_point` before any `listener` line, and where: mosquitto's
    // default listener's (the one of `port`).
    let mut default_mount_point: Option<(String, String)> = None;
    let path = |value: &str| base.join(value);
    let lines = with_included_files(text, base)?;
    for (n, raw) in &lines {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once([' ', '\t'])
            .map_or((line, ""), |(k, v)| (k, v.trim()));
        let at = |why: String| format!("{n}: {key}: {why}");
        let need = || {
            if value.is_empty() {
                Err(at("needs a value".to_owned()))
            } else {
                Ok(value)
            }
        };
        let number = |what: &str| -> Result<i64, String> {
            need()?
                .parse::<i64>()
                .map_err(|_| at(format!("{value:?} is not {what}")))
        };
        let boolean = || match need()? {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(at(format!("{other:?}: true or false"))),
        };
        let listener = |config: &mut Config| -> Result<usize, String> {
            if config.listeners.is_empty() {
                return Err(at("comes before any `listener`".to_owned()));
            }
            Ok(config.listeners.len() - 1)
        };
        // Bridge section directives.
        if let Some(b) = bridge
            && key == "notifications_local_only"
        {
            let local = boolean()?;
            local_only.retain(|x| *x != b);
            if local {
                local_only.push(b);
            }
            continue;
        }
        if let Some(b) = bridge
            && let Some(done) = bridge_directive(&mut config, b, key, value, base)
        {
            done.map_err(at)?;
            continue;
        }
        match key {
            "listener" => {
                let mut parts = need()?.split_whitespace();
                let port = parts
                    .next()
                    .and_then(|p| p.parse::<u16>().ok())
                    .ok_or_else(|| at(format!("{value:?}: PORT [ADDRESS]")))?;
                let bind = match parts.next() {
                    Some(host) if host.contains(':') && !host.starts_with('[') => {
                        format!("[{host}]:{port}")
                    }
                    Some(host) => format!("{host}:{port}"),
                    None => format!("0.0.0.0:{port}"),
                };
                config.listeners.push(ListenerConfig::tcp(bind));
                identity.push(false);
                listener_lines = true;
                bridge = None;
            }
            "port" | "bind_address" => {
                let existed = default.is_some();
                let (host, port) = default
                    .take()
                    .unwrap_or_else(|| ("0.0.0.0".to_owned(), 1883));
                let (host, port) = if key == "port" {
                    let port = u16::try_from(number("a port")?)
                        .map_err(|_| at(format!("{value:?} is not a port")))?;
                    (host, port)
                } else {
                    (need()?.to_owned(), port)
                };
                let bind = if host.contains(':') && !host.starts_with('[') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                };
                match (existed, config.listeners.first_mut()) {
                    // Set again: the same listener.
                    (true, Some(first)) => first.bind = bind,
                    _ => {
                        config.listeners.insert(0, ListenerConfig::tcp(bind));
                        identity.insert(0, false);
                    }
                }
                default = Some((host, port));
            }
            "protocol" => {
                let l = listener(&mut config)?;
                let Some(listener) = config.listeners.get_mut(l) else {
                    continue;
                };
                listener.protocol = match (need()?, listener.protocol) {
                    ("mqtt", Protocol::Tcp | Protocol::Ws) => Protocol::Tcp,
                    ("mqtt", _) => Protocol::Tls,
                    ("websockets", Protocol::Tcp | Protocol::Ws) => Protocol::Ws,
                    ("websockets", _) => Protocol::Wss,
                    (other, _) => return Err(at(format!("{other:?}: mqtt or websockets"))),
                };
                if listener.protocol.is_websocket() {
                    // mosquitto serves MQTT on any path.
                    listener.path = Some("*".to_owned());
                }
            }
            "certfile"
            | "keyfile"
            | "cafile"
            | "capath"
            | "require_certificate"
            | "crlfile"
            | "tls_version" => {
                let l = listener(&mut config)?;
                let flag = if key == "require_certificate" {
                    Some(boolean()?)
                } else {
                    None
                };
                let Some(listener) = config.listeners.get_mut(l) else {
                    continue;
                };
                match key {
                    "certfile" => {
                        listener.cert = Some(path(need()?));
                        listener.protocol = match listener.protocol {
                            Protocol::Ws | Protocol::Wss => Protocol::Wss,
                            _ => Protocol::Tls,
                        };
                    }
                    "keyfile" => listener.key = Some(path(need()?)),
                    "cafile" => listener.client_ca = Some(path(need()?)),
                    "capath" => listener.client_ca_path = Some(path(need()?)),
                    "crlfile" => listener.crl_file = Some(path(need()?)),
                    "tls_version" => {
                        listener.tls_version = Some(match need()? {
                            "tlsv1.3" => "1.3".to_owned(),
                            "tlsv1.2" => "1.2".to_owned(),
                            old @ ("tlsv1.1" | "tlsv1") => {
                                notes.push(format!(
                                    "{n}: tls_version {old}: fulmar accepts TLS 1.2 and \
                                     1.3 only"
                                ));
                                "1.2".to_owned()
                            }
                            other => {
                                return Err(at(format!(
                                    "{other:?}: tlsv1.3, tlsv1.2, tlsv1.1 or tlsv1"
                                )));
                            }
                        });
                    }
                    _ => listener.require_certificate = flag,
                }
            }
            "use_identity_as_username" => {
                let on = boolean()?;
                match identity.last_mut() {
                    Some(last) => *last = on,
                    // Before any listener it is mosquitto's default
                    // listener's (`port`), which is never TLS here: the
                    // `listener`s that follow do not take it.
                    None if on => notes.push(format!(
                        "{n}: use_identity_as_username before any listener ignored: as in \
                         mosquitto, the listeners that follow do not take it (set it after \
                         their `listener` line)"
                    )),
                    None => {}
                }
            }
            // Refused rather than ignored: each would loosen who may do what.
            "use_subject_as_username" | "use_username_as_clientid" => {
                return Err(at(
                    "not supported; fulmar refuses to start rather than run without it \
                     (use_identity_as_username takes the certificate's common name)"
                        .to_owned(),
                ));
            }
            // Refused rather than ignored, for the same reason: without
            // them a listener would be plain TCP, reachable from every
            // interface, or show a tenant the topics of the others.
            "psk_hint" | "psk_file" => {
                return Err(at(
                    "not supported: TLS with a pre-shared key (rustls has no PSK); fulmar \
                     refuses to start rather than run the listener without it (use certfile \
                     and keyfile)"
                        .to_owned(),
                ));
            }
            // A plugin usually decides who may connect, publish and
            // subscribe (mosquitto's dynamic security, auth plugins):
            // without it, the password and ACL files alone would let clients
            // do more than the plugin lets them.
            "plugin" | "auth_plugin" | "plugin_load" | "global_plugin" => {
                return Err(at(
                    "not supported: fulmar cannot load mosquitto plugins, and refuses to \
                     start rather than run without it (password_file and acl_file set who \
                     may do what)"
                        .to_owned(),
                ));
            }
            // The listener it follows; before any `listener` line,
            // mosquitto's default listener (`port`), as in mosquitto.
            "mount_point" => {
                let prefix = need()?;
                if prefix.contains(['+', '#']) {
                    return Err(at(format!(
                        "{prefix:?}: a wildcard cannot be part of a topic name"
                    )));
                }
                match config.listeners.last_mut().filter(|_| listener_lines) {
                    Some(listener) => listener.mount_point = Some(prefix.to_owned()),
                    None => default_mount_point = Some((prefix.to_owned(), at(String::new()))),
                }
            }
            "bind_interface" => {
                return Err(at(
                    "not supported; fulmar refuses to start rather than listen on every \
                     interface (give the interface's address: `listener PORT ADDRESS`)"
                        .to_owned(),
                ));
            }
            // mosquitto's default, true, checks at each delivery of a
            // retained message that its publisher may still publish it;
            // fulmar does not, which `false` asks for.
            "check_retain_source" => {
                if boolean()? {
                    return Err(at(
                        "true is not supported: fulmar does not check a retained \
                         message's publisher again when it delivers the message; it \
                         refuses to start rather than run without the check"
                            .to_owned(),
                    ));
                }
            }
            // `false` makes mosquitto refuse retained messages (MQTT 5.0:
            // Retain Available 0 in CONNACK, DISCONNECT 0x9A for a retained
            // PUBLISH; 3.1.1: the connection is closed).
            "retain_available" => config.limits.retain_available = boolean()?,
            // QoS 0 messages for an absent client's session: queued too.
            // mosquitto does not count them against max_queued_messages
            // (only QoS 1/2); fulmar counts every queued message.
            "queue_qos0_messages" => config.limits.queue_qos0_offline = boolean()?,
            // `false` refuses a client without an identifier (mosquitto:
            // 3.1.1 return code 2, MQTT 5.0 0x80; fulmar: 0x85).
            "allow_zero_length_clientid" => config.limits.assign_client_ids = boolean()?,
            // Per listener: fulmar's `allow_anonymous` is one for all.
            "listener_allow_anonymous" => {
                if !boolean()? {
                    return Err(at(
                        "false is not supported (allow_anonymous applies to every \
                         listener); fulmar refuses to start rather than let anonymous \
                         clients in on this listener"
                            .to_owned(),
                    ));
                }
                notes.push(format!(
                    "{n}: listener_allow_anonymous ignored: allow_anonymous applies \
                     to every listener"
                ));
            }
            "allow_anonymous" => allow_anonymous = Some(boolean()?),
            "clientid_prefixes" => config.auth.client_id_prefix = Some(need()?.to_owned()),
            // As mosquitto 2.0 (src/session_expiry.c): a session ends this
            // long after its client left at the latest, whatever it asked
            // for (3.1.1 clean session 0: never, else); fulmar's longest
            // Session Expiry Interval, which 5.0 clients are told in CONNACK.
            // An integer (its leading digits, as mosquitto's atoi) and one of
            // h d w m y (30 and 365 days for m and y).
            "persistent_client_expiration" => {
                let value = need()?;
                let unit: u64 = match value.chars().last() {
                    Some('h') => 3600,
                    Some('d') => 86_400,
                    Some('w') => 7 * 86_400,
                    Some('m') => 30 * 86_400,
                    Some('y') => 365 * 86_400,
                    _ => 0,
                };
                let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
                let count = digits.parse::<u64>().unwrap_or(0);
                if unit == 0 || count == 0 {
                    return Err(at(format!(
                        "{value:?}: a number and h, d, w, m or y (hours to years)"
                    )));
                }
                config.limits.max_session_expiry_secs =
                    u32::try_from(count.saturating_mul(unit)).unwrap_or(u32::MAX);
            }
            "auto_id_prefix" => need()?.clone_into(&mut config.limits.assigned_client_id_prefix),
            "password_file" => config.auth.password_file = Some(path(need()?)),
            "acl_file" => config.auth.acl_file = Some(path(need()?)),
            "per_listener_settings" => {
                if boolean()? {
                    return Err(at(
                        "true is not supported: fulmar's authentication and limits are \
                         the same for every listener"
                            .to_owned(),
                    ));
                }
            }
            "persistence" => config.persistence.enabled = boolean()?,
            "persistence_location" => config.persistence.dir = path(need()?),
            // -1 (mosquitto's default): no limit.
            "max_connections" => {
                let max = usize::try_from(number("a number")?).unwrap_or(usize::MAX);
                match config.listeners.last_mut().filter(|_| listener_lines) {
                    Some(listener) => listener.max_connections = Some(max),
                    None => {
                        config.limits.max_connections = max;
                        max_connections_at = Some(format!("{n}: max_connections {value}"));
                    }
                }
            }
            "max_queued_messages" | "max_queued_bytes" => {
                let limit = if key == "max_queued_messages" {
                    &mut config.limits.max_queued_messages
                } else {
                    &mut config.limits.max_queued_bytes
                };
                match number("a number")? {
                    m if m > 0 => *limit = usize::try_from(m).unwrap_or(usize::MAX),
                    // mosquitto's "no limit".
                    _ => notes.push(format!(
                        "{n}: {key} {value}: fulmar's queues are always bounded; \
                         the default ({limit}) stays"
                    )),
                }
            }
            // 0: mosquitto's "no limit".
            "max_packet_size" => {
                let size = number("a size")?;
                if (1..20).contains(&size) || size < 0 {
                    // As mosquitto: too small for a CONNACK or a PUBLISH.
                    return Err(at(format!("{value:?}: 0 (no limit) or at least 20 bytes")));
                }
                if size > 0 {
                    let packet = u32::try_from(size.min(268_435_460)).unwrap_or(u32::MAX);
                    config.limits.max_packet_size = std::num::NonZeroU32::new(packet)
                        .ok_or_else(|| at("must not be 0".to_owned()))?;
                }
            }
            // The payload of a PUBLISH, as in mosquitto 2.0.11: a larger one
            // is dropped (5.0 QoS 1/2: an error PUBACK/PUBREC) and the
            // connection stays; nothing is announced in CONNACK.
            "message_size_limit" => {
                config.limits.max_payload_size = usize::try_from(number("a size")?)
                    .ok()
                    .filter(|size| *size <= 268_435_455)
                    .ok_or_else(|| at(format!("{value:?}: 0 to 268435455 bytes")))?;
            }
            // mosquitto announces it to MQTT 5.0 clients as its Receive
            // Maximum (and holds them to it), as fulmar's receive_maximum;
            // it also bounds what is sent to a client at once (3.1.1 too),
            // as fulmar's max_outbound_inflight.
            "max_inflight_messages" => {
                let most = number("a number")?;
                config.limits.receive_maximum = match u16::try_from(most) {
                    // 0: mosquitto's "no maximum".
                    Ok(0) => std::num::NonZeroU16::MAX,
                    Ok(most) => {
                        std::num::NonZeroU16::new(most).unwrap_or(std::num::NonZeroU16::MAX)
                    }
                    Err(_) if most > 0 => std::num::NonZeroU16::MAX,
                    Err(_) => return Err(at(format!("{value:?} is not a number of messages"))),
                };
                config.limits.max_outbound_inflight = config.limits.receive_maximum;
            }
            // MQTT 5.0 clients only, as in mosquitto: a 3.1.1 client keeps
            // its own keep alive.
            "max_keepalive" => {
                config.limits.max_keep_alive_secs = u16::try_from(number("a number of seconds")?)
                    .ok()
                    .filter(|s| *s >= 10)
                    .ok_or_else(|| at(format!("{value:?}: 10 to 65535 seconds")))?;
            }
            "max_topic_alias" => {
                let max = u16::try_from(number("a number")?)
                    .map_err(|_| at(format!("{value:?}: 0 to 65535")))?;
                match config.listeners.last_mut().filter(|_| listener_lines) {
                    Some(listener) => listener.topic_alias_maximum = Some(max),
                    None => {
                        config.limits.topic_alias_maximum = max;
                        per_listener_at.retain(|(k, _)| *k != "max_topic_alias");
                        per_listener_at
                            .push(("max_topic_alias", format!("{n}: max_topic_alias {value}")));
                    }
                }
            }
            "max_qos" => {
                let qos = u8::try_from(number("0, 1 or 2")?)
                    .ok()
                    .filter(|q| *q <= 2)
                    .ok_or_else(|| at(format!("{value:?}: 0, 1 or 2")))?;
                match config.listeners.last_mut().filter(|_| listener_lines) {
                    Some(listener) => listener.maximum_qos = Some(qos),
                    None => {
                        config.limits.maximum_qos = qos;
                        per_listener_at.retain(|(k, _)| *k != "max_qos");
                        per_listener_at.push(("max_qos", format!("{n}: max_qos {value}")));
                    }
                }
            }
            "sys_interval" => {
                config.sys.interval_secs =
                    u64::try_from(number("a number of seconds")?).unwrap_or(0);
            }
            "log_type" => levels.push(match need()? {
                "debug" | "subscribe" | "unsubscribe" | "websockets" => "debug",
                "all" => "trace",
                "information" | "notice" => "info",
                "warning" => "warn",
                "error" => "error",
                "none" => "off",
                other => return Err(at(format!("{other:?}: not a log type"))),
            }),
            "connection" => {
                config.bridges.push(new_bridge(need()?));
                bridge = Some(config.bridges.len() - 1);
            }
            "include_dir" => {
                return Err(at(
                    "only the main configuration file may include a directory".to_owned(),
                ));
            }
            other => match IGNORED.iter().find(|(k, _)| {
                // `auth_opt_NAME` and `plugin_opt_NAME`: any NAME, for the plugin.
                *k == other
                    || ["auth_opt", "plugin_opt"].contains(k)
                        && other
                            .strip_prefix(k)
                            .is_some_and(|name| name.len() > 1 && name.starts_with('_'))
            }) {
                Some((_, why)) => notes.push(format!("{n}: {other} ignored: {why}")),
                None => return Err(at("not a mosquitto configuration directive".to_owned())),
            },
        }
    }
    if let Some(at) = max_connections_at.filter(|_| config.listeners.len() > 1) {
        notes.push(format!(
            "{at}: mosquitto limits the connections of each listener; fulmar limits \
             those of all its listeners together, to the last value given"
        ));
    }
    // Checked against mosquitto 2.0.11: with two listeners and `max_qos 1`
    // after the second, clients of the first are not limited there.
    if config.listeners.len() > 1 {
        for (_, at) in per_listener_at {
            notes.push(format!(
                "{at}: mosquitto applies it to the listener it follows; fulmar to all \
                 its listeners, the last value given"
            ));
        }
    }
    if config.listeners.is_empty() {
        // mosquitto 2.0 with neither `listener` nor `port`: local only, and
        // anonymous clients allowed.
        config
            .listeners
            .push(ListenerConfig::tcp("127.0.0.1:1883".to_owned()));
        config.auth.allow_anonymous = Some(allow_anonymous.unwrap_or(true));
    } else {
        config.auth.allow_anonymous = Some(allow_anonymous.unwrap_or(false));
    }
    if let Some((prefix, at)) = default_mount_point {
        match config.listeners.first_mut() {
            // The listener of `port`, or the implicit one: mosquitto's default listener.
            Some(first) if default.is_some() || !listener_lines => {
                first.mount_point = Some(prefix);
            }
            _ => {
                return Err(format!(
                    "{at}before any `listener` line, mosquitto applies it to its default \
                     listener (`port`), which this file does not have: put it after the \
                     `listener` line it is for"
                ));
            }
        }
    }
    for (l, listener) in config.listeners.iter_mut().enumerate() {
        if listener.has_client_ca() && listener.cert.is_none() {
            // cafile / capath without certfile: mosquitto would not start TLS either.
            listener.client_ca = None;
            listener.client_ca_path = None;
        }
        if !listener.has_client_ca() {
            // Nothing to require (`require_certificate false` alone is a
            // common snippet), nor to revoke.
            if listener.require_certificate == Some(false) {
                listener.require_certificate = None;
            }
            if listener.crl_file.is_some() && listener.cert.is_some() {
                return Err(format!(
                    "listener {}: crlfile needs cafile or capath (the CA whose certificates it revokes)",
                    listener.bind
                ));
            }
        } else if listener.require_certificate != Some(true) {
            // mosquitto asks for a client certificate only with
            // require_certificate true (OpenSSL's SSL_VERIFY_NONE
            // otherwise): a client's certificate, expired or from another
            // CA, is never sent nor checked, and the client gets in.
            notes.push(format!(
                "listener {}: cafile/capath/crlfile ignored without require_certificate \
                 true: as mosquitto, no client certificate is asked for",
                listener.bind
            ));
            listener.client_ca = None;
            listener.client_ca_path = None;
            listener.crl_file = None;
            listener.require_certificate = None;
        }
        // mosquitto takes the user name from the certificate on a TLS
        // listener with use_identity_as_username, and refuses a client
        // without one (Bad User Name or Password), whatever its user name
        // and password: where no certificate is required, that is every
        // client. fulmar would let them in by password or anonymously.
        if identity.get(l) == Some(&true) && listener.cert.is_some() && !listener.has_client_ca() {
            return Err(format!(
                "listener {}: use_identity_as_username true without cafile (or capath) and \
                 require_certificate true: mosquitto asks the clients for no certificate and \
                 refuses every one; fulmar refuses to start rather than let them in by \
                 password or anonymously",
                listener.bind
            ));
        }
    }
    // fulmar takes the certificate's name as the user name on every TLS
    // listener with client certificates, or on none: a mix would let a
    // certificate stand for a password where mosquitto asks for both.
    let with_certificates: Vec<bool> = config
        .listeners
        .iter()
        .zip(identity.iter().chain(std::iter::repeat(&false)))
        .filter(|(l, _)| l.has_client_ca())
        .map(|(_, on)| *on)
        .collect();
    if with_certificates.iter().any(|on| *on) && !with_certificates.iter().all(|on| *on) {
        return Err(
            "use_identity_as_username is set on some listeners with client certificates \
             and not on others: fulmar applies it to every such listener; set it on all \
             of them, or on none"
                .to_owned(),
        );
    }
    config.auth.use_identity_as_username = with_certificates.iter().any(|on| *on);
    // mosquitto holds what waits for a bridge's remote to the global
    // limits, wherever they are in the file; its state topic is named after
    // the bridge's client identifier.
    for (b, bridge) in config.bridges.iter_mut().enumerate() {
        // Without bridge_cafile / bridge_capath the bridge is not over TLS
        // and mosquitto ignores bridge_tls_version.
        if bridge.protocol != Protocol::Tls {
            bridge.tls_version = None;
        }
        // `notifications false`: the state nowhere, local_only or not.
        bridge.local_notifications = bridge.notifications;
        // The state only here: not on the remote (nor its will there).
        if local_only.contains(&b) {
            bridge.notifications = false;
        }
        bridge.max_queued_messages = config.limits.max_queued_messages;
        bridge.max_queued_bytes = config.limits.max_queued_bytes;
        if bridge.notification_topic.is_none() {
            let client_id = bridge
                .client_id
                .clone()
                .unwrap_or_else(|| format!("{}.{}", crate::config::host_name(), bridge.name));
            bridge.notification_topic = Some(format!("$SYS/broker/connection/{client_id}/state"));
        }
    }
    let order = ["off", "error", "warn", "info", "debug", "trace"];
    if let Some(most) = levels
        .iter()
        .filter_map(|l| order.iter().position(|o| o == l))
        .max()
        .and_then(|i| order.get(i))
    {
        (*most).clone_into(&mut config.log.level);
    }
    Ok((config, notes))
}

/// The lines of a mosquitto.conf, each with where it is (`line 3`), and in
/// place of each `include_dir DIR` the lines of the files in `DIR` whose
/// names end in `.conf`, in the byte order of their names, as mosquitto 2.0
/// reads them (`DIR/a.conf line 3`). A relative `DIR` is relative to
/// `base`; only the main file may include a directory.
fn with_included_files(text: &str, base: &Path) -> Result<Vec<(String, String)>, String> {
    let is_include = |line: &str| {
        line.split_once([' ', '\t'])
            .map_or(line, |(key, _)| key)
            .eq("include_dir")
    };
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let at = format!("line {}", i + 1);
        let line = raw.trim();
        if !is_include(line) {
            lines.push((at, raw.to_owned()));
            continue;
        }
        let dir = line.strip_prefix("include_dir").unwrap_or_default().trim();
        if dir.is_empty() {
            return Err(format!("{at}: include_dir: needs a value"));
        }
        let dir = base.join(dir);
        let cannot = |e: std::io::Error| format!("{at}: include_dir {}: {e}", dir.display());
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(cannot)? {
            let file = entry.map_err(cannot)?.path();
            if file.extension().is_some_and(|e| e == "conf") && file.is_file() {
                files.push(file);
            }
        }
        files.sort();
        for file in files {
            let included = std::fs::read_to_string(&file)
                .map_err(|e| format!("{at}: include_dir: {}: {e}", file.display()))?;
            for (j, raw) in included.lines().enumerate() {
                let at = format!("{} line {}", file.display(), j + 1);
                if is_include(raw.trim()) {
                    return Err(format!(
                        "{at}: include_dir: only the main configuration file may include a \
                         directory (as in mosquitto)"
                    ));
                }
                lines.push((at, raw.to_owned()));
            }
        }
    }
    Ok(lines)
}

fn new_bridge(name: &str) -> BridgeConfig {
    BridgeConfig {
        name: name.to_owned(),
        address: String::new(),
        fallback_addresses: Vec::new(),
        notifications: true,
        local_notifications: true,
        notification_topic: None,
        protocol: Protocol::Tcp,
        path: None,
        // mosquitto's default bridge protocol.
        version: "3.1.1".to_owned(),
        client_id: None,
        // mosquitto's cleansession defaults to false.
        clean_start: false,
        session_expiry_secs: 3600,
        keep_alive_secs: 60,
        username: None,
        password: None,
        ca_file: None,
        ca_path: None,
        cert: None,
        key: None,
        tls_version: None,
        try_private: true,
        outgoing_retain: true,
        // QoS 0 messages are not queued for the bridge's session here while
        // the link is down (queue_qos0_messages false); with `cleansession
        // true` (and so local_cleansession) nothing is.
        queue_while_down: QueueWhileDown::Qos12,
        max_inflight: 64,
        max_queued_messages: 1000,
        max_queued_bytes: 16 << 20,
        topics: Vec::new(),
    }
}

/// A directive of a `connection` section; `None` if it is not one.
fn bridge_directive(
    config: &mut Config,
    b: usize,
    key: &str,
    value: &str,
    base: &Path,
) -> Option<Result<(), String>> {
    let bridge = config.bridges.get_mut(b)?;
    let need = || {
        if value.is_empty() {
            Err("needs a value".to_owned())
        } else {
            Ok(value)
        }
    };
    let boolean = || match need()? {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("{other:?}: true or false")),
    };
    let result = match key {
        "address" | "addresses" => need().map(|v| {
            // The first, then those tried when it fails (round_robin false).
            let mut all = v.split_whitespace();
            all.next().unwrap_or(v).clone_into(&mut bridge.address);
            bridge.fallback_addresses = all.map(str::to_owned).collect();
        }),
        "topic" => need().and_then(|v| bridge_topic(v).map(|t| bridge.topics.push(t))),
        "bridge_protocol_version" => need().and_then(|v| {
            bridge.version = match v {
                "mqttv50" => "5".to_owned(),
                "mqttv311" => "3.1.1".to_owned(),
                "mqttv31" => "3.1".to_owned(),
                other => return Err(format!("{other:?}: mqttv50, mqttv311 or mqttv31")),
            };
            Ok(())
        }),
        "remote_clientid" | "clientid" => need().map(|v| bridge.client_id = Some(v.to_owned())),
        "notifications" => boolean().map(|on| bridge.notifications = on),
        "notification_topic" => need().map(|v| bridge.notification_topic = Some(v.to_owned())),
        "remote_username" | "username" => need().map(|v| bridge.username = Some(v.to_owned())),
        "remote_password" | "password" => need().map(|v| bridge.password = Some(v.to_owned())),
        "cleansession" => boolean().map(|c| {
            bridge.clean_start = c;
            bridge.queue_while_down = if c {
                QueueWhileDown::None
            } else {
                QueueWhileDown::Qos12
            };
        }),
        "try_private" => boolean().map(|t| bridge.try_private = t),
        "bridge_outgoing_retain" => boolean().map(|r| bridge.outgoing_retain = r),
        "keepalive_interval" => need().and_then(|v| {
            bridge.keep_alive_secs = v
                .parse()
                .map_err(|_| format!("{v:?} is not a number of seconds"))?;
            Ok(())
        }),
        "bridge_cafile" => need().map(|v| {
            bridge.ca_file = Some(base.join(v));
            bridge.protocol = Protocol::Tls;
        }),
        "bridge_capath" => need().map(|v| {
            bridge.ca_path = Some(base.join(v));
            bridge.protocol = Protocol::Tls;
        }),
        // Refused rather than ignored: without them the bridge would talk
        // in clear (and send remote_password so) or skip a check.
        "bridge_psk" | "bridge_identity" => Err(
            "TLS with a pre-shared key is not supported (rustls has no PSK): fulmar refuses \
             to start rather than bridge without TLS; use bridge_cafile or bridge_capath"
                .to_owned(),
        ),
        "bridge_require_ocsp" => boolean().and_then(|on| {
            if on {
                Err(
                    "true is not supported: fulmar refuses to start rather than \
                     bridge without the OCSP check"
                        .to_owned(),
                )
            } else {
                Ok(())
            }
        }),
        "bridge_session_expiry_interval" => need().and_then(|v| {
            bridge.session_expiry_secs = v
                .parse()
                .map_err(|_| format!("{v:?} is not a number of seconds"))?;
            Ok(())
        }),
        "bridge_certfile" => need().map(|v| bridge.cert = Some(base.join(v))),
        "bridge_keyfile" => need().map(|v| bridge.key = Some(base.join(v))),
        // mosquitto's bridge_tls_version is the lowest version, as fulmar's.
        "bridge_tls_version" => need().and_then(|v| {
            bridge.tls_version = Some(match v {
                "tlsv1.3" => "1.3".to_owned(),
                // fulmar speaks nothing older than TLS 1.2.
                "tlsv1.2" | "tlsv1.1" | "tlsv1" => "1.2".to_owned(),
                other => return Err(format!("{other:?}: tlsv1.3, tlsv1.2, tlsv1.1 or tlsv1")),
            });
            Ok(())
        }),
        "bridge_max_inflight" | "max_inflight" => need().and_then(|v| {
            bridge.max_inflight = v.parse().map_err(|_| format!("{v:?} is not a number"))?;
            Ok(())
        }),
        _ => return None,
    };
    Some(result)
}

/// `topic PATTERN [[[out|in|both] QOS] LOCAL_PREFIX REMOTE_PREFIX]`; `""`
/// stands for an empty pattern or prefix.
fn bridge_topic(value: &str) -> Result<TopicConfig, String> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    let unquote = |s: &str| {
        if s == "\"\"" {
            String::new()
        } else {
            s.to_owned()
        }
    };
    let [pattern, rest @ ..] = parts.as_slice() else {
        return Err("needs a pattern".to_owned());
    };
    let direction = rest.first().copied().unwrap_or("out");
    if !matches!(direction, "in" | "out" | "both") {
        return Err(format!("{direction:?}: in, out or both"));
    }
    let qos = match rest.get(1) {
        Some(q) => q
            .parse::<u8>()
            .ok()
            .filter(|q| *q <= 2)
            .ok_or_else(|| format!("QoS {q:?}: 0, 1 or 2"))?,
        None => 0,
    };
    if rest.len() > 4 {
        return Err(format!("{value:?}: too many values"));
    }
    Ok(TopicConfig {
        pattern: unquote(pattern),
        direction: direction.to_owned(),
        qos,
        local_prefix: rest.get(2).map_or_else(String::new, |p| unquote(p)),
        remote_prefix: rest.get(3).map_or_else(String::new, |p| unquote(p)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> (Config, Vec<String>) {
        parse(text, Path::new("/etc/mosquitto")).unwrap()
    }

    /// Found by an operator review: security directives that were ignored
    /// (so protection was off), and `use_identity_as_username`, which is per
    /// listener in mosquitto, applied to every listener.
    #[test]
    fn tls_security_directives_hold_or_refuse_to_start() {
        let tls = "certfile s.crt\nkeyfile s.key\ncafile ca.crt\nrequire_certificate true\n";
        let (config, _) = parsed(&format!(
            "listener 8883\n{tls}crlfile crl.pem\ntls_version tlsv1.3\n"
        ));
        let l = &config.listeners[0];
        assert_eq!(
            l.crl_file.as_deref(),
            Some(Path::new("/etc/mosquitto/crl.pem"))
        );
        assert_eq!(l.tls_version.as_deref(), Some("1.3"));
        let refused = |text: &str| parse(text, Path::new("/etc/mosquitto")).unwrap_err();
        for directive in ["use_subject_as_username", "use_username_as_clientid"] {
            let e = refused(&format!("listener 8883\n{tls}{directive} true\n"));
            assert!(e.contains("not supported"), "{e}");
        }
        // Certificate and password on one listener, certificate alone on
        // another: fulmar cannot tell them apart, so it does not start.
        let e = refused(&format!(
            "listener 8883\n{tls}listener 8884\n{tls}use_identity_as_username true\n"
        ));
        assert!(e.contains("set it on all"), "{e}");
        let (config, _) = parsed(&format!(
            "listener 8883\n{tls}use_identity_as_username true\n\
             listener 8884\n{tls}use_identity_as_username true\nlistener 1883\n"
        ));
        assert!(config.auth.use_identity_as_username);
        // `require_certificate false` without a CA asks for nothing.
        let (config, _) =
            parsed("listener 8883\ncertfile s.crt\nkeyfile s.key\nrequire_certificate false\n");
        assert_eq!(config.listeners[0].require_certificate, None);
        assert!(
            config
                .check()
                .is_err_and(|e| !e.contains("require_certificate"))
        );
    }

    /// Found by differential testing against mosquitto 2.0.11: without
    /// `require_certificate true`, mosquitto asks clients for no
    /// certificate (one from an unknown CA, or expired, does not stop them);
    /// fulmar asked for one and refused the handshake over a bad one.
    #[test]
    fn without_require_certificate_no_client_certificate_is_asked_for() {
        let tls = "listener 8883\ncertfile s.crt\nkeyfile s.key\ncafile ca.crt\ncapath cas\n";
        for require in ["", "require_certificate false\n"] {
            let (config, notes) = parsed(&format!("{tls}crlfile crl.pem\n{require}"));
            let l = &config.listeners[0];
            assert!(!l.has_client_ca(), "{require:?}");
            assert_eq!((&l.crl_file, l.require_certificate), (&None, None));
            assert!(
                notes.iter().any(|n| n.contains("no client certificate")),
                "{notes:?}"
            );
        }
        let (config, _) = parsed(&format!("{tls}require_certificate true\n"));
        assert_eq!(config.listeners[0].require_certificate, Some(true));
        assert!(config.listeners[0].has_client_ca());
    }

    /// Found by differential testing against mosquitto 2.0.11: with
    /// use_identity_as_username on a TLS listener that requires no
    /// certificate, mosquitto refuses every client (0x86), a password user
    /// or an anonymous one too; fulmar let them in.
    #[test]
    fn use_identity_as_username_where_no_certificate_is_required_does_not_start() {
        let tls = "certfile s.crt\nkeyfile s.key\n";
        for rest in [
            "",
            "cafile ca.crt\n",
            "cafile ca.crt\nrequire_certificate false\n",
        ] {
            let e = parse(
                &format!("listener 8883\n{tls}{rest}use_identity_as_username true\n"),
                Path::new("/etc/mosquitto"),
            )
            .unwrap_err();
            assert!(e.contains("use_identity_as_username"), "{rest:?}: {e}");
        }
        // Required certificates: the name is the certificate's.
        let (config, _) = parsed(&format!(
            "listener 8883\n{tls}cafile ca.crt\nrequire_certificate true\n\
             use_identity_as_username true\n"
        ));
        assert!(config.auth.use_identity_as_username);
        // On a listener without TLS mosquitto ignores it.
        let (config, _) = parsed("listener 1883\nuse_identity_as_username true\n");
        assert!(!config.auth.use_identity_as_username);
    }

    /// Found by differential testing against mosquitto 2.0.11:
    /// `use_identity_as_username true` before the first `listener` line is
    /// the default listener's in mosquitto, so a client of a TLS `listener`
    /// after it stays anonymous (the ACL's anonymous rules); fulmar took it
    /// for every listener and gave that client its certificate's user's
    /// rights.
    #[test]
    fn use_identity_as_username_before_any_listener_is_no_listeners() {
        let (config, notes) = parsed(
            "use_identity_as_username true\nlistener 8883\ncertfile s.crt\nkeyfile s.key\n\
             cafile ca.crt\nrequire_certificate true\n",
        );
        assert!(!config.auth.use_identity_as_username);
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("line 1: use_identity_as_username before any listener")),
            "{notes:?}"
        );
    }

    /// A listener's `capath` (a directory of client CAs) was ignored with a
    /// note, so `require_certificate true` with `capath` and no `cafile`
    /// did not start. It is `client_ca_path` now, alone or with `cafile`.
    #[test]
    fn capath_names_the_client_cas_of_a_listener() {
        let tls = "certfile s.crt\nkeyfile s.key\n";
        let (config, notes) = parsed(&format!(
            "listener 8883\n{tls}capath cas\nrequire_certificate true\ncrlfile crl.pem\n"
        ));
        assert!(notes.iter().all(|n| !n.contains("capath")), "{notes:?}");
        let l = &config.listeners[0];
        assert_eq!(
            l.client_ca_path.as_deref(),
            Some(Path::new("/etc/mosquitto/cas"))
        );
        assert_eq!(
            (l.client_ca.as_deref(), l.require_certificate),
            (None, Some(true))
        );
        // Both: mosquitto trusts the CAs of either.
        let (config, _) = parsed(&format!(
            "listener 8883\n{tls}cafile ca.crt\ncapath cas\nrequire_certificate true\n"
        ));
        let l = &config.listeners[0];
        assert!(l.client_ca.is_some() && l.client_ca_path.is_some());
        // capath without certfile: no TLS, so no client CAs either.
        let (config, _) = parsed("listener 1883\ncapath cas\n");
        assert!(!config.listeners[0].has_client_ca());
    }

    #[test]
    fn no_listener_is_local_port_1883_and_anonymous() {
        let (config, notes) = parsed("# nothing\n");
        assert!(notes.is_empty());
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(config.listeners[0].bind, "127.0.0.1:1883");
        assert_eq!(config.auth.allow_anonymous, Some(true));
        assert!(!config.persistence.enabled);
        assert_eq!(config.sys.interval_secs, 10);
        assert_eq!(config.limits.max_packet_size.get(), 268_435_455);
    }

    /// The mosquitto.conf of Debian's and Ubuntu's package ends with
    /// `include_dir /etc/mosquitto/conf.d`, which was refused: `fulmar
    /// broker -c /etc/mosquitto/mosquitto.conf` did not start (found by a
    /// documentation review).
    #[test]
    fn include_dir_reads_the_conf_files_of_the_directory_in_order() {
        let base = std::env::temp_dir().join(format!("fulmar-include-dir-{}", std::process::id()));
        let dir = base.join("conf.d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("README"), "not a directive\n").unwrap();
        std::fs::write(dir.join("b.conf"), "max_queued_messages 300\n").unwrap();
        std::fs::write(
            dir.join("a.conf"),
            "listener 1884 127.0.0.1\nmax_queued_messages 200\npid_file x\n",
        )
        .unwrap();
        let main = "persistence true\ninclude_dir conf.d\n";
        let (config, notes) = parse(main, &base).unwrap();
        assert_eq!(config.listeners[0].bind, "127.0.0.1:1884");
        // b.conf after a.conf.
        assert_eq!(config.limits.max_queued_messages, 300);
        assert!(config.persistence.enabled);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].ends_with("a.conf line 3: pid_file ignored: not supported"),
            "{notes:?}"
        );
        // An empty directory (the package's conf.d holds only a README).
        std::fs::remove_file(dir.join("a.conf")).unwrap();
        std::fs::remove_file(dir.join("b.conf")).unwrap();
        let (config, _) = parse(main, &base).unwrap();
        assert_eq!(config.listeners[0].bind, "127.0.0.1:1883");
        // Only from the main file, as in mosquitto; a missing directory is an error.
        std::fs::write(dir.join("c.conf"), "include_dir more\n").unwrap();
        let e = parse(main, &base).unwrap_err();
        assert!(
            e.contains("c.conf line 1: include_dir: only the main"),
            "{e}"
        );
        let e = parse("include_dir nowhere\n", &base).unwrap_err();
        assert!(e.starts_with("line 1: include_dir "), "{e}");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_typical_installation() {
        let (config, notes) = parsed(
            "pid_file /run/mosquitto/mosquitto.pid\n\
             persistence true\n\
             persistence_location /var/lib/mosquitto/\n\
             log_dest file /var/log/mosquitto/mosquitto.log\n\
             log_type error\n\
             log_type information\n\
             \n\
             listener 1883\n\
             listener 8883 0.0.0.0\n\
             certfile certs/server.crt\n\
             keyfile certs/server.key\n\
             cafile certs/ca.crt\n\
             require_certificate true\n\
             use_identity_as_username true\n\
             listener 9001 ::1\n\
             protocol websockets\n\
             password_file passwd\n\
             acl_file /etc/mosquitto/acl\n\
             max_queued_messages 500\n\
             message_size_limit 1048576\n\
             sys_interval 10\n",
        );
        let binds: Vec<(&str, Protocol)> = config
            .listeners
            .iter()
            .map(|l| (l.bind.as_str(), l.protocol))
            .collect();
        assert_eq!(
            binds,
            [
                ("0.0.0.0:1883", Protocol::Tcp),
                ("0.0.0.0:8883", Protocol::Tls),
                ("[::1]:9001", Protocol::Ws)
            ]
        );
        let tls = &config.listeners[1];
        assert_eq!(
            tls.cert.as_deref(),
            Some(Path::new("/etc/mosquitto/certs/server.crt"))
        );
        assert_eq!(tls.require_certificate, Some(true));
        assert!(config.auth.use_identity_as_username);
        assert_eq!(
            config.auth.password_file.as_deref(),
            Some(Path::new("/etc/mosquitto/passwd"))
        );
        assert_eq!(config.auth.allow_anonymous, Some(false));
        assert!(config.persistence.enabled);
        assert_eq!(config.persistence.dir, Path::new("/var/lib/mosquitto/"));
        assert_eq!(config.limits.max_queued_messages, 500);
        // The payload, as mosquitto; packets stay unbounded but by MQTT.
        assert_eq!(config.limits.max_payload_size, 1_048_576);
        assert_eq!(config.limits.max_packet_size.get(), 268_435_455);
        assert_eq!(config.sys.interval_secs, 10);
        assert_eq!(config.log.level, "info");
        // pid_file, log_dest.
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].starts_with("line 1: pid_file ignored"),
            "{notes:?}"
        );
        assert!(
            notes[1].starts_with("line 4: log_dest ignored"),
            "{notes:?}"
        );
        assert_eq!(config.listeners[2].path.as_deref(), Some("*"));
    }

    // `port` is mosquitto's default listener: on every address, a configured
    // listener (anonymous clients refused by default), next to `listener`
    // ones; found by a review against mosquitto 2.0.11.
    #[test]
    fn port_makes_the_default_listener() {
        let (config, _) = parsed("port 1884\n");
        let binds: Vec<&str> = config.listeners.iter().map(|l| l.bind.as_str()).collect();
        assert_eq!(binds, ["0.0.0.0:1884"]);
        assert_eq!(config.auth.allow_anonymous, Some(false));
        let (config, _) =
            parsed("listener 1885 127.0.0.1\nport 1884\nbind_address 127.0.0.1\nport 1886\n");
        let binds: Vec<&str> = config.listeners.iter().map(|l| l.bind.as_str()).collect();
        assert_eq!(binds, ["127.0.0.1:1886", "127.0.0.1:1885"]);
        // Settings before any `listener` are the default listener's.
        let (config, _) = parsed("port 8883\ncertfile c.pem\nkeyfile k.pem\n");
        assert_eq!(config.listeners[0].protocol, Protocol::Tls);
    }

    #[test]
    fn mosquittos_unlimited_values() {
        let (config, _) = parsed("max_connections -1\n");
        assert_eq!(config.limits.max_connections, usize::MAX);
        let (config, _) = parsed("max_connections 50\n");
        assert_eq!(config.limits.max_connections, 50);
        let (config, notes) = parsed("max_queued_bytes 0\nmax_queued_messages 0\n");
        assert_eq!(config.limits.max_queued_bytes, 16 << 20);
        assert_eq!(notes.len(), 2, "{notes:?}");
    }

    // Checked against mosquitto 2.0.11: message_size_limit bounds the
    // payload (a larger one is dropped, the connection stays), max_packet_size
    // the packet, each on its own; fulmar took both for the packet size
    // (the last one given won), 66 560 bytes over for message_size_limit.
    // Values mosquitto refuses stop fulmar too.
    #[test]
    fn message_size_limit_is_the_payload_and_max_packet_size_the_packet() {
        let (config, notes) = parsed("message_size_limit 100\nmax_packet_size 1000\n");
        assert_eq!(config.limits.max_payload_size, 100);
        assert_eq!(config.limits.max_packet_size.get(), 1000);
        assert!(notes.is_empty(), "{notes:?}");
        let (config, _) = parsed("max_packet_size 1000\nmessage_size_limit 0\n");
        assert_eq!(config.limits.max_payload_size, 0);
        assert_eq!(config.limits.max_packet_size.get(), 1000);
        for bad in [
            "message_size_limit 268435456",
            "message_size_limit -1",
            "max_packet_size 10",
            "max_packet_size -1",
        ] {
            let error = parse(bad, Path::new("/etc/mosquitto")).unwrap_err();
            assert!(error.starts_with("line 1: "), "{bad}: {error}");
        }
    }

    // Checked against mosquitto 2.0.11: max_inflight_messages is the
    // Receive Maximum in its CONNACK to MQTT 5.0 clients; fulmar ignored it.
    // (v5:MQTT-3.3.4-7 holds the client to it; config)
    #[test]
    fn max_inflight_messages_is_the_receive_maximum() {
        for (value, most) in [("2", 2), ("0", 65_535), ("20", 20), ("70000", 65_535)] {
            let (config, notes) = parsed(&format!("max_inflight_messages {value}\n"));
            assert_eq!(config.limits.receive_maximum.get(), most, "{value}");
            // Checked against mosquitto 2.0.11: with 2, a 3.1.1 subscriber
            // that acknowledges nothing gets 2 of 5 QoS 1 messages; fulmar
            // sent all 5 (its outbound bound stayed 256).
            assert_eq!(config.limits.max_outbound_inflight.get(), most, "{value}");
            assert!(notes.is_empty(), "{notes:?}");
        }
        let e = parse("max_inflight_messages -1\n", Path::new(".")).unwrap_err();
        assert!(e.starts_with("line 1: max_inflight_messages"), "{e}");
    }

    // mosquitto 2.0's max_connections, max_qos and max_topic_alias hold for
    // the listener they follow (mosquitto.conf(5); max_qos and
    // max_topic_alias checked against mosquitto 2.0.11): so in fulmar, each
    // that listener's own. Before any `listener` line they are the broker's,
    // which a file with several listeners is told at start.
    // (config, no spec statement)
    #[test]
    fn max_connections_qos_and_topic_alias_are_per_listener() {
        let (config, notes) = parsed(
            "listener 1883\nmax_connections 5\nmax_qos 1\n\
             listener 8883\nmax_connections 7\nmax_topic_alias 3\nlistener 8884\n",
        );
        assert!(notes.is_empty(), "{notes:?}");
        let own = |l: &ListenerConfig| (l.max_connections, l.maximum_qos, l.topic_alias_maximum);
        assert_eq!(
            config.listeners.iter().map(own).collect::<Vec<_>>(),
            [
                (Some(5), Some(1), None),
                (Some(7), None, Some(3)),
                (None, None, None)
            ]
        );
        assert_eq!(
            (
                config.limits.max_connections,
                config.limits.maximum_qos,
                config.limits.topic_alias_maximum
            ),
            (usize::MAX, 2, Config::default().limits.topic_alias_maximum),
            "the defaults stay the broker's"
        );
        // One listener: the same, and nothing to say.
        let (config, notes) = parsed("listener 1883\nmax_connections 5\n");
        assert_eq!(config.listeners[0].max_connections, Some(5));
        assert!(notes.is_empty(), "{notes:?}");
        // Before any listener: the broker's, noted where several follow.
        let (config, notes) = parsed("max_connections 5\nmax_qos 1\nmax_topic_alias 3\n");
        assert_eq!(config.limits.max_connections, 5);
        assert!(notes.is_empty(), "{notes:?}");
        let (config, notes) = parsed(
            "max_connections 5\nmax_qos 1\nmax_topic_alias 3\nlistener 1883\nlistener 8883\n",
        );
        assert_eq!(
            (
                config.limits.max_connections,
                config.limits.maximum_qos,
                config.limits.topic_alias_maximum
            ),
            (5, 1, 3)
        );
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(
            notes[0].starts_with("line 1: max_connections 5: "),
            "{notes:?}"
        );
        assert!(
            notes[1].starts_with("line 2: max_qos 1: mosquitto applies"),
            "{notes:?}"
        );
        assert!(
            notes[2].starts_with("line 3: max_topic_alias 3: "),
            "{notes:?}"
        );
    }

    /// The global queue limits hold for what waits for a bridge's remote too,
    /// wherever they are in the file (found by an operator review: a bridge
    /// kept its own 1000 and dropped the rest).
    #[test]
    fn queue_limits_apply_to_bridges() {
        let (config, _) = parsed(
            "connection cloud
             address 127.0.0.1:1884
             topic s/# out 1
             max_queued_messages 5000
             max_queued_bytes 1000000
",
        );
        let bridge = &config.bridges[0];
        assert_eq!(
            (bridge.max_queued_messages, bridge.max_queued_bytes),
            (5000, 1_000_000)
        );
        let (config, _) = parsed(
            "connection c
address h:1
topic s/# out 1
",
        );
        assert_eq!(config.bridges[0].max_queued_messages, 1000);
    }

    /// `address h1 h2`: the first, then the others when it fails (found by an
    /// operator review: the others were dropped without a word).
    #[test]
    fn a_bridge_address_list_keeps_its_fallbacks() {
        let (config, _) = parsed(
            "connection cloud
             addresses 127.0.0.1:19285 127.0.0.1:19286 standby
             topic s/# out 1
",
        );
        let bridge = &config.bridges[0];
        assert_eq!(bridge.address, "127.0.0.1:19285");
        assert_eq!(bridge.fallback_addresses, ["127.0.0.1:19286", "standby"]);
    }

    #[test]
    fn bridges_map_to_bridge_tables() {
        let (config, notes) = parsed(
            "connection cloud\n\
             address broker.example:8883\n\
             bridge_protocol_version mqttv50\n\
             bridge_cafile ca.pem\n\
             remote_username site7\n\
             remote_password s3cret\n\
             cleansession true\n\
             topic sensors/# out 1 \"\" site-7/\n\
             topic commands/# in 2\n\
             topic both/#  both\n\
             notifications false\n",
        );
        assert_eq!(notes.len(), 0, "{notes:?}");
        let bridge = &config.bridges[0];
        assert_eq!(bridge.name, "cloud");
        assert!(!bridge.notifications);
        // mosquitto's state topic: after the client identifier.
        let host = crate::config::host_name();
        assert_eq!(
            bridge.notification_topic.as_deref(),
            Some(format!("$SYS/broker/connection/{host}.cloud/state").as_str())
        );
        assert_eq!(bridge.address, "broker.example:8883");
        assert_eq!(bridge.version, "5");
        assert_eq!(bridge.protocol, Protocol::Tls);
        assert_eq!(bridge.username.as_deref(), Some("site7"));
        assert!(bridge.clean_start);
        let topics: Vec<(&str, &str, u8, &str, &str)> = bridge
            .topics
            .iter()
            .map(|t| {
                (
                    t.pattern.as_str(),
                    t.direction.as_str(),
                    t.qos,
                    t.local_prefix.as_str(),
                    t.remote_prefix.as_str(),
                )
            })
            .collect();
        assert_eq!(
            topics,
            [
                ("sensors/#", "out", 1, "", "site-7/"),
                ("commands/#", "in", 2, "", ""),
                ("both/#", "both", 0, "", ""),
            ]
        );
    }

    /// Found by an operator review: `bridge_capath` was ignored, so the
    /// bridge ran over plain TCP and sent remote_password in clear;
    /// `bridge_psk` / `bridge_identity` likewise. Now TLS with the
    /// directory's CAs, or a refusal to start.
    #[test]
    fn bridge_tls_directives_hold_or_refuse_to_start() {
        let base = "connection cloud
address broker.example:8883
topic s/# out 1
                    remote_username u
remote_password p
";
        let (config, notes) = parsed(&format!(
            "{base}bridge_capath certs
"
        ));
        assert!(notes.is_empty(), "{notes:?}");
        let bridge = &config.bridges[0];
        assert_eq!(bridge.protocol, Protocol::Tls);
        assert_eq!(
            bridge.ca_path.as_deref(),
            Some(Path::new("/etc/mosquitto/certs"))
        );
        for directive in [
            "bridge_psk 0123456789abcdef",
            "bridge_identity edge",
            "bridge_require_ocsp true",
        ] {
            let e = parse(
                &format!(
                    "{base}{directive}
"
                ),
                Path::new("/etc/mosquitto"),
            )
            .unwrap_err();
            assert!(e.contains("refuses to start"), "{directive}: {e}");
        }
        let (_, notes) = parsed(&format!(
            "{base}bridge_require_ocsp false
"
        ));
        assert!(notes.is_empty(), "{notes:?}");
    }

    /// Found by differential testing against mosquitto 2.0.11:
    /// `bridge_tls_version tlsv1.3` was ignored (with a note), so the bridge
    /// spoke TLS 1.2 to a remote that offered no more, where mosquitto's
    /// bridge refuses it ("tlsv1 alert protocol version"). Now TLS 1.3 only;
    /// tlsv1.2 (and the older ones, which fulmar does not speak) are 1.2 or
    /// 1.3, as the default; without bridge_cafile / bridge_capath it does
    /// nothing, as in mosquitto.
    #[test]
    fn bridge_tls_version_maps() {
        let base = "connection cloud\naddress h:8883\ntopic s/# out 1\n";
        let ca = std::env::temp_dir().join(format!("fulmar-bridge-tls-{}.pem", std::process::id()));
        let cert = rcgen::generate_simple_self_signed(vec!["ca.example".to_owned()]).unwrap();
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        let tls = format!("bridge_cafile {}\n", ca.display());
        let (config, notes) = parsed(&format!("{base}{tls}bridge_tls_version tlsv1.3\n"));
        assert!(notes.is_empty(), "{notes:?}");
        let bridge = &config.bridges[0];
        assert_eq!(bridge.tls_version.as_deref(), Some("1.3"));
        let remote = format!("{:?}", bridge.to_remote(1).unwrap().options());
        assert!(remote.contains("tls13_only: true"), "{remote}");
        for old in ["tlsv1.2", "tlsv1.1", "tlsv1"] {
            let (config, notes) = parsed(&format!("{base}bridge_tls_version {old}\n{tls}"));
            assert!(notes.is_empty(), "{notes:?}");
            assert_eq!(config.bridges[0].tls_version.as_deref(), Some("1.2"));
            let remote = format!("{:?}", config.bridges[0].to_remote(1).unwrap().options());
            assert!(remote.contains("tls13_only: false"), "{remote}");
        }
        let (config, _) = parsed(&format!("{base}bridge_tls_version tlsv1.3\n"));
        assert_eq!(config.bridges[0].tls_version, None);
        assert!(config.bridges[0].check(1).is_ok());
        let e = parse(
            &format!("{base}bridge_tls_version sslv3\n"),
            Path::new("/etc/mosquitto"),
        )
        .unwrap_err();
        assert!(e.contains("tlsv1.3"), "{e}");
        std::fs::remove_file(&ca).unwrap();
    }

    /// Found by differential testing against mosquitto 2.0: ignored (with a
    /// note), so retained messages went to the remote retained.
    // (config, no spec statement)
    #[test]
    fn bridge_outgoing_retain_maps() {
        let base = "connection cloud\naddress h:1883\ntopic s/# out 1\n";
        let (config, notes) = parsed(base);
        assert!(config.bridges[0].outgoing_retain);
        assert!(notes.is_empty(), "{notes:?}");
        let (config, notes) = parsed(&format!("{base}bridge_outgoing_retain false\n"));
        assert!(!config.bridges[0].outgoing_retain);
        assert!(notes.is_empty(), "{notes:?}");
        let (config, _) = parsed(&format!(
            "{base}bridge_outgoing_retain false\nbridge_outgoing_retain true\n"
        ));
        assert!(config.bridges[0].outgoing_retain);
        assert!(
            parse(
                &format!("{base}bridge_outgoing_retain no\n"),
                Path::new(".")
            )
            .is_err()
        );
    }

    /// Found by differential testing against mosquitto 2.0: `notifications
    /// false` turned off only the state on the remote; mosquitto publishes
    /// it nowhere then. `notifications_local_only` keeps it here.
    // (config, no spec statement)
    #[test]
    fn notifications_false_publishes_the_state_nowhere() {
        let base = "connection cloud\naddress h:1883\ntopic s/# out 1\n";
        let (config, _) = parsed(base);
        assert!(config.bridges[0].local_notifications);
        assert!(config.bridges[0].notifications);
        let (config, _) = parsed(&format!("{base}notifications false\n"));
        assert!(!config.bridges[0].local_notifications);
        assert!(!config.bridges[0].notifications);
        let (config, _) = parsed(&format!("{base}notifications_local_only true\n"));
        assert!(config.bridges[0].local_notifications);
        assert!(!config.bridges[0].notifications);
        let (config, _) = parsed(&format!(
            "{base}notifications false\nnotifications_local_only true\n"
        ));
        assert!(!config.bridges[0].local_notifications);
        assert!(!config.bridges[0].notifications);
    }

    /// Found by differential testing against mosquitto 2.0: its bridge
    /// keeps QoS 1/2 messages for a link that is down, and none with
    /// `cleansession true`; fulmar's kept all of them.
    // (config, no spec statement)
    #[test]
    fn what_waits_for_a_down_bridge_follows_cleansession() {
        let base = "connection cloud\naddress h:1883\ntopic s/# out 1\n";
        let (config, _) = parsed(base);
        assert_eq!(config.bridges[0].queue_while_down, QueueWhileDown::Qos12);
        let (config, _) = parsed(&format!("{base}cleansession true\n"));
        assert_eq!(config.bridges[0].queue_while_down, QueueWhileDown::None);
        let (config, _) = parsed(&format!("{base}cleansession true\ncleansession false\n"));
        assert_eq!(config.bridges[0].queue_while_down, QueueWhileDown::Qos12);
    }

    /// Found by an operator review: both were ignored (the session was kept
    /// 3600 s whatever the file said, and the state went to the remote).
    #[test]
    fn bridge_session_expiry_and_local_only_notifications_map() {
        let base = "connection cloud
address h:1883
topic s/# out 1
";
        let (config, notes) = parsed(&format!(
            "{base}bridge_session_expiry_interval 120
notifications_local_only true
"
        ));
        assert!(notes.is_empty(), "{notes:?}");
        let bridge = &config.bridges[0];
        assert_eq!(bridge.session_expiry_secs, 120);
        assert!(!bridge.notifications);
        let (config, _) = parsed(&format!(
            "{base}notifications_local_only false
"
        ));
        assert!(config.bridges[0].notifications);
        // local_only wins over `notifications true`, before or after it
        // (found by a review: a later `notifications true` undid it).
        for directives in [
            "notifications_local_only true\nnotifications true\n",
            "notifications true\nnotifications_local_only true\n",
        ] {
            let (config, notes) = parsed(&format!("{base}{directives}"));
            assert!(notes.is_empty(), "{notes:?}");
            assert!(!config.bridges[0].notifications, "{directives}");
        }
        // The last local_only of the section counts; `notifications
        // false` still turns them off.
        let (config, _) = parsed(&format!(
            "{base}notifications_local_only true\nnotifications_local_only false\n"
        ));
        assert!(config.bridges[0].notifications);
        let (config, _) = parsed(&format!(
            "{base}notifications false\nnotifications_local_only false\n"
        ));
        assert!(!config.bridges[0].notifications);
        // Per section.
        let (config, _) = parsed(&format!(
            "{base}notifications_local_only true\nconnection other\naddress h:1884\ntopic t/# out 1\nnotifications true\n"
        ));
        assert!(!config.bridges[0].notifications);
        assert!(config.bridges[1].notifications);
        assert!(
            parse(
                &format!(
                    "{base}bridge_session_expiry_interval soon
"
                ),
                Path::new(".")
            )
            .is_err()
        );
    }

    /// `mount_point` is the listener's it follows (mosquitto's); before any
    /// `listener` line, the default listener's (`port`, or the implicit one).
    // (mount point, no spec statement)
    #[test]
    fn mount_point_is_the_listeners_it_follows() {
        let (config, notes) = parsed(
            "listener 1883
mount_point tenant1/
listener 1884
",
        );
        assert!(notes.is_empty(), "{notes:?}");
        let mounts: Vec<_> = config
            .listeners
            .iter()
            .map(|l| l.mount_point.as_deref())
            .collect();
        assert_eq!(mounts, [Some("tenant1/"), None]);
        let (config, _) = parsed(
            "port 1883
mount_point t/
listener 1884
mount_point u
",
        );
        let mounts: Vec<_> = config
            .listeners
            .iter()
            .map(|l| l.mount_point.as_deref())
            .collect();
        assert_eq!(mounts, [Some("t/"), Some("u")]);
        let (config, _) = parsed(
            "mount_point t/
",
        );
        assert_eq!(config.listeners[0].bind, "127.0.0.1:1883");
        assert_eq!(config.listeners[0].mount_point.as_deref(), Some("t/"));
        assert_eq!(config.auth.allow_anonymous, Some(true));
        // The TOML printed for it keeps it.
        let toml = toml::to_string(&config).unwrap();
        assert!(toml.contains("mount_point = \"t/\""), "{toml}");
        for wrong in [
            "mount_point t/\nlistener 1883\n",
            "listener 1883\nmount_point\n",
            "listener 1883\nmount_point a/+/\n",
            "listener 1883\nmount_point a/#\n",
        ] {
            assert!(parse(wrong, Path::new(".")).is_err(), "{wrong:?}");
        }
    }

    /// Found by an operator review: these were ignored with a note, so a
    /// PSK listener ran as plain TCP, a `mount_point` tenant saw the
    /// others' topics (`mount_point` is supported since: see
    /// `mount_point_is_the_listeners_it_follows`), `bind_interface lo`
    /// listened on every interface, and retained messages were delivered
    /// without mosquitto's check of their publisher, all with
    /// "configuration OK".
    #[test]
    fn directives_that_would_open_the_broker_refuse_to_start() {
        for directive in [
            "psk_hint hint",
            "psk_file /etc/mosquitto/psk",
            "bind_interface lo",
            "check_retain_source true",
            "plugin /usr/lib/mosquitto_dynamic_security.so",
            "auth_plugin /usr/lib/auth.so",
            "plugin_load dynsec /usr/lib/mosquitto_dynamic_security.so",
            "global_plugin /usr/lib/mosquitto_dynamic_security.so",
            "listener_allow_anonymous false",
        ] {
            let e = parse(
                &format!("listener 1883\nallow_anonymous true\n{directive}\n"),
                Path::new("/etc/mosquitto"),
            )
            .unwrap_err();
            let key = directive.split(' ').next().unwrap_or_default();
            assert!(e.starts_with(&format!("line 3: {key}: ")), "{e}");
            assert!(e.contains("not supported"), "{e}");
        }
        // `false` asks for what fulmar does.
        let (_, notes) = parsed("listener 1883\ncheck_retain_source false\n");
        assert!(notes.is_empty(), "{notes:?}");
        let (_, notes) = parsed("listener 1883\nretain_available true\n");
        assert!(notes.is_empty(), "{notes:?}");
    }

    // Checked against mosquitto 2.0.11: these refuse clients without an
    // identifier and retained messages; fulmar refused to start with them.
    #[test]
    fn retain_available_and_allow_zero_length_clientid_map() {
        let (config, notes) =
            parsed("listener 1883\nretain_available false\nallow_zero_length_clientid false\n");
        assert!(!config.limits.retain_available);
        assert!(!config.limits.assign_client_ids);
        assert!(notes.is_empty(), "{notes:?}");
        let (config, notes) =
            parsed("listener 1883\nretain_available true\nallow_zero_length_clientid true\n");
        assert!(config.limits.retain_available);
        assert!(config.limits.assign_client_ids);
        assert!(notes.is_empty(), "{notes:?}");
    }

    // mosquitto 2.0.11 ends a session this long after its client left at
    // the latest (the shorter of this and the client's interval, in its
    // src/session_expiry.c); fulmar ignored it, so 3.1.1 sessions with clean
    // session 0 never expired. Values mosquitto 2.0.11 refuses to start with
    // (`5s`, `bogus`, checked) stop fulmar too.
    #[test]
    fn persistent_client_expiration_is_the_longest_session_expiry() {
        for (value, secs) in [
            ("2h", 7200),
            ("14d", 14 * 86_400),
            ("1w", 7 * 86_400),
            ("2m", 60 * 86_400),
            ("1y", 365 * 86_400),
        ] {
            let (config, notes) = parsed(&format!("persistent_client_expiration {value}\n"));
            assert_eq!(config.limits.max_session_expiry_secs, secs, "{value}");
            assert!(notes.is_empty(), "{notes:?}");
        }
        let (config, _) = parsed("listener 1883\n");
        assert_eq!(config.limits.max_session_expiry_secs, u32::MAX);
        for bad in ["5s", "bogus", "0h", "h", "-1d"] {
            let error = parse(
                &format!("persistent_client_expiration {bad}\n"),
                Path::new("/etc/mosquitto"),
            )
            .unwrap_err();
            assert!(
                error.starts_with("line 1: persistent_client_expiration: "),
                "{bad}: {error}"
            );
        }
    }

    // Checked against mosquitto 2.0.11: the identifiers it gives begin
    // with `auto-`, or with auto_id_prefix; fulmar ignored it.
    #[test]
    fn auto_id_prefix_maps_with_mosquittos_default() {
        let (config, notes) = parsed("listener 1883\nauto_id_prefix dev-\n");
        assert_eq!(config.limits.assigned_client_id_prefix, "dev-");
        assert!(notes.is_empty(), "{notes:?}");
        let (config, _) = parsed("listener 1883\n");
        assert_eq!(config.limits.assigned_client_id_prefix, "auto-");
    }

    // Checked against mosquitto 2.0.11: with queue_qos0_messages true an
    // absent client gets its QoS 0 messages on return; fulmar ignored it.
    #[test]
    fn queue_qos0_messages_maps() {
        let (config, notes) = parsed("listener 1883\nqueue_qos0_messages true\n");
        assert!(config.limits.queue_qos0_offline);
        assert!(notes.is_empty(), "{notes:?}");
        let (config, _) = parsed("listener 1883\n");
        assert!(!config.limits.queue_qos0_offline);
    }

    /// Found by an operator review: mosquitto passes `auth_opt_NAME` and
    /// `plugin_opt_NAME` to the plugin, whatever NAME; fulmar refused them
    /// as "not a mosquitto configuration directive". Without a plugin line
    /// (which fulmar refuses) they are ignored with a note.
    #[test]
    fn plugin_options_are_ignored_with_the_plugin() {
        let (_, notes) = parsed(
            "listener 1883\nauth_opt_backends mysql\n\
             plugin_opt_config_file /var/lib/mosquitto/dynamic-security.json\n",
        );
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].starts_with("line 2: auth_opt_backends ignored: not supported"),
            "{notes:?}"
        );
        assert!(
            notes[1].starts_with("line 3: plugin_opt_config_file ignored: not supported"),
            "{notes:?}"
        );
        // A prefix alone, or another word, is still unknown.
        for text in ["auth_opt_ x\n", "plugin_options x\n"] {
            let e = parse(text, Path::new(".")).unwrap_err();
            assert!(e.contains("not a mosquitto configuration directive"), "{e}");
        }
    }

    #[test]
    fn errors_name_the_line() {
        for (text, line) in [
            ("listener\n", "line 1"),
            ("persistence yes\n", "line 1"),
            ("\nlistener 1883\nprotocol ftp\n", "line 3"),
            ("certfile a.pem\n", "line 1"),
            ("no_such_thing 1\n", "line 1"),
            ("connection b\ntopic x sideways\n", "line 2"),
            ("max_qos 3\n", "line 1"),
            ("per_listener_settings true\n", "line 1"),
        ] {
            let err = parse(text, Path::new(".")).unwrap_err();
            assert!(err.starts_with(line), "{text:?}: {err}");
        }
    }
}
