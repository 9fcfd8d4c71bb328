//! CONNECT handling, checked byte for byte on a raw TCP connection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::num::NonZeroU32;
use std::time::Duration;

use common::{Peer, addr, start, start_with};
use fulmar_broker::{AuthDecision, Authenticator, Broker, ConnectInfo};
use fulmar_codec::{ConnectReasonCode, ProtocolVersion::V5, ProtocolVersion::V311};

/// 3.1.1 CONNECT, keep alive 0, client id "c1"; `flags` 0x02 is Clean Session.
fn connect_v3(flags: u8) -> Vec<u8> {
    let mut v = vec![0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, flags];
    v.extend_from_slice(&[0x00, 0x00, 0x00, 0x02, b'c', b'1']);
    v
}

/// 5.0 CONNECT, clean start, keep alive 0, no properties, client id "c1".
const CONNECT_V5: &[u8] = &[
    0x10, 0x0f, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, b'c',
    b'1',
];

/// The 5.0 CONNACK of a default broker: Receive Maximum 64, Maximum Packet
/// Size 1 MiB, Topic Alias Maximum 16.
const CONNACK_V5: &[u8] = &[
    0x20, 0x0e, 0x00, 0x00, 0x0b, 0x21, 0x00, 0x40, 0x27, 0x00, 0x10, 0x00, 0x00, 0x22, 0x00, 0x10,
];

// v3:MQTT-3.1.4-4 v3:MQTT-3.2.2-1
#[tokio::test]
async fn v3_connack_accepts_with_return_code_zero() {
    let broker = start().await;
    let mut peer = Peer::open(addr(&broker), V311).await;
    peer.send_raw(&connect_v3(0x02)).await;
    peer.expect_raw(&[0x20, 0x02, 0x00, 0x00]).await;
    // MQTT-3.12.4-1: PINGREQ is answered with PINGRESP.
    peer.send_raw(&[0xc0, 0x00]).await;
    peer.expect_raw(&[0xd0, 0x00]).await;
    broker.shutdown().await;
}

// v5:MQTT-3.1.4-5 v5:MQTT-3.2.2-2 v5:MQTT-3.2.2-9
#[tokio::test]
async fn v5_connack_carries_the_server_limits() {
    let broker = start().await;
    let mut peer = Peer::open(addr(&broker), V5).await;
    peer.send_raw(CONNECT_V5).await;
    peer.expect_raw(CONNACK_V5).await;
    peer.send_raw(&[0xc0, 0x00]).await;
    peer.expect_raw(&[0xd0, 0x00]).await;
    broker.shutdown().await;
}

// v3:MQTT-3.1.3-8 v3:MQTT-3.2.2-4 v3:MQTT-3.2.2-5
#[tokio::test]
async fn v3_empty_client_id_without_clean_session_is_rejected() {
    let broker = start().await;
    let mut peer = Peer::open(addr(&broker), V311).await;
    let connect = [
        0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    peer.send_raw(&connect).await;
    peer.expect_raw(&[0x20, 0x02, 0x00, 0x02]).await;
    peer.expect_closed().await;
    broker.shutdown().await;
}

// v3:MQTT-3.1.3-6
#[tokio::test]
async fn v3_empty_client_id_with_clean_session_is_accepted() {
    let broker = start().await;
    let mut peer = Peer::open(addr(&broker), V311).await;
    let connect = [
        0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x00, 0x00, 0x00,
    ];
    peer.send_raw(&connect).await;
    peer.expect_raw(&[0x20, 0x02, 0x00, 0x00]).await;
    assert_eq!(broker.stats().sessions, 1);
    broker.shutdown().await;
}

// v5:MQTT-3.1.3-6 v5:MQTT-3.1.3-7 v5:MQTT-3.2.2-16
#[tokio::test]
async fn v5_empty_client_id_gets_an_assigned_identifier() {
    let broker = start().await;
    let mut peer = Peer::open(addr(&broker), V5).await;
    let connect = [
        0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    peer.send_raw(&connect).await;
    let fulmar_codec::Packet::ConnAck(ack) = peer.recv().await else {
        panic!("expected CONNACK")
    };
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    let assigned = ack.properties.assigned_client_identifier.unwrap();
    assert!(!assigned.is_empty());
    broker.shutdown().await;
}

// v3:MQTT-3.1.2-2 v3:MQTT-3.2.2-5
#[tokio::test]
async fn v3_unsupported_protocol_level_gets_return_code_1() {
    let broker = start().await;
    let mut peer = Peer::open(addr(&broker), V311).await;
    let mut connect = connect_v3(0x02);
    connect[8] = 0x03;
    peer.send_raw(&connect).await;
    peer.expect_raw(&[0x20, 0x02, 0x00, 0x01]).await;
    peer.expect_closed().await;
    // An MQTT 3.1 bridge (level 0x83, mosquitto's try_private) is answered
    // in the 3.x format too, so that it can tell why and try without.
    let mut peer = Peer::open(addr(&broker), V311).await;
    connect[8] = 0x83;
    peer.send_raw(&connect).await;
    peer.expect_raw(&[0x20, 0x02, 0x00, 0x01]).await;
    peer.expect_closed().await;
    broker.shutdown().await;
}

// v5:MQTT-3.1.2-2 v5:MQTT-3.2.2-7
#[tokio::test]
async fn v5_unsupported_protocol_version_gets_0x84() {
    let broker = start().await;
    let mut peer = Peer::open(addr(&broker), V5).await;
    let mut connect = CONNECT_V5.to_vec();
    connect[8] = 0x06;
    peer.send_raw(&connect).await;
    peer.expect_raw(&[0x20, 0x03, 0x00, 0x84, 0x00]).await;
    peer.expect_closed().await;
    broker.shutdown().await;
}

// v5:MQTT-3.1.2-3 v5:MQTT-3.1.4-1 v5:MQTT-4.13.1-1
#[tokio::test]
async fn v5_malformed_connect_is_refused_and_closed() {
    let broker = start().await;
    let mut peer = Peer::open(addr(&broker), V5).await;
    let mut connect = CONNECT_V5.to_vec();
    connect[9] = 0x03; // reserved flag set
    peer.send_raw(&connect).await;
    // The decoder cannot trust the rest of the packet: closed without CONNACK.
    peer.expect_closed().await;
    broker.shutdown().await;
}

// v3:MQTT-3.1.2-3 v3:MQTT-3.1.4-1
#[tokio::test]
async fn v3_malformed_connect_closes_without_connack() {
    let broker = start().await;
    let mut peer = Peer::open(addr(&broker), V311).await;
    peer.send_raw(&connect_v3(0x03)).await;
    peer.expect_closed().await;
    broker.shutdown().await;
}

// MQTT-3.1.0-1
#[tokio::test]
async fn first_packet_not_connect_closes() {
    let broker = start().await;
    let mut peer = Peer::open(addr(&broker), V311).await;
    peer.send_raw(&[0xc0, 0x00]).await;
    peer.expect_closed().await;
    broker.shutdown().await;
}

// v5:MQTT-3.1.0-2 v5:MQTT-4.13.1-1
#[tokio::test]
async fn v5_second_connect_is_a_protocol_error() {
    let broker = start().await;
    let mut peer = Peer::open(addr(&broker), V5).await;
    peer.send_raw(CONNECT_V5).await;
    peer.expect_raw(CONNACK_V5).await;
    peer.send_raw(CONNECT_V5).await;
    peer.expect_raw(&[0xe0, 0x01, 0x82]).await;
    peer.expect_closed().await;
    broker.shutdown().await;
}

// v3:MQTT-3.1.0-2 v3:MQTT-4.8.0-1
#[tokio::test]
async fn v3_second_connect_closes() {
    let broker = start().await;
    let mut peer = Peer::open(addr(&broker), V311).await;
    peer.send_raw(&connect_v3(0x02)).await;
    peer.expect_raw(&[0x20, 0x02, 0x00, 0x00]).await;
    peer.send_raw(&connect_v3(0x02)).await;
    peer.expect_closed().await;
    broker.shutdown().await;
}

// v5:MQTT-3.3.1-4 v5:MQTT-4.13.1-1
#[tokio::test]
async fn v5_malformed_packet_gets_disconnect_0x81() {
    let broker = start().await;
    let mut peer = Peer::open(addr(&broker), V5).await;
    peer.send_raw(CONNECT_V5).await;
    peer.expect_raw(CONNACK_V5).await;
    // PUBLISH with both QoS bits set.
    peer.send_raw(&[0x36, 0x06, 0x00, 0x01, b'a', 0x00, 0x01, 0x00])
        .await;
    peer.expect_raw(&[0xe0, 0x01, 0x81]).await;
    peer.expect_closed().await;
    broker.shutdown().await;
}

// v3:MQTT-3.3.1-4
#[tokio::test]
async fn v3_malformed_packet_closes() {
    let broker = start().await;
    let mut peer = Peer::open(addr(&broker), V311).await;
    peer.send_raw(&connect_v3(0x02)).await;
    peer.expect_raw(&[0x20, 0x02, 0x00, 0x00]).await;
    peer.send_raw(&[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01])
        .await;
    peer.expect_closed().await;
    broker.shutdown().await;
}

// v5:MQTT-3.2.2-15 v5:MQTT-4.13.1-1
#[tokio::test]
async fn v5_packet_above_maximum_packet_size_gets_disconnect_0x95() {
    let builder = Broker::builder().max_packet_size(NonZeroU32::new(64).unwrap());
    let broker = start_with(builder).await;
    let mut peer = Peer::open(addr(&broker), V5).await;
    peer.send_raw(CONNECT_V5).await;
    let fulmar_codec::Packet::ConnAck(ack) = peer.recv().await else {
        panic!("expected CONNACK")
    };
    assert_eq!(ack.properties.maximum_packet_size.unwrap().get(), 64);
    let mut publish = vec![0x30, 0x64, 0x00, 0x01, b'a', 0x00];
    publish.extend_from_slice(&[b'x'; 96]);
    peer.send_raw(&publish).await;
    peer.expect_raw(&[0xe0, 0x01, 0x95]).await;
    peer.expect_closed().await;
    broker.shutdown().await;
}

// v3:MQTT-3.1.0-1
#[tokio::test]
async fn silent_socket_is_closed_after_the_connect_timeout() {
    let builder = Broker::builder().connect_timeout(Duration::from_millis(200));
    let broker = start_with(builder).await;
    let mut peer = Peer::open(addr(&broker), V311).await;
    peer.expect_closed().await;
    broker.shutdown().await;
}

// v5:MQTT-3.1.4-3 v5:MQTT-3.2.2-2
#[tokio::test]
async fn v5_session_takeover_disconnects_the_old_connection_with_0x8e() {
    let broker = start().await;
    let mut old = Peer::open(addr(&broker), V5).await;
    old.send_raw(CONNECT_V5).await;
    old.expect_raw(CONNACK_V5).await;
    let mut new = Peer::open(addr(&broker), V5).await;
    new.send_raw(CONNECT_V5).await;
    old.expect_raw(&[0xe0, 0x01, 0x8e]).await;
    old.expect_closed().await;
    new.expect_raw(CONNACK_V5).await;
    broker.shutdown().await;
}

// v3:MQTT-3.1.4-2
#[tokio::test]
async fn v3_session_takeover_closes_the_old_connection() {
    let broker = start().await;
    let mut old = Peer::open(addr(&broker), V311).await;
    old.send_raw(&connect_v3(0x02)).await;
    old.expect_raw(&[0x20, 0x02, 0x00, 0x00]).await;
    let mut new = Peer::open(addr(&broker), V311).await;
    new.send_raw(&connect_v3(0x02)).await;
    old.expect_closed().await;
    new.expect_raw(&[0x20, 0x02, 0x00, 0x00]).await;
    broker.shutdown().await;
}

// v3:MQTT-3.2.2-5
#[tokio::test]
async fn connection_limit_refuses_with_server_unavailable() {
    let broker = start_with(Broker::builder().max_connections(1)).await;
    let mut first = Peer::open(addr(&broker), V311).await;
    first.send_raw(&connect_v3(0x02)).await;
    first.expect_raw(&[0x20, 0x02, 0x00, 0x00]).await;
    let mut second = Peer::open(addr(&broker), V311).await;
    second.send_raw(&connect_v3(0x02)).await;
    second.expect_raw(&[0x20, 0x02, 0x00, 0x03]).await;
    second.expect_closed().await;
    broker.shutdown().await;
}

/// Sessions kept after their connections (a Session Expiry Interval, or
/// 3.1.1's clean session 0) count towards `max_sessions`: a CONNECT that
/// would start one more is refused (5.0: 0x97 Quota exceeded; 3.1.1: 3
/// Server unavailable) and the connection closed, while resuming or
/// replacing a session that exists is not; a session that ends makes room.
// v5:MQTT-3.2.2-7 v5:MQTT-3.2.2-6 v3:MQTT-3.2.2-5 v3:MQTT-3.2.2-4
#[tokio::test]
async fn session_limit_refuses_new_sessions_only() {
    use fulmar_codec::{Connect, MqttString};
    let broker = start_with(Broker::builder().max_sessions(2)).await;
    let kept = |id: &'static str| {
        let mut connect = Connect::new(V5, MqttString::from(id));
        connect.properties.session_expiry_interval = Some(600);
        connect
    };
    for id in ["a", "b"] {
        let (peer, ack) = Peer::connect_with(addr(&broker), kept(id)).await;
        assert_eq!(ack.reason_code, ConnectReasonCode::Success);
        peer.disconnect().await;
    }
    common::wait_until("both away", || broker.stats().connections == 0).await;
    assert_eq!(broker.stats().sessions, 2);
    // A third session: refused, whatever the version.
    let (mut peer, ack) = Peer::connect_with(addr(&broker), kept("c")).await;
    assert_eq!(
        (ack.reason_code, ack.session_present),
        (ConnectReasonCode::QuotaExceeded, false)
    );
    peer.expect_closed().await;
    let mut v3 = Peer::open(addr(&broker), V311).await;
    v3.send_raw(&connect_v3(0x00)).await;
    v3.expect_raw(&[0x20, 0x02, 0x00, 0x03]).await;
    v3.expect_closed().await;
    // Resuming one that exists is not refused, nor replacing it.
    let mut resume = kept("a");
    resume.clean_start = false;
    let (peer, ack) = Peer::connect_with(addr(&broker), resume).await;
    assert_eq!(
        (ack.reason_code, ack.session_present),
        (ConnectReasonCode::Success, true)
    );
    peer.disconnect().await;
    let mut replace = kept("b");
    replace.properties.session_expiry_interval = Some(0);
    let (peer, ack) = Peer::connect_with(addr(&broker), replace).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    // b's session ends with this connection: room for c.
    peer.disconnect().await;
    common::wait_until("b's session ended", || broker.stats().sessions == 1).await;
    let (peer, ack) = Peer::connect_with(addr(&broker), kept("c")).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::Success);
    peer.disconnect().await;
    broker.shutdown().await;
}

// A flood of sockets over the limit costs no task: beyond 64 waiting to be
// refused, a new one is closed at once, before it sends anything.
#[tokio::test]
async fn connections_far_over_the_limit_are_closed_at_once() {
    let broker = start_with(
        Broker::builder()
            .max_connections(1)
            .connect_timeout(std::time::Duration::from_secs(600)),
    )
    .await;
    let mut first = Peer::open(addr(&broker), V311).await;
    first.send_raw(&connect_v3(0x02)).await;
    first.expect_raw(&[0x20, 0x02, 0x00, 0x00]).await;
    let mut waiting = Vec::new();
    for _ in 0..64 {
        waiting.push(Peer::open(addr(&broker), V311).await);
    }
    common::wait_until("64 waiting", || broker.stats().connections == 65).await;
    let mut flood = Peer::open(addr(&broker), V311).await;
    flood.expect_closed().await;
    // One of those waiting still gets its answer.
    let mut second = waiting.pop().unwrap();
    second.send_raw(&connect_v3(0x02)).await;
    second.expect_raw(&[0x20, 0x02, 0x00, 0x03]).await;
    broker.shutdown().await;
}

struct Password(&'static [u8]);

#[async_trait::async_trait]
impl Authenticator for Password {
    async fn authenticate(&self, connect: &ConnectInfo) -> AuthDecision {
        if connect.password.as_deref() == Some(self.0) {
            AuthDecision::Allow
        } else {
            AuthDecision::Reject(ConnectReasonCode::BadUserNameOrPassword)
        }
    }
}

// v3:MQTT-3.2.2-4 v3:MQTT-3.2.2-5 v3:MQTT-3.1.4-5
#[tokio::test]
async fn v3_authenticator_rejects_with_return_code_4() {
    let broker = start_with(Broker::builder().authenticator(Password(b"secret"))).await;
    let mut peer = Peer::open(addr(&broker), V311).await;
    peer.send_raw(&connect_v3(0x02)).await;
    peer.expect_raw(&[0x20, 0x02, 0x00, 0x04]).await;
    peer.expect_closed().await;

    // With user name "u" and password "secret".
    let mut peer = Peer::open(addr(&broker), V311).await;
    let mut connect = vec![0x10, 0x19, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xc2];
    connect.extend_from_slice(&[0x00, 0x00, 0x00, 0x02, b'c', b'1', 0x00, 0x01, b'u']);
    connect.extend_from_slice(&[0x00, 0x06, b's', b'e', b'c', b'r', b'e', b't']);
    peer.send_raw(&connect).await;
    peer.expect_raw(&[0x20, 0x02, 0x00, 0x00]).await;
    broker.shutdown().await;
}

// v5:MQTT-3.1.4-2 v5:MQTT-3.2.2-6 v5:MQTT-3.2.2-7
#[tokio::test]
async fn v5_authenticator_rejects_with_its_reason_code() {
    let broker = start_with(Broker::builder().authenticator(Password(b"secret"))).await;
    let mut peer = Peer::open(addr(&broker), V5).await;
    peer.send_raw(CONNECT_V5).await;
    peer.expect_raw(&[0x20, 0x03, 0x00, 0x86, 0x00]).await;
    peer.expect_closed().await;
    broker.shutdown().await;
}

// v5:MQTT-4.12.0-1
#[tokio::test]
async fn v5_unknown_authentication_method_is_refused() {
    let broker = start().await;
    let mut peer = Peer::open(addr(&broker), V5).await;
    // Properties: Authentication Method (0x15) "x".
    let connect = [
        0x10, 0x13, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x00, 0x04, 0x15, 0x00,
        0x01, b'x', 0x00, 0x02, b'c', b'1',
    ];
    peer.send_raw(&connect).await;
    peer.expect_raw(&[0x20, 0x03, 0x00, 0x8c, 0x00]).await;
    peer.expect_closed().await;
    broker.shutdown().await;
}

// v5:MQTT-3.1.2-22
#[tokio::test]
async fn shutdown_disconnects_v5_clients_with_0x8b() {
    let broker = start().await;
    let mut peer = Peer::open(addr(&broker), V5).await;
    peer.send_raw(CONNECT_V5).await;
    peer.expect_raw(CONNACK_V5).await;
    broker.shutdown().await;
    peer.expect_raw(&[0xe0, 0x01, 0x8b]).await;
    peer.expect_closed().await;
    assert!(matches!(
        broker.publish("a", "x", fulmar_codec::QoS::AtMostOnce, false),
        Err(fulmar_broker::BrokerError::Shutdown)
    ));
}

struct RejectIds;

#[async_trait::async_trait]
impl Authenticator for RejectIds {
    async fn authenticate(&self, connect: &ConnectInfo) -> AuthDecision {
        if connect.client_id.starts_with('c') {
            AuthDecision::Reject(ConnectReasonCode::ClientIdentifierNotValid)
        } else {
            AuthDecision::Allow
        }
    }
}

// v3:MQTT-3.1.3-9 v5:MQTT-3.1.3-8 v3:MQTT-3.2.2-4 v5:MQTT-3.2.2-6
#[tokio::test]
async fn rejected_client_identifier_gets_identifier_rejected() {
    let broker = start_with(Broker::builder().authenticator(RejectIds)).await;
    let mut peer = Peer::open(addr(&broker), V311).await;
    peer.send_raw(&connect_v3(0x02)).await;
    peer.expect_raw(&[0x20, 0x02, 0x00, 0x02]).await;
    peer.expect_closed().await;
    let mut peer = Peer::open(addr(&broker), V5).await;
    peer.send_raw(CONNECT_V5).await;
    peer.expect_raw(&[0x20, 0x03, 0x00, 0x85, 0x00]).await;
    peer.expect_closed().await;
    broker.shutdown().await;
}

/// Never decides.
struct Stuck;

#[async_trait::async_trait]
impl Authenticator for Stuck {
    async fn authenticate(&self, _connect: &ConnectInfo) -> AuthDecision {
        std::future::pending().await
    }
}

// An authenticator that does not decide within connect_timeout does not hold
// the connection: CONNACK 0x88 Server unavailable (3.1.1: return code 3),
// closed, and no longer counted.
#[tokio::test]
async fn an_authenticator_that_never_decides_is_cut_off_at_the_connect_timeout() {
    let broker = start_with(
        Broker::builder()
            .authenticator(Stuck)
            .connect_timeout(Duration::from_millis(300)),
    )
    .await;
    let mut peer = Peer::open(addr(&broker), V5).await;
    peer.send_raw(CONNECT_V5).await;
    peer.expect_raw(&[0x20, 0x03, 0x00, 0x88, 0x00]).await;
    peer.expect_closed().await;
    let mut peer = Peer::open(addr(&broker), V311).await;
    peer.send_raw(&connect_v3(0x02)).await;
    peer.expect_raw(&[0x20, 0x02, 0x00, 0x03]).await;
    peer.expect_closed().await;
    common::wait_until("no connection left", || broker.stats().connections == 0).await;
    broker.shutdown().await;
}

// v5:MQTT-3.1.2-28 v5:MQTT-3.1.2-29
#[tokio::test]
async fn v5_no_response_information_and_no_reason_strings_when_not_requested() {
    let broker = start().await;
    let mut connect = fulmar_codec::Connect::new(V5, "quiet".into());
    connect.properties.request_response_information = Some(false);
    connect.properties.request_problem_information = Some(false);
    let (mut peer, ack) = Peer::connect_with(addr(&broker), connect).await;
    assert!(ack.properties.response_information.is_none());
    assert!(ack.properties.reason_string.is_none());
    let ack = peer
        .subscribe(
            1,
            "bad/#/filter",
            fulmar_codec::SubscriptionOptions::default(),
        )
        .await;
    assert!(ack.reason_codes[0].is_error());
    assert!(ack.properties.reason_string.is_none());
    assert!(ack.properties.user_properties.is_empty());
    broker.shutdown().await;
}

// v5:MQTT-3.1.4-3 v3:MQTT-3.1.4-2
#[tokio::test]
async fn concurrent_connects_with_one_client_id_leave_one_holder() {
    let broker = start().await;
    let mut peers = Vec::new();
    for _ in 0..4 {
        let mut peer = Peer::open(addr(&broker), V311).await;
        peer.send_raw(&connect_v3(0x02)).await;
        peers.push(peer);
    }
    // Each CONNACK is either followed by a close (taken over) or not; in the
    // end exactly one connection is open and it gets the messages.
    let mut sub = Vec::new();
    for mut peer in peers {
        peer.expect_raw(&[0x20, 0x02, 0x00, 0x00]).await;
        sub.push(peer);
    }
    let mut open = None;
    for (i, peer) in sub.iter_mut().enumerate() {
        // PINGREQ: an open connection answers, a taken-over one is closed.
        peer.send_raw(&[0xc0, 0x00]).await;
        let mut byte = [0u8; 2];
        use tokio::io::AsyncReadExt;
        let n = tokio::time::timeout(common::GUARD, peer.stream.read(&mut byte))
            .await
            .unwrap()
            .unwrap_or(0);
        if n > 0 {
            assert!(
                open.replace(i).is_none(),
                "two connections hold the session"
            );
        }
    }
    assert!(open.is_some());
    assert_eq!(broker.stats().sessions, 1);
    broker.shutdown().await;
}

// v5:MQTT-3.1.2-2 v5:MQTT-3.2.2-7
#[tokio::test]
async fn v5_unsupported_version_with_a_malformed_rest_still_gets_0x84() {
    let broker = start().await;
    let mut peer = Peer::open(addr(&broker), V5).await;
    let mut connect = CONNECT_V5.to_vec();
    connect[8] = 0x06;
    connect[9] = 0x03; // reserved flag set too
    connect.truncate(14); // and the payload cut short
    connect[1] = 12;
    peer.send_raw(&connect).await;
    peer.expect_raw(&[0x20, 0x03, 0x00, 0x84, 0x00]).await;
    peer.expect_closed().await;
    broker.shutdown().await;
}

// v3:MQTT-3.1.2-2 v3:MQTT-3.2.2-5
#[tokio::test]
async fn v3_unsupported_level_with_a_malformed_rest_still_gets_return_code_1() {
    let broker = start().await;
    let mut peer = Peer::open(addr(&broker), V311).await;
    let mut connect = connect_v3(0x03);
    connect[8] = 0x03;
    peer.send_raw(&connect).await;
    peer.expect_raw(&[0x20, 0x02, 0x00, 0x01]).await;
    peer.expect_closed().await;
    broker.shutdown().await;
}
