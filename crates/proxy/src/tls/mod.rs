//! Mutual TLS between sidecars with rustls: the configurations a proxy uses as the server
//! (inbound, any mesh identity of its trust domain) and as the client (outbound, only the
//! identities the control plane lists for the destination), the ALPN values Istio's sidecars
//! use, SPIFFE identity checks, the peer metadata exchange, and the per-configuration table of
//! which destinations get mTLS.
//!
//! Mesh connections are TLS 1.3 only, with the ring provider the workspace's rustls is built
//! with (one provider in the process; switching is [`provider`]).
//!
//! - [`verify`]: the server certificate verifier (chain to the mesh roots + SPIFFE SAN in the
//!   expected set) and identity extraction.
//! - [`peer`]: the `istio-peer-exchange` metadata frames.
//! - [`policy`]: per destination, plaintext, Istio mTLS or user TLS (DestinationRule
//!   `SIMPLE`/`MUTUAL`).

pub mod peer;
pub mod policy;
pub mod verify;

use crate::identity::Certified;
use rustls::client::ResolvesClientCert;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};
use std::sync::{Arc, OnceLock};

/// ALPN for TCP metadata exchange (Istio's `istio-peer-exchange`).
pub const ALPN_PEER_EXCHANGE: &[u8] = b"istio-peer-exchange";
/// ALPN marking in-mesh traffic (Istio's `istio`).
pub const ALPN_ISTIO: &[u8] = b"istio";

/// What a client sidecar offers (Istio's `ALPNInMeshWithMxc`).
pub fn client_alpn() -> Vec<Vec<u8>> {
    vec![ALPN_PEER_EXCHANGE.to_vec(), ALPN_ISTIO.to_vec()]
}

/// What a server sidecar accepts, in preference order (Istio's `ALPNDownstreamWithMxc`,
/// plus `istio` for clients without metadata exchange).
pub fn server_alpn() -> Vec<Vec<u8>> {
    vec![
        ALPN_PEER_EXCHANGE.to_vec(),
        ALPN_ISTIO.to_vec(),
        b"h2".to_vec(),
        b"http/1.1".to_vec(),
    ]
}

/// Whether a ClientHello's ALPN value marks a mesh client (`istio`, `istio-peer-exchange`,
/// `istio-http/1.1`, `istio-h2`, ...).
pub fn is_mesh_alpn(value: &[u8]) -> bool {
    value.starts_with(b"istio")
}

/// The crypto provider of the data path (aws-lc-rs).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// Why a TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the settings.
    #[error("TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(String),
    /// A certificate or key file could not be used.
    #[error("{0}")]
    Material(String),
}

/// The inbound (server) configuration of a certificate: requires a client certificate that
/// chains to `roots` (its SPIFFE identity is checked after the handshake), TLS 1.3.
pub fn server_config(
    key: Arc<CertifiedKey>,
    roots: Arc<RootCertStore>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(FixedCert(key)));
    config.alpn_protocols = server_alpn();
    // Session tickets would let a resumed peer skip the certificate check's freshness.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The outbound (client) configuration of a certificate toward a destination whose
/// certificate must carry one of `expected` (SPIFFE URIs; empty accepts any identity that
/// chains to the roots).
pub fn client_config(cert: &Certified, expected: Arc<[String]>) -> Result<ClientConfig, TlsError> {
    let verifier = verify::SpiffeServerVerifier::new(cert.roots.clone(), expected);
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(FixedCert(cert.key.clone())));
    config.alpn_protocols = client_alpn();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// One certificate for every handshake.
#[derive(Debug)]
pub struct FixedCert(pub Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for FixedCert {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl ResolvesClientCert for FixedCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
