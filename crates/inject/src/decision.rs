//! Stage B of the injection decision: Istio's `injectRequired`, run on every pod that
//! reaches the injector, in Istio's order of precedence.

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
