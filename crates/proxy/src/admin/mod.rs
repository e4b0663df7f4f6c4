//! The proxy's HTTP side doors, served on their own thread so a scrape or a config dump
//! never stalls the data path: Prometheus metrics (15090), readiness (15021), the status
//! port with merged metrics and application probes (15020), and the loopback-only admin
//! API (15000).

pub mod http;

use crate::config::Snapshot;
use crate::lifecycle::Lifecycle;
use crate::telemetry::Metrics;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
}

impl AdminState {
    /// Ready to take traffic: listeners bound and not draining.
    pub fn ready(&self) -> bool {
        self.listeners_ready.load(Ordering::Acquire)
            && self.lifecycle.phase() == crate::lifecycle::Phase::Running
    }
}
