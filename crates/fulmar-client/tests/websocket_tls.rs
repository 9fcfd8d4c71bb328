//! The WebSocket transport: the HTTP Host header of a secure
//! WebSocket with a TLS server name.

#![cfg(all(feature = "websocket", feature = "tls"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

mod tls_server;

use fulmar_client::{Client, ConnectOptions, Reconnect, TlsOptions, Transport};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// The client reaches the broker at an address (127.0.0.1) but names it
/// `localhost` in TLS (SNI and certificate check): the HTTP request inside
/// that TLS session should name the same host, as a browser or any HTTP
/// client does; virtual hosts and reverse proxies (nginx, a cloud load
/// balancer) route on it, and some refuse an SNI/Host mismatch (421).
// (transport, no spec statement)
#[tokio::test]
async fn wss_host_header_names_the_tls_server_name() {
    let (acceptor, ca_pem) = tls_server::localhost_tls_acceptor();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let host = Arc::new(Mutex::new(None::<String>));
    let seen = host.clone();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        let callback = move |req: &Request, mut resp: Response| {
            *seen.lock().unwrap() = req
                .headers()
                .get("Host")
                .map(|h| h.to_str().unwrap().to_owned());
            resp.headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
            Ok(resp)
        };
        let _ws = tokio_tungstenite::accept_hdr_async(tls, callback).await;
    });
    let tls = TlsOptions::new()
        .without_system_roots()
        .ca_pem(ca_pem.as_bytes())
        .unwrap()
        .server_name("localhost");
    let options = ConnectOptions::new("127.0.0.1", port)
        .transport(Transport::SecureWebSocket {
            path: "/mqtt".into(),
            tls,
        })
        .connect_timeout(Duration::from_secs(2))
        .reconnect(Reconnect::disabled());
    // No MQTT broker behind it: the connection fails after the handshake.
    let _ = tokio::time::timeout(Duration::from_secs(5), Client::connect(options)).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    let host = host.lock().unwrap().clone();
    assert_eq!(host.as_deref(), Some(format!("localhost:{port}").as_str()));
}
