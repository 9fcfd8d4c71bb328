//! SUBSCRIBE, subscribe request (MQTT 5.0 section 3.8, MQTT 3.1.1 section 3.8).

use crate::encode::{Encode, public_encode};
use crate::error::{DecodeError, EncodeError};
use crate::properties::SubscribeProperties;
use crate::property_codec::{decode_properties, encode_properties};
use crate::string::MqttString;
use crate::types::{PacketId, PacketType, ProtocolVersion, QoS};
use crate::wire::{Reader, Sink, put_string, read_packet_id};

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

fn is_shared(filter: &str) -> bool {
    filter.starts_with("$share/")
}

impl SubscriptionOptions {
    /// Parses the options byte for `version`.
    fn from_byte(b: u8, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let reserved = match version {
            ProtocolVersion::V311 => 0b1111_1100,
            ProtocolVersion::V5 => 0b1100_0000,
        };
        if b & reserved != 0 {
            return Err(DecodeError::SubscriptionOptionsReserved(b));
        }
        let qos =
            QoS::try_from(b & 0b11).map_err(|_| DecodeError::InvalidQoS("subscription options"))?;
        let retain_handling = RetainHandling::try_from((b >> 4) & 0b11)
            .map_err(|_| DecodeError::InvalidRetainHandling)?;
        Ok(Self {
            qos,
            no_local: b & 0b100 != 0,
            retain_as_published: b & 0b1000 != 0,
            retain_handling,
        })
    }

    /// The options byte for `version`.
    fn to_byte(self, version: ProtocolVersion) -> Result<u8, EncodeError> {
        let v5_bits = (u8::from(self.no_local) << 2)
            | (u8::from(self.retain_as_published) << 3)
            | ((self.retain_handling as u8) << 4);
        if version == ProtocolVersion::V311 && v5_bits != 0 {
            return Err(EncodeError::NotInV311 {
                packet_type: PacketType::Subscribe,
                what: "subscription options",
            });
        }
        Ok(self.qos.as_u8() | v5_bits)
    }
}

impl Subscribe {
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(r, PacketType::Subscribe)?;
        let properties = match version {
            ProtocolVersion::V5 => decode_properties(r)?,
            ProtocolVersion::V311 => SubscribeProperties::default(),
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.string("topic filter")?;
            if filter.is_empty() {
                return Err(DecodeError::EmptyTopicFilter(PacketType::Subscribe));
            }
            let options = SubscriptionOptions::from_byte(r.u8("subscription options")?, version)?;
            if options.no_local && is_shared(&filter) {
                return Err(DecodeError::NoLocalOnSharedSubscription);
            }
            filters.push((filter, options));
        }
        if filters.is_empty() {
            return Err(DecodeError::NoTopicFilters(PacketType::Subscribe));
        }
        Ok(Self {
            packet_id,
            filters,
            properties,
        })
    }
}

impl Encode for Subscribe {
    const TYPE: PacketType = PacketType::Subscribe;

    fn write_body<S: Sink>(&self, version: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::EmptyPayload(PacketType::Subscribe));
        }
        s.put_u16(self.packet_id.get());
        match version {
            ProtocolVersion::V5 => encode_properties(&self.properties, s)?,
            ProtocolVersion::V311 => {
                if !self.properties.is_empty() {
                    return Err(EncodeError::NotInV311 {
                        packet_type: PacketType::Subscribe,
                        what: "properties",
                    });
                }
            }
        }
        for (filter, options) in &self.filters {
            if filter.is_empty() {
                return Err(EncodeError::EmptyTopicFilter);
            }
            if options.no_local && is_shared(filter) {
                return Err(EncodeError::NoLocalOnSharedSubscription);
            }
            put_string(s, filter);
            s.put_u8(options.to_byte(version)?);
        }
        Ok(())
    }
}

public_encode!(Subscribe);
