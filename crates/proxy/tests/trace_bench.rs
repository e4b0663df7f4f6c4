//! The tracing benchmark (`bench/tracing/run.sh` runs it; ignored by `cargo test`): HTTP/1.1
//! keep-alive requests through a whole proxy (forward mode, one traffic thread) to an
//! in-process app, with tracing off, at 1% and at 100% sampling (OTLP/gRPC to an in-process
//! collector). One proxy per mode is started once; each round then loads the modes one after
//! the other for a short window, in rotating order, so that the windows compared are close in
//! time (on a shared host a mode's throughput moves by a third from one second to the next).
//! Reports throughput and the proxy's CPU per request (its own `ferry-*` threads, from /proc)
//! against tracing off, over all rounds and as per-round ratios.
//!
//! Knobs (environment): `TRACE_BENCH_MS` (per window, default 1000), `TRACE_BENCH_ROUNDS`
//! (default 20), `TRACE_BENCH_CONNS` (default 32), `TRACE_BENCH_MODES` (comma-separated subset
//! of `off,1%,100%`, default all: e.g. `1%` alone to profile it).

use bytes::Bytes;
use ferry_proxy::config::{Tracing, TracingProvider};
use ferry_proxy::listener::Direction;
use ferry_proxy::listener::orig_dst::FixedDst;
use ferry_proxy::server::{self, Options};
use ferry_proxy::trace::serve_otlp_receiver;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The allocator the `ferry` binary ships with (crates/cli/src/main.rs): the proxy is measured
/// as users run it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn app() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"hello from the app\n",
                    ))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The ids of this process's threads named `ferry-*` (the proxies' threads).
fn proxy_threads() -> BTreeSet<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return BTreeSet::new();
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("ferry-"))
        })
        .filter_map(|t| t.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect()
}

/// CPU time (user + system, in clock ticks) of the threads `tids` of this process.
fn ticks_of(tids: &BTreeSet<i32>) -> u64 {
    let mut total = 0;
    for tid in tids {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // After the comm: state is field 3; utime 14 and stime 15 (1-based, whole line).
        let tick = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok());
        total += tick(14).unwrap_or(0) + tick(15).unwrap_or(0);
    }
    total
}

/// Sends requests on `conns` keep-alive connections for `window`; the number answered.
async fn load(target: SocketAddr, conns: u64, window: Duration) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let done = done.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(stream) = tokio::net::TcpStream::connect(target).await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            let Ok((mut sender, conn)) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
            else {
                return;
            };
            tokio::spawn(conn);
            while !stop.load(Ordering::Relaxed) {
                let Ok(req) = Request::get("/bench")
                    .header("host", "app.default:8080")
                    .body(Full::new(Bytes::new()))
                else {
                    return;
                };
                let Ok(resp) = sender.send_request(req).await else {
                    return;
                };
                let ok = resp.status().is_success();
                let _ = resp.into_body().collect().await;
                if ok {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed)
}

/// One window of one mode.
#[derive(Default, Clone)]
struct Sample {
    requests: u64,
    seconds: f64,
    ticks: u64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
#[ignore = "benchmark: bench/tracing/run.sh"]
async fn tracing_cost() {
    let window = Duration::from_millis(env(
        "TRACE_BENCH_MS",
        env("TRACE_BENCH_SECS", 1).saturating_mul(1000),
    ));
    let rounds = env("TRACE_BENCH_ROUNDS", 20);
    let conns = env("TRACE_BENCH_CONNS", 32);
    // SAFETY: sysconf has no preconditions.
    let hz = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as f64,
        _ => 100.0,
    };
    let app = app().await;
    let collector = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let collector_addr = collector.local_addr().expect("addr");
    let (mut spans, _task) = serve_otlp_receiver(collector, 4096);
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        while spans.recv().await.is_some() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let all: [(&str, Option<f64>); 3] = [("off", None), ("1%", Some(1.0)), ("100%", Some(100.0))];
    let wanted = std::env::var("TRACE_BENCH_MODES").unwrap_or_default();
    let modes: Vec<(&str, Option<f64>)> = all
        .into_iter()
        .filter(|(name, _)| wanted.is_empty() || wanted.split(',').any(|w| w.trim() == *name))
        .collect();
    assert!(
        !modes.is_empty(),
        "TRACE_BENCH_MODES names none of off, 1%, 100%"
    );
    // One proxy per mode, kept for the whole run; each knows its own threads.
    let mut proxies = Vec::new();
    for (_, sampling) in &modes {
        let tracing = sampling.map(|p| Tracing {
            provider: TracingProvider::OtlpGrpc,
            endpoint: format!("http://{collector_addr}"),
            sampling_percentage: p,
            redis_spans: false,
            spans: Default::default(),
            custom_tags: Vec::new(),
            max_tag_length: 0,
        });
        let before = proxy_threads();
        let proxy = server::start(
            Options {
                listeners: vec![("127.0.0.1:0".parse().expect("addr"), Direction::Outbound)],
                tracing,
                ..Default::default()
            },
            Arc::new(FixedDst(app)),
        )
        .expect("proxy starts");
        let target = proxy.listeners[0];
        // Warm up (and let the tracer come on).
        load(target, conns, Duration::from_secs(1)).await;
        let threads: BTreeSet<i32> = proxy_threads().difference(&before).copied().collect();
        proxies.push((proxy, target, threads));
    }
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); modes.len()];
    for round in 0..rounds {
        for k in 0..modes.len() {
            let i = (k + round as usize) % modes.len();
            let (_, target, threads) = &proxies[i];
            let before = ticks_of(threads);
            let started = Instant::now();
            let requests = load(*target, conns, window).await;
            let s = Sample {
                requests,
                seconds: started.elapsed().as_secs_f64(),
                ticks: ticks_of(threads).saturating_sub(before),
            };
            println!(
                "round {round} {:>5}: {:>9.0} req/s, proxy CPU {:>6.2} us/request",
                modes[i].0,
                s.requests as f64 / s.seconds,
                s.ticks as f64 * 1e6 / hz / (s.requests.max(1) as f64)
            );
            samples[i].push(s);
        }
    }
    for (proxy, _, _) in proxies {
        proxy.stop();
    }
    // Over all rounds: requests over time, CPU over requests. The first mode (tracing off
    // unless TRACE_BENCH_MODES left it out) is the baseline.
    let base = modes[0].0;
    let total = |v: &[Sample]| {
        let requests: u64 = v.iter().map(|s| s.requests).sum();
        let seconds: f64 = v.iter().map(|s| s.seconds).sum();
        let ticks: u64 = v.iter().map(|s| s.ticks).sum();
        (
            requests as f64 / seconds.max(1e-9),
            ticks as f64 * 1e6 / hz / (requests.max(1) as f64),
        )
    };
    let (base_rps, base_cpu) = total(&samples[0]);
    println!();
    println!(
        "| tracing | throughput (all rounds, req/s) | vs {base} | proxy CPU µs/request (all rounds) | vs {base} |"
    );
    println!("|---|---|---|---|---|");
    for (i, (name, _)) in modes.iter().enumerate() {
        let (rps, cpu) = total(&samples[i]);
        println!(
            "| {name} | {rps:.0} | {:.3} | {cpu:.2} | {:.3} |",
            rps / base_rps.max(1.0),
            cpu / base_cpu.max(1e-9)
        );
    }
    // Ratios within each round (the modes' windows back to back): their median, and their
    // geometric mean with its standard error.
    println!();
    println!(
        "| tracing | throughput vs {base}, per round: median | geometric mean ± s.e. | rounds |"
    );
    println!("|---|---|---|---|");
    for (i, (name, _)) in modes.iter().enumerate().skip(1) {
        let ratios: Vec<f64> = samples[i]
            .iter()
            .zip(&samples[0])
            .map(|(s, b)| {
                let rps = |x: &Sample| x.requests as f64 / x.seconds.max(1e-9);
                rps(s) / rps(b).max(1e-9)
            })
            .collect();
        let logs: Vec<f64> = ratios.iter().map(|x| x.max(1e-9).ln()).collect();
        let n = logs.len().max(1) as f64;
        let mean = logs.iter().sum::<f64>() / n;
        let var = logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        let geo = mean.exp();
        println!(
            "| {name} | {:.3} | {geo:.3} ± {:.3} | {} |",
            median(ratios.clone()),
            geo * (var / n).sqrt(),
            ratios.len()
        );
    }
    println!();
    println!(
        "spans received by the collector: {}",
        received.load(Ordering::Relaxed)
    );
    assert!(base_rps > 0.0, "requests went through");
}
