//! Which workload a pod belongs to, derived the way Istio does (`GetDeployMetaFromPod`):
//! a Deployment's pod arrives with only `generateName` and a ReplicaSet owner, a
//! StatefulSet's pod arrives already named (`redis-0`), a CronJob's pod is owned by a Job
//! whose name ends in a schedule timestamp.

use serde_json::Value;

/// The workload behind a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Workload name (`redis`, `client`).
    pub name: String,
    /// Kind (`StatefulSet`, `Deployment`, `Pod`, ...).
    pub kind: String,
    /// apiVersion of the kind (`apps/v1`).
    pub api_version: String,
}

impl Workload {
    /// A workload of a known kind.
    pub fn new(name: &str, kind: &str, api_version: &str) -> Self {
        Self {
            name: name.to_string(),
            kind: kind.to_string(),
            api_version: api_version.to_string(),
        }
    }

    /// Istio's owner reference string:
    /// `kubernetes://apis/apps/v1/namespaces/<ns>/statefulsets/<name>`.
    pub fn owner(&self, namespace: &str) -> String {
        format!(
            "kubernetes://apis/{}/namespaces/{}/{}s/{}",
            self.api_version,
            namespace,
            self.kind.to_ascii_lowercase(),
            self.name
        )
    }
}

/// The pod's name for messages: its name, or `<generateName>*****` while unknown.
pub fn display_name(pod: &Value) -> String {
    let meta = &pod["metadata"];
    match (meta["name"].as_str(), meta["generateName"].as_str()) {
        (Some(name), _) if !name.is_empty() => name.to_string(),
        (_, Some(prefix)) => format!("{prefix}***** (actual name not yet known)"),
        _ => "<unnamed pod>".to_string(),
    }
}

/// Trims a CronJob's schedule suffix (`-` and 8 to 10 digits) from a Job name.
fn cronjob_of_job(job: &str) -> Option<&str> {
    let (base, suffix) = job.rsplit_once('-')?;
    (!base.is_empty()
        && (8..=10).contains(&suffix.len())
        && suffix.bytes().all(|b| b.is_ascii_digit()))
    .then_some(base)
}

/// Derives the workload from a pod as the API server hands it to the webhook.
pub fn of_pod(pod: &Value) -> Workload {
    let meta = &pod["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    let generate_name = meta["generateName"].as_str().unwrap_or_default();
    let controller = meta["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["controller"].as_bool() == Some(true));
    let (Some(owner), false) = (controller, generate_name.is_empty()) else {
        let name = if name.is_empty() {
            generate_name.trim_end_matches('-')
        } else {
            name
        };
        return Workload::new(name, "Pod", "v1");
    };
    let kind = owner["kind"].as_str().unwrap_or_default();
    let owner_name = owner["name"].as_str().unwrap_or_default();
    let api_version = owner["apiVersion"].as_str().unwrap_or("v1");
    match kind {
        "ReplicaSet" => {
            let hash = meta["labels"]["pod-template-hash"]
                .as_str()
                .unwrap_or_default();
            match owner_name.strip_suffix(&format!("-{hash}")) {
                Some(deployment) if !hash.is_empty() => {
                    Workload::new(deployment, "Deployment", "apps/v1")
                }
                _ => Workload::new(owner_name, "ReplicaSet", api_version),
            }
        }
        "ReplicationController" => {
            // OpenShift DeploymentConfigs own their ReplicationControllers through this label.
            match meta["labels"]["deploymentconfig"].as_str() {
                Some(dc) => Workload::new(dc, "DeploymentConfig", "apps.openshift.io/v1"),
                None => Workload::new(owner_name, kind, api_version),
            }
        }
        "Job" => match cronjob_of_job(owner_name) {
            Some(cronjob) => Workload::new(cronjob, "CronJob", "batch/v1"),
            None => Workload::new(owner_name, "Job", api_version),
        },
        "" => Workload::new(name, "Pod", "v1"),
        _ => Workload::new(owner_name, kind, api_version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn derivation_table() {
        let cases = [
            (
                "statefulset pod",
                json!({"metadata": {"name": "redis-0", "generateName": "redis-",
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "redis", "controller": true}]}}),
                (
                    "redis",
                    "StatefulSet",
                    "kubernetes://apis/apps/v1/namespaces/ns/statefulsets/redis",
                ),
            ),
            (
                "deployment pod",
                json!({"metadata": {"generateName": "client-7d9f8b6c5d-", "labels": {"pod-template-hash": "7d9f8b6c5d"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "client-7d9f8b6c5d", "controller": true}]}}),
                (
                    "client",
                    "Deployment",
                    "kubernetes://apis/apps/v1/namespaces/ns/deployments/client",
                ),
            ),
            (
                "bare replicaset pod",
                json!({"metadata": {"generateName": "rs-",
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "controller": true}]}}),
                (
                    "rs",
                    "ReplicaSet",
                    "kubernetes://apis/apps/v1/namespaces/ns/replicasets/rs",
                ),
            ),
            (
                "cronjob pod",
                json!({"metadata": {"generateName": "backup-28931040-",
                    "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "backup-28931040", "controller": true}]}}),
                (
                    "backup",
                    "CronJob",
                    "kubernetes://apis/batch/v1/namespaces/ns/cronjobs/backup",
                ),
            ),
            (
                "plain job pod",
                json!({"metadata": {"generateName": "migrate-",
                    "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "migrate", "controller": true}]}}),
                (
                    "migrate",
                    "Job",
                    "kubernetes://apis/batch/v1/namespaces/ns/jobs/migrate",
                ),
            ),
            (
                "daemonset pod",
                json!({"metadata": {"generateName": "agent-",
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "controller": true}]}}),
                (
                    "agent",
                    "DaemonSet",
                    "kubernetes://apis/apps/v1/namespaces/ns/daemonsets/agent",
                ),
            ),
            (
                "bare pod",
                json!({"metadata": {"name": "debug"}}),
                (
                    "debug",
                    "Pod",
                    "kubernetes://apis/v1/namespaces/ns/pods/debug",
                ),
            ),
            (
                "named pod with a non-controller owner",
                json!({"metadata": {"name": "x", "ownerReferences": [{"kind": "Foo", "name": "f"}]}}),
                ("x", "Pod", "kubernetes://apis/v1/namespaces/ns/pods/x"),
            ),
        ];
        for (what, pod, (name, kind, owner)) in cases {
            let w = of_pod(&pod);
            assert_eq!((w.name.as_str(), w.kind.as_str()), (name, kind), "{what}");
            assert_eq!(w.owner("ns"), owner, "{what}");
        }
    }

    #[test]
    fn display_names() {
        assert_eq!(
            display_name(&json!({"metadata": {"name": "redis-0", "generateName": "redis-"}})),
            "redis-0"
        );
        assert_eq!(
            display_name(&json!({"metadata": {"generateName": "client-abc-"}})),
            "client-abc-***** (actual name not yet known)"
        );
    }
}
