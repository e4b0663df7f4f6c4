//! Publishes the mesh's root certificate as the ConfigMap `ferry-ca-root-cert` (key
//! `root-cert.pem`) in every namespace whose pods need it: namespaces labelled for injection
//! (so the ConfigMap is there before the first injected pod starts) and namespaces with pods
//! that already carry a sidecar (`ferry.dev/status` or Istio's `sidecar.istio.io/status`).
//! The injected proxy mounts it at `/var/run/secrets/ferry`. Istio does the same with
//! `istio-ca-root-cert`.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{ListParams, PostParams};

use super::ROOT_CERT_CONFIGMAP;
use crate::install::crds::PART_OF;

/// The key of the certificate in the ConfigMap (the file the proxy reads).
pub const ROOT_CERT_KEY: &str = "root-cert.pem";

/// Namespaces that are never injected.
const IGNORED: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

/// Whether a namespace's labels select it for injection (`istio-injection=enabled` or any
/// `istio.io/rev`).
pub fn labelled_for_injection(labels: &BTreeMap<String, String>) -> bool {
    labels.get("istio-injection").map(String::as_str) == Some("enabled")
        || labels.contains_key("istio.io/rev")
}

/// Whether a pod carries an injected sidecar.
pub fn has_sidecar(annotations: &BTreeMap<String, String>) -> bool {
    annotations.contains_key("ferry.dev/status")
        || annotations.contains_key("sidecar.istio.io/status")
}

/// The namespaces that need the root certificate, from namespace metadata and the
/// namespaces of pods with a sidecar.
pub fn namespaces_needing_root_cert<'a>(
    namespaces: impl IntoIterator<Item = &'a ObjectMeta>,
    injected_pods: impl IntoIterator<Item = &'a ObjectMeta>,
) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = namespaces
        .into_iter()
        .filter(|m| labelled_for_injection(m.labels.as_ref().unwrap_or(&BTreeMap::new())))
        .filter_map(|m| m.name.clone())
        .collect();
    out.extend(
        injected_pods
            .into_iter()
            .filter(|m| has_sidecar(m.annotations.as_ref().unwrap_or(&BTreeMap::new())))
            .filter_map(|m| m.namespace.clone()),
    );
    out.retain(|ns| !IGNORED.contains(&ns.as_str()));
    out
}

/// What publishing did in one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The ConfigMap was created.
    Created,
    /// It held another certificate and was updated.
    Updated,
    /// It was current.
    Unchanged,
}

fn configmap(namespace: &str, root_pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(ROOT_CERT_CONFIGMAP.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                PART_OF.0.to_string(),
                PART_OF.1.to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            ROOT_CERT_KEY.to_string(),
            root_pem.to_string(),
        )])),
        ..Default::default()
    }
}

/// Creates or updates the ConfigMap in `namespace` (RBAC: `create` on ConfigMaps, `get` and
/// `update` only on this name).
pub async fn publish(
    client: &kube::Client,
    namespace: &str,
    root_pem: &str,
) -> Result<Published, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let wanted = configmap(namespace, root_pem);
    match api.get_opt(ROOT_CERT_CONFIGMAP).await? {
        None => match api.create(&PostParams::default(), &wanted).await {
            Ok(_) => Ok(Published::Created),
            // Another replica (an old leader) was faster; the next round compares.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Published::Unchanged),
            Err(e) => Err(e),
        },
        Some(existing) => {
            if existing
                .data
                .as_ref()
                .and_then(|d| d.get(ROOT_CERT_KEY))
                .map(String::as_str)
                == Some(root_pem)
            {
                return Ok(Published::Unchanged);
            }
            let mut updated = wanted;
            updated.metadata.resource_version = existing.metadata.resource_version;
            let mut labels = existing.metadata.labels.unwrap_or_default();
            labels.extend(updated.metadata.labels.take().unwrap_or_default());
            updated.metadata.labels = Some(labels);
            api.replace(ROOT_CERT_CONFIGMAP, &PostParams::default(), &updated)
                .await?;
            Ok(Published::Updated)
        }
    }
}

/// Lists namespaces and pods (metadata only), then publishes in every namespace that needs
/// the certificate; returns what happened per namespace.
pub async fn reconcile(
    client: &kube::Client,
    root_pem: &str,
) -> Result<BTreeMap<String, Published>, kube::Error> {
    let namespaces = Api::<Namespace>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await?;
    let pods = Api::<Pod>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await?;
    let wanted = namespaces_needing_root_cert(
        namespaces.items.iter().map(|n| &n.metadata),
        pods.items.iter().map(|p| &p.metadata),
    );
    let mut out = BTreeMap::new();
    for ns in wanted {
        let outcome = publish(client, &ns, root_pem).await?;
        out.insert(ns, outcome);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(
        ns: Option<&str>,
        name: &str,
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) -> ObjectMeta {
        let map = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        ObjectMeta {
            name: Some(name.into()),
            namespace: ns.map(str::to_string),
            labels: map(labels),
            annotations: map(annotations),
            ..Default::default()
        }
    }

    #[test]
    fn labelled_namespaces_and_namespaces_with_sidecars() {
        let namespaces = [
            meta(None, "shop", &[("istio-injection", "enabled")], &[]),
            meta(None, "canary", &[("istio.io/rev", "default")], &[]),
            meta(None, "off", &[("istio-injection", "disabled")], &[]),
            meta(None, "plain", &[], &[]),
            meta(None, "kube-system", &[("istio-injection", "enabled")], &[]),
        ];
        let pods = [
            meta(Some("plain"), "a", &[], &[("ferry.dev/status", "{}")]),
            meta(
                Some("legacy"),
                "b",
                &[],
                &[("sidecar.istio.io/status", "{}")],
            ),
            meta(Some("off"), "c", &[], &[]),
        ];
        let got = namespaces_needing_root_cert(&namespaces, &pods);
        let want: BTreeSet<String> = ["shop", "canary", "plain", "legacy"]
            .into_iter()
            .map(str::to_string)
            .collect();
        assert_eq!(got, want);
    }
}
