//! One module per `ferry` subcommand: its arguments and what it runs.

pub mod inject;
pub mod mesh;
pub mod proxy;
pub mod proxy_init;
pub mod validate;
pub mod webhook;
