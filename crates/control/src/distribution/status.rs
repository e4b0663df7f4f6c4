//! Per-proxy bookkeeping (what each connected proxy was sent, ACKed and rejected) for
//! `ferry proxy-status`, and the distribution's Prometheus metrics.

use crate::registry::ProxyIdentity;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// A snapshot a proxy rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nacked {
    /// The rejected version.
    pub version: String,
    /// The proxy's reason.
    pub reason: String,
}

/// One connected proxy, as `ferry proxy-status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyStatus {
    /// Who it said it is.
    pub identity: ProxyIdentity,
    /// Version of the proxy software.
    pub proxy_version: String,
    /// When its stream opened.
    pub connected_since: SystemTime,
    /// The latest version it was sent (or already held when it connected).
    pub last_sent: Option<String>,
    /// The latest version it ACKed.
    pub last_acked: Option<String>,
    /// Its latest rejection; cleared when it ACKs a version after it.
    pub last_nack: Option<Nacked>,
    /// Snapshots pushed on this stream.
    pub pushes: u64,
    /// The identity the proxy proved and how (`spiffe://... (client certificate)`), on the
    /// TLS port; `None` on the plaintext port, where nothing is proven.
    pub authenticated: Option<String>,
}

/// Labels of refused streams.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// Why: `no-credential`, `token`, `client-certificate`, `authenticator-unavailable`,
    /// `identity-mismatch`, `no-authentication`.
    pub reason: String,
}

/// The distribution's metrics (`ferry_control_*`).
#[derive(Debug, Clone)]
pub struct DistributionMetrics {
    /// Proxies with an open stream.
    pub connected: Gauge,
    /// Snapshots pushed.
    pub pushes: Counter,
    /// Time from a configuration change (or a proxy's connection) to its push.
    pub push_latency: Histogram,
    /// Snapshots rejected by proxies.
    pub nacks: Counter,
    /// Streams refused on the TLS port, by reason.
    pub refused: Family<RefusalLabels, Counter>,
}

impl DistributionMetrics {
    /// Creates the metrics and registers them into `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            connected: Gauge::default(),
            pushes: Counter::default(),
            // 1 ms .. ~33 s.
            push_latency: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            nacks: Counter::default(),
            refused: Family::default(),
        };
        registry.register(
            "ferry_control_connected_proxies",
            "Proxies with an open configuration stream",
            metrics.connected.clone(),
        );
        registry.register(
            "ferry_control_pushes",
            "Configuration snapshots pushed to proxies",
            metrics.pushes.clone(),
        );
        registry.register_with_unit(
            "ferry_control_push_latency",
            "Time from a configuration change to its push to a proxy",
            Unit::Seconds,
            metrics.push_latency.clone(),
        );
        registry.register(
            "ferry_control_nacks",
            "Configuration snapshots rejected by proxies",
            metrics.nacks.clone(),
        );
        registry.register(
            "ferry_control_stream_refusals",
            "Configuration streams refused on the TLS port (no proof of identity, or a proxy asking for another identity's configuration), by reason",
            metrics.refused.clone(),
        );
        metrics
    }

    /// Counts a refused stream.
    pub fn refuse(&self, reason: &str) {
        self.refused
            .get_or_create(&RefusalLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Streams refused so far for `reason`.
    pub fn refusals(&self, reason: &str) -> u64 {
        self.refused
            .get_or_create(&RefusalLabels {
                reason: reason.to_string(),
            })
            .get()
    }
}

/// The table of connected proxies.
#[derive(Debug)]
pub(crate) struct Table {
    entries: Mutex<BTreeMap<u64, ProxyStatus>>,
    next: AtomicU64,
    pub(crate) metrics: DistributionMetrics,
}

impl Table {
    pub(crate) fn new(metrics: DistributionMetrics) -> Self {
        Self {
            entries: Mutex::default(),
            next: AtomicU64::new(1),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, ProxyStatus>> {
        // The table holds plain data; a panic elsewhere cannot leave it inconsistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a new stream; the entry goes away when the returned guard drops.
    pub(crate) fn connect(
        self: &Arc<Self>,
        identity: ProxyIdentity,
        proxy_version: String,
        authenticated: Option<String>,
    ) -> Connection {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            ProxyStatus {
                identity,
                proxy_version,
                connected_since: SystemTime::now(),
                last_sent: None,
                last_acked: None,
                last_nack: None,
                pushes: 0,
                authenticated,
            },
        );
        self.metrics.connected.inc();
        Connection {
            table: self.clone(),
            id,
        }
    }

    /// Every connected proxy, by namespace and pod.
    pub(crate) fn all(&self) -> Vec<ProxyStatus> {
        let mut out: Vec<ProxyStatus> = self.lock().values().cloned().collect();
        out.sort_by(|a, b| {
            (&a.identity.namespace, &a.identity.pod, a.connected_since).cmp(&(
                &b.identity.namespace,
                &b.identity.pod,
                b.connected_since,
            ))
        });
        out
    }
}

/// One stream's entry in the table, removed on drop.
#[derive(Debug)]
pub(crate) struct Connection {
    table: Arc<Table>,
    id: u64,
}

impl Connection {
    fn update(&self, f: impl FnOnce(&mut ProxyStatus)) {
        if let Some(entry) = self.table.lock().get_mut(&self.id) {
            f(entry);
        }
    }

    /// The proxy already holds `version`, which is current: nothing is sent.
    pub(crate) fn held(&self, version: &str) {
        self.update(|e| {
            e.last_sent = Some(version.to_string());
            e.last_acked = Some(version.to_string());
        });
    }

    /// `version` was pushed, `latency` after the change that caused it.
    pub(crate) fn pushed(&self, version: &str, latency: Duration) {
        self.update(|e| {
            e.last_sent = Some(version.to_string());
            e.pushes += 1;
        });
        self.table.metrics.pushes.inc();
        self.table
            .metrics
            .push_latency
            .observe(latency.as_secs_f64());
    }

    /// The proxy ACKed `version`.
    pub(crate) fn acked(&self, version: String) {
        self.update(|e| {
            if e.last_nack.as_ref().is_some_and(|n| n.version != version) {
                e.last_nack = None;
            }
            e.last_acked = Some(version);
        });
    }

    /// The proxy rejected `version`.
    pub(crate) fn nacked(&self, version: String, reason: String) {
        self.update(|e| e.last_nack = Some(Nacked { version, reason }));
        self.table.metrics.nacks.inc();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.table.lock().remove(&self.id);
        self.table.metrics.connected.dec();
    }
}
