//! MQTT over WebSocket (subprotocol `mqtt`) to mosquitto's websockets listener,
//! plain and over TLS.

#![cfg(feature = "websocket")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::num::NonZeroU32;

use bytes::{Bytes, BytesMut};
use common::{Listener, Mosquitto, guard};
use fulmar_client::{Client, ConnectOptions, ProtocolVersion, QoS, Reconnect, Transport};
use fulmar_codec::{ConnAck, Packet, PubAck, Publish};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

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

/// The Maximum Packet Size of the scripted broker below, and its WebSocket
/// frame and message limit: twice that, as fulmar-broker's listener has it.
const BROKER_MAX_PACKET: u32 = 64 * 1024;
const BROKER_WS_LIMIT: usize = 2 * 64 * 1024;

/// A scripted MQTT 5.0 broker behind a tungstenite WebSocket listener that
/// takes frames and messages of at most [`BROKER_WS_LIMIT`] bytes. Answers
/// CONNECT (with [`BROKER_MAX_PACKET`]) and acknowledges QoS 1 PUBLISHes;
/// after the CONNACK it sends `send` (in one binary frame). Returns the
/// number of PUBLISHes received before the DISCONNECT, or how the
/// connection failed.
#[allow(clippy::result_large_err)] // tungstenite's handshake callback type
async fn scripted_ws_broker(listener: TcpListener, send: Option<Packet>) -> Result<usize, String> {
    let (tcp, _) = listener.accept().await.unwrap();
    let mqtt = |_: &Request, mut response: Response| {
        response
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
        Ok(response)
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(BROKER_WS_LIMIT))
        .max_frame_size(Some(BROKER_WS_LIMIT));
    let mut ws = tokio_tungstenite::accept_hdr_async_with_config(tcp, mqtt, Some(config))
        .await
        .unwrap();
    let v5 = ProtocolVersion::V5;
    let encode = |packet: Packet| {
        let mut out = BytesMut::new();
        packet.encode(v5, &mut out).unwrap();
        WsMessage::Binary(out.freeze())
    };
    let mut send = send;
    let mut read = BytesMut::new();
    let mut publishes = 0;
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Binary(data))) => read.extend_from_slice(&data),
            Some(Ok(WsMessage::Close(_))) | None => return Err("closed".into()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
        }
        while let Some(packet) = fulmar_codec::decode(&mut read, v5, BROKER_MAX_PACKET).unwrap() {
            match packet {
                Packet::Connect(_) => {
                    let mut connack = ConnAck::default();
                    connack.properties.maximum_packet_size = NonZeroU32::new(BROKER_MAX_PACKET);
                    ws.send(encode(Packet::ConnAck(connack))).await.unwrap();
                    if let Some(packet) = send.take() {
                        ws.send(encode(packet)).await.unwrap();
                    }
                }
                Packet::Publish(p) => {
                    publishes += 1;
                    if let Some(id) = p.packet_id {
                        ws.send(encode(Packet::PubAck(PubAck::new(id))))
                            .await
                            .unwrap();
                    }
                }
                Packet::Disconnect(_) => return Ok(publishes),
                Packet::PingReq => ws.send(encode(Packet::PingResp)).await.unwrap(),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

fn ws_options(port: u16) -> ConnectOptions {
    ConnectOptions::new("127.0.0.1", port)
        .transport(Transport::WebSocket {
            path: "/mqtt".into(),
        })
        .reconnect(Reconnect::disabled())
}

// MQTT 5.0 section 6 (v5:MQTT-6.0.0-2: packets need not be aligned on frame
// boundaries): a burst of valid packets, written at once, goes out in
// frames a broker takes. fulmar-broker's listener takes frames of up to
// twice its Maximum Packet Size; the whole write buffer went out as one
// frame, so a burst of 40 messages of 10 kB each (within the Maximum Packet
// Size, 400 kB in all) got the connection closed.
#[tokio::test]
async fn a_burst_goes_out_in_frames_the_broker_takes() {
    const N: usize = 40;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let broker = tokio::spawn(scripted_ws_broker(listener, None));
    let (client, _) = guard(Client::connect(ws_options(port))).await.unwrap();
    let payload = Bytes::from(vec![7u8; 10_000]);
    let mut publishes: Vec<_> = (0..N)
        .map(|_| {
            Box::pin(
                client
                    .publish("ws/burst", payload.clone())
                    .qos(QoS::AtLeastOnce)
                    .into_future(),
            )
        })
        .collect();
    // Each is handed to the connection task on its first poll: all of them
    // before it runs, so that they are written at once.
    for publish in &mut publishes {
        assert!(futures::poll!(publish.as_mut()).is_pending());
    }
    for publish in publishes {
        guard(publish).await.expect("acknowledged");
    }
    guard(client.disconnect()).await.unwrap();
    assert_eq!(guard(broker).await.unwrap(), Ok(N));
}

// The client's WebSocket takes frames as large as the Maximum Packet Size it
// announces (here 32 MiB, above tungstenite's default frame limit of 16 MiB):
// a 20 MiB message in one frame arrives (it ended the connection).
#[tokio::test]
async fn a_packet_within_the_maximum_packet_size_arrives_in_one_frame() {
    const SIZE: usize = 20 << 20;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let big = Publish::new("ws/big".into(), Bytes::from(vec![1u8; SIZE]));
    let broker = tokio::spawn(scripted_ws_broker(listener, Some(Packet::Publish(big))));
    let options = ws_options(port).maximum_packet_size(32 << 20);
    let (client, _, mut messages) = guard(Client::connect_with_messages(options)).await.unwrap();
    let m = guard(messages.next()).await.expect("the message arrives");
    assert_eq!(m.payload.len(), SIZE);
    guard(client.disconnect()).await.unwrap();
    assert_eq!(guard(broker).await.unwrap(), Ok(0));
}

// v5:MQTT-6.0.0-1 (the WebSocket carries the connection; RFC 6455 5.5.1: an
// endpoint that receives a Close frame, and has not sent one, answers with
// a Close frame). A broker closing the WebSocket got the TCP connection
// dropped under it ("Connection reset without closing handshake"): the
// Close frame tungstenite queued in answer was never written, since the
// client stops reading at the end of the stream and writes nothing more.
#[tokio::test]
#[allow(clippy::result_large_err)] // tungstenite's handshake callback type
async fn a_close_frame_from_the_broker_is_answered() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let broker = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mqtt = |_: &Request, mut response: Response| {
            response
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
            Ok(response)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(tcp, mqtt)
            .await
            .unwrap();
        let Some(Ok(WsMessage::Binary(_connect))) = ws.next().await else {
            panic!("expected the CONNECT")
        };
        let mut connack = BytesMut::new();
        Packet::ConnAck(ConnAck::default())
            .encode(ProtocolVersion::V5, &mut connack)
            .unwrap();
        ws.send(WsMessage::Binary(connack.freeze())).await.unwrap();
        ws.close(None).await.unwrap();
        // What the client sends until the connection ends.
        let mut answer = Vec::new();
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Close(_))) => answer.push("Close".to_owned()),
                Some(Ok(other)) => answer.push(format!("{other:?}")),
                Some(Err(e)) => {
                    answer.push(e.to_string());
                    break;
                }
                None => break,
            }
        }
        answer
    });
    let (client, _) = guard(Client::connect(ws_options(port))).await.unwrap();
    let answer = guard(broker).await.unwrap();
    assert_eq!(answer, ["Close"]);
    guard(client.wait_connected(false)).await.unwrap();
}
