//! The side doors of a whole in-process proxy over loopback: the admin API (15000), the
//! status port (15020) with merged metrics and the application's probes, and readiness
//! during a drain. Fake applications (HTTP, gRPC health, metrics) run in the test.

mod support;

use bytes::Bytes;
use ferry_proxy::admin::status::{StatusConfig, StatusEnv};
use ferry_proxy::lifecycle::Phase;
use ferry_proxy::listener::Direction;
use ferry_proxy::listener::orig_dst::FixedDst;
use ferry_proxy::server::{self, Options, Running};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use support::{http, wait_for};

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

/// A running proxy that is stopped when the test ends, even when it fails.
struct Proxy(Option<Running>);

impl Proxy {
    fn get(&self) -> &Running {
        self.0.as_ref().expect("running")
    }
    fn admin(&self) -> SocketAddr {
        self.get().admin.expect("admin bound")
    }
    fn status(&self) -> SocketAddr {
        self.get().status.expect("status bound")
    }
    fn health(&self) -> SocketAddr {
        self.get().health.expect("health bound")
    }
    fn listener(&self) -> SocketAddr {
        self.get().listeners[0]
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(r) = self.0.take() {
            r.stop();
        }
    }
}

fn start(env: StatusEnv, upstream: SocketAddr, customize: impl FnOnce(&mut Options)) -> Proxy {
    let (status_config, _warnings) = StatusConfig::from_env(&env);
    let mut options = Options {
        listeners: vec![(local(), Direction::Outbound)],
        metrics: Some(local()),
        health: Some(local()),
        admin: Some(local()),
        status: Some(local()),
        status_config,
        ..Default::default()
    };
    customize(&mut options);
    Proxy(Some(
        server::start(options, Arc::new(FixedDst(upstream))).expect("proxy starts"),
    ))
}

/// A runtime for the fake applications.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Serves HTTP/1.1 (or HTTP/2 with `h2`) with `handler` on a fresh loopback port.
fn serve<F, Fut>(rt: &tokio::runtime::Runtime, h2: bool, handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>>
        + Send
        + 'static,
{
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(local()))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let f = handler(req);
                    async move { Ok::<_, Infallible>(f.await) }
                });
                let io = TokioIo::new(stream);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                }
            });
        }
    });
    addr
}

fn body(
    status: u16,
    text: &'static str,
) -> Response<http_body_util::combinators::BoxBody<Bytes, Infallible>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed());
    *r.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
    r
}

/// An upstream that echoes what it reads.
fn echo() -> SocketAddr {
    let l = std::net::TcpListener::bind(local()).expect("bind");
    let addr = l.local_addr().expect("addr");
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            thread::spawn(move || {
                let mut r = s.try_clone().expect("clone");
                let mut w = s;
                let _ = std::io::copy(&mut r, &mut w);
            });
        }
    });
    addr
}

/// A port with nothing listening on it.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind(local()).expect("bind");
    l.local_addr().expect("addr")
}

/// Pushes one connection through the proxy so the Istio TCP metrics have a sample.
fn one_connection(proxy: &Proxy) {
    let mut s = TcpStream::connect(proxy.listener()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).expect("echo");
    assert_eq!(&buf, b"ping");
}

const CONFIG: &str = "version: v7
identity:
  pod: web-0
  namespace: default
services:
- name: redis
  namespace: default
  clusterIP: 198.19.0.1
  ports:
  - name: redis
    port: 6379
  endpoints:
  - ip: 198.18.0.2
    pod: redis-0
  - ip: 198.18.0.3
    ready: false
- name: db
  clusterIP: None
  ports:
  - name: tcp-db
    port: 5432
    targetPort: 15432
  endpoints:
  - ip: 198.18.0.9
";

#[test]
fn admin_api_endpoints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.yaml");
    std::fs::write(&path, CONFIG).expect("write");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let proxy = start(StatusEnv::default(), echo(), |o| o.config_file = Some(path));
    let admin = proxy.admin();
    assert!(admin.ip().is_loopback());

    let (code, index) = http(admin, "GET", "/");
    assert_eq!(code, 200);
    for endpoint in [
        "/config_dump",
        "/clusters",
        "/stats",
        "/logging",
        "/drain",
        "/quitquitquit",
        "/ready",
    ] {
        assert!(index.contains(endpoint), "{index}");
    }

    let (code, dump) = http(admin, "GET", "/config_dump");
    assert_eq!(code, 200);
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("JSON");
    assert_eq!(dump["version"], "v7");
    assert_eq!(dump["config"]["version"], "v7");
    assert_eq!(dump["config"]["identity"]["pod"], "web-0");
    assert_eq!(dump["config"]["services"][0]["name"], "redis");
    assert_eq!(dump["phase"], "running");
    let loaded = dump["loadedAtUnixSeconds"].as_u64().expect("seconds");
    assert!(loaded >= before && loaded <= before + 60, "{dump}");
    assert!(dump["loadedAt"].as_str().expect("time").ends_with('Z'));

    let (code, clusters) = http(admin, "GET", "/clusters");
    assert_eq!(code, 200);
    for line in [
        "outbound|6379||redis.default.svc.cluster.local::protocol::redis",
        "outbound|6379||redis.default.svc.cluster.local::vip::198.19.0.1:6379",
        "outbound|6379||redis.default.svc.cluster.local::198.18.0.2:6379::ready",
        "outbound|6379||redis.default.svc.cluster.local::198.18.0.2:6379::pod::redis-0",
        "outbound|6379||redis.default.svc.cluster.local::198.18.0.3:6379::not_ready",
        "outbound|5432||db.default.svc.cluster.local::headless::true",
        "outbound|5432||db.default.svc.cluster.local::198.18.0.9:15432::ready",
    ] {
        assert!(clusters.lines().any(|l| l == line), "{line} in\n{clusters}");
    }

    one_connection(&proxy);
    let (code, stats) = http(admin, "GET", "/stats");
    assert_eq!(code, 200);
    assert!(
        stats.contains("istio_tcp_connections_opened_total{"),
        "{stats}"
    );
    assert!(stats.contains("process_resident_memory_bytes"), "{stats}");

    let (code, _) = http(admin, "GET", "/ready");
    assert_eq!(code, 200);

    assert_eq!(http(admin, "GET", "/nope").0, 404);
    assert_eq!(http(admin, "GET", "/drain").0, 405);
    assert_eq!(http(admin, "GET", "/quitquitquit").0, 405);
    assert_eq!(http(admin, "POST", "/clusters").0, 405);
    assert_eq!(http(admin, "DELETE", "/logging").0, 405);
    // Nothing above started a drain.
    assert_eq!(proxy.get().lifecycle.phase(), Phase::Running);
}

#[test]
fn logging_levels() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    let proxy = start(StatusEnv::default(), echo(), move |o| {
        o.log_level = Some("warning".into());
        o.set_log_level = Some(Box::new(move |level| {
            record.lock().expect("lock").push(level.to_string());
            Ok(())
        }));
    });
    let admin = proxy.admin();
    let (code, body) = http(admin, "GET", "/logging");
    assert_eq!((code, body.lines().next()), (200, Some("level: warning")));

    let (code, body) = http(admin, "POST", "/logging?level=debug");
    assert_eq!((code, body.as_str()), (200, "level: debug\n"));
    assert_eq!(
        http(admin, "GET", "/logging").1.lines().next(),
        Some("level: debug")
    );

    let (code, body) = http(admin, "POST", "/logging?level=loud");
    assert_eq!(code, 400);
    assert!(body.contains("unknown log level \"loud\""), "{body}");
    assert_eq!(http(admin, "GET", "/logging?level=").0, 400);

    let (code, _) = http(admin, "GET", "/logging?level=ferry_proxy%3Dtrace%2Cwarn");
    assert_eq!(code, 200);
    assert_eq!(
        *seen.lock().expect("lock"),
        vec!["debug".to_string(), "ferry_proxy=trace,warn".to_string()]
    );

    // A setter that refuses is a 400 too, and the level in force does not change.
    let refusing = start(StatusEnv::default(), echo(), |o| {
        o.set_log_level = Some(Box::new(|_| Err("cannot".into())));
    });
    let (code, body) = http(refusing.admin(), "POST", "/logging?level=info");
    assert_eq!((code, body.as_str()), (400, "cannot\n"));
}

#[test]
fn drain_fails_readiness_and_closes_the_listener() {
    // An upstream that never reads: a connection with bytes stuck in the proxy keeps the
    // drain going, so the side doors stay up to be asked.
    let sink = std::net::TcpListener::bind(local()).expect("bind");
    let sink_addr = sink.local_addr().expect("addr");
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    thread::spawn(move || {
        for s in sink.incoming().flatten() {
            keep.lock().expect("lock").push(s);
        }
    });
    let proxy = start(StatusEnv::default(), sink_addr, |_| {});
    assert_eq!(http(proxy.health(), "GET", "/healthz/ready").0, 200);
    assert_eq!(http(proxy.status(), "GET", "/healthz/ready").0, 200);

    let mut stuck = TcpStream::connect(proxy.listener()).expect("connect");
    thread::spawn(move || {
        let chunk = vec![7u8; 64 * 1024];
        while stuck.write_all(&chunk).is_ok() {}
    });
    wait_for("the connection to be forwarded", || {
        !held.lock().expect("lock").is_empty()
    });
    thread::sleep(Duration::from_millis(300));

    let (code, body) = http(proxy.admin(), "POST", "/drain");
    assert_eq!((code, body.as_str()), (200, "draining\n"));
    assert_eq!(proxy.get().lifecycle.phase(), Phase::Draining);
    assert_eq!(http(proxy.health(), "GET", "/healthz/ready").0, 503);
    assert_eq!(http(proxy.status(), "GET", "/healthz/ready").0, 503);
    let (code, body) = http(proxy.admin(), "GET", "/ready");
    assert_eq!((code, body.as_str()), (503, "DRAINING\n"));
    let listener = proxy.listener();
    wait_for("the listener to close", || {
        TcpStream::connect(listener).is_err()
    });
}

#[test]
fn quitquitquit_closes_at_once() {
    let proxy = start(StatusEnv::default(), echo(), |_| {});
    let (code, body) = http(proxy.admin(), "POST", "/quitquitquit");
    assert_eq!((code, body.as_str()), (200, "OK\n"));
    let lifecycle = proxy.get().lifecycle.clone();
    wait_for("the proxy to close", || lifecycle.phase() == Phase::Closed);
    let mut proxy = proxy;
    let running = proxy.0.take().expect("running");
    let started = Instant::now();
    running.stop();
    assert!(started.elapsed() < Duration::from_secs(2));
}

const APP_METRICS: &str = "# HELP app_requests_total Requests the app served.
# TYPE app_requests_total counter
app_requests_total{path=\"/\"} 42
# HELP process_open_fds The app's open fds.
# TYPE process_open_fds gauge
process_open_fds{who=\"app\"} 3
";

#[test]
fn merged_metrics_hold_the_proxy_and_the_app() {
    let rt = runtime();
    let app = serve(&rt, false, |req: Request<Incoming>| async move {
        if req.uri().path() == "/custom" {
            body(200, APP_METRICS)
        } else {
            body(404, "no\n")
        }
    });
    let env = StatusEnv {
        prometheus: Some(
            json!({"scrape": "true", "path": "/custom", "port": app.port().to_string()})
                .to_string(),
        ),
        ..Default::default()
    };
    let proxy = start(env, echo(), |_| {});
    one_connection(&proxy);
    let (code, merged) = http(proxy.status(), "GET", "/stats/prometheus");
    assert_eq!(code, 200);
    assert!(
        merged.contains("app_requests_total{path=\"/\"} 42\n"),
        "{merged}"
    );
    assert!(
        merged.contains("process_open_fds{who=\"app\"} 3\n"),
        "{merged}"
    );
    assert!(
        merged.contains("istio_tcp_connections_opened_total{"),
        "{merged}"
    );
    assert!(merged.contains("process_resident_memory_bytes"), "{merged}");
    assert!(
        merged.contains("ferry_app_metrics_scrape_errors_total 0\n"),
        "{merged}"
    );
    assert_eq!(
        merged.matches("# TYPE process_open_fds ").count(),
        1,
        "{merged}"
    );
    assert_eq!(
        merged.matches("# HELP process_open_fds ").count(),
        1,
        "{merged}"
    );
    assert_eq!(
        merged.matches("# TYPE app_requests_total ").count(),
        1,
        "{merged}"
    );
    assert!(!merged.contains("# EOF"));

    // The app is down: the proxy's metrics are still served, and the failure counted.
    let env = StatusEnv {
        prometheus: Some(json!({"port": closed_port().port().to_string()}).to_string()),
        ..Default::default()
    };
    let proxy = start(env, echo(), |_| {});
    let (code, merged) = http(proxy.status(), "GET", "/stats/prometheus");
    assert_eq!(code, 200);
    assert!(merged.contains("process_resident_memory_bytes"), "{merged}");
    assert!(
        merged.contains("ferry_app_metrics_scrape_errors_total 1\n"),
        "{merged}"
    );
    assert!(
        merged.contains("# ferry: the application's metrics were not scraped"),
        "{merged}"
    );
    assert_eq!(http(proxy.status(), "GET", "/nope").0, 404);
    assert_eq!(http(proxy.status(), "POST", "/stats/prometheus").0, 405);
}

fn probers(map: serde_json::Value) -> StatusEnv {
    StatusEnv {
        probers: Some(map.to_string()),
        ..Default::default()
    }
}

#[test]
fn http_probes_follow_the_app() {
    let rt = runtime();
    let status = Arc::new(AtomicU16::new(200));
    let current = status.clone();
    let app = serve(&rt, false, move |req: Request<Incoming>| {
        let code = current.load(Ordering::Relaxed);
        async move {
            let probe_header = req.headers().get("x-probe").and_then(|v| v.to_str().ok());
            if req.uri().path() != "/ready" || probe_header != Some("yes") {
                return body(404, "wrong request\n");
            }
            match code {
                200 => body(200, "fine\n"),
                302 => body(302, ""),
                _ => body(500, "broken\n"),
            }
        }
    });
    let env = probers(json!({
        "/app-health/web/readyz": {"httpGet": {"path": "/ready", "port": app.port(), "host": "127.0.0.1",
            "httpHeaders": [{"name": "X-Probe", "value": "yes"}]}, "timeoutSeconds": 2},
        "/app-health/web/livez": {"httpGet": {"path": "/other", "port": app.port()}},
        "/app-lifecycle/web/prestopz": {"httpGet": {"path": "/ready", "port": "http"}},
    }));
    let proxy = start(env, echo(), |_| {});
    let status_addr = proxy.status();
    let (code, text) = http(status_addr, "GET", "/app-health/web/readyz");
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("HTTP 200"), "{text}");
    status.store(302, Ordering::Relaxed);
    assert_eq!(http(status_addr, "GET", "/app-health/web/readyz").0, 200);
    status.store(500, Ordering::Relaxed);
    let (code, text) = http(status_addr, "GET", "/app-health/web/readyz");
    assert_eq!(code, 503);
    assert!(text.contains("HTTP 500"), "{text}");
    status.store(200, Ordering::Relaxed);
    assert_eq!(http(status_addr, "GET", "/app-health/web/readyz").0, 200);

    // The app answers 404 to a path it does not serve: a failure.
    assert_eq!(http(status_addr, "GET", "/app-health/web/livez").0, 503);
    // A named port the injector could not resolve: 503 with the reason.
    let (code, text) = http(status_addr, "GET", "/app-lifecycle/web/prestopz");
    assert_eq!(code, 503);
    assert!(text.contains("\"http\""), "{text}");
    // Unknown paths and methods.
    assert_eq!(http(status_addr, "GET", "/app-health/web/startupz").0, 404);
    assert_eq!(http(status_addr, "POST", "/app-health/web/readyz").0, 405);
}

#[test]
fn tcp_probes_connect() {
    let open = std::net::TcpListener::bind(local()).expect("bind");
    let env = probers(json!({
        "/app-health/db/livez": {"tcpSocket": {"port": open.local_addr().expect("addr").port()}},
        "/app-health/db/readyz": {"tcpSocket": {"port": closed_port().port(), "host": "127.0.0.1"}},
    }));
    let proxy = start(env, echo(), |_| {});
    let (code, text) = http(proxy.status(), "GET", "/app-health/db/livez");
    assert_eq!(code, 200, "{text}");
    let (code, text) = http(proxy.status(), "GET", "/app-health/db/readyz");
    assert_eq!(code, 503);
    assert!(text.contains("TCP connect"), "{text}");
}

/// A gRPC health server: service `good` is SERVING, `bad` NOT_SERVING, others unknown.
fn grpc_health(rt: &tokio::runtime::Runtime) -> SocketAddr {
    serve(rt, true, |req: Request<Incoming>| async move {
        let path_ok = req.uri().path() == "/grpc.health.v1.Health/Check"
            && req
                .headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let request = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        // Frame header, then field 1 (tag 0x0a), its length, the service name.
        let service = request.get(7..).unwrap_or_default().to_vec();
        let mut trailers = hyper::HeaderMap::new();
        let status: Option<u8> = match (path_ok, service.as_slice()) {
            (true, b"good") => Some(1),
            (true, b"bad") => Some(2),
            _ => None,
        };
        let data = match status {
            Some(s) => {
                trailers.insert("grpc-status", "0".parse().expect("value"));
                Bytes::from(vec![0, 0, 0, 0, 2, 0x08, s])
            }
            None => {
                trailers.insert("grpc-status", "5".parse().expect("value"));
                trailers.insert("grpc-message", "unknown service".parse().expect("value"));
                Bytes::new()
            }
        };
        let mut r = Response::new(
            Full::new(data)
                .with_trailers(async move { Some(Ok(trailers)) })
                .boxed(),
        );
        r.headers_mut()
            .insert("content-type", "application/grpc".parse().expect("value"));
        r
    })
}

#[test]
fn grpc_probes_run_the_health_check() {
    let rt = runtime();
    let server = grpc_health(&rt);
    let env = probers(json!({
        "/app-health/api/readyz": {"grpc": {"port": server.port(), "service": "good"}},
        "/app-health/api/livez": {"grpc": {"port": server.port(), "service": "bad"}},
        "/app-health/api/startupz": {"grpc": {"port": server.port(), "service": "other"}},
        "/app-lifecycle/api/poststartz": {"grpc": {"port": closed_port().port()}},
    }));
    let proxy = start(env, echo(), |_| {});
    let (code, text) = http(proxy.status(), "GET", "/app-health/api/readyz");
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("SERVING"), "{text}");
    let (code, text) = http(proxy.status(), "GET", "/app-health/api/livez");
    assert_eq!(code, 503);
    assert!(text.contains("NOT_SERVING"), "{text}");
    let (code, text) = http(proxy.status(), "GET", "/app-health/api/startupz");
    assert_eq!(code, 503);
    assert!(text.contains("gRPC status 5 unknown service"), "{text}");
    let (code, text) = http(proxy.status(), "GET", "/app-lifecycle/api/poststartz");
    assert_eq!(code, 503);
    assert!(text.contains("cannot connect"), "{text}");
}

#[test]
fn probes_honour_their_timeout() {
    // Accepts connections and never answers.
    let silent = std::net::TcpListener::bind(local()).expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    thread::spawn(move || {
        for s in silent.incoming().flatten() {
            keep.lock().expect("lock").push(s);
        }
    });
    let env = probers(json!({
        "/app-health/slow/readyz": {"httpGet": {"path": "/", "port": port}, "timeoutSeconds": 1},
        "/app-health/slow/livez": {"grpc": {"port": port}},
    }));
    let proxy = start(env, echo(), |_| {});
    for path in ["/app-health/slow/readyz", "/app-health/slow/livez"] {
        let started = Instant::now();
        let (code, text) = http(proxy.status(), "GET", path);
        let took = started.elapsed();
        assert_eq!(code, 503, "{text}");
        assert!(text.contains("did not finish within 1s"), "{text}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
            "{path} took {took:?}"
        );
    }
}

#[test]
fn invalid_probers_answer_no_probe_configured() {
    let env = StatusEnv {
        probers: Some("{not json".into()),
        prometheus: Some("[]".into()),
        instance_ip: Some("not-an-ip".into()),
    };
    let (_, warnings) = StatusConfig::from_env(&env);
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    let proxy = start(env, echo(), |_| {});
    let (code, text) = http(proxy.status(), "GET", "/app-health/web/readyz");
    assert_eq!(code, 503);
    assert!(text.starts_with("no probe configured"), "{text}");
    // The merged metrics still work, with the proxy's only.
    let (code, merged) = http(proxy.status(), "GET", "/stats/prometheus");
    assert_eq!(code, 200);
    assert!(
        merged.contains("ferry_app_metrics_scrape_errors_total 0"),
        "{merged}"
    );
}

#[test]
fn side_doors_can_be_turned_off() {
    let proxy = start(StatusEnv::default(), echo(), |o| {
        o.admin = None;
        o.status = None;
    });
    assert!(proxy.get().admin.is_none());
    assert!(proxy.get().status.is_none());
    assert_eq!(http(proxy.health(), "GET", "/healthz/ready").0, 200);
}

#[test]
fn https_probes_skip_certificate_checks() {
    let rt = runtime();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["app.invalid".to_string()]).expect("cert");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(local()))
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let code = if req.uri().path() == "/secure" {
                        200
                    } else {
                        500
                    };
                    Ok::<_, Infallible>(body(code, "tls\n"))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    let env = probers(json!({
        "/app-health/tls/readyz": {"httpGet": {"path": "/secure", "port": port, "scheme": "HTTPS"}},
        "/app-health/tls/livez": {"httpGet": {"path": "/other", "port": port, "scheme": "HTTPS"}},
        // Plain HTTP to a TLS port fails.
        "/app-health/tls/startupz": {"httpGet": {"path": "/secure", "port": port}},
    }));
    let proxy = start(env, echo(), |_| {});
    let (code, text) = http(proxy.status(), "GET", "/app-health/tls/readyz");
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("https://127.0.0.1"), "{text}");
    let (code, text) = http(proxy.status(), "GET", "/app-health/tls/livez");
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("HTTP 500"), "{text}");
    assert_eq!(
        http(proxy.status(), "GET", "/app-health/tls/startupz").0,
        503
    );
}
