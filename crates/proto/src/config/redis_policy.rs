//! Ferry's RedisPolicies as one outbound host:port carries them: each applies to the
//! connections routed to one subset (or any), optionally only toward some pods, with its
//! faults and timeouts in the resource's own terms and the mirror resolved to a cluster.

use ferry_model::ferry::redis_policy::{RedisFault, RedisTimeout};
use serde::{Deserialize, Serialize};

/// One RedisPolicy in force for an outbound host:port.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisPortPolicy {
    /// `namespace/name` of the RedisPolicy.
    pub policy: String,
    /// Only connections to this subset (routed to it, or to one of its pods); any when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// The subset's cluster (`outbound|<port>|<subset>|<host>`), whose endpoints are the
    /// subset's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset_cluster: Option<String>,
    /// Only connections to these pods (a StatefulSet pod's name as the policy's host); any
    /// when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<String>,
    /// Faults, first match per command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<RedisFault>,
    /// Timeouts, first match per command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeouts: Vec<RedisTimeout>,
    /// Where read-only commands are copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<RedisMirrorTarget>,
}

/// The cluster a RedisPolicy mirrors to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisMirrorTarget {
    /// `outbound|<port>|<subset>|<host>`.
    pub cluster: String,
    /// Share of read-only commands copied, percent.
    pub percentage: f64,
}
