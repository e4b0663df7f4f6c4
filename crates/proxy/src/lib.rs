//! Ferry's sidecar proxy.
//!
//! - [`redirect`]: the nat rules `ferry proxy-init` installs in a pod's network namespace.
//! - [`redis`]: RESP parsing and command/reply matching for Redis-aware telemetry.

pub mod config;
pub mod detect;
pub mod listener;
pub mod redirect;
pub mod redis;
pub mod tcp;
pub mod telemetry;
