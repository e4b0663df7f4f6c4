//! Span records: what the data path hands to the [`Tracer`](super::Tracer).
//!
//! A [`Span`] is a finished span (ids, name, kind, times, attributes). [`HttpSpan`] fills one for
//! an HTTP/gRPC request with Istio's tag names (as Envoy reports them) and the OpenTelemetry
//! semantic-convention names side by side; [`RedisSpan`] fills one for a Redis command (command
//! name and argument count only: never keys or values).

use super::context::{SpanId, TraceContext, TraceId};
use std::borrow::Cow;
use std::time::{Duration, SystemTime};

/// Whether the span is the client (outbound) or server (inbound) side of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// The outbound side: this proxy's client sidecar role.
    Client,
    /// The inbound side: this proxy's server sidecar role.
    Server,
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    /// A string.
    Str(Cow<'static, str>),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
}

impl AttrValue {
    /// The value as Zipkin's string tag.
    pub fn to_tag(&self) -> String {
        match self {
            AttrValue::Str(s) => s.to_string(),
            AttrValue::Int(i) => i.to_string(),
            AttrValue::Bool(b) => b.to_string(),
        }
    }
}

impl From<&'static str> for AttrValue {
    fn from(s: &'static str) -> Self {
        AttrValue::Str(Cow::Borrowed(s))
    }
}
impl From<String> for AttrValue {
    fn from(s: String) -> Self {
        AttrValue::Str(Cow::Owned(s))
    }
}
impl From<i64> for AttrValue {
    fn from(i: i64) -> Self {
        AttrValue::Int(i)
    }
}
impl From<bool> for AttrValue {
    fn from(b: bool) -> Self {
        AttrValue::Bool(b)
    }
}

/// A finished span.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    /// The trace.
    pub trace_id: TraceId,
    /// This span.
    pub span_id: SpanId,
    /// Its parent, if any.
    pub parent_span_id: Option<SpanId>,
    /// Operation name (`<host>:<port>/<path>` for HTTP, per Istio).
    pub name: String,
    /// Client or server.
    pub kind: SpanKind,
    /// Start time.
    pub start: SystemTime,
    /// End time.
    pub end: SystemTime,
    /// Attributes (tags), in insertion order (custom tags have owned names).
    pub attributes: Vec<(Cow<'static, str>, AttrValue)>,
    /// The call failed (Envoy's `error` tag; OTLP status ERROR).
    pub error: bool,
    /// B3 debug was requested.
    pub debug: bool,
}

impl Span {
    /// A span for `ctx` (its `span_id` and `parent_span_id`) with no attributes yet.
    pub fn new(ctx: &TraceContext, name: String, kind: SpanKind, start: SystemTime) -> Self {
        Span {
            trace_id: ctx.trace_id,
            span_id: ctx.span_id,
            parent_span_id: ctx.parent_span_id,
            name,
            kind,
            start,
            end: start,
            attributes: Vec::new(),
            error: false,
            debug: ctx.debug,
        }
    }
    /// Adds an attribute.
    pub fn attr(&mut self, key: &'static str, value: impl Into<AttrValue>) -> &mut Self {
        self.attributes.push((Cow::Borrowed(key), value.into()));
        self
    }
    /// Sets attribute `key` (a custom tag): replaces its value when the span has it, else adds
    /// it.
    pub fn set(&mut self, key: Cow<'static, str>, value: impl Into<AttrValue>) -> &mut Self {
        let value = value.into();
        match self.attributes.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.attributes.push((key, value)),
        }
        self
    }
    /// The value of attribute `key`, if set.
    pub fn get(&self, key: &str) -> Option<&AttrValue> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
    /// Duration (zero if the clock went backwards).
    pub fn duration(&self) -> Duration {
        self.end.duration_since(self.start).unwrap_or_default()
    }
}

/// Istio's operation name: `<host>:<port>/<path>` (the query string is left out).
pub fn operation_name(host: &str, port: u16, path: &str) -> String {
    let path = path.split('?').next().unwrap_or("");
    let path = path.strip_prefix('/').unwrap_or(path);
    format!("{host}:{port}/{path}")
}

/// Who this proxy is: the identity tags on every span.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyIdentity {
    /// Envoy's `node_id` (Istio: `sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`).
    pub node_id: String,
    /// `istio.mesh_id`.
    pub mesh_id: String,
    /// `istio.cluster_id`.
    pub cluster_id: String,
    /// `istio.namespace`.
    pub namespace: String,
    /// `istio.canonical_service`.
    pub canonical_service: String,
    /// `istio.canonical_revision`.
    pub canonical_revision: String,
    /// The workload (Deployment/StatefulSet) name.
    pub workload: String,
    /// The pod name.
    pub pod: String,
}

/// The facts about one HTTP/gRPC request that its span records.
#[derive(Clone, Debug, Default)]
pub struct HttpSpan<'a> {
    /// Host (authority without port, or the service name).
    pub host: &'a str,
    /// Destination port.
    pub port: u16,
    /// Request path (with query; the span name drops it).
    pub path: &'a str,
    /// Full URL as Envoy reports it (`http://host:port/path?query`).
    pub url: &'a str,
    /// Method.
    pub method: &'a str,
    /// `HTTP/1.1`, `HTTP/2`.
    pub protocol: &'a str,
    /// Response status (0 when there was none).
    pub status: u16,
    /// Envoy response flags (`-` when none; `UF`, `UH`, `URX`...).
    pub response_flags: &'a str,
    /// The peer's address (`ip:port`).
    pub peer_address: &'a str,
    /// Envoy's upstream cluster name (`outbound|80||back.default.svc.cluster.local`).
    pub upstream_cluster: &'a str,
    /// Envoy's downstream cluster (the caller's canonical service, or `-`).
    pub downstream_cluster: &'a str,
    /// `x-request-id`.
    pub request_id: &'a str,
    /// `user-agent`, when present.
    pub user_agent: &'a str,
    /// Request body bytes.
    pub request_size: u64,
    /// Response body bytes.
    pub response_size: u64,
}

impl HttpSpan<'_> {
    /// The finished span for this request, as a child described by `ctx`.
    pub fn to_span(
        &self,
        ctx: &TraceContext,
        kind: SpanKind,
        me: &ProxyIdentity,
        start: SystemTime,
        end: SystemTime,
    ) -> Span {
        let mut s = Span::new(
            ctx,
            operation_name(self.host, self.port, self.path),
            kind,
            start,
        );
        s.end = end;
        s.error = self.status >= 500 || self.status == 0;
        let status = i64::from(self.status);
        s.attributes.reserve(32);
        // Envoy's standard tags, as in Istio's trace output.
        s.attr("node_id", me.node_id.clone())
            .attr("guid:x-request-id", self.request_id.to_string())
            .attr("http.url", self.url.to_string())
            .attr("http.method", self.method.to_string())
            .attr("http.protocol", self.protocol.to_string())
            .attr("http.status_code", status)
            .attr("downstream_cluster", self.downstream_cluster.to_string())
            .attr("user_agent", self.user_agent.to_string())
            .attr("peer.address", self.peer_address.to_string())
            .attr("request_size", self.request_size as i64)
            .attr("response_size", self.response_size as i64)
            .attr("component", "proxy")
            .attr("upstream_cluster", self.upstream_cluster.to_string())
            .attr("upstream_cluster.name", self.upstream_cluster.to_string())
            .attr("response_flags", self.response_flags.to_string());
        // Istio's custom tags.
        s.attr("istio.mesh_id", me.mesh_id.clone())
            .attr("istio.cluster_id", me.cluster_id.clone())
            .attr("istio.namespace", me.namespace.clone())
            .attr("istio.canonical_service", me.canonical_service.clone())
            .attr("istio.canonical_revision", me.canonical_revision.clone());
        // OpenTelemetry semantic conventions (HTTP, stable).
        s.attr("http.request.method", self.method.to_string())
            .attr("url.full", self.url.to_string())
            .attr(
                "url.path",
                self.path.split('?').next().unwrap_or("").to_string(),
            )
            .attr("server.address", self.host.to_string())
            .attr("server.port", i64::from(self.port))
            .attr("network.peer.address", self.peer_address.to_string())
            .attr("network.protocol.name", "http");
        if self.status != 0 {
            s.attr("http.response.status_code", status);
        }
        if s.error {
            s.attr("error", true);
            let et = if self.status == 0 {
                "response_flags"
            } else {
                "http_status"
            };
            s.attr("error.type", et);
        }
        s
    }
}

/// The facts about one Redis command that its span records. Keys and values never appear.
#[derive(Clone, Debug, Default)]
pub struct RedisSpan<'a> {
    /// Command name (`GET`, `get`...; spans name it in upper case).
    pub command: &'a str,
    /// Number of arguments after the command name.
    pub arg_count: u32,
    /// Calling workload.
    pub source_workload: &'a str,
    /// Calling pod.
    pub source_pod: &'a str,
    /// Called workload.
    pub destination_workload: &'a str,
    /// Called pod (`redis-1`).
    pub destination_pod: &'a str,
    /// Destination address (`ip:port`).
    pub peer_address: &'a str,
    /// The reply was a RESP error (or the connection failed).
    pub error: Option<&'a str>,
}

impl RedisSpan<'_> {
    /// The finished span: a new trace root (RESP carries no trace context), named
    /// `redis <COMMAND>`, with `latency = end - start`.
    pub fn to_span(
        &self,
        ctx: &TraceContext,
        kind: SpanKind,
        me: &ProxyIdentity,
        start: SystemTime,
        end: SystemTime,
    ) -> Span {
        let command = self.command.to_ascii_uppercase();
        let mut s = Span::new(ctx, format!("redis {command}"), kind, start);
        s.end = end;
        s.attributes.reserve(16);
        s.attr("node_id", me.node_id.clone())
            .attr("component", "proxy")
            .attr("istio.mesh_id", me.mesh_id.clone())
            .attr("istio.namespace", me.namespace.clone())
            .attr("istio.canonical_service", me.canonical_service.clone())
            .attr("db.system", "redis")
            .attr("db.system.name", "redis")
            .attr("db.operation.name", command)
            .attr("ferry.redis.arg_count", i64::from(self.arg_count))
            .attr("source_workload", self.source_workload.to_string())
            .attr("source_pod", self.source_pod.to_string())
            .attr(
                "destination_workload",
                self.destination_workload.to_string(),
            )
            .attr("destination_pod", self.destination_pod.to_string())
            .attr("peer.address", self.peer_address.to_string())
            .attr("network.peer.address", self.peer_address.to_string())
            .attr(
                "ferry.latency_us",
                end.duration_since(start).unwrap_or_default().as_micros() as i64,
            );
        if let Some(e) = self.error {
            s.error = true;
            // Only the error's first word (`ERR`, `WRONGTYPE`, `MOVED`): the rest may quote
            // keys.
            let prefix = e.split_whitespace().next().unwrap_or("ERR").to_string();
            s.attr("error", true).attr("error.type", prefix);
        }
        s
    }
}
