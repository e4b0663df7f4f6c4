//! Keeps the CA bundle of Ferry's MutatingWebhookConfiguration equal to the root that signs
//! the webhook's serving certificate. `ferry install` and the Helm chart register the
//! webhook without `caBundle`; the leader patches it in (a strategic merge patch by webhook
//! name, the only write its RBAC allows: `patch` on that one configuration) and checks it
//! again periodically, so a re-install or a hand edit is repaired.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

/// Field manager of the control plane's patches.
pub const FIELD_MANAGER: &str = "ferry-control";

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleOutcome {
    /// These webhooks had another bundle (or none) and were patched.
    Patched(Vec<String>),
    /// Every webhook already had the bundle.
    Unchanged,
    /// The configuration does not exist (not installed yet, or being removed).
    Missing,
}

/// Makes every webhook of the configuration `name` carry `ca_pem` as its `caBundle`.
pub async fn ensure_ca_bundle(
    client: &kube::Client,
    name: &str,
    ca_pem: &[u8],
) -> Result<BundleOutcome, kube::Error> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let Some(config) = api.get_opt(name).await? else {
        return Ok(BundleOutcome::Missing);
    };
    let stale: Vec<String> = config
        .webhooks
        .unwrap_or_default()
        .into_iter()
        .filter(|w| w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(ca_pem))
        .map(|w| w.name)
        .collect();
    if stale.is_empty() {
        return Ok(BundleOutcome::Unchanged);
    }
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let webhooks: Vec<_> = stale
        .iter()
        .map(|name| json!({"name": name, "clientConfig": {"caBundle": bundle}}))
        .collect();
    // `resourceVersion` makes the patch fail (409) if the configuration changed since it
    // was read; the next check then starts over.
    let patch = json!({
        "metadata": {"resourceVersion": config.metadata.resource_version},
        "webhooks": webhooks,
    });
    api.patch(
        name,
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        },
        &Patch::Strategic(patch),
    )
    .await?;
    Ok(BundleOutcome::Patched(stale))
}

/// The bundle each webhook of `name` carries (for checks and tests).
pub async fn current_bundles(
    client: &kube::Client,
    name: &str,
) -> Result<BTreeMap<String, Option<Vec<u8>>>, kube::Error> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    Ok(api
        .get_opt(name)
        .await?
        .and_then(|c| c.webhooks)
        .unwrap_or_default()
        .into_iter()
        .map(|w| (w.name, w.client_config.ca_bundle.map(|b| b.0)))
        .collect())
}
