//! Property tests: whatever bytes arrive as an AdmissionReview, the handler answers 400
//! with a message and never panics (the handler turns engine panics into 500, which these
//! tests treat as failures too).

use bytes::Bytes;
use ferry_control::webhook::{Webhook, WebhookMetrics};
use ferry_inject::InjectConfig;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use proptest::prelude::*;
use std::sync::Arc;

fn post(path: &str, body: Vec<u8>) -> (StatusCode, String) {
    let hook = Webhook::new(InjectConfig::default(), Arc::new(WebhookMetrics::new()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let req = Request::post(path)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = hook.handle(req).await;
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    })
}

fn redis_review() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/admission/statefulset-redis-0.json"
    );
    std::fs::read_to_string(path).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_get_400(body in prop::collection::vec(any::<u8>(), 0..4096)) {
        let (status, message) = post("/inject", body);
        prop_assert_eq!(status, StatusCode::BAD_REQUEST, "{}", message);
        prop_assert!(!message.trim().is_empty());
    }

    #[test]
    fn json_shaped_noise_gets_400(body in r#"[\{\}\[\]",:0-9a-zA-Z ]{0,400}"#) {
        let (status, message) = post("/inject", body.into_bytes());
        prop_assert_eq!(status, StatusCode::BAD_REQUEST, "{}", message);
    }

    #[test]
    fn truncated_reviews_get_400(cut in 0usize..5000) {
        let review = redis_review();
        let cut = cut % review.trim_end().len();
        let (status, message) = post("/inject", review.as_bytes()[..cut].to_vec());
        prop_assert_eq!(status, StatusCode::BAD_REQUEST, "{}", message);
    }

    #[test]
    fn reviews_with_a_field_of_the_wrong_type_never_panic(
        field in prop::sample::select(vec![
            "/request", "/request/uid", "/request/object", "/request/object/metadata",
            "/request/object/spec", "/request/object/spec/containers",
            "/request/object/spec/containers/0", "/request/object/metadata/annotations",
            "/request/object/metadata/labels", "/request/namespace", "/apiVersion",
        ]),
        value in prop_oneof![
            Just(serde_json::Value::Null),
            Just(serde_json::json!(7)),
            Just(serde_json::json!("x")),
            Just(serde_json::json!([1, 2])),
            Just(serde_json::json!({"a": {"b": []}})),
        ],
    ) {
        let mut review: serde_json::Value = serde_json::from_str(&redis_review()).unwrap();
        if let Some(slot) = review.pointer_mut(field) {
            *slot = value;
        }
        let (status, message) = post("/inject", serde_json::to_vec(&review).unwrap());
        // A wrong shape is a bad request or a refused pod; never a crash.
        prop_assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::OK,
            "{} {}", status, message
        );
    }
}
