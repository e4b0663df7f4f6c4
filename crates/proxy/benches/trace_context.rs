//! What tracing costs a request that is not sampled: reading the incoming context, deciding
//! (at 1%), and writing the new context and an `x-request-id` into the forwarded request's
//! headers. Three requests: one without trace headers (the first hop), one with W3C
//! `traceparent` and one with B3 multi-headers (as an app forwards them). Criterion's time per
//! element is the cost per request, the cost of copying the header map excluded.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ferry_proxy::trace::{Sampler, extract, propagate};
use hyper::http::{HeaderMap, HeaderName, HeaderValue};

/// Headers of a typical request: what curl or a load generator sends, plus `extra`.
fn request(extra: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "host",
        HeaderValue::from_static("back.default.svc.cluster.local"),
    );
    h.insert("user-agent", HeaderValue::from_static("curl/8.5.0"));
    h.insert("accept", HeaderValue::from_static("*/*"));
    for (name, value) in extra {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    h
}

fn bench(c: &mut Criterion) {
    let sampler = Sampler::new(1.0);
    let cases = [
        ("no context", request(&[])),
        (
            "w3c in",
            request(&[
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                ),
                ("x-request-id", "0f3e6c2c-8a52-4f7e-9d0c-3c2d6e0a9b11"),
            ]),
        ),
        (
            "b3 in",
            request(&[
                ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
                ("x-b3-spanid", "00f067aa0ba902b7"),
                ("x-b3-parentspanid", "a3ce929d0e0e4736"),
                ("x-b3-sampled", "0"),
                ("x-request-id", "0f3e6c2c-8a52-4f7e-9d0c-3c2d6e0a9b11"),
            ]),
        ),
    ];
    let mut group = c.benchmark_group("unsampled request");
    group.throughput(Throughput::Elements(1));
    for (name, headers) in &cases {
        group.bench_function(*name, |b| {
            b.iter_batched_ref(
                || headers.clone(),
                |h| {
                    let ctx = sampler.child_of(&extract(h));
                    propagate(&ctx, h);
                    black_box(&ctx);
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
