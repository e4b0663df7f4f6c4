//! Outbound connections: the application dialled an address, the redirect rules brought
//! the connection to the proxy. Route it (service cluster IP -> one of its endpoints,
//! endpoint or unknown address -> exactly the address dialled), detect the protocol,
//! forward (opaque TCP, Redis with telemetry, or HTTP request by request), and report with
//! `reporter="source"`. Toward an endpoint the configuration marks for mutual TLS (or a
//! DestinationRule's TLS), the connection goes through [`super::secure`] instead.

use super::connect::connect;
use super::secure::{self, OutboundTls};
use super::{Ctx, sniff};
use crate::config::Protocol;
use crate::config::snapshot::{Outbound, Workload};
use crate::http::{self, Upstream};
use crate::tcp::route;
use crate::telemetry::labels::{Parties, Reporter, Value};
use crate::tls::policy::Decision;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tracing::debug;

/// Handles one outbound connection to its end.
pub async fn handle(ctx: Arc<Ctx>, downstream: TcpStream) {
    let _ = downstream.set_nodelay(true);
    let dst = match ctx.orig_dst.original_dst(&downstream) {
        Ok(dst) => dst,
        Err(e) => {
            debug!("outbound: no original destination: {e}");
            return;
        }
    };
    if downstream.local_addr().is_ok_and(|local| local == dst) {
        // Dialling the proxy's own listener would loop forever.
        debug!("outbound: refusing a connection to the proxy itself ({dst})");
        return;
    }
    let snapshot = ctx.config.load_full();
    let route = snapshot.outbound(dst);
    let (service, declared, passthrough_name) = match &route {
        Outbound::Service(t) | Outbound::Endpoint(t, _) => {
            (Some(t.service.clone()), t.protocol, "")
        }
        Outbound::Passthrough => (None, Protocol::Unknown, "PassthroughCluster"),
    };
    let mut parties = Parties {
        reporter: Reporter::Source,
        me: snapshot.me.clone(),
        peer: None,
        service,
        passthrough_name,
        cluster: snapshot.config.identity.cluster.clone(),
        trust_domain: snapshot.config.identity.trust_domain.clone(),
        security: Value::unknown(),
        principals: None,
    };
    // Mutual TLS is possible toward this service port: the HTTP request path (plaintext to
    // any endpoint) is bypassed and the endpoint is chosen per connection.
    let mesh = match (&ctx.tls, &route) {
        (Some(tls), Outbound::Service(t) | Outbound::Endpoint(t, _)) => {
            let policy = tls.policy(&snapshot);
            policy
                .may_secure(t)
                .then(|| (tls.clone(), policy, t.clone()))
        }
        _ => None,
    };
    let mut http_upstream = match &route {
        Outbound::Service(t) => Upstream::Balanced(t.clone()),
        Outbound::Endpoint(_, w) => Upstream::Fixed(dst, w.clone()),
        Outbound::Passthrough => Upstream::Fixed(dst, None),
    };
    if declared.is_http() && mesh.is_none() {
        let conn = http::Connection {
            upstream: http_upstream,
            inbound: false,
            protocol: declared,
            parties,
        };
        return http::serve(ctx, downstream, conn).await;
    }
    // Opaque protocols are routed and balanced per connection (`crate::tcp::route`):
    // VirtualService rules and weights, connection limits, outlier ejection.
    let sni = if route::wants_sni(&snapshot, dst) {
        route::peek_sni(&downstream, Ctx::detect_timeout(&snapshot)).await
    } else {
        None
    };
    let src = downstream.peer_addr().map_or(dst.ip(), |a| a.ip());
    let plan = match route::plan(&snapshot, &route, dst, src, sni.as_deref()) {
        Ok(plan) => plan,
        Err(flags) => {
            debug!("outbound: {dst}: refused ({flags})");
            super::refused(&ctx, &parties.tcp(None, declared, flags));
            return;
        }
    };
    if plan.service.is_some() {
        parties.service = plan.service.clone();
    }
    let (upstream_addr, workload): (SocketAddr, Option<Arc<Workload>>) =
        (plan.addr, plan.workload.clone());
    if let Some((tls, policy, t)) = mesh {
        let decision = policy.decide(&t, upstream_addr.ip(), workload.as_deref());
        if !matches!(decision, Decision::Plain) {
            let labels = parties.tcp(workload.as_deref(), declared, "-");
            let out = OutboundTls {
                tls,
                policy,
                decision,
                upstream: upstream_addr,
                workload,
                pipe: plan.pipe_policy(&ctx.metrics, &labels),
            };
            return secure::outbound(ctx, snapshot, downstream, parties, declared, out).await;
        }
        // Plaintext to this endpoint: HTTP stays on it too.
        http_upstream = Upstream::Fixed(upstream_addr, workload.clone());
        if declared.is_http() {
            let conn = http::Connection {
                upstream: http_upstream,
                inbound: false,
                protocol: declared,
                parties,
            };
            return http::serve(ctx, downstream, conn).await;
        }
    }
    let (upstream, (protocol, _sni)) = tokio::join!(
        connect(
            upstream_addr,
            plan.connect_timeout(Ctx::connect_timeout(&snapshot)),
            false
        ),
        sniff::protocol(&downstream, declared, Ctx::detect_timeout(&snapshot)),
    );
    plan.connected(&upstream);
    if protocol.is_http() {
        drop(upstream);
        let conn = http::Connection {
            upstream: http_upstream,
            inbound: false,
            protocol,
            parties,
        };
        return http::serve(ctx, downstream, conn).await;
    }
    let upstream = match upstream {
        Ok(s) => s,
        Err(e) => {
            debug!("outbound: {dst} via {upstream_addr}: {e}");
            super::refused(&ctx, &parties.tcp(workload.as_deref(), protocol, "UF"));
            return;
        }
    };
    let labels = parties.tcp(workload.as_deref(), protocol, "-");
    let policy = plan.pipe_policy(&ctx.metrics, &labels);
    super::pipe_with(
        &ctx,
        &snapshot,
        &downstream,
        &upstream,
        &labels,
        protocol,
        &policy,
    )
    .await;
}
