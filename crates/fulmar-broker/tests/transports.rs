//! TLS, WebSocket and secure WebSocket listeners with certificates generated
//! by the test (rcgen): mosquitto_pub/mosquitto_sub over TLS (`--cafile`,
//! client certificates), paho-mqtt over WebSockets, fulmar-client over every
//! transport, and raw WebSocket handshakes and frames.

#![cfg(all(feature = "tls", feature = "websocket"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{GUARD, next};
use fulmar_broker::{
    AuthDecision, Authenticator, Broker, BrokerBuilder, BrokerHandle, ConnectInfo, TlsConfig,
};
use fulmar_codec::QoS;
use futures::{SinkExt, StreamExt};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// A CA, a server certificate for `localhost` and a client certificate, as
/// PEM strings and files in a fresh directory.
struct Pki {
    dir: PathBuf,
    ca_pem: String,
    server_pem: String,
    server_key: String,
    client_pem: String,
    client_key: String,
    client_der: Vec<u8>,
    /// A revocation list of the CA that revokes `revoked.pem`.
    crl_pem: String,
}

impl Pki {
    fn generate() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = std::env::temp_dir().join(format!(
            "fulmar-broker-pki-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "fulmar broker test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let mut server = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let server_cert = server.signed_by(&server_key, &issuer).unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client
            .distinguished_name
            .push(DnType::CommonName, "device-7");
        let client_cert = client.signed_by(&client_key, &issuer).unwrap();
        let revoked_key = KeyPair::generate().unwrap();
        let mut revoked = CertificateParams::new(Vec::<String>::new()).unwrap();
        revoked
            .distinguished_name
            .push(DnType::CommonName, "device-8");
        revoked.serial_number = Some(rcgen::SerialNumber::from(0x5e_u64));
        let revoked_cert = revoked.signed_by(&revoked_key, &issuer).unwrap();
        let crl = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: rcgen::SerialNumber::from(1_u64),
            issuing_distribution_point: None,
            revoked_certs: vec![rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from(0x5e_u64),
                revocation_time: rcgen::date_time_ymd(2024, 1, 1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            }],
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&issuer)
        .unwrap();
        let pki = Self {
            dir,
            ca_pem: ca_cert.pem(),
            server_pem: server_cert.pem(),
            server_key: server_key.serialize_pem(),
            client_pem: client_cert.pem(),
            client_key: client_key.serialize_pem(),
            client_der: client_cert.der().to_vec(),
            crl_pem: crl.pem().unwrap(),
        };
        std::fs::write(pki.path("revoked.pem"), revoked_cert.pem()).unwrap();
        std::fs::write(pki.path("revoked.key"), revoked_key.serialize_pem()).unwrap();
        std::fs::write(pki.path("ca.pem"), &pki.ca_pem).unwrap();
        std::fs::write(pki.path("client.pem"), &pki.client_pem).unwrap();
        std::fs::write(pki.path("client.key"), &pki.client_key).unwrap();
        pki
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    fn server(&self) -> TlsConfig {
        TlsConfig::new(self.server_pem.clone(), self.server_key.clone())
    }

    fn client_tls(&self) -> fulmar_client::TlsOptions {
        fulmar_client::TlsOptions::new()
            .without_system_roots()
            .ca_pem(self.ca_pem.as_bytes())
            .unwrap()
            .server_name("localhost")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start(builder: BrokerBuilder) -> BrokerHandle {
    builder.start().await.unwrap()
}

fn port(broker: &BrokerHandle) -> u16 {
    broker.local_addrs()[0].port()
}

/// A mosquitto client command (fails clearly when it is not installed).
fn mosquitto(name: &str, port: u16, pki: &Pki) -> Command {
    let found = std::process::Command::new(name)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        found.is_ok(),
        "{name} is not installed: install the Debian package mosquitto-clients"
    );
    let mut cmd = Command::new(name);
    cmd.args(["-h", "localhost", "-p", &port.to_string()])
        .args(["--cafile", &pki.path("ca.pem")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn success(cmd: &mut Command) -> String {
    let out = tokio::time::timeout(GUARD, cmd.output())
        .await
        .expect("mosquitto client did not finish")
        .unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn wait_subscriptions(broker: &BrokerHandle, n: usize) {
    tokio::time::timeout(GUARD, async {
        while broker.stats().subscriptions < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("subscription not made");
}

#[tokio::test]
async fn mosquitto_pub_and_sub_over_tls_with_a_generated_ca() {
    let pki = Pki::generate();
    let broker = start(Broker::builder().tls_listener("127.0.0.1:0", pki.server())).await;
    let port = port(&broker);
    for version in ["mqttv311", "mqttv5"] {
        // Publish over TLS to an in-process subscriber.
        let mut sub = broker.subscribe("tls/in").unwrap();
        success(
            mosquitto("mosquitto_pub", port, &pki)
                .args(["-V", version, "-t", "tls/in", "-m", "over tls", "-q", "1"]),
        )
        .await;
        let got = next(&mut sub).await;
        assert_eq!(
            (got.topic.as_str(), &got.payload[..]),
            ("tls/in", &b"over tls"[..])
        );
        drop(sub);
        // Subscribe over TLS to an in-process publisher.
        let before = broker.stats().subscriptions;
        let child = mosquitto("mosquitto_sub", port, &pki)
            .args(["-V", version, "-t", "tls/out", "-C", "1", "-q", "2"])
            .spawn()
            .unwrap();
        wait_subscriptions(&broker, before + 1).await;
        broker
            .publish("tls/out", "back", QoS::ExactlyOnce, false)
            .unwrap();
        let out = tokio::time::timeout(GUARD, child.wait_with_output())
            .await
            .expect("mosquitto_sub did not finish")
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "back\n");
    }
    broker.shutdown().await;
}

/// Records the client certificate each CONNECT came with.
#[derive(Clone, Default)]
struct CertRecorder(Arc<Mutex<Vec<Option<Bytes>>>>);

#[async_trait::async_trait]
impl Authenticator for CertRecorder {
    async fn authenticate(&self, connect: &ConnectInfo) -> AuthDecision {
        self.0
            .lock()
            .unwrap()
            .push(connect.client_certificate.clone());
        AuthDecision::Allow
    }
}

#[tokio::test]
async fn client_certificates_reach_the_authenticator() {
    let pki = Pki::generate();
    let recorder = CertRecorder::default();
    let tls = pki.server().client_ca_pem(pki.ca_pem.clone());
    let broker = start(
        Broker::builder()
            .tls_listener("127.0.0.1:0", tls)
            .authenticator(recorder.clone()),
    )
    .await;
    let port = port(&broker);
    let mut sub = broker.subscribe("mtls").unwrap();
    success(
        mosquitto("mosquitto_pub", port, &pki)
            .args(["--cert", &pki.path("client.pem")])
            .args(["--key", &pki.path("client.key")])
            .args(["-t", "mtls", "-m", "x"]),
    )
    .await;
    assert_eq!(next(&mut sub).await.payload, "x");
    // Without a client certificate the TLS handshake fails: no CONNECT at all.
    let out = tokio::time::timeout(
        GUARD,
        mosquitto("mosquitto_pub", port, &pki)
            .args(["-t", "mtls", "-m", "y"])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!out.status.success());
    let seen = recorder.0.lock().unwrap().clone();
    assert_eq!(seen, vec![Some(Bytes::from(pki.client_der.clone()))]);
    broker.shutdown().await;
}

/// A client certificate the CA revoked is refused at the handshake when the
/// listener has the CA's revocation list (mosquitto's `crlfile`); one it did
/// not revoke is accepted.
#[tokio::test]
async fn revoked_client_certificates_are_refused() {
    let pki = Pki::generate();
    let tls = pki
        .server()
        .client_ca_pem(pki.ca_pem.clone())
        .client_crl_pem(pki.crl_pem.clone());
    let broker = start(Broker::builder().tls_listener("127.0.0.1:0", tls)).await;
    let port = port(&broker);
    success(
        mosquitto("mosquitto_pub", port, &pki)
            .args(["--cert", &pki.path("client.pem")])
            .args(["--key", &pki.path("client.key")])
            .args(["-t", "crl", "-m", "x"]),
    )
    .await;
    let out = tokio::time::timeout(
        GUARD,
        mosquitto("mosquitto_pub", port, &pki)
            .args(["--cert", &pki.path("revoked.pem")])
            .args(["--key", &pki.path("revoked.key")])
            .args(["-t", "crl", "-m", "y"])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!out.status.success(), "a revoked certificate was accepted");
    assert_eq!(broker.stats().messages_received, 1);
    broker.shutdown().await;
}

/// `tls13_only` (mosquitto's `tls_version tlsv1.3`): a client limited to
/// TLS 1.2 gets no handshake, one with TLS 1.3 does (`openssl s_client`).
#[tokio::test]
async fn a_tls13_only_listener_refuses_tls12() {
    let pki = Pki::generate();
    let handshake = |port: u16, version: &'static str| {
        let ca = pki.path("ca.pem");
        async move {
            let out = tokio::time::timeout(
                GUARD,
                Command::new("openssl")
                    .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
                    .args([version, "-CAfile", &ca])
                    .stdin(Stdio::null())
                    .output(),
            )
            .await
            .unwrap()
            .expect("openssl is not installed");
            out.status.success()
        }
    };
    let only13 =
        start(Broker::builder().tls_listener("127.0.0.1:0", pki.server().tls13_only(true))).await;
    assert!(handshake(port(&only13), "-tls1_3").await);
    assert!(
        !handshake(port(&only13), "-tls1_2").await,
        "TLS 1.2 was accepted"
    );
    only13.shutdown().await;
    let both = start(Broker::builder().tls_listener("127.0.0.1:0", pki.server())).await;
    assert!(handshake(port(&both), "-tls1_2").await);
    both.shutdown().await;
}

#[tokio::test]
async fn bad_pem_is_refused_at_start() {
    let result = Broker::builder()
        .tls_listener("127.0.0.1:0", TlsConfig::new("not pem", "nor this"))
        .start()
        .await;
    let error = result.unwrap_err();
    assert!(
        matches!(error, fulmar_broker::BrokerError::Tls { .. }),
        "{error}"
    );
}

/// Runs a paho-mqtt 2.x client over (secure) WebSockets: it subscribes,
/// publishes to itself at QoS 1 and prints what it received.
async fn paho_ws(port: u16, ca: Option<&str>) -> String {
    let script = r#"
import sys, threading
import paho.mqtt.client as mqtt
port, ca = int(sys.argv[1]), (sys.argv[2] if len(sys.argv) > 2 else None)
got = threading.Event()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-ws", transport="websockets",
                protocol=mqtt.MQTTv5)
c.ws_set_options(path="/mqtt")
if ca:
    c.tls_set(ca_certs=ca)
def on_connect(c, u, f, rc, p):
    c.subscribe("ws/echo", qos=1)
def on_subscribe(c, u, mid, rcs, p):
    c.publish("ws/echo", "through websockets", qos=1)
def on_message(c, u, m):
    print(m.topic, m.payload.decode(), m.qos)
    got.set()
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect("localhost", port)
c.loop_start()
ok = got.wait(8)
c.disconnect()
c.loop_stop()
sys.exit(0 if ok else 1)
"#;
    let check = std::process::Command::new("python3")
        .args([
            "-c",
            "import paho.mqtt; assert paho.mqtt.__version__ >= '2'",
        ])
        .output();
    assert!(
        check.is_ok_and(|o| o.status.success()),
        "python3 with paho-mqtt 2.x is required (pip install 'paho-mqtt>=2')"
    );
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script, &port.to_string()]);
    if let Some(ca) = ca {
        cmd.arg(ca);
    }
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(GUARD, cmd.output())
        .await
        .expect("paho did not finish")
        .unwrap();
    assert!(
        out.status.success(),
        "paho failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

// MQTT-6.0.0-4
#[tokio::test]
async fn paho_over_websocket_and_secure_websocket() {
    let pki = Pki::generate();
    let broker = start(
        Broker::builder()
            .ws_listener("127.0.0.1:0", "/mqtt")
            .wss_listener("127.0.0.1:0", "/mqtt", pki.server()),
    )
    .await;
    let (ws, wss) = (
        broker.local_addrs()[0].port(),
        broker.local_addrs()[1].port(),
    );
    assert_eq!(paho_ws(ws, None).await, "ws/echo through websockets 1\n");
    let ca = pki.path("ca.pem");
    assert_eq!(
        paho_ws(wss, Some(&ca)).await,
        "ws/echo through websockets 1\n"
    );
    broker.shutdown().await;
}

// v3:MQTT-7.1.1-1
#[tokio::test]
async fn fulmar_client_over_tls_ws_and_wss() {
    use fulmar_client::{Client, ConnectOptions, ProtocolVersion, Reconnect, Transport};
    let pki = Pki::generate();
    let broker = start(
        Broker::builder()
            .tls_listener("127.0.0.1:0", pki.server())
            .ws_listener("127.0.0.1:0", "/mqtt")
            .wss_listener("127.0.0.1:0", "/mqtt", pki.server()),
    )
    .await;
    let addrs = broker.local_addrs().to_vec();
    let transports = [
        (addrs[0].port(), Transport::Tls(pki.client_tls())),
        (
            addrs[1].port(),
            Transport::WebSocket {
                path: "/mqtt".into(),
            },
        ),
        (
            addrs[2].port(),
            Transport::SecureWebSocket {
                path: "/mqtt".into(),
                tls: pki.client_tls(),
            },
        ),
    ];
    for (port, transport) in transports {
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            let options = ConnectOptions::new("127.0.0.1", port)
                .transport(transport.clone())
                .protocol_version(version)
                .reconnect(Reconnect::disabled());
            let (client, _) = tokio::time::timeout(GUARD, Client::connect(options))
                .await
                .unwrap()
                .unwrap();
            let mut stream = tokio::time::timeout(GUARD, client.subscribe("t/x", QoS::ExactlyOnce))
                .await
                .unwrap()
                .unwrap();
            // Bigger than one TLS record and than one read buffer.
            let payload = Bytes::from(vec![7u8; 100_000]);
            tokio::time::timeout(
                GUARD,
                client.publish("t/x", payload.clone()).qos(QoS::AtLeastOnce),
            )
            .await
            .unwrap()
            .unwrap();
            let got = tokio::time::timeout(GUARD, stream.next())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got.payload, payload);
            tokio::time::timeout(GUARD, client.disconnect())
                .await
                .unwrap()
                .unwrap();
        }
    }
    broker.shutdown().await;
}

// A renewed certificate: `reload_tls` makes new handshakes use it while a
// connection opened before goes on; one that does not parse is refused and
// changes nothing.
#[tokio::test]
async fn reload_tls_replaces_the_certificate_for_new_connections() {
    use fulmar_client::{Client, ConnectOptions, Reconnect, Transport};
    let (old, new) = (Pki::generate(), Pki::generate());
    let broker = start(
        Broker::builder()
            .tls_listener("127.0.0.1:0", old.server())
            .tcp_listener("127.0.0.1:0"),
    )
    .await;
    let (tls_addr, tcp_addr) = (broker.local_addrs()[0], broker.local_addrs()[1]);
    let connect = |pki: &Pki| {
        let options = ConnectOptions::new("127.0.0.1", tls_addr.port())
            .transport(Transport::Tls(pki.client_tls()))
            .reconnect(Reconnect::disabled());
        async move {
            tokio::time::timeout(GUARD, Client::connect(options))
                .await
                .unwrap()
        }
    };
    let (before, _) = connect(&old).await.unwrap();
    let mut stream = before.subscribe("t", QoS::AtLeastOnce).await.unwrap();

    broker.reload_tls(tls_addr, &new.server()).unwrap();
    assert!(
        connect(&old).await.is_err(),
        "the old CA is not trusted any more"
    );
    let (after, _) = connect(&new).await.unwrap();
    after
        .publish("t", Bytes::from_static(b"x"))
        .qos(QoS::AtLeastOnce)
        .await
        .unwrap();
    let got = tokio::time::timeout(GUARD, stream.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.payload, Bytes::from_static(b"x"));

    let bad = broker.reload_tls(tls_addr, &TlsConfig::new("not pem", "nor this"));
    assert!(
        matches!(bad, Err(fulmar_broker::BrokerError::Tls { .. })),
        "{bad:?}"
    );
    let (again, _) = connect(&new).await.unwrap();
    assert!(broker.reload_tls(tcp_addr, &new.server()).is_err());
    for client in [before, after, again] {
        tokio::time::timeout(GUARD, client.disconnect())
            .await
            .unwrap()
            .unwrap();
    }
    broker.shutdown().await;
}

/// A raw WebSocket client offering `protocol`.
async fn ws_connect(
    port: u16,
    path: &str,
    protocol: Option<&'static str>,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    let mut request = format!("ws://127.0.0.1:{port}{path}")
        .into_client_request()
        .unwrap();
    if let Some(protocol) = protocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol));
    }
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tokio_tungstenite::client_async(request, stream).await
}

const CONNECT_V311: [u8; 14] = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 0, 0, 0];

// MQTT-6.0.0-2 MQTT-6.0.0-3 MQTT-6.0.0-4
#[tokio::test]
async fn websocket_subprotocol_path_and_split_frames() {
    let broker = start(Broker::builder().ws_listener("127.0.0.1:0", "/mqtt")).await;
    let port = port(&broker);
    // Another path: 404.
    let error = ws_connect(port, "/other", Some("mqtt")).await.unwrap_err();
    assert!(error.to_string().contains("404"), "{error}");
    // Only other subprotocols offered: refused (the client must offer `mqtt`).
    let error = ws_connect(port, "/mqtt", Some("chat")).await.unwrap_err();
    assert!(error.to_string().contains("400"), "{error}");
    // `mqtt` offered among others: `mqtt` selected.
    let (mut ws, response) = ws_connect(port, "/mqtt", Some("chat, mqtt")).await.unwrap();
    assert_eq!(
        response.headers().get("Sec-WebSocket-Protocol").unwrap(),
        "mqtt"
    );
    // A CONNECT split over two frames, the second frame also carrying a PINGREQ.
    ws.send(WsMessage::binary(CONNECT_V311[..5].to_vec()))
        .await
        .unwrap();
    let mut rest = CONNECT_V311[5..].to_vec();
    rest.extend_from_slice(&[0xc0, 0x00]);
    ws.send(WsMessage::binary(rest)).await.unwrap();
    let mut received = Vec::new();
    while received.len() < 6 {
        match tokio::time::timeout(GUARD, ws.next()).await.unwrap() {
            Some(Ok(WsMessage::Binary(data))) => received.extend_from_slice(&data),
            other => panic!("unexpected {other:?}"),
        }
    }
    // CONNACK (session not present, accepted), then PINGRESP.
    assert_eq!(received, [0x20, 0x02, 0x00, 0x00, 0xd0, 0x00]);
    broker.shutdown().await;
}

/// What older MQTT 3.1 WebSocket clients (Paho JavaScript) offer,
/// `mqttv3.1`, is selected when `mqtt` is not offered, as mosquitto does;
/// a listener on path `*` serves any path.
// MQTT-6.0.0-4
#[tokio::test]
async fn websocket_mqttv31_subprotocol_and_any_path() {
    let broker = start(Broker::builder().ws_listener("127.0.0.1:0", "*")).await;
    let port = port(&broker);
    for (path, offered, selected) in [
        ("/", "mqttv3.1", "mqttv3.1"),
        ("/mqtt", "mqttv3.1, mqtt", "mqtt"),
        ("/ws/any", "chat, mqtt", "mqtt"),
    ] {
        let (mut ws, response) = ws_connect(port, path, Some(offered)).await.unwrap();
        assert_eq!(
            response.headers().get("Sec-WebSocket-Protocol").unwrap(),
            selected
        );
        ws.send(WsMessage::binary(CONNECT_V311.to_vec()))
            .await
            .unwrap();
        match tokio::time::timeout(GUARD, ws.next()).await.unwrap() {
            Some(Ok(WsMessage::Binary(data))) => assert_eq!(&data[..], [0x20, 0x02, 0x00, 0x00]),
            other => panic!("unexpected {other:?}"),
        }
    }
    broker.shutdown().await;
}

// MQTT-6.0.0-1
#[tokio::test]
async fn websocket_text_frame_closes_the_connection() {
    let broker = start(Broker::builder().ws_listener("127.0.0.1:0", "/mqtt")).await;
    let (mut ws, _) = ws_connect(port(&broker), "/mqtt", Some("mqtt"))
        .await
        .unwrap();
    ws.send(WsMessage::binary(CONNECT_V311.to_vec()))
        .await
        .unwrap();
    match tokio::time::timeout(GUARD, ws.next()).await.unwrap() {
        Some(Ok(WsMessage::Binary(data))) => assert_eq!(&data[..], [0x20, 0x02, 0x00, 0x00]),
        other => panic!("unexpected {other:?}"),
    }
    ws.send(WsMessage::text("PINGREQ")).await.unwrap();
    // The broker closes: a close frame and/or the end of the stream, no MQTT bytes.
    loop {
        match tokio::time::timeout(GUARD, ws.next()).await.unwrap() {
            Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(WsMessage::Binary(data))) => panic!("unexpected bytes {data:?}"),
            Some(Ok(_)) => {}
        }
    }
    tokio::time::timeout(GUARD, async {
        while broker.stats().connections > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("connection not closed");
    broker.shutdown().await;
}

// v5:MQTT-3.2.2-15 (well, its server side: a packet over the Maximum Packet
// Size gets DISCONNECT 0x95), over WebSocket: a frame over the listener's
// limit (twice the maximum) was just closed; it is answered like a packet
// over the maximum read from TCP.
#[tokio::test]
async fn websocket_frame_over_the_limit_gets_disconnect_0x95() {
    let mut limits = fulmar_broker::Limits::default();
    limits.max_packet_size = std::num::NonZeroU32::new(1024).unwrap();
    let broker = start(
        Broker::builder()
            .limits(limits)
            .ws_listener("127.0.0.1:0", "/mqtt"),
    )
    .await;
    let (mut ws, _) = ws_connect(port(&broker), "/mqtt", Some("mqtt"))
        .await
        .unwrap();
    // CONNECT 5.0, client id "w", keep alive 0, no properties.
    let connect = [
        0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 0, 0, 0, 1, b'w',
    ];
    ws.send(WsMessage::binary(connect.to_vec())).await.unwrap();
    match tokio::time::timeout(GUARD, ws.next()).await.unwrap() {
        Some(Ok(WsMessage::Binary(data))) => assert_eq!(&data[..2], [0x20, data[1]]),
        other => panic!("unexpected {other:?}"),
    }
    // A QoS 0 PUBLISH of 100 KiB in one frame, over the WebSocket limit
    // (twice the maximum, at least 64 KiB).
    let publish = fulmar_codec::Publish::new("t".into(), Bytes::from(vec![b'x'; 100 * 1024]));
    let mut wire = bytes::BytesMut::new();
    fulmar_codec::Packet::from(publish)
        .encode(fulmar_codec::ProtocolVersion::V5, &mut wire)
        .unwrap();
    ws.send(WsMessage::binary(wire.to_vec())).await.unwrap();
    let mut received = Vec::new();
    loop {
        match tokio::time::timeout(GUARD, ws.next()).await.unwrap() {
            Some(Ok(WsMessage::Binary(data))) => received.extend_from_slice(&data),
            Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => {}
        }
    }
    // DISCONNECT, reason code 0x95 Packet too large.
    assert_eq!(
        received.get(..3),
        Some(&[0xE0, 0x01, 0x95][..]),
        "{received:02x?}"
    );
    broker.shutdown().await;
}
