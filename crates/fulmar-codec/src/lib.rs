//! Sans-IO MQTT 3.1.1 and 5.0 packet codec (and MQTT 3.1, `MQIsdp`: see
//! [`ProtocolVersion::V31`]).
//!
//! # Contract
//!
//! - No IO, no clock, no global state: bytes and a [`ProtocolVersion`] in,
//!   [`Packet`]s out, and back. Deterministic.
//! - [`decode`] is streaming: `Ok(None)` means "need more bytes" and leaves the
//!   buffer untouched; `Err` means the input is malformed and never will parse.
//!   The remaining length is checked against the maximum packet size before
//!   the body is buffered. A decoded packet consumes exactly its own bytes.
//! - One packet model for both versions. MQTT 5.0-only data (properties,
//!   reason codes) live in fields that are empty or default under 3.1.1;
//!   encoding such data for a 3.1.1 peer is an [`EncodeError`], not a silent
//!   drop, unless 3.1.1 has an equivalent (CONNACK return codes, SUBACK 0x80).
//! - Strings ([`MqttString`]) and payloads are validated, zero-copy slices of
//!   the input buffer; decoding PUBLISH and acknowledgements does not allocate
//!   once the buffer is shared.
//! - Properties are typed per packet and validated on decode: a property in the
//!   wrong packet, a repeated single-valued property, a zero where zero is
//!   forbidden are errors.
//! - Every [`DecodeError`] maps to the reason code the receiver must send
//!   ([`DecodeError::reason_code`]); 3.1.1 receivers just close the connection.
//! - No panics on input: no `unwrap`, no slice indexing on decode paths.
//!
//! Also here: the reason codes of each packet and the general [`ReasonCode`],
//! topic alias bookkeeping ([`TopicAliasResolver`], [`TopicAliasAllocator`]),
//! and with the `tokio-util` feature a `Decoder`/`Encoder` (`MqttCodec`).
//!
//! # Example
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use fulmar_codec::{decode, DecodeError, Packet, PacketId, ProtocolVersion, Publish, QoS, ReasonCode};
//!
//! let mut publish = Publish::new("sensors/temp".into(), Bytes::from_static(b"21.5"));
//! publish.qos = QoS::AtLeastOnce;
//! publish.packet_id = PacketId::new(1);
//! publish.properties.message_expiry_interval = Some(60);
//!
//! let mut wire = BytesMut::new();
//! let packet = Packet::from(publish);
//! packet.encode(ProtocolVersion::V5, &mut wire).unwrap();
//! assert_eq!(wire.len(), packet.encoded_len(ProtocolVersion::V5).unwrap());
//!
//! // Bytes arrive in pieces: the first half is not a packet yet.
//! let mut inbound = BytesMut::new();
//! inbound.extend_from_slice(&wire[..5]);
//! assert_eq!(decode(&mut inbound, ProtocolVersion::V5, 1024), Ok(None));
//! inbound.extend_from_slice(&wire[5..]);
//! assert_eq!(decode(&mut inbound, ProtocolVersion::V5, 1024), Ok(Some(packet)));
//! assert!(inbound.is_empty());
//!
//! // A QoS 0 PUBLISH with DUP set is malformed.
//! let mut bad = BytesMut::from(&[0x38, 0x03, 0x00, 0x01, b't'][..]);
//! let err = decode(&mut bad, ProtocolVersion::V5, 1024).unwrap_err();
//! assert_eq!(err, DecodeError::DupWithQoS0);
//! assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
//! ```

#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

mod ack;
mod alias;
mod auth;
#[cfg(feature = "tokio-util")]
mod codec;
mod connack;
mod connect;
mod disconnect;
mod encode;
mod error;
mod packet;
mod properties;
mod property_codec;
mod puback;
mod pubcomp;
mod publish;
mod pubrec;
mod pubrel;
mod reason;
mod string;
mod suback;
mod subscribe;
#[cfg(test)]
mod tests;
mod types;
mod unsuback;
mod unsubscribe;
mod wire;

pub use alias::{
    ALIAS_ENTRY_COST, AliasError, DEFAULT_ALIAS_BUDGET, TopicAliasAllocator, TopicAliasResolver,
};
pub use auth::Auth;
#[cfg(feature = "tokio-util")]
pub use codec::{CodecError, MqttCodec};
pub use connack::ConnAck;
pub use connect::{Connect, Will};
pub use disconnect::Disconnect;
pub use error::{DecodeError, EncodeError, InvalidValue, StringError};
pub use packet::{MAX_RESERVE_AHEAD, MIN_USER_PROPERTY_BYTES, Packet, decode, packet_size};
pub use properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PayloadFormat, PublishProperties, SubscribeProperties, UnsubscribeProperties, UserProperties,
    WillProperties,
};
pub use puback::PubAck;
pub use pubcomp::PubComp;
pub use publish::Publish;
pub use pubrec::PubRec;
pub use pubrel::PubRel;
pub use reason::{
    AuthReasonCode, ConnectReasonCode, DisconnectReasonCode, PubAckReasonCode, PubCompReasonCode,
    PubRecReasonCode, PubRelReasonCode, ReasonCode, SubAckReasonCode, UnsubAckReasonCode,
};
pub use string::{MAX_STRING_LEN, MqttString};
pub use suback::SubAck;
pub use subscribe::{RetainHandling, Subscribe, SubscriptionOptions};
pub use types::{PacketId, PacketType, ProtocolVersion, QoS};
pub use unsuback::UnsubAck;
pub use unsubscribe::Unsubscribe;
