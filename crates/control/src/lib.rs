//! Ferry's control plane.
//!
//! - [`webhook`]: the sidecar-injection admission webhook (HTTPS server and its
//!   `MutatingWebhookConfiguration`).
//! - [`registry`]: the mesh as the control plane knows it, which sources fill and the
//!   compiler reads.
//! - [`distribution`]: the gRPC stream that keeps every proxy's configuration current.
//! - [`bootstrap`]: start-up in a cluster: mesh settings, leader Lease, webhook caBundle,
//!   root-certificate ConfigMaps.
//! - [`install`]: the Kubernetes installation (`ferry install`), generated from code.
//! - [`ca`]: the mesh's certificate authority and its certificate API (15012, TLS).

pub mod bootstrap;
pub mod ca;
pub mod compiler;
pub mod distribution;
pub mod install;
pub mod plane;
pub mod registry;
pub mod source;
pub mod store;
pub mod webhook;
