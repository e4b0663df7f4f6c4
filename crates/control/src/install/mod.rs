//! Ferry's Kubernetes installation, generated from code (`ferry install`); the Helm chart in
//! `deploy/helm/ferry` renders the same objects, which a test checks.
//!
//! - [`values`]: the settings, their defaults, `-f values.yaml` and `--set key=value`.
//! - [`objects`]: Namespace, ServiceAccount, RBAC, mesh ConfigMap, Service, Deployment,
//!   PodDisruptionBudget, MutatingWebhookConfiguration.
//! - [`crds`] and [`schema`]: CRDs whose structural schemas come from the model's types
//!   (Istio's kinds, and Ferry's `RedisPolicy` from `ferry_model::ferry`).
//! - [`apply`]: applying (server-side apply) and deleting through the API.

pub mod apply;
pub mod crds;
pub mod objects;
pub mod schema;
pub mod values;

use serde_json::Value;

pub use values::{Values, ValuesBuilder, ValuesError};

/// Default namespace of the installation.
pub const DEFAULT_NAMESPACE: &str = "ferry-system";
/// Name of the control plane's Deployment, Service, ServiceAccount and RBAC objects.
pub const CONTROL_PLANE: &str = "ferry-control";
/// The ConfigMap with the mesh settings.
pub const MESH_CONFIGMAP: &str = "ferry-mesh";
/// The Secret holding the CA's key and certificates.
pub const CA_SECRET: &str = "ferry-ca";
/// The ConfigMap with the root certificate, published in every namespace with injected pods.
pub const ROOT_CERT_CONFIGMAP: &str = "ferry-ca-root-cert";
/// The Lease that elects the replica doing the run-once work.
pub const LEADER_LEASE: &str = "ferry-control-leader";

/// One rendered object.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest(pub Value);

impl Manifest {
    fn of<T: serde::Serialize>(object: &T) -> Manifest {
        // k8s-openapi objects always serialize (with apiVersion and kind).
        Manifest(serde_json::to_value(object).unwrap_or(Value::Null))
    }

    /// `apiVersion`.
    pub fn api_version(&self) -> &str {
        self.0["apiVersion"].as_str().unwrap_or_default()
    }

    /// `kind`.
    pub fn kind(&self) -> &str {
        self.0["kind"].as_str().unwrap_or_default()
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.0["metadata"]["name"].as_str().unwrap_or_default()
    }

    /// `metadata.namespace`, if namespaced.
    pub fn namespace(&self) -> Option<&str> {
        self.0["metadata"]["namespace"].as_str()
    }

    /// `Kind/name` or `Kind/namespace/name`.
    pub fn describe(&self) -> String {
        match self.namespace() {
            Some(ns) => format!("{}/{}/{}", self.kind(), ns, self.name()),
            None => format!("{}/{}", self.kind(), self.name()),
        }
    }
}

/// Every object of the installation in `namespace`, in the order to apply them (the
/// webhook configuration last, so the webhook exists before the API server calls it).
pub fn render(values: &Values, namespace: &str) -> Vec<Manifest> {
    let labels = objects::common_labels();
    let mut out = vec![Manifest::of(&objects::namespace(namespace))];
    for kind in crds::ALL {
        let wanted = if kind.istio {
            values.crds.istio
        } else {
            values.crds.redis_policy
        };
        if wanted {
            out.push(Manifest::of(&crds::crd(&kind, &labels)));
        }
    }
    let registration = objects::registration(namespace, values);
    let mut webhook = registration.render_without_ca_bundle();
    let mut webhook_labels = webhook.metadata.labels.take().unwrap_or_default();
    webhook_labels.extend(labels);
    webhook.metadata.labels = Some(webhook_labels);
    out.extend([
        Manifest::of(&objects::service_account(namespace)),
        Manifest::of(&objects::cluster_role(&registration.config_name())),
        Manifest::of(&objects::cluster_role_binding(namespace)),
        Manifest::of(&objects::role(namespace)),
        Manifest::of(&objects::role_binding(namespace)),
        Manifest::of(&objects::mesh_config(namespace, values)),
        Manifest::of(&objects::service(namespace)),
        Manifest::of(&objects::deployment(namespace, values)),
        Manifest::of(&objects::pod_disruption_budget(namespace, values)),
        Manifest::of(&webhook),
    ]);
    out
}

/// The objects as a multi-document YAML stream.
pub fn to_yaml(manifests: &[Manifest]) -> String {
    let mut out = String::new();
    for m in manifests {
        out.push_str("---\n");
        // Plain JSON values always serialize.
        out.push_str(&serde_yaml_ng::to_string(&m.0).unwrap_or_default());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_install_has_every_object_once() {
        let objects = render(&Values::default(), DEFAULT_NAMESPACE);
        let names: Vec<String> = objects.iter().map(Manifest::describe).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for want in [
            "Namespace/ferry-system",
            "CustomResourceDefinition/virtualservices.networking.istio.io",
            "CustomResourceDefinition/redispolicies.ferry.dev",
            "Deployment/ferry-system/ferry-control",
            "MutatingWebhookConfiguration/ferry-sidecar-injector",
            "PodDisruptionBudget/ferry-system/ferry-control",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        let yaml = to_yaml(&objects);
        assert!(!yaml.contains("caBundle"));
        let no_crds = render(
            &ValuesBuilder::new()
                .set("crds.istio=false")
                .unwrap()
                .set("crds.redisPolicy=false")
                .unwrap()
                .build()
                .unwrap(),
            "mesh",
        );
        assert!(
            no_crds
                .iter()
                .all(|m| m.kind() != "CustomResourceDefinition")
        );
        assert!(
            no_crds
                .iter()
                .filter_map(Manifest::namespace)
                .all(|ns| ns == "mesh")
        );
    }
}
