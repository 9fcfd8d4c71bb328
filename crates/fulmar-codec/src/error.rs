//! Decode and encode errors, each tied to the reason code the receiver must send.

use crate::reason::ReasonCode;
use crate::types::{PacketId, PacketType, QoS};

/// A byte that is not a valid value for an enum such as [`crate::QoS`] or a reason code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} value {value:#04x}")]
pub struct InvalidValue {
    /// What was being converted, e.g. `"QoS"`.
    pub what: &'static str,
    /// The offending byte.
    pub value: u8,
}

impl InvalidValue {
    pub(crate) const fn new(what: &'static str, value: u8) -> Self {
        Self { what, value }
    }
}

/// Why bytes or text are not a valid MQTT UTF-8 Encoded String.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StringError {
    /// The bytes are not well-formed UTF-8 (this includes encoded surrogates).
    #[error("[MQTT-1.5.4-1] string is not well-formed UTF-8")]
    InvalidUtf8,
    /// The string contains the null character.
    #[error("[MQTT-1.5.4-2] string contains U+0000")]
    NullCharacter,
    /// The string is longer than the two-byte length prefix allows.
    #[error("[MQTT-4.7.3-3] string of {0} bytes is longer than 65535 bytes")]
    TooLong(usize),
}

/// Why a packet could not be decoded. The input will never parse; the
/// connection must be closed.
///
/// [`DecodeError::reason_code`] gives the MQTT 5.0 reason code to send in a
/// CONNACK (while connecting) or DISCONNECT before closing. MQTT 3.1.1 has no
/// such packets for errors: a 3.1.1 receiver just closes the network
/// connection (3.1.1 section 4.8), except for an unsupported protocol level in
/// CONNECT, which a server answers with CONNACK return code 0x01
/// ([`DecodeError::UnsupportedProtocolLevel`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The packet (fixed header included) is larger than the maximum packet size.
    /// Detected from the remaining length, before the body is buffered.
    #[error("packet of {size} bytes exceeds the maximum packet size {max}")]
    PacketTooLarge {
        /// Size of the whole packet in bytes.
        size: usize,
        /// The configured maximum.
        max: u32,
    },
    /// A PUBLISH larger than the maximum packet size, identified by its
    /// fixed and variable headers, which were buffered (the topic name and
    /// Packet Identifier: at most 65 541 bytes past the fixed header) while
    /// the rest was not: only from an `MqttCodec` (feature `tokio-util`)
    /// with `identify_refused_publishes`.
    /// A receiver that discards the message can still acknowledge it.
    #[error("PUBLISH of {size} bytes exceeds the maximum packet size {max}")]
    PublishTooLarge {
        /// Size of the whole packet in bytes.
        size: usize,
        /// The configured maximum.
        max: u32,
        /// The QoS of the message.
        qos: QoS,
        /// Its Packet Identifier (QoS 1 and 2).
        packet_id: Option<PacketId>,
    },
    /// The packet type nibble is reserved: 0, or 15 (AUTH) under MQTT 3.1.1.
    #[error("reserved control packet type {0}")]
    ReservedPacketType(u8),
    /// Reserved flag bits of the fixed header have the wrong value.
    #[error("[MQTT-2.1.3-1] invalid fixed header flags {flags:#06b} for {packet_type}")]
    ReservedFlags {
        /// The packet type.
        packet_type: PacketType,
        /// The low nibble of the first byte.
        flags: u8,
    },
    /// A Variable Byte Integer (such as the remaining length) uses more than four bytes.
    #[error("variable byte integer longer than 4 bytes")]
    VarIntTooLong,
    /// A Variable Byte Integer is not encoded with the minimum number of bytes.
    #[error("[MQTT-1.5.5-1] variable byte integer is not minimally encoded")]
    NonMinimalVarInt,
    /// A UTF-8 Encoded String is invalid.
    #[error("invalid {field}: {error}")]
    InvalidString {
        /// The field being read.
        field: &'static str,
        /// What is wrong with it.
        error: crate::error::StringError,
    },
    /// The packet ends before a field it must contain (a length beyond the packet).
    #[error("packet too short: {field} extends past the end of the packet")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// The Property Length points past the end of the packet.
    #[error("property length {len} exceeds the {available} bytes left in the packet")]
    PropertyLengthOverrun {
        /// The announced property length.
        len: u32,
        /// Bytes remaining in the packet.
        available: usize,
    },
    /// Bytes remain after the last field of the packet.
    #[error("{count} unexpected bytes at the end of {packet_type}")]
    TrailingBytes {
        /// The packet type.
        packet_type: PacketType,
        /// How many bytes are left over.
        count: usize,
    },
    /// A property identifier that is unknown, or not allowed where it appears.
    #[error("property {id:#04x} is not allowed in {context} (spec 2.2.2.2)")]
    PropertyNotAllowed {
        /// The property identifier.
        id: u32,
        /// The packet or property set, e.g. `"PUBLISH"` or `"Will Properties"`.
        context: &'static str,
    },
    /// A property that may appear once appears more than once.
    #[error("property {id:#04x} appears more than once in {context}")]
    DuplicateProperty {
        /// The property identifier.
        id: u8,
        /// The packet or property set.
        context: &'static str,
    },
    /// A property value is out of its allowed range (a zero where zero is
    /// forbidden, a boolean byte other than 0 or 1, Maximum QoS 2, ...).
    #[error("property {id:#04x} has invalid value {value}")]
    InvalidPropertyValue {
        /// The property identifier.
        id: u8,
        /// The value received.
        value: u32,
    },
    /// A Topic Alias property with the value 0.
    #[error("[MQTT-3.3.2-8] topic alias 0 is not permitted")]
    ZeroTopicAlias,
    /// Authentication Data without an Authentication Method.
    #[error("authentication data without an authentication method")]
    AuthDataWithoutMethod,
    /// An AUTH packet with a reason code but no Authentication Method (MQTT
    /// 5.0 section 3.15.2.2.2: "It is a Protocol Error to omit the
    /// Authentication Method"). Only the AUTH of remaining length 0 has none.
    #[error("[MQTT-4.12.0-5] AUTH without an authentication method")]
    AuthWithoutMethod,
    /// MQTT 5.0: Maximum QoS 3 in subscription options (section 3.8.3.1: "It
    /// is a Protocol Error if the Maximum QoS field has the value 3"; under
    /// 3.1.1 the packet is malformed, [`InvalidQoS`](Self::InvalidQoS)).
    #[error("maximum QoS 3 in subscription options is a protocol error")]
    SubscriptionQoS3,
    /// A Packet Identifier of 0.
    #[error("[MQTT-2.2.1-3] packet identifier 0 in {0}")]
    ZeroPacketId(PacketType),
    /// A QoS field has the value 3.
    #[error("[MQTT-3.3.1-4] invalid QoS 3 in {0}")]
    InvalidQoS(&'static str),
    /// A PUBLISH with QoS 0 has the DUP flag set.
    #[error("[MQTT-3.3.1-2] DUP flag set on a QoS 0 PUBLISH")]
    DupWithQoS0,
    /// A PUBLISH Topic Name is empty where it must not be (always in 3.1.1,
    /// without a Topic Alias in 5.0).
    #[error("[MQTT-4.7.3-1] empty topic name without a topic alias")]
    EmptyTopicName,
    /// A PUBLISH Topic Name contains `+` or `#`.
    #[error("[MQTT-3.3.2-2] topic name contains a wildcard")]
    TopicNameWildcard,
    /// A Response Topic contains `+` or `#`.
    #[error("[MQTT-3.3.2-14] response topic contains a wildcard")]
    ResponseTopicWildcard,
    /// The CONNECT protocol name is not `MQTT` (an MQTT 3.1 client sends
    /// `MQIsdp` with level 3).
    #[error("[MQTT-3.1.2-1] protocol name is not \"MQTT\"")]
    InvalidProtocolName {
        /// The protocol level byte that follows the name, if present.
        level: Option<u8>,
    },
    /// The CONNECT protocol level is not 4 or 5.
    #[error("[MQTT-3.1.2-2] unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    /// The reserved bit 0 of the CONNECT flags is set.
    #[error("[MQTT-3.1.2-3] reserved connect flag is set")]
    ConnectReservedFlag,
    /// Will QoS or Will Retain is set while the Will Flag is 0.
    #[error("[MQTT-3.1.2-11] will QoS or will retain set without the will flag")]
    WillFlagsWithoutWill,
    /// MQTT 3.1.1: the Password Flag is set without the User Name Flag.
    #[error("[MQTT-3.1.2-22] password flag set without user name flag")]
    PasswordWithoutUsername,
    /// Reserved bits of the CONNACK acknowledge flags are set.
    #[error("[MQTT-3.2.2-1] reserved connect acknowledge flags are set")]
    ConnAckReservedFlags,
    /// A CONNACK with a failure code has Session Present set.
    #[error("[MQTT-3.2.2-6] session present set on a refused connection")]
    SessionPresentOnError,
    /// A reason code (or 3.1.1 return code) not allowed in this packet.
    #[error("invalid reason code {code:#04x} in {packet_type}")]
    InvalidReasonCode {
        /// The packet type.
        packet_type: PacketType,
        /// The code received.
        code: u8,
    },
    /// A SUBSCRIBE or UNSUBSCRIBE without any topic filter.
    #[error("[MQTT-3.8.3-2] {0} without any topic filter")]
    NoTopicFilters(PacketType),
    /// An empty topic filter.
    #[error("[MQTT-4.7.3-1] empty topic filter in {0}")]
    EmptyTopicFilter(PacketType),
    /// A SUBACK or UNSUBACK (5.0) without any reason code.
    #[error("{0} without any reason code")]
    NoReasonCodes(PacketType),
    /// Reserved bits of the subscription options are set (in 3.1.1 every bit but QoS is reserved).
    #[error("[MQTT-3.8.3-5] reserved bits set in subscription options {0:#04x}")]
    SubscriptionOptionsReserved(u8),
    /// Retain Handling has the value 3.
    #[error("retain handling 3 is a protocol error")]
    InvalidRetainHandling,
    /// No Local set on a shared subscription.
    #[error("[MQTT-3.8.3-4] no local set on a shared subscription")]
    NoLocalOnSharedSubscription,
    /// The User Properties of a PUBLISH or CONNECT (its will included) would
    /// take more memory than the maximum packet size and than
    /// [`MIN_USER_PROPERTY_BYTES`](crate::MIN_USER_PROPERTY_BYTES): each is
    /// held as a pair of strings
    /// ([`Publish::USER_PROPERTY_SLOT`](crate::Publish::USER_PROPERTY_SLOT)
    /// bytes) however short on the wire (5 bytes when empty). Refused as too
    /// large, so that a message or will kept in memory takes at most about
    /// twice the maximum packet size (1 MiB or more), not 13 times.
    #[error("{count} user properties take more than the maximum packet size {max} in memory")]
    TooManyUserProperties {
        /// User properties in the packet.
        count: usize,
        /// The configured maximum packet size.
        max: u32,
    },
}

impl DecodeError {
    /// The MQTT 5.0 reason code the receiver must send (in CONNACK while
    /// connecting, DISCONNECT afterwards) before closing the connection.
    ///
    /// Under MQTT 3.1.1 the receiver simply closes the network connection.
    #[must_use]
    pub const fn reason_code(&self) -> ReasonCode {
        match self {
            Self::PacketTooLarge { .. }
            | Self::PublishTooLarge { .. }
            | Self::TooManyUserProperties { .. } => ReasonCode::PacketTooLarge,
            Self::InvalidProtocolName { .. } | Self::UnsupportedProtocolLevel(_) => {
                ReasonCode::UnsupportedProtocolVersion
            }
            Self::ZeroTopicAlias => ReasonCode::TopicAliasInvalid,
            Self::TopicNameWildcard => ReasonCode::TopicNameInvalid,
            Self::DuplicateProperty { .. }
            | Self::InvalidPropertyValue { .. }
            | Self::AuthDataWithoutMethod
            | Self::AuthWithoutMethod
            | Self::SubscriptionQoS3
            | Self::ZeroPacketId(_)
            | Self::EmptyTopicName
            | Self::ResponseTopicWildcard
            | Self::SessionPresentOnError
            | Self::InvalidReasonCode { .. }
            | Self::NoTopicFilters(_)
            | Self::EmptyTopicFilter(_)
            | Self::NoReasonCodes(_)
            | Self::InvalidRetainHandling
            | Self::NoLocalOnSharedSubscription => ReasonCode::ProtocolError,
            Self::ReservedPacketType(_)
            | Self::ReservedFlags { .. }
            | Self::VarIntTooLong
            | Self::NonMinimalVarInt
            | Self::InvalidString { .. }
            | Self::Truncated { .. }
            | Self::PropertyLengthOverrun { .. }
            | Self::TrailingBytes { .. }
            | Self::PropertyNotAllowed { .. }
            | Self::InvalidQoS(_)
            | Self::DupWithQoS0
            | Self::ConnectReservedFlag
            | Self::WillFlagsWithoutWill
            | Self::PasswordWithoutUsername
            | Self::ConnAckReservedFlags
            | Self::SubscriptionOptionsReserved(_) => ReasonCode::MalformedPacket,
        }
    }

    /// For a CONNECT with an unsupported protocol name or level, the level
    /// byte, so that a server can answer in the client's version: a 3.1.1
    /// CONNACK with return code 0x01 for levels below 5, a 5.0 CONNACK with
    /// 0x84 otherwise (the high bit, which marks a bridge, aside).
    #[must_use]
    pub const fn protocol_level(&self) -> Option<u8> {
        match self {
            Self::UnsupportedProtocolLevel(level) => Some(*level),
            Self::InvalidProtocolName { level } => *level,
            _ => None,
        }
    }
}

/// Why a packet could not be encoded for the given protocol version.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The packet carries data MQTT 3.1.1 cannot express (properties, a reason
    /// code without 3.1.1 equivalent, v5 subscription options, AUTH ...).
    #[error("{packet_type}: {what} cannot be sent to an MQTT 3.1.1 peer")]
    NotInV311 {
        /// The packet type.
        packet_type: PacketType,
        /// The offending field.
        what: &'static str,
    },
    /// The packet carries data MQTT 3.1 cannot express although 3.1.1 can
    /// (CONNACK's Session Present).
    #[error("{packet_type}: {what} cannot be sent to an MQTT 3.1 peer")]
    NotInV31 {
        /// The packet type.
        packet_type: PacketType,
        /// The offending field.
        what: &'static str,
    },
    /// Binary Data longer than 65 535 bytes.
    #[error("{field} of {len} bytes is longer than 65535 bytes")]
    BinaryTooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// The remaining length exceeds 268 435 455, the largest Variable Byte Integer.
    #[error("remaining length {0} exceeds 268435455")]
    PacketTooLarge(usize),
    /// A PUBLISH with QoS 1 or 2 has no packet identifier.
    #[error("[MQTT-2.2.1-3] QoS {0} PUBLISH without a packet identifier")]
    MissingPacketId(u8),
    /// A QoS 0 PUBLISH has a packet identifier.
    #[error("[MQTT-2.2.1-2] QoS 0 PUBLISH with a packet identifier")]
    UnexpectedPacketId,
    /// A QoS 0 PUBLISH has the DUP flag set.
    #[error("[MQTT-3.3.1-2] DUP flag set on a QoS 0 PUBLISH")]
    DupWithQoS0,
    /// A CONNACK with a failure code has Session Present set.
    #[error("[MQTT-3.2.2-6] session present set on a refused connection")]
    SessionPresentOnError,
    /// An empty topic filter in SUBSCRIBE or UNSUBSCRIBE.
    #[error("[MQTT-4.7.3-1] empty topic filter")]
    EmptyTopicFilter,
    /// No Local set on a shared subscription.
    #[error("[MQTT-3.8.3-4] no local set on a shared subscription")]
    NoLocalOnSharedSubscription,
    /// A PUBLISH without topic name (and, in 5.0, without topic alias).
    #[error("[MQTT-4.7.3-1] empty topic name without a topic alias")]
    EmptyTopicName,
    /// A PUBLISH Topic Name contains `+` or `#`.
    #[error("[MQTT-3.3.2-2] topic name contains a wildcard")]
    TopicNameWildcard,
    /// A Response Topic contains `+` or `#`.
    #[error("[MQTT-3.3.2-14] response topic contains a wildcard")]
    ResponseTopicWildcard,
    /// A SUBSCRIBE or UNSUBSCRIBE without topic filters, or a SUBACK or 5.0 UNSUBACK without reason codes.
    #[error("[MQTT-3.8.3-2] {0} with an empty payload")]
    EmptyPayload(PacketType),
    /// A property value the spec does not allow (e.g. Maximum QoS 2, a
    /// Subscription Identifier above 268 435 455).
    #[error("invalid value for {0}")]
    InvalidProperty(&'static str),
    /// Authentication Data without an Authentication Method.
    #[error("authentication data without an authentication method")]
    AuthDataWithoutMethod,
    /// An AUTH packet with a reason code or properties but no Authentication
    /// Method (MQTT 5.0 section 3.15.2.2.2).
    #[error("[MQTT-4.12.0-5] AUTH without an authentication method")]
    AuthWithoutMethod,
    /// MQTT 3.1.1: a password without a user name.
    #[error("[MQTT-3.1.2-22] password without user name")]
    PasswordWithoutUsername,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_quote_spec_ids() {
        assert_eq!(
            DecodeError::TopicNameWildcard.to_string(),
            "[MQTT-3.3.2-2] topic name contains a wildcard"
        );
        assert_eq!(
            StringError::NullCharacter.to_string(),
            "[MQTT-1.5.4-2] string contains U+0000"
        );
    }

    #[test]
    fn reason_codes() {
        assert_eq!(
            DecodeError::PacketTooLarge { size: 10, max: 5 }.reason_code(),
            ReasonCode::PacketTooLarge
        );
        assert_eq!(
            DecodeError::UnsupportedProtocolLevel(3).reason_code(),
            ReasonCode::UnsupportedProtocolVersion
        );
        assert_eq!(
            DecodeError::UnsupportedProtocolLevel(3).protocol_level(),
            Some(3)
        );
        assert_eq!(DecodeError::DupWithQoS0.protocol_level(), None);
        assert_eq!(
            DecodeError::DuplicateProperty {
                id: 1,
                context: "PUBLISH"
            }
            .reason_code(),
            ReasonCode::ProtocolError
        );
        assert_eq!(
            DecodeError::NonMinimalVarInt.reason_code(),
            ReasonCode::MalformedPacket
        );
        assert_eq!(
            DecodeError::ZeroTopicAlias.reason_code(),
            ReasonCode::TopicAliasInvalid
        );
    }
}
