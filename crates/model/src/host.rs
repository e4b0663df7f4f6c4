//! Host names of Istio resources: resolving short names against a namespace, and host matching.

/// Resolves `host` as Istio does: a name without dots (`reviews`) means
/// `<name>.<namespace>.svc.<cluster_domain>`; wildcards, `*` and names with dots are kept.
pub fn resolve_host(host: &str, namespace: &str, cluster_domain: &str) -> String {
    if host.contains('.') || host.starts_with('*') || host.parse::<std::net::IpAddr>().is_ok() {
        host.to_string()
    } else {
        format!("{host}.{namespace}.svc.{cluster_domain}")
    }
}

/// Whether the (possibly wildcard) host `pattern` covers `host` (itself possibly a wildcard):
/// `*` covers everything, `*.example.com` covers `a.example.com` and `*.b.example.com`.
pub fn host_covers(pattern: &str, host: &str) -> bool {
    if pattern == host || pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.trim_start_matches('*').ends_with(suffix),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_short_names() {
        let cases = [
            ("reviews", "default", "reviews.default.svc.cluster.local"),
            ("reviews", "prod", "reviews.prod.svc.cluster.local"),
            ("reviews.prod", "default", "reviews.prod"),
            (
                "reviews.prod.svc.cluster.local",
                "x",
                "reviews.prod.svc.cluster.local",
            ),
            ("*.example.com", "default", "*.example.com"),
            ("*", "default", "*"),
            ("10.0.0.1", "default", "10.0.0.1"),
        ];
        for (host, ns, want) in cases {
            assert_eq!(resolve_host(host, ns, "cluster.local"), want);
        }
        assert_eq!(
            resolve_host("a", "b", "corp.example"),
            "a.b.svc.corp.example"
        );
    }

    #[test]
    fn wildcard_coverage() {
        let cases = [
            ("*", "anything.com", true),
            ("*.example.com", "a.example.com", true),
            ("*.example.com", "*.b.example.com", true),
            ("*.example.com", "example.com", false),
            ("a.example.com", "a.example.com", true),
            ("a.example.com", "b.example.com", false),
        ];
        for (pattern, host, want) in cases {
            assert_eq!(host_covers(pattern, host), want, "{pattern} vs {host}");
        }
    }
}
