//! What the data path records while it forwards: Istio's TCP byte counters and, on Redis
//! connections, per-command telemetry. Redis is recognised from the client's first bytes
//! even on ports declared as plain TCP: telemetry only observes, so looking costs nothing and
//! never changes what is forwarded.

use super::redis_tap::RedisTap;
use crate::tcp::forward::Observer;
use crate::telemetry::Metrics;
use crate::telemetry::labels::TcpLabels;
use crate::telemetry::metrics::TcpHandles;
use std::sync::Arc;
use std::time::Instant;

/// Whether a connection gets Redis telemetry.
pub enum Redis {
    /// Not Redis, or telemetry is off.
    Off,
    /// Decided by the client's first bytes.
    Undecided,
    /// Redis: commands are followed.
    On(Box<RedisTap>),
}

/// The observer of one forwarded connection.
pub struct ConnObserver<'a> {
    /// Byte counters of the connection's label set.
    pub tcp: TcpHandles,
    /// Redis telemetry.
    pub redis: Redis,
    /// The registry, for Redis telemetry decided later.
    pub metrics: &'a Arc<Metrics>,
    /// The connection's labels, for Redis telemetry decided later.
    pub labels: &'a TcpLabels,
}

impl ConnObserver<'_> {
    /// The Redis telemetry, when the connection turned out to be Redis.
    pub fn tap(&self) -> Option<&RedisTap> {
        match &self.redis {
            Redis::On(tap) => Some(tap),
            _ => None,
        }
    }
}

/// RESP commands are arrays of bulk strings: `*<count>\r\n$...`.
fn looks_like_resp(data: &[u8]) -> bool {
    data.first() == Some(&b'*') && data.get(1).is_some_and(u8::is_ascii_digit)
}

impl Observer for ConnObserver<'_> {
    fn downstream_bytes(&mut self, data: &[u8], now: Instant) {
        self.tcp.received.inc_by(data.len() as u64);
        if let Redis::Undecided = &self.redis {
            self.redis = if looks_like_resp(data) {
                Redis::On(Box::new(RedisTap::new(self.metrics.clone(), self.labels)))
            } else {
                Redis::Off
            };
        }
        if let Redis::On(r) = &mut self.redis {
            r.client_bytes(data, now);
        }
    }

    fn upstream_bytes(&mut self, data: &[u8], now: Instant) {
        self.tcp.sent.inc_by(data.len() as u64);
        match &mut self.redis {
            Redis::On(r) => r.server_bytes(data, now),
            // A server that speaks first is not Redis.
            Redis::Undecided => self.redis = Redis::Off,
            Redis::Off => {}
        }
    }

    fn quiescent(&self) -> bool {
        // Only Redis knows when no command is in flight.
        self.tap().is_some_and(|r| r.quiescent())
    }
}
