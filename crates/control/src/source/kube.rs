//! The Kubernetes source (`--kube`): kube-rs watchers on Namespaces, Pods, Services,
//! EndpointSlices, the three Istio kinds (VirtualService, DestinationRule,
//! PeerAuthentication), Ferry's RedisPolicy (`redispolicies.ferry.dev`), Istio's Telemetry
//! (`telemetries.telemetry.istio.io`) and the `istio` ConfigMaps (the mesh config), turned
//! into [`SourceUpdate`]s named [`SOURCE_NAME`].
//!
//! Built-in kinds are watched at their one stable version. For the custom kinds, API
//! discovery (`/apis`, then `/apis/<group>/<version>`) tells which versions the cluster
//! serves each one at, and the source watches the first of the versions Ferry reads
//! ([`WatchedKind::versions`]: `v1`, then `v1beta1`, then `v1alpha3` for
//! `networking.istio.io`), so clusters with Istio's CRDs from before 1.22 (no `v1`) work. A
//! kind whose group or version the cluster does not serve is reported as not installed
//! (empty); discovery is asked again with backoff, since CRDs can be installed later, and
//! again whenever a kind's watch gets `404` (its CRD removed or its version no longer
//! served). When the version changes, the objects are re-listed at the new one and replace
//! those read at the old one in a single update.
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
//! bursts of changes are debounced into one update. Watch and discovery errors are counted
//! in [`KubeMetrics::watch_errors`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ferry_model::Diagnostic;
use futures_util::stream::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::error::DiscoveryError;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, DefaultBackoff, Event};
use prometheus_client::metrics::counter::Counter;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::source::files::{self, Loaded};
use crate::store::{Kind, MESH_CONFIG_MAP, SourceUpdate};

/// The name this source gives the store.
pub const SOURCE_NAME: &str = "kube";

/// The versions of `networking.istio.io` Istio has served VirtualService and
/// DestinationRule at, preferred first (`v1` since Istio 1.22).
pub const NETWORKING_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];
/// The versions of `security.istio.io` Istio has served PeerAuthentication at, preferred
/// first.
pub const SECURITY_VERSIONS: &[&str] = &["v1", "v1beta1"];
/// The versions of `telemetry.istio.io` Istio has served Telemetry at, preferred first.
pub const TELEMETRY_VERSIONS: &[&str] = &["v1", "v1alpha1"];

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
    /// Errors from the watches (failed lists and watches, `410 Gone`, error events) and
    /// from discovery.
    pub watch_errors: Counter,
    /// Updates delivered.
    pub updates: Counter,
}

impl KubeMetrics {
    /// Registers the metrics (`ferry_control_kube_watch_errors`, `ferry_control_kube_updates`).
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "ferry_control_kube_watch_errors",
            "Errors from the Kubernetes watches and API discovery (each is retried with backoff)",
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

/// A kind the source watches.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchedKind {
    /// The store's kind.
    pub kind: Kind,
    /// Its API resource (for a custom kind, at its preferred version).
    pub resource: ApiResource,
    /// For a custom kind, the versions Ferry reads, preferred first: the source watches the
    /// first one the cluster serves the kind at. Empty for built-in kinds, which are watched
    /// at `resource`'s version.
    pub versions: &'static [&'static str],
}

/// The kinds watched. A custom kind whose CRD is not installed counts as empty.
pub fn watched_kinds() -> Vec<WatchedKind> {
    let builtin = |kind: Kind, resource: ApiResource| WatchedKind {
        kind,
        resource,
        versions: &[],
    };
    let custom = |kind: Kind, group: &str, versions: &'static [&'static str], plural: &str| {
        let version = versions.first().copied().unwrap_or("v1");
        WatchedKind {
            kind,
            resource: ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(group, version, kind.name()),
                plural,
            ),
            versions,
        }
    };
    vec![
        builtin(Kind::Namespace, ApiResource::erase::<Namespace>(&())),
        builtin(Kind::Pod, ApiResource::erase::<Pod>(&())),
        builtin(Kind::Service, ApiResource::erase::<Service>(&())),
        builtin(
            Kind::EndpointSlice,
            ApiResource::erase::<EndpointSlice>(&()),
        ),
        custom(
            Kind::VirtualService,
            "networking.istio.io",
            NETWORKING_VERSIONS,
            "virtualservices",
        ),
        custom(
            Kind::DestinationRule,
            "networking.istio.io",
            NETWORKING_VERSIONS,
            "destinationrules",
        ),
        custom(
            Kind::PeerAuthentication,
            "security.istio.io",
            SECURITY_VERSIONS,
            "peerauthentications",
        ),
        custom(
            Kind::RedisPolicy,
            ferry_model::ferry::GROUP,
            ferry_model::ferry::VERSIONS,
            "redispolicies",
        ),
        builtin(Kind::ConfigMap, ApiResource::erase::<ConfigMap>(&())),
        custom(
            Kind::Telemetry,
            "telemetry.istio.io",
            TELEMETRY_VERSIONS,
            "telemetries",
        ),
    ]
}

/// `resource` at another version of its group.
fn at_version(resource: &ApiResource, version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(&resource.group, version, &resource.kind),
        &resource.plural,
    )
}

/// What discovery found for a custom kind.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    /// Served at this version, the first of the kind's versions that the cluster serves.
    At(&'static str),
    /// Not served at any version Ferry reads; the other versions it is served at, if any.
    NotServed(Vec<String>),
}

/// Each version a group serves, with the kinds it serves at that version.
type ServedKinds = Vec<(String, Vec<String>)>;

/// Picks the version to watch `kind` at: the first of `preferred` at which `served` (each
/// version the group serves, with the kinds served at it) has the kind.
fn choose(kind: &str, preferred: &[&'static str], served: &ServedKinds) -> Found {
    let serves = |version: &str| {
        served
            .iter()
            .any(|(v, kinds)| v == version && kinds.iter().any(|k| k == kind))
    };
    match preferred.iter().find(|v| serves(v)) {
        Some(version) => Found::At(version),
        None => Found::NotServed(
            served
                .iter()
                .filter(|(_, kinds)| kinds.iter().any(|k| k == kind))
                .map(|(v, _)| v.clone())
                .collect(),
        ),
    }
}

/// Asks the API server which versions of its group serve `watched`'s kind, and picks one.
async fn discover(client: &kube::Client, watched: &WatchedKind) -> Result<Found, kube::Error> {
    let group = match kube::discovery::group(client, &watched.resource.group).await {
        Ok(group) => group,
        Err(kube::Error::Discovery(
            DiscoveryError::MissingApiGroup(_) | DiscoveryError::EmptyApiGroup(_),
        )) => return Ok(Found::NotServed(Vec::new())),
        Err(e) => return Err(e),
    };
    let served: ServedKinds = group
        .versions()
        .map(|version| {
            let kinds = group.versioned_resources(version).into_iter();
            (
                version.to_string(),
                kinds.map(|(resource, _)| resource.kind).collect(),
            )
        })
        .collect();
    Ok(choose(&watched.resource.kind, watched.versions, &served))
}

/// What a kind's driver reports to the source.
#[derive(Debug)]
enum Report {
    /// The kind is watched at this resource from now on (custom kinds, after discovery).
    Watching(ApiResource),
    /// Discovery: the cluster does not serve the kind at a version Ferry reads (the
    /// versions it does serve it at, if any).
    NotInstalled(Vec<String>),
    /// Discovery failed; it is retried with backoff.
    DiscoveryFailed(kube::Error),
    /// An event or error of the kind's watcher.
    Watch(Box<Result<Event<DynamicObject>, watcher::Error>>),
}

/// A report, tagged with the slot of its kind.
type Tagged = (usize, Report);

/// Whether a watcher error says the API server does not serve the resource (`404`).
fn not_found(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 404,
        watcher::Error::WatchError(status) => status.code == 404,
        _ => false,
    }
}

/// Runs one kind's watcher, sending what it yields, until the receiver is gone (returns
/// `false`) or, with `stop_when_not_found`, until the resource turns out not to be served
/// (`true`).
async fn forward(
    client: &kube::Client,
    slot: usize,
    kind: Kind,
    resource: &ApiResource,
    stop_when_not_found: bool,
    tx: &mpsc::Sender<Tagged>,
) -> bool {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), resource);
    let mut events = std::pin::pin!(watcher::watcher(api, watch_config(kind)).default_backoff());
    while let Some(item) = events.next().await {
        let gone = stop_when_not_found && item.as_ref().err().is_some_and(not_found);
        if tx
            .send((slot, Report::Watch(Box::new(item))))
            .await
            .is_err()
        {
            return false;
        }
        if gone {
            return true;
        }
    }
    true
}

/// Drives one kind until the receiver is gone: a built-in kind is watched at its version;
/// a custom kind is looked up by discovery, watched at the version found, and looked up
/// again (with backoff) when it is not served or its watch gets `404`.
async fn drive(client: kube::Client, slot: usize, watched: WatchedKind, tx: mpsc::Sender<Tagged>) {
    if watched.versions.is_empty() {
        forward(&client, slot, watched.kind, &watched.resource, false, &tx).await;
        return;
    }
    let mut backoff = DefaultBackoff::default();
    loop {
        let report = match discover(&client, &watched).await {
            Ok(Found::At(version)) => {
                let resource = at_version(&watched.resource, version);
                if tx
                    .send((slot, Report::Watching(resource.clone())))
                    .await
                    .is_err()
                    || !forward(&client, slot, watched.kind, &resource, true, &tx).await
                {
                    return;
                }
                None
            }
            Ok(Found::NotServed(others)) => Some(Report::NotInstalled(others)),
            Err(e) => Some(Report::DiscoveryFailed(e)),
        };
        if let Some(report) = report
            && tx.send((slot, report)).await.is_err()
        {
            return;
        }
        let delay = backoff.next().unwrap_or(Duration::from_secs(30));
        tokio::time::sleep(delay).await;
    }
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
        let (tx, mut reports) = mpsc::channel::<Tagged>(256);
        let drivers = futures_util::future::join_all(
            (kinds.iter().cloned().enumerate())
                .map(|(slot, watched)| drive(self.client.clone(), slot, watched, tx.clone())),
        );
        drop(tx);
        let mut drivers = std::pin::pin!(drivers);
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
                item = reports.recv() => {
                    let Some((slot, report)) = item else { return };
                    if self.handle(&mut state, slot, report) {
                        let now = Instant::now();
                        last_change = now;
                        first_change.get_or_insert(now);
                    }
                }
                _ = &mut drivers => return,
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

    /// Applies one driver's report; returns whether the source's content changed.
    fn handle(&self, state: &mut State, slot: usize, report: Report) -> bool {
        match report {
            Report::Watch(item) => match *item {
                Ok(event) => state.handle(slot, event),
                Err(error) => {
                    self.metrics.watch_errors.inc();
                    warn!(
                        kind = state.kind_name(slot),
                        "Kubernetes watch error (retrying with backoff): {error}"
                    );
                    state.handle_error(slot, &error)
                }
            },
            Report::Watching(resource) => state.watching(slot, resource),
            Report::NotInstalled(others) => state.not_installed(slot, &others),
            Report::DiscoveryFailed(error) => {
                self.metrics.watch_errors.inc();
                warn!(
                    kind = state.kind_name(slot),
                    "Kubernetes API discovery failed (retrying with backoff): {error}"
                );
                false
            }
        }
    }
}

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
    /// The resource the kind is watched at (a custom kind's: the version discovery found).
    resource: ApiResource,
    objects: BTreeMap<(String, String), Cached>,
    /// Objects of a re-list in progress (between `Init` and `InitDone`).
    relist: Option<BTreeMap<(String, String), Cached>>,
    /// Origins of objects read at a version no longer watched: they go when the list at the
    /// new version is done (in the same update as the objects read again).
    retired: BTreeSet<String>,
    /// What discovery said last (custom kinds), so that a re-check that finds the same is
    /// not logged again as a warning.
    installed: Option<bool>,
    synced: bool,
}

/// Every kind's objects, and the diagnostics and changes not yet delivered.
#[derive(Debug)]
struct State {
    kinds: Vec<KindState>,
    fresh: Vec<Diagnostic>,
    /// The objects added, changed or deleted since the previous update.
    pending: BTreeSet<ObjectId>,
    /// Origins whose objects are gone (read at a version no longer watched, or of a kind
    /// no longer served) since the previous update.
    gone: BTreeSet<String>,
}

impl State {
    fn new(kinds: Vec<WatchedKind>) -> Self {
        State {
            kinds: kinds
                .into_iter()
                .map(|watched| KindState {
                    kind: watched.kind,
                    resource: watched.resource,
                    objects: BTreeMap::new(),
                    relist: None,
                    retired: BTreeSet::new(),
                    installed: None,
                    synced: false,
                })
                .collect(),
            fresh: Vec::new(),
            pending: BTreeSet::new(),
            gone: BTreeSet::new(),
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

    /// Discovery found the kind at `resource`, which its watcher reads from now on. At
    /// another version than before, the objects read at the old one are retired: they are
    /// read again at the new one, and their old origins go once that list is done.
    fn watching(&mut self, slot: usize, resource: ApiResource) -> bool {
        let Some(state) = self.kinds.get_mut(slot) else {
            return false;
        };
        state.installed = Some(true);
        state.relist = None;
        if state.resource != resource {
            let old = &state.resource;
            let origins =
                (state.objects.keys()).map(|(ns, name)| origin(state.kind, old, ns, name));
            state.retired.extend(origins);
            state.objects.clear();
            state.resource = resource;
        }
        info!(
            kind = state.kind.name(),
            api_version = %state.resource.api_version,
            "watching {} at {}",
            state.kind.name(),
            state.resource.api_version
        );
        false
    }

    /// Discovery found the kind not served at any version Ferry reads (`others`: the
    /// versions it is served at): it counts as listed and empty, so it does not hold back
    /// the first update, and the objects held of it are gone (a CRD takes its objects with
    /// it). Returns whether that made a change to deliver.
    fn not_installed(&mut self, slot: usize, others: &[String]) -> bool {
        let Some(state) = self.kinds.get_mut(slot) else {
            return false;
        };
        let resource = &state.resource;
        let what = if others.is_empty() {
            format!(
                "the API server does not serve {} {} (CRD not installed)",
                resource.group, resource.kind
            )
        } else {
            format!(
                "the API server serves {} {} only at {}, which Ferry does not read",
                resource.group,
                resource.kind,
                others.join(", ")
            )
        };
        if state.installed == Some(false) {
            debug!(kind = state.kind.name(), "{what}; checking again later");
        } else {
            warn!(
                kind = state.kind.name(),
                "{what}; treating it as empty and checking again with backoff"
            );
        }
        state.installed = Some(false);
        state.relist = None;
        let mut changed = !state.synced || !state.retired.is_empty();
        state.synced = true;
        for (ns, name) in std::mem::take(&mut state.objects).keys() {
            self.gone
                .insert(origin(state.kind, &state.resource, ns, name));
            changed = true;
        }
        self.gone.append(&mut state.retired);
        changed
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
                let retired = !state.retired.is_empty();
                self.gone.append(&mut state.retired);
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
                    api_version = %state.resource.api_version,
                    objects = state.objects.len(),
                    "Kubernetes list done"
                );
                first || !same || retired
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
    /// such as a built-in kind of a newer Kubernetes) counts as listed and empty, so it does
    /// not hold back the first update. Returns whether that made a change to deliver.
    fn handle_error(&mut self, slot: usize, error: &watcher::Error) -> bool {
        let Some(state) = self.kinds.get_mut(slot) else {
            return false;
        };
        if not_found(error) && !state.synced {
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
    /// objects that changed and of those gone (see [`SourceUpdate::scope`]); the diagnostics
    /// are those of those objects. Their content is handed over, not copied: only their
    /// versions stay here.
    fn loaded(&mut self) -> Loaded {
        let mut scope = std::mem::take(&mut self.gone);
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
    use crate::store::Object;
    use serde_json::json;

    fn object(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap_or_else(|e| panic!("bad test object: {e}"))
    }

    #[test]
    fn the_version_watched_is_the_first_preferred_one_served() {
        let served = |pairs: &[(&str, &[&str])]| -> ServedKinds {
            (pairs.iter())
                .map(|(v, kinds)| (v.to_string(), kinds.iter().map(|k| k.to_string()).collect()))
                .collect()
        };
        let vs_dr: &[&str] = &["VirtualService", "DestinationRule"];
        let vs: &[&str] = &["VirtualService"];
        let cases: Vec<(&str, &str, ServedKinds, Found)> = vec![
            (
                "Istio 1.22+: v1 first",
                "DestinationRule",
                served(&[("v1", vs_dr), ("v1beta1", vs_dr), ("v1alpha3", vs_dr)]),
                Found::At("v1"),
            ),
            (
                "Istio before 1.22: v1beta1",
                "DestinationRule",
                served(&[("v1beta1", vs_dr), ("v1alpha3", vs_dr)]),
                Found::At("v1beta1"),
            ),
            (
                "only v1alpha3",
                "VirtualService",
                served(&[("v1alpha3", vs_dr)]),
                Found::At("v1alpha3"),
            ),
            (
                "the group order does not matter",
                "VirtualService",
                served(&[("v1alpha3", vs_dr), ("v1", vs_dr), ("v1beta1", vs_dr)]),
                Found::At("v1"),
            ),
            (
                "a version that serves other kinds only",
                "DestinationRule",
                served(&[("v1", vs), ("v1beta1", vs_dr)]),
                Found::At("v1beta1"),
            ),
            (
                "the group serves the kind at no version",
                "DestinationRule",
                served(&[("v1", vs), ("v1beta1", vs)]),
                Found::NotServed(vec![]),
            ),
            (
                "only at a version Ferry does not read",
                "DestinationRule",
                served(&[("v2", vs_dr), ("v1", vs)]),
                Found::NotServed(vec!["v2".to_string()]),
            ),
            (
                "no group",
                "DestinationRule",
                served(&[]),
                Found::NotServed(vec![]),
            ),
        ];
        for (name, kind, served, want) in cases {
            assert_eq!(choose(kind, NETWORKING_VERSIONS, &served), want, "{name}");
        }
    }

    #[test]
    fn every_version_read_parses_to_the_same_object() {
        let spec = |kind: Kind| match kind {
            Kind::VirtualService => json!({"hosts": ["redis"],
                "tcp": [{"route": [{"destination": {"host": "redis"}}]}]}),
            Kind::DestinationRule => json!({"host": "redis",
                "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}}),
            Kind::PeerAuthentication => json!({"mtls": {"mode": "STRICT"}}),
            Kind::RedisPolicy => json!({"host": "redis",
                "faults": [{"commands": ["GET"], "abort": {"percentage": 20}}]}),
            Kind::Telemetry => json!({"tracing": [{"randomSamplingPercentage": 20}]}),
            other => panic!("{other:?} has no versions"),
        };
        let custom: Vec<WatchedKind> = (watched_kinds().into_iter())
            .filter(|w| !w.versions.is_empty())
            .collect();
        let kinds: Vec<Kind> = custom.iter().map(|w| w.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::VirtualService,
                Kind::DestinationRule,
                Kind::PeerAuthentication,
                Kind::RedisPolicy,
                Kind::Telemetry
            ]
        );
        for watched in custom {
            let mut specs = Vec::new();
            for version in watched.versions {
                let resource = at_version(&watched.resource, version);
                let obj = object(json!({
                    "metadata": {"name": "x", "namespace": "default", "resourceVersion": "1"},
                    "spec": spec(watched.kind)
                }));
                let cached = validate(watched.kind, &resource, obj, "1".to_string());
                let update = &cached.loaded.update;
                let what = format!("{} at {version}", watched.kind.name());
                assert!(
                    update.rejections.is_empty(),
                    "{what}: {:?}",
                    update.rejections
                );
                assert_eq!(update.entries.len(), 1, "{what}");
                let entry = &update.entries[0];
                assert_eq!(entry.key.kind, watched.kind, "{what}");
                assert_eq!(
                    entry.origin,
                    format!(
                        "kube:/apis/{}/{version}/namespaces/default/{}/x",
                        watched.resource.group, watched.resource.plural
                    )
                );
                let mut same = entry.object.clone();
                let api_version = match &mut same {
                    Object::VirtualService(r) => &mut r.api_version,
                    Object::DestinationRule(r) => &mut r.api_version,
                    Object::PeerAuthentication(r) => &mut r.api_version,
                    Object::RedisPolicy(r) => &mut r.api_version,
                    Object::Telemetry(r) => &mut r.api_version,
                    Object::Kubernetes(_) => panic!("{what}: not typed"),
                };
                assert_eq!(*api_version, resource.api_version, "{what}");
                api_version.clear();
                specs.push(same);
            }
            assert!(
                specs.windows(2).all(|w| w[0] == w[1]),
                "{}: {specs:#?}",
                watched.kind.name()
            );
        }
    }

    #[test]
    fn a_new_version_replaces_the_objects_read_at_the_old_one_in_one_update() {
        let kinds = watched_kinds();
        let slot = (kinds.iter())
            .position(|w| w.kind == Kind::DestinationRule)
            .unwrap_or_else(|| panic!("DestinationRule is not watched"));
        let v1 = kinds[slot].resource.clone();
        let v1beta1 = at_version(&v1, "v1beta1");
        let rule = |name: &str| {
            object(json!({
                "metadata": {"name": name, "namespace": "default", "resourceVersion": "4"},
                "spec": {"host": "redis"}
            }))
        };
        let origins = |store: &crate::store::Store| -> Vec<String> {
            (store.objects())
                .filter(|(k, _)| k.kind == Kind::DestinationRule)
                .filter_map(|(k, _)| store.origin(k).map(|(o, _)| o.to_string()))
                .collect()
        };
        let path = |version: &str, name: &str| {
            format!(
                "kube:/apis/networking.istio.io/{version}/namespaces/default/destinationrules/{name}"
            )
        };
        let mut state = State::new(kinds);
        let mut store = crate::store::Store::default();
        assert!(!state.watching(slot, v1.clone()));
        state.handle(slot, Event::Init);
        state.handle(slot, Event::InitApply(rule("a")));
        state.handle(slot, Event::InitApply(rule("b")));
        assert!(state.handle(slot, Event::InitDone));
        store.apply(state.loaded().update);
        assert_eq!(origins(&store), [path("v1", "a"), path("v1", "b")]);
        // v1 is no longer served: nothing changes until the list at v1beta1 is done.
        assert!(!state.watching(slot, v1beta1.clone()));
        assert!(
            state
                .loaded()
                .update
                .scope
                .iter()
                .flatten()
                .next()
                .is_none()
        );
        state.handle(slot, Event::Init);
        state.handle(slot, Event::InitApply(rule("a")));
        assert!(state.handle(slot, Event::InitDone));
        let update = state.loaded().update;
        let scope: Vec<&String> = update.scope.iter().flatten().collect();
        assert_eq!(
            scope,
            [&path("v1", "a"), &path("v1", "b"), &path("v1beta1", "a")]
        );
        // `a` is replaced (its apiVersion is now v1beta1), never removed; `b` is gone.
        let outcome = store.apply(update);
        assert_eq!(origins(&store), [path("v1beta1", "a")]);
        let touched: Vec<String> = outcome.touched.iter().map(|k| k.to_string()).collect();
        assert_eq!(
            touched,
            ["DestinationRule/default/a", "DestinationRule/default/b"]
        );
        // Watching the same version again changes nothing.
        assert!(!state.watching(slot, v1beta1));
        state.handle(slot, Event::Init);
        state.handle(slot, Event::InitApply(rule("a")));
        assert!(!state.handle(slot, Event::InitDone));
    }

    #[test]
    fn a_kind_not_installed_is_empty_and_takes_its_objects_with_it() {
        let kinds = watched_kinds();
        let slot = (kinds.iter())
            .position(|w| w.kind == Kind::PeerAuthentication)
            .unwrap_or_else(|| panic!("PeerAuthentication is not watched"));
        let mut state = State::new(kinds);
        // Not installed at start: listed and empty.
        assert!(!state.kinds[slot].synced);
        assert!(state.not_installed(slot, &[]));
        assert!(state.kinds[slot].synced);
        // Checked again, still not installed: nothing to deliver.
        assert!(!state.not_installed(slot, &[]));
        // Installed later, then removed: its objects go.
        let resource = state.kinds[slot].resource.clone();
        state.watching(slot, resource);
        assert!(state.handle(
            slot,
            Event::Apply(object(json!({
                "metadata": {"name": "default", "namespace": "istio-system", "resourceVersion": "9"},
                "spec": {"mtls": {"mode": "STRICT"}}
            })))
        ));
        let mut store = crate::store::Store::default();
        store.apply(state.loaded().update);
        assert_eq!(store.objects().count(), 1);
        assert!(state.not_installed(slot, &["v2".to_string()]));
        let update = state.loaded().update;
        let scope: Vec<&String> = update.scope.iter().flatten().collect();
        assert_eq!(
            scope,
            [&"kube:/apis/security.istio.io/v1/namespaces/istio-system/peerauthentications/default".to_string()]
        );
        store.apply(update);
        assert_eq!(store.objects().count(), 0);
    }

    #[test]
    fn manifests_get_type_and_lose_managed_fields() {
        let pod = &watched_kinds()[1].resource;
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
            .position(|w| w.kind == Kind::RedisPolicy)
            .unwrap_or_else(|| panic!("RedisPolicy is not watched"));
        assert_eq!(kinds[slot].resource.api_version, "ferry.dev/v1alpha1");
        assert_eq!(kinds[slot].resource.plural, "redispolicies");
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
                .position(|w| w.kind == kind)
                .unwrap_or_else(|| panic!("{kind:?} is not watched"))
        };
        let (telemetries, config_maps) = (slot(Kind::Telemetry), slot(Kind::ConfigMap));
        assert_eq!(
            kinds[telemetries].resource.api_version,
            "telemetry.istio.io/v1"
        );
        assert_eq!(kinds[telemetries].resource.plural, "telemetries");
        assert_eq!(kinds[config_maps].resource.plural, "configmaps");
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
