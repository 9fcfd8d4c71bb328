//! SUBACK, subscribe acknowledgement (MQTT 5.0 section 3.9, MQTT 3.1.1 section 3.9).

use crate::encode::{Encode, public_encode};
use crate::error::{DecodeError, EncodeError};
use crate::properties::AckProperties;
use crate::property_codec::{decode_properties, encode_properties};
use crate::reason::SubAckReasonCode;
use crate::types::{PacketId, PacketType, ProtocolVersion};
use crate::wire::{Reader, Sink, read_packet_id};

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

impl SubAck {
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(r, PacketType::SubAck)?;
        let properties = match version {
            ProtocolVersion::V5 => decode_properties(r)?,
            ProtocolVersion::V31 | ProtocolVersion::V311 => AckProperties::default(),
        };
        let mut reason_codes = Vec::with_capacity(r.remaining());
        while !r.is_empty() {
            let code = r.u8("reason code")?;
            let reason = match (version, code) {
                // 3.1 has no failure code, but a 0x80 from a broker that
                // sends it anyway is read as what it means.
                (ProtocolVersion::V31 | ProtocolVersion::V311, 0x00..=0x02 | 0x80)
                | (ProtocolVersion::V5, _) => SubAckReasonCode::try_from(code).ok(),
                (ProtocolVersion::V31 | ProtocolVersion::V311, _) => None,
            };
            reason_codes.push(reason.ok_or(DecodeError::InvalidReasonCode {
                packet_type: PacketType::SubAck,
                code,
            })?);
        }
        if reason_codes.is_empty() {
            return Err(DecodeError::NoReasonCodes(PacketType::SubAck));
        }
        Ok(Self {
            packet_id,
            reason_codes,
            properties,
        })
    }
}

impl Encode for SubAck {
    const TYPE: PacketType = PacketType::SubAck;

    /// Under 3.1.1 every failure code is sent as 0x80 (Failure). MQTT 3.1 has
    /// no failure code; 0x80 is sent there too (it is what 3.1.1 added, and
    /// what a 3.1 SUBACK is decoded with), but a server session answers a 3.1
    /// client with QoS 0 instead, as mosquitto does.
    fn write_body<S: Sink>(&self, version: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
        if self.reason_codes.is_empty() {
            return Err(EncodeError::EmptyPayload(PacketType::SubAck));
        }
        s.put_u16(self.packet_id.get());
        match version {
            ProtocolVersion::V5 => encode_properties(&self.properties, s)?,
            ProtocolVersion::V31 | ProtocolVersion::V311 => {
                if !self.properties.is_empty() {
                    return Err(EncodeError::NotInV311 {
                        packet_type: PacketType::SubAck,
                        what: "properties",
                    });
                }
            }
        }
        for code in &self.reason_codes {
            let byte = match version {
                ProtocolVersion::V31 | ProtocolVersion::V311 if code.is_error() => 0x80,
                _ => code.as_u8(),
            };
            s.put_u8(byte);
        }
        Ok(())
    }
}

public_encode!(SubAck);
