//! Control-plane benchmark (`bench/control-plane/run.sh` runs it in release).
//!
//! A synthetic mesh (by default 1,000 services in 10 namespaces, 10 pods each, a
//! VirtualService and a DestinationRule with two subsets for 10 services per namespace,
//! PeerAuthentications per namespace and mesh-wide) is built as the objects a Kubernetes API
//! server would hand the `--kube` source: Namespaces (labelled for injection), Services with
//! selectors, 10,000 Pods with their addresses, and the Istio resources. They go through
//! what `ferry control-plane` runs: [`Mesh::apply`] (the store; the registry brought up to
//! date in place, pods injected, endpoints from the selectors), the compile cache, and the real
//! [`Distribution`] over real gRPC on 127.0.0.1. 1,000 proxies (pod 0 of each service)
//! connect; by default the real `ferry_proxy::discovery::run`, each with its own `ArcSwap`.
//!
//! The proxies run in a child process (this binary with `--clients`), so that the RSS
//! measured is the control plane's alone; the two processes share the machine's cores and
//! talk over loopback only. The child reports, for each proxy, when it applied a snapshot.
//!
//! Every service and policy is exported to its own namespace only (`exportTo: ["."]`), so a
//! change to one endpoint affects exactly the proxies of that namespace; the benchmark
//! asserts that exactly those (and no other) were pushed.
//!
//! Measured: (a) cold start: from the moment the proxies start connecting until every one has
//! applied its first snapshot; (b) per one-endpoint change (a pod's `status.podIP` changes,
//! and the source hands `Mesh::apply` an update holding that pod alone, as the `--kube`
//! source does after its own debounce): time in `Mesh::apply`, time until every affected
//! proxy was sent and applied the new version, proxies pushed, control-plane CPU; (c) VmRSS /
//! VmHWM, and the bytes of live allocations (counted by this binary's allocator) at their
//! highest in each phase. Like the `--kube` source, the benchmark keeps no copy of the
//! objects once it has handed them to `Mesh::apply`.

/// The allocator of the `ferry` binary (see crates/cli/src/main.rs), counting the bytes
/// it hands out so that the benchmark can tell live data from memory the allocator keeps.
#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes allocated and not yet freed, and the most there were since [`reset_heap_peak`].
static HEAP_LIVE: AtomicUsize = AtomicUsize::new(0);
static HEAP_PEAK: AtomicUsize = AtomicUsize::new(0);

/// mimalloc, with [`HEAP_LIVE`] and [`HEAP_PEAK`] kept up to date.
struct Counting;

impl Counting {
    fn grew(by: usize) {
        let live = HEAP_LIVE.fetch_add(by, Ordering::Relaxed) + by;
        HEAP_PEAK.fetch_max(live, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed on to mimalloc unchanged; only counters are updated.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's contract is mimalloc's.
        let p = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: as for `alloc`.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
        HEAP_LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new) };
        if !p.is_null() {
            HEAP_LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            Self::grew(new);
        }
        p
    }
}

use arc_swap::ArcSwap;
use ferry_control::distribution::{ConfigSource, Distribution};
use ferry_control::plane::{Mesh, PlaneOptions};
use ferry_control::registry::ProxyIdentity;
use ferry_control::registry::testing::resource;
use ferry_control::source::Loaded;
use ferry_control::source::kube::SOURCE_NAME;
use ferry_control::store::{Entry, Kind, Object, ObjectKey, SourceUpdate};
use ferry_proto::config::ProxyConfig;
use ferry_proxy::config::Snapshot;
use ferry_proxy::discovery::{self, DiscoveryState, ProxyInfo};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Size of the synthetic mesh.
#[derive(Debug, Clone, Copy)]
struct Params {
    namespaces: usize,
    services: usize,
    endpoints: usize,
    proxies: usize,
    /// Services per namespace with a VirtualService and a DestinationRule.
    policies_per_ns: usize,
    changes: usize,
    /// Proxies that ACK each snapshot once received (reassembled) instead of the real
    /// discovery client (which validates and applies it): the control plane's side alone.
    light: bool,
    /// No proxies and no gRPC: only the control plane's work for the cold start and each
    /// change (`Mesh::apply`, then preparing every proxy's configuration), for profiling.
    in_process: bool,
}

impl Params {
    fn per_ns(&self) -> usize {
        self.services.div_ceil(self.namespaces)
    }

    fn args(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if self.light {
            flags.push("--light".to_string());
        }
        flags.extend([
            format!("--namespaces={}", self.namespaces),
            format!("--services={}", self.services),
            format!("--endpoints={}", self.endpoints),
            format!("--proxies={}", self.proxies),
            format!("--policies={}", self.policies_per_ns),
            format!("--changes={}", self.changes),
        ]);
        flags
    }

    /// (namespace index, service index in it) of service number `i`.
    fn place(&self, i: usize) -> (usize, usize) {
        (i / self.per_ns(), i % self.per_ns())
    }

    /// The proxies: pod 0 of services 0..proxies, spread over the namespaces.
    fn proxies(&self) -> Vec<ProxyInfo> {
        // Take services round-robin over namespaces so that any `--proxies` spreads evenly.
        let mut order: Vec<usize> = (0..self.services).collect();
        order.sort_by_key(|&i| {
            let (ns, s) = self.place(i);
            (s, ns)
        });
        order
            .into_iter()
            .take(self.proxies)
            .map(|i| {
                let (ns, s) = self.place(i);
                ProxyInfo {
                    pod: pod_name(s, 0),
                    namespace: ns_name(ns),
                    workload: svc_name(s),
                    service_account: svc_name(s),
                    ip: Some(endpoint_ip(ns, s, 0)),
                }
            })
            .collect()
    }
}

fn parse_args() -> (Params, Option<String>, Option<String>) {
    let mut p = Params {
        namespaces: 10,
        services: 1000,
        endpoints: 10,
        proxies: 1000,
        policies_per_ns: 10,
        changes: 5,
        light: false,
        in_process: false,
    };
    let mut clients = None;
    let mut clients_cpus = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--light" {
            p.light = true;
            continue;
        }
        if arg == "--in-process" {
            p.in_process = true;
            continue;
        }
        let (key, value) = match arg.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => {
                let v = args.next().unwrap_or_default();
                (arg.clone(), v)
            }
        };
        let n = || {
            value
                .parse::<usize>()
                .unwrap_or_else(|_| panic!("{key}: not a number"))
        };
        match key.as_str() {
            "--namespaces" => p.namespaces = n(),
            "--services" => p.services = n(),
            "--endpoints" => p.endpoints = n(),
            "--proxies" => p.proxies = n(),
            "--policies" => p.policies_per_ns = n(),
            "--changes" => p.changes = n(),
            "--clients" => clients = Some(value),
            "--clients-cpus" => clients_cpus = Some(value),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        p.per_ns() <= 250 && p.endpoints <= 180 && p.namespaces <= 250 && p.changes <= 50,
        "addresses would overflow"
    );
    assert!(p.proxies <= p.services, "one proxy per service at most");
    (p, clients, clients_cpus)
}

fn ns_name(ns: usize) -> String {
    format!("ns-{ns}")
}
fn svc_name(s: usize) -> String {
    format!("svc-{s}")
}
fn pod_name(s: usize, e: usize) -> String {
    format!("svc-{s}-{e}")
}
fn endpoint_ip(ns: usize, s: usize, e: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 1 + ns as u8, s as u8, 10 + e as u8))
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

/// A store entry as the `--kube` source makes it: its origin names the object alone.
fn entry(kind: Kind, ns: &str, name: &str, object: Object) -> Entry {
    let key = ObjectKey::new(kind, ns, name);
    Entry {
        origin: format!("{SOURCE_NAME}:{key}"),
        key,
        line: 0,
        object,
    }
}

fn kube(kind: Kind, ns: &str, name: &str, value: Value) -> Entry {
    entry(kind, ns, name, Object::Kubernetes(Box::new(value)))
}

/// A pod of the Deployment `svc-<s>` as the API server holds it (before injection: the
/// store runs it through the injector, as for every pod of a labelled namespace).
fn pod_manifest(ns: usize, s: usize, e: usize, ip: IpAddr) -> Value {
    let (nsn, svc) = (ns_name(ns), svc_name(s));
    let version = if e.is_multiple_of(2) { "v1" } else { "v2" };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": pod_name(s, e), "namespace": nsn, "generateName": format!("{svc}-5f6b7c-"),
            "labels": {"app": svc, "version": version, "pod-template-hash": "5f6b7c"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": format!("{svc}-5f6b7c"), "uid": "1", "controller": true}]
        },
        "spec": {
            "serviceAccountName": svc,
            "containers": [{"name": "app", "image": "registry.example/app:1",
                "ports": [{"name": "http", "containerPort": 8080}]}]
        },
        "status": {"phase": "Running", "podIP": ip.to_string(),
            "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

/// The synthetic mesh: what the `--kube` source hands the store.
fn mesh_objects(p: &Params) -> Vec<Entry> {
    let mut out = vec![kube(
        Kind::Namespace,
        "",
        "istio-system",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}),
    )];
    out.push(entry(
        Kind::PeerAuthentication,
        "istio-system",
        "default",
        Object::PeerAuthentication(Box::new(resource(
            "istio-system",
            "default",
            0,
            json!({"mtls": {"mode": "PERMISSIVE"}}),
        ))),
    ));
    for i in 0..p.services {
        let (ns, s) = p.place(i);
        let nsn = ns_name(ns);
        let name = svc_name(s);
        if s == 0 {
            out.push(kube(
                Kind::Namespace,
                "",
                &nsn,
                json!({"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": nsn, "labels": {"istio-injection": "enabled"}}}),
            ));
            out.push(entry(
                Kind::PeerAuthentication,
                &nsn,
                "default",
                Object::PeerAuthentication(Box::new(resource(
                    &nsn,
                    "default",
                    1,
                    json!({"mtls": {"mode": "STRICT"}}),
                ))),
            ));
        }
        out.push(kube(
            Kind::Service,
            &nsn,
            &name,
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": nsn, "labels": {"app": name},
                    "annotations": {"networking.istio.io/exportTo": "."}},
                "spec": {"clusterIP": format!("10.96.{ns}.{s}"), "selector": {"app": name},
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
            }),
        ));
        for e in 0..p.endpoints {
            let pod = pod_name(s, e);
            let manifest = pod_manifest(ns, s, e, endpoint_ip(ns, s, e));
            out.push(kube(Kind::Pod, &nsn, &pod, manifest));
        }
        if s < p.policies_per_ns {
            let vs = resource(
                &nsn,
                &name,
                10 + i as i64,
                json!({
                    "hosts": [name],
                    "exportTo": ["."],
                    "http": [
                        {"match": [{"headers": {"x-canary": {"exact": "1"}}}],
                         "route": [{"destination": {"host": name, "subset": "v2"}}]},
                        {"route": [
                            {"destination": {"host": name, "subset": "v1"}, "weight": 90},
                            {"destination": {"host": name, "subset": "v2"}, "weight": 10}],
                         "timeout": "5s",
                         "retries": {"attempts": 3, "perTryTimeout": "2s"}}
                    ]
                }),
            );
            let dr = resource(
                &nsn,
                &name,
                10 + i as i64,
                json!({
                    "host": name,
                    "exportTo": ["."],
                    "trafficPolicy": {
                        "loadBalancer": {"simple": "ROUND_ROBIN"},
                        "connectionPool": {"tcp": {"maxConnections": 100}},
                        "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s"}
                    },
                    "subsets": [
                        {"name": "v1", "labels": {"version": "v1"}},
                        {"name": "v2", "labels": {"version": "v2"}}
                    ]
                }),
            );
            let (vs, dr) = (Box::new(vs), Box::new(dr));
            out.push(entry(
                Kind::VirtualService,
                &nsn,
                &name,
                Object::VirtualService(vs),
            ));
            out.push(entry(
                Kind::DestinationRule,
                &nsn,
                &name,
                Object::DestinationRule(dr),
            ));
        }
    }
    out
}

/// The source's update holding `entries` (handed over, as the `--kube` source hands over
/// the objects it validated): scoped to their origins, as the source's updates are.
fn update(entries: Vec<Entry>) -> Loaded {
    Loaded {
        update: SourceUpdate {
            source: SOURCE_NAME.to_string(),
            scope: Some(entries.iter().map(|e| e.origin.clone()).collect()),
            entries,
            ..SourceUpdate::default()
        },
        diagnostics: Vec::new(),
    }
}

/// Pod `e` of service `s` in namespace `ns` moved to another address (as when a pod is
/// replaced): what the source hands over for that change.
fn moved_endpoint(ns: usize, s: usize, e: usize, round: usize) -> Entry {
    let ip = IpAddr::V4(Ipv4Addr::new(10, 1 + ns as u8, s as u8, 200 + round as u8));
    kube(
        Kind::Pod,
        &ns_name(ns),
        &pod_name(s, e),
        pod_manifest(ns, s, e, ip),
    )
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f` on a worker of `runtime`, as the source's callback runs `Mesh::apply` in the
/// control plane; returns its result, how long it took there and the CPU time it used.
fn on_worker<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    f: impl FnOnce() -> T + Send + 'static,
) -> (T, Duration, Duration) {
    runtime.block_on(async move {
        tokio::spawn(async move {
            let (t, cpu) = (Instant::now(), thread_cpu());
            let out = f();
            (out, t.elapsed(), thread_cpu() - cpu)
        })
        .await
        .expect("the task ran")
    })
}

/// Bytes of live allocations, in MB (RSS minus this is memory freed but not returned to
/// the system, or the allocator's own overhead).
fn heap_mb() -> f64 {
    HEAP_LIVE.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0)
}

/// The most bytes live at once since the previous call, in MB; starts the next period.
fn reset_heap_peak() -> f64 {
    let live = HEAP_LIVE.load(Ordering::Relaxed);
    HEAP_PEAK.swap(live, Ordering::Relaxed) as f64 / (1024.0 * 1024.0)
}

/// `VmRSS` and `VmHWM` of a process, in MB.
fn rss_mb(pid: &str) -> (f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = text.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields after the command: state is index 0, utime 11, stime 12 (clock ticks, 100 Hz).
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

// ---------------------------------------------------------------------------------------
// The proxies (child process).

/// A light proxy's counters.
struct Light {
    received: AtomicU64,
    streams: AtomicU64,
    ready: watch::Sender<bool>,
}

/// One proxy of the child process.
#[derive(Clone)]
enum Proxy {
    Real(DiscoveryState),
    Light(Arc<Light>),
}

impl Proxy {
    fn applied(&self) -> u64 {
        match self {
            Proxy::Real(s) => s.applied(),
            Proxy::Light(l) => l.received.load(Ordering::Relaxed),
        }
    }
    fn rejected(&self) -> u64 {
        match self {
            Proxy::Real(s) => s.rejected(),
            Proxy::Light(_) => 0,
        }
    }
    fn streams(&self) -> u64 {
        match self {
            Proxy::Real(s) => s.streams(),
            Proxy::Light(l) => l.streams.load(Ordering::Relaxed),
        }
    }
    fn ready(&self) -> watch::Receiver<bool> {
        match self {
            Proxy::Real(s) => s.subscribe(),
            Proxy::Light(l) => l.ready.subscribe(),
        }
    }
}

/// A proxy that opens the stream like the real client and ACKs every snapshot as soon as it
/// is received (reassembled), without validating or applying it; reconnects after 50-150 ms.
async fn light_client(addr: &str, info: ProxyInfo, state: &Light) {
    loop {
        state.streams.fetch_add(1, Ordering::Relaxed);
        let _ = light_session(addr, &info, state).await;
        let jitter = u64::from(std::process::id() ^ (unix_us() as u32)) % 100;
        tokio::time::sleep(Duration::from_millis(50 + jitter)).await;
    }
}

async fn light_session(addr: &str, info: &ProxyInfo, state: &Light) -> Result<(), String> {
    use ferry_proto::discovery::v1::config_discovery_client::ConfigDiscoveryClient;
    use ferry_proto::discovery::v1::{Ack, Hello, ProxyMessage, proxy_message};
    use ferry_proto::discovery::{Completed, Reassembly};
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let mut client = ConfigDiscoveryClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let hello = ProxyMessage {
        kind: Some(proxy_message::Kind::Hello(Hello {
            pod: info.pod.clone(),
            namespace: info.namespace.clone(),
            workload: info.workload.clone(),
            service_account: info.service_account.clone(),
            ip: info.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            proxy_version: "bench".into(),
            held_version: String::new(),
        })),
    };
    let _ = tx.send(hello).await;
    let mut inbound = client
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let mut reassembly = Reassembly::new(64 << 20);
    while let Some(chunk) = inbound.message().await.map_err(|e| e.to_string())? {
        let version = match reassembly.push(chunk) {
            None => continue,
            Some(Completed::Snapshot(s)) => s.version,
            Some(Completed::Broken { version, .. }) => version,
        };
        state.received.fetch_add(1, Ordering::Relaxed);
        state.ready.send_replace(true);
        let ack = ProxyMessage {
            kind: Some(proxy_message::Kind::Ack(Ack { version })),
        };
        if tx.send(ack).await.is_err() {
            break;
        }
    }
    Ok(())
}

fn run_clients(p: Params, addr: String) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Until the parent says QUIT, or goes away.
    let (quit_tx, quit_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) if l.trim() == "QUIT" => break,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = quit_tx.send(());
    });
    runtime.block_on(async move {
        let mut quit_rx = quit_rx;
        let infos = p.proxies();
        let t0 = unix_us();
        let mut states = Vec::new();
        let mut stops = Vec::new();
        for info in infos {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let addr = addr.clone();
            if p.light {
                let state = Arc::new(Light {
                    received: AtomicU64::new(0),
                    streams: AtomicU64::new(0),
                    ready: watch::channel(false).0,
                });
                let s = state.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = light_client(&addr, info, &s) => {}
                        _ = stopped => {}
                    }
                });
                states.push(Proxy::Light(state));
            } else {
                let config = Arc::new(ArcSwap::from_pointee(Snapshot::compile(
                    ProxyConfig::default(),
                )));
                let state = DiscoveryState::new();
                let s = state.clone();
                tokio::spawn(async move {
                    discovery::run(&addr, info, config, s, async {
                        let _ = stopped.await;
                    })
                    .await
                });
                states.push(Proxy::Real(state));
            }
            stops.push(stop);
        }
        let mut ready_at = Vec::new();
        for s in &states {
            let mut ready = s.ready();
            tokio::select! {
                _ = ready.wait_for(|r| *r) => {}
                _ = &mut quit_rx => std::process::exit(2),
            }
            ready_at.push(unix_us());
        }
        // `ready()` of later proxies may have completed long before we looked: report the
        // applied-first times the poller below saw instead where it matters (the parent uses
        // the last READY time, which is exact for the slowest proxy within the poll step).
        let last = ready_at.iter().copied().max().unwrap_or(t0);
        println!("READY {t0} {last} {}", std::process::id());
        let mut out = std::io::stdout().lock();
        let _ = out.flush();
        drop(out);

        // Report every applied snapshot, every 2 ms.
        let states2 = states.clone();
        tokio::spawn(async move {
            let mut seen: Vec<u64> = states2.iter().map(Proxy::applied).collect();
            loop {
                tokio::time::sleep(Duration::from_millis(2)).await;
                let now = unix_us();
                let mut lines = String::new();
                for (i, s) in states2.iter().enumerate() {
                    let a = s.applied();
                    if a != seen[i] {
                        seen[i] = a;
                        lines.push_str(&format!("APPLIED {i} {a} {now}\n"));
                    }
                }
                if !lines.is_empty() {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(lines.as_bytes());
                    let _ = out.flush();
                }
            }
        });
        let _ = quit_rx.await;
        let rejected: u64 = states.iter().map(Proxy::rejected).sum();
        let streams: u64 = states.iter().map(Proxy::streams).sum();
        println!("BYE rejected={rejected} streams={streams}");
        drop(stops);
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
}

// ---------------------------------------------------------------------------------------
// The control plane (parent process).

enum Event {
    Ready { t0: u64, last: u64, pid: String },
    Applied { proxy: usize, t: u64 },
    Other(String),
}

fn identity(info: &ProxyInfo) -> ProxyIdentity {
    ProxyIdentity {
        pod: info.pod.clone(),
        namespace: info.namespace.clone(),
        workload: info.workload.clone(),
        service_account: info.service_account.clone(),
        ip: info.ip,
    }
}

/// Average time of `f` over `n` runs, in ms.
fn time_ms(n: u32, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() * 1e3 / f64::from(n)
}

/// One proxy's configuration, for scale, and what a proxy does with it.
fn describe_one(mesh: &Mesh, proxy: &ProxyIdentity) {
    let one = mesh.compile_for(proxy);
    assert!(one.warnings.is_empty(), "warnings: {:?}", one.warnings);
    let json = serde_json::to_vec(&one.config).expect("json");
    if let Some(path) = std::env::var_os("BENCH_DUMP_CONFIG") {
        std::fs::write(path, &json).expect("write the configuration");
    }
    let compile_ms = time_ms(20, || {
        std::hint::black_box(ferry_control::compiler::compile(&mesh.registry(), proxy));
    });
    println!(
        "one proxy's configuration: {} services, {} outbound ports, {} clusters, {} KB JSON; compiled without the cache in {compile_ms:.1} ms",
        one.config.services.len(),
        one.config.outbound.len(),
        one.config.clusters.len(),
        json.len() / 1024
    );
    // What the discovery client does with it: validate, then build its snapshot.
    let apply_ms = time_ms(5, || {
        let config = discovery::client::validate("1-000000000000", &json).expect("valid");
        std::hint::black_box(Snapshot::compile(config));
    });
    let parse_ms = time_ms(5, || {
        std::hint::black_box(serde_json::from_slice::<ProxyConfig>(&json).expect("json"));
    });
    let parsed: ProxyConfig = serde_json::from_slice(&json).expect("json");
    let snapshot_ms = time_ms(5, || {
        std::hint::black_box(Snapshot::compile(parsed.clone()));
    });
    let clone_ms = time_ms(5, || {
        std::hint::black_box(parsed.clone());
    });
    println!(
        "proxy side, per snapshot of that size: validate + Snapshot::compile {apply_ms:.1} ms (JSON parse {parse_ms:.1} ms, Snapshot::compile {:.1} ms)",
        snapshot_ms - clone_ms
    );
}

/// `--in-process`: the control plane's work alone, without gRPC.
fn in_process(
    p: &Params,
    runtime: &tokio::runtime::Runtime,
    mesh: &Arc<Mesh>,
    proxies: &[ProxyInfo],
) {
    use ferry_control::distribution::Prepared;
    let ids: Vec<ProxyIdentity> = proxies.iter().map(identity).collect();
    let prepare_all = |held: &mut Vec<Option<[u8; 32]>>| {
        let (t, cpu) = (Instant::now(), thread_cpu());
        let mut rendered = 0;
        for (id, held) in ids.iter().zip(held.iter_mut()) {
            match mesh.prepare(id, held.as_ref()).expect("prepare") {
                Prepared::Rendered { fingerprint, .. } => {
                    rendered += 1;
                    *held = fingerprint;
                }
                Prepared::Unchanged | Prepared::Unknown => {}
            }
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        (rendered, ms(t.elapsed()), ms(thread_cpu() - cpu))
    };
    // Where the store's time and memory go, on a store of our own.
    let (domain, root) = ("cluster.local", "istio-system");
    let h0 = heap_mb();
    let first = update(mesh_objects(p)).update;
    let h1 = heap_mb();
    let mut store = ferry_control::store::Store::default();
    store.apply(first);
    let h2 = heap_mb();
    let mut registry = ferry_control::registry::Registry::default();
    store.update_registry(&mut registry, domain, root);
    let h3 = heap_mb();
    println!(
        "heap: the objects as the source hands them over {:.0} MB; the store with its expanded pods {:.0} MB; the registry {:.0} MB",
        h1 - h0,
        h2 - h0,
        h3 - h2
    );
    for round in 0..3 {
        let next = update(vec![moved_endpoint(0, 1, 1, round)]).update;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (t, cpu) = (Instant::now(), thread_cpu());
        store.apply(next);
        let (t1, cpu1) = (t.elapsed(), thread_cpu() - cpu);
        let (t, cpu) = (Instant::now(), thread_cpu());
        let changes = store.update_registry(&mut registry, domain, root);
        let (t2, cpu2) = (t.elapsed(), thread_cpu() - cpu);
        let t = Instant::now();
        let whole = store.registry(domain, root);
        let t3 = t.elapsed();
        assert!(whole == registry, "the registry updated in place differs");
        drop(whole);
        println!(
            "store probe {round}: Store::apply {:.1} ms (CPU {:.1}), Store::update_registry {:.1} ms (CPU {:.1}; {} services and {} pods changed); the whole registry rebuilt instead {:.1} ms; {} pods",
            ms(t1),
            ms(cpu1),
            ms(t2),
            ms(cpu2),
            changes.services.len(),
            changes.pods.len(),
            ms(t3),
            registry.pods.len()
        );
    }
    drop(registry);
    drop(store);
    let mut held = vec![None; ids.len()];
    let (n, ms, cpu) = prepare_all(&mut held);
    println!(
        "cold: {n} configurations prepared in {ms:.0} ms (CPU {cpu:.0} ms); RSS {:.0} MB, live heap {:.0} MB",
        rss_mb("self").0,
        heap_mb()
    );
    for round in 0..p.changes {
        let (ns, s, e) = (
            (3 + round) % p.namespaces,
            (7 + round) % p.per_ns(),
            1 + round % (p.endpoints - 1).max(1),
        );
        let next = update(vec![moved_endpoint(ns, s, e, round)]);
        reset_heap_peak();
        let applier = mesh.clone();
        let (_, apply, apply_cpu) = on_worker(runtime, move || applier.apply(next));
        let heap_apply = reset_heap_peak();
        let (n, ms, cpu) = prepare_all(&mut held);
        println!(
            "change {}: Mesh::apply {:.1} ms (CPU {:.1} ms), then {n} of {} configurations changed, all prepared in {ms:.1} ms (CPU {cpu:.1} ms); RSS {:.0} MB (peak {:.0} MB), live heap {:.0} MB (at most {heap_apply:.0} MB in Mesh::apply, {:.0} MB preparing)",
            round + 1,
            apply.as_secs_f64() * 1e3,
            apply_cpu.as_secs_f64() * 1e3,
            ids.len(),
            rss_mb("self").0,
            rss_mb("self").1,
            heap_mb(),
            reset_heap_peak()
        );
    }
}

fn main() {
    let (p, clients, clients_cpus) = parse_args();
    if let Some(addr) = clients {
        run_clients(p, addr);
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let proxies = p.proxies();
    let heap_before = heap_mb();
    let entries = mesh_objects(&p);
    let source_copy = heap_mb() - heap_before;
    let count = |kind: Kind| entries.iter().filter(|e| e.key.kind == kind).count();
    println!(
        "mesh: {} namespaces, {} services x {} pods, {} pods, {} VirtualServices, {} DestinationRules, {} PeerAuthentications; {} proxies",
        p.namespaces,
        count(Kind::Service),
        p.endpoints,
        count(Kind::Pod),
        count(Kind::VirtualService),
        count(Kind::DestinationRule),
        count(Kind::PeerAuthentication),
        proxies.len()
    );
    let mesh = Arc::new(Mesh::new(PlaneOptions {
        kube: true,
        ..PlaneOptions::default()
    }));
    let objects = entries.len();
    let first = update(entries);
    reset_heap_peak();
    let applier = mesh.clone();
    let (_, cold_apply, _) = on_worker(&runtime, move || applier.apply(first));
    let (rss_mesh, _) = rss_mb("self");
    println!(
        "store and registry from {objects} objects: {:.0} ms (Mesh::apply); control-plane RSS then {rss_mesh:.0} MB (live heap {:.0} MB, at most {:.0} MB during Mesh::apply; the objects as the source handed them over: {source_copy:.0} MB)",
        cold_apply.as_secs_f64() * 1e3,
        heap_mb(),
        reset_heap_peak()
    );
    describe_one(&mesh, &identity(&proxies[0]));
    if p.in_process {
        in_process(&p, &runtime, &mesh, &proxies);
        return;
    }

    let mut metrics = prometheus_client::registry::Registry::default();
    let source: Arc<dyn ConfigSource> = mesh.clone();
    let distribution = Distribution::new(source, &mut metrics);
    let (addr, stop_server, server) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(distribution.clone().serve(listener, async {
            let _ = stopped.await;
        }));
        (addr, stop, task)
    });

    let exe = std::env::current_exe().expect("current exe");
    let mut command = match &clients_cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpus).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    let t_spawn = unix_us();
    let mut child = command
        .args(p.args())
        .arg(format!("--clients={addr}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the proxies' process");
    let child_out = child.stdout.take().expect("child stdout");
    let (tx, events) = mpsc::channel::<Event>();
    std::thread::spawn(move || {
        for line in BufReader::new(child_out).lines() {
            let Ok(line) = line else { break };
            let parts: Vec<&str> = line.split_whitespace().collect();
            let event = match parts.as_slice() {
                ["READY", t0, last, pid] => Event::Ready {
                    t0: t0.parse().unwrap_or_default(),
                    last: last.parse().unwrap_or_default(),
                    pid: pid.to_string(),
                },
                ["APPLIED", i, _count, t] => Event::Applied {
                    proxy: i.parse().unwrap_or(usize::MAX),
                    t: t.parse().unwrap_or_default(),
                },
                _ => Event::Other(line),
            };
            if tx.send(event).is_err() {
                break;
            }
        }
    });

    // (a) Cold start.
    let cpu0 = cpu_time();
    let total_pushes = || distribution.metrics().pushes.get();
    let mut cold_sent = None;
    let give_up = Instant::now() + Duration::from_secs(300);
    let (t0, last, child_pid) = loop {
        match events.recv_timeout(Duration::from_millis(5)) {
            Ok(Event::Ready { t0, last, pid }) => break (t0, last, pid),
            Ok(Event::Other(l)) => println!("proxies: {l}"),
            Ok(Event::Applied { .. }) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => panic!("the proxies' process went away: {e}"),
        }
        assert!(Instant::now() < give_up, "the proxies never became ready");
        if cold_sent.is_none() && total_pushes() >= proxies.len() as u64 {
            cold_sent = Some(unix_us().saturating_sub(t_spawn) as f64 / 1e3);
        }
    };
    let cold_ms = (last.saturating_sub(t0)) as f64 / 1e3;
    let cold_sent_ms = cold_sent.unwrap_or_else(|| unix_us().saturating_sub(t_spawn) as f64 / 1e3);
    let cold_cpu = cpu_time() - cpu0;
    // Every stream has ACKed what it was sent.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = distribution.status();
        let synced = status
            .iter()
            .filter(|s| s.last_sent.is_some() && s.last_sent == s.last_acked)
            .count();
        if status.len() == proxies.len() && synced == proxies.len() {
            break;
        }
        assert!(Instant::now() < deadline, "not all proxies ACKed: {synced}");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    let (rss, hwm) = rss_mb("self");
    let heap = heap_mb();
    let (child_rss, _) = rss_mb(&child_pid);
    println!(
        "(a) cold start: {} proxies connected; control plane compiled and sent every first snapshot after {cold_sent_ms:.0} ms; all applied by the proxies after {cold_ms:.0} ms (target < 2000 ms); control-plane CPU {} ms",
        proxies.len(),
        cold_cpu.as_millis()
    );
    println!(
        "(c) control-plane RSS after the full push: {rss:.0} MB (peak {hwm:.0} MB; live heap {heap:.0} MB, at most {:.0} MB during the push; mesh state alone ~{rss_mesh:.0} MB) (target < 300 MB); proxies' process {child_rss:.0} MB",
        reset_heap_peak()
    );

    // (b) One-endpoint changes.
    let mut rows = Vec::new();
    let mut all_exact = true;
    for round in 0..p.changes {
        let ns = (3 + round) % p.namespaces;
        let s = (7 + round) % p.per_ns();
        let e = 1 + round % (p.endpoints - 1).max(1); // never pod 0, which runs a proxy
        let expected: BTreeSet<usize> = proxies
            .iter()
            .enumerate()
            .filter(|(_, x)| x.namespace == ns_name(ns))
            .map(|(i, _)| i)
            .collect();
        // The source's update for the change, made before the clock starts (the source's
        // work, not the control plane's).
        let next = update(vec![moved_endpoint(ns, s, e, round)]);
        let pushes_before: u64 = total_pushes();
        let cpu_before = cpu_time();
        reset_heap_peak();
        let t_change = unix_us();
        let applier = mesh.clone();
        let (changed, apply_time, _) = on_worker(&runtime, move || applier.apply(next));
        let heap_apply = reset_heap_peak();
        assert!(changed, "the change was not seen");
        let apply_ms = apply_time.as_secs_f64() * 1e3;
        let mut applied: BTreeMap<usize, u64> = BTreeMap::new();
        let mut sent_ms = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        while (applied.len() < expected.len() || sent_ms.is_none()) && Instant::now() < deadline {
            match events.recv_timeout(Duration::from_millis(2)) {
                Ok(Event::Applied { proxy, t }) => {
                    applied.entry(proxy).or_insert(t);
                }
                Ok(Event::Other(l)) => println!("proxies: {l}"),
                _ => {}
            }
            if sent_ms.is_none() && total_pushes() - pushes_before >= expected.len() as u64 {
                sent_ms = Some(unix_us().saturating_sub(t_change) as f64 / 1e3);
            }
        }
        let sent_ms = sent_ms.unwrap_or(f64::NAN);
        // Give stray pushes time to show up.
        let settle = Instant::now() + Duration::from_millis(700);
        while Instant::now() < settle {
            if let Ok(Event::Applied { proxy, t }) = events.recv_timeout(Duration::from_millis(50))
            {
                applied.entry(proxy).or_insert(t);
            }
        }
        let cpu = cpu_time() - cpu_before;
        let heap_push = reset_heap_peak();
        let pushes: u64 = total_pushes() - pushes_before;
        let got: BTreeSet<usize> = applied.keys().copied().collect();
        let exact = got == expected && pushes == expected.len() as u64;
        all_exact &= exact;
        let mut lat: Vec<f64> = applied
            .values()
            .map(|t| t.saturating_sub(t_change) as f64 / 1e3)
            .collect();
        lat.sort_by(f64::total_cmp);
        let max = lat.last().copied().unwrap_or(f64::NAN);
        println!(
            "(b) change {}: {}/{}/{} moved -> Mesh::apply {apply_ms:.0} ms; {} proxies pushed (expected exactly the {} of {}: {}); all sent after {sent_ms:.0} ms; applied by the proxies p50 {:.0} ms, all {max:.0} ms (target < 200 ms); control-plane CPU {} ms",
            round + 1,
            ns_name(ns),
            svc_name(s),
            pod_name(s, e),
            pushes,
            expected.len(),
            ns_name(ns),
            if exact { "exact" } else { "MISMATCH" },
            percentile(&lat, 0.5),
            cpu.as_millis()
        );
        println!(
            "    live heap at most {heap_apply:.0} MB during Mesh::apply, {heap_push:.0} MB during the push, {:.0} MB after; RSS {:.0} MB (peak {:.0} MB)",
            heap_mb(),
            rss_mb("self").0,
            rss_mb("self").1
        );
        if !exact {
            let extra: Vec<_> = got.difference(&expected).take(5).collect();
            let missing: Vec<_> = expected.difference(&got).take(5).collect();
            println!(
                "    extra {extra:?}, missing {missing:?}, applied {}",
                got.len()
            );
        }
        rows.push((max, pushes, sent_ms, apply_ms));
    }
    let (rss_after, hwm_after) = rss_mb("self");
    let heap_after = heap_mb();

    let sorted = |f: fn(&(f64, u64, f64, f64)) -> f64| {
        let mut v: Vec<f64> = rows.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (applied, sent, apply) = (sorted(|r| r.0), sorted(|r| r.2), sorted(|r| r.3));
    let worst = |v: &[f64]| v.last().copied().unwrap_or(f64::NAN);
    let verdict = |ms: f64, target: f64| if ms < target { "met" } else { "MISSED" };
    println!();
    println!("SUMMARY");
    println!(
        "full push (cold, {} proxies), control plane done (all sent): {cold_sent_ms:.0} ms [target < 2000 ms: {}]",
        proxies.len(),
        verdict(cold_sent_ms, 2000.0)
    );
    println!(
        "full push (cold, {} proxies), all applied by the proxies: {cold_ms:.0} ms [target < 2000 ms: {}]",
        proxies.len(),
        verdict(cold_ms, 2000.0)
    );
    println!(
        "one-endpoint change, Mesh::apply (store + registry): median {:.0} ms, worst {:.0} ms",
        percentile(&apply, 0.5),
        worst(&apply)
    );
    println!(
        "one-endpoint change, control plane done (all affected sent): median {:.0} ms, worst {:.0} ms [target < 200 ms: {}]",
        percentile(&sent, 0.5),
        worst(&sent),
        verdict(worst(&sent), 200.0)
    );
    println!(
        "one-endpoint change, all affected proxies applied: median {:.0} ms, worst {:.0} ms over {} changes [target < 200 ms: {}]",
        percentile(&applied, 0.5),
        worst(&applied),
        rows.len(),
        verdict(worst(&applied), 200.0)
    );
    println!(
        "proxies pushed per change: {:?} (exactly the affected namespace's proxies: {})",
        rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        if all_exact { "yes" } else { "NO" }
    );
    println!(
        "control-plane RSS: {rss:.0} MB after the full push (live heap {heap:.0} MB), {rss_after:.0} MB after the changes (live heap {heap_after:.0} MB), peak {:.0} MB [target < 300 MB: {}]",
        hwm.max(hwm_after),
        verdict(hwm.max(hwm_after), 300.0)
    );

    if let Some(mut stdin) = child.stdin.take() {
        let _ = writeln!(stdin, "QUIT");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match events.recv_timeout(Duration::from_millis(200)) {
            Ok(Event::Other(l)) if l.starts_with("BYE") => {
                println!("proxies: {l}");
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            _ => {}
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = stop_server.send(());
    runtime.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    if !all_exact {
        std::process::exit(1);
    }
}
