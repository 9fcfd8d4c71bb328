//! UNSUBACK, unsubscribe acknowledgement (MQTT 5.0 section 3.11, MQTT 3.1.1 section 3.11).

use crate::encode::{Encode, public_encode};
use crate::error::{DecodeError, EncodeError};
use crate::properties::AckProperties;
use crate::property_codec::{decode_properties, encode_properties};
use crate::reason::UnsubAckReasonCode;
use crate::types::{PacketId, PacketType, ProtocolVersion};
use crate::wire::{Reader, Sink, read_packet_id};

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

impl UnsubAck {
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(r, PacketType::UnsubAck)?;
        if version.is_v3() {
            return Ok(Self::new(packet_id, Vec::new()));
        }
        let properties = decode_properties(r)?;
        let mut reason_codes = Vec::with_capacity(r.remaining());
        while !r.is_empty() {
            let code = r.u8("reason code")?;
            let reason =
                UnsubAckReasonCode::try_from(code).map_err(|_| DecodeError::InvalidReasonCode {
                    packet_type: PacketType::UnsubAck,
                    code,
                })?;
            reason_codes.push(reason);
        }
        if reason_codes.is_empty() {
            return Err(DecodeError::NoReasonCodes(PacketType::UnsubAck));
        }
        Ok(Self {
            packet_id,
            reason_codes,
            properties,
        })
    }
}

impl Encode for UnsubAck {
    const TYPE: PacketType = PacketType::UnsubAck;

    fn write_body<S: Sink>(&self, version: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
        match version {
            ProtocolVersion::V31 | ProtocolVersion::V311 => {
                let not_in_v311 = |what| EncodeError::NotInV311 {
                    packet_type: PacketType::UnsubAck,
                    what,
                };
                if !self.reason_codes.is_empty() {
                    return Err(not_in_v311("reason codes"));
                }
                if !self.properties.is_empty() {
                    return Err(not_in_v311("properties"));
                }
                s.put_u16(self.packet_id.get());
            }
            ProtocolVersion::V5 => {
                if self.reason_codes.is_empty() {
                    return Err(EncodeError::EmptyPayload(PacketType::UnsubAck));
                }
                s.put_u16(self.packet_id.get());
                encode_properties(&self.properties, s)?;
                for code in &self.reason_codes {
                    s.put_u8(code.as_u8());
                }
            }
        }
        Ok(())
    }
}

public_encode!(UnsubAck);
