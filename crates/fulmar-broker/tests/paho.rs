//! Interop with the Python paho-mqtt 2.x client for MQTT 5.0 features; the
//! scenarios are in `paho_v5.py`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{GUARD, addr, start};

/// Runs one scenario of `paho_v5.py` against a fresh broker.
async fn scenario(name: &str) {
    let check = std::process::Command::new("python3")
        .args([
            "-c",
            "import paho.mqtt; assert paho.mqtt.__version__ >= '2'",
        ])
        .output();
    assert!(
        check.is_ok_and(|o| o.status.success()),
        "python3 with paho-mqtt 2.x is required (pip install 'paho-mqtt>=2')"
    );
    let broker = start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/paho_v5.py");
    let port = addr(&broker).port().to_string();
    let run = tokio::process::Command::new("python3")
        .args([script, &port, name])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(GUARD, run)
        .await
        .expect("paho scenario did not finish")
        .unwrap();
    assert!(
        out.status.success(),
        "paho scenario {name} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    broker.shutdown().await;
}

// v5:MQTT-3.8.3-3
#[tokio::test]
async fn paho_no_local() {
    scenario("no_local").await;
}

// v5:MQTT-3.3.1-9 v5:MQTT-3.3.1-10 v5:MQTT-3.3.1-11 v5:MQTT-3.3.1-6
#[tokio::test]
async fn paho_retain_handling() {
    scenario("retain_handling").await;
}

// v5:MQTT-4.8.2-1 v5:MQTT-4.8.2-2 v5:MQTT-4.8.2-3
#[tokio::test]
async fn paho_shared_subscriptions() {
    scenario("shared").await;
}

// v5:MQTT-3.3.2-4 v5:MQTT-3.3.2-15 v5:MQTT-3.3.2-16 v5:MQTT-3.3.2-17 v5:MQTT-3.3.2-18
#[tokio::test]
async fn paho_request_response_and_user_properties() {
    scenario("request_response").await;
}

// v5:MQTT-3.3.2-12 v5:MQTT-3.3.2-11
#[tokio::test]
async fn paho_topic_aliases_both_ways() {
    scenario("topic_alias").await;
}

// v5:MQTT-3.3.2-5 v5:MQTT-3.3.2-6
#[tokio::test]
async fn paho_message_expiry() {
    scenario("message_expiry").await;
}
