//! `ferry inject` as a user runs it: files and stdin, `-o`, skip messages, errors that name
//! the file, line, resource and annotation, and no panic on arbitrary input.

use proptest::prelude::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn ferry(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ferry starts");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.unwrap_or_default().as_bytes()).ok();
    }
    child.wait_with_output().expect("ferry finishes")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn seed() -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/redis-statefulset/redis.yaml");
    std::fs::read_to_string(path).expect("seed example")
}

#[test]
fn stdin_to_stdout_keeps_every_document_in_order() {
    let out = ferry(&["inject", "-f", "-"], Some(&seed()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let service = stdout.find("kind: Service").expect("service kept");
    let statefulset = stdout.find("kind: StatefulSet").expect("statefulset kept");
    assert!(service < statefulset);
    assert!(stdout.contains("name: ferry-proxy") && stdout.contains("name: ferry-init"));
    assert_eq!(
        stdout.matches("\n---\n").count() + usize::from(stdout.starts_with("---")),
        2
    );
    assert!(text(&out.stderr).contains("injected: StatefulSet/default/redis"));
}

#[test]
fn output_file_and_native_flag() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dir.path().join("redis.yaml");
    std::fs::write(&input, seed()).expect("write");
    let output = dir.path().join("out.yaml");
    let out = ferry(
        &[
            "inject",
            "-f",
            input.to_str().expect("utf-8"),
            "-o",
            output.to_str().expect("utf-8"),
            "--native-sidecars=false",
            "--proxy-image",
            "registry.local/ferry:dev",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    let written = std::fs::read_to_string(&output).expect("output written");
    assert!(written.contains("image: registry.local/ferry:dev"));
    assert!(
        !written.contains("restartPolicy: Always"),
        "classic sidecar requested"
    );
}

#[test]
fn skips_are_explained_on_stderr() {
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: tools\n  labels:\n    sidecar.istio.io/inject: \"false\"\nspec:\n  containers:\n  - name: c\n    image: busybox\n";
    let out = ferry(&["inject", "-f", "-"], Some(manifest));
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("Skipping injection for Pod/default/tools"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("ferry-proxy"));
}

#[test]
fn invalid_annotation_names_file_line_resource_and_annotation() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dir.path().join("bad.yaml");
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  template:\n    metadata:\n      annotations:\n        traffic.sidecar.istio.io/includeInboundPorts: \"80,http\"\n    spec:\n      containers:\n      - name: web\n        image: web\n";
    std::fs::write(&input, manifest).expect("write");
    let out = ferry(&["inject", "-f", input.to_str().expect("utf-8")], None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("bad.yaml:6"), "{err}");
    assert!(err.contains("Deployment/shop/web"), "{err}");
    assert!(
        err.contains("traffic.sidecar.istio.io/includeInboundPorts"),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing is written when a document fails"
    );
}

#[test]
fn yaml_syntax_error_names_file_and_line() {
    let out = ferry(
        &["inject", "-f", "-"],
        Some("apiVersion: v1\nkind: Pod\nmetadata: [unclosed\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("<stdin>:"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = ferry(&["inject", "-f", "/nonexistent/ferry.yaml"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/ferry.yaml"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn arbitrary_input_never_panics(
        head in prop_oneof![
            Just("apiVersion: v1\nkind: Pod\n"),
            Just("apiVersion: apps/v1\nkind: Deployment\n"),
            Just("apiVersion: v1\nkind: List\nitems:\n"),
            Just(""),
        ],
        body in "[ -~\n\t]{0,200}",
    ) {
        let out = ferry(&["inject", "-f", "-"], Some(&format!("{head}{body}")));
        prop_assert!(matches!(out.status.code(), Some(0) | Some(1)), "exit {:?}: {}", out.status.code(), text(&out.stderr));
        prop_assert!(!text(&out.stderr).contains("panicked"));
    }
}
