//! The byte stream of one connection: a read buffer that starts small,
//! grows while the peer sends a lot and is released when it runs empty, and
//! a write buffer that exists only while there is something to write. An
//! idle connection holds no buffer: it waits for bytes with a buffer on the
//! stack of the poll.

use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use fulmar_codec::{CodecError, MAX_RESERVE_AHEAD, Packet, ProtocolVersion, decode, packet_size};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::io::poll_read_buf;

use crate::frames::Frames;
use crate::observe::Counted;

/// The first read of an empty buffer asks for this many bytes.
const MIN_READ: usize = 256;
/// Reads never ask for more than this many bytes at once (a publisher
/// sending fast is read in turns with the other connections).
const MAX_READ: usize = 8 * 1024;
/// Encoded packets are written out once this many bytes are buffered.
const WRITE_CHUNK: usize = 64 * 1024;
/// A PUBLISH payload this large is written from its own buffer (shared by
/// every subscriber), not copied into the write buffer.
const DIRECT_PAYLOAD: usize = 16 * 1024;
/// A flushed write buffer up to this size is kept for the next packets
/// until the connection is quiet ([`Transport::release_spare_capacity`]);
/// a larger one is released at once.
const KEPT_WRITE_BUFFER: usize = 16 * 1024;

/// A framed MQTT byte stream with lazily allocated buffers.
pub(super) struct Transport<S> {
    io: Counted<S>,
    version: ProtocolVersion,
    max_packet_size: u32,
    read_buf: BytesMut,
    /// How many bytes the next read into an empty buffer asks for.
    read_hint: usize,
    /// Bytes of the broker's read-ahead budget held for the rest of the
    /// large packet at the front of `read_buf` (see
    /// [`reserve_packet`](Self::reserve_packet)).
    ahead: usize,
    write_buf: BytesMut,
    /// End of stream, a read error or a decode error: no more packets.
    done: bool,
    /// While set, nothing is read or decoded: a publisher held back by
    /// pacing (see [`pause`](Self::pause)).
    pause: Option<Pause>,
}

impl<S> Transport<S> {
    /// Gives the read-ahead budget held back to the broker.
    fn release_ahead(&mut self) {
        if self.ahead > 0 {
            let ahead = std::mem::take(&mut self.ahead);
            self.io
                .listener
                .shared()
                .counters
                .read_ahead
                .fetch_sub(ahead, Ordering::Relaxed);
        }
    }
}

impl<S> Drop for Transport<S> {
    fn drop(&mut self) {
        self.release_ahead();
    }
}

/// What a paused transport waits for before it reads on.
pub(super) type Pause = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

impl<S: AsyncRead + AsyncWrite + Unpin> Transport<S> {
    pub(super) fn new(io: Counted<S>, max_packet_size: u32) -> Self {
        Self {
            io,
            version: ProtocolVersion::V5,
            max_packet_size,
            read_buf: BytesMut::new(),
            read_hint: MIN_READ,
            ahead: 0,
            write_buf: BytesMut::new(),
            done: false,
            pause: None,
        }
    }

    /// Reads and decodes nothing more until `until` is ready: packets
    /// already buffered wait too, and TCP flow control holds the peer back.
    pub(super) fn pause(&mut self, until: Pause) {
        self.pause = Some(until);
    }

    /// The prefix of the topics of the connection's client, if its listener
    /// has a [mount point](crate::Listener::mount_point).
    #[inline]
    pub(super) fn mount_point(&self) -> Option<&str> {
        self.io.listener.mount_point()
    }

    /// The stream (inside the byte counting).
    pub(super) fn io_mut(&mut self) -> &mut S {
        &mut self.io.inner
    }

    /// Nothing buffered either way, and the stream still open.
    pub(super) fn is_idle(&self) -> bool {
        !self.done && self.read_buf.is_empty() && self.write_buf.is_empty() && self.pause.is_none()
    }

    /// Whether bytes read from the network wait to be decoded.
    pub(super) fn has_buffered_input(&self) -> bool {
        !self.read_buf.is_empty()
    }

    /// Sets the protocol version used to decode and encode (a CONNECT sets
    /// it by itself when decoded).
    pub(super) fn set_version(&mut self, version: ProtocolVersion) {
        self.version = version;
    }

    /// Makes room for the whole packet at the front of the read buffer when
    /// it is large (more than [`MAX_RESERVE_AHEAD`] bytes still to come) and
    /// the broker's read-ahead budget
    /// ([`Limits::max_read_ahead_bytes`](crate::Limits::max_read_ahead_bytes))
    /// has room: its bytes are then read straight into place. Otherwise
    /// [`decode`] grows the buffer as they arrive, which copies them about
    /// once more (a third of a large message's cost in the broker, measured
    /// with 1 MiB payloads) but reserves no more than the peer has sent.
    /// Called after [`decode`] asked for more bytes, so the fixed header
    /// (if complete) is valid and within the maximum packet size.
    fn reserve_packet(&mut self) {
        if self.ahead > 0 {
            return;
        }
        let Some(total) = packet_size(&self.read_buf) else {
            return;
        };
        let len = self.read_buf.len();
        let want = total.saturating_sub(len);
        if want <= MAX_RESERVE_AHEAD || self.read_buf.capacity() >= total {
            return;
        }
        let shared = self.io.listener.shared();
        let max = shared.limits.max_read_ahead_bytes;
        let taken =
            shared
                .counters
                .read_ahead
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                    used.checked_add(want).filter(|&n| n <= max)
                });
        if taken.is_ok() {
            // Exactly the packet's size (`reserve` could double the
            // buffer): what the budget counts is what is allocated.
            let mut whole = BytesMut::with_capacity(total);
            whole.extend_from_slice(&self.read_buf);
            self.read_buf = whole;
            self.ahead = want;
        }
    }

    /// The next packet already buffered, without reading.
    fn buffered(&mut self) -> Option<Result<Packet, CodecError>> {
        if self.done {
            return None;
        }
        let result = decode(&mut self.read_buf, self.version, self.max_packet_size);
        if matches!(result, Ok(None)) {
            // Only now: `decode` has checked the fixed header.
            self.reserve_packet();
        } else {
            // The packet is out of the buffer, or nothing more is read.
            self.release_ahead();
        }
        if self.read_buf.is_empty() {
            // Nothing left over: an idle connection keeps no large buffer.
            // With no capacity left too: after the last packet is split off
            // a buffer reserved for exactly it, the empty rest still shares
            // (and keeps alive) the whole allocation.
            self.read_buf = BytesMut::new();
        }
        match result {
            Ok(Some(packet)) => {
                if let Packet::Connect(connect) = &packet {
                    self.version = connect.protocol_version;
                }
                Some(Ok(packet))
            }
            Ok(None) => None,
            Err(error) => {
                self.done = true;
                Some(Err(CodecError::Decode(error)))
            }
        }
    }

    /// The next packet: `None` at the end of the stream (or after an
    /// error). Cancel safe: bytes read stay buffered. A poll function: the
    /// future is a pointer, whatever the reads need lives on the stack of
    /// each poll.
    pub(super) async fn next(&mut self) -> Option<Result<Packet, CodecError>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Packet, CodecError>>> {
        if let Some(pause) = &mut self.pause {
            std::task::ready!(pause.as_mut().poll(cx));
            self.pause = None;
        }
        loop {
            if let Some(result) = self.buffered() {
                return Poll::Ready(Some(result));
            }
            if self.done {
                return Poll::Ready(None);
            }
            let (read, room) = if self.read_buf.is_empty() {
                // Nothing buffered (an idle connection waits here): no heap
                // buffer until bytes arrive.
                let room = self.read_hint;
                (ready!(self.poll_read_into_new(cx, room)), room)
            } else {
                if self.read_buf.capacity() == self.read_buf.len() {
                    self.read_buf.reserve(self.read_hint);
                }
                let room = self.read_buf.capacity() - self.read_buf.len();
                let io = Pin::new(&mut self.io);
                (ready!(poll_read_buf(io, cx, &mut self.read_buf)), room)
            };
            match read {
                Ok(0) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Ok(n) => {
                    // Grow while reads fill the buffer, shrink when they stay small.
                    if n >= room {
                        self.read_hint = (self.read_hint * 2).min(MAX_READ);
                    } else if n < self.read_hint / 4 {
                        self.read_hint = (self.read_hint / 2).max(MIN_READ);
                    }
                }
                Err(error) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(CodecError::Io(error))));
                }
            }
        }
    }

    /// Reads at most `room` bytes into a buffer on the stack of this poll,
    /// and copies what arrived into a new read buffer.
    fn poll_read_into_new(
        &mut self,
        cx: &mut Context<'_>,
        room: usize,
    ) -> Poll<std::io::Result<usize>> {
        let mut stack = [MaybeUninit::<u8>::uninit(); MAX_READ];
        let (head, _) = stack.split_at_mut(room.min(MAX_READ));
        let mut buf = ReadBuf::uninit(head);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        let filled = buf.filled();
        if !filled.is_empty() {
            self.read_buf.reserve(room.max(filled.len()));
            self.read_buf.extend_from_slice(filled);
        }
        Poll::Ready(Ok(filled.len()))
    }

    /// Encodes `packet` for sending; writes out when much is buffered. A
    /// PUBLISH with `frames` takes its header from there when the same
    /// variant of the message was encoded before (returns true then).
    pub(super) async fn feed(
        &mut self,
        packet: &Packet,
        frames: Option<&Frames>,
    ) -> Result<bool, CodecError> {
        if let Packet::Publish(publish) = packet
            && (frames.is_some() || publish.payload.len() >= DIRECT_PAYLOAD)
        {
            let reused = match frames {
                Some(frames) => frames.put_header(self.version, publish, &mut self.write_buf)?,
                None => {
                    publish.encode_header(self.version, &mut self.write_buf)?;
                    false
                }
            };
            if publish.payload.len() >= DIRECT_PAYLOAD {
                // What is buffered, the header among it, and the payload in
                // one system call where the stream takes both at once.
                write_both(&mut self.io, &self.write_buf, &publish.payload).await?;
                self.write_buf.clear();
            } else {
                self.write_buf.extend_from_slice(&publish.payload);
                self.write_out().await?;
            }
            return Ok(reused);
        }
        packet.encode(self.version, &mut self.write_buf)?;
        self.write_out().await?;
        Ok(false)
    }

    /// Writes the buffered bytes out once there are many.
    async fn write_out(&mut self) -> std::io::Result<()> {
        if self.write_buf.len() >= WRITE_CHUNK {
            self.io.write_all(&self.write_buf).await?;
            self.write_buf.clear();
        }
        Ok(())
    }

    /// Writes everything fed and flushes the stream. The write buffer is
    /// kept for the next packets if it is small (a subscriber that keeps up
    /// flushes after every few messages: growing a new buffer each time
    /// cost more than encoding them), released otherwise.
    pub(super) async fn flush(&mut self) -> Result<(), CodecError> {
        if !self.write_buf.is_empty() {
            self.io.write_all(&self.write_buf).await?;
        }
        if self.write_buf.capacity() > KEPT_WRITE_BUFFER {
            self.write_buf = BytesMut::new();
        } else {
            self.write_buf.clear();
        }
        self.io.flush().await?;
        Ok(())
    }

    /// Releases the write buffer if it holds nothing: for a connection that
    /// went quiet.
    pub(super) fn release_spare_capacity(&mut self) {
        if self.write_buf.is_empty() {
            self.write_buf = BytesMut::new();
        }
    }

    /// Closes the write side of the stream.
    pub(super) async fn shutdown(&mut self) -> std::io::Result<()> {
        self.io.shutdown().await
    }

    /// Reads and discards what the peer still sends, up to `max` bytes, until
    /// it closes its side; for after [`shutdown`](Self::shutdown). Closing a
    /// TCP socket with unread input resets the connection (RFC 2525 2.17),
    /// and a reset throws away what is still queued for the peer, the final
    /// DISCONNECT among it. The caller bounds the time.
    pub(super) async fn drain_input(&mut self, max: usize) {
        // On the heap: an array here would be part of every connection's
        // future, idle or not.
        let mut scratch = vec![0u8; 4096];
        let mut read = 0;
        while read < max {
            match self.io.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read += n,
            }
        }
    }
}

/// Writes all of `first`, then all of `second`, with vectored writes while
/// both have bytes left (one system call for both on a TCP stream).
async fn write_both<W: AsyncWrite + Unpin>(
    io: &mut W,
    mut first: &[u8],
    mut second: &[u8],
) -> std::io::Result<()> {
    if !io.is_write_vectored() {
        io.write_all(first).await?;
        return io.write_all(second).await;
    }
    while !first.is_empty() {
        let slices = [std::io::IoSlice::new(first), std::io::IoSlice::new(second)];
        let n = io.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        match first.get(n..) {
            Some(rest) => first = rest,
            None => {
                second = second.get(n - first.len()..).unwrap_or_default();
                first = &[];
            }
        }
    }
    io.write_all(second).await
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::AsyncWrite;

    use super::write_both;

    /// Takes at most `step` bytes per call (cycling through `steps`),
    /// vectored or not.
    struct Chunky {
        out: Vec<u8>,
        steps: Vec<usize>,
        at: usize,
        vectored: bool,
        calls: usize,
    }

    impl Chunky {
        fn take(&mut self, bufs: &[IoSlice<'_>]) -> usize {
            let mut left = self.steps[self.at % self.steps.len()];
            self.at += 1;
            self.calls += 1;
            let before = self.out.len();
            for buf in bufs {
                let n = buf.len().min(left);
                self.out.extend_from_slice(&buf[..n]);
                left -= n;
            }
            self.out.len() - before
        }
    }

    impl AsyncWrite for Chunky {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Poll::Ready(Ok(self.get_mut().take(&[IoSlice::new(buf)])))
        }
        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let this = self.get_mut();
            if this.vectored {
                Poll::Ready(Ok(this.take(bufs)))
            } else {
                let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
                Poll::Ready(Ok(this.take(&[IoSlice::new(first)])))
            }
        }
        fn is_write_vectored(&self) -> bool {
            self.vectored
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn both_buffers_are_written_whole_and_in_order_however_the_stream_takes_them() {
        let first: Vec<u8> = (0..40u8).collect();
        let second: Vec<u8> = (100..=255u8).collect();
        for vectored in [true, false] {
            for steps in [
                vec![1],
                vec![3, 7],
                vec![40],
                vec![41],
                vec![1000],
                vec![39, 2, 500],
            ] {
                for (a, b) in [(0, 0), (0, 156), (40, 0), (40, 156), (5, 1)] {
                    let mut io = Chunky {
                        out: Vec::new(),
                        steps: steps.clone(),
                        at: 0,
                        vectored,
                        calls: 0,
                    };
                    write_both(&mut io, &first[..a], &second[..b])
                        .await
                        .unwrap();
                    let mut expected = first[..a].to_vec();
                    expected.extend_from_slice(&second[..b]);
                    assert_eq!(io.out, expected, "{vectored} {steps:?} {a} {b}");
                }
            }
        }
        // A stream that takes everything at once: one call for both.
        let mut io = Chunky {
            out: Vec::new(),
            steps: vec![usize::MAX],
            at: 0,
            vectored: true,
            calls: 0,
        };
        write_both(&mut io, &first, &second).await.unwrap();
        assert_eq!(io.calls, 1);
    }
}
