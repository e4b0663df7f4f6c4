//! Tracing settings through the whole control plane, on loopback: a manifest directory
//! watched by the file source (the mesh config in the root namespace's `istio` ConfigMap,
//! a `Telemetry`), the store, the compiler and its cache, the real distribution server, and
//! a proxy's real discovery client following the stream. The Telemetry and mesh config
//! added turn tracing on at the proxy with the provider's endpoint and the sampling; a
//! sampling edit is pushed; an invalid edit is rejected with file, resource and field and
//! the last valid version stays; the Telemetry deleted, tracing is off again.

mod plane_stream;

use ferry_proto::config::TracingProvider;
use plane_stream::Harness;

const MESH: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
---
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  labels:
    app: web
spec:
  containers:
  - name: web
    image: nginx
"#;

/// The mesh config: an OTLP/gRPC provider, and no default provider (so tracing stays off
/// until a Telemetry names one).
const MESH_CONFIG: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: istio
  namespace: istio-system
data:
  mesh: |
    extensionProviders:
    - name: otel
      opentelemetry:
        service: otel-collector.observability.svc.cluster.local
        port: 4317
"#;

/// A Telemetry for the `default` namespace, sampling `sampling` percent.
fn telemetry(sampling: u32) -> String {
    format!(
        r#"apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: tracing
  namespace: default
spec:
  tracing:
  - providers:
    - name: otel
    randomSamplingPercentage: {sampling}
"#
    )
}

/// Another service, whose arrival at the proxy shows that it holds a configuration
/// compiled after an edit.
const OTHER: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: other
spec:
  selector:
    app: web
  ports:
  - name: http-other
    port: 8080
"#;

/// The proxy's tracing settings: (provider, endpoint, sampling percentage).
fn tracing(h: &Harness) -> Option<(TracingProvider, String, f64)> {
    let snapshot = h.config.load();
    (snapshot.config.tracing.as_ref())
        .map(|t| (t.provider, t.endpoint.clone(), t.sampling_percentage))
}

fn otel(sampling: f64) -> Option<(TracingProvider, String, f64)> {
    Some((
        TracingProvider::OtlpGrpc,
        "http://otel-collector.observability.svc.cluster.local:4317".to_string(),
        sampling,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_and_mesh_config_turn_tracing_on_are_edited_and_removed() {
    let h = Harness::start(MESH, "web-0").await;
    assert!(h.mesh.errors().is_empty(), "{:?}", h.mesh.errors());
    assert_eq!(tracing(&h), None, "tracing is off without a provider");

    // Added: the proxy gets the provider's endpoint and the Telemetry's sampling.
    h.write("mesh-config.yaml", MESH_CONFIG);
    h.write("telemetry.yaml", &telemetry(25));
    h.until(
        "tracing at the proxy",
        |h| tracing(h) == otel(25.0),
        tracing,
    )
    .await;
    assert!(h.mesh.errors().is_empty(), "{:?}", h.mesh.errors());

    // Edited: the new sampling is pushed.
    h.write("telemetry.yaml", &telemetry(75));
    h.until("the new sampling", |h| tracing(h) == otel(75.0), tracing)
        .await;

    // Invalid: rejected with the file, resource and field; the previous version stays, in
    // a configuration compiled after the edit (it has the service added with it).
    h.write("telemetry.yaml", &telemetry(250));
    h.write("other.yaml", OTHER);
    h.until(
        "the rejection and the other service",
        |h| h.has_other() && !h.mesh.errors().is_empty(),
        tracing,
    )
    .await;
    let errors = h.mesh.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let file = h.path("telemetry.yaml").display().to_string();
    assert!(
        errors[0].starts_with(&format!("{file}:"))
            && errors[0]
                .contains("Telemetry/default/tracing: spec.tracing[0].randomSamplingPercentage"),
        "{errors:?}"
    );
    assert_eq!(tracing(&h), otel(75.0), "the last valid version stays");

    // Deleted: tracing is off again (the mesh config names no default provider).
    std::fs::remove_file(h.path("telemetry.yaml")).expect("remove");
    h.until("tracing off", |h| tracing(h).is_none(), tracing)
        .await;
    assert!(h.mesh.errors().is_empty(), "{:?}", h.mesh.errors());
    assert!(h.has_other());
}
