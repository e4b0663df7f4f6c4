//! Spans from the HTTP request path, in-process over loopback: a client sidecar (outbound
//! listener) in front of a server sidecar (inbound listener) in front of an app, both
//! exporting to an in-test OTLP/gRPC collector. Checked: one trace of a client and a server
//! span correctly parented, the context the app receives, Istio's tags, incoming W3C and
//! B3 contexts and sampling decisions honoured, and a proxy without tracing leaving the
//! headers alone.

mod trace_support;

use ferry_proxy::config::{Tracing, TracingProvider};
use ferry_proxy::listener::Direction;
use ferry_proxy::trace::serve_otlp_receiver;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use trace_support::{Mesh, app, collect, get, header, proxy};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_server_spans_join_one_trace() {
    let mut mesh = Mesh::new(|c| tracing(c, 100.0), |c| tracing(c, 100.0)).await;
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
    let mut mesh = Mesh::new(|c| tracing(c, 0.0), |c| tracing(c, 0.0)).await;
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
    let mut mesh = Mesh::new(|c| tracing(c, 100.0), |c| tracing(c, 100.0)).await;
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
