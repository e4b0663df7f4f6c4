//! Inbound: the ports of the proxy's own workload and the mTLS mode each accepts
//! (PeerAuthentication, server side).

use serde::{Deserialize, Serialize};

use crate::protocol::Protocol;

/// What the inbound listener accepts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inbound {
    /// Mode of ports not listed below.
    #[serde(default)]
    pub mtls: MtlsMode,
    /// `namespace/name` of the PeerAuthentication that set `mtls`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_authentication: Option<String>,
    /// The workload's ports, by container port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<InboundPort>,
}

impl Inbound {
    /// Whether nothing is set (for skipping it when serialising).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The mode of a container port.
    pub fn mode_of(&self, port: u16) -> MtlsMode {
        self.ports
            .iter()
            .find(|p| p.port == port)
            .map_or(self.mtls, |p| p.mtls)
    }
}

/// One container port of the workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InboundPort {
    /// Container (target) port.
    pub port: u16,
    /// Declared protocol (from the service port that targets it).
    pub protocol: Protocol,
    /// Accepted mTLS mode.
    pub mtls: MtlsMode,
    /// Services that target the port (`<fqdn>:<service port>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

/// Server-side mTLS mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Plaintext or mTLS (Istio's default).
    #[default]
    Permissive,
    /// mTLS only.
    Strict,
    /// Plaintext only.
    Disable,
}
