//! The typed store: every object of the mesh that Ferry reads (Namespaces, Pods, Services,
//! EndpointSlices, workloads, ConfigMaps (the `istio` one holds the mesh config), the three
//! Istio traffic and security kinds, Istio's Telemetry, and Ferry's RedisPolicy), keyed by
//! (kind, namespace, name).
//!
//! Sources (a manifest directory, a Kubernetes API server) hand the store a complete
//! [`SourceUpdate`] for everything they hold. The store replaces that source's objects with
//! it, except that a resource that failed validation keeps its last valid version, and so do
//! all the resources of a file that could not be parsed. Every effective change bumps the
//! generation. [`Store::registry`] derives the [`Registry`] the compiler reads.
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

use crate::registry::{Labels, PodEntry, Registry};
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

/// Everything one source holds now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceUpdate {
    /// Which source (`files:/etc/mesh`); its previous objects are replaced.
    pub source: String,
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
            entries,
            rejections,
            broken_origins,
        } = update;
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
            .filter(|(key, old)| old.source == source && !provided(key))
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
        self.rejections.insert(source, rejections);
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
            match self.objects.get(&key).and_then(|s| s.object.as_value()) {
                Some(value) => {
                    let pods = build::summaries(key.kind, value, &labels, &cfg);
                    self.pods.insert(key, pods);
                }
                None => {
                    self.pods.remove(&key);
                }
            }
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
        let before = self.pod_ips.len();
        self.pod_ips.retain(|k, _| live.contains(k));
        let mut changed = before != self.pod_ips.len();
        for pod in pods {
            let key = (pod.namespace.clone(), pod.name.clone());
            if pod.ip.is_some() || self.pod_ips.contains_key(&key) {
                continue;
            }
            if let Some(ip) = assign(pod) {
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
        for stored in self.objects.values() {
            match &stored.object {
                Object::VirtualService(r) => registry.policies.virtual_services.push((**r).clone()),
                Object::DestinationRule(r) => {
                    registry.policies.destination_rules.push((**r).clone())
                }
                Object::PeerAuthentication(r) => {
                    registry.policies.peer_authentications.push((**r).clone())
                }
                Object::RedisPolicy(r) => registry.policies.redis_policies.push((**r).clone()),
                Object::Telemetry(r) => registry.policies.telemetries.push((**r).clone()),
                Object::Kubernetes(_) => {}
            }
        }
        registry.policies.mesh = self.mesh_config(root_namespace);
        registry
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
        self.vips = next;
        changed
    }
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
