//! Configuration from the control plane: the proxy's side of the gRPC stream
//! `ferry.discovery.v1.ConfigDiscovery`.
//!
//! [`run`] keeps one stream open, applies each valid snapshot atomically (ACK) and rejects
//! an invalid one with the loader's reason (NACK), keeping its last good configuration.
//! When the control plane is unreachable it keeps serving with what it holds and reconnects
//! with exponential backoff and jitter. The stream runs over plaintext (15010) or over TLS
//! to the CA's port (15012), verifying the control plane against the mesh root and proving
//! the proxy's identity (its workload certificate, or its token until it has one).
//!
//! With a cache file (`ferry proxy --config-cache`), each snapshot applied is also kept on
//! disk, and a proxy that restarts applies it at once, before the control plane answers
//! (so it keeps serving when it restarts while the control plane is down).
//!
//! - [`client`]: the stream, validation, ACK/NACK.
//! - [`cache`]: the last applied snapshot on disk.
//! - [`backoff`]: reconnection delays.

pub mod backoff;
pub mod cache;
pub mod client;

pub use client::{ControlPlaneTls, DiscoveryState, ProxyInfo, run, run_cached, run_with};
