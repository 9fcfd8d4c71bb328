//! Small value types shared by every packet: protocol version, QoS, packet id, packet type.

use core::fmt;
use core::num::NonZeroU16;

use crate::error::InvalidValue;

/// The MQTT protocol version spoken on a connection.
///
/// The version is carried by the CONNECT packet (protocol name and level) and
/// then decides how every other packet on the connection is encoded.
///
/// MQTT 3.1 (protocol name `MQIsdp`, level 3), the version before the OASIS
/// standard, is spoken by older devices and client libraries. Its packets are
/// those of 3.1.1 with fewer rules: no Session Present flag in CONNACK, no
/// failure return code in SUBACK, a client identifier that may not be empty.
/// Everything 3.1.1 cannot carry, 3.1 cannot carry either.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ProtocolVersion {
    /// MQTT 3.1, protocol name `MQIsdp`, protocol level 3.
    V31,
    /// MQTT 3.1.1, protocol level 4.
    V311,
    /// MQTT 5.0, protocol level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte of the CONNECT packet (3, 4 or 5).
    #[must_use]
    pub const fn level(self) -> u8 {
        match self {
            Self::V31 => 3,
            Self::V311 => 4,
            Self::V5 => 5,
        }
    }

    /// The version for a protocol level byte, if it is 3, 4 or 5.
    #[must_use]
    pub const fn from_level(level: u8) -> Option<Self> {
        match level {
            3 => Some(Self::V31),
            4 => Some(Self::V311),
            5 => Some(Self::V5),
            _ => None,
        }
    }

    /// The protocol name of the CONNECT packet: `MQTT`, or `MQIsdp` for 3.1.
    #[must_use]
    pub const fn protocol_name(self) -> &'static str {
        match self {
            Self::V31 => "MQIsdp",
            Self::V311 | Self::V5 => "MQTT",
        }
    }

    /// Whether this is MQTT 5.0.
    #[must_use]
    pub const fn is_v5(self) -> bool {
        matches!(self, Self::V5)
    }

    /// Whether this is MQTT 3.1 or 3.1.1: no properties, no reason codes
    /// beyond 3.1.1's return codes, no AUTH.
    #[must_use]
    pub const fn is_v3(self) -> bool {
        matches!(self, Self::V31 | Self::V311)
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V31 => "MQTT 3.1",
            Self::V311 => "MQTT 3.1.1",
            Self::V5 => "MQTT 5.0",
        })
    }
}

/// Quality of service of an application message (spec 4.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(u8)]
pub enum QoS {
    /// At most once delivery (fire and forget).
    #[default]
    AtMostOnce = 0,
    /// At least once delivery (PUBLISH / PUBACK).
    AtLeastOnce = 1,
    /// Exactly once delivery (PUBLISH / PUBREC / PUBREL / PUBCOMP).
    ExactlyOnce = 2,
}

impl QoS {
    /// The wire value (0, 1 or 2).
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

impl TryFrom<u8> for QoS {
    type Error = InvalidValue;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        match value {
            0 => Ok(Self::AtMostOnce),
            1 => Ok(Self::AtLeastOnce),
            2 => Ok(Self::ExactlyOnce),
            _ => Err(InvalidValue::new("QoS", value)),
        }
    }
}

impl From<QoS> for u8 {
    fn from(qos: QoS) -> Self {
        qos as u8
    }
}

/// A packet identifier (spec 2.2.1 / 3.1.1 section 2.3.1): a non-zero 16-bit integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(transparent)]
pub struct PacketId(NonZeroU16);

impl PacketId {
    /// The packet identifier 1, handy for tests and as the first id of an allocator.
    pub const ONE: Self = Self(NonZeroU16::MIN);

    /// A packet identifier, or `None` for zero (which the spec forbids).
    #[must_use]
    pub const fn new(id: u16) -> Option<Self> {
        match NonZeroU16::new(id) {
            Some(id) => Some(Self(id)),
            None => None,
        }
    }

    /// The identifier as an integer (never zero).
    #[must_use]
    pub const fn get(self) -> u16 {
        self.0.get()
    }

    /// The identifier as a `NonZeroU16`.
    #[must_use]
    pub const fn non_zero(self) -> NonZeroU16 {
        self.0
    }
}

impl From<NonZeroU16> for PacketId {
    fn from(id: NonZeroU16) -> Self {
        Self(id)
    }
}

impl From<PacketId> for u16 {
    fn from(id: PacketId) -> Self {
        id.get()
    }
}

impl fmt::Display for PacketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The MQTT control packet type: the high nibble of the fixed header (spec 2.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(u8)]
pub enum PacketType {
    /// CONNECT, client to server connection request.
    Connect = 1,
    /// CONNACK, connect acknowledgment.
    ConnAck = 2,
    /// PUBLISH, publish message.
    Publish = 3,
    /// PUBACK, publish acknowledgment (QoS 1).
    PubAck = 4,
    /// PUBREC, publish received (QoS 2 part 1).
    PubRec = 5,
    /// PUBREL, publish release (QoS 2 part 2).
    PubRel = 6,
    /// PUBCOMP, publish complete (QoS 2 part 3).
    PubComp = 7,
    /// SUBSCRIBE, subscribe request.
    Subscribe = 8,
    /// SUBACK, subscribe acknowledgment.
    SubAck = 9,
    /// UNSUBSCRIBE, unsubscribe request.
    Unsubscribe = 10,
    /// UNSUBACK, unsubscribe acknowledgment.
    UnsubAck = 11,
    /// PINGREQ, ping request.
    PingReq = 12,
    /// PINGRESP, ping response.
    PingResp = 13,
    /// DISCONNECT, disconnect notification.
    Disconnect = 14,
    /// AUTH, authentication exchange (MQTT 5.0 only).
    Auth = 15,
}

impl PacketType {
    /// The packet type for the high nibble of a fixed header byte (1..=15).
    #[must_use]
    pub const fn from_nibble(nibble: u8) -> Option<Self> {
        Some(match nibble {
            1 => Self::Connect,
            2 => Self::ConnAck,
            3 => Self::Publish,
            4 => Self::PubAck,
            5 => Self::PubRec,
            6 => Self::PubRel,
            7 => Self::PubComp,
            8 => Self::Subscribe,
            9 => Self::SubAck,
            10 => Self::Unsubscribe,
            11 => Self::UnsubAck,
            12 => Self::PingReq,
            13 => Self::PingResp,
            14 => Self::Disconnect,
            15 => Self::Auth,
            _ => return None,
        })
    }

    /// The value of the high nibble of the fixed header.
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The flags (low nibble) the fixed header must carry, for every type but PUBLISH.
    ///
    /// PUBREL, SUBSCRIBE and UNSUBSCRIBE use `0b0010`, the others `0`
    /// (MQTT 5.0 section 2.1.3, MQTT 3.1.1 section 2.2.2). PUBLISH returns `None`:
    /// its flags carry DUP, QoS and RETAIN.
    #[must_use]
    pub const fn fixed_flags(self) -> Option<u8> {
        match self {
            Self::Publish => None,
            Self::PubRel | Self::Subscribe | Self::Unsubscribe => Some(0b0010),
            _ => Some(0),
        }
    }

    /// The name the spec uses, e.g. `"PUBACK"`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Connect => "CONNECT",
            Self::ConnAck => "CONNACK",
            Self::Publish => "PUBLISH",
            Self::PubAck => "PUBACK",
            Self::PubRec => "PUBREC",
            Self::PubRel => "PUBREL",
            Self::PubComp => "PUBCOMP",
            Self::Subscribe => "SUBSCRIBE",
            Self::SubAck => "SUBACK",
            Self::Unsubscribe => "UNSUBSCRIBE",
            Self::UnsubAck => "UNSUBACK",
            Self::PingReq => "PINGREQ",
            Self::PingResp => "PINGRESP",
            Self::Disconnect => "DISCONNECT",
            Self::Auth => "AUTH",
        }
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_from_u8() {
        assert_eq!(QoS::try_from(0).unwrap(), QoS::AtMostOnce);
        assert_eq!(QoS::try_from(1).unwrap(), QoS::AtLeastOnce);
        assert_eq!(QoS::try_from(2).unwrap(), QoS::ExactlyOnce);
        // MQTT-3.3.1-4
        assert!(QoS::try_from(3).is_err());
        assert_eq!(u8::from(QoS::ExactlyOnce), 2);
    }

    #[test]
    fn packet_id_is_non_zero() {
        // v5:MQTT-2.2.1-3 v3:MQTT-2.3.1-1
        assert!(PacketId::new(0).is_none());
        assert_eq!(PacketId::new(7).unwrap().get(), 7);
        assert_eq!(PacketId::ONE.get(), 1);
        assert_eq!(PacketId::new(65535).unwrap().to_string(), "65535");
    }

    #[test]
    fn protocol_levels() {
        assert_eq!(ProtocolVersion::from_level(4), Some(ProtocolVersion::V311));
        assert_eq!(ProtocolVersion::from_level(5), Some(ProtocolVersion::V5));
        assert_eq!(ProtocolVersion::from_level(3), Some(ProtocolVersion::V31));
        assert_eq!(ProtocolVersion::from_level(2), None);
        assert_eq!(ProtocolVersion::V5.level(), 5);
    }

    #[test]
    fn packet_type_nibbles() {
        for n in 1..=15 {
            assert_eq!(PacketType::from_nibble(n).unwrap().as_u8(), n);
        }
        assert_eq!(PacketType::from_nibble(0), None);
        assert_eq!(PacketType::from_nibble(16), None);
        assert_eq!(PacketType::PubRel.fixed_flags(), Some(2));
        assert_eq!(PacketType::Publish.fixed_flags(), None);
        assert_eq!(PacketType::Auth.to_string(), "AUTH");
    }
}
