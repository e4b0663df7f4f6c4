//! The control plane assembled: a manifest directory watched into the store, pod addresses
//! assigned, the registry compiled per proxy on demand, the configuration stream (15010,
//! plaintext, for local debugging; and, when the CA is on, on 15012 over TLS beside the
//! certificate API: [`SecurePort`]), and the monitoring endpoint (15014: health, metrics,
//! proxy status, config dumps, the certificates the CA issued, and `/debug/trust`: the roots
//! the CA pushes to proxies and what each proxy reported it trusts, for a root rollover).
//!
//! [`run`] builds its own [`Mesh`]; an embedder that needs the same store first (the
//! one-machine runtime, which creates the pods the store describes) builds the [`Mesh`],
//! loads it, and hands it to [`serve`]. Such an embedder may also report which pods are
//! ready ([`Mesh::set_readiness`]): the registry's pods and endpoints then follow.

use crate::compiler::Compiled;
use crate::compiler::cache::Cache;
use crate::distribution::{ConfigSource, Distribution, Fingerprint, Prepared, ProxyStatus, server};
use crate::registry::{ProxyIdentity, Registry};
use crate::source::kube::{KubeOptions, KubeSource};
use crate::source::watch;
use crate::store::Store;
use bytes::Bytes;
use ferry_proto::config::ProxyConfig;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tokio::sync::watch as tokio_watch;
use tracing::{info, warn};

/// How the control plane runs.
#[derive(Debug, Clone)]
pub struct PlaneOptions {
    /// The manifest directory (`--config-dir`).
    pub config_dir: PathBuf,
    /// Read the Kubernetes API (in-cluster configuration or kubeconfig) instead of
    /// `config_dir` (`--kube`); pods then keep the addresses the cluster gave them.
    pub kube: bool,
    /// gRPC address of the configuration stream.
    pub grpc: SocketAddr,
    /// Monitoring address (health, metrics, debug endpoints); `None` disables it.
    pub monitoring: Option<SocketAddr>,
    /// DNS domain of the cluster.
    pub cluster_domain: String,
    /// Namespace whose policies apply mesh-wide.
    pub root_namespace: String,
    /// Network pods get addresses from when the manifests do not say (`status.podIP`).
    pub pod_network: (Ipv4Addr, u8),
}

impl Default for PlaneOptions {
    fn default() -> Self {
        Self {
            config_dir: PathBuf::from("."),
            kube: false,
            grpc: SocketAddr::from(([0, 0, 0, 0], server::DEFAULT_PORT)),
            monitoring: Some(SocketAddr::from(([0, 0, 0, 0], 15014))),
            cluster_domain: "cluster.local".into(),
            root_namespace: "istio-system".into(),
            pod_network: (Ipv4Addr::new(198, 18, 0, 0), 16),
        }
    }
}

/// Pods by (namespace, name).
pub type PodKey = (String, String);

/// The mesh state every proxy's configuration is compiled from.
pub struct Mesh {
    store: RwLock<Store>,
    /// The registry as the store describes it.
    base: RwLock<Arc<Registry>>,
    /// The registry in force: `base` with the reported readiness applied.
    registry: RwLock<Arc<Registry>>,
    /// Pod readiness reported by the embedder; `None` when nobody reports it.
    readiness: RwLock<Option<BTreeMap<PodKey, bool>>>,
    /// The errors of the latest read of the source (broken files, rejected resources).
    errors: RwLock<Vec<String>>,
    /// The next pod address to try (addresses are handed out in turn, so that a freed
    /// address is not reused at once).
    next_ip: std::sync::Mutex<u32>,
    generation: tokio_watch::Sender<u64>,
    options: PlaneOptions,
    loaded: std::sync::atomic::AtomicBool,
    rejected: Gauge,
    reloads: Counter,
    /// Compilation shared between proxies of a namespace, per registry.
    cache: Cache,
    /// When the change behind the registry in force reached the mesh.
    received: std::sync::Mutex<Option<Instant>>,
    /// The headless services falling back to plaintext, as last logged.
    fallbacks: std::sync::Mutex<BTreeSet<String>>,
}

impl Mesh {
    /// An empty mesh.
    pub fn new(options: PlaneOptions) -> Self {
        Self::with_vip_range(options, crate::source::VipRange::default())
    }

    /// An empty mesh whose services without a `clusterIP` get addresses from `vips`.
    pub fn with_vip_range(options: PlaneOptions, vips: crate::source::VipRange) -> Self {
        Self {
            store: RwLock::new(Store::new(vips)),
            base: RwLock::new(Arc::new(Registry::default())),
            registry: RwLock::new(Arc::new(Registry::default())),
            readiness: RwLock::new(None),
            errors: RwLock::new(Vec::new()),
            next_ip: std::sync::Mutex::new(u32::from(options.pod_network.0).saturating_add(2)),
            generation: tokio_watch::channel(0).0,
            options,
            loaded: false.into(),
            rejected: Gauge::default(),
            reloads: Counter::default(),
            cache: Cache::new(),
            received: std::sync::Mutex::new(None),
            fallbacks: std::sync::Mutex::new(BTreeSet::new()),
        }
    }

    /// The registry in force.
    pub fn registry(&self) -> Arc<Registry> {
        read(&self.registry).clone()
    }

    /// How the control plane runs.
    pub fn options(&self) -> &PlaneOptions {
        &self.options
    }

    /// Reads the store (objects, assigned addresses, pods as created).
    pub fn with_store<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        f(&read(&self.store))
    }

    /// Follows every change of the registry in force (the generation).
    pub fn subscribe(&self) -> tokio_watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The errors of the latest read of the source: files that do not parse and resources
    /// that fail validation (whose last valid versions stay in force).
    pub fn errors(&self) -> Vec<String> {
        read(&self.errors).clone()
    }

    /// Whether the source has been read at least once.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Sets which pods are ready (by namespace and name). From then on a pod missing from
    /// `ready` counts as not ready, and a service's endpoint is ready only when its pod is;
    /// the proxies and everything reading the registry follow. Returns whether anything
    /// changed.
    pub fn set_readiness(&self, ready: BTreeMap<PodKey, bool>) -> bool {
        {
            let mut current = write(&self.readiness);
            if current.as_ref() == Some(&ready) {
                return false;
            }
            *current = Some(ready);
        }
        self.publish(Instant::now())
    }

    /// Rebuilds the registry in force from the store's and the reported readiness; bumps
    /// the generation when it differs (a change that reached the mesh at `received`).
    fn publish(&self, received: Instant) -> bool {
        let base = read(&self.base).clone();
        let effective = match read(&self.readiness).as_ref() {
            Some(ready) => Arc::new(with_readiness(&base, ready)),
            None => base,
        };
        let mut slot = write(&self.registry);
        if **slot == *effective {
            return false;
        }
        *slot = effective;
        drop(slot);
        *self.received.lock().unwrap_or_else(|e| e.into_inner()) = Some(received);
        self.generation.send_modify(|g| *g += 1);
        true
    }

    /// Applies what the manifest directory holds now; returns whether anything changed.
    pub fn apply(&self, loaded: crate::source::files::Loaded) -> bool {
        let received = Instant::now();
        for d in &loaded.diagnostics {
            warn!("{d}");
        }
        let errors: Vec<String> = loaded.errors().map(|d| d.to_string()).collect();
        let errors_changed = *read(&self.errors) != errors;
        *write(&self.errors) = errors;
        let mut store = write(&self.store);
        let outcome = store.apply(loaded.update);
        let mut used: BTreeSet<IpAddr> = store.assigned_ips().values().copied().collect();
        let mut cursor = match self.next_ip.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        let network = self.options.pod_network;
        let assigned = !self.options.kube
            && store.assign_ips(|_pod| {
                let ip = next_free(network, &used, *cursor)?;
                *cursor = u32::from(ip).saturating_add(1);
                used.insert(IpAddr::V4(ip));
                Some(IpAddr::V4(ip))
            });
        drop(cursor);
        self.rejected
            .set(i64::try_from(store.rejections().count()).unwrap_or(i64::MAX));
        self.reloads.inc();
        let changed =
            outcome.changed || assigned || !self.loaded.load(std::sync::atomic::Ordering::Acquire);
        if changed {
            let published = self.update_registry(&mut store, received);
            drop(store);
            self.loaded
                .store(true, std::sync::atomic::Ordering::Release);
            if !published {
                // Same registry, but the store changed (the embedder reads it).
                self.generation.send_modify(|g| *g += 1);
            }
        } else if errors_changed {
            // Nothing applies, but the embedder shows the errors.
            self.generation.send_modify(|g| *g += 1);
        }
        self.loaded
            .store(true, std::sync::atomic::Ordering::Release);
        changed
    }

    /// Brings the registry up to date with `store` in place (only what changed is rebuilt,
    /// and the previous version is not kept beside the new one), and publishes it; returns
    /// whether the registry in force changed. With reported readiness, the registry in force
    /// is derived from the updated one ([`Mesh::publish`]).
    fn update_registry(&self, store: &mut Store, received: Instant) -> bool {
        let (domain, root) = (&self.options.cluster_domain, &self.options.root_namespace);
        if read(&self.readiness).is_some() {
            // The registry in force is a copy of the base, which nobody else holds.
            let mut base = write(&self.base);
            store.update_registry(Arc::make_mut(&mut base), domain, root);
            self.report_fallbacks(&base);
            drop(base);
            return self.publish(received);
        }
        // Streams wait for the registry while it changes.
        let mut slot = write(&self.registry);
        let mut base = write(&self.base);
        // The base and the registry in force are the same; the cache holds it too.
        *slot = Arc::default();
        let mut registry = std::mem::take(&mut *base);
        let detached = self.cache.detach(&registry);
        // A stream still compiling from it keeps its own reference: then the registry is
        // copied (the previous version is freed once that stream is done).
        let changes = store.update_registry(Arc::make_mut(&mut registry), domain, root);
        self.cache.install(registry.clone(), detached, &changes);
        if !changes.is_empty() {
            self.report_fallbacks(&registry);
        }
        *base = registry.clone();
        *slot = registry;
        drop(base);
        drop(slot);
        if changes.is_empty() {
            return false;
        }
        *self.received.lock().unwrap_or_else(|e| e.into_inner()) = Some(received);
        self.generation.send_modify(|g| *g += 1);
        true
    }

    /// Logs the headless services that start or stop falling back to plaintext.
    fn report_fallbacks(&self, registry: &Registry) {
        let now = crate::compiler::mtls::headless_fallbacks(registry);
        let mut logged = self.fallbacks.lock().unwrap_or_else(|e| e.into_inner());
        for line in now.difference(&logged) {
            warn!("{line}");
        }
        for line in logged.difference(&now) {
            info!("no longer: {line}");
        }
        *logged = now;
    }

    /// The identity the registry knows for a proxy that said who it is.
    fn resolve(&self, registry: &Arc<Registry>, proxy: &ProxyIdentity) -> ProxyIdentity {
        match self.cache.find_pod(registry, proxy) {
            Some(p) => ProxyIdentity {
                pod: p.name.clone(),
                namespace: p.namespace.clone(),
                workload: p.workload.clone(),
                service_account: p.service_account.clone(),
                ip: p.ip.or(proxy.ip),
            },
            None => proxy.clone(),
        }
    }

    /// Compiles one proxy's configuration, with the compiler's warnings.
    pub fn compile_for(&self, proxy: &ProxyIdentity) -> Compiled {
        let registry = self.registry();
        let identity = self.resolve(&registry, proxy);
        self.cache.compile(&registry, &identity)
    }
}

impl ConfigSource for Mesh {
    fn config_for(&self, proxy: &ProxyIdentity) -> Option<ProxyConfig> {
        if !self.loaded.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        Some(self.compile_for(proxy).config)
    }

    fn prepare(
        &self,
        proxy: &ProxyIdentity,
        held: Option<&Fingerprint>,
    ) -> Result<Prepared, serde_json::Error> {
        if !self.loaded.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(Prepared::Unknown);
        }
        let registry = self.registry();
        let identity = self.resolve(&registry, proxy);
        self.cache.prepare(&registry, &identity, held)
    }

    fn service_account_of(&self, proxy: &ProxyIdentity) -> Option<String> {
        let registry = self.registry();
        let identity = self.resolve(&registry, proxy);
        self.cache
            .find_pod(&registry, &identity)
            .map(|p| p.service_account.clone())
            .filter(|sa| !sa.is_empty())
    }

    fn changes(&self) -> tokio_watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn change_received(&self) -> Option<Instant> {
        *self.received.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The first free pod address of `network` at or after `from` (wrapping around once),
/// skipping the network address, the gateway (the first host address) and `used`.
pub fn next_free(network: (Ipv4Addr, u8), used: &BTreeSet<IpAddr>, from: u32) -> Option<Ipv4Addr> {
    let (base, prefix) = network;
    let mask = u32::MAX.checked_shr(u32::from(prefix.min(32))).unwrap_or(0);
    let first = (u32::from(base) & !mask).saturating_add(2);
    let last = (u32::from(base) | mask).saturating_sub(1);
    if first > last {
        return None;
    }
    let start = if (first..=last).contains(&from) {
        from
    } else {
        first
    };
    (start..=last)
        .chain(first..start)
        .map(Ipv4Addr::from)
        .find(|ip| !used.contains(&IpAddr::V4(*ip)))
}

/// `registry` with pod readiness from `ready`: a pod it does not name is not ready, and an
/// endpoint of a known pod is ready only when the pod is.
pub fn with_readiness(registry: &Registry, ready: &BTreeMap<PodKey, bool>) -> Registry {
    let mut out = registry.clone();
    let key = |ns: &str, name: &str| (ns.to_string(), name.to_string());
    let known: BTreeSet<PodKey> = out
        .pods
        .iter()
        .map(|p| key(&p.namespace, &p.name))
        .collect();
    for pod in &mut out.pods {
        pod.ready = pod.ready
            && ready
                .get(&key(&pod.namespace, &pod.name))
                .copied()
                .unwrap_or(false);
    }
    for svc in &mut out.services {
        for ep in &mut svc.endpoints {
            let k = key(&ep.namespace, &ep.pod);
            if known.contains(&k) {
                ep.ready = ep.ready && ready.get(&k).copied().unwrap_or(false);
            }
        }
    }
    out
}

fn status_json(status: &[ProxyStatus]) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = status
        .iter()
        .map(|s| {
            json!({
                "pod": s.identity.pod,
                "namespace": s.identity.namespace,
                "workload": s.identity.workload,
                "proxyVersion": s.proxy_version,
                "lastSent": s.last_sent,
                "lastAcked": s.last_acked,
                "lastNack": s.last_nack.as_ref().map(|n| json!({ "version": n.version, "reason": n.reason })),
                "pushes": s.pushes,
                "authenticated": s.authenticated,
                "synced": s.last_sent.is_some() && s.last_sent == s.last_acked,
            })
        })
        .collect();
    json!({ "proxies": rows })
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// `/debug/certs[?proxy=<namespace>/<pod>]`: the latest workload certificate the CA issued
/// to one pod (with the pod's address, where its proxy's metrics are), or to every pod.
///
/// With the CA's [`SharedCa`](crate::ca::SharedCa), each record also carries `trust`: what
/// the pod's proxy last reported on the configuration stream (the fingerprints of the roots
/// it trusts, and of the root its certificate chains to).
fn certs(
    mesh: &Mesh,
    issued: Option<&crate::ca::IssuedLog>,
    trust: Option<&crate::ca::SharedCa>,
    query: &str,
) -> Response<Full<Bytes>> {
    let Some(issued) = issued else {
        return respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "this control plane is not the mesh's CA\n",
        );
    };
    let Some(pod) = query_value(query, "proxy") else {
        return respond(
            StatusCode::OK,
            "application/json",
            json!({ "certificates": issued.all() }).to_string(),
        );
    };
    let (namespace, name) = pod.split_once('/').unwrap_or(("default", pod));
    let Some(record) = issued.for_pod(namespace, name) else {
        return respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("no certificate issued to {namespace}/{name}\n"),
        );
    };
    let ip = mesh
        .registry()
        .pods
        .iter()
        .find(|p| p.namespace == namespace && p.name == name)
        .and_then(|p| p.ip);
    let mut body = serde_json::to_value(&record).unwrap_or_default();
    if let (Some(obj), Some(ip)) = (body.as_object_mut(), ip) {
        obj.insert("podIP".into(), json!(ip.to_string()));
    }
    let reported = trust.and_then(|t| {
        t.proxies()
            .into_iter()
            .find(|p| p.namespace == namespace && p.pod == name)
            .and_then(|p| p.report)
    });
    if let (Some(obj), Some(report)) = (body.as_object_mut(), reported) {
        obj.insert("trust".into(), json!(report));
    }
    respond(StatusCode::OK, "application/json", body.to_string())
}

fn monitor(
    mesh: &Mesh,
    distribution: &Distribution,
    metrics: &prometheus_client::registry::Registry,
    issued: Option<&crate::ca::IssuedLog>,
    trust: Option<&crate::ca::SharedCa>,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let query = req.uri().query().unwrap_or_default();
    match req.uri().path() {
        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n"),
        "/ready" => {
            if mesh.loaded.load(std::sync::atomic::Ordering::Acquire) {
                respond(StatusCode::OK, "text/plain", "ready\n")
            } else {
                respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n")
            }
        }
        "/metrics" => {
            let mut text = String::new();
            let _ = prometheus_client::encoding::text::encode(&mut text, metrics);
            respond(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            )
        }
        "/debug/proxy-status" => respond(
            StatusCode::OK,
            "application/json",
            status_json(&distribution.status()).to_string(),
        ),
        "/debug/config_dump" => {
            let Some(pod) = query_value(query, "proxy") else {
                return respond(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "missing ?proxy=<namespace>/<pod>\n",
                );
            };
            let (namespace, name) = pod.split_once('/').unwrap_or(("default", pod));
            let known = mesh
                .registry()
                .pods
                .iter()
                .any(|p| p.namespace == namespace && p.name == name);
            if !known {
                return respond(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    format!("no pod {namespace}/{name} in the mesh\n"),
                );
            }
            let compiled = mesh.compile_for(&ProxyIdentity {
                pod: name.to_string(),
                namespace: namespace.to_string(),
                ..Default::default()
            });
            let body = json!({ "config": compiled.config, "warnings": compiled.warnings });
            respond(StatusCode::OK, "application/json", body.to_string())
        }
        "/debug/certs" => certs(mesh, issued, trust, query),
        "/debug/trust" => match trust {
            Some(trust) => {
                let push = trust.push();
                respond(
                    StatusCode::OK,
                    "application/json",
                    json!({
                        "generation": push.generation,
                        "roots": crate::ca::rollover::pem_fingerprints(&push.roots),
                        "renewRequests": push.renew,
                        "proxies": trust.proxies(),
                    })
                    .to_string(),
                )
            }
            None => respond(
                StatusCode::NOT_FOUND,
                "text/plain",
                "this control plane is not the mesh's CA\n",
            ),
        },
        "/version" => respond(
            StatusCode::OK,
            "application/json",
            json!({ "version": env!("CARGO_PKG_VERSION") }).to_string(),
        ),
        "/debug/rejections" => {
            let store = match mesh.store.read() {
                Ok(s) => s,
                Err(poisoned) => poisoned.into_inner(),
            };
            let rows: Vec<String> = store.rejections().map(|r| r.to_string()).collect();
            respond(
                StatusCode::OK,
                "application/json",
                json!({ "rejections": rows }).to_string(),
            )
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

async fn serve_monitoring(
    listener: tokio::net::TcpListener,
    mesh: Arc<Mesh>,
    distribution: Distribution,
    metrics: Arc<prometheus_client::registry::Registry>,
    issued: Option<crate::ca::IssuedLog>,
    trust: Option<crate::ca::SharedCa>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (mesh, distribution, metrics) = (mesh.clone(), distribution.clone(), metrics.clone());
        let (issued, trust) = (issued.clone(), trust.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let response = monitor(
                    &mesh,
                    &distribution,
                    &metrics,
                    issued.as_ref(),
                    trust.as_ref(),
                    &req,
                );
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Bound addresses of a running control plane.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// The configuration stream (plaintext).
    pub grpc: SocketAddr,
    /// The monitoring endpoint.
    pub monitoring: Option<SocketAddr>,
    /// The TLS port (certificate API and configuration stream), when the CA is on.
    pub secure: Option<SocketAddr>,
}

/// The TLS port (15012) of a control plane that is also the mesh's CA: its server (with the
/// serving certificate the CA signs), its bound listener, and the routes it already serves
/// (the certificate API, [`crate::ca::CaService::routes`]). The control plane adds the
/// configuration stream to them, so proxies can follow it over TLS, verifying the control
/// plane against the mesh root.
pub struct SecurePort {
    /// The TLS server.
    pub server: crate::ca::SecureServer,
    /// Where it accepts.
    pub listener: tokio::net::TcpListener,
    /// What it serves besides the configuration stream.
    pub routes: tonic::service::Routes,
    /// The certificates the CA issued ([`crate::ca::CaService::issued`]), which the
    /// monitoring endpoint shows on `/debug/certs`.
    pub issued: Option<crate::ca::IssuedLog>,
}

/// Runs the control plane until `shutdown` resolves; `on_bound` learns the bound addresses.
pub async fn run(
    options: PlaneOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(Bound),
) -> std::io::Result<()> {
    serve(Arc::new(Mesh::new(options)), shutdown, on_bound).await
}

/// Like [`run`], with the configuration stream also served on the CA's TLS port.
pub async fn run_secure(
    options: PlaneOptions,
    secure: SecurePort,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(Bound),
) -> std::io::Result<()> {
    serve_with(
        Arc::new(Mesh::new(options)),
        Some(secure),
        shutdown,
        on_bound,
    )
    .await
}

/// Runs the control plane around a mesh the caller built (and may have loaded already:
/// the watcher's first read then changes nothing) until `shutdown` resolves.
pub async fn serve(
    mesh: Arc<Mesh>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(Bound),
) -> std::io::Result<()> {
    serve_with(mesh, None, shutdown, on_bound).await
}

/// Like [`serve`]; with `secure`, the configuration stream is also served over TLS on the
/// CA's port, beside what that port already serves. Both listeners stop at `shutdown`.
pub async fn serve_with(
    mesh: Arc<Mesh>,
    secure: Option<SecurePort>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(Bound),
) -> std::io::Result<()> {
    let options = mesh.options.clone();
    let mut metrics = prometheus_client::registry::Registry::default();
    metrics.register(
        "ferry_control_rejected_resources",
        "Resources whose latest version failed validation (the last valid one stays)",
        mesh.rejected.clone(),
    );
    metrics.register(
        "ferry_control_source_reloads",
        "Updates applied from the source (manifest directory reloads, or batches of cluster changes with --kube)",
        mesh.reloads.clone(),
    );
    let trust = secure.as_ref().map(|s| s.server.ca().clone());
    let distribution = Distribution::with_trust(
        mesh.clone(),
        &mut metrics,
        crate::distribution::push::DEBOUNCE,
        trust.clone(),
    );
    let grpc = server::bind(options.grpc).await?;
    let monitoring =
        match options.monitoring {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
            })?),
            None => None,
        };
    let secure_addr = secure
        .as_ref()
        .map(|s| s.listener.local_addr())
        .transpose()?;
    on_bound(Bound {
        grpc: grpc.local_addr()?,
        monitoring: monitoring.as_ref().map(|l| l.local_addr()).transpose()?,
        secure: secure_addr,
    });
    let watcher_mesh = mesh.clone();
    let on_change = move |loaded| {
        if watcher_mesh.apply(loaded) {
            info!(
                "mesh configuration changed (generation {})",
                *watcher_mesh.generation.borrow()
            );
        }
    };
    let watcher = if options.kube {
        let source = KubeSource::from_environment(KubeOptions::default())
            .await
            .map_err(|e| std::io::Error::other(format!("Kubernetes client: {e}")))?;
        source.metrics().register(&mut metrics);
        tokio::spawn(source.run(on_change))
    } else {
        let files = watch::FilesMetrics::default();
        files.register(&mut metrics);
        tokio::spawn(watch::watch_counted(
            options.config_dir.clone(),
            watch::WatchOptions::default(),
            files,
            on_change,
        ))
    };
    let issued = secure.as_ref().and_then(|s| s.issued.clone());
    let monitor_task = monitoring.map(|l| {
        tokio::spawn(serve_monitoring(
            l,
            mesh.clone(),
            distribution.clone(),
            Arc::new(metrics),
            issued,
            trust,
        ))
    });
    // One shutdown for both listeners of the configuration stream.
    let (stop_tx, stop_rx) = tokio_watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let secure_task = secure.map(|port| {
        let routes = port.routes.add_service(distribution.service());
        let (distribution, stop) = (distribution.clone(), stopped());
        tokio::spawn(async move {
            let signal = async move {
                stop.await;
                distribution.close_streams();
            };
            if let Err(e) = port.server.serve(port.listener, routes, signal).await {
                warn!("TLS port (certificate API, configuration stream): {e}");
            }
        })
    });
    let signal_tx = stop_tx.clone();
    let signal = tokio::spawn(async move {
        shutdown.await;
        signal_tx.send_replace(true);
    });
    let result = distribution.serve(grpc, stopped()).await;
    signal.abort();
    // The plaintext listener may have failed on its own: stop the TLS one too.
    stop_tx.send_replace(true);
    if let Some(task) = secure_task {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    }
    watcher.abort();
    if let Some(t) = monitor_task {
        t.abort();
    }
    result.map_err(|e| std::io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{EndpointEntry, PodEntry, ServiceEntry};

    #[test]
    fn addresses_are_handed_out_in_turn() {
        let net = (Ipv4Addr::new(10, 0, 0, 0), 29); // hosts .1 (gateway) .. .6
        let used = |ips: &[u8]| -> BTreeSet<IpAddr> {
            ips.iter()
                .map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, 0, *i)))
                .collect()
        };
        let at = |i: u8| u32::from(Ipv4Addr::new(10, 0, 0, i));
        let ip = |i: u8| Some(Ipv4Addr::new(10, 0, 0, i));
        // (used, cursor, expected)
        let rows: [(&[u8], u32, Option<Ipv4Addr>); 6] = [
            (&[], at(2), ip(2)),
            (&[2, 3], at(2), ip(4)),
            (&[], at(5), ip(5)),
            (&[6], at(5), ip(5)),
            (&[2], at(7), ip(3)), // past the last host: wraps around
            (&[2, 3, 4, 5, 6], at(2), None),
        ];
        for (taken, cursor, want) in rows {
            assert_eq!(
                next_free(net, &used(taken), cursor),
                want,
                "{taken:?} {cursor}"
            );
        }
        assert_eq!(
            next_free((Ipv4Addr::new(10, 0, 0, 0), 31), &used(&[]), 0),
            None
        );
    }

    fn pod(name: &str, ready: bool) -> PodEntry {
        PodEntry {
            name: name.into(),
            namespace: "default".into(),
            ip: None,
            labels: Default::default(),
            annotations: Default::default(),
            workload: "w".into(),
            workload_kind: "StatefulSet".into(),
            service_account: "default".into(),
            has_sidecar: true,
            ready,
            hostname: None,
            subdomain: None,
        }
    }

    fn endpoint(pod: &str, ready: bool) -> EndpointEntry {
        EndpointEntry {
            ip: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
            pod: pod.into(),
            namespace: "default".into(),
            workload: "w".into(),
            service_account: "default".into(),
            labels: Default::default(),
            has_sidecar: true,
            ready,
            hostname: None,
        }
    }

    #[test]
    fn readiness_reaches_pods_and_endpoints() {
        let registry = Registry {
            pods: vec![pod("a", true), pod("b", true), pod("c", false)],
            services: vec![ServiceEntry {
                name: "s".into(),
                namespace: "default".into(),
                fqdn: "s.default.svc.cluster.local".into(),
                cluster_ip: None,
                ports: Vec::new(),
                endpoints: vec![
                    endpoint("a", true),
                    endpoint("b", true),
                    endpoint("c", false),
                    endpoint("external", true),
                ],
                labels: Default::default(),
                export_to: vec!["*".into()],
            }],
            ..Registry::default()
        };
        let ready: BTreeMap<PodKey, bool> = [
            (("default".to_string(), "a".to_string()), true),
            (("default".to_string(), "c".to_string()), true),
        ]
        .into();
        let out = with_readiness(&registry, &ready);
        let pods: Vec<bool> = out.pods.iter().map(|p| p.ready).collect();
        // a: reported ready; b: not reported; c: reported, but the manifest says not ready.
        assert_eq!(pods, [true, false, false]);
        let eps: Vec<bool> = out.services[0].endpoints.iter().map(|e| e.ready).collect();
        // An endpoint of no known pod keeps its own flag.
        assert_eq!(eps, [true, false, false, true]);
    }
}
