//! The webhook's own Prometheus metrics (`ferry_webhook_*`), encoded in the OpenMetrics
//! text format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// `Content-Type` of [`WebhookMetrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Label set of `ferry_webhook_skips_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkipLabels {
    /// Why the pod was not injected (`SkipReason::metric_label`).
    pub reason: &'static str,
}

/// Label set of `ferry_webhook_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// What went wrong: `bad_request`, `unsupported_media_type`, `body_too_large`, ...
    pub kind: &'static str,
}

/// The webhook's counters and latency histogram, and the registry that exports them.
#[derive(Debug)]
pub struct WebhookMetrics {
    registry: Registry,
    /// Injection requests received (`POST /inject...`).
    pub requests: Counter,
    /// Reviews answered with a sidecar patch.
    pub injections: Counter,
    /// Reviews allowed without a patch, by reason.
    pub skips: Family<SkipLabels, Counter>,
    /// Reviews refused (`allowed: false`).
    pub denials: Counter,
    /// Requests or connections that failed, by kind.
    pub errors: Family<ErrorLabels, Counter>,
    /// Time from a request's arrival to its response, for injection requests.
    pub request_duration: Histogram,
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WebhookMetrics {
    /// Creates the metrics, registered under their `ferry_webhook_` names.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Counter::default();
        let injections = Counter::default();
        let skips = Family::<SkipLabels, Counter>::default();
        let denials = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        // 50 µs .. ~1.6 s: the interesting range is well below a millisecond.
        let request_duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "ferry_webhook_requests",
            "Injection requests received",
            requests.clone(),
        );
        registry.register(
            "ferry_webhook_injections",
            "Pods injected with the sidecar",
            injections.clone(),
        );
        registry.register(
            "ferry_webhook_skips",
            "Pods allowed without injection, by reason",
            skips.clone(),
        );
        registry.register(
            "ferry_webhook_denials",
            "Pods refused by the injector",
            denials.clone(),
        );
        registry.register(
            "ferry_webhook_errors",
            "Requests and connections that failed, by kind",
            errors.clone(),
        );
        registry.register_with_unit(
            "ferry_webhook_request_duration",
            "Time to answer an injection request",
            Unit::Seconds,
            request_duration.clone(),
        );
        Self {
            registry,
            requests,
            injections,
            skips,
            denials,
            errors,
            request_duration,
        }
    }

    /// Counts one error of the given kind.
    pub fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&ErrorLabels { kind }).inc();
    }

    /// Counts one skipped pod with the given reason label.
    pub fn skip(&self, reason: &'static str) {
        self.skips.get_or_create(&SkipLabels { reason }).inc();
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error would only leave the output short.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::warn!("encoding metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_scheme() {
        let m = WebhookMetrics::new();
        m.requests.inc();
        m.injections.inc();
        m.skip("host_network");
        m.denials.inc();
        m.error("bad_request");
        m.request_duration.observe(0.0002);
        let text = m.encode();
        for needle in [
            "ferry_webhook_requests_total 1",
            "ferry_webhook_injections_total 1",
            "ferry_webhook_skips_total{reason=\"host_network\"} 1",
            "ferry_webhook_denials_total 1",
            "ferry_webhook_errors_total{kind=\"bad_request\"} 1",
            "ferry_webhook_request_duration_seconds_count 1",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }
}
