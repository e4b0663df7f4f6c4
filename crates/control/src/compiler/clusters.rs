//! Clusters: one per service port and subset, with member endpoints (subset labels), the
//! effective DestinationRule policy (Istio's default `LEAST_REQUEST` when none sets one), and
//! client TLS: the rule's `tls` when set, else automatic mTLS — Istio mTLS to each endpoint
//! that has a sidecar (and whose server side does not DISABLE it); for a headless service,
//! to all endpoints only if every one qualifies.

use ferry_model::istio::destination_rule::{LoadBalancerSettings, SimpleLb, TlsMode};
use ferry_proto::config::{
    Cluster, ClusterEndpoint, ClusterTls, MtlsMode, Resolution, cluster_name,
};

use super::Context;
use super::destination_rule::{self, effective};
use super::mtls::policies_for;
use super::scope::{id, selects};
use crate::registry::{EndpointEntry, PortEntry, ServiceEntry};

/// What a host names: a service, or one pod of it (StatefulSet per-pod names).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The service.
    pub service: &'a ServiceEntry,
    /// The pod, for a per-pod host.
    pub pod: Option<&'a EndpointEntry>,
}

impl Target<'_> {
    /// The host name.
    pub fn host(&self) -> &str {
        self.pod
            .and_then(|p| p.hostname.as_deref())
            .unwrap_or(&self.service.fqdn)
    }
}

/// Whether a pod accepts Istio mTLS on a container port: it has a sidecar and its
/// PeerAuthentication does not DISABLE mTLS there.
fn accepts_mtls(cx: &Context<'_>, ep: &EndpointEntry, port: u16) -> bool {
    ep.has_sidecar
        && policies_for(
            &cx.peer_authentications,
            &cx.root_ns,
            &ep.namespace,
            &ep.labels,
        )
        .port_mode(port)
            != MtlsMode::Disable
}

/// Builds the cluster of `target` on `port`, optionally restricted to a subset; `None` (with a
/// warning) when the subset is not declared.
pub fn build(
    cx: &mut Context<'_>,
    target: Target<'_>,
    port: &PortEntry,
    subset: Option<&str>,
) -> Option<Cluster> {
    let svc = target.service;
    let host = target.host().to_string();
    let mut rule = destination_rule::select(cx, &host, &svc.namespace);
    if rule.is_none() && target.pod.is_some() {
        rule = destination_rule::select(cx, &svc.fqdn, &svc.namespace);
    }
    let subset_spec = match subset {
        Some(name) => match destination_rule::subset(rule, name) {
            Some(s) => Some(s),
            None => {
                cx.warn(format!(
                    "subset {name} of host {host} is not declared by any DestinationRule in force; routes to it fail"
                ));
                return None;
            }
        },
        None => None,
    };
    let labels = subset_spec.map(|s| s.labels.clone()).unwrap_or_default();
    let policy = effective(
        rule.and_then(|r| r.spec.traffic_policy.as_ref()),
        subset_spec.and_then(|s| s.traffic_policy.as_ref()),
        port.port,
    );
    let mut members: Vec<&EndpointEntry> = svc
        .endpoints
        .iter()
        .filter(|ep| target.pod.is_none_or(|p| p.ip == ep.ip && p.pod == ep.pod))
        .filter(|ep| selects(&labels, &ep.labels))
        .collect();
    members.sort_by(|a, b| (a.ip, &a.pod).cmp(&(b.ip, &b.pod)));

    let headless = svc.cluster_ip.is_none() && target.pod.is_none();
    let explicit = policy.tls.as_ref().filter(|t| t.mode.is_some());
    // Istio mTLS toward each member, in order.
    let mtls: Vec<bool> = match explicit {
        Some(t) => vec![t.mode == Some(TlsMode::IstioMutual); members.len()],
        None if headless => {
            let without: Vec<&str> = svc
                .endpoints
                .iter()
                .filter(|ep| !accepts_mtls(cx, ep, port.target_port))
                .map(|ep| ep.pod.as_str())
                .collect();
            let all = without.is_empty() && !svc.endpoints.is_empty();
            if !without.is_empty() && svc.endpoints.iter().any(|ep| ep.has_sidecar) {
                cx.warn(format!(
                    "headless service {}: pod(s) {} without a sidecar (or with mTLS disabled); \
                     plaintext to every endpoint",
                    svc.fqdn,
                    without.join(", ")
                ));
            }
            vec![all; members.len()]
        }
        None => members
            .iter()
            .map(|ep| accepts_mtls(cx, ep, port.target_port))
            .collect(),
    };
    let tls = match explicit {
        Some(t) => ClusterTls {
            mode: t.mode.unwrap_or(TlsMode::Disable),
            auto: false,
            settings: Some(t.clone()),
        },
        None => ClusterTls {
            mode: if mtls.contains(&true) {
                TlsMode::IstioMutual
            } else {
                TlsMode::Disable
            },
            auto: true,
            settings: None,
        },
    };
    let endpoints = members
        .iter()
        .zip(mtls)
        .map(|(ep, mtls)| ClusterEndpoint {
            ip: ep.ip,
            port: port.target_port,
            pod: ep.pod.clone(),
            ready: ep.ready,
            mtls,
        })
        .collect();

    let mut load_balancer = policy.load_balancer.unwrap_or_default();
    if load_balancer.simple.is_none() && load_balancer.consistent_hash.is_none() {
        load_balancer.simple = Some(SimpleLb::LeastRequest);
    }
    let passthrough_lb = load_balancer.simple == Some(SimpleLb::Passthrough);
    Some(Cluster {
        name: cluster_name(port.port, subset, &host),
        host,
        port: port.port,
        subset: subset.map(str::to_string),
        subset_labels: labels,
        resolution: if headless || passthrough_lb {
            Resolution::OriginalDst
        } else {
            Resolution::Eds
        },
        endpoints,
        destination_rule: rule.map(id),
        load_balancer: normalise(load_balancer),
        connection_pool: policy.connection_pool,
        outlier_detection: policy.outlier_detection,
        tls,
    })
}

/// `UNSPECIFIED` and the deprecated `LEAST_CONN` both mean least request.
fn normalise(mut lb: LoadBalancerSettings) -> LoadBalancerSettings {
    if matches!(lb.simple, Some(SimpleLb::Unspecified | SimpleLb::LeastConn)) {
        lb.simple = Some(SimpleLb::LeastRequest);
    }
    lb
}
