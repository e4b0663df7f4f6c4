//! Istio's injection precedence (reference 1.4), one row per line of the table, plus the
//! tutorial claims that are false. Each row runs the whole decision: webhook selectors on
//! namespace and pod labels (stage A), then the injector's own checks (stage B).

use ferry_inject::decision::decide;
use ferry_inject::selector::{Labels, requirement};
use ferry_inject::{Decision, InjectConfig, InjectionPolicy, SkipReason};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Value, json};

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

struct Row {
    what: &'static str,
    namespace: &'static str,
    ns_labels: &'static [(&'static str, &'static str)],
    pod_labels: &'static [(&'static str, &'static str)],
    pod_annotations: &'static [(&'static str, &'static str)],
    host_network: bool,
    want: Result<(), SkipReason>,
}

fn pod(row: &Row) -> Value {
    json!({
        "metadata": {
            "name": "redis-0",
            "labels": labels(row.pod_labels),
            "annotations": labels(row.pod_annotations),
        },
        "spec": { "hostNetwork": row.host_network, "containers": [{ "name": "redis", "image": "redis:alpine" }] }
    })
}

const INJ: &str = "sidecar.istio.io/inject";
const REV: &str = "istio.io/rev";
const NS_INJ: &str = "istio-injection";

fn check(rows: &[Row], cfg: &InjectConfig) {
    for row in rows {
        let got = decide(&labels(row.ns_labels), row.namespace, &pod(row), cfg);
        let want = match &row.want {
            Ok(()) => Decision::Inject,
            Err(reason) => Decision::Skip(reason.clone()),
        };
        assert_eq!(got, want, "{}", row.what);
    }
}

fn row(
    what: &'static str,
    ns_labels: &'static [(&'static str, &'static str)],
    pod_labels: &'static [(&'static str, &'static str)],
    pod_annotations: &'static [(&'static str, &'static str)],
    want: Result<(), SkipReason>,
) -> Row {
    Row {
        what,
        namespace: "default",
        ns_labels,
        pod_labels,
        pod_annotations,
        host_network: false,
        want,
    }
}

#[test]
fn precedence_table_of_a_default_install() {
    use SkipReason::*;
    let rows = [
        row("no labels anywhere", &[], &[], &[], Err(NotSelected)),
        row(
            "pod label true, namespace unlabelled",
            &[],
            &[(INJ, "true")],
            &[],
            Ok(()),
        ),
        row(
            "pod annotation true is invisible to the selectors",
            &[],
            &[],
            &[(INJ, "true")],
            Err(NotSelected),
        ),
        row(
            "pod revision label, no inject label",
            &[],
            &[(REV, "default")],
            &[],
            Ok(()),
        ),
        row(
            "pod revision label and inject label true",
            &[],
            &[(REV, "default"), (INJ, "true")],
            &[],
            Ok(()),
        ),
        row(
            "namespace enabled",
            &[(NS_INJ, "enabled")],
            &[],
            &[],
            Ok(()),
        ),
        row(
            "namespace enabled, pod revision label of another revision",
            &[(NS_INJ, "enabled")],
            &[(REV, "canary")],
            &[],
            Ok(()),
        ),
        row(
            "namespace enabled, pod label false: webhook never called",
            &[(NS_INJ, "enabled")],
            &[(INJ, "false")],
            &[],
            Err(NotSelected),
        ),
        row(
            "namespace enabled, pod annotation false: injector declines",
            &[(NS_INJ, "enabled")],
            &[],
            &[(INJ, "false")],
            Err(ExplicitlyDisabled),
        ),
        row(
            "label true beats annotation false",
            &[(NS_INJ, "enabled")],
            &[(INJ, "true")],
            &[(INJ, "false")],
            Ok(()),
        ),
        row(
            "label False (capital) is not false: selector misses, default policy injects",
            &[(NS_INJ, "enabled")],
            &[(INJ, "False")],
            &[],
            Ok(()),
        ),
        row(
            "namespace disabled, pod label true: no entry matches",
            &[(NS_INJ, "disabled")],
            &[(INJ, "true")],
            &[(INJ, "true")],
            Err(NotSelected),
        ),
        row(
            "namespace label any value but enabled",
            &[(NS_INJ, "yes")],
            &[],
            &[],
            Err(NotSelected),
        ),
        row(
            "namespace revision label",
            &[(REV, "default")],
            &[],
            &[],
            Ok(()),
        ),
        row(
            "namespace revision and istio-injection enabled: istio-injection wins",
            &[(REV, "canary"), (NS_INJ, "enabled")],
            &[],
            &[],
            Ok(()),
        ),
        row(
            "namespace revision of another control plane",
            &[(REV, "canary")],
            &[],
            &[],
            Err(NotSelected),
        ),
        row(
            "namespace revision beats pod revision",
            &[(REV, "canary")],
            &[(REV, "default")],
            &[],
            Err(NotSelected),
        ),
        row(
            "namespace revision default, pod revision of another",
            &[(REV, "default")],
            &[(REV, "canary")],
            &[],
            Ok(()),
        ),
        row(
            "annotation with an invalid value falls back to the policy",
            &[(NS_INJ, "enabled")],
            &[],
            &[(INJ, "enabled")],
            Ok(()),
        ),
        row(
            "empty label value overrides an annotation false and uses the policy",
            &[(NS_INJ, "enabled")],
            &[(INJ, "")],
            &[(INJ, "false")],
            Ok(()),
        ),
    ];
    check(&rows, &InjectConfig::default());
}

#[test]
fn host_network_and_system_namespaces_are_never_injected() {
    let cfg = InjectConfig::default();
    let mut r = row(
        "hostNetwork",
        &[(NS_INJ, "enabled")],
        &[(INJ, "true")],
        &[],
        Err(SkipReason::HostNetwork),
    );
    r.host_network = true;
    check(&[r], &cfg);
    for ns in [
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "local-path-storage",
    ] {
        let mut r = row(
            "system namespace",
            &[(NS_INJ, "enabled")],
            &[(INJ, "true")],
            &[],
            Err(SkipReason::IgnoredNamespace(ns.into())),
        );
        r.namespace = ns;
        check(&[r], &cfg);
    }
}

fn selector(key: &str, value: &str) -> LabelSelector {
    LabelSelector {
        match_expressions: Some(vec![requirement(key, "In", &[value])]),
        match_labels: None,
    }
}

#[test]
fn policy_and_selectors() {
    use SkipReason::*;
    let disabled = InjectConfig {
        policy: InjectionPolicy::Disabled,
        always_inject_selector: vec![selector("tier", "cache")],
        ..Default::default()
    };
    check(
        &[
            row(
                "policy disabled",
                &[(NS_INJ, "enabled")],
                &[],
                &[],
                Err(PolicyDisabled),
            ),
            row(
                "policy disabled, always selector matches",
                &[(NS_INJ, "enabled")],
                &[("tier", "cache")],
                &[],
                Ok(()),
            ),
            row(
                "policy disabled, explicit true",
                &[(NS_INJ, "enabled")],
                &[(INJ, "true")],
                &[],
                Ok(()),
            ),
        ],
        &disabled,
    );
    let never = InjectConfig {
        never_inject_selector: vec![selector("app", "redis")],
        always_inject_selector: vec![selector("app", "redis")],
        ..Default::default()
    };
    check(
        &[
            row(
                "never selector matches (and beats always)",
                &[(NS_INJ, "enabled")],
                &[("app", "redis")],
                &[],
                Err(NeverInjectSelector),
            ),
            row(
                "explicit true beats the never selector",
                &[(NS_INJ, "enabled")],
                &[("app", "redis"), (INJ, "true")],
                &[],
                Ok(()),
            ),
        ],
        &never,
    );
}

#[test]
fn namespaces_injected_by_default_when_enabled() {
    let cfg = InjectConfig {
        enable_namespaces_by_default: true,
        ..Default::default()
    };
    let mut system = row(
        "auto entry excludes kube-system",
        &[],
        &[],
        &[],
        Err(SkipReason::NotSelected),
    );
    system.namespace = "kube-system";
    check(
        &[
            row("unlabelled namespace and pod", &[], &[], &[], Ok(())),
            row(
                "pod opting out by label",
                &[],
                &[(INJ, "false")],
                &[],
                Err(SkipReason::NotSelected),
            ),
            system,
        ],
        &cfg,
    );
}

#[test]
fn false_tutorial_claims() {
    use SkipReason::*;
    check(
        &[
            // "A pod label istio-injection: disabled disables injection": it does nothing.
            row(
                "pod label istio-injection=disabled",
                &[(NS_INJ, "enabled")],
                &[(NS_INJ, "disabled")],
                &[],
                Ok(()),
            ),
            // "The app: redis label triggers injection": it plays no part.
            row(
                "app label alone",
                &[],
                &[("app", "redis")],
                &[],
                Err(NotSelected),
            ),
            row(
                "app label in an enabled namespace",
                &[(NS_INJ, "enabled")],
                &[("app", "redis")],
                &[],
                Ok(()),
            ),
            // "The annotation forces injection in an unlabelled namespace": not since 1.10.
            row(
                "annotation true, unlabelled namespace",
                &[],
                &[],
                &[(INJ, "true")],
                Err(NotSelected),
            ),
            // "istio-injection=disabled means the injector decides": it is never called.
            row(
                "namespace disabled",
                &[(NS_INJ, "disabled")],
                &[],
                &[],
                Err(NotSelected),
            ),
        ],
        &InjectConfig::default(),
    );
}
