//! The [`Packet`] enum of the 15 MQTT control packets.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::auth::Auth;
use crate::connack::ConnAck;
use crate::connect::Connect;
use crate::disconnect::Disconnect;
use crate::encode;
use crate::error::{DecodeError, EncodeError};
use crate::properties::UserProperties;
use crate::puback::PubAck;
use crate::pubcomp::PubComp;
use crate::publish::Publish;
use crate::pubrec::PubRec;
use crate::pubrel::PubRel;
use crate::string::MqttString;
use crate::suback::SubAck;
use crate::subscribe::Subscribe;
use crate::types::{PacketType, ProtocolVersion};
use crate::unsuback::UnsubAck;
use crate::unsubscribe::Unsubscribe;
use crate::wire::{Reader, parse_var_int};

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

impl Packet {
    /// Appends the encoded packet to `buf`, reserving its exact size once.
    /// A CONNECT is encoded in its own `protocol_version`. On error nothing
    /// is appended.
    ///
    /// # Errors
    /// [`EncodeError`] when the packet cannot be expressed in `version`
    /// (e.g. properties for a 3.1.1 peer) or breaks the packet format.
    pub fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Self::Connect(p) => encode::encode(p.as_ref(), version, buf),
            Self::ConnAck(p) => encode::encode(p, version, buf),
            Self::Publish(p) => encode::encode(p, version, buf),
            Self::PubAck(p) => encode::encode(p, version, buf),
            Self::PubRec(p) => encode::encode(p, version, buf),
            Self::PubRel(p) => encode::encode(p, version, buf),
            Self::PubComp(p) => encode::encode(p, version, buf),
            Self::Subscribe(p) => encode::encode(p, version, buf),
            Self::SubAck(p) => encode::encode(p, version, buf),
            Self::Unsubscribe(p) => encode::encode(p, version, buf),
            Self::UnsubAck(p) => encode::encode(p, version, buf),
            Self::PingReq | Self::PingResp => {
                buf.reserve(2);
                buf.put_u8(self.packet_type().as_u8() << 4);
                buf.put_u8(0);
                Ok(())
            }
            Self::Disconnect(p) => encode::encode(p, version, buf),
            Self::Auth(p) => encode::encode(p, version, buf),
        }
    }

    /// Makes the packet fit the receiver's Maximum Packet Size by dropping
    /// the properties the spec says must not be sent when they would exceed
    /// it: first the Reason String, then the User Properties (CONNACK,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, DISCONNECT, AUTH;
    /// MQTT 5.0 sections 3.2.2.3.9 to 3.15.2.2.5). Other packets are left
    /// unchanged.
    ///
    /// Returns whether the packet now fits in `maximum_packet_size` bytes;
    /// a PUBLISH that does not fit must be discarded by the sender
    /// [MQTT-3.1.2-25].
    ///
    /// # Errors
    /// As [`Packet::encode`].
    pub fn trim_to_fit(
        &mut self,
        version: ProtocolVersion,
        maximum_packet_size: u32,
    ) -> Result<bool, EncodeError> {
        let max = usize::try_from(maximum_packet_size).unwrap_or(usize::MAX);
        if self.encoded_len(version)? <= max {
            return Ok(true);
        }
        let Some((reason_string, _)) = self.droppable_properties() else {
            return Ok(false);
        };
        if reason_string.take().is_some() && self.encoded_len(version)? <= max {
            return Ok(true);
        }
        if let Some((_, user_properties)) = self.droppable_properties() {
            user_properties.clear();
        }
        Ok(self.encoded_len(version)? <= max)
    }

    /// The Reason String and User Properties of the packets that have them.
    fn droppable_properties(&mut self) -> Option<(&mut Option<MqttString>, &mut UserProperties)> {
        Some(match self {
            Self::ConnAck(p) => (
                &mut p.properties.reason_string,
                &mut p.properties.user_properties,
            ),
            Self::PubAck(p) => (
                &mut p.properties.reason_string,
                &mut p.properties.user_properties,
            ),
            Self::PubRec(p) => (
                &mut p.properties.reason_string,
                &mut p.properties.user_properties,
            ),
            Self::PubRel(p) => (
                &mut p.properties.reason_string,
                &mut p.properties.user_properties,
            ),
            Self::PubComp(p) => (
                &mut p.properties.reason_string,
                &mut p.properties.user_properties,
            ),
            Self::SubAck(p) => (
                &mut p.properties.reason_string,
                &mut p.properties.user_properties,
            ),
            Self::UnsubAck(p) => (
                &mut p.properties.reason_string,
                &mut p.properties.user_properties,
            ),
            Self::Disconnect(p) => (
                &mut p.properties.reason_string,
                &mut p.properties.user_properties,
            ),
            Self::Auth(p) => (
                &mut p.properties.reason_string,
                &mut p.properties.user_properties,
            ),
            _ => return None,
        })
    }

    /// The size of the encoded packet (fixed header included), computed
    /// without encoding it.
    ///
    /// # Errors
    /// As [`Packet::encode`].
    pub fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        match self {
            Self::Connect(p) => encode::encoded_len(p.as_ref(), version),
            Self::ConnAck(p) => encode::encoded_len(p, version),
            Self::Publish(p) => encode::encoded_len(p, version),
            Self::PubAck(p) => encode::encoded_len(p, version),
            Self::PubRec(p) => encode::encoded_len(p, version),
            Self::PubRel(p) => encode::encoded_len(p, version),
            Self::PubComp(p) => encode::encoded_len(p, version),
            Self::Subscribe(p) => encode::encoded_len(p, version),
            Self::SubAck(p) => encode::encoded_len(p, version),
            Self::Unsubscribe(p) => encode::encoded_len(p, version),
            Self::UnsubAck(p) => encode::encoded_len(p, version),
            Self::PingReq | Self::PingResp => Ok(2),
            Self::Disconnect(p) => encode::encoded_len(p, version),
            Self::Auth(p) => encode::encoded_len(p, version),
        }
    }
}

/// The most [`decode`] reserves ahead of bytes that have not arrived yet,
/// beyond the bytes already buffered: a large packet's buffer grows as its
/// bytes arrive (at most doubling), not on the word of its fixed header.
pub const MAX_RESERVE_AHEAD: usize = 64 * 1024;

/// The size in bytes of the packet at the front of `buf`, fixed header
/// included, as soon as its fixed header is complete: `None` before that, or
/// when the Remaining Length is malformed (which [`decode`] reports).
///
/// Nothing else is checked: a caller that knows it will take the whole
/// packet (it is within the maximum packet size, and the caller accepts
/// the memory) can reserve room for it at once rather than let [`decode`]
/// grow the buffer as the bytes arrive.
///
/// ```
/// use fulmar_codec::packet_size;
///
/// // A PUBLISH with a Remaining Length of 200 (two bytes: 0xC8 0x01).
/// assert_eq!(packet_size(&[0x30, 0xC8, 0x01, b'x']), Some(203));
/// assert_eq!(packet_size(&[0x30, 0xC8]), None); // the length is not complete
/// assert_eq!(packet_size(&[]), None);
/// ```
#[must_use]
pub fn packet_size(buf: &[u8]) -> Option<usize> {
    let remaining = parse_var_int(buf.get(1..)?).ok()??;
    let body = usize::try_from(remaining.value).ok()?;
    Some(1 + remaining.len + body)
}

/// The QoS and Packet Identifier of the PUBLISH at the front of `buf`,
/// read from its fixed and variable headers alone: `Ok(None)` while they
/// are not all buffered, `Err(())` if `buf` does not start with a PUBLISH
/// or its headers are malformed (a QoS of 3, a topic name longer than the
/// packet, a Packet Identifier of 0).
#[cfg(feature = "tokio-util")]
pub(crate) fn publish_identity(
    buf: &[u8],
) -> Result<Option<(crate::QoS, Option<crate::PacketId>)>, ()> {
    use crate::types::{PacketId, QoS};
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first >> 4 != 3 {
        return Err(());
    }
    let qos = QoS::try_from((first >> 1) & 0x03).map_err(|_| ())?;
    let Some(remaining) = parse_var_int(buf.get(1..).unwrap_or_default()).map_err(|_| ())? else {
        return Ok(None);
    };
    let body_start = 1 + remaining.len;
    let body = usize::try_from(remaining.value).map_err(|_| ())?;
    let u16_at = |at: usize| {
        buf.get(at..at + 2)
            .and_then(|bytes| <[u8; 2]>::try_from(bytes).ok())
            .map(u16::from_be_bytes)
    };
    let Some(topic_len) = u16_at(body_start) else {
        return Ok(None);
    };
    let topic_len = usize::from(topic_len);
    let id_at = 2 + topic_len;
    let header = if qos == QoS::AtMostOnce {
        id_at
    } else {
        id_at + 2
    };
    if header > body {
        return Err(());
    }
    if qos == QoS::AtMostOnce {
        return Ok(Some((qos, None)));
    }
    let Some(id) = u16_at(body_start + id_at) else {
        return Ok(None);
    };
    let id = PacketId::new(id).ok_or(())?;
    Ok(Some((qos, Some(id))))
}

/// Decodes one packet from the front of `buf`.
///
/// - `Ok(None)`: `buf` does not hold a whole packet yet; it is left untouched
///   (capacity for the rest of the packet may be reserved: at most
///   [`MAX_RESERVE_AHEAD`] bytes, or as many as are buffered already).
/// - `Ok(Some(packet))`: exactly the packet's bytes were consumed; strings and
///   payloads in `packet` are zero-copy slices of them.
/// - `Err(e)`: the input is malformed and never will parse; close the
///   connection, after sending [`DecodeError::reason_code`] under MQTT 5.0.
///
/// The fixed header and remaining length are checked first: a packet whose
/// total size exceeds `max_packet_size` is refused with
/// [`DecodeError::PacketTooLarge`] before its body is buffered. A PUBLISH
/// or CONNECT whose User Properties would take more than `max_packet_size`
/// bytes in memory, and more than [`MIN_USER_PROPERTY_BYTES`]
/// ([`Publish::USER_PROPERTY_SLOT`] each, its will's too), is refused with
/// [`DecodeError::TooManyUserProperties`] (also 0x95 Packet too large):
/// 200 000 empty ones fit in 1 MB on the wire and took 13 MB.
///
/// A CONNECT is self-describing: its protocol name and level decide its
/// version, and `version` is ignored for it.
///
/// # Errors
/// Every [`DecodeError`] variant.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let nibble = first >> 4;
    let flags = first & 0x0F;
    let packet_type =
        PacketType::from_nibble(nibble).ok_or(DecodeError::ReservedPacketType(nibble))?;
    if packet_type == PacketType::Auth && version.is_v3() {
        return Err(DecodeError::ReservedPacketType(nibble));
    }
    // MQTT 3.1 describes the flags of the other packets as unused (a client
    // may set DUP on a resent SUBSCRIBE, for one) without making them an error.
    // A CONNECT says its own version: its flags are looked at with its name.
    let flags_reserved = packet_type.fixed_flags().is_some_and(|expected| {
        flags != expected && (version != ProtocolVersion::V31 || packet_type == PacketType::Connect)
    });
    if flags_reserved && packet_type != PacketType::Connect {
        return Err(DecodeError::ReservedFlags { packet_type, flags });
    }
    let Some(remaining) = parse_var_int(buf.get(1..).unwrap_or_default())? else {
        return Ok(None);
    };
    let header_len = 1 + remaining.len;
    let total = header_len.saturating_add(usize::try_from(remaining.value).unwrap_or(usize::MAX));
    if total > usize::try_from(max_packet_size).unwrap_or(usize::MAX) {
        return Err(DecodeError::PacketTooLarge {
            size: total,
            max: max_packet_size,
        });
    }
    if flags_reserved
        && !may_be_v31_connect(
            buf.get(header_len..total.min(buf.len())),
            buf.len() >= total,
        )
    {
        return Err(DecodeError::ReservedFlags { packet_type, flags });
    }
    if !remaining.minimal && version == ProtocolVersion::V5 && packet_type != PacketType::Connect {
        return Err(DecodeError::NonMinimalVarInt);
    }
    if buf.len() < total {
        // Reserve for the rest of the packet, but never more than
        // `MAX_RESERVE_AHEAD` (or what arrived already, so that a large packet
        // is copied O(1) times as its buffer doubles) on the word of a header
        // alone: a peer that sends five bytes must not make us allocate up to
        // the packet size limit.
        buf.reserve((total - buf.len()).min(MAX_RESERVE_AHEAD.max(buf.len())));
        return Ok(None);
    }
    // An acknowledgement without properties (nearly all of them) is read in
    // place: no frame is split off the buffer, nothing is reference counted.
    if remaining.value == 2 || (remaining.value == 3 && version == ProtocolVersion::V5) {
        let body = buf.get(header_len..total).unwrap_or_default();
        let short = match packet_type {
            PacketType::PubAck => Some(PubAck::decode_short(body, version).map(Packet::PubAck)),
            PacketType::PubRec => Some(PubRec::decode_short(body, version).map(Packet::PubRec)),
            PacketType::PubRel => Some(PubRel::decode_short(body, version).map(Packet::PubRel)),
            PacketType::PubComp => Some(PubComp::decode_short(body, version).map(Packet::PubComp)),
            _ => None,
        };
        if let Some(result) = short {
            // Consumed either way, as a split frame would be.
            buf.advance(total);
            return result.map(Some);
        }
    }
    let frame = buf.split_to(total).freeze();
    let mut r = Reader::new(&frame, header_len);
    // Each arm checks for trailing bytes before it builds the `Packet`, so
    // that the packet is built in the return slot instead of being moved there.
    macro_rules! body {
        ($variant:ident, $decoded:expr) => {{
            let p = $decoded;
            end_of_packet(&r, packet_type)?;
            Ok(Some(Packet::$variant(p)))
        }};
    }
    match packet_type {
        PacketType::Publish => {
            // The payload is the rest of the frame: no trailing bytes to check.
            if version == ProtocolVersion::V5 && frame.len() > USER_PROPERTIES_CHECKED_FROM {
                return decode_large_publish(frame, header_len, flags, max_packet_size);
            }
            Publish::decode(frame, header_len, flags, version).map(|p| Some(Packet::Publish(p)))
        }
        PacketType::PubAck => body!(PubAck, PubAck::decode(&mut r, version)?),
        PacketType::PubRec => body!(PubRec, PubRec::decode(&mut r, version)?),
        PacketType::PubRel => body!(PubRel, PubRel::decode(&mut r, version)?),
        PacketType::PubComp => body!(PubComp, PubComp::decode(&mut r, version)?),
        PacketType::Connect => {
            let c = Connect::decode(&mut r, remaining.minimal)?;
            let will = c
                .will
                .as_ref()
                .map_or(0, |w| w.properties.user_properties.len());
            user_properties_fit(
                c.properties.user_properties.len().saturating_add(will),
                max_packet_size,
            )?;
            body!(Connect, c)
        }
        PacketType::ConnAck => body!(ConnAck, ConnAck::decode(&mut r, version)?),
        PacketType::Subscribe => body!(Subscribe, Subscribe::decode(&mut r, version)?),
        PacketType::SubAck => body!(SubAck, SubAck::decode(&mut r, version)?),
        PacketType::Unsubscribe => body!(Unsubscribe, Unsubscribe::decode(&mut r, version)?),
        PacketType::UnsubAck => body!(UnsubAck, UnsubAck::decode(&mut r, version)?),
        PacketType::PingReq => {
            end_of_packet(&r, packet_type)?;
            Ok(Some(Packet::PingReq))
        }
        PacketType::PingResp => {
            end_of_packet(&r, packet_type)?;
            Ok(Some(Packet::PingResp))
        }
        PacketType::Disconnect => body!(Disconnect, Disconnect::decode(&mut r, version)?),
        PacketType::Auth => body!(Auth, Auth::decode(&mut r)?),
    }
}

/// Whether `body`, the start of a CONNECT's variable header (all of it that
/// has arrived; `complete` if that is the whole packet), is or may still
/// become the protocol name `MQIsdp` of MQTT 3.1,
/// which leaves CONNECT's fixed-header flags unused (mosquitto accepts a first
/// byte of 0x11 there). 3.1.1 and 5.0 reserve them [MQTT-2.1.3-1].
fn may_be_v31_connect(body: Option<&[u8]>, complete: bool) -> bool {
    const NAME: &[u8] = b"\x00\x06MQIsdp";
    body.is_some_and(|body| {
        let n = body.len().min(NAME.len());
        body.get(..n) == NAME.get(..n) && (n == NAME.len() || !complete)
    })
}

/// The memory the User Properties of one packet may always take, whatever
/// the maximum packet size: 16 384 of them. Only a peer that accepts packets
/// over 1 MiB is held to its maximum instead; below 82 KB on the wire (5
/// bytes the least user property) a packet is never refused for them.
pub const MIN_USER_PROPERTY_BYTES: usize = 1 << 20;

/// [`DecodeError::TooManyUserProperties`] unless `count` user properties
/// take at most `max_packet_size` bytes in memory (or
/// [`MIN_USER_PROPERTY_BYTES`]). For the packets whose contents a receiver
/// keeps (PUBLISH, CONNECT and its will): the others are dropped once handled.
#[inline]
fn user_properties_fit(count: usize, max_packet_size: u32) -> Result<(), DecodeError> {
    let max = usize::try_from(max_packet_size)
        .unwrap_or(usize::MAX)
        .max(MIN_USER_PROPERTY_BYTES);
    if count.saturating_mul(Publish::USER_PROPERTY_SLOT) > max {
        return Err(DecodeError::TooManyUserProperties {
            count,
            max: max_packet_size,
        });
    }
    Ok(())
}

/// The size of a PUBLISH from which its User Properties may be too many
/// for [`user_properties_fit`] (5 bytes the least user property): smaller
/// ones are not checked.
const USER_PROPERTIES_CHECKED_FROM: usize =
    MIN_USER_PROPERTY_BYTES / Publish::USER_PROPERTY_SLOT * 5;

/// An MQTT 5.0 PUBLISH larger than [`USER_PROPERTIES_CHECKED_FROM`]: decoded
/// and its User Properties checked, out of the path of the others.
#[cold]
#[inline(never)]
fn decode_large_publish(
    frame: Bytes,
    header_len: usize,
    flags: u8,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let p = Publish::decode(frame, header_len, flags, ProtocolVersion::V5)?;
    user_properties_fit(p.properties.user_properties.len(), max_packet_size)?;
    Ok(Some(Packet::Publish(p)))
}

/// [`DecodeError::TrailingBytes`] unless `r` has read the whole packet.
#[inline]
fn end_of_packet(r: &Reader<'_>, packet_type: PacketType) -> Result<(), DecodeError> {
    if r.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::TrailingBytes {
            packet_type,
            count: r.remaining(),
        })
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
