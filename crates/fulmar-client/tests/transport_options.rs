//! Transport settings: the local address the socket is bound to
//! (`ConnectOptions::local_address`, mosquitto's `-A`) over every transport,
//! and the TLS versions offered (`TlsOptions::tls13_only`, mosquitto's
//! `--tls-version`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use common::{Mosquitto, guard};
use fulmar_client::{Client, ConnectOptions, Error, ProtocolVersion, QoS, Reconnect, Transport};
use futures::StreamExt;
use tokio::net::TcpListener;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn options(port: u16) -> ConnectOptions {
    ConnectOptions::new("127.0.0.1", port)
        .reconnect(Reconnect::disabled())
        .connect_timeout(Duration::from_secs(10))
}

/// The address a connection made with `options` comes from, as a plain
/// listener on `listener` sees it; the connection is then dropped (the
/// client's connect fails, which is not looked at).
async fn peer_of(listener: &TcpListener, options: ConnectOptions) -> std::net::SocketAddr {
    let client = tokio::spawn(Client::connect(options));
    let (stream, peer) = guard(listener.accept()).await.unwrap();
    drop(stream);
    let _ = guard(client).await;
    peer
}

// The broker sees the connection come from the bound address, over each
// transport (TLS and WebSocket open their TCP connection the same way).
#[tokio::test]
async fn the_socket_is_bound_to_the_local_address_over_every_transport() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut transports = vec![Transport::Tcp];
    #[cfg(feature = "tls")]
    transports.push(Transport::Tls(fulmar_client::TlsOptions::new()));
    #[cfg(feature = "websocket")]
    transports.push(Transport::WebSocket {
        path: "/mqtt".into(),
    });
    for transport in transports {
        let what = format!("{transport:?}");
        let options = options(port).transport(transport).local_address(LOCALHOST);
        assert_eq!(options.bind_address(), Some(LOCALHOST));
        let peer = peer_of(&listener, options).await;
        assert_eq!(peer.ip(), LOCALHOST, "{what}");
    }

    // A whole MQTT exchange over a bound socket.
    let broker = Mosquitto::start();
    let (client, _) = guard(Client::connect(
        options(broker.port)
            .protocol_version(ProtocolVersion::V311)
            .local_address(LOCALHOST),
    ))
    .await
    .unwrap();
    let mut stream = guard(client.subscribe("bound/t", QoS::AtLeastOnce))
        .await
        .unwrap();
    guard(
        client
            .publish("bound/t", "from 127.0.0.1")
            .qos(QoS::AtLeastOnce),
    )
    .await
    .unwrap();
    assert_eq!(
        guard(stream.next()).await.unwrap().payload,
        "from 127.0.0.1"
    );
    guard(client.disconnect()).await.unwrap();
}

// An IPv6 local address cannot reach an IPv4 broker: the error says so
// (nothing is tried, so nothing is bound).
#[tokio::test]
async fn a_local_address_of_the_other_family_is_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let result = guard(Client::connect(
        options(port).local_address(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ))
    .await;
    match result {
        Err(Error::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::AddrNotAvailable, "{e}");
            assert!(e.to_string().contains("no IPv6 address"), "{e}");
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

#[cfg(feature = "tls")]
mod tls_versions {
    use std::sync::Arc;

    use common::Pki;
    use fulmar_client::TlsOptions;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    use super::*;

    /// A TLS server that speaks only `version`, with `pki`'s certificate
    /// (for localhost): the protocol version of the first handshake that
    /// completes, or the error of the first that fails.
    async fn tls_server(
        pki: &Pki,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> (
        u16,
        tokio::task::JoinHandle<Result<rustls::ProtocolVersion, String>>,
    ) {
        let certs = CertificateDer::pem_file_iter(pki.dir.join("server.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(pki.dir.join("server.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
            tls.get_ref()
                .1
                .protocol_version()
                .ok_or_else(|| "no version".to_owned())
        });
        (port, server)
    }

    fn tls_options(port: u16, pki: &Pki, tls13_only: bool) -> ConnectOptions {
        let mut tls = TlsOptions::new()
            .without_system_roots()
            .ca_pem(pki.ca_pem.as_bytes())
            .unwrap()
            .server_name("localhost");
        if tls13_only {
            tls = tls.tls13_only();
        }
        options(port).transport(Transport::Tls(tls))
    }

    // mosquitto's --tls-version: tlsv1.3 refuses a server that stops at TLS
    // 1.2; by default (mosquitto's tlsv1.2) TLS 1.2 is taken.
    #[tokio::test]
    async fn tls13_only_refuses_a_tls12_server() {
        let pki = Pki::generate();
        let (port, server) = tls_server(&pki, &rustls::version::TLS12).await;
        let result = guard(Client::connect(tls_options(port, &pki, true))).await;
        assert!(matches!(result, Err(Error::Tls(_))), "{result:?}");
        assert!(guard(server).await.unwrap().is_err());

        let (port, server) = tls_server(&pki, &rustls::version::TLS12).await;
        // The server ends the connection after the handshake: no CONNACK.
        let _ = guard(Client::connect(tls_options(port, &pki, false))).await;
        assert_eq!(
            guard(server).await.unwrap(),
            Ok(rustls::ProtocolVersion::TLSv1_2)
        );

        let (port, server) = tls_server(&pki, &rustls::version::TLS13).await;
        let _ = guard(Client::connect(tls_options(port, &pki, true))).await;
        assert_eq!(
            guard(server).await.unwrap(),
            Ok(rustls::ProtocolVersion::TLSv1_3)
        );
    }

    // Against mosquitto with `tls_version tlsv1.3`, tls13_only connects.
    #[tokio::test]
    async fn tls13_only_connects_to_a_tls13_broker() {
        let pki = Pki::generate();
        let broker = Mosquitto::with_extra(pki.listener(false), true, "tls_version tlsv1.3\n");
        for tls13_only in [true, false] {
            let (client, _) = guard(Client::connect(tls_options(broker.port, &pki, tls13_only)))
                .await
                .unwrap();
            guard(client.disconnect()).await.unwrap();
        }
    }
}
