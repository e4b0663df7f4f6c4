//! `ferry webhook` and `ferry webhook config` as a user runs them: the rendered
//! MutatingWebhookConfiguration, errors that name the file, and a server that starts,
//! reports its address and stops cleanly on SIGTERM.

use base64::Engine;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn ferry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
}

fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let cert_path = dir.join("tls.crt");
    let key_path = dir.join("tls.key");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "ferry failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn config_prints_the_default_configuration_as_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = self_signed(dir.path());
    let yaml = run_ok(ferry().args(["webhook", "config", "--ca-bundle"]).arg(&ca));
    let doc: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(doc["apiVersion"], "admissionregistration.k8s.io/v1");
    assert_eq!(doc["kind"], "MutatingWebhookConfiguration");
    assert_eq!(doc["metadata"]["name"], "ferry-sidecar-injector");
    let hooks = doc["webhooks"].as_array().unwrap();
    let names: Vec<&str> = hooks.iter().filter_map(|h| h["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "rev.namespace.sidecar-injector.istio.io",
            "rev.object.sidecar-injector.istio.io",
            "namespace.sidecar-injector.istio.io",
            "object.sidecar-injector.istio.io",
        ]
    );
    let pem = std::fs::read(&ca).unwrap();
    for hook in hooks {
        let bundle = hook["clientConfig"]["caBundle"].as_str().unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(bundle)
            .unwrap();
        assert_eq!(decoded, pem);
        assert_eq!(
            hook["clientConfig"]["service"],
            serde_json::json!({"name": "ferry-control", "namespace": "ferry-system", "path": "/inject", "port": 443})
        );
        assert_eq!(hook["failurePolicy"], "Fail");
        assert_eq!(hook["sideEffects"], "None");
        assert_eq!(hook["reinvocationPolicy"], "Never");
        assert_eq!(
            hook["admissionReviewVersions"],
            serde_json::json!(["v1", "v1beta1"])
        );
        assert_eq!(
            hook["rules"][0]["operations"],
            serde_json::json!(["CREATE"])
        );
        assert_eq!(hook["rules"][0]["resources"], serde_json::json!(["pods"]));
    }
}

#[test]
fn config_for_a_revision_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = self_signed(dir.path());
    let json = run_ok(
        ferry()
            .args(["webhook", "config", "-o", "json", "--revision", "canary"])
            .args(["--namespace", "mesh", "--service", "ferry-control-canary"])
            .args(["--path", "/inject/cluster/east/net/net1", "--ca-bundle"])
            .arg(&ca),
    );
    let doc: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["metadata"]["name"], "ferry-sidecar-injector-canary");
    let hooks = doc["webhooks"].as_array().unwrap();
    assert_eq!(
        hooks.len(),
        2,
        "non-default revisions get only the rev. entries"
    );
    assert_eq!(
        hooks[0]["namespaceSelector"]["matchExpressions"][0],
        serde_json::json!({"key": "istio.io/rev", "operator": "In", "values": ["canary"]})
    );
    assert_eq!(hooks[0]["clientConfig"]["service"]["namespace"], "mesh");
    assert_eq!(
        hooks[0]["clientConfig"]["service"]["path"],
        "/inject/cluster/east/net/net1"
    );

    let auto = run_ok(
        ferry()
            .args([
                "webhook",
                "config",
                "-o",
                "json",
                "--enable-namespaces-by-default",
            ])
            .arg("--ca-bundle")
            .arg(&ca),
    );
    let doc: Value = serde_json::from_str(&auto).unwrap();
    assert_eq!(doc["webhooks"].as_array().unwrap().len(), 5);
}

#[test]
fn config_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = self_signed(dir.path());
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "hello").unwrap();
    for path in [dir.path().join("missing.pem"), junk, key] {
        let out = ferry()
            .args(["webhook", "config", "--ca-bundle"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&*path.to_string_lossy()), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn serve_flags_are_checked() {
    let out = ferry().arg("webhook").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert"));
    let out = ferry()
        .args([
            "webhook",
            "--tls-cert",
            "a",
            "--tls-key",
            "b",
            "--native-sidecars",
            "maybe",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("native-sidecars"));
}

#[test]
fn serve_refuses_an_unusable_key_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    std::fs::write(&key, "not a key").unwrap();
    let out = ferry()
        .args([
            "webhook",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
        ])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tls.key"));
}

#[test]
fn serve_reports_its_address_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let mut child = ferry()
        .args([
            "webhook",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let listening = loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.contains("webhook listening") => break line,
            Ok(_) => continue,
            Err(e) => {
                let _ = child.kill();
                panic!("no 'webhook listening' line: {e}");
            }
        }
    };
    let addr = listening
        .split_whitespace()
        .find_map(|w| w.strip_prefix("https="))
        .expect("the log line names the address");
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    assert_ne!(addr.port(), 0);
    std::net::TcpStream::connect(addr).expect("the HTTPS port accepts connections");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("ferry webhook did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
}
