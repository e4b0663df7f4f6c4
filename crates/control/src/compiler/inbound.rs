//! The proxy's inbound side: the container ports its services target (plus those its
//! PeerAuthentication names) and the mTLS mode of each.

use ferry_proto::config::{Inbound, InboundPort};
use ferry_proto::protocol::Protocol;
use std::collections::BTreeMap;

use super::Context;
use super::mtls::policies_for;
use super::scope::id;
use crate::registry::ServiceEntry;

/// Builds the inbound side of the proxy whose pod is `pod` at `ip` in the context's namespace.
pub fn build(
    cx: &mut Context<'_>,
    pod: &str,
    ip: Option<std::net::IpAddr>,
    candidates: &[&ServiceEntry],
) -> Inbound {
    let policy = policies_for(
        &cx.peer_authentications,
        &cx.root_ns,
        &cx.client_ns,
        &cx.client_labels,
    );
    let mut warnings = Vec::new();
    for (winner, loser) in &policy.shadowed {
        warnings.push(format!(
            "PeerAuthentications {} and {} both apply to pod {}/{pod} at the same scope; {} is used",
            id(winner),
            id(loser),
            cx.client_ns,
            id(winner)
        ));
    }
    let (mode, source) = policy.mode();
    let port_modes = policy.port_modes();

    let mut ports: BTreeMap<u16, InboundPort> = BTreeMap::new();
    for svc in candidates.iter().copied() {
        let mine = svc.endpoints.iter().any(|ep| {
            (ep.pod == pod && ep.namespace == cx.client_ns) || (ip.is_some() && Some(ep.ip) == ip)
        });
        if !mine {
            continue;
        }
        for p in &svc.ports {
            let entry = ports.entry(p.target_port).or_insert_with(|| InboundPort {
                port: p.target_port,
                protocol: Protocol::of_port(&p.name, p.app_protocol.as_deref()),
                mtls: port_modes.get(&p.target_port).copied().unwrap_or(mode),
                services: Vec::new(),
            });
            entry.services.push(format!("{}:{}", svc.fqdn, p.port));
        }
    }
    for (port, m) in &port_modes {
        ports.entry(*port).or_insert_with(|| InboundPort {
            port: *port,
            protocol: Protocol::Unknown,
            mtls: *m,
            services: Vec::new(),
        });
    }
    for p in ports.values_mut() {
        p.services.sort();
        p.services.dedup();
    }
    for w in warnings {
        cx.warn(w);
    }
    Inbound {
        mtls: mode,
        peer_authentication: source,
        ports: ports.into_values().collect(),
    }
}
