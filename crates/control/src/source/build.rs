//! Assembling the [`Registry`] from the store's Kubernetes objects: namespaces and their
//! labels, pods (expanded from workloads, run through injection), services with endpoints.
//! Pure; the store calls it.
//!
//! Expanding and injecting is the expensive part, and it depends only on one object and its
//! namespace's labels: [`summaries`] does it for one object, keeping what the registry
//! needs ([`PodSummary`]), so that the store can redo it only for the objects that changed;
//! [`registry`] then assembles the registry from the summaries, selecting each service's
//! pods through an index of labels rather than by scanning every pod.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use ferry_inject::decision::Decision;
use ferry_inject::mutate::TLS_MODE_LABEL;
use ferry_inject::{InjectConfig, workload};
use serde_json::Value;

use crate::registry::{Labels, PodEntry, Registry};
use crate::source::endpoints::{self, NamedPorts, PodRef, string_map};
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

/// What the registry needs of a pod as created: its entry (with the address its manifest
/// gives, if any) and its named container ports.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSummary {
    /// The registry entry.
    pub entry: PodEntry,
    /// Named container ports, which services' named target ports refer to.
    pub ports: NamedPorts,
}

/// The labels of every declared Namespace.
pub fn namespace_labels(objects: &KubeObjects<'_>) -> BTreeMap<String, Labels> {
    objects
        .of(Kind::Namespace)
        .map(|(k, v)| (k.name.clone(), string_map(&v["metadata"]["labels"])))
        .collect()
}

/// The pods `value` (an object of `kind`) stands for, expanded and run through injection
/// with the labels of their namespace (from `ns_labels`), in creation order; addresses only
/// from the manifests (`status.podIP`). Pods without a name are left out.
pub fn expand(
    kind: Kind,
    value: &Value,
    ns_labels: &BTreeMap<String, Labels>,
    cfg: &InjectConfig,
) -> Vec<MeshPod> {
    let no_labels = Labels::new();
    let none = BTreeMap::new();
    let mut out = Vec::new();
    for pod in expand::pods_of(kind, value) {
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
        let labels = ns_labels.get(ns).unwrap_or(&no_labels);
        let injected = expand::inject(pod, labels, cfg);
        if let Some(entry) = pod_entry(&injected.pod, &none) {
            out.push(MeshPod {
                entry,
                pod: injected.pod,
                decision: injected.decision,
                inject_error: injected.error,
            });
        }
    }
    out
}

/// [`expand`], keeping only what the registry needs.
pub fn summaries(
    kind: Kind,
    value: &Value,
    ns_labels: &BTreeMap<String, Labels>,
    cfg: &InjectConfig,
) -> Vec<PodSummary> {
    expand(kind, value, ns_labels, cfg)
        .into_iter()
        .map(|p| PodSummary {
            ports: endpoints::named_ports(&p.pod),
            entry: p.entry,
        })
        .collect()
}

/// Whether objects of `kind` stand for pods ([`expand`] may give some).
pub fn makes_pods(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Pod
            | Kind::StatefulSet
            | Kind::Deployment
            | Kind::DaemonSet
            | Kind::ReplicaSet
            | Kind::Job
    )
}

/// The address `ips` assigned to a pod whose manifest gives none.
fn with_ip(mut entry: PodEntry, ips: &BTreeMap<(String, String), IpAddr>) -> PodEntry {
    if entry.ip.is_none() {
        entry.ip = ips
            .get(&(entry.namespace.clone(), entry.name.clone()))
            .copied();
    }
    entry
}

/// Orders pods by (namespace, name) with numeric suffixes compared as numbers
/// (`redis-2` before `redis-10`), and keeps the first of each (namespace, name).
pub fn sort_and_dedup<T>(pods: &mut Vec<T>, entry: impl Fn(&T) -> &PodEntry) {
    pods.sort_by(|a, b| {
        let (a, b) = (entry(a), entry(b));
        a.namespace
            .cmp(&b.namespace)
            .then_with(|| natural_cmp(&a.name, &b.name))
    });
    pods.dedup_by(|a, b| {
        let (a, b) = (entry(a), entry(b));
        a.namespace == b.namespace && a.name == b.name
    });
}

/// Every pod of the mesh, expanded and injected, in (namespace, name) order with numeric
/// suffixes compared as numbers (`redis-2` before `redis-10`). `ips` fills addresses that
/// the manifests (`status.podIP`) do not give.
pub fn pods(objects: KubeObjects<'_>, ips: &BTreeMap<(String, String), IpAddr>) -> Vec<MeshPod> {
    let ns_labels = namespace_labels(&objects);
    let cfg = InjectConfig::default();
    let mut out: Vec<MeshPod> = objects
        .0
        .iter()
        .flat_map(|(key, value)| expand(key.kind, value, &ns_labels, &cfg))
        .map(|mut p| {
            p.entry = with_ip(p.entry, ips);
            p
        })
        .collect();
    sort_and_dedup(&mut out, |p| &p.entry);
    out
}

/// The registry (without policies and root namespace, which the store adds) from the
/// objects (for namespaces, services and EndpointSlices) and the [`summaries`] of every
/// object that makes pods, in any order. `ips` fills addresses that the manifests do not
/// give, `vips` those of services without a cluster IP.
pub fn registry<'a>(
    objects: KubeObjects<'a>,
    pods: impl IntoIterator<Item = &'a PodSummary>,
    ips: &BTreeMap<(String, String), IpAddr>,
    vips: &BTreeMap<(String, String), Ipv4Addr>,
    cluster_domain: &str,
) -> Registry {
    let mut namespaces = namespace_labels(&objects);
    let services: Vec<(&ObjectKey, &Value)> = objects.of(Kind::Service).collect();
    let slices: Vec<(&ObjectKey, &Value)> = objects.of(Kind::EndpointSlice).collect();
    let summaries: Vec<&PodSummary> = pods.into_iter().collect();
    let mut pods: Vec<(PodEntry, &NamedPorts)> = Vec::with_capacity(summaries.len());
    pods.extend(
        summaries
            .into_iter()
            .map(|p| (with_ip(p.entry.clone(), ips), &p.ports)),
    );
    sort_and_dedup(&mut pods, |p| &p.0);
    for ns in pods
        .iter()
        .map(|p| &p.0.namespace)
        .chain(services.iter().map(|(k, _)| &k.namespace))
    {
        namespaces.entry(ns.clone()).or_default();
    }
    // The first (string) pair of each service's selector: the pods that carry it are the
    // only ones the selector may select.
    let first_pair = |svc: &'a Value| -> Option<(&'a str, &'a str)> {
        let selector = svc["spec"]["selector"].as_object()?;
        selector
            .iter()
            .find_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
    };
    let keys: HashSet<(&str, &str)> = services
        .iter()
        .filter_map(|(key, svc)| Some((key.namespace.as_str(), first_pair(svc)?.0)))
        .collect();
    // The pods of each namespace, and of each (namespace, label, value) among those pairs,
    // in registry order.
    let mut by_ns: HashMap<&str, Vec<PodRef<'_>>> = HashMap::new();
    let mut by_label: HashMap<(&str, &str, &str), Vec<PodRef<'_>>> = HashMap::new();
    for (entry, ports) in &pods {
        let pod = PodRef { entry, ports };
        let ns = entry.namespace.as_str();
        by_ns.entry(ns).or_default().push(pod);
        for (k, v) in &entry.labels {
            if keys.contains(&(ns, k.as_str())) {
                by_label.entry((ns, k, v)).or_default().push(pod);
            }
        }
    }
    let mut slices_by_ns: HashMap<&str, Vec<&Value>> = HashMap::new();
    for (key, slice) in &slices {
        slices_by_ns.entry(&key.namespace).or_default().push(slice);
    }
    let services = services
        .iter()
        .map(|(key, svc)| {
            let ns = key.namespace.as_str();
            // Pods the selector may select (all of its first pair's); the pods of the
            // namespace when it has no selector (EndpointSlices name their pods).
            let candidates = match first_pair(svc) {
                Some((k, v)) => by_label.get(&(ns, k, v)),
                None => by_ns.get(ns),
            };
            let vip = vips
                .get(&(key.namespace.clone(), key.name.clone()))
                .copied();
            endpoints::service_entry(
                svc,
                candidates.map_or(&[], Vec::as_slice),
                slices_by_ns.get(ns).map_or(&[], Vec::as_slice),
                vip,
                cluster_domain,
            )
        })
        .collect();
    Registry {
        namespaces,
        services,
        pods: pods.into_iter().map(|(entry, _)| entry).collect(),
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
