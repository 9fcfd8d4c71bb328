//! Sans-IO MQTT 3.1.1 and 5.0 packet codec.
//!
//! # Contract
//!
//! - No IO, no clock, no global state: bytes and a [`ProtocolVersion`] in,
//!   [`Packet`]s out, and back. Deterministic.
//! - One packet model for both versions. MQTT 5.0-only data (properties,
//!   reason codes) live in fields that are empty or default under 3.1.1.
//! - Strings ([`MqttString`]) and payloads are validated, zero-copy slices of
//!   the input buffer.
//! - Properties are typed per packet.
//! - Every reason code of the spec has a typed enum per packet, and one
//!   general [`ReasonCode`].

#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

mod ack;
mod alias;
mod auth;
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

pub use alias::{AliasError, TopicAliasAllocator, TopicAliasResolver};
pub use auth::Auth;
pub use connack::ConnAck;
pub use connect::{Connect, Will};
pub use disconnect::Disconnect;
pub use error::{DecodeError, EncodeError, InvalidValue, StringError};
pub use packet::{Packet, decode};
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
