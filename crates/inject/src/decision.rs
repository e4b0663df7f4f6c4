//! Stage B of the injection decision: Istio's `injectRequired`, run on every pod that
//! reaches the injector, in Istio's order of precedence.

use crate::annotations::INJECT;
use crate::selector::{self, Labels};
use crate::webhooks::{self, IGNORED_NAMESPACES};
use crate::{InjectConfig, InjectionPolicy};
use serde_json::Value;
use std::fmt;

/// Why a pod gets no sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// `spec.hostNetwork: true`: redirect rules would change the node, not the pod.
    HostNetwork,
    /// The namespace is one Istio never injects into (kube-system, ...).
    IgnoredNamespace(String),
    /// The pod set `sidecar.istio.io/inject: "false"` (label, or annotation without label).
    ExplicitlyDisabled,
    /// A `neverInjectSelector` matched and the pod set no explicit value.
    NeverInjectSelector,
    /// The injection policy is disabled and nothing opted the pod in.
    PolicyDisabled,
    /// No webhook entry selects the pod: the API server would not call the injector.
    NotSelected,
    /// The review is not the creation of a pod; the injector only mutates new pods.
    NotPodCreate,
}

impl SkipReason {
    /// A short stable label for metrics (`skips_total{reason=...}`).
    pub fn metric_label(&self) -> &'static str {
        match self {
            SkipReason::HostNetwork => "host_network",
            SkipReason::IgnoredNamespace(_) => "ignored_namespace",
            SkipReason::ExplicitlyDisabled => "explicitly_disabled",
            SkipReason::NeverInjectSelector => "never_inject_selector",
            SkipReason::PolicyDisabled => "policy_disabled",
            SkipReason::NotSelected => "not_selected",
            SkipReason::NotPodCreate => "not_pod_create",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::HostNetwork => write!(f, "it has host networking enabled"),
            SkipReason::IgnoredNamespace(ns) => {
                write!(f, "namespace {ns} is never injected")
            }
            SkipReason::ExplicitlyDisabled => {
                write!(
                    f,
                    "it has sidecar injection disabled (sidecar.istio.io/inject: \"false\")"
                )
            }
            SkipReason::NeverInjectSelector => write!(f, "it matches a neverInjectSelector"),
            SkipReason::PolicyDisabled => {
                write!(
                    f,
                    "the injection policy is disabled and the pod does not opt in"
                )
            }
            SkipReason::NotSelected => write!(
                f,
                "no injector webhook selects it (namespace and pod labels do not enable injection)"
            ),
            SkipReason::NotPodCreate => write!(f, "the request is not the creation of a pod"),
        }
    }
}

/// The outcome of the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Add the sidecar.
    Inject,
    /// Leave the pod alone, for this reason.
    Skip(SkipReason),
}

/// Label map view of a JSON object field (non-string values are ignored).
pub(crate) fn string_map(value: &Value) -> Labels {
    value
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

/// The explicit `sidecar.istio.io/inject` value: the label if present, else the annotation.
fn explicit_value(pod: &Value) -> Option<String> {
    let meta = &pod["metadata"];
    let label = meta["labels"]
        .get(INJECT)
        .map(|v| v.as_str().unwrap_or_default());
    let annotation = meta["annotations"]
        .get(INJECT)
        .map(|v| v.as_str().unwrap_or_default());
    label.or(annotation).map(str::to_string)
}

/// A warning for an explicit value that is neither `"true"` nor `"false"`; Istio logs it and
/// falls back to the default policy.
pub fn explicit_value_warning(pod: &Value) -> Option<String> {
    match explicit_value(pod)?.as_str() {
        "true" | "false" | "" => None,
        other => Some(format!(
            "invalid value {other:?} for {INJECT}: only \"true\" and \"false\" are accepted (the \
             comparison is case-sensitive); falling back to the default injection policy"
        )),
    }
}

/// Istio's `injectRequired`: the decision for a pod that reached the injector, in
/// `namespace`, under `cfg`'s policy and selectors.
pub fn inject_required(pod: &Value, namespace: &str, cfg: &InjectConfig) -> Decision {
    if pod["spec"]["hostNetwork"].as_bool() == Some(true) {
        return Decision::Skip(SkipReason::HostNetwork);
    }
    if IGNORED_NAMESPACES.contains(&namespace) {
        return Decision::Skip(SkipReason::IgnoredNamespace(namespace.to_string()));
    }
    match explicit_value(pod).as_deref() {
        Some("true") => return Decision::Inject,
        Some("false") => return Decision::Skip(SkipReason::ExplicitlyDisabled),
        _ => {}
    }
    let labels = string_map(&pod["metadata"]["labels"]);
    if cfg
        .never_inject_selector
        .iter()
        .any(|s| selector::matches(s, &labels))
    {
        return Decision::Skip(SkipReason::NeverInjectSelector);
    }
    if cfg
        .always_inject_selector
        .iter()
        .any(|s| selector::matches(s, &labels))
    {
        return Decision::Inject;
    }
    match cfg.policy {
        InjectionPolicy::Enabled => Decision::Inject,
        InjectionPolicy::Disabled => Decision::Skip(SkipReason::PolicyDisabled),
    }
}

/// The whole decision as a cluster makes it: the webhook selectors (stage A, on namespace
/// and pod labels), then [`inject_required`] (stage B).
pub fn decide(
    namespace_labels: &Labels,
    namespace: &str,
    pod: &Value,
    cfg: &InjectConfig,
) -> Decision {
    let mut ns_labels = namespace_labels.clone();
    // The API server sets this label on every namespace.
    ns_labels
        .entry("kubernetes.io/metadata.name".into())
        .or_insert_with(|| namespace.to_string());
    let entries = webhooks::entries(&cfg.revision, cfg.enable_namespaces_by_default);
    let pod_labels = string_map(&pod["metadata"]["labels"]);
    if webhooks::selecting_entry(&entries, &ns_labels, &pod_labels).is_none() {
        return Decision::Skip(SkipReason::NotSelected);
    }
    inject_required(pod, namespace, cfg)
}

/// The decision `ferry inject -f` makes offline, as `istioctl kube-inject` does: namespace
/// labels are unknown, so every pod is injected unless it opts out or cannot be injected.
pub fn decide_offline(pod: &Value, namespace: &str, cfg: &InjectConfig) -> Decision {
    let forced = InjectConfig {
        policy: InjectionPolicy::Enabled,
        never_inject_selector: Vec::new(),
        always_inject_selector: Vec::new(),
        ..cfg.clone()
    };
    inject_required(pod, namespace, &forced)
}
