//! Redis-aware telemetry against a real `redis-server` (Debian's package; CI installs it):
//! `redis-cli`-style traffic and `redis-benchmark` through the proxy, command counts asserted
//! exactly, and a drain that waits for the reply of a command already sent.

mod support;

use ferry_proxy::lifecycle::Phase;
use ferry_proxy::listener::Direction;
use ferry_proxy::listener::orig_dst::FixedDst;
use ferry_proxy::server::{self, Options, Running};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use support::{http_get, metric_sum, wait_for_within};

struct RedisServer {
    child: Child,
    addr: SocketAddr,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn redis_server() -> Option<RedisServer> {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is not installed"
        );
        eprintln!("skipping: redis-server is not installed (apt-get install redis-server)");
        return None;
    }
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let server = RedisServer {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(server.addr).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        thread::sleep(Duration::from_millis(20));
    }
    Some(server)
}

fn proxy_to(upstream: SocketAddr) -> Running {
    server::start(
        Options {
            listeners: vec![("127.0.0.1:0".parse().expect("addr"), Direction::Outbound)],
            metrics: Some("127.0.0.1:0".parse().expect("addr")),
            ..Default::default()
        },
        Arc::new(FixedDst(upstream)),
    )
    .expect("proxy starts")
}

fn commands(proxy: &Running, command: &str, outcome: &str) -> f64 {
    let needle = format!("command=\"{command}\",outcome=\"{outcome}\"");
    metric_sum(
        proxy.metrics.expect("metrics"),
        "ferry_redis_commands_total",
        &[&needle],
    )
}

fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// Reads until `expected` replies' worth of CRLF-terminated bytes arrived (good enough for
/// the simple replies used here).
fn read_replies(s: &mut TcpStream, needle: &str) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&out).contains(needle) {
        let n = s.read(&mut buf).expect("reply");
        assert!(
            n > 0,
            "connection closed early: {}",
            String::from_utf8_lossy(&out)
        );
        out.extend(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn pipelined_commands_are_counted_exactly() {
    let Some(redis) = redis_server() else { return };
    let proxy = proxy_to(redis.addr);
    let mut c = TcpStream::connect(proxy.listeners[0]).expect("connect");
    let mut batch = Vec::new();
    for i in 0..500 {
        batch.extend(resp(&["SET", &format!("k{i}"), "v"]));
        batch.extend(resp(&["GET", &format!("k{i}")]));
    }
    batch.extend(resp(&["LPUSH", "k1", "x"])); // WRONGTYPE error
    batch.extend(resp(&["NOSUCHCMD"]));
    batch.extend(resp(&["MULTI"]));
    batch.extend(resp(&["INCR", "counter"]));
    batch.extend(resp(&["INCR", "counter"]));
    batch.extend(resp(&["EXEC"]));
    batch.extend(resp(&["ECHO", "done"]));
    c.write_all(&batch).expect("write");
    let replies = read_replies(&mut c, "$4\r\ndone\r\n");
    assert!(replies.contains("WRONGTYPE"));
    wait_for_within(10, "all commands recorded", || {
        commands(&proxy, "echo", "ok") == 1.0
    });
    assert_eq!(commands(&proxy, "set", "ok"), 500.0);
    assert_eq!(commands(&proxy, "get", "ok"), 500.0);
    assert_eq!(commands(&proxy, "lpush", "error"), 1.0);
    assert_eq!(commands(&proxy, "unknown", "error"), 1.0);
    assert_eq!(commands(&proxy, "incr", "ok"), 2.0);
    assert_eq!(commands(&proxy, "exec", "ok"), 1.0);
    drop(c);
    proxy.stop();
}

#[test]
fn redis_benchmark_through_the_proxy() {
    let Some(redis) = redis_server() else { return };
    if Command::new("redis-benchmark")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-benchmark is not installed"
        );
        return;
    }
    let proxy = proxy_to(redis.addr);
    let port = proxy.listeners[0].port().to_string();
    for pipeline in ["1", "16"] {
        let out = Command::new("redis-benchmark")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-c",
                "4",
                "-n",
                "1000",
                "-P",
                pipeline,
                "-t",
                "set,get",
                "-q",
            ])
            .output()
            .expect("redis-benchmark runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // redis-benchmark overshoots -n when pipelining; the server's own counts are the truth.
    let calls = |cmd: &str| -> f64 {
        let mut direct = TcpStream::connect(redis.addr).expect("direct");
        direct
            .write_all(&resp(&["INFO", "commandstats"]))
            .expect("write");
        let info = read_replies(&mut direct, "cmdstat_get");
        let line = info
            .lines()
            .find(|l| l.starts_with(&format!("cmdstat_{cmd}:")))
            .unwrap_or_default()
            .to_string();
        line.split(['=', ','])
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    let (sets, gets) = (calls("set"), calls("get"));
    assert!(sets >= 2000.0 && gets >= 2000.0, "set={sets} get={gets}");
    wait_for_within(10, "benchmark commands recorded", || {
        commands(&proxy, "get", "ok") == gets
    });
    assert_eq!(commands(&proxy, "set", "ok"), sets);
    let (_, text) = http_get(proxy.metrics.expect("metrics"), "/stats/prometheus");
    assert!(
        text.contains("ferry_redis_command_duration_milliseconds_bucket"),
        "latency histogram"
    );
    assert!(
        !text.contains("ferry_redis_opaque_fallbacks_total{"),
        "no fallback on clean traffic"
    );
    proxy.stop();
}

#[test]
fn drain_waits_for_the_reply_of_a_command_in_flight() {
    let Some(redis) = redis_server() else { return };
    let proxy = proxy_to(redis.addr);
    let mut c = TcpStream::connect(proxy.listeners[0]).expect("connect");
    c.write_all(&resp(&["PING"])).expect("write");
    read_replies(&mut c, "+PONG\r\n");
    // A command the server answers only after a second.
    c.write_all(&resp(&["BLPOP", "nothing-here", "1"]))
        .expect("write");
    thread::sleep(Duration::from_millis(100));
    proxy.lifecycle.advance(Phase::Draining);
    // The reply (a null array after the timeout) still arrives, then the proxy closes.
    let reply = read_replies(&mut c, "*-1\r\n");
    assert!(reply.ends_with("*-1\r\n"), "{reply:?}");
    let mut rest = Vec::new();
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let n = c
        .read_to_end(&mut rest)
        .expect("clean close after the reply");
    assert_eq!(n, 0);
    let started = Instant::now();
    proxy.drain(Duration::from_secs(10));
    assert!(started.elapsed() < Duration::from_secs(5));
}
