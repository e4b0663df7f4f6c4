//! Ferry's control plane.
//!
//! - [`webhook`]: the sidecar-injection admission webhook (HTTPS server and its
//!   `MutatingWebhookConfiguration`).
//! - [`registry`]: the mesh as the control plane knows it, which sources fill and the
//!   compiler reads.

pub mod registry;
pub mod webhook;
