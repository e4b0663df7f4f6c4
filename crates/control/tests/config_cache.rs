//! The proxy's configuration cache (`ferry proxy --config-cache`) with a real control plane
//! (the distribution server over gRPC on 127.0.0.1) and real proxies (`server::start`,
//! traffic through their listener to TCP backends on 127.0.0.1): a proxy that restarts
//! while the control plane is down serves, and is ready, with the configuration it had;
//! the control plane's next snapshot replaces it; a cache file of another pod, or a damaged
//! one, is ignored and the proxy still starts.

use ferry_control::distribution::{ConfigSource, Distribution};
use ferry_control::registry::ProxyIdentity;
use ferry_proto::config::{Endpoint, ProxyConfig, Service, ServicePort};
use ferry_proxy::discovery::{ProxyInfo, cache};
use ferry_proxy::listener::Direction;
use ferry_proxy::listener::orig_dst::FixedDst;
use ferry_proxy::server::{self, Options, Running};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// The address the application dials: a loopback address nothing listens on, so without
/// configuration (passthrough) the connection is refused, and with it the proxy sends the
/// connection to the service's endpoint.
const VIP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11)), 7);

/// One configuration, whatever the pod.
struct TestSource {
    config: Mutex<Option<ProxyConfig>>,
    generation: watch::Sender<u64>,
}

impl TestSource {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            config: Mutex::default(),
            generation: watch::channel(0).0,
        })
    }

    fn set(&self, config: ProxyConfig) {
        *self.config.lock().unwrap() = Some(config);
        self.generation.send_modify(|g| *g += 1);
    }
}

impl ConfigSource for TestSource {
    fn config_for(&self, proxy: &ProxyIdentity) -> Option<ProxyConfig> {
        let mut config = self.config.lock().unwrap().clone()?;
        config.identity.pod = proxy.pod.clone();
        config.identity.namespace = proxy.namespace.clone();
        Some(config)
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// A configuration sending `VIP` to the backend on 127.0.0.1:`backend_port`.
fn config(backend_port: u16) -> ProxyConfig {
    let mut config = ProxyConfig::default();
    config.identity.workload = "web".into();
    config.services.push(Service {
        name: "backend".into(),
        namespace: "default".into(),
        cluster_ip: Some(VIP.ip()),
        ports: vec![ServicePort {
            name: "tcp".into(),
            port: VIP.port(),
            target_port: Some(backend_port),
            ..Default::default()
        }],
        endpoints: vec![Endpoint {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            pod: "backend-0".into(),
            workload: "backend".into(),
            namespace: None,
            service_account: "default".into(),
            labels: BTreeMap::new(),
            has_sidecar: false,
            ready: true,
        }],
    });
    config
}

/// A TCP backend on 127.0.0.1 that writes `name` to each connection and closes it.
fn backend(name: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(name.as_bytes());
        }
    });
    port
}

/// What comes back through the proxy's listener (empty when the connection goes nowhere).
fn through(proxy: &Running) -> String {
    let Ok(mut s) = TcpStream::connect_timeout(&proxy.listeners[0], Duration::from_secs(2)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The status of the proxy's readiness endpoint.
fn ready(proxy: &Running) -> u16 {
    let Some(addr) = proxy.health else { return 0 };
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET /healthz/ready HTTP/1.0\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A control plane on its own runtime: dropping it ends every task and socket at once, as
/// killing the process would.
struct ControlPlane {
    _runtime: tokio::runtime::Runtime,
}

fn control_plane(source: &Arc<TestSource>, addr: SocketAddr) -> (ControlPlane, SocketAddr) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let source: Arc<dyn ConfigSource> = source.clone();
    let (bound, bound_rx) = oneshot::channel();
    runtime.spawn(async move {
        let distribution = Distribution::new(source, &mut Registry::default());
        // tokio sets SO_REUSEADDR, so the port of a killed server can be bound again.
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        bound.send(listener.local_addr().unwrap()).unwrap();
        distribution.serve(listener, std::future::pending()).await
    });
    let addr = bound_rx.blocking_recv().unwrap();
    (ControlPlane { _runtime: runtime }, addr)
}

/// A proxy of pod `pod` (namespace `default`) following `control_plane`, with its cache at
/// `cache`.
fn proxy(control_plane: SocketAddr, pod: &str, cache: &Path) -> Running {
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    server::start(
        Options {
            listeners: vec![(any, Direction::Outbound)],
            health: Some(any),
            control_plane: Some((
                control_plane.to_string(),
                ProxyInfo {
                    pod: pod.into(),
                    namespace: "default".into(),
                    workload: "web".into(),
                    service_account: "default".into(),
                    ip: None,
                },
            )),
            config_cache: Some(cache.to_path_buf()),
            ..Default::default()
        },
        Arc::new(FixedDst(VIP)),
    )
    .expect("the proxy starts")
}

/// A port nothing listens on (for a control plane that is down).
fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Runs a proxy of `pod` against a live control plane until it has written its cache;
/// returns the cache file.
fn warm_cache(dir: &Path, pod: &str) -> PathBuf {
    let source = TestSource::new();
    source.set(config(backend("one")));
    let (plane, addr) = control_plane(&source, "127.0.0.1:0".parse().unwrap());
    let cache = dir.join("data").join("config-cache");
    let first = proxy(addr, pod, &cache);
    eventually("traffic through the first proxy", || {
        through(&first) == "one"
    });
    eventually("the cache file", || cache.exists());
    first.stop();
    drop(plane);
    cache
}

#[test]
fn a_proxy_restarted_while_the_control_plane_is_down_serves_from_its_cache() {
    let dir = tempfile::tempdir().unwrap();
    let source = TestSource::new();
    source.set(config(backend("one")));
    let (plane, addr) = control_plane(&source, "127.0.0.1:0".parse().unwrap());
    let cache = dir.path().join("data").join("config-cache");

    // With the control plane up: configured from it, and the cache written.
    let first = proxy(addr, "web-1", &cache);
    eventually("traffic through the first proxy", || {
        through(&first) == "one"
    });
    assert_eq!(ready(&first), 200);
    eventually("the cache file", || cache.exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the cache is private to the proxy");

    // Both stop; the proxy starts again while the control plane is still down.
    first.stop();
    drop(plane);
    let second = proxy(addr, "web-1", &cache);
    assert_eq!(
        through(&second),
        "one",
        "the cached configuration is in force as soon as the proxy starts"
    );
    eventually("readiness on the cached configuration", || {
        ready(&second) == 200
    });
    assert_eq!(second.config.load().config.identity.pod, "web-1");

    // The control plane comes back, on the same address, with a change: it reaches the proxy.
    let two = backend("two");
    source.set(config(two));
    let (_plane, again) = control_plane(&source, addr);
    assert_eq!(again, addr);
    eventually("the control plane's new configuration", || {
        through(&second) == "two"
    });
    // ... and the cache follows it.
    let me = ProxyInfo {
        pod: "web-1".into(),
        namespace: "default".into(),
        ..ProxyInfo::default()
    };
    eventually("the cache of the new configuration", || {
        cache::read(&cache, &me)
            .ok()
            .flatten()
            .is_some_and(|c| c.config.services[0].ports[0].target_port == Some(two))
    });
    assert_eq!(ready(&second), 200);
    second.stop();
}

#[test]
fn a_cache_file_of_another_pod_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let cache = warm_cache(dir.path(), "web-1");
    let down = closed_port();
    let other = proxy(down, "web-2", &cache);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        through(&other),
        "",
        "no configuration: passthrough to nothing"
    );
    assert_ne!(ready(&other), 200, "not ready without a configuration");
    assert_eq!(other.config.load().config.identity.pod, "");
    other.stop();
    // The file is left as it was for its own pod.
    let mine = proxy(down, "web-1", &cache);
    assert_eq!(through(&mine), "one");
    mine.stop();
}

#[test]
fn a_damaged_cache_file_is_ignored_and_the_proxy_starts() {
    let dir = tempfile::tempdir().unwrap();
    let cache = warm_cache(dir.path(), "web-1");
    let whole = std::fs::read(&cache).unwrap();
    let down = closed_port();
    for (what, bytes) in [
        ("truncated", whole[..whole.len() / 2].to_vec()),
        ("garbage", b"\x00\xffnot a cache\n{}".to_vec()),
        ("empty", Vec::new()),
    ] {
        std::fs::write(&cache, &bytes).unwrap();
        let p = proxy(down, "web-1", &cache);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(through(&p), "", "{what}: no configuration");
        assert_ne!(ready(&p), 200, "{what}: not ready");
        p.stop();
    }
}
