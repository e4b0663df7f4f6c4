//! Semantic rules of DestinationRule, after Istio's validation.

use std::collections::HashSet;
use std::time::Duration as Std;

use super::checks::Checker;
use super::path::FieldPath;
use crate::istio::destination_rule::{
    ClientTlsSettings, ConnectionPoolSettings, DestinationRuleSpec, LoadBalancerSettings,
    OutlierDetection, TlsMode, TrafficPolicy,
};
use crate::names;

const MS: Std = Std::from_millis(1);

/// Checks a DestinationRule spec found at `path`.
pub fn check(c: &mut Checker<'_>, spec: &DestinationRuleSpec, path: &FieldPath) {
    match &spec.host {
        None => c.error(&path.key("host"), "host is required"),
        Some(h) => c.wildcard_host(&path.key("host"), h, true),
    }
    c.export_to(&path.key("exportTo"), &spec.export_to);
    if let Some(ws) = &spec.workload_selector {
        c.labels(
            &path.key("workloadSelector").key("matchLabels"),
            &ws.match_labels,
        );
    }
    if let Some(tp) = &spec.traffic_policy {
        traffic_policy(c, tp, &path.key("trafficPolicy"));
    }
    let mut seen = HashSet::new();
    for (i, subset) in spec.subsets.iter().enumerate() {
        let at = path.key("subsets").index(i);
        match &subset.name {
            None => c.error(&at.key("name"), "subset name is required"),
            Some(n) if n.is_empty() => c.error(&at.key("name"), "subset name is required"),
            Some(n) => {
                if !names::is_dns1123_label(n) {
                    c.error(
                        &at.key("name"),
                        format!("subset name `{n}` is not a valid DNS label"),
                    );
                }
                if !seen.insert(n.clone()) {
                    c.error(&at.key("name"), format!("duplicate subset name `{n}`"));
                }
            }
        }
        c.labels(&at.key("labels"), &subset.labels);
        if let Some(tp) = &subset.traffic_policy {
            traffic_policy(c, tp, &at.key("trafficPolicy"));
        }
    }
}

fn traffic_policy(c: &mut Checker<'_>, tp: &TrafficPolicy, at: &FieldPath) {
    if tp.load_balancer.is_none()
        && tp.connection_pool.is_none()
        && tp.outlier_detection.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
        && tp.retry_budget.is_none()
    {
        c.error(at, "a traffic policy must set at least one field");
    }
    policy_parts(
        c,
        at,
        tp.load_balancer.as_ref(),
        tp.connection_pool.as_ref(),
        tp.outlier_detection.as_ref(),
        tp.tls.as_ref(),
    );
    let mut ports = HashSet::new();
    for (i, p) in tp.port_level_settings.iter().enumerate() {
        let pp = at.key("portLevelSettings").index(i);
        match p.port.as_ref().and_then(|p| p.number) {
            None => c.error(&pp.key("port").key("number"), "port number is required"),
            Some(n) => {
                c.port(&pp.key("port").key("number"), n);
                if !ports.insert(n) {
                    c.error(
                        &pp.key("port").key("number"),
                        format!("duplicate port {n} in portLevelSettings"),
                    );
                }
            }
        }
        if p.load_balancer.is_none()
            && p.connection_pool.is_none()
            && p.outlier_detection.is_none()
            && p.tls.is_none()
        {
            c.error(&pp, "a port traffic policy must set at least one field");
        }
        policy_parts(
            c,
            &pp,
            p.load_balancer.as_ref(),
            p.connection_pool.as_ref(),
            p.outlier_detection.as_ref(),
            p.tls.as_ref(),
        );
    }
    if let Some(t) = &tp.tunnel {
        let tp = at.key("tunnel");
        if let Some(proto) = &t.protocol
            && proto != "CONNECT"
            && proto != "POST"
        {
            c.error(
                &tp.key("protocol"),
                format!("tunnel protocol `{proto}` must be `CONNECT` or `POST`"),
            );
        }
        match &t.target_host {
            None => c.error(&tp.key("targetHost"), "targetHost is required"),
            Some(h) => c.wildcard_host(&tp.key("targetHost"), h, false),
        }
        match t.target_port {
            None => c.error(&tp.key("targetPort"), "targetPort is required"),
            Some(p) => c.port(&tp.key("targetPort"), p),
        }
    }
    if let Some(rb) = &tp.retry_budget
        && let Some(v) = rb.percent.as_ref().and_then(|p| p.value())
        && !(0.0..=100.0).contains(&v)
    {
        c.error(
            &at.key("retryBudget").key("percent"),
            format!("percentage {v} must be between 0 and 100"),
        );
    }
}

fn policy_parts(
    c: &mut Checker<'_>,
    at: &FieldPath,
    lb: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    outlier: Option<&OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
) {
    if let Some(lb) = lb {
        load_balancer(c, lb, &at.key("loadBalancer"));
    }
    if let Some(pool) = pool {
        connection_pool(c, pool, &at.key("connectionPool"));
    }
    if let Some(o) = outlier {
        outlier_detection(c, o, &at.key("outlierDetection"));
    }
    if let Some(t) = tls {
        client_tls(c, t, &at.key("tls"));
    }
}

fn load_balancer(c: &mut Checker<'_>, lb: &LoadBalancerSettings, at: &FieldPath) {
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        c.error(at, "only one of `simple` or `consistentHash` may be set");
    }
    if let Some(ch) = &lb.consistent_hash {
        let cp = at.key("consistentHash");
        let keys = [
            ch.http_header_name.is_some(),
            ch.http_cookie.is_some(),
            ch.use_source_ip == Some(true),
            ch.http_query_parameter_name.is_some(),
        ]
        .iter()
        .filter(|k| **k)
        .count();
        match keys {
            0 => c.error(&cp, "consistentHash needs one of `httpHeaderName`, `httpCookie`, `useSourceIp` or `httpQueryParameterName`"),
            1 => {}
            _ => c.error(&cp, "consistentHash may set only one of `httpHeaderName`, `httpCookie`, `useSourceIp` or `httpQueryParameterName`"),
        }
        if let Some(h) = &ch.http_header_name
            && !names::is_header_name(h)
        {
            c.error(
                &cp.key("httpHeaderName"),
                format!("`{h}` is not a valid header name"),
            );
        }
        if let Some(cookie) = &ch.http_cookie {
            let kp = cp.key("httpCookie");
            if cookie.name.as_deref().is_none_or(str::is_empty) {
                c.error(&kp.key("name"), "cookie name is required");
            }
            if let Some(ttl) = &cookie.ttl {
                c.duration(&kp.key("ttl"), ttl, Std::ZERO);
            }
            for (i, a) in cookie.attributes.iter().enumerate() {
                if a.name.as_deref().is_none_or(str::is_empty) {
                    c.error(
                        &kp.key("attributes").index(i).key("name"),
                        "attribute name is required",
                    );
                }
            }
        }
        if ch.ring_hash.is_some() && ch.maglev.is_some() {
            c.error(&cp, "only one of `ringHash` or `maglev` may be set");
        }
        if ch.minimum_ring_size.is_some() && (ch.ring_hash.is_some() || ch.maglev.is_some()) {
            c.error(
                &cp.key("minimumRingSize"),
                "the deprecated `minimumRingSize` cannot be combined with `ringHash` or `maglev`",
            );
        }
        if let Some(size) = ch.maglev.as_ref().and_then(|m| m.table_size)
            && !is_prime(size)
        {
            c.error(
                &cp.key("maglev").key("tableSize"),
                format!("maglev tableSize {size} must be a prime number"),
            );
        }
    }
    if let Some(loc) = &lb.locality_lb_setting {
        let lp = at.key("localityLbSetting");
        if !loc.distribute.is_empty() && !loc.failover.is_empty() {
            c.error(&lp, "only one of `distribute` or `failover` may be set");
        }
        for (i, d) in loc.distribute.iter().enumerate() {
            let dp = lp.key("distribute").index(i);
            if d.from.as_deref().is_none_or(str::is_empty) {
                c.error(&dp.key("from"), "`from` locality is required");
            }
            let total: u64 = d.to.values().map(|w| u64::from(*w)).sum();
            if total != 100 {
                c.error(
                    &dp.key("to"),
                    format!("locality weights must sum to 100, not {total}"),
                );
            }
        }
        for (i, f) in loc.failover.iter().enumerate() {
            let fp = lp.key("failover").index(i);
            if f.from.is_some() && f.from == f.to {
                c.error(&fp, "failover `from` and `to` must differ");
            }
        }
    }
    if let Some(w) = &lb.warmup_duration_secs {
        c.duration(&at.key("warmupDurationSecs"), w, MS);
    }
    if let Some(w) = &lb.warmup {
        let wp = at.key("warmup");
        match &w.duration {
            None => c.error(&wp.key("duration"), "warmup duration is required"),
            Some(d) => c.duration(&wp.key("duration"), d, MS),
        }
        if let Some(p) = w.minimum_percent
            && !(0.0..=100.0).contains(&p)
        {
            c.error(
                &wp.key("minimumPercent"),
                format!("percentage {p} must be between 0 and 100"),
            );
        }
        if let Some(a) = w.aggression
            && a < 1.0
        {
            c.error(
                &wp.key("aggression"),
                format!("aggression {a} must be at least 1"),
            );
        }
    }
}

fn connection_pool(c: &mut Checker<'_>, pool: &ConnectionPoolSettings, at: &FieldPath) {
    if pool.tcp.is_none() && pool.http.is_none() {
        c.error(at, "a connection pool must set `tcp` or `http`");
    }
    if let Some(tcp) = &pool.tcp {
        let tp = at.key("tcp");
        if let Some(n) = tcp.max_connections {
            c.non_negative(&tp.key("maxConnections"), n);
        }
        if let Some(d) = &tcp.connect_timeout {
            c.duration(&tp.key("connectTimeout"), d, MS);
        }
        if let Some(d) = &tcp.max_connection_duration {
            c.duration(&tp.key("maxConnectionDuration"), d, MS);
        }
        if let Some(d) = &tcp.idle_timeout {
            c.duration(&tp.key("idleTimeout"), d, Std::ZERO);
        }
        if let Some(k) = &tcp.tcp_keepalive {
            if let Some(d) = &k.time {
                c.duration(&tp.key("tcpKeepalive").key("time"), d, MS);
            }
            if let Some(d) = &k.interval {
                c.duration(&tp.key("tcpKeepalive").key("interval"), d, MS);
            }
        }
    }
    if let Some(http) = &pool.http {
        let hp = at.key("http");
        for (name, value) in [
            ("http1MaxPendingRequests", http.http1_max_pending_requests),
            ("http2MaxRequests", http.http2_max_requests),
            ("maxRequestsPerConnection", http.max_requests_per_connection),
            ("maxRetries", http.max_retries),
            ("maxConcurrentStreams", http.max_concurrent_streams),
        ] {
            if let Some(v) = value {
                c.non_negative(&hp.key(name), v);
            }
        }
        if let Some(d) = &http.idle_timeout {
            c.duration(&hp.key("idleTimeout"), d, MS);
        }
        if http.http2_keep_alive.is_some() {
            c.warn(
                &hp.key("http2KeepAlive"),
                "http2KeepAlive is accepted but not checked by Ferry",
            );
        }
    }
}

fn outlier_detection(c: &mut Checker<'_>, o: &OutlierDetection, at: &FieldPath) {
    if let Some(n) = o.consecutive_errors {
        c.non_negative(&at.key("consecutiveErrors"), n);
        c.warn(
            &at.key("consecutiveErrors"),
            "consecutiveErrors is deprecated; use consecutiveGatewayErrors or consecutive5xxErrors",
        );
    }
    if let Some(d) = &o.interval {
        c.duration(&at.key("interval"), d, MS);
    }
    if let Some(d) = &o.base_ejection_time {
        c.duration(&at.key("baseEjectionTime"), d, MS);
    }
    if let Some(p) = o.max_ejection_percent {
        c.int_percent(&at.key("maxEjectionPercent"), i64::from(p));
    }
    if let Some(p) = o.min_health_percent {
        c.int_percent(&at.key("minHealthPercent"), i64::from(p));
    }
}

fn client_tls(c: &mut Checker<'_>, t: &ClientTlsSettings, at: &FieldPath) {
    let has_files =
        t.client_certificate.is_some() || t.private_key.is_some() || t.ca_certificates.is_some();
    match t.mode {
        Some(TlsMode::IstioMutual) if has_files || t.credential_name.is_some() => {
            c.error(at, "ISTIO_MUTUAL uses the mesh certificates: clientCertificate, privateKey, caCertificates and credentialName must be empty");
        }
        Some(TlsMode::Mutual) if t.credential_name.is_none() => {
            if t.client_certificate.is_none() {
                c.error(
                    &at.key("clientCertificate"),
                    "MUTUAL TLS needs clientCertificate (or credentialName)",
                );
            }
            if t.private_key.is_none() {
                c.error(
                    &at.key("privateKey"),
                    "MUTUAL TLS needs privateKey (or credentialName)",
                );
            }
        }
        _ => {}
    }
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u64;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    #[test]
    fn primes() {
        let cases = [
            (0, false),
            (1, false),
            (2, true),
            (65537, true),
            (65536, false),
            (1021, true),
        ];
        for (n, p) in cases {
            assert_eq!(super::is_prime(n), p, "{n}");
        }
    }
}
