//! The proxy's identity and the services it can see (`exportTo` `*` or its namespace), in the
//! configuration's form, sorted by namespace and name, endpoints by IP.

use ferry_proto::config::{Endpoint, Identity, Service, ServicePort};

use super::scope::exported_to;
use crate::registry::{Labels, PodEntry, ProxyIdentity};
use crate::registry::{Registry, ServiceEntry};

/// The endpoint labels a proxy reads (its telemetry's app, version and canonical service
/// and revision of a peer; `Workload::from_labels` in the proxy): only these are sent, the
/// rest of a pod's labels would make every snapshot several times larger.
pub const TELEMETRY_LABELS: [&str; 6] = [
    "app",
    "app.kubernetes.io/name",
    "app.kubernetes.io/version",
    "service.istio.io/canonical-name",
    "service.istio.io/canonical-revision",
    "version",
];

/// The proxy's pod entry (the first with its namespace and name).
pub fn pod<'a>(registry: &'a Registry, proxy: &ProxyIdentity) -> Option<&'a PodEntry> {
    registry
        .pods
        .iter()
        .find(|p| p.name == proxy.pod && p.namespace == proxy.namespace)
}

/// The proxy's identity: from its pod entry when the registry has one, else as it said.
pub fn identity_of(pod: Option<&PodEntry>, proxy: &ProxyIdentity) -> Identity {
    let pick = |from_pod: Option<&String>, said: &String| {
        from_pod.filter(|s| !s.is_empty()).unwrap_or(said).clone()
    };
    Identity {
        pod: proxy.pod.clone(),
        namespace: proxy.namespace.clone(),
        workload: pick(pod.map(|p| &p.workload), &proxy.workload),
        service_account: pick(pod.map(|p| &p.service_account), &proxy.service_account),
        labels: pod.map(|p| p.labels.clone()).unwrap_or_default(),
        ip: pod.and_then(|p| p.ip).or(proxy.ip),
        trust_domain: "cluster.local".into(),
        cluster: "Kubernetes".into(),
    }
}

/// The proxy's labels (empty when its pod is unknown).
pub fn labels(registry: &Registry, proxy: &ProxyIdentity) -> Labels {
    pod(registry, proxy)
        .map(|p| p.labels.clone())
        .unwrap_or_default()
}

/// The services visible from namespace `client`, sorted by namespace and name.
pub fn visible<'a>(registry: &'a Registry, client: &str) -> Vec<&'a ServiceEntry> {
    let mut v: Vec<&ServiceEntry> = registry
        .services
        .iter()
        .filter(|s| exported_to(&s.export_to, &s.namespace, client))
        .collect();
    v.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    v.dedup_by(|a, b| a.namespace == b.namespace && a.name == b.name);
    v
}

/// A service in the configuration's form.
pub fn service(s: &ServiceEntry) -> Service {
    let mut ports: Vec<ServicePort> = s
        .ports
        .iter()
        .map(|p| ServicePort {
            name: p.name.clone(),
            port: p.port,
            target_port: Some(p.target_port),
            app_protocol: p.app_protocol.clone(),
            protocol: None,
        })
        .collect();
    ports.sort_by(|a, b| (a.port, &a.name).cmp(&(b.port, &b.name)));
    let mut endpoints: Vec<Endpoint> = s
        .endpoints
        .iter()
        .map(|e| Endpoint {
            ip: e.ip,
            pod: e.pod.clone(),
            workload: e.workload.clone(),
            namespace: Some(e.namespace.clone()),
            service_account: e.service_account.clone(),
            labels: (e.labels.iter())
                .filter(|(k, _)| TELEMETRY_LABELS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            has_sidecar: e.has_sidecar,
            ready: e.ready,
        })
        .collect();
    endpoints.sort_by(|a, b| (a.ip, &a.pod).cmp(&(b.ip, &b.pod)));
    Service {
        name: s.name.clone(),
        namespace: s.namespace.clone(),
        cluster_ip: s.cluster_ip,
        ports,
        endpoints,
    }
}
