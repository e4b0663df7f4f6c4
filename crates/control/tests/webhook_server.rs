//! The webhook over real HTTPS on 127.0.0.1: AdmissionReviews shaped like an API server's,
//! the JSON patch applied both with the json-patch crate and with `kubectl patch --local`,
//! bad input, probes and metrics, certificate rotation and graceful shutdown.

mod common;

use base64::Engine;
use common::{Proto, Reply, Running, connect, fixture, scrape, start, write_atomic};
use hyper::StatusCode;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Checks the envelope of an injected answer and returns the decoded patch.
fn injected_patch(request: &Value, reply: &Reply) -> json_patch::Patch {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.content_type.as_deref(), Some("application/json"));
    let answer = reply.json();
    assert_eq!(answer["apiVersion"], request["apiVersion"]);
    assert_eq!(answer["kind"], "AdmissionReview");
    let response = &answer["response"];
    assert_eq!(
        response["uid"], request["request"]["uid"],
        "uid must be echoed"
    );
    assert_eq!(response["allowed"], true, "{answer}");
    assert_eq!(response["patchType"], "JSONPatch", "{answer}");
    let encoded = response["patch"]
        .as_str()
        .expect("patch is a base64 string");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("patch is standard base64");
    serde_json::from_slice(&raw).expect("patch is an RFC 6902 array")
}

/// Applies the patch to the request's pod with the json-patch crate.
fn apply(request: &Value, patch: &json_patch::Patch) -> Value {
    let mut pod = request["request"]["object"].clone();
    json_patch::patch(&mut pod, patch).expect("patch applies to the request's pod");
    pod
}

/// Applies the patch with `kubectl patch --local`; `None` when kubectl is not installed.
fn apply_with_kubectl(request: &Value, patch: &json_patch::Patch) -> Option<Value> {
    let dir = tempfile::tempdir().unwrap();
    let mut pod = request["request"]["object"].clone();
    // kubectl needs to know the kind of a local object.
    pod["apiVersion"] = "v1".into();
    pod["kind"] = "Pod".into();
    let pod_path = dir.path().join("pod.json");
    std::fs::write(&pod_path, serde_json::to_vec(&pod).unwrap()).unwrap();
    let out = match Command::new("kubectl")
        // kubectl hides managedFields when printing unless asked to show them.
        .args([
            "patch",
            "--local",
            "--type=json",
            "--show-managed-fields",
            "-o",
            "json",
            "-f",
        ])
        .arg(&pod_path)
        .arg("-p")
        .arg(serde_json::to_string(patch).unwrap())
        // --local never contacts a cluster; an empty kubeconfig keeps it from looking for one.
        .env("KUBECONFIG", "/dev/null")
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("NOTICE: kubectl is not on PATH; skipping the kubectl comparison");
            return None;
        }
        Err(e) => panic!("running kubectl: {e}"),
    };
    assert!(
        out.status.success(),
        "kubectl patch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("kubectl printed JSON"))
}

/// Patches the request's pod both ways, checks they agree and returns the patched pod.
fn patched_pod(request: &Value, reply: &Reply) -> Value {
    let patch = injected_patch(request, reply);
    let ours = apply(request, &patch);
    if let Some(theirs) = apply_with_kubectl(request, &patch) {
        // kubectl patches the unstructured object: it applies no defaults and (with
        // --show-managed-fields) drops nothing, so the two results must be equal field for field.
        assert_eq!(
            theirs,
            ours,
            "kubectl and json-patch disagree\nkubectl: {}\njson-patch: {}",
            serde_json::to_string_pretty(&theirs).unwrap(),
            serde_json::to_string_pretty(&ours).unwrap()
        );
    }
    ours
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default()
}

/// The pod carries exactly one ferry-proxy (native or classic) and ferry-init.
fn assert_sidecar(pod: &Value, native: bool) {
    let init = names(&pod["spec"]["initContainers"]);
    let containers = names(&pod["spec"]["containers"]);
    assert!(init.contains(&"ferry-init"), "no ferry-init in {init:?}");
    let proxies = init
        .iter()
        .chain(&containers)
        .filter(|n| **n == "ferry-proxy")
        .count();
    assert_eq!(proxies, 1, "init {init:?}, containers {containers:?}");
    if native {
        let proxy = pod["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "ferry-proxy")
            .expect("native sidecar is an init container");
        assert_eq!(proxy["restartPolicy"], "Always");
        let init_pos = init.iter().position(|n| *n == "ferry-init").unwrap();
        let proxy_pos = init.iter().position(|n| *n == "ferry-proxy").unwrap();
        assert!(
            init_pos < proxy_pos,
            "ferry-init must run before ferry-proxy: {init:?}"
        );
    } else {
        assert!(containers.contains(&"ferry-proxy"), "{containers:?}");
    }
    assert!(
        pod["metadata"]["annotations"]["ferry.dev/status"].is_string(),
        "no ferry.dev/status annotation"
    );
    for name in ["istio-proxy", "istio-init"] {
        assert!(
            !init.contains(&name) && !containers.contains(&name),
            "{name} left behind"
        );
    }
}

async fn server() -> (common::Pki, Running) {
    let pki = common::Pki::new();
    let issued = pki.issue("ferry-control.ferry-system.svc", 1);
    let running = start(&issued, |s| {
        s.metrics_listen = Some("127.0.0.1:0".parse().unwrap())
    })
    .await;
    (pki, running)
}

#[tokio::test]
async fn statefulset_pod_is_injected_over_http2_and_the_patch_applies_like_kubectl() {
    let (pki, running) = server().await;
    let mut conn = connect(running.addr, &pki.ca_der, Proto::Http2).await;
    assert_eq!(conn.alpn.as_deref(), Some(&b"h2"[..]));
    let body = fixture("statefulset-redis-0.json");
    let request: Value = serde_json::from_str(&body).unwrap();
    let reply = conn.review("/inject", body).await;
    let pod = patched_pod(&request, &reply);
    assert_sidecar(&pod, true);
    // The application, its volumes and the StatefulSet identity are untouched.
    assert_eq!(pod["spec"]["containers"][0]["image"], "redis:alpine");
    assert_eq!(pod["metadata"]["name"], "redis-0");
    assert_eq!(pod["spec"]["hostname"], "redis-0");
    assert_eq!(pod["spec"]["subdomain"], "redis");
    let volumes = names(&pod["spec"]["volumes"]);
    assert!(volumes.contains(&"data") && volumes.contains(&"kube-api-access-9xk2p"));

    let metrics = scrape(running.metrics_addr.unwrap()).await;
    assert!(
        metrics.contains("ferry_webhook_requests_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferry_webhook_injections_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferry_webhook_request_duration_seconds_count 1"),
        "{metrics}"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn deployment_pod_is_injected_over_http1_as_a_classic_sidecar() {
    let pki = common::Pki::new();
    let issued = pki.issue("ferry-control.ferry-system.svc", 2);
    let running = start(&issued, |s| s.inject.native_sidecars = false).await;
    let mut conn = connect(running.addr, &pki.ca_der, Proto::Http1).await;
    assert_eq!(conn.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let body = fixture("deployment-client.json");
    let request: Value = serde_json::from_str(&body).unwrap();
    let reply = conn.review("/inject", body.clone()).await;
    let pod = patched_pod(&request, &reply);
    assert_sidecar(&pod, false);
    assert!(
        pod["metadata"].get("name").is_none(),
        "the name is not known yet"
    );
    assert_eq!(pod["metadata"]["generateName"], "client-7d9f8b6c5d-");
    // Keep-alive: the same connection answers again, identically.
    let again = conn.review("/inject", body).await;
    assert_eq!(again.json(), reply.json());
    running.shutdown().await;
}

#[tokio::test]
async fn dry_run_is_answered_like_any_other_request() {
    let (pki, running) = server().await;
    let mut conn = connect(running.addr, &pki.ca_der, Proto::Http2).await;
    let body = fixture("dry-run.json");
    let request: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(request["request"]["dryRun"], true);
    // sideEffects: None promises the API server that dry runs change nothing, so the
    // answer is the same as for a real create.
    let pod = patched_pod(&request, &conn.review("/inject", body).await);
    assert_sidecar(&pod, true);
    running.shutdown().await;
}

#[tokio::test]
async fn an_istio_sidecar_is_replaced_and_ferry_output_is_left_alone() {
    let (pki, running) = server().await;
    let mut conn = connect(running.addr, &pki.ca_der, Proto::Http2).await;
    let body = fixture("already-injected-istio.json");
    let request: Value = serde_json::from_str(&body).unwrap();
    let pod = patched_pod(&request, &conn.review("/inject", body).await);
    assert_sidecar(&pod, true);
    let volumes = names(&pod["spec"]["volumes"]);
    assert!(
        !volumes.iter().any(|v| v.starts_with("istio")),
        "{volumes:?}"
    );

    // Feed Ferry's own output back: the result is the same pod.
    let mut again = request.clone();
    again["request"]["object"] = pod.clone();
    let reply = conn
        .review("/inject", serde_json::to_vec(&again).unwrap())
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let answer = reply.json();
    assert_eq!(answer["response"]["allowed"], true);
    let twice = match answer["response"]["patch"].as_str() {
        Some(_) => patched_pod(&again, &reply),
        None => pod.clone(),
    };
    assert_eq!(
        twice, pod,
        "injecting Ferry's output again must change nothing"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn v1beta1_reviews_are_answered_in_v1beta1() {
    let (pki, running) = server().await;
    let mut conn = connect(running.addr, &pki.ca_der, Proto::Http1).await;
    let body = fixture("v1beta1-redis-0.json");
    let request: Value = serde_json::from_str(&body).unwrap();
    let reply = conn.review("/inject", body).await;
    assert_eq!(reply.json()["apiVersion"], "admission.k8s.io/v1beta1");
    assert_sidecar(&patched_pod(&request, &reply), true);
    running.shutdown().await;
}

#[tokio::test]
async fn an_invalid_traffic_annotation_is_denied_naming_the_annotation() {
    let (pki, running) = server().await;
    let mut conn = connect(running.addr, &pki.ca_der, Proto::Http2).await;
    let body = fixture("invalid-annotation.json");
    let request: Value = serde_json::from_str(&body).unwrap();
    let reply = conn.review("/inject", body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let answer = reply.json();
    let response = &answer["response"];
    assert_eq!(response["uid"], request["request"]["uid"]);
    assert_eq!(response["allowed"], false, "{answer}");
    assert!(response.get("patch").is_none_or(Value::is_null), "{answer}");
    // The Go field `Result` is serialized as `status` (a metav1.Status).
    let message = response["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("traffic.sidecar.istio.io/excludeOutboundPorts"),
        "message must name the annotation: {answer}"
    );
    let metrics = scrape(running.metrics_addr.unwrap()).await;
    assert!(
        metrics.contains("ferry_webhook_denials_total 1"),
        "{metrics}"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn host_network_pods_are_allowed_without_a_patch() {
    let (pki, running) = server().await;
    let mut conn = connect(running.addr, &pki.ca_der, Proto::Http2).await;
    let reply = conn.review("/inject", fixture("host-network.json")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let answer = reply.json();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert!(
        answer["response"].get("patch").is_none_or(Value::is_null),
        "{answer}"
    );
    let metrics = scrape(running.metrics_addr.unwrap()).await;
    assert!(
        metrics.contains("ferry_webhook_skips_total{reason=\"host_network\"} 1"),
        "{metrics}"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn cluster_and_network_path_parameters_reach_the_proxy() {
    let (pki, running) = server().await;
    let mut conn = connect(running.addr, &pki.ca_der, Proto::Http2).await;
    let body = fixture("statefulset-redis-0.json");
    let request: Value = serde_json::from_str(&body).unwrap();
    let reply = conn
        .review("/inject/cluster/cluster-east/net/network-east", body)
        .await;
    let pod = patched_pod(&request, &reply);
    assert_sidecar(&pod, true);
    let text = pod.to_string();
    assert!(
        text.contains("cluster-east"),
        "cluster id missing from the proxy"
    );
    assert!(
        text.contains("network-east"),
        "network missing from the proxy"
    );
    running.shutdown().await;
}

/// One malformed request and the status it must get.
struct BadCase {
    what: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    expected: StatusCode,
}

impl BadCase {
    fn new(
        what: &'static str,
        path: &'static str,
        content_type: Option<&'static str>,
        body: Vec<u8>,
        expected: StatusCode,
    ) -> Self {
        Self {
            what,
            path,
            content_type,
            body,
            expected,
        }
    }
}

#[tokio::test]
async fn bad_requests_get_a_4xx_with_a_message_and_the_connection_survives() {
    let (pki, running) = server().await;
    let mut conn = connect(running.addr, &pki.ca_der, Proto::Http2).await;
    let review = fixture("statefulset-redis-0.json");
    let json = Some("application/json");
    let cases = [
        BadCase::new(
            "garbage",
            "/inject",
            json,
            b"\x00\xffnot json".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        BadCase::new(
            "empty",
            "/inject",
            json,
            Vec::new(),
            StatusCode::BAD_REQUEST,
        ),
        BadCase::new(
            "not a review",
            "/inject",
            json,
            br#"{"kind":"Pod"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        BadCase::new(
            "no request",
            "/inject",
            json,
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        BadCase::new(
            "truncated",
            "/inject",
            json,
            review.as_bytes()[..review.len() / 2].to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        BadCase::new(
            "yaml",
            "/inject",
            Some("application/yaml"),
            review.clone().into_bytes(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        BadCase::new(
            "no content type",
            "/inject",
            None,
            review.clone().into_bytes(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        BadCase::new(
            "oversized",
            "/inject",
            json,
            vec![b' '; ferry_inject::admission::MAX_BODY_BYTES + 1],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        BadCase::new(
            "unknown path",
            "/mutate",
            json,
            review.clone().into_bytes(),
            StatusCode::NOT_FOUND,
        ),
    ];
    for case in cases {
        let reply = conn
            .send("POST", case.path, case.content_type, case.body)
            .await;
        assert_eq!(
            reply.status,
            case.expected,
            "{}: {}",
            case.what,
            reply.text()
        );
        assert!(
            !reply.text().trim().is_empty(),
            "{}: empty message",
            case.what
        );
    }
    let get = conn.send("GET", "/inject", None, Vec::new()).await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    // After all that, a good review still works on the same connection.
    let request: Value = serde_json::from_str(&review).unwrap();
    let reply = conn.review("/inject", review).await;
    injected_patch(&request, &reply);
    let metrics = scrape(running.metrics_addr.unwrap()).await;
    assert!(
        metrics.contains("ferry_webhook_errors_total{kind=\"bad_request\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferry_webhook_errors_total{kind=\"unsupported_media_type\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferry_webhook_errors_total{kind=\"body_too_large\"} 1"),
        "{metrics}"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn random_bodies_over_https_get_400() {
    let (pki, running) = server().await;
    let mut conn = connect(running.addr, &pki.ca_der, Proto::Http1).await;
    // A fixed xorshift so failures reproduce.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..64 {
        let len = (round * 37) % 3000;
        let body: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let reply = conn.review("/inject", body).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "round {round}: {}",
            reply.text()
        );
    }
    running.shutdown().await;
}

#[tokio::test]
async fn probes_and_metrics_on_both_ports() {
    let (pki, running) = server().await;
    let mut conn = connect(running.addr, &pki.ca_der, Proto::Http1).await;
    let health = conn.send("GET", "/healthz", None, Vec::new()).await;
    assert_eq!(
        (health.status, health.text().trim()),
        (StatusCode::OK, "ok")
    );
    let ready = conn.send("GET", "/ready", None, Vec::new()).await;
    assert_eq!(ready.status, StatusCode::OK);
    let metrics = conn.send("GET", "/metrics", None, Vec::new()).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.text().contains("ferry_webhook_requests_total"));
    assert!(
        scrape(running.metrics_addr.unwrap())
            .await
            .contains("# EOF")
    );
    running.shutdown().await;
}

/// Polls new handshakes until the server presents `want`, or fails after 5 s.
async fn wait_for_cert(
    addr: std::net::SocketAddr,
    ca: &rustls::pki_types::CertificateDer<'static>,
    want: &rustls::pki_types::CertificateDer<'static>,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let conn = connect(addr, ca, Proto::Http2).await;
        if &conn.peer_cert == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn rotated_certificates_are_served_without_a_restart() {
    let pki = common::Pki::new();
    let first = pki.issue("webhook-one", 100);
    let running = start(&first, |_| {}).await;
    let mut old = connect(running.addr, &pki.ca_der, Proto::Http2).await;
    assert_eq!(old.peer_cert, first.der);

    let second = pki.issue("webhook-two", 200);
    assert_ne!(second.der, first.der);
    write_atomic(&running.key_path, &second.key_pem);
    write_atomic(&running.cert_path, &second.cert_pem);
    wait_for_cert(running.addr, &pki.ca_der, &second.der).await;
    // The connection made before the rotation keeps working.
    let health = old.send("GET", "/healthz", None, Vec::new()).await;
    assert_eq!(health.status, StatusCode::OK);

    // A broken pair is refused and the second certificate stays in service.
    write_atomic(
        &running.key_path,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !running
        .handler
        .metrics()
        .encode()
        .contains("ferry_webhook_errors_total{kind=\"certificate_reload\"} 1")
    {
        assert!(
            Instant::now() < deadline,
            "the broken pair was never noticed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let conn = connect(running.addr, &pki.ca_der, Proto::Http1).await;
    assert_eq!(conn.peer_cert, second.der);

    // A certificate whose key does not match is refused too.
    let third = pki.issue("webhook-three", 300);
    write_atomic(&running.key_path, &first.key_pem);
    write_atomic(&running.cert_path, &third.cert_pem);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let conn = connect(running.addr, &pki.ca_der, Proto::Http1).await;
    assert_eq!(conn.peer_cert, second.der);
    // Completing the pair brings it into service.
    write_atomic(&running.key_path, &third.key_pem);
    wait_for_cert(running.addr, &pki.ca_der, &third.der).await;
    running.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_connections_and_closes_the_listener() {
    let (pki, running) = server().await;
    let addr = running.addr;
    let mut conn = connect(addr, &pki.ca_der, Proto::Http2).await;
    assert_eq!(
        conn.send("GET", "/ready", None, Vec::new()).await.status,
        StatusCode::OK
    );
    let handler = running.handler.clone();
    let started = Instant::now();
    running.shutdown().await;
    // Open idle connections are told to go away instead of holding shutdown for the grace period.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    let ready = handler
        .handle(
            hyper::Request::get("/ready")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        conn.try_send("GET", "/healthz", None, Vec::new())
            .await
            .is_err()
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener still open"
    );
}

#[test]
fn fixtures_look_like_api_server_requests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let review: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let req = &review["request"];
        assert_eq!(review["kind"], "AdmissionReview", "{}", path.display());
        assert_eq!(req["operation"], "CREATE");
        assert_eq!(req["kind"]["kind"], "Pod");
        assert!(req["uid"].as_str().is_some_and(|u| u.len() == 36));
        let pod = &req["object"];
        assert_eq!(pod["metadata"]["namespace"], req["namespace"]);
        assert!(
            names(&pod["spec"]["volumes"])
                .iter()
                .any(|v| v.starts_with("kube-api-access-"))
        );
        assert_eq!(pod["spec"]["tolerations"].as_array().map(Vec::len), Some(2));
        count += 1;
    }
    assert!(count >= 7);
    let sts: Value = serde_json::from_str(&fixture("statefulset-redis-0.json")).unwrap();
    let pod = &sts["request"]["object"];
    assert_eq!(sts["request"]["name"], "redis-0");
    assert_eq!(pod["metadata"]["generateName"], "redis-");
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
    assert_eq!(pod["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(
        pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
        "redis-0"
    );
    assert_eq!(
        pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"],
        "0"
    );
    let deploy: Value = serde_json::from_str(&fixture("deployment-client.json")).unwrap();
    assert!(deploy["request"].get("name").is_none());
    assert!(
        deploy["request"]["object"]["metadata"]
            .get("name")
            .is_none()
    );
    assert_eq!(
        deploy["request"]["object"]["metadata"]["labels"]["pod-template-hash"],
        "7d9f8b6c5d"
    );
}
