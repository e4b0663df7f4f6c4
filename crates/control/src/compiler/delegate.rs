//! VirtualService delegation: a root rule with `delegate` is replaced by the delegate
//! VirtualService's HTTP rules, each merged with the root rule as Istio does — the root's
//! match conditions AND-ed into the delegate's (a delegate match that contradicts every root
//! match drops the delegate rule), and the root's policies (timeout, retries, fault, mirror,
//! rewrite, CORS, headers) filling in what the delegate rule leaves unset. Pure; no I/O.

use std::collections::BTreeMap;

use ferry_model::istio::common::StringMatch;
use ferry_model::istio::virtual_service::{Destination, HttpMatchRequest, HttpRoute};
use ferry_model::resolve_host;

/// The rules that replace `root` (a rule delegating to a VirtualService whose rules are
/// `delegate`): one per delegate rule whose matches are compatible with the root's.
pub fn merge_routes(root: &HttpRoute, delegate: &[HttpRoute]) -> Vec<HttpRoute> {
    delegate
        .iter()
        .filter_map(|sub| merge_route(root, sub))
        .collect()
}

/// One delegate rule merged with its root rule; `None` when their matches conflict.
fn merge_route(root: &HttpRoute, sub: &HttpRoute) -> Option<HttpRoute> {
    let mut out = sub.clone();
    out.matches = merge_matches(&root.matches, &sub.matches)?;
    out.delegate = None;
    fill(&mut out.rewrite, &root.rewrite);
    fill(&mut out.timeout, &root.timeout);
    fill(&mut out.retries, &root.retries);
    fill(&mut out.fault, &root.fault);
    fill(&mut out.mirror, &root.mirror);
    fill(&mut out.mirror_percent, &root.mirror_percent);
    fill(&mut out.mirror_percentage, &root.mirror_percentage);
    fill(&mut out.cors_policy, &root.cors_policy);
    fill(&mut out.headers, &root.headers);
    if out.mirrors.is_empty() {
        out.mirrors = root.mirrors.clone();
    }
    fill(&mut out.name, &root.name);
    Some(out)
}

fn fill<T: Clone>(field: &mut Option<T>, root: &Option<T>) {
    if field.is_none() {
        field.clone_from(root);
    }
}

/// Every delegate match must narrow at least one root match; the result holds one merged
/// match per compatible (delegate, root) pair. `None` on conflict.
fn merge_matches(
    root: &[HttpMatchRequest],
    sub: &[HttpMatchRequest],
) -> Option<Vec<HttpMatchRequest>> {
    if root.is_empty() {
        return Some(sub.to_vec());
    }
    if sub.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for leaf in sub {
        let before = out.len();
        for r in root.iter().filter(|r| !conflicts(r, leaf)) {
            out.push(merge_match(r, leaf));
        }
        if out.len() == before {
            return None;
        }
    }
    Some(out)
}

/// The delegate's match with the root's conditions added where it has none.
fn merge_match(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> HttpMatchRequest {
    let mut out = leaf.clone();
    out.name = match (&root.name, &leaf.name) {
        (Some(r), Some(l)) if !r.is_empty() && !l.is_empty() => Some(format!("{r}-{l}")),
        (r, None) => r.clone(),
        (_, l) => l.clone(),
    };
    fill(&mut out.uri, &root.uri);
    fill(&mut out.scheme, &root.scheme);
    fill(&mut out.method, &root.method);
    fill(&mut out.authority, &root.authority);
    fill(&mut out.port, &root.port);
    fill(&mut out.source_namespace, &root.source_namespace);
    fill(&mut out.stat_prefix, &root.stat_prefix);
    fill(&mut out.ignore_uri_case, &root.ignore_uri_case);
    union(&mut out.headers, &root.headers);
    union(&mut out.without_headers, &root.without_headers);
    union(&mut out.query_params, &root.query_params);
    union(&mut out.source_labels, &root.source_labels);
    if out.gateways.is_empty() {
        out.gateways = root.gateways.clone();
    }
    out
}

/// Adds the root's entries the leaf does not have (the leaf's win).
fn union<V: Clone>(leaf: &mut BTreeMap<String, V>, root: &BTreeMap<String, V>) {
    for (k, v) in root {
        leaf.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

/// Whether the delegate match `leaf` contradicts the root match (it must be a subset).
fn conflicts(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> bool {
    let pairs = [
        (&root.uri, &leaf.uri),
        (&root.scheme, &leaf.scheme),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if pairs
        .iter()
        .any(|(r, l)| string_conflict(r.as_ref(), l.as_ref()))
    {
        return true;
    }
    let map_conflict = |r: &BTreeMap<String, StringMatch>, l: &BTreeMap<String, StringMatch>| {
        l.iter().any(|(k, v)| string_conflict(r.get(k), Some(v)))
    };
    if map_conflict(&root.headers, &leaf.headers)
        || map_conflict(&root.without_headers, &leaf.without_headers)
        || map_conflict(&root.query_params, &leaf.query_params)
    {
        return true;
    }
    if root.ignore_uri_case.unwrap_or(false) != leaf.ignore_uri_case.unwrap_or(false) {
        return true;
    }
    if let (Some(r), Some(l)) = (root.port, leaf.port)
        && r > 0
        && l > 0
        && r != l
    {
        return true;
    }
    if let Some(ns) = root.source_namespace.as_deref().filter(|s| !s.is_empty())
        && leaf.source_namespace.as_deref() != Some(ns)
    {
        return true;
    }
    if leaf
        .source_labels
        .iter()
        .any(|(k, v)| root.source_labels.get(k).is_some_and(|rv| rv != v))
    {
        return true;
    }
    !root.gateways.is_empty()
        && !leaf.gateways.is_empty()
        && leaf.gateways.iter().any(|g| !root.gateways.contains(g))
}

fn set(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// Whether a delegate string match cannot be a narrowing of the root's.
fn string_conflict(root: Option<&StringMatch>, leaf: Option<&StringMatch>) -> bool {
    let (Some(root), Some(leaf)) = (root, leaf) else {
        return false;
    };
    let (r_exact, r_prefix, r_regex) = (set(&root.exact), set(&root.prefix), set(&root.regex));
    let (l_exact, l_prefix, l_regex) = (set(&leaf.exact), set(&leaf.prefix), set(&leaf.regex));
    let leaf_any = l_exact.is_some() || l_prefix.is_some() || l_regex.is_some();
    let root_any = r_exact.is_some() || r_prefix.is_some() || r_regex.is_some();
    if (r_regex.is_some() && leaf_any) || (l_regex.is_some() && root_any) {
        return true;
    }
    if let Some(exact) = r_exact
        && (l_prefix.is_some() || l_exact != Some(exact))
    {
        return true;
    }
    if let Some(prefix) = r_prefix {
        let outside = |s: Option<&str>| s.is_some_and(|s| !s.starts_with(prefix));
        if outside(l_prefix) || outside(l_exact) {
            return true;
        }
    }
    false
}

/// Makes the destination hosts of `rule` fully qualified against `namespace`, so that rules
/// merged across VirtualServices keep the meaning they had in their own namespace.
pub fn qualify_hosts(rule: &mut HttpRoute, namespace: &str, domain: &str) {
    let qualify = |d: &mut Destination| {
        if let Some(h) = d.host.as_mut() {
            *h = resolve_host(h, namespace, domain);
        }
    };
    rule.route
        .iter_mut()
        .filter_map(|r| r.destination.as_mut())
        .for_each(qualify);
    if let Some(m) = rule.mirror.as_mut() {
        qualify(m);
    }
    rule.mirrors
        .iter_mut()
        .filter_map(|m| m.destination.as_mut())
        .for_each(qualify);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(s: &str) -> StringMatch {
        StringMatch {
            exact: Some(s.into()),
            ..Default::default()
        }
    }
    fn prefix(s: &str) -> StringMatch {
        StringMatch {
            prefix: Some(s.into()),
            ..Default::default()
        }
    }
    fn regex(s: &str) -> StringMatch {
        StringMatch {
            regex: Some(s.into()),
            ..Default::default()
        }
    }
    fn uri(m: StringMatch) -> HttpMatchRequest {
        HttpMatchRequest {
            uri: Some(m),
            ..Default::default()
        }
    }

    #[test]
    fn string_match_conflicts() {
        let cases: &[(Option<StringMatch>, Option<StringMatch>, bool)] = &[
            (None, Some(exact("/a")), false),
            (Some(prefix("/a")), None, false),
            (Some(prefix("/api")), Some(prefix("/api/v1")), false),
            (Some(prefix("/api")), Some(exact("/api/x")), false),
            (Some(prefix("/api")), Some(prefix("/web")), true),
            (Some(prefix("/api")), Some(exact("/web")), true),
            (Some(exact("/a")), Some(exact("/a")), false),
            (Some(exact("/a")), Some(exact("/b")), true),
            (Some(exact("/a")), Some(prefix("/a")), true),
            (Some(regex("/a.*")), Some(exact("/a")), true),
            (Some(exact("/a")), Some(regex("/a.*")), true),
            (Some(prefix("/a")), Some(regex("/a.*")), true),
        ];
        for (root, leaf, want) in cases {
            assert_eq!(
                string_conflict(root.as_ref(), leaf.as_ref()),
                *want,
                "{root:?} vs {leaf:?}"
            );
        }
    }

    #[test]
    fn match_conflicts_beyond_strings() {
        let hdr = |k: &str, v: &str| HttpMatchRequest {
            headers: [(k.to_string(), exact(v))].into(),
            ..Default::default()
        };
        let port = |p: u32| HttpMatchRequest {
            port: Some(p),
            ..Default::default()
        };
        let src_ns = |n: &str| HttpMatchRequest {
            source_namespace: Some(n.into()),
            ..Default::default()
        };
        let labels = |k: &str, v: &str| HttpMatchRequest {
            source_labels: [(k.to_string(), v.to_string())].into(),
            ..Default::default()
        };
        let cases = [
            (hdr("x", "1"), hdr("x", "1"), false),
            (hdr("x", "1"), hdr("x", "2"), true),
            (hdr("x", "1"), hdr("y", "2"), false),
            (port(80), port(80), false),
            (port(80), port(81), true),
            (port(80), HttpMatchRequest::default(), false),
            (src_ns("a"), src_ns("a"), false),
            (src_ns("a"), HttpMatchRequest::default(), true),
            (HttpMatchRequest::default(), src_ns("b"), false),
            (labels("app", "a"), labels("app", "b"), true),
            (labels("app", "a"), labels("version", "v1"), false),
        ];
        for (root, leaf, want) in cases {
            assert_eq!(conflicts(&root, &leaf), want, "{root:?} vs {leaf:?}");
        }
    }

    #[test]
    fn matches_merge_as_cross_product_of_compatible_pairs() {
        let root = [uri(prefix("/api")), uri(prefix("/v2"))];
        let leaf = [uri(prefix("/api/users"))];
        let merged = merge_matches(&root, &leaf).unwrap();
        assert_eq!(merged, vec![uri(prefix("/api/users"))]);

        // A leaf without a uri narrows both root matches.
        let leaf = [HttpMatchRequest {
            method: Some(exact("GET")),
            ..Default::default()
        }];
        let merged = merge_matches(&root, &leaf).unwrap();
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[1].uri, Some(prefix("/v2")));
        assert_eq!(merged[1].method, Some(exact("GET")));

        // A leaf outside every root match is a conflict.
        assert_eq!(merge_matches(&root, &[uri(prefix("/web"))]), None);
        // Either side empty: the other's matches.
        assert_eq!(merge_matches(&[], &leaf), Some(leaf.to_vec()));
        assert_eq!(merge_matches(&root, &[]), Some(root.to_vec()));
    }

    #[test]
    fn merged_match_combines_names_and_maps() {
        let root = HttpMatchRequest {
            name: Some("root".into()),
            headers: [("a".to_string(), exact("1"))].into(),
            port: Some(80),
            ..Default::default()
        };
        let leaf = HttpMatchRequest {
            name: Some("leaf".into()),
            headers: [("b".to_string(), exact("2"))].into(),
            ..Default::default()
        };
        let m = merge_match(&root, &leaf);
        assert_eq!(m.name.as_deref(), Some("root-leaf"));
        assert_eq!(m.headers.len(), 2);
        assert_eq!(m.port, Some(80));
    }

    #[test]
    fn routes_inherit_root_policies_and_drop_conflicts() {
        let timeout: ferry_model::Duration =
            serde_json::from_value(serde_json::json!("5s")).unwrap();
        let root = HttpRoute {
            matches: vec![uri(prefix("/api"))],
            timeout: Some(timeout.clone()),
            ..Default::default()
        };
        let keep = HttpRoute {
            name: Some("users".into()),
            matches: vec![uri(prefix("/api/users"))],
            ..Default::default()
        };
        let dropped = HttpRoute {
            matches: vec![uri(exact("/health"))],
            ..Default::default()
        };
        let merged = merge_routes(&root, &[keep, dropped]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].name.as_deref(), Some("users"));
        assert_eq!(merged[0].timeout, Some(timeout));
    }

    #[test]
    fn hosts_are_qualified_in_their_own_namespace() {
        let mut rule = HttpRoute {
            route: vec![ferry_model::istio::virtual_service::HttpRouteDestination {
                destination: Some(Destination {
                    host: Some("reviews".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        qualify_hosts(&mut rule, "shop", "cluster.local");
        let host = rule.route[0]
            .destination
            .as_ref()
            .and_then(|d| d.host.as_deref());
        assert_eq!(host, Some("reviews.shop.svc.cluster.local"));
    }
}
