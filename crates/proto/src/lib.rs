//! What Ferry's control plane and proxies exchange.
//!
//! - [`config`]: the configuration of one proxy (its identity, the services and endpoints it
//!   can reach, data-path settings), produced by the control plane's compiler (or read from a
//!   static file) and enforced by the proxy.
//! - [`protocol`]: how service ports declare their protocol.
//! - [`discovery`]: the configuration stream between the control plane and the proxies.
//! - [`ca`]: the certificate API (`proto/ferry/ca/v1/ca.proto`) proxies get their mesh
//!   certificates from.

/// The certificate API between proxies and the control plane's CA (generated code).
pub mod ca {
    /// Version 1: `CertificateRequest`, `CertificateResponse`, `certificate_service_client`
    /// and `certificate_service_server`.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("ferry.ca.v1");
    }
}
pub mod config;
pub mod discovery;
pub mod protocol;
