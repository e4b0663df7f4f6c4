//! Control-plane benchmark (`bench/control-plane/run.sh` runs it in release).
//!
//! A synthetic mesh (by default 1,000 services in 10 namespaces, 10 endpoints each, a
//! VirtualService and a DestinationRule with two subsets for 10 services per namespace,
//! PeerAuthentications per namespace and mesh-wide) is built in memory as a [`Registry`]
//! and served by the real [`Distribution`] over real gRPC on 127.0.0.1, through a
//! [`ConfigSource`] that does what `plane::Mesh` does (resolve the proxy against the pods,
//! then the real `compiler::compile`). 1,000 proxies (pod 0 of each service) connect with
//! the real `ferry_proxy::discovery::run`, each with its own `ArcSwap`.
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
//! applied its first snapshot; (b) per one-endpoint change: time until every affected proxy
//! applied the new version, proxies pushed, control-plane CPU; (c) VmRSS / VmHWM.

use arc_swap::ArcSwap;
use ferry_control::compiler::cache::Cache;
use ferry_control::compiler::compile;
use ferry_control::distribution::push::render;
use ferry_control::distribution::{ConfigSource, Distribution, Fingerprint, Prepared};
use ferry_control::registry::{
    EndpointEntry, Labels, PodEntry, Policies, PortEntry, ProxyIdentity, Registry, ServiceEntry,
};
use ferry_model::IstioResource;
use ferry_proto::config::ProxyConfig;
use ferry_proxy::config::Snapshot;
use ferry_proxy::discovery::{self, DiscoveryState, ProxyInfo};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, mpsc};
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
    /// Only compile this many configurations in a loop (for `perf`), then exit.
    compile_loop: usize,
    /// Compile every proxy with plain `compile` (what `plane::Mesh` does) instead of the
    /// shared [`Cache`].
    no_cache: bool,
    /// Proxies that ACK each snapshot on receipt instead of the real discovery client (which
    /// validates and applies it): the control plane's side alone.
    light: bool,
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
        compile_loop: 0,
        no_cache: false,
        light: false,
    };
    let mut clients = None;
    let mut clients_cpus = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--no-cache" {
            p.no_cache = true;
            continue;
        }
        if arg == "--light" {
            p.light = true;
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
            "--compile-loop" => p.compile_loop = n(),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        p.per_ns() <= 250 && p.endpoints <= 180,
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

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn resource<S: serde::de::DeserializeOwned>(
    ns: &str,
    name: &str,
    age: i64,
    spec: Value,
) -> IstioResource<S> {
    IstioResource {
        api_version: "networking.istio.io/v1".into(),
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            creation_timestamp: Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + age).expect("time"),
            )),
            ..Default::default()
        },
        spec: serde_json::from_value(spec).expect("benchmark spec"),
    }
}

/// The synthetic mesh.
fn mesh(p: &Params) -> Registry {
    let mut registry = Registry {
        cluster_domain: "cluster.local".into(),
        root_namespace: "istio-system".into(),
        ..Default::default()
    };
    registry
        .namespaces
        .insert("istio-system".into(), Labels::new());
    let mut policies = Policies::default();
    policies.peer_authentications.push(resource(
        "istio-system",
        "default",
        0,
        json!({"mtls": {"mode": "PERMISSIVE"}}),
    ));
    for i in 0..p.services {
        let (ns, s) = p.place(i);
        let nsn = ns_name(ns);
        let name = svc_name(s);
        if s == 0 {
            registry
                .namespaces
                .insert(nsn.clone(), labels(&[("istio-injection", "enabled")]));
            policies.peer_authentications.push(resource(
                &nsn,
                "default",
                1,
                json!({"mtls": {"mode": "STRICT"}}),
            ));
        }
        let mut endpoints = Vec::new();
        for e in 0..p.endpoints {
            let version = if e % 2 == 0 { "v1" } else { "v2" };
            let pod_labels = labels(&[
                ("app", &name),
                ("version", version),
                ("security.istio.io/tlsMode", "istio"),
            ]);
            let ip = endpoint_ip(ns, s, e);
            endpoints.push(EndpointEntry {
                ip,
                pod: pod_name(s, e),
                namespace: nsn.clone(),
                workload: name.clone(),
                service_account: name.clone(),
                labels: pod_labels.clone(),
                has_sidecar: true,
                ready: true,
                hostname: None,
            });
            registry.pods.push(PodEntry {
                name: pod_name(s, e),
                namespace: nsn.clone(),
                ip: Some(ip),
                labels: pod_labels,
                annotations: Labels::new(),
                workload: name.clone(),
                workload_kind: "Deployment".into(),
                service_account: name.clone(),
                has_sidecar: true,
                ready: true,
                hostname: None,
                subdomain: None,
            });
        }
        registry.services.push(ServiceEntry {
            name: name.clone(),
            namespace: nsn.clone(),
            fqdn: format!("{name}.{nsn}.svc.cluster.local"),
            cluster_ip: Some(IpAddr::V4(Ipv4Addr::new(10, 96, ns as u8, s as u8))),
            ports: vec![PortEntry {
                name: "http".into(),
                port: 80,
                target_port: 8080,
                app_protocol: None,
            }],
            endpoints,
            labels: labels(&[("app", &name)]),
            export_to: vec![".".into()],
        });
        if s < p.policies_per_ns {
            policies.virtual_services.push(resource(
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
            ));
            policies.destination_rules.push(resource(
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
            ));
        }
    }
    registry.policies = policies;
    registry
}

/// What `plane::Mesh` does, over a registry held in memory: the registry in force, a
/// generation counter, and per proxy the pod lookup followed by the real compiler.
struct BenchSource {
    registry: RwLock<Arc<Registry>>,
    /// Shares compilation between proxies (`None` with `--no-cache`: plain `compile`).
    cache: Option<Cache>,
    generation: watch::Sender<u64>,
    compiles: AtomicU64,
}

impl BenchSource {
    fn registry(&self) -> Arc<Registry> {
        self.registry.read().expect("registry lock").clone()
    }

    fn replace(&self, registry: Registry) {
        *self.registry.write().expect("registry lock") = Arc::new(registry);
        self.generation.send_modify(|g| *g += 1);
    }

    /// As `Mesh::resolve` (with the cache's indexes when there is one).
    fn resolve_with(
        cache: Option<&Cache>,
        registry: &Arc<Registry>,
        proxy: &ProxyIdentity,
    ) -> ProxyIdentity {
        match cache {
            Some(cache) => Self::identity_of(cache.find_pod(registry, proxy), proxy),
            None => Self::resolve(registry, proxy),
        }
    }

    /// As `Mesh::resolve`.
    fn resolve(registry: &Registry, proxy: &ProxyIdentity) -> ProxyIdentity {
        let pod = registry.pods.iter().find(|p| {
            (p.namespace == proxy.namespace && p.name == proxy.pod)
                || (proxy.ip.is_some() && p.ip == proxy.ip)
        });
        Self::identity_of(pod, proxy)
    }

    fn identity_of(pod: Option<&PodEntry>, proxy: &ProxyIdentity) -> ProxyIdentity {
        match pod {
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
}

impl ConfigSource for BenchSource {
    fn config_for(&self, proxy: &ProxyIdentity) -> Option<ProxyConfig> {
        let registry = self.registry();
        let identity = Self::resolve_with(self.cache.as_ref(), &registry, proxy);
        let config = match &self.cache {
            Some(cache) => cache.compile(&registry, &identity).config,
            None => compile(&registry, &identity).config,
        };
        self.compiles.fetch_add(1, Ordering::Relaxed);
        Some(config)
    }

    fn prepare(
        &self,
        proxy: &ProxyIdentity,
        held: Option<&Fingerprint>,
    ) -> Result<Prepared, serde_json::Error> {
        let Some(cache) = &self.cache else {
            return Ok(match self.config_for(proxy) {
                None => Prepared::Unknown,
                Some(config) => Prepared::Rendered {
                    rendered: render(&config)?,
                    fingerprint: None,
                },
            });
        };
        let registry = self.registry();
        let identity = Self::resolve_with(Some(cache), &registry, proxy);
        let prepared = cache.prepare(&registry, &identity, held);
        self.compiles.fetch_add(1, Ordering::Relaxed);
        prepared
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// The registry with endpoint `e` of service `s` in namespace `ns` (and its pod) moved to
/// another address, as when a pod is replaced.
fn move_endpoint(registry: &Registry, ns: usize, s: usize, e: usize, round: usize) -> Registry {
    let mut next = registry.clone();
    let (nsn, pod) = (ns_name(ns), pod_name(s, e));
    let ip = IpAddr::V4(Ipv4Addr::new(10, 1 + ns as u8, s as u8, 200 + round as u8));
    for svc in next.services.iter_mut().filter(|x| x.namespace == nsn) {
        for ep in svc.endpoints.iter_mut().filter(|x| x.pod == pod) {
            ep.ip = ip;
        }
    }
    for p in next
        .pods
        .iter_mut()
        .filter(|x| x.namespace == nsn && x.name == pod)
    {
        p.ip = Some(ip);
    }
    next
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
/// is received (decoded), without validating or applying it; reconnects after 50-150 ms.
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
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let mut client = ConfigDiscoveryClient::new(channel).max_decoding_message_size(64 << 20);
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
    while let Some(snapshot) = inbound.message().await.map_err(|e| e.to_string())? {
        state.received.fetch_add(1, Ordering::Relaxed);
        state.ready.send_replace(true);
        let ack = ProxyMessage {
            kind: Some(proxy_message::Kind::Ack(Ack {
                version: snapshot.version,
            })),
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
    let started = Instant::now();
    let registry = mesh(&p);
    let build_ms = started.elapsed().as_secs_f64() * 1e3;
    let (rss_registry, _) = rss_mb("self");
    println!(
        "mesh: {} namespaces, {} services x {} endpoints, {} pods, {} VirtualServices, {} DestinationRules, {} PeerAuthentications, {} proxies (built in {build_ms:.0} ms)",
        p.namespaces,
        registry.services.len(),
        p.endpoints,
        registry.pods.len(),
        registry.policies.virtual_services.len(),
        registry.policies.destination_rules.len(),
        registry.policies.peer_authentications.len(),
        proxies.len()
    );
    // One proxy's configuration, for scale.
    {
        let one = compile(
            &registry,
            &BenchSource::resolve(&registry, &identity(&proxies[0])),
        );
        assert!(one.warnings.is_empty(), "warnings: {:?}", one.warnings);
        let json = serde_json::to_vec(&one.config).expect("json");
        let t = Instant::now();
        let n = 50;
        for _ in 0..n {
            std::hint::black_box(compile(&registry, &identity(&proxies[0])));
        }
        let per = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
        // What a proxy does with it: validate (as the discovery client does), then build its
        // snapshot.
        let snapshot = ferry_proto::discovery::v1::ConfigSnapshot {
            version: "1-000000000000".into(),
            hash: String::new(),
            config_json: json.clone(),
        };
        let t = Instant::now();
        let n = 5;
        for _ in 0..n {
            let config = discovery::client::validate(&snapshot).expect("valid");
            std::hint::black_box(Snapshot::compile(config));
        }
        let apply_ms = t.elapsed().as_secs_f64() * 1e3 / f64::from(n);
        println!(
            "proxy side, per snapshot of that size: validate + Snapshot::compile {apply_ms:.1} ms"
        );
        println!(
            "one proxy's configuration: {} services, {} outbound ports, {} clusters, {} KB JSON; compile alone {per:.0} us",
            one.config.services.len(),
            one.config.outbound.len(),
            one.config.clusters.len(),
            json.len() / 1024
        );
    }

    if p.compile_loop > 0 {
        let t = Instant::now();
        for i in 0..p.compile_loop {
            let proxy = identity(&proxies[i % proxies.len()]);
            let config = compile(&registry, &BenchSource::resolve(&registry, &proxy)).config;
            std::hint::black_box(ferry_control::distribution::push::render(&config).ok());
        }
        println!(
            "compile + render: {:.0} us per proxy",
            t.elapsed().as_secs_f64() * 1e6 / p.compile_loop as f64
        );
        let registry = Arc::new(registry);
        let cache = Cache::new();
        let t = Instant::now();
        for i in 0..p.compile_loop {
            let proxy = identity(&proxies[i % proxies.len()]);
            let proxy = BenchSource::resolve(&registry, &proxy);
            std::hint::black_box(cache.prepare(&registry, &proxy, None).ok());
        }
        println!(
            "cached prepare (compile + render): {:.0} us per proxy",
            t.elapsed().as_secs_f64() * 1e6 / p.compile_loop as f64
        );
        return;
    }
    let source = Arc::new(BenchSource {
        cache: (!p.no_cache).then(Cache::new),
        registry: RwLock::new(Arc::new(registry)),
        generation: watch::channel(0).0,
        compiles: AtomicU64::new(0),
    });
    let mut metrics = prometheus_client::registry::Registry::default();
    let dyn_source: Arc<dyn ConfigSource> = source.clone();
    let distribution = Distribution::new(dyn_source, &mut metrics);
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
    let (child_rss, _) = rss_mb(&child_pid);
    println!(
        "(a) cold start: {} proxies connected; control plane compiled and sent every first snapshot after {cold_sent_ms:.0} ms; all applied by the proxies after {cold_ms:.0} ms (target < 2000 ms); control-plane CPU {} ms",
        proxies.len(),
        cold_cpu.as_millis()
    );
    println!(
        "(c) control-plane RSS after the full push: {rss:.0} MB (peak {hwm:.0} MB; mesh registry alone ~{rss_registry:.0} MB) (target < 300 MB); proxies' process {child_rss:.0} MB"
    );

    // (b) One-endpoint changes.
    let mut worst_ms: f64 = 0.0;
    let mut all_exact = true;
    let mut rows = Vec::new();
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
        let pushes_before: u64 = total_pushes();
        let compiles_before = source.compiles.load(Ordering::Relaxed);
        let cpu_before = cpu_time();
        let t_change = unix_us();
        let next = move_endpoint(&source.registry(), ns, s, e, round);
        source.replace(next);
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
        // Every stream has recompiled; then give stray pushes time to show up.
        let deadline = Instant::now() + Duration::from_secs(20);
        while source.compiles.load(Ordering::Relaxed) - compiles_before < proxies.len() as u64
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let all_compiled_ms = (unix_us().saturating_sub(t_change)) as f64 / 1e3;
        let settle = Instant::now() + Duration::from_millis(700);
        while Instant::now() < settle {
            if let Ok(Event::Applied { proxy, t }) = events.recv_timeout(Duration::from_millis(50))
            {
                applied.entry(proxy).or_insert(t);
            }
        }
        let cpu = cpu_time() - cpu_before;
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
        worst_ms = worst_ms.max(max);
        println!(
            "(b) change {}: {}/{}/{} endpoint {e} moved -> {} proxies pushed (expected exactly the {} of {}: {}); all sent after {sent_ms:.0} ms; applied by the proxies p50 {:.0} ms, all {max:.0} ms (target < 200 ms); every stream re-checked after {all_compiled_ms:.0} ms; control-plane CPU {} ms",
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
        if !exact {
            let extra: Vec<_> = got.difference(&expected).take(5).collect();
            let missing: Vec<_> = expected.difference(&got).take(5).collect();
            println!(
                "    extra {extra:?}, missing {missing:?}, applied {}",
                got.len()
            );
        }
        rows.push((max, pushes, sent_ms));
    }

    let mut sorted: Vec<f64> = rows.iter().map(|r| r.0).collect();
    sorted.sort_by(f64::total_cmp);
    let mut sent: Vec<f64> = rows.iter().map(|r| r.2).collect();
    sent.sort_by(f64::total_cmp);
    let worst_sent = sent.last().copied().unwrap_or(f64::NAN);
    println!();
    println!("SUMMARY");
    println!(
        "full push (cold, {} proxies), control plane done (all sent): {cold_sent_ms:.0} ms [target < 2000 ms: {}]",
        proxies.len(),
        if cold_sent_ms < 2000.0 {
            "met"
        } else {
            "MISSED"
        }
    );
    println!(
        "full push (cold, {} proxies), all applied by the proxies: {cold_ms:.0} ms [target < 2000 ms: {}]",
        proxies.len(),
        if cold_ms < 2000.0 { "met" } else { "MISSED" }
    );
    println!(
        "one-endpoint change, control plane done (all affected sent): median {:.0} ms, worst {worst_sent:.0} ms [target < 200 ms: {}]",
        percentile(&sent, 0.5),
        if worst_sent < 200.0 { "met" } else { "MISSED" }
    );
    println!(
        "one-endpoint change, all affected proxies applied: median {:.0} ms, worst {worst_ms:.0} ms over {} changes [target < 200 ms: {}]",
        percentile(&sorted, 0.5),
        rows.len(),
        if worst_ms < 200.0 { "met" } else { "MISSED" }
    );
    println!(
        "proxies pushed per change: {:?} (exactly the affected namespace's proxies: {})",
        rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        if all_exact { "yes" } else { "NO" }
    );
    println!(
        "control-plane RSS: {rss:.0} MB, peak {hwm:.0} MB [target < 300 MB: {}]",
        if hwm < 300.0 { "met" } else { "MISSED" }
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

fn identity(info: &ProxyInfo) -> ProxyIdentity {
    ProxyIdentity {
        pod: info.pod.clone(),
        namespace: info.namespace.clone(),
        workload: info.workload.clone(),
        service_account: info.service_account.clone(),
        ip: info.ip,
    }
}
