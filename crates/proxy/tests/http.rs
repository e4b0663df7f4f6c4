//! HTTP through the proxy, in-process over loopback: HTTP/1.1 keep-alive and HTTP/2 with
//! prior knowledge are detected, proxied request by request, and counted in
//! `istio_requests_total` with their response codes; an unreachable upstream is a 503.

mod support;

use bytes::Bytes;
use ferry_proxy::listener::Direction;
use ferry_proxy::listener::orig_dst::FixedDst;
use ferry_proxy::server::{self, Options, Running};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::metric_sum;

/// An upstream answering `/ok` with 200 and the request body echoed, anything else 404.
async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let ok = req.uri().path() == "/ok";
                    let host = req
                        .headers()
                        .get("host")
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let mut r = Response::new(Full::new(if body.is_empty() {
                        Bytes::from(host)
                    } else {
                        body
                    }));
                    if !ok {
                        *r.status_mut() = StatusCode::NOT_FOUND;
                    }
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn start(upstream: SocketAddr) -> Running {
    server::start(
        Options {
            listeners: vec![("127.0.0.1:0".parse().expect("addr"), Direction::Outbound)],
            metrics: Some("127.0.0.1:0".parse().expect("addr")),
            ..Default::default()
        },
        Arc::new(FixedDst(upstream)),
    )
    .expect("proxy starts")
}

fn requests(proxy: &Running, needles: &[&str]) -> f64 {
    metric_sum(
        proxy.metrics.expect("metrics"),
        "istio_requests_total",
        needles,
    )
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_keep_alive_requests_are_proxied_and_counted() {
    let proxy = start(upstream().await);
    let stream = tokio::net::TcpStream::connect(proxy.listeners[0])
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    for (path, code) in [("/ok", 200), ("/ok", 200), ("/missing", 404)] {
        let req = Request::post(path)
            .header("host", "echo.default.svc.cluster.local")
            .body(Full::new(Bytes::from_static(b"payload")))
            .expect("request");
        sender.ready().await.expect("connection kept alive");
        let resp = sender
            .send_request(req)
            .await
            .expect("response on the same connection");
        assert_eq!(resp.status().as_u16(), code);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"payload");
    }
    wait_for("request metrics", || {
        requests(
            &proxy,
            &["response_code=\"200\"", "request_protocol=\"http\""],
        ) == 2.0
            && requests(&proxy, &["response_code=\"404\""]) == 1.0
    })
    .await;
    proxy.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_is_detected() {
    let proxy = start(upstream().await);
    let stream = tokio::net::TcpStream::connect(proxy.listeners[0])
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let mut handles = Vec::new();
    for _ in 0..10 {
        let req = Request::get("http://svc.example/ok")
            .body(Full::new(Bytes::from_static(b"x")))
            .expect("request");
        handles.push(sender.send_request(req));
    }
    for h in handles {
        assert_eq!(h.await.expect("response").status(), StatusCode::OK);
    }
    wait_for("h2 request metrics", || {
        requests(&proxy, &["response_code=\"200\""]) == 10.0
    })
    .await;
    proxy.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_a_503_with_uf() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let proxy = start(dead);
    let stream = tokio::net::TcpStream::connect(proxy.listeners[0])
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            Request::get("/ok")
                .header("host", "x")
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    wait_for("503 metric", || {
        requests(&proxy, &["response_code=\"503\"", "response_flags=\"UF\""]) == 1.0
    })
    .await;
    proxy.stop();
}
