//! Handling one accepted connection: outbound (the application calling out) and inbound
//! (a peer calling the application), from routing to forwarding and metrics; [`secure`]
//! for the connections that carry mutual TLS on one side.

pub mod connect;
pub mod inbound;
pub mod observe;
pub mod outbound;
pub mod prefixed;
pub mod redis_tap;
pub mod secure;
pub mod sniff;

use crate::config::{Protocol, Snapshot};
use crate::lifecycle::Lifecycle;
use crate::listener::orig_dst::OriginalDst;
use crate::tcp::route::PipePolicy;
use crate::telemetry::Metrics;
use crate::telemetry::labels::TcpLabels;
use arc_swap::ArcSwap;
use observe::{ConnObserver, Redis};
use redis_tap::RedisTap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tracing::debug;

/// What every connection handler needs: the configuration in force, metrics, the
/// lifecycle, and how to find a redirected connection's destination.
pub struct Ctx {
    /// The configuration in force; replaced atomically, read once per connection.
    pub config: Arc<ArcSwap<Snapshot>>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Running, draining or closed.
    pub lifecycle: Lifecycle,
    /// Original-destination lookup.
    pub orig_dst: Arc<dyn OriginalDst>,
    /// Connections being handled.
    pub active: AtomicUsize,
    /// Pooled upstream HTTP clients.
    pub http: crate::http::client::Clients,
    /// Mutual TLS, when the proxy has a workload identity; `None` keeps every connection
    /// plaintext (and PERMISSIVE ports unpeeked), STRICT ports refused.
    pub tls: Option<Arc<crate::tls::policy::MeshTls>>,
    /// Distributed tracing: off (one branch per request) or the tracer in force.
    pub tracing: Arc<crate::trace::TraceSwitch>,
}

/// Counts a connection as active while it lives.
pub struct ActiveGuard(Arc<Ctx>);

impl ActiveGuard {
    /// Marks one more connection active.
    pub fn new(ctx: Arc<Ctx>) -> Self {
        ctx.active.fetch_add(1, Ordering::Relaxed);
        Self(ctx)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Ctx {
    /// Upstream connect timeout in force.
    pub fn connect_timeout(snapshot: &Snapshot) -> Duration {
        Duration::from_millis(snapshot.config.settings.connect_timeout_ms)
    }

    /// Idle timeout in force, `None` for none.
    pub fn idle_timeout(snapshot: &Snapshot) -> Option<Duration> {
        match snapshot.config.settings.idle_timeout_s {
            0 => None,
            s => Some(Duration::from_secs(s)),
        }
    }

    /// Protocol detection timeout in force.
    pub fn detect_timeout(snapshot: &Snapshot) -> Duration {
        Duration::from_millis(snapshot.config.settings.protocol_detection_timeout_ms)
    }
}

/// Counts a connection that was accepted but could not be forwarded (its flags say why).
fn refused(ctx: &Ctx, labels: &TcpLabels) {
    let handles = ctx.metrics.tcp(labels);
    handles.opened.inc();
    handles.closed.inc();
}

/// Both sides of a Redis connection, for its command spans (only read when traced).
fn redis_parties(
    snapshot: &Snapshot,
    downstream: &TcpStream,
    upstream: &TcpStream,
    labels: &TcpLabels,
) -> redis_tap::RedisParties {
    use crate::telemetry::labels::Reporter;
    let pod_at = |s: &TcpStream| {
        s.peer_addr()
            .ok()
            .and_then(|a| snapshot.workload_at(a.ip()))
            .map(|w| w.pod.clone())
            .unwrap_or_default()
    };
    let outbound = labels.peers.reporter == Reporter::Source;
    let me = snapshot.me.pod.clone();
    let (source_pod, destination_pod) = if outbound {
        (me, pod_at(upstream))
    } else {
        (pod_at(downstream), me)
    };
    redis_tap::RedisParties {
        kind: Some(if outbound {
            crate::trace::SpanKind::Client
        } else {
            crate::trace::SpanKind::Server
        }),
        source_workload: labels.peers.source_workload.0.to_string(),
        source_pod,
        destination_workload: labels.peers.destination_workload.0.to_string(),
        destination_pod,
        peer_address: upstream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
    }
}

/// The Redis telemetry of a connection between `downstream` and `upstream` (the TCP
/// sockets, under TLS too): per-command metrics for Redis, with command spans when the
/// tracer asks for them; decided on the first bytes for undeclared protocols.
fn redis_telemetry(
    ctx: &Ctx,
    snapshot: &Snapshot,
    downstream: &TcpStream,
    upstream: &TcpStream,
    labels: &TcpLabels,
    protocol: Protocol,
    policy: &PipePolicy,
) -> Redis {
    match protocol {
        _ if !snapshot.config.settings.redis_telemetry => Redis::Off,
        // Under a RedisPolicy, the enforcement records the Redis telemetry itself.
        _ if policy.redis.is_some() => Redis::Off,
        Protocol::Redis => {
            let mut tap = RedisTap::new(ctx.metrics.clone(), labels);
            if let Some(active) = ctx.tracing.current().filter(|a| a.tracer.redis_spans()) {
                let parties = redis_parties(snapshot, downstream, upstream, labels);
                tap = tap.traced(Some(active), parties);
            }
            Redis::On(Box::new(tap))
        }
        Protocol::Tcp | Protocol::Unknown => Redis::Undecided,
        _ => Redis::Off,
    }
}

/// Forwards an established pair of connections to their end, with TCP metrics and, for
/// Redis, per-command telemetry.
async fn pipe(
    ctx: &Ctx,
    snapshot: &Snapshot,
    downstream: &TcpStream,
    upstream: &TcpStream,
    labels: &TcpLabels,
    protocol: Protocol,
) {
    let policy = PipePolicy::default();
    pipe_with(
        ctx, snapshot, downstream, upstream, labels, protocol, &policy,
    )
    .await
}

/// [`pipe`] within a cluster's bounds (`crate::tcp::route::PipePolicy`).
async fn pipe_with(
    ctx: &Ctx,
    snapshot: &Snapshot,
    downstream: &TcpStream,
    upstream: &TcpStream,
    labels: &TcpLabels,
    protocol: Protocol,
    policy: &PipePolicy,
) {
    let handles = ctx.metrics.tcp(labels);
    handles.opened.inc();
    let telemetry = snapshot.config.settings.redis_telemetry;
    let redis = redis_telemetry(
        ctx, snapshot, downstream, upstream, labels, protocol, policy,
    );
    let mut observer = ConnObserver {
        tcp: handles.clone(),
        redis,
        metrics: &ctx.metrics,
        labels,
    };
    let (_, ending) = crate::tcp::route::forward(
        downstream,
        upstream,
        &mut observer,
        policy.idle(Ctx::idle_timeout(snapshot)),
        &ctx.lifecycle,
        policy,
        telemetry,
    )
    .await;
    if let Some(tap) = observer.tap() {
        tap.finish(&ctx.metrics, labels);
    }
    if let Err(e) = ending {
        debug!("{}: {e}", labels.peers.destination_service.0);
    }
    handles.closed.inc();
}
