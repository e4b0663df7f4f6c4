//! The configuration stream over real gRPC on 127.0.0.1: real proxies' discovery clients
//! against the control plane's distribution server, with an in-test configuration source.

use arc_swap::ArcSwap;
use ferry_control::distribution::{ConfigSource, Distribution, ProxyStatus};
use ferry_control::registry::ProxyIdentity;
use ferry_proto::config::{ProxyConfig, Service, ServicePort};
use ferry_proxy::config::Snapshot;
use ferry_proxy::discovery::{self, DiscoveryState, ProxyInfo};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

/// Configurations by pod name; `bump` announces a change.
struct TestSource {
    configs: Mutex<HashMap<String, ProxyConfig>>,
    generation: watch::Sender<u64>,
}

impl TestSource {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            configs: Mutex::default(),
            generation: watch::channel(0).0,
        })
    }

    fn set(&self, pod: &str, config: ProxyConfig) {
        self.configs.lock().unwrap().insert(pod.into(), config);
    }

    fn bump(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

impl ConfigSource for TestSource {
    fn config_for(&self, proxy: &ProxyIdentity) -> Option<ProxyConfig> {
        self.configs.lock().unwrap().get(&proxy.pod).cloned()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// A configuration naming one service `service` on `port`.
fn config(pod: &str, service: &str, port: u16) -> ProxyConfig {
    let mut config = ProxyConfig::default();
    config.identity.pod = pod.into();
    config.identity.namespace = "default".into();
    config.services.push(Service {
        name: service.into(),
        namespace: "default".into(),
        ports: vec![ServicePort {
            name: "tcp".into(),
            port,
            ..Default::default()
        }],
        ..Default::default()
    });
    config
}

struct Server {
    distribution: Distribution,
    registry: Registry,
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

async fn server(source: &Arc<TestSource>) -> Server {
    let mut registry = Registry::default();
    let source: Arc<dyn ConfigSource> = source.clone();
    let distribution = Distribution::new(source, &mut registry);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(distribution.clone().serve(listener, async {
        let _ = stopped.await;
    }));
    Server {
        distribution,
        registry,
        addr,
        stop,
        task,
    }
}

/// A control plane on its own runtime, so that killing it ends every task and socket at
/// once, as a crash would.
struct Killable {
    runtime: tokio::runtime::Runtime,
    distribution: Distribution,
}

async fn killable(source: &Arc<TestSource>, addr: SocketAddr) -> (Killable, SocketAddr) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let source: Arc<dyn ConfigSource> = source.clone();
    let distribution = Distribution::new(source, &mut Registry::default());
    let (bound, bound_rx) = oneshot::channel();
    let serving = distribution.clone();
    runtime.spawn(async move {
        // tokio sets SO_REUSEADDR, so the port of a killed server can be bound again.
        let listener = TcpListener::bind(addr).await.unwrap();
        bound.send(listener.local_addr().unwrap()).unwrap();
        serving.serve(listener, std::future::pending()).await
    });
    let addr = bound_rx.await.unwrap();
    (
        Killable {
            runtime,
            distribution,
        },
        addr,
    )
}

struct Proxy {
    config: Arc<ArcSwap<Snapshot>>,
    state: DiscoveryState,
    _stop: oneshot::Sender<()>,
}

impl Proxy {
    fn service_name(&self) -> String {
        let snapshot = self.config.load();
        snapshot
            .config
            .services
            .first()
            .map(|s| s.name.clone())
            .unwrap_or_default()
    }
}

fn proxy(addr: SocketAddr, pod: &str) -> Proxy {
    let config = Arc::new(ArcSwap::from_pointee(Snapshot::compile(
        ProxyConfig::default(),
    )));
    let state = DiscoveryState::new();
    let (stop, stopped) = oneshot::channel::<()>();
    let info = ProxyInfo {
        pod: pod.into(),
        namespace: "default".into(),
        workload: pod.trim_end_matches(char::is_numeric).into(),
        service_account: "default".into(),
        ip: Some("10.0.0.1".parse().unwrap()),
    };
    let (c, s) = (config.clone(), state.clone());
    tokio::spawn(async move {
        discovery::run(&addr.to_string(), info, c, s, async {
            let _ = stopped.await;
        })
        .await
    });
    Proxy {
        config,
        state,
        _stop: stop,
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn status_of(distribution: &Distribution, pod: &str) -> Option<ProxyStatus> {
    distribution
        .status()
        .into_iter()
        .find(|s| s.identity.pod == pod)
}

fn acked_latest(distribution: &Distribution, pod: &str) -> bool {
    status_of(distribution, pod)
        .is_some_and(|s| s.last_sent.is_some() && s.last_acked == s.last_sent)
}

fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_proxy_gets_its_own_config_and_only_changed_ones_are_pushed() {
    let source = TestSource::new();
    source.set("a-0", config("a-0", "alpha", 80));
    source.set("b-0", config("b-0", "beta", 80));
    let server = server(&source).await;
    let a = proxy(server.addr, "a-0");
    let b = proxy(server.addr, "b-0");
    a.state.ready().await;
    b.state.ready().await;
    assert_eq!(a.service_name(), "alpha");
    assert_eq!(b.service_name(), "beta");
    assert_eq!(a.config.load().config.identity.pod, "a-0");
    let d = &server.distribution;
    eventually("both ACKed", || {
        acked_latest(d, "a-0") && acked_latest(d, "b-0")
    })
    .await;

    // (e) status: identity, versions sent and ACKed.
    let status = d.status();
    assert_eq!(status.len(), 2);
    let sa = status_of(d, "a-0").unwrap();
    assert_eq!(sa.identity.workload, "a-");
    assert_eq!(sa.identity.ip, Some("10.0.0.1".parse().unwrap()));
    assert_eq!(sa.pushes, 1);
    assert_eq!(sa.last_acked, a.state.held_version());
    assert!(sa.last_nack.is_none());

    // A change that affects only A reaches A and not B.
    source.set("a-0", config("a-0", "alpha2", 81));
    source.bump();
    eventually("A applied the change", || a.service_name() == "alpha2").await;
    eventually("A ACKed the change", || acked_latest(d, "a-0")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.state.applied(), 2);
    assert_eq!(b.state.applied(), 1, "B's configuration did not change");
    assert_eq!(status_of(d, "a-0").unwrap().pushes, 2);
    assert_eq!(status_of(d, "b-0").unwrap().pushes, 1);
    assert_ne!(
        status_of(d, "a-0").unwrap().last_acked,
        sa.last_acked,
        "a new version"
    );

    // A change that alters nothing pushes nothing.
    source.bump();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.state.applied() + b.state.applied(), 3);

    let metrics = encode(&server.registry);
    assert!(
        metrics.contains("ferry_control_connected_proxies 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferry_control_pushes_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferry_control_push_latency_seconds_count 3"),
        "{metrics}"
    );
    assert!(metrics.contains("ferry_control_nacks_total 0"), "{metrics}");

    // Graceful shutdown ends the streams and returns; the proxies keep their configuration.
    server.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .expect("the server stops promptly")
        .unwrap()
        .unwrap();
    assert_eq!(a.service_name(), "alpha2");
    assert_eq!(b.service_name(), "beta");
    assert!(a.state.has_config());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_changes_yields_one_push() {
    let source = TestSource::new();
    source.set("a-0", config("a-0", "v0", 80));
    let server = server(&source).await;
    let a = proxy(server.addr, "a-0");
    a.state.ready().await;
    assert_eq!(a.state.applied(), 1);

    let started = Instant::now();
    for i in 1..=20 {
        source.set("a-0", config("a-0", &format!("v{i}"), 80));
        source.bump();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let burst = started.elapsed();
    assert!(
        burst < Duration::from_millis(90),
        "the burst took {burst:?}"
    );
    eventually("the last change applied", || a.service_name() == "v20").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(a.state.applied(), 2, "one push for the whole burst");
    assert_eq!(status_of(&server.distribution, "a-0").unwrap().pushes, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_is_nacked_and_the_proxy_keeps_the_last_good_one() {
    let source = TestSource::new();
    source.set("a-0", config("a-0", "good", 80));
    let server = server(&source).await;
    let d = &server.distribution;
    let a = proxy(server.addr, "a-0");
    a.state.ready().await;
    eventually("ACKed", || acked_latest(d, "a-0")).await;
    let good = a.state.held_version();

    // Port 0 passes serde but not the proxy's checks.
    source.set("a-0", config("a-0", "bad", 0));
    source.bump();
    eventually("NACK recorded", || {
        status_of(d, "a-0").is_some_and(|s| s.last_nack.is_some())
    })
    .await;
    let status = status_of(d, "a-0").unwrap();
    let nack = status.last_nack.clone().unwrap();
    assert_eq!(Some(&nack.version), status.last_sent.as_ref());
    assert!(
        nack.reason
            .contains("services.0.ports.0.port: must be in 1..65535"),
        "{}",
        nack.reason
    );
    assert!(
        nack.reason
            .starts_with(&format!("snapshot {}:", nack.version)),
        "{}",
        nack.reason
    );
    assert_eq!(
        status.last_acked, good,
        "the ACKed version is still the good one"
    );
    assert_eq!(a.service_name(), "good");
    assert_eq!(a.state.held_version(), good);
    assert_eq!(a.state.rejected(), 1);
    assert!(a.state.has_config());
    assert!(encode(&server.registry).contains("ferry_control_nacks_total 1"));

    // A fixed configuration is applied and clears the NACK.
    source.set("a-0", config("a-0", "fixed", 80));
    source.bump();
    eventually("fixed applied", || a.service_name() == "fixed").await;
    eventually("fixed ACKed", || acked_latest(d, "a-0")).await;
    assert!(status_of(d, "a-0").unwrap().last_nack.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_keep_their_config_across_a_control_plane_restart_and_resync() {
    let source = TestSource::new();
    source.set("a-0", config("a-0", "first", 80));
    let (first, addr) = killable(&source, "127.0.0.1:0".parse().unwrap()).await;
    let a = proxy(addr, "a-0");
    a.state.ready().await;
    eventually("ACKed", || acked_latest(&first.distribution, "a-0")).await;
    let held = a.state.held_version();

    // Kill the control plane: the proxy keeps its configuration.
    first.runtime.shutdown_background();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.service_name(), "first");
    assert!(a.state.has_config());

    // Restart on the same port with the same configuration: the proxy reconnects and says
    // what it holds, so nothing is resent.
    let (second, again) = killable(&source, addr).await;
    assert_eq!(again, addr);
    eventually("reconnected", || {
        status_of(&second.distribution, "a-0").is_some()
    })
    .await;
    eventually("held version recognized", || {
        acked_latest(&second.distribution, "a-0")
    })
    .await;
    let status = status_of(&second.distribution, "a-0").unwrap();
    assert_eq!(status.pushes, 0, "an identical configuration is not resent");
    assert_eq!(status.last_acked, held);
    assert_eq!(a.state.applied(), 1);
    // The proxy counts the stream once the answer's headers arrive, just after the server
    // recorded it.
    eventually("the proxy sees its second stream", || {
        a.state.streams() == 2
    })
    .await;

    // Kill again, change the configuration meanwhile, restart: the proxy resyncs.
    second.runtime.shutdown_background();
    source.set("a-0", config("a-0", "second", 80));
    source.bump();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.service_name(), "first");
    let (third, _) = killable(&source, addr).await;
    eventually("resynced", || a.service_name() == "second").await;
    eventually("ACKed after resync", || {
        acked_latest(&third.distribution, "a-0")
    })
    .await;
    assert_eq!(status_of(&third.distribution, "a-0").unwrap().pushes, 1);
    assert_eq!(a.state.applied(), 2);
    third.runtime.shutdown_background();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_started_before_the_control_plane_serves_its_static_config_until_it_connects() {
    // Reserve a port, then free it: nothing listens there yet.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let source = TestSource::new();
    source.set("a-0", config("a-0", "late", 80));
    let a = proxy(addr, "a-0");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!a.state.has_config());
    assert_eq!(a.service_name(), "", "the static (empty) configuration");
    let (cp, _) = killable(&source, addr).await;
    tokio::time::timeout(Duration::from_secs(10), a.state.ready())
        .await
        .expect("connected with backoff");
    assert_eq!(a.service_name(), "late");
    cp.runtime.shutdown_background();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_of_many_chunks_arrives_whole_and_is_acked_once() {
    use ferry_proto::config::Endpoint;
    use ferry_proto::discovery::CHUNK_BYTES;
    // Enough services and endpoints for a configuration of many chunks.
    let big = |pod: &str, generation: usize| {
        let mut c = config(pod, "first", 80);
        for i in 0..300 {
            c.services.push(Service {
                name: format!("svc-{generation}-{i}"),
                namespace: "default".into(),
                ports: vec![ServicePort {
                    name: "http".into(),
                    port: 80,
                    ..Default::default()
                }],
                endpoints: (0..4u8)
                    .map(|e| Endpoint {
                        ip: std::net::IpAddr::from([10, 1, (i % 250) as u8, e]),
                        pod: format!("svc-{i}-{e}"),
                        workload: format!("svc-{i}"),
                        namespace: None,
                        service_account: "default".into(),
                        labels: [("app".to_string(), format!("svc-{i}"))].into(),
                        has_sidecar: true,
                        ready: true,
                    })
                    .collect(),
                ..Default::default()
            });
        }
        c
    };
    let source = TestSource::new();
    let first = big("a-0", 1);
    let size = serde_json::to_vec(&first).unwrap().len();
    assert!(size > 8 * CHUNK_BYTES, "{size} bytes is not many chunks");
    source.set("a-0", first.clone());
    let server = server(&source).await;
    let a = proxy(server.addr, "a-0");
    a.state.ready().await;
    let held = |p: &Proxy| {
        let mut c = p.config.load().config.clone();
        c.version.clear();
        c
    };
    assert_eq!(held(&a), first);
    let d = &server.distribution;
    eventually("ACKed", || acked_latest(d, "a-0")).await;

    let second = big("a-0", 2);
    source.set("a-0", second.clone());
    source.bump();
    eventually("the second applied", || held(&a) == second).await;
    eventually("ACKed again", || acked_latest(d, "a-0")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!((a.state.applied(), a.state.rejected()), (2, 0));
    assert_eq!(status_of(d, "a-0").unwrap().pushes, 2);
}
