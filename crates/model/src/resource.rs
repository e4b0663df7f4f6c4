//! Typed resources produced by validation, and how a resource is named in messages.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::istio::{DestinationRuleSpec, PeerAuthenticationSpec, VirtualServiceSpec};

/// Identifies a resource in messages: `Kind/namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceId {
    /// The resource's kind.
    pub kind: String,
    /// Its namespace (`default` when absent).
    pub namespace: String,
    /// Its name (`<unnamed>` when absent).
    pub name: String,
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// An Istio resource: its version, metadata and typed spec.
#[derive(Debug, Clone, PartialEq)]
pub struct IstioResource<S> {
    /// `apiVersion` as written (`networking.istio.io/v1`, ...).
    pub api_version: String,
    /// Kubernetes object metadata.
    pub metadata: ObjectMeta,
    /// The spec.
    pub spec: S,
}

/// A resource that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    /// A VirtualService.
    VirtualService(Box<IstioResource<VirtualServiceSpec>>),
    /// A DestinationRule.
    DestinationRule(Box<IstioResource<DestinationRuleSpec>>),
    /// A PeerAuthentication.
    PeerAuthentication(Box<IstioResource<PeerAuthenticationSpec>>),
    /// A Kubernetes built-in kind that was type-checked; the value is kept as written.
    Kubernetes {
        /// Who it is.
        id: ResourceId,
        /// `apiVersion` as written.
        api_version: String,
        /// The resource.
        value: Box<serde_json::Value>,
    },
    /// A kind Ferry does not check (other Istio kinds, other CRDs).
    Unsupported {
        /// Who it is.
        id: ResourceId,
        /// `apiVersion` as written.
        api_version: String,
    },
}
