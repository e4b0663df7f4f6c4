//! Inbound connections: a peer dialled this pod, the redirect rules brought the connection
//! to the proxy. Deliver it to the application on the address the peer dialled (the pod
//! IP, as Istio has done since 1.10) from source 127.0.0.6, and report with
//! `reporter="destination"`; the peer's workload comes from the endpoint it connects from.
//! The port's PeerAuthentication mode decides whether mutual TLS is required (STRICT),
//! accepted beside plaintext (PERMISSIVE) or not used (DISABLE); mutual TLS is terminated by
//! [`super::secure`], where the peer's identity and metadata come from the handshake.

use super::connect::connect;
use super::{Ctx, secure, sniff};
use crate::config::MtlsMode;
use crate::config::Protocol;
use crate::http::{self, Upstream};
use crate::telemetry::labels::{Parties, Reporter, Value};
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
    let declared = target.as_ref().map_or(Protocol::Unknown, |t| t.protocol);
    let parties = Parties {
        reporter: Reporter::Destination,
        me: snapshot.me.clone(),
        peer: snapshot.workload_at(peer.ip()),
        service: target.as_ref().map(|t| t.service.clone()),
        passthrough_name: if dst.is_ipv4() {
            "InboundPassthroughClusterIpv4"
        } else {
            "InboundPassthroughClusterIpv6"
        },
        cluster: snapshot.config.identity.cluster.clone(),
        trust_domain: snapshot.config.identity.trust_domain.clone(),
        // Plaintext until mutual TLS arrives.
        security: Value(Arc::from("none")),
        principals: None,
    };
    // PeerAuthentication of the port: DISABLE is plaintext as dialled; STRICT requires a
    // mesh client's TLS; PERMISSIVE takes either (peeking only when the proxy has an
    // identity, so a proxy without one pays nothing).
    let mode = snapshot.config.inbound.mode_of(dst.port());
    match (&ctx.tls, mode) {
        (_, MtlsMode::Disable) | (None, MtlsMode::Permissive) => {}
        (None, MtlsMode::Strict) => {
            debug!(
                "inbound: {peer} to STRICT port {}: this proxy has no certificate",
                dst.port()
            );
            ctx.metrics.identity.refuse("no_certificate");
            return;
        }
        (Some(tls), MtlsMode::Strict | MtlsMode::Permissive) => {
            let wait = if mode == MtlsMode::Strict {
                Ctx::connect_timeout(&snapshot)
            } else {
                Ctx::detect_timeout(&snapshot)
            };
            if sniff::mesh_tls(&downstream, wait).await {
                let tls = tls.clone();
                return secure::inbound(
                    ctx, snapshot, downstream, dst, peer, parties, declared, &tls,
                )
                .await;
            }
            if mode == MtlsMode::Strict {
                debug!(
                    "inbound: {peer} to STRICT port {}: not mutual TLS, refused",
                    dst.port()
                );
                ctx.metrics.identity.refuse("plaintext");
                return;
            }
        }
    }
    let http_conn = |protocol| http::Connection {
        upstream: Upstream::Fixed(dst, Some(snapshot.me.clone())),
        inbound: true,
        protocol,
        parties: parties.clone(),
        target: None,
    };
    if declared.is_http() {
        return http::serve(ctx.clone(), downstream, http_conn(declared)).await;
    }
    let (upstream, (protocol, _sni)) = tokio::join!(
        connect(dst, Ctx::connect_timeout(&snapshot), true),
        sniff::protocol(&downstream, declared, Ctx::detect_timeout(&snapshot)),
    );
    if protocol.is_http() {
        drop(upstream);
        return http::serve(ctx.clone(), downstream, http_conn(protocol)).await;
    }
    let me = Some(&*snapshot.me);
    let upstream = match upstream {
        Ok(s) => s,
        Err(e) => {
            debug!("inbound: delivering to {dst}: {e}");
            super::refused(&ctx, &parties.tcp(me, protocol, "UF"));
            return;
        }
    };
    let labels = parties.tcp(me, protocol, "-");
    super::pipe(&ctx, &snapshot, &downstream, &upstream, &labels, protocol).await;
}
