//! Cost of Redis-aware telemetry per command on a redis-benchmark-like stream: SET/GET with
//! 3-byte values, pipelined 16 deep, fed one pipeline (one read) at a time. Throughput is in
//! commands, so criterion's time per element is the cost per command.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferry_proxy::redis::{Direction, RedisObserver, Scanner, Value, Visitor};

const PIPELINE: usize = 16;
const BATCHES: usize = 64;

fn cmd(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// `BATCHES` reads of `PIPELINE` commands each, and the matching replies, alternating SET/GET.
fn stream() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut requests = Vec::new();
    let mut replies = Vec::new();
    let mut n = 0u64;
    for _ in 0..BATCHES {
        let mut req = Vec::new();
        let mut rep = Vec::new();
        for _ in 0..PIPELINE {
            let key = format!("key:{:012}", n * 7919 % 100_000);
            if n.is_multiple_of(2) {
                req.extend(cmd(&["SET", &key, "xxx"]));
                rep.extend_from_slice(b"+OK\r\n");
            } else {
                req.extend(cmd(&["GET", &key]));
                rep.extend_from_slice(b"$3\r\nxxx\r\n");
            }
            n += 1;
        }
        requests.push(req);
        replies.push(rep);
    }
    (requests, replies)
}

struct Count(u64);

impl Visitor for Count {
    fn value(&mut self, _v: &Value<'_>) {
        self.0 += 1;
    }
}

fn bench(c: &mut Criterion) {
    let (requests, replies) = stream();
    let commands = (PIPELINE * BATCHES) as u64;
    let mut g = c.benchmark_group("redis");
    g.throughput(Throughput::Elements(commands));

    g.bench_function("scan_client", |b| {
        b.iter(|| {
            let mut s = Scanner::new(Direction::Client);
            let mut count = Count(0);
            for r in &requests {
                s.feed(black_box(r), &mut count);
            }
            black_box(count.0)
        })
    });
    g.bench_function("scan_server", |b| {
        b.iter(|| {
            let mut s = Scanner::new(Direction::Server);
            let mut count = Count(0);
            for r in &replies {
                s.feed(black_box(r), &mut count);
            }
            black_box(count.0)
        })
    });
    g.bench_function("observer_both_directions", |b| {
        b.iter(|| {
            let mut obs = RedisObserver::new();
            let mut total = 0u64;
            for (i, (req, rep)) in requests.iter().zip(&replies).enumerate() {
                let t = i as u64 * 1000;
                obs.client_bytes(black_box(req), t);
                obs.server_bytes(black_box(rep), t + 500, |d| total += d.latency);
            }
            black_box(total)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
