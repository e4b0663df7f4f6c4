//! Tracing settings through the whole control plane, on loopback: a manifest directory
//! watched by the file source (the mesh config in the root namespace's `istio` ConfigMap,
//! a `Telemetry`), the store, the compiler and its cache, the real distribution server, and
//! a proxy's real discovery client following the stream. The Telemetry and mesh config
//! added turn tracing on at the proxy with the provider's endpoint and the sampling; a
//! sampling edit is pushed; an invalid edit is rejected with file, resource and field and
//! the last valid version stays; the Telemetry deleted, tracing is off again.

use arc_swap::ArcSwap;
use ferry_control::plane::{self, Bound, Mesh, PlaneOptions};
use ferry_proto::config::{ProxyConfig, TracingProvider};
use ferry_proxy::config::Snapshot;
use ferry_proxy::discovery::{self, DiscoveryState, ProxyInfo};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

const MESH: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
---
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  labels:
    app: web
spec:
  containers:
  - name: web
    image: nginx
"#;

/// The mesh config: an OTLP/gRPC provider, and no default provider (so tracing stays off
/// until a Telemetry names one).
const MESH_CONFIG: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: istio
  namespace: istio-system
data:
  mesh: |
    extensionProviders:
    - name: otel
      opentelemetry:
        service: otel-collector.observability.svc.cluster.local
        port: 4317
"#;

/// A Telemetry for the `default` namespace, sampling `sampling` percent.
fn telemetry(sampling: u32) -> String {
    format!(
        r#"apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: tracing
  namespace: default
spec:
  tracing:
  - providers:
    - name: otel
    randomSamplingPercentage: {sampling}
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
    app: web
  ports:
  - name: http-other
    port: 8080
"#;

/// A control plane over a manifest directory, and a proxy (the `web-0` pod) following it;
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
            pod: "web-0".into(),
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

    /// The proxy's tracing settings: (provider, endpoint, sampling percentage).
    fn tracing(&self) -> Option<(TracingProvider, String, f64)> {
        let snapshot = self.config.load();
        (snapshot.config.tracing.as_ref())
            .map(|t| (t.provider, t.endpoint.clone(), t.sampling_percentage))
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
                "timed out waiting for {what}; the proxy's tracing: {:?}; errors: {:?}",
                self.tracing(),
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

fn otel(sampling: f64) -> Option<(TracingProvider, String, f64)> {
    Some((
        TracingProvider::OtlpGrpc,
        "http://otel-collector.observability.svc.cluster.local:4317".to_string(),
        sampling,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_and_mesh_config_turn_tracing_on_are_edited_and_removed() {
    let h = Harness::start().await;
    assert!(h.mesh.errors().is_empty(), "{:?}", h.mesh.errors());
    assert_eq!(h.tracing(), None, "tracing is off without a provider");

    // Added: the proxy gets the provider's endpoint and the Telemetry's sampling.
    h.write("mesh-config.yaml", MESH_CONFIG);
    h.write("telemetry.yaml", &telemetry(25));
    h.until("tracing at the proxy", |h| h.tracing() == otel(25.0))
        .await;
    assert!(h.mesh.errors().is_empty(), "{:?}", h.mesh.errors());

    // Edited: the new sampling is pushed.
    h.write("telemetry.yaml", &telemetry(75));
    h.until("the new sampling", |h| h.tracing() == otel(75.0))
        .await;

    // Invalid: rejected with the file, resource and field; the previous version stays, in
    // a configuration compiled after the edit (it has the service added with it).
    h.write("telemetry.yaml", &telemetry(250));
    h.write("other.yaml", OTHER);
    h.until("the rejection and the other service", |h| {
        h.has_other() && !h.mesh.errors().is_empty()
    })
    .await;
    let errors = h.mesh.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let file = h.path("telemetry.yaml").display().to_string();
    assert!(
        errors[0].starts_with(&format!("{file}:"))
            && errors[0]
                .contains("Telemetry/default/tracing: spec.tracing[0].randomSamplingPercentage"),
        "{errors:?}"
    );
    assert_eq!(h.tracing(), otel(75.0), "the last valid version stays");

    // Deleted: tracing is off again (the mesh config names no default provider).
    std::fs::remove_file(h.path("telemetry.yaml")).expect("remove");
    h.until("tracing off", |h| h.tracing().is_none()).await;
    assert!(h.mesh.errors().is_empty(), "{:?}", h.mesh.errors());
    assert!(h.has_other());
}
