//! `fulmar broker` end to end: listens, answers CONNECT, stops on SIGTERM,
//! and fails cleanly on a busy port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The `fulmar` binary in a fresh working directory (for the broker's store).
fn fulmar() -> Command {
    let dir = common::temp_dir();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fulmar"));
    cmd.env_remove("RUST_LOG").current_dir(dir);
    cmd
}

#[test]
fn broker_accepts_a_client_and_stops_on_sigterm() {
    let mut child = fulmar()
        .args(["broker", "-p", "0", "--bind", "127.0.0.1"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("broker exited early").unwrap();
        if let Some((_, addr)) = line.split_once("listening on ") {
            break addr.trim().to_owned();
        }
    };
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // MQTT 3.1.1 CONNECT, clean session, client id "c".
    stream
        .write_all(&[
            0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x00, 0x00, 0x01,
            b'c',
        ])
        .unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);

    // The shell's `kill` builtin: a bare machine may have no `/bin/kill`.
    let status = Command::new("sh")
        .args(["-c", &format!("kill -s TERM {}", child.id())])
        .status()
        .unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    // The connection was closed by the shutdown.
    let mut rest = Vec::new();
    assert_eq!(stream.read_to_end(&mut rest).unwrap_or(0), 0);
}

#[test]
fn a_bad_worker_thread_count_is_a_clear_error() {
    for bad in ["0", "many", "100000"] {
        let out = fulmar()
            .env("TOKIO_WORKER_THREADS", bad)
            .args(["broker", "-p", "0", "--bind", "127.0.0.1"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "TOKIO_WORKER_THREADS={bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("TOKIO_WORKER_THREADS must be a number of threads from 1 to"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // A good one runs.
    let out = fulmar()
        .env("TOKIO_WORKER_THREADS", "1")
        .args(["broker", "--check-config"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn busy_port_is_a_clear_error_with_exit_code_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = fulmar()
        .args(["broker", "-p", &port.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot listen on 127.0.0.1:"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
