//! Ferry's control plane.
//!
//! - [`webhook`]: the sidecar-injection admission webhook (HTTPS server and its
//!   `MutatingWebhookConfiguration`).
//! - [`registry`]: the mesh as the control plane knows it, which sources fill and the
//!   compiler reads.
//! - [`distribution`]: the gRPC stream that keeps every proxy's configuration current.

pub mod compiler;
pub mod distribution;
pub mod plane;
pub mod registry;
pub mod source;
pub mod store;
pub mod webhook;
