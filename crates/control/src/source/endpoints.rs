//! A Service's registry entry: FQDN, cluster IP or headless, ports, and endpoints derived the
//! way the EndpointSlice controller would (the service's selector over the pods of its
//! namespace), or read from EndpointSlice manifests for a service without a selector.
//! Pure: manifests and pods in, [`ServiceEntry`] out.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use serde_json::Value;

use crate::registry::{EndpointEntry, Labels, PodEntry, PortEntry, ServiceEntry};
use crate::source::vip::{ClusterIp, declared_cluster_ip};

/// Istio's annotation limiting which namespaces see a service.
pub const EXPORT_TO: &str = "networking.istio.io/exportTo";

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A pod's named container ports, `(name, containerPort)` in the pod's order (containers,
/// then init containers): what a Service's named `targetPort` refers to.
pub type NamedPorts = Vec<(String, u16)>;

/// A pod as endpoint derivation sees it: its registry entry and its named container ports.
#[derive(Debug, Clone, Copy)]
pub struct PodRef<'a> {
    /// The registry entry.
    pub entry: &'a PodEntry,
    /// Its named container ports (see [`named_ports`]).
    pub ports: &'a [(String, u16)],
}

/// The named container ports of a pod manifest, containers first, then init containers.
pub fn named_ports(pod: &Value) -> NamedPorts {
    let spec = &pod["spec"];
    let containers = spec["containers"].as_array().into_iter().flatten();
    let init = spec["initContainers"].as_array().into_iter().flatten();
    containers
        .chain(init)
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .filter_map(|port| {
            let name = port["name"].as_str().filter(|n| !n.is_empty())?;
            let number = u16::try_from(port["containerPort"].as_u64()?).ok()?;
            Some((name.to_string(), number))
        })
        .collect()
}

/// The registry entry of `service`. `pods` are the pods of the service's namespace in
/// registry order (those its selector may select are enough when it has one; all of them
/// when it has none), `slices` the EndpointSlice manifests of that namespace, `vip` the address
/// allocated when the service declares no `clusterIP`. Pods without an IP are not endpoints
/// (as in Kubernetes, where a pod joins its EndpointSlice once it has one).
pub fn service_entry(
    service: &Value,
    pods: &[PodRef<'_>],
    slices: &[&Value],
    vip: Option<Ipv4Addr>,
    cluster_domain: &str,
) -> ServiceEntry {
    let meta = &service["metadata"];
    let name = meta["name"].as_str().unwrap_or_default().to_string();
    let namespace = meta["namespace"].as_str().unwrap_or("default").to_string();
    let fqdn = format!("{name}.{namespace}.svc.{cluster_domain}");
    let declared = declared_cluster_ip(service);
    let cluster_ip = match declared {
        ClusterIp::Headless => None,
        ClusterIp::Address(ip) => Some(ip),
        ClusterIp::Unset => vip.map(IpAddr::V4),
    };
    let headless = declared == ClusterIp::Headless;
    let selector = string_map(&service["spec"]["selector"]);
    let selected: Vec<PodRef<'_>> = if selector.is_empty() {
        Vec::new()
    } else {
        pods.iter()
            .filter(|p| p.entry.namespace == namespace && selects(&selector, &p.entry.labels))
            .copied()
            .collect()
    };
    let own_slices: Vec<&Value> = if selector.is_empty() {
        slices
            .iter()
            .filter(|s| {
                s["metadata"]["labels"][SERVICE_NAME_LABEL].as_str() == Some(name.as_str())
                    && s["metadata"]["namespace"].as_str().unwrap_or("default") == namespace
            })
            .copied()
            .collect()
    } else {
        Vec::new()
    };
    let ports = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| port_entry(p, &selected, &own_slices))
        .collect();
    let per_pod_dns = |hostname: Option<&str>| {
        hostname
            .filter(|_| headless)
            .map(|h| format!("{h}.{name}.{namespace}.svc.{cluster_domain}"))
    };
    let mut endpoints = Vec::new();
    let mut seen = BTreeSet::new();
    for p in &selected {
        let Some(ip) = p.entry.ip else { continue };
        if !seen.insert(ip) {
            continue;
        }
        let hostname = match (&p.entry.hostname, &p.entry.subdomain) {
            (Some(h), Some(sub)) if *sub == name => per_pod_dns(Some(h)),
            _ => None,
        };
        endpoints.push(endpoint_of(p.entry, ip, hostname));
    }
    for slice in &own_slices {
        for ep in slice["endpoints"].as_array().into_iter().flatten() {
            let target = ep["targetRef"]["name"].as_str().unwrap_or_default();
            let pod = pods.iter().find(|p| {
                !target.is_empty() && p.entry.name == target && p.entry.namespace == namespace
            });
            let ready = ep["conditions"]["ready"].as_bool().unwrap_or(true);
            let hostname = per_pod_dns(ep["hostname"].as_str());
            for address in ep["addresses"].as_array().into_iter().flatten() {
                let Some(ip) = address.as_str().and_then(|a| a.parse::<IpAddr>().ok()) else {
                    continue;
                };
                if !seen.insert(ip) {
                    continue;
                }
                let mut entry = match pod {
                    Some(p) => endpoint_of(p.entry, ip, hostname.clone()),
                    None => EndpointEntry {
                        ip,
                        pod: target.to_string(),
                        namespace: namespace.clone(),
                        workload: String::new(),
                        service_account: String::new(),
                        labels: Labels::new(),
                        has_sidecar: false,
                        ready,
                        hostname: hostname.clone(),
                    },
                };
                entry.ready = entry.ready && ready;
                endpoints.push(entry);
            }
        }
    }
    let export_to = match meta["annotations"][EXPORT_TO].as_str() {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        None => vec!["*".to_string()],
    };
    ServiceEntry {
        name,
        namespace,
        fqdn,
        cluster_ip,
        ports,
        endpoints,
        labels: string_map(&meta["labels"]),
        export_to,
    }
}

/// The endpoint pod `pod` makes at `ip`, with its per-pod DNS name if it has one.
pub fn endpoint_of(pod: &PodEntry, ip: IpAddr, hostname: Option<String>) -> EndpointEntry {
    EndpointEntry {
        ip,
        pod: pod.name.clone(),
        namespace: pod.namespace.clone(),
        workload: pod.workload.clone(),
        service_account: pod.service_account.clone(),
        labels: pod.labels.clone(),
        has_sidecar: pod.has_sidecar,
        ready: pod.ready,
        hostname,
    }
}

/// One service port; `targetPort` as a number, as a name resolved through the selected
/// pods' container ports (or the slices' ports), or absent (the service port).
fn port_entry(port: &Value, pods: &[PodRef<'_>], slices: &[&Value]) -> Option<PortEntry> {
    let number = u16::try_from(port["port"].as_u64()?).ok()?;
    let name = port["name"].as_str().unwrap_or_default().to_string();
    let target_port = match &port["targetPort"] {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .unwrap_or(number),
        Value::String(s) => match s.parse::<u16>() {
            Ok(n) => n,
            Err(_) => named_port(s, pods)
                .or_else(|| slice_port(&name, slices))
                .unwrap_or(number),
        },
        _ => number,
    };
    Some(PortEntry {
        name,
        port: number,
        target_port,
        app_protocol: port["appProtocol"].as_str().map(str::to_string),
    })
}

/// The container port named `name` in the first pod that has one.
fn named_port(name: &str, pods: &[PodRef<'_>]) -> Option<u16> {
    pods.iter().find_map(|p| {
        p.ports
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, port)| *port)
    })
}

/// The port named like the service port in an EndpointSlice.
fn slice_port(name: &str, slices: &[&Value]) -> Option<u16> {
    slices.iter().find_map(|s| {
        s["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"].as_str().unwrap_or_default() == name)
            .and_then(|p| u16::try_from(p["port"].as_u64()?).ok())
    })
}

/// Whether every pair of `selector` is among `labels`.
pub fn selects(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A JSON object of strings as a label map (other values are ignored).
pub fn string_map(value: &Value) -> Labels {
    value
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::testing::pod;
    use serde_json::json;

    #[test]
    fn selector_named_target_port_and_vip() {
        let a = pod("default", "a", "10.0.0.1", &[("app", "web"), ("v", "1")]);
        let b = pod("default", "b", "10.0.0.2", &[("app", "other")]);
        let c = pod("default", "c", "", &[("app", "web")]);
        let manifest = json!({"spec": {"containers": [{"name": "x",
            "ports": [{"name": "http", "containerPort": 8080}, {"containerPort": 9},
                      {"name": "big", "containerPort": 70000}]}],
            "initContainers": [{"name": "y", "ports": [{"name": "admin", "containerPort": 15000}]}]}});
        let ports = named_ports(&manifest);
        assert_eq!(
            ports,
            [("http".to_string(), 8080), ("admin".to_string(), 15000)]
        );
        let pods = [&a, &b, &c].map(|entry| PodRef {
            entry,
            ports: &ports,
        });
        let svc = json!({"metadata": {"name": "web", "namespace": "default",
                "annotations": {EXPORT_TO: "., istio-system"}},
            "spec": {"selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "grpc", "port": 9000},
                {"name": "bad", "port": 70000}]}});
        let vip = Ipv4Addr::new(198, 19, 0, 1);
        let entry = service_entry(&svc, &pods, &[], Some(vip), "cluster.local");
        assert_eq!(entry.fqdn, "web.default.svc.cluster.local");
        assert_eq!(entry.cluster_ip, Some(IpAddr::V4(vip)));
        assert_eq!(entry.ports.len(), 2);
        assert_eq!(entry.ports[0].target_port, 8080);
        assert_eq!(entry.ports[1].target_port, 9000);
        let names: Vec<_> = entry.endpoints.iter().map(|e| e.pod.as_str()).collect();
        assert_eq!(names, ["a"]);
        assert_eq!(entry.export_to, [".", "istio-system"]);
    }

    #[test]
    fn selectorless_service_reads_endpoint_slices() {
        let svc = json!({"metadata": {"name": "ext"}, "spec": {"clusterIP": "None",
            "ports": [{"name": "tcp-db", "port": 5432, "targetPort": "db"}]}});
        let slice = json!({"metadata": {"name": "ext-1", "labels": {SERVICE_NAME_LABEL: "ext"}},
            "ports": [{"name": "tcp-db", "port": 15432}],
            "endpoints": [{"addresses": ["192.0.2.7"], "hostname": "db0",
                "conditions": {"ready": false}}]});
        let entry = service_entry(&svc, &[], &[&slice], None, "cluster.local");
        assert_eq!(entry.cluster_ip, None);
        assert_eq!(entry.ports[0].target_port, 15432);
        assert_eq!(entry.endpoints.len(), 1);
        let ep = &entry.endpoints[0];
        assert_eq!(ep.ip, IpAddr::from([192, 0, 2, 7]));
        assert!(!ep.ready && !ep.has_sidecar);
        assert_eq!(
            ep.hostname.as_deref(),
            Some("db0.ext.default.svc.cluster.local")
        );
    }
}
