//! Golden tests of the mutation: each `golden/<name>.yaml` is injected as `ferry inject -f`
//! does and compared with `golden/<name>.injected.yaml`. Set `UPDATE_GOLDEN=1` to rewrite
//! the expected files after a deliberate change, then review the diff.

use ferry_inject::InjectConfig;
use ferry_inject::manifest::{self, Note};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn load(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ferry_model::parse_documents(&path.display().to_string(), &text)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|d| d.value)
        .collect()
}

fn inject_all(docs: &[Value], cfg: &InjectConfig) -> (Vec<Value>, Vec<Note>) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    for doc in docs {
        let (value, n) = manifest::inject_document(doc, cfg).unwrap_or_else(|e| panic!("{e}"));
        out.push(value);
        notes.extend(n);
    }
    (out, notes)
}

fn render(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| serde_yaml_ng::to_string(d).expect("serializable") + "---\n")
        .collect()
}

fn cfg() -> InjectConfig {
    InjectConfig {
        proxy_image: "ferry.example/ferry:test".into(),
        ..Default::default()
    }
}

const CASES: [&str; 6] = [
    "statefulset",
    "deployment",
    "pod",
    "cronjob",
    "list",
    "istio-original-pod",
];

#[test]
fn golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for name in CASES {
        let input = golden_dir().join(format!("{name}.yaml"));
        let expected_path = golden_dir().join(format!("{name}.injected.yaml"));
        let (out, _) = inject_all(&load(&input), &cfg());
        let rendered = render(&out);
        if update {
            std::fs::write(&expected_path, &rendered).expect("write golden");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with UPDATE_GOLDEN=1)",
                expected_path.display()
            )
        });
        assert_eq!(
            rendered,
            expected,
            "{name}: output differs from {}",
            expected_path.display()
        );
    }
}

#[test]
fn injecting_the_output_again_changes_nothing() {
    for name in CASES {
        let (once, _) = inject_all(&load(&golden_dir().join(format!("{name}.yaml"))), &cfg());
        let (twice, _) = inject_all(&once, &cfg());
        assert_eq!(once, twice, "{name}: second injection changed the output");
    }
}

#[test]
fn an_istio_sidecar_is_replaced_not_doubled() {
    let (from_istio, _) = inject_all(&load(&golden_dir().join("istio-injected-pod.yaml")), &cfg());
    let (from_original, _) =
        inject_all(&load(&golden_dir().join("istio-original-pod.yaml")), &cfg());
    assert_eq!(from_istio, from_original);
    let text = render(&from_istio);
    assert!(
        !text.contains("istio-proxy") && !text.contains("istio-init"),
        "{text}"
    );
}

#[test]
fn skips_and_pass_through_are_reported() {
    let docs = load(&golden_dir().join("list.yaml"));
    let (out, notes) = inject_all(&docs, &cfg());
    let skipped: Vec<&String> = notes
        .iter()
        .filter_map(|n| match n {
            Note::Skipped(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(skipped.len(), 3, "{notes:?}");
    assert!(skipped[0].contains("DaemonSet/default/node-agent") && skipped[0].contains("disabled"));
    assert!(skipped[1].contains("Pod/default/host-pod") && skipped[1].contains("host networking"));
    assert!(skipped[2].contains("batch/v1beta1"));
    // Only the Deployment changed; everything else is byte-for-byte the input.
    let items_in = docs[0]["items"].as_array().expect("items");
    let items_out = out[0]["items"].as_array().expect("items");
    assert_ne!(items_in[0], items_out[0]);
    assert_eq!(items_in[1..], items_out[1..]);
    assert_eq!(docs[1], out[1]);
}

#[test]
fn classic_sidecars_on_request() {
    let classic = InjectConfig {
        native_sidecars: false,
        ..cfg()
    };
    let (out, _) = inject_all(&load(&golden_dir().join("statefulset.yaml")), &classic);
    let spec = &out[1]["spec"]["template"]["spec"];
    let names = |field: &str| -> Vec<String> {
        spec[field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(String::from))
            .collect()
    };
    assert_eq!(names("initContainers"), ["ferry-init"]);
    assert_eq!(names("containers"), ["redis", "ferry-proxy"]);
    assert!(spec["containers"][1].get("restartPolicy").is_none());
}

/// Every pod spec below `v` (pods, and the templates of workloads).
fn pod_specs<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(map) => {
            if map.contains_key("containers") {
                out.push(v);
            }
            map.values().for_each(|child| pod_specs(child, out));
        }
        Value::Array(items) => items.iter().for_each(|child| pod_specs(child, out)),
        _ => {}
    }
}

#[test]
fn the_injected_proxy_keeps_its_config_cache_on_a_pod_lifetime_emptydir() {
    let mut checked = 0;
    for name in CASES {
        let (out, _) = inject_all(&load(&golden_dir().join(format!("{name}.yaml"))), &cfg());
        let mut specs = Vec::new();
        out.iter().for_each(|d| pod_specs(d, &mut specs));
        for spec in specs {
            let containers = spec["initContainers"]
                .as_array()
                .into_iter()
                .chain(spec["containers"].as_array())
                .flatten();
            let Some(proxy) = containers
                .into_iter()
                .find(|c| c["name"] == ferry_inject::mutate::PROXY_CONTAINER)
            else {
                continue;
            };
            let args: Vec<&str> = proxy["args"]
                .as_array()
                .expect("args")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let at = args
                .iter()
                .position(|a| *a == "--config-cache")
                .unwrap_or_else(|| panic!("{name}: no --config-cache in {args:?}"));
            let path = args[at + 1];
            assert_eq!(path, ferry_inject::mutate::CONFIG_CACHE_PATH);
            // The file's directory is a mount of an emptyDir of the pod: it survives a
            // container restart, not the pod.
            let mount = proxy["volumeMounts"]
                .as_array()
                .expect("volumeMounts")
                .iter()
                .find(|m| {
                    m["mountPath"]
                        .as_str()
                        .is_some_and(|p| path.starts_with(&format!("{}/", p.trim_end_matches('/'))))
                })
                .unwrap_or_else(|| panic!("{name}: {path} is on no volume"));
            assert_ne!(mount["readOnly"], true, "{name}: {mount}");
            let volume = spec["volumes"]
                .as_array()
                .expect("volumes")
                .iter()
                .find(|v| v["name"] == mount["name"])
                .unwrap_or_else(|| panic!("{name}: no volume {}", mount["name"]));
            assert!(volume["emptyDir"].is_object(), "{name}: {volume}");
            checked += 1;
        }
    }
    assert!(checked >= CASES.len(), "only {checked} proxies checked");
}
