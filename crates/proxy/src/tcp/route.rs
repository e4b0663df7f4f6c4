//! Routing one opaque (TCP or TLS) connection, once, when it starts: the VirtualService rules
//! of the dialled host:port (TLS rules by server name, then TCP rules, first match wins; the
//! default cluster otherwise), a weighted choice among the rule's destinations, then the
//! cluster's connection limit (`maxConnections`, else `response_flags="UO"`) and balancer
//! (an ejected endpoint gets nothing). A headless service's pod gets exactly the connection
//! dialled to it unless a rule sends it elsewhere. The [`Plan`] keeps the connection counted
//! until it is dropped, takes the connect outcome for outlier detection, and carries the
//! RedisPolicy that applies to the connection ([`forward`] enforces it).

use crate::balance::HashOn;
use crate::balance::hash::hash;
use crate::cluster::{PickContext, Picked};
use crate::config::Snapshot;
use crate::config::snapshot::{Outbound, ServiceName, Workload};
use crate::detect::TlsHello;
use crate::lifecycle::Lifecycle;
use crate::redis::command::CommandId;
use crate::redis::enforce::{self, Enforcement, FaultKind};
use crate::resilience::outlier::Event;
use crate::resilience::pool::{Limits, Slot};
use crate::route::L4Choice;
use crate::route::l4::Connection;
use crate::tcp::forward::{self as pump, Ending, Observer, Totals};
use crate::telemetry::Metrics;
use crate::telemetry::labels::{RedisLabels, TcpLabels, Value};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Where one connection goes and what it holds while it lives.
#[derive(Debug)]
pub struct Plan {
    /// Address to connect to.
    pub addr: SocketAddr,
    /// The workload there, when known (metrics labels).
    pub workload: Option<Arc<Workload>>,
    /// The destination service (metrics labels), when the route names one.
    pub service: Option<Arc<ServiceName>>,
    /// The chosen cluster and endpoint; `None` for an address no route covers.
    pub picked: Option<Picked>,
    /// The RedisPolicy that applies to the connection, if any.
    pub redis: Option<Arc<crate::redis::policy::Policy>>,
    /// The cluster's connection slot.
    slot: Option<Slot>,
}

/// Why a connection is refused, as Envoy's `response_flags`.
pub type Flags = &'static str;

impl Plan {
    /// Upstream connect timeout: the cluster's `connectTimeout`, else `default`.
    pub fn connect_timeout(&self, default: Duration) -> Duration {
        self.limits()
            .and_then(|l| l.connect_timeout)
            .unwrap_or(default)
    }

    /// Idle timeout: the cluster's `tcp.idleTimeout`, else `default`.
    pub fn idle_timeout(&self, default: Option<Duration>) -> Option<Duration> {
        match self.limits().and_then(|l| l.idle_timeout) {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => default,
        }
    }

    /// The cluster's `maxConnectionDuration`, if set.
    pub fn max_duration(&self) -> Option<Duration> {
        self.limits()
            .and_then(|l| l.max_connection_duration)
            .filter(|d| !d.is_zero())
    }

    fn limits(&self) -> Option<&Limits> {
        self.picked.as_ref().map(|p| &p.cluster.pool.limits)
    }

    /// The name of the chosen cluster, if any.
    pub fn cluster_name(&self) -> Option<&str> {
        self.picked.as_ref().map(|p| p.cluster.name.as_str())
    }

    /// Records the outcome of the connect (the new connection, or `None` when it failed) for
    /// outlier detection, and applies the cluster's TCP keepalive to the new connection.
    pub fn connected(&self, result: Option<&TcpStream>) {
        let Some(p) = &self.picked else { return };
        match result {
            Some(stream) => {
                p.report(Event::Connected);
                if let Some((probes, time, interval)) = p.cluster.pool.limits.keepalive {
                    let mut ka = socket2::TcpKeepalive::new();
                    if let Some(t) = time {
                        ka = ka.with_time(t);
                    }
                    if let Some(i) = interval {
                        ka = ka.with_interval(i);
                    }
                    if let Some(n) = probes {
                        ka = ka.with_retries(n);
                    }
                    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&ka);
                }
            }
            None => p.report(Event::LocalFailure),
        }
    }

    /// Whether the plan holds a connection slot (for tests).
    pub fn counted(&self) -> bool {
        self.slot.is_some()
    }

    /// How the forwarded connection is bounded by the cluster's policy, and the RedisPolicy
    /// it is forwarded under (its faults counted in `metrics` with `labels`).
    pub fn pipe_policy(&self, metrics: &Arc<Metrics>, labels: &TcpLabels) -> PipePolicy {
        let redis = self.redis.as_ref().map(|policy| {
            let counted = metrics.clone();
            let peers = labels.peers.clone();
            let security = labels.connection_security_policy.clone();
            Enforcement {
                policy: policy.clone(),
                on_fault: Box::new(move |command: CommandId, kind: FaultKind| {
                    counted
                        .redis_faults
                        .get_or_create(&RedisLabels {
                            peers: peers.clone(),
                            connection_security_policy: security.clone(),
                            command: Value(Arc::from(command.name())),
                            outcome: Value(Arc::from(kind.label())),
                        })
                        .inc();
                }),
                connect_timeout: self.connect_timeout(Duration::from_secs(10)),
                telemetry: Some((metrics.clone(), labels.clone())),
            }
        });
        PipePolicy {
            idle_timeout: self.limits().and_then(|l| l.idle_timeout),
            max_duration: self.max_duration(),
            redis,
        }
    }
}

/// A cluster's bounds on a forwarded connection, and its RedisPolicy.
#[derive(Debug, Default)]
pub struct PipePolicy {
    /// Idle timeout (`tcp.idleTimeout`; 0 = none), replacing the proxy's.
    pub idle_timeout: Option<Duration>,
    /// Longest life of the connection (`maxConnectionDuration`).
    pub max_duration: Option<Duration>,
    /// The RedisPolicy the connection is forwarded under.
    pub redis: Option<Enforcement>,
}

impl PipePolicy {
    /// The idle timeout in force, given the proxy's `default`.
    pub fn idle(&self, default: Option<Duration>) -> Option<Duration> {
        match self.idle_timeout {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => default,
        }
    }
}

/// Forwards a connection (see [`pump::forward`]) within the policy's bounds: the idle
/// timeout in force (`idle`, from [`PipePolicy::idle`]) and the longest connection life,
/// after which both sides are closed; under a RedisPolicy, through `crate::redis::enforce`,
/// which then records the Redis telemetry itself when `redis_telemetry` is on.
pub async fn forward<O: Observer>(
    downstream: &TcpStream,
    upstream: &TcpStream,
    observer: &mut O,
    idle: Option<Duration>,
    lifecycle: &Lifecycle,
    policy: &PipePolicy,
    redis_telemetry: bool,
) -> (Totals, io::Result<Ending>) {
    let pumping = async {
        match &policy.redis {
            Some(e) => {
                enforce::forward(
                    downstream,
                    upstream,
                    observer,
                    idle,
                    lifecycle,
                    e,
                    redis_telemetry,
                )
                .await
            }
            None => pump::forward(downstream, upstream, observer, idle, lifecycle).await,
        }
    };
    match policy.max_duration {
        None => pumping.await,
        Some(max) => match tokio::time::timeout(max, pumping).await {
            Ok(done) => done,
            Err(_) => (Totals::default(), Ok(Ending::Expired)),
        },
    }
}

/// Whether routing the connection to `dst` needs the TLS server name first.
pub fn wants_sni(snapshot: &Snapshot, dst: SocketAddr) -> bool {
    snapshot.routes.routes(dst).is_some_and(|r| r.wants_sni())
}

/// Plans a connection from `src` to `dst` (`sni`: the TLS server name, when read); `fallback`
/// is the snapshot's view of `dst` for addresses no route covers.
pub fn plan(
    snapshot: &Snapshot,
    fallback: &Outbound,
    dst: SocketAddr,
    src: IpAddr,
    sni: Option<&str>,
) -> Result<Plan, Flags> {
    let Some(routes) = snapshot.routes.routes(dst) else {
        return Ok(match fallback {
            Outbound::Endpoint(t, w) => Plan {
                addr: dst,
                workload: w.clone(),
                service: Some(t.service.clone()),
                picked: None,
                redis: None,
                slot: None,
            },
            _ => Plan {
                addr: dst,
                workload: None,
                service: None,
                picked: None,
                redis: None,
                slot: None,
            },
        });
    };
    let cluster = match routes.choose_l4(&Connection { dst, src, sni }) {
        L4Choice::Cluster(c) => c,
        L4Choice::Missing(_) => return Err("NR"),
    };
    let slot = cluster.pool.connection().map_err(|_| "UO")?;
    let key = match cluster.hash_on {
        Some(HashOn::SourceIp) => Some(match src {
            IpAddr::V4(ip) => hash(&ip.octets()),
            IpAddr::V6(ip) => hash(&ip.octets()),
        }),
        _ => None,
    };
    let picked = cluster
        .pick(PickContext {
            dst: Some(dst),
            dialled_pod: routes.passthrough,
            hash: key,
            avoid: None,
        })
        .ok_or("UH")?;
    let workload = picked
        .workload()
        .cloned()
        .or_else(|| snapshot.workload_at(picked.addr.ip()));
    let pod = picked
        .endpoint
        .as_ref()
        .map(|e| e.pod.as_str())
        .or(workload.as_ref().map(|w| w.pod.as_str()));
    let redis = routes.redis_policy(cluster, picked.addr, pod).cloned();
    Ok(Plan {
        addr: picked.addr,
        workload,
        service: cluster.service.clone(),
        picked: Some(picked),
        redis,
        slot: Some(slot),
    })
}

/// The TLS server name of a new connection, waiting at most `timeout` for the ClientHello
/// (peeked, so the bytes stay for whoever reads next); `None` for anything but TLS.
pub async fn peek_sni(stream: &TcpStream, timeout: Duration) -> Option<String> {
    match crate::conn::sniff::client_hello(stream, timeout).await? {
        TlsHello::Hello { sni, .. } => sni,
        _ => None,
    }
}
