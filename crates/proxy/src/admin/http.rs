//! The HTTP server of the side doors, built on hyper, and the routing of each door: metrics
//! (15090) and readiness (15021) here, the admin API and the status port in their modules.

use super::{AdminState, api, status};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::debug;

/// A response body.
pub type Body = Full<Bytes>;

/// Which side door a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// 15090: `/stats/prometheus`.
    Metrics,
    /// 15021: `/healthz/ready`.
    Health,
    /// 15000: the admin API (loopback only).
    Admin,
    /// 15020: merged metrics, readiness and application probes.
    Status,
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// 405, naming the methods the path allows.
pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed; use {allow}\n"),
    );
    r.headers_mut().insert(
        hyper::header::ALLOW,
        hyper::header::HeaderValue::from_static(allow),
    );
    r
}

/// `/healthz/ready`: 200 when ready, 503 before the listeners are bound and once draining.
pub fn readiness(state: &AdminState) -> Response<Body> {
    if state.ready() {
        text(StatusCode::OK, "ready\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// The Prometheus exposition, in OpenMetrics when the scraper asks for it.
pub fn metrics_response(state: &AdminState, req: &Request<Incoming>) -> Response<Body> {
    let accept = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (body, content_type) = if accept.contains("application/openmetrics-text") {
        (
            state.metrics.encode_openmetrics(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            state.metrics.encode_prometheus(),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    };
    let mut r = text(StatusCode::OK, body);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

fn route_simple(door: Door, state: &AdminState, req: &Request<Incoming>) -> Response<Body> {
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    match (door, req.uri().path()) {
        (Door::Metrics, "/stats/prometheus" | "/metrics") if get => metrics_response(state, req),
        (Door::Health, "/healthz/ready") if get => readiness(state),
        (Door::Metrics, "/stats/prometheus" | "/metrics") | (Door::Health, "/healthz/ready") => {
            method_not_allowed("GET")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Answers one request on a door.
pub async fn respond(door: Door, state: &AdminState, req: Request<Incoming>) -> Response<Body> {
    match door {
        Door::Metrics | Door::Health => route_simple(door, state, &req),
        Door::Admin => api::respond(state, req).await,
        Door::Status => status::respond(state, &req).await,
    }
}

/// How long a side-door connection may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one side door until the task is dropped.
pub async fn serve(listener: TcpListener, door: Door, state: Arc<AdminState>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                debug!("side door {door:?}: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(door, &state, req).await) }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!("side door {door:?}: {e}");
            }
        });
    }
}
