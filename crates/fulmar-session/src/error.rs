//! Layered errors: what the peer did wrong ([`ProtocolViolation`]), which
//! limit was hit ([`LimitExceeded`]), and how the application misused the API
//! ([`ApiError`]). Each peer-caused error knows the reason code that goes on
//! the wire before the connection is closed.

use fulmar_codec::{DisconnectReasonCode, PacketType, QoS};

/// Who ended a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Initiator {
    /// The application (`disconnect`, `reject`).
    Local,
    /// The session itself: a protocol violation, a limit, a timeout.
    Library,
    /// The peer: it sent DISCONNECT, or a CONNACK refusing the connection.
    Remote,
    /// The transport ended without a DISCONNECT (`connection_lost`).
    Network,
}

/// The peer broke a rule of the protocol. Fatal: the connection is closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolViolation {
    /// The first packet of a connection was not CONNECT.
    #[error("[MQTT-3.1.0-1] first packet from the client is {0}, not CONNECT")]
    FirstPacketNotConnect(PacketType),
    /// A second CONNECT on the same connection.
    #[error("[MQTT-3.1.0-2] second CONNECT on a connection")]
    SecondConnect,
    /// The server sent something other than CONNACK (or AUTH) first.
    #[error("[MQTT-3.2.0-1] server sent {0} before CONNACK")]
    NotConnAckFirst(PacketType),
    /// A second CONNACK on the same connection.
    #[error("[MQTT-3.2.0-2] second CONNACK on a connection")]
    SecondConnAck,
    /// A packet this role never receives (e.g. SUBACK at a server).
    #[error("{0} is not allowed in this direction")]
    UnexpectedPacket(PacketType),
    /// CONNACK with Session Present 1 after a Clean Start CONNECT.
    #[error("[MQTT-3.2.2-4] session present although the client started a clean session")]
    UnexpectedSessionPresent,
    /// A QoS 1 or 2 PUBLISH without packet identifier, or QoS 0 with one.
    #[error("[MQTT-2.2.1-2] PUBLISH packet identifier does not match its QoS")]
    PacketIdMismatch,
    /// A SUBSCRIBE or UNSUBSCRIBE reused an identifier that is still in flight.
    #[error("[MQTT-2.2.1-3] packet identifier {0} is already in use")]
    PacketIdInUse(u16),
    /// SUBACK or UNSUBACK for a request we did not send.
    #[error("acknowledgement for unknown packet identifier {0}")]
    UnknownPacketId(u16),
    /// SUBACK or UNSUBACK with a reason code count that differs from the request.
    #[error("[MQTT-3.9.3-2] {got} reason codes for {expected} topic filters")]
    ReasonCodeCount {
        /// Topic filters in the request.
        expected: usize,
        /// Reason codes received.
        got: usize,
    },
    /// Topic Alias 0 or above the maximum we announced.
    #[error("topic alias {0} is 0 or above the maximum (MQTT 5.0 section 3.3.2.3.4)")]
    TopicAliasInvalid(u16),
    /// An empty topic name with an alias that has no mapping yet.
    #[error("topic alias {0} has no mapping on this connection")]
    TopicAliasUnknown(u16),
    /// A PUBLISH with an empty topic and no topic alias.
    #[error("[MQTT-3.3.2-1] PUBLISH without topic name")]
    EmptyTopic,
    /// The Will Topic of a CONNECT is empty or contains a wildcard: the will
    /// could never be published to it.
    #[error("[MQTT-4.7.0-1] [MQTT-4.7.3-1] will topic is empty or contains a wildcard")]
    WillTopicInvalid,
    /// MQTT 3.1: a SUBSCRIBE with a filter that is not valid, which 3.1
    /// cannot refuse in its SUBACK (it has no failure code): the connection
    /// is closed, as mosquitto does.
    #[error("[MQTT-4.7.1-1] invalid topic filter from an MQTT 3.1 client")]
    TopicFilterInvalid,
    /// A client sent a Subscription Identifier in a PUBLISH.
    #[error("[MQTT-3.3.4-6] PUBLISH from a client contains a subscription identifier")]
    SubscriptionIdentifierFromClient,
    /// A PUBLISH above the Maximum QoS we announced.
    #[error("[MQTT-3.2.2-11] PUBLISH at {0:?} exceeds the maximum QoS")]
    QoSNotSupported(QoS),
    /// A retained PUBLISH although we announced Retain Available 0.
    #[error("[MQTT-3.2.2-14] retained PUBLISH although retain is not available")]
    RetainNotSupported,
    /// A SUBSCRIBE with a wildcard filter although we announced Wildcard
    /// Subscription Available 0 (MQTT 5.0).
    #[error(
        "SUBSCRIBE with a wildcard filter although wildcard subscriptions are not available (MQTT 5.0 section 3.2.2.3.11)"
    )]
    WildcardSubscriptionsNotSupported,
    /// A SUBSCRIBE with a shared subscription filter although we announced
    /// Shared Subscription Available 0 (MQTT 5.0).
    #[error(
        "SUBSCRIBE with a shared subscription although shared subscriptions are not available (MQTT 5.0 section 3.2.2.3.13)"
    )]
    SharedSubscriptionsNotSupported,
    /// A SUBSCRIBE with a Subscription Identifier although we announced
    /// Subscription Identifiers Available 0 (MQTT 5.0).
    #[error(
        "SUBSCRIBE with a subscription identifier although subscription identifiers are not available (MQTT 5.0 section 3.2.2.3.12)"
    )]
    SubscriptionIdentifiersNotSupported,
    /// DISCONNECT setting a non-zero Session Expiry Interval after CONNECT set 0.
    #[error(
        "session expiry interval set on DISCONNECT after 0 on CONNECT (MQTT 5.0 section 3.14.2.2.2)"
    )]
    SessionExpiryOnDisconnect,
    /// AUTH although no Authentication Method was given in CONNECT.
    #[error("[MQTT-4.12.0-7] AUTH without an authentication method in CONNECT")]
    UnexpectedAuth,
    /// AUTH, or a successful CONNACK, whose Authentication Method is not the
    /// one of the CONNECT (missing or another one).
    #[error(
        "[MQTT-4.12.0-5] AUTH or CONNACK with an authentication method other than the CONNECT's"
    )]
    AuthMethodMismatch,
    /// A CONNACK with an Authentication Method although the CONNECT had none.
    #[error("[MQTT-4.12.0-6] CONNACK with an authentication method the CONNECT did not ask for")]
    UnexpectedAuthMethod,
    /// AUTH with a reason code its sender may not use at this point: 0x18
    /// Continue authentication only before CONNACK ([MQTT-4.12.0-2],
    /// [MQTT-4.12.0-3]); after it 0x19 Re-authenticate or 0x18 from the
    /// client ([MQTT-4.12.1-1]), 0x00 Success or 0x18 from the server, and
    /// only in a re-authentication the client started.
    #[error(
        "AUTH with reason code 0x{0:02X} where its sender may not use it (MQTT 5.0 section 4.12)"
    )]
    UnexpectedAuthReason(u8),
    /// A PUBREL for an inbound QoS 2 message whose PUBREC was not sent yet
    /// (it waits for the application's `ack`, see `Config::manual_acks`).
    #[error("[MQTT-4.3.3-4] PUBREL for packet identifier {0} before its PUBREC was sent")]
    PubRelBeforePubRec(u16),
    /// A packet that could not be decoded (reported by the driver).
    #[error("malformed packet: {0}")]
    Decode(String),
}

impl ProtocolViolation {
    /// The DISCONNECT reason code to send (MQTT 5.0).
    #[must_use]
    pub fn reason_code(&self) -> DisconnectReasonCode {
        match self {
            Self::TopicAliasInvalid(_) => DisconnectReasonCode::TopicAliasInvalid,
            Self::WillTopicInvalid => DisconnectReasonCode::TopicNameInvalid,
            Self::TopicFilterInvalid => DisconnectReasonCode::TopicFilterInvalid,
            Self::QoSNotSupported(_) => DisconnectReasonCode::QoSNotSupported,
            Self::RetainNotSupported => DisconnectReasonCode::RetainNotSupported,
            Self::AuthMethodMismatch => DisconnectReasonCode::BadAuthenticationMethod,
            Self::WildcardSubscriptionsNotSupported => {
                DisconnectReasonCode::WildcardSubscriptionsNotSupported
            }
            Self::SharedSubscriptionsNotSupported => {
                DisconnectReasonCode::SharedSubscriptionsNotSupported
            }
            Self::SubscriptionIdentifiersNotSupported => {
                DisconnectReasonCode::SubscriptionIdentifiersNotSupported
            }
            Self::Decode(_) => DisconnectReasonCode::MalformedPacket,
            _ => DisconnectReasonCode::ProtocolError,
        }
    }
}

/// A limit was hit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitExceeded {
    /// The peer sent more unacknowledged QoS 1/2 PUBLISH packets than our Receive Maximum.
    #[error("[MQTT-3.3.4-9] peer exceeded receive maximum {0}")]
    ReceiveMaximum(u16),
    /// The outbound queue of not yet sent messages is full.
    #[error("outbound queue is full ({0} messages)")]
    PendingQueueFull(usize),
    /// Every packet identifier is in use.
    #[error("[MQTT-4.3.2-1] no unused packet identifier left")]
    NoPacketId,
    /// Too many SUBSCRIBE/UNSUBSCRIBE requests are waiting for their acknowledgement.
    #[error("{0} subscribe/unsubscribe requests already in flight")]
    TooManyRequests(usize),
    /// Too many packets arrived before the application accepted the CONNECT.
    #[error("{0} packets received before the CONNECT was accepted")]
    EarlyPackets(usize),
    /// The packets that arrived before the application accepted the CONNECT
    /// hold more than this many bytes (one packet of any size is kept).
    #[error("over {0} bytes of packets received before the CONNECT was accepted")]
    EarlyBytes(usize),
    /// The packet is larger than the peer's Maximum Packet Size.
    #[error("[MQTT-3.2.2-15] packet of {size} bytes exceeds the peer's maximum packet size {max}")]
    PacketTooLarge {
        /// Encoded size of the packet.
        size: usize,
        /// The peer's Maximum Packet Size.
        max: u32,
    },
}

impl LimitExceeded {
    /// The DISCONNECT reason code to send when the peer caused it (MQTT 5.0).
    #[must_use]
    pub fn reason_code(&self) -> DisconnectReasonCode {
        match self {
            Self::ReceiveMaximum(_) => DisconnectReasonCode::ReceiveMaximumExceeded,
            Self::PacketTooLarge { .. } => DisconnectReasonCode::PacketTooLarge,
            _ => DisconnectReasonCode::QuotaExceeded,
        }
    }
}

/// The application called a method that does not fit the session's state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The call needs another connection state (named).
    #[error("not allowed in state {0}")]
    InvalidState(&'static str),
    /// The method is for the other role.
    #[error("not available to a {0:?}")]
    WrongRole(crate::Role),
    /// The server does not accept this QoS (Maximum QoS in CONNACK).
    #[error("[MQTT-3.2.2-11] {0:?} exceeds the server's maximum QoS")]
    QoSNotSupported(QoS),
    /// The server does not accept retained messages.
    #[error("[MQTT-3.2.2-14] the server does not support retained messages")]
    RetainNotSupported,
    /// A PUBLISH without topic name.
    #[error("[MQTT-4.7.3-1] empty topic name")]
    EmptyTopic,
    /// A client may not send Subscription Identifiers in PUBLISH.
    #[error("[MQTT-3.3.4-6] a client PUBLISH must not carry subscription identifiers")]
    SubscriptionIdentifier,
    /// A client PUBLISH (MQTT 5.0) whose Payload Format Indicator says UTF-8
    /// (1) with a payload that is not well-formed UTF-8: the spec requires
    /// it to be (section 3.3.2.3.2), and a server that checks answers it with
    /// 0x99 Payload format invalid. Send it with the indicator absent or 0,
    /// or fix the payload.
    #[error("[MQTT 5.0 3.3.2.3.2] the payload is marked UTF-8 but is not well-formed UTF-8")]
    PayloadFormatInvalid,
    /// The server does not support wildcard subscriptions (Wildcard
    /// Subscription Available 0 in its CONNACK).
    #[error("the server does not support wildcard subscriptions")]
    WildcardSubscriptionsNotSupported,
    /// The server does not support shared subscriptions (Shared
    /// Subscription Available 0 in its CONNACK).
    #[error("the server does not support shared subscriptions")]
    SharedSubscriptionsNotSupported,
    /// The server does not support Subscription Identifiers (Subscription
    /// Identifiers Available 0 in its CONNACK).
    #[error("the server does not support subscription identifiers")]
    SubscriptionIdentifiersNotSupported,
    /// An MQTT 3.1.1 client with an empty client identifier must use a clean session.
    #[error("[MQTT-3.1.3-7] an empty client identifier needs clean session")]
    EmptyClientIdNeedsCleanSession,
    /// MQTT 3.1 requires a client identifier (of 1 to 23 characters).
    #[error("an MQTT 3.1 client needs a client identifier")]
    EmptyClientIdInV31,
    /// The will's topic is empty or contains a wildcard: no server would
    /// publish it.
    #[error("[MQTT-4.7.0-1] [MQTT-4.7.3-1] the will topic is empty or contains a wildcard")]
    InvalidWillTopic,
    /// A v5 CONNECT with an empty client identifier needs an Assigned Client Identifier.
    #[error("[MQTT-3.2.2-16] CONNACK must carry an assigned client identifier")]
    MissingAssignedClientId,
    /// No request with this packet identifier is waiting for an answer.
    #[error("no request with packet identifier {0}")]
    UnknownRequest(u16),
    /// The number of reason codes differs from the number of topic filters.
    #[error("[MQTT-3.9.3-2] {got} reason codes for {expected} topic filters")]
    ReasonCodeCount {
        /// Topic filters in the request.
        expected: usize,
        /// Reason codes given.
        got: usize,
    },
    /// A SUBSCRIBE or UNSUBSCRIBE needs at least one topic filter.
    #[error("[MQTT-3.8.3-2] no topic filter")]
    NoTopicFilters,
    /// A DISCONNECT reason code only a server may send (MQTT 5.0 table 3-10,
    /// [MQTT-3.14.2-1]), given to a client session.
    #[error("[MQTT-3.14.2-1] a client may not send DISCONNECT reason code {0}")]
    ServerOnlyReasonCode(fulmar_codec::DisconnectReasonCode),
    /// A client may not set a Session Expiry Interval on DISCONNECT after
    /// CONNECT set it to 0 (MQTT 5.0 section 3.14.2.2.2).
    #[error("session expiry interval on DISCONNECT after 0 on CONNECT")]
    SessionExpiryAfterZero,
    /// The packet cannot be encoded (a Response Topic with a wildcard,
    /// Correlation Data over 65 535 bytes, No Local on a shared
    /// subscription, ...): refused when it is made, rather than ending
    /// every connection that would try to send it.
    #[error("cannot be encoded: {0}")]
    Unencodable(fulmar_codec::EncodeError),
    /// A persisted session state is inconsistent (e.g. a duplicated packet identifier).
    #[error("invalid session state: {0}")]
    InvalidSessionState(&'static str),
}

/// Every error of the session.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer violated the protocol (fatal).
    #[error(transparent)]
    Protocol(#[from] ProtocolViolation),
    /// A limit was hit (fatal when the peer caused it).
    #[error(transparent)]
    Limit(#[from] LimitExceeded),
    /// The application misused the API (not fatal).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// No packet from the client within 1.5 times the keep alive (server), or no
    /// PINGRESP in time (client).
    #[error("keep alive timeout (server: MQTT-3.1.2-22, client: no PINGRESP)")]
    KeepAliveTimeout,
    /// No CONNECT (server) or CONNACK (client) within the connect timeout.
    #[error("connect timeout")]
    ConnectTimeout,
    /// Client: no SUBACK, UNSUBACK, PUBACK, PUBREC or PUBCOMP within
    /// [`Config::request_timeout`](crate::Config::request_timeout).
    #[error("a request or QoS 1/2 flow was not answered within the request timeout")]
    RequestTimeout,
    /// The server refused the connection with this CONNACK reason code.
    #[error("connection refused: {0}")]
    Refused(fulmar_codec::ConnectReasonCode),
}

impl Error {
    /// The DISCONNECT reason code that reports this error to the peer (MQTT 5.0).
    #[must_use]
    pub fn reason_code(&self) -> DisconnectReasonCode {
        match self {
            Self::Protocol(e) => e.reason_code(),
            Self::Limit(e) => e.reason_code(),
            Self::KeepAliveTimeout => DisconnectReasonCode::KeepAliveTimeout,
            Self::Api(_) | Self::ConnectTimeout | Self::RequestTimeout | Self::Refused(_) => {
                DisconnectReasonCode::UnspecifiedError
            }
        }
    }
}
