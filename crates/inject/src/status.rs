//! The status annotation that records what injection added, so a later injection can take
//! exactly that away again (Ferry's own `ferry.dev/status`, and Istio's
//! `sidecar.istio.io/status` when a pod was injected by Istio before).

use serde::{Deserialize, Serialize};

/// Ferry's status annotation.
pub const FERRY_STATUS: &str = "ferry.dev/status";
/// Istio's status annotation.
pub const ISTIO_STATUS: &str = "sidecar.istio.io/status";

/// What one injection added to a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SidecarStatus {
    /// Init containers added (`ferry-init`, and `ferry-proxy` for native sidecars).
    #[serde(default)]
    pub init_containers: Option<Vec<String>>,
    /// Regular containers added (`ferry-proxy` for classic sidecars).
    #[serde(default)]
    pub containers: Option<Vec<String>>,
    /// Volumes added.
    #[serde(default)]
    pub volumes: Option<Vec<String>>,
    /// Image pull secrets added.
    #[serde(default)]
    pub image_pull_secrets: Option<Vec<String>>,
    /// Revision of the injector.
    #[serde(default)]
    pub revision: String,
}

impl SidecarStatus {
    /// Parses a status annotation value; `None` when it is not the expected JSON.
    pub fn parse(value: &str) -> Option<Self> {
        serde_json::from_str(value).ok()
    }

    /// The annotation value.
    pub fn to_annotation(&self) -> String {
        // Serializing plain strings and lists cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Every container name listed, init or not.
    pub fn all_containers(&self) -> impl Iterator<Item = &String> {
        self.init_containers
            .iter()
            .flatten()
            .chain(self.containers.iter().flatten())
    }
}
