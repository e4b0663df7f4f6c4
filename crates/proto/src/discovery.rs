//! The configuration stream between the control plane and the proxies: the gRPC service
//! `ferry.discovery.v1.ConfigDiscovery` (`proto/ferry/discovery/v1/discovery.proto`).
//!
//! The Rust code is generated at build time: `protox` (a protobuf compiler in Rust, so no
//! `protoc` binary is needed) compiles the `.proto` file and tonic's prost generator turns
//! the descriptors into message types, a client and a server trait. The configuration
//! travels as JSON inside [`v1::ConfigSnapshot::config_json`] (serde's form of
//! [`crate::config::ProxyConfig`]), which keeps the evolving configuration model out of the
//! `.proto` file: only the envelope (identity, versions, ACK/NACK) is protobuf.

/// Version 1 of the protocol: messages, `config_discovery_client` and
/// `config_discovery_server`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("ferry.discovery.v1");
}
