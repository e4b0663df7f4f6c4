//! Tracing settings per proxy, from Istio's inputs:
//!
//! - the mesh config (`istio` ConfigMap of the root namespace, key `mesh`):
//!   `extensionProviders` (`opentelemetry`, with `http` for OTLP/HTTP; `zipkin`),
//!   `defaultProviders.tracing`, and the legacy `defaultConfig.tracing` (`sampling`,
//!   `zipkin.address`) with `enableTracing`;
//! - `Telemetry` resources (`telemetry.istio.io`): the root namespace's without a selector
//!   (mesh), the proxy's namespace's without a selector (namespace), and those of its
//!   namespace that select it (workload), each overriding the fields it sets of the one
//!   before (`providers`, `randomSamplingPercentage`, `disableSpanReporting`);
//! - the pod's `proxy.istio.io/config` annotation (`tracing.sampling`, `tracing.zipkin`),
//!   which overrides the mesh's `defaultConfig`.
//!
//! Sampling: the Telemetry's `randomSamplingPercentage`, else the pod's or the mesh's
//! `tracing.sampling`, else Istio's legacy default of 1%. Tracing is off (no field in the
//! proxy's configuration) until a provider is configured, as in Istio since 1.22.
//! Ferry's addition: Redis command spans, turned on by the annotation
//! `tracing.ferry.dev/redis-spans: "true"` on the pod or on the Telemetry that applies.

use ferry_model::IstioResource;
use ferry_model::istio::telemetry::{ExtensionProvider, ProxyTracing};
use ferry_model::istio::{MeshConfig, TelemetrySpec};
use ferry_proto::config::{Tracing, TracingProvider};

use super::scope::{namespace, selects, sorted};
use crate::registry::{Labels, Registry};

/// The annotation that turns Redis command spans on (pod or Telemetry).
pub const REDIS_SPANS_ANNOTATION: &str = "tracing.ferry.dev/redis-spans";
/// Istio's per-pod proxy settings annotation.
pub const PROXY_CONFIG_ANNOTATION: &str = "proxy.istio.io/config";

/// What tracing is compiled from, besides the pod.
#[derive(Debug, Clone, Default)]
pub struct TracingInputs<'a> {
    /// The mesh config, when the root namespace's `istio` ConfigMap has one.
    pub mesh: Option<&'a MeshConfig>,
    /// Telemetry resources.
    pub telemetries: &'a [IstioResource<TelemetrySpec>],
}

/// The tracing inputs the registry carries: the mesh config (root namespace's `istio`
/// ConfigMap) and the Telemetry resources.
pub(crate) fn inputs(registry: &Registry) -> TracingInputs<'_> {
    TracingInputs {
        mesh: registry.policies.mesh.as_ref(),
        telemetries: &registry.policies.telemetries,
    }
}

/// The pod's `proxy.istio.io/config` tracing part, if the annotation parses.
fn annotated(annotations: &Labels) -> Option<ProxyTracing> {
    let text = annotations.get(PROXY_CONFIG_ANNOTATION)?;
    let doc = ferry_model::load::parse_documents(PROXY_CONFIG_ANNOTATION, text)
        .ok()?
        .into_iter()
        .next()?;
    serde_json::from_value(doc.value.get("tracing")?.clone()).ok()
}

fn truthy(annotations: Option<&Labels>) -> Option<bool> {
    annotations?
        .get(REDIS_SPANS_ANNOTATION)
        .map(|v| v.trim().eq_ignore_ascii_case("true"))
}

fn valid_percentage(p: f64) -> Option<f64> {
    (0.0..=100.0).contains(&p).then_some(p)
}

/// The URL of an extension provider.
fn endpoint(p: &ExtensionProvider) -> Option<(TracingProvider, String)> {
    if let Some(o) = &p.opentelemetry {
        let service = o.service.as_deref().filter(|s| !s.is_empty())?;
        return Some(match &o.http {
            Some(h) => (
                TracingProvider::OtlpHttp,
                format!(
                    "http://{service}:{}{}",
                    o.port.unwrap_or(4318),
                    path_or(h.path.as_deref(), "/v1/traces")
                ),
            ),
            None => (
                TracingProvider::OtlpGrpc,
                format!("http://{service}:{}", o.port.unwrap_or(4317)),
            ),
        });
    }
    let z = p.zipkin.as_ref()?;
    let service = z.service.as_deref().filter(|s| !s.is_empty())?;
    Some((
        TracingProvider::Zipkin,
        format!(
            "http://{service}:{}{}",
            z.port.unwrap_or(9411),
            path_or(z.path.as_deref(), "/api/v2/spans")
        ),
    ))
}

fn path_or(path: Option<&str>, default: &str) -> String {
    match path.filter(|p| !p.is_empty()) {
        Some(p) if p.starts_with('/') => p.to_string(),
        Some(p) => format!("/{p}"),
        None => default.to_string(),
    }
}

/// The merged Telemetry tracing settings for a proxy: (provider name, sampling, disabled,
/// redis spans), each `None` when no scope sets it.
#[derive(Debug, Default)]
struct Merged {
    provider: Option<String>,
    sampling: Option<f64>,
    disabled: Option<bool>,
    redis: Option<bool>,
}

fn merge(
    telemetries: &[IstioResource<TelemetrySpec>],
    root_ns: &str,
    pod_ns: &str,
    labels: &Labels,
) -> Merged {
    let ordered = sorted(telemetries);
    // The oldest resource of each scope applies (Istio warns about the others).
    let mesh = ordered
        .iter()
        .find(|t| namespace(&t.metadata) == root_ns && t.spec.selector.is_none());
    let ns = ordered.iter().find(|t| {
        namespace(&t.metadata) == pod_ns && pod_ns != root_ns && t.spec.selector.is_none()
    });
    let workload = ordered.iter().find(|t| {
        namespace(&t.metadata) == pod_ns
            && t.spec
                .selector
                .as_ref()
                .is_some_and(|s| selects(&s.match_labels, labels))
    });
    let mut m = Merged::default();
    for t in [mesh, ns, workload].into_iter().flatten() {
        if let Some(r) = truthy(t.metadata.annotations.as_ref()) {
            m.redis = Some(r);
        }
        let Some(spec) = t.spec.tracing.first() else {
            continue;
        };
        if let Some(name) = spec.providers.first().and_then(|p| p.name.clone()) {
            m.provider = Some(name);
        }
        if let Some(p) = spec.random_sampling_percentage.and_then(valid_percentage) {
            m.sampling = Some(p);
        }
        if let Some(d) = spec.disable_span_reporting {
            m.disabled = Some(d);
        }
    }
    m
}

/// The tracing settings of a proxy in `pod_ns` with `labels` and `annotations`; `None` when
/// no provider applies or span reporting is disabled.
pub fn resolve(
    inputs: &TracingInputs<'_>,
    root_ns: &str,
    pod_ns: &str,
    labels: &Labels,
    annotations: &Labels,
) -> Option<Tracing> {
    let merged = merge(inputs.telemetries, root_ns, pod_ns, labels);
    if merged.disabled == Some(true) {
        return None;
    }
    let pod_tracing = annotated(annotations);
    let mesh_tracing = inputs.mesh.and_then(|m| m.default_config.tracing.as_ref());
    let legacy_on = inputs.mesh.and_then(|m| m.enable_tracing) != Some(false);
    let sampling = merged
        .sampling
        .or_else(|| pod_tracing.as_ref().and_then(|t| t.sampling))
        .or_else(|| mesh_tracing.and_then(|t| t.sampling))
        .and_then(valid_percentage)
        .unwrap_or(ferry_proto::config::tracing::default_sampling());
    let named = merged.provider.or_else(|| {
        inputs
            .mesh
            .and_then(|m| m.default_providers.tracing.first().cloned())
    });
    let from_provider = named.and_then(|name| endpoint(inputs.mesh?.provider(&name)?));
    let legacy = || {
        let address = pod_tracing
            .as_ref()
            .and_then(|t| t.zipkin.as_ref())
            .or_else(|| mesh_tracing.and_then(|t| t.zipkin.as_ref()))
            .and_then(|z| z.address.as_deref())
            .filter(|a| !a.trim().is_empty())?;
        legacy_on.then(|| {
            (
                TracingProvider::Zipkin,
                format!("http://{}/api/v2/spans", address.trim()),
            )
        })
    };
    let (provider, endpoint) = from_provider.or_else(legacy)?;
    Some(Tracing {
        provider,
        endpoint,
        sampling_percentage: sampling,
        redis_spans: truthy(Some(annotations)).or(merged.redis).unwrap_or(false),
    })
}

/// The tracing settings of the proxy of a pod (by its labels and annotations) in
/// `registry`.
pub(crate) fn of(
    registry: &Registry,
    root_ns: &str,
    pod_ns: &str,
    labels: &Labels,
    annotations: &Labels,
) -> Option<Tracing> {
    resolve(&inputs(registry), root_ns, pod_ns, labels, annotations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::istio::WorkloadSelector;
    use ferry_model::istio::telemetry::{ProviderRef, TracingSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const MESH: &str = r#"
enableTracing: true
defaultConfig:
  tracing:
    sampling: 10
extensionProviders:
- name: otel
  opentelemetry:
    service: otel-collector.observability.svc.cluster.local
    port: 4317
- name: otel-http
  opentelemetry:
    service: otel-collector.observability.svc.cluster.local
    port: 4318
    http:
      path: /v1/traces
- name: zipkin
  zipkin:
    service: zipkin.istio-system.svc.cluster.local
    port: 9411
defaultProviders:
  tracing: [zipkin]
meshNetworks: {}
"#;

    fn telemetry(
        ns: &str,
        name: &str,
        selector: Option<&[(&str, &str)]>,
        provider: Option<&str>,
        sampling: Option<f64>,
    ) -> IstioResource<TelemetrySpec> {
        IstioResource {
            api_version: "telemetry.istio.io/v1".into(),
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec: TelemetrySpec {
                selector: selector.map(|s| WorkloadSelector {
                    match_labels: s
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                }),
                tracing: vec![TracingSpec {
                    providers: provider
                        .map(|p| {
                            vec![ProviderRef {
                                name: Some(p.into()),
                            }]
                        })
                        .unwrap_or_default(),
                    random_sampling_percentage: sampling,
                    ..Default::default()
                }],
                ..Default::default()
            },
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn off_without_a_provider() {
        let none = Labels::new();
        let inputs = TracingInputs::default();
        assert_eq!(
            resolve(&inputs, "istio-system", "default", &none, &none),
            None
        );
        // A sampling rate alone turns nothing on.
        let mesh = MeshConfig::parse("defaultConfig: {tracing: {sampling: 50}}").expect("mesh");
        let inputs = TracingInputs {
            mesh: Some(&mesh),
            telemetries: &[],
        };
        assert_eq!(
            resolve(&inputs, "istio-system", "default", &none, &none),
            None
        );
    }

    #[test]
    fn mesh_default_provider_and_sampling() {
        let mesh = MeshConfig::parse(MESH).expect("mesh");
        let inputs = TracingInputs {
            mesh: Some(&mesh),
            telemetries: &[],
        };
        let none = Labels::new();
        let t = resolve(&inputs, "istio-system", "default", &none, &none).expect("on");
        assert_eq!(t.provider, TracingProvider::Zipkin);
        assert_eq!(
            t.endpoint,
            "http://zipkin.istio-system.svc.cluster.local:9411/api/v2/spans"
        );
        assert_eq!(t.sampling_percentage, 10.0);
        assert!(!t.redis_spans);
        // The pod annotation's sampling overrides the mesh's defaultConfig.
        let ann = labels(&[
            (PROXY_CONFIG_ANNOTATION, "tracing:\n  sampling: 42\n"),
            (REDIS_SPANS_ANNOTATION, "true"),
        ]);
        let t = resolve(&inputs, "istio-system", "default", &none, &ann).expect("on");
        assert_eq!(t.sampling_percentage, 42.0);
        assert!(t.redis_spans);
    }

    #[test]
    fn telemetry_scopes_override_in_order() {
        let mesh = MeshConfig::parse(MESH).expect("mesh");
        let telemetries = vec![
            telemetry(
                "istio-system",
                "mesh-default",
                None,
                Some("otel"),
                Some(100.0),
            ),
            telemetry("shop", "ns", None, None, Some(5.0)),
            telemetry(
                "shop",
                "front",
                Some(&[("app", "front")]),
                Some("otel-http"),
                None,
            ),
            telemetry("other", "off", None, None, None),
        ];
        let inputs = TracingInputs {
            mesh: Some(&mesh),
            telemetries: &telemetries,
        };
        let none = Labels::new();
        // Mesh scope only.
        let t = resolve(&inputs, "istio-system", "default", &none, &none).expect("on");
        assert_eq!(t.provider, TracingProvider::OtlpGrpc);
        assert_eq!(
            t.endpoint,
            "http://otel-collector.observability.svc.cluster.local:4317"
        );
        assert_eq!(t.sampling_percentage, 100.0);
        // Namespace scope overrides the sampling, keeps the provider.
        let t = resolve(&inputs, "istio-system", "shop", &none, &none).expect("on");
        assert_eq!(t.provider, TracingProvider::OtlpGrpc);
        assert_eq!(t.sampling_percentage, 5.0);
        // Workload scope overrides the provider.
        let front = labels(&[("app", "front")]);
        let t = resolve(&inputs, "istio-system", "shop", &front, &none).expect("on");
        assert_eq!(t.provider, TracingProvider::OtlpHttp);
        assert_eq!(
            t.endpoint,
            "http://otel-collector.observability.svc.cluster.local:4318/v1/traces"
        );
        assert_eq!(t.sampling_percentage, 5.0);
        // A Telemetry's sampling beats the pod annotation's.
        let ann = labels(&[(PROXY_CONFIG_ANNOTATION, r#"{"tracing":{"sampling":42}}"#)]);
        let t = resolve(&inputs, "istio-system", "shop", &front, &ann).expect("on");
        assert_eq!(t.sampling_percentage, 5.0);
        // disableSpanReporting turns it off.
        let mut off = telemetry("shop", "quiet", Some(&[("app", "quiet")]), None, None);
        off.spec.tracing[0].disable_span_reporting = Some(true);
        let telemetries = vec![telemetries[0].clone(), off];
        let inputs = TracingInputs {
            mesh: Some(&mesh),
            telemetries: &telemetries,
        };
        let quiet = labels(&[("app", "quiet")]);
        assert_eq!(
            resolve(&inputs, "istio-system", "shop", &quiet, &none),
            None
        );
        // An unknown provider name is no provider.
        let unknown = vec![telemetry("istio-system", "m", None, Some("nope"), None)];
        let inputs = TracingInputs {
            mesh: Some(&mesh),
            telemetries: &unknown,
        };
        assert_eq!(resolve(&inputs, "istio-system", "shop", &none, &none), None);
    }

    #[test]
    fn legacy_zipkin_from_the_pod_annotation() {
        let none = Labels::new();
        let ann = labels(&[(
            PROXY_CONFIG_ANNOTATION,
            r#"{"tracing":{"sampling":100,"zipkin":{"address":"198.18.0.1:9411"}}}"#,
        )]);
        let t = resolve(
            &TracingInputs::default(),
            "istio-system",
            "default",
            &none,
            &ann,
        )
        .expect("on");
        assert_eq!(t.provider, TracingProvider::Zipkin);
        assert_eq!(t.endpoint, "http://198.18.0.1:9411/api/v2/spans");
        assert_eq!(t.sampling_percentage, 100.0);
        // enableTracing: false turns the legacy settings off.
        let mesh = MeshConfig::parse("enableTracing: false").expect("mesh");
        let inputs = TracingInputs {
            mesh: Some(&mesh),
            telemetries: &[],
        };
        assert_eq!(
            resolve(&inputs, "istio-system", "default", &none, &ann),
            None
        );
        // A malformed annotation is ignored.
        let bad = labels(&[(PROXY_CONFIG_ANNOTATION, "tracing: [")]);
        assert_eq!(
            resolve(
                &TracingInputs::default(),
                "istio-system",
                "default",
                &none,
                &bad
            ),
            None
        );
    }

    #[test]
    fn the_registry_carries_the_mesh_config_and_telemetries() {
        let mut registry = Registry {
            root_namespace: "istio-system".into(),
            ..Registry::default()
        };
        let none = Labels::new();
        assert_eq!(of(&registry, "istio-system", "app", &none, &none), None);
        registry.policies.mesh = MeshConfig::parse(MESH).ok();
        registry.policies.telemetries =
            vec![telemetry("app", "ns", None, Some("otel"), Some(40.0))];
        let t = of(&registry, "istio-system", "app", &none, &none);
        assert_eq!(
            t.map(|t| (t.provider, t.endpoint, t.sampling_percentage)),
            Some((
                TracingProvider::OtlpGrpc,
                "http://otel-collector.observability.svc.cluster.local:4317".to_string(),
                40.0
            ))
        );
        // Another namespace: the mesh's default provider (zipkin) and sampling (10).
        let t = of(&registry, "istio-system", "other", &none, &none);
        assert_eq!(
            t.map(|t| (t.provider, t.sampling_percentage)),
            Some((TracingProvider::Zipkin, 10.0))
        );
    }
}
