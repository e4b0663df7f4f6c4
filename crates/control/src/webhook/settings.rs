//! The webhook server's settings: where it listens, which certificate it serves and how
//! it injects.

use ferry_inject::InjectConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default address of the HTTPS webhook listener (Istio's injector port).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:15017";
/// Default address of the plain-HTTP metrics listener (Istio's control-plane metrics port).
pub const DEFAULT_METRICS_LISTEN: &str = "0.0.0.0:15014";

/// Everything [`crate::webhook::WebhookServer::bind`] needs.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Address of the HTTPS listener; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Address of the plain-HTTP `/metrics` listener; `None` serves metrics only on HTTPS.
    pub metrics_listen: Option<SocketAddr>,
    /// PEM file with the serving certificate chain, leaf first.
    pub tls_cert: PathBuf,
    /// PEM file with the private key of the leaf certificate.
    pub tls_key: PathBuf,
    /// How often the certificate files are checked for changes.
    pub cert_poll_interval: Duration,
    /// How long open connections may take to finish after shutdown starts.
    pub shutdown_grace: Duration,
    /// How long a client may take to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// The mesh settings passed to the injection engine.
    pub inject: InjectConfig,
}

impl WebhookSettings {
    /// Settings with the default timings, for the given listener and certificate files.
    pub fn new(
        listen: SocketAddr,
        tls_cert: impl Into<PathBuf>,
        tls_key: impl Into<PathBuf>,
    ) -> Self {
        Self {
            listen,
            metrics_listen: None,
            tls_cert: tls_cert.into(),
            tls_key: tls_key.into(),
            cert_poll_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            inject: InjectConfig::default(),
        }
    }
}
