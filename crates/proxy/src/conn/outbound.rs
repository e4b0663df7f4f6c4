//! Outbound connections: the application dialled an address, the redirect rules brought
//! the connection to the proxy. Route it (service cluster IP -> one of its endpoints,
//! endpoint or unknown address -> exactly the address dialled), detect the protocol,
//! forward (opaque TCP, Redis with telemetry, or HTTP request by request), and report with
//! `reporter="source"`. Toward an endpoint the configuration marks for mutual TLS (or a
//! DestinationRule's TLS), an opaque connection is forwarded over TLS ([`super::secure`]);
//! HTTP decides TLS per request, for the endpoint each request goes to.

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
    let (http_upstream, target) = match &route {
        Outbound::Service(t) => (Upstream::Balanced(t.clone()), Some(t.clone())),
        Outbound::Endpoint(t, w) => (Upstream::Fixed(dst, w.clone()), Some(t.clone())),
        Outbound::Passthrough => (Upstream::Fixed(dst, None), None),
    };
    // HTTP is routed and balanced per request (`crate::http`), which also decides mutual TLS
    // per request, for the endpoint each one goes to.
    let http_conn = |protocol, parties| http::Connection {
        upstream: http_upstream.clone(),
        inbound: false,
        protocol,
        parties,
        target: target.clone(),
    };
    if declared.is_http() {
        return http::serve(ctx.clone(), downstream, http_conn(declared, parties)).await;
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
    let detect = Ctx::detect_timeout(&snapshot);
    // Toward an endpoint that gets TLS (mutual TLS toward a sidecar, or a DestinationRule's).
    let secured = match (&ctx.tls, &target) {
        (Some(tls), Some(t)) => {
            let policy = tls.policy(&snapshot);
            match policy.decide(t, upstream_addr.ip(), workload.as_deref()) {
                Decision::Plain => None,
                decision => Some((tls.clone(), policy, decision)),
            }
        }
        _ => None,
    };
    if let Some((tls, policy, decision)) = secured {
        let timeout = plan.connect_timeout(Ctx::connect_timeout(&snapshot));
        let frame = policy.metadata_frame.clone();
        let (secured, (protocol, _sni)) = tokio::join!(
            secure::originate(&tls, &frame, &decision, upstream_addr, timeout),
            sniff::protocol(&downstream, declared, detect),
        );
        if protocol.is_http() {
            drop(secured);
            return http::serve(ctx.clone(), downstream, http_conn(protocol, parties)).await;
        }
        let secured = match secured {
            Ok(s) => {
                plan.connected(Some(s.stream.get_ref().0));
                s
            }
            Err(refusal) => {
                debug!("outbound: {dst} via {upstream_addr}: {refusal}");
                plan.connected(None);
                let labels = parties.tcp(workload.as_deref(), protocol, "UF");
                return secure::refused(&ctx, &labels, &refusal);
            }
        };
        let labels = parties.tcp(workload.as_deref(), protocol, "-");
        let out = OutboundTls {
            workload,
            pipe: plan.pipe_policy(&ctx.metrics, &labels),
        };
        return secure::outbound(ctx, snapshot, downstream, parties, protocol, out, secured).await;
    }
    let (upstream, (protocol, _sni)) = tokio::join!(
        connect(
            upstream_addr,
            plan.connect_timeout(Ctx::connect_timeout(&snapshot)),
            false
        ),
        sniff::protocol(&downstream, declared, detect),
    );
    plan.connected(upstream.as_ref().ok());
    if protocol.is_http() {
        drop(upstream);
        return http::serve(ctx.clone(), downstream, http_conn(protocol, parties)).await;
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
