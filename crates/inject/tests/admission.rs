//! The AdmissionReview path: the patch the webhook answers with, applied to the pod the API
//! server sent, gives exactly the pod `ferry inject -f` writes for the same template.

use base64::Engine;
use ferry_inject::InjectConfig;
use ferry_inject::admission::{BadRequest, PathParams, ReviewResult, review};
use ferry_inject::manifest;
use proptest::prelude::*;
use serde_json::{Value, json};

fn seed_statefulset() -> Value {
    let text = include_str!("golden/statefulset.yaml");
    ferry_model::parse_documents("statefulset.yaml", text).expect("valid")[1]
        .value
        .clone()
}

/// The pod the StatefulSet controller creates from the seed template, as the API server
/// hands it to the webhook.
fn redis_0() -> Value {
    let template = seed_statefulset()["spec"]["template"].clone();
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": template["metadata"].clone(),
        "spec": template["spec"].clone(),
    });
    let meta = pod["metadata"].as_object_mut().expect("metadata");
    meta.insert("name".into(), json!("redis-0"));
    meta.insert("generateName".into(), json!("redis-"));
    meta.insert("namespace".into(), json!("default"));
    meta.insert(
        "ownerReferences".into(),
        json!([{ "apiVersion": "apps/v1", "kind": "StatefulSet", "name": "redis", "uid": "u-1", "controller": true, "blockOwnerDeletion": true }]),
    );
    pod["spec"]["hostname"] = json!("redis-0");
    pod["spec"]["subdomain"] = json!("redis");
    pod
}

fn request(api_version: &str, pod: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "name": pod["metadata"]["name"].clone(),
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": { "username": "system:serviceaccount:kube-system:statefulset-controller" },
            "object": pod,
            "oldObject": null,
            "dryRun": false
        }
    }))
    .expect("serializable")
}

fn answer(body: &[u8]) -> (ReviewResult, Value) {
    let a = review(body, &InjectConfig::default(), &PathParams::default()).expect("answered");
    (
        a.result,
        serde_json::from_slice(&a.body).expect("JSON response"),
    )
}

fn decoded_patch(response: &Value) -> json_patch::Patch {
    let b64 = response["response"]["patch"]
        .as_str()
        .expect("patch is a base64 string");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    serde_json::from_slice(&raw).expect("RFC 6902 patch")
}

#[test]
fn statefulset_pod_patch_equals_kube_inject_output() {
    let pod = redis_0();
    let (result, response) = answer(&request("admission.k8s.io/v1", &pod));
    assert_eq!(result, ReviewResult::Injected);
    assert_eq!(response["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(response["kind"], "AdmissionReview");
    assert_eq!(
        response["response"]["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );
    assert_eq!(response["response"]["allowed"], true);
    assert_eq!(response["response"]["patchType"], "JSONPatch");
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &decoded_patch(&response)).expect("patch applies");

    let (kube_injected, _) =
        manifest::inject_document(&seed_statefulset(), &InjectConfig::default()).expect("injects");
    let template = &kube_injected["spec"]["template"];
    assert_eq!(
        patched["spec"]["containers"],
        template["spec"]["containers"]
    );
    assert_eq!(
        patched["spec"]["initContainers"],
        template["spec"]["initContainers"]
    );
    assert_eq!(patched["spec"]["volumes"], template["spec"]["volumes"]);
    assert_eq!(
        patched["metadata"]["labels"],
        template["metadata"]["labels"]
    );
    assert_eq!(
        patched["metadata"]["annotations"],
        template["metadata"]["annotations"]
    );
    assert_eq!(
        patched["metadata"]["ownerReferences"],
        pod["metadata"]["ownerReferences"]
    );
}

#[test]
fn deployment_pod_with_only_generate_name() {
    let pod = json!({
        "metadata": {
            "generateName": "client-7d9f8b6c5d-",
            "namespace": "default",
            "labels": { "app": "client", "pod-template-hash": "7d9f8b6c5d" },
            "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "client-7d9f8b6c5d", "uid": "u", "controller": true }]
        },
        "spec": { "containers": [{ "name": "client", "image": "redis:alpine" }] }
    });
    let a = review(
        &request("admission.k8s.io/v1", &pod),
        &InjectConfig::default(),
        &PathParams::default(),
    )
    .expect("answered");
    assert_eq!(a.pod, "client-7d9f8b6c5d-***** (actual name not yet known)");
    let response: Value = serde_json::from_slice(&a.body).expect("json");
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &decoded_patch(&response)).expect("applies");
    let env = patched["spec"]["initContainers"][1]["env"]
        .as_array()
        .expect("env")
        .clone();
    let get = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(get("ISTIO_META_WORKLOAD_NAME"), Some(json!("client")));
    assert_eq!(
        get("ISTIO_META_OWNER"),
        Some(json!(
            "kubernetes://apis/apps/v1/namespaces/default/deployments/client"
        ))
    );
}

#[test]
fn v1beta1_is_answered_in_v1beta1() {
    let (_, response) = answer(&request("admission.k8s.io/v1beta1", &redis_0()));
    assert_eq!(response["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(response["response"]["allowed"], true);
}

#[test]
fn opted_out_pod_is_allowed_without_patch() {
    let mut pod = redis_0();
    pod["metadata"]["annotations"] = json!({ "sidecar.istio.io/inject": "false" });
    let (result, response) = answer(&request("admission.k8s.io/v1", &pod));
    assert!(matches!(result, ReviewResult::Skipped(_)));
    assert_eq!(response["response"]["allowed"], true);
    assert!(response["response"].get("patch").is_none());
}

#[test]
fn invalid_annotation_is_refused_naming_it() {
    let mut pod = redis_0();
    pod["metadata"]["annotations"] =
        json!({ "traffic.sidecar.istio.io/excludeOutboundPorts": "abc" });
    let (result, response) = answer(&request("admission.k8s.io/v1", &pod));
    assert!(matches!(result, ReviewResult::Denied(_)));
    assert_eq!(response["response"]["allowed"], false);
    let message = response["response"]["status"]["message"]
        .as_str()
        .expect("message");
    assert!(
        message.contains("traffic.sidecar.istio.io/excludeOutboundPorts"),
        "{message}"
    );
    assert!(message.contains("redis-0"), "{message}");
}

#[test]
fn reinjecting_an_injected_pod_yields_an_empty_patch() {
    let pod = redis_0();
    let (_, response) = answer(&request("admission.k8s.io/v1", &pod));
    let mut injected = pod.clone();
    json_patch::patch(&mut injected, &decoded_patch(&response)).expect("applies");
    let (_, again) = answer(&request("admission.k8s.io/v1", &injected));
    assert_eq!(decoded_patch(&again).0.len(), 0);
}

#[test]
fn not_a_pod_creation_is_allowed_untouched() {
    let mut body: Value =
        serde_json::from_slice(&request("admission.k8s.io/v1", &redis_0())).expect("json");
    body["request"]["operation"] = json!("UPDATE");
    let (result, response) = answer(&serde_json::to_vec(&body).expect("json"));
    assert!(matches!(result, ReviewResult::Skipped(_)));
    assert!(response["response"].get("patch").is_none());
}

#[test]
fn malformed_bodies_are_bad_requests() {
    let cfg = InjectConfig::default();
    let params = PathParams::default();
    let cases: [&[u8]; 7] = [
        b"",
        b"not json",
        br#"{"apiVersion":"v1","kind":"Pod"}"#,
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"object":{}}}"#,
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","object":3}}"#,
        br#"[1,2,3]"#,
    ];
    for body in cases {
        let err: BadRequest = review(body, &cfg, &params).expect_err("bad request");
        assert!(!err.0.is_empty());
    }
    let huge = vec![b' '; ferry_inject::admission::MAX_BODY_BYTES + 1];
    assert!(review(&huge, &cfg, &params).is_err());
}

#[test]
fn path_parameters() {
    assert_eq!(
        PathParams::from_path("/inject"),
        Some(PathParams::default())
    );
    assert_eq!(
        PathParams::from_path("/inject/"),
        Some(PathParams::default())
    );
    assert_eq!(
        PathParams::from_path("/inject/cluster/east/net/net1"),
        Some(PathParams {
            cluster_id: Some("east".into()),
            network: Some("net1".into())
        })
    );
    assert_eq!(PathParams::from_path("/injector"), None);
    assert_eq!(PathParams::from_path("/healthz"), None);
    assert_eq!(PathParams::from_path("/inject/bogus/x"), None);
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z/.:\\-]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("metadata".to_string()),
                    Just("spec".to_string()),
                    Just("containers".to_string()),
                    Just("initContainers".to_string()),
                    Just("annotations".to_string()),
                    Just("labels".to_string()),
                    Just("name".to_string()),
                    Just("volumes".to_string()),
                    Just("readinessProbe".to_string()),
                    Just("httpGet".to_string()),
                    Just("port".to_string()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_pods_never_panic(pod in arb_json()) {
        let _ = review(&request("admission.k8s.io/v1", &pod), &InjectConfig::default(), &PathParams::default());
        let doc = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "x" }, "spec": { "template": pod } });
        let _ = manifest::inject_document(&doc, &InjectConfig::default());
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = review(&body, &InjectConfig::default(), &PathParams::default());
    }

    #[test]
    fn injection_is_idempotent_when_it_succeeds(pod in arb_json()) {
        let doc = json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p" }, "spec": pod });
        if let Ok((once, _)) = manifest::inject_document(&doc, &InjectConfig::default()) {
            let (twice, _) = manifest::inject_document(&once, &InjectConfig::default()).expect("re-injection succeeds");
            prop_assert_eq!(once, twice);
        }
    }
}
