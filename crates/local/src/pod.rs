//! What to run for one pod, read from its injected spec: the init containers (the
//! `ferry-init` redirect rules among them), the sidecars (the proxy as a native sidecar:
//! started and ready before the application), and the application containers, with their
//! environment (literal values and the Downward-API fields a pod has here), probes and
//! restart policy.

use crate::images;
use crate::probe::ProbeSpec;
use anyhow::{Context, anyhow, bail};
use ferry_control::source::MeshPod;
use serde_json::Value;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

/// The UID and GID the proxy runs as (the injected `-u 1337`).
pub const PROXY_UID: u32 = 1337;

/// One process of a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerPlan {
    /// Container name.
    pub name: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Environment.
    pub env: Vec<(String, String)>,
    /// Declared container ports.
    pub ports: Vec<u16>,
    /// `readinessProbe`.
    pub readiness: Option<ProbeSpec>,
    /// `livenessProbe`.
    pub liveness: Option<ProbeSpec>,
    /// `startupProbe`.
    pub startup: Option<ProbeSpec>,
}

/// `spec.restartPolicy`: what happens when an application container exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Always restarted (the default).
    Always,
    /// Restarted when it failed.
    OnFailure,
    /// Never restarted.
    Never,
}

impl RestartPolicy {
    /// Whether a container that exited with `success` is started again.
    pub fn restarts(self, success: bool) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !success,
            RestartPolicy::Never => false,
        }
    }
}

/// Workload identity in the mesh: how a pod's proxy reaches the CA (whose TLS port also
/// carries the configuration stream) and where its per-pod token goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshIdentity {
    /// The CA's TLS port (`ip:port`); the proxies follow the configuration stream there too.
    pub ca_addr: String,
    /// The name the control plane's serving certificate carries.
    pub server_name: String,
    /// The mesh root (PEM), readable by the proxy.
    pub root_cert: std::path::PathBuf,
    /// Directory of the per-pod token files.
    pub token_dir: std::path::PathBuf,
    /// Certificate lifetime the proxies ask for; `None` for the CA's default (24 h).
    pub cert_ttl: Option<Duration>,
}

impl MeshIdentity {
    /// The token file of a pod.
    pub fn token_file(&self, namespace: &str, pod: &str) -> std::path::PathBuf {
        self.token_dir.join(format!("{namespace}_{pod}.token"))
    }
}

/// The identity a pod's proxy proves: its token file and service account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodToken {
    /// Where the token is written (owned by the proxy's UID, mode 0400).
    pub path: std::path::PathBuf,
    /// The pod's service account.
    pub service_account: String,
    /// The proxy's container.
    pub container: String,
}

/// Everything the runtime needs to create and start one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodPlan {
    /// Pod name.
    pub name: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Network namespace name.
    pub netns: String,
    /// Host-side veth name.
    pub veth: String,
    /// Pod address.
    pub ip: Ipv4Addr,
    /// `spec.hostname` and `spec.subdomain` (StatefulSet pods).
    pub hostname: Option<(String, String)>,
    /// Init containers, run to completion in order.
    pub init: Vec<ContainerPlan>,
    /// Sidecars (init containers with `restartPolicy: Always`, the proxy among them),
    /// started in order, each started (and its startup or readiness probe passed) before
    /// the next container.
    pub sidecars: Vec<ContainerPlan>,
    /// Whether one of the sidecars is Ferry's proxy.
    pub has_proxy: bool,
    /// Application containers.
    pub apps: Vec<ContainerPlan>,
    /// `spec.restartPolicy`.
    pub restart_policy: RestartPolicy,
    /// `spec.terminationGracePeriodSeconds` (30 s by default).
    pub grace: Duration,
    /// Identifies the pod as created (its spec and address): a pod whose fingerprint
    /// changed is replaced.
    pub fingerprint: u64,
    /// The token its proxy proves its identity with, when the mesh has a CA.
    pub token: Option<PodToken>,
}

/// The network namespace of a pod.
pub fn netns_name(namespace: &str, pod: &str) -> String {
    format!("ferry-{namespace}-{pod}")
}

/// A host-side veth name (≤ 15 characters, peer adds one): `fv` + 8 hex digits of a hash.
pub fn veth_name(namespace: &str, pod: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in namespace.bytes().chain([b'/']).chain(pod.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("fv{h:08x}")
}

/// Whether a container is Ferry's own (the injected init or proxy container).
fn is_ferry(c: &Value) -> bool {
    let name = c["name"].as_str().unwrap_or_default();
    name == "ferry-init"
        || name == "ferry-proxy"
        || images::short_name(c["image"].as_str().unwrap_or_default()) == "ferry"
}

/// The injected proxy's arguments without `--config-cache`: its path is in a volume of the
/// pod, which `ferry up` does not mount (on the host it would be one file for every pod),
/// and a proxy of `ferry up` never starts without its control plane, which runs in the same
/// process.
fn without_config_cache(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        if arg == "--config-cache" {
            skip_value = true;
        } else if !arg.starts_with("--config-cache=") {
            out.push(arg.clone());
        }
    }
    out
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn ports(c: &Value) -> Vec<u16> {
    c["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            p["containerPort"]
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
        })
        .collect()
}

fn named_ports(c: &Value) -> Vec<(String, u16)> {
    c["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let port = p["containerPort"]
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())?;
            Some((p["name"].as_str()?.to_string(), port))
        })
        .collect()
}

/// The container's probes; the error names the probe field.
type Probes = (Option<ProbeSpec>, Option<ProbeSpec>, Option<ProbeSpec>);

fn probes(c: &Value) -> anyhow::Result<Probes> {
    let named = named_ports(c);
    let read = |field: &str| -> anyhow::Result<Option<ProbeSpec>> {
        match &c[field] {
            Value::Null => Ok(None),
            v => ProbeSpec::parse(v, &named)
                .map(Some)
                .map_err(|e| anyhow!("{field}: {e}")),
        }
    };
    Ok((
        read("readinessProbe")?,
        read("livenessProbe")?,
        read("startupProbe")?,
    ))
}

fn restart_policy(spec: &Value) -> anyhow::Result<RestartPolicy> {
    Ok(match spec["restartPolicy"].as_str() {
        None | Some("Always") => RestartPolicy::Always,
        Some("OnFailure") => RestartPolicy::OnFailure,
        Some("Never") => RestartPolicy::Never,
        Some(other) => bail!("spec.restartPolicy: {other:?} is not Always, OnFailure or Never"),
    })
}

/// A stable hash of the pod as created and its address.
fn fingerprint(pod: &Value, ip: Ipv4Addr) -> u64 {
    let mut h = DefaultHasher::new();
    pod.to_string().hash(&mut h);
    ip.hash(&mut h);
    h.finish()
}

/// The value of a Downward-API `fieldPath` for this pod, when it has one here.
fn field(pod: &Value, path: &str, ip: Ipv4Addr, gateway: Ipv4Addr) -> Option<String> {
    let meta = &pod["metadata"];
    Some(match path {
        "metadata.name" => meta["name"].as_str()?.to_string(),
        "metadata.namespace" => meta["namespace"].as_str().unwrap_or("default").to_string(),
        "status.podIP" | "status.podIPs" => ip.to_string(),
        "status.hostIP" | "status.hostIPs" => gateway.to_string(),
        "spec.nodeName" => "localhost".to_string(),
        "spec.serviceAccountName" => pod["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default")
            .to_string(),
        _ => {
            let rest = path.strip_prefix("metadata.")?;
            let (map, key) = rest.split_once("['")?;
            let key = key.strip_suffix("']")?;
            meta[map][key].as_str()?.to_string()
        }
    })
}

fn env(pod: &Value, c: &Value, ip: Ipv4Addr, gateway: Ipv4Addr) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let Some(name) = e["name"].as_str() else {
            continue;
        };
        let value = match (
            e["value"].as_str(),
            e["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        ) {
            (Some(v), _) => Some(v.to_string()),
            (None, Some(path)) => field(pod, path, ip, gateway),
            (None, None) => None,
        };
        if let Some(v) = value {
            out.push((name.to_string(), v));
        }
    }
    out
}

/// The program of a non-Ferry container: `command` + `args`, or the image table.
fn app_argv(c: &Value) -> anyhow::Result<Vec<String>> {
    let image = c["image"].as_str().unwrap_or_default();
    let command = strings(&c["command"]);
    let args = strings(&c["args"]);
    if !command.is_empty() {
        return Ok(command.into_iter().chain(args).collect());
    }
    if !args.is_empty() {
        let entry = images::entrypoint(image).ok_or_else(|| {
            anyhow!("image {image:?} is not in the image table; give the container a `command`")
        })?;
        return Ok(std::iter::once(entry.to_string()).chain(args).collect());
    }
    images::program(image, &ports(c)).ok_or_else(|| {
        anyhow!("image {image:?} is not in the image table; give the container a `command`")
    })
}

impl PodPlan {
    /// The plan for a pod of the store; `ferry` is the binary Ferry's containers run,
    /// `control_plane` the (plaintext) address the proxy connects to, or, with `identity`,
    /// the CA's TLS port, where the proxy gets its certificate and follows the
    /// configuration stream.
    pub fn new(
        mesh_pod: &MeshPod,
        ferry: &Path,
        control_plane: &str,
        identity: Option<&MeshIdentity>,
        gateway: Ipv4Addr,
    ) -> anyhow::Result<PodPlan> {
        let entry = &mesh_pod.entry;
        let ip = match entry.ip {
            Some(IpAddr::V4(ip)) => ip,
            _ => bail!("pod {}/{} has no IPv4 address", entry.namespace, entry.name),
        };
        if let Some(err) = &mesh_pod.inject_error {
            bail!(
                "pod {}/{}: injection failed: {err}",
                entry.namespace,
                entry.name
            );
        }
        let pod = &mesh_pod.pod;
        let spec = &pod["spec"];
        let ferry = ferry.display().to_string();
        let what = || format!("pod {}/{}", entry.namespace, entry.name);
        let grace = match &spec["terminationGracePeriodSeconds"] {
            Value::Null => Duration::from_secs(30),
            v => Duration::from_secs(v.as_u64().ok_or_else(|| {
                anyhow!(
                    "{}: spec.terminationGracePeriodSeconds: {v} is not a whole number",
                    what()
                )
            })?),
        };
        let mut plan = PodPlan {
            name: entry.name.clone(),
            namespace: entry.namespace.clone(),
            netns: netns_name(&entry.namespace, &entry.name),
            veth: veth_name(&entry.namespace, &entry.name),
            ip,
            hostname: entry.hostname.clone().zip(entry.subdomain.clone()),
            init: Vec::new(),
            sidecars: Vec::new(),
            has_proxy: false,
            apps: Vec::new(),
            restart_policy: restart_policy(spec).with_context(what)?,
            grace,
            fingerprint: fingerprint(pod, ip),
            token: None,
        };
        let containers = spec["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| (true, c))
            .chain(
                spec["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| (false, c)),
            );
        for (is_init, c) in containers {
            let name = c["name"].as_str().unwrap_or("container").to_string();
            let args = strings(&c["args"]);
            let env = env(pod, c, ip, gateway);
            let (readiness, liveness, startup) =
                probes(c).with_context(|| format!("{}, container {name}", what()))?;
            if is_ferry(c) {
                let mut argv = vec![ferry.clone()];
                if args.first().map(String::as_str) == Some("proxy") {
                    argv.extend(without_config_cache(&args));
                    let uid = PROXY_UID.to_string();
                    let mut full: Vec<String> = [
                        "setpriv",
                        "--reuid",
                        &uid,
                        "--regid",
                        &uid,
                        "--clear-groups",
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                    full.extend(argv);
                    let mut flags = vec![
                        ("--control-plane", control_plane.to_string()),
                        ("--pod", entry.name.clone()),
                        ("--namespace", entry.namespace.clone()),
                        ("--pod-ip", ip.to_string()),
                    ];
                    if let Some(id) = identity {
                        let sa = if entry.service_account.is_empty() {
                            "default".to_string()
                        } else {
                            entry.service_account.clone()
                        };
                        let token = id.token_file(&entry.namespace, &entry.name);
                        flags[0].1 = id.ca_addr.clone();
                        flags.extend([
                            ("--ca-addr", id.ca_addr.clone()),
                            ("--ca-server-name", id.server_name.clone()),
                            ("--ca-root-cert", id.root_cert.display().to_string()),
                            ("--ca-token-file", token.display().to_string()),
                            ("--service-account", sa.clone()),
                        ]);
                        if let Some(ttl) = id.cert_ttl {
                            flags.push(("--cert-ttl-secs", ttl.as_secs().to_string()));
                        }
                        plan.token = Some(PodToken {
                            path: token,
                            service_account: sa,
                            container: name.clone(),
                        });
                    }
                    for (flag, value) in flags {
                        full.push(flag.into());
                        full.push(value);
                    }
                    let proxy = ContainerPlan {
                        name,
                        argv: full,
                        env,
                        ports: vec![15021],
                        readiness,
                        liveness,
                        startup,
                    };
                    plan.has_proxy = true;
                    if is_init {
                        plan.sidecars.push(proxy);
                    } else {
                        // A classic sidecar: still started first, as the application
                        // waits for it (`holdApplicationUntilProxyStarts`).
                        plan.sidecars.insert(0, proxy);
                    }
                    continue;
                }
                argv.extend(args.iter().cloned());
                plan.init.push(ContainerPlan {
                    name,
                    argv,
                    env,
                    ports: Vec::new(),
                    readiness: None,
                    liveness: None,
                    startup: None,
                });
                continue;
            }
            let argv = app_argv(c).with_context(|| {
                format!("pod {}/{}, container {name}", entry.namespace, entry.name)
            })?;
            let sidecar = c["restartPolicy"].as_str() == Some("Always");
            let container = ContainerPlan {
                name,
                argv,
                env,
                ports: ports(c),
                readiness,
                liveness,
                startup,
            };
            match (is_init, sidecar) {
                (true, false) => plan.init.push(container),
                (true, true) => plan.sidecars.push(container),
                (false, _) => plan.apps.push(container),
            }
        }
        Ok(plan)
    }

    /// The pod's Prometheus URL (the proxy's merged metrics), when it has a proxy.
    pub fn metrics_url(&self) -> Option<String> {
        self.has_proxy
            .then(|| format!("http://{}:15090/stats/prometheus", self.ip))
    }

    /// Every container: init containers, sidecars, then the application's.
    pub fn containers(&self) -> impl Iterator<Item = &ContainerPlan> {
        self.init.iter().chain(&self.sidecars).chain(&self.apps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_injected_config_cache_is_not_passed_on() {
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let cases = [
            (
                s(&[
                    "proxy",
                    "sidecar",
                    "--log-level",
                    "warning",
                    "--config-cache",
                    "/var/lib/ferry/data/config-cache",
                ]),
                s(&["proxy", "sidecar", "--log-level", "warning"]),
            ),
            (
                s(&["proxy", "--config-cache=/x", "--log-level", "info"]),
                s(&["proxy", "--log-level", "info"]),
            ),
            (s(&["proxy", "sidecar"]), s(&["proxy", "sidecar"])),
            (s(&["proxy", "--config-cache"]), s(&["proxy"])),
        ];
        for (args, want) in cases {
            assert_eq!(without_config_cache(&args), want, "{args:?}");
        }
    }

    #[test]
    fn veth_names_fit() {
        let v = veth_name("a-very-long-namespace", "a-very-long-pod-name-0");
        assert!(v.len() < 15, "the peer name adds one character");
        assert_ne!(v, veth_name("default", "redis-1"));
    }

    #[test]
    fn downward_fields() {
        let pod =
            serde_json::json!({"metadata": {"name": "p", "labels": {"app": "x"}}, "spec": {}});
        let ip = Ipv4Addr::new(198, 18, 0, 2);
        let gw = Ipv4Addr::new(198, 18, 0, 1);
        assert_eq!(field(&pod, "metadata.name", ip, gw).as_deref(), Some("p"));
        assert_eq!(
            field(&pod, "metadata.namespace", ip, gw).as_deref(),
            Some("default")
        );
        assert_eq!(
            field(&pod, "status.podIP", ip, gw).as_deref(),
            Some("198.18.0.2")
        );
        assert_eq!(
            field(&pod, "metadata.labels['app']", ip, gw).as_deref(),
            Some("x")
        );
    }
}
