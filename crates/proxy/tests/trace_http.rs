//! Spans from the HTTP request path, in-process over loopback: a client sidecar (outbound
//! listener) in front of a server sidecar (inbound listener) in front of an app, both
//! exporting to an in-test OTLP/gRPC collector. Checked: one trace of a client and a server
//! span correctly parented, the context the app receives, Istio's tags, incoming W3C and
//! B3 contexts and sampling decisions honoured, and a proxy without tracing leaving the
//! headers alone.

use bytes::Bytes;
use ferry_proxy::config::{Tracing, TracingProvider};
use ferry_proxy::listener::Direction;
use ferry_proxy::listener::orig_dst::FixedDst;
use ferry_proxy::server::{self, Options, Running};
use ferry_proxy::trace::{ReceivedSpan, serve_otlp_receiver};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

type Seen = Arc<Mutex<Vec<hyper::HeaderMap>>>;

/// An app that records the headers of every request and answers 200 (404 for `/missing`).
async fn app() -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let sink = sink.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let sink = sink.clone();
                    async move {
                        if let Ok(mut s) = sink.lock() {
                            s.push(req.headers().clone());
                        }
                        let missing = req.uri().path() == "/missing";
                        let mut r = Response::new(Full::new(Bytes::from_static(b"hello")));
                        if missing {
                            *r.status_mut() = hyper::StatusCode::NOT_FOUND;
                        }
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn tracing(collector: SocketAddr, sampling: f64) -> Tracing {
    Tracing {
        provider: TracingProvider::OtlpGrpc,
        endpoint: format!("http://{collector}"),
        sampling_percentage: sampling,
        redis_spans: false,
        spans: Default::default(),
        custom_tags: Vec::new(),
        max_tag_length: 0,
    }
}

fn proxy(direction: Direction, upstream: SocketAddr, tracing: Option<Tracing>) -> Running {
    server::start(
        Options {
            listeners: vec![("127.0.0.1:0".parse().expect("addr"), direction)],
            tracing,
            ..Default::default()
        },
        Arc::new(FixedDst(upstream)),
    )
    .expect("proxy starts")
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = Request::get(path).header("host", "back.default:8080");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::new())).expect("request"))
        .await
        .expect("response");
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

fn header(h: &hyper::HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Spans received so far, and more for up to `wait`.
async fn collect(
    rx: &mut mpsc::Receiver<ReceivedSpan>,
    n: usize,
    wait: Duration,
) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while out.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(s)) => out.push(s),
            _ => break,
        }
    }
    out
}

struct Mesh {
    client: Running,
    server: Running,
    seen: Seen,
    spans: mpsc::Receiver<ReceivedSpan>,
}

impl Mesh {
    async fn new(sampling: f64) -> Mesh {
        let collector = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let collector_addr = collector.local_addr().expect("addr");
        let (spans, _task) = serve_otlp_receiver(collector, 64);
        let (app, seen) = app().await;
        let server = proxy(
            Direction::Inbound,
            app,
            Some(tracing(collector_addr, sampling)),
        );
        let client = proxy(
            Direction::Outbound,
            server.listeners[0],
            Some(tracing(collector_addr, sampling)),
        );
        let mesh = Mesh {
            client,
            server,
            seen,
            spans,
        };
        // Tracing is switched on by the proxies' admin threads: wait for it.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            get(mesh.client.listeners[0], "/warmup", &[]).await;
            let on = mesh
                .seen
                .lock()
                .map(|s| s.last().is_some_and(|h| h.contains_key("x-request-id")))
                .unwrap_or(false);
            if on {
                break;
            }
            assert!(Instant::now() < deadline, "tracing never came on");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        mesh
    }

    fn last_seen(&self) -> hyper::HeaderMap {
        self.seen
            .lock()
            .ok()
            .and_then(|s| s.last().cloned())
            .unwrap_or_default()
    }

    /// Spans of request `id`.
    async fn spans_of(&mut self, id: &str, n: usize) -> Vec<ReceivedSpan> {
        let mut found = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while found.len() < n && Instant::now() < deadline {
            for s in collect(&mut self.spans, 1, Duration::from_millis(200)).await {
                if s.attributes.get("guid:x-request-id").map(String::as_str) == Some(id) {
                    found.push(s);
                }
            }
        }
        // Anything more would come with the rest.
        for s in collect(&mut self.spans, 8, Duration::from_millis(300)).await {
            if s.attributes.get("guid:x-request-id").map(String::as_str) == Some(id) {
                found.push(s);
            }
        }
        found
    }

    fn stop(self) {
        self.client.stop();
        self.server.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_server_spans_join_one_trace() {
    let mut mesh = Mesh::new(100.0).await;
    let status = get(
        mesh.client.listeners[0],
        "/api/items?color=red",
        &[("x-request-id", "req-1"), ("user-agent", "trace-test")],
    )
    .await;
    assert_eq!(status, 200);
    let app_saw = mesh.last_seen();
    let spans = mesh.spans_of("req-1", 2).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let client = spans
        .iter()
        .find(|s| s.kind == "client")
        .expect("client span");
    let server = spans
        .iter()
        .find(|s| s.kind == "server")
        .expect("server span");
    assert_eq!(client.trace_id, server.trace_id);
    assert_eq!(
        client.parent_span_id, None,
        "a new trace starts at the client sidecar"
    );
    assert_eq!(
        server.parent_span_id.as_deref(),
        Some(client.span_id.as_str())
    );
    // The app gets the server span's context, in W3C and B3, and the request id.
    assert_eq!(
        header(&app_saw, "traceparent"),
        format!("00-{}-{}-01", server.trace_id, server.span_id)
    );
    assert_eq!(header(&app_saw, "x-b3-traceid"), server.trace_id);
    assert_eq!(header(&app_saw, "x-b3-spanid"), server.span_id);
    assert_eq!(header(&app_saw, "x-b3-parentspanid"), client.span_id);
    assert_eq!(header(&app_saw, "x-b3-sampled"), "1");
    assert_eq!(header(&app_saw, "x-request-id"), "req-1");
    // Istio's name and tags.
    assert_eq!(client.name, "back.default:8080/api/items");
    for s in [client, server] {
        let tag = |k: &str| s.attributes.get(k).cloned().unwrap_or_default();
        assert_eq!(tag("http.status_code"), "200", "{s:?}");
        assert_eq!(tag("http.method"), "GET");
        assert_eq!(tag("http.protocol"), "HTTP/1.1");
        assert_eq!(tag("response_flags"), "-");
        assert_eq!(tag("user_agent"), "trace-test");
        assert_eq!(tag("component"), "proxy");
        assert_eq!(
            tag("http.url"),
            "http://back.default:8080/api/items?color=red"
        );
        assert!(tag("peer.address").starts_with("127.0.0."), "{s:?}");
        assert_eq!(tag("response_size"), "5");
        assert!(!s.error);
    }
    assert_eq!(
        client
            .attributes
            .get("upstream_cluster")
            .map(String::as_str),
        Some("PassthroughCluster")
    );
    assert!(
        server
            .attributes
            .get("upstream_cluster")
            .is_some_and(|c| c.starts_with("inbound|"))
    );
    mesh.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_contexts_and_decisions_are_honoured() {
    // 0%: nothing starts a trace here, but incoming decisions still count.
    let mut mesh = Mesh::new(0.0).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";

    // W3C, sampled: joined.
    let tp = format!("00-{trace}-{parent}-01");
    get(
        mesh.client.listeners[0],
        "/w3c",
        &[("x-request-id", "w3c"), ("traceparent", &tp)],
    )
    .await;
    let spans = mesh.spans_of("w3c", 2).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    assert!(spans.iter().all(|s| s.trace_id == trace));
    let client = spans.iter().find(|s| s.kind == "client").expect("client");
    assert_eq!(client.parent_span_id.as_deref(), Some(parent));

    // B3 multi-headers, sampled: joined, B3 out as well.
    let b3_trace = "463ac35c9f6413ad48485a3953bb6124";
    let b3_span = "0020000000000001";
    get(
        mesh.client.listeners[0],
        "/b3",
        &[
            ("x-request-id", "b3"),
            ("x-b3-traceid", b3_trace),
            ("x-b3-spanid", b3_span),
            ("x-b3-sampled", "1"),
        ],
    )
    .await;
    let app_saw = mesh.last_seen();
    let spans = mesh.spans_of("b3", 2).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    assert!(spans.iter().all(|s| s.trace_id == b3_trace));
    assert_eq!(header(&app_saw, "x-b3-traceid"), b3_trace);
    assert!(header(&app_saw, "traceparent").starts_with(&format!("00-{b3_trace}-")));

    // Not sampled upstream: no spans, the decision carried on.
    let tp = format!("00-{trace}-{parent}-00");
    get(
        mesh.client.listeners[0],
        "/off",
        &[("x-request-id", "off"), ("traceparent", &tp)],
    )
    .await;
    let app_saw = mesh.last_seen();
    assert!(header(&app_saw, "traceparent").ends_with("-00"));
    assert!(header(&app_saw, "traceparent").starts_with(&format!("00-{trace}-")));
    assert_eq!(header(&app_saw, "x-b3-sampled"), "0");
    assert!(mesh.spans_of("off", 1).await.is_empty());

    // No context at 0%: a context is still made (unsampled), with a request id.
    get(mesh.client.listeners[0], "/none", &[]).await;
    let app_saw = mesh.last_seen();
    assert!(header(&app_saw, "traceparent").ends_with("-00"));
    assert_eq!(header(&app_saw, "x-request-id").len(), 36);

    // Malformed headers are ignored: a new (unsampled here) trace.
    get(
        mesh.client.listeners[0],
        "/bad",
        &[("traceparent", "00-zz-yy-01"), ("x-b3-traceid", "nothex")],
    )
    .await;
    let app_saw = mesh.last_seen();
    assert!(!header(&app_saw, "traceparent").contains("zz"));
    mesh.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_marked_and_tracing_off_changes_nothing() {
    let mut mesh = Mesh::new(100.0).await;
    let status = get(
        mesh.client.listeners[0],
        "/missing",
        &[("x-request-id", "nf")],
    )
    .await;
    assert_eq!(status, 404);
    let spans = mesh.spans_of("nf", 2).await;
    assert_eq!(spans.len(), 2);
    assert!(
        spans
            .iter()
            .all(|s| s.attributes.get("http.status_code").map(String::as_str) == Some("404"))
    );
    mesh.stop();

    // A 503 from the proxy itself (nothing listening upstream) is an error span with UF.
    let collector = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let collector_addr = collector.local_addr().expect("addr");
    let (mut rx, _task) = serve_otlp_receiver(collector, 64);
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let client = proxy(
        Direction::Outbound,
        dead,
        Some(tracing(collector_addr, 100.0)),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let span = loop {
        assert_eq!(
            get(client.listeners[0], "/x", &[("x-request-id", "uf")]).await,
            503
        );
        let got = collect(&mut rx, 1, Duration::from_millis(300)).await;
        if let Some(s) = got
            .into_iter()
            .find(|s| s.attributes.get("guid:x-request-id").map(String::as_str) == Some("uf"))
        {
            break s;
        }
        assert!(Instant::now() < deadline, "no span for a 503");
    };
    assert!(span.error);
    assert_eq!(
        span.attributes.get("response_flags").map(String::as_str),
        Some("UF")
    );
    assert_eq!(
        span.attributes.get("http.status_code").map(String::as_str),
        Some("503")
    );
    client.stop();

    // Tracing off: the request goes through untouched.
    let (app, seen) = app().await;
    let plain = proxy(Direction::Outbound, app, None);
    assert_eq!(get(plain.listeners[0], "/plain", &[]).await, 200);
    let saw = seen
        .lock()
        .ok()
        .and_then(|s| s.last().cloned())
        .unwrap_or_default();
    assert!(!saw.contains_key("traceparent") && !saw.contains_key("x-request-id"));
    plain.stop();
}
