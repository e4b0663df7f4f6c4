//! Helpers shared by the HTTP tracing tests: an app that records the headers it receives, a
//! proxy on a loopback listener, a plain HTTP/1.1 GET, and a client sidecar in front of a
//! server sidecar in front of the app, both exporting to an in-test OTLP/gRPC collector.

#![allow(dead_code)]

use bytes::Bytes;
use ferry_proxy::config::Tracing;
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

/// The headers of every request the app received, in order.
pub type Seen = Arc<Mutex<Vec<hyper::HeaderMap>>>;

/// An app that records the headers of every request and answers 200 (404 for `/missing`).
pub async fn app() -> (SocketAddr, Seen) {
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

/// A proxy with one loopback listener whose connections all go to `upstream`.
pub fn proxy(direction: Direction, upstream: SocketAddr, tracing: Option<Tracing>) -> Running {
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

/// One HTTP/1.1 GET for `back.default:8080` on a new connection; the status code.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
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

/// A header's value as text ("" when absent).
pub fn header(h: &hyper::HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Spans received so far, and more for up to `wait`, at most `n`.
pub async fn collect(
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

/// A client sidecar in front of a server sidecar in front of the app, and the spans their
/// collector received.
pub struct Mesh {
    /// The client sidecar (outbound listener).
    pub client: Running,
    /// The server sidecar (inbound listener).
    pub server: Running,
    /// What the app received.
    pub seen: Seen,
    /// Spans as the collector receives them.
    pub spans: mpsc::Receiver<ReceivedSpan>,
}

impl Mesh {
    /// A client and a server sidecar with these settings (the collector's address is filled
    /// in), started and with tracing on.
    pub async fn new(
        client: impl Fn(SocketAddr) -> Tracing,
        server: impl Fn(SocketAddr) -> Tracing,
    ) -> Mesh {
        let collector = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let collector_addr = collector.local_addr().expect("addr");
        let (spans, _task) = serve_otlp_receiver(collector, 256);
        let (app, seen) = app().await;
        let server = proxy(Direction::Inbound, app, Some(server(collector_addr)));
        let client = proxy(
            Direction::Outbound,
            server.listeners[0],
            Some(client(collector_addr)),
        );
        let mesh = Mesh {
            client,
            server,
            seen,
            spans,
        };
        // Tracing is switched on by each proxy's admin thread: a proxy with tracing on adds
        // an `x-request-id` to a request without one (whatever span kinds it reports), one
        // without tracing does not. Wait until both do.
        let deadline = Instant::now() + Duration::from_secs(5);
        for addr in [mesh.server.listeners[0], mesh.client.listeners[0]] {
            loop {
                get(addr, "/warmup", &[("x-b3-sampled", "0")]).await;
                if mesh.last_seen().contains_key("x-request-id") {
                    break;
                }
                assert!(Instant::now() < deadline, "tracing never came on");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        mesh
    }

    /// The headers of the app's last request.
    pub fn last_seen(&self) -> hyper::HeaderMap {
        self.seen
            .lock()
            .ok()
            .and_then(|s| s.last().cloned())
            .unwrap_or_default()
    }

    /// Spans of request `id`: waits for `n`, then a little longer for any more.
    pub async fn spans_of(&mut self, id: &str, n: usize) -> Vec<ReceivedSpan> {
        let mut found = Vec::new();
        let mut deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut settled = false;
        loop {
            match tokio::time::timeout_at(deadline, self.spans.recv()).await {
                Ok(Some(s)) => {
                    if s.attributes.get("guid:x-request-id").map(String::as_str) == Some(id) {
                        found.push(s);
                    }
                }
                _ => break,
            }
            if found.len() >= n && !settled {
                // Anything more from the same request would come in the next batch.
                settled = true;
                deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
            }
        }
        found
    }

    /// Stops both sidecars.
    pub fn stop(self) {
        self.client.stop();
        self.server.stop();
    }
}
