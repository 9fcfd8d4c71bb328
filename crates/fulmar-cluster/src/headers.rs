//! The MQTT metadata of a message in NATS headers.
//!
//! The payload of a NATS message is the MQTT payload as is; the topic is the
//! subject (see [`subject`](crate::subject)); everything else is in headers:
//!
//! | header                  | value                                               |
//! |-------------------------|-----------------------------------------------------|
//! | `Fulmar-Origin`         | node id of the publishing node (escaped)            |
//! | `Fulmar-Instance`       | 16 hex digits, random per [`Cluster`] (a restart is another instance) |
//! | `Fulmar-Seq`            | decimal sequence number per instance                |
//! | `Mqtt-Qos`              | `0`, `1` or `2`                                     |
//! | `Mqtt-Retain`           | `1` when RETAIN is set (absent otherwise)           |
//! | `Mqtt-Payload-Format`   | `0` or `1`                                          |
//! | `Mqtt-Message-Expiry`   | seconds                                             |
//! | `Mqtt-Content-Type`     | escaped UTF-8                                       |
//! | `Mqtt-Response-Topic`   | escaped UTF-8                                       |
//! | `Mqtt-Correlation-Data` | escaped bytes                                       |
//! | `Mqtt-User-Property`    | `key=value`, both escaped; repeated, in order       |
//! | `Fulmar-Shared-Delivered` | the queue group of a shared subscription the publishing node delivered the message to itself (NATS was away); repeated |
//! | `Fulmar-Restored`       | `1` on a retained message a node wrote back into a retained stream made again (NATS lost it): for the nodes that start later only |
//!
//! Escaped values keep printable ASCII except `%` and `=`, and write every
//! other byte as `%XY`, so a value never holds a line break or leading or
//! trailing space. The packet identifier, DUP, topic alias and subscription
//! identifiers are per connection and not carried.
//!
//! [`Cluster`]: crate::Cluster

use async_nats::HeaderMap;
use async_nats::header::HeaderName;
use bytes::Bytes;
use fulmar_codec::{MqttString, PayloadFormat, Publish, QoS};
use fulmar_topic::TopicName;

/// `Fulmar-Shared-Delivered`: a shared group that already got the
/// message; its queue subscriptions drop it.
pub const SHARED_DELIVERED: HeaderName = HeaderName::from_static("Fulmar-Shared-Delivered");
/// `Fulmar-Restored`: a retained message written back into the retained
/// stream after NATS lost it; the nodes running then hold it already.
pub const RESTORED: HeaderName = HeaderName::from_static("Fulmar-Restored");
/// `Fulmar-Origin`.
pub const ORIGIN: HeaderName = HeaderName::from_static("Fulmar-Origin");
/// `Fulmar-Instance`.
pub const INSTANCE: HeaderName = HeaderName::from_static("Fulmar-Instance");
/// `Fulmar-Seq`.
pub const SEQ: HeaderName = HeaderName::from_static("Fulmar-Seq");
/// `Mqtt-Qos`.
pub const QOS: HeaderName = HeaderName::from_static("Mqtt-Qos");
/// `Mqtt-Retain`.
pub const RETAIN: HeaderName = HeaderName::from_static("Mqtt-Retain");
/// `Mqtt-Payload-Format`.
pub const PAYLOAD_FORMAT: HeaderName = HeaderName::from_static("Mqtt-Payload-Format");
/// `Mqtt-Message-Expiry`.
pub const MESSAGE_EXPIRY: HeaderName = HeaderName::from_static("Mqtt-Message-Expiry");
/// `Mqtt-Content-Type`.
pub const CONTENT_TYPE: HeaderName = HeaderName::from_static("Mqtt-Content-Type");
/// `Mqtt-Response-Topic`.
pub const RESPONSE_TOPIC: HeaderName = HeaderName::from_static("Mqtt-Response-Topic");
/// `Mqtt-Correlation-Data`.
pub const CORRELATION_DATA: HeaderName = HeaderName::from_static("Mqtt-Correlation-Data");
/// `Mqtt-User-Property`.
pub const USER_PROPERTY: HeaderName = HeaderName::from_static("Mqtt-User-Property");

/// Where a message comes from: the node, its instance (one run of a
/// [`Cluster`](crate::Cluster)) and the message's number within it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The node id from [`ClusterConfig::node_id`](crate::ClusterConfig::node_id).
    pub node: String,
    /// Random per run, so that a restarted node is another instance.
    pub instance: u64,
    /// Counts the messages of this instance from 0.
    pub seq: u64,
}

/// Why the headers of a NATS message do not describe an MQTT message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The message has no headers at all.
    #[error("no headers")]
    Missing,
    /// A header this format requires is absent.
    #[error("header {0} missing")]
    MissingHeader(&'static str),
    /// A header's value is not valid.
    #[error("header {0}: invalid value")]
    Invalid(&'static str),
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Appends `bytes` escaped to `out` (see the module documentation).
fn escape_value(bytes: &[u8], out: &mut String) {
    for &b in bytes {
        if (0x21..0x7f).contains(&b) && b != b'%' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

fn escaped(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    escape_value(bytes, &mut out);
    out
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unescape_value(value: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let high = hex_value(bytes.next()?)?;
            let low = hex_value(bytes.next()?)?;
            out.push((high << 4) | low);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

fn unescape_string(value: &str, name: &'static str) -> Result<MqttString, HeaderError> {
    let bytes = unescape_value(value).ok_or(HeaderError::Invalid(name))?;
    MqttString::try_from(Bytes::from(bytes)).map_err(|_| HeaderError::Invalid(name))
}

/// The headers of `publish` sent by `origin`. RETAIN is carried as given.
#[must_use]
pub fn encode(publish: &Publish, origin: &Origin) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(ORIGIN, escaped(origin.node.as_bytes()));
    headers.insert(INSTANCE, format!("{:016x}", origin.instance));
    headers.insert(SEQ, origin.seq.to_string());
    headers.insert(QOS, (publish.qos as u8).to_string());
    if publish.retain {
        headers.insert(RETAIN, "1");
    }
    let p = &publish.properties;
    if let Some(format) = p.payload_format_indicator {
        headers.insert(PAYLOAD_FORMAT, (format as u8).to_string());
    }
    if let Some(expiry) = p.message_expiry_interval {
        headers.insert(MESSAGE_EXPIRY, expiry.to_string());
    }
    if let Some(content_type) = &p.content_type {
        headers.insert(CONTENT_TYPE, escaped(content_type.as_bytes()));
    }
    if let Some(topic) = &p.response_topic {
        headers.insert(RESPONSE_TOPIC, escaped(topic.as_bytes()));
    }
    if let Some(data) = &p.correlation_data {
        headers.insert(CORRELATION_DATA, escaped(data));
    }
    for (key, value) in &p.user_properties {
        let mut pair = escaped(key.as_bytes());
        pair.push('=');
        escape_value(value.as_bytes(), &mut pair);
        headers.append(USER_PROPERTY, pair);
    }
    headers
}

fn required<'a>(
    headers: &'a HeaderMap,
    name: HeaderName,
    label: &'static str,
) -> Result<&'a str, HeaderError> {
    headers
        .get(name)
        .map(|v| v.as_str())
        .ok_or(HeaderError::MissingHeader(label))
}

/// The origin written by [`encode`].
///
/// # Errors
/// [`HeaderError`] when the origin headers are missing or malformed.
pub fn decode_origin(headers: &HeaderMap) -> Result<Origin, HeaderError> {
    let node = required(headers, ORIGIN, "Fulmar-Origin")?;
    let node = unescape_value(node)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or(HeaderError::Invalid("Fulmar-Origin"))?;
    let instance = required(headers, INSTANCE, "Fulmar-Instance")?;
    let instance =
        u64::from_str_radix(instance, 16).map_err(|_| HeaderError::Invalid("Fulmar-Instance"))?;
    let seq = required(headers, SEQ, "Fulmar-Seq")?
        .parse()
        .map_err(|_| HeaderError::Invalid("Fulmar-Seq"))?;
    Ok(Origin {
        node,
        instance,
        seq,
    })
}

/// The MQTT message that `topic`, `headers` and `payload` carry, and its
/// origin. The result has no packet identifier (the broker assigns one per
/// subscriber).
///
/// # Errors
/// [`HeaderError`] when headers are missing or malformed.
pub fn decode(
    topic: TopicName,
    headers: Option<&HeaderMap>,
    payload: Bytes,
) -> Result<(Publish, Origin), HeaderError> {
    let headers = headers.ok_or(HeaderError::Missing)?;
    let origin = decode_origin(headers)?;
    let qos = match required(headers, QOS, "Mqtt-Qos")? {
        "0" => QoS::AtMostOnce,
        "1" => QoS::AtLeastOnce,
        "2" => QoS::ExactlyOnce,
        _ => return Err(HeaderError::Invalid("Mqtt-Qos")),
    };
    let retain = match headers.get(RETAIN).map(|v| v.as_str()) {
        None | Some("0") => false,
        Some("1") => true,
        Some(_) => return Err(HeaderError::Invalid("Mqtt-Retain")),
    };
    let topic =
        MqttString::try_from(topic.into_bytes()).map_err(|_| HeaderError::Invalid("topic"))?;
    let mut publish = Publish::new(topic, payload);
    publish.qos = qos;
    publish.retain = retain;
    let p = &mut publish.properties;
    p.payload_format_indicator = match headers.get(PAYLOAD_FORMAT).map(|v| v.as_str()) {
        None => None,
        Some("0") => Some(PayloadFormat::Unspecified),
        Some("1") => Some(PayloadFormat::Utf8),
        Some(_) => return Err(HeaderError::Invalid("Mqtt-Payload-Format")),
    };
    if let Some(expiry) = headers.get(MESSAGE_EXPIRY) {
        p.message_expiry_interval = Some(
            expiry
                .as_str()
                .parse()
                .map_err(|_| HeaderError::Invalid("Mqtt-Message-Expiry"))?,
        );
    }
    if let Some(v) = headers.get(CONTENT_TYPE) {
        p.content_type = Some(unescape_string(v.as_str(), "Mqtt-Content-Type")?);
    }
    if let Some(v) = headers.get(RESPONSE_TOPIC) {
        p.response_topic = Some(unescape_string(v.as_str(), "Mqtt-Response-Topic")?);
    }
    if let Some(v) = headers.get(CORRELATION_DATA) {
        let data =
            unescape_value(v.as_str()).ok_or(HeaderError::Invalid("Mqtt-Correlation-Data"))?;
        p.correlation_data = Some(Bytes::from(data));
    }
    for pair in headers.get_all(USER_PROPERTY) {
        let (key, value) = pair
            .as_str()
            .split_once('=')
            .ok_or(HeaderError::Invalid("Mqtt-User-Property"))?;
        p.user_properties.push((
            unescape_string(key, "Mqtt-User-Property")?,
            unescape_string(value, "Mqtt-User-Property")?,
        ));
    }
    Ok((publish, origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            node: "node a=1".into(),
            instance: 0xdead_beef,
            seq: 42,
        }
    }

    #[test]
    fn round_trip_with_every_property() {
        let mut publish = Publish::new(MqttString::from("a/b"), Bytes::from_static(b"payload"));
        publish.qos = QoS::ExactlyOnce;
        publish.retain = true;
        let p = &mut publish.properties;
        p.payload_format_indicator = Some(PayloadFormat::Utf8);
        p.message_expiry_interval = Some(3600);
        p.content_type = Some("text/plain; charset=utf-8".into());
        p.response_topic = Some("reply/to me".into());
        p.correlation_data = Some(Bytes::from_static(b"\x00\r\n%=\xff"));
        p.user_properties = vec![
            ("k".into(), "v".into()),
            ("k".into(), "second\r\nline".into()),
            ("a=b".into(), " padded ".into()),
            ("".into(), "".into()),
            ("ünï".into(), "çødé".into()),
        ];
        let headers = encode(&publish, &origin());
        for (_, values) in headers.iter() {
            for value in values {
                let s = value.as_str();
                assert!(!s.contains(['\r', '\n', ' ']), "{s:?}");
            }
        }
        let (decoded, from) = decode(
            "a/b".parse().unwrap(),
            Some(&headers),
            publish.payload.clone(),
        )
        .unwrap();
        assert_eq!(decoded, publish);
        assert_eq!(from, origin());
    }

    #[test]
    fn minimal_message() {
        let publish = Publish::new(MqttString::from("t"), Bytes::new());
        let headers = encode(&publish, &origin());
        assert!(headers.get(RETAIN).is_none());
        let (decoded, _) = decode("t".parse().unwrap(), Some(&headers), Bytes::new()).unwrap();
        assert_eq!(decoded, publish);
    }

    #[test]
    fn missing_or_forged_headers_are_errors() {
        let topic = || "t".parse::<TopicName>().unwrap();
        assert_eq!(
            decode(topic(), None, Bytes::new()),
            Err(HeaderError::Missing)
        );
        let good = encode(
            &Publish::new(MqttString::from("t"), Bytes::new()),
            &origin(),
        );
        let cases: [(HeaderName, Option<&str>); 9] = [
            (ORIGIN, None),
            (INSTANCE, Some("xyz")),
            (SEQ, Some("-1")),
            (QOS, Some("3")),
            (QOS, None),
            (RETAIN, Some("yes")),
            (PAYLOAD_FORMAT, Some("2")),
            (MESSAGE_EXPIRY, Some("4294967296")),
            (CONTENT_TYPE, Some("%C3")),
        ];
        for (name, value) in cases {
            let mut headers = HeaderMap::new();
            for (n, values) in good.iter() {
                if *n != name {
                    for v in values {
                        headers.append(n.clone(), v.clone());
                    }
                }
            }
            if let Some(value) = value {
                headers.insert(name.clone(), value);
            }
            assert!(
                decode(topic(), Some(&headers), Bytes::new()).is_err(),
                "{name}: {value:?}"
            );
        }
        let mut bad_pair = good.clone();
        bad_pair.append(USER_PROPERTY, "no-separator");
        assert_eq!(
            decode(topic(), Some(&bad_pair), Bytes::new()),
            Err(HeaderError::Invalid("Mqtt-User-Property"))
        );
        let mut nul = good.clone();
        nul.insert(RESPONSE_TOPIC, "a%00");
        assert!(decode(topic(), Some(&nul), Bytes::new()).is_err());
    }
}
