//! The Kubernetes source (`--kube`): kube-rs watchers on Namespaces, Pods, Services,
//! EndpointSlices, the three Istio kinds (VirtualService, DestinationRule,
//! PeerAuthentication), Ferry's RedisPolicy (`redispolicies.ferry.dev`), Istio's Telemetry
//! (`telemetries.telemetry.istio.io`) and the `istio` ConfigMaps (the mesh config), turned
//! into [`SourceUpdate`]s named [`SOURCE_NAME`].
//!
//! The watchers say which objects changed, so an update holds only those: it is scoped to
//! their origins (each object's API path, [`object_path`]; a deleted object's path with
//! nothing in it), and the store keeps the rest. Once handed over, an object's content is
//! not kept here: only its resource version, to recognise it again on a re-list.
//!
//! Every object is read as a [`DynamicObject`], its `managedFields` stripped, and validated
//! exactly as a manifest file is ([`files::parse_file`]), so a bad resource is rejected with
//! the message `ferry validate` prints and its last valid version stays in the store.
//! Validation results are cached per object and resource version, so a re-list that finds
//! nothing new (after `410 Gone`, or a reconnect) produces no update at all. The watchers
//! re-list on `410 Gone` and back off on errors ([`WatchStreamExt::default_backoff`]);
//! bursts of changes are debounced into one update. Watch errors are counted in
//! [`KubeMetrics::watch_errors`].

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use ferry_model::Diagnostic;
use futures_util::stream::{self, Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use prometheus_client::metrics::counter::Counter;
use serde_json::Value;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::source::files::{self, Loaded};
use crate::store::{Kind, MESH_CONFIG_MAP, SourceUpdate};

/// The name this source gives the store.
pub const SOURCE_NAME: &str = "kube";

/// Timing of the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KubeOptions {
    /// How long the watches must be quiet before an update is delivered.
    pub debounce: Duration,
    /// The longest a change waits while events keep arriving.
    pub max_settle: Duration,
    /// How long the first update waits for every kind's initial list; after that, what has
    /// been listed is delivered (the other kinds follow when their lists succeed).
    pub initial_sync: Duration,
}

impl Default for KubeOptions {
    fn default() -> Self {
        KubeOptions {
            debounce: Duration::from_millis(100),
            max_settle: Duration::from_secs(1),
            initial_sync: Duration::from_secs(30),
        }
    }
}

/// Metrics of the source; clones share their values.
#[derive(Debug, Clone, Default)]
pub struct KubeMetrics {
    /// Errors from the watches (failed lists and watches, `410 Gone`, error events).
    pub watch_errors: Counter,
    /// Updates delivered.
    pub updates: Counter,
}

impl KubeMetrics {
    /// Registers the metrics (`ferry_control_kube_watch_errors`, `ferry_control_kube_updates`).
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "ferry_control_kube_watch_errors",
            "Errors from the Kubernetes watches (each is retried with backoff)",
            self.watch_errors.clone(),
        );
        registry.register(
            "ferry_control_kube_updates",
            "Updates delivered by the Kubernetes source",
            self.updates.clone(),
        );
    }
}

/// How a kind is watched: ConfigMaps only by the name of the one holding the mesh config
/// (`istio`, whichever the namespace; the registry reads the root namespace's), the rest
/// whole.
fn watch_config(kind: Kind) -> watcher::Config {
    match kind {
        Kind::ConfigMap => {
            watcher::Config::default().fields(&format!("metadata.name={MESH_CONFIG_MAP}"))
        }
        _ => watcher::Config::default(),
    }
}

/// The kinds watched, with their API resources. A custom kind whose CRD is not installed
/// (`404`) counts as empty.
pub fn watched_kinds() -> Vec<(Kind, ApiResource)> {
    let custom = |group: &str, version: &str, kind: &str, plural: &str| {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
    };
    let istio = |group: &str, kind: &str, plural: &str| custom(group, "v1", kind, plural);
    vec![
        (Kind::Namespace, ApiResource::erase::<Namespace>(&())),
        (Kind::Pod, ApiResource::erase::<Pod>(&())),
        (Kind::Service, ApiResource::erase::<Service>(&())),
        (
            Kind::EndpointSlice,
            ApiResource::erase::<EndpointSlice>(&()),
        ),
        (
            Kind::VirtualService,
            istio("networking.istio.io", "VirtualService", "virtualservices"),
        ),
        (
            Kind::DestinationRule,
            istio("networking.istio.io", "DestinationRule", "destinationrules"),
        ),
        (
            Kind::PeerAuthentication,
            istio(
                "security.istio.io",
                "PeerAuthentication",
                "peerauthentications",
            ),
        ),
        (
            Kind::RedisPolicy,
            custom(
                ferry_model::ferry::GROUP,
                "v1alpha1",
                "RedisPolicy",
                "redispolicies",
            ),
        ),
        (Kind::ConfigMap, ApiResource::erase::<ConfigMap>(&())),
        (
            Kind::Telemetry,
            istio("telemetry.istio.io", "Telemetry", "telemetries"),
        ),
    ]
}

/// The Kubernetes source: a client and the watchers it runs.
pub struct KubeSource {
    client: kube::Client,
    options: KubeOptions,
    metrics: KubeMetrics,
}

impl KubeSource {
    /// A source reading the cluster `client` talks to.
    pub fn new(client: kube::Client, options: KubeOptions) -> Self {
        KubeSource {
            client,
            options,
            metrics: KubeMetrics::default(),
        }
    }

    /// A source for the cluster of the environment: in-cluster configuration, or the
    /// kubeconfig (`KUBECONFIG`, `~/.kube/config`).
    pub async fn from_environment(options: KubeOptions) -> Result<Self, kube::Error> {
        Ok(KubeSource::new(kube::Client::try_default().await?, options))
    }

    /// The source's metrics (register them with [`KubeMetrics::register`]).
    pub fn metrics(&self) -> KubeMetrics {
        self.metrics.clone()
    }

    /// Watches the cluster and calls `on_update` with what changed (the first time: with
    /// everything the source holds), once the initial lists are done and then after every
    /// burst of changes. Runs until dropped.
    pub async fn run(self, mut on_update: impl FnMut(Loaded) + Send) {
        let kinds = watched_kinds();
        let streams: Vec<EventStream> = kinds
            .iter()
            .enumerate()
            .map(|(slot, (kind, resource))| {
                let api: Api<DynamicObject> = Api::all_with(self.client.clone(), resource);
                watcher::watcher(api, watch_config(*kind))
                    .default_backoff()
                    .map(move |event| (slot, event))
                    .boxed()
            })
            .collect();
        let mut events = stream::select_all(streams);
        let mut state = State::new(kinds);
        let start = Instant::now();
        let mut first_change: Option<Instant> = None;
        let mut last_change = start;
        let mut initial_wait_over = false;
        loop {
            let ready = initial_wait_over || state.all_synced();
            let deadline = first_change.map(|first| {
                (last_change + self.options.debounce).min(first + self.options.max_settle)
            });
            let flush_at = deadline.unwrap_or(start);
            let sync_deadline = start + self.options.initial_sync;
            tokio::select! {
                item = events.next() => {
                    let Some((slot, item)) = item else { return };
                    let changed = match item {
                        Ok(event) => state.handle(slot, event),
                        Err(error) => {
                            self.metrics.watch_errors.inc();
                            warn!(kind = state.kind_name(slot), "Kubernetes watch error (retrying with backoff): {error}");
                            state.handle_error(slot, &error)
                        }
                    };
                    if changed {
                        let now = Instant::now();
                        last_change = now;
                        first_change.get_or_insert(now);
                    }
                }
                _ = tokio::time::sleep_until(flush_at), if deadline.is_some() && ready => {
                    first_change = None;
                    self.metrics.updates.inc();
                    on_update(state.loaded());
                }
                _ = tokio::time::sleep_until(sync_deadline), if !ready => {
                    initial_wait_over = true;
                    warn!(
                        "not every Kubernetes kind was listed within {:?} ({}); serving what was",
                        self.options.initial_sync,
                        state.unsynced().join(", ")
                    );
                    first_change.get_or_insert_with(Instant::now);
                }
            }
        }
    }
}

/// One watcher's events, tagged with the slot of its kind.
type EventStream =
    Pin<Box<dyn Stream<Item = (usize, Result<Event<DynamicObject>, watcher::Error>)> + Send>>;

/// One object as validated: its resource version and what validation made of it (until it
/// is handed over).
#[derive(Debug, Clone)]
struct Cached {
    version: String,
    loaded: Loaded,
}

/// An object by the slot of its kind and its (namespace, name).
type ObjectId = (usize, (String, String));

/// What is known of one kind.
#[derive(Debug)]
struct KindState {
    kind: Kind,
    resource: ApiResource,
    objects: BTreeMap<(String, String), Cached>,
    /// Objects of a re-list in progress (between `Init` and `InitDone`).
    relist: Option<BTreeMap<(String, String), Cached>>,
    synced: bool,
}

/// Every kind's objects, and the diagnostics and changes not yet delivered.
#[derive(Debug)]
struct State {
    kinds: Vec<KindState>,
    fresh: Vec<Diagnostic>,
    /// The objects added, changed or deleted since the previous update.
    pending: std::collections::BTreeSet<ObjectId>,
}

impl State {
    fn new(kinds: Vec<(Kind, ApiResource)>) -> Self {
        State {
            kinds: kinds
                .into_iter()
                .map(|(kind, resource)| KindState {
                    kind,
                    resource,
                    objects: BTreeMap::new(),
                    relist: None,
                    synced: false,
                })
                .collect(),
            fresh: Vec::new(),
            pending: std::collections::BTreeSet::new(),
        }
    }

    fn kind_name(&self, slot: usize) -> &'static str {
        self.kinds.get(slot).map_or("?", |k| k.kind.name())
    }

    fn all_synced(&self) -> bool {
        self.kinds.iter().all(|k| k.synced)
    }

    fn unsynced(&self) -> Vec<&'static str> {
        self.kinds
            .iter()
            .filter(|k| !k.synced)
            .map(|k| k.kind.name())
            .collect()
    }

    /// Applies one watcher event; returns whether the source's content changed.
    fn handle(&mut self, slot: usize, event: Event<DynamicObject>) -> bool {
        let Some(state) = self.kinds.get_mut(slot) else {
            return false;
        };
        match event {
            Event::Init => {
                state.relist = Some(BTreeMap::new());
                false
            }
            Event::InitApply(object) => {
                let (id, version) = identity(&object);
                let previous = state.objects.get(&id).filter(|c| c.version == version);
                let cached = match previous {
                    Some(c) => c.clone(),
                    None => validate(state.kind, &state.resource, object, version),
                };
                state
                    .relist
                    .get_or_insert_with(BTreeMap::new)
                    .insert(id, cached);
                false
            }
            Event::InitDone => {
                let listed = state.relist.take().unwrap_or_default();
                let first = !state.synced;
                state.synced = true;
                let same = listed.len() == state.objects.len()
                    && listed
                        .iter()
                        .zip(&state.objects)
                        .all(|((a, x), (b, y))| a == b && x.version == y.version);
                if !same {
                    let changed = listed.iter().filter(|(id, c)| {
                        state.objects.get(*id).map(|o| &o.version) != Some(&c.version)
                    });
                    for (id, c) in changed {
                        self.fresh.extend(c.loaded.diagnostics.iter().cloned());
                        self.pending.insert((slot, id.clone()));
                    }
                    let gone = state.objects.keys().filter(|id| !listed.contains_key(*id));
                    self.pending.extend(gone.map(|id| (slot, id.clone())));
                    state.objects = listed;
                }
                info!(
                    kind = state.kind.name(),
                    objects = state.objects.len(),
                    "Kubernetes list done"
                );
                first || !same
            }
            Event::Apply(object) => {
                let (id, version) = identity(&object);
                if state.objects.get(&id).is_some_and(|c| c.version == version) {
                    return false;
                }
                let cached = validate(state.kind, &state.resource, object, version);
                self.fresh.extend(cached.loaded.diagnostics.iter().cloned());
                state.objects.insert(id.clone(), cached);
                self.pending.insert((slot, id));
                true
            }
            Event::Delete(object) => {
                let (id, _) = identity(&object);
                let known = state.objects.remove(&id).is_some();
                if known {
                    self.pending.insert((slot, id));
                }
                known
            }
        }
    }

    /// Notes a watch error; a kind the API server does not serve (`404` on its first list,
    /// such as Istio's CRDs not installed) counts as listed and empty, so it does not hold
    /// back the first update. Returns whether that made a change to deliver.
    fn handle_error(&mut self, slot: usize, error: &watcher::Error) -> bool {
        let Some(state) = self.kinds.get_mut(slot) else {
            return false;
        };
        let not_served = match error {
            watcher::Error::InitialListFailed(kube::Error::Api(status))
            | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.code == 404,
            _ => false,
        };
        if not_served && !state.synced {
            warn!(
                kind = state.kind.name(),
                "the API server does not serve {}; treating it as empty",
                state.resource.api_version
            );
            state.synced = true;
            return true;
        }
        false
    }

    /// What changed since the previous update, as one update scoped to the origins of the
    /// objects that changed (see [`SourceUpdate::scope`]); the diagnostics are those of those
    /// objects. Their content is handed over, not copied: only their versions stay here.
    fn loaded(&mut self) -> Loaded {
        let mut scope = std::collections::BTreeSet::new();
        let mut update = SourceUpdate {
            source: SOURCE_NAME.to_string(),
            ..SourceUpdate::default()
        };
        for (slot, id) in std::mem::take(&mut self.pending) {
            let Some(state) = self.kinds.get_mut(slot) else {
                continue;
            };
            scope.insert(origin(state.kind, &state.resource, &id.0, &id.1));
            if let Some(cached) = state.objects.get_mut(&id) {
                let part = std::mem::take(&mut cached.loaded).update;
                update.entries.extend(part.entries);
                update.rejections.extend(part.rejections);
                update.broken_origins.extend(part.broken_origins);
            }
        }
        update.scope = Some(scope);
        Loaded {
            update,
            diagnostics: std::mem::take(&mut self.fresh),
        }
    }
}

/// An object's (namespace, name) and resource version.
fn identity(object: &DynamicObject) -> ((String, String), String) {
    let meta = &object.metadata;
    (
        (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        ),
        meta.resource_version.clone().unwrap_or_default(),
    )
}

/// The API path of an object, which names it in diagnostics
/// (`/apis/networking.istio.io/v1/namespaces/default/virtualservices/redis`).
pub fn object_path(resource: &ApiResource, namespace: &str, name: &str) -> String {
    let base = if resource.group.is_empty() {
        format!("/api/{}", resource.version)
    } else {
        format!("/apis/{}/{}", resource.group, resource.version)
    };
    if namespace.is_empty() {
        format!("{base}/{}/{name}", resource.plural)
    } else {
        format!("{base}/namespaces/{namespace}/{}/{name}", resource.plural)
    }
}

/// The object as a manifest: `apiVersion` and `kind` filled in (list items lack them),
/// `metadata.managedFields` removed.
pub fn manifest(resource: &ApiResource, object: &DynamicObject) -> Value {
    let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("apiVersion".into(), resource.api_version.clone().into());
        map.insert("kind".into(), resource.kind.clone().into());
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            meta.remove("managedFields");
        }
    }
    value
}

/// The origin the store knows an object of `kind` by: its API path, after the source's name.
fn origin(kind: Kind, resource: &ApiResource, namespace: &str, name: &str) -> String {
    let namespace = if kind.namespaced() { namespace } else { "" };
    format!("{SOURCE_NAME}:{}", object_path(resource, namespace, name))
}

/// Validates one object as the file source would a one-document file named by its API path.
fn validate(kind: Kind, resource: &ApiResource, object: DynamicObject, version: String) -> Cached {
    let ((namespace, name), _) = identity(&object);
    let origin = origin(kind, resource, &namespace, &name);
    let text = serde_json::to_string(&manifest(resource, &object)).unwrap_or_default();
    Cached {
        version,
        loaded: files::parse_file(SOURCE_NAME, &origin, &text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap_or_else(|e| panic!("bad test object: {e}"))
    }

    #[test]
    fn manifests_get_type_and_lose_managed_fields() {
        let (_, pod) = &watched_kinds()[1];
        let obj = object(json!({
            "metadata": {"name": "p", "namespace": "default", "resourceVersion": "3",
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"containers": [{"name": "c", "image": "redis"}]}
        }));
        let value = manifest(pod, &obj);
        assert_eq!(value["apiVersion"], "v1");
        assert_eq!(value["kind"], "Pod");
        assert!(value["metadata"].get("managedFields").is_none());
        assert_eq!(
            object_path(pod, "default", "p"),
            "/api/v1/namespaces/default/pods/p"
        );
    }

    #[test]
    fn relist_without_changes_is_no_change() {
        let mut state = State::new(watched_kinds());
        let ns = object(json!({"metadata": {"name": "app", "resourceVersion": "5"}}));
        assert!(!state.handle(0, Event::Init));
        assert!(!state.handle(0, Event::InitApply(ns.clone())));
        assert!(state.handle(0, Event::InitDone));
        assert!(!state.handle(0, Event::Init));
        assert!(!state.handle(0, Event::InitApply(ns.clone())));
        assert!(!state.handle(0, Event::InitDone));
        assert!(!state.handle(0, Event::Apply(ns.clone())));
        assert!(!state.handle(0, Event::Init));
        assert!(state.handle(0, Event::InitDone));
        assert_eq!(state.loaded().update.entries.len(), 0);
    }

    #[test]
    fn updates_hold_what_changed_and_hand_it_over() {
        let pod = |name: &str, version: &str, ip: &str| {
            object(json!({
                "metadata": {"name": name, "namespace": "default", "resourceVersion": version},
                "spec": {"containers": [{"name": "c", "image": "redis"}]},
                "status": {"podIP": ip}
            }))
        };
        let keys = |loaded: &Loaded| -> Vec<String> {
            (loaded.update.entries.iter())
                .map(|e| e.key.to_string())
                .collect()
        };
        let scope = |loaded: &Loaded| -> Vec<String> {
            loaded.update.scope.iter().flatten().cloned().collect()
        };
        let mut state = State::new(watched_kinds());
        let mut store = crate::store::Store::default();
        let ip = |store: &crate::store::Store, name: &str| {
            let key = crate::store::ObjectKey::new(Kind::Pod, "default", name);
            let value = store.get(&key).and_then(|o| o.as_value())?;
            value["status"]["podIP"].as_str().map(str::to_string)
        };
        state.handle(1, Event::Init);
        state.handle(1, Event::InitApply(pod("a", "1", "10.0.0.1")));
        state.handle(1, Event::InitApply(pod("b", "1", "10.0.0.2")));
        assert!(state.handle(1, Event::InitDone));
        let first = state.loaded();
        assert_eq!(keys(&first), ["Pod/default/a", "Pod/default/b"]);
        store.apply(first.update);
        // Handed over: only the versions stay here.
        assert!((state.kinds[1].objects.values()).all(|c| c.loaded.update.entries.is_empty()));
        // One pod changes: the update holds it alone, and the store keeps the other.
        assert!(state.handle(1, Event::Apply(pod("a", "2", "10.0.0.9"))));
        let next = state.loaded();
        assert_eq!(keys(&next), ["Pod/default/a"]);
        assert_eq!(scope(&next), ["kube:/api/v1/namespaces/default/pods/a"]);
        store.apply(next.update);
        assert_eq!(ip(&store, "a").as_deref(), Some("10.0.0.9"));
        assert_eq!(ip(&store, "b").as_deref(), Some("10.0.0.2"));
        // A re-list that no longer finds `b` (and `a` unchanged): `b` alone is gone.
        state.handle(1, Event::Init);
        state.handle(1, Event::InitApply(pod("a", "2", "10.0.0.9")));
        assert!(state.handle(1, Event::InitDone));
        let relisted = state.loaded();
        assert!(relisted.update.entries.is_empty());
        assert_eq!(scope(&relisted), ["kube:/api/v1/namespaces/default/pods/b"]);
        store.apply(relisted.update);
        assert_eq!(ip(&store, "a").as_deref(), Some("10.0.0.9"));
        assert_eq!(ip(&store, "b"), None);
        // Nothing changed since: an empty update.
        assert!(scope(&state.loaded()).is_empty());
    }

    #[test]
    fn redis_policies_are_watched_validated_and_deleted() {
        let kinds = watched_kinds();
        let slot = kinds
            .iter()
            .position(|(k, _)| *k == Kind::RedisPolicy)
            .unwrap_or_else(|| panic!("RedisPolicy is not watched"));
        assert_eq!(kinds[slot].1.api_version, "ferry.dev/v1alpha1");
        assert_eq!(kinds[slot].1.plural, "redispolicies");
        let policy = |percentage: Value, version: &str| {
            object(json!({
                "metadata": {"name": "faults", "namespace": "default", "resourceVersion": version},
                "spec": {"host": "redis",
                         "faults": [{"commands": ["GET"], "abort": {"percentage": percentage}}]}
            }))
        };
        let mut state = State::new(kinds);
        assert!(state.handle(slot, Event::Apply(policy(json!(20), "1"))));
        let loaded = state.loaded();
        assert!(
            loaded.update.rejections.is_empty(),
            "{:?}",
            loaded.diagnostics
        );
        let keys: Vec<String> = (loaded.update.entries.iter())
            .map(|e| e.key.to_string())
            .collect();
        assert_eq!(keys, ["RedisPolicy/default/faults"]);
        assert!(matches!(
            loaded.update.entries[0].object,
            crate::store::Object::RedisPolicy(_)
        ));

        assert!(state.handle(slot, Event::Apply(policy(json!(200), "2"))));
        let loaded = state.loaded();
        assert!(loaded.update.entries.is_empty());
        let rejection = &loaded.update.rejections[0];
        assert_eq!(
            rejection.key.as_ref().map(ToString::to_string).as_deref(),
            Some("RedisPolicy/default/faults")
        );
        let message = rejection.to_string();
        assert!(
            message.starts_with(
                "kube:/apis/ferry.dev/v1alpha1/namespaces/default/redispolicies/faults:"
            ) && message.contains("spec.faults[0].abort.percentage"),
            "{message}"
        );

        assert!(state.handle(slot, Event::Delete(policy(json!(200), "2"))));
        let loaded = state.loaded();
        assert!(loaded.update.entries.is_empty() && loaded.update.rejections.is_empty());
    }

    #[test]
    fn telemetries_and_mesh_config_maps_are_watched() {
        let kinds = watched_kinds();
        let slot = |kind: Kind| {
            kinds
                .iter()
                .position(|(k, _)| *k == kind)
                .unwrap_or_else(|| panic!("{kind:?} is not watched"))
        };
        let (telemetries, config_maps) = (slot(Kind::Telemetry), slot(Kind::ConfigMap));
        assert_eq!(kinds[telemetries].1.api_version, "telemetry.istio.io/v1");
        assert_eq!(kinds[telemetries].1.plural, "telemetries");
        assert_eq!(kinds[config_maps].1.plural, "configmaps");
        assert_eq!(
            watch_config(Kind::ConfigMap).field_selector.as_deref(),
            Some("metadata.name=istio")
        );
        let telemetry = |sampling: Value, version: &str| {
            object(json!({
                "metadata": {"name": "tracing", "namespace": "default", "resourceVersion": version},
                "spec": {"tracing": [{"providers": [{"name": "otel"}],
                                      "randomSamplingPercentage": sampling}]}
            }))
        };
        let mut state = State::new(kinds.clone());
        assert!(state.handle(telemetries, Event::Apply(telemetry(json!(20), "1"))));
        assert!(state.handle(
            config_maps,
            Event::Apply(object(json!({
                "metadata": {"name": "istio", "namespace": "istio-system", "resourceVersion": "1"},
                "data": {"mesh": "extensionProviders: []"}
            })))
        ));
        let loaded = state.loaded();
        assert!(
            loaded.update.rejections.is_empty(),
            "{:?}",
            loaded.diagnostics
        );
        let keys: Vec<String> = (loaded.update.entries.iter())
            .map(|e| e.key.to_string())
            .collect();
        assert_eq!(
            keys,
            ["ConfigMap/istio-system/istio", "Telemetry/default/tracing"]
        );

        assert!(state.handle(telemetries, Event::Apply(telemetry(json!(200), "2"))));
        let loaded = state.loaded();
        let rejection = &loaded.update.rejections[0];
        let message = rejection.to_string();
        assert!(
            message.starts_with(
                "kube:/apis/telemetry.istio.io/v1/namespaces/default/telemetries/tracing:"
            ) && message.contains("spec.tracing[0].randomSamplingPercentage"),
            "{message}"
        );
        assert!(state.handle(telemetries, Event::Delete(telemetry(json!(200), "2"))));
        assert!(state.loaded().update.rejections.is_empty());
    }

    #[test]
    fn invalid_istio_object_is_a_keyed_rejection() {
        let mut state = State::new(watched_kinds());
        let vs = object(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "vs", "namespace": "default", "resourceVersion": "7"},
            "spec": {"hosts": ["redis"], "tcp": [{"route": [{"destination": {"host": "redis"}, "weight": "nope"}]}]}
        }));
        assert!(state.handle(4, Event::Apply(vs)));
        let loaded = state.loaded();
        assert!(loaded.update.entries.is_empty());
        let rejection = &loaded.update.rejections[0];
        assert_eq!(
            rejection.key.as_ref().map(ToString::to_string).as_deref(),
            Some("VirtualService/default/vs")
        );
        assert!(
            rejection.to_string().starts_with(
                "kube:/apis/networking.istio.io/v1/namespaces/default/virtualservices/vs:"
            ),
            "{rejection}"
        );
    }
}
