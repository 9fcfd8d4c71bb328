//! MQTT 5.0 enhanced authentication through AUTH packets, with a toy
//! challenge/response method ("toy": the client answers the challenge
//! reversed), in raw bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Peer, ToyExchange, addr, start_with};
use fulmar_broker::{AuthDecision, AuthExchange, Authenticator, Broker, BrokerHandle, ConnectInfo};
use fulmar_codec::ProtocolVersion;

/// Supports the method "toy"; counts calls to the plain `authenticate`.
#[derive(Default)]
struct Toy {
    plain: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Authenticator for Toy {
    async fn authenticate(&self, _connect: &ConnectInfo) -> AuthDecision {
        self.plain.fetch_add(1, Ordering::Relaxed);
        AuthDecision::Allow
    }

    fn auth_method(&self, _connect: &ConnectInfo, method: &str) -> Option<Box<dyn AuthExchange>> {
        (method == "toy").then(|| Box::new(ToyExchange::default()) as Box<dyn AuthExchange>)
    }
}

/// CONNECT v5, client id "a", Authentication Method `method` (3 bytes) and Data "hi".
fn connect(method: &[u8; 3]) -> Vec<u8> {
    let mut c = vec![
        0x10, 0x19, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x00, // header
        0x0b, 0x15, 0x00, 0x03, // properties: method
    ];
    c.extend_from_slice(method);
    c.extend_from_slice(&[0x16, 0x00, 0x02, b'h', b'i', 0x00, 0x01, b'a']);
    c
}

/// AUTH with reason `code`, method "toy" and 9 bytes of data.
fn auth(code: u8, data: &[u8; 9]) -> Vec<u8> {
    let mut a = vec![
        0xf0, 0x14, code, 0x12, 0x15, 0x00, 0x03, b't', b'o', b'y', 0x16, 0x00, 0x09,
    ];
    a.extend_from_slice(data);
    a
}

async fn broker() -> (BrokerHandle, Arc<AtomicUsize>) {
    let toy = Toy::default();
    let plain = toy.plain.clone();
    (
        start_with(Broker::builder().authenticator(toy)).await,
        plain,
    )
}

// v5:MQTT-4.12.0-2 v5:MQTT-4.12.0-5 v5:MQTT-3.15.2-1
#[tokio::test]
async fn challenge_response_then_connack_with_method_and_data() {
    let (broker, plain) = broker().await;
    let mut peer = Peer::open(addr(&broker), ProtocolVersion::V5).await;
    peer.send_raw(&connect(b"toy")).await;
    // AUTH 0x18 Continue authentication, method "toy", data "challenge".
    peer.expect_raw(&auth(0x18, b"challenge")).await;
    peer.send_raw(&auth(0x18, b"egnellahc")).await;
    // CONNACK 0x00 with the broker's limits, the method and the final data.
    peer.expect_raw(&[
        0x20, 0x1e, 0x00, 0x00, 0x1b, // flags, reason, properties length 27
        0x21, 0x00, 0x40, // Receive Maximum 64
        0x27, 0x00, 0x10, 0x00, 0x00, // Maximum Packet Size 1 MiB
        0x22, 0x00, 0x10, // Topic Alias Maximum 16
        0x15, 0x00, 0x03, b't', b'o', b'y', // Authentication Method
        0x16, 0x00, 0x07, b'w', b'e', b'l', b'c', b'o', b'm', b'e', // Authentication Data
    ])
    .await;
    // Connected: PINGREQ answered.
    peer.send_raw(&[0xc0, 0x00]).await;
    peer.expect_raw(&[0xd0, 0x00]).await;
    assert_eq!(plain.load(Ordering::Relaxed), 0);
    assert_eq!(broker.stats().clients_connected, 1);
    broker.shutdown().await;
}

// v5:MQTT-4.12.0-4
#[tokio::test]
async fn a_wrong_response_is_refused_with_0x87_and_closed() {
    let (broker, _) = broker().await;
    let mut peer = Peer::open(addr(&broker), ProtocolVersion::V5).await;
    peer.send_raw(&connect(b"toy")).await;
    peer.expect_raw(&auth(0x18, b"challenge")).await;
    peer.send_raw(&auth(0x18, b"challenge")).await;
    peer.expect_raw(&[0x20, 0x03, 0x00, 0x87, 0x00]).await;
    peer.expect_closed().await;
    assert_eq!(broker.stats().sessions, 0);
    broker.shutdown().await;
}

// v5:MQTT-4.12.0-1
#[tokio::test]
async fn an_unsupported_method_gets_0x8c() {
    let (broker, plain) = broker().await;
    let mut peer = Peer::open(addr(&broker), ProtocolVersion::V5).await;
    peer.send_raw(&connect(b"xyz")).await;
    peer.expect_raw(&[0x20, 0x03, 0x00, 0x8c, 0x00]).await;
    peer.expect_closed().await;
    assert_eq!(plain.load(Ordering::Relaxed), 0);
    broker.shutdown().await;
}

// v5:MQTT-4.12.0-3
#[tokio::test]
async fn an_answer_that_is_not_continue_is_a_protocol_error() {
    let (broker, _) = broker().await;
    let mut peer = Peer::open(addr(&broker), ProtocolVersion::V5).await;
    peer.send_raw(&connect(b"toy")).await;
    peer.expect_raw(&auth(0x18, b"challenge")).await;
    // Reason 0x19 Re-authenticate before CONNACK.
    peer.send_raw(&auth(0x19, b"egnellahc")).await;
    peer.expect_raw(&[0x20, 0x03, 0x00, 0x82, 0x00]).await;
    peer.expect_closed().await;
    broker.shutdown().await;
}

/// The answer to the challenge with another Authentication Method is
/// refused by the session: CONNACK 0x8C, and the exchange goes no further.
// v5:MQTT-4.12.0-5
#[tokio::test]
async fn an_answer_with_another_method_gets_0x8c() {
    let (broker, _) = broker().await;
    let mut peer = Peer::open(addr(&broker), ProtocolVersion::V5).await;
    peer.send_raw(&connect(b"toy")).await;
    peer.expect_raw(&auth(0x18, b"challenge")).await;
    let mut other = auth(0x18, b"egnellahc");
    other[7..10].copy_from_slice(b"yot");
    peer.send_raw(&other).await;
    peer.expect_raw(&[0x20, 0x03, 0x00, 0x8c, 0x00]).await;
    peer.expect_closed().await;
    assert_eq!(broker.stats().sessions, 0);
    broker.shutdown().await;
}

// v5:MQTT-4.12.0-6
#[tokio::test]
async fn without_a_method_the_plain_authenticator_decides() {
    let (broker, plain) = broker().await;
    let peer = Peer::connect(addr(&broker), ProtocolVersion::V5, "plain").await;
    assert_eq!(plain.load(Ordering::Relaxed), 1);
    peer.disconnect().await;
    broker.shutdown().await;
}

/// Connects with the toy method (whole exchange) and reads the CONNACK.
async fn authenticated(broker: &BrokerHandle) -> Peer {
    let mut peer = Peer::open(addr(broker), ProtocolVersion::V5).await;
    peer.send_raw(&connect(b"toy")).await;
    peer.expect_raw(&auth(0x18, b"challenge")).await;
    peer.send_raw(&auth(0x18, b"egnellahc")).await;
    match peer.recv().await {
        fulmar_codec::Packet::ConnAck(ack) => assert!(!ack.reason_code.is_error()),
        other => panic!("{other:?}"),
    }
    peer
}

/// AUTH 0x19 Re-authenticate, method "toy", data "hi".
const REAUTH: [u8; 15] = [
    0xf0, 0x0d, 0x19, 0x0b, 0x15, 0x00, 0x03, b't', b'o', b'y', 0x16, 0x00, 0x02, b'h', b'i',
];

// v5:MQTT-4.12.1-1 v5:MQTT-4.12.0-5
#[tokio::test]
async fn re_authentication_after_connack() {
    let (broker, _) = broker().await;
    let mut peer = authenticated(&broker).await;
    peer.send_raw(&REAUTH).await;
    peer.expect_raw(&auth(0x18, b"challenge")).await;
    peer.send_raw(&auth(0x18, b"egnellahc")).await;
    // AUTH 0x00 Success, method "toy", data "welcome".
    peer.expect_raw(&[
        0xf0, 0x12, 0x00, 0x10, 0x15, 0x00, 0x03, b't', b'o', b'y', 0x16, 0x00, 0x07, b'w', b'e',
        b'l', b'c', b'o', b'm', b'e',
    ])
    .await;
    // Still connected.
    peer.send_raw(&[0xc0, 0x00]).await;
    peer.expect_raw(&[0xd0, 0x00]).await;
    broker.shutdown().await;
}

// v5:MQTT-4.12.1-2
#[tokio::test]
async fn failed_re_authentication_disconnects_with_0x87() {
    let (broker, _) = broker().await;
    let mut peer = authenticated(&broker).await;
    peer.send_raw(&REAUTH).await;
    peer.expect_raw(&auth(0x18, b"challenge")).await;
    peer.send_raw(&auth(0x18, b"wrong-one")).await;
    match peer.recv().await {
        fulmar_codec::Packet::Disconnect(d) => {
            assert_eq!(
                d.reason_code,
                fulmar_codec::DisconnectReasonCode::NotAuthorized
            )
        }
        other => panic!("{other:?}"),
    }
    peer.expect_closed().await;
    broker.shutdown().await;
}

/// An exchange whose step never answers.
struct StuckExchange;

#[async_trait::async_trait]
impl AuthExchange for StuckExchange {
    async fn continue_auth(&mut self, _data: Option<bytes::Bytes>) -> fulmar_broker::AuthStep {
        std::future::pending().await
    }
}

struct StuckMethod;

#[async_trait::async_trait]
impl Authenticator for StuckMethod {
    async fn authenticate(&self, _connect: &ConnectInfo) -> AuthDecision {
        AuthDecision::Allow
    }

    fn auth_method(&self, _connect: &ConnectInfo, _method: &str) -> Option<Box<dyn AuthExchange>> {
        Some(Box::new(StuckExchange))
    }
}

// An exchange that does not finish within connect_timeout does not hold the
// connection: CONNACK 0x88 Server unavailable, closed, no longer counted.
#[tokio::test]
async fn an_exchange_that_never_answers_is_cut_off_at_the_connect_timeout() {
    let broker = start_with(
        Broker::builder()
            .authenticator(StuckMethod)
            .connect_timeout(std::time::Duration::from_millis(300)),
    )
    .await;
    let mut peer = Peer::open(addr(&broker), ProtocolVersion::V5).await;
    peer.send_raw(&connect(b"toy")).await;
    peer.expect_raw(&[0x20, 0x03, 0x00, 0x88, 0x00]).await;
    peer.expect_closed().await;
    common::wait_until("no connection left", || broker.stats().connections == 0).await;
    broker.shutdown().await;
}

/// Fails the test past 20 s (a guard, not a timing assertion).
async fn guard<T>(f: impl std::future::IntoFuture<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(20), f.into_future())
        .await
        .expect("no progress in 20 s")
}

/// The client side of "toy" for `fulmar-client`: starts with "hi", answers
/// the challenge reversed (or with `answer` when set), wants "welcome" at
/// the end.
struct ToyClient {
    answer: Arc<std::sync::Mutex<Option<&'static str>>>,
}

impl fulmar_client::Authenticator for ToyClient {
    fn start(&mut self) -> Result<Option<bytes::Bytes>, fulmar_client::AuthError> {
        Ok(Some(bytes::Bytes::from_static(b"hi")))
    }

    fn challenge(
        &mut self,
        data: Option<bytes::Bytes>,
    ) -> Result<Option<bytes::Bytes>, fulmar_client::AuthError> {
        if let Some(answer) = *self.answer.lock().unwrap() {
            return Ok(Some(bytes::Bytes::from_static(answer.as_bytes())));
        }
        let data = data.ok_or("no challenge")?;
        Ok(Some(data.iter().rev().copied().collect::<Vec<u8>>().into()))
    }

    fn finish(&mut self, data: Option<bytes::Bytes>) -> Result<(), fulmar_client::AuthError> {
        if data.as_deref() == Some(&b"welcome"[..]) {
            Ok(())
        } else {
            Err(format!("unexpected final data {data:?}").into())
        }
    }
}

// fulmar-client's authenticator against the broker's exchange: connect,
// publish, re-authenticate (the session goes on), then a re-authentication
// the broker refuses ends the connection with 0x87.
// v5:MQTT-4.12.0-3 v5:MQTT-4.12.1-1 v5:MQTT-4.12.1-2
#[tokio::test]
async fn fulmar_client_authenticates_and_re_authenticates() {
    use fulmar_client::{Client, ConnectOptions, Error, QoS, Reconnect};
    use futures::StreamExt;

    let (broker, plain) = broker().await;
    let answer = Arc::new(std::sync::Mutex::new(None));
    let address = addr(&broker);
    let options = ConnectOptions::new(address.ip().to_string(), address.port())
        .client_id("toy-client")
        .reconnect(Reconnect::disabled())
        .authentication(
            "toy",
            ToyClient {
                answer: answer.clone(),
            },
        );
    let (client, connack) = guard(Client::connect(options)).await.unwrap();
    assert_eq!(
        connack.properties.authentication_method.as_deref(),
        Some("toy")
    );
    assert_eq!(plain.load(Ordering::Relaxed), 0);
    let mut stream = client.subscribe("toy/#", QoS::AtLeastOnce).await.unwrap();
    client
        .publish("toy/1", "before")
        .qos(QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(guard(stream.next()).await.unwrap().payload, "before");
    guard(client.reauthenticate()).await.unwrap();
    client
        .publish("toy/2", "after")
        .qos(QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(guard(stream.next()).await.unwrap().payload, "after");
    *answer.lock().unwrap() = Some("wrong-one");
    let refused = guard(client.reauthenticate()).await.unwrap_err();
    assert!(
        matches!(refused, Error::DisconnectedByBroker(code) if u8::from(code) == 0x87),
        "{refused:?}"
    );
    broker.shutdown().await;
}

// A client whose authenticator answers wrongly is refused with CONNACK 0x87.
// v5:MQTT-4.12.0-4
#[tokio::test]
async fn fulmar_client_with_a_wrong_answer_is_refused() {
    use fulmar_client::{Client, ConnectOptions, ConnectReasonCode, Error, Reconnect};

    let (broker, _) = broker().await;
    let address = addr(&broker);
    let options = ConnectOptions::new(address.ip().to_string(), address.port())
        .reconnect(Reconnect::disabled())
        .authentication(
            "toy",
            ToyClient {
                answer: Arc::new(std::sync::Mutex::new(Some("wrong-one"))),
            },
        );
    let refused = guard(Client::connect(options)).await.unwrap_err();
    assert!(
        matches!(
            refused,
            Error::Refused {
                reason_code: ConnectReasonCode::NotAuthorized,
                ..
            }
        ),
        "{refused:?}"
    );
    broker.shutdown().await;
}
