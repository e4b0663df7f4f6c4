//! Opaque TCP forwarding.

pub mod forward;
