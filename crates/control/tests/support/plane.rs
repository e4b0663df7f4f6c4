//! A control plane run in the test's process (what `ferry control-plane` runs: `plane::run`),
//! stopped when the test is done, and a plain HTTP GET for its monitoring endpoint.

use std::time::Duration;

use ferry_control::plane::{self, Bound, PlaneOptions};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running `plane::run` and the addresses it bound.
pub struct RunningPlane {
    /// What the control plane listens on.
    pub bound: Bound,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningPlane {
    /// Starts `plane::run` with `options` and waits until it has bound its ports.
    pub async fn start(options: PlaneOptions) -> Self {
        let (bound_tx, bound_rx) = oneshot::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(plane::run(
            options,
            async move {
                let _ = stopped.await;
            },
            move |bound| {
                let _ = bound_tx.send(bound);
            },
        ));
        let bound = bound_rx.await.expect("the control plane binds its ports");
        RunningPlane { bound, stop, task }
    }

    /// `http://<monitoring address>`.
    pub fn monitoring_url(&self) -> String {
        let addr = self.bound.monitoring.expect("a monitoring address");
        format!("http://{addr}")
    }

    /// Asks the control plane to stop and waits (at most 5 s) for it to end.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// GET `url`: its status and body, `None` when the request fails.
pub async fn get(url: &str) -> Option<(u16, String)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let response = client.get(url.parse().ok()?).await.ok()?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}
