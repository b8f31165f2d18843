//! HTTPS: the gateway's application served over rustls, for gateways that
//! leave loopback without a TLS-terminating proxy in front.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The TLS settings [`server_config`] makes and [`crate::listen::serve`]
/// takes.
pub use rustls::ServerConfig;

/// How long a client may take to finish the TLS handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is missing, unreadable or holds no certificate.
    #[error(
        "TLS certificate {path}: {reason} (tls_cert must be a PEM file with the chain, leaf first)"
    )]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The key file is missing, unreadable or holds no private key.
    #[error(
        "TLS private key {path}: {reason} (tls_key must be a PEM file with a PKCS#8, PKCS#1 or SEC1 key)"
    )]
    Key {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the pair (a key that does not match the certificate).
    #[error("TLS certificate and key do not work together: {0}")]
    Config(String),
}

/// A rustls server configuration from PEM files, offering HTTP/1.1.
///
/// # Errors
/// [`TlsError`] naming the file at fault.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|error| TlsError::Certificate {
            path: cert.to_owned(),
            reason: error.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|error| TlsError::Certificate {
            path: cert.to_owned(),
            reason: error.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            path: cert.to_owned(),
            reason: "no certificate in the file".into(),
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|error| TlsError::Key {
        path: key.to_owned(),
        reason: error.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Config(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|error| TlsError::Config(error.to_string()))?;
    // HTTP/1.1 only: see `crate::listen::serve`.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named() {
        let error = server_config(Path::new("/nonexistent/cert.pem"), Path::new("/x/key.pem"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("/nonexistent/cert.pem"), "{error}");
    }
}
