//! The client's error type.

use std::io;

use fulmar_codec::{AckProperties, ConnectReasonCode, ReasonCode, SubAck, UnsubAck};
use fulmar_session::DropReason;

/// Everything that can go wrong with a [`Client`](crate::Client) call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The options cannot make a valid CONNECT (or a TLS / WebSocket setup).
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// A topic name or filter is not valid (MQTT 5.0 / 3.1.1 section 4.7).
    #[error(transparent)]
    InvalidTopic(#[from] fulmar_topic::TopicError),
    /// The transport failed: connect, read or write.
    #[error("transport: {0}")]
    Io(#[from] io::Error),
    /// The TLS handshake or configuration failed.
    #[cfg(feature = "tls")]
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// The WebSocket handshake failed.
    #[cfg(feature = "websocket")]
    #[error("websocket: {0}")]
    WebSocket(Box<tokio_tungstenite::tungstenite::Error>),
    /// No CONNACK arrived in time, or the transport did not connect in time.
    #[error("connect timeout")]
    ConnectTimeout,
    /// The broker refused the connection with this CONNACK reason code
    /// ([MQTT-3.2.2-7]: it closes the connection afterwards).
    #[error("[MQTT-3.2.2-7] connection refused: {reason_code}")]
    Refused {
        /// The CONNACK reason code (3.1.1 return codes are mapped to it).
        reason_code: ConnectReasonCode,
        /// The CONNACK Reason String (MQTT 5.0).
        reason_string: Option<String>,
    },
    /// A packet could not be encoded for the broker's protocol version.
    #[error(transparent)]
    Encode(#[from] fulmar_codec::EncodeError),
    /// The broker answered a PUBLISH with a failure reason code (0x80 or
    /// above) in PUBACK or PUBREC (MQTT 5.0).
    #[error("publish rejected by the broker: {reason_code}")]
    PublishRejected {
        /// The reason code of the PUBACK or PUBREC.
        reason_code: ReasonCode,
        /// Its Reason String and User Properties.
        properties: AckProperties,
    },
    /// The session dropped the message without completing its QoS flow
    /// (expired, too large for the broker, or the broker lost the session).
    #[error("publish dropped: {0:?}")]
    PublishDropped(DropReason),
    /// The session refused the message or request (e.g. QoS above the
    /// broker's Maximum QoS, subscription identifiers in a PUBLISH).
    #[error(transparent)]
    Session(#[from] fulmar_session::Error),
    /// The queue of messages waiting for a connection is full
    /// ([`ConnectOptions::max_buffered_publishes`](crate::ConnectOptions::max_buffered_publishes));
    /// try again later. While connected, a publish waits for room instead.
    #[error("outbound queue is full ({0} messages)")]
    QueueFull(usize),
    /// SUBSCRIBE and UNSUBSCRIBE need a live connection.
    #[error("not connected")]
    NotConnected,
    /// The connection was lost before the SUBSCRIBE was acknowledged (or
    /// before a QoS 0 message taken for sending was written).
    #[error("connection lost before the acknowledgement")]
    RequestLost,
    /// Every filter of a SUBSCRIBE was refused (one SUBACK failure code each).
    #[error("subscription refused: {:?}", .0.reason_codes)]
    SubscribeRejected(SubAck),
    /// An UNSUBSCRIBE was refused (MQTT 5.0 failure reason codes).
    #[error("unsubscribe refused: {:?}", .0.reason_codes)]
    UnsubscribeRejected(UnsubAck),
    /// The client was disconnected (by [`Client::disconnect`](crate::Client::disconnect),
    /// or because reconnecting is off) before the call completed.
    #[error("client closed")]
    Closed,
    /// MQTT 5.0 enhanced authentication failed on the client's side: the
    /// [`Authenticator`](crate::Authenticator) gave up (a challenge it cannot
    /// answer, a broker proof that does not check out). A refusal by the
    /// broker is [`Error::Refused`] instead, or, for a re-authentication,
    /// [`Error::DisconnectedByBroker`].
    /// Shared: every call that waited on the exchange gets the same error
    /// (downcast it to the authenticator's own error type).
    #[error("enhanced authentication failed: {0}")]
    Authentication(std::sync::Arc<dyn std::error::Error + Send + Sync>),
    /// The broker ended the connection with a DISCONNECT (MQTT 5.0) or
    /// closed it.
    #[error("disconnected by the broker: {0}")]
    DisconnectedByBroker(ReasonCode),
}

impl Error {
    /// Maps a session error, turning a full queue into [`Error::QueueFull`].
    pub(crate) fn from_session(error: fulmar_session::Error) -> Self {
        match error {
            fulmar_session::Error::Limit(fulmar_session::LimitExceeded::PendingQueueFull(n)) => {
                Self::QueueFull(n)
            }
            fulmar_session::Error::Api(fulmar_session::ApiError::InvalidState(_)) => {
                Self::NotConnected
            }
            other => Self::Session(other),
        }
    }
}

#[cfg(feature = "websocket")]
impl From<tokio_tungstenite::tungstenite::Error> for Error {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        Self::WebSocket(Box::new(e))
    }
}
