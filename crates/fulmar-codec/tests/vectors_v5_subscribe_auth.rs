//! Byte-exact MQTT 5.0 vectors, second half: SUBSCRIBE, SUBACK, UNSUBSCRIBE,
//! UNSUBACK, PINGREQ, PINGRESP, DISCONNECT and AUTH, with every property and
//! every reason code of each, and malformed inputs with the exact
//! `DecodeError` and reason code.

// The helpers below panic on bad fixtures, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod common;

use core::num::NonZeroU32;

use bytes::Bytes;
use common::{
    assert_decodes_to, assert_malformed, assert_vector, cat, code_table, frame, hex, id, not_in,
    props, string,
};
use fulmar_codec::{
    AckProperties, Auth, AuthProperties, AuthReasonCode, ConnAck, Connect, ConnectReasonCode,
    DecodeError, Disconnect, DisconnectProperties, DisconnectReasonCode, EncodeError, Packet,
    PacketType, ProtocolVersion, QoS, ReasonCode, RetainHandling, StringError, SubAck,
    SubAckReasonCode, Subscribe, SubscribeProperties, SubscriptionOptions, UnsubAck,
    UnsubAckReasonCode, Unsubscribe, UnsubscribeProperties,
};

const V5: ProtocolVersion = ProtocolVersion::V5;

fn encode_err(packet: impl Into<Packet>) -> EncodeError {
    common::encode_err(packet, V5)
}

fn malformed(wire: &[u8], error: DecodeError) {
    assert_malformed(wire, V5, error, ReasonCode::MalformedPacket);
}

fn protocol_error(wire: &[u8], error: DecodeError) {
    assert_malformed(wire, V5, error, ReasonCode::ProtocolError);
}

// Reason code tables, copied from the spec (sections 3.9.3 to 3.15.2.1).
const SUBACK_CODES: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const UNSUBACK_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
/// Table 3-10, plus 0x8C (Bad authentication method), which Table 2-6 lists
/// for DISCONNECT and section 4.12 uses.
const DISCONNECT_CODES: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8C, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94,
    0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_CODES: &[u8] = &[0x00, 0x18, 0x19];

// ---------------------------------------------------------------- SUBSCRIBE

/// Spec 3.8.2 and 3.8.3, Figures 3-19 and 3-21: packet identifier 10, no
/// properties, `a/b` with options 1 and `c/d` with options 2.
// v5:MQTT-3.8.1-1 v5:MQTT-3.8.3-1 v5:MQTT-2.2.1-3 v5:MQTT-2.2.2-1
#[test]
fn subscribe_spec_example_figures_3_19_and_3_21() {
    let sub = Subscribe::new(
        id(10),
        vec![
            ("a/b".into(), SubscriptionOptions::new(QoS::AtLeastOnce)),
            ("c/d".into(), SubscriptionOptions::new(QoS::ExactlyOnce)),
        ],
    );
    assert_vector(
        &sub.into(),
        V5,
        &hex("82 0F | 00 0A | 00 | 00 03 'a/b' 01 | 00 03 'c/d' 02"),
    );
}

/// Every combination of the subscription options and its exact byte.
#[test]
fn subscribe_every_option_combination() {
    let handlings = [
        RetainHandling::SendAtSubscribe,
        RetainHandling::SendAtSubscribeIfNew,
        RetainHandling::DoNotSend,
    ];
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        for no_local in [false, true] {
            for retain_as_published in [false, true] {
                for (rh, retain_handling) in handlings.into_iter().enumerate() {
                    let options = SubscriptionOptions {
                        qos,
                        no_local,
                        retain_as_published,
                        retain_handling,
                    };
                    let byte = qos.as_u8()
                        | (u8::from(no_local) << 2)
                        | (u8::from(retain_as_published) << 3)
                        | ((rh as u8) << 4);
                    let sub = Subscribe::new(id(1), vec![("a".into(), options)]);
                    assert_vector(
                        &sub.into(),
                        V5,
                        &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', byte],
                    );
                }
            }
        }
    }
}

#[test]
fn subscribe_every_property() {
    let sub = Subscribe {
        properties: SubscribeProperties {
            subscription_identifier: NonZeroU32::new(268_435_455),
            user_properties: vec![("k".into(), "v".into())],
        },
        ..Subscribe::new(
            id(2),
            vec![("a/#".into(), SubscriptionOptions::new(QoS::AtMostOnce))],
        )
    };
    let properties = hex("0B FF FF FF 7F | 26 00 01 'k' 00 01 'v'");
    let wire = frame(
        0x82,
        &cat(&[&hex("00 02"), &props(&properties), &hex("00 03 'a/#' 00")]),
    );
    assert_vector(&sub.into(), V5, &wire);
}

// v5:MQTT-3.8.3-2 v5:MQTT-3.8.3-4 v5:MQTT-3.8.3-5 v5:MQTT-3.8.1-1 v5:MQTT-3.8.3-1
// v5:MQTT-2.1.3-1
#[test]
fn subscribe_malformed() {
    protocol_error(
        &hex("82 03 | 00 0A | 00"),
        DecodeError::NoTopicFilters(PacketType::Subscribe),
    );
    for options in [0x40, 0x80, 0xC0, 0x41] {
        malformed(
            &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', options],
            DecodeError::SubscriptionOptionsReserved(options),
        );
    }
    protocol_error(
        &hex("82 07 | 00 01 | 00 | 00 01 'a' 30"),
        DecodeError::InvalidRetainHandling,
    );
    // 5.0 section 3.8.3.1: "It is a Protocol Error if the Maximum QoS field
    // has the value 3" (malformed under 3.1.1, MQTT-3.8.3-4 of 3.1.1).
    protocol_error(
        &hex("82 07 | 00 01 | 00 | 00 01 'a' 03"),
        DecodeError::SubscriptionQoS3,
    );
    protocol_error(
        &hex("82 10 | 00 01 | 00 | 00 0A '$share/g/a' 04"),
        DecodeError::NoLocalOnSharedSubscription,
    );
    malformed(
        &hex("82 07 | 00 01 | 00 | 00 01 FF 00"),
        DecodeError::InvalidString {
            field: "topic filter",
            error: StringError::InvalidUtf8,
        },
    );
    protocol_error(
        &hex("82 06 | 00 01 | 00 | 00 00 00"),
        DecodeError::EmptyTopicFilter(PacketType::Subscribe),
    );
    protocol_error(
        &hex("82 09 | 00 01 | 02 0B 00 | 00 01 'a' 00"),
        DecodeError::InvalidPropertyValue { id: 0x0B, value: 0 },
    );
    for flags in (0..16u8).filter(|f| *f != 2) {
        malformed(
            &[0x80 | flags, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x00],
            DecodeError::ReservedFlags {
                packet_type: PacketType::Subscribe,
                flags,
            },
        );
    }
    let shared_no_local = Subscribe::new(
        id(1),
        vec![(
            "$share/g/a".into(),
            SubscriptionOptions {
                no_local: true,
                ..SubscriptionOptions::default()
            },
        )],
    );
    assert_eq!(
        encode_err(shared_no_local),
        EncodeError::NoLocalOnSharedSubscription
    );
    assert_eq!(
        encode_err(Subscribe::new(id(1), Vec::new())),
        EncodeError::EmptyPayload(PacketType::Subscribe)
    );
}

// ---------------------------------------------------------------- SUBACK

/// Every Subscribe Reason Code, one SUBACK with all of them (their order is
/// kept on the wire), and one with properties.
// v5:MQTT-3.9.3-2
// v5:MQTT-3.9.3-1 (the codec's share: the reason codes keep their order on the wire)
#[test]
fn suback_every_reason_code() {
    let codes = code_table::<SubAckReasonCode>(SUBACK_CODES);
    for &code in &codes {
        assert_vector(
            &SubAck::new(id(10), vec![code]).into(),
            V5,
            &[0x90, 0x04, 0x00, 0x0A, 0x00, code.as_u8()],
        );
    }
    let mut reversed = codes.clone();
    reversed.reverse();
    let mut wire = vec![0x90, 3 + 12, 0x00, 0x0A, 0x00];
    wire.extend(reversed.iter().map(|c| c.as_u8()));
    assert_vector(&SubAck::new(id(10), reversed).into(), V5, &wire);
    for code in not_in(SUBACK_CODES) {
        protocol_error(
            &[0x90, 0x04, 0x00, 0x0A, 0x00, code],
            DecodeError::InvalidReasonCode {
                packet_type: PacketType::SubAck,
                code,
            },
        );
    }
    protocol_error(
        &hex("90 03 00 0A 00"),
        DecodeError::NoReasonCodes(PacketType::SubAck),
    );
}

#[test]
fn suback_every_property() {
    let suback = SubAck {
        properties: AckProperties {
            reason_string: Some("quota".into()),
            user_properties: vec![("k".into(), "v".into())],
        },
        ..SubAck::new(id(3), vec![SubAckReasonCode::QuotaExceeded])
    };
    let properties = hex("1F 00 05 'quota' | 26 00 01 'k' 00 01 'v'");
    let wire = frame(0x90, &cat(&[&hex("00 03"), &props(&properties), &[0x97]]));
    assert_vector(&suback.into(), V5, &wire);
}

// ---------------------------------------------------------------- UNSUBSCRIBE

/// Spec 3.10.3, Figure 3.30: `a/b` and `c/d` (with packet identifier 10 and
/// an empty property block).
// v5:MQTT-3.10.1-1 v5:MQTT-3.10.3-1 v5:MQTT-2.2.1-3
#[test]
fn unsubscribe_spec_example_figure_3_30() {
    let unsub = Unsubscribe::new(id(10), vec!["a/b".into(), "c/d".into()]);
    assert_vector(
        &unsub.into(),
        V5,
        &hex("A2 0D | 00 0A | 00 | 00 03 'a/b' | 00 03 'c/d'"),
    );
    let unsub = Unsubscribe {
        properties: UnsubscribeProperties {
            user_properties: vec![("k".into(), "v".into())],
        },
        ..Unsubscribe::new(id(10), vec!["a".into()])
    };
    assert_vector(
        &unsub.into(),
        V5,
        &hex("A2 0D | 00 0A | 07 26 00 01 'k' 00 01 'v' | 00 01 'a'"),
    );
}

// v5:MQTT-3.10.1-1 v5:MQTT-3.10.3-1 v5:MQTT-3.10.3-2 v5:MQTT-2.1.3-1
#[test]
fn unsubscribe_malformed() {
    protocol_error(
        &hex("A2 03 | 00 0A | 00"),
        DecodeError::NoTopicFilters(PacketType::Unsubscribe),
    );
    malformed(
        &hex("A2 06 | 00 0A | 00 | 00 01 FF"),
        DecodeError::InvalidString {
            field: "topic filter",
            error: StringError::InvalidUtf8,
        },
    );
    for flags in (0..16u8).filter(|f| *f != 2) {
        malformed(
            &[0xA0 | flags, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, b'a'],
            DecodeError::ReservedFlags {
                packet_type: PacketType::Unsubscribe,
                flags,
            },
        );
    }
    assert_eq!(
        encode_err(Unsubscribe::new(id(1), Vec::new())),
        EncodeError::EmptyPayload(PacketType::Unsubscribe)
    );
}

// ---------------------------------------------------------------- UNSUBACK

/// Every Unsubscribe Reason Code, all of them in one UNSUBACK, and properties.
// v5:MQTT-3.11.3-2
// v5:MQTT-3.11.3-1 (the codec's share: the reason codes keep their order on the wire)
#[test]
fn unsuback_every_reason_code() {
    let codes = code_table::<UnsubAckReasonCode>(UNSUBACK_CODES);
    for &code in &codes {
        assert_vector(
            &UnsubAck::new(id(10), vec![code]).into(),
            V5,
            &[0xB0, 0x04, 0x00, 0x0A, 0x00, code.as_u8()],
        );
    }
    let mut wire = vec![0xB0, 3 + 7, 0x00, 0x0A, 0x00];
    wire.extend(codes.iter().map(|c| c.as_u8()));
    assert_vector(&UnsubAck::new(id(10), codes).into(), V5, &wire);
    for code in not_in(UNSUBACK_CODES) {
        protocol_error(
            &[0xB0, 0x04, 0x00, 0x0A, 0x00, code],
            DecodeError::InvalidReasonCode {
                packet_type: PacketType::UnsubAck,
                code,
            },
        );
    }
    protocol_error(
        &hex("B0 03 00 0A 00"),
        DecodeError::NoReasonCodes(PacketType::UnsubAck),
    );
    let unsuback = UnsubAck {
        properties: AckProperties {
            reason_string: Some("r".into()),
            user_properties: vec![("k".into(), "v".into())],
        },
        ..UnsubAck::new(id(10), vec![UnsubAckReasonCode::NoSubscriptionExisted])
    };
    assert_vector(
        &unsuback.into(),
        V5,
        &hex("B0 0F | 00 0A | 0B 1F 00 01 'r' 26 00 01 'k' 00 01 'v' | 11"),
    );
}

// ---------------------------------------------------------------- PING

#[test]
fn ping() {
    assert_vector(&Packet::PingReq, V5, &hex("C0 00"));
    assert_vector(&Packet::PingResp, V5, &hex("D0 00"));
    malformed(
        &hex("C0 01 00"),
        DecodeError::TrailingBytes {
            packet_type: PacketType::PingReq,
            count: 1,
        },
    );
}

// ---------------------------------------------------------------- DISCONNECT

/// Every Disconnect Reason Code: Normal disconnection without properties has
/// remaining length 0, the others omit the Property Length.
// v5:MQTT-3.14.2-1
#[test]
fn disconnect_every_reason_code() {
    let codes = code_table::<DisconnectReasonCode>(DISCONNECT_CODES);
    assert_vector(&Disconnect::default().into(), V5, &hex("E0 00"));
    for code in codes.into_iter().filter(|c| c.as_u8() != 0) {
        assert_vector(
            &Disconnect::new(code).into(),
            V5,
            &[0xE0, 0x01, code.as_u8()],
        );
    }
    for code in not_in(DISCONNECT_CODES) {
        protocol_error(
            &[0xE0, 0x01, code],
            DecodeError::InvalidReasonCode {
                packet_type: PacketType::Disconnect,
                code,
            },
        );
    }
    // The long forms of Normal disconnection are accepted.
    assert_decodes_to(&hex("E0 01 00"), V5, &Disconnect::default().into());
    assert_decodes_to(&hex("E0 02 00 00"), V5, &Disconnect::default().into());
}

/// Spec 3.14.2.2.5, Figure 3-24: Normal disconnection with a Session Expiry
/// Interval of 0. (The figure labels the Property Length "5" but prints the
/// bits of 7; five is right: one identifier byte and a four-byte integer.)
#[test]
fn disconnect_spec_example_figure_3_24() {
    let disconnect = Disconnect {
        properties: DisconnectProperties {
            session_expiry_interval: Some(0),
            ..DisconnectProperties::default()
        },
        ..Disconnect::default()
    };
    assert_vector(
        &disconnect.into(),
        V5,
        &hex("E0 07 | 00 | 05 11 00 00 00 00"),
    );
}

#[test]
fn disconnect_every_property() {
    let disconnect = Disconnect {
        reason_code: DisconnectReasonCode::UseAnotherServer,
        properties: DisconnectProperties {
            session_expiry_interval: Some(1),
            reason_string: Some("moving".into()),
            user_properties: vec![("k".into(), "v".into())],
            server_reference: Some("b:1883".into()),
        },
    };
    let properties =
        hex("11 00 00 00 01 | 1F 00 06 'moving' | 26 00 01 'k' 00 01 'v' | 1C 00 06 'b:1883'");
    let wire = frame(0xE0, &cat(&[&[0x9C], &props(&properties)]));
    assert_vector(&disconnect.into(), V5, &wire);
}

// v5:MQTT-3.14.1-1 v5:MQTT-2.1.3-1
#[test]
fn disconnect_reserved_flags() {
    for flags in 1..16u8 {
        malformed(
            &[0xE0 | flags, 0x00],
            DecodeError::ReservedFlags {
                packet_type: PacketType::Disconnect,
                flags,
            },
        );
    }
}

// ---------------------------------------------------------------- AUTH

/// Every Authenticate Reason Code: Success without properties has remaining
/// length 0; otherwise the reason code and the Property Length are present.
// v5:MQTT-3.15.2-1
#[test]
fn auth_every_reason_code() {
    let codes = code_table::<AuthReasonCode>(AUTH_CODES);
    assert_vector(&Auth::default().into(), V5, &hex("F0 00"));
    for code in codes.into_iter().filter(|c| c.as_u8() != 0) {
        let auth = Auth {
            reason_code: code,
            properties: AuthProperties {
                authentication_method: Some("M".into()),
                ..AuthProperties::default()
            },
        };
        assert_vector(
            &auth.into(),
            V5,
            &[0xF0, 0x06, code.as_u8(), 0x04, 0x15, 0x00, 0x01, b'M'],
        );
    }
    for code in not_in(AUTH_CODES) {
        protocol_error(
            &[0xF0, 0x06, code, 0x04, 0x15, 0x00, 0x01, b'M'],
            DecodeError::InvalidReasonCode {
                packet_type: PacketType::Auth,
                code,
            },
        );
    }
}

#[test]
fn auth_every_property() {
    let auth = Auth {
        reason_code: AuthReasonCode::ContinueAuthentication,
        properties: AuthProperties {
            authentication_method: Some("SCRAM-SHA-1".into()),
            authentication_data: Some(Bytes::from_static(b"r=abc")),
            reason_string: Some("step".into()),
            user_properties: vec![("k".into(), "v".into())],
        },
    };
    let properties = hex(
        "15 00 0B 'SCRAM-SHA-1' | 16 00 05 'r=abc' | 1F 00 04 'step' \
                          | 26 00 01 'k' 00 01 'v'",
    );
    let wire = frame(0xF0, &cat(&[&[0x18], &props(&properties)]));
    assert_vector(&auth.into(), V5, &wire);
}

// v5:MQTT-3.15.1-1 v5:MQTT-2.1.3-1 v5:MQTT-4.12.0-5
#[test]
fn auth_malformed() {
    for flags in 1..16u8 {
        malformed(
            &[0xF0 | flags, 0x00],
            DecodeError::ReservedFlags {
                packet_type: PacketType::Auth,
                flags,
            },
        );
    }
    protocol_error(
        &hex("F0 07 | 18 | 05 16 00 02 'xy'"),
        DecodeError::AuthDataWithoutMethod,
    );
    // Section 3.15.2.2.2: "It is a Protocol Error to omit the Authentication
    // Method"; only the AUTH of remaining length 0 (Success, no properties)
    // has none.
    protocol_error(&hex("F0 02 | 18 | 00"), DecodeError::AuthWithoutMethod);
    protocol_error(
        &hex("F0 06 | 19 | 04 1F 00 01 'x'"),
        DecodeError::AuthWithoutMethod,
    );
    protocol_error(&hex("F0 02 | 00 | 00"), DecodeError::AuthWithoutMethod);
    for auth in [
        Auth {
            reason_code: AuthReasonCode::ContinueAuthentication,
            properties: AuthProperties::default(),
        },
        Auth {
            reason_code: AuthReasonCode::Success,
            properties: AuthProperties {
                reason_string: Some("x".into()),
                ..AuthProperties::default()
            },
        },
    ] {
        assert_eq!(encode_err(auth), EncodeError::AuthWithoutMethod);
    }
    // A reason code without a Property Length.
    malformed(
        &hex("F0 01 18"),
        DecodeError::Truncated {
            field: "property length",
        },
    );
}

/// One step of an enhanced authentication exchange (spec 4.12).
fn auth_step(code: AuthReasonCode, method: &'static str, data: Option<&'static [u8]>) -> Packet {
    Packet::from(Auth {
        reason_code: code,
        properties: AuthProperties {
            authentication_method: Some(method.into()),
            authentication_data: data.map(Bytes::from_static),
            ..AuthProperties::default()
        },
    })
}

/// The properties of a step: Authentication Method, then Authentication Data.
fn auth_props(method: &str, data: Option<&[u8]>) -> Vec<u8> {
    let mut p = cat(&[&[0x15], &string(method)]);
    if let Some(data) = data {
        p.push(0x16);
        p.extend(u16::try_from(data.len()).unwrap().to_be_bytes());
        p.extend_from_slice(data);
    }
    props(&p)
}

fn connect_with_auth(method: &'static str, data: Option<&'static [u8]>) -> Packet {
    let mut connect = Connect::new(V5, "c".into());
    connect.properties.authentication_method = Some(method.into());
    connect.properties.authentication_data = data.map(Bytes::from_static);
    Packet::from(connect)
}

fn connack_with_auth(method: &'static str, data: &'static [u8]) -> Packet {
    let mut connack = ConnAck::new(false, ConnectReasonCode::Success);
    connack.properties.authentication_method = Some(method.into());
    connack.properties.authentication_data = Some(Bytes::from_static(data));
    Packet::from(connack)
}

/// Spec 4.12, the non-normative SCRAM challenge, packet by packet.
#[test]
fn scram_challenge_example() {
    let m = "SCRAM-SHA-1";
    let connect_header = hex("00 04 'MQTT' 05 02 00 3C");
    let steps = [
        (
            connect_with_auth(m, Some(b"client-first-data")),
            frame(
                0x10,
                &cat(&[
                    &connect_header,
                    &auth_props(m, Some(b"client-first-data")),
                    &string("c"),
                ]),
            ),
        ),
        (
            auth_step(
                AuthReasonCode::ContinueAuthentication,
                m,
                Some(b"server-first-data"),
            ),
            frame(
                0xF0,
                &cat(&[&[0x18], &auth_props(m, Some(b"server-first-data"))]),
            ),
        ),
        (
            auth_step(
                AuthReasonCode::ContinueAuthentication,
                m,
                Some(b"client-final-data"),
            ),
            frame(
                0xF0,
                &cat(&[&[0x18], &auth_props(m, Some(b"client-final-data"))]),
            ),
        ),
        (
            connack_with_auth(m, b"server-final-data"),
            frame(
                0x20,
                &cat(&[&[0x00, 0x00], &auth_props(m, Some(b"server-final-data"))]),
            ),
        ),
    ];
    for (packet, wire) in &steps {
        assert_vector(packet, V5, wire);
    }
    // The second step, spelled out.
    assert_eq!(
        steps[1].1,
        hex("F0 24 | 18 | 22 15 00 0B 'SCRAM-SHA-1' 16 00 11 'server-first-data'")
    );
}

/// Spec 4.12, the non-normative Kerberos challenge, packet by packet.
#[test]
fn kerberos_challenge_example() {
    let m = "GS2-KRB5";
    let continue_auth = |data| auth_step(AuthReasonCode::ContinueAuthentication, m, data);
    let auth_wire = |data| frame(0xF0, &cat(&[&[0x18], &auth_props(m, data)]));
    let steps = [
        (
            connect_with_auth(m, None),
            frame(
                0x10,
                &cat(&[
                    &hex("00 04 'MQTT' 05 02 00 3C"),
                    &auth_props(m, None),
                    &string("c"),
                ]),
            ),
        ),
        (continue_auth(None), auth_wire(None)),
        (
            continue_auth(Some(b"initial context token")),
            auth_wire(Some(b"initial context token")),
        ),
        (
            continue_auth(Some(b"reply context token")),
            auth_wire(Some(b"reply context token")),
        ),
        (continue_auth(None), auth_wire(None)),
        (
            connack_with_auth(m, b"outcome of authentication"),
            frame(
                0x20,
                &cat(&[
                    &[0x00, 0x00],
                    &auth_props(m, Some(b"outcome of authentication")),
                ]),
            ),
        ),
    ];
    for (packet, wire) in &steps {
        assert_vector(packet, V5, wire);
    }
    assert_eq!(steps[1].1, hex("F0 0D | 18 | 0B 15 00 08 'GS2-KRB5'"));
}
