//! Telemetry: Istio's metric labels, the metrics registry and process metrics.

pub mod labels;
pub mod metrics;
pub mod process;

pub use metrics::Metrics;
