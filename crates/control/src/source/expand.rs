//! Workloads expanded into pods the way Kubernetes' controllers would create them, and each
//! pod run through the injection decision as the admission webhook would. Pure: JSON in,
//! JSON out.
//!
//! - StatefulSet `redis`, 3 replicas: `redis-0..2` in ordinal order (from
//!   `spec.ordinals.start` when set), `hostname` = pod name, `subdomain` = `serviceName`, the
//!   pod-name, pod-index and revision labels.
//! - Deployment: one ReplicaSet-owned pod per replica, `generateName: <deploy>-<hash>-`, a
//!   stable made-up name `<deploy>-<hash>-<5 chars>` and the `pod-template-hash` label.
//! - ReplicaSet (not owned by a Deployment), DaemonSet (one node), Job: likewise.
//! - Pods as written.

use ferry_inject::decision::{self, Decision};
use ferry_inject::mutate::{self, PodContext, TLS_MODE_LABEL};
use ferry_inject::{InjectConfig, workload};
use serde_json::{Map, Value, json};

use crate::registry::Labels;
use crate::store::Kind;

/// The most replicas expanded for one workload (a typo must not create a million pods).
pub const MAX_REPLICAS: u64 = 10_000;

/// Characters Kubernetes uses in generated names (no vowels, no look-alikes).
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The pods a workload (or a bare Pod) stands for, before injection, in creation order.
pub fn pods_of(kind: Kind, object: &Value) -> Vec<Value> {
    let meta = &object["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    let namespace = meta["namespace"].as_str().unwrap_or("default");
    let template = &object["spec"]["template"];
    let replicas = object["spec"]["replicas"]
        .as_u64()
        .unwrap_or(1)
        .min(MAX_REPLICAS);
    match kind {
        Kind::Pod => vec![bare_pod(object, namespace)],
        Kind::StatefulSet => {
            let service = object["spec"]["serviceName"].as_str().unwrap_or_default();
            let revision = format!("{name}-{}", template_hash(template));
            // `spec.ordinals.start` (Kubernetes 1.31): the first ordinal, 0 by default.
            let start = object["spec"]["ordinals"]["start"]
                .as_u64()
                .unwrap_or(0)
                .min(u64::from(u32::MAX));
            (start..start + replicas)
                .map(|i| {
                    let pod_name = format!("{name}-{i}");
                    let mut pod = from_template(
                        template,
                        namespace,
                        &pod_name,
                        &format!("{name}-"),
                        owner("apps/v1", "StatefulSet", name),
                    );
                    let labels = [
                        ("statefulset.kubernetes.io/pod-name", pod_name.clone()),
                        ("apps.kubernetes.io/pod-index", i.to_string()),
                        ("controller-revision-hash", revision.clone()),
                    ];
                    set_labels(&mut pod, &labels);
                    pod["spec"]["hostname"] = json!(pod_name);
                    if !service.is_empty() {
                        pod["spec"]["subdomain"] = json!(service);
                    }
                    pod
                })
                .collect()
        }
        Kind::Deployment => {
            let hash = template_hash(template);
            replica_set_pods(
                template,
                namespace,
                &format!("{name}-{hash}"),
                &hash,
                replicas,
            )
        }
        Kind::ReplicaSet => {
            if has_controller(meta) {
                // Its Deployment (or other controller) makes the pods.
                return Vec::new();
            }
            let hash = template["metadata"]["labels"]["pod-template-hash"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let mut pods = replica_set_pods(template, namespace, name, "", replicas);
            if !hash.is_empty() {
                pods.iter_mut()
                    .for_each(|p| set_labels(p, &[("pod-template-hash", hash.clone())]));
            }
            pods
        }
        Kind::DaemonSet => {
            let labels = [
                (
                    "controller-revision-hash",
                    template_hash(template).to_string(),
                ),
                ("pod-template-generation", "1".to_string()),
            ];
            single_pod(
                template,
                namespace,
                name,
                owner("apps/v1", "DaemonSet", name),
                &labels,
            )
        }
        Kind::Job => {
            let labels = [
                ("batch.kubernetes.io/job-name", name.to_string()),
                ("job-name", name.to_string()),
            ];
            single_pod(
                template,
                namespace,
                name,
                owner("batch/v1", "Job", name),
                &labels,
            )
        }
        _ => Vec::new(),
    }
}

/// The one pod `<name>-<suffix>` a controller of one pod (a DaemonSet on one node, a Job)
/// creates from its template, with the controller's labels.
fn single_pod(
    template: &Value,
    namespace: &str,
    name: &str,
    owner: Value,
    labels: &[(&str, String)],
) -> Vec<Value> {
    let prefix = format!("{name}-");
    let mut pod = from_template(
        template,
        namespace,
        &format!("{prefix}{}", suffix(name, 0)),
        &prefix,
        owner,
    );
    set_labels(&mut pod, labels);
    vec![pod]
}

/// A pod after the injection decision.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectedPod {
    /// The pod as it would be created (with the sidecar when injected).
    pub pod: Value,
    /// The decision.
    pub decision: Decision,
    /// Why injection failed, when it was decided but the pod could not be mutated.
    pub error: Option<String>,
}

/// Runs `pod` through the injection decision with its namespace's labels, as a cluster's
/// webhook would, and injects it when decided. A pod that cannot be mutated keeps its spec
/// but still gets the `security.istio.io/tlsMode: istio` label.
pub fn inject(pod: Value, namespace_labels: &Labels, cfg: &InjectConfig) -> InjectedPod {
    let namespace = pod["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let decision = decision::decide(namespace_labels, &namespace, &pod, cfg);
    if decision != Decision::Inject {
        return InjectedPod {
            pod,
            decision,
            error: None,
        };
    }
    let ctx = PodContext {
        namespace,
        workload: workload::of_pod(&pod),
        cluster_id: None,
        network: None,
    };
    match mutate::inject(&pod, &ctx, cfg) {
        Ok(injected) => InjectedPod {
            pod: injected,
            decision,
            error: None,
        },
        Err(e) => {
            let mut pod = pod;
            set_labels(&mut pod, &[(TLS_MODE_LABEL, "istio".to_string())]);
            InjectedPod {
                pod,
                decision,
                error: Some(e.to_string()),
            }
        }
    }
}

fn bare_pod(object: &Value, namespace: &str) -> Value {
    let mut pod = object.clone();
    if pod["metadata"].is_object() {
        pod["metadata"]["namespace"] = json!(namespace);
        let named = pod["metadata"]["name"]
            .as_str()
            .is_some_and(|n| !n.is_empty());
        if !named && let Some(prefix) = pod["metadata"]["generateName"].as_str() {
            let name = format!("{prefix}{}", suffix(prefix, 0));
            pod["metadata"]["name"] = json!(name);
        }
    }
    pod
}

fn replica_set_pods(
    template: &Value,
    namespace: &str,
    replica_set: &str,
    hash: &str,
    replicas: u64,
) -> Vec<Value> {
    let prefix = format!("{replica_set}-");
    (0..replicas)
        .map(|i| {
            let mut pod = from_template(
                template,
                namespace,
                &format!("{prefix}{}", suffix(replica_set, i)),
                &prefix,
                owner("apps/v1", "ReplicaSet", replica_set),
            );
            if !hash.is_empty() {
                set_labels(&mut pod, &[("pod-template-hash", hash.to_string())]);
            }
            pod
        })
        .collect()
}

/// A pod from a workload's template.
fn from_template(
    template: &Value,
    namespace: &str,
    name: &str,
    generate_name: &str,
    owner: Value,
) -> Value {
    let tmeta = &template["metadata"];
    let mut meta = Map::new();
    meta.insert("name".into(), json!(name));
    meta.insert("generateName".into(), json!(generate_name));
    meta.insert("namespace".into(), json!(namespace));
    meta.insert(
        "labels".into(),
        tmeta["labels"]
            .as_object()
            .map_or(json!({}), |m| Value::Object(m.clone())),
    );
    if let Some(annotations) = tmeta["annotations"].as_object() {
        meta.insert("annotations".into(), Value::Object(annotations.clone()));
    }
    meta.insert("ownerReferences".into(), json!([owner]));
    let spec = match &template["spec"] {
        Value::Object(m) => Value::Object(m.clone()),
        _ => json!({}),
    };
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
}

fn owner(api_version: &str, kind: &str, name: &str) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

fn has_controller(meta: &Value) -> bool {
    meta["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["controller"].as_bool() == Some(true))
}

fn set_labels(pod: &mut Value, labels: &[(&str, String)]) {
    if !pod.is_object() {
        return;
    }
    if !pod["metadata"].is_object() {
        pod["metadata"] = json!({});
    }
    if !pod["metadata"]["labels"].is_object() {
        pod["metadata"]["labels"] = json!({});
    }
    for (k, v) in labels {
        pod["metadata"]["labels"][*k] = json!(v);
    }
}

/// 32-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// A short hash of a pod template, in Kubernetes' name alphabet (like `pod-template-hash`).
pub fn template_hash(template: &Value) -> String {
    let text = serde_json::to_string(template).unwrap_or_default();
    fnv1a(text.as_bytes())
        .to_string()
        .bytes()
        .map(|d| char::from(ALPHABET[usize::from(d) % ALPHABET.len()]))
        .collect()
}

/// The made-up 5-character suffix of the `index`th pod of `owner`: stable across runs.
fn suffix(owner: &str, index: u64) -> String {
    let mut h = fnv1a(format!("{owner}/{index}").as_bytes());
    let mut out = String::with_capacity(5);
    for _ in 0..5 {
        let len = ALPHABET.len() as u32;
        out.push(char::from(ALPHABET[(h % len) as usize]));
        h /= len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statefulset(replicas: u64) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "redis"},
            "spec": {"serviceName": "redis", "replicas": replicas,
                "selector": {"matchLabels": {"app": "redis"}},
                "template": {"metadata": {"labels": {"app": "redis"}},
                    "spec": {"containers": [{"name": "redis", "image": "redis"}]}}}
        })
    }

    #[test]
    fn statefulset_pods_in_ordinal_order() {
        let pods = pods_of(Kind::StatefulSet, &statefulset(3));
        let names: Vec<_> = pods
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(names, ["redis-0", "redis-1", "redis-2"]);
        let p = &pods[1];
        assert_eq!(p["spec"]["hostname"], "redis-1");
        assert_eq!(p["spec"]["subdomain"], "redis");
        assert_eq!(p["metadata"]["namespace"], "default");
        assert_eq!(p["metadata"]["labels"]["app"], "redis");
        assert_eq!(
            p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
            "redis-1"
        );
        assert_eq!(p["metadata"]["labels"]["apps.kubernetes.io/pod-index"], "1");
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
        assert_eq!(workload::of_pod(p).name, "redis");
    }

    #[test]
    fn statefulset_ordinals_start() {
        let table: [(Value, &[&str]); 3] = [
            (json!({"start": 5}), &["redis-5", "redis-6"]),
            (json!({"start": 0}), &["redis-0", "redis-1"]),
            // Not a number: the default, as the API server's defaulting would give.
            (json!({"start": "x"}), &["redis-0", "redis-1"]),
        ];
        for (ordinals, want) in table {
            let mut sts = statefulset(2);
            sts["spec"]["ordinals"] = ordinals.clone();
            let pods = pods_of(Kind::StatefulSet, &sts);
            let names: Vec<_> = pods
                .iter()
                .map(|p| p["metadata"]["name"].as_str().unwrap_or_default())
                .collect();
            assert_eq!(names, want, "{ordinals}");
            let index = &pods[0]["metadata"]["labels"]["apps.kubernetes.io/pod-index"];
            assert_eq!(index, &want[0].trim_start_matches("redis-"), "{ordinals}");
            assert_eq!(pods[0]["spec"]["hostname"], want[0], "{ordinals}");
        }
    }

    #[test]
    fn deployment_pods_are_replicaset_owned_and_stable() {
        let deploy = json!({
            "kind": "Deployment", "metadata": {"name": "client", "namespace": "apps"},
            "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "client"}},
                "spec": {"containers": [{"name": "c", "image": "x"}]}}}
        });
        let pods = pods_of(Kind::Deployment, &deploy);
        assert_eq!(pods, pods_of(Kind::Deployment, &deploy));
        assert_eq!(pods.len(), 2);
        let hash = pods[0]["metadata"]["labels"]["pod-template-hash"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(!hash.is_empty());
        let prefix = format!("client-{hash}-");
        assert_eq!(pods[0]["metadata"]["generateName"], json!(prefix));
        let name = pods[0]["metadata"]["name"].as_str().unwrap_or_default();
        assert_eq!(name.len(), prefix.len() + 5);
        assert_ne!(pods[0]["metadata"]["name"], pods[1]["metadata"]["name"]);
        let w = workload::of_pod(&pods[0]);
        assert_eq!((w.name.as_str(), w.kind.as_str()), ("client", "Deployment"));
    }

    #[test]
    fn defaults_and_other_kinds() {
        let mut sts = statefulset(0);
        sts["spec"].as_object_mut().map(|s| s.remove("replicas"));
        assert_eq!(pods_of(Kind::StatefulSet, &sts).len(), 1);
        let job = json!({"kind": "Job", "metadata": {"name": "j"},
            "spec": {"template": {"spec": {"containers": []}}}});
        let pods = pods_of(Kind::Job, &job);
        assert_eq!(pods.len(), 1);
        assert_eq!(workload::of_pod(&pods[0]).kind, "Job");
        let ds = json!({"kind": "DaemonSet", "metadata": {"name": "d"}, "spec": {"replicas": 9}});
        assert_eq!(pods_of(Kind::DaemonSet, &ds).len(), 1);
        let owned = json!({"kind": "ReplicaSet", "metadata": {"name": "r",
            "ownerReferences": [{"kind": "Deployment", "name": "x", "controller": true}]}});
        assert!(pods_of(Kind::ReplicaSet, &owned).is_empty());
        // Malformed input never panics.
        assert_eq!(pods_of(Kind::StatefulSet, &json!("nonsense")).len(), 1);
        assert_eq!(pods_of(Kind::Pod, &json!(null)).len(), 1);
    }

    #[test]
    fn injection_follows_namespace_label_and_opt_out() {
        let enabled = Labels::from([("istio-injection".to_string(), "enabled".to_string())]);
        let cfg = InjectConfig::default();
        let pod = pods_of(Kind::StatefulSet, &statefulset(1)).remove(0);
        let injected = inject(pod.clone(), &enabled, &cfg);
        assert_eq!(injected.decision, Decision::Inject);
        assert_eq!(injected.pod["metadata"]["labels"][TLS_MODE_LABEL], "istio");
        let plain = inject(pod.clone(), &Labels::new(), &cfg);
        assert_ne!(plain.decision, Decision::Inject);
        let mut opted_out = pod;
        opted_out["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("false");
        assert_ne!(inject(opted_out, &enabled, &cfg).decision, Decision::Inject);
    }
}
