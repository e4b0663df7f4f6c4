//! The application's original probes, which `ferry inject` moved to the status port and
//! recorded in `ISTIO_KUBE_APP_PROBERS` (a JSON map from the rewritten path to the original
//! handler), and running them as the kubelet would: httpGet passes on HTTP 200-399,
//! tcpSocket on a TCP connect, grpc on a `SERVING` health check; every probe within its
//! `timeoutSeconds` (1 s when unset, as in Kubernetes).

use super::client::{self, Dest, Version};
use super::grpc_health::{self, ServingStatus};
use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Kubernetes' default probe timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// An httpGet probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGet {
    /// Path and query.
    pub path: String,
    /// Port on the application.
    pub port: u16,
    /// Host to connect to; the pod IP when unset.
    pub host: Option<String>,
    /// HTTPS (certificate not verified) rather than HTTP.
    pub https: bool,
    /// Extra request headers; a `Host` header here replaces the default.
    pub headers: Vec<(String, String)>,
}

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `httpGet`.
    Http(HttpGet),
    /// `tcpSocket`: connect, then close.
    Tcp {
        /// Host to connect to; the pod IP when unset.
        host: Option<String>,
        /// Port on the application.
        port: u16,
    },
    /// `grpc`: the gRPC health check.
    Grpc {
        /// Port on the application.
        port: u16,
        /// Service name to check; empty for the whole server.
        service: String,
    },
}

/// One original probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// What to run.
    pub action: Action,
    /// How long it may take.
    pub timeout: Duration,
}

/// What looking up a status-port path found.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// A probe to run.
    Probe(&'a Probe),
    /// The path is known but its probe could not be read; the reason.
    Broken(&'a str),
    /// No probe can be run: the probers variable was invalid; the reason.
    NoProbers(&'a str),
    /// The path is not a rewritten probe.
    Unknown,
}

/// The rewritten probes of a pod, by status-port path.
#[derive(Debug, Clone, Default)]
pub struct Probers {
    by_path: BTreeMap<String, Result<Probe, String>>,
    invalid: Option<String>,
}

fn port(handler: &Map<String, Value>) -> Result<u16, String> {
    match handler.get("port") {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("port {n} is not in 1..65535")),
        Some(Value::String(s)) => match s.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "port {s:?} is a name that the injector could not resolve to a number"
            )),
        },
        Some(other) => Err(format!("port {other} is not a number")),
        None => Err("no port".into()),
    }
}

fn host(handler: &Map<String, Value>) -> Option<String> {
    handler
        .get("host")
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

fn parse_http(h: &Map<String, Value>) -> Result<Action, String> {
    let mut path = h
        .get("path")
        .and_then(Value::as_str)
        .unwrap_or("/")
        .to_string();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    path.parse::<hyper::Uri>()
        .map_err(|e| format!("path {path:?} is not a valid request path: {e}"))?;
    let https = match h.get("scheme").and_then(Value::as_str) {
        None => false,
        Some(s) if s.eq_ignore_ascii_case("http") => false,
        Some(s) if s.eq_ignore_ascii_case("https") => true,
        Some(s) => return Err(format!("scheme {s:?} is neither HTTP nor HTTPS")),
    };
    let mut headers = Vec::new();
    for header in h
        .get("httpHeaders")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = header.get("name").and_then(Value::as_str);
        let value = header.get("value").and_then(Value::as_str).unwrap_or("");
        match name {
            Some(name) if !name.is_empty() => headers.push((name.to_string(), value.to_string())),
            _ => return Err(format!("httpHeaders entry {header} has no name")),
        }
    }
    Ok(Action::Http(HttpGet {
        path,
        port: port(h)?,
        host: host(h),
        https,
        headers,
    }))
}

/// Reads one original probe (`{"httpGet": {...}, "timeoutSeconds": 2}` and the like).
pub fn parse_probe(value: &Value) -> Result<Probe, String> {
    let obj = value.as_object().ok_or("the probe is not a JSON object")?;
    let (kind, handler) = ["httpGet", "tcpSocket", "grpc"]
        .into_iter()
        .find_map(|name| obj.get(name).map(|h| (name, h)))
        .ok_or("the probe has no httpGet, tcpSocket or grpc handler")?;
    let h = handler
        .as_object()
        .ok_or_else(|| format!("{kind} is not a JSON object"))?;
    let action = match kind {
        "httpGet" => parse_http(h)?,
        "tcpSocket" => Action::Tcp {
            host: host(h),
            port: port(h)?,
        },
        _ => Action::Grpc {
            port: port(h)?,
            service: h
                .get("service")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        },
    };
    let timeout = match obj.get("timeoutSeconds") {
        None | Some(Value::Null) => DEFAULT_TIMEOUT,
        Some(v) => match v.as_u64() {
            Some(0) => DEFAULT_TIMEOUT,
            Some(s) => Duration::from_secs(s),
            None => return Err(format!("timeoutSeconds {v} is not a whole number")),
        },
    };
    Ok(Probe { action, timeout })
}

impl Probers {
    /// No probes (the pod had none rewritten).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Reads `ISTIO_KUBE_APP_PROBERS`. Never fails: invalid JSON makes every probe path
    /// answer that no probe is configured, and an invalid entry makes its path answer why;
    /// [`Probers::problems`] lists both for the logs.
    pub fn from_json(text: &str) -> Self {
        let map = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(other) => {
                return Self {
                    by_path: BTreeMap::new(),
                    invalid: Some(format!("expected a JSON object, found {other}")),
                };
            }
            Err(e) => {
                return Self {
                    by_path: BTreeMap::new(),
                    invalid: Some(format!("invalid JSON: {e}")),
                };
            }
        };
        let by_path = map
            .iter()
            .map(|(path, probe)| (path.clone(), parse_probe(probe)))
            .collect();
        Self {
            by_path,
            invalid: None,
        }
    }

    /// What is wrong with the probers, one message per problem.
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self.invalid.iter().cloned().collect();
        for (path, probe) in &self.by_path {
            if let Err(e) = probe {
                out.push(format!("{path}: {e}"));
            }
        }
        out
    }

    /// The probe for a status-port path.
    pub fn lookup(&self, path: &str) -> Lookup<'_> {
        if let Some(why) = &self.invalid {
            return Lookup::NoProbers(why);
        }
        match self.by_path.get(path) {
            Some(Ok(probe)) => Lookup::Probe(probe),
            Some(Err(why)) => Lookup::Broken(why),
            None => Lookup::Unknown,
        }
    }

    /// Number of configured probe paths.
    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    /// Whether no probe path is configured.
    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }
}

/// Resolves the probe's host (an IP address or a name) and port to one address.
async fn resolve(host: Option<&str>, default: IpAddr, port: u16) -> Result<SocketAddr, String> {
    let Some(host) = host else {
        return Ok(SocketAddr::new(default, port));
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))
}

fn authority(host: Option<&str>, addr: SocketAddr) -> String {
    match host {
        Some(h) if h.parse::<std::net::Ipv6Addr>().is_ok() => format!("[{h}]:{}", addr.port()),
        Some(h) => format!("{h}:{}", addr.port()),
        None => addr.to_string(),
    }
}

async fn http(get: &HttpGet, default_host: IpAddr) -> Result<String, String> {
    let addr = resolve(get.host.as_deref(), default_host, get.port).await?;
    let authority = authority(get.host.as_deref(), addr);
    let mut request = Request::builder().method("GET").uri(get.path.as_str());
    let custom = |name: &str| {
        get.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    };
    if !custom("host") {
        request = request.header(hyper::header::HOST, authority.as_str());
    }
    if !custom("user-agent") {
        request = request.header(hyper::header::USER_AGENT, "kube-probe/ferry");
    }
    if !custom("accept") {
        request = request.header(hyper::header::ACCEPT, "*/*");
    }
    for (name, value) in &get.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("cannot build the probe request: {e}"))?;
    let tls_name = get
        .https
        .then(|| get.host.clone().unwrap_or_else(|| addr.ip().to_string()));
    let dest = Dest {
        addr,
        tls_name,
        version: Version::Http1,
    };
    let reply = client::send(&dest, request, None).await?;
    let code = reply.status.as_u16();
    let scheme = if get.https { "https" } else { "http" };
    let url = format!("{scheme}://{authority}{}", get.path);
    if (200..400).contains(&code) {
        Ok(format!("GET {url}: HTTP {code}"))
    } else {
        Err(format!("GET {url}: HTTP {code}"))
    }
}

async fn tcp(host: Option<&str>, port: u16, default_host: IpAddr) -> Result<String, String> {
    let addr = resolve(host, default_host, port).await?;
    tokio::net::TcpStream::connect(addr)
        .await
        .map(|_| format!("TCP connect to {addr}: ok"))
        .map_err(|e| format!("TCP connect to {addr}: {e}"))
}

async fn grpc(port: u16, service: &str, default_host: IpAddr) -> Result<String, String> {
    let addr = SocketAddr::new(default_host, port);
    let dest = Dest {
        addr,
        tls_name: None,
        version: Version::Http2,
    };
    let status = grpc_health::check(&dest, &addr.to_string(), service)
        .await
        .map_err(|e| format!("gRPC health check on {addr}: {e}"))?;
    let what = format!("gRPC health check on {addr} (service {service:?}): {status}");
    if status == ServingStatus::Serving {
        Ok(what)
    } else {
        Err(what)
    }
}

/// Runs a probe against the application; `default_host` is the pod IP (or loopback).
/// `Ok` says what passed, `Err` why it failed (including a timeout).
pub async fn run(probe: &Probe, default_host: IpAddr) -> Result<String, String> {
    let work = async {
        match &probe.action {
            Action::Http(get) => http(get, default_host).await,
            Action::Tcp { host, port } => tcp(host.as_deref(), *port, default_host).await,
            Action::Grpc { port, service } => grpc(*port, service, default_host).await,
        }
    };
    match tokio::time::timeout(probe.timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "the probe did not finish within {:?}",
            probe.timeout
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_every_kind() {
        let probers = Probers::from_json(
            &json!({
                "/app-health/web/livez": {"httpGet": {"path": "live?x=1", "port": 8080, "scheme": "HTTPS", "host": "10.0.0.1",
                    "httpHeaders": [{"name": "X-Probe", "value": "1"}]}, "timeoutSeconds": 3},
                "/app-health/web/readyz": {"tcpSocket": {"port": "6379"}},
                "/app-health/web/startupz": {"grpc": {"port": 9000, "service": "health"}},
                "/app-lifecycle/web/prestopz": {"httpGet": {"port": "http"}},
            })
            .to_string(),
        );
        let Lookup::Probe(live) = probers.lookup("/app-health/web/livez") else {
            panic!("livez");
        };
        assert_eq!(
            live,
            &Probe {
                action: Action::Http(HttpGet {
                    path: "/live?x=1".into(),
                    port: 8080,
                    host: Some("10.0.0.1".into()),
                    https: true,
                    headers: vec![("X-Probe".into(), "1".into())],
                }),
                timeout: Duration::from_secs(3),
            }
        );
        let Lookup::Probe(ready) = probers.lookup("/app-health/web/readyz") else {
            panic!("readyz");
        };
        assert_eq!(
            ready.action,
            Action::Tcp {
                host: None,
                port: 6379
            }
        );
        assert_eq!(ready.timeout, DEFAULT_TIMEOUT);
        let Lookup::Probe(startup) = probers.lookup("/app-health/web/startupz") else {
            panic!("startupz");
        };
        assert_eq!(
            startup.action,
            Action::Grpc {
                port: 9000,
                service: "health".into()
            }
        );
        assert!(matches!(
            probers.lookup("/app-lifecycle/web/prestopz"),
            Lookup::Broken(why) if why.contains("\"http\"")
        ));
        assert!(matches!(
            probers.lookup("/app-health/other/livez"),
            Lookup::Unknown
        ));
        assert_eq!(probers.problems().len(), 1);
    }

    #[test]
    fn bad_input_is_reported_not_a_panic() {
        for text in ["", "[", "[]", "3", "null"] {
            let probers = Probers::from_json(text);
            assert!(
                matches!(probers.lookup("/app-health/a/livez"), Lookup::NoProbers(_)),
                "{text}"
            );
            assert_eq!(probers.problems().len(), 1, "{text}");
        }
        for probe in [
            json!(null),
            json!({}),
            json!({"exec": {}}),
            json!({"httpGet": 3}),
            json!({"httpGet": {"port": 0}}),
            json!({"httpGet": {"port": 70000}}),
            json!({"httpGet": {"port": 80, "scheme": "ftp"}}),
            json!({"httpGet": {"port": 80, "httpHeaders": [{"value": "x"}]}}),
            json!({"tcpSocket": {}}),
            json!({"grpc": {"port": -1}}),
            json!({"tcpSocket": {"port": 1}, "timeoutSeconds": "x"}),
        ] {
            assert!(parse_probe(&probe).is_err(), "{probe}");
        }
    }
}
