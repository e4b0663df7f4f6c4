//! `ferry up`: the whole run. Leftovers of an earlier run are removed; the manifest
//! directory is loaded into the control plane's mesh (which assigns pod and service
//! addresses, once, for everyone); the bridge, the cluster DNS server and the control plane
//! (in process, on the bridge address) start; then the pods the mesh describes are
//! reconciled with the running ones after every change (a manifest edit, a pod's readiness),
//! each pod run by its own task ([`crate::lifecycle`]). Pod readiness flows back into the
//! mesh, so endpoints, DNS answers and the service rules follow. Until `shutdown` resolves
//! the state file says what runs; then (and on any error or panic, through a drop guard)
//! everything is removed. With mutual TLS on (the default), the control plane is also the
//! mesh's CA (its root kept in `<state-dir>/ca`), serving the certificate API and the
//! configuration stream over TLS on the bridge address's port 15012, and every proxy gets a
//! per-pod token (`<state-dir>/identity`) to prove its service account with.

use crate::dns::server::DnsServer;
use crate::lifecycle::{self, PodStatus, Report};
use crate::pod::{MeshIdentity, PodPlan};
use crate::probe::{BasicProber, Prober};
use crate::progress::Progress;
use crate::reconcile::{self, Key, Ordered, Running, Wanted};
use crate::state::{PodState, State};
use crate::{bridge, process};
use anyhow::{Context, bail};
use ferry_control::ca::LocalTokens;
use ferry_control::plane::{self, Mesh, PlaneOptions};
use ferry_control::registry::Registry;
use ferry_control::source::build::natural_cmp;
use ferry_control::source::{FileSource, MeshPod, VipRange};
use ferry_control::store::{Kind, ObjectKey};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// How `ferry up` runs.
#[derive(Clone)]
pub struct Options {
    /// The manifest directory.
    pub dir: PathBuf,
    /// Pod network; the bridge takes the first host address, pods the following ones.
    pub pod_network: (Ipv4Addr, u8),
    /// Where services without a `clusterIP` get theirs.
    pub service_network: (Ipv4Addr, u8),
    /// Bridge name.
    pub bridge: String,
    /// Directory of the state file and the logs.
    pub state_dir: PathBuf,
    /// The `ferry` binary Ferry's own containers run.
    pub ferry: PathBuf,
    /// Port of the cluster DNS server on the bridge address (53).
    pub dns_port: u16,
    /// Runs the network probes.
    pub prober: Arc<dyn Prober>,
    /// The longest a deleted pod gets to stop (its `terminationGracePeriodSeconds`, capped).
    pub max_grace: Duration,
    /// How long each pod gets to stop when the whole mesh goes down.
    pub shutdown_grace: Duration,
    /// After this long the summary is shown even if some pods are not ready.
    pub ready_timeout: Duration,
    /// Workload identity and mutual TLS: the control plane is the mesh's CA (its root in
    /// `<state_dir>/ca`, made on first start), each pod's proxy gets a per-pod token and
    /// a SPIFFE certificate and follows the configuration stream over TLS (15012).
    pub mtls: bool,
    /// Lifetime of the workload certificates; `None` for the CA's default (24 h).
    pub cert_ttl: Option<Duration>,
}

impl Options {
    /// Defaults for a manifest directory: pods on 198.18.0.0/16, services on
    /// 198.19.0.0/16, bridge `ferry0`, `/run/ferry`, DNS on port 53.
    pub fn new(dir: PathBuf, ferry: PathBuf) -> Self {
        Options {
            dir,
            pod_network: (Ipv4Addr::new(198, 18, 0, 0), 16),
            service_network: (Ipv4Addr::new(198, 19, 0, 0), 16),
            bridge: bridge::DEFAULT_NAME.into(),
            state_dir: PathBuf::from(crate::state::DEFAULT_DIR),
            ferry,
            dns_port: 53,
            prober: Arc::new(BasicProber),
            max_grace: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(1),
            ready_timeout: Duration::from_secs(60),
            mtls: true,
            cert_ttl: None,
        }
    }

    /// The bridge address: the first host address of the pod network.
    pub fn gateway(&self) -> Ipv4Addr {
        let (base, prefix) = self.pod_network;
        let mask = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
        Ipv4Addr::from((u32::from(base) & !mask) + 1)
    }
}

/// Removes what the state file records when dropped while armed (errors and panics).
struct Guard {
    dir: PathBuf,
    armed: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.armed
            && let Ok(Some(state)) = State::load(&self.dir)
        {
            crate::state::teardown(&state, &self.dir);
        }
    }
}

/// A pod the runtime has.
struct Handle {
    plan: PodPlan,
    stop: watch::Sender<Option<Duration>>,
    status: PodStatus,
    terminating: bool,
    ordered: Option<Ordered>,
    workload: String,
}

/// The runtime's view of the mesh while it runs.
struct Runtime {
    options: Options,
    mesh: Arc<Mesh>,
    control_plane: String,
    identity: Option<MeshIdentity>,
    ctx: lifecycle::Context,
    reports: mpsc::UnboundedSender<(String, String, Report)>,
    pods: BTreeMap<Key, Handle>,
    /// Pods that cannot be created, with why (they show in `ferry status`).
    unplannable: BTreeMap<Key, (String, String)>,
    state: State,
    progress: Progress,
    rejected: BTreeSet<String>,
    /// How many pods the mesh wants (as of the last reconcile).
    wanted: usize,
}

fn key_of(mp: &MeshPod) -> Key {
    (mp.entry.namespace.clone(), mp.entry.name.clone())
}

impl Runtime {
    fn save(&mut self) {
        let mut pods: Vec<PodState> = self
            .pods
            .values()
            .map(|h| pod_state(&h.plan, &h.status, &h.workload, &self.options))
            .collect();
        for ((ns, name), (ip, error)) in &self.unplannable {
            if !self.pods.contains_key(&(ns.clone(), name.clone())) {
                pods.push(PodState {
                    name: name.clone(),
                    namespace: ns.clone(),
                    ip: ip.clone(),
                    phase: "Failed".into(),
                    error: Some(error.clone()),
                    ..PodState::default()
                });
            }
        }
        pods.sort_by(|a, b| {
            a.namespace
                .cmp(&b.namespace)
                .then_with(|| natural_cmp(&a.name, &b.name))
        });
        self.state.pods = pods;
        self.state.rejected = self.rejected.iter().cloned().collect();
        if let Err(e) = self.state.save(&self.options.state_dir) {
            self.progress
                .line(&format!("warning: cannot write the state file: {e:#}"));
        }
    }

    /// Whether the pod's StatefulSet creates and deletes its pods one at a time.
    fn ordered(&self, mp: &MeshPod) -> Option<Ordered> {
        if mp.entry.workload_kind != "StatefulSet" {
            return None;
        }
        let key = ObjectKey::new(Kind::StatefulSet, &mp.entry.namespace, &mp.entry.workload);
        let parallel = self.mesh.with_store(|s| {
            s.get(&key)
                .and_then(|o| o.as_value())
                .is_some_and(|v| v["spec"]["podManagementPolicy"].as_str() == Some("Parallel"))
        });
        if parallel {
            return None;
        }
        Some(Ordered {
            set: mp.entry.workload.clone(),
            ordinal: reconcile::ordinal(&mp.entry.workload, &mp.entry.name)?,
        })
    }

    /// Creates and deletes pods toward what the mesh wants.
    fn reconcile(&mut self) {
        let mesh_pods = self.mesh.with_store(|s| s.pods());
        self.wanted = mesh_pods.len();
        let gateway = self.options.gateway();
        let mut wanted = Vec::new();
        let mut plans: BTreeMap<Key, (PodPlan, Option<Ordered>, String)> = BTreeMap::new();
        let mut unplannable = BTreeMap::new();
        for mp in &mesh_pods {
            let key = key_of(mp);
            let ip = mp.entry.ip.map(|ip| ip.to_string()).unwrap_or_default();
            match PodPlan::new(
                mp,
                &self.options.ferry,
                &self.control_plane,
                self.identity.as_ref(),
                gateway,
            ) {
                Ok(plan) => {
                    let ordered = self.ordered(mp);
                    wanted.push(Wanted {
                        key: key.clone(),
                        fingerprint: plan.fingerprint,
                        ip: plan.ip,
                        ordered: ordered.clone(),
                    });
                    let workload = if mp.entry.workload_kind.is_empty() {
                        String::new()
                    } else {
                        format!("{}/{}", mp.entry.workload_kind, mp.entry.workload)
                    };
                    plans.insert(key, (plan, ordered, workload));
                }
                Err(e) => {
                    // A running pod of that name stays as it is.
                    if let Some(h) = self.pods.get(&key) {
                        wanted.push(Wanted {
                            key: key.clone(),
                            fingerprint: h.plan.fingerprint,
                            ip: h.plan.ip,
                            ordered: h.ordered.clone(),
                        });
                    }
                    unplannable.insert(key, (ip, format!("{e:#}")));
                }
            }
        }
        for (key, (_, error)) in &unplannable {
            if self.unplannable.get(key).map(|u| &u.1) != Some(error) {
                self.progress
                    .line(&format!("{}/{}: cannot run: {error}", key.0, key.1));
            }
        }
        self.unplannable = unplannable;
        let running: Vec<Running> = self
            .pods
            .iter()
            .map(|(key, h)| Running {
                key: key.clone(),
                fingerprint: h.plan.fingerprint,
                ip: h.plan.ip,
                ready: h.status.ready,
                terminating: h.terminating,
                ordered: h.ordered.clone(),
            })
            .collect();
        let actions = reconcile::plan(&wanted, &running);
        for key in &actions.delete {
            if let Some(h) = self.pods.get_mut(key) {
                h.terminating = true;
                let grace = h.plan.grace.min(self.options.max_grace);
                let _ = h.stop.send(Some(grace));
                if !self.progress.is_live() {
                    self.progress
                        .line(&format!("{}/{}: deleting", key.0, key.1));
                }
            }
        }
        let mut new = Vec::new();
        for key in &actions.create {
            let Some((plan, ordered, workload)) = plans.remove(key) else {
                continue;
            };
            let (stop, stop_rx) = watch::channel(None);
            self.pods.insert(
                key.clone(),
                Handle {
                    plan: plan.clone(),
                    stop,
                    status: PodStatus {
                        phase: "Pending".into(),
                        ..PodStatus::default()
                    },
                    terminating: false,
                    ordered,
                    workload,
                },
            );
            new.push((plan, stop_rx));
        }
        if !actions.delete.is_empty() || !new.is_empty() {
            self.publish_readiness();
        }
        // Recorded before anything is made, so that a crash leaves nothing unknown.
        self.save();
        for (plan, stop_rx) in new {
            if !self.progress.is_live() {
                self.progress.line(&format!(
                    "{}/{}: creating ({})",
                    plan.namespace, plan.name, plan.ip
                ));
            }
            tokio::spawn(lifecycle::run(
                plan,
                self.ctx.clone(),
                self.reports.clone(),
                stop_rx,
            ));
        }
    }

    /// Tells the mesh which pods are ready (terminating ones are not).
    fn publish_readiness(&self) {
        let ready = self
            .pods
            .iter()
            .map(|(k, h)| (k.clone(), h.status.ready && !h.terminating))
            .collect();
        self.mesh.set_readiness(ready);
    }

    /// The source's errors now (broken files, rejected resources); new ones are printed.
    fn check_rejections(&mut self) {
        let now: BTreeSet<String> = self.mesh.errors().into_iter().collect();
        for r in now.difference(&self.rejected) {
            self.progress.line(&if r.contains("last valid version") {
                format!("manifest error: {r}")
            } else {
                format!("manifest error: {r} (the last valid version stays in force)")
            });
        }
        self.rejected = now;
    }

    /// Every pod ready (or failed for good) and nothing left to create.
    fn settled(&self) -> bool {
        let failed = self.unplannable.len();
        self.pods.len() + failed >= self.wanted
            && self
                .pods
                .values()
                .all(|h| h.status.ready || h.status.error.is_some())
    }

    fn show(&mut self, key: &Key) {
        if !self.progress.is_live() {
            return;
        }
        if let Some(h) = self.pods.get(key) {
            let state = pod_state(&h.plan, &h.status, &h.workload, &self.options);
            self.progress.pod(&state);
        }
    }
}

fn pod_state(plan: &PodPlan, status: &PodStatus, workload: &str, options: &Options) -> PodState {
    let mut containers = status.containers.clone();
    if containers.is_empty() {
        containers = plan
            .containers()
            .map(|c| crate::state::ContainerState {
                name: c.name.clone(),
                role: if plan.init.iter().any(|i| i.name == c.name) {
                    "init"
                } else if plan.sidecars.iter().any(|i| i.name == c.name) {
                    "sidecar"
                } else {
                    "app"
                }
                .into(),
                state: "waiting".into(),
                log: lifecycle::log_path(&options.state_dir, &plan.namespace, &plan.name, &c.name),
                ..Default::default()
            })
            .collect();
    }
    PodState {
        name: plan.name.clone(),
        namespace: plan.namespace.clone(),
        netns: plan.netns.clone(),
        veth: plan.veth.clone(),
        ip: plan.ip.to_string(),
        sidecar: plan.has_proxy,
        ready: status.ready,
        phase: status.phase.clone(),
        error: status.error.clone(),
        metrics_url: plan.metrics_url(),
        workload: workload.to_string(),
        containers,
    }
}

/// Directory (under the state directory) of the per-pod token files.
pub const TOKEN_DIR: &str = "identity";
/// Directory (under the state directory) of the CA's files (Istio's `cacerts` names).
pub const CA_DIR: &str = "ca";
/// Port of the CA's certificate API and of the configuration stream over TLS.
pub const SECURE_PORT: u16 = ferry_control::ca::DEFAULT_PORT;

/// The mesh's CA, ready to serve on the bridge address.
struct StartedCa {
    addr: SocketAddr,
    dir: PathBuf,
    /// The CA in force and its store, for the control socket (root rollover).
    admin: crate::admin::Targets,
    tokens: LocalTokens,
    port: plane::SecurePort,
}

/// Loads the CA kept in the state directory (or makes a self-signed root there), makes the
/// run's token key, and binds the TLS port on the bridge address.
async fn start_ca(options: &Options, gateway: Ipv4Addr) -> anyhow::Result<StartedCa> {
    use ferry_control::ca::{CaService, CertificateAuthority, FileStore, SecureServer};
    use std::os::unix::fs::PermissionsExt;
    // The proxies (UID 1337) read the root and their tokens below the state directory: every
    // directory above it must let them through.
    let full = std::fs::canonicalize(&options.state_dir)
        .with_context(|| format!("reading {}", options.state_dir.display()))?;
    for dir in full.ancestors().skip(1) {
        let mode = std::fs::metadata(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            bail!(
                "the proxies (UID {}) cannot reach the state directory {}: {} is not traversable by others (chmod o+x it, or choose another --state-dir, or run with --no-mtls)",
                crate::pod::PROXY_UID,
                options.state_dir.display(),
                dir.display()
            );
        }
    }
    let meta = std::fs::metadata(&options.state_dir)
        .with_context(|| format!("reading {}", options.state_dir.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o001 == 0 {
        std::fs::set_permissions(
            &options.state_dir,
            std::fs::Permissions::from_mode((mode & 0o7777) | 0o001),
        )
        .with_context(|| format!("making {} traversable", options.state_dir.display()))?;
    }
    let dir = options.state_dir.join(CA_DIR);
    let store = FileStore::new(&dir);
    let (ca, _created) =
        CertificateAuthority::load_or_create(&store, "cluster.local", std::time::SystemTime::now())
            .await
            .with_context(|| format!("the CA in {}", dir.display()))?;
    let ca = ferry_control::ca::SharedCa::new(ca);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", dir.display()))?;
    // Tokens live as long as this run: a new key each time.
    let (tokens, _) = LocalTokens::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let service = CaService::shared(ca.clone(), Arc::new(tokens.clone()));
    let server = SecureServer::shared(
        ca.clone(),
        ferry_control::ca::server::default_serving_names(),
        vec![std::net::IpAddr::V4(gateway)],
    )?
    // A proxy that has no certificate yet proves its pod with its token on the stream.
    .with_authenticator(Arc::new(tokens.clone()));
    let addr = SocketAddr::from((gateway, SECURE_PORT));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let addr = listener.local_addr()?;
    let token_dir = options.state_dir.join(TOKEN_DIR);
    std::fs::create_dir_all(&token_dir)
        .with_context(|| format!("creating {}", token_dir.display()))?;
    std::fs::set_permissions(&token_dir, std::fs::Permissions::from_mode(0o711))
        .with_context(|| format!("chmod {}", token_dir.display()))?;
    Ok(StartedCa {
        addr,
        admin: crate::admin::Targets {
            ca,
            store: Arc::new(store),
        },
        dir,
        tokens,
        port: plane::SecurePort {
            server,
            listener,
            routes: service.routes(),
            issued: Some(service.issued().clone()),
        },
    })
}

async fn load(dir: &Path) -> ferry_control::source::Loaded {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || FileSource::load(dir))
        .await
        .unwrap_or_default()
}

/// Runs the mesh until `shutdown` resolves, then removes everything it made.
pub async fn run(options: Options, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    if !crate::is_root() {
        bail!(
            "`ferry up` needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create network namespaces, links and iptables rules; run it with sudo"
        );
    }
    if !options.dir.is_dir() {
        bail!("{} is not a directory of manifests", options.dir.display());
    }
    let started = Instant::now();
    if let Some(old) = State::load(&options.state_dir)? {
        if crate::state::owner_alive(&old) {
            bail!(
                "a mesh is already up (ferry up, pid {}); run `ferry down` first",
                old.pid
            );
        }
        println!("removing the leftovers of an earlier run");
        crate::state::teardown(&old, &options.state_dir);
    }
    if bridge::exists(&options.bridge) {
        bail!(
            "link {} exists but no state records it; remove it with `ip link del {}`",
            options.bridge,
            options.bridge
        );
    }
    std::fs::create_dir_all(options.state_dir.join("logs"))
        .with_context(|| format!("creating {}", options.state_dir.display()))?;
    let gateway = options.gateway();

    // The mesh, loaded once here; the control plane serves this same one.
    let plane_options = PlaneOptions {
        config_dir: options.dir.clone(),
        grpc: SocketAddr::from((gateway, 0)),
        monitoring: Some(SocketAddr::from((gateway, 0))),
        pod_network: options.pod_network,
        ..PlaneOptions::default()
    };
    let vips = VipRange {
        base: options.service_network.0,
        prefix: options.service_network.1,
    };
    let mesh = Arc::new(Mesh::with_vip_range(plane_options, vips));
    let loaded = load(&options.dir).await;
    for d in &loaded.diagnostics {
        eprintln!("{d}");
    }
    mesh.apply(loaded);
    mesh.set_readiness(BTreeMap::new());

    let mut guard = Guard {
        dir: options.state_dir.clone(),
        armed: true,
    };
    let mut state = State {
        pid: std::process::id(),
        dir: options.dir.clone(),
        bridge: options.bridge.clone(),
        ..State::default()
    };
    state.save(&options.state_dir)?;
    let progress = Progress::new();
    progress.line(&format!(
        "bridge {} ({gateway}/{}), pods from {}/{}, services from {}/{}",
        options.bridge,
        options.pod_network.1,
        options.pod_network.0,
        options.pod_network.1,
        options.service_network.0,
        options.service_network.1
    ));
    bridge::create(&options.bridge, gateway, options.pod_network.1).await?;

    let registry_source = {
        let mesh = mesh.clone();
        Arc::new(move || mesh.registry()) as crate::dns::server::RegistrySource
    };
    let dns = DnsServer::start(
        SocketAddr::from((gateway, options.dns_port)),
        registry_source,
    )
    .await?;
    state.dns = Some(dns.addr.to_string());

    let mut admin_task = None;
    let ca = if options.mtls {
        let ca = start_ca(&options, gateway).await?;
        state.secure = Some(ca.addr.to_string());
        state.ca_dir = Some(ca.dir.clone());
        let socket = crate::admin::socket_path(&options.state_dir);
        let listener = crate::admin::bind(&socket)?;
        admin_task = Some(tokio::spawn(crate::admin::serve(
            listener,
            ca.admin.clone(),
        )));
        state.admin_socket = Some(socket);
        Some(ca)
    } else {
        None
    };
    let (secure, tokens, identity) = match ca {
        Some(ca) => {
            let identity = MeshIdentity {
                ca_addr: ca.addr.to_string(),
                server_name: ferry_control::ca::server::default_serving_names()
                    .first()
                    .cloned()
                    .unwrap_or_default(),
                root_cert: ca.dir.join(ferry_control::ca::store::ROOT_FILE),
                token_dir: options.state_dir.join(TOKEN_DIR),
                cert_ttl: options.cert_ttl,
            };
            (Some(ca.port), Some(ca.tokens), Some(identity))
        }
        None => (None, None, None),
    };

    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let plane_task = tokio::spawn(plane::serve_with(
        mesh.clone(),
        secure,
        async {
            let _ = stop_rx.await;
        },
        move |bound| {
            let _ = bound_tx.send(bound);
        },
    ));
    let bound = match bound_rx.await {
        Ok(b) => b,
        Err(_) => match plane_task.await {
            Ok(Err(e)) => bail!("the control plane did not start: {e}"),
            _ => bail!("the control plane did not start"),
        },
    };
    let control_plane = bound.grpc.to_string();
    state.control_plane = Some(control_plane.clone());
    state.monitoring = bound.monitoring.map(|a| a.to_string());
    progress.line(&format!(
        "control plane on {control_plane} (monitoring http://{}), cluster DNS on {}",
        state.monitoring.as_deref().unwrap_or("-"),
        dns.addr
    ));
    if let (Some(addr), Some(dir)) = (bound.secure, &state.ca_dir) {
        progress.line(&format!(
            "mutual TLS on: CA and configuration stream on {addr} (TLS), root {} (roll it with `ferry ca rollover`)",
            dir.join(ferry_control::ca::store::ROOT_FILE).display()
        ));
    }

    let (registry_tx, registry_rx) = watch::channel::<Arc<Registry>>(mesh.registry());
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let ctx = lifecycle::Context {
        bridge: options.bridge.clone(),
        gateway,
        prefix: options.pod_network.1,
        state_dir: options.state_dir.clone(),
        cluster_domain: mesh.options().cluster_domain.clone(),
        prober: options.prober.clone(),
        registry: registry_rx,
        tokens,
    };
    let mut rt = Runtime {
        options: options.clone(),
        mesh: mesh.clone(),
        control_plane,
        identity,
        ctx,
        reports: reports_tx,
        pods: BTreeMap::new(),
        unplannable: BTreeMap::new(),
        state,
        progress,
        rejected: BTreeSet::new(),
        wanted: 0,
    };
    let mut generations = mesh.subscribe();
    rt.check_rejections();
    rt.reconcile();

    tokio::pin!(shutdown);
    let deadline = tokio::time::sleep(options.ready_timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = &mut deadline, if rt.progress.is_live() => {
                rt.progress.line("not every pod became ready in time:");
                let elapsed = started.elapsed();
                rt.progress.summary(&rt.state, elapsed);
            }
            changed = generations.changed() => {
                if changed.is_err() {
                    break;
                }
                let registry = mesh.registry();
                registry_tx.send_if_modified(|r| {
                    let differs = **r != *registry;
                    if differs {
                        *r = registry.clone();
                    }
                    differs
                });
                rt.check_rejections();
                rt.reconcile();
            }
            Some((namespace, name, report)) = reports.recv() => {
                let key = (namespace, name);
                match report {
                    Report::Status(status) => {
                        let Some(h) = rt.pods.get_mut(&key) else { continue };
                        let readiness_changed = h.status.ready != status.ready;
                        if !rt.progress.is_live() && readiness_changed && !h.terminating {
                            let text = if status.ready { "ready" } else { "not ready" };
                            rt.progress.line(&format!("{}/{}: {text}", key.0, key.1));
                        }
                        h.status = status;
                        rt.show(&key);
                        if readiness_changed {
                            rt.publish_readiness();
                        }
                        rt.save();
                        if readiness_changed {
                            rt.reconcile();
                        }
                    }
                    Report::Note(text) => rt.progress.line(&text),
                    Report::Gone => {
                        rt.pods.remove(&key);
                        rt.progress.forget(&key.0, &key.1);
                        if !rt.progress.is_live() {
                            rt.progress.line(&format!("{}/{}: deleted", key.0, key.1));
                        }
                        rt.publish_readiness();
                        rt.save();
                        rt.reconcile();
                    }
                }
                if rt.progress.is_live() && rt.settled() && !rt.pods.is_empty() {
                    rt.save();
                    let elapsed = started.elapsed();
                    rt.progress.summary(&rt.state, elapsed);
                }
            }
        }
    }

    rt.progress.stop();
    println!("tearing down");
    let grace = options.shutdown_grace;
    for h in rt.pods.values_mut() {
        h.terminating = true;
        let _ = h.stop.send(Some(grace));
    }
    let wait_all = async {
        while !rt.pods.is_empty() {
            match reports.recv().await {
                Some((ns, name, Report::Gone)) => {
                    rt.pods.remove(&(ns, name));
                }
                Some(_) => {}
                None => break,
            }
        }
    };
    let _ = tokio::time::timeout(grace + Duration::from_secs(10), wait_all).await;
    // Anything still recorded (a pod that did not finish in time) goes the hard way.
    for h in rt.pods.values() {
        process::kill_netns(&h.plan.netns);
        crate::netns::delete(&h.plan.netns, &h.plan.veth);
        crate::dns::files::remove(&h.plan.netns);
    }
    dns.stop().await;
    if let Some(task) = admin_task {
        task.abort();
    }
    if let Some(socket) = &rt.state.admin_socket {
        let _ = std::fs::remove_file(socket);
    }
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(2), plane_task).await;
    rt.state.pods.clear();
    crate::state::teardown(&rt.state, &options.state_dir);
    guard.armed = false;
    println!("mesh removed");
    Ok(())
}
