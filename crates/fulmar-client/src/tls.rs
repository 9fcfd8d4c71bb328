//! TLS settings (feature `tls`): rustls with the ring provider.

use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::error::Error;

/// TLS settings: which roots to trust, an optional client certificate, the
/// server name for SNI and certificate checks.
///
/// By default the system's root certificates are trusted and the server
/// name is the broker's host.
///
/// ```
/// use fulmar_client::TlsOptions;
///
/// let tls = TlsOptions::new().without_system_roots().server_name("broker.example");
/// // A PEM file without certificates is refused.
/// assert!(tls.ca_pem(b"not a certificate").is_err());
/// ```
#[derive(Clone, Debug)]
pub struct TlsOptions {
    system_roots: bool,
    roots: Vec<CertificateDer<'static>>,
    client_auth: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    server_name: Option<String>,
    alpn: Vec<Vec<u8>>,
    /// The certificate is not checked against the server name.
    skip_hostname: bool,
    /// TLS 1.3 only (else 1.2 and 1.3).
    tls13_only: bool,
    config: Option<Arc<ClientConfig>>,
    /// The configuration the settings make, built by the first connection
    /// (reading the system roots is slow) and shared by clones; changing a
    /// setting starts a new one.
    built: Arc<OnceLock<Arc<ClientConfig>>>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl TlsOptions {
    /// Trust the system's root certificates, no client certificate.
    #[must_use]
    pub fn new() -> Self {
        Self {
            system_roots: true,
            roots: Vec::new(),
            client_auth: None,
            server_name: None,
            alpn: Vec::new(),
            skip_hostname: false,
            tls13_only: false,
            config: None,
            built: Arc::default(),
        }
    }

    /// Do not load the system's root certificates (trust only the CAs added).
    #[must_use]
    pub fn without_system_roots(mut self) -> Self {
        self.system_roots = false;
        self.built = Arc::default();
        self
    }

    /// Trusts every certificate in `pem` as a root.
    ///
    /// # Errors
    /// [`Error::InvalidOptions`] if `pem` holds no certificate or does not parse.
    pub fn ca_pem(mut self, pem: &[u8]) -> Result<Self, Error> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::InvalidOptions(format!("CA certificate: {e}")))?;
        if certs.is_empty() {
            return Err(Error::InvalidOptions("no CA certificate in PEM".into()));
        }
        self.roots.extend(certs);
        self.built = Arc::default();
        Ok(self)
    }

    /// Trusts a DER-encoded root certificate.
    #[must_use]
    pub fn ca_der(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.roots.push(CertificateDer::from(der.into()));
        self.built = Arc::default();
        self
    }

    /// Authenticates with a client certificate: the chain and its private
    /// key, both PEM.
    ///
    /// # Errors
    /// [`Error::InvalidOptions`] if either does not parse.
    pub fn client_auth_pem(mut self, cert_chain: &[u8], key: &[u8]) -> Result<Self, Error> {
        let chain = CertificateDer::pem_slice_iter(cert_chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::InvalidOptions(format!("client certificate: {e}")))?;
        if chain.is_empty() {
            return Err(Error::InvalidOptions("no client certificate in PEM".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| Error::InvalidOptions(format!("client key: {e}")))?;
        self.client_auth = Some((chain, Arc::new(key)));
        self.built = Arc::default();
        Ok(self)
    }

    /// The name sent in SNI and checked against the server certificate
    /// (default: the broker's host).
    #[must_use]
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Accepts a server certificate that is not valid for the server name
    /// (as mosquitto's `--insecure`, paho's `tls_insecure_set`): the chain
    /// is still checked against the trusted roots, and its validity dates,
    /// but a certificate for another host is accepted, so a man in the
    /// middle holding any certificate from those roots is too. For tests
    /// and brokers reached by an address their certificate does not name.
    ///
    /// ```
    /// use fulmar_client::TlsOptions;
    ///
    /// let tls = TlsOptions::new().skip_hostname_verification();
    /// # drop(tls);
    /// ```
    #[must_use]
    pub fn skip_hostname_verification(mut self) -> Self {
        self.skip_hostname = true;
        self.built = Arc::default();
        self
    }

    /// Speaks TLS 1.3 only, as mosquitto's `--tls-version tlsv1.3`: a server
    /// that offers nothing newer than TLS 1.2 fails the handshake
    /// ([`Error::Tls`]). By default TLS 1.2 and 1.3 are offered, and the
    /// server picks (mosquitto's `tlsv1.2`, the lowest it allows);
    /// rustls speaks no older version.
    ///
    /// ```
    /// use fulmar_client::TlsOptions;
    ///
    /// let tls = TlsOptions::new().tls13_only();
    /// # drop(tls);
    /// ```
    #[must_use]
    pub fn tls13_only(mut self) -> Self {
        self.tls13_only = true;
        self.built = Arc::default();
        self
    }

    /// ALPN protocols to offer (e.g. `b"mqtt"` for brokers on port 443).
    #[must_use]
    pub fn alpn(mut self, protocol: impl Into<Vec<u8>>) -> Self {
        self.alpn.push(protocol.into());
        self.built = Arc::default();
        self
    }

    /// Uses this rustls configuration as is; the other settings except the
    /// server name are ignored (its protocol versions too: see
    /// [`tls13_only`](Self::tls13_only)).
    #[must_use]
    pub fn rustls_config(mut self, config: Arc<ClientConfig>) -> Self {
        self.config = Some(config);
        self
    }

    /// The rustls configuration: the one given, else the one the settings
    /// make, built once.
    fn build(&self) -> Result<Arc<ClientConfig>, Error> {
        if let Some(config) = &self.config {
            return Ok(config.clone());
        }
        if let Some(config) = self.built.get() {
            return Ok(config.clone());
        }
        let config = self.make()?;
        // Another connection may have been first: keep its one.
        Ok(self.built.get_or_init(|| config).clone())
    }

    fn make(&self) -> Result<Arc<ClientConfig>, Error> {
        let mut roots = RootCertStore::empty();
        if self.system_roots {
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::warn!(%error, "could not load a system root certificate");
            }
            let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
        }
        for cert in &self.roots {
            roots.add(cert.clone())?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(roots);
        let builder = ClientConfig::builder_with_provider(provider.clone());
        let builder = if self.tls13_only {
            builder.with_protocol_versions(&[&rustls::version::TLS13])?
        } else {
            builder.with_safe_default_protocol_versions()?
        };
        let builder = if self.skip_hostname {
            let checked = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| Error::InvalidOptions(format!("TLS roots: {e}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyName(checked)))
        } else {
            builder.with_root_certificates(roots)
        };
        let mut config = match &self.client_auth {
            Some((chain, key)) => builder.with_client_auth_cert(chain.clone(), key.clone_key())?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols.clone_from(&self.alpn);
        Ok(Arc::new(config))
    }

    /// The name the TLS session gives the server: the
    /// [`server_name`](Self::server_name) if set, else `host`.
    pub(crate) fn server_name_or<'a>(&'a self, host: &'a str) -> &'a str {
        self.server_name.as_deref().unwrap_or(host)
    }

    /// Runs the TLS handshake over a stream opened by the caller (for
    /// custom clients that drive their own connections), checking the
    /// server's certificate for `host` unless a
    /// [`server_name`](Self::server_name) was set.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), fulmar_client::Error> {
    /// use fulmar_client::TlsOptions;
    ///
    /// let tcp = tokio::net::TcpStream::connect("broker.example:8883").await?;
    /// let tls = TlsOptions::new().connect("broker.example", tcp).await?;
    /// // `tls` is an encrypted byte stream: speak MQTT over it.
    /// # drop(tls);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidOptions`] for a host that is no valid server name, a
    /// TLS configuration error; [`Error::Tls`] when the handshake fails on
    /// TLS grounds (a certificate that does not verify, an alert from the
    /// server), [`Error::Io`] when the connection fails under it.
    pub async fn connect<S>(&self, host: &str, stream: S) -> Result<TlsStream<S>, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let config = self.build()?;
        let name = self.server_name_or(host);
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| Error::InvalidOptions(format!("TLS server name {name:?}: {e}")))?;
        TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(handshake_error)
    }
}

/// tokio-rustls reports TLS failures as I/O errors that wrap the rustls
/// error: told apart here.
fn handshake_error(e: std::io::Error) -> Error {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => Error::Tls(tls.clone()),
        None => Error::Io(e),
    }
}

/// Checks a server certificate as `WebPkiServerVerifier` does, but accepts
/// one that is not valid for the server name
/// ([`TlsOptions::skip_hostname_verification`]).
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    // The rustls configuration is built once, system roots read once, and
    // used again by every connection attempt (and by clones); a setting
    // changed afterwards makes a new one.
    #[test]
    fn the_configuration_is_built_once() {
        let tls = TlsOptions::new();
        let first = tls.build().unwrap();
        assert!(Arc::ptr_eq(&first, &tls.build().unwrap()));
        assert!(Arc::ptr_eq(&first, &tls.clone().build().unwrap()));
        let other = tls.clone().alpn(b"mqtt".to_vec());
        let changed = other.build().unwrap();
        assert!(!Arc::ptr_eq(&first, &changed));
        assert_eq!(changed.alpn_protocols, [b"mqtt".to_vec()]);
        assert!(first.alpn_protocols.is_empty());
        assert!(Arc::ptr_eq(&changed, &other.build().unwrap()));
    }
}
