//! Root end-to-end test of `ferry up`: the seed example (Redis StatefulSet, client
//! Deployment, injection-enabled namespace) and an opted-out pod written to a temporary directory and brought up;
//! every pod ready; `ferry exec` into the client reaches `redis-0.redis` through both
//! sidecars (metrics on both sides); Ctrl-C tears everything down. Then a run killed with
//! SIGKILL is cleaned up by `ferry down`. Nothing may be left: namespaces, the bridge,
//! `/etc/netns` files, processes, the state file.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::netns::{can_run, describe};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
const EXAMPLE: [(&str, &str); 3] = [
    (
        "namespace.yaml",
        include_str!("../../../examples/redis-statefulset/namespace.yaml"),
    ),
    (
        "redis.yaml",
        include_str!("../../../examples/redis-statefulset/redis.yaml"),
    ),
    (
        "client.yaml",
        include_str!("../../../examples/redis-statefulset/client.yaml"),
    ),
];

/// A pod that opts out of injection: it runs without a sidecar and still reaches the mesh.
const OPT_OUT: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: plain\n  annotations:\n    sidecar.istio.io/inject: \"false\"\nspec:\n  containers:\n  - name: shell\n    image: busybox\n";

/// A running `ferry up`: interrupted, then `ferry down` as a backstop, on drop.
struct Up {
    child: Child,
    state_dir: String,
}

impl Up {
    fn start(dir: &Path, state_dir: &str) -> Up {
        let child = Command::new(FERRY)
            .args(["up", &dir.display().to_string(), "--state-dir", state_dir])
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ferry up starts");
        Up {
            child,
            state_dir: state_dir.to_string(),
        }
    }

    fn ferry(&self, args: &[&str]) -> Output {
        Command::new(FERRY)
            .args(args)
            .env("FERRY_STATE_DIR", &self.state_dir)
            .stdin(Stdio::null())
            .output()
            .expect("ferry runs")
    }

    fn status(&self) -> Option<serde_json::Value> {
        let out = self.ferry(&["status", "-o", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    fn exec(&self, pod: &str, args: &[&str]) -> String {
        let mut full = vec!["exec", pod, "--"];
        full.extend_from_slice(args);
        let out = self.ferry(&full);
        assert!(out.status.success(), "ferry {full:?}: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// SIGINT and wait for the exit, as Ctrl-C does.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signals our own child.
            unsafe {
                libc::kill(pid, libc::SIGINT);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "ferry up did not exit on SIGINT");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.interrupt_quietly();
        }
        let _ = self.ferry(&["down"]);
    }
}

impl Up {
    fn interrupt_quietly(&mut self) -> Option<()> {
        let pid = i32::try_from(self.child.id()).ok()?;
        // SAFETY: signals our own child.
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Some(())
    }
}

fn wait_for<T>(what: &str, secs: u64, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn all_ready(up: &Up) -> serde_json::Value {
    wait_for("all pods ready", 60, || {
        let status = up.status()?;
        let pods = status["pods"].as_array()?;
        (pods.len() == 5 && pods.iter().all(|p| p["ready"] == true)).then_some(status.clone())
    })
}

fn pod<'a>(status: &'a serde_json::Value, prefix: &str) -> &'a serde_json::Value {
    status["pods"]
        .as_array()
        .and_then(|pods| {
            pods.iter().find(|p| {
                p["name"]
                    .as_str()
                    .is_some_and(|n| n == prefix || n.starts_with(&format!("{prefix}-")))
            })
        })
        .unwrap_or_else(|| panic!("no pod {prefix} in {status}"))
}

fn metrics(ip: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect((ip, 15090)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"GET /stats/prometheus HTTP/1.0\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

fn sample(metrics: &str, name: &str, needles: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Pids recorded in the state (every container process).
fn pids(status: &serde_json::Value) -> Vec<i64> {
    status["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["containers"].as_array().into_iter().flatten())
        .filter_map(|c| c["pid"].as_i64())
        .collect()
}

fn assert_nothing_left(status: &serde_json::Value, state_dir: &str) {
    let list = String::from_utf8_lossy(&support::netns::run("ip", &["netns", "list"], None).stdout)
        .into_owned();
    for p in status["pods"].as_array().into_iter().flatten() {
        let netns = p["netns"].as_str().unwrap_or_default();
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(netns)),
            "namespace {netns} left behind"
        );
        assert!(
            !Path::new("/etc/netns").join(netns).exists(),
            "/etc/netns/{netns} left behind"
        );
        let veth = p["veth"].as_str().unwrap_or_default();
        assert!(
            !Path::new("/sys/class/net").join(veth).exists(),
            "link {veth} left behind"
        );
    }
    assert!(
        !Path::new("/sys/class/net/ferry0").exists(),
        "bridge ferry0 left behind"
    );
    assert!(
        !Path::new(state_dir).join("state.json").exists(),
        "state file left behind"
    );
    wait_for("processes to be gone", 5, || {
        pids(status)
            .iter()
            .all(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z "))
                    .unwrap_or(true)
            })
            .then_some(())
    });
}

#[test]
fn seed_example_comes_up_and_goes_away() {
    if !can_run(&["redis-server", "redis-cli", "iptables", "setpriv"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    for (name, text) in EXAMPLE {
        std::fs::write(dir.path().join(name), text).expect("write manifest");
    }
    std::fs::write(dir.path().join("plain.yaml"), OPT_OUT).expect("write manifest");
    let state = tempfile::tempdir().expect("tmp");
    let state_dir = state.path().display().to_string();

    // Up, traffic through both sidecars, Ctrl-C.
    let status;
    {
        let mut up = Up::start(dir.path(), &state_dir);
        status = all_ready(&up);
        for p in status["pods"].as_array().into_iter().flatten() {
            let opted_out = p["name"] == "plain";
            assert_eq!(p["sidecar"], !opted_out, "{p}");
        }
        let table = String::from_utf8_lossy(&up.ferry(&["status"]).stdout).into_owned();
        assert!(
            table.contains("redis-0") && table.contains("198.18.0."),
            "{table}"
        );

        assert_eq!(
            up.exec(
                "client",
                &["redis-cli", "-h", "redis-0.redis", "SET", "k", "v"]
            ),
            "OK"
        );
        assert_eq!(
            up.exec("client", &["redis-cli", "-h", "redis-0.redis", "GET", "k"]),
            "v"
        );
        assert_eq!(
            up.exec(
                "client",
                &[
                    "redis-cli",
                    "-h",
                    "redis-0.redis.default.svc.cluster.local",
                    "EXISTS",
                    "k"
                ]
            ),
            "1"
        );
        assert_eq!(
            up.exec("plain", &["redis-cli", "-h", "redis-0.redis", "GET", "k"]),
            "v"
        );
        let server_ip = pod(&status, "redis-0")["ip"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let client_ip = pod(&status, "client")["ip"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        wait_for("destination-side metrics on redis-0", 15, || {
            let m = metrics(&server_ip);
            (sample(
                &m,
                "ferry_redis_commands_total",
                &[
                    "reporter=\"destination\"",
                    "command=\"exists\"",
                    "destination_workload=\"redis\"",
                ],
            ) == 1.0)
                .then_some(())
        });
        wait_for("source-side metrics on the client", 15, || {
            let m = metrics(&client_ip);
            (sample(
                &m,
                "ferry_redis_commands_total",
                &[
                    "reporter=\"source\"",
                    "command=\"exists\"",
                    "destination_workload=\"redis\"",
                ],
            ) == 1.0)
                .then_some(())
        });
        let exit = up.interrupt();
        assert!(exit.success(), "ferry up exits cleanly on SIGINT: {exit}");
    }
    assert_nothing_left(&status, &state_dir);

    // A run killed outright leaves everything; `ferry down` removes it.
    let status;
    {
        let mut up = Up::start(dir.path(), &state_dir);
        status = all_ready(&up);
        let _ = up.child.kill();
        let _ = up.child.wait();
        assert!(
            Path::new("/sys/class/net/ferry0").exists(),
            "a killed run leaves its bridge (what `ferry down` is for)"
        );
        let out = up.ferry(&["down"]);
        assert!(out.status.success(), "ferry down: {}", describe(&out));
    }
    assert_nothing_left(&status, &state_dir);
}
