//! The config compiler: a pure function from the registry (services, endpoints, pods, Istio
//! policies) and one proxy's identity to that proxy's configuration, with Istio's rules —
//! short hosts resolved against the resource's namespace, one VirtualService per host,
//! DestinationRule precedence, subsets by labels, automatic mTLS, PeerAuthentication scopes.
//! The output is deterministic (sorted), whatever the order of the registry's lists.
//!
//! Passes, one module each: `scope` (precedence order, `exportTo`, selectors, host
//! specificity), `services` (identity, visible services), `routes` (VirtualService binding
//! and rules), `destination_rule` (rule choice, policy merging), `clusters` (endpoints,
//! policy, TLS), `mtls` and `inbound` (PeerAuthentication, inbound ports).

mod clusters;
mod destination_rule;
mod inbound;
mod mtls;
mod routes;
mod scope;
mod services;

use ferry_model::IstioResource;
use ferry_model::istio::{DestinationRuleSpec, PeerAuthenticationSpec, VirtualServiceSpec};
use ferry_proto::config::{OutboundPort, ProxyConfig, Settings, cluster_name};
use ferry_proto::protocol::Protocol;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::registry::{Labels, ProxyIdentity, Registry};
use clusters::Target;
use routes::Port;

/// A compiled configuration and what the compiler has to say about its inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    /// The proxy's configuration.
    pub config: ProxyConfig,
    /// Conflicts and degraded choices (two VirtualServices for one host, a headless service
    /// with a sidecar-less endpoint, an undeclared subset...), sorted.
    pub warnings: Vec<String>,
}

/// What the compiler's passes share: the inputs in a stable order, the proxy's scope, the
/// host index, the clusters routes ask for, and the warnings so far.
pub(crate) struct Context<'a> {
    /// The registry.
    pub registry: &'a Registry,
    /// The proxy's namespace.
    pub client_ns: String,
    /// The proxy's pod labels.
    pub client_labels: Labels,
    /// Cluster DNS domain.
    pub domain: String,
    /// Root namespace.
    pub root_ns: String,
    /// VirtualServices, oldest first.
    pub virtual_services: Vec<&'a IstioResource<VirtualServiceSpec>>,
    /// DestinationRules, oldest first.
    pub destination_rules: Vec<&'a IstioResource<DestinationRuleSpec>>,
    /// PeerAuthentications, oldest first.
    pub peer_authentications: Vec<&'a IstioResource<PeerAuthenticationSpec>>,
    /// Visible hosts: service FQDNs and StatefulSet per-pod names.
    pub hosts: BTreeMap<String, Target<'a>>,
    /// Clusters referenced: (host, port, subset).
    pub needed: BTreeSet<(String, u16, Option<String>)>,
    /// Warnings.
    pub warnings: Vec<String>,
}

impl Context<'_> {
    /// Records a warning.
    pub fn warn(&mut self, message: String) {
        self.warnings.push(message);
    }

    /// Records that a route sends traffic to this cluster.
    pub fn need(&mut self, host: &str, port: u16, subset: Option<&str>) {
        self.needed
            .insert((host.to_string(), port, subset.map(str::to_string)));
    }

    /// The port of `host`'s service when it has exactly one (a destination may omit it then).
    pub fn single_port(&self, host: &str) -> Option<u16> {
        match self.hosts.get(host).map(|t| t.service.ports.as_slice()) {
            Some([only]) => Some(only.port),
            _ => None,
        }
    }
}

fn or_default(value: &str, default: &str) -> String {
    if value.is_empty() { default } else { value }.to_string()
}

/// Compiles the configuration of the proxy `proxy`.
pub fn compile(registry: &Registry, proxy: &ProxyIdentity) -> Compiled {
    let visible = services::visible(registry, &proxy.namespace);
    let mut cx = Context {
        registry,
        client_ns: proxy.namespace.clone(),
        client_labels: services::labels(registry, proxy),
        domain: or_default(&registry.cluster_domain, "cluster.local"),
        root_ns: or_default(&registry.root_namespace, "istio-system"),
        virtual_services: scope::sorted(&registry.policies.virtual_services),
        destination_rules: scope::sorted(&registry.policies.destination_rules),
        peer_authentications: scope::sorted(&registry.policies.peer_authentications),
        hosts: BTreeMap::new(),
        needed: BTreeSet::new(),
        warnings: Vec::new(),
    };
    for svc in &visible {
        cx.hosts.entry(svc.fqdn.clone()).or_insert(Target {
            service: svc,
            pod: None,
        });
    }
    for svc in &visible {
        let mut eps: Vec<_> = svc.endpoints.iter().collect();
        eps.sort_by(|a, b| (a.ip, &a.pod).cmp(&(b.ip, &b.pod)));
        for ep in eps {
            if let Some(h) = &ep.hostname {
                cx.hosts.entry(h.clone()).or_insert(Target {
                    service: svc,
                    pod: Some(ep),
                });
            }
        }
    }

    let mut outbound = Vec::new();
    let targets: Vec<(String, Target<'_>)> =
        cx.hosts.iter().map(|(h, t)| (h.clone(), *t)).collect();
    for (host, target) in targets {
        let vs = routes::bind(&mut cx, &host);
        if target.pod.is_some() && vs.is_none() {
            continue; // a per-pod name gets its own routes only when a VirtualService binds it
        }
        let svc = target.service;
        let subsets: Vec<String> = if target.pod.is_none() {
            destination_rule::select(&mut cx, &host, &svc.namespace)
                .map(|dr| {
                    dr.spec
                        .subsets
                        .iter()
                        .filter_map(|s| s.name.clone())
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut ports: Vec<_> = svc.ports.iter().collect();
        ports.sort_by_key(|p| (p.port, p.name.clone()));
        for p in ports {
            let protocol = Protocol::of_port(&p.name, p.app_protocol.as_deref());
            cx.need(&host, p.port, None);
            for s in &subsets {
                cx.need(&host, p.port, Some(s));
            }
            let (http, tcp, tls) = match vs {
                Some(vs) => routes::rules(
                    &mut cx,
                    vs,
                    &Port {
                        number: p.port,
                        protocol,
                    },
                ),
                None => Default::default(),
            };
            let addresses: Vec<IpAddr> = match target.pod {
                Some(ep) => vec![ep.ip],
                None => svc.cluster_ip.into_iter().collect(),
            };
            outbound.push(OutboundPort {
                passthrough: target.pod.is_none() && svc.cluster_ip.is_none(),
                host: host.clone(),
                port: p.port,
                protocol,
                addresses,
                virtual_service: vs.map(scope::id),
                http,
                tcp,
                tls,
                default_cluster: cluster_name(p.port, None, &host),
            });
        }
    }

    let mut clusters = Vec::new();
    let needed = std::mem::take(&mut cx.needed);
    for (host, port, subset) in needed {
        let Some(target) = cx.hosts.get(&host).copied() else {
            cx.warn(format!(
                "a route sends traffic to {host}:{port}, which is not a known service"
            ));
            continue;
        };
        let Some(entry) = target.service.ports.iter().find(|p| p.port == port) else {
            cx.warn(format!(
                "a route sends traffic to {host}:{port}, a port the service does not declare"
            ));
            continue;
        };
        if let Some(c) = clusters::build(&mut cx, target, entry, subset.as_deref()) {
            clusters.push(c);
        }
    }
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    clusters.dedup_by(|a, b| a.name == b.name);

    let identity = services::identity(registry, proxy);
    let inbound = inbound::build(&mut cx, &proxy.pod, identity.ip);
    let mut warnings = cx.warnings;
    warnings.sort();
    warnings.dedup();
    Compiled {
        config: ProxyConfig {
            version: String::new(),
            identity,
            services: visible.iter().map(|s| services::service(s)).collect(),
            settings: Settings {
                cluster_domain: cx.domain,
                ..Settings::default()
            },
            outbound,
            clusters,
            inbound,
            outbound_traffic_policy: Default::default(),
        },
        warnings,
    }
}
