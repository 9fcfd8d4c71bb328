//! CONNECT, connection request (MQTT 5.0 section 3.1, MQTT 3.1.1 section 3.1).

use bytes::Bytes;

use crate::properties::{ConnectProperties, WillProperties};
use crate::string::MqttString;
use crate::types::{ProtocolVersion, QoS};

/// CONNECT: the first packet a client sends.
///
/// The packet is self-describing: its protocol level decides its version, so
/// `protocol_version` is the version it was decoded from or will be encoded in.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Connect {
    /// Protocol level 4 (3.1.1) or 5 (5.0).
    pub protocol_version: ProtocolVersion,
    /// Clean Start (5.0) / CleanSession (3.1.1).
    pub clean_start: bool,
    /// Keep Alive in seconds; 0 disables it.
    pub keep_alive: u16,
    /// Client Identifier; may be empty.
    pub client_id: MqttString,
    /// The Will Message, if the Will Flag is set.
    pub will: Option<Will>,
    /// User Name.
    pub username: Option<MqttString>,
    /// Password (Binary Data). MQTT 3.1.1 requires a user name with it.
    pub password: Option<Bytes>,
    /// CONNECT properties (empty under 3.1.1).
    pub properties: ConnectProperties,
}

impl Connect {
    /// A CONNECT with clean start, keep alive 60 s, no will, no credentials.
    #[must_use]
    pub fn new(protocol_version: ProtocolVersion, client_id: MqttString) -> Self {
        Self {
            protocol_version,
            clean_start: true,
            keep_alive: 60,
            client_id,
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        }
    }
}

/// The Will Message of a CONNECT (spec 3.1.2.5 and 3.1.3.2 to 3.1.3.4).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Will {
    /// Will Topic.
    pub topic: MqttString,
    /// Will Payload (Binary Data, at most 65 535 bytes).
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// Will Properties (empty under 3.1.1).
    pub properties: WillProperties,
}

impl Will {
    /// A QoS 0, non-retained will without properties.
    #[must_use]
    pub fn new(topic: MqttString, payload: Bytes) -> Self {
        Self {
            topic,
            payload,
            qos: QoS::AtMostOnce,
            retain: false,
            properties: WillProperties::default(),
        }
    }
}
