//! Root end-to-end test of the sidecar data path: two pods as network namespaces joined by
//! a veth pair, `ferry proxy-init` rules in both, `ferry proxy` running as UID 1337 in both,
//! `redis-server` bound to the server pod's IP, `redis-cli` in the client pod. Traffic must
//! cross both sidecars (metrics with `reporter="source"` and `reporter="destination"`), the
//! server must see its peer as 127.0.0.6, and nothing may be left behind.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::netns::{Netns, assert_gone, can_run, python};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
const CLIENT_IP: &str = "198.18.250.1";
const SERVER_IP: &str = "198.18.250.2";

fn config(identity: &str) -> String {
    format!(
        "identity:\n{identity}\nservices:\n\
         - name: redis\n  namespace: default\n  clusterIP: None\n  ports:\n  - name: tcp-redis\n    port: 6379\n  endpoints:\n  - ip: {SERVER_IP}\n    pod: redis-0\n    workload: redis\n    serviceAccount: redis\n    labels:\n      app: redis\n    hasSidecar: true\n\
         - name: client\n  namespace: default\n  clusterIP: None\n  ports:\n  - name: tcp\n    port: 9\n  endpoints:\n  - ip: {CLIENT_IP}\n    pod: client-0\n    workload: client\n    serviceAccount: client\n    labels:\n      app: client\n    hasSidecar: true\n"
    )
}

impl Netns {
    fn start(&mut self, args: &[&str]) {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(args);
        let child = Command::new("ip")
            .args(&full)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("process starts");
        self.children.push(child);
    }

    fn start_proxy(&mut self, config: &str) {
        self.start(&[
            "setpriv",
            "--reuid",
            "1337",
            "--regid",
            "1337",
            "--clear-groups",
            FERRY,
            "proxy",
            "sidecar",
            "--config",
            config,
        ]);
    }

    fn redis_cli(&self, args: &[&str]) -> String {
        let mut full = vec!["redis-cli", "-h", SERVER_IP, "-p", "6379"];
        full.extend_from_slice(args);
        let out = self.exec(&full, None);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn metrics(&self) -> String {
        let script = "import urllib.request\nprint(urllib.request.urlopen('http://127.0.0.1:15090/stats/prometheus', timeout=5).read().decode())";
        self.ok(&[python(), "-c", script])
    }
}

fn sample(metrics: &str, name: &str, needles: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn redis_traffic_crosses_both_sidecars() {
    if !can_run(&["redis-server", "redis-cli", "iptables", "setpriv"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    // The proxies run as UID 1337 and must read their configuration.
    let mut perms = std::fs::metadata(dir.path()).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(dir.path(), perms).expect("chmod");
    let client_config = dir.path().join("client.yaml");
    let server_config = dir.path().join("server.yaml");
    std::fs::write(
        &client_config,
        config(&format!("  pod: client-0\n  namespace: default\n  workload: client\n  serviceAccount: client\n  ip: {CLIENT_IP}\n  labels:\n    app: client")),
    )
    .expect("write");
    std::fs::write(
        &server_config,
        config(&format!("  pod: redis-0\n  namespace: default\n  workload: redis\n  serviceAccount: redis\n  ip: {SERVER_IP}\n  labels:\n    app: redis")),
    )
    .expect("write");

    let names;
    {
        let mut client = Netns::new("cli");
        let mut server = Netns::new("srv");
        names = vec![client.name.clone(), server.name.clone()];
        client.ok(&[
            "ip",
            "link",
            "add",
            "veth0",
            "type",
            "veth",
            "peer",
            "name",
            "veth1",
            "netns",
            &server.name,
        ]);
        client.ok(&[
            "ip",
            "addr",
            "add",
            &format!("{CLIENT_IP}/24"),
            "dev",
            "veth0",
        ]);
        client.ok(&["ip", "link", "set", "veth0", "up"]);
        server.ok(&[
            "ip",
            "addr",
            "add",
            &format!("{SERVER_IP}/24"),
            "dev",
            "veth1",
        ]);
        server.ok(&["ip", "link", "set", "veth1", "up"]);
        for ns in [&client, &server] {
            ns.ok(&[
                FERRY,
                "proxy-init",
                "-p",
                "15001",
                "-z",
                "15006",
                "-u",
                "1337",
                "-m",
                "REDIRECT",
                "-i",
                "*",
                "-x",
                "",
                "-b",
                "*",
                "-d",
                "15090,15021,15020",
            ]);
        }
        server.start(&[
            "redis-server",
            "--bind",
            SERVER_IP,
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ]);
        client.start_proxy(&client_config.display().to_string());
        server.start_proxy(&server_config.display().to_string());

        wait_for("Redis through both sidecars", || {
            client.redis_cli(&["PING"]) == "PONG"
        });
        assert_eq!(client.redis_cli(&["SET", "greeting", "hello"]), "OK");
        assert_eq!(client.redis_cli(&["GET", "greeting"]), "hello");
        let clients = client.redis_cli(&["CLIENT", "LIST"]);
        assert!(
            clients.contains("addr=127.0.0.6:"),
            "the server sees the inbound passthrough address: {clients}"
        );

        wait_for("source-side metrics", || {
            let m = client.metrics();
            sample(
                &m,
                "ferry_redis_commands_total",
                &[
                    "reporter=\"source\"",
                    "command=\"set\"",
                    "destination_workload=\"redis\"",
                ],
            ) == 1.0
        });
        let m = client.metrics();
        assert!(
            sample(
                &m,
                "istio_tcp_connections_opened_total",
                &[
                    "reporter=\"source\"",
                    "source_workload=\"client\"",
                    "destination_service=\"redis.default.svc.cluster.local\""
                ]
            ) >= 4.0
        );
        wait_for("destination-side metrics", || {
            let m = server.metrics();
            sample(
                &m,
                "ferry_redis_commands_total",
                &[
                    "reporter=\"destination\"",
                    "command=\"get\"",
                    "source_workload=\"client\"",
                ],
            ) == 1.0
        });
        let m = server.metrics();
        assert!(
            sample(
                &m,
                "istio_tcp_received_bytes_total",
                &[
                    "reporter=\"destination\"",
                    "destination_workload=\"redis\"",
                    "connection_security_policy=\"none\""
                ]
            ) > 0.0
        );
    }
    assert_gone(&names);
}
