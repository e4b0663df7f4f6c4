//! The mesh's certificate authority (DESIGN.md point 7): a proxy generates its own key, sends
//! a certificate signing request with proof of its service account, and gets a short-lived
//! certificate whose only subject alternative name is its SPIFFE identity
//! (`spiffe://<trust-domain>/ns/<ns>/sa/<sa>`).
//!
//! - [`authority`]: the signing key and certificate (a self-signed root made on first start,
//!   or a user-provided root or intermediate with its chain) and issuance, which refuses a
//!   request for any identity but the proven one.
//! - [`store`]: where the CA's key and certificates persist ([`store::FileStore`]: Istio's
//!   `cacerts` file names in a directory; [`store::SecretStore`]: a Kubernetes Secret).
//! - [`authn`]: proof of identity ([`authn::Authenticator`]): per-pod tokens the local
//!   runtime issues ([`authn::LocalTokens`]), Kubernetes TokenReview
//!   ([`token_review::TokenReviewAuthenticator`]), or a mesh certificate still valid.
//! - [`server`]: the certificate API (`ferry.ca.v1.CertificateService`) on 15012, gRPC over
//!   TLS with a serving certificate the CA signs for itself, which can carry the
//!   configuration stream too.
//! - [`rollover`]: the CA in force, shared by all of the above ([`rollover::SharedCa`]), the
//!   trust bundle it pushes to proxies on the configuration stream, and rolling the root in
//!   three phases without breaking trust.
//! - [`caller`]: who calls that port ([`caller::CallerAuth`]): a mesh client certificate or a
//!   bearer token, which the configuration stream on 15012 requires.

pub mod authn;
pub mod authority;
pub mod caller;
pub mod rollover;
pub mod server;
pub mod store;
pub mod token_review;

pub use authn::{AuthError, Authenticator, Caller, LocalTokens};
pub use authority::{CertificateAuthority, Issued};
pub use caller::{CallerAuth, Proof, Proven};
/// Workload identities (`spiffe://<trust-domain>/ns/<ns>/sa/<sa>`), as the CA issues them.
pub use ferry_proto::config::SpiffeId;
pub use rollover::{SharedCa, TrustPush, TrustReport};
pub use server::{CaService, IssuedLog, IssuedRecord, SecureServer};
pub use store::{CaMaterial, FileStore, RootStore};

use std::time::Duration;

/// Default lifetime of a workload certificate (Istio's 24 h).
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest lifetime a workload may ask for (Istio's 90 days).
pub const MAX_CERT_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Lifetime of a self-signed root made on first start (10 years).
pub const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Default port of the certificate API (and of the TLS configuration stream).
pub const DEFAULT_PORT: u16 = 15012;

/// Why the CA cannot start or cannot sign.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The request is not a valid, self-signed PKCS#10 request.
    #[error("invalid certificate signing request: {0}")]
    BadCsr(String),
    /// The request names an identity the caller has not proven.
    #[error("the request asks for {asked}, but the caller proved {proven}")]
    IdentityMismatch {
        /// What the request's subject alternative names say.
        asked: String,
        /// What the caller proved.
        proven: String,
    },
    /// The CA's own key or certificates are unusable.
    #[error("CA material: {0}")]
    Material(String),
    /// Reading or writing the CA's files or Secret.
    #[error("CA store {0}: {1}")]
    Store(String, String),
    /// Signing failed.
    #[error("signing: {0}")]
    Signing(String),
}

/// A Kubernetes client from the environment (in-cluster, or the kubeconfig), for
/// TokenReview and the Secret store.
pub async fn kube_client() -> Result<kube::Client, CaError> {
    kube::Client::try_default()
        .await
        .map_err(|e| CaError::Store("Kubernetes client".into(), e.to_string()))
}
