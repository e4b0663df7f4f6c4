//! Who calls the TLS port (15012): a proxy proves its identity with a mesh client
//! certificate (its workload certificate, which the TLS layer verified against the mesh
//! roots) or with the bearer token it also shows the CA (a Kubernetes service-account token
//! reviewed by TokenReview, or the per-pod token of `ferry up`) in the `authorization`
//! metadata. [`CallerAuth`] turns either into a [`Proven`] identity; the configuration
//! stream then serves only that identity's configuration (see
//! `crate::distribution::server`).
//!
//! The TLS server ([`super::SecureServer`]) puts its [`CallerAuth`] into every request's
//! extensions, so services on that port find it there; a request without one did not come
//! through the TLS port.

use super::authn::{AuthError, Authenticator};
use super::server::spiffe_of;
use ferry_proto::config::SpiffeId;
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use tonic::Status;
use tonic::metadata::MetadataMap;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// What proved a caller's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// A mesh client certificate, verified by the TLS layer.
    Certificate,
    /// A bearer token, accepted by the named authenticator.
    Token(&'static str),
}

impl std::fmt::Display for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Proof::Certificate => f.write_str("client certificate"),
            Proof::Token(by) => write!(f, "token ({by})"),
        }
    }
}

/// A caller whose identity is proven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    /// The identity: trust domain, namespace, service account.
    pub id: SpiffeId,
    /// The pod the proof names, when it names one (the per-pod tokens of `ferry up` do).
    pub pod: Option<String>,
    /// How it was proven.
    pub proof: Proof,
}

/// Why a caller proved nothing: the gRPC status to answer and a short reason for metrics.
#[derive(Debug)]
pub struct Unproven {
    /// `Unauthenticated`, or `Unavailable` when the authenticator could not decide.
    pub status: Status,
    /// `no-credential`, `client-certificate`, `token`, `authenticator-unavailable`.
    pub reason: &'static str,
}

/// How callers of the TLS port prove who they are. Cheap to clone.
#[derive(Clone)]
pub struct CallerAuth {
    trust_domain: String,
    tokens: Option<Arc<dyn Authenticator>>,
}

impl std::fmt::Debug for CallerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerAuth")
            .field("trust_domain", &self.trust_domain)
            .field("tokens", &self.tokens.as_ref().map(|t| t.name()))
            .finish()
    }
}

/// The bearer token of `metadata` (`authorization: Bearer <token>`, or the bare token).
pub fn bearer(metadata: &MetadataMap) -> Option<&str> {
    metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim())
        .filter(|t| !t.is_empty())
}

/// The verified client certificate chain of a request that came over TLS, if it sent one.
pub fn peer_certs(extensions: &tonic::Extensions) -> Option<Arc<Vec<CertificateDer<'static>>>> {
    extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.peer_certs())
}

/// Whether a request came over TLS.
pub fn over_tls(extensions: &tonic::Extensions) -> bool {
    extensions.get::<TlsConnectInfo<TcpConnectInfo>>().is_some()
}

impl CallerAuth {
    /// Mesh client certificates of `trust_domain`, and bearer tokens when `tokens` is given.
    pub fn new(trust_domain: &str, tokens: Option<Arc<dyn Authenticator>>) -> Self {
        Self {
            trust_domain: trust_domain.to_string(),
            tokens,
        }
    }

    /// The trust domain identities must belong to.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Whether bearer tokens are checked (else only client certificates prove anything).
    pub fn checks_tokens(&self) -> bool {
        self.tokens.is_some()
    }

    /// The identity a caller proves: its client certificate first (verified against the
    /// mesh roots by the TLS layer; it must hold exactly one SPIFFE identity of this trust
    /// domain), else its bearer token.
    pub async fn prove(
        &self,
        metadata: &MetadataMap,
        certs: Option<&[CertificateDer<'static>]>,
    ) -> Result<Proven, Unproven> {
        if let Some(leaf) = certs.and_then(|c| c.first()) {
            return match spiffe_of(leaf) {
                Some(id) if id.trust_domain == self.trust_domain => Ok(Proven {
                    id,
                    pod: None,
                    proof: Proof::Certificate,
                }),
                _ => Err(Unproven {
                    status: Status::unauthenticated(format!(
                        "the client certificate holds no identity of trust domain {}",
                        self.trust_domain
                    )),
                    reason: "client-certificate",
                }),
            };
        }
        let Some(token) = bearer(metadata) else {
            return Err(Unproven {
                status: Status::unauthenticated(
                    "no credential: present the workload certificate, or send `authorization: Bearer <token>` (the service-account token the CA takes)",
                ),
                reason: "no-credential",
            });
        };
        let Some(tokens) = &self.tokens else {
            return Err(Unproven {
                status: Status::unauthenticated(
                    "this port checks no tokens: present the workload certificate the CA issued",
                ),
                reason: "token",
            });
        };
        match tokens.authenticate(token).await {
            Ok(caller) => SpiffeId::new(
                &self.trust_domain,
                &caller.namespace,
                &caller.service_account,
            )
            .map(|id| Proven {
                id,
                pod: caller.pod,
                proof: Proof::Token(tokens.name()),
            })
            .map_err(|e| Unproven {
                status: Status::unauthenticated(format!("the token's identity: {e}")),
                reason: "token",
            }),
            Err(AuthError::Unavailable(e)) => Err(Unproven {
                status: Status::unavailable(format!("cannot check the token now: {e}")),
                reason: "authenticator-unavailable",
            }),
            Err(e) => Err(Unproven {
                status: Status::unauthenticated(e.to_string()),
                reason: "token",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::LocalTokens;

    fn metadata(auth: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(a) = auth {
            m.insert("authorization", a.parse().expect("ascii"));
        }
        m
    }

    #[tokio::test]
    async fn tokens_prove_an_identity_and_everything_else_is_refused() {
        let tokens = LocalTokens::new(b"0123456789abcdef0123456789abcdef");
        let good = tokens.issue("default", "redis", "redis-0");
        let forged = LocalTokens::new(b"another key, another control plane")
            .issue("default", "redis", "redis-0");
        let with = CallerAuth::new("cluster.local", Some(Arc::new(tokens)));
        let without = CallerAuth::new("cluster.local", None);
        // (what, auth, authorization, Ok(identity, pod) or Err(reason))
        let bearer_good = format!("Bearer {good}");
        let bearer_forged = format!("Bearer {forged}");
        type Want = Result<(&'static str, Option<&'static str>), &'static str>;
        let cases: [(&str, &CallerAuth, Option<&str>, Want); 6] = [
            (
                "a valid token",
                &with,
                Some(&bearer_good),
                Ok((
                    "spiffe://cluster.local/ns/default/sa/redis",
                    Some("redis-0"),
                )),
            ),
            (
                "a bare token",
                &with,
                Some(&good),
                Ok((
                    "spiffe://cluster.local/ns/default/sa/redis",
                    Some("redis-0"),
                )),
            ),
            ("a forged token", &with, Some(&bearer_forged), Err("token")),
            ("nothing", &with, None, Err("no-credential")),
            (
                "an empty token",
                &with,
                Some("Bearer "),
                Err("no-credential"),
            ),
            (
                "a token where none are checked",
                &without,
                Some(&bearer_good),
                Err("token"),
            ),
        ];
        for (what, auth, header, want) in cases {
            let got = auth.prove(&metadata(header), None).await;
            match (got, want) {
                (Ok(p), Ok((id, pod))) => {
                    assert_eq!(p.id.uri(), id, "{what}");
                    assert_eq!(p.pod.as_deref(), pod, "{what}");
                    assert_eq!(p.proof, Proof::Token("local-token"), "{what}");
                }
                (Err(e), Err(reason)) => {
                    assert_eq!(e.reason, reason, "{what}: {}", e.status.message());
                    assert_eq!(e.status.code(), tonic::Code::Unauthenticated, "{what}");
                }
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
    }
}
