//! The checker that semantic validation reports into, and checks shared by several resources:
//! hosts, durations, percentages, string matches, labels, gateways, `exportTo`, ports, subnets.

use std::collections::BTreeMap;

use super::path::FieldPath;
use crate::duration::Duration;
use crate::istio::{Percent, StringMatch};
use crate::names;

/// Collects semantic errors and warnings about one resource.
pub struct Checker<'a> {
    /// The resource's namespace (`default` when absent).
    pub namespace: &'a str,
    /// The cluster's DNS domain, for resolving short host names.
    pub cluster_domain: &'a str,
    /// Errors found, by path.
    pub errors: Vec<(FieldPath, String)>,
    /// Warnings found, by path.
    pub warnings: Vec<(FieldPath, String)>,
}

impl<'a> Checker<'a> {
    /// A checker for a resource in `namespace`.
    pub fn new(namespace: &'a str, cluster_domain: &'a str) -> Self {
        Checker {
            namespace,
            cluster_domain,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Reports an error at `path`.
    pub fn error(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.errors.push((path.clone(), message.into()));
    }

    /// Reports a warning at `path`.
    pub fn warn(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.warnings.push((path.clone(), message.into()));
    }

    /// A host that may carry a wildcard prefix; `*` alone is allowed when `allow_star`.
    pub fn wildcard_host(&mut self, path: &FieldPath, host: &str, allow_star: bool) {
        if host == "*" && !allow_star {
            self.error(path, "host `*` is not allowed here");
        } else if let Err(e) = names::check_wildcard_host(host) {
            self.error(path, e);
        }
    }

    /// A duration of at least `min`, to millisecond precision.
    pub fn duration(&mut self, path: &FieldPath, d: &Duration, min: std::time::Duration) {
        let value = d.get();
        if value < min {
            let min_text = if min >= std::time::Duration::from_secs(1) {
                format!("{}s", min.as_secs())
            } else {
                format!("{}ms", min.as_millis())
            };
            self.error(path, format!("duration `{d}` must be at least {min_text}"));
        } else if !value.subsec_nanos().is_multiple_of(1_000_000) {
            self.error(
                path,
                format!("duration `{d}` is finer than the supported millisecond precision"),
            );
        }
    }

    /// A percentage in [0, 100].
    pub fn percent(&mut self, path: &FieldPath, p: &Percent) {
        match p.value {
            Some(v) if !(0.0..=100.0).contains(&v) => {
                self.error(
                    &path.key("value"),
                    format!("percentage {v} must be between 0 and 100"),
                );
            }
            _ => {}
        }
    }

    /// An integer percentage in [0, 100].
    pub fn int_percent(&mut self, path: &FieldPath, value: i64) {
        if !(0..=100).contains(&value) {
            self.error(
                path,
                format!("percentage {value} must be between 0 and 100"),
            );
        }
    }

    /// A value that must not be negative.
    pub fn non_negative(&mut self, path: &FieldPath, value: i32) {
        if value < 0 {
            self.error(path, format!("{value} must not be negative"));
        }
    }

    /// A port number in 1..=65535.
    pub fn port(&mut self, path: &FieldPath, port: u32) {
        if !(1..=65535).contains(&port) {
            self.error(path, format!("port {port} must be between 1 and 65535"));
        }
    }

    /// An RE2 regular expression.
    pub fn regex(&mut self, path: &FieldPath, pattern: &str) {
        if let Err(e) = regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
        {
            let first = e.to_string();
            let last = first.lines().last().unwrap_or("invalid").trim();
            let reason = last.strip_prefix("error: ").unwrap_or(last);
            self.error(
                path,
                format!("invalid regular expression `{pattern}`: {reason}"),
            );
        }
    }

    /// A string match with at most one of exact/prefix/regex.
    pub fn string_match(&mut self, path: &FieldPath, m: &StringMatch) {
        let set = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()]
            .iter()
            .filter(|s| **s)
            .count();
        if set > 1 {
            self.error(path, "only one of `exact`, `prefix` or `regex` may be set");
        }
        if let Some(re) = &m.regex {
            self.regex(&path.key("regex"), re);
        }
    }

    /// Kubernetes labels (keys and values).
    pub fn labels(&mut self, path: &FieldPath, labels: &BTreeMap<String, String>) {
        for (k, v) in labels {
            let at = path.key(k.clone());
            if let Err(e) = names::check_label_key(k) {
                self.error(&at, e);
            }
            if let Err(e) = names::check_label_value(v) {
                self.error(&at, e);
            }
        }
    }

    /// Gateway references: `mesh`, `name` or `namespace/name`.
    pub fn gateways(&mut self, path: &FieldPath, gateways: &[String]) {
        for (i, gw) in gateways.iter().enumerate() {
            let at = path.index(i);
            if gw == "mesh" {
                continue;
            }
            let (ns, name) = match gw.split_once('/') {
                Some((ns, name)) => (Some(ns), name),
                None => (None, gw.as_str()),
            };
            if let Some(ns) = ns
                && !names::is_dns1123_label(ns)
            {
                self.error(
                    &at,
                    format!("gateway `{gw}`: namespace `{ns}` is not a valid namespace name"),
                );
            }
            if !names::is_dns1123_subdomain(name) {
                self.error(
                    &at,
                    format!("gateway `{gw}`: `{name}` is not a valid gateway name"),
                );
            }
        }
    }

    /// `exportTo`: `.`, `*`, `~` or namespace names, without duplicates; `~` stands alone.
    pub fn export_to(&mut self, path: &FieldPath, entries: &[String]) {
        let mut seen = std::collections::HashSet::new();
        for (i, e) in entries.iter().enumerate() {
            let at = path.index(i);
            if !seen.insert(e.as_str()) {
                self.error(&at, format!("duplicate exportTo entry `{e}`"));
            } else if !matches!(e.as_str(), "." | "*" | "~") && !names::is_dns1123_label(e) {
                self.error(
                    &at,
                    format!("exportTo entry `{e}` must be `.`, `*`, `~` or a namespace name"),
                );
            }
        }
        if entries.len() > 1 && entries.iter().any(|e| e == "~") {
            self.error(
                path,
                "exportTo `~` (export to none) cannot be combined with other entries",
            );
        }
    }

    /// An IP address or CIDR block.
    pub fn subnet(&mut self, path: &FieldPath, s: &str) {
        if !is_ip_or_cidr(s) {
            self.error(path, format!("`{s}` is not an IP address or CIDR block"));
        }
    }

    /// A namespace name.
    pub fn namespace_name(&mut self, path: &FieldPath, ns: &str) {
        if !names::is_dns1123_label(ns) {
            self.error(path, format!("`{ns}` is not a valid namespace name"));
        }
    }
}

/// Whether `s` is an IP address or a CIDR block (`10.0.0.0/8`, `fd00::/8`).
pub fn is_ip_or_cidr(s: &str) -> bool {
    match s.split_once('/') {
        None => s.parse::<std::net::IpAddr>().is_ok(),
        Some((ip, bits)) => match (ip.parse::<std::net::IpAddr>(), bits.parse::<u8>()) {
            (Ok(std::net::IpAddr::V4(_)), Ok(b)) => b <= 32,
            (Ok(std::net::IpAddr::V6(_)), Ok(b)) => b <= 128,
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        let cases = [
            ("10.0.0.1", true),
            ("10.0.0.0/8", true),
            ("10.0.0.0/33", false),
            ("fd00::/8", true),
            ("::1", true),
            ("example.com", false),
            ("10.0.0.0/x", false),
        ];
        for (s, ok) in cases {
            assert_eq!(is_ip_or_cidr(s), ok, "{s}");
        }
    }

    #[test]
    fn shared_checks() {
        let mut c = Checker::new("default", "cluster.local");
        let root = FieldPath::root();
        c.gateways(
            &root.key("g"),
            &["mesh".into(), "istio-system/gw".into(), "Bad_NS/gw".into()],
        );
        c.export_to(&root.key("e"), &[".".into(), ".".into()]);
        c.export_to(&root.key("f"), &["~".into(), "*".into()]);
        c.regex(&root.key("r"), "(unclosed");
        c.percent(&root.key("p"), &Percent { value: Some(101.0) });
        c.port(&root.key("port"), 0);
        let paths: Vec<String> = c.errors.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(paths, ["g[2]", "e[1]", "f", "r", "p.value", "port"]);
    }
}
