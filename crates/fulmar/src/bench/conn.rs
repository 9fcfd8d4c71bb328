//! One lean MQTT client connection: a `fulmar-session` client driven over a
//! tokio `TcpStream` (or TLS over it), without the channels and tasks of
//! `fulmar-client`, so that one process can hold thousands of them.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use fulmar_client::TlsOptions;
use fulmar_codec::{
    Connect, Disconnect, DisconnectProperties, DisconnectReasonCode, MqttString, Packet,
    ProtocolVersion, decode, packet_size,
};
use fulmar_session::{Config, Event, Session};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

use super::Phase;

/// Largest packet we accept (the protocol maximum).
const MAX_PACKET: u32 = 268_435_455;
/// Bytes reserved in the read buffer before each read.
const READ_CHUNK: usize = 64 * 1024;
/// A packet up to this size is read into a buffer of its final size,
/// reserved on its fixed header (not grown as it arrives, which copies a
/// large message about once more).
const RESERVE_WHOLE: usize = 16 * 1024 * 1024;
/// A PUBLISH payload of at least this many bytes is written from where it
/// is (vectored, after its encoded header) instead of copied into the
/// write buffer.
const DIRECT_PAYLOAD: usize = 16 * 1024;

/// What woke a [`Link::step`] up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wake {
    /// Packets were read and fed to the session (events may be waiting).
    Read,
    /// Bytes were written.
    Wrote,
    /// The session's deadline passed (handled) or the caller's own deadline.
    Timer,
    /// The benchmark phase changed.
    Phase,
}

/// TLS for every connection of a run: the settings and the name the
/// broker's certificate must carry.
pub(super) struct Tls {
    pub(super) options: TlsOptions,
    pub(super) host: String,
}

/// The read half of a connection.
enum Reader {
    Tcp(OwnedReadHalf),
    Other(Box<dyn AsyncRead + Send + Unpin>),
}

/// The write half of a connection.
enum Writer {
    Tcp(OwnedWriteHalf),
    Other(Box<dyn AsyncWrite + Send + Unpin>),
}

impl AsyncRead for Reader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            Self::Other(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Writer {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(w) => Pin::new(w).poll_write(cx, buf),
            Self::Other(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            Self::Other(w) => Pin::new(w).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(w) => w.is_write_vectored(),
            Self::Other(w) => w.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(w) => Pin::new(w).poll_flush(cx),
            Self::Other(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            Self::Other(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

/// A connected client session over TCP or TLS.
pub(super) struct Link {
    reader: Reader,
    writer: Writer,
    /// The protocol state; callers publish through it and drain its events.
    pub(super) session: Session,
    version: ProtocolVersion,
    rbuf: BytesMut,
    wbuf: Outbox,
    /// Why the broker ended the connection, from its DISCONNECT (5.0):
    /// the reason code and reason string, for the error message.
    remote_disconnect: Option<String>,
}

/// What waits to be written: encoded packets, and the payloads of large
/// PUBLISH packets as they are (reference counted, not copied), in order.
#[derive(Default)]
struct Outbox {
    /// Written first, in order.
    chunks: VecDeque<Bytes>,
    /// Bytes in `chunks`.
    queued: usize,
    /// Encoded after the last chunk; written after them.
    tail: BytesMut,
}

impl Outbox {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            tail: BytesMut::with_capacity(capacity),
            ..Self::default()
        }
    }

    /// Encodes `packet`; a large PUBLISH payload is queued, not copied.
    fn encode(&mut self, packet: &Packet, version: ProtocolVersion) -> Result<(), String> {
        match packet {
            Packet::Publish(publish) if publish.payload.len() >= DIRECT_PAYLOAD => {
                publish
                    .encode_header(version, &mut self.tail)
                    .map_err(|e| format!("encode: {e}"))?;
                let header = self.tail.split().freeze();
                self.push(header);
                self.push(publish.payload.clone());
                Ok(())
            }
            _ => packet
                .encode(version, &mut self.tail)
                .map_err(|e| format!("encode: {e}")),
        }
    }

    fn push(&mut self, chunk: Bytes) {
        self.queued += chunk.len();
        self.chunks.push_back(chunk);
    }
}

impl Buf for Outbox {
    fn remaining(&self) -> usize {
        self.queued + self.tail.len()
    }

    fn chunk(&self) -> &[u8] {
        self.chunks.front().map_or(&self.tail[..], |c| &c[..])
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        let chunks = self.chunks.iter().map(|c| &c[..]);
        for (slot, chunk) in dst.iter_mut().zip(chunks.chain([&self.tail[..]])) {
            if !chunk.is_empty() {
                *slot = IoSlice::new(chunk);
                n += 1;
            }
        }
        n
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let Some(front) = self.chunks.front_mut() else {
                self.tail.advance(cnt);
                return;
            };
            let step = cnt.min(front.len());
            front.advance(step);
            self.queued -= step;
            cnt -= step;
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
    }
}

impl Link {
    /// Opens a TCP connection (and runs the TLS handshake with `tls`), sends
    /// CONNECT and waits for a successful CONNACK.
    pub(super) async fn connect(
        addr: SocketAddr,
        tls: Option<&Tls>,
        client_id: String,
        version: ProtocolVersion,
        config: Config,
        keep_alive: u16,
        persistent: bool,
    ) -> Result<Self, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (reader, writer) = match tls {
            None => {
                let (r, w) = stream.into_split();
                (Reader::Tcp(r), Writer::Tcp(w))
            }
            Some(tls) => {
                let stream = tls
                    .options
                    .connect(&tls.host, stream)
                    .await
                    .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
                let (r, w) = tokio::io::split(stream);
                (Reader::Other(Box::new(r)), Writer::Other(Box::new(w)))
            }
        };
        let mut session = Session::client(config);
        let mut connect = Connect::new(version, MqttString::from(client_id));
        connect.keep_alive = keep_alive;
        if persistent {
            connect.clean_start = false;
            if version == ProtocolVersion::V5 {
                connect.properties.session_expiry_interval = Some(3600);
            }
        }
        session
            .connect(connect, Instant::now())
            .map_err(|e| e.to_string())?;
        let mut link = Self {
            reader,
            writer,
            session,
            version,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: Outbox::with_capacity(READ_CHUNK),
            remote_disconnect: None,
        };
        loop {
            link.encode_transmits()?;
            while let Some(event) = link.session.poll_event() {
                match event {
                    Event::Connected(ack) if ack.reason_code.is_error() => {
                        return Err(format!("CONNACK refused: {:?}", ack.reason_code));
                    }
                    Event::Connected(_) => return Ok(link),
                    Event::Disconnected { reason_code, .. } => {
                        return Err(format!("disconnected before CONNACK: {reason_code:?}"));
                    }
                    _ => {}
                }
            }
            link.step(None, None).await?;
        }
    }

    /// Encodes every packet the session hands out into the write buffer.
    pub(super) fn encode_transmits(&mut self) -> Result<(), String> {
        while let Some(packet) = self.session.poll_transmit() {
            self.wbuf.encode(&packet, self.version)?;
        }
        Ok(())
    }

    /// Bytes waiting to be written.
    pub(super) fn pending_write(&self) -> usize {
        self.wbuf.remaining()
    }

    /// Waits for one thing to happen: bytes read (and fed to the session),
    /// bytes written, the session's or the caller's deadline, or a phase
    /// change. Reads and writes proceed concurrently, so neither side can
    /// deadlock the other with full socket buffers.
    pub(super) async fn step(
        &mut self,
        deadline: Option<tokio::time::Instant>,
        phase: Option<&mut watch::Receiver<Phase>>,
    ) -> Result<Wake, String> {
        // Not while the rest of a packet fits (its whole size was reserved):
        // growing the buffer then would copy the packet.
        let packet_fits = packet_size(&self.rbuf)
            .is_some_and(|total| total > self.rbuf.len() && total <= self.rbuf.capacity());
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 && !packet_fits {
            self.rbuf.reserve(READ_CHUNK);
        }
        let session_deadline = self.session.poll_timeout();
        let timer = match (
            session_deadline.map(tokio::time::Instant::from_std),
            deadline,
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let Self {
            reader,
            writer,
            rbuf,
            wbuf,
            ..
        } = self;
        let can_write = wbuf.has_remaining();
        let wake = tokio::select! {
            read = reader.read_buf(rbuf) => match read {
                Ok(0) => return Err("connection closed by the broker".to_owned()),
                Ok(_) => Wake::Read,
                Err(e) => return Err(format!("read: {e}")),
            },
            written = writer.write_buf(wbuf), if can_write => match written {
                Ok(0) => return Err("connection closed while writing".to_owned()),
                Ok(_) => Wake::Wrote,
                Err(e) => return Err(format!("write: {e}")),
            },
            () = sleep_until(timer) => Wake::Timer,
            changed = phase_changed(phase) => {
                changed?;
                Wake::Phase
            }
        };
        match wake {
            Wake::Read => self.feed()?,
            Wake::Timer => {
                if session_deadline.is_some_and(|d| d <= Instant::now()) {
                    self.session.handle_timeout(Instant::now());
                }
            }
            Wake::Wrote | Wake::Phase => {}
        }
        if self.session.is_closed() {
            let why = match (self.session.error(), &self.remote_disconnect) {
                (Some(e), _) => e.to_string(),
                (None, Some(why)) => format!("disconnected by the broker: {why}"),
                (None, None) => "session closed".to_owned(),
            };
            return Err(why);
        }
        Ok(wake)
    }

    /// Decodes every complete packet in the read buffer into the session.
    fn feed(&mut self) -> Result<(), String> {
        let now = Instant::now();
        loop {
            match decode(&mut self.rbuf, self.version, MAX_PACKET) {
                Ok(Some(packet)) => {
                    if let Packet::Disconnect(disconnect) = &packet {
                        self.remote_disconnect = Some(describe(disconnect));
                    }
                    self.session
                        .handle_packet(packet, now)
                        .map_err(|e| e.to_string())?;
                }
                Ok(None) => {
                    // `decode` has checked the fixed header by now.
                    if let Some(total) = packet_size(&self.rbuf)
                        && total > self.rbuf.capacity()
                        && total <= RESERVE_WHOLE
                    {
                        self.rbuf.reserve(total - self.rbuf.len());
                    }
                    return Ok(());
                }
                Err(e) => {
                    self.session.handle_decode_error(&e, now);
                    return Err(format!("decode: {e}"));
                }
            }
        }
    }

    /// Sends DISCONNECT (normal) after whatever is still buffered, and
    /// closes the write side.
    pub(super) async fn disconnect(self) -> Result<(), String> {
        self.disconnect_with(DisconnectProperties::default()).await
    }

    /// Like [`Link::disconnect`], and ends the session: MQTT 5.0 only,
    /// with a Session Expiry Interval of 0 in the DISCONNECT (3.1.1 has no
    /// such field: reconnect with a clean session instead).
    pub(super) async fn disconnect_ending_session(self) -> Result<(), String> {
        let properties = DisconnectProperties {
            session_expiry_interval: Some(0),
            ..DisconnectProperties::default()
        };
        self.disconnect_with(properties).await
    }

    async fn disconnect_with(mut self, properties: DisconnectProperties) -> Result<(), String> {
        if self.session.is_connected() {
            self.session
                .disconnect(
                    DisconnectReasonCode::NormalDisconnection,
                    properties,
                    Instant::now(),
                )
                .map_err(|e| e.to_string())?;
        }
        // The session is closed now: write directly instead of stepping it.
        self.encode_transmits()?;
        self.writer
            .write_all_buf(&mut self.wbuf)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.writer
            .shutdown()
            .await
            .map_err(|e| format!("shutdown: {e}"))
    }
}

/// A DISCONNECT's reason code, and its reason string if any.
fn describe(disconnect: &Disconnect) -> String {
    match &disconnect.properties.reason_string {
        Some(reason) => format!("{:?} ({reason})", disconnect.reason_code),
        None => format!("{:?}", disconnect.reason_code),
    }
}

/// Sleeps until `at`, or forever without a deadline.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the phase changes, or never without a receiver.
async fn phase_changed(phase: Option<&mut watch::Receiver<Phase>>) -> Result<(), String> {
    match phase {
        Some(rx) => rx
            .changed()
            .await
            .map_err(|_| "benchmark coordinator gone".to_owned()),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use fulmar_codec::{Packet, PacketId, Publish, QoS};

    use super::*;

    fn publish(size: usize) -> Packet {
        let mut publish = Publish::new(
            "t".into(),
            Bytes::from((0..size).map(|i| i as u8).collect::<Vec<_>>()),
        );
        publish.qos = QoS::AtLeastOnce;
        publish.packet_id = PacketId::new(7);
        Packet::from(publish)
    }

    /// The outbox holds the same bytes, in the same order, as encoding
    /// every packet into one buffer; a large payload is not copied.
    #[test]
    fn outbox_writes_what_encoding_writes() {
        let packets = [
            Packet::PingReq,
            publish(DIRECT_PAYLOAD + 5),
            publish(10),
            publish(DIRECT_PAYLOAD),
            publish(DIRECT_PAYLOAD * 3),
            Packet::PingReq,
        ];
        let mut expected = BytesMut::new();
        let mut outbox = Outbox::default();
        for packet in &packets {
            packet.encode(ProtocolVersion::V5, &mut expected).unwrap();
            outbox.encode(packet, ProtocolVersion::V5).unwrap();
        }
        if let Packet::Publish(big) = &packets[1] {
            let queued = outbox.chunks.get(1).unwrap();
            assert_eq!(queued.as_ptr(), big.payload.as_ptr(), "copied");
        }
        assert_eq!(outbox.remaining(), expected.len());

        // Written in uneven steps, vectored and not.
        let mut written = Vec::new();
        let mut step = 1;
        while outbox.has_remaining() {
            let mut slices = [IoSlice::new(&[]); 3];
            let n = outbox.chunks_vectored(&mut slices);
            assert!(n > 0);
            let mut take = step;
            let mut count = 0;
            for slice in &slices[..n] {
                let part = slice.len().min(take);
                written.extend_from_slice(&slice[..part]);
                take -= part;
                count += part;
                if take == 0 {
                    break;
                }
            }
            outbox.advance(count);
            assert_eq!(outbox.remaining(), expected.len() - written.len());
            step = step * 3 + 1;
        }
        assert_eq!(written, expected);
        assert!(outbox.chunks.is_empty());

        // The chunk view alone gives the same bytes.
        let mut outbox = Outbox::default();
        for packet in &packets {
            outbox.encode(packet, ProtocolVersion::V5).unwrap();
        }
        let mut written = Vec::new();
        while outbox.has_remaining() {
            let chunk = outbox.chunk();
            let n = chunk.len().min(1000);
            written.extend_from_slice(&chunk[..n]);
            outbox.advance(n);
        }
        assert_eq!(written, expected);
    }
}
