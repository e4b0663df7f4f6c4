//! Kubernetes label-selector matching (`matchLabels` and `matchExpressions`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use std::collections::BTreeMap;

/// Label map as Kubernetes stores it.
pub type Labels = BTreeMap<String, String>;

/// True when `labels` satisfy every term of `selector`; an empty selector matches everything.
pub fn matches(selector: &LabelSelector, labels: &Labels) -> bool {
    let by_label = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    by_label
        && selector
            .match_expressions
            .iter()
            .flatten()
            .all(|req| requirement_matches(req, labels))
}

/// One `matchExpressions` term. Unknown operators match nothing, as the API server would
/// have rejected such a selector.
fn requirement_matches(req: &LabelSelectorRequirement, labels: &Labels) -> bool {
    let value = labels.get(&req.key);
    let values = req.values.as_deref().unwrap_or_default();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => false,
    }
}

/// Builds a selector requirement; a small constructor for readable tables.
pub fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.to_string(),
        operator: operator.to_string(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn operators() {
        type Case<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)], bool);
        let cases: &[Case] = &[
            ("In", &["a"], &[("k", "a")], true),
            ("In", &["a"], &[("k", "b")], false),
            ("In", &["a"], &[], false),
            ("NotIn", &["false"], &[], true),
            ("NotIn", &["false"], &[("k", "false")], false),
            ("NotIn", &["false"], &[("k", "False")], true),
            ("Exists", &[], &[("k", "")], true),
            ("Exists", &[], &[], false),
            ("DoesNotExist", &[], &[], true),
            ("DoesNotExist", &[], &[("k", "x")], false),
            ("Bogus", &[], &[("k", "x")], false),
        ];
        for (op, values, given, want) in cases {
            let sel = LabelSelector {
                match_expressions: Some(vec![requirement("k", op, values)]),
                match_labels: None,
            };
            assert_eq!(
                matches(&sel, &labels(given)),
                *want,
                "{op} {values:?} {given:?}"
            );
        }
    }

    #[test]
    fn match_labels_and_empty_selector() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "redis")])),
            match_expressions: None,
        };
        assert!(matches(&sel, &labels(&[("app", "redis"), ("x", "y")])));
        assert!(!matches(&sel, &labels(&[("app", "web")])));
        assert!(matches(&LabelSelector::default(), &labels(&[])));
    }
}
