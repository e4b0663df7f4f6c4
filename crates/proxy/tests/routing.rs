//! TCP and TLS routing in the proxy, in-process over loopback: VirtualService TCP rules (first
//! match wins on port, destination subnets, source labels and namespace), weighted routes to
//! DestinationRule subsets per connection (a 90/10 Redis canary over 2,000 connections),
//! StatefulSet per-pod names and headless services (exactly the pod dialled), TLS rules by
//! server name, connection limits (`UO`), missing clusters (`NR`) and outlier ejection after
//! connect failures.

mod routing_support;

use ferry_model::istio::destination_rule::{ConnectionPoolSettings, OutlierDetection, TcpSettings};
use ferry_model::istio::virtual_service::{L4MatchAttributes, TlsMatchAttributes};
use ferry_proxy::config::{Protocol, ProxyConfig, TcpRouteRule, TlsRouteRule};
use routing_support::*;
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// A Redis-like service `redis` with a cluster IP, two v1 and two v2 pods.
fn canary(base: u8) -> (Vec<Pod>, u16, IpAddr) {
    let pods = vec![
        pod(base, "redis-v1-a", "v1"),
        pod(base + 1, "redis-v1-b", "v1"),
        pod(base + 2, "redis-v2-a", "v2"),
        pod(base + 3, "redis-v2-b", "v2"),
    ];
    let ips: Vec<IpAddr> = pods.iter().map(|p| p.ip).collect();
    let port = shared_port(&ips);
    serve_pods(&pods, port);
    (pods, port, IpAddr::from([127, 0, 0, base + 50]))
}

fn canary_config(pods: &[Pod], port: u16, vip: IpAddr, tcp: Vec<TcpRouteRule>) -> ProxyConfig {
    let host = fqdn("redis");
    ProxyConfig {
        identity: client_identity(&[("app", "client")]),
        services: vec![service("redis", Some(vip), "tcp-redis", port, pods)],
        clusters: clusters_by_version(&host, port, pods, false),
        outbound: vec![outbound(&host, port, Protocol::Tcp, &[vip], tcp)],
        ..Default::default()
    }
}

fn by_version(counts: &std::collections::BTreeMap<String, usize>, version: &str) -> usize {
    counts
        .iter()
        .filter(|(name, _)| name.contains(&format!("-{version}-")))
        .map(|(_, n)| n)
        .sum()
}

#[test]
fn weighted_route_splits_new_connections_90_10() {
    let (pods, port, vip) = canary(10);
    let host = fqdn("redis");
    let rule = TcpRouteRule {
        matches: Vec::new(),
        route: weighted(&[
            (to(&host, port, Some("v1")), 90),
            (to(&host, port, Some("v2")), 10),
        ]),
    };
    let proxy = start_proxy(
        SocketAddr::new(vip, port),
        canary_config(&pods, port, vip, vec![rule]),
    );
    let counts = tally(proxy.listeners[0], 2_000, b"");
    let v2 = by_version(&counts, "v2");
    eprintln!("90/10 over 2,000 connections: {counts:?}");
    assert_eq!(by_version(&counts, "v1") + v2, 2_000, "{counts:?}");
    // 10% of 2,000 = 200; within ±3 points is 140..=260.
    assert!((140..=260).contains(&v2), "{counts:?}");
    // Both pods of each subset are used.
    assert!(counts.values().all(|n| *n > 20), "{counts:?}");
    // Metrics name the version the connection went to.
    let labelled = |v: &str| {
        metric(
            &proxy,
            "istio_tcp_connections_opened_total",
            &[
                &format!("destination_version=\"{v}\""),
                "destination_service=\"redis.default.svc.cluster.local\"",
            ],
        )
    };
    assert_eq!(labelled("v1") + labelled("v2"), 2_000.0);
    assert_eq!(labelled("v2"), v2 as f64);
}

#[test]
fn first_matching_rule_wins_on_port_subnets_and_source() {
    let (pods, port, vip) = canary(20);
    let host = fqdn("redis");
    let v1 = to(&host, port, Some("v1"));
    let v2 = to(&host, port, Some("v2"));
    let rule = |m: L4MatchAttributes, dest: &ferry_proxy::config::ClusterRef| TcpRouteRule {
        matches: vec![m],
        route: weighted(&[(dest.clone(), 100)]),
    };
    let cases: Vec<(&str, Vec<TcpRouteRule>, &str)> = vec![
        (
            "other subnet, then port",
            vec![
                rule(
                    L4MatchAttributes {
                        destination_subnets: vec!["10.0.0.0/8".into()],
                        ..Default::default()
                    },
                    &v2,
                ),
                rule(
                    L4MatchAttributes {
                        port: Some(u32::from(port)),
                        ..Default::default()
                    },
                    &v1,
                ),
            ],
            "v1",
        ),
        (
            "matching subnet first",
            vec![
                rule(
                    L4MatchAttributes {
                        destination_subnets: vec![format!("{vip}/32")],
                        ..Default::default()
                    },
                    &v2,
                ),
                rule(L4MatchAttributes::default(), &v1),
            ],
            "v2",
        ),
        (
            "other port, then catch-all",
            vec![
                rule(
                    L4MatchAttributes {
                        port: Some(1),
                        ..Default::default()
                    },
                    &v1,
                ),
                rule(L4MatchAttributes::default(), &v2),
            ],
            "v2",
        ),
        (
            "source labels",
            vec![
                rule(
                    L4MatchAttributes {
                        source_labels: [("app".to_string(), "web".to_string())].into(),
                        ..Default::default()
                    },
                    &v2,
                ),
                rule(
                    L4MatchAttributes {
                        source_labels: [("app".to_string(), "client".to_string())].into(),
                        ..Default::default()
                    },
                    &v1,
                ),
            ],
            "v1",
        ),
        (
            "source namespace",
            vec![
                rule(
                    L4MatchAttributes {
                        source_namespace: Some("prod".into()),
                        ..Default::default()
                    },
                    &v1,
                ),
                rule(
                    L4MatchAttributes {
                        source_namespace: Some("default".into()),
                        ..Default::default()
                    },
                    &v2,
                ),
            ],
            "v2",
        ),
        (
            "no rule matches: the default cluster",
            vec![rule(
                L4MatchAttributes {
                    port: Some(1),
                    ..Default::default()
                },
                &v2,
            )],
            "any",
        ),
    ];
    for (name, rules, want) in cases {
        let proxy = start_proxy(
            SocketAddr::new(vip, port),
            canary_config(&pods, port, vip, rules),
        );
        let counts = tally(proxy.listeners[0], 40, b"");
        match want {
            "any" => {
                assert!(
                    by_version(&counts, "v1") > 0 && by_version(&counts, "v2") > 0,
                    "{name}: {counts:?}"
                )
            }
            v => assert_eq!(by_version(&counts, v), 40, "{name}: {counts:?}"),
        }
    }
}

#[test]
fn headless_pods_get_exactly_the_connection_dialled() {
    let pods = vec![
        pod(31, "redis-0", "v1"),
        pod(32, "redis-1", "v1"),
        pod(33, "redis-2", "v2"),
    ];
    let ips: Vec<IpAddr> = pods.iter().map(|p| p.ip).collect();
    let port = shared_port(&ips);
    serve_pods(&pods, port);
    let host = fqdn("redis");
    let config = ProxyConfig {
        identity: client_identity(&[("app", "client")]),
        services: vec![service("redis", None, "tcp-redis", port, &pods)],
        clusters: clusters_by_version(&host, port, &pods, true),
        outbound: vec![outbound(&host, port, Protocol::Tcp, &[], Vec::new())],
        ..Default::default()
    };
    for p in &pods {
        let proxy = start_proxy(SocketAddr::new(p.ip, port), config.clone());
        let counts = tally(proxy.listeners[0], 20, b"");
        assert_eq!(counts.get(&p.name), Some(&20), "{counts:?}");
    }
    // The same with a static configuration (services only, no compiled routes).
    let statics = ProxyConfig {
        services: config.services.clone(),
        ..Default::default()
    };
    let proxy = start_proxy(SocketAddr::new(pods[1].ip, port), statics);
    assert_eq!(tally(proxy.listeners[0], 10, b"").get("redis-1"), Some(&10));
}

#[test]
fn statefulset_pod_names_take_their_own_routes() {
    let pods = vec![
        pod(41, "redis-0", "v1"),
        pod(42, "redis-1", "v1"),
        pod(43, "redis-2", "v2"),
    ];
    let ips: Vec<IpAddr> = pods.iter().map(|p| p.ip).collect();
    let port = shared_port(&ips);
    serve_pods(&pods, port);
    let host = fqdn("redis");
    let pod0 = format!("redis-0.{host}");
    let pod1 = format!("redis-1.{host}");
    let mut clusters = clusters_by_version(&host, port, &pods, true);
    clusters.push(cluster(&pod0, port, None, &[&pods[0]], false));
    clusters.push(cluster(&pod1, port, None, &[&pods[1]], false));
    // A VirtualService on redis-0's own name sends its traffic to redis-1 (maintenance).
    let to_pod1 = TcpRouteRule {
        matches: Vec::new(),
        route: weighted(&[(to(&pod1, port, None), 100)]),
    };
    let config = ProxyConfig {
        identity: client_identity(&[]),
        services: vec![service("redis", None, "tcp-redis", port, &pods)],
        clusters,
        outbound: vec![
            outbound(&host, port, Protocol::Tcp, &[], Vec::new()),
            outbound(&pod0, port, Protocol::Tcp, &[pods[0].ip], vec![to_pod1]),
        ],
        ..Default::default()
    };
    let proxy = start_proxy(SocketAddr::new(pods[0].ip, port), config.clone());
    assert_eq!(tally(proxy.listeners[0], 20, b"").get("redis-1"), Some(&20));
    // redis-2 has no route of its own: exactly redis-2.
    let proxy = start_proxy(SocketAddr::new(pods[2].ip, port), config);
    assert_eq!(tally(proxy.listeners[0], 20, b"").get("redis-2"), Some(&20));
}

#[test]
fn headless_canary_keeps_dialled_pods_of_the_chosen_subset() {
    let pods = vec![pod(51, "redis-0", "v1"), pod(52, "redis-1", "v2")];
    let ips: Vec<IpAddr> = pods.iter().map(|p| p.ip).collect();
    let port = shared_port(&ips);
    serve_pods(&pods, port);
    let host = fqdn("redis");
    let rule = TcpRouteRule {
        matches: Vec::new(),
        route: weighted(&[
            (to(&host, port, Some("v1")), 50),
            (to(&host, port, Some("v2")), 50),
        ]),
    };
    let config = ProxyConfig {
        identity: client_identity(&[]),
        services: vec![service("redis", None, "tcp-redis", port, &pods)],
        clusters: clusters_by_version(&host, port, &pods, true),
        outbound: vec![outbound(&host, port, Protocol::Tcp, &[], vec![rule])],
        ..Default::default()
    };
    // Dialling redis-0 (v1): the v1 share stays on it, the v2 share goes to a v2 pod.
    let proxy = start_proxy(SocketAddr::new(pods[0].ip, port), config);
    let counts = tally(proxy.listeners[0], 400, b"");
    let zero = counts.get("redis-0").copied().unwrap_or(0);
    assert_eq!(
        zero + counts.get("redis-1").copied().unwrap_or(0),
        400,
        "{counts:?}"
    );
    // Binomial(400, 1/2): sd 10; 5 sd.
    assert!((150..=250).contains(&zero), "{counts:?}");
}

#[test]
fn tls_rules_route_by_server_name() {
    let pods = vec![pod(61, "api-a", "v1"), pod(62, "api-b", "v2")];
    let ips: Vec<IpAddr> = pods.iter().map(|p| p.ip).collect();
    let port = shared_port(&ips);
    serve_pods(&pods, port);
    let host = fqdn("api");
    let vip = ip("127.0.0.112");
    let sni = |name: &str| TlsMatchAttributes {
        sni_hosts: vec![name.into()],
        ..Default::default()
    };
    let mut out = outbound(&host, port, Protocol::Tls, &[vip], Vec::new());
    out.tls = vec![
        TlsRouteRule {
            matches: vec![sni("a.example.com")],
            route: weighted(&[(to(&host, port, Some("v1")), 100)]),
        },
        TlsRouteRule {
            matches: vec![sni("*.example.com")],
            route: weighted(&[(to(&host, port, Some("v2")), 100)]),
        },
    ];
    let config = ProxyConfig {
        identity: client_identity(&[]),
        services: vec![service("api", Some(vip), "tls-api", port, &pods)],
        clusters: clusters_by_version(&host, port, &pods, false),
        outbound: vec![out],
        ..Default::default()
    };
    let proxy = start_proxy(SocketAddr::new(vip, port), config);
    let l = proxy.listeners[0];
    assert_eq!(
        tally(l, 10, &client_hello("a.example.com")).get("api-a"),
        Some(&10)
    );
    assert_eq!(
        tally(l, 10, &client_hello("b.example.com")).get("api-b"),
        Some(&10)
    );
    // No rule for the name: the default cluster (both pods).
    let other = tally(l, 40, &client_hello("other.org"));
    assert_eq!(other.values().sum::<usize>(), 40, "{other:?}");
    assert_eq!(other.len(), 2, "{other:?}");
}

#[test]
fn max_connections_overflow_is_refused_with_uo() {
    let (pods, port, vip) = canary(70);
    let mut config = canary_config(&pods, port, vip, Vec::new());
    for c in &mut config.clusters {
        c.connection_pool = Some(ConnectionPoolSettings {
            tcp: Some(TcpSettings {
                max_connections: Some(1),
                ..Default::default()
            }),
            http: None,
        });
    }
    let proxy = start_proxy(SocketAddr::new(vip, port), config);
    let l = proxy.listeners[0];
    let mut held = TcpStream::connect(l).expect("connect");
    let mut byte = [0u8; 1];
    held.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    held.read_exact(&mut byte).expect("first connection served");
    assert_eq!(first_line(l, b""), None, "the second connection overflows");
    assert_eq!(
        metric(
            &proxy,
            "istio_tcp_connections_opened_total",
            &["response_flags=\"UO\""]
        ),
        1.0
    );
    drop(held);
    // The slot comes back when the first connection closes.
    let mut served = false;
    for _ in 0..50 {
        if first_line(l, b"").is_some() {
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(served);
}

#[test]
fn missing_cluster_is_no_route() {
    let (pods, port, vip) = canary(80);
    let host = fqdn("redis");
    let rule = TcpRouteRule {
        matches: Vec::new(),
        route: weighted(&[(to(&host, port, Some("v9")), 100)]),
    };
    let proxy = start_proxy(
        SocketAddr::new(vip, port),
        canary_config(&pods, port, vip, vec![rule]),
    );
    assert_eq!(first_line(proxy.listeners[0], b""), None);
    assert_eq!(
        metric(
            &proxy,
            "istio_tcp_connections_opened_total",
            &["response_flags=\"NR\""]
        ),
        1.0
    );
}

#[test]
fn endpoints_failing_to_connect_are_ejected() {
    // Three endpoints; the third has no server (connection refused).
    let pods = vec![
        pod(91, "web-0", "v1"),
        pod(92, "web-1", "v1"),
        pod(93, "web-2", "v1"),
    ];
    let ips: Vec<IpAddr> = pods.iter().map(|p| p.ip).collect();
    let port = shared_port(&ips);
    serve_pods(&pods[..2], port);
    refuse_on(&pods[2..], port);
    let vip = ip("127.0.0.190");
    let host = fqdn("web");
    let mut config = ProxyConfig {
        identity: client_identity(&[]),
        services: vec![service("web", Some(vip), "tcp-web", port, &pods)],
        clusters: clusters_by_version(&host, port, &pods, false),
        outbound: vec![outbound(&host, port, Protocol::Tcp, &[vip], Vec::new())],
        ..Default::default()
    };
    for c in &mut config.clusters {
        c.load_balancer.simple = Some(ferry_model::istio::destination_rule::SimpleLb::RoundRobin);
        c.outlier_detection = Some(OutlierDetection {
            consecutive_5xx_errors: Some(2),
            max_ejection_percent: Some(50),
            ..Default::default()
        });
    }
    let proxy = start_proxy(SocketAddr::new(vip, port), config);
    let counts = tally(proxy.listeners[0], 60, b"");
    let failed = counts.get("<closed>").copied().unwrap_or(0);
    // Round robin reaches the dead endpoint every third connection until two failures eject
    // it (for 30 s); everything after goes to the live two.
    assert_eq!(failed, 2, "{counts:?}");
    assert_eq!(
        metric(
            &proxy,
            "istio_tcp_connections_opened_total",
            &["response_flags=\"UF\""]
        ),
        2.0
    );
}

#[test]
fn cluster_idle_timeout_and_max_connection_duration_close_connections() {
    use ferry_model::Duration as D;
    use std::io::Write;
    use std::time::Instant;
    let lives = |tcp: TcpSettings, base: u8, keep_talking: bool| -> Duration {
        let (pods, port, vip) = canary(base);
        let mut config = canary_config(&pods, port, vip, Vec::new());
        for c in &mut config.clusters {
            c.connection_pool = Some(ConnectionPoolSettings {
                tcp: Some(tcp.clone()),
                http: None,
            });
        }
        let proxy = start_proxy(SocketAddr::new(vip, port), config);
        let mut s = TcpStream::connect(proxy.listeners[0]).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let started = Instant::now();
        let mut buf = [0u8; 64];
        loop {
            assert!(started.elapsed() < Duration::from_secs(5), "never closed");
            if keep_talking {
                let _ = s.write_all(b"ping");
            }
            match s.read(&mut buf) {
                Ok(0) => return started.elapsed(),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return started.elapsed(),
            }
        }
    };
    let idle = lives(
        TcpSettings {
            idle_timeout: D::parse("300ms").ok(),
            ..Default::default()
        },
        100,
        false,
    );
    assert!(
        idle >= Duration::from_millis(250) && idle < Duration::from_secs(2),
        "{idle:?}"
    );
    // Traffic keeps the connection alive past the idle timeout, not past its longest life.
    let max = lives(
        TcpSettings {
            idle_timeout: D::parse("300ms").ok(),
            max_connection_duration: D::parse("800ms").ok(),
            ..Default::default()
        },
        110,
        true,
    );
    assert!(
        max >= Duration::from_millis(750) && max < Duration::from_secs(3),
        "{max:?}"
    );
}

#[test]
fn example_configurations_load_with_their_routes_and_policies() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let canary = ferry_proxy::config::file::load(&examples.join("redis-canary/proxy-config.conf"))
        .unwrap_or_else(|e| panic!("{e}"));
    let routes = canary
        .routes
        .routes(SocketAddr::new(ip("127.0.0.100"), 6379))
        .expect("the cluster IP is routed");
    assert_eq!(routes.tcp.len(), 1);
    assert!(
        canary
            .routes
            .cluster("outbound|6379|v2|redis.default.svc.cluster.local")
            .is_some()
    );
    let faults = ferry_proxy::config::file::load(&examples.join("redis-faults/proxy-config.conf"))
        .unwrap_or_else(|e| panic!("{e}"));
    let routes = faults
        .routes
        .routes(SocketAddr::new(ip("127.0.0.1"), 6379))
        .expect("routed");
    assert_eq!(routes.redis.len(), 1);
    let http = ferry_proxy::config::file::load(&examples.join("http-routing/proxy-config.conf"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!http.config.outbound.is_empty());
}
