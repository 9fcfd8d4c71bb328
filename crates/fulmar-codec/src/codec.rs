//! `tokio_util::codec` adapter (feature `tokio-util`), for `Framed` users.

use std::io;

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{DecodeError, EncodeError};
use crate::packet::{Packet, decode, packet_size, publish_identity};
use crate::types::{PacketId, ProtocolVersion, QoS};

/// Error of [`MqttCodec`]: a decode error, an encode error or an IO error
/// from the underlying transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The peer sent a malformed packet; close the connection (see
    /// [`DecodeError::reason_code`]).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A packet could not be encoded for the peer's protocol version.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The transport failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A PUBLISH buffered whole that the decoder refuses for `error`, with
    /// its QoS and Packet Identifier, read from its headers: only from a
    /// codec with
    /// [`identify_refused_publishes`](MqttCodec::identify_refused_publishes).
    /// A receiver that drops the message can still acknowledge it. Close
    /// the connection as for [`Decode`](Self::Decode).
    #[error("{error}")]
    InvalidPublish {
        /// Why the PUBLISH was refused.
        error: DecodeError,
        /// The QoS of the message.
        qos: QoS,
        /// Its Packet Identifier (QoS 1 and 2).
        packet_id: Option<PacketId>,
    },
}

/// A `Decoder<Item = Packet>` and `Encoder<Packet>` for one connection.
///
/// Decoding a CONNECT switches the codec to the CONNECT's protocol version,
/// so a server can start with either version; [`MqttCodec::set_version`]
/// switches explicitly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MqttCodec {
    version: ProtocolVersion,
    max_packet_size: u32,
    /// See [`MqttCodec::reserve_whole_packets`].
    reserve_whole: usize,
    /// See [`MqttCodec::identify_refused_publishes`].
    identify_refused: bool,
}

impl MqttCodec {
    /// A codec for `version` that refuses inbound packets larger than
    /// `max_packet_size` bytes (fixed header included).
    #[must_use]
    pub const fn new(version: ProtocolVersion, max_packet_size: u32) -> Self {
        Self {
            version,
            max_packet_size,
            reserve_whole: 0,
            identify_refused: false,
        }
    }

    /// Reports a PUBLISH that the decoder refuses with its QoS and Packet
    /// Identifier: one over the maximum packet size as
    /// [`DecodeError::PublishTooLarge`] instead of
    /// [`DecodeError::PacketTooLarge`], and one buffered whole but invalid
    /// (a Response Topic with a wildcard, say) as
    /// [`CodecError::InvalidPublish`], which carries the error. An
    /// oversized one is reported once the topic name and Packet Identifier
    /// are buffered (at most 65 541 bytes past the fixed header, whatever
    /// the maximum), and the rest of it is never buffered. For a receiver
    /// that drops such a message but acknowledges it, so that the sender
    /// does not send it again (a client, whose server forwards what other
    /// clients publish). A PUBLISH whose headers are malformed gives the
    /// plain error.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use fulmar_codec::{CodecError, DecodeError, MqttCodec, PacketId, ProtocolVersion, QoS};
    /// use tokio_util::codec::Decoder;
    ///
    /// let mut codec = MqttCodec::new(ProtocolVersion::V311, 100).identify_refused_publishes(true);
    /// // A QoS 1 PUBLISH of 1 000 bytes to "t", Packet Identifier 7: first
    /// // its fixed header alone, then its variable header.
    /// let mut buf = BytesMut::from(&[0x32, 0xE5, 0x07][..]);
    /// assert!(codec.decode(&mut buf).unwrap().is_none());
    /// buf.extend_from_slice(&[0x00, 0x01, b't', 0x00, 0x07]);
    /// assert!(matches!(
    ///     codec.decode(&mut buf),
    ///     Err(CodecError::Decode(DecodeError::PublishTooLarge {
    ///         size: 1_000,
    ///         max: 100,
    ///         qos: QoS::AtLeastOnce,
    ///         packet_id: Some(id),
    ///     })) if id == PacketId::new(7).unwrap()
    /// ));
    /// ```
    #[must_use]
    pub const fn identify_refused_publishes(mut self, on: bool) -> Self {
        self.identify_refused = on;
        self
    }

    /// Reserves room for a whole packet of at most `max_bytes` bytes as
    /// soon as its fixed header is read, so that its bytes are read into
    /// place. By default (0) the buffer grows as the bytes arrive, at most
    /// doubling ([`decode`]): a large packet is then copied about once more,
    /// but a peer that announces a large packet and sends nothing makes the
    /// reader reserve no more than it sent. A client, whose one peer is the
    /// server it chose, can afford the reservation; a server with many
    /// untrusted peers should bound it across connections instead.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use fulmar_codec::{MqttCodec, ProtocolVersion};
    /// use tokio_util::codec::Decoder;
    ///
    /// let mut codec = MqttCodec::new(ProtocolVersion::V5, 1 << 20).reserve_whole_packets(1 << 20);
    /// // The fixed header of a 500 000-byte PUBLISH, and its first bytes.
    /// let mut buf = BytesMut::from(&[0x30, 0x9C, 0xC2, 0x1E, 0x00, 0x01][..]);
    /// assert!(codec.decode(&mut buf).unwrap().is_none());
    /// assert!(buf.capacity() >= 500_000);
    /// ```
    #[must_use]
    pub const fn reserve_whole_packets(mut self, max_bytes: usize) -> Self {
        self.reserve_whole = max_bytes;
        self
    }

    /// The protocol version in use.
    #[must_use]
    pub const fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Switches the protocol version (e.g. a server after CONNECT).
    pub fn set_version(&mut self, version: ProtocolVersion) {
        self.version = version;
    }

    /// The inbound size limit.
    #[must_use]
    pub const fn max_packet_size(&self) -> u32 {
        self.max_packet_size
    }

    /// Changes the inbound size limit.
    pub fn set_max_packet_size(&mut self, max_packet_size: u32) {
        self.max_packet_size = max_packet_size;
    }
}

/// Whether `buf` starts with a whole PUBLISH.
fn whole_publish(buf: &[u8]) -> bool {
    buf.first().is_some_and(|first| first >> 4 == 3)
        && packet_size(buf).is_some_and(|size| size <= buf.len())
}

impl Decoder for MqttCodec {
    type Item = Packet;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
        // The QoS and Packet Identifier of a whole PUBLISH, read before
        // `decode` takes its bytes off the buffer: for the error if it is
        // refused.
        let identity = if self.identify_refused && whole_publish(src) {
            publish_identity(src).ok().flatten()
        } else {
            None
        };
        let packet = match decode(src, self.version, self.max_packet_size) {
            Err(DecodeError::PacketTooLarge { size, max }) if self.identify_refused => {
                return match publish_identity(src) {
                    Ok(None) => Ok(None),
                    Ok(Some((qos, packet_id))) => Err(DecodeError::PublishTooLarge {
                        size,
                        max,
                        qos,
                        packet_id,
                    }
                    .into()),
                    Err(()) => Err(DecodeError::PacketTooLarge { size, max }.into()),
                };
            }
            Err(error) => {
                return Err(match identity {
                    Some((qos, packet_id)) => CodecError::InvalidPublish {
                        error,
                        qos,
                        packet_id,
                    },
                    None => error.into(),
                });
            }
            Ok(packet) => packet,
        };
        // After `decode`, which has checked the fixed header (a packet over
        // the maximum size is an error by now).
        if packet.is_none()
            && self.reserve_whole > 0
            && let Some(total) = packet_size(src)
            && total > src.capacity()
            && total <= self.reserve_whole
        {
            src.reserve(total - src.len());
        }
        if let Some(Packet::Connect(connect)) = &packet {
            self.version = connect.protocol_version;
        }
        Ok(packet)
    }
}

impl Encoder<&Packet> for MqttCodec {
    type Error = CodecError;

    fn encode(&mut self, item: &Packet, dst: &mut BytesMut) -> Result<(), CodecError> {
        Ok(item.encode(self.version, dst)?)
    }
}

impl Encoder<Packet> for MqttCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Packet, dst: &mut BytesMut) -> Result<(), CodecError> {
        Ok(item.encode(self.version, dst)?)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::{Connect, PacketId, Publish, QoS};

    #[test]
    fn decodes_chunked_input_including_empty_reads() {
        let mut codec = MqttCodec::new(ProtocolVersion::V5, 1024);
        let mut wire = BytesMut::new();
        let mut p = Publish::new("a/b".into(), Bytes::from_static(b"hello"));
        p.qos = QoS::AtLeastOnce;
        p.packet_id = PacketId::new(3);
        codec.encode(Packet::from(p.clone()), &mut wire).unwrap();
        codec.encode(&Packet::PingReq, &mut wire).unwrap();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in wire.chunks(3) {
            assert!(codec.decode(&mut buf).unwrap().is_none() || !out.is_empty());
            buf.extend_from_slice(chunk);
            while let Some(packet) = codec.decode(&mut buf).unwrap() {
                out.push(packet);
            }
        }
        assert_eq!(out, vec![Packet::from(p), Packet::PingReq]);
        assert!(codec.decode_eof(&mut buf).unwrap().is_none());
    }

    #[test]
    fn switches_version_on_connect() {
        let mut codec = MqttCodec::new(ProtocolVersion::V5, 1024);
        let mut buf = BytesMut::new();
        Packet::from(Connect::new(ProtocolVersion::V311, "c".into()))
            .encode(ProtocolVersion::V311, &mut buf)
            .unwrap();
        assert!(matches!(
            codec.decode(&mut buf).unwrap(),
            Some(Packet::Connect(_))
        ));
        assert_eq!(codec.version(), ProtocolVersion::V311);
        codec.set_version(ProtocolVersion::V5);
        assert_eq!(codec.version(), ProtocolVersion::V5);
    }

    #[test]
    fn errors_are_typed() {
        let mut codec = MqttCodec::new(ProtocolVersion::V311, 4);
        let mut buf = BytesMut::from(&[0x30u8, 0x10][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::Decode(DecodeError::PacketTooLarge {
                size: 18,
                max: 4
            }))
        ));
        let auth = Packet::Auth(crate::Auth::default());
        assert!(matches!(
            codec.encode(&auth, &mut BytesMut::new()),
            Err(CodecError::Encode(_))
        ));
        codec.set_max_packet_size(100);
        assert_eq!(codec.max_packet_size(), 100);
    }

    /// An oversized PUBLISH, encoded whole, for `identify_refused_publishes`.
    fn oversized(qos: QoS, topic: &'static str, id: Option<u16>) -> BytesMut {
        let mut publish = Publish::new(topic.into(), Bytes::from(vec![b'x'; 300]));
        publish.qos = qos;
        publish.packet_id = id.and_then(PacketId::new);
        let mut buf = BytesMut::new();
        Packet::Publish(publish)
            .encode(ProtocolVersion::V311, &mut buf)
            .unwrap();
        buf
    }

    // v3:MQTT-4.3.2-2 v3:MQTT-4.3.3-2: a receiver that discards a PUBLISH over
    // its maximum packet size can still acknowledge it with its Packet
    // Identifier, read from the headers alone, byte by byte.
    #[test]
    fn oversized_publishes_are_identified_from_their_headers() {
        for (qos, id) in [
            (QoS::AtMostOnce, None),
            (QoS::AtLeastOnce, Some(7)),
            (QoS::ExactlyOnce, Some(65_535)),
        ] {
            let whole = oversized(qos, "a/b", id);
            // The fixed header (3 bytes) and the topic name's length; the
            // topic name and Packet Identifier (QoS 1 and 2).
            let headers = 3 + 2 + if id.is_some() { 3 + 2 } else { 0 };
            let mut codec =
                MqttCodec::new(ProtocolVersion::V311, 100).identify_refused_publishes(true);
            let mut buf = BytesMut::new();
            for byte in whole.iter().take(headers) {
                let r = codec.decode(&mut buf);
                assert!(matches!(r, Ok(None)), "{qos:?} {} {r:?}", buf.len());
                buf.extend_from_slice(&[*byte]);
            }
            match codec.decode(&mut buf) {
                Err(CodecError::Decode(DecodeError::PublishTooLarge {
                    size,
                    max: 100,
                    qos: got,
                    packet_id,
                })) => {
                    assert_eq!(size, whole.len());
                    assert_eq!(got, qos);
                    assert_eq!(packet_id, id.and_then(PacketId::new));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn oversized_packets_without_identity_stay_packet_too_large() {
        // Off by default.
        let mut codec = MqttCodec::new(ProtocolVersion::V311, 100);
        let mut buf = oversized(QoS::AtLeastOnce, "a/b", Some(7));
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::Decode(DecodeError::PacketTooLarge { .. }))
        ));
        let mut codec = MqttCodec::new(ProtocolVersion::V311, 100).identify_refused_publishes(true);
        // Not a PUBLISH (a SUBSCRIBE of 300 bytes).
        let mut buf = BytesMut::from(&[0x82u8, 0xAC, 0x02, 0x00, 0x01][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::Decode(DecodeError::PacketTooLarge { .. }))
        ));
        // A topic name longer than the packet, a Packet Identifier of 0, QoS 3.
        for bytes in [
            &[0x32u8, 0xAC, 0x02, 0xFF, 0xFF][..],
            &[0x32, 0xAC, 0x02, 0x00, 0x01, b't', 0x00, 0x00],
            &[0x36, 0xAC, 0x02, 0x00, 0x01, b't', 0x00, 0x01],
        ] {
            let mut buf = BytesMut::from(bytes);
            assert!(matches!(
                codec.decode(&mut buf),
                Err(CodecError::Decode(DecodeError::PacketTooLarge { .. }))
            ));
        }
    }

    // A whole PUBLISH the decoder refuses (here a Response Topic with a
    // wildcard, v5:MQTT-3.3.2-14) is reported with its QoS and Packet
    // Identifier, so that a client can acknowledge what it drops.
    #[test]
    fn invalid_publishes_are_identified() {
        // QoS 1 to "t", id 9, Response Topic "a/#", payload "p".
        let bytes = [
            0x32, 0x0E, 0x00, 0x01, b't', 0x00, 0x09, 0x06, 0x08, 0x00, 0x03, b'a', b'/', b'#',
            b'p', b'q',
        ];
        let mut plain = MqttCodec::new(ProtocolVersion::V5, 1000);
        assert!(matches!(
            plain.decode(&mut BytesMut::from(&bytes[..])),
            Err(CodecError::Decode(DecodeError::ResponseTopicWildcard))
        ));
        let mut codec = MqttCodec::new(ProtocolVersion::V5, 1000).identify_refused_publishes(true);
        // Another PUBLISH (id 10) right behind it: the identity is the
        // refused one's, read before its bytes left the buffer.
        let mut buf = BytesMut::from(&bytes[..]);
        buf.extend_from_slice(&[0x32, 0x06, 0x00, 0x01, b't', 0x00, 0x0A, 0x00]);
        match codec.decode(&mut buf) {
            Err(CodecError::InvalidPublish {
                error,
                qos: QoS::AtLeastOnce,
                packet_id,
            }) => {
                assert_eq!(error, DecodeError::ResponseTopicWildcard);
                assert_eq!(packet_id, PacketId::new(9));
            }
            other => panic!("{other:?}"),
        }
        // Not whole yet: waits for the rest.
        assert!(matches!(
            codec.decode(&mut BytesMut::from(&bytes[..10])),
            Ok(None)
        ));
    }
}
