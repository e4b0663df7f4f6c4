//! Sharing the compiler's work between proxies.
//!
//! Most of a proxy's configuration — the services it sees, its outbound ports and clusters —
//! depends only on its namespace and on which workload-selecting DestinationRules of that
//! namespace select it (its *class*); only its identity and inbound ports are its own. A
//! [`Cache`] compiles each class once per registry (and serializes it once), then per proxy
//! compiles the own part against indexes of pods and endpoints, and gives a
//! [`Fingerprint`] of the whole: a stream whose proxy's fingerprint did not change skips
//! it without compiling or serializing anything.
//!
//! The result is exactly [`super::compile`]'s (the tests compare both, and the JSON with
//! [`push::render`]'s, byte for byte).

use super::scope::{namespace, selects};
use super::{Compiled, Shared, own, services, shared};
use crate::distribution::push::{self, Fingerprint, Prepared};
use crate::registry::{Labels, PodEntry, ProxyIdentity, Registry, ServiceEntry};
use ferry_proto::config::ProxyConfig;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// A proxy's class: its namespace and the workload-selecting DestinationRules of that
/// namespace (indexes into the registry's list) that select it.
type Class = (String, Vec<usize>);

/// Compiles proxies' configurations sharing the work between proxies of one class; holds
/// the latest registry's results only.
#[derive(Default)]
pub struct Cache {
    state: Mutex<Option<Arc<State>>>,
}

/// What is known about one registry.
struct State {
    registry: Arc<Registry>,
    /// First pod per (namespace, name).
    pods: HashMap<(String, String), usize>,
    /// First pod per address.
    pod_ips: HashMap<IpAddr, usize>,
    /// Services with an endpoint of (namespace, pod name).
    by_pod: HashMap<(String, String), Vec<usize>>,
    /// Services with an endpoint at an address.
    by_ip: HashMap<IpAddr, Vec<usize>>,
    /// DestinationRules with a workload selector, by namespace.
    selecting: HashMap<String, Vec<usize>>,
    classes: Mutex<HashMap<Class, Arc<OnceLock<Arc<Part>>>>>,
}

/// A class's shared configuration, and its JSON pieces.
struct Part {
    shared: Shared,
    services: Vec<u8>,
    settings: Vec<u8>,
    outbound: Vec<u8>,
    clusters: Vec<u8>,
    digest: [u8; 32],
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self, registry: &Arc<Registry>) -> Arc<State> {
        let mut slot = lock(&self.state);
        if let Some(state) = slot.as_ref().filter(|s| Arc::ptr_eq(&s.registry, registry)) {
            return state.clone();
        }
        let state = Arc::new(State::new(registry.clone()));
        *slot = Some(state.clone());
        state
    }

    /// The pod a proxy that said who it is runs in: the first pod (in registry order) with
    /// its namespace and name or with its address — `plane::Mesh`'s rule, through indexes.
    pub fn find_pod<'a>(
        &self,
        registry: &'a Arc<Registry>,
        proxy: &ProxyIdentity,
    ) -> Option<&'a PodEntry> {
        let state = self.state(registry);
        let by_name = state
            .pods
            .get(&(proxy.namespace.clone(), proxy.pod.clone()))
            .copied();
        let by_ip = proxy.ip.and_then(|ip| state.pod_ips.get(&ip).copied());
        let i = match (by_name, by_ip) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        registry.pods.get(i)
    }

    /// The same as [`super::compile`]`(registry, proxy)`.
    pub fn compile(&self, registry: &Arc<Registry>, proxy: &ProxyIdentity) -> Compiled {
        let state = self.state(registry);
        let (part, own) = match state.parts(proxy) {
            Ok(parts) => parts,
            // Serializing plain data does not fail; should it, compile without the cache.
            Err(_) => return super::compile(registry, proxy),
        };
        let shared = &part.shared;
        let mut warnings = shared.warnings.clone();
        warnings.extend(own.warnings);
        warnings.sort();
        warnings.dedup();
        Compiled {
            config: ProxyConfig {
                version: String::new(),
                identity: own.identity,
                services: shared.services.clone(),
                settings: shared.settings.clone(),
                outbound: shared.outbound.clone(),
                clusters: shared.clusters.clone(),
                inbound: own.inbound,
                outbound_traffic_policy: Default::default(),
            },
            warnings,
        }
    }

    /// The configuration of `proxy` rendered as [`push::render`] renders
    /// [`super::compile`]'s, with its fingerprint; [`Prepared::Unchanged`] when the
    /// fingerprint is `held`.
    pub fn prepare(
        &self,
        registry: &Arc<Registry>,
        proxy: &ProxyIdentity,
        held: Option<&Fingerprint>,
    ) -> Result<Prepared, serde_json::Error> {
        let state = self.state(registry);
        let (part, own) = state.parts(proxy)?;
        let identity = serde_json::to_vec(&own.identity)?;
        let inbound = if own.inbound.is_default() {
            None
        } else {
            Some(serde_json::to_vec(&own.inbound)?)
        };
        let mut hasher = Sha256::new();
        hasher.update(part.digest);
        hasher.update(&identity);
        // 0xff never occurs in JSON text (UTF-8), so the pieces cannot run into each other.
        hasher.update([0xff]);
        hasher.update(inbound.as_deref().unwrap_or_default());
        let fingerprint: Fingerprint = hasher.finalize().into();
        if held == Some(&fingerprint) {
            return Ok(Prepared::Unchanged);
        }
        // ProxyConfig's fields in declaration order, with its `skip_serializing_if` rules
        // (`version` is empty and `outbound_traffic_policy` the default here).
        let mut json = Vec::with_capacity(
            64 + identity.len()
                + part.services.len()
                + part.settings.len()
                + part.outbound.len()
                + part.clusters.len()
                + inbound.as_ref().map_or(0, Vec::len),
        );
        json.extend_from_slice(b"{\"version\":\"\",\"identity\":");
        json.extend_from_slice(&identity);
        json.extend_from_slice(b",\"services\":");
        json.extend_from_slice(&part.services);
        json.extend_from_slice(b",\"settings\":");
        json.extend_from_slice(&part.settings);
        if !part.shared.outbound.is_empty() {
            json.extend_from_slice(b",\"outbound\":");
            json.extend_from_slice(&part.outbound);
        }
        if !part.shared.clusters.is_empty() {
            json.extend_from_slice(b",\"clusters\":");
            json.extend_from_slice(&part.clusters);
        }
        if let Some(inbound) = &inbound {
            json.extend_from_slice(b",\"inbound\":");
            json.extend_from_slice(inbound);
        }
        json.push(b'}');
        Ok(Prepared::Rendered {
            rendered: push::rendered(json),
            fingerprint: Some(fingerprint),
        })
    }
}

impl State {
    fn new(registry: Arc<Registry>) -> Self {
        let mut pods = HashMap::new();
        let mut pod_ips = HashMap::new();
        for (i, p) in registry.pods.iter().enumerate() {
            pods.entry((p.namespace.clone(), p.name.clone()))
                .or_insert(i);
            if let Some(ip) = p.ip {
                pod_ips.entry(ip).or_insert(i);
            }
        }
        let mut by_pod: HashMap<(String, String), Vec<usize>> = HashMap::new();
        let mut by_ip: HashMap<IpAddr, Vec<usize>> = HashMap::new();
        for (i, svc) in registry.services.iter().enumerate() {
            for ep in &svc.endpoints {
                by_pod
                    .entry((ep.namespace.clone(), ep.pod.clone()))
                    .or_default()
                    .push(i);
                by_ip.entry(ep.ip).or_default().push(i);
            }
        }
        let mut selecting: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, dr) in registry.policies.destination_rules.iter().enumerate() {
            if dr.spec.workload_selector.is_some() {
                selecting
                    .entry(namespace(&dr.metadata).to_string())
                    .or_default()
                    .push(i);
            }
        }
        Self {
            registry,
            pods,
            pod_ips,
            by_pod,
            by_ip,
            selecting,
            classes: Mutex::default(),
        }
    }

    fn pod(&self, proxy: &ProxyIdentity) -> Option<&PodEntry> {
        // Borrowed lookup without allocating a key would need a custom map; this is cheap.
        let i = self
            .pods
            .get(&(proxy.namespace.clone(), proxy.pod.clone()))?;
        self.registry.pods.get(*i)
    }

    /// The class of a proxy of `ns` with `labels`: a workload-selecting DestinationRule
    /// applies only to the proxies of its namespace that it selects.
    fn class_of(&self, ns: &str, labels: &Labels) -> Class {
        let rules = &self.registry.policies.destination_rules;
        let selected = self
            .selecting
            .get(ns)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&i| {
                rules[i]
                    .spec
                    .workload_selector
                    .as_ref()
                    .is_some_and(|sel| selects(&sel.match_labels, labels))
            })
            .collect();
        (ns.to_string(), selected)
    }

    fn part(&self, ns: &str, labels: &Labels) -> Result<Arc<Part>, serde_json::Error> {
        let class = self.class_of(ns, labels);
        let cell = lock(&self.classes).entry(class).or_default().clone();
        if let Some(part) = cell.get() {
            return Ok(part.clone());
        }
        let shared = shared(&self.registry, ns, labels);
        let services = serde_json::to_vec(&shared.services)?;
        let settings = serde_json::to_vec(&shared.settings)?;
        let outbound = serde_json::to_vec(&shared.outbound)?;
        let clusters = serde_json::to_vec(&shared.clusters)?;
        let mut hasher = Sha256::new();
        for piece in [&services, &settings, &outbound, &clusters] {
            hasher.update(piece);
            hasher.update([0xff]);
        }
        let part = Arc::new(Part {
            shared,
            services,
            settings,
            outbound,
            clusters,
            digest: hasher.finalize().into(),
        });
        // Another stream may have finished first; both computed the same.
        Ok(cell.get_or_init(|| part).clone())
    }

    fn parts(&self, proxy: &ProxyIdentity) -> Result<(Arc<Part>, super::Own), serde_json::Error> {
        let pod = self.pod(proxy);
        let no_labels = Labels::new();
        let labels = pod.map_or(&no_labels, |p| &p.labels);
        let part = self.part(&proxy.namespace, labels)?;
        // The services that may have the proxy as an endpoint, in registry order.
        let ip = pod.and_then(|p| p.ip).or(proxy.ip);
        let mut indexes: Vec<usize> = self
            .by_pod
            .get(&(proxy.namespace.clone(), proxy.pod.clone()))
            .into_iter()
            .flatten()
            .chain(ip.and_then(|ip| self.by_ip.get(&ip)).into_iter().flatten())
            .copied()
            .collect();
        indexes.sort_unstable();
        indexes.dedup();
        let candidates: Vec<&ServiceEntry> = indexes
            .into_iter()
            .map(|i| &self.registry.services[i])
            .collect();
        let own = own(&self.registry, proxy, pod, labels, &candidates);
        debug_assert_eq!(pod, services::pod(&self.registry, proxy));
        Ok((part, own))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{EndpointEntry, Policies, PortEntry};
    use ferry_model::IstioResource;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use serde_json::{Value, json};

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn res<S: serde::de::DeserializeOwned>(
        ns: &str,
        name: &str,
        age: i64,
        spec: Value,
    ) -> IstioResource<S> {
        IstioResource {
            api_version: "networking.istio.io/v1".into(),
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                creation_timestamp: Some(Time(
                    k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + age).unwrap(),
                )),
                ..Default::default()
            },
            spec: serde_json::from_value(spec).unwrap(),
        }
    }

    struct Pod {
        ns: &'static str,
        name: &'static str,
        ip: &'static str,
        app: &'static str,
        version: &'static str,
        sidecar: bool,
        hostname: Option<&'static str>,
    }

    fn pod_labels(p: &Pod) -> Labels {
        let mut l = labels(&[("app", p.app), ("version", p.version)]);
        if p.sidecar {
            l.insert("security.istio.io/tlsMode".into(), "istio".into());
        }
        l
    }

    /// A mesh with something of everything: cluster-IP and headless services, StatefulSet
    /// per-pod names, pods without a sidecar, exportTo, VirtualServices (one for a pod's
    /// name, two for one host), DestinationRules at every scope (one selecting workloads),
    /// PeerAuthentications with port-level modes.
    fn registry() -> Registry {
        let pods = [
            Pod {
                ns: "default",
                name: "web-0",
                ip: "10.0.0.1",
                app: "web",
                version: "v1",
                sidecar: true,
                hostname: None,
            },
            Pod {
                ns: "default",
                name: "web-1",
                ip: "10.0.0.2",
                app: "web",
                version: "v2",
                sidecar: true,
                hostname: None,
            },
            Pod {
                ns: "default",
                name: "api-0",
                ip: "10.0.0.3",
                app: "api",
                version: "v1",
                sidecar: false,
                hostname: None,
            },
            Pod {
                ns: "default",
                name: "redis-0",
                ip: "10.0.0.4",
                app: "redis",
                version: "v1",
                sidecar: true,
                hostname: Some("redis-0.redis.default.svc.cluster.local"),
            },
            Pod {
                ns: "default",
                name: "redis-1",
                ip: "10.0.0.5",
                app: "redis",
                version: "v1",
                sidecar: false,
                hostname: Some("redis-1.redis.default.svc.cluster.local"),
            },
            Pod {
                ns: "prod",
                name: "db-0",
                ip: "10.0.1.1",
                app: "db",
                version: "v1",
                sidecar: true,
                hostname: None,
            },
            Pod {
                ns: "prod",
                name: "db-1",
                ip: "10.0.1.2",
                app: "db",
                version: "v1",
                sidecar: true,
                hostname: None,
            },
            Pod {
                ns: "prod",
                name: "web-0",
                ip: "10.0.1.3",
                app: "web",
                version: "v1",
                sidecar: true,
                hostname: None,
            },
        ];
        let service = |ns: &str,
                       name: &str,
                       ip: Option<&str>,
                       ports: &[(&str, u16, u16)],
                       export: &[&str]| {
            let app = name;
            ServiceEntry {
                name: name.into(),
                namespace: ns.into(),
                fqdn: format!("{name}.{ns}.svc.cluster.local"),
                cluster_ip: ip.map(|i| i.parse().unwrap()),
                ports: ports
                    .iter()
                    .map(|(n, p, t)| PortEntry {
                        name: n.to_string(),
                        port: *p,
                        target_port: *t,
                        app_protocol: None,
                    })
                    .collect(),
                endpoints: pods
                    .iter()
                    .filter(|p| p.ns == ns && p.app == app)
                    .map(|p| EndpointEntry {
                        ip: p.ip.parse().unwrap(),
                        pod: p.name.into(),
                        namespace: p.ns.into(),
                        workload: p.app.into(),
                        service_account: p.app.into(),
                        labels: pod_labels(p),
                        has_sidecar: p.sidecar,
                        ready: true,
                        hostname: p.hostname.map(str::to_string),
                    })
                    .collect(),
                labels: labels(&[("app", app)]),
                export_to: export.iter().map(|s| s.to_string()).collect(),
            }
        };
        let services = vec![
            service(
                "default",
                "web",
                Some("10.96.0.1"),
                &[("http", 80, 8080), ("grpc", 9090, 9090)],
                &[],
            ),
            service(
                "default",
                "api",
                Some("10.96.0.2"),
                &[("http", 80, 8081)],
                &["."],
            ),
            service("default", "redis", None, &[("tcp-redis", 6379, 6379)], &[]),
            service(
                "prod",
                "db",
                Some("10.96.1.1"),
                &[("tcp", 5432, 5432)],
                &["*"],
            ),
            service(
                "prod",
                "web",
                Some("10.96.1.2"),
                &[("http", 80, 8080)],
                &["prod"],
            ),
        ];
        let policies = Policies {
            virtual_services: vec![
                res(
                    "default",
                    "web",
                    1,
                    json!({"hosts": ["web"], "http": [
                    {"match": [{"headers": {"x": {"exact": "1"}}}], "route": [{"destination": {"host": "web", "subset": "v2"}}]},
                    {"route": [{"destination": {"host": "web", "subset": "v1"}, "weight": 80},
                               {"destination": {"host": "web", "subset": "v3"}, "weight": 20}]}]}),
                ),
                res(
                    "default",
                    "web-again",
                    2,
                    json!({"hosts": ["web.default.svc.cluster.local"],
                    "http": [{"route": [{"destination": {"host": "api"}}]}]}),
                ),
                res(
                    "default",
                    "redis-0",
                    3,
                    json!({"hosts": ["redis-0.redis.default.svc.cluster.local"],
                    "tcp": [{"route": [{"destination": {"host": "redis-0.redis.default.svc.cluster.local"}}]}]}),
                ),
                res(
                    "prod",
                    "db",
                    4,
                    json!({"hosts": ["db"], "exportTo": ["*"],
                    "tcp": [{"route": [{"destination": {"host": "db", "port": {"number": 5432}}}]}]}),
                ),
            ],
            destination_rules: vec![
                res(
                    "default",
                    "web",
                    1,
                    json!({"host": "web", "subsets": [
                    {"name": "v1", "labels": {"version": "v1"}},
                    {"name": "v2", "labels": {"version": "v2"}, "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}]}),
                ),
                res(
                    "default",
                    "web-for-web",
                    0,
                    json!({"host": "web", "workloadSelector": {"matchLabels": {"app": "web"}},
                    "trafficPolicy": {"tls": {"mode": "DISABLE"}}, "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}),
                ),
                res(
                    "prod",
                    "db",
                    3,
                    json!({"host": "db", "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 7}}}}),
                ),
                res(
                    "istio-system",
                    "all",
                    4,
                    json!({"host": "*.svc.cluster.local", "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}}),
                ),
            ],
            peer_authentications: vec![
                res(
                    "istio-system",
                    "default",
                    1,
                    json!({"mtls": {"mode": "STRICT"}}),
                ),
                res(
                    "default",
                    "api",
                    2,
                    json!({"selector": {"matchLabels": {"app": "api"}}, "mtls": {"mode": "PERMISSIVE"},
                    "portLevelMtls": {"8081": {"mode": "DISABLE"}}}),
                ),
                res(
                    "prod",
                    "default",
                    3,
                    json!({"mtls": {"mode": "PERMISSIVE"}}),
                ),
                res("prod", "second", 4, json!({"mtls": {"mode": "STRICT"}})),
            ],
        };
        Registry {
            namespaces: [("default", Labels::new()), ("prod", Labels::new())]
                .into_iter()
                .map(|(n, l)| (n.to_string(), l))
                .collect(),
            services,
            pods: pods
                .iter()
                .map(|p| PodEntry {
                    name: p.name.into(),
                    namespace: p.ns.into(),
                    ip: Some(p.ip.parse().unwrap()),
                    labels: pod_labels(p),
                    annotations: Labels::new(),
                    workload: p.app.into(),
                    workload_kind: "StatefulSet".into(),
                    service_account: p.app.into(),
                    has_sidecar: p.sidecar,
                    ready: true,
                    hostname: p.hostname.map(|h| h.split('.').next().unwrap().to_string()),
                    subdomain: None,
                })
                .collect(),
            policies,
            cluster_domain: "cluster.local".into(),
            root_namespace: "istio-system".into(),
        }
    }

    fn proxies(registry: &Registry) -> Vec<ProxyIdentity> {
        let mut out: Vec<ProxyIdentity> = registry
            .pods
            .iter()
            .map(|p| ProxyIdentity {
                pod: p.name.clone(),
                namespace: p.namespace.clone(),
                ..Default::default()
            })
            .collect();
        out.push(ProxyIdentity {
            pod: "unknown".into(),
            namespace: "default".into(),
            workload: "w".into(),
            service_account: "sa".into(),
            ip: Some("10.0.0.2".parse().unwrap()),
        });
        out.push(ProxyIdentity {
            pod: "stranger".into(),
            namespace: "elsewhere".into(),
            ..Default::default()
        });
        out
    }

    fn rendered(p: Prepared) -> (push::Rendered, Fingerprint) {
        match p {
            Prepared::Rendered {
                rendered,
                fingerprint: Some(f),
            } => (rendered, f),
            other => panic!("expected a rendered configuration, got {other:?}"),
        }
    }

    #[test]
    fn the_cache_compiles_and_renders_exactly_what_compile_does() {
        let registry = Arc::new(registry());
        let cache = Cache::new();
        let mut fingerprints = Vec::new();
        for proxy in proxies(&registry) {
            let want = super::super::compile(&registry, &proxy);
            assert_eq!(cache.compile(&registry, &proxy), want, "{proxy:?}");
            let (got, fp) = rendered(cache.prepare(&registry, &proxy, None).unwrap());
            let want = push::render(&want.config).unwrap();
            assert_eq!(
                String::from_utf8(got.json.clone()).unwrap(),
                String::from_utf8(want.json.clone()).unwrap(),
                "{proxy:?}"
            );
            assert_eq!(got, want);
            assert_eq!(
                cache.prepare(&registry, &proxy, Some(&fp)).unwrap(),
                Prepared::Unchanged
            );
            fingerprints.push(fp);
        }
        let mut unique = fingerprints.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), fingerprints.len(), "each proxy has its own");
        // The workload-selecting rule makes web-0 and api-0 of one namespace differ.
        let web = cache.compile(&registry, &proxies(&registry)[0]).config;
        let api = cache.compile(&registry, &proxies(&registry)[2]).config;
        assert_ne!(web.clusters, api.clusters);
    }

    #[test]
    fn find_pod_is_the_first_by_name_or_address() {
        let registry = Arc::new(registry());
        let cache = Cache::new();
        let mut asks = proxies(&registry);
        asks.push(ProxyIdentity {
            pod: "db-1".into(),
            namespace: "prod".into(),
            ip: Some("10.0.0.1".parse().unwrap()),
            ..Default::default()
        });
        for proxy in asks {
            let want = registry.pods.iter().find(|p| {
                (p.namespace == proxy.namespace && p.name == proxy.pod)
                    || (proxy.ip.is_some() && p.ip == proxy.ip)
            });
            assert_eq!(cache.find_pod(&registry, &proxy), want, "{proxy:?}");
        }
    }

    #[test]
    fn fingerprints_follow_the_registry() {
        let before = Arc::new(registry());
        let cache = Cache::new();
        let all = proxies(&before);
        let fps: Vec<Fingerprint> = all
            .iter()
            .map(|p| rendered(cache.prepare(&before, p, None).unwrap()).1)
            .collect();
        // Move an endpoint of prod/web, which only prod sees.
        let mut next = (*before).clone();
        next.services[4].endpoints[0].ip = "10.0.1.9".parse().unwrap();
        let after = Arc::new(next);
        for (proxy, fp) in all.iter().zip(&fps) {
            let prepared = cache.prepare(&after, proxy, Some(fp)).unwrap();
            let want = push::render(&super::super::compile(&after, proxy).config).unwrap();
            let old = push::render(&super::super::compile(&before, proxy).config).unwrap();
            if want == old {
                assert_eq!(prepared, Prepared::Unchanged, "{proxy:?}");
            } else {
                assert_eq!(rendered(prepared).0, want, "{proxy:?}");
            }
        }
    }
}
