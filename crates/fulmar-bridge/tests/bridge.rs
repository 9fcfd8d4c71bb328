//! Two or three fulmar brokers in one process, bridged: topics in, out and
//! both ways with prefixes, no loops, retained messages, a remote that is
//! unreachable or drops the link, and a chain of remotes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../fulmar-client/tests/common/mod.rs"]
mod common;
mod support;

use common::{Proxy, guard};
use fulmar_bridge::{Direction, MqttBridge, Remote, RemoteStats};
use fulmar_broker::{Broker, BrokerHandle, Message};
use fulmar_client::{Client, ConnectOptions, ProtocolVersion, PublishProperties, QoS};
use support::{VERSIONS, broker, next, options, pair, port, rule};

/// The remote "cloud" at `port`, as client "edge".
fn cloud(port: u16, version: ProtocolVersion) -> Remote {
    Remote::new("cloud", options(port, version, "edge"))
}

/// Shuts the bridge down, then the brokers.
async fn stop(bridge: &MqttBridge, brokers: &[&BrokerHandle]) {
    bridge.shutdown().await;
    for broker in brokers {
        broker.shutdown().await;
    }
}

/// A broker bridged to `remotes`, its bridge attached (maybe not connected yet).
async fn attached(remotes: Vec<Remote>) -> (BrokerHandle, MqttBridge) {
    let bridge = MqttBridge::new(remotes).unwrap();
    let local = Broker::builder()
        .tcp_listener("127.0.0.1:0")
        .bridge(bridge.bridge())
        .start()
        .await
        .unwrap();
    bridge.attach(&local);
    (local, bridge)
}

/// A broker bridged to `remotes`, connected.
/// A remote `name`: broker `at` over MQTT 5.0 with client id `id`, and one
/// rule for `pattern` in `direction`, with `remote_prefix` on the remote side.
fn v5_remote(
    name: &str,
    at: &BrokerHandle,
    id: &str,
    pattern: &str,
    direction: Direction,
    remote_prefix: &str,
) -> Remote {
    Remote::new(name, options(port(at), ProtocolVersion::V5, id)).rule(rule(
        pattern,
        direction,
        "",
        remote_prefix,
    ))
}

async fn bridged(remotes: Vec<Remote>) -> (BrokerHandle, MqttBridge) {
    let (local, bridge) = attached(remotes).await;
    guard(bridge.wait_connected()).await;
    (local, bridge)
}

/// Waits until `broker` has no client connected.
async fn no_clients(broker: &BrokerHandle) {
    guard(async {
        while broker.stats().clients_connected > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
}

fn text(message: &Message) -> (String, String) {
    (
        message.topic.to_string(),
        String::from_utf8_lossy(&message.payload).into_owned(),
    )
}

/// Whether `message` carries a bridge's relay mark.
fn relayed(message: &Message) -> bool {
    message
        .properties
        .user_properties
        .iter()
        .any(|(key, _)| key.as_str() == "fulmar-bridge-relay")
}

fn stats(bridge: &MqttBridge) -> RemoteStats {
    bridge.stats().remove(0)
}

/// The counters of every remote once `sent` messages were acknowledged to
/// each (the acknowledgement may come after the message arrived).
async fn settled(bridge: &MqttBridge, sent: &[u64]) -> Vec<RemoteStats> {
    guard(async {
        loop {
            let stats = bridge.stats();
            if stats.iter().map(|s| s.sent).eq(sent.iter().copied()) {
                return stats;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
}

#[tokio::test]
async fn topics_go_out_and_come_in_with_their_prefixes() {
    for version in VERSIONS {
        let remote = broker().await;
        let (local, bridge) = bridged(vec![
            Remote::new("cloud", options(port(&remote), version, "edge-1"))
                .rule(rule("sensors/#", Direction::Out, "", "edge-1/"))
                .rule(rule("cmd/#", Direction::In, "from-cloud/", "")),
        ])
        .await;
        let mut at_remote = remote.subscribe("#").unwrap();
        let mut at_local = local.subscribe("#").unwrap();

        local
            .publish("sensors/hall/temp", "21.5", QoS::AtLeastOnce, false)
            .unwrap();
        // Not matched by an out rule: stays here.
        local
            .publish("private/x", "stays", QoS::AtLeastOnce, false)
            .unwrap();
        assert_eq!(
            text(&next(&mut at_local).await),
            pair("sensors/hall/temp", "21.5")
        );
        assert_eq!(text(&next(&mut at_local).await), pair("private/x", "stays"));
        let got = next(&mut at_remote).await;
        assert_eq!(text(&got), pair("edge-1/sensors/hall/temp", "21.5"));
        assert_eq!(got.qos, QoS::AtLeastOnce, "{version:?}");

        remote
            .publish("cmd/reboot", "now", QoS::ExactlyOnce, false)
            .unwrap();
        assert_eq!(text(&next(&mut at_remote).await), pair("cmd/reboot", "now"));
        let got = next(&mut at_local).await;
        assert_eq!(text(&got), pair("from-cloud/cmd/reboot", "now"));
        // The rule's QoS 1 caps the QoS 2 message.
        assert_eq!(got.qos, QoS::AtLeastOnce, "{version:?}");

        // Nothing else crossed (the private message, or an echo).
        remote.publish("end", "", QoS::AtMostOnce, false).unwrap();
        assert_eq!(text(&next(&mut at_remote).await), pair("end", ""));
        local.publish("end", "", QoS::AtMostOnce, false).unwrap();
        assert_eq!(text(&next(&mut at_local).await), pair("end", ""));
        let s = settled(&bridge, &[1]).await.remove(0);
        assert_eq!((s.sent, s.received, s.dropped, s.connects), (1, 1, 0, 1));
        bridge.shutdown().await;
        assert!(!stats(&bridge).connected);
        local.shutdown().await;
        remote.shutdown().await;
    }
}

#[tokio::test]
async fn v5_properties_cross_the_bridge() {
    let remote = broker().await;
    let (local, bridge) = bridged(vec![cloud(port(&remote), ProtocolVersion::V5).rule(rule(
        "a/#",
        Direction::Out,
        "",
        "",
    ))])
    .await;
    let mut at_remote = remote.subscribe("a/#").unwrap();
    let (client, _) = Client::connect(ConnectOptions::new("127.0.0.1", port(&local)))
        .await
        .unwrap();
    let properties = PublishProperties {
        user_properties: vec![("k".into(), "v".into())],
        content_type: Some("text/plain".into()),
        response_topic: Some("a/reply".into()),
        ..PublishProperties::default()
    };
    client
        .publish("a/1", "x")
        .qos(QoS::AtLeastOnce)
        .properties(properties)
        .await
        .unwrap();
    let got = next(&mut at_remote).await;
    assert_eq!(text(&got), pair("a/1", "x"));
    assert_eq!(got.properties.user_properties, [("k".into(), "v".into())]);
    assert_eq!(got.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(got.properties.response_topic.as_deref(), Some("a/reply"));
    client.disconnect().await.unwrap();
    stop(&bridge, &[&local, &remote]).await;
}

/// Under 5.0 a topic that goes both ways crosses once each way: the
/// remote subscription's No Local keeps the remote from sending back what
/// the bridge published (MQTT-3.8.3-3 is the rule the remote applies), and
/// what comes in is not handed back out.
#[tokio::test]
async fn both_ways_under_v5_makes_no_echo() {
    let remote = broker().await;
    let (local, bridge) = bridged(vec![cloud(port(&remote), ProtocolVersion::V5).rule(rule(
        "chat/#",
        Direction::Both,
        "",
        "",
    ))])
    .await;
    let mut at_remote = remote.subscribe("#").unwrap();
    let mut at_local = local.subscribe("#").unwrap();
    local
        .publish("chat/1", "from-local", QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(
        text(&next(&mut at_remote).await),
        pair("chat/1", "from-local")
    );
    remote
        .publish("chat/2", "from-remote", QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(
        text(&next(&mut at_remote).await),
        pair("chat/2", "from-remote")
    );
    assert_eq!(
        text(&next(&mut at_local).await),
        pair("chat/1", "from-local")
    );
    assert_eq!(
        text(&next(&mut at_local).await),
        pair("chat/2", "from-remote")
    );
    // A marker on each side, published after: nothing came in between.
    local.publish("end", "", QoS::AtMostOnce, false).unwrap();
    remote.publish("end", "", QoS::AtMostOnce, false).unwrap();
    assert_eq!(text(&next(&mut at_local).await), pair("end", ""));
    assert_eq!(text(&next(&mut at_remote).await), pair("end", ""));
    let s = settled(&bridge, &[1]).await.remove(0);
    assert_eq!((s.sent, s.received), (1, 1));
    stop(&bridge, &[&local, &remote]).await;
}

/// Under 3.1.1 No Local cannot be asked for: the bridge announces itself
/// instead (try_private), and a fulmar remote then sends none of its own
/// messages back. Without it, a message the bridge published comes back
/// once, and stops there (what comes in never goes back out).
#[tokio::test]
async fn both_ways_under_v311() {
    for try_private in [true, false] {
        let remote = broker().await;
        let (local, bridge) = bridged(vec![
            Remote::new(
                "cloud",
                options(port(&remote), ProtocolVersion::V311, "edge"),
            )
            .rule(rule("chat/#", Direction::Both, "", ""))
            .try_private(try_private),
        ])
        .await;
        let mut at_remote = remote.subscribe("#").unwrap();
        let mut at_local = local.subscribe("#").unwrap();
        local
            .publish("chat/1", "from-local", QoS::AtLeastOnce, false)
            .unwrap();
        assert_eq!(
            text(&next(&mut at_local).await),
            pair("chat/1", "from-local")
        );
        assert_eq!(
            text(&next(&mut at_remote).await),
            pair("chat/1", "from-local")
        );
        let echoes = if try_private {
            0
        } else {
            assert_eq!(
                text(&next(&mut at_local).await),
                pair("chat/1", "from-local")
            );
            1
        };
        // Let a loop show if there were one: the marker must come next.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        local.publish("end", "", QoS::AtMostOnce, false).unwrap();
        remote.publish("end", "", QoS::AtMostOnce, false).unwrap();
        assert_eq!(
            text(&next(&mut at_local).await),
            pair("end", ""),
            "{try_private}"
        );
        assert_eq!(
            text(&next(&mut at_remote).await),
            pair("end", ""),
            "{try_private}"
        );
        let s = settled(&bridge, &[1]).await.remove(0);
        assert_eq!((s.sent, s.received), (1, echoes));
        stop(&bridge, &[&local, &remote]).await;
    }
}

/// A remote broker with a retained `cmd/config`, and a link to it that
/// takes `cmd/#` in and sends `state/#` out.
async fn remote_with_config(version: ProtocolVersion) -> (BrokerHandle, Remote) {
    let remote = broker().await;
    remote
        .publish("cmd/config", "v1", QoS::AtLeastOnce, true)
        .unwrap();
    let link = cloud(port(&remote), version)
        .rule(rule("cmd/#", Direction::In, "", ""))
        .rule(rule("state/#", Direction::Out, "", ""));
    (remote, link)
}

/// The remote's `cmd/config` (see [`remote_with_config`]), retained before
/// the bridge connected, is stored here too.
async fn expect_config_retained(local: &BrokerHandle, version: ProtocolVersion) {
    let mut late = local.subscribe("cmd/#").unwrap();
    let got = next(&mut late).await;
    assert_eq!(
        (text(&got), got.retain),
        (pair("cmd/config", "v1"), true),
        "{version:?}"
    );
}

// v5:MQTT-3.3.1-12 (Retain As Published keeps the RETAIN flag), MQTT-3.3.1-5
// (a retained message is stored), MQTT-3.3.1-6 (sent to new subscribers).
#[tokio::test]
async fn retained_messages_cross_and_stay_retained() {
    for version in VERSIONS {
        let (remote, link) = remote_with_config(version).await;
        let (local, bridge) = bridged(vec![link]).await;
        expect_config_retained(&local, version).await;
        local
            .publish("state/door", "open", QoS::AtLeastOnce, true)
            .unwrap();
        // Forwarded retained: stored on the remote, sent to a later subscriber.
        guard(async {
            while remote.stats().retained < 2 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await;
        let mut at_remote = remote.subscribe("state/#").unwrap();
        let got = next(&mut at_remote).await;
        assert_eq!(
            (text(&got), got.retain),
            (pair("state/door", "open"), true),
            "{version:?}"
        );
        stop(&bridge, &[&local, &remote]).await;
    }
}

/// While the remote cannot be reached, messages for it wait, up to the
/// bound; beyond it they are dropped and counted. When it can, the ones
/// that waited go, in order.
#[tokio::test]
async fn messages_wait_for_an_unreachable_remote_up_to_the_bound() {
    let remote = broker().await;
    let proxy = Proxy::start(remote.local_addrs()[0]).await;
    proxy.set_accepting(false);
    let (local, bridge) = attached(vec![
        cloud(proxy.port, ProtocolVersion::V5)
            .rule(rule("q/#", Direction::Out, "", ""))
            .max_queued_messages(5),
    ])
    .await;
    for i in 0..8 {
        local
            .publish("q/x", i.to_string(), QoS::AtLeastOnce, false)
            .unwrap();
    }
    let s = stats(&bridge);
    assert_eq!((s.connected, s.dropped, s.sent), (false, 3, 0));
    let mut at_remote = remote.subscribe("q/#").unwrap();
    proxy.set_accepting(true);
    for i in 0..5 {
        assert_eq!(
            text(&next(&mut at_remote).await),
            pair("q/x", &i.to_string())
        );
    }
    remote.publish("q/end", "", QoS::AtMostOnce, false).unwrap();
    assert_eq!(text(&next(&mut at_remote).await), pair("q/end", ""));
    stop(&bridge, &[&local, &remote]).await;
}

/// A link that drops comes back by itself and resumes its session on the
/// remote: QoS 1 messages published on either side meanwhile all arrive,
/// in order.
#[tokio::test]
async fn a_dropped_link_resumes_and_loses_no_qos1_message() {
    for version in VERSIONS {
        let remote = broker().await;
        let proxy = Proxy::start(remote.local_addrs()[0]).await;
        let (local, bridge) = bridged(vec![
            cloud(proxy.port, version)
                .rule(rule("up/#", Direction::Out, "", ""))
                .rule(rule("down/#", Direction::In, "", "")),
        ])
        .await;
        let mut at_remote = remote.subscribe("up/#").unwrap();
        let mut at_local = local.subscribe("down/#").unwrap();
        proxy.set_accepting(false);
        proxy.sever();
        // The remote notices the closed connection: the bridge's session stays.
        no_clients(&remote).await;
        for i in 0..10 {
            local
                .publish("up/x", i.to_string(), QoS::AtLeastOnce, false)
                .unwrap();
            remote
                .publish("down/x", i.to_string(), QoS::AtLeastOnce, false)
                .unwrap();
        }
        proxy.set_accepting(true);
        for i in 0..10 {
            assert_eq!(
                text(&next(&mut at_remote).await),
                pair("up/x", &i.to_string()),
                "{version:?}"
            );
            assert_eq!(
                text(&next(&mut at_local).await),
                pair("down/x", &i.to_string()),
                "{version:?}"
            );
        }
        let s = settled(&bridge, &[10]).await.remove(0);
        assert_eq!((s.sent, s.received, s.dropped), (10, 10, 0), "{version:?}");
        stop(&bridge, &[&local, &remote]).await;
    }
}

/// What comes in from one remote goes out to another whose rules match
/// it, marked as relayed by this bridge (both links are MQTT 5.0), but
/// never back to the one it came from.
#[tokio::test]
async fn messages_from_one_remote_go_on_to_the_others() {
    let a = broker().await;
    let b = broker().await;
    let (local, bridge) = bridged(vec![
        v5_remote("a", &a, "hub", "news/#", Direction::Both, ""),
        v5_remote("b", &b, "hub", "news/#", Direction::Out, "relayed/"),
    ])
    .await;
    let mut at_a = a.subscribe("#").unwrap();
    let mut at_b = b.subscribe("#").unwrap();
    a.publish("news/1", "x", QoS::AtLeastOnce, false).unwrap();
    assert_eq!(text(&next(&mut at_a).await), pair("news/1", "x"));
    let got = next(&mut at_b).await;
    assert_eq!(text(&got), pair("relayed/news/1", "x"));
    assert!(relayed(&got), "{:?}", got.properties.user_properties);
    a.publish("end", "", QoS::AtMostOnce, false).unwrap();
    assert_eq!(
        text(&next(&mut at_a).await),
        pair("end", ""),
        "no echo to a"
    );
    let stats = settled(&bridge, &[0, 1]).await;
    assert_eq!((stats[0].received, stats[0].sent), (1, 0));
    assert_eq!((stats[1].received, stats[1].sent), (0, 1));
    bridge.shutdown().await;
    local.shutdown().await;
    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn remotes_need_rules_and_distinct_names() {
    let options = ConnectOptions::new("127.0.0.1", 1883);
    assert_eq!(
        MqttBridge::new([Remote::new("x", options.clone())]).unwrap_err(),
        fulmar_bridge::BridgeError::NoRules("x".into())
    );
    let remote = Remote::new("x", options).rule(rule("#", Direction::In, "", ""));
    assert_eq!(
        MqttBridge::new([remote.clone(), remote]).unwrap_err(),
        fulmar_bridge::BridgeError::DuplicateName("x".into())
    );
}

/// In front of `upstream`: refuses a CONNECT whose protocol level has the
/// bridge bit (CONNACK return code 1, unacceptable protocol version, as a
/// 3.1.1 broker that does not know it answers), passes the others on.
async fn refusing_bridges(upstream: std::net::SocketAddr) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Fixed header (1-byte length here), then 00 04 'MQTT' and the level.
                let mut head = [0u8; 9];
                if client.read_exact(&mut head).await.is_err() {
                    return;
                }
                if head[8] & 0x80 != 0 {
                    let _ = client.write_all(&[0x20, 0x02, 0x00, 0x01]).await;
                    return;
                }
                let mut server = tokio::net::TcpStream::connect(upstream).await.unwrap();
                server.write_all(&head).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    port
}

/// A 3.1.1 remote that refuses the bridge bit is connected to again at
/// once without it.
#[tokio::test]
async fn a_remote_that_refuses_try_private_gets_a_plain_connect() {
    let remote = broker().await;
    let port = refusing_bridges(remote.local_addrs()[0]).await;
    let (local, bridge) = bridged(vec![
        Remote::new("old", options(port, ProtocolVersion::V311, "edge")).rule(rule(
            "a/#",
            Direction::Out,
            "",
            "",
        )),
    ])
    .await;
    let mut at_remote = remote.subscribe("a/#").unwrap();
    local.publish("a/1", "x", QoS::AtLeastOnce, false).unwrap();
    assert_eq!(text(&next(&mut at_remote).await), pair("a/1", "x"));
    let s = settled(&bridge, &[1]).await.remove(0);
    assert_eq!((s.connects, s.dropped), (1, 0));
    stop(&bridge, &[&local, &remote]).await;
}

/// The link's state is published here, retained, on
/// `$SYS/broker/connection/NAME/state`, as mosquitto does.
#[tokio::test]
async fn the_link_state_is_published_under_sys() {
    let remote = broker().await;
    let proxy = Proxy::start(remote.local_addrs()[0]).await;
    let (local, bridge) = bridged(vec![cloud(proxy.port, ProtocolVersion::V5).rule(rule(
        "a/#",
        Direction::Out,
        "",
        "",
    ))])
    .await;
    let mut state = local
        .subscribe("$SYS/broker/connection/cloud/state")
        .unwrap();
    let got = next(&mut state).await;
    assert_eq!((got.payload.as_ref(), got.retain), (&b"1"[..], true));
    proxy.set_accepting(false);
    proxy.sever();
    assert_eq!(next(&mut state).await.payload, "0");
    proxy.set_accepting(true);
    assert_eq!(next(&mut state).await.payload, "1");
    bridge.shutdown().await;
    assert_eq!(next(&mut state).await.payload, "0");
    assert_eq!(
        stats(&bridge).connects,
        2,
        "the reconnect the client made by itself counts"
    );
    local.shutdown().await;
    remote.shutdown().await;
}

/// With remote notifications (mosquitto's `notifications`, found missing by
/// an operator review), the remote side sees the link's state too, on the
/// same topic: `1` retained once connected, `0` as the connection's will
/// when the link dies, and `0` before a clean stop.
// MQTT-3.1.2-8 MQTT-3.3.1-5
#[tokio::test]
async fn the_link_state_is_published_on_the_remote_too() {
    let remote = broker().await;
    let proxy = Proxy::start(remote.local_addrs()[0]).await;
    let topic = "$SYS/broker/connection/site-7/state";
    let mut at_remote = remote.subscribe(topic).unwrap();
    let (local, bridge) = bridged(vec![
        cloud(proxy.port, ProtocolVersion::V5)
            .rule(rule("a/#", Direction::Out, "", ""))
            .notification_topic(topic)
            .remote_notifications(true),
    ])
    .await;
    let mut here = local.subscribe(topic).unwrap();
    assert_eq!(next(&mut here).await.payload, "1");
    assert_eq!(next(&mut at_remote).await.payload, "1");
    // The link dies: the remote publishes the will.
    proxy.set_accepting(false);
    proxy.sever();
    assert_eq!(next(&mut at_remote).await.payload, "0");
    proxy.set_accepting(true);
    assert_eq!(next(&mut at_remote).await.payload, "1");
    // Retained there: a later subscriber of the remote sees "1".
    let mut later = remote.subscribe(topic).unwrap();
    let kept = next(&mut later).await;
    assert_eq!((kept.payload.as_ref(), kept.retain), (&b"1"[..], true));
    bridge.shutdown().await;
    assert_eq!(next(&mut at_remote).await.payload, "0");
    local.shutdown().await;
    remote.shutdown().await;
}

/// Payload bytes waiting for a remote are bounded too; one message larger
/// than the bound still goes when nothing else waits.
#[tokio::test]
async fn queued_bytes_are_bounded() {
    let remote = broker().await;
    let proxy = Proxy::start(remote.local_addrs()[0]).await;
    proxy.set_accepting(false);
    let (local, bridge) = attached(vec![
        cloud(proxy.port, ProtocolVersion::V5)
            .rule(rule("q/#", Direction::Out, "", ""))
            .max_queued_bytes(10),
    ])
    .await;
    for payload in ["aaaa", "bbbb", "cccc", &"x".repeat(100)] {
        local
            .publish("q/x", payload.to_owned(), QoS::AtLeastOnce, false)
            .unwrap();
    }
    assert_eq!(stats(&bridge).dropped, 2, "cccc and the large one");
    let mut at_remote = remote.subscribe("q/#").unwrap();
    proxy.set_accepting(true);
    assert_eq!(text(&next(&mut at_remote).await), pair("q/x", "aaaa"));
    assert_eq!(text(&next(&mut at_remote).await), pair("q/x", "bbbb"));
    settled(&bridge, &[2]).await;
    let large = "y".repeat(100);
    local
        .publish("q/x", large.clone(), QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(text(&next(&mut at_remote).await), pair("q/x", &large));
    assert_eq!(stats(&bridge).dropped, 2);
    stop(&bridge, &[&local, &remote]).await;
}

/// A bridge that stops (the process restarts, say) and comes back with the
/// same client identifier gets what the remote queued for its session
/// meanwhile: all of it, in order, however much more than a stream holds.
/// MQTT-4.4.0-1 (the session's messages are sent on resume).
#[tokio::test]
async fn a_restarted_bridge_gets_what_the_remote_kept_for_it() {
    for version in VERSIONS {
        let remote = broker().await;
        let remotes =
            || vec![cloud(port(&remote), version).rule(rule("down/#", Direction::In, "", ""))];
        let (local, bridge) = bridged(remotes()).await;
        bridge.shutdown().await;
        local.shutdown().await;
        no_clients(&remote).await;
        for i in 0..300 {
            remote
                .publish("down/x", i.to_string(), QoS::AtLeastOnce, false)
                .unwrap();
        }
        // Subscribed before the bridge's task first runs (one thread, no
        // await in between).
        let (local, bridge) = attached(remotes()).await;
        let mut at_local = local.subscribe("down/#").unwrap();
        for i in 0..300 {
            assert_eq!(
                text(&next(&mut at_local).await),
                pair("down/x", &i.to_string()),
                "{version:?}"
            );
        }
        let s = stats(&bridge);
        assert_eq!((s.received, s.dropped), (300, 0), "{version:?}");
        stop(&bridge, &[&local, &remote]).await;
    }
}

/// Refuses publishing under `secret/`.
struct NoSecrets;

#[async_trait::async_trait]
impl fulmar_broker::Authorizer for NoSecrets {
    async fn authorize_publish(&self, _: &fulmar_broker::ClientInfo, topic: &str) -> bool {
        !topic.starts_with("secret/")
    }
    async fn authorize_subscribe(&self, _: &fulmar_broker::ClientInfo, _: &str) -> bool {
        true
    }
}

/// A message the remote refuses (MQTT 5.0 PUBACK 0x87 Not authorized) is
/// counted as refused, and the link goes on.
#[tokio::test]
async fn messages_the_remote_refuses_are_counted() {
    let remote = Broker::builder()
        .tcp_listener("127.0.0.1:0")
        .authorizer(NoSecrets)
        .start()
        .await
        .unwrap();
    let (local, bridge) = bridged(vec![cloud(port(&remote), ProtocolVersion::V5).rule(rule(
        "#",
        Direction::Out,
        "",
        "",
    ))])
    .await;
    let mut at_remote = remote.subscribe("#").unwrap();
    local
        .publish("secret/x", "no", QoS::AtLeastOnce, false)
        .unwrap();
    local
        .publish("open/x", "yes", QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(text(&next(&mut at_remote).await), pair("open/x", "yes"));
    let s = settled(&bridge, &[1]).await.remove(0);
    assert_eq!((s.refused, s.dropped), (1, 0));
    stop(&bridge, &[&local, &remote]).await;
}

/// A broker that shuts down takes its bridge's tasks with it, even without
/// `MqttBridge::shutdown`: the link disconnects.
#[tokio::test]
async fn the_bridge_ends_with_its_broker() {
    let remote = broker().await;
    let (local, _bridge) = bridged(vec![cloud(port(&remote), ProtocolVersion::V5).rule(rule(
        "a/#",
        Direction::Out,
        "",
        "",
    ))])
    .await;
    assert_eq!(remote.stats().clients_connected, 1);
    local.shutdown().await;
    no_clients(&remote).await;
    remote.shutdown().await;
}

/// Reads one MQTT packet (fixed header, remaining length, body) from `from`.
async fn read_packet(from: &mut tokio::net::TcpStream) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut packet = vec![from.read_u8().await?];
    let mut length = 0usize;
    for shift in [0, 7, 14, 21] {
        let byte = from.read_u8().await?;
        packet.push(byte);
        length |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let start = packet.len();
    packet.resize(start + length, 0);
    from.read_exact(&mut packet[start..]).await?;
    Ok(packet)
}

/// In front of `upstream`: the first connection passes the CONNECT and the
/// CONNACK, then is closed on both sides when the client sends its next
/// packet, which is not passed on (a SUBSCRIBE or a PUBLISH: lost); later
/// connections pass everything.
async fn cut_after_first_connack(upstream: std::net::SocketAddr) -> u16 {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut client, _)) = listener.accept().await {
            let mut server = tokio::net::TcpStream::connect(upstream).await.unwrap();
            if std::mem::take(&mut first) {
                tokio::spawn(async move {
                    let Ok(connect) = read_packet(&mut client).await else {
                        return;
                    };
                    server.write_all(&connect).await.unwrap();
                    let Ok(connack) = read_packet(&mut server).await else {
                        return;
                    };
                    if client.write_all(&connack).await.is_ok() {
                        let _ = read_packet(&mut client).await;
                    }
                    // Both dropped: closed.
                });
            } else {
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        }
    });
    port
}

/// The first connection drops between the CONNACK and the SUBACK: the
/// SUBSCRIBE is lost with it. The client reconnects by itself and sends
/// again what it had in flight (MQTT-4.4.0-1), the bridge subscribes again
/// on it: no QoS 1 message queued for the remote meanwhile is lost, and
/// the in rule works.
#[tokio::test]
async fn a_link_cut_before_its_suback_loses_no_qos1_message() {
    for version in VERSIONS {
        let remote = broker().await;
        let port = cut_after_first_connack(remote.local_addrs()[0]).await;
        let mut at_remote = remote.subscribe("up/#").unwrap();
        let (local, bridge) = attached(vec![
            cloud(port, version)
                .rule(rule("up/#", Direction::Out, "", ""))
                .rule(rule("down/#", Direction::In, "", "")),
        ])
        .await;
        // Queued before the bridge's task first runs (one thread, no await
        // since it was attached).
        for i in 0..20 {
            local
                .publish("up/x", i.to_string(), QoS::AtLeastOnce, false)
                .unwrap();
        }
        for i in 0..20 {
            assert_eq!(
                text(&next(&mut at_remote).await),
                pair("up/x", &i.to_string()),
                "{version:?}"
            );
        }
        guard(bridge.wait_connected()).await;
        let mut at_local = local.subscribe("down/#").unwrap();
        remote
            .publish("down/x", "in", QoS::AtLeastOnce, false)
            .unwrap();
        assert_eq!(text(&next(&mut at_local).await), pair("down/x", "in"));
        let s = settled(&bridge, &[20]).await.remove(0);
        assert_eq!((s.sent, s.dropped), (20, 0), "{version:?}");
        stop(&bridge, &[&local, &remote]).await;
    }
}

/// With nothing queued for the remote, the bridge subscribes right after
/// the first CONNACK, and the cut takes the SUBSCRIBE: it is made again
/// once the client reconnected by itself, and every filter is subscribed.
#[tokio::test]
async fn a_subscribe_lost_with_the_first_connection_is_made_again() {
    for version in VERSIONS {
        let remote = broker().await;
        let port = cut_after_first_connack(remote.local_addrs()[0]).await;
        let (local, bridge) = bridged(vec![
            cloud(port, version)
                .rule(rule("up/#", Direction::Out, "", ""))
                .rule(rule("down/#", Direction::In, "", "")),
        ])
        .await;
        let mut at_local = local.subscribe("down/#").unwrap();
        let mut at_remote = remote.subscribe("up/#").unwrap();
        remote
            .publish("down/x", "in", QoS::AtLeastOnce, false)
            .unwrap();
        assert_eq!(text(&next(&mut at_local).await), pair("down/x", "in"));
        local
            .publish("up/x", "out", QoS::AtLeastOnce, false)
            .unwrap();
        assert_eq!(text(&next(&mut at_remote).await), pair("up/x", "out"));
        let s = settled(&bridge, &[1]).await.remove(0);
        // Both connections count: the link is up while connected, whether
        // its filters are subscribed yet or not (as mosquitto's).
        assert_eq!((s.connects, s.dropped), (2, 0), "{version:?}");
        stop(&bridge, &[&local, &remote]).await;
    }
}

/// A client that does not reconnect by itself (reconnecting off in its
/// options) closes with the first connection, cut after its CONNACK: the
/// bridge connects a new one, which sends first, in order, the messages
/// the closed one left unsettled.
#[tokio::test]
async fn messages_a_closed_client_left_unsettled_go_on_the_next_one() {
    for version in VERSIONS {
        let remote = broker().await;
        let port = cut_after_first_connack(remote.local_addrs()[0]).await;
        let mut at_remote = remote.subscribe("up/#").unwrap();
        let options =
            options(port, version, "edge").reconnect(fulmar_client::Reconnect::disabled());
        let (local, bridge) = attached(vec![Remote::new("cloud", options).rule(rule(
            "up/#",
            Direction::Out,
            "",
            "",
        ))])
        .await;
        for i in 0..20 {
            local
                .publish("up/x", i.to_string(), QoS::AtLeastOnce, false)
                .unwrap();
        }
        for i in 0..20 {
            assert_eq!(
                text(&next(&mut at_remote).await),
                pair("up/x", &i.to_string()),
                "{version:?}"
            );
        }
        let s = settled(&bridge, &[20]).await.remove(0);
        assert_eq!((s.sent, s.dropped), (20, 0), "{version:?}");
        stop(&bridge, &[&local, &remote]).await;
    }
}

/// Takes `n` messages from `sub`, each of which must be `topic`/`payload`:
/// a copy of an earlier message among them went round.
async fn copies(sub: &mut fulmar_broker::Subscription, n: usize, topic: &str, payload: &str) {
    for i in 0..n {
        let got = next(sub).await;
        assert_eq!(text(&got), pair(topic, payload), "copy {i}");
        assert!(!relayed(&got), "a relay mark reached a client here");
    }
}

/// Two 3.1.1 remotes that send the bridge its own messages back (no
/// try_private), each `both "#"`: a message published here goes to each,
/// comes back from each once, and stops there (what a 3.1.1 link brings
/// in goes to no other remote). A second message takes the same ways
/// after it: with a loop, copies of the first would come before its own.
#[tokio::test]
async fn two_echoing_remotes_make_no_loop() {
    let a = broker().await;
    let b = broker().await;
    let remote = |name: &str, port: u16| {
        Remote::new(name, options(port, ProtocolVersion::V311, "hub"))
            .rule(rule("#", Direction::Both, "", ""))
            .try_private(false)
    };
    let (local, bridge) = bridged(vec![remote("a", port(&a)), remote("b", port(&b))]).await;
    let mut at_local = local.subscribe("#").unwrap();
    local
        .publish("chat/1", "x", QoS::AtLeastOnce, false)
        .unwrap();
    // Published here, then back from a and from b.
    copies(&mut at_local, 3, "chat/1", "x").await;
    local
        .publish("chat/2", "y", QoS::AtLeastOnce, false)
        .unwrap();
    copies(&mut at_local, 3, "chat/2", "y").await;
    let stats = settled(&bridge, &[2, 2]).await;
    for s in stats {
        assert_eq!((s.sent, s.received, s.dropped), (2, 2, 0), "{}", s.name);
    }
    bridge.shutdown().await;
    local.shutdown().await;
    a.shutdown().await;
    b.shutdown().await;
}

/// MQTT 5.0 links to one remote broker, one `out "#"`, the other
/// `in "#"` (No Local does not apply: two clients): a message published
/// here comes back in through the second link, once, is relayed to the
/// first with this bridge's mark, and is dropped when it comes back marked.
#[tokio::test]
async fn two_v5_links_to_one_broker_make_no_loop() {
    let remote = broker().await;
    let (local, bridge) = bridged(vec![
        v5_remote("up", &remote, "hub-up", "#", Direction::Out, ""),
        v5_remote("down", &remote, "hub-down", "#", Direction::In, ""),
    ])
    .await;
    let mut at_local = local.subscribe("#").unwrap();
    let mut at_remote = remote.subscribe("#").unwrap();
    for (topic, payload) in [("chat/1", "x"), ("chat/2", "y")] {
        local
            .publish(topic, payload, QoS::AtLeastOnce, false)
            .unwrap();
        // Published here, then back through "down".
        copies(&mut at_local, 2, topic, payload).await;
        // At the remote: from "up", then relayed from "down" to "up", marked.
        let got = next(&mut at_remote).await;
        assert_eq!((text(&got), relayed(&got)), (pair(topic, payload), false));
        let got = next(&mut at_remote).await;
        assert_eq!((text(&got), relayed(&got)), (pair(topic, payload), true));
    }
    let stats = settled(&bridge, &[4, 0]).await;
    assert_eq!((stats[1].received, stats[1].dropped), (2, 0));
    stop(&bridge, &[&local, &remote]).await;
}

/// Refuses subscribing to `down/#` while closed, counting the refusals.
#[derive(Default)]
struct Gate {
    open: std::sync::atomic::AtomicBool,
    refused: std::sync::atomic::AtomicUsize,
}

struct GateRef(std::sync::Arc<Gate>);

#[async_trait::async_trait]
impl fulmar_broker::Authorizer for GateRef {
    async fn authorize_publish(&self, _: &fulmar_broker::ClientInfo, _: &str) -> bool {
        true
    }
    async fn authorize_subscribe(&self, _: &fulmar_broker::ClientInfo, filter: &str) -> bool {
        use std::sync::atomic::Ordering;
        if filter != "down/#" || self.0.open.load(Ordering::SeqCst) {
            return true;
        }
        self.0.refused.fetch_add(1, Ordering::SeqCst);
        false
    }
}

/// A remote whose authorizer is `gate`.
async fn gated(gate: &std::sync::Arc<Gate>) -> BrokerHandle {
    Broker::builder()
        .tcp_listener("127.0.0.1:0")
        .authorizer(GateRef(gate.clone()))
        .start()
        .await
        .unwrap()
}

/// Waits until `gate` refused `n` subscriptions.
async fn refusals(gate: &Gate, n: usize) {
    guard(async {
        while gate.refused.load(std::sync::atomic::Ordering::SeqCst) < n {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// A filter the remote refuses (SUBACK failure code, v5:MQTT-3.8.4-7,
/// MQTT-3.8.4-5; codes in the order of the filters, MQTT-3.9.3-1) is asked
/// for again, with backoff, until granted; the link shows up meanwhile (as mosquitto's) with the filter counted apart,
/// and carries what was granted.
#[tokio::test]
async fn refused_subscriptions_are_asked_for_again() {
    for version in VERSIONS {
        let gate = std::sync::Arc::new(Gate::default());
        let remote = gated(&gate).await;
        let (local, bridge) = attached(vec![
            cloud(port(&remote), version)
                .rule(rule("down/#", Direction::In, "", ""))
                .rule(rule("open/#", Direction::In, "", "")),
        ])
        .await;
        let mut at_local = local.subscribe("#").unwrap();
        // Refused in the first SUBSCRIBE, and again alone.
        refusals(&gate, 2).await;
        // Up, as mosquitto says, with the filter counted apart.
        let s = stats(&bridge);
        assert!(s.connected, "{version:?}");
        assert_eq!(s.unsubscribed_filters, 1, "{version:?}");
        remote
            .publish("open/x", "granted", QoS::AtLeastOnce, false)
            .unwrap();
        assert_eq!(text(&next(&mut at_local).await), pair("open/x", "granted"));
        gate.open.store(true, std::sync::atomic::Ordering::SeqCst);
        guard(bridge.wait_connected()).await;
        remote
            .publish("down/x", "at last", QoS::AtLeastOnce, false)
            .unwrap();
        assert_eq!(text(&next(&mut at_local).await), pair("down/x", "at last"));
        assert_eq!(stats(&bridge).connects, 1, "{version:?}");
        stop(&bridge, &[&local, &remote]).await;
    }
}

/// The remote loses the bridge's session (another client took its
/// identifier with a clean start) and refuses the subscription when the
/// client makes it again: the client ends that stream, and the bridge asks
/// again, with backoff, the filter counted apart until it is granted.
#[tokio::test]
async fn a_subscription_refused_after_a_lost_session_is_asked_for_again() {
    for version in VERSIONS {
        let gate = std::sync::Arc::new(Gate::default());
        gate.open.store(true, std::sync::atomic::Ordering::SeqCst);
        let remote = gated(&gate).await;
        let proxy = Proxy::start(remote.local_addrs()[0]).await;
        let (local, bridge) = bridged(vec![cloud(proxy.port, version).rule(rule(
            "down/#",
            Direction::In,
            "",
            "",
        ))])
        .await;
        let mut at_local = local.subscribe("down/#").unwrap();
        gate.open.store(false, std::sync::atomic::Ordering::SeqCst);
        proxy.set_accepting(false);
        proxy.sever();
        no_clients(&remote).await;
        // MQTT-3.1.2-6 / v5:MQTT-3.1.2-4: a clean start discards the session.
        let thief = ConnectOptions::new("127.0.0.1", port(&remote))
            .protocol_version(version)
            .client_id("edge");
        let (thief, _) = guard(Client::connect(thief)).await.unwrap();
        guard(thief.disconnect()).await.unwrap();
        proxy.set_accepting(true);
        // The client's own SUBSCRIBE, then the bridge's.
        refusals(&gate, 2).await;
        // Up, as mosquitto says, with the filter counted apart.
        let s = stats(&bridge);
        assert!(s.connected, "{version:?}");
        assert_eq!(s.unsubscribed_filters, 1, "{version:?}");
        gate.open.store(true, std::sync::atomic::Ordering::SeqCst);
        guard(bridge.wait_connected()).await;
        remote
            .publish("down/x", "again", QoS::AtLeastOnce, false)
            .unwrap();
        assert_eq!(text(&next(&mut at_local).await), pair("down/x", "again"));
        stop(&bridge, &[&local, &remote]).await;
    }
}

/// As above, but the client's own SUBSCRIBE after the session loss holds
/// two filters, one granted and one refused (v5:MQTT-3.9.3-1): the stream
/// goes on with the one granted, and the bridge asks again for the one
/// refused, the filter counted apart until it is granted.
#[tokio::test]
async fn a_filter_refused_in_part_after_a_lost_session_is_asked_for_again() {
    for version in VERSIONS {
        let gate = std::sync::Arc::new(Gate::default());
        gate.open.store(true, std::sync::atomic::Ordering::SeqCst);
        let remote = gated(&gate).await;
        let proxy = Proxy::start(remote.local_addrs()[0]).await;
        let (local, bridge) = bridged(vec![
            cloud(proxy.port, version)
                .rule(rule("down/#", Direction::In, "", ""))
                .rule(rule("open/#", Direction::In, "", "")),
        ])
        .await;
        let mut at_local = local.subscribe("#").unwrap();
        gate.open.store(false, std::sync::atomic::Ordering::SeqCst);
        proxy.set_accepting(false);
        proxy.sever();
        no_clients(&remote).await;
        // MQTT-3.1.2-6 / v5:MQTT-3.1.2-4: a clean start discards the session.
        let thief = ConnectOptions::new("127.0.0.1", port(&remote))
            .protocol_version(version)
            .client_id("edge");
        let (thief, _) = guard(Client::connect(thief)).await.unwrap();
        guard(thief.disconnect()).await.unwrap();
        proxy.set_accepting(true);
        // The client's own SUBSCRIBE (open/# granted), then the bridge's.
        refusals(&gate, 2).await;
        // Up, as mosquitto says, with the filter counted apart.
        let s = stats(&bridge);
        assert!(s.connected, "{version:?}");
        assert_eq!(s.unsubscribed_filters, 1, "{version:?}");
        remote
            .publish("open/x", "granted", QoS::AtLeastOnce, false)
            .unwrap();
        assert_eq!(text(&next(&mut at_local).await), pair("open/x", "granted"));
        gate.open.store(true, std::sync::atomic::Ordering::SeqCst);
        guard(bridge.wait_connected()).await;
        remote
            .publish("down/x", "again", QoS::AtLeastOnce, false)
            .unwrap();
        assert_eq!(text(&next(&mut at_local).await), pair("down/x", "again"));
        stop(&bridge, &[&local, &remote]).await;
    }
}

/// With a rule both ways, a retained value published here while the link
/// was down is newer than the one the remote holds: it goes out, and is
/// acknowledged, before the bridge subscribes, so the remote's retained
/// value sent at the SUBSCRIBE (MQTT-3.3.1-6, v5:MQTT-3.3.1-9 with Retain
/// Handling 0) is the new one, and the old one never overwrites it here. One message in flight at a time: the update waits behind
/// another one.
#[tokio::test]
async fn a_retained_value_published_while_down_is_not_overwritten_by_the_remote() {
    for version in VERSIONS {
        let remote = broker().await;
        remote
            .publish("state/door", "old", QoS::AtLeastOnce, true)
            .unwrap();
        let proxy = Proxy::start(remote.local_addrs()[0]).await;
        proxy.set_accepting(false);
        let (local, bridge) = attached(vec![
            Remote::new(
                "cloud",
                options(proxy.port, version, "edge").max_inflight(1),
            )
            .rule(rule("state/#", Direction::Both, "", "")),
        ])
        .await;
        local
            .publish("state/hall", "ahead", QoS::AtLeastOnce, false)
            .unwrap();
        local
            .publish("state/door", "new", QoS::AtLeastOnce, true)
            .unwrap();
        proxy.set_accepting(true);
        guard(bridge.wait_connected()).await;
        settled(&bridge, &[2]).await;
        // A marker from the remote, after whatever its SUBSCRIBE brought.
        let mut marker = local.subscribe("state/marker").unwrap();
        remote
            .publish("state/marker", "", QoS::AtLeastOnce, false)
            .unwrap();
        next(&mut marker).await;
        let mut door = local.subscribe("state/door").unwrap();
        let got = next(&mut door).await;
        assert_eq!(
            (text(&got), got.retain),
            (pair("state/door", "new"), true),
            "{version:?}"
        );
        let mut door = remote.subscribe("state/door").unwrap();
        assert_eq!(
            text(&next(&mut door).await),
            pair("state/door", "new"),
            "{version:?}"
        );
        stop(&bridge, &[&local, &remote]).await;
    }
}

/// Two bridges X and Y, each with MQTT 5.0 links `both "#"` to the same
/// two remotes R1 and R2: a message published at R1 reaches X's broker
/// twice (from R1, and from R2 as Y relayed it) and no more. Each copy
/// passed on keeps the marks it came with, so a copy that went through
/// both bridges is dropped by whichever gets it next (the marks were
/// removed before relaying: X and Y relayed it between R1 and R2 for ever).
/// A second message follows the same ways: with a loop, more copies of the
/// first come before the second's two.
#[tokio::test]
async fn two_bridges_between_the_same_remotes_make_no_loop() {
    let r1 = broker().await;
    let r2 = broker().await;
    let links = |id: &str| {
        vec![
            v5_remote("r1", &r1, id, "#", Direction::Both, ""),
            v5_remote("r2", &r2, id, "#", Direction::Both, ""),
        ]
    };
    let (x, bridge_x) = bridged(links("x")).await;
    let (y, bridge_y) = bridged(links("y")).await;
    let mut at_x = x.subscribe("#").unwrap();
    r1.publish("chat/1", "p", QoS::AtLeastOnce, false).unwrap();
    copies(&mut at_x, 2, "chat/1", "p").await;
    r1.publish("chat/2", "q", QoS::AtLeastOnce, false).unwrap();
    let mut seen = Vec::new();
    guard(async {
        while seen
            .iter()
            .filter(|t: &&(String, String)| t.1 == "q")
            .count()
            < 2
        {
            let got = next(&mut at_x).await;
            assert!(!relayed(&got), "a relay mark reached a client here");
            seen.push(text(&got));
        }
    })
    .await;
    assert_eq!(
        seen,
        vec![pair("chat/2", "q"), pair("chat/2", "q")],
        "copies of the first message went round"
    );
    bridge_x.shutdown().await;
    bridge_y.shutdown().await;
    for broker in [&x, &y, &r1, &r2] {
        broker.shutdown().await;
    }
}

/// A message that comes in with 8 relay marks (it went through 8 bridges)
/// is delivered here, without them, but relayed no further; one with 7
/// goes on, with this bridge's mark added to those it came with.
#[tokio::test]
async fn a_message_marked_by_eight_bridges_is_relayed_no_further() {
    let a = broker().await;
    let b = broker().await;
    let (local, bridge) = bridged(vec![
        v5_remote("a", &a, "hub", "#", Direction::In, ""),
        v5_remote("b", &b, "hub", "#", Direction::Out, ""),
    ])
    .await;
    let mut at_local = local.subscribe("#").unwrap();
    let mut at_b = b.subscribe("#").unwrap();
    let (client, _) = guard(Client::connect(
        ConnectOptions::new("127.0.0.1", port(&a)).protocol_version(ProtocolVersion::V5),
    ))
    .await
    .unwrap();
    let marks = |n: usize| PublishProperties {
        user_properties: (0..n)
            .map(|i| ("fulmar-bridge-relay".into(), format!("other{i}").into()))
            .collect(),
        ..PublishProperties::default()
    };
    for (topic, n) in [("eight", 8), ("seven", 7)] {
        guard(
            client
                .publish(topic, "x")
                .qos(QoS::AtLeastOnce)
                .properties(marks(n)),
        )
        .await
        .unwrap();
        let got = next(&mut at_local).await;
        assert_eq!(text(&got), pair(topic, "x"));
        assert!(!relayed(&got), "a relay mark reached a client here");
    }
    // In order from a: had "eight" gone on, it would come first.
    let got = next(&mut at_b).await;
    assert_eq!(text(&got), pair("seven", "x"));
    let marks = got
        .properties
        .user_properties
        .iter()
        .filter(|(key, _)| key.as_str() == "fulmar-bridge-relay")
        .count();
    assert_eq!(marks, 8);
    guard(client.disconnect()).await.unwrap();
    stop(&bridge, &[&local, &a, &b]).await;
}

/// A broker under back-pressure (`max_queued` messages per connection)
/// bridged to `remote`, connected, and a client of it subscribed to `filter`
/// with room for `room` messages, which reads nothing until the test does.
async fn backpressured_with_a_slow_subscriber(
    remote: Remote,
    version: ProtocolVersion,
    tune: impl FnOnce(fulmar_broker::BrokerBuilder) -> fulmar_broker::BrokerBuilder,
    filter: &str,
    room: u16,
) -> (
    BrokerHandle,
    MqttBridge,
    Client,
    fulmar_client::Subscription,
) {
    let bridge = MqttBridge::new(vec![remote]).unwrap();
    let builder = Broker::builder()
        .tcp_listener("127.0.0.1:0")
        .overload_policy(fulmar_broker::OverloadPolicy::Backpressure)
        .bridge(bridge.bridge());
    let local = tune(builder).start().await.unwrap();
    bridge.attach(&local);
    guard(bridge.wait_connected()).await;
    let (slow, _) = guard(Client::connect(
        ConnectOptions::new("127.0.0.1", port(&local))
            .protocol_version(version)
            .client_id("slow")
            .receive_maximum(room)
            .stream_capacity(usize::from(room)),
    ))
    .await
    .unwrap();
    let stream = guard(slow.subscribe(filter, QoS::AtLeastOnce))
        .await
        .unwrap();
    (local, bridge, slow, stream)
}

/// QoS 1 messages from the remote get the flow control a client's PUBLISH
/// gets here: with back-pressure, a copy for a subscriber whose queue is
/// full waits for room, and the remote is acknowledged only then. They were
/// routed without it: acknowledged to the remote, then dropped here (in a
/// review, 10 924 of 30 000 arrived).
// MQTT-4.3.3-1 (QoS 1: at least once, across the bridge)
#[tokio::test]
async fn qos1_from_the_remote_waits_for_a_slow_subscriber_instead_of_being_dropped() {
    const N: usize = 300;
    for version in VERSIONS {
        let remote = broker().await;
        let to_remote = cloud(port(&remote), version).rule(rule("down/#", Direction::In, "", ""));
        let (local, bridge, slow, mut stream) = backpressured_with_a_slow_subscriber(
            to_remote,
            version,
            |b| b.max_queued_messages(10),
            "down/#",
            5,
        )
        .await;
        for i in 0..N {
            remote
                .publish("down/x", i.to_string(), QoS::AtLeastOnce, false)
                .unwrap();
        }
        for i in 0..N {
            let m = guard(futures::StreamExt::next(&mut stream)).await.unwrap();
            assert_eq!(m.payload, i.to_string(), "{version:?}");
        }
        assert_eq!(local.stats().dropped_messages, 0, "{version:?}");
        guard(slow.disconnect()).await.unwrap();
        stop(&bridge, &[&local, &remote]).await;
    }
}

/// The time a message waits for the remote counts against its Message
/// Expiry Interval: one that expired meanwhile is not sent, the others go
/// with what is left. The wait was not counted (a review saw a message
/// with 2 s sent 9 s late, with its 2 s).
// v5:MQTT-3.3.2-5 v5:MQTT-3.3.2-6
#[tokio::test]
async fn messages_that_expire_waiting_for_the_remote_are_not_sent() {
    let remote = broker().await;
    let proxy = Proxy::start(remote.local_addrs()[0]).await;
    proxy.set_accepting(false);
    let (local, bridge) = attached(vec![cloud(proxy.port, ProtocolVersion::V5).rule(rule(
        "e/#",
        Direction::Out,
        "",
        "",
    ))])
    .await;
    let (publisher, _) = guard(Client::connect(
        ConnectOptions::new("127.0.0.1", port(&local)).client_id("expiring"),
    ))
    .await
    .unwrap();
    for (payload, interval) in [("short", 1), ("long", 600)] {
        let properties = PublishProperties {
            message_expiry_interval: Some(interval),
            ..PublishProperties::default()
        };
        guard(
            publisher
                .publish("e/x", payload)
                .qos(QoS::AtLeastOnce)
                .properties(properties),
        )
        .await
        .unwrap();
    }
    // Past the first one's lifetime.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let mut at_remote = remote.subscribe("e/#").unwrap();
    proxy.set_accepting(true);
    let got = next(&mut at_remote).await;
    assert_eq!(text(&got), pair("e/x", "long"));
    assert!(matches!(
        got.properties.message_expiry_interval,
        Some(1..=599)
    ));
    remote.publish("e/end", "", QoS::AtMostOnce, false).unwrap();
    assert_eq!(text(&next(&mut at_remote).await), pair("e/end", ""));
    assert_eq!(stats(&bridge).dropped, 1);
    guard(publisher.disconnect()).await.unwrap();
    stop(&bridge, &[&local, &remote]).await;
}

/// While a message from the remote waits for room at a slow subscriber here
/// (back-pressure), the bridge goes on serving the other direction: what
/// is published here still goes out. (The wait had held the whole link; this
/// test did not catch that: by the time the local message is published the
/// wait it observes has ended, it seems. It checks the behaviour, not the
/// fix.)
#[tokio::test]
async fn the_link_goes_on_both_ways_while_an_incoming_message_waits_for_room() {
    let remote = broker().await;
    let to_remote = cloud(port(&remote), ProtocolVersion::V5)
        .rule(rule("down/#", Direction::In, "", ""))
        .rule(rule("up/#", Direction::Out, "", ""));
    // The waits last longer than the test's guard, whether paced or blocked.
    let (local, bridge, slow, mut stream) = backpressured_with_a_slow_subscriber(
        to_remote,
        ProtocolVersion::V5,
        |b| {
            b.max_queued_messages(2)
                .pacing_timeout(std::time::Duration::from_secs(120))
        },
        "down/#",
        1,
    )
    .await;
    for i in 0..20 {
        remote
            .publish("down/x", i.to_string(), QoS::AtLeastOnce, false)
            .unwrap();
    }
    // An incoming one waits for room (it counts as a blocked publisher).
    guard(async {
        while local.stats().blocked_publishers == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    // The other way round meanwhile.
    let mut at_remote = remote.subscribe("up/#").unwrap();
    local
        .publish("up/x", "out", QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(text(&next(&mut at_remote).await), pair("up/x", "out"));
    // And the slow subscriber gets everything once it reads.
    for i in 0..20 {
        let m = guard(futures::StreamExt::next(&mut stream)).await.unwrap();
        assert_eq!(m.payload, i.to_string());
    }
    guard(slow.disconnect()).await.unwrap();
    stop(&bridge, &[&local, &remote]).await;
}

/// A remote whose CONNACK says Maximum QoS 1: a QoS 2 message goes at QoS
/// 1 rather than being dropped (found by an operator review: it was
/// dropped, logged at debug only; mosquitto's bridge downgrades it).
// v5:MQTT-3.2.2-11 (the client does not send above the Maximum QoS)
#[tokio::test]
async fn messages_above_the_remotes_maximum_qos_go_at_it() {
    let mut limits = fulmar_broker::Limits::default();
    limits.maximum_qos = QoS::AtLeastOnce;
    let remote = Broker::builder()
        .tcp_listener("127.0.0.1:0")
        .limits(limits)
        .start()
        .await
        .unwrap();
    let mut at_remote = remote.subscribe("q/#").unwrap();
    let (local, bridge) =
        bridged(vec![cloud(port(&remote), ProtocolVersion::V5).rule(
            rule("q/#", Direction::Out, "", "").qos(QoS::ExactlyOnce),
        )])
        .await;
    for n in 0..3 {
        local
            .publish(&format!("q/{n}"), "x", QoS::ExactlyOnce, false)
            .unwrap();
    }
    for n in 0..3 {
        let got = next(&mut at_remote).await;
        assert_eq!(text(&got), pair(&format!("q/{n}"), "x"), "in order");
        assert_eq!(got.qos, QoS::AtLeastOnce);
    }
    let stats = settled(&bridge, &[3]).await;
    assert_eq!((stats[0].dropped, stats[0].refused), (0, 0));
    stop(&bridge, &[&local, &remote]).await;
}

/// A 5.0 remote without wildcard subscriptions (CONNACK Wildcard
/// Subscription Available 0): the client refuses the wildcard filter
/// before sending it, and the bridge subscribes the other filters of the
/// batch instead of asking for all of them again for ever (found by an
/// operator review). The link shows up (as mosquitto's), and the filter is
/// counted apart.
// v5:MQTT-3.2.2-3 (Wildcard Subscription Available 0: not supported)
#[tokio::test]
async fn a_filter_the_remote_cannot_take_leaves_the_others_subscribed() {
    let remote = Broker::builder()
        .tcp_listener("127.0.0.1:0")
        .wildcard_subscription_available(false)
        .start()
        .await
        .unwrap();
    let (local, bridge) = attached(vec![
        cloud(port(&remote), ProtocolVersion::V5)
            .rule(rule("wild/#", Direction::In, "", ""))
            .rule(rule("plain/topic", Direction::In, "", "")),
    ])
    .await;
    let mut at_local = local.subscribe("#").unwrap();
    let mut state = local
        .subscribe("$SYS/broker/connection/cloud/state")
        .unwrap();
    // Up while connected, refused filter or not.
    guard(async {
        loop {
            let got = next(&mut state).await;
            if got.payload == "1" {
                break;
            }
        }
    })
    .await;
    guard(async {
        while stats(&bridge).filters_refused == 0 || stats(&bridge).unsubscribed_filters != 1 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    // The plain filter is subscribed: a retained message arrives, or a
    // live one once the SUBACK came.
    guard(async {
        loop {
            remote
                .publish("plain/topic", "here", QoS::AtLeastOnce, false)
                .unwrap();
            let got = guard(at_local.recv()).await.unwrap();
            if text(&got) == pair("plain/topic", "here") {
                break;
            }
        }
    })
    .await;
    let s = stats(&bridge);
    assert!(s.connected);
    assert_eq!((s.filters_refused, s.unsubscribed_filters), (1, 1));
    stop(&bridge, &[&local, &remote]).await;
}

/// The retained messages here that an `out` rule matches are published to
/// the remote, mapped and retained, when the link connects (found missing
/// by an operator review; mosquitto's bridge does so).
#[tokio::test]
async fn retained_messages_here_go_to_the_remote_when_the_link_connects() {
    for version in VERSIONS {
        let remote = broker().await;
        // `both` first: had it gone, it would be there before the other.
        let bridge_rules = cloud(port(&remote), version)
            .rule(rule("both/#", Direction::Both, "", ""))
            .rule(rule("sensors/#", Direction::Out, "", "edge/"));
        let bridge = MqttBridge::new([bridge_rules]).unwrap();
        let local = Broker::builder()
            .tcp_listener("127.0.0.1:0")
            .bridge(bridge.bridge())
            .start()
            .await
            .unwrap();
        // Injected: retained here, not handed to the bridge (as if they
        // were here before it started).
        for (topic, payload) in [("sensors/hall", "21"), ("other/x", "no"), ("both/x", "no")] {
            let mut publish = fulmar_codec::Publish::new(topic.into(), payload.into());
            publish.retain = true;
            publish.qos = QoS::AtLeastOnce;
            local.inject(&publish).unwrap();
        }
        bridge.attach(&local);
        guard(bridge.wait_connected()).await;
        guard(async {
            while !remote
                .retained_messages()
                .iter()
                .any(|m| &*m.topic == "edge/sensors/hall")
            {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await;
        let retained = remote.retained_messages();
        let found = retained
            .iter()
            .find(|m| &*m.topic == "edge/sensors/hall")
            .unwrap();
        assert_eq!(&found.payload[..], b"21", "{version:?}");
        assert!(found.retain, "{version:?}");
        // Only what out rules match; not by a `both` rule.
        assert!(
            !retained
                .iter()
                .any(|m| m.topic.contains("other/x") || &*m.topic == "both/x"),
            "{version:?}"
        );
        stop(&bridge, &[&local, &remote]).await;
    }
}
// ------------------------------------------- limits and retained pushes

/// In front of `upstream`: each connection's CONNACK (MQTT 5.0) is changed
/// by `edit(n, connack)`, n counting connections from 0; the returned
/// sender closes every open connection when bumped.
async fn connack_rewriter(
    upstream: std::net::SocketAddr,
    edit: fn(usize, &mut fulmar_codec::ConnAck),
) -> (u16, tokio::sync::watch::Sender<u64>) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (sever, _) = tokio::sync::watch::channel(0u64);
    let sever_tx = sever.clone();
    tokio::spawn(async move {
        let mut n = 0usize;
        while let Ok((mut client, _)) = listener.accept().await {
            let mut server = tokio::net::TcpStream::connect(upstream).await.unwrap();
            let mut severed = sever_tx.subscribe();
            let this = n;
            n += 1;
            tokio::spawn(async move {
                let Ok(connect) = read_packet(&mut client).await else {
                    return;
                };
                server.write_all(&connect).await.unwrap();
                let Ok(connack) = read_packet(&mut server).await else {
                    return;
                };
                let mut buf = bytes::BytesMut::from(&connack[..]);
                let packet = fulmar_codec::decode(&mut buf, ProtocolVersion::V5, u32::MAX)
                    .unwrap()
                    .unwrap();
                let fulmar_codec::Packet::ConnAck(mut connack) = packet else {
                    panic!()
                };
                edit(this, &mut connack);
                let mut out = bytes::BytesMut::new();
                connack.encode(ProtocolVersion::V5, &mut out).unwrap();
                if client.write_all(&out).await.is_err() {
                    return;
                }
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    _ = severed.changed() => {}
                }
            });
        }
    });
    (port, sever)
}

/// Messages at the remote up to (not including) the marker `q/end`.
async fn until_end(sub: &mut fulmar_broker::Subscription) -> Vec<Message> {
    let mut got = Vec::new();
    loop {
        let m = next(sub).await;
        if &*m.topic == "q/end" {
            return got;
        }
        got.push(m);
    }
}

/// A retained message published here while the link is down goes to the
/// remote once at connect: from the queue, not pushed again (found by a
/// review: it went twice).
#[tokio::test]
async fn a_retained_message_published_while_down_goes_once() {
    let remote = broker().await;
    let proxy = Proxy::start(remote.local_addrs()[0]).await;
    proxy.set_accepting(false);
    let (local, bridge) = attached(vec![cloud(proxy.port, ProtocolVersion::V5).rule(rule(
        "q/#",
        Direction::Out,
        "",
        "",
    ))])
    .await;
    let mut at_remote = remote.subscribe("q/#").unwrap();
    local.publish("q/x", "1", QoS::AtLeastOnce, true).unwrap();
    proxy.set_accepting(true);
    guard(bridge.wait_connected()).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    local.publish("q/end", "", QoS::AtLeastOnce, false).unwrap();
    let got: Vec<_> = until_end(&mut at_remote).await.iter().map(text).collect();
    assert_eq!(got, [pair("q/x", "1")]);
    stop(&bridge, &[&local, &remote]).await;
}

/// A remote with Retain Available 0 gets no push of the retained messages
/// here (found by a review: they went without the retain flag, as live
/// messages with old values, to the remote's subscribers).
// v5:MQTT-3.2.2-14
#[tokio::test]
async fn no_retained_push_to_a_remote_without_retain() {
    let remote = broker().await;
    let (port, _sever) = connack_rewriter(remote.local_addrs()[0], |_, c| {
        c.properties.retain_available = Some(false);
    })
    .await;
    let bridge = MqttBridge::new([cloud(port, ProtocolVersion::V5).rule(rule(
        "q/#",
        Direction::Out,
        "",
        "",
    ))])
    .unwrap();
    let local = Broker::builder()
        .tcp_listener("127.0.0.1:0")
        .bridge(bridge.bridge())
        .start()
        .await
        .unwrap();
    let mut publish = fulmar_codec::Publish::new("q/old".into(), "stale".into());
    publish.retain = true;
    publish.qos = QoS::AtLeastOnce;
    local.inject(&publish).unwrap();
    let mut at_remote = remote.subscribe("q/#").unwrap();
    bridge.attach(&local);
    guard(bridge.wait_connected()).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    local.publish("q/end", "", QoS::AtLeastOnce, false).unwrap();
    let got: Vec<_> = until_end(&mut at_remote)
        .await
        .iter()
        .map(|m| (text(m), m.retain))
        .collect();
    assert!(got.is_empty(), "the remote's subscribers got {got:?}");
    stop(&bridge, &[&local, &remote]).await;
}

/// The first CONNACK says Maximum QoS 1; after a reconnection whose CONNACK
/// allows QoS 2, messages go at QoS 2 again (found by a review: the bridge
/// stayed downgraded for good).
// v5:MQTT-3.2.2-11
#[tokio::test]
async fn a_higher_maximum_qos_after_a_reconnection_is_used() {
    let remote = broker().await;
    let (port, sever) = connack_rewriter(remote.local_addrs()[0], |n, c| {
        if n == 0 {
            c.properties.maximum_qos = Some(QoS::AtLeastOnce);
        }
    })
    .await;
    let mut at_remote = remote.subscribe("q/#").unwrap();
    let (local, bridge) =
        bridged(vec![cloud(port, ProtocolVersion::V5).rule(
            rule("q/#", Direction::Out, "", "").qos(QoS::ExactlyOnce),
        )])
        .await;
    local.publish("q/a", "1", QoS::ExactlyOnce, false).unwrap();
    assert_eq!(next(&mut at_remote).await.qos, QoS::AtLeastOnce);
    // Acknowledged before the connection goes: not sent again after it.
    guard(async {
        while stats(&bridge).sent < 1 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    sever.send_modify(|n| *n += 1);
    guard(async {
        while stats(&bridge).connects < 2 || !stats(&bridge).connected {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    local.publish("q/b", "2", QoS::ExactlyOnce, false).unwrap();
    let got = next(&mut at_remote).await;
    assert_eq!(text(&got), pair("q/b", "2"));
    assert_eq!(
        got.qos,
        QoS::ExactlyOnce,
        "connects: {}",
        stats(&bridge).connects
    );
    stop(&bridge, &[&local, &remote]).await;
}

/// The reverse: a reconnection's CONNACK lowers Maximum QoS to 1; a burst
/// of QoS 2 messages then arrives, in order, downgraded (found by a review:
/// each QoS 2 one was refused by the client and sent again behind the rest).
// v5:MQTT-3.2.2-11
#[tokio::test]
async fn a_lower_maximum_qos_after_a_reconnection_keeps_order() {
    let remote = broker().await;
    let (port, sever) = connack_rewriter(remote.local_addrs()[0], |n, c| {
        if n > 0 {
            c.properties.maximum_qos = Some(QoS::AtLeastOnce);
        }
    })
    .await;
    let mut at_remote = remote.subscribe("q/#").unwrap();
    let (local, bridge) =
        bridged(vec![cloud(port, ProtocolVersion::V5).rule(
            rule("q/#", Direction::Out, "", "").qos(QoS::ExactlyOnce),
        )])
        .await;
    sever.send_modify(|n| *n += 1);
    guard(async {
        while stats(&bridge).connects < 2 || !stats(&bridge).connected {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    for i in 0..40 {
        let qos = if i % 3 == 0 {
            QoS::AtMostOnce
        } else {
            QoS::ExactlyOnce
        };
        local.publish("q/x", i.to_string(), qos, false).unwrap();
    }
    local.publish("q/end", "", QoS::AtLeastOnce, false).unwrap();
    let got: Vec<(String, QoS)> = until_end(&mut at_remote)
        .await
        .iter()
        .map(|m| (text(m).1, m.qos))
        .collect();
    let want: Vec<(String, QoS)> = (0..40)
        .map(|i: i32| {
            let qos = if i % 3 == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            };
            (i.to_string(), qos)
        })
        .collect();
    let s = stats(&bridge);
    assert_eq!(got, want, "dropped {} refused {}", s.dropped, s.refused);
    stop(&bridge, &[&local, &remote]).await;
}

/// The retained push reads a snapshot, then queues it: a value published
/// here in between is queued first, and the push copy of that topic is left
/// out, so the remote's retained value never goes back to an older one
/// (found by a review: its subscribers saw values go backwards).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retained_push_does_not_overwrite_newer_values() {
    const TOPICS: usize = 300;
    let remote = broker().await;
    let bridge = MqttBridge::new([cloud(port(&remote), ProtocolVersion::V5)
        .rule(rule("q/#", Direction::Out, "", ""))
        .max_queued_messages(10_000_000)])
    .unwrap();
    let local = Broker::builder()
        .tcp_listener("127.0.0.1:0")
        .bridge(bridge.bridge())
        .start()
        .await
        .unwrap();
    for t in 0..TOPICS {
        let mut publish = fulmar_codec::Publish::new(
            fulmar_codec::MqttString::from(format!("q/{t}")),
            "0".into(),
        );
        publish.retain = true;
        local.inject(&publish).unwrap();
    }
    let mut at_remote = remote.subscribe("q/#").unwrap();
    let publisher = {
        let local = local.clone();
        std::thread::spawn(move || {
            for round in 1..=60u32 {
                for t in 0..TOPICS {
                    local
                        .publish(&format!("q/{t}"), round.to_string(), QoS::AtLeastOnce, true)
                        .unwrap();
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    bridge.attach(&local);
    guard(bridge.wait_connected()).await;
    tokio::task::spawn_blocking(move || publisher.join().unwrap())
        .await
        .unwrap();
    local.publish("q/end", "", QoS::AtLeastOnce, false).unwrap();
    let mut last = std::collections::HashMap::<String, u32>::new();
    let mut backwards = Vec::new();
    let all = until_end(&mut at_remote).await;
    let zeros = all.iter().filter(|m| &m.payload[..] == b"0").count();
    eprintln!(
        "received {} (value 0: {zeros}), stats {:?}",
        all.len(),
        stats(&bridge)
    );
    for m in all {
        let (topic, v) = text(&m);
        let v: u32 = v.parse().unwrap();
        if let Some(prev) = last.get(&topic)
            && v < *prev
        {
            backwards.push((topic.clone(), *prev, v));
        }
        last.insert(topic, v);
    }
    let s = stats(&bridge);
    assert!(
        backwards.is_empty(),
        "{} values went backwards, e.g. {:?}; dropped {}",
        backwards.len(),
        &backwards[..backwards.len().min(5)],
        s.dropped
    );
    stop(&bridge, &[&local, &remote]).await;
}

/// The retained push leaves out the topics an `in` rule brings here: of
/// this link (what is retained here may be the remote's own value), and of
/// another link when either is 3.1.1 (what comes in over a link that cannot
/// carry the relay mark goes out over no other). Between two 5.0 links it
/// goes, as live messages are relayed (found by a review: all of them went).
#[tokio::test]
async fn the_retained_push_leaves_out_what_in_rules_bring_here() {
    for in_version in VERSIONS {
        let elsewhere = broker().await;
        let remote = broker().await;
        let bridge = MqttBridge::new([
            Remote::new(
                "elsewhere",
                options(port(&elsewhere), in_version, "edge-in"),
            )
            .rule(rule("a/#", Direction::In, "", "")),
            cloud(port(&remote), ProtocolVersion::V5)
                .rule(rule("b/#", Direction::In, "", ""))
                .rule(rule("#", Direction::Out, "", "")),
        ])
        .unwrap();
        let local = Broker::builder()
            .tcp_listener("127.0.0.1:0")
            .bridge(bridge.bridge())
            .start()
            .await
            .unwrap();
        for topic in ["a/1", "b/1", "c/1"] {
            let mut publish = fulmar_codec::Publish::new(topic.into(), "v".into());
            publish.retain = true;
            publish.qos = QoS::AtLeastOnce;
            local.inject(&publish).unwrap();
        }
        let mut at_remote = remote.subscribe("#").unwrap();
        bridge.attach(&local);
        guard(bridge.wait_connected()).await;
        local.publish("q/end", "", QoS::AtLeastOnce, false).unwrap();
        let mut got: Vec<_> = until_end(&mut at_remote).await.iter().map(text).collect();
        got.sort();
        let want: &[_] = if in_version == ProtocolVersion::V5 {
            &[pair("a/1", "v"), pair("c/1", "v")]
        } else {
            &[pair("c/1", "v")]
        };
        assert_eq!(got, want, "{in_version:?}");
        stop(&bridge, &[&local, &remote, &elsewhere]).await;
    }
}

/// With overlapping `out` rules, what the first rule pushes is not counted
/// as dropped by the second for want of room (found by a review: each
/// topic the second rule matched beyond the room left was counted).
#[tokio::test]
async fn the_retained_push_counts_no_drops_for_what_another_rule_sends() {
    let remote = broker().await;
    let bridge = MqttBridge::new([cloud(port(&remote), ProtocolVersion::V5)
        .rule(rule("q/#", Direction::Out, "", ""))
        .rule(rule("q/x/#", Direction::Out, "", ""))
        .max_queued_messages(3)])
    .unwrap();
    let local = Broker::builder()
        .tcp_listener("127.0.0.1:0")
        .bridge(bridge.bridge())
        .start()
        .await
        .unwrap();
    for topic in ["q/a", "q/x/1", "q/x/2"] {
        let mut publish = fulmar_codec::Publish::new(topic.into(), "v".into());
        publish.retain = true;
        local.inject(&publish).unwrap();
    }
    let mut at_remote = remote.subscribe("q/#").unwrap();
    bridge.attach(&local);
    let mut got: Vec<_> = Vec::new();
    for _ in 0..3 {
        got.push(text(&next(&mut at_remote).await));
    }
    got.sort();
    assert_eq!(
        got,
        [pair("q/a", "v"), pair("q/x/1", "v"), pair("q/x/2", "v")]
    );
    local.publish("q/end", "", QoS::AtLeastOnce, false).unwrap();
    assert!(until_end(&mut at_remote).await.is_empty());
    assert_eq!(stats(&bridge).dropped, 0);
    stop(&bridge, &[&local, &remote]).await;
}

/// Found by differential testing against mosquitto 2.0: a topic that
/// several `out` rules match goes once, mapped by the first of them, at the
/// highest QoS among them: the rules are the bridge's subscriptions here,
/// and a message matching overlapping subscriptions is delivered at the
/// highest of their QoS (mosquitto's bridge does the same). fulmar took the
/// first rule's QoS.
// MQTT-3.3.5-1
#[tokio::test]
async fn overlapping_out_rules_send_once_at_their_highest_qos() {
    for version in VERSIONS {
        let remote = broker().await;
        let (local, bridge) = bridged(vec![
            cloud(port(&remote), version)
                .rule(rule("#", Direction::Out, "p/", "x/").qos(QoS::AtMostOnce))
                .rule(rule("b/#", Direction::Out, "p/", "y/").qos(QoS::ExactlyOnce)),
        ])
        .await;
        let mut at_remote = remote.subscribe("#").unwrap();

        local
            .publish("p/b/c", "both", QoS::ExactlyOnce, false)
            .unwrap();
        local
            .publish("p/q", "first", QoS::ExactlyOnce, false)
            .unwrap();
        let got = next(&mut at_remote).await;
        assert_eq!(text(&got), pair("x/b/c", "both"), "{version:?}");
        assert_eq!(got.qos, QoS::ExactlyOnce, "{version:?}");
        // Once: the next one is the other message.
        let got = next(&mut at_remote).await;
        assert_eq!(text(&got), pair("x/q", "first"), "{version:?}");
        assert_eq!(got.qos, QoS::AtMostOnce, "{version:?}");
        stop(&bridge, &[&local, &remote]).await;
    }
}

/// Found by differential testing against mosquitto 2.0 (`bridge_outgoing_retain
/// false`, which fulmar ignored): without outgoing retain, what goes to the
/// remote goes without the retain flag, so the remote stores none of it, and
/// the retained messages here are not pushed at connection; what comes in
/// keeps its flag.
// (config, no spec statement)
#[tokio::test]
async fn without_outgoing_retain_nothing_is_retained_on_the_remote() {
    for version in VERSIONS {
        let (remote, link) = remote_with_config(version).await;
        let (local, bridge) = attached(vec![link.outgoing_retain(false)]).await;
        // Retained here before the link is up: not pushed, retained, to the remote.
        local
            .publish("state/early", "1", QoS::AtLeastOnce, true)
            .unwrap();
        guard(bridge.wait_connected()).await;
        expect_config_retained(&local, version).await;
        let mut live = remote.subscribe("state/#").unwrap();
        local
            .publish("state/door", "open", QoS::AtLeastOnce, true)
            .unwrap();
        let got = next(&mut live).await;
        assert_eq!(
            (text(&got), got.retain),
            (pair("state/door", "open"), false),
            "{version:?}"
        );
        let s = settled(&bridge, &[1]).await.remove(0);
        assert_eq!(s.sent, 1, "{version:?}");
        // Only the remote's own retained message is stored there.
        assert_eq!(remote.stats().retained, 1, "{version:?}");
        stop(&bridge, &[&local, &remote]).await;
    }
}

/// Found by differential testing against mosquitto 2.0: the link's state
/// here is published at QoS 1 (mosquitto's bridge queues it so), so a QoS 1
/// subscriber with a session gets it while away; fulmar published it at
/// QoS 0.
// (config, no spec statement)
#[tokio::test]
async fn the_link_state_is_published_at_qos_1() {
    let remote = broker().await;
    let (local, bridge) = bridged(vec![
        cloud(port(&remote), ProtocolVersion::V311).rule(rule("a/#", Direction::Out, "", "")),
    ])
    .await;
    let mut state = local
        .subscribe("$SYS/broker/connection/cloud/state")
        .unwrap();
    let got = next(&mut state).await;
    assert_eq!(
        (got.payload.as_ref(), got.qos),
        (&b"1"[..], QoS::AtLeastOnce)
    );
    bridge.shutdown().await;
    let got = next(&mut state).await;
    assert_eq!(
        (got.payload.as_ref(), got.qos),
        (&b"0"[..], QoS::AtLeastOnce)
    );
    local.shutdown().await;
    remote.shutdown().await;
}

/// Found by differential testing against mosquitto 2.0: `notifications
/// false` there publishes the link's state nowhere; fulmar still published
/// it here. Without local notifications nothing is published here.
// (config, no spec statement)
#[tokio::test]
async fn without_local_notifications_no_state_is_published_here() {
    let remote = broker().await;
    let bridge = MqttBridge::new(vec![
        cloud(port(&remote), ProtocolVersion::V311)
            .notification_topic("state/cloud")
            .local_notifications(false)
            .rule(rule("a/#", Direction::Out, "", "")),
    ])
    .unwrap();
    let local = Broker::builder()
        .tcp_listener("127.0.0.1:0")
        .bridge(bridge.bridge())
        .start()
        .await
        .unwrap();
    let mut all = local.subscribe("#").unwrap();
    bridge.attach(&local);
    guard(bridge.wait_connected()).await;
    bridge.shutdown().await;
    local.publish("end", "", QoS::AtMostOnce, false).unwrap();
    assert_eq!(text(&next(&mut all).await), pair("end", ""));
    assert_eq!(local.stats().retained, 0);
    local.shutdown().await;
    remote.shutdown().await;
}

/// Found by differential testing against mosquitto 2.0: while its link is
/// down, mosquitto's bridge keeps only QoS 1/2 messages for the remote
/// (`cleansession false`; QoS 0 ones are not queued for a session away)
/// and none at all with `cleansession true` (the bridge's session here is
/// clean too); fulmar's kept all. `queue_while_down` sets what waits.
// (config, no spec statement)
#[tokio::test]
async fn what_waits_for_a_down_link_is_chosen_by_qos() {
    for (min, kept) in [
        (Some(QoS::AtMostOnce), &["0", "1"][..]),
        (Some(QoS::AtLeastOnce), &["1"][..]),
        (None, &[][..]),
    ] {
        let remote = broker().await;
        let proxy = Proxy::start(remote.local_addrs()[0]).await;
        proxy.set_accepting(false);
        let (local, bridge) = attached(vec![
            cloud(proxy.port, ProtocolVersion::V311)
                .rule(rule("q/#", Direction::Out, "", ""))
                .queue_while_down(min),
        ])
        .await;
        local.publish("q/x", "0", QoS::AtMostOnce, false).unwrap();
        local.publish("q/x", "1", QoS::AtLeastOnce, false).unwrap();
        let mut at_remote = remote.subscribe("q/#").unwrap();
        proxy.set_accepting(true);
        guard(bridge.wait_connected()).await;
        local
            .publish("q/x", "live", QoS::AtLeastOnce, false)
            .unwrap();
        for payload in kept.iter().chain(&["live"]) {
            assert_eq!(
                text(&next(&mut at_remote).await),
                pair("q/x", payload),
                "{min:?}"
            );
        }
        stop(&bridge, &[&local, &remote]).await;
    }
}
