//! The pod annotations (and label) that change injection, read and validated with Istio's
//! rules. An invalid value is an error naming the annotation, so the webhook refuses the
//! pod as Istio does instead of injecting something the user did not ask for.

use serde_json::{Map, Value};
use std::fmt;
use std::net::IpAddr;

/// `sidecar.istio.io/inject` (label and, deprecated, annotation).
pub const INJECT: &str = "sidecar.istio.io/inject";
/// Interception mode: `REDIRECT`, `TPROXY` or `NONE`.
pub const INTERCEPTION_MODE: &str = "sidecar.istio.io/interceptionMode";
/// Inbound ports to capture (`*` = all).
pub const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
/// Inbound ports not to capture.
pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
/// Outbound ports to capture even when their destination is excluded.
pub const INCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeOutboundPorts";
/// Outbound ports not to capture.
pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
/// Outbound destination CIDRs to capture (`*` = all).
pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
/// Outbound destination CIDRs not to capture.
pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
/// Interfaces whose traffic is never captured.
pub const EXCLUDE_INTERFACES: &str = "traffic.sidecar.istio.io/excludeInterfaces";
/// Virtual interfaces whose inbound traffic is treated as outbound (current name).
pub const REROUTE_VIRTUAL_INTERFACES: &str = "istio.io/reroute-virtual-interfaces";
/// Older name of [`REROUTE_VIRTUAL_INTERFACES`].
pub const KUBEVIRT_INTERFACES: &str = "traffic.sidecar.istio.io/kubevirtInterfaces";
/// Proxy status port; `0` disables the proxy's readiness probes and probe rewriting.
pub const STATUS_PORT: &str = "status.sidecar.istio.io/port";
/// Readiness probe `initialDelaySeconds` of the proxy.
pub const READINESS_INITIAL_DELAY: &str = "readiness.status.sidecar.istio.io/initialDelaySeconds";
/// Readiness probe `periodSeconds` of the proxy.
pub const READINESS_PERIOD: &str = "readiness.status.sidecar.istio.io/periodSeconds";
/// Readiness probe `failureThreshold` of the proxy.
pub const READINESS_FAILURE_THRESHOLD: &str = "readiness.status.sidecar.istio.io/failureThreshold";
/// Proxy CPU request.
pub const PROXY_CPU: &str = "sidecar.istio.io/proxyCPU";
/// Proxy memory request.
pub const PROXY_MEMORY: &str = "sidecar.istio.io/proxyMemory";
/// Proxy CPU limit.
pub const PROXY_CPU_LIMIT: &str = "sidecar.istio.io/proxyCPULimit";
/// Proxy memory limit.
pub const PROXY_MEMORY_LIMIT: &str = "sidecar.istio.io/proxyMemoryLimit";
/// Proxy image override.
pub const PROXY_IMAGE: &str = "sidecar.istio.io/proxyImage";
/// Proxy log level.
pub const LOG_LEVEL: &str = "sidecar.istio.io/logLevel";
/// Per-pod native-sidecar switch (`"true"`/`"false"`).
pub const NATIVE_SIDECAR: &str = "sidecar.istio.io/nativeSidecar";
/// Per-pod probe-rewrite switch.
pub const REWRITE_APP_PROBERS: &str = "sidecar.istio.io/rewriteAppHTTPProbers";
/// Per-pod opt-out of metrics merging.
pub const MERGE_METRICS: &str = "prometheus.istio.io/merge-metrics";
/// ProxyConfig overlay (YAML or JSON).
pub const PROXY_CONFIG: &str = "proxy.istio.io/config";

/// An annotation whose value Istio would refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidAnnotation {
    /// The annotation's name.
    pub name: String,
    /// The value found.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for InvalidAnnotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid value '{}' for annotation '{}': {}",
            self.value, self.name, self.reason
        )
    }
}

/// How the proxy captures traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterceptionMode {
    /// nat REDIRECT (the default).
    Redirect,
    /// mangle TPROXY, keeps the original source address.
    Tproxy,
    /// No capture: the application talks to the proxy explicitly.
    None,
}

impl InterceptionMode {
    /// The name used in annotations and redirect arguments.
    pub fn as_str(self) -> &'static str {
        match self {
            InterceptionMode::Redirect => "REDIRECT",
            InterceptionMode::Tproxy => "TPROXY",
            InterceptionMode::None => "NONE",
        }
    }
}

/// Parses a comma-separated port list as Istio does (spaces around ports allowed, 0..65535).
pub fn parse_ports(list: &str) -> Result<Vec<u16>, String> {
    let list = list.trim();
    if list.is_empty() {
        return Ok(Vec::new());
    }
    list.split(',')
        .map(|p| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("failed parsing port '{p}'"))
        })
        .collect()
}

/// Parses a comma-separated CIDR list (every entry needs a prefix length, no spaces).
pub fn parse_cidrs(list: &str) -> Result<Vec<String>, String> {
    if list.is_empty() {
        return Ok(Vec::new());
    }
    list.split(',')
        .map(|cidr| {
            let bad = || format!("failed parsing cidr '{cidr}'");
            let (addr, bits) = cidr.split_once('/').ok_or_else(bad)?;
            let addr: IpAddr = addr.parse().map_err(|_| bad())?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let digits_only = !bits.is_empty() && bits.chars().all(|c| c.is_ascii_digit());
            if !digits_only || bits.parse::<u8>().map_or(true, |b| b > max) {
                return Err(bad());
            }
            Ok(cidr.to_string())
        })
        .collect()
}

/// Checks a Kubernetes resource quantity (`100m`, `1.5`, `128Mi`, `1e3`, `2G`).
pub fn is_quantity(value: &str) -> bool {
    let number_end = value
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.' || *c == '+' || *c == '-'))
        .map_or(value.len(), |(i, _)| i);
    let (number, suffix) = value.split_at(number_end);
    let number = number.strip_prefix(['+', '-']).unwrap_or(number);
    let valid_number = !number.is_empty()
        && number.chars().filter(|c| *c == '.').count() <= 1
        && number.chars().all(|c| c.is_ascii_digit() || c == '.')
        && number != ".";
    let valid_suffix = matches!(
        suffix,
        "" | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
            | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
    ) || suffix.strip_prefix(['e', 'E']).is_some_and(|exp| {
        let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
        !exp.is_empty() && exp.chars().all(|c| c.is_ascii_digit())
    });
    valid_number && valid_suffix
}

fn parse_bool(value: &str) -> Option<bool> {
    // Go's strconv.ParseBool, which Istio uses for boolean annotations.
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Everything injection reads from a pod's annotations, validated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodSettings {
    /// Interception mode, if set.
    pub interception_mode: Option<InterceptionMode>,
    /// includeInboundPorts as written (`*` or a port list).
    pub include_inbound_ports: Option<String>,
    /// excludeInboundPorts.
    pub exclude_inbound_ports: Vec<u16>,
    /// includeOutboundPorts.
    pub include_outbound_ports: Vec<u16>,
    /// excludeOutboundPorts.
    pub exclude_outbound_ports: Vec<u16>,
    /// includeOutboundIPRanges as written (`*` or a CIDR list).
    pub include_outbound_ip_ranges: Option<String>,
    /// excludeOutboundIPRanges.
    pub exclude_outbound_ip_ranges: Vec<String>,
    /// excludeInterfaces.
    pub exclude_interfaces: Vec<String>,
    /// Virtual interfaces to reroute.
    pub reroute_virtual_interfaces: Vec<String>,
    /// Status port (`None` = default 15020; `Some(0)` disables probes).
    pub status_port: Option<u16>,
    /// Readiness probe overrides.
    pub readiness_initial_delay: Option<u32>,
    /// Readiness probe `periodSeconds`.
    pub readiness_period: Option<u32>,
    /// Readiness probe `failureThreshold`.
    pub readiness_failure_threshold: Option<u32>,
    /// Resource overrides.
    pub proxy_cpu: Option<String>,
    /// Memory request override.
    pub proxy_memory: Option<String>,
    /// CPU limit override.
    pub proxy_cpu_limit: Option<String>,
    /// Memory limit override.
    pub proxy_memory_limit: Option<String>,
    /// Image override.
    pub proxy_image: Option<String>,
    /// Proxy log level.
    pub log_level: Option<String>,
    /// Native-sidecar override.
    pub native_sidecar: Option<bool>,
    /// Probe-rewrite override.
    pub rewrite_app_probes: Option<bool>,
    /// Metrics-merge override.
    pub merge_metrics: Option<bool>,
    /// `holdApplicationUntilProxyStarts` from `proxy.istio.io/config`.
    pub hold_application: Option<bool>,
    /// `proxyMetadata` from `proxy.istio.io/config`: extra proxy environment.
    pub proxy_metadata: Vec<(String, String)>,
    /// The `proxy.istio.io/config` overlay as JSON, for the proxy's `PROXY_CONFIG`.
    pub proxy_config: Option<Value>,
}

/// Reads and validates the annotations; every invalid one is reported.
pub fn read(annotations: &Map<String, Value>) -> Result<PodSettings, Vec<InvalidAnnotation>> {
    let mut errors = Vec::new();
    let mut s = PodSettings::default();
    for (name, raw) in annotations {
        let Some(value) = raw.as_str() else {
            if is_known(name) {
                errors.push(InvalidAnnotation {
                    name: name.clone(),
                    value: raw.to_string(),
                    reason: "annotation values must be strings".into(),
                });
            }
            continue;
        };
        if let Err(reason) = apply(&mut s, name, value) {
            errors.push(InvalidAnnotation {
                name: name.clone(),
                value: value.to_string(),
                reason,
            });
        }
    }
    if errors.is_empty() {
        Ok(s)
    } else {
        Err(errors)
    }
}

/// The annotations this module reads.
pub const KNOWN: [&str; 26] = [
    INJECT,
    INTERCEPTION_MODE,
    INCLUDE_INBOUND_PORTS,
    EXCLUDE_INBOUND_PORTS,
    INCLUDE_OUTBOUND_PORTS,
    EXCLUDE_OUTBOUND_PORTS,
    INCLUDE_OUTBOUND_IP_RANGES,
    EXCLUDE_OUTBOUND_IP_RANGES,
    EXCLUDE_INTERFACES,
    REROUTE_VIRTUAL_INTERFACES,
    KUBEVIRT_INTERFACES,
    STATUS_PORT,
    READINESS_INITIAL_DELAY,
    READINESS_PERIOD,
    READINESS_FAILURE_THRESHOLD,
    PROXY_CPU,
    PROXY_MEMORY,
    PROXY_CPU_LIMIT,
    PROXY_MEMORY_LIMIT,
    PROXY_IMAGE,
    LOG_LEVEL,
    NATIVE_SIDECAR,
    REWRITE_APP_PROBERS,
    MERGE_METRICS,
    PROXY_CONFIG,
    "prometheus.io/scrape",
];

fn is_known(name: &str) -> bool {
    KNOWN.contains(&name)
}

fn uint32(value: &str) -> Result<u32, String> {
    value
        .parse::<u32>()
        .map_err(|_| format!("'{value}' is not an unsigned 32-bit integer"))
}

fn quantity(value: &str) -> Result<String, String> {
    if is_quantity(value) {
        Ok(value.to_string())
    } else {
        Err(format!("'{value}' is not a Kubernetes resource quantity"))
    }
}

fn boolean(value: &str) -> Result<bool, String> {
    parse_bool(value).ok_or_else(|| format!("'{value}' is not a boolean"))
}

fn names(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn apply(s: &mut PodSettings, name: &str, value: &str) -> Result<(), String> {
    match name {
        INTERCEPTION_MODE => {
            s.interception_mode = Some(match value {
                "REDIRECT" => InterceptionMode::Redirect,
                "TPROXY" => InterceptionMode::Tproxy,
                "NONE" => InterceptionMode::None,
                _ => return Err("interceptionMode invalid, use REDIRECT,TPROXY,NONE".into()),
            })
        }
        INCLUDE_INBOUND_PORTS => {
            if value.trim() != "*" {
                parse_ports(value).map_err(|e| format!("includeInboundPorts invalid: {e}"))?;
            }
            s.include_inbound_ports = Some(value.trim().to_string());
        }
        EXCLUDE_INBOUND_PORTS => {
            s.exclude_inbound_ports =
                parse_ports(value).map_err(|e| format!("excludeInboundPorts invalid: {e}"))?
        }
        INCLUDE_OUTBOUND_PORTS => {
            s.include_outbound_ports =
                parse_ports(value).map_err(|e| format!("includeOutboundPorts invalid: {e}"))?
        }
        EXCLUDE_OUTBOUND_PORTS => {
            s.exclude_outbound_ports =
                parse_ports(value).map_err(|e| format!("excludeOutboundPorts invalid: {e}"))?
        }
        INCLUDE_OUTBOUND_IP_RANGES => {
            if value != "*" {
                parse_cidrs(value).map_err(|e| format!("includeIPRanges invalid: {e}"))?;
            }
            s.include_outbound_ip_ranges = Some(value.to_string());
        }
        EXCLUDE_OUTBOUND_IP_RANGES => {
            s.exclude_outbound_ip_ranges =
                parse_cidrs(value).map_err(|e| format!("excludeIPRanges invalid: {e}"))?
        }
        EXCLUDE_INTERFACES => s.exclude_interfaces = names(value),
        REROUTE_VIRTUAL_INTERFACES | KUBEVIRT_INTERFACES => {
            s.reroute_virtual_interfaces = names(value)
        }
        STATUS_PORT => {
            s.status_port = Some(
                value
                    .trim()
                    .parse::<u16>()
                    .map_err(|_| format!("failed parsing port '{value}'"))?,
            )
        }
        READINESS_INITIAL_DELAY => s.readiness_initial_delay = Some(uint32(value)?),
        READINESS_PERIOD => s.readiness_period = Some(uint32(value)?),
        READINESS_FAILURE_THRESHOLD => s.readiness_failure_threshold = Some(uint32(value)?),
        PROXY_CPU => s.proxy_cpu = Some(quantity(value)?),
        PROXY_MEMORY => s.proxy_memory = Some(quantity(value)?),
        PROXY_CPU_LIMIT => s.proxy_cpu_limit = Some(quantity(value)?),
        PROXY_MEMORY_LIMIT => s.proxy_memory_limit = Some(quantity(value)?),
        PROXY_IMAGE => {
            if value.trim().is_empty() || value.contains('\u{0}') {
                return Err("the image must not be empty".into());
            }
            s.proxy_image = Some(value.trim().to_string())
        }
        LOG_LEVEL => {
            const LEVELS: [&str; 8] = [
                "trace", "debug", "info", "warning", "warn", "error", "critical", "off",
            ];
            if !LEVELS.contains(&value) {
                return Err(format!("use one of {}", LEVELS.join(", ")));
            }
            s.log_level = Some(value.to_string())
        }
        NATIVE_SIDECAR => s.native_sidecar = Some(boolean(value)?),
        REWRITE_APP_PROBERS => s.rewrite_app_probes = Some(boolean(value)?),
        MERGE_METRICS => s.merge_metrics = Some(boolean(value)?),
        PROXY_CONFIG => read_proxy_config(s, value)?,
        _ => {}
    }
    Ok(())
}

/// Reads the parts of a `proxy.istio.io/config` overlay that injection uses. The value may
/// be JSON or YAML (parsed with Ferry's YAML loader).
fn read_proxy_config(s: &mut PodSettings, value: &str) -> Result<(), String> {
    let doc = if value.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        let docs = ferry_model::load::parse_documents(PROXY_CONFIG, value)
            .map_err(|e| format!("not YAML or JSON: {}", e.message))?;
        match docs.into_iter().next() {
            Some(d) => d.value,
            None => Value::Object(Map::new()),
        }
    };
    let Value::Object(fields) = &doc else {
        return Err("a ProxyConfig must be a mapping".into());
    };
    for (key, v) in fields {
        match key.as_str() {
            "holdApplicationUntilProxyStarts" => {
                s.hold_application = Some(
                    v.as_bool()
                        .ok_or("holdApplicationUntilProxyStarts must be a boolean")?,
                )
            }
            "proxyMetadata" => {
                let map = v
                    .as_object()
                    .ok_or("proxyMetadata must be a map of strings")?;
                for (k, v) in map {
                    let v = v.as_str().ok_or("proxyMetadata values must be strings")?;
                    s.proxy_metadata.push((k.clone(), v.to_string()));
                }
            }
            "discoveryAddress" => {
                let addr = v
                    .as_str()
                    .ok_or("discoveryAddress must be a string (host:port)")?;
                let port = addr
                    .trim()
                    .rsplit_once(':')
                    .map(|(host, port)| (host.trim_matches(['[', ']']), port.parse::<u16>()));
                if !matches!(port, Some((host, Ok(p))) if !host.is_empty() && p != 0) {
                    return Err(format!(
                        "discoveryAddress {addr:?} must be host:port (the control plane's TLS port, 15012)"
                    ));
                }
            }
            "concurrency" if v.as_u64().is_none_or(|n| n > u32::MAX as u64) => {
                return Err("concurrency must be a non-negative integer".into());
            }
            _ => {}
        }
    }
    s.proxy_config = Some(doc);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(name: &str, value: &str) -> Result<PodSettings, String> {
        let map = json!({ name: value });
        read(map.as_object().expect("object literal")).map_err(|e| {
            e.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    #[test]
    fn validation_table() {
        let cases: &[(&str, &str, bool)] = &[
            (INCLUDE_INBOUND_PORTS, "*", true),
            (INCLUDE_INBOUND_PORTS, "80,90", true),
            (INCLUDE_INBOUND_PORTS, " 80 , 90 ", true),
            (INCLUDE_INBOUND_PORTS, "", true),
            (INCLUDE_INBOUND_PORTS, "80,abc", false),
            (INCLUDE_INBOUND_PORTS, "65536", false),
            (EXCLUDE_INBOUND_PORTS, "15020,8080", true),
            (EXCLUDE_INBOUND_PORTS, "*", false),
            (EXCLUDE_OUTBOUND_PORTS, "abc", false),
            (EXCLUDE_OUTBOUND_PORTS, "6379", true),
            (INCLUDE_OUTBOUND_PORTS, "x", false),
            (INCLUDE_OUTBOUND_IP_RANGES, "*", true),
            (
                INCLUDE_OUTBOUND_IP_RANGES,
                "10.0.0.0/8,192.168.0.0/16",
                true,
            ),
            (INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0", false),
            (INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/33", false),
            (INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/8, 1.0.0.0/8", false),
            (EXCLUDE_OUTBOUND_IP_RANGES, "", true),
            (EXCLUDE_OUTBOUND_IP_RANGES, "fd00::/8", true),
            (EXCLUDE_OUTBOUND_IP_RANGES, "*", false),
            (INTERCEPTION_MODE, "REDIRECT", true),
            (INTERCEPTION_MODE, "TPROXY", true),
            (INTERCEPTION_MODE, "NONE", true),
            (INTERCEPTION_MODE, "redirect", false),
            (STATUS_PORT, "15020", true),
            (STATUS_PORT, "0", true),
            (STATUS_PORT, "-1", false),
            (READINESS_PERIOD, "10", true),
            (READINESS_PERIOD, "-3", false),
            (READINESS_FAILURE_THRESHOLD, "x", false),
            (PROXY_CPU, "100m", true),
            (PROXY_CPU, "1.5", true),
            (PROXY_MEMORY, "128Mi", true),
            (PROXY_MEMORY, "1e3", true),
            (PROXY_MEMORY, "lots", false),
            (PROXY_MEMORY_LIMIT, "1Gb", false),
            (MERGE_METRICS, "false", true),
            (MERGE_METRICS, "nope", false),
            (NATIVE_SIDECAR, "true", true),
            (NATIVE_SIDECAR, "yes", false),
            (PROXY_CONFIG, "holdApplicationUntilProxyStarts: true", true),
            (
                PROXY_CONFIG,
                "{\"holdApplicationUntilProxyStarts\": true}",
                true,
            ),
            (
                PROXY_CONFIG,
                "holdApplicationUntilProxyStarts: maybe",
                false,
            ),
            (PROXY_CONFIG, "- a list", false),
            (
                PROXY_CONFIG,
                "discoveryAddress: ferry-control.mesh.svc:15012",
                true,
            ),
            (PROXY_CONFIG, "discoveryAddress: \"[fd00::1]:15012\"", true),
            (
                PROXY_CONFIG,
                "discoveryAddress: ferry-control.mesh.svc",
                false,
            ),
            (PROXY_CONFIG, "discoveryAddress: \":15012\"", false),
            (PROXY_CONFIG, "discoveryAddress: host:0", false),
            (PROXY_CONFIG, "discoveryAddress: 15012", false),
            (LOG_LEVEL, "debug", true),
            (LOG_LEVEL, "loud", false),
            ("example.com/unrelated", "anything", true),
        ];
        for (name, value, ok) in cases {
            let got = check(name, value);
            assert_eq!(got.is_ok(), *ok, "{name}={value:?}: {got:?}");
            if let Err(msg) = got {
                assert!(msg.contains(name), "error names the annotation: {msg}");
            }
        }
    }

    #[test]
    fn non_string_values_of_known_annotations_are_errors() {
        let map = json!({ STATUS_PORT: 15020, "example.com/other": 3 });
        let err = read(map.as_object().expect("object")).expect_err("number rejected");
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].name, STATUS_PORT);
    }

    #[test]
    fn every_error_is_reported() {
        let map = json!({ EXCLUDE_INBOUND_PORTS: "x", EXCLUDE_OUTBOUND_PORTS: "y" });
        let err = read(map.as_object().expect("object")).expect_err("two errors");
        assert_eq!(err.len(), 2);
    }

    #[test]
    fn proxy_config_fields() {
        let s = check(
            PROXY_CONFIG,
            "holdApplicationUntilProxyStarts: true\nproxyMetadata:\n  FOO: bar\n",
        )
        .expect("valid");
        assert_eq!(s.hold_application, Some(true));
        assert_eq!(
            s.proxy_metadata,
            vec![("FOO".to_string(), "bar".to_string())]
        );
    }
}
