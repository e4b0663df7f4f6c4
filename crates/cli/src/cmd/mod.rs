//! One module per `ferry` subcommand: its arguments and what it runs.

pub mod ca;
pub mod control_plane;
pub mod inject;
pub mod install;
pub mod local_http;
pub mod mesh;
pub mod proxy;
pub mod proxy_init;
pub mod proxy_status;
pub mod proxy_tracing;
pub mod trace_collector;
pub mod up;
pub mod validate;
pub mod version;
pub mod webhook;
