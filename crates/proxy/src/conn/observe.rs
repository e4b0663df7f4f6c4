//! What the data path records while it forwards: Istio's TCP byte counters and, on Redis
//! connections, per-command telemetry.

use crate::tcp::forward::Observer;
use crate::telemetry::metrics::TcpHandles;

/// The observer of one forwarded connection.
pub struct ConnObserver {
    /// Byte counters of the connection's label set.
    pub tcp: TcpHandles,
    /// Redis telemetry, on Redis connections.
    pub redis: Option<super::redis_tap::RedisTap>,
}

impl Observer for ConnObserver {
    fn downstream_bytes(&mut self, data: &[u8]) {
        self.tcp.received.inc_by(data.len() as u64);
        if let Some(r) = &mut self.redis {
            r.client_bytes(data);
        }
    }

    fn upstream_bytes(&mut self, data: &[u8]) {
        self.tcp.sent.inc_by(data.len() as u64);
        if let Some(r) = &mut self.redis {
            r.server_bytes(data);
        }
    }

    fn quiescent(&self) -> bool {
        // Only Redis knows when no command is in flight.
        self.redis.as_ref().is_some_and(|r| r.quiescent())
    }
}
