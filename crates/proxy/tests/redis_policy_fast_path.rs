//! The cheap path of a RedisPolicy: commands outside the policy's command set are forwarded
//! as they are, and a pipeline that mixes them with commands the policy names gets its
//! faults only on the named ones, with every reply in order — whether the pipeline arrives
//! in one read, straddles reads with large values, or trickles in small pieces.

mod redis_policy_support;
mod routing_support;

use ferry_model::Duration as D;
use ferry_model::ferry::redis_policy::{RedisAbort, RedisDelay, RedisFault};
use ferry_proxy::config::{Protocol, ProxyConfig, RedisPortPolicy};
use ferry_proxy::server::Running;
use redis_policy_support::*;
use routing_support::*;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

struct Mesh {
    _servers: Vec<RedisServer>,
    pods: Vec<Pod>,
    port: u16,
}

/// One Redis pod, `redis-0`, a real server.
fn mesh(base: u8) -> Mesh {
    let pods = vec![pod(base, "redis-0", "v1")];
    let ips: Vec<IpAddr> = pods.iter().map(|p| p.ip).collect();
    let port = shared_port(&ips);
    let servers = pods.iter().map(|p| redis_on(p.ip, port)).collect();
    Mesh {
        _servers: servers,
        pods,
        port,
    }
}

impl Mesh {
    fn proxy(&self, faults: Vec<RedisFault>) -> Running {
        let host = fqdn("redis");
        let mut out = outbound(&host, self.port, Protocol::Redis, &[], Vec::new());
        out.redis_policies = vec![RedisPortPolicy {
            policy: "default/p".into(),
            faults,
            ..Default::default()
        }];
        let config = ProxyConfig {
            identity: client_identity(&[("app", "client")]),
            services: vec![service("redis", None, "redis", self.port, &self.pods)],
            clusters: clusters_by_version(&host, self.port, &self.pods, true),
            outbound: vec![out],
            ..Default::default()
        };
        start_proxy(SocketAddr::new(self.pods[0].ip, self.port), config)
    }

    fn direct(&self) -> Client {
        Client::connect(SocketAddr::new(self.pods[0].ip, self.port))
    }
}

fn abort_on(commands: &[&str]) -> RedisFault {
    RedisFault {
        commands: commands.iter().map(|c| c.to_string()).collect(),
        abort: Some(RedisAbort {
            error: Some("ERR injected by Ferry".into()),
            percentage: None,
        }),
        delay: None,
    }
}

fn injected() -> Reply {
    Reply::Error("ERR injected by Ferry".into())
}

fn faults(proxy: &Running, command: &str, outcome: &str) -> f64 {
    metric(
        proxy,
        "ferry_redis_faults_total",
        &[
            &format!("command=\"{command}\""),
            &format!("outcome=\"{outcome}\""),
        ],
    )
}

/// Calls of `command` the server counted (`INFO commandstats`).
fn server_calls(direct: &mut Client, command: &str) -> u64 {
    let Reply::Bulk(Some(text)) = direct.call(&["INFO", "commandstats"]) else {
        panic!("no commandstats")
    };
    let key = format!("cmdstat_{command}:calls=");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A pipeline of `rounds` rounds of unnamed commands (some with a value of `size` bytes)
/// around the named `GET` and `get` (any case); with the replies expected in order.
fn pipeline(rounds: usize, size: usize) -> (Vec<u8>, Vec<Reply>) {
    let big = "v".repeat(size);
    let mut bytes = Vec::new();
    let mut want = Vec::new();
    for i in 0..rounds {
        let key = format!("k{i}");
        bytes.extend(resp(&["SET", &key, &big]));
        want.push(Reply::Simple("OK".into()));
        bytes.extend(resp(&["GET", &key]));
        want.push(injected());
        bytes.extend(resp(&["STRLEN", &key]));
        want.push(Reply::Int(size as i64));
        // An inline command, and a named one in lower case.
        bytes.extend_from_slice(b"PING\r\n");
        want.push(Reply::Simple("PONG".into()));
        bytes.extend(resp(&["get", &key]));
        want.push(injected());
        // A value that looks like the named command is only a value.
        bytes.extend(resp(&["ECHO", "GET"]));
        want.push(Reply::Bulk(Some("GET".into())));
        bytes.extend(resp(&["INCR", "n"]));
        want.push(Reply::Int(i as i64 + 1));
    }
    (bytes, want)
}

#[test]
fn named_commands_are_faulted_and_unnamed_ones_pass_in_order() {
    if !have_redis() {
        return;
    }
    let m = mesh(236);
    let p = m.proxy(vec![abort_on(&["GET"])]);
    let mut direct = m.direct();
    let mut named = 0;
    // (case, rounds, value size, piece size: 0 = one write)
    let cases = [
        ("one read", 5, 10, 0),
        ("large values straddle reads", 4, 100_000, 0),
        ("pieces of 7 bytes", 3, 20, 7),
        ("pieces of 1000 bytes", 6, 3_000, 1_000),
    ];
    for (case, rounds, size, piece) in cases {
        let _ = direct.call(&["DEL", "n"]);
        let (bytes, want) = pipeline(rounds, size);
        let mut c = Client::connect(p.listeners[0]);
        if piece == 0 {
            c.send_raw(&bytes);
        } else {
            for chunk in bytes.chunks(piece) {
                c.send_raw(chunk);
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        for (i, w) in want.iter().enumerate() {
            assert_eq!(&c.read(), w, "{case}: reply {i}");
        }
        named += 2 * rounds;
        assert_eq!(faults(&p, "get", "abort"), named as f64, "{case}");
    }
    // Only the unnamed commands reached the server.
    assert_eq!(server_calls(&mut direct, "get"), 0);
    assert_eq!(server_calls(&mut direct, "strlen"), 18);
}

#[test]
fn a_delay_on_a_named_command_holds_it_and_keeps_the_order() {
    if !have_redis() {
        return;
    }
    let m = mesh(240);
    let delay = RedisFault {
        commands: vec!["INCR".into()],
        abort: None,
        delay: Some(RedisDelay {
            fixed_delay: D::parse("200ms").ok(),
            percentage: None,
        }),
    };
    let p = m.proxy(vec![delay, abort_on(&["GET"])]);
    let mut c = Client::connect(p.listeners[0]);
    // Unnamed commands are not held.
    let t = Instant::now();
    assert_eq!(c.call(&["SET", "x", "1"]), Reply::Simple("OK".into()));
    assert!(
        t.elapsed() < Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    c.send(&[
        &["PING"],
        &["GET", "x"],
        &["INCR", "x"],
        &["ECHO", "after"],
        &["GET", "x"],
        &["STRLEN", "x"],
    ]);
    assert_eq!(c.read(), Reply::Simple("PONG".into()));
    assert_eq!(c.read(), injected());
    assert_eq!(c.read(), Reply::Int(2));
    assert_eq!(c.read(), Reply::Bulk(Some("after".into())));
    assert_eq!(c.read(), injected());
    assert_eq!(c.read(), Reply::Int(1));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(faults(&p, "incr", "delay"), 1.0);
    assert_eq!(faults(&p, "get", "abort"), 2.0);
}
