//! The connection lifecycle around hibernation, take-over, wills, keep-alive
//! and shutdown (from a review of the broker's connection machinery; the
//! shutdown and woken-deadline tests failed before their fixes).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{GUARD, Peer, addr, publish, start_with};
use fulmar_broker::{Broker, BrokerHandle};
use fulmar_codec::{
    Connect, DisconnectReasonCode, MqttString, Packet, PacketId, ProtocolVersion, PubAck, PubRel,
    QoS, Will,
};

async fn broker_after(idle: Duration) -> BrokerHandle {
    start_with(Broker::builder().hibernate_after(Some(idle))).await
}

/// Waits until exactly `n` connections hibernate.
async fn hibernating(broker: &BrokerHandle, n: u64) {
    let wait = async {
        while broker.stats().connections_hibernating != n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(GUARD, wait).await.unwrap_or_else(|_| {
        panic!(
            "expected {n} hibernating connections, {} after {GUARD:?}",
            broker.stats().connections_hibernating
        )
    });
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn versions() -> [ProtocolVersion; 2] {
    [ProtocolVersion::V311, ProtocolVersion::V5]
}

/// QoS 2 inbound: the PUBREL reaches a connection that hibernated while
/// awaiting it, and the message is delivered once.
// v3:MQTT-4.3.3-2 v5:MQTT-4.3.3-8 v5:MQTT-4.3.3-11 MQTT-4.1.0-1
#[tokio::test]
async fn qos2_pubrel_reaches_a_hibernating_connection() {
    for version in versions() {
        let broker = broker_after(Duration::from_millis(20)).await;
        let mut sub = broker.subscribe("q2/#").unwrap();
        let mut p = Peer::connect(addr(&broker), version, "q2").await;
        let mut m = publish("q2/a", "once", QoS::ExactlyOnce);
        m.packet_id = PacketId::new(7);
        p.send(m.clone()).await;
        assert!(matches!(p.recv().await, Packet::PubRec(_)));
        hibernating(&broker, 1).await;
        // The same PUBLISH again (DUP): acknowledged, not routed twice.
        m.dup = true;
        p.send(m).await;
        assert!(matches!(p.recv().await, Packet::PubRec(_)));
        hibernating(&broker, 1).await;
        p.send(PubRel::new(PacketId::new(7).unwrap())).await;
        assert!(matches!(p.recv().await, Packet::PubComp(_)));
        let got = common::next(&mut sub).await;
        assert_eq!(&got.payload[..], b"once");
        broker
            .publish("q2/marker", "m", QoS::AtMostOnce, false)
            .unwrap();
        assert_eq!(&common::next(&mut sub).await.payload[..], b"m");
        broker.shutdown().await;
    }
}

/// A client that pings well within its keep alive is never dropped while it
/// hibernates between the pings.
// v3:MQTT-3.1.2-24 v5:MQTT-3.1.2-22
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_is_not_enforced_early_on_a_hibernating_connection() {
    let broker = broker_after(Duration::from_millis(10)).await;
    let mut c = Connect::new(ProtocolVersion::V5, MqttString::from("pinger"));
    c.keep_alive = 2;
    let (mut p, _) = Peer::connect_with(addr(&broker), c).await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        p.send_raw(&[0xC0, 0x00]).await;
        p.expect_raw(&[0xD0, 0x00]).await;
    }
    broker.shutdown().await;
}

/// A DISCONNECT sent to a hibernating connection ends it, without its will.
// MQTT-3.14.4-3 MQTT-3.1.2-10
#[tokio::test]
async fn a_disconnect_to_a_hibernating_connection_drops_the_will() {
    for version in versions() {
        let broker = broker_after(Duration::from_millis(20)).await;
        let mut wills = broker.subscribe("w/#").unwrap();
        let mut c = Connect::new(version, MqttString::from("d"));
        c.will = Some(Will::new(MqttString::from("w/d"), Bytes::from_static(b"x")));
        let (p, _) = Peer::connect_with(addr(&broker), c).await;
        hibernating(&broker, 1).await;
        p.disconnect().await;
        broker
            .publish("w/marker", "m", QoS::AtMostOnce, false)
            .unwrap();
        assert_eq!(&common::next(&mut wills).await.payload[..], b"m");
        broker.shutdown().await;
    }
}

/// A take-over (Clean Start 0) of a hibernating v5 connection whose will has
/// a delay does not publish the will (v5:MQTT-3.1.3-9).
// v5:MQTT-3.1.3-9 v5:MQTT-3.1.4-3
#[tokio::test]
async fn a_take_over_of_a_hibernating_connection_keeps_a_delayed_will() {
    let broker = broker_after(Duration::from_millis(20)).await;
    let mut wills = broker.subscribe("w/#").unwrap();
    let connect = || {
        let mut c = Connect::new(ProtocolVersion::V5, MqttString::from("dw"));
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(60);
        let mut will = Will::new(MqttString::from("w/dw"), Bytes::from_static(b"x"));
        will.properties.will_delay_interval = Some(1);
        c.will = Some(will);
        c
    };
    let (mut old, _) = Peer::connect_with(addr(&broker), connect()).await;
    hibernating(&broker, 1).await;
    let (_new, ack) = Peer::connect_with(addr(&broker), connect()).await;
    assert!(ack.session_present);
    old.expect_disconnect(DisconnectReasonCode::SessionTakenOver)
        .await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    broker
        .publish("w/marker", "m", QoS::AtMostOnce, false)
        .unwrap();
    assert_eq!(&common::next(&mut wills).await.payload[..], b"m");
    broker.shutdown().await;
}

/// Many connections that hibernate and then go (socket closed, DISCONNECT,
/// take-over) leave no descriptor, connection or session behind.
// v3:MQTT-3.1.4-2 v5:MQTT-3.1.4-3 (and resources, no spec statement)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_hibernate_leave_cycles_leak_nothing() {
    let broker = broker_after(Duration::from_millis(5)).await;
    // Warm up (the runtime's and the broker's own descriptors).
    {
        let p = Peer::connect(addr(&broker), ProtocolVersion::V5, "warm").await;
        p.disconnect().await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = fds();
    for i in 0..150u32 {
        let version = versions()[(i % 2) as usize];
        let id = format!("c{}", i % 7);
        let mut c = Connect::new(version, MqttString::from(id.clone()));
        c.will = Some(Will::new(MqttString::from("w/x"), Bytes::from_static(b"x")));
        let (mut p, _) = Peer::connect_with(addr(&broker), c).await;
        tokio::time::sleep(Duration::from_millis(15)).await;
        match i % 3 {
            0 => drop(p),
            1 => p.disconnect().await,
            _ => {
                let mut q = Peer::connect(addr(&broker), version, &id).await;
                if version == ProtocolVersion::V5 {
                    p.expect_disconnect(DisconnectReasonCode::SessionTakenOver)
                        .await;
                }
                p.expect_closed().await;
                tokio::time::sleep(Duration::from_millis(15)).await;
                q.send(Packet::Disconnect(Default::default())).await;
                q.expect_closed().await;
            }
        }
    }
    common::wait_until("connections closed", || broker.stats().connections == 0).await;
    common::wait_until("sessions gone", || broker.stats().sessions == 0).await;
    // Lingering closes end within 2 s.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = fds();
    assert!(
        after <= before + 4,
        "descriptors: {before} before, {after} after"
    );
    assert_eq!(broker.stats().connections_hibernating, 0);
    broker.shutdown().await;
}

/// A persistent QoS 1 subscriber taken over again and again while messages
/// flow loses none of them.
// MQTT-4.1.0-1 v3:MQTT-3.1.2-5 v5:MQTT-3.1.2-5 v3:MQTT-3.1.4-2 v5:MQTT-3.1.4-3
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_overs_under_load_lose_no_qos1_message() {
    const N: u32 = 600;
    let broker = broker_after(Duration::from_millis(5)).await;
    let connect = || {
        let mut c = Connect::new(ProtocolVersion::V5, MqttString::from("roam"));
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(600);
        c
    };
    let (mut p, _) = Peer::connect_with(addr(&broker), connect()).await;
    p.sub(1, "load", QoS::AtLeastOnce).await;
    let publisher = {
        let broker = broker.clone();
        tokio::spawn(async move {
            for i in 0..N {
                broker
                    .publish(
                        "load",
                        Bytes::from(i.to_be_bytes().to_vec()),
                        QoS::AtLeastOnce,
                        false,
                    )
                    .unwrap();
                if i % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            }
        })
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut rounds = 0;
    loop {
        // Read (and acknowledge) a few, then a take-over.
        let read = async {
            loop {
                match p.recv().await {
                    Packet::Publish(m) => {
                        let n = u32::from_be_bytes(m.payload[..4].try_into().unwrap());
                        seen.insert(n);
                        if rounds % 2 == 0 || n % 3 != 0 {
                            p.send(PubAck::new(m.packet_id.unwrap())).await;
                        }
                        if seen.len() as u32 == N {
                            return;
                        }
                    }
                    Packet::Disconnect(_) => return,
                    other => panic!("{other:?}"),
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(40 + 10 * (rounds % 4)), read).await;
        if seen.len() as u32 == N {
            break;
        }
        rounds += 1;
        assert!(
            rounds < 400,
            "missing {:?}...",
            (0..N)
                .filter(|n| !seen.contains(n))
                .take(10)
                .collect::<Vec<_>>()
        );
        let (q, ack) = Peer::connect_with(addr(&broker), connect()).await;
        assert!(ack.session_present);
        drop(std::mem::replace(&mut p, q));
    }
    publisher.await.unwrap();
    assert_eq!(broker.stats().dropped_messages, 0);
    broker.shutdown().await;
}

/// The broker's shutdown returns only once every connection is closed, also
/// while connections go to sleep and wake up all the time.
// (shutdown, no spec statement)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_connections_that_are_falling_asleep() {
    for round in 0..300u64 {
        let broker = broker_after(Duration::from_millis(1)).await;
        let a = addr(&broker);
        let mut pingers = Vec::new();
        for i in 0..2 {
            let mut p = Peer::connect(a, ProtocolVersion::V311, &format!("p{i}")).await;
            pingers.push(tokio::spawn(async move {
                loop {
                    if p.stream.writable().await.is_err() {
                        return;
                    }
                    use tokio::io::AsyncWriteExt;
                    if p.stream.write_all(&[0xC0, 0x00]).await.is_err() {
                        return;
                    }
                    let mut b = [0u8; 2];
                    use tokio::io::AsyncReadExt;
                    match tokio::time::timeout(Duration::from_secs(5), p.stream.read(&mut b)).await
                    {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => return,
                    }
                    tokio::time::sleep(Duration::from_micros(2500 + 137 * (i as u64 % 7))).await;
                }
            }));
        }
        tokio::time::sleep(Duration::from_micros(20_000 + (round * 7919) % 9000)).await;
        tokio::time::timeout(GUARD, broker.shutdown())
            .await
            .expect("shutdown hung");
        let stats = broker.stats();
        assert_eq!(
            (
                stats.connections,
                stats.connections_hibernating,
                stats.clients_connected
            ),
            (0, 0, 0),
            "round {round}: connections left after shutdown"
        );
        for p in pingers {
            p.abort();
        }
    }
}

/// Take-overs that race the old connection's hibernation: the old
/// connection is always closed, the new one always gets the session.
// v3:MQTT-3.1.4-2 v5:MQTT-3.1.4-3
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_overs_racing_hibernation_always_close_the_old_connection() {
    let broker = broker_after(Duration::from_millis(10)).await;
    for i in 0..150u64 {
        let version = versions()[(i % 2) as usize];
        let mut old = Peer::connect(addr(&broker), version, "racer").await;
        // Around the time it goes to sleep (10 ms idle, then 20 ms, ...).
        tokio::time::sleep(Duration::from_micros(5000 + (i * 997) % 30000)).await;
        let started = std::time::Instant::now();
        let new = Peer::connect(addr(&broker), version, "racer").await;
        let took = started.elapsed();
        if version == ProtocolVersion::V5 {
            old.expect_disconnect(DisconnectReasonCode::SessionTakenOver)
                .await;
        }
        old.expect_closed().await;
        assert!(
            took < Duration::from_millis(2900),
            "round {i}: the take-over waited {took:?} (hand-over timeout)"
        );
        new.disconnect().await;
    }
    broker.shutdown().await;
}

/// A PINGREQ that reached a hibernating connection before its keep-alive
/// deadline keeps it alive, also when the woken task first runs after the
/// deadline (a busy runtime). Deterministic: the runtime is blocked across
/// the deadline while the PINGREQ arrives, and turns its driver once before
/// it polls the woken task (event_interval 1, other tasks queued first).
// v3:MQTT-3.1.2-24 v5:MQTT-3.1.2-22
#[test]
fn a_pingreq_that_arrived_before_the_deadline_keeps_a_woken_connection_alive() {
    pingreq_before_the_deadline(Some(Duration::from_millis(20)));
}

/// The same without hibernation: the awake connection reads the
/// PINGREQ that waited before it counts the deadline.
// v3:MQTT-3.1.2-24 v5:MQTT-3.1.2-22
#[test]
fn a_pingreq_that_arrived_before_the_deadline_keeps_an_awake_connection_alive() {
    pingreq_before_the_deadline(None);
}

fn pingreq_before_the_deadline(hibernate_after: Option<Duration>) {
    use std::io::{Read, Write};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .event_interval(1)
        .global_queue_interval(250)
        .build()
        .unwrap();
    runtime.block_on(async {
        let broker = start_with(Broker::builder().hibernate_after(hibernate_after)).await;
        let mut client = std::net::TcpStream::connect(addr(&broker)).unwrap();
        client.set_nodelay(true).unwrap();
        // CONNECT 3.1.1, clean session, keep alive 1 s (deadline 1.5 s), id "k".
        let t0 = std::time::Instant::now();
        client
            .write_all(&[
                0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 1, 0, 1, b'k',
            ])
            .unwrap();
        let connack = tokio::task::spawn_blocking({
            let mut c = client.try_clone().unwrap();
            move || {
                let mut b = [0u8; 4];
                c.read_exact(&mut b).unwrap();
                b
            }
        })
        .await
        .unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0]);
        if hibernate_after.is_some() {
            hibernating(&broker, 1).await;
        }
        // 1.2 s after CONNECT: a PINGREQ, 300 ms before the deadline.
        tokio::time::sleep_until((t0 + Duration::from_millis(1200)).into()).await;
        client.write_all(&[0xC0, 0x00]).unwrap();
        // Other work queued on the runtime, which is then busy past the deadline.
        for _ in 0..4 {
            tokio::spawn(async {});
        }
        std::thread::sleep(Duration::from_millis(600));
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let got = tokio::task::spawn_blocking(move || {
            let mut b = [0u8; 2];
            let n = client.read(&mut b).unwrap_or(0);
            (n, b)
        })
        .await
        .unwrap();
        assert_eq!(
            got,
            (2, [0xD0, 0x00]),
            "the PINGREQ sent 300 ms before the keep-alive deadline was not answered"
        );
        broker.shutdown().await;
    });
}

/// Same root cause, worse outcome: a client that sends DISCONNECT 300 ms
/// before its keep-alive deadline, to a hibernating connection, gets its will
/// published (MQTT-3.1.2-10 / v3:MQTT-3.14.4-3: a DISCONNECT discards it).
// MQTT-3.14.4-3 MQTT-3.1.2-10 v3:MQTT-3.1.2-24 v5:MQTT-3.1.2-22
#[test]
fn a_disconnect_that_arrived_before_the_deadline_discards_the_will() {
    use std::io::Write;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .event_interval(1)
        .global_queue_interval(250)
        .build()
        .unwrap();
    runtime.block_on(async {
        let broker = broker_after(Duration::from_millis(20)).await;
        let mut wills = broker.subscribe("w").unwrap();
        let mut client = std::net::TcpStream::connect(addr(&broker)).unwrap();
        client.set_nodelay(true).unwrap();
        // CONNECT 3.1.1, clean session + will "w"/"x", keep alive 1 s, id "k".
        let t0 = std::time::Instant::now();
        client
            .write_all(&[
                0x10, 19, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x06, 0, 1, 0, 1, b'k', 0, 1, b'w', 0,
                1, b'x',
            ])
            .unwrap();
        hibernating(&broker, 1).await;
        tokio::time::sleep_until((t0 + Duration::from_millis(1200)).into()).await;
        client.write_all(&[0xE0, 0x00]).unwrap();
        for _ in 0..4 {
            tokio::spawn(async {});
        }
        std::thread::sleep(Duration::from_millis(600));
        common::wait_until("connection closed", || broker.stats().connections == 0).await;
        broker
            .publish("w", "marker", QoS::AtMostOnce, false)
            .unwrap();
        let got = common::next(&mut wills).await;
        assert_eq!(
            &got.payload[..],
            b"marker",
            "the will was published after a DISCONNECT"
        );
        broker.shutdown().await;
    });
}

/// A persistent session taken over (from a hibernating connection) while an
/// inbound QoS 2 message awaits its PUBREL: the resent PUBLISH is not routed
/// again, and the PUBREL is completed (MQTT-4.3.3, exactly once).
// v3:MQTT-4.3.3-2 v5:MQTT-4.3.3-8 v5:MQTT-4.3.3-11 v3:MQTT-3.1.4-2 v5:MQTT-3.1.4-3
#[tokio::test]
async fn a_take_over_keeps_an_inbound_qos2_awaiting_pubrel() {
    for version in versions() {
        let broker = broker_after(Duration::from_millis(20)).await;
        let mut sub = broker.subscribe("q2/#").unwrap();
        let connect = || {
            let mut c = Connect::new(version, MqttString::from("q2t"));
            c.clean_start = false;
            c.keep_alive = 0;
            if version == ProtocolVersion::V5 {
                c.properties.session_expiry_interval = Some(60);
            }
            c
        };
        let (mut old, _) = Peer::connect_with(addr(&broker), connect()).await;
        let mut m = publish("q2/a", "once", QoS::ExactlyOnce);
        m.packet_id = PacketId::new(5);
        old.send(m.clone()).await;
        assert!(matches!(old.recv().await, Packet::PubRec(_)));
        hibernating(&broker, 1).await;
        let (mut new, ack) = Peer::connect_with(addr(&broker), connect()).await;
        assert!(ack.session_present);
        m.dup = true;
        new.send(m).await;
        assert!(matches!(new.recv().await, Packet::PubRec(_)));
        new.send(PubRel::new(PacketId::new(5).unwrap())).await;
        assert!(matches!(new.recv().await, Packet::PubComp(_)));
        assert_eq!(&common::next(&mut sub).await.payload[..], b"once");
        broker
            .publish("q2/marker", "m", QoS::AtMostOnce, false)
            .unwrap();
        assert_eq!(
            &common::next(&mut sub).await.payload[..],
            b"m",
            "routed twice"
        );
        drop(old);
        broker.shutdown().await;
    }
}

/// Authorizes publishing on `slow` after `delay`; everything else at once.
struct SlowOn {
    delay: Duration,
}

#[async_trait::async_trait]
impl fulmar_broker::Authorizer for SlowOn {
    async fn authorize_publish(&self, _: &fulmar_broker::ClientInfo, topic: &str) -> bool {
        if topic == "slow" {
            tokio::time::sleep(self.delay).await;
        }
        true
    }
    async fn authorize_subscribe(&self, _: &fulmar_broker::ClientInfo, _: &str) -> bool {
        true
    }
}

/// A late take-over (the old connection's task busy past the 3 s hand-over
/// timeout) by a connection with Clean Start 1: the old session ends, so its
/// will, which had a delay, is due (v5 3.1.3.2.2: published when the delay
/// passes or the session ends, whichever first; MQTT-3.1.2-8). It was
/// dropped.
// MQTT-3.1.2-8 v5:MQTT-3.1.2-5
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_take_over_with_clean_start_still_publishes_the_delayed_will() {
    let broker = start_with(Broker::builder().authorizer(SlowOn {
        delay: Duration::from_millis(4500),
    }))
    .await;
    let mut wills = broker.subscribe("will/#").unwrap();
    let connect = |clean: bool| {
        let mut c = Connect::new(ProtocolVersion::V5, MqttString::from("dev"));
        c.keep_alive = 0;
        c.clean_start = clean;
        c.properties.session_expiry_interval = Some(3600);
        let mut will = Will::new(MqttString::from("will/dev"), Bytes::from_static(b"gone"));
        will.properties.will_delay_interval = Some(2);
        c.will = Some(will);
        c
    };
    let (mut old, _) = Peer::connect_with(addr(&broker), connect(false)).await;
    old.send(Packet::Publish(fulmar_codec::Publish::new(
        MqttString::from("slow"),
        Bytes::from_static(b"1"),
    )))
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A new session for the client: the old one ends with its will due.
    let mut c = connect(true);
    c.will = None;
    let (new, ack) = Peer::connect_with(addr(&broker), c).await;
    assert!(!ack.session_present);
    let published = tokio::time::timeout(Duration::from_secs(8), wills.recv()).await;
    assert!(
        matches!(&published, Ok(Some(m)) if &m.payload[..] == b"gone"),
        "the will of the ended session was never published: {published:?}"
    );
    drop((old, new));
    broker.shutdown().await;
}

/// Deliveries wake a hibernating subscriber again and again; its own silence
/// still ends it at 1.5 x its keep alive, and its will is published.
// v5:MQTT-3.1.2-22 MQTT-3.1.2-8
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_do_not_keep_a_silent_client_alive() {
    let broker = broker_after(Duration::from_millis(10)).await;
    let mut wills = broker.subscribe("w/#").unwrap();
    let mut c = Connect::new(ProtocolVersion::V5, MqttString::from("silent"));
    c.keep_alive = 1;
    c.will = Some(Will::new(
        MqttString::from("w/silent"),
        Bytes::from_static(b"x"),
    ));
    let (mut p, _) = Peer::connect_with(addr(&broker), c).await;
    p.sub(1, "tick", QoS::AtMostOnce).await;
    let ticker = {
        let broker = broker.clone();
        tokio::spawn(async move {
            for _ in 0..100 {
                let _ = broker.publish("tick", "t", QoS::AtMostOnce, false);
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        })
    };
    let got = common::next(&mut wills).await;
    assert_eq!(&got.payload[..], b"x");
    ticker.abort();
    drop(p);
    broker.shutdown().await;
}
