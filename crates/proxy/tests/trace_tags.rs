//! Istio's span settings on the HTTP request path, in-process over loopback: a client sidecar
//! (outbound listener) in front of a server sidecar (inbound listener) in front of an app,
//! exporting to an in-test OTLP/gRPC collector. Checked: literal, environment and header
//! custom tags on the exported spans (per span kind), `match.mode` client-only and
//! server-only (the unreported side makes no span and passes the context through, so the
//! trace stays joined), and tag values cut to `maxTagLength` at a character boundary.

mod trace_support;

use ferry_proxy::config::tracing::{CustomTag, SpanMode, TagSource};
use ferry_proxy::config::{Tracing, TracingProvider};
use std::net::SocketAddr;
use trace_support::{Mesh, get, header};

/// The environment variable the environment tag reads; set by the test that needs it before
/// any proxy starts.
const ZONE_VAR: &str = "FERRY_TRACE_TAGS_TEST_ZONE";

fn settings(
    collector: SocketAddr,
    spans: SpanMode,
    custom_tags: Vec<CustomTag>,
    max_tag_length: u32,
) -> Tracing {
    Tracing {
        provider: TracingProvider::OtlpGrpc,
        endpoint: format!("http://{collector}"),
        sampling_percentage: 100.0,
        redis_spans: false,
        spans,
        custom_tags,
        max_tag_length,
    }
}

fn tag(name: &str, source: TagSource, spans: SpanMode) -> CustomTag {
    CustomTag {
        tag: name.into(),
        source,
        spans,
    }
}

#[test]
fn literal_environment_and_header_tags_are_exported() {
    // SAFETY: set before the runtime and any proxy start, so no other thread of this test
    // reads the environment meanwhile; no other test of this binary reads this variable.
    unsafe { std::env::set_var(ZONE_VAR, "zone-a") };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let both = SpanMode::ClientAndServer;
        let tags = vec![
            tag(
                "team",
                TagSource::Literal {
                    value: "shop".into(),
                },
                both,
            ),
            tag(
                "zone",
                TagSource::Environment {
                    name: ZONE_VAR.into(),
                    default_value: Some("unknown".into()),
                },
                both,
            ),
            tag(
                "region",
                TagSource::Environment {
                    name: "FERRY_TRACE_TAGS_TEST_UNSET".into(),
                    default_value: Some("eu-1".into()),
                },
                both,
            ),
            tag(
                "user",
                TagSource::Header {
                    name: "x-user".into(),
                    default_value: None,
                },
                both,
            ),
            tag(
                "plan",
                TagSource::Header {
                    name: "x-plan".into(),
                    default_value: Some("free".into()),
                },
                both,
            ),
            // Only on server spans.
            tag(
                "side",
                TagSource::Literal {
                    value: "inbound".into(),
                },
                SpanMode::Server,
            ),
        ];
        let mut mesh = Mesh::new(
            |c| settings(c, both, tags.clone(), 0),
            |c| settings(c, both, tags.clone(), 0),
        )
        .await;
        let status = get(
            mesh.client.listeners[0],
            "/tags",
            &[("x-request-id", "tags-1"), ("x-user", "ann")],
        )
        .await;
        assert_eq!(status, 200);
        let spans = mesh.spans_of("tags-1", 2).await;
        assert_eq!(spans.len(), 2, "{spans:#?}");
        for s in &spans {
            let t = |k: &str| s.attributes.get(k).map(String::as_str);
            assert_eq!(t("team"), Some("shop"), "{s:?}");
            assert_eq!(t("zone"), Some("zone-a"), "{s:?}");
            assert_eq!(t("region"), Some("eu-1"), "{s:?}");
            assert_eq!(t("user"), Some("ann"), "{s:?}");
            assert_eq!(t("plan"), Some("free"), "{s:?}");
            let want_side = (s.kind == "server").then_some("inbound");
            assert_eq!(t("side"), want_side, "{s:?}");
            // The standard tags are still there.
            assert_eq!(t("http.method"), Some("GET"), "{s:?}");
        }
        // A request without the header: no `user` tag (no default), `plan` defaulted.
        get(
            mesh.client.listeners[0],
            "/tags",
            &[("x-request-id", "tags-2"), ("x-plan", "gold")],
        )
        .await;
        let spans = mesh.spans_of("tags-2", 2).await;
        assert_eq!(spans.len(), 2, "{spans:#?}");
        for s in &spans {
            assert_eq!(s.attributes.get("user"), None, "{s:?}");
            assert_eq!(s.attributes.get("plan").map(String::as_str), Some("gold"));
        }
        mesh.stop();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_only_mode_exports_no_server_span_and_keeps_the_trace_joined() {
    let client_only = |c| settings(c, SpanMode::Client, Vec::new(), 0);
    let mut mesh = Mesh::new(client_only, client_only).await;
    get(
        mesh.client.listeners[0],
        "/c",
        &[("x-request-id", "client-only")],
    )
    .await;
    let app_saw = mesh.last_seen();
    let spans = mesh.spans_of("client-only", 1).await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let client = &spans[0];
    assert_eq!(client.kind, "client");
    // The server sidecar made no span and passed the client span's context on unchanged:
    // the app (and the requests it makes) continue the trace under the client span.
    assert_eq!(
        header(&app_saw, "traceparent"),
        format!("00-{}-{}-01", client.trace_id, client.span_id)
    );
    assert_eq!(header(&app_saw, "x-b3-spanid"), client.span_id);
    assert_eq!(header(&app_saw, "x-request-id"), "client-only");
    mesh.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_only_mode_passes_the_context_through_the_client_sidecar() {
    let server_only = |c| settings(c, SpanMode::Server, Vec::new(), 0);
    let mut mesh = Mesh::new(server_only, server_only).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let tp = format!("00-{trace}-{parent}-01");
    get(
        mesh.client.listeners[0],
        "/s",
        &[("x-request-id", "server-only"), ("traceparent", &tp)],
    )
    .await;
    let app_saw = mesh.last_seen();
    let spans = mesh.spans_of("server-only", 1).await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let server = &spans[0];
    assert_eq!(server.kind, "server");
    // The client sidecar passed the caller's context through: the server span is its child.
    assert_eq!(server.trace_id, trace);
    assert_eq!(server.parent_span_id.as_deref(), Some(parent));
    assert_eq!(
        header(&app_saw, "traceparent"),
        format!("00-{trace}-{}-01", server.span_id)
    );
    // Unsampled upstream: nothing reported, the decision carried on.
    let tp = format!("00-{trace}-{parent}-00");
    get(
        mesh.client.listeners[0],
        "/s",
        &[("x-request-id", "server-off"), ("traceparent", &tp)],
    )
    .await;
    let app_saw = mesh.last_seen();
    assert!(
        header(&app_saw, "traceparent").ends_with("-00"),
        "{app_saw:?}"
    );
    assert!(mesh.spans_of("server-off", 1).await.is_empty());
    mesh.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_tag_values_are_cut_at_max_tag_length() {
    let tags = vec![
        tag(
            "note",
            TagSource::Literal {
                value: "é".repeat(20),
            },
            SpanMode::ClientAndServer,
        ),
        tag(
            "user",
            TagSource::Header {
                name: "x-user".into(),
                default_value: None,
            },
            SpanMode::ClientAndServer,
        ),
    ];
    let mut mesh = Mesh::new(
        |c| settings(c, SpanMode::Client, tags.clone(), 9),
        |c| settings(c, SpanMode::Client, Vec::new(), 0),
    )
    .await;
    let long = "u".repeat(300);
    get(
        mesh.client.listeners[0],
        "/a/very/long/path",
        &[("x-request-id", "cut"), ("x-user", &long)],
    )
    .await;
    let spans = mesh.spans_of("cut", 1).await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let t = |k: &str| spans[0].attributes.get(k).cloned().unwrap_or_default();
    assert_eq!(t("user"), "u".repeat(9));
    // 9 bytes of 2-byte characters: 4 whole ones, never half of one.
    assert_eq!(t("note"), "éééé");
    assert_eq!(t("http.url"), "http://ba");
    // Numbers are not cut; a short value stays whole.
    assert_eq!(t("http.status_code"), "200");
    assert_eq!(t("http.method"), "GET");
    // The request id (a tag too) is shorter than the limit: the filter above matched it.
    mesh.stop();
}
