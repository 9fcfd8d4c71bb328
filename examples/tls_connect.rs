//! Connects over TLS (rustls), publishes one message, disconnects.
//!
//! ```text
//! cargo run -p fulmar-examples --example tls_connect [HOST:PORT] [CA.pem] [SERVER_NAME]
//! ```
//!
//! The broker address comes from the first argument, else `FULMAR_BROKER`,
//! else 127.0.0.1:8883. Without a CA file the system roots are trusted;
//! the server name (SNI and certificate check) defaults to the host. For a
//! client certificate, set `FULMAR_CLIENT_CERT` and `FULMAR_CLIENT_KEY` to
//! PEM files.

use std::process::ExitCode;
use std::time::Duration;

use fulmar_client::{Client, ConnectOptions, QoS, Reconnect, TlsOptions, Transport};

fn broker_address() -> (String, u16) {
    let addr = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("FULMAR_BROKER").ok())
        .unwrap_or_else(|| "127.0.0.1:8883".to_owned());
    match addr.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
        Some((host, Ok(port))) => (host.to_owned(), port),
        _ => (addr, 8883),
    }
}

fn tls_options() -> Result<TlsOptions, String> {
    let mut tls = TlsOptions::new();
    if let Some(ca) = std::env::args().nth(2) {
        let pem = std::fs::read(&ca).map_err(|e| format!("cannot read {ca}: {e}"))?;
        tls = tls
            .without_system_roots()
            .ca_pem(&pem)
            .map_err(|e| e.to_string())?;
    }
    if let Some(name) = std::env::args().nth(3) {
        tls = tls.server_name(name);
    }
    if let (Ok(cert), Ok(key)) = (
        std::env::var("FULMAR_CLIENT_CERT"),
        std::env::var("FULMAR_CLIENT_KEY"),
    ) {
        let cert = std::fs::read(&cert).map_err(|e| format!("cannot read {cert}: {e}"))?;
        let key = std::fs::read(&key).map_err(|e| format!("cannot read {key}: {e}"))?;
        tls = tls
            .client_auth_pem(&cert, &key)
            .map_err(|e| e.to_string())?;
    }
    Ok(tls)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let (host, port) = broker_address();
    let tls = match tls_options() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let options = ConnectOptions::new(host.clone(), port)
        .transport(Transport::Tls(tls))
        .connect_timeout(Duration::from_secs(5))
        .reconnect(Reconnect::disabled());
    let client = match Client::connect(options).await {
        Ok((client, _connack)) => client,
        Err(e) => {
            eprintln!("no MQTT broker over TLS at {host}:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match client
        .publish("fulmar/tls", "hello over TLS")
        .qos(QoS::AtLeastOnce)
        .await
    {
        Ok(outcome) => println!("published over TLS: {}", outcome.reason_code),
        Err(e) => {
            eprintln!("publish failed: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = client.disconnect().await {
        eprintln!("disconnect failed: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
