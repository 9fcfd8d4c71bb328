//! `MqttCodec` (feature `tokio-util`) under `FramedRead` and `FramedWrite`,
//! over a mock transport that hands out bytes one chunk at a time with
//! "not ready yet" reads in between, in the style of tokio-util's own
//! `framed_read.rs` tests.
#![cfg(feature = "tokio-util")]
// The helpers below panic on bad fixtures, like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use fulmar_codec::{
    CodecError, Connect, DecodeError, MqttCodec, Packet, PacketId, ProtocolVersion, PubAck,
    Publish, QoS,
};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::codec::{Decoder, FramedRead, FramedWrite};

/// One event of the mock transport.
enum Read {
    /// These bytes arrive (at most as many as the reader asks for).
    Data(Vec<u8>),
    /// Nothing yet: the read returns `Pending` (after waking the task).
    Pending,
}

/// Plays a script of reads, then reports end of stream.
struct Mock {
    script: VecDeque<Read>,
}

impl Mock {
    fn new(script: impl IntoIterator<Item = Read>) -> Self {
        Self {
            script: script.into_iter().collect(),
        }
    }

    /// `wire` in chunks of `size` bytes, with a `Pending` before each chunk.
    fn chunked(wire: &[u8], size: usize) -> Self {
        Self::new(
            wire.chunks(size)
                .flat_map(|c| [Read::Pending, Read::Data(c.to_vec())]),
        )
    }
}

impl AsyncRead for Mock {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.script.pop_front() {
            None => Poll::Ready(Ok(())), // end of stream
            Some(Read::Pending) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Some(Read::Data(mut data)) => {
                let n = data.len().min(buf.remaining());
                buf.put_slice(&data[..n]);
                if n < data.len() {
                    self.script.push_front(Read::Data(data.split_off(n)));
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}

fn id(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

fn sample_packets(version: ProtocolVersion) -> Vec<Packet> {
    let mut publish = Publish::new("a/b".into(), Bytes::from(vec![7u8; 300]));
    publish.qos = QoS::AtLeastOnce;
    publish.packet_id = Some(id(1));
    if version == ProtocolVersion::V5 {
        publish.properties.message_expiry_interval = Some(9);
    }
    vec![
        Packet::from(publish),
        Packet::from(PubAck::new(id(1))),
        Packet::PingReq,
        Packet::from(Publish::new("x".into(), Bytes::new())),
        Packet::PingResp,
    ]
}

/// Encodes with `FramedWrite` into a `Vec<u8>`.
async fn write_all(version: ProtocolVersion, packets: &[Packet]) -> Vec<u8> {
    let mut sink = FramedWrite::new(Vec::new(), MqttCodec::new(version, 1 << 20));
    for p in packets {
        sink.send(p).await.unwrap();
    }
    sink.into_inner()
}

#[tokio::test]
async fn framed_read_in_every_chunk_size_with_pending_reads() {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let packets = sample_packets(version);
        let wire = write_all(version, &packets).await;
        for size in [1, 2, 3, 5, 7, 64, 333, wire.len()] {
            let mut framed =
                FramedRead::new(Mock::chunked(&wire, size), MqttCodec::new(version, 1 << 20));
            let mut out = Vec::new();
            while let Some(p) = framed.next().await {
                out.push(p.unwrap());
            }
            assert_eq!(out, packets, "{version}, chunks of {size}");
        }
    }
}

/// With `reserve_whole_packets`, a large packet's buffer is sized on its
/// fixed header and decodes the same in every chunk size; without it, or
/// above its limit, the buffer grows as the bytes arrive.
#[tokio::test]
async fn whole_packets_are_reserved_up_to_the_limit() {
    let version = ProtocolVersion::V5;
    let packet = Packet::from(Publish::new("big".into(), Bytes::from(vec![7u8; 300_000])));
    let wire = write_all(version, std::slice::from_ref(&packet)).await;
    for (limit, reserved) in [(1 << 20, true), (100_000, false), (0, false)] {
        let mut codec = MqttCodec::new(version, 1 << 20).reserve_whole_packets(limit);
        let mut buf = BytesMut::from(&wire[..1000]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert_eq!(buf.capacity() >= wire.len(), reserved, "limit {limit}");
        for size in [7, 4096, wire.len()] {
            let mut framed = FramedRead::new(Mock::chunked(&wire, size), codec);
            assert_eq!(
                framed.next().await.unwrap().unwrap(),
                packet,
                "limit {limit}, {size}"
            );
            assert!(framed.next().await.is_none());
        }
    }
    // Not beyond the maximum packet size: that packet is refused.
    let mut codec = MqttCodec::new(version, 200_000).reserve_whole_packets(1 << 20);
    let mut buf = BytesMut::from(&wire[..1000]);
    assert!(codec.decode(&mut buf).is_err());
    assert!(buf.capacity() < wire.len());
}

/// A small read buffer: `FramedRead` reads less than a chunk at a time.
#[tokio::test]
async fn framed_read_with_a_tiny_read_buffer() {
    let version = ProtocolVersion::V5;
    let packets = sample_packets(version);
    let wire = write_all(version, &packets).await;
    let mut framed = FramedRead::with_capacity(
        Mock::new([Read::Data(wire)]),
        MqttCodec::new(version, 1 << 20),
        1,
    );
    let mut out = Vec::new();
    while let Some(p) = framed.next().await {
        out.push(p.unwrap());
    }
    assert_eq!(out, packets);
}

/// A server codec starts in 5.0 and follows the CONNECT to 3.1.1: the
/// PUBLISH after it is read without a property block.
#[tokio::test]
async fn framed_read_follows_the_connect_version() {
    let v3 = ProtocolVersion::V311;
    let connect = Packet::from(Connect::new(v3, "c".into()));
    let publish = Packet::from(Publish::new("t".into(), Bytes::from_static(b"p")));
    let wire = write_all(v3, &[connect.clone(), publish.clone()]).await;
    let mut framed = FramedRead::new(
        Mock::chunked(&wire, 4),
        MqttCodec::new(ProtocolVersion::V5, 1024),
    );
    assert_eq!(framed.next().await.unwrap().unwrap(), connect);
    assert_eq!(framed.decoder().version(), v3);
    assert_eq!(framed.next().await.unwrap().unwrap(), publish);
    assert!(framed.next().await.is_none());
}

#[tokio::test]
async fn framed_read_reports_malformed_and_oversized_packets() {
    // A QoS 0 PUBLISH with DUP set, after a good PINGREQ.
    let mut framed = FramedRead::new(
        Mock::new([
            Read::Data(vec![0xC0]),
            Read::Pending,
            Read::Data(vec![0x00, 0x38]),
            Read::Data(vec![0x03, 0x00, 0x01, b't']),
        ]),
        MqttCodec::new(ProtocolVersion::V311, 1024),
    );
    assert_eq!(framed.next().await.unwrap().unwrap(), Packet::PingReq);
    assert!(matches!(
        framed.next().await.unwrap(),
        Err(CodecError::Decode(DecodeError::DupWithQoS0))
    ));

    // Refused from the fixed header: the body never arrives.
    let mut framed = FramedRead::new(
        Mock::new([Read::Data(vec![0x30, 0xFF, 0x7F]), Read::Pending]),
        MqttCodec::new(ProtocolVersion::V5, 1000),
    );
    assert!(matches!(
        framed.next().await.unwrap(),
        Err(CodecError::Decode(DecodeError::PacketTooLarge {
            size: 16_386,
            max: 1000
        }))
    ));
}

/// The stream ends in the middle of a packet: an IO error, not a packet.
#[tokio::test]
async fn framed_read_end_of_stream_inside_a_packet() {
    let mut framed = FramedRead::new(
        Mock::new([Read::Data(vec![0x40, 0x02, 0x00])]),
        MqttCodec::new(ProtocolVersion::V311, 1024),
    );
    assert!(matches!(
        framed.next().await.unwrap(),
        Err(CodecError::Io(_))
    ));
}

/// `FramedWrite` encodes in the codec's version and reports encode errors.
#[tokio::test]
async fn framed_write_bytes_and_errors() {
    let wire = write_all(
        ProtocolVersion::V5,
        &[Packet::from(PubAck::new(id(10))), Packet::PingReq],
    )
    .await;
    assert_eq!(wire, [0x40, 0x02, 0x00, 0x0A, 0xC0, 0x00]);

    let mut sink = FramedWrite::new(Vec::new(), MqttCodec::new(ProtocolVersion::V311, 1024));
    let auth = Packet::Auth(fulmar_codec::Auth::default());
    assert!(matches!(sink.send(auth).await, Err(CodecError::Encode(_))));
    assert!(sink.get_ref().is_empty());
}
