//! PUBCOMP, publish complete (QoS 2, part 3) (MQTT 5.0 section 3.7, MQTT 3.1.1 section 3.7).

use crate::properties::AckProperties;
use crate::reason::PubCompReasonCode;
use crate::types::PacketId;

/// PUBCOMP: publish complete (QoS 2, part 3).
///
/// Under MQTT 3.1.1 only `packet_id` is sent: `reason_code` must be
/// `Success` and `properties` empty.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PubComp {
    /// Packet Identifier of the PUBLISH being acknowledged.
    pub packet_id: PacketId,
    /// PUBCOMP Reason Code (5.0).
    pub reason_code: PubCompReasonCode,
    /// Reason String and User Properties (5.0).
    pub properties: AckProperties,
}

impl PubComp {
    /// A successful PUBCOMP without properties.
    #[must_use]
    pub fn new(packet_id: PacketId) -> Self {
        Self {
            packet_id,
            reason_code: PubCompReasonCode::Success,
            properties: AckProperties::default(),
        }
    }
}

crate::ack::ack_codec!(PubComp);
