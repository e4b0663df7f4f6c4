//! Helpers of the traffic-policy tests: configurations with services, subsets, clusters and
//! routes written the way the control plane compiles them; endpoints on distinct loopback
//! addresses (127.0.0.0/8) sharing a port, as pods share a target port; and proxies started
//! in-process with a fixed original destination.

#![allow(dead_code)]

use ferry_model::istio::destination_rule::{LoadBalancerSettings, SimpleLb};
use ferry_proxy::config::{
    Cluster, ClusterEndpoint, ClusterRef, Endpoint, Identity, OutboundPort, Protocol, ProxyConfig,
    Resolution, Service, ServicePort, Snapshot, TcpRouteRule, WeightedCluster, cluster_name,
};
use ferry_proxy::listener::Direction;
use ferry_proxy::listener::orig_dst::FixedDst;
use ferry_proxy::server::{self, Options, Running};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// One pod behind a service.
#[derive(Debug, Clone)]
pub struct Pod {
    /// Pod IP (a loopback address).
    pub ip: IpAddr,
    /// Pod name.
    pub name: String,
    /// `version` label.
    pub version: String,
}

/// A pod at `127.0.0.<n>`.
pub fn pod(n: u8, name: &str, version: &str) -> Pod {
    Pod {
        ip: IpAddr::from([127, 0, 0, n]),
        name: name.into(),
        version: version.into(),
    }
}

/// Listeners that [`shared_port`] bound while it searched, kept open so nothing can take
/// their port before [`name_server`] serves on them.
static RESERVED: std::sync::Mutex<BTreeMap<SocketAddr, TcpListener>> =
    std::sync::Mutex::new(BTreeMap::new());

/// A port free on every one of `ips`, below Linux's ephemeral range (32768 and up), and held
/// bound on each of them until [`name_server`] takes it: a port merely found free could be
/// taken by one of the many outgoing connections the tests make before the endpoints bind
/// it. Each call of the process starts at another place.
pub fn shared_port(ips: &[IpAddr]) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(2_654_435_761);
    'search: for _ in 0..200 {
        let n = NEXT.fetch_add(7_919, Ordering::Relaxed).wrapping_add(seed);
        let port = 20_000 + u16::try_from(n % 12_000).expect("below 12,000");
        let mut held = Vec::with_capacity(ips.len());
        for ip in ips {
            let addr = SocketAddr::new(*ip, port);
            match TcpListener::bind(addr) {
                Ok(l) => held.push((addr, l)),
                Err(_) => continue 'search,
            }
        }
        let mut reserved = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
        reserved.extend(held);
        return port;
    }
    panic!("no port free on all of {ips:?}")
}

/// The listener [`shared_port`] holds for `addr`, or a new one bound there.
pub fn bind_endpoint(addr: SocketAddr) -> TcpListener {
    let reserved = release_listener(addr);
    reserved.unwrap_or_else(|| TcpListener::bind(addr).expect("bind endpoint"))
}

/// Gives up the hold [`shared_port`] keeps on `addr`, for a server in another process.
pub fn release(addr: SocketAddr) {
    drop(release_listener(addr));
}

fn release_listener(addr: SocketAddr) -> Option<TcpListener> {
    RESERVED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&addr)
}

/// A server on `addr` that writes `name` and a newline to every connection, then echoes
/// what it reads.
pub fn name_server(addr: SocketAddr, name: &str) {
    let listener = bind_endpoint(addr);
    let name = format!("{name}\n");
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let name = name.clone();
            thread::spawn(move || {
                if s.write_all(name.as_bytes()).is_err() {
                    return;
                }
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// Lets connections to `pods` on `port` be refused, as to pods with no server: gives up
/// the hold [`shared_port`] keeps there.
pub fn refuse_on(pods: &[Pod], port: u16) {
    for p in pods {
        release(SocketAddr::new(p.ip, port));
    }
}

/// Starts a name server for every pod, on `port`.
pub fn serve_pods(pods: &[Pod], port: u16) {
    for p in pods {
        name_server(SocketAddr::new(p.ip, port), &p.name);
    }
}

/// Connects through the proxy and returns the first line the upstream sends, or `None`
/// when the proxy closes the connection first.
pub fn first_line(proxy: SocketAddr, hello: &[u8]) -> Option<String> {
    let mut s = TcpStream::connect(proxy).expect("connect to the proxy");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    if !hello.is_empty() {
        s.write_all(hello).ok()?;
    }
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match s.read(&mut byte) {
            Ok(0) | Err(_) => return None,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
        }
    }
    String::from_utf8(line).ok()
}

/// FQDN of a service in `default`.
pub fn fqdn(name: &str) -> String {
    format!("{name}.default.svc.cluster.local")
}

/// A service with its pods.
pub fn service(
    name: &str,
    vip: Option<IpAddr>,
    port_name: &str,
    port: u16,
    pods: &[Pod],
) -> Service {
    Service {
        name: name.into(),
        namespace: "default".into(),
        cluster_ip: vip,
        ports: vec![ServicePort {
            name: port_name.into(),
            port,
            ..Default::default()
        }],
        endpoints: pods
            .iter()
            .map(|p| Endpoint {
                ip: p.ip,
                pod: p.name.clone(),
                workload: name.into(),
                namespace: None,
                service_account: "default".into(),
                labels: [
                    ("app".to_string(), name.to_string()),
                    ("version".to_string(), p.version.clone()),
                ]
                .into(),
                has_sidecar: false,
                ready: true,
            })
            .collect(),
    }
}

/// A cluster of `host` on `port` over `pods` (a subset when `subset` is set).
pub fn cluster(
    host: &str,
    port: u16,
    subset: Option<&str>,
    pods: &[&Pod],
    headless: bool,
) -> Cluster {
    Cluster {
        name: cluster_name(port, subset, host),
        host: host.into(),
        port,
        subset: subset.map(str::to_string),
        subset_labels: subset
            .map(|s| [("version".to_string(), s.to_string())].into())
            .unwrap_or_default(),
        resolution: if headless {
            Resolution::OriginalDst
        } else {
            Resolution::Eds
        },
        endpoints: pods
            .iter()
            .map(|p| ClusterEndpoint {
                ip: p.ip,
                port,
                pod: p.name.clone(),
                ready: true,
                mtls: false,
            })
            .collect(),
        destination_rule: None,
        load_balancer: LoadBalancerSettings {
            simple: Some(SimpleLb::LeastRequest),
            ..Default::default()
        },
        connection_pool: None,
        outlier_detection: None,
        tls: Default::default(),
    }
}

/// The default cluster and one cluster per version of a service's pods.
pub fn clusters_by_version(host: &str, port: u16, pods: &[Pod], headless: bool) -> Vec<Cluster> {
    let mut versions: Vec<&str> = pods.iter().map(|p| p.version.as_str()).collect();
    versions.sort();
    versions.dedup();
    let all: Vec<&Pod> = pods.iter().collect();
    let mut out = vec![cluster(host, port, None, &all, headless)];
    for v in versions {
        let members: Vec<&Pod> = pods.iter().filter(|p| p.version == v).collect();
        out.push(cluster(host, port, Some(v), &members, headless));
    }
    out
}

/// A destination reference.
pub fn to(host: &str, port: u16, subset: Option<&str>) -> ClusterRef {
    ClusterRef {
        host: host.into(),
        subset: subset.map(str::to_string),
        port,
        cluster: cluster_name(port, subset, host),
    }
}

/// Weighted TCP destinations.
pub fn weighted(dests: &[(ClusterRef, u32)]) -> Vec<WeightedCluster> {
    dests
        .iter()
        .map(|(d, w)| WeightedCluster {
            destination: d.clone(),
            weight: *w,
        })
        .collect()
}

/// An outbound host:port with TCP rules.
pub fn outbound(
    host: &str,
    port: u16,
    protocol: Protocol,
    addresses: &[IpAddr],
    tcp: Vec<TcpRouteRule>,
) -> OutboundPort {
    OutboundPort {
        host: host.into(),
        port,
        protocol,
        addresses: addresses.to_vec(),
        passthrough: addresses.is_empty(),
        virtual_service: (!tcp.is_empty()).then(|| "default/vs".to_string()),
        http: Vec::new(),
        tcp,
        tls: Vec::new(),
        default_cluster: cluster_name(port, None, host),
        redis_policies: Vec::new(),
    }
}

/// The client proxy's identity: pod `client-1` with labels `app: client`.
pub fn client_identity(labels: &[(&str, &str)]) -> Identity {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Identity {
        pod: "client-1".into(),
        namespace: "default".into(),
        workload: "client".into(),
        service_account: "client".into(),
        labels,
        ..Default::default()
    }
}

/// Starts an outbound proxy whose every connection appears dialled to `dst`, with `config`.
pub fn start_proxy(dst: SocketAddr, config: ProxyConfig) -> Running {
    let running = server::start(
        Options {
            listeners: vec![("127.0.0.1:0".parse().expect("addr"), Direction::Outbound)],
            metrics: Some("127.0.0.1:0".parse().expect("addr")),
            ..Default::default()
        },
        Arc::new(FixedDst(dst)),
    )
    .expect("proxy starts");
    running.replace_config(Snapshot::compile(config));
    running
}

/// The sum of `metric` samples with all `needles`, scraped from the proxy.
pub fn metric(proxy: &Running, name: &str, needles: &[&str]) -> f64 {
    let addr = proxy.metrics.expect("metrics bound");
    let mut s = TcpStream::connect(addr).expect("connect to metrics");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(s, "GET /stats/prometheus HTTP/1.0\r\nHost: x\r\n\r\n").expect("write");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A TLS ClientHello naming `sni` (enough for the proxy to read the server name).
pub fn client_hello(sni: &str) -> Vec<u8> {
    let name = sni.as_bytes();
    let mut ext = vec![0, 0];
    let list_len = name.len() + 3;
    ext.extend([((list_len + 2) >> 8) as u8, (list_len + 2) as u8]);
    ext.extend([
        (list_len >> 8) as u8,
        list_len as u8,
        0,
        (name.len() >> 8) as u8,
        name.len() as u8,
    ]);
    ext.extend(name);
    let mut hello = vec![3, 3];
    hello.extend([7u8; 32]);
    hello.extend([0, 0, 2, 0x13, 0x01, 1, 0]);
    hello.extend([(ext.len() >> 8) as u8, ext.len() as u8]);
    hello.extend(&ext);
    let mut handshake = vec![1, 0, (hello.len() >> 8) as u8, hello.len() as u8];
    handshake.extend(&hello);
    let mut record = vec![
        0x16,
        3,
        1,
        (handshake.len() >> 8) as u8,
        handshake.len() as u8,
    ];
    record.extend(&handshake);
    record
}

/// Counts the first lines of `n` connections.
pub fn tally(proxy: SocketAddr, n: usize, hello: &[u8]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let name = first_line(proxy, hello).unwrap_or_else(|| "<closed>".into());
        *out.entry(name).or_insert(0) += 1;
    }
    out
}
