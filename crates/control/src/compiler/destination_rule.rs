//! DestinationRules: which one applies to a host for a given client (client namespace, then
//! the service's namespace, then the root namespace; the most specific host within a
//! namespace; the oldest among equals), and the effective policy of one cluster (a subset
//! overrides the rule field by field; port-level settings replace the level they sit in and
//! inherit nothing from it).

use ferry_model::IstioResource;
use ferry_model::istio::DestinationRuleSpec;
use ferry_model::istio::destination_rule::{
    ClientTlsSettings, ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection, Subset,
    TrafficPolicy,
};
use ferry_model::resolve_host;

use super::Context;
use super::scope::{exported_to, host_rank, id, namespace, selects};

/// A DestinationRule in force for a host.
pub type Rule<'a> = &'a IstioResource<DestinationRuleSpec>;

/// The rule for `host` (whose service lives in `service_ns`) as seen by the proxy.
pub fn select<'a>(cx: &mut Context<'a>, host: &str, service_ns: &str) -> Option<Rule<'a>> {
    let client_ns = cx.client_ns.clone();
    let root_ns = cx.root_ns.clone();
    let mut seen = Vec::new();
    for scope in [client_ns.as_str(), service_ns, root_ns.as_str()] {
        if seen.contains(&scope) {
            continue;
        }
        seen.push(scope);
        let mut best: Option<((u8, usize), Rule<'a>)> = None;
        let mut rivals = Vec::new();
        for dr in cx.destination_rules.iter().copied() {
            let dr_ns = namespace(&dr.metadata);
            if dr_ns != scope || !exported_to(&dr.spec.export_to, dr_ns, &cx.client_ns) {
                continue;
            }
            if let Some(sel) = &dr.spec.workload_selector
                && (dr_ns != cx.client_ns || !selects(&sel.match_labels, &cx.client_labels))
            {
                continue;
            }
            let Some(pattern) = dr.spec.host.as_deref() else {
                continue;
            };
            let pattern = resolve_host(pattern, dr_ns, &cx.domain);
            let Some(rank) = host_rank(&pattern, host) else {
                continue;
            };
            match &best {
                Some((r, _)) if *r == rank => rivals.push(dr),
                Some((r, _)) if *r < rank => {}
                _ => {
                    rivals.clear();
                    best = Some((rank, dr));
                }
            }
        }
        if let Some((_, winner)) = best {
            for rival in rivals {
                cx.warn(format!(
                    "DestinationRules {} and {} both apply to host {host} in namespace {scope}; {} is used",
                    id(winner),
                    id(rival),
                    id(winner)
                ));
            }
            return Some(winner);
        }
    }
    None
}

/// The subset named `name` in a rule.
pub fn subset<'a>(rule: Option<Rule<'a>>, name: &str) -> Option<&'a Subset> {
    rule?
        .spec
        .subsets
        .iter()
        .find(|s| s.name.as_deref() == Some(name))
}

/// The four policy components of one cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    /// Load balancing.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection pool.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Outlier detection.
    pub outlier_detection: Option<OutlierDetection>,
    /// Client TLS.
    pub tls: Option<ClientTlsSettings>,
}

/// The components of `policy` for `port`: its port-level entry when one names the port
/// (omitted fields stay unset, not inherited), else its top-level fields.
fn at_port(policy: &TrafficPolicy, port: u16) -> Policy {
    let level = policy
        .port_level_settings
        .iter()
        .find(|p| p.port.as_ref().and_then(|p| p.number) == Some(u32::from(port)));
    match level {
        Some(p) => Policy {
            load_balancer: p.load_balancer.clone(),
            connection_pool: p.connection_pool.clone(),
            outlier_detection: p.outlier_detection.clone(),
            tls: p.tls.clone(),
        },
        None => Policy {
            load_balancer: policy.load_balancer.clone(),
            connection_pool: policy.connection_pool.clone(),
            outlier_detection: policy.outlier_detection.clone(),
            tls: policy.tls.clone(),
        },
    }
}

/// The effective policy of a cluster: the rule's, then the subset's overriding field by field.
pub fn effective(
    rule: Option<&TrafficPolicy>,
    subset: Option<&TrafficPolicy>,
    port: u16,
) -> Policy {
    let mut out = rule.map(|p| at_port(p, port)).unwrap_or_default();
    if let Some(s) = subset.map(|p| at_port(p, port)) {
        out.load_balancer = s.load_balancer.or(out.load_balancer);
        out.connection_pool = s.connection_pool.or(out.connection_pool);
        out.outlier_detection = s.outlier_detection.or(out.outlier_detection);
        out.tls = s.tls.or(out.tls);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::istio::PortSelector;
    use ferry_model::istio::destination_rule::{PortTrafficPolicy, SimpleLb, TlsMode};

    fn lb(simple: SimpleLb) -> Option<LoadBalancerSettings> {
        Some(LoadBalancerSettings {
            simple: Some(simple),
            ..Default::default()
        })
    }

    fn tls(mode: TlsMode) -> Option<ClientTlsSettings> {
        Some(ClientTlsSettings {
            mode: Some(mode),
            ..Default::default()
        })
    }

    #[test]
    fn port_level_does_not_inherit_and_subsets_override() {
        let rule = TrafficPolicy {
            load_balancer: lb(SimpleLb::Random),
            tls: tls(TlsMode::IstioMutual),
            port_level_settings: vec![PortTrafficPolicy {
                port: Some(PortSelector { number: Some(80) }),
                load_balancer: lb(SimpleLb::RoundRobin),
                ..Default::default()
            }],
            ..Default::default()
        };
        let sub = TrafficPolicy {
            tls: tls(TlsMode::Disable),
            ..Default::default()
        };
        let cases = [
            // (subset?, port, lb, tls)
            (false, 80, lb(SimpleLb::RoundRobin), None),
            (false, 81, lb(SimpleLb::Random), tls(TlsMode::IstioMutual)),
            (true, 81, lb(SimpleLb::Random), tls(TlsMode::Disable)),
            (true, 80, lb(SimpleLb::RoundRobin), tls(TlsMode::Disable)),
        ];
        for (with_subset, port, want_lb, want_tls) in cases {
            let p = effective(Some(&rule), with_subset.then_some(&sub), port);
            assert_eq!(p.load_balancer, want_lb, "{with_subset} {port}");
            assert_eq!(p.tls, want_tls, "{with_subset} {port}");
        }
    }
}
