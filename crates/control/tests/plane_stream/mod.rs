//! The harness of the loopback stream tests: a control plane over a manifest directory
//! (file source, store, compiler, the real distribution server) and a proxy's real discovery
//! client following its stream.

#![allow(dead_code)]

use arc_swap::ArcSwap;
use ferry_control::plane::{self, Bound, Mesh, PlaneOptions};
use ferry_proto::config::ProxyConfig;
use ferry_proxy::config::Snapshot;
use ferry_proxy::discovery::{self, DiscoveryState, ProxyInfo};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long a test waits for the control plane and the proxy.
pub const WAIT: Duration = Duration::from_secs(20);

/// A control plane over a manifest directory, and a proxy following it; both stop when
/// dropped.
pub struct Harness {
    /// The control plane.
    pub mesh: Arc<Mesh>,
    dir: tempfile::TempDir,
    /// The proxy's configuration in force.
    pub config: Arc<ArcSwap<Snapshot>>,
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
    /// A control plane over a directory holding `manifests` (as `mesh.yaml`), and the proxy
    /// of the pod `pod` (namespace `default`) once it has a configuration.
    pub async fn start(manifests: &str, pod: &str) -> Harness {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("mesh.yaml"), manifests).expect("manifest");
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
            pod: pod.into(),
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

    /// The path of a manifest.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a manifest aside, then renames it, so the watcher never sees half a file.
    pub fn write(&self, name: &str, text: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write manifest");
        std::fs::rename(&tmp, self.dir.path().join(name)).expect("rename manifest");
    }

    /// Whether the proxy's configuration has the service `other`.
    pub fn has_other(&self) -> bool {
        let snapshot = self.config.load();
        snapshot.config.services.iter().any(|s| s.name == "other")
    }

    /// Waits until `done` holds; on timeout, fails with `state` (what the proxy holds) and
    /// the control plane's errors.
    pub async fn until<S: std::fmt::Debug>(
        &self,
        what: &str,
        done: impl Fn(&Harness) -> bool,
        state: impl Fn(&Harness) -> S,
    ) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; the proxy holds {:?}; errors: {:?}",
                state(self),
                self.mesh.errors()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
