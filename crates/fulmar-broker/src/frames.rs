//! Encode once, send to many: the encoded PUBLISH header (fixed header,
//! topic, packet identifier and properties) of one routed message, shared by
//! every connection it is delivered to.
//!
//! A message fanned out to many subscribers is the same packet for most of
//! them: only the packet identifier differs, and sometimes the QoS (downgraded
//! per subscription), RETAIN (Retain As Published), the Subscription
//! Identifiers, the Message Expiry Interval (reduced by the time a message
//! waited) or a Topic Alias. [`Frames`] keeps one encoded header per distinct
//! variant; a connection sending a copy that matches one writes those bytes
//! and its own packet identifier instead of encoding the packet again. A copy
//! that matches none is encoded and its header kept for the next connections,
//! up to [`MAX_VARIANTS`]. The payload is never part of it: it is one shared
//! [`Bytes`] already.

use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use fulmar_codec::{EncodeError, ProtocolVersion, Publish, PublishProperties, QoS};

/// At most this many variants of one message are kept.
pub(crate) const MAX_VARIANTS: usize = 4;

/// The shared encoded headers of one routed message.
#[derive(Debug, Default)]
pub(crate) struct Frames {
    variants: Mutex<Vec<Variant>>,
}

/// One encoding: what it was encoded from, and the bytes.
#[derive(Debug)]
struct Variant {
    version: ProtocolVersion,
    qos: QoS,
    retain: bool,
    payload_len: usize,
    topic: fulmar_codec::MqttString,
    properties: PublishProperties,
    /// Fixed header and variable header, packet identifier included.
    header: Bytes,
    /// Where the packet identifier starts in `header` (QoS 1 and 2).
    packet_id_at: usize,
}

impl Variant {
    /// Whether `publish` encodes to this header but for its packet identifier.
    fn fits(&self, version: ProtocolVersion, publish: &Publish) -> bool {
        self.version == version
            && self.qos == publish.qos
            && self.retain == publish.retain
            && self.payload_len == publish.payload.len()
            && self.topic == publish.topic
            && self.properties == publish.properties
    }
}

/// Whether the header of `publish` can be shared at all: a re-delivery (DUP)
/// and a Topic Alias belong to one connection.
pub(crate) fn shareable(publish: &Publish) -> bool {
    !publish.dup && publish.properties.topic_alias.is_none()
}

impl Frames {
    /// Appends the encoded header of `publish` (everything but the payload)
    /// to `buf`, from a shared encoding of the same variant when there is
    /// one; returns whether one was reused. Encodes (and keeps, while fewer
    /// than [`MAX_VARIANTS`] are kept) otherwise.
    ///
    /// # Errors
    /// The packet cannot be encoded (as [`Publish::encode_header`]).
    pub(crate) fn put_header(
        &self,
        version: ProtocolVersion,
        publish: &Publish,
        buf: &mut BytesMut,
    ) -> Result<bool, EncodeError> {
        let Ok(mut variants) = self.variants.lock() else {
            publish.encode_header(version, buf)?;
            return Ok(false);
        };
        if shareable(publish)
            && let Some(variant) = variants.iter().find(|v| v.fits(version, publish))
        {
            let start = buf.len();
            buf.extend_from_slice(&variant.header);
            if let Some(packet_id) = publish.packet_id {
                let at = start + variant.packet_id_at;
                if let Some(slot) = buf.get_mut(at..at + 2) {
                    slot.copy_from_slice(&packet_id.get().to_be_bytes());
                }
            }
            return Ok(true);
        }
        let start = buf.len();
        publish.encode_header(version, buf)?;
        if shareable(publish) && variants.len() < MAX_VARIANTS {
            let header = buf.get(start..).unwrap_or_default();
            if let Some(packet_id_at) = packet_id_offset(header, publish) {
                variants.push(Variant {
                    version,
                    qos: publish.qos,
                    retain: publish.retain,
                    payload_len: publish.payload.len(),
                    topic: publish.topic.clone(),
                    properties: publish.properties.clone(),
                    header: Bytes::copy_from_slice(header),
                    packet_id_at,
                });
            }
        }
        Ok(false)
    }

    /// How many variants are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.variants.lock().map_or(0, |v| v.len())
    }
}

/// Where the packet identifier starts in an encoded PUBLISH header: after
/// the first byte, the Remaining Length (1 to 4 bytes) and the topic (two
/// length bytes and the topic). `None` if the header is shorter than that.
fn packet_id_offset(header: &[u8], publish: &Publish) -> Option<usize> {
    let length_bytes = header.iter().skip(1).take(4).position(|b| b & 0x80 == 0)? + 1;
    let at = 1 + length_bytes + 2 + publish.topic.len();
    let end = if publish.packet_id.is_some() {
        at + 2
    } else {
        at
    };
    (end <= header.len()).then_some(at)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use fulmar_codec::{MqttString, PacketId};

    use super::*;

    fn message(qos: QoS, payload: usize) -> Publish {
        let mut publish = Publish::new(
            MqttString::from("site/7/device/42/temp"),
            Bytes::from(vec![7u8; payload]),
        );
        publish.qos = qos;
        publish.packet_id = PacketId::new(if qos == QoS::AtMostOnce { 0 } else { 1 });
        publish.properties.message_expiry_interval = Some(60);
        publish.properties.content_type = Some(MqttString::from("text/plain"));
        publish
            .properties
            .user_properties
            .push(("k".into(), "v".into()));
        publish
    }

    fn encoded(publish: &Publish, version: ProtocolVersion) -> BytesMut {
        let mut buf = BytesMut::new();
        publish.encode_header(version, &mut buf).unwrap();
        buf
    }

    /// Every copy sent from a shared header is byte for byte what encoding it
    /// gives, whatever its packet identifier, and one encoding serves them
    /// all; other variants get their own.
    #[test]
    fn shared_headers_match_encoding() {
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            for payload in [0, 16, 200, 70_000, 3_000_000] {
                for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                    let frames = Frames::default();
                    let mut reused = 0;
                    for id in [1u16, 2, 300, 65535] {
                        let mut copy = message(qos, payload);
                        if version == ProtocolVersion::V311 {
                            copy.properties = PublishProperties::default();
                        }
                        if qos != QoS::AtMostOnce {
                            copy.packet_id = PacketId::new(id);
                        }
                        let mut buf = BytesMut::from(&b"xyz"[..]);
                        reused += usize::from(frames.put_header(version, &copy, &mut buf).unwrap());
                        assert_eq!(&buf[..3], b"xyz");
                        assert_eq!(
                            &buf[3..],
                            &encoded(&copy, version)[..],
                            "{version:?} {qos:?}"
                        );
                    }
                    assert_eq!(reused, 3);
                    assert_eq!(frames.len(), 1);
                }
            }
        }
    }

    /// QoS, RETAIN, Subscription Identifiers and Message Expiry make other
    /// variants; DUP and a Topic Alias are never shared; at most
    /// `MAX_VARIANTS` are kept, the rest is encoded each time.
    #[test]
    fn variants_are_kept_apart() {
        let v5 = ProtocolVersion::V5;
        let frames = Frames::default();
        let base = message(QoS::AtLeastOnce, 10);
        let mut retained = base.clone();
        retained.retain = true;
        let mut with_id = base.clone();
        with_id
            .properties
            .subscription_identifiers
            .push(NonZeroU32::new(9).unwrap());
        let mut older = base.clone();
        older.properties.message_expiry_interval = Some(59);
        let mut qos0 = base.clone();
        qos0.qos = QoS::AtMostOnce;
        qos0.packet_id = None;
        let mut dup = base.clone();
        dup.dup = true;
        let mut aliased = base.clone();
        aliased.properties.topic_alias = Some(std::num::NonZeroU16::new(3).unwrap());
        for (copy, reused, kept) in [
            (&base, false, 1),
            (&retained, false, 2),
            (&dup, false, 2),
            (&aliased, false, 2),
            (&with_id, false, 3),
            (&older, false, 4),
            (&qos0, false, 4),
            (&qos0, false, 4),
            (&base, true, 4),
            (&older, true, 4),
            (&retained, true, 4),
            (&with_id, true, 4),
        ] {
            let mut buf = BytesMut::new();
            assert_eq!(frames.put_header(v5, copy, &mut buf).unwrap(), reused);
            assert_eq!(buf, encoded(copy, v5));
            assert_eq!(frames.len(), kept);
        }
        // The same message under 3.1.1 is another encoding.
        let mut buf = BytesMut::new();
        let v3 = ProtocolVersion::V311;
        let mut plain = base.clone();
        plain.properties = PublishProperties::default();
        assert!(!frames.put_header(v3, &plain, &mut buf).unwrap());
        assert_eq!(buf, encoded(&plain, v3));
    }
}
