//! The mesh settings in the `ferry-mesh` ConfigMap (written by `ferry install` and the Helm
//! chart, one key per setting) and how they shape injection.

use std::collections::BTreeMap;

use ferry_inject::InjectConfig;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

/// Mesh settings; a missing key keeps Ferry's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshSettings {
    /// SPIFFE trust domain.
    pub trust_domain: String,
    /// Image of the injected containers.
    pub proxy_image: String,
    /// `imagePullPolicy` of the injected containers, if set.
    pub image_pull_policy: Option<String>,
    /// Inject native sidecars.
    pub native_sidecars: bool,
    /// mTLS mode where no PeerAuthentication applies (`PERMISSIVE`, `STRICT`, `DISABLE`).
    pub default_peer_authentication_mode: String,
    /// Where proxies reach the control plane (configuration and certificates).
    pub control_plane_address: String,
}

impl Default for MeshSettings {
    fn default() -> Self {
        let inject = InjectConfig::default();
        MeshSettings {
            trust_domain: inject.trust_domain,
            proxy_image: inject.proxy_image,
            image_pull_policy: inject.image_pull_policy,
            native_sidecars: inject.native_sidecars,
            default_peer_authentication_mode: "PERMISSIVE".into(),
            control_plane_address: inject.control_plane_address,
        }
    }
}

/// A setting with a value the control plane cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ConfigMap {configmap}, key {key}: {message}")]
pub struct MeshError {
    /// `namespace/name` of the ConfigMap.
    pub configmap: String,
    /// The key.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl MeshSettings {
    /// Reads the settings from a ConfigMap's `data`; `configmap` names it in errors.
    /// Unknown keys are ignored (a newer installer may add some).
    pub fn from_data(
        configmap: &str,
        data: &BTreeMap<String, String>,
    ) -> Result<MeshSettings, MeshError> {
        let err = |key: &str, message: String| MeshError {
            configmap: configmap.to_string(),
            key: key.to_string(),
            message,
        };
        let mut s = MeshSettings::default();
        let text = |key: &str| data.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
        if let Some(v) = text("trustDomain") {
            s.trust_domain = v.to_string();
        }
        if let Some(v) = text("proxyImage") {
            s.proxy_image = v.to_string();
        }
        if let Some(v) = text("imagePullPolicy") {
            if !["Always", "IfNotPresent", "Never"].contains(&v) {
                return Err(err(
                    "imagePullPolicy",
                    format!("`{v}` is not Always, IfNotPresent or Never"),
                ));
            }
            s.image_pull_policy = Some(v.to_string());
        }
        if let Some(v) = text("nativeSidecars") {
            s.native_sidecars = match v {
                "true" => true,
                "false" => false,
                other => {
                    return Err(err(
                        "nativeSidecars",
                        format!("`{other}` is not true or false"),
                    ));
                }
            };
        }
        if let Some(v) = text("defaultPeerAuthenticationMode") {
            if !["PERMISSIVE", "STRICT", "DISABLE"].contains(&v) {
                return Err(err(
                    "defaultPeerAuthenticationMode",
                    format!("`{v}` is not PERMISSIVE, STRICT or DISABLE"),
                ));
            }
            s.default_peer_authentication_mode = v.to_string();
        }
        if let Some(v) = text("controlPlaneAddress") {
            s.control_plane_address = v.to_string();
        }
        Ok(s)
    }

    /// `base` with these settings applied.
    pub fn inject_config(&self, base: InjectConfig) -> InjectConfig {
        InjectConfig {
            trust_domain: self.trust_domain.clone(),
            proxy_image: self.proxy_image.clone(),
            image_pull_policy: self.image_pull_policy.clone(),
            native_sidecars: self.native_sidecars,
            control_plane_address: self.control_plane_address.clone(),
            ..base
        }
    }
}

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The API refused.
    #[error("reading ConfigMap {0}: {1}")]
    Api(String, kube::Error),
    /// A setting is invalid.
    #[error(transparent)]
    Invalid(#[from] MeshError),
}

/// Reads the ConfigMap `name` in `namespace`; an absent ConfigMap gives the defaults.
pub async fn load(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<MeshSettings, LoadError> {
    let what = format!("{namespace}/{name}");
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(cm)) => Ok(MeshSettings::from_data(
            &what,
            &cm.data.unwrap_or_default(),
        )?),
        Ok(None) => Ok(MeshSettings::default()),
        Err(e) => Err(LoadError::Api(what, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settings_from_the_installed_configmap() {
        let objects = crate::install::render(&Default::default(), "ferry-system");
        let cm = objects
            .iter()
            .find(|m| m.kind() == "ConfigMap")
            .map(|m| serde_json::from_value::<ConfigMap>(m.0.clone()).unwrap())
            .unwrap();
        let s = MeshSettings::from_data("ferry-system/ferry-mesh", &cm.data.unwrap()).unwrap();
        assert_eq!(s.trust_domain, "cluster.local");
        assert!(s.native_sidecars);
        assert_eq!(s.default_peer_authentication_mode, "PERMISSIVE");
        assert_eq!(
            s.control_plane_address,
            "ferry-control.ferry-system.svc:15012"
        );
        let cfg = s.inject_config(InjectConfig::default());
        assert_eq!(cfg.proxy_image, s.proxy_image);
        assert_eq!(cfg.image_pull_policy.as_deref(), Some("IfNotPresent"));
    }

    #[test]
    fn bad_settings_name_the_key() {
        for (key, value) in [
            ("nativeSidecars", "yes"),
            ("imagePullPolicy", "Sometimes"),
            ("defaultPeerAuthenticationMode", "strict"),
        ] {
            let err = MeshSettings::from_data("ns/cm", &data(&[(key, value)])).unwrap_err();
            assert_eq!(err.key, key);
            assert!(err.to_string().contains("ns/cm") && err.to_string().contains(value));
        }
        let s = MeshSettings::from_data("ns/cm", &data(&[("future", "x"), ("proxyImage", "")]))
            .unwrap();
        assert_eq!(s, MeshSettings::default());
    }
}
