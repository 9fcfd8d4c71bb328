//! DISCONNECT, disconnect notification (MQTT 5.0 section 3.14, MQTT 3.1.1 section 3.14).

use crate::encode::{Encode, public_encode};
use crate::error::{DecodeError, EncodeError};
use crate::properties::DisconnectProperties;
use crate::property_codec::{decode_properties, encode_properties};
use crate::reason::DisconnectReasonCode;
use crate::types::{PacketType, ProtocolVersion};
use crate::wire::{Reader, Sink};

/// DISCONNECT. Under 3.1.1 it has no body: `reason_code` must be
/// `NormalDisconnection` and `properties` empty.
///
/// Under 5.0 the encoding is minimal: Normal disconnection without properties
/// has remaining length 0, another code without properties omits the Property Length.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Disconnect {
    /// Disconnect Reason Code (5.0).
    pub reason_code: DisconnectReasonCode,
    /// DISCONNECT properties (5.0).
    pub properties: DisconnectProperties,
}

impl Disconnect {
    /// A DISCONNECT with `reason_code` and no properties.
    #[must_use]
    pub fn new(reason_code: DisconnectReasonCode) -> Self {
        Self {
            reason_code,
            properties: DisconnectProperties::default(),
        }
    }
}

impl Disconnect {
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        if version.is_v3() || r.is_empty() {
            return Ok(Self::default());
        }
        let code = r.u8("reason code")?;
        let reason_code =
            DisconnectReasonCode::try_from(code).map_err(|_| DecodeError::InvalidReasonCode {
                packet_type: PacketType::Disconnect,
                code,
            })?;
        let properties = if r.is_empty() {
            DisconnectProperties::default()
        } else {
            decode_properties(r)?
        };
        Ok(Self {
            reason_code,
            properties,
        })
    }
}

impl Encode for Disconnect {
    const TYPE: PacketType = PacketType::Disconnect;

    fn write_body<S: Sink>(&self, version: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
        let has_properties = !self.properties.is_empty();
        match version {
            ProtocolVersion::V31 | ProtocolVersion::V311 => {
                let not_in_v311 = |what| EncodeError::NotInV311 {
                    packet_type: PacketType::Disconnect,
                    what,
                };
                if self.reason_code != DisconnectReasonCode::NormalDisconnection {
                    return Err(not_in_v311("reason code"));
                }
                if has_properties {
                    return Err(not_in_v311("properties"));
                }
            }
            ProtocolVersion::V5 => {
                if self.reason_code != DisconnectReasonCode::NormalDisconnection || has_properties {
                    s.put_u8(self.reason_code.as_u8());
                }
                if has_properties {
                    encode_properties(&self.properties, s)?;
                }
            }
        }
        Ok(())
    }
}

public_encode!(Disconnect);
