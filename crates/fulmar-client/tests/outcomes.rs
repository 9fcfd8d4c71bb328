//! Publish outcomes on a paused clock: the scripted broker sits at the other
//! end of an in-memory pipe ([`Transport::custom`]), not a socket, so the
//! clock moves only when everything waits for a timer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::num::NonZeroU16;
use std::pin::pin;
use std::time::Duration;

use common::guard;
use fulmar_client::{Client, ConnectOptions, DropReason, Error, PublishProperties, QoS, Reconnect};
use fulmar_codec::{ConnAck, MqttCodec, Packet, ProtocolVersion, PubAck};
use futures::{SinkExt, StreamExt, poll};
use tokio::io::DuplexStream;
use tokio::sync::oneshot;
use tokio_util::codec::Framed;

type Wire = Framed<DuplexStream, MqttCodec>;

async fn next(wire: &mut Wire) -> Packet {
    guard(wire.next()).await.unwrap().unwrap()
}

/// Answers PINGREQs until another packet comes.
async fn next_not_ping(wire: &mut Wire) -> Packet {
    loop {
        match next(wire).await {
            Packet::PingReq => wire.send(Packet::PingResp).await.unwrap(),
            other => return other,
        }
    }
}

/// The broker: Receive Maximum 1; holds the PUBACK of the first QoS 1
/// message until `go`, acknowledges the others at once. Returns the
/// payloads of the QoS 0 messages it received, in order.
async fn broker(
    server: DuplexStream,
    first: oneshot::Sender<()>,
    go: oneshot::Receiver<()>,
) -> Vec<String> {
    let mut wire = Framed::new(server, MqttCodec::new(ProtocolVersion::V5, 1 << 20));
    let Packet::Connect(_) = next(&mut wire).await else {
        panic!("expected CONNECT")
    };
    let mut connack = ConnAck::default();
    connack.properties.receive_maximum = NonZeroU16::new(1);
    wire.send(Packet::ConnAck(connack)).await.unwrap();
    let Packet::Publish(x) = next_not_ping(&mut wire).await else {
        panic!("expected PUBLISH")
    };
    assert_eq!(x.payload, "X");
    first.send(()).unwrap();
    // Meanwhile the client answers PINGREQs itself: keep reading.
    let mut go = pin!(go);
    loop {
        tokio::select! {
            _ = &mut go => break,
            packet = wire.next() => match packet {
                Some(Ok(Packet::PingReq)) => wire.send(Packet::PingResp).await.unwrap(),
                other => panic!("unexpected {other:?}"),
            },
        }
    }
    wire.send(Packet::PubAck(PubAck::new(x.packet_id.unwrap())))
        .await
        .unwrap();
    let mut qos0 = Vec::new();
    loop {
        match next_not_ping(&mut wire).await {
            Packet::Publish(p) if p.qos == QoS::AtMostOnce => {
                qos0.push(String::from_utf8(p.payload.to_vec()).unwrap());
            }
            Packet::Publish(p) => {
                wire.send(Packet::PubAck(PubAck::new(p.packet_id.unwrap())))
                    .await
                    .unwrap();
            }
            Packet::Disconnect(_) => return qos0,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// QoS 1 X (in flight, unacknowledged: the broker's Receive Maximum is 1)
/// and Y (held back), then QoS 0 A, B (Message Expiry Interval 1 s) and C,
/// queued behind Y. Two seconds later the broker acknowledges X: B has
/// expired. Each publish must hear its own outcome.
async fn qos0_outcomes(keep_alive: Duration) {
    let (first_tx, first) = oneshot::channel();
    let (go, go_rx) = oneshot::channel();
    let (transport, mut server_rx) = common::pipes();
    let options = ConnectOptions::new("pipe", 0)
        .client_id("outcomes")
        .keep_alive(keep_alive)
        .transport(transport)
        .reconnect(Reconnect::disabled());
    let connecting = tokio::spawn(Client::connect(options));
    let server = guard(server_rx.recv()).await.unwrap();
    let broker = tokio::spawn(broker(server, first_tx, go_rx));
    let (client, _) = guard(connecting).await.unwrap().unwrap();

    let expiring = PublishProperties {
        message_expiry_interval: Some(1),
        ..PublishProperties::default()
    };
    let mut x = pin!(
        client
            .publish("t/x", "X")
            .qos(QoS::AtLeastOnce)
            .into_future()
    );
    let mut y = pin!(
        client
            .publish("t/y", "Y")
            .qos(QoS::AtLeastOnce)
            .into_future()
    );
    let mut a = pin!(client.publish("t/a", "A").into_future());
    let mut b = pin!(
        client
            .publish("t/b", "B")
            .properties(expiring)
            .into_future()
    );
    let mut c = pin!(client.publish("t/c", "C").into_future());
    // Each is handed to the connection task on its first poll: in this order.
    assert!(poll!(x.as_mut()).is_pending());
    assert!(poll!(y.as_mut()).is_pending());
    assert!(poll!(a.as_mut()).is_pending());
    assert!(poll!(b.as_mut()).is_pending());
    assert!(poll!(c.as_mut()).is_pending());
    guard(first).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    go.send(()).unwrap();

    assert_eq!(guard(x).await.unwrap().qos, QoS::AtLeastOnce);
    assert_eq!(guard(y).await.unwrap().qos, QoS::AtLeastOnce);
    let a = guard(a).await;
    let b = guard(b).await;
    let c = guard(c).await;
    assert!(a.is_ok(), "A: {a:?}");
    assert!(
        matches!(b, Err(Error::PublishDropped(DropReason::Expired))),
        "B: {b:?}"
    );
    assert!(c.is_ok(), "C: {c:?}");
    guard(client.disconnect()).await.unwrap();
    assert_eq!(guard(broker).await.unwrap(), ["A", "C"]);
}

// v5:MQTT-3.3.2-5 is the server's side of message expiry; the client drops
// an expired QoS 0 message it has not sent yet as well. Here B expires
// while queued and is dropped when its turn comes: A and C are written, B
// is reported dropped (the outcomes were matched to the publishes by
// counting, so B was reported written and C dropped).
#[tokio::test(start_paused = true)]
async fn a_qos0_message_dropped_at_its_turn_gets_its_own_outcome() {
    qos0_outcomes(Duration::from_secs(60)).await;
}

// As above, with a keep-alive of 1 s: the session's timer drops B from the
// middle of the queue, before A is sent (A was reported dropped, B written).
#[tokio::test(start_paused = true)]
async fn a_qos0_message_expired_in_the_queue_gets_its_own_outcome() {
    qos0_outcomes(Duration::from_secs(1)).await;
}
