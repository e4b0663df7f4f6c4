//! The HTTP servers of the side doors (metrics and readiness), built on hyper.

use super::AdminState;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::sync::Arc;
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
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
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
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn route(door: Door, state: &AdminState, req: &Request<Incoming>) -> Response<Body> {
    match (door, req.method(), req.uri().path()) {
        (Door::Metrics, &Method::GET, "/stats/prometheus" | "/metrics") => {
            metrics_response(state, req)
        }
        (Door::Health, &Method::GET, "/healthz/ready") => {
            if state.ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Serves one side door until the task is dropped.
pub async fn serve(listener: TcpListener, door: Door, state: Arc<AdminState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let response = route(door, &state, &req);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(e) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!("side door {door:?}: {e}");
            }
        });
    }
}
