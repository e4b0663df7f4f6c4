//! HTTP rules of a VirtualService compiled for the data path: match conditions (`uri`,
//! `scheme`, `method`, `authority`, `headers`, `withoutHeaders`, `queryParams`, `port`;
//! `sourceLabels`, `sourceNamespace` and `gateways` decided at compile time), with regular
//! expressions compiled once (RE2 syntax, whole-string matches as Envoy's `safe_regex`), and
//! the rule's action and policies in the form the request path uses.

use super::Destination;
use super::l4::Source;
use super::weighted::Weighted;
use crate::config::HttpRouteRule;
use crate::resilience::retry::RetryPolicy;
use base64::Engine;
use bytes::Bytes;
use ferry_model::istio::StringMatch;
use ferry_model::istio::virtual_service::{
    CorsPolicy, GRPC_STATUS_NAMES, HTTP2_ERROR_NAMES, HeaderOperations, Headers,
    HttpFaultInjection, HttpMatchRequest, HttpRedirect, RedirectPortSelection, UnmatchedPreflights,
};
use hyper::http::request::Parts;
use regex::Regex;
use std::time::Duration;

/// A compiled string match.
#[derive(Debug, Clone)]
pub enum Str {
    /// Equal to.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Matches the whole string.
    Regex(Regex),
    /// Present, whatever its value (`{}`).
    Present,
    /// Never matches (an invalid regular expression).
    Never,
}

impl Str {
    /// Compiles a `StringMatch`; `ignore_case` applies to exact and prefix matches.
    pub fn compile(m: &StringMatch, ignore_case: bool) -> Str {
        let fold = |s: &String| {
            if ignore_case {
                s.to_ascii_lowercase()
            } else {
                s.clone()
            }
        };
        if let Some(e) = &m.exact {
            Str::Exact(fold(e))
        } else if let Some(p) = &m.prefix {
            Str::Prefix(fold(p))
        } else if let Some(r) = &m.regex {
            match Regex::new(&format!("^(?:{r})$")) {
                Ok(re) => Str::Regex(re),
                Err(_) => Str::Never,
            }
        } else {
            Str::Present
        }
    }

    /// Whether `value` matches (`ignore_case`: compare exact and prefix case-insensitively).
    pub fn matches(&self, value: &str, ignore_case: bool) -> bool {
        match self {
            Str::Exact(e) if ignore_case => value.eq_ignore_ascii_case(e),
            Str::Exact(e) => value == e,
            Str::Prefix(p) if ignore_case => value
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p)),
            Str::Prefix(p) => value.starts_with(p.as_str()),
            Str::Regex(re) => re.is_match(value),
            Str::Present => true,
            Str::Never => false,
        }
    }
}

/// One compiled `match` entry (its conditions are AND-ed).
#[derive(Debug, Clone, Default)]
pub struct HttpMatch {
    uri: Option<Str>,
    ignore_uri_case: bool,
    scheme: Option<Str>,
    method: Option<Str>,
    authority: Option<Str>,
    headers: Vec<(String, Str)>,
    without_headers: Vec<(String, Str)>,
    query_params: Vec<(String, Str)>,
    port: Option<u16>,
    admitted: bool,
}

/// What a request offers to match on.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Request head.
    pub parts: &'a Parts,
    /// The port the client dialled.
    pub port: u16,
    /// `http` (plaintext sidecar traffic).
    pub scheme: &'a str,
}

impl RequestView<'_> {
    /// The `:authority` or `Host`.
    pub fn authority(&self) -> &str {
        self.parts
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                self.parts
                    .headers
                    .get(hyper::header::HOST)
                    .and_then(|v| v.to_str().ok())
            })
            .unwrap_or_default()
    }

    /// The value of query parameter `name` (first occurrence), percent-decoding left alone.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.parts.uri.query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }
}

fn header_matches(parts: &Parts, name: &str, m: &Str) -> bool {
    let mut values = parts.headers.get_all(name).iter().peekable();
    if values.peek().is_none() {
        return false;
    }
    values.any(|v| v.to_str().is_ok_and(|v| m.matches(v, false)))
}

impl HttpMatch {
    /// Compiles a `match` entry for a proxy that is `me`.
    pub fn compile(m: &HttpMatchRequest, me: &Source<'_>) -> HttpMatch {
        let ignore = m.ignore_uri_case == Some(true);
        let pairs = |map: &std::collections::BTreeMap<String, StringMatch>| {
            map.iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), Str::compile(v, false)))
                .collect()
        };
        HttpMatch {
            uri: m.uri.as_ref().map(|u| Str::compile(u, ignore)),
            ignore_uri_case: ignore,
            scheme: m.scheme.as_ref().map(|s| Str::compile(s, false)),
            method: m.method.as_ref().map(|s| Str::compile(s, false)),
            authority: m.authority.as_ref().map(|s| Str::compile(s, false)),
            headers: pairs(&m.headers),
            without_headers: pairs(&m.without_headers),
            query_params: m
                .query_params
                .iter()
                .map(|(k, v)| (k.clone(), Str::compile(v, false)))
                .collect(),
            port: m.port.and_then(|p| u16::try_from(p).ok()),
            admitted: me.admits(&m.source_labels, m.source_namespace.as_deref(), &m.gateways),
        }
    }

    /// Whether a request matches.
    pub fn matches(&self, r: &RequestView<'_>) -> bool {
        self.admitted
            && self.port.is_none_or(|p| p == r.port)
            && self
                .uri
                .as_ref()
                .is_none_or(|m| m.matches(r.parts.uri.path(), self.ignore_uri_case))
            && self
                .scheme
                .as_ref()
                .is_none_or(|m| m.matches(r.scheme, false))
            && self
                .method
                .as_ref()
                .is_none_or(|m| m.matches(r.parts.method.as_str(), false))
            && self
                .authority
                .as_ref()
                .is_none_or(|m| m.matches(r.authority(), false))
            && self
                .headers
                .iter()
                .all(|(name, m)| header_matches(r.parts, name, m))
            && self
                .without_headers
                .iter()
                .all(|(name, m)| !header_matches(r.parts, name, m))
            && self
                .query_params
                .iter()
                .all(|(name, m)| r.query_param(name).is_some_and(|v| m.matches(v, false)))
    }

    /// The prefix this entry matched the path on, for a prefix `rewrite.uri`.
    pub fn uri_prefix(&self) -> Option<&str> {
        match &self.uri {
            Some(Str::Prefix(p)) => Some(p),
            _ => None,
        }
    }
}

/// Header changes.
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    /// Overwrite.
    pub set: Vec<(String, String)>,
    /// Append.
    pub add: Vec<(String, String)>,
    /// Remove.
    pub remove: Vec<String>,
}

impl HeaderOps {
    fn compile(ops: Option<&HeaderOperations>) -> HeaderOps {
        let Some(ops) = ops else {
            return HeaderOps::default();
        };
        let lower = |m: &std::collections::BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect()
        };
        HeaderOps {
            set: lower(&ops.set),
            add: lower(&ops.add),
            remove: ops.remove.iter().map(|h| h.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Applies the changes to a header map (remove, then set, then add; invalid names or
    /// values are skipped).
    pub fn apply(&self, headers: &mut hyper::HeaderMap) {
        use hyper::header::{HeaderName, HeaderValue};
        for name in &self.remove {
            headers.remove(name.as_str());
        }
        for (k, v) in &self.set {
            if let (Ok(k), Ok(v)) = (
                HeaderName::try_from(k.as_str()),
                HeaderValue::try_from(v.as_str()),
            ) {
                headers.insert(k, v);
            }
        }
        for (k, v) in &self.add {
            if let (Ok(k), Ok(v)) = (
                HeaderName::try_from(k.as_str()),
                HeaderValue::try_from(v.as_str()),
            ) {
                headers.append(k, v);
            }
        }
    }
}

/// Request and response header changes.
#[derive(Debug, Clone, Default)]
pub struct HeaderPolicy {
    /// On the request.
    pub request: HeaderOps,
    /// On the response.
    pub response: HeaderOps,
}

impl HeaderPolicy {
    /// Compiles `headers`.
    pub fn compile(h: Option<&Headers>) -> HeaderPolicy {
        HeaderPolicy {
            request: HeaderOps::compile(h.and_then(|h| h.request.as_ref())),
            response: HeaderOps::compile(h.and_then(|h| h.response.as_ref())),
        }
    }
}

/// How an injected abort answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    /// This HTTP status.
    Http(u16),
    /// This gRPC status (HTTP 200, trailers-only).
    Grpc(u32),
    /// The stream reset with this HTTP/2 error code (an HTTP/1.1 connection is closed).
    Http2(u32),
}

/// The HTTP/2 error code of a name (`REFUSED_STREAM`) or number.
pub fn http2_code(name: &str) -> Option<u32> {
    name.parse().ok().or_else(|| {
        HTTP2_ERROR_NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .map(|i| i as u32)
    })
}

/// Fault injection of a rule. A percentage left out means no request is faulted (what Istio
/// does: Envoy reads a missing fraction as 0%).
#[derive(Debug, Clone, Default)]
pub struct Fault {
    /// Delay and the share of requests delayed.
    pub delay: Option<(Duration, f64)>,
    /// Abort and the share of requests aborted.
    pub abort: Option<(Abort, f64)>,
}

/// The gRPC status code of a name (`UNAVAILABLE`) or number.
pub fn grpc_code(name: &str) -> Option<u32> {
    name.parse().ok().or_else(|| {
        GRPC_STATUS_NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .map(|i| i as u32)
    })
}

impl Fault {
    fn compile(f: &HttpFaultInjection) -> Fault {
        let share = |percentage: Option<f64>, percent: Option<i32>| {
            percentage.or(percent.map(f64::from)).unwrap_or(0.0)
        };
        Fault {
            delay: f.delay.as_ref().and_then(|d| {
                let delay = d.fixed_delay.as_ref()?.get();
                Some((
                    delay,
                    share(d.percentage.as_ref().and_then(|p| p.value), d.percent),
                ))
            }),
            abort: f.abort.as_ref().and_then(|a| {
                let kind = match (&a.http_status, &a.grpc_status, &a.http2_error) {
                    (Some(s), _, _) => Abort::Http(u16::try_from(*s).ok()?),
                    (None, Some(g), _) => Abort::Grpc(grpc_code(g)?),
                    (None, None, Some(e)) => Abort::Http2(http2_code(e)?),
                    _ => return None,
                };
                Some((
                    kind,
                    share(a.percentage.as_ref().and_then(|p| p.value), a.percent),
                ))
            }),
        }
    }
}

/// A redirect answer.
#[derive(Debug, Clone)]
pub struct Redirect {
    /// New path.
    pub uri: Option<String>,
    /// New authority (host, with a port if it has one).
    pub authority: Option<String>,
    /// New port.
    pub port: Option<u16>,
    /// How to derive the port.
    pub derive_port: Option<RedirectPortSelection>,
    /// New scheme.
    pub scheme: Option<String>,
    /// Status (301 by default).
    pub code: u16,
}

impl Redirect {
    fn compile(r: &HttpRedirect) -> Redirect {
        Redirect {
            uri: r.uri.clone(),
            authority: r.authority.clone(),
            port: r.port.and_then(|p| u16::try_from(p).ok()),
            derive_port: r.derive_port,
            scheme: r.scheme.clone(),
            code: r
                .redirect_code
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(301),
        }
    }
}

/// A path rewrite.
#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    /// Replaces the matched prefix (or the whole path).
    pub uri: Option<String>,
    /// Replaces the authority.
    pub authority: Option<String>,
    /// Regex replacement of the path (`\1` groups).
    pub regex: Option<(Regex, String)>,
}

impl Rewrite {
    /// The new path of a request whose path is `path` and whose match entry matched on
    /// `prefix` (if any). `None` when the path stays.
    pub fn path(&self, path: &str, prefix: Option<&str>) -> Option<String> {
        if let Some((re, with)) = &self.regex {
            return Some(re.replace_all(path, with.as_str()).into_owned());
        }
        let uri = self.uri.as_ref()?;
        Some(match prefix {
            Some(p) if path.len() >= p.len() => {
                format!("{uri}{}", path.get(p.len()..).unwrap_or(""))
            }
            _ => uri.clone(),
        })
    }
}

/// Envoy-style `\1` groups to the regex crate's `${1}`.
fn regex_replacement(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push_str("${");
            while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                out.push(d);
                chars.next();
            }
            out.push('}');
        } else if c == '$' {
            out.push_str("$$");
        } else {
            out.push(c);
        }
    }
    out
}

/// A compiled CORS policy.
#[derive(Debug, Clone)]
pub struct Cors {
    /// Allowed origins.
    pub origins: Vec<Str>,
    /// `Access-Control-Allow-Methods`.
    pub methods: String,
    /// `Access-Control-Allow-Headers`.
    pub headers: String,
    /// `Access-Control-Expose-Headers`.
    pub expose: String,
    /// `Access-Control-Max-Age`, seconds.
    pub max_age: Option<u64>,
    /// `Access-Control-Allow-Credentials: true`.
    pub credentials: bool,
    /// Answer unmatched preflights instead of forwarding them.
    pub ignore_unmatched_preflights: bool,
}

impl Cors {
    fn compile(c: &CorsPolicy) -> Cors {
        let mut origins: Vec<Str> = c
            .allow_origin
            .iter()
            .map(|o| Str::Exact(o.clone()))
            .collect();
        origins.extend(c.allow_origins.iter().map(|o| Str::compile(o, false)));
        Cors {
            origins,
            methods: c.allow_methods.join(","),
            headers: c.allow_headers.join(","),
            expose: c.expose_headers.join(","),
            max_age: c.max_age.as_ref().map(|d| d.get().as_secs()),
            credentials: c.allow_credentials == Some(true),
            ignore_unmatched_preflights: c.unmatched_preflights
                == Some(UnmatchedPreflights::Ignore),
        }
    }

    /// Whether `origin` is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|m| m.matches(origin, false))
    }
}

/// What a rule does with a matching request.
#[derive(Debug, Clone)]
pub enum Action {
    /// Forward to one of these destinations, by weight (with per-destination header changes).
    Route(Weighted<(Destination, HeaderPolicy)>),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer directly.
    Direct {
        /// Status.
        status: u16,
        /// Body.
        body: Bytes,
    },
}

/// One compiled HTTP rule.
#[derive(Debug, Clone)]
pub struct HttpRule {
    /// Rule name.
    pub name: Option<String>,
    /// Match entries, OR-ed; empty matches every request.
    pub matches: Vec<HttpMatch>,
    /// What to do.
    pub action: Action,
    /// Rewrite before forwarding.
    pub rewrite: Option<Rewrite>,
    /// Route timeout (off when `None`).
    pub timeout: Option<Duration>,
    /// Retries (`None`: off). Istio turns timeouts and retries off on rules with faults.
    pub retries: Option<RetryPolicy>,
    /// Fault injection.
    pub fault: Option<Fault>,
    /// Mirrors and their shares.
    pub mirrors: Vec<(Destination, f64)>,
    /// CORS.
    pub cors: Option<Cors>,
    /// Header changes.
    pub headers: HeaderPolicy,
}

impl HttpRule {
    /// Compiles a rule; `dest` resolves cluster names.
    pub fn compile(
        r: &HttpRouteRule,
        me: &Source<'_>,
        dest: &dyn Fn(&str) -> Destination,
    ) -> HttpRule {
        let action = if let Some(d) = &r.direct_response {
            let body = d
                .body
                .as_ref()
                .map(|b| match (&b.string, &b.bytes) {
                    (Some(s), _) => Bytes::from(s.clone()),
                    (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map(Bytes::from)
                        .unwrap_or_default(),
                    _ => Bytes::new(),
                })
                .unwrap_or_default();
            Action::Direct {
                status: d.status.and_then(|s| u16::try_from(s).ok()).unwrap_or(200),
                body,
            }
        } else if let Some(rd) = &r.redirect {
            Action::Redirect(Redirect::compile(rd))
        } else {
            Action::Route(Weighted::new(r.route.iter().map(|w| {
                (
                    w.weight,
                    (
                        dest(&w.destination.cluster),
                        HeaderPolicy::compile(w.headers.as_ref()),
                    ),
                )
            })))
        };
        let consistent_hash = match &action {
            Action::Route(w) => w
                .iter()
                .any(|(d, _)| d.cluster.as_ref().is_some_and(|c| c.hash_on.is_some())),
            _ => false,
        };
        let fault = r.fault.as_ref().map(Fault::compile);
        // "Timeouts or retries will not be enabled when faults are enabled on the client side."
        let faulty = fault.is_some();
        HttpRule {
            name: r.name.clone(),
            matches: r
                .matches
                .iter()
                .map(|m| HttpMatch::compile(m, me))
                .collect(),
            action,
            rewrite: r.rewrite.as_ref().map(|rw| Rewrite {
                uri: rw.uri.clone(),
                authority: rw.authority.clone(),
                regex: rw.uri_regex_rewrite.as_ref().and_then(|x| {
                    let re = Regex::new(x.pattern.as_deref()?).ok()?;
                    Some((re, regex_replacement(x.rewrite.as_deref().unwrap_or(""))))
                }),
            }),
            timeout: if faulty {
                None
            } else {
                r.timeout.as_ref().map(|d| d.get()).filter(|d| !d.is_zero())
            },
            retries: if faulty {
                None
            } else {
                RetryPolicy::from_istio(r.retries.as_ref(), consistent_hash)
            },
            fault,
            mirrors: r
                .mirrors
                .iter()
                .map(|m| (dest(&m.destination.cluster), m.percentage))
                .collect(),
            cors: r.cors_policy.as_ref().map(Cors::compile),
            headers: HeaderPolicy::compile(r.headers.as_ref()),
        }
    }

    /// The index of the first match entry the request satisfies (0 for a rule without
    /// entries), or `None`.
    pub fn matching(&self, r: &RequestView<'_>) -> Option<usize> {
        if self.matches.is_empty() {
            return Some(0);
        }
        self.matches.iter().position(|m| m.matches(r))
    }
}

/// The first rule a request matches, and which of its match entries matched.
pub fn first_match<'a>(
    rules: &'a [HttpRule],
    r: &RequestView<'_>,
) -> Option<(&'a HttpRule, Option<&'a HttpMatch>)> {
    rules
        .iter()
        .find_map(|rule| rule.matching(r).map(|i| (rule, rule.matches.get(i))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = hyper::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    fn sm(kind: &str, v: &str) -> StringMatch {
        let mut m = StringMatch::default();
        match kind {
            "exact" => m.exact = Some(v.into()),
            "prefix" => m.prefix = Some(v.into()),
            "regex" => m.regex = Some(v.into()),
            _ => {}
        }
        m
    }

    #[test]
    fn match_table() {
        let labels: BTreeMap<String, String> =
            [("app".to_string(), "productpage".to_string())].into();
        let me = Source {
            labels: &labels,
            namespace: "default",
        };
        let req = parts(
            "GET",
            "http://reviews:9080/api/v1/reviews?user=jason&x=1",
            &[("end-user", "jason"), ("x-canary", "yes")],
        );
        let view = RequestView {
            parts: &req,
            port: 9080,
            scheme: "http",
        };
        let m = |f: fn(&mut HttpMatchRequest)| {
            let mut r = HttpMatchRequest::default();
            f(&mut r);
            HttpMatch::compile(&r, &me)
        };
        let cases: Vec<(&str, HttpMatch, bool)> = vec![
            ("empty", m(|_| {}), true),
            (
                "exact uri",
                m(|r| r.uri = Some(sm("exact", "/api/v1/reviews"))),
                true,
            ),
            (
                "exact uri ignores query",
                m(|r| r.uri = Some(sm("exact", "/api/v1/reviews?user=jason"))),
                false,
            ),
            (
                "prefix uri",
                m(|r| r.uri = Some(sm("prefix", "/api/v1"))),
                true,
            ),
            (
                "other prefix",
                m(|r| r.uri = Some(sm("prefix", "/api/v2"))),
                false,
            ),
            (
                "regex uri",
                m(|r| r.uri = Some(sm("regex", "/api/v[0-9]+/.*"))),
                true,
            ),
            (
                "regex is anchored",
                m(|r| r.uri = Some(sm("regex", "v1"))),
                false,
            ),
            ("bad regex", m(|r| r.uri = Some(sm("regex", "(("))), false),
            (
                "ignore case",
                m(|r| {
                    r.uri = Some(sm("prefix", "/API/V1"));
                    r.ignore_uri_case = Some(true);
                }),
                true,
            ),
            (
                "case matters",
                m(|r| r.uri = Some(sm("prefix", "/API/V1"))),
                false,
            ),
            ("method", m(|r| r.method = Some(sm("exact", "GET"))), true),
            (
                "other method",
                m(|r| r.method = Some(sm("exact", "POST"))),
                false,
            ),
            (
                "authority",
                m(|r| r.authority = Some(sm("prefix", "reviews"))),
                true,
            ),
            ("scheme", m(|r| r.scheme = Some(sm("exact", "http"))), true),
            (
                "header",
                m(|r| r.headers = [("end-user".to_string(), sm("exact", "jason"))].into()),
                true,
            ),
            (
                "header case-insensitive name",
                m(|r| r.headers = [("End-User".to_string(), sm("exact", "jason"))].into()),
                true,
            ),
            (
                "header other value",
                m(|r| r.headers = [("end-user".to_string(), sm("exact", "json"))].into()),
                false,
            ),
            (
                "header presence",
                m(|r| r.headers = [("x-canary".to_string(), StringMatch::default())].into()),
                true,
            ),
            (
                "absent header",
                m(|r| r.headers = [("x-missing".to_string(), StringMatch::default())].into()),
                false,
            ),
            (
                "without header absent",
                m(|r| r.without_headers = [("x-missing".to_string(), sm("exact", "1"))].into()),
                true,
            ),
            (
                "without header present",
                m(|r| r.without_headers = [("x-canary".to_string(), sm("exact", "yes"))].into()),
                false,
            ),
            (
                "query",
                m(|r| r.query_params = [("user".to_string(), sm("exact", "jason"))].into()),
                true,
            ),
            (
                "query regex",
                m(|r| r.query_params = [("x".to_string(), sm("regex", "[0-9]"))].into()),
                true,
            ),
            (
                "query other",
                m(|r| r.query_params = [("user".to_string(), sm("exact", "bob"))].into()),
                false,
            ),
            (
                "query absent",
                m(|r| r.query_params = [("y".to_string(), StringMatch::default())].into()),
                false,
            ),
            ("port", m(|r| r.port = Some(9080)), true),
            ("other port", m(|r| r.port = Some(80)), false),
            (
                "source labels",
                m(|r| r.source_labels = [("app".to_string(), "productpage".to_string())].into()),
                true,
            ),
            (
                "other source labels",
                m(|r| r.source_labels = [("app".to_string(), "reviews".to_string())].into()),
                false,
            ),
            (
                "source namespace",
                m(|r| r.source_namespace = Some("default".into())),
                true,
            ),
            (
                "other source namespace",
                m(|r| r.source_namespace = Some("prod".into())),
                false,
            ),
            (
                "gateway only",
                m(|r| r.gateways = vec!["ingress".into()]),
                false,
            ),
        ];
        for (name, m, want) in cases {
            assert_eq!(m.matches(&view), want, "{name}");
        }
    }

    #[test]
    fn rewrites() {
        let prefix = Rewrite {
            uri: Some("/v2/".into()),
            ..Default::default()
        };
        assert_eq!(
            prefix.path("/v1/items/3", Some("/v1/")).as_deref(),
            Some("/v2/items/3")
        );
        assert_eq!(prefix.path("/login", None).as_deref(), Some("/v2/"));
        let regex = Rewrite {
            regex: Regex::new("^/service/([^/]+)(/.*)$")
                .ok()
                .map(|re| (re, regex_replacement(r"\2/instance/\1"))),
            ..Default::default()
        };
        assert_eq!(
            regex.path("/service/foo/v1/api", None).as_deref(),
            Some("/v1/api/instance/foo")
        );
        assert_eq!(Rewrite::default().path("/x", None), None);
        assert_eq!(regex_replacement(r"a$b\10"), "a$$b${10}");
    }

    #[test]
    fn grpc_codes() {
        assert_eq!(grpc_code("UNAVAILABLE"), Some(14));
        assert_eq!(grpc_code("unavailable"), Some(14));
        assert_eq!(grpc_code("4"), Some(4));
        assert_eq!(grpc_code("NOPE"), None);
    }

    #[test]
    fn header_ops_order() {
        let ops = HeaderOps {
            set: vec![("x-a".into(), "1".into())],
            add: vec![("x-b".into(), "2".into())],
            remove: vec!["x-c".into(), "x-a".into()],
        };
        let mut h = hyper::HeaderMap::new();
        h.insert("x-a", hyper::header::HeaderValue::from_static("0"));
        h.insert("x-b", hyper::header::HeaderValue::from_static("1"));
        h.insert("x-c", hyper::header::HeaderValue::from_static("1"));
        ops.apply(&mut h);
        assert_eq!(h.get("x-a").map(|v| v.as_bytes()), Some(&b"1"[..]));
        assert_eq!(h.get_all("x-b").iter().count(), 2);
        assert!(h.get("x-c").is_none());
    }
}
