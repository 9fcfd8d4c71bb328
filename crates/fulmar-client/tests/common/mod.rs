//! Test support: a mosquitto broker on an ephemeral loopback port, and a
//! TCP proxy the test can sever.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Fails the test if the future takes longer than 20 s (a failure guard, not
/// a timing assertion).
pub async fn guard<T>(f: impl std::future::IntoFuture<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f.into_future())
        .await
        .expect("test step timed out")
}

fn mosquitto_binary() -> PathBuf {
    for candidate in [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    if let Ok(out) = Command::new("which").arg("mosquitto").output() {
        let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !path.is_empty() {
            return path.into();
        }
    }
    panic!(
        "mosquitto is not installed: the fulmar-client integration tests need the Debian \
         package `mosquitto` (apt-get install mosquitto; scripts/test.sh installs it)"
    );
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Extra listener configuration.
pub enum Listener {
    Tcp,
    /// `cafile`, `certfile`, `keyfile`, require a client certificate.
    Tls {
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
        require_certificate: bool,
    },
    WebSocket,
    /// WebSocket over TLS.
    SecureWebSocket {
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
    },
}

/// A mosquitto process, killed on drop.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Mosquitto {
    pub fn start() -> Self {
        Self::with_listener(Listener::Tcp)
    }

    pub fn with_listener(listener: Listener) -> Self {
        Self::with(listener, true)
    }

    /// `anonymous`: whether clients without credentials are allowed.
    pub fn with(listener: Listener, anonymous: bool) -> Self {
        Self::with_extra(listener, anonymous, "")
    }

    /// As [`with`](Self::with), with `extra` at the end of the configuration
    /// (a bridge's `connection` section, say).
    pub fn with_extra(listener: Listener, anonymous: bool, extra: &str) -> Self {
        let binary = mosquitto_binary();
        let dir = std::env::temp_dir().join(format!(
            "fulmar-client-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // The port is picked free and released; retry if another process grabs it.
        for _ in 0..5 {
            let port = free_port();
            let mut config =
                format!("allow_anonymous {anonymous}\npersistence false\nmax_keepalive 65535\n");
            // The log goes to stderr, read only when mosquitto fails to start:
            // errors and warnings alone fit the pipe. Everything, for
            // debugging, goes to a file instead (mosquitto would block on a
            // full pipe).
            if std::env::var_os("FULMAR_MOSQUITTO_LOG").is_some() {
                config.push_str("log_type all\nlog_dest file /tmp/fulmar-mosquitto.log\n");
            } else {
                config.push_str("log_dest stderr\nlog_type error\nlog_type warning\n");
            }
            if matches!(
                listener,
                Listener::WebSocket | Listener::SecureWebSocket { .. }
            ) {
                // mosquitto 2.0 does not start with a websockets listener alone.
                config.push_str(&format!("listener {} 127.0.0.1\n", free_port()));
            }
            config.push_str(&format!("listener {port} 127.0.0.1\n"));
            match &listener {
                Listener::Tcp => {}
                Listener::Tls {
                    ca,
                    cert,
                    key,
                    require_certificate,
                } => {
                    config.push_str(&format!(
                        "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
                        ca.display(),
                        cert.display(),
                        key.display(),
                        require_certificate
                    ));
                }
                Listener::WebSocket => config.push_str("protocol websockets\n"),
                Listener::SecureWebSocket { ca, cert, key } => {
                    config.push_str(&format!(
                        "protocol websockets\ncafile {}\ncertfile {}\nkeyfile {}\n",
                        ca.display(),
                        cert.display(),
                        key.display()
                    ));
                }
            }
            // Running as root, mosquitto drops privileges unless told otherwise.
            if is_root() {
                config.push_str("user root\n");
            }
            config.push_str(extra);
            let conf = dir.join("mosquitto.conf");
            std::fs::write(&conf, config).unwrap();
            let mut child = Command::new(&binary)
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            if wait_for_port(port, &mut child) {
                return Self { child, port, dir };
            }
            let _ = child.kill();
            let stderr = child.stderr.take().map(|s| {
                BufReader::new(s)
                    .lines()
                    .map_while(Result::ok)
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            let _ = child.wait();
            eprintln!("mosquitto did not start on port {port}: {stderr:?}");
        }
        panic!("mosquitto did not start");
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Waits until the port accepts connections (or the process died).
fn wait_for_port(port: u16, child: &mut Child) -> bool {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// A test PKI: a CA, a server certificate for `localhost`, a client
/// certificate, all PEM files in a fresh directory.
pub struct Pki {
    pub dir: PathBuf,
    pub ca_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl Pki {
    pub fn generate() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = std::env::temp_dir().join(format!(
            "fulmar-client-pki-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "fulmar test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let mut server_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        server_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        client_params
            .distinguished_name
            .push(DnType::CommonName, "fulmar-client");
        let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.join("server.pem"), server_cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
        Self {
            dir,
            ca_pem: ca_cert.pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        }
    }

    pub fn listener(&self, require_certificate: bool) -> Listener {
        Listener::Tls {
            ca: self.dir.join("ca.pem"),
            cert: self.dir.join("server.pem"),
            key: self.dir.join("server.key"),
            require_certificate,
        }
    }

    pub fn websocket_listener(&self) -> Listener {
        Listener::SecureWebSocket {
            ca: self.dir.join("ca.pem"),
            cert: self.dir.join("server.pem"),
            key: self.dir.join("server.key"),
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback TCP proxy to `upstream`; [`Proxy::sever`] closes every
/// connection open through it (new ones are accepted again afterwards).
pub struct Proxy {
    pub port: u16,
    sever: watch::Sender<u64>,
    accepting: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (sever, _) = watch::channel(0u64);
        let (accepting, accepting_rx) = watch::channel(true);
        let sever_tx = sever.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if !*accepting_rx.borrow() {
                    // Refused: closed at once, before any byte.
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let mut severed = sever_tx.subscribe();
                tokio::spawn(async move {
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut cr, &mut sw) => {}
                        _ = tokio::io::copy(&mut sr, &mut cw) => {}
                        _ = severed.changed() => {}
                    }
                    let _ = cw.shutdown().await;
                    let _ = sw.shutdown().await;
                });
            }
        });
        Self {
            port,
            sever,
            accepting,
            task,
        }
    }

    /// While off, new connections are closed at once.
    pub fn set_accepting(&self, on: bool) {
        self.accepting.send_replace(on);
    }

    /// Closes every connection currently open through the proxy.
    pub fn sever(&self) {
        self.sever.send_modify(|n| *n += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A transport over in-memory pipes: each connection attempt of the client
/// hands the broker's end of a new pipe to the returned receiver, for a
/// scripted broker.
pub fn pipes() -> (
    fulmar_client::Transport,
    tokio::sync::mpsc::UnboundedReceiver<tokio::io::DuplexStream>,
) {
    let (server_tx, server_rx) = tokio::sync::mpsc::unbounded_channel();
    let transport = fulmar_client::Transport::custom(move || {
        let (client, server) = tokio::io::duplex(1 << 16);
        let _ = server_tx.send(server);
        async move { Ok(client) }
    });
    (transport, server_rx)
}
