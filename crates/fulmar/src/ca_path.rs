//! CA certificates from a directory: mosquitto's `capath` (listeners: the
//! CAs of client certificates), `bridge_capath` and `--capath` (pub/sub: the
//! CAs of the broker's certificate).

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The CA certificates (DER) of the PEM files in `dir` (OpenSSL's hashed
/// directory or any other): every file, symbolic links followed, that holds
/// PEM certificates rustls can take as roots; others (keys, CRLs, README
/// files) are skipped. Each certificate once, in the order of the file
/// names.
///
/// # Errors
/// The directory cannot be read, or holds no such certificate.
pub(crate) fn certificates(dir: &Path) -> Result<Vec<Vec<u8>>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    let mut certs: Vec<Vec<u8>> = Vec::new();
    for file in files {
        let Ok(pem) = std::fs::read(&file) else {
            continue;
        };
        for cert in CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok) {
            let usable = rustls::RootCertStore::empty().add(cert.clone()).is_ok();
            if usable && !certs.iter().any(|c| c.as_slice() == cert.as_ref()) {
                certs.push(cert.as_ref().to_vec());
            }
        }
    }
    if certs.is_empty() {
        return Err(format!(
            "{}: no PEM CA certificate in this directory",
            dir.display()
        ));
    }
    Ok(certs)
}

/// `certs` (DER) as one PEM bundle, for APIs that take PEM.
pub(crate) fn pem_bundle(certs: &[Vec<u8>]) -> Vec<u8> {
    let mut pem = String::new();
    for der in certs {
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let text = STANDARD.encode(der);
        for line in text.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem.into_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_bundle_parses_back_to_the_same_certificates() {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let a = rcgen::generate_simple_self_signed(vec!["a.example".to_owned()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.example".to_owned()]).unwrap();
        let ders = vec![a.cert.der().to_vec(), b.cert.der().to_vec()];
        let pem = pem_bundle(&ders);
        let back: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&pem)
            .map(|c| c.unwrap().as_ref().to_vec())
            .collect();
        assert_eq!(back, ders);
        assert_eq!(pem_bundle(&[]), b"");
    }
}
