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
                        if let Some(n) = crls.iter().position(|crl| is_crl_version_1(crl)) {
                            return Err(fail(format!(
                                "client CRL: revocation list {} is version 1 (no extensions), \
                                 which fulmar (rustls) cannot read; version 2 lists only: make \
                                 it again with an authorityKeyIdentifier extension \
                                 (`openssl ca -gencrl -crlexts crl_ext`, with \
                                 `authorityKeyIdentifier = keyid:always` in [crl_ext])",
                                n + 1
                            )));
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

/// The tag and content of the DER element at the start of `der`, and what
/// follows it; `None` if it is not a whole element.
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > std::mem::size_of::<usize>() || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes
            .iter()
            .fold(0usize, |len, b| (len << 8) | usize::from(*b));
        (len, rest)
    };
    (rest.len() >= len).then(|| {
        let (content, after) = rest.split_at(len);
        (tag, content, after)
    })
}

/// Whether `crl` is a version 1 CRL: its TBSCertList starts with the
/// signature algorithm (a SEQUENCE), not the version (an INTEGER), as
/// `openssl ca -gencrl` writes it without CRL extensions. mosquitto
/// (OpenSSL) reads these; rustls-webpki reads version 2 only.
fn is_crl_version_1(crl: &[u8]) -> bool {
    const SEQUENCE: u8 = 0x30;
    der_element(crl)
        .filter(|(tag, _, _)| *tag == SEQUENCE)
        .and_then(|(_, list, _)| der_element(list))
        .filter(|(tag, _, _)| *tag == SEQUENCE)
        .and_then(|(_, tbs, _)| der_element(tbs))
        .is_some_and(|(tag, _, _)| tag == SEQUENCE)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl ca -gencrl` (OpenSSL 3.0, no `crl_extensions`): version 1.
    const CRL_V1: &str = "-----BEGIN X509 CRL-----
MIGbMEIwCgYIKoZIzj0EAwIwFDESMBAGA1UEAwwJdjEgQ1JMIENBFw0yNjEyMDYx
OTI2NDdaGA8yMTI2MTExMjE5MjY0N1owCgYIKoZIzj0EAwIDSQAwRgIhAI/co8XJ
+HUWsEKv9QzkOcEcZYCQHeMUCBGjmJjR2RkcAiEAj7eij5EKM2qGKqy6vaG80YJl
cLZNcRrEmsRealwJLuU=
-----END X509 CRL-----
";

    fn server() -> TlsConfig {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        TlsConfig::new(cert.pem(), key.serialize_pem()).client_ca_pem(cert.pem())
    }

    /// Found by differential testing against mosquitto 2.0.11: the CRL
    /// `openssl ca -gencrl` writes by default (version 1) works as
    /// mosquitto's `crlfile`; fulmar did not start, saying only "provided
    /// CRL could not be parsed: ParseError".
    #[test]
    fn a_version_1_crl_is_named_as_such() {
        let e = server().client_crl_pem(CRL_V1).check().unwrap_err();
        let e = e.to_string();
        assert!(e.contains("version 1") && e.contains("-crlexts"), "{e}");
    }

    #[test]
    fn a_version_2_crl_is_read() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::CrlSign];
        let ca = params.self_signed(&key).unwrap();
        let issuer = rcgen::Issuer::new(params, key);
        let crl = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2026, 1, 1),
            next_update: rcgen::date_time_ymd(2126, 1, 1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&issuer)
        .unwrap();
        let der = crl.der().to_vec();
        assert!(!is_crl_version_1(&der));
        assert!(is_crl_version_1(
            &CertificateRevocationListDer::from_pem_slice(CRL_V1.as_bytes()).unwrap()
        ));
        server()
            .client_ca_pem(ca.pem())
            .client_crl_pem(crl.pem().unwrap())
            .check()
            .unwrap();
        // Cut anywhere: not taken for version 1, and no panic.
        for n in 0..der.len() {
            assert!(!is_crl_version_1(der.get(..n).unwrap()));
        }
    }
}
