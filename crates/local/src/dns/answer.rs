//! Cluster names to addresses, as Kubernetes' DNS answers them, from the registry in force
//! (pure, no I/O):
//!
//! - `<svc>.<ns>.svc.<domain>`: the cluster IP, or the ready endpoints' addresses of a
//!   headless service;
//! - `<host>.<svc>.<ns>.svc.<domain>`: a ready endpoint with that hostname (StatefulSet
//!   pods of the governing headless service, `redis-0.redis.default.svc.cluster.local`);
//! - `<a-b-c-d>.<ns>.pod.<domain>`: a pod's address;
//! - a name not under the cluster domain (`redis`, `redis.default`, `redis-0.redis`, as a
//!   client that does not apply its search list asks) is tried with the asking pod's
//!   search list (`<ns>.svc.<domain>`, `svc.<domain>`, `<domain>`), the pod found by the
//!   query's source address (namespace `default` when unknown).
//!
//! Anything else under the cluster domain is NXDOMAIN, and so is any other name: the mesh
//! has no outside network, so nothing is forwarded.

use ferry_control::registry::Registry;
use std::net::IpAddr;

/// What a name resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The name exists; its addresses (possibly none: NOERROR without records).
    Found(Vec<IpAddr>),
    /// The name does not exist.
    NxDomain,
}

/// The search list of a pod in `namespace`, as in its `resolv.conf`.
pub fn search_list(namespace: &str, domain: &str) -> [String; 3] {
    [
        format!("{namespace}.svc.{domain}"),
        format!("svc.{domain}"),
        domain.to_string(),
    ]
}

/// Resolves `name` (any case, with or without the final dot) for a query from `client`.
pub fn resolve(registry: &Registry, client: Option<IpAddr>, name: &str) -> Answer {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let domain = registry.cluster_domain.to_ascii_lowercase();
    if name == domain || name.ends_with(&format!(".{domain}")) {
        return absolute(registry, &name, &domain);
    }
    if name.is_empty() {
        return Answer::NxDomain;
    }
    let namespace = client
        .and_then(|ip| registry.pods.iter().find(|p| p.ip == Some(ip)))
        .map_or("default", |p| p.namespace.as_str());
    for suffix in search_list(namespace, &domain) {
        if let Answer::Found(ips) = absolute(registry, &format!("{name}.{suffix}"), &domain) {
            return Answer::Found(ips);
        }
    }
    Answer::NxDomain
}

/// A name under the cluster domain.
fn absolute(registry: &Registry, name: &str, domain: &str) -> Answer {
    let rest = name
        .strip_suffix(domain)
        .unwrap_or_default()
        .trim_end_matches('.');
    let labels: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('.').collect()
    };
    match labels.as_slice() {
        // The domain itself, `svc.<domain>`, `pod.<domain>` and `<ns>.svc.<domain>` exist
        // (they have names below them) but hold no address.
        [] | ["svc"] | ["pod"] => Answer::Found(Vec::new()),
        [ns, "svc"] | [ns, "pod"] if registry.namespaces.contains_key(*ns) => {
            Answer::Found(Vec::new())
        }
        [svc, ns, "svc"] => service(registry, ns, svc),
        [host, svc, ns, "svc"] => {
            let Answer::Found(_) = service(registry, ns, svc) else {
                return Answer::NxDomain;
            };
            let ips = ready_endpoints(registry, ns, svc)
                .filter(|ep| {
                    ep.hostname
                        .as_deref()
                        .is_some_and(|h| h.eq_ignore_ascii_case(name))
                })
                .map(|ep| ep.ip)
                .collect::<Vec<_>>();
            if ips.is_empty() {
                // Kubernetes also names headless endpoints by their dashed address.
                let dashed: Vec<IpAddr> = ready_endpoints(registry, ns, svc)
                    .filter(|ep| ep.ip.to_string().replace(['.', ':'], "-") == *host)
                    .map(|ep| ep.ip)
                    .collect();
                if dashed.is_empty() {
                    return Answer::NxDomain;
                }
                return Answer::Found(dashed);
            }
            Answer::Found(ips)
        }
        [dashed, ns, "pod"] => {
            let ip = dashed.replace('-', ".").parse::<IpAddr>().ok();
            match ip {
                Some(ip) if registry.namespaces.contains_key(*ns) => Answer::Found(vec![ip]),
                _ => Answer::NxDomain,
            }
        }
        _ => Answer::NxDomain,
    }
}

fn ready_endpoints<'a>(
    registry: &'a Registry,
    ns: &'a str,
    svc: &'a str,
) -> impl Iterator<Item = &'a ferry_control::registry::EndpointEntry> {
    registry
        .services
        .iter()
        .filter(move |s| s.namespace == ns && s.name == svc)
        .flat_map(|s| &s.endpoints)
        .filter(|ep| ep.ready)
}

fn service(registry: &Registry, ns: &str, svc: &str) -> Answer {
    let Some(entry) = registry
        .services
        .iter()
        .find(|s| s.namespace == ns && s.name == svc)
    else {
        return Answer::NxDomain;
    };
    match entry.cluster_ip {
        Some(ip) => Answer::Found(vec![ip]),
        None => {
            let mut ips: Vec<IpAddr> = ready_endpoints(registry, ns, svc).map(|e| e.ip).collect();
            ips.sort();
            ips.dedup();
            Answer::Found(ips)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_control::registry::{EndpointEntry, PodEntry, ServiceEntry};
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
    }

    fn pod(ns: &str, name: &str, last: u8) -> PodEntry {
        PodEntry {
            name: name.into(),
            namespace: ns.into(),
            ip: Some(ip(last)),
            labels: Default::default(),
            annotations: Default::default(),
            workload: String::new(),
            workload_kind: String::new(),
            service_account: "default".into(),
            has_sidecar: true,
            ready: true,
            hostname: None,
            subdomain: None,
        }
    }

    fn endpoint(ns: &str, svc: &str, pod: &str, last: u8, ready: bool) -> EndpointEntry {
        EndpointEntry {
            ip: ip(last),
            pod: pod.into(),
            namespace: ns.into(),
            workload: String::new(),
            service_account: "default".into(),
            labels: Default::default(),
            has_sidecar: true,
            ready,
            hostname: Some(format!("{pod}.{svc}.{ns}.svc.cluster.local")),
        }
    }

    fn service(ns: &str, name: &str, vip: Option<IpAddr>, eps: Vec<EndpointEntry>) -> ServiceEntry {
        ServiceEntry {
            name: name.into(),
            namespace: ns.into(),
            fqdn: format!("{name}.{ns}.svc.cluster.local"),
            cluster_ip: vip,
            ports: Vec::new(),
            endpoints: eps,
            labels: Default::default(),
            export_to: vec!["*".into()],
        }
    }

    fn registry() -> Registry {
        let vip = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 10));
        let mut r = Registry {
            cluster_domain: "cluster.local".into(),
            pods: vec![
                pod("default", "client", 2),
                pod("default", "redis-0", 3),
                pod("default", "redis-1", 4),
                pod("default", "redis-2", 5),
                pod("shop", "web", 9),
            ],
            services: vec![
                service(
                    "default",
                    "redis",
                    None,
                    vec![
                        endpoint("default", "redis", "redis-0", 3, true),
                        endpoint("default", "redis", "redis-1", 4, true),
                        endpoint("default", "redis", "redis-2", 5, false),
                    ],
                ),
                service(
                    "shop",
                    "web",
                    Some(vip),
                    vec![endpoint("shop", "web", "web", 9, true)],
                ),
            ],
            ..Registry::default()
        };
        for ns in ["default", "shop"] {
            r.namespaces.insert(ns.into(), Default::default());
        }
        r
    }

    #[test]
    fn names() {
        let r = registry();
        let vip = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 10));
        let headless = Answer::Found(vec![ip(3), ip(4)]);
        let none = Answer::Found(Vec::new());
        // (asking pod's address, name, answer)
        let rows: Vec<(u8, &str, Answer)> = vec![
            (2, "redis.default.svc.cluster.local", headless.clone()),
            (2, "REDIS.default.svc.cluster.local.", headless.clone()),
            (2, "redis", headless.clone()),
            (2, "redis.default", headless.clone()),
            (2, "redis.default.svc", headless.clone()),
            (9, "redis", Answer::NxDomain), // not in the asking pod's namespace
            (9, "redis.default", headless.clone()),
            (2, "web.shop.svc.cluster.local", Answer::Found(vec![vip])),
            (9, "web", Answer::Found(vec![vip])),
            (2, "web", Answer::NxDomain),
            (
                2,
                "redis-0.redis.default.svc.cluster.local",
                Answer::Found(vec![ip(3)]),
            ),
            (2, "redis-1.redis", Answer::Found(vec![ip(4)])),
            (2, "redis-2.redis", Answer::NxDomain), // not ready
            (
                2,
                "redis-9.redis.default.svc.cluster.local",
                Answer::NxDomain,
            ),
            (
                2,
                "198-18-0-4.redis.default.svc.cluster.local",
                Answer::Found(vec![ip(4)]),
            ),
            (
                2,
                "198-18-0-9.shop.pod.cluster.local",
                Answer::Found(vec![ip(9)]),
            ),
            (2, "198-18-0-9.nowhere.pod.cluster.local", Answer::NxDomain),
            (2, "nope.default.svc.cluster.local", Answer::NxDomain),
            (2, "redis.nowhere.svc.cluster.local", Answer::NxDomain),
            (2, "a.b.c.d.e.svc.cluster.local", Answer::NxDomain),
            (2, "default.svc.cluster.local", none.clone()),
            (2, "svc.cluster.local", none.clone()),
            (2, "cluster.local", none),
            (2, "example.com", Answer::NxDomain),
            (2, "", Answer::NxDomain),
        ];
        for (from, name, want) in rows {
            assert_eq!(
                resolve(&r, Some(ip(from)), name),
                want,
                "{name} from .{from}"
            );
        }
        // An unknown asker resolves short names in `default`.
        assert_eq!(resolve(&r, None, "redis"), headless);
    }
}
