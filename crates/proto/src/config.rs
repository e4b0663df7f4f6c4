//! The configuration of one proxy: who it is, and the services and endpoints it can reach.
//! The control plane compiles it for each proxy; `ferry proxy --config` reads it from a file.
//!
//! Beyond services and endpoints, it holds what the Istio resources say for this proxy, even
//! where the proxy does not enforce it yet: [`outbound`] routes per host:port, [`cluster`]s
//! per service port and subset, and the [`inbound`] ports with their mTLS mode. Every such
//! field is optional and left out when empty, so hand-written static files stay short.

pub mod cluster;
pub mod inbound;
pub mod outbound;
pub mod redis_policy;
pub mod spiffe;
pub mod tracing;

pub use cluster::{Cluster, ClusterEndpoint, ClusterTls, Resolution};
pub use inbound::{Inbound, InboundPort, MtlsMode};
pub use outbound::{
    ClusterRef, HttpRouteRule, HttpWeightedCluster, Mirror, OutboundPort, OutboundTrafficPolicy,
    TcpRouteRule, TlsRouteRule, WeightedCluster, cluster_name,
};
pub use redis_policy::{RedisMirrorTarget, RedisPortPolicy};
pub use spiffe::SpiffeId;
pub use tracing::{Tracing, TracingProvider};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The whole configuration of one proxy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    /// Version label of this configuration (shown in the admin config dump).
    #[serde(default)]
    pub version: String,
    /// The workload this proxy serves.
    #[serde(default)]
    pub identity: Identity,
    /// Services the workload can reach (and is part of).
    #[serde(default)]
    pub services: Vec<Service>,
    /// Data-path settings.
    #[serde(default)]
    pub settings: Settings,
    /// Routes per outbound host:port, sorted by host then port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound: Vec<OutboundPort>,
    /// Clusters, sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<Cluster>,
    /// The workload's inbound ports and their mTLS modes.
    #[serde(default, skip_serializing_if = "Inbound::is_default")]
    pub inbound: Inbound,
    /// What to do with addresses no service declares.
    #[serde(default, skip_serializing_if = "OutboundTrafficPolicy::is_default")]
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    /// Distributed tracing; `None` is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Tracing>,
}

/// The proxy's own workload identity, the `source_*` labels of outbound metrics and the
/// `destination_*` labels of inbound ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Identity {
    /// Pod name.
    #[serde(default)]
    pub pod: String,
    /// Namespace.
    #[serde(default)]
    pub namespace: String,
    /// Workload name (StatefulSet or Deployment name).
    #[serde(default)]
    pub workload: String,
    /// Service account.
    #[serde(default)]
    pub service_account: String,
    /// Pod labels (`app`, `version`, canonical service labels...).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The pod IP; inbound connections are delivered to the application on it.
    #[serde(default)]
    pub ip: Option<IpAddr>,
    /// Trust domain of the mesh.
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    /// Cluster name.
    #[serde(default = "default_cluster")]
    pub cluster: String,
}

fn default_trust_domain() -> String {
    "cluster.local".into()
}

fn default_cluster() -> String {
    "Kubernetes".into()
}

/// A Kubernetes Service as the proxy sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    /// Service name.
    pub name: String,
    /// Namespace of the service.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Cluster IP; absent (or `None`) for a headless service.
    #[serde(default, rename = "clusterIP", deserialize_with = "cluster_ip")]
    pub cluster_ip: Option<IpAddr>,
    /// Ports.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// Endpoints (pods) behind the service.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

fn default_namespace() -> String {
    "default".into()
}

/// `clusterIP: None` (Kubernetes' spelling of headless) or an address.
fn cluster_ip<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
    let raw: Option<String> = Option::deserialize(d)?;
    match raw.as_deref() {
        None | Some("None") | Some("") => Ok(None),
        Some(ip) => ip.parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!("`{ip}` is not an IP address or `None`"))
        }),
    }
}

/// One port of a service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// Port name; its prefix declares the protocol (`redis`, `tcp-`, `http-`, ...).
    #[serde(default)]
    pub name: String,
    /// Service port.
    pub port: u16,
    /// Port on the endpoints; defaults to `port`.
    #[serde(default)]
    pub target_port: Option<u16>,
    /// `appProtocol`, which wins over the name.
    #[serde(default)]
    pub app_protocol: Option<String>,
    /// Transport protocol; only TCP is proxied.
    #[serde(default)]
    pub protocol: Option<String>,
}

impl ServicePort {
    /// The port on the endpoints.
    pub fn target(&self) -> u16 {
        self.target_port.unwrap_or(self.port)
    }
}

/// One pod behind a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// Pod IP.
    pub ip: IpAddr,
    /// Pod name.
    #[serde(default)]
    pub pod: String,
    /// Workload name.
    #[serde(default)]
    pub workload: String,
    /// Namespace of the pod; defaults to the service's.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Service account.
    #[serde(default)]
    pub service_account: String,
    /// Pod labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Whether the pod runs a sidecar (`security.istio.io/tlsMode: istio`).
    #[serde(default)]
    pub has_sidecar: bool,
    /// Whether the pod is ready; unready endpoints get no new connections.
    #[serde(default = "yes")]
    pub ready: bool,
}

fn yes() -> bool {
    true
}

/// Timeouts and limits of the data path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    /// Upstream connect timeout, in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Close a TCP connection with no traffic for this long, in seconds (0 = never).
    #[serde(default = "default_idle_timeout_s")]
    pub idle_timeout_s: u64,
    /// How long to wait for a client's first bytes before treating it as opaque TCP, in
    /// milliseconds.
    #[serde(default = "default_detect_timeout_ms")]
    pub protocol_detection_timeout_ms: u64,
    /// Drain period on shutdown, in seconds.
    #[serde(default = "default_drain_s")]
    pub drain_duration_s: u64,
    /// Parse Redis traffic for per-command telemetry.
    #[serde(default = "yes")]
    pub redis_telemetry: bool,
    /// DNS domain of the cluster, for service FQDNs.
    #[serde(default = "default_cluster_domain")]
    pub cluster_domain: String,
}

fn default_cluster_domain() -> String {
    "cluster.local".into()
}

fn default_connect_timeout_ms() -> u64 {
    10_000
}
fn default_idle_timeout_s() -> u64 {
    3600
}
fn default_detect_timeout_ms() -> u64 {
    100
}
fn default_drain_s() -> u64 {
    5
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            connect_timeout_ms: default_connect_timeout_ms(),
            idle_timeout_s: default_idle_timeout_s(),
            protocol_detection_timeout_ms: default_detect_timeout_ms(),
            drain_duration_s: default_drain_s(),
            redis_telemetry: true,
            cluster_domain: default_cluster_domain(),
        }
    }
}
