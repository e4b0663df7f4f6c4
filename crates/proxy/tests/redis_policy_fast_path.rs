//! The cheap path of a RedisPolicy: commands outside the policy's command set are forwarded
//! as they are, and a pipeline that mixes them with commands the policy names gets its
//! faults only on the named ones, with every reply in order — whether the pipeline arrives
//! in one read, straddles reads with large values, or trickles in small pieces.

mod redis_policy_support;
mod routing_support;

use ferry_model::Duration as D;
use ferry_model::ferry::redis_policy::{RedisDelay, RedisFault};
use ferry_proxy::config::RedisPortPolicy;
use ferry_proxy::server::Running;
use redis_policy_support::*;
use std::time::{Duration, Instant};

/// One Redis pod, `redis-0`, a real server.
fn mesh(base: u8) -> RedisMesh {
    RedisMesh::new(base, &[("redis-0", "v1")])
}

/// A proxy to `redis-0` under one policy with these faults.
fn proxy(m: &RedisMesh, faults: Vec<RedisFault>) -> Running {
    m.proxy(
        0,
        vec![RedisPortPolicy {
            policy: "default/p".into(),
            faults,
            ..Default::default()
        }],
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
    let p = proxy(&m, vec![abort(&["GET"], None)]);
    let mut direct = m.direct(0);
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
    let p = proxy(&m, vec![delay, abort(&["GET"], None)]);
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
