//! WebSocket listeners (feature `websocket`): MQTT in binary frames,
//! subprotocol `mqtt` (MQTT 5.0 section 6), presented to the connection task
//! as a byte stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error, Message};

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

/// tungstenite's read size: its default, 128 KiB, is allocated (and zeroed)
/// for the life of each connection.
const READ_BUFFER: usize = 8 * 1024;
/// The most bytes one outbound binary frame carries; a longer write goes
/// out in several frames (packets need not be aligned on frames).
const MAX_OUT_FRAME: usize = 64 * 1024;
/// The most bytes tungstenite may hold to write: one outbound frame (each
/// write flushes the one before) and a control frame (a pong or a close).
/// Its default is unbounded: a peer that sends pings and never reads made
/// it queue a pong per ping for good. Bounded, it keeps only the latest pong
/// while the peer does not read (RFC 6455 5.5.3 allows answering only the
/// most recent ping).
const MAX_WRITE_BUFFER: usize = MAX_OUT_FRAME + 512;

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
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let ws =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await?;
    Ok(WsIo {
        ws,
        pending: Bytes::new(),
    })
}

/// A WebSocket as a byte stream: reads return the bytes of binary frames in
/// order (a packet may span frames, a frame may hold several packets); each
/// write is one binary frame of at most [`MAX_OUT_FRAME`] bytes.
pub(crate) struct WsIo<S> {
    ws: WebSocketStream<S>,
    /// The unread rest of the last binary frame.
    pending: Bytes,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.pending.is_empty() {
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => self.pending = data,
                // tungstenite answers pings itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                // [MQTT-6.0.0-1]: MQTT travels in binary frames only.
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "[MQTT-6.0.0-1] text frame on an MQTT WebSocket",
                    )));
                }
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Err(Error::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                    let too_large = MessageTooLarge {
                        size,
                        max: max_size,
                    };
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, too_large)));
                }
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        let chunk = self.pending.split_to(n);
        buf.put_slice(chunk.chunk());
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // Everything written before goes out first: tungstenite's buffer
        // holds one frame at most (and a pong).
        ready!(Pin::new(&mut self.ws).poll_flush(cx)).map_err(io::Error::other)?;
        let frame = buf.get(..MAX_OUT_FRAME).unwrap_or(buf);
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(frame)))
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(frame.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws)
            .poll_flush(cx)
            .map_err(io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws)
            .poll_close(cx)
            .map_err(io::Error::other)
    }
}
