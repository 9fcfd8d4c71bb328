//! Differential test against mosquitto 2.0 (the Debian package): the
//! scenarios of `differential.py` run against an embedded fulmar broker and
//! against a mosquitto this test starts, at the same time, and their
//! transcripts must be identical. The script leaves out what the spec lets
//! brokers choose (see its docstring), so a difference is a broker breaking
//! a rule; each scenario names the statements it checks.
//!
//! Scenarios and their statements (also in `differential.py`):
//! MQTT-3.3.1-5 MQTT-3.3.1-6 MQTT-3.3.1-7 v3:MQTT-3.3.1-9 v3:MQTT-3.3.1-10
//! v3:MQTT-3.3.1-11 MQTT-3.8.4-6 v5:MQTT-3.8.4-8 v5:MQTT-3.3.1-9
//! v5:MQTT-3.3.1-10 v5:MQTT-3.3.1-11 v5:MQTT-3.8.4-4 v5:MQTT-3.3.1-12
//! v5:MQTT-3.3.1-13 v5:MQTT-3.3.2-5 v5:MQTT-3.3.2-6 MQTT-3.1.2-8
//! MQTT-3.1.2-10 v5:MQTT-3.1.3-9 MQTT-3.2.2-1 MQTT-3.2.2-2 MQTT-3.1.2-4
//! v5:MQTT-3.1.2-23 MQTT-4.4.0-1 MQTT-4.6.0-1 MQTT-4.6.0-2 MQTT-4.6.0-3
//! MQTT-3.3.1-1 MQTT-3.3.1-3 v5:MQTT-3.3.4-2 v5:MQTT-3.3.4-3 v5:MQTT-3.3.4-4
//! v5:MQTT-3.3.4-5 v5:MQTT-3.8.3-3 v5:MQTT-3.8.3-4 v5:MQTT-3.3.2-7
//! v5:MQTT-3.3.2-8 v5:MQTT-3.3.2-9 v5:MQTT-3.3.2-10 v5:MQTT-3.3.2-11
//! v5:MQTT-3.3.2-12 v5:MQTT-3.3.4-9 v5:MQTT-3.1.2-24 v5:MQTT-3.1.2-25
//! v5:MQTT-3.3.2-4 v5:MQTT-3.3.2-15 v5:MQTT-3.3.2-16 v5:MQTT-3.3.2-17
//! v5:MQTT-3.3.2-18 v5:MQTT-3.3.2-20 MQTT-4.7.2-1 MQTT-4.7.1-1 MQTT-4.7.1-2
//! MQTT-4.7.3-1 v5:MQTT-4.8.2-2 v5:MQTT-3.11.3-1 v5:MQTT-3.11.3-2
//! MQTT-3.10.4-4 MQTT-3.10.4-5 v3:MQTT-3.1.3-8 v3:MQTT-3.1.3-9
//! v5:MQTT-3.1.3-6 v5:MQTT-3.2.2-16 MQTT-4.3.3-2 v5:MQTT-4.3.3-3
//! v5:MQTT-4.8.2-3

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{addr, start};
// The mosquitto launcher of fulmar-client's tests (a mosquitto on a
// loopback port of its own, with its own config and directory, killed on
// drop).
#[path = "../../fulmar-client/tests/common/mod.rs"]
mod client_support;
use client_support::Mosquitto;

/// Failure guard for one run of the script (about 20 s).
const SCRIPT_GUARD: Duration = Duration::from_secs(120);

/// The transcript of `differential.py` against the broker on `port`.
async fn transcript(port: u16) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/differential.py");
    let run = tokio::process::Command::new("python3")
        .args([script, &port.to_string()])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(SCRIPT_GUARD, run)
        .await
        .expect("differential.py did not finish")
        .expect("python3 is required");
    assert!(
        out.status.success(),
        "differential.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fulmar_and_mosquitto_agree_on_what_the_spec_requires() {
    let mosquitto = Mosquitto::start();
    let broker = start().await;
    let (ours, theirs) = tokio::join!(transcript(addr(&broker).port()), transcript(mosquitto.port));
    broker.shutdown().await;
    drop(mosquitto);
    assert!(
        !ours.contains("FAILED"),
        "a scenario failed against fulmar:\n{ours}"
    );
    assert!(
        !theirs.contains("FAILED"),
        "a scenario failed against mosquitto:\n{theirs}"
    );
    let (a, b): (Vec<&str>, Vec<&str>) = (ours.lines().collect(), theirs.lines().collect());
    let mut report = String::new();
    let mut section = "";
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i).copied(), b.get(i).copied());
        if let Some(s) = x.filter(|l| l.starts_with("== ")) {
            section = s;
        }
        if x != y {
            report.push_str(&format!(
                "{section}\n  fulmar:    {}\n  mosquitto: {}\n",
                x.unwrap_or("(end)"),
                y.unwrap_or("(end)")
            ));
            break;
        }
    }
    assert!(
        report.is_empty(),
        "first difference:\n{report}\nfulmar's transcript:\n{ours}\nmosquitto's transcript:\n{theirs}"
    );
}
