//! One lean MQTT client connection: a `fulmar-session` client driven over a
//! tokio `TcpStream` (or TLS over it), without the channels and tasks of
//! `fulmar-client`, so that one process can hold thousands of them.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;
use fulmar_client::TlsOptions;
use fulmar_codec::{
    Connect, DisconnectProperties, DisconnectReasonCode, MqttString, ProtocolVersion, decode,
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
    wbuf: BytesMut,
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
            wbuf: BytesMut::with_capacity(READ_CHUNK),
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
            packet
                .encode(self.version, &mut self.wbuf)
                .map_err(|e| format!("encode: {e}"))?;
        }
        Ok(())
    }

    /// Bytes waiting to be written.
    pub(super) fn pending_write(&self) -> usize {
        self.wbuf.len()
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
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
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
        let can_write = !wbuf.is_empty();
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
            let why = self
                .session
                .error()
                .map_or_else(|| "session closed".to_owned(), |e| e.to_string());
            return Err(why);
        }
        Ok(wake)
    }

    /// Decodes every complete packet in the read buffer into the session.
    fn feed(&mut self) -> Result<(), String> {
        let now = Instant::now();
        loop {
            match decode(&mut self.rbuf, self.version, MAX_PACKET) {
                Ok(Some(packet)) => self
                    .session
                    .handle_packet(packet, now)
                    .map_err(|e| e.to_string())?,
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.session.handle_decode_error(&e, now);
                    return Err(format!("decode: {e}"));
                }
            }
        }
    }

    /// Sends DISCONNECT (normal) after whatever is still buffered, and
    /// closes the write side.
    pub(super) async fn disconnect(mut self) -> Result<(), String> {
        if self.session.is_connected() {
            self.session
                .disconnect(
                    DisconnectReasonCode::NormalDisconnection,
                    DisconnectProperties::default(),
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
