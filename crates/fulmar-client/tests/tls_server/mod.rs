//! Test support for the TLS tests: a TLS server with a self-signed
//! certificate (kept out of `common`, which builds without TLS too).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

/// A TLS server for `localhost` with a fresh self-signed certificate: the
/// acceptor, and the certificate in PEM for the client to trust.
pub fn localhost_tls_acceptor() -> (tokio_rustls::TlsAcceptor, String) {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use std::sync::Arc;

    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = CertificateDer::from(certified.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    // The provider named: with the workspace's features unified, rustls
    // cannot pick a process default.
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    (acceptor, certified.cert.pem())
}
