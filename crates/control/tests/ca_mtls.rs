//! Identity and mutual TLS end to end, in process over loopback: the control plane's CA
//! (files, local pod tokens, certificate API over TLS) and two real proxies, a client sidecar
//! and a server sidecar, in front of an echo server. A relay between the two proxies records
//! every byte they exchange.
//!
//! - STRICT: traffic between the sidecars is TLS (no plaintext in the capture), a plaintext
//!   client is refused at the server sidecar, both sides label their metrics with the peer's
//!   workload and SPIFFE principal, and the destination says `mutual_tls`.
//! - PERMISSIVE: a mesh client and a plaintext client both work, labelled apart.
//! - DISABLE: plaintext end to end.
//! - Rotation: certificates living a few seconds are renewed several times while one
//!   connection stays open and keeps working.

use ferry_control::ca::{CaService, CertificateAuthority, FileStore, LocalTokens, SecureServer};
use ferry_model::istio::destination_rule::TlsMode;
use ferry_proto::config::{
    Cluster, ClusterEndpoint, ClusterTls, Endpoint, Identity, Inbound, MtlsMode, ProxyConfig,
    Resolution, Service, ServicePort,
};
use ferry_proxy::identity::IdentityOptions;
use ferry_proxy::listener::Direction;
use ferry_proxy::listener::orig_dst::FixedDst;
use ferry_proxy::server::{self, Options, Running};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

const VIP: [u8; 4] = [127, 0, 0, 100];

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A CA serving on loopback, with its root and a token per service account on disk.
struct Ca {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    tokens: LocalTokens,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Ca {
    fn start(default_ttl: Duration) -> Ca {
        let dir = tempfile::tempdir().expect("tmp");
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let ca_dir = dir.path().join("ca");
        let tokens = LocalTokens::new(b"a key the control plane keeps, 32b");
        let authn = Arc::new(tokens.clone());
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let store = FileStore::new(&ca_dir);
                let (ca, _) = CertificateAuthority::load_or_create(
                    &store,
                    "cluster.local",
                    SystemTime::now(),
                )
                .await
                .expect("ca");
                let ca = Arc::new(ca.with_ttl(default_ttl, Duration::from_secs(3600)));
                let service = CaService::new(ca.clone(), authn);
                let server = SecureServer::new(
                    ca.clone(),
                    vec!["localhost".into()],
                    vec!["127.0.0.1".parse().expect("ip")],
                )
                .expect("server");
                let listener = tokio::net::TcpListener::bind(any_port())
                    .await
                    .expect("bind");
                tx.send((
                    listener.local_addr().expect("addr"),
                    ca.root_pem().to_string(),
                ))
                .expect("send");
                server
                    .serve(listener, service.routes(), async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .expect("serve");
            });
        });
        let (addr, root) = rx.recv().expect("ca started");
        std::fs::write(dir.path().join("root-cert.pem"), root).expect("root");
        Ca {
            addr,
            dir,
            tokens,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root-cert.pem")
    }

    /// The token file of `sa` (the local runtime writes these).
    fn token_file(&self, sa: &str, pod: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{pod}.token"));
        std::fs::write(&path, self.tokens.issue("default", sa, pod)).expect("token");
        path
    }

    fn identity(&self, sa: &str, pod: &str, ttl: Option<Duration>) -> IdentityOptions {
        IdentityOptions {
            ca_addr: self.addr.to_string(),
            ca_server_name: "localhost".into(),
            root_cert: self.root(),
            token_file: Some(self.token_file(sa, pod)),
            trust_domain: "cluster.local".into(),
            namespace: "default".into(),
            service_account: sa.into(),
            ttl,
        }
    }
}

impl Drop for Ca {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An echo server.
fn echo() -> SocketAddr {
    let l = TcpListener::bind(any_port()).expect("bind");
    let addr = l.local_addr().expect("addr");
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A relay to `to` that records every byte crossing it.
fn relay(to: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let l = TcpListener::bind(any_port()).expect("bind");
    let addr = l.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(down) = s else { return };
            let Ok(up) = TcpStream::connect(to) else {
                continue;
            };
            for (mut from, mut into) in [
                (
                    down.try_clone().expect("clone"),
                    up.try_clone().expect("clone"),
                ),
                (up, down),
            ] {
                let record = record.clone();
                thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    loop {
                        match from.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                let _ = into.shutdown(std::net::Shutdown::Write);
                                return;
                            }
                            Ok(n) => {
                                record.lock().expect("lock").extend_from_slice(&buf[..n]);
                                if into.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        }
    });
    (addr, seen)
}

fn endpoint(ip: &str, pod: &str, sa: &str) -> Endpoint {
    Endpoint {
        ip: ip.parse().expect("ip"),
        pod: pod.into(),
        workload: sa.into(),
        namespace: Some("default".into()),
        service_account: sa.into(),
        labels: [("app".to_string(), sa.to_string())].into(),
        has_sidecar: true,
        ready: true,
    }
}

fn identity(pod: &str, sa: &str) -> Identity {
    Identity {
        pod: pod.into(),
        namespace: "default".into(),
        workload: sa.into(),
        service_account: sa.into(),
        labels: [("app".to_string(), sa.to_string())].into(),
        ip: Some("127.0.0.1".parse().expect("ip")),
        trust_domain: "cluster.local".into(),
        cluster: "Kubernetes".into(),
    }
}

/// The client sidecar's configuration: service `echo` at the VIP, its one endpoint (the
/// server sidecar, behind the relay at `port`), client TLS `mode`.
fn client_config(port: u16, mode: TlsMode) -> ProxyConfig {
    let host = "echo.default.svc.cluster.local";
    ProxyConfig {
        identity: identity("client-0", "client"),
        services: vec![Service {
            name: "echo".into(),
            namespace: "default".into(),
            cluster_ip: Some(VIP.into()),
            ports: vec![ServicePort {
                name: "tcp-echo".into(),
                port: 80,
                target_port: Some(port),
                ..Default::default()
            }],
            endpoints: vec![endpoint("127.0.0.1", "echo-0", "echo")],
        }],
        clusters: vec![Cluster {
            name: format!("outbound|80||{host}"),
            host: host.into(),
            port: 80,
            subset: None,
            subset_labels: Default::default(),
            resolution: Resolution::Eds,
            endpoints: vec![ClusterEndpoint {
                ip: "127.0.0.1".parse().expect("ip"),
                port,
                pod: "echo-0".into(),
                ready: true,
                mtls: mode == TlsMode::IstioMutual,
            }],
            destination_rule: None,
            load_balancer: Default::default(),
            connection_pool: None,
            outlier_detection: None,
            tls: ClusterTls {
                mode,
                auto: true,
                settings: None,
            },
        }],
        ..Default::default()
    }
}

/// The server sidecar's configuration: its own service on the echo port, `mode` inbound.
fn server_config(app: SocketAddr, mode: MtlsMode) -> ProxyConfig {
    ProxyConfig {
        identity: identity("echo-0", "echo"),
        services: vec![Service {
            name: "echo".into(),
            namespace: "default".into(),
            cluster_ip: Some(VIP.into()),
            ports: vec![ServicePort {
                name: "tcp-echo".into(),
                port: 80,
                target_port: Some(app.port()),
                ..Default::default()
            }],
            endpoints: vec![endpoint("127.0.0.1", "echo-0", "echo")],
        }],
        inbound: Inbound {
            mtls: mode,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn write_config(dir: &Path, name: &str, config: &ProxyConfig) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, serde_json::to_string_pretty(config).expect("json")).expect("write");
    path
}

fn proxy(
    direction: Direction,
    dst: SocketAddr,
    config: PathBuf,
    identity: Option<IdentityOptions>,
) -> Running {
    let running = server::start(
        Options {
            listeners: vec![(any_port(), direction)],
            metrics: Some(any_port()),
            config_file: Some(config),
            identity,
            ..Default::default()
        },
        Arc::new(FixedDst(dst)),
    )
    .expect("proxy starts");
    if let Some(id) = &running.identity {
        wait_for(10, "a first certificate", || id.current().is_some());
    }
    running
}

fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn scrape(running: &Running) -> String {
    let addr = running.metrics.expect("metrics");
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(s, "GET /stats/prometheus HTTP/1.0\r\n\r\n").expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

/// The sum of `metric` samples whose labels contain every needle.
fn metric(running: &Running, metric: &str, needles: &[&str]) -> f64 {
    scrape(running)
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sends `msg` on `s` and reads the echo; `None` when the connection is refused or closed.
fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(msg).ok()?;
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).ok()?;
    Some(got)
}

struct Mesh {
    ca: Ca,
    client: Running,
    server: Running,
    capture: Arc<Mutex<Vec<u8>>>,
    server_inbound: SocketAddr,
    _dir: tempfile::TempDir,
}

fn mesh(client_mode: TlsMode, server_mode: MtlsMode, ttl: Duration) -> Mesh {
    let ca = Ca::start(ttl);
    let dir = tempfile::tempdir().expect("tmp");
    let app = echo();
    let server = proxy(
        Direction::Inbound,
        app,
        write_config(dir.path(), "server", &server_config(app, server_mode)),
        Some(ca.identity("echo", "echo-0", None)),
    );
    let server_inbound = server.listeners[0];
    let (relay_addr, capture) = relay(server_inbound);
    let client = proxy(
        Direction::Outbound,
        SocketAddr::new(VIP.into(), 80),
        write_config(
            dir.path(),
            "client",
            &client_config(relay_addr.port(), client_mode),
        ),
        Some(ca.identity("client", "client-0", None)),
    );
    Mesh {
        ca,
        client,
        server,
        capture,
        server_inbound,
        _dir: dir,
    }
}

const SECRET: &[u8] = b"*3\r\n$3\r\nSET\r\n$8\r\ngreeting\r\n$12\r\nhello-secret\r\n";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn strict_mtls_encrypts_refuses_plaintext_and_labels_both_sides() {
    let m = mesh(
        TlsMode::IstioMutual,
        MtlsMode::Strict,
        Duration::from_secs(3600),
    );
    let mut c = TcpStream::connect(m.client.listeners[0]).expect("connect");
    for _ in 0..3 {
        assert_eq!(round_trip(&mut c, SECRET).as_deref(), Some(SECRET));
    }
    drop(c);
    let seen = m.capture.lock().expect("lock").clone();
    assert!(seen.len() > SECRET.len(), "the capture saw the handshake");
    assert_eq!(
        seen[0], 0x16,
        "the first byte between the sidecars is a TLS handshake"
    );
    assert!(
        !contains(&seen, b"hello-secret"),
        "no plaintext between the sidecars"
    );
    assert!(
        !contains(&seen, b"greeting"),
        "no plaintext between the sidecars"
    );

    // A client without a sidecar, straight to the server sidecar: refused.
    let mut plain = TcpStream::connect(m.server_inbound).expect("connect");
    assert_eq!(
        round_trip(&mut plain, SECRET),
        None,
        "STRICT refuses plaintext"
    );

    let client_principal = "source_principal=\"spiffe://cluster.local/ns/default/sa/client\"";
    let server_principal = "destination_principal=\"spiffe://cluster.local/ns/default/sa/echo\"";
    wait_for(5, "destination metrics", || {
        metric(
            &m.server,
            "istio_tcp_connections_closed_total",
            &[
                "reporter=\"destination\"",
                "connection_security_policy=\"mutual_tls\"",
                client_principal,
                server_principal,
                "source_workload=\"client\"",
                "source_app=\"client\"",
                "destination_workload=\"echo\"",
            ],
        ) >= 1.0
    });
    assert_eq!(
        metric(
            &m.server,
            "istio_tcp_received_bytes_total",
            &["connection_security_policy=\"mutual_tls\""]
        ),
        (3 * SECRET.len()) as f64,
        "bytes counted as the application sent them"
    );
    assert!(
        metric(
            &m.server,
            "ferry_mtls_refused_connections_total",
            &["reason=\"plaintext\""]
        ) >= 1.0
    );
    wait_for(5, "source metrics", || {
        metric(
            &m.client,
            "istio_tcp_connections_closed_total",
            &[
                "reporter=\"source\"",
                client_principal,
                server_principal,
                "destination_workload=\"echo\"",
                "destination_app=\"echo\"",
                "destination_service=\"echo.default.svc.cluster.local\"",
            ],
        ) >= 1.0
    });
    assert!(
        metric(
            &m.client,
            "ferry_identity_cert_renewals_total",
            &["outcome=\"success\""]
        ) >= 1.0
    );
    let expiry = scrape(&m.client)
        .lines()
        .find(|l| l.starts_with("ferry_identity_cert_expiry_timestamp_seconds "))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .expect("expiry gauge");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("time")
        .as_secs_f64();
    assert!(
        expiry > now && expiry < now + 3700.0,
        "expiry {expiry} vs now {now}"
    );
    drop(m.ca);
}

#[test]
fn permissive_accepts_mesh_and_plaintext_clients() {
    let m = mesh(
        TlsMode::IstioMutual,
        MtlsMode::Permissive,
        Duration::from_secs(3600),
    );
    let mut c = TcpStream::connect(m.client.listeners[0]).expect("connect");
    assert_eq!(round_trip(&mut c, SECRET).as_deref(), Some(SECRET));
    drop(c);
    let mut plain = TcpStream::connect(m.server_inbound).expect("connect");
    assert_eq!(round_trip(&mut plain, SECRET).as_deref(), Some(SECRET));
    drop(plain);
    assert!(!contains(&m.capture.lock().expect("lock"), b"hello-secret"));
    wait_for(5, "both kinds of connection", || {
        metric(
            &m.server,
            "istio_tcp_connections_closed_total",
            &["connection_security_policy=\"mutual_tls\""],
        ) >= 1.0
            && metric(
                &m.server,
                "istio_tcp_connections_closed_total",
                &["connection_security_policy=\"none\""],
            ) >= 1.0
    });
}

#[test]
fn disable_is_plaintext_end_to_end() {
    let m = mesh(
        TlsMode::Disable,
        MtlsMode::Disable,
        Duration::from_secs(3600),
    );
    let mut c = TcpStream::connect(m.client.listeners[0]).expect("connect");
    assert_eq!(round_trip(&mut c, SECRET).as_deref(), Some(SECRET));
    drop(c);
    assert!(contains(&m.capture.lock().expect("lock"), b"hello-secret"));
}

#[test]
fn mesh_client_to_a_server_without_identity_is_refused_not_downgraded() {
    // The client's configuration says mTLS, but the server sidecar has no certificate.
    let ca = Ca::start(Duration::from_secs(3600));
    let dir = tempfile::tempdir().expect("tmp");
    let app = echo();
    let server = proxy(
        Direction::Inbound,
        app,
        write_config(
            dir.path(),
            "server",
            &server_config(app, MtlsMode::Permissive),
        ),
        None,
    );
    let client = proxy(
        Direction::Outbound,
        SocketAddr::new(VIP.into(), 80),
        write_config(
            dir.path(),
            "client",
            &client_config(server.listeners[0].port(), TlsMode::IstioMutual),
        ),
        Some(ca.identity("client", "client-0", None)),
    );
    let mut c = TcpStream::connect(client.listeners[0]).expect("connect");
    assert_eq!(round_trip(&mut c, SECRET), None);
    wait_for(5, "a refused handshake", || {
        metric(
            &client,
            "ferry_mtls_refused_connections_total",
            &["reason=\"handshake\""],
        ) >= 1.0
    });
}

#[test]
fn rotation_keeps_open_connections_and_serves_new_ones() {
    // Certificates live 4 s: renewed about every 2 s.
    let m = mesh(
        TlsMode::IstioMutual,
        MtlsMode::Strict,
        Duration::from_secs(4),
    );
    let first_serial = m
        .server
        .identity
        .as_ref()
        .and_then(|i| i.current())
        .map(|c| c.serial.clone());
    let mut long_lived = TcpStream::connect(m.client.listeners[0]).expect("connect");
    let start = Instant::now();
    let mut rounds = 0;
    while start.elapsed() < Duration::from_secs(9) {
        assert_eq!(
            round_trip(&mut long_lived, SECRET).as_deref(),
            Some(SECRET),
            "the open connection survives rotations (round {rounds})"
        );
        rounds += 1;
        thread::sleep(Duration::from_millis(100));
    }
    for p in [&m.client, &m.server] {
        let renewals = metric(
            p,
            "ferry_identity_cert_renewals_total",
            &["outcome=\"success\""],
        );
        assert!(renewals >= 3.0, "renewed {renewals} times in 9 s");
    }
    let now_serial = m
        .server
        .identity
        .as_ref()
        .and_then(|i| i.current())
        .map(|c| c.serial.clone());
    assert_ne!(first_serial, now_serial, "a new certificate is in force");
    // A new connection handshakes with the new certificates.
    let mut fresh = TcpStream::connect(m.client.listeners[0]).expect("connect");
    assert_eq!(round_trip(&mut fresh, SECRET).as_deref(), Some(SECRET));
}
