//! Ferry's own resources (`ferry.dev/v1alpha1`), for what Istio's APIs cannot say:
//! [`redis_policy`] (per-command faults, timeouts and mirroring for Redis services).

pub mod redis_policy;

pub use redis_policy::RedisPolicySpec;

/// The API group of Ferry's resources.
pub const GROUP: &str = "ferry.dev";
/// The versions of it Ferry reads.
pub const VERSIONS: &[&str] = &["v1alpha1"];
