//! The VirtualService spec: HTTP, TLS and TCP routing rules for a set of hosts.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Percent, PortSelector, StringMatch};
use crate::duration::Duration;

/// `spec` of a VirtualService.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualServiceSpec {
    /// Destination hosts the rules apply to; empty for a delegate VirtualService.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Gateways and sidecars (`mesh`) that apply these routes.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Ordered HTTP rules; the first match wins.
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    /// Ordered rules for unterminated TLS traffic.
    #[serde(default)]
    pub tls: Vec<TlsRoute>,
    /// Ordered rules for opaque TCP traffic.
    #[serde(default)]
    pub tcp: Vec<TcpRoute>,
    /// Namespaces the VirtualService is visible to (`.`, `*` or names).
    #[serde(default)]
    pub export_to: Vec<String>,
}

/// Where traffic goes: a service host, optionally a subset and a port.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// The service host.
    pub host: Option<String>,
    /// A subset declared in a DestinationRule.
    pub subset: Option<String>,
    /// The port, required when the service has several.
    pub port: Option<PortSelector>,
}

/// One HTTP routing rule.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    /// Name of the rule, for logs and stats.
    pub name: Option<String>,
    /// Match conditions, OR-ed.
    #[serde(rename = "match", default)]
    pub matches: Vec<HttpMatchRequest>,
    /// Weighted destinations.
    #[serde(default)]
    pub route: Vec<HttpRouteDestination>,
    /// Answer with a redirect.
    pub redirect: Option<HttpRedirect>,
    /// Answer directly.
    pub direct_response: Option<HttpDirectResponse>,
    /// Hand the rule to another VirtualService.
    pub delegate: Option<Delegate>,
    /// Rewrite the request before forwarding.
    pub rewrite: Option<HttpRewrite>,
    /// Request timeout.
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
    /// Retry policy.
    pub retries: Option<HttpRetry>,
    /// Fault injection.
    pub fault: Option<HttpFaultInjection>,
    /// Mirror traffic to this destination.
    pub mirror: Option<Destination>,
    /// Mirror traffic to several destinations.
    #[serde(default)]
    pub mirrors: Vec<HttpMirrorPolicy>,
    /// Deprecated integer mirror percentage.
    pub mirror_percent: Option<u32>,
    /// Share of traffic mirrored.
    pub mirror_percentage: Option<Percent>,
    /// CORS policy.
    pub cors_policy: Option<CorsPolicy>,
    /// Header manipulation.
    pub headers: Option<Headers>,
}

/// Conditions on an HTTP request, AND-ed.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatchRequest {
    /// Name of the match, appended to the rule name.
    pub name: Option<String>,
    /// Path match.
    pub uri: Option<StringMatch>,
    /// Scheme match.
    pub scheme: Option<StringMatch>,
    /// Method match.
    pub method: Option<StringMatch>,
    /// Authority (Host) match.
    pub authority: Option<StringMatch>,
    /// Header matches; keys lowercase.
    #[serde(default)]
    pub headers: BTreeMap<String, StringMatch>,
    /// Destination port.
    pub port: Option<u32>,
    /// Labels of the calling workload.
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways the match applies to.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Query parameter matches.
    #[serde(default)]
    pub query_params: BTreeMap<String, StringMatch>,
    /// Case-insensitive URI matching.
    pub ignore_uri_case: Option<bool>,
    /// Headers that must not match.
    #[serde(default)]
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Namespace of the calling workload.
    pub source_namespace: Option<String>,
    /// Stat prefix for the route.
    pub stat_prefix: Option<String>,
}

/// A weighted HTTP destination.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteDestination {
    /// Where to send.
    pub destination: Option<Destination>,
    /// Relative weight.
    pub weight: Option<i32>,
    /// Header manipulation for this destination.
    pub headers: Option<Headers>,
}

/// A weighted TCP or TLS destination.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteDestination {
    /// Where to send.
    pub destination: Option<Destination>,
    /// Relative weight.
    pub weight: Option<i32>,
}

/// Names the VirtualService an HTTP rule is delegated to.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delegate {
    /// Name of the delegate VirtualService.
    pub name: Option<String>,
    /// Its namespace (default: this resource's).
    pub namespace: Option<String>,
}

/// Request and response header changes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    /// Changes to the request.
    pub request: Option<HeaderOperations>,
    /// Changes to the response.
    pub response: Option<HeaderOperations>,
}

/// Header operations.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    /// Overwrite these headers.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Append these headers.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Remove these headers.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// One TLS (SNI) routing rule.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRoute {
    /// Match conditions, OR-ed.
    #[serde(rename = "match", default)]
    pub matches: Vec<TlsMatchAttributes>,
    /// Weighted destinations.
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

/// One TCP routing rule.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    /// Match conditions, OR-ed.
    #[serde(rename = "match", default)]
    pub matches: Vec<L4MatchAttributes>,
    /// Weighted destinations.
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

/// Conditions on a TLS connection.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsMatchAttributes {
    /// SNI names to match (required).
    #[serde(default)]
    pub sni_hosts: Vec<String>,
    /// Destination IPs or CIDRs.
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    /// Destination port.
    pub port: Option<u32>,
    /// Labels of the calling workload.
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways the match applies to.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Namespace of the calling workload.
    pub source_namespace: Option<String>,
}

/// Conditions on a TCP connection.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4MatchAttributes {
    /// Destination IPs or CIDRs.
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    /// Destination port.
    pub port: Option<u32>,
    /// Source IP or CIDR.
    pub source_subnet: Option<String>,
    /// Labels of the calling workload.
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways the match applies to.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Namespace of the calling workload.
    pub source_namespace: Option<String>,
}

/// An HTTP redirect answer.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRedirect {
    /// Replacement path.
    pub uri: Option<String>,
    /// Replacement authority.
    pub authority: Option<String>,
    /// Replacement port.
    pub port: Option<u32>,
    /// Derive the port from the protocol or the request.
    pub derive_port: Option<RedirectPortSelection>,
    /// Replacement scheme.
    pub scheme: Option<String>,
    /// Status code (default 301).
    pub redirect_code: Option<u32>,
}

/// How a redirect derives its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RedirectPortSelection {
    /// 80 for http, 443 for https.
    FromProtocolDefault,
    /// The port of the request.
    FromRequestPort,
}

/// A direct answer.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpDirectResponse {
    /// Status code.
    pub status: Option<u32>,
    /// Body.
    pub body: Option<HttpBody>,
}

/// A body: text or base64 bytes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBody {
    /// Text body.
    pub string: Option<String>,
    /// Base64-encoded body.
    pub bytes: Option<String>,
}

/// Request rewriting.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRewrite {
    /// Replaces the matched path prefix (or the whole path).
    pub uri: Option<String>,
    /// Replaces the authority.
    pub authority: Option<String>,
    /// Regex-based path rewriting.
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// A regex replacement.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexRewrite {
    /// RE2 pattern.
    #[serde(rename = "match")]
    pub pattern: Option<String>,
    /// Replacement, with `\1` groups.
    pub rewrite: Option<String>,
}

/// Retry policy.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    /// Retries allowed; 0 disables.
    pub attempts: Option<i32>,
    /// Timeout of each try.
    #[schemars(with = "Option<String>")]
    pub per_try_timeout: Option<Duration>,
    /// Comma-separated Envoy retry conditions or status codes.
    pub retry_on: Option<String>,
    /// Retry in other localities.
    pub retry_remote_localities: Option<bool>,
    /// Avoid previously tried hosts.
    pub retry_ignore_previous_hosts: Option<bool>,
    /// Base interval of the retry back-off.
    #[schemars(with = "Option<String>")]
    pub backoff: Option<Duration>,
}

/// CORS policy.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsPolicy {
    /// Deprecated exact origins.
    #[serde(default)]
    pub allow_origin: Vec<String>,
    /// Allowed origins.
    #[serde(default)]
    pub allow_origins: Vec<StringMatch>,
    /// Allowed methods.
    #[serde(default)]
    pub allow_methods: Vec<String>,
    /// Allowed request headers.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Headers the browser may read.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// How long preflight results may be cached.
    #[schemars(with = "Option<String>")]
    pub max_age: Option<Duration>,
    /// Whether credentials are allowed.
    pub allow_credentials: Option<bool>,
    /// What to do with preflights that match no origin.
    pub unmatched_preflights: Option<UnmatchedPreflights>,
}

/// Handling of unmatched CORS preflight requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UnmatchedPreflights {
    /// Default (forward).
    UnspecifiedUnmatchedPreflights,
    /// Forward to the upstream.
    Forward,
    /// Answer without CORS headers.
    Ignore,
}

/// Fault injection.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFaultInjection {
    /// Delay requests.
    pub delay: Option<FaultDelay>,
    /// Abort requests.
    pub abort: Option<FaultAbort>,
}

/// An injected delay.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    /// Fixed delay.
    #[schemars(with = "Option<String>")]
    pub fixed_delay: Option<Duration>,
    /// Exponential delay (not supported by Istio's proxy).
    #[schemars(with = "Option<String>")]
    pub exponential_delay: Option<Duration>,
    /// Share of requests delayed.
    pub percentage: Option<Percent>,
    /// Deprecated integer share.
    pub percent: Option<i32>,
}

/// An injected abort.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    /// HTTP status to answer with.
    pub http_status: Option<i32>,
    /// gRPC status name to answer with.
    pub grpc_status: Option<String>,
    /// HTTP/2 error to reset with.
    pub http2_error: Option<String>,
    /// Share of requests aborted.
    pub percentage: Option<Percent>,
    /// Deprecated integer share.
    pub percent: Option<i32>,
}

/// One mirror destination.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMirrorPolicy {
    /// Where to mirror.
    pub destination: Option<Destination>,
    /// Share of traffic mirrored (absent: 100).
    pub percentage: Option<Percent>,
}

/// gRPC status names, in code order (`fault.abort.grpcStatus` takes a name or a number).
pub const GRPC_STATUS_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// HTTP/2 error code names (RFC 9113, section 7), in code order (`fault.abort.http2Error`
/// takes a name or a number).
pub const HTTP2_ERROR_NAMES: [&str; 14] = [
    "NO_ERROR",
    "PROTOCOL_ERROR",
    "INTERNAL_ERROR",
    "FLOW_CONTROL_ERROR",
    "SETTINGS_TIMEOUT",
    "STREAM_CLOSED",
    "FRAME_SIZE_ERROR",
    "REFUSED_STREAM",
    "CANCEL",
    "COMPRESSION_ERROR",
    "CONNECT_ERROR",
    "ENHANCE_YOUR_CALM",
    "INADEQUATE_SECURITY",
    "HTTP_1_1_REQUIRED",
];
