//! Semantic rules of VirtualService, after Istio's validation.

use std::time::Duration as Std;

use super::checks::Checker;
use super::path::FieldPath;
use crate::host::{host_covers, resolve_host};
use crate::istio::virtual_service::{
    CorsPolicy, Destination, GRPC_STATUS_NAMES, HTTP2_ERROR_NAMES, HeaderOperations, Headers,
    HttpFaultInjection, HttpMatchRequest, HttpRoute, HttpRouteDestination, L4MatchAttributes,
    RouteDestination, TlsMatchAttributes, VirtualServiceSpec,
};
use crate::names;

const MS: Std = Std::from_millis(1);

/// Envoy retry conditions Istio accepts in `retryOn`, besides status codes.
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// HTTP methods accepted in `corsPolicy.allowMethods`.
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "*",
];

/// Checks a VirtualService spec found at `path`.
pub fn check(c: &mut Checker<'_>, spec: &VirtualServiceSpec, path: &FieldPath) {
    let delegate = spec.hosts.is_empty();
    let applies_to_mesh = spec.gateways.is_empty() || spec.gateways.iter().any(|g| g == "mesh");
    if delegate {
        if !spec.gateways.is_empty() {
            c.error(
                &path.key("gateways"),
                "a delegate VirtualService (one without hosts) must not set gateways",
            );
        }
        if !spec.tls.is_empty() || !spec.tcp.is_empty() {
            c.error(&path.key("hosts"), "hosts are required (a delegate VirtualService, which has none, may only hold http routes)");
        }
    }
    if spec.http.is_empty() && spec.tls.is_empty() && spec.tcp.is_empty() {
        c.error(
            path,
            "at least one of `http`, `tls` or `tcp` routes is required",
        );
    }
    for (i, host) in spec.hosts.iter().enumerate() {
        let at = path.key("hosts").index(i);
        if host.parse::<std::net::IpAddr>().is_ok() {
            if applies_to_mesh {
                c.error(&at, format!("IP address `{host}` is only allowed in hosts of VirtualServices bound to gateways only"));
            }
            continue;
        }
        if host == "*" && applies_to_mesh {
            c.error(
                &at,
                "host `*` is not allowed for VirtualServices that apply to the mesh",
            );
            continue;
        }
        c.wildcard_host(&at, host, true);
    }
    c.gateways(&path.key("gateways"), &spec.gateways);
    c.export_to(&path.key("exportTo"), &spec.export_to);
    let resolved: Vec<String> = spec
        .hosts
        .iter()
        .map(|h| resolve_host(h, c.namespace, c.cluster_domain))
        .collect();
    for (i, route) in spec.http.iter().enumerate() {
        http_route(c, route, &path.key("http").index(i), delegate);
    }
    for (i, route) in spec.tls.iter().enumerate() {
        let at = path.key("tls").index(i);
        if route.matches.is_empty() {
            c.error(
                &at.key("match"),
                "a TLS route needs at least one match (with sniHosts)",
            );
        }
        for (j, m) in route.matches.iter().enumerate() {
            tls_match(c, m, &at.key("match").index(j), &resolved);
        }
        route_destinations(c, &route.route, &at.key("route"));
    }
    for (i, route) in spec.tcp.iter().enumerate() {
        let at = path.key("tcp").index(i);
        for (j, m) in route.matches.iter().enumerate() {
            l4_match(c, m, &at.key("match").index(j));
        }
        route_destinations(c, &route.route, &at.key("route"));
    }
}

fn http_route(c: &mut Checker<'_>, r: &HttpRoute, at: &FieldPath, in_delegate: bool) {
    let actions: Vec<&str> = [
        (!r.route.is_empty(), "route"),
        (r.redirect.is_some(), "redirect"),
        (r.direct_response.is_some(), "directResponse"),
        (r.delegate.is_some(), "delegate"),
    ]
    .iter()
    .filter(|(set, _)| *set)
    .map(|(_, name)| *name)
    .collect();
    match actions.len() {
        0 => c.error(at, "an HTTP route needs one of `route`, `redirect`, `directResponse` or `delegate`"),
        1 => {}
        _ => c.error(at, format!("an HTTP route may set only one of `route`, `redirect`, `directResponse` or `delegate`, not {}", actions.join(" and "))),
    }
    for (i, m) in r.matches.iter().enumerate() {
        http_match(c, m, &at.key("match").index(i));
    }
    if !r.route.is_empty() {
        http_destinations(c, &r.route, &at.key("route"));
    }
    if let Some(d) = &r.delegate {
        let dp = at.key("delegate");
        if in_delegate {
            c.error(&dp, "a delegate VirtualService cannot delegate again");
        }
        match &d.name {
            None => c.error(&dp.key("name"), "delegate name is required"),
            Some(n) if !names::is_dns1123_subdomain(n) => c.error(
                &dp.key("name"),
                format!("`{n}` is not a valid resource name"),
            ),
            Some(_) => {}
        }
        if let Some(ns) = &d.namespace {
            c.namespace_name(&dp.key("namespace"), ns);
        }
    }
    if let Some(red) = &r.redirect {
        let rp = at.key("redirect");
        if red.uri.is_none()
            && red.authority.is_none()
            && red.scheme.is_none()
            && red.port.is_none()
            && red.derive_port.is_none()
        {
            c.error(
                &rp,
                "a redirect must set `uri`, `authority`, `scheme`, `port` or `derivePort`",
            );
        }
        if red.port.is_some() && red.derive_port.is_some() {
            c.error(&rp, "only one of `port` or `derivePort` may be set");
        }
        if let Some(p) = red.port {
            c.port(&rp.key("port"), p);
        }
        if let Some(code) = red.redirect_code
            && !(300..=399).contains(&code)
        {
            c.error(
                &rp.key("redirectCode"),
                format!("redirect code {code} must be a 3xx status"),
            );
        }
        if r.rewrite.is_some() {
            c.error(
                &at.key("rewrite"),
                "`rewrite` cannot be combined with `redirect`",
            );
        }
    }
    if let Some(dr) = &r.direct_response {
        let dp = at.key("directResponse");
        match dr.status {
            None => c.error(&dp.key("status"), "directResponse status is required"),
            Some(s) if !(200..=599).contains(&s) => c.error(
                &dp.key("status"),
                format!("status {s} must be between 200 and 599"),
            ),
            Some(_) => {}
        }
        if let Some(body) = &dr.body {
            if body.string.is_some() && body.bytes.is_some() {
                c.error(
                    &dp.key("body"),
                    "only one of `string` or `bytes` may be set",
                );
            }
            if let Some(bytes) = &body.bytes
                && !bytes.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'\n' | b'\r')
                })
            {
                c.error(&dp.key("body").key("bytes"), "bytes must be base64-encoded");
            }
        }
    }
    if let Some(rw) = &r.rewrite {
        let rp = at.key("rewrite");
        if rw.uri.is_some() && rw.uri_regex_rewrite.is_some() {
            c.error(&rp, "only one of `uri` or `uriRegexRewrite` may be set");
        }
        if rw.uri.is_none() && rw.authority.is_none() && rw.uri_regex_rewrite.is_none() {
            c.error(
                &rp,
                "a rewrite must set `uri`, `authority` or `uriRegexRewrite`",
            );
        }
        if let Some(rr) = &rw.uri_regex_rewrite {
            let rrp = rp.key("uriRegexRewrite");
            match &rr.pattern {
                Some(p) => c.regex(&rrp.key("match"), p),
                None => c.error(&rrp.key("match"), "`match` is required"),
            }
            if rr.rewrite.is_none() {
                c.error(&rrp.key("rewrite"), "`rewrite` is required");
            }
        }
    }
    if let Some(t) = &r.timeout {
        c.duration(&at.key("timeout"), t, Std::ZERO);
    }
    if let Some(retry) = &r.retries {
        let rp = at.key("retries");
        if let Some(a) = retry.attempts {
            c.non_negative(&rp.key("attempts"), a);
        }
        if let Some(t) = &retry.per_try_timeout {
            c.duration(&rp.key("perTryTimeout"), t, MS);
        }
        if let Some(b) = &retry.backoff {
            c.duration(&rp.key("backoff"), b, MS);
        }
        if let Some(on) = &retry.retry_on {
            for cond in on.split(',').map(str::trim) {
                let status_ok = cond.parse::<u16>().is_ok_and(|s| (100..=599).contains(&s));
                if !status_ok && !RETRY_ON.contains(&cond) {
                    let hint = super::structural::did_you_mean(cond, RETRY_ON.iter().copied())
                        .map(|s| format!(", did you mean `{s}`?"))
                        .unwrap_or_default();
                    c.error(
                        &rp.key("retryOn"),
                        format!("unknown retry condition `{cond}`{hint}"),
                    );
                }
            }
        }
    }
    if let Some(f) = &r.fault {
        fault(c, f, &at.key("fault"));
    }
    if r.mirror.is_some() && !r.mirrors.is_empty() {
        c.error(
            &at.key("mirrors"),
            "only one of `mirror` or `mirrors` may be set",
        );
    }
    if let Some(m) = &r.mirror {
        destination(c, m, &at.key("mirror"));
    }
    if let Some(p) = r.mirror_percent {
        c.int_percent(&at.key("mirrorPercent"), i64::from(p));
    }
    if let Some(p) = &r.mirror_percentage {
        c.percent(&at.key("mirrorPercentage"), p);
    }
    for (i, m) in r.mirrors.iter().enumerate() {
        let mp = at.key("mirrors").index(i);
        match &m.destination {
            Some(d) => destination(c, d, &mp.key("destination")),
            None => c.error(&mp.key("destination"), "destination is required"),
        }
        if let Some(p) = &m.percentage {
            c.percent(&mp.key("percentage"), p);
        }
    }
    if let Some(cors) = &r.cors_policy {
        cors_policy(c, cors, &at.key("corsPolicy"));
    }
    if let Some(h) = &r.headers {
        headers(c, h, &at.key("headers"));
    }
}

fn http_match(c: &mut Checker<'_>, m: &HttpMatchRequest, at: &FieldPath) {
    for (name, sm) in [
        ("uri", &m.uri),
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(sm) = sm {
            c.string_match(&at.key(name), sm);
        }
    }
    for (field, map) in [
        ("headers", &m.headers),
        ("withoutHeaders", &m.without_headers),
    ] {
        for (name, sm) in map {
            let hp = at.key(field).key(name.clone());
            if name != &name.to_ascii_lowercase() {
                c.error(&hp, format!("header name `{name}` must be lowercase"));
            } else if !names::is_header_name(name) {
                c.error(&hp, format!("`{name}` is not a valid header name"));
            }
            c.string_match(&hp, sm);
        }
    }
    for (name, sm) in &m.query_params {
        c.string_match(&at.key("queryParams").key(name.clone()), sm);
    }
    if let Some(p) = m.port {
        c.port(&at.key("port"), p);
    }
    c.labels(&at.key("sourceLabels"), &m.source_labels);
    c.gateways(&at.key("gateways"), &m.gateways);
    if let Some(ns) = &m.source_namespace {
        c.namespace_name(&at.key("sourceNamespace"), ns);
    }
}

fn tls_match(c: &mut Checker<'_>, m: &TlsMatchAttributes, at: &FieldPath, hosts: &[String]) {
    if m.sni_hosts.is_empty() {
        c.error(&at.key("sniHosts"), "sniHosts is required in a TLS match");
    }
    for (i, sni) in m.sni_hosts.iter().enumerate() {
        let sp = at.key("sniHosts").index(i);
        c.wildcard_host(&sp, sni, true);
        let resolved = resolve_host(sni, c.namespace, c.cluster_domain);
        if !hosts.is_empty()
            && !hosts
                .iter()
                .any(|h| host_covers(h, &resolved) || host_covers(&resolved, h))
        {
            c.error(
                &sp,
                format!("SNI host `{sni}` does not match any host of the VirtualService"),
            );
        }
    }
    for (i, s) in m.destination_subnets.iter().enumerate() {
        c.subnet(&at.key("destinationSubnets").index(i), s);
    }
    if let Some(p) = m.port {
        c.port(&at.key("port"), p);
    }
    c.labels(&at.key("sourceLabels"), &m.source_labels);
    c.gateways(&at.key("gateways"), &m.gateways);
    if let Some(ns) = &m.source_namespace {
        c.namespace_name(&at.key("sourceNamespace"), ns);
    }
}

fn l4_match(c: &mut Checker<'_>, m: &L4MatchAttributes, at: &FieldPath) {
    for (i, s) in m.destination_subnets.iter().enumerate() {
        c.subnet(&at.key("destinationSubnets").index(i), s);
    }
    if let Some(s) = &m.source_subnet {
        c.subnet(&at.key("sourceSubnet"), s);
    }
    if let Some(p) = m.port {
        c.port(&at.key("port"), p);
    }
    c.labels(&at.key("sourceLabels"), &m.source_labels);
    c.gateways(&at.key("gateways"), &m.gateways);
    if let Some(ns) = &m.source_namespace {
        c.namespace_name(&at.key("sourceNamespace"), ns);
    }
}

/// Checks destinations and their weights: each weight >= 0, and a positive total when several.
fn weights(c: &mut Checker<'_>, at: &FieldPath, weights: &[Option<i32>]) {
    let mut total: i64 = 0;
    for (i, w) in weights.iter().enumerate() {
        if let Some(w) = w {
            c.non_negative(&at.index(i).key("weight"), *w);
            total += i64::from((*w).max(0));
        }
    }
    if weights.len() > 1 && total == 0 {
        c.error(
            at,
            "the weights of the destinations sum to 0; at least one must be positive",
        );
    }
    if total > i64::from(i32::MAX) {
        c.error(
            at,
            "the weights of the destinations sum to more than 2147483647",
        );
    }
}

fn http_destinations(c: &mut Checker<'_>, routes: &[HttpRouteDestination], at: &FieldPath) {
    for (i, r) in routes.iter().enumerate() {
        let rp = at.index(i);
        match &r.destination {
            Some(d) => destination(c, d, &rp.key("destination")),
            None => c.error(&rp.key("destination"), "destination is required"),
        }
        if let Some(h) = &r.headers {
            headers(c, h, &rp.key("headers"));
        }
    }
    let w: Vec<Option<i32>> = routes.iter().map(|r| r.weight).collect();
    weights(c, at, &w);
}

fn route_destinations(c: &mut Checker<'_>, routes: &[RouteDestination], at: &FieldPath) {
    if routes.is_empty() {
        c.error(at, "at least one route destination is required");
    }
    for (i, r) in routes.iter().enumerate() {
        let rp = at.index(i);
        match &r.destination {
            Some(d) => destination(c, d, &rp.key("destination")),
            None => c.error(&rp.key("destination"), "destination is required"),
        }
    }
    let w: Vec<Option<i32>> = routes.iter().map(|r| r.weight).collect();
    weights(c, at, &w);
}

fn destination(c: &mut Checker<'_>, d: &Destination, at: &FieldPath) {
    match &d.host {
        None => c.error(&at.key("host"), "destination host is required"),
        Some(h) if h.is_empty() => c.error(&at.key("host"), "destination host is required"),
        Some(h) => c.wildcard_host(&at.key("host"), h, false),
    }
    if let Some(s) = &d.subset
        && !names::is_dns1123_label(s)
    {
        c.error(
            &at.key("subset"),
            format!("subset name `{s}` is not a valid DNS label"),
        );
    }
    if let Some(p) = &d.port {
        match p.number {
            Some(n) => c.port(&at.key("port").key("number"), n),
            None => c.error(&at.key("port").key("number"), "port number is required"),
        }
    }
}

fn fault(c: &mut Checker<'_>, f: &HttpFaultInjection, at: &FieldPath) {
    if f.delay.is_none() && f.abort.is_none() {
        c.error(at, "fault injection needs a `delay` or an `abort`");
    }
    if let Some(d) = &f.delay {
        let dp = at.key("delay");
        match (&d.fixed_delay, &d.exponential_delay) {
            (Some(_), Some(_)) => c.error(
                &dp,
                "only one of `fixedDelay` or `exponentialDelay` may be set",
            ),
            (None, None) => c.error(&dp, "a delay needs `fixedDelay`"),
            _ => {}
        }
        if let Some(t) = &d.fixed_delay {
            c.duration(&dp.key("fixedDelay"), t, MS);
        }
        if let Some(t) = &d.exponential_delay {
            c.duration(&dp.key("exponentialDelay"), t, MS);
            c.warn(
                &dp.key("exponentialDelay"),
                "exponentialDelay is not supported by Istio's proxy and is ignored",
            );
        }
        if let Some(p) = &d.percentage {
            c.percent(&dp.key("percentage"), p);
        }
        if let Some(p) = d.percent {
            c.int_percent(&dp.key("percent"), i64::from(p));
        }
    }
    if let Some(a) = &f.abort {
        let ap = at.key("abort");
        let set = [
            a.http_status.is_some(),
            a.grpc_status.is_some(),
            a.http2_error.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set != 1 {
            c.error(
                &ap,
                "an abort needs exactly one of `httpStatus`, `grpcStatus` or `http2Error`",
            );
        }
        if let Some(s) = a.http_status
            && !(200..=599).contains(&s)
        {
            c.error(
                &ap.key("httpStatus"),
                format!("abort status {s} must be between 200 and 599"),
            );
        }
        if let Some(e) = &a.http2_error
            && !HTTP2_ERROR_NAMES.contains(&e.as_str())
            && e.parse::<u32>().is_err()
        {
            let hint = super::structural::did_you_mean(e, HTTP2_ERROR_NAMES.iter().copied())
                .map(|s| format!(", did you mean `{s}`?"))
                .unwrap_or_default();
            c.error(
                &ap.key("http2Error"),
                format!("unknown HTTP/2 error code `{e}`{hint}"),
            );
        }
        if let Some(g) = &a.grpc_status
            && !GRPC_STATUS_NAMES.contains(&g.as_str())
        {
            let hint = super::structural::did_you_mean(g, GRPC_STATUS_NAMES.iter().copied())
                .map(|s| format!(", did you mean `{s}`?"))
                .unwrap_or_default();
            c.error(
                &ap.key("grpcStatus"),
                format!("unknown gRPC status `{g}`{hint}"),
            );
        }
        if let Some(p) = &a.percentage {
            c.percent(&ap.key("percentage"), p);
        }
        if let Some(p) = a.percent {
            c.int_percent(&ap.key("percent"), i64::from(p));
        }
    }
}

fn cors_policy(c: &mut Checker<'_>, cors: &CorsPolicy, at: &FieldPath) {
    for (i, o) in cors.allow_origins.iter().enumerate() {
        c.string_match(&at.key("allowOrigins").index(i), o);
    }
    for (i, m) in cors.allow_methods.iter().enumerate() {
        if !METHODS.contains(&m.as_str()) {
            c.error(
                &at.key("allowMethods").index(i),
                format!("`{m}` is not an HTTP method (methods are upper case)"),
            );
        }
    }
    for field in ["allowHeaders", "exposeHeaders"] {
        let list = if field == "allowHeaders" {
            &cors.allow_headers
        } else {
            &cors.expose_headers
        };
        for (i, h) in list.iter().enumerate() {
            if h != "*" && !names::is_header_name(h) {
                c.error(
                    &at.key(field).index(i),
                    format!("`{h}` is not a valid header name"),
                );
            }
        }
    }
    if let Some(age) = &cors.max_age {
        if age.get().subsec_nanos() != 0 {
            c.error(
                &at.key("maxAge"),
                format!("maxAge `{age}` must be a whole number of seconds"),
            );
        } else {
            c.duration(&at.key("maxAge"), age, Std::from_secs(1));
        }
    }
}

fn headers(c: &mut Checker<'_>, h: &Headers, at: &FieldPath) {
    for (name, ops) in [("request", &h.request), ("response", &h.response)] {
        if let Some(ops) = ops {
            header_ops(c, ops, &at.key(name));
        }
    }
}

fn header_ops(c: &mut Checker<'_>, ops: &HeaderOperations, at: &FieldPath) {
    for (field, map) in [("set", &ops.set), ("add", &ops.add)] {
        for name in map.keys() {
            if !names::is_header_name(name) {
                c.error(
                    &at.key(field).key(name.clone()),
                    format!("`{name}` is not a valid header name"),
                );
            }
        }
    }
    for (i, name) in ops.remove.iter().enumerate() {
        if !names::is_header_name(name) {
            c.error(
                &at.key("remove").index(i),
                format!("`{name}` is not a valid header name"),
            );
        }
    }
}
