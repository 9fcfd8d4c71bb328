//! `fulmar sub -F FORMAT`: mosquitto_sub's output format.
//!
//! `%` fields: `%t` topic, `%p` payload, `%l` payload length, `%q` QoS, `%r`
//! retain flag (0/1), `%m` packet identifier (0 at QoS 0), `%x` / `%X` payload
//! in lower / upper case hex, `%j` a JSON object of the message (`%J`: its
//! payload parsed as JSON), `%I` the time received (ISO 8601), `%U` the same
//! as Unix time with nanoseconds, `%%` a percent sign; MQTT 5.0 properties:
//! `%C` content type, `%D` correlation data, `%E` message expiry interval,
//! `%F` payload format indicator, `%R` response topic, `%S` subscription
//! identifiers (`fulmar sub` leaves out the one its client picks for itself
//! when -D gives none; the first when there are several, as mosquitto_sub),
//! `%P` user properties (`key:value`, space separated), `%A`
//! topic alias (never set on what a client receives from fulmar). Widths and
//! precisions (`%10t`, `%-10.3t`, `%05l`, `%8p`) act as mosquitto_sub's: see
//! [`pad_field`]. `%j` / `%J` are one line, or with `--pretty` laid out
//! as mosquitto_sub lays them out (see [`JsonStyle`]).
//!
//! `@` fields are the time received, as mosquitto_sub passes them to
//! strftime (glibc's, C locale): `@Y` `@m` `@d` `@H` `@M` `@S` `@j` `@s`
//! `@F` `@T` `@z` `@Z` `@a` `@b` `@c` `@y` ... and mosquitto_sub's `@N`
//! (nanoseconds); `@@` is `@`, and a character strftime does not know prints
//! as it is (`@Q`: `%Q`). Times are local, as
//! mosquitto_sub's: in the time zone of the `TZ` environment variable (an
//! IANA name or a POSIX rule), else the system's (`/etc/localtime`), else UTC.
//!
//! Escapes: `\n`, `\t`, `\r`, `\a`, `\e`, `\v`, `\0`, `\\`. An unknown field or
//! escape is refused when the format is parsed, as by mosquitto_sub.

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use fulmar_codec::{MqttString, PayloadFormat, Publish, QoS};
use jiff::tz::TimeZone;

/// A parsed format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Format(Vec<Piece>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    Field {
        field: u8,
        width: usize,
        precision: Option<usize>,
        left: bool,
        zero: bool,
    },
    Time(u8),
}

/// `%J` met a payload that is not JSON: it printed nothing for it.
struct NotJson;

/// How `%j` and `%J` lay out their JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum JsonStyle {
    /// On one line, without spaces (mosquitto_sub's default). `%J`'s
    /// payload too, whatever its own layout.
    #[default]
    Compact,
    /// mosquitto_sub's `--pretty` (cJSON's layout): each member of an
    /// object on its own line, indented by one tab per level, a tab after
    /// its colon; the elements of an array on one line, separated by ", ".
    Pretty,
}

const FIELDS: &[u8] = b"tplqrmxXjJIUCDEFRSPA";

impl Format {
    /// Parses `spec`; an unknown field or escape is an error.
    pub(crate) fn parse(spec: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut text = Vec::new();
        let mut bytes = spec.bytes().peekable();
        while let Some(b) = bytes.next() {
            match b {
                b'\\' => {
                    let escaped = match bytes.next() {
                        Some(b'n') => b'\n',
                        Some(b't') => b'\t',
                        Some(b'r') => b'\r',
                        Some(b'a') => 0x07,
                        Some(b'e') => 0x1b,
                        Some(b'v') => 0x0b,
                        Some(b'0') => 0,
                        Some(b'\\') => b'\\',
                        other => {
                            return Err(format!(
                                "-F: invalid escape \\{}",
                                other.map_or(String::new(), |c| char::from(c).to_string())
                            ));
                        }
                    };
                    text.push(escaped);
                }
                // As mosquitto_sub: any character after '@' goes to
                // strftime (one it does not know prints as it is).
                b'@' => match bytes.next() {
                    Some(b'@') => text.push(b'@'),
                    Some(t) => {
                        flush(&mut text, &mut pieces);
                        pieces.push(Piece::Time(t));
                    }
                    None => return Err("-F: incomplete time field @".to_owned()),
                },
                b'%' => {
                    let (mut left, mut zero) = (false, false);
                    while let Some(&flag @ (b'-' | b'0')) = bytes.peek() {
                        left |= flag == b'-';
                        zero |= flag == b'0';
                        bytes.next();
                    }
                    let mut width = 0usize;
                    while let Some(&d @ b'0'..=b'9') = bytes.peek() {
                        width = width
                            .saturating_mul(10)
                            .saturating_add(usize::from(d - b'0'));
                        bytes.next();
                    }
                    let mut precision = None;
                    if bytes.peek() == Some(&b'.') {
                        bytes.next();
                        let mut p = 0usize;
                        while let Some(&d @ b'0'..=b'9') = bytes.peek() {
                            p = p.saturating_mul(10).saturating_add(usize::from(d - b'0'));
                            bytes.next();
                        }
                        precision = Some(p);
                    }
                    match bytes.next() {
                        Some(b'%') => text.push(b'%'),
                        Some(field) if FIELDS.contains(&field) => {
                            flush(&mut text, &mut pieces);
                            pieces.push(Piece::Field {
                                field,
                                width: width.min(4096),
                                precision,
                                left,
                                zero,
                            });
                        }
                        other => {
                            return Err(format!(
                                "-F: invalid format specifier %{}",
                                other.map_or(String::new(), |c| char::from(c).to_string())
                            ));
                        }
                    }
                }
                other => text.push(other),
            }
        }
        flush(&mut text, &mut pieces);
        Ok(Self(pieces))
    }

    /// Writes `publish`, received at `at`, as the format says. Returns
    /// false when `%J` found a payload that is not JSON (mosquitto_sub then
    /// prints nothing for the field, says so on stderr, and goes on).
    ///
    /// Widths and precisions act as mosquitto_sub's (see [`pad_field`]);
    /// for `%p` the width also cuts (bytes), for `%x`/`%X` it cuts to half
    /// as many bytes. `style` lays out `%j` and `%J`.
    pub(crate) fn write(
        &self,
        out: &mut impl Write,
        publish: &Publish,
        at: SystemTime,
        style: JsonStyle,
    ) -> io::Result<bool> {
        self.write_in(out, publish, at, style, &TimeZone::system())
    }

    /// [`write`](Self::write), with times in `zone`.
    fn write_in(
        &self,
        out: &mut impl Write,
        publish: &Publish,
        at: SystemTime,
        style: JsonStyle,
        zone: &TimeZone,
    ) -> io::Result<bool> {
        let mut line = Vec::new();
        let time = Time::new(at, zone);
        let mut json = true;
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => line.extend_from_slice(text),
                Piece::Time(t) => time.strftime(*t, &mut line),
                Piece::Field {
                    field,
                    width,
                    precision,
                    left,
                    zero,
                } => {
                    let value = match field_value(*field, publish, &time, *width, style) {
                        Ok(value) => value,
                        Err(NotJson) => {
                            json = false;
                            Some(Vec::new())
                        }
                    };
                    pad_field(&mut line, *field, value, *width, *precision, *left, *zero);
                }
            }
        }
        out.write_all(&line)?;
        Ok(json)
    }
}

/// Appends a field's `value` (`None`: a property the message does not
/// have) with its width, precision and flags, as mosquitto_sub 2.0 does:
/// the width pads `%A %C %E %F %I %l %m %p %R %S %t %x %X` (and cuts `%p`,
/// `%x`, `%X`: see [`field_value`]), the precision cuts `%t %C %R %I`, and
/// `0` pads with zeros `%A %E %F %l %m %p %S %x %X` (not when left aligned).
/// A property that is absent is the width in blanks (zeros for `%A %E %F
/// %S` with `0`, even left aligned), except `%R`, which is nothing. `%D %P
/// %q %r %U %j %J` take neither width nor precision.
fn pad_field(
    line: &mut Vec<u8>,
    field: u8,
    value: Option<Vec<u8>>,
    width: usize,
    precision: Option<usize>,
    left: bool,
    zero: bool,
) {
    let numeric = matches!(field, b'A' | b'E' | b'F' | b'S');
    let Some(mut value) = value else {
        let fill = if zero && numeric { b'0' } else { b' ' };
        if field != b'R' && (numeric || field == b'C') {
            line.resize(line.len() + width, fill);
        }
        return;
    };
    let width = match field {
        b'D' | b'P' | b'q' | b'r' | b'U' | b'j' | b'J' => 0,
        _ => width,
    };
    if let (Some(p), b't' | b'C' | b'R' | b'I') = (precision, field) {
        value.truncate(p);
    }
    let zero_pads = numeric || matches!(field, b'l' | b'm' | b'p' | b'x' | b'X');
    let pad = width.saturating_sub(value.len());
    let fill = if zero && zero_pads { b'0' } else { b' ' };
    if !left {
        line.resize(line.len() + pad, fill);
    }
    line.extend_from_slice(&value);
    if left {
        line.resize(line.len() + pad, b' ');
    }
}

fn flush(text: &mut Vec<u8>, pieces: &mut Vec<Piece>) {
    if !text.is_empty() {
        pieces.push(Piece::Text(std::mem::take(text)));
    }
}

/// A field's text, `None` for a property the message does not have;
/// `width` cuts `%p` (bytes) and `%x`/`%X` (half as many bytes), `style`
/// lays out `%j` and `%J`.
///
/// mosquitto_sub cuts `%x`/`%X` to half the width also when the payload is
/// shorter than the width (`%20x` prints 1 byte of a 2-byte payload): not
/// done here, a payload that fits is printed whole.
fn field_value(
    field: u8,
    publish: &Publish,
    time: &Time,
    width: usize,
    style: JsonStyle,
) -> Result<Option<Vec<u8>>, NotJson> {
    let payload = match (field, width) {
        (b'p', 1..) => publish.payload.get(..width).unwrap_or(&publish.payload),
        (b'x' | b'X', 1..) => publish.payload.get(..width / 2).unwrap_or(&publish.payload),
        _ => &publish.payload[..],
    };
    let props = &publish.properties;
    let number = |n: u64| n.to_string().into_bytes();
    let text = |s: &MqttString| s.as_bytes().to_vec();
    Ok(match field {
        b't' => Some(publish.topic.as_bytes().to_vec()),
        b'p' => Some(payload.to_vec()),
        b'l' => Some(number(publish.payload.len() as u64)),
        b'q' => Some(number(u64::from(u8::from(publish.qos)))),
        b'r' => Some(number(u64::from(publish.retain))),
        b'm' => Some(number(
            publish.packet_id.map_or(0, |id| u64::from(id.get())),
        )),
        b'x' => Some(hex(payload, b"0123456789abcdef")),
        b'X' => Some(hex(payload, b"0123456789ABCDEF")),
        b'I' => Some(time.iso(false).into_bytes()),
        b'U' => Some(format!("{}.{:09}", time.secs, time.nanos).into_bytes()),
        b'j' | b'J' => Some(json(publish, time, field == b'J', style)?),
        b'C' => props.content_type.as_ref().map(text),
        b'D' => props.correlation_data.as_ref().map(|d| d.to_vec()),
        b'E' => props.message_expiry_interval.map(|e| number(u64::from(e))),
        b'F' => props
            .payload_format_indicator
            .map(|f| number(u64::from(f == PayloadFormat::Utf8))),
        b'R' => props.response_topic.as_ref().map(text),
        // The first, as mosquitto_sub (a message matching several
        // subscriptions may carry several).
        b'S' => props
            .subscription_identifiers
            .first()
            .map(|id| id.to_string().into_bytes()),
        b'P' => Some(
            props
                .user_properties
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect::<Vec<_>>()
                .join(" ")
                .into_bytes(),
        ),
        b'A' => props.topic_alias.map(|a| number(u64::from(a.get()))),
        _ => None,
    })
}

fn hex(bytes: &[u8], digits: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(digits[usize::from(b >> 4)]);
        out.push(digits[usize::from(b & 0x0f)]);
    }
    out
}

/// `%j` / `%J`: the fields mosquitto_sub prints, in its order (`%J`: the
/// payload as JSON, once checked to be JSON), laid out as `style` says.
fn json(
    publish: &Publish,
    time: &Time,
    parse_payload: bool,
    style: JsonStyle,
) -> Result<Vec<u8>, NotJson> {
    let mut out = JsonObject::default();
    let props = &publish.properties;
    out.string("tst", time.iso(true).as_bytes());
    out.string("topic", publish.topic.as_bytes());
    out.raw("qos", u8::from(publish.qos).to_string().as_bytes());
    out.raw("retain", u8::from(publish.retain).to_string().as_bytes());
    out.raw("payloadlen", publish.payload.len().to_string().as_bytes());
    if publish.qos != QoS::AtMostOnce {
        let mid = publish.packet_id.map_or(0, |id| id.get());
        out.raw("mid", mid.to_string().as_bytes());
    }
    let mut properties = JsonObject::default();
    if let Some(c) = &props.content_type {
        properties.string("content-type", c.as_bytes());
    }
    if let Some(d) = &props.correlation_data {
        properties.string("correlation-data", d);
    }
    if let Some(f) = props.payload_format_indicator {
        let utf8 = u8::from(f == PayloadFormat::Utf8);
        properties.raw("payload-format-indicator", utf8.to_string().as_bytes());
    }
    if let Some(r) = &props.response_topic {
        properties.string("response-topic", r.as_bytes());
    }
    // A number, as mosquitto_sub prints it (cJSON: one member for each, when
    // a message carries several).
    for id in &props.subscription_identifiers {
        properties.raw("subscription-identifier", id.to_string().as_bytes());
    }
    if !props.user_properties.is_empty() {
        let mut users = JsonObject::default();
        for (k, v) in &props.user_properties {
            users.string(k, v.as_bytes());
        }
        properties.raw("user-properties", &users.finish());
    }
    if let Some(e) = props.message_expiry_interval {
        properties.raw("message-expiry-interval", e.to_string().as_bytes());
    }
    if !properties.is_empty() {
        out.raw("properties", &properties.finish());
    }
    if publish.payload.is_empty() {
        out.raw("payload", b"null");
    } else if parse_payload {
        serde_json::from_slice::<serde::de::IgnoredAny>(&publish.payload).map_err(|_| NotJson)?;
        out.raw("payload", publish.payload.trim_ascii());
    } else {
        out.string("payload", &publish.payload);
    }
    let object = out.finish();
    // Written compact above; `%J`'s payload has the layout it came with.
    Ok(if parse_payload || style == JsonStyle::Pretty {
        layout(&object, style)
    } else {
        object
    })
}

/// `json` (valid JSON) laid out again as `style` says: whitespace between
/// tokens dropped, then added as mosquitto_sub adds it. Strings are written
/// again as [`quoted`] writes them (as cJSON does: `"\u00e9"` becomes `"é"`),
/// numbers and literals as they are (cJSON writes numbers again from their
/// value: `2.50` as `2.5`).
fn layout(json: &[u8], style: JsonStyle) -> Vec<u8> {
    let pretty = style == JsonStyle::Pretty;
    let mut out = Vec::with_capacity(json.len() * 2);
    // The containers open around the current token: true for an object.
    let mut open: Vec<bool> = Vec::new();
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        out.resize(out.len() + depth, b'\t');
    };
    let mut i = 0;
    while let Some(&b) = json.get(i) {
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'{' | b'[' => {
                let object = b == b'{';
                let close = if object { b'}' } else { b']' };
                out.push(b);
                let next = i + 1 + json.get(i + 1..).map_or(0, leading_whitespace);
                if json.get(next) == Some(&close) {
                    // cJSON prints an empty object on two lines, an empty
                    // array as `[]`.
                    if pretty && object {
                        newline(&mut out, open.len());
                    }
                    out.push(close);
                    i = next + 1;
                } else {
                    open.push(object);
                    if pretty && object {
                        newline(&mut out, open.len());
                    }
                    i += 1;
                }
            }
            b'}' | b']' => {
                let object = open.pop().unwrap_or(b == b'}');
                if pretty && object {
                    newline(&mut out, open.len());
                }
                out.push(b);
                i += 1;
            }
            b',' => {
                out.push(b);
                if pretty {
                    if open.last() == Some(&true) {
                        newline(&mut out, open.len());
                    } else {
                        out.push(b' ');
                    }
                }
                i += 1;
            }
            b':' => {
                out.push(b);
                if pretty {
                    out.push(b'\t');
                }
                i += 1;
            }
            b'"' => {
                let end = string_end(json, i);
                let token = json.get(i..end).unwrap_or_default();
                match serde_json::from_slice::<String>(token) {
                    Ok(text) => out.extend_from_slice(quoted(text.as_bytes()).as_bytes()),
                    Err(_) => out.extend_from_slice(token),
                }
                i = end;
            }
            _ => {
                // A number, true, false or null: up to the next delimiter.
                let rest = json.get(i..).unwrap_or_default();
                let len = rest
                    .iter()
                    .position(|c| {
                        matches!(c, b',' | b']' | b'}' | b':' | b' ' | b'\t' | b'\n' | b'\r')
                    })
                    .unwrap_or(rest.len())
                    .max(1);
                out.extend_from_slice(rest.get(..len).unwrap_or(rest));
                i += len;
            }
        }
    }
    out
}

/// How many bytes of JSON whitespace `json` starts with.
fn leading_whitespace(json: &[u8]) -> usize {
    json.iter()
        .take_while(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        .count()
}

/// The index just after the string that starts (with its quote) at `start`.
fn string_end(json: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while let Some(&b) = json.get(i) {
        match b {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    json.len()
}

/// A JSON object written in the order its members are added.
#[derive(Default)]
struct JsonObject(Vec<u8>);

impl JsonObject {
    fn key(&mut self, key: &str) {
        self.0.push(if self.0.is_empty() { b'{' } else { b',' });
        self.0.extend_from_slice(quoted(key.as_bytes()).as_bytes());
        self.0.push(b':');
    }

    fn raw(&mut self, key: &str, value: &[u8]) {
        self.key(key);
        self.0.extend_from_slice(value);
    }

    /// A string member; bytes that are not UTF-8 become U+FFFD.
    fn string(&mut self, key: &str, value: &[u8]) {
        self.key(key);
        self.0.extend_from_slice(quoted(value).as_bytes());
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn finish(mut self) -> Vec<u8> {
        if self.0.is_empty() {
            self.0.push(b'{');
        }
        self.0.push(b'}');
        self.0
    }
}

fn quoted(text: &[u8]) -> String {
    serde_json::to_string(&String::from_utf8_lossy(text)).unwrap_or_else(|_| "\"\"".to_owned())
}

/// A time received, and the local time zone's offset from UTC then.
struct Time {
    secs: u64,
    nanos: u32,
    /// Seconds east of UTC.
    offset: i32,
    /// The zone's abbreviation then (`CET`, `CEST`, `UTC`).
    zone: String,
    /// The same instant in the zone, for `@` fields (`None` out of jiff's
    /// range).
    zoned: Option<jiff::Zoned>,
}

impl Time {
    fn new(at: SystemTime, zone: &TimeZone) -> Self {
        let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (offset, name) = i64::try_from(secs)
            .ok()
            .and_then(|secs| jiff::Timestamp::from_second(secs).ok())
            .map_or((0, "UTC".to_owned()), |at| {
                let info = zone.to_offset_info(at);
                (info.offset().seconds(), info.abbreviation().to_owned())
            });
        let nanos = since.subsec_nanos();
        let zoned = i64::try_from(secs)
            .ok()
            .zip(i32::try_from(nanos).ok())
            .and_then(|(secs, nanos)| jiff::Timestamp::new(secs, nanos).ok())
            .map(|at| at.to_zoned(zone.clone()));
        Self {
            secs,
            nanos,
            offset,
            zone: name,
            zoned,
        }
    }

    /// The offset as `+HHMM` / `-HHMM`.
    fn offset_text(&self) -> String {
        let sign = if self.offset < 0 { '-' } else { '+' };
        let minutes = self.offset.unsigned_abs() / 60;
        format!("{sign}{:02}{:02}", minutes / 60, minutes % 60)
    }

    /// Local year, month, day, hour, minute, second, day of the year.
    fn civil(&self) -> (i64, u32, u32, u32, u32, u32, u32) {
        let local = i64::try_from(self.secs)
            .unwrap_or(i64::MAX)
            .saturating_add(i64::from(self.offset));
        let days = local.div_euclid(86_400);
        let rem = u64::try_from(local.rem_euclid(86_400)).unwrap_or(0);
        // Howard Hinnant's days-to-civil.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        const BEFORE: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
        let month = u32::try_from(month).unwrap_or(1);
        let day = u32::try_from(day).unwrap_or(1);
        let before = BEFORE
            .get(usize::try_from(month - 1).unwrap_or(0))
            .copied()
            .unwrap_or(0);
        let yday = before + day + u32::from(leap && month > 2);
        let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
        let small = |n: u64| u32::try_from(n).unwrap_or(0);
        (year, month, day, small(h), small(m), small(s), yday)
    }

    /// `2026-12-05T16:32:31+0100`; with `micros`, as `%j`'s `tst`:
    /// `2026-12-05T16:32:31.262046Z+0100` (mosquitto_sub's layout).
    fn iso(&self, micros: bool) -> String {
        let (y, mo, d, h, mi, s, _) = self.civil();
        let z = self.offset_text();
        if micros {
            let us = self.nanos / 1000;
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}Z{z}")
        } else {
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{z}")
        }
    }

    /// `@field`, as mosquitto_sub prints it: strftime's `%field` in the C
    /// locale (glibc's conversions), `@N` the nanoseconds; a character
    /// strftime does not know prints as `%` and itself, as glibc leaves it.
    fn strftime(&self, field: u8, out: &mut Vec<u8>) {
        /// glibc's one-character conversions.
        const STRFTIME: &[u8] = b"aAbBcCdDeFgGhHIjklmMnpPrRsStTuUVwWxXyYzZ%";
        match field {
            b'N' => out.extend_from_slice(format!("{:09}", self.nanos).as_bytes()),
            b'Y' | b'm' | b'd' | b'H' | b'M' | b'S' | b'j' | b's' | b'F' | b'T' | b'z' | b'Z' => {
                let (y, mo, d, h, mi, s, yday) = self.civil();
                let text = match field {
                    b'Y' => format!("{y:04}"),
                    b'm' => format!("{mo:02}"),
                    b'd' => format!("{d:02}"),
                    b'H' => format!("{h:02}"),
                    b'M' => format!("{mi:02}"),
                    b'S' => format!("{s:02}"),
                    b'j' => format!("{yday:03}"),
                    b's' => self.secs.to_string(),
                    b'F' => format!("{y:04}-{mo:02}-{d:02}"),
                    b'T' => format!("{h:02}:{mi:02}:{s:02}"),
                    b'z' => self.offset_text(),
                    _ => self.zone.clone(),
                };
                out.extend_from_slice(text.as_bytes());
            }
            _ if STRFTIME.contains(&field) => {
                use jiff::fmt::strtime::{BrokenDownTime, Config, PosixCustom};
                let Some(zoned) = &self.zoned else {
                    return;
                };
                let config = Config::new().custom(PosixCustom::new());
                let mut text = String::new();
                if BrokenDownTime::from(zoned)
                    .format_with_config(&config, [b'%', field], &mut text)
                    .is_ok()
                {
                    out.extend_from_slice(text.as_bytes());
                }
            }
            _ => out.extend_from_slice(&[b'%', field]),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use fulmar_codec::{MqttString, PacketId};

    use super::*;

    fn message() -> Publish {
        let mut p = Publish::new(MqttString::from("f/y"), Bytes::from("hé \"x\""));
        p.qos = QoS::AtLeastOnce;
        p.packet_id = PacketId::new(7);
        p.retain = true;
        let props = &mut p.properties;
        props.content_type = Some(MqttString::from("text/plain"));
        props.correlation_data = Some(Bytes::from_static(b"abc"));
        props.message_expiry_interval = Some(60);
        props.payload_format_indicator = Some(PayloadFormat::Utf8);
        props.response_topic = Some(MqttString::from("rt"));
        props
            .user_properties
            .push((MqttString::from("k"), MqttString::from("v")));
        props
            .user_properties
            .push((MqttString::from("k2"), MqttString::from("v2")));
        p
    }

    // 2026-12-05T15:32:31.262046774Z
    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::new(1_796_484_751, 262_046_774)
    }

    fn render(spec: &str, publish: &Publish) -> String {
        render_as(spec, publish, JsonStyle::Compact)
    }

    fn render_as(spec: &str, publish: &Publish, style: JsonStyle) -> String {
        let mut out = Vec::new();
        assert!(
            Format::parse(spec)
                .unwrap()
                .write_in(&mut out, publish, at(), style, &TimeZone::UTC)
                .unwrap()
        );
        String::from_utf8(out).unwrap()
    }

    // The same fields as mosquitto_sub 2.0 printed for the same message.
    #[test]
    fn fields_print_as_mosquitto_sub_prints_them() {
        assert_eq!(
            render(
                "%t|%p|%l|%q|%r|%m|%x|%X|%C|%D|%E|%F|%R|%S|%P|%A|%%|\\t|\\\\|",
                &message()
            ),
            "f/y|hé \"x\"|7|1|1|7|68c3a920227822|68C3A920227822|text/plain|abc|60|1|rt||k:v k2:v2||%|\t|\\|"
        );
        let plain = Publish::new(MqttString::from("r/x"), Bytes::from("retained"));
        assert_eq!(
            render("%t|%p|%l|%q|%r|%m|%x|%C|%E|%P|", &plain),
            "r/x|retained|8|0|0|0|72657461696e6564||||"
        );
        assert_eq!(
            render("%10t|%-10t|%03l|", &plain),
            "       r/x|r/x       |008|"
        );
        assert_eq!(
            render("%I %U @H:@M @F @T @j @s @@", &plain),
            "2026-12-05T15:32:31+0000 1796484751.262046774 15:32 2026-12-05 15:32:31 339 1796484751 @"
        );
    }

    #[test]
    fn json_has_mosquitto_subs_fields_in_its_order() {
        let mut plain = Publish::new(MqttString::from("f/z"), Bytes::from("{\"a\":1}"));
        assert_eq!(
            render("%j", &plain),
            r#"{"tst":"2026-12-05T15:32:31.262046Z+0000","topic":"f/z","qos":0,"retain":0,"payloadlen":7,"payload":"{\"a\":1}"}"#
        );
        assert_eq!(
            render("%J", &plain),
            r#"{"tst":"2026-12-05T15:32:31.262046Z+0000","topic":"f/z","qos":0,"retain":0,"payloadlen":7,"payload":{"a":1}}"#
        );
        plain.payload = Bytes::new();
        assert!(render("%j", &plain).ends_with(r#""payloadlen":0,"payload":null}"#));
        let with_props = render("%j", &message());
        assert!(
            with_props.contains(
                r#""properties":{"content-type":"text/plain","correlation-data":"abc","payload-format-indicator":1,"response-topic":"rt","user-properties":{"k":"v","k2":"v2"},"message-expiry-interval":60}"#
            ),
            "{with_props}"
        );
        // %J and a payload that is not JSON: the field is empty, the rest
        // printed, and the caller told (as mosquitto_sub).
        let mut out = Vec::new();
        let json = Format::parse("X %J Y")
            .unwrap()
            .write(&mut out, &message(), at(), JsonStyle::Compact)
            .unwrap();
        assert!(!json);
        assert_eq!(out, b"X  Y");
    }

    // --pretty: what mosquitto_sub 2.0.11 printed for the same message with
    // `-F %j --pretty` and `-F %J --pretty`, and with `-F %J` (one line: the
    // payload is laid out again too, it kept its own spaces and newlines).
    #[test]
    fn pretty_json_as_mosquitto_sub_prints_it() {
        let mut p = Publish::new(
            MqttString::from("t/x"),
            Bytes::from("{\"a\": [1, 2, {\"b\": null}],\n \"c\": \"d\", \"e\": {}, \"f\": []}"),
        );
        p.properties.content_type = Some(MqttString::from("text/plain"));
        p.properties
            .user_properties
            .push((MqttString::from("k"), MqttString::from("v")));
        let head = "{\n\
            \t\"tst\":\t\"2026-12-05T15:32:31.262046Z+0000\",\n\
            \t\"topic\":\t\"t/x\",\n\
            \t\"qos\":\t0,\n\
            \t\"retain\":\t0,\n\
            \t\"payloadlen\":\t55,\n\
            \t\"properties\":\t{\n\
            \t\t\"content-type\":\t\"text/plain\",\n\
            \t\t\"user-properties\":\t{\n\
            \t\t\t\"k\":\t\"v\"\n\
            \t\t}\n\
            \t},\n";
        assert_eq!(
            render_as("%j", &p, JsonStyle::Pretty),
            format!(
                "{head}\t\"payload\":\t\"{{\\\"a\\\": [1, 2, {{\\\"b\\\": null}}],\\n \\\"c\\\": \
                 \\\"d\\\", \\\"e\\\": {{}}, \\\"f\\\": []}}\"\n}}"
            )
        );
        assert_eq!(
            render_as("X%JY", &p, JsonStyle::Pretty),
            format!(
                "X{head}\t\"payload\":\t{{\n\
                 \t\t\"a\":\t[1, 2, {{\n\
                 \t\t\t\t\"b\":\tnull\n\
                 \t\t\t}}],\n\
                 \t\t\"c\":\t\"d\",\n\
                 \t\t\"e\":\t{{\n\
                 \t\t}},\n\
                 \t\t\"f\":\t[]\n\
                 \t}}\n}}Y"
            )
        );
        assert!(
            render("%J", &p)
                .ends_with(r#","payload":{"a":[1,2,{"b":null}],"c":"d","e":{},"f":[]}}"#),
            "{}",
            render("%J", &p)
        );
        // Strings are written again as cJSON writes them: escapes decoded
        // where they need none.
        p.payload = Bytes::from(r#" ["\u00e9\/", "tab\t", "\u0001"] "#);
        assert!(render("%J", &p).ends_with(r#""payload":["é/","tab\t","\u0001"]}"#));
        assert!(
            render_as("%J", &p, JsonStyle::Pretty)
                .ends_with("\t\"payload\":\t[\"é/\", \"tab\\t\", \"\\u0001\"]\n}")
        );
        // An empty payload is null, pretty or not.
        p.payload = Bytes::new();
        assert!(render_as("%J", &p, JsonStyle::Pretty).ends_with("\t\"payload\":\tnull\n}"));
    }

    // Widths and precisions, as mosquitto_sub 2.0.11 printed them for the
    // same message.
    #[test]
    fn widths_and_precisions_as_mosquitto_sub() {
        let mut p = Publish::new(MqttString::from("w/long-topic"), Bytes::from("hello world"));
        p.retain = true;
        assert_eq!(
            render("%5l|%-5l|%05l|%5q|%05m|%5r|%3E", &p),
            "   11|11   |00011|0|00000|1|   "
        );
        assert_eq!(
            render("%5p|%.3p|%5x|%.3x|%5X", &p),
            "hello|hello world| 6865|68656c6c6f20776f726c64| 6865"
        );
        assert_eq!(
            render("%10.3t|%-10.3t|%010t|%.2t|%3C|%5.2l", &p),
            "       w/l|w/l       |w/long-topic|w/|   |   11"
        );
    }

    // Found by a CLI comparison: `@N` (mosquitto_sub's nanoseconds) and
    // strftime's other conversions (`@a`, `@b`, `@y`, `@c`, ...) were refused.
    // What glibc's strftime (`date +FORMAT`, C locale) prints for the same
    // instant; a character it does not know is printed as it is.
    #[test]
    fn time_fields_are_strftimes() {
        let plain = Publish::new(MqttString::from("r/x"), Bytes::from("x"));
        assert_eq!(
            render(
                "@a|@A|@b|@B|@c|@C|@d|@D|@e|@F|@g|@G|@h|@H|@I|@j|@k|@l|@m|@M|@n|@p|@P|@r|@R|@s|@S|@t|@T",
                &plain
            ),
            "Sat|Saturday|Dec|December|Sat Dec  5 15:32:31 2026|20|05|12/05/26| 5|2026-12-05|26|2026|\
             Dec|15|03|339|15| 3|12|32|\n|PM|pm|03:32:31 PM|15:32|1796484751|31|\t|15:32:31"
        );
        assert_eq!(
            render("@u|@U|@V|@w|@W|@x|@X|@y|@Y|@z|@Z|@%|@N", &plain),
            "6|48|49|6|48|12/05/26|15:32:31|26|2026|+0000|UTC|%|262046774"
        );
        assert_eq!(
            render("@Q|@E|@+|@1|@f|@ |@-", &plain),
            "%Q|%E|%+|%1|%f|% |%-"
        );
    }

    // Found by a CLI comparison with mosquitto_sub 2.0.11: `0` pads `%x`, `%X`,
    // `%p` and `%S` with zeros too; `%D` and `%P` take no width, `%I` takes
    // a width and a precision; an absent `%R` prints nothing, an absent `%S`
    // the width in zeros with `0`; `%S` is the first identifier.
    #[test]
    fn flags_apply_to_the_fields_mosquitto_sub_applies_them_to() {
        let mut p = Publish::new(MqttString::from("f"), Bytes::from("hi"));
        assert_eq!(
            render("%08x|%08X|%08p|%-08p|%05S|%5S|%-05E|%5R|%05R|", &p),
            "00006869|00006869|000000hi|hi      |00000|     |00000|||"
        );
        // One JSON member for each Subscription Identifier, a number.
        p.properties.subscription_identifiers = vec![std::num::NonZeroU32::MIN];
        assert!(
            render("%j", &p).contains(r#""properties":{"subscription-identifier":1},"#),
            "{}",
            render("%j", &p)
        );
        assert_eq!(
            render("%5.3I|%.5I|%-26I|", &p),
            "  202|2026-|2026-12-05T15:32:31+0000  |"
        );
        p.properties.correlation_data = Some(Bytes::from_static(b"cd"));
        p.properties
            .user_properties
            .push((MqttString::from("k"), MqttString::from("v")));
        p.properties.response_topic = Some(MqttString::from("reply"));
        p.properties.subscription_identifiers =
            vec![std::num::NonZeroU32::MIN, std::num::NonZeroU32::MAX];
        assert_eq!(
            render("%5D|%.1D|%6P|%.1P|%7R|%.2R|%-7R|%S|%03S", &p),
            "cd|cd|k:v|k:v|  reply|re|reply  |1|001"
        );
    }

    #[test]
    fn unknown_fields_and_escapes_are_refused() {
        for bad in ["%z", "%", "@", "\\q", "\\", "%5"] {
            assert!(Format::parse(bad).is_err(), "{bad}");
        }
    }

    // Local time as mosquitto_sub prints it: the zone's offset and
    // abbreviation at that instant (daylight saving time included), also
    // west of UTC across midnight.
    #[test]
    fn times_are_local() {
        let cet = TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        let est = TimeZone::posix("EST5EDT,M3.2.0,M11.1.0").unwrap();
        let show = |at: SystemTime, zone: &TimeZone| {
            let mut out = Vec::new();
            Format::parse("%I @Z @z @H @s")
                .unwrap()
                .write_in(&mut out, &message(), at, JsonStyle::Compact, zone)
                .unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            show(at(), &cet),
            "2026-12-05T16:32:31+0100 CET +0100 16 1796484751"
        );
        let july = UNIX_EPOCH + Duration::from_secs(1_783_000_000);
        assert_eq!(
            show(july, &cet),
            "2026-07-02T15:46:40+0200 CEST +0200 15 1783000000"
        );
        let night = UNIX_EPOCH + Duration::from_secs(1_796_443_200); // 04:00 UTC
        assert_eq!(
            show(night, &est),
            "2026-12-04T23:00:00-0500 EST -0500 23 1796443200"
        );
    }

    #[test]
    fn dates_are_civil() {
        let day = |secs: u64| {
            let t = Time::new(UNIX_EPOCH + Duration::from_secs(secs), &TimeZone::UTC);
            let (y, m, d, ..) = t.civil();
            (y, m, d, t.civil().6)
        };
        assert_eq!(day(0), (1970, 1, 1, 1));
        assert_eq!(day(951_782_400), (2000, 2, 29, 60));
        assert_eq!(day(1_709_251_199), (2024, 2, 29, 60));
        assert_eq!(day(1_735_603_200), (2024, 12, 31, 366));
    }
}
