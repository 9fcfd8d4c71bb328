//! Typed MQTT 5.0 properties, one struct per packet (spec 2.2.2).
//!
//! Every struct is empty (its `Default`) under MQTT 3.1.1. An empty
//! `user_properties` vector does not allocate.

use core::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;

use crate::string::MqttString;
use crate::types::QoS;

/// A list of User Properties (name, value), in the order received (spec 3.1.2.11.8).
pub type UserProperties = Vec<(MqttString, MqttString)>;

/// Payload Format Indicator (spec 3.3.2.3.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(u8)]
pub enum PayloadFormat {
    /// 0: unspecified bytes.
    #[default]
    Unspecified = 0,
    /// 1: UTF-8 encoded character data.
    Utf8 = 1,
}

impl PayloadFormat {
    /// Checks `payload` against the indicator: with [`PayloadFormat::Utf8`]
    /// the payload must be well-formed UTF-8 (spec 3.3.2.3.2). The codec does
    /// not enforce this; a receiver may, and answer with reason code 0x99
    /// (Payload format invalid).
    #[must_use]
    pub fn is_valid_payload(self, payload: &[u8]) -> bool {
        match self {
            Self::Unspecified => true,
            Self::Utf8 => core::str::from_utf8(payload).is_ok(),
        }
    }
}

/// Properties of CONNECT (spec 3.1.2.11).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ConnectProperties {
    /// 0x11 Session Expiry Interval in seconds (absent means 0).
    pub session_expiry_interval: Option<u32>,
    /// 0x21 Receive Maximum (absent means 65 535).
    pub receive_maximum: Option<NonZeroU16>,
    /// 0x27 Maximum Packet Size the client accepts (absent means no limit).
    pub maximum_packet_size: Option<NonZeroU32>,
    /// 0x22 Topic Alias Maximum the client accepts (absent means 0).
    pub topic_alias_maximum: Option<u16>,
    /// 0x19 Request Response Information.
    pub request_response_information: Option<bool>,
    /// 0x17 Request Problem Information (absent means true).
    pub request_problem_information: Option<bool>,
    /// 0x26 User Properties.
    pub user_properties: UserProperties,
    /// 0x15 Authentication Method (enhanced authentication).
    pub authentication_method: Option<MqttString>,
    /// 0x16 Authentication Data.
    pub authentication_data: Option<Bytes>,
}

/// Will Properties in the CONNECT payload (spec 3.1.3.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct WillProperties {
    /// 0x18 Will Delay Interval in seconds.
    pub will_delay_interval: Option<u32>,
    /// 0x01 Payload Format Indicator.
    pub payload_format_indicator: Option<PayloadFormat>,
    /// 0x02 Message Expiry Interval in seconds.
    pub message_expiry_interval: Option<u32>,
    /// 0x03 Content Type.
    pub content_type: Option<MqttString>,
    /// 0x08 Response Topic.
    pub response_topic: Option<MqttString>,
    /// 0x09 Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// 0x26 User Properties.
    pub user_properties: UserProperties,
}

/// Properties of CONNACK (spec 3.2.2.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ConnAckProperties {
    /// 0x11 Session Expiry Interval chosen by the server.
    pub session_expiry_interval: Option<u32>,
    /// 0x21 Receive Maximum of the server.
    pub receive_maximum: Option<NonZeroU16>,
    /// 0x24 Maximum QoS the server supports: only QoS 0 or 1 may be sent (absent means 2).
    pub maximum_qos: Option<QoS>,
    /// 0x25 Retain Available.
    pub retain_available: Option<bool>,
    /// 0x27 Maximum Packet Size the server accepts.
    pub maximum_packet_size: Option<NonZeroU32>,
    /// 0x12 Assigned Client Identifier.
    pub assigned_client_identifier: Option<MqttString>,
    /// 0x22 Topic Alias Maximum the server accepts.
    pub topic_alias_maximum: Option<u16>,
    /// 0x1F Reason String.
    pub reason_string: Option<MqttString>,
    /// 0x26 User Properties.
    pub user_properties: UserProperties,
    /// 0x28 Wildcard Subscription Available.
    pub wildcard_subscription_available: Option<bool>,
    /// 0x29 Subscription Identifiers Available.
    pub subscription_identifiers_available: Option<bool>,
    /// 0x2A Shared Subscription Available.
    pub shared_subscription_available: Option<bool>,
    /// 0x13 Server Keep Alive.
    pub server_keep_alive: Option<u16>,
    /// 0x1A Response Information.
    pub response_information: Option<MqttString>,
    /// 0x1C Server Reference.
    pub server_reference: Option<MqttString>,
    /// 0x15 Authentication Method.
    pub authentication_method: Option<MqttString>,
    /// 0x16 Authentication Data.
    pub authentication_data: Option<Bytes>,
}

/// Properties of PUBLISH (spec 3.3.2.3).
#[derive(Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PublishProperties {
    /// 0x01 Payload Format Indicator.
    pub payload_format_indicator: Option<PayloadFormat>,
    /// 0x02 Message Expiry Interval in seconds.
    pub message_expiry_interval: Option<u32>,
    /// 0x23 Topic Alias.
    pub topic_alias: Option<NonZeroU16>,
    /// 0x08 Response Topic.
    pub response_topic: Option<MqttString>,
    /// 0x09 Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// 0x26 User Properties.
    pub user_properties: UserProperties,
    /// 0x0B Subscription Identifiers (server to client; may repeat), each 1..=268 435 455.
    pub subscription_identifiers: Vec<NonZeroU32>,
    /// 0x03 Content Type.
    pub content_type: Option<MqttString>,
}

/// A broker copies each message once per subscriber, most of them without
/// properties: those are copied without looking at each field.
impl Clone for PublishProperties {
    #[inline]
    fn clone(&self) -> Self {
        if self.is_empty() {
            return Self::default();
        }
        let Self {
            payload_format_indicator,
            message_expiry_interval,
            topic_alias,
            response_topic,
            correlation_data,
            user_properties,
            subscription_identifiers,
            content_type,
        } = self;
        Self {
            payload_format_indicator: *payload_format_indicator,
            message_expiry_interval: *message_expiry_interval,
            topic_alias: *topic_alias,
            response_topic: response_topic.clone(),
            correlation_data: correlation_data.clone(),
            user_properties: user_properties.clone(),
            subscription_identifiers: subscription_identifiers.clone(),
            content_type: content_type.clone(),
        }
    }
}

/// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK
/// (spec 3.4.2.2 and following): a reason string and user properties.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AckProperties {
    /// 0x1F Reason String.
    pub reason_string: Option<MqttString>,
    /// 0x26 User Properties.
    pub user_properties: UserProperties,
}

/// Properties of SUBSCRIBE (spec 3.8.2.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SubscribeProperties {
    /// 0x0B Subscription Identifier, 1..=268 435 455.
    pub subscription_identifier: Option<NonZeroU32>,
    /// 0x26 User Properties.
    pub user_properties: UserProperties,
}

/// Properties of UNSUBSCRIBE (spec 3.10.2.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct UnsubscribeProperties {
    /// 0x26 User Properties.
    pub user_properties: UserProperties,
}

/// Properties of DISCONNECT (spec 3.14.2.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DisconnectProperties {
    /// 0x11 Session Expiry Interval (client only).
    pub session_expiry_interval: Option<u32>,
    /// 0x1F Reason String.
    pub reason_string: Option<MqttString>,
    /// 0x26 User Properties.
    pub user_properties: UserProperties,
    /// 0x1C Server Reference.
    pub server_reference: Option<MqttString>,
}

/// Properties of AUTH (spec 3.15.2.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AuthProperties {
    /// 0x15 Authentication Method.
    pub authentication_method: Option<MqttString>,
    /// 0x16 Authentication Data.
    pub authentication_data: Option<Bytes>,
    /// 0x1F Reason String.
    pub reason_string: Option<MqttString>,
    /// 0x26 User Properties.
    pub user_properties: UserProperties,
}

/// `is_empty` field by field. The exhaustive destructuring makes a field
/// added to a struct but not listed here a compile error.
macro_rules! impl_is_empty {
    ($($t:ty { $($opt:ident),* ; $($list:ident),* })*) => {$(
        impl $t {
            /// Whether no property is set (the only value MQTT 3.1.1 can carry).
            #[must_use]
            #[inline]
            pub fn is_empty(&self) -> bool {
                let Self { $($opt,)* $($list,)* } = self;
                // `&`, not `&&`: no early exit, so the tests fold into a few ORs and
                // one compare (most fields are a pointer or a length, zero when empty).
                true $(& $opt.is_none())* $(& $list.is_empty())*
            }
        }
    )*};
}

impl_is_empty!(
    ConnectProperties {
        session_expiry_interval, receive_maximum, maximum_packet_size, topic_alias_maximum,
        request_response_information, request_problem_information, authentication_method,
        authentication_data;
        user_properties
    }
    WillProperties {
        will_delay_interval, payload_format_indicator, message_expiry_interval, content_type,
        response_topic, correlation_data;
        user_properties
    }
    ConnAckProperties {
        session_expiry_interval, receive_maximum, maximum_qos, retain_available,
        maximum_packet_size, assigned_client_identifier, topic_alias_maximum, reason_string,
        wildcard_subscription_available, subscription_identifiers_available,
        shared_subscription_available, server_keep_alive, response_information,
        server_reference, authentication_method, authentication_data;
        user_properties
    }
    PublishProperties {
        payload_format_indicator, message_expiry_interval, topic_alias, response_topic,
        correlation_data, content_type;
        user_properties, subscription_identifiers
    }
    AckProperties { reason_string; user_properties }
    SubscribeProperties { subscription_identifier; user_properties }
    UnsubscribeProperties { ; user_properties }
    DisconnectProperties { session_expiry_interval, reason_string, server_reference; user_properties }
    AuthProperties { authentication_method, authentication_data, reason_string; user_properties }
);
