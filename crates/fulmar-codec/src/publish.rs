//! PUBLISH, publish message (MQTT 5.0 section 3.3, MQTT 3.1.1 section 3.3).

use bytes::{Bytes, BytesMut};

use crate::encode::{Encode, body_len, public_encode};
use crate::error::{DecodeError, EncodeError};
use crate::properties::PublishProperties;
use crate::property_codec::{decode_properties, encode_properties};
use crate::string::{MqttString, has_wildcard};
use crate::types::{PacketId, PacketType, ProtocolVersion, QoS};
use crate::wire::{
    Reader, Sink, checked_var_int, put_string, put_var_int, read_packet_id, var_int_len,
};

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

impl Publish {
    /// Checks that `payload` matches the Payload Format Indicator (UTF-8 when
    /// it is 1). The codec does not enforce this; a receiver may, answering
    /// with reason code 0x99 Payload format invalid.
    #[must_use]
    pub fn payload_format_is_valid(&self) -> bool {
        self.properties
            .payload_format_indicator
            .is_none_or(|f| f.is_valid_payload(&self.payload))
    }

    /// Appends the fixed header and variable header only: the caller writes
    /// `self.payload` right after it (vectored writes without copying the payload).
    ///
    /// # Errors
    /// As [`Publish::encode`].
    pub fn encode_header(
        &self,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let body = body_len(self, version)?;
        let remaining = checked_var_int(body)?;
        let header = body - self.payload.len();
        buf.reserve(1 + var_int_len(body) + header);
        let start = buf.len();
        Sink::put_u8(buf, (PacketType::Publish.as_u8() << 4) | self.flags());
        put_var_int(buf, remaining);
        if let Err(e) = self.write_header(version, buf) {
            buf.truncate(start);
            return Err(e);
        }
        Ok(())
    }

    fn check(&self, version: ProtocolVersion) -> Result<(), EncodeError> {
        match (self.qos, self.packet_id) {
            (QoS::AtMostOnce, Some(_)) => return Err(EncodeError::UnexpectedPacketId),
            (qos, None) if qos != QoS::AtMostOnce => {
                return Err(EncodeError::MissingPacketId(qos.as_u8()));
            }
            _ => {}
        }
        if self.dup && self.qos == QoS::AtMostOnce {
            return Err(EncodeError::DupWithQoS0);
        }
        if version == ProtocolVersion::V311 && !self.properties.is_empty() {
            return Err(EncodeError::NotInV311 {
                packet_type: PacketType::Publish,
                what: "properties",
            });
        }
        if self.topic.is_empty()
            && (version == ProtocolVersion::V311 || self.properties.topic_alias.is_none())
        {
            return Err(EncodeError::EmptyTopicName);
        }
        if has_wildcard(&self.topic) {
            return Err(EncodeError::TopicNameWildcard);
        }
        Ok(())
    }

    fn write_header<S: Sink>(
        &self,
        version: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        if S::COUNTING {
            self.check(version)?;
        }
        put_string(s, &self.topic);
        if let Some(id) = self.packet_id {
            s.put_u16(id.get());
        }
        if version == ProtocolVersion::V5 {
            encode_properties(&self.properties, s)?;
        }
        Ok(())
    }

    pub(crate) fn decode(
        r: &mut Reader<'_>,
        flags: u8,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let qos =
            QoS::try_from((flags >> 1) & 0b11).map_err(|_| DecodeError::InvalidQoS("PUBLISH"))?;
        let dup = flags & 0b1000 != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::DupWithQoS0);
        }
        let retain = flags & 1 != 0;
        let topic = r.string("topic name")?;
        let packet_id = match qos {
            QoS::AtMostOnce => None,
            _ => Some(read_packet_id(r, PacketType::Publish)?),
        };
        let properties: PublishProperties = match version {
            ProtocolVersion::V5 => decode_properties(r)?,
            ProtocolVersion::V311 => PublishProperties::default(),
        };
        if topic.is_empty() && properties.topic_alias.is_none() {
            return Err(DecodeError::EmptyTopicName);
        }
        if has_wildcard(&topic) {
            return Err(DecodeError::TopicNameWildcard);
        }
        let payload = r.rest();
        Ok(Self {
            dup,
            qos,
            retain,
            topic,
            packet_id,
            payload,
            properties,
        })
    }
}

impl Encode for Publish {
    const TYPE: PacketType = PacketType::Publish;

    fn flags(&self) -> u8 {
        (u8::from(self.dup) << 3) | (self.qos.as_u8() << 1) | u8::from(self.retain)
    }

    fn write_body<S: Sink>(&self, version: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
        self.write_header(version, s)?;
        s.put_slice(&self.payload);
        Ok(())
    }
}

public_encode!(Publish);
