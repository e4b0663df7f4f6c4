//! The control plane with `kube: true` (what `ferry control-plane --kube` runs): the client
//! comes from a kubeconfig that points at the fake API server, and the monitoring endpoint
//! shows the cluster's pods compiled, with their cluster-given addresses, and the watch
//! metrics.
//!
//! This file is its own test binary because it sets `KUBECONFIG` for the process.

#[path = "support/kube_api/mod.rs"]
mod kube_api;

#[path = "support/plane.rs"]
mod test_plane;

use std::time::Duration;

use ferry_control::plane::PlaneOptions;
use serde_json::json;
use test_plane::{RunningPlane, get};

#[tokio::test]
async fn control_plane_reads_the_cluster_through_a_kubeconfig() {
    let api = kube_api::FakeApi::start().await.expect("fake API server");
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": "default", "labels": {"istio-injection": "enabled"}}}));
    api.apply(json!({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": "redis", "namespace": "default"},
                     "spec": {"clusterIP": "None", "selector": {"app": "redis"},
                              "ports": [{"name": "tcp-redis", "port": 6379}]}}));
    api.apply(json!({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": "redis-0", "namespace": "default", "labels": {"app": "redis"}},
                     "spec": {"containers": [{"name": "redis", "image": "redis:alpine"}]},
                     "status": {"podIP": "10.1.0.10"}}));
    // A pod the scheduler has not placed yet: no address, and none is made up for it.
    api.apply(json!({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": "redis-1", "namespace": "default", "labels": {"app": "redis"}},
                     "spec": {"containers": [{"name": "redis", "image": "redis:alpine"}]},
                     "status": {"phase": "Pending"}}));
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
         users:\n- name: test\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: test\n\
         current-context: fake\n",
        api.url()
    );
    std::fs::write(&kubeconfig, text).expect("write kubeconfig");
    // SAFETY: set before any other thread of this test binary reads the environment.
    unsafe { std::env::set_var("KUBECONFIG", &kubeconfig) };

    let options = PlaneOptions {
        kube: true,
        grpc: "127.0.0.1:0".parse().expect("addr"),
        monitoring: Some("127.0.0.1:0".parse().expect("addr")),
        ..PlaneOptions::default()
    };
    let plane = RunningPlane::start(options).await;
    let base = plane.monitoring_url();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some((200, _)) = get(&format!("{base}/ready")).await {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, dump) = get(&format!("{base}/debug/config_dump?proxy=default/redis-0"))
        .await
        .expect("config dump");
    assert_eq!(status, 200, "{dump}");
    assert!(dump.contains("10.1.0.10"), "{dump}");
    let (_, metrics) = get(&format!("{base}/metrics")).await.expect("metrics");
    assert!(
        metrics.contains("ferry_control_kube_watch_errors_total 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferry_control_kube_updates_total"),
        "{metrics}"
    );
    // redis-1 has no address: nothing from the local pod network was assigned to it.
    assert!(!dump.contains("198.18."), "{dump}");
    assert!(api.unknown_paths().is_empty(), "{:?}", api.unknown_paths());
    plane.stop().await;
}
