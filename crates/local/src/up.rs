//! `ferry up`: the whole run. Leftovers of an earlier run are removed, the manifest
//! directory is loaded into a store exactly as the control plane loads it (same pod IPs,
//! same service VIPs), the bridge is created, the control plane starts in process on the
//! bridge address, then every pod is created and started concurrently: namespace and veth,
//! names, init containers (the redirect rules), the proxy as UID 1337, readiness of the
//! proxy, then the application. Until `shutdown` resolves, readiness is tracked in the state
//! file; then (and on any error or panic, through a drop guard) everything is removed.

use crate::pod::PodPlan;
use crate::process::Proc;
use crate::state::{ContainerState, PodState, State};
use crate::{bridge, dns, netns, process};
use anyhow::{Context, bail};
use ferry_control::plane::{self, PlaneOptions};
use ferry_control::registry::Registry;
use ferry_control::source::{FileSource, MeshPod};
use ferry_control::store::Store;
use std::collections::BTreeSet;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How `ferry up` runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The manifest directory.
    pub dir: PathBuf,
    /// Pod network; the bridge takes the first host address, pods the following ones.
    pub pod_network: (Ipv4Addr, u8),
    /// Bridge name.
    pub bridge: String,
    /// Directory of the state file and the logs.
    pub state_dir: PathBuf,
    /// The `ferry` binary Ferry's own containers run.
    pub ferry: PathBuf,
    /// How long a pod may take to become ready before it is reported as failed.
    pub ready_timeout: Duration,
}

impl Options {
    /// Defaults for a manifest directory: 198.18.0.0/16, `ferry0`, `/run/ferry`, this binary.
    pub fn new(dir: PathBuf, ferry: PathBuf) -> Self {
        Options {
            dir,
            pod_network: (Ipv4Addr::new(198, 18, 0, 0), 16),
            bridge: bridge::DEFAULT_NAME.into(),
            state_dir: PathBuf::from(crate::state::DEFAULT_DIR),
            ferry,
            ready_timeout: Duration::from_secs(30),
        }
    }

    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.pod_network.0) + 1)
    }
}

/// The store as the control plane builds it: the same pod addresses (first free address
/// from network + 2, in pod order) and service VIPs.
pub fn load_store(dir: &Path, network: (Ipv4Addr, u8)) -> (Store, Vec<String>) {
    let loaded = FileSource::load(dir);
    let diagnostics = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
    let mut store = Store::default();
    store.apply(loaded.update);
    let (base, prefix) = network;
    let used: BTreeSet<IpAddr> = store.assigned_ips().values().copied().collect();
    let mut next = u32::from(base) + 2;
    let last = u32::from(base) | (u32::MAX >> prefix.min(32));
    store.assign_ips(|_pod| {
        while next < last {
            let ip = IpAddr::V4(Ipv4Addr::from(next));
            next += 1;
            if !used.contains(&ip) {
                return Some(ip);
            }
        }
        None
    });
    (store, diagnostics)
}

/// Everything made so far; removed on drop.
struct Made {
    dir: PathBuf,
    state: State,
    procs: Vec<Vec<Proc>>,
}

impl Made {
    fn save(&self) {
        if let Err(e) = self.state.save(&self.dir) {
            eprintln!("warning: cannot write the state file: {e:#}");
        }
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        for procs in &mut self.procs {
            for p in procs.iter_mut() {
                process::signal_group(p.pid, libc::SIGKILL);
                let _ = p.child.start_kill();
            }
        }
        crate::state::teardown(&self.state, &self.dir);
    }
}

fn log_path(dir: &Path, plan: &PodPlan, container: &str) -> PathBuf {
    dir.join("logs")
        .join(format!("{}_{}_{container}.log", plan.namespace, plan.name))
}

async fn http_ok(addr: SocketAddr, path: &str) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).await.ok()?;
        Some(buf[..n].starts_with(b"HTTP/1.1 200") || buf[..n].starts_with(b"HTTP/1.0 200"))
    };
    tokio::time::timeout(Duration::from_millis(500), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

async fn proxy_ready(ip: Ipv4Addr) -> bool {
    http_ok(SocketAddr::from((ip, 15021)), "/healthz/ready").await
}

/// Creates one pod and starts its processes in native-sidecar order.
async fn start_pod(
    plan: &PodPlan,
    options: &Options,
    registry: &Registry,
    procs: &mut Vec<Proc>,
) -> anyhow::Result<()> {
    let (_, prefix) = options.pod_network;
    netns::create(&netns::Attachment {
        netns: &plan.netns,
        veth: &plan.veth,
        bridge: &options.bridge,
        ip: plan.ip,
        prefix,
        gateway: options.gateway(),
    })
    .await?;
    let hosts = dns::hosts(registry, &plan.namespace, &plan.name, IpAddr::V4(plan.ip));
    let resolv = dns::resolv_conf(&plan.namespace, &registry.cluster_domain);
    dns::write(&plan.netns, &hosts, &resolv).context("writing the pod's /etc/netns files")?;
    for c in &plan.init {
        process::run_to_end(&plan.netns, c, &log_path(&options.state_dir, plan, &c.name)).await?;
    }
    if let Some(proxy) = &plan.proxy {
        let log = log_path(&options.state_dir, plan, &proxy.name);
        let mut p = process::spawn(&plan.netns, proxy, &log)?;
        let deadline = Instant::now() + options.ready_timeout;
        loop {
            if proxy_ready(plan.ip).await {
                break;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                bail!("the proxy exited ({status}): {}", text.trim());
            }
            if Instant::now() > deadline {
                let _ = p.child.start_kill();
                bail!("the proxy was not ready within {:?}", options.ready_timeout);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        procs.push(p);
    }
    for c in &plan.apps {
        let log = log_path(&options.state_dir, plan, &c.name);
        procs.push(process::spawn(&plan.netns, c, &log)?);
    }
    Ok(())
}

/// Whether a started pod is ready: every process running, the proxy ready, and every app
/// container that declares ports listening on the first one.
async fn pod_ready(plan: &PodPlan, procs: &mut [Proc]) -> bool {
    if procs.is_empty() {
        return false;
    }
    for p in procs.iter_mut() {
        if !matches!(p.child.try_wait(), Ok(None)) {
            return false;
        }
    }
    for (c, p) in plan
        .apps
        .iter()
        .zip(procs.iter().skip(usize::from(plan.proxy.is_some())))
    {
        if let Some(port) = c.ports.first()
            && !process::listens(p.pid, *port)
        {
            return false;
        }
    }
    plan.proxy.is_none() || proxy_ready(plan.ip).await
}

fn pod_state(plan: &PodPlan, options: &Options) -> PodState {
    let names = plan
        .init
        .iter()
        .chain(plan.proxy.iter())
        .chain(plan.apps.iter());
    PodState {
        name: plan.name.clone(),
        namespace: plan.namespace.clone(),
        netns: plan.netns.clone(),
        veth: plan.veth.clone(),
        ip: plan.ip.to_string(),
        sidecar: plan.proxy.is_some(),
        ready: false,
        error: None,
        metrics_url: plan.metrics_url(),
        containers: names
            .map(|c| ContainerState {
                name: c.name.clone(),
                pid: None,
                log: log_path(&options.state_dir, plan, &c.name),
            })
            .collect(),
    }
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
    std::fs::create_dir_all(options.state_dir.join("logs"))?;
    let started = Instant::now();
    let (store, diagnostics) = load_store(&options.dir, options.pod_network);
    for d in diagnostics {
        eprintln!("{d}");
    }
    let registry = store.registry("cluster.local", "istio-system");
    let mesh_pods: Vec<MeshPod> = store.pods();
    let gateway = options.gateway();
    let mut made = Made {
        dir: options.state_dir.clone(),
        state: State {
            pid: std::process::id(),
            dir: options.dir.clone(),
            bridge: options.bridge.clone(),
            ..State::default()
        },
        procs: Vec::new(),
    };
    made.save();
    bridge::create(&options.bridge, gateway, options.pod_network.1).await?;

    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let plane_options = PlaneOptions {
        config_dir: options.dir.clone(),
        grpc: SocketAddr::from((gateway, 0)),
        monitoring: Some(SocketAddr::from((gateway, 0))),
        pod_network: options.pod_network,
        ..PlaneOptions::default()
    };
    let plane_task = tokio::spawn(plane::run(
        plane_options,
        async {
            let _ = stop_rx.await;
        },
        move |bound| {
            let _ = bound_tx.send(bound);
        },
    ));
    let bound = bound_rx.await.context("the control plane did not start")?;
    let control_plane = bound.grpc.to_string();
    made.state.control_plane = Some(control_plane.clone());
    made.state.monitoring = bound.monitoring.map(|a| a.to_string());
    println!("control plane on {control_plane}");

    let mut plans = Vec::new();
    for mp in &mesh_pods {
        match PodPlan::new(mp, &options.ferry, &control_plane, gateway) {
            Ok(plan) => plans.push(plan),
            Err(e) => eprintln!("skipping a pod: {e:#}"),
        }
    }
    made.state.pods = plans.iter().map(|p| pod_state(p, &options)).collect();
    made.save();

    let starts = plans.iter().map(|plan| {
        let (options, registry) = (&options, &registry);
        async move {
            let mut procs = Vec::new();
            let result = start_pod(plan, options, registry, &mut procs).await;
            (procs, result)
        }
    });
    let results = futures_util::future::join_all(starts).await;
    for (i, (procs, result)) in results.into_iter().enumerate() {
        let pod = &mut made.state.pods[i];
        if let Err(e) = result {
            eprintln!("pod {}/{} failed: {e:#}", pod.namespace, pod.name);
            pod.error = Some(format!("{e:#}"));
        }
        for c in &mut pod.containers {
            c.pid = procs.iter().find(|p| p.name == c.name).map(|p| p.pid);
        }
        made.procs.push(procs);
    }
    made.save();

    tokio::pin!(shutdown);
    let mut summary_shown = false;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => {}
        }
        let mut changed = false;
        for (i, plan) in plans.iter().enumerate() {
            let ready = pod_ready(plan, &mut made.procs[i]).await;
            let pod = &mut made.state.pods[i];
            if pod.ready != ready {
                pod.ready = ready;
                changed = true;
                println!(
                    "{}/{} {} ({})",
                    pod.namespace,
                    pod.name,
                    if ready { "ready" } else { "not ready" },
                    pod.ip
                );
            }
        }
        if changed {
            made.save();
        }
        if !summary_shown && made.state.pods.iter().all(|p| p.ready) {
            summary_shown = true;
            println!(
                "all {} pods ready in {:.2?}\n{}",
                made.state.pods.len(),
                started.elapsed(),
                crate::state::table(&made.state)
            );
        }
    }
    println!("tearing down");
    let _ = stop_tx.send(());
    drop(made);
    let _ = tokio::time::timeout(Duration::from_secs(2), plane_task).await;
    Ok(())
}
