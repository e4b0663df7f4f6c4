//! `ferry control-plane` with real proxies (`ferry proxy forward --control-plane`) over
//! loopback; every process a test starts is killed when the test ends, passed or not.
//!
//! - The seed example's directory is compiled and streamed, `ferry proxy-status` shows the
//!   proxies in sync, an edit (scaling the StatefulSet) reaches them, an invalid edit is
//!   rejected (listed by `ferry proxy-status`, counted by the monitoring port's metrics)
//!   while the proxies keep their configuration, and fixing it clears the rejection; the
//!   monitoring port answers `/healthz`, `/ready` and `/metrics`.
//! - An edit reaches every proxy whose configuration depends on it and no other (a proxy in
//!   another namespace, which the edited resources are not exported to, is not pushed).
//! - Killing the control plane (SIGKILL) and restarting it on the same address loses no
//!   request on a connection open through a proxy, new connections work meanwhile, and the
//!   proxy resyncs and takes an edit made after the restart.
//! - `ferry proxy-config POD` shows what the control plane compiles for the pod, and with
//!   `--from-proxy` what the pod's proxy holds, in JSON and YAML.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// How long a test waits for a condition before it fails.
const WAIT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `GET path` on `addr` (HTTP/1.0): the status code (0 when nothing answers) and the body.
fn http(addr: &str, path: &str) -> (u16, String) {
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        return (0, String::new());
    };
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        code,
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}

/// A proxy the test started: where it accepts connections, and its admin address.
struct Proxy {
    namespace: String,
    pod: String,
    listen: String,
    admin: String,
}

/// A `ferry control-plane` over a manifest directory and the `ferry proxy forward` processes
/// following it. Every process it started is killed (SIGKILL) when it is dropped; when a
/// wait times out, the processes' logs are part of the failure message.
struct Mesh {
    dir: tempfile::TempDir,
    /// Process logs, and an empty `ferry up` state directory for the CLI.
    scratch: tempfile::TempDir,
    grpc: String,
    monitoring: String,
    control_plane: Option<Child>,
    /// How many times the control plane was started (names its log).
    starts: usize,
    proxies: Vec<Child>,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for c in self.control_plane.iter_mut().chain(&mut self.proxies) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Mesh {
    /// Writes `files` into a new manifest directory and starts a control plane over it,
    /// ready (its first read of the directory done).
    fn new(files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write manifest");
        }
        let scratch = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(scratch.path().join("state")).expect("state dir");
        let mut mesh = Self {
            dir,
            scratch,
            grpc: format!("127.0.0.1:{}", free_port()),
            monitoring: format!("127.0.0.1:{}", free_port()),
            control_plane: None,
            starts: 0,
            proxies: Vec::new(),
        };
        mesh.start_control_plane();
        mesh
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::File::create(self.scratch.path().join(format!("{name}.log"))).expect("log file")
    }

    /// Starts the control plane (on the same addresses every time) and waits until it is
    /// ready.
    fn start_control_plane(&mut self) {
        assert!(
            self.control_plane.is_none(),
            "control plane already running"
        );
        self.starts += 1;
        let log = self.log(&format!("control-plane-{}", self.starts));
        let child = Command::new(FERRY)
            .args(["control-plane", "--config-dir"])
            .arg(self.dir.path())
            .args(["--grpc-addr", &self.grpc])
            .args(["--monitoring-addr", &self.monitoring])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("ferry control-plane starts");
        self.control_plane = Some(child);
        self.wait("the control plane ready", || {
            http(&self.monitoring, "/ready").0 == 200
        });
    }

    /// Kills the control plane with SIGKILL (no shutdown of its own) and reaps it.
    fn kill_control_plane(&mut self) {
        let mut child = self.control_plane.take().expect("control plane running");
        child.kill().expect("SIGKILL the control plane");
        child.wait().expect("reap the control plane");
    }

    /// Starts `ferry proxy forward LISTEN UPSTREAM` for `namespace/pod`, following the
    /// control plane, with its admin API on.
    fn proxy(&mut self, namespace: &str, pod: &str, upstream: &str) -> Proxy {
        let proxy = Proxy {
            namespace: namespace.into(),
            pod: pod.into(),
            listen: format!("127.0.0.1:{}", free_port()),
            admin: format!("127.0.0.1:{}", free_port()),
        };
        let log = self.log(&format!("proxy-{namespace}-{pod}"));
        let child = Command::new(FERRY)
            .args(["proxy", "forward", &proxy.listen, upstream])
            .args(["--metrics-addr", "off", "--health-addr", "off"])
            .args(["--status-addr", "off", "--admin-addr", &proxy.admin])
            .args(["--control-plane", &self.grpc])
            .args(["--pod", pod, "--namespace", namespace])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("ferry proxy starts");
        self.proxies.push(child);
        proxy
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Replaces a manifest file's content (as an editor writing through a temp file does).
    fn write(&self, file: &str, text: &str) {
        let tmp = self.scratch.path().join(format!("{file}.tmp"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, self.path(file)).expect("rename into place");
    }

    /// Applies `edit` to a manifest file's text, which must change it.
    fn edit(&self, file: &str, edit: impl FnOnce(&str) -> String) {
        let before = std::fs::read_to_string(self.path(file)).expect("read manifest");
        let after = edit(&before);
        assert_ne!(before, after, "the edit of {file} changes nothing");
        self.write(file, &after);
    }

    /// Runs the `ferry` CLI (isolated from any `ferry up` mesh of the machine).
    fn ferry(&self, args: &[&str]) -> Output {
        Command::new(FERRY)
            .args(args)
            .env("FERRY_STATE_DIR", self.scratch.path().join("state"))
            .output()
            .expect("ferry runs")
    }

    /// `ferry proxy-status` (the table).
    fn status(&self) -> String {
        let out = self.ferry(&["proxy-status", "--control-plane", &self.monitoring]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ferry proxy-status -o json`; `Null` while the control plane does not answer.
    fn status_json(&self) -> Value {
        let out = self.ferry(&[
            "proxy-status",
            "--control-plane",
            &self.monitoring,
            "-o",
            "json",
        ]);
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// The control plane's row for `proxy` in `ferry proxy-status -o json` (`pod`,
    /// `lastSent`, `lastAcked`, `pushes`, `synced`...); `Null` when it has none.
    fn row(&self, proxy: &Proxy) -> Value {
        self.status_json()["proxies"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["pod"] == proxy.pod.as_str() && p["namespace"] == proxy.namespace.as_str())
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// What the proxy holds: its admin `/config_dump` (`version`, `config`...); `Null` when
    /// it does not answer.
    fn held(&self, proxy: &Proxy) -> Value {
        match http(&proxy.admin, "/config_dump") {
            (200, body) => serde_json::from_str(&body).unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    /// Whether the control plane has the proxy in sync, and the proxy holds the version the
    /// control plane says it ACKed.
    fn in_sync(&self, proxy: &Proxy) -> bool {
        let row = self.row(proxy);
        row["synced"] == true
            && row["lastNack"].is_null()
            && row["lastAcked"].is_string()
            && self.held(proxy)["version"] == row["lastAcked"]
    }

    /// The value of a metric on the monitoring port (the first sample named `name`,
    /// labels or not).
    fn metric(&self, name: &str) -> Option<f64> {
        let (code, text) = http(&self.monitoring, "/metrics");
        assert_eq!(code, 200, "/metrics answered {code}");
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let key = key.split('{').next()?;
            (key == name).then(|| value.parse().ok())?
        })
    }

    /// Waits until `cond` holds; fails after [`WAIT`], with the processes' logs.
    fn wait(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond() {
            if Instant::now() >= deadline {
                panic!("timed out waiting for {what}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The tail of every process log.
    fn logs(&self) -> String {
        let mut out = String::new();
        let mut files: Vec<_> = std::fs::read_dir(self.scratch.path())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {}\n", file.display()));
            for line in &lines[lines.len().saturating_sub(30)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// The service `name` of a configuration (`ProxyConfig` as JSON); `Null` when absent.
fn service<'a>(config: &'a Value, name: &str) -> &'a Value {
    config["services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == name)
        .unwrap_or(&Value::Null)
}

/// How many endpoints the service `name` has in a configuration.
fn endpoints(config: &Value, name: &str) -> usize {
    service(config, name)["endpoints"]
        .as_array()
        .map_or(0, Vec::len)
}

/// The seed example's files.
fn example(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/redis-statefulset")
        .join(file);
    std::fs::read_to_string(path).expect("example file")
}

#[test]
fn directory_edits_reach_the_proxies() {
    let (namespace, redis, client) = (
        example("namespace.yaml"),
        example("redis.yaml"),
        example("client.yaml"),
    );
    let mut mesh = Mesh::new(&[
        ("namespace.yaml", &namespace),
        ("redis.yaml", &redis),
        ("client.yaml", &client),
    ]);
    // The monitoring port: health and readiness.
    assert_eq!(http(&mesh.monitoring, "/healthz"), (200, "ok\n".into()));
    assert_eq!(http(&mesh.monitoring, "/ready"), (200, "ready\n".into()));
    let proxies = [
        mesh.proxy("default", "redis-0", "127.0.0.1:9"),
        mesh.proxy("default", "redis-1", "127.0.0.1:9"),
    ];
    mesh.wait("both proxies in sync", || {
        let s = mesh.status();
        s.contains("redis-0.default")
            && s.contains("redis-1.default")
            && s.matches("SYNCED").count() == 2
    });
    let compiled = || {
        let out = mesh.ferry(&[
            "proxy-config",
            "redis-0",
            "--control-plane",
            &mesh.monitoring,
        ]);
        let docs =
            ferry_model::parse_documents("proxy-config", &String::from_utf8_lossy(&out.stdout))
                .expect("YAML");
        docs[0].value["config"].clone()
    };
    assert_eq!(endpoints(&compiled(), "redis"), 3);
    let version = mesh.ferry(&["version", "--control-plane", &mesh.monitoring]);
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.contains(&format!("control plane: {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    // Metrics: two proxies connected, a push to each (at least), its latency observed,
    // nothing rejected.
    let metric = |name: &str| {
        mesh.metric(name)
            .unwrap_or_else(|| panic!("no metric {name} on /metrics"))
    };
    assert_eq!(metric("ferry_control_connected_proxies"), 2.0);
    assert!(metric("ferry_control_pushes_total") >= 2.0);
    assert!(metric("ferry_control_push_latency_seconds_count") >= 2.0);
    assert_eq!(metric("ferry_control_rejected_resources"), 0.0);

    // Scale the StatefulSet: the new endpoints reach the proxies.
    mesh.edit("redis.yaml", |t| t.replace("replicas: 3", "replicas: 5"));
    mesh.wait("five endpoints", || endpoints(&compiled(), "redis") == 5);
    mesh.wait("the proxies holding five endpoints", || {
        proxies
            .iter()
            .all(|p| mesh.in_sync(p) && endpoints(&mesh.held(p)["config"], "redis") == 5)
    });
    let before: Vec<Value> = proxies
        .iter()
        .map(|p| mesh.row(p)["lastAcked"].clone())
        .collect();

    // An invalid VirtualService is rejected; nothing else changes and the proxies stay in sync.
    let bad = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: redis\nspec:\n  hosts: [redis]\n  tcp:\n  - route:\n    - destination:\n        host: redis\n        subet: v1\n";
    mesh.write("bad.yaml", bad);
    mesh.wait("the rejection", || {
        let (code, body) = http(&mesh.monitoring, "/debug/rejections");
        code == 200 && body.contains("subet")
    });
    mesh.wait("the rejection counted", || {
        mesh.metric("ferry_control_rejected_resources") == Some(1.0)
    });
    assert_eq!(endpoints(&compiled(), "redis"), 5);
    let shown = mesh.status();
    assert_eq!(shown.matches("SYNCED").count(), 2, "{shown}");
    assert!(
        shown.contains("REJECTED RESOURCES (1;")
            && shown.contains("bad.yaml")
            && shown.contains("subet"),
        "proxy-status lists the rejected resource:\n{shown}"
    );
    for (p, was) in proxies.iter().zip(&before) {
        assert_eq!(&mesh.row(p)["lastAcked"], was, "{} was pushed", p.pod);
        let held = mesh.held(p)["config"]["outbound"].to_string();
        assert!(!held.contains("default/redis"), "{held}");
    }

    // Fixed, the VirtualService is in force, the rejection is gone and the count is back to 0.
    mesh.write("bad.yaml", &bad.replace("        subet: v1\n", ""));
    mesh.wait("the rejection cleared", || {
        mesh.metric("ferry_control_rejected_resources") == Some(0.0)
    });
    mesh.wait("the proxies holding the VirtualService", || {
        proxies.iter().all(|p| {
            mesh.in_sync(p)
                && mesh.held(p)["config"]["outbound"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|o| o["virtualService"] == "default/redis")
        })
    });
    let shown = mesh.status();
    assert!(!shown.contains("REJECTED RESOURCES"), "{shown}");
    assert_eq!(mesh.status_json()["rejections"], serde_json::json!([]));
    assert!(metric("ferry_control_pushes_total") >= 6.0);
    assert_eq!(metric("ferry_control_connected_proxies"), 2.0);
}

/// A Redis StatefulSet of `replicas` pods behind a headless Service in `default` (injected),
/// the Service exported to `default` only.
fn redis_manifest(replicas: u32) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: default
  labels:
    istio-injection: enabled
---
apiVersion: v1
kind: Service
metadata:
  name: redis
  namespace: default
  annotations:
    networking.istio.io/exportTo: "."
spec:
  clusterIP: None
  selector:
    app: redis
  ports:
  - name: tcp-redis
    port: 6379
    targetPort: 6379
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: redis
  namespace: default
spec:
  serviceName: redis
  replicas: {replicas}
  selector:
    matchLabels:
      app: redis
  template:
    metadata:
      labels:
        app: redis
    spec:
      containers:
      - name: redis
        image: redis:alpine
        ports:
        - name: redis
          containerPort: 6379
"#
    )
}

/// A pod `lone` and its Service in namespace `other`, the Service exported to `other` only.
const OTHER: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: other
---
apiVersion: v1
kind: Pod
metadata:
  name: lone
  namespace: other
  labels:
    app: lone
spec:
  containers:
  - name: app
    image: busybox
---
apiVersion: v1
kind: Service
metadata:
  name: lone
  namespace: other
  annotations:
    networking.istio.io/exportTo: "."
spec:
  selector:
    app: lone
  ports:
  - name: tcp-app
    port: 7000
    targetPort: 7000
"#;

/// A DestinationRule for `redis` in `default`, exported to `default` only.
const REDIS_RULE: &str = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: redis
  namespace: default
spec:
  host: redis
  exportTo: ["."]
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 7
"#;

/// Whether a configuration's clusters for `redis` carry [`REDIS_RULE`].
fn has_redis_rule(config: &Value) -> bool {
    let clusters: Vec<&Value> = config["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["host"] == "redis.default.svc.cluster.local")
        .collect();
    !clusters.is_empty()
        && clusters.iter().all(|c| {
            c["destinationRule"] == "default/redis"
                && c["connectionPool"]["tcp"]["maxConnections"] == 7
        })
}

/// A file edit reaches every proxy whose configuration depends on it and no other. The
/// compiler gives a proxy the services exported to its namespace and the policies that
/// apply there: `lone`, in namespace `other`, sees nothing of `default`'s exported-to-`.`
/// Service and DestinationRule, so neither a registry edit (scaling the StatefulSet: the
/// Service's endpoints) nor a policy edit (a DestinationRule) in `default` may push it, while
/// the Redis pods' proxies get both; and an edit in `other` pushes `lone` only.
#[test]
fn an_edit_reaches_the_affected_proxies_and_no_other() {
    let mut mesh = Mesh::new(&[("default.yaml", &redis_manifest(3)), ("other.yaml", OTHER)]);
    let affected = [
        mesh.proxy("default", "redis-0", "127.0.0.1:9"),
        mesh.proxy("default", "redis-1", "127.0.0.1:9"),
    ];
    let lone = mesh.proxy("other", "lone", "127.0.0.1:9");
    mesh.wait("the three proxies in sync", || {
        affected.iter().chain([&lone]).all(|p| mesh.in_sync(p))
    });
    // The premise: `lone` does not see Redis, the Redis pods do not see `lone`.
    let held = mesh.held(&lone);
    assert!(service(&held["config"], "redis").is_null(), "{held}");
    assert_eq!(
        service(&held["config"], "lone")["ports"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    for p in &affected {
        let held = mesh.held(p);
        assert_eq!(endpoints(&held["config"], "redis"), 3, "{held}");
        assert!(service(&held["config"], "lone").is_null(), "{held}");
        assert!(!has_redis_rule(&held["config"]), "{held}");
    }
    let lone_row = mesh.row(&lone);
    let lone_held = mesh.held(&lone)["version"].clone();
    assert_eq!(lone_row["pushes"], 1, "{lone_row}");

    // A registry edit in `default`: scaling the StatefulSet reaches the Redis proxies.
    let versions: Vec<Value> = affected
        .iter()
        .map(|p| mesh.row(p)["lastAcked"].clone())
        .collect();
    mesh.edit("default.yaml", |_| redis_manifest(5));
    mesh.wait("the Redis proxies holding five endpoints", || {
        affected
            .iter()
            .all(|p| mesh.in_sync(p) && endpoints(&mesh.held(p)["config"], "redis") == 5)
    });
    for (p, was) in affected.iter().zip(&versions) {
        assert_ne!(&mesh.row(p)["lastAcked"], was, "{} kept its version", p.pod);
    }

    // A policy edit in `default`: the DestinationRule reaches the Redis proxies.
    let versions: Vec<Value> = affected
        .iter()
        .map(|p| mesh.row(p)["lastAcked"].clone())
        .collect();
    mesh.write("rule.yaml", REDIS_RULE);
    mesh.wait("the Redis proxies holding the DestinationRule", || {
        affected
            .iter()
            .all(|p| mesh.in_sync(p) && has_redis_rule(&mesh.held(p)["config"]))
    });
    for (p, was) in affected.iter().zip(&versions) {
        assert_ne!(&mesh.row(p)["lastAcked"], was, "{} kept its version", p.pod);
    }
    // Neither reached `lone`: the control plane sent it nothing more, and it holds what it
    // held.
    let row = mesh.row(&lone);
    for key in ["lastSent", "lastAcked", "pushes"] {
        assert_eq!(row[key], lone_row[key], "{key}: {row} (was {lone_row})");
    }
    assert_eq!(mesh.held(&lone)["version"], lone_held);

    // An edit in `other` reaches `lone`, in one push (so it had been pushed nothing for the
    // edits above, which came before it on its stream), and not the Redis proxies.
    let versions: Vec<Value> = affected
        .iter()
        .map(|p| mesh.row(p)["lastAcked"].clone())
        .collect();
    mesh.edit("other.yaml", |t| {
        t.replace(
            "    targetPort: 7000\n",
            "    targetPort: 7000\n  - name: tcp-extra\n    port: 7001\n    targetPort: 7001\n",
        )
    });
    mesh.wait("lone holding the new port", || {
        mesh.in_sync(&lone)
            && service(&mesh.held(&lone)["config"], "lone")["ports"]
                .as_array()
                .map(Vec::len)
                == Some(2)
    });
    let row = mesh.row(&lone);
    assert_eq!(row["pushes"], 2, "{row}");
    assert_ne!(row["lastAcked"], lone_row["lastAcked"]);
    for (p, was) in affected.iter().zip(&versions) {
        let row = mesh.row(p);
        assert_eq!(&row["lastAcked"], was, "{} was pushed: {row}", p.pod);
        assert!(service(&mesh.held(p)["config"], "lone").is_null());
    }
}

/// A TCP server on loopback that answers each line with `TAG line`, on every connection,
/// until the test process ends.
fn echo_server(tag: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = conn.set_nodelay(true);
                let Ok(mut out) = conn.try_clone() else {
                    return;
                };
                for line in BufReader::new(conn).lines() {
                    let Ok(line) = line else { return };
                    if out.write_all(format!("{tag} {line}\n").as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// One request-response on a new connection to `addr`: the answer to `line`.
fn ask(addr: &str, line: &str) -> std::io::Result<String> {
    let addr: SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    let conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_nodelay(true)?;
    (&conn).write_all(format!("{line}\n").as_bytes())?;
    let mut answer = String::new();
    BufReader::new(&conn).read_line(&mut answer)?;
    Ok(answer.trim_end().to_string())
}

/// The `echo` pod (at 127.0.0.1, no sidecar) behind the Service `echo` (10.96.0.77:7000 to
/// `port`), and the `client` pod whose proxy the test runs.
fn echo_manifest(port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: echo
  namespace: default
  labels:
    app: echo
  annotations:
    sidecar.istio.io/inject: "false"
spec:
  containers:
  - name: echo
    image: busybox
status:
  podIP: 127.0.0.1
---
apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: default
spec:
  clusterIP: 10.96.0.77
  selector:
    app: echo
  ports:
  - name: tcp-echo
    port: 7000
    targetPort: {port}
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: default
  labels:
    app: client
spec:
  containers:
  - name: client
    image: busybox
"#
    )
}

/// The target port of the Service `echo` in a configuration.
fn echo_target(config: &Value) -> Option<u64> {
    service(config, "echo")["ports"][0]["targetPort"].as_u64()
}

/// What the client loop saw on its one connection.
#[derive(Default)]
struct Traffic {
    /// When each request-response completed, in order.
    done: Vec<Instant>,
    /// The first failure (an I/O error, or a wrong answer), which ends the loop.
    failure: Option<String>,
}

/// Killing the control plane (SIGKILL), keeping it down for 1.5 s and restarting it on the
/// same address loses nothing on a connection open through a proxy that carries a
/// request every 2 ms; new connections work while it is down (the proxy routes the
/// Service's cluster IP from the configuration it holds); after the restart the control
/// plane shows the proxy SYNCED on the version it already held, and an edit made then (the
/// Service's target port, to a second server) reaches the proxy and new connections.
#[test]
fn control_plane_restart_loses_no_traffic_and_proxies_resync() {
    let (port_a, port_b) = (echo_server("A"), echo_server("B"));
    let mut mesh = Mesh::new(&[("echo.yaml", &echo_manifest(port_a))]);
    let proxy = mesh.proxy("default", "client", "10.96.0.77:7000");
    mesh.wait("the proxy in sync, routing echo to server A", || {
        mesh.in_sync(&proxy) && echo_target(&mesh.held(&proxy)["config"]) == Some(port_a.into())
    });
    assert_eq!(
        ask(&proxy.listen, "first").expect("through the proxy"),
        "A first"
    );

    // One connection, a request every 2 ms until told to stop.
    let traffic = Arc::new(Mutex::new(Traffic::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let conn = TcpStream::connect(&proxy.listen).expect("connect through the proxy");
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    conn.set_nodelay(true).expect("nodelay");
    let client = {
        let (traffic, stop) = (traffic.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reader = BufReader::new(conn.try_clone().expect("clone"));
            let mut writer = conn;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let mut answer = String::new();
                // One write per request (no Nagle wait between pieces of a line).
                let outcome = writer
                    .write_all(format!("req {n}\n").as_bytes())
                    .and_then(|()| reader.read_line(&mut answer).map(|_| ()));
                let mut t = traffic.lock().expect("lock");
                match outcome {
                    Ok(()) if answer == format!("A req {n}\n") => t.done.push(Instant::now()),
                    Ok(()) => t.failure = Some(format!("request {n}: answered {answer:?}")),
                    Err(e) => t.failure = Some(format!("request {n}: {e}")),
                }
                if t.failure.is_some() {
                    return;
                }
                drop(t);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let completed = |since: Instant| {
        let t = traffic.lock().expect("lock");
        assert!(t.failure.is_none(), "{:?}", t.failure);
        t.done.iter().filter(|at| **at >= since).count()
    };
    let start = Instant::now();
    mesh.wait("traffic on the open connection", || completed(start) >= 50);

    let held = mesh.held(&proxy)["version"].clone();
    assert!(held.is_string(), "{held}");
    mesh.kill_control_plane();
    let killed = Instant::now();
    assert_eq!(
        http(&mesh.monitoring, "/healthz").0,
        0,
        "the control plane is down"
    );
    // New connections while it is down.
    for i in 0..5 {
        let line = format!("while down {i}");
        assert_eq!(
            ask(&proxy.listen, &line).expect("a new connection while the control plane is down"),
            format!("A {line}")
        );
    }
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(killed.elapsed()));
    assert_eq!(
        mesh.held(&proxy)["version"],
        held,
        "the proxy keeps what it held"
    );
    let down = completed(killed);
    mesh.start_control_plane();

    // The proxy reconnects and is in sync on the version it held: nothing was pushed again.
    mesh.wait("the proxy in sync with the restarted control plane", || {
        mesh.in_sync(&proxy)
    });
    let row = mesh.row(&proxy);
    assert_eq!(row["lastAcked"], held, "{row}");
    assert_eq!(row["pushes"], 0, "{row}");
    assert!(mesh.status().contains("client.default"));
    assert!(mesh.status().contains("SYNCED"), "{}", mesh.status());

    // An edit after the restart reaches the proxy: new connections go to server B, while
    // the open connection stays on A.
    mesh.edit("echo.yaml", |_| echo_manifest(port_b));
    mesh.wait("the proxy routing echo to server B", || {
        mesh.in_sync(&proxy) && echo_target(&mesh.held(&proxy)["config"]) == Some(port_b.into())
    });
    assert_ne!(mesh.row(&proxy)["lastAcked"], held);
    assert_eq!(
        ask(&proxy.listen, "after").expect("through the proxy"),
        "B after"
    );

    let after = Instant::now();
    mesh.wait("traffic after the edit", || completed(after) >= 50);
    stop.store(true, Ordering::Relaxed);
    client.join().expect("client loop");
    let t = traffic.lock().expect("lock");
    assert!(t.failure.is_none(), "{:?}", t.failure);
    assert!(
        down >= 50,
        "only {down} requests while the control plane was down"
    );
    let slowest = t.done.windows(2).map(|w| w[1] - w[0]).max();
    eprintln!(
        "{} request-responses on one connection, {down} of them while the control plane was down, none lost; longest gap between two {slowest:?}",
        t.done.len()
    );
}

/// `ferry proxy-config POD` prints what the control plane compiles for the pod, and with
/// `--from-proxy ADMIN` what the pod's proxy holds (its admin `/config_dump`), as JSON and
/// as YAML (the default); the proxy holds exactly what the control plane compiled, under
/// the version the control plane says it ACKed. `--from-proxy` with another pod's admin
/// address, or with `secret`, fails and says why.
#[test]
fn proxy_config_shows_compiled_and_held_configuration() {
    let mut mesh = Mesh::new(&[("default.yaml", &redis_manifest(3))]);
    let proxy = mesh.proxy("default", "redis-0", "127.0.0.1:9");
    mesh.wait("the proxy in sync", || mesh.in_sync(&proxy));
    let cli = |args: &[&str]| {
        let out = mesh.ferry(args);
        assert!(
            out.status.success(),
            "ferry {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let yaml = |text: &str| -> Value { serde_yaml_ng::from_str(text).expect("YAML") };
    let json = |text: &str| -> Value { serde_json::from_str(text).expect("JSON") };

    // From the proxy.
    let admin = proxy.admin.as_str();
    let dump = mesh.held(&proxy);
    let from_proxy = json(&cli(&[
        "proxy-config",
        "redis-0",
        "--from-proxy",
        admin,
        "-o",
        "json",
    ]));
    assert_eq!(from_proxy, dump);
    assert_eq!(from_proxy["version"], mesh.row(&proxy)["lastAcked"]);
    assert_eq!(from_proxy["config"]["identity"]["pod"], "redis-0");
    assert_eq!(endpoints(&from_proxy["config"], "redis"), 3);
    let as_yaml = cli(&[
        "proxy-config",
        "redis-0",
        "--from-proxy",
        admin,
        "-o",
        "yaml",
    ]);
    assert!(as_yaml.contains("version: ") && !as_yaml.trim_start().starts_with('{'));
    assert_eq!(yaml(&as_yaml), dump);
    assert_eq!(
        yaml(&cli(&[
            "proxy-config",
            "default/redis-0",
            "--from-proxy",
            admin
        ])),
        dump
    );

    // From the control plane: the same configuration, but for the version label.
    let cp = mesh.monitoring.as_str();
    let compiled = json(&cli(&[
        "proxy-config",
        "redis-0",
        "--control-plane",
        cp,
        "-o",
        "json",
    ]));
    assert!(compiled["warnings"].is_array(), "{compiled}");
    let unversioned = |config: &Value| {
        let mut config = config.clone();
        config.as_object_mut().expect("object").remove("version");
        config
    };
    assert_eq!(
        unversioned(&compiled["config"]),
        unversioned(&dump["config"])
    );
    let compiled_yaml = cli(&[
        "proxy-config",
        "redis-0",
        "--control-plane",
        cp,
        "-o",
        "yaml",
    ]);
    assert!(!compiled_yaml.trim_start().starts_with('{'));
    assert_eq!(yaml(&compiled_yaml), compiled);

    // Wrong uses fail and say why.
    let fails = |args: &[&str], says: &str| {
        let out = mesh.ferry(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "ferry {args:?} succeeded");
        assert!(err.contains(says), "ferry {args:?}: {err}");
    };
    fails(
        &["proxy-config", "redis-1", "--from-proxy", admin],
        &format!("the proxy at {admin} is that of default/redis-0, not of default/redis-1"),
    );
    fails(
        &[
            "proxy-config",
            "redis-0",
            "-n",
            "other",
            "--from-proxy",
            admin,
        ],
        "not of other/redis-0",
    );
    fails(
        &["proxy-config", "secret", "redis-0", "--from-proxy", admin],
        "--from-proxy shows the configuration a proxy holds, not its certificate",
    );
    fails(
        &["proxy-config", "redis-7", "--control-plane", cp],
        "no pod default/redis-7 in the mesh",
    );
}
