//! The typed store: every object of the mesh that Ferry reads (Namespaces, Pods, Services,
//! EndpointSlices, workloads, ConfigMaps (the `istio` one holds the mesh config), the three
//! Istio traffic and security kinds, Istio's Telemetry, and Ferry's RedisPolicy), keyed by
//! (kind, namespace, name).
//!
//! Sources hand the store a [`SourceUpdate`]: a manifest directory one for everything it
//! holds, a Kubernetes API server one for the objects that changed (scoped to their
//! origins). The store replaces that source's objects (of those origins) with it, except
//! that a resource that failed validation keeps its last valid version, and so do all the
//! resources of a file that could not be parsed. Every effective change bumps the
//! generation. [`Store::registry`] derives the [`Registry`] the compiler reads, and
//! [`Store::update_registry`] brings one up to date in place, rebuilding only the namespaces
//! that changed.
//!
//! An update is applied in place (only the objects that differ are replaced), and the pods
//! each workload stands for, expanded and run through injection, are kept per object and
//! redone only for the objects that changed or whose namespace's labels changed: a mesh of
//! ten thousand pods where one pod moved costs one injection, not ten thousand.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ferry_model::ferry::RedisPolicySpec;
use ferry_model::istio::{
    DestinationRuleSpec, MeshConfig, PeerAuthenticationSpec, TelemetrySpec, VirtualServiceSpec,
};
use ferry_model::{Diagnostic, IstioResource};
use serde_json::Value;

use ferry_inject::InjectConfig;

use crate::registry::{Changes, Labels, PodEntry, Policies, Registry, ServiceEntry};
use crate::source::build::{self, MeshPod, PodSummary};
use crate::source::endpoints::string_map;
use crate::source::vip::{self, VipRange};

/// Name of the ConfigMap (in the root namespace) that holds the mesh config.
pub const MESH_CONFIG_MAP: &str = "istio";
/// The key of [`MESH_CONFIG_MAP`] that holds the mesh config.
pub const MESH_CONFIG_KEY: &str = "mesh";

/// The kinds the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `v1` Namespace (cluster-scoped: stored with an empty namespace).
    Namespace,
    /// `v1` Pod.
    Pod,
    /// `v1` Service.
    Service,
    /// `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice,
    /// `apps/v1` StatefulSet.
    StatefulSet,
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` DaemonSet.
    DaemonSet,
    /// `apps/v1` ReplicaSet.
    ReplicaSet,
    /// `batch/v1` Job.
    Job,
    /// `networking.istio.io` VirtualService.
    VirtualService,
    /// `networking.istio.io` DestinationRule.
    DestinationRule,
    /// `security.istio.io` PeerAuthentication.
    PeerAuthentication,
    /// `ferry.dev` RedisPolicy.
    RedisPolicy,
    /// `v1` ConfigMap (the root namespace's `istio` one holds the mesh config).
    ConfigMap,
    /// `telemetry.istio.io` Telemetry.
    Telemetry,
}

impl Kind {
    /// The kind for a manifest's `kind` field, if the store holds it.
    pub fn from_name(kind: &str) -> Option<Kind> {
        Some(match kind {
            "Namespace" => Kind::Namespace,
            "Pod" => Kind::Pod,
            "Service" => Kind::Service,
            "EndpointSlice" => Kind::EndpointSlice,
            "StatefulSet" => Kind::StatefulSet,
            "Deployment" => Kind::Deployment,
            "DaemonSet" => Kind::DaemonSet,
            "ReplicaSet" => Kind::ReplicaSet,
            "Job" => Kind::Job,
            "VirtualService" => Kind::VirtualService,
            "DestinationRule" => Kind::DestinationRule,
            "PeerAuthentication" => Kind::PeerAuthentication,
            "RedisPolicy" => Kind::RedisPolicy,
            "ConfigMap" => Kind::ConfigMap,
            "Telemetry" => Kind::Telemetry,
            _ => return None,
        })
    }

    /// The manifest name of the kind (`StatefulSet`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::StatefulSet => "StatefulSet",
            Kind::Deployment => "Deployment",
            Kind::DaemonSet => "DaemonSet",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Job => "Job",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::RedisPolicy => "RedisPolicy",
            Kind::ConfigMap => "ConfigMap",
            Kind::Telemetry => "Telemetry",
        }
    }

    /// Whether the kind lives in a namespace.
    pub fn namespaced(self) -> bool {
        self != Kind::Namespace
    }
}

/// Identity of a stored object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Kind.
    pub kind: Kind,
    /// Namespace (empty for Namespaces).
    pub namespace: String,
    /// Name (for a Pod with only `generateName`, that prefix).
    pub name: String,
}

impl ObjectKey {
    /// A key; the namespace is dropped for cluster-scoped kinds.
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        let namespace = if kind.namespaced() { namespace } else { "" };
        ObjectKey {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// The key named by a diagnostic's `Kind/namespace/name`, when it is a kind the store
    /// holds and the name is known.
    pub fn from_resource_id(id: &str) -> Option<Self> {
        let mut parts = id.splitn(3, '/');
        let kind = Kind::from_name(parts.next()?)?;
        let namespace = parts.next()?;
        let name = parts.next()?;
        (name != "<unnamed>" && !name.is_empty()).then(|| ObjectKey::new(kind, namespace, name))
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind.namespaced() {
            write!(f, "{}/{}/{}", self.kind.name(), self.namespace, self.name)
        } else {
            write!(f, "{}/{}", self.kind.name(), self.name)
        }
    }
}

/// A stored object's content.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// A Kubernetes kind, as written (type-checked by validation).
    Kubernetes(Box<Value>),
    /// A VirtualService.
    VirtualService(Box<IstioResource<VirtualServiceSpec>>),
    /// A DestinationRule.
    DestinationRule(Box<IstioResource<DestinationRuleSpec>>),
    /// A PeerAuthentication.
    PeerAuthentication(Box<IstioResource<PeerAuthenticationSpec>>),
    /// A RedisPolicy.
    RedisPolicy(Box<IstioResource<RedisPolicySpec>>),
    /// A Telemetry.
    Telemetry(Box<IstioResource<TelemetrySpec>>),
}

impl Object {
    /// The Kubernetes value, for Kubernetes kinds.
    pub fn as_value(&self) -> Option<&Value> {
        match self {
            Object::Kubernetes(v) => Some(v),
            _ => None,
        }
    }
}

/// An object as a source provided it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Its identity.
    pub key: ObjectKey,
    /// The file (or other origin) it came from.
    pub origin: String,
    /// 1-based line where it starts, 0 when unknown.
    pub line: usize,
    /// The object.
    pub object: Object,
}

/// A resource a source offered that failed validation (or a file that failed to parse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The source that offered it (`files:/etc/mesh`).
    pub source: String,
    /// The resource, when it is one the store holds and it could be identified.
    pub key: Option<ObjectKey>,
    /// The error as `ferry validate` prints it (file, line, resource, field, message).
    pub diagnostic: Diagnostic,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.diagnostic.fmt(f)
    }
}

/// Everything one source holds now, or (with [`SourceUpdate::scope`]) everything it holds
/// from some of its origins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceUpdate {
    /// Which source (`files:/etc/mesh`); its previous objects are replaced.
    pub source: String,
    /// `None`: the update is complete, and the source's objects it does not hold are gone.
    /// `Some(origins)`: it is complete for these origins only (a source that knows what
    /// changed, such as the Kubernetes watchers, names the objects that did): the objects
    /// and rejections of the source's other origins stay as they are.
    pub scope: Option<BTreeSet<String>>,
    /// The valid objects.
    pub entries: Vec<Entry>,
    /// Resources that failed validation: their last valid versions stay in force.
    pub rejections: Vec<Rejection>,
    /// Origins (files, or directories) that could not be read or parsed: all the last valid
    /// objects from them (or from below them) stay.
    pub broken_origins: BTreeSet<String>,
}

/// What applying an update did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Whether any object changed (and the generation was bumped).
    pub changed: bool,
    /// Objects added, changed or removed.
    pub touched: Vec<ObjectKey>,
    /// Rejected resources whose last valid version was kept.
    pub kept: Vec<ObjectKey>,
}

/// A stored object with where it came from.
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    source: String,
    origin: String,
    line: usize,
    object: Object,
}

/// The store: objects, rejections, generation, and the addresses assigned to pods and to
/// services without a cluster IP.
#[derive(Debug, Clone)]
pub struct Store {
    objects: BTreeMap<ObjectKey, Stored>,
    rejections: BTreeMap<String, Vec<Rejection>>,
    generation: u64,
    pod_ips: BTreeMap<(String, String), IpAddr>,
    vip_range: VipRange,
    vips: BTreeMap<(String, String), Ipv4Addr>,
    /// The pods of every object that makes pods, expanded and injected (see
    /// [`build::summaries`]); follows `objects`.
    pods: BTreeMap<ObjectKey, Vec<PodSummary>>,
    /// The namespace labels `pods` were injected with.
    namespace_labels: BTreeMap<String, Labels>,
    /// What changed since the registry was last brought up to date.
    stale: Stale,
}

/// The parts of the registry that no longer reflect the store (see
/// [`Store::update_registry`]).
#[derive(Debug, Clone, Default)]
struct Stale {
    /// Everything (a store no registry was built from yet).
    all: bool,
    /// The namespaces whose services or pods may differ: the registry's entries of one
    /// namespace depend only on that namespace's objects, labels and addresses.
    namespaces: BTreeSet<String>,
    /// The policies (Istio's and Ferry's resources, the mesh config).
    policies: bool,
}

impl Default for Store {
    fn default() -> Self {
        Store::new(VipRange::default())
    }
}

impl Store {
    /// An empty store that gives services without a `clusterIP` addresses from `vip_range`.
    pub fn new(vip_range: VipRange) -> Self {
        Store {
            objects: BTreeMap::new(),
            rejections: BTreeMap::new(),
            generation: 0,
            pod_ips: BTreeMap::new(),
            vip_range,
            vips: BTreeMap::new(),
            pods: BTreeMap::new(),
            namespace_labels: BTreeMap::new(),
            stale: Stale {
                all: true,
                ..Stale::default()
            },
        }
    }

    /// Increases on every effective change (objects, pod IPs, service VIPs).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The object stored under `key`.
    pub fn get(&self, key: &ObjectKey) -> Option<&Object> {
        self.objects.get(key).map(|s| &s.object)
    }

    /// Where the object under `key` came from: (origin, line).
    pub fn origin(&self, key: &ObjectKey) -> Option<(&str, usize)> {
        self.objects.get(key).map(|s| (s.origin.as_str(), s.line))
    }

    /// Every object, in key order.
    pub fn objects(&self) -> impl Iterator<Item = (&ObjectKey, &Object)> {
        self.objects.iter().map(|(k, s)| (k, &s.object))
    }

    /// The rejections of the latest update of every source.
    pub fn rejections(&self) -> impl Iterator<Item = &Rejection> {
        self.rejections.values().flatten()
    }

    /// The VIPs given to services without a `clusterIP`, by (namespace, name).
    pub fn vips(&self) -> &BTreeMap<(String, String), Ipv4Addr> {
        &self.vips
    }

    /// Replaces everything `update.source` provided before with `update`, keeping the last
    /// valid version of rejected resources and of every object of a broken origin.
    pub fn apply(&mut self, update: SourceUpdate) -> ApplyOutcome {
        let SourceUpdate {
            source,
            scope,
            entries,
            rejections,
            broken_origins,
        } = update;
        let in_scope = |origin: &str| scope.as_ref().is_none_or(|s| s.contains(origin));
        // By key; a later entry for a key replaces an earlier one.
        let mut incoming = entries;
        incoming.sort_by(|a, b| a.key.cmp(&b.key));
        incoming.dedup_by(|later, earlier| {
            let same = later.key == earlier.key;
            if same {
                std::mem::swap(later, earlier);
            }
            same
        });
        let provided = |key: &ObjectKey| incoming.binary_search_by(|e| e.key.cmp(key)).is_ok();
        let mut touched = Vec::new();
        let mut kept = Vec::new();
        // What this source provided before and provides no more: gone, unless rejected now
        // or from a broken origin.
        let gone: Vec<ObjectKey> = self
            .objects
            .iter()
            .filter(|(key, old)| old.source == source && in_scope(&old.origin) && !provided(key))
            .map(|(key, _)| key.clone())
            .collect();
        for key in gone {
            let Some(old) = self.objects.get(&key) else {
                continue;
            };
            let rejected = rejections.iter().any(|r| r.key.as_ref() == Some(&key));
            let broken = broken_origins
                .iter()
                .any(|b| old.origin == *b || std::path::Path::new(&old.origin).starts_with(b));
            if rejected || broken {
                kept.push(key);
            } else {
                self.objects.remove(&key);
                touched.push(key);
            }
        }
        // Objects replaced by equal ones: a whole mesh's worth of JSON on every update.
        let mut garbage = Vec::new();
        for entry in incoming {
            let key = entry.key;
            let stored = Stored {
                source: source.clone(),
                origin: entry.origin,
                line: entry.line,
                object: entry.object,
            };
            match self.objects.get_mut(&key) {
                Some(old) if same_object(&old.object, &stored.object) => {
                    old.source = stored.source;
                    old.origin = stored.origin;
                    old.line = stored.line;
                    garbage.push(stored.object);
                }
                Some(old) => {
                    *old = stored;
                    touched.push(key);
                }
                None => {
                    self.objects.insert(key.clone(), stored);
                    touched.push(key);
                }
            }
        }
        free_in_background(garbage);
        touched.sort();
        for key in &touched {
            match key.kind {
                Kind::Namespace => self.stale.namespaces.insert(key.name.clone()),
                Kind::VirtualService
                | Kind::DestinationRule
                | Kind::PeerAuthentication
                | Kind::RedisPolicy
                | Kind::Telemetry
                | Kind::ConfigMap => {
                    self.stale.policies = true;
                    false
                }
                _ => self.stale.namespaces.insert(key.namespace.clone()),
            };
        }
        match &scope {
            None => {
                self.rejections.insert(source, rejections);
            }
            Some(origins) => {
                let held = self.rejections.entry(source).or_default();
                held.retain(|r| !origins.contains(&r.diagnostic.source));
                held.extend(rejections);
            }
        }
        self.refresh_pods(&touched);
        let vips_changed = self.reallocate_vips();
        let changed = !touched.is_empty() || vips_changed;
        if changed {
            self.generation += 1;
        }
        ApplyOutcome {
            changed,
            touched,
            kept,
        }
    }

    /// Brings the expanded pods up to date with the objects: redoes the objects in
    /// `touched` and those of the namespaces whose labels changed, drops those gone.
    fn refresh_pods(&mut self, touched: &[ObjectKey]) {
        let labels: BTreeMap<String, Labels> = self
            .objects
            .range(ObjectKey::new(Kind::Namespace, "", "")..)
            .take_while(|(k, _)| k.kind == Kind::Namespace)
            .filter_map(|(k, s)| {
                let value = s.object.as_value()?;
                Some((k.name.clone(), string_map(&value["metadata"]["labels"])))
            })
            .collect();
        let relabelled: BTreeSet<&String> = labels
            .keys()
            .chain(self.namespace_labels.keys())
            .filter(|ns| labels.get(*ns) != self.namespace_labels.get(*ns))
            .collect();
        let mut redo: BTreeSet<ObjectKey> = touched
            .iter()
            .filter(|k| build::makes_pods(k.kind))
            .cloned()
            .collect();
        if !relabelled.is_empty() {
            redo.extend(
                self.objects
                    .keys()
                    .filter(|k| build::makes_pods(k.kind) && relabelled.contains(&k.namespace))
                    .cloned(),
            );
        }
        let cfg = InjectConfig::default();
        for key in redo {
            let before = match self.objects.get(&key).and_then(|s| s.object.as_value()) {
                Some(value) => {
                    let pods = build::summaries(key.kind, value, &labels, &cfg);
                    let stale = &mut self.stale.namespaces;
                    stale.extend(pods.iter().map(|p| p.entry.namespace.clone()));
                    self.pods.insert(key, pods)
                }
                None => self.pods.remove(&key),
            };
            let stale = &mut self.stale.namespaces;
            stale.extend(before.into_iter().flatten().map(|p| p.entry.namespace));
        }
        self.namespace_labels = labels;
    }

    /// Gives addresses to pods that have none (neither `status.podIP` nor an earlier
    /// assignment) by calling `assign` for each; forgets the addresses of pods that are gone.
    /// Existing assignments are kept. Returns whether anything changed.
    pub fn assign_ips(&mut self, mut assign: impl FnMut(&PodEntry) -> Option<IpAddr>) -> bool {
        let mut pods: Vec<&PodEntry> = self.pods.values().flatten().map(|p| &p.entry).collect();
        build::sort_and_dedup(&mut pods, |p| p);
        let live: BTreeSet<(String, String)> = pods
            .iter()
            .map(|p| (p.namespace.clone(), p.name.clone()))
            .collect();
        let stale = &mut self.stale.namespaces;
        let mut changed = false;
        self.pod_ips.retain(|k, _| {
            let keep = live.contains(k);
            if !keep {
                stale.insert(k.0.clone());
                changed = true;
            }
            keep
        });
        for pod in pods {
            let key = (pod.namespace.clone(), pod.name.clone());
            if pod.ip.is_some() || self.pod_ips.contains_key(&key) {
                continue;
            }
            if let Some(ip) = assign(pod) {
                stale.insert(key.0.clone());
                self.pod_ips.insert(key, ip);
                changed = true;
            }
        }
        if changed {
            self.generation += 1;
        }
        changed
    }

    /// Every pod of the mesh as it would be created (expanded from workloads, injected when
    /// the decision says so), with its registry entry: what the local runtime starts.
    pub fn pods(&self) -> Vec<MeshPod> {
        build::pods(self.kube_objects(), &self.pod_ips)
    }

    /// The addresses assigned through [`Store::assign_ips`], by (namespace, pod name).
    pub fn assigned_ips(&self) -> &BTreeMap<(String, String), IpAddr> {
        &self.pod_ips
    }

    /// The mesh as the compiler reads it: namespaces, pods (expanded from workloads and run
    /// through injection), services with endpoints, and the policies (Istio's and Ferry's).
    pub fn registry(&self, cluster_domain: &str, root_namespace: &str) -> Registry {
        let mut registry = build::registry(
            self.kube_objects(),
            self.pods.values().flatten(),
            &self.pod_ips,
            &self.vips,
            cluster_domain,
        );
        registry.root_namespace = root_namespace.to_string();
        registry.policies = self.policies(root_namespace);
        registry
    }

    /// Brings `registry` (built from this store by [`Store::registry`] or by this function,
    /// for the same cluster domain and root namespace) up to date with the store, in place:
    /// only the services and pods of the namespaces that changed since are rebuilt, and
    /// only the policies when one of them changed. Afterwards it equals what
    /// [`Store::registry`] returns. Returns what differs from the previous version. The
    /// registry is rebuilt whole the first time and when the domain or root namespace differ.
    pub fn update_registry(
        &mut self,
        registry: &mut Registry,
        cluster_domain: &str,
        root_namespace: &str,
    ) -> Changes {
        let stale = std::mem::take(&mut self.stale);
        if stale.all
            || registry.cluster_domain != cluster_domain
            || registry.root_namespace != root_namespace
        {
            let next = self.registry(cluster_domain, root_namespace);
            let changes = Changes {
                everything: *registry != next,
                ..Changes::default()
            };
            *registry = next;
            return changes;
        }
        let mut changes = Changes::default();
        if stale.policies {
            let policies = self.policies(root_namespace);
            if policies != registry.policies {
                registry.policies = policies;
                changes.everything = true;
            }
        }
        if stale.namespaces.is_empty() {
            return changes;
        }
        let dirty = &stale.namespaces;
        let objects = build::KubeObjects(
            self.objects
                .iter()
                .filter(|(k, _)| k.kind == Kind::Namespace || dirty.contains(&k.namespace))
                .filter_map(|(k, s)| Some((k, s.object.as_value()?)))
                .collect(),
        );
        let pods = (self.pods.values().flatten()).filter(|p| dirty.contains(&p.entry.namespace));
        let part = build::registry(objects, pods, &self.pod_ips, &self.vips, cluster_domain);
        let ns_of_service = |s: &ServiceEntry| dirty.contains(&s.namespace);
        let (old, kept): (Vec<ServiceEntry>, Vec<ServiceEntry>) =
            std::mem::take(&mut registry.services)
                .into_iter()
                .partition(ns_of_service);
        changes.services = changed_services(&old, &part.services);
        registry.services = merge_by_namespace(kept, part.services, |s| &s.namespace);
        let (old, kept): (Vec<PodEntry>, Vec<PodEntry>) = std::mem::take(&mut registry.pods)
            .into_iter()
            .partition(|p| dirty.contains(&p.namespace));
        changes.pods = changed_pods(&old, &part.pods);
        registry.pods = merge_by_namespace(kept, part.pods, |p| &p.namespace);
        let mut namespaces = part.namespaces;
        let used = (registry.pods.iter().map(|p| &p.namespace))
            .chain(registry.services.iter().map(|s| &s.namespace));
        for ns in used {
            if !namespaces.contains_key(ns) {
                namespaces.insert(ns.clone(), Labels::new());
            }
        }
        changes.namespaces = namespaces != registry.namespaces;
        registry.namespaces = namespaces;
        changes
    }

    /// The policies in force: Istio's and Ferry's resources, and the mesh config.
    fn policies(&self, root_namespace: &str) -> Policies {
        let mut policies = Policies::default();
        for stored in self.objects.values() {
            match &stored.object {
                Object::VirtualService(r) => policies.virtual_services.push((**r).clone()),
                Object::DestinationRule(r) => policies.destination_rules.push((**r).clone()),
                Object::PeerAuthentication(r) => policies.peer_authentications.push((**r).clone()),
                Object::RedisPolicy(r) => policies.redis_policies.push((**r).clone()),
                Object::Telemetry(r) => policies.telemetries.push((**r).clone()),
                Object::Kubernetes(_) => {}
            }
        }
        policies.mesh = self.mesh_config(root_namespace);
        policies
    }

    /// The mesh config: the `mesh` key of the root namespace's `istio` ConfigMap, when there
    /// is one and it parses (sources reject a ConfigMap whose mesh config does not, so the
    /// last valid version is the one stored).
    fn mesh_config(&self, root_namespace: &str) -> Option<MeshConfig> {
        let key = ObjectKey::new(Kind::ConfigMap, root_namespace, MESH_CONFIG_MAP);
        let value = self.objects.get(&key)?.object.as_value()?;
        let text = value.get("data")?.get(MESH_CONFIG_KEY)?.as_str()?;
        MeshConfig::parse(text).ok()
    }

    /// The Kubernetes objects, by key.
    fn kube_objects(&self) -> build::KubeObjects<'_> {
        build::KubeObjects(
            self.objects
                .iter()
                .filter_map(|(k, s)| Some((k, s.object.as_value()?)))
                .collect(),
        )
    }

    /// Keeps the VIPs of services that still need one and gives new ones to the rest.
    fn reallocate_vips(&mut self) -> bool {
        let mut wanted = Vec::new();
        let mut taken = BTreeSet::new();
        for (key, stored) in &self.objects {
            let (Kind::Service, Some(value)) = (key.kind, stored.object.as_value()) else {
                continue;
            };
            match vip::declared_cluster_ip(value) {
                vip::ClusterIp::Unset => wanted.push((key.namespace.clone(), key.name.clone())),
                vip::ClusterIp::Address(IpAddr::V4(ip)) => {
                    taken.insert(ip);
                }
                _ => {}
            }
        }
        let next = vip::allocate_vips(self.vip_range, &wanted, &self.vips, &taken);
        let changed = next != self.vips;
        if changed {
            let differ = (next.iter().chain(&self.vips))
                .filter(|(k, v)| next.get(*k) != Some(*v) || self.vips.get(*k) != Some(*v));
            let namespaces: Vec<String> = differ.map(|((ns, _), _)| ns.clone()).collect();
            self.stale.namespaces.extend(namespaces);
        }
        self.vips = next;
        changed
    }
}

/// `a` and `b` (each in (namespace, ...) order, with no namespace in both) merged in that
/// order.
fn merge_by_namespace<T>(a: Vec<T>, b: Vec<T>, namespace: impl Fn(&T) -> &String) -> Vec<T> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if namespace(x) <= namespace(y) => a.next(),
            (Some(_), Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => break,
        };
        out.extend(next);
    }
    out
}

/// The services that differ between `old` and `new` by (namespace, name): the old and the
/// new versions of each.
fn changed_services(old: &[ServiceEntry], new: &[ServiceEntry]) -> Vec<ServiceEntry> {
    type Index<'a> = BTreeMap<(&'a str, &'a str), Vec<&'a ServiceEntry>>;
    fn index(list: &[ServiceEntry]) -> Index<'_> {
        let mut map: Index<'_> = BTreeMap::new();
        for s in list {
            map.entry((s.namespace.as_str(), s.name.as_str()))
                .or_default()
                .push(s);
        }
        map
    }
    let (before, after) = (index(old), index(new));
    let keys: BTreeSet<&(&str, &str)> = before.keys().chain(after.keys()).collect();
    let mut out = Vec::new();
    for key in keys {
        let (a, b) = (before.get(key), after.get(key));
        if a != b {
            let versions = a.into_iter().chain(b).flatten();
            out.extend(versions.map(|s| (*s).clone()));
        }
    }
    out
}

/// The (namespace, name) of the pods that differ between `old` and `new`: added, removed or
/// changed.
fn changed_pods(old: &[PodEntry], new: &[PodEntry]) -> BTreeSet<(String, String)> {
    fn index(list: &[PodEntry]) -> BTreeMap<(&str, &str), &PodEntry> {
        list.iter()
            .map(|p| ((p.namespace.as_str(), p.name.as_str()), p))
            .collect()
    }
    let (before, after) = (index(old), index(new));
    let keys: BTreeSet<&(&str, &str)> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|(ns, name)| (ns.to_string(), name.to_string()))
        .collect()
}

/// `a == b`, faster for the common case of an object read again unchanged: maps whose
/// keys come in the same order (as a source that reads the same text or API object again
/// gives them) are compared pair by pair, without hashing every key.
fn same_object(a: &Object, b: &Object) -> bool {
    match (a, b) {
        (Object::Kubernetes(a), Object::Kubernetes(b)) => same_value(a, b),
        _ => a == b,
    }
}

/// `a == b` (see [`same_object`]).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && (x
                    .iter()
                    .zip(y)
                    .all(|((ka, va), (kb, vb))| ka == kb && same_value(va, vb))
                    // Another order of the keys, or a difference: decide the slow way.
                    || x == y)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b))
        }
        _ => a == b,
    }
}

/// Drops `value` on a thread of its own: freeing large structures (a mesh's worth of
/// objects or entries) is work that nothing needs to wait for. With glibc, the freed
/// memory is then handed back to the system (glibc keeps it in its arenas otherwise, and
/// every change would leave the process larger). When no thread can be started, the
/// closure, and `value` with it, is dropped here.
pub(crate) fn free_in_background<T: Send + 'static>(value: T) {
    let _ = std::thread::Builder::new()
        .name("ferry-free".into())
        .spawn(move || {
            drop(value);
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only releases free memory of the allocator's arenas.
            unsafe {
                libc::malloc_trim(0);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(kind: Kind, name: &str, value: Value) -> Entry {
        Entry {
            key: ObjectKey::new(kind, "default", name),
            origin: "a.yaml".into(),
            line: 1,
            object: Object::Kubernetes(Box::new(value)),
        }
    }

    fn update(entries: Vec<Entry>) -> SourceUpdate {
        SourceUpdate {
            source: "test".into(),
            entries,
            ..SourceUpdate::default()
        }
    }

    #[test]
    fn generation_moves_only_on_effective_change() {
        let mut store = Store::default();
        let pod = json!({"kind": "Pod", "metadata": {"name": "p"}});
        assert!(
            store
                .apply(update(vec![entry(Kind::Pod, "p", pod.clone())]))
                .changed
        );
        assert_eq!(store.generation(), 1);
        let mut moved = entry(Kind::Pod, "p", pod);
        moved.line = 7;
        assert!(!store.apply(update(vec![moved])).changed);
        assert_eq!(store.generation(), 1);
        assert!(store.apply(update(vec![])).changed);
        assert_eq!(store.objects().count(), 0);
        assert_eq!(store.generation(), 2);
    }

    #[test]
    fn rejected_resource_keeps_last_valid_version() {
        let mut store = Store::default();
        let v1 =
            json!({"kind": "Service", "metadata": {"name": "s"}, "spec": {"clusterIP": "None"}});
        store.apply(update(vec![entry(Kind::Service, "s", v1.clone())]));
        let key = ObjectKey::new(Kind::Service, "default", "s");
        let mut bad = update(vec![]);
        bad.rejections.push(Rejection {
            source: "test".into(),
            key: Some(key.clone()),
            diagnostic: Diagnostic {
                source: "a.yaml".into(),
                line: 3,
                resource: key.to_string(),
                field: "spec".into(),
                message: "bad".into(),
                severity: ferry_model::Severity::Error,
            },
        });
        let outcome = store.apply(bad);
        assert!(!outcome.changed);
        assert_eq!(outcome.kept, vec![key.clone()]);
        assert_eq!(store.get(&key).and_then(Object::as_value), Some(&v1));
        assert_eq!(store.rejections().count(), 1);
    }

    #[test]
    fn other_sources_are_untouched() {
        let mut store = Store::default();
        store.apply(update(vec![entry(Kind::Pod, "a", json!({}))]));
        let mut other = update(vec![entry(Kind::Pod, "b", json!({}))]);
        other.source = "other".into();
        store.apply(other);
        store.apply(update(vec![]));
        let names: Vec<_> = store.objects().map(|(k, _)| k.name.clone()).collect();
        assert_eq!(names, vec!["b"]);
    }

    #[test]
    fn kept_pods_follow_their_objects_and_namespace_labels() {
        let ns = |labels: Value| {
            let mut e = entry(
                Kind::Namespace,
                "default",
                json!({"kind": "Namespace", "metadata": {"name": "default", "labels": labels}}),
            );
            e.key = ObjectKey::new(Kind::Namespace, "", "default");
            e
        };
        let pod = |ip: &str| {
            entry(
                Kind::Pod,
                "solo",
                json!({"kind": "Pod", "metadata": {"name": "solo", "labels": {"app": "web"}},
                       "spec": {"containers": [{"name": "c", "image": "x",
                           "ports": [{"name": "http", "containerPort": 8080}]}]},
                       "status": {"podIP": ip}}),
            )
        };
        let deployment = entry(
            Kind::Deployment,
            "web",
            json!({"kind": "Deployment", "metadata": {"name": "web"},
                   "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "web"}},
                       "spec": {"containers": [{"name": "c", "image": "x"}]}}}}),
        );
        let service = entry(
            Kind::Service,
            "web",
            json!({"kind": "Service", "metadata": {"name": "web"},
                   "spec": {"selector": {"app": "web"},
                       "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
        );
        let injected = json!({"istio-injection": "enabled"});
        // Each step's complete update; the kept pods must give what a new store gives.
        let steps = [
            vec![
                ns(injected.clone()),
                pod("10.0.0.1"),
                deployment.clone(),
                service.clone(),
            ],
            vec![
                ns(injected.clone()),
                pod("10.0.0.2"),
                deployment.clone(),
                service.clone(),
            ],
            vec![
                ns(json!({})),
                pod("10.0.0.2"),
                deployment.clone(),
                service.clone(),
            ],
            vec![ns(injected.clone()), pod("10.0.0.2"), service.clone()],
            vec![pod("10.0.0.3"), deployment, service],
        ];
        let mut store = Store::default();
        let ip = |_: &PodEntry| Some(IpAddr::from([10, 9, 9, 9]));
        for (i, entries) in steps.into_iter().enumerate() {
            assert!(store.apply(update(entries.clone())).changed, "step {i}");
            store.assign_ips(ip);
            let mut fresh = Store::default();
            fresh.apply(update(entries));
            fresh.assign_ips(ip);
            let registry = store.registry("cluster.local", "istio-system");
            assert_eq!(
                registry,
                fresh.registry("cluster.local", "istio-system"),
                "step {i}"
            );
            assert_eq!(store.pods(), fresh.pods(), "step {i}");
            let web = &registry.services[0];
            assert!(!web.endpoints.is_empty(), "step {i}");
        }
    }

    /// An entry whose origin names it alone, as the Kubernetes source makes them.
    fn own_origin(kind: Kind, ns: &str, name: &str, value: Value) -> Entry {
        let key = ObjectKey::new(kind, ns, name);
        Entry {
            origin: key.to_string(),
            key,
            line: 1,
            object: Object::Kubernetes(Box::new(value)),
        }
    }

    /// An update scoped to the origins of `entries` and to `gone`.
    fn scoped(entries: Vec<Entry>, gone: &[&str]) -> SourceUpdate {
        let mut scope: BTreeSet<String> = entries.iter().map(|e| e.origin.clone()).collect();
        scope.extend(gone.iter().map(|g| g.to_string()));
        SourceUpdate {
            scope: Some(scope),
            ..update(entries)
        }
    }

    fn namespace(name: &str, injected: bool) -> Entry {
        let labels = if injected {
            json!({"istio-injection": "enabled"})
        } else {
            json!({})
        };
        own_origin(
            Kind::Namespace,
            "",
            name,
            json!({"kind": "Namespace", "metadata": {"name": name, "labels": labels}}),
        )
    }

    fn pod_at(ns: &str, name: &str, app: &str, ip: Option<&str>) -> Entry {
        let mut value = json!({"kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "image": "x",
                "ports": [{"name": "http", "containerPort": 8080}]}]}});
        if let Some(ip) = ip {
            value["status"] = json!({"podIP": ip});
        }
        own_origin(Kind::Pod, ns, name, value)
    }

    fn service_of(ns: &str, name: &str, app: &str) -> Entry {
        own_origin(
            Kind::Service,
            ns,
            name,
            json!({"kind": "Service", "metadata": {"name": name, "namespace": ns},
                   "spec": {"selector": {"app": app},
                       "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
        )
    }

    fn virtual_service(ns: &str, timeout: &str) -> Entry {
        let spec = json!({"hosts": ["web"], "http": [{"route": [{"destination": {"host": "web"}}],
                          "timeout": timeout}]});
        let key = ObjectKey::new(Kind::VirtualService, ns, "web");
        Entry {
            origin: key.to_string(),
            key,
            line: 1,
            object: Object::VirtualService(Box::new(crate::registry::testing::resource(
                ns, "web", 1, spec,
            ))),
        }
    }

    #[test]
    fn the_registry_updated_in_place_is_the_one_built_whole() {
        let deployment = own_origin(
            Kind::Deployment,
            "b",
            "d",
            json!({"kind": "Deployment", "metadata": {"name": "d", "namespace": "b"},
                   "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "web"}},
                       "spec": {"containers": [{"name": "c", "image": "x",
                           "ports": [{"name": "http", "containerPort": 8080}]}]}}}}),
        );
        let everything = vec![
            namespace("a", true),
            namespace("b", false),
            pod_at("a", "p1", "web", Some("10.0.0.1")),
            pod_at("a", "p2", "web", Some("10.0.0.2")),
            pod_at("b", "p1", "web", Some("10.0.1.1")),
            service_of("a", "web", "web"),
            service_of("b", "web", "web"),
            deployment.clone(),
            virtual_service("a", "5s"),
        ];
        // (what happened, the update, whether the registry changes)
        let steps: Vec<(&str, SourceUpdate, bool)> = vec![
            ("first", update(everything.clone()), true),
            (
                "a pod moved",
                scoped(vec![pod_at("a", "p1", "web", Some("10.0.0.9"))], &[]),
                true,
            ),
            ("a pod deleted", scoped(vec![], &["Pod/a/p2"]), true),
            (
                "unknown origin deleted",
                scoped(vec![], &["Pod/a/zz"]),
                false,
            ),
            (
                "namespace relabelled",
                scoped(vec![namespace("a", false)], &[]),
                true,
            ),
            (
                "selector changed",
                scoped(vec![service_of("b", "web", "none")], &[]),
                true,
            ),
            (
                "policy changed",
                scoped(vec![virtual_service("a", "7s")], &[]),
                true,
            ),
            (
                "same again",
                scoped(vec![virtual_service("a", "7s")], &[]),
                false,
            ),
            (
                "a namespace added",
                scoped(vec![namespace("c", true)], &[]),
                true,
            ),
            ("complete again", update(everything), true),
        ];
        let mut store = Store::default();
        let mut registry = Registry::default();
        let mut next_ip = 0u8;
        for (what, update, changes_registry) in steps {
            store.apply(update);
            store.assign_ips(|_| {
                next_ip += 1;
                Some(IpAddr::from([10, 9, 0, next_ip]))
            });
            let before = registry.clone();
            let changes = store.update_registry(&mut registry, "cluster.local", "istio-system");
            assert_eq!(
                registry,
                store.registry("cluster.local", "istio-system"),
                "{what}"
            );
            assert_eq!(registry != before, changes_registry, "{what}");
            assert_eq!(!changes.is_empty(), changes_registry, "{what}: {changes:?}");
        }
        let namespaces: Vec<&str> = registry.pods.iter().map(|p| p.namespace.as_str()).collect();
        assert_eq!(namespaces, ["a", "a", "b", "b", "b"]);
        assert_eq!(registry.services.len(), 2);
    }

    #[test]
    fn changes_name_what_differs() {
        let mut store = Store::default();
        let mut registry = Registry::default();
        store.apply(update(vec![
            namespace("a", false),
            pod_at("a", "p1", "web", Some("10.0.0.1")),
            pod_at("a", "p2", "web", Some("10.0.0.2")),
            pod_at("a", "lone", "other", Some("10.0.0.3")),
            service_of("a", "web", "web"),
            service_of("a", "other", "nothing"),
        ]));
        let first = store.update_registry(&mut registry, "cluster.local", "istio-system");
        assert!(first.everything);
        store.apply(scoped(
            vec![pod_at("a", "p1", "web", Some("10.0.0.9"))],
            &[],
        ));
        let changes = store.update_registry(&mut registry, "cluster.local", "istio-system");
        assert!(!changes.everything && !changes.namespaces);
        assert_eq!(
            changes.pods,
            BTreeSet::from([("a".to_string(), "p1".to_string())])
        );
        // The service's previous and new versions; the other service did not change.
        let versions: Vec<Vec<String>> = (changes.services.iter())
            .map(|s| s.endpoints.iter().map(|e| e.ip.to_string()).collect())
            .collect();
        assert_eq!(
            versions,
            [vec!["10.0.0.1", "10.0.0.2"], vec!["10.0.0.9", "10.0.0.2"]]
        );
        store.apply(scoped(vec![virtual_service("a", "1s")], &[]));
        let changes = store.update_registry(&mut registry, "cluster.local", "istio-system");
        assert!(changes.everything && changes.services.is_empty() && changes.pods.is_empty());
    }

    #[test]
    fn scoped_updates_leave_the_other_origins_alone() {
        let mut store = Store::default();
        store.apply(update(vec![
            pod_at("a", "p1", "web", None),
            pod_at("a", "p2", "web", None),
            virtual_service("a", "5s"),
        ]));
        let rejection = |origin: &str, key: &str| Rejection {
            source: "test".into(),
            key: ObjectKey::from_resource_id(key),
            diagnostic: Diagnostic {
                source: origin.into(),
                line: 1,
                resource: key.into(),
                field: "spec".into(),
                message: "bad".into(),
                severity: ferry_model::Severity::Error,
            },
        };
        let names = |store: &Store| -> Vec<String> {
            store.objects().map(|(k, _)| k.to_string()).collect()
        };
        // An invalid version of the VirtualService: the last valid one stays, nothing else
        // changes.
        let mut bad = scoped(vec![], &["VirtualService/a/web"]);
        bad.rejections
            .push(rejection("VirtualService/a/web", "VirtualService/a/web"));
        let outcome = store.apply(bad);
        assert!(!outcome.changed);
        assert_eq!(
            outcome.kept,
            [ObjectKey::new(Kind::VirtualService, "a", "web")]
        );
        assert_eq!(
            names(&store),
            ["Pod/a/p1", "Pod/a/p2", "VirtualService/a/web"]
        );
        assert_eq!(store.rejections().count(), 1);
        // A change elsewhere keeps the rejection; a deletion removes only its object.
        store.apply(scoped(
            vec![pod_at("a", "p1", "web", Some("10.0.0.1"))],
            &["Pod/a/p2"],
        ));
        assert_eq!(names(&store), ["Pod/a/p1", "VirtualService/a/web"]);
        assert_eq!(store.rejections().count(), 1);
        // A valid version clears it.
        store.apply(scoped(vec![virtual_service("a", "6s")], &[]));
        assert_eq!(store.rejections().count(), 0);
        // A complete update still replaces everything.
        store.apply(update(vec![pod_at("a", "p3", "web", None)]));
        assert_eq!(names(&store), ["Pod/a/p3"]);
    }

    fn redis_policy(percentage: f64) -> Entry {
        let spec = json!({"host": "redis", "faults": [
            {"commands": ["GET"], "abort": {"percentage": percentage}}]});
        Entry {
            key: ObjectKey::new(Kind::RedisPolicy, "default", "faults"),
            origin: "policy.yaml".into(),
            line: 1,
            object: Object::RedisPolicy(Box::new(crate::registry::testing::resource(
                "default", "faults", 1, spec,
            ))),
        }
    }

    fn percentages(store: &Store) -> Vec<Option<f64>> {
        let registry = store.registry("cluster.local", "istio-system");
        (registry.policies.redis_policies.iter())
            .flat_map(|p| &p.spec.faults)
            .map(|f| f.abort.as_ref().and_then(|a| a.percentage))
            .collect()
    }

    #[test]
    fn the_root_namespace_istio_config_map_and_telemetries_reach_the_registry() {
        let config_map = |ns: &str, name: &str, mesh: &str| Entry {
            key: ObjectKey::new(Kind::ConfigMap, ns, name),
            origin: "mesh.yaml".into(),
            line: 1,
            object: Object::Kubernetes(Box::new(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": ns},
                "data": {"mesh": mesh}}))),
        };
        let mesh =
            "extensionProviders: [{name: otel, opentelemetry: {service: otel.obs, port: 4317}}]";
        let telemetry = Entry {
            key: ObjectKey::new(Kind::Telemetry, "default", "tracing"),
            origin: "telemetry.yaml".into(),
            line: 1,
            object: Object::Telemetry(Box::new(crate::registry::testing::resource(
                "default",
                "tracing",
                1,
                json!({"tracing": [{"providers": [{"name": "otel"}], "randomSamplingPercentage": 5}]}),
            ))),
        };
        let mut store = Store::default();
        store.apply(update(vec![
            config_map("default", "istio", mesh),
            config_map("istio-system", "other", mesh),
            telemetry,
        ]));
        // Only the root namespace's `istio` ConfigMap is the mesh config.
        let registry = store.registry("cluster.local", "istio-system");
        assert_eq!(registry.policies.mesh, None);
        assert_eq!(registry.policies.telemetries.len(), 1);
        assert_eq!(
            registry.policies.telemetries[0].spec.tracing[0].random_sampling_percentage,
            Some(5.0)
        );
        let registry = store.registry("cluster.local", "default");
        let providers = registry.policies.mesh.map(|m| m.extension_providers);
        assert_eq!(
            providers.map(|p| p.iter().filter_map(|p| p.name.clone()).collect::<Vec<_>>()),
            Some(vec!["otel".to_string()])
        );
        // Gone with the source's next update.
        store.apply(update(vec![]));
        let registry = store.registry("cluster.local", "default");
        assert!(registry.policies.mesh.is_none() && registry.policies.telemetries.is_empty());
    }

    #[test]
    fn redis_policies_reach_the_registry_and_keep_their_last_valid_version() {
        let mut store = Store::default();
        let key = ObjectKey::new(Kind::RedisPolicy, "default", "faults");
        let outcome = store.apply(update(vec![redis_policy(20.0)]));
        assert_eq!(outcome.touched, vec![key.clone()]);
        assert_eq!(percentages(&store), [Some(20.0)]);
        // Changed: the new version replaces the old.
        assert!(store.apply(update(vec![redis_policy(30.0)])).changed);
        assert_eq!(percentages(&store), [Some(30.0)]);
        // Rejected (as the file source reports an invalid one): the last valid one stays.
        let mut bad = update(vec![]);
        bad.rejections.push(Rejection {
            source: "test".into(),
            key: ObjectKey::from_resource_id("RedisPolicy/default/faults"),
            diagnostic: Diagnostic {
                source: "policy.yaml".into(),
                line: 9,
                resource: key.to_string(),
                field: "spec.faults[0].abort.percentage".into(),
                message: "must be between 0 and 100".into(),
                severity: ferry_model::Severity::Error,
            },
        });
        let outcome = store.apply(bad);
        assert!(!outcome.changed);
        assert_eq!(outcome.kept, vec![key.clone()]);
        assert_eq!(percentages(&store), [Some(30.0)]);
        // Gone from the source: gone from the registry.
        let outcome = store.apply(update(vec![]));
        assert_eq!(outcome.touched, vec![key]);
        assert!(percentages(&store).is_empty());
    }

    #[test]
    fn same_value_is_equality_in_any_key_order() {
        let rows = [
            (
                json!({"a": 1, "b": [1, {"c": 2}]}),
                json!({"a": 1, "b": [1, {"c": 2}]}),
                true,
            ),
            (json!({"a": 1, "b": 2}), json!({"b": 2, "a": 1}), true),
            (
                json!({"a": {"x": 1, "y": 2}}),
                json!({"a": {"y": 2, "x": 1}}),
                true,
            ),
            (json!({"a": 1, "b": 2}), json!({"a": 1, "b": 3}), false),
            (json!({"a": 1, "b": 2}), json!({"b": 3, "a": 1}), false),
            (json!({"a": 1}), json!({"a": 1, "b": 2}), false),
            (json!([1, 2]), json!([2, 1]), false),
            (json!("x"), json!("x"), true),
            (json!(null), json!(false), false),
        ];
        for (a, b, want) in rows {
            assert_eq!(same_value(&a, &b), want, "{a} vs {b}");
            assert_eq!(a == b, want, "{a} vs {b}");
        }
    }

    #[test]
    fn keys_from_diagnostics() {
        assert_eq!(
            ObjectKey::from_resource_id("VirtualService/ns/vs"),
            Some(ObjectKey::new(Kind::VirtualService, "ns", "vs"))
        );
        assert_eq!(
            ObjectKey::from_resource_id("Namespace/default/x"),
            Some(ObjectKey::new(Kind::Namespace, "", "x"))
        );
        assert_eq!(
            ObjectKey::from_resource_id("RedisPolicy/ns/faults"),
            Some(ObjectKey::new(Kind::RedisPolicy, "ns", "faults"))
        );
        assert_eq!(ObjectKey::from_resource_id("Secret/ns/c"), None);
        assert_eq!(ObjectKey::from_resource_id("Pod/ns/<unnamed>"), None);
        assert_eq!(ObjectKey::from_resource_id(""), None);
    }
}
