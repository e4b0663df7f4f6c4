//! RedisPolicy enforced by the proxy against real `redis-server`s over loopback: injected
//! error replies (exact and at 50% within a binomial tolerance) in pipelines, delays that
//! hold the pipeline, per-command timeouts with the late reply dropped, mirroring of
//! read-only commands to a subset, a policy for one StatefulSet pod, and what must pass
//! untouched: MULTI/EXEC, blocking commands, pub/sub, and traffic that is not RESP.

mod redis_policy_support;
mod routing_support;

use ferry_model::Duration as D;
use ferry_model::ferry::redis_policy::{RedisAbort, RedisDelay, RedisFault, RedisTimeout};
use ferry_proxy::config::{RedisMirrorTarget, RedisPortPolicy, cluster_name};
use redis_policy_support::*;
use routing_support::*;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Redis pods `redis-0` (v1), `redis-1` (v1), `redis-2` (v2), each a real server.
fn mesh(base: u8) -> RedisMesh {
    RedisMesh::new(
        base,
        &[("redis-0", "v1"), ("redis-1", "v1"), ("redis-2", "v2")],
    )
}

fn policy(faults: Vec<RedisFault>, timeouts: Vec<RedisTimeout>) -> RedisPortPolicy {
    RedisPortPolicy {
        policy: "default/p".into(),
        faults,
        timeouts,
        ..Default::default()
    }
}

#[test]
fn aborted_commands_get_errors_in_pipeline_order() {
    if !have_redis() {
        return;
    }
    let m = mesh(10);
    let p = m.proxy(0, vec![policy(vec![abort(&["get"], None)], Vec::new())]);
    let mut c = Client::connect(p.listeners[0]);
    c.send(&[
        &["SET", "a", "1"],
        &["GET", "a"],
        &["INCR", "n"],
        &["GET", "b"],
        &["SET", "c", "3"],
        &["PING"],
    ]);
    let replies: Vec<Reply> = (0..6).map(|_| c.read()).collect();
    assert_eq!(
        replies,
        [
            Reply::Simple("OK".into()),
            injected(),
            Reply::Int(1),
            injected(),
            Reply::Simple("OK".into()),
            Reply::Simple("PONG".into()),
        ]
    );
    // The faulted commands never reached the server; the others did.
    let mut direct = m.direct(0);
    assert_eq!(direct.call(&["GET", "c"]), Reply::Bulk(Some("3".into())));
    let stats = direct.call(&["INFO", "commandstats"]);
    let Reply::Bulk(Some(text)) = stats else {
        panic!("{stats:?}")
    };
    // Only the direct GET just made reached the server.
    assert!(text.contains("cmdstat_get:calls=1,"), "{text}");
    assert_eq!(faults(&p, "get", "abort"), 2.0);
}

#[test]
fn half_the_gets_fail_within_binomial_tolerance() {
    if !have_redis() {
        return;
    }
    let m = mesh(20);
    let p = m.proxy(
        0,
        vec![policy(vec![abort(&["GET"], Some(50.0))], Vec::new())],
    );
    let mut c = Client::connect(p.listeners[0]);
    assert_eq!(c.call(&["SET", "k", "v"]), Reply::Simple("OK".into()));
    let n = 2_000;
    // Pipelined in batches of 100.
    let mut errors = 0;
    for _ in 0..n / 100 {
        let batch: Vec<&[&str]> = (0..100).map(|_| &["GET", "k"][..]).collect();
        c.send(&batch);
        for _ in 0..100 {
            match c.read() {
                Reply::Bulk(Some(v)) => assert_eq!(v, "v"),
                r if r == injected() => errors += 1,
                other => panic!("{other:?}"),
            }
        }
    }
    // Binomial(2000, 0.5): sd ~22.4; 5 sd.
    assert!((888..=1_112).contains(&errors), "{errors}");
    assert_eq!(faults(&p, "get", "abort"), f64::from(errors));
    // Telemetry counts what the client saw.
    let seen = |outcome: &str| {
        metric(
            &p,
            "ferry_redis_commands_total",
            &["command=\"get\"", &format!("outcome=\"{outcome}\"")],
        )
    };
    support_wait(|| seen("error") + seen("ok") >= f64::from(n));
    assert_eq!(seen("error"), f64::from(errors));
}

fn support_wait(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn delays_hold_the_command_and_what_follows() {
    if !have_redis() {
        return;
    }
    let m = mesh(30);
    let delay = RedisFault {
        commands: vec!["SET".into()],
        abort: None,
        delay: Some(RedisDelay {
            fixed_delay: D::parse("300ms").ok(),
            percentage: None,
        }),
    };
    let p = m.proxy(0, vec![policy(vec![delay], Vec::new())]);
    let mut c = Client::connect(p.listeners[0]);
    let t = Instant::now();
    assert_eq!(c.call(&["PING"]), Reply::Simple("PONG".into()));
    assert!(t.elapsed() < Duration::from_millis(200));
    let t = Instant::now();
    c.send(&[&["SET", "x", "1"], &["GET", "x"]]);
    assert_eq!(c.read(), Reply::Simple("OK".into()));
    assert_eq!(c.read(), Reply::Bulk(Some("1".into())));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(faults(&p, "set", "delay"), 1.0);
}

/// A Lua script that keeps the server busy for `ms` milliseconds.
fn busy(ms: u32) -> String {
    format!(
        "local s = redis.call('TIME') local t0 = s[1] * 1000000 + s[2] \
         repeat local n = redis.call('TIME') until (n[1] * 1000000 + n[2]) - t0 > {} \
         return 'done'",
        ms * 1000
    )
}

#[test]
fn timeouts_answer_in_time_and_drop_the_late_reply() {
    if !have_redis() {
        return;
    }
    let m = mesh(40);
    let timeout = RedisTimeout {
        commands: vec!["EVAL".into(), "GET".into()],
        timeout: D::parse("100ms").ok(),
    };
    let p = m.proxy(0, vec![policy(Vec::new(), vec![timeout])]);
    let mut c = Client::connect(p.listeners[0]);
    let script = busy(400);
    let t = Instant::now();
    c.send(&[&["EVAL", &script, "0"], &["SET", "y", "2"], &["GET", "y"]]);
    let first = c.read();
    let at = t.elapsed();
    assert!(first.is_error(), "{first:?}");
    assert!(
        at >= Duration::from_millis(90) && at < Duration::from_millis(350),
        "{at:?}"
    );
    // SET has no timeout: it waits for the server; GET's own clock ran out meanwhile but
    // it answers in order after SET's reply... as the oldest unanswered, when it is due.
    assert_eq!(c.read(), Reply::Simple("OK".into()));
    assert_eq!(c.read(), Reply::Bulk(Some("2".into())));
    // The script's late reply ("done") was dropped: the next reply is PING's.
    assert_eq!(c.call(&["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(faults(&p, "eval", "timeout"), 1.0);
}

#[test]
fn transactions_blocking_commands_and_pubsub_pass_untouched() {
    if !have_redis() {
        return;
    }
    let m = mesh(50);
    let everything = RedisFault {
        commands: Vec::new(),
        abort: Some(RedisAbort {
            error: None,
            percentage: Some(100.0),
        }),
        delay: None,
    };
    let timeout_all = RedisTimeout {
        commands: Vec::new(),
        timeout: D::parse("100ms").ok(),
    };
    let p = m.proxy(
        0,
        vec![policy(
            vec![abort(&["GET"], None), everything],
            vec![timeout_all],
        )],
    );
    let mut c = Client::connect(p.listeners[0]);
    // MULTI/EXEC are untouched; commands inside are faulted like any other (GET aborts).
    assert_eq!(c.call(&["MULTI"]), Reply::Simple("OK".into()));
    assert_eq!(c.call(&["EXEC"]), Reply::Array(Some(Vec::new())));
    // A blocking command waits its full second: no fault, no timeout.
    let t = Instant::now();
    assert_eq!(c.call(&["BLPOP", "nothing", "1"]), Reply::Array(None));
    assert!(t.elapsed() >= Duration::from_millis(900));
    // Subscribing ends enforcement for the connection; messages flow.
    c.send(&[&["SUBSCRIBE", "news"]]);
    assert_eq!(
        c.read(),
        Reply::Array(Some(vec![
            Reply::Bulk(Some("subscribe".into())),
            Reply::Bulk(Some("news".into())),
            Reply::Int(1)
        ]))
    );
    let mut publisher = m.direct(0);
    assert_eq!(publisher.call(&["PUBLISH", "news", "hello"]), Reply::Int(1));
    assert_eq!(
        c.read(),
        Reply::Array(Some(vec![
            Reply::Bulk(Some("message".into())),
            Reply::Bulk(Some("news".into())),
            Reply::Bulk(Some("hello".into()))
        ]))
    );
    // Not RESP at all: forwarded as it is (Redis answers the inline command).
    let mut raw = Client::connect(p.listeners[0]);
    raw.send_raw(b"PING\r\n");
    let r = raw.read();
    assert!(r == Reply::Simple("PONG".into()) || r.is_error(), "{r:?}");
}

#[test]
fn read_only_commands_are_mirrored_to_a_subset() {
    if !have_redis() {
        return;
    }
    let m = mesh(60);
    let host = fqdn("redis");
    let mut p = policy(Vec::new(), Vec::new());
    p.subset = Some("v1".into());
    p.subset_cluster = Some(cluster_name(m.port, Some("v1"), &host));
    p.mirror = Some(RedisMirrorTarget {
        cluster: cluster_name(m.port, Some("v2"), &host),
        percentage: 100.0,
    });
    let proxy = m.proxy(0, vec![p]);
    let mut c = Client::connect(proxy.listeners[0]);
    assert_eq!(c.call(&["SET", "k", "primary"]), Reply::Simple("OK".into()));
    for _ in 0..50 {
        assert_eq!(c.call(&["GET", "k"]), Reply::Bulk(Some("primary".into())));
    }
    assert_eq!(c.call(&["EXISTS", "k"]), Reply::Int(1));
    // The v2 pod saw the reads (GET, EXISTS), not the write.
    let mut mirror = m.direct(2);
    support_wait(|| {
        let Reply::Bulk(Some(stats)) = mirror.call(&["INFO", "commandstats"]) else {
            return false;
        };
        stats.contains("cmdstat_get:calls=50,") && stats.contains("cmdstat_exists:calls=1,")
    });
    assert_eq!(mirror.call(&["GET", "k"]), Reply::Bulk(None));
}

#[test]
fn a_policy_for_one_pod_leaves_the_others_alone() {
    if !have_redis() {
        return;
    }
    let m = mesh(70);
    let mut only_one = policy(vec![abort(&["GET"], None)], Vec::new());
    only_one.pods = vec!["redis-1".into()];
    let to_zero = m.proxy(0, vec![only_one.clone()]);
    let to_one = m.proxy(1, vec![only_one.clone()]);
    assert_eq!(
        Client::connect(to_zero.listeners[0]).call(&["GET", "z"]),
        Reply::Bulk(None)
    );
    assert_eq!(
        Client::connect(to_one.listeners[0]).call(&["GET", "z"]),
        injected()
    );
    // With a service-wide policy as well, both apply to redis-1 (its own rules first).
    let mut everyone = policy(vec![abort(&["INCR"], None)], Vec::new());
    everyone.policy = "default/everyone".into();
    let both = m.proxy(1, vec![only_one, everyone]);
    let mut c = Client::connect(both.listeners[0]);
    assert_eq!(c.call(&["GET", "z"]), injected());
    assert_eq!(c.call(&["INCR", "z"]), injected());
    assert_eq!(c.call(&["SET", "z", "1"]), Reply::Simple("OK".into()));
}

#[test]
fn enforcement_over_any_stream_as_for_tls_sessions() {
    use ferry_proxy::lifecycle::Lifecycle;
    use ferry_proxy::redis::enforce::{Enforcement, Stream, forward_sides};
    use ferry_proxy::redis::policy::Policy;
    use std::sync::Arc;
    if !have_redis() {
        return;
    }
    let ip: IpAddr = "127.0.0.81".parse().expect("ip");
    let port = shared_port(&[ip]);
    let _server = redis_on(ip, port);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let front = listener.local_addr().expect("addr");
    let policy = Arc::new(Policy::compile(
        &policy(vec![abort(&["GET"], None)], Vec::new()),
        None,
    ));
    let lifecycle = Lifecycle::new();
    let proxy = std::thread::spawn(move || {
        rt.block_on(async move {
            let (mut down, _) = listener.accept().await.expect("accept");
            let mut up = tokio::net::TcpStream::connect(SocketAddr::new(ip, port))
                .await
                .expect("connect");
            let enforcement = Enforcement {
                policy,
                on_fault: Box::new(|_, _| {}),
                connect_timeout: Duration::from_secs(1),
                telemetry: None,
            };
            forward_sides(
                &mut Stream(&mut down),
                &mut Stream(&mut up),
                &mut (),
                None,
                &lifecycle,
                &enforcement,
                false,
            )
            .await
        })
    });
    let mut c = Client::connect(front);
    c.send(&[&["SET", "k", "v"], &["GET", "k"], &["ECHO", "x"]]);
    assert_eq!(c.read(), Reply::Simple("OK".into()));
    assert_eq!(c.read(), injected());
    assert_eq!(c.read(), Reply::Bulk(Some("x".into())));
    drop(c);
    let (totals, ending) = proxy.join().expect("proxy thread");
    assert!(ending.is_ok(), "{ending:?}");
    assert!(totals.received > 0);
}

#[test]
fn commands_split_across_reads_are_followed_byte_by_byte() {
    if !have_redis() {
        return;
    }
    let m = mesh(90);
    let p = m.proxy(0, vec![policy(vec![abort(&["GET"], None)], Vec::new())]);
    let mut c = Client::connect(p.listeners[0]);
    let mut bytes = Vec::new();
    for cmd in [
        &["SET", "a", "x"][..],
        &["GET", "a"],
        &["APPEND", "a", "y"],
        &["GET", "a"],
        &["GETRANGE", "a", "0", "-1"],
    ] {
        bytes.extend(resp(cmd));
    }
    // An inline command too, between them.
    bytes.extend_from_slice(b"PING\r\n");
    for b in &bytes {
        c.send_raw(std::slice::from_ref(b));
        std::thread::sleep(Duration::from_micros(200));
    }
    let replies: Vec<Reply> = (0..6).map(|_| c.read()).collect();
    assert_eq!(
        replies,
        [
            Reply::Simple("OK".into()),
            injected(),
            Reply::Int(2),
            injected(),
            Reply::Bulk(Some("xy".into())),
            Reply::Simple("PONG".into()),
        ]
    );
}
