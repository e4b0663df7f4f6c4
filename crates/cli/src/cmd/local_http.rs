//! A minimal HTTP/1.0 client for Ferry's own local endpoints (proxy admin and readiness,
//! control-plane monitoring): one request, the whole answer read.

use anyhow::Context;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Sends `method path` to `addr`; returns the status code and the body.
pub fn request(addr: SocketAddr, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("cannot reach {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut response = String::new();
    stream
        .take(64 * 1024 * 1024)
        .read_to_string(&mut response)
        .with_context(|| format!("reading the answer of {addr}"))?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("{addr} did not answer HTTP"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Resolves `host:port` (a name or an address) to one socket address.
pub fn resolve(target: &str) -> anyhow::Result<SocketAddr> {
    let target = target.trim_start_matches("http://").trim_end_matches('/');
    target
        .to_socket_addrs()
        .with_context(|| format!("{target} is not host:port"))?
        .next()
        .with_context(|| format!("{target} resolves to no address"))
}
