//! Injection into workload manifests (`ferry inject -f`, Istio's `kube-inject`): the pod
//! template of every Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet,
//! ReplicationController, Job, CronJob, DeploymentConfig and `List` item is injected; every
//! other document passes through unchanged.

use crate::decision::{decide_offline, explicit_value_warning};
use crate::mutate::{self, InjectError, PodContext};
use crate::workload::Workload;
use crate::{Decision, InjectConfig};
use serde_json::{Map, Value, json};

/// Where a kind keeps its pod template, by apiVersion and kind.
fn template_path(api_version: &str, kind: &str) -> Option<&'static [&'static str]> {
    match (api_version, kind) {
        ("v1", "Pod") => Some(&[]),
        ("v1", "ReplicationController")
        | ("apps/v1", "Deployment" | "DaemonSet" | "ReplicaSet" | "StatefulSet")
        | ("batch/v1", "Job")
        | ("apps.openshift.io/v1", "DeploymentConfig") => Some(&["spec", "template"]),
        ("batch/v1", "CronJob") => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

/// Kinds that hold pods under other apiVersions than the ones injected.
const WORKLOAD_KINDS: [&str; 9] = [
    "Pod",
    "ReplicationController",
    "Deployment",
    "DaemonSet",
    "ReplicaSet",
    "StatefulSet",
    "Job",
    "CronJob",
    "DeploymentConfig",
];

/// What happened to one document or `List` item, for the user's terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The pod template got a sidecar.
    Injected(String),
    /// Not injected, with the reason.
    Skipped(String),
    /// A warning that did not stop injection.
    Warning(String),
}

/// One document's failure: which resource, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError {
    /// `Kind/namespace/name` of the resource (with the `List` item path, if any).
    pub resource: String,
    /// The error.
    pub error: InjectError,
}

impl std::fmt::Display for DocumentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.resource, self.error)
    }
}

fn resource_id(doc: &Value, namespace: &str) -> String {
    let kind = doc["kind"].as_str().unwrap_or("<no kind>");
    let name = doc["metadata"]["name"]
        .as_str()
        .or_else(|| doc["metadata"]["generateName"].as_str())
        .unwrap_or("<no name>");
    format!("{kind}/{namespace}/{name}")
}

/// Injects one manifest document (recursing into `List` items). Returns the new document
/// and notes; a document whose injection fails is an error (kube-inject refuses it too).
pub fn inject_document(
    doc: &Value,
    cfg: &InjectConfig,
) -> Result<(Value, Vec<Note>), DocumentError> {
    let mut notes = Vec::new();
    let mut out = doc.clone();
    inject_in_place(&mut out, cfg, &mut notes)?;
    Ok((out, notes))
}

fn inject_in_place(
    doc: &mut Value,
    cfg: &InjectConfig,
    notes: &mut Vec<Note>,
) -> Result<(), DocumentError> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default().to_string();
    let kind = doc["kind"].as_str().unwrap_or_default().to_string();
    if api_version == "v1" && kind == "List" {
        if let Some(items) = doc.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                inject_in_place(item, cfg, notes)?;
            }
        }
        return Ok(());
    }
    let namespace = doc["metadata"]["namespace"]
        .as_str()
        .filter(|ns| !ns.is_empty())
        .unwrap_or("default")
        .to_string();
    let id = resource_id(doc, &namespace);
    let Some(path) = template_path(&api_version, &kind) else {
        if WORKLOAD_KINDS.contains(&kind.as_str()) {
            notes.push(Note::Skipped(format!(
                "{id}: apiVersion {api_version} of {kind} is not supported; passed through unchanged"
            )));
        }
        return Ok(());
    };
    let fail = |error: InjectError| DocumentError {
        resource: id.clone(),
        error,
    };
    let workload_name = doc["metadata"]["name"]
        .as_str()
        .or_else(|| {
            doc["metadata"]["generateName"]
                .as_str()
                .map(|g| g.trim_end_matches('-'))
        })
        .unwrap_or_default()
        .to_string();
    let mut template = &mut *doc;
    for key in path {
        template = template.get_mut(*key).ok_or_else(|| {
            fail(InjectError::InvalidPod {
                field: path.join("."),
                message: "is required".into(),
            })
        })?;
    }
    if !template.is_object() {
        return Err(fail(InjectError::InvalidPod {
            field: path.join("."),
            message: "must be an object".into(),
        }));
    }
    // The pod as the template describes it (a Pod document is its own template).
    let mut pod = json!({
        "metadata": template.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "spec": template.get("spec").cloned().unwrap_or(Value::Null),
    });
    if let Some(meta) = pod["metadata"].as_object_mut() {
        meta.entry("namespace").or_insert_with(|| json!(namespace));
    }
    if let Some(warning) = explicit_value_warning(&pod) {
        notes.push(Note::Warning(format!("{id}: {warning}")));
    }
    if let Decision::Skip(reason) = decide_offline(&pod, &namespace, cfg) {
        notes.push(Note::Skipped(format!(
            "Skipping injection for {id}: {reason}"
        )));
        return Ok(());
    }
    let ctx = PodContext {
        namespace: namespace.clone(),
        workload: Workload::new(&workload_name, &kind, &api_version),
        cluster_id: None,
        network: None,
    };
    let injected = mutate::inject(&pod, &ctx, cfg).map_err(fail)?;
    let Some(target) = template.as_object_mut() else {
        return Ok(());
    };
    let mut meta = injected
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    // The namespace was filled in only to inject; the template keeps what it had.
    let had_namespace = target
        .get("metadata")
        .is_some_and(|m| m.get("namespace").is_some());
    if let (Some(m), false) = (meta.as_object_mut(), had_namespace) {
        m.remove("namespace");
    }
    target.insert("metadata".into(), meta);
    target.insert(
        "spec".into(),
        injected
            .get("spec")
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new())),
    );
    notes.push(Note::Injected(id));
    Ok(())
}
