//! Proof of identity for certificate requests. A caller presents a bearer token; an
//! [`Authenticator`] turns it into the namespace and service account it proves.
//!
//! [`LocalTokens`] are the local runtime's per-pod tokens: `ferry-pod.v1.<payload>.<mac>`,
//! where the payload (base64url JSON) names namespace, service account and pod, and the MAC
//! is HMAC-SHA256 under a key only the control plane holds. They do not expire: they live as
//! long as the key (one `ferry up` run), the way a pod's projected token is bound to its pod.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// Who a token proves the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Namespace.
    pub namespace: String,
    /// Service account.
    pub service_account: String,
    /// Pod name, when the proof names one.
    pub pod: Option<String>,
}

/// Why a token proves nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token, or not one this authenticator understands.
    #[error("no usable credential: {0}")]
    Missing(String),
    /// The token is not valid.
    #[error("token rejected: {0}")]
    Rejected(String),
    /// The authenticator could not decide (API server unreachable, ...).
    #[error("cannot check the token: {0}")]
    Unavailable(String),
}

/// Turns a bearer token into the identity it proves.
#[tonic::async_trait]
pub trait Authenticator: Send + Sync {
    /// The identity `token` proves.
    async fn authenticate(&self, token: &str) -> Result<Caller, AuthError>;
    /// A short name for logs and metrics (`local-token`, `token-review`).
    fn name(&self) -> &'static str;
}

/// Tries each authenticator in turn; the first that accepts wins.
pub struct AnyOf(pub Vec<Arc<dyn Authenticator>>);

#[tonic::async_trait]
impl Authenticator for AnyOf {
    async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        let mut last = AuthError::Missing("no authenticator configured".into());
        for a in &self.0 {
            match a.authenticate(token).await {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn name(&self) -> &'static str {
        "any"
    }
}

const PREFIX: &str = "ferry-pod.v1.";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    ns: String,
    sa: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pod: String,
}

/// Per-pod tokens signed with a key the control plane holds (local mode).
#[derive(Clone)]
pub struct LocalTokens {
    key: ring::hmac::Key,
}

impl std::fmt::Debug for LocalTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalTokens")
    }
}

impl LocalTokens {
    /// Tokens under `secret` (at least 32 bytes are advised).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
        }
    }

    /// A fresh random key and the tokens under it.
    pub fn generate() -> Result<(Self, Vec<u8>), AuthError> {
        use ring::rand::SecureRandom;
        let mut secret = vec![0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| AuthError::Unavailable("no randomness for a token key".into()))?;
        Ok((Self::new(&secret), secret))
    }

    /// The key in `path`, or a new one written there (mode 0600) when the file is missing.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::read(path) {
            Ok(secret) if secret.len() >= 16 => return Ok(Self::new(&secret)),
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: a token key needs at least 16 bytes", path.display()),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let (tokens, secret) = Self::generate().map_err(std::io::Error::other)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(&secret)?;
        Ok(tokens)
    }

    /// A token proving service account `sa` of namespace `ns`, for pod `pod` (may be empty).
    pub fn issue(&self, ns: &str, sa: &str, pod: &str) -> String {
        let claims = Claims {
            ns: ns.to_string(),
            sa: sa.to_string(),
            pod: pod.to_string(),
        };
        // Serializing three strings cannot fail.
        let payload = B64.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let tag = ring::hmac::sign(&self.key, payload.as_bytes());
        format!("{PREFIX}{payload}.{}", B64.encode(tag.as_ref()))
    }

    /// The identity a token proves.
    pub fn validate(&self, token: &str) -> Result<Caller, AuthError> {
        let rest = token
            .trim()
            .strip_prefix(PREFIX)
            .ok_or_else(|| AuthError::Missing("not a Ferry pod token".into()))?;
        let (payload, tag) = rest
            .split_once('.')
            .ok_or_else(|| AuthError::Rejected("malformed pod token".into()))?;
        let tag = B64
            .decode(tag)
            .map_err(|_| AuthError::Rejected("malformed pod token signature".into()))?;
        ring::hmac::verify(&self.key, payload.as_bytes(), &tag)
            .map_err(|_| AuthError::Rejected("pod token signature does not verify".into()))?;
        let claims: Claims = B64
            .decode(payload)
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .ok_or_else(|| AuthError::Rejected("malformed pod token payload".into()))?;
        if claims.ns.is_empty() || claims.sa.is_empty() {
            return Err(AuthError::Rejected(
                "pod token names no namespace or service account".into(),
            ));
        }
        Ok(Caller {
            namespace: claims.ns,
            service_account: claims.sa,
            pod: Some(claims.pod).filter(|p| !p.is_empty()),
        })
    }
}

#[tonic::async_trait]
impl Authenticator for LocalTokens {
    async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        self.validate(token)
    }

    fn name(&self) -> &'static str {
        "local-token"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_tampering() {
        let tokens = LocalTokens::new(b"0123456789abcdef0123456789abcdef");
        let t = tokens.issue("default", "redis", "redis-0");
        assert_eq!(
            tokens.validate(&t),
            Ok(Caller {
                namespace: "default".into(),
                service_account: "redis".into(),
                pod: Some("redis-0".into()),
            })
        );
        let other = LocalTokens::new(b"another key, another control plane");
        assert!(matches!(other.validate(&t), Err(AuthError::Rejected(_))));
        // Swap the payload for another identity, keep the tag.
        let forged_payload = B64.encode(br#"{"ns":"kube-system","sa":"admin"}"#);
        let tag = t.rsplit('.').next().expect("tag");
        let forged = format!("{PREFIX}{forged_payload}.{tag}");
        assert!(matches!(
            tokens.validate(&forged),
            Err(AuthError::Rejected(_))
        ));
        let cases = [
            "",
            "eyJhbGciOi.x.y",
            "ferry-pod.v1.",
            "ferry-pod.v1.abc",
            "ferry-pod.v1.a.b",
        ];
        for c in cases {
            assert!(tokens.validate(c).is_err(), "{c:?}");
        }
    }

    #[test]
    fn key_file_is_created_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("sub/token.key");
        let a = LocalTokens::load_or_create(&path).expect("create");
        let b = LocalTokens::load_or_create(&path).expect("load");
        let t = a.issue("ns", "sa", "");
        assert_eq!(b.validate(&t).expect("same key").pod, None);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
