//! Server TLS (rustls, the ring provider reqwest already uses): a certificate chain and a
//! private key in PEM files, loaded once at start and checked by `check-config`.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use super::error::ConfigError;

/// The protocols a listener offers in ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// HTTP/1.1 only (the HTTP API, OTLP/HTTP).
    Http1,
    /// HTTP/2 only (gRPC).
    H2,
}

/// A server configuration from `cert_file` (PEM, leaf first, then intermediates) and
/// `key_file` (PEM, PKCS#8, PKCS#1 or SEC1).
///
/// # Errors
/// A file cannot be read, holds no certificate or key, or the key does not match.
pub fn server_config(
    cert_file: &str,
    key_file: &str,
    alpn: Alpn,
) -> Result<Arc<ServerConfig>, String> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| format!("cannot read certificates from {cert_file}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read certificates from {cert_file}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{cert_file} holds no PEM certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("cannot read a private key from {key_file}: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("{cert_file} and {key_file} do not make a certificate: {e}"))?;
    cfg.alpn_protocols = match alpn {
        Alpn::Http1 => vec![b"http/1.1".to_vec()],
        Alpn::H2 => vec![b"h2".to_vec()],
    };
    Ok(Arc::new(cfg))
}

/// Checks a `<section>.tls_cert_file` / `<section>.tls_key_file` pair: both or neither, and
/// when set, the files load as a certificate and its key.
pub fn check_pair(section: &str, cert_file: &str, key_file: &str) -> Result<(), ConfigError> {
    match (cert_file.is_empty(), key_file.is_empty()) {
        (true, true) => Ok(()),
        (false, true) => Err(ConfigError::invalid(
            format!("{section}.tls_key_file"),
            format!(" is empty while {section}.tls_cert_file is set: TLS needs both"),
        )),
        (true, false) => Err(ConfigError::invalid(
            format!("{section}.tls_cert_file"),
            format!(" is empty while {section}.tls_key_file is set: TLS needs both"),
        )),
        (false, false) => {
            for (key, file) in [("tls_cert_file", cert_file), ("tls_key_file", key_file)] {
                if !Path::new(file).is_file() {
                    return Err(ConfigError::invalid(
                        format!("{section}.{key}"),
                        format!(": {file:?} is not a readable file"),
                    ));
                }
            }
            server_config(cert_file, key_file, Alpn::Http1)
                .map(|_| ())
                .map_err(|e| {
                    ConfigError::invalid(format!("{section}.tls_cert_file"), format!(": {e}"))
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_or_neither() {
        assert!(check_pair("http", "", "").is_ok());
        let e = check_pair("http", "/nonexistent.pem", "").expect_err("half a pair");
        assert!(e.to_string().contains("http.tls_key_file"), "{e}");
        let e = check_pair("otlp", "", "/k.pem").expect_err("half a pair");
        assert!(e.to_string().contains("otlp.tls_cert_file"), "{e}");
        let e = check_pair("http", "/nonexistent.pem", "/nonexistent.key").expect_err("missing");
        assert!(e.to_string().contains("not a readable file"), "{e}");
    }

    #[test]
    fn a_file_without_pem_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem").expect("write");
        let j = junk.display().to_string();
        let e = check_pair("http", &j, &j).expect_err("no certificate");
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }
}
