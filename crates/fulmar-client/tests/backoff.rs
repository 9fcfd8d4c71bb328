//! The reconnect backoff against a broker that accepts and at once ends the
//! connection, on a paused clock: the scripted broker sits at the other end
//! of an in-memory pipe ([`Transport::custom`]), not a socket, so the clock
//! moves only when everything waits for a timer and the delays are read off
//! it exactly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::guard;
use fulmar_client::{Client, ConnectOptions, Error, QoS, Reconnect, Transport};
use fulmar_codec::{ConnAck, Disconnect, DisconnectReasonCode, MqttCodec, Packet, ProtocolVersion};
use futures::{SinkExt, StreamExt};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::Framed;

/// Answers the CONNECT, keeps the connection `up`, then ends it as a
/// take-over does (DISCONNECT 0x8E) and tells when.
async fn accept_and_kick(
    server: DuplexStream,
    up: Duration,
    kicked: mpsc::UnboundedSender<Instant>,
) {
    let mut wire = Framed::new(server, MqttCodec::new(ProtocolVersion::V5, 1 << 20));
    let Some(Ok(Packet::Connect(_))) = wire.next().await else {
        panic!("expected CONNECT")
    };
    wire.send(Packet::ConnAck(ConnAck::default()))
        .await
        .unwrap();
    tokio::time::sleep(up).await;
    let bye = Disconnect::new(DisconnectReasonCode::SessionTakenOver);
    wire.send(Packet::Disconnect(bye)).await.unwrap();
    let _ = kicked.send(Instant::now());
}

// A connection that the broker accepts and ends at once does not restart the
// backoff: the delays keep doubling (two clients with one Client Identifier
// taking the session over from each other must not reconnect ten times a
// second for ever). A connection that stayed up for the longest delay
// restarts it.
#[tokio::test(start_paused = true)]
async fn a_broker_that_kicks_at_once_gets_growing_reconnect_delays() {
    /// The connection that stays up (counted from 0, the first connect),
    /// for longer than the longest delay (10 s), within the guard's 20 s.
    const LONG: usize = 3;
    let reconnect =
        Reconnect::exponential(Duration::from_millis(100), Duration::from_secs(10)).jitter(0.0);
    let (attempt_tx, mut attempts) = mpsc::unbounded_channel();
    let (kicked_tx, mut kicked) = mpsc::unbounded_channel();
    let count = Arc::new(AtomicUsize::new(0));
    let transport = Transport::custom(move || {
        let n = count.fetch_add(1, Ordering::SeqCst);
        let _ = attempt_tx.send(Instant::now());
        let (client, server) = tokio::io::duplex(1 << 16);
        let up = if n == LONG {
            Duration::from_secs(15)
        } else {
            Duration::ZERO
        };
        tokio::spawn(accept_and_kick(server, up, kicked_tx.clone()));
        async move { Ok(client) }
    });
    let options = ConnectOptions::new("pipe", 0)
        .client_id("taken-over")
        .transport(transport)
        .reconnect(reconnect.clone());
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    let mut delays = Vec::new();
    // The first connect.
    guard(attempts.recv()).await.unwrap();
    for _ in 0..=LONG {
        let kick = guard(kicked.recv()).await.unwrap();
        let attempt = guard(attempts.recv()).await.unwrap();
        delays.push(attempt - kick);
    }
    assert_eq!(
        delays,
        [
            reconnect.delay(0, 0.0),
            reconnect.delay(1, 0.0),
            reconnect.delay(2, 0.0),
            // After the connection that stayed up.
            reconnect.delay(0, 0.0),
        ]
    );
    guard(client.disconnect()).await.unwrap();
}

// (no spec statement) A backoff too long to add to the clock
// (`Duration::MAX`: practically never again) waits for ever and leaves the
// client usable: the connection task answers while it waits (it panicked
// on `Instant + delay`, and every call failed with `Closed`).
#[tokio::test]
async fn a_backoff_too_long_for_the_clock_waits_for_ever() {
    let (kicked_tx, mut kicked) = mpsc::unbounded_channel();
    let attempts = Arc::new(AtomicUsize::new(0));
    let transport = Transport::custom({
        let attempts = attempts.clone();
        move || {
            attempts.fetch_add(1, Ordering::SeqCst);
            let (client, server) = tokio::io::duplex(1 << 16);
            tokio::spawn(accept_and_kick(server, Duration::ZERO, kicked_tx.clone()));
            async move { Ok(client) }
        }
    });
    let options = ConnectOptions::new("pipe", 0)
        .client_id("never-again")
        .transport(transport)
        .reconnect(Reconnect::exponential(Duration::MAX, Duration::MAX).jitter(0.0));
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    guard(kicked.recv()).await.unwrap();
    guard(client.wait_connected(false)).await.unwrap();
    // Answered by the connection task, which is waiting to reconnect.
    let subscribed = guard(client.subscribe("t", QoS::AtLeastOnce)).await;
    assert!(
        matches!(subscribed, Err(Error::NotConnected)),
        "{:?}",
        subscribed.map(|_| ())
    );
    assert!(!client.is_closed());
    guard(client.disconnect()).await.unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}
