//! Fuzz target for the Redis observer: arbitrary bytes, split arbitrarily and interleaved
//! between the two directions, must never panic; and each direction's scanner must report the
//! same values whether a stream arrives in those chunks or whole.
//!
//! Input layout: a sequence of records `[tag][len][len bytes]`; bit 0 of `tag` picks the
//! direction (0 = client, 1 = server), bit 1 advances the clock.
//!
//! Run with `cargo +nightly fuzz run resp` from `crates/proxy` (needs cargo-fuzz), or build it
//! with nightly's sanitizer-coverage flags for `--target x86_64-unknown-linux-gnu` directly.

#![no_main]

use ferry_proxy::redis::{Direction, RedisObserver, Scanner, Value, Visitor};
use libfuzzer_sys::fuzz_target;

/// Counts values and remembers their kinds and lengths.
#[derive(Default, PartialEq, Eq, Debug)]
struct Summary(Vec<(u8, u64)>);

impl Visitor for Summary {
    fn value(&mut self, v: &Value<'_>) {
        self.0.push((v.kind as u8, v.len));
    }
}

fn scan(dir: Direction, chunks: &[&[u8]]) -> (Summary, bool) {
    let mut s = Scanner::new(dir);
    let mut sum = Summary::default();
    for c in chunks {
        s.feed(c, &mut sum);
    }
    (sum, s.is_opaque())
}

fuzz_target!(|data: &[u8]| {
    let mut obs = RedisObserver::new();
    let mut now = 0u64;
    let mut client: Vec<&[u8]> = Vec::new();
    let mut server: Vec<&[u8]> = Vec::new();
    let mut rest = data;
    while let [tag, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (chunk, next) = tail.split_at(n);
        if tag & 2 != 0 {
            now += 1_000;
        }
        if tag & 1 == 0 {
            obs.client_bytes(chunk, now);
            client.push(chunk);
        } else {
            obs.server_bytes(chunk, now, |done| {
                assert!(done.latency <= now);
            });
            server.push(chunk);
        }
        rest = next;
    }
    let _ = (obs.is_opaque(), obs.malformed(), obs.pending());
    for (dir, chunks) in [(Direction::Client, client), (Direction::Server, server)] {
        let whole: Vec<u8> = chunks.concat();
        assert_eq!(scan(dir, &chunks), scan(dir, &[&whole]));
    }
});
