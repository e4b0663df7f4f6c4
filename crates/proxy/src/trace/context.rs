//! Trace context propagation: W3C `traceparent`/`tracestate`, B3 (multi-header and the single
//! `b3` header), `x-request-id`, and the sampling decision.
//!
//! Everything here is pure and allocation-light: ids are fixed-size arrays, header names are
//! constants (never parsed per request), parsing works on the header bytes in place, and the
//! values written ([`propagate`]) share one buffer, so a request costs one allocation for its
//! context and request id whether or not it is sampled. The OpenTelemetry SDK propagators were not used on purpose: they go through
//! `opentelemetry::Context` (an `Arc`-backed type map) and a `TraceState` deque per request,
//! and B3 lives in `opentelemetry-zipkin`, which brings an HTTP client with it. A sidecar parses
//! these headers on every request, so a small parser is cheaper and easier to harden.
//!
//! Precedence on extraction follows Envoy with both propagators on: W3C first, then the single
//! `b3` header, then the B3 multi-headers. Injection writes both W3C and B3 multi-headers (what
//! Istio's sidecars emit), and rewrites a single `b3` header only when one was present.

use bytes::{BufMut, Bytes, BytesMut};
use hyper::http::{HeaderMap, HeaderName, HeaderValue};
use std::fmt;

/// `traceparent` (W3C Trace Context).
pub const TRACEPARENT: &str = "traceparent";
/// `tracestate` (W3C Trace Context).
pub const TRACESTATE: &str = "tracestate";
/// `b3`, the single-header B3 form.
pub const B3: &str = "b3";
/// `x-b3-traceid`.
pub const X_B3_TRACEID: &str = "x-b3-traceid";
/// `x-b3-spanid`.
pub const X_B3_SPANID: &str = "x-b3-spanid";
/// `x-b3-parentspanid`.
pub const X_B3_PARENTSPANID: &str = "x-b3-parentspanid";
/// `x-b3-sampled`.
pub const X_B3_SAMPLED: &str = "x-b3-sampled";
/// `x-b3-flags` (`1` means debug).
pub const X_B3_FLAGS: &str = "x-b3-flags";
/// `x-request-id`, Envoy's request UUID.
pub const X_REQUEST_ID: &str = "x-request-id";

// The names as `HeaderName`s: a lookup by `&str` parses and validates the name every time.
const H_TRACEPARENT: HeaderName = HeaderName::from_static(TRACEPARENT);
const H_TRACESTATE: HeaderName = HeaderName::from_static(TRACESTATE);
const H_B3: HeaderName = HeaderName::from_static(B3);
const H_X_B3_TRACEID: HeaderName = HeaderName::from_static(X_B3_TRACEID);
const H_X_B3_SPANID: HeaderName = HeaderName::from_static(X_B3_SPANID);
const H_X_B3_PARENTSPANID: HeaderName = HeaderName::from_static(X_B3_PARENTSPANID);
const H_X_B3_SAMPLED: HeaderName = HeaderName::from_static(X_B3_SAMPLED);
const H_X_B3_FLAGS: HeaderName = HeaderName::from_static(X_B3_FLAGS);
const H_X_REQUEST_ID: HeaderName = HeaderName::from_static(X_REQUEST_ID);

/// Longest `tracestate` value passed on (the W3C limit is 32 members of at most 256 bytes;
/// longer values are dropped rather than truncated mid-member).
const MAX_TRACESTATE: usize = 8192;

/// A 128-bit trace id; never all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// A 64-bit span id; never all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// A fresh random, non-zero trace id.
    pub fn random() -> Self {
        loop {
            let v = fastrand::u128(..);
            if v != 0 {
                return Self(v.to_be_bytes());
            }
        }
    }
    /// Lower-case hex (32 characters).
    pub fn to_hex(&self) -> String {
        hex_string(&self.0)
    }
    /// True when every byte is zero (invalid on the wire).
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl SpanId {
    /// A fresh random, non-zero span id.
    pub fn random() -> Self {
        loop {
            let v = fastrand::u64(..);
            if v != 0 {
                return Self(v.to_be_bytes());
            }
        }
    }
    /// Lower-case hex (16 characters).
    pub fn to_hex(&self) -> String {
        hex_string(&self.0)
    }
    /// True when every byte is zero (invalid on the wire).
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 8]
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The trace context of one span as carried on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace this span belongs to.
    pub trace_id: TraceId,
    /// This span's id (on extraction: the caller's span, which becomes our parent).
    pub span_id: SpanId,
    /// The parent of `span_id`, when known (B3 carries it; W3C does not).
    pub parent_span_id: Option<SpanId>,
    /// Whether the trace is sampled (recorded and exported).
    pub sampled: bool,
    /// B3 debug (`x-b3-flags: 1` or `b3: ...-d`): sampled regardless of rate.
    pub debug: bool,
    /// The W3C `tracestate` to pass on unchanged, when one came in.
    pub tracestate: Option<HeaderValue>,
}

/// What an incoming request carried: a parent context, or only a sampling decision (B3 allows
/// `b3: 0` or a lone `x-b3-sampled`), or nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extracted {
    /// The caller's context, when a valid one was present.
    pub parent: Option<TraceContext>,
    /// The caller's sampling decision, with or without a context (`Some(false)` for `b3: 0`);
    /// `None` when deferred (B3 ids without a sampling state) or absent.
    pub sampled: Option<bool>,
    /// Debug requested (`b3: ...-d`, `x-b3-flags: 1`): always sampled.
    pub debug: bool,
}

/// Decides whether a new trace is sampled: the configured percentage, with a cheap
/// thread-local generator (wyrand, via `fastrand`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampler {
    /// Out of 1_000_000 (so 0.0001% resolution), clamped to 0..=1_000_000.
    threshold: u32,
}

impl Sampler {
    /// A sampler for `percentage` (0.0–100.0; out-of-range and NaN values are clamped, NaN to 0).
    pub fn new(percentage: f64) -> Self {
        let p = if percentage.is_nan() {
            0.0
        } else {
            percentage.clamp(0.0, 100.0)
        };
        Self {
            threshold: (p * 10_000.0).round() as u32,
        }
    }
    /// One decision for a trace that starts here.
    pub fn sample(&self) -> bool {
        match self.threshold {
            0 => false,
            t if t >= 1_000_000 => true,
            t => fastrand::u32(..1_000_000) < t,
        }
    }
    /// Honours the incoming decision (debug implies sampled); samples at the rate otherwise.
    pub fn decide(&self, incoming: &Extracted) -> bool {
        if incoming.debug {
            return true;
        }
        match incoming.sampled {
            Some(s) => s,
            None => self.sample(),
        }
    }
    /// The context of a new span this proxy starts: a child of the incoming context when there
    /// is one, else the root of a new trace. The sampling decision is `decide`'s.
    pub fn child_of(&self, incoming: &Extracted) -> TraceContext {
        let sampled = self.decide(incoming);
        match &incoming.parent {
            Some(p) => TraceContext {
                trace_id: p.trace_id,
                span_id: SpanId::random(),
                parent_span_id: Some(p.span_id),
                sampled,
                debug: p.debug,
                tracestate: p.tracestate.clone(),
            },
            None => TraceContext {
                trace_id: TraceId::random(),
                span_id: SpanId::random(),
                parent_span_id: None,
                sampled,
                debug: incoming.debug,
                tracestate: None,
            },
        }
    }
}

/// Reads the incoming trace context: W3C, then single `b3`, then B3 multi-headers. Malformed
/// headers are ignored (as if absent), never an error.
pub fn extract(headers: &HeaderMap) -> Extracted {
    let present = Present::scan(headers);
    if present.has(Present::TRACEPARENT)
        && let Some(ctx) = headers
            .get(&H_TRACEPARENT)
            .and_then(|v| parse_traceparent(v.as_bytes()))
    {
        let tracestate = if present.has(Present::TRACESTATE) {
            tracestate_of(headers)
        } else {
            None
        };
        return Extracted {
            sampled: Some(ctx.sampled),
            parent: Some(TraceContext { tracestate, ..ctx }),
            debug: false,
        };
    }
    if present.has(Present::B3)
        && let Some(e) = headers
            .get(&H_B3)
            .and_then(|v| parse_b3_single(v.as_bytes()))
    {
        return e;
    }
    if present.any(Present::B3_MULTI) {
        parse_b3_multi(headers)
    } else {
        Extracted::default()
    }
}

/// Which of the trace headers a request carries, from one pass over its header names: a
/// request usually has a handful of headers, so this costs less than looking each trace
/// header up (a hash of its name per lookup), and most requests carry few or none of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Present(u16);

impl Present {
    const TRACEPARENT: u16 = 1 << 0;
    const TRACESTATE: u16 = 1 << 1;
    const B3: u16 = 1 << 2;
    const X_B3_TRACEID: u16 = 1 << 3;
    const X_B3_SPANID: u16 = 1 << 4;
    const X_B3_PARENTSPANID: u16 = 1 << 5;
    const X_B3_SAMPLED: u16 = 1 << 6;
    const X_B3_FLAGS: u16 = 1 << 7;
    const X_REQUEST_ID: u16 = 1 << 8;
    const B3_MULTI: u16 = Self::X_B3_TRACEID
        | Self::X_B3_SPANID
        | Self::X_B3_PARENTSPANID
        | Self::X_B3_SAMPLED
        | Self::X_B3_FLAGS;

    fn scan(headers: &HeaderMap) -> Self {
        let mut bits = 0;
        for name in headers.keys() {
            bits |= match name.as_str() {
                TRACEPARENT => Self::TRACEPARENT,
                TRACESTATE => Self::TRACESTATE,
                B3 => Self::B3,
                X_B3_TRACEID => Self::X_B3_TRACEID,
                X_B3_SPANID => Self::X_B3_SPANID,
                X_B3_PARENTSPANID => Self::X_B3_PARENTSPANID,
                X_B3_SAMPLED => Self::X_B3_SAMPLED,
                X_B3_FLAGS => Self::X_B3_FLAGS,
                X_REQUEST_ID => Self::X_REQUEST_ID,
                _ => 0,
            };
        }
        Present(bits)
    }

    fn has(self, bit: u16) -> bool {
        self.0 & bit == bit
    }

    fn any(self, bits: u16) -> bool {
        self.0 & bits != 0
    }
}

/// Writes `ctx` as W3C and B3 multi-headers (replacing any there), and as a single `b3` header
/// when the request already had one.
pub fn inject(ctx: &TraceContext, headers: &mut HeaderMap) {
    write_headers(ctx, headers, false);
}

/// What a proxy writes on a request it forwards: `ctx` as [`inject`] writes it, and a fresh
/// `x-request-id` when the request has none (or an empty one). All values share one buffer
/// (one allocation), and the map grows at most once.
pub fn propagate(ctx: &TraceContext, headers: &mut HeaderMap) {
    write_headers(ctx, headers, true);
}

/// Longest value text [`write_headers`] writes: traceparent, B3 trace, span and parent ids,
/// single `b3`, request id.
const MAX_WRITTEN: usize = 55 + 32 + 16 + 16 + 68 + 36;

fn write_headers(ctx: &TraceContext, headers: &mut HeaderMap, request_id: bool) {
    let trace = hex_bytes::<32>(&ctx.trace_id.0);
    let span = hex_bytes::<16>(&ctx.span_id.0);
    let parent = ctx.parent_span_id.map(|p| hex_bytes::<16>(&p.0));
    let sampled = ctx.sampled || ctx.debug;
    let present = Present::scan(headers);
    let single = present.has(Present::B3);
    let add_id = request_id
        && (!present.has(Present::X_REQUEST_ID)
            || headers.get(&H_X_REQUEST_ID).is_none_or(|v| v.is_empty()));
    // The names this adds; growing once beats growing per insert (a full map only misses the
    // headroom, the inserts below still work).
    let new_names = [
        (Present::TRACEPARENT, true),
        (Present::TRACESTATE, ctx.tracestate.is_some()),
        (Present::X_B3_TRACEID, true),
        (Present::X_B3_SPANID, true),
        (Present::X_B3_PARENTSPANID, parent.is_some()),
        (Present::X_B3_FLAGS, ctx.debug),
        (Present::X_B3_SAMPLED, !ctx.debug),
        (Present::X_REQUEST_ID, add_id),
    ]
    .iter()
    .filter(|(bit, written)| *written && !present.has(*bit))
    .count();
    let _ = headers.try_reserve(new_names);

    // One buffer, cut into the values: `split_to` hands out parts of the same allocation.
    let mut buf = BytesMut::with_capacity(MAX_WRITTEN);
    // traceparent: 00-<32>-<16>-<2>
    buf.put_slice(b"00-");
    buf.put_slice(&trace);
    buf.put_u8(b'-');
    buf.put_slice(&span);
    buf.put_slice(if sampled { b"-01" } else { b"-00" });
    let traceparent = buf.split().freeze();
    buf.put_slice(&trace);
    let b3_trace = buf.split().freeze();
    buf.put_slice(&span);
    let b3_span = buf.split().freeze();
    let b3_parent = parent.map(|p| {
        buf.put_slice(&p);
        buf.split().freeze()
    });
    let b3_single = single.then(|| {
        // {trace}-{span}-{state}[-{parent}]
        buf.put_slice(&trace);
        buf.put_u8(b'-');
        buf.put_slice(&span);
        buf.put_u8(b'-');
        buf.put_u8(if ctx.debug {
            b'd'
        } else if sampled {
            b'1'
        } else {
            b'0'
        });
        if let Some(p) = &parent {
            buf.put_u8(b'-');
            buf.put_slice(p);
        }
        buf.split().freeze()
    });
    let uuid = add_id.then(|| {
        buf.put_slice(&uuid_v4());
        buf.split().freeze()
    });

    headers.insert(H_TRACEPARENT, shared(traceparent));
    match &ctx.tracestate {
        Some(ts) => {
            headers.insert(H_TRACESTATE, ts.clone());
        }
        None if present.has(Present::TRACESTATE) => {
            headers.remove(&H_TRACESTATE);
        }
        None => {}
    }
    headers.insert(H_X_B3_TRACEID, shared(b3_trace));
    headers.insert(H_X_B3_SPANID, shared(b3_span));
    match b3_parent {
        Some(p) => {
            headers.insert(H_X_B3_PARENTSPANID, shared(p));
        }
        None if present.has(Present::X_B3_PARENTSPANID) => {
            headers.remove(&H_X_B3_PARENTSPANID);
        }
        None => {}
    }
    if ctx.debug {
        // Debug implies accept; the B3 spec says not to send x-b3-sampled with it.
        headers.insert(H_X_B3_FLAGS, HeaderValue::from_static("1"));
        if present.has(Present::X_B3_SAMPLED) {
            headers.remove(&H_X_B3_SAMPLED);
        }
    } else {
        if present.has(Present::X_B3_FLAGS) {
            headers.remove(&H_X_B3_FLAGS);
        }
        headers.insert(
            H_X_B3_SAMPLED,
            HeaderValue::from_static(if sampled { "1" } else { "0" }),
        );
    }
    if let Some(b) = b3_single {
        headers.insert(H_B3, shared(b));
    }
    if let Some(id) = uuid {
        headers.insert(H_X_REQUEST_ID, shared(id));
    }
}

/// Returns the request's `x-request-id`, adding a fresh UUID v4 one when it is absent or empty.
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&H_X_REQUEST_ID)
        && !v.is_empty()
    {
        return v.clone();
    }
    let id = value(&uuid_v4());
    headers.insert(H_X_REQUEST_ID, id.clone());
    id
}

/// A random UUID version 4, hyphenated lower-case hex (36 bytes).
pub fn uuid_v4() -> [u8; 36] {
    let mut b = fastrand::u128(..).to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let hex = hex_bytes::<32>(&b);
    let mut out = [0u8; 36];
    let mut o = 0;
    for (i, c) in hex.iter().enumerate() {
        if matches!(i, 8 | 12 | 16 | 20) {
            out[o] = b'-';
            o += 1;
        }
        out[o] = *c;
        o += 1;
    }
    out
}

/// Parses a `traceparent` value. Version `00` must be exactly 55 bytes; a higher version is
/// parsed for its first four fields and may carry more after a `-` (W3C forward compatibility);
/// version `ff`, upper-case hex and all-zero ids are rejected.
pub fn parse_traceparent(v: &[u8]) -> Option<TraceContext> {
    let v = trim(v);
    if v.len() < 55 {
        return None;
    }
    let version = decode_hex::<1>(&v[0..2], false)?[0];
    if version == 0xff {
        return None;
    }
    if version == 0 && v.len() != 55 {
        return None;
    }
    if v.len() > 55 && v[55] != b'-' {
        return None;
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let trace_id = TraceId(decode_hex::<16>(&v[3..35], false)?);
    let span_id = SpanId(decode_hex::<8>(&v[36..52], false)?);
    let flags = decode_hex::<1>(&v[53..55], false)?[0];
    if trace_id.is_zero() || span_id.is_zero() {
        return None;
    }
    Some(TraceContext {
        trace_id,
        span_id,
        parent_span_id: None,
        sampled: flags & 1 == 1,
        debug: false,
        tracestate: None,
    })
}

/// The `tracestate` to pass on: several header lines are joined with `,` (as HTTP allows);
/// non-visible-ASCII or oversized values are dropped.
fn tracestate_of(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut it = headers.get_all(&H_TRACESTATE).iter();
    let first = it.next()?;
    let ok = |v: &HeaderValue| {
        v.as_bytes().iter().all(|b| (0x20..0x7f).contains(b)) && v.len() <= MAX_TRACESTATE
    };
    let rest: Vec<&HeaderValue> = it.collect();
    if rest.is_empty() {
        return (ok(first) && !trim(first.as_bytes()).is_empty()).then(|| first.clone());
    }
    let mut joined = Vec::with_capacity(first.len() * (rest.len() + 1));
    for v in std::iter::once(first).chain(rest) {
        if !ok(v) {
            return None;
        }
        let t = trim(v.as_bytes());
        if t.is_empty() {
            continue;
        }
        if !joined.is_empty() {
            joined.push(b',');
        }
        joined.extend_from_slice(t);
    }
    if joined.is_empty() || joined.len() > MAX_TRACESTATE {
        return None;
    }
    HeaderValue::from_bytes(&joined).ok()
}

/// Parses the single `b3` header: `{trace}-{span}[-{state}[-{parent}]]`, or a lone sampling
/// state `0`, `1` or `d`. `None` when malformed.
pub fn parse_b3_single(v: &[u8]) -> Option<Extracted> {
    let v = trim(v);
    if v.len() == 1 {
        let (sampled, debug) = parse_b3_state(v)?;
        return Some(Extracted {
            parent: None,
            sampled: Some(sampled),
            debug,
        });
    }
    let mut parts = v.split(|b| *b == b'-');
    let trace_id = parse_b3_trace_id(parts.next()?)?;
    let span_id = parse_span_id(parts.next()?)?;
    let (sampled, debug, parent) = match parts.next() {
        None => (None, false, None),
        Some(state) => {
            let (s, d) = parse_b3_state(state)?;
            let parent = match parts.next() {
                None => None,
                Some(p) => Some(parse_span_id(p)?),
            };
            (Some(s), d, parent)
        }
    };
    if parts.next().is_some() {
        return None;
    }
    Some(Extracted {
        parent: Some(TraceContext {
            trace_id,
            span_id,
            parent_span_id: parent,
            // An absent state is deferred: `Extracted::sampled` stays `None` and the local
            // rate decides.
            sampled: sampled.unwrap_or(false) || debug,
            debug,
            tracestate: None,
        }),
        sampled,
        debug,
    })
}

/// Parses the B3 multi-headers. A trace id and span id make a context; `x-b3-sampled` or
/// `x-b3-flags` alone carry only a decision. Malformed ids discard the context.
pub fn parse_b3_multi(headers: &HeaderMap) -> Extracted {
    let debug = headers
        .get(&H_X_B3_FLAGS)
        .is_some_and(|v| trim(v.as_bytes()) == b"1");
    let sampled = headers
        .get(&H_X_B3_SAMPLED)
        .and_then(|v| match trim(v.as_bytes()) {
            b"1" | b"true" => Some(true),
            b"0" | b"false" => Some(false),
            _ => None,
        });
    let ids = (|| {
        let trace_id = parse_b3_trace_id(headers.get(&H_X_B3_TRACEID)?.as_bytes())?;
        let span_id = parse_span_id(headers.get(&H_X_B3_SPANID)?.as_bytes())?;
        let parent = match headers.get(&H_X_B3_PARENTSPANID) {
            None => None,
            // A malformed parent is dropped, not fatal: it only decorates the caller's span.
            Some(p) => parse_span_id(p.as_bytes()),
        };
        Some((trace_id, span_id, parent))
    })();
    match ids {
        Some((trace_id, span_id, parent_span_id)) => Extracted {
            parent: Some(TraceContext {
                trace_id,
                span_id,
                parent_span_id,
                sampled: sampled.unwrap_or(false) || debug,
                debug,
                tracestate: None,
            }),
            sampled,
            debug,
        },
        None => Extracted {
            parent: None,
            sampled,
            debug,
        },
    }
}

fn parse_b3_state(v: &[u8]) -> Option<(bool, bool)> {
    match v {
        b"0" => Some((false, false)),
        b"1" => Some((true, false)),
        b"d" => Some((true, true)),
        _ => None,
    }
}

/// A B3 trace id: 16 hex (64-bit, left-padded with zeros) or 32 hex; lenient on case.
fn parse_b3_trace_id(v: &[u8]) -> Option<TraceId> {
    let v = trim(v);
    let id = match v.len() {
        16 => {
            let low = decode_hex::<8>(v, true)?;
            let mut b = [0u8; 16];
            b[8..].copy_from_slice(&low);
            TraceId(b)
        }
        32 => TraceId(decode_hex::<16>(v, true)?),
        _ => return None,
    };
    (!id.is_zero()).then_some(id)
}

fn parse_span_id(v: &[u8]) -> Option<SpanId> {
    let v = trim(v);
    if v.len() != 16 {
        return None;
    }
    let id = SpanId(decode_hex::<8>(v, true)?);
    (!id.is_zero()).then_some(id)
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

fn nibble(c: u8, upper_ok: bool) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' if upper_ok => Some(c - b'A' + 10),
        _ => None,
    }
}

fn decode_hex<const N: usize>(v: &[u8], upper_ok: bool) -> Option<[u8; N]> {
    if v.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(v[2 * i], upper_ok)? << 4) | nibble(v[2 * i + 1], upper_ok)?;
    }
    Some(out)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_bytes<const M: usize>(bytes: &[u8]) -> [u8; M] {
    let mut out = [0u8; M];
    for (i, b) in bytes.iter().enumerate().take(M / 2) {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 0xf) as usize];
    }
    out
}

fn hex_string(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 0xf) as usize] as char);
    }
    s
}

/// Hex and UUID output is always valid header bytes.
fn value(b: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(b).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A value from a part of the shared buffer (hex, `-` and UUIDs: always valid header bytes).
fn shared(b: Bytes) -> HeaderValue {
    HeaderValue::from_maybe_shared(b).unwrap_or_else(|_| HeaderValue::from_static(""))
}
