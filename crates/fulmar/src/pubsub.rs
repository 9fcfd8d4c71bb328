//! `fulmar pub` and `fulmar sub`: command-line clients with mosquitto_pub /
//! mosquitto_sub's flags, and output made for pipes (one payload per line).

use std::io::{Read, Write};
use std::net::{IpAddr, ToSocketAddrs};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::{ArgAction, Args};
use fulmar_client::{
    Client, ConnectOptions, Message, Messages, ProtocolVersion, PublishProperties, QoS, Reconnect,
    SubscribeProperties, SubscriptionOptions, TlsOptions, Transport, Will,
};
use fulmar_codec::MqttString;
use futures::StreamExt;
use futures::stream::{BoxStream, PollNext};

use crate::format::{Format, JsonStyle};
use crate::logging::{self, LogFormat};

/// Connection options shared by `pub` and `sub`.
#[derive(Debug, Args)]
pub(crate) struct ConnArgs {
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
    /// Broker host [default: localhost].
    #[arg(short = 'h', long)]
    host: Option<String>,
    /// Broker port (default 1883, or 8883 with TLS).
    #[arg(short, long)]
    port: Option<u16>,
    /// Bind the outgoing socket to this local address (an IP address, or a
    /// host name resolved to one) before connecting: the broker sees the
    /// client come from it, and the connection leaves by its interface.
    #[arg(short = 'A', value_name = "ADDRESS")]
    bind_address: Option<String>,
    /// Broker, credentials and topic as one URL (as mosquitto's -L):
    /// `mqtt://[USER[:PASSWORD]@]HOST[:PORT]/TOPIC`, or `mqtts://` for TLS;
    /// -h, -p, -u, -P and -t given too take precedence.
    #[arg(short = 'L', long = "url", value_name = "URL")]
    url: Option<String>,
    /// Client identifier: this prefix followed by the process id.
    #[arg(
        short = 'I',
        long = "id-prefix",
        value_name = "PREFIX",
        conflicts_with = "id"
    )]
    id_prefix: Option<String>,
    /// Client identifier (default: assigned by the broker).
    #[arg(
        short = 'i',
        long = "id",
        value_name = "ID",
        allow_hyphen_values = true
    )]
    id: Option<String>,
    /// User name.
    #[arg(short, long, allow_hyphen_values = true)]
    username: Option<String>,
    /// Password.
    #[arg(short = 'P', long, allow_hyphen_values = true)]
    pw: Option<String>,
    /// MQTT version: 5 (mqttv5), 311 (mqttv311) or 31 (mqttv31).
    #[arg(short = 'V', long = "protocol-version", value_name = "VERSION", default_value = "5", value_parser = parse_version)]
    version: ProtocolVersion,
    /// Keep alive in seconds.
    #[arg(short, long, value_name = "SECONDS", default_value_t = 60)]
    keepalive: u16,
    /// The most QoS 1 and 2 messages sent and not yet acknowledged at once,
    /// 1 to 65535 (under MQTT 5.0 the broker's Receive Maximum, if lower,
    /// wins). `pub -l` keeps at most 32 lines on their way whatever this
    /// says.
    #[arg(short = 'M', value_name = "COUNT", default_value_t = 20,
          value_parser = clap::value_parser!(u16).range(1..))]
    max_inflight: u16,
    /// Disable clean session / clean start: resume the broker's session for
    /// this client id (needs -i; under MQTT 5.0 the session never expires
    /// unless -x is given).
    #[arg(short = 'c', long = "disable-clean-session")]
    no_clean: bool,
    /// Session Expiry Interval in seconds (MQTT 5.0): 0 to 4294967294, or
    /// -1, 4294967295 or ∞ for a session that never expires.
    #[arg(short = 'x', long = "session-expiry-interval", value_name = "SECONDS",
          allow_negative_numbers = true, value_parser = parse_session_expiry)]
    session_expiry: Option<u32>,
    /// Topic of a will: what the broker publishes if this client goes
    /// without a DISCONNECT (as mosquitto's --will-topic).
    #[arg(long = "will-topic", value_name = "TOPIC", allow_hyphen_values = true)]
    will_topic: Option<String>,
    /// Payload of the will (default empty).
    #[arg(
        long = "will-payload",
        value_name = "PAYLOAD",
        requires = "will_topic",
        allow_hyphen_values = true
    )]
    will_payload: Option<String>,
    /// QoS of the will: 0, 1 or 2.
    #[arg(long = "will-qos", value_name = "QOS", requires = "will_topic",
          value_parser = parse_qos)]
    will_qos: Option<QoS>,
    /// Publish the will as a retained message.
    #[arg(long = "will-retain", requires = "will_topic")]
    will_retain: bool,
    /// Trust this CA certificate (PEM) and connect over TLS.
    #[arg(long, value_name = "FILE")]
    cafile: Option<PathBuf>,
    /// Trust the CA certificates of the PEM files in this directory (any
    /// name, as in OpenSSL's hashed directories; other files are skipped)
    /// and connect over TLS.
    #[arg(long, value_name = "DIR")]
    capath: Option<PathBuf>,
    /// Connect over TLS, trusting the system's CA certificates (as well as
    /// --cafile / --capath, if given).
    #[arg(long = "tls-use-os-certs")]
    tls_use_os_certs: bool,
    /// Accepted for mosquitto's tools: fulmar always disables Nagle's
    /// algorithm.
    #[arg(long, hide = true)]
    nodelay: bool,
    /// Client certificate (PEM) for TLS; needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// With TLS, accept a server certificate that does not name the host
    /// (its chain is still checked against the trusted CAs).
    #[arg(long)]
    insecure: bool,
    /// With TLS, the lowest TLS version to speak: tlsv1.2 (the default:
    /// TLS 1.2 or 1.3, as the broker picks) or tlsv1.3 (TLS 1.3 only).
    /// tlsv1.1 is refused: fulmar speaks no TLS older than 1.2.
    #[arg(long = "tls-version", value_name = "VERSION", value_parser = parse_tls_version)]
    tls_version: Option<TlsVersion>,
    /// MQTT 5.0 property, as mosquitto: `-D COMMAND IDENTIFIER VALUE`, or
    /// `-D COMMAND user-property KEY VALUE`. COMMAND is connect (identifiers
    /// session-expiry-interval, receive-maximum, maximum-packet-size,
    /// topic-alias-maximum), publish for pub (message-expiry-interval,
    /// content-type, response-topic, correlation-data,
    /// payload-format-indicator) or subscribe for sub
    /// (subscription-identifier); user-property for each. May be repeated.
    #[arg(short = 'D', long = "property", num_args = 4, action = ArgAction::Append,
          value_names = ["COMMAND", "IDENTIFIER", "KEY", "VALUE"], allow_hyphen_values = true)]
    property: Vec<String>,
    /// `-D COMMAND IDENTIFIER VALUE` for a property other than user-property
    /// (see [`rewrite_property_flags`]).
    #[arg(long = "property-value", num_args = 3, action = ArgAction::Append, hide = true,
          value_names = ["COMMAND", "IDENTIFIER", "VALUE"], allow_hyphen_values = true)]
    property_value: Vec<String>,
    /// MQTT 5.0 user property of the PUBLISH (pub) or the SUBSCRIBE (sub). May be
    /// repeated; sent after those given with -D.
    #[arg(long = "user-property", num_args = 2, action = ArgAction::Append,
          value_names = ["KEY", "VALUE"], allow_hyphen_values = true)]
    user_property: Vec<String>,
    /// Print connection and subscription events, and debug logs, to stderr.
    #[arg(short, long)]
    debug: bool,
    /// Print no error messages (the exit status still tells).
    #[arg(long)]
    quiet: bool,
}

/// What `-L` gives.
#[derive(Debug, Default, PartialEq, Eq)]
struct Url {
    tls: bool,
    username: Option<String>,
    password: Option<String>,
    host: String,
    port: Option<u16>,
    topic: Option<String>,
}

/// Parses `mqtt(s)://[USER[:PASSWORD]@]HOST[:PORT][/TOPIC]` (an IPv6 host
/// in brackets).
fn parse_url(url: &str) -> Result<Url, String> {
    let bad = |why: &str| format!("-L {url:?}: {why}");
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected mqtt://HOST/TOPIC or mqtts://..."))?;
    let tls = match scheme {
        "mqtt" => false,
        "mqtts" => true,
        _ => return Err(bad("the scheme must be mqtt or mqtts")),
    };
    let (authority, topic) = match rest.split_once('/') {
        Some((authority, topic)) => (authority, (!topic.is_empty()).then(|| topic.to_owned())),
        None => (rest, None),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => (Some(userinfo), hostport),
        None => (None, authority),
    };
    let (username, password) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
        Some((user, pw)) => (
            Some(user.to_owned()),
            (!pw.is_empty()).then(|| pw.to_owned()),
        ),
        None => (None, None),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| bad("the port must be a number"))
        })
        .transpose()?;
    Ok(Url {
        tls,
        username,
        password,
        host: host.to_owned(),
        port,
        topic,
    })
}

fn parse_version(s: &str) -> Result<ProtocolVersion, String> {
    match s {
        "5" | "mqttv5" => Ok(ProtocolVersion::V5),
        "311" | "mqttv311" => Ok(ProtocolVersion::V311),
        "31" | "mqttv31" => Ok(ProtocolVersion::V31),
        other => Err(format!("unknown MQTT version {other:?}: use 31, 311 or 5")),
    }
}

/// `--tls-version`: the lowest TLS version, as mosquitto's tools take it
/// (OpenSSL's: tlsv1.2 still allows TLS 1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TlsVersion {
    Tls12,
    Tls13,
}

fn parse_tls_version(s: &str) -> Result<TlsVersion, String> {
    match s {
        "tlsv1.2" => Ok(TlsVersion::Tls12),
        "tlsv1.3" => Ok(TlsVersion::Tls13),
        "tlsv1.1" | "tlsv1" => Err(format!(
            "{s} is not supported (fulmar speaks TLS 1.2 and 1.3): use tlsv1.2 or tlsv1.3"
        )),
        other => Err(format!(
            "unknown TLS version {other:?}: use tlsv1.2 or tlsv1.3"
        )),
    }
}

/// `-A`: an IP address as it is; a host name resolved, to an address of the
/// broker's family when the broker is given as an IP address (`localhost`
/// may resolve to ::1 first).
fn local_address(bind: &str, broker: &str) -> Result<IpAddr, String> {
    if let Ok(ip) = bind.parse::<IpAddr>() {
        return Ok(ip);
    }
    let addresses: Vec<IpAddr> = (bind, 0)
        .to_socket_addrs()
        .map_err(|e| format!("-A {bind:?}: {e}"))?
        .map(|a| a.ip())
        .collect();
    let family = broker
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok()
        .map(|ip| ip.is_ipv4());
    addresses
        .iter()
        .find(|ip| family.is_none_or(|v4| ip.is_ipv4() == v4))
        .or(addresses.first())
        .copied()
        .ok_or_else(|| format!("-A {bind:?}: the name has no address"))
}

fn parse_qos(s: &str) -> Result<QoS, String> {
    s.parse::<u8>()
        .ok()
        .and_then(|q| QoS::try_from(q).ok())
        .ok_or_else(|| format!("QoS {s:?}: must be 0, 1 or 2"))
}

/// `-x`: seconds, or mosquitto's -1 and ∞ for "never expires" (4294967295).
fn parse_session_expiry(s: &str) -> Result<u32, String> {
    match s {
        "-1" | "∞" => Ok(u32::MAX),
        _ => s
            .parse::<u32>()
            .map_err(|_| format!("{s:?}: seconds from 0 to 4294967295, or -1 or ∞ for never")),
    }
}

fn mqtt_string(s: &str) -> Result<MqttString, String> {
    MqttString::try_new(s).map_err(|e| format!("{s:?}: {e}"))
}

/// The -D properties: user properties for the CONNECT and for the PUBLISH /
/// SUBSCRIBE (`command`), and the others (identifier, value), checked.
#[derive(Debug, Default, PartialEq, Eq)]
struct Properties {
    connect: Vec<(String, String)>,
    packet: Vec<(String, String)>,
    connect_values: Vec<(String, String)>,
    packet_values: Vec<(String, String)>,
}

/// The identifiers `-D COMMAND IDENTIFIER VALUE` takes, by command, and
/// whether the value is a number (else UTF-8 text; correlation-data: bytes).
fn property_kind(command: &str, ident: &str) -> Option<bool> {
    match (command, ident) {
        (
            "connect",
            "session-expiry-interval"
            | "receive-maximum"
            | "maximum-packet-size"
            | "topic-alias-maximum",
        )
        | ("publish", "message-expiry-interval" | "payload-format-indicator")
        | ("subscribe", "subscription-identifier") => Some(true),
        ("publish", "content-type" | "response-topic" | "correlation-data") => Some(false),
        _ => None,
    }
}

/// The number of `-D COMMAND IDENTIFIER VALUE`, in the identifier's range.
fn property_number(ident: &str, value: &str) -> Result<u32, String> {
    let max = match ident {
        "receive-maximum" | "topic-alias-maximum" => u32::from(u16::MAX),
        "payload-format-indicator" => 1,
        "subscription-identifier" => 268_435_455,
        _ => u32::MAX,
    };
    let min = u32::from(matches!(
        ident,
        "receive-maximum" | "maximum-packet-size" | "subscription-identifier"
    ));
    value
        .parse::<u32>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("-D {ident} {value:?}: a number from {min} to {max}"))
}

/// mosquitto's `-D` takes three values (`-D publish message-expiry-interval
/// 30`) or four (`-D publish user-property KEY VALUE`), by its second one,
/// which clap cannot express. Before parsing, a `-D` / `--property` whose
/// identifier is not user-property becomes the hidden `--property-value`
/// (three values). The values of the other flags are skipped by what clap
/// says each takes, so a payload `-m -D` is not taken for the flag. Other
/// subcommands are left as they are.
pub(crate) fn rewrite_property_flags(
    mut args: Vec<std::ffi::OsString>,
    cli: &clap::Command,
) -> Vec<std::ffi::OsString> {
    let Some(command) = args
        .get(1)
        .and_then(|a| a.to_str())
        .filter(|name| matches!(*name, "pub" | "sub"))
        .and_then(|name| cli.find_subcommand(name))
    else {
        return args;
    };
    let mut i = 2;
    while let Some(token) = args.get(i).and_then(|a| a.to_str()) {
        if token == "--" {
            break;
        }
        let arg = if let Some(long) = token.strip_prefix("--") {
            command.get_arguments().find(|a| a.get_long() == Some(long))
        } else {
            let mut chars = token.strip_prefix('-').unwrap_or_default().chars();
            match (chars.next(), chars.next()) {
                (Some(short), None) => command
                    .get_arguments()
                    .find(|a| a.get_short() == Some(short)),
                _ => None,
            }
        };
        let Some(arg) = arg else {
            i += 1;
            continue;
        };
        let identifier = args.get(i + 2).and_then(|a| a.to_str());
        if arg.get_id() == "property" && identifier != Some("user-property") {
            args[i] = "--property-value".into();
            i += 4;
            continue;
        }
        let values = arg.get_num_args().map_or(0, |n| n.min_values());
        i += 1 + values;
    }
    args
}

impl ConnArgs {
    fn properties(&self, command: &str) -> Result<Properties, String> {
        let mut props = Properties::default();
        for chunk in self.property.chunks_exact(4) {
            let [cmd, ident, key, value] = chunk else {
                continue;
            };
            if ident != "user-property" {
                return Err(format!("-D {cmd} {ident}: only user-property is supported"));
            }
            let pair = (key.clone(), value.clone());
            match cmd.as_str() {
                "connect" => props.connect.push(pair),
                c if c == command => props.packet.push(pair),
                other => {
                    return Err(format!(
                        "-D {other}: the command must be connect or {command}"
                    ));
                }
            }
        }
        for chunk in self.property_value.chunks_exact(3) {
            let [cmd, ident, value] = chunk else {
                continue;
            };
            let target = match cmd.as_str() {
                "connect" => &mut props.connect_values,
                c if c == command => &mut props.packet_values,
                other => {
                    return Err(format!(
                        "-D {other}: the command must be connect or {command}"
                    ));
                }
            };
            match property_kind(cmd, ident) {
                Some(true) => drop(property_number(ident, value)?),
                Some(false) => drop(mqtt_string(value)?),
                None => {
                    return Err(format!(
                        "-D {cmd} {ident}: not a property fulmar {} sets (see --help)",
                        if command == "publish" { "pub" } else { "sub" }
                    ));
                }
            }
            target.push((ident.clone(), value.clone()));
        }
        for chunk in self.user_property.chunks_exact(2) {
            if let [key, value] = chunk {
                props.packet.push((key.clone(), value.clone()));
            }
        }
        if self.version.is_v3()
            && (!props.connect.is_empty()
                || !props.packet.is_empty()
                || !props.connect_values.is_empty()
                || !props.packet_values.is_empty())
        {
            return Err("properties (-D) need MQTT 5.0 (-V 5)".to_owned());
        }
        Ok(props)
    }

    /// The topic of `-L`, if any.
    fn url_topic(&self) -> Result<Option<String>, String> {
        Ok(self
            .url
            .as_deref()
            .map(parse_url)
            .transpose()?
            .and_then(|u| u.topic))
    }

    fn options(&self, props: &Properties) -> Result<ConnectOptions, String> {
        let url = self
            .url
            .as_deref()
            .map(parse_url)
            .transpose()?
            .unwrap_or_default();
        let tls = self.cafile.is_some()
            || self.capath.is_some()
            || self.tls_use_os_certs
            || self.cert.is_some()
            || url.tls;
        let port = self
            .port
            .or(url.port)
            .unwrap_or(if tls { 8883 } else { 1883 });
        let host = match (&self.host, self.url.is_some()) {
            (Some(host), _) => host.clone(),
            (None, true) => url.host,
            (None, false) => "localhost".to_owned(),
        };
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let local = self
            .bind_address
            .as_deref()
            .map(|bind| local_address(bind, &host))
            .transpose()?;
        let mut options = ConnectOptions::new(host, port)
            .protocol_version(self.version)
            .keep_alive(Duration::from_secs(u64::from(self.keepalive)))
            .clean_start(!self.no_clean)
            .max_inflight(self.max_inflight)
            .reconnect(Reconnect::disabled());
        if let Some(local) = local {
            options = options.local_address(local);
        }
        if tls {
            let mut tls = TlsOptions::new();
            if (self.cafile.is_some() || self.capath.is_some()) && !self.tls_use_os_certs {
                tls = tls.without_system_roots();
            }
            if let Some(ca) = &self.cafile {
                tls = tls
                    .ca_pem(&read(ca)?)
                    .map_err(|e| format!("--cafile {}: {e}", ca.display()))?;
            }
            if let Some(dir) = &self.capath {
                for der in crate::ca_path::certificates(dir).map_err(|e| format!("--capath {e}"))? {
                    tls = tls.ca_der(der);
                }
            }
            if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
                tls = tls
                    .client_auth_pem(&read(cert)?, &read(key)?)
                    .map_err(|e| format!("--cert/--key: {e}"))?;
            }
            if self.insecure {
                tls = tls.skip_hostname_verification();
            }
            if self.tls_version == Some(TlsVersion::Tls13) {
                tls = tls.tls13_only();
            }
            options = options.transport(Transport::Tls(tls));
        }
        match (&self.id, &self.id_prefix) {
            (Some(id), _) => options = options.client_id(id.clone()),
            // A session under a new identifier at each run would never be
            // resumed: -c needs -i, as for mosquitto's tools.
            (None, _) if self.no_clean => return Err("-c needs a client id (-i)".to_owned()),
            (None, Some(prefix)) => {
                options = options.client_id(format!("{prefix}{}", std::process::id()));
            }
            // MQTT 3.1 needs an identifier; mosquitto's tools make one up too.
            (None, None) if self.version == ProtocolVersion::V31 => {
                options = options.client_id(format!("fulmar-{}", std::process::id()));
            }
            (None, None) => {}
        }
        let username = self.username.clone().or(url.username);
        let pw = self.pw.clone().or(url.password);
        match (&username, &pw) {
            (Some(user), Some(pw)) => options = options.credentials(user.clone(), pw.clone()),
            (Some(user), None) => options = options.username(user.clone()),
            (None, Some(_)) => return Err("-P needs -u".to_owned()),
            (None, None) => {}
        }
        match (self.session_expiry, self.version) {
            (Some(_), ProtocolVersion::V31 | ProtocolVersion::V311) => {
                return Err("-x needs MQTT 5.0 (-V 5)".to_owned());
            }
            (Some(seconds), _) => options = options.session_expiry_interval(seconds),
            (None, ProtocolVersion::V5) if self.no_clean => {
                options = options.session_expiry_interval(u32::MAX);
            }
            (None, _) => {}
        }
        if let Some(topic) = &self.will_topic {
            topic
                .parse::<fulmar_topic::TopicName>()
                .map_err(|e| format!("--will-topic {topic:?}: {e}"))?;
            let payload = self.will_payload.clone().unwrap_or_default();
            let mut will = Will::new(mqtt_string(topic)?, payload.into());
            will.qos = self.will_qos.unwrap_or(QoS::AtMostOnce);
            will.retain = self.will_retain;
            options = options.will(will);
        }
        for (key, value) in &props.connect {
            options = options.user_property(key.clone(), value.clone());
        }
        for (ident, value) in &props.connect_values {
            let n = property_number(ident, value)?;
            let small = u16::try_from(n).unwrap_or(u16::MAX);
            options = match ident.as_str() {
                "session-expiry-interval" => options.session_expiry_interval(n),
                "receive-maximum" => options.receive_maximum(small),
                "maximum-packet-size" => options.maximum_packet_size(n),
                _ => options.topic_alias_maximum(small),
            };
        }
        Ok(options)
    }

    async fn connect(&self, props: &Properties) -> Result<Client, Failure> {
        Ok(self.connect_for(props, false, false).await?.0)
    }

    /// Connects; with `queued` and -c, also returns the stream of the
    /// messages no new subscription takes: what the kept session queued
    /// while this client was away, which the broker sends right after
    /// CONNACK, before the SUBACK of a new subscription. With `reconnect`,
    /// a connection lost after the first one is made again (with back-off),
    /// as mosquitto_sub does; the first one failing is an error.
    async fn connect_for(
        &self,
        props: &Properties,
        queued: bool,
        reconnect: bool,
    ) -> Result<(Client, Option<Messages>), Failure> {
        // Errors reach the user as one line (`fulmar: ...`); the client's own
        // warnings (a failed connect, retried) only with -d.
        logging::init(if self.debug { "debug" } else { "error" }, LogFormat::Text)?;
        let mut options = self.options(props)?;
        if reconnect {
            options = options.reconnect(Reconnect::default());
        }
        let (host, port) = options.address();
        let target = format!("{host}:{port}");
        let connected = if queued && self.no_clean {
            // A durable consumer: messages are acknowledged once printed.
            Client::connect_with_messages(options.manual_acks(true))
                .await
                .map(|(client, connack, messages)| (client, connack, Some(messages)))
        } else {
            Client::connect(options)
                .await
                .map(|(client, connack)| (client, connack, None))
        };
        let (client, connack, messages) = connected.map_err(|e| {
            // A refusal exits with the CONNACK's code, as mosquitto_pub and
            // mosquitto_sub do (3.1.1: the return code, 1 to 5).
            let code = match &e {
                fulmar_client::Error::Refused { reason_code, .. } => match self.version {
                    ProtocolVersion::V31 | ProtocolVersion::V311 => reason_code.to_v311(),
                    _ => Some(u8::from(*reason_code)),
                },
                _ => None,
            };
            Failure {
                message: format!("cannot connect to {target}: {e}"),
                code: code.filter(|c| *c > 0).unwrap_or(1),
            }
        })?;
        if self.debug {
            eprintln!(
                "connected to {target} (session present: {})",
                connack.session_present
            );
        }
        Ok((client, messages))
    }
}

/// Options of `fulmar pub`.
#[derive(Debug, Args)]
#[command(disable_help_flag = true, args_override_self = true)]
pub(crate) struct PubArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Topic to publish to (or the topic of -L).
    #[arg(
        short,
        long,
        allow_hyphen_values = true,
        required_unless_present = "url"
    )]
    topic: Option<String>,
    /// Message payload (may start with '-', as in `-m -3.5`).
    #[arg(short, long, group = "source", allow_hyphen_values = true)]
    message: Option<String>,
    /// Send the contents of this file as the payload.
    #[arg(short, long, value_name = "FILE", group = "source")]
    file: Option<PathBuf>,
    /// Send an empty payload (with -r: delete the retained message).
    #[arg(short = 'n', long = "null-message", group = "source")]
    null: bool,
    /// Send each line of stdin as a message, as mosquitto_pub -l: without
    /// its "\n" (a "\r" before it stays), the last line also without one;
    /// an empty line is an empty message (with -r: deletes the retained
    /// message).
    #[arg(short = 'l', long = "stdin-line", group = "source")]
    lines: bool,
    /// Send all of stdin as one message.
    #[arg(short = 's', long = "stdin-file", group = "source")]
    stdin: bool,
    /// QoS: 0, 1 or 2.
    #[arg(short, long, default_value = "0", value_parser = parse_qos)]
    qos: QoS,
    /// Retain the message.
    #[arg(short, long)]
    retain: bool,
    /// Publish the message this many times (not with -l).
    #[arg(long, value_name = "COUNT", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "lines")]
    repeat: u32,
    /// Seconds to wait between repeated messages (may be fractional).
    #[arg(long = "repeat-delay", value_name = "SECONDS", value_parser = parse_seconds)]
    repeat_delay: Option<Duration>,
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("{s:?}: a number of seconds, 0 or more"))
}

/// Where `fulmar pub` takes its payloads from.
enum Source {
    One(Bytes),
    Lines,
}

impl PubArgs {
    fn source(&self) -> Result<Source, String> {
        if let Some(m) = &self.message {
            return Ok(Source::One(Bytes::from(m.clone())));
        }
        if let Some(path) = &self.file {
            return std::fs::read(path)
                .map(|b| Source::One(b.into()))
                .map_err(|e| format!("cannot read {}: {e}", path.display()));
        }
        if self.null {
            return Ok(Source::One(Bytes::new()));
        }
        if self.lines {
            return Ok(Source::Lines);
        }
        if self.stdin {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| format!("cannot read stdin: {e}"))?;
            if buf.is_empty() {
                // As mosquitto_pub: an empty message (with -r, the deletion
                // of the retained one) takes -n, not a missing input.
                return Err("zero length input on stdin (-n sends an empty message)".to_owned());
            }
            return Ok(Source::One(buf.into()));
        }
        Err("nothing to publish: give one of -m, -f, -n, -l, -s".to_owned())
    }
}

/// `fulmar pub`: connects, publishes, waits for each QoS flow, disconnects.
pub(crate) async fn run_pub(args: PubArgs) -> Result<(), Failure> {
    let quiet = args.conn.quiet;
    publish_all(args).await.map_err(|f| f.quieted(quiet))
}

async fn publish_all(args: PubArgs) -> Result<(), Failure> {
    let props = args.conn.properties("publish")?;
    let source = args.source()?;
    let topic = match &args.topic {
        Some(topic) => topic.clone(),
        None => args
            .conn
            .url_topic()?
            .ok_or("no topic: give -t, or a topic in the -L URL")?,
    };
    topic
        .parse::<fulmar_topic::TopicName>()
        .map_err(|e| format!("-t {topic:?}: {e}"))?;
    let mut properties = PublishProperties::default();
    for (k, v) in &props.packet {
        properties
            .user_properties
            .push((mqtt_string(k)?, mqtt_string(v)?));
    }
    for (ident, value) in &props.packet_values {
        match ident.as_str() {
            "message-expiry-interval" => {
                properties.message_expiry_interval = Some(property_number(ident, value)?);
            }
            "payload-format-indicator" => {
                properties.payload_format_indicator =
                    Some(if property_number(ident, value)? == 1 {
                        fulmar_codec::PayloadFormat::Utf8
                    } else {
                        fulmar_codec::PayloadFormat::Unspecified
                    });
            }
            "content-type" => properties.content_type = Some(mqtt_string(value)?),
            "response-topic" => properties.response_topic = Some(mqtt_string(value)?),
            _ => properties.correlation_data = Some(Bytes::from(value.clone().into_bytes())),
        }
    }
    let client = args.conn.connect(&props).await?;
    let publish = |payload: Bytes| {
        let client = &client;
        let properties = properties.clone();
        let (topic, qos, retain) = (topic.clone(), args.qos, args.retain);
        async move {
            client
                .publish(topic, payload)
                .qos(qos)
                .retain(retain)
                .properties(properties)
                .await
                .map_err(|e| format!("publish failed: {e}"))
        }
    };
    match source {
        Source::One(payload) => {
            for i in 0..args.repeat {
                if i > 0
                    && let Some(delay) = args.repeat_delay
                {
                    tokio::time::sleep(delay).await;
                }
                publish(payload.clone()).await?;
            }
        }
        Source::Lines => {
            use futures::FutureExt;
            // Pipelined, as mosquitto_pub -l: up to LINES_IN_FLIGHT lines
            // on their way at once (one at a time took a round trip per
            // line at QoS 1/2). The client sends publishes in the order of
            // their futures' first poll (also those waiting for room in its
            // queue to the connection task), which is made here, line by
            // line, so that they go in the order of the lines. The client
            // keeps to the broker's flow control.
            const LINES_IN_FLIGHT: usize = 32;
            let mut in_flight = futures::stream::FuturesUnordered::new();
            let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
            let mut line = Vec::new();
            while let Some(payload) = next_line(&mut stdin, &mut line).await? {
                let mut sending = Box::pin(publish(Bytes::copy_from_slice(payload)));
                match futures::poll!(sending.as_mut()) {
                    std::task::Poll::Ready(done) => {
                        done?;
                    }
                    std::task::Poll::Pending => in_flight.push(sending),
                }
                // What completed meanwhile, without waiting (stdin may be
                // a person typing).
                while let Some(Some(done)) = in_flight.next().now_or_never() {
                    done?;
                }
                if in_flight.len() >= LINES_IN_FLIGHT
                    && let Some(done) = in_flight.next().await
                {
                    done?;
                }
            }
            while let Some(done) = in_flight.next().await {
                done?;
            }
        }
    }
    if args.conn.debug {
        eprintln!("published to {topic}");
    }
    client
        .disconnect()
        .await
        .map_err(|e| format!("disconnect failed: {e}").into())
}

/// The largest payload a line of `fulmar pub -l` can carry (the largest
/// MQTT packet).
const MAX_LINE: usize = 268_435_455;

/// The next line of `input` as the bytes it holds (any bytes, as
/// mosquitto_pub sends them), without its "\n" (only: a "\r" before it is
/// part of the line, as for mosquitto_pub); `None` at the end.
/// `line` is the buffer, reused; a line longer than [`MAX_LINE`] is an error.
async fn next_line<'a>(
    input: &mut (impl tokio::io::AsyncBufRead + Unpin),
    line: &'a mut Vec<u8>,
) -> Result<Option<&'a [u8]>, String> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    line.clear();
    // Room for the longest payload and its "\n", and one byte more to tell.
    let limit = u64::try_from(MAX_LINE + 2).unwrap_or(u64::MAX);
    let read = input
        .take(limit)
        .read_until(b'\n', line)
        .await
        .map_err(|e| format!("cannot read stdin: {e}"))?;
    if read == 0 {
        return Ok(None);
    }
    let payload = line.strip_suffix(b"\n").unwrap_or(line);
    if payload.len() > MAX_LINE {
        return Err(format!(
            "a line of stdin is longer than the largest MQTT message ({MAX_LINE} bytes)"
        ));
    }
    Ok(Some(payload))
}

/// Options of `fulmar sub`.
#[derive(Debug, Args)]
#[command(disable_help_flag = true, args_override_self = true)]
pub(crate) struct SubArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Topic filter to subscribe to. May be repeated.
    #[arg(short, long = "topic", allow_hyphen_values = true)]
    topic: Vec<String>,
    /// Do not print (nor count) messages whose topic matches this filter.
    /// May be repeated.
    #[arg(
        short = 'T',
        long = "filter-out",
        value_name = "FILTER",
        allow_hyphen_values = true
    )]
    filter_out: Vec<String>,
    /// Unsubscribe from this filter, after subscribing to the -t ones (for a
    /// session kept with -c). May be repeated.
    #[arg(
        short = 'U',
        long = "unsubscribe",
        value_name = "FILTER",
        allow_hyphen_values = true
    )]
    unsubscribe: Vec<String>,
    /// Exit once the subscriptions (and -U) are acknowledged.
    #[arg(short = 'E', long = "exit-after-subscribe")]
    exit_after_subscribe: bool,
    /// Print only retained messages, and exit at the first that is not.
    #[arg(long = "retained-only")]
    retained_only: bool,
    /// Delete each retained message received (publish an empty retained
    /// message to its topic); -T keeps some.
    #[arg(long = "remove-retained")]
    remove_retained: bool,
    /// Output format, as mosquitto_sub's -F: %t topic, %p payload, %l
    /// length, %q QoS, %r retain, %m packet id, %x/%X hex payload, %j/%J
    /// JSON, %I/%U time, MQTT 5.0 properties %C %D %E %F %R %S %P, @-fields
    /// for the time as strftime's %-fields (@H:@M:@S, @N nanoseconds),
    /// escapes \n \t. Replaces -v.
    #[arg(short = 'F', long = "format", value_name = "FORMAT", value_parser = Format::parse)]
    format: Option<Format>,
    /// With -F %j or %J, print each message's JSON indented over several
    /// lines (as mosquitto_sub --pretty) instead of on one line.
    #[arg(long)]
    pretty: bool,
    /// Maximum QoS of the subscriptions: 0, 1 or 2.
    #[arg(short, long, default_value = "0", value_parser = parse_qos)]
    qos: QoS,
    /// Print the topic before each payload: `topic payload`.
    #[arg(short, long)]
    verbose: bool,
    /// Exit after receiving this many messages (1 or more).
    #[arg(short = 'C', long, value_name = "COUNT",
          value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Exit with status 27 after this many seconds (from the start; 1 or
    /// more).
    #[arg(short = 'W', long, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
    /// Do not print retained messages (sent because they were stored); not
    /// with --retained-only.
    #[arg(short = 'R', long = "no-retained", conflicts_with = "retained_only")]
    no_retained: bool,
    /// Do not add a newline after each payload.
    #[arg(short = 'N', long = "no-newline")]
    no_newline: bool,
}

/// Why a command failed, and the exit status it ends with.
#[derive(Debug)]
pub(crate) struct Failure {
    /// What is printed on stderr.
    pub(crate) message: String,
    /// The exit status: 1, or 27 when `fulmar sub -W` ran out of time (as
    /// mosquitto_sub, so that scripts written for it keep working).
    pub(crate) code: u8,
}

/// The exit status of `fulmar sub` when -W ran out.
pub(crate) const TIMED_OUT: u8 = 27;

impl Failure {
    /// With --quiet, nothing is printed; the exit status stays.
    fn quieted(self, quiet: bool) -> Self {
        if quiet {
            Self {
                message: String::new(),
                ..self
            }
        } else {
            self
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self { message, code: 1 }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        message.to_owned().into()
    }
}

/// `fulmar sub`: subscribes and prints every message until -C or -W.
///
/// -W and Ctrl-C count from the start: connecting and subscribing included.
/// Running out of time exits with status 27, as mosquitto_sub.
pub(crate) async fn run_sub(args: SubArgs) -> Result<(), Failure> {
    let quiet = args.conn.quiet;
    subscribe_and_print(args)
        .await
        .map_err(|f| f.quieted(quiet))
}

async fn subscribe_and_print(mut args: SubArgs) -> Result<(), Failure> {
    if let Some(topic) = args.conn.url_topic()? {
        args.topic.push(topic);
    }
    if args.topic.is_empty() && args.unsubscribe.is_empty() {
        return Err("no topic: give -t (or -U, or a topic in the -L URL)".into());
    }
    // Said before connecting, as mosquitto_sub says it.
    for (flag, filters) in [("-t", &args.topic), ("-U", &args.unsubscribe)] {
        for filter in filters {
            filter
                .parse::<fulmar_topic::TopicFilter>()
                .map_err(|e| format!("{flag} {filter:?}: {e}"))?;
        }
    }
    let mut filter_out = Vec::with_capacity(args.filter_out.len());
    for filter in &args.filter_out {
        filter_out.push(
            filter
                .parse::<fulmar_topic::TopicFilter>()
                .map_err(|e| format!("-T {filter:?}: {e}"))?,
        );
    }
    let props = args.conn.properties("subscribe")?;
    let mut properties = SubscribeProperties::default();
    for (k, v) in &props.packet {
        properties
            .user_properties
            .push((mqtt_string(k)?, mqtt_string(v)?));
    }
    // subscription-identifier, the only other -D subscribe property.
    for (ident, value) in &props.packet_values {
        properties.subscription_identifier = NonZeroU32::new(property_number(ident, value)?);
    }
    // A deadline beyond the clock's range is no deadline.
    let deadline = args
        .timeout
        .and_then(|s| tokio::time::Instant::now().checked_add(Duration::from_secs(s)));
    let timeout = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    // Installed before connecting, so a SIGINT after "subscribed" is caught.
    let interrupt = interrupted()?;
    let mut client = None;
    let mut streams = None;
    let mut received = 0u64;
    let outcome = tokio::select! {
        result = receive(&args, &props, properties, &filter_out, &mut client, &mut streams, &mut received) => result,
        () = timeout => Err(Ending::TimedOut),
        // Ctrl-C or SIGTERM: disconnect normally and exit 0, as mosquitto_sub does.
        () = interrupt => Ok(()),
    };
    if let Some(client) = client {
        let _ = client.disconnect().await;
    }
    drop(streams);
    match outcome {
        Ok(()) => Ok(()),
        Err(Ending::Failed(failure)) => Err(failure),
        Err(Ending::TimedOut) => Err(Failure {
            message: format!(
                "timed out after {} s ({received} messages received)",
                args.timeout.unwrap_or_default()
            ),
            code: TIMED_OUT,
        }),
    }
}

/// Why `fulmar sub` ends with an error.
enum Ending {
    /// The -W deadline passed.
    TimedOut,
    /// Anything else.
    Failed(Failure),
}

impl From<String> for Ending {
    fn from(e: String) -> Self {
        Self::Failed(e.into())
    }
}

impl From<Failure> for Ending {
    fn from(f: Failure) -> Self {
        Self::Failed(f)
    }
}

/// Connects (leaving the client in `slot`, for the caller to disconnect),
/// subscribes, and prints messages until -C is reached or stdout closes.
/// The messages come from `streams`, which the caller drops after the
/// DISCONNECT: dropping a subscription's stream unsubscribes, and with -c
/// the session must keep its subscriptions, as mosquitto_sub's does.
#[allow(clippy::too_many_arguments)]
async fn receive(
    args: &SubArgs,
    props: &Properties,
    properties: SubscribeProperties,
    filter_out: &[fulmar_topic::TopicFilter],
    slot: &mut Option<Client>,
    streams: &mut Option<BoxStream<'static, Message>>,
    received: &mut u64,
) -> Result<(), Ending> {
    let (client, queued) = args.conn.connect_for(props, true, true).await?;
    let client = slot.insert(client);
    let own_ids = properties.subscription_identifier.is_none();
    let mut subscribed = None;
    if !args.topic.is_empty() {
        let filters: Vec<(String, SubscriptionOptions)> = args
            .topic
            .iter()
            .map(|t| (t.clone(), SubscriptionOptions::new(args.qos)))
            .collect();
        let stream = client
            .subscribe_with(filters, properties)
            .await
            .map_err(|e| format!("subscribe failed: {e}"))?;
        for (filter, code) in args.topic.iter().zip(&stream.suback().reason_codes) {
            match code.granted_qos() {
                Some(qos) if args.conn.debug => {
                    eprintln!("subscribed to {filter} (granted QoS {})", u8::from(qos));
                }
                Some(_) => {}
                None if args.conn.quiet => {}
                None => eprintln!("fulmar: subscription to {filter} refused: {code:?}"),
            }
        }
        subscribed = Some(stream);
    }
    if !args.unsubscribe.is_empty() {
        unsubscribe(client, &args.unsubscribe, args.conn.version).await?;
        if args.conn.debug {
            eprintln!("unsubscribed from {}", args.unsubscribe.join(", "));
        }
    }
    // With -c, what the session queued meanwhile comes first (no
    // subscription stream takes it).
    let stream = streams.insert(match (queued, subscribed) {
        (Some(queued), Some(stream)) => {
            futures::stream::select_with_strategy(queued, stream, |_: &mut ()| PollNext::Left)
                .boxed()
        }
        (Some(queued), None) => queued.boxed(),
        (None, Some(stream)) => stream.boxed(),
        (None, None) => futures::stream::pending().boxed(),
    });
    if args.exit_after_subscribe {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    // --remove-retained: the deletions in flight, acknowledged while
    // messages keep being read (waiting for each PUBACK in turn stopped the
    // reading, and with it the PUBACKs, once a stream's worth was waiting).
    let mut removals = futures::stream::FuturesUnordered::new();
    let refused = refused(client);
    tokio::pin!(refused);
    while args.count.is_none_or(|c| *received < c) {
        let next = tokio::select! {
            next = stream.next() => next,
            Some(removed) = removals.next() => {
                removed?;
                continue;
            }
            why = &mut refused => return Err(why.into()),
        };
        let Some(message) = next else {
            return Err("the connection was lost".to_owned().into());
        };
        if args.retained_only && !message.retain {
            // Left to the session (with -c), as the messages not printed.
            break;
        }
        let filtered_out = !filter_out.is_empty()
            && message
                .topic
                .parse::<fulmar_topic::TopicName>()
                .is_ok_and(|topic| filter_out.iter().any(|f| f.matches(&topic)));
        let hidden = filtered_out || (args.no_retained && message.retain);
        if !hidden {
            if args.remove_retained && message.retain {
                let removal = client
                    .publish(message.topic.as_str(), Bytes::new())
                    .qos(QoS::AtLeastOnce)
                    .retain(true);
                removals.push(async move {
                    removal
                        .await
                        .map(drop)
                        .map_err(|e| format!("removing the retained message failed: {e}"))
                });
            }
            match print(&mut out, args, &message, own_ids) {
                Ok(json) => {
                    *received += 1;
                    if !json && !args.conn.quiet {
                        // Printed without it, as mosquitto_sub does.
                        eprintln!(
                            "fulmar: the payload on {} is not JSON (-F %J)",
                            message.topic
                        );
                    }
                }
                // The reader went away (e.g. `| head -1`): stop quietly, and
                // leave this message to the session.
                Err(_) => break,
            }
        }
        // With -c, acknowledged once printed: what was received but not
        // printed when it stops stays with the session for the next run.
        if args.conn.no_clean && client.ack(&message).await.is_err() {
            return Err("the connection was lost".to_owned().into());
        }
    }
    while let Some(removed) = removals.next().await {
        removed?;
    }
    Ok(())
}

/// Completes when the broker refuses the CONNECT of a reconnection (the
/// user was removed, say): mosquitto_sub exits then, rather than trying
/// again for ever. Also when the broker ended the connection because
/// another client connected with the same client id (MQTT 5.0 DISCONNECT
/// 0x8E): connecting again would take the session back, and the two would
/// flap for ever; mosquitto_sub -V 5 stops there too. Looked at while the
/// connection is down.
async fn refused(client: &Client) -> String {
    loop {
        if client.wait_connected(false).await.is_err() {
            return std::future::pending().await;
        }
        // The record of the disconnection is made before the connection
        // is seen down.
        if let Some(why) = client
            .last_disconnection()
            .as_ref()
            .and_then(final_disconnection)
        {
            return why;
        }
        loop {
            tokio::select! {
                up = client.wait_connected(true) => {
                    if up.is_err() {
                        // Closed: the message stream ends too.
                        return std::future::pending().await;
                    }
                    break;
                }
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    if let Some(why) =
                        client.last_disconnection().as_ref().and_then(final_disconnection)
                    {
                        return why;
                    }
                }
            }
        }
    }
}

/// Why `fulmar sub` stops after `last`, if it must: a refused reconnection,
/// or the session taken over by another client.
fn final_disconnection(last: &fulmar_client::Disconnection) -> Option<String> {
    if matches!(*last.error, fulmar_client::Error::Refused { .. }) {
        return Some(format!("connecting again: {}", last.error));
    }
    matches!(
        last.by_broker,
        Some((fulmar_client::ReasonCode::SessionTakenOver, _))
    )
    .then(|| {
        "disconnected by the broker: session taken over (another client connected \
         with the same client id)"
            .to_owned()
    })
}

/// `-U`: removes `filters` from the session. The client removes filters
/// through the stream that subscribed them, so each is subscribed (under
/// 5.0 without retained messages; 3.1.1 cannot ask, and the few that come
/// are dropped with the stream) and then unsubscribed, which leaves the
/// session as an UNSUBSCRIBE alone would.
async fn unsubscribe(
    client: &Client,
    filters: &[String],
    version: ProtocolVersion,
) -> Result<(), String> {
    let mut options = SubscriptionOptions::new(QoS::AtMostOnce);
    if version.is_v5() {
        options.retain_handling = fulmar_codec::RetainHandling::DoNotSend;
    }
    let stream = client
        .subscribe_with(
            filters.iter().map(|f| (f.clone(), options)).collect(),
            SubscribeProperties::default(),
        )
        .await
        .map_err(|e| format!("unsubscribe failed: {e}"))?;
    stream
        .unsubscribe()
        .await
        .map_err(|e| format!("unsubscribe failed: {e}"))
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (`kill`, `timeout`, a service
/// manager stopping it); the handlers are installed by this call.
#[cfg(unix)]
fn interrupted() -> Result<impl Future<Output = ()>, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
    })
}

/// Completes on Ctrl-C.
#[cfg(not(unix))]
fn interrupted() -> Result<impl Future<Output = ()>, String> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// Prints one message; false when -F's `%J` found a payload that is not
/// JSON. With `own_ids`, the Subscription Identifiers are the client's own
/// (it picks one per subscription to route messages to their streams when
/// none was given with -D): -F does not show them.
fn print(
    out: &mut impl Write,
    args: &SubArgs,
    message: &fulmar_codec::Publish,
    own_ids: bool,
) -> std::io::Result<bool> {
    let mut json = true;
    if let Some(format) = &args.format {
        let at = std::time::SystemTime::now();
        let style = if args.pretty {
            JsonStyle::Pretty
        } else {
            JsonStyle::Compact
        };
        json = if own_ids && !message.properties.subscription_identifiers.is_empty() {
            let mut shown = message.clone();
            shown.properties.subscription_identifiers.clear();
            format.write(out, &shown, at, style)?
        } else {
            format.write(out, message, at, style)?
        };
    } else if message.payload.is_empty() {
        // As mosquitto_sub: `TOPIC (null)` with -v (and a newline), else
        // nothing at all.
        if args.verbose && !args.no_newline {
            out.write_all(message.topic.as_bytes())?;
            out.write_all(b" (null)\n")?;
            out.flush()?;
        }
        return Ok(json);
    } else {
        if args.verbose {
            out.write_all(message.topic.as_bytes())?;
            out.write_all(b" ")?;
        }
        out.write_all(&message.payload)?;
    }
    if !args.no_newline {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct P {
        #[command(flatten)]
        args: PubArgs,
    }

    #[derive(Debug, Parser)]
    struct S {
        #[command(flatten)]
        args: SubArgs,
    }

    #[test]
    fn mosquitto_style_flags_parse() {
        let p = P::try_parse_from([
            "pub", "-h", "example", "-p", "1884", "-t", "a/b", "-m", "hi", "-q", "2", "-r", "-V",
            "mqttv311", "-u", "user", "-P", "pw", "-i", "me", "-c",
        ])
        .unwrap()
        .args;
        assert_eq!(p.conn.host.as_deref(), Some("example"));
        assert_eq!(p.conn.port, Some(1884));
        assert_eq!(p.qos, QoS::ExactlyOnce);
        assert!(p.retain && p.conn.no_clean);
        assert_eq!(p.conn.version, ProtocolVersion::V311);
        let options = p.conn.options(&Properties::default()).unwrap();
        assert_eq!(options.address(), ("example", 1884));
        for v31 in ["31", "mqttv31"] {
            let p = P::try_parse_from(["pub", "-t", "a", "-m", "x", "-V", v31]).unwrap();
            assert_eq!(p.args.conn.version, ProtocolVersion::V31);
            // 3.1 needs a client identifier: one is made up.
            let options = p.args.conn.options(&Properties::default()).unwrap();
            assert!(
                format!("{options:?}").contains("client_id: \"fulmar-"),
                "{options:?}"
            );
        }

        let s = S::try_parse_from(["sub", "-t", "a/#", "-t", "b", "-v", "-C", "3", "-W", "9"])
            .unwrap()
            .args;
        assert_eq!(s.topic, ["a/#", "b"]);
        assert!(s.verbose);
        assert_eq!((s.count, s.timeout), (Some(3), Some(9)));
        assert_eq!(s.conn.host, None);
        assert_eq!(s.conn.version, ProtocolVersion::V5);
    }

    // As with mosquitto_pub and mosquitto_sub, a flag given again takes the
    // last value (a wrapper with `-h broker` can be overridden); it was an
    // error. `-t` of `fulmar sub` still adds filters.
    #[test]
    fn a_repeated_flag_takes_the_last_value() {
        let p = P::try_parse_from([
            "pub", "-h", "a", "-h", "b", "-q", "1", "-q", "0", "-t", "x", "-t", "y", "-m", "m",
        ])
        .unwrap()
        .args;
        assert_eq!(
            (p.conn.host.as_deref(), p.qos),
            (Some("b"), QoS::AtMostOnce)
        );
        assert_eq!(p.topic.as_deref(), Some("y"));
        let s = S::try_parse_from(["sub", "-t", "a", "-t", "b", "-q", "2", "-q", "1"])
            .unwrap()
            .args;
        assert_eq!(s.topic, ["a", "b"]);
        assert_eq!(s.qos, QoS::AtLeastOnce);
    }

    /// The argument list as `fulmar` gets it, after [`rewrite_property_flags`].
    fn rewritten(args: &[&str]) -> Vec<String> {
        let mut command = <crate::Cli as clap::CommandFactory>::command();
        command.build();
        let args = args.iter().map(std::ffi::OsString::from).collect();
        rewrite_property_flags(args, &command)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    // mosquitto's three-value -D forms, next to the four-value user-property
    // one; a "-D" that is the value of another flag stays a value.
    #[test]
    fn d_takes_three_or_four_values_by_its_identifier() {
        let args = rewritten(&[
            "fulmar",
            "pub",
            "-m",
            "-D",
            "-D",
            "publish",
            "message-expiry-interval",
            "30",
            "-D",
            "publish",
            "user-property",
            "k",
            "v",
            "--property",
            "connect",
            "session-expiry-interval",
            "60",
            "-t",
            "a",
        ]);
        assert_eq!(args[3], "-D", "the payload");
        assert_eq!(args[4], "--property-value");
        assert_eq!(args[8], "-D", "user-property keeps -D");
        assert_eq!(args[13], "--property-value");
        let p = P::try_parse_from(&args[1..]).unwrap().args;
        let props = p.conn.properties("publish").unwrap();
        assert_eq!(props.packet, [("k".to_owned(), "v".to_owned())]);
        assert_eq!(
            props.packet_values,
            [("message-expiry-interval".to_owned(), "30".to_owned())]
        );
        let options = p.conn.options(&props).unwrap();
        assert_eq!(options.version(), ProtocolVersion::V5);
        // Unknown identifiers, out-of-range values and 3.1.1 are refused.
        for bad in [
            &["publish", "topic-alias", "3"][..],
            &["publish", "message-expiry-interval", "-1"],
            &["connect", "receive-maximum", "0"],
            &["subscribe", "subscription-identifier", "1"],
        ] {
            let mut args = vec!["fulmar", "pub", "-t", "a", "-m", "x", "-D"];
            args.extend_from_slice(bad);
            let args = rewritten(&args);
            let p = P::try_parse_from(&args[1..]).unwrap().args;
            assert!(p.conn.properties("publish").is_err(), "{bad:?}");
        }
        let args = rewritten(&[
            "fulmar",
            "sub",
            "-V",
            "311",
            "-t",
            "a",
            "-D",
            "subscribe",
            "subscription-identifier",
            "5",
        ]);
        let s = S::try_parse_from(&args[1..]).unwrap().args;
        assert!(s.conn.properties("subscribe").is_err(), "needs 5.0");
    }

    // Found by a review: mosquitto_pub and mosquitto_sub take -1 and ∞ (and
    // 4294967295) for a session that never expires; fulmar refused the first
    // two (-1 as an unknown flag).
    #[test]
    fn session_expiry_never_is_minus_one_or_infinity() {
        for never in ["-1", "∞", "4294967295"] {
            let p = P::try_parse_from(["pub", "-t", "a", "-m", "x", "-x", never, "-q", "1"])
                .unwrap()
                .args;
            assert_eq!(p.conn.session_expiry, Some(u32::MAX), "{never}");
            assert_eq!(p.qos, QoS::AtLeastOnce);
            let s = S::try_parse_from(["sub", "-t", "a", "-i", "me", "-c", "-x", never])
                .unwrap()
                .args;
            assert_eq!(s.conn.session_expiry, Some(u32::MAX), "{never}");
            assert!(s.conn.options(&Properties::default()).is_ok(), "{never}");
        }
        let s = S::try_parse_from(["sub", "-t", "a", "-x", "30"])
            .unwrap()
            .args;
        assert_eq!(s.conn.session_expiry, Some(30));
        for bad in ["-2", "4294967296", "forever", "-t"] {
            assert!(
                S::try_parse_from(["sub", "-t", "a", "-x", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_flags_are_refused() {
        // -c needs -i; -m and -f exclude each other; QoS 3 does not exist.
        let p = P::try_parse_from(["pub", "-t", "a", "-m", "x", "-c"]).unwrap();
        assert!(p.args.conn.options(&Properties::default()).is_err());
        assert!(P::try_parse_from(["pub", "-t", "a", "-m", "x", "-f", "y"]).is_err());
        assert!(P::try_parse_from(["pub", "-t", "a", "-m", "x", "-q", "3"]).is_err());
        assert!(P::try_parse_from(["pub", "-t", "a", "-m", "x", "-V", "30"]).is_err());
        let p = P::try_parse_from(["pub", "-t", "a", "-P", "pw", "-m", "x"]).unwrap();
        assert!(p.args.conn.options(&Properties::default()).is_err());
        let s = S::try_parse_from(["sub", "-t", "a", "-V", "311", "--user-property", "k", "v"])
            .unwrap();
        assert!(s.args.conn.properties("subscribe").is_err());
    }

    // -A, -M and --tls-version reach the client's options; --pretty parses.
    #[test]
    fn bind_address_max_inflight_and_tls_version() {
        let p = P::try_parse_from(["pub", "-t", "a", "-m", "x", "-A", "127.0.0.1", "-M", "5"])
            .unwrap()
            .args;
        assert_eq!(p.conn.max_inflight, 5);
        assert_eq!(p.conn.tls_version, None);
        let options = p.conn.options(&Properties::default()).unwrap();
        assert_eq!(options.bind_address(), Some(IpAddr::from([127, 0, 0, 1])));
        assert!(format!("{options:?}").contains("max_inflight: 5"));
        // Default 20, as mosquitto's tools.
        let p = P::try_parse_from(["pub", "-t", "a", "-m", "x"])
            .unwrap()
            .args;
        let options = p.conn.options(&Properties::default()).unwrap();
        assert!(format!("{options:?}").contains("max_inflight: 20"));
        assert_eq!(options.bind_address(), None);
        for (version, tls13_only) in [("tlsv1.2", false), ("tlsv1.3", true)] {
            let s = S::try_parse_from([
                "sub",
                "-t",
                "a",
                "--tls-version",
                version,
                "-L",
                "mqtts://h/t",
            ])
            .unwrap()
            .args;
            let options = s.conn.options(&Properties::default()).unwrap();
            let debug = format!("{options:?}");
            assert!(
                debug.contains(&format!("tls13_only: {tls13_only}")),
                "{debug}"
            );
        }
        for bad in [
            &["-M", "0"][..],
            &["-M", "65536"],
            &["--tls-version", "tlsv1.1"],
            &["--tls-version", "tlsv1"],
            &["--tls-version", "TLSv1.2"],
        ] {
            let mut args = vec!["sub", "-t", "a"];
            args.extend_from_slice(bad);
            assert!(S::try_parse_from(&args).is_err(), "{bad:?}");
        }
        let s = S::try_parse_from(["sub", "-t", "a", "-F", "%j", "--pretty"])
            .unwrap()
            .args;
        assert!(s.pretty);
        // A host name is resolved, to the broker's family when it is an
        // address; an address is taken as it is.
        assert_eq!(
            local_address("localhost", "127.0.0.1"),
            Ok(IpAddr::from([127, 0, 0, 1]))
        );
        assert_eq!(
            local_address("::1", "127.0.0.1"),
            Ok(IpAddr::from(std::net::Ipv6Addr::LOCALHOST))
        );
        assert!(local_address("no.such.host.invalid", "h").is_err());
    }

    #[test]
    fn properties_are_split_by_command() {
        let p = P::try_parse_from([
            "pub",
            "-t",
            "a",
            "-m",
            "x",
            "-D",
            "connect",
            "user-property",
            "a",
            "1",
            "-D",
            "publish",
            "user-property",
            "b",
            "2",
            "--user-property",
            "c",
            "3",
        ])
        .unwrap();
        let props = p.args.conn.properties("publish").unwrap();
        assert_eq!(props.connect, [("a".to_owned(), "1".to_owned())]);
        assert_eq!(
            props.packet,
            [
                ("b".to_owned(), "2".to_owned()),
                ("c".to_owned(), "3".to_owned())
            ]
        );
        let p = P::try_parse_from([
            "pub",
            "-t",
            "a",
            "-m",
            "x",
            "-D",
            "publish",
            "content-type",
            "t",
            "u",
        ])
        .unwrap();
        assert!(p.args.conn.properties("publish").is_err());
    }

    #[tokio::test]
    async fn lines_are_bytes() {
        let mut input: &[u8] = b"a\xff\n\r\nb\r\r\n\nc";
        let mut line = Vec::new();
        let mut lines = Vec::new();
        while let Some(payload) = next_line(&mut input, &mut line).await.unwrap() {
            lines.push(payload.to_vec());
        }
        // Only "\n" ends a line, as for mosquitto_pub (found by a review:
        // "\r\n" was taken off whole).
        let expected: [&[u8]; 5] = [b"a\xff", b"\r", b"b\r\r", b"", b"c"];
        assert_eq!(lines, expected);
    }

    fn message(topic: &str, payload: &'static str) -> fulmar_codec::Publish {
        fulmar_codec::Publish::new(MqttString::from(topic.to_owned()), payload.into())
    }

    #[test]
    fn output_is_one_line_per_message() {
        let s = S::try_parse_from(["sub", "-t", "a", "-v"]).unwrap().args;
        let mut out = Vec::new();
        print(&mut out, &s, &message("a/b", "hello"), true).unwrap();
        print(&mut out, &s, &message("a/c", ""), true).unwrap();
        // An empty payload as mosquitto_sub prints it (found by a CLI
        // review: "a/c " here, and an empty line without -v).
        assert_eq!(out, b"a/b hello\na/c (null)\n");
        let plain = S::try_parse_from(["sub", "-t", "a"]).unwrap().args;
        let mut out = Vec::new();
        for payload in ["a", "", "b"] {
            print(&mut out, &plain, &message("a/c", payload), true).unwrap();
        }
        assert_eq!(out, b"a\nb\n");
        let s = S::try_parse_from(["sub", "-t", "a", "-N"]).unwrap().args;
        let mut out = Vec::new();
        print(&mut out, &s, &message("a/b", "x"), true).unwrap();
        assert_eq!(out, b"x");
        // -F replaces -v; the newline is added unless -N.
        let s = S::try_parse_from(["sub", "-t", "a", "-v", "-F", "%t=%p %l"])
            .unwrap()
            .args;
        let mut out = Vec::new();
        print(&mut out, &s, &message("a/b", "x"), true).unwrap();
        assert_eq!(out, b"a/b=x 1\n");
        assert!(S::try_parse_from(["sub", "-t", "a", "-F", "%z"]).is_err());
    }

    #[test]
    fn urls_give_host_port_credentials_and_topic() {
        let url = parse_url("mqtts://alice:s3cret@broker.example:8884/a/b/#").unwrap();
        assert_eq!(
            url,
            Url {
                tls: true,
                username: Some("alice".into()),
                password: Some("s3cret".into()),
                host: "broker.example".into(),
                port: Some(8884),
                topic: Some("a/b/#".into()),
            }
        );
        let url = parse_url("mqtt://[::1]/t").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.tls), ("::1", None, false));
        assert_eq!(parse_url("mqtt://h").unwrap().topic, None);
        assert_eq!(
            parse_url("mqtt://u@h:1/").unwrap().username.as_deref(),
            Some("u")
        );
        for bad in [
            "h/t",
            "http://h/t",
            "mqtt:///t",
            "mqtt://h:x/t",
            "mqtt://[::1/t",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        let p = P::try_parse_from(["pub", "-L", "mqtt://u:p@example:1884/x/y", "-m", "m"])
            .unwrap()
            .args;
        assert_eq!(p.conn.url_topic().unwrap().as_deref(), Some("x/y"));
        let options = p.conn.options(&Properties::default()).unwrap();
        assert_eq!(options.address(), ("example", 1884));
        // -h and -p given too win; the topic comes from -t or the URL.
        let p = P::try_parse_from(["pub", "-L", "mqtt://h:1/t", "-p", "2", "-m", "m"])
            .unwrap()
            .args;
        let options = p.conn.options(&Properties::default()).unwrap();
        assert_eq!(options.address(), ("h", 2));
        assert!(P::try_parse_from(["pub", "-m", "m"]).is_err());
    }

    #[test]
    fn id_prefix_and_repeat() {
        let p = P::try_parse_from(["pub", "-t", "a", "-m", "m", "-I", "job-"])
            .unwrap()
            .args;
        assert!(p.conn.options(&Properties::default()).is_ok());
        // -c needs -i, -I is not enough (as for mosquitto_sub).
        let p = P::try_parse_from(["pub", "-t", "a", "-m", "m", "-I", "job-", "-c"])
            .unwrap()
            .args;
        assert!(p.conn.options(&Properties::default()).is_err());
        assert!(P::try_parse_from(["pub", "-t", "a", "-m", "m", "-I", "x", "-i", "y"]).is_err());
        let p = P::try_parse_from([
            "pub",
            "-t",
            "a",
            "-m",
            "m",
            "--repeat",
            "3",
            "--repeat-delay",
            "0.25",
        ])
        .unwrap()
        .args;
        assert_eq!(
            (p.repeat, p.repeat_delay),
            (3, Some(Duration::from_millis(250)))
        );
        assert!(P::try_parse_from(["pub", "-t", "a", "-m", "m", "--repeat", "0"]).is_err());
        assert!(P::try_parse_from(["pub", "-t", "a", "-l", "--repeat", "2"]).is_err());
    }
}
