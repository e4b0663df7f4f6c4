//! RedisPolicies (`ferry.dev/v1alpha1`) through the whole control plane, on loopback: a
//! manifest directory watched by the file source, the store, the compiler and its cache, the
//! real distribution server, and a proxy's real discovery client following the stream. A
//! RedisPolicy file added reaches the client's configuration; an invalid edit is rejected
//! with the error `ferry validate` prints (file, resource, field) and the previous version
//! stays in force; the file deleted, the policy leaves the configuration.

use arc_swap::ArcSwap;
use ferry_control::plane::{self, Bound, Mesh, PlaneOptions};
use ferry_proto::config::ProxyConfig;
use ferry_proxy::config::Snapshot;
use ferry_proxy::discovery::{self, DiscoveryState, ProxyInfo};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

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

/// A control plane over a manifest directory, and a proxy (the `client` pod) following it;
/// both stop when dropped.
struct Harness {
    mesh: Arc<Mesh>,
    dir: tempfile::TempDir,
    config: Arc<ArcSwap<Snapshot>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Harness {
    async fn start() -> Harness {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("mesh.yaml"), MESH).expect("manifest");
        let mesh = Arc::new(Mesh::new(PlaneOptions {
            config_dir: dir.path().to_path_buf(),
            grpc: "127.0.0.1:0".parse().expect("addr"),
            monitoring: None,
            ..PlaneOptions::default()
        }));
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel::<Bound>();
        let (plane_stop, plane_stopped) = tokio::sync::oneshot::channel::<()>();
        let plane = tokio::spawn({
            let mesh = mesh.clone();
            async move {
                let shutdown = async move {
                    let _ = plane_stopped.await;
                };
                let on_bound = move |bound| {
                    let _ = bound_tx.send(bound);
                };
                if let Err(e) = plane::serve(mesh, shutdown, on_bound).await {
                    panic!("the control plane failed: {e}");
                }
            }
        });
        let bound = bound_rx.await.expect("the control plane binds");

        let config = Arc::new(ArcSwap::from_pointee(Snapshot::compile(
            ProxyConfig::default(),
        )));
        let state = DiscoveryState::new();
        let info = ProxyInfo {
            pod: "client".into(),
            namespace: "default".into(),
            ..ProxyInfo::default()
        };
        let (proxy_stop, proxy_stopped) = tokio::sync::oneshot::channel::<()>();
        let proxy = tokio::spawn({
            let (addr, config, state) = (bound.grpc.to_string(), config.clone(), state.clone());
            async move {
                discovery::run_with(&addr, None, info, config, state, async move {
                    let _ = proxy_stopped.await;
                })
                .await;
            }
        });
        tokio::time::timeout(WAIT, state.ready())
            .await
            .expect("the proxy gets a configuration");
        Harness {
            mesh,
            dir,
            config,
            tasks: vec![proxy, plane],
            _stops: vec![proxy_stop, plane_stop],
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a manifest aside, then renames it, so the watcher never sees half a file.
    fn write(&self, name: &str, text: &str) {
        write(self.dir.path(), name, text);
    }

    /// The RedisPolicies on the proxy's outbound port of redis: (policy, abort percentage).
    fn policies(&self) -> Vec<(String, Option<f64>)> {
        let snapshot = self.config.load();
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

    /// Whether the proxy's configuration has the service `other`.
    fn has_other(&self) -> bool {
        let snapshot = self.config.load();
        snapshot.config.services.iter().any(|s| s.name == "other")
    }

    /// Waits until `done` holds.
    async fn until(&self, what: &str, done: impl Fn(&Harness) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; the proxy's policies: {:?}; errors: {:?}",
                self.policies(),
                self.mesh.errors()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write manifest");
    std::fs::rename(&tmp, dir.join(name)).expect("rename manifest");
}

fn applied(percentage: f64) -> Vec<(String, Option<f64>)> {
    vec![("default/get-errors".to_string(), Some(percentage))]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_policy_added_rejected_when_invalid_and_removed() {
    let h = Harness::start().await;
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
    assert!(h.policies().is_empty());

    // Added: the proxy gets it.
    h.write("redis-policy.yaml", &policy(20));
    h.until("the policy at the proxy", |h| h.policies() == applied(20.0))
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
    h.until("the rejection and the other service", |h| {
        h.has_other() && !h.mesh.errors().is_empty()
    })
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
    assert_eq!(h.policies(), applied(20.0), "the last valid version stays");
    let rejected = h.mesh.with_store(|s| s.rejections().count());
    assert_eq!(rejected, 1);

    // A valid edit replaces it and clears the error.
    h.write("redis-policy.yaml", &policy(50));
    h.until("the fixed policy", |h| h.policies() == applied(50.0))
        .await;
    assert!(h.mesh.errors().is_empty(), "{:?}", h.mesh.errors());

    // Deleted: gone from the proxy.
    std::fs::remove_file(h.path("redis-policy.yaml")).expect("remove");
    h.until("the policy gone", |h| h.policies().is_empty())
        .await;
    assert!(h.has_other());
}
