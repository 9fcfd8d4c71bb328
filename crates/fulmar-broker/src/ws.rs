//! WebSocket listeners (feature `websocket`): MQTT in binary frames,
//! subprotocol `mqtt` (MQTT 5.0 section 6), presented to the connection task
//! as a byte stream.
//!
//! tungstenite runs the HTTP upgrade handshake only; the frames that follow
//! are read and written here (RFC 6455 section 5), so that a connection
//! holds no buffer of its own beyond a few hundred bytes inline: binary
//! payload bytes are unmasked in place in the connection's read buffer as
//! they arrive (a frame header reserves nothing, whatever length it
//! announces), and written frames carry the connection's bytes straight from
//! its write buffer. What the connection buffers, and what it sets aside for
//! a large packet (`Limits::max_read_ahead_bytes`), is then the same as over
//! TCP: an idle WebSocket connection keeps no large buffer either.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::Error;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A WebSocket frame or message over the listener's limit (twice the
/// Maximum Packet Size): it holds a packet over the maximum, or more packets
/// at once than the broker buffers. Carried in the read's `io::Error`, so
/// that the connection answers it as a packet too large (MQTT 5.0: DISCONNECT
/// 0x95) instead of just closing.
#[derive(Debug, thiserror::Error)]
#[error("WebSocket message of {size} bytes over the limit of {max}")]
pub(crate) struct MessageTooLarge {
    pub(crate) size: usize,
    pub(crate) max: usize,
}

/// The most payload bytes one outbound binary frame carries; a longer write
/// goes out in several frames (MQTT 5.0 section 6: packets need not be
/// aligned on frame boundaries).
const MAX_OUT_FRAME: usize = 64 * 1024;

/// The most bytes one read asks the socket for (the caller's buffer is
/// initialized up to this much per read, not all of its room).
const READ_CHUNK: usize = 16 * 1024;

/// Reads of control frames only (pings, say) before the task yields.
const CONTROL_ONLY_READS: usize = 16;

/// The most payload bytes of a control frame (RFC 6455 5.5).
const MAX_CONTROL: usize = 125;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;

/// Close status codes (RFC 6455 7.4.1).
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_PROTOCOL_ERROR: u16 = 1002;
const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
const CLOSE_TOO_BIG: u16 = 1009;

const PROTOCOL: &str = "Sec-WebSocket-Protocol";

/// The MQTT subprotocol to select from what the handshake request offers:
/// `mqtt` [MQTT-6.0.0-4], else `mqttv3.1` (what MQTT 3.1 clients such as
/// older Paho JavaScript offer, and mosquitto takes). `None`: it offers
/// none; `Some(None)`: only others.
fn offered_mqtt(request: &Request) -> Option<Option<&'static str>> {
    let mut offered = request
        .headers()
        .get_all(PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .peekable();
    offered.peek()?;
    let offered: Vec<&str> = offered.collect();
    Some(
        ["mqtt", "mqttv3.1"]
            .into_iter()
            .find(|ours| offered.iter().any(|p| p.eq_ignore_ascii_case(ours))),
    )
}

fn refuse(status: StatusCode) -> ErrorResponse {
    let mut response = ErrorResponse::new(None);
    *response.status_mut() = status;
    response
}

/// Runs the server side of the WebSocket handshake: the request must be for
/// `path` (any path when it is `*`); when it offers subprotocols, one must
/// be `mqtt` ([MQTT-6.0.0-3]), which is selected ([MQTT-6.0.0-4]), or 3.1's
/// `mqttv3.1`. A frame or message may be at most `max_message` bytes.
pub(crate) async fn accept<S>(stream: S, path: &str, max_message: usize) -> Result<WsIo<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The callback's signature is tungstenite's, large error response included.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, mut response: Response| {
        if path != "*" && request.uri().path() != path {
            return Err(refuse(StatusCode::NOT_FOUND));
        }
        match offered_mqtt(request) {
            Some(Some(protocol)) => {
                response
                    .headers_mut()
                    .insert(PROTOCOL, HeaderValue::from_static(protocol));
                Ok(response)
            }
            Some(None) => Err(refuse(StatusCode::BAD_REQUEST)),
            None => Ok(response),
        }
    };
    // tungstenite's buffers live only until the handshake is done: small.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(4096);
    let stream = UntilRequestEnd {
        io: stream,
        tail: Vec::new(),
        scan: LineScan::default(),
    };
    let ws =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await?;
    let UntilRequestEnd { io, tail, .. } = ws.into_inner();
    Ok(WsIo {
        io,
        early: tail,
        inbound: Inbound::new(max_message),
        outbound: Outbound::default(),
        eof: false,
    })
}

/// Where the scan for the empty line that ends an HTTP request stands.
#[derive(Default, Clone, Copy)]
enum LineScan {
    /// Within a line.
    #[default]
    Text,
    /// Just after a line feed.
    LineFeed,
    /// After a line feed and a carriage return.
    LineFeedReturn,
}

impl LineScan {
    /// How many of `bytes` belong to the request: up to and including the
    /// line feed of the empty line that ends it (`\r\n\r\n`, or the bare
    /// line feeds the HTTP parser takes too), else all of them.
    fn request_bytes(&mut self, bytes: &[u8]) -> usize {
        for (i, &byte) in bytes.iter().enumerate() {
            *self = match (*self, byte) {
                (Self::LineFeed | Self::LineFeedReturn, b'\n') => {
                    *self = Self::Text;
                    return i + 1;
                }
                (_, b'\n') => Self::LineFeed,
                (Self::LineFeed, b'\r') => Self::LineFeedReturn,
                _ => Self::Text,
            };
        }
        bytes.len()
    }
}

/// The stream as tungstenite's handshake reads it: its reads stop at the
/// end of the HTTP request, so that the frames a client sends right after it
/// stay here (in `tail`) for [`WsIo`] instead of in tungstenite's buffer.
struct UntilRequestEnd<S> {
    io: S,
    /// Bytes read past the end of the request.
    tail: Vec<u8>,
    scan: LineScan,
}

impl<S: AsyncRead + Unpin> AsyncRead for UntilRequestEnd<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.tail.is_empty() {
            // The parser wants more than the request as scanned: go on.
            let n = this.scan.request_bytes(&this.tail).min(buf.remaining());
            buf.put_slice(this.tail.get(..n).unwrap_or_default());
            this.tail.drain(..n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        let new = buf.filled().get(before..).unwrap_or_default();
        let n = this.scan.request_bytes(new);
        if let Some(beyond) = new.get(n..)
            && !beyond.is_empty()
        {
            this.tail.extend_from_slice(beyond);
            buf.set_filled(before + n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for UntilRequestEnd<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A WebSocket as a byte stream: reads return the payload bytes of binary
/// frames in order (a packet may span frames, a frame may hold several
/// packets); each write goes out as one binary frame of at most
/// [`MAX_OUT_FRAME`] bytes. Pings are answered with pongs, a close frame
/// with a close frame and the end of the stream.
pub(crate) struct WsIo<S> {
    io: S,
    /// Bytes the client sent right after the handshake request, read with
    /// it: decoded before the socket is read.
    early: Vec<u8>,
    inbound: Inbound,
    outbound: Outbound,
    /// The client sent a close frame: reads return the end of the stream.
    eof: bool,
}

fn invalid(close: &mut Option<u16>, code: u16, message: &'static str) -> io::Error {
    close.get_or_insert(code);
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// The decoding of client frames, in place.
struct Inbound {
    /// The largest frame, and message, taken.
    max_message: usize,
    /// The header being read: its bytes so far.
    header: [u8; 14],
    header_len: usize,
    /// Within a frame's payload (its header read): how much is left.
    remaining: u64,
    mask: [u8; 4],
    /// Offset of the next payload byte in the masking key's cycle.
    mask_at: usize,
    /// The frame's opcode.
    opcode: u8,
    in_payload: bool,
    /// A fragmented binary message is under way (a continuation may come).
    in_message: bool,
    /// Payload bytes of the message so far.
    message_len: usize,
    /// The payload of the control frame being read.
    control: [u8; MAX_CONTROL],
    control_len: usize,
    /// The payload of the latest ping not yet answered.
    ping: Option<([u8; MAX_CONTROL], usize)>,
    /// The client closed (the code to answer with), or the frames broke the
    /// protocol (the code to close with).
    close: Option<u16>,
    /// A close frame came: nothing after it is read.
    closed: bool,
    /// The frames broke the protocol: nothing more is decoded.
    failed: bool,
    /// The error met after payload bytes that the same call returned: for
    /// the next read, once the reader has those bytes.
    error: Option<io::Error>,
}

impl Inbound {
    fn new(max_message: usize) -> Self {
        Self {
            max_message,
            header: [0; 14],
            header_len: 0,
            remaining: 0,
            mask: [0; 4],
            mask_at: 0,
            opcode: 0,
            in_payload: false,
            in_message: false,
            message_len: 0,
            control: [0; MAX_CONTROL],
            control_len: 0,
            ping: None,
            close: None,
            closed: false,
            failed: false,
            error: None,
        }
    }

    /// The length of the header begun in `header` (known from its second byte).
    fn header_size(&self) -> usize {
        match self.header.get(1).map(|b| b & 0x7f) {
            _ if self.header_len < 2 => 2,
            Some(126) => 2 + 2 + 4,
            Some(127) => 2 + 8 + 4,
            _ => 2 + 4,
        }
    }

    /// Decodes the frames in `raw` (bytes as read from the socket): the
    /// payload bytes of binary frames are unmasked and moved to the front
    /// of `raw`; returns how many. Control frames are taken in: the latest
    /// ping is kept to answer, a close frame ends the reading. A frame that
    /// breaks the protocol after payload bytes in the same `raw` does not
    /// throw them away: they are returned, and the error is kept for
    /// [`take_error`](Self::take_error) (the packets they hold were sent
    /// before the bad frame, as over TCP they would be handled).
    fn decode(&mut self, raw: &mut [u8]) -> io::Result<usize> {
        let mut out = 0;
        let decoded = self.decode_frames(raw, &mut out);
        match decoded {
            Ok(()) => Ok(out),
            Err(error) => {
                self.failed = true;
                if out > 0 {
                    self.error = Some(error);
                    Ok(out)
                } else {
                    Err(error)
                }
            }
        }
    }

    /// The error met after the payload bytes the last decode returned.
    fn take_error(&mut self) -> Option<io::Error> {
        self.error.take()
    }

    fn decode_frames(&mut self, raw: &mut [u8], out: &mut usize) -> io::Result<()> {
        let mut read = 0;
        while read < raw.len() && !self.closed {
            if !self.in_payload {
                let needed = self.header_size();
                let Some(&byte) = raw.get(read) else { break };
                if let Some(slot) = self.header.get_mut(self.header_len) {
                    *slot = byte;
                }
                self.header_len += 1;
                read += 1;
                if self.header_len == 2 {
                    self.check_start()?;
                }
                if self.header_len == needed && needed > 2 {
                    self.start_payload()?;
                }
                continue;
            }
            let available = raw.len() - read;
            let take = usize::try_from(self.remaining)
                .unwrap_or(usize::MAX)
                .min(available);
            if self.opcode == OP_BINARY {
                raw.copy_within(read..read + take, *out);
                if let Some(payload) = raw.get_mut(*out..*out + take) {
                    unmask(payload, self.mask, self.mask_at);
                }
                *out += take;
            } else {
                let at = self.control_len;
                let src = raw.get(read..read + take).unwrap_or_default();
                if let Some(dst) = self.control.get_mut(at..at + take) {
                    dst.copy_from_slice(src);
                    unmask(dst, self.mask, self.mask_at);
                }
                self.control_len += take;
            }
            read += take;
            self.mask_at = (self.mask_at + take) % 4;
            self.remaining -= take as u64;
            if self.remaining == 0 {
                self.end_frame()?;
            }
        }
        Ok(())
    }

    /// Checks the first two bytes of a header.
    fn check_start(&mut self) -> io::Result<()> {
        let [first, second, ..] = self.header;
        let fin = first & 0x80 != 0;
        let opcode = first & 0x0f;
        if first & 0x70 != 0 {
            // No extension was negotiated (RFC 6455 5.2).
            return Err(invalid(
                &mut self.close,
                CLOSE_PROTOCOL_ERROR,
                "WebSocket frame with reserved bits set",
            ));
        }
        if second & 0x80 == 0 {
            // RFC 6455 5.1: a client masks every frame.
            return Err(invalid(
                &mut self.close,
                CLOSE_PROTOCOL_ERROR,
                "unmasked WebSocket frame from a client",
            ));
        }
        match opcode {
            OP_TEXT => {
                // [MQTT-6.0.0-1]: MQTT travels in binary frames only.
                return Err(invalid(
                    &mut self.close,
                    CLOSE_UNSUPPORTED_DATA,
                    "[MQTT-6.0.0-1] text frame on an MQTT WebSocket",
                ));
            }
            OP_BINARY if self.in_message => {
                return Err(invalid(
                    &mut self.close,
                    CLOSE_PROTOCOL_ERROR,
                    "WebSocket binary frame within a fragmented message",
                ));
            }
            OP_CONTINUATION if !self.in_message => {
                return Err(invalid(
                    &mut self.close,
                    CLOSE_PROTOCOL_ERROR,
                    "WebSocket continuation frame without a message",
                ));
            }
            OP_BINARY | OP_CONTINUATION => {}
            OP_CLOSE | OP_PING | OP_PONG => {
                if !fin || usize::from(second & 0x7f) > MAX_CONTROL {
                    return Err(invalid(
                        &mut self.close,
                        CLOSE_PROTOCOL_ERROR,
                        "fragmented or long WebSocket control frame",
                    ));
                }
            }
            _ => {
                return Err(invalid(
                    &mut self.close,
                    CLOSE_PROTOCOL_ERROR,
                    "WebSocket frame with an unknown opcode",
                ));
            }
        }
        Ok(())
    }

    /// The header is complete: takes its length and masking key.
    fn start_payload(&mut self) -> io::Result<()> {
        let [first, second, rest @ ..] = self.header;
        let (length, key_at) = match second & 0x7f {
            126 => {
                let [a, b, ..] = rest;
                (u64::from(u16::from_be_bytes([a, b])), 2)
            }
            127 => {
                let [a, b, c, d, e, f, g, h, ..] = rest;
                (u64::from_be_bytes([a, b, c, d, e, f, g, h]), 8)
            }
            n => (u64::from(n), 0),
        };
        // RFC 6455 5.2: the length in the fewest bytes, a 64-bit one with
        // its most significant bit 0.
        let well_formed = match key_at {
            2 => length >= 126,
            8 => length > 0xffff && length >> 63 == 0,
            _ => true,
        };
        if !well_formed {
            return Err(invalid(
                &mut self.close,
                CLOSE_PROTOCOL_ERROR,
                "WebSocket frame length not in its minimal form, or over 63 bits",
            ));
        }
        if let Some(key) = rest.get(key_at..key_at + 4) {
            self.mask.copy_from_slice(key);
        }
        self.header_len = 0;
        self.mask_at = 0;
        self.remaining = length;
        self.control_len = 0;
        let opcode = first & 0x0f;
        if opcode == OP_BINARY || opcode == OP_CONTINUATION {
            let size = usize::try_from(length).unwrap_or(usize::MAX);
            let message = self.message_len.saturating_add(size);
            if size > self.max_message || message > self.max_message {
                self.close.get_or_insert(CLOSE_TOO_BIG);
                let too_large = MessageTooLarge {
                    size: message,
                    max: self.max_message,
                };
                return Err(io::Error::new(io::ErrorKind::InvalidData, too_large));
            }
            self.message_len = message;
            self.in_message = first & 0x80 == 0;
            if !self.in_message {
                self.message_len = 0;
            }
            // Binary payload goes to the reader, whatever the first frame's opcode.
            self.opcode = OP_BINARY;
        } else {
            self.opcode = opcode;
        }
        self.in_payload = true;
        if length == 0 {
            self.end_frame()?;
        }
        Ok(())
    }

    /// The frame's payload is all read.
    fn end_frame(&mut self) -> io::Result<()> {
        self.in_payload = false;
        let payload = self.control.get(..self.control_len).unwrap_or_default();
        match self.opcode {
            OP_PING => {
                // Only the latest ping need be answered (RFC 6455 5.5.3).
                self.ping = Some((self.control, self.control_len));
            }
            OP_CLOSE => {
                self.closed = true;
                let code = match payload {
                    [] => None,
                    [a, b, reason @ ..] => {
                        let code = u16::from_be_bytes([*a, *b]);
                        let valid = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
                            && std::str::from_utf8(reason).is_ok();
                        Some(if valid { code } else { CLOSE_PROTOCOL_ERROR })
                    }
                    [_] => Some(CLOSE_PROTOCOL_ERROR),
                };
                self.close.get_or_insert(code.unwrap_or(CLOSE_NORMAL));
            }
            _ => {}
        }
        self.control_len = 0;
        Ok(())
    }
}

/// Not public API: the client frame decoder of the WebSocket listeners, for
/// the `ws_frames` fuzz target and the replay of its corpus
/// (`fuzz/src/ws_checks.rs`). `WsIo` reads through the same decoder.
#[doc(hidden)]
pub struct WsFrameDecoder(Inbound);

impl WsFrameDecoder {
    /// A decoder that takes frames and messages of at most `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self(Inbound::new(max_message))
    }

    /// Decodes the bytes `raw` as read from the socket: the payload of
    /// binary frames is unmasked to the front of `raw`; returns its length.
    /// An error met behind payload bytes waits for [`take_error`](Self::take_error).
    ///
    /// # Errors
    /// A frame that breaks RFC 6455 or MQTT 6.0, or is over the limit.
    pub fn decode(&mut self, raw: &mut [u8]) -> io::Result<usize> {
        self.0.decode(raw)
    }

    /// The error met behind the payload the last [`decode`](Self::decode) returned.
    pub fn take_error(&mut self) -> Option<io::Error> {
        self.0.take_error()
    }

    /// Whether `error` is a frame or message over the limit (else a protocol error).
    pub fn is_too_large(error: &io::Error) -> bool {
        error.get_ref().is_some_and(|e| e.is::<MessageTooLarge>())
    }

    /// The close status code to send: the client's, or the error's.
    pub fn close_code(&self) -> Option<u16> {
        self.0.close
    }

    /// Whether a close frame came (nothing after it is decoded).
    pub fn closed(&self) -> bool {
        self.0.closed
    }

    /// The payload of the latest ping, which a pong answers.
    pub fn ping(&self) -> Option<&[u8]> {
        self.0.ping.as_ref().and_then(|(p, n)| p.get(..*n))
    }
}

/// XORs `payload` with the masking key, from offset `at` in its cycle.
fn unmask(payload: &mut [u8], mask: [u8; 4], at: usize) {
    let mut key = mask;
    key.rotate_left(at % 4);
    // Four bytes at a time (which the compiler vectorizes), then the rest.
    let mut words = payload.chunks_exact_mut(4);
    for word in &mut words {
        for (byte, k) in word.iter_mut().zip(key) {
            *byte ^= k;
        }
    }
    for (byte, k) in words.into_remainder().iter_mut().zip(key) {
        *byte ^= k;
    }
}

/// Frames being written.
#[derive(Default)]
struct Outbound {
    /// The header of the binary frame being written.
    header: [u8; 10],
    header_len: usize,
    header_sent: usize,
    /// Payload bytes of that frame still to write: while it is not zero,
    /// no other frame may go out.
    remaining: usize,
    /// The control frame being written (a pong or a close).
    control: Option<ControlOut>,
    /// A close frame went out (or is going): nothing else follows it.
    close_sent: bool,
}

struct ControlOut {
    frame: [u8; 2 + MAX_CONTROL],
    len: usize,
    sent: usize,
}

impl ControlOut {
    fn new(opcode: u8, payload: &[u8]) -> Self {
        let mut frame = [0; 2 + MAX_CONTROL];
        let len = payload.len().min(MAX_CONTROL);
        frame[0] = 0x80 | opcode;
        // At most 125: the length fits in the second byte, unmasked.
        frame[1] = u8::try_from(len).unwrap_or(125);
        if let (Some(dst), Some(src)) = (frame.get_mut(2..2 + len), payload.get(..len)) {
            dst.copy_from_slice(src);
        }
        Self {
            frame,
            len: 2 + len,
            sent: 0,
        }
    }
}

impl<S> WsIo<S> {
    /// The stream under the WebSocket framing.
    pub(crate) fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsIo<S> {
    /// Writes the pending control frames (the latest pong, a close) while
    /// no data frame is under way.
    fn poll_control(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.outbound.remaining > 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if let Some(control) = &mut self.outbound.control {
                let rest = control
                    .frame
                    .get(control.sent..control.len)
                    .unwrap_or_default();
                if !rest.is_empty() {
                    let n = ready!(Pin::new(&mut self.io).poll_write(cx, rest))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    control.sent += n;
                    continue;
                }
                self.outbound.control = None;
            }
            if self.outbound.close_sent {
                return Poll::Ready(Ok(()));
            }
            if let Some((payload, len)) = self.inbound.ping.take() {
                let payload = payload.get(..len).unwrap_or_default();
                self.outbound.control = Some(ControlOut::new(OP_PONG, payload));
            } else if let Some(code) = self.inbound.close.filter(|_| self.inbound.closed) {
                // The client closed: the answer, then nothing more.
                self.outbound.control = Some(ControlOut::new(OP_CLOSE, &code.to_be_bytes()));
                self.outbound.close_sent = true;
            } else {
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// Sends what control frames it can without waiting for the socket.
    fn try_control(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.poll_control(cx) {
            Poll::Ready(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // A pong (or close) that waited for the socket to take it.
        this.try_control(cx)?;
        if let Some(error) = this.inbound.take_error() {
            // Met behind the payload the previous read returned.
            return Poll::Ready(Err(error));
        }
        if this.inbound.failed && !this.eof {
            // After a read error the connection only drains what the
            // client still sends before it closes: no frames to decode.
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        for _ in 0..CONTROL_ONLY_READS {
            if this.eof || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let room = buf.remaining().min(READ_CHUNK);
            let space = buf.initialize_unfilled_to(room);
            let n = if this.early.is_empty() {
                let mut into = ReadBuf::new(space);
                ready!(Pin::new(&mut this.io).poll_read(cx, &mut into))?;
                into.filled().len()
            } else {
                let n = this.early.len().min(space.len());
                if let (Some(dst), Some(src)) = (space.get_mut(..n), this.early.get(..n)) {
                    dst.copy_from_slice(src);
                }
                this.early.drain(..n);
                if this.early.is_empty() {
                    this.early = Vec::new();
                }
                n
            };
            if n == 0 {
                // The end of the TCP stream (a close frame first or not).
                this.eof = true;
                return Poll::Ready(Ok(()));
            }
            let raw = space.get_mut(..n).unwrap_or_default();
            let out = this.inbound.decode(raw)?;
            if this.inbound.closed {
                this.eof = true;
            }
            this.try_control(cx)?;
            if out > 0 {
                buf.advance(out);
                return Poll::Ready(Ok(()));
            }
        }
        // Only control frames and headers read: let the other tasks run.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.outbound.remaining == 0 {
            // Pending pongs go first, between frames.
            ready!(this.poll_control(cx))?;
            if this.outbound.close_sent {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            let len = buf.len().min(MAX_OUT_FRAME);
            let out = &mut this.outbound;
            out.header[0] = 0x80 | OP_BINARY;
            out.header_len = if let Ok(short) = u8::try_from(len)
                && short < 126
            {
                out.header[1] = short;
                2
            } else if let Ok(medium) = u16::try_from(len) {
                out.header[1] = 126;
                let [a, b] = medium.to_be_bytes();
                out.header[2] = a;
                out.header[3] = b;
                4
            } else {
                out.header[1] = 127;
                let bytes = (len as u64).to_be_bytes();
                for (dst, src) in out.header.iter_mut().skip(2).zip(bytes) {
                    *dst = src;
                }
                10
            };
            out.header_sent = 0;
            out.remaining = len;
        }
        loop {
            let out = &mut this.outbound;
            let payload = buf.get(..out.remaining.min(buf.len())).unwrap_or(buf);
            let header = out
                .header
                .get(out.header_sent..out.header_len)
                .unwrap_or_default();
            let io = Pin::new(&mut this.io);
            let n = if header.is_empty() {
                ready!(io.poll_write(cx, payload))?
            } else {
                let slices = [IoSlice::new(header), IoSlice::new(payload)];
                ready!(io.poll_write_vectored(cx, &slices))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let of_header = n.min(header.len());
            out.header_sent += of_header;
            let written = n - of_header;
            out.remaining -= written.min(out.remaining);
            if written > 0 {
                return Poll::Ready(Ok(written));
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_control(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.outbound.remaining == 0 && !this.outbound.close_sent {
            ready!(this.poll_control(cx))?;
            if !this.outbound.close_sent {
                // The broker closes: a close frame with the reason, if any.
                let code = this.inbound.close.unwrap_or(CLOSE_NORMAL);
                this.inbound.ping = None;
                this.outbound.control = Some(ControlOut::new(OP_CLOSE, &code.to_be_bytes()));
                this.outbound.close_sent = true;
            }
        }
        ready!(this.poll_control(cx))?;
        ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, k)| b ^ k));
        out
    }

    /// Decodes `wire` fed in pieces of `step` bytes, as [`WsIo`] reads do;
    /// returns the payload read, and the error that ended the reading.
    fn decode_all(inbound: &mut Inbound, wire: &[u8], step: usize) -> (Vec<u8>, Option<io::Error>) {
        let mut payload = Vec::new();
        for piece in wire.chunks(step) {
            let mut raw = piece.to_vec();
            match inbound.decode(&mut raw) {
                Ok(n) => payload.extend_from_slice(&raw[..n]),
                Err(error) => return (payload, Some(error)),
            }
            if let Some(error) = inbound.take_error() {
                return (payload, Some(error));
            }
        }
        (payload, None)
    }

    /// Decodes `wire` fed in pieces of `step` bytes; returns the payload.
    fn decode_in_steps(inbound: &mut Inbound, wire: &[u8], step: usize) -> io::Result<Vec<u8>> {
        match decode_all(inbound, wire, step) {
            (payload, None) => Ok(payload),
            (_, Some(error)) => Err(error),
        }
    }

    /// The payload of the frames before a bad one is read, whether the bad
    /// frame comes in the same read or a later one; the error comes after it.
    // MQTT-6.0.0-1 MQTT-6.0.0-2
    #[test]
    fn payload_before_a_bad_frame_is_read_then_the_error() {
        let wire = [frame(0x82, b"ab", [1, 2, 3, 4]), frame(0x81, b"t", [0; 4])].concat();
        for step in [1, 3, wire.len()] {
            let mut inbound = Inbound::new(1024);
            let (payload, error) = decode_all(&mut inbound, &wire, step);
            assert_eq!(payload, b"ab", "step {step}");
            assert_eq!(error.map(|e| e.kind()), Some(io::ErrorKind::InvalidData));
            assert_eq!(inbound.close, Some(CLOSE_UNSUPPORTED_DATA));
            assert!(inbound.failed);
        }
    }

    // MQTT-6.0.0-2 (a packet may span frames, a frame may hold several)
    #[test]
    fn binary_frames_and_continuations_are_unmasked_in_any_pieces() {
        let data: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
        let mut wire = frame(0x02, &data[..10], [1, 2, 3, 4]); // FIN 0, binary
        wire.extend(frame(0x00, &data[10..300], [9, 8, 7, 6])); // continuation
        wire.extend(frame(0x89, b"hi", [5, 5, 5, 5])); // a ping in between
        wire.extend(frame(0x80, &data[300..], [0xaa, 0xbb, 0xcc, 0xdd])); // FIN continuation
        wire.extend(frame(0x82, &[], [1, 1, 1, 1])); // empty binary frame
        for step in [1, 2, 3, 5, 13, 1000, wire.len()] {
            let mut inbound = Inbound::new(1 << 20);
            let payload = decode_in_steps(&mut inbound, &wire, step).unwrap();
            assert_eq!(payload, data, "step {step}");
            assert_eq!(
                inbound.ping.map(|(p, n)| p[..n].to_vec()),
                Some(b"hi".to_vec())
            );
            assert!(!inbound.in_message && !inbound.closed);
        }
    }

    // (RFC 6455 5.5.1, no MQTT statement)
    #[test]
    fn a_close_frame_ends_the_reading_and_is_echoed() {
        let mut wire = frame(0x82, b"ab", [1, 2, 3, 4]);
        wire.extend(frame(0x88, &1001u16.to_be_bytes(), [3, 3, 3, 3]));
        wire.extend(frame(0x82, b"cd", [1, 2, 3, 4]));
        let mut inbound = Inbound::new(1024);
        let payload = decode_in_steps(&mut inbound, &wire, 4).unwrap();
        assert_eq!(payload, b"ab");
        assert!(inbound.closed);
        assert_eq!(inbound.close, Some(1001));
    }

    // MQTT-6.0.0-1 (text frames), and RFC 6455 protocol errors
    #[test]
    fn protocol_errors_are_refused() {
        let cases: [(Vec<u8>, u16); 8] = [
            (frame(0x81, b"x", [0; 4]), CLOSE_UNSUPPORTED_DATA), // text
            (frame(0xc2, b"x", [0; 4]), CLOSE_PROTOCOL_ERROR),   // RSV1
            (vec![0x82, 0x01, b'x'], CLOSE_PROTOCOL_ERROR),      // unmasked
            (frame(0x83, b"x", [0; 4]), CLOSE_PROTOCOL_ERROR),   // opcode 3
            (frame(0x80, b"x", [0; 4]), CLOSE_PROTOCOL_ERROR),   // lone continuation
            (frame(0x09, b"x", [0; 4]), CLOSE_PROTOCOL_ERROR),   // fragmented ping
            (frame(0x89, &[0; 126], [0; 4]), CLOSE_PROTOCOL_ERROR), // long ping
            (
                [frame(0x02, b"x", [0; 4]), frame(0x82, b"y", [0; 4])].concat(),
                CLOSE_PROTOCOL_ERROR,
            ), // binary within a message
        ];
        for (wire, code) in cases {
            let mut inbound = Inbound::new(1024);
            let error = decode_in_steps(&mut inbound, &wire, 1).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData);
            assert_eq!(inbound.close, Some(code), "{wire:?}");
            assert!(inbound.failed);
        }
    }

    /// A frame header with the given length field (7-bit `short`, then the
    /// extended bytes) and a zero masking key.
    fn header(first: u8, short: u8, extended: &[u8]) -> Vec<u8> {
        [&[first, 0x80 | short][..], extended, &[0; 4]].concat()
    }

    /// RFC 6455 5.2: a length must take the fewest bytes, and a 64-bit
    /// length must have its most significant bit clear; else the frame is
    /// a protocol error (1002), not a frame too large (1009, which an MQTT
    /// 5.0 connection would answer with DISCONNECT 0x95). Before, the
    /// first three were taken and the last was refused as too large.
    // (RFC 6455 5.2, no MQTT statement)
    #[test]
    fn lengths_not_in_minimal_form_or_over_63_bits_are_protocol_errors() {
        let cases = [
            header(0x82, 126, &5u16.to_be_bytes()),
            header(0x82, 126, &125u16.to_be_bytes()),
            header(0x82, 127, &5u64.to_be_bytes()),
            header(0x82, 127, &0xffffu64.to_be_bytes()),
            header(0x82, 127, &(1u64 << 63 | 10).to_be_bytes()),
            header(0x82, 127, &u64::MAX.to_be_bytes()),
        ];
        for wire in cases {
            let mut inbound = Inbound::new(1 << 20);
            let error = decode_in_steps(&mut inbound, &wire, 1).unwrap_err();
            assert!(error.get_ref().is_some_and(|e| !e.is::<MessageTooLarge>()));
            assert_eq!(inbound.close, Some(CLOSE_PROTOCOL_ERROR), "{wire:02x?}");
        }
        // The shortest forms are taken: 126 in 16 bits, 65 536 in 64.
        let mut inbound = Inbound::new(1 << 20);
        let wire = [header(0x82, 126, &126u16.to_be_bytes()), vec![7; 126]].concat();
        assert_eq!(decode_in_steps(&mut inbound, &wire, 5).unwrap(), [7; 126]);
        let wire = header(0x82, 127, &0x1_0000u64.to_be_bytes());
        assert_eq!(decode_in_steps(&mut inbound, &wire, 5).unwrap(), []);
        assert_eq!(inbound.remaining, 0x1_0000);
    }

    // (memory, no spec statement): a header alone is taken, nothing reserved
    #[test]
    fn frames_over_the_limit_are_too_large() {
        let mut inbound = Inbound::new(1000);
        let mut wire = vec![0x82, 0x80 | 127];
        wire.extend_from_slice(&(1u64 << 40).to_be_bytes());
        wire.extend_from_slice(&[0; 4]);
        let error = decode_in_steps(&mut inbound, &wire, 3).unwrap_err();
        let too_large = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<MessageTooLarge>())
            .unwrap();
        assert_eq!(too_large.max, 1000);
        // A message over the limit in fragments under it.
        let mut inbound = Inbound::new(1000);
        let wire = [
            frame(0x02, &[0; 600], [0; 4]),
            frame(0x80, &[0; 600], [0; 4]),
        ]
        .concat();
        let error = decode_in_steps(&mut inbound, &wire, 100).unwrap_err();
        assert!(error.get_ref().unwrap().is::<MessageTooLarge>());
    }

    // (HTTP handshake, no spec statement)
    #[test]
    fn the_request_ends_at_its_empty_line() {
        let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x82\x80";
        let mut scan = LineScan::default();
        assert_eq!(scan.request_bytes(request), request.len() - 2);
        let mut scan = LineScan::default();
        let n: usize = request[..20].len();
        assert_eq!(scan.request_bytes(&request[..20]), n);
        assert_eq!(scan.request_bytes(&request[20..]), request.len() - 2 - 20);
        let mut scan = LineScan::default();
        assert_eq!(scan.request_bytes(b"GET / HTTP/1.1\nHost: x\n\nrest"), 24);
    }

    /// Arbitrary bytes from a peer: the decoder never panics, never yields
    /// more payload than it was given, and reads them the same whole or in
    /// any pieces (the same payload, the same error, the same close code).
    /// Inputs are made of plausible frames (all opcodes, every length form,
    /// masked or not) with random bytes in between, from a fixed seed.
    // MQTT-6.0.0-1 MQTT-6.0.0-2 (and robustness, no spec statement)
    #[test]
    fn any_bytes_decode_the_same_whole_or_in_pieces_and_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut payloads, mut errors) = (0, 0);
        for _ in 0..3000 {
            let mut wire = Vec::new();
            for _ in 0..(next() % 5) {
                let len = if next() % 4 == 0 {
                    next() % 300
                } else {
                    next() % 100
                };
                let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                let mut first = match next() % 12 {
                    0..=5 => 0x82,     // binary
                    6 => 0x02,         // binary, a continuation should follow
                    7 => 0x80,         // the last continuation
                    8 => 0x89,         // ping
                    9 => 0x8a,         // pong
                    10 => 0x88,        // close
                    _ => next() as u8, // anything
                };
                if next() % 20 == 0 {
                    first |= 0x40; // a reserved bit
                }
                let mut f = frame(first, &payload, (next() as u32).to_be_bytes());
                if next() % 20 == 0 {
                    f[1] &= 0x7f; // unmasked
                }
                if next() % 20 == 0 {
                    let cut = (next() as usize) % f.len();
                    f.truncate(cut);
                }
                wire.extend(f);
                if next() % 20 == 0 {
                    wire.push(next() as u8);
                }
            }
            let outcome = |step: usize| {
                let mut inbound = Inbound::new(256);
                let (payload, error) = decode_all(&mut inbound, &wire, step);
                (
                    payload,
                    error.map(|e| e.to_string()),
                    inbound.close,
                    inbound.closed,
                )
            };
            let whole = outcome(wire.len().max(1));
            assert!(whole.0.len() <= wire.len());
            payloads += usize::from(!whole.0.is_empty());
            errors += usize::from(whole.1.is_some());
            for step in [1, 2, 7, 64] {
                // The same payload too, an error or not.
                assert_eq!(outcome(step), whole, "step {step}, wire {wire:02x?}");
            }
        }
        // Both kinds of input were made.
        assert!(payloads > 500 && errors > 500, "{payloads} {errors}");
    }
}
