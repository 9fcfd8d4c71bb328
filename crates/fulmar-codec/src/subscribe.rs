//! SUBSCRIBE, subscribe request (MQTT 5.0 section 3.8, MQTT 3.1.1 section 3.8).

use bytes::{BufMut, BytesMut};

use crate::encode::{Encode, public_encode};
use crate::error::{DecodeError, EncodeError};
use crate::properties::SubscribeProperties;
use crate::property_codec::{PropertySet, decode_properties, encode_properties};
use crate::string::MqttString;
use crate::types::{PacketId, PacketType, ProtocolVersion, QoS};
use crate::wire::{
    MAX_VAR_INT, Reader, Sink, checked_var_int, put_string, put_with_var_int, read_packet_id,
    var_int_len,
};

/// SUBSCRIBE: one or more topic filters, each with its options.
///
/// Filters are checked only for what the packet format forbids (UTF-8,
/// non-empty); the topic filter syntax is `fulmar-topic`'s job.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Subscribe {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// Topic filters with their subscription options; never empty on the wire.
    pub filters: Vec<(MqttString, SubscriptionOptions)>,
    /// SUBSCRIBE properties (empty under 3.1.1).
    pub properties: SubscribeProperties,
}

impl Subscribe {
    /// A SUBSCRIBE without properties.
    #[must_use]
    pub fn new(packet_id: PacketId, filters: Vec<(MqttString, SubscriptionOptions)>) -> Self {
        Self {
            packet_id,
            filters,
            properties: SubscribeProperties::default(),
        }
    }
}

/// Subscription Options (MQTT 5.0 section 3.8.3.1). Under MQTT 3.1.1 only
/// `qos` exists (the Requested QoS byte); the other fields must keep their defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// No Local: do not forward messages published by this connection.
    pub no_local: bool,
    /// Retain As Published: keep the RETAIN flag when forwarding.
    pub retain_as_published: bool,
    /// Retain Handling.
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options with `qos` and every 5.0 option at its default (valid in 3.1.1).
    #[must_use]
    pub fn new(qos: QoS) -> Self {
        Self {
            qos,
            ..Self::default()
        }
    }
}

/// Retain Handling subscription option (MQTT 5.0 section 3.8.3.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(u8)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send retained messages only if the subscription does not exist yet.
    SendAtSubscribeIfNew = 1,
    /// 2: do not send retained messages.
    DoNotSend = 2,
}

impl TryFrom<u8> for RetainHandling {
    type Error = crate::error::InvalidValue;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        match value {
            0 => Ok(Self::SendAtSubscribe),
            1 => Ok(Self::SendAtSubscribeIfNew),
            2 => Ok(Self::DoNotSend),
            _ => Err(crate::error::InvalidValue::new("retain handling", value)),
        }
    }
}

/// Writes the options byte of the filter already written (`options`), then
/// the `rest` of the filters, each length in one write with the options byte
/// before it; `byte` gives the options byte.
#[inline(always)]
fn put_filters<'a>(
    buf: &mut BytesMut,
    options: SubscriptionOptions,
    rest: impl Iterator<Item = &'a (MqttString, SubscriptionOptions)>,
    byte: impl Fn(SubscriptionOptions) -> u8,
) {
    let mut last = byte(options);
    for (filter, options) in rest {
        let [hi, lo] = filter_len(filter);
        buf.extend_from_slice(&[last, hi, lo]);
        buf.extend_from_slice(filter.as_bytes());
        last = byte(*options);
    }
    BufMut::put_u8(buf, last);
}

/// The two-byte length of a topic filter.
#[inline(always)]
fn filter_len(filter: &MqttString) -> [u8; 2] {
    // Lossless: an MqttString has at most 65 535 bytes.
    (filter.len() as u16).to_be_bytes()
}

fn is_shared(filter: &str) -> bool {
    filter.starts_with("$share/")
}

impl SubscriptionOptions {
    /// Parses the options byte for `version`.
    fn from_byte(b: u8, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let reserved = match version {
            ProtocolVersion::V31 | ProtocolVersion::V311 => 0b1111_1100,
            ProtocolVersion::V5 => 0b1100_0000,
        };
        if b & reserved != 0 {
            return Err(DecodeError::SubscriptionOptionsReserved(b));
        }
        let qos = QoS::try_from(b & 0b11).map_err(|_| match version {
            ProtocolVersion::V5 => DecodeError::SubscriptionQoS3,
            ProtocolVersion::V31 | ProtocolVersion::V311 => {
                DecodeError::InvalidQoS("subscription options")
            }
        })?;
        let retain_handling = RetainHandling::try_from((b >> 4) & 0b11)
            .map_err(|_| DecodeError::InvalidRetainHandling)?;
        Ok(Self {
            qos,
            no_local: b & 0b100 != 0,
            retain_as_published: b & 0b1000 != 0,
            retain_handling,
        })
    }

    /// The bits of the options byte that only MQTT 5.0 has.
    #[inline(always)]
    fn v5_bits(self) -> u8 {
        (u8::from(self.no_local) << 2)
            | (u8::from(self.retain_as_published) << 3)
            | ((self.retain_handling as u8) << 4)
    }

    /// Whether an option other than the QoS is set, which MQTT 3.1.1 cannot carry.
    #[inline(always)]
    fn has_v5_options(self) -> bool {
        self.no_local
            | self.retain_as_published
            | (self.retain_handling != RetainHandling::SendAtSubscribe)
    }

    /// The options byte of options valid in `version` (checked by the caller):
    /// under 3.1.1 the 5.0 bits are zero, so the byte is the QoS.
    #[inline(always)]
    fn byte(self, version: ProtocolVersion) -> u8 {
        match version {
            ProtocolVersion::V31 | ProtocolVersion::V311 => self.qos.as_u8(),
            ProtocolVersion::V5 => self.qos.as_u8() | self.v5_bits(),
        }
    }

    /// The options byte for `version`.
    fn to_byte(self, version: ProtocolVersion) -> Result<u8, EncodeError> {
        let v5_bits = self.v5_bits();
        if version.is_v3() && v5_bits != 0 {
            return Err(EncodeError::NotInV311 {
                packet_type: PacketType::Subscribe,
                what: "subscription options",
            });
        }
        Ok(self.qos.as_u8() | v5_bits)
    }
}

impl Subscribe {
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = read_packet_id(r, PacketType::Subscribe)?;
        let properties = match version {
            ProtocolVersion::V5 => decode_properties(r)?,
            ProtocolVersion::V31 | ProtocolVersion::V311 => SubscribeProperties::default(),
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.string("topic filter")?;
            if filter.is_empty() {
                return Err(DecodeError::EmptyTopicFilter(PacketType::Subscribe));
            }
            let options = SubscriptionOptions::from_byte(r.u8("subscription options")?, version)?;
            if options.no_local && is_shared(&filter) {
                return Err(DecodeError::NoLocalOnSharedSubscription);
            }
            filters.push((filter, options));
        }
        if filters.is_empty() {
            return Err(DecodeError::NoTopicFilters(PacketType::Subscribe));
        }
        Ok(Self {
            packet_id,
            filters,
            properties,
        })
    }
}

impl Subscribe {
    /// Validates the packet for `version` (the checks of [`Encode::write_body`])
    /// and returns the length of its body and of its properties (without the
    /// Property Length), computed arithmetically.
    #[inline(always)]
    fn checked_len(&self, version: ProtocolVersion) -> Result<(usize, usize), EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::EmptyPayload(PacketType::Subscribe));
        }
        // The packet identifier, and the length and options byte of each filter.
        let mut len = 2 + 3 * self.filters.len();
        let mut properties = 0;
        // Should a rule be broken, the writing pass on a counter finds which
        // (the error of the first offending field, as always).
        let mut broken = false;
        match version {
            ProtocolVersion::V5 => {
                properties = self.properties.wire_len(true)?;
                len += var_int_len(properties) + properties;
                for (filter, options) in &self.filters {
                    if filter.is_empty() || (options.no_local && is_shared(filter)) {
                        broken = true;
                        break;
                    }
                    len += filter.len();
                }
            }
            ProtocolVersion::V31 | ProtocolVersion::V311 => {
                broken = !self.properties.is_empty();
                for (filter, options) in &self.filters {
                    // Any 5.0 option (No Local among them, so no shared
                    // check here): one test for both rules.
                    if filter.is_empty() | options.has_v5_options() {
                        broken = true;
                        break;
                    }
                    len += filter.len();
                }
            }
        }
        if broken {
            return Err(crate::encode::body_len(self, version)
                .err()
                .unwrap_or(EncodeError::EmptyPayload(PacketType::Subscribe)));
        }
        Ok((len, properties))
    }
}

impl Encode for Subscribe {
    const TYPE: PacketType = PacketType::Subscribe;

    /// Sized arithmetically, then written without a second validation. The
    /// length of each filter goes out in one write with the options byte of
    /// the filter before it (the first with the fixed header and packet
    /// identifier under 3.1.1).
    #[inline]
    fn encode_to(&self, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let (body, properties) = self.checked_len(version)?;
        let remaining = checked_var_int(body)?;
        buf.reserve(1 + var_int_len(body) + body);
        let start = buf.len();
        let first = (Self::TYPE.as_u8() << 4) | self.flags();
        let [id_hi, id_lo] = self.packet_id.get().to_be_bytes();
        let mut filters = self.filters.iter();
        // Checked by `checked_len`: there is a first filter.
        let Some((filter, options)) = filters.next() else {
            return Err(EncodeError::EmptyPayload(PacketType::Subscribe));
        };
        let [hi, lo] = filter_len(filter);
        match version {
            ProtocolVersion::V31 | ProtocolVersion::V311 => {
                put_with_var_int(buf, &[first], remaining, &[id_hi, id_lo, hi, lo]);
            }
            ProtocolVersion::V5 => {
                put_with_var_int(buf, &[first], remaining, &[id_hi, id_lo]);
                // Not above the remaining length, which was checked.
                let len = u32::try_from(properties).unwrap_or(MAX_VAR_INT);
                put_with_var_int(buf, &[], len, &[]);
                if let Err(e) = self.properties.write(buf) {
                    buf.truncate(start);
                    return Err(e);
                }
                buf.extend_from_slice(&[hi, lo]);
            }
        }
        buf.extend_from_slice(filter.as_bytes());
        // One loop per version, so that the options byte is computed without a test.
        match version {
            ProtocolVersion::V31 | ProtocolVersion::V311 => {
                put_filters(buf, *options, filters, |o| o.byte(ProtocolVersion::V311))
            }
            ProtocolVersion::V5 => {
                put_filters(buf, *options, filters, |o| o.byte(ProtocolVersion::V5))
            }
        }
        Ok(())
    }

    #[inline]
    fn wire_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        let body = self.checked_len(version)?.0;
        checked_var_int(body)?;
        Ok(1 + var_int_len(body) + body)
    }

    fn write_body<S: Sink>(&self, version: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::EmptyPayload(PacketType::Subscribe));
        }
        s.put_u16(self.packet_id.get());
        match version {
            ProtocolVersion::V5 => encode_properties(&self.properties, s)?,
            ProtocolVersion::V31 | ProtocolVersion::V311 => {
                if !self.properties.is_empty() {
                    return Err(EncodeError::NotInV311 {
                        packet_type: PacketType::Subscribe,
                        what: "properties",
                    });
                }
            }
        }
        for (filter, options) in &self.filters {
            if filter.is_empty() {
                return Err(EncodeError::EmptyTopicFilter);
            }
            if options.no_local && is_shared(filter) {
                return Err(EncodeError::NoLocalOnSharedSubscription);
            }
            put_string(s, filter);
            s.put_u8(options.to_byte(version)?);
        }
        Ok(())
    }
}

public_encode!(Subscribe);
