//! CONNECT, connection request (MQTT 5.0 section 3.1, MQTT 3.1.1 section 3.1).

use bytes::Bytes;

use crate::encode::{Encode, public_encode};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{ConnectProperties, WillProperties};
use crate::property_codec::{check_auth_decoded, decode_properties, encode_properties};
use crate::string::MqttString;
use crate::types::{PacketType, ProtocolVersion, QoS};
use crate::wire::{Reader, Sink, put_binary, put_string};

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
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let name = r.binary("protocol name")?;
        if name.as_ref() != b"MQTT" {
            return Err(DecodeError::InvalidProtocolName {
                level: r.u8("protocol level").ok(),
            });
        }
        let level = r.u8("protocol level")?;
        let protocol_version = ProtocolVersion::from_level(level)
            .ok_or(DecodeError::UnsupportedProtocolLevel(level))?;
        let flags = r.u8("connect flags")?;
        if flags & RESERVED != 0 {
            return Err(DecodeError::ConnectReservedFlag);
        }
        let will_flag = flags & WILL_FLAG != 0;
        let will_qos_bits = (flags >> 3) & 0b11;
        let will_retain = flags & WILL_RETAIN != 0;
        if !will_flag && (will_qos_bits != 0 || will_retain) {
            return Err(DecodeError::WillFlagsWithoutWill);
        }
        let will_qos =
            QoS::try_from(will_qos_bits).map_err(|_| DecodeError::InvalidQoS("will QoS"))?;
        let has_username = flags & USERNAME_FLAG != 0;
        let has_password = flags & PASSWORD_FLAG != 0;
        if protocol_version == ProtocolVersion::V311 && has_password && !has_username {
            return Err(DecodeError::PasswordWithoutUsername);
        }
        let keep_alive = r.u16("keep alive")?;
        let properties: ConnectProperties = match protocol_version {
            ProtocolVersion::V5 => decode_properties(r)?,
            ProtocolVersion::V311 => ConnectProperties::default(),
        };
        check_auth_decoded(
            properties.authentication_method.as_ref(),
            properties.authentication_data.as_ref(),
        )?;
        let client_id = r.string("client identifier")?;
        let will = if will_flag {
            let properties = match protocol_version {
                ProtocolVersion::V5 => decode_properties(r)?,
                ProtocolVersion::V311 => WillProperties::default(),
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
        let username = if has_username {
            Some(r.string("user name")?)
        } else {
            None
        };
        let password = if has_password {
            Some(r.binary("password")?)
        } else {
            None
        };
        Ok(Self {
            protocol_version,
            clean_start: flags & CLEAN_START != 0,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
        })
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

impl Encode for Connect {
    const TYPE: PacketType = PacketType::Connect;

    /// Encodes in `self.protocol_version`; the argument is ignored.
    fn write_body<S: Sink>(&self, _version: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
        let version = self.protocol_version;
        if version == ProtocolVersion::V311 {
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
        }
        s.put_u16(4);
        s.put_slice(b"MQTT");
        s.put_u8(version.level());
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
