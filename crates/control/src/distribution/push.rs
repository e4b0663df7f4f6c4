//! What a push is made of: the configuration serialized once as JSON (as pieces that many
//! proxies' configurations may share), a hash of its content (a push happens only when it
//! changed), a version label, and the debounce window that turns a burst of changes into
//! one push.

use bytes::Bytes;
use ferry_proto::config::ProxyConfig;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long a stream waits after a change before recomputing, so a burst yields one push.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Hex digits of the hash carried in a version label.
const VERSION_HASH_DIGITS: usize = 12;

/// A configuration ready to send.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// `ProxyConfig` as JSON, in consecutive pieces. Serialization is deterministic (struct
    /// fields in declaration order, maps are `BTreeMap`s), so equal configurations give
    /// equal bytes. Pieces are reference-counted: proxies whose configurations share a
    /// part share its bytes.
    pub json: Vec<Bytes>,
    /// Identifies the content (lowercase hex SHA-256): of the JSON for [`render`], of the
    /// pieces' digests for sources that assemble configurations from shared parts.
    pub hash: String,
}

impl Rendered {
    /// Length of the JSON in bytes.
    pub fn len(&self) -> usize {
        self.json.iter().map(Bytes::len).sum()
    }

    /// Whether the JSON is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The JSON in one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        for piece in &self.json {
            out.extend_from_slice(piece);
        }
        out
    }
}

/// Equal JSON text and hash, however the text is cut into pieces.
impl PartialEq for Rendered {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.len() == other.len() && self.to_vec() == other.to_vec()
    }
}

impl Eq for Rendered {}

/// Serializes and hashes a configuration.
pub fn render(config: &ProxyConfig) -> Result<Rendered, serde_json::Error> {
    Ok(rendered(serde_json::to_vec(config)?))
}

/// A configuration already serialized as [`render`] would, hashed as [`render`] does.
pub fn rendered(json: Vec<u8>) -> Rendered {
    let hash = hex(&Sha256::digest(&json));
    Rendered {
        json: vec![Bytes::from(json)],
        hash,
    }
}

/// A digest of everything a proxy's configuration was compiled from (equal fingerprints,
/// equal configurations), by which a source tells a stream that nothing changed for it.
pub type Fingerprint = [u8; 32];

/// What a [`super::ConfigSource`] has for a proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// The source does not know the proxy yet: nothing to send.
    Unknown,
    /// The configuration is still the one of the fingerprint the stream holds.
    Unchanged,
    /// The configuration, and its fingerprint when the source computes them.
    Rendered {
        /// JSON and hash.
        rendered: Rendered,
        /// To hand back on the next call.
        fingerprint: Option<Fingerprint>,
    },
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hands out version labels `<counter>-<hash prefix>`; the counter grows with each
/// snapshot built by this control plane.
#[derive(Debug, Default)]
pub struct Versions {
    counter: AtomicU64,
}

impl Versions {
    /// The next version label for a configuration with `hash`.
    pub fn next(&self, hash: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let prefix = hash.get(..VERSION_HASH_DIGITS).unwrap_or(hash);
        format!("{n}-{prefix}")
    }
}

/// Whether the version label `version` (perhaps from an earlier control plane, as a
/// proxy's `held_version`) names a configuration with `hash`.
pub fn version_matches(version: &str, hash: &str) -> bool {
    match version.rsplit_once('-') {
        Some((_, prefix)) => prefix.len() == VERSION_HASH_DIGITS && hash.starts_with(prefix),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_configs_hash_equal_and_versions_name_their_hash() {
        let a = render(&ProxyConfig::default()).unwrap();
        let b = render(&ProxyConfig::default()).unwrap();
        assert_eq!(a, b);
        let mut other = ProxyConfig::default();
        other.identity.pod = "x".into();
        assert_ne!(render(&other).unwrap().hash, a.hash);
        let versions = Versions::default();
        let v1 = versions.next(&a.hash);
        let v2 = versions.next(&a.hash);
        assert_ne!(v1, v2);
        assert!(version_matches(&v1, &a.hash));
        assert!(!version_matches(&v1, &render(&other).unwrap().hash));
        for bad in ["", "-", "7", "1-abc", "1-"] {
            assert!(!version_matches(bad, &a.hash), "{bad}");
        }
    }
}
