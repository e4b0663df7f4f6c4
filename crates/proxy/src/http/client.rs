//! Pooled upstream HTTP clients (hyper-util's), one per flavour: HTTP/1.1 or HTTP/2 with
//! prior knowledge, outbound or inbound (inbound connections leave from 127.0.0.6).
//! Connections are kept alive and reused across requests and downstream connections.
//!
//! Outbound, a request whose URI says `https` goes to an endpoint that gets TLS (mutual TLS
//! toward a sidecar, or a DestinationRule's own TLS): [`scheme`] decides it per request and
//! records the decision for the endpoint, the connector sets TLS up with it, and each
//! response carries the answering sidecar's identity ([`MeshPeer`]) for the metrics.

use super::body::ProxyBody;
use crate::config::Protocol;
use crate::config::snapshot::Workload;
use crate::conn::Ctx;
use crate::conn::secure::{self, Refusal};
use crate::telemetry::Metrics;
use crate::telemetry::labels::{Parties, Peers, Value};
use crate::tls::policy::{Decision, MeshTls, Policy};
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A pooled client.
pub type PooledClient = Client<Connector, ProxyBody>;

/// Endpoints remembered with their TLS decision; beyond this many, older ones are forgotten
/// (a request re-records its endpoint before it connects).
const MAX_SECURE_ENDPOINTS: usize = 4096;

/// How to set up TLS toward one endpoint.
struct SecureRoute {
    tls: Arc<MeshTls>,
    policy: Arc<Policy>,
    decision: Decision,
    metrics: Arc<Metrics>,
    /// The service port the decision was made for.
    service: (String, u16),
}

/// The TLS decisions of the endpoints requests were last sent to with `https`.
#[derive(Default)]
struct SecureEndpoints(Mutex<HashMap<SocketAddr, Arc<SecureRoute>>>);

impl SecureEndpoints {
    /// Records the route `make` builds for `addr`, unless the one recorded was made by the
    /// same decisions (`policy`) for the same service port: most requests change nothing.
    fn remember(
        &self,
        addr: SocketAddr,
        policy: &Arc<Policy>,
        service: (&str, u16),
        make: impl FnOnce() -> SecureRoute,
    ) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let same = map.get(&addr).is_some_and(|r| {
            Arc::ptr_eq(&r.policy, policy) && r.service.0 == service.0 && r.service.1 == service.1
        });
        if same {
            return;
        }
        if map.len() >= MAX_SECURE_ENDPOINTS && !map.contains_key(&addr) {
            map.clear();
        }
        map.insert(addr, Arc::new(make()));
    }

    fn get(&self, addr: &SocketAddr) -> Option<Arc<SecureRoute>> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(addr).cloned()
    }
}

/// The sidecar that answered a request over mutual TLS: its workload (from the peer
/// metadata exchange) and the principals of both sides.
#[derive(Debug, Clone)]
pub struct MeshPeer {
    /// The peer's workload, when it sent its metadata.
    pub workload: Option<Arc<Workload>>,
    /// `source_principal` and `destination_principal`.
    pub principals: Option<(Value, Value)>,
}

impl MeshPeer {
    /// Request labels for `parties`, with what the peer sidecar said about itself (or
    /// `fallback`, the endpoint's workload from the configuration).
    pub fn peers(
        &self,
        parties: &Parties,
        fallback: Option<&Workload>,
        protocol: Protocol,
    ) -> Peers {
        let mut peers = parties.peers(self.workload.as_deref().or(fallback), protocol);
        self.set_principals(&mut peers);
        peers
    }

    /// Sets the principals of both sides in `peers`.
    pub fn set_principals(&self, peers: &mut Peers) {
        if let Some((source, destination)) = &self.principals {
            peers.source_principal = source.clone();
            peers.destination_principal = destination.clone();
        }
    }
}

/// The requests answered on one upstream connection so far (every response carries its
/// connection's counter), for `maxRequestsPerConnection`.
#[derive(Debug, Clone, Default)]
pub struct Uses(Arc<AtomicU32>);

impl Uses {
    /// Counts one more answered request; returns the count.
    pub fn answered(&self) -> u32 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// An upstream connection: plaintext TCP, or TLS with the peer it reached.
pub enum UpstreamIo {
    /// Plaintext.
    Plain(TcpStream, Uses),
    /// TLS (the peer sidecar, under mutual TLS).
    Tls(
        Box<tokio_rustls::client::TlsStream<TcpStream>>,
        MeshPeer,
        Uses,
    ),
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s, _) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s, ..) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s, _) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s, ..) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s, _) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(s, ..) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(s, _) => s.is_write_vectored(),
            UpstreamIo::Tls(s, ..) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s, _) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s, ..) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s, _) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s, ..) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        match self {
            UpstreamIo::Plain(_, uses) => Connected::new().extra(uses.clone()),
            UpstreamIo::Tls(_, peer, uses) => {
                Connected::new().extra(uses.clone()).extra(peer.clone())
            }
        }
    }
}

/// The connector of the pooled clients: TCP for `http` URIs, TLS as recorded for the
/// endpoint for `https` ones.
#[derive(Clone)]
pub struct Connector {
    http: HttpConnector,
    secure: Arc<SecureEndpoints>,
    timeout: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<UpstreamIo>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        if uri.scheme_str() != Some("https") {
            let connecting = self.http.call(uri);
            return Box::pin(async move {
                let tcp = connecting.await?.into_inner();
                Ok(TokioIo::new(UpstreamIo::Plain(tcp, Uses::default())))
            });
        }
        let secure = self.secure.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let addr: SocketAddr = uri
                .authority()
                .and_then(|a| a.as_str().parse().ok())
                .ok_or_else(|| format!("{uri}: not an endpoint address"))?;
            let route = secure
                .get(&addr)
                .ok_or_else(|| format!("{addr}: no TLS settings recorded"))?;
            let frame = &route.policy.metadata_frame;
            match secure::originate(&route.tls, frame, &route.decision, addr, timeout).await {
                Ok(s) => {
                    let peer = MeshPeer {
                        workload: s.peer.map(Arc::new),
                        principals: s.principals,
                    };
                    let tls = Box::new(s.stream);
                    Ok(TokioIo::new(UpstreamIo::Tls(tls, peer, Uses::default())))
                }
                Err(refusal) => {
                    if let Refusal::Tls(reason) = &refusal {
                        route.metrics.identity.refuse(reason);
                    }
                    Err(refusal.into())
                }
            }
        })
    }
}

/// The URI scheme of a request from the service `host:port` to its endpoint `addr`
/// (running `workload`): `https` when the configuration in force gives that endpoint TLS
/// (the decision is recorded for the connector), `http` otherwise.
pub fn scheme(
    ctx: &Ctx,
    host: &str,
    port: u16,
    addr: SocketAddr,
    workload: Option<&Workload>,
) -> &'static str {
    let Some(tls) = &ctx.tls else {
        return "http";
    };
    let snapshot = ctx.config.load();
    let policy = tls.policy(&snapshot);
    let decision = policy.decide_at(host, port, addr.ip(), workload);
    if matches!(decision, Decision::Plain) {
        return "http";
    }
    ctx.http
        .secure
        .remember(addr, &policy, (host, port), || SecureRoute {
            tls: tls.clone(),
            policy: policy.clone(),
            decision,
            metrics: ctx.metrics.clone(),
            service: (host.to_string(), port),
        });
    "https"
}

/// What sets an outbound client apart: HTTP/2, idle timeout, connect timeout.
type PoolKey = (bool, Option<Duration>, Option<Duration>);

/// The upstream clients: four shared ones (HTTP/1.1 or HTTP/2, outbound or inbound), and
/// outbound ones for clusters whose connection pool settings differ.
#[derive(Clone)]
pub struct Clients {
    outbound_h1: PooledClient,
    outbound_h2: PooledClient,
    inbound_h1: PooledClient,
    inbound_h2: PooledClient,
    secure: Arc<SecureEndpoints>,
    connect_timeout: Duration,
    tuned: Arc<Mutex<HashMap<PoolKey, PooledClient>>>,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clients")
    }
}

fn connector(inbound: bool, timeout: Duration, secure: Arc<SecureEndpoints>) -> Connector {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    c.set_connect_timeout(Some(timeout));
    c.enforce_http(true);
    if inbound {
        c.set_local_addresses(Ipv4Addr::new(127, 0, 0, 6), Ipv6Addr::UNSPECIFIED);
    }
    Connector {
        http: c,
        secure,
        timeout,
    }
}

/// How long idle upstream connections are kept unless a DestinationRule says otherwise.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

fn client(http2: bool, connector: Connector, idle: Duration) -> PooledClient {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .pool_idle_timeout(idle)
        .pool_max_idle_per_host(64)
        .http2_only(http2);
    builder.build(connector)
}

impl Clients {
    /// Fresh pools with the given connect timeout.
    pub fn new(connect_timeout: Duration) -> Self {
        let secure = Arc::new(SecureEndpoints::default());
        let outbound = connector(false, connect_timeout, secure.clone());
        let inbound = connector(true, connect_timeout, Arc::new(SecureEndpoints::default()));
        Self {
            outbound_h1: client(false, outbound.clone(), IDLE_TIMEOUT),
            outbound_h2: client(true, outbound, IDLE_TIMEOUT),
            inbound_h1: client(false, inbound.clone(), IDLE_TIMEOUT),
            inbound_h2: client(true, inbound, IDLE_TIMEOUT),
            secure,
            connect_timeout,
            tuned: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The outbound client for a cluster: HTTP/2 or not, with the connection pool's idle
    /// and connect timeouts (the shared client when the cluster sets neither).
    pub fn outbound(
        &self,
        http2: bool,
        idle: Option<Duration>,
        connect: Option<Duration>,
    ) -> PooledClient {
        if idle.is_none() && connect.is_none() {
            return self
                .pick(
                    false,
                    if http2 {
                        Protocol::Http2
                    } else {
                        Protocol::Http
                    },
                )
                .clone();
        }
        let mut tuned = self.tuned.lock().unwrap_or_else(|e| e.into_inner());
        tuned
            .entry((http2, idle, connect))
            .or_insert_with(|| {
                let timeout = connect.unwrap_or(self.connect_timeout);
                let connector = connector(false, timeout, self.secure.clone());
                client(http2, connector, idle.unwrap_or(IDLE_TIMEOUT))
            })
            .clone()
    }

    /// The client for a direction and protocol.
    pub fn pick(&self, inbound: bool, protocol: Protocol) -> &PooledClient {
        let h2 = matches!(protocol, Protocol::Http2 | Protocol::Grpc);
        match (inbound, h2) {
            (false, false) => &self.outbound_h1,
            (false, true) => &self.outbound_h2,
            (true, false) => &self.inbound_h1,
            (true, true) => &self.inbound_h2,
        }
    }
}
