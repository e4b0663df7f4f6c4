//! The whole proxy in-process over loopback (no privileges): a fixed original destination
//! stands in for iptables. Byte integrity, half-close, reset propagation, exact TCP
//! metrics, inbound delivery from 127.0.0.6, configuration reloads, and drain.

mod support;

use ferry_proxy::listener::Direction;
use ferry_proxy::listener::orig_dst::FixedDst;
use ferry_proxy::server::{self, Options, Running};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use support::{any_port, http_get, metric_sum, wait_for};

fn start(
    direction: Direction,
    upstream: SocketAddr,
    config: Option<std::path::PathBuf>,
) -> Running {
    server::start(
        Options {
            listeners: vec![(any_port(), direction)],
            metrics: Some(any_port()),
            health: Some(any_port()),
            config_file: config,
            ..Default::default()
        },
        Arc::new(FixedDst(upstream)),
    )
    .expect("proxy starts")
}

/// The sum of the samples of `metric` whose labels contain every `needle`.
fn metric(running: &Running, metric: &str, needles: &[&str]) -> Option<f64> {
    Some(metric_sum(
        running.metrics.expect("metrics bound"),
        metric,
        needles,
    ))
}

/// An upstream that echoes everything, then closes after the client's half-close.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind(any_port()).expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            thread::spawn(move || {
                let mut buf = [0u8; 16384];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = s.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

#[test]
fn bytes_arrive_intact_both_ways_and_half_close_passes() {
    let upstream = echo_server();
    let proxy = start(Direction::Outbound, upstream, None);
    let mut client = TcpStream::connect(proxy.listeners[0]).expect("connect");
    let payload: Vec<u8> = (0..4_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let writer = {
        let mut w = client.try_clone().expect("clone");
        let payload = payload.clone();
        thread::spawn(move || {
            w.write_all(&payload).expect("write");
            w.shutdown(Shutdown::Write).expect("half-close");
        })
    };
    let mut echoed = Vec::new();
    client
        .read_to_end(&mut echoed)
        .expect("read until the server closes");
    writer.join().expect("writer");
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "bytes changed on the way");
    wait_for("connection closed metric", || {
        metric(
            &proxy,
            "istio_tcp_connections_closed_total",
            &["reporter=\"source\""],
        ) == Some(1.0)
    });
    let n = payload.len() as f64;
    assert_eq!(
        metric(&proxy, "istio_tcp_received_bytes_total", &[]),
        Some(n)
    );
    assert_eq!(metric(&proxy, "istio_tcp_sent_bytes_total", &[]), Some(n));
    assert_eq!(
        metric(
            &proxy,
            "istio_tcp_connections_opened_total",
            &["destination_service=\"PassthroughCluster\""]
        ),
        Some(1.0)
    );
    proxy.stop();
}

#[test]
fn a_reset_upstream_resets_the_client() {
    let listener = TcpListener::bind(any_port()).expect("bind");
    let upstream = listener.local_addr().expect("addr");
    thread::spawn(move || {
        if let Ok((s, _)) = listener.accept() {
            let mut s = s;
            let mut buf = [0u8; 4];
            let _ = s.read(&mut buf);
            // Zero linger: close sends RST.
            let sock = socket2::SockRef::from(&s);
            let _ = sock.set_linger(Some(Duration::ZERO));
            drop(s);
        }
    });
    let proxy = start(Direction::Outbound, upstream, None);
    let mut client = TcpStream::connect(proxy.listeners[0]).expect("connect");
    client.write_all(b"ping").expect("write");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 8];
    let err = client.read(&mut buf).expect_err("reset, not a clean close");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    proxy.stop();
}

#[test]
fn an_unreachable_upstream_is_counted_with_uf() {
    // Bind and drop to get a port nobody listens on.
    let dead = TcpListener::bind(any_port())
        .expect("bind")
        .local_addr()
        .expect("addr");
    let proxy = start(Direction::Outbound, dead, None);
    let mut client = TcpStream::connect(proxy.listeners[0]).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 1];
    assert!(matches!(client.read(&mut buf), Ok(0) | Err(_)));
    wait_for("UF metric", || {
        metric(
            &proxy,
            "istio_tcp_connections_opened_total",
            &["response_flags=\"UF\""],
        ) == Some(1.0)
    });
    proxy.stop();
}

#[test]
fn inbound_delivery_comes_from_127_0_0_6() {
    let app = TcpListener::bind(any_port()).expect("bind");
    let app_addr = app.local_addr().expect("addr");
    let seen = thread::spawn(move || {
        let (mut s, peer) = app.accept().expect("accept");
        let _ = s.write_all(b"hi");
        peer
    });
    let proxy = start(Direction::Inbound, app_addr, None);
    let mut client = TcpStream::connect(proxy.listeners[0]).expect("connect");
    let mut buf = [0u8; 2];
    client.read_exact(&mut buf).expect("read");
    let peer = seen.join().expect("app");
    assert_eq!(peer.ip().to_string(), "127.0.0.6");
    drop(client);
    wait_for("inbound metric", || {
        metric(
            &proxy,
            "istio_tcp_connections_closed_total",
            &[
                "reporter=\"destination\"",
                "destination_service=\"InboundPassthroughClusterIpv4\"",
                "connection_security_policy=\"none\"",
            ],
        ) == Some(1.0)
    });
    proxy.stop();
}

#[test]
fn an_invalid_configuration_keeps_the_last_good_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("proxy.yaml");
    let good = "identity:\n  pod: client-0\n  namespace: default\n  workload: client\nservices:\n- name: echo\n  clusterIP: 198.19.0.1\n  ports:\n  - name: tcp-echo\n    port: 7\n  endpoints:\n  - ip: 127.0.0.1\n    workload: echo\n";
    std::fs::write(&path, good).expect("write");
    let proxy = start(Direction::Outbound, echo_server(), Some(path.clone()));
    assert_eq!(proxy.config.load().config.identity.workload, "client");
    std::fs::write(&path, "identity:\n  workload: [not, a, string]\n").expect("write bad");
    thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        proxy.config.load().config.identity.workload,
        "client",
        "bad file ignored"
    );
    std::fs::write(
        &path,
        good.replace("workload: client", "workload: client-v2"),
    )
    .expect("write new");
    wait_for("reload", || {
        proxy.config.load().config.identity.workload == "client-v2"
    });
    proxy.stop();
}

#[test]
fn start_refuses_an_invalid_file_with_its_name() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "services:\n- name: x\n  ports:\n  - port: 0\n").expect("write");
    let err = server::start(
        Options {
            config_file: Some(path),
            ..Default::default()
        },
        Arc::new(FixedDst(any_port())),
    )
    .err()
    .expect("refused");
    assert!(err.to_string().contains("bad.yaml:4"), "{err}");
}

#[test]
fn drain_closes_readiness_and_the_listener() {
    let proxy = start(Direction::Outbound, echo_server(), None);
    let health = proxy.health.expect("health");
    assert_eq!(http_get(health, "/healthz/ready").0, 200);
    let listener = proxy.listeners[0];
    let mut open = TcpStream::connect(listener).expect("connect");
    // Make sure the proxy holds the connection before draining.
    open.write_all(b"x").expect("write");
    let mut one = [0u8; 1];
    open.read_exact(&mut one).expect("echo");
    let lifecycle = proxy.lifecycle.clone();
    lifecycle.advance(ferry_proxy::lifecycle::Phase::Draining);
    wait_for("readiness 503", || {
        http_get(health, "/healthz/ready").0 == 503
    });
    wait_for("listener closed", || TcpStream::connect(listener).is_err());
    drop(open);
    let started = Instant::now();
    proxy.drain(Duration::from_secs(10));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "ends once no connection is left"
    );
}
