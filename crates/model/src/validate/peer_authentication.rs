//! Semantic rules of PeerAuthentication, after Istio's validation.

use super::checks::Checker;
use super::path::FieldPath;
use crate::istio::PeerAuthenticationSpec;

/// Checks a PeerAuthentication spec found at `path`.
pub fn check(c: &mut Checker<'_>, spec: &PeerAuthenticationSpec, path: &FieldPath) {
    let has_selector = spec
        .selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty());
    if let Some(sel) = &spec.selector {
        c.labels(&path.key("selector").key("matchLabels"), &sel.match_labels);
    }
    if !spec.port_level_mtls.is_empty() && !has_selector {
        c.error(
            &path.key("portLevelMtls"),
            "portLevelMtls requires a workload selector (selector.matchLabels)",
        );
    }
    for port in spec.port_level_mtls.keys() {
        c.port(&path.key("portLevelMtls").key(port.to_string()), *port);
    }
}
