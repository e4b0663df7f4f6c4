//! Mesh settings shared by the subcommands that inject (`ferry inject`, `ferry webhook`).

use ferry_inject::InjectConfig;

/// Flags that set the mesh defaults injection uses.
#[derive(clap::Args, Debug, Clone)]
pub struct MeshArgs {
    /// Image of the injected `ferry-init` and `ferry-proxy` containers.
    #[arg(long, default_value = ferry_inject::config::DEFAULT_PROXY_IMAGE)]
    pub proxy_image: String,
    /// imagePullPolicy of the injected containers (Always, IfNotPresent, Never).
    #[arg(long, value_parser = ["Always", "IfNotPresent", "Never"])]
    pub image_pull_policy: Option<String>,
    /// SPIFFE trust domain of the mesh.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// Inject the proxy as a Kubernetes native sidecar (an init container with
    /// `restartPolicy: Always`); `false` injects a classic sidecar container.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub native_sidecars: bool,
    /// Control-plane revision the injector belongs to.
    #[arg(long, default_value = "default")]
    pub revision: String,
    /// Address the proxies reach the control plane (configuration and certificates) at.
    #[arg(long, default_value = "ferry-control.ferry-system.svc:15012")]
    pub control_plane_address: String,
    /// Cluster name reported by the proxies.
    #[arg(long, default_value = "Kubernetes")]
    pub cluster_id: String,
}

impl MeshArgs {
    /// The injector settings these flags describe.
    pub fn to_config(&self) -> InjectConfig {
        InjectConfig {
            proxy_image: self.proxy_image.clone(),
            image_pull_policy: self.image_pull_policy.clone(),
            trust_domain: self.trust_domain.clone(),
            native_sidecars: self.native_sidecars,
            revision: self.revision.clone(),
            control_plane_address: self.control_plane_address.clone(),
            cluster_id: self.cluster_id.clone(),
            ..InjectConfig::default()
        }
    }
}
