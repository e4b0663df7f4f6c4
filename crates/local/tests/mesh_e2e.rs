//! Root end-to-end test of the one-machine runtime through the `ferry` binary: a mesh with
//! a StatefulSet behind a headless Service and a ClusterIP Service, a Deployment, and a pod
//! that opts out of injection. Checked: cluster DNS (`<svc>`, per-pod names, cluster IPs,
//! NXDOMAIN), the opted-out pod reaching a cluster IP through the service rules and being
//! reached through a sidecar, StatefulSet scaling in ordinal order (DNS and rules follow),
//! a Deployment removed, a DestinationRule reaching a proxy, an invalid edit keeping the
//! pods, a crashed container restarted,
//! and Ctrl-C leaving nothing behind (namespaces, links, `/etc/netns`, iptables rules,
//! processes, state file). Skipped unless root with iproute2, iptables, setpriv and Redis.
//!
//! It needs the `ferry` binary of the same build (`cargo test --workspace` builds it).

mod support;

use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

const BRIDGE: &str = "ferry-e2e0";

fn redis_manifests(replicas: u32) -> String {
    format!(
        r#"apiVersion: v1
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
apiVersion: v1
kind: Service
metadata:
  name: redis-vip
spec:
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
        readinessProbe:
          tcpSocket:
            port: redis
"#
    )
}

const CLIENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: client\nspec:\n  selector:\n    matchLabels:\n      app: client\n  template:\n    metadata:\n      labels:\n        app: client\n    spec:\n      containers:\n      - name: shell\n        image: busybox\n";

const PLAIN: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: plain
spec:
  selector:
    app: plain
  ports:
  - name: tcp-redis
    port: 6380
    targetPort: 6379
---
apiVersion: v1
kind: Pod
metadata:
  name: plain
  labels:
    app: plain
    sidecar.istio.io/inject: "false"
spec:
  containers:
  - name: redis
    image: redis
    ports:
    - containerPort: 6379
    readinessProbe:
      exec:
        command: ["redis-cli", "ping"]
"#;

const RULE: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: redis-vip\nspec:\n  host: redis-vip\n  trafficPolicy:\n    loadBalancer:\n      simple: ROUND_ROBIN\n";

/// The addresses `getent hosts NAME` gives inside `pod`, sorted.
fn resolve(up: &Up, from: &str, name: &str) -> Vec<String> {
    let (_, out) = up.exec(from, &["getent", "hosts", name]);
    let mut ips: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    ips.sort();
    ips
}

fn dnat_rules(netns: &str) -> usize {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "iptables-save", "-t", "nat"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines().filter(|l| l.contains("-j DNAT")).count()
}

#[test]
fn mesh_follows_its_manifests() {
    let Some(ferry) = can_run(&["redis-server", "redis-cli", "getent"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let write = |name: &str, text: &str| {
        // Written aside and renamed, as editors do, so the watcher never sees half a file.
        let tmp = dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write manifest");
        std::fs::rename(&tmp, dir.path().join(name)).expect("rename manifest");
    };
    write("namespace.yaml", DEFAULT_NAMESPACE);
    write("redis.yaml", &redis_manifests(2));
    write("client.yaml", CLIENT);
    write("plain.yaml", PLAIN);
    let state = tempfile::tempdir().expect("tmp");
    let mut seen = Vec::new();
    {
        let mut up = Up::start(&ferry, dir.path(), state.path(), &["--bridge", BRIDGE]);
        let status = pods_ready(&mut up, &["client", "plain", "redis-0", "redis-1"]);
        seen.push(status.clone());
        let ip = |name: &str| {
            pod(&status, name)["ip"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(pod(&status, "plain")["sidecar"], false);
        assert_eq!(pod(&status, "redis-0")["sidecar"], true);

        // Cluster DNS.
        let redis = {
            let mut v = vec![ip("redis-0"), ip("redis-1")];
            v.sort();
            v
        };
        assert_eq!(resolve(&up, "client", "redis"), redis);
        assert_eq!(resolve(&up, "client", "redis.default"), redis);
        assert_eq!(
            resolve(&up, "client", "redis.default.svc.cluster.local"),
            redis
        );
        assert_eq!(resolve(&up, "client", "redis-1.redis"), [ip("redis-1")]);
        assert_eq!(
            resolve(&up, "plain", "redis-0.redis.default.svc.cluster.local"),
            [ip("redis-0")]
        );
        let vip = resolve(&up, "client", "redis-vip");
        assert!(vip.len() == 1 && vip[0].starts_with("198.19."), "{vip:?}");
        let (found, _) = up.exec(
            "client",
            &["getent", "hosts", "nope.default.svc.cluster.local"],
        );
        assert!(!found, "an unknown name must not resolve");

        // The opted-out pod reaches a cluster IP (service rules) and is reached through a
        // sidecar.
        assert_eq!(
            up.exec(
                "plain",
                &["redis-cli", "-h", "redis-0.redis", "SET", "k", "v"]
            )
            .1,
            "OK"
        );
        assert_eq!(
            up.exec("plain", &["redis-cli", "-h", "redis-vip", "PING"])
                .1,
            "PONG"
        );
        assert_eq!(
            up.exec(
                "redis-0",
                &["redis-cli", "-h", "plain", "-p", "6380", "PING"]
            )
            .1,
            "PONG"
        );
        wait_for("rules for redis-vip (2) and plain (1)", 10, || {
            (dnat_rules("ferry-default-plain") == 3).then_some(())
        });

        // Scale up: DNS and the rules follow.
        write("redis.yaml", &redis_manifests(3));
        let status = pods_ready(
            &mut up,
            &["client", "plain", "redis-0", "redis-1", "redis-2"],
        );
        seen.push(status.clone());
        wait_for("three redis addresses", 10, || {
            (resolve(&up, "client", "redis").len() == 3).then_some(())
        });
        wait_for("rules for three endpoints", 10, || {
            (dnat_rules("ferry-default-plain") == 4).then_some(())
        });

        // Scale down and remove the Deployment.
        write("redis.yaml", &redis_manifests(1));
        std::fs::remove_file(dir.path().join("client.yaml")).expect("remove client");
        let status = pods_ready(&mut up, &["plain", "redis-0"]);
        seen.push(status.clone());
        assert_eq!(resolve(&up, "plain", "redis"), [ip("redis-0")]);
        wait_for("rules for one endpoint", 10, || {
            (dnat_rules("ferry-default-plain") == 2).then_some(())
        });

        // A DestinationRule reaches the proxies within moments (the control plane's view).
        let acked = || -> Option<(String, bool)> {
            let status = up.status()?;
            let monitoring = status["monitoring"].as_str()?.to_string();
            let body = http_get(&monitoring, "/debug/proxy-status")?;
            let json: Value = serde_json::from_str(&body).ok()?;
            let p = json["proxies"]
                .as_array()?
                .iter()
                .find(|p| p["pod"] == "redis-0")?
                .clone();
            Some((p["lastAcked"].to_string(), p["synced"] == true))
        };
        let before = wait_for("redis-0's proxy in sync", 10, || acked().filter(|a| a.1));
        let edited = Instant::now();
        write("rule.yaml", RULE);
        wait_for(
            "the DestinationRule acknowledged by redis-0's proxy",
            10,
            || acked().filter(|a| a.1 && a.0 != before.0),
        );
        assert!(
            edited.elapsed() < Duration::from_secs(3),
            "the edit took {:?} to reach the proxy",
            edited.elapsed()
        );

        // An invalid edit is rejected; the pods stay.
        write(
            "redis.yaml",
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: redis\nspec: [broken\n",
        );
        wait_for("the rejection in the state", 10, || {
            let status = up.status()?;
            (!status["rejected"].as_array()?.is_empty()).then_some(())
        });
        let status = pods_ready(&mut up, &["plain", "redis-0"]);
        assert_eq!(
            up.exec("plain", &["redis-cli", "-h", "redis-vip", "GET", "k"])
                .1,
            "v"
        );

        // A crashed container is restarted and counted.
        let app_pid = pod(&status, "redis-0")["containers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["role"] == "app"))
            .and_then(|c| c["pid"].as_i64())
            .and_then(|p| i32::try_from(p).ok())
            .expect("redis-0's application pid");
        // Containers see the pod's hostname, as `ferry exec` does.
        let uts = Command::new("nsenter")
            .args(["-t", &app_pid.to_string(), "-u", "hostname"])
            .output()
            .expect("nsenter");
        assert_eq!(String::from_utf8_lossy(&uts.stdout).trim(), "redis-0");
        assert_eq!(up.exec("redis-0", &["hostname"]).1, "redis-0");
        // SAFETY: a process of the mesh this test started.
        unsafe {
            libc::kill(app_pid, libc::SIGKILL);
        }
        let status = wait_for("the restart", 20, || {
            let status = up.status()?;
            let p = pod(&status, "redis-0").clone();
            let restarted = p["containers"]
                .as_array()?
                .iter()
                .any(|c| c["role"] == "app" && c["restarts"] == 1);
            (restarted && p["ready"] == true).then_some(status)
        });
        seen.push(status);
        let table = String::from_utf8_lossy(&up.ferry(&["status"]).stdout).into_owned();
        assert!(table.contains("RESTARTS"), "{table}");

        let exit = up.interrupt().expect("ferry up exits on SIGINT");
        assert!(exit.success(), "ferry up exits cleanly: {exit}");
    }
    assert_nothing_left(&seen, BRIDGE, state.path());
}
