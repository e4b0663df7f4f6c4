//! Istio resource types read from YAML: VirtualService and DestinationRule
//! (`networking.istio.io` v1, v1beta1, v1alpha3) and PeerAuthentication (`security.istio.io`
//! v1, v1beta1). Field names follow Istio's camelCase; unknown fields are errors. Every field
//! is optional here: required fields are checked by validation, so one missing field does not
//! hide the other errors.

pub mod common;
pub mod destination_rule;
pub mod peer_authentication;
pub mod telemetry;
pub mod virtual_service;

pub use common::{Percent, PortSelector, StringMatch, WorkloadSelector};
pub use destination_rule::DestinationRuleSpec;
pub use peer_authentication::PeerAuthenticationSpec;
pub use telemetry::{MeshConfig, TelemetrySpec};
pub use virtual_service::VirtualServiceSpec;
