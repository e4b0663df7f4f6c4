//! SPIFFE identities of mesh workloads: `spiffe://<trust-domain>/ns/<namespace>/sa/<account>`,
//! the one subject alternative name of every workload certificate the CA signs, and what the
//! proxies verify and report as `source_principal` / `destination_principal`.

use std::fmt;

/// A workload identity: trust domain, namespace and service account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    /// Trust domain (`cluster.local` by default).
    pub trust_domain: String,
    /// Namespace.
    pub namespace: String,
    /// Service account.
    pub service_account: String,
}

/// Why a URI is not a workload SPIFFE identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotSpiffe(pub String);

impl fmt::Display for NotSpiffe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not a workload identity (spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>)",
            self.0
        )
    }
}

impl std::error::Error for NotSpiffe {}

/// Whether `s` can be one path segment or trust domain of an identity: non-empty, no `/`,
/// no whitespace, no `%` escapes, printable ASCII.
fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'%' | b'?' | b'#'))
}

impl SpiffeId {
    /// The identity of service account `sa` in namespace `ns`, or an error when a part is
    /// empty or holds characters a URI path segment cannot.
    pub fn new(trust_domain: &str, ns: &str, sa: &str) -> Result<Self, NotSpiffe> {
        let id = Self {
            trust_domain: trust_domain.to_string(),
            namespace: ns.to_string(),
            service_account: sa.to_string(),
        };
        if [trust_domain, ns, sa].iter().all(|p| valid_part(p)) {
            Ok(id)
        } else {
            Err(NotSpiffe(id.to_string()))
        }
    }

    /// Parses `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
    pub fn parse(uri: &str) -> Result<Self, NotSpiffe> {
        let bad = || NotSpiffe(uri.to_string());
        let rest = uri.strip_prefix("spiffe://").ok_or_else(bad)?;
        let mut parts = rest.split('/');
        let (Some(td), Some("ns"), Some(ns), Some("sa"), Some(sa), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad());
        };
        Self::new(td, ns, sa).map_err(|_| bad())
    }

    /// The URI form.
    pub fn uri(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let ok = |td: &str, ns: &str, sa: &str| {
            Ok(SpiffeId {
                trust_domain: td.into(),
                namespace: ns.into(),
                service_account: sa.into(),
            })
        };
        let cases: Vec<(&str, Result<SpiffeId, ()>)> = vec![
            (
                "spiffe://cluster.local/ns/default/sa/redis",
                ok("cluster.local", "default", "redis"),
            ),
            (
                "spiffe://example.org/ns/a-b/sa/c.d",
                ok("example.org", "a-b", "c.d"),
            ),
            ("spiffe://cluster.local/ns/default/sa/", Err(())),
            ("spiffe://cluster.local/ns/default/sa/redis/x", Err(())),
            ("spiffe://cluster.local/ns//sa/redis", Err(())),
            ("spiffe://cluster.local/sa/redis/ns/default", Err(())),
            ("https://cluster.local/ns/default/sa/redis", Err(())),
            ("spiffe:///ns/default/sa/redis", Err(())),
            ("spiffe://cluster.local/ns/de fault/sa/redis", Err(())),
            ("spiffe://cluster.local/ns/default/sa/re%2Fdis", Err(())),
            ("", Err(())),
        ];
        for (uri, want) in cases {
            let got = SpiffeId::parse(uri).map_err(|_| ());
            assert_eq!(got, want, "{uri}");
            if let Ok(id) = got {
                assert_eq!(id.uri(), uri, "round trip");
            }
        }
    }

    #[test]
    fn new_refuses_what_a_path_segment_cannot_hold() {
        assert!(SpiffeId::new("cluster.local", "default", "redis").is_ok());
        assert!(SpiffeId::new("cluster.local", "a/b", "redis").is_err());
        assert!(SpiffeId::new("cluster.local", "default", "").is_err());
        assert!(SpiffeId::new("", "default", "x").is_err());
    }
}
