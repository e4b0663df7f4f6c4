//! Tracing settings per proxy, from Istio's inputs:
//!
//! - the mesh config (`istio` ConfigMap of the root namespace, key `mesh`):
//!   `extensionProviders` (`opentelemetry`, with `http` for OTLP/HTTP; `zipkin`),
//!   `defaultProviders.tracing`, and the legacy `defaultConfig.tracing` (`sampling`,
//!   `zipkin.address`) with `enableTracing`;
//! - `Telemetry` resources (`telemetry.istio.io`): the root namespace's without a selector
//!   (mesh), the proxy's namespace's without a selector (namespace), and those of its
//!   namespace that select it (workload), and within each every `tracing` entry in order,
//!   each overriding, for the span kinds its `match.mode` selects, the fields it sets
//!   (`providers`, `randomSamplingPercentage`, `disableSpanReporting`, `customTags` as a
//!   whole);
//! - the pod's `proxy.istio.io/config` annotation (`tracing.sampling`, `tracing.zipkin`),
//!   which overrides the mesh's `defaultConfig`.
//!
//! Sampling: the Telemetry's `randomSamplingPercentage`, else the pod's or the mesh's
//! `tracing.sampling`, else Istio's legacy default of 1%. Tracing is off (no field in the
//! proxy's configuration) until a provider is configured, as in Istio since 1.22. The
//! provider's `maxTagLength` (else the legacy `tracing.maxPathTagLength`) bounds tag values.
//! Ferry's addition: Redis command spans, turned on by the annotation
//! `tracing.ferry.dev/redis-spans: "true"` on the pod or on the Telemetry that applies.

use std::collections::BTreeMap;

use ferry_model::IstioResource;
use ferry_model::istio::telemetry::{CustomTag, ExtensionProvider, ProxyTracing};
use ferry_model::istio::{MeshConfig, TelemetrySpec};
use ferry_proto::config::tracing::{CustomTag as ProxyTag, SpanMode, TagSource};
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

/// Where a side's spans go.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    provider: TracingProvider,
    endpoint: String,
    /// The provider's `maxTagLength`, when set.
    max_tag_length: Option<u32>,
}

/// The URL (and tag length limit) of an extension provider.
fn endpoint(p: &ExtensionProvider) -> Option<Target> {
    if let Some(o) = &p.opentelemetry {
        let service = o.service.as_deref().filter(|s| !s.is_empty())?;
        let (provider, endpoint) = match &o.http {
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
        };
        return Some(Target {
            provider,
            endpoint,
            max_tag_length: o.max_tag_length,
        });
    }
    let z = p.zipkin.as_ref()?;
    let service = z.service.as_deref().filter(|s| !s.is_empty())?;
    Some(Target {
        provider: TracingProvider::Zipkin,
        endpoint: format!(
            "http://{service}:{}{}",
            z.port.unwrap_or(9411),
            path_or(z.path.as_deref(), "/api/v2/spans")
        ),
        max_tag_length: z.max_tag_length,
    })
}

fn path_or(path: Option<&str>, default: &str) -> String {
    match path.filter(|p| !p.is_empty()) {
        Some(p) if p.starts_with('/') => p.to_string(),
        Some(p) => format!("/{p}"),
        None => default.to_string(),
    }
}

/// The Telemetry tracing settings of one side of a proxy (Istio's client or server
/// `TracingSpec`), each `None` when no scope sets it.
#[derive(Debug, Default, Clone)]
struct Side {
    provider: Option<String>,
    sampling: Option<f64>,
    disabled: Option<bool>,
    custom_tags: Option<BTreeMap<String, CustomTag>>,
}

/// The merged Telemetry settings of a proxy: one [`Side`] per span kind, and Ferry's Redis
/// switch.
#[derive(Debug, Default)]
struct Merged {
    client: Side,
    server: Side,
    redis: Option<bool>,
}

/// Istio's merge: the mesh, namespace and workload Telemetry in that order, and within each
/// every `tracing` entry in order, each applied to the sides its `match.mode` selects; a
/// field set later replaces the one before (custom tags as a whole, not tag by tag).
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
        for spec in &t.spec.tracing {
            let mode = spec.mode();
            let sides = [
                mode.client().then_some(&mut m.client),
                mode.server().then_some(&mut m.server),
            ];
            for side in sides.into_iter().flatten() {
                if let Some(name) = spec.providers.first().and_then(|p| p.name.clone()) {
                    side.provider = Some(name);
                }
                if let Some(p) = spec.random_sampling_percentage.and_then(valid_percentage) {
                    side.sampling = Some(p);
                }
                if let Some(d) = spec.disable_span_reporting {
                    side.disabled = Some(d);
                }
                if let Some(tags) = &spec.custom_tags {
                    side.custom_tags = Some(tags.clone());
                }
            }
        }
    }
    m
}

/// The proxy's form of a Telemetry custom tag; `None` for one validation refuses (no source,
/// or no name).
fn tag_source(tag: &CustomTag) -> Option<TagSource> {
    fn named(n: &Option<String>) -> Option<&str> {
        n.as_deref().map(str::trim).filter(|n| !n.is_empty())
    }
    match (&tag.literal, &tag.environment, &tag.header) {
        (Some(l), None, None) => Some(TagSource::Literal {
            value: l.value.clone()?,
        }),
        (None, Some(e), None) => Some(TagSource::Environment {
            name: named(&e.name)?.to_string(),
            default_value: e.default_value.clone(),
        }),
        (None, None, Some(h)) => Some(TagSource::Header {
            name: named(&h.name)?.to_ascii_lowercase(),
            default_value: h.default_value.clone(),
        }),
        _ => None,
    }
}

/// The custom tags of the reported sides, in tag-name order: one entry for both kinds when
/// the two sides agree on a tag, else one per side.
fn custom_tags(client: Option<&Side>, server: Option<&Side>) -> Vec<ProxyTag> {
    let of = |side: Option<&Side>| -> BTreeMap<String, TagSource> {
        side.and_then(|s| s.custom_tags.as_ref())
            .into_iter()
            .flatten()
            .filter(|(name, _)| !name.trim().is_empty())
            .filter_map(|(name, tag)| Some((name.clone(), tag_source(tag)?)))
            .collect()
    };
    let (client, server) = (of(client), of(server));
    let mut names: Vec<&String> = client.keys().chain(server.keys()).collect();
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        let tag = |source: &TagSource, spans| ProxyTag {
            tag: name.clone(),
            source: source.clone(),
            spans,
        };
        match (client.get(name), server.get(name)) {
            (Some(c), Some(s)) if c == s => out.push(tag(c, SpanMode::ClientAndServer)),
            (c, s) => {
                out.extend(c.map(|c| tag(c, SpanMode::Client)));
                out.extend(s.map(|s| tag(s, SpanMode::Server)));
            }
        }
    }
    out
}

/// The tracing settings of a proxy in `pod_ns` with `labels` and `annotations`; `None` when
/// no provider applies or span reporting is disabled for both span kinds.
///
/// A side (client or server spans) is reported when it has a provider (its own, the mesh's
/// default, or the legacy Zipkin address) and is not disabled. Ferry exports to one provider
/// at one sampling rate per proxy: when both sides are reported and their Telemetry settings
/// differ, the client side's provider and rate are used.
pub fn resolve(
    inputs: &TracingInputs<'_>,
    root_ns: &str,
    pod_ns: &str,
    labels: &Labels,
    annotations: &Labels,
) -> Option<Tracing> {
    let merged = merge(inputs.telemetries, root_ns, pod_ns, labels);
    let pod_tracing = annotated(annotations);
    let mesh_tracing = inputs.mesh.and_then(|m| m.default_config.tracing.as_ref());
    let legacy_on = inputs.mesh.and_then(|m| m.enable_tracing) != Some(false);
    let default_provider = || {
        inputs
            .mesh
            .and_then(|m| m.default_providers.tracing.first().cloned())
    };
    let legacy = || {
        let address = pod_tracing
            .as_ref()
            .and_then(|t| t.zipkin.as_ref())
            .or_else(|| mesh_tracing.and_then(|t| t.zipkin.as_ref()))
            .and_then(|z| z.address.as_deref())
            .filter(|a| !a.trim().is_empty())?;
        legacy_on.then(|| Target {
            provider: TracingProvider::Zipkin,
            endpoint: format!("http://{}/api/v2/spans", address.trim()),
            max_tag_length: None,
        })
    };
    let target = |side: &Side| -> Option<Target> {
        if side.disabled == Some(true) {
            return None;
        }
        let named = side.provider.clone().or_else(default_provider);
        named
            .and_then(|name| endpoint(inputs.mesh?.provider(&name)?))
            .or_else(legacy)
    };
    let client = target(&merged.client);
    let server = target(&merged.server);
    let spans = SpanMode::of(client.is_some(), server.is_some())?;
    let (chosen, side) = match (client, server) {
        (Some(c), _) => (c, &merged.client),
        (None, Some(s)) => (s, &merged.server),
        (None, None) => return None,
    };
    let sampling = side
        .sampling
        .or_else(|| pod_tracing.as_ref().and_then(|t| t.sampling))
        .or_else(|| mesh_tracing.and_then(|t| t.sampling))
        .and_then(valid_percentage)
        .unwrap_or(ferry_proto::config::tracing::default_sampling());
    // The provider's maxTagLength, else the legacy maxPathTagLength (pod, then mesh), as
    // Istio falls back; 0 is the default (256).
    let max_tag_length = chosen
        .max_tag_length
        .or_else(|| pod_tracing.as_ref().and_then(|t| t.max_path_tag_length))
        .or_else(|| mesh_tracing.and_then(|t| t.max_path_tag_length))
        .unwrap_or(0);
    Some(Tracing {
        provider: chosen.provider,
        endpoint: chosen.endpoint,
        sampling_percentage: sampling,
        redis_spans: truthy(Some(annotations)).or(merged.redis).unwrap_or(false),
        custom_tags: custom_tags(
            spans.client().then_some(&merged.client),
            spans.server().then_some(&merged.server),
        ),
        spans,
        max_tag_length,
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

    /// A Telemetry from its `spec` in YAML.
    fn tel(ns: &str, name: &str, spec: &str) -> IstioResource<TelemetrySpec> {
        let value: serde_json::Value = serde_yaml_ng::from_str(spec).expect("yaml");
        IstioResource {
            api_version: "telemetry.istio.io/v1".into(),
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec: serde_json::from_value(value).expect("spec"),
        }
    }

    fn literal(tag: &str, value: &str, spans: SpanMode) -> ProxyTag {
        ProxyTag {
            tag: tag.into(),
            source: TagSource::Literal {
                value: value.into(),
            },
            spans,
        }
    }

    /// Telemetry resources, what the proxy of `app=front` in `shop` gets: span kinds,
    /// custom tags and max tag length (`None` for tracing off).
    #[test]
    fn match_custom_tags_and_max_tag_length_table() {
        const MESH_TAGS: &str = r#"
extensionProviders:
- name: otel
  opentelemetry: {service: otel.obs, port: 4317, maxTagLength: 64}
- name: zipkin
  zipkin: {service: zipkin.obs}
defaultProviders:
  tracing: [zipkin]
"#;
        let both = SpanMode::ClientAndServer;
        type Want = Option<(TracingProvider, SpanMode, Vec<ProxyTag>, u32)>;
        // (case, Telemetry resources, expected); the mesh's default provider is zipkin.
        let mut cases: Vec<(&str, Vec<IstioResource<TelemetrySpec>>, Want)> = vec![
            (
                "mesh default provider, no Telemetry",
                vec![],
                Some((TracingProvider::Zipkin, both, vec![], 0)),
            ),
            (
                "a provider's maxTagLength",
                vec![tel(
                    "istio-system",
                    "m",
                    "tracing: [{providers: [{name: otel}]}]",
                )],
                Some((TracingProvider::OtlpGrpc, both, vec![], 64)),
            ),
            (
                "client only",
                vec![tel(
                    "shop",
                    "n",
                    "tracing: [{match: {mode: CLIENT}}, {match: {mode: SERVER}, disableSpanReporting: true}]",
                )],
                Some((TracingProvider::Zipkin, SpanMode::Client, vec![], 0)),
            ),
            (
                "server only, by the workload's Telemetry",
                vec![
                    tel(
                        "shop",
                        "n",
                        "tracing: [{customTags: {team: {literal: {value: shop}}}}]",
                    ),
                    tel(
                        "shop",
                        "w",
                        "selector: {matchLabels: {app: front}}\ntracing: [{match: {mode: CLIENT}, disableSpanReporting: true}]",
                    ),
                ],
                Some((
                    TracingProvider::Zipkin,
                    SpanMode::Server,
                    vec![literal("team", "shop", SpanMode::Server)],
                    0,
                )),
            ),
            (
                "both sides disabled: off",
                vec![tel(
                    "shop",
                    "n",
                    "tracing: [{match: {mode: CLIENT}, disableSpanReporting: true}, {match: {mode: SERVER}, disableSpanReporting: true}]",
                )],
                None,
            ),
            (
                "re-enabled by a narrower scope",
                vec![
                    tel(
                        "istio-system",
                        "m",
                        "tracing: [{disableSpanReporting: true}]",
                    ),
                    tel(
                        "shop",
                        "n",
                        "tracing: [{match: {mode: SERVER}, disableSpanReporting: false}]",
                    ),
                ],
                Some((TracingProvider::Zipkin, SpanMode::Server, vec![], 0)),
            ),
            (
                "custom tags are replaced as a whole by a narrower scope, not merged",
                vec![
                    tel(
                        "istio-system",
                        "m",
                        "tracing: [{customTags: {a: {literal: {value: '1'}}, b: {literal: {value: '2'}}}}]",
                    ),
                    tel(
                        "shop",
                        "n",
                        "tracing: [{customTags: {c: {environment: {name: ZONE, defaultValue: z0}}}}]",
                    ),
                ],
                Some((
                    TracingProvider::Zipkin,
                    both,
                    vec![ProxyTag {
                        tag: "c".into(),
                        source: TagSource::Environment {
                            name: "ZONE".into(),
                            default_value: Some("z0".into()),
                        },
                        spans: both,
                    }],
                    0,
                )),
            ),
            (
                "an empty customTags clears the inherited ones",
                vec![
                    tel(
                        "istio-system",
                        "m",
                        "tracing: [{customTags: {a: {literal: {value: '1'}}}}]",
                    ),
                    tel("shop", "n", "tracing: [{customTags: {}}]"),
                ],
                Some((TracingProvider::Zipkin, both, vec![], 0)),
            ),
            (
                "per-side tags from entries with different modes",
                vec![tel(
                    "shop",
                    "n",
                    "tracing: [{customTags: {a: {literal: {value: '1'}}, h: {header: {name: X-User}}}}, {match: {mode: SERVER}, customTags: {a: {literal: {value: '2'}}}}]",
                )],
                Some((
                    TracingProvider::Zipkin,
                    both,
                    vec![
                        literal("a", "1", SpanMode::Client),
                        literal("a", "2", SpanMode::Server),
                        ProxyTag {
                            tag: "h".into(),
                            source: TagSource::Header {
                                name: "x-user".into(),
                                default_value: None,
                            },
                            spans: SpanMode::Client,
                        },
                    ],
                    0,
                )),
            ),
            (
                "a tag without a source is left out",
                vec![tel(
                    "shop",
                    "n",
                    "tracing: [{customTags: {bad: {}, ok: {literal: {value: v}}}}]",
                )],
                Some((
                    TracingProvider::Zipkin,
                    both,
                    vec![literal("ok", "v", both)],
                    0,
                )),
            ),
            (
                "the client side's provider wins when the sides differ",
                vec![tel(
                    "shop",
                    "n",
                    "tracing: [{match: {mode: SERVER}, providers: [{name: otel}]}]",
                )],
                Some((TracingProvider::Zipkin, both, vec![], 0)),
            ),
        ];
        let mesh = MeshConfig::parse(MESH_TAGS).expect("mesh");
        // The same cases without a default provider: a side with no provider of its own is
        // not reported.
        let no_default = MeshConfig {
            default_providers: Default::default(),
            ..mesh.clone()
        };
        let without_default: Vec<(&str, Vec<IstioResource<TelemetrySpec>>, Want)> = vec![
            ("no provider at all", vec![], None),
            (
                "a server-only provider",
                vec![tel(
                    "shop",
                    "n",
                    "tracing: [{match: {mode: SERVER}, providers: [{name: otel}]}]",
                )],
                Some((TracingProvider::OtlpGrpc, SpanMode::Server, vec![], 64)),
            ),
        ];
        let front = labels(&[("app", "front")]);
        let none = Labels::new();
        let with = cases.len();
        cases.extend(without_default);
        for (i, (name, telemetries, want)) in cases.into_iter().enumerate() {
            let inputs = TracingInputs {
                mesh: Some(if i < with { &mesh } else { &no_default }),
                telemetries: &telemetries,
            };
            let got = resolve(&inputs, "istio-system", "shop", &front, &none)
                .map(|t| (t.provider, t.spans, t.custom_tags, t.max_tag_length));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn legacy_max_path_tag_length_is_the_fallback() {
        let none = Labels::new();
        let mesh = MeshConfig::parse(
            "defaultConfig: {tracing: {maxPathTagLength: 99, zipkin: {address: 'z:9411'}}}",
        )
        .expect("mesh");
        let inputs = TracingInputs {
            mesh: Some(&mesh),
            telemetries: &[],
        };
        let t = resolve(&inputs, "istio-system", "shop", &none, &none).expect("on");
        assert_eq!(
            (t.provider, t.max_tag_length),
            (TracingProvider::Zipkin, 99)
        );
        // The pod's annotation beats the mesh.
        let ann = labels(&[(PROXY_CONFIG_ANNOTATION, "tracing: {maxPathTagLength: 12}")]);
        let t = resolve(&inputs, "istio-system", "shop", &none, &ann).expect("on");
        assert_eq!(t.max_tag_length, 12);
    }

    #[test]
    fn proxy_tracing_new_fields_default_and_round_trip() {
        // A configuration written before these fields still reads, with the defaults.
        let old: Tracing = serde_json::from_str(
            r#"{"provider":"zipkin","endpoint":"http://z:9411/api/v2/spans"}"#,
        )
        .expect("old");
        assert_eq!(old.spans, SpanMode::ClientAndServer);
        assert!(old.custom_tags.is_empty());
        assert_eq!(old.max_tag_length(), 256);
        let t = Tracing {
            spans: SpanMode::Client,
            custom_tags: vec![
                ProxyTag {
                    tag: "team".into(),
                    source: TagSource::Literal {
                        value: "shop".into(),
                    },
                    spans: SpanMode::ClientAndServer,
                },
                ProxyTag {
                    tag: "user".into(),
                    source: TagSource::Header {
                        name: "x-user".into(),
                        default_value: Some("anon".into()),
                    },
                    spans: SpanMode::Server,
                },
            ],
            max_tag_length: 64,
            ..old
        };
        let json = serde_json::to_string(&t).expect("json");
        assert!(json.contains(r#""spans":"client""#), "{json}");
        assert!(
            json.contains(r#"{"header":{"name":"x-user","defaultValue":"anon"}}"#),
            "{json}"
        );
        let back: Tracing = serde_json::from_str(&json).expect("back");
        assert_eq!(back, t);
        assert_eq!(back.max_tag_length(), 64);
        for (mode, client, server) in [
            (SpanMode::ClientAndServer, true, true),
            (SpanMode::Client, true, false),
            (SpanMode::Server, false, true),
        ] {
            assert_eq!((mode.client(), mode.server()), (client, server));
            assert_eq!(SpanMode::of(client, server), Some(mode));
        }
        assert_eq!(SpanMode::of(false, false), None);
    }
}
