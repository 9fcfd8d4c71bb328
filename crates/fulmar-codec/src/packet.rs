//! The [`Packet`] enum of the 15 MQTT control packets.

use crate::auth::Auth;
use crate::connack::ConnAck;
use crate::connect::Connect;
use crate::disconnect::Disconnect;
use crate::puback::PubAck;
use crate::pubcomp::PubComp;
use crate::publish::Publish;
use crate::pubrec::PubRec;
use crate::pubrel::PubRel;
use crate::suback::SubAck;
use crate::subscribe::Subscribe;
use crate::types::PacketType;
use crate::unsuback::UnsubAck;
use crate::unsubscribe::Unsubscribe;

/// One MQTT control packet, for either protocol version.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Packet {
    /// CONNECT (boxed: it is the largest and the rarest).
    Connect(Box<Connect>),
    /// CONNACK.
    ConnAck(ConnAck),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK.
    PubAck(PubAck),
    /// PUBREC.
    PubRec(PubRec),
    /// PUBREL.
    PubRel(PubRel),
    /// PUBCOMP.
    PubComp(PubComp),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK.
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK.
    UnsubAck(UnsubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(Disconnect),
    /// AUTH (5.0 only).
    Auth(Auth),
}

impl Packet {
    /// The control packet type.
    #[must_use]
    pub const fn packet_type(&self) -> PacketType {
        match self {
            Self::Connect(_) => PacketType::Connect,
            Self::ConnAck(_) => PacketType::ConnAck,
            Self::Publish(_) => PacketType::Publish,
            Self::PubAck(_) => PacketType::PubAck,
            Self::PubRec(_) => PacketType::PubRec,
            Self::PubRel(_) => PacketType::PubRel,
            Self::PubComp(_) => PacketType::PubComp,
            Self::Subscribe(_) => PacketType::Subscribe,
            Self::SubAck(_) => PacketType::SubAck,
            Self::Unsubscribe(_) => PacketType::Unsubscribe,
            Self::UnsubAck(_) => PacketType::UnsubAck,
            Self::PingReq => PacketType::PingReq,
            Self::PingResp => PacketType::PingResp,
            Self::Disconnect(_) => PacketType::Disconnect,
            Self::Auth(_) => PacketType::Auth,
        }
    }
}

impl From<Connect> for Packet {
    fn from(p: Connect) -> Self {
        Self::Connect(Box::new(p))
    }
}

impl From<Box<Connect>> for Packet {
    fn from(p: Box<Connect>) -> Self {
        Self::Connect(p)
    }
}

macro_rules! from_packet {
    ($($t:ident),*) => {$(
        impl From<$t> for Packet {
            fn from(p: $t) -> Self {
                Self::$t(p)
            }
        }
    )*};
}

from_packet!(
    ConnAck,
    Publish,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth
);
