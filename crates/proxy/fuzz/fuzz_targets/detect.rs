//! Fuzz target for protocol detection: arbitrary first bytes never panic, and a verdict
//! (anything but "need more") on a prefix never changes when more bytes arrive.
//!
//! Run with `cargo +nightly fuzz run detect` from `crates/proxy` (needs cargo-fuzz).

#![no_main]

use ferry_proxy::detect::{Detected, detect};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = detect(data);
    for cut in 0..data.len() {
        if let verdict @ Detected::Protocol(..) = detect(&data[..cut]) {
            // TLS is decided by the record header; its server name needs the whole record.
            if let (Detected::Protocol(p, _), Detected::Protocol(q, _)) = (&verdict, &whole) {
                assert_eq!(p, q, "verdict changed with more bytes");
            }
        }
    }
});
