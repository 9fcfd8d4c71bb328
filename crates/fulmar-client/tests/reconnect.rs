//! Connections severed mid-flow by a loopback proxy: QoS 1/2 publishes still
//! complete, QoS 2 is delivered once, the session resumes, publishes made
//! while disconnected are buffered up to a bound.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use common::{Mosquitto, Proxy, guard};
use fulmar_client::{Client, ConnectOptions, Error, Message, ProtocolVersion, QoS, Reconnect};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

/// MQTT 3.1 as well: mosquitto still speaks it.
const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V31,
    ProtocolVersion::V311,
    ProtocolVersion::V5,
];

fn fast_reconnect() -> Reconnect {
    Reconnect::exponential(Duration::from_millis(5), Duration::from_millis(50))
}

/// A persistent-session client through `port`. The identifier is suffixed
/// with the version: each version's run gets a session of its own, and
/// nothing the broker kept from the other run (a QoS 2 message whose PUBREC
/// was not read before the DISCONNECT) is redelivered into this one.
fn persistent(port: u16, version: ProtocolVersion, id: &str) -> ConnectOptions {
    let options = ConnectOptions::new("127.0.0.1", port)
        .protocol_version(version)
        .client_id(format!("{id}-{version:?}"))
        .clean_start(false)
        .reconnect(fast_reconnect());
    match version {
        ProtocolVersion::V5 => options.session_expiry_interval(300),
        ProtocolVersion::V31 | ProtocolVersion::V311 => options,
    }
}

fn direct(broker: &Mosquitto, version: ProtocolVersion, id: &str) -> ConnectOptions {
    ConnectOptions::new("127.0.0.1", broker.port)
        .protocol_version(version)
        .client_id(id)
        .reconnect(Reconnect::disabled())
}

/// Collects messages until the payload `end`, counting each payload.
async fn collect_until(
    stream: &mut (impl futures::Stream<Item = Message> + Unpin),
    end: &str,
) -> HashMap<Bytes, usize> {
    let mut seen = HashMap::new();
    loop {
        let m = guard(stream.next()).await.expect("stream ended");
        if m.payload == end {
            return seen;
        }
        *seen.entry(m.payload.clone()).or_insert(0) += 1;
    }
}

// MQTT-4.4.0-1: after a reconnect with a resumed session the client re-sends
// unacknowledged PUBLISH (DUP) and PUBREL packets; every QoS 1/2 publish
// completes.
// v5:MQTT-4.3.3-6 v5:MQTT-4.3.3-12: QoS 2 is delivered exactly once despite the resends.
// v3:MQTT-3.1.2-4 v5:MQTT-3.1.2-5: the broker resumes the session (CleanSession 0).
#[tokio::test]
async fn publishes_complete_across_severed_connections() {
    let broker = Mosquitto::start();
    for version in VERSIONS {
        let proxy = Proxy::start(broker.addr()).await;
        let (watcher, _) = guard(Client::connect(direct(&broker, version, "watcher")))
            .await
            .unwrap();
        let mut seen = guard(watcher.subscribe("flow/#", QoS::ExactlyOnce))
            .await
            .unwrap();
        // Consumed while the flow runs: a backlogged watcher would hold back
        // its own publish of the end marker (observed with mosquitto 2.0: no
        // PUBACK for a 5.0 client's PUBLISH while the client's Receive Maximum
        // is used up by messages queued for it).
        let collector = tokio::spawn(async move { collect_until(&mut seen, "end").await });
        let (publisher, _) = guard(Client::connect(persistent(
            proxy.port,
            version,
            "flaky-pub",
        )))
        .await
        .unwrap();
        let mut pending: FuturesUnordered<_> = (0..200)
            .map(|i| {
                let qos = if i % 2 == 0 {
                    QoS::ExactlyOnce
                } else {
                    QoS::AtLeastOnce
                };
                publisher
                    .publish(format!("flow/{}", u8::from(qos)), format!("{i}"))
                    .qos(qos)
                    .into_future()
            })
            .collect();
        // Sever after the first completions, then again a little later.
        let mut completed = 0;
        while let Some(result) = guard(pending.next()).await {
            let outcome = result.unwrap();
            assert!(!outcome.reason_code.is_error());
            completed += 1;
            if completed == 5 || completed == 80 {
                proxy.sever();
            }
        }
        assert_eq!(completed, 200);
        guard(watcher.publish("flow/end", "end").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        let counts = guard(collector).await.unwrap();
        for i in 0..200 {
            let n = counts.get(format!("{i}").as_bytes()).copied().unwrap_or(0);
            if i % 2 == 0 {
                assert_eq!(n, 1, "QoS 2 message {i} delivered {n} times ({version:?})");
            } else {
                assert!(n >= 1, "QoS 1 message {i} lost ({version:?})");
            }
        }
        guard(publisher.disconnect()).await.unwrap();
        guard(watcher.disconnect()).await.unwrap();
    }
}

// The subscriber's connection is severed while QoS 2 messages stream in: the
// client's session keeps the inbound QoS 2 state, so each is delivered once.
// v5:MQTT-4.3.3-10 MQTT-4.4.0-1
#[tokio::test]
async fn inbound_qos2_is_delivered_once_across_severed_connections() {
    let broker = Mosquitto::start();
    for version in VERSIONS {
        let proxy = Proxy::start(broker.addr()).await;
        let (sub, _) = guard(Client::connect(persistent(
            proxy.port,
            version,
            "flaky-sub",
        )))
        .await
        .unwrap();
        let mut stream = guard(sub.subscribe("in/#", QoS::ExactlyOnce))
            .await
            .unwrap();
        let (publisher, _) = guard(Client::connect(direct(&broker, version, "steady-pub")))
            .await
            .unwrap();
        let mut counts: HashMap<Bytes, usize> = HashMap::new();
        for i in 0..150 {
            guard(
                publisher
                    .publish("in/x", format!("{i}"))
                    .qos(QoS::ExactlyOnce),
            )
            .await
            .unwrap();
            if i == 30 || i == 90 {
                proxy.sever();
            }
            // Drain what has arrived so far without waiting.
            while let Some(Some(m)) = futures::FutureExt::now_or_never(stream.next()) {
                *counts.entry(m.payload.clone()).or_insert(0) += 1;
            }
        }
        guard(publisher.publish("in/x", "end").qos(QoS::ExactlyOnce))
            .await
            .unwrap();
        for (k, v) in collect_until(&mut stream, "end").await {
            *counts.entry(k).or_insert(0) += v;
        }
        for i in 0..150 {
            let n = counts.get(format!("{i}").as_bytes()).copied().unwrap_or(0);
            assert_eq!(n, 1, "message {i} delivered {n} times ({version:?})");
        }
        guard(sub.disconnect()).await.unwrap();
        guard(publisher.disconnect()).await.unwrap();
    }
}

// v3:MQTT-3.1.2-5 v5:MQTT-3.1.2-5: messages published while the client was away are
// kept in its session and delivered on resume; the client's publishes made
// while disconnected wait in a bounded queue, beyond which they are refused.
#[tokio::test]
async fn session_resumes_and_offline_publishes_are_bounded() {
    let broker = Mosquitto::start();
    for version in VERSIONS {
        let proxy = Proxy::start(broker.addr()).await;
        let options = persistent(proxy.port, version, "away").max_buffered_publishes(3);
        let (client, _) = guard(Client::connect(options)).await.unwrap();
        let mut stream = guard(client.subscribe("away/in", QoS::AtLeastOnce))
            .await
            .unwrap();
        let (other, _) = guard(Client::connect(direct(&broker, version, "other")))
            .await
            .unwrap();
        let mut outbox = guard(other.subscribe("away/out", QoS::AtLeastOnce))
            .await
            .unwrap();

        proxy.set_accepting(false);
        proxy.sever();
        guard(client.wait_connected(false)).await.unwrap();
        assert!(!client.is_connected());
        // While away: the broker queues for the session...
        for i in 0..3 {
            guard(
                other
                    .publish("away/in", format!("queued {i}"))
                    .qos(QoS::AtLeastOnce),
            )
            .await
            .unwrap();
        }
        // ...and the client buffers three publishes, then refuses.
        let mut buffered: Vec<_> = (0..3)
            .map(|i| {
                Box::pin(
                    client
                        .publish("away/out", format!("buffered {i}"))
                        .qos(QoS::AtLeastOnce)
                        .into_future(),
                )
            })
            .collect();
        for f in &mut buffered {
            assert!(futures::poll!(f).is_pending());
        }
        let refused = guard(
            client
                .publish("away/out", "one too many")
                .qos(QoS::AtLeastOnce),
        )
        .await;
        assert!(matches!(refused, Err(Error::QueueFull(3))), "{refused:?}");

        proxy.set_accepting(true);
        guard(client.wait_connected(true)).await.unwrap();
        for f in buffered {
            guard(f).await.unwrap();
        }
        for i in 0..3 {
            let m = guard(stream.next()).await.unwrap();
            assert_eq!(m.payload, format!("queued {i}"));
        }
        for i in 0..3 {
            let m = guard(outbox.next()).await.unwrap();
            assert_eq!(m.payload, format!("buffered {i}"));
        }
        guard(client.disconnect()).await.unwrap();
        guard(other.disconnect()).await.unwrap();
    }
}

// v5:MQTT-3.2.2-5: the broker kept no session (expiry 0), so the client
// discards its own and subscribes its live streams again; the stream keeps
// receiving (the retained message arrives again with the new subscription).
#[tokio::test]
async fn streams_are_resubscribed_when_the_session_is_lost() {
    let broker = Mosquitto::start();
    let proxy = Proxy::start(broker.addr()).await;
    let options = ConnectOptions::new("127.0.0.1", proxy.port)
        .client_id("forgetful")
        .reconnect(fast_reconnect());
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    guard(
        client
            .publish("again/r", "retained")
            .qos(QoS::AtLeastOnce)
            .retain(true),
    )
    .await
    .unwrap();
    let mut stream = guard(client.subscribe("again/#", QoS::AtLeastOnce))
        .await
        .unwrap();
    assert!(guard(stream.next()).await.unwrap().retain);
    proxy.sever();
    let m = guard(stream.next()).await.unwrap();
    assert!(m.retain);
    assert_eq!(m.payload, "retained");
    guard(client.publish("again/live", "live").qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    assert_eq!(guard(stream.next()).await.unwrap().payload, "live");
    guard(client.publish("again/r", Bytes::new()).retain(true))
        .await
        .unwrap();
    guard(client.disconnect()).await.unwrap();
}

// Reconnect off: a lost connection closes the client; calls fail with Closed.
#[tokio::test]
async fn without_reconnect_a_lost_connection_closes_the_client() {
    let broker = Mosquitto::start();
    let proxy = Proxy::start(broker.addr()).await;
    let options = ConnectOptions::new("127.0.0.1", proxy.port).reconnect(Reconnect::disabled());
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    let mut stream = guard(client.subscribe("x", QoS::AtMostOnce)).await.unwrap();
    proxy.sever();
    assert!(guard(stream.next()).await.is_none());
    guard(client.wait_connected(false)).await.unwrap();
    assert!(matches!(
        guard(client.publish("x", "y")).await,
        Err(Error::Closed)
    ));
}

// Manual acknowledgements: a message not acknowledged when the connection
// drops is sent again by the broker after the session resumes (with DUP), and
// an acknowledgement from the old connection is moot.
// MQTT-4.4.0-1
#[tokio::test]
async fn unacknowledged_messages_are_redelivered_after_a_reconnect() {
    let broker = Mosquitto::start();
    for version in VERSIONS {
        let proxy = Proxy::start(broker.addr()).await;
        let options = persistent(proxy.port, version, "slow-acker").manual_acks(true);
        let (client, _) = guard(Client::connect(options)).await.unwrap();
        let mut stream = guard(client.subscribe("manual/#", QoS::AtLeastOnce))
            .await
            .unwrap();
        let (publisher, _) = guard(Client::connect(direct(&broker, version, "manual-pub")))
            .await
            .unwrap();
        guard(publisher.publish("manual/1", "once").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        let first = guard(stream.next()).await.unwrap();
        assert!(first.needs_ack());
        assert!(!first.dup);
        proxy.sever();
        let again = guard(stream.next()).await.unwrap();
        assert_eq!(again.payload, "once");
        assert!(again.dup);
        // The stale token is ignored; the new one acknowledges.
        guard(client.ack(&first)).await.unwrap();
        guard(client.ack(&again)).await.unwrap();
        // Acknowledged: a marker is the next message, not a third copy.
        guard(
            publisher
                .publish("manual/2", "marker")
                .qos(QoS::AtLeastOnce),
        )
        .await
        .unwrap();
        let m = guard(stream.next()).await.unwrap();
        assert_eq!(m.payload, "marker");
        guard(client.ack(&m)).await.unwrap();
        guard(client.disconnect()).await.unwrap();
        guard(publisher.disconnect()).await.unwrap();
    }
}

// v5:MQTT-3.2.2-5: the broker kept no session, and the client has more live
// streams (70) than SUBSCRIBE requests may wait at once (64): every stream is
// subscribed again, the later ones as SUBACKs free request slots. The last
// stream gets its retained message again, then a live one.
#[tokio::test]
async fn more_streams_than_request_slots_are_all_resubscribed() {
    const N: usize = 70;
    let broker = Mosquitto::start();
    let proxy = Proxy::start(broker.addr()).await;
    let options = ConnectOptions::new("127.0.0.1", proxy.port)
        .client_id("many-streams")
        .reconnect(fast_reconnect());
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    let last = format!("many/{}", N - 1);
    guard(
        client
            .publish(last.as_str(), "retained")
            .qos(QoS::AtLeastOnce)
            .retain(true),
    )
    .await
    .unwrap();
    let mut streams = Vec::new();
    for i in 0..N {
        let filter = format!("many/{i}");
        streams.push(
            guard(client.subscribe(&filter, QoS::AtLeastOnce))
                .await
                .unwrap(),
        );
    }
    let mut stream = streams.pop().unwrap();
    assert!(guard(stream.next()).await.unwrap().retain);
    proxy.sever();
    let m = guard(stream.next()).await.unwrap();
    assert!(m.retain, "subscribed again: the retained message again");
    assert_eq!(m.payload, "retained");
    guard(client.publish(last.as_str(), "live").qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    assert_eq!(guard(stream.next()).await.unwrap().payload, "live");
    guard(client.publish(last.as_str(), Bytes::new()).retain(true))
        .await
        .unwrap();
    guard(client.disconnect()).await.unwrap();
}

/// A port on loopback where nothing listens (bound, then let go).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

// A fallback address: the first connection goes on to it when the first
// address does not answer.
#[tokio::test]
async fn the_first_connection_tries_each_address_in_turn() {
    let broker = Mosquitto::start();
    let options = ConnectOptions::new("127.0.0.1", closed_port())
        .fallback_address("127.0.0.1", closed_port())
        .fallback_address("127.0.0.1", broker.port)
        .reconnect(Reconnect::disabled());
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    let mut stream = guard(client.subscribe("fallback/#", QoS::AtLeastOnce))
        .await
        .unwrap();
    guard(client.publish("fallback/1", "here").qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    let got = guard(stream.next()).await.unwrap();
    assert_eq!(got.payload.as_ref(), b"here");
    // None answering: the error of the last attempt.
    let options = ConnectOptions::new("127.0.0.1", closed_port())
        .fallback_address("127.0.0.1", closed_port())
        .reconnect(Reconnect::disabled());
    assert!(matches!(
        guard(Client::connect(options)).await,
        Err(Error::Io(_))
    ));
}

// A reconnection moves to the next address after a failed attempt: the
// broker of the first address gone, the client is served by the second one,
// and its subscription streams are subscribed there again.
#[tokio::test]
async fn a_reconnection_moves_to_the_next_address() {
    let first = Mosquitto::start();
    let second = Mosquitto::start();
    let options = ConnectOptions::new("127.0.0.1", first.port)
        .fallback_address("127.0.0.1", second.port)
        .reconnect(fast_reconnect());
    let (client, _) = guard(Client::connect(options)).await.unwrap();
    let mut stream = guard(client.subscribe("moved/#", QoS::AtLeastOnce))
        .await
        .unwrap();
    drop(first);
    guard(client.wait_connected(false)).await.unwrap();
    guard(client.wait_connected(true)).await.unwrap();
    // Subscribed again on the second broker: a message published there
    // reaches the stream.
    let (other, _) = guard(Client::connect(direct(
        &second,
        ProtocolVersion::V5,
        "other",
    )))
    .await
    .unwrap();
    let mut n = 0;
    let got = loop {
        n += 1;
        guard(
            other
                .publish("moved/x", "on the second")
                .qos(QoS::AtLeastOnce),
        )
        .await
        .unwrap();
        if let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(200), stream.next()).await
        {
            break message;
        }
        assert!(n < 100, "nothing reached the stream");
    };
    assert_eq!(got.payload.as_ref(), b"on the second");
}
