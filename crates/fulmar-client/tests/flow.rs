//! Flow control against a scripted broker (fulmar-codec on a loopback
//! socket): backpressure from a slow stream, manual acknowledgements, the
//! broker's Receive Maximum, keep-alive.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::IntoFuture;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::guard;
use fulmar_client::{
    ApiError, Client, ConnectOptions, Error, PayloadFormat, PublishProperties, QoS, ReasonCode,
    Reconnect, SessionError, SubscribeProperties, SubscriptionOptions,
};
use fulmar_codec::{
    ConnAck, Disconnect, DisconnectReasonCode, MqttCodec, Packet, PacketId, ProtocolVersion,
    PubAck, PubAckReasonCode, Publish, SubAck, SubAckReasonCode, UnsubAck, UnsubAckReasonCode,
};
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

type Wire = Framed<TcpStream, MqttCodec>;

/// A listener and the client options to reach it.
async fn listen() -> (TcpListener, ConnectOptions) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let options = ConnectOptions::new("127.0.0.1", port)
        .client_id("scripted")
        .reconnect(Reconnect::disabled());
    (listener, options)
}

/// Accepts one client, answers its CONNECT with `connack`.
async fn accept(listener: &TcpListener, connack: ConnAck) -> Wire {
    let (socket, _) = listener.accept().await.unwrap();
    let mut wire = Framed::new(socket, MqttCodec::new(ProtocolVersion::V5, 1 << 20));
    let Some(Ok(Packet::Connect(_))) = wire.next().await else {
        panic!("expected CONNECT")
    };
    wire.send(Packet::ConnAck(connack)).await.unwrap();
    wire
}

async fn next(wire: &mut Wire) -> Packet {
    guard(wire.next()).await.unwrap().unwrap()
}

/// A broker that accepts one client, acknowledges its QoS 1 PUBLISH packets
/// and answers its PINGREQs; returns the payloads received (as text) once
/// the client disconnects.
fn acking_broker(listener: TcpListener) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut wire = accept(&listener, ConnAck::default()).await;
        let mut payloads = Vec::new();
        loop {
            match next(&mut wire).await {
                Packet::Publish(p) => {
                    if let Some(id) = p.packet_id {
                        wire.send(Packet::PubAck(PubAck::new(id))).await.unwrap();
                    }
                    payloads.push(String::from_utf8_lossy(&p.payload).into_owned());
                }
                Packet::PingReq => wire.send(Packet::PingResp).await.unwrap(),
                Packet::Disconnect(_) => return payloads,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
}

/// The identifiers of the PUBACKs the client sends until its DISCONNECT
/// (PINGREQs answered; anything else fails).
async fn acked_until_disconnect(wire: &mut Wire) -> Vec<u16> {
    let mut acked = Vec::new();
    loop {
        match next(wire).await {
            Packet::PubAck(ack) => acked.push(ack.packet_id.get()),
            Packet::PingReq => wire.send(Packet::PingResp).await.unwrap(),
            Packet::Disconnect(_) => return acked,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Answers PINGREQs until the client's DISCONNECT; anything else fails.
async fn answer_pings_until_disconnect(wire: &mut Wire) {
    loop {
        match next(wire).await {
            Packet::Disconnect(_) => return,
            Packet::PingReq => wire.send(Packet::PingResp).await.unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Reconnects after 1 ms, backing off up to 10 ms.
fn quick_reconnect() -> Reconnect {
    Reconnect::exponential(Duration::from_millis(1), Duration::from_millis(10))
}

/// Reads a SUBSCRIBE and grants QoS 1.
async fn grant(wire: &mut Wire) {
    let Packet::Subscribe(sub) = next(wire).await else {
        panic!("expected SUBSCRIBE")
    };
    let ack = SubAck::new(sub.packet_id, vec![SubAckReasonCode::GrantedQoS1]);
    wire.send(Packet::SubAck(ack)).await.unwrap();
}

fn publish(i: u16) -> Packet {
    let mut p = Publish::new("flow/x".into(), Bytes::from(format!("{i}")));
    p.qos = QoS::AtLeastOnce;
    p.packet_id = PacketId::new(i + 1);
    Packet::Publish(p)
}

// A consumer that does not read its stream holds back the acknowledgements:
// the client takes at most the stream's capacity plus one message off the
// connection (and leaves the rest unacknowledged), whatever the broker sends.
// v5:MQTT-3.3.4-9 is the broker's side of this quota.
#[tokio::test]
async fn a_slow_stream_holds_back_acknowledgements() {
    const N: u16 = 40;
    const CAPACITY: usize = 2;
    let (listener, options) = listen().await;
    let consumed = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    let (settled_tx, settled_rx) = tokio::sync::oneshot::channel();
    let broker = {
        let consumed = consumed.clone();
        let acked = acked.clone();
        tokio::spawn(async move {
            let mut wire = accept(&listener, ConnAck::default()).await;
            grant(&mut wire).await;
            // A broker that ignores the Receive Maximum (4) and floods.
            for i in 0..N {
                wire.send(publish(i)).await.unwrap();
            }
            let mut settled = Some(settled_tx);
            while acked.load(Ordering::SeqCst) < usize::from(N) {
                match next(&mut wire).await {
                    Packet::PubAck(_) => {
                        let n = acked.fetch_add(1, Ordering::SeqCst) + 1;
                        // Two in the stream, one waiting for room, one more
                        // for a consumer that took a message but has not
                        // counted it yet.
                        let bound = consumed.load(Ordering::SeqCst) + CAPACITY + 2;
                        assert!(n <= bound, "{n} acknowledgements, bound {bound}");
                        if n == CAPACITY + 1
                            && let Some(tx) = settled.take()
                        {
                            let _ = tx.send(());
                        }
                    }
                    Packet::PingReq => wire.send(Packet::PingResp).await.unwrap(),
                    other => panic!("unexpected {other:?}"),
                }
            }
        })
    };
    let (client, _) = guard(Client::connect(
        options.receive_maximum(4).stream_capacity(CAPACITY),
    ))
    .await
    .unwrap();
    let mut stream = guard(client.subscribe("flow/#", QoS::AtLeastOnce))
        .await
        .unwrap();
    guard(settled_rx).await.unwrap();
    // Not a timing assertion: a window in which a client without backpressure
    // would acknowledge the whole flood (the broker task checks the bound).
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(acked.load(Ordering::SeqCst), CAPACITY + 1);
    for i in 0..N {
        let m = guard(stream.next()).await.unwrap();
        assert_eq!(m.payload, format!("{i}"));
        consumed.fetch_add(1, Ordering::SeqCst);
    }
    guard(broker).await.unwrap();
    guard(client.disconnect()).await.unwrap();
}

// MQTT-4.6.0-2: with manual acknowledgements the PUBACKs wait for the
// application and still go out in the order the PUBLISHes arrived.
#[tokio::test]
async fn manual_acknowledgements_keep_the_order_of_receipt() {
    let (listener, options) = listen().await;
    let broker = tokio::spawn(async move {
        let mut wire = accept(&listener, ConnAck::default()).await;
        grant(&mut wire).await;
        for i in 0..3 {
            wire.send(publish(i)).await.unwrap();
        }
        let mut seen = Vec::new();
        while seen.len() < 4 {
            match next(&mut wire).await {
                Packet::PubAck(ack) => seen.push(format!("ack {}", ack.packet_id)),
                Packet::Publish(p) => seen.push(format!("publish {}", p.topic)),
                Packet::PingReq => wire.send(Packet::PingResp).await.unwrap(),
                other => panic!("unexpected {other:?}"),
            }
        }
        seen
    });
    let (client, _) = guard(Client::connect(options.manual_acks(true)))
        .await
        .unwrap();
    let mut stream = guard(client.subscribe("flow/#", QoS::AtLeastOnce))
        .await
        .unwrap();
    let mut messages = Vec::new();
    for _ in 0..3 {
        let m = guard(stream.next()).await.unwrap();
        assert!(m.needs_ack());
        messages.push(m);
    }
    // All three arrived and none is acknowledged: the marker comes first.
    guard(client.publish("marker", "m")).await.unwrap();
    // Acknowledging the second first holds it until the first is done.
    guard(client.ack(&messages[1])).await.unwrap();
    guard(client.ack(&messages[0])).await.unwrap();
    guard(client.ack(&messages[2])).await.unwrap();
    let seen = guard(broker).await.unwrap();
    assert_eq!(seen, ["publish marker", "ack 1", "ack 2", "ack 3"]);
    guard(client.disconnect()).await.unwrap();
}

// v5:MQTT-4.9.0-2: the client never has more unacknowledged QoS 1/2 PUBLISH
// packets than the broker's Receive Maximum.
// v5:MQTT-4.9.0-3 v5:MQTT-3.3.4-8: other packets (here a SUBSCRIBE) are not
// held back by the exhausted quota.
#[tokio::test]
async fn the_brokers_receive_maximum_limits_publishes_in_flight() {
    let (listener, options) = listen().await;
    let broker = tokio::spawn(async move {
        let mut connack = ConnAck::default();
        connack.properties.receive_maximum = NonZeroU16::new(2);
        let mut wire = accept(&listener, connack).await;
        let mut publishes = Vec::new();
        // Nothing is acknowledged until the SUBSCRIBE that follows the publishes.
        let sub = loop {
            match next(&mut wire).await {
                Packet::Publish(p) => publishes.push(p.packet_id.unwrap()),
                Packet::Subscribe(s) => break s,
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!(publishes.len(), 2, "sent beyond the receive maximum");
        let ack = SubAck::new(sub.packet_id, vec![SubAckReasonCode::GrantedQoS1]);
        wire.send(Packet::SubAck(ack)).await.unwrap();
        let mut acked = 0;
        while acked < 5 {
            let id = match publishes.pop() {
                Some(id) => id,
                None => match next(&mut wire).await {
                    Packet::Publish(p) => p.packet_id.unwrap(),
                    other => panic!("unexpected {other:?}"),
                },
            };
            wire.send(Packet::PubAck(PubAck::new(id))).await.unwrap();
            acked += 1;
        }
    });
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    let mut pending: Vec<_> = (0..5)
        .map(|i| {
            Box::pin(
                client
                    .publish("q", format!("{i}"))
                    .qos(QoS::AtLeastOnce)
                    .into_future(),
            )
        })
        .collect();
    for f in &mut pending {
        assert!(futures::poll!(f).is_pending());
    }
    let _stream = guard(client.subscribe("s", QoS::AtLeastOnce))
        .await
        .unwrap();
    for f in pending {
        guard(f).await.unwrap();
    }
    guard(broker).await.unwrap();
    guard(client.disconnect()).await.unwrap();
}

// (no spec statement) `max_buffered_publishes` bounds the publishes that
// wait, not those sent at once: ten QoS 0 and ten QoS 1 publishes awaited
// together while connected all go out with a bound of 4 (six of ten failed
// with QueueFull: a whole batch of them went through the session's queue
// before any was written).
#[tokio::test]
async fn a_small_publish_buffer_does_not_refuse_publishes_that_do_not_wait() {
    let (listener, options) = listen().await;
    let broker = acking_broker(listener);
    let options = options.max_buffered_publishes(4);
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let results =
            guard(futures::future::join_all((0..10).map(|i| {
                client.publish("t", format!("{i}")).qos(qos).into_future()
            })))
            .await;
        for result in results {
            result.unwrap();
        }
    }
    guard(client.disconnect()).await.unwrap();
    let expected: Vec<String> = (0..2)
        .flat_map(|_| (0..10).map(|i| format!("{i}")))
        .collect();
    assert_eq!(guard(broker).await.unwrap(), expected);
}

// (no spec statement) While connected, publishes awaited at once far beyond
// the session's queue (`max_buffered_publishes`) and the send window wait
// in line for room: all 300 succeed, in order. Beyond 8 + 20 they failed
// with QueueFull (an API review saw a `buffer_unordered` window of 1100
// fail half its publishes). v5:MQTT-4.9.0-2
#[tokio::test]
async fn publishes_beyond_the_queue_wait_for_room_while_connected() {
    let (listener, options) = listen().await;
    let broker = acking_broker(listener);
    let options = options.max_buffered_publishes(8).max_inflight(20);
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    let publishes = (0..300).map(|i| {
        client
            .publish("t", format!("{i}"))
            .qos(QoS::AtLeastOnce)
            .into_future()
    });
    for outcome in guard(futures::future::join_all(publishes)).await {
        outcome.unwrap();
    }
    guard(client.disconnect()).await.unwrap();
    let expected: Vec<String> = (0..300).map(|i| format!("{i}")).collect();
    assert_eq!(guard(broker).await.unwrap(), expected);
}

// (no spec statement) `max_buffered_publishes(0)`: no publish waits in the
// session's queue, and one that is sent at once does not wait. While
// connected, QoS 0 and QoS 1 publishes go out (every one failed with
// QueueFull(0)); a QoS 1 publish beyond the broker's Receive Maximum waits
// in line for the quota (back-pressure; it failed with QueueFull(0)), and
// goes once the PUBACK before it arrives. v5:MQTT-4.9.0-2
#[tokio::test]
async fn max_buffered_publishes_zero_still_publishes_while_connected() {
    let (listener, options) = listen().await;
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let (waiting_tx, waiting_rx) = tokio::sync::oneshot::channel::<()>();
    let broker = tokio::spawn(async move {
        let mut connack = ConnAck::default();
        connack.properties.receive_maximum = NonZeroU16::new(1);
        let mut wire = accept(&listener, connack).await;
        let mut payloads = Vec::new();
        let mut first = Some(first_tx);
        let mut waiting = Some(waiting_rx);
        loop {
            match next(&mut wire).await {
                Packet::Publish(p) => {
                    payloads.push(String::from_utf8_lossy(&p.payload).into_owned());
                    if let Some(id) = p.packet_id {
                        // The first QoS 1 message holds the quota until the
                        // next one waits for it.
                        if let (Some(first), Some(waiting)) = (first.take(), waiting.take()) {
                            first.send(()).unwrap();
                            waiting.await.unwrap();
                        }
                        wire.send(Packet::PubAck(PubAck::new(id))).await.unwrap();
                    }
                }
                Packet::PingReq => wire.send(Packet::PingResp).await.unwrap(),
                Packet::Disconnect(_) => return payloads,
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    let options = options.max_buffered_publishes(0);
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    guard(client.publish("t", "q0")).await.unwrap();
    let q1 = client
        .publish("t", "q1")
        .qos(QoS::AtLeastOnce)
        .into_future();
    let mut q1 = Box::pin(q1);
    assert!(futures::poll!(&mut q1).is_pending());
    guard(first_rx).await.unwrap();
    let mut waits = Box::pin(
        client
            .publish("t", "waits")
            .qos(QoS::AtLeastOnce)
            .into_future(),
    );
    assert!(futures::poll!(&mut waits).is_pending());
    waiting_tx.send(()).unwrap();
    guard(q1).await.unwrap();
    guard(waits).await.unwrap();
    guard(client.publish("t", "again").qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    guard(client.disconnect()).await.unwrap();
    assert_eq!(guard(broker).await.unwrap(), ["q0", "q1", "waits", "again"]);
}

// (no spec statement; MQTT 5.0 section 3.3.2.3.2: with Payload Format
// Indicator 1 the payload MUST be well-formed UTF-8) A publish marked UTF-8
// whose payload is not fails with a typed error and is not sent (it went out
// as is; a broker that checks disconnects with 0x99, and a resumed session
// sent the QoS 1 message again at each reconnection). The connection stays.
#[tokio::test]
async fn a_payload_marked_utf8_that_is_not_is_refused() {
    let (listener, options) = listen().await;
    let broker = acking_broker(listener);
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    let utf8 = PublishProperties {
        payload_format_indicator: Some(PayloadFormat::Utf8),
        ..PublishProperties::default()
    };
    let refused = guard(
        client
            .publish("t", vec![0xffu8, 0xfe])
            .qos(QoS::AtLeastOnce)
            .properties(utf8.clone()),
    )
    .await;
    assert!(
        matches!(
            refused,
            Err(Error::Session(SessionError::Api(
                ApiError::PayloadFormatInvalid
            )))
        ),
        "{refused:?}"
    );
    guard(
        client
            .publish("t", "caf\u{e9}")
            .qos(QoS::AtLeastOnce)
            .properties(utf8),
    )
    .await
    .unwrap();
    assert!(client.is_connected());
    guard(client.disconnect()).await.unwrap();
    assert_eq!(guard(broker).await.unwrap(), ["caf\u{e9}"]);
}

// v5:MQTT-3.1.2-20 v3:MQTT-3.1.2-23: an idle client sends PINGREQ within the
// keep alive.
#[tokio::test]
async fn an_idle_client_sends_pingreq() {
    let (listener, options) = listen().await;
    let broker = tokio::spawn(async move {
        let mut wire = accept(&listener, ConnAck::default()).await;
        for _ in 0..2 {
            assert_eq!(next(&mut wire).await, Packet::PingReq);
            wire.send(Packet::PingResp).await.unwrap();
        }
    });
    let (client, _) = guard(Client::connect(options.keep_alive(Duration::from_secs(1))))
        .await
        .unwrap();
    guard(broker).await.unwrap();
    assert!(client.is_connected());
    guard(client.disconnect()).await.unwrap();
}

// The broker drops the connection (5.0: a DISCONNECT first) while a QoS 1
// publish is unacknowledged: the client reconnects with CleanSession/Clean
// Start 0 and resends it with DUP set and the same packet identifier; the
// publish then completes.
// MQTT-4.4.0-1 MQTT-3.3.1-1
#[tokio::test]
async fn resends_with_dup_after_the_broker_drops_the_connection() {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let (listener, options) = listen().await;
        let broker = tokio::spawn(async move {
            let mut wire = accept(&listener, ConnAck::default()).await;
            let Packet::Publish(first) = next(&mut wire).await else {
                panic!("expected PUBLISH")
            };
            assert!(!first.dup);
            if version == ProtocolVersion::V5 {
                let bye = Disconnect::new(DisconnectReasonCode::ServerShuttingDown);
                wire.send(Packet::Disconnect(bye)).await.unwrap();
            }
            drop(wire);
            let (socket, _) = listener.accept().await.unwrap();
            let mut wire = Framed::new(socket, MqttCodec::new(version, 1 << 20));
            let Packet::Connect(connect) = next(&mut wire).await else {
                panic!("expected CONNECT")
            };
            assert!(!connect.clean_start);
            let connack = ConnAck {
                session_present: true,
                ..ConnAck::default()
            };
            wire.send(Packet::ConnAck(connack)).await.unwrap();
            let Packet::Publish(again) = next(&mut wire).await else {
                panic!("expected the PUBLISH again")
            };
            assert!(again.dup);
            assert_eq!(again.packet_id, first.packet_id);
            assert_eq!(again.payload, first.payload);
            let id = again.packet_id.unwrap();
            wire.send(Packet::PubAck(PubAck::new(id))).await.unwrap();
            // Keep the connection until the client disconnects.
            while let Some(Ok(packet)) = wire.next().await {
                if packet == Packet::Disconnect(Default::default()) {
                    break;
                }
            }
        });
        let mut options = options
            .protocol_version(version)
            .clean_start(false)
            .reconnect(quick_reconnect());
        if version == ProtocolVersion::V5 {
            options = options.session_expiry_interval(60);
        }
        let (client, _) = guard(Client::connect(options)).await.unwrap();
        let outcome = guard(client.publish("t", "resent").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        assert_eq!(outcome.reason_code, ReasonCode::Success);
        guard(client.disconnect()).await.unwrap();
        guard(broker).await.unwrap();
    }
}

// v5:MQTT-4.4.0-2: a PUBACK with a failure code completes the publish (as a
// typed error) and the message is not sent again.
#[tokio::test]
async fn a_failure_reason_code_is_a_typed_error() {
    let (listener, options) = listen().await;
    let broker = tokio::spawn(async move {
        let mut wire = accept(&listener, ConnAck::default()).await;
        let Packet::Publish(p) = next(&mut wire).await else {
            panic!("expected PUBLISH")
        };
        let mut ack = PubAck::new(p.packet_id.unwrap());
        ack.reason_code = PubAckReasonCode::NotAuthorized;
        ack.properties.reason_string = Some("no".into());
        wire.send(Packet::PubAck(ack)).await.unwrap();
        // The next packet is the DISCONNECT, not a resend.
        assert!(matches!(next(&mut wire).await, Packet::Disconnect(_)));
    });
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    let result = guard(client.publish("t", "x").qos(QoS::AtLeastOnce)).await;
    match result {
        Err(Error::PublishRejected {
            reason_code,
            properties,
        }) => {
            assert_eq!(reason_code, ReasonCode::NotAuthorized);
            assert_eq!(properties.reason_string.as_deref(), Some("no"));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    guard(client.disconnect()).await.unwrap();
    guard(broker).await.unwrap();
}

/// Accepts one client with Session Present and sends it, at once, `n` QoS 1
/// messages: a resumed session's queue.
async fn resumed_with_queue(listener: &TcpListener, n: u16) -> Wire {
    let connack = ConnAck {
        session_present: true,
        ..ConnAck::default()
    };
    let mut wire = accept(listener, connack).await;
    for i in 0..n {
        wire.send(publish(i)).await.unwrap();
    }
    wire
}

// A resumed session's queue arrives right after CONNACK, before the
// application asked for a stream: the messages wait for the first catch-all
// stream instead of being lost (up to the stream capacity; the rest is dropped).
// MQTT-4.3.2-1 (QoS 1 messages of the session are delivered).
#[tokio::test]
async fn messages_before_any_stream_wait_for_the_first_catch_all_stream() {
    let (listener, options) = listen().await;
    let broker = tokio::spawn(async move {
        let mut wire = resumed_with_queue(&listener, 5).await;
        // Every one is acknowledged (the client owns them now).
        for _ in 0..5 {
            assert!(matches!(next(&mut wire).await, Packet::PubAck(_)));
        }
        wire
    });
    let options = options
        .protocol_version(ProtocolVersion::V5)
        .clean_start(false)
        .stream_capacity(3);
    let (client, ack) = Client::connect(options).await.unwrap();
    assert!(ack.session_present);
    let _wire = broker.await.unwrap();
    let mut messages = client.messages().await.unwrap();
    for i in 0..3 {
        let m = guard(messages.next()).await.unwrap();
        assert_eq!(m.payload, format!("{i}"));
    }
}

// With manual acknowledgements, a resumed session's queue that arrives
// before the application's first stream waits for it unacknowledged, all of
// it (here 10 messages for a stream capacity of 3): nothing is acknowledged
// before the application has the messages, and none is lost. They were
// acknowledged at once, and those beyond the stream capacity dropped.
// MQTT-4.3.2-1 (QoS 1 messages of the session are delivered) MQTT-4.6.0-2
// (PUBACKs in the order of the PUBLISH packets).
#[tokio::test]
async fn with_manual_acks_a_queue_before_the_first_stream_waits_for_it() {
    let (listener, options) = listen().await;
    let broker = tokio::spawn(async move {
        let mut wire = resumed_with_queue(&listener, 10).await;
        // Nothing is acknowledged before the application subscribes.
        grant(&mut wire).await;
        acked_until_disconnect(&mut wire).await
    });
    let options = options
        .protocol_version(ProtocolVersion::V5)
        .clean_start(false)
        .manual_acks(true)
        .stream_capacity(3);
    let (client, ack) = guard(Client::connect(options)).await.unwrap();
    assert!(ack.session_present);
    // The queue arrives meanwhile (its arrival is not waited for: the
    // outcome is the same either way).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut stream = guard(client.subscribe("flow/#", QoS::AtLeastOnce))
        .await
        .unwrap();
    for i in 0..10 {
        let m = guard(stream.next()).await.unwrap();
        assert_eq!(m.payload, format!("{i}"));
        assert!(m.needs_ack());
        guard(client.ack(&m)).await.unwrap();
    }
    guard(client.disconnect()).await.unwrap();
    assert_eq!(guard(broker).await.unwrap(), (1..=10).collect::<Vec<u16>>());
}

// A burst of QoS 0 messages read in one batch while the stream is full: none
// is lost, and they keep their order (QoS 0 has no quota, so the client holds
// them back by not reading). v5:MQTT-4.6.0-6 (order per topic).
#[tokio::test]
async fn a_burst_into_a_full_stream_loses_nothing() {
    const N: u16 = 200;
    let (listener, options) = listen().await;
    let broker = tokio::spawn(async move {
        let mut wire = accept(&listener, ConnAck::default()).await;
        grant(&mut wire).await;
        for i in 0..N {
            let p = Publish::new("burst/x".into(), Bytes::from(format!("{i}")));
            // Written in pairs, so that the client often reads two at once.
            wire.feed(Packet::Publish(p)).await.unwrap();
            if i % 2 == 1 {
                SinkExt::<Packet>::flush(&mut wire).await.unwrap();
                tokio::task::yield_now().await;
            }
        }
        SinkExt::<Packet>::flush(&mut wire).await.unwrap();
        // Keep the connection until the client disconnects.
        while let Some(Ok(packet)) = wire.next().await {
            if matches!(packet, Packet::Disconnect(_)) {
                break;
            }
        }
    });
    let (client, _) = guard(Client::connect(options.stream_capacity(2)))
        .await
        .unwrap();
    let mut stream = guard(client.subscribe("burst/#", QoS::AtMostOnce))
        .await
        .unwrap();
    for i in 0..N {
        let m = guard(stream.next()).await.unwrap();
        assert_eq!(m.payload, format!("{i}"));
        // A slow consumer: the stream is full most of the time.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
    }
    guard(client.disconnect()).await.unwrap();
    guard(broker).await.unwrap();
}

// v3:MQTT-4.3.2-1 v5:MQTT-4.3.2-3: each QoS 1 publish completes with the
// PUBACK of its own packet identifier, also when a publish future was dropped
// in between (its message is still sent and acknowledged, and its outcome
// slot is used again afterwards).
#[tokio::test]
async fn each_publish_gets_its_own_puback_also_after_a_dropped_future() {
    let (listener, options) = listen().await;
    let broker = tokio::spawn(async move {
        let mut wire = accept(&listener, ConnAck::default()).await;
        let mut topics = Vec::new();
        // Three publishes, the second acknowledged with a reason code that
        // tells it apart; then a fourth.
        let mut ids = Vec::new();
        while ids.len() < 3 {
            let Packet::Publish(p) = next(&mut wire).await else {
                panic!("expected PUBLISH")
            };
            topics.push(p.topic.to_string());
            ids.push(p.packet_id.unwrap());
        }
        for (id, code) in ids.iter().zip([
            PubAckReasonCode::Success,
            PubAckReasonCode::NoMatchingSubscribers,
            PubAckReasonCode::Success,
        ]) {
            let mut ack = PubAck::new(*id);
            ack.reason_code = code;
            wire.send(Packet::PubAck(ack)).await.unwrap();
        }
        let Packet::Publish(p) = next(&mut wire).await else {
            panic!("expected PUBLISH")
        };
        topics.push(p.topic.to_string());
        let mut ack = PubAck::new(p.packet_id.unwrap());
        ack.reason_code = PubAckReasonCode::NoMatchingSubscribers;
        wire.send(Packet::PubAck(ack)).await.unwrap();
        assert!(matches!(next(&mut wire).await, Packet::Disconnect(_)));
        topics
    });
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    let mut first = Box::pin(
        client
            .publish("t/1", "a")
            .qos(QoS::AtLeastOnce)
            .into_future(),
    );
    let mut second = Box::pin(
        client
            .publish("t/2", "b")
            .qos(QoS::AtLeastOnce)
            .into_future(),
    );
    let third = Box::pin(
        client
            .publish("t/3", "c")
            .qos(QoS::AtLeastOnce)
            .into_future(),
    );
    assert!(futures::poll!(&mut first).is_pending());
    assert!(futures::poll!(&mut second).is_pending());
    // Handed over, then nobody waits for it.
    drop(second);
    let outcome = guard(third).await.unwrap();
    assert_eq!(outcome.reason_code, ReasonCode::Success);
    let outcome = guard(first).await.unwrap();
    assert_eq!(outcome.reason_code, ReasonCode::Success);
    let outcome = guard(client.publish("t/4", "d").qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    assert_eq!(outcome.reason_code, ReasonCode::NoMatchingSubscribers);
    guard(client.disconnect()).await.unwrap();
    assert_eq!(guard(broker).await.unwrap(), ["t/1", "t/2", "t/3", "t/4"]);
}

// MQTT-3.3.2-2: a topic with a wildcard is refused with a typed error before
// anything is sent, whichever form it comes in, also right after the same
// handle published to a valid topic (which it remembers).
#[tokio::test]
async fn topics_as_str_string_and_topic_name_all_reach_the_broker() {
    let (listener, options) = listen().await;
    let broker = tokio::spawn(async move {
        let mut wire = accept(&listener, ConnAck::default()).await;
        let mut topics = Vec::new();
        loop {
            match next(&mut wire).await {
                Packet::Publish(p) => topics.push(p.topic.to_string()),
                Packet::Disconnect(_) => return topics,
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    let owned = String::from("a/b");
    let name: fulmar_client::TopicName = "n/1".parse().unwrap();
    let static_name = fulmar_client::TopicName::from_bytes(Bytes::from_static(b"n/2")).unwrap();
    guard(client.publish("a/b", "1")).await.unwrap();
    // The same text again: the remembered topic.
    guard(client.publish("a/b", "2")).await.unwrap();
    guard(client.publish(&owned, "3")).await.unwrap();
    guard(client.publish(owned.clone(), "4")).await.unwrap();
    guard(client.publish(&name, "5")).await.unwrap();
    guard(client.publish(static_name, "6")).await.unwrap();
    guard(client.publish(std::borrow::Cow::Borrowed("c"), "7"))
        .await
        .unwrap();
    for bad in ["a/+", "a/#", "", "x\0y"] {
        let result = guard(client.publish(bad, "no")).await;
        assert!(
            matches!(result, Err(Error::InvalidTopic(_))),
            "{bad:?}: {result:?}"
        );
        let result = guard(client.publish(bad.to_owned(), "no")).await;
        assert!(
            matches!(result, Err(Error::InvalidTopic(_))),
            "{bad:?}: {result:?}"
        );
    }
    // A clone starts without a remembered topic and publishes the same.
    let clone = client.clone();
    guard(clone.publish("a/b", "8")).await.unwrap();
    guard(client.disconnect()).await.unwrap();
    assert_eq!(
        guard(broker).await.unwrap(),
        ["a/b", "a/b", "a/b", "a/b", "n/1", "n/2", "c", "a/b"]
    );
}

// A broker whose CONNACK says it has no wildcard subscriptions: a wildcard
// SUBSCRIBE is refused by the client with a typed error, never sent (the
// broker would disconnect with 0xA2), and the connection goes on.
#[tokio::test]
async fn a_wildcard_subscription_the_broker_declared_unavailable_is_refused_locally() {
    let (listener, options) = listen().await;
    let broker = tokio::spawn(async move {
        let mut connack = ConnAck::default();
        connack.properties.wildcard_subscription_available = Some(false);
        let mut wire = accept(&listener, connack).await;
        // The first packet after the CONNACK is the plain SUBSCRIBE.
        let Packet::Subscribe(sub) = next(&mut wire).await else {
            panic!("expected SUBSCRIBE")
        };
        assert_eq!(sub.filters.len(), 1);
        assert_eq!(sub.filters[0].0.as_str(), "plain/topic");
        let ack = SubAck::new(sub.packet_id, vec![SubAckReasonCode::GrantedQoS1]);
        wire.send(Packet::SubAck(ack)).await.unwrap();
        assert!(matches!(next(&mut wire).await, Packet::Disconnect(_)));
    });
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    match guard(client.subscribe("plain/+", QoS::AtLeastOnce)).await {
        Err(Error::Session(fulmar_session::Error::Api(
            fulmar_session::ApiError::WildcardSubscriptionsNotSupported,
        ))) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    let _stream = guard(client.subscribe("plain/topic", QoS::AtLeastOnce))
        .await
        .unwrap();
    guard(client.disconnect()).await.unwrap();
    guard(broker).await.unwrap();
}

// A broker that accepts, answers CONNACK and then never reads: the client's
// write stalls once the socket buffers are full. The write deadline takes the
// connection as lost, so it ends (the QoS 0 messages caught in the stalled
// write fail) and disconnect() returns instead of waiting behind the write.
#[tokio::test]
async fn a_broker_that_stops_reading_does_not_hang_the_client() {
    const N: usize = 64;
    let (listener, options) = listen().await;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let broker = tokio::spawn(async move {
        let wire = accept(&listener, ConnAck::default()).await;
        // Holds the socket open, unread, until the test is over.
        let _ = done_rx.await;
        drop(wire);
    });
    let options = options.write_timeout(Duration::from_millis(200));
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    // 64 MiB: far more than loopback socket buffers hold.
    let payload = Bytes::from(vec![0u8; 1 << 20]);
    let mut pending: Vec<_> = (0..N)
        .map(|_| Box::pin(client.publish("stall", payload.clone()).into_future()))
        .collect();
    for f in &mut pending {
        assert!(futures::poll!(f).is_pending());
    }
    guard(client.disconnect()).await.unwrap();
    assert!(!client.is_connected());
    let mut lost = 0;
    for f in pending {
        if matches!(guard(f).await, Err(Error::RequestLost)) {
            lost += 1;
        }
    }
    assert!(
        lost > 0,
        "every message was written to a peer that reads nothing"
    );
    let _ = done_tx.send(());
    guard(broker).await.unwrap();
}

/// Reads one SUBSCRIBE: its packet identifier and first filter.
async fn subscribe_of(wire: &mut Wire) -> (PacketId, String) {
    match next(wire).await {
        Packet::Subscribe(sub) => (sub.packet_id, sub.filters[0].0.to_string()),
        other => panic!("expected SUBSCRIBE, got {other:?}"),
    }
}

// v5:MQTT-3.2.2-5: the broker lost the session, so the client subscribes its
// streams again. One re-SUBSCRIBE is refused: that stream ends and tells why.
// The other is lost with its connection: it is sent again on the next
// connection although that one resumes a session (session present), and its
// stream goes on.
#[tokio::test]
async fn a_refused_resubscribe_ends_its_stream_and_a_lost_one_is_sent_again() {
    let (listener, options) = listen().await;
    let broker = tokio::spawn(async move {
        let mut wire = accept(&listener, ConnAck::default()).await;
        for _ in 0..2 {
            let (id, _) = subscribe_of(&mut wire).await;
            let ack = SubAck::new(id, vec![SubAckReasonCode::GrantedQoS0]);
            wire.send(Packet::SubAck(ack)).await.unwrap();
        }
        drop(wire);
        // No session: both are subscribed again; "a" is refused, "b" lost.
        let mut wire = accept(&listener, ConnAck::default()).await;
        let mut filters = Vec::new();
        for _ in 0..2 {
            let (id, filter) = subscribe_of(&mut wire).await;
            if filter == "a" {
                let ack = SubAck::new(id, vec![SubAckReasonCode::NotAuthorized]);
                wire.send(Packet::SubAck(ack)).await.unwrap();
            }
            filters.push(filter);
        }
        filters.sort();
        assert_eq!(filters, ["a", "b"]);
        drop(wire);
        let resumed = ConnAck {
            session_present: true,
            ..ConnAck::default()
        };
        let mut wire = accept(&listener, resumed).await;
        let (id, filter) = subscribe_of(&mut wire).await;
        assert_eq!(filter, "b");
        let ack = SubAck::new(id, vec![SubAckReasonCode::GrantedQoS0]);
        wire.send(Packet::SubAck(ack)).await.unwrap();
        let live = Publish::new("b".into(), Bytes::from_static(b"live"));
        wire.send(Packet::Publish(live)).await.unwrap();
        answer_pings_until_disconnect(&mut wire).await;
    });
    let options = options
        .session_expiry_interval(60)
        .reconnect(quick_reconnect());
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    let mut a = guard(client.subscribe("a", QoS::AtMostOnce)).await.unwrap();
    let mut b = guard(client.subscribe("b", QoS::AtMostOnce)).await.unwrap();
    assert!(a.error().is_none());
    assert!(guard(a.next()).await.is_none(), "the refused stream ends");
    match a.error() {
        Some(Error::SubscribeRejected(ack)) => {
            assert_eq!(ack.reason_codes, [SubAckReasonCode::NotAuthorized]);
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
    assert_eq!(guard(b.next()).await.unwrap().payload, "live");
    assert!(b.error().is_none());
    guard(client.disconnect()).await.unwrap();
    guard(broker).await.unwrap();
}

fn qos1(topic: &'static str, id: u16) -> Packet {
    let mut p = Publish::new(topic.into(), Bytes::from(format!("{id}")));
    p.qos = QoS::AtLeastOnce;
    p.packet_id = PacketId::new(id);
    Packet::Publish(p)
}

// MQTT-4.6.0-2 v5:MQTT-4.9.0-1 with manual acknowledgements: a QoS 1 message
// held unread by a stream the application drops is acknowledged by the
// client (nobody else will), so the acknowledgements after it, which keep
// the order of receipt, are not held back for ever and the broker's send
// quota comes back.
#[tokio::test]
async fn a_dropped_stream_acknowledges_what_it_held_unread() {
    let (listener, options) = listen().await;
    let broker = tokio::spawn(async move {
        let mut wire = accept(&listener, ConnAck::default()).await;
        grant(&mut wire).await;
        grant(&mut wire).await;
        wire.send(qos1("a/x", 1)).await.unwrap();
        wire.send(qos1("b/x", 2)).await.unwrap();
        let mut acked = Vec::new();
        loop {
            match next(&mut wire).await {
                Packet::PubAck(ack) => acked.push(ack.packet_id.get()),
                Packet::Unsubscribe(u) => {
                    let codes = vec![UnsubAckReasonCode::Success; u.filters.len()];
                    let ack = UnsubAck::new(u.packet_id, codes);
                    wire.send(Packet::UnsubAck(ack)).await.unwrap();
                }
                Packet::PingReq => wire.send(Packet::PingResp).await.unwrap(),
                Packet::Disconnect(_) => return acked,
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    let (client, _) = guard(Client::connect(options.manual_acks(true)))
        .await
        .unwrap();
    let a = guard(client.subscribe("a/#", QoS::AtLeastOnce))
        .await
        .unwrap();
    let mut b = guard(client.subscribe("b/#", QoS::AtLeastOnce))
        .await
        .unwrap();
    // Routed in order: once b has its message, a holds its own, unread.
    let m = guard(b.next()).await.unwrap();
    assert_eq!(m.topic, "b/x");
    drop(a);
    guard(client.ack(&m)).await.unwrap();
    // Commands are handled in order: the DISCONNECT follows the PUBACKs.
    guard(client.disconnect()).await.unwrap();
    assert_eq!(guard(broker).await.unwrap(), [1, 2]);
}

// MQTT-4.6.0-2 with manual acknowledgements: a message two streams received
// (overlapping filters) is acknowledged by the client only once both copies
// were dropped unread; while one stream still holds it, the application may
// read and acknowledge it.
#[tokio::test]
async fn a_message_in_two_streams_is_acknowledged_when_both_drop_it() {
    let (listener, options) = listen().await;
    let broker = tokio::spawn(async move {
        let mut wire = accept(&listener, ConnAck::default()).await;
        for _ in 0..3 {
            grant(&mut wire).await;
        }
        wire.send(qos1("c/1", 1)).await.unwrap();
        wire.send(qos1("d", 2)).await.unwrap();
        let mut seen = Vec::new();
        loop {
            match next(&mut wire).await {
                Packet::PubAck(ack) => seen.push(format!("ack {}", ack.packet_id)),
                Packet::Subscribe(sub) => {
                    seen.push(format!("subscribe {}", sub.filters[0].0));
                    let ack = SubAck::new(sub.packet_id, vec![SubAckReasonCode::GrantedQoS1]);
                    wire.send(Packet::SubAck(ack)).await.unwrap();
                }
                Packet::Unsubscribe(u) => {
                    let codes = vec![UnsubAckReasonCode::Success; u.filters.len()];
                    let ack = UnsubAck::new(u.packet_id, codes);
                    wire.send(Packet::UnsubAck(ack)).await.unwrap();
                }
                Packet::PingReq => wire.send(Packet::PingResp).await.unwrap(),
                Packet::Disconnect(_) => return seen,
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    let (client, _) = guard(Client::connect(options.manual_acks(true)))
        .await
        .unwrap();
    let x = guard(client.subscribe("c/#", QoS::AtLeastOnce))
        .await
        .unwrap();
    let y = guard(client.subscribe("c/+", QoS::AtLeastOnce))
        .await
        .unwrap();
    let mut z = guard(client.subscribe("d", QoS::AtLeastOnce))
        .await
        .unwrap();
    // Routed in order: once z has its message, x and y hold c/1 unread.
    let m = guard(z.next()).await.unwrap();
    drop(x);
    // A round trip: the drop is handled before it. y still holds c/1.
    let _marker = guard(client.subscribe("marker", QoS::AtLeastOnce))
        .await
        .unwrap();
    drop(y);
    guard(client.ack(&m)).await.unwrap();
    // A second acknowledgement of the same message does nothing.
    guard(client.ack(&m)).await.unwrap();
    guard(client.disconnect()).await.unwrap();
    assert_eq!(
        guard(broker).await.unwrap(),
        ["subscribe marker", "ack 1", "ack 2"]
    );
}

// v5:MQTT-3.2.2-16 v5:MQTT-3.1.3-7: a client that connected with an empty
// Client Identifier reconnects with the one the broker assigned, so that the
// broker finds its session (Session Expiry Interval above 0) again.
#[tokio::test]
async fn a_reconnect_uses_the_assigned_client_identifier() {
    let (listener, options) = listen().await;
    let (resumed_tx, resumed_rx) = tokio::sync::oneshot::channel();
    let broker = tokio::spawn(async move {
        let mut connack = ConnAck::default();
        connack.properties.assigned_client_identifier = Some("assigned-17".into());
        let (socket, _) = listener.accept().await.unwrap();
        let mut wire = Framed::new(socket, MqttCodec::new(ProtocolVersion::V5, 1 << 20));
        let Packet::Connect(first) = next(&mut wire).await else {
            panic!("expected CONNECT")
        };
        assert_eq!(first.client_id, "");
        wire.send(Packet::ConnAck(connack)).await.unwrap();
        drop(wire);
        let (socket, _) = listener.accept().await.unwrap();
        let mut wire = Framed::new(socket, MqttCodec::new(ProtocolVersion::V5, 1 << 20));
        let Packet::Connect(again) = next(&mut wire).await else {
            panic!("expected CONNECT")
        };
        let resumed = ConnAck {
            session_present: true,
            ..ConnAck::default()
        };
        wire.send(Packet::ConnAck(resumed)).await.unwrap();
        resumed_tx.send(()).unwrap();
        assert!(matches!(next(&mut wire).await, Packet::Disconnect(_)));
        (again.client_id.to_string(), again.clean_start)
    });
    let options = options
        .client_id("")
        .session_expiry_interval(60)
        .reconnect(quick_reconnect());
    let (client, connack) = guard(Client::connect(options)).await.unwrap();
    assert_eq!(
        connack.properties.assigned_client_identifier.as_deref(),
        Some("assigned-17")
    );
    guard(resumed_rx).await.unwrap();
    guard(client.disconnect()).await.unwrap();
    let (id, clean_start) = guard(broker).await.unwrap();
    assert_eq!(id, "assigned-17");
    assert!(!clean_start);
}

// MQTT-4.6.0-2 with manual acknowledgements: a stream ended by a refused
// re-SUBSCRIBE (the broker lost the session) still hands back what it held
// unread when the application drops it, also with no other stream left, so
// its QoS 1 message is acknowledged.
#[tokio::test]
async fn an_ended_stream_dropped_unread_is_acknowledged() {
    let (listener, options) = listen().await;
    let (refused_tx, refused_rx) = tokio::sync::oneshot::channel();
    let broker = tokio::spawn(async move {
        let mut wire = accept(&listener, ConnAck::default()).await;
        grant(&mut wire).await;
        drop(wire);
        let mut wire = accept(&listener, ConnAck::default()).await;
        let (id, filter) = subscribe_of(&mut wire).await;
        assert_eq!(filter, "a");
        // Matched by filter while the re-SUBSCRIBE waits for its SUBACK.
        wire.send(qos1("a", 1)).await.unwrap();
        let ack = SubAck::new(id, vec![SubAckReasonCode::NotAuthorized]);
        wire.send(Packet::SubAck(ack)).await.unwrap();
        refused_tx.send(()).unwrap();
        acked_until_disconnect(&mut wire).await
    });
    let options = options.manual_acks(true).reconnect(quick_reconnect());
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    let a = guard(client.subscribe("a", QoS::AtLeastOnce))
        .await
        .unwrap();
    guard(refused_rx).await.unwrap();
    guard(async {
        while a.error().is_none() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    drop(a);
    // The connection task takes a dropped stream before a command.
    guard(client.disconnect()).await.unwrap();
    assert_eq!(guard(broker).await.unwrap(), [1]);
}

/// A scripted broker that answers the SUBSCRIBE with `qos1` QoS 1 messages
/// (within the client's Receive Maximum), then 300 QoS 0 messages on the
/// new subscription's topic, then the SUBACK, then a QoS 1 marker. Returns
/// the identifiers the client acknowledged.
async fn before_the_suback(qos1: u16) {
    const CAPACITY: usize = 8;
    let (listener, options) = listen().await;
    let broker = tokio::spawn(async move {
        let mut wire = accept(&listener, ConnAck::default()).await;
        let Packet::Subscribe(sub) = next(&mut wire).await else {
            panic!("expected SUBSCRIBE")
        };
        for id in 1..=qos1 {
            wire.feed(self::qos1("a/x", id)).await.unwrap();
        }
        for i in 0..300 {
            let p = Publish::new("a/x".into(), Bytes::from(format!("q0 {i}")));
            wire.feed(Packet::Publish(p)).await.unwrap();
        }
        let ack = SubAck::new(sub.packet_id, vec![SubAckReasonCode::GrantedQoS1]);
        wire.feed(Packet::SubAck(ack)).await.unwrap();
        wire.send(self::qos1("a/end", 100)).await.unwrap();
        acked_until_disconnect(&mut wire).await
    });
    let options = options.stream_capacity(CAPACITY).receive_maximum(10);
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    let mut stream = guard(client.subscribe("a/+", QoS::AtLeastOnce))
        .await
        .expect("subscribe returns");
    let mut qos1_seen = Vec::new();
    let mut qos0_seen = Vec::new();
    loop {
        let m = guard(stream.next()).await.unwrap();
        if m.topic == "a/end" {
            break;
        }
        match m.qos {
            QoS::AtMostOnce => qos0_seen.push(m.payload.clone()),
            _ => qos1_seen.push(m.payload.clone()),
        }
    }
    // Every QoS 1 message, in order; of the QoS 0 flood, what fitted, in order.
    let expected: Vec<Bytes> = (1..=qos1).map(|i| Bytes::from(format!("{i}"))).collect();
    assert_eq!(qos1_seen, expected);
    assert!(!qos0_seen.is_empty() && qos0_seen.len() <= 300);
    let numbers: Vec<usize> = qos0_seen
        .iter()
        .map(|p| {
            let p = std::str::from_utf8(p).unwrap();
            p.strip_prefix("q0 ").unwrap().parse().unwrap()
        })
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    if qos1 == 0 {
        assert_eq!(numbers.first(), Some(&0), "the first ones fit the stream");
    }
    guard(client.disconnect()).await.unwrap();
    let mut acked = guard(broker).await.unwrap();
    acked.sort_unstable();
    let mut expected: Vec<u16> = (1..=qos1).collect();
    expected.push(100);
    assert_eq!(acked, expected);
}

// A broker may send messages of a new subscription before its SUBACK
// (v5:MQTT-3.8.4-3 and MQTT 5.0 section 3.8.4: the flow of publications is
// not interrupted). Nobody reads the stream before the SUBACK: a flood of
// QoS 0 messages larger than the stream must not stop the client from
// reading the SUBACK behind it (subscribe() returned never, and the whole
// connection stalled); what fits is delivered, the rest of the QoS 0 flood
// may be dropped.
#[tokio::test]
async fn a_qos0_flood_before_the_suback_does_not_stall_subscribe() {
    before_the_suback(0).await;
}

// As above, with QoS 1 messages first that fill the stream before its
// SUBACK: none of them is lost (MQTT-4.3.2-1 v5:MQTT-4.9.0-1: they wait
// unacknowledged, within the client's Receive Maximum), and the QoS 0 flood
// behind them still does not stop the client from reading the SUBACK.
#[tokio::test]
async fn qos1_messages_before_the_suback_are_kept_behind_a_qos0_flood() {
    before_the_suback(10).await;
}

// v5:MQTT-3.3.2-10: a QoS 0 message that the client drops because it
// arrived for a full stream before its SUBACK still sets the Topic Alias it
// carries (the mapping belongs to the connection, not to the message), and
// the messages held back meanwhile resolve theirs in the order they came.
// The client lost the aliases of dropped messages: a later PUBLISH with such
// an alias alone came under the topic of an older mapping (z2 under "t/y"),
// or closed the connection with 0x82 Protocol Error when there was none (z3).
#[tokio::test]
async fn a_qos0_dropped_before_the_suback_still_sets_its_topic_alias() {
    fn aliased(topic: &'static str, id: Option<u16>, alias: Option<u16>, payload: &str) -> Packet {
        let mut p = Publish::new(topic.into(), Bytes::from(payload.to_owned()));
        if let Some(id) = id {
            p.qos = QoS::AtLeastOnce;
            p.packet_id = PacketId::new(id);
        }
        p.properties.topic_alias = alias.and_then(NonZeroU16::new);
        Packet::Publish(p)
    }
    let (listener, options) = listen().await;
    let broker = tokio::spawn(async move {
        let mut wire = accept(&listener, ConnAck::default()).await;
        let (id, filter) = subscribe_of(&mut wire).await;
        assert_eq!(filter, "t/#");
        // Before the SUBACK: q1 fills the stream (capacity 1), q2 and z0 are
        // held back (z0 is the one QoS 0 message held), z1 and z1b are dropped.
        wire.feed(aliased("t/x", Some(1), None, "q1"))
            .await
            .unwrap();
        wire.feed(aliased("t/x", Some(2), None, "q2"))
            .await
            .unwrap();
        wire.feed(aliased("t/y", None, Some(1), "z0"))
            .await
            .unwrap();
        wire.feed(aliased("t/x", None, Some(1), "z1"))
            .await
            .unwrap();
        wire.feed(aliased("t/z", None, Some(2), "z1b"))
            .await
            .unwrap();
        let ack = SubAck::new(id, vec![SubAckReasonCode::GrantedQoS1]);
        wire.feed(Packet::SubAck(ack)).await.unwrap();
        // Held back behind z0, so alias 1 is still "t/x" when it is read.
        wire.send(aliased("", Some(3), Some(1), "q3"))
            .await
            .unwrap();
        loop {
            match next(&mut wire).await {
                Packet::PubAck(ack) if ack.packet_id.get() == 3 => break,
                Packet::PubAck(_) => {}
                Packet::PingReq => wire.send(Packet::PingResp).await.unwrap(),
                other => panic!("unexpected {other:?}"),
            }
        }
        // Aliases 1 and 2, set by the dropped z1 and z1b, used alone; then a
        // marker.
        wire.feed(aliased("", None, Some(1), "z2")).await.unwrap();
        wire.feed(aliased("", None, Some(2), "z3")).await.unwrap();
        wire.send(aliased("t/x", Some(4), None, "end"))
            .await
            .unwrap();
        loop {
            match next(&mut wire).await {
                Packet::PubAck(_) => {}
                Packet::PingReq => wire.send(Packet::PingResp).await.unwrap(),
                Packet::Disconnect(d) => return d.reason_code,
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    let options = options.stream_capacity(1);
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    let mut stream = guard(client.subscribe("t/#", QoS::AtLeastOnce))
        .await
        .unwrap();
    let mut got = Vec::new();
    loop {
        let m = guard(stream.next()).await.expect("the connection stays");
        let payload = String::from_utf8_lossy(&m.payload).into_owned();
        got.push(format!("{} {payload}", m.topic));
        if payload == "end" {
            break;
        }
    }
    let expected = [
        "t/x q1", "t/x q2", "t/y z0", "t/x q3", "t/x z2", "t/z z3", "t/x end",
    ];
    assert_eq!(got, expected);
    guard(client.disconnect()).await.unwrap();
    assert_eq!(
        guard(broker).await.unwrap(),
        DisconnectReasonCode::NormalDisconnection
    );
}

// MQTT-4.6.0-2 with manual acknowledgements: a QoS 1 message that arrived
// for a subscription before its SUBACK, which then refuses every filter
// (v5 0x87), is acknowledged by the client (nobody will read it), so the
// acknowledgements of the messages after it, which keep the order of
// receipt, reach the broker.
#[tokio::test]
async fn a_message_for_a_refused_subscribe_does_not_hold_back_acknowledgements() {
    let (listener, options) = listen().await;
    let broker = tokio::spawn(async move {
        let mut wire = accept(&listener, ConnAck::default()).await;
        grant(&mut wire).await;
        let (id, filter) = subscribe_of(&mut wire).await;
        assert_eq!(filter, "a/#");
        wire.send(qos1("a/x", 1)).await.unwrap();
        let ack = SubAck::new(id, vec![SubAckReasonCode::NotAuthorized]);
        wire.send(Packet::SubAck(ack)).await.unwrap();
        wire.send(qos1("b/x", 2)).await.unwrap();
        wire.send(qos1("b/x", 3)).await.unwrap();
        acked_until_disconnect(&mut wire).await
    });
    let (client, _) = guard(Client::connect(options.manual_acks(true)))
        .await
        .unwrap();
    let mut b = guard(client.subscribe("b/#", QoS::AtLeastOnce))
        .await
        .unwrap();
    match guard(client.subscribe("a/#", QoS::AtLeastOnce)).await {
        Err(Error::SubscribeRejected(_)) => {}
        other => panic!("expected the refusal, got {:?}", other.map(|_| ())),
    }
    for _ in 0..2 {
        let m = guard(b.next()).await.unwrap();
        assert_eq!(m.topic, "b/x");
        guard(client.ack(&m)).await.unwrap();
    }
    // Commands are handled in order: the DISCONNECT follows the PUBACKs.
    guard(client.disconnect()).await.unwrap();
    assert_eq!(guard(broker).await.unwrap(), [1, 2, 3]);
}

// The UNSUBSCRIBE of a stream dropped while the session had no request slot
// free (64 SUBSCRIBEs in flight) goes out once a SUBACK frees one (it
// waited for an UNSUBACK or a reconnection).
#[tokio::test]
async fn an_unsubscribe_deferred_behind_subscribes_goes_out_with_their_subacks() {
    const IN_FLIGHT: usize = 64;
    let (listener, options) = listen().await;
    let (all_in, all_in_rx) = tokio::sync::oneshot::channel();
    let broker = tokio::spawn(async move {
        let mut wire = accept(&listener, ConnAck::default()).await;
        grant(&mut wire).await;
        let mut ids = Vec::new();
        while ids.len() < IN_FLIGHT {
            ids.push(subscribe_of(&mut wire).await.0);
        }
        all_in.send(()).unwrap();
        // The client dropped the stream, then published this.
        match next(&mut wire).await {
            Packet::Publish(p) => assert_eq!(p.topic.as_str(), "sync"),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
        for id in ids {
            let ack = SubAck::new(id, vec![SubAckReasonCode::GrantedQoS0]);
            wire.send(Packet::SubAck(ack)).await.unwrap();
        }
        // The client publishes "done" once every subscribe() returned: the
        // UNSUBSCRIBE, sent on a SUBACK, comes first.
        let unsubscribed = match next(&mut wire).await {
            Packet::Unsubscribe(u) => {
                let codes = vec![UnsubAckReasonCode::Success; u.filters.len()];
                let ack = UnsubAck::new(u.packet_id, codes);
                wire.send(Packet::UnsubAck(ack)).await.unwrap();
                u.filters.iter().map(ToString::to_string).collect()
            }
            Packet::Publish(p) => vec![p.topic.to_string()],
            other => panic!("unexpected {other:?}"),
        };
        loop {
            match next(&mut wire).await {
                Packet::Publish(_) => {}
                Packet::PingReq => wire.send(Packet::PingResp).await.unwrap(),
                Packet::Disconnect(_) => return unsubscribed,
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    let first = guard(client.subscribe("first", QoS::AtMostOnce))
        .await
        .unwrap();
    let subscriber = client.clone();
    let subscribes = tokio::spawn(async move {
        let calls = (0..IN_FLIGHT).map(|i| {
            let client = subscriber.clone();
            async move { client.subscribe(&format!("f/{i}"), QoS::AtMostOnce).await }
        });
        futures::future::join_all(calls).await
    });
    guard(all_in_rx).await.unwrap();
    drop(first);
    guard(client.publish("sync", "")).await.unwrap();
    let streams = guard(subscribes).await.unwrap();
    assert!(streams.iter().all(Result::is_ok));
    guard(client.publish("done", "")).await.unwrap();
    guard(client.disconnect()).await.unwrap();
    assert_eq!(guard(broker).await.unwrap(), ["first"]);
}

// v5:MQTT-3.2.2-5 v5:MQTT-3.9.3-1: the broker lost the session, so the
// client subscribes the stream's two filters again; the SUBACK grants one
// and refuses the other. The stream goes on with the one granted and tells
// which was refused.
#[tokio::test]
async fn a_partly_refused_resubscribe_tells_the_stream_which_filters() {
    let (listener, options) = listen().await;
    let broker = tokio::spawn(async move {
        let mut wire = accept(&listener, ConnAck::default()).await;
        let Packet::Subscribe(sub) = next(&mut wire).await else {
            panic!("expected SUBSCRIBE")
        };
        let codes = vec![SubAckReasonCode::GrantedQoS0; sub.filters.len()];
        let ack = SubAck::new(sub.packet_id, codes);
        wire.send(Packet::SubAck(ack)).await.unwrap();
        drop(wire);
        // No session: subscribed again; "b" is refused.
        let mut wire = accept(&listener, ConnAck::default()).await;
        let Packet::Subscribe(sub) = next(&mut wire).await else {
            panic!("expected SUBSCRIBE")
        };
        let codes = sub
            .filters
            .iter()
            .map(|(f, _)| match f.as_str() {
                "b" => SubAckReasonCode::NotAuthorized,
                _ => SubAckReasonCode::GrantedQoS0,
            })
            .collect();
        let ack = SubAck::new(sub.packet_id, codes);
        wire.send(Packet::SubAck(ack)).await.unwrap();
        let live = Publish::new("a".into(), Bytes::from_static(b"live"));
        wire.send(Packet::Publish(live)).await.unwrap();
        answer_pings_until_disconnect(&mut wire).await;
    });
    let options = options
        .session_expiry_interval(60)
        .reconnect(quick_reconnect());
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    let filters = ["a", "b"]
        .map(|f| (f.to_owned(), SubscriptionOptions::new(QoS::AtMostOnce)))
        .to_vec();
    let mut stream = guard(client.subscribe_with(filters, SubscribeProperties::default()))
        .await
        .unwrap();
    assert!(stream.refused().is_empty());
    assert_eq!(guard(stream.refused_changed()).await, ["b"]);
    assert_eq!(stream.refused(), ["b"]);
    assert_eq!(guard(stream.next()).await.unwrap().payload, "live");
    assert!(stream.error().is_none());
    guard(client.disconnect()).await.unwrap();
    guard(broker).await.unwrap();
}

// v5:MQTT-3.14.4-1 / v3:MQTT-3.14.4-2 (nothing after the DISCONNECT, so
// what was queued goes before it). A publish future dropped once its message
// is queued leaves the message to be sent (PublishFuture docs), and dropping
// every handle disconnects normally (Client docs). Both at once: the task
// saw the closed command channel first (it is polled before the publish
// queue) and sent the DISCONNECT alone; the message was failed unsent.
#[tokio::test]
async fn a_message_queued_before_the_last_handle_is_dropped_is_still_sent() {
    let (listener, options) = listen().await;
    let broker = acking_broker(listener);
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    let mut publish = Box::pin(
        client
            .publish("flow/last", "queued")
            .qos(QoS::AtLeastOnce)
            .into_future(),
    );
    // Queued on its first poll; then nobody waits for the outcome.
    assert!(futures::poll!(publish.as_mut()).is_pending());
    drop(publish);
    drop(client);
    assert_eq!(guard(broker).await.unwrap(), ["queued"]);
}

// `Subscription::detach` ends a stream without an UNSUBSCRIBE, so a
// persistent session keeps the subscription; dropping one unsubscribes. A
// message the broker sends afterwards for the detached filter waits for the
// next stream that wants it, acknowledged meanwhile (MQTT-3.3.4-1).
#[tokio::test]
async fn a_detached_stream_leaves_its_subscription_with_the_broker() {
    let (listener, options) = listen().await;
    let (acked_tx, acked_rx) = tokio::sync::oneshot::channel();
    let broker = tokio::spawn(async move {
        let mut wire = accept(&listener, ConnAck::default()).await;
        grant(&mut wire).await;
        grant(&mut wire).await;
        // The detach came first, and sent nothing.
        let Packet::Unsubscribe(u) = next(&mut wire).await else {
            panic!("expected UNSUBSCRIBE")
        };
        assert_eq!(u.filters, ["b/#"]);
        let ack = UnsubAck::new(u.packet_id, vec![UnsubAckReasonCode::Success]);
        wire.send(Packet::UnsubAck(ack)).await.unwrap();
        wire.send(qos1("a/x", 1)).await.unwrap();
        let Packet::PubAck(ack) = next(&mut wire).await else {
            panic!("expected PUBACK")
        };
        assert_eq!(ack.packet_id.get(), 1);
        acked_tx.send(()).unwrap();
        grant(&mut wire).await;
        loop {
            match next(&mut wire).await {
                Packet::PingReq => wire.send(Packet::PingResp).await.unwrap(),
                Packet::Disconnect(_) => return,
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    let options = options.session_expiry_interval(60);
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    let a = guard(client.subscribe("a/#", QoS::AtLeastOnce))
        .await
        .unwrap();
    let b = guard(client.subscribe("b/#", QoS::AtLeastOnce))
        .await
        .unwrap();
    a.detach();
    drop(b);
    guard(acked_rx).await.unwrap();
    let mut again = guard(client.subscribe("a/#", QoS::AtLeastOnce))
        .await
        .unwrap();
    assert_eq!(guard(again.next()).await.unwrap().topic, "a/x");
    guard(client.disconnect()).await.unwrap();
    guard(broker).await.unwrap();
}
