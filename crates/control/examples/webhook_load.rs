//! A load generator for `ferry webhook`: POSTs one AdmissionReview over HTTPS keep-alive
//! connections (HTTP/1.1 or HTTP/2), either open-loop at a fixed rate or closed-loop as
//! fast as the server answers, and reports throughput and latency percentiles.
//!
//! Open loop: a timer thread schedules request `i` at `start + i / rate`; latency is
//! measured from that scheduled time, so a stalled server is charged for the requests
//! that queued behind the stall (no coordinated omission). Service time (from the moment
//! a connection picked the request up) is reported too.
//!
//! `--engine-only` skips the network and times `ferry_inject::admission::review` on the
//! body in a loop, to tell the engine's cost from the server's.
//!
//! ```text
//! cargo run --release -p ferry-control --example webhook_load -- \
//!     --addr 127.0.0.1:15017 --ca ca.crt --body review.json --rate 1000 --duration 20
//! ```

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc};
use tokio_rustls::TlsConnector;

/// HTTP version to speak.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    /// HTTP/1.1 with keep-alive, one request in flight per connection.
    H1,
    /// HTTP/2, `--streams` requests in flight per connection.
    H2,
}

/// Load generator for the Ferry admission webhook.
#[derive(Parser, Debug)]
struct Args {
    /// Webhook address.
    #[arg(long, default_value = "127.0.0.1:15017")]
    addr: SocketAddr,
    /// TLS server name to verify.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// PEM CA certificate to trust.
    #[arg(long)]
    ca: PathBuf,
    /// Request path.
    #[arg(long, default_value = "/inject")]
    path: String,
    /// AdmissionReview JSON file to POST.
    #[arg(long)]
    body: PathBuf,
    /// Requests per second (open loop); 0 = closed loop, as fast as answers come.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Seconds of unmeasured load before it.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Connections to open.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests in flight per HTTP/2 connection.
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// HTTP version.
    #[arg(long, value_enum, default_value = "h2")]
    proto: Proto,
    /// Time the injection engine alone on the body (no server, no TLS) and exit.
    #[arg(long)]
    engine_only: bool,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    async fn post(&mut self, req: Request<Full<Bytes>>) -> anyhow::Result<(u16, Bytes)> {
        let resp = match self {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    fn clone_h2(&self) -> Option<Sender> {
        match self {
            Sender::H2(s) => Some(Sender::H2(s.clone())),
            Sender::H1(_) => None,
        }
    }
}

async fn connect(args: &Args, tls: &TlsConnector) -> anyhow::Result<Sender> {
    let tcp = TcpStream::connect(args.addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(args.server_name.clone())?;
    let io = TokioIo::new(tls.connect(name, tcp).await?);
    Ok(match args.proto {
        Proto::H1 => {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            Sender::H1(sender)
        }
        Proto::H2 => {
            let (sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Sender::H2(sender)
        }
    })
}

/// What one worker measured (microseconds).
#[derive(Default)]
struct Samples {
    latency: Vec<u64>,
    service: Vec<u64>,
    non_200: u64,
    errors: u64,
    injected: u64,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn summary(name: &str, mut v: Vec<u64>) {
    v.sort_unstable();
    println!(
        "{name:<10} p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
        percentile(&v, 50.0),
        percentile(&v, 90.0),
        percentile(&v, 99.0),
        percentile(&v, 99.9),
        v.last().map_or(f64::NAN, |m| *m as f64 / 1000.0),
    );
}

/// Times `admission::review` on the body, single-threaded.
fn engine_only(args: &Args) -> anyhow::Result<()> {
    let body = std::fs::read(&args.body)?;
    let cfg = ferry_inject::InjectConfig::default();
    let params = ferry_inject::admission::PathParams::default();
    let warm_until = Instant::now() + Duration::from_secs(args.warmup.min(2));
    while Instant::now() < warm_until {
        std::hint::black_box(ferry_inject::admission::review(&body, &cfg, &params).ok());
    }
    let mut samples = Vec::new();
    let end = Instant::now() + Duration::from_secs(args.duration.min(5));
    while Instant::now() < end {
        let t = Instant::now();
        std::hint::black_box(ferry_inject::admission::review(&body, &cfg, &params).ok());
        samples.push(t.elapsed().as_nanos() as u64 / 1000);
    }
    println!(
        "engine     {} reviews, admission::review alone",
        samples.len()
    );
    summary("engine", samples);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.engine_only {
        return engine_only(&args);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let body = Bytes::from(std::fs::read(&args.body)?);
    let ca_pem = std::fs::read(&args.ca)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca_pem) {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = match args.proto {
        Proto::H1 => vec![b"http/1.1".to_vec()],
        Proto::H2 => vec![b"h2".to_vec()],
    };
    let tls = TlsConnector::from(Arc::new(config));

    // One sender per worker: a connection each for HTTP/1.1, `streams` clones per
    // connection for HTTP/2.
    let mut senders = Vec::new();
    for _ in 0..args.connections.max(1) {
        let sender = connect(&args, &tls).await?;
        if args.proto == Proto::H2 {
            for _ in 1..args.streams.max(1) {
                if let Some(clone) = sender.clone_h2() {
                    senders.push(clone);
                }
            }
        }
        senders.push(sender);
    }

    let start = Instant::now() + Duration::from_millis(100);
    let measure_from = start + Duration::from_secs(args.warmup);
    let end = measure_from + Duration::from_secs(args.duration);
    let path = args.path.clone();
    let open_loop = args.rate > 0;

    // Open loop: a timer thread hands out scheduled instants.
    let (tx, rx) = mpsc::unbounded_channel::<Instant>();
    let queue = Arc::new(Mutex::new(rx));
    if open_loop {
        let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
        std::thread::spawn(move || {
            let mut i: u32 = 0;
            loop {
                let due = start + interval * i;
                if due >= end {
                    break;
                }
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if tx.send(due).is_err() {
                    break;
                }
                i += 1;
            }
        });
    } else {
        drop(tx);
    }

    let mut tasks = Vec::new();
    for mut sender in senders {
        let queue = queue.clone();
        let body = body.clone();
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = Samples::default();
            loop {
                let scheduled = if open_loop {
                    let next = queue.lock().await.recv().await;
                    match next {
                        Some(t) => t,
                        None => break,
                    }
                } else {
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    now.max(start)
                };
                if !open_loop && scheduled > Instant::now() {
                    tokio::time::sleep_until(scheduled.into()).await;
                }
                let picked = Instant::now();
                let req = Request::post(path.as_str())
                    .header("host", "localhost")
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()));
                let Ok(req) = req else { break };
                let outcome = sender.post(req).await;
                let done = Instant::now();
                let measured = scheduled >= measure_from && scheduled < end;
                match outcome {
                    Ok((status, resp)) if measured => {
                        if status != 200 {
                            s.non_200 += 1;
                        }
                        if resp.windows(7).any(|w| w == b"\"patch\"") {
                            s.injected += 1;
                        }
                        s.latency.push((done - scheduled).as_micros() as u64);
                        s.service.push((done - picked).as_micros() as u64);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        s.errors += 1;
                        eprintln!("request failed: {e}");
                        break;
                    }
                }
            }
            s
        }));
    }

    let mut all = Samples::default();
    for task in tasks {
        let s = task.await?;
        all.latency.extend(s.latency);
        all.service.extend(s.service);
        all.non_200 += s.non_200;
        all.errors += s.errors;
        all.injected += s.injected;
    }
    let count = all.latency.len();
    let secs = args.duration as f64;
    println!(
        "mode       {} ({:?}, {} connections{})",
        if open_loop {
            format!("open loop at {} req/s", args.rate)
        } else {
            "closed loop".to_string()
        },
        args.proto,
        args.connections,
        if args.proto == Proto::H2 {
            format!(", {} streams each", args.streams)
        } else {
            String::new()
        }
    );
    println!(
        "requests   {count} in {secs:.0} s = {:.0} req/s  (non-200: {}, failed: {}, with patch: {})",
        count as f64 / secs,
        all.non_200,
        all.errors,
        all.injected
    );
    if open_loop {
        summary("latency", all.latency);
    }
    summary("service", all.service);
    Ok(())
}
