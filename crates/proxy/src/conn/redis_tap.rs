//! Redis-aware telemetry on a forwarded connection: the RESP observer fed with every chunk,
//! completed commands recorded as `ferry_redis_commands_total` and latency histograms.

use crate::redis::RedisObserver;
use crate::telemetry::Metrics;
use crate::telemetry::labels::TcpLabels;
use crate::telemetry::metrics::RedisRecorder;
use std::sync::Arc;
use std::time::Instant;

/// The Redis telemetry of one connection.
#[derive(Debug)]
pub struct RedisTap {
    observer: RedisObserver,
    recorder: RedisRecorder,
    epoch: Instant,
}

impl RedisTap {
    /// Starts observing a connection with these labels.
    pub fn new(metrics: Arc<Metrics>, labels: &TcpLabels) -> Self {
        Self {
            observer: RedisObserver::new(),
            recorder: RedisRecorder::new(
                metrics,
                labels.peers.clone(),
                labels.connection_security_policy.clone(),
            ),
            epoch: Instant::now(),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Bytes from the client, read at `at`.
    pub fn client_bytes(&mut self, data: &[u8], at: Instant) {
        let now = self.nanos(at);
        self.observer.client_bytes(data, now);
    }

    /// Bytes from the server, read at `at`; records the commands they complete.
    pub fn server_bytes(&mut self, data: &[u8], at: Instant) {
        let now = self.nanos(at);
        let recorder = &mut self.recorder;
        self.observer.server_bytes(data, now, |done| {
            let latency = (!done.blocking).then(|| done.latency as f64 / 1e6);
            recorder.record(done.command.name(), done.outcome.label(), latency);
        });
    }

    /// No command is waiting for its reply (and the protocol is still followed).
    pub fn quiescent(&self) -> bool {
        !self.observer.is_opaque() && self.observer.pending() == 0
    }

    /// Called when the connection ends: counts a fall-back to opaque forwarding.
    pub fn finish(&self, metrics: &Metrics, labels: &TcpLabels) {
        if self.observer.is_opaque() {
            metrics.redis_fallback(labels);
        }
    }
}
