//! Sharing the compiler's work between proxies, and between registries.
//!
//! Most of a proxy's configuration — the services it sees, its outbound ports and clusters —
//! depends only on its namespace and on which workload-selecting DestinationRules of that
//! namespace select it (its *class*); only its identity and inbound ports are its own. A
//! [`Cache`] compiles each class once (and serializes it once, into bytes that every
//! proxy's snapshot of the class shares), then per proxy compiles the own part against
//! indexes of pods and endpoints, and gives a [`Fingerprint`] of the whole: a stream whose
//! proxy's fingerprint did not change skips it without compiling or serializing anything.
//!
//! A class's part depends only on the policies, the cluster domain and root namespace, and
//! the services visible from its namespace; a proxy's own part on those policies and
//! settings, its pod, and the services that have it as an endpoint. When a new registry
//! arrives, the parts whose inputs did not change are carried over from the previous one,
//! so that a change in one namespace recompiles only the classes that can see it, and the
//! proxies it does not concern cost a lookup.
//!
//! The result is exactly [`super::compile`]'s (the tests compare both, and the JSON with
//! [`push::render`]'s, byte for byte).

use super::scope::{exported_to, namespace, selects};
use super::{Compiled, own, services, shared};
use crate::distribution::push::{self, Fingerprint, Prepared};
use crate::registry::{Changes, Labels, PodEntry, ProxyIdentity, Registry, ServiceEntry};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// A proxy's class: its namespace and the workload-selecting DestinationRules of that
/// namespace (indexes into the registry's list) that select it.
type Class = (String, Vec<usize>);

/// A class's part, computed once by whichever stream asks first.
type Slot = Arc<OnceLock<Arc<Part>>>;

/// The class parts of a registry.
type Classes = HashMap<Class, Slot>;

/// The own parts of a registry, by the proxy's (namespace, pod name).
type Owns = HashMap<(String, String), Arc<OwnPart>>;

/// Compiles proxies' configurations sharing the work between proxies of one class; holds
/// the latest registry's results only.
#[derive(Default)]
pub struct Cache {
    state: Mutex<Option<Arc<State>>>,
}

/// What is known about one registry.
struct State {
    registry: Arc<Registry>,
    /// Pods by (namespace, name).
    pods: Index<u64>,
    /// Pods by address.
    pod_ips: Index<IpAddr>,
    /// Services by the (namespace, pod name) of their endpoints.
    by_pod: Index<u64>,
    /// Services by the addresses of their endpoints.
    by_ip: Index<IpAddr>,
    /// DestinationRules with a workload selector, by namespace.
    selecting: HashMap<String, Vec<usize>>,
    classes: Mutex<HashMap<Class, Slot>>,
    /// Own parts by the proxy's (namespace, pod name).
    owns: Mutex<HashMap<(String, String), Arc<OwnPart>>>,
}

/// The parts compiled for a registry, taken out of the cache while the registry changes in
/// place ([`Cache::detach`]).
pub struct Detached {
    classes: HashMap<Class, Slot>,
    owns: HashMap<(String, String), Arc<OwnPart>>,
}

/// A proxy's own part as JSON: the pieces of its snapshot before and after its class's part.
struct OwnPart {
    /// The proxy as it said who it is (its own part is compiled from that and its pod).
    said: ProxyIdentity,
    /// `{"version":"","identity":{..},"services":`
    head: Bytes,
    /// `,"inbound":{..},"tracing":{..}}`, each left out when the default (`}` alone).
    tail: Bytes,
    /// SHA-256 of `head`, 0xff, `tail`.
    digest: [u8; 32],
}

/// A class's shared configuration, as JSON (the typed form is not kept: it would take
/// more memory than the bytes, and only the rare [`Cache::compile`] would read it).
struct Part {
    /// The JSON of everything from the services to the clusters: `[services],"settings":
    /// {..}[,"outbound":[..]][,"clusters":[..]]`, shared by the snapshots of the class.
    middle: Bytes,
    /// SHA-256 of `middle`.
    digest: [u8; 32],
}

/// Positions in one of the registry's lists by a key, as one sorted vector (no allocation
/// per entry: the registry's own strings are not copied).
struct Index<K>(Vec<(K, usize)>);

impl<K: Ord + Copy> Index<K> {
    fn new(mut pairs: Vec<(K, usize)>) -> Self {
        pairs.sort_unstable();
        pairs.dedup();
        Self(pairs)
    }

    /// The positions under `key`, in ascending order.
    fn get(&self, key: K) -> impl Iterator<Item = usize> + '_ {
        let start = self.0.partition_point(|(k, _)| *k < key);
        self.0[start..]
            .iter()
            .take_while(move |(k, _)| *k == key)
            .map(|(_, i)| *i)
    }
}

/// A hash of (namespace, name), the key of [`Index`]es of names (entries found under it are
/// checked against the names: different names may share a hash).
fn name_key(namespace: &str, name: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one((namespace, name))
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
        let state = Arc::new(State::new(registry.clone(), slot.as_deref()));
        let previous = slot.replace(state.clone());
        drop(slot);
        // Freeing the previous registry's entries is work no stream needs to wait for.
        crate::store::free_in_background(previous);
        state
    }

    /// Takes the parts compiled for `registry` out of the cache, which then no longer holds
    /// it: its owner can change it in place and hand it back with [`Cache::install`], which
    /// keeps the parts that still hold. `None` when the cache holds the parts of another
    /// registry (a stream still compiling from an earlier version put them there): those
    /// are dropped.
    pub fn detach(&self, registry: &Arc<Registry>) -> Option<Detached> {
        let state = lock(&self.state).take()?;
        if !Arc::ptr_eq(&state.registry, registry) {
            return None;
        }
        let classes = std::mem::take(&mut *lock(&state.classes));
        let owns = std::mem::take(&mut *lock(&state.owns));
        Some(Detached { classes, owns })
    }

    /// Makes `registry` the current one: the next version of the registry the parts in
    /// `detached` were compiled for, differing from it by `changes`. The parts that
    /// `changes` leave valid are kept: the class parts of the namespaces that see none of
    /// the changed services, and the own parts of the proxies whose pod did not change and
    /// is an endpoint of none of them.
    pub fn install(&self, registry: Arc<Registry>, detached: Option<Detached>, changes: &Changes) {
        let state = State::new(registry, None);
        if let Some(detached) = detached.filter(|_| !changes.everything) {
            let changed: Vec<&ServiceEntry> = changes.services.iter().collect();
            let pods = &changes.pods;
            let same_pod =
                |ns: &str, name: &str| !pods.contains(&(ns.to_string(), name.to_string()));
            let (classes, owns) =
                state.still_valid(&detached.classes, &detached.owns, &changed, same_pod);
            *lock(&state.classes) = classes;
            *lock(&state.owns) = owns;
        }
        *lock(&self.state) = Some(Arc::new(state));
    }

    /// The pod a proxy that said who it is runs in: the first pod (in registry order) with
    /// its namespace and name or with its address — `plane::Mesh`'s rule, through indexes.
    pub fn find_pod<'a>(
        &self,
        registry: &'a Arc<Registry>,
        proxy: &ProxyIdentity,
    ) -> Option<&'a PodEntry> {
        let state = self.state(registry);
        let by_name = state.pod_index(&proxy.namespace, &proxy.pod);
        let by_ip = proxy.ip.and_then(|ip| state.pod_ips.get(ip).next());
        let i = match (by_name, by_ip) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        registry.pods.get(i)
    }

    /// [`super::compile`]`(registry, proxy)`: typed configurations are not kept (they
    /// would take more memory than their JSON), so this compiles anew; it is for the
    /// occasional configuration dump, not for every push.
    pub fn compile(&self, registry: &Arc<Registry>, proxy: &ProxyIdentity) -> Compiled {
        super::compile(registry, proxy)
    }

    /// The configuration of `proxy` rendered as [`push::render`] renders
    /// [`super::compile`]'s (the class's part shared, not copied), with its fingerprint;
    /// [`Prepared::Unchanged`] when the fingerprint is `held`. The hash is the fingerprint's
    /// hex: it too is a digest of the whole JSON (of its pieces).
    pub fn prepare(
        &self,
        registry: &Arc<Registry>,
        proxy: &ProxyIdentity,
        held: Option<&Fingerprint>,
    ) -> Result<Prepared, serde_json::Error> {
        let state = self.state(registry);
        let pod = state.pod(proxy);
        let no_labels = Labels::new();
        let labels = pod.map_or(&no_labels, |p| &p.labels);
        let part = state.part(&proxy.namespace, labels)?;
        let own = state.own_part(proxy, pod, labels)?;
        let mut hasher = Sha256::new();
        hasher.update(part.digest);
        hasher.update(own.digest);
        let fingerprint: Fingerprint = hasher.finalize().into();
        if held == Some(&fingerprint) {
            return Ok(Prepared::Unchanged);
        }
        Ok(Prepared::Rendered {
            rendered: push::Rendered {
                json: vec![own.head.clone(), part.middle.clone(), own.tail.clone()],
                hash: push::hex(&fingerprint),
            },
            fingerprint: Some(fingerprint),
        })
    }
}

impl State {
    /// The indexes of `registry`, with the class parts of `previous` that still hold.
    fn new(registry: Arc<Registry>, previous: Option<&State>) -> Self {
        let pods = Index::new(
            (registry.pods.iter().enumerate())
                .map(|(i, p)| (name_key(&p.namespace, &p.name), i))
                .collect(),
        );
        let pod_ips = Index::new(
            (registry.pods.iter().enumerate())
                .filter_map(|(i, p)| Some((p.ip?, i)))
                .collect(),
        );
        let endpoints = || {
            (registry.services.iter().enumerate())
                .flat_map(|(i, svc)| svc.endpoints.iter().map(move |ep| (ep, i)))
        };
        let by_pod = Index::new(
            endpoints()
                .map(|(ep, i)| (name_key(&ep.namespace, &ep.pod), i))
                .collect(),
        );
        let by_ip = Index::new(endpoints().map(|(ep, i)| (ep.ip, i)).collect());
        let mut selecting: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, dr) in registry.policies.destination_rules.iter().enumerate() {
            if dr.spec.workload_selector.is_some() {
                selecting
                    .entry(namespace(&dr.metadata).to_string())
                    .or_default()
                    .push(i);
            }
        }
        let mut state = Self {
            registry,
            pods,
            pod_ips,
            by_pod,
            by_ip,
            selecting,
            classes: Mutex::default(),
            owns: Mutex::default(),
        };
        if let Some(previous) = previous {
            previous.carry_over(&mut state);
        }
        state
    }

    /// Hands `next` the parts of this state that hold for its registry too (none when the
    /// policies, domain or root namespace differ): the class parts of the namespaces that
    /// see none of the services that differ between the two registries, and the own parts
    /// of the proxies whose pod is the same and is an endpoint of none of those services.
    fn carry_over(&self, next: &mut State) {
        let (old, new) = (&self.registry, &next.registry);
        if old.policies != new.policies
            || old.cluster_domain != new.cluster_domain
            || old.root_namespace != new.root_namespace
        {
            return;
        }
        let changed = changed_services(old, new);
        let same_pod = |ns: &str, name: &str| {
            let before = self.pod_index(ns, name).and_then(|i| old.pods.get(i));
            let after = next.pod_index(ns, name).and_then(|i| new.pods.get(i));
            matches!((before, after), (Some(a), Some(b)) if a == b)
        };
        let (classes, owns) =
            next.still_valid(&lock(&self.classes), &lock(&self.owns), &changed, same_pod);
        *lock(&next.classes) = classes;
        *lock(&next.owns) = owns;
    }

    /// Of the parts compiled for the previous version of this state's registry, those that
    /// hold for this one, where `changed` are the services that differ between the two
    /// (both versions) and `same_pod` tells whether a pod is in both and the same: the
    /// class parts of the namespaces that see none of those services, and the own parts of
    /// the proxies whose pod is the same and is an endpoint of none of them.
    fn still_valid(
        &self,
        classes: &HashMap<Class, Slot>,
        owns: &HashMap<(String, String), Arc<OwnPart>>,
        changed: &[&ServiceEntry],
        same_pod: impl Fn(&str, &str) -> bool,
    ) -> (Classes, Owns) {
        let classes: HashMap<Class, Slot> = classes
            .iter()
            .filter(|(_, slot)| slot.get().is_some())
            .filter(|((ns, _), _)| {
                !changed
                    .iter()
                    .any(|s| exported_to(&s.export_to, &s.namespace, ns))
            })
            .map(|(class, slot)| (class.clone(), slot.clone()))
            .collect();
        let endpoints: BTreeSet<(&str, &str)> = changed
            .iter()
            .flat_map(|s| &s.endpoints)
            .map(|e| (e.namespace.as_str(), e.pod.as_str()))
            .collect();
        let addresses: BTreeSet<IpAddr> = changed
            .iter()
            .flat_map(|s| &s.endpoints)
            .map(|e| e.ip)
            .collect();
        let owns: HashMap<(String, String), Arc<OwnPart>> = owns
            .iter()
            .filter(|((ns, name), _)| {
                let Some(pod) = self
                    .pod_index(ns, name)
                    .and_then(|i| self.registry.pods.get(i))
                else {
                    return false;
                };
                same_pod(ns, name)
                    && !endpoints.contains(&(ns.as_str(), name.as_str()))
                    && !pod.ip.is_some_and(|ip| addresses.contains(&ip))
            })
            .map(|(key, own)| (key.clone(), own.clone()))
            .collect();
        (classes, owns)
    }

    /// The position of the first pod named `namespace`/`name`.
    fn pod_index(&self, namespace: &str, name: &str) -> Option<usize> {
        let pods = &self.registry.pods;
        self.pods
            .get(name_key(namespace, name))
            .find(|&i| pods[i].namespace == namespace && pods[i].name == name)
    }

    fn pod(&self, proxy: &ProxyIdentity) -> Option<&PodEntry> {
        self.registry
            .pods
            .get(self.pod_index(&proxy.namespace, &proxy.pod)?)
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
        let mut middle = serde_json::to_vec(&shared.services)?;
        middle.extend_from_slice(b",\"settings\":");
        serde_json::to_writer(&mut middle, &shared.settings)?;
        if !shared.outbound.is_empty() {
            middle.extend_from_slice(b",\"outbound\":");
            serde_json::to_writer(&mut middle, &shared.outbound)?;
        }
        if !shared.clusters.is_empty() {
            middle.extend_from_slice(b",\"clusters\":");
            serde_json::to_writer(&mut middle, &shared.clusters)?;
        }
        let part = Arc::new(Part {
            digest: Sha256::digest(&middle).into(),
            middle: Bytes::from(middle),
        });
        // Another stream may have finished first; both computed the same.
        Ok(cell.get_or_init(|| part).clone())
    }

    /// The proxy's own part as JSON: kept from before, or compiled now.
    fn own_part(
        &self,
        proxy: &ProxyIdentity,
        pod: Option<&PodEntry>,
        labels: &Labels,
    ) -> Result<Arc<OwnPart>, serde_json::Error> {
        let key = (proxy.namespace.clone(), proxy.pod.clone());
        if let Some(own) = lock(&self.owns).get(&key).filter(|o| o.said == *proxy) {
            return Ok(own.clone());
        }
        let own = self.own(proxy, pod, labels);
        // ProxyConfig's fields in declaration order, with its `skip_serializing_if` rules
        // (`version` is empty and `outbound_traffic_policy` the default here; `tracing`
        // comes last, when set).
        let mut head = b"{\"version\":\"\",\"identity\":".to_vec();
        serde_json::to_writer(&mut head, &own.identity)?;
        head.extend_from_slice(b",\"services\":");
        let mut tail = Vec::new();
        if !own.inbound.is_default() {
            tail.extend_from_slice(b",\"inbound\":");
            serde_json::to_writer(&mut tail, &own.inbound)?;
        }
        if let Some(tracing) = &own.tracing {
            tail.extend_from_slice(b",\"tracing\":");
            serde_json::to_writer(&mut tail, tracing)?;
        }
        tail.push(b'}');
        let mut hasher = Sha256::new();
        hasher.update(&head);
        // 0xff never occurs in JSON text (UTF-8), so the pieces cannot run into each other.
        hasher.update([0xff]);
        hasher.update(&tail);
        let own = Arc::new(OwnPart {
            said: proxy.clone(),
            head: Bytes::from(head),
            tail: Bytes::from(tail),
            digest: hasher.finalize().into(),
        });
        lock(&self.owns).insert(key, own.clone());
        Ok(own)
    }

    /// The proxy's own part, compiled against the services that may have it as an endpoint.
    fn own(&self, proxy: &ProxyIdentity, pod: Option<&PodEntry>, labels: &Labels) -> super::Own {
        // The services that may have the proxy as an endpoint, in registry order.
        let ip = pod.and_then(|p| p.ip).or(proxy.ip);
        let services = &self.registry.services;
        let named = self
            .by_pod
            .get(name_key(&proxy.namespace, &proxy.pod))
            .filter(|&i| {
                (services[i].endpoints.iter())
                    .any(|e| e.namespace == proxy.namespace && e.pod == proxy.pod)
            });
        let at_ip = ip.into_iter().flat_map(|ip| self.by_ip.get(ip));
        let mut indexes: Vec<usize> = named.chain(at_ip).collect();
        indexes.sort_unstable();
        indexes.dedup();
        let candidates: Vec<&ServiceEntry> = indexes
            .into_iter()
            .map(|i| &self.registry.services[i])
            .collect();
        debug_assert_eq!(pod, services::pod(&self.registry, proxy));
        own(&self.registry, proxy, pod, labels, &candidates)
    }
}

/// The services (old and new versions) that differ between two registries, by namespace
/// and name: added, removed or changed.
fn changed_services<'a>(old: &'a Registry, next: &'a Registry) -> Vec<&'a ServiceEntry> {
    type Index<'a> = HashMap<(&'a str, &'a str), Vec<&'a ServiceEntry>>;
    let index = |registry: &'a Registry| {
        let mut map: Index<'a> = HashMap::new();
        for s in &registry.services {
            map.entry((s.namespace.as_str(), s.name.as_str()))
                .or_default()
                .push(s);
        }
        map
    };
    let (before, after) = (index(old), index(next));
    let keys: BTreeSet<&(&str, &str)> = before.keys().chain(after.keys()).collect();
    let mut out = Vec::new();
    for key in keys {
        let (a, b) = (before.get(key), after.get(key));
        if a != b {
            out.extend(a.into_iter().flatten());
            out.extend(b.into_iter().flatten());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::testing::{endpoint_of, labels, pod, resource as res, service};
    use crate::registry::{EndpointEntry, Policies};
    use serde_json::json;

    /// (namespace, pod, IP, app, version, sidecar, per-pod DNS name of a StatefulSet pod)
    type PodRow = (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        bool,
        Option<&'static str>,
    );

    const PODS: [PodRow; 8] = [
        ("default", "web-0", "10.0.0.1", "web", "v1", true, None),
        ("default", "web-1", "10.0.0.2", "web", "v2", true, None),
        ("default", "api-0", "10.0.0.3", "api", "v1", false, None),
        (
            "default",
            "redis-0",
            "10.0.0.4",
            "redis",
            "v1",
            true,
            Some("redis-0.redis.default.svc.cluster.local"),
        ),
        (
            "default",
            "redis-1",
            "10.0.0.5",
            "redis",
            "v1",
            false,
            Some("redis-1.redis.default.svc.cluster.local"),
        ),
        ("prod", "db-0", "10.0.1.1", "db", "v1", true, None),
        ("prod", "db-1", "10.0.1.2", "db", "v1", true, None),
        ("prod", "web-0", "10.0.1.3", "web", "v1", true, None),
    ];

    fn pod_of(&(ns, name, ip, app, version, sidecar, hostname): &PodRow) -> PodEntry {
        let mut p = pod(ns, name, ip, &[("app", app), ("version", version)]);
        if sidecar {
            p.labels
                .insert("security.istio.io/tlsMode".into(), "istio".into());
        }
        p.has_sidecar = sidecar;
        p.workload = app.into();
        p.service_account = app.into();
        p.workload_kind = "StatefulSet".into();
        p.hostname = hostname
            .and_then(|h| h.split('.').next())
            .map(str::to_string);
        p
    }

    /// db-1 asks for tracing (Istio's `proxy.istio.io/config` annotation).
    fn traced(mut p: PodEntry) -> PodEntry {
        if p.name == "db-1" {
            p.annotations.insert(
                "proxy.istio.io/config".into(),
                r#"{"tracing":{"sampling":50,"zipkin":{"address":"zipkin:9411"}}}"#.into(),
            );
        }
        p
    }

    /// A mesh with something of everything: cluster-IP and headless services, StatefulSet
    /// per-pod names, pods without a sidecar, exportTo, VirtualServices (one for a pod's
    /// name, two for one host), DestinationRules at every scope (one selecting workloads),
    /// PeerAuthentications with port-level modes, RedisPolicies in two namespaces.
    fn registry() -> Registry {
        // The service `app` of `ns` selects the pods of that app; ports (name, port, target).
        let service =
            |ns: &str, app: &str, ip: Option<&str>, ports: &[(&str, u16, u16)], export: &[&str]| {
                let endpoints: Vec<EndpointEntry> = PODS
                    .iter()
                    .filter(|row| row.0 == ns && row.3 == app)
                    .filter_map(|row| {
                        let ep = endpoint_of(&pod_of(row))?;
                        Some(EndpointEntry {
                            hostname: row.6.map(str::to_string),
                            ..ep
                        })
                    })
                    .collect();
                let named: Vec<(&str, u16)> = ports.iter().map(|(n, p, _)| (*n, *p)).collect();
                let mut s = service(ns, app, ip, &named, endpoints);
                for (port, (_, _, target)) in s.ports.iter_mut().zip(ports) {
                    port.target_port = *target;
                }
                s.labels = labels(&[("app", app)]);
                s.export_to = export.iter().map(|s| s.to_string()).collect();
                s
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
            redis_policies: vec![
                res(
                    "default",
                    "redis-faults",
                    1,
                    json!({"host": "redis", "faults": [
                    {"commands": ["GET"], "abort": {"percentage": 20}}]}),
                ),
                res(
                    "prod",
                    "db-delay",
                    2,
                    json!({"host": "db", "faults": [{"delay": {"fixedDelay": "5ms"}}]}),
                ),
            ],
            ..Policies::default()
        };
        Registry {
            namespaces: [("default", Labels::new()), ("prod", Labels::new())]
                .into_iter()
                .map(|(n, l)| (n.to_string(), l))
                .collect(),
            services,
            pods: PODS.iter().map(pod_of).map(traced).collect(),
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
                String::from_utf8(got.to_vec()).unwrap(),
                String::from_utf8(want.to_vec()).unwrap(),
                "{proxy:?}"
            );
            assert_eq!(got.hash, push::hex(&fp));
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
        let traced: Vec<String> = proxies(&registry)
            .iter()
            .filter(|p| cache.compile(&registry, p).config.tracing.is_some())
            .map(|p| p.pod.clone())
            .collect();
        assert_eq!(traced, ["db-1"]);
        // RedisPolicies are in the class part; a policy in the service's namespace applies
        // to the clients of every namespace that sees the service.
        let redis = |i: usize| -> Vec<String> {
            let config = cache.compile(&registry, &proxies(&registry)[i]).config;
            (config.outbound.iter())
                .flat_map(|p| &p.redis_policies)
                .map(|p| p.policy.clone())
                .collect()
        };
        assert_eq!(redis(0), ["prod/db-delay", "default/redis-faults"]);
        assert_eq!(redis(5), ["prod/db-delay", "default/redis-faults"]);
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
    fn fingerprints_and_shared_parts_follow_the_registry() {
        // Each step changes the registry of the step before; (what, change, namespaces
        // whose classes may be recompiled).
        type Change = fn(&mut Registry);
        let steps: [(&str, Change, &[&str]); 11] = [
            (
                "the labels of default/web-0 (its own part only)",
                |r| {
                    r.pods[0].labels.insert("team".into(), "a".into());
                },
                &[],
            ),
            (
                "the target port of default/api (api-0's inbound ports)",
                |r| {
                    let api = r.services.iter_mut().find(|s| s.name == "api");
                    api.expect("api").ports[0].target_port = 9999;
                },
                &["default"],
            ),
            (
                "an endpoint of prod/web (exportTo prod)",
                |r| r.services[4].endpoints[0].ip = "10.0.1.9".parse().unwrap(),
                &["prod"],
            ),
            (
                "an endpoint of prod/db (exportTo *)",
                |r| r.services[3].endpoints[1].ready = false,
                &["default", "prod", "elsewhere"],
            ),
            (
                "default/api exported to every namespace",
                |r| r.services[1].export_to = vec!["*".into()],
                &["default", "prod", "elsewhere"],
            ),
            (
                "a new service in default, seen by default only",
                |r| {
                    let mut extra = r.services[1].clone();
                    extra.name = "extra".into();
                    extra.fqdn = "extra.default.svc.cluster.local".into();
                    extra.export_to = vec![".".into()];
                    r.services.insert(0, extra);
                },
                &["default"],
            ),
            (
                "a policy",
                |r| r.policies.peer_authentications.truncate(1),
                &["default", "prod", "elsewhere"],
            ),
            (
                "a RedisPolicy",
                |r| r.policies.redis_policies.truncate(1),
                &["default", "prod", "elsewhere"],
            ),
            (
                "the mesh config and a mesh-wide Telemetry",
                |r| {
                    r.policies.mesh = ferry_model::istio::MeshConfig::parse(
                        "extensionProviders: [{name: z, zipkin: {service: zipkin.obs, port: 9411}}]",
                    )
                    .ok();
                    let root = r.root_namespace.clone();
                    r.policies.telemetries.push(res(
                        &root,
                        "mesh-default",
                        1,
                        json!({"tracing": [{"providers": [{"name": "z"}],
                                            "randomSamplingPercentage": 10}]}),
                    ));
                },
                &["default", "prod", "elsewhere"],
            ),
            (
                "a Telemetry's sampling",
                |r| {
                    if let Some(t) = r.policies.telemetries.first_mut() {
                        t.spec.tracing[0].random_sampling_percentage = Some(30.0);
                    }
                },
                &["default", "prod", "elsewhere"],
            ),
            ("nothing", |_| {}, &[]),
        ];
        // The cache follows a new registry either by comparing it with the previous one, or
        // (in place) by being told what changed.
        for in_place in [false, true] {
            let cache = Cache::new();
            let mut before = Arc::new(registry());
            let all = proxies(&before);
            let mut held: Vec<(Fingerprint, push::Rendered)> = all
                .iter()
                .map(|p| {
                    let (r, f) = rendered(cache.prepare(&before, p, None).unwrap());
                    (f, r)
                })
                .collect();
            for (what, change, recompiled) in steps {
                let mut next = (*before).clone();
                change(&mut next);
                let after = Arc::new(next);
                if in_place {
                    let detached = cache.detach(&before);
                    assert!(detached.is_some(), "{what}");
                    cache.install(after.clone(), detached, &changes_between(&before, &after));
                }
                for (proxy, (fp, old)) in all.iter().zip(held.iter_mut()) {
                    let want = push::render(&super::super::compile(&after, proxy).config).unwrap();
                    match cache.prepare(&after, proxy, Some(fp)).unwrap() {
                        Prepared::Unchanged => {
                            assert_eq!(old.to_vec(), want.to_vec(), "{what}: {proxy:?}")
                        }
                        other => {
                            let (new, new_fp) = rendered(other);
                            assert_eq!(new.to_vec(), want.to_vec(), "{what}: {proxy:?}");
                            assert_ne!(new.to_vec(), old.to_vec(), "{what}: {proxy:?}");
                            *fp = new_fp;
                        }
                    }
                    let (now, _) = rendered(cache.prepare(&after, proxy, None).unwrap());
                    let shared = now.json[1].as_ptr() == old.json[1].as_ptr();
                    assert!(
                        shared || recompiled.contains(&proxy.namespace.as_str()),
                        "{what}: {proxy:?} recompiled"
                    );
                    *old = now;
                }
                before = after;
            }
        }
    }

    /// What the store says of the difference between two registries.
    fn changes_between(old: &Registry, new: &Registry) -> Changes {
        let pods = |r: &Registry| -> BTreeSet<(String, String, String)> {
            (r.pods.iter())
                .map(|p| (p.namespace.clone(), p.name.clone(), format!("{p:?}")))
                .collect()
        };
        let (a, b) = (pods(old), pods(new));
        Changes {
            everything: old.policies != new.policies,
            namespaces: old.namespaces != new.namespaces,
            services: changed_services(old, new).into_iter().cloned().collect(),
            pods: (a.symmetric_difference(&b))
                .map(|(ns, name, _)| (ns.clone(), name.clone()))
                .collect(),
        }
    }

    #[test]
    fn parts_of_another_registry_are_not_detached() {
        let (a, b) = (Arc::new(registry()), Arc::new(registry()));
        let proxy = &proxies(&a)[0];
        let cache = Cache::new();
        assert!(cache.detach(&a).is_none(), "nothing compiled yet");
        cache.prepare(&a, proxy, None).unwrap();
        assert!(cache.detach(&b).is_none(), "compiled for another registry");
        assert!(cache.detach(&a).is_none(), "dropped by the previous call");
        cache.prepare(&a, proxy, None).unwrap();
        let detached = cache.detach(&a).expect("the parts of a");
        assert_eq!((detached.classes.len(), detached.owns.len()), (1, 1));
    }
}
