//! Statistical and timing tests of traffic policy through the whole proxy, over loopback:
//! relative weights over four subsets (one at weight 0), Redis fault percentages (errors and
//! delays), HTTP delay percentages, outlier ejection after consecutive connect failures with
//! the return after `baseEjectionTime` and its growth on the next ejection,
//! `maxEjectionPercent` in the proxy (round robin shares evenly among the rest), consistent
//! hashing on a cookie (one the proxy creates) and a query parameter, `PASSTHROUGH`,
//! `http2MaxRequests` overflow (`UO`), per-try timeouts retried, `LEAST_REQUEST` keeping open
//! connections even, `minHealthPercent` (panic threshold) and `tcpKeepalive` on upstream
//! sockets.
//!
//! Tolerances are four to five binomial standard deviations: wide enough not to flake, narrow
//! enough that a wrong share (or no sampling at all) fails.

mod http_routing_support;
mod redis_policy_support;
mod routing_support;

use ferry_model::Duration as D;
use ferry_model::ferry::redis_policy::{RedisAbort, RedisDelay, RedisFault};
use ferry_model::istio::Percent;
use ferry_model::istio::destination_rule::{
    ConsistentHashLb, HttpCookie, LoadBalancerSettings, OutlierDetection, SimpleLb,
};
use ferry_model::istio::virtual_service::{FaultDelay, HttpFaultInjection};
use ferry_proxy::config::{
    HttpRouteRule, HttpWeightedCluster, Protocol, ProxyConfig, RedisPortPolicy, TcpRouteRule,
};
use ferry_proxy::server::Running;
use http_routing_support::{get, http_server};
use redis_policy_support::{Client, RedisMesh, Reply, faults, have_redis};
use routing_support::*;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// `n` pods of `name` at `127.0.0.<base>..`, each with its own version `v1..vn`, serving
/// their names on a shared port; the port.
fn versioned(base: u8, name: &str, n: u8) -> (Vec<Pod>, u16) {
    let pods: Vec<Pod> = (0..n)
        .map(|i| {
            pod(
                base + i,
                &format!("{name}-v{}", i + 1),
                &format!("v{}", i + 1),
            )
        })
        .collect();
    let ips: Vec<IpAddr> = pods.iter().map(|p| p.ip).collect();
    (pods, shared_port(&ips))
}

/// A TCP service `name` with a cluster IP over `pods`, the clusters the control plane would
/// compile (the default one and one per version), `tcp` rules, and clusters changed by
/// `tweak`.
fn tcp_proxy(
    name: &str,
    pods: &[Pod],
    port: u16,
    vip: IpAddr,
    tcp: Vec<TcpRouteRule>,
    tweak: impl Fn(&mut ferry_proxy::config::Cluster),
) -> Running {
    let host = fqdn(name);
    let mut clusters = clusters_by_version(&host, port, pods, false);
    clusters.iter_mut().for_each(tweak);
    let config = ProxyConfig {
        identity: client_identity(&[("app", "client")]),
        services: vec![service(name, Some(vip), "tcp-main", port, pods)],
        clusters,
        outbound: vec![outbound(&host, port, Protocol::Tcp, &[vip], tcp)],
        ..Default::default()
    };
    start_proxy(SocketAddr::new(vip, port), config)
}

#[test]
fn relative_weights_over_four_subsets_and_weight_zero_gets_nothing() {
    let (pods, port) = versioned(10, "svc", 4);
    serve_pods(&pods, port);
    let host = fqdn("svc");
    // 6:3:1:0 — relative weights that do not sum to 100.
    let rule = TcpRouteRule {
        matches: Vec::new(),
        route: weighted(&[
            (to(&host, port, Some("v1")), 6),
            (to(&host, port, Some("v2")), 3),
            (to(&host, port, Some("v3")), 1),
            (to(&host, port, Some("v4")), 0),
        ]),
    };
    let vip = IpAddr::from([127, 0, 0, 110]);
    let proxy = tcp_proxy("svc", &pods, port, vip, vec![rule], |_| {});
    // 5,000 connections: ±3 points is then at least 4.3 standard deviations for every share
    // (with 2,000, the 60% share's was 2.7 and failed about once in 150 runs).
    let n = 5_000;
    let counts = tally(proxy.listeners[0], n, b"");
    let got = |name: &str| counts.get(name).copied().unwrap_or(0);
    eprintln!("6:3:1:0 over {n} connections: {counts:?}");
    assert_eq!(counts.values().sum::<usize>(), n, "{counts:?}");
    assert_eq!(got("svc-v4"), 0, "weight 0 gets nothing: {counts:?}");
    for (name, share) in [("svc-v1", 0.6), ("svc-v2", 0.3), ("svc-v3", 0.1)] {
        let want = share * n as f64;
        let off = (got(name) as f64 - want).abs();
        assert!(
            off <= 0.03 * n as f64,
            "{name}: {} vs {want}: {counts:?}",
            got(name)
        );
    }
}

#[test]
fn a_fifth_of_the_gets_fail_and_sets_pass() {
    if !have_redis() {
        return;
    }
    let m = RedisMesh::new(30, &[("redis-0", "v1")]);
    let proxy = m.proxy(
        0,
        vec![RedisPortPolicy {
            policy: "default/faults".into(),
            faults: vec![RedisFault {
                commands: vec!["GET".into()],
                abort: Some(RedisAbort {
                    error: Some("ERR injected by Ferry".into()),
                    percentage: Some(20.0),
                }),
                delay: None,
            }],
            ..Default::default()
        }],
    );
    let mut c = Client::connect(proxy.listeners[0]);
    let n = 2_000;
    let mut errors = 0;
    for _ in 0..n / 100 {
        let mut batch: Vec<&[&str]> = Vec::new();
        for _ in 0..50 {
            batch.push(&["SET", "k", "v"]);
            batch.push(&["GET", "k"]);
        }
        c.send(&batch);
        for i in 0..100 {
            match (i % 2, c.read()) {
                (0, Reply::Simple(ok)) => assert_eq!(ok, "OK"),
                (1, Reply::Bulk(Some(v))) => assert_eq!(v, "v"),
                (1, Reply::Error(e)) if e == "ERR injected by Ferry" => errors += 1,
                (_, other) => panic!("reply {i}: {other:?}"),
            }
        }
    }
    // 1,000 GETs at 20%: mean 200, sd ~12.6; 4.5 sd.
    eprintln!("20% aborts on GET: {errors} of {}", n / 2);
    assert!((143..=257).contains(&errors), "{errors}");
    assert_eq!(faults(&proxy, "get", "abort"), f64::from(errors));
    assert_eq!(faults(&proxy, "set", "abort"), 0.0);
}

#[test]
fn a_quarter_of_the_sets_are_delayed() {
    if !have_redis() {
        return;
    }
    let m = RedisMesh::new(40, &[("redis-0", "v1")]);
    let proxy = m.proxy(
        0,
        vec![RedisPortPolicy {
            policy: "default/delays".into(),
            faults: vec![RedisFault {
                commands: vec!["SET".into()],
                abort: None,
                delay: Some(RedisDelay {
                    fixed_delay: D::parse("40ms").ok(),
                    percentage: Some(25.0),
                }),
            }],
            ..Default::default()
        }],
    );
    let mut c = Client::connect(proxy.listeners[0]);
    let n = 240;
    let mut slow = 0;
    for _ in 0..n {
        let started = Instant::now();
        assert_eq!(c.call(&["SET", "k", "v"]), Reply::Simple("OK".into()));
        if started.elapsed() >= Duration::from_millis(38) {
            slow += 1;
        }
    }
    let delayed = faults(&proxy, "set", "delay");
    eprintln!("25% delays on SET: {delayed} delayed, {slow} slow of {n}");
    // 240 at 25%: mean 60, sd ~6.7; 4.5 sd.
    assert!((30.0..=90.0).contains(&delayed), "{delayed}");
    // Every delayed command took the delay (a loaded machine may make a few others slow).
    // Every delayed request took the delay. (How many undelayed ones were slow as well says
    // only how busy the machine is: not checked.)
    assert!(slow as f64 >= delayed, "{slow} vs {delayed}");
}

#[test]
fn http_delays_hit_their_share() {
    let (pods, port) = versioned(50, "web", 2);
    for p in &pods {
        http_server(SocketAddr::new(p.ip, port), &p.name);
    }
    let host = fqdn("web");
    let vip = IpAddr::from([127, 0, 0, 150]);
    let mut out = outbound(&host, port, Protocol::Http, &[vip], Vec::new());
    out.virtual_service = Some("default/web".into());
    out.http = vec![HttpRouteRule {
        route: vec![HttpWeightedCluster {
            destination: to(&host, port, None),
            weight: 100,
            headers: None,
        }],
        fault: Some(HttpFaultInjection {
            delay: Some(FaultDelay {
                fixed_delay: D::parse("40ms").ok(),
                percentage: Some(Percent { value: Some(30.0) }),
                ..Default::default()
            }),
            abort: None,
        }),
        ..Default::default()
    }];
    let config = ProxyConfig {
        identity: client_identity(&[("app", "client")]),
        services: vec![service("web", Some(vip), "http-web", port, &pods)],
        clusters: clusters_by_version(&host, port, &pods, false),
        outbound: vec![out],
        ..Default::default()
    };
    let proxy = start_proxy(SocketAddr::new(vip, port), config);
    let n = 200;
    let mut slow = 0;
    for _ in 0..n {
        let started = Instant::now();
        assert_eq!(get(proxy.listeners[0], "/", &[]).status, 200);
        if started.elapsed() >= Duration::from_millis(38) {
            slow += 1;
        }
    }
    let delayed = metric(
        &proxy,
        "istio_requests_total",
        &["response_code=\"200\"", "response_flags=\"DI\""],
    );
    eprintln!("30% HTTP delays: {delayed} delayed, {slow} slow of {n}");
    // 200 at 30%: mean 60, sd ~6.5; 4.5 sd.
    assert!((31.0..=89.0).contains(&delayed), "{delayed}");
    // Every delayed request took the delay. (How many undelayed ones were slow as well says
    // only how busy the machine is: not checked.)
    assert!(slow as f64 >= delayed, "{slow} vs {delayed}");
}

/// Connects through the proxy every `pace` until `until` says stop; each attempt's outcome
/// (true: the upstream answered) with its time since `t0`.
fn attempts(
    proxy: SocketAddr,
    pace: Duration,
    mut until: impl FnMut(&[(Duration, bool)]) -> bool,
) -> Vec<(Duration, bool)> {
    let t0 = Instant::now();
    let mut out = Vec::new();
    while !until(&out) {
        assert!(t0.elapsed() < Duration::from_secs(20), "gave up: {out:?}");
        let ok = first_line(proxy, b"").is_some();
        out.push((t0.elapsed(), ok));
        std::thread::sleep(pace);
    }
    out
}

#[test]
fn connect_failures_eject_and_the_endpoint_returns_after_a_growing_ejection_time() {
    // web-v1 answers; web-v2 refuses connections (no server).
    let (pods, port) = versioned(60, "web", 2);
    serve_pods(&pods[..1], port);
    refuse_on(&pods[1..], port);
    let vip = IpAddr::from([127, 0, 0, 160]);
    let base_ms = 600u64;
    let proxy = tcp_proxy("web", &pods, port, vip, Vec::new(), |c| {
        c.load_balancer.simple = Some(SimpleLb::RoundRobin);
        c.outlier_detection = Some(OutlierDetection {
            split_external_local_origin_errors: Some(true),
            consecutive_local_origin_failures: Some(2),
            interval: D::parse("100ms").ok(),
            base_ejection_time: D::parse(&format!("{base_ms}ms")).ok(),
            max_ejection_percent: Some(100),
            ..Default::default()
        });
    });
    let l = proxy.listeners[0];
    let failures = |a: &[(Duration, bool)]| a.iter().filter(|(_, ok)| !ok).count();
    // Round robin alternates; two failures in a row on web-v2 eject it.
    let first = attempts(l, Duration::ZERO, |a| a.len() == 4);
    assert_eq!(failures(&first), 2, "{first:?}");
    let ejected_at = Instant::now();
    // While ejected, every connection is served; then it comes back (one failure shows it).
    let during = attempts(l, Duration::from_millis(5), |a| failures(a) == 1);
    let back_after = during.last().map(|(t, _)| *t).unwrap_or_default();
    let served = during.len() - 1;
    // Its second ejection (two more failures) lasts twice as long.
    let again = attempts(l, Duration::ZERO, |a| failures(a) == 1);
    let reejected_at = Instant::now();
    let second = attempts(l, Duration::from_millis(5), |a| failures(a) == 1);
    let back_again = second.last().map(|(t, _)| *t).unwrap_or_default();
    eprintln!(
        "ejected for {back_after:?} ({served} connections served), again after {} more, then for {back_again:?}",
        again.len()
    );
    let base = Duration::from_millis(base_ms);
    assert!(served >= 20, "{during:?}");
    assert!(
        back_after >= base - Duration::from_millis(60),
        "{back_after:?}"
    );
    assert!(
        back_after < base * 2 - Duration::from_millis(60),
        "{back_after:?}"
    );
    assert!(again.len() <= 3, "{again:?}");
    assert!(
        back_again >= base * 2 - Duration::from_millis(60),
        "{back_again:?}"
    );
    assert!(back_again < base * 4, "{back_again:?}");
    assert!(ejected_at.elapsed() >= base * 3);
    let _ = reejected_at;
    // Every failure is a connect failure in the metrics.
    assert_eq!(
        metric(
            &proxy,
            "istio_tcp_connections_opened_total",
            &["response_flags=\"UF\""]
        ),
        (failures(&first) + failures(&during) + failures(&again) + failures(&second)) as f64
    );
}

#[test]
fn max_ejection_percent_leaves_failing_endpoints_in() {
    // Four endpoints, two refusing connections.
    let run = |base: u8, max: i32| -> usize {
        let pods: Vec<Pod> = (0..4)
            .map(|i| pod(base + i, &format!("web-{i}"), "v1"))
            .collect();
        let ips: Vec<IpAddr> = pods.iter().map(|p| p.ip).collect();
        let port = shared_port(&ips);
        serve_pods(&pods[..2], port);
        refuse_on(&pods[2..], port);
        let vip = IpAddr::from([127, 0, 0, base + 100]);
        let proxy = tcp_proxy("web", &pods, port, vip, Vec::new(), |c| {
            c.load_balancer.simple = Some(SimpleLb::RoundRobin);
            c.outlier_detection = Some(OutlierDetection {
                consecutive_5xx_errors: Some(1),
                max_ejection_percent: Some(max),
                ..Default::default()
            });
        });
        let counts = tally(proxy.listeners[0], 60, b"");
        counts.get("<closed>").copied().unwrap_or(0)
    };
    // 50%: both dead endpoints are ejected at their first failure.
    assert_eq!(run(70, 50), 2);
    // 25%: one is; the other keeps failing (every third connection of the rest).
    let failed = run(80, 25);
    assert!((15..=25).contains(&failed), "{failed}");
}

/// Three `web` pods behind an HTTP service whose clusters hash on `ch`.
fn hashing_proxy(base: u8, ch: ConsistentHashLb) -> Running {
    let pods: Vec<Pod> = (0..3)
        .map(|i| pod(base + i, &format!("web-{i}"), "v1"))
        .collect();
    let ips: Vec<IpAddr> = pods.iter().map(|p| p.ip).collect();
    let port = shared_port(&ips);
    for p in &pods {
        http_server(SocketAddr::new(p.ip, port), &p.name);
    }
    let host = fqdn("web");
    let vip = IpAddr::from([127, 0, 0, base + 100]);
    let mut clusters = clusters_by_version(&host, port, &pods, false);
    for c in &mut clusters {
        c.load_balancer = LoadBalancerSettings {
            consistent_hash: Some(ch.clone()),
            ..Default::default()
        };
    }
    let config = ProxyConfig {
        identity: client_identity(&[]),
        services: vec![service("web", Some(vip), "http-web", port, &pods)],
        clusters,
        outbound: vec![outbound(&host, port, Protocol::Http, &[vip], Vec::new())],
        ..Default::default()
    };
    start_proxy(SocketAddr::new(vip, port), config)
}

/// For 30 keys, the pods that answered 5 requests each made with `with(key)`; asserts each
/// key stuck to one pod and returns how many pods the keys spread over.
fn stickiness(proxy: &Running, with: impl Fn(&str) -> (String, Vec<(String, String)>)) -> usize {
    let mut owners: BTreeMap<String, usize> = BTreeMap::new();
    for k in 0..30 {
        let (path, headers) = with(&format!("user-{k}"));
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let pods: Vec<String> = (0..5)
            .map(|_| {
                get(proxy.listeners[0], &path, &h)
                    .pod()
                    .unwrap_or("<none>")
                    .to_string()
            })
            .collect();
        assert!(
            pods.iter().all(|p| *p == pods[0] && p != "<none>"),
            "{path} {headers:?}: {pods:?}"
        );
        *owners.entry(pods[0].clone()).or_default() += 1;
    }
    owners.len()
}

#[test]
fn consistent_hash_on_a_query_parameter_and_a_cookie_sticks() {
    let p = hashing_proxy(
        90,
        ConsistentHashLb {
            http_query_parameter_name: Some("user".into()),
            ..Default::default()
        },
    );
    let spread = stickiness(&p, |k| (format!("/items?page=2&user={k}"), Vec::new()));
    assert!(spread > 1, "30 keys all on one pod");

    let p = hashing_proxy(
        95,
        ConsistentHashLb {
            http_cookie: Some(HttpCookie {
                name: Some("session".into()),
                path: Some("/".into()),
                ttl: D::parse("3600s").ok(),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let spread = stickiness(&p, |k| {
        (
            "/".into(),
            vec![("cookie".into(), format!("theme=dark; session={k}"))],
        )
    });
    assert!(spread > 1, "30 keys all on one pod");
    // Without the cookie, the proxy creates one (the cookie has a TTL); sent back, it sticks.
    let first = get(p.listeners[0], "/", &[]);
    let set = first
        .headers
        .get("set-cookie")
        .cloned()
        .unwrap_or_else(|| panic!("no set-cookie: {:?}", first.headers));
    assert!(
        set.starts_with("session=") && set.contains("Path=/") && set.contains("Max-Age=3600"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap_or_default().to_string();
    let owner = first.pod().map(str::to_string);
    for _ in 0..10 {
        let r = get(p.listeners[0], "/", &[("cookie", &cookie)]);
        assert_eq!(r.pod().map(str::to_string), owner, "{cookie}");
        assert!(!r.headers.contains_key("set-cookie"));
    }
}

#[test]
fn passthrough_connects_where_the_client_dialled() {
    // The service's cluster IP itself answers (as an address outside the endpoints would):
    // PASSTHROUGH skips balancing and connects to the dialled address.
    let (pods, port) = versioned(120, "svc", 2);
    serve_pods(&pods, port);
    let vip = IpAddr::from([127, 0, 0, 220]);
    name_server(SocketAddr::new(vip, port), "dialled");
    let proxy = tcp_proxy("svc", &pods, port, vip, Vec::new(), |c| {
        c.load_balancer.simple = Some(SimpleLb::Passthrough);
    });
    let counts = tally(proxy.listeners[0], 20, b"");
    assert_eq!(counts.get("dialled"), Some(&20), "{counts:?}");
    // The same service balanced (Istio's default, LEAST_REQUEST) reaches the pods.
    let proxy = tcp_proxy("svc", &pods, port, vip, Vec::new(), |_| {});
    let counts = tally(proxy.listeners[0], 20, b"");
    assert_eq!(counts.get("dialled"), None, "{counts:?}");
}

#[test]
fn http2_max_requests_overflow_answers_503_uo() {
    use ferry_model::istio::destination_rule::{ConnectionPoolSettings, HttpSettings};
    let (pods, port) = versioned(130, "web", 1);
    http_server(SocketAddr::new(pods[0].ip, port), &pods[0].name);
    let host = fqdn("web");
    let vip = IpAddr::from([127, 0, 0, 230]);
    let mut clusters = clusters_by_version(&host, port, &pods, false);
    for c in &mut clusters {
        c.connection_pool = Some(ConnectionPoolSettings {
            tcp: None,
            http: Some(HttpSettings {
                http2_max_requests: Some(2),
                ..Default::default()
            }),
        });
    }
    let config = ProxyConfig {
        identity: client_identity(&[]),
        services: vec![service("web", Some(vip), "http-web", port, &pods)],
        clusters,
        outbound: vec![outbound(&host, port, Protocol::Http, &[vip], Vec::new())],
        ..Default::default()
    };
    let proxy = start_proxy(SocketAddr::new(vip, port), config);
    let addr = proxy.listeners[0];
    // Two slow requests in flight; the third overflows at once; afterwards all is well.
    let slow: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || get(addr, "/", &[("x-delay-ms", "800")]).status))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let r = get(addr, "/", &[]);
    assert_eq!(r.status, 503);
    assert!(started.elapsed() < Duration::from_millis(400));
    let statuses: Vec<u16> = slow
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    assert_eq!(statuses, [200, 200]);
    assert_eq!(get(addr, "/", &[]).status, 200);
    assert_eq!(
        metric(
            &proxy,
            "istio_requests_total",
            &["response_code=\"503\"", "response_flags=\"UO\""]
        ),
        1.0
    );
}

#[test]
fn per_try_timeouts_are_retried_then_answer_504() {
    use ferry_model::istio::virtual_service::HttpRetry;
    use std::sync::atomic::Ordering;
    let (pods, port) = versioned(140, "web", 1);
    let seen = http_server(SocketAddr::new(pods[0].ip, port), &pods[0].name);
    let host = fqdn("web");
    let vip = IpAddr::from([127, 0, 0, 240]);
    let mut out = outbound(&host, port, Protocol::Http, &[vip], Vec::new());
    out.virtual_service = Some("default/web".into());
    out.http = vec![HttpRouteRule {
        route: vec![HttpWeightedCluster {
            destination: to(&host, port, None),
            weight: 100,
            headers: None,
        }],
        retries: Some(HttpRetry {
            attempts: Some(2),
            per_try_timeout: D::parse("200ms").ok(),
            retry_on: Some("5xx".into()),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let config = ProxyConfig {
        identity: client_identity(&[]),
        services: vec![service("web", Some(vip), "http-web", port, &pods)],
        clusters: clusters_by_version(&host, port, &pods, false),
        outbound: vec![out],
        ..Default::default()
    };
    let proxy = start_proxy(SocketAddr::new(vip, port), config);
    let started = Instant::now();
    let r = get(proxy.listeners[0], "/", &[("x-delay-ms", "1500")]);
    let took = started.elapsed();
    assert_eq!(r.status, 504);
    // Three tries of 200 ms each (and two short back-offs), not 1.5 s.
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_millis(1_400),
        "{took:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while seen.requests.load(Ordering::Relaxed) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        seen.requests.load(Ordering::Relaxed),
        3,
        "one try and two retries"
    );
    assert_eq!(
        metric(
            &proxy,
            "istio_requests_total",
            &["response_code=\"504\"", "response_flags=\"UT,URX\""]
        ),
        1.0,
        "Envoy flags the last per-try timeout UT and the exhausted retries URX"
    );
}

#[test]
fn least_request_over_two_endpoints_keeps_open_connections_even() {
    // With two endpoints both are always the two choices: each new connection goes to the
    // one holding fewer, so 30 held connections split exactly 15/15 (random placement would
    // rarely).
    let (pods, port) = versioned(150, "svc", 2);
    serve_pods(&pods, port);
    let vip = IpAddr::from([127, 0, 0, 250]);
    let proxy = tcp_proxy("svc", &pods, port, vip, Vec::new(), |_| {});
    let mut held = Vec::new();
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..30 {
        let mut s = std::net::TcpStream::connect(proxy.listeners[0]).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut name = [0u8; 6];
        std::io::Read::read_exact(&mut s, &mut name).expect("name");
        *per.entry(String::from_utf8_lossy(&name).to_string())
            .or_default() += 1;
        held.push(s);
    }
    assert_eq!(
        per.values().copied().collect::<Vec<_>>(),
        [15, 15],
        "{per:?}"
    );
}

#[test]
fn below_min_health_percent_ejections_are_ignored() {
    // One endpoint answers, three refuse; each failure ejects (maxEjectionPercent 100).
    let run = |base: u8, min_health: Option<i32>| -> usize {
        let pods: Vec<Pod> = (0..4)
            .map(|i| pod(base + i, &format!("web-{i}"), "v1"))
            .collect();
        let ips: Vec<IpAddr> = pods.iter().map(|p| p.ip).collect();
        let port = shared_port(&ips);
        serve_pods(&pods[..1], port);
        refuse_on(&pods[1..], port);
        let vip = IpAddr::from([127, 0, 1, base]);
        let proxy = tcp_proxy("web", &pods, port, vip, Vec::new(), |c| {
            c.load_balancer.simple = Some(SimpleLb::RoundRobin);
            c.outlier_detection = Some(OutlierDetection {
                consecutive_5xx_errors: Some(1),
                max_ejection_percent: Some(100),
                min_health_percent: min_health,
                ..Default::default()
            });
        });
        let counts = tally(proxy.listeners[0], 40, b"");
        counts.get("<closed>").copied().unwrap_or(0)
    };
    // Without a threshold the three are ejected at their first failure.
    assert_eq!(run(160, None), 3);
    // With 50%, once three of four are out (25% healthy) ejections are ignored: round
    // robin over all four again, three quarters of the rest fail.
    let failed = run(170, Some(50));
    assert!((25..=32).contains(&failed), "{failed}");
}

/// The timer column (`tr`) of the loopback TCP socket from any local address to `remote`
/// in `/proc/self/net/tcp` (2: keepalive timer running), if there is one.
fn timer_toward(remote: SocketAddr) -> Option<u8> {
    let IpAddr::V4(ip) = remote.ip() else {
        return None;
    };
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(ip.octets()),
        remote.port()
    );
    let table = std::fs::read_to_string("/proc/self/net/tcp").ok()?;
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // sl local rem st tx:rx tr:when ...
        (f.get(2) == Some(&want.as_str()) && f.get(3) == Some(&"01"))
            .then(|| f.get(5)?.split(':').next()?.parse().ok())
            .flatten()
    })
}

#[test]
fn tcp_keepalive_is_set_on_upstream_connections() {
    use ferry_model::istio::destination_rule::{ConnectionPoolSettings, TcpKeepalive, TcpSettings};
    let open = |base: u8, keepalive: Option<TcpKeepalive>| -> Option<u8> {
        let (pods, port) = versioned(base, "svc", 1);
        serve_pods(&pods, port);
        let vip = IpAddr::from([127, 0, 1, base]);
        let proxy = tcp_proxy("svc", &pods, port, vip, Vec::new(), |c| {
            c.connection_pool = Some(ConnectionPoolSettings {
                tcp: Some(TcpSettings {
                    tcp_keepalive: keepalive.clone(),
                    ..Default::default()
                }),
                http: None,
            });
        });
        let mut s = std::net::TcpStream::connect(proxy.listeners[0]).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut name = [0u8; 6];
        std::io::Read::read_exact(&mut s, &mut name).expect("served");
        // The proxy's socket toward the pod, idle now.
        std::thread::sleep(Duration::from_millis(100));
        timer_toward(SocketAddr::new(pods[0].ip, port))
    };
    let with = open(
        180,
        Some(TcpKeepalive {
            probes: Some(3),
            time: D::parse("30s").ok(),
            interval: D::parse("5s").ok(),
        }),
    );
    assert_eq!(with, Some(2), "keepalive timer on the upstream socket");
    assert_eq!(open(190, None), Some(0), "no timer without tcpKeepalive");
}

#[test]
fn a_headless_pod_not_ready_in_the_configuration_still_gets_its_connections() {
    // redis-2 serves but is not ready in the proxy's view (a readiness push not arrived
    // yet, or a failing probe): a client that dials it must reach it, not another pod.
    let pods = vec![
        pod(200, "redis-0", "v1"),
        pod(201, "redis-1", "v1"),
        pod(202, "redis-2", "v1"),
    ];
    let ips: Vec<IpAddr> = pods.iter().map(|p| p.ip).collect();
    let port = shared_port(&ips);
    serve_pods(&pods, port);
    let host = fqdn("redis");
    let mut clusters = clusters_by_version(&host, port, &pods, true);
    for c in &mut clusters {
        for e in &mut c.endpoints {
            e.ready = e.pod != "redis-2";
        }
    }
    let mut svc = service("redis", None, "tcp-redis", port, &pods);
    for e in &mut svc.endpoints {
        e.ready = e.pod != "redis-2";
    }
    let config = ProxyConfig {
        identity: client_identity(&[]),
        services: vec![svc],
        clusters,
        outbound: vec![outbound(&host, port, Protocol::Tcp, &[], Vec::new())],
        ..Default::default()
    };
    let proxy = start_proxy(SocketAddr::new(pods[2].ip, port), config);
    let counts = tally(proxy.listeners[0], 30, b"");
    assert_eq!(counts.get("redis-2"), Some(&30), "{counts:?}");
}
