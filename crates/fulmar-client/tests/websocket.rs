//! MQTT over WebSocket (subprotocol `mqtt`) to mosquitto's websockets listener,
//! plain and over TLS.

#![cfg(feature = "websocket")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Listener, Mosquitto, guard};
use fulmar_client::{Client, ConnectOptions, ProtocolVersion, QoS, Reconnect, Transport};
use futures::StreamExt;

/// mosquitto 2.0 services its websockets listener about once a second, so
/// each round trip does one QoS flow.
async fn round_trip(options: ConnectOptions, qos: QoS) {
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    let mut stream = guard(client.subscribe("ws/#", QoS::ExactlyOnce))
        .await
        .unwrap();
    // A payload larger than one read, so packets span WebSocket frames and reads.
    let payload = vec![u8::from(qos); 70_000];
    guard(client.publish("ws/big", payload.clone()).qos(qos))
        .await
        .unwrap();
    let m = guard(stream.next()).await.unwrap();
    assert_eq!(m.payload.len(), payload.len());
    assert_eq!(m.qos, qos);
    guard(client.disconnect()).await.unwrap();
}

// MQTT 5.0 section 6: binary frames, subprotocol "mqtt".
#[tokio::test]
async fn websocket_round_trip_both_versions() {
    let broker = Mosquitto::with_listener(Listener::WebSocket);
    for (version, qos) in [
        (ProtocolVersion::V311, QoS::AtLeastOnce),
        (ProtocolVersion::V5, QoS::ExactlyOnce),
    ] {
        let options = ConnectOptions::new("127.0.0.1", broker.port)
            .protocol_version(version)
            .transport(Transport::WebSocket {
                path: "/mqtt".into(),
            })
            .reconnect(Reconnect::disabled());
        round_trip(options, qos).await;
    }
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn secure_websocket_round_trip() {
    let pki = common::Pki::generate();
    let broker = Mosquitto::with_listener(pki.websocket_listener());
    let tls = fulmar_client::TlsOptions::new()
        .without_system_roots()
        .ca_pem(pki.ca_pem.as_bytes())
        .unwrap()
        .server_name("localhost");
    let options = ConnectOptions::new("127.0.0.1", broker.port)
        .transport(Transport::SecureWebSocket {
            path: "/mqtt".into(),
            tls,
        })
        .reconnect(Reconnect::disabled());
    round_trip(options, QoS::AtLeastOnce).await;
}
