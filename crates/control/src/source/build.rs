//! Assembling the [`Registry`] from the store's Kubernetes objects: namespaces and their
//! labels, pods (expanded from workloads, run through injection), services with endpoints.
//! Pure; the store calls it.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ferry_inject::decision::Decision;
use ferry_inject::mutate::TLS_MODE_LABEL;
use ferry_inject::{InjectConfig, workload};
use serde_json::Value;

use crate::registry::{Labels, PodEntry, Registry};
use crate::source::endpoints::{self, PodRef, string_map};
use crate::source::expand;
use crate::store::{Kind, ObjectKey};

/// The store's Kubernetes objects, in key order.
#[derive(Debug, Clone, Default)]
pub struct KubeObjects<'a>(pub Vec<(&'a ObjectKey, &'a Value)>);

impl<'a> KubeObjects<'a> {
    fn of(&self, kind: Kind) -> impl Iterator<Item = (&'a ObjectKey, &'a Value)> + '_ {
        self.0.iter().copied().filter(move |(k, _)| k.kind == kind)
    }
}

/// A pod of the mesh: its registry entry, the pod as created, and the injection decision.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshPod {
    /// The registry entry.
    pub entry: PodEntry,
    /// The pod as it would be created (with the sidecar when injected).
    pub pod: Value,
    /// Whether and why (not) it was injected.
    pub decision: Decision,
    /// Why the injection that was decided failed, if it did.
    pub inject_error: Option<String>,
}

/// The labels of every declared Namespace.
pub fn namespace_labels(objects: &KubeObjects<'_>) -> BTreeMap<String, Labels> {
    objects
        .of(Kind::Namespace)
        .map(|(k, v)| (k.name.clone(), string_map(&v["metadata"]["labels"])))
        .collect()
}

/// Every pod of the mesh, expanded and injected, in (namespace, name) order with numeric
/// suffixes compared as numbers (`redis-2` before `redis-10`). `ips` fills addresses that
/// the manifests (`status.podIP`) do not give.
pub fn pods(objects: KubeObjects<'_>, ips: &BTreeMap<(String, String), IpAddr>) -> Vec<MeshPod> {
    let ns_labels = namespace_labels(&objects);
    let no_labels = Labels::new();
    let cfg = InjectConfig::default();
    let mut out = Vec::new();
    for (key, value) in &objects.0 {
        for pod in expand::pods_of(key.kind, value) {
            let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
            let labels = ns_labels.get(ns).unwrap_or(&no_labels);
            let injected = expand::inject(pod, labels, &cfg);
            if let Some(entry) = pod_entry(&injected.pod, ips) {
                out.push(MeshPod {
                    entry,
                    pod: injected.pod,
                    decision: injected.decision,
                    inject_error: injected.error,
                });
            }
        }
    }
    out.sort_by(|a, b| {
        a.entry
            .namespace
            .cmp(&b.entry.namespace)
            .then_with(|| natural_cmp(&a.entry.name, &b.entry.name))
    });
    out.dedup_by(|a, b| a.entry.namespace == b.entry.namespace && a.entry.name == b.entry.name);
    out
}

/// The registry (without policies and root namespace, which the store adds).
pub fn registry(
    objects: KubeObjects<'_>,
    ips: &BTreeMap<(String, String), IpAddr>,
    vips: &BTreeMap<(String, String), Ipv4Addr>,
    cluster_domain: &str,
) -> Registry {
    let mut namespaces = namespace_labels(&objects);
    let services: Vec<(&ObjectKey, &Value)> = objects.of(Kind::Service).collect();
    let slices: Vec<(&ObjectKey, &Value)> = objects.of(Kind::EndpointSlice).collect();
    let pods = pods(objects, ips);
    for ns in pods
        .iter()
        .map(|p| &p.entry.namespace)
        .chain(services.iter().map(|(k, _)| &k.namespace))
    {
        namespaces.entry(ns.clone()).or_default();
    }
    let services = services
        .iter()
        .map(|(key, svc)| {
            let in_ns: Vec<PodRef<'_>> = pods
                .iter()
                .filter(|p| p.entry.namespace == key.namespace)
                .map(|p| PodRef {
                    entry: &p.entry,
                    pod: &p.pod,
                })
                .collect();
            let slices: Vec<&Value> = slices
                .iter()
                .filter(|(k, _)| k.namespace == key.namespace)
                .map(|(_, v)| *v)
                .collect();
            let vip = vips
                .get(&(key.namespace.clone(), key.name.clone()))
                .copied();
            endpoints::service_entry(svc, &in_ns, &slices, vip, cluster_domain)
        })
        .collect();
    Registry {
        namespaces,
        services,
        pods: pods.into_iter().map(|p| p.entry).collect(),
        cluster_domain: cluster_domain.to_string(),
        ..Registry::default()
    }
}

/// The registry entry of a pod as created; `None` when it has no name.
fn pod_entry(pod: &Value, ips: &BTreeMap<(String, String), IpAddr>) -> Option<PodEntry> {
    let meta = &pod["metadata"];
    let name = meta["name"].as_str().filter(|n| !n.is_empty())?.to_string();
    let namespace = meta["namespace"].as_str().unwrap_or("default").to_string();
    let labels = string_map(&meta["labels"]);
    let spec = &pod["spec"];
    let ip = pod["status"]["podIP"]
        .as_str()
        .and_then(|ip| ip.parse().ok())
        .or_else(|| ips.get(&(namespace.clone(), name.clone())).copied());
    let ready = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"].as_str() == Some("Ready"))
        .is_none_or(|c| c["status"].as_str() != Some("False"));
    let service_account = spec["serviceAccountName"]
        .as_str()
        .or_else(|| spec["serviceAccount"].as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let owner = workload::of_pod(pod);
    Some(PodEntry {
        has_sidecar: labels.get(TLS_MODE_LABEL).map(String::as_str) == Some("istio"),
        name,
        namespace,
        ip,
        annotations: string_map(&meta["annotations"]),
        labels,
        workload: owner.name,
        workload_kind: owner.kind,
        service_account,
        ready,
        hostname: text(&spec["hostname"]),
        subdomain: text(&spec["subdomain"]),
    })
}

/// Compares names with runs of digits compared as numbers.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (trim_zeros(&a[..da]), trim_zeros(&b[..db]));
                let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let start = digits.iter().take_while(|d| **d == b'0').count();
    &digits[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut names = vec!["redis-10", "redis-2", "redis-0", "a", "redis-1"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(names, ["a", "redis-0", "redis-1", "redis-2", "redis-10"]);
    }
}
