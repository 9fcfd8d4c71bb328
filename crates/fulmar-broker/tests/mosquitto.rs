//! Interop with the mosquitto command line clients (Debian package
//! mosquitto-clients), MQTT 3.1, 3.1.1 and 5.0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Output, Stdio};
use std::time::Duration;

use common::{GUARD, addr, next, start};
use fulmar_broker::BrokerHandle;
use fulmar_codec::QoS;
use tokio::process::{Child, Command};

/// MQTT 3.1 (`MQIsdp`) too: mosquitto_pub and mosquitto_sub still speak it.
const VERSIONS: [&str; 3] = ["mqttv31", "mqttv311", "mqttv5"];

/// A mosquitto client command against `broker`; fails clearly if the binary is missing.
fn tool(name: &str, broker: &BrokerHandle, version: &str) -> Command {
    let found = std::process::Command::new(name)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        found.is_ok(),
        "{name} is not installed: install the Debian package mosquitto-clients"
    );
    let mut cmd = Command::new(name);
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &addr(broker).port().to_string(),
        "-V",
        version,
    ]);
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn finish(child: Child) -> Output {
    let out = tokio::time::timeout(GUARD, child.wait_with_output())
        .await
        .expect("mosquitto client did not finish")
        .unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

async fn run(cmd: &mut Command) -> Output {
    finish(cmd.spawn().unwrap()).await
}

/// Waits (bounded) until the broker holds at least `n` subscriptions.
async fn wait_subscriptions(broker: &BrokerHandle, n: usize) {
    tokio::time::timeout(GUARD, async {
        while broker.stats().subscriptions < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("subscription not made");
}

async fn wait_connections(broker: &BrokerHandle, n: u64) {
    tokio::time::timeout(GUARD, async {
        while broker.stats().connections != n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("connection count not reached");
}

// MQTT-3.3.4-1 MQTT-3.8.4-1 v3:MQTT-4.3.2-2 v5:MQTT-4.3.2-4 v3:MQTT-4.3.3-2 v5:MQTT-4.3.3-8
// v3:MQTT-7.0.0-2 (another implementation's clients interoperate with no extension)
#[tokio::test]
async fn mosquitto_pub_to_mosquitto_sub_at_every_qos() {
    let broker = start().await;
    for version in VERSIONS {
        for qos in ["0", "1", "2"] {
            let topic = format!("interop/{version}/{qos}");
            let sub = tool("mosquitto_sub", &broker, version)
                .args(["-t", &topic, "-q", qos, "-C", "1", "-W", "10"])
                .spawn()
                .unwrap();
            wait_subscriptions(&broker, 1).await;
            run(tool("mosquitto_pub", &broker, version)
                .args(["-t", &topic, "-q", qos, "-m", "hello"]))
            .await;
            let out = finish(sub).await;
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                "hello",
                "{version} qos {qos}"
            );
            wait_connections(&broker, 0).await;
        }
    }
    broker.shutdown().await;
}

// MQTT-3.3.1-5 v3:MQTT-3.3.1-6 v3:MQTT-3.3.1-8 v5:MQTT-3.3.1-9
#[tokio::test]
async fn mosquitto_retained_messages() {
    let broker = start().await;
    for version in VERSIONS {
        let topic = format!("retained/{version}");
        run(tool("mosquitto_pub", &broker, version)
            .args(["-t", &topic, "-q", "1", "-r", "-m", "kept"]))
        .await;
        let out = run(tool("mosquitto_sub", &broker, version).args([
            "-t",
            &topic,
            "-C",
            "1",
            "-W",
            "10",
            "--retained-only",
        ]))
        .await;
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "kept");
        // An empty retained message deletes it.
        run(tool("mosquitto_pub", &broker, version).args(["-t", &topic, "-q", "1", "-r", "-n"]))
            .await;
    }
    assert_eq!(broker.stats().retained, 0);
    broker.shutdown().await;
}

// v3:MQTT-3.1.2-8 v5:MQTT-3.1.2-8
#[tokio::test]
async fn mosquitto_will_is_published_when_the_client_is_killed() {
    let broker = start().await;
    let mut wills = broker.subscribe("wills/#").unwrap();
    for version in VERSIONS {
        let topic = format!("wills/{version}");
        let mut sub = tool("mosquitto_sub", &broker, version)
            .args([
                "-t",
                "nothing",
                "--will-topic",
                &topic,
                "--will-payload",
                "gone",
                "--will-qos",
                "1",
            ])
            .spawn()
            .unwrap();
        wait_subscriptions(&broker, 2).await;
        sub.kill().await.unwrap();
        let got = next(&mut wills).await;
        assert_eq!(
            (got.topic.as_str(), &got.payload[..]),
            (topic.as_str(), &b"gone"[..])
        );
        wait_connections(&broker, 0).await;
    }
    broker.shutdown().await;
}

// v3:MQTT-3.1.2-4 v3:MQTT-3.1.2-5 v5:MQTT-3.1.2-5 v5:MQTT-3.1.2-23 MQTT-4.5.0-1
#[tokio::test]
async fn mosquitto_session_resume_delivers_queued_messages() {
    let broker = start().await;
    for version in VERSIONS {
        let id = format!("resume-{version}");
        let topic = format!("resume/{version}");
        let mut args = vec!["-c", "-i", &id, "-q", "1", "-t", &topic];
        if version == "mqttv5" {
            args.extend(["-x", "60"]);
        }
        run(tool("mosquitto_sub", &broker, version)
            .args(&args)
            .arg("-E"))
        .await;
        wait_connections(&broker, 0).await;
        broker
            .publish(&topic, "queued", QoS::AtLeastOnce, false)
            .unwrap();
        let out = run(tool("mosquitto_sub", &broker, version)
            .args(&args)
            .args(["-C", "1", "-W", "10"]))
        .await;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "queued",
            "{version}"
        );
    }
    broker.shutdown().await;
}
