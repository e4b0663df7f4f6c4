//! Root end-to-end test of mutual TLS in the one-machine mesh, through the `ferry` binary:
//! `ferry up` (the control plane as the mesh's CA, a per-pod token for every proxy, the
//! configuration stream over TLS) on a Redis StatefulSet, a meshed client and a client
//! without a sidecar, with a namespace-wide PeerAuthentication edited while it runs.
//!
//! - STRICT: the sidecar-less client is refused at the server's sidecar, the meshed client
//!   works, and a capture (`tcpdump`) on the server pod's veth never shows the command's
//!   unique key in clear; both sidecars' metrics carry the peer's identity, and the
//!   destination says `connection_security_policy="mutual_tls"`.
//! - `ferry proxy-config secret` shows the certificate the CA issued to the server's proxy
//!   (its identity, the chain ending at the root `ferry ca root` prints).
//! - PERMISSIVE: both clients work.
//! - DISABLE: the same capture shows the key in clear (so the STRICT check is not vacuous).
//! - Certificates living 80 s (renewed every ~10 s): `redis-benchmark` INCRs through both
//!   sidecars across renewals of both proxies, and the counter equals the commands sent.
//! - Ctrl-C leaves nothing behind (namespaces, links, `/etc/netns`, iptables rules,
//!   processes, state file, tokens).
//!
//! Skipped unless root with iproute2, iptables, setpriv, Redis and tcpdump. Uses its own
//! bridge and pod network, so it does not touch a mesh `ferry up` runs on this machine.

mod support;

use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use support::*;

const BRIDGE: &str = "ferry-mtls0";
const POD_CIDR: &str = "198.18.200.0/24";
const SERVICE_CIDR: &str = "198.19.200.0/24";
/// Short certificates, so that renewals happen during the test.
const CERT_TTL_SECS: &str = "80";

const PLAIN: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: plain\n  labels:\n    app: plain\n    sidecar.istio.io/inject: \"false\"\nspec:\n  containers:\n  - name: shell\n    image: busybox\n";

/// `redis-cli -h redis-0.redis ARGS` from `pod`, with a timeout; its stdout.
fn redis(up: &Up, pod: &str, args: &[&str]) -> String {
    let mut full = vec!["timeout", "5", "redis-cli", "-h", "redis-0.redis"];
    full.extend_from_slice(args);
    up.exec(pod, &full).1
}

/// Sets a unique key from the meshed client while capturing on `veth`; (the answer, the
/// key, whether the key crossed the wire in clear, bytes captured).
fn set_captured(up: &Up, veth: &str, work: &Path, tag: &str) -> (String, String, bool, usize) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let key = format!("ferry-secret-{tag}-{}-{nanos}", std::process::id());
    let file = work.join(format!("{tag}.pcap"));
    let mut capture = Capture::start(veth, &file);
    let answer = redis(up, "client", &["SET", &key, "hush"]);
    std::thread::sleep(Duration::from_millis(300));
    let bytes = capture.stop();
    let clear = contains(&bytes, key.as_bytes());
    (answer, key, clear, bytes.len())
}

const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";
const REDIS_ID: &str = "spiffe://cluster.local/ns/default/sa/redis";

#[test]
fn mutual_tls_between_sidecars() {
    let Some(ferry) = can_run(&["redis-server", "redis-cli", "redis-benchmark", "tcpdump"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let write = |name: &str, text: &str| {
        let tmp = dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write manifest");
        std::fs::rename(&tmp, dir.path().join(name)).expect("rename manifest");
    };
    write("namespace.yaml", DEFAULT_NAMESPACE);
    write("redis.yaml", REDIS_ONE_POD);
    write("client.yaml", MESH_CLIENT);
    write("plain.yaml", PLAIN);
    write("peer.yaml", &peer_authentication("STRICT"));
    let state = tempfile::tempdir().expect("tmp");
    let work = tempfile::tempdir().expect("tmp");
    let mut seen = Vec::new();
    {
        let mut up = Up::start(
            &ferry,
            dir.path(),
            state.path(),
            &[
                own_network(BRIDGE, POD_CIDR, SERVICE_CIDR),
                vec!["--cert-ttl-secs", CERT_TTL_SECS],
            ]
            .concat(),
        );
        let status = pods_ready(&mut up, &["client", "plain", "redis-0"]);
        seen.push(status.clone());
        assert_eq!(
            status["secure"].as_str().map(|s| s.ends_with(":15012")),
            Some(true)
        );
        assert!(
            state.path().join("ca/root-cert.pem").exists(),
            "the CA's root in the state directory"
        );
        let veth = pod(&status, "redis-0")["veth"]
            .as_str()
            .expect("redis-0's veth")
            .to_string();

        // The configuration stream runs over TLS: the control plane lists the proxies.
        let proxies = wait_for("both proxies connected", 10, || {
            up.proxies()
                .filter(|a| a.len() == 2 && a.iter().all(|p| p.synced))
        });
        assert!(proxies.iter().any(|p| p.pod == "redis-0"), "{proxies:?}");

        // STRICT: the meshed client works, encrypted on the wire.
        let (answer, key, clear, captured) = set_captured(&up, &veth, work.path(), "strict");
        assert_eq!(answer, "OK");
        assert!(
            captured > 200,
            "the capture saw the connection ({captured} bytes)"
        );
        assert!(!clear, "{key} crossed the wire in clear under STRICT");
        assert_eq!(redis(&up, "client", &["GET", &key]), "hush");
        // The sidecar-less client is refused at the server's sidecar.
        let refused = redis(&up, "plain", &["GET", &key]);
        assert_ne!(refused, "hush", "STRICT let a plaintext client through");
        let text = scrape(&status, "redis-0");
        assert!(
            metric(&text, "ferry_mtls_refused_connections_total", &[]) >= 1.0,
            "no refusal counted:\n{text}"
        );

        // Identities on both sides' metrics.
        wait_for("destination metrics with identities", 10, || {
            let text = scrape(&status, "redis-0");
            (metric(
                &text,
                "istio_tcp_connections_opened_total",
                &[
                    "reporter=\"destination\"",
                    "connection_security_policy=\"mutual_tls\"",
                    &format!("source_principal=\"{CLIENT_ID}\""),
                    &format!("destination_principal=\"{REDIS_ID}\""),
                    "source_workload=\"client\"",
                    "source_app=\"client\"",
                    "destination_workload=\"redis\"",
                ],
            ) >= 2.0)
                .then_some(())
        });
        wait_for("source metrics with identities", 10, || {
            let text = scrape(&status, "client");
            (metric(
                &text,
                "istio_tcp_connections_opened_total",
                &[
                    "reporter=\"source\"",
                    &format!("source_principal=\"{CLIENT_ID}\""),
                    &format!("destination_principal=\"{REDIS_ID}\""),
                    "destination_workload=\"redis\"",
                ],
            ) >= 2.0)
                .then_some(())
        });

        // What the CA issued, as `ferry proxy-config secret` and `ferry ca root` show it.
        let out = up.ferry(&["proxy-config", "secret", "redis-0", "-o", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let secret: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(secret["identity"], REDIS_ID, "{secret}");
        assert_eq!(secret["nextRotation"]["source"], "the proxy's metrics");
        let root = std::fs::read_to_string(state.path().join("ca/root-cert.pem")).expect("root");
        let chain = secret["chain"].as_array().expect("chain");
        assert_eq!(chain.last().and_then(Value::as_str), Some(root.as_str()));
        let out = up.ferry(&["ca", "root"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), root);

        // PERMISSIVE: both clients work.
        set_mode(&up, "PERMISSIVE", &["redis-0"], 2);
        assert_eq!(redis(&up, "plain", &["GET", &key]), "hush");
        let (answer, key, clear, _) = set_captured(&up, &veth, work.path(), "permissive");
        assert_eq!(answer, "OK");
        assert!(
            !clear,
            "{key} crossed the wire in clear under PERMISSIVE (auto mTLS)"
        );
        wait_for("plaintext and mutual TLS at the destination", 10, || {
            let text = scrape(&status, "redis-0");
            let tls = metric(
                &text,
                "istio_tcp_connections_opened_total",
                &["connection_security_policy=\"mutual_tls\""],
            );
            let none = metric(
                &text,
                "istio_tcp_connections_opened_total",
                &["connection_security_policy=\"none\""],
            );
            (tls >= 3.0 && none >= 1.0).then_some(())
        });

        // DISABLE: plaintext, and the capture sees it.
        set_mode(&up, "DISABLE", &["redis-0", "client"], 2);
        let (answer, key, clear, _) = set_captured(&up, &veth, work.path(), "disable");
        assert_eq!(answer, "OK");
        assert!(
            clear,
            "{key} not seen in clear under DISABLE: the capture sees nothing"
        );

        // Rotation under load: back to STRICT, then INCRs through both sidecars while both
        // proxies renew their certificates; not one command may fail.
        set_mode(&up, "STRICT", &["redis-0", "client"], 2);
        let renewals = |name: &str| {
            metric(
                &scrape(&status, name),
                "ferry_identity_cert_renewals_total",
                &["outcome=\"success\""],
            )
        };
        let counter = "counter:__rand_int__".to_string();
        let _ = redis(&up, "client", &["DEL", &counter]);
        let (server_before, client_before) = (renewals("redis-0"), renewals("client"));
        let mut sent = 0u64;
        let mut during = false;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(during && renewals("redis-0") > server_before && renewals("client") > client_before)
        {
            assert!(
                Instant::now() < deadline,
                "no renewal of both proxies within 60 s"
            );
            let before = renewals("redis-0") + renewals("client");
            let (ok, out) = up.exec(
                "client",
                &[
                    "redis-benchmark",
                    "-h",
                    "redis-0.redis",
                    "-t",
                    "incr",
                    "-n",
                    "20000",
                    "-c",
                    "8",
                    "-q",
                ],
            );
            assert!(ok, "redis-benchmark failed: {out}");
            sent += 20000;
            during |= renewals("redis-0") + renewals("client") > before;
        }
        assert_eq!(
            redis(&up, "client", &["GET", &counter]),
            sent.to_string(),
            "INCRs lost across certificate renewals"
        );
        // New connections use the new certificates.
        assert_eq!(redis(&up, "client", &["PING"]), "PONG");

        let exit = up.interrupt().expect("ferry up exits on SIGINT");
        assert!(exit.success(), "ferry up exits cleanly: {exit}");
    }
    assert_nothing_left(&seen, BRIDGE, state.path());
}
