//! Ferry's sidecar proxy.
//!
//! - [`redirect`]: the nat rules `ferry proxy-init` installs in a pod's network namespace.
//! - [`redis`]: RESP parsing and command/reply matching for Redis-aware telemetry.
//! - [`discovery`]: configuration streamed from the control plane (ACK/NACK, reconnection).
//! - [`identity`]: the workload certificate from the control plane's CA, and its renewal.
//! - [`tls`]: mutual TLS between sidecars (rustls configurations, SPIFFE checks, peer
//!   metadata exchange, which destinations get TLS).
//! - [`route`], [`cluster`], [`balance`], [`resilience`]: traffic policy — VirtualService
//!   routes, DestinationRule clusters, load balancing, connection pools, outlier detection,
//!   retries.

pub mod admin;
pub mod balance;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod detect;
pub mod discovery;
pub mod http;
pub mod identity;
pub mod lifecycle;
pub mod listener;
pub mod redirect;
pub mod redis;
pub mod resilience;
pub mod route;
pub mod server;
pub mod tcp;
pub mod telemetry;
pub mod tls;
pub mod trace;
