//! `fulmar broker` listeners from the configuration file: TLS (with
//! `fulmar pub`/`sub`/`bench --cafile` and mosquitto_sub), WebSocket next to it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use common::{FulmarBroker, Sub, mosquitto_tool, publish, publish_ok, temp_dir};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// Writes `ca.pem`, `server.pem` and `server.key` (for 127.0.0.1 and
/// localhost), `client.pem` and `client.key`, and `nameless.pem` and
/// `nameless.key` (a client certificate without a common name) into `dir`.
fn generate_pki(dir: &Path) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "fulmar cli test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "fulmar-cli-test-client");
    let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();
    let nameless_key = KeyPair::generate().unwrap();
    let mut nameless_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    // Not rcgen's default name, which has a common name.
    nameless_params.distinguished_name = rcgen::DistinguishedName::new();
    nameless_params
        .distinguished_name
        .push(DnType::OrganizationName, "no common name");
    let nameless = nameless_params.signed_by(&nameless_key, &issuer).unwrap();
    std::fs::write(dir.join("nameless.pem"), nameless.pem()).unwrap();
    std::fs::write(dir.join("nameless.key"), nameless_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("client.pem"), client_cert.pem()).unwrap();
    std::fs::write(dir.join("client.key"), client_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), server_cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
}

/// A fresh directory with the PKI of [`generate_pki`], and `fulmar broker`
/// started there with a TLS listener on a free port (its certificate and key
/// from that PKI, then the `extra` lines of configuration).
fn start_tls_broker(extra: &str) -> (std::path::PathBuf, FulmarBroker) {
    let dir = temp_dir();
    generate_pki(&dir);
    let config = dir.join("fulmar.toml");
    std::fs::write(
        &config,
        format!(
            "[[listener]]\nprotocol = \"tls\"\nbind = \"127.0.0.1:0\"\n\
             cert = \"server.pem\"\nkey = \"server.key\"\n{extra}"
        ),
    )
    .unwrap();
    let broker = FulmarBroker::start(&["-c", config.to_str().unwrap()]);
    (dir, broker)
}

#[test]
fn tls_and_websocket_listeners_from_the_config_file() {
    let (dir, mut broker) = start_tls_broker(
        "\n[[listener]]\nprotocol = \"ws\"\nbind = \"127.0.0.1:0\"\npath = \"/mqtt\"\n",
    );
    let ws_line = broker.wait_for("listening on ");
    let ws_addr = ws_line.rsplit("listening on ").next().unwrap().trim();
    let mut ws = std::net::TcpStream::connect(ws_addr).unwrap();
    ws.write_all(
        b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
          Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
    )
    .unwrap();
    let mut status = [0u8; 12];
    ws.read_exact(&mut status).unwrap();
    assert_eq!(&status, b"HTTP/1.1 101");
    drop(ws);
    let ca = dir.join("ca.pem");
    let ca = ca.to_str().unwrap();

    let sub = Sub::start(
        broker.port,
        &["--cafile", ca, "-t", "secure/#", "-v", "-C", "2"],
    );
    publish_ok(
        broker.port,
        &[
            "--cafile", ca, "-t", "secure/a", "-m", "over tls", "-q", "1",
        ],
    );
    // mosquitto_pub over TLS to fulmar broker.
    let status = Command::new(mosquitto_tool("mosquitto_pub"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port.to_string(),
            "--cafile",
            ca,
        ])
        .args(["-t", "secure/b", "-m", "mosquitto over tls", "-q", "1"])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        sub.output(),
        "secure/a over tls\nsecure/b mosquitto over tls\n"
    );

    // Without the CA, the server certificate is not trusted.
    let out = publish(
        broker.port,
        &["--cafile", "/nonexistent/ca.pem", "-t", "a", "-m", "x"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ca.pem"));
    // Plain MQTT on the TLS port fails cleanly.
    let out = common::fulmar()
        .args(["pub", "-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-t", "a", "-m", "x", "-k", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // mosquitto's --capath (a directory of CAs) and --nodelay work too; with
    // --tls-use-os-certs alone, the test CA is not among the system's: TLS
    // is tried and the certificate refused.
    let capath = dir.join("cas");
    std::fs::create_dir_all(&capath).unwrap();
    std::fs::copy(ca, capath.join("test-ca.pem")).unwrap();
    publish_ok(
        broker.port,
        &[
            "--capath",
            capath.to_str().unwrap(),
            "--nodelay",
            "-t",
            "secure/c",
            "-m",
            "x",
        ],
    );
    let out = publish(broker.port, &["--tls-use-os-certs", "-t", "a", "-m", "x"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("certificate"), "{stderr}");
}

// SIGHUP reads the certificate and key again (a renewal): new connections
// get the new one, a client connected before stays; files that do not load
// leave the current one in force.
#[cfg(unix)]
#[test]
fn sighup_reloads_the_certificate() {
    let (dir, mut broker) = start_tls_broker("");
    let old_ca = dir.join("old-ca.pem");
    std::fs::rename(dir.join("ca.pem"), &old_ca).unwrap();
    let old_ca = old_ca.to_str().unwrap().to_owned();
    let sub = Sub::start(
        broker.port,
        &["--cafile", &old_ca, "-t", "renewed", "-v", "-C", "1"],
    );
    // A new CA and server certificate over the old files.
    generate_pki(&dir);
    let ca = dir.join("ca.pem");
    let ca = ca.to_str().unwrap();
    broker.hangup();
    broker.wait_for("certificate reloaded");
    let out = publish(broker.port, &["--cafile", &old_ca, "-t", "x", "-m", "x"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the old CA is not trusted any more"
    );
    publish_ok(
        broker.port,
        &["--cafile", ca, "-t", "renewed", "-m", "yes", "-q", "1"],
    );
    assert_eq!(sub.output(), "renewed yes\n");

    std::fs::write(dir.join("server.key"), "not a key").unwrap();
    broker.hangup();
    broker.wait_for("certificate not reloaded");
    publish_ok(broker.port, &["--cafile", ca, "-t", "x", "-m", "x"]);
}

#[test]
fn a_certificate_that_does_not_parse_is_a_clear_error() {
    let dir = temp_dir();
    std::fs::write(dir.join("server.pem"), "not a certificate").unwrap();
    std::fs::write(dir.join("server.key"), "not a key").unwrap();
    let config = dir.join("fulmar.toml");
    std::fs::write(
        &config,
        "[[listener]]\nprotocol = \"wss\"\nbind = \"127.0.0.1:0\"\n\
         cert = \"server.pem\"\nkey = \"server.key\"\n",
    )
    .unwrap();
    let out = common::fulmar()
        .args(["broker", "-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("TLS configuration of 127.0.0.1:0"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn client_certificates_with_client_ca() {
    let (dir, broker) = start_tls_broker("client_ca = \"ca.pem\"\n");
    a_client_certificate_is_required(&dir, &broker);
}

/// A client with the PKI's client certificate publishes; one without is
/// refused at the handshake.
fn a_client_certificate_is_required(dir: &Path, broker: &FulmarBroker) {
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let (ca, cert, key) = (path("ca.pem"), path("client.pem"), path("client.key"));
    publish_ok(
        broker.port,
        &[
            "--cafile", &ca, "--cert", &cert, "--key", &key, "-t", "m", "-m", "x",
        ],
    );
    let out = publish(broker.port, &["--cafile", &ca, "-t", "m", "-m", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

// client_ca_path (mosquitto's listener `capath`): the client CAs are those
// of the PEM files in a directory, other files are skipped; a directory
// without one stops the start with the key named.
#[test]
fn client_certificates_with_client_ca_path() {
    let dir = temp_dir();
    generate_pki(&dir);
    let cas = dir.join("cas");
    std::fs::create_dir_all(&cas).unwrap();
    std::fs::copy(dir.join("ca.pem"), cas.join("test-ca.pem")).unwrap();
    std::fs::write(cas.join("README"), "CA certificates of the clients\n").unwrap();
    std::fs::copy(dir.join("client.key"), cas.join("stray.key")).unwrap();
    let config = dir.join("fulmar.toml");
    let listener = "[[listener]]\nprotocol = \"tls\"\nbind = \"127.0.0.1:0\"\n\
                    cert = \"server.pem\"\nkey = \"server.key\"\nclient_ca_path = \"cas\"\n";
    std::fs::write(&config, listener).unwrap();
    let broker = FulmarBroker::start(&["-c", config.to_str().unwrap()]);
    // require_certificate defaults to true.
    a_client_certificate_is_required(&dir, &broker);
    drop(broker);

    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(&config, listener.replace("\"cas\"", "\"empty\"")).unwrap();
    let out = common::fulmar()
        .args(["broker", "-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("client_ca_path") && stderr.contains("no PEM CA certificate"),
        "{stderr}"
    );
}

// use_identity_as_username: a client with a certificate is its common name
// for the ACL, without a password (whatever user name it sends).
#[test]
fn use_identity_as_username_names_the_client_by_its_certificate() {
    let acl = temp_dir().join("acl");
    std::fs::write(&acl, "user fulmar-cli-test-client\ntopic readwrite dev/#\n").unwrap();
    let (dir, broker) = start_tls_broker(&format!(
        "client_ca = \"ca.pem\"\n[auth]\nuse_identity_as_username = true\nacl_file = {:?}\n",
        acl.to_str().unwrap()
    ));
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let (ca, cert, key) = (path("ca.pem"), path("client.pem"), path("client.key"));
    let tls = ["--cafile", &ca, "--cert", &cert, "--key", &key];
    let send = |topic: &str| {
        let args = ["-t", topic, "-m", "x", "-q", "1", "-u", "somebody-else"];
        publish(broker.port, &[tls.as_slice(), &args].concat())
    };
    assert!(send("dev/1").status.success());
    let out = send("other/1");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotAuthorized"));
}

#[test]
fn bench_over_tls_loses_no_qos12_message() {
    // v5:MQTT-4.3.2-4 v5:MQTT-4.3.3-8 (the broker acknowledged, so it owns and delivers), over TLS
    let (dir, broker) = start_tls_broker("");
    let ca = dir.join("ca.pem");
    let output = common::fulmar()
        .args(["bench", "--json", "-p", &broker.port.to_string()])
        .args(["--cafile", ca.to_str().unwrap()])
        .args(["-P", "2", "-S", "2", "-q", "1,2", "-n", "500", "-s", "100"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "fulmar bench over TLS failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["errors"], 0, "{report:#}");
    for counts in report["qos"].as_array().unwrap() {
        assert_eq!(counts["received"], 1000, "{counts}");
        assert_eq!(counts["lost"], 0, "{counts}");
        if counts["qos"] == 2 {
            assert_eq!(counts["duplicated"], 0, "QoS 2 delivered twice: {counts}");
        }
    }
    // Without the CA, the broker's certificate is not trusted: a clear error.
    let output = common::fulmar()
        .args(["bench", "-p", &broker.port.to_string(), "--tls"])
        .args(["-P", "1", "-S", "0", "-n", "1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TLS handshake"), "{stderr}");
}

/// The soft and hard limits on open files of process `pid`.
#[cfg(target_os = "linux")]
fn open_files(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .trim_start_matches("Max open files");
    let mut fields = line.split_whitespace();
    (
        fields.next().unwrap().to_owned(),
        fields.next().unwrap().to_owned(),
    )
}

// A broker started under a low soft limit on open files (1024 is the usual
// default) raises it to the hard limit: otherwise connections past about a
// thousand are refused by the system, whatever max_connections says.
#[cfg(target_os = "linux")]
#[test]
fn the_broker_raises_its_open_files_limit_to_the_hard_limit() {
    let (_, hard) = open_files(std::process::id());
    let mut broker = FulmarBroker::start_with_open_files(256, &[]);
    let (soft, broker_hard) = open_files(broker.pid());
    assert_eq!(broker_hard, hard);
    if hard != "256" {
        assert_eq!(soft, hard, "{}", broker.log());
    }
    publish_ok(broker.port, &["-t", "a", "-m", "still serving"]);
}

/// A TLS server on 127.0.0.1 that speaks TLS 1.2 only (with the server
/// certificate of [`generate_pki`] in `dir`) and MQTT 3.1.1 just enough for
/// `pub -q 0`: it answers the CONNECT, reads to the end. For each of
/// `connections` in turn, the TLS version agreed, or None when the
/// handshake failed.
fn tls12_only_server(
    dir: &Path,
    connections: usize,
) -> (
    u16,
    std::thread::JoinHandle<Vec<Option<rustls::ProtocolVersion>>>,
) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let config = std::sync::Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        (0..connections)
            .map(|_| {
                let (mut tcp, _) = listener.accept().unwrap();
                tcp.set_read_timeout(Some(std::time::Duration::from_secs(30)))
                    .unwrap();
                let mut tls = rustls::ServerConnection::new(config.clone()).unwrap();
                while tls.is_handshaking() {
                    if tls.complete_io(&mut tcp).is_err() {
                        return None;
                    }
                }
                let version = tls.protocol_version();
                let mut stream = rustls::StreamOwned::new(tls, tcp);
                // CONNECT (its first bytes), then CONNACK; the rest is
                // drained to the end.
                let mut connect = [0u8; 2];
                stream.read_exact(&mut connect).ok()?;
                let mut rest = vec![0; usize::from(connect[1])];
                stream.read_exact(&mut rest).ok()?;
                stream.write_all(&[0x20, 2, 0, 0]).ok()?;
                let mut sink = Vec::new();
                let _ = stream.read_to_end(&mut sink);
                version
            })
            .collect()
    });
    (port, handle)
}

// --tls-version as mosquitto_pub 2.0 takes it (OpenSSL's lowest version):
// tlsv1.3 speaks TLS 1.3 only, so a server that stops at 1.2 refuses it;
// tlsv1.2 (the default) allows 1.2 and 1.3, so it connects to a broker that
// takes only TLS 1.3 (`tls_version = "1.3"`) too. mosquitto_pub does the
// same against the same servers. tlsv1.1 is refused before connecting.
#[test]
fn tls_version_is_the_lowest_version_as_with_mosquitto_pub() {
    let (dir, broker) = start_tls_broker("tls_version = \"1.3\"\n");
    let ca = dir.join("ca.pem");
    let ca = ca.to_str().unwrap();
    for version in [None, Some("tlsv1.2"), Some("tlsv1.3")] {
        let mut args = vec!["--cafile", ca, "-t", "versions", "-m", "x"];
        args.extend(version.map(|v| ["--tls-version", v]).iter().flatten());
        publish_ok(broker.port, &args);
        if let Some(version) = version {
            let status = Command::new(mosquitto_tool("mosquitto_pub"))
                .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
                .args(["--cafile", ca, "--tls-version", version])
                .args(["-t", "versions", "-m", "x"])
                .status()
                .unwrap();
            assert!(status.success(), "mosquitto_pub --tls-version {version}");
        }
    }

    // fulmar pub, then mosquitto_pub: tlsv1.3 fails, tlsv1.2 connects.
    let (port, server) = tls12_only_server(&dir, 4);
    let port = port.to_string();
    let fulmar_pub = |version: &str| {
        common::fulmar()
            .args(["pub", "-h", "127.0.0.1", "-p", &port, "-V", "311"])
            .args([
                "--cafile",
                ca,
                "--tls-version",
                version,
                "-t",
                "a",
                "-m",
                "x",
            ])
            .output()
            .unwrap()
    };
    let mosquitto_pub = |version: &str| {
        Command::new(mosquitto_tool("mosquitto_pub"))
            .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv311"])
            .args([
                "--cafile",
                ca,
                "--tls-version",
                version,
                "-t",
                "a",
                "-m",
                "x",
            ])
            .output()
            .unwrap()
    };
    let out = fulmar_pub("tlsv1.3");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot connect"), "{stderr}");
    let out = fulmar_pub("tlsv1.2");
    assert!(out.status.success(), "{out:?}");
    assert!(!mosquitto_pub("tlsv1.3").status.success());
    let out = mosquitto_pub("tlsv1.2");
    assert!(out.status.success(), "{out:?}");
    let tls12 = Some(rustls::ProtocolVersion::TLSv1_2);
    assert_eq!(server.join().unwrap(), [None, tls12, None, tls12]);

    let out = publish(
        broker.port,
        &[
            "--cafile",
            ca,
            "--tls-version",
            "tlsv1.1",
            "-t",
            "a",
            "-m",
            "x",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tlsv1.1 is not supported"), "{stderr}");
}

/// Writes `stranger.pem` and `stranger.key` into `dir`: a client
/// certificate from a CA of its own, which no listener trusts.
fn generate_stranger(dir: &Path) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "some other CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "stranger");
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("stranger.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("stranger.key"), key.serialize_pem()).unwrap();
}

/// A mosquitto.conf in `dir` (written by `generate_pki`): one TLS listener
/// on `port` with the server certificate and `cafile`, anonymous clients
/// allowed, then `extra`.
fn tls_mosquitto_conf(dir: &std::path::Path, port: u16, extra: &str) -> std::path::PathBuf {
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "allow_anonymous true\nlistener {port} 127.0.0.1\ncertfile {}\nkeyfile {}\n\
             cafile {}\n{extra}",
            path("server.pem"),
            path("server.key"),
            path("ca.pem"),
        ),
    )
    .unwrap();
    conf
}

// Found by differential testing against mosquitto 2.0.11 with the same
// mosquitto.conf: a TLS listener with `cafile` and without
// `require_certificate true` asks clients for no certificate there, so a
// client configured with a certificate from an unknown CA (or an expired
// one) connects; fulmar asked for an optional certificate, checked it and
// refused the handshake. Now neither asks for one.
// (config, no spec statement)
#[test]
fn cafile_without_require_certificate_asks_for_no_certificate_as_in_mosquitto() {
    let dir = temp_dir();
    generate_pki(&dir);
    generate_stranger(&dir);
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    for require in ["", "require_certificate false\n"] {
        let port = common::free_port();
        let conf = tls_mosquitto_conf(&dir, port, require);
        let mosquitto = common::Mosquitto::with_config(&conf, port);
        let fulmar_broker = FulmarBroker::start(&["-c", conf.to_str().unwrap()]);
        let (ca, cert, key) = (path("ca.pem"), path("stranger.pem"), path("stranger.key"));
        for (broker, port) in [
            ("mosquitto", mosquitto.port),
            ("fulmar", fulmar_broker.port),
        ] {
            let out = publish(
                port,
                &[
                    "--cafile", &ca, "--cert", &cert, "--key", &key, "-t", "t", "-m", "x",
                ],
            );
            assert!(out.status.success(), "{broker} {require:?}: {out:?}");
        }
    }
}

// Found by differential testing against mosquitto 2.0.11 with the same
// mosquitto.conf: with use_identity_as_username, a client whose certificate
// has no common name has no user name; mosquitto answers CONNACK 0x86 Bad
// User Name or Password (3.1.1: 4), fulmar answered 0x87 Not authorized.
// (v5:MQTT-3.1.4-2 lets the server refuse; the code is mosquitto's)
#[test]
fn a_certificate_without_a_common_name_is_a_bad_user_name_as_in_mosquitto() {
    let dir = temp_dir();
    generate_pki(&dir);
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let port = common::free_port();
    let conf = tls_mosquitto_conf(
        &dir,
        port,
        "require_certificate true\nuse_identity_as_username true\n",
    );
    let mosquitto = common::Mosquitto::with_config(&conf, port);
    let fulmar_broker = FulmarBroker::start(&["-c", conf.to_str().unwrap()]);
    let ca = path("ca.pem");
    for (broker, port) in [
        ("mosquitto", mosquitto.port),
        ("fulmar", fulmar_broker.port),
    ] {
        for (who, code) in [("client", 0), ("nameless", 134)] {
            let (cert, key) = (path(&format!("{who}.pem")), path(&format!("{who}.key")));
            let out = publish(
                port,
                &[
                    "--cafile", &ca, "--cert", &cert, "--key", &key, "-t", "t", "-m", "x",
                ],
            );
            assert_eq!(out.status.code(), Some(code), "{broker} {who}: {out:?}");
        }
    }
}

/// A `[[listener]]` with `maximum_qos` and `max_connections` of its own:
/// its subscriber is granted QoS 1 at most, and a second client there is
/// refused, while the first listener keeps the broker's limits.
// MQTT-3.8.4-8 v5:MQTT-3.2.2-9 v3:MQTT-3.2.2-5
#[test]
fn a_listener_has_limits_of_its_own() {
    let dir = temp_dir();
    let config = dir.join("fulmar.toml");
    std::fs::write(
        &config,
        "[[listener]]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nmaximum_qos = 1\nmax_connections = 1\n\
         send_buffer_size = 65536\nreceive_buffer_size = 65536\n",
    )
    .unwrap();
    let mut broker = FulmarBroker::start(&["-c", config.to_str().unwrap()]);
    let line = broker.wait_for("listening on ");
    let limited: u16 = line
        .rsplit(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("no port in {line:?}: {e}"));
    let sub = Sub::start(limited, &["-t", "t", "-q", "2", "-F", "%q %p", "-C", "1"]);
    // The listener's one connection is taken.
    let refused = publish(limited, &["-t", "t", "-m", "no room"]);
    assert!(!refused.status.success());
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(error.contains("navailable"), "{error}");
    publish_ok(broker.port, &["-t", "t", "-m", "two", "-q", "2"]);
    assert_eq!(sub.output(), "1 two\n");
}

/// What the clients of a plain listener and of one with the mount point
/// `tenant1/` see of the same messages, on the broker at `plain` and
/// `mounted`: what a plain and a mounted `#` subscriber get (topic and
/// payload), then the retained message `tenant1/r` seen through the mount point.
fn mount_point_scenario(plain: u16, mounted: u16) -> (String, String, String) {
    let plain_sub = Sub::start(plain, &["-t", "#", "-F", "%t %p", "-C", "4"]);
    let mounted_sub = Sub::start(mounted, &["-t", "#", "-F", "%t %p", "-C", "3"]);
    publish_ok(mounted, &["-t", "a/b", "-m", "m1", "-q", "1"]);
    publish_ok(plain, &["-t", "tenant1/x", "-m", "p1", "-q", "1"]);
    publish_ok(plain, &["-t", "other/x", "-m", "p2", "-q", "1"]);
    publish_ok(plain, &["-t", "tenant1/y", "-m", "p3", "-q", "1"]);
    let (plain_seen, mounted_seen) = (plain_sub.output(), mounted_sub.output());
    publish_ok(plain, &["-t", "tenant1/r", "-m", "kept", "-r"]);
    let retained = Sub::start(mounted, &["-t", "#", "-F", "%t %p %r", "-C", "1"]).output();
    (plain_seen, mounted_seen, retained)
}

/// `mount_point` in fulmar.toml: the mounted listener's clients publish
/// and subscribe under the prefix and see topics without it.
// (mount point, no spec statement)
#[test]
fn a_listener_with_a_mount_point_from_fulmar_toml() {
    let dir = temp_dir();
    let config = dir.join("fulmar.toml");
    let mounted = common::free_port();
    std::fs::write(
        &config,
        format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n\n\
             [[listener]]\nbind = \"127.0.0.1:{mounted}\"\nmount_point = \"tenant1/\"\n"
        ),
    )
    .unwrap();
    let broker = FulmarBroker::start(&["-c", config.to_str().unwrap()]);
    let (plain_seen, mounted_seen, retained) = mount_point_scenario(broker.port, mounted);
    assert_eq!(
        plain_seen,
        "tenant1/a/b m1\ntenant1/x p1\nother/x p2\ntenant1/y p3\n"
    );
    assert_eq!(mounted_seen, "a/b m1\nx p1\ny p3\n");
    assert_eq!(retained, "r kept 1\n");
}

/// The same scenario on mosquitto 2.0 and on fulmar, both from a
/// mosquitto.conf with `mount_point tenant1/` after the second `listener`
/// line: the same topics on both. mosquitto 2.0.0 to 2.0.11 do not take
/// the prefix off what they send to the mounted listener's clients
/// (eclipse-mosquitto/mosquitto#2244, fixed in 2.0.12; 1.6 did, as
/// mosquitto.conf(5) says): what those clients get is compared without it.
// (mount point, no spec statement)
#[test]
fn mount_point_from_mosquitto_conf_as_in_mosquitto() {
    let dir = temp_dir();
    let conf = |name: &str, plain: u16, mounted: u16| {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                "allow_anonymous true\npersistence false\n\
                 listener {plain} 127.0.0.1\n\
                 listener {mounted} 127.0.0.1\nmount_point tenant1/\n"
            ),
        )
        .unwrap();
        path
    };
    let (plain, mounted) = (common::free_port(), common::free_port());
    let mosquitto_conf = conf("mosquitto.conf", plain, mounted);
    let mosquitto = common::Mosquitto::with_config(&mosquitto_conf, plain);
    let expected = mount_point_scenario(mosquitto.port, mounted);
    drop(mosquitto);
    let fulmar_mounted = common::free_port();
    let fulmar_conf = conf("fulmar-mosquitto.conf", 0, fulmar_mounted);
    let broker = FulmarBroker::start(&["-c", fulmar_conf.to_str().unwrap()]);
    let got = mount_point_scenario(broker.port, fulmar_mounted);
    // What the plain listener's clients get: the same, exactly.
    assert_eq!(got.0, expected.0);
    assert_eq!(
        got.0,
        "tenant1/a/b m1\ntenant1/x p1\nother/x p2\ntenant1/y p3\n"
    );
    // What the mounted listener's clients get: the same messages (nothing
    // from outside the prefix), the same topics but for the prefix.
    let unprefixed = |s: &str| -> String {
        s.lines()
            .map(|l| format!("{}\n", l.strip_prefix("tenant1/").unwrap_or(l)))
            .collect()
    };
    assert_eq!(unprefixed(&expected.1), got.1);
    assert_eq!(unprefixed(&expected.2), got.2);
    assert_eq!(got.1, "a/b m1\nx p1\ny p3\n");
    assert_eq!(got.2, "r kept 1\n");
}
