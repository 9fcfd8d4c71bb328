//! PUBACK, publish acknowledgement (QoS 1) (MQTT 5.0 section 3.4, MQTT 3.1.1 section 3.4).

use crate::properties::AckProperties;
use crate::reason::PubAckReasonCode;
use crate::types::PacketId;

/// PUBACK: publish acknowledgement (QoS 1).
///
/// Under MQTT 3.1.1 only `packet_id` is sent: `reason_code` must be
/// `Success` and `properties` empty.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PubAck {
    /// Packet Identifier of the PUBLISH being acknowledged.
    pub packet_id: PacketId,
    /// PUBACK Reason Code (5.0).
    pub reason_code: PubAckReasonCode,
    /// Reason String and User Properties (5.0).
    pub properties: AckProperties,
}

impl PubAck {
    /// A successful PUBACK without properties.
    #[must_use]
    pub fn new(packet_id: PacketId) -> Self {
        Self {
            packet_id,
            reason_code: PubAckReasonCode::Success,
            properties: AckProperties::default(),
        }
    }
}

crate::ack::ack_codec!(PubAck);
