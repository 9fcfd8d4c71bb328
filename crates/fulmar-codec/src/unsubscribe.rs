//! UNSUBSCRIBE, unsubscribe request (MQTT 5.0 section 3.10, MQTT 3.1.1 section 3.10).

use crate::encode::{Encode, public_encode};
use crate::error::{DecodeError, EncodeError};
use crate::properties::UnsubscribeProperties;
use crate::property_codec::{decode_properties, encode_properties};
use crate::string::MqttString;
use crate::types::{PacketId, PacketType, ProtocolVersion};
use crate::wire::{Reader, Sink, put_string, read_packet_id};

/// UNSUBSCRIBE: one or more topic filters to remove.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Unsubscribe {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// Topic filters; never empty on the wire.
    pub filters: Vec<MqttString>,
    /// UNSUBSCRIBE properties (empty under 3.1.1).
    pub properties: UnsubscribeProperties,
}

impl Unsubscribe {
    /// An UNSUBSCRIBE without properties.
    #[must_use]
    pub fn new(packet_id: PacketId, filters: Vec<MqttString>) -> Self {
        Self {
            packet_id,
            filters,
            properties: UnsubscribeProperties::default(),
        }
    }
}

impl Unsubscribe {
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(r, PacketType::Unsubscribe)?;
        let properties = match version {
            ProtocolVersion::V5 => decode_properties(r)?,
            ProtocolVersion::V31 | ProtocolVersion::V311 => UnsubscribeProperties::default(),
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.string("topic filter")?;
            if filter.is_empty() {
                return Err(DecodeError::EmptyTopicFilter(PacketType::Unsubscribe));
            }
            filters.push(filter);
        }
        if filters.is_empty() {
            return Err(DecodeError::NoTopicFilters(PacketType::Unsubscribe));
        }
        Ok(Self {
            packet_id,
            filters,
            properties,
        })
    }
}

impl Encode for Unsubscribe {
    const TYPE: PacketType = PacketType::Unsubscribe;

    fn write_body<S: Sink>(&self, version: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::EmptyPayload(PacketType::Unsubscribe));
        }
        s.put_u16(self.packet_id.get());
        match version {
            ProtocolVersion::V5 => encode_properties(&self.properties, s)?,
            ProtocolVersion::V31 | ProtocolVersion::V311 => {
                if !self.properties.is_empty() {
                    return Err(EncodeError::NotInV311 {
                        packet_type: PacketType::Unsubscribe,
                        what: "properties",
                    });
                }
            }
        }
        for filter in &self.filters {
            if filter.is_empty() {
                return Err(EncodeError::EmptyTopicFilter);
            }
            put_string(s, filter);
        }
        Ok(())
    }
}

public_encode!(Unsubscribe);
