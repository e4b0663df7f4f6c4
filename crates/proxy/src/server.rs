//! Starting and stopping a whole proxy: traffic listeners on their own runtime (one thread
//! by default), side doors on another, configuration reloads that keep the last good
//! configuration, and the drain on shutdown. The side doors (metrics 15090, readiness
//! 15021, status 15020, admin 15000) all run on the admin runtime, and so does the
//! certificate renewal of a proxy with a workload identity.

use crate::admin::status::StatusConfig;
use crate::admin::{AdminState, LogLevelSetter, http};
use crate::config::{Snapshot, file};
use crate::conn::Ctx;
use crate::identity::manager::{Manager, SystemClock};
use crate::identity::source::{CaClient, CertificateSource};
use crate::identity::{IdentityOptions, IdentityState};
use crate::lifecycle::{Lifecycle, Phase};
use crate::listener::orig_dst::OriginalDst;
use crate::listener::{self, Direction};
use crate::telemetry::Metrics;
use arc_swap::ArcSwap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};
use tracing::{info, warn};

/// What to listen on and where the configuration comes from.
pub struct Options {
    /// Traffic listeners: address and which handler they feed.
    pub listeners: Vec<(SocketAddr, Direction)>,
    /// Prometheus metrics (15090).
    pub metrics: Option<SocketAddr>,
    /// Readiness (15021).
    pub health: Option<SocketAddr>,
    /// Admin API (15000); keep it on loopback.
    pub admin: Option<SocketAddr>,
    /// Status port (15020): merged metrics and application probes.
    pub status: Option<SocketAddr>,
    /// What the status port needs: original probes, the application's metrics, pod IP.
    pub status_config: StatusConfig,
    /// Configuration file, watched for changes; `None` for an empty configuration.
    pub config_file: Option<PathBuf>,
    /// Worker threads of the traffic runtime.
    pub worker_threads: usize,
    /// Run-time log level switch for the admin API.
    pub set_log_level: Option<LogLevelSetter>,
    /// The log level the binary started with, shown by `/logging`.
    pub log_level: Option<String>,
    /// The control plane to follow (its gRPC address) and who this proxy is.
    pub control_plane: Option<(String, crate::discovery::ProxyInfo)>,
    /// Follow `control_plane` over TLS (15012) as this says, proving the proxy's identity
    /// with its workload certificate (filled in here from `identity`) or its token;
    /// `None`: plaintext.
    pub control_plane_tls: Option<crate::discovery::ControlPlaneTls>,
    /// With `control_plane`: the file keeping the last snapshot applied, restored at
    /// start-up before the control plane answers ([`crate::discovery::cache`]).
    pub config_cache: Option<PathBuf>,
    /// The workload identity to get from the CA; `None` runs without mutual TLS.
    pub identity: Option<IdentityOptions>,
    /// Where certificates come from instead of the CA client of `identity` (tests).
    pub certificate_source: Option<Arc<dyn CertificateSource>>,
    /// Tracing settings used when the configuration carries none (`ferry proxy`'s
    /// command line); the configuration's own settings win.
    pub tracing: Option<crate::config::Tracing>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listeners: Vec::new(),
            metrics: None,
            health: None,
            admin: None,
            status: None,
            status_config: StatusConfig::default(),
            config_file: None,
            worker_threads: 1,
            set_log_level: None,
            log_level: None,
            control_plane: None,
            control_plane_tls: None,
            config_cache: None,
            identity: None,
            certificate_source: None,
            tracing: None,
        }
    }
}

/// A proxy that is running.
pub struct Running {
    /// Bound traffic listeners, in the order of [`Options::listeners`].
    pub listeners: Vec<SocketAddr>,
    /// Bound metrics address.
    pub metrics: Option<SocketAddr>,
    /// Bound readiness address.
    pub health: Option<SocketAddr>,
    /// Bound admin API address.
    pub admin: Option<SocketAddr>,
    /// Bound status port address.
    pub status: Option<SocketAddr>,
    /// The lifecycle switch (drain, close).
    pub lifecycle: Lifecycle,
    /// The configuration in force.
    pub config: Arc<ArcSwap<Snapshot>>,
    /// The metrics registry.
    pub metrics_registry: Arc<Metrics>,
    /// The workload certificate, when the proxy has an identity.
    pub identity: Option<Arc<IdentityState>>,
    config_changed: Arc<tokio::sync::watch::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

fn std_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

fn runtime(threads: usize, name: &str) -> io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name(name)
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .thread_name(name)
            .build()
    }
}

fn modified(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reloads the configuration file when it changes; an invalid file is logged and the last
/// good configuration stays in force. `changed` is told after each reload.
async fn watch_config(
    path: PathBuf,
    config: Arc<ArcSwap<Snapshot>>,
    state: Arc<AdminState>,
    changed: Arc<tokio::sync::watch::Sender<()>>,
) {
    let mut seen = modified(&path);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = modified(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match file::load(&path) {
            Ok(snapshot) => {
                info!("configuration reloaded from {}", path.display());
                config.store(Arc::new(snapshot));
                changed.send_replace(());
                state.config_loaded();
            }
            Err(e) => warn!("keeping the last good configuration; {e}"),
        }
    }
}

/// Starts a proxy. Listeners are bound before this returns, so their addresses are known.
pub fn start(options: Options, orig_dst: Arc<dyn OriginalDst>) -> io::Result<Running> {
    let initial = match &options.config_file {
        Some(path) => file::load(path)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?,
        None => Snapshot::compile(Default::default()),
    };
    let config = Arc::new(ArcSwap::from_pointee(initial));
    let metrics = Arc::new(Metrics::new());
    let lifecycle = Lifecycle::new();
    let traffic: Vec<(std::net::TcpListener, Direction)> = options
        .listeners
        .iter()
        .map(|(addr, dir)| Ok((std_listener(*addr)?, *dir)))
        .collect::<io::Result<_>>()?;
    let listener_addrs = traffic
        .iter()
        .map(|(l, _)| l.local_addr())
        .collect::<io::Result<Vec<_>>>()?;
    let metrics_listener = options.metrics.map(std_listener).transpose()?;
    let health_listener = options.health.map(std_listener).transpose()?;
    let admin_listener = options.admin.map(std_listener).transpose()?;
    let status_listener = options.status.map(std_listener).transpose()?;
    let bound = |l: &Option<std::net::TcpListener>| l.as_ref().map(|l| l.local_addr()).transpose();
    let admin_addr = bound(&admin_listener)?;
    let status_addr = bound(&status_listener)?;
    if let Some(addr) = admin_addr.filter(|a| !a.ip().is_loopback()) {
        warn!("the admin API listens on {addr}, which is not a loopback address");
    }
    let metrics_addr = metrics_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;
    let health_addr = health_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;

    let identity = match &options.identity {
        Some(opts) => Some(identity_manager(
            opts,
            options.certificate_source.clone(),
            &metrics,
        )?),
        None => None,
    };
    let identity_state = identity.as_ref().map(|m| m.state.clone());
    let trace_switch = Arc::new(crate::trace::TraceSwitch::default());
    // Told whenever a new configuration is in force (file reload, control plane, tests).
    let (config_changed, config_changes) = tokio::sync::watch::channel(());
    let config_changed = Arc::new(config_changed);
    let trace_config = config.clone();
    let local_tracing = options.tracing.clone();
    let ctx = Arc::new(Ctx {
        config: config.clone(),
        metrics: metrics.clone(),
        lifecycle: lifecycle.clone(),
        orig_dst,
        active: Default::default(),
        http: crate::http::client::Clients::new(Duration::from_secs(10)),
        tls: identity_state
            .clone()
            .map(|s| Arc::new(crate::tls::policy::MeshTls::new(s))),
        tracing: trace_switch.clone(),
    });
    let idle_ctx = ctx.clone();
    let mut admin_state = AdminState::new(
        config.clone(),
        metrics.clone(),
        lifecycle.clone(),
        options.status_config,
    );
    admin_state.set_log_level = options.set_log_level;
    admin_state.log_level = options.log_level.into();
    admin_state.identity = identity_state.clone();
    admin_state.discovery = options
        .control_plane
        .as_ref()
        .map(|_| crate::discovery::DiscoveryState::with_changed(Some(config_changed.clone())));
    // The cached snapshot goes in before any listener serves (only a proxy that follows a
    // control plane has discovery state, and only it uses the cache).
    let config_cache = options.config_cache;
    if let (Some(path), Some((_, info)), Some(discovery)) = (
        &config_cache,
        &options.control_plane,
        &admin_state.discovery,
    ) && crate::discovery::cache::restore(path, info, &config, discovery)
    {
        admin_state.config_loaded();
    }
    let state = Arc::new(admin_state);
    let control_plane = options.control_plane;
    let control_plane_tls = options.control_plane_tls.map(|mut tls| {
        tls.identity = tls.identity.or_else(|| identity_state.clone());
        tls
    });
    let discovery_config = config.clone();
    let watch_state = state.clone();

    let traffic_rt = runtime(options.worker_threads, "ferry-traffic")?;
    let admin_rt = runtime(1, "ferry-admin")?;
    let mut threads = Vec::new();

    let closed = lifecycle.clone();
    let config_file = options.config_file.clone();
    let watched = config.clone();
    let file_changed = config_changed.clone();
    threads.push(
        std::thread::Builder::new()
            .name("ferry-traffic".into())
            .spawn(move || {
                traffic_rt.block_on(async move {
                    for (listener, dir) in traffic {
                        match tokio::net::TcpListener::from_std(listener) {
                            Ok(l) => {
                                tokio::spawn(listener::serve(l, dir, ctx.clone()));
                            }
                            Err(e) => warn!("listener: {e}"),
                        }
                    }
                    if let Some(path) = config_file {
                        tokio::spawn(watch_config(path, watched, watch_state, file_changed));
                    }
                    // Stop once draining with no connection left, or when the drain is over.
                    let drained = async {
                        closed.reached(Phase::Draining).await;
                        while idle_ctx.active.load(Ordering::Relaxed) > 0 {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = drained => {}
                        _ = closed.reached(Phase::Closed) => {
                            // Let connections ended by the close report their metrics.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    closed.advance(Phase::Closed);
                });
            })?,
    );

    let admin_closed = lifecycle.clone();
    let admin_state = state.clone();
    threads.push(
        std::thread::Builder::new()
            .name("ferry-admin".into())
            .spawn(move || {
                admin_rt.block_on(async move {
                    for (listener, door) in [
                        (metrics_listener, http::Door::Metrics),
                        (health_listener, http::Door::Health),
                        (admin_listener, http::Door::Admin),
                        (status_listener, http::Door::Status),
                    ] {
                        let Some(listener) = listener else { continue };
                        match tokio::net::TcpListener::from_std(listener) {
                            Ok(l) => {
                                tokio::spawn(http::serve(l, door, admin_state.clone()));
                            }
                            Err(e) => warn!("side door {door:?}: {e}"),
                        }
                    }
                    // Tracing follows the configuration here; its exporter runs here too,
                    // so the traffic thread only ever queues spans.
                    {
                        let stop = admin_state.lifecycle.clone();
                        tokio::spawn(crate::trace::active::follow_changes(
                            trace_switch,
                            trace_config,
                            config_changes,
                            local_tracing,
                            admin_state.metrics.tracing.clone(),
                            async move { stop.reached(Phase::Closed).await },
                        ));
                    }
                    // Certificate renewal runs here, off the traffic thread.
                    if let Some(manager) = identity {
                        let stop = admin_state.lifecycle.clone();
                        tokio::spawn(async move {
                            manager.run(stop.reached(Phase::Closed)).await;
                        });
                    }
                    // The configuration stream runs here too, off the traffic thread.
                    if let (Some((addr, info)), Some(state)) =
                        (control_plane, admin_state.discovery.clone())
                    {
                        let stop = admin_state.lifecycle.clone();
                        tokio::spawn(async move {
                            crate::discovery::run_cached(
                                &addr,
                                control_plane_tls,
                                info,
                                config_cache,
                                discovery_config,
                                state,
                                stop.reached(Phase::Draining),
                            )
                            .await;
                        });
                    }
                    admin_closed.reached(Phase::Closed).await;
                    // Let responses in flight (the answer to /quitquitquit) go out.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                });
            })?,
    );
    state.listeners_ready.store(true, Ordering::Release);
    Ok(Running {
        listeners: listener_addrs,
        metrics: metrics_addr,
        health: health_addr,
        admin: admin_addr,
        status: status_addr,
        lifecycle,
        config,
        metrics_registry: metrics,
        identity: identity_state,
        config_changed,
        threads,
    })
}

/// The certificate manager of `opts`: the CA client (or `source`), the identity asked for.
fn identity_manager(
    opts: &IdentityOptions,
    source: Option<Arc<dyn CertificateSource>>,
    metrics: &Metrics,
) -> io::Result<Manager> {
    let id = opts
        .spiffe()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let source = source.unwrap_or_else(|| {
        Arc::new(CaClient {
            addr: opts.ca_addr.clone(),
            server_name: opts.ca_server_name.clone(),
            root_cert: opts.root_cert.clone(),
            token_file: opts.token_file.clone(),
        })
    });
    Ok(Manager {
        id,
        ttl: opts.ttl,
        root_cert: Some(opts.root_cert.clone()).filter(|p| !p.as_os_str().is_empty()),
        source,
        state: Arc::new(IdentityState::new()),
        metrics: metrics.identity.clone(),
        clock: Arc::new(SystemClock),
    })
}

impl Running {
    /// Puts `snapshot` in force, as a reload or the control plane would (the tracer and
    /// whoever follows the configuration are told).
    pub fn replace_config(&self, snapshot: Snapshot) {
        self.config.store(Arc::new(snapshot));
        self.config_changed.send_replace(());
    }

    /// Drains: readiness goes false and listeners stop accepting at once; open connections
    /// end at their next quiet point, or when `period` is over. Returns when all threads
    /// have stopped.
    pub fn drain(self, period: Duration) {
        self.lifecycle.advance(Phase::Draining);
        let lifecycle = self.lifecycle.clone();
        let timer = std::thread::spawn(move || {
            std::thread::sleep(period);
            lifecycle.advance(Phase::Closed);
        });
        for t in self.threads {
            let _ = t.join();
        }
        drop(timer);
    }

    /// Stops at once.
    pub fn stop(self) {
        self.lifecycle.advance(Phase::Closed);
        for t in self.threads {
            let _ = t.join();
        }
    }

    /// The drain period the configuration asks for.
    pub fn drain_period(&self) -> Duration {
        Duration::from_secs(self.config.load().config.settings.drain_duration_s)
    }
}
