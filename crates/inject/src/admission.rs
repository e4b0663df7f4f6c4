//! AdmissionReview handling: a request body in, the response body out, with the RFC 6902
//! patch that turns the API server's pod into the injected pod.

use crate::{InjectConfig, SkipReason};
use std::fmt;

/// Largest request body the injector accepts (Istio's limit is about 6 MiB).
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

/// Settings carried by the request path (`/inject/cluster/<id>/net/<network>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathParams {
    /// Overrides the cluster id of the injected proxy.
    pub cluster_id: Option<String>,
    /// Overrides the network of the injected proxy.
    pub network: Option<String>,
}

impl PathParams {
    /// Parses an injection path; `None` when the path is not an injection path.
    pub fn from_path(_path: &str) -> Option<Self> {
        todo!()
    }
}

/// What the injector did with one review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviewResult {
    /// The pod gets a sidecar; the response carries the patch.
    Injected,
    /// Allowed without a patch.
    Skipped(SkipReason),
    /// Refused (`allowed: false`), e.g. an invalid `traffic.sidecar.istio.io/*` annotation.
    Denied(String),
}

/// A review answered: the serialized `AdmissionReview` response and what happened.
#[derive(Debug, Clone)]
pub struct Answer {
    /// JSON body to send back with status 200.
    pub body: Vec<u8>,
    /// The outcome, for logs and metrics.
    pub result: ReviewResult,
}

/// A body that is not an AdmissionReview the injector can answer (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest(pub String);

impl fmt::Display for BadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadRequest {}

/// Answers one `admission.k8s.io/v1` or `v1beta1` AdmissionReview body.
pub fn review(
    _body: &[u8],
    _cfg: &InjectConfig,
    _params: &PathParams,
) -> Result<Answer, BadRequest> {
    todo!()
}
