//! Outbound connections: the application dialled an address, the redirect rules brought
//! the connection to the proxy. Route it (service cluster IP -> one of its endpoints,
//! endpoint or unknown address -> exactly the address dialled), detect the protocol,
//! forward (opaque TCP, Redis with telemetry, or HTTP request by request), and report with
//! `reporter="source"`.

use super::connect::connect;
use super::{Ctx, sniff};
use crate::config::Protocol;
use crate::config::snapshot::{Outbound, Workload};
use crate::http::{self, Upstream};
use crate::telemetry::labels::{Parties, Reporter, Value};
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
    let parties = Parties {
        reporter: Reporter::Source,
        me: snapshot.me.clone(),
        peer: None,
        service,
        passthrough_name,
        cluster: snapshot.config.identity.cluster.clone(),
        trust_domain: snapshot.config.identity.trust_domain.clone(),
        security: Value::unknown(),
    };
    let http_upstream = match &route {
        Outbound::Service(t) => Upstream::Balanced(t.clone()),
        Outbound::Endpoint(_, w) => Upstream::Fixed(dst, w.clone()),
        Outbound::Passthrough => Upstream::Fixed(dst, None),
    };
    if declared.is_http() {
        let conn = http::Connection {
            upstream: http_upstream,
            inbound: false,
            protocol: declared,
            parties,
        };
        return http::serve(ctx, downstream, conn).await;
    }
    // Opaque protocols are balanced per connection.
    let (upstream_addr, workload): (SocketAddr, Option<Arc<Workload>>) = match &route {
        Outbound::Service(t) => match t.pick() {
            Some(ep) => (
                SocketAddr::new(ep.ip, t.target_port),
                Some(ep.workload.clone()),
            ),
            None => {
                debug!("outbound: {dst}: no healthy upstream");
                super::refused(&ctx, &parties.tcp(None, declared, "UH"));
                return;
            }
        },
        Outbound::Endpoint(_, w) => (dst, w.clone()),
        Outbound::Passthrough => (dst, None),
    };
    let (upstream, (protocol, _sni)) = tokio::join!(
        connect(upstream_addr, Ctx::connect_timeout(&snapshot), false),
        sniff::protocol(&downstream, declared, Ctx::detect_timeout(&snapshot)),
    );
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
    super::pipe(&ctx, &snapshot, &downstream, &upstream, &labels, protocol).await;
}
