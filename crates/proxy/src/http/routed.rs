//! The outbound request path under the routes of the dialled host (`crate::route`): the
//! first HTTP rule that matches, then in Istio's order its CORS policy, injected faults
//! (delay `DI`, abort `FI`), redirect or direct response, or a weighted destination with
//! rewrites, header changes and mirrors; the cluster's connection pool (overflow `UO`); then
//! tries — an endpoint from the cluster's balancer (consistent hashing on a header, cookie,
//! query parameter or the source address), the per-try timeout, outlier reports — retried
//! as the retry policy says (Istio's default when the rule sets none), within the route
//! timeout (`UT`). A request no rule matches gets 404 (`NR`).

use super::answer;
use super::body::{BoxError, Counted, ProxyBody, Seen, boxed, full};
use super::client::{self, MeshPeer};
use super::replay::{LIMIT as REPLAY_LIMIT, Replay};
use super::{Connection, fit_version, record, strip_hop_by_hop};
use crate::balance::HashOn;
use crate::balance::hash::hash;
use crate::cluster::{PickContext, Picked, UpstreamCluster};
use crate::config::Protocol;
use crate::conn::Ctx;
use crate::resilience::outlier::Event;
use crate::resilience::retry::{RetryPolicy, TryOutcome};
use crate::resilience::sample;
use crate::route::PortRoutes;
use crate::route::http::{Action, HeaderPolicy, HttpRule, RequestView, first_match};
use crate::telemetry::labels::{Peers, Value};
use crate::trace::PendingHttp;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HOST, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::connect::capture_connection;
use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::time::Sleep;
use tracing::debug;

/// Joins Envoy response flags (`-` when none).
fn flags(list: &[&str]) -> String {
    let set: Vec<&str> = list.iter().copied().filter(|f| !f.is_empty()).collect();
    if set.is_empty() {
        "-".to_string()
    } else {
        set.join(",")
    }
}

/// What one request's metrics need.
struct Report<'a> {
    ctx: &'a Arc<Ctx>,
    conn: &'a Connection,
    started: Instant,
    service: Option<&'a Arc<UpstreamCluster>>,
    /// The request's span, when traced (taken by whichever answer records the request).
    span: Cell<Option<PendingHttp>>,
}

impl Report<'_> {
    fn peers(&self, workload: Option<&crate::config::snapshot::Workload>) -> Peers {
        let mut peers = self.conn.parties.peers(workload, self.conn.protocol);
        if let Some(svc) = self.service.and_then(|c| c.service.as_ref()) {
            peers.destination_service = Value(Arc::from(svc.fqdn.as_str()));
            peers.destination_service_name = Value(Arc::from(svc.name.as_str()));
            peers.destination_service_namespace = Value(Arc::from(svc.namespace.as_str()));
        }
        peers
    }

    /// The request's span, with the upstream cluster and endpoint as far as they are known.
    fn span(&self, addr: Option<SocketAddr>) -> Option<PendingHttp> {
        let mut span = self.span.take()?;
        let cluster = self.service.map_or("-", |c| c.name.as_str());
        span.upstream(cluster, addr);
        Some(span)
    }

    /// Records an answer the proxy gave itself, and returns it.
    fn local(&self, response: Response<ProxyBody>, flag_list: &[&str]) -> Response<ProxyBody> {
        // A reset stream has no status: Envoy counts it as response code 0.
        let reset = response.extensions().get::<answer::ResetStream>().is_some();
        let code = if reset { 0 } else { response.status().as_u16() };
        let body_len = response.body().size_hint().exact().unwrap_or(0);
        record(
            self.ctx,
            self.peers(None),
            self.conn.parties.security.clone(),
            code,
            &flags(flag_list),
            Seen {
                bytes: body_len,
                grpc_status: grpc_status(response.headers()),
            },
            0,
            self.started,
            self.conn.protocol,
            self.span(None),
        );
        response
    }
}

fn grpc_status(headers: &hyper::HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The hash key of a request for `on`; a cookie created here is returned too.
fn hash_key(
    on: Option<&HashOn>,
    parts: &Parts,
    source: Option<IpAddr>,
) -> (Option<u64>, Option<String>) {
    let Some(on) = on else {
        return (None, None);
    };
    match on {
        HashOn::Header(name) => (
            parts.headers.get(name.as_str()).map(|v| hash(v.as_bytes())),
            None,
        ),
        HashOn::QueryParameter(name) => {
            let view = RequestView {
                parts,
                port: 0,
                scheme: "http",
            };
            (view.query_param(name).map(|v| hash(v.as_bytes())), None)
        }
        HashOn::SourceIp => (
            source.map(|ip| match ip {
                IpAddr::V4(a) => hash(&a.octets()),
                IpAddr::V6(a) => hash(&a.octets()),
            }),
            None,
        ),
        HashOn::Cookie { name, path, ttl } => {
            let found = parts
                .headers
                .get_all(hyper::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|kv| {
                    let (k, v) = kv.trim().split_once('=')?;
                    (k == name).then_some(v)
                });
            match (found, ttl) {
                (Some(v), _) => (Some(hash(v.as_bytes())), None),
                (None, Some(ttl)) => {
                    // Envoy creates the cookie when it has a TTL.
                    let value = format!("{:016x}", fastrand::u64(..));
                    let mut cookie = format!("{name}={value}");
                    if let Some(p) = path {
                        cookie.push_str(&format!("; Path={p}"));
                    }
                    if !ttl.is_zero() {
                        cookie.push_str(&format!("; Max-Age={}", ttl.as_secs()));
                    }
                    cookie.push_str("; HttpOnly");
                    (Some(hash(value.as_bytes())), Some(cookie))
                }
                (None, None) => (None, None),
            }
        }
    }
}

/// A response body cut off at the route deadline.
struct Deadline {
    inner: ProxyBody,
    sleep: Pin<Box<Sleep>>,
    fired: Arc<AtomicBool>,
}

impl Body for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Poll::Ready(r) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(r);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.fired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err("upstream request timeout".into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request head of one try, for an upstream that speaks HTTP/2 (`h2`) or HTTP/1.1.
fn try_request(
    parts: &Parts,
    scheme: &str,
    addr: SocketAddr,
    path: &str,
    close: bool,
    h2: bool,
) -> Option<Request<()>> {
    let uri = Uri::builder()
        .scheme(scheme)
        .authority(addr.to_string())
        .path_and_query(path)
        .build()
        .ok()?;
    let mut req = Request::builder()
        .method(parts.method.clone())
        .uri(uri)
        .body(())
        .ok()?;
    *req.headers_mut() = parts.headers.clone();
    *req.version_mut() = fit_version(parts.version, req.headers_mut(), parts.uri.authority(), h2);
    strip_hop_by_hop(req.headers_mut());
    if close {
        req.headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    Some(req)
}

/// The scheme of a request to the endpoint `picked` of `cluster`: `https` when it gets TLS
/// (`client::scheme`).
fn upstream_scheme(ctx: &Ctx, cluster: &UpstreamCluster, picked: &Picked) -> &'static str {
    let workload = picked.workload().map(|w| &**w);
    client::scheme(
        ctx,
        &cluster.config.host,
        cluster.config.port,
        picked.addr,
        workload,
    )
}

/// Sends a copy of the request to a mirror cluster, without waiting for (or recording) the
/// answer; the mirror sees the authority with `-shadow` appended, as with Envoy.
fn mirror(
    ctx: &Arc<Ctx>,
    cluster: &Arc<UpstreamCluster>,
    parts: &Parts,
    path: &str,
    body: Bytes,
    protocol: Protocol,
    dst: SocketAddr,
) {
    let Some(picked) = cluster.pick(PickContext {
        dst: Some(dst),
        ..Default::default()
    }) else {
        return;
    };
    let scheme = upstream_scheme(ctx, cluster, &picked);
    let h2 = matches!(protocol, Protocol::Http2 | Protocol::Grpc);
    let Some(head) = try_request(parts, scheme, picked.addr, path, false, h2) else {
        return;
    };
    let (mut head, ()) = head.into_parts();
    let host = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if p.chars().all(|c| c.is_ascii_digit()) => {
            (n.to_string(), Some(p.to_string()))
        }
        _ => (host.clone(), None),
    };
    let shadow = match port {
        Some(p) => format!("{name}-shadow:{p}"),
        None => format!("{name}-shadow"),
    };
    if let Ok(v) = HeaderValue::try_from(shadow) {
        head.headers.insert(HOST, v);
    }
    let client = ctx.http.pick(false, protocol).clone();
    let request = Request::from_parts(head, full(body));
    tokio::spawn(async move {
        let _picked = picked;
        let _ = tokio::time::timeout(Duration::from_secs(30), async {
            if let Ok(resp) = client.request(request).await {
                let _ = resp.into_body().collect().await;
            }
        })
        .await;
    });
}

/// Collects a body of at most `limit` bytes whose size is known up front.
async fn collect_small(body: Incoming, limit: u64) -> Result<Bytes, Incoming> {
    match body.size_hint().exact() {
        Some(n) if n <= limit => match body.collect().await {
            Ok(c) => Ok(c.to_bytes()),
            Err(_) => Ok(Bytes::new()),
        },
        _ => Err(body),
    }
}

/// Handles one outbound request under `routes` (for the dialled `dst`); `source` is the
/// calling workload's address (consistent hashing on the source IP); `span` the request's
/// span when it is traced.
pub async fn handle(
    ctx: Arc<Ctx>,
    conn: Arc<Connection>,
    routes: Arc<PortRoutes>,
    dst: SocketAddr,
    source: Option<IpAddr>,
    req: Request<Incoming>,
    span: Option<PendingHttp>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let (mut parts, body) = req.into_parts();
    let report = Report {
        ctx: &ctx,
        conn: &conn,
        started,
        service: routes.default.cluster.as_ref(),
        span: Cell::new(span),
    };
    let authority = RequestView {
        parts: &parts,
        port: dst.port(),
        scheme: "http",
    }
    .authority()
    .to_string();
    let matched = if routes.http.is_empty() {
        None
    } else {
        let view = RequestView {
            parts: &parts,
            port: dst.port(),
            scheme: "http",
        };
        match first_match(&routes.http, &view) {
            Some((rule, m)) => Some((rule, m.and_then(|m| m.uri_prefix()).map(str::to_string))),
            None => return report.local(answer::text(404, ""), &["NR"]),
        }
    };
    let rule: Option<&HttpRule> = matched.as_ref().map(|(r, _)| *r);

    // CORS.
    let origin = parts
        .headers
        .get(hyper::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut cors_origin = None;
    if let (Some(cors), Some(origin)) = (rule.and_then(|r| r.cors.as_ref()), &origin) {
        let allowed = cors.allows(origin);
        if answer::is_preflight(&parts) {
            if allowed {
                return report.local(answer::preflight(cors, origin), &[]);
            }
            if cors.ignore_unmatched_preflights {
                return report.local(answer::direct(200, Bytes::new()), &[]);
            }
        } else if allowed {
            cors_origin = Some((cors, origin.clone()));
        }
    }

    // Faults: a delay, then an abort.
    let mut delayed = false;
    if let Some(fault) = rule.and_then(|r| r.fault.as_ref()) {
        if let Some((delay, pct)) = fault.delay
            && sample(pct)
        {
            tokio::time::sleep(delay).await;
            delayed = true;
        }
        if let Some((kind, pct)) = fault.abort
            && sample(pct)
        {
            let di = if delayed { "DI" } else { "" };
            return report.local(answer::abort(kind), &[di, "FI"]);
        }
    }
    let di = if delayed { "DI" } else { "" };

    // The action.
    let (cluster, dest_headers): (Arc<UpstreamCluster>, Option<&HeaderPolicy>) = match rule
        .map(|r| &r.action)
    {
        None => match &routes.default.cluster {
            Some(c) => (c.clone(), None),
            None => return report.local(answer::text(503, "no cluster found"), &[di, "NC"]),
        },
        Some(Action::Direct { status, body }) => {
            let mut r = answer::direct(*status, body.clone());
            if let Some(rule) = rule {
                rule.headers.response.apply(r.headers_mut());
            }
            return report.local(r, &[di]);
        }
        Some(Action::Redirect(rd)) => {
            let mut r = answer::redirect(rd, &parts, &authority, dst.port());
            if let Some(rule) = rule {
                rule.headers.response.apply(r.headers_mut());
            }
            return report.local(r, &[di]);
        }
        Some(Action::Route(weighted)) => match weighted.pick() {
            Some((d, h)) => match &d.cluster {
                Some(c) => (c.clone(), Some(h)),
                None => return report.local(answer::text(503, "no cluster found"), &[di, "NC"]),
            },
            None => return report.local(answer::text(503, "no healthy upstream"), &[di, "UH"]),
        },
    };
    let report = Report {
        service: Some(&cluster),
        ..report
    };

    // Rewrites and header changes.
    let prefix = matched.as_ref().and_then(|(_, p)| p.as_deref());
    let mut path = parts
        .uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    if let Some(rw) = rule.and_then(|r| r.rewrite.as_ref()) {
        if let Some(new_path) = rw.path(parts.uri.path(), prefix) {
            path = match parts.uri.query() {
                Some(q) => format!("{new_path}?{q}"),
                None => new_path,
            };
        }
        if let Some(a) = &rw.authority
            && let Ok(v) = HeaderValue::try_from(a.as_str())
        {
            parts.headers.insert(HOST, v);
        }
    }
    if let Some(rule) = rule {
        rule.headers.request.apply(&mut parts.headers);
    }
    if let Some(h) = dest_headers {
        h.request.apply(&mut parts.headers);
    }

    // Mirrors get whole bodies: only requests without one or with a small known length.
    let mirrors: Vec<&Arc<UpstreamCluster>> = rule
        .map(|r| {
            r.mirrors
                .iter()
                .filter(|(_, pct)| sample(*pct))
                .filter_map(|(d, _)| d.cluster.as_ref())
                .collect()
        })
        .unwrap_or_default();
    let body: ProxyBody = if mirrors.is_empty() {
        boxed(body)
    } else {
        match collect_small(body, REPLAY_LIMIT as u64).await {
            Ok(bytes) => {
                for m in mirrors {
                    mirror(&ctx, m, &parts, &path, bytes.clone(), conn.protocol, dst);
                }
                full(bytes)
            }
            Err(body) => boxed(body),
        }
    };

    // Connection pool. `h2UpgradePolicy: UPGRADE` sends HTTP/1.1 requests as HTTP/2.
    let limits = &cluster.pool.limits;
    let http1 = !matches!(conn.protocol, Protocol::Http2 | Protocol::Grpc) && !limits.h2_upgrade;
    let slot = match cluster.pool.request(http1).await {
        Ok(slot) => slot,
        Err(_) => return report.local(
            answer::text(
                503,
                "upstream connect error or disconnect/reset before headers. reset reason: overflow",
            ),
            &[di, "UO"],
        ),
    };

    let default_retries;
    let retries: Option<&RetryPolicy> = match rule {
        Some(r) => r.retries.as_ref(),
        None => {
            default_retries = routes.default_retries.clone();
            default_retries.as_ref()
        }
    };
    let timeout = rule.and_then(|r| r.timeout);
    let deadline = timeout.map(|t| started + t);
    let (key, new_cookie) = hash_key(cluster.hash_on.as_ref(), &parts, source);
    // `maxRequestsPerConnection`: 1 over HTTP/1.1 turns keep-alive off; otherwise a
    // connection leaves the pool once it has answered that many requests.
    let per_connection = limits.max_requests_per_connection;
    let close = per_connection == 1 && http1;
    let max_uses =
        (per_connection > 1 || (per_connection == 1 && !http1)).then_some(per_connection);
    let request_bytes = Arc::new(AtomicU64::new(0));
    let counter = request_bytes.clone();
    let replay = Replay::new(boxed(Counted::new(body, move |seen: Seen| {
        counter.store(seen.bytes, Ordering::Relaxed)
    })));
    let client = ctx
        .http
        .outbound(!http1, limits.http_idle_timeout, limits.connect_timeout);

    let mut tries = 0u32;
    let mut avoid = None;
    let mut _retry_slot = None;
    loop {
        let Some(picked) = cluster.pick(PickContext {
            dst: Some(dst),
            dialled_pod: routes.passthrough,
            hash: key,
            avoid,
        }) else {
            return report.local(answer::text(503, "no healthy upstream"), &[di, "UH"]);
        };
        let scheme = upstream_scheme(&ctx, &cluster, &picked);
        let Some(head) = try_request(&parts, scheme, picked.addr, &path, close, !http1) else {
            return report.local(answer::text(400, "bad request target"), &[di]);
        };
        let (head, ()) = head.into_parts();
        let mut request = Request::from_parts(head, boxed(replay.body()));
        let captured = max_uses.map(|_| capture_connection(&mut request));
        let per_try = retries.and_then(|r| r.per_try_timeout);
        let now = Instant::now();
        let left = deadline.map(|d| d.saturating_duration_since(now));
        let limit = match (per_try, left) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let sent = client.request(request);
        let result = match limit {
            Some(l) => tokio::time::timeout(l, sent).await.ok(),
            None => Some(sent.await),
        };
        if let (Some(max), Some(captured), Some(Ok(resp))) = (max_uses, &captured, &result)
            && resp
                .extensions()
                .get::<client::Uses>()
                .is_some_and(|u| u.answered() >= max)
            && let Some(connection) = captured.connection_metadata().as_ref()
        {
            connection.poison();
        }
        let outcome = match &result {
            None => TryOutcome::Timeout,
            Some(Ok(resp)) => TryOutcome::Response {
                status: resp.status().as_u16(),
                grpc_status: grpc_status(resp.headers()),
            },
            Some(Err(e)) if e.is_connect() => TryOutcome::ConnectFailure,
            Some(Err(_)) => TryOutcome::Reset,
        };
        picked.report(match outcome {
            TryOutcome::Response { status, .. } => Event::Status(status),
            _ => Event::LocalFailure,
        });
        let timed_out = deadline.is_some_and(|d| Instant::now() >= d);
        let retriable = retries.is_some_and(|r| r.retriable(outcome));
        let may_retry = retriable
            && !timed_out
            && retries.is_some_and(|r| tries < r.retries)
            && replay.replayable();
        if may_retry && let Ok(s) = cluster.pool.retry() {
            _retry_slot = Some(s);
            tries += 1;
            avoid = retries.filter(|r| r.other_hosts).map(|_| picked.addr);
            drop(result);
            drop(picked);
            if let Some(r) = retries {
                let pause = r.backoff(tries);
                let pause = match deadline {
                    Some(d) => pause.min(d.saturating_duration_since(Instant::now())),
                    None => pause,
                };
                tokio::time::sleep(pause).await;
            }
            continue;
        }
        let exhausted = if retriable && tries > 0 { "URX" } else { "" };
        let workload = picked
            .workload()
            .cloned()
            .or_else(|| ctx.config.load().workload_at(picked.addr.ip()));
        return match result {
            None => report.local_at(
                answer::text(504, "upstream request timeout"),
                &[di, "UT", exhausted],
                workload.as_deref(),
            ),
            Some(Err(e)) => {
                debug!("http upstream {}: {e}", picked.addr);
                let f = if e.is_connect() { "UF" } else { "UC" };
                report.local_at(
                    answer::text(
                        503,
                        "upstream connect error or disconnect/reset before headers",
                    ),
                    &[di, f, exhausted],
                    workload.as_deref(),
                )
            }
            Some(Ok(response)) => {
                let code = response.status().as_u16();
                let mesh = response.extensions().get::<MeshPeer>().cloned();
                let (mut head, body) = response.into_parts();
                if let Some(h) = dest_headers {
                    h.response.apply(&mut head.headers);
                }
                if let Some(rule) = rule {
                    rule.headers.response.apply(&mut head.headers);
                }
                if let Some((cors, origin)) = &cors_origin {
                    answer::cors_headers(cors, origin, &mut head.headers);
                }
                if let Some(cookie) = &new_cookie
                    && let Ok(v) = HeaderValue::try_from(cookie.as_str())
                {
                    head.headers.append(hyper::header::SET_COOKIE, v);
                }
                let mut peers = match &mesh {
                    Some(m) => report.peers(m.workload.as_deref().or(workload.as_deref())),
                    None => report.peers(workload.as_deref()),
                };
                if let Some(m) = &mesh {
                    m.set_principals(&mut peers);
                }
                let fired = Arc::new(AtomicBool::new(false));
                let body: ProxyBody = match deadline {
                    Some(d) => boxed(Deadline {
                        inner: boxed(body),
                        sleep: Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(
                            d,
                        ))),
                        fired: fired.clone(),
                    }),
                    None => boxed(body),
                };
                let security = conn.parties.security.clone();
                let protocol = conn.protocol;
                let metrics_ctx = ctx.clone();
                let fixed = flags(&[di, exhausted]);
                let span = report.span(Some(picked.addr));
                let held: (Picked, _) = (picked, slot);
                // A trailers-only gRPC answer carries its status in the headers.
                let header_grpc = grpc_status(&head.headers);
                let body = Counted::new(body, move |mut seen: Seen| {
                    let _held = held;
                    seen.grpc_status = seen.grpc_status.or(header_grpc);
                    let f = if fired.load(Ordering::Relaxed) {
                        flags(&[di, "UT", exhausted])
                    } else {
                        fixed
                    };
                    record(
                        &metrics_ctx,
                        peers,
                        security,
                        code,
                        &f,
                        seen,
                        request_bytes.load(Ordering::Relaxed),
                        started,
                        protocol,
                        span,
                    );
                });
                Response::from_parts(head, boxed(body))
            }
        };
    }
}

impl Report<'_> {
    /// Records an answer given on behalf of the endpoint at `workload`.
    fn local_at(
        &self,
        response: Response<ProxyBody>,
        flag_list: &[&str],
        workload: Option<&crate::config::snapshot::Workload>,
    ) -> Response<ProxyBody> {
        let code = response.status().as_u16();
        record(
            self.ctx,
            self.peers(workload),
            self.conn.parties.security.clone(),
            code,
            &flags(flag_list),
            Seen::default(),
            0,
            self.started,
            self.conn.protocol,
            self.span(None),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_lists() {
        assert_eq!(flags(&[]), "-");
        assert_eq!(flags(&["", "UT", ""]), "UT");
        assert_eq!(flags(&["DI", "FI"]), "DI,FI");
    }

    #[test]
    fn hash_keys() {
        let parts = hyper::Request::builder()
            .uri("/x?user=7")
            .header("x-user", "alice")
            .header("cookie", "a=1; session=abc")
            .body(())
            .expect("request")
            .into_parts()
            .0;
        let k = |on: HashOn| hash_key(Some(&on), &parts, Some(IpAddr::from([10, 0, 0, 1])));
        assert_eq!(k(HashOn::Header("x-user".into())).0, Some(hash(b"alice")));
        assert_eq!(k(HashOn::Header("x-none".into())).0, None);
        assert_eq!(k(HashOn::QueryParameter("user".into())).0, Some(hash(b"7")));
        assert_eq!(k(HashOn::SourceIp).0, Some(hash(&[10, 0, 0, 1])));
        let cookie = |name: &str, ttl| HashOn::Cookie {
            name: name.into(),
            path: Some("/".into()),
            ttl,
        };
        assert_eq!(k(cookie("session", None)), (Some(hash(b"abc")), None));
        assert_eq!(k(cookie("other", None)), (None, None));
        let (key, set) = k(cookie("other", Some(Duration::from_secs(60))));
        assert!(key.is_some());
        assert!(set.is_some_and(|c| c.starts_with("other=") && c.contains("Max-Age=60")));
    }
}
