//! RESP scanner tests: a table per RESP type and per malformed case, and property tests that
//! feeding a stream in any chunking yields exactly the events of feeding it whole.

use ferry_proxy::redis::{Direction, Element, Kind, Scanner, Value, Visitor};
use proptest::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Begin(Kind),
    Elem(u32, Kind, Option<String>, Option<i64>),
    Value(Kind, u64, Option<String>, Option<i64>),
}

/// Records every event; asks for every element's token.
#[derive(Default)]
struct Rec {
    events: Vec<Ev>,
}

fn tok(t: Option<&ferry_proxy::redis::Token>) -> Option<String> {
    t.map(|t| {
        let mut s = String::from_utf8_lossy(t.prefix()).into_owned();
        if t.is_truncated() {
            s.push_str("...");
        }
        s
    })
}

impl Visitor for Rec {
    fn begin(&mut self, kind: Kind) {
        self.events.push(Ev::Begin(kind));
    }
    fn wants_token(&self, _index: u32) -> bool {
        true
    }
    fn element(&mut self, e: &Element<'_>) {
        self.events
            .push(Ev::Elem(e.index, e.kind, tok(e.token), e.int));
    }
    fn value(&mut self, v: &Value<'_>) {
        self.events
            .push(Ev::Value(v.kind, v.len, tok(v.head), v.last_int));
    }
}

/// Values only (the summary the proxy cares about), plus whether the scanner went opaque.
fn values(dir: Direction, input: &[u8]) -> (Vec<Ev>, bool) {
    let (events, opaque) = scan_chunks(dir, &[input]);
    (
        events
            .into_iter()
            .filter(|e| matches!(e, Ev::Value(..)))
            .collect(),
        opaque,
    )
}

fn scan_chunks(dir: Direction, chunks: &[&[u8]]) -> (Vec<Ev>, bool) {
    let mut s = Scanner::new(dir);
    let mut r = Rec::default();
    for c in chunks {
        s.feed(c, &mut r);
    }
    (r.events, s.is_opaque())
}

fn v(kind: Kind, len: u64, head: Option<&str>, int: Option<i64>) -> Ev {
    Ev::Value(kind, len, head.map(str::to_owned), int)
}

#[test]
fn server_types_table() {
    use Kind::*;
    let table: &[(&[u8], Ev)] = &[
        (b"+OK\r\n", v(Simple, 0, Some("OK"), None)),
        (b"+queued\r\n", v(Simple, 0, Some("QUEUED"), None)),
        (b"+\r\n", v(Simple, 0, Some(""), None)),
        (
            b"-WRONGTYPE Operation against a key\r\n",
            v(Error, 0, Some("WRONGTYPE"), None),
        ),
        (
            b"-MOVED 3999 127.0.0.1:6381\r\n",
            v(Error, 0, Some("MOVED"), None),
        ),
        (b"-ERR\r\n", v(Error, 0, Some("ERR"), None)),
        (b":0\r\n", v(Integer, 0, None, Some(0))),
        (b":-42\r\n", v(Integer, 0, None, Some(-42))),
        (
            b":9223372036854775807\r\n",
            v(Integer, 0, None, Some(i64::MAX)),
        ),
        (
            b":-9223372036854775808\r\n",
            v(Integer, 0, None, Some(i64::MIN)),
        ),
        (b"$3\r\nbar\r\n", v(Bulk, 3, None, None)),
        (b"$0\r\n\r\n", v(Bulk, 0, None, None)),
        (b"$4\r\na\r\nb\r\n", v(Bulk, 4, None, None)),
        (b"$-1\r\n", v(Null, 0, None, None)),
        (b"*-1\r\n", v(Null, 0, None, None)),
        (b"_\r\n", v(Null, 0, None, None)),
        (b"*0\r\n", v(Array, 0, None, None)),
        (
            b"*2\r\n$3\r\nfoo\r\n:7\r\n",
            v(Array, 2, Some("FOO"), Some(7)),
        ),
        (b",3.14\r\n", v(Double, 0, None, None)),
        (b",-inf\r\n", v(Double, 0, None, None)),
        (b",nan\r\n", v(Double, 0, None, None)),
        (b",1.5e-10\r\n", v(Double, 0, None, None)),
        (b"#t\r\n", v(Boolean, 0, None, None)),
        (b"#f\r\n", v(Boolean, 0, None, None)),
        (
            b"!21\r\nSYNTAX invalid syntax\r\n",
            v(BlobError, 21, Some("SYNTAX"), None),
        ),
        (b"=15\r\ntxt:Some string\r\n", v(Verbatim, 15, None, None)),
        (
            b"(3492890328409238509324850943850943825024385\r\n",
            v(BigNumber, 0, None, None),
        ),
        (b"(-12\r\n", v(BigNumber, 0, None, None)),
        (
            b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n",
            v(Map, 2, Some("FIRST"), Some(2)),
        ),
        (b"%0\r\n", v(Map, 0, None, None)),
        (b"~3\r\n+a\r\n+b\r\n+c\r\n", v(Set, 3, Some("A"), None)),
        (
            b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n",
            v(Push, 3, Some("MESSAGE"), None),
        ),
        (
            b">2\r\n$10\r\ninvalidate\r\n*1\r\n$3\r\nkey\r\n",
            v(Push, 2, Some("INVALIDATE"), None),
        ),
        // An attribute precedes the reply and is not a value itself.
        (
            b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*2\r\n:2039123\r\n:9543892\r\n",
            v(Array, 2, None, Some(9543892)),
        ),
        (b"|0\r\n+OK\r\n", v(Simple, 0, Some("OK"), None)),
        // An attribute inside an aggregate does not count as an element.
        (
            b"*2\r\n|1\r\n+ttl\r\n:3600\r\n$1\r\nx\r\n:5\r\n",
            v(Array, 2, Some("X"), Some(5)),
        ),
        // Elements of nested aggregates are not top-level elements.
        (b"*2\r\n*1\r\n:9\r\n:1\r\n", v(Array, 2, None, Some(1))),
    ];
    for (input, want) in table {
        let (got, opaque) = values(Direction::Server, input);
        assert!(!opaque, "{:?} went opaque", String::from_utf8_lossy(input));
        assert_eq!(
            got,
            vec![want.clone()],
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn element_events() {
    let (events, opaque) = scan_chunks(
        Direction::Server,
        &[b"*4\r\n+OK\r\n-ERR no\r\n*1\r\n:1\r\n_\r\n"],
    );
    assert!(!opaque);
    assert_eq!(
        events,
        vec![
            Ev::Begin(Kind::Array),
            Ev::Elem(0, Kind::Simple, Some("OK".into()), None),
            Ev::Elem(1, Kind::Error, Some("ERR".into()), None),
            Ev::Elem(2, Kind::Array, None, None),
            Ev::Elem(3, Kind::Null, None, None),
            Ev::Value(Kind::Array, 4, Some("OK".into()), None),
        ]
    );
}

#[test]
fn nested_resp3() {
    // A map of arrays of sets, with attributes sprinkled in, followed by a second reply.
    let input =
        b"%2\r\n$1\r\na\r\n*2\r\n~2\r\n:1\r\n#t\r\n|1\r\n+x\r\n+y\r\n~1\r\n%1\r\n_\r\n,1\r\n\
$1\r\nb\r\n>1\r\n=7\r\ntxt:abc\r\n+OK\r\n";
    let (got, opaque) = values(Direction::Server, input);
    assert!(!opaque);
    assert_eq!(
        got,
        vec![
            v(Kind::Map, 2, Some("A"), None),
            v(Kind::Simple, 0, Some("OK"), None)
        ]
    );
}

#[test]
fn client_commands_table() {
    use Kind::*;
    let table: &[(&[u8], Vec<Ev>)] = &[
        (
            b"*3\r\n$3\r\nset\r\n$3\r\nkey\r\n$3\r\nval\r\n",
            vec![v(Array, 3, Some("SET"), None)],
        ),
        (
            b"*1\r\n$4\r\nPING\r\n",
            vec![v(Array, 1, Some("PING"), None)],
        ),
        (b"PING\r\n", vec![v(Inline, 1, Some("PING"), None)]),
        (b"set  k \t v\n", vec![v(Inline, 3, Some("SET"), None)]),
        (
            b"\r\n\n  \r\nping\r\n",
            vec![v(Inline, 1, Some("PING"), None)],
        ),
        (
            b"*0\r\n*-1\r\n*1\r\n$4\r\nQUIT\r\n",
            vec![v(Array, 1, Some("QUIT"), None)],
        ),
        (
            b"*1\r\n$40\r\nabcdefghijabcdefghijabcdefghijabcdefghij\r\n",
            vec![v(
                Array,
                1,
                Some("ABCDEFGHIJABCDEFGHIJABCDEFGHIJAB..."),
                None,
            )],
        ),
        (b"*1\r\n$0\r\n\r\n", vec![v(Array, 1, Some(""), None)]),
    ];
    for (input, want) in table {
        let (got, opaque) = values(Direction::Client, input);
        assert!(!opaque, "{:?} went opaque", String::from_utf8_lossy(input));
        assert_eq!(&got, want, "{:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn malformed_table() {
    let server: &[&[u8]] = &[
        b"?\r\n",
        b"+OK\rX",
        b"+O\nK\r\n",
        b":\r\n",
        b":12a\r\n",
        b":-\r\n",
        b":99999999999999999999\r\n",
        b":9223372036854775808\r\n",
        b"$-2\r\n",
        b"$\r\n",
        b"$3\r\nabcd\r\n",
        b"$3\r\nabc\n",
        b"$536870913\r\n",
        b"*-2\r\n",
        b"*2147483648\r\n",
        b"%-1\r\n",
        b"#x\r\n",
        b"#tt\r\n",
        b"#\r\n",
        b"_x\r\n",
        b",\r\n",
        b",1x\r\n",
        b"(\r\n",
        b"(1.5\r\n",
        b"$?\r\n",
        b"*?\r\n",
        b"!-1\r\n",
    ];
    for input in server {
        let (_, opaque) = values(Direction::Server, input);
        assert!(
            opaque,
            "server {:?} should be opaque",
            String::from_utf8_lossy(input)
        );
    }
    let client: &[&[u8]] = &[
        b"*1\r\n:1\r\n",
        b"*1\r\n*1\r\n$1\r\na\r\n",
        b"*1\r\n$-1\r\n",
        b"*1\r\n+PING\r\n",
        b"*x\r\n",
        b"*1\r\n$4\r\nPING\r\r",
    ];
    for input in client {
        let (_, opaque) = values(Direction::Client, input);
        assert!(
            opaque,
            "client {:?} should be opaque",
            String::from_utf8_lossy(input)
        );
    }
    // Nesting limit: 128 levels are fine, 129 are not.
    let mut ok = b"*1\r\n".repeat(128);
    ok.extend_from_slice(b":1\r\n");
    assert_eq!(values(Direction::Server, &ok).0.len(), 1);
    let mut deep = b"*1\r\n".repeat(129);
    deep.extend_from_slice(b":1\r\n");
    assert!(values(Direction::Server, &deep).1);
    // Inline lines are limited to 64 KB.
    let long = vec![b'a'; 70 * 1024];
    assert!(values(Direction::Client, &long).1);
    // Once opaque, always opaque.
    let mut s = Scanner::new(Direction::Server);
    let mut r = Rec::default();
    assert!(!s.feed(b"?", &mut r));
    assert!(!s.feed(b"+OK\r\n", &mut r));
    assert!(r.events.is_empty());
}

#[test]
fn big_bulk_is_skipped_by_counting() {
    // A 100 MB payload fed in 64 KB chunks: only the header and trailer are parsed.
    let mut s = Scanner::new(Direction::Server);
    let mut r = Rec::default();
    let len = 100 * 1024 * 1024;
    assert!(s.feed(format!("${len}\r\n").as_bytes(), &mut r));
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..len / chunk.len() {
        assert!(s.feed(&chunk, &mut r));
    }
    assert!(r.events.is_empty());
    assert!(s.feed(b"\r\n+OK\r\n", &mut r));
    assert_eq!(r.events.len(), 4);
    assert!(s.at_boundary());
}

// ---------- property tests ----------

#[derive(Clone, Debug)]
enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Null,
    Double(f64),
    Bool(bool),
    BlobError(Vec<u8>),
    Verbatim(Vec<u8>),
    BigNumber(String),
    Array(Vec<Resp>),
    Map(Vec<(Resp, Resp)>),
    Set(Vec<Resp>),
    Push(Vec<Resp>),
    Attr(Vec<(Resp, Resp)>, Box<Resp>),
}

fn encode(r: &Resp, out: &mut Vec<u8>) {
    match r {
        Resp::Simple(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
        Resp::Error(s) => out.extend_from_slice(format!("-{s}\r\n").as_bytes()),
        Resp::Int(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
        Resp::Bulk(b) | Resp::BlobError(b) | Resp::Verbatim(b) => {
            let t = match r {
                Resp::Bulk(_) => '$',
                Resp::BlobError(_) => '!',
                _ => '=',
            };
            out.extend_from_slice(format!("{t}{}\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Resp::Null => out.extend_from_slice(b"_\r\n"),
        Resp::Double(d) => out.extend_from_slice(format!(",{d:e}\r\n").as_bytes()),
        Resp::Bool(b) => out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
        Resp::BigNumber(s) => out.extend_from_slice(format!("({s}\r\n").as_bytes()),
        Resp::Array(xs) | Resp::Set(xs) | Resp::Push(xs) => {
            let t = match r {
                Resp::Array(_) => '*',
                Resp::Set(_) => '~',
                _ => '>',
            };
            out.extend_from_slice(format!("{t}{}\r\n", xs.len()).as_bytes());
            for x in xs {
                encode(x, out);
            }
        }
        Resp::Map(kv) => {
            out.extend_from_slice(format!("%{}\r\n", kv.len()).as_bytes());
            for (k, v) in kv {
                encode(k, out);
                encode(v, out);
            }
        }
        Resp::Attr(kv, v) => {
            out.extend_from_slice(format!("|{}\r\n", kv.len()).as_bytes());
            for (k, x) in kv {
                encode(k, out);
                encode(x, out);
            }
            encode(v, out);
        }
    }
}

fn resp_strategy() -> impl Strategy<Value = Resp> {
    let line = "[a-zA-Z0-9 _:.-]{0,40}";
    let leaf = prop_oneof![
        line.prop_map(Resp::Simple),
        "[A-Z]{1,12}( [a-z ]{0,20})?".prop_map(Resp::Error),
        any::<i64>().prop_map(Resp::Int),
        proptest::collection::vec(any::<u8>(), 0..48).prop_map(Resp::Bulk),
        Just(Resp::Null),
        any::<f64>()
            .prop_filter("finite", |d| d.is_finite())
            .prop_map(Resp::Double),
        any::<bool>().prop_map(Resp::Bool),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(Resp::BlobError),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(|mut b| {
            let mut v = b"txt:".to_vec();
            v.append(&mut b);
            Resp::Verbatim(v)
        }),
        "-?[1-9][0-9]{0,50}".prop_map(Resp::BigNumber),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Resp::Array),
            proptest::collection::vec((inner.clone(), inner.clone()), 0..4).prop_map(Resp::Map),
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Resp::Set),
            proptest::collection::vec(inner.clone(), 1..6).prop_map(Resp::Push),
            (
                proptest::collection::vec((inner.clone(), inner.clone()), 0..3),
                inner
            )
                .prop_map(|(kv, v)| Resp::Attr(kv, Box::new(v))),
        ]
    })
}

fn command_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..6).prop_map(|args| {
            let mut out = format!("*{}\r\n", args.len()).into_bytes();
            for a in args {
                out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                out.extend_from_slice(&a);
                out.extend_from_slice(b"\r\n");
            }
            out
        }),
        1 => "[a-zA-Z]{1,10}( [a-zA-Z0-9]{1,10}){0,3}\r?\n".prop_map(String::into_bytes),
    ]
}

/// Splits `data` at the given sorted cut points.
fn chunked<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    for &c in cuts {
        let c = c.min(data.len());
        if c >= start {
            out.push(&data[start..c]);
            start = c;
        }
    }
    out.push(&data[start..]);
    out
}

fn check_every_split(dir: Direction, data: &[u8]) {
    let whole = scan_chunks(dir, &[data]);
    for cut in 0..=data.len() {
        let split = scan_chunks(dir, &[&data[..cut], &data[cut..]]);
        assert_eq!(split, whole, "split at {cut}");
    }
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    assert_eq!(scan_chunks(dir, &bytes), whole, "byte by byte");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn server_stream_any_split(values in proptest::collection::vec(resp_strategy(), 1..6)) {
        let mut data = Vec::new();
        for v in &values {
            encode(v, &mut data);
        }
        let (events, opaque) = scan_chunks(Direction::Server, &[&data]);
        prop_assert!(!opaque);
        let count = events.iter().filter(|e| matches!(e, Ev::Value(..))).count();
        prop_assert_eq!(count, values.len());
        check_every_split(Direction::Server, &data);
    }

    #[test]
    fn client_stream_any_split(cmds in proptest::collection::vec(command_strategy(), 1..8)) {
        let data: Vec<u8> = cmds.concat();
        let (events, opaque) = scan_chunks(Direction::Client, &[&data]);
        prop_assert!(!opaque);
        let count = events.iter().filter(|e| matches!(e, Ev::Value(..))).count();
        prop_assert_eq!(count, cmds.len());
        check_every_split(Direction::Client, &data);
    }

    #[test]
    fn random_chunkings(
        values in proptest::collection::vec(resp_strategy(), 1..20),
        mut cuts in proptest::collection::vec(0usize..4000, 0..40),
    ) {
        let mut data = Vec::new();
        for v in &values {
            encode(v, &mut data);
        }
        cuts.sort_unstable();
        let whole = scan_chunks(Direction::Server, &[&data]);
        prop_assert_eq!(scan_chunks(Direction::Server, &chunked(&data, &cuts)), whole);
    }

    #[test]
    fn garbage_never_panics_and_is_chunk_invariant(
        data in proptest::collection::vec(any::<u8>(), 0..512),
        mut cuts in proptest::collection::vec(0usize..512, 0..16),
    ) {
        cuts.sort_unstable();
        for dir in [Direction::Client, Direction::Server] {
            let whole = scan_chunks(dir, &[&data]);
            prop_assert_eq!(scan_chunks(dir, &chunked(&data, &cuts)), whole);
        }
    }

    #[test]
    fn resp_like_garbage_never_panics(
        data in proptest::collection::vec(
            prop_oneof![Just(b'*'), Just(b'$'), Just(b'\r'), Just(b'\n'), Just(b'|'), Just(b'%'),
                        Just(b'>'), Just(b'1'), Just(b'0'), Just(b'-'), Just(b'+'), Just(b':'), any::<u8>()],
            0..256),
    ) {
        for dir in [Direction::Client, Direction::Server] {
            let whole = scan_chunks(dir, &[&data]);
            let bytes: Vec<&[u8]> = data.chunks(1).collect();
            prop_assert_eq!(scan_chunks(dir, &bytes), whole);
        }
    }
}
