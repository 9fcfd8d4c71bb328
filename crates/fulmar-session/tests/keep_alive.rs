//! Keep alive in both roles around the edges: a late PINGRESP, the time
//! before CONNACK, the enhanced authentication exchange; and packets other
//! than PUBLISH that do not fit the peer's Maximum Packet Size.

mod common;

use std::num::NonZeroU32;
use std::time::Instant;

use common::*;
use fulmar_codec::{
    AckProperties, Auth, AuthReasonCode, ConnAck, ConnAckProperties, Connect, ConnectReasonCode,
    DisconnectReasonCode, MqttString, Packet, ProtocolVersion, SubAckReasonCode, Subscribe,
    SubscribeProperties, SubscriptionOptions,
};
use fulmar_session::{Config, Error, Event, LimitExceeded, Session};

fn client_connected(t: Instant, keep_alive: u16, version: ProtocolVersion) -> Session {
    let mut connect = Connect::new(version, MqttString::from("c"));
    connect.keep_alive = keep_alive;
    connected_client(
        Config::default(),
        connect,
        ConnAck::new(false, ConnectReasonCode::Success),
        t,
    )
}

/// Whether the client sends anything between `from` and `to` seconds.
fn sends_between(c: &mut Session, t: Instant, from: u64, to: u64) -> Option<(u64, Vec<Packet>)> {
    (from..=to).find_map(|s| {
        c.handle_timeout(t + secs(s));
        let out = drain(c);
        (!out.is_empty()).then_some((s, out))
    })
}

// MQTT-3.1.2-23: a PINGRESP that comes more than one keep alive after its
// PINGREQ (within the ping timeout) must not end the client's pings: an
// idle client went silent for good and the server dropped it.
#[test]
fn a_late_pingresp_does_not_stop_the_keep_alive() {
    let t = t0();
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut c = client_connected(t, 5, version); // ping timeout 10 s
        c.handle_timeout(t + secs(5));
        assert_eq!(drain(&mut c), vec![Packet::PingReq]);
        // One keep alive later, still no PINGRESP: the client keeps the
        // connection alive with another PINGREQ.
        c.handle_timeout(t + secs(10));
        assert_eq!(drain(&mut c), vec![Packet::PingReq], "{version:?}");
        c.handle_packet(Packet::PingResp, t + secs(11)).unwrap();
        assert!(c.poll_timeout().is_some(), "{version:?}: no timer left");
        let sent = sends_between(&mut c, t, 12, 20);
        assert_eq!(sent, Some((15, vec![Packet::PingReq])), "{version:?}");
        // The ping timeout counts from the first unanswered PINGREQ, not
        // from the last: no answer to the PINGREQ of 15 s ends it at 25 s.
        c.handle_timeout(t + secs(20));
        assert_eq!(drain(&mut c), vec![Packet::PingReq]);
        c.handle_timeout(t + secs(24));
        assert!(!c.is_closed());
        c.handle_timeout(t + secs(25));
        drain(&mut c);
        assert!(c.is_closed(), "{version:?}");
        assert_eq!(c.error(), Some(&Error::KeepAliveTimeout));
    }
}

// MQTT-3.1.2-23: the first keep alive period counts from the CONNECT, the
// last packet the client sent, not from the CONNACK.
#[test]
fn the_first_keep_alive_counts_from_the_connect() {
    let t = t0();
    let mut c = Session::client(Config::default());
    let mut connect = Connect::new(ProtocolVersion::V5, MqttString::from("c"));
    connect.keep_alive = 10;
    c.connect(connect, t).unwrap();
    assert!(matches!(drain(&mut c).as_slice(), [Packet::Connect(_)]));
    let connack = ConnAck::new(false, ConnectReasonCode::Success);
    c.handle_packet(Packet::ConnAck(connack), t + secs(8))
        .unwrap();
    assert_eq!(c.poll_timeout(), Some(t + secs(10)));
    assert_eq!(
        sends_between(&mut c, t, 9, 10),
        Some((10, vec![Packet::PingReq]))
    );

    // A CONNACK later than one keep alive: a PINGREQ at once.
    let mut c = Session::client(Config::default());
    let mut connect = Connect::new(ProtocolVersion::V311, MqttString::from("c"));
    connect.keep_alive = 5;
    c.connect(connect, t).unwrap();
    drain(&mut c);
    c.handle_timeout(t + secs(5));
    assert!(drain(&mut c).is_empty(), "no PINGREQ before CONNACK");
    let connack = ConnAck::new(false, ConnectReasonCode::Success);
    c.handle_packet(Packet::ConnAck(connack), t + secs(7))
        .unwrap();
    assert!(c.poll_timeout().is_some_and(|at| at <= t + secs(7)));
    c.handle_timeout(t + secs(7));
    assert_eq!(drain(&mut c), vec![Packet::PingReq]);
}

// v5:MQTT-3.2.2-21: a Server Keep Alive replaces the client's value, counted
// from the CONNACK.
#[test]
fn a_server_keep_alive_counts_from_the_connack() {
    let t = t0();
    let mut c = Session::client(Config::default());
    let mut connect = Connect::new(ProtocolVersion::V5, MqttString::from("c"));
    connect.keep_alive = 10;
    c.connect(connect, t).unwrap();
    drain(&mut c);
    let mut connack = ConnAck::new(false, ConnectReasonCode::Success);
    connack.properties.server_keep_alive = Some(30);
    c.handle_packet(Packet::ConnAck(connack), t + secs(2))
        .unwrap();
    assert_eq!(
        sends_between(&mut c, t, 3, 40),
        Some((32, vec![Packet::PingReq]))
    );
}

// v5:MQTT-3.14.2-1 (the reason code table): 0x8D Keep Alive timeout is sent
// by a server only; a client whose PINGRESP does not come sends 0x80.
#[test]
fn a_client_whose_pingresp_is_late_does_not_send_a_server_reason_code() {
    let t = t0();
    let mut c = client_connected(t, 30, ProtocolVersion::V5);
    c.handle_timeout(t + secs(30));
    assert_eq!(drain(&mut c), vec![Packet::PingReq]);
    c.handle_timeout(t + secs(40));
    let out = drain(&mut c);
    assert!(
        matches!(out.as_slice(), [Packet::Disconnect(d)]
            if d.reason_code == DisconnectReasonCode::UnspecifiedError),
        "{out:?}"
    );
    assert_eq!(c.error(), Some(&Error::KeepAliveTimeout));
}

// MQTT-3.1.2-22 (v5) / v3:MQTT-3.1.2-24: the server closes only when nothing
// came for 1.5 times the keep alive; AUTH packets of the exchange before
// CONNACK count.
#[test]
fn auth_packets_before_connack_keep_the_connection_alive() {
    let t = t0();
    let mut s = Session::server(Config::default(), t);
    let mut connect = Connect::new(ProtocolVersion::V5, MqttString::from("c"));
    connect.keep_alive = 10;
    connect.properties.authentication_method = Some(MqttString::from("SCRAM"));
    s.handle_packet(Packet::Connect(Box::new(connect)), t)
        .unwrap();
    events(&mut s);
    let challenge = || Auth {
        reason_code: AuthReasonCode::ContinueAuthentication,
        ..Auth::default()
    };
    s.auth(challenge()).unwrap();
    drain(&mut s);
    let mut answer = challenge();
    answer.properties.authentication_method = Some(MqttString::from("SCRAM"));
    for k in 1..=4 {
        let now = t + secs(9 * k);
        s.handle_timeout(now);
        assert!(!s.is_closed(), "closed at {} s: {:?}", 9 * k, s.error());
        s.handle_packet(Packet::Auth(answer.clone()), now).unwrap();
        events(&mut s);
        s.auth(challenge()).unwrap();
        drain(&mut s);
    }
    // Then silence: closed 15 s after the last AUTH.
    s.handle_timeout(t + secs(36 + 14));
    assert!(!s.is_closed());
    s.handle_timeout(t + secs(36 + 15));
    assert!(s.is_closed());
}

// MQTT-3.1.2-24: the server never sends a packet over the client's Maximum
// Packet Size. A SUBACK cannot be trimmed: the connection ends with
// DISCONNECT 0x95 instead.
#[test]
fn a_suback_over_the_clients_maximum_ends_the_connection() {
    let t = t0();
    let mut connect = Connect::new(ProtocolVersion::V5, MqttString::from("c"));
    connect.properties.maximum_packet_size = NonZeroU32::new(20);
    let mut s = connected_server(Config::default(), connect, t);
    drain(&mut s);
    let filters = (0..30)
        .map(|i| {
            (
                MqttString::try_new(&format!("{}", i % 10)).unwrap(),
                SubscriptionOptions::default(),
            )
        })
        .collect();
    let subscribe = Subscribe {
        packet_id: id(1),
        filters,
        properties: SubscribeProperties::default(),
    };
    s.handle_packet(Packet::Subscribe(subscribe), t).unwrap();
    events(&mut s);
    s.suback(
        id(1),
        vec![SubAckReasonCode::GrantedQoS0; 30],
        AckProperties::default(),
    )
    .unwrap();
    let out = drain(&mut s);
    for p in &out {
        let len = p.encoded_len(ProtocolVersion::V5).unwrap();
        assert!(len <= 20, "a {len}-byte {:?} was sent", p.packet_type());
    }
    assert!(
        matches!(out.as_slice(), [Packet::Disconnect(d)]
            if d.reason_code == DisconnectReasonCode::PacketTooLarge),
        "{out:?}"
    );
    assert!(s.is_closed());
    assert!(matches!(
        s.error(),
        Some(Error::Limit(LimitExceeded::PacketTooLarge { max: 20, .. }))
    ));
    let closed = events(&mut s);
    assert!(
        closed
            .iter()
            .any(|e| matches!(e, Event::Disconnected { .. })),
        "{closed:?}"
    );
}

// MQTT-3.1.2-24: a CONNACK that does not fit even without its reason string
// and user properties is not sent; the connection is refused with a bare
// CONNACK 0x95 Packet too large instead (5 bytes: a differential test against
// mosquitto found the client got no reason at all), or closed without one
// when even that does not fit (a DISCONNECT cannot come before the CONNACK).
#[test]
fn a_connack_over_the_clients_maximum_is_not_sent() {
    for (max, refused) in [(12, true), (4, false)] {
        a_connack_over(max, refused);
    }
}

#[allow(clippy::unwrap_used)] // a test helper
fn a_connack_over(max: u32, refused: bool) {
    let t = t0();
    let mut s = Session::server(Config::default(), t);
    let mut connect = Connect::new(ProtocolVersion::V5, MqttString::from(""));
    connect.properties.maximum_packet_size = NonZeroU32::new(max);
    s.handle_packet(Packet::Connect(Box::new(connect)), t)
        .unwrap();
    events(&mut s);
    let properties = ConnAckProperties {
        assigned_client_identifier: Some(MqttString::from("a-rather-long-assigned-id")),
        ..ConnAckProperties::default()
    };
    s.accept(properties, None, t).unwrap();
    let expected = if refused {
        vec![Packet::ConnAck(ConnAck::new(
            false,
            ConnectReasonCode::PacketTooLarge,
        ))]
    } else {
        vec![]
    };
    assert_eq!(drain(&mut s), expected, "maximum {max}");
    assert!(s.is_closed());
}

// A DISCONNECT whose properties do not fit the peer's Maximum Packet Size
// goes without them, and the session is closed once it is out (it stayed
// closing for good, with every timer stopped).
#[test]
fn a_disconnect_sent_without_its_properties_still_closes() {
    let t = t0();
    let mut client = Session::client(Config::default());
    let mut connect = Connect::new(ProtocolVersion::V5, MqttString::from("c"));
    connect.properties.session_expiry_interval = Some(10);
    client.connect(connect, t).unwrap();
    drain(&mut client);
    let mut connack = ConnAck::new(false, ConnectReasonCode::Success);
    connack.properties.maximum_packet_size = NonZeroU32::new(6);
    client.handle_packet(Packet::ConnAck(connack), t).unwrap();
    events(&mut client);
    let properties = fulmar_codec::DisconnectProperties {
        session_expiry_interval: Some(20),
        ..Default::default()
    };
    client
        .disconnect(DisconnectReasonCode::NormalDisconnection, properties, t)
        .unwrap();
    let out = drain(&mut client);
    assert!(
        matches!(out.as_slice(), [Packet::Disconnect(d)]
            if d.properties == fulmar_codec::DisconnectProperties::default()),
        "{out:?}"
    );
    assert!(client.is_closed());
}
