//! Table tests for propagation, sampling, span building and the export encodings.

use super::context::*;
use super::export::{to_otlp, to_zipkin};
use super::span::*;
use hyper::http::{HeaderMap, HeaderName, HeaderValue};
use std::time::{Duration, SystemTime};

const TID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SID: &str = "00f067aa0ba902b7";
const PID: &str = "a2fb4a1d1a96d312";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn get<'a>(h: &'a HeaderMap, k: &str) -> Option<&'a str> {
    h.get(k).map(|v| v.to_str().unwrap())
}

#[test]
fn traceparent_table() {
    let ok = format!("00-{TID}-{SID}-01");
    let cases: Vec<(String, Option<bool>)> = vec![
        (ok.clone(), Some(true)),
        (format!("00-{TID}-{SID}-00"), Some(false)),
        (format!("00-{TID}-{SID}-03"), Some(true)),
        (format!("  00-{TID}-{SID}-01 "), Some(true)),
        // Malformed.
        (format!("00-{TID}-{SID}-01-extra"), None),
        (format!("00-{TID}-{SID}-1"), None),
        (format!("00-{}-{SID}-01", "0".repeat(32)), None),
        (format!("00-{TID}-{}-01", "0".repeat(16)), None),
        (format!("00-{}-{SID}-01", TID.to_uppercase()), None),
        (format!("00_{TID}-{SID}-01"), None),
        (format!("0g-{TID}-{SID}-01"), None),
        (format!("ff-{TID}-{SID}-01"), None),
        (format!("00-{TID}-{SID}-zz"), None),
        (String::new(), None),
        ("garbage".to_string(), None),
        // Future versions: first four fields parsed, more allowed after a dash.
        (format!("01-{TID}-{SID}-01"), Some(true)),
        (
            format!("cc-{TID}-{SID}-01-what-the-future-holds"),
            Some(true),
        ),
        (format!("cc-{TID}-{SID}-01x"), None),
    ];
    for (v, want) in cases {
        let got = parse_traceparent(v.as_bytes());
        assert_eq!(got.as_ref().map(|c| c.sampled), want, "{v:?}");
        if let Some(c) = got {
            assert_eq!(c.trace_id.to_hex(), TID);
            assert_eq!(c.span_id.to_hex(), SID);
        }
    }
}

#[test]
fn b3_single_table() {
    /// (header, has a parent context, sampled, debug, parent span)
    type Case = (String, bool, Option<bool>, bool, Option<&'static str>);
    let cases: Vec<Case> = vec![
        (
            format!("{TID}-{SID}-1-{PID}"),
            true,
            Some(true),
            false,
            Some(PID),
        ),
        (format!("{TID}-{SID}-0"), true, Some(false), false, None),
        (format!("{TID}-{SID}-d"), true, Some(true), true, None),
        (format!("{TID}-{SID}"), true, None, false, None),
        (
            format!("{}-{SID}-1", &TID[16..]),
            true,
            Some(true),
            false,
            None,
        ),
        ("0".to_string(), false, Some(false), false, None),
        ("1".to_string(), false, Some(true), false, None),
        ("d".to_string(), false, Some(true), true, None),
    ];
    for (v, has_parent, sampled, debug, parent) in cases {
        let e = parse_b3_single(v.as_bytes()).unwrap_or_else(|| panic!("{v}"));
        assert_eq!(e.parent.is_some(), has_parent, "{v}");
        assert_eq!(e.sampled, sampled, "{v}");
        assert_eq!(e.debug, debug, "{v}");
        if let Some(p) = &e.parent {
            assert_eq!(p.span_id.to_hex(), SID);
            assert_eq!(p.parent_span_id.map(|p| p.to_hex()).as_deref(), parent);
        }
    }
    for bad in [
        "x".to_string(),
        format!("{TID}-{SID}-2"),
        format!("{TID}-{SID}-1-{PID}-more"),
        format!("{TID}-{SID}-1-zz"),
        TID.to_string(),
        format!("{}-{SID}-1", "0".repeat(32)),
        format!("{TID}-{}-1", "0".repeat(16)),
        format!("{TID}x-{SID}-1"),
    ] {
        assert_eq!(parse_b3_single(bad.as_bytes()), None, "{bad}");
    }
}

#[test]
fn b3_multi_table() {
    let e = parse_b3_multi(&headers(&[
        ("x-b3-traceid", TID),
        ("x-b3-spanid", SID),
        ("x-b3-parentspanid", PID),
        ("x-b3-sampled", "1"),
    ]));
    let p = e.parent.unwrap();
    assert_eq!((p.trace_id.to_hex().as_str(), p.sampled), (TID, true));
    assert_eq!(p.parent_span_id.unwrap().to_hex(), PID);

    // 64-bit trace id is left-padded.
    let e = parse_b3_multi(&headers(&[
        ("x-b3-traceid", "a3ce929d0e0e4736"),
        ("x-b3-spanid", SID),
    ]));
    assert_eq!(
        e.parent.unwrap().trace_id.to_hex(),
        "0000000000000000a3ce929d0e0e4736"
    );
    assert_eq!(e.sampled, None, "deferred");

    // Debug flag implies sampled.
    let e = parse_b3_multi(&headers(&[
        ("x-b3-traceid", TID),
        ("x-b3-spanid", SID),
        ("x-b3-flags", "1"),
    ]));
    assert!(e.debug && e.parent.as_ref().unwrap().sampled);
    assert!(Sampler::new(0.0).decide(&e));

    // Legacy true/false.
    let e = parse_b3_multi(&headers(&[
        ("x-b3-traceid", TID),
        ("x-b3-spanid", SID),
        ("x-b3-sampled", "false"),
    ]));
    assert_eq!(e.sampled, Some(false));

    // Sampling only.
    let e = parse_b3_multi(&headers(&[("x-b3-sampled", "0")]));
    assert_eq!((e.parent.is_none(), e.sampled), (true, Some(false)));

    // Malformed ids: no context (but a decision survives); malformed parent dropped.
    for bad in [
        vec![
            ("x-b3-traceid", "xyz"),
            ("x-b3-spanid", SID),
            ("x-b3-sampled", "1"),
        ],
        vec![
            ("x-b3-traceid", TID),
            ("x-b3-spanid", "123"),
            ("x-b3-sampled", "1"),
        ],
        vec![("x-b3-traceid", TID), ("x-b3-sampled", "1")],
        vec![("x-b3-spanid", SID), ("x-b3-sampled", "1")],
    ] {
        let e = parse_b3_multi(&headers(&bad));
        assert!(e.parent.is_none(), "{bad:?}");
        assert_eq!(e.sampled, Some(true));
    }
    let e = parse_b3_multi(&headers(&[
        ("x-b3-traceid", TID),
        ("x-b3-spanid", SID),
        ("x-b3-parentspanid", "nothex!!nothex!!"),
    ]));
    assert_eq!(e.parent.unwrap().parent_span_id, None);
}

#[test]
fn extract_precedence() {
    let w3c_tid = "11111111111111111111111111111111";
    let b3s_tid = "22222222222222222222222222222222";
    let b3m_tid = "33333333333333333333333333333333";
    let all = [
        ("traceparent", format!("00-{w3c_tid}-{SID}-01")),
        ("b3", format!("{b3s_tid}-{SID}-1")),
        ("x-b3-traceid", b3m_tid.to_string()),
        ("x-b3-spanid", SID.to_string()),
    ];
    let h = |skip: usize| {
        let v: Vec<(&str, &str)> = all[skip..].iter().map(|(k, v)| (*k, v.as_str())).collect();
        headers(&v)
    };
    let tid = |h: &HeaderMap| extract(h).parent.map(|p| p.trace_id.to_hex());
    assert_eq!(tid(&h(0)).as_deref(), Some(w3c_tid));
    assert_eq!(tid(&h(1)).as_deref(), Some(b3s_tid));
    assert_eq!(tid(&h(2)).as_deref(), Some(b3m_tid));
    assert_eq!(tid(&h(4)), None);

    // A malformed higher-precedence header falls through to the next format.
    let hm = headers(&[
        ("traceparent", "00-bogus"),
        ("b3", "nonsense"),
        ("x-b3-traceid", b3m_tid),
        ("x-b3-spanid", SID),
        ("x-b3-sampled", "1"),
    ]);
    assert_eq!(tid(&hm).as_deref(), Some(b3m_tid));

    // `b3: 0` denies even with B3 multi ids present.
    let hm = headers(&[
        ("b3", "0"),
        ("x-b3-traceid", b3m_tid),
        ("x-b3-spanid", SID),
        ("x-b3-sampled", "1"),
    ]);
    let e = extract(&hm);
    assert!(e.parent.is_none());
    assert!(!Sampler::new(100.0).decide(&e));
}

#[test]
fn tracestate_passes_through_with_w3c() {
    let h = headers(&[
        ("traceparent", &format!("00-{TID}-{SID}-01")),
        ("tracestate", "congo=t61rcWkgMzE"),
        ("tracestate", "rojo=00f067aa0ba902b7"),
    ]);
    let e = extract(&h);
    let ctx = Sampler::new(0.0).child_of(&e);
    let mut out = HeaderMap::new();
    inject(&ctx, &mut out);
    assert_eq!(
        get(&out, "tracestate"),
        Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
    );
    // Without a valid traceparent, tracestate is ignored.
    let h = headers(&[("traceparent", "junk"), ("tracestate", "a=b")]);
    assert_eq!(extract(&h), Extracted::default());
}

/// W3C in -> both out, sampled and unsampled; B3 in -> both out; nothing in -> new root.
#[test]
fn propagation_combinations() {
    struct Case {
        incoming: Vec<(&'static str, String)>,
        rate: f64,
        want_sampled: bool,
        want_trace: Option<&'static str>,
        want_parent: Option<&'static str>,
    }
    let cases = vec![
        Case {
            incoming: vec![("traceparent", format!("00-{TID}-{SID}-01"))],
            rate: 0.0,
            want_sampled: true,
            want_trace: Some(TID),
            want_parent: Some(SID),
        },
        Case {
            incoming: vec![("traceparent", format!("00-{TID}-{SID}-00"))],
            rate: 100.0,
            want_sampled: false,
            want_trace: Some(TID),
            want_parent: Some(SID),
        },
        Case {
            incoming: vec![
                ("x-b3-traceid", TID.to_string()),
                ("x-b3-spanid", SID.to_string()),
                ("x-b3-sampled", "1".to_string()),
            ],
            rate: 0.0,
            want_sampled: true,
            want_trace: Some(TID),
            want_parent: Some(SID),
        },
        Case {
            incoming: vec![
                ("x-b3-traceid", TID.to_string()),
                ("x-b3-spanid", SID.to_string()),
                ("x-b3-sampled", "0".to_string()),
            ],
            rate: 100.0,
            want_sampled: false,
            want_trace: Some(TID),
            want_parent: Some(SID),
        },
        Case {
            incoming: vec![("b3", format!("{TID}-{SID}-1"))],
            rate: 0.0,
            want_sampled: true,
            want_trace: Some(TID),
            want_parent: Some(SID),
        },
        // Deferred B3: the local rate decides.
        Case {
            incoming: vec![("b3", format!("{TID}-{SID}"))],
            rate: 100.0,
            want_sampled: true,
            want_trace: Some(TID),
            want_parent: Some(SID),
        },
        Case {
            incoming: vec![],
            rate: 100.0,
            want_sampled: true,
            want_trace: None,
            want_parent: None,
        },
        Case {
            incoming: vec![],
            rate: 0.0,
            want_sampled: false,
            want_trace: None,
            want_parent: None,
        },
        Case {
            incoming: vec![("traceparent", "00-garbage".to_string())],
            rate: 0.0,
            want_sampled: false,
            want_trace: None,
            want_parent: None,
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        let pairs: Vec<(&str, &str)> = c.incoming.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut h = headers(&pairs);
        let e = extract(&h);
        let ctx = Sampler::new(c.rate).child_of(&e);
        assert_eq!(ctx.sampled, c.want_sampled, "case {i}");
        if let Some(t) = c.want_trace {
            assert_eq!(ctx.trace_id.to_hex(), t, "case {i}");
        }
        assert_eq!(
            ctx.parent_span_id.map(|p| p.to_hex()).as_deref(),
            c.want_parent,
            "case {i}"
        );
        assert_ne!(ctx.span_id.to_hex(), SID);
        inject(&ctx, &mut h);
        let flag = if c.want_sampled { "01" } else { "00" };
        let tid = ctx.trace_id.to_hex();
        let sid = ctx.span_id.to_hex();
        assert_eq!(
            get(&h, "traceparent"),
            Some(format!("00-{tid}-{sid}-{flag}").as_str()),
            "case {i}"
        );
        assert_eq!(get(&h, "x-b3-traceid"), Some(tid.as_str()));
        assert_eq!(get(&h, "x-b3-spanid"), Some(sid.as_str()));
        assert_eq!(
            get(&h, "x-b3-sampled"),
            Some(if c.want_sampled { "1" } else { "0" })
        );
        assert_eq!(get(&h, "x-b3-parentspanid"), c.want_parent);
        // The single header is rewritten only when it came in.
        assert_eq!(h.contains_key("b3"), pairs.iter().any(|(k, _)| *k == "b3"));
        if h.contains_key("b3") {
            assert!(get(&h, "b3").unwrap().starts_with(&format!("{tid}-{sid}-")));
        }
        // What we injected round-trips as the next hop's parent.
        let next = extract(&h).parent.unwrap();
        assert_eq!((next.trace_id, next.span_id), (ctx.trace_id, ctx.span_id));
        assert_eq!(next.sampled, c.want_sampled);
    }
}

/// Trace headers that came in but that the new context does not carry are removed, not left
/// stale beside the ones written; a sampled-flag is replaced by debug's flags.
#[test]
fn stale_trace_headers_are_removed() {
    /// Headers in, whether the new context is debug, and the headers that must be gone.
    type Case = (Vec<(&'static str, String)>, bool, &'static [&'static str]);
    let cases: Vec<Case> = vec![
        // A bad traceparent: a new root, so its tracestate and the B3 parent go.
        (
            vec![
                ("traceparent", "junk".into()),
                ("tracestate", "a=b".into()),
                ("x-b3-parentspanid", SID.into()),
                ("x-b3-flags", "0".into()),
            ],
            false,
            &["tracestate", "x-b3-parentspanid", "x-b3-flags"],
        ),
        // Debug in: x-b3-sampled goes, x-b3-flags is written.
        (
            vec![
                ("x-b3-traceid", TID.into()),
                ("x-b3-spanid", SID.into()),
                ("x-b3-flags", "1".into()),
                ("x-b3-sampled", "0".into()),
            ],
            true,
            &["x-b3-sampled"],
        ),
    ];
    for (i, (incoming, debug, gone)) in cases.into_iter().enumerate() {
        let pairs: Vec<(&str, &str)> = incoming.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut h = headers(&pairs);
        let ctx = Sampler::new(0.0).child_of(&extract(&h));
        assert_eq!(ctx.debug, debug, "case {i}");
        propagate(&ctx, &mut h);
        for name in gone {
            assert_eq!(get(&h, name), None, "case {i}: {name}");
        }
        assert_eq!(get(&h, "x-b3-flags"), debug.then_some("1"), "case {i}");
        assert_eq!(h.get_all("traceparent").iter().count(), 1, "case {i}");
        assert_eq!(get(&h, "x-request-id").map(str::len), Some(36), "case {i}");
    }
}

#[test]
fn debug_is_injected_as_flags() {
    let e = extract(&headers(&[("b3", &format!("{TID}-{SID}-d"))]));
    let ctx = Sampler::new(0.0).child_of(&e);
    let mut h = headers(&[("b3", "x")]);
    inject(&ctx, &mut h);
    assert_eq!(get(&h, "x-b3-flags"), Some("1"));
    assert_eq!(get(&h, "x-b3-sampled"), None);
    assert!(get(&h, "b3").unwrap().ends_with(&format!("-d-{SID}")));
    assert!(get(&h, "traceparent").unwrap().ends_with("-01"));
}

#[test]
fn request_id_is_generated_when_absent() {
    let mut h = HeaderMap::new();
    let id = ensure_request_id(&mut h);
    let s = id.to_str().unwrap();
    assert_eq!(s.len(), 36);
    assert_eq!(&s[14..15], "4");
    assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"));
    assert_eq!(s.matches('-').count(), 4);
    assert_eq!(get(&h, "x-request-id"), Some(s));
    // Kept when present.
    let mut h = headers(&[("x-request-id", "abc")]);
    assert_eq!(ensure_request_id(&mut h), "abc");
    // Two ids differ.
    assert_ne!(uuid_v4(), uuid_v4());
}

/// `propagate` writes what `inject` writes, plus a request id when there is none (or an empty
/// one), with every value cut from one buffer.
#[test]
fn propagate_adds_request_id_and_shares_one_buffer() {
    let b3 = format!("{TID}-{SID}-1-{PID}");
    let incoming = [
        (vec![], true),
        (vec![("x-request-id", "")], true),
        (vec![("x-request-id", "abc")], false),
        (vec![("b3", b3.as_str())], true),
    ];
    for (i, (pairs, fresh_id)) in incoming.iter().enumerate() {
        let mut h = headers(pairs);
        let ctx = Sampler::new(0.0).child_of(&extract(&h));
        let mut want = h.clone();
        inject(&ctx, &mut want);
        propagate(&ctx, &mut h);
        let id = get(&h, "x-request-id").unwrap_or_default().to_string();
        if *fresh_id {
            assert_eq!(id.len(), 36, "case {i}: {id}");
            assert_eq!(id.matches('-').count(), 4, "case {i}");
        } else {
            assert_eq!(id, "abc", "case {i}");
        }
        h.remove("x-request-id");
        want.remove("x-request-id");
        assert_eq!(h, want, "case {i}");
        // The traceparent and the B3 trace and span ids sit side by side in one allocation.
        let at = |name: &str| h.get(name).map(|v| v.as_bytes().as_ptr() as usize);
        let tp = at("traceparent").unwrap();
        assert_eq!(at("x-b3-traceid"), Some(tp + 55), "case {i}");
        assert_eq!(at("x-b3-spanid"), Some(tp + 55 + 32), "case {i}");
    }
}

#[test]
fn sampler_rates() {
    assert!(!(0..1000).any(|_| Sampler::new(0.0).sample()));
    assert!((0..1000).all(|_| Sampler::new(100.0).sample()));
    assert!((0..1000).all(|_| Sampler::new(250.0).sample()));
    assert!(!(0..1000).any(|_| Sampler::new(f64::NAN).sample()));
    let n = (0..100_000).filter(|_| Sampler::new(10.0).sample()).count();
    assert!((8_000..12_000).contains(&n), "{n}");
}

fn ctx() -> TraceContext {
    let e = extract(&headers(&[("traceparent", &format!("00-{TID}-{SID}-01"))]));
    Sampler::new(0.0).child_of(&e)
}

#[test]
fn http_span_has_istio_and_otel_attributes() {
    let me = ProxyIdentity {
        node_id: "sidecar~198.18.0.3~front-1.default~default.svc.cluster.local".into(),
        mesh_id: "cluster.local".into(),
        namespace: "default".into(),
        canonical_service: "front".into(),
        ..Default::default()
    };
    let start = SystemTime::now();
    let info = HttpSpan {
        host: "back.default.svc.cluster.local",
        port: 8080,
        path: "/api/items?x=1",
        url: "http://back.default.svc.cluster.local:8080/api/items?x=1",
        method: "GET",
        protocol: "HTTP/1.1",
        status: 503,
        response_flags: "UF",
        peer_address: "198.18.0.4:8080",
        upstream_cluster: "outbound|8080||back.default.svc.cluster.local",
        request_id: "rid",
        ..Default::default()
    };
    let s = info.to_span(
        &ctx(),
        SpanKind::Client,
        &me,
        start,
        start + Duration::from_millis(3),
    );
    assert_eq!(s.name, "back.default.svc.cluster.local:8080/api/items");
    assert_eq!(s.parent_span_id.unwrap().to_hex(), SID);
    assert!(s.error);
    for (k, v) in [
        ("istio.mesh_id", AttrValue::from("cluster.local")),
        ("istio.canonical_service", "front".into()),
        ("istio.namespace", "default".into()),
        ("http.status_code", 503i64.into()),
        ("http.response.status_code", 503i64.into()),
        ("http.method", "GET".into()),
        ("http.request.method", "GET".into()),
        ("response_flags", "UF".into()),
        ("guid:x-request-id", "rid".into()),
        (
            "upstream_cluster",
            "outbound|8080||back.default.svc.cluster.local".into(),
        ),
        ("url.path", "/api/items".into()),
        ("error", true.into()),
    ] {
        assert_eq!(s.get(k), Some(&v), "{k}");
    }
    assert_eq!(s.duration(), Duration::from_millis(3));
    assert_eq!(operation_name("h", 80, "/"), "h:80/");
}

#[test]
fn redis_span_never_carries_keys() {
    let start = SystemTime::now();
    let r = RedisSpan {
        command: "GET",
        arg_count: 1,
        source_workload: "client",
        source_pod: "client-abc",
        destination_workload: "redis",
        destination_pod: "redis-1",
        peer_address: "198.18.0.5:6379",
        error: Some("WRONGTYPE Operation against a key holding secret-key-name"),
    };
    let s = r.to_span(
        &ctx(),
        SpanKind::Client,
        &ProxyIdentity::default(),
        start,
        start + Duration::from_millis(250),
    );
    assert_eq!(s.name, "redis GET");
    assert_eq!(s.get("destination_pod"), Some(&"redis-1".into()));
    assert_eq!(s.get("ferry.redis.arg_count"), Some(&AttrValue::Int(1)));
    assert_eq!(s.get("ferry.latency_us"), Some(&AttrValue::Int(250_000)));
    assert_eq!(s.get("error.type"), Some(&"WRONGTYPE".into()));
    let all = format!("{:?}", s.attributes);
    assert!(!all.contains("secret-key-name"));
}

#[test]
fn otlp_and_zipkin_encodings_keep_ids() {
    let c = ctx();
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut s = Span::new(&c, "n".into(), SpanKind::Server, start);
    s.end = start + Duration::from_micros(1500);
    s.attr("http.status_code", 200i64);
    let req = to_otlp(Default::default(), std::slice::from_ref(&s));
    let o = &req.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(o.trace_id, c.trace_id.0.to_vec());
    assert_eq!(o.parent_span_id, c.parent_span_id.unwrap().0.to_vec());
    assert_eq!(o.kind, 2);
    assert_eq!(o.end_time_unix_nano - o.start_time_unix_nano, 1_500_000);
    let z = to_zipkin("front.default", &[s]);
    let json = serde_json::to_value(&z).unwrap();
    assert_eq!(json[0]["traceId"], TID);
    assert_eq!(json[0]["parentId"], SID);
    assert_eq!(json[0]["kind"], "SERVER");
    assert_eq!(json[0]["duration"], 1500);
    assert_eq!(json[0]["timestamp"], 1_700_000_000_000_000u64);
    assert_eq!(json[0]["tags"]["http.status_code"], "200");
    assert_eq!(json[0]["localEndpoint"]["serviceName"], "front.default");
}

#[test]
fn config_json_shape() {
    let c: super::TraceConfig =
        serde_json::from_str(r#"{"provider":"otlp-grpc","endpoint":"http://collector:4317"}"#)
            .unwrap();
    assert_eq!(c.provider, super::Provider::OtlpGrpc);
    assert_eq!(c.sampling_percentage, 1.0);
    assert_eq!(c.max_queue, super::export::DEFAULT_MAX_QUEUE);
    assert!(!c.redis_spans);
    let z: super::TraceConfig = serde_json::from_str(
        r#"{"provider":"zipkin","endpoint":"http://z:9411/api/v2/spans","sampling_percentage":100,"redis_spans":true,"max_queue":10}"#,
    )
    .unwrap();
    assert_eq!(
        (z.provider, z.max_queue, z.redis_spans),
        (super::Provider::Zipkin, 10, true)
    );
}
