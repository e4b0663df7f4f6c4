//! Everything Ferry injects must be accepted by the API server: the injected manifests
//! (`ferry inject -f`) and the pods patched by the webhook pass Kubernetes' official schemas
//! (`kubernetes-validate --strict`, PyPI), for Kubernetes 1.33 and the newest it knows.
//! CI installs the validator; outside CI the test is skipped with a notice when it is absent.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

fn validator_available() -> bool {
    let found = Command::new("kubernetes-validate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "kubernetes-validate is not installed (pip install kubernetes-validate)"
        );
        eprintln!("skipping: kubernetes-validate is not installed");
    }
    found
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ferry_inject(file: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["inject", "--quiet", "-f"])
        .arg(file)
        .output()
        .expect("ferry runs");
    assert!(
        out.status.success(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Splits documents into one resource per file, expanding `List` items, which the
/// validator has no schema for.
fn resources(yaml: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for doc in ferry_model::parse_documents("output", yaml).expect("ferry writes valid YAML") {
        match doc.value["kind"].as_str() {
            Some("List") => out.extend(doc.value["items"].as_array().cloned().unwrap_or_default()),
            _ => out.push(doc.value),
        }
    }
    out
}

fn validate(resources: &[Value], what: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut files = Vec::new();
    for (i, r) in resources.iter().enumerate() {
        // batch/v1beta1 CronJob is passed through unchanged and no longer has a schema.
        if r["apiVersion"] == "batch/v1beta1" {
            continue;
        }
        let path = dir.path().join(format!("{i}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(r).expect("json")).expect("write");
        files.push(path);
    }
    for version in ["1.33.0", "1.37.0"] {
        let out = Command::new("kubernetes-validate")
            .args(["--strict", "--quiet", "-k", version])
            .args(&files)
            .output()
            .expect("kubernetes-validate runs");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && !report.contains("ERROR"),
            "{what} (Kubernetes {version}):\n{report}"
        );
    }
}

#[test]
fn injected_manifests_pass_the_official_schemas() {
    if !validator_available() {
        return;
    }
    let root = workspace();
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(root.join("crates/inject/tests/golden"))
        .expect("golden dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.ends_with(".yaml") && !name.ends_with(".injected.yaml")
        })
        .collect();
    inputs.push(root.join("examples/redis-statefulset/redis.yaml"));
    inputs.push(root.join("examples/redis-statefulset/client.yaml"));
    inputs.sort();
    for input in inputs {
        validate(
            &resources(&ferry_inject(&input)),
            &input.display().to_string(),
        );
    }
}

#[test]
fn webhook_patched_pod_passes_the_official_schemas() {
    if !validator_available() {
        return;
    }
    use base64::Engine;
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "redis-0", "generateName": "redis-", "namespace": "default",
            "labels": { "app": "redis", "statefulset.kubernetes.io/pod-name": "redis-0", "apps.kubernetes.io/pod-index": "0" },
            "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "StatefulSet", "name": "redis", "uid": "9d3c8a1e-0000-4000-8000-000000000001", "controller": true, "blockOwnerDeletion": true }]
        },
        "spec": {
            "hostname": "redis-0", "subdomain": "redis",
            "containers": [{
                "name": "redis", "image": "redis:alpine",
                "ports": [{ "containerPort": 6379, "protocol": "TCP" }],
                "readinessProbe": { "tcpSocket": { "port": 6379 }, "periodSeconds": 5 },
                "volumeMounts": [{ "name": "kube-api-access-abcde", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true }]
            }],
            "volumes": [{ "name": "kube-api-access-abcde", "projected": { "defaultMode": 420, "sources": [
                { "serviceAccountToken": { "expirationSeconds": 3607, "path": "token" } },
                { "configMap": { "name": "kube-root-ca.crt", "items": [{ "key": "ca.crt", "path": "ca.crt" }] } }
            ] } }]
        }
    });
    let body = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": { "uid": "1", "kind": { "group": "", "version": "v1", "kind": "Pod" }, "operation": "CREATE", "namespace": "default", "object": pod }
    });
    let cfg = ferry_inject::InjectConfig::default();
    let answer =
        ferry_inject::admission::review(body.to_string().as_bytes(), &cfg, &Default::default())
            .expect("answered");
    let response: Value = serde_json::from_slice(&answer.body).expect("json");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(response["response"]["patch"].as_str().expect("patch"))
        .expect("base64");
    let patch: json_patch::Patch = serde_json::from_slice(&raw).expect("patch");
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch).expect("applies");
    validate(&[patched], "webhook-patched redis-0");
}
