//! Wire format of the typed property sets (MQTT 5.0 section 2.2.2).
//!
//! Properties are encoded in the order of the struct fields; decoding accepts
//! any order (spec 2.2.2.2), rejects identifiers not allowed in the packet
//! (Malformed Packet), repeated single-valued properties and out-of-range values
//! (Protocol Error).

use core::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;

use crate::error::{DecodeError, EncodeError};
use crate::properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PayloadFormat, PublishProperties, SubscribeProperties, UnsubscribeProperties, UserProperties,
    WillProperties,
};
use crate::string::{MqttString, has_wildcard};
use crate::types::QoS;
use crate::wire::{
    Counter, MAX_VAR_INT, Reader, Sink, checked_var_int, put_string, put_var_int, var_int_len,
};

/// Property identifiers (Table 2-4).
pub(crate) mod id {
    pub(crate) const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub(crate) const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub(crate) const CONTENT_TYPE: u8 = 0x03;
    pub(crate) const RESPONSE_TOPIC: u8 = 0x08;
    pub(crate) const CORRELATION_DATA: u8 = 0x09;
    pub(crate) const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub(crate) const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub(crate) const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub(crate) const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub(crate) const AUTHENTICATION_METHOD: u8 = 0x15;
    pub(crate) const AUTHENTICATION_DATA: u8 = 0x16;
    pub(crate) const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub(crate) const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub(crate) const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub(crate) const RESPONSE_INFORMATION: u8 = 0x1A;
    pub(crate) const SERVER_REFERENCE: u8 = 0x1C;
    pub(crate) const REASON_STRING: u8 = 0x1F;
    pub(crate) const RECEIVE_MAXIMUM: u8 = 0x21;
    pub(crate) const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub(crate) const TOPIC_ALIAS: u8 = 0x23;
    pub(crate) const MAXIMUM_QOS: u8 = 0x24;
    pub(crate) const RETAIN_AVAILABLE: u8 = 0x25;
    pub(crate) const USER_PROPERTY: u8 = 0x26;
    pub(crate) const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub(crate) const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub(crate) const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub(crate) const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

use id::*;

/// A property set of one packet (or the Will Properties).
pub(crate) trait PropertySet: Sized + Default {
    /// Where the set appears, for error messages.
    const CONTEXT: &'static str;

    /// Reads the value of property `id` into `self`; `Ok(false)` if `id` is
    /// not allowed in this set.
    fn read(&mut self, id: u8, r: &mut Reader<'_>) -> Result<bool, DecodeError>;

    /// Writes every property that is set (without the Property Length).
    /// Checks that need a scan of a value run only when counting
    /// ([`Sink::COUNTING`]): every encode counts, and so validates, first.
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError>;

    /// Length of the properties, Property Length not included; with `check`
    /// the checks of [`PropertySet::write`] run too. By default a counting
    /// pass of `write`.
    fn wire_len(&self, check: bool) -> Result<usize, EncodeError> {
        let _ = check;
        let mut c = Counter::default();
        self.write(&mut c)?;
        Ok(c.0)
    }
}

/// Reads a Property Length and the properties it covers.
pub(crate) fn decode_properties<P: PropertySet>(r: &mut Reader<'_>) -> Result<P, DecodeError> {
    let len = r.var_int("property length")?;
    let available = r.remaining();
    let mut sub = usize::try_from(len)
        .ok()
        .and_then(|l| r.sub(l))
        .ok_or(DecodeError::PropertyLengthOverrun { len, available })?;
    let mut props = P::default();
    while !sub.is_empty() {
        let raw = sub.var_int("property identifier")?;
        let allowed = match u8::try_from(raw) {
            Ok(id) => props.read(id, &mut sub)?,
            Err(_) => false,
        };
        if !allowed {
            return Err(DecodeError::PropertyNotAllowed {
                id: raw,
                context: P::CONTEXT,
            });
        }
    }
    Ok(props)
}

/// Writes the Property Length followed by the properties.
pub(crate) fn encode_properties<P: PropertySet, S: Sink>(
    p: &P,
    s: &mut S,
) -> Result<(), EncodeError> {
    let len = p.wire_len(S::COUNTING)?;
    let var = checked_var_int(len)?;
    if S::COUNTING {
        s.add_len(crate::wire::var_int_len(len) + len);
        return Ok(());
    }
    put_var_int(s, var);
    p.write(s)
}

fn once<T>(
    slot: &mut Option<T>,
    value: T,
    id: u8,
    context: &'static str,
) -> Result<bool, DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::DuplicateProperty { id, context });
    }
    *slot = Some(value);
    Ok(true)
}

fn read_bool(r: &mut Reader<'_>, id: u8) -> Result<bool, DecodeError> {
    match r.u8("property")? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(DecodeError::InvalidPropertyValue {
            id,
            value: u32::from(v),
        }),
    }
}

fn read_nz16(r: &mut Reader<'_>, id: u8) -> Result<NonZeroU16, DecodeError> {
    let v = r.u16("property")?;
    NonZeroU16::new(v).ok_or(DecodeError::InvalidPropertyValue { id, value: 0 })
}

fn read_nz32(r: &mut Reader<'_>, id: u8) -> Result<NonZeroU32, DecodeError> {
    let v = r.u32("property")?;
    NonZeroU32::new(v).ok_or(DecodeError::InvalidPropertyValue { id, value: 0 })
}

fn read_subscription_id(r: &mut Reader<'_>) -> Result<NonZeroU32, DecodeError> {
    let v = r.var_int("subscription identifier")?;
    NonZeroU32::new(v).ok_or(DecodeError::InvalidPropertyValue {
        id: SUBSCRIPTION_IDENTIFIER,
        value: 0,
    })
}

fn read_payload_format(r: &mut Reader<'_>) -> Result<PayloadFormat, DecodeError> {
    match r.u8("payload format indicator")? {
        0 => Ok(PayloadFormat::Unspecified),
        1 => Ok(PayloadFormat::Utf8),
        v => Err(DecodeError::InvalidPropertyValue {
            id: PAYLOAD_FORMAT_INDICATOR,
            value: u32::from(v),
        }),
    }
}

fn read_response_topic(r: &mut Reader<'_>) -> Result<MqttString, DecodeError> {
    // The pass that checks the string for U+0000 also finds wildcards.
    let (topic, wildcard) = r.scanned_string("response topic")?;
    if wildcard {
        return Err(DecodeError::ResponseTopicWildcard);
    }
    Ok(topic)
}

#[inline]
fn w_response_topic<S: Sink>(s: &mut S, v: Option<&MqttString>) -> Result<(), EncodeError> {
    if S::COUNTING && v.is_some_and(|t| has_wildcard(t)) {
        return Err(EncodeError::ResponseTopicWildcard);
    }
    w_string(s, RESPONSE_TOPIC, v);
    Ok(())
}

fn read_topic_alias(r: &mut Reader<'_>) -> Result<NonZeroU16, DecodeError> {
    NonZeroU16::new(r.u16("topic alias")?).ok_or(DecodeError::ZeroTopicAlias)
}

fn read_user_property(r: &mut Reader<'_>, list: &mut UserProperties) -> Result<bool, DecodeError> {
    // MQTT-1.5.7-1: both strings are UTF-8 Encoded Strings.
    let name = r.string("user property name")?;
    let value = r.string("user property value")?;
    list.push((name, value));
    Ok(true)
}

// The writers below put the identifier together with the value (or with the
// length of a string or binary value) in one write of a constant size: into
// a `BytesMut` that is a couple of stores, where a write per field costs a
// capacity check and a length update each.

#[inline]
fn w_u8<S: Sink>(s: &mut S, id: u8, v: Option<u8>) {
    if let Some(v) = v {
        s.put_slice(&[id, v]);
    }
}

#[inline]
fn w_bool<S: Sink>(s: &mut S, id: u8, v: Option<bool>) {
    w_u8(s, id, v.map(u8::from));
}

#[inline]
fn w_u16<S: Sink>(s: &mut S, id: u8, v: Option<u16>) {
    if let Some(v) = v {
        let [a, b] = v.to_be_bytes();
        s.put_slice(&[id, a, b]);
    }
}

#[inline]
fn w_u32<S: Sink>(s: &mut S, id: u8, v: Option<u32>) {
    if let Some(v) = v {
        let [a, b, c, d] = v.to_be_bytes();
        s.put_slice(&[id, a, b, c, d]);
    }
}

/// The identifier and the two-byte length of a value of at most 65 535 bytes.
#[inline]
fn id_and_len(id: u8, len: u16) -> [u8; 3] {
    let [a, b] = len.to_be_bytes();
    [id, a, b]
}

#[inline]
fn w_string<S: Sink>(s: &mut S, id: u8, v: Option<&MqttString>) {
    if let Some(v) = v {
        // MqttString guarantees at most 65 535 bytes.
        s.put_slice(&id_and_len(id, u16::try_from(v.len()).unwrap_or(u16::MAX)));
        s.put_slice(v.as_bytes());
    }
}

#[inline]
fn w_binary<S: Sink>(
    s: &mut S,
    id: u8,
    v: Option<&Bytes>,
    field: &'static str,
) -> Result<(), EncodeError> {
    if let Some(v) = v {
        let len = u16::try_from(v.len()).map_err(|_| EncodeError::BinaryTooLong {
            field,
            len: v.len(),
        })?;
        s.put_slice(&id_and_len(id, len));
        s.put_slice(v);
    }
    Ok(())
}

const SUBSCRIPTION_ID_TOO_LARGE: EncodeError =
    EncodeError::InvalidProperty("subscription identifier above 268435455");

fn w_subscription_id<S: Sink>(s: &mut S, v: NonZeroU32) -> Result<(), EncodeError> {
    if v.get() > MAX_VAR_INT {
        return Err(SUBSCRIPTION_ID_TOO_LARGE);
    }
    s.put_with_var_int(&[SUBSCRIPTION_IDENTIFIER], v.get(), &[]);
    Ok(())
}

/// Encoded length of a Subscription Identifier property, or its error.
#[inline]
fn subscription_id_len(v: NonZeroU32) -> Result<usize, EncodeError> {
    if v.get() > MAX_VAR_INT {
        return Err(SUBSCRIPTION_ID_TOO_LARGE);
    }
    Ok(1 + var_int_len(v.get() as usize))
}

/// Encoded length of the User Properties in `list`.
#[inline]
fn users_len(list: &UserProperties) -> usize {
    list.iter()
        .map(|(name, value)| 5 + name.len() + value.len())
        .sum()
}

/// Encoded length of an optional string property.
#[inline]
fn string_len(v: Option<&MqttString>) -> usize {
    v.map_or(0, |v| 3 + v.len())
}

/// Encoded length of an optional binary property, or the error of [`w_binary`].
#[inline]
fn binary_len(v: Option<&Bytes>, field: &'static str) -> Result<usize, EncodeError> {
    match v {
        Some(v) if v.len() > usize::from(u16::MAX) => Err(EncodeError::BinaryTooLong {
            field,
            len: v.len(),
        }),
        Some(v) => Ok(3 + v.len()),
        None => Ok(0),
    }
}

/// Encoded length of an optional Response Topic; with `check`, the error of
/// [`w_response_topic`] on a counter.
#[inline]
fn response_topic_len(v: Option<&MqttString>, check: bool) -> Result<usize, EncodeError> {
    match v {
        Some(topic) if check && has_wildcard(topic) => Err(EncodeError::ResponseTopicWildcard),
        v => Ok(string_len(v)),
    }
}

#[inline]
fn w_users<S: Sink>(s: &mut S, list: &UserProperties) {
    for (name, value) in list {
        w_string(s, USER_PROPERTY, Some(name));
        put_string(s, value);
    }
}

fn check_auth(method: Option<&MqttString>, data: Option<&Bytes>) -> Result<(), EncodeError> {
    if data.is_some() && method.is_none() {
        return Err(EncodeError::AuthDataWithoutMethod);
    }
    Ok(())
}

impl PropertySet for ConnectProperties {
    const CONTEXT: &'static str = "CONNECT";

    fn read(&mut self, id: u8, r: &mut Reader<'_>) -> Result<bool, DecodeError> {
        let c = Self::CONTEXT;
        match id {
            SESSION_EXPIRY_INTERVAL => {
                once(&mut self.session_expiry_interval, r.u32("property")?, id, c)
            }
            RECEIVE_MAXIMUM => once(&mut self.receive_maximum, read_nz16(r, id)?, id, c),
            MAXIMUM_PACKET_SIZE => once(&mut self.maximum_packet_size, read_nz32(r, id)?, id, c),
            TOPIC_ALIAS_MAXIMUM => once(&mut self.topic_alias_maximum, r.u16("property")?, id, c),
            REQUEST_RESPONSE_INFORMATION => once(
                &mut self.request_response_information,
                read_bool(r, id)?,
                id,
                c,
            ),
            REQUEST_PROBLEM_INFORMATION => once(
                &mut self.request_problem_information,
                read_bool(r, id)?,
                id,
                c,
            ),
            USER_PROPERTY => read_user_property(r, &mut self.user_properties),
            AUTHENTICATION_METHOD => once(
                &mut self.authentication_method,
                r.string("authentication method")?,
                id,
                c,
            ),
            AUTHENTICATION_DATA => once(
                &mut self.authentication_data,
                r.binary("authentication data")?,
                id,
                c,
            ),
            _ => Ok(false),
        }
    }

    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        check_auth(
            self.authentication_method.as_ref(),
            self.authentication_data.as_ref(),
        )?;
        w_u32(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        w_u16(
            s,
            RECEIVE_MAXIMUM,
            self.receive_maximum.map(NonZeroU16::get),
        );
        w_u32(
            s,
            MAXIMUM_PACKET_SIZE,
            self.maximum_packet_size.map(NonZeroU32::get),
        );
        w_u16(s, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        w_bool(
            s,
            REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
        );
        w_bool(
            s,
            REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
        );
        w_users(s, &self.user_properties);
        w_string(
            s,
            AUTHENTICATION_METHOD,
            self.authentication_method.as_ref(),
        );
        w_binary(
            s,
            AUTHENTICATION_DATA,
            self.authentication_data.as_ref(),
            "authentication data",
        )
    }

    #[inline]
    fn wire_len(&self, _check: bool) -> Result<usize, EncodeError> {
        // The fields in the order `write` checks and writes them.
        check_auth(
            self.authentication_method.as_ref(),
            self.authentication_data.as_ref(),
        )?;
        Ok(usize::from(self.session_expiry_interval.is_some()) * 5
            + usize::from(self.receive_maximum.is_some()) * 3
            + usize::from(self.maximum_packet_size.is_some()) * 5
            + usize::from(self.topic_alias_maximum.is_some()) * 3
            + usize::from(self.request_response_information.is_some()) * 2
            + usize::from(self.request_problem_information.is_some()) * 2
            + users_len(&self.user_properties)
            + string_len(self.authentication_method.as_ref())
            + binary_len(self.authentication_data.as_ref(), "authentication data")?)
    }
}

impl PropertySet for WillProperties {
    const CONTEXT: &'static str = "Will Properties";

    fn read(&mut self, id: u8, r: &mut Reader<'_>) -> Result<bool, DecodeError> {
        let c = Self::CONTEXT;
        match id {
            WILL_DELAY_INTERVAL => once(&mut self.will_delay_interval, r.u32("property")?, id, c),
            PAYLOAD_FORMAT_INDICATOR => once(
                &mut self.payload_format_indicator,
                read_payload_format(r)?,
                id,
                c,
            ),
            MESSAGE_EXPIRY_INTERVAL => {
                once(&mut self.message_expiry_interval, r.u32("property")?, id, c)
            }
            CONTENT_TYPE => once(&mut self.content_type, r.string("content type")?, id, c),
            RESPONSE_TOPIC => once(&mut self.response_topic, read_response_topic(r)?, id, c),
            CORRELATION_DATA => once(
                &mut self.correlation_data,
                r.binary("correlation data")?,
                id,
                c,
            ),
            USER_PROPERTY => read_user_property(r, &mut self.user_properties),
            _ => Ok(false),
        }
    }

    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_u32(s, WILL_DELAY_INTERVAL, self.will_delay_interval);
        w_u8(
            s,
            PAYLOAD_FORMAT_INDICATOR,
            self.payload_format_indicator.map(|f| f as u8),
        );
        w_u32(s, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        w_string(s, CONTENT_TYPE, self.content_type.as_ref());
        w_response_topic(s, self.response_topic.as_ref())?;
        w_binary(
            s,
            CORRELATION_DATA,
            self.correlation_data.as_ref(),
            "correlation data",
        )?;
        w_users(s, &self.user_properties);
        Ok(())
    }

    #[inline]
    fn wire_len(&self, check: bool) -> Result<usize, EncodeError> {
        // The fields in the order `write` checks and writes them.
        let len = usize::from(self.will_delay_interval.is_some()) * 5
            + usize::from(self.payload_format_indicator.is_some()) * 2
            + usize::from(self.message_expiry_interval.is_some()) * 5
            + string_len(self.content_type.as_ref())
            + response_topic_len(self.response_topic.as_ref(), check)?
            + binary_len(self.correlation_data.as_ref(), "correlation data")?;
        Ok(len + users_len(&self.user_properties))
    }
}

impl PropertySet for ConnAckProperties {
    const CONTEXT: &'static str = "CONNACK";

    fn read(&mut self, id: u8, r: &mut Reader<'_>) -> Result<bool, DecodeError> {
        let c = Self::CONTEXT;
        match id {
            SESSION_EXPIRY_INTERVAL => {
                once(&mut self.session_expiry_interval, r.u32("property")?, id, c)
            }
            RECEIVE_MAXIMUM => once(&mut self.receive_maximum, read_nz16(r, id)?, id, c),
            MAXIMUM_QOS => {
                let qos = match r.u8("property")? {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    v => {
                        return Err(DecodeError::InvalidPropertyValue {
                            id,
                            value: u32::from(v),
                        });
                    }
                };
                once(&mut self.maximum_qos, qos, id, c)
            }
            RETAIN_AVAILABLE => once(&mut self.retain_available, read_bool(r, id)?, id, c),
            MAXIMUM_PACKET_SIZE => once(&mut self.maximum_packet_size, read_nz32(r, id)?, id, c),
            ASSIGNED_CLIENT_IDENTIFIER => once(
                &mut self.assigned_client_identifier,
                r.string("assigned client identifier")?,
                id,
                c,
            ),
            TOPIC_ALIAS_MAXIMUM => once(&mut self.topic_alias_maximum, r.u16("property")?, id, c),
            REASON_STRING => once(&mut self.reason_string, r.string("reason string")?, id, c),
            USER_PROPERTY => read_user_property(r, &mut self.user_properties),
            WILDCARD_SUBSCRIPTION_AVAILABLE => once(
                &mut self.wildcard_subscription_available,
                read_bool(r, id)?,
                id,
                c,
            ),
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => once(
                &mut self.subscription_identifiers_available,
                read_bool(r, id)?,
                id,
                c,
            ),
            SHARED_SUBSCRIPTION_AVAILABLE => once(
                &mut self.shared_subscription_available,
                read_bool(r, id)?,
                id,
                c,
            ),
            SERVER_KEEP_ALIVE => once(&mut self.server_keep_alive, r.u16("property")?, id, c),
            RESPONSE_INFORMATION => once(
                &mut self.response_information,
                r.string("response information")?,
                id,
                c,
            ),
            SERVER_REFERENCE => once(
                &mut self.server_reference,
                r.string("server reference")?,
                id,
                c,
            ),
            AUTHENTICATION_METHOD => once(
                &mut self.authentication_method,
                r.string("authentication method")?,
                id,
                c,
            ),
            AUTHENTICATION_DATA => once(
                &mut self.authentication_data,
                r.binary("authentication data")?,
                id,
                c,
            ),
            _ => Ok(false),
        }
    }

    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        check_auth(
            self.authentication_method.as_ref(),
            self.authentication_data.as_ref(),
        )?;
        if self.maximum_qos == Some(QoS::ExactlyOnce) {
            return Err(EncodeError::InvalidProperty(
                "maximum QoS 2 (only 0 or 1 may be sent)",
            ));
        }
        w_u32(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        w_u16(
            s,
            RECEIVE_MAXIMUM,
            self.receive_maximum.map(NonZeroU16::get),
        );
        w_u8(s, MAXIMUM_QOS, self.maximum_qos.map(QoS::as_u8));
        w_bool(s, RETAIN_AVAILABLE, self.retain_available);
        w_u32(
            s,
            MAXIMUM_PACKET_SIZE,
            self.maximum_packet_size.map(NonZeroU32::get),
        );
        w_string(
            s,
            ASSIGNED_CLIENT_IDENTIFIER,
            self.assigned_client_identifier.as_ref(),
        );
        w_u16(s, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        w_string(s, REASON_STRING, self.reason_string.as_ref());
        w_users(s, &self.user_properties);
        w_bool(
            s,
            WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available,
        );
        w_bool(
            s,
            SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            self.subscription_identifiers_available,
        );
        w_bool(
            s,
            SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available,
        );
        w_u16(s, SERVER_KEEP_ALIVE, self.server_keep_alive);
        w_string(s, RESPONSE_INFORMATION, self.response_information.as_ref());
        w_string(s, SERVER_REFERENCE, self.server_reference.as_ref());
        w_string(
            s,
            AUTHENTICATION_METHOD,
            self.authentication_method.as_ref(),
        );
        w_binary(
            s,
            AUTHENTICATION_DATA,
            self.authentication_data.as_ref(),
            "authentication data",
        )
    }
}

impl PropertySet for PublishProperties {
    const CONTEXT: &'static str = "PUBLISH";

    fn read(&mut self, id: u8, r: &mut Reader<'_>) -> Result<bool, DecodeError> {
        let c = Self::CONTEXT;
        match id {
            PAYLOAD_FORMAT_INDICATOR => once(
                &mut self.payload_format_indicator,
                read_payload_format(r)?,
                id,
                c,
            ),
            MESSAGE_EXPIRY_INTERVAL => {
                once(&mut self.message_expiry_interval, r.u32("property")?, id, c)
            }
            TOPIC_ALIAS => once(&mut self.topic_alias, read_topic_alias(r)?, id, c),
            RESPONSE_TOPIC => once(&mut self.response_topic, read_response_topic(r)?, id, c),
            CORRELATION_DATA => once(
                &mut self.correlation_data,
                r.binary("correlation data")?,
                id,
                c,
            ),
            USER_PROPERTY => read_user_property(r, &mut self.user_properties),
            SUBSCRIPTION_IDENTIFIER => {
                self.subscription_identifiers.push(read_subscription_id(r)?);
                Ok(true)
            }
            CONTENT_TYPE => once(&mut self.content_type, r.string("content type")?, id, c),
            _ => Ok(false),
        }
    }

    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_u8(
            s,
            PAYLOAD_FORMAT_INDICATOR,
            self.payload_format_indicator.map(|f| f as u8),
        );
        w_u32(s, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        w_u16(s, TOPIC_ALIAS, self.topic_alias.map(NonZeroU16::get));
        w_response_topic(s, self.response_topic.as_ref())?;
        w_binary(
            s,
            CORRELATION_DATA,
            self.correlation_data.as_ref(),
            "correlation data",
        )?;
        w_users(s, &self.user_properties);
        for sub_id in &self.subscription_identifiers {
            w_subscription_id(s, *sub_id)?;
        }
        w_string(s, CONTENT_TYPE, self.content_type.as_ref());
        Ok(())
    }

    #[inline(always)]
    fn wire_len(&self, check: bool) -> Result<usize, EncodeError> {
        // The fields in the order `write` checks and writes them.
        let mut len = usize::from(self.payload_format_indicator.is_some()) * 2
            + usize::from(self.message_expiry_interval.is_some()) * 5
            + usize::from(self.topic_alias.is_some()) * 3;
        len += response_topic_len(self.response_topic.as_ref(), check)?;
        len += binary_len(self.correlation_data.as_ref(), "correlation data")?;
        len += users_len(&self.user_properties);
        for sub_id in &self.subscription_identifiers {
            len += subscription_id_len(*sub_id)?;
        }
        Ok(len + string_len(self.content_type.as_ref()))
    }
}

impl PropertySet for AckProperties {
    const CONTEXT: &'static str = "acknowledgement";

    fn read(&mut self, id: u8, r: &mut Reader<'_>) -> Result<bool, DecodeError> {
        match id {
            REASON_STRING => once(
                &mut self.reason_string,
                r.string("reason string")?,
                id,
                Self::CONTEXT,
            ),
            USER_PROPERTY => read_user_property(r, &mut self.user_properties),
            _ => Ok(false),
        }
    }

    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_string(s, REASON_STRING, self.reason_string.as_ref());
        w_users(s, &self.user_properties);
        Ok(())
    }

    #[inline]
    fn wire_len(&self, _check: bool) -> Result<usize, EncodeError> {
        Ok(string_len(self.reason_string.as_ref()) + users_len(&self.user_properties))
    }
}

impl PropertySet for SubscribeProperties {
    const CONTEXT: &'static str = "SUBSCRIBE";

    fn read(&mut self, id: u8, r: &mut Reader<'_>) -> Result<bool, DecodeError> {
        match id {
            SUBSCRIPTION_IDENTIFIER => once(
                &mut self.subscription_identifier,
                read_subscription_id(r)?,
                id,
                Self::CONTEXT,
            ),
            USER_PROPERTY => read_user_property(r, &mut self.user_properties),
            _ => Ok(false),
        }
    }

    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        if let Some(sub_id) = self.subscription_identifier {
            w_subscription_id(s, sub_id)?;
        }
        w_users(s, &self.user_properties);
        Ok(())
    }

    #[inline]
    fn wire_len(&self, _check: bool) -> Result<usize, EncodeError> {
        let mut len = users_len(&self.user_properties);
        if let Some(sub_id) = self.subscription_identifier {
            len += subscription_id_len(sub_id)?;
        }
        Ok(len)
    }
}

impl PropertySet for UnsubscribeProperties {
    const CONTEXT: &'static str = "UNSUBSCRIBE";

    fn read(&mut self, id: u8, r: &mut Reader<'_>) -> Result<bool, DecodeError> {
        match id {
            USER_PROPERTY => read_user_property(r, &mut self.user_properties),
            _ => Ok(false),
        }
    }

    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_users(s, &self.user_properties);
        Ok(())
    }
}

impl PropertySet for DisconnectProperties {
    const CONTEXT: &'static str = "DISCONNECT";

    fn read(&mut self, id: u8, r: &mut Reader<'_>) -> Result<bool, DecodeError> {
        let c = Self::CONTEXT;
        match id {
            SESSION_EXPIRY_INTERVAL => {
                once(&mut self.session_expiry_interval, r.u32("property")?, id, c)
            }
            REASON_STRING => once(&mut self.reason_string, r.string("reason string")?, id, c),
            USER_PROPERTY => read_user_property(r, &mut self.user_properties),
            SERVER_REFERENCE => once(
                &mut self.server_reference,
                r.string("server reference")?,
                id,
                c,
            ),
            _ => Ok(false),
        }
    }

    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        w_u32(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        w_string(s, REASON_STRING, self.reason_string.as_ref());
        w_users(s, &self.user_properties);
        w_string(s, SERVER_REFERENCE, self.server_reference.as_ref());
        Ok(())
    }
}

impl PropertySet for AuthProperties {
    const CONTEXT: &'static str = "AUTH";

    fn read(&mut self, id: u8, r: &mut Reader<'_>) -> Result<bool, DecodeError> {
        let c = Self::CONTEXT;
        match id {
            AUTHENTICATION_METHOD => once(
                &mut self.authentication_method,
                r.string("authentication method")?,
                id,
                c,
            ),
            AUTHENTICATION_DATA => once(
                &mut self.authentication_data,
                r.binary("authentication data")?,
                id,
                c,
            ),
            REASON_STRING => once(&mut self.reason_string, r.string("reason string")?, id, c),
            USER_PROPERTY => read_user_property(r, &mut self.user_properties),
            _ => Ok(false),
        }
    }

    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        check_auth(
            self.authentication_method.as_ref(),
            self.authentication_data.as_ref(),
        )?;
        w_string(
            s,
            AUTHENTICATION_METHOD,
            self.authentication_method.as_ref(),
        );
        w_binary(
            s,
            AUTHENTICATION_DATA,
            self.authentication_data.as_ref(),
            "authentication data",
        )?;
        w_string(s, REASON_STRING, self.reason_string.as_ref());
        w_users(s, &self.user_properties);
        Ok(())
    }
}

/// Decoding check shared by CONNECT, CONNACK and AUTH.
pub(crate) fn check_auth_decoded(
    method: Option<&MqttString>,
    data: Option<&Bytes>,
) -> Result<(), DecodeError> {
    if data.is_some() && method.is_none() {
        return Err(DecodeError::AuthDataWithoutMethod);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default `wire_len`: a counting pass of `write`.
    fn counted<P: PropertySet>(p: &P) -> Result<usize, EncodeError> {
        let mut c = Counter::default();
        p.write(&mut c)?;
        Ok(c.0)
    }

    #[test]
    fn arithmetic_lengths_match_the_counting_pass() {
        // v5:MQTT-2.2.2-1: the Property Length covers exactly the properties (0 for none).
        let users = vec![("k".into(), "value".into()), ("".into(), "".into())];
        let publish = PublishProperties {
            payload_format_indicator: Some(PayloadFormat::Utf8),
            message_expiry_interval: Some(9),
            topic_alias: NonZeroU16::new(3),
            response_topic: Some("r/t".into()),
            correlation_data: Some(Bytes::from_static(b"cd")),
            user_properties: users.clone(),
            subscription_identifiers: vec![NonZeroU32::MIN, NonZeroU32::new(MAX_VAR_INT).unwrap()],
            content_type: Some("ct".into()),
        };
        assert_eq!(publish.wire_len(true), counted(&publish));
        assert_eq!(PublishProperties::default().wire_len(true), Ok(0));
        let ack = AckProperties {
            reason_string: Some("why".into()),
            user_properties: users.clone(),
        };
        assert_eq!(ack.wire_len(true), counted(&ack));
        let connect = ConnectProperties {
            session_expiry_interval: Some(1),
            receive_maximum: NonZeroU16::new(2),
            maximum_packet_size: NonZeroU32::new(3),
            topic_alias_maximum: Some(4),
            request_response_information: Some(true),
            request_problem_information: Some(false),
            user_properties: users.clone(),
            authentication_method: Some("m".into()),
            authentication_data: Some(Bytes::from_static(b"d")),
        };
        assert_eq!(connect.wire_len(true), counted(&connect));
        let will = WillProperties {
            will_delay_interval: Some(1),
            payload_format_indicator: Some(PayloadFormat::Unspecified),
            message_expiry_interval: Some(2),
            content_type: Some("c".into()),
            response_topic: Some("r".into()),
            correlation_data: Some(Bytes::from_static(b"x")),
            user_properties: users,
        };
        assert_eq!(will.wire_len(true), counted(&will));
    }

    #[test]
    fn arithmetic_lengths_give_the_errors_of_the_counting_pass() {
        // v5:MQTT-3.3.2-14: a Response Topic has no wildcards; other errors as the counting pass.
        let big = Bytes::from(vec![0u8; 65_536]);
        let publish = PublishProperties {
            response_topic: Some("a/+".into()),
            correlation_data: Some(big.clone()),
            ..PublishProperties::default()
        };
        assert_eq!(publish.wire_len(true), counted(&publish));
        let publish = PublishProperties {
            correlation_data: Some(big.clone()),
            ..PublishProperties::default()
        };
        assert_eq!(publish.wire_len(true), counted(&publish));
        let publish = PublishProperties {
            subscription_identifiers: vec![NonZeroU32::new(MAX_VAR_INT + 1).unwrap()],
            ..PublishProperties::default()
        };
        assert_eq!(publish.wire_len(true), counted(&publish));
        let connect = ConnectProperties {
            authentication_data: Some(Bytes::from_static(b"d")),
            ..ConnectProperties::default()
        };
        assert_eq!(connect.wire_len(true), counted(&connect));
        let will = WillProperties {
            response_topic: Some("#".into()),
            correlation_data: Some(big),
            ..WillProperties::default()
        };
        assert_eq!(will.wire_len(true), counted(&will));
        assert!(will.wire_len(true).is_err());
    }
}
