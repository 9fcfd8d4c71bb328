//! Property tests over arbitrary *valid* packets of all 15 types, for both
//! versions (3.1.1 without 5.0-only data):
//!
//! - encode then decode gives the original, `encoded_len` is the encoded
//!   length, and the decoded packet encodes to the same bytes;
//! - a stream of packets decodes the same whatever the chunking: one byte at
//!   a time with empty reads between, every two-chunk split, random chunks;
//!   `Ok(None)` leaves the buffer untouched;
//! - a packet over `max_packet_size` is refused as soon as its fixed header
//!   is complete, before any of its body arrives.
//!
//! (Arbitrary and mutated bytes are covered by the robustness proptest in
//! `src/tests/robustness.rs`.)

// The helpers below panic on bad fixtures, like the tests themselves.
#![allow(clippy::unwrap_used)]

use core::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use fulmar_codec::{
    AckProperties, Auth, AuthProperties, AuthReasonCode, ConnAck, ConnAckProperties, Connect,
    ConnectProperties, ConnectReasonCode, DecodeError, Disconnect, DisconnectProperties,
    DisconnectReasonCode, MqttString, Packet, PacketId, PayloadFormat, ProtocolVersion, PubAck,
    PubAckReasonCode, PubComp, PubCompReasonCode, PubRec, PubRecReasonCode, PubRel,
    PubRelReasonCode, Publish, PublishProperties, QoS, RetainHandling, SubAck, SubAckReasonCode,
    Subscribe, SubscribeProperties, SubscriptionOptions, UnsubAck, UnsubAckReasonCode, Unsubscribe,
    UnsubscribeProperties, Will, WillProperties, decode,
};
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use proptest::sample::select;

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;
const MAX: u32 = 1 << 24;

// ---------------------------------------------------------------- leaves

/// Any valid string: no control characters (so no U+0000), some multi-byte.
fn text() -> impl Strategy<Value = MqttString> {
    "[a-zA-Z0-9 +#/$é€\u{2A6D4}\u{FEFF}]{0,12}".prop_map(MqttString::from)
}

/// A topic name: non-empty, no wildcards.
fn topic() -> impl Strategy<Value = MqttString> {
    "[a-z0-9/$é\u{2A6D4}]{1,16}".prop_map(MqttString::from)
}

/// A topic filter: non-empty, wildcards allowed (the codec does not check the syntax).
fn filter() -> impl Strategy<Value = MqttString> {
    "[a-z/+#]{1,10}".prop_map(MqttString::from)
}

fn binary(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn packet_id() -> impl Strategy<Value = PacketId> {
    (1..=u16::MAX).prop_map(|n| PacketId::new(n).unwrap())
}

fn nz16() -> impl Strategy<Value = NonZeroU16> {
    (1..=u16::MAX).prop_map(|n| NonZeroU16::new(n).unwrap())
}

fn nz32() -> impl Strategy<Value = NonZeroU32> {
    (1..=u32::MAX).prop_map(|n| NonZeroU32::new(n).unwrap())
}

fn subscription_id() -> impl Strategy<Value = NonZeroU32> {
    (1..=268_435_455u32).prop_map(|n| NonZeroU32::new(n).unwrap())
}

fn user_properties() -> impl Strategy<Value = Vec<(MqttString, MqttString)>> {
    vec((text(), text()), 0..3)
}

/// Every value of a reason code enum.
fn codes<C: TryFrom<u8> + Clone + core::fmt::Debug + 'static>() -> impl Strategy<Value = C> {
    select(
        (0..=0xFF_u8)
            .filter_map(|b| C::try_from(b).ok())
            .collect::<Vec<_>>(),
    )
}

fn payload_format() -> impl Strategy<Value = PayloadFormat> {
    select(vec![PayloadFormat::Unspecified, PayloadFormat::Utf8])
}

/// Authentication Method and Data: data only with a method.
fn auth_method_data() -> impl Strategy<Value = (Option<MqttString>, Option<Bytes>)> {
    of((text(), of(binary(16)))).prop_map(|pair| match pair {
        Some((method, data)) => (Some(method), data),
        None => (None, None),
    })
}

fn ack_properties() -> impl Strategy<Value = AckProperties> {
    (of(text()), user_properties()).prop_map(|(reason_string, user_properties)| AckProperties {
        reason_string,
        user_properties,
    })
}

// ---------------------------------------------------------------- packets

fn connect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version == V5;
    let properties = (
        (of(any::<u32>()), of(nz16()), of(nz32()), of(any::<u16>())),
        (of(any::<bool>()), of(any::<bool>()), user_properties()),
        auth_method_data(),
    )
        .prop_map(move |((sei, rm, mps, tam), (rri, rpi, up), (am, ad))| {
            if !v5 {
                return ConnectProperties::default();
            }
            ConnectProperties {
                session_expiry_interval: sei,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                user_properties: up,
                authentication_method: am,
                authentication_data: ad,
            }
        });
    let will_properties = (
        (of(any::<u32>()), of(payload_format()), of(any::<u32>())),
        (of(text()), of(topic()), of(binary(16)), user_properties()),
    )
        .prop_map(move |((wdi, pfi, mei), (ct, rt, cd, up))| {
            if !v5 {
                return WillProperties::default();
            }
            WillProperties {
                will_delay_interval: wdi,
                payload_format_indicator: pfi,
                message_expiry_interval: mei,
                content_type: ct,
                response_topic: rt,
                correlation_data: cd,
                user_properties: up,
            }
        });
    let will = of((topic(), binary(64), qos(), any::<bool>(), will_properties)).prop_map(|w| {
        w.map(|(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        })
    });
    (
        (any::<bool>(), any::<u16>(), text()),
        will,
        (of(text()), of(binary(16))),
        properties,
    )
        .prop_map(
            move |(
                (clean_start, keep_alive, client_id),
                will,
                (username, password),
                properties,
            )| {
                // 3.1.1: no password without a user name [MQTT-3.1.2-22].
                let password = if v5 || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::from(Connect {
                    protocol_version: version,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                    // Both ways of the protocol level byte, without another strategy.
                    bridge: keep_alive % 7 == 0,
                })
            },
        )
}

fn connack(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version == V5;
    let code = codes::<ConnectReasonCode>()
        .prop_filter("a 3.1.1 return code", move |c| v5 || c.to_v311().is_some());
    let properties = (
        (
            of(any::<u32>()),
            of(nz16()),
            of(select(vec![QoS::AtMostOnce, QoS::AtLeastOnce])),
        ),
        (of(any::<bool>()), of(nz32()), of(text()), of(any::<u16>())),
        (
            of(text()),
            user_properties(),
            of(any::<bool>()),
            of(any::<bool>()),
        ),
        (of(any::<bool>()), of(any::<u16>()), of(text()), of(text())),
        auth_method_data(),
    )
        .prop_map(
            move |(
                (sei, rm, mq),
                (ra, mps, aci, tam),
                (rs, up, wsa, sia),
                (ssa, ska, ri, sr),
                (am, ad),
            )| {
                if !v5 {
                    return ConnAckProperties::default();
                }
                ConnAckProperties {
                    session_expiry_interval: sei,
                    receive_maximum: rm,
                    maximum_qos: mq,
                    retain_available: ra,
                    maximum_packet_size: mps,
                    assigned_client_identifier: aci,
                    topic_alias_maximum: tam,
                    reason_string: rs,
                    user_properties: up,
                    wildcard_subscription_available: wsa,
                    subscription_identifiers_available: sia,
                    shared_subscription_available: ssa,
                    server_keep_alive: ska,
                    response_information: ri,
                    server_reference: sr,
                    authentication_method: am,
                    authentication_data: ad,
                }
            },
        );
    (any::<bool>(), code, properties).prop_map(|(session_present, reason_code, properties)| {
        Packet::from(ConnAck {
            // Session Present only on success [MQTT-3.2.2-6].
            session_present: session_present && reason_code == ConnectReasonCode::Success,
            reason_code,
            properties,
        })
    })
}

fn publish(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version == V5;
    let properties = (
        (
            of(payload_format()),
            of(any::<u32>()),
            of(nz16()),
            of(topic()),
        ),
        (
            of(binary(16)),
            user_properties(),
            vec(subscription_id(), 0..3),
            of(text()),
        ),
    )
        .prop_map(move |((pfi, mei, ta, rt), (cd, up, si, ct))| {
            if !v5 {
                return PublishProperties::default();
            }
            PublishProperties {
                payload_format_indicator: pfi,
                message_expiry_interval: mei,
                topic_alias: ta,
                response_topic: rt,
                correlation_data: cd,
                user_properties: up,
                subscription_identifiers: si,
                content_type: ct,
            }
        });
    // Mostly small payloads, sometimes a few KiB.
    let payload = prop_oneof![4 => binary(64), 1 => binary(4096)];
    (
        (any::<bool>(), qos(), any::<bool>(), packet_id()),
        (topic(), any::<bool>()),
        payload,
        properties,
    )
        .prop_map(
            move |((dup, qos, retain, id), (topic, drop_topic), payload, properties)| {
                let qos0 = qos == QoS::AtMostOnce;
                // 5.0: with a Topic Alias the Topic Name may be empty.
                let topic = if drop_topic && properties.topic_alias.is_some() {
                    MqttString::new()
                } else {
                    topic
                };
                Packet::from(Publish {
                    dup: dup && !qos0,
                    qos,
                    retain,
                    topic,
                    packet_id: (!qos0).then_some(id),
                    payload,
                    properties,
                })
            },
        )
}

fn acks(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version == V5;
    let props =
        move || ack_properties().prop_map(move |p| if v5 { p } else { AckProperties::default() });
    prop_oneof![
        (packet_id(), codes::<PubAckReasonCode>(), props()).prop_map(
            move |(packet_id, reason_code, properties)| Packet::from(PubAck {
                packet_id,
                reason_code: if v5 {
                    reason_code
                } else {
                    PubAckReasonCode::Success
                },
                properties,
            })
        ),
        (packet_id(), codes::<PubRecReasonCode>(), props()).prop_map(
            move |(packet_id, reason_code, properties)| Packet::from(PubRec {
                packet_id,
                reason_code: if v5 {
                    reason_code
                } else {
                    PubRecReasonCode::Success
                },
                properties,
            })
        ),
        (packet_id(), codes::<PubRelReasonCode>(), props()).prop_map(
            move |(packet_id, reason_code, properties)| Packet::from(PubRel {
                packet_id,
                reason_code: if v5 {
                    reason_code
                } else {
                    PubRelReasonCode::Success
                },
                properties,
            })
        ),
        (packet_id(), codes::<PubCompReasonCode>(), props()).prop_map(
            move |(packet_id, reason_code, properties)| Packet::from(PubComp {
                packet_id,
                reason_code: if v5 {
                    reason_code
                } else {
                    PubCompReasonCode::Success
                },
                properties,
            })
        ),
    ]
}

fn subscription_options(version: ProtocolVersion) -> impl Strategy<Value = SubscriptionOptions> {
    let v5 = version == V5;
    let handling = select(vec![
        RetainHandling::SendAtSubscribe,
        RetainHandling::SendAtSubscribeIfNew,
        RetainHandling::DoNotSend,
    ]);
    (qos(), any::<bool>(), any::<bool>(), handling).prop_map(move |(qos, nl, rap, rh)| {
        if v5 {
            SubscriptionOptions {
                qos,
                no_local: nl,
                retain_as_published: rap,
                retain_handling: rh,
            }
        } else {
            SubscriptionOptions::new(qos)
        }
    })
}

fn subscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version == V5;
    let entry = (filter(), any::<bool>(), subscription_options(version)).prop_map(
        |(filter, shared, mut options)| {
            if shared {
                // No Local is a Protocol Error on a shared subscription [MQTT-3.8.3-4].
                options.no_local = false;
                let shared = format!("$share/g/{filter}");
                (MqttString::from(shared), options)
            } else {
                (filter, options)
            }
        },
    );
    let properties = (of(subscription_id()), user_properties()).prop_map(move |(si, up)| {
        if v5 {
            SubscribeProperties {
                subscription_identifier: si,
                user_properties: up,
            }
        } else {
            SubscribeProperties::default()
        }
    });
    (packet_id(), vec(entry, 1..5), properties).prop_map(|(packet_id, filters, properties)| {
        Packet::from(Subscribe {
            packet_id,
            filters,
            properties,
        })
    })
}

fn suback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version == V5;
    // 3.1.1 has four return codes; every 5.0 failure is sent as 0x80.
    let code = codes::<SubAckReasonCode>().prop_filter("a 3.1.1 return code", move |c| {
        v5 || matches!(c.as_u8(), 0 | 1 | 2 | 0x80)
    });
    let properties =
        ack_properties().prop_map(move |p| if v5 { p } else { AckProperties::default() });
    (packet_id(), vec(code, 1..6), properties).prop_map(|(packet_id, reason_codes, properties)| {
        Packet::from(SubAck {
            packet_id,
            reason_codes,
            properties,
        })
    })
}

fn unsubscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version == V5;
    (packet_id(), vec(filter(), 1..5), user_properties()).prop_map(
        move |(packet_id, filters, user_properties)| {
            let properties = if v5 {
                UnsubscribeProperties { user_properties }
            } else {
                UnsubscribeProperties::default()
            };
            Packet::from(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        },
    )
}

fn unsuback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version == V5;
    (
        packet_id(),
        vec(codes::<UnsubAckReasonCode>(), 1..6),
        ack_properties(),
    )
        .prop_map(move |(packet_id, reason_codes, properties)| {
            Packet::from(if v5 {
                UnsubAck {
                    packet_id,
                    reason_codes,
                    properties,
                }
            } else {
                UnsubAck::new(packet_id, Vec::new())
            })
        })
}

fn disconnect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version == V5;
    let properties = (of(any::<u32>()), of(text()), user_properties(), of(text())).prop_map(
        |(sei, rs, up, sr)| DisconnectProperties {
            session_expiry_interval: sei,
            reason_string: rs,
            user_properties: up,
            server_reference: sr,
        },
    );
    (codes::<DisconnectReasonCode>(), properties).prop_map(move |(reason_code, properties)| {
        Packet::from(if v5 {
            Disconnect {
                reason_code,
                properties,
            }
        } else {
            Disconnect::default()
        })
    })
}

/// An AUTH: the one of remaining length 0, or one with an Authentication
/// Method (section 3.15.2.2.2: it may not be omitted otherwise).
fn auth() -> impl Strategy<Value = Packet> {
    let full = (
        codes::<AuthReasonCode>(),
        text(),
        of(binary(16)),
        of(text()),
        user_properties(),
    )
        .prop_map(|(reason_code, am, ad, rs, up)| {
            Packet::from(Auth {
                reason_code,
                properties: AuthProperties {
                    authentication_method: Some(am),
                    authentication_data: ad,
                    reason_string: rs,
                    user_properties: up,
                },
            })
        });
    prop_oneof![1 => Just(Packet::from(Auth::default())), 9 => full]
}

/// Any valid packet for `version`: the 14 types of 3.1.1, or the 15 of 5.0.
fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        connect(version),
        connack(version),
        publish(version),
        acks(version),
        subscribe(version),
        suback(version),
        unsubscribe(version),
        unsuback(version),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(version),
    ];
    if version == V5 {
        prop_oneof![10 => common, 1 => auth()].boxed()
    } else {
        common.boxed()
    }
}

fn any_version_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    prop_oneof![
        packet(V3).prop_map(|p| (V3, p)),
        packet(V5).prop_map(|p| (V5, p)),
    ]
}

fn encode(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    packet.encode(version, &mut buf).unwrap();
    buf.to_vec()
}

/// Length of the fixed header of an encoded packet.
fn fixed_header_len(wire: &[u8]) -> usize {
    1 + wire[1..].iter().position(|b| b & 0x80 == 0).unwrap() + 1
}

// ---------------------------------------------------------------- properties

proptest! {
    /// Encode then decode is the identity; `encoded_len` is exact; the
    /// decoded packet re-encodes to the same bytes.
    // MQTT-1.5.4-1 MQTT-1.5.4-2 MQTT-1.5.5-1 v5:MQTT-2.2.2-1 v5:MQTT-1.5.7-1
    #[test]
    fn round_trip((version, packet) in any_version_packet()) {
        let wire = encode(&packet, version);
        prop_assert_eq!(packet.encoded_len(version).unwrap(), wire.len());
        // `packet_size` reads the size off the fixed header alone.
        let header = 1 + wire[1..].iter().position(|b| b & 0x80 == 0).unwrap() + 1;
        prop_assert_eq!(fulmar_codec::packet_size(&wire[..header]), Some(wire.len()));
        prop_assert_eq!(fulmar_codec::packet_size(&wire[..header - 1]), None);
        let mut buf = BytesMut::from(&wire[..]);
        let decoded = decode(&mut buf, version, MAX).unwrap().unwrap();
        prop_assert!(buf.is_empty());
        prop_assert_eq!(&decoded, &packet);
        prop_assert_eq!(encode(&decoded, version), wire);
        // A copy is equal (PUBLISH properties copy an empty set apart).
        prop_assert_eq!(&decoded.clone(), &packet);
    }

    /// One byte at a time, with an empty read before each byte: `Ok(None)`
    /// until the last byte, the buffer holding exactly what was fed.
    #[test]
    fn byte_by_byte_with_empty_reads((version, packet) in any_version_packet()) {
        let wire = encode(&packet, version);
        let mut buf = BytesMut::new();
        for (i, byte) in wire.iter().enumerate() {
            prop_assert_eq!(decode(&mut buf, version, MAX), Ok(None));
            prop_assert_eq!(&buf[..], &wire[..i]);
            buf.extend_from_slice(&[*byte]);
            buf.extend_from_slice(&[]);
            let result = decode(&mut buf, version, MAX).unwrap();
            if i + 1 < wire.len() {
                prop_assert_eq!(result, None);
                prop_assert_eq!(&buf[..], &wire[..=i], "Ok(None) leaves the buffer untouched");
            } else {
                prop_assert_eq!(result.as_ref(), Some(&packet));
                prop_assert!(buf.is_empty());
            }
        }
    }

    /// Split in two at every byte boundary (packets up to 300 bytes).
    #[test]
    fn every_two_chunk_split((version, packet) in any_version_packet()) {
        let wire = encode(&packet, version);
        prop_assume!(wire.len() <= 300);
        for k in 0..=wire.len() {
            let mut buf = BytesMut::from(&wire[..k]);
            let first = decode(&mut buf, version, MAX).unwrap();
            if k < wire.len() {
                prop_assert_eq!(first, None);
                prop_assert_eq!(&buf[..], &wire[..k]);
                buf.extend_from_slice(&wire[k..]);
                let second = decode(&mut buf, version, MAX).unwrap();
                prop_assert_eq!(second.as_ref(), Some(&packet));
            } else {
                prop_assert_eq!(first.as_ref(), Some(&packet));
            }
            prop_assert!(buf.is_empty());
        }
    }

    /// A stream of packets in random chunks (empty ones included) decodes to
    /// the same packets in the same order, each consuming its own bytes.
    #[test]
    fn stream_in_random_chunks(
        (version, packets) in prop_oneof![
            vec(packet(V3), 1..8).prop_map(|p| (V3, p)),
            vec(packet(V5), 1..8).prop_map(|p| (V5, p)),
        ],
        chunks in vec(0..64usize, 1..32),
    ) {
        let wire: Vec<u8> = packets.iter().flat_map(|p| encode(p, version)).collect();
        let mut chunks = chunks;
        chunks.push(7); // progress even if every other chunk is empty
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        let mut sizes = chunks.iter().cycle();
        while fed < wire.len() {
            let n = (*sizes.next().unwrap()).min(wire.len() - fed);
            buf.extend_from_slice(&wire[fed..fed + n]);
            fed += n;
            while let Some(p) = decode(&mut buf, version, MAX).unwrap() {
                out.push(p);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(out, packets);
    }

    /// Too large: refused once the fixed header is complete, with none of
    /// the body buffered; exactly the maximum is accepted.
    #[test]
    fn too_large_is_refused_from_the_fixed_header((version, packet) in any_version_packet()) {
        let wire = encode(&packet, version);
        let size = wire.len();
        let max = u32::try_from(size - 1).unwrap();
        let header = fixed_header_len(&wire);
        // Before the remaining length is complete there is nothing to judge.
        let mut buf = BytesMut::from(&wire[..header - 1]);
        prop_assert_eq!(decode(&mut buf, version, max), Ok(None));
        let mut buf = BytesMut::from(&wire[..header]);
        let err = decode(&mut buf, version, max).unwrap_err();
        prop_assert_eq!(&err, &DecodeError::PacketTooLarge { size, max });
        prop_assert_eq!(err.reason_code(), fulmar_codec::ReasonCode::PacketTooLarge);
        let mut buf = BytesMut::from(&wire[..]);
        let exact = u32::try_from(size).unwrap();
        let decoded = decode(&mut buf, version, exact).unwrap();
        prop_assert_eq!(decoded.as_ref(), Some(&packet));
    }

    /// A Client Identifier of 1 to 23 of `[0-9a-zA-Z]` always decodes, in
    /// both versions, whatever the other CONNECT fields (the codec's share of
    /// "the Server MUST allow" such identifiers).
    // MQTT-3.1.3-5
    #[test]
    fn short_alphanumeric_client_ids_are_accepted(
        client_id in "[0-9a-zA-Z]{1,23}",
        packet in prop_oneof![connect(V3), connect(V5)],
    ) {
        let Packet::Connect(mut connect) = packet else {
            panic!("connect() yields CONNECT packets")
        };
        connect.client_id = MqttString::from(client_id.clone());
        let version = connect.protocol_version;
        let wire = encode(&Packet::from(connect.clone()), version);
        let mut buf = BytesMut::from(&wire[..]);
        let Some(Packet::Connect(decoded)) = decode(&mut buf, version, MAX).unwrap() else {
            panic!("not a CONNECT")
        };
        prop_assert_eq!(decoded.client_id.as_str(), client_id.as_str());
        prop_assert_eq!(decoded, connect);
    }
}
