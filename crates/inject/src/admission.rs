//! AdmissionReview handling: a request body in, the response body out, with the RFC 6902
//! patch that turns the API server's pod into the injected pod. Both
//! `admission.k8s.io/v1` and `v1beta1` are answered, each in its own version.
//!
//! The response is written here rather than with `kube::core::admission::AdmissionResponse`,
//! which serializes the patch as an array of numbers; the API's contract is a base64 string.

use crate::decision::{self, explicit_value_warning};
use crate::mutate::{self, InjectError, PodContext};
use crate::workload;
use crate::{Decision, InjectConfig, SkipReason};
use base64::Engine;
use serde_json::{Map, Value, json};
use std::fmt;

/// Largest request body the injector accepts (Istio's limit is about 6 MiB).
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

/// The AdmissionReview versions answered.
const VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

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
    pub fn from_path(path: &str) -> Option<Self> {
        let rest = path.strip_prefix("/inject")?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        let mut params = PathParams::default();
        for pair in parts.chunks(2) {
            match pair {
                ["cluster", id] => params.cluster_id = Some((*id).to_string()),
                ["net", network] => params.network = Some((*network).to_string()),
                _ => return None,
            }
        }
        Some(params)
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
    /// The pod's name for logs (`redis-0`, or `client-7d9f-*****` before it is known).
    pub pod: String,
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

fn bad(message: impl Into<String>) -> BadRequest {
    BadRequest(message.into())
}

/// Answers one `admission.k8s.io/v1` or `v1beta1` AdmissionReview body.
pub fn review(body: &[u8], cfg: &InjectConfig, params: &PathParams) -> Result<Answer, BadRequest> {
    if body.len() > MAX_BODY_BYTES {
        return Err(bad(format!(
            "request body is {} bytes, more than the {MAX_BODY_BYTES} accepted",
            body.len()
        )));
    }
    let review: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("request body is not JSON: {e}")))?;
    let api_version = review["apiVersion"].as_str().unwrap_or_default();
    if !VERSIONS.contains(&api_version) || review["kind"].as_str() != Some("AdmissionReview") {
        return Err(bad(format!(
            "expected kind AdmissionReview with apiVersion {} (got kind {:?}, apiVersion {:?})",
            VERSIONS.join(" or "),
            review["kind"].as_str().unwrap_or_default(),
            api_version
        )));
    }
    let request = review
        .get("request")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("AdmissionReview has no request"))?;
    let uid = request
        .get("uid")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("request.uid is required"))?;
    let respond = |response: Map<String, Value>| -> Vec<u8> {
        let mut response = response;
        response.insert("uid".into(), json!(uid));
        let out =
            json!({ "apiVersion": api_version, "kind": "AdmissionReview", "response": response });
        serde_json::to_vec(&out).unwrap_or_default()
    };
    let allowed_without_patch = |reason: SkipReason, pod: String| Answer {
        body: respond(Map::from_iter([("allowed".to_string(), json!(true))])),
        result: ReviewResult::Skipped(reason),
        pod,
    };

    let kind = request.get("kind").and_then(|k| k["kind"].as_str());
    let operation = request.get("operation").and_then(Value::as_str);
    if kind.is_some_and(|k| k != "Pod") || operation.is_some_and(|op| op != "CREATE") {
        return Ok(allowed_without_patch(
            SkipReason::NotPodCreate,
            String::new(),
        ));
    }
    let pod = request
        .get("object")
        .filter(|o| o.is_object())
        .ok_or_else(|| bad("request.object must be the pod being created"))?;
    let pod_name = workload::display_name(pod);
    let namespace = pod["metadata"]["namespace"]
        .as_str()
        .filter(|ns| !ns.is_empty())
        .or_else(|| request.get("namespace").and_then(Value::as_str))
        .filter(|ns| !ns.is_empty())
        .unwrap_or("default")
        .to_string();

    let warnings: Vec<String> = explicit_value_warning(pod).into_iter().collect();
    if let Decision::Skip(reason) = decision::inject_required(pod, &namespace, cfg) {
        return Ok(allowed_without_patch(reason, pod_name));
    }
    let ctx = PodContext {
        namespace,
        workload: workload::of_pod(pod),
        cluster_id: params.cluster_id.clone(),
        network: params.network.clone(),
    };
    match mutate::inject(pod, &ctx, cfg) {
        Ok(injected) => {
            let patch = serde_json::to_vec(&json_patch::diff(pod, &injected))
                .map_err(|e| bad(format!("cannot encode the patch: {e}")))?;
            let encoded = base64::engine::general_purpose::STANDARD.encode(patch);
            let mut response = Map::new();
            response.insert("allowed".into(), json!(true));
            response.insert("patchType".into(), json!("JSONPatch"));
            response.insert("patch".into(), json!(encoded));
            if !warnings.is_empty() {
                response.insert("warnings".into(), json!(warnings));
            }
            Ok(Answer {
                body: respond(response),
                result: ReviewResult::Injected,
                pod: pod_name,
            })
        }
        Err(err) => {
            let message = match &err {
                InjectError::InvalidAnnotations(_) => {
                    format!("injection failed for pod {pod_name}: {err}")
                }
                InjectError::InvalidPod { .. } => format!("cannot inject pod {pod_name}: {err}"),
            };
            let mut response = Map::new();
            response.insert("allowed".into(), json!(false));
            response.insert("status".into(), json!({ "message": message, "code": 400 }));
            Ok(Answer {
                body: respond(response),
                result: ReviewResult::Denied(message),
                pod: pod_name,
            })
        }
    }
}
