//! `ferry up`'s output: while the mesh comes up, a spinner per pod on a terminal (plain
//! lines, one per change, otherwise); then a summary with where to look; then one line per
//! event (pods created and deleted, crashes, restarts, rejected manifest edits).

use crate::state::{PodState, State};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

/// A pod's progress in words: what it is doing now.
pub fn describe(pod: &PodState) -> String {
    if let Some(e) = &pod.error {
        return format!("failed: {e}");
    }
    let serving: Vec<_> = pod.containers.iter().filter(|c| c.role != "init").collect();
    let ready = serving.iter().filter(|c| c.ready).count();
    let what = match pod.phase.as_str() {
        "" | "Pending" => "waiting for its turn".to_string(),
        "Creating" => "creating its network namespace".to_string(),
        p if p.starts_with("Init:") => {
            let running = pod
                .containers
                .iter()
                .find(|c| c.role == "init" && c.state != "completed")
                .map_or(String::new(), |c| format!(" ({})", c.name));
            format!("running init containers {}{running}", &p[5..])
        }
        "Starting" => {
            let waiting = serving
                .iter()
                .find(|c| !c.ready)
                .map_or(String::new(), |c| format!(": {} {}", c.name, c.state));
            format!("starting{waiting}")
        }
        "Running" if pod.ready => format!("ready ({ready}/{})", serving.len()),
        "Running" => format!("running, {ready}/{} containers ready", serving.len()),
        other => other.to_string(),
    };
    format!("{:<15} {what}", pod.ip)
}

/// Where `ferry up` prints.
pub struct Progress {
    multi: Option<MultiProgress>,
    bars: BTreeMap<(String, String), ProgressBar>,
    last: BTreeMap<(String, String), String>,
    live: bool,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// Spinners when stdout is a terminal, plain lines otherwise.
    pub fn new() -> Self {
        let multi = std::io::stdout()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout()));
        Progress {
            multi,
            bars: BTreeMap::new(),
            last: BTreeMap::new(),
            live: true,
        }
    }

    /// Prints a line (above the spinners while they show).
    pub fn line(&self, text: &str) {
        match &self.multi {
            Some(m) if self.live && !self.bars.is_empty() => {
                let _ = m.println(text);
            }
            _ => println!("{text}"),
        }
    }

    /// Shows a pod's progress (while the mesh comes up).
    pub fn pod(&mut self, pod: &PodState) {
        let key = (pod.namespace.clone(), pod.name.clone());
        let text = describe(pod);
        if self.last.get(&key) == Some(&text) {
            return;
        }
        self.last.insert(key.clone(), text.clone());
        let label = format!("{}/{}", pod.namespace, pod.name);
        match (&self.multi, self.live) {
            (Some(m), true) => {
                let bar = self.bars.entry(key).or_insert_with(|| {
                    let bar = m.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {prefix:<28} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.set_prefix(label.clone());
                    bar.enable_steady_tick(Duration::from_millis(100));
                    bar
                });
                if pod.ready || pod.error.is_some() {
                    bar.set_style(
                        ProgressStyle::with_template("  {prefix:<28} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.disable_steady_tick();
                    bar.tick();
                }
                bar.set_message(text);
            }
            _ if self.live => println!("{label:<28} {text}"),
            _ => {}
        }
    }

    /// Removes a pod's line (it was deleted while the mesh came up).
    pub fn forget(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        self.last.remove(&key);
        if let Some(bar) = self.bars.remove(&key) {
            bar.finish_and_clear();
        }
    }

    /// Ends the start-up display: spinners stop, then the summary.
    pub fn summary(&mut self, state: &State, elapsed: Duration) {
        for bar in std::mem::take(&mut self.bars).into_values() {
            bar.finish_and_clear();
        }
        self.live = false;
        println!("{}", summary(state, elapsed));
    }

    /// Ends the start-up display without a summary (the mesh is going down).
    pub fn stop(&mut self) {
        for bar in std::mem::take(&mut self.bars).into_values() {
            bar.abandon();
        }
        self.live = false;
    }

    /// Whether the start-up display is over.
    pub fn is_live(&self) -> bool {
        self.live
    }
}

/// The text shown once every pod is ready.
pub fn summary(state: &State, elapsed: Duration) -> String {
    // A Deployment's pod is named after it (`ferry exec client` finds `client-...`).
    let short = |p: &PodState| {
        p.workload
            .strip_prefix("Deployment/")
            .filter(|w| p.name.starts_with(&format!("{w}-")))
            .unwrap_or(&p.name)
            .to_string()
    };
    let example = state
        .pods
        .iter()
        .find(|p| p.workload.starts_with("Deployment/"))
        .or(state.pods.iter().find(|p| p.sidecar))
        .or(state.pods.first())
        .map_or("POD".to_string(), short);
    let metrics = state
        .pods
        .iter()
        .find_map(|p| p.metrics_url.clone())
        .unwrap_or_else(|| "http://POD_IP:15090/stats/prometheus".into());
    let mut out = format!(
        "mesh ready: {} pods in {:.2}s\n\n{}\n",
        state.pods.len(),
        elapsed.as_secs_f64(),
        crate::state::table(state)
    );
    let mut hints = vec![
        (
            "ferry status".to_string(),
            "pods, readiness, restarts, metrics URLs",
        ),
        (
            format!("ferry exec {example} -- CMD..."),
            "a command inside the pod (its network, its DNS)",
        ),
        (
            format!("ferry logs {example} [-c CONTAINER] [-f]"),
            "a container's output",
        ),
        (format!("curl -s {metrics}"), "a proxy's metrics"),
    ];
    if let Some(m) = &state.monitoring {
        hints.push((
            format!("curl -s http://{m}/debug/proxy-status"),
            "the control plane's view of the proxies",
        ));
    }
    let width = hints.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
    out.push_str("where to look (from another terminal):\n");
    for (command, what) in hints {
        out.push_str(&format!("  {command:<width$}  {what}\n"));
    }
    if let Some(dns) = &state.dns {
        out.push_str(&format!(
            "cluster DNS on {dns}; editing {} applies live; Ctrl-C or `ferry down` removes everything",
            state.dir.display()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ContainerState;

    fn c(name: &str, role: &str, ready: bool, state: &str) -> ContainerState {
        ContainerState {
            name: name.into(),
            role: role.into(),
            ready,
            state: state.into(),
            ..ContainerState::default()
        }
    }

    #[test]
    fn words() {
        let pod = |phase: &str, ready: bool, containers: Vec<ContainerState>| PodState {
            ip: "198.18.0.3".into(),
            phase: phase.into(),
            ready,
            containers,
            ..PodState::default()
        };
        let init = c("ferry-init", "init", false, "waiting");
        let proxy = |ready| {
            c(
                "ferry-proxy",
                "sidecar",
                ready,
                if ready {
                    "running"
                } else {
                    "running, not ready"
                },
            )
        };
        let app = |ready| c("redis", "app", ready, "running");
        let rows = [
            (pod("Pending", false, vec![]), "waiting for its turn"),
            (
                pod("Init:0/1", false, vec![init.clone(), proxy(false)]),
                "running init containers 0/1 (ferry-init)",
            ),
            (
                pod("Starting", false, vec![init.clone(), proxy(false)]),
                "starting: ferry-proxy running, not ready",
            ),
            (
                pod("Running", true, vec![init.clone(), proxy(true), app(true)]),
                "ready (2/2)",
            ),
            (
                pod(
                    "Running",
                    false,
                    vec![init.clone(), proxy(true), app(false)],
                ),
                "running, 1/2 containers ready",
            ),
            (pod("CrashLoopBackOff", false, vec![]), "CrashLoopBackOff"),
        ];
        for (p, want) in rows {
            assert_eq!(describe(&p), format!("198.18.0.3      {want}"));
        }
    }
}
