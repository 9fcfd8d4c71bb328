//! Wire format shared by PUBACK, PUBREC, PUBREL and PUBCOMP (MQTT 5.0
//! sections 3.4 to 3.7): packet identifier, then in 5.0 an optional reason
//! code and optional properties.
//!
//! Encoding is minimal: Success without properties is sent as the packet
//! identifier alone (remaining length 2), another code without properties
//! omits the Property Length (remaining length 3).

use crate::error::{DecodeError, EncodeError};
use crate::properties::AckProperties;
use crate::property_codec::{decode_properties, encode_properties};
use crate::types::{PacketId, PacketType, ProtocolVersion};
use crate::wire::{Reader, Sink, read_packet_id};

/// A per-packet reason code whose `Default` is Success.
pub(crate) trait AckCode: Copy + Default + PartialEq + Into<u8> + TryFrom<u8> {}

impl<T: Copy + Default + PartialEq + Into<u8> + TryFrom<u8>> AckCode for T {}

pub(crate) fn decode_ack<C: AckCode>(
    r: &mut Reader<'_>,
    version: ProtocolVersion,
    packet_type: PacketType,
) -> Result<(PacketId, C, AckProperties), DecodeError> {
    let packet_id = read_packet_id(r, packet_type)?;
    if version == ProtocolVersion::V311 || r.is_empty() {
        return Ok((packet_id, C::default(), AckProperties::default()));
    }
    let code = r.u8("reason code")?;
    let reason =
        C::try_from(code).map_err(|_| DecodeError::InvalidReasonCode { packet_type, code })?;
    let properties = if r.is_empty() {
        AckProperties::default()
    } else {
        decode_properties(r)?
    };
    Ok((packet_id, reason, properties))
}

pub(crate) fn write_ack<S: Sink, C: AckCode>(
    s: &mut S,
    version: ProtocolVersion,
    packet_type: PacketType,
    packet_id: PacketId,
    reason: C,
    properties: &AckProperties,
) -> Result<(), EncodeError> {
    match version {
        ProtocolVersion::V311 => {
            if reason != C::default() {
                return Err(EncodeError::NotInV311 {
                    packet_type,
                    what: "reason code",
                });
            }
            if !properties.is_empty() {
                return Err(EncodeError::NotInV311 {
                    packet_type,
                    what: "properties",
                });
            }
            s.put_u16(packet_id.get());
        }
        ProtocolVersion::V5 => {
            s.put_u16(packet_id.get());
            let has_properties = !properties.is_empty();
            if reason != C::default() || has_properties {
                s.put_u8(reason.into());
            }
            if has_properties {
                encode_properties(properties, s)?;
            }
        }
    }
    Ok(())
}

/// Implements decode and encode for one of the four acknowledgements.
macro_rules! ack_codec {
    ($t:ident) => {
        impl $t {
            pub(crate) fn decode(
                r: &mut crate::wire::Reader<'_>,
                version: crate::types::ProtocolVersion,
            ) -> Result<Self, crate::error::DecodeError> {
                let (packet_id, reason_code, properties) =
                    crate::ack::decode_ack(r, version, crate::types::PacketType::$t)?;
                Ok(Self {
                    packet_id,
                    reason_code,
                    properties,
                })
            }
        }

        impl crate::encode::Encode for $t {
            const TYPE: crate::types::PacketType = crate::types::PacketType::$t;

            fn write_body<S: crate::wire::Sink>(
                &self,
                version: crate::types::ProtocolVersion,
                s: &mut S,
            ) -> Result<(), crate::error::EncodeError> {
                crate::ack::write_ack(
                    s,
                    version,
                    Self::TYPE,
                    self.packet_id,
                    self.reason_code,
                    &self.properties,
                )
            }
        }

        crate::encode::public_encode!($t);
    };
}

pub(crate) use ack_codec;
