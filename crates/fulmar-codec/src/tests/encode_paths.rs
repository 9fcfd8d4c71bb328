//! The one-pass encoders of PUBLISH, SUBSCRIBE and CONNECT (validation and
//! length computed arithmetically, then written without a second check)
//! against the general encoder (a counting pass of `write_body`, which
//! validates, then the writing pass), on arbitrary packets, valid or not:
//! same bytes, same length, same error, nothing appended on error.
//!
//! Also the arithmetic lengths of the property sets against a counting pass
//! of their `write`, and the checks of PUBLISH against a plain transcription
//! of the rules in spec order.

use core::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;

use super::*;
use crate::encode::{Encode, encode_counted, encoded_len_counted};
use crate::property_codec::PropertySet;
use crate::wire::{Counter, MAX_VAR_INT};
use crate::{
    Connect, ConnectProperties, EncodeError, MqttString, PacketId, PayloadFormat, Publish,
    PublishProperties, QoS, RetainHandling, Subscribe, SubscribeProperties, SubscriptionOptions,
    Will, WillProperties,
};

// ---------------------------------------------------------------- strategies

/// Strings of every length class of the wildcard scan (0 to 70 bytes), with
/// and without wildcards, shared-subscription prefixes and multi-byte text.
fn text() -> impl Strategy<Value = MqttString> {
    prop_oneof![
        "[a-z/+#é]{0,6}",
        "[a-z/]{0,70}",
        "[a-z/+#]{0,70}",
        "\\$share/[a-z]{0,3}/[a-z/+#]{0,8}",
        "[a-zé€\u{2A6D4}/]{0,20}",
    ]
    .prop_map(MqttString::from)
}

/// Binary values, now and then longer than Binary Data allows.
fn binary() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        8 => vec(any::<u8>(), 0..20).prop_map(Bytes::from),
        1 => Just(Bytes::from(vec![7u8; 65_536])),
    ]
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn users() -> impl Strategy<Value = Vec<(MqttString, MqttString)>> {
    vec((text(), text()), 0..3)
}

/// Subscription identifiers, now and then above the largest Variable Byte Integer.
fn subscription_id() -> impl Strategy<Value = NonZeroU32> {
    prop_oneof![
        (1..=MAX_VAR_INT).prop_map(|v| NonZeroU32::new(v).unwrap()),
        Just(NonZeroU32::new(MAX_VAR_INT + 1).unwrap()),
    ]
}

fn publish_properties() -> impl Strategy<Value = PublishProperties> {
    prop_oneof![
        // Mostly empty, the common case (and the only one 3.1.1 accepts).
        2 => Just(PublishProperties::default()),
        3 => (
            of(prop_oneof![Just(PayloadFormat::Unspecified), Just(PayloadFormat::Utf8)]),
            of(any::<u32>()),
            of(any::<NonZeroU16>()),
            of(text()),
            of(binary()),
            users(),
            vec(subscription_id(), 0..3),
            of(text()),
        )
            .prop_map(|(pfi, expiry, alias, response, correlation, users, ids, content)| {
                PublishProperties {
                    payload_format_indicator: pfi,
                    message_expiry_interval: expiry,
                    topic_alias: alias,
                    response_topic: response,
                    correlation_data: correlation,
                    user_properties: users,
                    subscription_identifiers: ids,
                    content_type: content,
                }
            }),
    ]
}

fn publish() -> impl Strategy<Value = Publish> {
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        text(),
        of(any::<NonZeroU16>()),
        vec(any::<u8>(), 0..300),
        publish_properties(),
    )
        .prop_map(
            |(dup, qos, retain, topic, id, payload, properties)| Publish {
                dup,
                qos,
                retain,
                topic,
                packet_id: id.map(|id| PacketId::new(id.get()).unwrap()),
                payload: Bytes::from(payload),
                properties,
            },
        )
}

fn options() -> impl Strategy<Value = SubscriptionOptions> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(RetainHandling::SendAtSubscribe),
            Just(RetainHandling::SendAtSubscribeIfNew),
            Just(RetainHandling::DoNotSend)
        ],
    )
        .prop_map(|(qos, no_local, rap, rh)| SubscriptionOptions {
            qos,
            no_local,
            retain_as_published: rap,
            retain_handling: rh,
        })
}

fn subscribe() -> impl Strategy<Value = Subscribe> {
    (
        any::<NonZeroU16>(),
        vec(
            (
                text(),
                prop_oneof![
                    // Valid in 3.1.1 too.
                    qos().prop_map(SubscriptionOptions::new),
                    options()
                ],
            ),
            0..6,
        ),
        prop_oneof![
            Just(SubscribeProperties::default()),
            (of(subscription_id()), users()).prop_map(|(id, users)| SubscribeProperties {
                subscription_identifier: id,
                user_properties: users,
            }),
        ],
    )
        .prop_map(|(id, filters, properties)| Subscribe {
            packet_id: PacketId::new(id.get()).unwrap(),
            filters,
            properties,
        })
}

fn connect_properties() -> impl Strategy<Value = ConnectProperties> {
    prop_oneof![
        Just(ConnectProperties::default()),
        (
            of(any::<u32>()),
            of(any::<NonZeroU16>()),
            of(any::<NonZeroU32>()),
            of(any::<u16>()),
            of(any::<bool>()),
            of(any::<bool>()),
            users(),
            of(text()),
            of(binary()),
        )
            .prop_map(
                |(expiry, receive, size, alias, rri, rpi, users, method, data)| {
                    ConnectProperties {
                        session_expiry_interval: expiry,
                        receive_maximum: receive,
                        maximum_packet_size: size,
                        topic_alias_maximum: alias,
                        request_response_information: rri,
                        request_problem_information: rpi,
                        user_properties: users,
                        authentication_method: method,
                        authentication_data: data,
                    }
                }
            ),
    ]
}

fn will_properties() -> impl Strategy<Value = WillProperties> {
    prop_oneof![
        Just(WillProperties::default()),
        (
            of(any::<u32>()),
            of(prop_oneof![
                Just(PayloadFormat::Unspecified),
                Just(PayloadFormat::Utf8)
            ]),
            of(any::<u32>()),
            of(text()),
            of(text()),
            of(binary()),
            users(),
        )
            .prop_map(
                |(delay, pfi, expiry, content, response, correlation, users)| {
                    WillProperties {
                        will_delay_interval: delay,
                        payload_format_indicator: pfi,
                        message_expiry_interval: expiry,
                        content_type: content,
                        response_topic: response,
                        correlation_data: correlation,
                        user_properties: users,
                    }
                }
            ),
    ]
}

fn connect() -> impl Strategy<Value = Connect> {
    (
        prop_oneof![Just(V3), Just(V5)],
        any::<bool>(),
        any::<u16>(),
        text(),
        of((text(), binary(), qos(), any::<bool>(), will_properties())),
        of(text()),
        of(binary()),
        connect_properties(),
    )
        .prop_map(
            |(
                version,
                clean_start,
                keep_alive,
                client_id,
                will,
                username,
                password,
                properties,
            )| {
                Connect {
                    protocol_version: version,
                    clean_start,
                    keep_alive,
                    client_id,
                    will: will.map(|(topic, payload, qos, retain, properties)| Will {
                        topic,
                        payload,
                        qos,
                        retain,
                        properties,
                    }),
                    username,
                    password,
                    properties,
                    // Both ways of the protocol level byte, without another strategy.
                    bridge: keep_alive % 7 == 0,
                }
            },
        )
}

// ---------------------------------------------------------------- checks

/// `p.encode` and `p.encoded_len` agree with the general encoder in `version`:
/// bytes appended after existing content, length, error, nothing appended on error.
fn same_as_general<E: Encode>(p: &E, version: ProtocolVersion) -> Result<(), TestCaseError> {
    let mut fast = BytesMut::from(&b"x"[..]);
    let fast_result = crate::encode::encode(p, version, &mut fast);
    let mut general = BytesMut::from(&b"x"[..]);
    let general_result = encode_counted(p, version, &mut general);
    prop_assert_eq!(&fast_result, &general_result);
    prop_assert_eq!(&fast, &general);
    let len = crate::encode::encoded_len(p, version);
    prop_assert_eq!(&len, &encoded_len_counted(p, version));
    match fast_result {
        Ok(()) => prop_assert_eq!(len, Ok(fast.len() - 1)),
        Err(_) => prop_assert_eq!(&fast[..], b"x"),
    }
    Ok(())
}

/// The checks of a PUBLISH sender as the spec lists them, in the order the
/// encoder reports them (properties after the packet's own fields).
fn publish_rules(p: &Publish, version: ProtocolVersion) -> Option<EncodeError> {
    match (p.qos, p.packet_id) {
        (QoS::AtMostOnce, Some(_)) => return Some(EncodeError::UnexpectedPacketId),
        (qos, None) if qos != QoS::AtMostOnce => {
            return Some(EncodeError::MissingPacketId(qos.as_u8()));
        }
        _ => {}
    }
    if p.dup && p.qos == QoS::AtMostOnce {
        return Some(EncodeError::DupWithQoS0);
    }
    if version == V3 && !p.properties.is_empty() {
        return Some(EncodeError::NotInV311 {
            packet_type: crate::PacketType::Publish,
            what: "properties",
        });
    }
    if p.topic.is_empty() && (version == V3 || p.properties.topic_alias.is_none()) {
        return Some(EncodeError::EmptyTopicName);
    }
    if p.topic.contains(['+', '#']) {
        return Some(EncodeError::TopicNameWildcard);
    }
    if version == V5
        && p.properties
            .response_topic
            .as_ref()
            .is_some_and(|t| t.contains(['+', '#']))
    {
        return Some(EncodeError::ResponseTopicWildcard);
    }
    None
}

/// The arithmetic length of a property set is its counting pass, error included.
fn same_len_as_counted<P: PropertySet>(p: &P) -> Result<(), TestCaseError> {
    let mut c = Counter::default();
    let counted = p.write(&mut c).map(|()| c.0);
    prop_assert_eq!(p.wire_len(true), counted);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn publish_fast_path_matches_general_encoder(p in publish()) {
        // MQTT-3.3.2-2 MQTT-3.3.1-2 MQTT-4.7.3-1 v3:MQTT-2.3.1-1 v5:MQTT-2.2.1-2
        // v5:MQTT-2.2.1-3 v5:MQTT-3.3.2-14: every rule a sender must keep, on both paths.
        for version in [V3, V5] {
            same_as_general(&p, version)?;
            let result = p.encode(version, &mut BytesMut::new());
            if let Some(expected) = publish_rules(&p, version) {
                prop_assert_eq!(result, Err(expected));
            }
            // The header-only encoding is the full one without the payload.
            let mut header = BytesMut::new();
            let header_result = p.encode_header(version, &mut header);
            let mut full = BytesMut::new();
            prop_assert_eq!(&header_result, &p.encode(version, &mut full));
            if header_result.is_ok() {
                header.extend_from_slice(&p.payload);
                prop_assert_eq!(header, full);
            } else {
                prop_assert!(header.is_empty());
            }
        }
    }

    #[test]
    fn subscribe_fast_path_matches_general_encoder(p in subscribe()) {
        // v3:MQTT-3.8.3-3 v5:MQTT-3.8.3-2 MQTT-4.7.3-1 v5:MQTT-3.8.3-4 v3:MQTT-3.8.3-4:
        // at least one filter, none empty, no No Local on a shared
        // subscription, no 5.0 option bits under 3.1.1.
        for version in [V3, V5] {
            same_as_general(&p, version)?;
        }
    }

    #[test]
    fn connect_fast_path_matches_general_encoder(p in connect()) {
        // v3:MQTT-3.1.2-22: no password without a user name under 3.1.1;
        // v5:MQTT-3.3.2-14 for the will's Response Topic; string and binary limits.
        same_as_general(&p, p.protocol_version)?;
    }

    #[test]
    fn property_lengths_match_the_counting_pass(
        publish in publish_properties(),
        connect in connect_properties(),
        will in will_properties(),
        subscribe in (of(subscription_id()), users()),
    ) {
        // v5:MQTT-2.2.2-1: the Property Length covers exactly the properties.
        same_len_as_counted(&publish)?;
        same_len_as_counted(&connect)?;
        same_len_as_counted(&will)?;
        same_len_as_counted(&SubscribeProperties {
            subscription_identifier: subscribe.0,
            user_properties: subscribe.1,
        })?;
    }
}

#[test]
fn var_int_lengths_of_the_fixed_header() {
    // MQTT-1.5.5-1: the remaining length in 1, 2, 3 and 4 bytes (the four
    // constant-size writes of the fixed header), minimal each time.
    for (len, header) in [
        (0, 2),
        (127, 2),
        (128, 3),
        (16_383, 3),
        (16_384, 4),
        (2_097_151, 4),
        (2_097_152, 5),
    ] {
        let topic = MqttString::from("t");
        // Topic (3 bytes) and packet identifier (2) come before the payload.
        let payload = Bytes::from(vec![0u8; len.max(5) - 5]);
        let mut p = Publish::new(topic, payload);
        p.qos = QoS::AtLeastOnce;
        p.packet_id = PacketId::new(1);
        let body = 5 + p.payload.len();
        let mut buf = BytesMut::new();
        p.encode(V3, &mut buf).unwrap();
        assert_eq!(buf.len(), header + body, "{len}");
        let mut general = BytesMut::new();
        encode_counted(&p, V3, &mut general).unwrap();
        assert_eq!(buf, general);
        assert_eq!(&dec(&buf, V3).unwrap(), &Packet::from(p));
    }
}
