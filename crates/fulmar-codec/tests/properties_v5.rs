//! MQTT 5.0 properties against spec Table 2-4, packet by packet: every
//! property identifier in every packet (and in the Will Properties).
//!
//! - Where the table allows it, a packet carrying just that property is a
//!   byte-exact vector (it decodes, and encodes back to the same bytes).
//! - Where it does not, decoding fails with `PropertyNotAllowed` (Malformed
//!   Packet), and so do identifiers the table does not define.
//! - A single-valued property given twice is a Protocol Error
//!   (`DuplicateProperty`); User Property may repeat everywhere, and the
//!   Subscription Identifier in PUBLISH.
//! - Values the spec forbids (zero, a boolean other than 0 or 1, ...) are
//!   refused wherever the property is allowed.

// The helpers below panic on bad fixtures, like the tests themselves.
#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_malformed, assert_vector, cat, decode_one, frame, hex, props, string};
use fulmar_codec::{DecodeError, ProtocolVersion, ReasonCode};

const V5: ProtocolVersion = ProtocolVersion::V5;

/// Where properties appear: the packets, plus the Will Properties of CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Context {
    Connect,
    Will,
    ConnAck,
    Publish,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

use Context::*;

const CONTEXTS: [Context; 14] = [
    Connect,
    Will,
    ConnAck,
    Publish,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
];

impl Context {
    /// A minimal valid packet of this kind carrying `properties`. An AUTH
    /// gets the Authentication Method it needs (section 3.15.2.2.2) first,
    /// unless `properties` starts with one.
    fn wire(self, properties: &[u8]) -> Vec<u8> {
        let p = if self == Auth && properties.first() != Some(&0x15) {
            props(&cat(&[&hex("15 00 01 'm'"), properties]))
        } else {
            props(properties)
        };
        match self {
            Connect => frame(
                0x10,
                &cat(&[&hex("00 04 'MQTT' 05 02 00 3C"), &p, &string("c")]),
            ),
            Will => frame(
                0x10,
                &cat(&[
                    &hex("00 04 'MQTT' 05 06 00 3C 00"),
                    &string("c"),
                    &p,
                    &string("w"),
                    &string("x"),
                ]),
            ),
            ConnAck => frame(0x20, &cat(&[&[0x00, 0x00], &p])),
            Publish => frame(0x30, &cat(&[&string("t"), &p, b"x"])),
            PubAck => frame(0x40, &cat(&[&[0x00, 0x01, 0x00], &p])),
            PubRec => frame(0x50, &cat(&[&[0x00, 0x01, 0x00], &p])),
            PubRel => frame(0x62, &cat(&[&[0x00, 0x01, 0x00], &p])),
            PubComp => frame(0x70, &cat(&[&[0x00, 0x01, 0x00], &p])),
            Subscribe => frame(0x82, &cat(&[&[0x00, 0x01], &p, &string("a"), &[0x00]])),
            SubAck => frame(0x90, &cat(&[&[0x00, 0x01], &p, &[0x00]])),
            Unsubscribe => frame(0xA2, &cat(&[&[0x00, 0x01], &p, &string("a")])),
            UnsubAck => frame(0xB0, &cat(&[&[0x00, 0x01], &p, &[0x00]])),
            Disconnect => frame(0xE0, &cat(&[&[0x00], &p])),
            Auth => frame(0xF0, &cat(&[&[0x18], &p])),
        }
    }

    /// The context named in decode errors.
    fn name(self) -> &'static str {
        match self {
            Connect => "CONNECT",
            Will => "Will Properties",
            ConnAck => "CONNACK",
            Publish => "PUBLISH",
            PubAck | PubRec | PubRel | PubComp | SubAck | UnsubAck => "acknowledgement",
            Subscribe => "SUBSCRIBE",
            Unsubscribe => "UNSUBSCRIBE",
            Disconnect => "DISCONNECT",
            Auth => "AUTH",
        }
    }
}

/// Table 2-4: identifier, a valid value, and where the property is allowed.
const TABLE: &[(u8, &str, &[Context])] = &[
    (0x01, "01", &[Publish, Will]),
    (0x02, "00 00 00 0A", &[Publish, Will]),
    (0x03, "00 01 'c'", &[Publish, Will]),
    (0x08, "00 01 'r'", &[Publish, Will]),
    (0x09, "00 02 01 02", &[Publish, Will]),
    (0x0B, "05", &[Publish, Subscribe]),
    (0x11, "00 00 00 0A", &[Connect, ConnAck, Disconnect]),
    (0x12, "00 01 'a'", &[ConnAck]),
    (0x13, "00 0A", &[ConnAck]),
    (0x15, "00 01 'm'", &[Connect, ConnAck, Auth]),
    (0x16, "00 01 'd'", &[Connect, ConnAck, Auth]),
    (0x17, "01", &[Connect]),
    (0x18, "00 00 00 0A", &[Will]),
    (0x19, "01", &[Connect]),
    (0x1A, "00 01 'i'", &[ConnAck]),
    (0x1C, "00 01 's'", &[ConnAck, Disconnect]),
    (
        0x1F,
        "00 01 'r'",
        &[
            ConnAck, PubAck, PubRec, PubRel, PubComp, SubAck, UnsubAck, Disconnect, Auth,
        ],
    ),
    (0x21, "00 0A", &[Connect, ConnAck]),
    (0x22, "00 0A", &[Connect, ConnAck]),
    (0x23, "00 01", &[Publish]),
    (0x24, "01", &[ConnAck]),
    (0x25, "01", &[ConnAck]),
    (0x26, "00 01 'k' 00 01 'v'", &CONTEXTS),
    (0x27, "00 00 10 00", &[Connect, ConnAck]),
    (0x28, "01", &[ConnAck]),
    (0x29, "01", &[ConnAck]),
    (0x2A, "01", &[ConnAck]),
];

/// The property `id` with `value`; Authentication Data is preceded by the
/// Authentication Method it needs.
fn property(id: u8, value: &str) -> Vec<u8> {
    let mut out = if id == 0x16 {
        hex("15 00 01 'm'")
    } else {
        Vec::new()
    };
    out.push(id);
    out.extend(hex(value));
    out
}

// v5:MQTT-2.2.2-1 v5:MQTT-1.5.7-1 v5:MQTT-3.3.2-13 v5:MQTT-3.3.2-19
#[test]
fn every_property_where_it_is_allowed() {
    let mut vectors = 0;
    for &(id, value, allowed) in TABLE {
        for &context in allowed {
            let wire = context.wire(&property(id, value));
            let packet =
                decode_one(&wire, V5).unwrap_or_else(|e| panic!("{id:#04x} in {context:?}: {e}"));
            assert_vector(&packet, V5, &wire);
            vectors += 1;
        }
    }
    assert_eq!(vectors, 64);
}

#[test]
fn every_property_where_it_is_not_allowed() {
    for &(id, value, allowed) in TABLE {
        for context in CONTEXTS.into_iter().filter(|c| !allowed.contains(c)) {
            let mut p = vec![id];
            p.extend(hex(value));
            assert_malformed(
                &context.wire(&p),
                V5,
                DecodeError::PropertyNotAllowed {
                    id: u32::from(id),
                    context: context.name(),
                },
                ReasonCode::MalformedPacket,
            );
        }
    }
}

/// Identifiers Table 2-4 does not define are refused everywhere.
#[test]
fn undefined_property_identifiers() {
    let defined: Vec<u8> = TABLE.iter().map(|(id, _, _)| *id).collect();
    for id in (0..0x80u8).filter(|id| !defined.contains(id)) {
        for context in CONTEXTS {
            assert_malformed(
                &context.wire(&[id, 0x00, 0x00]),
                V5,
                DecodeError::PropertyNotAllowed {
                    id: u32::from(id),
                    context: context.name(),
                },
                ReasonCode::MalformedPacket,
            );
        }
    }
}

/// "It is a Protocol Error to include ... more than once", for every
/// single-valued property where it is allowed.
#[test]
fn single_valued_properties_given_twice() {
    for &(id, value, allowed) in TABLE {
        for &context in allowed {
            let repeatable = id == 0x26 || (id == 0x0B && context == Publish);
            let mut twice = property(id, value);
            twice.push(id);
            twice.extend(hex(value));
            let wire = context.wire(&twice);
            if repeatable {
                let packet = decode_one(&wire, V5).unwrap();
                assert_vector(&packet, V5, &wire);
            } else {
                assert_malformed(
                    &wire,
                    V5,
                    DecodeError::DuplicateProperty {
                        id,
                        context: context.name(),
                    },
                    ReasonCode::ProtocolError,
                );
            }
        }
    }
}

/// Forbidden values: zero where the spec forbids it, booleans other than 0
/// and 1, a Maximum QoS of 2, a Payload Format Indicator other than 0 and 1.
// v5:MQTT-3.3.2-8
#[test]
fn forbidden_property_values() {
    let cases: &[(u8, &str, DecodeError)] = &[
        (
            0x01,
            "02",
            DecodeError::InvalidPropertyValue { id: 0x01, value: 2 },
        ),
        (
            0x0B,
            "00",
            DecodeError::InvalidPropertyValue { id: 0x0B, value: 0 },
        ),
        (
            0x17,
            "02",
            DecodeError::InvalidPropertyValue { id: 0x17, value: 2 },
        ),
        (
            0x19,
            "FF",
            DecodeError::InvalidPropertyValue {
                id: 0x19,
                value: 255,
            },
        ),
        (
            0x21,
            "00 00",
            DecodeError::InvalidPropertyValue { id: 0x21, value: 0 },
        ),
        (0x23, "00 00", DecodeError::ZeroTopicAlias),
        (
            0x24,
            "02",
            DecodeError::InvalidPropertyValue { id: 0x24, value: 2 },
        ),
        (
            0x25,
            "02",
            DecodeError::InvalidPropertyValue { id: 0x25, value: 2 },
        ),
        (
            0x27,
            "00 00 00 00",
            DecodeError::InvalidPropertyValue { id: 0x27, value: 0 },
        ),
        (
            0x28,
            "02",
            DecodeError::InvalidPropertyValue { id: 0x28, value: 2 },
        ),
        (
            0x29,
            "02",
            DecodeError::InvalidPropertyValue { id: 0x29, value: 2 },
        ),
        (
            0x2A,
            "02",
            DecodeError::InvalidPropertyValue { id: 0x2A, value: 2 },
        ),
    ];
    for (id, value, error) in cases {
        let (_, _, allowed) = TABLE.iter().find(|(i, _, _)| i == id).unwrap();
        for &context in *allowed {
            let reason = match error {
                DecodeError::ZeroTopicAlias => ReasonCode::TopicAliasInvalid,
                _ => ReasonCode::ProtocolError,
            };
            assert_malformed(
                &context.wire(&property(*id, value)),
                V5,
                error.clone(),
                reason,
            );
        }
    }
}

/// Zero is a valid value for the properties that do not forbid it.
#[test]
fn zero_where_zero_is_allowed() {
    for (id, value, context) in [
        (0x02, "00 00 00 00", Publish),
        (0x11, "00 00 00 00", Connect),
        (0x13, "00 00", ConnAck),
        (0x18, "00 00 00 00", Will),
        (0x22, "00 00", Connect),
        (0x24, "00", ConnAck),
        (0x01, "00", Will),
        (0x09, "00 00", Publish),
        (0x03, "00 00", Publish),
    ] {
        let wire = context.wire(&property(id, value));
        let packet = decode_one(&wire, V5).unwrap();
        assert_vector(&packet, V5, &wire);
    }
}
