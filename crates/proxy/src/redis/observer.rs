//! The proxy-facing entry point: [`RedisObserver`] watches both directions of one Redis
//! connection, chunk by chunk as the proxy forwards them, and reports each completed command.
//! It never changes, delays or buffers the forwarded bytes.

use super::parser::{Direction, Element, Kind, Scanner, Token, Value, Visitor};
use super::tracker::{CommandDone, DEFAULT_MAX_PENDING, OpaqueReason, Tracker};

/// Redis-aware telemetry state for one proxied connection.
#[derive(Debug)]
pub struct RedisObserver {
    client: Scanner<1>,
    server: Scanner,
    tracker: Tracker,
}

impl Default for RedisObserver {
    fn default() -> Self {
        RedisObserver::new()
    }
}

impl RedisObserver {
    /// An observer at the start of a connection, with the default pending-command cap.
    pub fn new() -> Self {
        RedisObserver::with_max_pending(DEFAULT_MAX_PENDING)
    }

    /// An observer that goes opaque once more than `max_pending` commands await replies.
    pub fn with_max_pending(max_pending: usize) -> Self {
        RedisObserver {
            client: Scanner::with_depth(Direction::Client),
            server: Scanner::new(Direction::Server),
            tracker: Tracker::new(max_pending),
        }
    }

    /// Observes bytes forwarded from the client to the server, read at time `now` (ns).
    pub fn client_bytes(&mut self, bytes: &[u8], now: u64) {
        if self.is_opaque() {
            return;
        }
        let mut side = self.tracker.client_side(now);
        if !self.client.feed(bytes, &mut side) {
            self.tracker.set_opaque(OpaqueReason::ClientMalformed);
        }
    }

    /// Observes bytes forwarded from the server to the client, read at time `now` (ns); calls
    /// `on_done` for every command whose reply completed in them.
    pub fn server_bytes<F: FnMut(&CommandDone<'_>)>(&mut self, bytes: &[u8], now: u64, on_done: F) {
        if self.is_opaque() {
            return;
        }
        let mut side = self.tracker.server_side(now, on_done);
        if !self.server.feed(bytes, &mut side) {
            self.tracker.set_opaque(OpaqueReason::ServerMalformed);
        }
    }

    /// Whether the observer stopped following the protocol (the proxy just counts bytes).
    pub fn is_opaque(&self) -> bool {
        self.tracker.opaque_reason().is_some()
    }

    /// Whether it stopped because of malformed RESP (for the `malformed` counter).
    pub fn malformed(&self) -> bool {
        self.tracker
            .opaque_reason()
            .is_some_and(OpaqueReason::is_malformed)
    }

    /// Why it stopped, if it did.
    pub fn opaque_reason(&self) -> Option<OpaqueReason> {
        self.tracker.opaque_reason()
    }

    /// Commands sent and not yet answered.
    pub fn pending(&self) -> usize {
        self.tracker.pending()
    }

    /// Whether the connection switched to RESP3 (`HELLO 3`).
    pub fn is_resp3(&self) -> bool {
        self.tracker.is_resp3()
    }

    /// Whether the connection is in pub/sub mode.
    pub fn in_pubsub(&self) -> bool {
        self.tracker.in_pubsub()
    }
}

/// Decides, for each server value, whether the telemetry sees it.
pub trait ReplyGate: Visitor {
    /// A top-level value of `kind` starts: whether the telemetry is told about it.
    fn deliver(&mut self, kind: Kind) -> bool;
    /// Whether the value under way (begun in an earlier read) is told about.
    fn delivering(&self) -> bool;
}

/// Tells the telemetry the events of the values the gate lets through, and the gate all.
struct Gated<'a, A, B> {
    a: A,
    b: &'a mut B,
    on: bool,
}

impl<A: Visitor, B: ReplyGate> Visitor for Gated<'_, A, B> {
    #[inline]
    fn begin(&mut self, kind: Kind) {
        self.on = self.b.deliver(kind);
        if self.on {
            self.a.begin(kind);
        }
        self.b.begin(kind);
    }

    #[inline]
    fn wants_token(&self, index: u32) -> bool {
        (self.on && self.a.wants_token(index)) || self.b.wants_token(index)
    }

    #[inline]
    fn element(&mut self, element: &Element<'_>) {
        if self.on {
            self.a.element(element);
        }
        self.b.element(element);
    }

    #[inline]
    fn value(&mut self, value: &Value<'_>) {
        if self.on {
            self.a.value(value);
        }
        self.b.value(value);
    }

    #[inline]
    fn pause(&self) -> bool {
        self.b.pause()
    }
}

/// Tells two visitors every event; pauses when the second one asks.
struct Both<'a, A, B> {
    a: A,
    b: &'a mut B,
}

impl<A: Visitor, B: Visitor> Visitor for Both<'_, A, B> {
    #[inline]
    fn begin(&mut self, kind: Kind) {
        self.a.begin(kind);
        self.b.begin(kind);
    }

    #[inline]
    fn wants_token(&self, index: u32) -> bool {
        self.a.wants_token(index) || self.b.wants_token(index)
    }

    #[inline]
    fn element(&mut self, element: &Element<'_>) {
        self.a.element(element);
        let command = if element.index == 0 {
            self.a.command()
        } else {
            None
        };
        self.b.element_of(element, command);
    }

    #[inline]
    fn value(&mut self, value: &Value<'_>) {
        self.a.value(value);
        self.b.value(value);
    }

    #[inline]
    fn pause(&self) -> bool {
        self.b.pause()
    }
}

impl RedisObserver {
    /// Scans client bytes for telemetry and for `extra` in one pass (a RedisPolicy follows
    /// the same commands), stopping where `extra` pauses: the bytes consumed, or `None` once
    /// the stream is not RESP. Unlike [`RedisObserver::client_bytes`], it scans on after the
    /// telemetry gave up on a mode it cannot follow.
    pub fn scan_client<V: Visitor>(
        &mut self,
        bytes: &[u8],
        now: u64,
        extra: &mut V,
    ) -> Option<usize> {
        let mut both = Both {
            a: self.tracker.client_side(now),
            b: extra,
        };
        let scanned = self.client.scan(bytes, &mut both);
        if scanned.is_none() {
            self.tracker.set_opaque(OpaqueReason::ClientMalformed);
        }
        scanned
    }

    /// [`RedisObserver::scan_client`] for server bytes: `gate` decides which replies the
    /// telemetry sees (not the late replies the client never gets); `on_done` gets the
    /// completed commands.
    pub fn scan_server<V: ReplyGate, F: FnMut(&CommandDone<'_>)>(
        &mut self,
        bytes: &[u8],
        now: u64,
        gate: &mut V,
        on_done: F,
    ) -> Option<usize> {
        let mut gated = Gated {
            a: self.tracker.server_side(now, on_done),
            on: gate.delivering(),
            b: gate,
        };
        let scanned = self.server.scan(bytes, &mut gated);
        if scanned.is_none() {
            self.tracker.set_opaque(OpaqueReason::ServerMalformed);
        }
        scanned
    }

    /// A reply the proxy made up (an error line such as `-ERR injected\r\n`) reached the
    /// client: the telemetry pairs it with its command like a server reply.
    pub fn made_up_reply<F: FnMut(&CommandDone<'_>)>(
        &mut self,
        reply: &[u8],
        now: u64,
        on_done: F,
    ) {
        let line = reply.strip_prefix(b"-").unwrap_or(reply);
        let word_end = line
            .iter()
            .position(|&b| b == b' ' || b == b'\r')
            .unwrap_or(line.len());
        let word = Token::from_bytes(line.get(..word_end).unwrap_or_default());
        let value = Value {
            kind: Kind::Error,
            len: 0,
            head: Some(&word),
            last_int: None,
        };
        self.tracker.server_side(now, on_done).value(&value);
    }

    /// Where the client's command under way (or the last one) starts in the stream, and
    /// whether one is under way.
    pub fn client_command_start(&self) -> (u64, bool) {
        (self.client.value_start(), !self.client.at_boundary())
    }

    /// Whether the server scanner is between replies.
    pub fn server_at_boundary(&self) -> bool {
        self.server.at_boundary()
    }
}
