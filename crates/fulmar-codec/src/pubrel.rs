//! PUBREL, publish release (QoS 2, part 2) (MQTT 5.0 section 3.6, MQTT 3.1.1 section 3.6).

use crate::properties::AckProperties;
use crate::reason::PubRelReasonCode;
use crate::types::PacketId;

/// PUBREL: publish release (QoS 2, part 2).
///
/// Under MQTT 3.1.1 only `packet_id` is sent: `reason_code` must be
/// `Success` and `properties` empty.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PubRel {
    /// Packet Identifier of the PUBLISH being acknowledged.
    pub packet_id: PacketId,
    /// PUBREL Reason Code (5.0).
    pub reason_code: PubRelReasonCode,
    /// Reason String and User Properties (5.0).
    pub properties: AckProperties,
}

impl PubRel {
    /// A successful PUBREL without properties.
    #[must_use]
    pub fn new(packet_id: PacketId) -> Self {
        Self {
            packet_id,
            reason_code: PubRelReasonCode::Success,
            properties: AckProperties::default(),
        }
    }
}

crate::ack::ack_codec!(PubRel);
