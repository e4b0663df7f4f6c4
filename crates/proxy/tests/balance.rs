//! Load balancing through the whole proxy, per TCP connection: `ROUND_ROBIN` in turn,
//! `RANDOM` uniformly, `LEAST_REQUEST` away from endpoints holding long connections, and
//! `consistentHash.useSourceIp` (ring hash and Maglev) sticking to one endpoint; a connect
//! timeout per cluster.

mod routing_support;

use ferry_model::Duration as D;
use ferry_model::istio::destination_rule::{
    ConnectionPoolSettings, ConsistentHashLb, LoadBalancerSettings, MagLev, SimpleLb, TcpSettings,
};
use ferry_proxy::config::{Protocol, ProxyConfig};
use routing_support::*;
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Four pods of `web` and a proxy whose clusters balance with `lb`.
fn setup(base: u8, lb: LoadBalancerSettings) -> (ferry_proxy::server::Running, Vec<Pod>) {
    let pods: Vec<Pod> = (0..4)
        .map(|i| pod(base + i, &format!("web-{i}"), "v1"))
        .collect();
    let ips: Vec<IpAddr> = pods.iter().map(|p| p.ip).collect();
    let port = shared_port(&ips);
    serve_pods(&pods, port);
    let vip = IpAddr::from([127, 0, 0, base + 100]);
    let host = fqdn("web");
    let mut clusters = clusters_by_version(&host, port, &pods, false);
    for c in &mut clusters {
        c.load_balancer = lb.clone();
    }
    let config = ProxyConfig {
        identity: client_identity(&[]),
        services: vec![service("web", Some(vip), "tcp-web", port, &pods)],
        clusters,
        outbound: vec![outbound(&host, port, Protocol::Tcp, &[vip], Vec::new())],
        ..Default::default()
    };
    (start_proxy(SocketAddr::new(vip, port), config), pods)
}

fn simple(s: SimpleLb) -> LoadBalancerSettings {
    LoadBalancerSettings {
        simple: Some(s),
        ..Default::default()
    }
}

#[test]
fn round_robin_and_random() {
    let (proxy, _) = setup(10, simple(SimpleLb::RoundRobin));
    let counts = tally(proxy.listeners[0], 400, b"");
    assert!(counts.values().all(|n| *n == 100), "{counts:?}");
    let (proxy, _) = setup(20, simple(SimpleLb::Random));
    let counts = tally(proxy.listeners[0], 2_000, b"");
    // Binomial(2000, 1/4): sd ~19; 5 sd.
    assert!(
        counts.len() == 4 && counts.values().all(|n| (405..=595).contains(n)),
        "{counts:?}"
    );
}

#[test]
fn least_request_avoids_busy_endpoints() {
    let (proxy, _) = setup(30, LoadBalancerSettings::default());
    let l = proxy.listeners[0];
    // Hold 30 connections open: the balancer spreads them (each new one avoids the busier
    // of its two choices).
    let mut held = Vec::new();
    for _ in 0..30 {
        let mut s = TcpStream::connect(l).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut name = [0u8; 6];
        s.read_exact(&mut name).expect("name");
        held.push((String::from_utf8_lossy(&name).to_string(), s));
    }
    let mut per: std::collections::BTreeMap<String, usize> = Default::default();
    for (name, _) in &held {
        *per.entry(name.clone()).or_default() += 1;
    }
    // Random placement would often put 12+ on one endpoint; P2C keeps them near 7-8 each.
    assert!(
        per.len() == 4 && per.values().all(|n| (4..=11).contains(n)),
        "{per:?}"
    );
}

#[test]
fn source_ip_hashing_sticks_to_one_endpoint() {
    for (base, ch) in [
        (
            40,
            ConsistentHashLb {
                use_source_ip: Some(true),
                ..Default::default()
            },
        ),
        (
            50,
            ConsistentHashLb {
                use_source_ip: Some(true),
                maglev: Some(MagLev {
                    table_size: Some(1009),
                }),
                ..Default::default()
            },
        ),
    ] {
        let lb = LoadBalancerSettings {
            consistent_hash: Some(ch),
            ..Default::default()
        };
        let (proxy, _) = setup(base, lb);
        let counts = tally(proxy.listeners[0], 100, b"");
        assert_eq!(counts.len(), 1, "{counts:?}");
    }
}

/// A listener whose accept queue is full: further connects wait for a SYN-ACK that never
/// comes. Keep the returned values alive.
fn black_hole(ip: IpAddr) -> (u16, socket2::Socket, Vec<socket2::Socket>) {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    listener.bind(&SocketAddr::new(ip, 0).into()).expect("bind");
    listener.listen(0).expect("listen");
    let addr = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("addr");
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        s.set_nonblocking(true).expect("nonblocking");
        let _ = s.connect(&addr.into());
        fillers.push(s);
    }
    std::thread::sleep(Duration::from_millis(50));
    (addr.port(), listener, fillers)
}

#[test]
fn cluster_connect_timeout_applies() {
    let vip: IpAddr = "127.0.0.160".parse().expect("ip");
    let host = fqdn("slow");
    let dead = pod(161, "slow-0", "v1");
    let (port, _listener, _fillers) = black_hole(dead.ip);
    let mut c = cluster(&host, port, None, &[&dead], false);
    c.connection_pool = Some(ConnectionPoolSettings {
        tcp: Some(TcpSettings {
            connect_timeout: D::parse("200ms").ok(),
            ..Default::default()
        }),
        http: None,
    });
    let config = ProxyConfig {
        identity: client_identity(&[]),
        services: vec![service(
            "slow",
            Some(vip),
            "tcp-slow",
            port,
            std::slice::from_ref(&dead),
        )],
        clusters: vec![c],
        outbound: vec![outbound(&host, port, Protocol::Tcp, &[vip], Vec::new())],
        ..Default::default()
    };
    let proxy = start_proxy(SocketAddr::new(vip, port), config);
    let started = Instant::now();
    assert_eq!(first_line(proxy.listeners[0], b""), None);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(
        metric(
            &proxy,
            "istio_tcp_connections_opened_total",
            &["response_flags=\"UF\""]
        ),
        1.0
    );
}
