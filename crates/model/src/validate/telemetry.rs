//! Semantic rules of Telemetry (its tracing part), after Istio's validation: sampling
//! percentages within 0–100, named providers, and a selector or a target reference, not both.

use super::checks::Checker;
use super::path::FieldPath;
use crate::istio::TelemetrySpec;

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
    }
    if spec.tracing.len() > 1 {
        c.warn(
            &path.key("tracing"),
            "only the first tracing entry is used by Ferry",
        );
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
}
