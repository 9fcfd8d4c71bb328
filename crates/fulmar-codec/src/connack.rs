//! CONNACK, connect acknowledgement (MQTT 5.0 section 3.2, MQTT 3.1.1 section 3.2).

use crate::encode::{Encode, public_encode};
use crate::error::{DecodeError, EncodeError};
use crate::properties::ConnAckProperties;
use crate::property_codec::{check_auth_decoded, decode_properties, encode_properties};
use crate::reason::ConnectReasonCode;
use crate::types::{PacketType, ProtocolVersion};
use crate::wire::{Reader, Sink};

/// CONNACK: the server's answer to CONNECT.
///
/// Under MQTT 3.1.1 `reason_code` is limited to the six codes that have a
/// 3.1.1 return code ([`ConnectReasonCode::to_v311`]) and `properties` is empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ConnAck {
    /// Session Present.
    pub session_present: bool,
    /// Connect Reason Code (3.1.1: return code).
    pub reason_code: ConnectReasonCode,
    /// CONNACK properties.
    pub properties: ConnAckProperties,
}

impl ConnAck {
    /// A CONNACK with `reason_code` and no properties.
    #[must_use]
    pub fn new(session_present: bool, reason_code: ConnectReasonCode) -> Self {
        Self {
            session_present,
            reason_code,
            properties: ConnAckProperties::default(),
        }
    }
}

impl ConnAck {
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let flags = r.u8("connect acknowledge flags")?;
        // MQTT 3.1 has no flags: the byte is reserved and not looked at.
        let flags = if version == ProtocolVersion::V31 {
            0
        } else {
            flags
        };
        if flags & 0xFE != 0 {
            return Err(DecodeError::ConnAckReservedFlags);
        }
        let session_present = flags & 1 != 0;
        let code = r.u8("connect reason code")?;
        let reason_code = match version {
            ProtocolVersion::V31 | ProtocolVersion::V311 => ConnectReasonCode::from_v311(code),
            ProtocolVersion::V5 => ConnectReasonCode::try_from(code).ok(),
        }
        .ok_or(DecodeError::InvalidReasonCode {
            packet_type: PacketType::ConnAck,
            code,
        })?;
        if session_present && reason_code != ConnectReasonCode::Success {
            return Err(DecodeError::SessionPresentOnError);
        }
        let properties: ConnAckProperties = match version {
            ProtocolVersion::V5 => decode_properties(r)?,
            ProtocolVersion::V31 | ProtocolVersion::V311 => ConnAckProperties::default(),
        };
        check_auth_decoded(
            properties.authentication_method.as_ref(),
            properties.authentication_data.as_ref(),
        )?;
        Ok(Self {
            session_present,
            reason_code,
            properties,
        })
    }
}

impl Encode for ConnAck {
    const TYPE: PacketType = PacketType::ConnAck;

    fn write_body<S: Sink>(&self, version: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
        if self.session_present && self.reason_code != ConnectReasonCode::Success {
            return Err(EncodeError::SessionPresentOnError);
        }
        let code = match version {
            ProtocolVersion::V5 => self.reason_code.as_u8(),
            ProtocolVersion::V31 | ProtocolVersion::V311 => {
                let not_in_v311 = |what| EncodeError::NotInV311 {
                    packet_type: PacketType::ConnAck,
                    what,
                };
                if !self.properties.is_empty() {
                    return Err(not_in_v311("properties"));
                }
                if self.session_present && version == ProtocolVersion::V31 {
                    return Err(EncodeError::NotInV31 {
                        packet_type: PacketType::ConnAck,
                        what: "Session Present",
                    });
                }
                self.reason_code
                    .to_v311()
                    .ok_or(not_in_v311("reason code"))?
            }
        };
        s.put_u8(u8::from(self.session_present));
        s.put_u8(code);
        if version == ProtocolVersion::V5 {
            encode_properties(&self.properties, s)?;
        }
        Ok(())
    }
}

public_encode!(ConnAck);
