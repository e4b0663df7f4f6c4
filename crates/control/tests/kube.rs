//! The Kubernetes source against the fake API server (tests/support/kube_api) with the real
//! `kube::Client` and kube-rs watchers: the seed example's objects become the registry;
//! MODIFIED and DELETED events arrive; a `410 Gone` forces a re-list that finds changes the
//! watch never announced; an invalid VirtualService is rejected and its previous version
//! stays; BOOKMARKs move the resume point so a reconnect needs no re-list; API discovery
//! picks the version of each Istio kind the cluster serves (a DestinationRule served only as
//! `v1beta1`, a CRD installed later, a version no longer served), and DestinationRules and
//! PeerAuthentications reach the compiled configuration.

#[path = "support/kube_api/mod.rs"]
mod kube_api;

use std::net::IpAddr;
use std::time::Duration;

use ferry_control::compiler::compile;
use ferry_control::registry::{ProxyIdentity, Registry, ServiceEntry};
use ferry_control::source::Loaded;
use ferry_control::source::kube::{KubeMetrics, KubeOptions, KubeSource, SOURCE_NAME};
use ferry_control::store::{Kind, Object, ObjectKey, Store};
use kube_api::FakeApi;
use serde_json::{Value, json};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(15);

fn namespace() -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": "default", "labels": {"istio-injection": "enabled"}}})
}

fn service() -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "redis", "namespace": "default", "labels": {"app": "redis"}},
           "spec": {"clusterIP": "None", "selector": {"app": "redis"},
                    "ports": [{"name": "tcp-redis", "port": 6379, "targetPort": 6379}]},
           "status": {"loadBalancer": {}}})
}

fn pod(ordinal: u32, ip: &str) -> Value {
    let name = format!("redis-{ordinal}");
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "default",
                        "labels": {"app": "redis", "statefulset.kubernetes.io/pod-name": name,
                                   "security.istio.io/tlsMode": "istio"},
                        "annotations": {"sidecar.istio.io/status": "{}"},
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                                             "name": "redis", "uid": "1", "controller": true}]},
           "spec": {"hostname": name, "subdomain": "redis", "serviceAccountName": "redis",
                    "containers": [{"name": "redis", "image": "redis:alpine",
                                    "ports": [{"containerPort": 6379}]}]},
           "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                      "conditions": [{"type": "Ready", "status": "True"}]}})
}

fn virtual_service(weight: Value) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
           "metadata": {"name": "redis", "namespace": "default", "generation": 1},
           "spec": {"hosts": ["redis"],
                    "tcp": [{"route": [{"destination": {"host": "redis-0.redis.default.svc.cluster.local"},
                                        "weight": weight}]}]},
           "status": {}})
}

/// The fake server with the seed example, and a source watching it.
struct Harness {
    api: FakeApi,
    store: Store,
    updates: mpsc::UnboundedReceiver<Loaded>,
    metrics: KubeMetrics,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Harness {
    async fn start() -> Harness {
        Harness::start_with(&[]).await
    }

    /// The harness with the collections of `unserved` kinds answering `404`.
    async fn start_with(unserved: &[&str]) -> Harness {
        Harness::start_configured(|api| {
            for kind in unserved {
                api.unserve(kind);
            }
        })
        .await
    }

    /// The harness with the fake server configured by `configure` before anything is in it
    /// (the seed VirtualService is applied only if its kind is served at `v1`).
    async fn start_configured(configure: impl FnOnce(&FakeApi)) -> Harness {
        let api = FakeApi::start().await.expect("fake API server");
        configure(&api);
        api.apply(namespace());
        api.apply(service());
        for (i, ip) in ["10.1.0.10", "10.1.0.11", "10.1.0.12"].iter().enumerate() {
            api.apply(pod(i as u32, ip));
        }
        if api.served_versions("VirtualService") == ["v1"] {
            api.apply(virtual_service(json!(100)));
        }
        let url: hyper::Uri = api.url().parse().expect("url");
        let client = kube::Client::try_from(kube::Config::new(url)).expect("client");
        let source = KubeSource::new(
            client,
            KubeOptions {
                initial_sync: Duration::from_secs(10),
                ..KubeOptions::default()
            },
        );
        let metrics = source.metrics();
        let (tx, updates) = mpsc::unbounded_channel();
        let task = tokio::spawn(source.run(move |loaded| {
            let _ = tx.send(loaded);
        }));
        Harness {
            api,
            store: Store::default(),
            updates,
            metrics,
            task,
        }
    }

    fn registry(&self) -> Registry {
        self.store.registry("cluster.local", "istio-system")
    }

    /// Applies updates until `done` holds for the registry; returns the last update.
    async fn until(&mut self, what: &str, done: impl Fn(&Registry) -> bool) -> Loaded {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.updates.recv()).await;
            let Ok(Some(loaded)) = next else {
                panic!(
                    "timed out waiting for {what}; registry: {:#?}\nrequests: {:#?}",
                    self.registry().services,
                    self.api.requests()
                );
            };
            assert_eq!(loaded.update.source, SOURCE_NAME);
            self.store.apply(loaded.update.clone());
            if done(&self.registry()) {
                return loaded;
            }
        }
    }

    fn requests_for(&self, needle: &str) -> Vec<String> {
        self.api
            .requests()
            .into_iter()
            .filter(|r| r.contains(needle))
            .collect()
    }
}

fn redis(registry: &Registry) -> Option<&ServiceEntry> {
    registry
        .services
        .iter()
        .find(|s| s.name == "redis" && s.namespace == "default")
}

fn endpoint_ips(registry: &Registry) -> Vec<String> {
    let mut ips: Vec<String> = redis(registry)
        .map(|s| s.endpoints.iter().map(|e| e.ip.to_string()).collect())
        .unwrap_or_default();
    ips.sort();
    ips
}

fn vs_weight(store: &Store) -> Option<i64> {
    let key = ObjectKey::new(Kind::VirtualService, "default", "redis");
    match store.get(&key)? {
        Object::VirtualService(vs) => {
            let value = serde_json::to_value(&vs.spec).ok()?;
            value["tcp"][0]["route"][0]["weight"].as_i64()
        }
        _ => None,
    }
}

#[tokio::test]
async fn seed_example_becomes_the_registry() {
    let mut h = Harness::start().await;
    let first = h
        .until("the seed example", |r| endpoint_ips(r).len() == 3)
        .await;
    assert!(
        first.update.rejections.is_empty(),
        "{:?}",
        first.diagnostics
    );
    let registry = h.registry();
    let svc = redis(&registry).expect("service redis");
    assert_eq!(svc.fqdn, "redis.default.svc.cluster.local");
    assert_eq!(svc.cluster_ip, None, "headless");
    assert_eq!(svc.ports[0].port, 6379);
    assert_eq!(
        endpoint_ips(&registry),
        ["10.1.0.10", "10.1.0.11", "10.1.0.12"]
    );
    let first_ep = &svc.endpoints[0];
    assert!(first_ep.has_sidecar && first_ep.ready);
    assert_eq!(first_ep.service_account, "redis");
    assert_eq!(
        first_ep.hostname.as_deref(),
        Some("redis-0.redis.default.svc.cluster.local")
    );
    assert_eq!(
        registry
            .namespaces
            .get("default")
            .and_then(|l| l.get("istio-injection"))
            .map(String::as_str),
        Some("enabled")
    );
    assert_eq!(registry.policies.virtual_services.len(), 1);
    assert_eq!(vs_weight(&h.store), Some(100));
    // A Service without a selector takes its endpoints from its EndpointSlices.
    h.api.apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "external", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.50", "ports": [{"name": "tcp", "port": 5432}]}}));
    h.api.apply(
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "external-abc", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "external"}},
        "addressType": "IPv4",
        "ports": [{"name": "tcp", "port": 5432, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["192.0.2.7"], "conditions": {"ready": true}}]}),
    );
    h.until("the EndpointSlice", |r| {
        r.services.iter().any(|s| {
            s.name == "external" && s.endpoints.iter().any(|e| e.ip.to_string() == "192.0.2.7")
        })
    })
    .await;
    // managedFields are stripped; the kind is filled in although list items lack it.
    let pod = h
        .store
        .get(&ObjectKey::new(Kind::Pod, "default", "redis-1"))
        .and_then(Object::as_value)
        .expect("pod redis-1");
    assert!(pod["metadata"].get("managedFields").is_none(), "{pod}");
    assert_eq!(pod["kind"], "Pod");
    // Discovery chose the Istio kinds' versions; every path asked for is served.
    assert!(
        h.api.unknown_paths().is_empty(),
        "{:?}",
        h.api.unknown_paths()
    );
    assert!(h.api.requests().iter().any(|r| r == "/apis"));
    assert!(
        (h.api.requests().iter()).any(|r| r == "/apis/networking.istio.io/v1"),
        "{:?}",
        h.api.requests()
    );
    assert!(
        !h.requests_for("/apis/networking.istio.io/v1/virtualservices?")
            .is_empty()
    );
    // Built-in kinds are not looked up: they have one stable version.
    assert!(
        !h.api
            .requests()
            .iter()
            .any(|r| r == "/api" || r == "/api/v1")
    );
    assert!(!h.requests_for("/api/v1/pods?").is_empty());
    assert!(
        h.requests_for("/api/v1/pods?")
            .iter()
            .any(|r| r.contains("watch=true") && r.contains("allowWatchBookmarks=true")),
        "{:?}",
        h.requests_for("/api/v1/pods")
    );
}

#[tokio::test]
async fn modified_and_deleted_pods_arrive() {
    let mut h = Harness::start().await;
    h.until("the seed example", |r| endpoint_ips(r).len() == 3)
        .await;
    let mut moved = pod(1, "10.1.0.21");
    moved["status"]["podIP"] = "10.1.0.21".into();
    h.api.apply(moved);
    h.api.delete("Pod", "default", "redis-2");
    let update = h
        .until("the edit", |r| {
            endpoint_ips(r) == ["10.1.0.10", "10.1.0.21"]
        })
        .await;
    assert!(update.update.rejections.is_empty());
    let registry = h.registry();
    assert!(!registry.pods.iter().any(|p| p.name == "redis-2"));
    let redis1 = registry
        .pods
        .iter()
        .find(|p| p.name == "redis-1")
        .expect("redis-1");
    assert_eq!(redis1.ip, "10.1.0.21".parse::<IpAddr>().ok());
    // A not-ready pod stays an endpoint, marked not ready.
    let mut unready = pod(0, "10.1.0.10");
    unready["status"]["conditions"][0]["status"] = "False".into();
    h.api.apply(unready);
    h.until("readiness", |r| {
        redis(r).is_some_and(|s| s.endpoints.iter().any(|e| e.pod == "redis-0" && !e.ready))
    })
    .await;
    assert_eq!(h.metrics.watch_errors.get(), 0);
}

#[tokio::test]
async fn gone_forces_a_relist_that_keeps_the_state_right() {
    let mut h = Harness::start().await;
    h.until("the seed example", |r| endpoint_ips(r).len() == 3)
        .await;
    let lists_before = h
        .requests_for("/api/v1/pods?")
        .iter()
        .filter(|r| !r.contains("watch="))
        .count();
    // Changes no watch hears about, then the watch cache expires: only a re-list shows them.
    h.api.delete_silently("Pod", "default", "redis-1");
    h.api.apply_silently(pod(3, "10.1.0.13"));
    h.api.expire();
    h.until("the re-list", |r| {
        endpoint_ips(r) == ["10.1.0.10", "10.1.0.12", "10.1.0.13"]
    })
    .await;
    let lists_after = h
        .requests_for("/api/v1/pods?")
        .iter()
        .filter(|r| !r.contains("watch="))
        .count();
    assert!(lists_after > lists_before, "{:?}", h.api.requests());
    assert!(h.metrics.watch_errors.get() >= 1);
    // The watches work again after the re-list.
    h.api.delete("Pod", "default", "redis-0");
    h.until("an event after the re-list", |r| {
        endpoint_ips(r) == ["10.1.0.12", "10.1.0.13"]
    })
    .await;
    assert_eq!(vs_weight(&h.store), Some(100));
}

#[tokio::test]
async fn invalid_virtual_service_is_rejected_and_the_previous_one_stays() {
    let mut h = Harness::start().await;
    h.until("the seed example", |r| endpoint_ips(r).len() == 3)
        .await;
    h.api.apply(virtual_service(json!("nope")));
    // Something else changes too: only the VirtualService is held back.
    h.api.delete("Pod", "default", "redis-2");
    let update = h
        .until("the rejected edit", |r| endpoint_ips(r).len() == 2)
        .await;
    let rejections: Vec<_> = h.store.rejections().collect();
    assert_eq!(rejections.len(), 1, "{rejections:?}");
    let r = rejections[0];
    assert_eq!(
        r.key,
        Some(ObjectKey::new(Kind::VirtualService, "default", "redis"))
    );
    let message = r.to_string();
    assert!(
        message.starts_with(
            "kube:/apis/networking.istio.io/v1/namespaces/default/virtualservices/redis:"
        ) && message.contains("weight"),
        "{message}"
    );
    assert!(
        update
            .diagnostics
            .iter()
            .any(|d| d.message == r.diagnostic.message)
    );
    assert_eq!(
        vs_weight(&h.store),
        Some(100),
        "the last valid version stays"
    );
    assert_eq!(h.registry().policies.virtual_services.len(), 1);
    // A valid version replaces it and clears the rejection.
    h.api.apply(virtual_service(json!(100)));
    let mut fixed = virtual_service(json!(100));
    fixed["spec"]["hosts"] = json!(["redis", "redis.default.svc.cluster.local"]);
    h.api.apply(fixed);
    h.until("the fix", |r| {
        r.policies
            .virtual_services
            .first()
            .is_some_and(|vs| vs.spec.hosts.len() == 2)
    })
    .await;
    assert_eq!(h.store.rejections().count(), 0);
    // Deleting it removes it.
    h.api.delete("VirtualService", "default", "redis");
    h.until("the deletion", |r| r.policies.virtual_services.is_empty())
        .await;
}

#[tokio::test]
async fn bookmarks_move_the_resume_point() {
    let mut h = Harness::start().await;
    h.until("the seed example", |r| endpoint_ips(r).len() == 3)
        .await;
    // Pods' watch last saw the VirtualService's... no: its own last event. Move the global
    // resource version on with a Service edit, then bookmark it.
    let mut svc = service();
    svc["metadata"]["labels"]["tier"] = "cache".into();
    h.api.apply(svc);
    h.until("the service edit", |r| {
        redis(r).is_some_and(|s| s.labels.get("tier").map(String::as_str) == Some("cache"))
    })
    .await;
    let rv = h.api.bookmark();
    // Give the bookmark time to arrive, then end every watch as a timeout would.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lists_before = h
        .requests_for("/api/v1/pods?")
        .iter()
        .filter(|r| !r.contains("watch="))
        .count();
    h.api.close_watches();
    let resumed = format!("resourceVersion={rv}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !h
        .requests_for("/api/v1/pods?")
        .iter()
        .any(|r| r.contains("watch=true") && r.contains(&resumed))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pods watch resumed from the bookmark {rv}: {:#?}",
            h.requests_for("/api/v1/pods")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lists_after = h
        .requests_for("/api/v1/pods?")
        .iter()
        .filter(|r| !r.contains("watch="))
        .count();
    assert_eq!(lists_before, lists_after, "resuming needs no re-list");
    // Events after the resume arrive.
    h.api.apply(pod(1, "10.1.0.31"));
    h.until("an event after the resume", |r| {
        endpoint_ips(r).contains(&"10.1.0.31".to_string())
    })
    .await;
    assert_eq!(h.metrics.watch_errors.get(), 0);
}

#[tokio::test]
async fn missing_istio_crds_do_not_hold_back_the_mesh() {
    let started = std::time::Instant::now();
    let mut h =
        Harness::start_with(&["VirtualService", "DestinationRule", "PeerAuthentication"]).await;
    h.until("the Kubernetes objects", |r| endpoint_ips(r).len() == 3)
        .await;
    // Well before the 10 s initial-sync deadline: a kind discovery does not find is empty.
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(h.registry().policies.virtual_services.is_empty());
    // Not an error: the kinds are not installed, and nothing asked for their collections.
    assert_eq!(h.metrics.watch_errors.get(), 0);
    for plural in ["virtualservices", "destinationrules", "peerauthentications"] {
        assert!(h.requests_for(plural).is_empty(), "{:?}", h.api.requests());
    }
    assert!(
        h.api.unknown_paths().is_empty(),
        "{:?}",
        h.api.unknown_paths()
    );
    // The CRD is installed later, serving only the oldest version: discovery, asked again
    // with backoff, finds it, and its objects arrive.
    h.api.serve_versions("VirtualService", &["v1alpha3"]);
    let mut old = virtual_service(json!(100));
    old["apiVersion"] = "networking.istio.io/v1alpha3".into();
    h.api.apply(old);
    h.until("the VirtualService of a CRD installed later", |r| {
        r.policies.virtual_services.len() == 1
    })
    .await;
    assert_eq!(vs_weight(&h.store), Some(100));
    let origin = h
        .store
        .origin(&ObjectKey::new(Kind::VirtualService, "default", "redis"))
        .map(|(o, _)| o.to_string());
    assert_eq!(
        origin.as_deref(),
        Some("kube:/apis/networking.istio.io/v1alpha3/namespaces/default/virtualservices/redis")
    );
    assert_eq!(h.metrics.watch_errors.get(), 0);
}

fn redis_policy(percentage: Value) -> Value {
    json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "RedisPolicy",
           "metadata": {"name": "get-errors", "namespace": "default", "generation": 1},
           "spec": {"host": "redis",
                    "faults": [{"commands": ["GET"], "abort": {"percentage": percentage}}]}})
}

fn redis_percentages(registry: &Registry) -> Vec<Option<f64>> {
    (registry.policies.redis_policies.iter())
        .flat_map(|p| &p.spec.faults)
        .map(|f| f.abort.as_ref().and_then(|a| a.percentage))
        .collect()
}

#[tokio::test]
async fn redis_policies_are_watched_rejected_when_invalid_and_deleted() {
    let mut h = Harness::start().await;
    h.until("the seed example", |r| endpoint_ips(r).len() == 3)
        .await;
    assert!(h.registry().policies.redis_policies.is_empty());
    h.api.apply(redis_policy(json!(20)));
    h.until("the RedisPolicy", |r| redis_percentages(r) == [Some(20.0)])
        .await;
    // Invalid: rejected; the last valid version stays while another change goes through.
    h.api.apply(redis_policy(json!(200)));
    h.api.delete("Pod", "default", "redis-2");
    h.until("the rejected edit", |r| endpoint_ips(r).len() == 2)
        .await;
    let rejections: Vec<_> = h.store.rejections().collect();
    assert_eq!(rejections.len(), 1, "{rejections:?}");
    assert_eq!(
        rejections[0].key,
        Some(ObjectKey::new(Kind::RedisPolicy, "default", "get-errors"))
    );
    let message = rejections[0].to_string();
    assert!(
        message.starts_with(
            "kube:/apis/ferry.dev/v1alpha1/namespaces/default/redispolicies/get-errors:"
        ) && message.contains("spec.faults[0].abort.percentage"),
        "{message}"
    );
    assert_eq!(redis_percentages(&h.registry()), [Some(20.0)]);
    // Deleted: gone, the rejection with it.
    h.api.delete("RedisPolicy", "default", "get-errors");
    h.until("the deletion", |r| r.policies.redis_policies.is_empty())
        .await;
    assert_eq!(h.store.rejections().count(), 0);
    assert_eq!(h.metrics.watch_errors.get(), 0);
    assert!(
        h.api.unknown_paths().is_empty(),
        "{:?}",
        h.api.unknown_paths()
    );
}

fn telemetry(sampling: Value) -> Value {
    json!({"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
           "metadata": {"name": "tracing", "namespace": "default", "generation": 1},
           "spec": {"tracing": [{"providers": [{"name": "otel"}],
                                 "randomSamplingPercentage": sampling}]}})
}

fn mesh_config_map(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": "istio-system"},
           "data": {"mesh": "extensionProviders:\n- name: otel\n  opentelemetry: {service: otel.obs, port: 4317}\n"}})
}

fn samplings(registry: &Registry) -> Vec<Option<f64>> {
    (registry.policies.telemetries.iter())
        .flat_map(|t| &t.spec.tracing)
        .map(|t| t.random_sampling_percentage)
        .collect()
}

#[tokio::test]
async fn telemetries_and_the_mesh_config_are_watched_rejected_when_invalid_and_deleted() {
    let mut h = Harness::start().await;
    h.until("the seed example", |r| endpoint_ips(r).len() == 3)
        .await;
    assert!(h.registry().policies.telemetries.is_empty());
    assert!(h.registry().policies.mesh.is_none());
    h.api.apply(mesh_config_map("istio"));
    h.api.apply(telemetry(json!(20)));
    h.until("the Telemetry and the mesh config", |r| {
        samplings(r) == [Some(20.0)] && r.policies.mesh.is_some()
    })
    .await;
    let providers: Vec<_> = (h.registry().policies.mesh.iter())
        .flat_map(|m| &m.extension_providers)
        .filter_map(|p| p.name.clone())
        .collect();
    assert_eq!(providers, ["otel"]);
    // Invalid: rejected; the last valid version stays while another change goes through.
    h.api.apply(telemetry(json!(200)));
    h.api.delete("Pod", "default", "redis-2");
    h.until("the rejected edit", |r| endpoint_ips(r).len() == 2)
        .await;
    let rejections: Vec<_> = h.store.rejections().collect();
    assert_eq!(rejections.len(), 1, "{rejections:?}");
    assert_eq!(
        rejections[0].key,
        Some(ObjectKey::new(Kind::Telemetry, "default", "tracing"))
    );
    let message = rejections[0].to_string();
    assert!(
        message.starts_with(
            "kube:/apis/telemetry.istio.io/v1/namespaces/default/telemetries/tracing:"
        ) && message.contains("spec.tracing[0].randomSamplingPercentage"),
        "{message}"
    );
    assert_eq!(samplings(&h.registry()), [Some(20.0)]);
    // Deleted: gone, the rejection with it; the mesh config too.
    h.api.delete("Telemetry", "default", "tracing");
    h.api.delete("ConfigMap", "istio-system", "istio");
    h.until("the deletions", |r| {
        r.policies.telemetries.is_empty() && r.policies.mesh.is_none()
    })
    .await;
    assert_eq!(h.store.rejections().count(), 0);
    assert_eq!(h.metrics.watch_errors.get(), 0);
    assert!(
        h.api.unknown_paths().is_empty(),
        "{:?}",
        h.api.unknown_paths()
    );
    // Only the ConfigMaps named `istio` are listed and watched.
    let requests = h.api.requests();
    let config_maps: Vec<_> = (requests.iter())
        .filter(|r| r.contains("/configmaps"))
        .collect();
    assert!(
        !config_maps.is_empty()
            && config_maps
                .iter()
                .all(|r| r.contains("fieldSelector=metadata.name%3Distio")),
        "{requests:?}"
    );
}

fn destination_rule(lb: &str) -> Value {
    json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
           "metadata": {"name": "redis", "namespace": "default", "generation": 1},
           "spec": {"host": "redis",
                    "trafficPolicy": {"loadBalancer": {"simple": lb}}}})
}

fn peer_authentication(mode: &str) -> Value {
    json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
           "metadata": {"name": "default", "namespace": "default", "generation": 1},
           "spec": {"mtls": {"mode": mode}}})
}

/// The compiled configuration of the proxy of `redis-0`, as JSON.
fn compiled(registry: &Registry) -> Value {
    let proxy = ProxyIdentity {
        pod: "redis-0".into(),
        namespace: "default".into(),
        workload: "redis".into(),
        service_account: "redis".into(),
        ip: None,
    };
    let config = compile(registry, &proxy).config;
    serde_json::to_value(&config).unwrap_or_else(|e| panic!("config as JSON: {e}"))
}

/// The redis cluster's DestinationRule and load balancer, and the inbound mTLS mode and the
/// PeerAuthentication that set it, as compiled for `redis-0`.
fn compiled_policies(registry: &Registry) -> (Value, Value, Value, Value) {
    let config = compiled(registry);
    let cluster = (config["clusters"].as_array().into_iter().flatten())
        .find(|c| c["host"] == "redis.default.svc.cluster.local" && c["subset"].is_null())
        .cloned()
        .unwrap_or(Value::Null);
    (
        cluster["destinationRule"].clone(),
        cluster["loadBalancer"]["simple"].clone(),
        config["inbound"]["mtls"].clone(),
        config["inbound"]["peerAuthentication"].clone(),
    )
}

fn origin_of(store: &Store, kind: Kind, name: &str) -> Option<String> {
    store
        .origin(&ObjectKey::new(kind, "default", name))
        .map(|(o, _)| o.to_string())
}

#[tokio::test]
async fn destination_rules_served_as_v1beta1_and_peer_authentications_follow_the_cluster() {
    let mut h = Harness::start_configured(|api| {
        api.serve_versions("DestinationRule", &["v1beta1", "v1alpha3"]);
    })
    .await;
    h.until("the seed example", |r| endpoint_ips(r).len() == 3)
        .await;
    assert_eq!(
        compiled_policies(&h.registry()),
        (
            Value::Null,
            json!("LEAST_REQUEST"),
            json!("PERMISSIVE"),
            Value::Null
        ),
        "before any policy"
    );
    // Created.
    h.api.apply(destination_rule("ROUND_ROBIN"));
    h.api.apply(peer_authentication("STRICT"));
    h.until("the DestinationRule and the PeerAuthentication", |r| {
        r.policies.destination_rules.len() == 1 && r.policies.peer_authentications.len() == 1
    })
    .await;
    assert_eq!(
        compiled_policies(&h.registry()),
        (
            json!("default/redis"),
            json!("ROUND_ROBIN"),
            json!("STRICT"),
            json!("default/default")
        )
    );
    assert_eq!(
        origin_of(&h.store, Kind::DestinationRule, "redis").as_deref(),
        Some("kube:/apis/networking.istio.io/v1beta1/namespaces/default/destinationrules/redis")
    );
    assert_eq!(
        origin_of(&h.store, Kind::PeerAuthentication, "default").as_deref(),
        Some("kube:/apis/security.istio.io/v1/namespaces/default/peerauthentications/default")
    );
    // Modified.
    h.api.apply(destination_rule("RANDOM"));
    h.api.apply(peer_authentication("DISABLE"));
    h.until("the edits", |r| {
        let (_, lb, mtls, _) = compiled_policies(r);
        lb == "RANDOM" && mtls == "DISABLE"
    })
    .await;
    // An invalid edit is rejected, naming the version read; the last valid one stays.
    h.api.apply(destination_rule("FASTEST"));
    h.api.delete("Pod", "default", "redis-2");
    h.until("the rejected edit", |r| endpoint_ips(r).len() == 2)
        .await;
    let rejections: Vec<String> = h.store.rejections().map(ToString::to_string).collect();
    assert_eq!(rejections.len(), 1, "{rejections:?}");
    assert!(
        rejections[0].starts_with(
            "kube:/apis/networking.istio.io/v1beta1/namespaces/default/destinationrules/redis:"
        ) && rejections[0].contains("loadBalancer"),
        "{rejections:?}"
    );
    assert_eq!(compiled_policies(&h.registry()).1, json!("RANDOM"));
    // Deleted.
    h.api.delete("DestinationRule", "default", "redis");
    h.api.delete("PeerAuthentication", "default", "default");
    h.until("the deletions", |r| {
        r.policies.destination_rules.is_empty() && r.policies.peer_authentications.is_empty()
    })
    .await;
    assert_eq!(
        compiled_policies(&h.registry()),
        (
            Value::Null,
            json!("LEAST_REQUEST"),
            json!("PERMISSIVE"),
            Value::Null
        )
    );
    assert_eq!(h.store.rejections().count(), 0);
    // Watched at v1beta1 only (the preferred version the cluster serves), never at v1.
    assert!(
        !h.requests_for("/apis/networking.istio.io/v1beta1/destinationrules?")
            .is_empty()
    );
    assert!(
        h.requests_for("/apis/networking.istio.io/v1/destinationrules")
            .is_empty()
    );
    assert!(h.requests_for("/v1alpha3/destinationrules").is_empty());
    assert_eq!(h.metrics.watch_errors.get(), 0);
    assert!(
        h.api.unknown_paths().is_empty(),
        "{:?}",
        h.api.unknown_paths()
    );
}

#[tokio::test]
async fn a_version_no_longer_served_is_replaced_by_one_that_is_and_a_removed_crd_empties_its_kind()
{
    let mut h = Harness::start_configured(|api| {
        api.serve_versions("DestinationRule", &["v1", "v1beta1"]);
    })
    .await;
    h.until("the seed example", |r| endpoint_ips(r).len() == 3)
        .await;
    h.api.apply(destination_rule("ROUND_ROBIN"));
    h.until("the DestinationRule", |r| {
        r.policies.destination_rules.len() == 1
    })
    .await;
    assert_eq!(
        origin_of(&h.store, Kind::DestinationRule, "redis").as_deref(),
        Some("kube:/apis/networking.istio.io/v1/namespaces/default/destinationrules/redis"),
        "v1 is preferred"
    );
    // The CRD stops serving v1: the watch ends, its next start gets 404, and discovery
    // finds v1beta1. The rule is read again there; no update goes without it.
    h.api.serve_versions("DestinationRule", &["v1beta1"]);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let Ok(Some(loaded)) = tokio::time::timeout_at(deadline, h.updates.recv()).await else {
            panic!(
                "the rule was never read at v1beta1: {:#?}",
                h.api.requests()
            );
        };
        h.store.apply(loaded.update);
        assert_eq!(h.registry().policies.destination_rules.len(), 1);
        let origin = origin_of(&h.store, Kind::DestinationRule, "redis");
        if origin.as_deref()
            == Some(
                "kube:/apis/networking.istio.io/v1beta1/namespaces/default/destinationrules/redis",
            )
        {
            break;
        }
    }
    assert!(h.metrics.watch_errors.get() >= 1, "the 404 is counted");
    // Events arrive at the new version.
    h.api.apply(destination_rule("RANDOM"));
    h.until("an edit at v1beta1", |r| compiled_policies(r).1 == "RANDOM")
        .await;
    // The CRD is deleted: its objects are gone with it.
    h.api.unserve("DestinationRule");
    h.until("the removed CRD", |r| {
        r.policies.destination_rules.is_empty()
    })
    .await;
    assert_eq!(endpoint_ips(&h.registry()).len(), 3, "nothing else changes");
}
