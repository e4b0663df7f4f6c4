//! Stage A of the injection decision: the `MutatingWebhookConfiguration` entries, whose
//! namespace and object selectors decide whether the API server calls the injector at all.
//! The same table renders the configuration (`ferry webhook config`) and evaluates it
//! offline (`ferry up`), so the two cannot drift apart.

use crate::selector::{self, Labels, requirement};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Namespaces that Istio never injects into.
pub const IGNORED_NAMESPACES: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

/// One webhook entry of the injector's `MutatingWebhookConfiguration`.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEntry {
    /// Entry name, e.g. `namespace.sidecar-injector.istio.io`.
    pub name: String,
    /// Selector on the labels of the pod's namespace.
    pub namespace_selector: LabelSelector,
    /// Selector on the pod's own labels.
    pub object_selector: LabelSelector,
}

impl WebhookEntry {
    /// True when the API server would call this entry for a pod with these labels.
    pub fn selects(&self, namespace_labels: &Labels, pod_labels: &Labels) -> bool {
        selector::matches(&self.namespace_selector, namespace_labels)
            && selector::matches(&self.object_selector, pod_labels)
    }
}

fn selector_of(
    terms: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement>,
) -> LabelSelector {
    LabelSelector {
        match_expressions: Some(terms),
        match_labels: None,
    }
}

/// The entries Istio's chart installs for `revision` (reference 1.2). The default revision
/// also gets the `namespace.`, `object.` and (optionally) `auto.` entries.
pub fn entries(revision: &str, enable_namespaces_by_default: bool) -> Vec<WebhookEntry> {
    let rev_prefix = if revision == "default" {
        "rev".to_string()
    } else {
        format!("rev.{revision}")
    };
    let not_false = || requirement("sidecar.istio.io/inject", "NotIn", &["false"]);
    let mut out = vec![
        WebhookEntry {
            name: format!("{rev_prefix}.namespace.sidecar-injector.istio.io"),
            namespace_selector: selector_of(vec![
                requirement("istio.io/rev", "In", &[revision]),
                requirement("istio-injection", "DoesNotExist", &[]),
            ]),
            object_selector: selector_of(vec![not_false()]),
        },
        WebhookEntry {
            name: format!("{rev_prefix}.object.sidecar-injector.istio.io"),
            namespace_selector: selector_of(vec![
                requirement("istio.io/rev", "DoesNotExist", &[]),
                requirement("istio-injection", "DoesNotExist", &[]),
            ]),
            object_selector: selector_of(vec![
                not_false(),
                requirement("istio.io/rev", "In", &[revision]),
            ]),
        },
    ];
    if revision != "default" {
        return out;
    }
    out.push(WebhookEntry {
        name: "namespace.sidecar-injector.istio.io".into(),
        namespace_selector: selector_of(vec![requirement("istio-injection", "In", &["enabled"])]),
        object_selector: selector_of(vec![not_false()]),
    });
    out.push(WebhookEntry {
        name: "object.sidecar-injector.istio.io".into(),
        namespace_selector: selector_of(vec![
            requirement("istio-injection", "DoesNotExist", &[]),
            requirement("istio.io/rev", "DoesNotExist", &[]),
        ]),
        object_selector: selector_of(vec![
            requirement("sidecar.istio.io/inject", "In", &["true"]),
            requirement("istio.io/rev", "DoesNotExist", &[]),
        ]),
    });
    if enable_namespaces_by_default {
        out.push(WebhookEntry {
            name: "auto.sidecar-injector.istio.io".into(),
            namespace_selector: selector_of(vec![
                requirement("istio-injection", "DoesNotExist", &[]),
                requirement("istio.io/rev", "DoesNotExist", &[]),
                requirement("kubernetes.io/metadata.name", "NotIn", &IGNORED_NAMESPACES),
            ]),
            object_selector: selector_of(vec![
                requirement("sidecar.istio.io/inject", "DoesNotExist", &[]),
                requirement("istio.io/rev", "DoesNotExist", &[]),
            ]),
        });
    }
    out
}

/// The first entry that would call the injector for this pod, if any.
pub fn selecting_entry<'a>(
    entries: &'a [WebhookEntry],
    namespace_labels: &Labels,
    pod_labels: &Labels,
) -> Option<&'a WebhookEntry> {
    entries
        .iter()
        .find(|e| e.selects(namespace_labels, pod_labels))
}
