//! Redis protocol support for Redis-aware telemetry: observe RESP2/RESP3 traffic in both
//! directions without copying payloads, and match replies to commands.
//!
//! - [`parser`]: the incremental, zero-copy RESP scanner (one per direction).
//! - [`command`]: the table of known command names, interned as [`CommandId`].
//! - [`tracker`]: FIFO reply matching with transactions, pub/sub, `MONITOR`, blocking commands.
//! - [`observer`]: [`RedisObserver`], the per-connection API the proxy calls once per read.

pub mod command;
pub mod observer;
pub mod parser;
pub mod tracker;

pub use command::CommandId;
pub use observer::RedisObserver;
pub use parser::{Direction, Element, Kind, Scanner, Token, Value, Visitor};
pub use tracker::{CommandDone, OpaqueReason, Outcome, Tracker};
