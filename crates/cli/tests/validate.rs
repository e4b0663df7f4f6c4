//! End-to-end tests of `ferry validate`.

use std::path::PathBuf;
use std::process::{Command, Output};

fn samples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures/istio-samples")
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/validate")
        .join(name)
}

fn ferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("validate")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ferry: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn istio_samples_are_valid() {
    let dir = samples();
    let out = ferry(&["-f", &dir.to_string_lossy()]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(": 0 errors, 2 warnings"), "{stdout}");
    // The Gateways are reported as not checked, on stderr.
    assert_eq!(
        stderr
            .matches("Gateway is not checked by Ferry yet")
            .count(),
        2,
        "{stderr}"
    );
}

#[test]
fn single_sample_files_are_valid() {
    for name in [
        "virtual-service-reviews-50-v3.yaml",
        "destination-rule-all-mtls.yaml",
        "tcp-echo-20-v2.yaml",
    ] {
        let path = samples().join(name);
        let out = ferry(&["--filename", &path.to_string_lossy()]);
        assert!(out.status.success(), "{name}: {}", text(&out.stdout));
    }
}

#[test]
fn misspelt_field_gives_did_you_mean_with_line() {
    let path = fixture("misspelt-subset.yaml");
    let out = ferry(&["-f", &path.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let want = format!(
        "error: {}:12: VirtualService/default/reviews: spec.http[0].route[0].destination.subet: unknown field `subet`, did you mean `subset`?",
        path.display()
    );
    assert!(stdout.contains(&want), "{stdout}");
    assert!(stdout.contains("1 error"), "{stdout}");
}

#[test]
fn every_error_of_a_file_is_listed() {
    let path = fixture("many-errors.yaml");
    let out = ferry(&["-f", &path.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let name = path.display().to_string();
    let want = [
        (
            13,
            "VirtualService/prod/ratings: spec.http[0].match[0].uri.regex",
            "invalid regular expression",
        ),
        (
            14,
            "VirtualService/prod/ratings: spec.http[0].route",
            "sum to 0",
        ),
        (
            23,
            "VirtualService/prod/ratings: spec.http[0].timeout",
            "invalid duration `5sec`",
        ),
        (
            28,
            "VirtualService/prod/ratings: spec.http[0].fault.delay.percentage.value",
            "between 0 and 100",
        ),
        (
            41,
            "DestinationRule/prod/ratings: spec.subsets[1].name",
            "duplicate subset name `v1`",
        ),
        (
            53,
            "PeerAuthentication/prod/db: spec.portLevelMtls",
            "requires a workload selector",
        ),
    ];
    for (line, prefix, message) in want {
        let head = format!("error: {name}:{line}: {prefix}: ");
        let found = stdout
            .lines()
            .any(|l| l.starts_with(&head) && l.contains(message));
        assert!(found, "missing `{head}...{message}` in\n{stdout}");
    }
    assert!(stdout.contains(": 6 errors"), "{stdout}");
}

#[test]
fn yaml_syntax_error_names_file_and_line() {
    let path = fixture("syntax-error.yaml");
    let out = ferry(&["-f", &path.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let head = format!("error: {}:7: YAML syntax error", path.display());
    assert!(stdout.contains(&head), "{stdout}");
}

#[test]
fn stdin_and_json_output() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["validate", "-f", "-", "-o", "json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run ferry: {e}"));
    let manifest = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: d\n  trafficPolicy:\n    connectionPool:\n      tcp: {connectTimeout: -1s}\n";
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(manifest.as_bytes())
            .unwrap_or_else(|e| panic!("write: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait: {e}"));
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("json: {e}"));
    let err = &json["errors"][0];
    assert_eq!(err["source"], "<stdin>");
    assert_eq!(err["line"], 8);
    assert_eq!(err["resource"], "DestinationRule/default/d");
    assert_eq!(
        err["field"],
        "spec.trafficPolicy.connectionPool.tcp.connectTimeout"
    );
    assert_eq!(err["severity"], "error");
}

#[test]
fn missing_file_is_an_error() {
    let out = ferry(&["-f", "/nonexistent/ferry.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("/nonexistent/ferry.yaml: cannot read"));
}
