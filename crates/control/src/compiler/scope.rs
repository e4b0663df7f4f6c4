//! Shared rules of scope: the order in which policies compete (oldest first, then namespace and
//! name), `exportTo` visibility, label selection, and the host names a resource refers to.

use ferry_model::IstioResource;
use ferry_model::host::host_covers;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use std::collections::BTreeMap;

/// The namespace of a resource (`default` when unset).
pub fn namespace(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

/// `namespace/name` of a resource, for messages and the config.
pub fn id<S>(r: &IstioResource<S>) -> String {
    format!(
        "{}/{}",
        namespace(&r.metadata),
        r.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Istio's precedence among competing resources: the oldest wins, then namespace and name.
/// Resources without a creation time sort after those with one.
pub fn order_key<S>(r: &IstioResource<S>) -> (bool, Option<&Time>, &str, &str) {
    let meta = &r.metadata;
    (
        meta.creation_timestamp.is_none(),
        meta.creation_timestamp.as_ref(),
        namespace(meta),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// Sorts resources by [`order_key`], giving a stable order whatever the input order.
pub fn sorted<S>(items: &[IstioResource<S>]) -> Vec<&IstioResource<S>> {
    let mut v: Vec<_> = items.iter().collect();
    v.sort_by(|a, b| order_key(a).cmp(&order_key(b)));
    v
}

/// Whether a resource in `owner` with this `exportTo` is visible from namespace `client`
/// (empty means everywhere; `.` means its own namespace).
pub fn exported_to(export_to: &[String], owner: &str, client: &str) -> bool {
    owner == client
        || export_to.is_empty()
        || export_to
            .iter()
            .any(|e| e == "*" || (e == "." && owner == client) || e == client)
}

/// Whether `labels` carry every pair of `selector`.
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// How specifically a (resolved) host pattern names `host`: `None` when it does not cover it;
/// lower is more specific (an exact name, then longer wildcards).
pub fn host_rank(pattern: &str, host: &str) -> Option<(u8, usize)> {
    if pattern == host {
        Some((0, 0))
    } else if host_covers(pattern, host) {
        Some((1, usize::MAX - pattern.len()))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_rules() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let cases = [
            (s(&[]), "a", "b", true),
            (s(&["*"]), "a", "b", true),
            (s(&["."]), "a", "b", false),
            (s(&["."]), "a", "a", true),
            (s(&["b"]), "a", "b", true),
            (s(&["c"]), "a", "b", false),
        ];
        for (export, owner, client, want) in cases {
            assert_eq!(exported_to(&export, owner, client), want, "{export:?}");
        }
    }

    #[test]
    fn host_ranks() {
        assert_eq!(host_rank("a.b", "a.b"), Some((0, 0)));
        assert!(host_rank("*.b", "a.b") < host_rank("*", "a.b"));
        assert_eq!(host_rank("c.b", "a.b"), None);
    }
}
