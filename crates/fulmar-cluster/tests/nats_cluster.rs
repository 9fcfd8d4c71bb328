//! fulmar nodes on a three-server NATS cluster (routes on loopback) with
//! JetStream streams and buckets replicated three times: one NATS server is
//! killed and the fulmar cluster carries on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Node, next};
use fulmar_broker::Broker;
use fulmar_client::QoS;
use fulmar_cluster::{Cluster, ClusterConfig};

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
    if Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        println!("SKIP {test}: nats-server is not installed (apt-get install nats-server)");
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
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &clients[i].to_string()])
            .args(["--server_name", &format!("fulmar-test-{i}")])
            .args(["--cluster_name", "fulmar-test"])
            .args(["--cluster", &format!("nats://127.0.0.1:{}", routes[i])])
            .args(["--routes", &others.join(",")])
            .arg("-sd")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        servers.push(Server {
            child,
            dir,
            url: format!("nats://127.0.0.1:{}", clients[i]),
        });
    }
    for (server, port) in servers.iter_mut().zip(&clients) {
        let addr: SocketAddr = ([127, 0, 0, 1], *port).into();
        let mut up = false;
        for _ in 0..400 {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                up = true;
                break;
            }
            assert!(
                server.child.try_wait().unwrap().is_none(),
                "nats-server on {port} exited"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        assert!(up, "nats-server did not start on {port}");
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
        match Cluster::connect(config.clone()).await {
            Ok(cluster) => {
                let broker = Broker::builder()
                    .tcp_listener("127.0.0.1:0")
                    .bridge(cluster.bridge())
                    .start()
                    .await
                    .unwrap();
                match cluster.attach(&broker).await {
                    Ok(()) => return Node { broker, cluster },
                    Err(error) => {
                        last = Some(error.to_string());
                        broker.shutdown().await;
                        cluster.shutdown().await;
                    }
                }
            }
            Err(error) => last = Some(error.to_string()),
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

    let mut n = 0u32;
    let first = loop {
        n += 1;
        publisher
            .publish("nc/live", n.to_string())
            .qos(QoS::AtLeastOnce)
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
            Ok(Some(message)) => break message,
            Ok(None) => panic!("subscription ended"),
            Err(_) => assert!(n < 150, "no message crossed within 30 s of the kill"),
        }
    };
    let mut last: u32 = std::str::from_utf8(&first.payload)
        .unwrap()
        .parse()
        .unwrap();
    for i in n + 1..n + 20 {
        publisher
            .publish("nc/live", i.to_string())
            .qos(QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    while last < n + 19 {
        let got = next(&mut sub).await;
        let value: u32 = std::str::from_utf8(&got.payload).unwrap().parse().unwrap();
        assert!(value > last, "{value} after {last}");
        last = value;
    }

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
