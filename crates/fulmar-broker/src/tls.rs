//! TLS listeners (feature `tls`): rustls with the ring provider, optionally
//! requiring client certificates signed by a given CA.

use std::sync::{Arc, PoisonError, RwLock};

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::error::BrokerError;

/// The certificate chain and key of a TLS listener, and optionally a CA for
/// client certificates.
///
/// With a client CA, clients must present a certificate signed by it (unless
/// [`client_certificate_optional`](Self::client_certificate_optional)); the
/// DER of the certificate a client presented reaches the
/// [`Authenticator`](crate::Authenticator) as
/// [`ConnectInfo::client_certificate`](crate::ConnectInfo::client_certificate).
///
/// The PEM is parsed when the broker starts ([`BrokerError::Tls`]). A
/// running broker takes a new one for a listener with
/// [`BrokerHandle::reload_tls`](crate::BrokerHandle::reload_tls) (a renewed
/// certificate).
#[derive(Clone)]
pub struct TlsConfig {
    cert_chain_pem: Vec<u8>,
    key_pem: Vec<u8>,
    client_ca_pem: Option<Vec<u8>>,
    client_certificate_optional: bool,
    client_crl_pem: Option<Vec<u8>>,
    tls13_only: bool,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("TlsConfig")
            .field("client_ca", &self.client_ca_pem.is_some())
            .field("client_crl", &self.client_crl_pem.is_some())
            .field("tls13_only", &self.tls13_only)
            .field(
                "client_certificate_optional",
                &self.client_certificate_optional,
            )
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// The server's certificate chain (PEM, leaf first) and private key
    /// (PEM: PKCS#8, PKCS#1 or SEC1).
    #[must_use]
    pub fn new(cert_chain_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        Self {
            cert_chain_pem: cert_chain_pem.into(),
            key_pem: key_pem.into(),
            client_ca_pem: None,
            client_certificate_optional: false,
            client_crl_pem: None,
            tls13_only: false,
        }
    }

    /// With a client CA: refuses the client certificates that one of the
    /// certificate revocation lists in `pem` revokes (mosquitto's
    /// `crlfile`); a certificate whose issuer has no list here is accepted.
    #[must_use]
    pub fn client_crl_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.client_crl_pem = Some(pem.into());
        self
    }

    /// Accepts TLS 1.3 only (mosquitto's `tls_version tlsv1.3`). Default:
    /// TLS 1.2 and 1.3.
    #[must_use]
    pub fn tls13_only(mut self, only: bool) -> Self {
        self.tls13_only = only;
        self
    }

    /// Requires client certificates signed by one of the CA certificates in
    /// `pem` (mutual TLS).
    #[must_use]
    pub fn client_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.client_ca_pem = Some(pem.into());
        self
    }

    /// With a client CA: also accept clients that present no certificate (a
    /// certificate that is presented must still be valid). Default: false.
    #[must_use]
    pub fn client_certificate_optional(mut self, optional: bool) -> Self {
        self.client_certificate_optional = optional;
        self
    }

    /// Parses the PEM and checks that the key matches the certificate, as
    /// starting a listener would, without starting one (for example to
    /// check a renewed certificate before
    /// [`BrokerHandle::reload_tls`](crate::BrokerHandle::reload_tls)).
    ///
    /// # Errors
    /// [`BrokerError::Tls`] saying what is wrong (its `addr` is empty).
    ///
    /// # Example
    ///
    /// ```
    /// use fulmar_broker::TlsConfig;
    ///
    /// assert!(TlsConfig::new("not a certificate", "nor a key").check().is_err());
    /// ```
    pub fn check(&self) -> Result<(), BrokerError> {
        self.server_config("").map(drop)
    }

    /// The rustls configuration for a listener on `addr`.
    pub(crate) fn server_config(
        &self,
        addr: &str,
    ) -> Result<Arc<rustls::ServerConfig>, BrokerError> {
        let fail = |reason: String| BrokerError::Tls {
            addr: addr.to_owned(),
            reason,
        };
        let certs = CertificateDer::pem_slice_iter(&self.cert_chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(format!("certificate chain: {e}")))?;
        if certs.is_empty() {
            return Err(fail("no certificate in the certificate chain PEM".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|e| fail(format!("private key: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone());
        let builder = if self.tls13_only {
            builder.with_protocol_versions(&[&rustls::version::TLS13])
        } else {
            builder.with_safe_default_protocol_versions()
        }
        .map_err(|e| fail(e.to_string()))?;
        let builder = match &self.client_ca_pem {
            None => builder.with_no_client_auth(),
            Some(pem) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| fail(format!("client CA: {e}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| fail(format!("client CA: {e}")))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if self.client_certificate_optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = match &self.client_crl_pem {
                    Some(pem) => {
                        let crls = CertificateRevocationListDer::pem_slice_iter(pem)
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(|e| fail(format!("client CRL: {e}")))?;
                        if crls.is_empty() {
                            return Err(fail("no revocation list in the client CRL PEM".into()));
                        }
                        verifier.with_crls(crls)
                    }
                    None => verifier,
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| fail(format!("client CA: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(certs, key)
            .map_err(|e| fail(e.to_string()))?;
        Ok(Arc::new(config))
    }
}

/// The configuration a TLS listener accepts with; replaced in place by
/// [`BrokerHandle::reload_tls`](crate::BrokerHandle::reload_tls). Read once
/// per accepted connection.
#[derive(Clone)]
pub(crate) struct TlsServer(Arc<RwLock<Arc<rustls::ServerConfig>>>);

impl TlsServer {
    pub(crate) fn new(config: Arc<rustls::ServerConfig>) -> Self {
        Self(Arc::new(RwLock::new(config)))
    }

    /// An acceptor with the current configuration.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        let config = self.0.read().unwrap_or_else(PoisonError::into_inner);
        TlsAcceptor::from(config.clone())
    }

    /// New handshakes use `config` from now on.
    pub(crate) fn replace(&self, config: Arc<rustls::ServerConfig>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = config;
    }
}
