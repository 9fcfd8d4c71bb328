//! SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK.

use core::num::NonZeroU32;

use bytes::BytesMut;

use super::*;
use crate::{
    EncodeError, MqttString, PacketId, PacketType, QoS, ReasonCode, RetainHandling, SubAck,
    SubAckReasonCode, Subscribe, SubscriptionOptions, UnsubAck, UnsubAckReasonCode, Unsubscribe,
};

fn id(v: u16) -> PacketId {
    PacketId::new(v).unwrap()
}

#[test]
fn v311_subscribe_bytes() {
    // v3:MQTT-3.8.3-1
    let sub = Subscribe::new(
        id(10),
        vec![
            ("a/+".into(), SubscriptionOptions::new(QoS::AtLeastOnce)),
            ("#".into(), SubscriptionOptions::new(QoS::ExactlyOnce)),
        ],
    );
    let bytes = round_trip(&sub.into(), V3);
    assert_eq!(
        bytes,
        frame(
            0x82,
            &[&[0, 10][..], &s("a/+"), &[1], &s("#"), &[2]].concat()
        )
    );
}

#[test]
fn v5_subscribe_options_round_trip() {
    // MQTT-3.8.3-1
    let opts = SubscriptionOptions {
        qos: QoS::ExactlyOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: RetainHandling::DoNotSend,
    };
    let mut sub = Subscribe::new(id(1), vec![("t".into(), opts)]);
    sub.properties.subscription_identifier = NonZeroU32::new(4000);
    sub.properties
        .user_properties
        .push(("u".into(), "v".into()));
    let bytes = round_trip(&sub.clone().into(), V5);
    assert_eq!(bytes.last(), Some(&0b0010_1110));
    // 3.1.1 has none of those options.
    assert!(matches!(
        sub.encode(V3, &mut BytesMut::new()),
        Err(EncodeError::NotInV311 { .. })
    ));
    for rh in [
        RetainHandling::SendAtSubscribe,
        RetainHandling::SendAtSubscribeIfNew,
    ] {
        let o = SubscriptionOptions {
            retain_handling: rh,
            ..SubscriptionOptions::default()
        };
        round_trip(&Subscribe::new(id(2), vec![("x".into(), o)]).into(), V5);
    }
}

#[test]
fn subscribe_without_filters() {
    // v5:MQTT-3.8.3-2 v3:MQTT-3.8.3-3
    assert_eq!(
        dec(&[0x82, 0x02, 0x00, 0x01], V3),
        Err(DecodeError::NoTopicFilters(PacketType::Subscribe))
    );
    let err = dec(&[0x82, 0x03, 0x00, 0x01, 0x00], V5).unwrap_err();
    assert_eq!(err, DecodeError::NoTopicFilters(PacketType::Subscribe));
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
    assert_eq!(
        Subscribe::new(id(1), vec![]).encode(V5, &mut BytesMut::new()),
        Err(EncodeError::EmptyPayload(PacketType::Subscribe))
    );
}

#[test]
fn subscribe_reserved_option_bits() {
    // v5:MQTT-3.8.3-5 v3:MQTT-3.8.3-4
    let bytes = frame(0x82, &[&[0, 1][..], &s("t"), &[0x04]].concat());
    assert_eq!(
        dec(&bytes, V3),
        Err(DecodeError::SubscriptionOptionsReserved(0x04))
    );
    assert!(
        dec(
            &frame(0x82, &[&[0, 1][..], &[0], &s("t"), &[0x04]].concat()),
            V5
        )
        .is_ok()
    );
    let bytes = frame(0x82, &[&[0, 1][..], &[0], &s("t"), &[0x40]].concat());
    let err = dec(&bytes, V5).unwrap_err();
    assert_eq!(err, DecodeError::SubscriptionOptionsReserved(0x40));
    assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
}

#[test]
fn subscribe_qos_3_and_retain_handling_3() {
    let bytes = frame(0x82, &[&[0, 1][..], &s("t"), &[0x03]].concat());
    assert_eq!(
        dec(&bytes, V3),
        Err(DecodeError::InvalidQoS("subscription options"))
    );
    let bytes = frame(0x82, &[&[0, 1][..], &[0], &s("t"), &[0x30]].concat());
    let err = dec(&bytes, V5).unwrap_err();
    assert_eq!(err, DecodeError::InvalidRetainHandling);
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
}

#[test]
fn no_local_on_shared_subscription() {
    // v5:MQTT-3.8.3-4
    let bytes = frame(
        0x82,
        &[&[0, 1][..], &[0], &s("$share/g/t"), &[0x04]].concat(),
    );
    assert_eq!(
        dec(&bytes, V5),
        Err(DecodeError::NoLocalOnSharedSubscription)
    );
    let o = SubscriptionOptions {
        no_local: true,
        ..SubscriptionOptions::default()
    };
    let sub = Subscribe::new(id(1), vec![("$share/g/t".into(), o)]);
    assert_eq!(
        sub.encode(V5, &mut BytesMut::new()),
        Err(EncodeError::NoLocalOnSharedSubscription)
    );
}

#[test]
fn empty_filter_and_bad_utf8() {
    // v5:MQTT-4.7.3-1 v3:MQTT-4.7.3-1
    let bytes = frame(0x82, &[&[0, 1][..], &s(""), &[0]].concat());
    assert_eq!(
        dec(&bytes, V3),
        Err(DecodeError::EmptyTopicFilter(PacketType::Subscribe))
    );
    let sub = Subscribe::new(
        id(1),
        vec![(MqttString::new(), SubscriptionOptions::default())],
    );
    assert_eq!(
        sub.encode(V3, &mut BytesMut::new()),
        Err(EncodeError::EmptyTopicFilter)
    );
    // v3:MQTT-3.10.3-1 MQTT-3.10.3-1
    let bytes = frame(0xA2, &[&[0, 1][..], &[0, 1, 0xFE]].concat());
    assert!(matches!(
        dec(&bytes, V3),
        Err(DecodeError::InvalidString {
            field: "topic filter",
            ..
        })
    ));
    // Option byte missing.
    let bytes = frame(0x82, &[&[0, 1][..], &s("t")].concat());
    assert_eq!(
        dec(&bytes, V3),
        Err(DecodeError::Truncated {
            field: "subscription options"
        })
    );
}

#[test]
fn subscription_identifier_in_subscribe() {
    let bytes = frame(0x82, &[&[0, 1][..], &[2, 0x0B, 0], &s("t"), &[0]].concat());
    assert_eq!(
        dec(&bytes, V5),
        Err(DecodeError::InvalidPropertyValue { id: 0x0B, value: 0 })
    );
    let bytes = frame(
        0x82,
        &[&[0, 1][..], &[4, 0x0B, 1, 0x0B, 2], &s("t"), &[0]].concat(),
    );
    assert_eq!(
        dec(&bytes, V5),
        Err(DecodeError::DuplicateProperty {
            id: 0x0B,
            context: "SUBSCRIBE"
        })
    );
    // Four-byte variable byte integer.
    let bytes = frame(
        0x82,
        &[
            &[0, 1][..],
            &[5, 0x0B, 0xFF, 0xFF, 0xFF, 0x7F],
            &s("t"),
            &[0],
        ]
        .concat(),
    );
    let Packet::Subscribe(sub) = dec(&bytes, V5).unwrap() else {
        panic!()
    };
    assert_eq!(
        sub.properties.subscription_identifier,
        NonZeroU32::new(268_435_455)
    );
}

#[test]
fn suback_v311() {
    // v3:MQTT-3.9.3-2 v3:MQTT-3.8.4-5
    let ack = SubAck::new(
        id(3),
        vec![
            SubAckReasonCode::GrantedQoS0,
            SubAckReasonCode::GrantedQoS2,
            SubAckReasonCode::UnspecifiedError,
        ],
    );
    assert_eq!(
        round_trip(&ack.into(), V3),
        [0x90, 0x05, 0x00, 0x03, 0x00, 0x02, 0x80]
    );
    // 5.0 failure codes are sent as 0x80 Failure to a 3.1.1 client.
    let ack = SubAck::new(
        id(3),
        vec![
            SubAckReasonCode::NotAuthorized,
            SubAckReasonCode::QuotaExceeded,
        ],
    );
    assert_eq!(enc(&ack.into(), V3), [0x90, 0x04, 0x00, 0x03, 0x80, 0x80]);
    assert_eq!(
        dec(&[0x90, 0x03, 0x00, 0x03, 0x87], V3),
        Err(DecodeError::InvalidReasonCode {
            packet_type: PacketType::SubAck,
            code: 0x87
        })
    );
    assert_eq!(
        dec(&[0x90, 0x02, 0x00, 0x03], V3),
        Err(DecodeError::NoReasonCodes(PacketType::SubAck))
    );
}

#[test]
fn suback_v5() {
    // MQTT-3.9.3-2 v5:MQTT-3.8.4-6
    let all: Vec<_> = (0..=255u8)
        .filter_map(|v| SubAckReasonCode::try_from(v).ok())
        .collect();
    let mut ack = SubAck::new(id(3), all);
    ack.properties.reason_string = Some("r".into());
    round_trip(&ack.into(), V5);
    assert_eq!(
        dec(&[0x90, 0x04, 0x00, 0x03, 0x00, 0x03], V5),
        Err(DecodeError::InvalidReasonCode {
            packet_type: PacketType::SubAck,
            code: 3
        })
    );
    assert_eq!(
        SubAck::new(id(1), vec![]).encode(V5, &mut BytesMut::new()),
        Err(EncodeError::EmptyPayload(PacketType::SubAck))
    );
}

#[test]
fn unsubscribe_round_trips_and_errors() {
    // MQTT-3.10.3-2
    let u = Unsubscribe::new(id(4), vec!["a/b".into(), "c/#".into()]);
    let bytes = round_trip(&u.clone().into(), V3);
    assert_eq!(
        bytes,
        frame(0xA2, &[&[0, 4][..], &s("a/b"), &s("c/#")].concat())
    );
    let mut u5 = u;
    u5.properties.user_properties.push(("k".into(), "v".into()));
    round_trip(&u5.clone().into(), V5);
    assert!(matches!(
        u5.encode(V3, &mut BytesMut::new()),
        Err(EncodeError::NotInV311 { .. })
    ));
    assert_eq!(
        dec(&[0xA2, 0x02, 0x00, 0x01], V3),
        Err(DecodeError::NoTopicFilters(PacketType::Unsubscribe))
    );
    assert_eq!(
        Unsubscribe::new(id(1), vec![]).encode(V3, &mut BytesMut::new()),
        Err(EncodeError::EmptyPayload(PacketType::Unsubscribe))
    );
    // Only User Property is allowed.
    let bytes = frame(0xA2, &[&[0, 1][..], &[2, 0x0B, 1], &s("t")].concat());
    assert_eq!(
        dec(&bytes, V5),
        Err(DecodeError::PropertyNotAllowed {
            id: 0x0B,
            context: "UNSUBSCRIBE"
        })
    );
}

#[test]
fn unsuback_forms() {
    // v3: packet identifier only.
    assert_eq!(
        round_trip(&UnsubAck::new(id(4), vec![]).into(), V3),
        [0xB0, 0x02, 0x00, 0x04]
    );
    assert!(matches!(
        UnsubAck::new(id(4), vec![UnsubAckReasonCode::Success]).encode(V3, &mut BytesMut::new()),
        Err(EncodeError::NotInV311 { .. })
    ));
    // MQTT-3.11.3-2
    let codes: Vec<_> = (0..=255u8)
        .filter_map(|v| UnsubAckReasonCode::try_from(v).ok())
        .collect();
    let bytes = round_trip(&UnsubAck::new(id(4), codes).into(), V5);
    assert_eq!(&bytes[..5], &[0xB0, 0x0A, 0x00, 0x04, 0x00]);
    assert_eq!(
        dec(&[0xB0, 0x03, 0x00, 0x04, 0x00], V5),
        Err(DecodeError::NoReasonCodes(PacketType::UnsubAck))
    );
    assert_eq!(
        dec(&[0xB0, 0x04, 0x00, 0x04, 0x00, 0x01], V5),
        Err(DecodeError::InvalidReasonCode {
            packet_type: PacketType::UnsubAck,
            code: 1
        })
    );
    assert_eq!(
        UnsubAck::new(id(1), vec![]).encode(V5, &mut BytesMut::new()),
        Err(EncodeError::EmptyPayload(PacketType::UnsubAck))
    );
}
