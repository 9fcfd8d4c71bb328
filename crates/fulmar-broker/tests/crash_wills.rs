//! The wills of clients connected when the broker crashed, for sessions it
//! keeps in its store: kept in the session's record while the client is
//! connected, and published after the restart as the will rules say (the
//! Will Delay Interval counted from the restart, no later than the session's
//! end, not after a normal DISCONNECT, authorized again).
//!
//! A crash is simulated by dropping a current-thread runtime without
//! `BrokerHandle::shutdown`: no will is published on the way out, and what
//! was committed stays in the store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Peer, addr, run, run_then_crash, start_with, wait_until};
use fulmar_broker::{
    Authorizer, Broker, BrokerHandle, ClientInfo, MemoryStore, Store, StoredSession, WillDue,
};
use fulmar_codec::{
    Connect, MqttString, Packet, ProtocolVersion, ProtocolVersion::V5, ProtocolVersion::V311,
    PubAck, QoS, Will,
};

/// The session record of `id` in `store`.
fn record<S: Store + ?Sized>(store: &Arc<S>, id: &str) -> Option<StoredSession> {
    let snapshot = store.load().unwrap();
    snapshot.sessions.into_iter().find(|s| &*s.client_id == id)
}

/// Milliseconds since the Unix epoch, now.
fn unix_millis() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    u64::try_from(since.unwrap().as_millis()).unwrap()
}

async fn broker_on(store: Arc<dyn Store>) -> BrokerHandle {
    start_with(Broker::builder().store(store)).await
}

/// Client `id` connects with Clean Start / Clean Session 0 (5.0: Session
/// Expiry Interval `expiry`) and, with `will_delay`, a QoS 1 will "gone" on
/// `status/{id}` (5.0: with that Will Delay Interval). Returns the peer and
/// Session Present.
async fn connect(
    broker: &BrokerHandle,
    version: ProtocolVersion,
    id: &str,
    expiry: u32,
    will_delay: Option<u32>,
) -> (Peer, bool) {
    let mut c = Connect::new(version, MqttString::from(id.to_owned()));
    c.keep_alive = 0;
    c.clean_start = version == V311 && expiry == 0;
    if version == V5 {
        c.properties.session_expiry_interval = Some(expiry);
    }
    if let Some(delay) = will_delay {
        let mut will = Will::new(MqttString::from(format!("status/{id}")), "gone".into());
        will.qos = QoS::AtLeastOnce;
        if version == V5 {
            will.properties.will_delay_interval = Some(delay);
        }
        c.will = Some(will);
    }
    let (peer, ack) = Peer::connect_with(addr(broker), c).await;
    assert!(!ack.reason_code.is_error(), "{ack:?}");
    (peer, ack.session_present)
}

/// A kept session `watcher` subscribed to `status/#` (QoS 1), away: the
/// wills are queued for it until it comes back.
async fn watcher_away(broker: &BrokerHandle) {
    let (mut watcher, _) = connect(broker, V5, "watcher", 3600, None).await;
    watcher.sub(1, "status/#", QoS::AtLeastOnce).await;
    watcher.disconnect().await;
}

/// The watcher back: its session was recovered.
async fn watcher_back(broker: &BrokerHandle) -> Peer {
    let (watcher, present) = connect(broker, V5, "watcher", 3600, None).await;
    assert!(present, "the watcher's session was recovered");
    watcher
}

/// The topic and payload of the next message `watcher` receives (acknowledged).
async fn next_message(watcher: &mut Peer) -> (String, String) {
    let p = watcher.recv_publish().await;
    watcher
        .send(Packet::PubAck(PubAck::new(p.packet_id.unwrap())))
        .await;
    (
        p.topic.to_string(),
        String::from_utf8(p.payload.to_vec()).unwrap(),
    )
}

/// Publishes a marker on `status/marker` and checks that it is the next
/// message the watcher receives: no will came before it.
async fn expect_marker_next(broker: &BrokerHandle, watcher: &mut Peer) {
    broker
        .publish("status/marker", "marker", QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(
        next_message(watcher).await,
        ("status/marker".to_owned(), "marker".to_owned())
    );
}

fn gone(id: &str) -> (String, String) {
    (format!("status/{id}"), "gone".to_owned())
}

// MQTT-3.1.2-8 (the will is published after the connection closes: a crash
// closes it), MQTT-3.1.2-10 (removed from the session state once published,
// or on DISCONNECT), MQTT-3.14.4-3 (a normal DISCONNECT discards it).
// Both versions: a client connected with a will when the broker crashed,
// its session kept, gets its will published after the restart; a client
// that disconnected normally before the crash does not. The will is in the
// session's record once the CONNACK is out (Durability::Immediate), and
// stays there when the record is written again (a SUBSCRIBE). A session
// that is not kept (Clean Session 1, Session Expiry Interval 0) has no
// record, and its will is not kept either (documented in the crate docs).
#[test]
fn mqtt_3_1_2_8_the_will_of_a_client_connected_at_a_crash_is_published_after_the_restart() {
    let dir = std::env::temp_dir().join(format!("fulmar-crash-wills-{}", std::process::id()));
    for (version, on_disk) in [(V311, false), (V5, false), (V311, true), (V5, true)] {
        // On disk, the records go through their encoding (version 3 for
        // the will of a connected client).
        let _ = std::fs::remove_dir_all(&dir);
        let store: Arc<dyn Store> = if on_disk {
            Arc::new(fulmar_broker::DiskStore::open(&dir).unwrap())
        } else {
            Arc::new(MemoryStore::new())
        };
        run_then_crash(async {
            let broker = broker_on(store.clone()).await;
            watcher_away(&broker).await;

            let (mut device, present) = connect(&broker, version, "device", 3600, Some(0)).await;
            assert!(!present);
            // Committed before the CONNACK: no waiting here.
            let stored = record(&store, "device").expect("the record before the CONNACK");
            assert_eq!(stored.disconnected_at, None);
            let will = stored
                .will
                .expect("the will in the record before the CONNACK");
            assert_eq!(
                (
                    will.publish.topic.as_str(),
                    &will.publish.payload[..],
                    will.publish.qos,
                    will.due,
                    will.protocol_version,
                    will.username,
                ),
                (
                    "status/device",
                    &b"gone"[..],
                    QoS::AtLeastOnce,
                    WillDue::AfterDisconnect(0),
                    version,
                    None
                )
            );
            device.sub(1, "cmd/device", QoS::AtLeastOnce).await;
            let stored = record(&store, "device").unwrap();
            assert_eq!(stored.subscriptions.len(), 1, "{version:?}");
            assert!(stored.will.is_some(), "{version:?}: kept by the SUBSCRIBE");

            let (leaver, _) = connect(&broker, version, "leaver", 3600, Some(0)).await;
            assert!(record(&store, "leaver").unwrap().will.is_some());
            leaver.disconnect().await;
            wait_until("the leaver's record without its will", || {
                record(&store, "leaver")
                    .is_some_and(|s| s.will.is_none() && s.disconnected_at.is_some())
            })
            .await;

            let (clean, _) = connect(&broker, version, "clean", 0, Some(0)).await;
            assert!(record(&store, "clean").is_none(), "a session not kept");
            drop((device, clean)); // connected at the crash
        });
        run(async {
            let broker = broker_on(store.clone()).await;
            let mut watcher = watcher_back(&broker).await;
            assert_eq!(next_message(&mut watcher).await, gone("device"));
            // Neither the leaver's will nor another copy of the device's.
            expect_marker_next(&broker, &mut watcher).await;
            assert!(broker.has_session("device"), "{version:?}");
            wait_until("the device's record without its will", || {
                record(&store, "device").is_some_and(|s| s.will.is_none())
            })
            .await;
            watcher.disconnect().await;
            broker.shutdown().await;
        });
        // A second restart does not publish it again.
        run(async {
            let broker = broker_on(store.clone()).await;
            let mut watcher = watcher_back(&broker).await;
            expect_marker_next(&broker, &mut watcher).await;
            watcher.disconnect().await;
            broker.shutdown().await;
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// v5:MQTT-3.1.2-8 (published when the Will Delay Interval has passed or the
// session ends, whichever comes first), v5:MQTT-3.1.2-23 (the session ends
// when its Session Expiry Interval has passed): the will of a client
// connected at a crash, with a Will Delay Interval longer than its
// session's expiry, goes when the session ends after the restart.
#[test]
fn v5_mqtt_3_1_2_8_a_will_delayed_beyond_the_session_goes_when_the_session_ends() {
    let store = Arc::new(MemoryStore::new());
    run_then_crash(async {
        let broker = broker_on(store.clone()).await;
        watcher_away(&broker).await;
        let (device, _) = connect(&broker, V5, "device", 1, Some(3600)).await;
        let will = record(&store, "device").unwrap().will.unwrap();
        assert_eq!(will.due, WillDue::AfterDisconnect(3600));
        drop(device); // connected at the crash
    });
    run(async {
        let broker = broker_on(store.clone()).await;
        let mut watcher = watcher_back(&broker).await;
        // An hour's delay: only the end of the session, a second after
        // the restart, brings it.
        assert_eq!(next_message(&mut watcher).await, gone("device"));
        wait_until("the device's session ends", || {
            !broker.has_session("device")
        })
        .await;
        expect_marker_next(&broker, &mut watcher).await;
        watcher.disconnect().await;
        broker.shutdown().await;
    });
    assert!(record(&store, "device").is_none());
}

// v5:MQTT-3.1.3-9 (a new connection within the Will Delay Interval: the will
// is not sent), v5:MQTT-3.1.2-8: the delay of the will of a client connected
// at a crash counts from the restart (the restart's record says so, and a
// later restart counts on from it): the will is not published at once, and
// the client coming back within the delay cancels it; a shutdown then has
// none to publish or to keep.
#[test]
fn v5_mqtt_3_1_3_9_the_delay_of_a_will_kept_at_a_crash_counts_from_the_restart() {
    let store = Arc::new(MemoryStore::new());
    run_then_crash(async {
        let broker = broker_on(store.clone()).await;
        watcher_away(&broker).await;
        let (device, _) = connect(&broker, V5, "device", 3600, Some(3600)).await;
        drop(device); // connected at the crash
    });
    let restarted = unix_millis();
    run(async {
        let broker = broker_on(store.clone()).await;
        wait_until("the record counts from the restart", || {
            record(&store, "device").is_some_and(|s| s.disconnected_at.is_some())
        })
        .await;
        let stored = record(&store, "device").unwrap();
        assert!(stored.disconnected_at.unwrap() >= restarted);
        let Some(WillDue::At(due)) = stored.will.as_ref().map(|w| w.due) else {
            panic!("the will, due at a time now: {stored:?}");
        };
        assert!(
            due >= restarted + 3_600_000,
            "due {due}, restart {restarted}"
        );

        let mut watcher = watcher_back(&broker).await;
        expect_marker_next(&broker, &mut watcher).await;
        let (device, present) = connect(&broker, V5, "device", 3600, None).await;
        assert!(present);
        watcher.disconnect().await;
        broker.shutdown().await;
        drop(device);
    });
    let left = store.load().unwrap();
    assert!(
        left.messages
            .iter()
            .all(|(client, ..)| &**client != "watcher"),
        "a will was published: {:?}",
        left.messages
    );
    assert!(record(&store, "device").unwrap().will.is_none());
}

/// Allows everything but publishing to `status/device` while `deny` is set.
struct DenyDeviceStatus {
    deny: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl Authorizer for DenyDeviceStatus {
    async fn authorize_publish(&self, _client: &ClientInfo, topic: &str) -> bool {
        topic != "status/device" || !self.deny.load(Ordering::SeqCst)
    }

    async fn authorize_subscribe(&self, _client: &ClientInfo, _filter: &str) -> bool {
        true
    }
}

async fn broker_with_rules(store: &Arc<MemoryStore>, deny: &Arc<AtomicBool>) -> BrokerHandle {
    let rules = DenyDeviceStatus { deny: deny.clone() };
    start_with(Broker::builder().store(store.clone()).authorizer(rules)).await
}

// MQTT-3.1.2-8: a will kept at a crash is authorized again when the broker
// starts, as the will of a connected client is on reauthorize: the rules
// after the restart deny its topic, so it is dropped, from the record too.
#[test]
fn mqtt_3_1_2_8_a_will_kept_at_a_crash_is_authorized_again_at_start() {
    let store = Arc::new(MemoryStore::new());
    let deny = Arc::new(AtomicBool::new(false));
    run_then_crash(async {
        let broker = broker_with_rules(&store, &deny).await;
        watcher_away(&broker).await;
        let (device, _) = connect(&broker, V311, "device", 3600, Some(0)).await;
        assert!(record(&store, "device").unwrap().will.is_some());
        drop(device); // connected at the crash
    });
    deny.store(true, Ordering::SeqCst);
    run(async {
        let broker = broker_with_rules(&store, &deny).await;
        let mut watcher = watcher_back(&broker).await;
        expect_marker_next(&broker, &mut watcher).await;
        assert!(broker.has_session("device"));
        wait_until("the device's record without its will", || {
            record(&store, "device").is_some_and(|s| s.will.is_none())
        })
        .await;
        watcher.disconnect().await;
        broker.shutdown().await;
    });
}

// MQTT-3.1.2-8: a will withdrawn while its client is connected (the rules
// changed: BrokerHandle::reauthorize) leaves the session's record too, so a
// crash afterwards does not bring it back.
#[test]
fn mqtt_3_1_2_8_a_will_withdrawn_by_reauthorize_is_not_published_after_a_crash() {
    let store = Arc::new(MemoryStore::new());
    let deny = Arc::new(AtomicBool::new(false));
    run_then_crash(async {
        let broker = broker_with_rules(&store, &deny).await;
        watcher_away(&broker).await;
        let (device, _) = connect(&broker, V5, "device", 3600, Some(0)).await;
        assert!(record(&store, "device").unwrap().will.is_some());
        deny.store(true, Ordering::SeqCst);
        broker.reauthorize().await;
        wait_until("the device's record without its will", || {
            record(&store, "device").is_some_and(|s| s.will.is_none())
        })
        .await;
        drop(device); // connected at the crash
    });
    deny.store(false, Ordering::SeqCst);
    run(async {
        let broker = broker_with_rules(&store, &deny).await;
        let mut watcher = watcher_back(&broker).await;
        expect_marker_next(&broker, &mut watcher).await;
        watcher.disconnect().await;
        broker.shutdown().await;
    });
}

/// A bridge that publishes the wills of its broker's clients when the
/// broker goes away (as `fulmar-cluster` does): it records what it is told.
#[derive(Default)]
struct WillKeeper {
    set: std::sync::Mutex<Vec<String>>,
}

impl fulmar_broker::Bridge for WillKeeper {
    fn will_set(&self, client_id: &str, _will: &fulmar_codec::Publish, _delay: u32) {
        self.set.lock().unwrap().push(client_id.to_owned());
    }

    fn keeps_wills(&self) -> bool {
        true
    }
}

// MQTT-3.1.2-8, published once: with a bridge that keeps the wills of the
// broker's clients (and publishes them when the broker dies), the store
// keeps none, so that a restart does not publish a will the bridge
// publishes too.
#[test]
fn mqtt_3_1_2_8_with_a_bridge_that_keeps_wills_the_store_keeps_none() {
    let store = Arc::new(MemoryStore::new());
    let keeper = Arc::new(WillKeeper::default());
    let broker_with_keeper = || async {
        let builder = Broker::builder()
            .store(store.clone())
            .bridge(keeper.clone());
        start_with(builder).await
    };
    run_then_crash(async {
        let broker = broker_with_keeper().await;
        watcher_away(&broker).await;
        let (device, _) = connect(&broker, V5, "device", 3600, Some(0)).await;
        let stored = record(&store, "device").expect("the session's record");
        assert!(stored.will.is_none(), "{stored:?}");
        assert_eq!(*keeper.set.lock().unwrap(), ["device"]);
        drop(device); // connected at the crash
    });
    run(async {
        let broker = broker_with_keeper().await;
        let mut watcher = watcher_back(&broker).await;
        expect_marker_next(&broker, &mut watcher).await;
        watcher.disconnect().await;
        broker.shutdown().await;
    });
}

// v3:MQTT-3.1.2-8 (3.1.1 has no Will Delay Interval: the will was due when
// the connection closed, at the crash): a client that connects again as
// soon as the broker is back does not cancel its will; it is published
// before any client is served. (A guard: on this current-thread runtime the
// deadline task would usually get there first anyway.)
#[test]
fn v3_mqtt_3_1_2_8_a_client_back_at_once_after_a_crash_does_not_cancel_its_will() {
    let store = Arc::new(MemoryStore::new());
    run_then_crash(async {
        let broker = broker_on(store.clone()).await;
        watcher_away(&broker).await;
        let (device, _) = connect(&broker, V311, "device", 3600, Some(0)).await;
        drop(device); // connected at the crash
    });
    run(async {
        let broker = broker_on(store.clone()).await;
        let (device, present) = connect(&broker, V311, "device", 3600, None).await;
        assert!(present);
        let mut watcher = watcher_back(&broker).await;
        assert_eq!(next_message(&mut watcher).await, gone("device"));
        expect_marker_next(&broker, &mut watcher).await;
        watcher.disconnect().await;
        broker.shutdown().await;
        drop(device);
    });
}
