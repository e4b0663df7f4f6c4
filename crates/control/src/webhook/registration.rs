//! The `admissionregistration.k8s.io/v1` `MutatingWebhookConfiguration` that makes the API
//! server call the webhook: one webhook per entry of Istio's selector table
//! (`ferry_inject::webhooks::entries`), all pointing at the webhook's Service.

use ferry_inject::webhooks;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rustls::pki_types::pem::{PemObject, SectionKind};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Name of the configuration for the default revision.
pub const DEFAULT_CONFIG_NAME: &str = "ferry-sidecar-injector";

/// A CA bundle that cannot go into the configuration.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// The file could not be read.
    #[error("cannot read CA bundle {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a PEM bundle of certificates.
    #[error("CA bundle {path} is not a PEM certificate bundle: {reason}")]
    NotPem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Where the API server reaches the webhook, and which entries to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Namespace of the webhook's Service.
    pub namespace: String,
    /// Name of the webhook's Service.
    pub service: String,
    /// Service port the API server connects to (the Service maps it to 15017).
    pub port: i32,
    /// Request path.
    pub path: String,
    /// Control-plane revision; picks the selector entries and the configuration's name.
    pub revision: String,
    /// Also register the `auto.` entry (inject in namespaces without labels).
    pub enable_namespaces_by_default: bool,
    /// How long the API server waits for an answer.
    pub timeout_seconds: i32,
}

impl Default for Registration {
    fn default() -> Self {
        Self {
            namespace: "ferry-system".into(),
            service: "ferry-control".into(),
            port: 443,
            path: "/inject".into(),
            revision: "default".into(),
            enable_namespaces_by_default: false,
            timeout_seconds: 10,
        }
    }
}

/// Checks that `pem` holds certificates and nothing else (a private key must never be
/// published in a cluster object).
fn check_ca_bundle(pem: &[u8], path: &Path) -> Result<(), RegistrationError> {
    let not_pem = |reason: String| RegistrationError::NotPem {
        path: path.to_path_buf(),
        reason,
    };
    let mut certificates = 0;
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        match section {
            Ok((SectionKind::Certificate, der)) if !der.is_empty() => certificates += 1,
            Ok((kind, _)) => return Err(not_pem(format!("it holds a {kind:?} section"))),
            Err(e) => return Err(not_pem(e.to_string())),
        }
    }
    if certificates == 0 {
        return Err(not_pem("no CERTIFICATE section found".into()));
    }
    Ok(())
}

impl Registration {
    /// `ferry-sidecar-injector`, or `ferry-sidecar-injector-<revision>`.
    pub fn config_name(&self) -> String {
        if self.revision == "default" || self.revision.is_empty() {
            DEFAULT_CONFIG_NAME.to_string()
        } else {
            format!("{DEFAULT_CONFIG_NAME}-{}", self.revision)
        }
    }

    /// Renders the configuration with the CA bundle read from `ca_path`.
    pub fn render_from_file(
        &self,
        ca_path: &Path,
    ) -> Result<MutatingWebhookConfiguration, RegistrationError> {
        let pem = std::fs::read(ca_path).map_err(|source| RegistrationError::Read {
            path: ca_path.to_path_buf(),
            source,
        })?;
        self.render(&pem, ca_path)
    }

    /// Renders the configuration; `ca_pem` (named `ca_path` in errors) becomes `caBundle`.
    pub fn render(
        &self,
        ca_pem: &[u8],
        ca_path: &Path,
    ) -> Result<MutatingWebhookConfiguration, RegistrationError> {
        check_ca_bundle(ca_pem, ca_path)?;
        Ok(self.build(Some(ByteString(ca_pem.to_vec()))))
    }

    /// Renders the configuration without `caBundle`, for an installation whose control plane
    /// patches the bundle in at start ([`crate::bootstrap::webhook_ca`]).
    pub fn render_without_ca_bundle(&self) -> MutatingWebhookConfiguration {
        self.build(None)
    }

    fn build(&self, ca_bundle: Option<ByteString>) -> MutatingWebhookConfiguration {
        let revision = if self.revision.is_empty() {
            "default"
        } else {
            &self.revision
        };
        let client_config = WebhookClientConfig {
            ca_bundle,
            service: Some(ServiceReference {
                name: self.service.clone(),
                namespace: self.namespace.clone(),
                path: Some(self.path.clone()),
                port: Some(self.port),
            }),
            url: None,
        };
        let rules = vec![RuleWithOperations {
            operations: Some(vec!["CREATE".into()]),
            api_groups: Some(vec![String::new()]),
            api_versions: Some(vec!["v1".into()]),
            resources: Some(vec!["pods".into()]),
            scope: None,
        }];
        let webhooks = webhooks::entries(revision, self.enable_namespaces_by_default)
            .into_iter()
            .map(|entry| MutatingWebhook {
                name: entry.name,
                admission_review_versions: vec!["v1".into(), "v1beta1".into()],
                client_config: client_config.clone(),
                failure_policy: Some("Fail".into()),
                match_policy: Some("Equivalent".into()),
                namespace_selector: Some(entry.namespace_selector),
                object_selector: Some(entry.object_selector),
                reinvocation_policy: Some("Never".into()),
                rules: Some(rules.clone()),
                side_effects: "None".into(),
                timeout_seconds: Some(self.timeout_seconds),
                match_conditions: None,
            })
            .collect();
        let labels = BTreeMap::from([
            ("app".to_string(), "sidecar-injector".to_string()),
            ("istio.io/rev".to_string(), revision.to_string()),
        ]);
        MutatingWebhookConfiguration {
            metadata: ObjectMeta {
                name: Some(self.config_name()),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            webhooks: Some(webhooks),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn one_webhook_per_entry_with_the_entry_selectors() {
        let pem = ca_pem();
        let reg = Registration::default();
        let mwc = reg.render(pem.as_bytes(), Path::new("ca.pem")).unwrap();
        assert_eq!(mwc.metadata.name.as_deref(), Some("ferry-sidecar-injector"));
        let hooks = mwc.webhooks.unwrap();
        let entries = webhooks::entries("default", false);
        assert_eq!(hooks.len(), entries.len());
        for (hook, entry) in hooks.iter().zip(&entries) {
            assert_eq!(hook.name, entry.name);
            assert_eq!(
                hook.namespace_selector.as_ref(),
                Some(&entry.namespace_selector)
            );
            assert_eq!(hook.object_selector.as_ref(), Some(&entry.object_selector));
            assert_eq!(hook.side_effects, "None");
            assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
            let svc = hook.client_config.service.as_ref().unwrap();
            assert_eq!(
                (
                    svc.name.as_str(),
                    svc.namespace.as_str(),
                    svc.path.as_deref(),
                    svc.port
                ),
                ("ferry-control", "ferry-system", Some("/inject"), Some(443))
            );
        }
    }

    #[test]
    fn ca_bundle_is_base64_of_the_pem_file_in_json() {
        let pem = ca_pem();
        let reg = Registration::default();
        let mwc = reg.render(pem.as_bytes(), Path::new("ca.pem")).unwrap();
        let json = serde_json::to_value(&mwc).unwrap();
        assert_eq!(json["apiVersion"], "admissionregistration.k8s.io/v1");
        assert_eq!(json["kind"], "MutatingWebhookConfiguration");
        let bundle = json["webhooks"][0]["clientConfig"]["caBundle"]
            .as_str()
            .unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(bundle)
            .unwrap();
        assert_eq!(decoded, pem.as_bytes());
        assert_eq!(
            json["webhooks"][0]["rules"],
            serde_json::json!([{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}])
        );
    }

    #[test]
    fn revisions_name_the_configuration_and_narrow_the_entries() {
        let reg = Registration {
            revision: "canary".into(),
            ..Registration::default()
        };
        let mwc = reg
            .render(ca_pem().as_bytes(), Path::new("ca.pem"))
            .unwrap();
        assert_eq!(
            mwc.metadata.name.as_deref(),
            Some("ferry-sidecar-injector-canary")
        );
        assert_eq!(
            mwc.webhooks.unwrap().len(),
            webhooks::entries("canary", false).len()
        );

        let auto = Registration {
            enable_namespaces_by_default: true,
            ..Registration::default()
        };
        let hooks = auto
            .render(ca_pem().as_bytes(), Path::new("ca.pem"))
            .unwrap()
            .webhooks
            .unwrap();
        assert!(hooks.iter().any(|h| h.name.starts_with("auto.")));
    }

    #[test]
    fn bad_bundles_name_the_file() {
        let reg = Registration::default();
        for bad in [
            "hello".to_string(),
            String::new(),
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n".to_string(),
            rcgen::KeyPair::generate().unwrap().serialize_pem(),
        ] {
            let err = reg
                .render(bad.as_bytes(), Path::new("/x/ca.pem"))
                .unwrap_err();
            assert!(err.to_string().contains("/x/ca.pem"), "{err}");
        }
        let err = reg
            .render_from_file(Path::new("/definitely/missing.pem"))
            .unwrap_err();
        assert!(err.to_string().contains("/definitely/missing.pem"), "{err}");
    }
}
