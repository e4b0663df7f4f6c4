//! Accepting connections: the outbound (15001) and inbound (15006) capture listeners, and
//! the explicit forward listener, each finding where a connection was going.

pub mod orig_dst;
