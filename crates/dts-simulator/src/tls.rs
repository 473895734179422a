//! https serving: the server identity (certificate chain and private key, PEM) the simulator
//! presents when it plays a private DTS gateway that a client reaches over TLS — e.g. an operator
//! Pod on a local test node, which refuses plain http to anything but loopback.
//!
//! Owns: loading and checking the identity, the rustls server configuration (ring, TLS 1.2 and
//! 1.3, ALPN `http/1.1`). No network I/O.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A server certificate chain and its key, ready to serve.
#[derive(Clone)]
pub struct TlsIdentity {
    pub(crate) config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

/// Why an identity cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The PEM holds no certificate, no key, or something rustls refuses.
    #[error("invalid TLS identity: {0}")]
    Invalid(String),
}

impl TlsIdentity {
    /// From PEM text: the server certificate first, then any intermediates; and its private key
    /// (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<TlsIdentity, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Invalid(format!("certificate chain: {e}")))?;
        if chain.is_empty() {
            return Err(TlsError::Invalid("no certificate in the chain".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| TlsError::Invalid(format!("private key: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Invalid(e.to_string()))?;
        // The gateway answers HTTP/1.1; say so, so that a client offering h2 does not try it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsIdentity {
            config: Arc::new(config),
        })
    }

    /// From two PEM files (see [`TlsIdentity::from_pem`]).
    pub fn from_files(cert_chain: &Path, key: &Path) -> Result<TlsIdentity, TlsError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| TlsError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        TlsIdentity::from_pem(&read(cert_chain)?, &read(key)?)
    }
}
