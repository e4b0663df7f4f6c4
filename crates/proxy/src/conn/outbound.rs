//! Outbound connections: the application dialled an address, the redirect rules brought
//! the connection to the proxy. Route it (service cluster IP -> one of its endpoints,
//! endpoint or unknown address -> exactly the address dialled), connect, detect the
//! protocol, forward, and report with `reporter="source"`.

use super::connect::connect;
use super::{Ctx, sniff};
use crate::config::Protocol;
use crate::config::snapshot::{Outbound, ServiceName, Workload};
use crate::telemetry::labels::{Peers, Reporter, Side, TcpLabels, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tracing::debug;

/// Where the connection goes, with what metrics call the destination.
pub(crate) struct Plan {
    pub upstream: SocketAddr,
    pub service: Option<Arc<ServiceName>>,
    pub workload: Option<Arc<Workload>>,
    pub declared: Protocol,
    pub passthrough_name: &'static str,
}

fn plan(route: Outbound, dst: SocketAddr) -> Result<Plan, &'static str> {
    match route {
        Outbound::Service(t) => {
            let ep = t.pick().ok_or("UH")?;
            Ok(Plan {
                upstream: SocketAddr::new(ep.ip, t.target_port),
                service: Some(t.service.clone()),
                workload: Some(ep.workload.clone()),
                declared: t.protocol,
                passthrough_name: "",
            })
        }
        Outbound::Endpoint(t, workload) => Ok(Plan {
            upstream: dst,
            service: Some(t.service.clone()),
            workload,
            declared: t.protocol,
            passthrough_name: "",
        }),
        Outbound::Passthrough => Ok(Plan {
            upstream: dst,
            service: None,
            workload: None,
            declared: Protocol::Unknown,
            passthrough_name: "PassthroughCluster",
        }),
    }
}

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
    let me = snapshot.me.clone();
    let cluster = snapshot.config.identity.cluster.clone();
    let trust_domain = snapshot.config.identity.trust_domain.clone();
    let labels_for = |plan: &Plan, protocol: Protocol, flags: &str| TcpLabels {
        peers: Peers::new(
            Reporter::Source,
            Side {
                workload: Some(&me),
                cluster: &cluster,
            },
            Side {
                workload: plan.workload.as_deref(),
                cluster: &cluster,
            },
            plan.service.as_deref(),
            plan.passthrough_name,
            &trust_domain,
            protocol.metric_label(),
        ),
        response_flags: Value::or_unknown(flags),
        connection_security_policy: Value::unknown(),
    };
    let plan = match plan(snapshot.outbound(dst), dst) {
        Ok(plan) => plan,
        Err(flags) => {
            debug!("outbound: {dst}: no healthy upstream");
            let unrouted = Plan {
                upstream: dst,
                service: None,
                workload: None,
                declared: Protocol::Tcp,
                passthrough_name: "BlackHoleCluster",
            };
            super::refused(&ctx, &labels_for(&unrouted, Protocol::Tcp, flags));
            return;
        }
    };
    let (upstream, (protocol, _sni)) = tokio::join!(
        connect(plan.upstream, super::Ctx::connect_timeout(&snapshot), false),
        sniff::protocol(
            &downstream,
            plan.declared,
            super::Ctx::detect_timeout(&snapshot)
        ),
    );
    let upstream = match upstream {
        Ok(s) => s,
        Err(e) => {
            debug!("outbound: {dst} via {}: {e}", plan.upstream);
            super::refused(&ctx, &labels_for(&plan, protocol, "UF"));
            return;
        }
    };
    let labels = labels_for(&plan, protocol, "-");
    super::pipe(&ctx, &snapshot, &downstream, &upstream, &labels, protocol).await;
}
