//! The mesh as the control plane knows it: namespaces, services with their ports and
//! endpoints, pods, and the policies in force (Istio's, with the Telemetries and the mesh
//! config, and Ferry's RedisPolicies). Sources (a manifest directory, a Kubernetes API
//! server) fill it; the compiler reads it. Plain data, no I/O.
//!
//! [`testing`] (with `cfg(test)` or the `test-support` feature) builds entries for tests.

use ferry_model::IstioResource;
use ferry_model::ferry::RedisPolicySpec;
use ferry_model::istio::{
    DestinationRuleSpec, MeshConfig, PeerAuthenticationSpec, TelemetrySpec, VirtualServiceSpec,
};
use std::collections::BTreeMap;
use std::net::IpAddr;

#[cfg(any(test, feature = "test-support"))]
pub mod testing;

/// Labels or annotations.
pub type Labels = BTreeMap<String, String>;

/// Everything the compiler needs to build any proxy's configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registry {
    /// Namespaces by name, with their labels.
    pub namespaces: BTreeMap<String, Labels>,
    /// Services, in a stable order (namespace, name).
    pub services: Vec<ServiceEntry>,
    /// Pods, in a stable order (namespace, name).
    pub pods: Vec<PodEntry>,
    /// VirtualServices, DestinationRules, PeerAuthentications, RedisPolicies, Telemetries and
    /// the mesh config.
    pub policies: Policies,
    /// DNS domain of the cluster (`cluster.local`).
    pub cluster_domain: String,
    /// Namespace whose policies apply mesh-wide (`istio-system`).
    pub root_namespace: String,
}

/// A Kubernetes Service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceEntry {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// `<name>.<namespace>.svc.<cluster domain>`.
    pub fqdn: String,
    /// Cluster IP; `None` for a headless service (`clusterIP: None`).
    pub cluster_ip: Option<IpAddr>,
    /// Ports.
    pub ports: Vec<PortEntry>,
    /// The pods behind the service (from its selector, or its EndpointSlices).
    pub endpoints: Vec<EndpointEntry>,
    /// The service's labels.
    pub labels: Labels,
    /// `exportTo`-like visibility: the namespaces that may see the service (`*` = all).
    pub export_to: Vec<String>,
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortEntry {
    /// Port name (its prefix declares the protocol, Istio's naming rules).
    pub name: String,
    /// Service port.
    pub port: u16,
    /// Container port on the endpoints.
    pub target_port: u16,
    /// `appProtocol`, if set.
    pub app_protocol: Option<String>,
}

/// One pod behind a service.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointEntry {
    /// Pod IP.
    pub ip: IpAddr,
    /// Pod name.
    pub pod: String,
    /// Pod namespace.
    pub namespace: String,
    /// Workload (StatefulSet, Deployment, ...) name.
    pub workload: String,
    /// Service account.
    pub service_account: String,
    /// Pod labels.
    pub labels: Labels,
    /// The pod runs a sidecar (label `security.istio.io/tlsMode: istio`).
    pub has_sidecar: bool,
    /// The pod is ready.
    pub ready: bool,
    /// Per-pod DNS name for StatefulSet pods: `<hostname>.<subdomain>.<ns>.svc.<domain>`.
    pub hostname: Option<String>,
}

/// A pod, whether or not a service selects it (proxies identify themselves by pod).
#[derive(Debug, Clone, PartialEq)]
pub struct PodEntry {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// IP, once known.
    pub ip: Option<IpAddr>,
    /// Labels.
    pub labels: Labels,
    /// Annotations.
    pub annotations: Labels,
    /// Workload name.
    pub workload: String,
    /// Workload kind (`StatefulSet`, `Deployment`, `Pod`, ...).
    pub workload_kind: String,
    /// Service account.
    pub service_account: String,
    /// Runs a sidecar.
    pub has_sidecar: bool,
    /// Ready.
    pub ready: bool,
    /// `spec.hostname` / `spec.subdomain` (StatefulSet pods).
    pub hostname: Option<String>,
    /// `spec.subdomain`.
    pub subdomain: Option<String>,
}

/// The policies in force (each one valid; invalid versions never get here): Istio's, and
/// Ferry's own (`ferry.dev`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policies {
    /// VirtualServices.
    pub virtual_services: Vec<IstioResource<VirtualServiceSpec>>,
    /// DestinationRules.
    pub destination_rules: Vec<IstioResource<DestinationRuleSpec>>,
    /// PeerAuthentications.
    pub peer_authentications: Vec<IstioResource<PeerAuthenticationSpec>>,
    /// RedisPolicies (`ferry.dev/v1alpha1`).
    pub redis_policies: Vec<IstioResource<RedisPolicySpec>>,
    /// Telemetry resources (`telemetry.istio.io`).
    pub telemetries: Vec<IstioResource<TelemetrySpec>>,
    /// The mesh config (`mesh` key of the root namespace's `istio` ConfigMap), if any.
    pub mesh: Option<MeshConfig>,
}

/// What differs between a registry and its next version, as the store knows once it has
/// brought the registry up to date in place ([`crate::store::Store::update_registry`]), so
/// that the compile cache keeps what still holds without comparing the two versions (the
/// old one no longer exists).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    /// The policies, the cluster domain or the root namespace changed, or the registry was
    /// rebuilt whole: nothing compiled for the previous version can be assumed to hold.
    pub everything: bool,
    /// The namespaces or their labels changed.
    pub namespaces: bool,
    /// The services added, removed or changed: the previous versions and the new ones.
    pub services: Vec<ServiceEntry>,
    /// The pods added, removed or changed, by (namespace, name).
    pub pods: std::collections::BTreeSet<(String, String)>,
}

impl Changes {
    /// Whether the two versions are the same.
    pub fn is_empty(&self) -> bool {
        !self.everything && !self.namespaces && self.services.is_empty() && self.pods.is_empty()
    }
}

/// Who a proxy is, as it says when it connects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ProxyIdentity {
    /// Pod name.
    pub pod: String,
    /// Namespace.
    pub namespace: String,
    /// Workload name.
    pub workload: String,
    /// Service account.
    pub service_account: String,
    /// Pod IP, when known.
    pub ip: Option<IpAddr>,
}
