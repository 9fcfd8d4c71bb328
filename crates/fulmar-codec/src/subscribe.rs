//! SUBSCRIBE, subscribe request (MQTT 5.0 section 3.8, MQTT 3.1.1 section 3.8).

use crate::properties::SubscribeProperties;
use crate::string::MqttString;
use crate::types::{PacketId, QoS};

/// SUBSCRIBE: one or more topic filters, each with its options.
///
/// Filters are checked only for what the packet format forbids (UTF-8,
/// non-empty); the topic filter syntax is `fulmar-topic`'s job.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Subscribe {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// Topic filters with their subscription options; never empty on the wire.
    pub filters: Vec<(MqttString, SubscriptionOptions)>,
    /// SUBSCRIBE properties (empty under 3.1.1).
    pub properties: SubscribeProperties,
}

impl Subscribe {
    /// A SUBSCRIBE without properties.
    #[must_use]
    pub fn new(packet_id: PacketId, filters: Vec<(MqttString, SubscriptionOptions)>) -> Self {
        Self {
            packet_id,
            filters,
            properties: SubscribeProperties::default(),
        }
    }
}

/// Subscription Options (MQTT 5.0 section 3.8.3.1). Under MQTT 3.1.1 only
/// `qos` exists (the Requested QoS byte); the other fields must keep their defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// No Local: do not forward messages published by this connection.
    pub no_local: bool,
    /// Retain As Published: keep the RETAIN flag when forwarding.
    pub retain_as_published: bool,
    /// Retain Handling.
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options with `qos` and every 5.0 option at its default (valid in 3.1.1).
    #[must_use]
    pub fn new(qos: QoS) -> Self {
        Self {
            qos,
            ..Self::default()
        }
    }
}

/// Retain Handling subscription option (MQTT 5.0 section 3.8.3.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(u8)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send retained messages only if the subscription does not exist yet.
    SendAtSubscribeIfNew = 1,
    /// 2: do not send retained messages.
    DoNotSend = 2,
}

impl TryFrom<u8> for RetainHandling {
    type Error = crate::error::InvalidValue;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        match value {
            0 => Ok(Self::SendAtSubscribe),
            1 => Ok(Self::SendAtSubscribeIfNew),
            2 => Ok(Self::DoNotSend),
            _ => Err(crate::error::InvalidValue::new("retain handling", value)),
        }
    }
}
