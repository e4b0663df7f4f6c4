//! The proxy's metrics: Istio's standard TCP and HTTP metrics, Ferry's Redis metrics, the
//! tracer's span counters, and process metrics, in one registry. The data path resolves label sets once per
//! connection and then only bumps atomics; encoding happens on the admin thread.

use super::labels::{HttpLabels, Peers, RedisLabels, TcpLabels, Value};
use crate::trace::TraceMetrics;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// Istio's default buckets for durations (ms) and sizes (bytes).
pub const ISTIO_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Buckets of Redis command latency in milliseconds: Redis answers in microseconds.
pub const REDIS_BUCKETS: [f64; 16] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
    30000.0,
];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn istio_histogram() -> Histogram {
    Histogram::new(ISTIO_BUCKETS)
}

fn redis_histogram() -> Histogram {
    Histogram::new(REDIS_BUCKETS)
}

/// Every metric the proxy exports.
pub struct Metrics {
    registry: Registry,
    tcp_opened: Family<TcpLabels, Counter>,
    tcp_closed: Family<TcpLabels, Counter>,
    tcp_sent: Family<TcpLabels, Counter>,
    tcp_received: Family<TcpLabels, Counter>,
    requests: Family<HttpLabels, Counter>,
    request_duration: HistogramFamily<HttpLabels>,
    request_bytes: HistogramFamily<HttpLabels>,
    response_bytes: HistogramFamily<HttpLabels>,
    redis_commands: Family<RedisLabels, Counter>,
    redis_duration: HistogramFamily<RedisLabels>,
    redis_fallbacks: Family<TcpLabels, Counter>,
    /// `ferry_redis_faults_total`: commands a RedisPolicy aborted, delayed or timed out
    /// (`outcome` holds `abort`, `delay` or `timeout`).
    pub redis_faults: Family<RedisLabels, Counter>,
    /// Certificate and mTLS metrics.
    pub identity: IdentityMetrics,
    /// The tracer's counters (`ferry_tracing_spans_total{outcome}`,
    /// `ferry_tracing_export_failures_total`): hand clones to every tracer the proxy starts.
    pub tracing: TraceMetrics,
}

/// Labels of certificate renewals.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `success` or `failure`.
    pub outcome: &'static str,
}

/// Labels of connections refused by mTLS policy.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct RefusalLabels {
    /// `plaintext` (STRICT port), `handshake`, `no_certificate`.
    pub reason: &'static str,
}

/// The proxy's certificate and mTLS metrics (`ferry_` prefix).
#[derive(Debug, Clone, Default)]
pub struct IdentityMetrics {
    /// End of validity of the certificate in force (Unix seconds, 0 without one).
    pub cert_expiry: Gauge,
    /// When the next renewal is planned (Unix seconds).
    pub next_renewal: Gauge,
    /// Renewals by outcome.
    pub renewals: Family<OutcomeLabels, Counter>,
    /// Root certificates trusted for peers (two during a root rollover).
    pub trusted_roots: Gauge,
    /// Inbound or outbound connections refused by mTLS, by reason.
    pub refused: Family<RefusalLabels, Counter>,
}

impl IdentityMetrics {
    /// Counts a renewal.
    pub fn renewal(&self, ok: bool) {
        let outcome = if ok { "success" } else { "failure" };
        self.renewals
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts a refused connection.
    pub fn refuse(&self, reason: &'static str) {
        self.refused.get_or_create(&RefusalLabels { reason }).inc();
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The counters of one TCP connection, resolved once.
#[derive(Debug, Clone)]
pub struct TcpHandles {
    /// `istio_tcp_connections_opened_total`.
    pub opened: Counter,
    /// `istio_tcp_connections_closed_total`.
    pub closed: Counter,
    /// `istio_tcp_sent_bytes_total` (to the downstream).
    pub sent: Counter,
    /// `istio_tcp_received_bytes_total` (from the downstream).
    pub received: Counter,
}

impl Metrics {
    /// An empty registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let tcp_opened = Family::default();
        let tcp_closed = Family::default();
        let tcp_sent = Family::default();
        let tcp_received = Family::default();
        let requests = Family::default();
        let request_duration: HistogramFamily<HttpLabels> =
            Family::new_with_constructor(istio_histogram);
        let request_bytes: HistogramFamily<HttpLabels> =
            Family::new_with_constructor(istio_histogram);
        let response_bytes: HistogramFamily<HttpLabels> =
            Family::new_with_constructor(istio_histogram);
        let redis_commands = Family::default();
        let redis_duration: HistogramFamily<RedisLabels> =
            Family::new_with_constructor(redis_histogram);
        let redis_fallbacks = Family::default();
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            tcp_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            tcp_closed.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the downstream on TCP connections",
            tcp_sent.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from the downstream on TCP connections",
            tcp_received.clone(),
        );
        registry.register("istio_requests", "HTTP and gRPC requests", requests.clone());
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds",
            request_duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body sizes in bytes",
            request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body sizes in bytes",
            response_bytes.clone(),
        );
        registry.register(
            "ferry_redis_commands",
            "Redis commands by command name and outcome",
            redis_commands.clone(),
        );
        registry.register(
            "ferry_redis_command_duration_milliseconds",
            "Redis command latency (first request byte to last reply byte) in milliseconds",
            redis_duration.clone(),
        );
        registry.register(
            "ferry_redis_opaque_fallbacks",
            "Redis connections whose traffic could not be parsed and was forwarded opaquely",
            redis_fallbacks.clone(),
        );
        let redis_faults = Family::default();
        registry.register(
            "ferry_redis_faults",
            "Redis commands a RedisPolicy aborted, delayed or timed out, by command",
            redis_faults.clone(),
        );
        let identity = IdentityMetrics::default();
        registry.register(
            "ferry_identity_cert_expiry_timestamp_seconds",
            "End of validity of the workload certificate in force (Unix time)",
            identity.cert_expiry.clone(),
        );
        registry.register(
            "ferry_identity_cert_next_renewal_timestamp_seconds",
            "When the next certificate renewal is planned (Unix time)",
            identity.next_renewal.clone(),
        );
        registry.register(
            "ferry_identity_cert_renewals",
            "Certificate renewals by outcome",
            identity.renewals.clone(),
        );
        registry.register(
            "ferry_identity_trusted_roots",
            "Root certificates trusted for peers' certificates (two during a root rollover)",
            identity.trusted_roots.clone(),
        );
        registry.register(
            "ferry_mtls_refused_connections",
            "Connections refused by mutual TLS policy, by reason",
            identity.refused.clone(),
        );
        let tracing = TraceMetrics::default();
        tracing.register(&mut registry);
        Metrics {
            identity,
            tracing,
            registry,
            tcp_opened,
            tcp_closed,
            tcp_sent,
            tcp_received,
            requests,
            request_duration,
            request_bytes,
            response_bytes,
            redis_commands,
            redis_duration,
            redis_fallbacks,
            redis_faults,
        }
    }

    /// The TCP counters for one label set.
    pub fn tcp(&self, labels: &TcpLabels) -> TcpHandles {
        TcpHandles {
            opened: self.tcp_opened.get_or_create(labels).clone(),
            closed: self.tcp_closed.get_or_create(labels).clone(),
            sent: self.tcp_sent.get_or_create(labels).clone(),
            received: self.tcp_received.get_or_create(labels).clone(),
        }
    }

    /// Counts a Redis connection that fell back to opaque forwarding.
    pub fn redis_fallback(&self, labels: &TcpLabels) {
        self.redis_fallbacks.get_or_create(labels).inc();
    }

    /// Records one HTTP request.
    pub fn http_request(
        &self,
        labels: &HttpLabels,
        duration_ms: f64,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        self.requests.get_or_create(labels).inc();
        self.request_duration
            .get_or_create(labels)
            .observe(duration_ms);
        self.request_bytes
            .get_or_create(labels)
            .observe(request_bytes as f64);
        self.response_bytes
            .get_or_create(labels)
            .observe(response_bytes as f64);
    }

    /// Counter and histogram for one Redis label set.
    pub fn redis(&self, labels: &RedisLabels) -> (Counter, Histogram) {
        (
            self.redis_commands.get_or_create(labels).clone(),
            self.redis_duration.get_or_create(labels).clone(),
        )
    }

    /// The OpenMetrics text of every metric (ends with `# EOF`).
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// The Prometheus text format (0.0.4) of every metric, plus process metrics.
    pub fn encode_prometheus(&self) -> String {
        let mut out = openmetrics_to_prometheus(&self.encode_openmetrics());
        out.push_str(&super::process::encode());
        out
    }
}

/// Rewrites OpenMetrics text as Prometheus text: counters are typed under their `_total`
/// name, and `# UNIT` lines and the `# EOF` marker go away.
pub fn openmetrics_to_prometheus(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            out.push_str(&format!("# TYPE {name}_total counter\n"));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ")
            && let Some((name, help)) = rest.split_once(' ')
        {
            let is_counter = text.contains(&format!("# TYPE {name} counter"));
            let name = if is_counter {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            out.push_str(&format!("# HELP {name} {help}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Caches one connection's Redis counters per (command, outcome), so recording a command
/// costs a short linear search and two atomic updates.
#[derive(Debug)]
pub struct RedisRecorder {
    metrics: Arc<Metrics>,
    peers: Peers,
    security: Value,
    cache: Vec<(&'static str, &'static str, Counter, Histogram)>,
}

impl RedisRecorder {
    /// A recorder for one connection.
    pub fn new(metrics: Arc<Metrics>, peers: Peers, security: Value) -> Self {
        Self {
            metrics,
            peers,
            security,
            cache: Vec::new(),
        }
    }

    /// Records one completed command with its outcome (`ok`, `error`, `aborted`); the
    /// latency goes into the histogram unless it is `None` (blocking commands wait for data,
    /// not for the server).
    pub fn record(
        &mut self,
        command: &'static str,
        outcome: &'static str,
        latency_ms: Option<f64>,
    ) {
        let found = self
            .cache
            .iter()
            .position(|(c, o, _, _)| *c == command && *o == outcome);
        let i = match found {
            Some(i) => i,
            None => {
                let labels = RedisLabels {
                    peers: self.peers.clone(),
                    connection_security_policy: self.security.clone(),
                    command: Value(Arc::from(command)),
                    outcome: Value(Arc::from(outcome)),
                };
                let (counter, histogram) = self.metrics.redis(&labels);
                self.cache.push((command, outcome, counter, histogram));
                self.cache.len() - 1
            }
        };
        if let Some((_, _, counter, histogram)) = self.cache.get(i) {
            counter.inc();
            if let Some(ms) = latency_ms {
                histogram.observe(ms);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tracer's counters, fed by a real tracer: spans exported to an in-test OTLP receiver,
    /// then spans dropped and lost by a tracer whose collector accepts connections and never
    /// answers; all scraped from the Prometheus text.
    #[tokio::test]
    async fn tracer_counters_are_scraped_from_prometheus() {
        use crate::trace::{
            Provider, Sampler, Span, SpanKind, TraceConfig, TraceResource, Tracer,
            serve_otlp_receiver,
        };
        use std::time::{Duration, Instant, SystemTime};

        fn value(text: &str, series: &str) -> Option<f64> {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        }
        let metrics = Metrics::new();
        let text = metrics.encode_prometheus();
        for outcome in ["exported", "dropped", "failed"] {
            let series = format!("ferry_tracing_spans_total{{outcome=\"{outcome}\"}}");
            assert_eq!(value(&text, &series), Some(0.0), "{series} in:\n{text}");
        }
        assert!(
            text.contains("# TYPE ferry_tracing_spans_total counter"),
            "{text}"
        );
        assert_eq!(
            value(&text, "ferry_tracing_export_failures_total"),
            Some(0.0)
        );

        let config = |endpoint: String, max_queue| TraceConfig {
            provider: Provider::OtlpGrpc,
            endpoint,
            sampling_percentage: 100.0,
            redis_spans: false,
            max_queue,
        };
        let span = || {
            let ctx = Sampler::new(100.0).child_of(&Default::default());
            Span::new(&ctx, "back:80/".into(), SpanKind::Client, SystemTime::now())
        };
        let wait_for = |series: &'static str, want: f64| {
            let metrics = &metrics;
            async move {
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let got = value(&metrics.encode_prometheus(), series);
                    if got.is_some_and(|v| v >= want) || Instant::now() > deadline {
                        return got;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mut received, _server) = serve_otlp_receiver(listener, 64);
        let (tracer, _task) = Tracer::start(
            &config(format!("http://{addr}"), 64),
            TraceResource::default(),
            metrics.tracing.clone(),
        );
        tracer.record(span());
        tracer.record(span());
        for _ in 0..2 {
            tokio::time::timeout(Duration::from_secs(20), received.recv())
                .await
                .expect("spans within 20s")
                .expect("receiver open");
        }
        let exported = "ferry_tracing_spans_total{outcome=\"exported\"}";
        assert_eq!(wait_for(exported, 2.0).await, Some(2.0));
        drop(tracer);

        // A collector that accepts and never answers: a queue of 4 fills while the first
        // batch waits for its answer, so the rest are dropped.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let silent_addr = silent.local_addr().unwrap();
        let (tracer, _task) = Tracer::start(
            &config(format!("http://{silent_addr}"), 4),
            TraceResource::default(),
            metrics.tracing.clone(),
        );
        for _ in 0..600 {
            tracer.record(span());
        }
        let dropped = "ferry_tracing_spans_total{outcome=\"dropped\"}";
        let got = wait_for(dropped, 1.0).await.unwrap_or(0.0);
        assert!(got >= 600.0 - 4.0 - 512.0, "dropped {got}");
        // The queued ones are lost when the export call times out.
        let failed = "ferry_tracing_spans_total{outcome=\"failed\"}";
        let lost = wait_for(failed, 1.0).await.unwrap_or(0.0);
        assert_eq!(lost + got, 600.0, "failed {lost}, dropped {got}");
        let text = metrics.encode_prometheus();
        assert_eq!(
            value(&text, "ferry_tracing_export_failures_total"),
            Some(1.0)
        );
        assert_eq!(value(&text, exported), Some(2.0));
        drop(silent);
    }

    #[test]
    fn prometheus_text_types_counters_by_their_total_name() {
        let om = "# HELP istio_requests HTTP requests.\n# TYPE istio_requests counter\nistio_requests_total{a=\"b\"} 1\n# UNIT x ms\n# EOF\n";
        let prom = openmetrics_to_prometheus(om);
        assert_eq!(
            prom,
            "# HELP istio_requests_total HTTP requests.\n# TYPE istio_requests_total counter\nistio_requests_total{a=\"b\"} 1\n"
        );
    }
}
