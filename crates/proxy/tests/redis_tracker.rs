//! Command/reply matching tests through [`RedisObserver`]: pipelining, transactions, pub/sub
//! (RESP2 and RESP3), pushes, MONITOR, CLIENT REPLY, blocking commands, limits; and property
//! tests that any chunking of a conversation yields the same completed commands.

use ferry_proxy::redis::{CommandId, OpaqueReason, Outcome, RedisObserver};
use proptest::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Done {
    cmd: &'static str,
    outcome: Outcome,
    latency: u64,
    blocking: bool,
    error: Option<String>,
}

/// Drives an observer with explicit timestamps and collects completions.
struct Conv {
    obs: RedisObserver,
    done: Vec<Done>,
}

impl Conv {
    fn new() -> Self {
        Conv {
            obs: RedisObserver::new(),
            done: Vec::new(),
        }
    }
    fn client(&mut self, bytes: &[u8], now: u64) -> &mut Self {
        self.obs.client_bytes(bytes, now);
        self
    }
    fn server(&mut self, bytes: &[u8], now: u64) -> &mut Self {
        let done = &mut self.done;
        self.obs.server_bytes(bytes, now, |d| {
            done.push(Done {
                cmd: d.command.name(),
                outcome: d.outcome,
                latency: d.latency,
                blocking: d.blocking,
                error: d.error.map(|e| String::from_utf8_lossy(e).into_owned()),
            })
        });
        self
    }
    fn take(&mut self) -> Vec<(&'static str, Outcome)> {
        self.done.drain(..).map(|d| (d.cmd, d.outcome)).collect()
    }
}

fn cmd(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

fn cmds(list: &[&[&str]]) -> Vec<u8> {
    list.iter().flat_map(|c| cmd(c)).collect()
}

use Outcome::{Aborted, Error, Ok};

#[test]
fn command_table() {
    assert!(CommandId::known_count() >= 240);
    for id in CommandId::all() {
        assert_eq!(CommandId::lookup(id.name().as_bytes()), id);
        assert_eq!(
            CommandId::lookup(id.name().to_ascii_uppercase().as_bytes()),
            id
        );
    }
    assert_eq!(CommandId::lookup(b"GeT"), CommandId::GET);
    assert_eq!(CommandId::lookup(b"nosuchcommand"), CommandId::UNKNOWN);
    assert_eq!(CommandId::lookup(b""), CommandId::UNKNOWN);
    assert_eq!(CommandId::UNKNOWN.name(), "unknown");
    assert!(CommandId::lookup(b"BLPOP").is_blocking());
    assert!(!CommandId::GET.is_blocking());
    assert!(
        ferry_proxy::redis::command::max_probe_len() <= 4,
        "hash index probes too long"
    );
}

#[test]
fn simple_request_reply_with_latency() {
    let mut c = Conv::new();
    c.client(&cmd(&["SET", "k", "v"]), 100)
        .server(b"+OK\r\n", 350);
    assert_eq!(
        c.done,
        vec![Done {
            cmd: "set",
            outcome: Ok,
            latency: 250,
            blocking: false,
            error: None
        }]
    );
    c.client(b"GET k\r\n", 1000).server(b"$1\r\nv\r\n", 1010);
    assert_eq!(c.done[1].cmd, "get");
    assert_eq!(c.done[1].latency, 10);
    assert_eq!(c.obs.pending(), 0);
}

#[test]
fn error_replies_carry_first_word() {
    let mut c = Conv::new();
    c.client(&cmds(&[&["LPUSH", "k", "v"], &["GET", "x"], &["NOPE"]]), 0);
    c.server(
        b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
        5,
    );
    c.server(b"-MOVED 3999 127.0.0.1:6381\r\n!10\r\nERR boom!!\r\n", 6);
    let errs: Vec<_> = c
        .done
        .iter()
        .map(|d| (d.cmd, d.outcome, d.error.clone()))
        .collect();
    assert_eq!(
        errs,
        vec![
            ("lpush", Error, Some("WRONGTYPE".into())),
            ("get", Error, Some("MOVED".into())),
            ("unknown", Error, Some("ERR".into())),
        ]
    );
}

#[test]
fn pipeline_of_thousands() {
    let mut c = Conv::new();
    let mut req = Vec::new();
    let mut rep = Vec::new();
    for i in 0..5000u32 {
        if i.is_multiple_of(2) {
            req.extend(cmd(&["SET", &format!("key:{i}"), "xxx"]));
            rep.extend_from_slice(b"+OK\r\n");
        } else {
            req.extend(cmd(&["GET", &format!("key:{i}")]));
            rep.extend_from_slice(b"$3\r\nxxx\r\n");
        }
    }
    // Client bytes in odd-sized reads, replies in others.
    for (n, chunk) in req.chunks(1000).enumerate() {
        c.client(chunk, n as u64);
    }
    assert_eq!(c.obs.pending(), 5000);
    for chunk in rep.chunks(777) {
        c.server(chunk, 10_000);
    }
    assert_eq!(c.done.len(), 5000);
    assert!(
        c.done
            .iter()
            .enumerate()
            .all(|(i, d)| d.cmd == if i.is_multiple_of(2) { "set" } else { "get" })
    );
    assert!(!c.obs.is_opaque());
}

#[test]
fn multi_exec() {
    let mut c = Conv::new();
    c.client(
        &cmds(&[
            &["MULTI"],
            &["INCR", "a"],
            &["LPUSH", "a", "x"],
            &["GET", "b"],
        ]),
        10,
    );
    c.server(b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n", 20);
    assert_eq!(c.take(), vec![("multi", Ok)]);
    assert_eq!(c.obs.pending(), 3);
    c.client(&cmd(&["EXEC"]), 100);
    c.server(b"*3\r\n:1\r\n-WRONGTYPE Operation\r\n$1\r\nz\r\n", 130);
    let got: Vec<_> = c
        .done
        .iter()
        .map(|d| (d.cmd, d.outcome, d.latency, d.error.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("incr", Ok, 30, None),
            ("lpush", Error, 30, Some("WRONGTYPE".into())),
            ("get", Ok, 30, None),
            ("exec", Ok, 30, None),
        ]
    );
    assert_eq!(c.obs.pending(), 0);
}

#[test]
fn multi_abort_discard_and_watch() {
    // A command rejected at queue time fails at once; EXEC then aborts the rest.
    let mut c = Conv::new();
    c.client(
        &cmds(&[&["MULTI"], &["SET", "a", "1"], &["NOSUCH"], &["EXEC"]]),
        0,
    );
    c.server(b"+OK\r\n+QUEUED\r\n-ERR unknown command 'NOSUCH'\r\n", 1);
    c.server(
        b"-EXECABORT Transaction discarded because of previous errors.\r\n",
        2,
    );
    assert_eq!(
        c.take(),
        vec![
            ("multi", Ok),
            ("unknown", Error),
            ("set", Aborted),
            ("exec", Error)
        ]
    );

    // DISCARD.
    c.client(&cmds(&[&["MULTI"], &["SET", "a", "1"], &["DISCARD"]]), 3);
    c.server(b"+OK\r\n+QUEUED\r\n+OK\r\n", 4);
    assert_eq!(
        c.take(),
        vec![("multi", Ok), ("set", Aborted), ("discard", Ok)]
    );

    // WATCH failure: EXEC returns a null array.
    c.client(
        &cmds(&[&["WATCH", "a"], &["MULTI"], &["INCR", "a"], &["EXEC"]]),
        5,
    );
    c.server(b"+OK\r\n+OK\r\n+QUEUED\r\n*-1\r\n", 6);
    assert_eq!(
        c.take(),
        vec![
            ("watch", Ok),
            ("multi", Ok),
            ("incr", Aborted),
            ("exec", Ok)
        ]
    );

    // RESP3 null for the same case, then normal traffic continues.
    c.client(
        &cmds(&[&["MULTI"], &["INCR", "a"], &["EXEC"], &["PING"]]),
        7,
    );
    c.server(b"+OK\r\n+QUEUED\r\n_\r\n+PONG\r\n", 8);
    assert_eq!(
        c.take(),
        vec![("multi", Ok), ("incr", Aborted), ("exec", Ok), ("ping", Ok)]
    );
    assert!(!c.obs.is_opaque());
}

#[test]
fn blocking_inside_multi_is_not_blocking() {
    let mut c = Conv::new();
    c.client(&cmds(&[&["MULTI"], &["BLPOP", "q", "0"], &["EXEC"]]), 0);
    c.server(b"+OK\r\n+QUEUED\r\n*1\r\n*-1\r\n", 1);
    assert!(c.done.iter().all(|d| !d.blocking));
}

#[test]
fn blocking_commands_are_flagged() {
    let mut c = Conv::new();
    c.client(&cmd(&["BLPOP", "q", "0"]), 0)
        .server(b"*2\r\n$1\r\nq\r\n$1\r\nx\r\n", 5_000_000_000);
    c.client(
        &cmd(&["XREAD", "COUNT", "1", "BLOCK", "100", "STREAMS", "s", "$"]),
        0,
    )
    .server(b"*-1\r\n", 1);
    c.client(&cmd(&["XREAD", "STREAMS", "block", "0"]), 0)
        .server(b"*-1\r\n", 1);
    c.client(
        &cmd(&[
            "xreadgroup",
            "GROUP",
            "g",
            "c",
            "block",
            "0",
            "STREAMS",
            "s",
            ">",
        ]),
        0,
    );
    c.server(b"*-1\r\n", 1);
    c.client(&cmd(&["WAIT", "1", "0"]), 0).server(b":1\r\n", 1);
    c.client(&cmd(&["GET", "k"]), 0).server(b"$-1\r\n", 1);
    let got: Vec<_> = c.done.iter().map(|d| (d.cmd, d.blocking)).collect();
    assert_eq!(
        got,
        vec![
            ("blpop", true),
            ("xread", true),
            ("xread", false),
            ("xreadgroup", true),
            ("wait", true),
            ("get", false)
        ]
    );
}

#[test]
fn resp2_pubsub() {
    let mut c = Conv::new();
    c.client(&cmd(&["SUBSCRIBE", "a", "b"]), 0);
    c.server(b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n", 1);
    assert!(c.done.is_empty());
    c.server(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n", 2);
    assert_eq!(c.take(), vec![("subscribe", Ok)]);
    assert!(c.obs.in_pubsub());
    // Messages are not replies.
    c.server(b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhello\r\n", 3);
    c.client(&cmds(&[&["PSUBSCRIBE", "n*"], &["PING"]]), 4);
    c.server(
        b"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$2\r\nnn\r\n$1\r\nx\r\n",
        5,
    );
    c.server(b"*3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:3\r\n", 6);
    c.server(b"*3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$1\r\ny\r\n", 6);
    // PING in RESP2 pub/sub mode answers with an array.
    c.server(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n", 7);
    // A command not allowed in pub/sub mode gets an error reply.
    c.client(&cmd(&["GET", "k"]), 8)
        .server(b"-ERR Can't execute 'get'\r\n", 9);
    assert_eq!(
        c.take(),
        vec![("psubscribe", Ok), ("ping", Ok), ("get", Error)]
    );
    // UNSUBSCRIBE without arguments: one confirmation per channel (2), patterns stay.
    c.client(&cmd(&["UNSUBSCRIBE"]), 10);
    c.server(b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:2\r\n", 11);
    assert!(c.done.is_empty());
    c.server(b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:1\r\n", 12);
    assert_eq!(c.take(), vec![("unsubscribe", Ok)]);
    assert!(c.obs.in_pubsub());
    c.client(&cmd(&["PUNSUBSCRIBE"]), 13);
    c.server(b"*3\r\n$12\r\npunsubscribe\r\n$2\r\nn*\r\n:0\r\n", 14);
    assert_eq!(c.take(), vec![("punsubscribe", Ok)]);
    assert!(!c.obs.in_pubsub());
    // Out of pub/sub mode, a message-shaped array is a plain reply again.
    c.client(&cmd(&["LRANGE", "l", "0", "-1"]), 15);
    c.server(b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nb\r\n", 16);
    assert_eq!(c.take(), vec![("lrange", Ok)]);
    // An argument-less UNSUBSCRIBE with nothing subscribed gets one confirmation.
    c.client(&cmd(&["UNSUBSCRIBE"]), 17)
        .server(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n", 18);
    assert_eq!(c.take(), vec![("unsubscribe", Ok)]);
    assert!(!c.obs.is_opaque());
}

#[test]
fn sharded_pubsub_and_unsolicited_unsubscribe() {
    let mut c = Conv::new();
    c.client(&cmd(&["SSUBSCRIBE", "s"]), 0);
    c.server(b"*3\r\n$10\r\nssubscribe\r\n$1\r\ns\r\n:1\r\n", 1);
    c.server(b"*3\r\n$8\r\nsmessage\r\n$1\r\ns\r\n$1\r\nm\r\n", 2);
    // The slot moved: the server unsubscribes on its own.
    c.server(b"*3\r\n$12\r\nsunsubscribe\r\n$1\r\ns\r\n:0\r\n", 3);
    assert!(!c.obs.in_pubsub());
    c.client(&cmd(&["GET", "k"]), 4).server(b"$-1\r\n", 5);
    assert_eq!(c.take(), vec![("ssubscribe", Ok), ("get", Ok)]);
}

#[test]
fn resp3_hello_pushes_and_pubsub() {
    let mut c = Conv::new();
    c.client(&cmd(&["HELLO", "3"]), 0);
    c.server(
        b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n",
        1,
    );
    assert!(c.obs.is_resp3());
    c.client(
        &cmds(&[
            &["CLIENT", "TRACKING", "on"],
            &["GET", "k"],
            &["SUBSCRIBE", "ch"],
            &["GET", "j"],
        ]),
        2,
    );
    c.server(b"+OK\r\n", 3);
    // An invalidation push arrives before GET's reply; it must not consume GET.
    c.server(b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n", 4);
    c.server(b"$1\r\nv\r\n", 5);
    // The subscription is confirmed by a push; messages are pushes; GET works in RESP3 pub/sub.
    c.server(b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n", 6);
    c.server(b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n", 7);
    c.server(b"|1\r\n+a\r\n+b\r\n_\r\n", 8);
    assert_eq!(
        c.take(),
        vec![
            ("hello", Ok),
            ("client", Ok),
            ("get", Ok),
            ("subscribe", Ok),
            ("get", Ok)
        ]
    );
    // In RESP3 pub/sub, array replies are plain replies.
    c.client(&cmd(&["LRANGE", "l", "0", "1"]), 9)
        .server(b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nb\r\n", 10);
    assert_eq!(c.take(), vec![("lrange", Ok)]);
    // RESET goes back to RESP2 and drops subscriptions.
    c.client(&cmd(&["RESET"]), 11).server(b"+RESET\r\n", 12);
    assert_eq!(c.take(), vec![("reset", Ok)]);
    assert!(!c.obs.is_resp3());
    assert!(!c.obs.in_pubsub());
    // A push with no pending command is fine too.
    c.server(b">2\r\n$10\r\ninvalidate\r\n_\r\n", 13);
    assert!(!c.obs.is_opaque());
}

#[test]
fn monitor_goes_opaque() {
    let mut c = Conv::new();
    c.client(&cmds(&[&["PING"], &["MONITOR"]]), 0);
    c.server(
        b"+PONG\r\n+OK\r\n+1339518083.107412 [0 127.0.0.1:60866] \"keys\" \"*\"\r\n",
        1,
    );
    assert_eq!(c.take(), vec![("ping", Ok), ("monitor", Ok)]);
    assert_eq!(c.obs.opaque_reason(), Some(OpaqueReason::Monitor));
    assert!(!c.obs.malformed());
    c.server(b"garbage that is not parsed", 2);
    assert_eq!(c.obs.opaque_reason(), Some(OpaqueReason::Monitor));
}

#[test]
fn client_reply_off_goes_opaque_after_earlier_replies() {
    let mut c = Conv::new();
    c.client(
        &cmds(&[
            &["SET", "a", "1"],
            &["CLIENT", "REPLY", "OFF"],
            &["SET", "b", "2"],
        ]),
        0,
    );
    assert!(!c.obs.is_opaque());
    c.server(b"+OK\r\n", 1);
    assert_eq!(c.take(), vec![("set", Ok)]);
    assert_eq!(c.obs.opaque_reason(), Some(OpaqueReason::ClientReplyOff));
    // SKIP, with nothing pending: opaque at once. CLIENT REPLY ON is an ordinary command.
    let mut c = Conv::new();
    c.client(&cmd(&["client", "reply", "on"]), 0)
        .server(b"+OK\r\n", 1);
    assert!(!c.obs.is_opaque());
    c.client(&cmd(&["client", "reply", "skip"]), 2);
    assert_eq!(c.obs.opaque_reason(), Some(OpaqueReason::ClientReplyOff));
}

#[test]
fn quit_inline_and_unknown() {
    let mut c = Conv::new();
    c.client(b"PING\r\nfoo bar\r\n\r\n", 0)
        .client(&cmd(&["QUIT"]), 0);
    let long = "X".repeat(40);
    c.client(&cmd(&[&long]), 0);
    c.server(
        b"+PONG\r\n-ERR unknown command 'foo'\r\n+OK\r\n-ERR unknown\r\n",
        1,
    );
    assert_eq!(
        c.take(),
        vec![
            ("ping", Ok),
            ("unknown", Error),
            ("quit", Ok),
            ("unknown", Error)
        ]
    );
}

#[test]
fn limits_and_desync() {
    let mut c = Conv {
        obs: RedisObserver::with_max_pending(10),
        done: Vec::new(),
    };
    for _ in 0..10 {
        c.client(&cmd(&["PING"]), 0);
    }
    assert!(!c.obs.is_opaque());
    c.client(&cmd(&["PING"]), 0);
    assert_eq!(c.obs.opaque_reason(), Some(OpaqueReason::QueueFull));
    assert_eq!(c.obs.pending(), 0);

    let mut c = Conv::new();
    c.server(b"+OK\r\n", 0);
    assert_eq!(c.obs.opaque_reason(), Some(OpaqueReason::UnexpectedReply));

    let mut c = Conv::new();
    c.client(b"*1\r\n:1\r\n", 0);
    assert_eq!(c.obs.opaque_reason(), Some(OpaqueReason::ClientMalformed));
    assert!(c.obs.malformed());

    let mut c = Conv::new();
    c.client(&cmd(&["GET", "k"]), 0)
        .server(b"$3\r\nabcd\r\n", 1);
    assert_eq!(c.obs.opaque_reason(), Some(OpaqueReason::ServerMalformed));
    assert!(c.obs.malformed());
}

// ---------- property tests ----------

/// One exchange: command bytes and reply bytes, with the expected (command, outcome)s.
fn exchange_strategy() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, Vec<(&'static str, Outcome)>)> {
    prop_oneof![
        Just((cmd(&["SET", "k", "vvv"]), b"+OK\r\n".to_vec(), vec![("set", Ok)])),
        Just((cmd(&["GET", "k"]), b"$3\r\nvvv\r\n".to_vec(), vec![("get", Ok)])),
        Just((cmd(&["GET", "k"]), b"$-1\r\n".to_vec(), vec![("get", Ok)])),
        Just((cmd(&["INCR", "k"]), b"-ERR not an integer\r\n".to_vec(), vec![("incr", Error)])),
        Just((b"PING\r\n".to_vec(), b"+PONG\r\n".to_vec(), vec![("ping", Ok)])),
        Just((cmd(&["HGETALL", "h"]), b"%1\r\n$1\r\na\r\n*2\r\n~1\r\n:1\r\n,1.5\r\n".to_vec(), vec![("hgetall", Ok)])),
        Just((cmd(&["XRANGE", "s", "-", "+"]), b"|1\r\n+k\r\n+v\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*0\r\n".to_vec(), vec![("xrange", Ok)])),
        Just((
            cmds(&[&["MULTI"], &["INCR", "a"], &["GET", "a"], &["EXEC"]]),
            b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:1\r\n-WRONGTYPE x\r\n".to_vec(),
            vec![("multi", Ok), ("incr", Ok), ("get", Error), ("exec", Ok)],
        )),
        Just((
            cmd(&["SUBSCRIBE", "c"]).into_iter().chain(cmd(&["UNSUBSCRIBE", "c"])).collect(),
            b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nc\r\n:0\r\n".to_vec(),
            vec![("subscribe", Ok), ("unsubscribe", Ok)],
        )),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(|payload| {
            let mut c = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n".to_vec();
            c.extend_from_slice(format!("${}\r\n", payload.len()).as_bytes());
            c.extend_from_slice(&payload);
            c.extend_from_slice(b"\r\n");
            let mut r = format!("${}\r\n", payload.len()).into_bytes();
            r.extend_from_slice(&payload);
            r.extend_from_slice(b"\r\n");
            (c, r, vec![("set", Ok)])
        }),
    ]
}

fn run(client: &[&[u8]], server: &[&[u8]]) -> (Vec<Done>, Option<OpaqueReason>) {
    let mut c = Conv::new();
    for chunk in client {
        c.client(chunk, 1);
    }
    for chunk in server {
        c.server(chunk, 2);
    }
    (c.done, c.obs.opaque_reason())
}

fn cut(data: &[u8], mut cuts: Vec<usize>) -> Vec<&[u8]> {
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for c in cuts {
        let c = c.min(data.len());
        if c >= start {
            out.push(&data[start..c]);
            start = c;
        }
    }
    out.push(&data[start..]);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn conversation_any_chunking(
        ex in proptest::collection::vec(exchange_strategy(), 1..40),
        ccuts in proptest::collection::vec(0usize..6000, 0..30),
        scuts in proptest::collection::vec(0usize..6000, 0..30),
    ) {
        let client: Vec<u8> = ex.iter().flat_map(|e| e.0.clone()).collect();
        let server: Vec<u8> = ex.iter().flat_map(|e| e.1.clone()).collect();
        let want: Vec<(&str, Outcome)> = ex.iter().flat_map(|e| e.2.clone()).collect();
        let whole = run(&[&client], &[&server]);
        prop_assert_eq!(whole.1, None);
        let got: Vec<(&str, Outcome)> = whole.0.iter().map(|d| (d.cmd, d.outcome)).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(run(&cut(&client, ccuts), &cut(&server, scuts)), whole.clone());
        let cb: Vec<&[u8]> = client.chunks(1).collect();
        let sb: Vec<&[u8]> = server.chunks(1).collect();
        prop_assert_eq!(run(&cb, &sb), whole);
    }

    #[test]
    fn observer_garbage_never_panics(
        client in proptest::collection::vec(any::<u8>(), 0..256),
        server in proptest::collection::vec(any::<u8>(), 0..256),
        cuts in proptest::collection::vec(0usize..256, 0..8),
    ) {
        let a = run(&cut(&client, cuts.clone()), &cut(&server, cuts));
        let b = run(&[&client], &[&server]);
        prop_assert_eq!(a, b);
    }
}
