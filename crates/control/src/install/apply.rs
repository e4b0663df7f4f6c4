//! Applying the installation through the API (`ferry install --apply`) and removing it
//! (`ferry uninstall --apply`). Objects are applied with server-side apply under the field
//! manager [`FIELD_MANAGER`], so running the install again is an idempotent upgrade and
//! fields other managers own (the `caBundle` the control plane patches in) are kept.
//! Istio's CRDs are left alone when the cluster already has them.

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;

use super::{Manifest, ROOT_CERT_CONFIGMAP, crds};

/// Field manager of `ferry install --apply`.
pub const FIELD_MANAGER: &str = "ferry-install";

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Created or updated.
    Applied,
    /// An Istio CRD that Ferry did not install exists; it is kept as is.
    KeptIstioCrd,
    /// Deleted.
    Deleted,
    /// Already gone.
    NotFound,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Applied => "applied",
            Outcome::KeptIstioCrd => "skipped (Istio's own CRD is installed)",
            Outcome::Deleted => "deleted",
            Outcome::NotFound => "not found",
        })
    }
}

/// An object the API refused.
#[derive(Debug, thiserror::Error)]
#[error("{object}: {source}")]
pub struct ApplyError {
    /// `Kind/namespace/name`.
    pub object: String,
    /// What the API said.
    pub source: kube::Error,
}

/// A client for the cluster of the current kubeconfig context (or the in-cluster
/// configuration).
pub async fn default_client() -> Result<kube::Client, kube::Error> {
    kube::Client::try_default().await
}

/// The control plane's `/version` answer, read through the API server's service proxy
/// (`services/http:ferry-control:15014/proxy/version` in `namespace`).
pub async fn control_plane_version(
    client: &kube::Client,
    namespace: &str,
) -> Result<String, kube::Error> {
    let path = format!(
        "/api/v1/namespaces/{namespace}/services/http:{}:15014/proxy/version",
        super::CONTROL_PLANE
    );
    let request = hyper::Request::get(path)
        .body(Vec::new())
        .map_err(kube::Error::HttpError)?;
    client.request_text(request).await
}

/// Plural resource names of the kinds the installation has.
fn plural(kind: &str) -> String {
    match kind {
        "CustomResourceDefinition" => "customresourcedefinitions".into(),
        "PodDisruptionBudget" => "poddisruptionbudgets".into(),
        "MutatingWebhookConfiguration" => "mutatingwebhookconfigurations".into(),
        other => format!("{}s", other.to_ascii_lowercase()),
    }
}

fn api_for(client: &kube::Client, m: &Manifest) -> Api<DynamicObject> {
    let (group, version) = match m.api_version().split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", m.api_version()),
    };
    let gvk = GroupVersionKind::gvk(group, version, m.kind());
    let resource = ApiResource::from_gvk_with_plural(&gvk, &plural(m.kind()));
    match m.namespace() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether an Istio CRD named like `m` exists and was not installed by Ferry.
async fn foreign_istio_crd(client: &kube::Client, m: &Manifest) -> Result<bool, kube::Error> {
    let istio = crds::ALL
        .iter()
        .any(|k| k.istio && k.crd_name() == m.name());
    if m.kind() != "CustomResourceDefinition" || !istio {
        return Ok(false);
    }
    let existing = api_for(client, m).get_opt(m.name()).await?;
    Ok(existing.is_some_and(|crd| {
        crd.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(crds::PART_OF.0))
            .map(String::as_str)
            != Some(crds::PART_OF.1)
    }))
}

/// Applies every object in order; `progress` hears each outcome as it happens.
pub async fn apply_all(
    client: &kube::Client,
    manifests: &[Manifest],
    mut progress: impl FnMut(&Manifest, &Outcome),
) -> Result<Vec<(String, Outcome)>, ApplyError> {
    let mut out = Vec::new();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for m in manifests {
        let failed = |source| ApplyError {
            object: m.describe(),
            source,
        };
        let outcome = if foreign_istio_crd(client, m).await.map_err(failed)? {
            Outcome::KeptIstioCrd
        } else {
            api_for(client, m)
                .patch(m.name(), &params, &Patch::Apply(&m.0))
                .await
                .map_err(failed)?;
            Outcome::Applied
        };
        progress(m, &outcome);
        out.push((m.describe(), outcome));
    }
    Ok(out)
}

/// What `ferry uninstall` removes, in order: the webhook configuration first (new pods are
/// then created without sidecars at once), the control plane, RBAC, then (with `purge`) the
/// CRDs and with them every resource of their kinds, and the namespace last.
pub fn uninstall_plan(manifests: &[Manifest], purge: bool) -> Vec<Manifest> {
    manifests
        .iter()
        .rev()
        .filter(|m| purge || m.kind() != "CustomResourceDefinition")
        .cloned()
        .collect()
}

/// Deletes the planned objects (CRDs only if Ferry installed them), and with `purge` the
/// root-certificate ConfigMaps Ferry published in workload namespaces.
pub async fn delete_all(
    client: &kube::Client,
    plan: &[Manifest],
    purge: bool,
    mut progress: impl FnMut(&str, &Outcome),
) -> Result<Vec<(String, Outcome)>, ApplyError> {
    let mut out = Vec::new();
    let mut record = |what: String, outcome: Outcome| {
        progress(&what, &outcome);
        out.push((what, outcome));
    };
    for m in plan {
        let failed = |source| ApplyError {
            object: m.describe(),
            source,
        };
        if foreign_istio_crd(client, m).await.map_err(failed)? {
            record(m.describe(), Outcome::KeptIstioCrd);
            continue;
        }
        let outcome = match api_for(client, m)
            .delete(m.name(), &DeleteParams::background())
            .await
        {
            Ok(_) => Outcome::Deleted,
            Err(e) if is_not_found(&e) => Outcome::NotFound,
            Err(e) => return Err(failed(e)),
        };
        record(m.describe(), outcome);
    }
    if purge {
        let all: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::all(client.clone());
        let selector = format!("{}={}", crds::PART_OF.0, crds::PART_OF.1);
        let listed = all
            .list(
                &ListParams::default()
                    .labels(&selector)
                    .fields(&format!("metadata.name={ROOT_CERT_CONFIGMAP}")),
            )
            .await
            .map_err(|source| ApplyError {
                object: format!("ConfigMaps {ROOT_CERT_CONFIGMAP}"),
                source,
            })?;
        for cm in listed {
            let ns = cm.metadata.namespace.unwrap_or_default();
            let what = format!("ConfigMap/{ns}/{ROOT_CERT_CONFIGMAP}");
            let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
                Api::namespaced(client.clone(), &ns);
            let outcome = match api
                .delete(ROOT_CERT_CONFIGMAP, &DeleteParams::background())
                .await
            {
                Ok(_) => Outcome::Deleted,
                Err(e) if is_not_found(&e) => Outcome::NotFound,
                Err(source) => {
                    return Err(ApplyError {
                        object: what,
                        source,
                    });
                }
            };
            record(what, outcome);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_of_every_installed_kind() {
        let kinds = super::super::render(&Default::default(), "ferry-system");
        for m in &kinds {
            let p = plural(m.kind());
            assert!(p.ends_with('s') && p == p.to_ascii_lowercase(), "{p}");
        }
        assert_eq!(plural("ServiceAccount"), "serviceaccounts");
        assert_eq!(plural("ClusterRoleBinding"), "clusterrolebindings");
    }

    #[test]
    fn uninstall_removes_the_webhook_first_and_keeps_crds_unless_purging() {
        let all = super::super::render(&Default::default(), "ferry-system");
        let plan = uninstall_plan(&all, false);
        assert_eq!(plan[0].kind(), "MutatingWebhookConfiguration");
        assert_eq!(plan.last().map(Manifest::kind), Some("Namespace"));
        assert!(plan.iter().all(|m| m.kind() != "CustomResourceDefinition"));
        assert!(
            uninstall_plan(&all, true)
                .iter()
                .any(|m| m.kind() == "CustomResourceDefinition")
        );
    }
}
