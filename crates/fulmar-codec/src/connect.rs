//! CONNECT, connection request (MQTT 5.0 section 3.1, MQTT 3.1.1 section 3.1).

use bytes::{Bytes, BytesMut};

use crate::encode::{Encode, public_encode};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{ConnectProperties, WillProperties};
use crate::property_codec::{
    PropertySet, check_auth_decoded, decode_properties, encode_properties,
};
use crate::string::MqttString;
use crate::types::{PacketType, ProtocolVersion, QoS};
use crate::wire::{
    MAX_VAR_INT, Reader, Sink, checked_var_int, put_binary, put_string, put_with_var_int,
    var_int_len,
};

const RESERVED: u8 = 0x01;
const CLEAN_START: u8 = 0x02;
const WILL_FLAG: u8 = 0x04;
const WILL_RETAIN: u8 = 0x20;
const PASSWORD_FLAG: u8 = 0x40;
const USERNAME_FLAG: u8 = 0x80;

/// CONNECT: the first packet a client sends.
///
/// The packet is self-describing: its protocol level decides its version, so
/// `protocol_version` is the version it was decoded from or will be encoded in
/// (the `version` argument of `decode` and `encode` is ignored for CONNECT).
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
    /// The client says it is a bridge (another broker): the protocol level
    /// has its high bit set (0x84 for 3.1.1, 0x85 for 5.0). Not in the
    /// standard; mosquitto's bridges send it (`try_private`), and brokers
    /// that know it treat the client's subscriptions as No Local and Retain
    /// As Published, so that messages do not loop and stay retained.
    pub bridge: bool,
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
            bridge: false,
        }
    }

    /// The protocol level byte: the version's, with the high bit for a bridge.
    const fn level_byte(&self) -> u8 {
        let level = self.protocol_version.level();
        if self.bridge {
            level | BRIDGE_BIT
        } else {
            level
        }
    }
}

/// The high bit of the protocol level that marks a bridge (see [`Connect::bridge`]).
const BRIDGE_BIT: u8 = 0x80;

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
    /// Checks the payload against the Payload Format Indicator (UTF-8 when
    /// it is 1). Not enforced by the codec; a server may refuse the
    /// connection with 0x99 Payload format invalid.
    #[must_use]
    pub fn payload_format_is_valid(&self) -> bool {
        self.properties
            .payload_format_indicator
            .is_none_or(|f| f.is_valid_payload(&self.payload))
    }

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

impl Connect {
    /// Decodes a CONNECT body into its box (built there, not moved in).
    /// `minimal_length`: whether the Remaining Length used the fewest bytes,
    /// which MQTT 5.0 requires; checked once the version is known, after the
    /// body's own checks.
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        minimal_length: bool,
    ) -> Result<Box<Self>, DecodeError> {
        let name = r.binary_slice("protocol name")?;
        let legacy = match name {
            b"MQTT" => false,
            b"MQIsdp" => true,
            _ => {
                return Err(DecodeError::InvalidProtocolName {
                    level: r.u8("protocol level").ok(),
                });
            }
        };
        let level = r.u8("protocol level")?;
        // `MQIsdp` goes with level 3 only, `MQTT` with 4 and 5.
        let protocol_version = ProtocolVersion::from_level(level & !BRIDGE_BIT)
            .filter(|v| (*v == ProtocolVersion::V31) == legacy)
            .ok_or(DecodeError::UnsupportedProtocolLevel(level))?;
        let bridge = level & BRIDGE_BIT != 0;
        let flags = r.u8("connect flags")?;
        // MQTT 3.1 left bit 0 unused without forbidding it.
        if flags & RESERVED != 0 && !legacy {
            return Err(DecodeError::ConnectReservedFlag);
        }
        let will_flag = flags & WILL_FLAG != 0;
        let will_qos_bits = (flags >> 3) & 0b11;
        let will_retain = flags & WILL_RETAIN != 0;
        if !will_flag && (will_qos_bits != 0 || will_retain) && !legacy {
            return Err(DecodeError::WillFlagsWithoutWill);
        }
        // MQTT 3.1 does not forbid will QoS and retain bits without a will
        // (mosquitto ignores them): they mean nothing then.
        let will_qos = if will_flag {
            QoS::try_from(will_qos_bits).map_err(|_| DecodeError::InvalidQoS("will QoS"))?
        } else {
            QoS::AtMostOnce
        };
        let has_username = flags & USERNAME_FLAG != 0;
        let has_password = flags & PASSWORD_FLAG != 0;
        if protocol_version.is_v3() && has_password && !has_username {
            return Err(DecodeError::PasswordWithoutUsername);
        }
        let keep_alive = r.u16("keep alive")?;
        let properties: ConnectProperties = match protocol_version {
            ProtocolVersion::V5 => decode_properties(r)?,
            ProtocolVersion::V31 | ProtocolVersion::V311 => ConnectProperties::default(),
        };
        check_auth_decoded(
            properties.authentication_method.as_ref(),
            properties.authentication_data.as_ref(),
        )?;
        let client_id = r.string("client identifier")?;
        let will = if will_flag {
            let properties = match protocol_version {
                ProtocolVersion::V5 => decode_properties(r)?,
                ProtocolVersion::V31 | ProtocolVersion::V311 => WillProperties::default(),
            };
            let topic = r.string("will topic")?;
            let payload = r.binary("will payload")?;
            Some(Will {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        // MQTT 3.1 clients may set the flags and leave the fields out; as
        // mosquitto does, a field that is not there is taken as absent.
        let username = if has_username && !(legacy && r.is_empty()) {
            Some(r.string("user name")?)
        } else {
            None
        };
        let password = if has_password && !(legacy && r.is_empty()) {
            Some(r.binary("password")?)
        } else {
            None
        };
        if !minimal_length && protocol_version == ProtocolVersion::V5 {
            return Err(DecodeError::NonMinimalVarInt);
        }
        Ok(Box::new(Self {
            protocol_version,
            clean_start: flags & CLEAN_START != 0,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
            bridge,
        }))
    }

    fn flags(&self) -> u8 {
        let mut flags = 0;
        if self.clean_start {
            flags |= CLEAN_START;
        }
        if let Some(will) = &self.will {
            flags |= WILL_FLAG | (will.qos.as_u8() << 3);
            if will.retain {
                flags |= WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            flags |= USERNAME_FLAG;
        }
        if self.password.is_some() {
            flags |= PASSWORD_FLAG;
        }
        flags
    }
}

impl Connect {
    /// Validates the packet (the checks of [`Encode::write_body`], in its
    /// order) and returns the length of its body and of its CONNECT and Will
    /// Properties (without their Property Length), computed arithmetically.
    #[inline(always)]
    fn checked_len(&self) -> Result<(usize, usize, usize), EncodeError> {
        // Protocol name, level, flags and keep alive, then the client identifier.
        let mut len = 6 + self.protocol_version.protocol_name().len() + self.client_id.wire_len();
        let mut properties = 0;
        let mut will_properties = 0;
        match self.protocol_version {
            ProtocolVersion::V31 | ProtocolVersion::V311 => self.check_v311()?,
            ProtocolVersion::V5 => {
                properties = self.properties.wire_len(true)?;
                len += var_int_len(properties) + properties;
            }
        }
        if let Some(will) = &self.will {
            if self.protocol_version == ProtocolVersion::V5 {
                will_properties = will.properties.wire_len(true)?;
                len += var_int_len(will_properties) + will_properties;
            }
            len += will.topic.wire_len() + binary_len(&will.payload, "will payload")?;
        }
        if let Some(username) = &self.username {
            len += username.wire_len();
        }
        if let Some(password) = &self.password {
            len += binary_len(password, "password")?;
        }
        Ok((len, properties, will_properties))
    }

    /// What MQTT 3.1.1 cannot carry: properties, will properties, a password
    /// without a user name (MQTT-3.1.2-22).
    fn check_v311(&self) -> Result<(), EncodeError> {
        let not_in_v311 = |what| EncodeError::NotInV311 {
            packet_type: PacketType::Connect,
            what,
        };
        if !self.properties.is_empty() {
            return Err(not_in_v311("properties"));
        }
        if self.will.as_ref().is_some_and(|w| !w.properties.is_empty()) {
            return Err(not_in_v311("will properties"));
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(EncodeError::PasswordWithoutUsername);
        }
        Ok(())
    }

    /// Writes the body of a packet validated by [`Self::checked_len`], which gave
    /// the lengths of the property sets.
    #[inline(always)]
    fn put_body(
        &self,
        remaining: u32,
        properties: u32,
        will_properties: u32,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let v5 = self.protocol_version == ProtocolVersion::V5;
        let [ka_hi, ka_lo] = self.keep_alive.to_be_bytes();
        if self.protocol_version == ProtocolVersion::V31 {
            put_with_var_int(
                buf,
                &[(Self::TYPE.as_u8() << 4) | Encode::flags(self)],
                remaining,
                &[0, 6, b'M', b'Q', b'I', b's', b'd', b'p'],
            );
            buf.put_slice(&[self.level_byte(), self.flags(), ka_hi, ka_lo]);
        } else {
            // The fixed header and the whole fixed part of the variable header in one write.
            put_with_var_int(
                buf,
                &[(Self::TYPE.as_u8() << 4) | Encode::flags(self)],
                remaining,
                &[
                    0,
                    4,
                    b'M',
                    b'Q',
                    b'T',
                    b'T',
                    self.level_byte(),
                    self.flags(),
                    ka_hi,
                    ka_lo,
                ],
            );
        }
        if v5 {
            put_with_var_int(buf, &[], properties, &[]);
            self.properties.write(buf)?;
        }
        put_string(buf, &self.client_id);
        if let Some(will) = &self.will {
            if v5 {
                put_with_var_int(buf, &[], will_properties, &[]);
                will.properties.write(buf)?;
            }
            put_string(buf, &will.topic);
            put_binary(buf, &will.payload, "will payload")?;
        }
        if let Some(username) = &self.username {
            put_string(buf, username);
        }
        if let Some(password) = &self.password {
            put_binary(buf, password, "password")?;
        }
        Ok(())
    }
}

/// Length of Binary Data (spec 1.5.6) with its two-byte length, or the error
/// of [`put_binary`].
#[inline]
fn binary_len(v: &[u8], field: &'static str) -> Result<usize, EncodeError> {
    if v.len() > usize::from(u16::MAX) {
        return Err(EncodeError::BinaryTooLong {
            field,
            len: v.len(),
        });
    }
    Ok(2 + v.len())
}

impl Encode for Connect {
    const TYPE: PacketType = PacketType::Connect;

    /// Sized arithmetically, then written without a second validation.
    #[inline]
    fn encode_to(&self, _version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let (body, properties, will_properties) = self.checked_len()?;
        let remaining = checked_var_int(body)?;
        buf.reserve(1 + var_int_len(body) + body);
        let start = buf.len();
        // Neither property set is longer than the remaining length, which was checked.
        let properties = u32::try_from(properties).unwrap_or(MAX_VAR_INT);
        let will_properties = u32::try_from(will_properties).unwrap_or(MAX_VAR_INT);
        let written = self.put_body(remaining, properties, will_properties, buf);
        if written.is_err() {
            buf.truncate(start);
        }
        written
    }

    #[inline]
    fn wire_len(&self, _version: ProtocolVersion) -> Result<usize, EncodeError> {
        let body = self.checked_len()?.0;
        checked_var_int(body)?;
        Ok(1 + var_int_len(body) + body)
    }

    /// Encodes in `self.protocol_version`; the argument is ignored.
    fn write_body<S: Sink>(&self, _version: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
        let version = self.protocol_version;
        if version.is_v3() {
            self.check_v311()?;
        }
        if version == ProtocolVersion::V31 {
            s.put_u16(6);
            s.put_slice(b"MQIsdp");
        } else {
            s.put_u16(4);
            s.put_slice(b"MQTT");
        }
        s.put_u8(self.level_byte());
        s.put_u8(self.flags());
        s.put_u16(self.keep_alive);
        if version == ProtocolVersion::V5 {
            encode_properties(&self.properties, s)?;
        }
        put_string(s, &self.client_id);
        if let Some(will) = &self.will {
            if version == ProtocolVersion::V5 {
                encode_properties(&will.properties, s)?;
            }
            put_string(s, &will.topic);
            put_binary(s, &will.payload, "will payload")?;
        }
        if let Some(username) = &self.username {
            put_string(s, username);
        }
        if let Some(password) = &self.password {
            put_binary(s, password, "password")?;
        }
        Ok(())
    }
}

public_encode!(Connect);
