//! A hostile or broken broker at the other end of an in-memory pipe: the
//! client never panics, every call ends, memory stays bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::guard;
use fulmar_client::{Client, ConnectOptions, Error, ProtocolVersion, QoS, Reconnect};
use fulmar_codec::{ConnAck, DisconnectReasonCode, MqttCodec, Packet, SubAck, SubAckReasonCode};
use futures::{SinkExt, StreamExt};
use tokio::io::DuplexStream;
use tokio_util::codec::Framed;

type Wire = Framed<DuplexStream, MqttCodec>;

fn options(version: ProtocolVersion, transport: fulmar_client::Transport) -> ConnectOptions {
    ConnectOptions::new("pipe", 0)
        .protocol_version(version)
        .client_id("hostile")
        .transport(transport)
        .reconnect(Reconnect::disabled())
}

/// Starts connecting; returns the pending connect and the broker end after
/// the CONNECT was read.
async fn start(
    version: ProtocolVersion,
    tune: impl FnOnce(ConnectOptions) -> ConnectOptions,
) -> (
    tokio::task::JoinHandle<Result<(Client, ConnAck), Error>>,
    Wire,
) {
    let (transport, mut server_rx) = common::pipes();
    let connecting = tokio::spawn(Client::connect(tune(options(version, transport))));
    let server = guard(server_rx.recv()).await.unwrap();
    let mut wire = Framed::new(server, MqttCodec::new(version, 1 << 20));
    let Some(Ok(Packet::Connect(_))) = guard(wire.next()).await else {
        panic!("expected CONNECT")
    };
    (connecting, wire)
}

async fn connected_with(
    version: ProtocolVersion,
    connack: ConnAck,
    tune: impl FnOnce(ConnectOptions) -> ConnectOptions,
) -> (Client, Wire) {
    let (connecting, mut wire) = start(version, tune).await;
    wire.send(Packet::ConnAck(connack)).await.unwrap();
    let (client, _) = guard(connecting).await.unwrap().unwrap();
    (client, wire)
}

/// The next packet the client sends, skipping PINGREQs (answered).
async fn next(wire: &mut Wire) -> Option<Packet> {
    loop {
        match guard(wire.next()).await {
            Some(Ok(Packet::PingReq)) => {
                let _ = wire.send(Packet::PingResp).await;
            }
            Some(Ok(p)) => return Some(p),
            _ => return None,
        }
    }
}

/// Answers PINGREQs, and nothing else, until the client closes; returns
/// what else the client sent.
async fn answer_pings_only(wire: &mut Wire) -> Vec<Packet> {
    let mut got = Vec::new();
    while let Some(Ok(packet)) = wire.next().await {
        match packet {
            Packet::PingReq => {
                let _ = wire.send(Packet::PingResp).await;
            }
            other => got.push(other),
        }
    }
    got
}

/// A broker that answers PINGREQ but never SUBSCRIBE or UNSUBSCRIBE: the
/// call waited for as long as the connection lasted (seen: still waiting
/// after 8 s with a 1 s keep alive, the connection healthy). Now, with
/// the default options, the connection is dropped once a request waits
/// for the request timeout (DISCONNECT 0x80 under 5.0), and the call fails
/// with `RequestLost`. Paused time: the wait is virtual.
#[tokio::test(start_paused = true)]
async fn a_request_the_broker_never_answers_ends() {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        for unsubscribe in [false, true] {
            let (client, mut wire) = connected_with(version, ConnAck::default(), |o| o).await;
            let call = tokio::spawn({
                let client = client.clone();
                async move {
                    if unsubscribe {
                        // Its SUBSCRIBE is answered, the UNSUBSCRIBE is not.
                        let stream = client.subscribe("a", QoS::AtLeastOnce).await?;
                        stream.unsubscribe().await
                    } else {
                        client.subscribe("a", QoS::AtLeastOnce).await.map(drop)
                    }
                }
            });
            if unsubscribe {
                let Some(Packet::Subscribe(s)) = next(&mut wire).await else {
                    panic!("expected SUBSCRIBE")
                };
                let suback = SubAck::new(s.packet_id, vec![SubAckReasonCode::GrantedQoS1]);
                wire.send(Packet::SubAck(suback)).await.unwrap();
            }
            let got = tokio::time::timeout(Duration::from_secs(600), answer_pings_only(&mut wire))
                .await
                .expect("the client kept the connection");
            let result = tokio::time::timeout(Duration::from_secs(600), call)
                .await
                .expect("the call never ended")
                .unwrap();
            assert!(
                matches!(result, Err(Error::RequestLost)),
                "{version:?}: {result:?}"
            );
            let expected = if unsubscribe {
                "UNSUBSCRIBE"
            } else {
                "SUBSCRIBE"
            };
            assert!(
                matches!(
                    (got.first(), unsubscribe),
                    (Some(Packet::Subscribe(_)), false) | (Some(Packet::Unsubscribe(_)), true)
                ),
                "{version:?}: expected {expected}, got {got:?}"
            );
            if version == ProtocolVersion::V5 {
                assert!(
                    matches!(got.get(1), Some(Packet::Disconnect(d))
                        if d.reason_code == DisconnectReasonCode::UnspecifiedError),
                    "{version:?}: {got:?}"
                );
            }
            let last = client.last_disconnection().expect("a disconnection");
            assert!(
                matches!(
                    *last.error,
                    Error::Session(fulmar_client::SessionError::RequestTimeout)
                ),
                "{version:?}: {last:?}"
            );
        }
    }
}

/// A broker that answers PINGREQ but never PUBACK (QoS 1) or PUBREC (QoS 2):
/// `publish().await` waited for as long as the connection lasted (seen:
/// still waiting after 5 s with a 1 s keep alive, the connection healthy),
/// holding a slot of the broker's Receive Maximum. Now the connection is
/// dropped once the flow waits for the request timeout (DISCONNECT 0x80
/// under 5.0); without reconnecting the call ends with `Closed`. (With
/// reconnect on, the resumed session sends the message again.)
#[tokio::test(start_paused = true)]
async fn a_publish_the_broker_never_acknowledges_ends() {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let (client, mut wire) = connected_with(version, ConnAck::default(), |o| o).await;
            let call = tokio::spawn({
                let client = client.clone();
                async move { client.publish("t", "x").qos(qos).await }
            });
            let got = tokio::time::timeout(Duration::from_secs(600), answer_pings_only(&mut wire))
                .await
                .expect("the client kept the connection");
            let result = tokio::time::timeout(Duration::from_secs(600), call)
                .await
                .expect("the call never ended")
                .unwrap();
            assert!(
                matches!(result, Err(Error::Closed)),
                "{version:?} {qos:?}: {result:?}"
            );
            assert!(
                matches!(got.first(), Some(Packet::Publish(p)) if p.qos == qos),
                "{version:?} {qos:?}: {got:?}"
            );
            if version == ProtocolVersion::V5 {
                assert!(
                    matches!(got.get(1), Some(Packet::Disconnect(d))
                        if d.reason_code == DisconnectReasonCode::UnspecifiedError),
                    "{version:?} {qos:?}: {got:?}"
                );
            }
            let last = client.last_disconnection().expect("a disconnection");
            assert!(
                matches!(
                    *last.error,
                    Error::Session(fulmar_client::SessionError::RequestTimeout)
                ),
                "{version:?} {qos:?}: {last:?}"
            );
        }
    }
}
