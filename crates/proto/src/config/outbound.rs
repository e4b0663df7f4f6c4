//! Outbound routing: for each host:port the proxy can reach, the ordered rules of the
//! VirtualService bound to that host (first match wins), or the default route to the
//! service's own cluster. Destinations are resolved to fully qualified hosts and cluster
//! names by the control plane; match conditions and per-rule policies keep Istio's types.

use ferry_model::Duration;
use ferry_model::istio::virtual_service::{
    CorsPolicy, Headers, HttpDirectResponse, HttpFaultInjection, HttpMatchRequest, HttpRedirect,
    HttpRetry, HttpRewrite, L4MatchAttributes, TlsMatchAttributes,
};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

use crate::protocol::Protocol;

/// One outbound host:port: a service port, or one StatefulSet pod's name on that port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundPort {
    /// Fully qualified host (`redis.default.svc.cluster.local`,
    /// `redis-0.redis.default.svc.cluster.local`).
    pub host: String,
    /// Service port.
    pub port: u16,
    /// Declared protocol of the port.
    pub protocol: Protocol,
    /// Addresses a connection must be dialled to for these routes to apply: the cluster IP,
    /// or the pod IP of a per-pod host (which takes precedence over its headless service's
    /// entry for that IP). Empty for a headless service: its endpoints' IPs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpAddr>,
    /// The service has no cluster IP: connections go to the address the client dialled.
    #[serde(default, skip_serializing_if = "is_false")]
    pub passthrough: bool,
    /// `namespace/name` of the VirtualService whose rules these are; `None` means the default
    /// route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_service: Option<String>,
    /// HTTP rules, in order (HTTP, HTTP/2, gRPC and undeclared ports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRouteRule>,
    /// TCP rules, in order (ports that are neither HTTP nor TLS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpRouteRule>,
    /// TLS rules by SNI, in order (TLS ports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsRouteRule>,
    /// The cluster used when no VirtualService binds the host (`outbound|<port>||<host>`).
    pub default_cluster: String,
    /// RedisPolicies (`ferry.dev/v1alpha1`) in force, the first that matches a connection's
    /// subset and pod applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redis_policies: Vec<crate::config::RedisPortPolicy>,
}

/// A resolved destination: host, subset, port and the cluster that serves them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterRef {
    /// Fully qualified host.
    pub host: String,
    /// Subset name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// Destination port.
    pub port: u16,
    /// `outbound|<port>|<subset>|<host>`.
    pub cluster: String,
}

/// A weighted HTTP destination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpWeightedCluster {
    /// Where to send.
    pub destination: ClusterRef,
    /// Relative weight (a share of the sum of the rule's weights; 0 gets nothing).
    pub weight: u32,
    /// Header changes for requests sent to this destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// A weighted TCP or TLS destination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightedCluster {
    /// Where to send.
    pub destination: ClusterRef,
    /// Relative weight.
    pub weight: u32,
}

/// One mirror target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mirror {
    /// Where the copy goes.
    pub destination: ClusterRef,
    /// Share of requests mirrored, 0-100.
    pub percentage: f64,
}

/// One HTTP rule of a VirtualService, with its destinations resolved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteRule {
    /// Rule name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Match conditions, OR-ed; empty matches everything. Entries naming another port are
    /// already removed.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpMatchRequest>,
    /// Weighted destinations (empty with `redirect` or `directResponse`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<HttpWeightedCluster>,
    /// Answer with a redirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<HttpRedirect>,
    /// Answer directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<HttpDirectResponse>,
    /// Rewrite before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    /// Request timeout (off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Retry policy; absent means Istio's default policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<HttpRetry>,
    /// Fault injection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<HttpFaultInjection>,
    /// Mirrors (`mirror` with `mirrorPercentage`, and `mirrors`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
    /// CORS policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<CorsPolicy>,
    /// Header changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// One TCP rule of a VirtualService.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRouteRule {
    /// Match conditions, OR-ed; empty matches everything.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<L4MatchAttributes>,
    /// Weighted destinations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<WeightedCluster>,
}

/// One TLS (SNI) rule of a VirtualService.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRouteRule {
    /// Match conditions (SNI names), OR-ed.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<TlsMatchAttributes>,
    /// Weighted destinations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<WeightedCluster>,
}

/// What the proxy does with an address no service declares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficPolicy {
    /// Forward as dialled, plaintext, without service labels (Istio's `PassthroughCluster`).
    #[default]
    AllowAny,
    /// Refuse (Istio's `BlackHoleCluster`).
    RegistryOnly,
}

impl OutboundTrafficPolicy {
    /// Whether this is the default (for skipping it when serialising).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// `outbound|<port>|<subset>|<host>`, Istio's cluster name.
pub fn cluster_name(port: u16, subset: Option<&str>, host: &str) -> String {
    format!("outbound|{port}|{}|{host}", subset.unwrap_or_default())
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}
