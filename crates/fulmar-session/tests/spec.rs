//! More session rules of chapters 3 and 4: malformed fixed headers reported by
//! the decoder, DISCONNECT rules, enhanced authentication gates, forwarding
//! properties unaltered.

mod common;

use std::num::NonZeroU32;

use bytes::{Bytes, BytesMut};
use common::*;
use fulmar_codec::{
    Auth, AuthReasonCode, ConnAck, ConnAckProperties, ConnectReasonCode, Disconnect,
    DisconnectProperties, DisconnectReasonCode, MqttString, Packet, PayloadFormat, ProtocolVersion,
    QoS,
};
use fulmar_session::{ApiError, Config, Error, Event, Session};

const BOTH: [ProtocolVersion; 2] = [ProtocolVersion::V311, ProtocolVersion::V5];

/// Feeds raw bytes to the decoder; the error goes to the session.
fn feed_malformed(session: &mut Session, bytes: &[u8], version: ProtocolVersion) -> Vec<Packet> {
    let mut buf = BytesMut::from(bytes);
    let Err(err) = fulmar_codec::decode(&mut buf, version, u32::MAX) else {
        panic!("{bytes:?} decoded")
    };
    session.handle_decode_error(&err, t0());
    drain(session)
}

#[test]
fn malformed_fixed_headers_close_the_connection() {
    // MQTT-3.3.1-4 MQTT-3.6.1-1 MQTT-3.14.1-1 v5:MQTT-4.13.1-1 v3:MQTT-4.8.0-1
    let cases: [&[u8]; 3] = [
        // PUBLISH with both QoS bits set.
        &[0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01],
        // PUBREL with flags 0000 instead of 0010.
        &[0x60, 0x02, 0x00, 0x01],
        // DISCONNECT with a reserved bit set.
        &[0xE1, 0x00],
    ];
    for version in BOTH {
        for bytes in cases {
            let mut server =
                connected_server(Config::default(), connect_packet(version, "c", true), t0());
            let out = feed_malformed(&mut server, bytes, version);
            match version {
                ProtocolVersion::V5 => {
                    assert_eq!(
                        out,
                        vec![Packet::Disconnect(Disconnect::new(
                            DisconnectReasonCode::MalformedPacket
                        ))]
                    );
                }
                ProtocolVersion::V31 | ProtocolVersion::V311 => {
                    assert!(out.is_empty(), "3.1.1 just closes")
                }
            }
            assert!(server.is_closed());
            // The client side closes the same way.
            let mut client = connected_client(
                Config::default(),
                connect_packet(version, "c", true),
                ConnAck::new(false, ConnectReasonCode::Success),
                t0(),
            );
            let out = feed_malformed(&mut client, bytes, version);
            assert_eq!(out.len(), usize::from(version == ProtocolVersion::V5));
            assert!(client.is_closed());
        }
    }
}

/// What a client sends when the codec reports a PUBLISH of `qos` (Packet
/// Identifier 5) over its maximum packet size, or `invalid` (with a
/// wildcard in its Response Topic); it closes. With manual acks,
/// a message before it waits for the application.
fn after_refused_publish(
    version: ProtocolVersion,
    qos: QoS,
    config: Config,
    invalid: bool,
) -> Vec<Packet> {
    let config_manual_acks = config.manual_acks;
    let mut client = connected_client(
        config,
        connect_packet(version, "c", false),
        ConnAck::new(false, ConnectReasonCode::Success),
        t0(),
    );
    if config_manual_acks {
        // A QoS 1 message before it waits for the application.
        let first = wire(incoming("a/b", QoS::AtLeastOnce, Some(4), b"x"), version);
        assert!(client.handle_packet(first, t0()).is_ok());
        assert!(drain(&mut client).is_empty());
    }
    let packet_id = (qos != QoS::AtMostOnce).then(|| id(5));
    if invalid {
        let err = fulmar_codec::DecodeError::ResponseTopicWildcard;
        client.handle_invalid_publish(&err, qos, packet_id, t0());
    } else {
        let err = fulmar_codec::DecodeError::PublishTooLarge {
            size: 2000,
            max: 1000,
            qos,
            packet_id,
        };
        client.handle_decode_error(&err, t0());
    }
    let out = drain(&mut client);
    assert!(client.is_closed());
    out
}

// A 3.1.1 server cannot know the client's maximum packet size: a client that
// drops a message over it acknowledges it before closing, so that the server
// does not send it again on every connection (v3:MQTT-4.3.2-2
// v3:MQTT-4.3.3-2; the 5.0 server discards it and completes its flow,
// v5:MQTT-3.1.2-25). Under 5.0 the server knew the limit: only DISCONNECT
// 0x95. Not ahead of an earlier message the application has not
// acknowledged (v3:MQTT-4.6.0-2).
#[test]
fn a_client_acknowledges_a_publish_it_drops_for_its_size_under_v3() {
    for version in [ProtocolVersion::V31, ProtocolVersion::V311] {
        let out = after_refused_publish(version, QoS::AtLeastOnce, Config::default(), false);
        assert!(
            matches!(out.as_slice(), [Packet::PubAck(ack)] if ack.packet_id == id(5)),
            "{out:?}"
        );
        let out = after_refused_publish(version, QoS::ExactlyOnce, Config::default(), false);
        assert!(
            matches!(out.as_slice(), [Packet::PubRec(rec)] if rec.packet_id == id(5)),
            "{out:?}"
        );
        let out = after_refused_publish(version, QoS::AtMostOnce, Config::default(), false);
        assert!(out.is_empty(), "{out:?}");
        let manual = Config {
            manual_acks: true,
            ..Config::default()
        };
        let out = after_refused_publish(version, QoS::AtLeastOnce, manual, false);
        assert!(out.is_empty(), "{out:?}");
    }
    let out = after_refused_publish(
        ProtocolVersion::V5,
        QoS::AtLeastOnce,
        Config::default(),
        false,
    );
    assert!(
        matches!(
            out.as_slice(),
            [Packet::Disconnect(d)] if d.reason_code == DisconnectReasonCode::PacketTooLarge
        ),
        "{out:?}"
    );
}

// A PUBLISH the client refuses although its framing is sound (a Response
// Topic with a wildcard, v5:MQTT-3.3.2-14, that the server forwarded
// unaltered, v5:MQTT-3.3.2-15) is acknowledged before the connection closes,
// with a failure code under 5.0 (section 4.13.2), so that the server does
// not send it again on every connection (v5:MQTT-4.3.2-4 v5:MQTT-4.3.3-8).
#[test]
fn a_client_acknowledges_a_publish_it_refuses_before_closing() {
    let out = after_refused_publish(
        ProtocolVersion::V5,
        QoS::AtLeastOnce,
        Config::default(),
        true,
    );
    assert!(
        matches!(
            out.as_slice(),
            [Packet::PubAck(ack), Packet::Disconnect(_)]
                if ack.packet_id == id(5) && ack.reason_code.as_u8() == 0x80
        ),
        "{out:?}"
    );
    let out = after_refused_publish(
        ProtocolVersion::V5,
        QoS::ExactlyOnce,
        Config::default(),
        true,
    );
    assert!(
        matches!(
            out.as_slice(),
            [Packet::PubRec(rec), Packet::Disconnect(_)]
                if rec.packet_id == id(5) && rec.reason_code.as_u8() == 0x80
        ),
        "{out:?}"
    );
    let out = after_refused_publish(
        ProtocolVersion::V311,
        QoS::AtLeastOnce,
        Config::default(),
        true,
    );
    assert!(
        matches!(out.as_slice(), [Packet::PubAck(ack)] if ack.packet_id == id(5)),
        "{out:?}"
    );
    let manual = Config {
        manual_acks: true,
        ..Config::default()
    };
    let out = after_refused_publish(ProtocolVersion::V5, QoS::AtLeastOnce, manual, true);
    assert!(matches!(out.as_slice(), [Packet::Disconnect(_)]), "{out:?}");
}

#[test]
fn connect_with_the_reserved_flag_is_refused_without_connack() {
    // MQTT-3.1.2-3 v5:MQTT-3.1.4-1 v3:MQTT-3.1.4-1
    for version in BOTH {
        let mut server = Session::server(Config::default(), t0());
        let bytes = [
            0x10,
            0x0D,
            0x00,
            0x04,
            b'M',
            b'Q',
            b'T',
            b'T',
            version.level(),
            0x03,
            0x00,
            0x3C,
            0x00,
            0x00,
            0x00,
        ];
        let len = if version == ProtocolVersion::V5 {
            15
        } else {
            14
        };
        let mut bytes = bytes[..len].to_vec();
        bytes[1] = u8::try_from(len - 2).unwrap();
        let err =
            fulmar_codec::decode(&mut BytesMut::from(&bytes[..]), version, u32::MAX).unwrap_err();
        assert_eq!(err, fulmar_codec::DecodeError::ConnectReservedFlag);
        let out = feed_malformed(&mut server, &bytes, version);
        assert!(out.is_empty(), "{out:?}");
        assert!(server.is_closed());
        assert!(
            events(&mut server)
                .iter()
                .all(|e| !matches!(e, Event::Connect(_)))
        );
    }
}

#[test]
fn no_disconnect_from_a_server_before_a_successful_connack() {
    // v5:MQTT-3.14.0-1
    let now = t0();
    let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
    connect.keep_alive = 2;
    let mut server = connect_received(connect, now);
    assert!(
        server
            .disconnect(
                DisconnectReasonCode::AdministrativeAction,
                Default::default(),
                now
            )
            .is_err()
    );
    // The broker never answers; the keep alive expires before any CONNACK.
    server.handle_timeout(now + secs(3));
    assert_eq!(server.error(), Some(&Error::KeepAliveTimeout));
    assert!(
        drain(&mut server).is_empty(),
        "no DISCONNECT before CONNACK"
    );
    assert!(server.is_closed());
}

#[test]
fn server_disconnect_never_carries_a_session_expiry_interval() {
    // v5:MQTT-3.14.2-2 v5:MQTT-3.14.2-3 v5:MQTT-3.14.2-4
    let now = t0();
    let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
    connect.properties.maximum_packet_size = NonZeroU32::new(30);
    let mut server = connected_server(Config::default(), connect, now);
    let long = MqttString::try_new(&"x".repeat(64)).unwrap();
    let props = DisconnectProperties {
        session_expiry_interval: Some(60),
        reason_string: Some(long.clone()),
        user_properties: vec![(long.clone(), long)],
        server_reference: None,
    };
    server
        .disconnect(DisconnectReasonCode::ServerShuttingDown, props, now)
        .unwrap();
    let out = drain(&mut server);
    let [Packet::Disconnect(d)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(d.reason_code, DisconnectReasonCode::ServerShuttingDown);
    assert!(
        d.properties.is_empty(),
        "expiry removed, reason string and user properties trimmed to fit"
    );
    assert!(out[0].encoded_len(ProtocolVersion::V5).unwrap() <= 30);
}

#[test]
fn auth_only_with_an_authentication_method() {
    // v5:MQTT-4.12.0-6 v5:MQTT-4.12.0-7 v5:MQTT-4.12.0-2 v5:MQTT-4.12.0-3
    let now = t0();
    let continue_auth = || Auth {
        reason_code: AuthReasonCode::ContinueAuthentication,
        ..Auth::default()
    };
    // Without a method: neither side may send AUTH, and receiving one is an error.
    let mut server = connected_server(
        Config::default(),
        connect_packet(ProtocolVersion::V5, "c", true),
        now,
    );
    assert!(server.auth(continue_auth()).is_err());
    assert!(
        server
            .handle_packet(Packet::Auth(continue_auth()), now)
            .is_err()
    );
    assert_eq!(
        drain(&mut server),
        vec![Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::ProtocolError
        ))]
    );
    let mut client = Session::client(Config::default());
    client
        .connect(connect_packet(ProtocolVersion::V5, "c", true), now)
        .unwrap();
    assert!(client.auth(continue_auth()).is_err());

    // With a method: the exchange goes both ways before the CONNACK.
    let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
    connect.properties.authentication_method = Some(MqttString::from("SCRAM-SHA-1"));
    let mut client = Session::client(Config::default());
    client.connect(connect, now).unwrap();
    let mut server = Session::server(Config::default(), now);
    for p in drain(&mut client) {
        server
            .handle_packet(wire(p, ProtocolVersion::V5), now)
            .unwrap();
    }
    assert!(matches!(
        events(&mut server).as_slice(),
        [Event::Connect(_)]
    ));
    server.auth(continue_auth()).unwrap();
    for p in drain(&mut server) {
        client
            .handle_packet(wire(p, ProtocolVersion::V5), now)
            .unwrap();
    }
    assert!(
        matches!(events(&mut client).as_slice(), [Event::Auth(a)] if a.reason_code == AuthReasonCode::ContinueAuthentication)
    );
    client.auth(continue_auth()).unwrap();
    for p in drain(&mut client) {
        server
            .handle_packet(wire(p, ProtocolVersion::V5), now)
            .unwrap();
    }
    assert!(
        matches!(events(&mut server).as_slice(), [Event::Auth(_)]),
        "reported before the accept, which it decides"
    );
    server
        .accept(ConnAckProperties::default(), None, now)
        .unwrap();
    for p in drain(&mut server) {
        client
            .handle_packet(wire(p, ProtocolVersion::V5), now)
            .unwrap();
    }
    assert!(client.is_connected());
}

#[test]
fn forwarded_properties_are_sent_unaltered() {
    // v5:MQTT-3.3.2-4 v5:MQTT-3.3.2-15 v5:MQTT-3.3.2-16 v5:MQTT-3.3.2-17 v5:MQTT-3.3.2-18 v5:MQTT-3.3.2-20
    let mut pair = Pair::new(ProtocolVersion::V5);
    pair.connect(true);
    let mut p = publish("req", QoS::AtLeastOnce, b"{}");
    p.properties.payload_format_indicator = Some(PayloadFormat::Utf8);
    p.properties.response_topic = Some(MqttString::from("resp/1"));
    p.properties.correlation_data = Some(Bytes::from_static(b"\x01\x02"));
    p.properties.content_type = Some(MqttString::from("application/json"));
    p.properties.user_properties = vec![
        (MqttString::from("z"), MqttString::from("1")),
        (MqttString::from("a"), MqttString::from("2")),
        (MqttString::from("z"), MqttString::from("3")),
    ];
    p.properties.subscription_identifiers = vec![NonZeroU32::new(7).unwrap()];
    pair.server.publish(p.clone(), pair.now).unwrap();
    pair.drive();
    let got = messages(&pair.take_client_events());
    let [m] = got.as_slice() else {
        panic!("{got:?}")
    };
    assert_eq!(
        m.properties, p.properties,
        "every property as given, user properties in order"
    );
    assert_eq!(m.payload, p.payload);
}

// (no spec statement; MQTT 5.0 section 3.3.2.3.2: with Payload Format
// Indicator 1 "the UTF-8 data in the Payload MUST be well-formed UTF-8")
// A client refuses to send a payload marked UTF-8 that is not; it sent it as
// is. Under 3.1.1 no property is sent: the payload is bytes. A server
// forwards what it received unaltered (v5:MQTT-3.3.2-4).
#[test]
fn a_client_refuses_a_payload_marked_utf8_that_is_not() {
    let now = t0();
    let marked = |payload: &[u8]| {
        let mut p = publish("t", QoS::AtLeastOnce, payload);
        p.properties.payload_format_indicator = Some(PayloadFormat::Utf8);
        p
    };
    for version in BOTH {
        let mut client = connected_client(
            Config::default(),
            connect_packet(version, "c", true),
            ConnAck::new(false, ConnectReasonCode::Success),
            now,
        );
        let refused = client.publish(marked(b"\xff\xfe"), now);
        if version == ProtocolVersion::V5 {
            assert_eq!(
                refused,
                Err(Error::Api(ApiError::PayloadFormatInvalid)),
                "{version:?}"
            );
            assert!(drain(&mut client).is_empty());
        } else {
            assert!(refused.is_ok(), "{version:?}: {refused:?}");
            drain(&mut client);
        }
        client.publish(marked("caf\u{e9}".as_bytes()), now).unwrap();
        let mut unmarked = marked(b"\xff\xfe");
        unmarked.properties.payload_format_indicator = Some(PayloadFormat::Unspecified);
        client.publish(unmarked, now).unwrap();
        assert_eq!(drain(&mut client).len(), 2, "{version:?}");
        assert!(client.is_connected());
    }
    let mut server = connected_server(
        Config::default(),
        connect_packet(ProtocolVersion::V5, "c", true),
        now,
    );
    server.publish(marked(b"\xff\xfe"), now).unwrap();
}

#[test]
fn reject_after_a_failed_authentication_closes() {
    // v5:MQTT-4.12.0-1 v5:MQTT-4.12.0-4 v5:MQTT-3.1.4-2
    let now = t0();
    let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
    connect.properties.authentication_method = Some(MqttString::from("unknown"));
    let mut server = connect_received(connect, now);
    let _ = events(&mut server);
    server
        .reject(
            ConnectReasonCode::BadAuthenticationMethod,
            ConnAckProperties::default(),
            now,
        )
        .unwrap();
    let out = drain(&mut server);
    assert!(
        matches!(out.as_slice(), [Packet::ConnAck(c)] if c.reason_code == ConnectReasonCode::BadAuthenticationMethod)
    );
    assert!(server.is_closed());
}

#[test]
fn authentication_method_is_the_connects_everywhere() {
    // v5:MQTT-4.12.0-5 v5:MQTT-4.12.0-6
    let now = t0();
    let method = MqttString::from("SCRAM-SHA-256");
    let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
    connect.properties.authentication_method = Some(method.clone());
    let mut server = connect_received(connect, now);
    let _ = events(&mut server);
    server
        .auth(Auth {
            reason_code: AuthReasonCode::ContinueAuthentication,
            ..Auth::default()
        })
        .unwrap();
    let props = ConnAckProperties {
        authentication_method: Some(MqttString::from("other")),
        ..Default::default()
    };
    server.accept(props, None, now).unwrap();
    let out = drain(&mut server);
    let [Packet::Auth(auth), Packet::ConnAck(connack)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(
        auth.properties.authentication_method.as_ref(),
        Some(&method)
    );
    assert_eq!(
        connack.properties.authentication_method.as_ref(),
        Some(&method)
    );

    // Without a method in CONNECT, none in CONNACK.
    let mut server = connect_received(connect_packet(ProtocolVersion::V5, "c", true), now);
    let _ = events(&mut server);
    let props = ConnAckProperties {
        authentication_method: Some(method),
        authentication_data: Some(Bytes::from_static(b"x")),
        ..Default::default()
    };
    server.accept(props, None, now).unwrap();
    let out = drain(&mut server);
    let [Packet::ConnAck(connack)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(connack.properties.authentication_method, None);
    assert_eq!(connack.properties.authentication_data, None);
}

#[test]
fn an_auth_with_another_method_ends_the_connection() {
    // v5:MQTT-4.12.0-5 v5:MQTT-4.12.1-1
    let now = t0();
    let method = MqttString::from("SCRAM-SHA-256");
    let auth = |method: Option<&'static str>, reason_code| {
        let mut auth = Auth {
            reason_code,
            ..Auth::default()
        };
        auth.properties.authentication_method =
            method.map(|m: &str| MqttString::from(m.to_owned()));
        auth
    };
    for sent in [Some("SCRAM-SHA-1"), None] {
        // Server: a re-authentication must use the CONNECT's method.
        let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
        connect.properties.authentication_method = Some(method.clone());
        let mut server = connected_server(Config::default(), connect, now);
        let same = auth(Some("SCRAM-SHA-256"), AuthReasonCode::ReAuthenticate);
        server.handle_packet(Packet::Auth(same), now).unwrap();
        assert!(matches!(server.poll_event(), Some(Event::Auth(_))));
        let other = auth(sent, AuthReasonCode::ReAuthenticate);
        assert!(server.handle_packet(Packet::Auth(other), now).is_err());
        assert_eq!(
            drain(&mut server),
            vec![Packet::Disconnect(Disconnect::new(
                DisconnectReasonCode::BadAuthenticationMethod
            ))]
        );

        // Client: the server's AUTH during the exchange must use it too;
        // the client says so with 0x82 (0x8C is the server's code,
        // MQTT-3.14.2-1).
        let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
        connect.properties.authentication_method = Some(method.clone());
        let mut client = Session::client(Config::default());
        client.connect(connect, now).unwrap();
        let _ = drain(&mut client);
        let other = auth(sent, AuthReasonCode::ContinueAuthentication);
        assert!(client.handle_packet(Packet::Auth(other), now).is_err());
        let out = drain(&mut client);
        assert!(
            matches!(out.as_slice(), [Packet::Disconnect(d)] if d.reason_code == DisconnectReasonCode::ProtocolError),
            "{out:?}"
        );
    }
}

#[test]
fn an_auth_out_of_place_before_connack_is_refused_with_a_connack() {
    // v5:MQTT-4.12.0-3 v5:MQTT-4.12.0-5 v5:MQTT-4.12.0-7
    let now = t0();
    let auth = |method: Option<&'static str>, reason_code| {
        let mut auth = Auth {
            reason_code,
            ..Auth::default()
        };
        auth.properties.authentication_method = method.map(MqttString::from);
        auth
    };
    for (connect_method, sent, expected) in [
        // The client answers the server's challenge with 0x19 or 0x00.
        (
            Some("SCRAM-SHA-1"),
            auth(Some("SCRAM-SHA-1"), AuthReasonCode::ReAuthenticate),
            ConnectReasonCode::ProtocolError,
        ),
        (
            Some("SCRAM-SHA-1"),
            auth(Some("SCRAM-SHA-1"), AuthReasonCode::Success),
            ConnectReasonCode::ProtocolError,
        ),
        // ... or with another method.
        (
            Some("SCRAM-SHA-1"),
            auth(
                Some("SCRAM-SHA-256"),
                AuthReasonCode::ContinueAuthentication,
            ),
            ConnectReasonCode::BadAuthenticationMethod,
        ),
        // AUTH although the CONNECT had no method.
        (
            None,
            auth(None, AuthReasonCode::ContinueAuthentication),
            ConnectReasonCode::ProtocolError,
        ),
    ] {
        let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
        connect.properties.authentication_method = connect_method.map(MqttString::from);
        let mut server = connect_received(connect, now);
        assert!(matches!(
            events(&mut server).as_slice(),
            [Event::Connect(_)]
        ));
        assert!(
            server
                .handle_packet(Packet::Auth(sent.clone()), now)
                .is_err()
        );
        let out = drain(&mut server);
        assert!(
            matches!(out.as_slice(), [Packet::ConnAck(c)] if c.reason_code == expected),
            "{sent:?}: {out:?}"
        );
        assert!(
            server
                .accept(ConnAckProperties::default(), None, now)
                .is_err()
        );
    }
}

#[test]
fn auth_reason_codes_each_side_may_use() {
    // v5:MQTT-4.12.0-2 v5:MQTT-4.12.1-1
    let now = t0();
    let method = MqttString::from("SCRAM-SHA-1");
    let auth = |reason_code| {
        let mut auth = Auth {
            reason_code,
            ..Auth::default()
        };
        auth.properties.authentication_method = Some(method.clone());
        auth
    };
    let with_method = || {
        let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
        connect.properties.authentication_method = Some(method.clone());
        connect
    };
    // Server, after CONNACK: 0x19 from the client starts a
    // re-authentication, one at a time; 0x18 only in one; never 0x00.
    for (reauthenticating, reason, ok) in [
        (false, AuthReasonCode::ReAuthenticate, true),
        (false, AuthReasonCode::ContinueAuthentication, false),
        (false, AuthReasonCode::Success, false),
        (true, AuthReasonCode::ReAuthenticate, false),
        (true, AuthReasonCode::ContinueAuthentication, true),
        (true, AuthReasonCode::Success, false),
    ] {
        let mut server = connected_server(Config::default(), with_method(), now);
        if reauthenticating {
            server
                .handle_packet(Packet::Auth(auth(AuthReasonCode::ReAuthenticate)), now)
                .unwrap();
            let _ = events(&mut server);
        }
        let result = server.handle_packet(Packet::Auth(auth(reason)), now);
        assert_eq!(result.is_ok(), ok, "{reauthenticating} {reason:?}");
        if !ok {
            assert_eq!(
                drain(&mut server),
                vec![Packet::Disconnect(Disconnect::new(
                    DisconnectReasonCode::ProtocolError
                ))]
            );
        }
    }
    // Client, before CONNACK: only 0x18 from the server.
    for (reason, ok) in [
        (AuthReasonCode::ContinueAuthentication, true),
        (AuthReasonCode::Success, false),
        (AuthReasonCode::ReAuthenticate, false),
    ] {
        let mut client = Session::client(Config::default());
        client.connect(with_method(), now).unwrap();
        let _ = drain(&mut client);
        let result = client.handle_packet(Packet::Auth(auth(reason)), now);
        assert_eq!(result.is_ok(), ok, "{reason:?}");
        if !ok {
            assert_eq!(
                drain(&mut client),
                vec![Packet::Disconnect(Disconnect::new(
                    DisconnectReasonCode::ProtocolError
                ))]
            );
        }
    }
    // Client, after CONNACK: 0x00 and 0x18 from the server only in a
    // re-authentication the client started (section 4.12.1), never 0x19.
    for (reauthenticating, reason, ok) in [
        (true, AuthReasonCode::Success, true),
        (true, AuthReasonCode::ContinueAuthentication, true),
        (true, AuthReasonCode::ReAuthenticate, false),
        (false, AuthReasonCode::Success, false),
        (false, AuthReasonCode::ContinueAuthentication, false),
        (false, AuthReasonCode::ReAuthenticate, false),
    ] {
        let mut client = Session::client(Config::default());
        client.connect(with_method(), now).unwrap();
        let _ = drain(&mut client);
        let mut connack = ConnAck::new(false, ConnectReasonCode::Success);
        connack.properties.authentication_method = Some(method.clone());
        client.handle_packet(Packet::ConnAck(connack), now).unwrap();
        assert!(client.is_connected());
        if reauthenticating {
            client.auth(auth(AuthReasonCode::ReAuthenticate)).unwrap();
            let _ = drain(&mut client);
        }
        let result = client.handle_packet(Packet::Auth(auth(reason)), now);
        assert_eq!(result.is_ok(), ok, "{reauthenticating} {reason:?}");
        if !ok {
            assert_eq!(
                drain(&mut client),
                vec![Packet::Disconnect(Disconnect::new(
                    DisconnectReasonCode::ProtocolError
                ))]
            );
        }
    }
}

#[test]
fn a_client_re_authenticates_one_exchange_at_a_time() {
    // v5:MQTT-4.12.1-1 v5:MQTT-3.15.2-1 v5:MQTT-4.12.0-5
    let now = t0();
    let method = MqttString::from("SCRAM-SHA-1");
    let auth = |reason_code| Auth {
        reason_code,
        ..Auth::default()
    };
    let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
    connect.properties.authentication_method = Some(method.clone());
    let mut client = Session::client(Config::default());
    client.connect(connect, now).unwrap();
    let _ = drain(&mut client);
    // Before CONNACK: 0x18 only.
    assert!(client.auth(auth(AuthReasonCode::ReAuthenticate)).is_err());
    assert!(client.auth(auth(AuthReasonCode::Success)).is_err());
    client
        .auth(auth(AuthReasonCode::ContinueAuthentication))
        .unwrap();
    let mut connack = ConnAck::new(false, ConnectReasonCode::Success);
    connack.properties.authentication_method = Some(method.clone());
    client.handle_packet(Packet::ConnAck(connack), now).unwrap();
    let _ = drain(&mut client);
    // Connected: no 0x18 outside a re-authentication, never 0x00.
    assert!(
        client
            .auth(auth(AuthReasonCode::ContinueAuthentication))
            .is_err()
    );
    assert!(client.auth(auth(AuthReasonCode::Success)).is_err());
    client.auth(auth(AuthReasonCode::ReAuthenticate)).unwrap();
    // One at a time.
    assert!(client.auth(auth(AuthReasonCode::ReAuthenticate)).is_err());
    let from_server = |reason_code| {
        let mut a = auth(reason_code);
        a.properties.authentication_method = Some(method.clone());
        Packet::Auth(a)
    };
    client
        .handle_packet(from_server(AuthReasonCode::ContinueAuthentication), now)
        .unwrap();
    client
        .auth(auth(AuthReasonCode::ContinueAuthentication))
        .unwrap();
    client
        .handle_packet(from_server(AuthReasonCode::Success), now)
        .unwrap();
    // Every AUTH the client sent carries the CONNECT's method.
    let out = drain(&mut client);
    assert_eq!(out.len(), 2, "{out:?}");
    for packet in &out {
        let Packet::Auth(a) = packet else {
            panic!("{out:?}")
        };
        assert_eq!(a.properties.authentication_method.as_ref(), Some(&method));
    }
    // Done: the next one may start, and a late 0x00 is a protocol error.
    client.auth(auth(AuthReasonCode::ReAuthenticate)).unwrap();
    client
        .handle_packet(from_server(AuthReasonCode::Success), now)
        .unwrap();
    assert!(
        client
            .handle_packet(from_server(AuthReasonCode::Success), now)
            .is_err()
    );
}

#[test]
fn a_client_checks_the_method_of_a_successful_connack() {
    // v5:MQTT-4.12.0-5 v5:MQTT-4.12.0-6 v5:MQTT-3.14.2-1
    let now = t0();
    for (sent, answered, ok) in [
        (Some("SCRAM-SHA-1"), Some("SCRAM-SHA-1"), true),
        (Some("SCRAM-SHA-1"), None, false),
        (Some("SCRAM-SHA-1"), Some("SCRAM-SHA-256"), false),
        (None, Some("SCRAM-SHA-1"), false),
        (None, None, true),
    ] {
        let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
        connect.properties.authentication_method = sent.map(MqttString::from);
        let mut client = Session::client(Config::default());
        client.connect(connect, now).unwrap();
        let _ = drain(&mut client);
        let mut connack = ConnAck::new(false, ConnectReasonCode::Success);
        connack.properties.authentication_method = answered.map(MqttString::from);
        let result = client.handle_packet(Packet::ConnAck(connack), now);
        assert_eq!(result.is_ok(), ok, "{sent:?} {answered:?}");
        assert_eq!(client.is_connected(), ok);
        if !ok {
            // Nothing of it applied; the client's code for it is 0x82.
            assert_eq!(
                drain(&mut client),
                vec![Packet::Disconnect(Disconnect::new(
                    DisconnectReasonCode::ProtocolError
                ))]
            );
        }
    }
    // A refusal needs no method.
    let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
    connect.properties.authentication_method = Some(MqttString::from("SCRAM-SHA-1"));
    let mut client = Session::client(Config::default());
    client.connect(connect, now).unwrap();
    let refusal = ConnAck::new(false, ConnectReasonCode::NotAuthorized);
    client.handle_packet(Packet::ConnAck(refusal), now).unwrap();
    assert!(matches!(
        client.error(),
        Some(Error::Refused(ConnectReasonCode::NotAuthorized))
    ));
}

#[test]
fn request_response_and_problem_information() {
    // v5:MQTT-3.1.2-28 v5:MQTT-3.1.2-29
    let now = t0();
    for (asked, expected) in [
        (None, None),
        (Some(false), None),
        (Some(true), Some(MqttString::from("resp/"))),
    ] {
        let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
        connect.properties.request_response_information = asked;
        connect.properties.request_problem_information = Some(false);
        let mut server = connect_received(connect, now);
        let _ = events(&mut server);
        let why = MqttString::from("why");
        let props = ConnAckProperties {
            response_information: Some(MqttString::from("resp/")),
            reason_string: Some(why.clone()),
            ..Default::default()
        };
        server.accept(props, None, now).unwrap();
        let out = drain(&mut server);
        let [Packet::ConnAck(connack)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(connack.properties.response_information, expected);
        assert_eq!(
            connack.properties.reason_string.as_ref(),
            Some(&why),
            "allowed on CONNACK"
        );
        // No reason string on a SUBACK after Request Problem Information 0.
        let sub = fulmar_codec::Subscribe::new(
            id(1),
            vec![(
                MqttString::from("a"),
                fulmar_codec::SubscriptionOptions::default(),
            )],
        );
        server.handle_packet(Packet::Subscribe(sub), now).unwrap();
        let _ = events(&mut server);
        let props = fulmar_codec::AckProperties {
            reason_string: Some(why.clone()),
            user_properties: vec![(why.clone(), why.clone())],
        };
        server
            .suback(
                id(1),
                vec![fulmar_codec::SubAckReasonCode::NotAuthorized],
                props,
            )
            .unwrap();
        let out = drain(&mut server);
        assert!(
            matches!(out.as_slice(), [Packet::SubAck(s)] if s.properties.is_empty()),
            "{out:?}"
        );
    }
}

#[test]
fn client_cannot_set_session_expiry_on_disconnect_after_zero() {
    let now = t0();
    let mut client = connected_client(
        Config::default(),
        connect_packet(ProtocolVersion::V5, "c", true),
        ConnAck::new(false, ConnectReasonCode::Success),
        now,
    );
    let props = DisconnectProperties {
        session_expiry_interval: Some(60),
        ..Default::default()
    };
    assert!(matches!(
        client.disconnect(
            DisconnectReasonCode::NormalDisconnection,
            props.clone(),
            now
        ),
        Err(Error::Api(fulmar_session::ApiError::SessionExpiryAfterZero))
    ));
    assert!(client.is_connected(), "refused, not fatal");
    // With a non-zero interval on CONNECT it may change it.
    let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
    connect.properties.session_expiry_interval = Some(10);
    let mut client = connected_client(
        Config::default(),
        connect,
        ConnAck::new(false, ConnectReasonCode::Success),
        now,
    );
    client
        .disconnect(DisconnectReasonCode::NormalDisconnection, props, now)
        .unwrap();
    let out = drain(&mut client);
    assert!(
        matches!(out.as_slice(), [Packet::Disconnect(d)] if d.properties.session_expiry_interval == Some(60))
    );
}

#[test]
fn a_server_answers_only_a_re_authentication_the_client_started() {
    // v5:MQTT-4.12.1-1 v5:MQTT-3.15.2-1
    let now = t0();
    let method = MqttString::from("SCRAM-SHA-1");
    let auth = |reason_code| {
        let mut a = Auth {
            reason_code,
            ..Auth::default()
        };
        a.properties.authentication_method = Some(method.clone());
        a
    };
    let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
    connect.properties.authentication_method = Some(method.clone());
    let mut server = connected_server(Config::default(), connect, now);
    let _ = drain(&mut server);
    // No re-authentication running: nothing to continue or complete, and
    // 0x19 is the client's.
    for reason in [
        AuthReasonCode::ContinueAuthentication,
        AuthReasonCode::Success,
        AuthReasonCode::ReAuthenticate,
    ] {
        assert!(server.auth(auth(reason)).is_err(), "{reason:?}");
    }
    server
        .handle_packet(Packet::Auth(auth(AuthReasonCode::ReAuthenticate)), now)
        .unwrap();
    server
        .auth(auth(AuthReasonCode::ContinueAuthentication))
        .unwrap();
    server
        .handle_packet(
            Packet::Auth(auth(AuthReasonCode::ContinueAuthentication)),
            now,
        )
        .unwrap();
    server.auth(auth(AuthReasonCode::Success)).unwrap();
    assert_eq!(drain(&mut server).len(), 2);
    // Completed: the client's late 0x18 is a protocol error.
    assert!(server.auth(auth(AuthReasonCode::Success)).is_err());
    assert!(
        server
            .handle_packet(
                Packet::Auth(auth(AuthReasonCode::ContinueAuthentication)),
                now
            )
            .is_err()
    );
    assert_eq!(
        drain(&mut server),
        vec![Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::ProtocolError
        ))]
    );
}

#[test]
fn a_connack_with_the_wrong_method_changes_nothing_of_the_session() {
    // v5:MQTT-4.12.0-5 v5:MQTT-3.2.2-5
    let now = t0();
    let method = MqttString::from("SCRAM-SHA-1");
    let mut connect = connect_packet(ProtocolVersion::V5, "c", false);
    connect.properties.session_expiry_interval = Some(3600);
    connect.properties.authentication_method = Some(method.clone());
    let mut connack = ConnAck::new(false, ConnectReasonCode::Success);
    connack.properties.authentication_method = Some(method);
    let mut client = connected_client(Config::default(), connect.clone(), connack, now);
    client
        .publish(publish("t", QoS::AtLeastOnce, b"m"), now)
        .unwrap();
    let _ = drain(&mut client);
    assert_eq!(client.inflight_len(), 1);
    client.connection_lost(now);
    let _ = events(&mut client);
    client.connect(connect, now).unwrap();
    let _ = drain(&mut client);
    // Session Present 0 would discard the message in flight, were it taken.
    let mut wrong = ConnAck::new(false, ConnectReasonCode::Success);
    wrong.properties.authentication_method = Some(MqttString::from("OTHER"));
    assert!(client.handle_packet(Packet::ConnAck(wrong), now).is_err());
    assert_eq!(client.inflight_len(), 1);
    assert!(
        !events(&mut client)
            .iter()
            .any(|e| matches!(e, Event::PublishDropped { .. } | Event::Connected(_))),
    );
}
