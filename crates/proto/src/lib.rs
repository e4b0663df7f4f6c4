//! What Ferry's control plane and proxies exchange.
//!
//! - [`config`]: the configuration of one proxy (its identity, the services and endpoints it
//!   can reach, data-path settings), produced by the control plane's compiler (or read from a
//!   static file) and enforced by the proxy.
//! - [`protocol`]: how service ports declare their protocol.
//! - [`discovery`]: the configuration stream between the control plane and the proxies.

pub mod config;
pub mod discovery;
pub mod protocol;
