//! Clusters at run time: one per `outbound|<port>|<subset>|<host>` of the configuration,
//! holding the ready member endpoints and the policy state traffic shares — the balancer,
//! connection pool counters, outlier detection — and choosing an endpoint for each new TCP
//! connection or HTTP request.
//!
//! The state lives behind `Arc`s keyed by cluster name and endpoint address, so a new
//! configuration can take over the previous one's ([`UpstreamCluster::build`] with
//! `previous`): ejections and busy counts survive a configuration push.

use crate::balance::{Algorithm, HashOn, Hosts};
use crate::config::snapshot::{ServiceName, Workload};
use crate::config::{Cluster, Resolution};
use crate::resilience::outlier::{self, Detector, Event, HostHealth, OutlierConfig};
use crate::resilience::pool::{Limits, Pool};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// One member endpoint and its shared state.
#[derive(Debug)]
pub struct EndpointState {
    /// Pod IP and target port.
    pub addr: SocketAddr,
    /// Pod name.
    pub pod: String,
    /// Whether connections to it use Istio mTLS.
    pub mtls: bool,
    /// Who runs there (metrics labels).
    pub workload: Option<Arc<Workload>>,
    /// Requests (HTTP) or connections (TCP) in flight.
    active: AtomicU32,
    /// Outlier detection state.
    pub health: HostHealth,
}

/// A cluster ready for traffic.
#[derive(Debug)]
pub struct UpstreamCluster {
    /// `outbound|<port>|<subset>|<host>`.
    pub name: String,
    /// The host's service, for `destination_service` labels.
    pub service: Option<Arc<ServiceName>>,
    /// Connect to the address the client dialled (headless services, `PASSTHROUGH`).
    pub original_dst: bool,
    /// Ready members, in configuration order.
    pub endpoints: Vec<Arc<EndpointState>>,
    /// The balancing algorithm.
    pub algorithm: Algorithm,
    /// What consistent hashing hashes on.
    pub hash_on: Option<HashOn>,
    turn: AtomicUsize,
    /// Connection pool limits and counters.
    pub pool: Arc<Pool>,
    /// Outlier detection, when the DestinationRule asks for it.
    pub outlier: Option<Detector>,
    /// The configuration it was built from.
    pub config: Cluster,
}

/// The balancer's view of a cluster at one instant.
struct View<'a> {
    endpoints: &'a [Arc<EndpointState>],
    /// Ejections are ignored (none, or too few healthy endpoints).
    ignore_ejections: bool,
}

impl Hosts for View<'_> {
    fn count(&self) -> usize {
        self.endpoints.len()
    }
    fn usable(&self, i: usize) -> bool {
        self.ignore_ejections
            || self
                .endpoints
                .get(i)
                .is_some_and(|e| !e.health.is_ejected())
    }
    fn active(&self, i: usize) -> u32 {
        self.endpoints
            .get(i)
            .map_or(0, |e| e.active.load(Ordering::Relaxed))
    }
    fn all_usable(&self) -> bool {
        self.ignore_ejections
    }
}

/// An endpoint chosen for one connection or request; holds its place in the endpoint's
/// busy count until dropped.
#[derive(Debug)]
pub struct Picked {
    /// The cluster.
    pub cluster: Arc<UpstreamCluster>,
    /// The endpoint, or `None` when connecting to the dialled address of a passthrough
    /// cluster that does not list it.
    pub endpoint: Option<Arc<EndpointState>>,
    /// Where to connect.
    pub addr: SocketAddr,
}

impl Drop for Picked {
    fn drop(&mut self) {
        if let Some(e) = &self.endpoint {
            e.active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Picked {
    /// The workload at the chosen address, if known.
    pub fn workload(&self) -> Option<&Arc<Workload>> {
        self.endpoint.as_ref().and_then(|e| e.workload.as_ref())
    }

    /// Reports how the connection or request went, for outlier detection.
    pub fn report(&self, event: Event) {
        if let (Some(det), Some(e)) = (&self.cluster.outlier, &self.endpoint) {
            det.record(
                self.cluster.endpoints.len(),
                &e.health,
                event,
                outlier::now_ms(),
            );
        }
    }
}

/// What a pick needs to know about the traffic.
#[derive(Debug, Clone, Copy, Default)]
pub struct PickContext {
    /// The address the client dialled.
    pub dst: Option<SocketAddr>,
    /// The client dialled one pod of a headless service (not a service address).
    pub dialled_pod: bool,
    /// The consistent-hash key of the request or connection.
    pub hash: Option<u64>,
    /// An endpoint to avoid (a retry's previous one), when others are usable.
    pub avoid: Option<SocketAddr>,
}

impl UpstreamCluster {
    /// Builds a cluster from its configuration; `workloads` names the pods, `service` is the
    /// host's service, and `previous` (the same cluster in the configuration being replaced)
    /// hands over its state.
    pub fn build(
        config: &Cluster,
        workloads: &HashMap<IpAddr, Arc<Workload>>,
        service: Option<Arc<ServiceName>>,
        previous: Option<&UpstreamCluster>,
    ) -> UpstreamCluster {
        let old: HashMap<SocketAddr, &Arc<EndpointState>> = previous
            .map(|p| p.endpoints.iter().map(|e| (e.addr, e)).collect())
            .unwrap_or_default();
        let endpoints: Vec<Arc<EndpointState>> = config
            .endpoints
            .iter()
            .filter(|ep| ep.ready)
            .map(|ep| {
                let addr = SocketAddr::new(ep.ip, ep.port);
                let workload = workloads.get(&ep.ip).cloned();
                match old.get(&addr) {
                    Some(prev) if prev.mtls == ep.mtls && prev.pod == ep.pod => (*prev).clone(),
                    _ => Arc::new(EndpointState {
                        addr,
                        pod: ep.pod.clone(),
                        mtls: ep.mtls,
                        workload,
                        active: AtomicU32::new(0),
                        health: HostHealth::default(),
                    }),
                }
            })
            .collect();
        let keys: Vec<String> = endpoints.iter().map(|e| e.addr.to_string()).collect();
        let (algorithm, hash_on) = Algorithm::from_settings(&config.load_balancer, &keys);
        let limits = Limits::from_settings(config.connection_pool.as_ref());
        let pool = match previous {
            Some(p) if p.pool.limits == limits => p.pool.clone(),
            _ => Pool::new(limits),
        };
        let outlier = config.outlier_detection.as_ref().map(|od| {
            let ejected = endpoints.iter().filter(|e| e.health.is_ejected()).count();
            Detector::with_ejected(
                OutlierConfig::from_settings(od),
                u32::try_from(ejected).unwrap_or(u32::MAX),
            )
        });
        UpstreamCluster {
            name: config.name.clone(),
            service,
            original_dst: config.resolution == Resolution::OriginalDst
                || matches!(algorithm, Algorithm::Passthrough),
            endpoints,
            algorithm,
            hash_on,
            turn: AtomicUsize::new(0),
            pool,
            outlier,
            config: config.clone(),
        }
    }

    /// Chooses where a new connection or request goes; `None` when no endpoint is usable.
    pub fn pick(self: &Arc<Self>, cx: PickContext) -> Option<Picked> {
        if self.original_dst
            && let Some(dst) = cx.dst
        {
            if let Some(e) = self.endpoints.iter().find(|e| e.addr == dst) {
                return Some(self.take(e.clone()));
            }
            // A pod of a headless service routed to a subset it is not in: balance over the
            // subset. Anything else goes where it was dialled — a member that is not ready
            // (or not yet ready in this configuration) included: the client chose that pod.
            let member = self.config.endpoints.iter().any(|e| e.ip == dst.ip());
            if member || !cx.dialled_pod || self.endpoints.is_empty() {
                return Some(Picked {
                    cluster: self.clone(),
                    endpoint: None,
                    addr: dst,
                });
            }
        }
        // Without a dialled address (a mirror), a passthrough cluster balances too.
        let now = self.outlier.as_ref().map(|det| {
            let now = outlier::now_ms();
            det.sweep(self.endpoints.iter().map(|e| &e.health), now);
            now
        });
        let ignore_ejections = match (&self.outlier, now) {
            (Some(det), Some(_)) => det.ejected() == 0 || det.panicking(self.endpoints.len()),
            _ => true,
        };
        let view = View {
            endpoints: &self.endpoints,
            ignore_ejections,
        };
        let mut i = self.algorithm.pick(&view, cx.hash, &self.turn)?;
        if let Some(avoid) = cx.avoid
            && self.endpoints.get(i).is_some_and(|e| e.addr == avoid)
            && self.endpoints.len() > 1
        {
            // A retry prefers another endpoint (Envoy's previous-hosts predicate).
            for _ in 0..4 {
                match self.algorithm.pick(&view, None, &self.turn) {
                    Some(j) if self.endpoints.get(j).is_some_and(|e| e.addr != avoid) => {
                        i = j;
                        break;
                    }
                    _ => {}
                }
            }
        }
        let e = self.endpoints.get(i)?.clone();
        Some(self.take(e))
    }

    fn take(self: &Arc<Self>, e: Arc<EndpointState>) -> Picked {
        e.active.fetch_add(1, Ordering::Relaxed);
        Picked {
            cluster: self.clone(),
            addr: e.addr,
            endpoint: Some(e),
        }
    }

    /// Requests or connections in flight on each endpoint (for the admin API and tests).
    pub fn active(&self) -> Vec<(SocketAddr, u32)> {
        self.endpoints
            .iter()
            .map(|e| (e.addr, e.active.load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterEndpoint;
    use ferry_model::istio::destination_rule::{LoadBalancerSettings, OutlierDetection, SimpleLb};

    fn config(n: u8, lb: Option<SimpleLb>) -> Cluster {
        Cluster {
            name: "outbound|80||web.default.svc.cluster.local".into(),
            host: "web.default.svc.cluster.local".into(),
            port: 80,
            subset: None,
            subset_labels: Default::default(),
            resolution: Resolution::Eds,
            endpoints: (1..=n)
                .map(|i| ClusterEndpoint {
                    ip: IpAddr::from([10, 0, 0, i]),
                    port: 8080,
                    pod: format!("web-{i}"),
                    ready: true,
                    mtls: false,
                })
                .collect(),
            destination_rule: None,
            load_balancer: LoadBalancerSettings {
                simple: lb,
                ..Default::default()
            },
            connection_pool: None,
            outlier_detection: None,
            tls: Default::default(),
        }
    }

    fn build(c: &Cluster, previous: Option<&UpstreamCluster>) -> Arc<UpstreamCluster> {
        Arc::new(UpstreamCluster::build(c, &HashMap::new(), None, previous))
    }

    #[test]
    fn picks_count_as_active_until_dropped() {
        let c = build(&config(2, Some(SimpleLb::RoundRobin)), None);
        let a = c.pick(PickContext::default()).expect("a");
        let b = c.pick(PickContext::default()).expect("b");
        assert_ne!(a.addr, b.addr);
        assert!(c.active().iter().all(|(_, n)| *n == 1));
        drop((a, b));
        assert!(c.active().iter().all(|(_, n)| *n == 0));
    }

    #[test]
    fn unready_endpoints_are_left_out_and_empty_clusters_pick_nothing() {
        let mut cfg = config(3, None);
        cfg.endpoints[1].ready = false;
        let c = build(&cfg, None);
        assert_eq!(c.endpoints.len(), 2);
        let c = build(&config(0, None), None);
        assert!(c.pick(PickContext::default()).is_none());
    }

    #[test]
    fn original_destination_goes_where_dialled() {
        let mut cfg = config(2, None);
        cfg.resolution = Resolution::OriginalDst;
        let c = build(&cfg, None);
        let member: SocketAddr = "10.0.0.2:8080".parse().expect("addr");
        let p = c
            .pick(PickContext {
                dst: Some(member),
                ..Default::default()
            })
            .expect("pick");
        assert_eq!(p.addr, member);
        assert!(p.endpoint.is_some());
        let other: SocketAddr = "10.9.9.9:8080".parse().expect("addr");
        let p = c
            .pick(PickContext {
                dst: Some(other),
                ..Default::default()
            })
            .expect("pick");
        assert_eq!((p.addr, p.endpoint.is_none()), (other, true));
        // A dialled pod outside this subset: balanced over the subset.
        let p = c
            .pick(PickContext {
                dst: Some(other),
                dialled_pod: true,
                ..Default::default()
            })
            .expect("pick");
        assert!(p.endpoint.is_some() && p.addr != other);
        // A dialled member that is not ready: still where dialled, never another pod.
        let mut cfg = config(3, None);
        cfg.resolution = Resolution::OriginalDst;
        cfg.endpoints[2].ready = false;
        let c = build(&cfg, None);
        let unready: SocketAddr = "10.0.0.3:8080".parse().expect("addr");
        for _ in 0..20 {
            let p = c
                .pick(PickContext {
                    dst: Some(unready),
                    dialled_pod: true,
                    ..Default::default()
                })
                .expect("pick");
            assert_eq!((p.addr, p.endpoint.is_none()), (unready, true));
        }
    }

    #[test]
    fn ejected_endpoints_get_nothing_and_state_survives_a_new_configuration() {
        let mut cfg = config(3, Some(SimpleLb::RoundRobin));
        cfg.outlier_detection = Some(OutlierDetection {
            consecutive_5xx_errors: Some(1),
            max_ejection_percent: Some(100),
            ..Default::default()
        });
        let c = build(&cfg, None);
        let p = c.pick(PickContext::default()).expect("pick");
        let bad = p.addr;
        p.report(Event::Status(500));
        drop(p);
        for _ in 0..30 {
            assert_ne!(c.pick(PickContext::default()).expect("pick").addr, bad);
        }
        let next = build(&cfg, Some(&c));
        assert_eq!(next.outlier.as_ref().map(Detector::ejected), Some(1));
        for _ in 0..30 {
            assert_ne!(next.pick(PickContext::default()).expect("pick").addr, bad);
        }
    }

    #[test]
    fn retries_avoid_the_previous_endpoint() {
        let c = build(&config(3, Some(SimpleLb::Random)), None);
        let avoid: SocketAddr = "10.0.0.1:8080".parse().expect("addr");
        let hits = (0..300)
            .filter(|_| {
                c.pick(PickContext {
                    avoid: Some(avoid),
                    ..Default::default()
                })
                .expect("pick")
                .addr
                    == avoid
            })
            .count();
        // Five draws must all land on it: (1/3)^5 of the time.
        assert!(hits < 15, "{hits}");
    }
}
