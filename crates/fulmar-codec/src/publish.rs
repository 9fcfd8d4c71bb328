//! PUBLISH, publish message (MQTT 5.0 section 3.3, MQTT 3.1.1 section 3.3).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::encode::{Encode, public_encode};
use crate::error::{DecodeError, EncodeError};
use crate::properties::PublishProperties;
use crate::property_codec::{PropertySet, decode_properties, encode_properties};
use crate::string::{MqttString, has_wildcard};
use crate::types::{PacketId, PacketType, ProtocolVersion, QoS};
use crate::wire::{
    MAX_VAR_INT, Reader, Sink, checked_var_int, put_string, put_with_var_int, read_packet_id,
    var_int_len,
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
    /// What one user property takes in memory besides its key and value
    /// (the pair of strings in the list), as [`memory_size`](Self::memory_size)
    /// counts it.
    pub const USER_PROPERTY_SLOT: usize = core::mem::size_of::<(MqttString, MqttString)>();

    /// A QoS 0, non-retained PUBLISH without properties.
    #[must_use]
    pub fn new(topic: MqttString, payload: Bytes) -> Self {
        Self {
            topic,
            payload,
            ..Self::default()
        }
    }

    /// The bytes of the message's variable parts: topic name, payload, and
    /// the string, binary and user properties (a Subscription Identifier
    /// counted as 4, a user property as its key and value plus
    /// [`USER_PROPERTY_SLOT`](Self::USER_PROPERTY_SLOT), the pair's own
    /// size in memory). What keeping the message in a queue costs, near enough,
    /// without encoding it: for bounding queues in bytes, where the payload
    /// alone would let a message carry its bulk in its properties. The slot
    /// counts because the pair takes that much whatever the strings: an empty
    /// user property is 5 bytes on the wire and 64 in memory (in every copy:
    /// each subscriber's copy of a message has its own list), so a 1 MiB
    /// PUBLISH of empty user properties held 13 MB counted as none.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use fulmar_codec::{MqttString, Publish};
    ///
    /// let mut p = Publish::new(MqttString::from("a/b"), Bytes::from_static(b"12345"));
    /// assert_eq!(p.memory_size(), 8);
    /// p.properties.user_properties.push(("k".into(), "vv".into()));
    /// assert_eq!(p.memory_size(), 11 + Publish::USER_PROPERTY_SLOT);
    /// p.properties.user_properties.push(("".into(), "".into()));
    /// assert_eq!(p.memory_size(), 11 + 2 * Publish::USER_PROPERTY_SLOT);
    /// ```
    #[must_use]
    #[inline]
    pub fn memory_size(&self) -> usize {
        let p = &self.properties;
        let string = |s: &Option<MqttString>| s.as_ref().map_or(0, MqttString::len);
        let user: usize = p
            .user_properties
            .iter()
            .map(|(k, v)| Self::USER_PROPERTY_SLOT + k.len() + v.len())
            .sum();
        self.topic.len()
            + self.payload.len()
            + string(&p.response_topic)
            + string(&p.content_type)
            + p.correlation_data.as_ref().map_or(0, Bytes::len)
            + user
            + 4 * p.subscription_identifiers.len()
    }
}

impl Publish {
    /// Copies the parts that share the buffer this PUBLISH was decoded from
    /// (topic, payload, and the string and binary properties) into
    /// allocations of their own. Decoding is zero-copy, so a message kept
    /// for long, a retained message say, would otherwise keep that whole
    /// buffer alive, however small the message.
    ///
    /// # Example
    /// ```
    /// use bytes::{BufMut, BytesMut};
    /// use fulmar_codec::{decode, Packet, ProtocolVersion};
    ///
    /// let mut buf = BytesMut::with_capacity(8192);
    /// buf.put_slice(&[0x30, 0x04, 0x00, 0x01, b't', b'x']);
    /// let Ok(Some(Packet::Publish(mut publish))) = decode(&mut buf, ProtocolVersion::V311, 1024)
    /// else {
    ///     panic!()
    /// };
    /// let start = buf.as_ptr() as usize - 6;
    /// let in_buffer = |p: *const u8| (start..start + 8192).contains(&(p as usize));
    /// assert!(in_buffer(publish.payload.as_ptr()));
    /// publish.unshare();
    /// assert!(!in_buffer(publish.payload.as_ptr()));
    /// assert_eq!((publish.topic.as_str(), &publish.payload[..]), ("t", &b"x"[..]));
    /// ```
    pub fn unshare(&mut self) {
        fn own(s: &mut MqttString) {
            if let Ok(copy) = MqttString::try_from_string(s.as_str().to_owned()) {
                *s = copy;
            }
        }
        own(&mut self.topic);
        self.payload = Bytes::copy_from_slice(&self.payload);
        let p = &mut self.properties;
        if let Some(topic) = &mut p.response_topic {
            own(topic);
        }
        if let Some(data) = &mut p.correlation_data {
            *data = Bytes::copy_from_slice(data);
        }
        if let Some(content_type) = &mut p.content_type {
            own(content_type);
        }
        for (key, value) in &mut p.user_properties {
            own(key);
            own(value);
        }
        // Decoding grew the list by doubling: up to twice the slots that
        // memory_size counts.
        p.user_properties.shrink_to_fit();
    }

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
        let (header, properties) = self.header_len(version)?;
        let body = header + self.payload.len();
        let remaining = checked_var_int(body)?;
        buf.reserve(1 + var_int_len(body) + header);
        self.put_header(version, remaining, properties, buf)
    }

    fn first_byte(&self) -> u8 {
        (PacketType::Publish.as_u8() << 4) | self.flags()
    }

    /// Validates the packet for `version` and returns the length of its
    /// variable header (everything but the payload) and, under 5.0, of its
    /// properties (without the Property Length).
    #[inline(always)]
    fn header_len(&self, version: ProtocolVersion) -> Result<(usize, usize), EncodeError> {
        self.check(version)?;
        let mut len = self.topic.wire_len() + if self.packet_id.is_some() { 2 } else { 0 };
        let mut properties = 0;
        if version == ProtocolVersion::V5 {
            properties = self.properties.wire_len(true)?;
            len += var_int_len(properties) + properties;
        }
        Ok((len, properties))
    }

    /// Writes the fixed header (with `remaining`) and the variable header of
    /// a packet validated by [`Self::header_len`], which also gave
    /// `properties`. On error nothing is appended.
    ///
    /// Few writes, each of a size known at compile time where it can be: the
    /// fixed header with the topic length, the topic, the packet identifier
    /// with the Property Length, then the properties.
    #[inline(always)]
    fn put_header(
        &self,
        version: ProtocolVersion,
        remaining: u32,
        properties: usize,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let topic = self.topic.as_bytes();
        // Lossless: an MqttString has at most 65 535 bytes.
        let topic_len = topic.len() as u16;
        let start = buf.len();
        put_with_var_int(
            buf,
            &[self.first_byte()],
            remaining,
            &topic_len.to_be_bytes(),
        );
        buf.extend_from_slice(topic);
        match version {
            ProtocolVersion::V31 | ProtocolVersion::V311 => {
                if let Some(id) = self.packet_id {
                    BufMut::put_u16(buf, id.get());
                }
            }
            ProtocolVersion::V5 => {
                // Not above the remaining length, which was checked.
                let len = u32::try_from(properties).unwrap_or(MAX_VAR_INT);
                match self.packet_id {
                    Some(id) => put_with_var_int(buf, &id.get().to_be_bytes(), len, &[]),
                    None => put_with_var_int(buf, &[], len, &[]),
                }
                if let Err(e) = self.properties.write(buf) {
                    buf.truncate(start);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// The checks of a sender (MQTT-2.2.1-2, MQTT-2.2.1-3, MQTT-3.3.1-2,
    /// MQTT-3.3.2-2, MQTT-4.7.3-1, no properties under 3.1.1), in this order.
    #[inline(always)]
    fn check(&self, version: ProtocolVersion) -> Result<(), EncodeError> {
        let qos0 = self.qos == QoS::AtMostOnce;
        // A Packet Identifier exactly with QoS 1 and 2, DUP only with them:
        // one test on the way of a valid packet, the error found off it.
        if self.packet_id.is_some() == qos0 || (self.dup && qos0) {
            return Err(self.flags_error());
        }
        match version {
            ProtocolVersion::V31 | ProtocolVersion::V311 => {
                if !self.properties.is_empty() {
                    return Err(EncodeError::NotInV311 {
                        packet_type: PacketType::Publish,
                        what: "properties",
                    });
                }
                if self.topic.is_empty() {
                    return Err(EncodeError::EmptyTopicName);
                }
            }
            ProtocolVersion::V5 => {
                if self.topic.is_empty() && self.properties.topic_alias.is_none() {
                    return Err(EncodeError::EmptyTopicName);
                }
            }
        }
        if has_wildcard(&self.topic) {
            return Err(EncodeError::TopicNameWildcard);
        }
        Ok(())
    }

    /// The error of a packet whose QoS, Packet Identifier and DUP flag disagree.
    #[cold]
    #[inline(never)]
    fn flags_error(&self) -> EncodeError {
        match (self.qos, self.packet_id) {
            (QoS::AtMostOnce, Some(_)) => EncodeError::UnexpectedPacketId,
            (qos, None) if qos != QoS::AtMostOnce => EncodeError::MissingPacketId(qos.as_u8()),
            _ => EncodeError::DupWithQoS0,
        }
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

    /// Decodes the PUBLISH in `frame` (the whole packet) whose variable
    /// header starts at `start`. The payload is the rest of `frame`, taken
    /// without a reference count update.
    #[inline(always)]
    pub(crate) fn decode(
        frame: Bytes,
        start: usize,
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
        let mut r = Reader::new(&frame, start);
        let (topic, wildcard) = r.scanned_string("topic name")?;
        let packet_id = match qos {
            QoS::AtMostOnce => None,
            _ => Some(read_packet_id(&mut r, PacketType::Publish)?),
        };
        let properties: PublishProperties = match version {
            ProtocolVersion::V5 => decode_properties(&mut r)?,
            ProtocolVersion::V31 | ProtocolVersion::V311 => PublishProperties::default(),
        };
        if topic.is_empty() && properties.topic_alias.is_none() {
            return Err(DecodeError::EmptyTopicName);
        }
        if wildcard {
            return Err(DecodeError::TopicNameWildcard);
        }
        let payload_start = r.position();
        let mut payload = frame;
        // The reader never goes past the end of the frame.
        payload.advance(payload_start.min(payload.len()));
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

    #[inline]
    fn encode_to(&self, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let (header, properties) = self.header_len(version)?;
        let body = header + self.payload.len();
        let remaining = checked_var_int(body)?;
        buf.reserve(1 + var_int_len(body) + body);
        self.put_header(version, remaining, properties, buf)?;
        buf.extend_from_slice(&self.payload);
        Ok(())
    }

    #[inline]
    fn wire_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        let body = self.header_len(version)?.0 + self.payload.len();
        checked_var_int(body)?;
        Ok(1 + var_int_len(body) + body)
    }
}

public_encode!(Publish);
