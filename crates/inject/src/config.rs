//! The mesh-wide settings that shape injection (Istio's injector ConfigMap and values).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Ferry's default proxy image, the same image for `ferry-init` and `ferry-proxy`.
pub const DEFAULT_PROXY_IMAGE: &str =
    concat!("ghcr.io/ferry-mesh/ferry:", env!("CARGO_PKG_VERSION"));

/// What the injector does for a pod that sets no explicit `sidecar.istio.io/inject` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InjectionPolicy {
    /// Inject unless the pod opts out (Istio's default, `global.proxy.autoInject: enabled`).
    #[default]
    Enabled,
    /// Inject only pods that opt in explicitly or match an always-inject selector.
    Disabled,
}

/// CPU and memory of the injected containers, as Kubernetes quantities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyResources {
    /// `requests.cpu`, e.g. `100m`.
    pub cpu_request: Option<String>,
    /// `requests.memory`, e.g. `128Mi`.
    pub memory_request: Option<String>,
    /// `limits.cpu`, e.g. `2000m`.
    pub cpu_limit: Option<String>,
    /// `limits.memory`, e.g. `1024Mi`.
    pub memory_limit: Option<String>,
}

impl Default for ProxyResources {
    fn default() -> Self {
        Self {
            cpu_request: Some("100m".into()),
            memory_request: Some("128Mi".into()),
            cpu_limit: Some("2000m".into()),
            memory_limit: Some("1024Mi".into()),
        }
    }
}

/// Mesh settings that injection depends on. `Default` gives Istio's default install.
#[derive(Debug, Clone)]
pub struct InjectConfig {
    /// Image of `ferry-init` and `ferry-proxy`.
    pub proxy_image: String,
    /// `imagePullPolicy` of the injected containers; unset leaves Kubernetes' default.
    pub image_pull_policy: Option<String>,
    /// SPIFFE trust domain (`cluster.local`).
    pub trust_domain: String,
    /// Cluster name reported by the proxy (`Kubernetes`).
    pub cluster_id: String,
    /// Mesh id; defaults to the trust domain when unset.
    pub mesh_id: Option<String>,
    /// Network name, if the mesh spans networks.
    pub network: Option<String>,
    /// Control-plane revision this injector serves (`default`).
    pub revision: String,
    /// Put the proxy in `initContainers` with `restartPolicy: Always` (Kubernetes native sidecar).
    pub native_sidecars: bool,
    /// What happens to pods without an explicit inject value.
    pub policy: InjectionPolicy,
    /// Pods matching any of these are not injected unless they opt in explicitly.
    pub never_inject_selector: Vec<LabelSelector>,
    /// Pods matching any of these are injected even when the policy is disabled.
    pub always_inject_selector: Vec<LabelSelector>,
    /// Rewrite application HTTP/TCP/gRPC probes to go through the proxy's status port.
    pub rewrite_app_probes: bool,
    /// Point Prometheus scrape annotations at the proxy's merged metrics.
    pub prometheus_merge: bool,
    /// Start the application only once the proxy is ready (classic sidecars).
    pub hold_application_until_proxy_starts: bool,
    /// Where the proxy reaches the control plane (config and certificates).
    pub control_plane_address: String,
    /// Default resources of the injected containers.
    pub proxy_resources: ProxyResources,
    /// Also register Istio's `auto.` webhook entry (inject in unlabelled namespaces).
    pub enable_namespaces_by_default: bool,
}

impl Default for InjectConfig {
    fn default() -> Self {
        Self {
            proxy_image: DEFAULT_PROXY_IMAGE.to_string(),
            image_pull_policy: None,
            trust_domain: "cluster.local".into(),
            cluster_id: "Kubernetes".into(),
            mesh_id: None,
            network: None,
            revision: "default".into(),
            native_sidecars: true,
            policy: InjectionPolicy::Enabled,
            never_inject_selector: Vec::new(),
            always_inject_selector: Vec::new(),
            rewrite_app_probes: true,
            prometheus_merge: true,
            hold_application_until_proxy_starts: false,
            control_plane_address: "ferry-control.ferry-system.svc:15012".into(),
            proxy_resources: ProxyResources::default(),
            enable_namespaces_by_default: false,
        }
    }
}

impl InjectConfig {
    /// The mesh id in force: the configured one, or the trust domain.
    pub fn effective_mesh_id(&self) -> &str {
        self.mesh_id.as_deref().unwrap_or(&self.trust_domain)
    }
}
