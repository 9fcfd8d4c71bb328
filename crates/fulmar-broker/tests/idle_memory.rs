//! Memory held by idle connections (issue 8: no more than mosquitto's, about
//! 735 bytes per connection). A counting allocator measures the heap the
//! broker keeps for each connection that sent CONNECT and then waits; the
//! clients are blocking `std` sockets, which allocate nothing on the heap.
//! A deterministic guard against regressions: it counts bytes, not time.
//! The allocator (`counting/mod.rs`) needs `unsafe`: this test binary opts
//! out of the workspace `unsafe_code = "deny"` for that alone.

#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

#[path = "counting/mod.rs"]
mod counting;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
use fulmar_broker::{Broker, BrokerHandle};
use fulmar_codec::{Connect, MqttString, Packet, ProtocolVersion, decode};

use counting::settled;

/// Connects with CONNECT (keep alive 60 s) and waits for a successful CONNACK.
fn connect(addr: SocketAddr, version: ProtocolVersion, id: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut connect = Connect::new(version, MqttString::from(id.to_owned()));
    connect.keep_alive = 60;
    let mut out = BytesMut::new();
    Packet::Connect(Box::new(connect))
        .encode(version, &mut out)
        .unwrap();
    stream.write_all(&out).unwrap();
    let mut buf = BytesMut::new();
    loop {
        if let Some(packet) = decode(&mut buf, version, u32::MAX).unwrap() {
            match packet {
                Packet::ConnAck(ack) => assert!(!ack.reason_code.is_error(), "{ack:?}"),
                other => panic!("expected CONNACK, got {other:?}"),
            }
            return stream;
        }
        let mut chunk = [0u8; 64];
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before CONNACK");
        buf.extend_from_slice(chunk.get(..n).unwrap());
    }
}

/// Opens `n` idle connections, half MQTT 5.0, half 3.1.1.
fn open(addr: SocketAddr, from: usize, n: usize) -> Vec<TcpStream> {
    (from..from + n)
        .map(|i| {
            let version = if i % 2 == 0 {
                ProtocolVersion::V5
            } else {
                ProtocolVersion::V311
            };
            connect(addr, version, &format!("idle-{i}"))
        })
        .collect()
}

/// The heap counters are global: one test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Waits until `n` connections hibernate.
fn hibernating(broker: &BrokerHandle, n: u64) {
    for _ in 0..1000 {
        if broker.stats().connections_hibernating == n {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "{} connections hibernate, not {n}",
        broker.stats().connections_hibernating
    );
}

/// Heap bytes and blocks kept per idle connection, measured over 400
/// connections after 64 that warm up the runtime and the broker's tables;
/// with `hibernate_after`, once every connection hibernates.
fn heap_per_idle_connection(hibernate_after: Option<Duration>) -> (isize, f64) {
    const WARM: usize = 64;
    const N: usize = 400;
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let broker = runtime
        .block_on(
            Broker::builder()
                .hibernate_after(hibernate_after)
                .tcp_listener("127.0.0.1:0")
                .start(),
        )
        .unwrap();
    let addr = broker.local_addrs()[0];
    let asleep = |n: usize| {
        if hibernate_after.is_some() {
            hibernating(&broker, n as u64);
        }
    };
    let warm = open(addr, 0, WARM);
    asleep(WARM);
    let (live_before, blocks_before) = settled();
    let idle = open(addr, WARM, N);
    asleep(WARM + N);
    let (live_after, blocks_after) = settled();
    assert_eq!(broker.stats().clients_connected, (WARM + N) as u64);
    let n = isize::try_from(N).unwrap();
    let per_connection = (live_after - live_before) / n;
    let blocks = (blocks_after - blocks_before) as f64 / N as f64;
    drop(idle);
    drop(warm);
    runtime.block_on(broker.shutdown());
    (per_connection, blocks)
}

#[test]
fn a_hibernating_connection_keeps_less_heap() {
    // (memory, no spec statement)
    let (per_connection, blocks) = heap_per_idle_connection(Some(Duration::from_millis(20)));
    eprintln!("hibernating connection: {per_connection} bytes of heap in {blocks:.2} blocks");
    // Debug build: 480 bytes in 4.2 blocks since the dormant state keeps
    // the client identifier only in its session (496 before, the thread's
    // entry 232 bytes; 216 now, see `hibernate.rs`).
    // 489 bytes in 4.2 blocks when this bound was set (938 in
    // 7.2 before the dormant forms), against 1715 in 8 for the same
    // connection awake (the test below). Per connection: the hibernation
    // thread's entry (232: the connection's `Dormant` state with its
    // 128-byte `DormantSession`, and the inbox's waker), the inbox (104),
    // the session entry (40), the client identifier (24, shared by the
    // session table, the connection and its dormant session), and the
    // growth of the session table (about 56 here), the deadline index
    // (about 20) and the thread's table (about 9); no task, no reactor
    // registration, no buffers.
    assert!(
        per_connection <= 530,
        "a hibernating connection keeps {per_connection} bytes"
    );
}

#[test]
fn an_idle_connection_keeps_little_heap() {
    // (memory, no spec statement)
    let (per_connection, blocks) = heap_per_idle_connection(None);
    eprintln!("idle connection: {per_connection} bytes of heap in {blocks:.2} blocks");
    // Debug build (`cargo test`): 1795 bytes in 8 blocks when this bound was
    // set, 1715 since the session entry and the inbox shrank, 1739 with the
    // two words of pacing (a paused transport, a pending pace) (2059 before
    // the idle `Session` shrank from 528 to 280 bytes),
    // 7287 bytes in 15 blocks at commit 33bd463 (before issue 8's work):
    // the connection state with its server `Session`, the task, the
    // runtime's I/O registration (256 bytes), the inbox, the session entry
    // and three copies of the client identifier. The release build's futures
    // are smaller; `fulmar bench --idle` measures that one (benches/README.md).
    // tokio aligns a task to 128 bytes, so a few bytes more in the
    // connection's future can cost 128 per connection: 1787 became 1923 when
    // a second boxed await with a value held across both (the
    // re-authorization rounds) went into `Connection::run` (its future 400
    // -> 424 bytes, release and debug); 1795 once both were one boxed future
    // again. The bound catches the next such step.
    assert!(
        per_connection <= 1850,
        "an idle connection keeps {per_connection} bytes"
    );
}
