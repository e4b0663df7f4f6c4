//! Container probes as the kubelet runs them: the probe object read from the (injected) pod
//! spec, its schedule and thresholds, and running it. Injected pods carry the rewritten
//! probes (`httpGet` on the sidecar's 15020/15021), sidecar-less pods their originals.
//!
//! Reading a probe and the threshold bookkeeping are pure ([`ProbeSpec::parse`],
//! [`ProbeState`]); running one is I/O: `exec` runs inside the pod's namespace, network
//! probes (`httpGet`, `tcpSocket`, `grpc`) go through a [`Prober`] from the root
//! namespace, as the kubelet probes from the node.

use serde_json::Value;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Until a container is first ready, its readiness and startup probes run this often (the
/// kubelet would wait `periodSeconds`; locally start-up should not).
pub const FAST_PERIOD: Duration = Duration::from_millis(100);

/// What a probe runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `exec`: a command in the pod's namespace; exit status 0 passes.
    Exec(Vec<String>),
    /// `httpGet`, `tcpSocket` or `grpc`: the probe object with named ports replaced by
    /// numbers, for a [`Prober`].
    Network(Value),
}

/// One probe of a container with its schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSpec {
    /// What to run.
    pub action: Action,
    /// `initialDelaySeconds`.
    pub initial_delay: Duration,
    /// `periodSeconds` (default 10).
    pub period: Duration,
    /// `timeoutSeconds` (default 1).
    pub timeout: Duration,
    /// `successThreshold` (default 1).
    pub success_threshold: u32,
    /// `failureThreshold` (default 3).
    pub failure_threshold: u32,
}

fn seconds(probe: &Value, field: &str, default: u64, min: u64) -> Result<Duration, String> {
    match &probe[field] {
        Value::Null => Ok(Duration::from_secs(default)),
        v => v
            .as_u64()
            .map(|s| Duration::from_secs(s.max(min)))
            .ok_or_else(|| format!("{field}: {v} is not a whole number of seconds")),
    }
}

fn count(probe: &Value, field: &str, default: u32) -> Result<u32, String> {
    match &probe[field] {
        Value::Null => Ok(default),
        v => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(|n| n.max(1))
            .ok_or_else(|| format!("{field}: {v} is not a positive whole number")),
    }
}

/// A port given as a number, a numeric string, or a name of the container's ports.
fn port_number(port: &Value, named: &[(String, u16)]) -> Result<u16, String> {
    if let Some(n) = port.as_u64() {
        return u16::try_from(n).map_err(|_| format!("port {n} is out of range"));
    }
    let Some(text) = port.as_str() else {
        return Err(format!("port {port} is neither a number nor a name"));
    };
    if let Ok(n) = text.parse::<u16>() {
        return Ok(n);
    }
    named
        .iter()
        .find(|(name, _)| name == text)
        .map(|(_, n)| *n)
        .ok_or_else(|| format!("port {text:?} is not a named port of the container"))
}

impl ProbeSpec {
    /// Reads a Kubernetes probe object; `named` are the container's named ports. The error
    /// names the field.
    pub fn parse(probe: &Value, named: &[(String, u16)]) -> Result<ProbeSpec, String> {
        if !probe.is_object() {
            return Err("the probe is not an object".into());
        }
        let action = if let Some(exec) = probe.get("exec") {
            let argv: Vec<String> = exec["command"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect();
            if argv.is_empty() {
                return Err("exec.command is empty".into());
            }
            Action::Exec(argv)
        } else {
            let kind = ["httpGet", "tcpSocket", "grpc"]
                .into_iter()
                .find(|k| probe.get(*k).is_some())
                .ok_or("the probe has no exec, httpGet, tcpSocket or grpc handler")?;
            let mut resolved = probe.clone();
            let port =
                port_number(&probe[kind]["port"], named).map_err(|e| format!("{kind}.{e}"))?;
            resolved[kind]["port"] = Value::from(port);
            Action::Network(resolved)
        };
        Ok(ProbeSpec {
            action,
            initial_delay: seconds(probe, "initialDelaySeconds", 0, 0)?,
            period: seconds(probe, "periodSeconds", 10, 1)?,
            timeout: seconds(probe, "timeoutSeconds", 1, 1)?,
            success_threshold: count(probe, "successThreshold", 1)?,
            failure_threshold: count(probe, "failureThreshold", 3)?,
        })
    }
}

/// The kubelet's bookkeeping of one probe: consecutive results against the thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeState {
    /// The probe's verdict (readiness starts false, liveness true).
    pub passing: bool,
    /// Whether it ever passed since the container (re)started.
    pub ever_passed: bool,
    successes: u32,
    failures: u32,
}

impl ProbeState {
    /// A fresh state with the verdict `initial`.
    pub fn new(initial: bool) -> Self {
        ProbeState {
            passing: initial,
            ever_passed: false,
            successes: 0,
            failures: 0,
        }
    }

    /// Records one result; returns whether the verdict changed.
    pub fn record(&mut self, ok: bool, spec: &ProbeSpec) -> bool {
        let before = self.passing;
        if ok {
            self.successes += 1;
            self.failures = 0;
            // The first success after a start counts at once (startup semantics).
            if self.successes >= spec.success_threshold || !self.ever_passed {
                self.passing = true;
                self.ever_passed = true;
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.failures >= spec.failure_threshold {
                self.passing = false;
            }
        }
        before != self.passing
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// How long until the next run: fast until it first passed when `fast`, else the period.
    pub fn interval(&self, spec: &ProbeSpec, fast: bool) -> Duration {
        if fast && !self.ever_passed {
            FAST_PERIOD.min(spec.period)
        } else {
            spec.period
        }
    }
}

/// The outcome of a probe: `Ok` says what passed, `Err` why it failed.
pub type ProbeResult = Result<String, String>;

/// Runs network probes (`httpGet`, `tcpSocket`, `grpc`) against a pod.
pub trait Prober: Send + Sync + 'static {
    /// Runs `probe` (a Kubernetes probe object, ports numeric) against `pod_ip`.
    fn run(
        &self,
        probe: Value,
        pod_ip: IpAddr,
    ) -> Pin<Box<dyn Future<Output = ProbeResult> + Send>>;
}

/// The built-in prober: plain-HTTP `httpGet` (200-399 passes) and `tcpSocket`; `grpc`
/// and HTTPS need a richer prober (the `ferry` binary passes the proxy's).
#[derive(Debug, Clone, Copy, Default)]
pub struct BasicProber;

fn host_of(handler: &Value, pod_ip: IpAddr) -> IpAddr {
    handler["host"]
        .as_str()
        .and_then(|h| h.parse().ok())
        .unwrap_or(pod_ip)
}

/// A plain HTTP/1.0 GET; passes on a 2xx or 3xx status.
pub async fn http_get(addr: SocketAddr, path: &str) -> ProbeResult {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("GET {addr}{path}: {e}"))?;
    let req =
        format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: kube-probe/ferry\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("GET {addr}{path}: {e}"))?;
    let mut buf = [0u8; 32];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut buf[n..]).await {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(format!("GET {addr}{path}: {e}")),
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {addr}{path}: not an HTTP answer"))?;
    if (200..400).contains(&code) {
        Ok(format!("GET {addr}{path}: {code}"))
    } else {
        Err(format!("GET {addr}{path}: {code}"))
    }
}

impl Prober for BasicProber {
    fn run(
        &self,
        probe: Value,
        pod_ip: IpAddr,
    ) -> Pin<Box<dyn Future<Output = ProbeResult> + Send>> {
        Box::pin(async move {
            let port = |h: &Value| {
                h["port"]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or(0)
            };
            if let Some(h) = probe.get("httpGet") {
                if h["scheme"]
                    .as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case("https"))
                {
                    return Err("httpGet over HTTPS is not supported by this prober".into());
                }
                let mut path = h["path"].as_str().unwrap_or("/").to_string();
                if !path.starts_with('/') {
                    path.insert(0, '/');
                }
                return http_get(SocketAddr::new(host_of(h, pod_ip), port(h)), &path).await;
            }
            if let Some(h) = probe.get("tcpSocket") {
                let addr = SocketAddr::new(host_of(h, pod_ip), port(h));
                return tokio::net::TcpStream::connect(addr)
                    .await
                    .map(|_| format!("connected to {addr}"))
                    .map_err(|e| format!("connecting to {addr}: {e}"));
            }
            Err("grpc probes are not supported by this prober".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_probes() {
        let named = [("http".to_string(), 8080u16)];
        // (probe, Ok((action, period, failure threshold)) or the error)
        type Row = (Value, Result<(Action, u64, u32), &'static str>);
        let rows: Vec<Row> = vec![
            (
                json!({"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 2}),
                Ok((
                    Action::Network(
                        json!({"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 2}),
                    ),
                    2,
                    3,
                )),
            ),
            (
                json!({"tcpSocket": {"port": "6379"}, "failureThreshold": 1}),
                Ok((
                    Action::Network(json!({"tcpSocket": {"port": 6379}, "failureThreshold": 1})),
                    10,
                    1,
                )),
            ),
            (
                json!({"exec": {"command": ["redis-cli", "ping"]}}),
                Ok((Action::Exec(vec!["redis-cli".into(), "ping".into()]), 10, 3)),
            ),
            (
                json!({"exec": {"command": []}}),
                Err("exec.command is empty"),
            ),
            (
                json!({"httpGet": {"port": "web"}}),
                Err("httpGet.port \"web\" is not a named port of the container"),
            ),
            (
                json!({"tcpSocket": {"port": 6379}, "periodSeconds": "x"}),
                Err("periodSeconds: \"x\" is not a whole number of seconds"),
            ),
            (
                json!({"periodSeconds": 1}),
                Err("the probe has no exec, httpGet, tcpSocket or grpc handler"),
            ),
        ];
        for (probe, want) in rows {
            let got = ProbeSpec::parse(&probe, &named)
                .map(|s| (s.action, s.period.as_secs(), s.failure_threshold));
            assert_eq!(got, want.map_err(str::to_string), "{probe}");
        }
    }

    #[test]
    fn thresholds() {
        let spec = ProbeSpec {
            action: Action::Exec(vec!["true".into()]),
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            success_threshold: 2,
            failure_threshold: 2,
        };
        let mut s = ProbeState::new(false);
        assert_eq!(s.interval(&spec, true), FAST_PERIOD);
        // (result, verdict after it)
        let rows = [
            (false, false),
            (true, true), // the first success after a start counts at once
            (false, true),
            (false, false), // two failures in a row
            (true, false),  // one success is below the threshold now
            (true, true),
        ];
        for (i, (ok, want)) in rows.into_iter().enumerate() {
            s.record(ok, &spec);
            assert_eq!(s.passing, want, "row {i}");
        }
        assert_eq!(s.interval(&spec, true), spec.period);
    }
}
