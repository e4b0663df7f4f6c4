//! The admin API (15000, loopback only by default): the configuration in force
//! (`/config_dump`), clusters and their endpoints (`/clusters`), metrics (`/stats`), the
//! run-time log level (`/logging`), readiness (`/ready`), the workload certificate
//! (`/certs`: what `ferry proxy-config secret` shows), and the drain (`/drain`,
//! `/quitquitquit`).

use super::AdminState;
use super::http::{Body, method_not_allowed, metrics_response, text};
use crate::config::Protocol;
use crate::lifecycle::Phase;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long `/quitquitquit` waits, after answering, before the proxy closes.
const QUIT_DELAY: Duration = Duration::from_millis(50);

/// The endpoints, their methods and what they do (the index at `/`).
const ENDPOINTS: [(&str, &str, &str); 9] = [
    ("/", "GET", "this list"),
    (
        "/config_dump",
        "GET",
        "the configuration in force (JSON), its version and when it was loaded",
    ),
    (
        "/clusters",
        "GET",
        "one line per service port: protocol, address, endpoints and their readiness",
    ),
    ("/stats", "GET", "the proxy's metrics (Prometheus text)"),
    (
        "/logging",
        "GET, POST",
        "the log level; ?level=debug (or a filter like ferry_proxy=debug,warn) sets it",
    ),
    ("/ready", "GET", "200 while ready, 503 once draining"),
    (
        "/certs",
        "GET",
        "the workload certificate (JSON): identity, serial, validity, next rotation, chain, roots",
    ),
    (
        "/drain",
        "POST",
        "start the drain: readiness fails, listeners close, connections get the drain period",
    ),
    (
        "/quitquitquit",
        "POST",
        "drain with no drain period: the proxy exits at once",
    ),
];

/// Log level names accepted by `/logging` (Envoy's and tracing's).
const LEVELS: [&str; 8] = [
    "trace", "debug", "info", "warning", "warn", "error", "critical", "off",
];

fn index() -> Response<Body> {
    let mut out = String::from("Ferry proxy admin\n\n");
    for (path, methods, what) in ENDPOINTS {
        let _ = writeln!(out, "  {path:<15} {methods:<10} {what}");
    }
    text(StatusCode::OK, out)
}

/// Formats a time as RFC 3339 in UTC, to the second.
pub fn rfc3339(at: SystemTime) -> String {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let body =
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    let mut r = text(status, body + "\n");
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A duration in words, to the second: `3h 12m`, `4m 2s`, `47s`.
pub fn words(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What `/certs` shows of the certificate in force at `now` (the fields of `ferry
/// proxy-config secret`): identity, pod, serial, validity (RFC 3339 and Unix seconds), time
/// left, the next rotation the renewal loop planned (`next`), the chain as issued
/// (workload certificate first), the roots trusted for peers (PEM in `roots`; subject,
/// SHA-256 fingerprint and end of validity in `trustedRoots`, which during a root rollover
/// lists both roots) and the fingerprint of the root the chain ends with (`chainRoot`).
pub fn certificate_view(
    cert: &crate::identity::Certified,
    pod: &str,
    next: Option<SystemTime>,
    now: SystemTime,
) -> serde_json::Value {
    let left = |at: SystemTime| words(at.duration_since(now).unwrap_or_default());
    let rotation = match next {
        Some(at) => serde_json::json!({
            "at": unix_secs(at),
            "time": rfc3339(at),
            "in": left(at),
            "source": "the proxy's renewal schedule",
        }),
        None => serde_json::json!({
            "at": null,
            "source": "not planned yet",
        }),
    };
    serde_json::json!({
        "identity": cert.id.uri(),
        "pod": pod,
        "serial": cert.serial,
        "validFrom": rfc3339(cert.not_before),
        "validUntil": rfc3339(cert.not_after),
        "notBefore": unix_secs(cert.not_before),
        "notAfter": unix_secs(cert.not_after),
        "expiresIn": left(cert.not_after),
        "expired": cert.not_after <= now,
        "nextRotation": rotation,
        "chain": cert.chain_pem,
        "chainRoot": cert.chain_root(),
        "roots": cert.roots_pem,
        "trustedRoots": trusted_roots(&cert.roots_pem),
    })
}

/// Subject, SHA-256 fingerprint and end of validity of each PEM root.
pub fn trusted_roots(roots_pem: &[String]) -> Vec<serde_json::Value> {
    crate::identity::ders(roots_pem)
        .unwrap_or_default()
        .iter()
        .map(|der| {
            let parsed = x509_parser::parse_x509_certificate(der.as_ref()).ok();
            serde_json::json!({
                "subject": parsed.as_ref().map(|(_, c)| c.subject().to_string()),
                "sha256": ferry_proto::discovery::root_fingerprint(der.as_ref()),
                "notAfter": parsed.as_ref().map(|(_, c)| c.validity().not_after.to_string()),
            })
        })
        .collect()
}

fn certs(state: &AdminState) -> Response<Body> {
    let Some(identity) = &state.identity else {
        return text(
            StatusCode::NOT_FOUND,
            "no workload identity: the proxy runs without a CA (--ca-addr), in plaintext\n",
        );
    };
    let Some(cert) = identity.current() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no certificate yet: the first request to the CA has not succeeded (see the log and ferry_identity_cert_renewals_total)\n",
        );
    };
    let next = identity.next_renewal.lock().ok().and_then(|n| *n);
    let snapshot = state.config.load();
    let who = &snapshot.config.identity;
    let pod = match (who.namespace.as_str(), who.pod.as_str()) {
        (_, "") => "-".to_string(),
        ("", pod) => pod.to_string(),
        (ns, pod) => format!("{ns}/{pod}"),
    };
    json(
        StatusCode::OK,
        &certificate_view(&cert, &pod, next, SystemTime::now()),
    )
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Running => "running",
        Phase::Draining => "draining",
        Phase::Closed => "closed",
    }
}

fn config_dump(state: &AdminState) -> Response<Body> {
    let snapshot = state.config.load();
    let loaded = state.loaded_at();
    let config = match serde_json::to_value(&snapshot.config) {
        Ok(v) => v,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot serialize the configuration: {e}\n"),
            );
        }
    };
    let dump = serde_json::json!({
        "version": snapshot.config.version,
        "loadedAt": rfc3339(loaded),
        "loadedAtUnixSeconds": loaded.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "phase": phase_name(state.lifecycle.phase()),
        "config": config,
    });
    json(StatusCode::OK, &dump)
}

fn clusters(state: &AdminState) -> Response<Body> {
    let snapshot = state.config.load();
    let config = &snapshot.config;
    let mut out = String::new();
    for svc in &config.services {
        let fqdn = format!(
            "{}.{}.svc.{}",
            svc.name, svc.namespace, config.settings.cluster_domain
        );
        for port in &svc.ports {
            if port
                .protocol
                .as_deref()
                .is_some_and(|p| !p.eq_ignore_ascii_case("TCP"))
            {
                continue;
            }
            let cluster = format!("outbound|{}||{fqdn}", port.port);
            let protocol = Protocol::of_port(&port.name, port.app_protocol.as_deref());
            let _ = writeln!(out, "{cluster}::protocol::{}", protocol.as_str());
            match svc.cluster_ip {
                Some(ip) => {
                    let vip = std::net::SocketAddr::new(ip, port.port);
                    let _ = writeln!(out, "{cluster}::vip::{vip}");
                }
                None => {
                    let _ = writeln!(out, "{cluster}::headless::true");
                }
            }
            for ep in &svc.endpoints {
                let addr = std::net::SocketAddr::new(ep.ip, port.target());
                let ready = if ep.ready { "ready" } else { "not_ready" };
                let _ = writeln!(out, "{cluster}::{addr}::{ready}");
                if !ep.pod.is_empty() {
                    let _ = writeln!(out, "{cluster}::{addr}::pod::{}", ep.pod);
                }
                if ep.has_sidecar {
                    let _ = writeln!(out, "{cluster}::{addr}::sidecar::true");
                }
            }
        }
    }
    text(StatusCode::OK, out)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of `key` in a query string.
fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
}

/// Checks a log level or filter: `LEVEL` or `TARGET=LEVEL` directives separated by commas.
pub fn check_level(filter: &str) -> Result<(), String> {
    if filter.trim().is_empty() {
        return Err("empty log level".into());
    }
    for directive in filter.split(',') {
        let directive = directive.trim();
        let (target, level) = match directive.split_once('=') {
            Some((t, l)) => (Some(t), l),
            None => (None, directive),
        };
        if let Some(t) = target {
            let valid = !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-' | '.'));
            if !valid {
                return Err(format!("invalid log target {t:?} in {directive:?}"));
            }
        }
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "unknown log level {level:?}; use one of {}",
                LEVELS.join(", ")
            ));
        }
    }
    Ok(())
}

fn logging(state: &AdminState, req: &Request<Incoming>) -> Response<Body> {
    let Some(level) = query_value(req.uri().query(), "level") else {
        let current = state
            .current_log_level()
            .unwrap_or_else(|| "unknown (not set through this process)".into());
        return text(
            StatusCode::OK,
            format!(
                "level: {current}\nset it with POST /logging?level=<{}>\n",
                LEVELS.join("|")
            ),
        );
    };
    if let Err(e) = check_level(&level) {
        return text(StatusCode::BAD_REQUEST, format!("{e}\n"));
    }
    let Some(set) = &state.set_log_level else {
        return text(
            StatusCode::NOT_IMPLEMENTED,
            "this process cannot change its log level\n",
        );
    };
    match set(&level) {
        Ok(()) => {
            if let Ok(mut current) = state.log_level.lock() {
                *current = Some(level.clone());
            }
            tracing::info!("log level set to {level}");
            text(StatusCode::OK, format!("level: {level}\n"))
        }
        Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

fn drain(state: &AdminState) -> Response<Body> {
    state.lifecycle.advance(Phase::Draining);
    tracing::info!("drain requested through the admin API");
    text(StatusCode::OK, "draining\n")
}

fn quit(state: &AdminState) -> Response<Body> {
    state.lifecycle.advance(Phase::Draining);
    let lifecycle = state.lifecycle.clone();
    // Close just after answering, so the caller gets its response.
    tokio::spawn(async move {
        tokio::time::sleep(QUIT_DELAY).await;
        lifecycle.advance(Phase::Closed);
    });
    tracing::info!("exit requested through the admin API");
    text(StatusCode::OK, "OK\n")
}

fn ready(state: &AdminState) -> Response<Body> {
    if state.ready() {
        text(StatusCode::OK, "LIVE\n")
    } else {
        let phase = phase_name(state.lifecycle.phase()).to_ascii_uppercase();
        text(StatusCode::SERVICE_UNAVAILABLE, format!("{phase}\n"))
    }
}

/// Answers one request on the admin port.
pub async fn respond(state: &AdminState, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let get = matches!(method, Method::GET | Method::HEAD);
    let post = method == Method::POST;
    match req.uri().path() {
        "/" if get => index(),
        "/config_dump" if get => config_dump(state),
        "/clusters" if get => clusters(state),
        "/stats" | "/stats/prometheus" if get => metrics_response(state, &req),
        "/logging" if get || post => logging(state, &req),
        "/ready" if get => ready(state),
        "/certs" if get => certs(state),
        "/drain" if post => drain(state),
        "/quitquitquit" if post => quit(state),
        "/" | "/config_dump" | "/clusters" | "/stats" | "/stats/prometheus" | "/ready"
        | "/certs" => method_not_allowed("GET"),
        "/logging" => method_not_allowed("GET, POST"),
        "/drain" | "/quitquitquit" => method_not_allowed("POST"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; GET / lists the endpoints\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        let at = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(at(4_102_444_800), "2100-01-01T00:00:00Z");
    }

    #[test]
    fn durations_in_words() {
        let cases = [
            (0, "0s"),
            (47, "47s"),
            (60, "1m 0s"),
            (242, "4m 2s"),
            (3600, "1h 0m"),
            (11_520, "3h 12m"),
            (90_000, "25h 0m"),
        ];
        for (secs, want) in cases {
            assert_eq!(words(Duration::from_secs(secs)), want, "{secs}");
        }
    }

    #[test]
    fn log_levels() {
        for good in ["debug", "WARNING", "ferry_proxy=debug,warn", "a::b=trace"] {
            assert_eq!(check_level(good), Ok(()), "{good}");
        }
        for bad in ["", "loud", "=debug", "x=", "a b=info", "debug,"] {
            assert!(check_level(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn queries() {
        assert_eq!(
            query_value(Some("a=1&level=ferry_proxy%3Ddebug%2Cwarn"), "level"),
            Some("ferry_proxy=debug,warn".into())
        );
        assert_eq!(query_value(Some("level"), "level"), Some(String::new()));
        assert_eq!(query_value(Some("x=%"), "x"), Some("%".into()));
        assert_eq!(query_value(Some("x=%4"), "x"), Some("%4".into()));
        assert_eq!(query_value(None, "level"), None);
    }
}
