//! Connections over streams the application opens itself: the broker's
//! `BrokerHandle::serve_connection` and the client's `Transport::custom`,
//! over in-memory pipes and Unix domain sockets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use common::{addr, next, start_with, wait_until};
use fulmar_broker::{AuthDecision, Authenticator, Broker, BrokerHandle, ConnectInfo};
use fulmar_client::{Client, ConnectOptions, Error, Message, Reconnect, Subscription, Transport};
use fulmar_codec::{
    Connect, ConnectReasonCode, DisconnectReasonCode, MqttString, Packet, ProtocolVersion, QoS,
    decode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// A client transport that opens an in-memory pipe to `broker` for every
/// connection attempt, served as if from `peer`.
fn in_memory(broker: &BrokerHandle, peer: SocketAddr) -> Transport {
    let broker = broker.clone();
    Transport::custom(move || {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let _connection = broker.serve_connection(server, peer);
        async move { Ok(client) }
    })
}

/// The next message of a client subscription (fails after ten seconds).
async fn recv(subscription: &mut Subscription) -> Message {
    tokio::time::timeout(Duration::from_secs(10), subscription.recv())
        .await
        .expect("a message in time")
        .expect("the subscription is open")
}

fn peer() -> SocketAddr {
    "10.1.2.3:4567".parse().unwrap()
}

fn options(id: &str) -> ConnectOptions {
    ConnectOptions::new("in-memory", 0).client_id(id)
}

/// Writes a 5.0 CONNECT for `id` and reads the answer.
async fn raw_connect(pipe: &mut DuplexStream, id: &str) -> Packet {
    let mut wire = BytesMut::new();
    Packet::from(Connect::new(
        ProtocolVersion::V5,
        MqttString::try_new(id).unwrap(),
    ))
    .encode(ProtocolVersion::V5, &mut wire)
    .unwrap();
    pipe.write_all(&wire).await.unwrap();
    raw_recv(pipe).await.expect("an answer to CONNECT")
}

/// The next packet from the broker, `None` at the end of the stream.
async fn raw_recv(pipe: &mut DuplexStream) -> Option<Packet> {
    let mut buf = BytesMut::new();
    loop {
        if let Some(packet) = decode(&mut buf, ProtocolVersion::V5, 1 << 20).unwrap() {
            return Some(packet);
        }
        let read = tokio::time::timeout(Duration::from_secs(10), pipe.read_buf(&mut buf))
            .await
            .expect("the broker answers")
            .unwrap();
        if read == 0 {
            assert!(buf.is_empty(), "the stream ended inside a packet");
            return None;
        }
    }
}

// MQTT-3.3.1-9 (the subscriber gets RETAIN 0 for a live message): routing is
// the same whatever the stream under a connection.
#[tokio::test]
async fn an_in_memory_client_and_a_tcp_client_exchange_messages() {
    let broker = start_with(Broker::builder()).await;
    let memory_options = options("in-memory").transport(in_memory(&broker, peer()));
    let (memory, connack) = Client::connect(memory_options).await.unwrap();
    assert!(!connack.reason_code.is_error());
    let tcp_options = ConnectOptions::new("127.0.0.1", addr(&broker).port()).client_id("tcp");
    let (tcp, _) = Client::connect(tcp_options).await.unwrap();
    assert_eq!(broker.stats().connections, 2);

    let mut from_tcp = memory
        .subscribe("to/memory", QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut from_memory = tcp.subscribe("to/tcp", QoS::ExactlyOnce).await.unwrap();
    tcp.publish("to/memory", "over tcp")
        .qos(QoS::AtLeastOnce)
        .await
        .unwrap();
    memory
        .publish("to/tcp", "over a pipe")
        .qos(QoS::ExactlyOnce)
        .await
        .unwrap();
    let message = recv(&mut from_tcp).await;
    assert_eq!(message.payload, "over tcp");
    assert!(!message.retain);
    let message = recv(&mut from_memory).await;
    assert_eq!(message.payload, "over a pipe");

    // The application's own in-process subscription sees the pipe's messages too.
    let mut local = broker.subscribe("to/#").unwrap();
    memory.publish("to/app", "hello").await.unwrap();
    assert_eq!(next(&mut local).await.payload, "hello");

    memory.disconnect().await.unwrap();
    tcp.disconnect().await.unwrap();
    wait_until("both connections closed", || {
        broker.stats().connections == 0
    })
    .await;
    broker.shutdown().await;
}

struct Recorder(Arc<Mutex<Vec<Option<SocketAddr>>>>);

#[async_trait::async_trait]
impl Authenticator for Recorder {
    async fn authenticate(&self, connect: &ConnectInfo) -> AuthDecision {
        self.0.lock().unwrap().push(connect.remote_addr);
        if connect.username.as_deref() == Some("mallory") {
            AuthDecision::Reject(ConnectReasonCode::NotAuthorized)
        } else {
            AuthDecision::Allow
        }
    }
}

// MQTT-3.2.2-7 (a refused CONNECT is answered with CONNACK and the
// connection closed), with the authenticator seeing the address given to
// serve_connection.
#[tokio::test]
async fn the_authenticator_sees_the_address_the_application_gives() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let broker = start_with(Broker::builder().authenticator(Recorder(seen.clone()))).await;
    let (client, _) = Client::connect(options("alice").transport(in_memory(&broker, peer())))
        .await
        .unwrap();
    let refused = Client::connect(
        options("mallory")
            .username("mallory")
            .transport(in_memory(&broker, peer())),
    )
    .await;
    match refused {
        Err(Error::Refused { reason_code, .. }) => {
            assert_eq!(reason_code, ConnectReasonCode::NotAuthorized);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(*seen.lock().unwrap(), vec![Some(peer()), Some(peer())]);
    client.disconnect().await.unwrap();
    broker.shutdown().await;
}

// A served connection counts towards max_connections like an accepted one.
#[tokio::test]
async fn a_served_connection_counts_towards_max_connections() {
    let broker = start_with(Broker::builder().max_connections(1)).await;
    let (first, _) = Client::connect(options("first").transport(in_memory(&broker, peer())))
        .await
        .unwrap();
    let second = Client::connect(options("second").transport(in_memory(&broker, peer()))).await;
    match second {
        Err(Error::Refused { reason_code, .. }) => {
            assert_eq!(reason_code, ConnectReasonCode::ServerUnavailable);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    first.disconnect().await.unwrap();
    wait_until("the first connection closed", || {
        broker.stats().connections == 0
    })
    .await;
    let (third, _) = Client::connect(options("third").transport(in_memory(&broker, peer())))
        .await
        .unwrap();
    third.disconnect().await.unwrap();
    broker.shutdown().await;
}

// v5:MQTT-3.14.2-1 (DISCONNECT 0x8B Server shutting down): shutdown closes a
// served connection and waits for it; one served after it ends at once.
#[tokio::test]
async fn shutdown_closes_served_connections_and_refuses_new_ones() {
    let broker = Broker::builder().start().await.unwrap();
    let (mut pipe, server) = tokio::io::duplex(4096);
    let connection = broker.serve_connection(server, peer());
    let Packet::ConnAck(connack) = raw_connect(&mut pipe, "c").await else {
        panic!("expected CONNACK");
    };
    assert!(!connack.reason_code.is_error());
    assert!(!connection.is_finished());

    broker.shutdown().await;
    assert!(connection.is_finished());
    connection.await;
    let Some(Packet::Disconnect(disconnect)) = raw_recv(&mut pipe).await else {
        panic!("expected DISCONNECT");
    };
    assert_eq!(
        disconnect.reason_code,
        DisconnectReasonCode::ServerShuttingDown
    );
    assert!(raw_recv(&mut pipe).await.is_none());

    let (mut late, server) = tokio::io::duplex(4096);
    let connection = broker.serve_connection(server, peer());
    connection.await;
    assert!(raw_recv(&mut late).await.is_none());
}

// MQTT-4.4.0-1 (a resumed session sends its unacknowledged PUBLISH again) is
// the session's; here: the client's connector is called again after the
// stream breaks, and the persistent session carries on over a Unix socket.
#[cfg(unix)]
#[tokio::test]
async fn a_client_reconnects_over_a_unix_socket() {
    use tokio::net::{UnixListener, UnixStream};

    let dir = std::env::temp_dir().join(format!("fulmar-unix-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mqtt.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let broker = Broker::builder().start().await.unwrap();

    // The application's accept loop; the test breaks the first connection
    // from the broker's side by dropping its end of the socket pair.
    let (breaker_tx, mut breaker_rx) = tokio::sync::mpsc::unbounded_channel();
    let served = broker.clone();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let accept = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                // Served through a pipe the test can cut.
                let (outer, inner) = tokio::io::duplex(64 * 1024);
                let _connection = served.serve_connection(inner, peer());
                let (cut_tx, cut_rx) = tokio::sync::oneshot::channel::<()>();
                breaker_tx.send(cut_tx).unwrap();
                tokio::spawn(async move {
                    let mut stream = stream;
                    let mut outer = outer;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut stream, &mut outer) => {}
                        _ = cut_rx => {}
                    }
                });
            } else {
                let _connection = served.serve_connection(stream, peer());
            }
        }
    });

    let socket = path.clone();
    let options = options("unix")
        .clean_start(false)
        .session_expiry_interval(60)
        .reconnect(Reconnect::exponential(
            Duration::from_millis(10),
            Duration::from_millis(50),
        ))
        .transport(Transport::custom(move || {
            UnixStream::connect(socket.clone())
        }));
    let (client, _) = Client::connect(options).await.unwrap();
    let mut messages = client.subscribe("unix/#", QoS::AtLeastOnce).await.unwrap();
    broker
        .publish("unix/1", "before", QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(recv(&mut messages).await.payload, "before");

    let cut = breaker_rx.recv().await.unwrap();
    let _ = cut.send(());
    wait_until("the client connects again", || {
        accepted.load(Ordering::SeqCst) == 2 && client.is_connected()
    })
    .await;
    // The subscription belongs to the session, which the broker kept.
    broker
        .publish("unix/2", "after", QoS::AtLeastOnce, false)
        .unwrap();
    loop {
        // "before" comes again if its PUBACK was cut off (QoS 1: at least once).
        let message = recv(&mut messages).await;
        if message.payload == "after" {
            break;
        }
        assert_eq!(message.payload, "before");
    }
    assert!(broker.has_session("unix"));

    client.disconnect().await.unwrap();
    broker.shutdown().await;
    accept.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
