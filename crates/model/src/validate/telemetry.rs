//! Semantic rules of Telemetry (its tracing part), after Istio's validation: sampling
//! percentages within 0–100, named providers, custom tags with exactly one source (`literal`,
//! `environment` or `header`) and the names they need, and a selector or a target reference,
//! not both.

use super::checks::Checker;
use super::path::FieldPath;
use crate::istio::TelemetrySpec;
use crate::istio::telemetry::CustomTag;

/// Whether `name` is an HTTP header name (an RFC 9110 token).
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks one custom tag (`tag`, named `name`) at `at`.
fn custom_tag(c: &mut Checker<'_>, name: &str, tag: &CustomTag, at: &FieldPath) {
    if name.trim().is_empty() {
        c.error(at, "a custom tag needs a non-empty tag name");
    }
    let set = [
        tag.literal.is_some(),
        tag.environment.is_some(),
        tag.header.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if set != 1 {
        c.error(
            at,
            format!("exactly one of literal, environment or header must be set ({set} are)"),
        );
    }
    if let Some(l) = &tag.literal
        && l.value.is_none()
    {
        c.error(
            &at.key("literal").key("value"),
            "a literal tag needs a value",
        );
    }
    if let Some(e) = &tag.environment
        && e.name.as_deref().is_none_or(|n| n.trim().is_empty())
    {
        c.error(
            &at.key("environment").key("name"),
            "an environment tag needs the name of an environment variable of the proxy",
        );
    }
    if let Some(h) = &tag.header {
        match h.name.as_deref() {
            None | Some("") => c.error(
                &at.key("header").key("name"),
                "a header tag needs the name of a request header",
            ),
            Some(n) if !is_header_name(n) => c.error(
                &at.key("header").key("name"),
                format!("{n:?} is not an HTTP header name"),
            ),
            Some(_) => {}
        }
    }
}

/// Checks a Telemetry spec found at `path`.
pub fn check(c: &mut Checker<'_>, spec: &TelemetrySpec, path: &FieldPath) {
    if let Some(sel) = &spec.selector {
        c.labels(&path.key("selector").key("matchLabels"), &sel.match_labels);
        if spec.target_ref.is_some() || !spec.target_refs.is_empty() {
            c.error(
                &path.key("selector"),
                "only one of selector, targetRef or targetRefs may be set",
            );
        }
    }
    for (i, t) in spec.tracing.iter().enumerate() {
        let at = path.key("tracing").index(i);
        if let Some(p) = t.random_sampling_percentage
            && !(0.0..=100.0).contains(&p)
        {
            c.error(
                &at.key("randomSamplingPercentage"),
                format!("{p} is not a percentage between 0 and 100"),
            );
        }
        for (j, p) in t.providers.iter().enumerate() {
            if p.name.as_deref().is_none_or(str::is_empty) {
                c.error(
                    &at.key("providers").index(j).key("name"),
                    "a provider needs a name (one of the mesh config's extensionProviders)",
                );
            }
        }
        if t.providers.len() > 1 {
            c.warn(
                &at.key("providers"),
                "only the first provider is used (as in Istio)",
            );
        }
        for (name, tag) in t.custom_tags.iter().flatten() {
            custom_tag(c, name, tag, &at.key("customTags").key(name.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::load::parse_documents;
    use crate::validate::validate_documents;

    fn run(text: &str) -> crate::validate::Report {
        validate_documents(&parse_documents("t.yaml", text).expect("yaml"))
    }

    #[test]
    fn telemetry_tracing_is_checked() {
        let ok = run(
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: mesh-default\n  namespace: istio-system\nspec:\n  tracing:\n  - providers:\n    - name: otel\n    randomSamplingPercentage: 10\n",
        );
        assert!(ok.errors.is_empty(), "{:?}", ok.errors);
        assert_eq!(ok.telemetries.len(), 1);
        let bad = run(
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: t\nspec:\n  tracing:\n  - providers:\n    - {}\n    randomSamplingPercentage: 150\n  tracng: []\n",
        );
        let text: Vec<String> = bad.errors.iter().map(|e| e.to_string()).collect();
        assert!(text.iter().any(|e| e.contains("150")), "{text:?}");
        assert!(text.iter().any(|e| e.contains("needs a name")), "{text:?}");
        assert!(text.iter().any(|e| e.contains("tracng")), "{text:?}");
        assert!(bad.telemetries.is_empty());
    }

    const HEAD: &str = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: tags\n  namespace: shop\nspec:\n  tracing:\n  - ";

    /// The errors of a Telemetry whose first tracing entry is `entry` (YAML flow mapping
    /// fields), as `ferry validate` prints them.
    fn errors_of(entry: &str) -> Vec<String> {
        let r = run(&format!("{HEAD}{entry}\n"));
        r.errors.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn custom_tags_and_match_are_checked() {
        // (entry, a part of one of its errors, or None for valid)
        let cases: &[(&str, Option<&str>)] = &[
            (
                "customTags: {team: {literal: {value: shop}}, zone: {environment: {name: ZONE, defaultValue: z0}}, user: {header: {name: x-user}}}",
                None,
            ),
            ("match: {mode: CLIENT}", None),
            ("match: {mode: SERVER}", None),
            ("match: {mode: CLIENT_AND_SERVER}", None),
            ("match: {}", None),
            (
                "customTags: {t: {}}",
                Some(
                    "spec.tracing[0].customTags.t: exactly one of literal, environment or header must be set (0 are)",
                ),
            ),
            (
                "customTags: {t: {literal: {value: a}, header: {name: b}}}",
                Some(
                    "spec.tracing[0].customTags.t: exactly one of literal, environment or header must be set (2 are)",
                ),
            ),
            (
                "customTags: {t: {literal: {}}}",
                Some("spec.tracing[0].customTags.t.literal.value: a literal tag needs a value"),
            ),
            (
                "customTags: {t: {environment: {defaultValue: x}}}",
                Some(
                    "spec.tracing[0].customTags.t.environment.name: an environment tag needs the name",
                ),
            ),
            (
                "customTags: {t: {header: {name: \"\"}}}",
                Some(
                    "spec.tracing[0].customTags.t.header.name: a header tag needs the name of a request header",
                ),
            ),
            (
                "customTags: {t: {header: {name: \"x user\"}}}",
                Some("\"x user\" is not an HTTP header name"),
            ),
            (
                "customTags: {\"\": {literal: {value: a}}}",
                Some("a custom tag needs a non-empty tag name"),
            ),
            ("customTags: {t: {literl: {value: a}}}", Some("literl")),
            ("match: {mode: CLIENTS}", Some("CLIENTS")),
            ("match: {mod: CLIENT}", Some("mod")),
        ];
        for (entry, want) in cases {
            let errors = errors_of(entry);
            match want {
                None => assert!(errors.is_empty(), "{entry}: {errors:?}"),
                Some(w) => {
                    assert!(errors.iter().any(|e| e.contains(w)), "{entry}: {errors:?}");
                    // Every error names the file and the resource.
                    assert!(
                        errors
                            .iter()
                            .all(|e| e.starts_with("t.yaml:8: Telemetry/shop/tags: ")),
                        "{entry}: {errors:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn several_tracing_entries_are_accepted_without_warning() {
        let r = run(&format!(
            "{HEAD}match: {{mode: CLIENT}}\n    providers: [{{name: otel}}]\n  - match: {{mode: SERVER}}\n    disableSpanReporting: true\n"
        ));
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        let t = &r.telemetries[0].spec.tracing;
        use crate::istio::telemetry::WorkloadMode;
        assert_eq!(t[0].mode(), WorkloadMode::Client);
        assert_eq!(t[1].mode(), WorkloadMode::Server);
    }
}
