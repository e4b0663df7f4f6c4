//! Type checking of Kubernetes built-in kinds with k8s-openapi (API v1.33). Wrong types are
//! errors; fields k8s-openapi does not know are warnings, since it may lag the API server.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::path::FieldPath;
use super::structural::{Problem, deserialize_all};
use k8s_openapi::api;

/// Result of checking one Kubernetes resource: whether it typed, errors, warnings.
pub struct Checked {
    /// Whether the value deserialized into its type.
    pub typed: bool,
    /// Type errors.
    pub errors: Vec<Problem>,
    /// Fields not in the API.
    pub warnings: Vec<Problem>,
}

type CheckFn = fn(&Value) -> Checked;

/// The built-in kinds that are type-checked, by `apiVersion` and `kind`.
const KINDS: &[(&str, &str, CheckFn)] = &[
    ("v1", "Pod", check_typed::<api::core::v1::Pod>),
    ("v1", "Service", check_typed::<api::core::v1::Service>),
    ("v1", "Namespace", check_typed::<api::core::v1::Namespace>),
    ("v1", "ConfigMap", check_typed::<api::core::v1::ConfigMap>),
    ("v1", "Secret", check_typed::<api::core::v1::Secret>),
    (
        "v1",
        "ServiceAccount",
        check_typed::<api::core::v1::ServiceAccount>,
    ),
    (
        "v1",
        "PersistentVolumeClaim",
        check_typed::<api::core::v1::PersistentVolumeClaim>,
    ),
    ("v1", "Endpoints", check_typed::<api::core::v1::Endpoints>),
    (
        "v1",
        "ReplicationController",
        check_typed::<api::core::v1::ReplicationController>,
    ),
    (
        "apps/v1",
        "Deployment",
        check_typed::<api::apps::v1::Deployment>,
    ),
    (
        "apps/v1",
        "StatefulSet",
        check_typed::<api::apps::v1::StatefulSet>,
    ),
    (
        "apps/v1",
        "DaemonSet",
        check_typed::<api::apps::v1::DaemonSet>,
    ),
    (
        "apps/v1",
        "ReplicaSet",
        check_typed::<api::apps::v1::ReplicaSet>,
    ),
    ("batch/v1", "Job", check_typed::<api::batch::v1::Job>),
    (
        "batch/v1",
        "CronJob",
        check_typed::<api::batch::v1::CronJob>,
    ),
    (
        "networking.k8s.io/v1",
        "Ingress",
        check_typed::<api::networking::v1::Ingress>,
    ),
    (
        "networking.k8s.io/v1",
        "NetworkPolicy",
        check_typed::<api::networking::v1::NetworkPolicy>,
    ),
    (
        "discovery.k8s.io/v1",
        "EndpointSlice",
        check_typed::<api::discovery::v1::EndpointSlice>,
    ),
    (
        "policy/v1",
        "PodDisruptionBudget",
        check_typed::<api::policy::v1::PodDisruptionBudget>,
    ),
    (
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        check_typed::<api::autoscaling::v2::HorizontalPodAutoscaler>,
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "Role",
        check_typed::<api::rbac::v1::Role>,
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        check_typed::<api::rbac::v1::RoleBinding>,
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        check_typed::<api::rbac::v1::ClusterRole>,
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        check_typed::<api::rbac::v1::ClusterRoleBinding>,
    ),
    (
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
        check_typed::<api::admissionregistration::v1::MutatingWebhookConfiguration>,
    ),
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        check_typed::<api::admissionregistration::v1::ValidatingWebhookConfiguration>,
    ),
];

/// The checker of a built-in kind, when Ferry knows it.
pub fn lookup(api_version: &str, kind: &str) -> Option<CheckFn> {
    KINDS
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
        .map(|(_, _, f)| *f)
}

/// Whether `kind` is a built-in kind Ferry knows under some `apiVersion`; returns that version.
pub fn known_version(kind: &str) -> Option<&'static str> {
    KINDS
        .iter()
        .find(|(_, k, _)| *k == kind)
        .map(|(v, _, _)| *v)
}

fn check_typed<T: DeserializeOwned + Serialize>(value: &Value) -> Checked {
    let (typed, errors) = deserialize_all::<T>(value);
    let mut warnings = Vec::new();
    if let Some(typed) = &typed
        && let Ok(back) = serde_json::to_value(typed)
    {
        unknown_fields(value, &back, &FieldPath::root(), &mut warnings);
    }
    Checked {
        typed: typed.is_some(),
        errors,
        warnings,
    }
}

/// Reports keys of `input` that did not survive the round trip through the typed value.
fn unknown_fields(input: &Value, back: &Value, path: &FieldPath, out: &mut Vec<Problem>) {
    match (input, back) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                match b.get(k) {
                    Some(bv) => unknown_fields(v, bv, &path.key(k.clone()), out),
                    None if v.is_null() => {}
                    None => out.push(Problem {
                        path: path.key(k.clone()),
                        message: format!(
                            "unknown field `{k}` (not in the Kubernetes 1.33 API; not checked)"
                        ),
                    }),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                unknown_fields(x, y, &path.index(i), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_are_type_checked() {
        let check = lookup("v1", "Pod").unwrap_or_else(|| unreachable!());
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "app", "image": "x", "ports": [{"containerPort": "http"}], "colour": 1}]},
        });
        let r = check(&pod);
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        assert_eq!(
            r.errors[0].path.to_string(),
            "spec.containers[0].ports[0].containerPort"
        );
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert_eq!(r.warnings[0].path.to_string(), "spec.containers[0].colour");
        assert!(lookup("apps/v1", "Pod").is_none());
        assert_eq!(known_version("Deployment"), Some("apps/v1"));
    }
}
