//! Distributed tracing (issue 9): trace-context propagation, span records and their export.
//!
//! - [`context`]: W3C `traceparent`/`tracestate` and B3 (multi-header and single `b3`)
//!   extraction and injection, `x-request-id`, and the sampling decision ([`Sampler`]).
//! - [`span`]: finished spans, with Istio's tags and OpenTelemetry semantic conventions for HTTP
//!   requests ([`HttpSpan`]) and Redis commands ([`RedisSpan`]).
//! - [`export`]: the [`Tracer`] handle (a bounded, never-waiting queue) and the background
//!   exporter for OTLP/gRPC, OTLP/HTTP and Zipkin JSON v2.
//! - [`active`]: the switch the data path reads (one branch when off), and an HTTP
//!   request's span from its start to its end.
//! - [`tags`]: which span kinds are reported, custom tags, and the cut of long tag values.
//! - [`receiver`]: an OTLP/gRPC receiver that yields spans (for `ferry trace-collector` and
//!   tests).
//!
//! The module is named `trace` because `tracing` is the logging crate.

pub mod active;
pub mod context;
pub mod export;
pub mod receiver;
pub mod span;
pub mod tags;

pub use active::{Active, PendingHttp, TraceSwitch, start_http};
pub use context::{
    Extracted, Sampler, SpanId, TraceContext, TraceId, ensure_request_id, extract, inject,
    propagate,
};
pub use export::{Provider, TraceConfig, TraceMetrics, TraceResource, Tracer};
pub use receiver::{ReceivedSpan, serve_otlp_receiver};
pub use span::{HttpSpan, ProxyIdentity, RedisSpan, Span, SpanKind};
pub use tags::{CustomTags, KindTags, SpanModes};

#[cfg(test)]
mod tests;
