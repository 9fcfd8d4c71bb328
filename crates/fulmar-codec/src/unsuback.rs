//! UNSUBACK, unsubscribe acknowledgement (MQTT 5.0 section 3.11, MQTT 3.1.1 section 3.11).

use crate::properties::AckProperties;
use crate::reason::UnsubAckReasonCode;
use crate::types::PacketId;

/// UNSUBACK: under 5.0 one reason code per topic filter of the UNSUBSCRIBE;
/// under 3.1.1 only the packet identifier (`reason_codes` must be empty).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct UnsubAck {
    /// Packet Identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// Reason codes (5.0 only).
    pub reason_codes: Vec<UnsubAckReasonCode>,
    /// Reason String and User Properties (5.0).
    pub properties: AckProperties,
}

impl UnsubAck {
    /// An UNSUBACK without properties.
    #[must_use]
    pub fn new(packet_id: PacketId, reason_codes: Vec<UnsubAckReasonCode>) -> Self {
        Self {
            packet_id,
            reason_codes,
            properties: AckProperties::default(),
        }
    }
}
