//! `ferry trace-collector` receives spans a proxy's tracer exports over OTLP/gRPC (loopback),
//! prints a line per span, and the trace tree when it is stopped.

use ferry_proxy::trace::{
    Provider, Sampler, Span, SpanKind, TraceConfig, TraceMetrics, TraceResource, Tracer, extract,
    inject,
};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_exported_by_a_proxy_are_printed() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["trace-collector", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let mut child = Kill(child);

    let (tracer, _task) = Tracer::start(
        &TraceConfig {
            provider: Provider::OtlpGrpc,
            endpoint: format!("http://127.0.0.1:{port}"),
            sampling_percentage: 100.0,
            redis_spans: false,
            max_queue: 64,
        },
        TraceResource {
            service_name: "front.default".into(),
            attributes: vec![],
        },
        TraceMetrics::default(),
    );
    // Lines are read on a thread so that a silent collector fails the test instead of hanging.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the collector never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sampler = Sampler::new(100.0);
    let mut wire = hyper::http::HeaderMap::new();
    let client_ctx = sampler.child_of(&extract(&wire));
    inject(&client_ctx, &mut wire);
    let server_ctx = sampler.child_of(&extract(&wire));
    let now = SystemTime::now();
    let mut client = Span::new(&client_ctx, "back:8080/api".into(), SpanKind::Client, now);
    client.end = now + Duration::from_millis(3);
    tracer.record(client);
    tracer.record(Span::new(
        &server_ctx,
        "back:8080/api".into(),
        SpanKind::Server,
        now,
    ));
    let mut got = Vec::new();
    while got.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => got.push(line),
            Err(_) => panic!("spans never printed: {got:?}"),
        }
    }
    let client_span = client_ctx.span_id.to_hex();
    assert!(
        got.iter().any(|l| l.contains("kind=client")
            && l.contains("back:8080/api")
            && l.contains("duration=3000us")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|l| l.contains("kind=server") && l.contains(&format!("parent={client_span}"))),
        "{got:?}"
    );

    // SIGTERM: the collector prints the tree and exits.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let mut rest = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        rest.push(line);
    }
    let rest = rest.join("\n");
    assert!(
        rest.contains(&format!("trace {}", client_ctx.trace_id.to_hex())),
        "{rest}"
    );
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
