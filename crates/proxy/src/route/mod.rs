//! Outbound routing compiled for the data path: for every address a client may dial (a
//! service's cluster IP and port, a pod of a headless service, a StatefulSet pod's own name),
//! the rules of the VirtualService bound to that host — TLS rules by server name, TCP rules,
//! HTTP rules — in order (the first match wins), each naming weighted clusters, and the
//! default cluster when no rule matches. Clusters are shared by every route that names them.
//!
//! - [`l4`]: TCP and TLS match conditions.
//! - [`weighted`]: the weighted choice among a rule's destinations.
//! - [`http`]: HTTP match conditions and rules.

pub mod http;
pub mod l4;
pub mod weighted;

use crate::cluster::UpstreamCluster;
use crate::config::snapshot::{ServiceName, Workload};
use crate::config::{Cluster, ClusterEndpoint, OutboundPort, Protocol, ProxyConfig, cluster_name};
use crate::resilience::retry::RetryPolicy;
use ferry_model::istio::destination_rule::{LoadBalancerSettings, SimpleLb};
use l4::{Connection, L4Match, Source};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use weighted::Weighted;

/// A destination of a rule: a cluster name and, when the configuration has it, the cluster.
#[derive(Debug, Clone)]
pub struct Destination {
    /// `outbound|<port>|<subset>|<host>`.
    pub name: String,
    /// The cluster; `None` when the configuration lacks it (traffic to it fails).
    pub cluster: Option<Arc<UpstreamCluster>>,
}

/// One TCP or TLS rule.
#[derive(Debug, Clone)]
pub struct L4Rule {
    /// Match entries, OR-ed; empty matches everything.
    pub matches: Vec<L4Match>,
    /// Weighted destinations.
    pub route: Weighted<Destination>,
}

/// The routes of one dialled host:port.
#[derive(Debug)]
pub struct PortRoutes {
    /// Fully qualified host.
    pub host: String,
    /// Service port.
    pub port: u16,
    /// Declared protocol.
    pub protocol: Protocol,
    /// The host is a headless service: clients dial its pods.
    pub passthrough: bool,
    /// `namespace/name` of the VirtualService, if one binds the host.
    pub virtual_service: Option<String>,
    /// TLS rules, by server name.
    pub tls: Vec<L4Rule>,
    /// TCP rules.
    pub tcp: Vec<L4Rule>,
    /// HTTP rules.
    pub http: Vec<http::HttpRule>,
    /// Where traffic no rule matches goes.
    pub default: Destination,
    /// Istio's default retry policy, for HTTP requests to the default destination.
    pub default_retries: Option<RetryPolicy>,
    /// RedisPolicies, the first that matches a connection's subset and pod applies.
    pub redis: Vec<RedisRoute>,
}

/// A RedisPolicy of a port and the connections it applies to.
#[derive(Debug)]
pub struct RedisRoute {
    /// Only connections routed to this subset (or to one of its pods).
    pub subset: Option<String>,
    /// The subset's cluster, whose endpoints are its pods.
    pub subset_cluster: Option<Arc<UpstreamCluster>>,
    /// Only connections to these pods.
    pub pods: Vec<String>,
    /// The compiled policy.
    pub policy: Arc<crate::redis::policy::Policy>,
}

impl PortRoutes {
    /// The RedisPolicy of a connection routed to `cluster`, toward pod `pod` at `addr`.
    pub fn redis_policy(
        &self,
        cluster: &UpstreamCluster,
        addr: SocketAddr,
        pod: Option<&str>,
    ) -> Option<&Arc<crate::redis::policy::Policy>> {
        let member = |c: &UpstreamCluster| {
            c.config
                .endpoints
                .iter()
                .any(|e| SocketAddr::new(e.ip, e.port) == addr)
        };
        self.redis
            .iter()
            .find(|r| {
                r.subset.as_deref().is_none_or(|s| {
                    cluster.config.subset.as_deref() == Some(s)
                        || r.subset_cluster.as_deref().is_some_and(member)
                }) && (r.pods.is_empty() || pod.is_some_and(|p| r.pods.iter().any(|x| x == p)))
            })
            .map(|r| &r.policy)
    }
}

/// Where an opaque (TCP or TLS) connection goes.
#[derive(Debug, Clone, Copy)]
pub enum L4Choice<'a> {
    /// This cluster.
    Cluster(&'a Arc<UpstreamCluster>),
    /// A cluster the configuration does not have (`response_flags="NR"`).
    Missing(&'a str),
}

impl PortRoutes {
    /// Whether any TLS rule needs the server name.
    pub fn wants_sni(&self) -> bool {
        !self.tls.is_empty()
    }

    /// The cluster of a new opaque connection: the first TLS rule that matches (when the
    /// client sent a server name), else the first TCP rule that matches, else the default;
    /// among a rule's destinations by weight.
    pub fn choose_l4(&self, c: &Connection<'_>) -> L4Choice<'_> {
        let rules = c
            .sni
            .map(|_| self.tls.as_slice())
            .unwrap_or_default()
            .iter()
            .chain(&self.tcp);
        let dest = rules
            .into_iter()
            .find(|r| l4::any(&r.matches, c))
            .map_or(Some(&self.default), |r| r.route.pick());
        match dest {
            Some(Destination {
                cluster: Some(cluster),
                ..
            }) => L4Choice::Cluster(cluster),
            Some(d) => L4Choice::Missing(&d.name),
            None => L4Choice::Missing(""),
        }
    }
}

/// The routing table of one configuration.
#[derive(Debug, Default)]
pub struct Table {
    by_addr: HashMap<SocketAddr, Arc<PortRoutes>>,
    clusters: HashMap<String, Arc<UpstreamCluster>>,
}

/// What the table is built from besides the configuration.
pub struct Inputs<'a> {
    /// Workloads by pod IP.
    pub workloads: &'a HashMap<IpAddr, Arc<Workload>>,
    /// Services by FQDN.
    pub services: &'a HashMap<String, Arc<ServiceName>>,
    /// The table being replaced, whose cluster state carries over.
    pub previous: Option<&'a Table>,
}

/// The service a cluster host belongs to: the FQDN's, or for a StatefulSet pod's name
/// (`redis-0.redis.ns.svc...`) its headless service's.
fn service_of(
    services: &HashMap<String, Arc<ServiceName>>,
    host: &str,
) -> Option<Arc<ServiceName>> {
    services.get(host).cloned().or_else(|| {
        host.split_once('.')
            .and_then(|(_, rest)| services.get(rest).cloned())
    })
}

/// The default cluster of a service port when the configuration carries none (a static
/// file): every endpoint, Istio's default balancing, original destination when headless.
fn implied_cluster(
    svc: &crate::config::Service,
    port: &crate::config::ServicePort,
    domain: &str,
) -> Cluster {
    let fqdn = format!("{}.{}.svc.{domain}", svc.name, svc.namespace);
    Cluster {
        name: cluster_name(port.port, None, &fqdn),
        host: fqdn,
        port: port.port,
        subset: None,
        subset_labels: BTreeMap::new(),
        resolution: if svc.cluster_ip.is_none() {
            crate::config::Resolution::OriginalDst
        } else {
            crate::config::Resolution::Eds
        },
        endpoints: svc
            .endpoints
            .iter()
            .map(|ep| ClusterEndpoint {
                ip: ep.ip,
                port: port.target(),
                pod: ep.pod.clone(),
                ready: ep.ready,
                mtls: false,
            })
            .collect(),
        destination_rule: None,
        load_balancer: LoadBalancerSettings {
            simple: Some(SimpleLb::LeastRequest),
            ..Default::default()
        },
        connection_pool: None,
        outlier_detection: None,
        tls: Default::default(),
    }
}

impl Table {
    /// Compiles the routes and clusters of `config`.
    pub fn build(config: &ProxyConfig, inputs: &Inputs<'_>) -> Table {
        let domain = &config.settings.cluster_domain;
        let mut cluster_configs: Vec<Cluster> = config.clusters.clone();
        let known: HashSet<String> = cluster_configs.iter().map(|c| c.name.clone()).collect();
        for svc in &config.services {
            for port in tcp_ports(svc) {
                let c = implied_cluster(svc, port, domain);
                if !known.contains(&c.name) {
                    cluster_configs.push(c);
                }
            }
        }
        let clusters: HashMap<String, Arc<UpstreamCluster>> = cluster_configs
            .iter()
            .map(|c| {
                let previous = inputs
                    .previous
                    .and_then(|t| t.clusters.get(&c.name))
                    .map(|c| &**c);
                let service = service_of(inputs.services, &c.host);
                let built = UpstreamCluster::build(c, inputs.workloads, service, previous);
                (c.name.clone(), Arc::new(built))
            })
            .collect();
        let dest = |name: &str| Destination {
            name: name.to_string(),
            cluster: clusters.get(name).cloned(),
        };
        let me = Source {
            labels: &config.identity.labels,
            namespace: &config.identity.namespace,
        };

        let mut ports: Vec<(OutboundPort, bool)> =
            config.outbound.iter().map(|p| (p.clone(), true)).collect();
        let declared: HashSet<(String, u16)> = config
            .outbound
            .iter()
            .map(|p| (p.host.clone(), p.port))
            .collect();
        for svc in &config.services {
            let fqdn = format!("{}.{}.svc.{domain}", svc.name, svc.namespace);
            for port in tcp_ports(svc) {
                if declared.contains(&(fqdn.clone(), port.port)) {
                    continue;
                }
                ports.push((
                    OutboundPort {
                        host: fqdn.clone(),
                        port: port.port,
                        protocol: Protocol::of_port(&port.name, port.app_protocol.as_deref()),
                        addresses: svc.cluster_ip.into_iter().collect(),
                        passthrough: svc.cluster_ip.is_none(),
                        virtual_service: None,
                        http: Vec::new(),
                        tcp: Vec::new(),
                        tls: Vec::new(),
                        default_cluster: cluster_name(port.port, None, &fqdn),
                        redis_policies: Vec::new(),
                    },
                    false,
                ));
            }
        }

        let mut by_addr: HashMap<SocketAddr, Arc<PortRoutes>> = HashMap::new();
        let mut addressed = Vec::new();
        for (p, _) in &ports {
            let l4 = |matches: Vec<L4Match>, route: &[crate::config::WeightedCluster]| L4Rule {
                matches,
                route: Weighted::new(
                    route
                        .iter()
                        .map(|w| (w.weight, dest(&w.destination.cluster))),
                ),
            };
            let routes = Arc::new(PortRoutes {
                host: p.host.clone(),
                port: p.port,
                protocol: p.protocol,
                passthrough: p.passthrough,
                virtual_service: p.virtual_service.clone(),
                tls: p
                    .tls
                    .iter()
                    .map(|r| {
                        l4(
                            r.matches.iter().map(|m| L4Match::tls(m, &me)).collect(),
                            &r.route,
                        )
                    })
                    .collect(),
                tcp: p
                    .tcp
                    .iter()
                    .map(|r| {
                        l4(
                            r.matches.iter().map(|m| L4Match::tcp(m, &me)).collect(),
                            &r.route,
                        )
                    })
                    .collect(),
                http: p
                    .http
                    .iter()
                    .map(|r| http::HttpRule::compile(r, &me, &dest))
                    .collect(),
                default: dest(&p.default_cluster),
                redis: merged_redis_policies(&p.redis_policies)
                    .iter()
                    .map(|rp| RedisRoute {
                        subset: rp.subset.clone(),
                        subset_cluster: rp
                            .subset_cluster
                            .as_ref()
                            .and_then(|name| clusters.get(name).cloned()),
                        pods: rp.pods.clone(),
                        policy: Arc::new(crate::redis::policy::Policy::compile(
                            rp,
                            rp.mirror
                                .as_ref()
                                .and_then(|m| clusters.get(&m.cluster).cloned()),
                        )),
                    })
                    .filter(|r| r.policy.is_active())
                    .collect(),
                default_retries: RetryPolicy::from_istio(
                    None,
                    clusters
                        .get(&p.default_cluster)
                        .is_some_and(|c| c.hash_on.is_some()),
                ),
            });
            // Ports of the endpoints (target ports) the host's clients may dial.
            let target_ports: Vec<(IpAddr, u16)> = clusters
                .get(&p.default_cluster)
                .map(|c| c.config.endpoints.iter().map(|e| (e.ip, e.port)).collect())
                .unwrap_or_default();
            if p.addresses.is_empty() {
                // Headless: every pod, on the service port and on its target port.
                for (ip, target) in &target_ports {
                    for port in [p.port, *target] {
                        by_addr
                            .entry(SocketAddr::new(*ip, port))
                            .or_insert_with(|| routes.clone());
                    }
                }
            } else {
                addressed.push((p.addresses.clone(), target_ports, routes));
            }
        }
        // Cluster IPs, and StatefulSet pods' own names (which win over their headless
        // service's entry for the same pod).
        for (addresses, target_ports, routes) in addressed {
            for ip in addresses {
                by_addr.insert(SocketAddr::new(ip, routes.port), routes.clone());
                for (ep_ip, target) in &target_ports {
                    if *ep_ip == ip {
                        by_addr.insert(SocketAddr::new(ip, *target), routes.clone());
                    }
                }
            }
        }
        Table { by_addr, clusters }
    }

    /// The routes of a dialled address.
    pub fn routes(&self, dst: SocketAddr) -> Option<&Arc<PortRoutes>> {
        self.by_addr.get(&dst)
    }

    /// A cluster by name.
    pub fn cluster(&self, name: &str) -> Option<&Arc<UpstreamCluster>> {
        self.clusters.get(name)
    }

    /// Every cluster.
    pub fn clusters(&self) -> impl Iterator<Item = &Arc<UpstreamCluster>> {
        self.clusters.values()
    }
}

/// The policies of a port, each extended with the rules of the later (less specific) ones
/// that also apply to every connection it applies to: several RedisPolicies combine, the
/// most specific rule per command first.
fn merged_redis_policies(
    list: &[crate::config::RedisPortPolicy],
) -> Vec<crate::config::RedisPortPolicy> {
    list.iter()
        .enumerate()
        .map(|(i, p)| {
            let mut merged = p.clone();
            for later in list.iter().skip(i + 1) {
                let subset_ok = later.subset.is_none() || later.subset == p.subset;
                let pods_ok = later.pods.is_empty()
                    || (!p.pods.is_empty() && p.pods.iter().all(|x| later.pods.contains(x)));
                if subset_ok && pods_ok {
                    merged.faults.extend(later.faults.iter().cloned());
                    merged.timeouts.extend(later.timeouts.iter().cloned());
                    if merged.mirror.is_none() {
                        merged.mirror = later.mirror.clone();
                    }
                }
            }
            merged
        })
        .collect()
}

/// The proxied (TCP) ports of a service.
fn tcp_ports(svc: &crate::config::Service) -> impl Iterator<Item = &crate::config::ServicePort> {
    svc.ports.iter().filter(|p| {
        p.protocol
            .as_deref()
            .is_none_or(|p| p.eq_ignore_ascii_case("TCP"))
    })
}
