//! Redis-aware telemetry on a forwarded connection: the RESP observer fed with every chunk,
//! completed commands recorded as `ferry_redis_commands_total` and latency histograms, and,
//! when tracing has Redis spans on, a sampled span per command (RESP carries no trace
//! context, so each is the root of a new trace; command name and argument count only, plus
//! the literal and environment custom tags of the span's kind).

use crate::redis::RedisObserver;
use crate::telemetry::Metrics;
use crate::telemetry::labels::TcpLabels;
use crate::telemetry::metrics::RedisRecorder;
use crate::trace::{Active, RedisSpan, SpanKind};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Who is on each side of a traced Redis connection.
#[derive(Debug, Clone, Default)]
pub struct RedisParties {
    /// Client (outbound sidecar) or server (inbound sidecar) spans.
    pub kind: Option<SpanKind>,
    /// Calling workload.
    pub source_workload: String,
    /// Calling pod.
    pub source_pod: String,
    /// Called workload.
    pub destination_workload: String,
    /// Called pod (`redis-1`).
    pub destination_pod: String,
    /// The Redis server's address.
    pub peer_address: String,
}

#[derive(Debug)]
struct Traced {
    active: Arc<Active>,
    parties: RedisParties,
    /// Wall-clock time of the tap's epoch.
    wall: SystemTime,
}

/// The Redis telemetry of one connection.
#[derive(Debug)]
pub struct RedisTap {
    observer: RedisObserver,
    recorder: RedisRecorder,
    epoch: Instant,
    traced: Option<Box<Traced>>,
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
            traced: None,
        }
    }

    /// Records a span per sampled command with `active`'s tracer (when it has Redis spans
    /// on and reports this side's span kind, Istio's `match.mode`).
    pub fn traced(mut self, active: Option<Arc<Active>>, parties: RedisParties) -> Self {
        let kind = parties.kind.unwrap_or(SpanKind::Client);
        self.traced = active
            .filter(|a| a.tracer.redis_spans() && a.modes.reports(kind))
            .map(|active| {
                Box::new(Traced {
                    active,
                    parties,
                    wall: SystemTime::now(),
                })
            });
        self
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
        let traced = self.traced.as_deref();
        self.observer.server_bytes(data, now, |done| {
            let latency = (!done.blocking).then(|| done.latency as f64 / 1e6);
            recorder.record(done.command.name(), done.outcome.label(), latency);
            if let Some(t) = traced
                && let Some(ctx) = t.active.tracer.redis_root()
            {
                let p = &t.parties;
                let start = t.wall + Duration::from_nanos(done.sent);
                let end = start + Duration::from_nanos(done.latency);
                let error = match done.outcome {
                    crate::redis::tracker::Outcome::Ok => None,
                    _ => Some(
                        done.error
                            .and_then(|e| std::str::from_utf8(e).ok())
                            .unwrap_or(done.outcome.label()),
                    ),
                };
                let facts = RedisSpan {
                    command: done.command.name(),
                    arg_count: done.args,
                    source_workload: &p.source_workload,
                    source_pod: &p.source_pod,
                    destination_workload: &p.destination_workload,
                    destination_pod: &p.destination_pod,
                    peer_address: &p.peer_address,
                    error,
                };
                let kind = p.kind.unwrap_or(SpanKind::Client);
                let me = &t.active.me;
                let mut span = facts.to_span(&ctx, kind, me, start, end);
                span.attr("k8s.pod.name", me.pod.clone())
                    .attr("k8s.namespace.name", me.namespace.clone());
                // Literal and environment custom tags (RESP has no headers).
                t.active.tags.of(kind).apply(&mut span, Vec::new());
                t.active.tracer.record(span);
            }
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
