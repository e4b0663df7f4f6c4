//! The tracing part of Istio's `Telemetry` resource (`telemetry.istio.io` v1, v1alpha1) and
//! of the mesh config (`extensionProviders`, `defaultProviders.tracing`,
//! `defaultConfig.tracing`) that the `istio` ConfigMap of the root namespace holds under its
//! `mesh` key. Metrics and access-logging fields are accepted and not read.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

use super::common::WorkloadSelector;

/// `spec` of a Telemetry resource.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TelemetrySpec {
    /// Workloads it applies to; none means the namespace (or the mesh, in the root
    /// namespace).
    pub selector: Option<WorkloadSelector>,
    /// Gateway API `targetRef` (not used by sidecars; kept for validation).
    #[schemars(with = "Option<serde_json::Value>")]
    pub target_ref: Option<Value>,
    /// Gateway API `targetRefs`.
    #[serde(default)]
    #[schemars(with = "Vec<serde_json::Value>")]
    pub target_refs: Vec<Value>,
    /// Tracing settings; the first entry that applies wins (Istio reads the first).
    #[serde(default)]
    pub tracing: Vec<TracingSpec>,
    /// Metrics (not read by Ferry's tracing).
    #[serde(default)]
    #[schemars(with = "Vec<serde_json::Value>")]
    pub metrics: Vec<Value>,
    /// Access logging (not read).
    #[serde(default)]
    #[schemars(with = "Vec<serde_json::Value>")]
    pub access_logging: Vec<Value>,
}

/// One `tracing` entry of a Telemetry. Every entry applies, in order, to the span kinds its
/// `match` selects (Istio's semantics); a later entry (or scope) overrides the fields it sets.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingSpec {
    /// Which spans the entry configures (`mode`: `CLIENT`, `SERVER` or `CLIENT_AND_SERVER`,
    /// the default).
    #[serde(rename = "match")]
    pub match_: Option<TracingSelector>,
    /// Providers by name (`extensionProviders[].name`); Istio uses the first.
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
    /// Percentage of requests sampled, 0.0–100.0.
    pub random_sampling_percentage: Option<f64>,
    /// Turns span reporting off for the scope (context is still propagated).
    pub disable_span_reporting: Option<bool>,
    /// Custom tags added to the spans, by tag name. When present (even empty), it replaces
    /// (does not merge with) the custom tags of the scopes and entries before it, as in
    /// Istio.
    pub custom_tags: Option<BTreeMap<String, CustomTag>>,
    /// Whether to use the request id for sampling (accepted, not read).
    pub use_request_id_for_trace_sampling: Option<bool>,
    /// Whether spans carry Istio's own tags (`istio.*`; default true in Istio; accepted, not
    /// read: Ferry always adds them).
    pub enable_istio_tags: Option<bool>,
}

impl TracingSpec {
    /// The span kinds this entry applies to (`match.mode`, `CLIENT_AND_SERVER` when unset).
    pub fn mode(&self) -> WorkloadMode {
        self.match_
            .as_ref()
            .and_then(|m| m.mode)
            .unwrap_or_default()
    }
}

/// `tracing[].match`: which spans a tracing entry configures.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingSelector {
    /// Client (outbound) spans, server (inbound) spans, or both (the default).
    pub mode: Option<WorkloadMode>,
}

/// Istio's `WorkloadMode`: the client (outbound) side, the server (inbound) side, or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadMode {
    /// Both sides (Istio's default).
    #[default]
    ClientAndServer,
    /// The client side only (outbound requests).
    Client,
    /// The server side only (inbound requests).
    Server,
}

impl WorkloadMode {
    /// Whether client (outbound) spans are selected.
    pub fn client(self) -> bool {
        self != WorkloadMode::Server
    }

    /// Whether server (inbound) spans are selected.
    pub fn server(self) -> bool {
        self != WorkloadMode::Client
    }
}

/// `tracing[].customTags[name]`: where a custom tag's value comes from. Exactly one of the
/// three must be set (checked by validation, as Istio's oneof requires).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomTag {
    /// A fixed value.
    pub literal: Option<LiteralTag>,
    /// An environment variable of the proxy.
    pub environment: Option<EnvironmentTag>,
    /// A request header (HTTP spans).
    pub header: Option<RequestHeaderTag>,
}

/// `customTags[].literal`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LiteralTag {
    /// The tag's value.
    pub value: Option<String>,
}

/// `customTags[].environment`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvironmentTag {
    /// The environment variable's name.
    pub name: Option<String>,
    /// The value when the variable is unset.
    pub default_value: Option<String>,
}

/// `customTags[].header`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestHeaderTag {
    /// The request header's name.
    pub name: Option<String>,
    /// The value when the request has no such header.
    pub default_value: Option<String>,
}

/// A provider by name.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderRef {
    /// `extensionProviders[].name`.
    pub name: Option<String>,
}

/// The parts of Istio's `MeshConfig` that tracing reads (the rest is ignored, not refused:
/// a mesh config holds many settings Ferry does not use).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    /// Named providers.
    #[serde(default)]
    pub extension_providers: Vec<ExtensionProvider>,
    /// Providers used when no Telemetry names one.
    #[serde(default)]
    pub default_providers: DefaultProviders,
    /// The default proxy settings (`tracing.sampling`, the legacy `tracing.zipkin`).
    #[serde(default)]
    pub default_config: DefaultConfig,
    /// `enableTracing` (legacy switch; `false` turns the legacy settings off).
    pub enable_tracing: Option<bool>,
}

impl MeshConfig {
    /// Parses the `mesh` key of the `istio` ConfigMap (YAML or JSON).
    pub fn parse(text: &str) -> Result<MeshConfig, String> {
        if text.trim().is_empty() {
            return Ok(MeshConfig::default());
        }
        let docs = crate::load::parse_documents("mesh", text).map_err(|e| e.message)?;
        let Some(doc) = docs.into_iter().next() else {
            return Ok(MeshConfig::default());
        };
        serde_json::from_value(doc.value).map_err(|e| e.to_string())
    }

    /// The provider named `name`.
    pub fn provider(&self, name: &str) -> Option<&ExtensionProvider> {
        self.extension_providers
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
    }
}

/// `defaultProviders`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DefaultProviders {
    /// Tracing provider names.
    #[serde(default)]
    pub tracing: Vec<String>,
}

/// `defaultConfig` (Istio's `ProxyConfig`): its tracing part.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DefaultConfig {
    /// `tracing`.
    pub tracing: Option<ProxyTracing>,
}

/// `ProxyConfig.tracing` (also read from a pod's `proxy.istio.io/config` annotation).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyTracing {
    /// Sampling percentage, 0.0–100.0.
    pub sampling: Option<f64>,
    /// The legacy Zipkin tracer.
    pub zipkin: Option<ZipkinAddress>,
    /// The legacy limit on the path tag's length (used when the provider sets no
    /// `maxTagLength`).
    pub max_path_tag_length: Option<u32>,
}

/// `tracing.zipkin`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ZipkinAddress {
    /// `host:port`.
    pub address: Option<String>,
}

/// One of `extensionProviders`: a name and one provider kind.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionProvider {
    /// The name Telemetry resources refer to.
    pub name: Option<String>,
    /// OpenTelemetry (OTLP over gRPC, or HTTP when `http` is set).
    pub opentelemetry: Option<OpenTelemetryProvider>,
    /// Zipkin (JSON v2 over HTTP).
    pub zipkin: Option<ZipkinProvider>,
}

/// `extensionProviders[].opentelemetry`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenTelemetryProvider {
    /// `otel-collector.observability.svc.cluster.local`.
    pub service: Option<String>,
    /// 4317.
    pub port: Option<u16>,
    /// OTLP over HTTP instead of gRPC.
    pub http: Option<OtlpHttp>,
    /// Longest tag value reported (Istio's default 256).
    pub max_tag_length: Option<u32>,
}

/// `opentelemetry.http`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OtlpHttp {
    /// `/v1/traces` by default.
    pub path: Option<String>,
}

/// `extensionProviders[].zipkin`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ZipkinProvider {
    /// `zipkin.istio-system.svc.cluster.local`.
    pub service: Option<String>,
    /// 9411.
    pub port: Option<u16>,
    /// `/api/v2/spans` by default.
    pub path: Option<String>,
    /// Longest tag value reported (Istio's default 256).
    pub max_tag_length: Option<u32>,
}
