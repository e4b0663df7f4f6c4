//! What the control plane does at start in a cluster (DESIGN.md, point 7; issue 8), without
//! cert-manager:
//!
//! - [`mesh`]: reads the mesh settings from the `ferry-mesh` ConfigMap (trust domain, proxy
//!   image, native sidecars, default PeerAuthentication mode) into the injector's settings.
//! - [`leader`]: a `coordination.k8s.io` Lease elects the one replica that does the
//!   run-once work below; every replica serves the webhook, the CA and the configuration.
//! - [`webhook_ca`]: patches the CA bundle into Ferry's MutatingWebhookConfiguration and
//!   keeps it patched.
//! - [`root_cert`]: publishes the root certificate as the ConfigMap `ferry-ca-root-cert` in
//!   every namespace with injected pods (or labelled for injection), which the injected
//!   proxy mounts, as Istio does with `istio-ca-root-cert`.
//! - [`duties`]: runs the last two while this replica leads.
//!
//! The CA's key and certificates live in the Secret [`CA_SECRET`] in the control plane's
//! namespace, through the CA's own `ca::store::SecretStore` (create-only, so two replicas
//! starting at once agree on one root).

pub mod duties;
pub mod leader;
pub mod mesh;
pub mod root_cert;
pub mod webhook_ca;

pub use crate::install::{
    CA_SECRET, CONTROL_PLANE, DEFAULT_NAMESPACE, LEADER_LEASE, MESH_CONFIGMAP, ROOT_CERT_CONFIGMAP,
};

/// The control plane's namespace: `POD_NAMESPACE` (set by the Deployment), else
/// [`DEFAULT_NAMESPACE`].
pub fn own_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
}

/// This replica's name for the leader Lease: `POD_NAME`, else the host name and process id.
pub fn own_identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "ferry".into());
            format!("{host}-{}", std::process::id())
        })
}
