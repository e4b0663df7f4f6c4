//! Opaque TCP: the byte pump ([`forward`]) and the per-connection routing decision
//! ([`route`]).

pub mod forward;
pub mod route;
