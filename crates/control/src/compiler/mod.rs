//! The config compiler: a pure function from the registry (services, endpoints, pods, Istio
//! policies) and one proxy's identity to that proxy's configuration, with Istio's rules —
//! short hosts resolved against the resource's namespace, one VirtualService per host,
//! DestinationRule precedence, subsets by labels, automatic mTLS, PeerAuthentication scopes.
//! The output is deterministic (sorted), whatever the order of the registry's lists.
//!
//! Passes, one module each: `scope` (precedence order, `exportTo`, selectors, host
//! specificity), `services` (identity, visible services), `routes` (VirtualService binding
//! and rules), `delegate` (delegated HTTP rules merged into their root), `destination_rule` (rule choice, policy merging), `clusters` (endpoints,
//! policy, TLS), `mtls` and `inbound` (PeerAuthentication, inbound ports), `redis_policy`
//! (Ferry's RedisPolicies on outbound ports), `tracing` (Telemetry, mesh config and the pod's
//! `proxy.istio.io/config`: the proxy's tracing settings).

pub mod cache;
mod clusters;
mod delegate;
mod destination_rule;
mod inbound;
pub mod mtls;
mod redis_policy;
mod routes;
mod scope;
mod services;
pub mod tracing;

use ferry_model::IstioResource;
use ferry_model::istio::{DestinationRuleSpec, PeerAuthenticationSpec, VirtualServiceSpec};
use ferry_proto::config::{
    Cluster, Identity, Inbound, OutboundPort, ProxyConfig, Service, Settings, cluster_name,
};
use ferry_proto::protocol::Protocol;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::registry::{Labels, ProxyIdentity, Registry, ServiceEntry};
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
    let client_labels = services::labels(registry, proxy);
    let shared = shared(registry, &proxy.namespace, &client_labels);
    let all: Vec<&ServiceEntry> = registry.services.iter().collect();
    let own = own(
        registry,
        proxy,
        services::pod(registry, proxy),
        &client_labels,
        &all,
    );
    let mut warnings = shared.warnings;
    warnings.extend(own.warnings);
    warnings.sort();
    warnings.dedup();
    Compiled {
        config: ProxyConfig {
            version: String::new(),
            identity: own.identity,
            services: shared.services,
            settings: shared.settings,
            outbound: shared.outbound,
            clusters: shared.clusters,
            inbound: own.inbound,
            outbound_traffic_policy: Default::default(),
            tracing: own.tracing,
        },
        warnings,
    }
}

/// The part of a configuration that depends only on the proxy's namespace and on which
/// workload-selecting DestinationRules select it (see [`cache::class_of`]): the services
/// it sees, its outbound ports and clusters, its settings.
pub(crate) struct Shared {
    pub services: Vec<Service>,
    pub settings: Settings,
    pub outbound: Vec<OutboundPort>,
    pub clusters: Vec<Cluster>,
    /// Warnings, sorted.
    pub warnings: Vec<String>,
}

/// The part of a configuration that is the proxy's own: identity, inbound ports and
/// tracing.
pub(crate) struct Own {
    pub identity: Identity,
    pub inbound: Inbound,
    pub tracing: Option<ferry_proto::config::Tracing>,
    pub warnings: Vec<String>,
}

fn context<'a>(registry: &'a Registry, client_ns: &str, client_labels: &Labels) -> Context<'a> {
    Context {
        client_ns: client_ns.to_string(),
        client_labels: client_labels.clone(),
        domain: or_default(&registry.cluster_domain, "cluster.local"),
        root_ns: or_default(&registry.root_namespace, "istio-system"),
        virtual_services: Vec::new(),
        destination_rules: Vec::new(),
        peer_authentications: scope::sorted(&registry.policies.peer_authentications),
        hosts: BTreeMap::new(),
        needed: BTreeSet::new(),
        warnings: Vec::new(),
    }
}

/// Services, outbound ports and clusters for a proxy of namespace `client_ns` with
/// `client_labels`.
pub(crate) fn shared(registry: &Registry, client_ns: &str, client_labels: &Labels) -> Shared {
    let visible = services::visible(registry, client_ns);
    let mut cx = context(registry, client_ns, client_labels);
    cx.virtual_services = scope::sorted(&registry.policies.virtual_services);
    cx.destination_rules = scope::sorted(&registry.policies.destination_rules);
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
                redis_policies: Vec::new(),
            });
        }
    }

    let redis_policies = redis_policy::of(registry);
    redis_policy::attach(&mut cx, &redis_policies, &mut outbound);

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
    let mut warnings = cx.warnings;
    warnings.sort();
    warnings.dedup();
    Shared {
        services: visible.iter().map(|s| services::service(s)).collect(),
        settings: Settings {
            cluster_domain: cx.domain,
            ..Settings::default()
        },
        outbound,
        clusters,
        warnings,
    }
}

/// The proxy's identity and inbound ports. `pod` is the proxy's pod entry (the first with
/// its namespace and name), `candidates` the services (in registry order) among which those
/// with the proxy as an endpoint are found.
pub(crate) fn own(
    registry: &Registry,
    proxy: &ProxyIdentity,
    pod: Option<&crate::registry::PodEntry>,
    client_labels: &Labels,
    candidates: &[&ServiceEntry],
) -> Own {
    let mut cx = context(registry, &proxy.namespace, client_labels);
    let identity = services::identity_of(pod, proxy);
    let inbound = inbound::build(&mut cx, &proxy.pod, identity.ip, candidates);
    let no_annotations = Labels::new();
    let tracing = tracing::of(
        registry,
        &cx.root_ns,
        &proxy.namespace,
        client_labels,
        pod.map_or(&no_annotations, |p| &p.annotations),
    );
    Own {
        identity,
        inbound,
        tracing,
        warnings: cx.warnings,
    }
}
