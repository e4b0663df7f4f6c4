//! The control plane assembled: a manifest directory watched into the store, pod addresses
//! assigned, the registry compiled per proxy on demand, the configuration stream (15010),
//! and the monitoring endpoint (15014: health, metrics, proxy status, config dumps).

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
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
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

/// The mesh state every proxy's configuration is compiled from.
pub struct Mesh {
    store: RwLock<Store>,
    registry: RwLock<Arc<Registry>>,
    generation: tokio_watch::Sender<u64>,
    options: PlaneOptions,
    loaded: std::sync::atomic::AtomicBool,
    rejected: Gauge,
    reloads: Counter,
    /// Compilation shared between proxies of a namespace, per registry.
    cache: Cache,
}

impl Mesh {
    /// An empty mesh.
    pub fn new(options: PlaneOptions) -> Self {
        Self {
            store: RwLock::new(Store::default()),
            registry: RwLock::new(Arc::new(Registry::default())),
            generation: tokio_watch::channel(0).0,
            options,
            loaded: false.into(),
            rejected: Gauge::default(),
            reloads: Counter::default(),
            cache: Cache::new(),
        }
    }

    /// The registry in force.
    pub fn registry(&self) -> Arc<Registry> {
        match self.registry.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Applies what the manifest directory holds now; returns whether anything changed.
    pub fn apply(&self, loaded: crate::source::files::Loaded) -> bool {
        for d in &loaded.diagnostics {
            warn!("{d}");
        }
        let mut store = match self.store.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let outcome = store.apply(loaded.update);
        let (base, prefix) = self.options.pod_network;
        let used: BTreeSet<IpAddr> = store.assigned_ips().values().copied().collect();
        let mut next = u32::from(base) + 2;
        let last = u32::from(base) | (u32::MAX >> prefix.min(32));
        let assigned = !self.options.kube
            && store.assign_ips(|_pod| {
                while next < last {
                    let ip = IpAddr::V4(Ipv4Addr::from(next));
                    next += 1;
                    if !used.contains(&ip) {
                        return Some(ip);
                    }
                }
                None
            });
        self.rejected
            .set(i64::try_from(store.rejections().count()).unwrap_or(i64::MAX));
        self.reloads.inc();
        let changed =
            outcome.changed || assigned || !self.loaded.load(std::sync::atomic::Ordering::Acquire);
        if changed {
            let registry =
                store.registry(&self.options.cluster_domain, &self.options.root_namespace);
            match self.registry.write() {
                Ok(mut r) => *r = Arc::new(registry),
                Err(poisoned) => *poisoned.into_inner() = Arc::new(registry),
            }
            self.generation.send_modify(|g| *g += 1);
        }
        self.loaded
            .store(true, std::sync::atomic::Ordering::Release);
        changed
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

    fn changes(&self) -> tokio_watch::Receiver<u64> {
        self.generation.subscribe()
    }
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

fn monitor(
    mesh: &Mesh,
    distribution: &Distribution,
    metrics: &prometheus_client::registry::Registry,
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
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (mesh, distribution, metrics) = (mesh.clone(), distribution.clone(), metrics.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let response = monitor(&mesh, &distribution, &metrics, &req);
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
    /// The configuration stream.
    pub grpc: SocketAddr,
    /// The monitoring endpoint.
    pub monitoring: Option<SocketAddr>,
}

/// Runs the control plane until `shutdown` resolves; `on_bound` learns the bound addresses.
pub async fn run(
    options: PlaneOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(Bound),
) -> std::io::Result<()> {
    let mut metrics = prometheus_client::registry::Registry::default();
    let mesh = Arc::new(Mesh::new(options.clone()));
    metrics.register(
        "ferry_control_rejected_resources",
        "Resources whose latest version failed validation (the last valid one stays)",
        mesh.rejected.clone(),
    );
    metrics.register(
        "ferry_control_source_reloads",
        "Manifest directory reloads",
        mesh.reloads.clone(),
    );
    let distribution = Distribution::new(mesh.clone(), &mut metrics);
    let grpc = server::bind(options.grpc).await?;
    let monitoring =
        match options.monitoring {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
            })?),
            None => None,
        };
    on_bound(Bound {
        grpc: grpc.local_addr()?,
        monitoring: monitoring.as_ref().map(|l| l.local_addr()).transpose()?,
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
        tokio::spawn(watch::watch(options.config_dir.clone(), on_change))
    };
    let monitor_task = monitoring.map(|l| {
        tokio::spawn(serve_monitoring(
            l,
            mesh.clone(),
            distribution.clone(),
            Arc::new(metrics),
        ))
    });
    let result = distribution.serve(grpc, shutdown).await;
    watcher.abort();
    if let Some(t) = monitor_task {
        t.abort();
    }
    result.map_err(|e| std::io::Error::other(e.to_string()))
}
