//! The status port (15020): merged metrics (`/stats/prometheus`), readiness
//! (`/healthz/ready`), and the application's rewritten probes and lifecycle hooks
//! (`/app-health/<container>/livez|readyz|startupz`, `/app-lifecycle/<container>/prestopz|poststartz`),
//! with its settings read from the injected environment.

use super::http::{Body, method_not_allowed, text};
use super::merge::{self, AppMetrics};
use super::probes::{self, Lookup, Probers};
use super::{AdminState, http};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;

/// The status port's settings: the original probes, where the application's metrics are,
/// and the pod IP probes go to.
#[derive(Debug, Clone, Default)]
pub struct StatusConfig {
    /// Original probes by rewritten path.
    pub probers: Probers,
    /// The application's metrics endpoint, if it has one.
    pub app_metrics: Option<AppMetrics>,
    /// The pod IP (`INSTANCE_IP`); probes without a host go there, or to 127.0.0.1.
    pub instance_ip: Option<IpAddr>,
}

/// The raw values of the environment variables the injector writes into the proxy
/// container (`ferry_inject::probes::PROBERS_ENV`, `ferry_inject::mutate::PROMETHEUS_ENV`,
/// `INSTANCE_IP`); the binary reads them, tests fill them in directly.
#[derive(Debug, Clone, Default)]
pub struct StatusEnv {
    /// `ISTIO_KUBE_APP_PROBERS`.
    pub probers: Option<String>,
    /// `ISTIO_PROMETHEUS_ANNOTATIONS`.
    pub prometheus: Option<String>,
    /// `INSTANCE_IP`.
    pub instance_ip: Option<String>,
}

impl StatusConfig {
    /// Settings from the injected environment, and warnings about values that could not
    /// be used (the status port still starts: probes then answer 503, the merged metrics
    /// hold only the proxy's).
    pub fn from_env(env: &StatusEnv) -> (Self, Vec<String>) {
        let mut warnings = Vec::new();
        let instance_ip =
            env.instance_ip
                .as_deref()
                .and_then(|ip| match ip.trim().parse::<IpAddr>() {
                    Ok(ip) => Some(ip),
                    Err(_) => {
                        warnings.push(format!(
                            "INSTANCE_IP {ip:?} is not an IP address; using 127.0.0.1"
                        ));
                        None
                    }
                });
        let probers = match env.probers.as_deref() {
            Some(json) => {
                let probers = Probers::from_json(json);
                warnings.extend(
                    probers
                        .problems()
                        .into_iter()
                        .map(|p| format!("{}: {p}", ferry_inject::probes::PROBERS_ENV)),
                );
                probers
            }
            None => Probers::empty(),
        };
        let host = instance_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let app_metrics = match env.prometheus.as_deref() {
            Some(json) => AppMetrics::from_json(json, host).unwrap_or_else(|e| {
                warnings.push(format!(
                    "{}: {e}; serving the proxy's metrics only",
                    ferry_inject::mutate::PROMETHEUS_ENV
                ));
                None
            }),
            None => None,
        };
        let config = Self {
            probers,
            app_metrics,
            instance_ip,
        };
        (config, warnings)
    }

    /// The address probes without a host go to.
    pub fn probe_host(&self) -> IpAddr {
        self.instance_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }
}

async fn merged_metrics(state: &AdminState) -> Response<Body> {
    let mut proxy = state.metrics.encode_prometheus();
    let mut app = String::new();
    if let Some(target) = &state.status.app_metrics {
        match target.scrape(merge::SCRAPE_TIMEOUT).await {
            Ok(text) => app = text,
            Err(e) => {
                state.app_scrape_errors.fetch_add(1, Ordering::Relaxed);
                let _ = writeln!(
                    proxy,
                    "# ferry: the application's metrics were not scraped: {}",
                    e.replace('\n', " ")
                );
            }
        }
    }
    let _ = write!(
        proxy,
        "# HELP ferry_app_metrics_scrape_errors_total Failed scrapes of the application's metrics for the merged metrics.\n# TYPE ferry_app_metrics_scrape_errors_total counter\nferry_app_metrics_scrape_errors_total {}\n",
        state.app_scrape_errors.load(Ordering::Relaxed)
    );
    let mut r = text(StatusCode::OK, merge::merge(&proxy, &app));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

async fn probe(state: &AdminState, path: &str) -> Response<Body> {
    match state.status.probers.lookup(path) {
        Lookup::Probe(p) => match probes::run(p, state.status.probe_host()).await {
            Ok(what) => text(StatusCode::OK, format!("{what}\n")),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        },
        Lookup::Broken(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the probe for {path} cannot run: {why}\n"),
        ),
        Lookup::NoProbers(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no probe configured: {} is invalid ({why})\n",
                ferry_inject::probes::PROBERS_ENV
            ),
        ),
        Lookup::Unknown => text(
            StatusCode::NOT_FOUND,
            format!("no probe configured for {path}\n"),
        ),
    }
}

/// Answers one request on the status port.
pub async fn respond(state: &AdminState, req: &Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    match path {
        "/stats/prometheus" | "/metrics" if get => merged_metrics(state).await,
        "/healthz/ready" if get => http::readiness(state),
        "/stats/prometheus" | "/metrics" | "/healthz/ready" => method_not_allowed("GET"),
        p if p.starts_with("/app-health/") || p.starts_with("/app-lifecycle/") => {
            if get {
                probe(state, p).await
            } else {
                method_not_allowed("GET")
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}
