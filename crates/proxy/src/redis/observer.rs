//! The proxy-facing entry point: [`RedisObserver`] watches both directions of one Redis
//! connection, chunk by chunk as the proxy forwards them, and reports each completed command.
//! It never changes, delays or buffers the forwarded bytes.

use super::parser::{Direction, Scanner};
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
