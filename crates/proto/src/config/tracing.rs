//! Distributed tracing settings of one proxy: where its spans go and how many traces it
//! starts. The control plane compiles them from Istio's inputs (mesh config
//! `extensionProviders`/`defaultProviders.tracing`, the `Telemetry` resource, the pod's
//! `proxy.istio.io/config` annotation); `ferry proxy` may also take them from its command line.

use serde::{Deserialize, Serialize};

/// The protocol spans are exported with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TracingProvider {
    /// OTLP over gRPC (`http://collector:4317`).
    OtlpGrpc,
    /// OTLP over HTTP with a protobuf body (`http://collector:4318/v1/traces`).
    OtlpHttp,
    /// Zipkin JSON v2 (`http://zipkin:9411/api/v2/spans`).
    Zipkin,
}

impl TracingProvider {
    /// The provider for a name as written on a command line (`otlp-grpc`, `otlp-http`,
    /// `zipkin`; `otlp` means `otlp-grpc`).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "otlp-grpc" | "otlp" | "grpc" | "opentelemetry" => Self::OtlpGrpc,
            "otlp-http" | "http" => Self::OtlpHttp,
            "zipkin" => Self::Zipkin,
            _ => return None,
        })
    }
}

/// Tracing on for a proxy (absent: tracing off, which costs the data path one branch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tracing {
    /// The provider's protocol.
    pub provider: TracingProvider,
    /// The provider's URL (`http://host:port[/path]`).
    pub endpoint: String,
    /// Percentage of the traces that start at this proxy which are sampled (0–100; an
    /// incoming sampling decision is always honoured).
    #[serde(default = "default_sampling")]
    pub sampling_percentage: f64,
    /// Whether Redis command spans are recorded (Ferry's addition; off by default).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redis_spans: bool,
}

/// Istio's legacy mesh default sampling, 1%.
pub fn default_sampling() -> f64 {
    1.0
}
