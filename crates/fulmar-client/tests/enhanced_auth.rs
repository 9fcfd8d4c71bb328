//! MQTT 5.0 enhanced authentication (section 4.12) on the client's side,
//! against a scripted broker at the other end of an in-memory pipe: the
//! exchange before CONNACK, the authenticator giving up, the broker's proof
//! checked, re-authentication and its refusal, a new exchange per
//! connection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::guard;
use fulmar_client::{
    AuthError, Authenticator, Client, ConnectOptions, Error, ProtocolVersion, Reconnect,
};
use fulmar_codec::{
    Auth, AuthProperties, AuthReasonCode, ConnAck, ConnAckProperties, Connect, Disconnect,
    DisconnectReasonCode, MqttCodec, MqttString, Packet,
};
use futures::{SinkExt, StreamExt};
use tokio::io::DuplexStream;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::codec::Framed;

type Wire = Framed<DuplexStream, MqttCodec>;

const METHOD: &str = "TOY";

/// What the toy authenticator was called with, in order.
type Calls = Arc<Mutex<Vec<String>>>;

/// Starts with "hello-N" (N counts the exchanges), answers a challenge with
/// it reversed, and accepts the broker's final data only if it is
/// "proof" (or absent). A challenge "fail" makes it give up.
struct Toy {
    calls: Calls,
    exchanges: u32,
}

fn text(data: Option<&Bytes>) -> String {
    data.map_or_else(
        || "-".to_owned(),
        |d| String::from_utf8_lossy(d).into_owned(),
    )
}

impl Authenticator for Toy {
    fn start(&mut self) -> Result<Option<Bytes>, AuthError> {
        self.exchanges += 1;
        self.calls.lock().unwrap().push("start".into());
        Ok(Some(format!("hello-{}", self.exchanges).into()))
    }

    fn challenge(&mut self, data: Option<Bytes>) -> Result<Option<Bytes>, AuthError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("challenge {}", text(data.as_ref())));
        let data = data.ok_or("no challenge")?;
        if data == "fail" {
            return Err("cannot answer this challenge".into());
        }
        Ok(Some(data.iter().rev().copied().collect::<Vec<u8>>().into()))
    }

    fn finish(&mut self, data: Option<Bytes>) -> Result<(), AuthError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("finish {}", text(data.as_ref())));
        match data {
            Some(proof) if proof != "proof" => Err("the broker's proof is wrong".into()),
            _ => Ok(()),
        }
    }
}

fn toy() -> (Toy, Calls) {
    let calls = Calls::default();
    (
        Toy {
            calls: calls.clone(),
            exchanges: 0,
        },
        calls,
    )
}

fn options(transport: fulmar_client::Transport, authenticator: Toy) -> ConnectOptions {
    ConnectOptions::new("pipe", 0)
        .client_id("enhanced")
        .transport(transport)
        .reconnect(Reconnect::disabled())
        .authentication(METHOD, authenticator)
}

/// [`options`] reconnecting at once, with a session kept for an hour.
fn reconnecting(transport: fulmar_client::Transport, authenticator: Toy) -> ConnectOptions {
    options(transport, authenticator)
        .session_expiry_interval(3600)
        .reconnect(Reconnect::exponential(
            std::time::Duration::from_millis(1),
            std::time::Duration::from_millis(10),
        ))
}

/// A client connected without a challenge: the CONNACK carries the proof.
async fn connect_without_challenge(
    options: ConnectOptions,
    servers: &mut UnboundedReceiver<DuplexStream>,
) -> (Client, Wire) {
    let connecting = tokio::spawn(Client::connect(options));
    let (mut wire, _connect) = accept(servers).await;
    wire.send(connack(Some("proof"))).await.unwrap();
    let (client, _) = guard(connecting).await.unwrap().unwrap();
    (client, wire)
}

/// A CONNACK 0x00 with the method, `proof` and Session Present.
fn connack_resuming(proof: &'static str) -> Packet {
    let Packet::ConnAck(mut ack) = connack(Some(proof)) else {
        unreachable!()
    };
    ack.session_present = true;
    Packet::ConnAck(ack)
}

fn method() -> Option<MqttString> {
    Some(MqttString::try_new(METHOD).unwrap())
}

fn auth(reason_code: AuthReasonCode, data: &'static str) -> Packet {
    Packet::Auth(Auth {
        reason_code,
        properties: AuthProperties {
            authentication_method: method(),
            authentication_data: Some(Bytes::from_static(data.as_bytes())),
            ..AuthProperties::default()
        },
    })
}

fn connack(data: Option<&'static str>) -> Packet {
    Packet::ConnAck(ConnAck {
        properties: ConnAckProperties {
            authentication_method: method(),
            authentication_data: data.map(|d| Bytes::from_static(d.as_bytes())),
            ..ConnAckProperties::default()
        },
        ..ConnAck::default()
    })
}

/// The broker's end of the next connection and the CONNECT on it.
async fn accept(servers: &mut UnboundedReceiver<DuplexStream>) -> (Wire, Box<Connect>) {
    let server = guard(servers.recv()).await.unwrap();
    let mut wire = Framed::new(server, MqttCodec::new(ProtocolVersion::V5, 1 << 20));
    let Some(Ok(Packet::Connect(connect))) = guard(wire.next()).await else {
        panic!("expected CONNECT")
    };
    (wire, connect)
}

async fn next(wire: &mut Wire) -> Packet {
    guard(wire.next()).await.unwrap().unwrap()
}

/// The AUTH the client sent next: its reason code and data.
async fn next_auth(wire: &mut Wire) -> (AuthReasonCode, Option<Bytes>) {
    match next(wire).await {
        Packet::Auth(auth) => {
            // MQTT-4.12.0-5: the CONNECT's method in every AUTH.
            assert_eq!(auth.properties.authentication_method, method());
            (auth.reason_code, auth.properties.authentication_data)
        }
        other => panic!("expected AUTH, got {other:?}"),
    }
}

/// A client through the whole exchange of [`the_exchange_before_connack`].
async fn connected() -> (Client, Wire, Calls, UnboundedReceiver<DuplexStream>) {
    let (transport, mut servers) = common::pipes();
    let (authenticator, calls) = toy();
    let connecting = tokio::spawn(Client::connect(options(transport, authenticator)));
    let (mut wire, connect) = accept(&mut servers).await;
    assert_eq!(connect.properties.authentication_method, method());
    assert_eq!(
        connect.properties.authentication_data.as_deref(),
        Some(&b"hello-1"[..])
    );
    wire.send(auth(AuthReasonCode::ContinueAuthentication, "challenge"))
        .await
        .unwrap();
    let (code, data) = next_auth(&mut wire).await;
    assert_eq!(code, AuthReasonCode::ContinueAuthentication);
    assert_eq!(data.as_deref(), Some(&b"egnellahc"[..]));
    wire.send(connack(Some("proof"))).await.unwrap();
    let (client, connack) = guard(connecting).await.unwrap().unwrap();
    assert_eq!(
        connack.properties.authentication_data.as_deref(),
        Some(&b"proof"[..])
    );
    (client, wire, calls, servers)
}

// The CONNECT carries the method and the authenticator's first data; the
// broker's AUTH 0x18 challenge is answered with an AUTH 0x18 carrying the
// method; the CONNACK's data goes to `finish`.
// v5:MQTT-4.12.0-3 v5:MQTT-4.12.0-5 v5:MQTT-3.15.2-1
#[tokio::test]
async fn the_exchange_before_connack() {
    let (client, _wire, calls, _servers) = connected().await;
    assert!(client.is_connected());
    assert_eq!(
        *calls.lock().unwrap(),
        ["start", "challenge challenge", "finish proof"]
    );
}

/// The DISCONNECT the client sent, and the connect's result.
async fn refused_by_client(
    wire: &mut Wire,
    connecting: tokio::task::JoinHandle<Result<(Client, ConnAck), Error>>,
) -> Error {
    match next(wire).await {
        Packet::Disconnect(Disconnect { reason_code, .. }) => {
            assert_eq!(reason_code, DisconnectReasonCode::UnspecifiedError);
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert!(guard(wire.next()).await.is_none(), "the connection closes");
    guard(connecting).await.unwrap().unwrap_err()
}

// An authenticator that cannot answer a challenge ends the attempt with a
// DISCONNECT (the only packet besides AUTH allowed before CONNACK) and
// `Error::Authentication`.
// v5:MQTT-3.1.2-30
#[tokio::test]
async fn a_challenge_the_authenticator_cannot_answer_fails_the_connect() {
    let (transport, mut servers) = common::pipes();
    let (authenticator, _calls) = toy();
    let connecting = tokio::spawn(Client::connect(options(transport, authenticator)));
    let (mut wire, _connect) = accept(&mut servers).await;
    wire.send(auth(AuthReasonCode::ContinueAuthentication, "fail"))
        .await
        .unwrap();
    let error = refused_by_client(&mut wire, connecting).await;
    assert!(
        matches!(&error, Error::Authentication(e) if e.to_string().contains("cannot answer")),
        "{error:?}"
    );
}

// A CONNACK 0x00 whose data the authenticator does not accept (a broker
// that cannot prove who it is): the client does not take the connection.
#[tokio::test]
async fn a_wrong_proof_from_the_broker_fails_the_connect() {
    let (transport, mut servers) = common::pipes();
    let (authenticator, calls) = toy();
    let connecting = tokio::spawn(Client::connect(options(transport, authenticator)));
    let (mut wire, _connect) = accept(&mut servers).await;
    wire.send(connack(Some("forged"))).await.unwrap();
    let error = refused_by_client(&mut wire, connecting).await;
    assert!(
        matches!(&error, Error::Authentication(e) if e.to_string().contains("proof")),
        "{error:?}"
    );
    assert_eq!(*calls.lock().unwrap(), ["start", "finish forged"]);
}

// Re-authentication: AUTH 0x19 with the CONNECT's method and fresh data,
// challenges answered with 0x18, done at the broker's AUTH 0x00; a second
// call made while it runs (new credentials, say) gets an exchange of its
// own, started after the first one ends.
// v5:MQTT-4.12.1-1 v5:MQTT-4.12.0-3 v5:MQTT-4.12.0-5
#[tokio::test]
async fn re_authentication_on_a_live_connection() {
    let (client, mut wire, calls, _servers) = connected().await;
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.reauthenticate().await }
    });
    let (code, data) = next_auth(&mut wire).await;
    assert_eq!(code, AuthReasonCode::ReAuthenticate);
    assert_eq!(data.as_deref(), Some(&b"hello-2"[..]));
    // A second call, sent before the challenge: a request behind it in the
    // same channel coming back proves the connection task has taken it.
    let mut second = Box::pin(client.reauthenticate());
    assert!(futures::poll!(&mut second).is_pending());
    let _catch_all = guard(client.messages()).await.unwrap();
    wire.send(auth(AuthReasonCode::ContinueAuthentication, "again"))
        .await
        .unwrap();
    let (code, data) = next_auth(&mut wire).await;
    assert_eq!(code, AuthReasonCode::ContinueAuthentication);
    assert_eq!(data.as_deref(), Some(&b"niaga"[..]));
    wire.send(auth(AuthReasonCode::Success, "proof"))
        .await
        .unwrap();
    guard(first).await.unwrap().unwrap();
    let (code, data) = next_auth(&mut wire).await;
    assert_eq!(code, AuthReasonCode::ReAuthenticate);
    assert_eq!(data.as_deref(), Some(&b"hello-3"[..]));
    wire.send(auth(AuthReasonCode::Success, "proof"))
        .await
        .unwrap();
    guard(second).await.unwrap();
    assert!(client.is_connected());
    assert_eq!(
        calls.lock().unwrap()[3..],
        [
            "start",
            "challenge again",
            "finish proof",
            "start",
            "finish proof"
        ]
    );
    // Still usable: a publish goes through.
    let publishing = tokio::spawn({
        let client = client.clone();
        async move { client.publish("after/reauth", "x").await }
    });
    match next(&mut wire).await {
        Packet::Publish(publish) => assert_eq!(publish.topic, "after/reauth"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    guard(publishing).await.unwrap().unwrap();
}

// A broker that refuses the re-authentication sends DISCONNECT 0x87 and
// closes: the call fails with that reason code.
// v5:MQTT-4.12.1-2
#[tokio::test]
async fn a_refused_re_authentication_reports_the_brokers_disconnect() {
    let (client, mut wire, _calls, _servers) = connected().await;
    let reauth = tokio::spawn({
        let client = client.clone();
        async move { client.reauthenticate().await }
    });
    let (code, _) = next_auth(&mut wire).await;
    assert_eq!(code, AuthReasonCode::ReAuthenticate);
    wire.send(Packet::Disconnect(Disconnect {
        reason_code: DisconnectReasonCode::NotAuthorized,
        ..Disconnect::default()
    }))
    .await
    .unwrap();
    drop(wire);
    let error = guard(reauth).await.unwrap().unwrap_err();
    assert!(
        matches!(
            error,
            Error::DisconnectedByBroker(code) if u8::from(code) == 0x87
        ),
        "{error:?}"
    );
}

// The broker's proof at the end of a re-authentication is checked too: a
// wrong one ends the connection with DISCONNECT 0x80.
// v5:MQTT-4.12.1-2
#[tokio::test]
async fn a_wrong_proof_after_re_authentication_ends_the_connection() {
    let (client, mut wire, _calls, _servers) = connected().await;
    let reauth = tokio::spawn({
        let client = client.clone();
        async move { client.reauthenticate().await }
    });
    let _ = next_auth(&mut wire).await;
    wire.send(auth(AuthReasonCode::Success, "forged"))
        .await
        .unwrap();
    match next(&mut wire).await {
        Packet::Disconnect(d) => {
            assert_eq!(d.reason_code, DisconnectReasonCode::UnspecifiedError);
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    let error = guard(reauth).await.unwrap().unwrap_err();
    assert!(matches!(error, Error::Authentication(_)), "{error:?}");
    guard(client.wait_connected(false)).await.unwrap();
    let last = client.last_disconnection().unwrap();
    assert!(
        matches!(*last.error, Error::Authentication(_)),
        "{:?}",
        last.error
    );
}

// A broker that never completes a re-authentication: it fails after the
// connect timeout, and the connection ends with DISCONNECT 0x80 (paused
// clock: the deadline passes as soon as nothing else can run).
// v5:MQTT-4.12.1-2
#[tokio::test(start_paused = true)]
async fn an_unanswered_re_authentication_fails_after_the_connect_timeout() {
    let (client, mut wire, _calls, _servers) = connected().await;
    // The paused clock moves only when everything waits: this measures the
    // deadline, not the machine.
    let started = tokio::time::Instant::now();
    let reauth = tokio::spawn({
        let client = client.clone();
        async move { client.reauthenticate().await }
    });
    let (code, _) = next_auth(&mut wire).await;
    assert_eq!(code, AuthReasonCode::ReAuthenticate);
    match next(&mut wire).await {
        Packet::Disconnect(d) => {
            assert_eq!(d.reason_code, DisconnectReasonCode::UnspecifiedError);
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    let error = guard(reauth).await.unwrap().unwrap_err();
    assert!(
        matches!(&error, Error::Authentication(e) if e.to_string().contains("did not complete")),
        "{error:?}"
    );
    // The default connect timeout, 10 s.
    assert!(started.elapsed() >= std::time::Duration::from_secs(10));
}

// (no spec statement) A connect timeout too long to add to the clock
// (`Duration::MAX`) gives a re-authentication no deadline: it completes
// when the broker answers (the connection task panicked on `Instant +
// connect_timeout` as it sent the AUTH).
#[tokio::test]
async fn a_re_authentication_with_a_connect_timeout_too_long_for_the_clock() {
    let (transport, mut servers) = common::pipes();
    let (authenticator, _calls) = toy();
    let options = options(transport, authenticator).connect_timeout(std::time::Duration::MAX);
    let (client, mut wire) = connect_without_challenge(options, &mut servers).await;
    let reauth = tokio::spawn({
        let client = client.clone();
        async move { client.reauthenticate().await }
    });
    let (code, _) = next_auth(&mut wire).await;
    assert_eq!(code, AuthReasonCode::ReAuthenticate);
    wire.send(auth(AuthReasonCode::Success, "proof"))
        .await
        .unwrap();
    guard(reauth).await.unwrap().unwrap();
    assert!(client.is_connected());
    guard(client.disconnect()).await.unwrap();
}

// Every connection starts a new exchange: a reconnection's CONNECT
// carries the data of a new `start`.
#[tokio::test]
async fn each_connection_starts_a_new_exchange() {
    let (transport, mut servers) = common::pipes();
    let (authenticator, calls) = toy();
    let options = options(transport, authenticator).reconnect(Reconnect::exponential(
        std::time::Duration::from_millis(1),
        std::time::Duration::from_millis(10),
    ));
    let connecting = tokio::spawn(Client::connect(options));
    let (mut wire, connect) = accept(&mut servers).await;
    assert_eq!(
        connect.properties.authentication_data.as_deref(),
        Some(&b"hello-1"[..])
    );
    wire.send(connack(None)).await.unwrap();
    let (client, _) = guard(connecting).await.unwrap().unwrap();
    drop(wire);
    let (mut wire, connect) = accept(&mut servers).await;
    assert_eq!(connect.properties.authentication_method, method());
    assert_eq!(
        connect.properties.authentication_data.as_deref(),
        Some(&b"hello-2"[..])
    );
    wire.send(connack(None)).await.unwrap();
    // The watch went down when the first connection was lost, before the
    // second CONNECT: this waits for the second CONNACK.
    guard(client.wait_connected(true)).await.unwrap();
    assert_eq!(
        *calls.lock().unwrap(),
        ["start", "finish -", "start", "finish -"]
    );
    drop(client);
}

// Without an Authentication Method there is nothing to re-authenticate
// with, and no AUTH is sent.
// v5:MQTT-4.12.0-7
#[tokio::test]
async fn re_authentication_needs_a_method() {
    let (transport, mut servers) = common::pipes();
    let options = ConnectOptions::new("pipe", 0)
        .transport(transport)
        .reconnect(Reconnect::disabled());
    let connecting = tokio::spawn(Client::connect(options));
    let (mut wire, connect) = accept(&mut servers).await;
    assert!(connect.properties.authentication_method.is_none());
    wire.send(Packet::ConnAck(ConnAck::default()))
        .await
        .unwrap();
    let (client, _) = guard(connecting).await.unwrap().unwrap();
    let error = guard(client.reauthenticate()).await.unwrap_err();
    assert!(matches!(error, Error::InvalidOptions(_)), "{error:?}");
    assert!(client.is_connected());
}

// Enhanced authentication is MQTT 5.0 only.
#[tokio::test]
async fn enhanced_authentication_needs_mqtt_5() {
    let (authenticator, calls) = toy();
    let options = ConnectOptions::new("127.0.0.1", 1)
        .protocol_version(ProtocolVersion::V311)
        .reconnect(Reconnect::disabled())
        .authentication(METHOD, authenticator);
    let error = guard(Client::connect(options)).await.unwrap_err();
    assert!(matches!(error, Error::InvalidOptions(_)), "{error:?}");
    assert!(calls.lock().unwrap().is_empty());
}

// A CONNACK whose proof the authenticator rejects changes nothing of the
// session: no PUBREL of a resumed QoS 2 flow goes to that broker (the
// DISCONNECT is the first packet), and the genuine broker after it gets
// the QoS 1 message still in flight again, with DUP.
// MQTT-4.4.0-1
#[tokio::test]
async fn a_rejected_proof_changes_nothing_of_the_session() {
    let (transport, mut servers) = common::pipes();
    let (authenticator, _calls) = toy();
    let (client, mut wire) =
        connect_without_challenge(reconnecting(transport, authenticator), &mut servers).await;
    let qos1 = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .publish("in/flight", "q1")
                .qos(fulmar_client::QoS::AtLeastOnce)
                .await
        }
    });
    let Packet::Publish(first) = next(&mut wire).await else {
        panic!("expected PUBLISH")
    };
    let qos2 = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .publish("in/flight", "q2")
                .qos(fulmar_client::QoS::ExactlyOnce)
                .await
        }
    });
    let Packet::Publish(second) = next(&mut wire).await else {
        panic!("expected PUBLISH")
    };
    wire.send(Packet::PubRec(fulmar_codec::PubRec::new(
        second.packet_id.unwrap(),
    )))
    .await
    .unwrap();
    assert!(matches!(next(&mut wire).await, Packet::PubRel(_)));
    drop(wire);
    // An impostor resuming the session, then one discarding it: both with
    // a proof the authenticator rejects.
    for impostor in [connack_resuming("forged"), connack(Some("forged"))] {
        let (mut wire, _connect) = accept(&mut servers).await;
        wire.send(impostor).await.unwrap();
        match next(&mut wire).await {
            Packet::Disconnect(d) => {
                assert_eq!(d.reason_code, DisconnectReasonCode::UnspecifiedError);
            }
            other => panic!("the first packet after a rejected proof: {other:?}"),
        }
    }
    // The genuine broker: both flows go on where they were.
    let (mut wire, _connect) = accept(&mut servers).await;
    wire.send(connack_resuming("proof")).await.unwrap();
    let mut resent = Vec::new();
    for _ in 0..2 {
        resent.push(next(&mut wire).await);
    }
    assert!(
        resent.iter().any(|p| matches!(p, Packet::Publish(p)
            if p.dup && p.packet_id == first.packet_id)),
        "{resent:?}"
    );
    assert!(
        resent.iter().any(|p| matches!(p, Packet::PubRel(r)
            if Some(r.packet_id) == second.packet_id)),
        "{resent:?}"
    );
    wire.send(Packet::PubAck(fulmar_codec::PubAck::new(
        first.packet_id.unwrap(),
    )))
    .await
    .unwrap();
    wire.send(Packet::PubComp(fulmar_codec::PubComp::new(
        second.packet_id.unwrap(),
    )))
    .await
    .unwrap();
    guard(qos1).await.unwrap().unwrap();
    guard(qos2).await.unwrap().unwrap();
}

/// The client's DISCONNECT 0x82 Protocol Error, next on `wire`.
async fn expect_protocol_error(wire: &mut Wire) {
    match next(wire).await {
        Packet::Disconnect(d) => assert_eq!(d.reason_code, DisconnectReasonCode::ProtocolError),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
}

/// `error` is the session's [MQTT-4.12.0-5] violation.
fn assert_method_mismatch(error: &Error) {
    assert!(
        matches!(
            error,
            Error::Session(fulmar_client::SessionError::Protocol(
                fulmar_client::ProtocolViolation::AuthMethodMismatch
            ))
        ),
        "{error:?}"
    );
}

// A successful CONNACK must carry the CONNECT's method: without it the
// client does not take the connection (0x82).
// v5:MQTT-4.12.0-5 v5:MQTT-3.14.2-1
#[tokio::test]
async fn a_connack_without_the_method_is_a_protocol_error() {
    let (transport, mut servers) = common::pipes();
    let (authenticator, _calls) = toy();
    let connecting = tokio::spawn(Client::connect(options(transport, authenticator)));
    let (mut wire, _connect) = accept(&mut servers).await;
    wire.send(Packet::ConnAck(ConnAck::default()))
        .await
        .unwrap();
    expect_protocol_error(&mut wire).await;
    let error = guard(connecting).await.unwrap().unwrap_err();
    assert_method_mismatch(&error);
}

// Only the client starts a re-authentication: an AUTH from the broker
// outside one is a protocol error, not a challenge to answer.
// v5:MQTT-4.12.1-1
#[tokio::test]
async fn an_unsolicited_auth_is_a_protocol_error() {
    for reason in [
        AuthReasonCode::ContinueAuthentication,
        AuthReasonCode::Success,
    ] {
        let (client, mut wire, calls, _servers) = connected().await;
        wire.send(auth(reason, "unsolicited")).await.unwrap();
        match next(&mut wire).await {
            Packet::Disconnect(d) => {
                assert_eq!(d.reason_code, DisconnectReasonCode::ProtocolError);
            }
            other => panic!("{reason:?}: expected DISCONNECT, got {other:?}"),
        }
        guard(client.wait_connected(false)).await.unwrap();
        assert_eq!(calls.lock().unwrap().len(), 3, "{reason:?}");
    }
}

// A broker that ends a re-authentication with another method: DISCONNECT
// 0x82 (0x8C is the server's code), and the call says why.
// v5:MQTT-4.12.0-5 v5:MQTT-3.14.2-1
#[tokio::test]
async fn a_re_authentication_answered_with_another_method() {
    let (client, mut wire, _calls, _servers) = connected().await;
    let reauth = tokio::spawn({
        let client = client.clone();
        async move { client.reauthenticate().await }
    });
    let _ = next_auth(&mut wire).await;
    wire.send(Packet::Auth(Auth {
        reason_code: AuthReasonCode::Success,
        properties: AuthProperties {
            authentication_method: Some(MqttString::try_new("OTHER").unwrap()),
            ..AuthProperties::default()
        },
    }))
    .await
    .unwrap();
    expect_protocol_error(&mut wire).await;
    let error = guard(reauth).await.unwrap().unwrap_err();
    assert_method_mismatch(&error);
}

#[derive(Debug)]
struct Expired;

impl std::fmt::Display for Expired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("token expired")
    }
}

impl std::error::Error for Expired {}

/// Gives up at the first challenge with its own error type.
struct ExpiresAtChallenge;

impl Authenticator for ExpiresAtChallenge {
    fn start(&mut self) -> Result<Option<Bytes>, AuthError> {
        Ok(None)
    }

    fn challenge(&mut self, _data: Option<Bytes>) -> Result<Option<Bytes>, AuthError> {
        Err(Box::new(Expired))
    }
}

// The authenticator's own error reaches the caller of `reauthenticate`
// and `last_disconnection`, and can be downcast.
#[tokio::test]
async fn the_authenticators_error_can_be_downcast() {
    let (transport, mut servers) = common::pipes();
    let options = ConnectOptions::new("pipe", 0)
        .transport(transport)
        .reconnect(Reconnect::disabled())
        .authentication(METHOD, ExpiresAtChallenge);
    let (client, mut wire) = connect_without_challenge(options, &mut servers).await;
    let reauth = tokio::spawn({
        let client = client.clone();
        async move { client.reauthenticate().await }
    });
    let _ = next_auth(&mut wire).await;
    wire.send(auth(AuthReasonCode::ContinueAuthentication, "x"))
        .await
        .unwrap();
    let error = guard(reauth).await.unwrap().unwrap_err();
    assert!(
        matches!(&error, Error::Authentication(e) if e.downcast_ref::<Expired>().is_some()),
        "{error:?}"
    );
    guard(client.wait_connected(false)).await.unwrap();
    let last = client.last_disconnection().unwrap();
    assert!(
        matches!(&*last.error, Error::Authentication(e) if e.downcast_ref::<Expired>().is_some()),
        "{:?}",
        last.error
    );
}

// An attempt that never reaches the broker spends no exchange (a nonce,
// a one-time token): `start` runs once the transport is up.
#[tokio::test]
async fn no_exchange_starts_without_a_connection() {
    let transport = fulmar_client::Transport::custom(|| async {
        Err::<DuplexStream, _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
    });
    let (authenticator, calls) = toy();
    let error = guard(Client::connect(options(transport, authenticator)))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Io(_)), "{error:?}");
    assert!(calls.lock().unwrap().is_empty());
}

/// Refuses every final word of the broker (a strict SCRAM client wanting
/// its server-final data).
struct Strict;

impl Authenticator for Strict {
    fn start(&mut self) -> Result<Option<Bytes>, AuthError> {
        Ok(None)
    }

    fn challenge(&mut self, _data: Option<Bytes>) -> Result<Option<Bytes>, AuthError> {
        Ok(None)
    }

    fn finish(&mut self, _data: Option<Bytes>) -> Result<(), AuthError> {
        Err("no server-final data".into())
    }
}

// A CONNACK without the method is the broker's protocol error, reported as
// such (0x82), whatever the authenticator would have said of its data: it
// is not asked.
// v5:MQTT-4.12.0-5
#[tokio::test]
async fn a_connack_without_the_method_is_not_given_to_the_authenticator() {
    let (transport, mut servers) = common::pipes();
    let options = ConnectOptions::new("pipe", 0)
        .transport(transport)
        .reconnect(Reconnect::disabled())
        .authentication(METHOD, Strict);
    let connecting = tokio::spawn(Client::connect(options));
    let (mut wire, _connect) = accept(&mut servers).await;
    wire.send(Packet::ConnAck(ConnAck::default()))
        .await
        .unwrap();
    expect_protocol_error(&mut wire).await;
    let error = guard(connecting).await.unwrap().unwrap_err();
    assert_method_mismatch(&error);
}

// A client may not send the server's DISCONNECT codes: refused, and the
// connection stays.
// v5:MQTT-3.14.2-1
#[tokio::test]
async fn a_disconnect_with_a_server_only_code_is_refused() {
    let (client, _wire, _calls, _servers) = connected().await;
    let refused = client
        .disconnect_with(
            DisconnectReasonCode::NotAuthorized,
            fulmar_client::DisconnectProperties::default(),
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(Error::Session(fulmar_client::SessionError::Api(
                fulmar_client::ApiError::ServerOnlyReasonCode(DisconnectReasonCode::NotAuthorized)
            )))
        ),
        "{refused:?}"
    );
    assert!(client.is_connected());
}
