//! Table tests of the config compiler: host resolution, headless services, subsets,
//! DestinationRule precedence, PeerAuthentication scope, automatic mTLS, per-pod routing,
//! VirtualService conflicts and determinism.

use ferry_control::compiler::{Compiled, compile};
use ferry_control::registry::testing::{
    endpoint as ep, pod, proxy, resource as res, service as svc,
};
use ferry_control::registry::{EndpointEntry, PodEntry, Policies, Registry, ServiceEntry};
use ferry_model::IstioResource;
use ferry_model::istio::destination_rule::{SimpleLb, TlsMode};
use ferry_proto::config::{Cluster, MtlsMode, OutboundPort, ProxyConfig, Resolution};
use serde_json::{Value, json};

// ---- helpers (the registry builders are `ferry_control::registry::testing`) -----------------

/// A StatefulSet pod endpoint with its per-pod DNS name.
fn sts_ep(ns: &str, svc: &str, pod: &str, ip: &str, sidecar: bool) -> EndpointEntry {
    EndpointEntry {
        hostname: Some(format!("{pod}.{svc}.{ns}.svc.cluster.local")),
        ..ep(ns, pod, ip, &[("app", svc)], sidecar)
    }
}

fn registry(services: Vec<ServiceEntry>, pods: Vec<PodEntry>, policies: Policies) -> Registry {
    Registry {
        services,
        pods,
        policies,
        cluster_domain: "cluster.local".into(),
        root_namespace: "istio-system".into(),
        ..Default::default()
    }
}

/// A client pod `client-1` in `default` plus the given services.
fn mesh(services: Vec<ServiceEntry>, policies: Policies) -> Registry {
    registry(
        services,
        vec![pod("default", "client-1", "10.0.0.9", &[("app", "client")])],
        policies,
    )
}

fn client(reg: &Registry) -> Compiled {
    compile(reg, &proxy("default", "client-1"))
}

fn outbound<'a>(c: &'a ProxyConfig, host: &str, port: u16) -> &'a OutboundPort {
    c.outbound
        .iter()
        .find(|o| o.host == host && o.port == port)
        .unwrap_or_else(|| panic!("no outbound {host}:{port} in {:#?}", c.outbound))
}

fn cluster<'a>(c: &'a ProxyConfig, name: &str) -> &'a Cluster {
    c.clusters
        .iter()
        .find(|x| x.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no cluster {name}; have {:?}",
                c.clusters.iter().map(|x| &x.name).collect::<Vec<_>>()
            )
        })
}

fn mtls_pods(c: &Cluster) -> Vec<(&str, bool)> {
    c.endpoints
        .iter()
        .map(|e| (e.pod.as_str(), e.mtls))
        .collect()
}

const REVIEWS_PROD: &str = "reviews.prod.svc.cluster.local";
const REVIEWS_DEFAULT: &str = "reviews.default.svc.cluster.local";

fn reviews_both() -> Vec<ServiceEntry> {
    vec![
        svc(
            "default",
            "reviews",
            Some("10.96.0.1"),
            &[("http", 9080)],
            vec![ep(
                "default",
                "reviews-a",
                "10.0.1.1",
                &[("app", "reviews")],
                true,
            )],
        ),
        svc(
            "prod",
            "reviews",
            Some("10.96.0.2"),
            &[("http", 9080)],
            vec![ep(
                "prod",
                "reviews-b",
                "10.0.2.1",
                &[("app", "reviews")],
                true,
            )],
        ),
        svc(
            "prod",
            "ratings",
            Some("10.96.0.3"),
            &[("http", 9080)],
            vec![ep(
                "prod",
                "ratings-c",
                "10.0.2.2",
                &[("app", "ratings")],
                true,
            )],
        ),
    ]
}

// ---- tests ---------------------------------------------------------------------------------

#[test]
fn short_names_resolve_against_the_resources_namespace() {
    // (namespace of the VirtualService, host as written, host it must bind, destination cluster)
    let cases = [
        (
            "prod",
            "reviews",
            REVIEWS_PROD,
            "outbound|9080||ratings.prod.svc.cluster.local",
        ),
        (
            "default",
            "reviews",
            REVIEWS_DEFAULT,
            "outbound|9080||ratings.default.svc.cluster.local",
        ),
        (
            "default",
            REVIEWS_PROD,
            REVIEWS_PROD,
            "outbound|9080||ratings.default.svc.cluster.local",
        ),
    ];
    for (ns, host, bound, dest) in cases {
        let vs = res(
            ns,
            "vs",
            0,
            json!({"hosts": [host], "http": [{"route": [{"destination": {"host": "ratings"}}]}]}),
        );
        let reg = mesh(
            reviews_both(),
            Policies {
                virtual_services: vec![vs],
                ..Default::default()
            },
        );
        let c = client(&reg).config;
        let o = outbound(&c, bound, 9080);
        assert_eq!(
            o.virtual_service.as_deref(),
            Some(format!("{ns}/vs").as_str()),
            "{ns} {host}"
        );
        assert_eq!(o.http[0].route[0].destination.cluster, dest, "{ns} {host}");
        let other = if bound == REVIEWS_PROD {
            REVIEWS_DEFAULT
        } else {
            REVIEWS_PROD
        };
        assert_eq!(
            outbound(&c, other, 9080).virtual_service,
            None,
            "{ns} {host}"
        );
    }
    // A DestinationRule's short host is its own namespace's service.
    let dr = res(
        "prod",
        "dr",
        0,
        json!({"host": "reviews", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}),
    );
    let reg = mesh(
        reviews_both(),
        Policies {
            destination_rules: vec![dr],
            ..Default::default()
        },
    );
    let c = client(&reg).config;
    assert_eq!(
        cluster(&c, &format!("outbound|9080||{REVIEWS_PROD}"))
            .load_balancer
            .simple,
        Some(SimpleLb::Random)
    );
    assert_eq!(
        cluster(&c, &format!("outbound|9080||{REVIEWS_DEFAULT}"))
            .load_balancer
            .simple,
        Some(SimpleLb::LeastRequest)
    );
}

#[test]
fn headless_and_cluster_ip_services() {
    let eps = |ns| {
        vec![
            ep(ns, "redis-0", "10.0.0.2", &[], true),
            ep(ns, "redis-1", "10.0.0.3", &[], true),
        ]
    };
    // (cluster IP, addresses, passthrough, resolution)
    let cases = [
        (
            Some("10.96.0.10"),
            vec!["10.96.0.10"],
            false,
            Resolution::Eds,
        ),
        (None, vec![], true, Resolution::OriginalDst),
    ];
    for (vip, addrs, passthrough, resolution) in cases {
        let reg = mesh(
            vec![svc(
                "default",
                "redis",
                vip,
                &[("tcp-redis", 6379)],
                eps("default"),
            )],
            Policies::default(),
        );
        let c = client(&reg).config;
        let o = outbound(&c, "redis.default.svc.cluster.local", 6379);
        let want: Vec<std::net::IpAddr> = addrs.iter().map(|a| a.parse().expect("ip")).collect();
        assert_eq!(o.addresses, want, "{vip:?}");
        assert_eq!(o.passthrough, passthrough, "{vip:?}");
        assert_eq!(
            o.default_cluster,
            "outbound|6379||redis.default.svc.cluster.local"
        );
        let cl = cluster(&c, &o.default_cluster);
        assert_eq!(cl.resolution, resolution, "{vip:?}");
        assert_eq!(cl.endpoints.len(), 2);
        assert_eq!(
            cl.load_balancer.simple,
            Some(SimpleLb::LeastRequest),
            "Istio's default LB"
        );
        assert_eq!(c.services.len(), 1);
        assert_eq!(
            c.services[0].cluster_ip,
            vip.map(|v| v.parse().expect("ip"))
        );
    }
}

#[test]
fn subsets_select_endpoints_by_label() {
    let eps = vec![
        ep(
            "default",
            "redis-a",
            "10.0.0.2",
            &[("app", "redis"), ("version", "v1")],
            true,
        ),
        ep(
            "default",
            "redis-b",
            "10.0.0.3",
            &[("app", "redis"), ("version", "v1")],
            true,
        ),
        ep(
            "default",
            "redis-c",
            "10.0.0.4",
            &[("app", "redis"), ("version", "v2")],
            true,
        ),
    ];
    let dr = res(
        "default",
        "redis",
        0,
        json!({
            "host": "redis",
            "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}},
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {"name": "v2", "labels": {"version": "v2"}, "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 7}}}},
                {"name": "none", "labels": {"version": "v9"}},
            ]
        }),
    );
    let vs = res(
        "default",
        "redis",
        0,
        json!({"hosts": ["redis"], "tcp": [{"route": [
            {"destination": {"host": "redis", "subset": "v1"}, "weight": 90},
            {"destination": {"host": "redis", "subset": "v2"}, "weight": 10},
        ]}]}),
    );
    let reg = mesh(
        vec![svc(
            "default",
            "redis",
            Some("10.96.0.10"),
            &[("redis", 6379)],
            eps,
        )],
        Policies {
            virtual_services: vec![vs],
            destination_rules: vec![dr],
            ..Default::default()
        },
    );
    let c = client(&reg).config;
    // (subset, members)
    let cases: [(&str, &[&str]); 4] = [
        ("", &["redis-a", "redis-b", "redis-c"]),
        ("v1", &["redis-a", "redis-b"]),
        ("v2", &["redis-c"]),
        ("none", &[]),
    ];
    for (subset, members) in cases {
        let cl = cluster(
            &c,
            &format!("outbound|6379|{subset}|redis.default.svc.cluster.local"),
        );
        let pods: Vec<&str> = cl.endpoints.iter().map(|e| e.pod.as_str()).collect();
        assert_eq!(pods, members, "subset {subset}");
        assert_eq!(
            cl.load_balancer.simple,
            Some(SimpleLb::RoundRobin),
            "subsets inherit the rule's LB"
        );
        assert_eq!(cl.destination_rule.as_deref(), Some("default/redis"));
    }
    let v2 = cluster(&c, "outbound|6379|v2|redis.default.svc.cluster.local");
    assert_eq!(
        v2.connection_pool
            .as_ref()
            .and_then(|p| p.tcp.as_ref())
            .and_then(|t| t.max_connections),
        Some(7)
    );
    let o = outbound(&c, "redis.default.svc.cluster.local", 6379);
    let split: Vec<(Option<&str>, u32)> = o.tcp[0]
        .route
        .iter()
        .map(|w| (w.destination.subset.as_deref(), w.weight))
        .collect();
    assert_eq!(split, [(Some("v1"), 90), (Some("v2"), 10)]);
}

#[test]
fn destination_rule_precedence() {
    // The client is in `default`; the service `api` lives in `backend`.
    let dr = |ns: &str, name: &str, host: &str, age: i64| {
        res(
            ns,
            name,
            age,
            json!({"host": host, "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}),
        )
    };
    let host = "api.backend.svc.cluster.local";
    let cases: Vec<(Vec<IstioResource<_>>, Option<&str>)> = vec![
        (vec![], None),
        (
            vec![dr("istio-system", "root", host, 0)],
            Some("istio-system/root"),
        ),
        (
            vec![
                dr("istio-system", "root", host, 0),
                dr("backend", "svc", "api", 5),
            ],
            Some("backend/svc"),
        ),
        (
            vec![
                dr("istio-system", "root", host, 0),
                dr("backend", "svc", "api", 5),
                dr("default", "client", host, 9),
            ],
            Some("default/client"),
        ),
        // Within a namespace, an exact host beats a wildcard, even a newer one.
        (
            vec![
                dr("backend", "wild", "*.backend.svc.cluster.local", 0),
                dr("backend", "exact", "api", 5),
            ],
            Some("backend/exact"),
        ),
        // Equal hosts: the oldest wins.
        (
            vec![
                dr("backend", "newer", "api", 5),
                dr("backend", "older", "api", 1),
            ],
            Some("backend/older"),
        ),
        // A rule in an unrelated namespace does not apply.
        (vec![dr("other", "x", host, 0)], None),
        // A rule not exported to the client's namespace does not apply.
        (
            vec![res(
                "backend",
                "private",
                0,
                json!({"host": "api", "exportTo": ["."]}),
            )],
            None,
        ),
    ];
    for (drs, want) in cases {
        let names: Vec<String> = drs
            .iter()
            .map(|d| d.metadata.name.clone().unwrap_or_default())
            .collect();
        let reg = mesh(
            vec![svc(
                "backend",
                "api",
                Some("10.96.1.1"),
                &[("http", 80)],
                vec![ep("backend", "api-x", "10.0.3.1", &[], true)],
            )],
            Policies {
                destination_rules: drs,
                ..Default::default()
            },
        );
        let c = client(&reg).config;
        assert_eq!(
            cluster(&c, &format!("outbound|80||{host}"))
                .destination_rule
                .as_deref(),
            want,
            "{names:?}"
        );
    }
}

#[test]
fn port_level_settings_do_not_inherit() {
    let dr = res(
        "default",
        "web",
        0,
        json!({"host": "web", "trafficPolicy": {
            "loadBalancer": {"simple": "RANDOM"},
            "tls": {"mode": "DISABLE"},
            "portLevelSettings": [{"port": {"number": 8080}, "connectionPool": {"tcp": {"maxConnections": 1}}}]
        }}),
    );
    let reg = mesh(
        vec![svc(
            "default",
            "web",
            Some("10.96.0.5"),
            &[("http", 80), ("http-alt", 8080)],
            vec![ep("default", "web-a", "10.0.0.5", &[], true)],
        )],
        Policies {
            destination_rules: vec![dr],
            ..Default::default()
        },
    );
    let c = client(&reg).config;
    // (port, LB, TLS mode, auto mTLS)
    let cases = [
        (80, SimpleLb::Random, TlsMode::Disable, false),
        (8080, SimpleLb::LeastRequest, TlsMode::IstioMutual, true),
    ];
    for (port, lb, mode, auto) in cases {
        let cl = cluster(
            &c,
            &format!("outbound|{port}||web.default.svc.cluster.local"),
        );
        assert_eq!(cl.load_balancer.simple, Some(lb), "port {port}");
        assert_eq!((cl.tls.mode, cl.tls.auto), (mode, auto), "port {port}");
    }
}

#[test]
fn peer_authentication_scope_and_port_level_mtls() {
    let pa = |ns: &str, name: &str, age: i64, spec: Value| res(ns, name, age, spec);
    let strict = json!({"mtls": {"mode": "STRICT"}});
    let disable = json!({"mtls": {"mode": "DISABLE"}});
    let permissive = json!({"mtls": {"mode": "PERMISSIVE"}});
    let sel = |mode: &str, ports: Value| json!({"selector": {"matchLabels": {"app": "db"}}, "mtls": {"mode": mode}, "portLevelMtls": ports});
    // The proxy is `db-0` (labels app=db) in `data`, serving container ports 5432 and 9000.
    // (policies, default mode, mode of 5432, mode of 9000)
    let cases: Vec<(Vec<IstioResource<_>>, MtlsMode, MtlsMode, MtlsMode)> = vec![
        (
            vec![],
            MtlsMode::Permissive,
            MtlsMode::Permissive,
            MtlsMode::Permissive,
        ),
        (
            vec![pa("istio-system", "mesh", 0, strict.clone())],
            MtlsMode::Strict,
            MtlsMode::Strict,
            MtlsMode::Strict,
        ),
        // A selector in the root namespace is ignored: still mesh-wide.
        (
            vec![pa(
                "istio-system",
                "mesh",
                0,
                json!({"selector": {"matchLabels": {"app": "other"}}, "mtls": {"mode": "STRICT"}}),
            )],
            MtlsMode::Strict,
            MtlsMode::Strict,
            MtlsMode::Strict,
        ),
        (
            vec![
                pa("istio-system", "mesh", 0, strict.clone()),
                pa("data", "ns", 0, disable.clone()),
            ],
            MtlsMode::Disable,
            MtlsMode::Disable,
            MtlsMode::Disable,
        ),
        // UNSET inherits from the parent.
        (
            vec![
                pa("istio-system", "mesh", 0, strict.clone()),
                pa("data", "ns", 0, json!({"mtls": {"mode": "UNSET"}})),
            ],
            MtlsMode::Strict,
            MtlsMode::Strict,
            MtlsMode::Strict,
        ),
        (
            vec![
                pa("istio-system", "mesh", 0, strict.clone()),
                pa("data", "ns", 0, disable.clone()),
                pa("data", "wl", 0, sel("PERMISSIVE", json!({}))),
            ],
            MtlsMode::Permissive,
            MtlsMode::Permissive,
            MtlsMode::Permissive,
        ),
        // portLevelMtls is keyed by container port; UNSET there inherits the workload mode.
        (
            vec![pa(
                "data",
                "wl",
                0,
                sel(
                    "STRICT",
                    json!({"9000": {"mode": "DISABLE"}, "5432": {"mode": "UNSET"}}),
                ),
            )],
            MtlsMode::Strict,
            MtlsMode::Strict,
            MtlsMode::Disable,
        ),
        // A selector that does not match, or a policy in another namespace, does not apply.
        (
            vec![
                pa(
                    "data",
                    "other",
                    0,
                    json!({"selector": {"matchLabels": {"app": "web"}}, "mtls": {"mode": "DISABLE"}}),
                ),
                pa("elsewhere", "ns", 0, disable.clone()),
            ],
            MtlsMode::Permissive,
            MtlsMode::Permissive,
            MtlsMode::Permissive,
        ),
        // Two namespace-wide policies: the oldest wins.
        (
            vec![
                pa("data", "b-new", 9, permissive.clone()),
                pa("data", "a-old", 1, strict.clone()),
            ],
            MtlsMode::Strict,
            MtlsMode::Strict,
            MtlsMode::Strict,
        ),
    ];
    for (i, (pas, default, m5432, m9000)) in cases.into_iter().enumerate() {
        let services = vec![svc(
            "data",
            "db",
            Some("10.96.2.1"),
            &[("tcp-pg", 5432), ("http-metrics", 9000)],
            vec![ep("data", "db-0", "10.0.4.1", &[("app", "db")], true)],
        )];
        let reg = registry(
            services,
            vec![pod("data", "db-0", "10.0.4.1", &[("app", "db")])],
            Policies {
                peer_authentications: pas,
                ..Default::default()
            },
        );
        let c = compile(&reg, &proxy("data", "db-0")).config;
        assert_eq!(c.inbound.mtls, default, "case {i}");
        assert_eq!(c.inbound.mode_of(5432), m5432, "case {i}");
        assert_eq!(c.inbound.mode_of(9000), m9000, "case {i}");
        let ports: Vec<u16> = c.inbound.ports.iter().map(|p| p.port).collect();
        assert_eq!(ports, [5432, 9000], "case {i}");
    }
}

#[test]
fn auto_mtls_with_mixed_sidecars() {
    let eps = || {
        vec![
            ep("default", "cache-0", "10.0.0.2", &[("app", "cache")], true),
            ep("default", "cache-1", "10.0.0.3", &[("app", "cache")], false),
            ep("default", "cache-2", "10.0.0.4", &[("app", "cache")], true),
        ]
    };
    let host = "cache.default.svc.cluster.local";
    let name = format!("outbound|6379||{host}");
    // Cluster IP: per endpoint.
    let reg = mesh(
        vec![svc(
            "default",
            "cache",
            Some("10.96.0.7"),
            &[("redis", 6379)],
            eps(),
        )],
        Policies::default(),
    );
    let out = client(&reg);
    let cl = cluster(&out.config, &name);
    assert_eq!(
        mtls_pods(cl),
        [("cache-0", true), ("cache-1", false), ("cache-2", true)]
    );
    assert_eq!((cl.tls.mode, cl.tls.auto), (TlsMode::IstioMutual, true));
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);

    // Headless: all or nothing, with a warning naming the pod without a sidecar.
    let reg = mesh(
        vec![svc("default", "cache", None, &[("redis", 6379)], eps())],
        Policies::default(),
    );
    let out = client(&reg);
    let cl = cluster(&out.config, &name);
    assert_eq!(
        mtls_pods(cl),
        [("cache-0", false), ("cache-1", false), ("cache-2", false)]
    );
    assert_eq!(cl.tls.mode, TlsMode::Disable);
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains(host) && w.contains("cache-1")),
        "{:?}",
        out.warnings
    );

    // Headless, every endpoint with a sidecar: mTLS to all.
    let mut all = eps();
    all[1].has_sidecar = true;
    let reg = mesh(
        vec![svc("default", "cache", None, &[("redis", 6379)], all)],
        Policies::default(),
    );
    let out = client(&reg);
    assert_eq!(
        mtls_pods(cluster(&out.config, &name)),
        [("cache-0", true), ("cache-1", true), ("cache-2", true)]
    );
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);

    // A server that disables mTLS gets plaintext even with a sidecar.
    let pa = res(
        "default",
        "cache-0-plain",
        0,
        json!({"selector": {"matchLabels": {"app": "cache"}}, "mtls": {"mode": "DISABLE"}}),
    );
    let reg = mesh(
        vec![svc(
            "default",
            "cache",
            Some("10.96.0.7"),
            &[("redis", 6379)],
            eps(),
        )],
        Policies {
            peer_authentications: vec![pa],
            ..Default::default()
        },
    );
    let out = client(&reg);
    assert_eq!(
        mtls_pods(cluster(&out.config, &name)),
        [("cache-0", false), ("cache-1", false), ("cache-2", false)]
    );

    // An explicit `tls` wins over automatic mTLS.
    for (mode, want) in [("ISTIO_MUTUAL", true), ("DISABLE", false)] {
        let dr = res(
            "default",
            "cache",
            0,
            json!({"host": "cache", "trafficPolicy": {"tls": {"mode": mode}}}),
        );
        let reg = mesh(
            vec![svc(
                "default",
                "cache",
                Some("10.96.0.7"),
                &[("redis", 6379)],
                eps(),
            )],
            Policies {
                destination_rules: vec![dr],
                ..Default::default()
            },
        );
        let out = client(&reg);
        let cl = cluster(&out.config, &name);
        assert!(!cl.tls.auto, "{mode}");
        assert!(cl.endpoints.iter().all(|e| e.mtls == want), "{mode}");
    }
}

#[test]
fn virtual_service_for_one_statefulset_pod() {
    let pod_host = "redis-0.redis.default.svc.cluster.local";
    let eps = vec![
        sts_ep("default", "redis", "redis-0", "10.0.0.2", true),
        sts_ep("default", "redis", "redis-1", "10.0.0.3", true),
    ];
    let vs = res(
        "default",
        "redis-0",
        0,
        json!({"hosts": [pod_host], "tcp": [{"route": [{"destination": {"host": pod_host}}]}]}),
    );
    let reg = mesh(
        vec![svc("default", "redis", None, &[("tcp-redis", 6379)], eps)],
        Policies {
            virtual_services: vec![vs],
            ..Default::default()
        },
    );
    let out = client(&reg);
    let c = &out.config;
    let o = outbound(c, pod_host, 6379);
    assert_eq!(
        o.addresses,
        ["10.0.0.2".parse::<std::net::IpAddr>().expect("ip")]
    );
    assert!(!o.passthrough);
    assert_eq!(o.virtual_service.as_deref(), Some("default/redis-0"));
    let dest = &o.tcp[0].route[0];
    assert_eq!(
        (dest.destination.cluster.as_str(), dest.weight),
        (
            "outbound|6379||redis-0.redis.default.svc.cluster.local",
            100
        )
    );
    let cl = cluster(c, &dest.destination.cluster);
    assert_eq!(mtls_pods(cl), [("redis-0", true)]);
    assert_eq!(cl.resolution, Resolution::Eds);
    // The other pod has no entry of its own; the service keeps its passthrough entry.
    assert!(!c.outbound.iter().any(|o| o.host.starts_with("redis-1.")));
    assert!(outbound(c, "redis.default.svc.cluster.local", 6379).passthrough);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

#[test]
fn virtual_service_conflicts_are_reported() {
    let vs = |name: &str, age: i64, host: &str, dest: &str| {
        res(
            "default",
            name,
            age,
            json!({"hosts": [host], "http": [{"route": [{"destination": {"host": dest}}]}]}),
        )
    };
    let services = || {
        vec![
            svc("default", "web", Some("10.96.0.5"), &[("http", 80)], vec![]),
            svc(
                "default",
                "web-v2",
                Some("10.96.0.6"),
                &[("http", 80)],
                vec![],
            ),
        ]
    };
    // (VirtualServices, winner, conflict reported)
    let cases = [
        (
            vec![
                vs("b-old", 1, "web", "web"),
                vs("a-new", 5, "web", "web-v2"),
            ],
            "default/b-old",
            true,
        ),
        (
            vec![
                vs("a-new", 5, "web", "web-v2"),
                vs("b-old", 1, "web", "web"),
            ],
            "default/b-old",
            true,
        ),
        // The exact host beats the wildcard, whatever the age; no conflict.
        (
            vec![
                vs("wild", 0, "*.default.svc.cluster.local", "web-v2"),
                vs("exact", 9, "web", "web"),
            ],
            "default/exact",
            false,
        ),
    ];
    for (vss, winner, conflict) in cases {
        let reg = mesh(
            services(),
            Policies {
                virtual_services: vss,
                ..Default::default()
            },
        );
        let out = client(&reg);
        let o = outbound(&out.config, "web.default.svc.cluster.local", 80);
        assert_eq!(o.virtual_service.as_deref(), Some(winner));
        let reported = out
            .warnings
            .iter()
            .any(|w| w.contains("both bind host web.default.svc.cluster.local"));
        assert_eq!(reported, conflict, "{:?}", out.warnings);
    }
}

#[test]
fn http_rules_keep_their_order_and_fields() {
    let vs = res(
        "default",
        "web",
        0,
        json!({"hosts": ["web"], "http": [
            {"name": "faulty", "match": [{"uri": {"prefix": "/a"}, "port": 80}, {"uri": {"prefix": "/b"}, "port": 8080}],
             "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 50}}},
             "route": [{"destination": {"host": "web", "subset": "v2"}}]},
            {"name": "only-8080", "match": [{"port": 8080}], "directResponse": {"status": 418}},
            {"name": "rest", "timeout": "2s", "retries": {"attempts": 3}, "mirror": {"host": "web"}, "mirrorPercentage": {"value": 10},
             "route": [{"destination": {"host": "web", "port": {"number": 80}}, "weight": 1}, {"destination": {"host": "nowhere"}, "weight": 3}]}
        ]}),
    );
    let reg = mesh(
        vec![svc(
            "default",
            "web",
            Some("10.96.0.5"),
            &[("http", 80), ("http-alt", 8080)],
            vec![],
        )],
        Policies {
            virtual_services: vec![vs],
            ..Default::default()
        },
    );
    let out = client(&reg);
    let o = outbound(&out.config, "web.default.svc.cluster.local", 80);
    let names: Vec<_> = o
        .http
        .iter()
        .map(|r| r.name.as_deref().unwrap_or_default())
        .collect();
    assert_eq!(names, ["faulty", "rest"]);
    assert_eq!(
        o.http[0].matches.len(),
        1,
        "the 8080 match is dropped on port 80"
    );
    assert!(o.http[0].fault.is_some());
    assert_eq!(
        o.http[1].timeout.as_ref().map(|t| t.get()),
        Some(std::time::Duration::from_secs(2))
    );
    assert_eq!(o.http[1].mirrors[0].percentage, 10.0);
    assert_eq!(
        o.http[1].route.iter().map(|w| w.weight).collect::<Vec<_>>(),
        [1, 3]
    );
    let o8080 = outbound(&out.config, "web.default.svc.cluster.local", 8080);
    assert_eq!(o8080.http.len(), 3);
    // Undeclared subset and unknown host are reported.
    assert!(
        out.warnings.iter().any(|w| w.contains("subset v2")),
        "{:?}",
        out.warnings
    );
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("nowhere.default.svc.cluster.local")),
        "{:?}",
        out.warnings
    );
}

#[test]
fn services_follow_export_to() {
    let mut hidden = svc(
        "other",
        "hidden",
        Some("10.96.9.1"),
        &[("http", 80)],
        vec![],
    );
    hidden.export_to = vec![".".into()];
    let mut shared = svc(
        "other",
        "shared",
        Some("10.96.9.2"),
        &[("http", 80)],
        vec![],
    );
    shared.export_to = vec!["default".into()];
    let reg = mesh(vec![hidden, shared], Policies::default());
    let c = client(&reg).config;
    let names: Vec<_> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["shared"]);
}

fn big_registry() -> Registry {
    let vs = |name: &str, age: i64| {
        res(
            "default",
            name,
            age,
            json!({"hosts": ["redis"], "tcp": [{"route": [{"destination": {"host": "redis", "subset": "v1"}}]}]}),
        )
    };
    let dr = res(
        "default",
        "redis",
        0,
        json!({"host": "redis", "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]}),
    );
    let pa = res(
        "istio-system",
        "mesh",
        0,
        json!({"mtls": {"mode": "STRICT"}}),
    );
    mesh(
        vec![
            svc(
                "default",
                "redis",
                Some("10.96.0.10"),
                &[("redis", 6379), ("tcp-sentinel", 26379)],
                vec![
                    ep("default", "redis-a", "10.0.0.2", &[("version", "v1")], true),
                    ep(
                        "default",
                        "redis-b",
                        "10.0.0.3",
                        &[("version", "v2")],
                        false,
                    ),
                ],
            ),
            svc(
                "default",
                "web",
                None,
                &[("http", 80)],
                vec![ep("default", "web-a", "10.0.0.8", &[], true)],
            ),
            svc(
                "prod",
                "api",
                Some("10.96.0.11"),
                &[("grpc", 9000)],
                vec![ep("prod", "api-a", "10.0.1.8", &[], true)],
            ),
        ],
        Policies {
            virtual_services: vec![vs("one", 1), vs("two", 2)],
            destination_rules: vec![dr],
            peer_authentications: vec![pa],
            ..Default::default()
        },
    )
}

#[test]
fn compilation_is_deterministic() {
    let reg = big_registry();
    let a = client(&reg);
    assert_eq!(a, client(&reg));
    let mut shuffled = reg.clone();
    shuffled.services.reverse();
    for s in &mut shuffled.services {
        s.endpoints.reverse();
        s.ports.reverse();
    }
    shuffled.policies.virtual_services.reverse();
    let b = client(&shuffled);
    assert_eq!(a, b);
    let ja = serde_json::to_string(&a.config).expect("json");
    assert_eq!(ja, serde_json::to_string(&b.config).expect("json"));
    assert_eq!(a.warnings.len(), 1, "{:?}", a.warnings);
}

#[test]
fn compiled_config_round_trips_through_the_file_format() {
    let c = client(&big_registry()).config;
    let text = serde_json::to_string_pretty(&c).expect("json");
    let back: ProxyConfig = serde_json::from_str(&text).expect("parses with deny_unknown_fields");
    assert_eq!(back, c);
}

#[test]
fn delegate_rules_are_merged_into_their_root() {
    // Root in `default` delegates /api to `team/api-routes`; the delegate's short hosts
    // resolve in `team`; its rules inherit the root's timeout; a rule outside /api is dropped.
    let root = res(
        "default",
        "web",
        0,
        json!({"hosts": ["web"], "http": [
            {"match": [{"uri": {"prefix": "/api"}}], "timeout": "3s",
             "delegate": {"name": "api-routes", "namespace": "team"}},
            {"match": [{"uri": {"prefix": "/gone"}}], "delegate": {"name": "missing"}},
            {"name": "rest", "route": [{"destination": {"host": "web"}}]}
        ]}),
    );
    let delegate = res(
        "team",
        "api-routes",
        1,
        json!({"http": [
            {"name": "users", "match": [{"uri": {"prefix": "/api/users"}}],
             "route": [{"destination": {"host": "users"}}]},
            {"name": "outside", "match": [{"uri": {"prefix": "/web"}}],
             "route": [{"destination": {"host": "users"}}]},
            {"name": "api-rest", "timeout": "1s", "route": [{"destination": {"host": "api"}}]}
        ]}),
    );
    let reg = mesh(
        vec![
            svc("default", "web", Some("10.96.0.5"), &[("http", 80)], vec![]),
            svc("team", "users", Some("10.96.0.6"), &[("http", 80)], vec![]),
            svc("team", "api", Some("10.96.0.7"), &[("http", 80)], vec![]),
        ],
        Policies {
            virtual_services: vec![root, delegate],
            ..Default::default()
        },
    );
    let out = client(&reg);
    let o = outbound(&out.config, "web.default.svc.cluster.local", 80);
    let names: Vec<_> = o
        .http
        .iter()
        .map(|r| r.name.as_deref().unwrap_or_default())
        .collect();
    assert_eq!(names, ["users", "api-rest", "rest"]);
    let users = &o.http[0];
    assert_eq!(
        users.route[0].destination.host,
        "users.team.svc.cluster.local"
    );
    assert_eq!(
        users.timeout.as_ref().map(|t| t.get()),
        Some(std::time::Duration::from_secs(3)),
        "inherited from the root rule"
    );
    let api_rest = &o.http[1];
    assert_eq!(
        api_rest.route[0].destination.host,
        "api.team.svc.cluster.local"
    );
    assert_eq!(
        api_rest.matches[0]
            .uri
            .as_ref()
            .and_then(|u| u.prefix.as_deref()),
        Some("/api"),
        "a delegate rule without matches takes the root's"
    );
    assert_eq!(
        api_rest.timeout.as_ref().map(|t| t.get()),
        Some(std::time::Duration::from_secs(1)),
        "the delegate's own policy wins"
    );
    for want in [
        "1 of its rules conflict",
        "delegate default/missing does not exist",
    ] {
        assert!(
            out.warnings.iter().any(|w| w.contains(want)),
            "{want}: {:?}",
            out.warnings
        );
    }
}
