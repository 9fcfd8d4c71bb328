//! Opening the byte stream to the broker: TCP, TLS, WebSocket, secure WebSocket,
//! or the application's own.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

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
        let tcp = TcpStream::connect((host, port)).await?;
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
            let url = format!("wss://{}:{port}{}", url_host(host), slash(path));
            let ws = crate::ws::connect(&url, stream, options.inbound_limit()).await?;
            Ok(Box::new(ws))
        }
        Transport::Custom(connector) => Ok(connector.connect().await?),
    }
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
