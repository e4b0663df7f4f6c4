//! HTTP/1.1 and HTTP/2 (and gRPC) proxying with hyper: the downstream connection is served
//! by hyper's server, every request is sent through a pooled, keep-alive upstream client
//! (cluster IPs are balanced per request, not per connection), and every request is counted
//! in Istio's request metrics, measured until its response body ends. Outbound requests to a
//! host the configuration routes follow its VirtualService and DestinationRule ([`routed`]).

pub mod answer;
pub mod body;
pub mod client;
pub mod replay;
pub mod routed;

use crate::config::Protocol;
use crate::config::snapshot::{Target, Workload};
use crate::conn::Ctx;
use crate::lifecycle::Phase;
use crate::telemetry::labels::{HttpLabels, Parties, Peers, Value};
use crate::trace::{PendingHttp, SpanKind};
use body::{Counted, ProxyBody, Seen, boxed, full};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HOST, HeaderMap, HeaderValue, UPGRADE};
use hyper::http::uri::Authority;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::debug;

/// Where each request of a connection goes.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// Always this address (an endpoint, a passthrough destination, or the local app).
    Fixed(SocketAddr, Option<Arc<Workload>>),
    /// One of a service's endpoints, picked per request.
    Balanced(Arc<Target>),
}

/// One proxied HTTP connection.
pub struct Connection {
    /// Where requests go.
    pub upstream: Upstream,
    /// Inbound (deliver to the app from 127.0.0.6) or outbound.
    pub inbound: bool,
    /// HTTP/1, HTTP/2 or gRPC.
    pub protocol: Protocol,
    /// Request labels.
    pub parties: Parties,
    /// The service port whose TLS settings apply to the requests (outbound toward a
    /// service: mutual TLS is decided per request, for the endpoint it goes to).
    pub target: Option<Arc<Target>>,
}

/// Removes the hop-by-hop headers of a request (`Connection`, those it names, `Keep-Alive`,
/// `Proxy-Connection`): they describe the downstream connection, not the upstream one, which
/// the proxy pools.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "upgrade")
        .collect();
    // A protocol upgrade (WebSocket) keeps its `Connection: upgrade`.
    if !headers.contains_key(UPGRADE) {
        headers.remove(CONNECTION);
    }
    for name in named {
        headers.remove(name.as_str());
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// The version of a request sent to an upstream that speaks HTTP/2 (`h2`) or HTTP/1.1: an
/// HTTP/2 request to an HTTP/1.1 upstream goes as HTTP/1.1, its authority becoming `Host`.
pub fn fit_version(
    version: Version,
    headers: &mut HeaderMap,
    authority: Option<&Authority>,
    h2: bool,
) -> Version {
    if h2 || version != Version::HTTP_2 {
        return version;
    }
    if !headers.contains_key(HOST)
        && let Some(v) = authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        headers.insert(HOST, v);
    }
    Version::HTTP_11
}

fn error_response(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut r = Response::new(full(format!("{message}\n")));
    *r.status_mut() = status;
    r
}

/// Records one request's metrics once its response has ended, and its span when the
/// request is traced.
#[allow(clippy::too_many_arguments)]
fn record(
    ctx: &Ctx,
    peers: Peers,
    security: Value,
    code: u16,
    flags: &str,
    seen: Seen,
    request_bytes: u64,
    started: Instant,
    protocol: Protocol,
    span: Option<PendingHttp>,
) {
    if let Some(span) = span {
        span.finish(code, flags, request_bytes, seen.bytes);
    }
    let grpc = match (protocol, seen.grpc_status) {
        (_, Some(status)) => Value(Arc::from(status.to_string())),
        (Protocol::Grpc, None) => Value::unknown(),
        _ => Value(Arc::from("")),
    };
    let labels = HttpLabels {
        peers,
        response_code: Value(Arc::from(code.to_string())),
        grpc_response_status: grpc,
        response_flags: Value(Arc::from(flags)),
        connection_security_policy: security,
    };
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    ctx.metrics
        .http_request(&labels, ms, request_bytes, seen.bytes);
}

/// The host and port a request's span is named after (Istio: `<host>:<port>/<path>`): the
/// service when the connection's destination is one, else the request's authority.
fn span_target<'a>(
    conn: &'a Connection,
    routes: Option<&'a crate::route::PortRoutes>,
    authority: &'a str,
) -> (&'a str, u16) {
    let (auth_host, auth_port) = match authority.rsplit_once(':') {
        Some((h, p)) if !authority.ends_with(']') => match p.parse::<u16>() {
            Ok(port) => (h, Some(port)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    };
    if let Some(r) = routes {
        return (r.host.as_str(), r.port);
    }
    match &conn.upstream {
        Upstream::Balanced(t) => (t.service.fqdn.as_str(), t.port),
        Upstream::Fixed(addr, _) if conn.inbound => {
            let host = conn
                .parties
                .service
                .as_ref()
                .map_or(auth_host, |s| s.fqdn.as_str());
            (host, auth_port.unwrap_or(addr.port()))
        }
        Upstream::Fixed(addr, _) => (auth_host, auth_port.unwrap_or(addr.port())),
    }
}

/// Starts the span of a request when tracing is on (the context is propagated on the
/// request's headers either way); `None` when off or not sampled.
fn start_span(
    ctx: &Ctx,
    conn: &Connection,
    routes: Option<&crate::route::PortRoutes>,
    peer: Option<SocketAddr>,
    req: &mut Request<Incoming>,
) -> Option<PendingHttp> {
    let kind = if conn.inbound {
        SpanKind::Server
    } else {
        SpanKind::Client
    };
    ctx.tracing
        .with_current(|active| {
            crate::trace::start_http(active, kind, peer, req, |authority| {
                let (host, port) = span_target(conn, routes, authority);
                (host.to_string(), port)
            })
        })
        .flatten()
}

async fn proxy_request(
    ctx: Arc<Ctx>,
    conn: Arc<Connection>,
    peer: Option<SocketAddr>,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    if !conn.inbound {
        let dst = match &conn.upstream {
            Upstream::Fixed(addr, _) => Some(*addr),
            Upstream::Balanced(t) => t.vip,
        };
        if let Some(dst) = dst {
            let snapshot = ctx.config.load();
            if let Some(routes) = snapshot.routes.routes(dst).cloned() {
                let source = snapshot.config.identity.ip;
                drop(snapshot);
                let span = start_span(&ctx, &conn, Some(&routes), peer, &mut req);
                return routed::handle(ctx, conn, routes, dst, source, req, span).await;
            }
        }
    }
    let mut span = start_span(&ctx, &conn, None, peer, &mut req);
    let started = Instant::now();
    let (addr, workload) = match &conn.upstream {
        Upstream::Fixed(addr, w) => (*addr, w.clone()),
        Upstream::Balanced(t) => match t.pick() {
            Some(ep) => (
                SocketAddr::new(ep.ip, t.target_port),
                Some(ep.workload.clone()),
            ),
            None => {
                let peers = conn.parties.peers(None, conn.protocol);
                if let Some(s) = span.as_mut() {
                    s.upstream(&cluster_name(&conn), None);
                }
                record(
                    &ctx,
                    peers,
                    conn.parties.security.clone(),
                    503,
                    "UH",
                    Seen::default(),
                    0,
                    started,
                    conn.protocol,
                    span,
                );
                return error_response(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream");
            }
        },
    };
    let mut peers = conn.parties.peers(workload.as_deref(), conn.protocol);
    if let Some(s) = span.as_mut() {
        s.upstream(&cluster_name(&conn), Some(addr));
    }
    let scheme = match &conn.target {
        Some(t) if !conn.inbound => {
            client::scheme(&ctx, &t.service.fqdn, t.port, addr, workload.as_deref())
        }
        _ => "http",
    };
    let (mut parts, body) = req.into_parts();
    let h2 = matches!(conn.protocol, Protocol::Http2 | Protocol::Grpc);
    parts.version = fit_version(parts.version, &mut parts.headers, parts.uri.authority(), h2);
    strip_hop_by_hop(&mut parts.headers);
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = match Uri::builder()
        .scheme(scheme)
        .authority(addr.to_string())
        .path_and_query(path)
        .build()
    {
        Ok(uri) => uri,
        Err(e) => {
            return error_response(StatusCode::BAD_REQUEST, &format!("bad request target: {e}"));
        }
    };
    let request_bytes = Arc::new(AtomicU64::new(0));
    let counter = request_bytes.clone();
    let body = Counted::new(boxed(body), move |seen: Seen| {
        counter.store(seen.bytes, Ordering::Relaxed)
    });
    let upstream_req = Request::from_parts(parts, boxed(body));
    let client = ctx.http.pick(conn.inbound, conn.protocol);
    match client.request(upstream_req).await {
        Ok(response) => {
            let code = response.status().as_u16();
            if let Some(mesh) = response.extensions().get::<client::MeshPeer>() {
                peers = mesh.peers(&conn.parties, workload.as_deref(), conn.protocol);
            }
            let (parts, body) = response.into_parts();
            let protocol = conn.protocol;
            let security = conn.parties.security.clone();
            let metrics_ctx = ctx.clone();
            let body = Counted::new(boxed(body), move |seen: Seen| {
                let req_bytes = request_bytes.load(Ordering::Relaxed);
                record(
                    &metrics_ctx,
                    peers,
                    security,
                    code,
                    "-",
                    seen,
                    req_bytes,
                    started,
                    protocol,
                    span,
                );
            });
            Response::from_parts(parts, boxed(body))
        }
        Err(e) => {
            debug!("http upstream {addr}: {e}");
            let flags = if e.is_connect() { "UF" } else { "UC" };
            let req_bytes = request_bytes.load(Ordering::Relaxed);
            record(
                &ctx,
                peers,
                conn.parties.security.clone(),
                503,
                flags,
                Seen::default(),
                req_bytes,
                started,
                conn.protocol,
                span,
            );
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers",
            )
        }
    }
}

/// Envoy's name of the cluster a request of `conn` goes to (outside routed requests):
/// `outbound|<port>||<service>`, `inbound|<port>||`, or `PassthroughCluster`.
fn cluster_name(conn: &Connection) -> String {
    match &conn.upstream {
        Upstream::Balanced(t) => format!("outbound|{}||{}", t.port, t.service.fqdn),
        Upstream::Fixed(addr, _) if conn.inbound => format!("inbound|{}||", addr.port()),
        Upstream::Fixed(..) => "PassthroughCluster".to_string(),
    }
}

/// Serves one downstream HTTP connection until it closes, or until the proxy drains (then
/// the connection is shut down gracefully: in-flight requests finish, HTTP/2 sends GOAWAY).
pub async fn serve(ctx: Arc<Ctx>, downstream: TcpStream, conn: Connection) {
    // The downstream peer is a span tag: only looked up when tracing is on.
    let peer = if ctx.tracing.is_on() {
        downstream.peer_addr().ok()
    } else {
        None
    };
    serve_io(ctx, downstream, peer, conn).await
}

/// [`serve`] on any stream (the plaintext inside mutual TLS); `peer` is the downstream
/// address for spans.
pub async fn serve_io<S>(ctx: Arc<Ctx>, downstream: S, peer: Option<SocketAddr>, conn: Connection)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let service_ctx = ctx.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let ctx = service_ctx.clone();
        let conn = conn.clone();
        async move {
            let response = proxy_request(ctx, conn, peer, req).await;
            // An injected `http2Error`: hyper resets the stream with the error's code.
            match response.extensions().get::<answer::ResetStream>() {
                Some(answer::ResetStream(code)) => Err(h2::Error::from(h2::Reason::from(*code))),
                None => Ok(response),
            }
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(downstream), service);
    tokio::pin!(connection);
    let draining = ctx.lifecycle.reached(Phase::Draining);
    tokio::pin!(draining);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                debug!("http downstream: {e}");
            }
            return;
        }
        _ = &mut draining => connection.as_mut().graceful_shutdown(),
    }
    let closed = ctx.lifecycle.reached(Phase::Closed);
    tokio::select! {
        _ = connection => {}
        _ = closed => {}
    }
}
