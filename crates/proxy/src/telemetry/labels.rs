//! Istio's standard metric labels (reference 4.2), in Istio's order, built once per
//! connection from what the proxy knows about both peers.

use crate::config::Protocol;
use crate::config::snapshot::{ServiceName, Workload};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use std::fmt::Write;
use std::sync::Arc;

/// A label value, cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Value(pub Arc<str>);

impl Value {
    /// `unknown`, Istio's value for anything not known.
    pub fn unknown() -> Self {
        Value(Arc::from("unknown"))
    }

    /// The value, or `unknown` when empty.
    pub fn or_unknown(s: &str) -> Self {
        if s.is_empty() {
            Self::unknown()
        } else {
            Value(Arc::from(s))
        }
    }
}

impl EncodeLabelValue for Value {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

/// Who reports the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reporter {
    /// The client's sidecar (outbound).
    Source,
    /// The server's sidecar (inbound).
    Destination,
}

impl EncodeLabelValue for Reporter {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        })
    }
}

/// The peer labels shared by every Istio metric, up to `request_protocol`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct Peers {
    /// `source` or `destination`.
    pub reporter: Reporter,
    /// Client workload.
    pub source_workload: Value,
    /// Client canonical service.
    pub source_canonical_service: Value,
    /// Client canonical revision.
    pub source_canonical_revision: Value,
    /// Client namespace.
    pub source_workload_namespace: Value,
    /// Client SPIFFE identity.
    pub source_principal: Value,
    /// Client `app` label.
    pub source_app: Value,
    /// Client `version` label.
    pub source_version: Value,
    /// Client cluster.
    pub source_cluster: Value,
    /// Server workload.
    pub destination_workload: Value,
    /// Server namespace.
    pub destination_workload_namespace: Value,
    /// Server SPIFFE identity.
    pub destination_principal: Value,
    /// Server `app` label.
    pub destination_app: Value,
    /// Server `version` label.
    pub destination_version: Value,
    /// Service FQDN, or `PassthroughCluster` / `InboundPassthroughClusterIpv4`.
    pub destination_service: Value,
    /// Server canonical service.
    pub destination_canonical_service: Value,
    /// Server canonical revision.
    pub destination_canonical_revision: Value,
    /// Service short name.
    pub destination_service_name: Value,
    /// Service namespace.
    pub destination_service_namespace: Value,
    /// Server cluster.
    pub destination_cluster: Value,
    /// `tcp`, `http` or `grpc`.
    pub request_protocol: Value,
}

/// Labels of Istio's TCP metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TcpLabels {
    /// Both peers.
    #[prometheus(flatten)]
    pub peers: Peers,
    /// Envoy-style response flags, `-` when none.
    pub response_flags: Value,
    /// `mutual_tls` or `none` (destination), `unknown` (source).
    pub connection_security_policy: Value,
}

/// Labels of Istio's HTTP metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HttpLabels {
    /// Both peers.
    #[prometheus(flatten)]
    pub peers: Peers,
    /// HTTP status code, `0` when no response was sent.
    pub response_code: Value,
    /// gRPC status, or `unknown`... as Istio reports it.
    pub grpc_response_status: Value,
    /// Envoy-style response flags, `-` when none.
    pub response_flags: Value,
    /// `mutual_tls` or `none` (destination), `unknown` (source).
    pub connection_security_policy: Value,
}

/// Labels of Ferry's per-command Redis counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RedisLabels {
    /// Both peers.
    #[prometheus(flatten)]
    pub peers: Peers,
    /// `mutual_tls` or `none` (destination), `unknown` (source).
    pub connection_security_policy: Value,
    /// Lower-case command name (`get`, as Envoy names them), or `unknown`.
    pub command: Value,
    /// `ok` or `error`.
    pub outcome: Value,
}

/// What one side of a connection is, for labels.
#[derive(Debug, Clone, Default)]
pub struct Side<'a> {
    /// The workload, when known.
    pub workload: Option<&'a Workload>,
    /// Its cluster.
    pub cluster: &'a str,
}

fn principal(w: Option<&Workload>, trust_domain: &str) -> Value {
    Value::or_unknown(&w.map(|w| w.principal(trust_domain)).unwrap_or_default())
}

impl Peers {
    /// Builds the peer labels of one connection.
    pub fn new(
        reporter: Reporter,
        source: Side<'_>,
        destination: Side<'_>,
        service: Option<&ServiceName>,
        passthrough_name: &str,
        trust_domain: &str,
        protocol: &'static str,
    ) -> Peers {
        let field = |w: Option<&Workload>, f: fn(&Workload) -> &str| {
            Value::or_unknown(w.map(f).unwrap_or_default())
        };
        let (s, d) = (source.workload, destination.workload);
        let cluster = |side: &Side<'_>| {
            if side.workload.is_some() {
                Value::or_unknown(side.cluster)
            } else {
                Value::unknown()
            }
        };
        Peers {
            reporter,
            source_workload: field(s, |w| &w.name),
            source_canonical_service: field(s, |w| &w.canonical_service),
            source_canonical_revision: field(s, |w| &w.canonical_revision),
            source_workload_namespace: field(s, |w| &w.namespace),
            source_principal: principal(s, trust_domain),
            source_app: field(s, |w| &w.app),
            source_version: field(s, |w| &w.version),
            source_cluster: cluster(&source),
            destination_workload: field(d, |w| &w.name),
            destination_workload_namespace: field(d, |w| &w.namespace),
            destination_principal: principal(d, trust_domain),
            destination_app: field(d, |w| &w.app),
            destination_version: field(d, |w| &w.version),
            destination_service: Value::or_unknown(
                service.map_or(passthrough_name, |s| s.fqdn.as_str()),
            ),
            destination_canonical_service: field(d, |w| &w.canonical_service),
            destination_canonical_revision: field(d, |w| &w.canonical_revision),
            destination_service_name: Value::or_unknown(
                service.map_or(passthrough_name, |s| s.name.as_str()),
            ),
            destination_service_namespace: match service {
                Some(s) => Value::or_unknown(&s.namespace),
                None => Value::unknown(),
            },
            destination_cluster: cluster(&destination),
            request_protocol: Value(Arc::from(protocol)),
        }
    }
}

/// The parties of a connection, for request labels.
#[derive(Debug, Clone)]
pub struct Parties {
    /// `source` (outbound) or `destination` (inbound).
    pub reporter: Reporter,
    /// The proxy's own workload.
    pub me: Arc<Workload>,
    /// The downstream peer's workload, when known (inbound).
    pub peer: Option<Arc<Workload>>,
    /// The service, when known.
    pub service: Option<Arc<ServiceName>>,
    /// `destination_service` when no service is known.
    pub passthrough_name: &'static str,
    /// Cluster of both sides.
    pub cluster: String,
    /// Trust domain, for principals.
    pub trust_domain: String,
    /// `connection_security_policy`.
    pub security: Value,
    /// `source_principal` and `destination_principal` from mutual TLS certificates; `None`
    /// derives them from the workloads' service accounts.
    pub principals: Option<(Value, Value)>,
}

impl Parties {
    /// The peer labels of one request or connection, given the upstream's workload.
    pub fn peers(&self, upstream: Option<&Workload>, protocol: Protocol) -> Peers {
        let (source, destination) = match self.reporter {
            Reporter::Source => (Some(&*self.me), upstream),
            Reporter::Destination => (self.peer.as_deref(), Some(&*self.me)),
        };
        let mut peers = Peers::new(
            self.reporter,
            Side {
                workload: source,
                cluster: &self.cluster,
            },
            Side {
                workload: destination,
                cluster: &self.cluster,
            },
            self.service.as_deref(),
            self.passthrough_name,
            &self.trust_domain,
            protocol.metric_label(),
        );
        if let Some((source, destination)) = &self.principals {
            peers.source_principal = source.clone();
            peers.destination_principal = destination.clone();
        }
        peers
    }
}

impl Parties {
    /// TCP labels of a connection, given the upstream's workload.
    pub fn tcp(&self, upstream: Option<&Workload>, protocol: Protocol, flags: &str) -> TcpLabels {
        TcpLabels {
            peers: self.peers(upstream, protocol),
            response_flags: Value::or_unknown(flags),
            connection_security_policy: self.security.clone(),
        }
    }
}
