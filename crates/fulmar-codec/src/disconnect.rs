//! DISCONNECT, disconnect notification (MQTT 5.0 section 3.14, MQTT 3.1.1 section 3.14).

use crate::properties::DisconnectProperties;
use crate::reason::DisconnectReasonCode;

/// DISCONNECT. Under 3.1.1 it has no body: `reason_code` must be
/// `NormalDisconnection` and `properties` empty.
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
