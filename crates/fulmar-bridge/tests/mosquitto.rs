//! Bridges between fulmar and the Debian mosquitto broker, both ways round:
//! fulmar-bridge connecting to mosquitto, and a mosquitto bridge (its
//! `connection` section) connecting to a fulmar broker. MQTT 3.1.1 and 5.0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../fulmar-client/tests/common/mod.rs"]
mod common;
mod support;

use std::time::Duration;

use common::{Listener, Mosquitto, guard};
use fulmar_bridge::{Direction, MqttBridge, Remote};
use fulmar_broker::Broker;
use fulmar_client::{Client, ConnectOptions, ProtocolVersion, QoS};
use futures::StreamExt;
use support::{VERSIONS, broker, next, pair, rule};

fn text(topic: &str, payload: &[u8]) -> (String, String) {
    (
        topic.to_owned(),
        String::from_utf8_lossy(payload).into_owned(),
    )
}

/// A client of mosquitto, subscribed to everything but `$SYS`.
async fn watcher(port: u16) -> (Client, fulmar_client::Subscription) {
    let (client, _) = guard(Client::connect(ConnectOptions::new("127.0.0.1", port)))
        .await
        .unwrap();
    let all = guard(client.subscribe("#", QoS::AtLeastOnce))
        .await
        .unwrap();
    (client, all)
}

async fn next_at(sub: &mut fulmar_client::Subscription) -> (String, String) {
    let m = guard(sub.next()).await.expect("client closed");
    text(&m.topic, &m.payload)
}

// fulmar-bridge to mosquitto: out with a prefix, in, both ways without an
// echo (5.0: No Local; 3.1.1: mosquitto honours try_private), and a
// message retained on mosquitto before the bridge connected.
#[tokio::test]
async fn fulmar_bridges_to_mosquitto() {
    for version in VERSIONS {
        let mosquitto = Mosquitto::start();
        let (client, mut at_remote) = watcher(mosquitto.port).await;
        guard(
            client
                .publish("down/config", "v1")
                .qos(QoS::AtLeastOnce)
                .retain(true),
        )
        .await
        .unwrap();
        assert_eq!(next_at(&mut at_remote).await, pair("down/config", "v1"));

        let mut options = ConnectOptions::new("127.0.0.1", mosquitto.port)
            .protocol_version(version)
            .client_id("fulmar-edge")
            .clean_start(false);
        if version == ProtocolVersion::V5 {
            options = options.session_expiry_interval(300);
        }
        let bridge = MqttBridge::new([Remote::new("mosquitto", options)
            .rule(rule("up/#", Direction::Out, "", "edge/"))
            .rule(rule("down/#", Direction::In, "cloud/", ""))
            .rule(rule("chat/#", Direction::Both, "", ""))])
        .unwrap();
        let local = Broker::builder()
            .bridge(bridge.bridge())
            .start()
            .await
            .unwrap();
        let mut at_local = local.subscribe("#").unwrap();
        bridge.attach(&local);
        guard(bridge.wait_connected()).await;

        let got = next(&mut at_local).await;
        assert_eq!(
            (text(&got.topic, &got.payload), got.retain),
            (pair("cloud/down/config", "v1"), true),
            "{version:?}"
        );
        local
            .publish("up/temp", "20", QoS::AtLeastOnce, false)
            .unwrap();
        assert_eq!(
            text(&next(&mut at_local).await.topic, b""),
            pair("up/temp", "")
        );
        assert_eq!(next_at(&mut at_remote).await, pair("edge/up/temp", "20"));
        guard(client.publish("down/cmd", "go").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        assert_eq!(next_at(&mut at_remote).await, pair("down/cmd", "go"));
        let got = next(&mut at_local).await;
        assert_eq!(text(&got.topic, &got.payload), pair("cloud/down/cmd", "go"));

        // Both ways: once each way, nothing comes back.
        local
            .publish("chat/a", "from-fulmar", QoS::AtLeastOnce, false)
            .unwrap();
        assert_eq!(next(&mut at_local).await.topic.as_str(), "chat/a");
        assert_eq!(next_at(&mut at_remote).await, pair("chat/a", "from-fulmar"));
        guard(
            client
                .publish("chat/b", "from-mosquitto")
                .qos(QoS::AtLeastOnce),
        )
        .await
        .unwrap();
        assert_eq!(
            next_at(&mut at_remote).await,
            pair("chat/b", "from-mosquitto")
        );
        let got = next(&mut at_local).await;
        assert_eq!(
            text(&got.topic, &got.payload),
            pair("chat/b", "from-mosquitto")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        local.publish("end", "", QoS::AtMostOnce, false).unwrap();
        assert_eq!(
            next(&mut at_local).await.topic.as_str(),
            "end",
            "{version:?}: no echo here"
        );
        guard(client.publish("end", "")).await.unwrap();
        assert_eq!(
            next_at(&mut at_remote).await,
            pair("end", ""),
            "{version:?}: no echo there"
        );

        let stats = bridge.stats().remove(0);
        assert_eq!((stats.received, stats.dropped), (3, 0), "{version:?}");
        bridge.shutdown().await;
        local.shutdown().await;
        client.disconnect().await.unwrap();
    }
}

// A mosquitto bridge (its defaults: try_private on, so protocol level 0x84
// or 0x85) into fulmar: it connects, subscribes for its `in` topics, and
// gets none of its own `both` messages back.
#[tokio::test]
async fn mosquitto_bridges_into_fulmar() {
    for (version, name) in [
        (ProtocolVersion::V5, "mqttv50"),
        (ProtocolVersion::V311, "mqttv311"),
    ] {
        let cloud = broker().await;
        let port = cloud.local_addrs()[0].port();
        let config = format!(
            "connection to-fulmar\naddress 127.0.0.1:{port}\nbridge_protocol_version {name}\n\
             cleansession false\nremote_clientid edge-mosquitto\n\
             topic up/# out 1\ntopic down/# in 1\ntopic chat/# both 1\n"
        );
        let mosquitto = Mosquitto::with_extra(Listener::Tcp, true, &config);
        let mut at_cloud = cloud.subscribe("#").unwrap();
        // The bridge is in once its two subscriptions are (ours is the third).
        guard(async {
            while cloud.stats().subscriptions < 3 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        let (client, mut at_edge) = watcher(mosquitto.port).await;

        guard(client.publish("up/temp", "20").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        assert_eq!(next_at(&mut at_edge).await, pair("up/temp", "20"));
        let got = next(&mut at_cloud).await;
        assert_eq!(
            text(&got.topic, &got.payload),
            pair("up/temp", "20"),
            "{version:?}"
        );

        cloud
            .publish("down/cmd", "go", QoS::AtLeastOnce, false)
            .unwrap();
        assert_eq!(next(&mut at_cloud).await.topic.as_str(), "down/cmd");
        assert_eq!(
            next_at(&mut at_edge).await,
            pair("down/cmd", "go"),
            "{version:?}"
        );

        // Both ways: what the bridge published on fulmar is not sent back to it.
        guard(client.publish("chat/a", "from-edge").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        assert_eq!(next_at(&mut at_edge).await, pair("chat/a", "from-edge"));
        let got = next(&mut at_cloud).await;
        assert_eq!(text(&got.topic, &got.payload), pair("chat/a", "from-edge"));
        cloud
            .publish("chat/b", "from-cloud", QoS::AtLeastOnce, false)
            .unwrap();
        assert_eq!(next(&mut at_cloud).await.topic.as_str(), "chat/b");
        assert_eq!(next_at(&mut at_edge).await, pair("chat/b", "from-cloud"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        guard(client.publish("end", "")).await.unwrap();
        assert_eq!(
            next_at(&mut at_edge).await,
            pair("end", ""),
            "{version:?}: no echo at the edge"
        );
        cloud.publish("end", "", QoS::AtMostOnce, false).unwrap();
        assert_eq!(
            next(&mut at_cloud).await.topic.as_str(),
            "end",
            "{version:?}: no echo in fulmar"
        );
        client.disconnect().await.unwrap();
        drop(mosquitto);
        cloud.shutdown().await;
    }
}

// A bridge over TLS with a client certificate (mosquitto's listener
// requires one), as bridges to a cloud broker usually run.
#[tokio::test]
async fn fulmar_bridges_to_mosquitto_over_tls() {
    use common::Pki;
    use fulmar_client::{TlsOptions, Transport};

    let pki = Pki::generate();
    let mosquitto = Mosquitto::with_listener(pki.listener(true));
    // The certificate names localhost; the clients dial 127.0.0.1.
    let tls = || {
        TlsOptions::new()
            .without_system_roots()
            .ca_pem(pki.ca_pem.as_bytes())
            .unwrap()
            .client_auth_pem(
                pki.client_cert_pem.as_bytes(),
                pki.client_key_pem.as_bytes(),
            )
            .unwrap()
            .server_name("localhost")
    };
    let options = ConnectOptions::new("127.0.0.1", mosquitto.port)
        .client_id("edge-tls")
        .transport(Transport::Tls(tls()));
    let bridge = MqttBridge::new([Remote::new("cloud", options)
        .rule(rule("up/#", Direction::Out, "", ""))
        .rule(rule("down/#", Direction::In, "", ""))])
    .unwrap();
    let local = Broker::builder()
        .bridge(bridge.bridge())
        .start()
        .await
        .unwrap();
    let mut at_local = local.subscribe("down/#").unwrap();
    bridge.attach(&local);
    guard(bridge.wait_connected()).await;

    // A watcher on mosquitto, over TLS too.
    let (client, _) = guard(Client::connect(
        ConnectOptions::new("127.0.0.1", mosquitto.port).transport(Transport::Tls(tls())),
    ))
    .await
    .unwrap();
    let mut at_remote = guard(client.subscribe("up/#", QoS::AtLeastOnce))
        .await
        .unwrap();
    local
        .publish("up/a", "out", QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(next_at(&mut at_remote).await, pair("up/a", "out"));
    guard(client.publish("down/b", "in").qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    let got = next(&mut at_local).await;
    assert_eq!(text(&got.topic, &got.payload), pair("down/b", "in"));
    client.disconnect().await.unwrap();
    bridge.shutdown().await;
    local.shutdown().await;
}
