//! The proxy's configuration: the model shared with the control plane
//! ([`ferry_proto::config`]), read from a static YAML file (`ferry proxy --config`) by
//! [`file`], and compiled by [`snapshot`] into the lookup tables the data path uses.

pub mod file;
pub mod snapshot;

pub use ferry_proto::config::*;
pub use ferry_proto::protocol::Protocol;
pub use snapshot::Snapshot;
