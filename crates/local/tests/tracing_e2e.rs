//! Root end-to-end test of distributed tracing through the `ferry` binary, on the mesh of
//! `examples/tracing` (client -> front -> back over HTTP, front -> Redis): one request makes
//! one trace of four spans (a client and a server span per hop) correctly parented, received
//! over OTLP/gRPC by `ferry trace-collector` (tracing set through the pods'
//! `proxyMetadata`, Redis command spans on), then, in a second mesh, over Zipkin JSON v2 by
//! an in-test endpoint (tracing set through Istio's `proxy.istio.io/config`
//! `tracing.zipkin`, compiled by the control plane; Redis spans off, and none arrive).
//!
//! The meshes run on their own bridge and networks (`198.18.200.0/24`, services
//! `198.19.200.0/24`), and the collectors listen on that bridge's address only. Skipped
//! unless root with iproute2, iptables, setpriv, Redis, python3 and curl; needs the `ferry`
//! binary of the same build (`cargo build -p ferry-cli`).

mod support;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const BRIDGE: &str = "ferry-tr0";
const POD_CIDR: &str = "198.18.200.0/24";
const SERVICE_CIDR: &str = "198.19.200.0/24";
const GATEWAY: &str = "198.18.200.1";
const OTLP_PORT: u16 = 4317;
const ZIPKIN_PORT: u16 = 9411;
/// What the example's annotations say; replaced per phase.
const EXAMPLE_TRACING: &str = r#"'{"proxyMetadata":{"FERRY_TRACING_PROVIDER":"otlp-grpc","FERRY_TRACING_ENDPOINT":"http://198.18.0.1:4317","FERRY_TRACING_SAMPLING":"100","FERRY_TRACING_REDIS_SPANS":"true"}}'"#;

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tracing")
}

/// The example's manifests with `tracing` as every pod's `proxy.istio.io/config`, one Redis
/// replica (front reads redis-0), and the app's absolute path.
fn manifests(dir: &Path, tracing: &str) {
    let app = example_dir().join("app.py");
    let app = app.to_string_lossy();
    for file in ["namespace.yaml", "apps.yaml", "redis.yaml"] {
        let text = std::fs::read_to_string(example_dir().join(file)).expect("example manifest");
        assert!(
            file == "namespace.yaml" || text.contains(EXAMPLE_TRACING),
            "{file} has the example's tracing annotation"
        );
        let text = text
            .replace(EXAMPLE_TRACING, tracing)
            .replace("examples/tracing/app.py", &app)
            .replace("replicas: 2", "replicas: 1")
            .replace("redis-1.redis:6379", "redis-0.redis:6379");
        std::fs::write(dir.join(file), text).expect("write manifest");
    }
}

/// `ferry up` over `dir` on the test's own bridge and networks.
fn start(ferry: &Path, dir: &Path, state_dir: &Path) -> Up {
    let args = own_network(BRIDGE, POD_CIDR, SERVICE_CIDR);
    Up::start(ferry, dir, state_dir, &args)
}

/// Waits until a pod of each of `prefixes` is ready; returns their names and the status.
fn ready(up: &mut Up, prefixes: &[&str]) -> (Vec<String>, Value) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        up.assert_running();
        if let Some(ready) = ready_now(up, prefixes) {
            return ready;
        }
        if Instant::now() >= deadline {
            let status = up.ferry(&["status"]);
            panic!(
                "timed out waiting for pods {prefixes:?} ready:\n{}{}",
                String::from_utf8_lossy(&status.stdout),
                String::from_utf8_lossy(&status.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ready_now(up: &Up, prefixes: &[&str]) -> Option<(Vec<String>, Value)> {
    let status = up.status()?;
    let pods = status["pods"].as_array()?;
    let mut names = Vec::new();
    for prefix in prefixes {
        let p = pods
            .iter()
            .find(|p| p["name"].as_str().is_some_and(|n| n.starts_with(prefix)))?;
        if p["ready"].as_bool() != Some(true) {
            return None;
        }
        names.push(p["name"].as_str()?.to_string());
    }
    Some((names, status))
}

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A span as both receivers give it: (trace, span, parent, kind, name, service, tags).
#[derive(Debug, Clone)]
struct Seen {
    trace: String,
    span: String,
    parent: Option<String>,
    kind: String,
    name: String,
    service: String,
    tags: serde_json::Map<String, Value>,
}

impl Seen {
    fn tag(&self, key: &str) -> String {
        match self.tags.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => String::new(),
        }
    }
}

/// `ferry trace-collector --json` on the bridge address; its spans.
fn otlp_collector(ferry: &Path) -> (Killed, Arc<Mutex<Vec<Seen>>>) {
    let mut child = Command::new(ferry)
        .args(["trace-collector", "--json", "--listen"])
        .arg(format!("{GATEWAY}:{OTLP_PORT}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ferry trace-collector starts");
    let stdout = child.stdout.take().expect("collector stdout");
    let spans = Arc::new(Mutex::new(Vec::new()));
    let sink = spans.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            let seen = Seen {
                trace: text("traceId"),
                span: text("spanId"),
                parent: v["parentSpanId"].as_str().map(str::to_string),
                kind: text("kind"),
                name: text("name"),
                service: text("service"),
                tags: v["attributes"].as_object().cloned().unwrap_or_default(),
            };
            if let Ok(mut s) = sink.lock() {
                s.push(seen);
            }
        }
    });
    (Killed(child), spans)
}

/// Reads one HTTP/1.1 request (headers and a `content-length` body); `None` at the end.
fn read_request(r: &mut BufReader<std::net::TcpStream>) -> Option<Vec<u8>> {
    let mut length = 0usize;
    let mut first = true;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() && !first {
            break;
        }
        first = false;
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).ok()?;
    Some(body)
}

/// A Zipkin JSON v2 endpoint (`POST /api/v2/spans`) on the bridge address; its spans.
fn zipkin_endpoint() -> Arc<Mutex<Vec<Seen>>> {
    let listener =
        std::net::TcpListener::bind((GATEWAY, ZIPKIN_PORT)).expect("zipkin endpoint binds");
    let spans = Arc::new(Mutex::new(Vec::new()));
    let sink = spans.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let sink = sink.clone();
            std::thread::spawn(move || {
                let Ok(mut out) = stream.try_clone() else {
                    return;
                };
                let mut reader = BufReader::new(stream);
                while let Some(body) = read_request(&mut reader) {
                    let list: Vec<Value> = serde_json::from_slice(&body).unwrap_or_default();
                    if let Ok(mut s) = sink.lock() {
                        for v in list {
                            let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
                            s.push(Seen {
                                trace: text("traceId"),
                                span: text("id"),
                                parent: v["parentId"].as_str().map(str::to_string),
                                kind: text("kind").to_lowercase(),
                                name: text("name"),
                                service: v["localEndpoint"]["serviceName"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .to_string(),
                                tags: v["tags"].as_object().cloned().unwrap_or_default(),
                            });
                        }
                    }
                    let answer = b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n";
                    if out.write_all(answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    spans
}

/// Sends one request from the client pod through front to back with `id` as its
/// `x-request-id`, until it succeeds.
fn request(up: &Up, client: &str, id: &str) -> String {
    let header = format!("x-request-id: {id}");
    wait_for("a request through front and back", 60, || {
        let (ok, body) = up.exec(
            client,
            &[
                "curl",
                "-sf",
                "-m",
                "10",
                "-H",
                &header,
                "http://front:8080/e2e?q=1",
            ],
        );
        (ok && body.contains("back path=/e2e")).then_some(body)
    })
}

/// The spans of request `id`, once there are `n`.
fn spans_of(spans: &Mutex<Vec<Seen>>, id: &str, n: usize) -> Vec<Seen> {
    let mut found = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        found = spans
            .lock()
            .map(|s| {
                s.iter()
                    .filter(|s| s.tag("guid:x-request-id") == id)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if found.len() >= n {
            // Anything more would arrive at once with the rest: give it a moment.
            std::thread::sleep(Duration::from_millis(500));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    spans
        .lock()
        .map(|s| {
            s.iter()
                .filter(|s| s.tag("guid:x-request-id") == id)
                .cloned()
                .collect()
        })
        .unwrap_or(found)
}

/// One trace of four spans: client (client pod) -> server (front) -> client (front) ->
/// server (back), each the parent of the next, with Istio's tags.
fn check_trace(spans: &[Seen], id: &str) {
    assert_eq!(spans.len(), 4, "four spans for {id}: {spans:#?}");
    let trace = &spans[0].trace;
    assert!(
        spans.iter().all(|s| &s.trace == trace),
        "one trace: {spans:#?}"
    );
    let find = |service: &str, kind: &str| {
        spans
            .iter()
            .find(|s| s.service.starts_with(service) && s.kind == kind)
            .unwrap_or_else(|| panic!("a {kind} span of {service}: {spans:#?}"))
    };
    let c1 = find("client.", "client");
    let s1 = find("front.", "server");
    let c2 = find("front.", "client");
    let s2 = find("back.", "server");
    assert_eq!(c1.parent, None, "the client pod's span starts the trace");
    assert_eq!(s1.parent.as_deref(), Some(c1.span.as_str()), "front server");
    assert_eq!(s2.parent.as_deref(), Some(c2.span.as_str()), "back server");
    assert_eq!(c2.parent.as_deref(), Some(s1.span.as_str()), "front client");
    for s in spans {
        assert!(s.name.ends_with(":8080/e2e"), "operation name: {}", s.name);
        assert_eq!(s.tag("http.status_code"), "200", "{s:?}");
        assert_eq!(s.tag("response_flags"), "-", "{s:?}");
        assert_eq!(s.tag("http.method"), "GET");
        assert_eq!(s.tag("component"), "proxy");
        assert!(!s.tag("peer.address").is_empty(), "{s:?}");
        assert!(s.tag("node_id").starts_with("sidecar~198.18.200."), "{s:?}");
    }
    assert_eq!(
        c1.tag("upstream_cluster"),
        "outbound|8080||front.default.svc.cluster.local"
    );
    assert_eq!(
        c2.tag("upstream_cluster"),
        "outbound|8080||back.default.svc.cluster.local"
    );
    assert_eq!(s2.tag("upstream_cluster"), "inbound|8080||");
    assert_eq!(c1.name, "front.default.svc.cluster.local:8080/e2e");
}

fn redis_spans(spans: &Mutex<Vec<Seen>>) -> Vec<Seen> {
    spans
        .lock()
        .map(|s| {
            s.iter()
                .filter(|s| s.name.starts_with("redis "))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn traces_cross_the_mesh_over_otlp_and_zipkin() {
    let Some(ferry) = can_run(&["redis-server", "python3", "curl"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut seen = Vec::new();

    // 1. OTLP/gRPC to `ferry trace-collector`, from proxyMetadata; Redis spans on.
    {
        let manifests_dir = dir.path().join("otlp");
        let state_dir = dir.path().join("otlp-state");
        std::fs::create_dir_all(&manifests_dir).expect("mkdir");
        let tracing = format!(
            r#"'{{"proxyMetadata":{{"FERRY_TRACING_PROVIDER":"otlp-grpc","FERRY_TRACING_ENDPOINT":"http://{GATEWAY}:{OTLP_PORT}","FERRY_TRACING_SAMPLING":"100","FERRY_TRACING_REDIS_SPANS":"true"}}}}'"#
        );
        manifests(&manifests_dir, &tracing);
        let mut up = start(&ferry, &manifests_dir, &state_dir);
        let (pods, status) = ready(&mut up, &["client", "front", "back", "redis-0"]);
        seen.push((status, state_dir));
        let (_collector, spans) = otlp_collector(&ferry);
        // The collector is up once it accepts connections.
        wait_for("the OTLP collector", 20, || {
            std::net::TcpStream::connect((GATEWAY, OTLP_PORT)).ok()
        });
        // Until every app listens, sidecars answer 503 and retry (spans of their own).
        request(&up, &pods[0], "e2e-otlp-warmup");
        let id = "e2e-otlp-1";
        let body = request(&up, &pods[0], id);
        assert!(
            body.contains("traceparent=00-"),
            "back got a context: {body}"
        );
        let got = spans_of(&spans, id, 4);
        check_trace(&got, id);
        // Redis command spans from front's sidecar (client) and redis-0's (server): each a
        // new trace, with the command and its argument count, never the key.
        let redis = wait_for("Redis command spans", 20, || {
            let r = redis_spans(&spans);
            let client = r.iter().any(|s| s.kind == "client");
            let server = r.iter().any(|s| s.kind == "server");
            (client && server).then_some(r)
        });
        for s in &redis {
            assert_eq!(s.tag("db.system"), "redis", "{s:?}");
            assert_eq!(s.tag("destination_pod"), "redis-0", "{s:?}");
            assert_ne!(s.trace, got[0].trace, "RESP carries no context");
            assert!(
                !s.tags.values().any(|v| v.as_str() == Some("greeting")),
                "no keys in span tags: {s:?}"
            );
        }
        let get = redis
            .iter()
            .find(|s| s.name == "redis GET")
            .unwrap_or_else(|| panic!("a GET span among {redis:#?}"));
        assert_eq!(get.tag("ferry.redis.arg_count"), "1");
        assert_eq!(get.tag("source_pod"), pods[1]);
    }

    // 2. Zipkin JSON v2, from Istio's `tracing.zipkin` (the control plane compiles it);
    //    Redis spans off.
    {
        let manifests_dir = dir.path().join("zipkin");
        let state_dir = dir.path().join("zipkin-state");
        std::fs::create_dir_all(&manifests_dir).expect("mkdir");
        let tracing = format!(
            r#"'{{"tracing":{{"sampling":100,"zipkin":{{"address":"{GATEWAY}:{ZIPKIN_PORT}"}}}}}}'"#
        );
        manifests(&manifests_dir, &tracing);
        let mut up = start(&ferry, &manifests_dir, &state_dir);
        let (pods, status) = ready(&mut up, &["client", "front", "back", "redis-0"]);
        seen.push((status, state_dir));
        let spans = zipkin_endpoint();
        request(&up, &pods[0], "e2e-zipkin-warmup");
        let id = "e2e-zipkin-1";
        request(&up, &pods[0], id);
        let got = spans_of(&spans, id, 4);
        check_trace(&got, id);
        // The HTTP spans arrived; Redis commands went on (front reads redis-0 per
        // request) without spans.
        request(&up, &pods[0], "e2e-zipkin-2");
        spans_of(&spans, "e2e-zipkin-2", 4);
        assert_eq!(redis_spans(&spans).len(), 0, "Redis spans are off");
    }
    for (status, state_dir) in seen {
        assert_nothing_left(&[status], BRIDGE, &state_dir);
    }
}
