//! Opening the byte stream to the broker: TCP, TLS, WebSocket, secure WebSocket,
//! or the application's own.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};

use crate::error::Error;
use crate::options::{ConnectOptions, Transport};

/// A byte stream to the broker.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Connects the transport chosen in `options` to `host:port` (one of its
/// addresses).
pub(crate) async fn connect(
    options: &ConnectOptions,
    (host, port): (&str, u16),
) -> Result<Box<dyn Io>, Error> {
    let tcp = async {
        let tcp = match options.local_address {
            None => TcpStream::connect((host, port)).await?,
            Some(local) => connect_from(local, (host, port)).await?,
        };
        tcp.set_nodelay(true)?;
        Ok::<_, Error>(tcp)
    };
    match &options.transport {
        Transport::Tcp => Ok(Box::new(tcp.await?)),
        #[cfg(feature = "tls")]
        Transport::Tls(tls) => Ok(Box::new(tls.connect(host, tcp.await?).await?)),
        #[cfg(feature = "websocket")]
        Transport::WebSocket { path } => {
            let url = format!("ws://{}:{port}{}", url_host(host), slash(path));
            let ws = crate::ws::connect(&url, tcp.await?, options.inbound_limit()).await?;
            Ok(Box::new(ws))
        }
        #[cfg(all(feature = "websocket", feature = "tls"))]
        Transport::SecureWebSocket { path, tls } => {
            let stream = tls.connect(host, tcp.await?).await?;
            // The HTTP Host header names the host the TLS session names
            // (SNI, certificate check), as a browser does: virtual hosts
            // and reverse proxies route on it, some refuse a mismatch.
            let name = tls.server_name_or(host);
            let url = format!("wss://{}:{port}{}", url_host(name), slash(path));
            let ws = crate::ws::connect(&url, stream, options.inbound_limit()).await?;
            Ok(Box::new(ws))
        }
        Transport::Custom(connector) => Ok(connector.connect().await?),
    }
}

/// Connects to `host:port` from a socket bound to `local` (any port): each
/// address `host` resolves to of `local`'s family in turn, as
/// `TcpStream::connect` tries them all, until one connects.
async fn connect_from(local: IpAddr, (host, port): (&str, u16)) -> io::Result<TcpStream> {
    let mut last = None;
    for remote in tokio::net::lookup_host((host, port)).await? {
        if remote.is_ipv4() != local.is_ipv4() {
            continue;
        }
        let socket = if local.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket
            .bind(SocketAddr::new(local, 0))
            .map_err(|e| io::Error::new(e.kind(), format!("cannot bind to {local}: {e}")))?;
        match socket.connect(remote).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        let family = if local.is_ipv4() { "IPv4" } else { "IPv6" };
        io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("{host} has no {family} address to reach from the local address {local}"),
        )
    }))
}

/// An IPv6 literal goes in brackets in a URL.
#[cfg(feature = "websocket")]
fn url_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

#[cfg(feature = "websocket")]
fn slash(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}
