//! Reason codes: one enum per packet, plus the general [`ReasonCode`] of spec section 2.4.

use core::fmt;

use crate::error::InvalidValue;
use crate::types::QoS;

macro_rules! reason_codes {
    (
        $(#[$meta:meta])*
        $name:ident ($what:literal) default $default:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        #[repr(u8)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $value, )+
        }

        impl $name {
            /// The wire value.
            #[must_use]
            pub const fn as_u8(self) -> u8 {
                self as u8
            }

            /// Whether the code reports a failure (0x80 or greater, spec 2.4).
            #[must_use]
            pub const fn is_error(self) -> bool {
                self as u8 >= 0x80
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::$default
            }
        }

        impl TryFrom<u8> for $name {
            type Error = InvalidValue;

            fn try_from(value: u8) -> Result<Self, Self::Error> {
                match value {
                    $( $value => Ok(Self::$variant), )+
                    _ => Err(InvalidValue::new($what, value)),
                }
            }
        }

        impl From<$name> for u8 {
            fn from(code: $name) -> u8 {
                code as u8
            }
        }

        impl From<$name> for ReasonCode {
            fn from(code: $name) -> ReasonCode {
                match code {
                    $( $name::$variant => ReasonCode::$variant, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?} ({:#04x})", self, *self as u8)
            }
        }
    };
}

/// Every reason code of MQTT 5.0 section 2.4 (Table 2-6).
///
/// Three names share the value 0x00 (`Success`, `NormalDisconnection`,
/// `GrantedQoS0`); they are distinct variants here so that converting a
/// per-packet code keeps its name. [`ReasonCode::try_from`] maps 0x00 to
/// `Success`. Each per-packet enum converts into this one with `From`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum ReasonCode {
    /// 0x00 Success.
    Success,
    /// 0x00 Normal disconnection (DISCONNECT).
    NormalDisconnection,
    /// 0x00 Granted QoS 0 (SUBACK).
    GrantedQoS0,
    /// 0x01 Granted QoS 1 (SUBACK).
    GrantedQoS1,
    /// 0x02 Granted QoS 2 (SUBACK).
    GrantedQoS2,
    /// 0x04 Disconnect with Will Message (DISCONNECT).
    DisconnectWithWillMessage,
    /// 0x10 No matching subscribers (PUBACK, PUBREC).
    NoMatchingSubscribers,
    /// 0x11 No subscription existed (UNSUBACK).
    NoSubscriptionExisted,
    /// 0x18 Continue authentication (AUTH).
    ContinueAuthentication,
    /// 0x19 Re-authenticate (AUTH).
    ReAuthenticate,
    /// 0x80 Unspecified error.
    UnspecifiedError,
    /// 0x81 Malformed Packet.
    MalformedPacket,
    /// 0x82 Protocol Error.
    ProtocolError,
    /// 0x83 Implementation specific error.
    ImplementationSpecificError,
    /// 0x84 Unsupported Protocol Version.
    UnsupportedProtocolVersion,
    /// 0x85 Client Identifier not valid.
    ClientIdentifierNotValid,
    /// 0x86 Bad User Name or Password.
    BadUserNameOrPassword,
    /// 0x87 Not authorized.
    NotAuthorized,
    /// 0x88 Server unavailable.
    ServerUnavailable,
    /// 0x89 Server busy.
    ServerBusy,
    /// 0x8A Banned.
    Banned,
    /// 0x8B Server shutting down.
    ServerShuttingDown,
    /// 0x8C Bad authentication method.
    BadAuthenticationMethod,
    /// 0x8D Keep Alive timeout.
    KeepAliveTimeout,
    /// 0x8E Session taken over.
    SessionTakenOver,
    /// 0x8F Topic Filter invalid.
    TopicFilterInvalid,
    /// 0x90 Topic Name invalid.
    TopicNameInvalid,
    /// 0x91 Packet Identifier in use.
    PacketIdentifierInUse,
    /// 0x92 Packet Identifier not found.
    PacketIdentifierNotFound,
    /// 0x93 Receive Maximum exceeded.
    ReceiveMaximumExceeded,
    /// 0x94 Topic Alias invalid.
    TopicAliasInvalid,
    /// 0x95 Packet too large.
    PacketTooLarge,
    /// 0x96 Message rate too high.
    MessageRateTooHigh,
    /// 0x97 Quota exceeded.
    QuotaExceeded,
    /// 0x98 Administrative action.
    AdministrativeAction,
    /// 0x99 Payload format invalid.
    PayloadFormatInvalid,
    /// 0x9A Retain not supported.
    RetainNotSupported,
    /// 0x9B QoS not supported.
    QoSNotSupported,
    /// 0x9C Use another server.
    UseAnotherServer,
    /// 0x9D Server moved.
    ServerMoved,
    /// 0x9E Shared Subscriptions not supported.
    SharedSubscriptionsNotSupported,
    /// 0x9F Connection rate exceeded.
    ConnectionRateExceeded,
    /// 0xA0 Maximum connect time.
    MaximumConnectTime,
    /// 0xA1 Subscription Identifiers not supported.
    SubscriptionIdentifiersNotSupported,
    /// 0xA2 Wildcard Subscriptions not supported.
    WildcardSubscriptionsNotSupported,
}

macro_rules! general_values {
    ($( $variant:ident = $value:literal, )+) => {
        impl ReasonCode {
            /// The wire value.
            #[must_use]
            pub const fn as_u8(self) -> u8 {
                match self {
                    $( Self::$variant => $value, )+
                }
            }
        }

        impl TryFrom<u8> for ReasonCode {
            type Error = InvalidValue;

            /// 0x00 maps to [`ReasonCode::Success`].
            #[allow(unreachable_patterns)]
            fn try_from(value: u8) -> Result<Self, Self::Error> {
                match value {
                    $( $value => Ok(Self::$variant), )+
                    _ => Err(InvalidValue::new("reason code", value)),
                }
            }
        }
    };
}

general_values! {
    Success = 0x00,
    NormalDisconnection = 0x00,
    GrantedQoS0 = 0x00,
    GrantedQoS1 = 0x01,
    GrantedQoS2 = 0x02,
    DisconnectWithWillMessage = 0x04,
    NoMatchingSubscribers = 0x10,
    NoSubscriptionExisted = 0x11,
    ContinueAuthentication = 0x18,
    ReAuthenticate = 0x19,
    UnspecifiedError = 0x80,
    MalformedPacket = 0x81,
    ProtocolError = 0x82,
    ImplementationSpecificError = 0x83,
    UnsupportedProtocolVersion = 0x84,
    ClientIdentifierNotValid = 0x85,
    BadUserNameOrPassword = 0x86,
    NotAuthorized = 0x87,
    ServerUnavailable = 0x88,
    ServerBusy = 0x89,
    Banned = 0x8A,
    ServerShuttingDown = 0x8B,
    BadAuthenticationMethod = 0x8C,
    KeepAliveTimeout = 0x8D,
    SessionTakenOver = 0x8E,
    TopicFilterInvalid = 0x8F,
    TopicNameInvalid = 0x90,
    PacketIdentifierInUse = 0x91,
    PacketIdentifierNotFound = 0x92,
    ReceiveMaximumExceeded = 0x93,
    TopicAliasInvalid = 0x94,
    PacketTooLarge = 0x95,
    MessageRateTooHigh = 0x96,
    QuotaExceeded = 0x97,
    AdministrativeAction = 0x98,
    PayloadFormatInvalid = 0x99,
    RetainNotSupported = 0x9A,
    QoSNotSupported = 0x9B,
    UseAnotherServer = 0x9C,
    ServerMoved = 0x9D,
    SharedSubscriptionsNotSupported = 0x9E,
    ConnectionRateExceeded = 0x9F,
    MaximumConnectTime = 0xA0,
    SubscriptionIdentifiersNotSupported = 0xA1,
    WildcardSubscriptionsNotSupported = 0xA2,
}

impl ReasonCode {
    /// Whether the code reports a failure (0x80 or greater).
    #[must_use]
    pub const fn is_error(self) -> bool {
        self.as_u8() >= 0x80
    }
}

impl From<ReasonCode> for u8 {
    fn from(code: ReasonCode) -> u8 {
        code.as_u8()
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({:#04x})", self, self.as_u8())
    }
}

reason_codes! {
    /// CONNACK Reason Code (MQTT 5.0 section 3.2.2.2).
    ///
    /// Under MQTT 3.1.1 the CONNACK carries a return code 0..=5 instead; see
    /// [`ConnectReasonCode::to_v311`] and [`ConnectReasonCode::from_v311`].
    ConnectReasonCode ("CONNACK reason code") default Success {
        /// 0x00 The Connection is accepted.
        Success = 0x00,
        /// 0x80 The Server does not wish to reveal the reason for the failure.
        UnspecifiedError = 0x80,
        /// 0x81 Data within the CONNECT packet could not be correctly parsed.
        MalformedPacket = 0x81,
        /// 0x82 Data in the CONNECT packet does not conform to this specification.
        ProtocolError = 0x82,
        /// 0x83 The CONNECT is valid but is not accepted by this Server.
        ImplementationSpecificError = 0x83,
        /// 0x84 The Server does not support the requested protocol version.
        UnsupportedProtocolVersion = 0x84,
        /// 0x85 The Client Identifier is a valid string but is not allowed by the Server.
        ClientIdentifierNotValid = 0x85,
        /// 0x86 The Server does not accept the User Name or Password.
        BadUserNameOrPassword = 0x86,
        /// 0x87 The Client is not authorized to connect.
        NotAuthorized = 0x87,
        /// 0x88 The MQTT Server is not available.
        ServerUnavailable = 0x88,
        /// 0x89 The Server is busy. Try again later.
        ServerBusy = 0x89,
        /// 0x8A This Client has been banned by administrative action.
        Banned = 0x8A,
        /// 0x8C The authentication method is not supported or does not match.
        BadAuthenticationMethod = 0x8C,
        /// 0x90 The Will Topic Name is not malformed, but is not accepted.
        TopicNameInvalid = 0x90,
        /// 0x95 The CONNECT packet exceeded the maximum permissible size.
        PacketTooLarge = 0x95,
        /// 0x97 An implementation or administrative imposed limit has been exceeded.
        QuotaExceeded = 0x97,
        /// 0x99 The Will Payload does not match the specified Payload Format Indicator.
        PayloadFormatInvalid = 0x99,
        /// 0x9A The Server does not support retained messages, and Will Retain was set to 1.
        RetainNotSupported = 0x9A,
        /// 0x9B The Server does not support the QoS set in Will QoS.
        QoSNotSupported = 0x9B,
        /// 0x9C The Client should temporarily use another server.
        UseAnotherServer = 0x9C,
        /// 0x9D The Client should permanently use another server.
        ServerMoved = 0x9D,
        /// 0x9F The connection rate limit has been exceeded.
        ConnectionRateExceeded = 0x9F,
    }
}

impl ConnectReasonCode {
    /// The MQTT 3.1.1 CONNACK return code (section 3.2.2.3) for this code, if
    /// 3.1.1 has one: Success 0, UnsupportedProtocolVersion 1,
    /// ClientIdentifierNotValid 2, ServerUnavailable 3, BadUserNameOrPassword 4,
    /// NotAuthorized 5.
    #[must_use]
    pub const fn to_v311(self) -> Option<u8> {
        match self {
            Self::Success => Some(0),
            Self::UnsupportedProtocolVersion => Some(1),
            Self::ClientIdentifierNotValid => Some(2),
            Self::ServerUnavailable => Some(3),
            Self::BadUserNameOrPassword => Some(4),
            Self::NotAuthorized => Some(5),
            _ => None,
        }
    }

    /// The code for an MQTT 3.1.1 CONNACK return code 0..=5.
    #[must_use]
    pub const fn from_v311(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Success),
            1 => Some(Self::UnsupportedProtocolVersion),
            2 => Some(Self::ClientIdentifierNotValid),
            3 => Some(Self::ServerUnavailable),
            4 => Some(Self::BadUserNameOrPassword),
            5 => Some(Self::NotAuthorized),
            _ => None,
        }
    }
}

reason_codes! {
    /// PUBACK Reason Code (MQTT 5.0 section 3.4.2.1).
    PubAckReasonCode ("PUBACK reason code") default Success {
        /// 0x00 The message is accepted.
        Success = 0x00,
        /// 0x10 The message is accepted but there are no subscribers.
        NoMatchingSubscribers = 0x10,
        /// 0x80 The receiver does not accept the publish but does not say why.
        UnspecifiedError = 0x80,
        /// 0x83 The PUBLISH is valid but the receiver is not willing to accept it.
        ImplementationSpecificError = 0x83,
        /// 0x87 The PUBLISH is not authorized.
        NotAuthorized = 0x87,
        /// 0x90 The Topic Name is not malformed, but is not accepted.
        TopicNameInvalid = 0x90,
        /// 0x91 The Packet Identifier is already in use.
        PacketIdentifierInUse = 0x91,
        /// 0x97 An implementation or administrative imposed limit has been exceeded.
        QuotaExceeded = 0x97,
        /// 0x99 The payload format does not match the Payload Format Indicator.
        PayloadFormatInvalid = 0x99,
    }
}

reason_codes! {
    /// PUBREC Reason Code (MQTT 5.0 section 3.5.2.1).
    PubRecReasonCode ("PUBREC reason code") default Success {
        /// 0x00 The message is accepted; publication of the QoS 2 message proceeds.
        Success = 0x00,
        /// 0x10 The message is accepted but there are no subscribers.
        NoMatchingSubscribers = 0x10,
        /// 0x80 The receiver does not accept the publish but does not say why.
        UnspecifiedError = 0x80,
        /// 0x83 The PUBLISH is valid but the receiver is not willing to accept it.
        ImplementationSpecificError = 0x83,
        /// 0x87 The PUBLISH is not authorized.
        NotAuthorized = 0x87,
        /// 0x90 The Topic Name is not malformed, but is not accepted.
        TopicNameInvalid = 0x90,
        /// 0x91 The Packet Identifier is already in use.
        PacketIdentifierInUse = 0x91,
        /// 0x97 An implementation or administrative imposed limit has been exceeded.
        QuotaExceeded = 0x97,
        /// 0x99 The payload format does not match the Payload Format Indicator.
        PayloadFormatInvalid = 0x99,
    }
}

reason_codes! {
    /// PUBREL Reason Code (MQTT 5.0 section 3.6.2.1).
    PubRelReasonCode ("PUBREL reason code") default Success {
        /// 0x00 Message released.
        Success = 0x00,
        /// 0x92 The Packet Identifier is not known.
        PacketIdentifierNotFound = 0x92,
    }
}

reason_codes! {
    /// PUBCOMP Reason Code (MQTT 5.0 section 3.7.2.1).
    PubCompReasonCode ("PUBCOMP reason code") default Success {
        /// 0x00 Packet Identifier released; publication of the QoS 2 message is complete.
        Success = 0x00,
        /// 0x92 The Packet Identifier is not known.
        PacketIdentifierNotFound = 0x92,
    }
}

reason_codes! {
    /// SUBACK Reason Code (MQTT 5.0 section 3.9.3; MQTT 3.1.1 section 3.9.3 return codes).
    ///
    /// MQTT 3.1.1 knows 0x00, 0x01, 0x02 and 0x80 (Failure); the encoder sends
    /// every failure code as 0x80 to a 3.1.1 peer, and the decoder reads 0x80 as
    /// [`SubAckReasonCode::UnspecifiedError`].
    SubAckReasonCode ("SUBACK reason code") default GrantedQoS0 {
        /// 0x00 The subscription is accepted with maximum QoS 0.
        GrantedQoS0 = 0x00,
        /// 0x01 The subscription is accepted with maximum QoS 1.
        GrantedQoS1 = 0x01,
        /// 0x02 The subscription is accepted with maximum QoS 2.
        GrantedQoS2 = 0x02,
        /// 0x80 The subscription is not accepted (3.1.1: Failure).
        UnspecifiedError = 0x80,
        /// 0x83 The SUBSCRIBE is valid but the Server does not accept it.
        ImplementationSpecificError = 0x83,
        /// 0x87 The Client is not authorized to make this subscription.
        NotAuthorized = 0x87,
        /// 0x8F The Topic Filter is correctly formed but is not allowed for this Client.
        TopicFilterInvalid = 0x8F,
        /// 0x91 The specified Packet Identifier is already in use.
        PacketIdentifierInUse = 0x91,
        /// 0x97 An implementation or administrative imposed limit has been exceeded.
        QuotaExceeded = 0x97,
        /// 0x9E The Server does not support Shared Subscriptions for this Client.
        SharedSubscriptionsNotSupported = 0x9E,
        /// 0xA1 The Server does not support Subscription Identifiers.
        SubscriptionIdentifiersNotSupported = 0xA1,
        /// 0xA2 The Server does not support Wildcard Subscriptions.
        WildcardSubscriptionsNotSupported = 0xA2,
    }
}

impl SubAckReasonCode {
    /// The success code granting `qos`.
    #[must_use]
    pub const fn granted(qos: QoS) -> Self {
        match qos {
            QoS::AtMostOnce => Self::GrantedQoS0,
            QoS::AtLeastOnce => Self::GrantedQoS1,
            QoS::ExactlyOnce => Self::GrantedQoS2,
        }
    }

    /// The granted QoS, or `None` for a failure code.
    #[must_use]
    pub const fn granted_qos(self) -> Option<QoS> {
        match self {
            Self::GrantedQoS0 => Some(QoS::AtMostOnce),
            Self::GrantedQoS1 => Some(QoS::AtLeastOnce),
            Self::GrantedQoS2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

reason_codes! {
    /// UNSUBACK Reason Code (MQTT 5.0 section 3.11.3). MQTT 3.1.1 UNSUBACK has none.
    UnsubAckReasonCode ("UNSUBACK reason code") default Success {
        /// 0x00 The subscription is deleted.
        Success = 0x00,
        /// 0x11 No matching Topic Filter is being used by the Client.
        NoSubscriptionExisted = 0x11,
        /// 0x80 The unsubscribe could not be completed.
        UnspecifiedError = 0x80,
        /// 0x83 The UNSUBSCRIBE is valid but the Server does not accept it.
        ImplementationSpecificError = 0x83,
        /// 0x87 The Client is not authorized to unsubscribe.
        NotAuthorized = 0x87,
        /// 0x8F The Topic Filter is correctly formed but is not allowed for this Client.
        TopicFilterInvalid = 0x8F,
        /// 0x91 The specified Packet Identifier is already in use.
        PacketIdentifierInUse = 0x91,
    }
}

reason_codes! {
    /// DISCONNECT Reason Code (MQTT 5.0 section 3.14.2.1). MQTT 3.1.1 DISCONNECT has none.
    DisconnectReasonCode ("DISCONNECT reason code") default NormalDisconnection {
        /// 0x00 Close the connection normally. Do not send the Will Message.
        NormalDisconnection = 0x00,
        /// 0x04 The Client wishes to disconnect but requires the Will Message to be published.
        DisconnectWithWillMessage = 0x04,
        /// 0x80 The Connection is closed but the sender does not wish to reveal the reason.
        UnspecifiedError = 0x80,
        /// 0x81 The received packet does not conform to this specification.
        MalformedPacket = 0x81,
        /// 0x82 An unexpected or out of order packet was received.
        ProtocolError = 0x82,
        /// 0x83 The packet received is valid but cannot be processed by this implementation.
        ImplementationSpecificError = 0x83,
        /// 0x87 The request is not authorized.
        NotAuthorized = 0x87,
        /// 0x89 The Server is busy and cannot continue processing requests from this Client.
        ServerBusy = 0x89,
        /// 0x8B The Server is shutting down.
        ServerShuttingDown = 0x8B,
        /// 0x8C The authentication method is not supported or does not match.
        BadAuthenticationMethod = 0x8C,
        /// 0x8D The Connection is closed because no packet has been received for 1.5 times the Keepalive time.
        KeepAliveTimeout = 0x8D,
        /// 0x8E Another Connection using the same ClientID has connected.
        SessionTakenOver = 0x8E,
        /// 0x8F The Topic Filter is correctly formed, but is not accepted by this Server.
        TopicFilterInvalid = 0x8F,
        /// 0x90 The Topic Name is correctly formed, but is not accepted.
        TopicNameInvalid = 0x90,
        /// 0x93 More than Receive Maximum publications without PUBACK or PUBCOMP.
        ReceiveMaximumExceeded = 0x93,
        /// 0x94 A Topic Alias greater than the Maximum Topic Alias was received.
        TopicAliasInvalid = 0x94,
        /// 0x95 The packet size is greater than Maximum Packet Size.
        PacketTooLarge = 0x95,
        /// 0x96 The received data rate is too high.
        MessageRateTooHigh = 0x96,
        /// 0x97 An implementation or administrative imposed limit has been exceeded.
        QuotaExceeded = 0x97,
        /// 0x98 The Connection is closed due to an administrative action.
        AdministrativeAction = 0x98,
        /// 0x99 The payload format does not match the Payload Format Indicator.
        PayloadFormatInvalid = 0x99,
        /// 0x9A The Server does not support retained messages.
        RetainNotSupported = 0x9A,
        /// 0x9B The Client specified a QoS greater than the Maximum QoS.
        QoSNotSupported = 0x9B,
        /// 0x9C The Client should temporarily change its Server.
        UseAnotherServer = 0x9C,
        /// 0x9D The Server is moved and the Client should permanently change its Server.
        ServerMoved = 0x9D,
        /// 0x9E The Server does not support Shared Subscriptions.
        SharedSubscriptionsNotSupported = 0x9E,
        /// 0x9F This connection is closed because the connection rate is too high.
        ConnectionRateExceeded = 0x9F,
        /// 0xA0 The maximum connection time authorized for this connection has been exceeded.
        MaximumConnectTime = 0xA0,
        /// 0xA1 The Server does not support Subscription Identifiers.
        SubscriptionIdentifiersNotSupported = 0xA1,
        /// 0xA2 The Server does not support Wildcard Subscriptions.
        WildcardSubscriptionsNotSupported = 0xA2,
    }
}

reason_codes! {
    /// AUTH Reason Code (MQTT 5.0 section 3.15.2.1).
    AuthReasonCode ("AUTH reason code") default Success {
        /// 0x00 Authentication is successful.
        Success = 0x00,
        /// 0x18 Continue the authentication with another step.
        ContinueAuthentication = 0x18,
        /// 0x19 Initiate a re-authentication.
        ReAuthenticate = 0x19,
    }
}

impl DisconnectReasonCode {
    /// The DISCONNECT code that carries the same meaning as `code`, if
    /// DISCONNECT allows it (used to turn a decode error into the packet to send).
    #[must_use]
    pub fn from_reason_code(code: ReasonCode) -> Option<Self> {
        match code {
            ReasonCode::Success | ReasonCode::NormalDisconnection => {
                Some(Self::NormalDisconnection)
            }
            other => Self::try_from(other.as_u8()).ok(),
        }
    }
}

impl ConnectReasonCode {
    /// The CONNACK code that carries the same meaning as `code`, if CONNACK allows it.
    #[must_use]
    pub fn from_reason_code(code: ReasonCode) -> Option<Self> {
        match code {
            ReasonCode::Success => Some(Self::Success),
            ReasonCode::NormalDisconnection | ReasonCode::GrantedQoS0 => None,
            other => Self::try_from(other.as_u8()).ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_packet_codes_round_trip_and_map_to_general() {
        for v in 0..=255u8 {
            if let Ok(c) = ConnectReasonCode::try_from(v) {
                assert_eq!(c.as_u8(), v);
                assert_eq!(ReasonCode::from(c).as_u8(), v);
                assert_eq!(c.is_error(), v >= 0x80);
            }
            if let Ok(c) = PubAckReasonCode::try_from(v) {
                assert_eq!(ReasonCode::from(c).as_u8(), v);
            }
            if let Ok(c) = PubRecReasonCode::try_from(v) {
                assert_eq!(ReasonCode::from(c).as_u8(), v);
            }
            if let Ok(c) = PubRelReasonCode::try_from(v) {
                assert_eq!(ReasonCode::from(c).as_u8(), v);
            }
            if let Ok(c) = PubCompReasonCode::try_from(v) {
                assert_eq!(ReasonCode::from(c).as_u8(), v);
            }
            if let Ok(c) = SubAckReasonCode::try_from(v) {
                assert_eq!(ReasonCode::from(c).as_u8(), v);
            }
            if let Ok(c) = UnsubAckReasonCode::try_from(v) {
                assert_eq!(ReasonCode::from(c).as_u8(), v);
            }
            if let Ok(c) = DisconnectReasonCode::try_from(v) {
                assert_eq!(ReasonCode::from(c).as_u8(), v);
                assert_eq!(
                    DisconnectReasonCode::from_reason_code(ReasonCode::from(c)),
                    Some(c)
                );
            }
            if let Ok(c) = AuthReasonCode::try_from(v) {
                assert_eq!(ReasonCode::from(c).as_u8(), v);
            }
            if let Ok(c) = ReasonCode::try_from(v) {
                assert_eq!(c.as_u8(), v);
            }
        }
    }

    #[test]
    fn code_counts_match_spec_tables() {
        let count = |f: &dyn Fn(u8) -> bool| (0..=255u8).filter(|v| f(*v)).count();
        assert_eq!(count(&|v| ConnectReasonCode::try_from(v).is_ok()), 22);
        assert_eq!(count(&|v| PubAckReasonCode::try_from(v).is_ok()), 9);
        assert_eq!(count(&|v| PubRelReasonCode::try_from(v).is_ok()), 2);
        assert_eq!(count(&|v| SubAckReasonCode::try_from(v).is_ok()), 12);
        assert_eq!(count(&|v| UnsubAckReasonCode::try_from(v).is_ok()), 7);
        assert_eq!(count(&|v| DisconnectReasonCode::try_from(v).is_ok()), 30);
        assert_eq!(count(&|v| AuthReasonCode::try_from(v).is_ok()), 3);
        // 43 distinct values in Table 2-6.
        assert_eq!(count(&|v| ReasonCode::try_from(v).is_ok()), 43);
    }

    #[test]
    fn general_code_names() {
        assert_eq!(
            ReasonCode::from(DisconnectReasonCode::NormalDisconnection),
            ReasonCode::NormalDisconnection
        );
        assert_eq!(
            ReasonCode::from(SubAckReasonCode::GrantedQoS0),
            ReasonCode::GrantedQoS0
        );
        assert_eq!(ReasonCode::try_from(0).unwrap(), ReasonCode::Success);
        assert_eq!(ReasonCode::PacketTooLarge.as_u8(), 0x95);
        assert!(ReasonCode::MalformedPacket.is_error());
        assert_eq!(
            ReasonCode::ProtocolError.to_string(),
            "ProtocolError (0x82)"
        );
    }

    #[test]
    fn v311_connack_return_codes() {
        for code in 0..=5 {
            assert_eq!(
                ConnectReasonCode::from_v311(code).unwrap().to_v311(),
                Some(code)
            );
        }
        assert_eq!(ConnectReasonCode::from_v311(6), None);
        assert_eq!(ConnectReasonCode::Banned.to_v311(), None);
        assert_eq!(
            ConnectReasonCode::from_v311(1),
            Some(ConnectReasonCode::UnsupportedProtocolVersion)
        );
    }

    #[test]
    fn suback_granted() {
        assert_eq!(
            SubAckReasonCode::granted(QoS::AtLeastOnce),
            SubAckReasonCode::GrantedQoS1
        );
        assert_eq!(
            SubAckReasonCode::GrantedQoS2.granted_qos(),
            Some(QoS::ExactlyOnce)
        );
        assert_eq!(SubAckReasonCode::NotAuthorized.granted_qos(), None);
    }
}
