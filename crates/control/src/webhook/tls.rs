//! The serving certificate: loaded from a PEM certificate chain and a PEM private key, and
//! swapped in place when the files change, so certificate rotation needs no restart. A new
//! pair that does not load (unparsable, or key and certificate do not match) is logged and
//! the pair in use is kept.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// A certificate/key pair that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{0}: no PEM certificate found")]
    NoCertificate(PathBuf),
    /// The key file holds no PEM private key.
    #[error("{path}: no PEM private key found: {reason}")]
    NoKey {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        reason: String,
    },
    /// rustls refused the pair (unsupported key type, or the key does not match the certificate).
    #[error("{cert} / {key}: {reason}")]
    Unusable {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// The rustls configuration could not be built.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// What [`CertReloader::reload_if_changed`] did.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// The files have the contents already seen.
    Unchanged,
    /// A new pair was loaded; new handshakes use it.
    Reloaded,
    /// The files changed but the new pair is unusable; the previous pair stays in use.
    Rejected(TlsError),
}

/// Parses a certificate chain and key into the form rustls serves.
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert_path.to_path_buf()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::NoKey {
        path: key_path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let unusable = |reason: String| TlsError::Unusable {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        reason,
    };
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| unusable(e.to_string()))?;
    let pair = CertifiedKey::new(chain, signing_key);
    // A key whose public half rustls cannot derive is let through; a mismatch is not.
    match pair.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(pair)
        }
        Err(e) => Err(unusable(e.to_string())),
    }
}

/// The certificate in use, and the files it came from. Serves as the rustls certificate
/// resolver, so every new handshake sees the latest good pair.
pub struct CertReloader {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// Contents of (certificate, key) at the last check, to notice changes.
    seen: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for CertReloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertReloader")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl CertReloader {
    /// Loads the pair; fails when it cannot be used, since there is nothing to serve yet.
    pub fn load(
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let cert_path = cert_path.into();
        let key_path = key_path.into();
        let cert_pem = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        let pair = certified_key(&cert_pem, &key_pem, &cert_path, &key_path, &provider)?;
        Ok(Self {
            cert_path,
            key_path,
            provider,
            current: RwLock::new(Arc::new(pair)),
            seen: Mutex::new((cert_pem, key_pem)),
        })
    }

    /// The pair new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the files and swaps in the new pair if they changed and load.
    /// Reading is blocking; call it from a blocking context or accept a short stall
    /// (the files are small).
    pub fn reload_if_changed(&self) -> ReloadOutcome {
        let (cert_pem, key_pem) = match (read(&self.cert_path), read(&self.key_path)) {
            (Ok(c), Ok(k)) => (c, k),
            // A file being replaced may be missing for a moment; try again on the next poll.
            (Err(e), _) | (_, Err(e)) => {
                let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                // Report a missing file once, not on every poll.
                if seen.0.is_empty() && seen.1.is_empty() {
                    return ReloadOutcome::Unchanged;
                }
                *seen = (Vec::new(), Vec::new());
                return ReloadOutcome::Rejected(e);
            }
        };
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.0 == cert_pem && seen.1 == key_pem {
                return ReloadOutcome::Unchanged;
            }
            *seen = (cert_pem.clone(), key_pem.clone());
        }
        match certified_key(
            &cert_pem,
            &key_pem,
            &self.cert_path,
            &self.key_path,
            &self.provider,
        ) {
            Ok(pair) => {
                let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
                *current = Arc::new(pair);
                ReloadOutcome::Reloaded
            }
            Err(e) => ReloadOutcome::Rejected(e),
        }
    }
}

impl ResolvesServerCert for CertReloader {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The rustls server configuration: the reloading certificate, ALPN `h2` and `http/1.1`.
pub fn server_config(
    reloader: Arc<CertReloader>,
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(reloader);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The crypto provider the webhook uses (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(cn: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write(dir: &Path, cert: &str, key: &str) -> (PathBuf, PathBuf) {
        let c = dir.join("tls.crt");
        let k = dir.join("tls.key");
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        (c, k)
    }

    #[test]
    fn loads_a_pair_and_names_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair("one");
        let (c, k) = write(dir.path(), &cert, &key);
        assert!(CertReloader::load(&c, &k, provider()).is_ok());

        std::fs::write(&c, "not pem").unwrap();
        let err = CertReloader::load(&c, &k, provider()).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate(_)), "{err}");
        assert!(err.to_string().contains("tls.crt"));

        let missing = dir.path().join("nope.key");
        let err = CertReloader::load(&c, &missing, provider()).unwrap_err();
        assert!(err.to_string().contains("nope.key"), "{err}");
    }

    #[test]
    fn mismatched_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = pair("one");
        let (_, other_key) = pair("two");
        let (c, k) = write(dir.path(), &cert, &other_key);
        let err = CertReloader::load(&c, &k, provider()).unwrap_err();
        assert!(matches!(err, TlsError::Unusable { .. }), "{err}");
    }

    #[test]
    fn reload_swaps_good_pairs_and_keeps_the_old_one_on_bad_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let (cert1, key1) = pair("one");
        let (c, k) = write(dir.path(), &cert1, &key1);
        let r = CertReloader::load(&c, &k, provider()).unwrap();
        let first = r.current().cert[0].clone();
        assert!(matches!(r.reload_if_changed(), ReloadOutcome::Unchanged));

        // A certificate whose key has not been written yet: refused, old pair kept.
        let (cert2, key2) = pair("two");
        std::fs::write(&c, &cert2).unwrap();
        assert!(matches!(r.reload_if_changed(), ReloadOutcome::Rejected(_)));
        assert_eq!(r.current().cert[0], first);
        // The same bad pair is not reported again.
        assert!(matches!(r.reload_if_changed(), ReloadOutcome::Unchanged));

        std::fs::write(&k, &key2).unwrap();
        assert!(matches!(r.reload_if_changed(), ReloadOutcome::Reloaded));
        assert_ne!(r.current().cert[0], first);

        // Garbage: refused, the second pair stays.
        let second = r.current().cert[0].clone();
        std::fs::write(&k, "garbage").unwrap();
        assert!(matches!(r.reload_if_changed(), ReloadOutcome::Rejected(_)));
        assert_eq!(r.current().cert[0], second);

        // A missing file is reported once and the pair kept.
        std::fs::remove_file(&k).unwrap();
        assert!(matches!(r.reload_if_changed(), ReloadOutcome::Rejected(_)));
        assert!(matches!(r.reload_if_changed(), ReloadOutcome::Unchanged));
        assert_eq!(r.current().cert[0], second);
    }
}
