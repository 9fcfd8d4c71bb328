//! `fulmar broker --cluster`: two broker processes joined over a real
//! nats-server with JetStream. Skipped (with a line saying so) when
//! `nats-server` is not installed; `scripts/test.sh` installs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{FulmarBroker, Sub, free_port, publish_ok, temp_dir};

struct Nats(Child);

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A nats-server with JetStream on a free loopback port, or `None` when
/// nats-server is not installed.
fn start_nats() -> Option<(Nats, u16)> {
    let port = free_port();
    let store = temp_dir();
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(&store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let nats = Nats(child);
    for _ in 0..300 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((nats, port));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nats-server did not start on port {port}");
}

#[test]
fn two_brokers_on_one_nats_deliver_each_others_messages() {
    let Some((_nats, nats_port)) = start_nats() else {
        eprintln!(
            "SKIP two_brokers_on_one_nats_deliver_each_others_messages: nats-server is not installed"
        );
        return;
    };
    let url = format!("nats://127.0.0.1:{nats_port}");
    let mut a = FulmarBroker::start(&["--cluster", &url, "--no-persistence"]);
    let mut b = FulmarBroker::start(&["--cluster", &url, "--no-persistence"]);
    a.wait_for("cluster: connected to NATS");
    b.wait_for("cluster: connected to NATS");
    // A subscriber on B, a publisher on A. The NATS subscription follows the
    // SUBACK closely: publish until the subscriber has its message.
    let sub = Sub::start(b.port, &["-t", "cluster/#", "-C", "1", "-v"]);
    let mut child = sub;
    let mut delivered = None;
    for i in 0..150 {
        publish_ok(
            a.port,
            &["-t", "cluster/x", "-m", &format!("hello-{i}"), "-q", "1"],
        );
        if let Some(out) = child.try_output() {
            delivered = Some(out);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = delivered.expect("the subscriber on B never got A's message");
    assert!(out.starts_with("cluster/x hello-"), "{out:?}");
}
