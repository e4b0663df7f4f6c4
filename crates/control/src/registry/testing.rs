//! Builders of registry entries and Istio resources for tests, examples and benchmarks
//! (compiled with `cfg(test)` or the `test-support` feature): one copy of the fixtures that
//! the compiler's tests, the compile cache's tests and the control-plane benchmark share.
//!
//! They panic on malformed literals (an IP address, a resource spec): their input is
//! written by the test itself.

use super::{EndpointEntry, Labels, PodEntry, PortEntry, ProxyIdentity, ServiceEntry};
use ferry_model::IstioResource;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::Value;

/// A label (or annotation) map from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// An Istio resource created `age` seconds after 2023-11-14 22:13:20 UTC (lower is older),
/// with `spec` as its JSON spec.
///
/// # Panics
/// When `spec` is not a valid `S`.
pub fn resource<S: serde::de::DeserializeOwned>(
    ns: &str,
    name: &str,
    age: i64,
    spec: Value,
) -> IstioResource<S> {
    let created = k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + age)
        .expect("a creation time within jiff's range");
    IstioResource {
        api_version: "networking.istio.io/v1".into(),
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            creation_timestamp: Some(Time(created)),
            ..Default::default()
        },
        spec: serde_json::from_value(spec).expect("a valid resource spec"),
    }
}

/// The workload of a pod named `<workload>-<suffix>`.
fn workload_of(pod: &str) -> &str {
    pod.rsplit_once('-').map_or(pod, |(w, _)| w)
}

/// A ready pod of a Deployment (named after the pod without its last `-suffix`), with a
/// sidecar, service account `default`, at `ip` (none when empty).
///
/// # Panics
/// When `ip` is neither empty nor an IP address.
pub fn pod(ns: &str, name: &str, ip: &str, l: &[(&str, &str)]) -> PodEntry {
    PodEntry {
        name: name.into(),
        namespace: ns.into(),
        ip: (!ip.is_empty()).then(|| ip.parse().expect("a pod IP")),
        labels: labels(l),
        annotations: Labels::new(),
        workload: workload_of(name).into(),
        workload_kind: "Deployment".into(),
        service_account: "default".into(),
        has_sidecar: true,
        ready: true,
        hostname: None,
        subdomain: None,
    }
}

/// A ready endpoint of pod `pod` (workload as [`pod`] names it, service account
/// `default`).
///
/// # Panics
/// When `ip` is not an IP address.
pub fn endpoint(ns: &str, pod: &str, ip: &str, l: &[(&str, &str)], sidecar: bool) -> EndpointEntry {
    EndpointEntry {
        ip: ip.parse().expect("an endpoint IP"),
        pod: pod.into(),
        namespace: ns.into(),
        workload: workload_of(pod).into(),
        service_account: "default".into(),
        labels: labels(l),
        has_sidecar: sidecar,
        ready: true,
        hostname: None,
    }
}

/// The endpoint a pod makes (`None` while it has no IP).
pub fn endpoint_of(pod: &PodEntry) -> Option<EndpointEntry> {
    Some(crate::source::endpoints::endpoint_of(pod, pod.ip?, None))
}

/// A service with cluster IP `vip` (headless when `None`), ports `(name, port)` whose
/// target port is the port, the given endpoints, no labels and no `exportTo`.
///
/// # Panics
/// When `vip` is not an IP address.
pub fn service(
    ns: &str,
    name: &str,
    vip: Option<&str>,
    ports: &[(&str, u16)],
    endpoints: Vec<EndpointEntry>,
) -> ServiceEntry {
    ServiceEntry {
        name: name.into(),
        namespace: ns.into(),
        fqdn: format!("{name}.{ns}.svc.cluster.local"),
        cluster_ip: vip.map(|v| v.parse().expect("a service IP")),
        ports: ports
            .iter()
            .map(|(n, p)| PortEntry {
                name: n.to_string(),
                port: *p,
                target_port: *p,
                app_protocol: None,
            })
            .collect(),
        endpoints,
        labels: Labels::new(),
        export_to: vec![],
    }
}

/// A proxy that says only its namespace and pod name.
pub fn proxy(ns: &str, pod: &str) -> ProxyIdentity {
    ProxyIdentity {
        pod: pod.into(),
        namespace: ns.into(),
        ..Default::default()
    }
}
