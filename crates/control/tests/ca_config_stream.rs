//! The configuration stream over TLS on the CA's port (15012), on loopback: the control plane
//! (`plane::serve_with` with a `SecurePort`) serves the certificate API and the stream on
//! one TLS listener, and the proxy's real discovery client follows it, verifying the
//! control plane's certificate against the mesh root. A proxy trusting another root, or
//! expecting another name, gets nothing; a plaintext client gets nothing from the TLS port;
//! the plaintext port (15010) keeps working beside it; the certificate API still answers
//! on the same port, and the monitoring endpoint shows the certificate it issued to the pod.

use arc_swap::ArcSwap;
use ferry_control::ca::{CaService, CertificateAuthority, FileStore, LocalTokens, SecureServer};
use ferry_control::plane::{self, Bound, Mesh, PlaneOptions, SecurePort};
use ferry_proto::config::ProxyConfig;
use ferry_proto::config::SpiffeId;
use ferry_proxy::config::Snapshot;
use ferry_proxy::discovery::{self, ControlPlaneTls, DiscoveryState, ProxyInfo};
use ferry_proxy::identity::IdentityState;
use ferry_proxy::identity::manager::{Manager, SystemClock};
use ferry_proxy::identity::source::CaClient;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const MANIFESTS: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: redis
spec:
  clusterIP: None
  selector:
    app: redis
  ports:
  - name: tcp-redis
    port: 6379
---
apiVersion: v1
kind: Pod
metadata:
  name: redis-0
  labels:
    app: redis
spec:
  containers:
  - name: redis
    image: redis
    ports:
    - containerPort: 6379
"#;

/// A control plane with its CA; stops when dropped.
struct Plane {
    bound: Bound,
    root: PathBuf,
    tokens: LocalTokens,
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

async fn ca_in(dir: &Path) -> Arc<CertificateAuthority> {
    let store = FileStore::new(dir);
    let (ca, _) = CertificateAuthority::load_or_create(&store, "cluster.local", SystemTime::now())
        .await
        .expect("ca");
    Arc::new(ca)
}

async fn start() -> Plane {
    let dir = tempfile::tempdir().expect("tmp");
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).expect("mkdir");
    std::fs::write(manifests.join("redis.yaml"), MANIFESTS).expect("manifest");
    let ca = ca_in(&dir.path().join("ca")).await;
    let root = dir.path().join("root-cert.pem");
    std::fs::write(&root, ca.root_pem()).expect("root");
    let tokens = LocalTokens::new(b"0123456789abcdef0123456789abcdef");
    let service = CaService::new(ca.clone(), Arc::new(tokens.clone()));
    let server = SecureServer::new(ca, vec!["localhost".into()], vec![]).expect("server");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = SecurePort {
        server,
        listener,
        routes: service.routes(),
        issued: Some(service.issued().clone()),
    };
    let mesh = Arc::new(Mesh::new(PlaneOptions {
        config_dir: manifests,
        grpc: "127.0.0.1:0".parse().expect("addr"),
        monitoring: Some("127.0.0.1:0".parse().expect("addr")),
        ..PlaneOptions::default()
    }));
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(plane::serve_with(
        mesh,
        Some(port),
        async move {
            let _ = stopped.await;
        },
        move |bound| {
            let _ = bound_tx.send(bound);
        },
    ));
    let bound = bound_rx.await.expect("bound");
    Plane {
        bound,
        root,
        tokens,
        dir,
        stop: Some(stop),
        task: Some(task),
    }
}

impl Plane {
    fn secure(&self) -> String {
        self.bound
            .secure
            .expect("the TLS port is bound")
            .to_string()
    }

    async fn shut_down(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the control plane stops");
            result.expect("no panic").expect("no error");
        }
    }
}

/// A plain HTTP/1.0 GET of `path` on `addr`; the body.
fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_string())
}

/// A proxy following `addr` (over TLS when `tls` says how); what it holds after `wait`.
async fn follow(
    addr: &str,
    tls: Option<ControlPlaneTls>,
    wait: Duration,
) -> (DiscoveryState, Arc<ArcSwap<Snapshot>>) {
    let config = Arc::new(ArcSwap::from_pointee(Snapshot::compile(
        ProxyConfig::default(),
    )));
    let state = DiscoveryState::new();
    let info = ProxyInfo {
        pod: "redis-0".into(),
        namespace: "default".into(),
        workload: "redis-0".into(),
        service_account: "default".into(),
        ip: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = {
        let (addr, config, state) = (addr.to_string(), config.clone(), state.clone());
        tokio::spawn(async move {
            discovery::run_with(&addr, tls, info, config, state, async move {
                let _ = stopped.await;
            })
            .await;
        })
    };
    let _ = tokio::time::timeout(wait, state.ready()).await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    (state, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_stream_runs_over_tls_on_the_ca_port() {
    let plane = start().await;
    let secure = plane.secure();
    assert_ne!(secure, plane.bound.grpc.to_string());

    // The proxy's client, verifying the control plane against the mesh root.
    let tls = ControlPlaneTls {
        server_name: "localhost".into(),
        root_cert: plane.root.clone(),
    };
    let (state, config) = follow(&secure, Some(tls.clone()), Duration::from_secs(10)).await;
    assert!(state.has_config(), "no configuration over TLS");
    assert_eq!(state.streams(), 1);
    assert_eq!(config.load().config.identity.pod, "redis-0");
    let services: Vec<String> = config
        .load()
        .config
        .services
        .iter()
        .map(|s| s.name.clone())
        .collect();
    assert!(
        services.iter().any(|s| s.starts_with("redis")),
        "{services:?}"
    );

    // The same through `run` once the address is registered for TLS.
    discovery::use_tls(&secure, tls.clone());
    let config = Arc::new(ArcSwap::from_pointee(Snapshot::compile(
        ProxyConfig::default(),
    )));
    let registered = DiscoveryState::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = {
        let (addr, config, state) = (secure.clone(), config.clone(), registered.clone());
        tokio::spawn(async move {
            let info = ProxyInfo {
                pod: "redis-0".into(),
                namespace: "default".into(),
                ..ProxyInfo::default()
            };
            discovery::run(&addr, info, config, state, async move {
                let _ = stopped.await;
            })
            .await;
        })
    };
    tokio::time::timeout(Duration::from_secs(10), registered.ready())
        .await
        .expect("configuration through run() over TLS");
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), run).await;

    // Another mesh's root: the control plane is not trusted, nothing is applied.
    let other = ca_in(&plane.dir.path().join("other-ca")).await;
    let other_root = plane.dir.path().join("other-root.pem");
    std::fs::write(&other_root, other.root_pem()).expect("other root");
    let (state, _) = follow(
        &secure,
        Some(ControlPlaneTls {
            server_name: "localhost".into(),
            root_cert: other_root,
        }),
        Duration::from_secs(2),
    )
    .await;
    assert!(
        !state.has_config(),
        "a control plane of another root was trusted"
    );
    assert_eq!(state.streams(), 0);

    // The right root but a name the certificate does not carry.
    let (state, _) = follow(
        &secure,
        Some(ControlPlaneTls {
            server_name: "evil.example.com".into(),
            root_cert: plane.root.clone(),
        }),
        Duration::from_secs(2),
    )
    .await;
    assert!(
        !state.has_config(),
        "a certificate for another name was accepted"
    );

    // Plaintext to the TLS port gets nothing.
    let (state, _) = follow(&format!("http://{secure}"), None, Duration::from_secs(2)).await;
    assert!(!state.has_config(), "plaintext was served on the TLS port");
    assert_eq!(state.streams(), 0);

    // The plaintext port keeps working (local debugging).
    let (state, _) = follow(&plane.bound.grpc.to_string(), None, Duration::from_secs(10)).await;
    assert!(state.has_config(), "no configuration on the plaintext port");

    // The certificate API answers on the same TLS port.
    let token_file = plane.dir.path().join("token");
    std::fs::write(
        &token_file,
        plane.tokens.issue("default", "redis", "redis-0"),
    )
    .expect("token");
    let manager = Manager {
        id: SpiffeId::new("cluster.local", "default", "redis").expect("id"),
        ttl: None,
        root_cert: Some(plane.root.clone()),
        source: Arc::new(CaClient {
            addr: secure.clone(),
            server_name: "localhost".into(),
            root_cert: plane.root.clone(),
            token_file: Some(token_file),
        }),
        state: Arc::new(IdentityState::new()),
        metrics: Default::default(),
        clock: Arc::new(SystemClock),
    };
    let cert = manager
        .renew_once()
        .await
        .expect("a certificate on the same port");
    assert_eq!(cert.id.uri(), "spiffe://cluster.local/ns/default/sa/redis");

    // The monitoring endpoint shows what the CA issued to the pod (`ferry proxy-config
    // secret`): the same certificate the proxy holds.
    let monitoring = plane.bound.monitoring.expect("monitoring").to_string();
    let body = http_get(&monitoring, "/debug/certs?proxy=default/redis-0").expect("answer");
    let record: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(record["identity"], cert.id.uri());
    assert_eq!(
        record["serial"].as_str().map(|s| s.trim_start_matches('0')),
        Some(cert.serial.trim_start_matches('0')),
        "{record}"
    );
    assert_eq!(record["chain"][0], cert.chain_pem[0].as_str());
    let body = http_get(&monitoring, "/debug/certs?proxy=default/redis-9").unwrap_or_default();
    assert!(body.contains("no certificate issued"), "{body}");

    plane.shut_down().await;
}
