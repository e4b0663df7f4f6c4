//! One HTTP request in, one response out. `POST /inject` (and
//! `/inject/cluster/<id>/net/<network>`) runs the injection engine on an AdmissionReview;
//! `GET /healthz` says the process is alive, `GET /ready` that it serves, and
//! `GET /metrics` returns the metrics. Bad input gets a 4xx with a message, never a panic.

use crate::webhook::metrics::{self, WebhookMetrics};
use bytes::Bytes;
use ferry_inject::InjectConfig;
use ferry_inject::admission::{self, PathParams, ReviewResult};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// The response type of every route.
pub type WebhookResponse = Response<Full<Bytes>>;

/// The webhook's request handler: injection settings, metrics and readiness.
#[derive(Debug)]
pub struct Webhook {
    inject: InjectConfig,
    metrics: Arc<WebhookMetrics>,
    ready: AtomicBool,
}

fn text(status: StatusCode, message: impl Into<String>) -> WebhookResponse {
    let mut body = message.into();
    body.push('\n');
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// True for `application/json`, with or without parameters such as `charset`.
fn is_json(content_type: Option<&HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let media_type = value.split(';').next().unwrap_or_default().trim();
    media_type.eq_ignore_ascii_case("application/json")
}

impl Webhook {
    /// A handler that injects with `inject` and counts into `metrics`. It starts not ready.
    pub fn new(inject: InjectConfig, metrics: Arc<WebhookMetrics>) -> Self {
        Self {
            inject,
            metrics,
            ready: AtomicBool::new(false),
        }
    }

    /// The metrics this handler counts into.
    pub fn metrics(&self) -> &Arc<WebhookMetrics> {
        &self.metrics
    }

    /// Sets what `GET /ready` answers (200 when true, 503 when false).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Answers one request on the HTTPS port.
    pub async fn handle<B>(&self, req: Request<B>) -> WebhookResponse
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = req.uri().path();
        if let Some(params) = inject_params(path) {
            if req.method() != Method::POST {
                self.metrics.error("method_not_allowed");
                return text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "injection requests must use POST",
                );
            }
            let start = Instant::now();
            self.metrics.requests.inc();
            let resp = self.inject(req, &params).await;
            self.metrics
                .request_duration
                .observe(start.elapsed().as_secs_f64());
            return resp;
        }
        match (req.method(), path) {
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
            (&Method::GET, "/ready") => {
                if self.ready.load(Ordering::Relaxed) {
                    text(StatusCode::OK, "ready")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }
            (&Method::GET, "/metrics") => self.metrics_response(),
            (_, "/healthz" | "/ready" | "/metrics") => {
                self.metrics.error("method_not_allowed");
                text(StatusCode::METHOD_NOT_ALLOWED, "use GET")
            }
            _ => {
                self.metrics.error("not_found");
                text(StatusCode::NOT_FOUND, format!("no route for {path}"))
            }
        }
    }

    /// `GET /metrics`: the metrics in the OpenMetrics text format.
    pub fn metrics_response(&self) -> WebhookResponse {
        let mut resp = Response::new(Full::new(Bytes::from(self.metrics.encode())));
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        );
        resp
    }

    async fn inject<B>(&self, req: Request<B>, params: &PathParams) -> WebhookResponse
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if !is_json(req.headers().get(CONTENT_TYPE)) {
            self.metrics.error("unsupported_media_type");
            return text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json",
            );
        }
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > admission::MAX_BODY_BYTES as u64) {
            return self.too_large();
        }
        let body = match Limited::new(req.into_body(), admission::MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => return self.too_large(),
            Err(e) => {
                self.metrics.error("body_read");
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("reading the request body failed: {e}"),
                );
            }
        };
        self.review(&body, params)
    }

    fn too_large(&self) -> WebhookResponse {
        self.metrics.error("body_too_large");
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body is larger than {} bytes",
                admission::MAX_BODY_BYTES
            ),
        )
    }

    /// Runs the injection engine on one AdmissionReview body and counts the outcome.
    pub fn review(&self, body: &[u8], params: &PathParams) -> WebhookResponse {
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            admission::review(body, &self.inject, params)
        }));
        let answer = match outcome {
            Ok(Ok(answer)) => answer,
            Ok(Err(bad)) => {
                self.metrics.error("bad_request");
                tracing::debug!(error = %bad, "rejected an injection request");
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("invalid AdmissionReview: {bad}"),
                );
            }
            Err(_) => {
                // An engine bug must not take the connection down; the pod is refused
                // (failurePolicy: Fail) and the failure is visible in the metrics.
                self.metrics.error("internal");
                tracing::error!("the injection engine panicked on a request");
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error in the injection engine",
                );
            }
        };
        match &answer.result {
            ReviewResult::Injected => {
                self.metrics.injections.inc();
                tracing::debug!("injected a pod");
            }
            ReviewResult::Skipped(reason) => {
                self.metrics.skip(reason.metric_label());
                tracing::debug!(%reason, "skipped a pod");
            }
            ReviewResult::Denied(message) => {
                self.metrics.denials.inc();
                tracing::info!(%message, "refused a pod");
            }
        }
        let mut resp = Response::new(Full::new(Bytes::from(answer.body)));
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp
    }
}

/// The path parameters of an injection path, or `None` for any other path.
fn inject_params(path: &str) -> Option<PathParams> {
    if path != "/inject" && !path.starts_with("/inject/") {
        return None;
    }
    std::panic::catch_unwind(|| PathParams::from_path(path))
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_type_is_recognized_with_parameters() {
        let ok = |s: &'static str| is_json(Some(&HeaderValue::from_static(s)));
        assert!(ok("application/json"));
        assert!(ok("Application/JSON; charset=utf-8"));
        assert!(!ok("application/yaml"));
        assert!(!ok("application/jsonx"));
        assert!(!ok(""));
        assert!(!is_json(None));
    }

    #[tokio::test]
    async fn health_ready_and_unknown_routes() {
        let hook = Webhook::new(InjectConfig::default(), Arc::new(WebhookMetrics::new()));
        let get = |path: &str| Request::get(path).body(Full::new(Bytes::new())).unwrap();
        assert_eq!(hook.handle(get("/healthz")).await.status(), StatusCode::OK);
        assert_eq!(
            hook.handle(get("/ready")).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        hook.set_ready(true);
        assert_eq!(hook.handle(get("/ready")).await.status(), StatusCode::OK);
        assert_eq!(
            hook.handle(get("/nope")).await.status(),
            StatusCode::NOT_FOUND
        );
        let metrics = hook.handle(get("/metrics")).await;
        assert_eq!(metrics.status(), StatusCode::OK);
        let body = metrics.into_body().collect().await.unwrap().to_bytes();
        assert!(
            String::from_utf8_lossy(&body)
                .contains("ferry_webhook_errors_total{kind=\"not_found\"} 1")
        );
    }

    #[tokio::test]
    async fn content_type_and_size_are_checked_before_the_engine_runs() {
        let hook = Webhook::new(InjectConfig::default(), Arc::new(WebhookMetrics::new()));
        let yaml = Request::post("/inject")
            .header(CONTENT_TYPE, "application/yaml")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        assert_eq!(
            hook.handle(yaml).await.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        let huge = Request::post("/inject")
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(vec![
                b' ';
                admission::MAX_BODY_BYTES + 1
            ])))
            .unwrap();
        assert_eq!(
            hook.handle(huge).await.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let get = Request::get("/inject")
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(
            hook.handle(get).await.status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
