//! SUBACK, subscribe acknowledgement (MQTT 5.0 section 3.9, MQTT 3.1.1 section 3.9).

use crate::properties::AckProperties;
use crate::reason::SubAckReasonCode;
use crate::types::PacketId;

/// SUBACK: one reason code per topic filter of the SUBSCRIBE, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SubAck {
    /// Packet Identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// Reason codes (3.1.1: return codes; failures are sent as 0x80).
    pub reason_codes: Vec<SubAckReasonCode>,
    /// Reason String and User Properties (5.0).
    pub properties: AckProperties,
}

impl SubAck {
    /// A SUBACK without properties.
    #[must_use]
    pub fn new(packet_id: PacketId, reason_codes: Vec<SubAckReasonCode>) -> Self {
        Self {
            packet_id,
            reason_codes,
            properties: AckProperties::default(),
        }
    }
}
