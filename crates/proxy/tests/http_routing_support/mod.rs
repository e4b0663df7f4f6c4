//! An HTTP/1.1 test upstream (keep-alive, one thread per connection) that answers with who
//! it is and what it received, and can be told by request headers to fail or to be slow;
//! and a one-shot HTTP/1.1 client.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What a test upstream saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Requests answered.
    pub requests: AtomicUsize,
    /// Host headers received.
    pub hosts: Mutex<Vec<String>>,
    /// Connections accepted.
    pub connections: AtomicUsize,
    /// Connections the client closed.
    pub closed: AtomicUsize,
}

/// One request as the upstream read it.
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut it = line.split_whitespace();
    let method = it.next()?.to_string();
    let path = it.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

/// Serves `name` on `addr`. Request headers steer it: `x-status: N` answers N, `x-fail:
/// <name>` answers 503 when addressed to this server, `x-delay-ms: N` waits first.
pub fn http_server(addr: SocketAddr, name: &str) -> Arc<Seen> {
    let listener = crate::routing_support::bind_endpoint(addr);
    let seen = Arc::new(Seen::default());
    let name = name.to_string();
    let s = seen.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let name = name.clone();
            let seen = s.clone();
            seen.connections.fetch_add(1, Ordering::Relaxed);
            thread::spawn(move || {
                let Ok(mut w) = stream.try_clone() else {
                    return;
                };
                let mut r = BufReader::new(stream);
                while let Some(req) = read_request(&mut r) {
                    seen.requests.fetch_add(1, Ordering::Relaxed);
                    let get = |k: &str| {
                        req.headers
                            .iter()
                            .find(|(h, _)| h == k)
                            .map(|(_, v)| v.clone())
                    };
                    if let Some(h) = get("host") {
                        seen.hosts.lock().expect("lock").push(h);
                    }
                    if let Some(ms) = get("x-delay-ms").and_then(|v| v.parse().ok()) {
                        thread::sleep(Duration::from_millis(ms));
                    }
                    let mut status: u16 =
                        get("x-status").and_then(|v| v.parse().ok()).unwrap_or(200);
                    if get("x-fail").is_some_and(|v| v.split(',').any(|p| p == name)) {
                        status = 503;
                    }
                    let mut body = format!(
                        "pod={name}\nmethod={}\npath={}\nbody={}\n",
                        req.method,
                        req.path,
                        String::from_utf8_lossy(&req.body)
                    );
                    for (k, v) in &req.headers {
                        body.push_str(&format!("h:{k}={v}\n"));
                    }
                    let close = get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nx-pod: {name}\r\nx-upstream: yes\r\n{}\r\n",
                        body.len(),
                        if close { "connection: close\r\n" } else { "" }
                    );
                    if w.write_all(head.as_bytes()).is_err()
                        || w.write_all(body.as_bytes()).is_err()
                    {
                        return;
                    }
                    if close {
                        return;
                    }
                }
                seen.closed.fetch_add(1, Ordering::Relaxed);
            });
        }
    });
    seen
}

/// A response as the test client read it.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status.
    pub status: u16,
    /// Headers, lowercase names (repeated ones joined with `, `).
    pub headers: BTreeMap<String, String>,
    /// Body.
    pub body: String,
}

impl Reply {
    /// The upstream pod that answered (`pod=` line), if any.
    pub fn pod(&self) -> Option<&str> {
        self.body.lines().find_map(|l| l.strip_prefix("pod="))
    }

    /// A request header as the upstream saw it.
    pub fn upstream_header(&self, name: &str) -> Option<&str> {
        let prefix = format!("h:{name}=");
        self.body
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
    }

    /// The path the upstream saw.
    pub fn path(&self) -> Option<&str> {
        self.body.lines().find_map(|l| l.strip_prefix("path="))
    }
}

/// Sends one request over a new connection and reads the whole response.
pub fn request(
    proxy: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut s = TcpStream::connect(proxy).expect("connect to the proxy");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str("host: web.default.svc.cluster.local\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("write");
    s.write_all(body.as_bytes()).expect("write body");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim().to_string();
            headers
                .entry(k)
                .and_modify(|e| {
                    e.push_str(", ");
                    e.push_str(&v)
                })
                .or_insert(v);
        }
    }
    // Chunked bodies are rare here (the proxy keeps content-length); take them as they are.
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// `GET path` with headers.
pub fn get(proxy: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    request(proxy, "GET", path, headers, "")
}
