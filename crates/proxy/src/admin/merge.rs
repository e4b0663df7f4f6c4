//! Merged metrics for the status port (15020): the application's own metrics, scraped at
//! request time from its original `prometheus.io` settings (`ISTIO_PROMETHEUS_ANNOTATIONS`),
//! appended to the proxy's, with the metadata lines (`# TYPE`, `# HELP`) of families the
//! proxy already declares dropped so scrapers see each family declared once.

use super::client::{self, Dest, Version};
use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use serde_json::Value;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How long the application's scrape may take.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest application metrics body accepted.
pub const MAX_APP_METRICS: usize = 32 * 1024 * 1024;

/// Where the application serves its metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppMetrics {
    /// Address of the application (pod IP or loopback, and the annotated port).
    pub addr: SocketAddr,
    /// Path, `/metrics` unless annotated.
    pub path: String,
}

impl AppMetrics {
    /// Reads `ISTIO_PROMETHEUS_ANNOTATIONS` (`{"scrape":"true","path":"/metrics","port":"9090"}`,
    /// any key may be missing). `Ok(None)` when there is nothing to scrape: no port, or
    /// `scrape` is `false`.
    pub fn from_json(text: &str, host: IpAddr) -> Result<Option<AppMetrics>, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        let obj = value
            .as_object()
            .ok_or_else(|| format!("expected a JSON object, found {value}"))?;
        let text_of = |key: &str| match obj.get(key) {
            Some(Value::String(s)) => Some(s.trim().to_string()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(Value::Bool(b)) => Some(b.to_string()),
            _ => None,
        };
        if text_of("scrape").is_some_and(|s| s.eq_ignore_ascii_case("false")) {
            return Ok(None);
        }
        let Some(port) = text_of("port").filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("port {port:?} is not a port number"))?;
        let mut path = text_of("path")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/metrics".into());
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        path.parse::<hyper::Uri>()
            .map_err(|e| format!("path {path:?} is not a valid request path: {e}"))?;
        Ok(Some(AppMetrics {
            addr: SocketAddr::new(host, port),
            path,
        }))
    }

    /// Scrapes the application's metrics (Prometheus text) within `timeout`.
    pub async fn scrape(&self, timeout: Duration) -> Result<String, String> {
        let url = format!("http://{}{}", self.addr, self.path);
        let work = async {
            let request = Request::builder()
                .method("GET")
                .uri(self.path.as_str())
                .header(hyper::header::HOST, self.addr.to_string())
                .header(
                    hyper::header::ACCEPT,
                    "text/plain;version=0.0.4;q=1,*/*;q=0.1",
                )
                .header(hyper::header::USER_AGENT, "ferry-proxy")
                .body(Full::new(Bytes::new()))
                .map_err(|e| format!("cannot build the request: {e}"))?;
            let dest = Dest {
                addr: self.addr,
                tls_name: None,
                version: Version::Http1,
            };
            let reply = client::send(&dest, request, Some(MAX_APP_METRICS)).await?;
            if !reply.status.is_success() {
                return Err(format!("HTTP {}", reply.status));
            }
            String::from_utf8(reply.body.to_vec()).map_err(|_| "the body is not UTF-8".to_string())
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(Ok(text)) => Ok(text),
            Ok(Err(e)) => Err(format!("{url}: {e}")),
            Err(_) => Err(format!("{url}: no answer within {timeout:?}")),
        }
    }
}

/// The family a metadata line (`# TYPE name ...`, `# HELP name ...`) declares.
fn declared(line: &str) -> Option<(&'static str, &str)> {
    for kind in ["# TYPE ", "# HELP ", "# UNIT "] {
        if let Some(rest) = line.strip_prefix(kind) {
            let kind: &'static str = kind;
            return rest.split_whitespace().next().map(|name| (kind, name));
        }
    }
    None
}

/// Appends the application's metrics to the proxy's. Metadata lines of the application
/// for a family the proxy (or an earlier application line) already declared are dropped;
/// samples are kept; OpenMetrics' `# EOF` goes away.
pub fn merge(proxy: &str, app: &str) -> String {
    let mut seen: HashSet<(&str, String)> = HashSet::new();
    for line in proxy.lines() {
        if let Some((kind, name)) = declared(line) {
            seen.insert((kind, name.to_string()));
        }
    }
    let mut out = String::with_capacity(proxy.len() + app.len() + 1);
    out.push_str(proxy);
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    for line in app.lines() {
        if line.trim() == "# EOF" {
            continue;
        }
        if let Some((kind, name)) = declared(line)
            && !seen.insert((kind, name.to_string()))
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn reads_the_annotations() {
        assert_eq!(
            AppMetrics::from_json(r#"{"scrape":"true","path":"/m","port":"9090"}"#, HOST),
            Ok(Some(AppMetrics {
                addr: "127.0.0.1:9090".parse().unwrap_or_else(|_| unreachable!()),
                path: "/m".into()
            }))
        );
        let default_path = AppMetrics::from_json(r#"{"port":9100}"#, HOST);
        assert_eq!(
            default_path.map(|m| m.map(|m| m.path)),
            Ok(Some("/metrics".into()))
        );
        assert_eq!(
            AppMetrics::from_json(r#"{"scrape":"true"}"#, HOST),
            Ok(None)
        );
        assert_eq!(
            AppMetrics::from_json(r#"{"scrape":"false","port":"1"}"#, HOST),
            Ok(None)
        );
        for bad in ["", "[", "[1]", r#"{"port":"http"}"#, r#"{"port":"0"}"#] {
            assert!(AppMetrics::from_json(bad, HOST).is_err(), "{bad}");
        }
    }

    #[test]
    fn merge_keeps_one_declaration_per_family() {
        let proxy = "# HELP process_open_fds Open fds.\n# TYPE process_open_fds gauge\nprocess_open_fds 7\n";
        let app = "# HELP process_open_fds App fds.\n# TYPE process_open_fds gauge\nprocess_open_fds{app=\"1\"} 3\n# HELP app_hits Hits.\n# TYPE app_hits counter\napp_hits 5\n# TYPE app_hits counter\n# EOF\n";
        assert_eq!(
            merge(proxy, app),
            "# HELP process_open_fds Open fds.\n# TYPE process_open_fds gauge\nprocess_open_fds 7\nprocess_open_fds{app=\"1\"} 3\n# HELP app_hits Hits.\n# TYPE app_hits counter\napp_hits 5\n"
        );
        assert_eq!(merge("a 1", "b 2"), "a 1\nb 2\n");
    }
}
