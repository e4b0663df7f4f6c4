//! `ferry validate` on Telemetry tracing settings: custom tags (exactly one of `literal`,
//! `environment`, `header`, with the names they need) and `match.mode`, each error naming the
//! file, line, resource and field.

use std::path::PathBuf;
use std::process::{Command, Output};

/// A file in a fresh directory, removed (with the directory) when dropped.
struct TempFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let dir = std::env::temp_dir().join(format!(
            "ferry-validate-telemetry-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        TempFile { dir, path }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn validate(path: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["validate", "-f"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ferry: {e}"))
}

const GOOD: &str = r#"apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: tags
  namespace: shop
spec:
  tracing:
  - match:
      mode: CLIENT
    providers:
    - name: otel
    customTags:
      team:
        literal:
          value: shop
      zone:
        environment:
          name: ISTIO_META_CLUSTER_ID
          defaultValue: unknown
      user:
        header:
          name: x-user
  - match:
      mode: SERVER
    disableSpanReporting: true
"#;

const BAD: &str = r#"apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: tags
  namespace: shop
spec:
  tracing:
  - match:
      mode: CLIENTS
    customTags:
      none: {}
      two:
        literal:
          value: a
        header:
          name: x-a
      nolit:
        literal: {}
      noenv:
        environment:
          defaultValue: d
      nohdr:
        header:
          name: ""
      badhdr:
        header:
          name: "x user"
"#;

#[test]
fn valid_custom_tags_and_modes_pass() {
    let f = TempFile::new("good", GOOD);
    let out = validate(&f.path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("0 errors"), "{stdout}");
}

#[test]
fn custom_tag_and_match_errors_name_file_resource_and_field() {
    let f = TempFile::new("bad", BAD);
    let out = validate(&f.path);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let name = f.path.display().to_string();
    let want = [
        ("spec.tracing[0].match.mode", "CLIENTS"),
        (
            "spec.tracing[0].customTags.none",
            "exactly one of literal, environment or header must be set (0 are)",
        ),
        (
            "spec.tracing[0].customTags.two",
            "exactly one of literal, environment or header must be set (2 are)",
        ),
        (
            "spec.tracing[0].customTags.nolit.literal.value",
            "a literal tag needs a value",
        ),
        (
            "spec.tracing[0].customTags.noenv.environment.name",
            "an environment tag needs the name of an environment variable",
        ),
        (
            "spec.tracing[0].customTags.nohdr.header.name",
            "a header tag needs the name of a request header",
        ),
        (
            "spec.tracing[0].customTags.badhdr.header.name",
            "\"x user\" is not an HTTP header name",
        ),
    ];
    for (field, message) in want {
        let head = format!("error: {name}:");
        let part = format!(": Telemetry/shop/tags: {field}: ");
        let found = stdout
            .lines()
            .any(|l| l.starts_with(&head) && l.contains(&part) && l.contains(message));
        assert!(found, "missing `{head}..{part}{message}` in\n{stdout}");
    }
}
