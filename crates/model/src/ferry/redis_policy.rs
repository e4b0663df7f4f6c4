//! `RedisPolicy` (`ferry.dev/v1alpha1`): what the client-side proxies do with the commands
//! sent to one Redis service — or to one subset of it, or one StatefulSet pod — beyond
//! Istio, whose APIs see Redis as opaque TCP. Envoy's `redis_proxy` fault model (error or
//! delay, a percentage, a command list) on a transparent sidecar, plus per-command timeouts
//! and mirroring of read-only commands to a subset:
//!
//! ```yaml
//! apiVersion: ferry.dev/v1alpha1
//! kind: RedisPolicy
//! metadata: {name: redis-faults, namespace: default}
//! spec:
//!   host: redis                  # a service, or one pod: redis-0.redis
//!   port: 6379                   # optional: every port of the service
//!   subset: v1                   # optional: only connections routed to this subset
//!   faults:                      # first match per command
//!   - commands: [GET]
//!     abort: {error: "ERR injected by Ferry", percentage: 20}
//!   - commands: [SET, HSET]
//!     delay: {fixedDelay: 50ms, percentage: 10}
//!   timeouts:                    # first match per command
//!   - commands: [GET, MGET]
//!     timeout: 100ms
//!   mirror:                      # read-only commands, copied; replies dropped
//!     subset: v2
//!     percentage: 100
//! ```
//!
//! Commands the proxy cannot reason about — pub/sub, `MONITOR`, blocking commands,
//! transactions (`MULTI` ... `EXEC`) — are passed through untouched, never faulted or timed
//! out. A command list left empty means every command. A percentage left out means 100.
//! Every field is optional here; validation reports what is missing.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;

/// `spec` of a RedisPolicy.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisPolicySpec {
    /// The Redis service (`redis`, `redis.ns`, a fully qualified name) or one StatefulSet
    /// pod's name (`redis-0.redis`). Short names resolve in the policy's namespace.
    pub host: Option<String>,
    /// The service port; every port of the service when left out.
    pub port: Option<u32>,
    /// Only connections routed to this subset (a DestinationRule subset of the host).
    pub subset: Option<String>,
    /// Injected faults; the first that lists a command applies to it.
    #[serde(default)]
    pub faults: Vec<RedisFault>,
    /// Per-command timeouts; the first that lists a command applies to it.
    #[serde(default)]
    pub timeouts: Vec<RedisTimeout>,
    /// Copy read-only commands to another subset.
    pub mirror: Option<RedisMirror>,
}

/// A fault for some commands: exactly one of `abort` and `delay`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisFault {
    /// Command names (case-insensitive); empty means every command.
    #[serde(default)]
    pub commands: Vec<String>,
    /// Answer with an error reply instead of forwarding the command.
    pub abort: Option<RedisAbort>,
    /// Hold the command (and the ones pipelined after it) before forwarding it.
    pub delay: Option<RedisDelay>,
}

/// An injected error reply.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisAbort {
    /// The error text; its first word is the error kind (`ERR`, `READONLY`, `BUSY`...).
    /// Default: `ERR injected fault`.
    pub error: Option<String>,
    /// Share of matching commands aborted, percent (default 100).
    pub percentage: Option<f64>,
}

/// An injected delay.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisDelay {
    /// How long (required), such as `50ms`.
    #[schemars(with = "Option<String>")]
    pub fixed_delay: Option<Duration>,
    /// Share of matching commands delayed, percent (default 100).
    pub percentage: Option<f64>,
}

/// A timeout for some commands: when the reply has not come in time, the client gets an
/// error reply (and the late reply is dropped).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisTimeout {
    /// Command names; empty means every command.
    #[serde(default)]
    pub commands: Vec<String>,
    /// The timeout (required).
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
}

/// Mirroring of read-only commands (and the commands that set up a connection, such as
/// `SELECT` and `AUTH`) to a subset; its replies are read and dropped.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisMirror {
    /// The subset receiving the copies (required).
    pub subset: Option<String>,
    /// Another host to mirror to (default: the policy's host).
    pub host: Option<String>,
    /// Share of read-only commands mirrored, percent (default 100).
    pub percentage: Option<f64>,
}

/// Commands that are passed through untouched whatever the policy says: they change how
/// the connection's replies pair with its commands, or they wait for data by design.
pub const PASSED_THROUGH: &[&str] = &[
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "SSUBSCRIBE",
    "UNSUBSCRIBE",
    "PUNSUBSCRIBE",
    "SUNSUBSCRIBE",
    "MONITOR",
    "MULTI",
    "EXEC",
    "DISCARD",
    "WATCH",
    "UNWATCH",
    "BLPOP",
    "BRPOP",
    "BRPOPLPUSH",
    "BLMOVE",
    "BLMPOP",
    "BZPOPMIN",
    "BZPOPMAX",
    "BZMPOP",
    "WAIT",
    "WAITAOF",
    "XREAD",
    "XREADGROUP",
    "CLIENT",
    "QUIT",
    "RESET",
];

/// The default error of an abort.
pub const DEFAULT_ERROR: &str = "ERR injected fault";
