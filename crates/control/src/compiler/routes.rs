//! VirtualServices: which one binds a host (one per host: the most specific host pattern,
//! then the oldest; the others are reported), and its rules for one port, in order, with
//! destinations resolved to fully qualified hosts and cluster names.

use ferry_model::IstioResource;
use ferry_model::istio::VirtualServiceSpec;
use ferry_model::istio::virtual_service::{Delegate, Destination, HttpRoute, TcpRoute, TlsRoute};
use ferry_model::resolve_host;
use ferry_proto::config::{
    ClusterRef, HttpRouteRule, HttpWeightedCluster, Mirror, TcpRouteRule, TlsRouteRule,
    WeightedCluster, cluster_name,
};
use ferry_proto::protocol::Protocol;

use super::Context;
use super::delegate;
use super::scope::{exported_to, host_rank, id, namespace};

/// A VirtualService.
pub type Vs<'a> = &'a IstioResource<VirtualServiceSpec>;

/// The VirtualService that binds `host` for the proxy's sidecar, reporting the others that
/// also name it.
pub fn bind<'a>(cx: &mut Context<'a>, host: &str) -> Option<Vs<'a>> {
    let mut best: Option<((u8, usize), Vs<'a>)> = None;
    let mut rivals = Vec::new();
    for vs in cx.virtual_services.iter().copied() {
        let ns = namespace(&vs.metadata);
        let for_mesh = vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh");
        if !for_mesh || !exported_to(&vs.spec.export_to, ns, &cx.client_ns) {
            continue;
        }
        let rank = vs
            .spec
            .hosts
            .iter()
            .filter_map(|h| host_rank(&resolve_host(h, ns, &cx.domain), host))
            .min();
        let Some(rank) = rank else { continue };
        match &best {
            Some((r, _)) if *r == rank => rivals.push(vs),
            Some((r, _)) if *r < rank => {}
            _ => {
                rivals.clear();
                best = Some((rank, vs));
            }
        }
    }
    let (_, winner) = best?;
    for rival in rivals {
        cx.warn(format!(
            "VirtualServices {} and {} both bind host {host}; {} is used",
            id(winner),
            id(rival),
            id(winner)
        ));
    }
    Some(winner)
}

/// The service port rules are compiled for.
#[derive(Debug, Clone, Copy)]
pub struct Port {
    /// Port number.
    pub number: u16,
    /// Its protocol.
    pub protocol: Protocol,
}

/// The rules of `vs` for one port: HTTP rules on HTTP and undeclared ports, TLS rules on TLS
/// and undeclared ports, TCP rules on every port that is not HTTP.
pub fn rules(
    cx: &mut Context<'_>,
    vs: Vs<'_>,
    port: &Port,
) -> (Vec<HttpRouteRule>, Vec<TcpRouteRule>, Vec<TlsRouteRule>) {
    let ns = namespace(&vs.metadata).to_string();
    let p = port.protocol;
    let mut http = Vec::new();
    let mut tcp = Vec::new();
    let mut tls = Vec::new();
    if p.is_http() || p == Protocol::Unknown {
        for rule in &vs.spec.http {
            let Some(target) = &rule.delegate else {
                http.extend(http_rule(cx, &ns, rule, port));
                continue;
            };
            for merged in delegated(cx, vs, rule, target) {
                http.extend(http_rule(cx, &ns, &merged, port));
            }
        }
    }
    if !p.is_http() {
        for rule in &vs.spec.tcp {
            if let Some(r) = tcp_rule(cx, &ns, rule, port) {
                tcp.push(r);
            }
        }
    }
    if p == Protocol::Tls || p == Protocol::Unknown {
        for rule in &vs.spec.tls {
            if let Some(r) = tls_rule(cx, &ns, rule, port) {
                tls.push(r);
            }
        }
    }
    (http, tcp, tls)
}

/// Keeps the match entries that apply to `port`; `None` when the rule had entries and none
/// applies (the rule is then not for this port).
fn for_port<M: Clone>(
    matches: &[M],
    port: u16,
    port_of: impl Fn(&M) -> Option<u32>,
) -> Option<Vec<M>> {
    if matches.is_empty() {
        return Some(Vec::new());
    }
    let kept: Vec<M> = matches
        .iter()
        .filter(|m| port_of(m).is_none_or(|p| p == u32::from(port)))
        .cloned()
        .collect();
    (!kept.is_empty()).then_some(kept)
}

/// Resolves a destination against the VirtualService's namespace.
fn resolve(
    cx: &mut Context<'_>,
    ns: &str,
    dest: Option<&Destination>,
    port: &Port,
) -> Option<ClusterRef> {
    let dest = dest?;
    let host = resolve_host(dest.host.as_deref()?, ns, &cx.domain);
    let number = dest
        .port
        .as_ref()
        .and_then(|p| p.number)
        .and_then(|n| u16::try_from(n).ok())
        .or_else(|| cx.single_port(&host))
        .unwrap_or(port.number);
    let subset = dest.subset.clone();
    let cluster = cluster_name(number, subset.as_deref(), &host);
    cx.need(&host, number, subset.as_deref());
    Some(ClusterRef {
        host,
        subset,
        port: number,
        cluster,
    })
}

/// A single destination takes all traffic whatever its weight; otherwise weights are kept
/// (negative ones as 0).
fn weight(w: Option<i32>, count: usize) -> u32 {
    if count == 1 {
        100
    } else {
        w.and_then(|w| u32::try_from(w).ok()).unwrap_or(0)
    }
}

/// The rules that replace the root rule `rule` of `vs`, which delegates to `target`: the
/// delegate VirtualService's HTTP rules merged with it, destination hosts already qualified
/// in each VirtualService's own namespace. A missing or invisible delegate drops the rule.
fn delegated(
    cx: &mut Context<'_>,
    vs: Vs<'_>,
    rule: &HttpRoute,
    target: &Delegate,
) -> Vec<HttpRoute> {
    let root_ns = namespace(&vs.metadata);
    let name = target.name.as_deref().unwrap_or_default();
    let ns = target.namespace.as_deref().unwrap_or(root_ns);
    let found = cx
        .virtual_services
        .iter()
        .copied()
        .find(|d| d.metadata.name.as_deref() == Some(name) && namespace(&d.metadata) == ns);
    let Some(delegate) = found.filter(|d| d.spec.hosts.is_empty()) else {
        cx.warn(format!(
            "VirtualService {}: delegate {ns}/{name} does not exist or is not a delegate \
             (it must have no hosts); the rule is skipped",
            id(vs)
        ));
        return Vec::new();
    };
    if !exported_to(&delegate.spec.export_to, ns, root_ns) {
        cx.warn(format!(
            "VirtualService {}: delegate {ns}/{name} is not exported to namespace {root_ns}; \
             the rule is skipped",
            id(vs)
        ));
        return Vec::new();
    }
    let mut root = rule.clone();
    delegate::qualify_hosts(&mut root, root_ns, &cx.domain);
    let subs: Vec<HttpRoute> = delegate
        .spec
        .http
        .iter()
        .map(|r| {
            let mut r = r.clone();
            delegate::qualify_hosts(&mut r, ns, &cx.domain);
            r
        })
        .collect();
    let merged = delegate::merge_routes(&root, &subs);
    if merged.len() < subs.len() {
        cx.warn(format!(
            "VirtualService {ns}/{name}: {} of its rules conflict with the matches of the \
             rule of {} that delegates to it and are skipped",
            subs.len() - merged.len(),
            id(vs)
        ));
    }
    merged
}

fn http_rule(
    cx: &mut Context<'_>,
    ns: &str,
    rule: &HttpRoute,
    port: &Port,
) -> Option<HttpRouteRule> {
    let matches = for_port(&rule.matches, port.number, |m| m.port)?;
    let count = rule.route.len();
    let route = rule
        .route
        .iter()
        .filter_map(|d| {
            Some(HttpWeightedCluster {
                destination: resolve(cx, ns, d.destination.as_ref(), port)?,
                weight: weight(d.weight, count),
                headers: d.headers.clone(),
            })
        })
        .collect();
    let mut mirrors = Vec::new();
    if let Some(dest) = resolve(cx, ns, rule.mirror.as_ref(), port) {
        let percentage = rule
            .mirror_percentage
            .as_ref()
            .and_then(|p| p.value)
            .or(rule.mirror_percent.map(f64::from))
            .unwrap_or(100.0);
        mirrors.push(Mirror {
            destination: dest,
            percentage,
        });
    }
    for m in &rule.mirrors {
        if let Some(dest) = resolve(cx, ns, m.destination.as_ref(), port) {
            let percentage = m.percentage.as_ref().and_then(|p| p.value).unwrap_or(100.0);
            mirrors.push(Mirror {
                destination: dest,
                percentage,
            });
        }
    }
    Some(HttpRouteRule {
        name: rule.name.clone(),
        matches,
        route,
        redirect: rule.redirect.clone(),
        direct_response: rule.direct_response.clone(),
        rewrite: rule.rewrite.clone(),
        timeout: rule.timeout.clone(),
        retries: rule.retries.clone(),
        fault: rule.fault.clone(),
        mirrors,
        cors_policy: rule.cors_policy.clone(),
        headers: rule.headers.clone(),
    })
}

fn l4_route(
    cx: &mut Context<'_>,
    ns: &str,
    route: &[ferry_model::istio::virtual_service::RouteDestination],
    port: &Port,
) -> Vec<WeightedCluster> {
    let count = route.len();
    route
        .iter()
        .filter_map(|d| {
            Some(WeightedCluster {
                destination: resolve(cx, ns, d.destination.as_ref(), port)?,
                weight: weight(d.weight, count),
            })
        })
        .collect()
}

fn tcp_rule(cx: &mut Context<'_>, ns: &str, rule: &TcpRoute, port: &Port) -> Option<TcpRouteRule> {
    let matches = for_port(&rule.matches, port.number, |m| m.port)?;
    Some(TcpRouteRule {
        matches,
        route: l4_route(cx, ns, &rule.route, port),
    })
}

fn tls_rule(cx: &mut Context<'_>, ns: &str, rule: &TlsRoute, port: &Port) -> Option<TlsRouteRule> {
    let matches = for_port(&rule.matches, port.number, |m| m.port)?;
    Some(TlsRouteRule {
        matches,
        route: l4_route(cx, ns, &rule.route, port),
    })
}
