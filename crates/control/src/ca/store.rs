//! Where the CA's key and certificates persist, so proxies keep trusting the same root across
//! control-plane restarts: a directory with Istio's `cacerts` file names (local mode), or a
//! Kubernetes Secret (cluster mode). The same names serve user-provided CAs: a directory
//! holding `ca-cert.pem`, `ca-key.pem`, `cert-chain.pem` and `root-cert.pem` is read as is.

use super::CaError;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The signing certificate (`ca-cert.pem`).
pub const CERT_FILE: &str = "ca-cert.pem";
/// Its private key (`ca-key.pem`).
pub const KEY_FILE: &str = "ca-key.pem";
/// Certificates between the signing certificate and the root (`cert-chain.pem`).
pub const CHAIN_FILE: &str = "cert-chain.pem";
/// The root (`root-cert.pem`).
pub const ROOT_FILE: &str = "root-cert.pem";

/// The CA's key and certificates, PEM-encoded.
#[derive(Clone, PartialEq, Eq)]
pub struct CaMaterial {
    /// The signing certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
    /// Certificates between the signing certificate and the root, in order (may be empty,
    /// and may repeat the signing certificate or the root, which are then ignored).
    pub chain_pem: String,
    /// The root; equal to `cert_pem` for a self-signed root.
    pub root_pem: String,
}

impl std::fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("CaMaterial")
            .field("cert_pem", &self.cert_pem.len())
            .field("chain_pem", &self.chain_pem.len())
            .field("root_pem", &self.root_pem.len())
            .finish_non_exhaustive()
    }
}

/// Persistence of the CA material.
#[tonic::async_trait]
pub trait RootStore: Send + Sync {
    /// The stored material, `None` when nothing is stored yet.
    async fn load(&self) -> Result<Option<CaMaterial>, CaError>;
    /// Stores material made on first start.
    async fn save(&self, material: &CaMaterial) -> Result<(), CaError>;
    /// Where the material lives, for messages.
    fn describe(&self) -> String;
}

/// A directory with Istio's `cacerts` file names; the key file is written with mode 0600.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// A store in `dir` (created on save).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn err(&self, what: &Path, e: impl std::fmt::Display) -> CaError {
        CaError::Store(what.display().to_string(), e.to_string())
    }

    fn read(&self, name: &str) -> Result<Option<String>, CaError> {
        let path = self.dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(&path, e)),
        }
    }

    /// Writes `name` atomically (temporary file, then rename), with `mode`.
    fn write(&self, name: &str, text: &str, mode: u32) -> Result<(), CaError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| self.err(&tmp, e))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| self.err(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| self.err(&path, e))
    }
}

#[tonic::async_trait]
impl RootStore for FileStore {
    async fn load(&self) -> Result<Option<CaMaterial>, CaError> {
        let (Some(cert_pem), Some(key_pem)) = (self.read(CERT_FILE)?, self.read(KEY_FILE)?) else {
            return Ok(None);
        };
        let chain_pem = self.read(CHAIN_FILE)?.unwrap_or_default();
        let root_pem = self.read(ROOT_FILE)?.unwrap_or_else(|| cert_pem.clone());
        Ok(Some(CaMaterial {
            cert_pem,
            key_pem,
            chain_pem,
            root_pem,
        }))
    }

    async fn save(&self, m: &CaMaterial) -> Result<(), CaError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| self.err(&self.dir, e))?;
        // The key first: a crash never leaves a certificate without its key.
        self.write(KEY_FILE, &m.key_pem, 0o600)?;
        self.write(CHAIN_FILE, &m.chain_pem, 0o644)?;
        self.write(ROOT_FILE, &m.root_pem, 0o644)?;
        self.write(CERT_FILE, &m.cert_pem, 0o644)
    }

    fn describe(&self) -> String {
        self.dir.display().to_string()
    }
}

/// A Kubernetes Secret (Istio's `istio-ca-secret` in `istio-system` by default) with the
/// same keys as the files.
#[derive(Clone)]
pub struct SecretStore {
    api: kube::Api<Secret>,
    namespace: String,
    name: String,
}

impl SecretStore {
    /// The Secret `name` in `namespace`.
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            api: kube::Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> Option<String> {
    data.get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .filter(|s| !s.trim().is_empty())
}

#[tonic::async_trait]
impl RootStore for SecretStore {
    async fn load(&self) -> Result<Option<CaMaterial>, CaError> {
        let secret = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| CaError::Store(self.describe(), e.to_string()))?;
        let Some(data) = secret.and_then(|s| s.data) else {
            return Ok(None);
        };
        let (Some(cert_pem), Some(key_pem)) = (text(&data, CERT_FILE), text(&data, KEY_FILE))
        else {
            return Ok(None);
        };
        Ok(Some(CaMaterial {
            chain_pem: text(&data, CHAIN_FILE).unwrap_or_default(),
            root_pem: text(&data, ROOT_FILE).unwrap_or_else(|| cert_pem.clone()),
            cert_pem,
            key_pem,
        }))
    }

    async fn save(&self, m: &CaMaterial) -> Result<(), CaError> {
        let data: BTreeMap<String, ByteString> = [
            (CERT_FILE, &m.cert_pem),
            (KEY_FILE, &m.key_pem),
            (CHAIN_FILE, &m.chain_pem),
            (ROOT_FILE, &m.root_pem),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect();
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..Default::default()
            },
            type_: Some("istio.io/ca-root".into()),
            data: Some(data),
            ..Default::default()
        };
        // Create only: two control planes starting at once must not overwrite each other's
        // root; the loser reloads the winner's.
        self.api
            .create(&kube::api::PostParams::default(), &secret)
            .await
            .map(|_| ())
            .map_err(|e| CaError::Store(self.describe(), e.to_string()))
    }

    fn describe(&self) -> String {
        format!("Secret {}/{}", self.namespace, self.name)
    }
}
