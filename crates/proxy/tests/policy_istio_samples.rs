//! Istio's own samples applied to equivalent Ferry services, at proxy level over loopback:
//!
//! - **tcp-echo** (Istio's "TCP traffic shifting" task): `tcp-echo` v1 answers `one <line>`,
//!   v2 `two <line>`; first every connection to v1 (`tcp-echo-all-v1`), then 80/20
//!   (`tcp-echo-20-v2`) on port 9000 only, while port 9001 (`tcp-other`), which the rule's
//!   `port` match leaves out, keeps the default route over both versions.
//! - **bookinfo**: `reviews` v1/v2/v3 routed by the `end-user: jason` header
//!   (`virtual-service-reviews-test-v2`, `virtual-service-reviews-jason-v2-v3`), weighted
//!   (`virtual-service-reviews-80-20`, `-50-v3`), the `ratings` faults for jason
//!   (`virtual-service-ratings-test-delay`, `-test-abort`) and the request timeout task.
//!
//! The configurations are what the control plane compiles from the samples' YAML (quoted
//! above each test); the pods are small servers in the test.

mod http_routing_support;
mod routing_support;

use ferry_model::Duration as D;
use ferry_model::istio::virtual_service::{
    FaultAbort, FaultDelay, HttpFaultInjection, HttpMatchRequest, L4MatchAttributes,
};
use ferry_model::istio::{Percent, StringMatch};
use ferry_proxy::config::{
    Endpoint, HttpRouteRule, HttpWeightedCluster, Protocol, ProxyConfig, Service, ServicePort,
    TcpRouteRule,
};
use ferry_proxy::server::Running;
use http_routing_support::{Reply, get, http_server};
use routing_support::*;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Istio's tcp-echo server: answers each line with `<prefix> <line>`.
fn tcp_echo(addr: SocketAddr, prefix: &str) {
    let listener = bind_endpoint(addr);
    let prefix = prefix.to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let prefix = prefix.clone();
            std::thread::spawn(move || {
                let Ok(mut w) = stream.try_clone() else {
                    return;
                };
                let mut r = BufReader::new(stream);
                let mut line = String::new();
                while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
                    if w.write_all(format!("{prefix} {}\n", line.trim_end()).as_bytes())
                        .is_err()
                    {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
}

/// The `tcp-echo` Service: ports 9000 (`tcp`) and 9001 (`tcp-other`), both served by every
/// pod; two ports free on both pod addresses stand in for them.
struct TcpEcho {
    pods: Vec<Pod>,
    ports: [u16; 2],
    vip: IpAddr,
}

fn tcp_echo_service() -> TcpEcho {
    let pods = vec![pod(10, "tcp-echo-v1", "v1"), pod(11, "tcp-echo-v2", "v2")];
    let ips: Vec<IpAddr> = pods.iter().map(|p| p.ip).collect();
    let first = shared_port(&ips);
    for (p, prefix) in pods.iter().zip(["one", "two"]) {
        tcp_echo(SocketAddr::new(p.ip, first), prefix);
    }
    let second = shared_port(&ips);
    for (p, prefix) in pods.iter().zip(["one", "two"]) {
        tcp_echo(SocketAddr::new(p.ip, second), prefix);
    }
    TcpEcho {
        pods,
        ports: [first, second],
        vip: IpAddr::from([127, 0, 0, 20]),
    }
}

impl TcpEcho {
    /// The client's proxy with the VirtualService's TCP rules (the same list on each port,
    /// as the compiler copies a VirtualService's rules to every port of its host), dialled
    /// to `port`.
    fn proxy(&self, rules: impl Fn(u16) -> Vec<TcpRouteRule>, port: u16) -> Running {
        let host = fqdn("tcp-echo");
        let svc = Service {
            name: "tcp-echo".into(),
            namespace: "default".into(),
            cluster_ip: Some(self.vip),
            ports: vec![
                ServicePort {
                    name: "tcp".into(),
                    port: self.ports[0],
                    ..Default::default()
                },
                ServicePort {
                    name: "tcp-other".into(),
                    port: self.ports[1],
                    ..Default::default()
                },
            ],
            endpoints: self
                .pods
                .iter()
                .map(|p| Endpoint {
                    ip: p.ip,
                    pod: p.name.clone(),
                    workload: p.name.clone(),
                    namespace: None,
                    service_account: "default".into(),
                    labels: [
                        ("app".to_string(), "tcp-echo".to_string()),
                        ("version".to_string(), p.version.clone()),
                    ]
                    .into(),
                    has_sidecar: false,
                    ready: true,
                })
                .collect(),
        };
        let mut clusters = Vec::new();
        let mut out = Vec::new();
        for p in self.ports {
            clusters.extend(clusters_by_version(&host, p, &self.pods, false));
            out.push(outbound(&host, p, Protocol::Tcp, &[self.vip], rules(p)));
        }
        let config = ProxyConfig {
            identity: client_identity(&[("app", "sleep")]),
            services: vec![svc],
            clusters,
            outbound: out,
            ..Default::default()
        };
        start_proxy(SocketAddr::new(self.vip, port), config)
    }
}

/// `echo hello | nc tcp-echo PORT`, `n` times: answers counted.
fn nc(proxy: &Running, n: usize) -> BTreeMap<String, usize> {
    tally(proxy.listeners[0], n, b"hello\n")
}

/// ```yaml
/// # tcp-echo-all-v1.yaml (mesh form)
/// kind: DestinationRule
/// spec: {host: tcp-echo, subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]}
/// ---
/// kind: VirtualService
/// spec:
///   hosts: [tcp-echo]
///   tcp:
///   - match: [{port: 9000}]
///     route: [{destination: {host: tcp-echo, port: {number: 9000}, subset: v1}}]
/// ---
/// # tcp-echo-20-v2.yaml: the same route with v1 weight 80, v2 weight 20
/// ```
#[test]
fn tcp_echo_traffic_shifting_80_20() {
    let echo = tcp_echo_service();
    let host = fqdn("tcp-echo");
    let [main, other] = echo.ports;
    let on_main = |dests: Vec<(&'static str, u32)>| {
        let host = host.clone();
        move |_port: u16| {
            vec![TcpRouteRule {
                matches: vec![L4MatchAttributes {
                    port: Some(u32::from(main)),
                    ..Default::default()
                }],
                route: weighted(
                    &dests
                        .iter()
                        .map(|(s, w)| (to(&host, main, Some(s)), *w))
                        .collect::<Vec<_>>(),
                ),
            }]
        }
    };
    // All to v1.
    let all_v1 = echo.proxy(on_main(vec![("v1", 100)]), main);
    let counts = nc(&all_v1, 50);
    assert_eq!(counts.get("one hello"), Some(&50), "{counts:?}");

    // 80/20.
    let shifted = echo.proxy(on_main(vec![("v1", 80), ("v2", 20)]), main);
    let n = 2_000;
    let counts = nc(&shifted, n);
    let two = counts.get("two hello").copied().unwrap_or(0);
    eprintln!("tcp-echo 80/20 over {n} connections: {counts:?}");
    assert_eq!(
        counts.get("one hello").copied().unwrap_or(0) + two,
        n,
        "{counts:?}"
    );
    // 20% ± 3 points (sd 0.9 points).
    assert!((340..=460).contains(&two), "{counts:?}");
    let opened = |v: &str| {
        metric(
            &shifted,
            "istio_tcp_connections_opened_total",
            &[&format!("destination_version=\"{v}\"")],
        )
    };
    assert_eq!(opened("v2"), two as f64);
    assert_eq!(opened("v1") + opened("v2"), n as f64);

    // Port 9001 is not matched: the default route, both versions.
    let other_port = echo.proxy(on_main(vec![("v1", 80), ("v2", 20)]), other);
    let counts = nc(&other_port, 200);
    let two = counts.get("two hello").copied().unwrap_or(0);
    // Least request over two equally idle pods: about half each.
    assert!((60..=140).contains(&two), "{counts:?}");
}

/// Bookinfo's `reviews` (v1, v2, v3) and `ratings` (v1), HTTP on their own ports.
struct Bookinfo {
    reviews: Vec<Pod>,
    reviews_port: u16,
    ratings: Vec<Pod>,
    ratings_port: u16,
}

const REVIEWS_VIP: [u8; 4] = [127, 0, 0, 40];
const RATINGS_VIP: [u8; 4] = [127, 0, 0, 41];

fn bookinfo() -> Bookinfo {
    let reviews = vec![
        pod(30, "reviews-v1", "v1"),
        pod(31, "reviews-v2", "v2"),
        pod(32, "reviews-v3", "v3"),
    ];
    let ips: Vec<IpAddr> = reviews.iter().map(|p| p.ip).collect();
    let reviews_port = shared_port(&ips);
    for p in &reviews {
        http_server(SocketAddr::new(p.ip, reviews_port), &p.name);
    }
    let ratings = vec![pod(35, "ratings-v1", "v1")];
    let ratings_port = shared_port(&[ratings[0].ip]);
    http_server(SocketAddr::new(ratings[0].ip, ratings_port), "ratings-v1");
    Bookinfo {
        reviews,
        reviews_port,
        ratings,
        ratings_port,
    }
}

fn dest(host: &str, port: u16, subset: &str, weight: u32) -> HttpWeightedCluster {
    HttpWeightedCluster {
        destination: to(host, port, Some(subset)),
        weight,
        headers: None,
    }
}

fn jason() -> HttpMatchRequest {
    HttpMatchRequest {
        headers: [(
            "end-user".to_string(),
            StringMatch {
                exact: Some("jason".into()),
                ..Default::default()
            },
        )]
        .into(),
        ..Default::default()
    }
}

impl Bookinfo {
    /// productpage's sidecar with `reviews` and `ratings` rules, dialled to `which`
    /// (`"reviews"` or `"ratings"`).
    fn productpage(
        &self,
        reviews: Vec<HttpRouteRule>,
        ratings: Vec<HttpRouteRule>,
        which: &str,
    ) -> Running {
        let mut services = Vec::new();
        let mut clusters = Vec::new();
        let mut out = Vec::new();
        for (name, pods, port, vip, rules) in [
            (
                "reviews",
                &self.reviews,
                self.reviews_port,
                REVIEWS_VIP,
                reviews,
            ),
            (
                "ratings",
                &self.ratings,
                self.ratings_port,
                RATINGS_VIP,
                ratings,
            ),
        ] {
            let host = fqdn(name);
            let vip = IpAddr::from(vip);
            services.push(service(name, Some(vip), "http", port, pods));
            clusters.extend(clusters_by_version(&host, port, pods, false));
            let mut o = outbound(&host, port, Protocol::Http, &[vip], Vec::new());
            o.virtual_service = (!rules.is_empty()).then(|| format!("default/{name}"));
            o.http = rules;
            out.push(o);
        }
        let config = ProxyConfig {
            identity: client_identity(&[("app", "productpage"), ("version", "v1")]),
            services,
            clusters,
            outbound: out,
            ..Default::default()
        };
        let dst = match which {
            "reviews" => SocketAddr::new(IpAddr::from(REVIEWS_VIP), self.reviews_port),
            _ => SocketAddr::new(IpAddr::from(RATINGS_VIP), self.ratings_port),
        };
        start_proxy(dst, config)
    }

    fn reviews(&self, subset: &str, weight: u32) -> HttpWeightedCluster {
        dest(&fqdn("reviews"), self.reviews_port, subset, weight)
    }

    fn ratings(&self) -> HttpWeightedCluster {
        dest(&fqdn("ratings"), self.ratings_port, "v1", 100)
    }
}

fn version_of(r: &Reply) -> String {
    r.pod()
        .map(|p| p.rsplit('-').next().unwrap_or_default().to_string())
        .unwrap_or_else(|| format!("status {}", r.status))
}

fn call(p: &Running, user: Option<&str>) -> Reply {
    let mut h = vec![("host", "reviews:9080")];
    if let Some(u) = user {
        h.push(("end-user", u));
    }
    get(p.listeners[0], "/reviews/0", &h)
}

/// ```yaml
/// # virtual-service-reviews-test-v2.yaml
/// http:
/// - match: [{headers: {end-user: {exact: jason}}}]
///   route: [{destination: {host: reviews, subset: v2}}]
/// - route: [{destination: {host: reviews, subset: v1}}]
/// # virtual-service-reviews-jason-v2-v3.yaml: the same with v3 in the second rule
/// ```
#[test]
fn bookinfo_reviews_by_end_user() {
    let b = bookinfo();
    for (fallback, want) in [("v1", "v1"), ("v3", "v3")] {
        let p = b.productpage(
            vec![
                HttpRouteRule {
                    matches: vec![jason()],
                    route: vec![b.reviews("v2", 100)],
                    ..Default::default()
                },
                HttpRouteRule {
                    route: vec![b.reviews(fallback, 100)],
                    ..Default::default()
                },
            ],
            Vec::new(),
            "reviews",
        );
        for _ in 0..20 {
            assert_eq!(version_of(&call(&p, Some("jason"))), "v2");
            assert_eq!(version_of(&call(&p, None)), want);
            // Exact match: case and other users do not match.
            assert_eq!(version_of(&call(&p, Some("Jason"))), want);
            assert_eq!(version_of(&call(&p, Some("mike"))), want);
        }
    }
}

/// ```yaml
/// # virtual-service-reviews-80-20.yaml
/// http:
/// - route:
///   - {destination: {host: reviews, subset: v1}, weight: 80}
///   - {destination: {host: reviews, subset: v2}, weight: 20}
/// # virtual-service-reviews-50-v3.yaml: v1 50, v3 50
/// ```
#[test]
fn bookinfo_reviews_weighted() {
    let b = bookinfo();
    let n = 1_000;
    let shares = |rules: Vec<HttpWeightedCluster>| {
        let p = b.productpage(
            vec![HttpRouteRule {
                route: rules,
                ..Default::default()
            }],
            Vec::new(),
            "reviews",
        );
        let mut c: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..n {
            *c.entry(version_of(&call(&p, None))).or_default() += 1;
        }
        c
    };
    let c = shares(vec![b.reviews("v1", 80), b.reviews("v2", 20)]);
    eprintln!("reviews 80/20 over {n} requests: {c:?}");
    let v2 = c.get("v2").copied().unwrap_or(0);
    assert_eq!(c.get("v1").copied().unwrap_or(0) + v2, n, "{c:?}");
    // Binomial(1000, 0.2): sd ~12.6; 5 sd.
    assert!((137..=263).contains(&v2), "{c:?}");
    let c = shares(vec![b.reviews("v1", 50), b.reviews("v3", 50)]);
    eprintln!("reviews 50/50 v1/v3 over {n} requests: {c:?}");
    let v3 = c.get("v3").copied().unwrap_or(0);
    assert_eq!(c.get("v1").copied().unwrap_or(0) + v3, n, "{c:?}");
    // Binomial(1000, 0.5): sd ~15.8; 5 sd.
    assert!((421..=579).contains(&v3), "{c:?}");
}

/// ```yaml
/// # virtual-service-ratings-test-delay.yaml (7 s in the sample; 400 ms here)
/// http:
/// - match: [{headers: {end-user: {exact: jason}}}]
///   fault: {delay: {percentage: {value: 100.0}, fixedDelay: 7s}}
///   route: [{destination: {host: ratings, subset: v1}}]
/// - route: [{destination: {host: ratings, subset: v1}}]
/// # virtual-service-ratings-test-abort.yaml
/// - match: [{headers: {end-user: {exact: jason}}}]
///   fault: {abort: {percentage: {value: 100.0}, httpStatus: 500}}
///   route: [{destination: {host: ratings, subset: v1}}]
/// - route: [{destination: {host: ratings, subset: v1}}]
/// ```
#[test]
fn bookinfo_ratings_faults_for_jason() {
    let b = bookinfo();
    let fault_rule = |fault: HttpFaultInjection| {
        vec![
            HttpRouteRule {
                matches: vec![jason()],
                route: vec![b.ratings()],
                fault: Some(fault),
                ..Default::default()
            },
            HttpRouteRule {
                route: vec![b.ratings()],
                ..Default::default()
            },
        ]
    };
    let all = Some(Percent { value: Some(100.0) });
    let p = b.productpage(
        Vec::new(),
        fault_rule(HttpFaultInjection {
            delay: Some(FaultDelay {
                fixed_delay: D::parse("400ms").ok(),
                percentage: all.clone(),
                ..Default::default()
            }),
            abort: None,
        }),
        "ratings",
    );
    let timed = |user: Option<&str>| {
        let started = Instant::now();
        let r = call(&p, user);
        (r.status, r.pod().map(str::to_string), started.elapsed())
    };
    let (status, pod, took) = timed(Some("jason"));
    assert_eq!((status, pod.as_deref()), (200, Some("ratings-v1")));
    assert!(took >= Duration::from_millis(400), "{took:?}");
    let (status, _, took) = timed(Some("mike"));
    assert_eq!(status, 200);
    assert!(took < Duration::from_millis(300), "{took:?}");

    let p = b.productpage(
        Vec::new(),
        fault_rule(HttpFaultInjection {
            abort: Some(FaultAbort {
                http_status: Some(500),
                percentage: all,
                ..Default::default()
            }),
            delay: None,
        }),
        "ratings",
    );
    for _ in 0..10 {
        let r = call(&p, Some("jason"));
        assert_eq!((r.status, r.pod()), (500, None));
        assert_eq!(call(&p, None).pod(), Some("ratings-v1"));
    }
    assert_eq!(
        metric(
            &p,
            "istio_requests_total",
            &["response_code=\"500\"", "response_flags=\"FI\""]
        ),
        10.0
    );
}

/// The request-timeouts task: `reviews` to v2 with `timeout: 0.5s` while ratings (behind
/// it) is slow; the upstream's slowness stands in for the 2 s ratings delay.
#[test]
fn bookinfo_reviews_timeout() {
    let b = bookinfo();
    let p = b.productpage(
        vec![HttpRouteRule {
            route: vec![b.reviews("v2", 100)],
            timeout: D::parse("0.5s").ok(),
            ..Default::default()
        }],
        Vec::new(),
        "reviews",
    );
    let started = Instant::now();
    let r = get(
        p.listeners[0],
        "/reviews/0",
        &[("host", "reviews:9080"), ("x-delay-ms", "2000")],
    );
    let took = started.elapsed();
    assert_eq!(r.status, 504);
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1_500),
        "{took:?}"
    );
    assert_eq!(version_of(&call(&p, None)), "v2");
    assert_eq!(
        metric(
            &p,
            "istio_requests_total",
            &["response_code=\"504\"", "response_flags=\"UT\""]
        ),
        1.0
    );
}
