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
    let mut config = ClusterConfig::new(servers[0].url.clone(), id);
    config.urls = servers.iter().map(|s| s.url.clone()).collect();
    config.replicas = 3;
    let mut last = None;
    for _ in 0..60 {
        match Node::try_start(config.clone()).await {
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

    let c = node(&servers, "c").await;
    let late = c.client("nc-late").await;
    let mut kept = late.subscribe("nc/kept", QoS::AtLeastOnce).await.unwrap();
    let got = next(&mut kept).await;
    assert_eq!(
        (got.payload.as_ref(), got.retain),
        (&b"replicated"[..], true)
    );
    a.stop().await;
    b.stop().await;
    c.stop().await;
}
