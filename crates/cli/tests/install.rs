//! `ferry install`, `ferry uninstall` and `ferry version` as a user runs them: every rendered
//! object passes Kubernetes' official schemas (`kubernetes-validate --strict`, for 1.33 and the
//! newest version it knows) for several value sets; bad values and `--set` arguments fail
//! with a message naming the file or argument and the key; uninstall prints its plan. Against
//! the fake API server: `install --apply`/`uninstall --apply`, the control plane's bootstrap of
//! an installed cluster, and an injected pod's sidecar started as the kubelet would, which gets
//! its identity and configuration from that control plane.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn ferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .output()
        .expect("ferry runs")
}

fn stdout_of(args: &[&str]) -> String {
    let out = ferry(args);
    assert!(
        out.status.success(),
        "ferry {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn validator_available() -> bool {
    let found = Command::new("kubernetes-validate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "kubernetes-validate is not installed (scripts/install-test-deps.sh)"
        );
        eprintln!("skipping: kubernetes-validate is not installed");
    }
    found
}

/// Writes each document to its own file and runs the validator on all of them.
pub fn validate(yaml: &str, what: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut files = Vec::new();
    for (i, doc) in ferry_model::parse_documents(what, yaml)
        .expect("valid YAML")
        .into_iter()
        .enumerate()
    {
        let path = dir.path().join(format!("{i}.json"));
        std::fs::write(&path, serde_json::to_vec(&doc.value).expect("json")).expect("write");
        files.push(path);
    }
    assert!(!files.is_empty(), "{what}: nothing rendered");
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

/// Value sets the tests render: the defaults, a `--set` mix, and a values file using every
/// optional field.
pub const VALUES_FILE: &str = r#"
image:
  repository: registry.example.invalid/mesh/ferry
  tag: "0.1.0-rc1"
  pullPolicy: Always
controlPlane:
  replicas: 3
  minAvailable: 2
  logLevel: "ferry_control=debug,info"
  resources:
    requests: {cpu: 250m, memory: 256Mi, ephemeral-storage: 1Gi}
    limits: {cpu: "2", memory: 1Gi}
  nodeSelector: {kubernetes.io/os: linux, node-role.example/mesh: "true"}
  tolerations:
  - {key: dedicated, operator: Equal, value: mesh, effect: NoSchedule}
  - {operator: Exists, effect: NoExecute, tolerationSeconds: 300}
  priorityClassName: system-cluster-critical
webhook:
  timeoutSeconds: 3
  enableNamespacesByDefault: true
mesh:
  trustDomain: example.org
  proxyImage: registry.example.invalid/mesh/ferry-proxy:0.1.0
  nativeSidecars: false
  defaultPeerAuthenticationMode: STRICT
crds:
  istio: false
  redisPolicy: true
"#;

/// `ferry install` arguments of each value set (the values file at `file`).
pub fn value_sets(file: &Path) -> Vec<Vec<String>> {
    let strings = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        vec![],
        strings(&[
            "--set",
            "controlPlane.replicas=1",
            "--set",
            "controlPlane.minAvailable=0",
            "--set",
            "image.tag=dev",
            "--set",
            "crds.redisPolicy=false",
            "--set",
            "mesh.defaultPeerAuthenticationMode=DISABLE",
        ]),
        vec!["-f".into(), file.display().to_string()],
        vec![
            "-f".into(),
            file.display().to_string(),
            "--set".into(),
            "controlPlane.resources.limits.cpu=500m".into(),
            "--set".into(),
            "crds.istio=true".into(),
        ],
    ]
}

#[test]
fn rendered_installations_pass_the_official_schemas() {
    if !validator_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.yaml");
    std::fs::write(&file, VALUES_FILE).unwrap();
    for args in value_sets(&file) {
        let mut full = vec!["install"];
        full.extend(args.iter().map(String::as_str));
        let yaml = stdout_of(&full);
        validate(&yaml, &format!("ferry {}", full.join(" ")));
    }
}

#[test]
fn bad_values_name_the_source_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "controlPlane:\n  replicas: 2\n  replica: 3\n").unwrap();
    let cases: Vec<(Vec<String>, Vec<String>)> = vec![
        (
            vec!["-f".into(), file.display().to_string()],
            vec![
                format!("{}:3", file.display()),
                "controlPlane.replica".into(),
            ],
        ),
        (
            vec!["--set".into(), "controlPlane.replicas=lots".into()],
            vec![
                "--set controlPlane.replicas=lots".into(),
                "controlPlane.replicas".into(),
            ],
        ),
        (
            vec![
                "--set".into(),
                "mesh.defaultPeerAuthenticationMode=STRICTER".into(),
            ],
            vec![
                "mesh.defaultPeerAuthenticationMode".into(),
                "STRICTER".into(),
            ],
        ),
        (
            vec!["--set".into(), "webhook.timeoutSeconds=45".into()],
            vec!["webhook.timeoutSeconds".into(), "45".into()],
        ),
        (vec!["--set".into(), "=3".into()], vec!["--set =3".into()]),
        (
            vec!["-f".into(), "/definitely/missing.yaml".into()],
            vec!["/definitely/missing.yaml".into()],
        ),
        (
            vec!["--namespace".into(), "Not_A_Namespace".into()],
            vec!["Not_A_Namespace".into()],
        ),
    ];
    for (args, wanted) in cases {
        let mut full = vec!["install"];
        full.extend(args.iter().map(String::as_str));
        let out = ferry(&full);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{full:?} succeeded");
        assert!(out.stdout.is_empty(), "{full:?} printed objects");
        assert!(!stderr.contains("panicked"), "{full:?}: {stderr}");
        for w in wanted {
            assert!(stderr.contains(&w), "{full:?}: {stderr} should name {w}");
        }
    }
}

#[test]
fn install_output_is_stable_and_uninstall_prints_its_plan() {
    // Same values, same bytes: `ferry install | kubectl apply -f -` twice changes nothing.
    assert_eq!(stdout_of(&["install"]), stdout_of(&["install"]));
    let plan = stdout_of(&["uninstall"]);
    let lines: Vec<&str> = plan.lines().map(str::trim).collect();
    let first = lines
        .iter()
        .position(|l| l.starts_with("MutatingWebhookConfiguration/"));
    let namespace = lines
        .iter()
        .position(|l| l.starts_with("Namespace/ferry-system"));
    assert!(first.is_some() && namespace > first, "{plan}");
    assert!(!plan.contains("CustomResourceDefinition"), "{plan}");
    let purge = stdout_of(&["uninstall", "--purge"]);
    assert!(purge.contains("CustomResourceDefinition/virtualservices.networking.istio.io"));
    assert!(purge.contains("ferry-ca-root-cert"));
}

#[test]
fn version_reports_the_client_and_an_unreachable_control_plane() {
    let out = stdout_of(&["version", "--client"]);
    assert_eq!(out.trim(), format!("client: {}", env!("CARGO_PKG_VERSION")));
    // Nothing listens on port 9 of loopback: the answer says so instead of failing.
    let out = stdout_of(&["version", "--control-plane", "127.0.0.1:9"]);
    assert!(out.contains("control plane: unavailable"), "{out}");
}

#[test]
fn install_yaml_parses_back_to_the_library_objects() {
    let yaml = stdout_of(&["install"]);
    let docs: Vec<Value> = ferry_model::parse_documents("install", &yaml)
        .unwrap()
        .into_iter()
        .map(|d| d.value)
        .collect();
    let lib: Vec<Value> =
        ferry_control::install::render(&ferry_control::install::Values::default(), "ferry-system")
            .into_iter()
            .map(|m| m.0)
            .collect();
    assert_eq!(docs.len(), lib.len());
    for (d, l) in docs.iter().zip(&lib) {
        assert_eq!(normalize(d), normalize(l));
    }
}

/// Numbers compared as doubles (YAML reads `0.0` back as `0`).
pub fn normalize(v: &Value) -> Value {
    match v {
        Value::Number(n) => n.as_f64().map(Value::from).unwrap_or(Value::Null),
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), normalize(v))).collect())
        }
        other => other.clone(),
    }
}

// ---- The Helm chart (deploy/helm/ferry) ----

fn workspace() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chart() -> std::path::PathBuf {
    workspace().join("deploy/helm/ferry")
}

/// Whether generated files may be rewritten (`FERRY_BLESS=1`).
fn bless() -> bool {
    std::env::var_os("FERRY_BLESS").is_some()
}

/// Checks that `path` holds `want` (compared as parsed YAML/JSON), or rewrites it when
/// blessing.
fn generated_file(path: &Path, want: &Value, header: &str) {
    if bless() {
        let text = if path.extension().is_some_and(|e| e == "json") {
            format!("{}\n", serde_json::to_string_pretty(want).unwrap())
        } else {
            format!("{header}{}", serde_yaml_ng::to_string(want).unwrap())
        };
        std::fs::write(path, text).unwrap();
        return;
    }
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (FERRY_BLESS=1 writes it)", path.display()));
    let docs = ferry_model::parse_documents(&path.display().to_string(), &text).unwrap();
    assert_eq!(
        normalize(&docs[0].value),
        normalize(want),
        "{} is stale: run FERRY_BLESS=1 cargo test -p ferry-cli --test install",
        path.display()
    );
}

#[test]
fn chart_files_generated_from_code_are_current() {
    use ferry_control::install::{self, Values};
    // values.schema.json from the values' Rust types.
    generated_file(
        &chart().join("values.schema.json"),
        &install::values::json_schema(),
        "",
    );
    // The CRDs from the model.
    for m in install::render(&Values::default(), install::DEFAULT_NAMESPACE) {
        if m.kind() == "CustomResourceDefinition" {
            generated_file(
                &chart().join(format!("files/crds/{}.yaml", m.name())),
                &m.0,
                "# Generated from crates/model by `FERRY_BLESS=1 cargo test -p ferry-cli --test install`; do not edit.\n",
            );
        }
    }
    // values.yaml is the defaults, and the chart's appVersion is Ferry's version.
    let text = std::fs::read_to_string(chart().join("values.yaml")).unwrap();
    let values = ferry_model::parse_documents("values.yaml", &text).unwrap();
    assert_eq!(
        values[0].value,
        serde_json::to_value(Values::default()).unwrap()
    );
    let text = std::fs::read_to_string(chart().join("Chart.yaml")).unwrap();
    let meta = &ferry_model::parse_documents("Chart.yaml", &text).unwrap()[0].value;
    assert_eq!(meta["appVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(meta["version"], env!("CARGO_PKG_VERSION"));
}

/// The chart rendered by the real Helm library; `None` when helm-python-sdk is missing
/// (outside CI).
fn helm(namespace: &str, args: &[String]) -> Option<Value> {
    let out = Command::new("python3")
        .arg(workspace().join("deploy/helm/test/render.py"))
        .arg(chart())
        .arg(namespace)
        .args(args)
        .output()
        .expect("python3 runs");
    if out.status.code() == Some(3) {
        assert!(
            std::env::var_os("CI").is_none(),
            "helm-python-sdk is not installed (scripts/install-test-deps.sh)"
        );
        eprintln!("skipping: helm-python-sdk is not installed");
        return None;
    }
    assert!(
        out.status.success(),
        "render.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("render.py prints JSON"))
}

/// Objects by `Kind/namespace/name`.
fn by_name(yaml: &str, what: &str) -> std::collections::BTreeMap<String, Value> {
    ferry_model::parse_documents(what, yaml)
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .into_iter()
        .map(|d| {
            let v = d.value;
            let key = format!(
                "{}/{}/{}",
                v["kind"].as_str().unwrap_or_default(),
                v["metadata"]["namespace"].as_str().unwrap_or_default(),
                v["metadata"]["name"].as_str().unwrap_or_default()
            );
            (key, normalize(&v))
        })
        .collect()
}

#[test]
fn helm_chart_renders_what_ferry_install_prints() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.yaml");
    std::fs::write(&file, VALUES_FILE).unwrap();
    let validate_too = validator_available();
    for (i, args) in value_sets(&file).into_iter().enumerate() {
        let namespace = if i == 1 { "mesh" } else { "ferry-system" };
        let Some(helm) = helm(namespace, &args) else {
            return;
        };
        assert_eq!(helm["schema_error"], Value::Null, "{args:?}");
        let lint = &helm["lint"];
        assert_eq!(lint["errors"], serde_json::json!([]), "{args:?}: {lint}");
        assert_eq!(lint["messages"], serde_json::json!([]), "{args:?}: {lint}");
        let helm_yaml = helm["manifests"].as_str().unwrap();
        let mut full = vec![
            "install".to_string(),
            "--namespace".into(),
            namespace.into(),
        ];
        full.extend(args.iter().cloned());
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        let ours = by_name(&stdout_of(&full), "ferry install");
        let theirs = by_name(helm_yaml, "helm template");
        // Helm leaves the namespace to `--create-namespace`.
        let ours: std::collections::BTreeMap<_, _> = ours
            .into_iter()
            .filter(|(k, _)| !k.starts_with("Namespace/"))
            .collect();
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "{args:?}"
        );
        for (key, object) in &ours {
            assert_eq!(
                object, &theirs[key],
                "{key} differs between ferry install and helm template ({args:?})"
            );
        }
        if validate_too {
            validate(helm_yaml, &format!("helm template {args:?}"));
        }
    }
}

#[test]
fn helm_refuses_what_ferry_install_refuses() {
    for set in [
        "controlPlane.replicas=lots",
        "controlPlane.replica=3",
        "mesh.defaultPeerAuthenticationMode=STRICTER",
        "webhook.timeoutSeconds=45",
        "image.pullPolicy=Sometimes",
        "controlPlane.resources.requests.cpu=lots",
    ] {
        let args = vec!["--set".to_string(), set.to_string()];
        let Some(helm) = helm("ferry-system", &args) else {
            return;
        };
        assert!(
            helm["schema_error"].is_string(),
            "helm accepted --set {set}"
        );
        let out = ferry(&["install", "--set", set]);
        assert!(!out.status.success(), "ferry install accepted --set {set}");
    }
}

#[test]
fn grafana_dashboard_uses_metrics_the_proxy_exports() {
    let path = workspace().join("deploy/grafana/ferry-dashboard.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("dashboard JSON");
    let registered =
        std::fs::read_to_string(workspace().join("crates/proxy/src/telemetry/metrics.rs")).unwrap();
    let metric = regex_lite_metric_names(&dashboard);
    assert!(metric.iter().any(|m| m.starts_with("istio_requests")));
    assert!(metric.iter().any(|m| m.starts_with("ferry_redis_commands")));
    for name in metric {
        let family = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_total")
            .to_string();
        assert!(
            registered.contains(&format!("\"{family}\"")),
            "{name} is not a metric the proxy registers"
        );
    }
}

/// Every `istio_*` / `ferry_*` identifier in the dashboard's queries.
fn regex_lite_metric_names(dashboard: &Value) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("istio_") || word.starts_with("ferry_") {
                    out.insert(word.to_string());
                }
            }
        }
    }
    out
}

#[test]
fn the_deployment_runs_flags_the_binary_accepts() {
    let objects =
        ferry_control::install::render(&ferry_control::install::Values::default(), "ferry-system");
    let deployment = objects
        .iter()
        .find(|m| m.kind() == "Deployment")
        .expect("a Deployment");
    let args: Vec<&str> = deployment.0["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "control-plane");
    // clap parses every argument before acting on --help: an unknown flag fails.
    let mut with_help = args.clone();
    with_help.push("--help");
    let out = ferry(&with_help);
    assert!(
        out.status.success(),
        "ferry {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- ferry install --apply / ferry uninstall --apply against the fake API server ----

#[path = "../../control/tests/support/kube_api/mod.rs"]
mod kube_api;

/// Writes a kubeconfig for the fake API server into `dir`.
fn kubeconfig_for(api: &kube_api::FakeApi, dir: &Path) -> std::path::PathBuf {
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"{}\"}}\n\
             users:\n- name: me\n  user: {{}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: me}}\n\
             current-context: fake\n",
            api.url()
        ),
    )
    .unwrap();
    kubeconfig
}

/// Runs ferry with `KUBECONFIG` pointing at the fake API server, off the async runtime.
async fn ferry_on(api: &kube_api::FakeApi, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig_for(api, dir.path());
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(&args)
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .expect("ferry runs");
        drop(dir);
        out
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_and_uninstall_apply_through_the_api() {
    let api = kube_api::FakeApi::start().await.unwrap();
    let out = ferry_on(
        &api,
        &["install", "--set", "controlPlane.replicas=3", "--apply"],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Deployment/ferry-system/ferry-control: applied"),
        "{stdout}"
    );
    let deployment = api
        .get("Deployment", "ferry-system", "ferry-control")
        .unwrap();
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert!(api.get("Namespace", "", "ferry-system").is_some());
    assert!(
        api.get("MutatingWebhookConfiguration", "", "ferry-sidecar-injector")
            .is_some()
    );
    // Again, as an upgrade.
    let out = ferry_on(&api, &["install", "--apply"]).await;
    assert!(out.status.success());
    assert_eq!(
        api.get("Deployment", "ferry-system", "ferry-control")
            .unwrap()["spec"]["replicas"],
        2
    );
    // The control plane's version through the API server's service proxy: the fake has no
    // proxy, so it is reported unavailable rather than failing.
    let out = ferry_on(&api, &["version"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("control plane: unavailable"),
        "{stdout}"
    );

    let out = ferry_on(&api, &["uninstall", "--apply"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.lines().next().is_some_and(
            |l| l.starts_with("MutatingWebhookConfiguration/ferry-sidecar-injector: deleted")
        ),
        "{stdout}"
    );
    assert!(
        api.get("Deployment", "ferry-system", "ferry-control")
            .is_none()
    );
    assert!(api.get("Namespace", "", "ferry-system").is_none());
    assert!(
        api.get("CustomResourceDefinition", "", "redispolicies.ferry.dev")
            .is_some()
    );

    // No cluster at all: a clear error, no panic.
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["install", "--apply"])
        .env("KUBECONFIG", "/definitely/missing/kubeconfig")
        .env("HOME", "/definitely/missing")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.starts_with("error:") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// `ferry control-plane --kube` with the CA in a Secret, run as the installed Deployment runs
/// it (`POD_NAMESPACE` its namespace) against the fake API server, on free loopback ports;
/// killed when dropped. Its log goes to a file ([`ControlPlane::log`]).
struct ControlPlane {
    child: std::process::Child,
    dir: tempfile::TempDir,
    webhook: u16,
    secure: u16,
    monitoring: u16,
}

impl ControlPlane {
    fn start(api: &kube_api::FakeApi, namespace: &str) -> ControlPlane {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = kubeconfig_for(api, dir.path());
        let (webhook, secure, monitoring) = (free_port(), free_port(), free_port());
        let addr = |p: u16| format!("127.0.0.1:{p}");
        let log = std::fs::File::create(dir.path().join("control-plane.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["control-plane", "--kube"])
            .args(["--ca-secret", &format!("{namespace}/ferry-ca")])
            .args(["--ca-dir", &dir.path().join("ca").display().to_string()])
            .args(["--grpc-addr", &addr(free_port())])
            .args(["--monitoring-addr", &addr(monitoring)])
            .args(["--ca-addr", &addr(secure)])
            .args(["--webhook-addr", &addr(webhook)])
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAMESPACE", namespace)
            .env("POD_NAME", "ferry-control-test")
            .env("RUST_LOG", "info")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        ControlPlane {
            child,
            dir,
            webhook,
            secure,
            monitoring,
        }
    }

    /// What the control plane logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("control-plane.log")).unwrap_or_default()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to 30 s for `done`; false if it never held.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    true
}

/// The webhook's `caBundle` (base64), once the leader patched it in.
fn ca_bundle(api: &kube_api::FakeApi) -> Option<String> {
    api.get("MutatingWebhookConfiguration", "", "ferry-sidecar-injector")
        .and_then(|w| {
            w["webhooks"][0]["clientConfig"]["caBundle"]
                .as_str()
                .map(str::to_string)
        })
        .filter(|b| !b.is_empty())
}

/// `ferry install --apply` into `namespace`, a namespace `shop` labelled for injection, and
/// the control plane, which has patched the webhook's `caBundle` and published the root
/// certificate in `shop`.
async fn installed_cluster(namespace: &str) -> (kube_api::FakeApi, ControlPlane) {
    let api = kube_api::FakeApi::start().await.unwrap();
    let out = ferry_on(&api, &["install", "--namespace", namespace, "--apply"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    api.apply(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "shop", "labels": {"istio-injection": "enabled"}}
    }));
    let cp = ControlPlane::start(&api, namespace);
    let published = || api.get("ConfigMap", "shop", "ferry-ca-root-cert").is_some();
    let ready = eventually(|| ca_bundle(&api).is_some() && published()).await;
    assert!(
        ready,
        "caBundle patched: {}, root certificate published: {}; control plane said:\n{}",
        ca_bundle(&api).is_some(),
        published(),
        cp.log()
    );
    (api, cp)
}

/// `ferry control-plane --kube` with the CA, after `ferry install --apply`: it creates the CA
/// Secret, serves the webhook with a certificate the patched `caBundle` verifies, takes the
/// leader Lease and publishes the root certificate in a namespace labelled for injection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_bootstraps_an_installed_cluster() {
    let (api, cp) = installed_cluster("ferry-system").await;
    assert!(
        api.get("Secret", "ferry-system", "ferry-ca").is_some(),
        "CA Secret"
    );
    assert!(
        api.get("Lease", "ferry-system", "ferry-control-leader")
            .is_some(),
        "Lease"
    );

    // The webhook's certificate verifies against the bundle the API server was given, for
    // the Service's name.
    use base64::Engine;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(ca_bundle(&api).unwrap())
        .unwrap();
    let ca_file = cp.dir.path().join("bundle.pem");
    std::fs::write(&ca_file, pem).unwrap();
    let webhook = cp.webhook;
    let out = tokio::task::spawn_blocking(move || {
        Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{webhook}")])
            .args(["-servername", "ferry-control.ferry-system.svc"])
            .args(["-verify_hostname", "ferry-control.ferry-system.svc"])
            .args([
                "-CAfile",
                &ca_file.display().to_string(),
                "-verify_return_error",
            ])
            .stdin(std::process::Stdio::null())
            .output()
    })
    .await
    .unwrap();
    let Ok(out) = out else {
        eprintln!("openssl is not installed; skipping the TLS check");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("Verify return code: 0 (ok)"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- An injected pod's sidecar, started as the kubelet would, against the control plane ----

/// `GET path` on a loopback port (HTTP/1.0, so the body is never chunked); `None` when
/// nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// The default `ferry proxy sidecar --help` shows for `flag`.
fn proxy_default(flag: &str) -> String {
    let help = stdout_of(&["proxy", "sidecar", "--help"]);
    let usage = format!("{flag} <");
    let at = help
        .find(&usage)
        .unwrap_or_else(|| panic!("{usage} in:\n{help}"));
    let after = &help[at..];
    let start = after.find("[default: ").expect("a default") + "[default: ".len();
    after[start..start + after[start..].find(']').expect("]")].to_string()
}

/// The container named `name` of a pod (init containers included).
fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|f| pod["spec"][*f].as_array())
        .flatten()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {pod:#}"))
}

/// The kubelet's view of one injected container: its volumes made into directories under
/// `root` (the projected token from the fake API server's issuer, ConfigMaps from the fake
/// API server, Downward-API files, empty dirs) and its environment resolved.
struct Kubelet<'a> {
    api: &'a kube_api::FakeApi,
    pod: &'a Value,
    root: std::path::PathBuf,
}

impl Kubelet<'_> {
    /// Where the container's `path` lives on the host: under the volume mounted there; a path
    /// on no volume is a failure (the container's filesystem is read-only).
    fn host_path(&self, container: &Value, path: &str) -> std::path::PathBuf {
        let mount = container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| Some((m["mountPath"].as_str()?, m["name"].as_str()?)))
            .filter(|(at, _)| path == *at || path.starts_with(&format!("{at}/")))
            .max_by_key(|(at, _)| at.len());
        let Some((at, volume)) = mount else {
            panic!("{path} is on no volume of the container: {container:#}");
        };
        let rest = path[at.len()..].trim_start_matches('/');
        self.root.join(volume).join(rest)
    }

    /// Fills every volume of the pod, as the kubelet does before starting containers.
    fn mount_volumes(&self) {
        let spec = &self.pod["spec"];
        let ns = self.pod["metadata"]["namespace"].as_str().unwrap();
        let name = self.pod["metadata"]["name"].as_str().unwrap();
        let sa = spec["serviceAccountName"].as_str().unwrap();
        for v in spec["volumes"].as_array().expect("volumes") {
            let dir = self.root.join(v["name"].as_str().unwrap());
            std::fs::create_dir_all(&dir).unwrap();
            if v.get("emptyDir").is_some() {
            } else if let Some(sources) = v["projected"]["sources"].as_array() {
                for source in sources {
                    let token = &source["serviceAccountToken"];
                    let audience = token["audience"].as_str().expect("a token audience");
                    let file = dir.join(token["path"].as_str().expect("a token path"));
                    std::fs::write(file, self.api.issue_token(ns, sa, name, &[audience])).unwrap();
                }
            } else if let Some(map) = v["configMap"]["name"].as_str() {
                let cm = self
                    .api
                    .get("ConfigMap", ns, map)
                    .unwrap_or_else(|| panic!("ConfigMap {ns}/{map} (the kubelet waits for it)"));
                for (key, value) in cm["data"].as_object().expect("data") {
                    std::fs::write(dir.join(key), value.as_str().unwrap()).unwrap();
                }
            } else if let Some(items) = v["downwardAPI"]["items"].as_array() {
                for item in items {
                    let field = item["fieldRef"]["fieldPath"].as_str().unwrap();
                    let key = field.trim_start_matches("metadata.");
                    let text: String = self.pod["metadata"][key]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| format!("{k}={v}\n"))
                        .collect();
                    std::fs::write(dir.join(item["path"].as_str().unwrap()), text).unwrap();
                }
            } else {
                panic!("a volume the test's kubelet does not know: {v:#}");
            }
        }
    }

    /// The container's environment, Downward-API references resolved.
    fn env(&self, container: &Value) -> Vec<(String, String)> {
        let field = |path: &str| -> String {
            let (top, rest) = path.split_once('.').unwrap();
            self.pod[top][rest]
                .as_str()
                .unwrap_or_else(|| panic!("{path} is unset in the pod"))
                .to_string()
        };
        container["env"]
            .as_array()
            .expect("env")
            .iter()
            .map(|e| {
                let name = e["name"].as_str().unwrap().to_string();
                let value = if let Some(v) = e["value"].as_str() {
                    v.to_string()
                } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                    field(path)
                } else if e["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu" {
                    // Whole cores, rounded up, as the kubelet exposes `limits.cpu`.
                    let cpu = container["resources"]["limits"]["cpu"].as_str().unwrap();
                    match cpu.strip_suffix('m') {
                        Some(milli) => milli.parse::<u64>().unwrap().div_ceil(1000).to_string(),
                        None => cpu.to_string(),
                    }
                } else {
                    panic!("an env entry the test's kubelet does not know: {e}");
                };
                (name, value)
            })
            .collect()
    }
}

/// The proxy process; killed when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The cluster path without a kubelet: a pod created in a namespace labelled for injection
/// is injected by the control plane's own webhook (called over HTTPS as the API server calls
/// it, trusting the published `caBundle`); its `ferry-proxy` container then runs as the
/// kubelet would start it: the injected args and environment (Downward API filled in), the
/// projected `istio-ca` token (which the fake API server's TokenReview authenticates for the
/// pod's service account) and the `ferry-ca-root-cert` ConfigMap the control plane published.
/// Only the ports move to free loopback ones, and the control plane's Service address is
/// dialled at the control plane's loopback port, the certificate still checked for the
/// Service's name. The control plane is installed outside `ferry-system`, so the names its
/// TLS port must carry are the installed namespace's. The proxy gets a certificate for its
/// service account, receives and ACKs its configuration (with the cluster's Service in it),
/// keeps it in the config cache and is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_sidecar_gets_its_identity_and_configuration_from_the_control_plane() {
    use base64::Engine;
    let namespace = "mesh";
    let (api, cp) = installed_cluster(namespace).await;
    let service_host = format!("ferry-control.{namespace}.svc");
    let mesh = api
        .get("ConfigMap", namespace, "ferry-mesh")
        .expect("the installed ferry-mesh ConfigMap");
    let configured = mesh["data"]["controlPlaneAddress"].as_str().unwrap();
    assert_eq!(configured, format!("{service_host}:15012"));

    // A plain pod of a Deployment, as the ReplicaSet controller creates it (the webhook sees
    // `generateName` only), and its Service.
    let plain = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": "web-7d4b9c5f6-", "namespace": "shop",
            "labels": {"app": "web", "pod-template-hash": "7d4b9c5f6"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "web-7d4b9c5f6", "uid": "rs-1", "controller": true}]
        },
        "spec": {
            "serviceAccountName": "web-sa",
            "containers": [{"name": "web", "image": "nginx",
                "ports": [{"containerPort": 8080, "name": "http"}]}]
        }
    });
    api.apply(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.40",
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }));

    // The API server calls the webhook at the Service's name, trusting the caBundle.
    let dir = tempfile::tempdir().unwrap();
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(ca_bundle(&api).unwrap())
        .unwrap();
    let bundle_file = dir.path().join("bundle.pem");
    std::fs::write(&bundle_file, bundle).unwrap();
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "review-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop", "operation": "CREATE", "object": plain}
    });
    let review_file = dir.path().join("review.json");
    std::fs::write(&review_file, review.to_string()).unwrap();
    let url = format!("https://{service_host}:{}/inject", cp.webhook);
    let resolve = format!("{service_host}:{}:127.0.0.1", cp.webhook);
    let curl = Command::new("curl")
        .args(["-sS", "--fail-with-body", "--cacert"])
        .arg(&bundle_file)
        .args([
            "--resolve",
            &resolve,
            "-H",
            "Content-Type: application/json",
        ])
        .arg("--data-binary")
        .arg(format!("@{}", review_file.display()))
        .arg(&url)
        .output();
    let Ok(curl) = curl else {
        assert!(
            std::env::var_os("CI").is_none(),
            "curl is not installed (scripts/install-test-deps.sh)"
        );
        eprintln!("skipping: curl is not installed");
        return;
    };
    assert!(
        curl.status.success(),
        "webhook: {}{}",
        String::from_utf8_lossy(&curl.stdout),
        String::from_utf8_lossy(&curl.stderr)
    );
    let answer: Value = serde_json::from_slice(&curl.stdout).expect("an AdmissionReview");
    assert_eq!(answer["response"]["allowed"], true, "{answer:#}");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(answer["response"]["patch"].as_str().expect("a patch"))
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut pod = plain.clone();
    json_patch::patch(&mut pod, &patch).unwrap();

    // Named, scheduled and started: the API server has the pod with its node and addresses.
    pod["metadata"]["name"] = "web-7d4b9c5f6-x2x9q".into();
    pod["spec"]["nodeName"] = "node-a".into();
    pod["status"] = serde_json::json!({"phase": "Running", "podIP": "10.244.1.7",
        "podIPs": [{"ip": "10.244.1.7"}], "hostIP": "10.0.0.5",
        "conditions": [{"type": "Ready", "status": "True"}]});
    api.apply(pod.clone());

    let proxy = container(&pod, "ferry-proxy");
    let kubelet = Kubelet {
        api: &api,
        pod: &pod,
        root: dir.path().join("volumes"),
    };
    kubelet.mount_volumes();
    let mut env = kubelet.env(proxy);
    let get = |env: &[(String, String)], name: &str| {
        env.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} is not in the injected environment: {env:?}"))
    };
    // What the proxy reads: the control plane and the CA, both the configured address.
    assert_eq!(get(&env, "FERRY_DISCOVERY_ADDRESS"), configured);
    assert_eq!(get(&env, "CA_ADDR"), configured);
    assert_eq!(get(&env, "POD_NAME"), "web-7d4b9c5f6-x2x9q");
    assert_eq!(get(&env, "POD_NAMESPACE"), "shop");
    assert_eq!(get(&env, "SERVICE_ACCOUNT"), "web-sa");
    assert_eq!(get(&env, "INSTANCE_IP"), "10.244.1.7");
    assert_eq!(get(&env, "ISTIO_META_WORKLOAD_NAME"), "web");
    // The Service's address is dialled at the control plane's loopback port (as if DNS
    // answered it); the certificate is still checked for the Service's name.
    let loopback = format!("127.0.0.1:{}", cp.secure);
    for (name, value) in &mut env {
        if name == "FERRY_DISCOVERY_ADDRESS" {
            *value = loopback.clone();
        }
    }
    // The token and root certificate where the proxy looks for them by default, on the
    // volumes the injected container mounts there.
    for (flag, var) in [
        ("--ca-token-file", "FERRY_CA_TOKEN_FILE"),
        ("--ca-root-cert", "FERRY_CA_ROOT_CERT"),
    ] {
        assert!(env.iter().all(|(n, _)| n != var), "{var} is injected");
        let file = kubelet.host_path(proxy, &proxy_default(flag));
        assert!(file.is_file(), "{flag}: {} was not mounted", file.display());
        env.push((var.to_string(), file.display().to_string()));
    }
    // The injected args, paths on the container's volumes, then free loopback ports.
    let mut args: Vec<String> = proxy["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_str().unwrap();
            match a.starts_with('/') {
                true => kubelet.host_path(proxy, a).display().to_string(),
                false => a.to_string(),
            }
        })
        .collect();
    assert!(args.iter().any(|a| a == "--config-cache"), "{args:?}");
    let cache = kubelet.host_path(proxy, ferry_inject::mutate::CONFIG_CACHE_PATH);
    let (admin, health) = (free_port(), free_port());
    let loopback_port = |p: u16| format!("127.0.0.1:{p}");
    args.extend(["--ca-server-name".to_string(), service_host.clone()]);
    for (flag, port) in [
        ("--outbound", free_port()),
        ("--inbound", free_port()),
        ("--metrics-addr", free_port()),
        ("--status-addr", free_port()),
        ("--admin-addr", admin),
        ("--health-addr", health),
    ] {
        args.extend([flag.to_string(), loopback_port(port)]);
    }
    let log_path = dir.path().join("proxy.log");
    let proxy_process = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(&args)
        .env_clear()
        .envs(env.iter().map(|(n, v)| (n, v)))
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let _proxy = Running(proxy_process);
    let logs = || {
        format!(
            "proxy said:\n{}\ncontrol plane said:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default(),
            cp.log()
        )
    };

    // Its certificate, for its service account, from a token the API server reviewed.
    let certs = || http_get(admin, "/certs").filter(|(code, _)| *code == 200);
    assert!(
        eventually(|| certs().is_some()).await,
        "no certificate; {}",
        logs()
    );
    let (_, body) = certs().unwrap();
    let view: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        view["identity"], "spiffe://cluster.local/ns/shop/sa/web-sa",
        "{view:#}"
    );
    let token =
        std::fs::read_to_string(kubelet.host_path(proxy, &proxy_default("--ca-token-file")))
            .unwrap();
    assert!(
        api.token_reviews().contains(&(token, true)),
        "the pod's token was reviewed: {:?}",
        api.token_reviews()
    );

    // Its configuration: sent, ACKed (SYNCED), holding the cluster's Service, cached.
    let monitoring = loopback_port(cp.monitoring);
    let synced = || {
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["proxy-status", "--control-plane", &monitoring])
            .output()
            .unwrap();
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        table
            .lines()
            .any(|l| l.contains("web-7d4b9c5f6-x2x9q") && l.contains("SYNCED"))
            .then_some(table)
    };
    assert!(
        eventually(|| synced().is_some()).await,
        "not SYNCED; {}",
        logs()
    );
    let dump = || {
        http_get(admin, "/config_dump")
            .map(|(_, b)| b)
            .unwrap_or_default()
    };
    assert!(
        eventually(|| dump().contains("web.shop.svc.cluster.local")).await,
        "the Service is not in the proxy's configuration: {}\n{}",
        dump(),
        logs()
    );
    assert!(
        eventually(|| cache.is_file()).await,
        "no config cache at {}; {}",
        cache.display(),
        logs()
    );
    // Ready, where the injected probes ask.
    let probe = proxy["readinessProbe"]["httpGet"]["path"].as_str().unwrap();
    assert!(
        eventually(|| http_get(health, probe).is_some_and(|(code, _)| code == 200)).await,
        "not ready; {}",
        logs()
    );
}
