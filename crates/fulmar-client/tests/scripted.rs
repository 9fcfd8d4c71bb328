//! The client against a scripted broker at the other end of an in-memory
//! pipe ([`Transport::custom`]): `disconnect_with`, and a broker that sends
//! more unacknowledged messages than the client's Receive Maximum.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::guard;
use fulmar_client::{Client, ConnectOptions, Error, ProtocolVersion, QoS, Reconnect};
use fulmar_codec::{
    ConnAck, Disconnect, DisconnectProperties, DisconnectReasonCode, MqttCodec, MqttString, Packet,
    PacketId, PubAck, Publish, SubAck, SubAckReasonCode, UnsubAck, UnsubAckReasonCode,
};
use futures::{SinkExt, StreamExt};
use tokio::io::DuplexStream;
use tokio_util::codec::Framed;

type Wire = Framed<DuplexStream, MqttCodec>;

/// A client connected through a pipe to the returned end, which answered
/// its CONNECT.
async fn connected(version: ProtocolVersion) -> (Client, Wire) {
    connected_with(version, |options| options).await
}

/// [`connected`], with `tune` applied to the options.
async fn connected_with(
    version: ProtocolVersion,
    tune: impl FnOnce(ConnectOptions) -> ConnectOptions,
) -> (Client, Wire) {
    let (transport, server_rx) = common::pipes();
    connected_through(version, transport, server_rx, tune).await
}

/// [`connected_with`] over `transport`, whose broker ends come from `server_rx`.
async fn connected_through(
    version: ProtocolVersion,
    transport: fulmar_client::Transport,
    mut server_rx: tokio::sync::mpsc::UnboundedReceiver<DuplexStream>,
    tune: impl FnOnce(ConnectOptions) -> ConnectOptions,
) -> (Client, Wire) {
    let options = tune(
        ConnectOptions::new("pipe", 0)
            .protocol_version(version)
            .client_id("scripted")
            .transport(transport)
            .reconnect(Reconnect::disabled()),
    );
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

/// A broker that sends more unacknowledged QoS 1 messages than the client's
/// Receive Maximum while the application reads none of them but awaits its
/// own publish (a request/response loop): a 3.1.1 broker knows no Receive
/// Maximum, and some 5.0 brokers do not keep to it. The client reads on (up
/// to a bound in bytes), so the PUBACK arrives. It stopped reading at the
/// Receive Maximum: the publish waited until the keep alive dropped the
/// connection.
// MQTT-4.3.2-1 MQTT-4.3.2-2
#[tokio::test]
async fn a_publish_completes_while_more_than_receive_maximum_messages_wait() {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let (client, mut wire) =
            connected_with(version, |o| o.receive_maximum(2).stream_capacity(1)).await;
        let subscribing = tokio::spawn({
            let client = client.clone();
            async move { client.subscribe("req/#", QoS::AtLeastOnce).await }
        });
        let Some(Ok(Packet::Subscribe(subscribe))) = guard(wire.next()).await else {
            panic!("expected SUBSCRIBE")
        };
        let suback = SubAck::new(subscribe.packet_id, vec![SubAckReasonCode::GrantedQoS1]);
        wire.send(Packet::SubAck(suback)).await.unwrap();
        let _requests = guard(subscribing).await.unwrap().unwrap();
        for id in 1..=10u16 {
            let mut request = Publish::new(MqttString::from("req/x"), "r".into());
            request.qos = QoS::AtLeastOnce;
            request.packet_id = PacketId::new(id);
            request.properties.subscription_identifiers = subscribe
                .properties
                .subscription_identifier
                .into_iter()
                .collect();
            wire.send(Packet::Publish(request)).await.unwrap();
        }
        let reply = tokio::spawn({
            let client = client.clone();
            async move { client.publish("resp/x", "a").qos(QoS::AtLeastOnce).await }
        });
        let id = loop {
            match guard(wire.next()).await.unwrap().unwrap() {
                Packet::Publish(p) if p.topic == "resp/x" => break p.packet_id.unwrap(),
                // Acknowledgements of the requests the stream took.
                Packet::PubAck(_) => {}
                other => panic!("{version:?}: unexpected {other:?}"),
            }
        };
        wire.send(Packet::PubAck(PubAck::new(id))).await.unwrap();
        let outcome = guard(reply).await.unwrap().unwrap();
        assert!(!outcome.reason_code.is_error(), "{version:?}");
    }
}

/// More concurrent `subscribe` calls than the session's request slots (64
/// SUBSCRIBE and UNSUBSCRIBE packets in flight): the others wait for a
/// SUBACK instead of failing with `TooManyRequests` (a review saw 29 of 100
/// fail).
// MQTT-2.2.1-3 (a packet identifier is not reused while in flight)
#[tokio::test]
async fn subscribes_beyond_the_request_slots_wait_for_one() {
    const N: usize = 100;
    let (client, mut wire) = connected(ProtocolVersion::V5).await;
    let calls: Vec<_> = (0..N)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.subscribe(&format!("s/{i}"), QoS::AtLeastOnce).await })
        })
        .collect();
    // The broker answers only once 64 are in flight, then each as it comes.
    let mut held = Vec::new();
    let mut answered = 0;
    while answered < N {
        let Some(Ok(Packet::Subscribe(subscribe))) = guard(wire.next()).await else {
            panic!("expected SUBSCRIBE")
        };
        held.push(subscribe.packet_id);
        if answered > 0 || held.len() == 64 {
            for id in held.drain(..) {
                let suback = SubAck::new(id, vec![SubAckReasonCode::GrantedQoS1]);
                wire.send(Packet::SubAck(suback)).await.unwrap();
                answered += 1;
            }
        }
    }
    for call in calls {
        guard(call).await.unwrap().unwrap();
    }
}

/// Answers the next SUBSCRIBE with QoS 1 granted.
async fn grant(wire: &mut Wire) {
    let Some(Ok(Packet::Subscribe(subscribe))) = guard(wire.next()).await else {
        panic!("expected SUBSCRIBE")
    };
    let suback = SubAck::new(subscribe.packet_id, vec![SubAckReasonCode::GrantedQoS1]);
    wire.send(Packet::SubAck(suback)).await.unwrap();
}

/// `Subscription::unsubscribe` completes with the broker's UNSUBACK, and
/// at once when another stream still uses the filter (no UNSUBSCRIBE is
/// sent). There was no way to unsubscribe and know the outcome.
// MQTT-3.10.3-2 v5:MQTT-3.11.3-1
#[tokio::test]
async fn unsubscribe_waits_for_the_unsuback_and_reports_a_refusal() {
    let (client, mut wire) = connected(ProtocolVersion::V5).await;
    let subscribe = |filter: &'static str| {
        let client = client.clone();
        tokio::spawn(async move { client.subscribe(filter, QoS::AtLeastOnce).await })
    };
    let first = subscribe("u/1");
    grant(&mut wire).await;
    let first = guard(first).await.unwrap().unwrap();
    let second = subscribe("u/1");
    grant(&mut wire).await;
    let second = guard(second).await.unwrap().unwrap();
    // The other stream keeps the filter: nothing to send.
    guard(first.unsubscribe()).await.unwrap();
    // The last one: UNSUBSCRIBE, refused.
    let refused = tokio::spawn(second.unsubscribe());
    let Some(Ok(Packet::Unsubscribe(unsubscribe))) = guard(wire.next()).await else {
        panic!("expected UNSUBSCRIBE")
    };
    assert_eq!(unsubscribe.filters, [MqttString::from("u/1")]);
    let unsuback = UnsubAck::new(
        unsubscribe.packet_id,
        vec![UnsubAckReasonCode::NotAuthorized],
    );
    wire.send(Packet::UnsubAck(unsuback)).await.unwrap();
    let refused = guard(refused).await.unwrap();
    assert!(
        matches!(refused, Err(Error::UnsubscribeRejected(_))),
        "{refused:?}"
    );
    // Accepted.
    let third = subscribe("u/2");
    grant(&mut wire).await;
    let third = guard(third).await.unwrap().unwrap();
    let done = tokio::spawn(third.unsubscribe());
    let Some(Ok(Packet::Unsubscribe(unsubscribe))) = guard(wire.next()).await else {
        panic!("expected UNSUBSCRIBE")
    };
    let unsuback = UnsubAck::new(unsubscribe.packet_id, vec![UnsubAckReasonCode::Success]);
    wire.send(Packet::UnsubAck(unsuback)).await.unwrap();
    guard(done).await.unwrap().unwrap();
}

/// `Client::last_disconnection` tells why a connection ended (the broker's
/// DISCONNECT with its Server Reference) and why connecting again failed (a
/// refused CONNACK). Both were only logged: calls failed with `Closed`.
#[tokio::test]
async fn the_last_disconnection_tells_why_with_the_brokers_reason() {
    let (transport, mut server_rx) = common::pipes();
    let options = ConnectOptions::new("pipe", 0)
        .client_id("told")
        .transport(transport)
        .reconnect(Reconnect::exponential(
            std::time::Duration::from_millis(1),
            std::time::Duration::from_millis(10),
        ));
    let connecting = tokio::spawn(Client::connect(options));
    let mut accept = async |connack: ConnAck| {
        let server = guard(server_rx.recv()).await.unwrap();
        let mut wire = Framed::new(server, MqttCodec::new(ProtocolVersion::V5, 1 << 20));
        let Some(Ok(Packet::Connect(_))) = guard(wire.next()).await else {
            panic!("expected CONNECT")
        };
        wire.send(Packet::ConnAck(connack)).await.unwrap();
        wire
    };
    let mut wire = accept(ConnAck::default()).await;
    let (client, _) = guard(connecting).await.unwrap().unwrap();
    assert!(client.last_disconnection().is_none());
    let mut moved = Disconnect::new(DisconnectReasonCode::UseAnotherServer);
    moved.properties.server_reference = Some("other:1883".into());
    wire.send(Packet::Disconnect(moved)).await.unwrap();
    drop(wire);
    // The next attempt comes once the first end was recorded.
    let refused = ConnAck::new(false, fulmar_codec::ConnectReasonCode::NotAuthorized);
    let wire = accept(refused).await;
    let first = client.last_disconnection().unwrap();
    assert!(
        matches!(*first.error, Error::DisconnectedByBroker(code) if u8::from(code) == 0x9C),
        "{first:?}"
    );
    let (code, properties) = first.by_broker.unwrap();
    assert_eq!(u8::from(code), 0x9C);
    assert_eq!(properties.server_reference.as_deref(), Some("other:1883"));
    drop(wire);
    let _third = guard(server_rx.recv()).await.unwrap();
    let second = client.last_disconnection().unwrap();
    assert!(
        matches!(
            *second.error,
            Error::Refused {
                reason_code: fulmar_codec::ConnectReasonCode::NotAuthorized,
                ..
            }
        ),
        "{second:?}"
    );
    assert_eq!(second.failed_attempts, 1);
}

// MQTT 5.0 Request Response Information and Request Problem Information
// go into the CONNECT as set (what the broker then does is its business);
// under 3.1.1 they are refused before connecting.
#[tokio::test]
async fn request_response_and_problem_information_go_into_the_connect() {
    let (transport, mut server_rx) = common::pipes();
    let options = ConnectOptions::new("pipe", 0)
        .client_id("asks")
        .transport(transport)
        .reconnect(Reconnect::disabled())
        .request_response_information(true)
        .request_problem_information(false);
    let connecting = tokio::spawn(Client::connect(options));
    let server = guard(server_rx.recv()).await.unwrap();
    let mut wire = Framed::new(server, MqttCodec::new(ProtocolVersion::V5, 1 << 20));
    let Some(Ok(Packet::Connect(connect))) = guard(wire.next()).await else {
        panic!("expected CONNECT")
    };
    assert_eq!(connect.properties.request_response_information, Some(true));
    assert_eq!(connect.properties.request_problem_information, Some(false));
    let mut ack = ConnAck::default();
    ack.properties.response_information = Some(MqttString::from("replies/asks"));
    wire.send(Packet::ConnAck(ack)).await.unwrap();
    let (_client, connack) = guard(connecting).await.unwrap().unwrap();
    assert_eq!(
        connack.properties.response_information.as_deref(),
        Some("replies/asks")
    );
    let v3 = ConnectOptions::new("127.0.0.1", 1)
        .protocol_version(ProtocolVersion::V311)
        .request_response_information(true);
    assert!(matches!(
        Client::connect(v3).await,
        Err(Error::InvalidOptions(_))
    ));
}

// `Client::connack` is the CONNACK of the current connection: a
// reconnection whose CONNACK allows QoS 2 again, after a first one that said
// Maximum QoS 1, is seen there (a bridge that downgrades its messages to
// the remote's limits learns of each connection's; v5:MQTT-3.2.2-11).
#[tokio::test]
async fn connack_is_the_current_connections() {
    let (transport, mut server_rx) = common::pipes();
    let options = ConnectOptions::new("pipe", 0)
        .client_id("limits")
        .transport(transport)
        .reconnect(Reconnect::exponential(
            std::time::Duration::from_millis(1),
            std::time::Duration::from_millis(10),
        ));
    let connecting = tokio::spawn(Client::connect(options));
    let mut accept = async |connack: ConnAck| {
        let server = guard(server_rx.recv()).await.unwrap();
        let mut wire = Framed::new(server, MqttCodec::new(ProtocolVersion::V5, 1 << 20));
        let Some(Ok(Packet::Connect(_))) = guard(wire.next()).await else {
            panic!("expected CONNECT")
        };
        wire.send(Packet::ConnAck(connack)).await.unwrap();
        wire
    };
    let mut first = ConnAck::default();
    first.properties.maximum_qos = Some(QoS::AtLeastOnce);
    let wire = accept(first.clone()).await;
    let (client, connack) = guard(connecting).await.unwrap().unwrap();
    assert_eq!(client.connack(), Some(connack));
    assert_eq!(
        client.connack().unwrap().properties.maximum_qos,
        Some(QoS::AtLeastOnce)
    );
    drop(wire);
    guard(client.wait_connected(false)).await.unwrap();
    // While it reconnects: the last connection's.
    assert_eq!(client.connack(), Some(first));
    let mut second = ConnAck::new(true, fulmar_codec::ConnectReasonCode::Success);
    second.properties.retain_available = Some(false);
    let _wire = accept(second.clone()).await;
    guard(client.wait_connected(true)).await.unwrap();
    let now = client.connack().unwrap();
    assert_eq!(now, second);
    assert_eq!(now.properties.maximum_qos, None);
}

/// A client end of a pipe whose writes fail once `broken` is set (reads go
/// on), as a connection whose sending half broke.
struct BreakingWrites {
    inner: DuplexStream,
    broken: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl BreakingWrites {
    fn check(&self) -> std::io::Result<()> {
        if self.broken.load(std::sync::atomic::Ordering::SeqCst) {
            Err(std::io::ErrorKind::BrokenPipe.into())
        } else {
            Ok(())
        }
    }
}

impl tokio::io::AsyncRead for BreakingWrites {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for BreakingWrites {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.check()?;
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.check()?;
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// A DISCONNECT that could not be written is not reported as done: the
// broker never saw it, so it keeps and publishes the will (only a
// DISCONNECT it receives discards it).
#[tokio::test]
async fn a_disconnect_that_could_not_be_written_is_an_error() {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let broken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (server_tx, server_rx) = tokio::sync::mpsc::unbounded_channel();
        let transport = fulmar_client::Transport::custom({
            let broken = broken.clone();
            move || {
                let (client, server) = tokio::io::duplex(1 << 16);
                let _ = server_tx.send(server);
                let broken = broken.clone();
                async move {
                    Ok(BreakingWrites {
                        inner: client,
                        broken,
                    })
                }
            }
        });
        let (client, wire) = connected_through(version, transport, server_rx, |o| o).await;
        broken.store(true, std::sync::atomic::Ordering::SeqCst);
        let result = guard(client.disconnect()).await;
        assert!(
            matches!(&result, Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe),
            "{version:?}: {result:?}"
        );
        // Nothing came through, and the client is closed.
        assert!(
            matches!(guard(client.disconnect()).await, Err(Error::Closed)),
            "{version:?}"
        );
        drop(wire);
    }
}

// The per-property setters of a publish (`user_property`, `response_topic`,
// `correlation_data`, `message_expiry_interval`) put them into the PUBLISH;
// a responder publishes to the Response Topic it received as is (an
// `MqttString`); a wildcard Response Topic or a user property with U+0000
// fails the publish before anything is sent.
#[tokio::test]
async fn publish_property_setters_and_answering_a_response_topic() {
    let (client, mut wire) = connected(ProtocolVersion::V5).await;
    let requesting = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .publish("service/square", "12")
                .qos(QoS::AtLeastOnce)
                .user_property("trace-id", String::from("trace-1"))
                .response_topic(String::from("replies/scripted"))
                .correlation_data("request-1")
                .message_expiry_interval(5)
                .user_property("source", "test")
                .await
        }
    });
    let Some(Ok(Packet::Publish(request))) = guard(wire.next()).await else {
        panic!("expected PUBLISH")
    };
    let p = &request.properties;
    assert_eq!(p.response_topic.as_deref(), Some("replies/scripted"));
    assert_eq!(p.correlation_data.as_deref(), Some(&b"request-1"[..]));
    assert_eq!(p.message_expiry_interval, Some(5));
    let users: Vec<(&str, &str)> = p
        .user_properties
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(users, [("trace-id", "trace-1"), ("source", "test")]);
    wire.send(Packet::PubAck(PubAck::new(request.packet_id.unwrap())))
        .await
        .unwrap();
    guard(requesting).await.unwrap().unwrap();

    // The answer goes to the received Response Topic, an `MqttString`.
    let reply_to = request.properties.response_topic.clone().unwrap();
    let answering = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .publish(&reply_to, "144")
                .correlation_data(request.properties.correlation_data.clone().unwrap())
                .await
        }
    });
    let Some(Ok(Packet::Publish(answer))) = guard(wire.next()).await else {
        panic!("expected PUBLISH")
    };
    assert_eq!(answer.topic, "replies/scripted");
    assert_eq!(
        answer.properties.correlation_data.as_deref(),
        Some(&b"request-1"[..])
    );
    guard(answering).await.unwrap().unwrap();

    let wildcard = client.publish("a", "x").response_topic("replies/+").await;
    assert!(
        matches!(wildcard, Err(Error::InvalidTopic(_))),
        "{wildcard:?}"
    );
    let nul = client.publish("a", "x").user_property("k", "a\0b").await;
    assert!(matches!(nul, Err(Error::InvalidOptions(_))), "{nul:?}");
    let wildcard_topic = client.publish(MqttString::from("a/#"), "x").await;
    assert!(
        matches!(wildcard_topic, Err(Error::InvalidTopic(_))),
        "{wildcard_topic:?}"
    );
    // Nothing of those was sent: the next packet is the DISCONNECT.
    client.disconnect().await.unwrap();
    let Some(Ok(Packet::Disconnect(_))) = guard(wire.next()).await else {
        panic!("expected DISCONNECT")
    };
}

/// A stream the application does not read holds at most
/// `stream_capacity_bytes` of messages: beyond it the client takes no more
/// off the connection (and acknowledges none) until the application reads.
/// It took `stream_capacity` messages of any size (128 by default, so 128
/// messages of up to 256 MiB each).
// MQTT-4.3.2-4 (PUBACK after taking ownership)
#[tokio::test]
async fn a_stream_is_bounded_in_bytes() {
    const N: u16 = 20;
    const SIZE: usize = 16 * 1024;
    let (client, wire) = connected_with(ProtocolVersion::V5, |o| {
        o.stream_capacity(100).stream_capacity_bytes(64 * 1024)
    })
    .await;
    let (mut to_client, mut from_client) = wire.split();
    let subscribing = tokio::spawn({
        let client = client.clone();
        async move { client.subscribe("t/#", QoS::AtLeastOnce).await }
    });
    let Some(Ok(Packet::Subscribe(subscribe))) = guard(from_client.next()).await else {
        panic!("expected SUBSCRIBE")
    };
    let suback = SubAck::new(subscribe.packet_id, vec![SubAckReasonCode::GrantedQoS1]);
    to_client.send(Packet::SubAck(suback)).await.unwrap();
    let mut stream = guard(subscribing).await.unwrap().unwrap();
    // Written by another task: the pipe holds 64 KiB, and the client stops
    // reading it.
    let writer = tokio::spawn(async move {
        for id in 1..=N {
            let mut publish = Publish::new(MqttString::from("t/x"), vec![id as u8; SIZE].into());
            publish.qos = QoS::AtLeastOnce;
            publish.packet_id = PacketId::new(id);
            to_client.send(Packet::Publish(publish)).await.unwrap();
        }
        to_client
    });
    // What the client acknowledges while nothing is read: the messages in
    // the stream (three of 16 KiB fit in 64 KiB) and the one waiting for
    // room. (Waiting for a quiet period can only undercount.)
    let mut acked = 0;
    while let Ok(packet) =
        tokio::time::timeout(std::time::Duration::from_millis(500), from_client.next()).await
    {
        match packet {
            Some(Ok(Packet::PubAck(_))) => acked += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        acked <= 4,
        "{acked} of {N} acknowledged before any was read"
    );
    // Once read, every message comes, in order, and is acknowledged.
    for id in 1..=N {
        let message = guard(stream.next()).await.unwrap();
        assert_eq!(message.payload.len(), SIZE);
        assert_eq!(message.payload.first(), Some(&(id as u8)));
    }
    while acked < N {
        match guard(from_client.next()).await {
            Some(Ok(Packet::PubAck(_))) => acked += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    let _wire = guard(writer).await.unwrap();
}

/// A transport whose first `failures` attempts fail (no broker yet), and
/// whose later ones reach the returned end; also counts the attempts.
fn broker_late(
    failures: usize,
) -> (
    fulmar_client::Transport,
    tokio::sync::mpsc::UnboundedReceiver<DuplexStream>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let attempts = std::sync::Arc::new(AtomicUsize::new(0));
    let (server_tx, server_rx) = tokio::sync::mpsc::unbounded_channel();
    let counted = attempts.clone();
    let transport = fulmar_client::Transport::custom(move || {
        let attempt = counted.fetch_add(1, Ordering::SeqCst);
        let (client, server) = tokio::io::duplex(1 << 16);
        if attempt >= failures {
            let _ = server_tx.send(server);
        }
        async move {
            if attempt < failures {
                Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
            } else {
                Ok(client)
            }
        }
    });
    (transport, server_rx, attempts)
}

fn retrying(transport: fulmar_client::Transport) -> ConnectOptions {
    ConnectOptions::new("pipe", 0)
        .client_id("scripted")
        .transport(transport)
        .reconnect(Reconnect::exponential(
            std::time::Duration::from_millis(1),
            std::time::Duration::from_millis(5),
        ))
        .retry_initial_connect(true)
}

/// Answers the next CONNECT on `server` with `code`.
async fn answer_connect(server: DuplexStream, code: fulmar_codec::ConnectReasonCode) -> Wire {
    let mut wire = Framed::new(server, MqttCodec::new(ProtocolVersion::V5, 1 << 20));
    let Some(Ok(Packet::Connect(_))) = guard(wire.next()).await else {
        panic!("expected CONNECT")
    };
    let connack = ConnAck {
        reason_code: code,
        ..ConnAck::default()
    };
    wire.send(Packet::ConnAck(connack)).await.unwrap();
    wire
}

/// With `retry_initial_connect`, `Client::connect` keeps trying until the
/// broker is there (it failed at the first attempt), and through a refusal
/// another attempt may not meet (Server unavailable); without it, the first
/// failure is returned.
#[tokio::test]
async fn the_first_connection_is_retried_when_asked() {
    use fulmar_codec::ConnectReasonCode as Code;
    use std::sync::atomic::Ordering;
    let (transport, mut servers, attempts) = broker_late(3);
    let connecting = tokio::spawn(Client::connect(retrying(transport)));
    let first = guard(servers.recv()).await.unwrap();
    drop(answer_connect(first, Code::ServerUnavailable).await);
    let second = guard(servers.recv()).await.unwrap();
    let _wire = answer_connect(second, Code::Success).await;
    let (client, connack) = guard(connecting).await.unwrap().unwrap();
    assert_eq!(connack.reason_code, Code::Success);
    assert_eq!(attempts.load(Ordering::SeqCst), 5);
    assert!(client.is_connected());

    // Off (the default): the first failure ends it.
    let (transport, _servers, attempts) = broker_late(1);
    let failed = guard(Client::connect(
        retrying(transport).retry_initial_connect(false),
    ))
    .await;
    assert!(matches!(failed, Err(Error::Io(_))), "{failed:?}");
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}

/// A refusal that another attempt would meet again is not retried, with
/// `retry_initial_connect` or without.
#[tokio::test]
async fn a_refusal_of_who_we_are_is_not_retried() {
    use fulmar_codec::ConnectReasonCode as Code;
    use std::sync::atomic::Ordering;
    for code in [
        Code::BadUserNameOrPassword,
        Code::NotAuthorized,
        Code::ClientIdentifierNotValid,
        Code::Banned,
    ] {
        let (transport, mut servers, attempts) = broker_late(0);
        let connecting = tokio::spawn(Client::connect(retrying(transport)));
        let server = guard(servers.recv()).await.unwrap();
        let _wire = answer_connect(server, code).await;
        let refused = guard(connecting).await.unwrap();
        assert!(
            matches!(&refused, Err(Error::Refused { reason_code, .. }) if *reason_code == code),
            "{refused:?}"
        );
        assert_eq!(attempts.load(Ordering::SeqCst), 1, "{code:?}");
    }
}

/// A `Client::connect` given up by the application (its future dropped, as
/// by a timeout around it) stops retrying: the connection task ends.
#[tokio::test(start_paused = true)]
async fn a_first_connection_given_up_stops_retrying() {
    use std::sync::atomic::Ordering;
    let (transport, _servers, attempts) = broker_late(usize::MAX);
    let connecting = tokio::spawn(Client::connect(retrying(transport)));
    while attempts.load(Ordering::SeqCst) < 3 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    connecting.abort();
    let _aborted = connecting.await;
    let after = attempts.load(Ordering::SeqCst);
    // Minutes of backoff pass (paused time): no attempt but the one that
    // may have been under way.
    tokio::time::sleep(std::time::Duration::from_secs(600)).await;
    assert!(attempts.load(Ordering::SeqCst) <= after + 1);
}
