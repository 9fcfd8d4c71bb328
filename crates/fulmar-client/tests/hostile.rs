//! A hostile or broken broker at the other end of an in-memory pipe: the
//! client never panics, every call ends, memory stays bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::guard;
use fulmar_client::{Client, ConnectOptions, Error, ProtocolVersion, QoS, Reconnect};
use fulmar_codec::{
    ConnAck, DisconnectReasonCode, MqttCodec, MqttString, Packet, Publish, SubAck, SubAckReasonCode,
};
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

/// What the client sent to a broker that answers only PINGREQs, until it
/// closed, and the outcome of its `call` (both within a generous guard of
/// paused time).
async fn unanswered<T>(wire: &mut Wire, call: tokio::task::JoinHandle<T>) -> (Vec<Packet>, T) {
    let got = tokio::time::timeout(Duration::from_secs(600), answer_pings_only(wire))
        .await
        .expect("the client kept the connection");
    let result = tokio::time::timeout(Duration::from_secs(600), call)
        .await
        .expect("the call never ended")
        .unwrap();
    (got, result)
}

/// The client gave up on the broker for the request timeout: DISCONNECT
/// 0x80 after `got`'s first packet under 5.0, and the last disconnection
/// tells why. `what` names the case in a failure.
fn assert_timed_out(
    client: &Client,
    version: ProtocolVersion,
    got: &[Packet],
    what: impl std::fmt::Debug,
) {
    if version == ProtocolVersion::V5 {
        assert!(
            matches!(got.get(1), Some(Packet::Disconnect(d))
                if d.reason_code == DisconnectReasonCode::UnspecifiedError),
            "{what:?}: {got:?}"
        );
    }
    let last = client.last_disconnection().expect("a disconnection");
    assert!(
        matches!(
            *last.error,
            Error::Session(fulmar_client::SessionError::RequestTimeout)
        ),
        "{what:?}: {last:?}"
    );
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
            let (got, result) = unanswered(&mut wire, call).await;
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
            assert_timed_out(&client, version, &got, version);
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
            let (got, result) = unanswered(&mut wire, call).await;
            assert!(
                matches!(result, Err(Error::Closed)),
                "{version:?} {qos:?}: {result:?}"
            );
            assert!(
                matches!(got.first(), Some(Packet::Publish(p)) if p.qos == qos),
                "{version:?} {qos:?}: {got:?}"
            );
            assert_timed_out(&client, version, &got, (version, qos));
        }
    }
}

/// A PUBLISH carrying a Subscription Identifier two million times (4 MB,
/// under the default maximum packet size), with 1000 streams: each stream
/// searched the whole list, and the connection's task was busy for 33 s
/// (debug build) with this one message: no PINGREQ, nothing else read or
/// written. Now the identifiers are sorted and deduplicated once: the
/// message arrives at once, once.
// v5:MQTT-3.3.4-4 (the identifiers of every matching subscription)
// (Two worker threads: the guard must run while the client's task is busy.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_subscription_identifiers_cost_no_search_per_stream() {
    let (client, mut wire) = connected_with(ProtocolVersion::V5, ConnAck::default(), |o| o).await;
    let mut streams = Vec::new();
    let mut first = None;
    for i in 0..1000 {
        let subscribing = tokio::spawn({
            let client = client.clone();
            async move { client.subscribe(&format!("s/{i}/#"), QoS::AtMostOnce).await }
        });
        let Some(Packet::Subscribe(s)) = next(&mut wire).await else {
            panic!("expected SUBSCRIBE")
        };
        first = first.or(s.properties.subscription_identifier);
        let suback = SubAck::new(s.packet_id, vec![SubAckReasonCode::GrantedQoS0]);
        wire.send(Packet::SubAck(suback)).await.unwrap();
        streams.push(guard(subscribing).await.unwrap().unwrap());
    }
    let mut publish = Publish::new(MqttString::from("s/0/x"), "x".into());
    publish.properties.subscription_identifiers = vec![first.unwrap(); 2_000_000];
    wire.send(Packet::Publish(publish)).await.unwrap();
    let first_stream = streams.first_mut().unwrap();
    let message = guard(first_stream.next()).await.unwrap();
    assert_eq!(message.publish().topic, "s/0/x");
    // Once, and for that stream only.
    let mut publish = Publish::new(MqttString::from("s/1/x"), "y".into());
    publish.properties.subscription_identifiers = vec![first.unwrap(); 3];
    wire.send(Packet::Publish(publish)).await.unwrap();
    let mut plain = Publish::new(MqttString::from("s/0/x"), "z".into());
    plain.properties.subscription_identifiers = vec![first.unwrap()];
    wire.send(Packet::Publish(plain)).await.unwrap();
    let next_one = guard(first_stream.next()).await.unwrap();
    assert_eq!(next_one.publish().payload, "z");
}
