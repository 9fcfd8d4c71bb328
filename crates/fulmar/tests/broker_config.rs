//! `fulmar broker` configuration end to end: the default file, bad files,
//! password and ACL files, log format, data directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{
    FulmarBroker, Mosquitto, Sub, free_port, fulmar, publish, publish_ok, subscribe, temp_dir,
};

/// Written by mosquitto_passwd 2.0.11: alice / secret.
const ALICE: &str = "alice:$7$101$1Q1dew08D//GHKYI$rT986A/hzl9tWri62d4sk6HRwH258BtrEJMz+2PHsgFj9yz3KLjUSMQMIeM/AkoueiSjjnN/ZvKLX/zDmYzY7g==";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A fresh directory with alice's password file, an ACL that grants her
/// everything, and `fulmar.toml`: `listeners`, then `[auth]` naming both
/// files. Returns the directory and the configuration's path.
fn with_auth_files(listeners: &str) -> (std::path::PathBuf, String) {
    let dir = temp_dir();
    write(&dir, "passwd", &format!("{ALICE}\n"));
    write(&dir, "acl", "user alice\ntopic readwrite #\n");
    let config = write(
        &dir,
        "fulmar.toml",
        &format!("{listeners}[auth]\npassword_file = \"passwd\"\nacl_file = \"acl\"\n"),
    );
    (dir, config)
}

fn broker_error(config: &str) -> String {
    let dir = temp_dir();
    let file = write(&dir, "fulmar.toml", config);
    let out = fulmar()
        .args(["broker", "-p", "0", "-c", &file])
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn the_printed_default_config_starts_a_broker() {
    let out = fulmar()
        .args(["broker", "--print-default-config"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("[[listener]]") && text.contains("# "));
    let dir = temp_dir();
    let file = write(&dir, "fulmar.toml", &text);
    let broker = FulmarBroker::start(&["-c", &file]);
    publish_ok(broker.port, &["-t", "t", "-m", "m", "-r"]);
    let out = subscribe(broker.port, &["-t", "t", "-C", "1"]);
    assert_eq!(out.stdout, b"m\n");
}

#[test]
fn a_bad_config_names_the_line_and_the_key() {
    let stderr = broker_error("[limits]\nmax_connections = 10\nmax_conections = 5\n");
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(stderr.contains("max_conections"), "{stderr}");
    assert!(stderr.contains("fulmar.toml"), "{stderr}");

    let stderr = broker_error("[limits]\nreceive_maximum = \"many\"\n");
    assert!(stderr.contains("line 2"), "{stderr}");

    let stderr = broker_error("[auth]\npassword_file = \"missing-passwd\"\n");
    assert!(stderr.contains("auth.password_file"), "{stderr}");
    assert!(stderr.contains("missing-passwd"), "{stderr}");

    let stderr = broker_error("[auth]\nacl_file = \"acl\"\n[limits]\nmaximum_qos = 3\n");
    assert!(stderr.contains("limits.maximum_qos = 3"), "{stderr}");
}

#[test]
fn a_missing_certificate_is_a_clear_error() {
    let stderr = broker_error(
        "[[listener]]\nprotocol = \"tls\"\nbind = \"127.0.0.1:0\"\n\
         cert = \"no-such-cert.pem\"\nkey = \"no-such-key.pem\"\n",
    );
    assert!(stderr.contains("cert = "), "{stderr}");
    assert!(stderr.contains("no-such-cert.pem"), "{stderr}");
}

#[test]
fn a_missing_config_file_is_a_clear_error() {
    let out = fulmar()
        .args(["broker", "-c", "/nonexistent/fulmar.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("/nonexistent/fulmar.toml"), "{stderr}");
}

// v5:MQTT-3.1.4-2: the server authenticates the CONNECT; a wrong password
// gets a refusing CONNACK and the client exits non-zero.
#[test]
fn the_password_file_is_enforced() {
    let dir = temp_dir();
    write(&dir, "passwd", &format!("{ALICE}\n"));
    let config = write(&dir, "fulmar.toml", "[auth]\npassword_file = \"passwd\"\n");
    let broker = FulmarBroker::start(&["-c", &config]);
    for version in ["5", "311"] {
        let ok = &["-V", version, "-t", "t", "-m", "x", "-u", "alice"];
        publish_ok(broker.port, &[ok.as_slice(), &["-P", "secret"]].concat());
        // The exit status is the CONNACK's code, as mosquitto_pub's: 0x86
        // Bad User Name or Password (3.1.1: return code 4). It was 1.
        let (bad_password, not_authorized) = if version == "5" { (134, 135) } else { (4, 5) };
        let out = publish(broker.port, &[ok.as_slice(), &["-P", "wrong"]].concat());
        assert_eq!(out.status.code(), Some(bad_password), "v{version}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("refused"), "{stderr}");
        // No user name: anonymous clients are refused once a password file is set.
        let out = publish(broker.port, &["-V", version, "-t", "t", "-m", "x"]);
        let code = out.status.code().unwrap();
        assert!(
            [bad_password, not_authorized].contains(&code),
            "v{version}: {code}"
        );
    }
}

#[test]
fn the_acl_file_is_enforced() {
    let dir = temp_dir();
    write(
        &dir,
        "acl",
        "user alice\ntopic readwrite alice/#\n\nuser bob\ntopic read #\n\nuser carol\ntopic write #\n",
    );
    let config = write(&dir, "fulmar.toml", "[auth]\nacl_file = \"acl\"\n");
    let broker = FulmarBroker::start(&["-c", &config]);
    let sub = Sub::start(
        broker.port,
        &["-u", "bob", "-t", "#", "-v", "-C", "1", "-q", "1"],
    );
    // v5: the denied PUBLISH is answered with 0x87 and pub fails.
    let out = publish(
        broker.port,
        &["-u", "alice", "-t", "bob/x", "-m", "no", "-q", "1"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotAuthorized"));
    // v3:MQTT-3.3.5-2: 3.1.1 gets a normal PUBACK, but nothing is delivered.
    publish_ok(
        broker.port,
        &[
            "-V", "311", "-u", "alice", "-t", "bob/y", "-m", "no", "-q", "1",
        ],
    );
    // bob may not publish at all.
    publish_ok(
        broker.port,
        &["-V", "311", "-u", "bob", "-t", "alice/z", "-m", "no"],
    );
    publish_ok(broker.port, &["-u", "alice", "-t", "alice/ok", "-m", "yes"]);
    assert_eq!(sub.output(), "alice/ok yes\n");

    // A subscription outside the grants is refused, and sub exits non-zero.
    let out = subscribe(broker.port, &["-u", "alice", "-t", "bob/#", "-C", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused"));

    // One wider than the grants is granted, as by mosquitto, and gets only
    // the messages its user may read.
    let sub = Sub::start(
        broker.port,
        &["-u", "alice", "-t", "#", "-v", "-C", "1", "-q", "1"],
    );
    for topic in ["bob/z", "alice/read"] {
        publish_ok(
            broker.port,
            &["-u", "carol", "-t", topic, "-m", "m", "-q", "1"],
        );
    }
    assert_eq!(sub.output(), "alice/read m\n");
}

// SIGHUP reloads the password file and the ACL file: a user added may
// connect, one removed may not and their clients already connected are
// disconnected (as mosquitto does; they stayed connected before), a
// connected client loses the subscription the new ACL denies, and a file
// that does not load leaves the previous one in force.
#[cfg(unix)]
#[test]
fn sighup_reloads_the_password_and_acl_files() {
    let (dir, config) = with_auth_files("");
    // carol (same password) is there at first.
    let carol_line = ALICE.replacen("alice:", "carol:", 1);
    write(&dir, "passwd", &format!("{ALICE}\n{carol_line}\n"));
    write(
        &dir,
        "acl",
        "user alice\ntopic readwrite #\n\nuser carol\ntopic readwrite #\n",
    );
    let mut broker = FulmarBroker::start(&["-c", &config]);
    let alice = ["-u", "alice", "-P", "secret"];
    let bob = ["-u", "bob", "-P", "secret"];
    let carol = ["-u", "carol", "-P", "secret"];
    let mut carols = fulmar()
        .args([
            "sub",
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port.to_string(),
            "-d",
        ])
        .args(carol)
        .args(["-t", "carol/#", "-V", "5"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let carol_stderr =
        common::wait_for_line_and_keep(carols.stderr.take().unwrap(), "subscribed to ");
    let sub = Sub::start(
        broker.port,
        &[
            alice.as_slice(),
            &["-t", "news/#", "-t", "other/#", "-v", "-C", "1", "-q", "1"],
        ]
        .concat(),
    );
    let port = broker.port;
    let send = |user: &[&str], topic: &str| {
        publish(port, &[user, &["-t", topic, "-m", "x", "-q", "1"]].concat())
    };
    assert!(
        !send(&bob, "other/0").status.success(),
        "bob is unknown yet"
    );

    // The same hash under another name: bob / secret; carol removed.
    let bob_line = ALICE.replacen("alice:", "bob:", 1);
    write(&dir, "passwd", &format!("{ALICE}\n{bob_line}\n"));
    write(
        &dir,
        "acl",
        "user alice\ntopic readwrite other/#\n\nuser bob\ntopic readwrite #\n",
    );
    broker.hangup();
    broker.wait_for("subscriptions checked against the new ACL");
    assert!(broker.log().contains("password file reloaded"));
    assert!(
        !send(&carol, "carol/0").status.success(),
        "carol was removed"
    );
    // carol's subscriber was disconnected (0x87), is refused when it
    // connects again, and exits with an error, as mosquitto_sub does.
    let status = common::wait_exit(&mut carols, Duration::from_secs(30));
    assert!(!status.success(), "{status:?}");
    let stderr = carol_stderr.join().unwrap();
    assert!(
        stderr.contains("NotAuthorized") || stderr.contains("refused"),
        "{stderr}"
    );
    // alice's subscriber, still connected, gets other/# but news/# no more.
    assert!(send(&bob, "news/1").status.success());
    assert!(send(&bob, "other/1").status.success());
    assert_eq!(sub.output(), "other/1 x\n");

    // A file that does not load: logged, the previous one stays.
    write(&dir, "acl", "user bob\ntopics read #\n");
    broker.hangup();
    broker.wait_for("not reloaded");
    assert!(send(&bob, "news/2").status.success(), "{}", broker.log());
}

// SIGHUP also reads the configuration file again and applies its [auth]
// section: allow_anonymous turned off disconnects the anonymous clients (as
// mosquitto does) and refuses new ones, a password file added is enforced,
// an ACL file removed allows every topic again and one named again is
// enforced again, a configuration that does not load leaves the previous
// one in force, and changes beyond [auth] are logged as needing a restart.
#[cfg(unix)]
#[test]
fn sighup_applies_the_auth_section_of_the_configuration() {
    let dir = temp_dir();
    write(&dir, "passwd", &format!("{ALICE}\n"));
    write(
        &dir,
        "acl",
        "topic readwrite public/#\n\nuser alice\ntopic readwrite #\n",
    );
    let open = "[auth]\nallow_anonymous = true\nacl_file = \"acl\"\n";
    let config = write(&dir, "fulmar.toml", open);
    let mut broker = FulmarBroker::start(&["-c", &config]);
    let port = broker.port;
    let anonymous = |topic: &str| publish(port, &["-t", topic, "-m", "x", "-q", "1"]);
    let alice = |password: &str, topic: &str| {
        publish(
            port,
            &[
                "-u", "alice", "-P", password, "-t", topic, "-m", "x", "-q", "1",
            ],
        )
    };
    assert!(anonymous("public/1").status.success());
    assert_eq!(anonymous("private/1").status.code(), Some(1), "the ACL");
    let mut watcher = fulmar()
        .args(["sub", "-h", "127.0.0.1", "-p", &port.to_string(), "-d"])
        .args(["-t", "public/#", "-V", "5"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let watcher_stderr =
        common::wait_for_line_and_keep(watcher.stderr.take().unwrap(), "subscribed to ");

    write(
        &dir,
        "fulmar.toml",
        "[auth]\npassword_file = \"passwd\"\nallow_anonymous = false\n",
    );
    broker.hangup();
    broker.wait_for("anonymous clients are now refused");
    broker.wait_for("no ACL file any more");
    // The anonymous subscriber was disconnected (0x87), is refused when it
    // connects again, and exits with an error.
    let status = common::wait_exit(&mut watcher, Duration::from_secs(30));
    assert!(!status.success(), "{status:?}");
    let stderr = watcher_stderr.join().unwrap();
    assert!(
        stderr.contains("NotAuthorized") || stderr.contains("refused"),
        "{stderr}"
    );
    assert!(!anonymous("public/2").status.success(), "refused now");
    assert!(alice("secret", "private/2").status.success(), "no ACL now");
    assert!(!alice("wrong", "public/2").status.success());

    // A configuration that does not load: logged, the previous one stays.
    write(&dir, "fulmar.toml", "[auth\n");
    broker.hangup();
    broker.wait_for("configuration not reloaded");
    assert!(!anonymous("public/3").status.success());
    assert!(alice("secret", "private/3").status.success());

    // Back to the first [auth], and a limit changed (not applied).
    write(
        &dir,
        "fulmar.toml",
        &format!("{open}\n[limits]\nmax_sessions = 1\n"),
    );
    broker.hangup();
    broker.wait_for("anonymous clients are now accepted");
    broker.wait_for("subscriptions checked against the new ACL");
    broker.wait_for("changed beyond [auth]");
    assert!(anonymous("public/4").status.success());
    assert_eq!(
        anonymous("private/4").status.code(),
        Some(1),
        "the ACL again"
    );
}

// A broker started without an ACL does not check what clients may read:
// an ACL file named on SIGHUP is not applied (logged), it needs a restart.
#[cfg(unix)]
#[test]
fn sighup_does_not_add_an_acl_to_a_broker_started_without_one() {
    let dir = temp_dir();
    write(&dir, "acl", "topic readwrite public/#\n");
    let config = write(&dir, "fulmar.toml", "[auth]\nallow_anonymous = true\n");
    let mut broker = FulmarBroker::start(&["-c", &config]);
    write(
        &dir,
        "fulmar.toml",
        "[auth]\nallow_anonymous = true\nacl_file = \"acl\"\n",
    );
    broker.hangup();
    broker.wait_for("an ACL file was added: it takes effect after a restart");
    publish_ok(broker.port, &["-t", "private/1", "-m", "x", "-q", "1"]);
}

// --check-config loads the configuration and every file it names, without
// starting: OK, or the first error and exit status 1.
#[test]
fn check_config_checks_the_files_without_starting() {
    let (dir, config) = with_auth_files("[[listener]]\nbind = \"127.0.0.1:1\"\n");
    let check = || {
        fulmar()
            .args(["broker", "-c", &config, "--check-config"])
            .output()
            .unwrap()
    };
    let out = check();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "configuration OK\n");
    assert!(!dir.join("fulmar-data").exists(), "nothing started");

    write(&dir, "acl", "user alice\ntopics read #\n");
    let out = check();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2"), "{stderr}");

    write(&dir, "acl", "");
    write(&dir, "cert.pem", "not a certificate");
    write(&dir, "key.pem", "nor a key");
    let config = write(
        &dir,
        "fulmar.toml",
        "[[listener]]\nprotocol = \"tls\"\nbind = \"127.0.0.1:1\"\n\
         cert = \"cert.pem\"\nkey = \"key.pem\"\n",
    );
    let out = fulmar()
        .args(["broker", "-c", &config, "--check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("listener 1 (127.0.0.1:1)"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A listener without a port and a misspelt log level (which silenced
    // every log line) were "configuration OK".
    for (text, expected) in [
        (
            "[[listener]]\nbind = \"127.0.0.1\"\n",
            "bind: an address and a port",
        ),
        (
            "[[listener]]\nbind = \"127.0.0.1:99999\"\n",
            "is not a port",
        ),
        (
            "[[listener]]\nbind = \"127.0.0.1:1\"\n[log]\nlevel = \"warning\"\n",
            "\"warning\" is not one of",
        ),
    ] {
        let config = write(&dir, "fulmar.toml", text);
        let out = fulmar()
            .args(["broker", "-c", &config, "--check-config"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{text}: {stderr}");
    }
}

#[test]
fn json_logs_and_the_data_dir() {
    let dir = temp_dir().join("store");
    let broker =
        FulmarBroker::start(&["--log-format", "json", "--data-dir", dir.to_str().unwrap()]);
    assert!(broker.line.starts_with('{'), "{}", broker.line);
    assert!(
        broker.line.contains("\"level\":\"INFO\""),
        "{}",
        broker.line
    );
    assert!(dir.is_dir());
}

/// The address of a broker's metrics endpoint, from its log.
fn metrics_addr(broker: &mut FulmarBroker) -> String {
    let line = broker.wait_for("metrics on http://");
    line.rsplit("http://")
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

/// The whole HTTP response to `GET path`.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn prometheus_metrics_are_served_at_slash_metrics() {
    let dir = temp_dir();
    let config = write(&dir, "fulmar.toml", "[metrics]\nbind = \"127.0.0.1:0\"\n");
    let mut broker = FulmarBroker::start(&["-c", &config]);
    let addr = metrics_addr(&mut broker);
    publish_ok(broker.port, &["-t", "kept", "-m", "x", "-r"]);
    // A client that connects and sends nothing holds up no scrape: the
    // answer comes while it is still connected.
    let silent = std::net::TcpStream::connect(&addr).unwrap();
    let get = |path: &str| http_get(&addr, path);
    // `fulmar pub` exits once its PUBLISH is written; the broker counts it
    // when it reads it and stores the retained message a moment later.
    let mut response = get("/metrics");
    for _ in 0..500 {
        if response.contains("fulmar_retained_messages 1") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        response = get("/metrics");
    }
    silent.set_nonblocking(true).unwrap();
    let still_open = std::io::Read::read(&mut &silent, &mut [0u8; 1]);
    assert!(
        matches!(&still_open, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "{still_open:?}"
    );
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(
        response.contains("fulmar_retained_messages 1"),
        "{response}"
    );
    assert!(response.contains("fulmar_connections "), "{response}");
    assert!(
        response.contains("fulmar_dropped_messages_total 0"),
        "{response}"
    );
    for metric in [
        "fulmar_messages_received_total 1",
        // The payload "x".
        "fulmar_publish_bytes_received_total 1",
        "fulmar_publish_bytes_sent_total 0",
        "fulmar_bytes_received_total ",
        "fulmar_clients_connected ",
        // `fulmar pub`'s one connection.
        "fulmar_clients_maximum 1",
        "fulmar_connects_total 1",
        "fulmar_connections_accepted_total 1",
        "fulmar_sessions_expired_total 0",
        "fulmar_connections_hibernating ",
        "fulmar_read_ahead_bytes 0",
        "fulmar_shared_subscriptions 0",
    ] {
        assert!(response.contains(metric), "{metric}: {response}");
    }
    assert!(get("/").starts_with("HTTP/1.1 404"));
}

#[test]
fn sys_topics_are_published_at_the_configured_interval() {
    let dir = temp_dir();
    let config = write(&dir, "fulmar.toml", "[sys]\ninterval_secs = 1\n");
    let broker = FulmarBroker::start(&["-c", &config]);
    // Retained: the subscriber gets the current value now or at the next update.
    let out = subscribe(broker.port, &["-t", "$SYS/broker/version", "-v", "-C", "1"]);
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.starts_with("$SYS/broker/version "), "{line}");
}

/// The CONNACK a fresh MQTT 5.0 connection to `port` gets.
fn v5_connack(port: u16) -> fulmar_codec::ConnAck {
    connack(port, fulmar_codec::ProtocolVersion::V5, "cfg", 60).unwrap()
}

/// The CONNACK a connection of `version` to `port` gets for a CONNECT with
/// `client_id` and `keep_alive`; `None` if closed without one.
fn connack(
    port: u16,
    version: fulmar_codec::ProtocolVersion,
    client_id: &str,
    keep_alive: u16,
) -> Option<fulmar_codec::ConnAck> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut connect = fulmar_codec::Connect::new(
        version,
        fulmar_codec::MqttString::from(client_id.to_owned()),
    );
    connect.keep_alive = keep_alive;
    let mut wire = bytes::BytesMut::new();
    fulmar_codec::Packet::Connect(Box::new(connect))
        .encode(version, &mut wire)
        .unwrap();
    stream.write_all(&wire).unwrap();
    let mut buf = bytes::BytesMut::new();
    loop {
        if let Some(packet) = fulmar_codec::decode(&mut buf, version, u32::MAX).unwrap() {
            let fulmar_codec::Packet::ConnAck(ack) = packet else {
                panic!("{packet:?}")
            };
            return Some(ack);
        }
        let mut chunk = [0; 512];
        let n = stream.read(&mut chunk).unwrap();
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn subscription_features_turned_off_in_the_file_are_announced() {
    let dir = temp_dir();
    let file = write(
        &dir,
        "fulmar.toml",
        "[limits]\nwildcard_subscription_available = false\n\
         shared_subscription_available = false\n\
         subscription_identifiers_available = false\n",
    );
    let broker = FulmarBroker::start(&["-c", &file]);
    let props = v5_connack(broker.port).properties;
    assert_eq!(props.wildcard_subscription_available, Some(false));
    assert_eq!(props.shared_subscription_available, Some(false));
    assert_eq!(props.subscription_identifiers_available, Some(false));
    // By default nothing is announced.
    let broker = FulmarBroker::start(&[]);
    let props = v5_connack(broker.port).properties;
    assert_eq!(props.wildcard_subscription_available, None);
    assert_eq!(props.shared_subscription_available, None);
    assert_eq!(props.subscription_identifiers_available, None);
}

/// `[[bridge]]`: one `fulmar broker` bridged to another, a topic out with
/// a remote prefix and a topic in; a bad bridge table is refused with its
/// name and key.
#[test]
fn a_bridge_table_connects_to_another_broker() {
    let remote = FulmarBroker::start(&["--no-persistence"]);
    let dir = temp_dir();
    let config = write(
        &dir,
        "fulmar.toml",
        &format!(
            "[metrics]\nbind = \"127.0.0.1:0\"\n\
             [[bridge]]\nname = \"cloud\"\naddress = \"127.0.0.1:{}\"\nclient_id = \"edge\"\n\
             [[bridge.topic]]\npattern = \"up/#\"\nqos = 1\nremote_prefix = \"edge/\"\n\
             [[bridge.topic]]\npattern = \"down/#\"\ndirection = \"in\"\nqos = 1\n",
            remote.port
        ),
    );
    let mut local = FulmarBroker::start(&["-c", &config]);
    local.wait_for("bridge connected");

    let at_remote = Sub::start(remote.port, &["-t", "edge/#", "-v", "-C", "1"]);
    publish_ok(local.port, &["-t", "up/temp", "-m", "20", "-q", "1"]);
    assert_eq!(at_remote.output(), "edge/up/temp 20\n");

    let at_local = Sub::start(local.port, &["-t", "down/#", "-v", "-C", "1"]);
    publish_ok(remote.port, &["-t", "down/cmd", "-m", "go", "-q", "1"]);
    assert_eq!(at_local.output(), "down/cmd go\n");
    let metrics = http_get(&metrics_addr(&mut local), "/metrics");
    for line in [
        "fulmar_bridge_connected{bridge=\"cloud\"} 1",
        "fulmar_bridge_messages_received_total{bridge=\"cloud\"} 1",
        "fulmar_bridge_messages_dropped_total{bridge=\"cloud\"} 0",
    ] {
        assert!(metrics.contains(line), "{line}: {metrics}");
    }

    let stderr = broker_error(
        "[[bridge]]\nname = \"cloud\"\naddress = \"127.0.0.1:1\"\n\
         [[bridge.topic]]\npattern = \"a/#\"\ndirection = \"sideways\"\n",
    );
    assert!(
        stderr.contains("bridge 1 (cloud) topic 1: direction \"sideways\""),
        "{stderr}"
    );
}

// `-c mosquitto.conf` runs fulmar with a mosquitto configuration. The same
// file, run by mosquitto 2.0 and by fulmar, gives the clients the same
// answers: anonymous clients refused, a password and an ACL enforced (with
// reads checked message by message), directives fulmar ignores noted.
#[test]
fn a_mosquitto_conf_runs_as_mosquitto_runs_it() {
    let dir = temp_dir();
    // The same hash under another name: bob / secret.
    let bob_line = ALICE.replacen("alice:", "bob:", 1);
    write(&dir, "passwd", &format!("{ALICE}\n{bob_line}\n"));
    write(
        &dir,
        "acl",
        "user alice\ntopic readwrite alice/#\ntopic read public/#\n\nuser bob\ntopic write #\n",
    );
    let port = free_port();
    let conf = write(
        &dir,
        "mosquitto.conf",
        &format!(
            "# an installation's file\n\
             pid_file {}/mosquitto.pid\n\
             persistence false\n\
             log_type information\n\
             listener {port} 127.0.0.1\n\
             allow_anonymous false\n\
             password_file {}/passwd\n\
             acl_file {}/acl\n",
            dir.display(),
            dir.display(),
            dir.display()
        ),
    );
    let mosquitto = Mosquitto::with_config(Path::new(&conf), port);
    // The same file (mosquitto's `user root` line, if added, is ignored).
    let mut fulmar_broker = FulmarBroker::start(&["-c", &conf]);
    fulmar_broker.wait_for("pid_file ignored");
    let alice = ["-u", "alice", "-P", "secret"];
    for (broker, port) in [
        ("mosquitto", mosquitto.port),
        ("fulmar", fulmar_broker.port),
    ] {
        let anonymous = publish(port, &["-t", "public/x", "-m", "x"]);
        // CONNACK 0x87 Not authorized (5.0), as the exit status.
        assert_eq!(
            anonymous.status.code(),
            Some(135),
            "{broker}: {anonymous:?}"
        );
        let wrong = publish(
            port,
            &["-t", "public/x", "-m", "x", "-u", "alice", "-P", "no"],
        );
        // A wrong password: mosquitto says 0x87 Not authorized, fulmar the
        // more precise 0x86 Bad User Name or Password.
        let code = if broker == "fulmar" { 134 } else { 135 };
        assert_eq!(wrong.status.code(), Some(code), "{broker}: {wrong:?}");
        // alice subscribes to everything and gets what she may read.
        let sub = Sub::start(
            port,
            &[&alice[..], &["-t", "#", "-v", "-C", "2", "-q", "1"]].concat(),
        );
        for topic in ["other/x", "public/x", "alice/x"] {
            let bob = ["-u", "bob", "-P", "secret"];
            publish_ok(
                port,
                &[&bob[..], &["-t", topic, "-m", "m", "-q", "1"]].concat(),
            );
        }
        assert_eq!(sub.output(), "public/x m\nalice/x m\n", "{broker}");
    }
}

// Found by differential testing against mosquitto 2.0.11 with the same
// password file: a user whose hash is of the empty password (as
// `mosquitto_passwd -b passwd e ''` writes it) logs in neither without a
// password nor with an empty one; fulmar let it in with either.
// (config, no spec statement; v5:MQTT-3.1.4-2 lets the server refuse)
#[test]
fn an_empty_password_logs_nobody_in_as_in_mosquitto() {
    /// Written by mosquitto_passwd 2.0.11: e / (the empty password).
    const EMPTY: &str = "e:$7$101$+Miep5jenuiE9uxb$7eAVDZxPVT/QFk1Jo7b9rtfOUpkuAdJr9xMhUsYfxwRz3SoDPTQ5n2vK6ydc8exeaPtJwDUT5Ap2+nUxmy7dKw==";
    let dir = temp_dir();
    write(&dir, "passwd", &format!("{ALICE}\n{EMPTY}\n"));
    let port = free_port();
    let conf = write(
        &dir,
        "mosquitto.conf",
        &format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}/passwd\n",
            dir.display()
        ),
    );
    let mosquitto = Mosquitto::with_config(Path::new(&conf), port);
    let fulmar_broker = FulmarBroker::start(&["-c", &conf]);
    for (broker, port) in [
        ("mosquitto", mosquitto.port),
        ("fulmar", fulmar_broker.port),
    ] {
        for credentials in [&["-u", "e"][..], &["-u", "e", "-P", ""]] {
            let out = publish(port, &[credentials, &["-t", "t", "-m", "x"]].concat());
            assert!(!out.status.success(), "{broker} {credentials:?}: {out:?}");
        }
        publish_ok(port, &["-u", "alice", "-P", "secret", "-t", "t", "-m", "x"]);
    }
}

// --print-config prints what the broker would run with as fulmar's TOML;
// that file read back prints the same (here from a mosquitto.conf).
#[test]
fn print_config_round_trips_a_mosquitto_conf_into_toml() {
    let dir = temp_dir();
    let conf = write(
        &dir,
        "mosquitto.conf",
        "listener 1883 127.0.0.1\nlistener 8883 127.0.0.1\ncertfile server.pem\n\
         keyfile server.key\npassword_file passwd\nmax_queued_messages 200\n\
         connection cloud\naddress cloud.example:8883\nbridge_cafile ca.pem\n\
         topic sensors/# out 1 \"\" site/\n",
    );
    let print = |file: &str| {
        let out = fulmar()
            .args(["broker", "-c", file, "--print-config"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let toml = print(&conf);
    assert!(toml.contains("max_queued_messages = 200"), "{toml}");
    assert!(toml.contains("remote_prefix = \"site/\""), "{toml}");
    assert!(
        toml.contains("enabled = false"),
        "mosquitto's default: {toml}"
    );
    let again = write(&dir, "fulmar.toml", &toml);
    assert_eq!(print(&again), toml);
}

// Found by differential testing against mosquitto 2.0.11 with the same
// file: `max_topic_alias` and `clientid_prefixes` (mosquitto 2.0
// directives; the latter with `auto_id_prefix`) stopped fulmar ("not a mosquitto configuration directive"),
// and `max_keepalive` was ignored with a note, where mosquitto gives a 5.0
// client asking for more (or for 0) the maximum as its Server Keep Alive.
#[test]
fn max_keepalive_max_topic_alias_and_clientid_prefixes_hold_as_in_mosquitto() {
    use fulmar_codec::{ConnectReasonCode, ProtocolVersion};
    let dir = temp_dir();
    let conf = write(
        &dir,
        "mosquitto.conf",
        "listener 0 127.0.0.1\nallow_anonymous true\nmax_keepalive 60\n\
         max_topic_alias 5\nclientid_prefixes abc\n",
    );
    let mut broker = FulmarBroker::start(&["-c", &conf]);
    let port = broker.port;
    // v5:MQTT-3.2.2-21
    for asked in [100, 0] {
        let ack = connack(port, ProtocolVersion::V5, "abc-1", asked).unwrap();
        assert_eq!(ack.reason_code, ConnectReasonCode::Success);
        assert_eq!(ack.properties.server_keep_alive, Some(60), "{asked}");
        assert_eq!(ack.properties.topic_alias_maximum, Some(5));
    }
    // v5:MQTT-3.2.2-22
    let ack = connack(port, ProtocolVersion::V5, "abc-1", 30).unwrap();
    assert_eq!(ack.properties.server_keep_alive, None);
    // 3.1.1 clients keep theirs (mosquitto: "only applies to MQTT v5").
    let ack = connack(port, ProtocolVersion::V311, "abc-1", 100).unwrap();
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    // A client identifier without the prefix, or none (an assigned one
    // has not it either): 0x87 Not authorized, 3.1.1 return code 5.
    // v5:MQTT-3.2.2-8 v3:MQTT-3.2.2-5
    for (version, id) in [
        (ProtocolVersion::V5, "zzz"),
        (ProtocolVersion::V5, ""),
        (ProtocolVersion::V311, "zzz"),
        (ProtocolVersion::V311, ""),
    ] {
        let ack = connack(port, version, id, 60).unwrap();
        assert_eq!(
            ack.reason_code,
            ConnectReasonCode::NotAuthorized,
            "{version:?} {id:?}: {}",
            broker.log()
        );
    }
    // mosquitto checks a client without an identifier as the one it is
    // given: `auto_id_prefix` (default `auto-`) then a unique part; fulmar
    // ignored auto_id_prefix (its identifiers began with `fulmar-`).
    let conf = write(
        &dir,
        "auto.conf",
        "listener 0 127.0.0.1\nallow_anonymous true\nclientid_prefixes abc\n\
         auto_id_prefix abc-\n",
    );
    let auto = FulmarBroker::start(&["-c", &conf]);
    let ack = connack(auto.port, ProtocolVersion::V5, "", 60).unwrap();
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    let assigned = ack.properties.assigned_client_identifier.unwrap();
    assert!(assigned.as_str().starts_with("abc-"), "{assigned:?}");
    let ack = connack(auto.port, ProtocolVersion::V311, "", 60).unwrap();
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    // Out of mosquitto's ranges: refused, naming the line.
    for (directive, line) in [
        ("max_keepalive 5", "line 2: max_keepalive"),
        ("max_keepalive 65536", "line 2: max_keepalive"),
        ("max_topic_alias 65536", "line 2: max_topic_alias"),
        ("max_topic_alias -1", "line 2: max_topic_alias"),
    ] {
        let conf = write(
            &dir,
            "bad.conf",
            &format!("listener 0 127.0.0.1\n{directive}\n"),
        );
        let out = fulmar()
            .args(["broker", "-c", &conf, "--check-config"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{directive}: {stderr}");
        assert!(stderr.contains(line), "{directive}: {stderr}");
    }
}

// Found by an operator review: a mosquitto.conf with these loaded with a
// note ("ignored") and ran a more open broker than the file describes (a
// PSK listener as plain TCP, a mount_point tenant seeing the others'
// topics, `bind_interface lo` on every interface), and `--check-config`
// said OK. Neither starts now, and the error names the line. (`mount_point`
// is supported since: tests/listeners.rs, `mount_point_from_mosquitto_conf_as_in_mosquitto`.)
#[test]
fn a_mosquitto_conf_fulmar_cannot_hold_does_not_start() {
    let dir = temp_dir();
    for directive in [
        "psk_hint hint",
        "psk_file psk.txt",
        "bind_interface lo",
        "check_retain_source true",
    ] {
        let conf = write(
            &dir,
            "mosquitto.conf",
            &format!("listener 0 127.0.0.1\n{directive}\nallow_anonymous true\n"),
        );
        let key = directive.split(' ').next().unwrap();
        let expected = format!("line 2: {key}: ");
        let out = fulmar()
            .args(["broker", "-c", &conf, "--check-config"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{directive}: {stderr}");
        assert!(out.stdout.is_empty(), "{directive}: {out:?}");
        assert!(stderr.contains(&expected), "{directive}: {stderr}");
        assert!(stderr.contains("not supported"), "{directive}: {stderr}");
        let mut broker = fulmar()
            .args(["broker", "-c", &conf])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = common::wait_exit(&mut broker, Duration::from_secs(10));
        assert_eq!(status.code(), Some(1), "{directive}");
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut broker.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(stderr.contains(&expected), "{directive}: {stderr}");
    }
}

// Found by an operator review: --print-config printed the paths relative
// to the working directory (`-c fulmar.toml`, `--data-dir mydata`), but a
// file's relative paths are taken relative to the file: the printout saved
// in another directory named other files (--check-config: no password
// file) and another store. The paths are absolute now.
#[test]
fn a_printed_config_saved_elsewhere_names_the_same_files() {
    let here = temp_dir();
    write(&here, "passwd", &format!("{ALICE}\n"));
    write(&here, "acl", "user alice\ntopic readwrite #\n");
    write(
        &here,
        "fulmar.toml",
        "[[listener]]\nbind = \"127.0.0.1:1\"\n\
         [auth]\npassword_file = \"passwd\"\nacl_file = \"acl\"\n",
    );
    write(
        &here,
        "mosquitto.conf",
        "listener 1 127.0.0.1\npassword_file passwd\nacl_file acl\n",
    );
    let passwd = here.join("passwd").display().to_string();
    let store = here.join("mydata").display().to_string();
    for file in ["fulmar.toml", "mosquitto.conf"] {
        let out = fulmar()
            .current_dir(&here)
            .args([
                "broker",
                "-c",
                file,
                "--data-dir",
                "mydata",
                "--print-config",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let printed = String::from_utf8(out.stdout).unwrap();
        // No bridge: no stray `bridge = []` line before the first table.
        assert!(!printed.contains("bridge"), "{printed}");
        assert!(printed.contains(&format!("\"{passwd}\"")), "{printed}");
        assert!(printed.contains(&format!("\"{store}\"")), "{printed}");
        let elsewhere = temp_dir();
        let saved = write(&elsewhere, "fulmar.toml", &printed);
        let out = fulmar()
            .args(["broker", "-c", &saved, "--check-config"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{file}: {out:?}");
        let out = fulmar()
            .args(["broker", "-c", &saved, "--print-config"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), printed, "{file}");
    }
}
