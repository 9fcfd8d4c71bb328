//! The client's WebSocket transport: a broker (or anything on the path of a
//! plain ws:// connection) that sends pings and does not read makes the
//! client keep at most one pong to send; its heap does not grow with what
//! the peer sends (it queued a pong per ping without bound before).

#![cfg(feature = "websocket")]
#![allow(
    unsafe_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::result_large_err
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use fulmar_client::{Client, ConnectOptions, Reconnect, Transport};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
fn size(layout: Layout) -> isize {
    isize::try_from(layout.size()).unwrap_or(isize::MAX)
}
// SAFETY: forwarded to `System`; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(size(l), Ordering::Relaxed);
        // SAFETY: forwarded.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(size(l), Ordering::Relaxed);
        // SAFETY: forwarded.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(
            isize::try_from(n).unwrap_or(isize::MAX) - size(l),
            Ordering::Relaxed,
        );
        // SAFETY: forwarded.
        unsafe { System.realloc(p, l, n) }
    }
}
#[global_allocator]
static ALLOCATOR: Counting = Counting;

// (memory, no spec statement)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_from_a_broker_that_does_not_read_stays_bounded() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<isize>();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mqtt = |_: &Request, mut r: Response| {
            r.headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
            Ok(r)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(tcp, mqtt)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = LIVE.load(Ordering::Relaxed);
        // Unmasked server pings with 125-byte payloads, never reading.
        let mut ping = vec![0x89u8, 125];
        ping.extend_from_slice(&[b'p'; 125]);
        let chunk: Vec<u8> = ping
            .iter()
            .copied()
            .cycle()
            .take(ping.len() * 8000)
            .collect();
        let tcp = ws.get_mut();
        for _ in 0..64 {
            if tokio::time::timeout(Duration::from_secs(10), tcp.write_all(&chunk))
                .await
                .is_err()
            {
                break;
            }
        }
        drop(chunk);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = done_tx.send(LIVE.load(Ordering::Relaxed) - before);
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(ws);
    });
    let options = ConnectOptions::new("127.0.0.1", port)
        .transport(Transport::WebSocket {
            path: "/mqtt".into(),
        })
        .connect_timeout(Duration::from_secs(60))
        .reconnect(Reconnect::disabled());
    let client = tokio::spawn(Client::connect(options));
    let grown = tokio::time::timeout(Duration::from_secs(60), done_rx)
        .await
        .unwrap()
        .unwrap();
    eprintln!("client heap grew by {grown} bytes for ~64 MiB of pings");
    client.abort();
    server.abort();
    assert!(grown < 8 << 20, "client heap grew by {grown} bytes");
}
