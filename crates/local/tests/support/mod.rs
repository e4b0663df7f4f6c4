//! The harness of the root end-to-end tests: a `ferry up` over a manifest directory
//! (interrupted, then `ferry down` as a backstop, on drop), waiting for pods, reading the
//! mesh's status, proxies and metrics, and checking that nothing is left behind.

#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The `default` namespace with injection on.
pub const DEFAULT_NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n  labels:\n    istio-injection: enabled\n";

/// A headless service `redis` and a one-pod StatefulSet `redis` (service account `redis`).
pub const REDIS_ONE_POD: &str = r#"apiVersion: v1
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
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: redis
spec:
  serviceName: redis
  replicas: 1
  selector:
    matchLabels:
      app: redis
  template:
    metadata:
      labels:
        app: redis
    spec:
      serviceAccountName: redis
      containers:
      - name: redis
        image: redis:alpine
        ports:
        - name: redis
          containerPort: 6379
        readinessProbe:
          tcpSocket:
            port: redis
"#;

/// A Deployment `client` (service account `client`) with a shell, to run clients from.
pub const MESH_CLIENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: client\nspec:\n  selector:\n    matchLabels:\n      app: client\n  template:\n    metadata:\n      labels:\n        app: client\n    spec:\n      serviceAccountName: client\n      containers:\n      - name: shell\n        image: busybox\n";

/// The `ferry` binary built beside the test, if any.
pub fn ferry_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?;
    let ferry = dir.join("ferry");
    ferry.exists().then_some(ferry)
}

/// Whether a program is on the PATH.
pub fn installed(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).exists()))
}

/// The `ferry` binary when the test can run here: as root, with what `ferry up` needs and
/// `tools`; otherwise says why it is skipped.
pub fn can_run(tools: &[&str]) -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return None;
    }
    for tool in ["ip", "iptables-restore", "setpriv"].iter().chain(tools) {
        if !installed(tool) {
            // CI installs everything (scripts/install-test-deps.sh): a skip there would hide
            // a test that never ran.
            assert!(
                std::env::var_os("CI").is_none(),
                "{tool} is not installed (scripts/install-test-deps.sh)"
            );
            eprintln!("skipped: {tool} is not installed (scripts/install-test-deps.sh)");
            return None;
        }
    }
    let ferry = ferry_binary();
    if ferry.is_none() {
        eprintln!("skipped: no ferry binary beside the test (build it: cargo build -p ferry-cli)");
    }
    ferry
}

/// Polls `probe` every 100 ms until it gives a value; fails the test after `secs`.
pub fn wait_for<T>(what: &str, secs: u64, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A plain HTTP/1.0 GET of `path` on `addr` (`host:port`); the body.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_string())
}

/// Writes a manifest into `dir` (aside, then renamed, as editors do, so the watcher never
/// sees half a file).
pub fn write_manifest(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write manifest");
    std::fs::rename(&tmp, dir.join(name)).expect("rename manifest");
}

/// A namespace-wide PeerAuthentication for `default` in mode `mode`.
pub fn peer_authentication(mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: default\nspec:\n  mtls:\n    mode: {mode}\n"
    )
}

/// Writes the PeerAuthentication (`peer.yaml`) and waits until the proxies of `changed`
/// (pod names or prefixes) hold a new configuration and all `proxies` proxies are in sync.
pub fn set_mode(up: &Up, mode: &str, changed: &[&str], proxies: usize) {
    let before = wait_for("proxies in sync", 15, || {
        up.proxies()
            .filter(|a| a.len() >= proxies && a.iter().all(|p| p.synced))
    });
    up.write("peer.yaml", &peer_authentication(mode));
    wait_for(&format!("{mode} acknowledged by {changed:?}"), 15, || {
        let now = up.proxies()?;
        let moved = changed.iter().all(|c| {
            now.iter()
                .filter(|p| p.pod == *c || p.pod.starts_with(&format!("{c}-")))
                .any(|p| before.iter().all(|b| b.pod != p.pod || b.acked != p.acked))
        });
        (moved && now.iter().all(|p| p.synced)).then_some(())
    });
}

/// One proxy as the control plane's `/debug/proxy-status` lists it.
#[derive(Debug, Clone)]
pub struct ProxyStatus {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Last acknowledged version (as JSON text).
    pub acked: String,
    /// Whether it holds the latest configuration.
    pub synced: bool,
}

/// The `ferry up` flags of a test's own bridge, pod network and service network (so that
/// it does not touch another mesh on the machine).
pub fn own_network<'a>(bridge: &'a str, pod_cidr: &'a str, service_cidr: &'a str) -> Vec<&'a str> {
    vec![
        "--bridge",
        bridge,
        "--pod-cidr",
        pod_cidr,
        "--service-cidr",
        service_cidr,
    ]
}

/// A running `ferry up`.
pub struct Up {
    ferry: PathBuf,
    child: Child,
    manifests: PathBuf,
    state_dir: PathBuf,
    namespace: Option<String>,
    _temp: Vec<tempfile::TempDir>,
}

impl Up {
    /// `ferry up MANIFESTS --state-dir STATE_DIR ARGS...`.
    pub fn start(ferry: &Path, manifests: &Path, state_dir: &Path, args: &[&str]) -> Up {
        let child = Command::new(ferry)
            .arg("up")
            .arg(manifests)
            .arg("--state-dir")
            .arg(state_dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("ferry up starts");
        Up {
            ferry: ferry.to_path_buf(),
            child,
            manifests: manifests.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            namespace: None,
            _temp: Vec::new(),
        }
    }

    /// `ferry up` over a new directory holding `files`, with a state directory of its own.
    pub fn with_files(ferry: &Path, files: &[(&str, &str)], args: &[&str]) -> Up {
        let dir = tempfile::tempdir().expect("tmp");
        let state = tempfile::tempdir().expect("tmp");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write manifest");
        }
        let mut up = Up::start(ferry, dir.path(), state.path(), args);
        up._temp = vec![dir, state];
        up
    }

    /// Pods named without a namespace are in `namespace` (for `exec`).
    pub fn in_namespace(mut self, namespace: &str) -> Up {
        self.namespace = Some(namespace.to_string());
        self
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The manifest directory.
    pub fn manifests(&self) -> &Path {
        &self.manifests
    }

    /// Writes a manifest into the mesh's directory ([`write_manifest`]).
    pub fn write(&self, name: &str, text: &str) {
        write_manifest(&self.manifests, name, text);
    }

    /// Removes a manifest.
    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.manifests.join(name)).expect("remove manifest");
    }

    /// Runs another `ferry` command against this mesh.
    pub fn ferry(&self, args: &[&str]) -> Output {
        Command::new(&self.ferry)
            .args(args)
            .env("FERRY_STATE_DIR", &self.state_dir)
            .stdin(Stdio::null())
            .output()
            .expect("ferry runs")
    }

    /// `ferry status -o json`.
    pub fn status(&self) -> Option<Value> {
        let out = self.ferry(&["status", "-o", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// `ferry exec POD -- ARGS`: (success, trimmed stdout).
    pub fn exec(&self, pod: &str, args: &[&str]) -> (bool, String) {
        let pod = match &self.namespace {
            Some(ns) if !pod.contains('/') => format!("{ns}/{pod}"),
            _ => pod.to_string(),
        };
        let mut full = vec!["exec", pod.as_str(), "--"];
        full.extend_from_slice(args);
        let out = self.ferry(&full);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    }

    /// The control plane's monitoring address.
    pub fn monitoring(&self) -> Option<String> {
        self.status()?["monitoring"].as_str().map(str::to_string)
    }

    /// Every proxy the control plane knows.
    pub fn proxies(&self) -> Option<Vec<ProxyStatus>> {
        let body = http_get(&self.monitoring()?, "/debug/proxy-status")?;
        let json: Value = serde_json::from_str(&body).ok()?;
        let text = |p: &Value, k: &str| p[k].as_str().unwrap_or_default().to_string();
        Some(
            json["proxies"]
                .as_array()?
                .iter()
                .map(|p| ProxyStatus {
                    namespace: text(p, "namespace"),
                    pod: text(p, "pod"),
                    acked: p["lastAcked"].to_string(),
                    synced: p["synced"] == true,
                })
                .collect(),
        )
    }

    /// Whether `ferry up` is still running (panics with its exit status if not).
    pub fn assert_running(&mut self) {
        if let Ok(Some(exit)) = self.child.try_wait() {
            panic!("ferry up exited: {exit}");
        }
    }

    /// Interrupts `ferry up` (SIGINT) and waits up to 20 s for it to end (then kills it).
    pub fn interrupt(&mut self) -> Option<ExitStatus> {
        let pid = i32::try_from(self.child.id()).ok()?;
        // SAFETY: signals our own child.
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.interrupt();
        }
        let _ = self.ferry(&["down"]);
    }
}

/// The pod names in a status.
pub fn names(status: &Value) -> Vec<String> {
    status["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect()
}

/// Waits until the pods are exactly `want` (`client` matches `client-...`) and all ready;
/// the status then.
pub fn pods_ready(up: &mut Up, want: &[&str]) -> Value {
    wait_for(&format!("pods {want:?} ready"), 60, || {
        up.assert_running();
        let status = up.status()?;
        let pods = status["pods"].as_array()?;
        let have = names(&status);
        let matches = have.len() == want.len()
            && want.iter().all(|w| {
                have.iter()
                    .any(|h| h == w || h.starts_with(&format!("{w}-")))
            });
        (matches && pods.iter().all(|p| p["ready"] == true)).then_some(status.clone())
    })
}

/// The pod `name` in a status (or the first whose name is `name-...`).
pub fn pod<'a>(status: &'a Value, name: &str) -> &'a Value {
    let pods = status["pods"].as_array();
    let exact = pods.and_then(|pods| pods.iter().find(|p| p["name"] == name));
    let prefixed = || {
        pods.and_then(|pods| {
            pods.iter().find(|p| {
                p["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(&format!("{name}-")))
            })
        })
    };
    exact
        .or_else(prefixed)
        .unwrap_or_else(|| panic!("no pod {name} in {status}"))
}

/// The sum of the samples of `name` whose labels include every one of `labels`.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The proxy metrics of a pod (its `metrics_url`).
pub fn scrape(status: &Value, name: &str) -> String {
    let url = pod(status, name)["metrics_url"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no proxy metrics"))
        .trim_start_matches("http://")
        .to_string();
    let (addr, path) = url.split_once('/').unwrap_or((&url, ""));
    http_get(addr, &format!("/{path}")).unwrap_or_default()
}

/// Checks that the pods of `seen` (statuses taken while the mesh ran) left nothing behind:
/// network namespaces, their /etc/netns files, veths, the bridge, the state and identity
/// files, host iptables rules, processes.
pub fn assert_nothing_left(seen: &[Value], bridge: &str, state_dir: &Path) {
    let netns = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list")
            .stdout,
    )
    .into_owned();
    let mut pids = Vec::new();
    for status in seen {
        for p in status["pods"].as_array().into_iter().flatten() {
            let name = p["netns"].as_str().unwrap_or_default();
            assert!(
                !netns
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some(name)),
                "namespace {name} left behind"
            );
            assert!(
                !Path::new("/etc/netns").join(name).exists(),
                "/etc/netns/{name} left"
            );
            let veth = p["veth"].as_str().unwrap_or_default();
            assert!(
                !Path::new("/sys/class/net").join(veth).exists(),
                "link {veth} left"
            );
            for c in p["containers"].as_array().into_iter().flatten() {
                pids.extend(c["pid"].as_i64());
            }
        }
    }
    assert!(
        !Path::new("/sys/class/net").join(bridge).exists(),
        "bridge {bridge} left"
    );
    assert!(!state_dir.join("state.json").exists(), "state file left");
    assert!(!state_dir.join("identity").exists(), "per-pod tokens left");
    let rules = Command::new("iptables-save")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(
        !rules.contains("FERRY"),
        "host iptables rules left:\n{rules}"
    );
    wait_for("processes to be gone", 5, || {
        pids.iter()
            .all(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z "))
                    .unwrap_or(true)
            })
            .then_some(())
    });
}

/// A packet capture on one interface; stopped (and reaped) when dropped.
pub struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    /// Captures TCP port 6379 on `interface` into `file`, once tcpdump is listening.
    pub fn start(interface: &str, file: &Path) -> Capture {
        let mut child = Command::new("tcpdump")
            .args([
                "-i",
                interface,
                "--immediate-mode",
                "-U",
                "-n",
                "-s",
                "0",
                "-w",
            ])
            .arg(file)
            .args(["tcp", "port", "6379"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump starts");
        let stderr = child.stderr.take().expect("tcpdump's stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        let mut capture = Capture {
            child,
            file: file.to_path_buf(),
        };
        if rx.recv_timeout(Duration::from_secs(10)).is_err() {
            capture.stop();
            panic!("tcpdump did not start listening on {interface}");
        }
        capture
    }

    /// Stops the capture; the bytes captured (pcap file).
    pub fn stop(&mut self) -> Vec<u8> {
        if let Ok(None) = self.child.try_wait()
            && let Ok(pid) = i32::try_from(self.child.id())
        {
            // SAFETY: signals our own child; SIGINT makes tcpdump flush and exit.
            unsafe {
                libc::kill(pid, libc::SIGINT);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read(&self.file).unwrap_or_default()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
