//! Ferry's sidecar proxy.
//!
//! - [`redirect`]: the nat rules `ferry proxy-init` installs in a pod's network namespace.
//! - [`redis`]: RESP parsing and command/reply matching for Redis-aware telemetry.
//! - [`discovery`]: configuration streamed from the control plane (ACK/NACK, reconnection).

pub mod admin;
pub mod config;
pub mod conn;
pub mod detect;
pub mod discovery;
pub mod http;
pub mod lifecycle;
pub mod listener;
pub mod redirect;
pub mod redis;
pub mod server;
pub mod tcp;
pub mod telemetry;
