//! Distributed tracing settings of one proxy: where its spans go and how many traces it
//! starts. The control plane compiles them from Istio's inputs (mesh config
//! `extensionProviders`/`defaultProviders.tracing`, the `Telemetry` resource, the pod's
//! `proxy.istio.io/config` annotation); `ferry proxy` may also take them from its command line.
//! Beyond where spans go: which span kinds are reported ([`SpanMode`], Istio's
//! `tracing[].match.mode`), custom tags ([`CustomTag`], Istio's `customTags`) and the longest
//! tag value exported (the provider's `maxTagLength`).

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
    /// Which span kinds this proxy reports (both by default); the other kind is not made,
    /// and its requests pass the trace context through unchanged.
    #[serde(default, skip_serializing_if = "SpanMode::is_both")]
    pub spans: SpanMode,
    /// Custom tags added to the spans (Istio's `customTags`), in tag-name order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_tags: Vec<CustomTag>,
    /// Longest tag value exported, in bytes (longer values are cut at a character
    /// boundary); 0 means the default, 256 (Istio's).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_tag_length: u32,
}

impl Tracing {
    /// The longest tag value exported, in bytes ([`DEFAULT_MAX_TAG_LENGTH`] when unset).
    pub fn max_tag_length(&self) -> usize {
        match self.max_tag_length {
            0 => DEFAULT_MAX_TAG_LENGTH,
            n => n as usize,
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Istio's default `maxTagLength` of the tracing providers.
pub const DEFAULT_MAX_TAG_LENGTH: usize = 256;

/// Which span kinds a proxy reports, or a custom tag goes on (Istio's `WorkloadMode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpanMode {
    /// Client (outbound) and server (inbound) spans.
    #[default]
    ClientAndServer,
    /// Client spans only.
    Client,
    /// Server spans only.
    Server,
}

impl SpanMode {
    /// Whether this is both kinds (the default).
    pub fn is_both(&self) -> bool {
        *self == SpanMode::ClientAndServer
    }

    /// Whether client (outbound) spans are included.
    pub fn client(self) -> bool {
        self != SpanMode::Server
    }

    /// Whether server (inbound) spans are included.
    pub fn server(self) -> bool {
        self != SpanMode::Client
    }

    /// The mode of the kinds included; `None` when neither is.
    pub fn of(client: bool, server: bool) -> Option<SpanMode> {
        match (client, server) {
            (true, true) => Some(SpanMode::ClientAndServer),
            (true, false) => Some(SpanMode::Client),
            (false, true) => Some(SpanMode::Server),
            (false, false) => None,
        }
    }
}

/// A custom tag: its name, where its value comes from, and the span kinds it goes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomTag {
    /// The tag's name.
    pub tag: String,
    /// Where its value comes from.
    pub source: TagSource,
    /// The span kinds it is added to (both by default).
    #[serde(default, skip_serializing_if = "SpanMode::is_both")]
    pub spans: SpanMode,
}

/// Where a custom tag's value comes from (Istio's `literal`, `environment`, `header`). An
/// empty value adds no tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum TagSource {
    /// A fixed value.
    Literal {
        /// The value.
        value: String,
    },
    /// An environment variable of the proxy process, read when the settings take effect.
    #[serde(rename_all = "camelCase")]
    Environment {
        /// The variable's name.
        name: String,
        /// The value when the variable is unset.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default_value: Option<String>,
    },
    /// A request header (HTTP spans only; Redis spans have no headers).
    #[serde(rename_all = "camelCase")]
    Header {
        /// The header's name.
        name: String,
        /// The value when the request has no such header.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default_value: Option<String>,
    },
}

/// Istio's legacy mesh default sampling, 1%.
pub fn default_sampling() -> f64 {
    1.0
}
