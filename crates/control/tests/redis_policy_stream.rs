//! RedisPolicies (`ferry.dev/v1alpha1`) through the whole control plane, on loopback: a
//! manifest directory watched by the file source, the store, the compiler and its cache, the
//! real distribution server, and a proxy's real discovery client following the stream. A
//! RedisPolicy file added reaches the client's configuration; an invalid edit is rejected
//! with the error `ferry validate` prints (file, resource, field) and the previous version
//! stays in force; the file deleted, the policy leaves the configuration.

mod plane_stream;

use plane_stream::Harness;

const MESH: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: redis
spec:
  clusterIP: None
  selector:
    app: redis
  ports:
  - name: tcp-redis
    port: 6379
---
apiVersion: v1
kind: Pod
metadata:
  name: redis-0
  labels:
    app: redis
spec:
  containers:
  - name: redis
    image: redis
    ports:
    - containerPort: 6379
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  labels:
    app: client
spec:
  containers:
  - name: shell
    image: busybox
"#;

/// The policy, with `percentage` as its abort's percentage.
fn policy(percentage: u32) -> String {
    format!(
        r#"apiVersion: ferry.dev/v1alpha1
kind: RedisPolicy
metadata:
  name: get-errors
spec:
  host: redis
  faults:
  - commands: [GET]
    abort:
      error: ERR injected by Ferry
      percentage: {percentage}
"#
    )
}

/// Another service, whose arrival at the proxy shows that it holds a configuration
/// compiled after an edit.
const OTHER: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: other
spec:
  selector:
    app: redis
  ports:
  - name: tcp-other
    port: 7000
"#;

/// The RedisPolicies on the proxy's outbound port of redis: (policy, abort percentage).
fn policies(h: &Harness) -> Vec<(String, Option<f64>)> {
    let snapshot = h.config.load();
    let port = snapshot
        .config
        .outbound
        .iter()
        .find(|p| p.host == "redis.default.svc.cluster.local" && p.port == 6379);
    port.into_iter()
        .flat_map(|p| &p.redis_policies)
        .map(|p| {
            let abort = p.faults.first().and_then(|f| f.abort.as_ref());
            (p.policy.clone(), abort.and_then(|a| a.percentage))
        })
        .collect()
}

fn applied(percentage: f64) -> Vec<(String, Option<f64>)> {
    vec![("default/get-errors".to_string(), Some(percentage))]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_policy_added_rejected_when_invalid_and_removed() {
    let h = Harness::start(MESH, "client").await;
    assert!(h.mesh.errors().is_empty(), "{:?}", h.mesh.errors());
    assert!(
        h.config
            .load()
            .config
            .outbound
            .iter()
            .any(|p| p.host == "redis.default.svc.cluster.local"),
        "the client sees redis"
    );
    assert!(policies(&h).is_empty());

    // Added: the proxy gets it.
    h.write("redis-policy.yaml", &policy(20));
    h.until(
        "the policy at the proxy",
        |h| policies(h) == applied(20.0),
        policies,
    )
    .await;
    let port = h.config.load().config.outbound.clone();
    let entry = port
        .iter()
        .flat_map(|p| &p.redis_policies)
        .next()
        .expect("a policy");
    assert_eq!(entry.faults[0].commands, ["GET"]);
    assert_eq!(
        entry.faults[0]
            .abort
            .as_ref()
            .and_then(|a| a.error.as_deref()),
        Some("ERR injected by Ferry")
    );

    // Invalid: rejected with the file, resource and field; the previous version stays, in
    // a configuration compiled after the edit (it has the service added with it).
    h.write("redis-policy.yaml", &policy(200));
    h.write("other.yaml", OTHER);
    h.until(
        "the rejection and the other service",
        |h| h.has_other() && !h.mesh.errors().is_empty(),
        policies,
    )
    .await;
    let errors = h.mesh.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let file = h.path("redis-policy.yaml").display().to_string();
    assert!(
        errors[0].starts_with(&format!("{file}:"))
            && errors[0]
                .contains("RedisPolicy/default/get-errors: spec.faults[0].abort.percentage"),
        "{errors:?}"
    );
    assert_eq!(policies(&h), applied(20.0), "the last valid version stays");
    let rejected = h.mesh.with_store(|s| s.rejections().count());
    assert_eq!(rejected, 1);

    // A valid edit replaces it and clears the error.
    h.write("redis-policy.yaml", &policy(50));
    h.until(
        "the fixed policy",
        |h| policies(h) == applied(50.0),
        policies,
    )
    .await;
    assert!(h.mesh.errors().is_empty(), "{:?}", h.mesh.errors());

    // Deleted: gone from the proxy.
    std::fs::remove_file(h.path("redis-policy.yaml")).expect("remove");
    h.until("the policy gone", |h| policies(h).is_empty(), policies)
        .await;
    assert!(h.has_other());
}
