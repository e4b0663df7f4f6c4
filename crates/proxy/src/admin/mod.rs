//! The proxy's HTTP side doors, served on their own thread so a scrape or a config dump
//! never stalls the data path: Prometheus metrics (15090), readiness (15021), the status
//! port with merged metrics and application probes (15020), and the loopback-only admin
//! API (15000).
//!
//! - [`http`]: the hyper server shared by every door, and the routing to the doors.
//! - [`api`]: the admin API (15000), with the workload certificate on `/certs`.
//! - [`status`]: the status port (15020) and its settings from the injected environment.
//! - [`probes`]: the application's original probes and running them.
//! - [`grpc_health`]: the gRPC health check (`grpc.health.v1.Health/Check`) wire format.
//! - [`merge`]: the application's metrics scrape and merging it with the proxy's.
//! - [`client`]: the small HTTP client probes and the scrape use.
//! - [`insecure_tls`]: TLS without certificate checks, for HTTPS probes (as the kubelet does).

pub mod api;
pub mod client;
pub mod grpc_health;
pub mod http;
pub mod insecure_tls;
pub mod merge;
pub mod probes;
pub mod status;

use crate::config::Snapshot;
use crate::lifecycle::Lifecycle;
use crate::telemetry::Metrics;
use arc_swap::ArcSwap;
use status::StatusConfig;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Changes the log filter at run time (`/logging?level=debug`); returns an error message for
/// a filter it cannot apply.
pub type LogLevelSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Everything the side doors read.
pub struct AdminState {
    /// The configuration in force.
    pub config: Arc<ArcSwap<Snapshot>>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Running, draining or closed.
    pub lifecycle: Lifecycle,
    /// Set once configuration is loaded and every listener is bound.
    pub listeners_ready: AtomicBool,
    /// Run-time log level switch, when the binary installed one.
    pub set_log_level: Option<LogLevelSetter>,
    /// The log level in force, as last set (`None` when the binary did not say).
    pub log_level: Mutex<Option<String>>,
    /// When the configuration in force was loaded.
    pub loaded_at: Mutex<SystemTime>,
    /// The status port's settings: application probes and metrics scrape.
    pub status: StatusConfig,
    /// Failed scrapes of the application's metrics (`ferry_app_metrics_scrape_errors_total`).
    pub app_scrape_errors: AtomicU64,
    /// The configuration stream, when the proxy follows a control plane: not ready until
    /// the first configuration arrived.
    pub discovery: Option<crate::discovery::DiscoveryState>,
    /// The workload certificate, when the proxy has an identity (`/certs`).
    pub identity: Option<Arc<crate::identity::IdentityState>>,
}

impl AdminState {
    /// State for a proxy that has just loaded its configuration; not ready until the
    /// listeners are bound.
    pub fn new(
        config: Arc<ArcSwap<Snapshot>>,
        metrics: Arc<Metrics>,
        lifecycle: Lifecycle,
        status: StatusConfig,
    ) -> Self {
        Self {
            config,
            metrics,
            lifecycle,
            listeners_ready: false.into(),
            set_log_level: None,
            log_level: Mutex::new(None),
            loaded_at: Mutex::new(SystemTime::now()),
            status,
            app_scrape_errors: AtomicU64::new(0),
            discovery: None,
            identity: None,
        }
    }

    /// Ready to take traffic: listeners bound and not draining.
    pub fn ready(&self) -> bool {
        self.listeners_ready.load(Ordering::Acquire)
            && self.lifecycle.phase() == crate::lifecycle::Phase::Running
            && self.discovery.as_ref().is_none_or(|d| d.has_config())
    }

    /// Records that a new configuration was put in force now.
    pub fn config_loaded(&self) {
        if let Ok(mut at) = self.loaded_at.lock() {
            *at = SystemTime::now();
        }
    }

    /// When the configuration in force was loaded.
    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
            .lock()
            .map(|at| *at)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// The log level in force, as last set.
    pub fn current_log_level(&self) -> Option<String> {
        self.log_level.lock().ok().and_then(|l| l.clone())
    }
}
