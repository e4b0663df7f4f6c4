//! HTTP routing in the proxy, in-process over loopback: VirtualService matches (uri exact,
//! prefix and regex, headers, withoutHeaders, method, authority, query parameters), weighted
//! destinations per request, fault injection (aborts with a binomial tolerance, delays,
//! gRPC statuses), timeouts, retries (explicit, Istio's default, exhausted), rewrites,
//! header changes, redirects, direct responses, mirrors, CORS, consistent hashing, outlier
//! ejection on 5xx and connection-pool overflow — with Istio's `response_code` and
//! `response_flags` in the metrics.

mod http_routing_support;
mod routing_support;

use ferry_model::Duration as D;
use ferry_model::istio::destination_rule::{
    ConnectionPoolSettings, ConsistentHashLb, H2UpgradePolicy, HttpSettings, LoadBalancerSettings,
    OutlierDetection, SimpleLb, TcpSettings,
};
use ferry_model::istio::virtual_service::{
    CorsPolicy, FaultAbort, FaultDelay, HeaderOperations, Headers, HttpBody, HttpDirectResponse,
    HttpFaultInjection, HttpMatchRequest, HttpRedirect, HttpRetry, HttpRewrite, RegexRewrite,
};
use ferry_model::istio::{Percent, StringMatch};
use ferry_proxy::config::{
    Cluster, HttpRouteRule, HttpWeightedCluster, Mirror, Protocol, ProxyConfig,
};
use ferry_proxy::server::Running;
use http_routing_support::*;
use routing_support::*;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The `web` service: pods `web-v1-0`, `web-v1-1`, `web-v2-0` (and a `shadow` v3 pod).
struct Web {
    pods: Vec<Pod>,
    port: u16,
    vip: IpAddr,
    seen: Vec<Arc<Seen>>,
}

fn web(base: u8) -> Web {
    let pods = vec![
        pod(base, "web-v1-0", "v1"),
        pod(base + 1, "web-v1-1", "v1"),
        pod(base + 2, "web-v2-0", "v2"),
        pod(base + 3, "web-v3-0", "v3"),
    ];
    let ips: Vec<IpAddr> = pods.iter().map(|p| p.ip).collect();
    let port = shared_port(&ips);
    let seen = pods
        .iter()
        .map(|p| http_server(SocketAddr::new(p.ip, port), &p.name))
        .collect();
    Web {
        pods,
        port,
        vip: IpAddr::from([127, 0, 0, base + 100]),
        seen,
    }
}

impl Web {
    fn host(&self) -> String {
        fqdn("web")
    }

    fn dest(&self, subset: Option<&str>, weight: u32) -> HttpWeightedCluster {
        HttpWeightedCluster {
            destination: to(&self.host(), self.port, subset),
            weight,
            headers: None,
        }
    }

    /// A proxy with these HTTP rules (v1, v2 and v3 subsets; the default cluster holds only
    /// the v1 and v2 pods, as if v3 were another deployment).
    fn proxy(&self, http: Vec<HttpRouteRule>, tweak: impl Fn(&mut Cluster)) -> Running {
        let host = self.host();
        let mut clusters = clusters_by_version(&host, self.port, &self.pods, false);
        clusters[0].endpoints.retain(|e| e.pod != "web-v3-0");
        for c in &mut clusters {
            tweak(c);
        }
        let mut out = outbound(&host, self.port, Protocol::Http, &[self.vip], Vec::new());
        out.virtual_service = (!http.is_empty()).then(|| "default/web".to_string());
        out.http = http;
        let config = ProxyConfig {
            identity: client_identity(&[("app", "client")]),
            services: vec![service(
                "web",
                Some(self.vip),
                "http-web",
                self.port,
                &self.pods[..3],
            )],
            clusters,
            outbound: vec![out],
            ..Default::default()
        };
        start_proxy(SocketAddr::new(self.vip, self.port), config)
    }
}

fn sm(kind: &str, v: &str) -> StringMatch {
    let mut m = StringMatch::default();
    match kind {
        "exact" => m.exact = Some(v.into()),
        "prefix" => m.prefix = Some(v.into()),
        _ => m.regex = Some(v.into()),
    }
    m
}

fn pct(v: f64) -> Option<Percent> {
    Some(Percent { value: Some(v) })
}

fn requests(proxy: &Running, code: &str, flags: &str) -> f64 {
    metric(
        proxy,
        "istio_requests_total",
        &[
            &format!("response_code=\"{code}\""),
            &format!("response_flags=\"{flags}\""),
        ],
    )
}

fn l(p: &Running) -> SocketAddr {
    p.listeners[0]
}

#[test]
fn matches_pick_the_first_rule_and_unmatched_requests_get_404() {
    let w = web(10);
    let rule = |m: HttpMatchRequest, subset: &str| HttpRouteRule {
        matches: vec![m],
        route: vec![w.dest(Some(subset), 100)],
        ..Default::default()
    };
    let rules = vec![
        rule(
            HttpMatchRequest {
                headers: [("end-user".to_string(), sm("exact", "jason"))].into(),
                ..Default::default()
            },
            "v2",
        ),
        rule(
            HttpMatchRequest {
                uri: Some(sm("regex", "/api/v[0-9]+/reviews/.*")),
                without_headers: [("x-legacy".to_string(), StringMatch::default())].into(),
                ..Default::default()
            },
            "v3",
        ),
        rule(
            HttpMatchRequest {
                uri: Some(sm("exact", "/exact")),
                method: Some(sm("exact", "POST")),
                ..Default::default()
            },
            "v2",
        ),
        rule(
            HttpMatchRequest {
                uri: Some(sm("prefix", "/shop")),
                query_params: [("tier".to_string(), sm("exact", "gold"))].into(),
                ..Default::default()
            },
            "v3",
        ),
        rule(
            HttpMatchRequest {
                uri: Some(sm("prefix", "/")),
                authority: Some(sm("prefix", "web")),
                ..Default::default()
            },
            "v1",
        ),
    ];
    let p = w.proxy(rules, |_| {});
    let version = |r: Reply| {
        r.pod()
            .map(|p| p[4..6].to_string())
            .unwrap_or(format!("status {}", r.status))
    };
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        ("GET", "/anything", vec![("end-user", "jason")], "v2"),
        ("GET", "/api/v1/reviews/7", vec![], "v3"),
        ("GET", "/api/v1/reviews/7", vec![("x-legacy", "1")], "v1"),
        ("POST", "/exact", vec![], "v2"),
        ("GET", "/exact", vec![], "v1"),
        ("GET", "/shop/items?tier=gold", vec![], "v3"),
        ("GET", "/shop/items?tier=silver", vec![], "v1"),
        (
            "GET",
            "/x",
            vec![("host", "other.example.com")],
            "status 404",
        ),
    ];
    for (method, path, headers, want) in cases {
        let r = request(l(&p), method, path, &headers, "");
        assert_eq!(version(r), want, "{method} {path} {headers:?}");
    }
    assert_eq!(requests(&p, "404", "NR"), 1.0);
}

#[test]
fn weighted_destinations_split_requests() {
    let w = web(20);
    let p = w.proxy(
        vec![HttpRouteRule {
            route: vec![w.dest(Some("v1"), 75), w.dest(Some("v2"), 25)],
            ..Default::default()
        }],
        |_| {},
    );
    let mut v2 = 0;
    for _ in 0..1_000 {
        if get(l(&p), "/", &[]).pod() == Some("web-v2-0") {
            v2 += 1;
        }
    }
    // Binomial(1000, 0.25): sd ~13.7; 5 sd.
    assert!((181..=319).contains(&v2), "{v2}");
    assert_eq!(
        metric(&p, "istio_requests_total", &["destination_version=\"v2\""]),
        f64::from(v2)
    );
}

#[test]
fn aborts_hit_their_share_within_binomial_tolerance() {
    let w = web(30);
    let p = w.proxy(
        vec![HttpRouteRule {
            route: vec![w.dest(None, 100)],
            fault: Some(HttpFaultInjection {
                abort: Some(FaultAbort {
                    http_status: Some(503),
                    percentage: pct(50.0),
                    ..Default::default()
                }),
                delay: None,
            }),
            ..Default::default()
        }],
        |_| {},
    );
    let n = 1_000;
    let aborted = (0..n)
        .filter(|_| get(l(&p), "/", &[]).status == 503)
        .count();
    // Binomial(1000, 0.5): sd ~15.8; 5 sd.
    assert!((421..=579).contains(&aborted), "{aborted}");
    assert_eq!(requests(&p, "503", "FI"), aborted as f64);
    assert_eq!(requests(&p, "200", "-"), (n - aborted) as f64);
    // Left out, the percentage means no request (as Istio: Envoy reads 0%).
    let p = w.proxy(
        vec![HttpRouteRule {
            route: vec![w.dest(None, 100)],
            fault: Some(HttpFaultInjection {
                abort: Some(FaultAbort {
                    http_status: Some(503),
                    ..Default::default()
                }),
                delay: None,
            }),
            ..Default::default()
        }],
        |_| {},
    );
    assert!((0..20).all(|_| get(l(&p), "/", &[]).status == 200));
}

#[test]
fn delays_and_grpc_aborts() {
    let w = web(40);
    let p = w.proxy(
        vec![
            HttpRouteRule {
                matches: vec![HttpMatchRequest {
                    uri: Some(sm("prefix", "/grpc")),
                    ..Default::default()
                }],
                route: vec![w.dest(None, 100)],
                fault: Some(HttpFaultInjection {
                    abort: Some(FaultAbort {
                        grpc_status: Some("UNAVAILABLE".into()),
                        percentage: pct(100.0),
                        ..Default::default()
                    }),
                    delay: None,
                }),
                ..Default::default()
            },
            HttpRouteRule {
                route: vec![w.dest(None, 100)],
                fault: Some(HttpFaultInjection {
                    delay: Some(FaultDelay {
                        fixed_delay: D::parse("300ms").ok(),
                        percentage: pct(100.0),
                        ..Default::default()
                    }),
                    abort: None,
                }),
                ..Default::default()
            },
        ],
        |_| {},
    );
    let started = Instant::now();
    let r = get(l(&p), "/slow", &[]);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.status, 200);
    assert_eq!(requests(&p, "200", "DI"), 1.0);
    let r = get(l(&p), "/grpc.Health/Check", &[]);
    assert_eq!(
        (r.status, r.headers.get("grpc-status").map(String::as_str)),
        (200, Some("14"))
    );
    assert_eq!(requests(&p, "200", "FI"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_error_aborts_reset_the_stream() {
    use http_body_util::Empty;
    let w = web(108);
    let p = w.proxy(
        vec![HttpRouteRule {
            route: vec![w.dest(None, 100)],
            fault: Some(HttpFaultInjection {
                abort: Some(FaultAbort {
                    http2_error: Some("REFUSED_STREAM".into()),
                    percentage: pct(100.0),
                    ..Default::default()
                }),
                delay: None,
            }),
            ..Default::default()
        }],
        |_| {},
    );
    // HTTP/2: the stream is reset with that code.
    let mut sender = h2_client(l(&p)).await;
    let request = hyper::Request::get("http://web.default.svc.cluster.local/")
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    let error = sender.send_request(request).await.expect_err("a reset");
    let reason = std::error::Error::source(&error)
        .and_then(|e| e.downcast_ref::<h2::Error>())
        .and_then(h2::Error::reason);
    assert_eq!(reason, Some(h2::Reason::REFUSED_STREAM), "{error:?}");
    // HTTP/1.1: the connection is closed without an answer.
    let addr = l(&p);
    let reply = tokio::task::spawn_blocking(move || get(addr, "/", &[]))
        .await
        .expect("request");
    assert_eq!((reply.status, reply.body.as_str()), (0, ""), "{reply:?}");
    assert_eq!(requests(&p, "0", "FI"), 2.0);
    assert_eq!(
        w.seen
            .iter()
            .map(|s| s.requests.load(Ordering::Relaxed))
            .sum::<usize>(),
        0
    );
}

#[test]
fn route_timeout_answers_504_ut() {
    let w = web(50);
    let p = w.proxy(
        vec![HttpRouteRule {
            route: vec![w.dest(None, 100)],
            timeout: D::parse("200ms").ok(),
            ..Default::default()
        }],
        |_| {},
    );
    let started = Instant::now();
    let r = get(l(&p), "/", &[("x-delay-ms", "1500")]);
    assert_eq!(r.status, 504);
    assert!(started.elapsed() < Duration::from_millis(1_200));
    assert_eq!(requests(&p, "504", "UT"), 1.0);
    assert_eq!(get(l(&p), "/", &[]).status, 200);
}

#[test]
fn retries_explicit_default_and_exhausted() {
    let w = web(60);
    // web-v1-0 fails; with 3 retries on 5xx on other hosts every request succeeds.
    let p = w.proxy(
        vec![HttpRouteRule {
            route: vec![w.dest(None, 100)],
            retries: Some(HttpRetry {
                attempts: Some(3),
                retry_on: Some("5xx".into()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        |c| c.load_balancer.simple = Some(SimpleLb::RoundRobin),
    );
    for _ in 0..30 {
        assert_eq!(get(l(&p), "/", &[("x-fail", "web-v1-0")]).status, 200);
    }
    // No VirtualService: Istio's default policy retries 503 twice.
    let p = w.proxy(Vec::new(), |c| {
        c.load_balancer.simple = Some(SimpleLb::RoundRobin)
    });
    for _ in 0..30 {
        assert_eq!(get(l(&p), "/", &[("x-fail", "web-v1-0")]).status, 200);
    }
    // ...but not 500 (not in its conditions).
    let statuses: Vec<u16> = (0..6)
        .map(|_| get(l(&p), "/", &[("x-status", "500")]).status)
        .collect();
    assert!(statuses.iter().all(|s| *s == 500));
    // Every endpoint fails: the retries run out, URX.
    let before = w
        .seen
        .iter()
        .map(|s| s.requests.load(Ordering::Relaxed))
        .sum::<usize>();
    let r = get(l(&p), "/", &[("x-status", "503")]);
    assert_eq!(r.status, 503);
    let after = w
        .seen
        .iter()
        .map(|s| s.requests.load(Ordering::Relaxed))
        .sum::<usize>();
    assert_eq!(after - before, 3, "one try and two retries");
    assert_eq!(requests(&p, "503", "URX"), 1.0);
    // attempts: 0 turns retries off.
    let p = w.proxy(
        vec![HttpRouteRule {
            route: vec![w.dest(None, 100)],
            retries: Some(HttpRetry {
                attempts: Some(0),
                ..Default::default()
            }),
            ..Default::default()
        }],
        |c| c.load_balancer.simple = Some(SimpleLb::RoundRobin),
    );
    let failed = (0..20)
        .filter(|_| get(l(&p), "/", &[("x-fail", "web-v1-0")]).status == 503)
        .count();
    // Round robin over web-v1-0, web-v1-1 and web-v2-0: every third request fails.
    assert_eq!(failed, 7);
}

#[test]
fn rewrites_and_header_changes() {
    let w = web(70);
    let ops = |set: &[(&str, &str)], add: &[(&str, &str)], remove: &[&str]| {
        Some(HeaderOperations {
            set: set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            add: add
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            remove: remove.iter().map(|s| s.to_string()).collect(),
        })
    };
    let mut v2 = w.dest(Some("v2"), 100);
    v2.headers = Some(Headers {
        request: ops(&[("x-dest", "v2")], &[], &[]),
        response: None,
    });
    let p = w.proxy(
        vec![
            HttpRouteRule {
                matches: vec![HttpMatchRequest {
                    uri: Some(sm("prefix", "/old/")),
                    ..Default::default()
                }],
                route: vec![v2],
                rewrite: Some(HttpRewrite {
                    uri: Some("/new/".into()),
                    authority: Some("rewritten.example.com".into()),
                    uri_regex_rewrite: None,
                }),
                headers: Some(Headers {
                    request: ops(&[("x-set", "1")], &[("x-add", "2")], &["x-secret"]),
                    response: ops(&[("x-served-by", "ferry")], &[], &["x-upstream"]),
                }),
                ..Default::default()
            },
            HttpRouteRule {
                matches: vec![HttpMatchRequest {
                    uri: Some(sm("prefix", "/service/")),
                    ..Default::default()
                }],
                route: vec![w.dest(None, 100)],
                rewrite: Some(HttpRewrite {
                    uri_regex_rewrite: Some(RegexRewrite {
                        pattern: Some("^/service/([^/]+)(/.*)$".into()),
                        rewrite: Some(r"\2/instance/\1".into()),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ],
        |_| {},
    );
    let r = get(
        l(&p),
        "/old/items?page=2",
        &[("x-secret", "s"), ("x-add", "1")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.path(), Some("/new/items?page=2"));
    assert_eq!(r.upstream_header("host"), Some("rewritten.example.com"));
    assert_eq!(r.upstream_header("x-set"), Some("1"));
    assert_eq!(r.upstream_header("x-dest"), Some("v2"));
    assert!(r.upstream_header("x-secret").is_none());
    assert_eq!(r.body.matches("h:x-add=").count(), 2, "{}", r.body);
    assert_eq!(
        r.headers.get("x-served-by").map(String::as_str),
        Some("ferry")
    );
    assert!(!r.headers.contains_key("x-upstream"));
    let r = get(l(&p), "/service/foo/v1/api", &[]);
    assert_eq!(r.path(), Some("/v1/api/instance/foo"));
}

#[test]
fn redirects_and_direct_responses() {
    let w = web(80);
    let p = w.proxy(
        vec![
            HttpRouteRule {
                matches: vec![HttpMatchRequest {
                    uri: Some(sm("exact", "/v1/getProductRatings")),
                    ..Default::default()
                }],
                redirect: Some(HttpRedirect {
                    uri: Some("/v1/bookRatings".into()),
                    authority: Some("newratings.default.svc.cluster.local".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            HttpRouteRule {
                matches: vec![HttpMatchRequest {
                    uri: Some(sm("prefix", "/health")),
                    ..Default::default()
                }],
                direct_response: Some(HttpDirectResponse {
                    status: Some(418),
                    body: Some(HttpBody {
                        string: Some("short and stout".into()),
                        bytes: None,
                    }),
                }),
                ..Default::default()
            },
        ],
        |_| {},
    );
    let r = get(l(&p), "/v1/getProductRatings?x=1", &[]);
    assert_eq!(r.status, 301);
    assert_eq!(
        r.headers.get("location").map(String::as_str),
        Some("http://newratings.default.svc.cluster.local/v1/bookRatings?x=1")
    );
    let r = get(l(&p), "/healthz", &[]);
    assert_eq!((r.status, r.body.as_str()), (418, "short and stout"));
    assert_eq!(requests(&p, "418", "-"), 1.0);
}

#[test]
fn mirrors_get_copies_with_shadow_hosts() {
    let w = web(90);
    let mirror = |percentage| Mirror {
        destination: to(&w.host(), w.port, Some("v3")),
        percentage,
    };
    let p = w.proxy(
        vec![HttpRouteRule {
            route: vec![w.dest(Some("v1"), 100)],
            mirrors: vec![mirror(100.0)],
            ..Default::default()
        }],
        |_| {},
    );
    for _ in 0..20 {
        let r = request(l(&p), "POST", "/orders", &[], "{\"id\":1}");
        assert_eq!(r.pod().map(|p| &p[..6]), Some("web-v1"));
    }
    let shadow = &w.seen[3];
    let deadline = Instant::now() + Duration::from_secs(5);
    while shadow.requests.load(Ordering::Relaxed) < 20 {
        assert!(
            Instant::now() < deadline,
            "mirrored requests did not arrive"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let hosts = shadow.hosts.lock().expect("lock").clone();
    assert!(
        hosts
            .iter()
            .all(|h| h == "web.default.svc.cluster.local-shadow"),
        "{hosts:?}"
    );
    // A quarter of the requests.
    let p = w.proxy(
        vec![HttpRouteRule {
            route: vec![w.dest(Some("v1"), 100)],
            mirrors: vec![mirror(25.0)],
            ..Default::default()
        }],
        |_| {},
    );
    let before = shadow.requests.load(Ordering::Relaxed);
    for _ in 0..400 {
        get(l(&p), "/", &[]);
    }
    std::thread::sleep(Duration::from_millis(300));
    let copies = shadow.requests.load(Ordering::Relaxed) - before;
    // Binomial(400, 0.25): sd ~8.7; 5 sd.
    assert!((57..=143).contains(&copies), "{copies}");
}

#[test]
fn cors_preflights_and_responses() {
    let w = web(110);
    let p = w.proxy(
        vec![HttpRouteRule {
            route: vec![w.dest(None, 100)],
            cors_policy: Some(CorsPolicy {
                allow_origins: vec![
                    sm("exact", "https://example.com"),
                    sm("regex", "https://.*\\.example\\.org"),
                ],
                allow_methods: vec!["POST".into(), "GET".into()],
                allow_headers: vec!["X-Foo".into()],
                expose_headers: vec!["X-Bar".into()],
                max_age: D::parse("24h").ok(),
                allow_credentials: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        }],
        |_| {},
    );
    let pre = |origin: &str| {
        request(
            l(&p),
            "OPTIONS",
            "/api",
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
            ],
            "",
        )
    };
    let r = pre("https://example.com");
    assert_eq!(r.status, 200);
    assert!(r.pod().is_none(), "answered by the proxy");
    let h = |r: &Reply, k: &str| r.headers.get(k).cloned().unwrap_or_default();
    assert_eq!(h(&r, "access-control-allow-origin"), "https://example.com");
    assert_eq!(h(&r, "access-control-allow-methods"), "POST,GET");
    assert_eq!(h(&r, "access-control-max-age"), "86400");
    assert_eq!(h(&r, "access-control-allow-credentials"), "true");
    // Unmatched preflights are forwarded (the default).
    assert!(pre("https://evil.com").pod().is_some());
    let r = get(l(&p), "/api", &[("origin", "https://a.example.org")]);
    assert_eq!(
        h(&r, "access-control-allow-origin"),
        "https://a.example.org"
    );
    assert_eq!(h(&r, "access-control-expose-headers"), "X-Bar");
    let r = get(l(&p), "/api", &[("origin", "https://evil.com")]);
    assert!(!r.headers.contains_key("access-control-allow-origin"));
}

#[test]
fn consistent_hash_on_a_header_sticks() {
    let w = web(120);
    let p = w.proxy(Vec::new(), |c| {
        c.load_balancer = LoadBalancerSettings {
            consistent_hash: Some(ConsistentHashLb {
                http_header_name: Some("x-user".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    });
    let mut owners = std::collections::BTreeSet::new();
    for user in 0..20 {
        let u = format!("user-{user}");
        let first = get(l(&p), "/", &[("x-user", &u)]).pod().map(str::to_string);
        for _ in 0..5 {
            assert_eq!(
                get(l(&p), "/", &[("x-user", &u)]).pod().map(str::to_string),
                first
            );
        }
        owners.insert(first);
    }
    assert!(owners.len() > 1, "keys spread over the endpoints");
}

#[test]
fn endpoints_returning_5xx_are_ejected() {
    let w = web(130);
    let p = w.proxy(
        vec![HttpRouteRule {
            route: vec![w.dest(None, 100)],
            retries: Some(HttpRetry {
                attempts: Some(0),
                ..Default::default()
            }),
            ..Default::default()
        }],
        |c| {
            c.load_balancer.simple = Some(SimpleLb::RoundRobin);
            c.outlier_detection = Some(OutlierDetection {
                consecutive_5xx_errors: Some(3),
                max_ejection_percent: Some(100),
                ..Default::default()
            });
        },
    );
    let failures = (0..60)
        .filter(|_| get(l(&p), "/", &[("x-fail", "web-v1-0")]).status == 503)
        .count();
    assert_eq!(failures, 3, "ejected after three 5xx in a row");
}

#[test]
fn pool_overflow_answers_503_uo() {
    let w = web(140);
    let p = w.proxy(
        vec![HttpRouteRule {
            route: vec![w.dest(Some("v2"), 100)],
            ..Default::default()
        }],
        |c| {
            c.connection_pool = Some(ConnectionPoolSettings {
                tcp: Some(TcpSettings {
                    max_connections: Some(1),
                    ..Default::default()
                }),
                http: Some(HttpSettings {
                    http1_max_pending_requests: Some(1),
                    ..Default::default()
                }),
            })
        },
    );
    let addr = l(&p);
    let slow: Vec<_> = (0..3)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(if i == 0 { 0 } else { 100 }));
            std::thread::spawn(move || get(addr, "/", &[("x-delay-ms", "600")]).status)
        })
        .collect();
    let mut statuses: Vec<u16> = slow
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    statuses.sort();
    // One in flight, one pending, one overflowing.
    assert_eq!(statuses, [200, 200, 503]);
    assert_eq!(requests(&p, "503", "UO"), 1.0);
}

fn http_pool(settings: HttpSettings) -> impl Fn(&mut Cluster) {
    move |c: &mut Cluster| {
        c.connection_pool = Some(ConnectionPoolSettings {
            tcp: None,
            http: Some(settings.clone()),
        })
    }
}

#[test]
fn upstream_http_connections_are_pooled_within_the_pool_settings() {
    let count = |s: &Seen| {
        (
            s.connections.load(Ordering::Relaxed),
            s.closed.load(Ordering::Relaxed),
        )
    };
    // Keep-alive toward the endpoint, whatever the client says about its own connection:
    // nine requests, one upstream connection.
    let w = web(100);
    let v2 = |w: &Web| {
        vec![HttpRouteRule {
            route: vec![w.dest(Some("v2"), 100)],
            ..Default::default()
        }]
    };
    let p = w.proxy(v2(&w), |_| {});
    for _ in 0..9 {
        assert_eq!(get(l(&p), "/", &[]).status, 200);
    }
    assert_eq!(count(&w.seen[2]), (1, 0), "one pooled connection");

    // maxRequestsPerConnection: 3 -> three connections for nine requests.
    let w = web(104);
    let p = w.proxy(
        v2(&w),
        http_pool(HttpSettings {
            max_requests_per_connection: Some(3),
            ..Default::default()
        }),
    );
    for _ in 0..9 {
        let r = get(l(&p), "/", &[]);
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(count(&w.seen[2]).0, 3, "a connection per three requests");

    // idleTimeout: 300ms -> the idle connection is closed soon after; without it, it stays.
    let w = web(154);
    let p = w.proxy(
        v2(&w),
        http_pool(HttpSettings {
            idle_timeout: D::parse("300ms").ok(),
            ..Default::default()
        }),
    );
    assert_eq!(get(l(&p), "/", &[]).status, 200);
    let closed = Instant::now();
    while count(&w.seen[2]).1 == 0 && closed.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = closed.elapsed();
    assert_eq!(count(&w.seen[2]), (1, 1), "closed when idle");
    assert!(after < Duration::from_secs(2), "closed after {after:?}");
}

/// An HTTP/2 (prior knowledge) client connection to `addr`.
async fn h2_client<B>(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

type Answer = hyper::Response<http_body_util::Full<bytes::Bytes>>;

/// Serves HTTP/1.1 and HTTP/2 (hyper) on `addr`, answering every request with `answer`.
fn hyper_server<F, Fut>(addr: SocketAddr, answer: F)
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Answer> + Send + 'static,
{
    let listener = bind_endpoint(addr);
    listener.set_nonblocking(true).expect("nonblocking");
    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let reply = answer(req);
                    async move { Ok::<_, std::convert::Infallible>(reply.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
}

/// An upstream on `addr` that answers with the version it was spoken to in and the Host
/// (or authority) it got.
fn version_server(addr: SocketAddr) {
    hyper_server(addr, |req| async move {
        let host = req
            .headers()
            .get("host")
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let body = format!("{:?} {host}", req.version());
        hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)))
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_upgrade_policy_speaks_http2_upstream() {
    let pods = vec![pod(160, "up-v1", "v1")];
    let port = shared_port(&[pods[0].ip]);
    version_server(SocketAddr::new(pods[0].ip, port));
    let vip = IpAddr::from([127, 0, 0, 161]);
    let host = fqdn("up");
    let proxy_for = |upgrade: bool| {
        let mut clusters = clusters_by_version(&host, port, &pods, false);
        if upgrade {
            let tweak = http_pool(HttpSettings {
                h2_upgrade_policy: Some(H2UpgradePolicy::Upgrade),
                ..Default::default()
            });
            clusters.iter_mut().for_each(tweak);
        }
        let mut out = outbound(&host, port, Protocol::Http, &[vip], Vec::new());
        out.virtual_service = Some("default/up".into());
        out.http = vec![HttpRouteRule {
            route: vec![HttpWeightedCluster {
                destination: to(&host, port, None),
                weight: 100,
                headers: None,
            }],
            ..Default::default()
        }];
        let config = ProxyConfig {
            identity: client_identity(&[("app", "client")]),
            services: vec![service("up", Some(vip), "http-up", port, &pods)],
            clusters,
            outbound: vec![out],
            ..Default::default()
        };
        start_proxy(SocketAddr::new(vip, port), config)
    };
    for (upgrade, want) in [
        (false, "HTTP/1.1 up.example"),
        (true, "HTTP/2.0 up.example"),
    ] {
        let proxy = proxy_for(upgrade);
        let listener = proxy.listeners[0];
        let reply =
            tokio::task::spawn_blocking(move || get(listener, "/", &[("host", "up.example")]))
                .await
                .expect("request");
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.body, want, "upgrade: {upgrade}");
    }
    // An HTTP/2 client toward an HTTP/1.1 upstream: the request goes as HTTP/1.1, with the
    // authority as Host.
    use http_body_util::{BodyExt, Empty};
    let proxy = proxy_for(false);
    let mut sender = h2_client(proxy.listeners[0]).await;
    let request = hyper::Request::get("http://up.example/")
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], b"HTTP/1.1 up.example");
}

/// A gRPC-like HTTP/2 upstream on `addr`: `bad` answers every call trailers-only with
/// `grpc-status: 14` (UNAVAILABLE), others with `grpc-status: 0` and the pod name.
fn grpc_server(addr: SocketAddr, name: &'static str, bad: bool) {
    use http_body_util::{BodyExt, Full};
    hyper_server(addr, move |req| async move {
        let _ = req.into_body().collect().await;
        let mut r = hyper::Response::new(Full::new(if bad {
            bytes::Bytes::new()
        } else {
            bytes::Bytes::from(name)
        }));
        r.headers_mut()
            .insert("content-type", "application/grpc".parse().expect("v"));
        r.headers_mut().insert("x-pod", name.parse().expect("v"));
        r.headers_mut().insert(
            "grpc-status",
            if bad { "14" } else { "0" }.parse().expect("v"),
        );
        r
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_http2_is_routed_and_retried_on_unavailable() {
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    let pods = vec![
        pod(150, "grpc-bad", "v1"),
        pod(151, "grpc-good", "v1"),
        pod(152, "grpc-v2", "v2"),
    ];
    let ips: Vec<IpAddr> = pods.iter().map(|p| p.ip).collect();
    let port = shared_port(&ips);
    grpc_server(SocketAddr::new(pods[0].ip, port), "grpc-bad", true);
    grpc_server(SocketAddr::new(pods[1].ip, port), "grpc-good", false);
    grpc_server(SocketAddr::new(pods[2].ip, port), "grpc-v2", false);
    let vip = IpAddr::from([127, 0, 0, 153]);
    let host = fqdn("grpc");
    let mut clusters = clusters_by_version(&host, port, &pods, false);
    for c in &mut clusters {
        c.load_balancer.simple = Some(SimpleLb::RoundRobin);
    }
    let mut out = outbound(&host, port, Protocol::Grpc, &[vip], Vec::new());
    out.http = vec![
        HttpRouteRule {
            matches: vec![HttpMatchRequest {
                headers: [("x-canary".to_string(), StringMatch::default())].into(),
                ..Default::default()
            }],
            route: vec![HttpWeightedCluster {
                destination: to(&host, port, Some("v2")),
                weight: 100,
                headers: None,
            }],
            ..Default::default()
        },
        HttpRouteRule {
            route: vec![HttpWeightedCluster {
                destination: to(&host, port, Some("v1")),
                weight: 100,
                headers: None,
            }],
            ..Default::default()
        },
    ];
    let config = ProxyConfig {
        identity: client_identity(&[]),
        services: vec![service("grpc", Some(vip), "grpc-api", port, &pods)],
        clusters,
        outbound: vec![out],
        ..Default::default()
    };
    let proxy = start_proxy(SocketAddr::new(vip, port), config);
    let mut sender = h2_client(proxy.listeners[0]).await;
    let call = |canary: bool| {
        // A streamed body of unknown length, as gRPC clients send.
        let frames = vec![Ok::<_, std::convert::Infallible>(Frame::data(
            bytes::Bytes::from_static(b"\0\0\0\0\x01x"),
        ))];
        let body = StreamBody::new(tokio_stream::iter(frames));
        let mut b = hyper::Request::post("http://grpc.default.svc.cluster.local/pkg.Svc/Call")
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if canary {
            b = b.header("x-canary", "1");
        }
        b.body(body).expect("request")
    };
    for _ in 0..10 {
        sender.ready().await.expect("ready");
        let resp = sender.send_request(call(false)).await.expect("response");
        assert_eq!(
            resp.headers().get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"0"[..])
        );
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"grpc-good");
    }
    sender.ready().await.expect("ready");
    let resp = sender.send_request(call(true)).await.expect("response");
    assert_eq!(
        resp.headers().get("x-pod").map(|v| v.as_bytes()),
        Some(&b"grpc-v2"[..])
    );
    assert_eq!(
        metric(
            &proxy,
            "istio_requests_total",
            &["request_protocol=\"grpc\"", "grpc_response_status=\"0\""]
        ),
        11.0
    );
}
