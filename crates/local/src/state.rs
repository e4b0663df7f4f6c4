//! What a run made, kept in `/run/ferry/state.json` (written before anything is created and
//! on every change), so that `ferry status`, `exec`, `logs` and `down` work from another
//! terminal and a crashed run's leftovers can be found and removed.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Default directory of the state file and the logs.
pub const DEFAULT_DIR: &str = "/run/ferry";

/// One container of a pod.
pub use crate::lifecycle::ContainerStatus as ContainerState;

/// One pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodState {
    /// Pod name.
    pub name: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Network namespace.
    pub netns: String,
    /// Host-side veth.
    pub veth: String,
    /// Pod IP.
    pub ip: String,
    /// Whether it runs a sidecar.
    pub sidecar: bool,
    /// Ready: every container running and passing its startup and readiness probes.
    pub ready: bool,
    /// `Pending`, `Init:i/n`, `Running`, `CrashLoopBackOff`, `Terminating`, `Failed`, ...
    #[serde(default)]
    pub phase: String,
    /// Why it is not running, when it failed.
    pub error: Option<String>,
    /// The proxy's metrics URL.
    pub metrics_url: Option<String>,
    /// The owning workload (`StatefulSet/redis`), if any.
    #[serde(default)]
    pub workload: String,
    /// Its containers.
    pub containers: Vec<ContainerState>,
}

impl PodState {
    /// Restarts of all its containers.
    pub fn restarts(&self) -> u32 {
        self.containers.iter().map(|c| c.restarts).sum()
    }
}

/// The whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Pid of `ferry up`.
    pub pid: u32,
    /// The manifest directory.
    pub dir: PathBuf,
    /// The bridge.
    pub bridge: String,
    /// The configuration stream's address.
    pub control_plane: Option<String>,
    /// The control plane's monitoring address.
    pub monitoring: Option<String>,
    /// The cluster DNS server's address.
    #[serde(default)]
    pub dns: Option<String>,
    /// The CA's TLS port (certificate API and configuration stream), when mutual TLS is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<String>,
    /// The CA's directory (`root-cert.pem`, ...), when mutual TLS is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_dir: Option<PathBuf>,
    /// The control socket (`ferry ca rollover`), when mutual TLS is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_socket: Option<PathBuf>,
    /// Resources whose latest version was rejected (the last valid one stays in force).
    #[serde(default)]
    pub rejected: Vec<String>,
    /// The pods.
    pub pods: Vec<PodState>,
}

/// The state file in `dir`.
pub fn file(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

impl State {
    /// Reads the state file, if there is one.
    pub fn load(dir: &Path) -> anyhow::Result<Option<State>> {
        match std::fs::read_to_string(file(dir)) {
            Ok(text) => Ok(Some(serde_json::from_str(&text)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the state file atomically.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, file(dir))?;
        Ok(())
    }

    /// The pod named `name` (or whose name starts with `name-` when that is unique).
    pub fn find_pod(&self, name: &str) -> Option<&PodState> {
        let (namespace, name) = name
            .split_once('/')
            .map_or((None, name), |(n, p)| (Some(n), p));
        let ns_ok = |p: &&PodState| namespace.is_none_or(|n| p.namespace == n);
        if let Some(p) = self.pods.iter().filter(ns_ok).find(|p| p.name == name) {
            return Some(p);
        }
        let prefix = format!("{name}-");
        let mut matches = self
            .pods
            .iter()
            .filter(ns_ok)
            .filter(|p| p.name.starts_with(&prefix));
        match (matches.next(), matches.next()) {
            (Some(p), None) => Some(p),
            _ => None,
        }
    }
}

/// Whether the process that wrote the state is still alive.
pub fn owner_alive(state: &State) -> bool {
    state.pid != std::process::id()
        && i32::try_from(state.pid).is_ok_and(|pid| {
            // SAFETY: signal 0 only checks that the process exists.
            pid > 1 && unsafe { libc::kill(pid, 0) } == 0
        })
}

/// Removes everything `state` records: processes, namespaces, veths, `/etc/netns` files,
/// the bridge, and the state file itself.
pub fn teardown(state: &State, dir: &Path) {
    // Only what is inside the namespaces is killed: a recorded pid may have been reused.
    for pod in &state.pods {
        crate::process::kill_netns(&pod.netns);
    }
    for pod in &state.pods {
        crate::netns::delete(&pod.netns, &pod.veth);
        crate::dns::files::remove(&pod.netns);
    }
    if !state.bridge.is_empty() {
        crate::bridge::delete(&state.bridge);
    }
    // The run's per-pod tokens (the CA's root stays for the next run).
    let _ = std::fs::remove_dir_all(dir.join(crate::up::TOKEN_DIR));
    let _ = std::fs::remove_file(dir.join(crate::admin::SOCKET));
    let _ = std::fs::remove_file(file(dir));
}

/// The `ferry status` table.
pub fn table(state: &State) -> String {
    let mut rows = vec![
        [
            "POD",
            "NAMESPACE",
            "IP",
            "SIDECAR",
            "READY",
            "STATUS",
            "RESTARTS",
            "METRICS",
        ]
        .map(String::from),
    ];
    for p in &state.pods {
        let serving: Vec<&ContainerState> =
            p.containers.iter().filter(|c| c.role != "init").collect();
        let ready = serving.iter().filter(|c| c.ready).count();
        let phase = if p.phase.is_empty() {
            "Pending"
        } else {
            &p.phase
        };
        rows.push([
            p.name.clone(),
            p.namespace.clone(),
            p.ip.clone(),
            if p.sidecar { "yes" } else { "no" }.into(),
            format!("{ready}/{}", serving.len()),
            phase.to_string(),
            p.restarts().to_string(),
            p.metrics_url.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut widths = [0usize; 8];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for p in &state.pods {
        if let Some(e) = &p.error {
            out.push_str(&format!("{}/{}: {e}\n", p.namespace, p.name));
        }
    }
    for r in &state.rejected {
        out.push_str(&format!("rejected (the last valid version stays): {r}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, role: &str, ready: bool, restarts: u32) -> ContainerState {
        ContainerState {
            name: name.into(),
            role: role.into(),
            ready,
            restarts,
            ..ContainerState::default()
        }
    }

    #[test]
    fn status_table() {
        let state = State {
            pods: vec![
                PodState {
                    name: "redis-0".into(),
                    namespace: "default".into(),
                    ip: "198.18.0.3".into(),
                    sidecar: true,
                    ready: true,
                    phase: "Running".into(),
                    metrics_url: Some("http://198.18.0.3:15090/stats/prometheus".into()),
                    containers: vec![
                        container("ferry-init", "init", false, 0),
                        container("ferry-proxy", "sidecar", true, 0),
                        container("redis", "app", true, 2),
                    ],
                    ..PodState::default()
                },
                PodState {
                    name: "plain".into(),
                    namespace: "default".into(),
                    ip: "198.18.0.6".into(),
                    error: Some("image \"nginx\" is not in the image table".into()),
                    phase: "Failed".into(),
                    containers: vec![container("web", "app", false, 0)],
                    ..PodState::default()
                },
            ],
            rejected: vec!["redis.yaml:3: Service/default/redis: spec.ports[0].port: ...".into()],
            ..State::default()
        };
        let want = "\
POD      NAMESPACE  IP          SIDECAR  READY  STATUS   RESTARTS  METRICS
redis-0  default    198.18.0.3  yes      2/2    Running  2         http://198.18.0.3:15090/stats/prometheus
plain    default    198.18.0.6  no       0/1    Failed   0         -
default/plain: image \"nginx\" is not in the image table
rejected (the last valid version stays): redis.yaml:3: Service/default/redis: spec.ports[0].port: ...
";
        assert_eq!(table(&state), want);
    }
}
