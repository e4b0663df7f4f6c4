//! The DestinationRule spec: policies (load balancing, connection pool, outlier detection,
//! client TLS) for traffic to one host, and its subsets.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{PortSelector, WorkloadSelector};
use crate::duration::Duration;

/// `spec` of a DestinationRule.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRuleSpec {
    /// The service host (required).
    pub host: Option<String>,
    /// Policy for all subsets and ports.
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named groups of endpoints.
    #[serde(default)]
    pub subsets: Vec<Subset>,
    /// Namespaces the rule is visible to.
    #[serde(default)]
    pub export_to: Vec<String>,
    /// Workloads (clients) the rule applies to.
    pub workload_selector: Option<WorkloadSelector>,
}

/// Traffic policy of a host, subset or port.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    /// Load balancing.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection limits.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Ejection of failing endpoints.
    pub outlier_detection: Option<OutlierDetection>,
    /// Client TLS.
    pub tls: Option<ClientTlsSettings>,
    /// Per-port overrides (which do not inherit from this level).
    #[serde(default)]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// Tunnelling through a proxy.
    pub tunnel: Option<TunnelSettings>,
    /// PROXY protocol toward the upstream.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Budget of concurrent retries.
    pub retry_budget: Option<RetryBudget>,
}

/// Traffic policy of one port.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    /// The port (required).
    pub port: Option<PortSelector>,
    /// Load balancing.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection limits.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Ejection of failing endpoints.
    pub outlier_detection: Option<OutlierDetection>,
    /// Client TLS.
    pub tls: Option<ClientTlsSettings>,
}

/// A named subset of a service's endpoints.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    /// Name (required, unique in the rule).
    pub name: Option<String>,
    /// Endpoint labels selecting the subset.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Policy overriding the rule-level one field by field.
    pub traffic_policy: Option<TrafficPolicy>,
}

/// Load balancing: a simple algorithm or consistent hashing, plus locality and warm-up settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    /// Simple algorithm.
    pub simple: Option<SimpleLb>,
    /// Consistent hashing.
    pub consistent_hash: Option<ConsistentHashLb>,
    /// Locality-aware balancing.
    pub locality_lb_setting: Option<LocalityLbSetting>,
    /// Deprecated warm-up window for new endpoints.
    #[schemars(with = "Option<String>")]
    pub warmup_duration_secs: Option<Duration>,
    /// Warm-up of new endpoints.
    pub warmup: Option<WarmupConfiguration>,
}

/// Simple load-balancing algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    /// Istio's default (least request).
    Unspecified,
    /// Deprecated name of least request.
    LeastConn,
    /// Random choice.
    Random,
    /// Forward to the original destination.
    Passthrough,
    /// Round robin.
    RoundRobin,
    /// Least outstanding requests.
    LeastRequest,
}

/// Consistent hashing on one request attribute.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHashLb {
    /// Hash on this header.
    pub http_header_name: Option<String>,
    /// Hash on this cookie (created when absent if it has a TTL).
    pub http_cookie: Option<HttpCookie>,
    /// Hash on the source IP.
    pub use_source_ip: Option<bool>,
    /// Hash on this query parameter.
    pub http_query_parameter_name: Option<String>,
    /// Ring hash.
    pub ring_hash: Option<RingHash>,
    /// Maglev.
    pub maglev: Option<MagLev>,
    /// Deprecated ring size.
    pub minimum_ring_size: Option<u64>,
}

/// A hashing cookie.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookie {
    /// Cookie name (required).
    pub name: Option<String>,
    /// Cookie path.
    pub path: Option<String>,
    /// Cookie lifetime.
    #[schemars(with = "Option<String>")]
    pub ttl: Option<Duration>,
    /// Extra cookie attributes.
    #[serde(default)]
    pub attributes: Vec<CookieAttribute>,
}

/// A cookie attribute.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieAttribute {
    /// Attribute name.
    pub name: Option<String>,
    /// Attribute value.
    pub value: Option<String>,
}

/// Ring hash settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    /// Minimum ring size (default 1024).
    pub minimum_ring_size: Option<u64>,
}

/// Maglev settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MagLev {
    /// Table size, a prime (default 65537).
    pub table_size: Option<u64>,
}

/// Locality-aware load balancing.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityLbSetting {
    /// Weighted distribution per origin locality.
    #[serde(default)]
    pub distribute: Vec<LocalityDistribute>,
    /// Region failover order.
    #[serde(default)]
    pub failover: Vec<LocalityFailover>,
    /// Labels ordering failover priority.
    #[serde(default)]
    pub failover_priority: Vec<String>,
    /// Whether locality balancing is on.
    pub enabled: Option<bool>,
}

/// Distribution of traffic from one locality.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityDistribute {
    /// Origin locality (`region/zone/subzone`, trailing `*` allowed).
    pub from: Option<String>,
    /// Weights of destination localities (sum 100).
    #[serde(default)]
    pub to: BTreeMap<String, u32>,
}

/// Failover from one region to another.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityFailover {
    /// Origin region.
    pub from: Option<String>,
    /// Region to fail over to.
    pub to: Option<String>,
}

/// Warm-up of new endpoints.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarmupConfiguration {
    /// Warm-up window (required).
    #[schemars(with = "Option<String>")]
    pub duration: Option<Duration>,
    /// Starting share of traffic, percent.
    pub minimum_percent: Option<f64>,
    /// Speed of the ramp (>= 1).
    pub aggression: Option<f64>,
}

/// Connection pool limits.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    /// TCP-level settings.
    pub tcp: Option<TcpSettings>,
    /// HTTP-level settings.
    pub http: Option<HttpSettings>,
}

/// TCP connection pool settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    /// Most connections to a host.
    pub max_connections: Option<i32>,
    /// Connect timeout.
    #[schemars(with = "Option<String>")]
    pub connect_timeout: Option<Duration>,
    /// TCP keepalive.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Longest life of a connection.
    #[schemars(with = "Option<String>")]
    pub max_connection_duration: Option<Duration>,
    /// Idle timeout of TCP connections.
    #[schemars(with = "Option<String>")]
    pub idle_timeout: Option<Duration>,
}

/// TCP keepalive settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is dead.
    pub probes: Option<u32>,
    /// Idle time before probing.
    #[schemars(with = "Option<String>")]
    pub time: Option<Duration>,
    /// Time between probes.
    #[schemars(with = "Option<String>")]
    pub interval: Option<Duration>,
}

/// HTTP connection pool settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    /// Most pending HTTP requests.
    pub http1_max_pending_requests: Option<i32>,
    /// Most active requests.
    pub http2_max_requests: Option<i32>,
    /// Most requests per connection (0 = unlimited).
    pub max_requests_per_connection: Option<i32>,
    /// Most outstanding retries.
    pub max_retries: Option<i32>,
    /// Idle timeout of pooled connections.
    #[schemars(with = "Option<String>")]
    pub idle_timeout: Option<Duration>,
    /// Whether to upgrade HTTP/1.1 to HTTP/2.
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    /// Use the client's protocol upstream.
    pub use_client_protocol: Option<bool>,
    /// Most concurrent streams per HTTP/2 connection.
    pub max_concurrent_streams: Option<i32>,
    /// HTTP/2 keepalive; accepted but not checked by Ferry.
    pub http2_keep_alive: Option<serde_json::Value>,
}

/// HTTP/2 upgrade policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    /// Mesh default.
    Default,
    /// Never upgrade.
    DoNotUpgrade,
    /// Upgrade.
    Upgrade,
}

/// Outlier detection (passive health checking).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Deprecated: consecutive gateway errors.
    pub consecutive_errors: Option<i32>,
    /// Separate local-origin failures from upstream errors.
    pub split_external_local_origin_errors: Option<bool>,
    /// Local-origin failures before ejection.
    pub consecutive_local_origin_failures: Option<u32>,
    /// 502/503/504 errors before ejection.
    pub consecutive_gateway_errors: Option<u32>,
    /// 5xx errors before ejection (0 disables).
    pub consecutive_5xx_errors: Option<u32>,
    /// Time between sweeps.
    #[schemars(with = "Option<String>")]
    pub interval: Option<Duration>,
    /// Base ejection time.
    #[schemars(with = "Option<String>")]
    pub base_ejection_time: Option<Duration>,
    /// Most hosts ejected, percent.
    pub max_ejection_percent: Option<i32>,
    /// Minimum healthy hosts for detection to stay on, percent.
    pub min_health_percent: Option<i32>,
}

/// Client-side TLS toward the upstream.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsSettings {
    /// TLS mode.
    pub mode: Option<TlsMode>,
    /// Client certificate file (MUTUAL).
    pub client_certificate: Option<String>,
    /// Private key file (MUTUAL).
    pub private_key: Option<String>,
    /// CA certificates file.
    pub ca_certificates: Option<String>,
    /// Secret holding the certificates.
    pub credential_name: Option<String>,
    /// Accepted server identities.
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// SNI to send.
    pub sni: Option<String>,
    /// Skip server certificate verification.
    pub insecure_skip_verify: Option<bool>,
    /// Certificate revocation list file.
    pub ca_crl: Option<String>,
}

/// Client TLS modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsMode {
    /// Plaintext.
    Disable,
    /// TLS.
    Simple,
    /// Mutual TLS with given certificates.
    Mutual,
    /// Mutual TLS with mesh certificates.
    IstioMutual,
}

/// Tunnelling settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelSettings {
    /// `CONNECT` or `POST`.
    pub protocol: Option<String>,
    /// Host to tunnel to (required).
    pub target_host: Option<String>,
    /// Port to tunnel to (required).
    pub target_port: Option<u32>,
}

/// PROXY protocol settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyProtocol {
    /// Protocol version.
    pub version: Option<ProxyProtocolVersion>,
}

/// PROXY protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum ProxyProtocolVersion {
    /// Text version.
    V1,
    /// Binary version.
    V2,
}

/// Retry budget: share of active requests that may be retries.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    /// Share of active requests, percent (a number or `{value: N}`).
    pub percent: Option<PercentValue>,
    /// Retries always allowed.
    pub min_retry_concurrency: Option<u32>,
}

/// A percentage written either as a number or as `{value: N}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum PercentValue {
    /// `25`
    Number(f64),
    /// `{value: 25}`
    Wrapped(super::common::Percent),
}

impl PercentValue {
    /// The percentage, when given.
    pub fn value(&self) -> Option<f64> {
        match self {
            PercentValue::Number(n) => Some(*n),
            PercentValue::Wrapped(p) => p.value,
        }
    }
}
