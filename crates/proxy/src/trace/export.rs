//! Span export with bounded memory: the [`Tracer`] handle, its queue, and the background task
//! that batches spans and sends them to OTLP/gRPC, OTLP/HTTP (protobuf) or Zipkin JSON v2.
//!
//! The data path only ever calls [`Tracer::record`] or [`Tracer::record_later`], a `try_send`
//! into a bounded channel: when
//! the queue is full (collector slow or down) the span is dropped and
//! `ferry_tracing_spans_total{outcome="dropped"}` counts it. The exporter task gathers up to
//! [`MAX_BATCH`] spans, waiting at most [`BATCH_DELAY`] after the first (so that a low rate
//! costs one export call per delay, not one per span), and sends them with a timeout, so a
//! stalled collector costs queued memory (bounded by `max_queue`) and dropped spans, never a
//! waiting request. String tag values are cut to the provider's `maxTagLength` there, off the
//! data path. An HTTP span is handed over as its facts and built into attributes there too.
//! Tracing off is `Option<Tracer>::None`: one branch, no allocation.

use super::context::{Sampler, TraceContext};
use super::span::{AttrValue, Span, SpanKind};
use super::tags::truncate_attributes;
pub use crate::config::tracing::DEFAULT_MAX_TAG_LENGTH;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::http::{Request, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1 as otlp;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Most spans sent in one export call.
pub const MAX_BATCH: usize = 512;
/// Default queue bound (spans).
pub const DEFAULT_MAX_QUEUE: usize = 2048;
/// Longest wait for a batch to fill once its first span is queued (OpenTelemetry's batch
/// processor waits 5 s; shorter here so spans show up promptly in a small mesh).
pub const BATCH_DELAY: Duration = Duration::from_secs(1);
/// Timeout of one export call.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where spans go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    /// OTLP over gRPC (`http://collector:4317`).
    OtlpGrpc,
    /// OTLP over HTTP, protobuf body (`http://collector:4318/v1/traces`).
    OtlpHttp,
    /// Zipkin JSON v2 (`http://zipkin:9411/api/v2/spans`).
    Zipkin,
}

/// Tracing configuration of one proxy (mesh-wide default, overridden per workload by the
/// control plane).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceConfig {
    /// The provider's protocol.
    pub provider: Provider,
    /// The provider's URL (`http://` only; see the provider variants for the usual paths).
    pub endpoint: String,
    /// Percentage of new traces sampled, 0.0–100.0 (Istio's `randomSamplingPercentage`;
    /// 1.0 when absent, Istio's legacy mesh default).
    #[serde(default = "default_sampling")]
    pub sampling_percentage: f64,
    /// Whether Redis command spans are recorded.
    #[serde(default)]
    pub redis_spans: bool,
    /// Queue bound in spans; past it, spans are dropped and counted.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
}

fn default_sampling() -> f64 {
    1.0
}

fn default_max_queue() -> usize {
    DEFAULT_MAX_QUEUE
}

/// The resource every exported span is attached to (who sent it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceResource {
    /// `service.name` (Istio: `<canonical service>.<namespace>`).
    pub service_name: String,
    /// Further resource attributes (`k8s.pod.name`, `k8s.namespace.name`, ...).
    pub attributes: Vec<(String, String)>,
}

/// Labels of `ferry_tracing_spans_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct SpanOutcome {
    /// `exported` (the provider accepted it), `dropped` (the queue was full) or `failed` (its
    /// export call failed or timed out).
    pub outcome: &'static str,
}

/// The counters of a tracer. Clones share the counts; the proxy keeps one set for every tracer
/// it starts (see [`TraceMetrics::register`]).
#[derive(Clone, Debug)]
pub struct TraceMetrics {
    /// `ferry_tracing_spans_total{outcome="dropped"}`: spans dropped because the queue was full.
    pub dropped: Counter,
    /// `ferry_tracing_spans_total{outcome="exported"}`: spans the provider accepted.
    pub exported: Counter,
    /// `ferry_tracing_spans_total{outcome="failed"}`: spans lost in failed export calls.
    pub failed: Counter,
    /// `ferry_tracing_export_failures_total`: failed or timed-out export calls.
    pub export_failures: Counter,
    spans: Family<SpanOutcome, Counter>,
}

impl Default for TraceMetrics {
    fn default() -> Self {
        let spans: Family<SpanOutcome, Counter> = Family::default();
        // Every outcome is created up front, so each shows (at 0) before it first happens.
        let child = |outcome| spans.get_or_create(&SpanOutcome { outcome }).clone();
        TraceMetrics {
            dropped: child("dropped"),
            exported: child("exported"),
            failed: child("failed"),
            export_failures: Counter::default(),
            spans,
        }
    }
}

impl TraceMetrics {
    /// Registers the counters as `ferry_tracing_spans_total{outcome}` and
    /// `ferry_tracing_export_failures_total` (names without `_total`, which prometheus-client
    /// appends).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ferry_tracing_spans",
            "Finished spans by outcome: exported (accepted by the tracing provider), dropped \
             (export queue full) or failed (lost in a failed export call)",
            self.spans.clone(),
        );
        registry.register(
            "ferry_tracing_export_failures",
            "Span export calls that failed or timed out",
            self.export_failures.clone(),
        );
    }
}

/// The handle the data path holds (cheap to clone). Use `Option<Tracer>`: `None` is tracing off.
#[derive(Clone, Debug)]
pub struct Tracer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<Queued>,
    sampler: Sampler,
    redis_spans: bool,
    metrics: TraceMetrics,
}

impl Tracer {
    /// Starts the exporter task on the current tokio runtime and returns the handle and the
    /// task (it ends once every `Tracer` clone is dropped and the queue is drained). Tag
    /// values are cut at [`DEFAULT_MAX_TAG_LENGTH`] bytes.
    pub fn start(
        config: &TraceConfig,
        resource: TraceResource,
        metrics: TraceMetrics,
    ) -> (Tracer, JoinHandle<()>) {
        Self::start_limited(config, DEFAULT_MAX_TAG_LENGTH, resource, metrics)
    }

    /// [`Tracer::start`], with string tag values cut to `max_tag_length` bytes (at a
    /// character boundary) when exported: the provider's `maxTagLength`.
    pub fn start_limited(
        config: &TraceConfig,
        max_tag_length: usize,
        resource: TraceResource,
        metrics: TraceMetrics,
    ) -> (Tracer, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.max_queue.max(1));
        let exporter = Exporter::new(config, resource);
        let task = tokio::spawn(run(rx, exporter, max_tag_length, metrics.clone()));
        let tracer = Tracer {
            inner: Arc::new(Inner {
                tx,
                sampler: Sampler::new(config.sampling_percentage),
                redis_spans: config.redis_spans,
                metrics,
            }),
        };
        (tracer, task)
    }

    /// Queues a finished span for export; never waits (a full queue drops the span and counts
    /// it). Build spans only for sampled contexts: check `TraceContext::sampled` first.
    pub fn record(&self, span: Span) {
        self.queue(Queued::Built(span));
    }

    /// [`Tracer::record`] for a span that `build` makes on the exporter's thread: the data
    /// path hands over the facts and not the few dozen attribute strings they become.
    pub fn record_later(&self, build: impl FnOnce() -> Span + Send + 'static) {
        self.queue(Queued::Later(Box::new(build)));
    }

    fn queue(&self, item: Queued) {
        if self.inner.tx.try_send(item).is_err() {
            self.inner.metrics.dropped.inc();
        }
    }

    /// The sampler for traces that start here.
    pub fn sampler(&self) -> &Sampler {
        &self.inner.sampler
    }

    /// Whether Redis command spans are on.
    pub fn redis_spans(&self) -> bool {
        self.inner.redis_spans
    }

    /// The tracer's counters.
    pub fn metrics(&self) -> &TraceMetrics {
        &self.inner.metrics
    }

    /// A new root context for a Redis command span (RESP has no trace context), sampled at the
    /// configured rate; `None` when Redis spans are off or the command is not sampled.
    pub fn redis_root(&self) -> Option<TraceContext> {
        if !self.inner.redis_spans || !self.inner.sampler.sample() {
            return None;
        }
        let mut ctx = self.inner.sampler.child_of(&Default::default());
        ctx.sampled = true;
        Some(ctx)
    }
}

/// A finished span in the exporter's queue: built, or to build on the exporter's thread.
enum Queued {
    Built(Span),
    Later(Box<dyn FnOnce() -> Span + Send>),
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Queued::Built(span) => f.debug_tuple("Built").field(span).finish(),
            Queued::Later(_) => f.write_str("Later"),
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<Queued>,
    mut exporter: Exporter,
    max_tag_length: usize,
    metrics: TraceMetrics,
) {
    let mut queued = Vec::with_capacity(MAX_BATCH);
    let mut batch: Vec<Span> = Vec::with_capacity(MAX_BATCH);
    let mut open = true;
    while open {
        queued.clear();
        if rx.recv_many(&mut queued, MAX_BATCH).await == 0 {
            return;
        }
        // Let the batch fill for a while: at a low sampling rate, spans come one by one.
        let deadline = tokio::time::Instant::now() + BATCH_DELAY;
        while queued.len() < MAX_BATCH {
            let room = MAX_BATCH - queued.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut queued, room)).await {
                Ok(0) => {
                    // Every tracer handle is gone: send what is left and stop.
                    open = false;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        batch.clear();
        batch.extend(queued.drain(..).map(|q| match q {
            Queued::Built(span) => span,
            Queued::Later(build) => build(),
        }));
        for span in &mut batch {
            truncate_attributes(span, max_tag_length);
        }
        let n = batch.len() as u64;
        match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(&batch)).await {
            Ok(Ok(())) => {
                metrics.exported.inc_by(n);
            }
            Ok(Err(e)) => {
                metrics.export_failures.inc();
                metrics.failed.inc_by(n);
                tracing::debug!(error = %e, spans = n, "span export failed");
            }
            Err(_) => {
                metrics.export_failures.inc();
                metrics.failed.inc_by(n);
                tracing::debug!(spans = n, "span export timed out");
            }
        }
    }
}

/// Errors from one export call.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The endpoint is not a usable URL.
    #[error("bad endpoint {0:?}")]
    Endpoint(String),
    /// gRPC failure.
    #[error("otlp grpc: {0}")]
    Grpc(#[from] tonic::Status),
    /// HTTP transport failure.
    #[error("http: {0}")]
    Http(String),
    /// The provider answered with a non-2xx status.
    #[error("provider answered {0}")]
    Status(u16),
}

enum Exporter {
    Grpc {
        client: Option<TraceServiceClient<tonic::transport::Channel>>,
        endpoint: String,
        resource: Resource,
    },
    Http {
        client: Client<HttpConnector, Full<Bytes>>,
        endpoint: String,
        format: HttpFormat,
    },
}

enum HttpFormat {
    Otlp(Resource),
    Zipkin(String),
}

impl Exporter {
    fn new(config: &TraceConfig, resource: TraceResource) -> Self {
        let client = || {
            let mut c = HttpConnector::new();
            c.set_connect_timeout(Some(Duration::from_secs(2)));
            c.set_nodelay(true);
            Client::builder(TokioExecutor::new()).build(c)
        };
        match config.provider {
            Provider::OtlpGrpc => Exporter::Grpc {
                client: None,
                endpoint: config.endpoint.clone(),
                resource: otlp_resource(&resource),
            },
            Provider::OtlpHttp => Exporter::Http {
                client: client(),
                endpoint: config.endpoint.clone(),
                format: HttpFormat::Otlp(otlp_resource(&resource)),
            },
            Provider::Zipkin => Exporter::Http {
                client: client(),
                endpoint: config.endpoint.clone(),
                format: HttpFormat::Zipkin(resource.service_name),
            },
        }
    }

    async fn export(&mut self, spans: &[Span]) -> Result<(), ExportError> {
        match self {
            Exporter::Grpc {
                client,
                endpoint,
                resource,
            } => {
                if client.is_none() {
                    let ch = tonic::transport::Endpoint::from_shared(endpoint.clone())
                        .map_err(|_| ExportError::Endpoint(endpoint.clone()))?
                        .connect_timeout(Duration::from_secs(2))
                        .timeout(EXPORT_TIMEOUT)
                        .connect_lazy();
                    *client = Some(TraceServiceClient::new(ch));
                }
                let Some(c) = client.as_mut() else {
                    return Err(ExportError::Endpoint(endpoint.clone()));
                };
                c.export(to_otlp(resource.clone(), spans)).await?;
                Ok(())
            }
            Exporter::Http {
                client,
                endpoint,
                format,
            } => {
                let (body, ctype) = match format {
                    HttpFormat::Otlp(resource) => (
                        to_otlp(resource.clone(), spans).encode_to_vec(),
                        "application/x-protobuf",
                    ),
                    HttpFormat::Zipkin(service) => (
                        serde_json::to_vec(&to_zipkin(service, spans))
                            .map_err(|e| ExportError::Http(e.to_string()))?,
                        "application/json",
                    ),
                };
                let req = Request::post(endpoint.as_str())
                    .header(header::CONTENT_TYPE, ctype)
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|_| ExportError::Endpoint(endpoint.clone()))?;
                let resp = client
                    .request(req)
                    .await
                    .map_err(|e| ExportError::Http(e.to_string()))?;
                let status = resp.status();
                // Drain the body so the connection can be reused.
                let _ = resp.into_body().collect().await;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(ExportError::Status(status.as_u16()))
                }
            }
        }
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn otlp_resource(r: &TraceResource) -> Resource {
    let mut attributes = vec![kv(
        "service.name",
        any_value::Value::StringValue(r.service_name.clone()),
    )];
    for (k, v) in &r.attributes {
        attributes.push(kv(k, any_value::Value::StringValue(v.clone())));
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

fn unix_nanos(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The OTLP request for `spans` from `resource`.
pub fn to_otlp(resource: Resource, spans: &[Span]) -> ExportTraceServiceRequest {
    let spans = spans
        .iter()
        .map(|s| otlp::Span {
            trace_id: s.trace_id.0.to_vec(),
            span_id: s.span_id.0.to_vec(),
            parent_span_id: s.parent_span_id.map(|p| p.0.to_vec()).unwrap_or_default(),
            name: s.name.clone(),
            kind: match s.kind {
                SpanKind::Client => otlp::span::SpanKind::Client as i32,
                SpanKind::Server => otlp::span::SpanKind::Server as i32,
            },
            start_time_unix_nano: unix_nanos(s.start),
            end_time_unix_nano: unix_nanos(s.end),
            attributes: s
                .attributes
                .iter()
                .map(|(k, v)| {
                    kv(
                        k,
                        match v {
                            AttrValue::Str(x) => any_value::Value::StringValue(x.to_string()),
                            AttrValue::Int(i) => any_value::Value::IntValue(*i),
                            AttrValue::Bool(b) => any_value::Value::BoolValue(*b),
                        },
                    )
                })
                .collect(),
            status: Some(otlp::Status {
                code: if s.error {
                    otlp::status::StatusCode::Error as i32
                } else {
                    otlp::status::StatusCode::Unset as i32
                },
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![otlp::ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![otlp::ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "ferry-proxy".to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A Zipkin v2 span (JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZipkinSpan {
    /// 32 hex.
    pub trace_id: String,
    /// 16 hex.
    pub id: String,
    /// 16 hex, absent for a root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// Operation name.
    pub name: String,
    /// `CLIENT` or `SERVER`.
    pub kind: String,
    /// Start, microseconds since the epoch.
    pub timestamp: u64,
    /// Microseconds.
    pub duration: u64,
    /// The sender.
    pub local_endpoint: ZipkinEndpoint,
    /// Tags (all strings).
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
    /// B3 debug.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub debug: bool,
}

/// A Zipkin endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZipkinEndpoint {
    /// The service name.
    pub service_name: String,
}

/// The Zipkin v2 JSON body for `spans`.
pub fn to_zipkin(service_name: &str, spans: &[Span]) -> Vec<ZipkinSpan> {
    spans
        .iter()
        .map(|s| ZipkinSpan {
            trace_id: s.trace_id.to_hex(),
            id: s.span_id.to_hex(),
            parent_id: s.parent_span_id.map(|p| p.to_hex()),
            name: s.name.clone(),
            kind: match s.kind {
                SpanKind::Client => "CLIENT",
                SpanKind::Server => "SERVER",
            }
            .to_string(),
            timestamp: unix_nanos(s.start) / 1000,
            duration: (s.duration().as_micros() as u64).max(1),
            local_endpoint: ZipkinEndpoint {
                service_name: service_name.to_string(),
            },
            tags: s
                .attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_tag()))
                .collect(),
            debug: s.debug,
        })
        .collect()
}
