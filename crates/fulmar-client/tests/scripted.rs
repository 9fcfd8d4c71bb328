//! `disconnect_with` against a scripted broker at the other end of an
//! in-memory pipe ([`Transport::custom`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::guard;
use fulmar_client::{Client, ConnectOptions, Error, ProtocolVersion, Reconnect, Transport};
use fulmar_codec::{
    ConnAck, Disconnect, DisconnectProperties, DisconnectReasonCode, MqttCodec, Packet,
};
use futures::{SinkExt, StreamExt};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

type Wire = Framed<DuplexStream, MqttCodec>;

/// A client connected through a pipe to the returned end, which answered
/// its CONNECT.
async fn connected(version: ProtocolVersion) -> (Client, Wire) {
    let (server_tx, mut server_rx) = mpsc::unbounded_channel();
    let transport = Transport::custom(move || {
        let (client, server) = tokio::io::duplex(1 << 16);
        let _ = server_tx.send(server);
        async move { Ok(client) }
    });
    let options = ConnectOptions::new("pipe", 0)
        .protocol_version(version)
        .client_id("leaving")
        .transport(transport)
        .reconnect(Reconnect::disabled());
    let connecting = tokio::spawn(Client::connect(options));
    let server = guard(server_rx.recv()).await.unwrap();
    let mut wire = Framed::new(server, MqttCodec::new(version, 1 << 20));
    let Some(Ok(Packet::Connect(_))) = guard(wire.next()).await else {
        panic!("expected CONNECT")
    };
    wire.send(Packet::ConnAck(ConnAck::default()))
        .await
        .unwrap();
    let (client, _) = guard(connecting).await.unwrap().unwrap();
    (client, wire)
}

fn keep_for(seconds: u32) -> DisconnectProperties {
    DisconnectProperties {
        session_expiry_interval: Some(seconds),
        ..DisconnectProperties::default()
    }
}

// A Session Expiry Interval on DISCONNECT after 0 in CONNECT is refused by
// the client, which stays connected; it was a silent close without
// DISCONNECT (so the broker published the will) that returned Ok. (MQTT
// 5.0 section 3.14.2.2.2: a Protocol Error.)
#[tokio::test]
async fn v5_a_session_expiry_after_zero_is_refused_and_the_client_stays() {
    let (client, mut wire) = connected(ProtocolVersion::V5).await;
    let refused = client
        .disconnect_with(DisconnectReasonCode::NormalDisconnection, keep_for(60))
        .await;
    assert!(
        matches!(
            refused,
            Err(Error::Session(fulmar_session::Error::Api(
                fulmar_session::ApiError::SessionExpiryAfterZero
            )))
        ),
        "{refused:?}"
    );
    assert!(client.is_connected());
    guard(client.disconnect()).await.unwrap();
    let got = guard(wire.next()).await.unwrap().unwrap();
    assert_eq!(
        got,
        Packet::Disconnect(Disconnect::new(DisconnectReasonCode::NormalDisconnection))
    );
}

// 3.1.1 has no properties: the DISCONNECT goes out without them (it did not
// go out at all, and the broker published the will).
#[tokio::test]
async fn v3_disconnect_with_properties_still_sends_disconnect() {
    let (client, mut wire) = connected(ProtocolVersion::V311).await;
    guard(client.disconnect_with(DisconnectReasonCode::NormalDisconnection, keep_for(60)))
        .await
        .unwrap();
    let got = guard(wire.next()).await.unwrap().unwrap();
    assert_eq!(got, Packet::Disconnect(Disconnect::default()));
}
