//! PUBREC, publish received (QoS 2, part 1) (MQTT 5.0 section 3.5, MQTT 3.1.1 section 3.5).

use crate::properties::AckProperties;
use crate::reason::PubRecReasonCode;
use crate::types::PacketId;

/// PUBREC: publish received (QoS 2, part 1).
///
/// Under MQTT 3.1.1 only `packet_id` is sent: `reason_code` must be
/// `Success` and `properties` empty.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PubRec {
    /// Packet Identifier of the PUBLISH being acknowledged.
    pub packet_id: PacketId,
    /// PUBREC Reason Code (5.0).
    pub reason_code: PubRecReasonCode,
    /// Reason String and User Properties (5.0).
    pub properties: AckProperties,
}

impl PubRec {
    /// A successful PUBREC without properties.
    #[must_use]
    pub fn new(packet_id: PacketId) -> Self {
        Self {
            packet_id,
            reason_code: PubRecReasonCode::Success,
            properties: AckProperties::default(),
        }
    }
}

crate::ack::ack_codec!(PubRec);
