//! What a run made, kept in `/run/ferry/state.json` (written before anything is created and
//! on every change), so that `ferry status`, `exec`, `logs` and `down` work from another
//! terminal and a crashed run's leftovers can be found and removed.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Default directory of the state file and the logs.
pub const DEFAULT_DIR: &str = "/run/ferry";

/// One container of a pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerState {
    /// Container name.
    pub name: String,
    /// Process id (and process group), while running.
    pub pid: Option<i32>,
    /// Its log file.
    pub log: PathBuf,
}

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
    /// Ready (proxy ready and the application listening).
    pub ready: bool,
    /// Why it is not running, when it failed.
    pub error: Option<String>,
    /// The proxy's metrics URL.
    pub metrics_url: Option<String>,
    /// Its containers.
    pub containers: Vec<ContainerState>,
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
        crate::dns::remove(&pod.netns);
    }
    if !state.bridge.is_empty() {
        crate::bridge::delete(&state.bridge);
    }
    let _ = std::fs::remove_file(file(dir));
}

/// The `ferry status` table.
pub fn table(state: &State) -> String {
    let mut rows = vec![[
        "POD".to_string(),
        "NAMESPACE".into(),
        "IP".into(),
        "SIDECAR".into(),
        "READY".into(),
        "METRICS".into(),
    ]];
    for p in &state.pods {
        let ready = match &p.error {
            Some(_) => "error".to_string(),
            None => if p.ready { "yes" } else { "no" }.to_string(),
        };
        rows.push([
            p.name.clone(),
            p.namespace.clone(),
            p.ip.clone(),
            if p.sidecar { "yes" } else { "no" }.into(),
            ready,
            p.metrics_url.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut widths = [0usize; 6];
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
    out
}
