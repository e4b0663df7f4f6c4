//! Redis protocol support for Redis-aware telemetry and RedisPolicy: observe RESP2/RESP3
//! traffic in both directions without copying payloads, match replies to commands, and
//! enforce per-command faults, timeouts and mirroring.
//!
//! - [`parser`]: the incremental, zero-copy RESP scanner (one per direction).
//! - [`command`]: the table of known command names, interned as [`CommandId`].
//! - [`tracker`]: FIFO reply matching with transactions, pub/sub, `MONITOR`, blocking commands.
//! - [`observer`]: [`RedisObserver`], the per-connection API the proxy calls once per read.
//! - [`policy`]: a RedisPolicy compiled for per-command decisions.
//! - [`sequencer`]: reply order when the proxy answers some commands itself.
//! - [`enforce`]: forwarding a connection under a RedisPolicy; [`mirror`]: its mirror.

pub mod command;
pub mod enforce;
pub mod mirror;
pub mod observer;
pub mod parser;
pub mod policy;
pub mod sequencer;
pub mod tracker;

pub use command::CommandId;
pub use observer::RedisObserver;
pub use parser::{Direction, Element, Kind, Scanner, Token, Value, Visitor};
pub use tracker::{CommandDone, OpaqueReason, Outcome, Tracker};
