//! Wire format shared by PUBACK, PUBREC, PUBREL and PUBCOMP (MQTT 5.0
//! sections 3.4 to 3.7): packet identifier, then in 5.0 an optional reason
//! code and optional properties.
//!
//! Encoding is minimal: Success without properties is sent as the packet
//! identifier alone (remaining length 2), another code without properties
//! omits the Property Length (remaining length 3).

use bytes::{BufMut, BytesMut};

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
    if version.is_v3() || r.is_empty() {
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

/// The packet identifier and reason code of an acknowledgement without
/// properties, from its body: the identifier, then (5.0) perhaps a reason
/// code. Same checks and errors as [`decode_ack`] over the same bytes.
#[inline]
pub(crate) fn decode_short_ack<C: AckCode>(
    body: &[u8],
    version: ProtocolVersion,
    packet_type: PacketType,
) -> Result<(PacketId, C), DecodeError> {
    let (id, code) = match (body, version) {
        (&[hi, lo], _) => (u16::from_be_bytes([hi, lo]), None),
        (&[hi, lo, code], ProtocolVersion::V5) => (u16::from_be_bytes([hi, lo]), Some(code)),
        // Only the two shapes above take this path.
        _ => {
            return Err(DecodeError::TrailingBytes {
                packet_type,
                count: body.len().saturating_sub(2),
            });
        }
    };
    let packet_id = PacketId::new(id).ok_or(DecodeError::ZeroPacketId(packet_type))?;
    let reason = match code {
        None => C::default(),
        Some(code) => {
            C::try_from(code).map_err(|_| DecodeError::InvalidReasonCode { packet_type, code })?
        }
    };
    Ok((packet_id, reason))
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
        ProtocolVersion::V31 | ProtocolVersion::V311 => {
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

/// The size of a PUBACK, PUBREC, PUBREL or PUBCOMP without properties
/// (4, or 5 with a reason code other than Success), the error
/// [`write_ack`] would give, or `None` when it has properties under 5.0
/// (the general encoder handles those).
#[inline]
pub(crate) fn short_ack_len<C: AckCode>(
    version: ProtocolVersion,
    packet_type: PacketType,
    reason: C,
    properties: &AckProperties,
) -> Option<Result<usize, EncodeError>> {
    let success = reason == C::default();
    match version {
        ProtocolVersion::V31 | ProtocolVersion::V311 if !success => {
            Some(Err(EncodeError::NotInV311 {
                packet_type,
                what: "reason code",
            }))
        }
        ProtocolVersion::V31 | ProtocolVersion::V311 if !properties.is_empty() => {
            Some(Err(EncodeError::NotInV311 {
                packet_type,
                what: "properties",
            }))
        }
        ProtocolVersion::V5 if !properties.is_empty() => None,
        _ => Some(Ok(if success { 4 } else { 5 })),
    }
}

/// Appends an acknowledgement that [`short_ack_len`] sized, with one write.
#[inline]
pub(crate) fn put_short_ack<C: AckCode>(
    buf: &mut BytesMut,
    len: usize,
    first: u8,
    packet_id: PacketId,
    reason: C,
) {
    let [hi, lo] = packet_id.get().to_be_bytes();
    // Whole-word writes, cheaper than copying a slice.
    if len == 4 {
        BufMut::put_u32(buf, u32::from_be_bytes([first, 2, hi, lo]));
    } else {
        BufMut::put_u32(buf, u32::from_be_bytes([first, 3, hi, lo]));
        BufMut::put_u8(buf, reason.into());
    }
}

/// Implements decode and encode for one of the four acknowledgements.
macro_rules! ack_codec {
    ($t:ident) => {
        impl $t {
            /// From the body of an acknowledgement without properties (see
            /// [`decode_short_ack`](crate::ack::decode_short_ack)).
            #[inline]
            pub(crate) fn decode_short(
                body: &[u8],
                version: crate::types::ProtocolVersion,
            ) -> Result<Self, crate::error::DecodeError> {
                let (packet_id, reason_code) =
                    crate::ack::decode_short_ack(body, version, crate::types::PacketType::$t)?;
                Ok(Self {
                    packet_id,
                    reason_code,
                    properties: crate::properties::AckProperties::default(),
                })
            }

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

            #[inline]
            fn encode_to(
                &self,
                version: crate::types::ProtocolVersion,
                buf: &mut bytes::BytesMut,
            ) -> Result<(), crate::error::EncodeError> {
                match crate::ack::short_ack_len(
                    version,
                    Self::TYPE,
                    self.reason_code,
                    &self.properties,
                ) {
                    Some(Ok(len)) => {
                        crate::ack::put_short_ack(
                            buf,
                            len,
                            (Self::TYPE.as_u8() << 4) | crate::encode::Encode::flags(self),
                            self.packet_id,
                            self.reason_code,
                        );
                        Ok(())
                    }
                    Some(Err(e)) => Err(e),
                    None => crate::encode::encode_counted(self, version, buf),
                }
            }

            #[inline]
            fn wire_len(
                &self,
                version: crate::types::ProtocolVersion,
            ) -> Result<usize, crate::error::EncodeError> {
                crate::ack::short_ack_len(version, Self::TYPE, self.reason_code, &self.properties)
                    .unwrap_or_else(|| crate::encode::encoded_len_counted(self, version))
            }
        }

        crate::encode::public_encode!($t);
    };
}

pub(crate) use ack_codec;
