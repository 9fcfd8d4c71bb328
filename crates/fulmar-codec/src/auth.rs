//! AUTH, authentication exchange (MQTT 5.0 section 3.15; no 3.1.1 equivalent).

use crate::properties::AuthProperties;
use crate::reason::AuthReasonCode;

/// AUTH: a step of enhanced authentication (MQTT 5.0 only).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Auth {
    /// Authenticate Reason Code.
    pub reason_code: AuthReasonCode,
    /// AUTH properties.
    pub properties: AuthProperties,
}
