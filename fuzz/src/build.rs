//! Structure-aware packet generation for the `roundtrip` target: a [`Packet`] built field by
//! field from fuzz bytes, valid by construction for the chosen protocol version (so that an
//! encode error is itself a finding, see [`check_built`]).

use core::num::{NonZeroU16, NonZeroU32};

use arbitrary::{Result, Unstructured};
use bytes::{Bytes, BytesMut};
use fulmar_codec::{
    AckProperties, Auth, AuthProperties, AuthReasonCode, ConnAck, ConnAckProperties, Connect,
    ConnectProperties, ConnectReasonCode, Disconnect, DisconnectProperties, DisconnectReasonCode,
    MqttString, Packet, PacketId, PayloadFormat, ProtocolVersion, PubAck, PubAckReasonCode,
    PubComp, PubCompReasonCode, PubRec, PubRecReasonCode, PubRel, PubRelReasonCode, Publish,
    PublishProperties, QoS, RetainHandling, SubAck, SubAckReasonCode, Subscribe,
    SubscribeProperties, SubscriptionOptions, UnsubAck, UnsubAckReasonCode, Unsubscribe,
    UnsubscribeProperties, UserProperties, Will, WillProperties,
};

use crate::checks::{check_decodes_to, check_encoding, wire_version};

/// The largest Variable Byte Integer, the upper bound of a Subscription Identifier.
const MAX_VAR_INT: u32 = 268_435_455;

/// The `roundtrip` target on one input (also replayed on stable by
/// `fulmar-codec`'s `tests/fuzz_corpus.rs`): the first byte picks the versions the packet is
/// built and encoded for, the rest builds it; [`check_built`] checks the encoding.
pub fn check_roundtrip(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(mode) = u.arbitrary::<u8>() else {
        return;
    };
    let (built_for, encode_for) = match mode & 0b11 {
        0 => (ProtocolVersion::V311, ProtocolVersion::V311),
        1 => (ProtocolVersion::V5, ProtocolVersion::V5),
        // Across versions: encoding may fail or be lossy, but never panics or lies.
        2 => (ProtocolVersion::V5, ProtocolVersion::V311),
        _ => (ProtocolVersion::V311, ProtocolVersion::V5),
    };
    if let Ok(packet) = arbitrary_packet(&mut u, built_for) {
        check_built(&packet, encode_for, built_for == encode_for);
    }
}

/// Builds one packet that `version` can carry, with every field drawn from `u`.
///
/// # Errors
/// When `u` runs out of bytes in a way `arbitrary` reports.
pub fn arbitrary_packet(u: &mut Unstructured<'_>, version: ProtocolVersion) -> Result<Packet> {
    let v5 = version == ProtocolVersion::V5;
    let kinds = if v5 { 15 } else { 14 };
    Ok(match u.int_in_range(1..=kinds)? {
        1 => connect(u, version)?.into(),
        2 => connack(u, v5)?.into(),
        3 => publish(u, v5)?.into(),
        4 => {
            let (packet_id, reason_code, properties) = ack::<PubAckReasonCode>(u, v5)?;
            let mut p = PubAck::new(packet_id);
            p.reason_code = reason_code;
            p.properties = properties;
            p.into()
        }
        5 => {
            let (packet_id, reason_code, properties) = ack::<PubRecReasonCode>(u, v5)?;
            let mut p = PubRec::new(packet_id);
            p.reason_code = reason_code;
            p.properties = properties;
            p.into()
        }
        6 => {
            let (packet_id, reason_code, properties) = ack::<PubRelReasonCode>(u, v5)?;
            let mut p = PubRel::new(packet_id);
            p.reason_code = reason_code;
            p.properties = properties;
            p.into()
        }
        7 => {
            let (packet_id, reason_code, properties) = ack::<PubCompReasonCode>(u, v5)?;
            let mut p = PubComp::new(packet_id);
            p.reason_code = reason_code;
            p.properties = properties;
            p.into()
        }
        8 => subscribe(u, v5)?.into(),
        9 => suback(u, v5)?.into(),
        10 => unsubscribe(u, v5)?.into(),
        11 => unsuback(u, v5)?.into(),
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 => disconnect(u, v5)?.into(),
        _ => auth(u)?.into(),
    })
}

/// Encodes `packet` for `version` and checks the result: on success `encoded_len` is exact,
/// the encoding decodes to one packet, is canonical, its prefixes need more bytes, and a
/// PUBLISH's `encode_header` is the encoding minus the payload; on failure nothing was
/// appended and `encoded_len` fails too. Returns whether the packet encoded.
///
/// With `exact`, the packet must encode and decode to itself: for packets built for
/// `version` by [`arbitrary_packet`]. Without, the packet may have been built for the other
/// version: encoding may fail (5.0-only data for a 3.1.1 peer) or be lossy (a 5.0 SUBACK
/// failure code becomes 3.1.1's 0x80).
pub fn check_built(packet: &Packet, version: ProtocolVersion, exact: bool) -> bool {
    const MARK: &[u8] = b"already here";
    let mut buf = BytesMut::from(MARK);
    if let Err(e) = packet.encode(version, &mut buf) {
        assert!(
            !exact,
            "a packet built for {version} must encode: {e}\n{packet:?}"
        );
        assert_eq!(&buf[..], MARK, "a failed encode appended bytes ({e})");
        assert!(
            packet.encoded_len(version).is_err(),
            "encode failed ({e}) but encoded_len did not"
        );
        return false;
    }
    assert_eq!(
        &buf[..MARK.len()],
        MARK,
        "encode changed what was in the buffer"
    );
    let wire = buf.split_off(MARK.len());
    match packet.encoded_len(version) {
        Ok(len) => assert_eq!(len, wire.len(), "encoded_len disagrees with encode"),
        Err(e) => panic!("encoded_len failed where encode succeeded: {e}"),
    }
    if exact {
        check_decodes_to(&wire, version, packet);
    } else {
        check_encoding(&wire, wire_version(packet, version));
    }
    if let Packet::Publish(p) = packet {
        let mut header = BytesMut::new();
        if let Err(e) = p.encode_header(version, &mut header) {
            panic!("encode_header failed where encode succeeded: {e}");
        }
        header.extend_from_slice(&p.payload);
        assert_eq!(header, wire, "encode_header + payload != encode");
    }
    true
}

/// A UTF-8 string without U+0000, up to the input's length.
fn string(u: &mut Unstructured<'_>) -> Result<MqttString> {
    let s: &str = u.arbitrary()?;
    let s = s.replace('\0', "");
    Ok(MqttString::try_from_string(s).unwrap_or_default())
}

/// A string without wildcard characters (a topic name when not empty).
fn plain(u: &mut Unstructured<'_>) -> Result<MqttString> {
    let s: &str = u.arbitrary()?;
    let s: String = s
        .chars()
        .filter(|c| !matches!(c, '\0' | '+' | '#'))
        .collect();
    Ok(MqttString::try_from_string(s).unwrap_or_default())
}

/// A non-empty topic name.
fn topic(u: &mut Unstructured<'_>) -> Result<MqttString> {
    let t = plain(u)?;
    Ok(if t.is_empty() { "t".into() } else { t })
}

/// A non-empty topic filter; the codec does not validate wildcard placement, so anything
/// goes, sometimes with a `$share/` prefix.
fn filter(u: &mut Unstructured<'_>) -> Result<MqttString> {
    let f = string(u)?;
    Ok(match (f.is_empty(), u.ratio(1, 4)?) {
        (true, _) => "#".into(),
        (false, true) => MqttString::try_from_string(format!("$share/{f}")).unwrap_or(f),
        (false, false) => f,
    })
}

fn binary(u: &mut Unstructured<'_>) -> Result<Bytes> {
    let b: &[u8] = u.arbitrary()?;
    Ok(Bytes::copy_from_slice(b))
}

fn packet_id(u: &mut Unstructured<'_>) -> Result<PacketId> {
    Ok(PacketId::new(u.int_in_range(1..=u16::MAX)?).unwrap_or(PacketId::ONE))
}

fn qos(u: &mut Unstructured<'_>) -> Result<QoS> {
    Ok(*u.choose(&[QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])?)
}

/// One of the values `C` accepts.
fn code<C: TryFrom<u8> + Copy>(u: &mut Unstructured<'_>) -> Result<C> {
    let valid: Vec<C> = (0..=u8::MAX).filter_map(|b| C::try_from(b).ok()).collect();
    Ok(*u.choose(&valid)?)
}

/// `Some(value)` half of the time.
fn opt<T>(
    u: &mut Unstructured<'_>,
    f: impl FnOnce(&mut Unstructured<'_>) -> Result<T>,
) -> Result<Option<T>> {
    Ok(if u.arbitrary()? { Some(f(u)?) } else { None })
}

fn users(u: &mut Unstructured<'_>) -> Result<UserProperties> {
    let n = u.int_in_range(0..=3)?;
    (0..n).map(|_| Ok((string(u)?, string(u)?))).collect()
}

fn nz16(u: &mut Unstructured<'_>) -> Result<NonZeroU16> {
    Ok(NonZeroU16::new(u.int_in_range(1..=u16::MAX)?).unwrap_or(NonZeroU16::MIN))
}

fn nz32(u: &mut Unstructured<'_>) -> Result<NonZeroU32> {
    Ok(NonZeroU32::new(u.int_in_range(1..=u32::MAX)?).unwrap_or(NonZeroU32::MIN))
}

fn subscription_id(u: &mut Unstructured<'_>) -> Result<NonZeroU32> {
    Ok(NonZeroU32::new(u.int_in_range(1..=MAX_VAR_INT)?).unwrap_or(NonZeroU32::MIN))
}

fn payload_format(u: &mut Unstructured<'_>) -> Result<PayloadFormat> {
    Ok(*u.choose(&[PayloadFormat::Unspecified, PayloadFormat::Utf8])?)
}

/// Authentication Method and Data: data only with a method.
fn auth_pair(u: &mut Unstructured<'_>) -> Result<(Option<MqttString>, Option<Bytes>)> {
    let method = opt(u, string)?;
    let data = if method.is_some() {
        opt(u, binary)?
    } else {
        None
    };
    Ok((method, data))
}

fn ack_properties(u: &mut Unstructured<'_>, v5: bool) -> Result<AckProperties> {
    if !v5 {
        return Ok(AckProperties::default());
    }
    Ok(AckProperties {
        reason_string: opt(u, string)?,
        user_properties: users(u)?,
    })
}

fn connect(u: &mut Unstructured<'_>, version: ProtocolVersion) -> Result<Connect> {
    let v5 = version == ProtocolVersion::V5;
    let mut c = Connect::new(version, string(u)?);
    c.clean_start = u.arbitrary()?;
    c.keep_alive = u.arbitrary()?;
    c.username = opt(u, string)?;
    // MQTT 3.1.1 allows a password only with a user name [MQTT-3.1.2-22].
    if v5 || c.username.is_some() {
        c.password = opt(u, binary)?;
    }
    if u.arbitrary()? {
        let mut will = Will::new(topic(u)?, binary(u)?);
        will.qos = qos(u)?;
        will.retain = u.arbitrary()?;
        if v5 {
            will.properties = WillProperties {
                will_delay_interval: opt(u, |u| u.arbitrary())?,
                payload_format_indicator: opt(u, payload_format)?,
                message_expiry_interval: opt(u, |u| u.arbitrary())?,
                content_type: opt(u, string)?,
                response_topic: opt(u, topic)?,
                correlation_data: opt(u, binary)?,
                user_properties: users(u)?,
            };
        }
        c.will = Some(will);
    }
    if v5 {
        let (authentication_method, authentication_data) = auth_pair(u)?;
        c.properties = ConnectProperties {
            session_expiry_interval: opt(u, |u| u.arbitrary())?,
            receive_maximum: opt(u, nz16)?,
            maximum_packet_size: opt(u, nz32)?,
            topic_alias_maximum: opt(u, |u| u.arbitrary())?,
            request_response_information: opt(u, |u| u.arbitrary())?,
            request_problem_information: opt(u, |u| u.arbitrary())?,
            user_properties: users(u)?,
            authentication_method,
            authentication_data,
        };
    }
    Ok(c)
}

fn connack(u: &mut Unstructured<'_>, v5: bool) -> Result<ConnAck> {
    let reason_code: ConnectReasonCode = if v5 {
        code(u)?
    } else {
        let level = u.int_in_range(0..=5)?;
        ConnectReasonCode::from_v311(level).unwrap_or_default()
    };
    // Session Present is 0 when the connection is refused [MQTT-3.2.2-6].
    let session_present = reason_code == ConnectReasonCode::Success && u.arbitrary()?;
    let mut c = ConnAck::new(session_present, reason_code);
    if v5 {
        let (authentication_method, authentication_data) = auth_pair(u)?;
        c.properties = ConnAckProperties {
            session_expiry_interval: opt(u, |u| u.arbitrary())?,
            receive_maximum: opt(u, nz16)?,
            maximum_qos: opt(u, |u| Ok(*u.choose(&[QoS::AtMostOnce, QoS::AtLeastOnce])?))?,
            retain_available: opt(u, |u| u.arbitrary())?,
            maximum_packet_size: opt(u, nz32)?,
            assigned_client_identifier: opt(u, string)?,
            topic_alias_maximum: opt(u, |u| u.arbitrary())?,
            reason_string: opt(u, string)?,
            user_properties: users(u)?,
            wildcard_subscription_available: opt(u, |u| u.arbitrary())?,
            subscription_identifiers_available: opt(u, |u| u.arbitrary())?,
            shared_subscription_available: opt(u, |u| u.arbitrary())?,
            server_keep_alive: opt(u, |u| u.arbitrary())?,
            response_information: opt(u, string)?,
            server_reference: opt(u, string)?,
            authentication_method,
            authentication_data,
        };
    }
    Ok(c)
}

fn publish(u: &mut Unstructured<'_>, v5: bool) -> Result<Publish> {
    let mut p = Publish::new(topic(u)?, binary(u)?);
    p.qos = qos(u)?;
    p.retain = u.arbitrary()?;
    if p.qos != QoS::AtMostOnce {
        p.packet_id = Some(packet_id(u)?);
        p.dup = u.arbitrary()?;
    }
    if v5 {
        let n = u.int_in_range(0..=3)?;
        p.properties = PublishProperties {
            payload_format_indicator: opt(u, payload_format)?,
            message_expiry_interval: opt(u, |u| u.arbitrary())?,
            topic_alias: opt(u, nz16)?,
            response_topic: opt(u, topic)?,
            correlation_data: opt(u, binary)?,
            user_properties: users(u)?,
            subscription_identifiers: (0..n).map(|_| subscription_id(u)).collect::<Result<_>>()?,
            content_type: opt(u, string)?,
        };
        // With a Topic Alias the topic name may be empty [MQTT-3.3.2-12].
        if p.properties.topic_alias.is_some() && u.arbitrary()? {
            p.topic = MqttString::new();
        }
    }
    Ok(p)
}

fn ack<C: TryFrom<u8> + Copy + Default>(
    u: &mut Unstructured<'_>,
    v5: bool,
) -> Result<(PacketId, C, AckProperties)> {
    let id = packet_id(u)?;
    let reason = if v5 { code(u)? } else { C::default() };
    Ok((id, reason, ack_properties(u, v5)?))
}

fn subscribe(u: &mut Unstructured<'_>, v5: bool) -> Result<Subscribe> {
    let n = u.int_in_range(1..=4)?;
    let mut filters = Vec::with_capacity(n);
    for _ in 0..n {
        let f = filter(u)?;
        let mut o = SubscriptionOptions::new(qos(u)?);
        if v5 {
            // No Local on a shared subscription is a Protocol Error [MQTT-3.8.3-4].
            o.no_local = !f.starts_with("$share/") && u.arbitrary()?;
            o.retain_as_published = u.arbitrary()?;
            o.retain_handling = *u.choose(&[
                RetainHandling::SendAtSubscribe,
                RetainHandling::SendAtSubscribeIfNew,
                RetainHandling::DoNotSend,
            ])?;
        }
        filters.push((f, o));
    }
    let mut s = Subscribe::new(packet_id(u)?, filters);
    if v5 {
        s.properties = SubscribeProperties {
            subscription_identifier: opt(u, subscription_id)?,
            user_properties: users(u)?,
        };
    }
    Ok(s)
}

fn suback(u: &mut Unstructured<'_>, v5: bool) -> Result<SubAck> {
    let id = packet_id(u)?;
    let n = u.int_in_range(1..=4)?;
    let codes = (0..n)
        .map(|_| {
            if v5 {
                code(u)
            } else {
                // 3.1.1 has 0x00..=0x02 and 0x80 Failure only.
                Ok(*u.choose(&[
                    SubAckReasonCode::GrantedQoS0,
                    SubAckReasonCode::GrantedQoS1,
                    SubAckReasonCode::GrantedQoS2,
                    SubAckReasonCode::UnspecifiedError,
                ])?)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let mut s = SubAck::new(id, codes);
    s.properties = ack_properties(u, v5)?;
    Ok(s)
}

fn unsubscribe(u: &mut Unstructured<'_>, v5: bool) -> Result<Unsubscribe> {
    let id = packet_id(u)?;
    let n = u.int_in_range(1..=4)?;
    let filters = (0..n).map(|_| filter(u)).collect::<Result<_>>()?;
    let mut s = Unsubscribe::new(id, filters);
    if v5 {
        s.properties = UnsubscribeProperties {
            user_properties: users(u)?,
        };
    }
    Ok(s)
}

fn unsuback(u: &mut Unstructured<'_>, v5: bool) -> Result<UnsubAck> {
    let id = packet_id(u)?;
    if !v5 {
        // 3.1.1 UNSUBACK has no payload.
        return Ok(UnsubAck::new(id, Vec::new()));
    }
    let n = u.int_in_range(1..=4)?;
    let codes = (0..n)
        .map(|_| code::<UnsubAckReasonCode>(u))
        .collect::<Result<_>>()?;
    let mut s = UnsubAck::new(id, codes);
    s.properties = ack_properties(u, v5)?;
    Ok(s)
}

fn disconnect(u: &mut Unstructured<'_>, v5: bool) -> Result<Disconnect> {
    if !v5 {
        return Ok(Disconnect::default());
    }
    let mut d = Disconnect::new(code::<DisconnectReasonCode>(u)?);
    d.properties = DisconnectProperties {
        session_expiry_interval: opt(u, |u| u.arbitrary())?,
        reason_string: opt(u, string)?,
        user_properties: users(u)?,
        server_reference: opt(u, string)?,
    };
    Ok(d)
}

/// An AUTH: the one of remaining length 0 (Success, no properties), or one
/// with an Authentication Method, which only that one may omit (5.0 section
/// 3.15.2.2.2).
fn auth(u: &mut Unstructured<'_>) -> Result<Auth> {
    let (authentication_method, authentication_data) = auth_pair(u)?;
    let auth = Auth {
        reason_code: code::<AuthReasonCode>(u)?,
        properties: AuthProperties {
            authentication_method,
            authentication_data,
            reason_string: opt(u, string)?,
            user_properties: users(u)?,
        },
    };
    if auth.properties.authentication_method.is_none() {
        return Ok(Auth::default());
    }
    Ok(auth)
}
