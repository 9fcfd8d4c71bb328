//! UNSUBSCRIBE, unsubscribe request (MQTT 5.0 section 3.10, MQTT 3.1.1 section 3.10).

use crate::properties::UnsubscribeProperties;
use crate::string::MqttString;
use crate::types::PacketId;

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
