//! One module per `ferry` subcommand: its arguments and what it runs.

pub mod control_plane;
pub mod inject;
pub mod local_http;
pub mod mesh;
pub mod proxy;
pub mod proxy_init;
pub mod proxy_status;
pub mod up;
pub mod validate;
pub mod webhook;
