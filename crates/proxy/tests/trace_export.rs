//! Span export over loopback: an in-test OTLP/gRPC collector (opentelemetry-proto's
//! `TraceService`, via `ferry_proxy::trace::serve_otlp_receiver`), an in-test HTTP endpoint for
//! Zipkin JSON v2 and OTLP/HTTP, and a stalled collector that must cost drops, not waiting.

use bytes::Bytes;
use ferry_proxy::trace::export::ZipkinSpan;
use ferry_proxy::trace::receiver::flatten;
use ferry_proxy::trace::{
    Provider, ReceivedSpan, Sampler, Span, SpanKind, TraceConfig, TraceMetrics, TraceResource,
    Tracer, extract, inject, serve_otlp_receiver,
};
use http_body_util::{BodyExt, Full};
use hyper::http::{HeaderMap, Response};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

fn config(provider: Provider, endpoint: String, max_queue: usize) -> TraceConfig {
    TraceConfig {
        provider,
        endpoint,
        sampling_percentage: 100.0,
        redis_spans: false,
        max_queue,
    }
}

fn resource() -> TraceResource {
    TraceResource {
        service_name: "front.default".into(),
        attributes: vec![("k8s.pod.name".into(), "front-1".into())],
    }
}

/// A client span (new root, as the client sidecar makes one for a request without context)
/// and the server span the next sidecar makes from the headers the first one injected.
fn client_and_server() -> (Span, Span) {
    let sampler = Sampler::new(100.0);
    let mut wire = HeaderMap::new();
    let client_ctx = sampler.child_of(&extract(&wire));
    inject(&client_ctx, &mut wire);
    let server_ctx = sampler.child_of(&extract(&wire));
    let now = SystemTime::now();
    let mut client = Span::new(&client_ctx, "back:8080/api".into(), SpanKind::Client, now);
    client.end = now + Duration::from_millis(5);
    client.attr("http.status_code", 200i64);
    let mut server = Span::new(
        &server_ctx,
        "back:8080/api".into(),
        SpanKind::Server,
        now + Duration::from_millis(1),
    );
    server.end = now + Duration::from_millis(4);
    (client, server)
}

fn check_pair(got: &[ReceivedSpan], client: &Span, server: &Span) {
    let c = got
        .iter()
        .find(|s| s.kind == "client")
        .expect("client span");
    let s = got
        .iter()
        .find(|s| s.kind == "server")
        .expect("server span");
    assert_eq!(c.trace_id, client.trace_id.to_hex());
    assert_eq!(s.trace_id, c.trace_id);
    assert_eq!(c.span_id, client.span_id.to_hex());
    assert_eq!(c.parent_span_id, None);
    assert_eq!(s.span_id, server.span_id.to_hex());
    assert_eq!(s.parent_span_id.as_deref(), Some(c.span_id.as_str()));
    assert_eq!(c.service_name, "front.default");
    assert_eq!(
        c.attributes.get("http.status_code").map(String::as_str),
        Some("200")
    );
}

#[tokio::test]
async fn otlp_grpc_collector_receives_parented_spans() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (mut rx, server) = serve_otlp_receiver(listener, 64);
    let (tracer, task) = Tracer::start(
        &config(Provider::OtlpGrpc, format!("http://{addr}"), 64),
        resource(),
        TraceMetrics::default(),
    );
    let (client, srv) = client_and_server();
    tracer.record(client.clone());
    tracer.record(srv.clone());
    let mut got = Vec::new();
    while got.len() < 2 {
        let s = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("spans within 10s")
            .expect("receiver open");
        got.push(s);
    }
    check_pair(&got, &client, &srv);
    assert_eq!(tracer.metrics().dropped.get(), 0);
    let rendered = ferry_proxy::trace::receiver::render_tree(&got);
    assert!(rendered.contains("client back:8080/api"), "{rendered}");
    assert!(rendered.contains("    server back:8080/api"), "{rendered}");
    drop(tracer);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert!(got.len() == 2);
    server.abort();
}

/// An HTTP endpoint that answers 202 and forwards every request body.
async fn http_collector() -> (String, mpsc::Receiver<(String, Bytes)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await?.to_bytes();
                        let _ = tx.send((path, body)).await;
                        let mut resp = Response::new(Full::new(Bytes::new()));
                        *resp.status_mut() = hyper::StatusCode::ACCEPTED;
                        Ok::<_, hyper::Error>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), rx)
}

#[tokio::test]
async fn zipkin_endpoint_receives_json_v2() {
    let (base, mut rx) = http_collector().await;
    let (tracer, _task) = Tracer::start(
        &config(Provider::Zipkin, format!("{base}/api/v2/spans"), 64),
        resource(),
        TraceMetrics::default(),
    );
    let (client, srv) = client_and_server();
    tracer.record(client.clone());
    tracer.record(srv.clone());
    let mut got: Vec<ZipkinSpan> = Vec::new();
    while got.len() < 2 {
        let (path, body) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a post within 10s")
            .expect("open");
        assert_eq!(path, "/api/v2/spans");
        let batch: Vec<ZipkinSpan> = serde_json::from_slice(&body).expect("zipkin json v2");
        got.extend(batch);
    }
    let as_received: Vec<ReceivedSpan> = got
        .iter()
        .map(|z| ReceivedSpan {
            service_name: z.local_endpoint.service_name.clone(),
            trace_id: z.trace_id.clone(),
            span_id: z.id.clone(),
            parent_span_id: z.parent_id.clone(),
            name: z.name.clone(),
            kind: z.kind.to_lowercase(),
            start_unix_nanos: z.timestamp * 1000,
            end_unix_nanos: (z.timestamp + z.duration) * 1000,
            attributes: z.tags.clone().into_iter().collect(),
            error: false,
        })
        .collect();
    check_pair(&as_received, &client, &srv);
    let c = got.iter().find(|z| z.kind == "CLIENT").unwrap();
    assert_eq!(c.duration, 5000);
}

#[tokio::test]
async fn otlp_http_endpoint_receives_protobuf() {
    let (base, mut rx) = http_collector().await;
    let (tracer, _task) = Tracer::start(
        &config(Provider::OtlpHttp, format!("{base}/v1/traces"), 64),
        resource(),
        TraceMetrics::default(),
    );
    let (client, srv) = client_and_server();
    tracer.record(client.clone());
    tracer.record(srv.clone());
    let mut got = Vec::new();
    while got.len() < 2 {
        let (path, body) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a post within 10s")
            .expect("open");
        assert_eq!(path, "/v1/traces");
        let req = ExportTraceServiceRequest::decode(body).expect("otlp protobuf");
        got.extend(flatten(&req));
    }
    check_pair(&got, &client, &srv);
    // The exported counter follows.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tracer.metrics().exported.get() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(tracer.metrics().exported.get(), 2);
}

/// A collector that accepts connections and never answers: the queue fills, spans are dropped
/// and counted, and `record` never waits.
#[tokio::test]
async fn stalled_collector_drops_and_counts() {
    for provider in [Provider::Zipkin, Provider::OtlpGrpc] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                conns.push(s);
            }
        });
        let metrics = TraceMetrics::default();
        let (tracer, _task) = Tracer::start(
            &config(provider, format!("http://{addr}"), 16),
            resource(),
            metrics.clone(),
        );
        let (client, _) = client_and_server();
        let started = Instant::now();
        for _ in 0..10_000 {
            tracer.record(client.clone());
        }
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "record waited: {took:?}");
        // At most one batch in flight plus the queue's 16 can be held.
        assert!(
            metrics.dropped.get() >= 10_000 - 16 - 512,
            "{provider:?}: dropped {}",
            metrics.dropped.get()
        );
        assert_eq!(metrics.exported.get(), 0);
        hold.abort();
    }
}

/// Tracing off is `None`: the data path's only cost is the branch.
#[test]
fn disabled_tracer_is_a_branch() {
    let tracer: Option<Tracer> = None;
    let mut h = HeaderMap::new();
    if let Some(t) = &tracer {
        let ctx = t.sampler().child_of(&extract(&h));
        inject(&ctx, &mut h);
    }
    assert!(h.is_empty());
}
