//! The PeerAuthentication spec: which mTLS mode a workload's server side accepts.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::WorkloadSelector;

/// `spec` of a PeerAuthentication.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    /// Workloads the policy applies to; none means the whole namespace.
    pub selector: Option<WorkloadSelector>,
    /// Mode for all ports.
    pub mtls: Option<MutualTls>,
    /// Modes per workload (container) port; needs a selector.
    #[serde(default)]
    pub port_level_mtls: BTreeMap<u32, MutualTls>,
}

/// An mTLS setting.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MutualTls {
    /// The mode.
    pub mode: Option<MtlsMode>,
}

/// Server-side mTLS modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the parent scope.
    Unset,
    /// Plaintext only.
    Disable,
    /// Plaintext or mTLS.
    Permissive,
    /// mTLS only.
    Strict,
}
