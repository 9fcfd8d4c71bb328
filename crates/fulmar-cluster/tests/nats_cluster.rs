//! fulmar nodes on a three-server NATS cluster (routes on loopback) with
//! JetStream streams and buckets replicated three times: one NATS server is
//! killed and the fulmar cluster carries on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use common::{Node, messages_cross_again, nats_installed, next, spawn_server};
use fulmar_client::QoS;
use fulmar_cluster::ClusterConfig;

/// One server of the NATS cluster; killed and its store removed on drop.
struct Server {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The tests of this file one at a time: each runs three NATS servers and
/// kills one, and two such clusters electing leaders at once on a loaded
/// two-core machine made a late node miss the retained message for over
/// 20 s (seen once in CI).
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Three `nats-server -js` joined by routes, or `None` (with a line saying
/// so) when nats-server is not installed.
fn three_servers(test: &str) -> Option<Vec<Server>> {
    if !nats_installed(test) {
        return None;
    }
    let clients: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut servers = Vec::new();
    for i in 0..3 {
        let dir = std::env::temp_dir().join(format!(
            "fulmar-nats-cluster-{}-{test}-{i}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let others: Vec<String> = (0..3)
            .filter(|j| *j != i)
            .map(|j| format!("nats://127.0.0.1:{}", routes[j]))
            .collect();
        let name = format!("fulmar-test-{i}");
        let route = format!("nats://127.0.0.1:{}", routes[i]);
        let others = others.join(",");
        let extra = [
            "--server_name",
            name.as_str(),
            "--cluster_name",
            "fulmar-test",
            "--cluster",
            route.as_str(),
            "--routes",
            others.as_str(),
        ];
        let child = spawn_server(clients[i], &extra, &dir)
            .unwrap_or_else(|| panic!("nats-server {i} did not start on {}", clients[i]));
        servers.push(Server {
            child,
            dir,
            url: format!("nats://127.0.0.1:{}", clients[i]),
        });
    }
    Some(servers)
}

/// A node on every server of the list, streams and buckets replicated three
/// times. JetStream elects its leaders a few seconds after the servers
/// start: connecting is retried until it answers.
async fn node(servers: &[Server], id: &str) -> Node {
    start_node(servers, id, false).await
}

/// As [`node`], with `store`: persistent sessions in JetStream
/// ([`fulmar_cluster::Cluster::session_store`]), replicated three times too.
async fn start_node(servers: &[Server], id: &str, store: bool) -> Node {
    let mut config = ClusterConfig::new(servers[0].url.clone(), id);
    config.urls = servers.iter().map(|s| s.url.clone()).collect();
    config.replicas = 3;
    let mut last = None;
    // Up to a minute: on a loaded machine (two cores, the other tests
    // running) the first elections of three servers take tens of seconds.
    for _ in 0..120 {
        match Node::build(config.clone(), store).await {
            Ok(node) => return node,
            Err(error) => last = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("node {id} did not join the NATS cluster: {last:?}");
}

/// With replicas 3, killing one of the three NATS servers loses nothing:
/// messages cross nodes again once the nodes that were on it have moved to
/// another server, in order and once each, and the retained message
/// (replicated) reaches a node started after the kill.
// MQTT-3.3.1-5 MQTT-3.3.1-6
#[tokio::test]
async fn one_nats_server_of_three_dies() {
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let Some(mut servers) = three_servers("one_of_three") else {
        return;
    };
    let a = node(&servers, "a").await;
    let b = node(&servers, "b").await;
    let receiver = b.client("nc-sub").await;
    let mut sub = receiver.subscribe("nc/#", QoS::AtLeastOnce).await.unwrap();
    b.wait_subscription("fulmar.msg.t.nc.>", true).await;
    let publisher = a.client("nc-pub").await;
    publisher
        .publish("nc/kept", "replicated")
        .qos(QoS::AtLeastOnce)
        .retain(true)
        .await
        .unwrap();
    assert_eq!(next(&mut sub).await.payload.as_ref(), b"replicated");

    // SIGKILL the first server, the one every node was told about first.
    drop(servers.remove(0));

    messages_cross_again(&publisher, "nc/live", &mut sub).await;

    // The retained stream acknowledged it (A stores it again while
    // JetStream elects leaders or refuses it).
    common::wait_for("A's retained message in the stream", || {
        a.cluster.stats().retained_stored == 1
    })
    .await;
    let c = node(&servers, "c").await;
    let late = c.client("nc-late").await;
    let mut kept = late.subscribe("nc/kept", QoS::AtLeastOnce).await.unwrap();
    let Ok(Some(got)) = tokio::time::timeout(Duration::from_secs(20), kept.recv()).await else {
        let js = async_nats::jetstream::new(c.cluster.nats().clone());
        let stream = match js.get_stream("fulmar_retained").await {
            Ok(mut stream) => format!("{:?}", stream.info().await.map(|i| i.state.clone())),
            Err(e) => e.to_string(),
        };
        panic!(
            "no retained message at the late node within 20 s\na: {:?}\nc: {:?}\nstream: {stream}",
            a.cluster.stats(),
            c.cluster.stats()
        );
    };
    assert_eq!(
        (got.payload.as_ref(), got.retain),
        (&b"replicated"[..], true)
    );
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

/// Sessions kept in JetStream with replicas 3 outlive both a NATS server and
/// their fulmar node: a persistent session on A with QoS 1 messages queued
/// while its client is away; one NATS server is killed, then A dies; the
/// client connects to B and gets its session back (Session Present) with
/// every queued message, in order.
// v5:MQTT-3.2.2-3 (Session Present 1), v3:MQTT-3.1.2-5 (QoS 1 messages kept
// for a disconnected session), MQTT-4.6.0-6 (order kept per topic).
#[tokio::test]
async fn sessions_outlive_a_nats_server_and_their_node() {
    use futures::StreamExt;
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let Some(mut servers) = three_servers("sessions_r3") else {
        return;
    };
    let a = start_node(&servers, "a", true).await;
    let b = start_node(&servers, "b", true).await;
    let options = |port| {
        fulmar_client::ConnectOptions::new("127.0.0.1", port)
            .client_id("r3-away")
            .clean_start(false)
            .session_expiry_interval(3600)
    };
    let (client, _) = fulmar_client::Client::connect(options(a.port()))
        .await
        .unwrap();
    let subscription = client.subscribe("r3/#", QoS::AtLeastOnce).await.unwrap();
    client.disconnect().await.unwrap();
    drop(subscription);
    let publisher = a.client("r3-pub").await;
    const N: usize = 50;
    for i in 0..N {
        publisher
            .publish(format!("r3/{}", i % 3), format!("{i}"))
            .qos(QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    // The queued copies are committed before the publisher's PUBACK; the
    // records follow within 100 ms. Then a NATS server goes, then A.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(servers.remove(0));
    publisher.disconnect().await.unwrap();
    a.cluster.abort();

    // B takes the session over once A does not answer. While JetStream
    // elects new leaders after the server loss, A's state may not be
    // readable: B refuses the CONNECT then (Server unavailable) rather than
    // resume the session without its messages, and the client comes back.
    let mut refused = 0;
    let client = loop {
        match fulmar_client::Client::connect(
            options(b.port()).reconnect(fulmar_client::Reconnect::disabled()),
        )
        .await
        {
            Ok((client, ack)) => {
                assert!(
                    ack.session_present,
                    "the session came back on B: {:?}",
                    b.cluster.stats()
                );
                break client;
            }
            Err(error) => {
                refused += 1;
                assert!(refused < 120, "B never took the session: {error:?}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let mut messages = client.messages().await.unwrap();
    let mut last = [None::<usize>; 3];
    let mut got = std::collections::BTreeSet::new();
    while got.len() < N {
        let m = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "a queued message: got {} of {N}: {got:?}; {:?}",
                    got.len(),
                    b.cluster.stats()
                )
            })
            .expect("stream");
        let i: usize = std::str::from_utf8(&m.payload).unwrap().parse().unwrap();
        let topic = i % 3;
        assert_eq!(m.topic.as_str(), format!("r3/{topic}"));
        if let Some(before) = last[topic] {
            assert!(i > before || m.dup, "{i} after {before} on r3/{topic}");
        }
        last[topic] = Some(i);
        got.insert(i);
    }
    assert_eq!(got.len(), N);
    // Rebuilt by B from A's records, not handed over by A: restored for the
    // CONNECT, or adopted beforehand by B's scan for gone nodes (when the
    // first CONNECTs were refused for an unreadable state; seen once in CI).
    let stats = b.cluster.stats();
    assert_eq!(
        stats.sessions_restored_whole + stats.sessions_adopted,
        1,
        "{stats:?}"
    );
    assert_eq!(stats.sessions_imported, 0, "{stats:?}");
    eprintln!(
        "connected after {refused} refused attempts ({} refused for an unreadable state)",
        stats.sessions_unavailable
    );
    client.disconnect().await.unwrap();
    b.stop().await;
    a.stop().await;
}
