//! A broker whose tokio runtime is dropped without `shutdown` (the end of a
//! `#[tokio::test]` that forgot it, an application that drops its runtime)
//! lets go of everything: its connections, hibernating ones too, are closed,
//! its threads end and its store is closed (it can be opened again).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fulmar_broker::{Broker, DiskStore};

/// Threads of this process named `name`.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|comm| comm.trim_end() == name)
                })
                .count()
        })
        .unwrap_or(0)
}

/// Retries `check` for up to 10 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < Duration::from_secs(10), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn dropping_the_runtime_closes_connections_threads_and_the_store() {
    let dir = std::env::temp_dir().join(format!("fulmar-rtdrop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for round in 0..2 {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        // Closed by its writer thread as it ends, soon after the last round.
        let mut store = None;
        eventually("the store opens again", || {
            store = DiskStore::open(&dir).ok();
            store.is_some()
        });
        let store = store.unwrap();
        let mut client = runtime.block_on(async {
            let broker = Broker::builder()
                .tcp_listener("127.0.0.1:0")
                .hibernate_after(Some(Duration::from_millis(20)))
                .store(Arc::new(store))
                .start()
                .await
                .unwrap();
            let port = broker.local_addrs().first().unwrap().port();
            let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
            // CONNECT 3.1.1, client "c0"/"c1", keep alive 60 s.
            let id = b'0' + round;
            client
                .write_all(&[
                    0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 2, b'c', id,
                ])
                .unwrap();
            let mut connack = [0u8; 4];
            client.read_exact(&mut connack).unwrap();
            assert_eq!(connack, [0x20, 2, 0, 0]);
            while broker.stats().connections_hibernating == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            client
        });
        drop(runtime);
        // The broker's end of the connection is closed: EOF.
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(client.read(&mut byte).unwrap(), 0, "round {round}");
        eventually("the hibernation thread ends", || {
            threads_named("fulmar-hibernate") == 0
        });
        eventually("the store's writer thread ends", || {
            threads_named("fulmar-store") == 0
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
}
