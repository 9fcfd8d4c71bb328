//! `tokio_util::codec` adapter (feature `tokio-util`), for `Framed` users.

use std::io;

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{DecodeError, EncodeError};
use crate::packet::{Packet, decode, packet_size};
use crate::types::ProtocolVersion;

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
        }
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

impl Decoder for MqttCodec {
    type Item = Packet;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
        let packet = decode(src, self.version, self.max_packet_size)?;
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
}
