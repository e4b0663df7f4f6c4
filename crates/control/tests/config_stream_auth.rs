//! Authentication of the configuration stream on the CA's TLS port (15012), on loopback: the
//! control plane (`plane::serve_with` with a `SecurePort`) and the proxy's real discovery
//! client and certificate manager.
//!
//! - A proxy proving its identity with its per-pod token, or with the workload certificate
//!   the CA issued it (no token at all), gets its configuration.
//! - A proxy asking for another namespace's or another service account's configuration is
//!   refused with `PermissionDenied`, whatever it proves; so is one naming a pod whose
//!   service account is not the proven one, and one whose per-pod token names another pod.
//! - A proxy that proves nothing (no certificate, no token, a forged token) is refused with
//!   `Unauthenticated`; a port without a token authenticator refuses tokens but takes
//!   certificates.
//! - The plaintext port (15010, local debugging) still takes the proxy's word.
//! - The refusals are counted on the monitoring port (`ferry_control_stream_refusals_total`).

use arc_swap::ArcSwap;
use ferry_control::ca::{CaService, CertificateAuthority, FileStore, LocalTokens, SecureServer};
use ferry_control::plane::{self, Bound, Mesh, PlaneOptions, SecurePort};
use ferry_proto::config::{ProxyConfig, SpiffeId};
use ferry_proto::discovery::v1::config_discovery_client::ConfigDiscoveryClient;
use ferry_proto::discovery::v1::{Hello, ProxyMessage, proxy_message};
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
  serviceAccountName: redis
  containers:
  - name: redis
    image: redis
    ports:
    - containerPort: 6379
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  labels:
    app: client
spec:
  serviceAccountName: client
  containers:
  - name: shell
    image: busybox
"#;

/// A control plane with its CA on loopback; stops when shut down.
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

/// A control plane whose TLS port checks tokens (`check_tokens`) or only certificates.
async fn start(check_tokens: bool) -> Plane {
    let dir = tempfile::tempdir().expect("tmp");
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).expect("mkdir");
    std::fs::write(manifests.join("mesh.yaml"), MANIFESTS).expect("manifest");
    let ca = ca_in(&dir.path().join("ca")).await;
    let root = dir.path().join("root-cert.pem");
    std::fs::write(&root, ca.root_pem()).expect("root");
    let tokens = LocalTokens::new(b"0123456789abcdef0123456789abcdef");
    let service = CaService::new(ca.clone(), Arc::new(tokens.clone()));
    let mut server = SecureServer::new(ca, vec!["localhost".into()], vec![]).expect("server");
    if check_tokens {
        server = server.with_authenticator(Arc::new(tokens.clone()));
    }
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

    /// A file holding `token`.
    fn token_file(&self, name: &str, token: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, token).expect("token file");
        path
    }

    /// The client side of the TLS port: the CA's name and root, and `token_file`.
    fn ca_client(&self, token_file: Option<PathBuf>) -> CaClient {
        CaClient {
            addr: self.secure(),
            server_name: "localhost".into(),
            root_cert: self.root.clone(),
            token_file,
        }
    }

    /// A workload certificate for `ns`/`sa`, from the CA on the TLS port.
    async fn certificate(&self, ns: &str, sa: &str, pod: &str) -> Arc<IdentityState> {
        let token = self.token_file(
            &format!("{ns}-{pod}.ca-token"),
            &self.tokens.issue(ns, sa, pod),
        );
        let manager = Manager {
            id: SpiffeId::new("cluster.local", ns, sa).expect("id"),
            ttl: None,
            root_cert: Some(self.root.clone()),
            source: Arc::new(self.ca_client(Some(token))),
            state: Arc::new(IdentityState::new()),
            metrics: Default::default(),
            clock: Arc::new(SystemClock),
        };
        let cert = manager.renew_once().await.expect("a certificate");
        manager.state.publish(cert);
        manager.state.clone()
    }

    /// The TLS settings of a proxy proving itself with `token_file` and/or `identity`.
    fn tls(
        &self,
        token_file: Option<PathBuf>,
        identity: Option<Arc<IdentityState>>,
    ) -> ControlPlaneTls {
        ControlPlaneTls {
            server_name: "localhost".into(),
            root_cert: self.root.clone(),
            token_file,
            identity,
        }
    }

    /// `ferry_control_stream_refusals_total{reason}` on the monitoring port.
    fn refusals(&self, reason: &str) -> f64 {
        let monitoring = self.bound.monitoring.expect("monitoring").to_string();
        let text = http_get(&monitoring, "/metrics").unwrap_or_default();
        let label = format!("reason=\"{reason}\"");
        text.lines()
            .filter(|l| l.starts_with("ferry_control_stream_refusals_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
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

fn info(ns: &str, pod: &str, sa: &str) -> ProxyInfo {
    ProxyInfo {
        pod: pod.into(),
        namespace: ns.into(),
        workload: pod.into(),
        service_account: sa.into(),
        ip: None,
    }
}

/// The real discovery client of a proxy `who`, following `addr` for up to `wait`: whether
/// it got a configuration, and the pod that configuration is for.
async fn follow(
    addr: &str,
    tls: Option<ControlPlaneTls>,
    who: ProxyInfo,
    wait: Duration,
) -> (DiscoveryState, String) {
    let config = Arc::new(ArcSwap::from_pointee(Snapshot::compile(
        ProxyConfig::default(),
    )));
    let state = DiscoveryState::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = {
        let (addr, config, state) = (addr.to_string(), config.clone(), state.clone());
        tokio::spawn(async move {
            discovery::run_with(&addr, tls, who, config, state, async move {
                let _ = stopped.await;
            })
            .await;
        })
    };
    let _ = tokio::time::timeout(wait, state.ready()).await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    let pod = config.load().config.identity.pod.clone();
    (state, pod)
}

/// One raw stream on the TLS port: the gRPC status the control plane answers a `Hello` from
/// `who` with (`Ok` when it opens the stream), with `token` as the bearer token and
/// `identity`'s certificate as the client certificate.
async fn answer(
    plane: &Plane,
    who: ProxyInfo,
    token: Option<&str>,
    identity: Option<&IdentityState>,
) -> Result<(), tonic::Status> {
    let current = identity.and_then(|i| i.current());
    let channel = plane
        .ca_client(None)
        .channel(current.as_deref())
        .await
        .expect("a TLS channel to the control plane");
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(ProxyMessage {
        kind: Some(proxy_message::Kind::Hello(Hello {
            pod: who.pod,
            namespace: who.namespace,
            workload: who.workload,
            service_account: who.service_account,
            ..Default::default()
        })),
    })
    .await
    .expect("queue the Hello");
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii token"),
        );
    }
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        ConfigDiscoveryClient::new(channel).stream(request),
    )
    .await
    .expect("an answer in time");
    drop(tx);
    result.map(|_| ())
}

fn assert_refused(result: Result<(), tonic::Status>, code: tonic::Code, text: &str, what: &str) {
    match result {
        Ok(()) => panic!("{what}: the stream was opened"),
        Err(status) => {
            assert_eq!(status.code(), code, "{what}: {}", status.message());
            assert!(
                status.message().contains(text),
                "{what}: {:?} does not say {text:?}",
                status.message()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_stream_serves_only_the_proven_identity() {
    let plane = start(true).await;
    let secure = plane.secure();
    let redis_token = plane.tokens.issue("default", "redis", "redis-0");
    let redis_token_file = plane.token_file("redis-0.token", &redis_token);

    // The right identity, proven by the per-pod token: the proxy's configuration.
    let (state, pod) = follow(
        &secure,
        Some(plane.tls(Some(redis_token_file.clone()), None)),
        info("default", "redis-0", "redis"),
        Duration::from_secs(10),
    )
    .await;
    assert!(state.has_config(), "no configuration with a valid token");
    assert_eq!(pod, "redis-0");

    // The right identity, proven by the workload certificate alone (no token file).
    let cert = plane.certificate("default", "redis", "redis-0").await;
    let (state, pod) = follow(
        &secure,
        Some(plane.tls(None, Some(cert.clone()))),
        info("default", "redis-0", "redis"),
        Duration::from_secs(10),
    )
    .await;
    assert!(state.has_config(), "no configuration with the certificate");
    assert_eq!(pod, "redis-0");
    // The Hello may leave the service account out: the proven one is taken.
    answer(&plane, info("default", "redis-0", ""), None, Some(&cert))
        .await
        .expect("a Hello without a service account, proven by the certificate");

    // Another namespace, another service account, another service account's pod, another
    // pod than the token names: PermissionDenied, with the real client getting nothing.
    let denied: [(&str, ProxyInfo, &str); 4] = [
        (
            "another namespace",
            info("prod", "redis-0", "redis"),
            "asks for namespace prod, but proved spiffe://cluster.local/ns/default/sa/redis",
        ),
        (
            "another service account",
            info("default", "client", "client"),
            "asks for service account client",
        ),
        (
            "another pod than the token names",
            info("default", "redis-1", "redis"),
            "for pod redis-0, not for redis-1",
        ),
        (
            "a pod of another service account, with no service account said",
            info("default", "client", ""),
            "for pod redis-0, not for client",
        ),
    ];
    for (what, who, text) in denied {
        let got = answer(&plane, who.clone(), Some(&redis_token), None).await;
        assert_refused(got, tonic::Code::PermissionDenied, text, what);
        let (state, _) = follow(
            &secure,
            Some(plane.tls(Some(redis_token_file.clone()), None)),
            who,
            Duration::from_millis(800),
        )
        .await;
        assert!(!state.has_config(), "{what}: a configuration was served");
    }
    // The certificate names no pod: the pod's own service account decides.
    let got = answer(
        &plane,
        info("default", "client", "redis"),
        None,
        Some(&cert),
    )
    .await;
    assert_refused(
        got,
        tonic::Code::PermissionDenied,
        "pod default/client runs as service account client, but the proxy proved spiffe://cluster.local/ns/default/sa/redis",
        "a certificate for another pod's service account",
    );
    let got = answer(&plane, info("prod", "redis-0", "redis"), None, Some(&cert)).await;
    assert_refused(
        got,
        tonic::Code::PermissionDenied,
        "asks for namespace prod",
        "a certificate for another namespace",
    );

    // No proof at all, or a forged one: Unauthenticated.
    let forged = LocalTokens::new(b"another key, another control plane")
        .issue("default", "redis", "redis-0");
    let unproven: [(&str, Option<&str>, &str); 2] = [
        ("no credential", None, "no credential"),
        ("a forged token", Some(&forged), "does not verify"),
    ];
    for (what, token, text) in unproven {
        let got = answer(&plane, info("default", "redis-0", "redis"), token, None).await;
        assert_refused(got, tonic::Code::Unauthenticated, text, what);
    }
    let (state, _) = follow(
        &secure,
        Some(plane.tls(Some(plane.dir.path().join("missing.token")), None)),
        info("default", "redis-0", "redis"),
        Duration::from_millis(800),
    )
    .await;
    assert!(!state.has_config(), "a proxy proving nothing was served");

    // The plaintext port (local debugging) takes the proxy's word, as before.
    let (state, pod) = follow(
        &plane.bound.grpc.to_string(),
        None,
        info("default", "redis-0", "redis"),
        Duration::from_secs(10),
    )
    .await;
    assert!(state.has_config(), "the plaintext port refused a proxy");
    assert_eq!(pod, "redis-0");

    // Every refusal is counted by reason.
    assert!(plane.refusals("identity-mismatch") >= 10.0);
    assert!(plane.refusals("no-credential") >= 1.0);
    assert!(plane.refusals("token") >= 1.0);

    plane.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_authenticator_only_certificates_prove_anything() {
    let plane = start(false).await;
    let token = plane.tokens.issue("default", "redis", "redis-0");
    let got = answer(
        &plane,
        info("default", "redis-0", "redis"),
        Some(&token),
        None,
    )
    .await;
    assert_refused(
        got,
        tonic::Code::Unauthenticated,
        "checks no tokens",
        "a token where none are checked",
    );
    // The certificate API still takes the token; the certificate then opens the stream.
    let cert = plane.certificate("default", "redis", "redis-0").await;
    let (state, pod) = follow(
        &plane.secure(),
        Some(plane.tls(None, Some(cert))),
        info("default", "redis-0", "redis"),
        Duration::from_secs(10),
    )
    .await;
    assert!(state.has_config(), "no configuration with the certificate");
    assert_eq!(pod, "redis-0");
    plane.shut_down().await;
}

/// What the configuration stream over TLS keeps from before authentication: the proxy
/// verifies the control plane (another mesh's root, or a name the certificate does not
/// carry, gets nothing), plaintext gets nothing from the TLS port, the certificate API
/// answers on the same port, and the monitoring endpoint shows what the CA issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_verifies_the_control_plane_and_the_ca_shares_the_port() {
    let plane = start(true).await;
    let secure = plane.secure();
    let token_file = plane.token_file(
        "redis-0.token",
        &plane.tokens.issue("default", "redis", "redis-0"),
    );
    let who = || info("default", "redis-0", "redis");

    // Another mesh's root: the control plane is not trusted, nothing is applied.
    let other = ca_in(&plane.dir.path().join("other-ca")).await;
    let other_root = plane.dir.path().join("other-root.pem");
    std::fs::write(&other_root, other.root_pem()).expect("other root");
    let mut tls = plane.tls(Some(token_file.clone()), None);
    tls.root_cert = other_root;
    let (state, _) = follow(&secure, Some(tls), who(), Duration::from_secs(2)).await;
    assert!(
        !state.has_config(),
        "a control plane of another root was trusted"
    );
    assert_eq!(state.streams(), 0);

    // The right root but a name the certificate does not carry.
    let mut tls = plane.tls(Some(token_file.clone()), None);
    tls.server_name = "evil.example.com".into();
    let (state, _) = follow(&secure, Some(tls), who(), Duration::from_secs(2)).await;
    assert!(
        !state.has_config(),
        "a certificate for another name was accepted"
    );

    // Plaintext to the TLS port gets nothing.
    let (state, _) = follow(
        &format!("http://{secure}"),
        None,
        who(),
        Duration::from_secs(2),
    )
    .await;
    assert!(!state.has_config(), "plaintext was served on the TLS port");
    assert_eq!(state.streams(), 0);

    // The certificate API answers on the same port; the monitoring endpoint shows what the
    // CA issued to the pod (`ferry proxy-config secret`).
    let identity = plane.certificate("default", "redis", "redis-0").await;
    let cert = identity.current().expect("a certificate");
    assert_eq!(cert.id.uri(), "spiffe://cluster.local/ns/default/sa/redis");
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
