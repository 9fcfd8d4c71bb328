//! What an application observes: `$SYS/broker/...` topics, the event
//! stream (with lagging observers) and the counters behind them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{GUARD, Peer, addr, next, start, start_with};
use fulmar_broker::{
    AuthDecision, Authenticator, Broker, BrokerEvent, ConnectInfo, Initiator, Limits,
};
use fulmar_codec::{ConnectReasonCode, MqttString, ProtocolVersion, QoS, ReasonCode};

/// The `$SYS` topics: 18 counts, 9 load averages over 3 windows.
const SYS_TOPICS: usize = 20 + 9 * 3;

async fn next_event(events: &mut fulmar_broker::Events) -> BrokerEvent {
    tokio::time::timeout(GUARD, events.recv())
        .await
        .expect("no event in time")
        .expect("events ended")
}

// MQTT-4.7.2-1
#[tokio::test]
async fn sys_topics_are_published_retained() {
    let broker = start_with(Broker::builder().sys_interval(Some(Duration::from_millis(20)))).await;
    // Wait for the first round, then read them as retained messages.
    tokio::time::timeout(GUARD, async {
        while broker.stats().retained < SYS_TOPICS {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("no $SYS topics");
    // `#` does not match `$SYS` (MQTT-4.7.2-1); `$SYS/#` does.
    let mut all = broker.subscribe("#").unwrap();
    let mut sys = broker.subscribe("$SYS/broker/#").unwrap();
    let mut values = HashMap::new();
    while values.len() < SYS_TOPICS {
        let m = next(&mut sys).await;
        assert!(m.retain, "{m:?}");
        values.insert(
            m.topic.to_string(),
            String::from_utf8(m.payload.to_vec()).unwrap(),
        );
    }
    assert_eq!(
        values["$SYS/broker/version"],
        format!("fulmar {}", env!("CARGO_PKG_VERSION"))
    );
    assert!(values["$SYS/broker/uptime"].ends_with(" seconds"));
    assert_eq!(values["$SYS/broker/clients/connected"], "0");
    assert_eq!(values["$SYS/broker/publish/messages/dropped"], "0");
    assert_eq!(values["$SYS/broker/publish/bytes/received"], "0");
    // A client connects, subscribes and publishes: the next rounds count it.
    let mut peer = Peer::connect(addr(&broker), ProtocolVersion::V311, "sys").await;
    peer.sub(1, "a/b", QoS::AtMostOnce).await;
    peer.send(common::publish("a/b", "hello", QoS::AtMostOnce))
        .await;
    assert_eq!(peer.recv_publish().await.payload, "hello");
    let mut seen = HashMap::new();
    while seen
        .get("$SYS/broker/clients/connected")
        .map(String::as_str)
        != Some("1")
        || seen
            .get("$SYS/broker/publish/messages/received")
            .map(String::as_str)
            != Some("1")
        || seen
            .get("$SYS/broker/subscriptions/count")
            .map(String::as_str)
            != Some("3")
    {
        let m = next(&mut sys).await;
        seen.insert(
            m.topic.to_string(),
            String::from_utf8(m.payload.to_vec()).unwrap(),
        );
    }
    // The in-process subscription to `#` got only the client's message.
    let m = next(&mut all).await;
    assert_eq!(m.topic.as_str(), "a/b");
    let stats = broker.stats();
    assert_eq!(stats.clients_connected, 1);
    assert_eq!((stats.messages_received, stats.messages_sent), (1, 1));
    // CONNECT + SUBSCRIBE + PUBLISH in; CONNACK + SUBACK + PUBLISH out.
    assert_eq!((stats.packets_received, stats.packets_sent), (3, 3));
    // CONNECT 17 + SUBSCRIBE 10 + PUBLISH 12 bytes; CONNACK 4 + SUBACK 5 + PUBLISH 12.
    assert_eq!((stats.bytes_received, stats.bytes_sent), (39, 21));
    // Of which payload, "hello" each way.
    assert_eq!(
        (stats.publish_bytes_received, stats.publish_bytes_sent),
        (5, 5)
    );
    // Values already seen above are not published again unless they change.
    while seen
        .get("$SYS/broker/publish/bytes/sent")
        .map(String::as_str)
        != Some("5")
        || seen
            .get("$SYS/broker/publish/bytes/received")
            .map(String::as_str)
            != Some("5")
    {
        let m = next(&mut sys).await;
        seen.insert(
            m.topic.to_string(),
            String::from_utf8(m.payload.to_vec()).unwrap(),
        );
    }
    broker.shutdown().await;
}

// MQTT-4.7.2-1
#[tokio::test]
async fn sys_topics_are_republished_when_they_change_and_count_shared_subscriptions_apart() {
    let broker = start_with(Broker::builder().sys_interval(Some(Duration::from_millis(10)))).await;
    tokio::time::timeout(GUARD, async {
        while broker.stats().retained < SYS_TOPICS {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("no $SYS topics");
    let mut sys = broker.subscribe("$SYS/broker/#").unwrap();
    let mut retained = 0;
    while retained < SYS_TOPICS {
        if next(&mut sys).await.retain {
            retained += 1;
        }
    }
    // As mosquitto: a value is published again only when it changed (the
    // uptime every time). Five more rounds: no second version.
    let (mut uptimes, mut versions) = (0, 0);
    while uptimes < 5 {
        let m = next(&mut sys).await;
        match m.topic.as_str() {
            "$SYS/broker/uptime" => uptimes += 1,
            "$SYS/broker/version" => versions += 1,
            _ => {}
        }
    }
    assert_eq!(versions, 0, "an unchanged value was published again");
    // A shared subscription counts in shared_subscriptions/count only.
    let mut peer = Peer::connect(addr(&broker), ProtocolVersion::V5, "counted").await;
    peer.sub(1, "plain/x", QoS::AtMostOnce).await;
    peer.sub(2, "$share/g/shared/x", QoS::AtMostOnce).await;
    let mut seen = HashMap::new();
    // The in-process `$SYS/broker/#` and `plain/x`.
    while seen
        .get("$SYS/broker/subscriptions/count")
        .map(String::as_str)
        != Some("2")
        || seen
            .get("$SYS/broker/shared_subscriptions/count")
            .map(String::as_str)
            != Some("1")
    {
        let m = next(&mut sys).await;
        seen.insert(
            m.topic.to_string(),
            String::from_utf8(m.payload.to_vec()).unwrap(),
        );
    }
    let stats = broker.stats();
    assert_eq!((stats.subscriptions, stats.shared_subscriptions), (3, 1));
    peer.disconnect().await;
    broker.shutdown().await;
}

// The `$SYS` topics mosquitto publishes beyond the counts: the most clients
// at once, sessions expired, and the load averages per minute
// (`$SYS/broker/load/{counter}/{1min,5min,15min}`).
#[tokio::test]
async fn sys_topics_report_the_maximum_expired_sessions_and_the_load() {
    let broker = start_with(Broker::builder().sys_interval(Some(Duration::from_millis(10)))).await;
    let mut sys = broker.subscribe("$SYS/broker/#").unwrap();
    let a = Peer::connect(addr(&broker), ProtocolVersion::V5, "a").await;
    // A session that expires one second after its client leaves.
    let mut c = fulmar_codec::Connect::new(ProtocolVersion::V5, "expiring".into());
    c.properties.session_expiry_interval = Some(1);
    let (mut b, _) = Peer::connect_with(addr(&broker), c).await;
    b.sub(1, "load/x", QoS::AtMostOnce).await;
    for _ in 0..10 {
        b.send(common::publish("load/x", "m", QoS::AtMostOnce))
            .await;
        b.recv_publish().await;
    }
    b.disconnect().await;
    a.disconnect().await;
    let mut seen: HashMap<String, String> = HashMap::new();
    let positive = |seen: &HashMap<String, String>, topic: &str| {
        seen.get(topic)
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v > 0.0)
    };
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let m = next(&mut sys).await;
            seen.insert(
                m.topic.to_string(),
                String::from_utf8(m.payload.to_vec()).unwrap(),
            );
            if seen.get("$SYS/broker/clients/maximum").map(String::as_str) == Some("2")
                && seen
                    .get("$SYS/broker/clients/connected")
                    .map(String::as_str)
                    == Some("0")
                && seen.get("$SYS/broker/clients/expired").map(String::as_str) == Some("1")
                && positive(&seen, "$SYS/broker/load/connections/1min")
                && positive(&seen, "$SYS/broker/load/sockets/5min")
                && positive(&seen, "$SYS/broker/load/publish/received/1min")
                && positive(&seen, "$SYS/broker/load/publish/sent/15min")
                && positive(&seen, "$SYS/broker/load/bytes/received/1min")
            {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("$SYS topics seen: {seen:#?}"));
    // Every load topic has a value with two decimals; nothing was dropped.
    for counter in [
        "messages/received",
        "messages/sent",
        "publish/received",
        "publish/sent",
        "publish/dropped",
        "bytes/received",
        "bytes/sent",
        "connections",
        "sockets",
    ] {
        for window in ["1min", "5min", "15min"] {
            let topic = format!("$SYS/broker/load/{counter}/{window}");
            let value = seen.get(&topic).unwrap_or_else(|| panic!("no {topic}"));
            assert!(
                value.parse::<f64>().is_ok_and(|v| v >= 0.0),
                "{topic}: {value}"
            );
            assert_eq!(
                value.split('.').nth(1).map(str::len),
                Some(2),
                "{topic}: {value}"
            );
        }
    }
    assert_eq!(seen["$SYS/broker/load/publish/dropped/1min"], "0.00");
    let stats = broker.stats();
    assert_eq!((stats.clients_maximum, stats.sessions_expired), (2, 1));
    assert_eq!((stats.connects, stats.connections_accepted), (2, 2));
    broker.shutdown().await;
}

#[tokio::test]
async fn sys_topics_are_off_by_default() {
    let broker = start_with(Broker::builder()).await;
    assert_eq!(Limits::default().sys_interval, None);
    let mut peer = Peer::connect(addr(&broker), ProtocolVersion::V5, "quiet").await;
    peer.sub(1, "$SYS/#", QoS::AtMostOnce).await;
    assert_eq!(broker.stats().retained, 0);
    peer.disconnect().await;
    broker.shutdown().await;
}

// A zero `$SYS` interval is off, as `None`: it panicked the `$SYS` task
// (a zero period), which then never published, whatever the interval.
#[tokio::test]
async fn a_zero_sys_interval_is_off() {
    static PANICKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICKED.store(true, std::sync::atomic::Ordering::SeqCst);
        previous(info);
    }));
    let broker = start_with(Broker::builder().sys_interval(Some(Duration::ZERO))).await;
    let mut peer = Peer::connect(addr(&broker), ProtocolVersion::V5, "quiet").await;
    peer.sub(1, "$SYS/#", QoS::AtMostOnce).await;
    assert_eq!(broker.stats().retained, 0);
    peer.disconnect().await;
    broker.shutdown().await;
    assert!(
        !PANICKED.load(std::sync::atomic::Ordering::SeqCst),
        "a broker task panicked"
    );
}

// MQTT-4.7.2-1 (the Server SHOULD keep clients from exchanging messages on
// `$` topics): `$SYS` is the broker's own; a client's PUBLISH or will there
// is refused as not authorized (as mosquitto does), so it cannot plant a
// retained `$SYS/broker/version` either.
#[tokio::test]
async fn clients_cannot_publish_to_sys_topics() {
    let broker = start_with(Broker::builder()).await;
    let mut watch = broker.subscribe("$SYS/#").unwrap();
    let mut peer = Peer::connect(addr(&broker), ProtocolVersion::V5, "planter").await;
    let mut p = common::publish("$SYS/broker/version", "evil", QoS::AtLeastOnce);
    p.retain = true;
    p.packet_id = fulmar_codec::PacketId::new(1);
    peer.send(p).await;
    // PUBACK 0x87 Not authorized.
    peer.expect_raw(&[0x40, 0x03, 0x00, 0x01, 0x87]).await;
    let mut c = fulmar_codec::Connect::new(ProtocolVersion::V5, "willer".into());
    c.will = Some(fulmar_codec::Will::new("$SYS/x".into(), "w".into()));
    let (_, ack) = Peer::connect_with(addr(&broker), c).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::NotAuthorized);
    // A bridge's status, as mosquitto's bridges publish it, is let through.
    let mut p = common::publish("$SYS/broker/connection/edge/state", "1", QoS::AtLeastOnce);
    p.packet_id = fulmar_codec::PacketId::new(3);
    peer.send(p).await;
    peer.expect_raw(&[0x40, 0x02, 0x00, 0x03]).await;
    assert_eq!(next(&mut watch).await.payload, "1");
    // Other `$` topics are not the broker's: they work.
    let mut p = common::publish("$app/x", "ok", QoS::AtLeastOnce);
    p.packet_id = fulmar_codec::PacketId::new(2);
    peer.send(p).await;
    peer.expect_raw(&[0x40, 0x03, 0x00, 0x02, 0x10]).await;
    assert_eq!(broker.stats().retained, 0);
    broker
        .publish("$SYS/mine", "app", QoS::AtMostOnce, false)
        .unwrap();
    assert_eq!(next(&mut watch).await.payload, "app");
    broker.shutdown().await;
}

// Every refused CONNECT is an event, also the ones the protocol rules refuse
// before any hook is asked: an unsupported protocol level (CONNACK 0x84),
// a 3.1.1 empty client identifier with CleanSession 0 (return code 2).
#[tokio::test]
async fn connects_the_protocol_refuses_are_events_too() {
    let broker = start().await;
    let mut events = broker.events();
    let mut peer = Peer::open(addr(&broker), ProtocolVersion::V5).await;
    // CONNECT, protocol level 6.
    peer.send_raw(&[
        0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
    ])
    .await;
    peer.expect_raw(&[0x20, 0x03, 0x00, 0x84, 0x00]).await;
    peer.expect_closed().await;
    match next_event(&mut events).await {
        BrokerEvent::Refused { reason_code, .. } => {
            assert_eq!(reason_code, ConnectReasonCode::UnsupportedProtocolVersion);
        }
        other => panic!("{other:?}"),
    }
    let mut peer = Peer::open(addr(&broker), ProtocolVersion::V311).await;
    // CONNECT 3.1.1, CleanSession 0, empty client identifier.
    peer.send_raw(&[
        0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x00, 0x00, 0x3c, 0x00, 0x00,
    ])
    .await;
    peer.expect_raw(&[0x20, 0x02, 0x00, 0x02]).await;
    match next_event(&mut events).await {
        BrokerEvent::Refused { reason_code, .. } => {
            assert_eq!(reason_code, ConnectReasonCode::ClientIdentifierNotValid);
        }
        other => panic!("{other:?}"),
    }
    broker.shutdown().await;
}

// The sessions the broker holds, connected or kept for an absent client.
#[tokio::test]
async fn sessions_lists_connected_and_kept_sessions() {
    let broker = start().await;
    let mut a = fulmar_codec::Connect::new(ProtocolVersion::V5, MqttString::from("a"));
    a.properties.session_expiry_interval = Some(60);
    let (mut a, _) = Peer::connect_with(addr(&broker), a).await;
    a.sub(1, "x/+", QoS::AtLeastOnce).await;
    a.sub(2, "y", QoS::AtMostOnce).await;
    let mut b = fulmar_codec::Connect::new(ProtocolVersion::V311, MqttString::from("b"));
    b.clean_start = false;
    let (b, _) = Peer::connect_with(addr(&broker), b).await;
    let _c = Peer::connect(addr(&broker), ProtocolVersion::V5, "c").await;
    drop(b);
    common::wait_until("b away", || {
        broker
            .sessions()
            .iter()
            .any(|s| s.client_id == "b" && !s.connected)
    })
    .await;
    let sessions: Vec<_> = broker
        .sessions()
        .into_iter()
        .map(|s| {
            (
                s.client_id,
                s.connected,
                s.session_expiry_interval,
                s.subscriptions,
            )
        })
        .collect();
    assert_eq!(
        sessions,
        [
            ("a".to_owned(), true, 60, 2),
            ("b".to_owned(), false, u32::MAX, 0),
            ("c".to_owned(), true, 0, 0),
        ]
    );
    a.disconnect().await;
    broker.shutdown().await;
}

struct RefuseBob;

#[async_trait::async_trait]
impl Authenticator for RefuseBob {
    async fn authenticate(&self, connect: &ConnectInfo) -> AuthDecision {
        if connect.username.as_deref() == Some("bob") {
            AuthDecision::Reject(ConnectReasonCode::NotAuthorized)
        } else {
            AuthDecision::Allow
        }
    }
}

#[tokio::test]
async fn events_report_connections_subscriptions_and_disconnects() {
    let broker = start_with(Broker::builder().authenticator(RefuseBob)).await;
    let mut events = broker.events();
    let mut peer = Peer::connect(addr(&broker), ProtocolVersion::V5, "ev").await;
    match next_event(&mut events).await {
        BrokerEvent::Connected {
            client_id,
            protocol_version,
            session_present,
            remote_addr,
            ..
        } => {
            assert_eq!(client_id, "ev");
            assert_eq!(protocol_version, ProtocolVersion::V5);
            assert!(!session_present);
            assert_eq!(remote_addr, peer.stream.local_addr().unwrap());
        }
        other => panic!("{other:?}"),
    }
    peer.sub(1, "x/+", QoS::AtLeastOnce).await;
    assert_eq!(
        next_event(&mut events).await,
        BrokerEvent::Subscribed {
            client_id: "ev".into(),
            filter: "x/+".into(),
            qos: QoS::AtLeastOnce
        }
    );
    peer.disconnect().await;
    assert_eq!(
        next_event(&mut events).await,
        BrokerEvent::Disconnected {
            client_id: "ev".into(),
            initiator: Initiator::Remote,
            reason_code: ReasonCode::NormalDisconnection,
        }
    );
    // A refused CONNECT.
    let mut connect = fulmar_codec::Connect::new(ProtocolVersion::V5, MqttString::from("b"));
    connect.username = Some(MqttString::from("bob"));
    let (mut refused, ack) = Peer::connect_with(addr(&broker), connect).await;
    assert_eq!(ack.reason_code, ConnectReasonCode::NotAuthorized);
    match next_event(&mut events).await {
        BrokerEvent::Refused {
            client_id,
            reason_code,
            ..
        } => assert_eq!(
            (client_id.as_str(), reason_code),
            ("b", ConnectReasonCode::NotAuthorized)
        ),
        other => panic!("{other:?}"),
    }
    refused.expect_closed().await;
    // A client that vanishes.
    let peer = Peer::connect(addr(&broker), ProtocolVersion::V311, "gone").await;
    assert!(matches!(
        next_event(&mut events).await,
        BrokerEvent::Connected { .. }
    ));
    drop(peer);
    assert_eq!(
        next_event(&mut events).await,
        BrokerEvent::Disconnected {
            client_id: "gone".into(),
            initiator: Initiator::Network,
            reason_code: ReasonCode::UnspecifiedError,
        }
    );
    broker.shutdown().await;
    assert_eq!(events.recv().await, None);
    assert_eq!(events.lost(), 0);
}

#[tokio::test]
async fn a_lagging_observer_loses_the_oldest_events_counted() {
    let mut limits = Limits::default();
    limits.event_capacity = 2;
    let broker = start_with(Broker::builder().limits(limits)).await;
    let mut slow = broker.events();
    let mut peer = Peer::connect(addr(&broker), ProtocolVersion::V5, "lag").await;
    for (n, filter) in ["a", "b", "c", "d"].into_iter().enumerate() {
        peer.sub(n as u16 + 1, filter, QoS::AtMostOnce).await;
    }
    // Connected + 4 Subscribed = 5 events, 2 kept: the last two subscriptions.
    let kept: Vec<_> = std::iter::from_fn(|| slow.try_recv()).collect();
    assert_eq!(slow.lost(), 3);
    let filters: Vec<_> = kept
        .iter()
        .map(|e| match e {
            BrokerEvent::Subscribed { filter, .. } => filter.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(filters, ["c", "d"]);
    peer.disconnect().await;
    broker.shutdown().await;
}
