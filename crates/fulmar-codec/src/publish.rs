//! PUBLISH, publish message (MQTT 5.0 section 3.3, MQTT 3.1.1 section 3.3).

use bytes::Bytes;

use crate::properties::PublishProperties;
use crate::string::MqttString;
use crate::types::{PacketId, QoS};

/// PUBLISH: an application message.
///
/// `packet_id` is `Some` exactly when `qos` is 1 or 2. `topic` may be empty
/// only under MQTT 5.0 with a Topic Alias property (see the `alias` module).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Publish {
    /// DUP: this is a re-delivery.
    pub dup: bool,
    /// QoS.
    pub qos: QoS,
    /// RETAIN.
    pub retain: bool,
    /// Topic Name.
    pub topic: MqttString,
    /// Packet Identifier, present iff QoS > 0.
    pub packet_id: Option<PacketId>,
    /// The application message; a zero-copy slice of the received packet.
    pub payload: Bytes,
    /// PUBLISH properties (empty under 3.1.1).
    pub properties: PublishProperties,
}

impl Publish {
    /// A QoS 0, non-retained PUBLISH without properties.
    #[must_use]
    pub fn new(topic: MqttString, payload: Bytes) -> Self {
        Self {
            topic,
            payload,
            ..Self::default()
        }
    }
}
