//! The WebSocket listener: heap the broker keeps or grows for a
//! WebSocket peer, measured with a counting allocator (as idle_memory.rs).
//! The peers are raw blocking `std` sockets speaking RFC 6455 by hand, so
//! that they allocate (almost) nothing on the heap themselves.

#![cfg(feature = "websocket")]
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

#[path = "counting/mod.rs"]
mod counting;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fulmar_broker::{Broker, BrokerHandle, Limits};
use fulmar_codec::{Connect, MqttString, Packet, ProtocolVersion, Publish};

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Live heap bytes once they stop changing.
fn settled() -> isize {
    counting::settled().0
}

/// A client frame (masked with a zero key, which leaves the payload as is).
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    frame_header_len(&mut out, payload.len());
    out.extend_from_slice(payload);
    out
}

fn frame_header_len(out: &mut Vec<u8>, len: usize) {
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
}

/// The WebSocket handshake at /mqtt, subprotocol mqtt.
fn ws_open(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "GET /mqtt HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "closed in handshake");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// Reads one unmasked server frame; returns (opcode, payload).
fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).unwrap();
    let len = match h[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).unwrap();
            usize::from(u16::from_be_bytes(l))
        }
        127 => {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).unwrap();
            u64::from_be_bytes(l) as usize
        }
        n => usize::from(n),
    };
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).unwrap();
    (h[0] & 0x0f, p)
}

/// WebSocket handshake, CONNECT 3.1.1 (keep alive 0) in one binary frame, CONNACK.
fn ws_mqtt(addr: SocketAddr, id: &str) -> TcpStream {
    let mut s = ws_open(addr);
    let mut connect = Connect::new(ProtocolVersion::V311, MqttString::from(id.to_owned()));
    connect.keep_alive = 0;
    let mut out = BytesMut::new();
    Packet::Connect(Box::new(connect))
        .encode(ProtocolVersion::V311, &mut out)
        .unwrap();
    s.write_all(&frame(2, &out)).unwrap();
    let (op, p) = read_frame(&mut s);
    assert_eq!((op, &p[..]), (2, &[0x20, 0x02, 0x00, 0x00][..]));
    s
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// For one test at a time (the heap counts are process-wide): the lock, a
/// runtime, and a broker on it with a WebSocket listener at /mqtt.
fn setup(
    limits: Limits,
) -> (
    std::sync::MutexGuard<'static, ()>,
    tokio::runtime::Runtime,
    BrokerHandle,
    SocketAddr,
) {
    let serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let rt = runtime();
    let broker = rt
        .block_on(
            Broker::builder()
                .limits(limits)
                .ws_listener("127.0.0.1:0", "/mqtt")
                .start(),
        )
        .unwrap();
    let addr = broker.local_addrs()[0];
    (serial, rt, broker, addr)
}

/// A peer that sends WebSocket pings and never reads: the broker keeps at
/// most one pong to send (the latest, as RFC 6455 5.5.3 allows), its heap
/// does not grow with what the peer sends (it grew by as much before).
// (memory, no spec statement)
#[test]
fn ping_flood_from_a_peer_that_does_not_read_stays_bounded() {
    let (_serial, rt, broker, addr) = setup(Limits::default());
    let mut s = ws_mqtt(addr, "flood");
    let before = settled();
    let ping = frame(9, &[b'p'; 125]);
    let chunk: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 8000)
        .collect();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut sent = 0usize;
    for _ in 0..64 {
        if s.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    drop(chunk);
    let after = settled();
    let grown = after - before;
    eprintln!("sent {sent} bytes of pings, broker heap grew by {grown} bytes");
    drop(s);
    rt.block_on(broker.shutdown());
    assert!(
        grown < 256 << 10,
        "the broker's heap grew by {grown} bytes for {sent} bytes of pings"
    );
}

/// Heap kept per idle WebSocket connection (an idle TCP one keeps < 2000
/// bytes; with tungstenite's default 128 KiB read buffer it was ~134 KiB).
// (memory, no spec statement)
#[test]
fn an_idle_websocket_connection_keeps_little_heap() {
    const N: usize = 50;
    let (_serial, rt, broker, addr) = setup(Limits::default());
    let warm: Vec<_> = (0..8).map(|i| ws_mqtt(addr, &format!("w{i}"))).collect();
    let before = settled();
    let idle: Vec<_> = (0..N).map(|i| ws_mqtt(addr, &format!("i{i}"))).collect();
    let after = settled();
    let per = (after - before) / N as isize;
    eprintln!("idle WebSocket connection: {per} bytes of heap");
    drop(idle);
    drop(warm);
    rt.block_on(broker.shutdown());
    assert!(
        per < 8 * 1024,
        "an idle WebSocket connection keeps {per} bytes"
    );
}

/// After one large PUBLISH, an idle WebSocket connection keeps no buffer of
/// that size (the TCP transport drops its read buffer once empty).
// (memory, no spec statement)
#[test]
fn a_large_message_leaves_no_large_buffer_behind() {
    const N: usize = 10;
    let (_serial, rt, broker, addr) = setup(Limits::default());
    let mut conns: Vec<_> = (0..N).map(|i| ws_mqtt(addr, &format!("l{i}"))).collect();
    let before = settled();
    let mut wire = BytesMut::new();
    Packet::from(Publish::new(
        "big".into(),
        Bytes::from(vec![7u8; 1_000_000]),
    ))
    .encode(ProtocolVersion::V311, &mut wire)
    .unwrap();
    let big = frame(2, &wire);
    let received = broker.stats().messages_received;
    for s in &mut conns {
        s.write_all(&big).unwrap();
    }
    for _ in 0..1000 {
        if broker.stats().messages_received >= received + N as u64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(broker.stats().messages_received, received + N as u64);
    assert_eq!(broker.stats().connections, N as u64);
    drop(big);
    drop(wire);
    let after = settled();
    let per = (after - before) / N as isize;
    eprintln!("after one 1 MB PUBLISH each: {per} bytes of heap kept per connection");
    drop(conns);
    rt.block_on(broker.shutdown());
    assert!(per < 16 * 1024, "{per} bytes kept per idle connection");
}

/// A frame header that announces a frame near the limit (twice the Maximum
/// Packet Size) does not make the broker allocate all of it at once: what it
/// reserves ahead of the bytes is within the read-ahead budget
/// (`max_read_ahead_bytes`), as for TCP.
// (memory, no spec statement)
#[test]
fn a_frame_header_alone_does_not_reserve_the_whole_frame() {
    const N: usize = 8;
    let mut limits = Limits::default();
    limits.max_read_ahead_bytes = 1 << 20;
    let (_serial, rt, broker, addr) = setup(limits);
    let mut conns: Vec<_> = (0..N).map(|i| ws_mqtt(addr, &format!("h{i}"))).collect();
    let before = settled();
    for s in &mut conns {
        // A binary frame of 2,000,000 bytes (the limit is 2 MiB): header only.
        let mut h = vec![0x82];
        frame_header_len(&mut h, 2_000_000);
        s.write_all(&h).unwrap();
        s.write_all(&[0x30]).unwrap(); // and one byte of it
    }
    let after = settled();
    let grown = after - before;
    eprintln!("{N} frame headers (15 bytes each): heap grew by {grown} bytes");
    drop(conns);
    rt.block_on(broker.shutdown());
    assert!(
        grown < (N as isize) * (16 << 10),
        "{N} frame headers made the broker allocate {grown} bytes"
    );
}

/// `Stats::bytes_received`/`bytes_sent` count MQTT bytes, above the
/// WebSocket framing (as their documentation says).
// (counters, no spec statement)
#[test]
fn bytes_counters_count_mqtt_bytes_without_websocket_framing() {
    let (_serial, rt, broker, addr) = setup(Limits::default());
    // CONNECT of 15 bytes in a frame of 21, after a handshake of ~200;
    // CONNACK of 4 bytes in a frame of 6.
    let s = ws_mqtt(addr, "c");
    // The CONNACK is counted once its write returns, maybe after it arrived.
    let mut stats = broker.stats();
    for _ in 0..100 {
        if stats.bytes_sent > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        stats = broker.stats();
    }
    drop(s);
    rt.block_on(broker.shutdown());
    assert_eq!((stats.bytes_received, stats.bytes_sent), (15, 4));
}

/// A ping is answered with a pong carrying its payload; a close frame with
/// a close frame (the same status code), then the end of the connection.
// (RFC 6455 5.5, no MQTT statement)
#[test]
fn pings_are_answered_and_a_close_is_echoed() {
    let (_serial, rt, broker, addr) = setup(Limits::default());
    let mut s = ws_mqtt(addr, "p");
    s.write_all(&frame(9, b"hello")).unwrap();
    assert_eq!(read_frame(&mut s), (0xa, b"hello".to_vec()));
    // An empty ping, and a pong (ignored) before it.
    s.write_all(&[frame(0xa, b"x"), frame(9, b"")].concat())
        .unwrap();
    assert_eq!(read_frame(&mut s), (0xa, Vec::new()));
    s.write_all(&frame(8, &1001u16.to_be_bytes())).unwrap();
    assert_eq!(read_frame(&mut s), (8, 1001u16.to_be_bytes().to_vec()));
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?} after the close frame");
    for _ in 0..500 {
        if broker.stats().connections == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(broker.stats().connections, 0);
    rt.block_on(broker.shutdown());
}

/// A packet of 1 MB passes both ways: read from a fragmented message (a
/// binary frame and a continuation frame), delivered to a subscriber in
/// binary frames of at most 64 KiB.
// MQTT-6.0.0-1 MQTT-6.0.0-2
#[test]
fn a_large_packet_goes_through_in_fragments_and_frames_of_at_most_64_kib() {
    let (_serial, rt, broker, addr) = setup(Limits::default());
    let mut sub = ws_mqtt(addr, "sub");
    // SUBSCRIBE 3.1.1, packet id 1, "big" at QoS 0; SUBACK.
    let subscribe = [0x82, 8, 0, 1, 0, 3, b'b', b'i', b'g', 0];
    sub.write_all(&frame(2, &subscribe)).unwrap();
    assert_eq!(read_frame(&mut sub), (2, vec![0x90, 3, 0, 1, 0]));
    let mut publisher = ws_mqtt(addr, "pub");
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut wire = BytesMut::new();
    Packet::from(Publish::new("big".into(), Bytes::from(payload)))
        .encode(ProtocolVersion::V311, &mut wire)
        .unwrap();
    let (head, tail) = wire.split_at(300_000);
    let mut first = frame(2, head);
    first[0] = 0x02; // FIN clear: a continuation follows
    publisher.write_all(&first).unwrap();
    publisher.write_all(&frame(0, tail)).unwrap();
    let mut got = Vec::new();
    let mut frames = 0;
    while got.len() < wire.len() {
        let (op, p) = read_frame(&mut sub);
        assert_eq!(op, 2);
        assert!(p.len() <= 64 * 1024, "a frame of {} bytes", p.len());
        got.extend_from_slice(&p);
        frames += 1;
    }
    assert!(got == wire[..], "the PUBLISH arrived changed");
    assert!(frames >= 16, "{frames} frames");
    drop((sub, publisher));
    rt.block_on(broker.shutdown());
}

/// A frame that breaks RFC 6455 (here: unmasked, from a client) ends the
/// connection with a close frame of status 1002 (protocol error).
// (RFC 6455 5.1, no MQTT statement)
#[test]
fn an_unmasked_client_frame_is_a_protocol_error() {
    let (_serial, rt, broker, addr) = setup(Limits::default());
    let mut s = ws_mqtt(addr, "u");
    // PINGREQ in an unmasked binary frame.
    s.write_all(&[0x82, 2, 0xc0, 0]).unwrap();
    assert_eq!(read_frame(&mut s), (8, 1002u16.to_be_bytes().to_vec()));
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?} after the close frame");
    rt.block_on(broker.shutdown());
}

/// A client that sends its CONNECT right behind the handshake request, in
/// the same write, before the 101 answer: the frame is not lost with the
/// handshake's buffer.
// MQTT-6.0.0-2
#[test]
fn a_frame_sent_with_the_handshake_request_is_read() {
    let (_serial, rt, broker, addr) = setup(Limits::default());
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut connect = Connect::new(ProtocolVersion::V311, MqttString::from("early".to_owned()));
    connect.keep_alive = 0;
    let mut out = BytesMut::new();
    Packet::Connect(Box::new(connect))
        .encode(ProtocolVersion::V311, &mut out)
        .unwrap();
    let mut wire = format!(
        "GET /mqtt HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
    .into_bytes();
    wire.extend_from_slice(&frame(2, &out));
    // And a PINGREQ in a second frame.
    wire.extend_from_slice(&frame(2, &[0xc0, 0]));
    s.write_all(&wire).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "closed in handshake");
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    let mut got = Vec::new();
    while got.len() < 6 {
        let (op, p) = read_frame(&mut s);
        assert_eq!(op, 2);
        got.extend_from_slice(&p);
    }
    assert_eq!(got, [0x20, 0x02, 0x00, 0x00, 0xd0, 0x00]);
    drop(s);
    rt.block_on(broker.shutdown());
}

/// MQTT packets that arrived whole before a frame that breaks the protocol
/// are handled, whether or not the bad frame came in the same TCP segment:
/// here a PUBLISH and a DISCONNECT, then a text frame, in one write. The
/// message is delivered and the will is discarded (the DISCONNECT came
/// first); then the connection closes with status 1003. Before, the bytes
/// decoded in the read that met the bad frame were thrown away with it: the
/// message was lost and the will published.
// MQTT-6.0.0-1 MQTT-3.14.4-3 MQTT-6.0.0-2
#[test]
fn packets_before_a_bad_frame_in_the_same_read_are_handled() {
    let (_serial, rt, broker, addr) = setup(Limits::default());
    let mut sub = {
        let _guard = rt.enter();
        broker.subscribe("#").unwrap()
    };
    let mut s = ws_open(addr);
    let mut connect = Connect::new(ProtocolVersion::V311, MqttString::from("w".to_owned()));
    connect.keep_alive = 0;
    connect.will = Some(fulmar_codec::Will {
        topic: "will".into(),
        payload: Bytes::from_static(b"gone"),
        qos: fulmar_codec::QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    });
    let mut out = BytesMut::new();
    Packet::Connect(Box::new(connect))
        .encode(ProtocolVersion::V311, &mut out)
        .unwrap();
    s.write_all(&frame(2, &out)).unwrap();
    assert_eq!(read_frame(&mut s), (2, vec![0x20, 0x02, 0x00, 0x00]));
    let mut mqtt = BytesMut::new();
    Packet::from(Publish::new("t".into(), Bytes::from_static(b"before")))
        .encode(ProtocolVersion::V311, &mut mqtt)
        .unwrap();
    mqtt.extend_from_slice(&[0xe0, 0x00]); // DISCONNECT
    let wire = [frame(2, &mqtt), frame(1, b"text")].concat();
    s.write_all(&wire).unwrap();
    let first = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), sub.recv()).await })
        .expect("the PUBLISH before the bad frame was not delivered")
        .unwrap();
    assert_eq!(
        (first.topic.as_str(), &first.payload[..]),
        ("t", &b"before"[..])
    );
    // The connection ends with a close frame (DISCONNECT handled or not).
    let (op, _) = read_frame(&mut s);
    assert_eq!(op, 8);
    for _ in 0..500 {
        if broker.stats().connections == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(broker.stats().connections, 0);
    let will =
        rt.block_on(async { tokio::time::timeout(Duration::from_millis(500), sub.recv()).await });
    assert!(
        will.is_err(),
        "the will was published after a DISCONNECT: {will:?}"
    );
    drop(s);
    rt.block_on(broker.shutdown());
}
