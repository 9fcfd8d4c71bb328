//! `fulmar broker`: runs a broker until SIGINT or SIGTERM.

use std::net::{IpAddr, SocketAddr};

use clap::Args;
use fulmar_broker::Broker;

/// Options of `fulmar broker`.
#[derive(Debug, Args)]
pub(crate) struct BrokerArgs {
    /// TCP port to listen on (0 picks a free port).
    #[arg(short, long, default_value_t = 1883)]
    port: u16,
    /// Address to listen on: an IP address (with --port) or ADDR:PORT. May be repeated.
    #[arg(long = "bind", value_name = "ADDR", default_value = "127.0.0.1")]
    bind: Vec<String>,
}

/// `ADDR` with `port` unless it already names one.
fn listen_addr(addr: &str, port: u16) -> String {
    match addr.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port).to_string(),
        Err(_) if addr.parse::<SocketAddr>().is_ok() => addr.to_owned(),
        Err(_) => format!("{addr}:{port}"),
    }
}

/// Runs the broker until SIGINT or SIGTERM, then shuts it down gracefully.
pub(crate) async fn run(args: BrokerArgs) -> Result<(), String> {
    let mut builder = Broker::builder();
    for addr in &args.bind {
        builder = builder.tcp_listener(listen_addr(addr, args.port));
    }
    let broker = builder.start().await.map_err(|e| e.to_string())?;
    for addr in broker.local_addrs() {
        tracing::info!("listening on {addr}");
    }
    wait_for_signal().await?;
    tracing::info!("shutting down");
    broker.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.map_err(|e| format!("SIGINT handler: {e}")),
        _ = term.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> Result<(), String> {
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| format!("Ctrl-C handler: {e}"))
}

#[cfg(test)]
mod tests {
    use super::listen_addr;

    #[test]
    fn bind_addresses_take_the_port_unless_they_have_one() {
        assert_eq!(listen_addr("127.0.0.1", 1883), "127.0.0.1:1883");
        assert_eq!(listen_addr("::1", 1883), "[::1]:1883");
        assert_eq!(listen_addr("0.0.0.0:9000", 1883), "0.0.0.0:9000");
        assert_eq!(listen_addr("localhost", 1883), "localhost:1883");
    }
}
