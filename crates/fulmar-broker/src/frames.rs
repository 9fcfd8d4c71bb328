//! Encode once, send to many: the encoded PUBLISH header (fixed header,
//! topic, packet identifier and properties) of one routed message, shared by
//! every connection it is delivered to.
//!
//! A message fanned out to many subscribers is the same packet for most of
//! them: only the packet identifier differs, and sometimes the QoS (downgraded
//! per subscription), RETAIN (Retain As Published), the Subscription
//! Identifiers, the Message Expiry Interval (reduced by the time a message
//! waited), a Topic Alias, DUP or the protocol version. [`Frames`] keeps one
//! encoded header per distinct variant; a connection sending a copy that matches one writes those bytes
//! and its own packet identifier instead of encoding the packet again. A copy
//! that matches none is encoded and its header kept for the next connections,
//! up to [`MAX_VARIANTS`]. The payload is never part of it: it is one shared
//! [`Bytes`] already.
//!
//! Routing attaches a `Frames` only to messages with properties going to
//! several subscribers: a PUBLISH without properties encodes in fewer
//! instructions than the lookup (measured with callgrind: about 230 to
//! encode a 3.1.1 header, about 300 to find and copy a shared one), and a
//! 5.0 PUBLISH with two user properties takes about 620 to encode.

use std::sync::{Mutex, OnceLock};

use bytes::{Bytes, BytesMut};
use fulmar_codec::{EncodeError, ProtocolVersion, Publish, PublishProperties, QoS};

/// At most this many variants of one message are kept.
pub(crate) const MAX_VARIANTS: usize = 8;

/// The shared encoded headers of one routed message.
#[derive(Debug, Default)]
pub(crate) struct Frames {
    /// The first variant encoded: most copies of a message are this one,
    /// and finding it takes no lock.
    first: OnceLock<Variant>,
    /// The others.
    more: Mutex<Vec<Variant>>,
}

/// One encoding: what it was encoded from, and the bytes.
#[derive(Debug)]
struct Variant {
    version: ProtocolVersion,
    qos: QoS,
    retain: bool,
    dup: bool,
    payload_len: usize,
    topic: fulmar_codec::MqttString,
    properties: PublishProperties,
    /// Fixed header and variable header, packet identifier included.
    header: Bytes,
    /// Where the packet identifier starts in `header` (QoS 1 and 2).
    packet_id_at: usize,
}

impl Variant {
    /// Appends this header with the packet identifier of `publish`.
    fn put(&self, publish: &Publish, buf: &mut BytesMut) {
        let start = buf.len();
        buf.extend_from_slice(&self.header);
        if let Some(packet_id) = publish.packet_id {
            let at = start + self.packet_id_at;
            if let Some(slot) = buf.get_mut(at..at + 2) {
                slot.copy_from_slice(&packet_id.get().to_be_bytes());
            }
        }
    }

    /// Whether `publish` encodes to this header but for its packet identifier.
    fn fits(&self, version: ProtocolVersion, publish: &Publish) -> bool {
        self.version == version
            && self.qos == publish.qos
            && self.retain == publish.retain
            && self.dup == publish.dup
            && self.payload_len == publish.payload.len()
            && same(self.topic.as_bytes(), publish.topic.as_bytes())
            && same_properties(&self.properties, &publish.properties)
    }
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
        if let Some(variant) = self.first.get()
            && variant.fits(version, publish)
        {
            variant.put(publish, buf);
            return Ok(true);
        }
        let Ok(mut more) = self.more.lock() else {
            publish.encode_header(version, buf)?;
            return Ok(false);
        };
        if let Some(variant) = more.iter().find(|v| v.fits(version, publish)) {
            variant.put(publish, buf);
            return Ok(true);
        }
        let start = buf.len();
        publish.encode_header(version, buf)?;
        let header = buf.get(start..).unwrap_or_default();
        if more.len() + 1 < MAX_VARIANTS
            && let Some(packet_id_at) = packet_id_offset(header, publish)
        {
            let variant = Variant {
                version,
                qos: publish.qos,
                retain: publish.retain,
                dup: publish.dup,
                payload_len: publish.payload.len(),
                topic: publish.topic.clone(),
                properties: publish.properties.clone(),
                header: Bytes::copy_from_slice(header),
                packet_id_at,
            };
            if let Err(variant) = self.first.set(variant) {
                more.push(variant);
            }
        }
        Ok(false)
    }

    /// How many variants are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        usize::from(self.first.get().is_some()) + self.more.lock().map_or(0, |v| v.len())
    }
}

/// Equal bytes, without comparing them when they are the same bytes (the
/// copies of one message share their strings).
fn same(a: &[u8], b: &[u8]) -> bool {
    (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
}

fn same_option(a: Option<&[u8]>, b: Option<&[u8]>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// `a == b`, cheaper for the copies of one message.
fn same_properties(a: &PublishProperties, b: &PublishProperties) -> bool {
    let PublishProperties {
        payload_format_indicator,
        message_expiry_interval,
        topic_alias,
        response_topic,
        correlation_data,
        user_properties,
        subscription_identifiers,
        content_type,
    } = a;
    *payload_format_indicator == b.payload_format_indicator
        && *message_expiry_interval == b.message_expiry_interval
        && *topic_alias == b.topic_alias
        && *subscription_identifiers == b.subscription_identifiers
        && same_option(
            response_topic.as_deref().map(str::as_bytes),
            b.response_topic.as_deref().map(str::as_bytes),
        )
        && same_option(correlation_data.as_deref(), b.correlation_data.as_deref())
        && same_option(
            content_type.as_deref().map(str::as_bytes),
            b.content_type.as_deref().map(str::as_bytes),
        )
        && user_properties.len() == b.user_properties.len()
        && user_properties
            .iter()
            .zip(&b.user_properties)
            .all(|((k, v), (bk, bv))| {
                same(k.as_bytes(), bk.as_bytes()) && same(v.as_bytes(), bv.as_bytes())
            })
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

    /// QoS, RETAIN, DUP, a Topic Alias, Subscription Identifiers and Message
    /// Expiry make other variants; at most `MAX_VARIANTS` are kept, the rest
    /// is encoded each time.
    #[test]
    fn variants_are_kept_apart() {
        let v5 = ProtocolVersion::V5;
        let frames = Frames::default();
        let base = message(QoS::AtLeastOnce, 10);
        let mut variants = vec![base.clone()];
        let mut retained = base.clone();
        retained.retain = true;
        variants.push(retained);
        let mut dup = base.clone();
        dup.dup = true;
        variants.push(dup);
        let mut aliased = base.clone();
        aliased.properties.topic_alias = std::num::NonZeroU16::new(3);
        variants.push(aliased.clone());
        // Later copies on an aliased connection carry the alias alone.
        aliased.topic = MqttString::default();
        variants.push(aliased);
        let mut with_id = base.clone();
        with_id
            .properties
            .subscription_identifiers
            .push(NonZeroU32::new(9).unwrap());
        variants.push(with_id);
        let mut older = base.clone();
        older.properties.message_expiry_interval = Some(59);
        variants.push(older);
        let mut qos0 = base.clone();
        qos0.qos = QoS::AtMostOnce;
        qos0.packet_id = None;
        variants.push(qos0);
        let mut extra = base.clone();
        extra.properties.content_type = None;
        assert_eq!(variants.len(), MAX_VARIANTS);
        let check = |copy: &Publish, reused: bool, kept: usize| {
            let mut buf = BytesMut::new();
            assert_eq!(
                frames.put_header(v5, copy, &mut buf).unwrap(),
                reused,
                "{copy:?}"
            );
            assert_eq!(buf, encoded(copy, v5));
            assert_eq!(frames.len(), kept);
        };
        // The cheap comparison agrees with `==`, for shared and for copied strings.
        for a in &variants {
            for b in &variants {
                assert_eq!(
                    same_properties(&a.properties, &b.properties),
                    a.properties == b.properties
                );
            }
            let mut deep = a.properties.clone();
            for (k, v) in &mut deep.user_properties {
                *k = MqttString::from(k.as_str().to_owned());
                *v = MqttString::from(v.as_str().to_owned());
            }
            deep.content_type = deep
                .content_type
                .map(|c| MqttString::from(c.as_str().to_owned()));
            assert!(same_properties(&a.properties, &deep));
            deep.user_properties[0].1 = MqttString::from("w");
            assert!(!same_properties(&a.properties, &deep));
        }
        for (n, copy) in variants.iter().enumerate() {
            check(copy, false, n + 1);
        }
        // One too many: encoded every time, not kept.
        check(&extra, false, MAX_VARIANTS);
        check(&extra, false, MAX_VARIANTS);
        for copy in &variants {
            let mut copy = copy.clone();
            if copy.qos != QoS::AtMostOnce {
                copy.packet_id = PacketId::new(4242);
            }
            check(&copy, true, MAX_VARIANTS);
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
