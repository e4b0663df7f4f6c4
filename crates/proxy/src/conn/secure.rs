//! Connections with TLS on one side: the client sidecar originating mutual TLS toward a
//! server sidecar (or a DestinationRule's `SIMPLE`/`MUTUAL` TLS toward an external server),
//! and the server sidecar terminating it. After an Istio mTLS handshake whose ALPN is
//! `istio-peer-exchange`, both sides exchange peer metadata, so their metrics carry the
//! peer's workload labels and SPIFFE principals; the destination reports
//! `connection_security_policy="mutual_tls"`. HTTP inside mutual TLS is served request by
//! request on both sides: here on the server side, through the HTTP clients' connector
//! ([`crate::http::client`]) on the client side, so routes, request metrics and spans apply.
//!
//! The byte pump here is generic over the two streams (plaintext connections keep the
//! specialised one of `tcp::forward`): one buffer per direction, allocated once per
//! connection, with the same half-close, reset, idle and drain behaviour.

use super::connect::connect;
use super::observe::ConnObserver;
use super::prefixed::Prefixed;
use super::{Ctx, sniff};
use crate::config::snapshot::Workload;
use crate::config::{Protocol, Snapshot};
use crate::http::{self, Upstream};
use crate::lifecycle::{Lifecycle, Phase};
use crate::redis::enforce::{self, Stream};
use crate::tcp::forward::{Ending, Observer, Totals};
use crate::tcp::route::PipePolicy;
use crate::telemetry::labels::{Parties, TcpLabels, Value};
use crate::tls::policy::{Decision, MeshTls};
use crate::tls::{self, peer, verify::spiffe_of};
use rustls::pki_types::ServerName;
use socket2::SockRef;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant as StdInstant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tracing::debug;

/// How long the peer has to send its metadata after the handshake.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// Buffer per direction (one TLS record).
const BUF: usize = 16 * 1024;

/// A stream whose TCP socket can be reset.
pub trait Socket: AsyncRead + AsyncWrite + Unpin {
    /// The TCP socket underneath.
    fn tcp(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Socket for tokio_rustls::client::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

impl Socket for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// One direction of the pump.
struct Dir {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
    shut: bool,
    flush: bool,
    bytes: u64,
}

impl Dir {
    fn new() -> Self {
        Self {
            buf: vec![0; BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            shut: false,
            flush: false,
            bytes: 0,
        }
    }
}

fn is_eof(e: &io::Error) -> bool {
    // A peer that closes TCP without TLS close_notify: treat as end of stream.
    e.kind() == io::ErrorKind::UnexpectedEof
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Moves one direction as far as it can; returns whether it made progress.
fn step<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    r: &mut R,
    w: &mut W,
    d: &mut Dir,
    observe: &mut dyn FnMut(&[u8]),
) -> io::Result<bool> {
    let mut progressed = false;
    loop {
        while d.start < d.end {
            match Pin::new(&mut *w).poll_write(cx, &d.buf[d.start..d.end]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    d.start += n;
                    d.flush = true;
                    progressed = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(progressed),
            }
        }
        if d.flush {
            match Pin::new(&mut *w).poll_flush(cx) {
                Poll::Ready(Ok(())) => d.flush = false,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(progressed),
            }
        }
        if d.eof {
            if !d.shut {
                match Pin::new(&mut *w).poll_shutdown(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::NotConnected => {}
                    Poll::Ready(Err(e)) => return Err(e),
                    Poll::Pending => return Ok(progressed),
                }
                d.shut = true;
                progressed = true;
            }
            return Ok(progressed);
        }
        let mut rb = ReadBuf::new(&mut d.buf);
        match Pin::new(&mut *r).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    d.eof = true;
                } else {
                    observe(&d.buf[..n]);
                    d.start = 0;
                    d.end = n;
                    d.bytes += n as u64;
                }
                progressed = true;
            }
            Poll::Ready(Err(e)) if is_eof(&e) => {
                d.eof = true;
                progressed = true;
            }
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => return Ok(progressed),
        }
    }
}

/// Forwards both ways between `down` (the client side) and `up` until both sides are done,
/// one resets, nothing moves for `idle`, or the drain ends it (see `tcp::forward::forward`).
pub async fn forward_io<D: Socket, U: Socket, O: Observer>(
    down: &mut D,
    up: &mut U,
    observer: &mut O,
    idle: Option<Duration>,
    lifecycle: &Lifecycle,
) -> (Totals, io::Result<Ending>) {
    let mut d2u = Dir::new();
    let mut u2d = Dir::new();
    let mut draining = Some(Box::pin(lifecycle.reached(Phase::Draining)));
    let mut closed = Some(Box::pin(lifecycle.reached(Phase::Closed)));
    let mut timer: Option<Pin<Box<Sleep>>> = idle.map(|d| Box::pin(tokio::time::sleep(d)));
    let mut last_activity = StdInstant::now();
    let result = poll_fn(|cx| {
        for slot in [&mut draining, &mut closed] {
            if slot
                .as_mut()
                .is_some_and(|f| f.as_mut().poll(cx).is_ready())
            {
                *slot = None;
            }
        }
        let mut now: Option<StdInstant> = None;
        loop {
            let mut progressed = false;
            if !d2u.shut {
                let mut observe = |b: &[u8]| {
                    let t = *now.get_or_insert_with(StdInstant::now);
                    observer.downstream_bytes(b, t)
                };
                match step(cx, &mut *down, &mut *up, &mut d2u, &mut observe) {
                    Ok(p) => progressed |= p,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            if !u2d.shut {
                let mut observe = |b: &[u8]| {
                    let t = *now.get_or_insert_with(StdInstant::now);
                    observer.upstream_bytes(b, t)
                };
                match step(cx, &mut *up, &mut *down, &mut u2d, &mut observe) {
                    Ok(p) => progressed |= p,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            if d2u.shut && u2d.shut {
                return Poll::Ready(Ok(Ending::Closed));
            }
            let phase = lifecycle.phase();
            if phase >= Phase::Draining {
                let quiet = d2u.start == d2u.end && u2d.start == u2d.end && observer.quiescent();
                if quiet || phase >= Phase::Closed {
                    return Poll::Ready(Ok(Ending::Drained));
                }
            }
            if progressed {
                continue;
            }
            if let Some(t) = now {
                last_activity = t;
            }
            if let (Some(t), Some(limit)) = (timer.as_mut(), idle)
                && t.as_mut().poll(cx).is_ready()
            {
                if last_activity.elapsed() >= limit {
                    return Poll::Ready(Ok(Ending::Idle));
                }
                t.as_mut().reset(Instant::from_std(last_activity + limit));
                if t.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(Ending::Idle));
                }
            }
            return Poll::Pending;
        }
    })
    .await;
    let totals = Totals {
        received: d2u.bytes,
        sent: u2d.bytes,
    };
    match result {
        Err(e) if is_reset(&e) => {
            for s in [down.tcp(), up.tcp()] {
                let _ = SockRef::from(s).set_linger(Some(Duration::ZERO));
            }
            (totals, Ok(Ending::Reset))
        }
        other => (totals, other),
    }
}

/// Forwards with TCP metrics and Redis telemetry, like `conn::pipe`.
async fn pipe<D: Socket, U: Socket>(
    ctx: &Ctx,
    snapshot: &Snapshot,
    down: &mut D,
    up: &mut U,
    labels: &TcpLabels,
    protocol: Protocol,
    policy: &PipePolicy,
) {
    let handles = ctx.metrics.tcp(labels);
    handles.opened.inc();
    let redis = super::redis_telemetry(
        ctx,
        snapshot,
        down.tcp(),
        up.tcp(),
        labels,
        protocol,
        policy,
    );
    let mut observer = ConnObserver {
        tcp: handles.clone(),
        redis,
        metrics: &ctx.metrics,
        labels,
    };
    let idle = policy.idle(Ctx::idle_timeout(snapshot));
    let (_, ending) = match &policy.redis {
        // A RedisPolicy applies (`crate::redis::enforce`).
        Some(e) => {
            let (mut d, mut u) = (Stream(down), Stream(up));
            let telemetry = snapshot.config.settings.redis_telemetry;
            enforce::forward_sides(
                &mut d,
                &mut u,
                &mut observer,
                idle,
                &ctx.lifecycle,
                e,
                telemetry,
            )
            .await
        }
        None => forward_io(down, up, &mut observer, idle, &ctx.lifecycle).await,
    };
    if let Some(tap) = observer.tap() {
        tap.finish(&ctx.metrics, labels);
    }
    if let Err(e) = ending {
        debug!("{}: {e}", labels.peers.destination_service.0);
    }
    handles.closed.inc();
}

fn principal(id: Option<&ferry_proto::config::SpiffeId>) -> Value {
    Value::or_unknown(&id.map(|i| i.uri()).unwrap_or_default())
}

/// What an outbound connection over TLS is forwarded with.
pub struct OutboundTls {
    /// The endpoint's workload, from the configuration (the peer's metadata, when it sends
    /// some, takes its place).
    pub workload: Option<Arc<Workload>>,
    /// The route's bounds and RedisPolicy (`crate::tcp::route`).
    pub pipe: PipePolicy,
}

/// An upstream connection with TLS established (and, for Istio mutual TLS, peer metadata
/// exchanged).
pub struct Secured {
    /// The TLS stream.
    pub stream: tokio_rustls::client::TlsStream<TcpStream>,
    /// What the peer sidecar says it is (metadata exchange); `None` without one.
    pub peer: Option<Workload>,
    /// `source_principal` and `destination_principal`, under mesh mutual TLS.
    pub principals: Option<(Value, Value)>,
}

/// Why TLS toward an upstream could not be set up.
#[derive(Debug)]
pub enum Refusal {
    /// The TCP connection failed.
    Connect(io::Error),
    /// TLS could not be set up (the reason is an identity metric label).
    Tls(&'static str),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Connect(e) => write!(f, "connect: {e}"),
            Refusal::Tls(reason) => write!(f, "TLS refused ({reason})"),
        }
    }
}

impl std::error::Error for Refusal {}

/// Connects to `upstream` and sets up TLS as `decision` says (with the peer metadata
/// exchange under mesh mutual TLS), each step within `timeout`.
pub async fn originate(
    tls: &MeshTls,
    frame: &[u8],
    decision: &Decision,
    upstream: SocketAddr,
    timeout: Duration,
) -> Result<Secured, Refusal> {
    let (config, name, mesh_id) = match decision {
        Decision::Mesh { identities, sni } => {
            let Some(cert) = tls.identity.current() else {
                debug!("outbound: {upstream}: no certificate yet");
                return Err(Refusal::Tls("no_certificate"));
            };
            let config = match tls::client_config(&cert, identities.clone()) {
                Ok(c) => Arc::new(c),
                Err(e) => {
                    debug!("outbound: {upstream}: {e}");
                    return Err(Refusal::Tls("handshake"));
                }
            };
            let name = ServerName::try_from(sni.to_string())
                .unwrap_or_else(|_| ServerName::IpAddress(upstream.ip().into()));
            (config, name, Some(cert))
        }
        Decision::User(u) => (u.config.clone(), u.name.clone(), None),
        Decision::Broken(why) => {
            debug!("outbound: {upstream}: {why}");
            return Err(Refusal::Tls("tls_settings"));
        }
        // Callers handle plaintext; be safe anyway.
        Decision::Plain => return Err(Refusal::Tls("tls_settings")),
    };
    let tcp = connect(upstream, timeout, false)
        .await
        .map_err(Refusal::Connect)?;
    let handshake = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
    let mut stream = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!("outbound: TLS to {upstream}: {e}");
            return Err(Refusal::Tls("handshake"));
        }
        Err(_) => {
            debug!("outbound: TLS to {upstream} timed out");
            return Err(Refusal::Tls("handshake"));
        }
    };
    let mut secured = Secured {
        peer: None,
        principals: None,
        stream,
    };
    let Some(cert) = &mesh_id else {
        return Ok(secured);
    };
    let conn = secured.stream.get_ref().1;
    let peer_id = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(spiffe_of);
    let exchange = conn.alpn_protocol() == Some(tls::ALPN_PEER_EXCHANGE);
    secured.principals = Some((principal(Some(&cert.id)), principal(peer_id.as_ref())));
    if exchange {
        stream = secured.stream;
        if let Err(e) = peer::write(&mut stream, frame).await {
            debug!("outbound: metadata to {upstream}: {e}");
            return Err(Refusal::Tls("handshake"));
        }
        match peer::read(&mut stream, METADATA_TIMEOUT).await {
            Ok(w) => secured.peer = Some(w),
            Err(e) => {
                debug!("outbound: metadata from {upstream}: {e}");
                return Err(Refusal::Tls("handshake"));
            }
        }
        secured.stream = stream;
    }
    Ok(secured)
}

/// Counts an outbound connection refused for `refusal`.
pub fn refused(ctx: &Ctx, labels: &TcpLabels, refusal: &Refusal) {
    if let Refusal::Tls(reason) = refusal {
        ctx.metrics.identity.refuse(reason);
    }
    super::refused(ctx, labels);
}

/// Forwards `downstream` over the secured connection `secured`.
pub async fn outbound(
    ctx: Arc<Ctx>,
    snapshot: Arc<Snapshot>,
    mut downstream: TcpStream,
    mut parties: Parties,
    protocol: Protocol,
    out: OutboundTls,
    secured: Secured,
) {
    let Secured {
        mut stream,
        peer,
        principals,
    } = secured;
    let peer_workload = peer.map(Arc::new).or_else(|| out.workload.clone());
    if principals.is_some() {
        parties.principals = principals;
    }
    let labels = parties.tcp(peer_workload.as_deref(), protocol, "-");
    pipe(
        &ctx,
        &snapshot,
        &mut downstream,
        &mut stream,
        &labels,
        protocol,
        &out.pipe,
    )
    .await;
}

/// Terminates mutual TLS from a client sidecar and delivers to the application at `dst`:
/// HTTP (declared, or detected inside TLS on an undeclared port) request by request, with
/// the peer's identity in the request metrics and spans; anything else as a byte stream.
#[allow(clippy::too_many_arguments)]
pub async fn inbound(
    ctx: Arc<Ctx>,
    snapshot: Arc<Snapshot>,
    downstream: TcpStream,
    dst: SocketAddr,
    peer_addr: SocketAddr,
    mut parties: Parties,
    declared: Protocol,
    tls: &MeshTls,
) {
    let me = Some(&*snapshot.me);
    let Some(cert) = tls.identity.current() else {
        debug!("inbound: mTLS from {peer_addr}: no certificate yet");
        ctx.metrics.identity.refuse("no_certificate");
        return;
    };
    let timeout = Ctx::connect_timeout(&snapshot);
    let acceptor = tokio_rustls::TlsAcceptor::from(cert.server.clone());
    // Opaque protocols are delivered on a connection opened beside the handshake; HTTP goes
    // through the pooled client.
    let deliver = async {
        if declared.is_http() {
            None
        } else {
            Some(connect(dst, timeout, true).await)
        }
    };
    let (accepted, upstream) = tokio::join!(
        tokio::time::timeout(timeout, acceptor.accept(downstream)),
        deliver,
    );
    let mut stream = match accepted {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!("inbound: TLS from {peer_addr}: {e}");
            ctx.metrics.identity.refuse("handshake");
            return;
        }
        Err(_) => {
            debug!("inbound: TLS from {peer_addr} timed out");
            ctx.metrics.identity.refuse("handshake");
            return;
        }
    };
    let conn = stream.get_ref().1;
    let Some(peer_id) = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(spiffe_of)
    else {
        debug!("inbound: {peer_addr} presented no SPIFFE identity");
        ctx.metrics.identity.refuse("handshake");
        return;
    };
    let exchange = conn.alpn_protocol() == Some(tls::ALPN_PEER_EXCHANGE);
    if exchange {
        match peer::read(&mut stream, METADATA_TIMEOUT).await {
            Ok(w) => parties.peer = Some(Arc::new(w)),
            Err(e) => {
                debug!("inbound: metadata from {peer_addr}: {e}");
                ctx.metrics.identity.refuse("handshake");
                return;
            }
        }
        let frame = tls.policy(&snapshot).metadata_frame.clone();
        if let Err(e) = peer::write(&mut stream, &frame).await {
            debug!("inbound: metadata to {peer_addr}: {e}");
            return;
        }
    }
    parties.security = Value(Arc::from("mutual_tls"));
    parties.principals = Some((principal(Some(&peer_id)), principal(Some(&cert.id))));
    let (mut stream, protocol) = if declared == Protocol::Unknown {
        match sniff::read_protocol(&mut stream, Ctx::detect_timeout(&snapshot)).await {
            Ok((first, protocol)) => (Prefixed::new(first, stream), protocol),
            Err(e) => {
                debug!("inbound: mTLS from {peer_addr}: {e}");
                return;
            }
        }
    } else {
        (Prefixed::new(Vec::new(), stream), declared)
    };
    if protocol.is_http() {
        drop(upstream);
        let conn = http::Connection {
            upstream: Upstream::Fixed(dst, Some(snapshot.me.clone())),
            inbound: true,
            protocol,
            parties,
            target: None,
        };
        let traced_peer = ctx.tracing.is_on().then_some(peer_addr);
        return http::serve_io(ctx, stream, traced_peer, conn).await;
    }
    let upstream = match upstream {
        Some(result) => result,
        None => connect(dst, timeout, true).await,
    };
    let mut upstream = match upstream {
        Ok(s) => s,
        Err(e) => {
            debug!("inbound: delivering to {dst}: {e}");
            super::refused(&ctx, &parties.tcp(me, protocol, "UF"));
            return;
        }
    };
    let labels = parties.tcp(me, protocol, "-");
    pipe(
        &ctx,
        &snapshot,
        &mut stream,
        &mut upstream,
        &labels,
        protocol,
        &PipePolicy::default(),
    )
    .await;
}
