//! A configuration compiled for the data path: lookups from a destination address to the
//! service port and endpoints behind it, and from a peer address to its workload, and the
//! routing table ([`crate::route::Table`]: VirtualService rules and clusters with their
//! policies). A snapshot is immutable; a new configuration is a new snapshot, swapped in
//! atomically ([`Snapshot::compile_after`] carries the clusters' live state over).

use super::{Endpoint, Protocol, ProxyConfig, Service};
use crate::route;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A service as metrics name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceName {
    /// Short name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// `<name>.<namespace>.svc.<cluster domain>`.
    pub fqdn: String,
}

/// A workload as metrics name it: one endpoint, or the proxy itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    /// Pod name.
    pub pod: String,
    /// Workload name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Service account.
    pub service_account: String,
    /// `app` label (or `app.kubernetes.io/name`).
    pub app: String,
    /// `version` label (or `app.kubernetes.io/version`).
    pub version: String,
    /// Canonical service name.
    pub canonical_service: String,
    /// Canonical revision.
    pub canonical_revision: String,
    /// Whether the pod has a sidecar.
    pub has_sidecar: bool,
}

impl Workload {
    fn from_labels(
        pod: &str,
        name: &str,
        namespace: &str,
        service_account: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Self {
        let first = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| labels.get(*k).filter(|v| !v.is_empty()))
                .cloned()
                .unwrap_or_default()
        };
        let app = first(&["app", "app.kubernetes.io/name"]);
        let version = first(&["version", "app.kubernetes.io/version"]);
        let mut canonical_service = first(&[
            "service.istio.io/canonical-name",
            "app.kubernetes.io/name",
            "app",
        ]);
        if canonical_service.is_empty() {
            canonical_service = name.to_string();
        }
        let mut canonical_revision = first(&[
            "service.istio.io/canonical-revision",
            "app.kubernetes.io/version",
            "version",
        ]);
        if canonical_revision.is_empty() {
            canonical_revision = "latest".into();
        }
        Self {
            pod: pod.to_string(),
            name: name.to_string(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
            app,
            version,
            canonical_service,
            canonical_revision,
            has_sidecar: false,
        }
    }

    /// The SPIFFE principal of the workload, or `unknown` without a service account.
    pub fn principal(&self, trust_domain: &str) -> String {
        if self.service_account.is_empty() || self.namespace.is_empty() {
            return String::new();
        }
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }
}

/// A pod that traffic can be sent to.
#[derive(Debug)]
pub struct Upstream {
    /// Pod IP.
    pub ip: IpAddr,
    /// Who runs there.
    pub workload: Arc<Workload>,
}

/// One port of one service, with its ready endpoints.
#[derive(Debug)]
pub struct Target {
    /// The service.
    pub service: Arc<ServiceName>,
    /// Service port.
    pub port: u16,
    /// Port on the endpoints.
    pub target_port: u16,
    /// Declared protocol.
    pub protocol: Protocol,
    /// Whether the service is headless (traffic goes to the address the client dialled).
    pub headless: bool,
    /// The cluster IP and service port, when the service has one.
    pub vip: Option<SocketAddr>,
    /// Ready endpoints.
    pub endpoints: Vec<Upstream>,
    next: AtomicUsize,
}

impl Target {
    /// The next endpoint in round-robin order; `None` when there is none ready.
    pub fn pick(&self) -> Option<&Upstream> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        self.endpoints.get(i)
    }
}

/// Where an outbound connection goes.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A service's cluster IP: load-balanced over its endpoints.
    Service(Arc<Target>),
    /// An endpoint of a known service, dialled directly (headless services, StatefulSet
    /// pod names): forwarded to exactly that address.
    Endpoint(Arc<Target>, Option<Arc<Workload>>),
    /// An address the configuration does not know: forwarded as dialled.
    Passthrough,
}

/// An immutable, compiled configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// The configuration it was compiled from (for the admin config dump).
    pub config: ProxyConfig,
    /// The proxy's own workload.
    pub me: Arc<Workload>,
    /// Routes and clusters.
    pub routes: route::Table,
    by_vip: HashMap<SocketAddr, Arc<Target>>,
    by_endpoint: HashMap<SocketAddr, Arc<Target>>,
    workloads: HashMap<IpAddr, Arc<Workload>>,
}

fn endpoint_workload(ep: &Endpoint, service: &Service) -> Workload {
    let namespace = ep
        .namespace
        .clone()
        .unwrap_or_else(|| service.namespace.clone());
    let mut w = Workload::from_labels(
        &ep.pod,
        &ep.workload,
        &namespace,
        &ep.service_account,
        &ep.labels,
    );
    w.has_sidecar = ep.has_sidecar;
    w
}

impl Snapshot {
    /// Compiles a configuration.
    pub fn compile(config: ProxyConfig) -> Snapshot {
        Snapshot::compile_after(config, None)
    }

    /// Compiles a configuration that replaces `previous`: clusters keep their live state
    /// (ejected endpoints, connections and requests in flight, pool counters).
    pub fn compile_after(config: ProxyConfig, previous: Option<&Snapshot>) -> Snapshot {
        let id = &config.identity;
        let mut me = Workload::from_labels(
            &id.pod,
            &id.workload,
            &id.namespace,
            &id.service_account,
            &id.labels,
        );
        me.has_sidecar = true;
        let mut by_vip = HashMap::new();
        let mut by_endpoint = HashMap::new();
        let mut workloads: HashMap<IpAddr, Arc<Workload>> = HashMap::new();
        let mut services: HashMap<String, Arc<ServiceName>> = HashMap::new();
        for svc in &config.services {
            let name = Arc::new(ServiceName {
                name: svc.name.clone(),
                namespace: svc.namespace.clone(),
                fqdn: format!(
                    "{}.{}.svc.{}",
                    svc.name, svc.namespace, config.settings.cluster_domain
                ),
            });
            services
                .entry(name.fqdn.clone())
                .or_insert_with(|| name.clone());
            for ep in &svc.endpoints {
                workloads
                    .entry(ep.ip)
                    .or_insert_with(|| Arc::new(endpoint_workload(ep, svc)));
            }
            for port in &svc.ports {
                if port
                    .protocol
                    .as_deref()
                    .is_some_and(|p| !p.eq_ignore_ascii_case("TCP"))
                {
                    continue;
                }
                let endpoints = svc
                    .endpoints
                    .iter()
                    .filter(|ep| ep.ready)
                    .map(|ep| Upstream {
                        ip: ep.ip,
                        workload: workloads
                            .get(&ep.ip)
                            .cloned()
                            .unwrap_or_else(|| Arc::new(endpoint_workload(ep, svc))),
                    })
                    .collect();
                let target = Arc::new(Target {
                    service: name.clone(),
                    port: port.port,
                    target_port: port.target(),
                    protocol: Protocol::of_port(&port.name, port.app_protocol.as_deref()),
                    headless: svc.cluster_ip.is_none(),
                    vip: svc.cluster_ip.map(|ip| SocketAddr::new(ip, port.port)),
                    endpoints,
                    next: AtomicUsize::new(0),
                });
                if let Some(vip) = svc.cluster_ip {
                    by_vip.insert(SocketAddr::new(vip, port.port), target.clone());
                }
                for ep in &svc.endpoints {
                    by_endpoint
                        .entry(SocketAddr::new(ep.ip, port.target()))
                        .or_insert_with(|| target.clone());
                }
            }
        }
        let routes = route::Table::build(
            &config,
            &route::Inputs {
                workloads: &workloads,
                services: &services,
                previous: previous.map(|p| &p.routes),
            },
        );
        Snapshot {
            me: Arc::new(me),
            routes,
            by_vip,
            by_endpoint,
            workloads,
            config,
        }
    }

    /// Where an outbound connection to `dst` goes.
    pub fn outbound(&self, dst: SocketAddr) -> Outbound {
        if let Some(t) = self.by_vip.get(&dst) {
            return Outbound::Service(t.clone());
        }
        if let Some(t) = self.by_endpoint.get(&dst) {
            return Outbound::Endpoint(t.clone(), self.workloads.get(&dst.ip()).cloned());
        }
        Outbound::Passthrough
    }

    /// The service port an inbound connection to `dst` (this pod's IP and port) belongs to.
    pub fn inbound(&self, dst: SocketAddr) -> Option<Arc<Target>> {
        self.by_endpoint.get(&dst).cloned().or_else(|| {
            // Behind REDIRECT the destination is the pod IP; fall back to the port alone
            // for the services this proxy's own pod is part of.
            let me = self.config.identity.ip?;
            self.by_endpoint
                .get(&SocketAddr::new(me, dst.port()))
                .cloned()
        })
    }

    /// The workload running at `ip`, if the configuration knows it.
    pub fn workload_at(&self, ip: IpAddr) -> Option<Arc<Workload>> {
        self.workloads.get(&ip).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Identity, ServicePort};

    fn config() -> ProxyConfig {
        let ep = |ip: &str, pod: &str| Endpoint {
            ip: ip.parse().expect("ip"),
            pod: pod.into(),
            workload: "redis".into(),
            service_account: "default".into(),
            labels: [("app".to_string(), "redis".to_string())].into(),
            has_sidecar: true,
            ready: true,
            namespace: None,
        };
        ProxyConfig {
            identity: Identity {
                pod: "client-1".into(),
                namespace: "default".into(),
                workload: "client".into(),
                ip: Some("198.18.0.9".parse().expect("ip")),
                ..Default::default()
            },
            services: vec![
                Service {
                    name: "redis".into(),
                    namespace: "default".into(),
                    cluster_ip: None,
                    ports: vec![ServicePort {
                        name: "tcp-redis".into(),
                        port: 6379,
                        ..Default::default()
                    }],
                    endpoints: vec![ep("198.18.0.2", "redis-0"), ep("198.18.0.3", "redis-1")],
                },
                Service {
                    name: "cache".into(),
                    namespace: "default".into(),
                    cluster_ip: Some("198.19.0.10".parse().expect("ip")),
                    ports: vec![ServicePort {
                        name: "redis".into(),
                        port: 6379,
                        target_port: Some(7000),
                        ..Default::default()
                    }],
                    endpoints: vec![ep("198.18.0.4", "cache-0"), ep("198.18.0.5", "cache-1")],
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn outbound_routing() {
        let snap = Snapshot::compile(config());
        match snap.outbound("198.19.0.10:6379".parse().expect("addr")) {
            Outbound::Service(t) => {
                assert_eq!(t.service.fqdn, "cache.default.svc.cluster.local");
                assert_eq!(t.target_port, 7000);
                assert_eq!(t.protocol, Protocol::Redis);
                let a = t.pick().expect("endpoint").ip;
                let b = t.pick().expect("endpoint").ip;
                assert_ne!(a, b, "round robin");
            }
            other => panic!("{other:?}"),
        }
        match snap.outbound("198.18.0.3:6379".parse().expect("addr")) {
            Outbound::Endpoint(t, w) => {
                assert!(t.headless);
                assert_eq!(w.expect("known pod").pod, "redis-1");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            snap.outbound("10.9.9.9:80".parse().expect("addr")),
            Outbound::Passthrough
        ));
    }

    #[test]
    fn peers_and_identity() {
        let snap = Snapshot::compile(config());
        let w = snap
            .workload_at("198.18.0.2".parse().expect("ip"))
            .expect("known");
        assert_eq!(
            (w.app.as_str(), w.canonical_revision.as_str()),
            ("redis", "latest")
        );
        assert_eq!(
            w.principal("cluster.local"),
            "spiffe://cluster.local/ns/default/sa/default"
        );
        assert_eq!(snap.me.canonical_service, "client");
    }
}
