//! CONNACK, connect acknowledgement (MQTT 5.0 section 3.2, MQTT 3.1.1 section 3.2).

use crate::properties::ConnAckProperties;
use crate::reason::ConnectReasonCode;

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
