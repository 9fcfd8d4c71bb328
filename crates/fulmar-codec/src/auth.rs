//! AUTH, authentication exchange (MQTT 5.0 section 3.15; no 3.1.1 equivalent).

use crate::encode::{Encode, public_encode};
use crate::error::{DecodeError, EncodeError};
use crate::properties::AuthProperties;
use crate::property_codec::{check_auth_decoded, decode_properties, encode_properties};
use crate::reason::AuthReasonCode;
use crate::types::{PacketType, ProtocolVersion};
use crate::wire::{Reader, Sink};

/// AUTH: a step of enhanced authentication (MQTT 5.0 only).
///
/// Success without properties is encoded with remaining length 0; otherwise
/// the reason code and the Property Length are both present (spec 3.15.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Auth {
    /// Authenticate Reason Code.
    pub reason_code: AuthReasonCode,
    /// AUTH properties.
    pub properties: AuthProperties,
}

impl Auth {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        if r.is_empty() {
            return Ok(Self::default());
        }
        let code = r.u8("reason code")?;
        let reason_code =
            AuthReasonCode::try_from(code).map_err(|_| DecodeError::InvalidReasonCode {
                packet_type: PacketType::Auth,
                code,
            })?;
        let properties: AuthProperties = decode_properties(r)?;
        check_auth_decoded(
            properties.authentication_method.as_ref(),
            properties.authentication_data.as_ref(),
        )?;
        if properties.authentication_method.is_none() {
            return Err(DecodeError::AuthWithoutMethod);
        }
        Ok(Self {
            reason_code,
            properties,
        })
    }
}

impl Encode for Auth {
    const TYPE: PacketType = PacketType::Auth;

    fn write_body<S: Sink>(&self, version: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
        if version.is_v3() {
            return Err(EncodeError::NotInV311 {
                packet_type: PacketType::Auth,
                what: "AUTH packet",
            });
        }
        if self.reason_code != AuthReasonCode::Success || !self.properties.is_empty() {
            if self.properties.authentication_method.is_none() {
                return Err(if self.properties.authentication_data.is_some() {
                    EncodeError::AuthDataWithoutMethod
                } else {
                    EncodeError::AuthWithoutMethod
                });
            }
            s.put_u8(self.reason_code.as_u8());
            encode_properties(&self.properties, s)?;
        }
        Ok(())
    }
}

public_encode!(Auth);
