//! Root end-to-end test of a root CA rollover in the one-machine mesh, through the `ferry`
//! binary: `ferry up` with a Redis StatefulSet and a meshed client under STRICT mutual TLS,
//! Redis traffic through both sidecars all along, and `ferry ca rollover` in the middle.
//!
//! - Load during the rollover: `redis-benchmark` INCRs (new connections with every run) and
//!   a loop of `redis-cli INCR`, one new connection (so one new mutual TLS handshake between
//!   the sidecars) per command. Not one command may fail, and both counters must equal the
//!   commands sent.
//! - The trust invariant, sampled from the control plane's `/debug/trust` as fast as it
//!   answers: in every sample, every proxy trusts the root every proxy's certificate chains
//!   to; and the mesh went through a state where all proxies trusted both roots while all
//!   still held certificates of the old one (phase 1) before any certificate of the new root
//!   was in use. A rollover without its "trust both" phase fails here.
//! - Afterwards the server sidecar's own admin `/certs` lists the new root only, its chain
//!   ends at the new root, the control plane's `/debug/certs` says the same, `ferry ca root`
//!   and `<state-dir>/ca/root-cert.pem` hold the new root (the next `ferry up` keeps it), and
//!   a fresh connection works.
//! - Ctrl-C leaves nothing behind.
//!
//! Skipped unless root with iproute2, iptables, setpriv, Redis and curl. Uses its own bridge
//! and networks.

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use support::*;

const BRIDGE: &str = "ferry-roll0";
const POD_CIDR: &str = "198.18.210.0/24";
const SERVICE_CIDR: &str = "198.19.210.0/24";

/// `ferry exec POD -- ARGS` of the mesh in `state_dir`: (success, stdout, stderr).
fn exec(ferry: &Path, state_dir: &Path, pod: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(ferry)
        .args(["exec", pod, "--"])
        .args(args)
        .env("FERRY_STATE_DIR", state_dir)
        .output()
        .expect("ferry exec runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// The admin `/certs` of a pod's proxy, from inside the pod.
fn certs(up: &Up, pod: &str) -> Value {
    let (ok, out) = up.exec(
        pod,
        &["curl", "-s", "-m", "5", "http://127.0.0.1:15000/certs"],
    );
    assert!(ok, "curl /certs in {pod}: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("/certs of {pod}: {e}: {out}"))
}

/// The fingerprints of the roots a `/certs` answer trusts.
fn trusted(certs: &Value) -> Vec<String> {
    certs["trustedRoots"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["sha256"].as_str().map(str::to_string))
        .collect()
}

/// Runs `work` in a loop on a thread until `stop`; it returns (commands, failures).
fn keep_running(
    stop: &Arc<AtomicBool>,
    mut work: impl FnMut() -> (u64, Option<String>) + Send + 'static,
) -> JoinHandle<(u64, Vec<String>)> {
    let stop = stop.clone();
    std::thread::spawn(move || {
        let (mut sent, mut failures) = (0, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            let (n, failed) = work();
            sent += n;
            failures.extend(failed);
        }
        (sent, failures)
    })
}

/// One sample of the control plane's `/debug/trust`: each proxy's (trusted roots, root of
/// its certificate).
type Sample = Vec<(String, BTreeSet<String>, String)>;

fn sample(monitoring: &str) -> Option<Sample> {
    let body = http_get(monitoring, "/debug/trust")?;
    let json: Value = serde_json::from_str(&body).ok()?;
    Some(
        json["proxies"]
            .as_array()?
            .iter()
            .map(|p| {
                let report = &p["report"];
                (
                    p["pod"].as_str().unwrap_or_default().to_string(),
                    report["roots"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|r| r.as_str().map(str::to_string))
                        .collect(),
                    report["certRoot"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect(),
    )
}

#[test]
fn root_rollover_under_load() {
    let Some(ferry) = can_run(&["redis-server", "redis-cli", "redis-benchmark", "curl"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    write_manifest(dir.path(), "namespace.yaml", DEFAULT_NAMESPACE);
    write_manifest(dir.path(), "redis.yaml", REDIS_ONE_POD);
    write_manifest(dir.path(), "client.yaml", MESH_CLIENT);
    write_manifest(dir.path(), "peer.yaml", &peer_authentication("STRICT"));
    let state = tempfile::tempdir().expect("tmp");
    let state_dir: PathBuf = state.path().to_path_buf();
    let mut seen = Vec::new();
    {
        let mut up = Up::start(
            &ferry,
            dir.path(),
            &state_dir,
            &own_network(BRIDGE, POD_CIDR, SERVICE_CIDR),
        );
        let status = pods_ready(&mut up, &["client", "redis-0"]);
        seen.push(status.clone());
        assert!(
            status["admin_socket"].as_str().is_some(),
            "ferry status names the control socket: {status}"
        );
        let monitoring = up.monitoring().expect("monitoring address");
        wait_for("both proxies report their trust", 15, || {
            let s = sample(&monitoring)?;
            (s.len() == 2
                && s.iter()
                    .all(|(_, roots, cert)| roots.len() == 1 && !cert.is_empty()))
            .then_some(())
        });
        let before = certs(&up, "redis-0");
        let old = before["chainRoot"].as_str().expect("chainRoot").to_string();
        assert_eq!(trusted(&before), vec![old.clone()], "{before}");

        // Load through both sidecars: benchmark runs and one connection per command.
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (ferry.clone(), state_dir.clone());
        let bench = keep_running(&stop, move || {
            let (ok, out, err) = exec(
                &f,
                &s,
                "client",
                &[
                    "redis-benchmark",
                    "-h",
                    "redis-0.redis",
                    "-t",
                    "incr",
                    "-n",
                    "3000",
                    "-c",
                    "4",
                    "-q",
                ],
            );
            let failed = (!ok
                || out.to_lowercase().contains("error")
                || err.to_lowercase().contains("error"))
            .then(|| format!("redis-benchmark: {out} {err}"));
            (3000, failed)
        });
        let (f, s) = (ferry.clone(), state_dir.clone());
        let fresh = keep_running(&stop, move || {
            let (ok, out, err) = exec(
                &f,
                &s,
                "client",
                &[
                    "timeout",
                    "5",
                    "redis-cli",
                    "-h",
                    "redis-0.redis",
                    "INCR",
                    "fresh",
                ],
            );
            let failed = (!ok || out.parse::<u64>().is_err())
                .then(|| format!("redis-cli INCR: `{out}` {err}"));
            (1, failed)
        });
        // The trust invariant, sampled as fast as the control plane answers.
        let m = monitoring.clone();
        let sampler_stop = Arc::new(AtomicBool::new(false));
        let sampling = sampler_stop.clone();
        let old_fp = old.clone();
        let sampler = std::thread::spawn(move || {
            let (mut violations, mut both_before_new, mut new_seen, mut samples) =
                (Vec::new(), false, false, 0u64);
            while !sampling.load(Ordering::Relaxed) {
                let Some(s) = sample(&m) else { continue };
                samples += 1;
                for (pod, roots, _) in &s {
                    for (other, _, cert) in &s {
                        if !cert.is_empty() && !roots.contains(cert) {
                            violations.push(format!(
                                "{pod} does not trust {other}'s certificate root {cert}: trusts {roots:?}"
                            ));
                        }
                    }
                }
                let all_both = s.len() == 2 && s.iter().all(|(_, roots, _)| roots.len() == 2);
                let all_old = s.iter().all(|(_, _, cert)| *cert == old_fp);
                if !new_seen && all_both && all_old {
                    both_before_new = true;
                }
                if s.iter()
                    .any(|(_, _, cert)| !cert.is_empty() && *cert != old_fp)
                {
                    new_seen = true;
                }
            }
            (violations, both_before_new, samples)
        });
        std::thread::sleep(Duration::from_secs(2));

        let started = Instant::now();
        let out = up.ferry(&["ca", "rollover", "--phase-timeout-secs", "30"]);
        let took = started.elapsed();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "ferry ca rollover failed:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for phase in [
            "phase 1/3 done: 2 proxies",
            "phase 2/3 done: 2 proxies",
            "phase 3/3 done: 2 proxies",
            "root rolled",
        ] {
            assert!(text.contains(phase), "no `{phase}` in:\n{text}");
        }
        eprintln!("ferry ca rollover ({took:?}):\n{text}");

        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        sampler_stop.store(true, Ordering::Relaxed);
        let (bench_sent, bench_failures) = bench.join().expect("benchmark thread");
        let (fresh_sent, fresh_failures) = fresh.join().expect("fresh thread");
        let (violations, both_before_new, samples) = sampler.join().expect("sampler");
        eprintln!(
            "load: {bench_sent} benchmark INCRs, {fresh_sent} one-connection INCRs; {samples} trust samples"
        );
        assert!(bench_failures.is_empty(), "{bench_failures:?}");
        assert!(fresh_failures.is_empty(), "{fresh_failures:?}");
        assert!(
            fresh_sent >= 5,
            "the one-connection loop ran ({fresh_sent})"
        );
        assert!(
            violations.is_empty(),
            "trust broken during the rollover: {violations:?}"
        );
        assert!(
            both_before_new,
            "no moment where every proxy trusted both roots before a certificate of the new root was used ({samples} samples)"
        );
        let (_, counter, _) = exec(
            &ferry,
            &state_dir,
            "client",
            &[
                "redis-cli",
                "-h",
                "redis-0.redis",
                "GET",
                "counter:__rand_int__",
            ],
        );
        assert_eq!(counter, bench_sent.to_string(), "benchmark INCRs lost");
        let (_, counter, _) = exec(
            &ferry,
            &state_dir,
            "client",
            &["redis-cli", "-h", "redis-0.redis", "GET", "fresh"],
        );
        assert_eq!(counter, fresh_sent.to_string(), "one-connection INCRs lost");

        // The server sidecar: a certificate of the new root, the new root only.
        let after = certs(&up, "redis-0");
        let new = after["chainRoot"].as_str().expect("chainRoot").to_string();
        assert_ne!(new, old, "the root changed");
        assert_eq!(
            trusted(&after),
            vec![new.clone()],
            "only the new root: {after}"
        );
        assert_ne!(after["serial"], before["serial"], "a new certificate");
        let client = certs(&up, "client");
        assert_eq!(client["chainRoot"].as_str(), Some(new.as_str()));
        assert_eq!(trusted(&client), vec![new.clone()]);
        // The control plane's view of the same.
        let record: Value = serde_json::from_str(
            &http_get(&monitoring, "/debug/certs?proxy=default/redis-0").expect("/debug/certs"),
        )
        .expect("JSON");
        assert_eq!(
            record["trust"]["roots"],
            serde_json::json!([new.clone()]),
            "{record}"
        );
        // The new root is kept for the next `ferry up`, and its key matches.
        let out = up.ferry(&["ca", "root"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let root_pem = std::fs::read_to_string(state_dir.join("ca/root-cert.pem")).expect("root");
        assert_eq!(String::from_utf8_lossy(&out.stdout), root_pem);
        let fingerprint = Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(state_dir.join("ca/root-cert.pem"))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if let Some((_, hex)) = fingerprint.trim().split_once('=') {
            assert_eq!(
                hex.replace(':', "").to_lowercase(),
                new,
                "root-cert.pem is the new root"
            );
        }
        // A fresh connection after the rollover.
        let (_, pong, _) = exec(
            &ferry,
            &state_dir,
            "client",
            &["redis-cli", "-h", "redis-0.redis", "PING"],
        );
        assert_eq!(pong, "PONG");

        let exit = up.interrupt().expect("ferry up exits on SIGINT");
        assert!(exit.success(), "ferry up exits cleanly: {exit}");
    }
    assert_nothing_left(&seen, BRIDGE, &state_dir);
    assert!(
        !state_dir.join("admin.sock").exists(),
        "control socket left"
    );
}
