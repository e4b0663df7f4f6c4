//! Inbound connections: a peer dialled this pod, the redirect rules brought the connection
//! to the proxy. Deliver it to the application on the address the peer dialled (the pod
//! IP, as Istio has done since 1.10) from source 127.0.0.6, and report with
//! `reporter="destination"`; the peer's workload comes from the endpoint it connects from.

use super::connect::connect;
use super::{Ctx, sniff};
use crate::config::Protocol;
use crate::telemetry::labels::{Peers, Reporter, Side, TcpLabels, Value};
use std::sync::Arc;
use tokio::net::TcpStream;
use tracing::debug;

/// Handles one inbound connection to its end.
pub async fn handle(ctx: Arc<Ctx>, downstream: TcpStream) {
    let _ = downstream.set_nodelay(true);
    let (dst, peer) = match (
        ctx.orig_dst.original_dst(&downstream),
        downstream.peer_addr(),
    ) {
        (Ok(dst), Ok(peer)) => (dst, peer),
        (Err(e), _) | (_, Err(e)) => {
            debug!("inbound: no original destination or peer: {e}");
            return;
        }
    };
    if downstream.local_addr().is_ok_and(|local| local == dst) {
        debug!("inbound: refusing a connection to the proxy itself ({dst})");
        return;
    }
    let snapshot = ctx.config.load_full();
    let target = snapshot.inbound(dst);
    let source = snapshot.workload_at(peer.ip());
    let declared = target.as_ref().map_or(Protocol::Unknown, |t| t.protocol);
    let (upstream, (protocol, _sni)) = tokio::join!(
        connect(dst, super::Ctx::connect_timeout(&snapshot), true),
        sniff::protocol(&downstream, declared, super::Ctx::detect_timeout(&snapshot)),
    );
    let cluster = &snapshot.config.identity.cluster;
    let passthrough = if dst.is_ipv4() {
        "InboundPassthroughClusterIpv4"
    } else {
        "InboundPassthroughClusterIpv6"
    };
    let labels = |flags: &str| TcpLabels {
        peers: Peers::new(
            Reporter::Destination,
            Side {
                workload: source.as_deref(),
                cluster,
            },
            Side {
                workload: Some(&snapshot.me),
                cluster,
            },
            target.as_ref().map(|t| &*t.service),
            passthrough,
            &snapshot.config.identity.trust_domain,
            protocol.metric_label(),
        ),
        response_flags: Value::or_unknown(flags),
        // Plaintext until mutual TLS arrives.
        connection_security_policy: Value(Arc::from("none")),
    };
    let upstream = match upstream {
        Ok(s) => s,
        Err(e) => {
            debug!("inbound: delivering to {dst}: {e}");
            super::refused(&ctx, &labels("UF"));
            return;
        }
    };
    let labels = labels("-");
    super::pipe(&ctx, &snapshot, &downstream, &upstream, &labels, protocol).await;
}
