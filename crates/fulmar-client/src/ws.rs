//! WebSocket transport (feature `websocket`): MQTT packets in binary frames,
//! subprotocol `mqtt` (MQTT 5.0 section 6), adapted to `AsyncRead`/`AsyncWrite`
//! so the same framing code runs over every transport.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::error::Error;

/// The most bytes one outbound binary frame carries: a longer write (a
/// batch of packets, or one large packet) goes out in several frames, which
/// MQTT over WebSocket allows (MQTT 5.0 section 6: packets need not be
/// aligned on frame boundaries). A broker may limit frames: fulmar-broker
/// takes up to twice its Maximum Packet Size, never less than 64 KiB.
const MAX_OUTBOUND_FRAME: usize = 64 * 1024;

/// The smallest inbound frame and message limit: a broker may send several
/// packets in one frame, so the limit is not the Maximum Packet Size itself
/// (tungstenite's default frame limit).
const MIN_INBOUND_LIMIT: usize = 16 << 20;

/// tungstenite's read size: its default, 128 KiB, is allocated (and zeroed)
/// for the life of the connection.
const READ_BUFFER: usize = 8 * 1024;

/// The most bytes tungstenite may hold to write: one outbound frame (each
/// write flushes the one before) and a control frame (a pong or a close).
/// Its default is unbounded: a peer that sends pings and never reads would
/// make it queue a pong per ping for good. With the bound, tungstenite keeps
/// only the latest pong while the peer does not read (RFC 6455 5.5.3 allows
/// answering only the most recent ping).
const MAX_WRITE_BUFFER: usize = MAX_OUTBOUND_FRAME + 512;

/// The WebSocket limits for a client that takes packets of up to
/// `max_packet` bytes: frames and messages of twice that (a whole packet and
/// what the broker sent with it), at least [`MIN_INBOUND_LIMIT`].
fn config(max_packet: u32) -> WebSocketConfig {
    let limit = usize::try_from(max_packet)
        .unwrap_or(usize::MAX)
        .saturating_mul(2)
        .max(MIN_INBOUND_LIMIT);
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit))
}

/// Runs the WebSocket handshake at `url` over `stream`, asking for the `mqtt`
/// subprotocol. `max_packet`: the largest packet the client takes (its
/// Maximum Packet Size), which sets the inbound frame and message limits.
pub(crate) async fn connect<S>(url: &str, stream: S, max_packet: u32) -> Result<WsIo<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config(max_packet)))
            .await?;
    Ok(WsIo {
        ws,
        read: Bytes::new(),
        closed: false,
    })
}

/// A WebSocket as a byte stream: reads concatenate binary frames (an MQTT
/// packet may span frames, a frame may hold several packets), each write is
/// one binary frame of at most [`MAX_OUTBOUND_FRAME`] bytes.
pub(crate) struct WsIo<S> {
    ws: WebSocketStream<S>,
    read: Bytes,
    /// The peer sent a Close frame: reads end, once the Close frame
    /// tungstenite queued in answer is written.
    closed: bool,
}

fn io_error(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    io::Error::other(e)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.closed {
                // RFC 6455 5.5.1: a Close frame is answered with one.
                // tungstenite queues the answer as it reads the peer's, and
                // writes it when written to or read again: neither happens
                // once the reader has seen the end of the stream. A failed
                // write ends the stream all the same (the peer is leaving).
                if let Err(e) = ready!(Pin::new(&mut self.ws).poll_flush(cx)) {
                    tracing::debug!(error = %e, "answering the WebSocket Close frame");
                }
                return Poll::Ready(Ok(()));
            }
            if !self.read.is_empty() {
                let n = self.read.len().min(buf.remaining());
                buf.put_slice(self.read.get(..n).unwrap_or_default());
                self.read.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => self.read = data,
                // Pings are answered by tungstenite; text frames are not MQTT.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text frame on an MQTT WebSocket",
                    )));
                }
                Some(Ok(Message::Close(_))) => self.closed = true,
                None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
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
        ready!(Pin::new(&mut self.ws).poll_flush(cx)).map_err(io_error)?;
        let frame = buf.get(..MAX_OUTBOUND_FRAME).unwrap_or(buf);
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(frame)))
            .map_err(io_error)?;
        Poll::Ready(Ok(frame.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(io_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_close(cx).map_err(io_error)
    }
}
