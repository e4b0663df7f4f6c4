//! Clusters: one per service port and subset (`outbound|<port>|<subset>|<host>`), with their
//! endpoints, the DestinationRule policy in force (load balancing, connection pool, outlier
//! detection) and the client TLS chosen (explicit, or automatic mTLS).

use ferry_model::istio::destination_rule::{
    ClientTlsSettings, ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection, TlsMode,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

use super::outbound::is_false;

/// A group of endpoints traffic is balanced over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cluster {
    /// `outbound|<port>|<subset>|<host>`.
    pub name: String,
    /// Fully qualified host.
    pub host: String,
    /// Service port.
    pub port: u16,
    /// Subset name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// The subset's label selector (endpoints carrying all of them are members).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subset_labels: BTreeMap<String, String>,
    /// How the upstream address is chosen.
    #[serde(default, skip_serializing_if = "Resolution::is_default")]
    pub resolution: Resolution,
    /// Member endpoints (ready or not), in a stable order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<ClusterEndpoint>,
    /// `namespace/name` of the DestinationRule that applies, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_rule: Option<String>,
    /// Load balancing (Istio's default `LEAST_REQUEST` when no rule sets it).
    pub load_balancer: LoadBalancerSettings,
    /// Connection limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Outlier detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Client TLS toward the endpoints.
    pub tls: ClusterTls,
}

/// How a cluster picks the upstream address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Balance over the listed endpoints.
    #[default]
    Eds,
    /// Connect to the address the client dialled (headless services, `PASSTHROUGH` lb).
    OriginalDst,
}

impl Resolution {
    /// Whether this is the default (for skipping it when serialising).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// One endpoint of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterEndpoint {
    /// Pod IP.
    pub ip: IpAddr,
    /// Port on the pod (the service's target port).
    pub port: u16,
    /// Pod name.
    #[serde(default)]
    pub pod: String,
    /// Whether the pod is ready.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub ready: bool,
    /// Whether connections to this endpoint use Istio mTLS.
    #[serde(default, skip_serializing_if = "is_false")]
    pub mtls: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// Client TLS of a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterTls {
    /// The mode. With `auto`, `ISTIO_MUTUAL` applies only to endpoints marked `mtls`.
    pub mode: TlsMode,
    /// Chosen by automatic mTLS (no `tls` in the DestinationRule).
    #[serde(default, skip_serializing_if = "is_false")]
    pub auto: bool,
    /// The DestinationRule's settings (certificates, SNI, SANs) when set explicitly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<ClientTlsSettings>,
}

impl Default for ClusterTls {
    fn default() -> Self {
        Self {
            mode: TlsMode::Disable,
            auto: true,
            settings: None,
        }
    }
}
