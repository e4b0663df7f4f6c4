//! One pod's life, as the kubelet runs it: its network namespace plugged into the bridge,
//! its name files, the service rules of a sidecar-less pod, the init containers to
//! completion in order (the `ferry-init` redirect rules among them), the sidecars in order
//! (the proxy first, each started and past its startup probe before the next container),
//! then the application. While it runs: exited containers are restarted with backoff as
//! the restart policy says, probes run on their schedule (readiness makes the pod ready,
//! liveness failures restart the container), and every change is reported. Asked to stop,
//! it sends SIGTERM to the application, then the sidecars, SIGKILL after the grace period,
//! and removes the namespace, its link and files.

use crate::dns::files as dns_files;
use crate::pod::{ContainerPlan, PROXY_UID, PodPlan, PodToken};
use crate::probe::{Action, ProbeSpec, ProbeState, Prober};
use crate::process::{self, Proc};
use crate::{netns, service_rules};
use ferry_control::ca::LocalTokens;
use ferry_control::registry::Registry;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// The first restart delay; it doubles per restart up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest restart delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A container that ran this long starts over from [`FIRST_BACKOFF`].
pub const BACKOFF_RESET: Duration = Duration::from_secs(60);
/// How often processes are checked.
const TICK: Duration = Duration::from_millis(50);

/// What every pod shares: where it is plugged in, and how it is probed.
#[derive(Clone)]
pub struct Context {
    /// The bridge.
    pub bridge: String,
    /// The bridge address: the pods' gateway and DNS server.
    pub gateway: Ipv4Addr,
    /// Prefix length of the pod network.
    pub prefix: u8,
    /// Where the logs go (`<dir>/logs/<ns>_<pod>_<container>.log`).
    pub state_dir: PathBuf,
    /// The cluster domain.
    pub cluster_domain: String,
    /// Runs network probes.
    pub prober: Arc<dyn Prober>,
    /// The registry in force, for the service rules of sidecar-less pods.
    pub registry: watch::Receiver<Arc<Registry>>,
    /// Issues the per-pod tokens proxies prove their identity with, when the mesh has a CA.
    pub tokens: Option<LocalTokens>,
}

/// How long a pod waits for its proxy's first certificate before starting the application
/// anyway (a proxy that has none yet refuses mutual TLS, it does not fall back).
const FIRST_CERTIFICATE_WAIT: Duration = Duration::from_secs(10);

/// Writes the token proving `token`'s service account, readable by the proxy's UID only.
fn write_token(tokens: &LocalTokens, plan: &PodPlan, token: &PodToken) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = &token.path;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = tokens.issue(&plan.namespace, &token.service_account, &plan.name);
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o400)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::os::unix::fs::chown(&tmp, Some(PROXY_UID), Some(PROXY_UID))
        .with_context(|| format!("chown {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Whether the proxy at `ip` holds a workload certificate (its expiry metric is set).
async fn has_certificate(ip: Ipv4Addr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect((ip, 15090)).await.ok()?;
        s.write_all(b"GET /stats/prometheus HTTP/1.0\r\n\r\n")
            .await
            .ok()?;
        let mut body = Vec::new();
        s.read_to_end(&mut body).await.ok()?;
        Some(String::from_utf8_lossy(&body).into_owned())
    };
    let Ok(Some(text)) = tokio::time::timeout(Duration::from_secs(1), fetch).await else {
        return false;
    };
    text.lines()
        .filter(|l| l.starts_with("ferry_identity_cert_expiry_timestamp_seconds"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|v| v.parse::<f64>().ok())
        .any(|v| v > 0.0)
}

/// One container as `ferry status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    /// Container name.
    pub name: String,
    /// `init`, `sidecar` or `app`.
    pub role: String,
    /// Process id (and process group) while running.
    pub pid: Option<i32>,
    /// How often it was restarted.
    pub restarts: u32,
    /// Ready (running, startup and readiness probes passing).
    pub ready: bool,
    /// `waiting`, `running`, `backoff`, `completed` or `failed`, with details.
    pub state: String,
    /// Its log file.
    pub log: PathBuf,
}

/// A pod as `ferry status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodStatus {
    /// `Pending`, `Init:i/n`, `Running`, `CrashLoopBackOff`, `Completed`, `Error`,
    /// `Terminating` or `Failed`.
    pub phase: String,
    /// Every container ready.
    pub ready: bool,
    /// Why the pod could not be created, if so.
    pub error: Option<String>,
    /// Its containers.
    pub containers: Vec<ContainerStatus>,
}

/// What a pod reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// Its status changed.
    Status(PodStatus),
    /// Something worth a line in `ferry up`'s output (a crash, a restart).
    Note(String),
    /// It is gone: processes, namespace, link and files removed.
    Gone,
}

/// The log file of a container.
pub fn log_path(state_dir: &Path, namespace: &str, pod: &str, container: &str) -> PathBuf {
    state_dir
        .join("logs")
        .join(format!("{namespace}_{pod}_{container}.log"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Init,
    Sidecar,
    App,
}

struct Container {
    plan: ContainerPlan,
    role: Role,
    log: PathBuf,
    proc: Option<Proc>,
    started_at: Option<Instant>,
    restarts: u32,
    backoff: Duration,
    restart_at: Option<Instant>,
    /// Terminated for good (completed, or failed under a policy that does not restart).
    finished: Option<(bool, String)>,
    startup: ProbeState,
    readiness: ProbeState,
    liveness: ProbeState,
    due: [Option<Instant>; 3],
}

impl Container {
    fn new(plan: &ContainerPlan, role: Role, log: PathBuf) -> Self {
        Container {
            plan: plan.clone(),
            role,
            log,
            proc: None,
            started_at: None,
            restarts: 0,
            backoff: FIRST_BACKOFF,
            restart_at: None,
            finished: None,
            startup: ProbeState::new(false),
            readiness: ProbeState::new(false),
            liveness: ProbeState::new(true),
            due: [None; 3],
        }
    }

    fn running(&self) -> bool {
        self.proc.is_some()
    }

    /// Past its startup probe (or it has none).
    fn started(&self) -> bool {
        self.running() && (self.plan.startup.is_none() || self.startup.passing)
    }

    fn ready(&self) -> bool {
        self.started() && (self.plan.readiness.is_none() || self.readiness.passing)
    }

    /// Started, and for a sidecar that the next container may start after it.
    fn gate_open(&self) -> bool {
        match (&self.plan.startup, &self.plan.readiness) {
            (Some(_), _) | (None, None) => self.started(),
            (None, Some(_)) => self.ready(),
        }
    }

    fn spawn(&mut self, netns: &str, hostname: &str) -> anyhow::Result<()> {
        let now = Instant::now();
        self.proc = Some(process::spawn(netns, hostname, &self.plan, &self.log)?);
        self.started_at = Some(now);
        self.restart_at = None;
        self.startup = ProbeState::new(false);
        self.readiness = ProbeState::new(false);
        self.liveness = ProbeState::new(true);
        let first = |p: &Option<ProbeSpec>| p.as_ref().map(|p| now + p.initial_delay);
        self.due = [
            first(&self.plan.startup),
            first(&self.plan.readiness),
            first(&self.plan.liveness),
        ];
        Ok(())
    }

    fn status(&self) -> ContainerStatus {
        let state = match (&self.proc, &self.restart_at, &self.finished) {
            (Some(_), _, _) if self.ready() => "running".to_string(),
            (Some(_), _, _) => "running, not ready".to_string(),
            (None, Some(at), _) => format!(
                "backoff: restarting in {:.0?}",
                at.saturating_duration_since(Instant::now())
            ),
            (None, None, Some((_, what))) => what.clone(),
            (None, None, None) => "waiting".to_string(),
        };
        ContainerStatus {
            name: self.plan.name.clone(),
            role: match self.role {
                Role::Init => "init",
                Role::Sidecar => "sidecar",
                Role::App => "app",
            }
            .into(),
            pid: self.proc.as_ref().map(|p| p.pid),
            restarts: self.restarts,
            ready: self.ready(),
            state: if state.starts_with("backoff") {
                "backoff".into()
            } else {
                state
            },
            log: self.log.clone(),
        }
    }
}

/// The last line of a log (at most 160 characters), for messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let mut out: String = last.trim().chars().take(160).collect();
    if out.len() < last.trim().len() {
        out.push_str("...");
    }
    out
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "exited".into(),
    }
}

async fn exec_probe(netns: &str, argv: &[String], timeout: Duration) -> Result<String, String> {
    let run = tokio::process::Command::new("ip")
        .args(["netns", "exec", netns])
        .args(argv)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(s)) if s.success() => Ok(format!("{argv:?} passed")),
        Ok(Ok(s)) => Err(format!("{argv:?}: {}", describe_exit(s))),
        Ok(Err(e)) => Err(format!("{argv:?}: {e}")),
        Err(_) => Err(format!("{argv:?} did not finish within {timeout:?}")),
    }
}

async fn run_probe(spec: &ProbeSpec, netns: &str, ip: IpAddr, prober: &dyn Prober) -> bool {
    match &spec.action {
        Action::Exec(argv) => exec_probe(netns, argv, spec.timeout).await.is_ok(),
        Action::Network(probe) => {
            matches!(
                tokio::time::timeout(spec.timeout, prober.run(probe.clone(), ip)).await,
                Ok(Ok(_))
            )
        }
    }
}

/// One running pod.
struct Pod {
    plan: PodPlan,
    ctx: Context,
    reports: mpsc::UnboundedSender<(String, String, Report)>,
    containers: Vec<Container>,
    phase: String,
    error: Option<String>,
    last: Option<PodStatus>,
    created: bool,
    rules: Option<String>,
    /// `spec.hostname`, else the pod name.
    hostname: String,
}

impl Pod {
    fn report(&self, report: Report) {
        let _ = self
            .reports
            .send((self.plan.namespace.clone(), self.plan.name.clone(), report));
    }

    fn note(&self, text: String) {
        self.report(Report::Note(format!(
            "{}/{}: {text}",
            self.plan.namespace, self.plan.name
        )));
    }

    fn status(&self) -> PodStatus {
        let ready = self.error.is_none()
            && self
                .containers
                .iter()
                .filter(|c| c.role != Role::Init)
                .all(|c| c.ready());
        let phase = if self.error.is_some() {
            "Failed".to_string()
        } else if self.phase != "Running" {
            self.phase.clone()
        } else if self.containers.iter().any(|c| c.restart_at.is_some()) {
            "CrashLoopBackOff".into()
        } else {
            let apps: Vec<&Container> = self
                .containers
                .iter()
                .filter(|c| c.role == Role::App)
                .collect();
            if !apps.is_empty() && apps.iter().all(|c| c.finished.is_some()) {
                if apps
                    .iter()
                    .all(|c| c.finished.as_ref().is_some_and(|f| f.0))
                {
                    "Completed".into()
                } else {
                    "Error".into()
                }
            } else {
                "Running".into()
            }
        };
        PodStatus {
            phase,
            ready,
            error: self.error.clone(),
            containers: self.containers.iter().map(Container::status).collect(),
        }
    }

    fn publish(&mut self) {
        let status = self.status();
        if self.last.as_ref() != Some(&status) {
            self.last = Some(status.clone());
            self.report(Report::Status(status));
        }
    }

    fn set_phase(&mut self, phase: &str) {
        self.phase = phase.to_string();
        self.publish();
    }

    /// Installs or refreshes the service rules of a sidecar-less pod.
    async fn sync_rules(&mut self) -> anyhow::Result<()> {
        if self.plan.has_proxy {
            return Ok(());
        }
        let registry = self.ctx.registry.borrow().clone();
        let first = self.rules.is_none();
        let text = service_rules::render(&registry, first);
        let body = service_rules::render(&registry, false);
        if self.rules.as_deref() == Some(body.as_str()) {
            return Ok(());
        }
        service_rules::apply(&self.plan.netns, &text).await?;
        self.rules = Some(body);
        Ok(())
    }

    /// Namespace, files, rules; `Err` says what failed.
    async fn create(&mut self) -> anyhow::Result<()> {
        self.set_phase("Creating");
        self.created = true;
        netns::create(&netns::Attachment {
            netns: &self.plan.netns,
            veth: &self.plan.veth,
            bridge: &self.ctx.bridge,
            ip: self.plan.ip,
            prefix: self.ctx.prefix,
            gateway: self.ctx.gateway,
        })
        .await?;
        let ip = IpAddr::V4(self.plan.ip);
        let domain = self.ctx.cluster_domain.clone();
        let hosts = dns_files::hosts(
            ip,
            &self.plan.name,
            &self.plan.namespace,
            self.plan
                .hostname
                .as_ref()
                .map(|(h, s)| (h.as_str(), s.as_str())),
            &domain,
        );
        let resolv =
            dns_files::resolv_conf(IpAddr::V4(self.ctx.gateway), &self.plan.namespace, &domain);
        dns_files::write(&self.plan.netns, &hosts, &resolv)
            .map_err(|e| anyhow::anyhow!("writing the pod's /etc/netns files: {e}"))?;
        if let (Some(tokens), Some(token)) = (&self.ctx.tokens, &self.plan.token) {
            write_token(tokens, &self.plan, token)?;
        }
        self.sync_rules().await
    }

    /// Runs the init containers in order; returns false when stopped or failed for good.
    async fn init(&mut self, stop: &mut watch::Receiver<Option<Duration>>) -> bool {
        let total = self
            .containers
            .iter()
            .filter(|c| c.role == Role::Init)
            .count();
        for i in 0..self.containers.len() {
            if self.containers[i].role != Role::Init {
                continue;
            }
            let done = self.containers[..i]
                .iter()
                .filter(|c| c.role == Role::Init)
                .count();
            self.set_phase(&format!("Init:{done}/{total}"));
            loop {
                let c = &mut self.containers[i];
                let run = process::run_to_end(&self.plan.netns, &self.hostname, &c.plan, &c.log);
                let result = tokio::select! {
                    r = run => r,
                    _ = stop.changed() => return false,
                };
                match result {
                    Ok(()) => {
                        c.finished = Some((true, "completed".into()));
                        break;
                    }
                    Err(e) if self.plan.restart_policy == crate::pod::RestartPolicy::Never => {
                        self.error = Some(format!("{e:#}"));
                        self.publish();
                        return false;
                    }
                    Err(e) => {
                        let delay = c.backoff;
                        c.restarts += 1;
                        c.backoff = (c.backoff * 2).min(MAX_BACKOFF);
                        c.finished = Some((false, format!("failed: {e:#}")));
                        let name = c.plan.name.clone();
                        self.note(format!(
                            "init container {name} failed ({e:#}); retrying in {delay:?}"
                        ));
                        self.publish();
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            _ = stop.changed() => return false,
                        }
                    }
                }
            }
        }
        true
    }

    /// Starts the sidecars in order, each past its startup gate, then the application.
    async fn start(&mut self, stop: &mut watch::Receiver<Option<Duration>>) -> bool {
        self.set_phase("Starting");
        for i in 0..self.containers.len() {
            match self.containers[i].role {
                Role::Init => continue,
                Role::App => {
                    if let Err(e) = self.containers[i].spawn(&self.plan.netns, &self.hostname) {
                        self.error = Some(format!("{e:#}"));
                        self.publish();
                        return false;
                    }
                }
                Role::Sidecar => {
                    if let Err(e) = self.containers[i].spawn(&self.plan.netns, &self.hostname) {
                        self.error = Some(format!("{e:#}"));
                        self.publish();
                        return false;
                    }
                    while !self.containers[i].gate_open() {
                        tokio::select! {
                            () = tokio::time::sleep(TICK) => {}
                            _ = stop.changed() => return false,
                        }
                        self.tick().await;
                    }
                    let name = &self.containers[i].plan.name;
                    if self
                        .plan
                        .token
                        .as_ref()
                        .is_some_and(|t| &t.container == name)
                    {
                        // As Istio's proxy holds the application until its certificate
                        // arrived: mutual TLS works from the application's first connection.
                        let deadline = Instant::now() + FIRST_CERTIFICATE_WAIT;
                        while !has_certificate(self.plan.ip).await {
                            if Instant::now() >= deadline {
                                self.note(
                                    "the proxy has no certificate yet; starting the application anyway"
                                        .into(),
                                );
                                break;
                            }
                            tokio::select! {
                                () = tokio::time::sleep(Duration::from_millis(20)) => {}
                                _ = stop.changed() => return false,
                            }
                        }
                    }
                }
            }
        }
        self.set_phase("Running");
        true
    }

    /// One round: exits, restarts, probes.
    async fn tick(&mut self) {
        let now = Instant::now();
        let policy = self.plan.restart_policy;
        let netns = self.plan.netns.clone();
        let hostname = self.hostname.clone();
        let mut notes = Vec::new();
        for c in self.containers.iter_mut().filter(|c| c.role != Role::Init) {
            if let Some(p) = &mut c.proc
                && let Ok(Some(status)) = p.child.try_wait()
            {
                process::signal_group(p.pid, libc::SIGKILL);
                c.proc = None;
                let what = describe_exit(status);
                let ran = c.started_at.map_or(Duration::ZERO, |t| now - t);
                // Sidecars are always restarted; the application as the policy says.
                if c.role == Role::Sidecar || policy.restarts(status.success()) {
                    if ran >= BACKOFF_RESET {
                        c.backoff = FIRST_BACKOFF;
                    }
                    let delay = c.backoff;
                    c.backoff = (c.backoff * 2).min(MAX_BACKOFF);
                    c.restart_at = Some(now + delay);
                    let last = tail(&c.log);
                    let last = if last.is_empty() {
                        String::new()
                    } else {
                        format!(" (log: {last})")
                    };
                    notes.push(format!(
                        "container {} {what}; restarting in {delay:?}{last}",
                        c.plan.name
                    ));
                } else {
                    let label = if status.success() {
                        "completed".to_string()
                    } else {
                        format!("failed: {what}")
                    };
                    c.finished = Some((status.success(), label));
                    notes.push(format!("container {} {what}", c.plan.name));
                }
            }
            if c.proc.is_none()
                && let Some(at) = c.restart_at
                && at <= now
            {
                c.restarts += 1;
                match c.spawn(&netns, &hostname) {
                    Ok(()) => notes.push(format!(
                        "container {} restarted (restart {})",
                        c.plan.name, c.restarts
                    )),
                    Err(e) => {
                        c.restart_at = Some(now + c.backoff);
                        notes.push(format!("container {} cannot start: {e:#}", c.plan.name));
                    }
                }
            }
        }
        for n in notes {
            self.note(n);
        }
        self.probe(now).await;
        self.publish();
    }

    /// Runs the probes that are due, all at once.
    async fn probe(&mut self, now: Instant) {
        let ip = IpAddr::V4(self.plan.ip);
        let netns = self.plan.netns.clone();
        let prober = self.ctx.prober.clone();
        let mut due = Vec::new();
        for (ci, c) in self.containers.iter().enumerate() {
            if c.proc.is_none() {
                continue;
            }
            let specs = [&c.plan.startup, &c.plan.readiness, &c.plan.liveness];
            for (k, spec) in specs.into_iter().enumerate() {
                let Some(spec) = spec else { continue };
                // Readiness and liveness wait for the startup probe.
                if k > 0 && !c.started() {
                    continue;
                }
                if k == 0 && c.startup.ever_passed {
                    continue;
                }
                if c.due[k].is_some_and(|t| t <= now) {
                    due.push((ci, k, spec.clone()));
                }
            }
        }
        if due.is_empty() {
            return;
        }
        let results = futures_util::future::join_all(due.iter().map(|(_, _, spec)| {
            let (netns, prober) = (netns.clone(), prober.clone());
            async move { run_probe(spec, &netns, ip, prober.as_ref()).await }
        }))
        .await;
        let after = Instant::now();
        let mut kill = Vec::new();
        for ((ci, k, spec), ok) in due.into_iter().zip(results) {
            let c = &mut self.containers[ci];
            let state = match k {
                0 => &mut c.startup,
                1 => &mut c.readiness,
                _ => &mut c.liveness,
            };
            state.record(ok, &spec);
            c.due[k] = Some(after + state.interval(&spec, k < 2));
            let failed_liveness = k == 2 && !state.passing;
            let failed_startup = k == 0 && !ok && state.failures() >= spec.failure_threshold;
            if failed_liveness || failed_startup {
                kill.push(ci);
            }
        }
        for ci in kill {
            let c = &mut self.containers[ci];
            if let Some(p) = &c.proc {
                process::signal_group(p.pid, libc::SIGKILL);
                let name = c.plan.name.clone();
                self.note(format!(
                    "container {name} failed its liveness probe; killed"
                ));
            }
        }
    }

    /// SIGTERM to the application, then the sidecars, SIGKILL after `grace`.
    async fn terminate(&mut self, grace: Duration) {
        self.set_phase("Terminating");
        let deadline = Instant::now() + grace;
        for role in [Role::App, Role::Sidecar] {
            let mut any = false;
            for c in self.containers.iter().filter(|c| c.role == role) {
                if let Some(p) = &c.proc {
                    process::signal_group(p.pid, libc::SIGTERM);
                    any = true;
                }
            }
            // The sidecars get at least a moment of their own after the application.
            let until = if role == Role::Sidecar {
                deadline.max(Instant::now() + Duration::from_millis(500))
            } else {
                deadline
            };
            while any && Instant::now() < until {
                any = false;
                for c in self.containers.iter_mut().filter(|c| c.role == role) {
                    if let Some(p) = &mut c.proc {
                        if matches!(p.child.try_wait(), Ok(Some(_))) {
                            c.proc = None;
                        } else {
                            any = true;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        for c in &mut self.containers {
            if let Some(mut p) = c.proc.take() {
                process::signal_group(p.pid, libc::SIGKILL);
                let _ = p.child.start_kill();
                let _ = p.child.wait().await;
            }
        }
        self.remove();
    }

    /// Removes what `create` made.
    fn remove(&mut self) {
        if self.created {
            process::kill_netns(&self.plan.netns);
            netns::delete(&self.plan.netns, &self.plan.veth);
            dns_files::remove(&self.plan.netns);
            if let Some(token) = &self.plan.token {
                let _ = std::fs::remove_file(&token.path);
            }
            self.created = false;
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        for c in &mut self.containers {
            if let Some(p) = &mut c.proc {
                process::signal_group(p.pid, libc::SIGKILL);
                let _ = p.child.start_kill();
            }
        }
        self.remove();
    }
}

/// Runs a pod until `stop` carries a grace period, then terminates it; reports through
/// `reports` (tagged with namespace and name), `Gone` last.
pub async fn run(
    plan: PodPlan,
    ctx: Context,
    reports: mpsc::UnboundedSender<(String, String, Report)>,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    let state_dir = ctx.state_dir.clone();
    let log = |c: &ContainerPlan| log_path(&state_dir, &plan.namespace, &plan.name, &c.name);
    let containers = plan
        .init
        .iter()
        .map(|c| Container::new(c, Role::Init, log(c)))
        .chain(
            plan.sidecars
                .iter()
                .map(|c| Container::new(c, Role::Sidecar, log(c))),
        )
        .chain(
            plan.apps
                .iter()
                .map(|c| Container::new(c, Role::App, log(c))),
        )
        .collect();
    // A new pod starts new logs.
    for c in plan.containers() {
        let _ = std::fs::write(log(c), "");
    }
    let mut rules_changes = ctx.registry.clone();
    let hostname = plan
        .hostname
        .as_ref()
        .map_or_else(|| plan.name.clone(), |(h, _)| h.clone());
    let mut pod = Pod {
        hostname,
        plan,
        ctx,
        reports,
        containers,
        phase: "Pending".into(),
        error: None,
        last: None,
        created: false,
        rules: None,
    };
    let mut running = false;
    if stop.borrow().is_none() {
        match pod.create().await {
            Ok(()) => running = pod.init(&mut stop).await && pod.start(&mut stop).await,
            Err(e) => {
                pod.error = Some(format!("{e:#}"));
                pod.publish();
            }
        }
    }
    if running {
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                r = rules_changes.changed() => {
                    if r.is_err() {
                        break;
                    }
                    if let Err(e) = pod.sync_rules().await {
                        pod.note(format!("service rules: {e:#}"));
                    }
                }
                () = tokio::time::sleep(TICK) => pod.tick().await,
            }
        }
    } else {
        // Failed or stopped while starting: wait to be told to go.
        while stop.borrow().is_none() {
            if stop.changed().await.is_err() {
                break;
            }
        }
    }
    let grace = stop.borrow().unwrap_or(Duration::ZERO).min(pod.plan.grace);
    pod.terminate(grace).await;
    pod.report(Report::Gone);
}
