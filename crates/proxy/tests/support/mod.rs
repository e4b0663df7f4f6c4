//! Helpers shared by the proxy's integration tests: a tiny HTTP/1.0 client for the side
//! doors, metric samples from a scrape, and bounded waits.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// `127.0.0.1:0`: any free loopback port.
pub fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Sends one HTTP/1.0 request; returns the status code and the body.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: test\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// `GET path`.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(addr, "GET", path)
}

/// The sum of the samples of `metric` whose labels contain every `needle`, in a scrape of
/// `addr`'s `/stats/prometheus`.
pub fn metric_sum(addr: SocketAddr, metric: &str, needles: &[&str]) -> f64 {
    let (_, body) = http_get(addr, "/stats/prometheus");
    body.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits up to `secs` seconds for `cond`, failing the test with `what` otherwise.
pub fn wait_for_within(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits up to 5 seconds for `cond`.
pub fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    wait_for_within(5, what, cond)
}
