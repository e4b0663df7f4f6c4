//! `ferry control-plane` with real proxies (`ferry proxy forward --control-plane`) over
//! loopback: the seed example's directory is compiled and streamed, `ferry proxy-status`
//! shows the proxies in sync, an edit (scaling the StatefulSet) reaches them, and an invalid
//! edit is rejected (and listed by `ferry proxy-status`) while the proxies keep their
//! configuration.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// Child processes killed when the test ends, passed or not.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn spawn(args: &[&str]) -> Child {
    Command::new(FERRY)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ferry starts")
}

fn ferry(args: &[&str]) -> Output {
    Command::new(FERRY).args(args).output().expect("ferry runs")
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn endpoints_of_redis(config_yaml: &str) -> usize {
    let docs = ferry_model::parse_documents("proxy-config", config_yaml).expect("YAML");
    let config = &docs[0].value["config"];
    config["services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == "redis")
        .and_then(|s| s["endpoints"].as_array())
        .map_or(0, Vec::len)
}

#[test]
fn directory_edits_reach_the_proxies() {
    let dir = tempfile::tempdir().expect("tmp");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/redis-statefulset");
    for file in ["namespace.yaml", "redis.yaml", "client.yaml"] {
        std::fs::copy(example.join(file), dir.path().join(file)).expect("copy example");
    }
    let (grpc, monitoring) = (free_port(), free_port());
    let grpc_addr = format!("127.0.0.1:{grpc}");
    let monitoring_addr = format!("127.0.0.1:{monitoring}");
    let mut children = Children(Vec::new());
    children.0.push(spawn(&[
        "control-plane",
        "--config-dir",
        &dir.path().display().to_string(),
        "--grpc-addr",
        &grpc_addr,
        "--monitoring-addr",
        &monitoring_addr,
    ]));
    for pod in ["redis-0", "redis-1"] {
        let listen = format!("127.0.0.1:{}", free_port());
        children.0.push(spawn(&[
            "proxy",
            "forward",
            &listen,
            "127.0.0.1:9",
            "--metrics-addr",
            "off",
            "--health-addr",
            "off",
            "--admin-addr",
            "off",
            "--status-addr",
            "off",
            "--control-plane",
            &grpc_addr,
            "--pod",
            pod,
            "--namespace",
            "default",
        ]));
    }
    let status = || {
        String::from_utf8_lossy(
            &ferry(&["proxy-status", "--control-plane", &monitoring_addr]).stdout,
        )
        .into_owned()
    };
    wait_for("both proxies in sync", || {
        let s = status();
        s.contains("redis-0.default")
            && s.contains("redis-1.default")
            && s.matches("SYNCED").count() == 2
    });
    let config = || {
        let out = ferry(&[
            "proxy-config",
            "redis-0",
            "--control-plane",
            &monitoring_addr,
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(endpoints_of_redis(&config()), 3);
    let version = ferry(&["version", "--control-plane", &monitoring_addr]);
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.contains(&format!("control plane: {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );

    // Scale the StatefulSet: the new endpoints reach the proxies.
    let redis = dir.path().join("redis.yaml");
    let text = std::fs::read_to_string(&redis).expect("read");
    std::fs::write(&redis, text.replace("replicas: 3", "replicas: 5")).expect("scale");
    wait_for("five endpoints", || endpoints_of_redis(&config()) == 5);
    wait_for("proxies in sync after the edit", || {
        status().matches("SYNCED").count() == 2
    });

    // An invalid VirtualService is rejected; nothing else changes and the proxies stay in sync.
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: redis\nspec:\n  hosts: [redis]\n  tcp:\n  - route:\n    - destination:\n        host: redis\n        subet: v1\n",
    )
    .expect("write");
    let rejected = || {
        let (code, body) = http(&monitoring_addr, "/debug/rejections");
        code == 200 && body.contains("subet")
    };
    wait_for("the rejection", rejected);
    assert_eq!(endpoints_of_redis(&config()), 5);
    let shown = status();
    assert_eq!(shown.matches("SYNCED").count(), 2);
    assert!(
        shown.contains("REJECTED RESOURCES (1;")
            && shown.contains("bad.yaml")
            && shown.contains("subet"),
        "proxy-status lists the rejected resource:\n{shown}"
    );
}

fn http(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
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
