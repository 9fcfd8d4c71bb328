//! A NATS server with JetStream per test, and cluster nodes on it.

#![allow(dead_code, unreachable_pub)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fulmar_broker::{Broker, BrokerHandle};
use fulmar_client::{Client, ConnectOptions, Message, Subscription};
use fulmar_cluster::{Cluster, ClusterConfig};

/// A nats-server with JetStream for test `$name`, or the test returns
/// (passes) when nats-server is not installed.
#[allow(unused_macros)]
macro_rules! nats_or_skip {
    ($name:literal) => {
        match common::Nats::start($name) {
            Some(nats) => nats,
            None => return,
        }
    };
}

/// `nats-server -js` on a free loopback port with its own store directory;
/// killed and its directory removed on drop.
pub struct Nats {
    child: Child,
    dir: PathBuf,
    pub url: String,
    /// The HTTP monitoring port.
    monitor: u16,
    /// Extra arguments (a configuration file), again on a restart.
    extra: Vec<String>,
}

impl Nats {
    /// Starts a server, or prints why not and returns `None` when
    /// `nats-server` is not installed (scripts/test.sh installs it).
    pub fn start(test: &str) -> Option<Self> {
        Self::start_configured(test, None)
    }

    /// As [`start`](Self::start), with `config` as the server's
    /// configuration file (`-c`): users and permissions, say.
    pub fn start_with_config(test: &str, config: &str) -> Option<Self> {
        Self::start_configured(test, Some(config))
    }

    fn start_configured(test: &str, config: Option<&str>) -> Option<Self> {
        if !nats_installed(test) {
            return None;
        }
        for _ in 0..5 {
            let free = || {
                TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            };
            let (port, monitor) = (free(), free());
            let dir = std::env::temp_dir().join(format!(
                "fulmar-cluster-{}-{test}-{port}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let mut extra = Vec::new();
            if let Some(config) = config {
                let path = dir.join("nats.conf");
                std::fs::write(&path, config).unwrap();
                extra = vec!["-c".to_owned(), path.to_str().unwrap().to_owned()];
            }
            let mut args = vec!["-m".to_owned(), monitor.to_string()];
            args.extend(extra.iter().cloned());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            // None: the port was taken meanwhile, try another.
            if let Some(child) = spawn_server(port, &args, &dir) {
                return Some(Self {
                    child,
                    dir,
                    url: format!("nats://127.0.0.1:{port}"),
                    monitor,
                    extra,
                });
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        panic!("nats-server did not start");
    }
}

impl Nats {
    /// Kills the server (SIGKILL) and starts it again on the same port and
    /// store directory; returns once it accepts connections.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port: u16 = self
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap();
        for _ in 0..50 {
            let mut args = vec!["-m".to_owned(), self.monitor.to_string()];
            args.extend(self.extra.iter().cloned());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            if let Some(child) = spawn_server(port, &args, &self.dir) {
                self.child = child;
                return;
            }
            // The port is not free yet: try again.
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("nats-server did not restart on port {port}");
    }

    /// Kills the server (SIGKILL), empties its store directory (every
    /// stream and bucket is gone, as when a server comes back on a new
    /// disk or with memory storage) and starts it again on the same port.
    pub fn restart_wiped(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for entry in std::fs::read_dir(&self.dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path).unwrap();
            }
        }
        self.restart();
    }

    /// Kills the server (SIGKILL), for good.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The server's own list of client subscriptions (`/connz?subs=1`, JSON).
    pub fn connz_subscriptions(&self) -> String {
        use std::io::{Read, Write};
        let mut stream = TcpStream::connect(("127.0.0.1", self.monitor)).unwrap();
        stream
            .write_all(b"GET /connz?subs=1 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `nats-server` can run; prints a SKIP line for `test` when not
/// (scripts/test.sh installs it).
pub fn nats_installed(test: &str) -> bool {
    let installed = Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !installed {
        println!("SKIP {test}: nats-server is not installed (apt-get install nats-server)");
    }
    installed
}

/// `nats-server -js` on loopback `port` with `extra` arguments and its
/// store in `dir`, once it accepts connections; `None` if it exited (the
/// port was not free) or did not come up.
///
/// Ready means that the server on `port` is this one: its INFO names it.
/// Tests pick free ports in parallel and one of them restarts its server on
/// the same port, so another test's server may answer on `port` while this
/// one failed to bind it.
pub fn spawn_server(port: u16, extra: &[&str], dir: &std::path::Path) -> Option<Child> {
    static SPAWNED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let given = extra
        .iter()
        .position(|a| *a == "--server_name")
        .and_then(|i| extra.get(i + 1));
    let name = match given {
        Some(name) => (*name).to_owned(),
        None => format!(
            "fulmar-test-{}-{}",
            std::process::id(),
            SPAWNED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ),
    };
    let mut command = Command::new("nats-server");
    command
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
        .args(extra);
    if given.is_none() {
        command.args(["--server_name", &name]);
    }
    let mut child = command
        .arg("-sd")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let ours = format!("\"server_name\":\"{name}\"");
    for _ in 0..400 {
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        if info_line(&addr).is_some_and(|info| info.contains(&ours)) {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The INFO line a NATS server sends first on `addr`, if one answers.
fn info_line(addr: &SocketAddr) -> Option<String> {
    use std::io::{BufRead, BufReader};
    let stream = TcpStream::connect_timeout(addr, Duration::from_millis(100)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    line.starts_with("INFO ").then_some(line)
}

/// Polls the wills bucket (through `node`) until it lists `expected`
/// (node, client), for 20 s at most.
pub async fn wait_wills(node: &Node, expected: &[(&str, &str)]) {
    let mut listed = Vec::new();
    for _ in 0..400 {
        listed = node.cluster.wills().await.unwrap();
        if listed
            .iter()
            .map(|(n, c)| (n.as_str(), c.as_str()))
            .eq(expected.iter().copied())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("wills bucket: {listed:?}, expected {expected:?}");
}

/// After a NATS failure: publishes numbered QoS 1 messages on `topic`
/// until one reaches `sub` (for 30 s at most: the nodes reconnect with a
/// back-off), then 19 more; every message that crosses arrives once and in
/// order.
pub async fn messages_cross_again(publisher: &Client, topic: &str, sub: &mut Subscription) {
    let mut n = 0u32;
    let first = loop {
        n += 1;
        publisher
            .publish(topic, n.to_string())
            .qos(fulmar_client::QoS::AtLeastOnce)
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
            Ok(Some(message)) => break message,
            Ok(None) => panic!("subscription ended"),
            Err(_) => assert!(n < 150, "no message crossed within 30 s"),
        }
    };
    let number = |m: &Message| -> u32 { std::str::from_utf8(&m.payload).unwrap().parse().unwrap() };
    let mut last = number(&first);
    for i in n + 1..n + 20 {
        publisher
            .publish(topic, i.to_string())
            .qos(fulmar_client::QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    while last < n + 19 {
        let value = number(&next(sub).await);
        assert!(value > last, "{value} after {last}");
        last = value;
    }
}

/// A node configuration that beats every 200 ms and is taken for dead
/// after 2 s without a beat.
#[allow(dead_code)] // not every test binary uses it
pub fn fast_heartbeats(nats: &Nats, id: &str) -> ClusterConfig {
    let mut config = ClusterConfig::new(nats.url.clone(), id);
    config.heartbeat_interval = Duration::from_millis(200);
    config.heartbeat_ttl = Duration::from_secs(2);
    config
}

/// A broker on 127.0.0.1:0 with a cluster attached.
pub struct Node {
    pub broker: BrokerHandle,
    pub cluster: Cluster,
}

impl Node {
    pub async fn start(nats: &Nats, id: &str) -> Self {
        Self::start_with(ClusterConfig::new(nats.url.clone(), id)).await
    }

    pub async fn start_with(config: ClusterConfig) -> Self {
        Self::try_start(config).await.unwrap()
    }

    /// A node whose persistent sessions live in JetStream
    /// ([`Cluster::session_store`]).
    pub async fn start_with_store(nats: &Nats, id: &str) -> Self {
        Self::build(ClusterConfig::new(nats.url.clone(), id), true)
            .await
            .unwrap()
    }

    /// A node, or why NATS / JetStream did not take it (yet).
    pub async fn try_start(config: ClusterConfig) -> Result<Self, String> {
        Self::build(config, false).await
    }

    pub async fn build(config: ClusterConfig, store: bool) -> Result<Self, String> {
        let cluster = Cluster::connect(config).await.map_err(|e| e.to_string())?;
        // As `fulmar broker` does: the node id first, then the store.
        if let Err(error) = cluster.claim_node_id().await {
            cluster.shutdown().await;
            return Err(error.to_string());
        }
        let mut builder = Broker::builder()
            .tcp_listener("127.0.0.1:0")
            .bridge(cluster.bridge());
        if store {
            builder = builder.store(cluster.session_store().await.map_err(|e| e.to_string())?);
        }
        let broker = builder.start().await.unwrap();
        if let Err(error) = cluster.attach(&broker).await {
            broker.shutdown().await;
            cluster.shutdown().await;
            return Err(error.to_string());
        }
        Ok(Self { broker, cluster })
    }

    pub fn port(&self) -> u16 {
        self.broker.local_addrs()[0].port()
    }

    /// A v5 client of this node.
    pub async fn client(&self, id: &str) -> Client {
        let (client, _) =
            Client::connect(ConnectOptions::new("127.0.0.1", self.port()).client_id(id))
                .await
                .unwrap();
        client
    }

    /// Waits until this node's NATS subscriptions include `label`
    /// (`subject` or `subject queue`), or, with `present` false, not.
    pub async fn wait_subscription(&self, label: &str, present: bool) {
        wait_for(&format!("subscription {label} present={present}"), || {
            self.cluster.subscriptions().iter().any(|s| s == label) == present
        })
        .await;
    }

    pub async fn stop(self) {
        self.broker.shutdown().await;
        self.cluster.shutdown().await;
    }
}

/// Polls `condition` every 10 ms, for 20 s at most.
pub async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The next message of `sub`, failing after 20 s.
pub async fn next(sub: &mut Subscription) -> Message {
    tokio::time::timeout(Duration::from_secs(20), sub.recv())
        .await
        .expect("no message within 20 s")
        .expect("subscription ended")
}

/// Polls the async `condition` every 50 ms, for 20 s at most.
pub async fn wait_for_async<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..400 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}
