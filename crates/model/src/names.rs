//! Name rules: DNS names and labels, Kubernetes label keys and values, HTTP header names.

/// Whether `s` is a DNS-1123 label: 1-63 lowercase letters, digits and `-`, alphanumeric at both ends.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `s` is a DNS-1123 subdomain: dot-separated DNS-1123 labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// Whether `s` is one label of a host name (letters of either case, digits, `-`).
fn is_host_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Checks a host name that may start with a wildcard (`*`, `*.example.com`, `*-suffix.com`);
/// the wildcard is only allowed in the first label.
pub fn check_wildcard_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("host must not be empty".to_string());
    }
    if host.len() > 255 {
        return Err(format!("host `{host}` is longer than 255 characters"));
    }
    let (first, rest) = match host.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (host, None),
    };
    let first_ok = first == "*"
        || match first.strip_prefix('*') {
            Some(tail) => is_host_label(tail.strip_prefix('-').unwrap_or(tail)),
            None => is_host_label(first),
        };
    if !first_ok {
        return Err(format!(
            "host `{host}` is invalid: label `{first}` is not a DNS label (a wildcard is only allowed as a prefix)"
        ));
    }
    if let Some(rest) = rest {
        // A trailing dot (fully qualified form) leaves an empty last label, which is fine.
        let rest = rest.strip_suffix('.').unwrap_or(rest);
        if let Some(label) = rest.split('.').find(|l| !is_host_label(l)) {
            return Err(format!(
                "host `{host}` is invalid: label `{label}` is not a DNS label"
            ));
        }
    }
    Ok(())
}

/// Checks a Kubernetes label key: an optional DNS subdomain prefix and `/`, then a name of
/// 1-63 alphanumerics, `-`, `_` or `.`, alphanumeric at both ends.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && !is_dns1123_subdomain(prefix)
    {
        return Err(format!(
            "label key `{key}`: prefix `{prefix}` is not a DNS subdomain"
        ));
    }
    if !is_qualified_name_part(name) {
        return Err(format!(
            "label key `{key}` is invalid: the name must be 1-63 characters of letters, digits, `-`, `_`, `.`, starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Checks a Kubernetes label value: empty, or like a label name.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_qualified_name_part(value) {
        Ok(())
    } else {
        Err(format!(
            "label value `{value}` is invalid: at most 63 characters of letters, digits, `-`, `_`, `.`, starting and ending with a letter or digit"
        ))
    }
}

fn is_qualified_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// Whether `s` is an HTTP header name (an RFC 7230 token).
pub fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_hosts() {
        let cases = [
            ("reviews", true),
            ("reviews.default.svc.cluster.local", true),
            ("Reviews.Example.COM", true),
            ("*", true),
            ("*.example.com", true),
            ("*-suffix.example.com", true),
            ("*foo.com", true),
            ("example.com.", true),
            ("", false),
            ("foo.*.com", false),
            ("-bad.com", false),
            ("bad_.com", false),
            ("a..b", false),
            ("**.com", false),
        ];
        for (host, ok) in cases {
            assert_eq!(check_wildcard_host(host).is_ok(), ok, "host {host:?}");
        }
    }

    #[test]
    fn labels() {
        let keys = [
            ("app", true),
            ("app.kubernetes.io/name", true),
            ("version_1", true),
            ("", false),
            ("-app", false),
            ("Bad Prefix/app", false),
            ("a/b/c", false),
        ];
        for (key, ok) in keys {
            assert_eq!(check_label_key(key).is_ok(), ok, "key {key:?}");
        }
        let values = [
            ("", true),
            ("v1", true),
            ("v1.2-rc_3", true),
            ("v1 ", false),
            ("-v", false),
        ];
        for (value, ok) in values {
            assert_eq!(check_label_value(value).is_ok(), ok, "value {value:?}");
        }
    }

    #[test]
    fn dns_names_and_headers() {
        assert!(is_dns1123_label("default"));
        assert!(!is_dns1123_label("Default"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("bookinfo-gateway.istio-system"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(is_header_name("x-request-id"));
        assert!(!is_header_name("bad header"));
        assert!(!is_header_name(""));
    }
}
