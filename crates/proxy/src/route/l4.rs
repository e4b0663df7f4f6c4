//! Match conditions of TCP and TLS rules (a VirtualService's `tcp[].match` and
//! `tls[].match`), compiled once per configuration. Conditions on the calling workload
//! (`sourceLabels`, `sourceNamespace`) and on gateways are decided at compile time — a sidecar
//! knows its own pod — so a connection only checks its destination port and address, its
//! source address, and the TLS server name.

use ferry_model::istio::virtual_service::{L4MatchAttributes, TlsMatchAttributes};
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// Who the proxy is, for `sourceLabels` and `sourceNamespace`.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    /// The proxy's pod labels.
    pub labels: &'a BTreeMap<String, String>,
    /// The proxy's namespace.
    pub namespace: &'a str,
}

impl Source<'_> {
    /// Whether the proxy carries every label of `wanted`.
    pub fn has_labels(&self, wanted: &BTreeMap<String, String>) -> bool {
        wanted.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }

    /// Whether conditions on the caller and on gateways let a match apply to this sidecar.
    pub fn admits(
        &self,
        labels: &BTreeMap<String, String>,
        namespace: Option<&str>,
        gateways: &[String],
    ) -> bool {
        self.has_labels(labels)
            && namespace.is_none_or(|ns| ns == self.namespace)
            && (gateways.is_empty() || gateways.iter().any(|g| g == "mesh"))
    }
}

/// What a connection offers to match on.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    /// The address the client dialled.
    pub dst: SocketAddr,
    /// The client's address.
    pub src: IpAddr,
    /// The TLS server name, if the client sent one.
    pub sni: Option<&'a str>,
}

/// Parses an IP address or CIDR block; `None` for anything else.
pub fn subnet(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// One compiled match entry.
#[derive(Debug, Clone, Default)]
pub struct L4Match {
    port: Option<u16>,
    destination_subnets: Vec<IpNet>,
    source_subnet: Option<IpNet>,
    sni_hosts: Vec<String>,
    /// Decided at compile time: source labels, namespace, gateways, and unparsable fields.
    admitted: bool,
}

impl L4Match {
    /// Compiles a TCP match entry.
    pub fn tcp(m: &L4MatchAttributes, me: &Source<'_>) -> L4Match {
        let subnets: Vec<IpNet> = m
            .destination_subnets
            .iter()
            .filter_map(|s| subnet(s))
            .collect();
        let source_subnet = m.source_subnet.as_deref().map(subnet);
        L4Match {
            port: m.port.and_then(|p| u16::try_from(p).ok()),
            admitted: me.admits(&m.source_labels, m.source_namespace.as_deref(), &m.gateways)
                && subnets.len() == m.destination_subnets.len()
                && source_subnet.as_ref().is_none_or(Option::is_some),
            destination_subnets: subnets,
            source_subnet: source_subnet.flatten(),
            sni_hosts: Vec::new(),
        }
    }

    /// Compiles a TLS match entry.
    pub fn tls(m: &TlsMatchAttributes, me: &Source<'_>) -> L4Match {
        let subnets: Vec<IpNet> = m
            .destination_subnets
            .iter()
            .filter_map(|s| subnet(s))
            .collect();
        L4Match {
            port: m.port.and_then(|p| u16::try_from(p).ok()),
            admitted: me.admits(&m.source_labels, m.source_namespace.as_deref(), &m.gateways)
                && subnets.len() == m.destination_subnets.len(),
            destination_subnets: subnets,
            source_subnet: None,
            sni_hosts: m.sni_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether the connection matches (every condition set holds).
    pub fn matches(&self, c: &Connection<'_>) -> bool {
        self.admitted
            && self.port.is_none_or(|p| p == c.dst.port())
            && (self.destination_subnets.is_empty()
                || self
                    .destination_subnets
                    .iter()
                    .any(|n| n.contains(&c.dst.ip())))
            && self.source_subnet.is_none_or(|n| n.contains(&c.src))
            && (self.sni_hosts.is_empty()
                || c.sni
                    .is_some_and(|sni| self.sni_hosts.iter().any(|h| sni_matches(h, sni))))
    }
}

/// Whether a server name matches an `sniHosts` entry (`*.example.com` matches one or more
/// leading labels; `*` matches everything), ignoring case.
pub fn sni_matches(pattern: &str, sni: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => {
            sni.len() > suffix.len()
                && sni
                    .get(sni.len() - suffix.len()..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
        }
        None => pattern.eq_ignore_ascii_case(sni),
    }
}

/// Whether any entry matches; an empty list matches every connection.
pub fn any(matches: &[L4Match], c: &Connection<'_>) -> bool {
    matches.is_empty() || matches.iter().any(|m| m.matches(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn conn(dst: &str, src: &str, sni: Option<&'static str>) -> Connection<'static> {
        Connection {
            dst: dst.parse().expect("dst"),
            src: src.parse().expect("src"),
            sni,
        }
    }

    #[test]
    fn tcp_match_table() {
        let my_labels = labels(&[("app", "client"), ("version", "v1")]);
        let me = Source {
            labels: &my_labels,
            namespace: "default",
        };
        let m = |f: fn(&mut L4MatchAttributes)| {
            let mut a = L4MatchAttributes::default();
            f(&mut a);
            L4Match::tcp(&a, &me)
        };
        let c = conn("10.96.0.10:6379", "10.1.0.5", None);
        let cases: Vec<(&str, L4Match, bool)> = vec![
            ("empty", m(|_| {}), true),
            ("port", m(|a| a.port = Some(6379)), true),
            ("other port", m(|a| a.port = Some(6380)), false),
            (
                "subnet",
                m(|a| a.destination_subnets = vec!["10.96.0.0/16".into()]),
                true,
            ),
            (
                "one of subnets",
                m(|a| a.destination_subnets = vec!["10.0.0.0/24".into(), "10.96.0.10".into()]),
                true,
            ),
            (
                "other subnet",
                m(|a| a.destination_subnets = vec!["192.168.0.0/16".into()]),
                false,
            ),
            (
                "source subnet",
                m(|a| a.source_subnet = Some("10.1.0.0/24".into())),
                true,
            ),
            (
                "other source subnet",
                m(|a| a.source_subnet = Some("10.2.0.0/24".into())),
                false,
            ),
            (
                "labels",
                m(|a| a.source_labels = [("app".to_string(), "client".to_string())].into()),
                true,
            ),
            (
                "other labels",
                m(|a| a.source_labels = [("app".to_string(), "web".to_string())].into()),
                false,
            ),
            (
                "namespace",
                m(|a| a.source_namespace = Some("default".into())),
                true,
            ),
            (
                "other namespace",
                m(|a| a.source_namespace = Some("prod".into())),
                false,
            ),
            (
                "mesh gateway",
                m(|a| a.gateways = vec!["mesh".into()]),
                true,
            ),
            (
                "gateway only",
                m(|a| a.gateways = vec!["istio-system/ingress".into()]),
                false,
            ),
            (
                "bad subnet",
                m(|a| a.destination_subnets = vec!["nonsense".into()]),
                false,
            ),
            (
                "all together",
                m(|a| {
                    a.port = Some(6379);
                    a.destination_subnets = vec!["10.96.0.10/32".into()];
                    a.source_namespace = Some("default".into());
                }),
                true,
            ),
        ];
        for (name, m, want) in cases {
            assert_eq!(m.matches(&c), want, "{name}");
        }
    }

    #[test]
    fn sni_patterns() {
        let cases = [
            ("api.example.com", "api.example.com", true),
            ("api.example.com", "API.Example.com", true),
            ("api.example.com", "www.example.com", false),
            ("*.example.com", "api.example.com", true),
            ("*.example.com", "a.b.example.com", true),
            ("*.example.com", "example.com", false),
            ("*", "anything", true),
        ];
        for (p, sni, want) in cases {
            assert_eq!(sni_matches(p, sni), want, "{p} {sni}");
        }
        let none = BTreeMap::new();
        let me = Source {
            labels: &none,
            namespace: "default",
        };
        let m = L4Match::tls(
            &TlsMatchAttributes {
                sni_hosts: vec!["*.example.com".into()],
                ..Default::default()
            },
            &me,
        );
        assert!(m.matches(&conn("1.2.3.4:443", "10.0.0.1", Some("a.example.com"))));
        assert!(!m.matches(&conn("1.2.3.4:443", "10.0.0.1", Some("example.org"))));
        assert!(!m.matches(&conn("1.2.3.4:443", "10.0.0.1", None)));
        assert!(any(&[], &conn("1.2.3.4:443", "10.0.0.1", None)));
    }
}
