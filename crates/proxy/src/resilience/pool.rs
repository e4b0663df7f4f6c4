//! Connection pool limits (a DestinationRule's `connectionPool`, Envoy's circuit breakers):
//! per cluster, at most `tcp.maxConnections` connections, `http.http2MaxRequests` requests in
//! flight, `http.http1MaxPendingRequests` requests waiting for an HTTP/1 connection, and
//! `http.maxRetries` retries in flight. What does not fit overflows: the proxy answers 503
//! (HTTP) or closes the connection (TCP), with `response_flags="UO"`. Istio leaves every
//! limit at 2^32-1 unless set.
//!
//! The counters are atomics taken and released through RAII guards; waiting for an HTTP/1
//! slot uses a tokio semaphore.

use ferry_model::istio::destination_rule::{ConnectionPoolSettings, H2UpgradePolicy};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Istio's "unlimited".
pub const UNLIMITED: u32 = u32::MAX;

/// The limits of one cluster, with Istio's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// TCP connections (and HTTP/1 requests in flight, one per connection).
    pub max_connections: u32,
    /// HTTP requests waiting for a connection.
    pub max_pending: u32,
    /// HTTP requests in flight.
    pub max_requests: u32,
    /// Retries in flight.
    pub max_retries: u32,
    /// Requests per upstream connection (0 = unlimited; 1 disables keep-alive).
    pub max_requests_per_connection: u32,
    /// Upstream connect timeout.
    pub connect_timeout: Option<Duration>,
    /// TCP idle timeout.
    pub idle_timeout: Option<Duration>,
    /// Longest life of a TCP connection.
    pub max_connection_duration: Option<Duration>,
    /// TCP keepalive: (probes, idle time, interval).
    pub keepalive: Option<(Option<u32>, Option<Duration>, Option<Duration>)>,
    /// Send HTTP/1.1 requests upstream as HTTP/2.
    pub h2_upgrade: bool,
    /// How long an idle upstream HTTP connection is kept (`http.idleTimeout`).
    pub http_idle_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: UNLIMITED,
            max_pending: UNLIMITED,
            max_requests: UNLIMITED,
            max_retries: UNLIMITED,
            max_requests_per_connection: 0,
            connect_timeout: None,
            idle_timeout: None,
            max_connection_duration: None,
            keepalive: None,
            h2_upgrade: false,
            http_idle_timeout: None,
        }
    }
}

fn limit(v: Option<i32>) -> u32 {
    match v {
        Some(v) if v > 0 => u32::try_from(v).unwrap_or(UNLIMITED),
        _ => UNLIMITED,
    }
}

impl Limits {
    /// The limits of a `connectionPool` block.
    pub fn from_settings(cp: Option<&ConnectionPoolSettings>) -> Limits {
        let mut l = Limits::default();
        let Some(cp) = cp else {
            return l;
        };
        if let Some(tcp) = &cp.tcp {
            l.max_connections = limit(tcp.max_connections);
            l.connect_timeout = tcp.connect_timeout.as_ref().map(|d| d.get());
            l.idle_timeout = tcp.idle_timeout.as_ref().map(|d| d.get());
            l.max_connection_duration = tcp.max_connection_duration.as_ref().map(|d| d.get());
            l.keepalive = tcp.tcp_keepalive.as_ref().map(|k| {
                (
                    k.probes,
                    k.time.as_ref().map(|d| d.get()),
                    k.interval.as_ref().map(|d| d.get()),
                )
            });
        }
        if let Some(http) = &cp.http {
            l.max_pending = limit(http.http1_max_pending_requests);
            l.max_requests = limit(http.http2_max_requests);
            l.max_retries = limit(http.max_retries);
            l.max_requests_per_connection = http
                .max_requests_per_connection
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0);
            l.h2_upgrade = http.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade);
            l.http_idle_timeout = http.idle_timeout.as_ref().map(|d| d.get());
        }
        l
    }
}

/// A counted slot, released on drop.
#[derive(Debug)]
pub struct Slot(Arc<Pool>, Counter);

#[derive(Debug, Clone, Copy)]
enum Counter {
    Connections,
    Requests,
    Retries,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.counter(self.1).fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a request or connection did not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// The live counts of one cluster against its limits.
#[derive(Debug)]
pub struct Pool {
    /// The limits.
    pub limits: Limits,
    connections: AtomicU32,
    requests: AtomicU32,
    pending: AtomicU32,
    retries: AtomicU32,
    /// HTTP/1 connection slots, when `max_connections` is limited.
    http1: Option<Arc<Semaphore>>,
}

/// An HTTP request's hold on the pool: its request slot, and its HTTP/1 connection slot.
#[derive(Debug)]
pub struct RequestSlot {
    _request: Slot,
    _connection: Option<OwnedSemaphorePermit>,
}

impl Pool {
    /// A pool with nothing in use.
    pub fn new(limits: Limits) -> Arc<Pool> {
        let http1 = (limits.max_connections != UNLIMITED).then(|| {
            Arc::new(Semaphore::new(
                (limits.max_connections as usize).min(Semaphore::MAX_PERMITS),
            ))
        });
        Arc::new(Pool {
            limits,
            connections: AtomicU32::new(0),
            requests: AtomicU32::new(0),
            pending: AtomicU32::new(0),
            retries: AtomicU32::new(0),
            http1,
        })
    }

    fn counter(&self, c: Counter) -> &AtomicU32 {
        match c {
            Counter::Connections => &self.connections,
            Counter::Requests => &self.requests,
            Counter::Retries => &self.retries,
        }
    }

    fn take(self: &Arc<Self>, c: Counter, max: u32) -> Result<Slot, Overflow> {
        let counter = self.counter(c);
        if max == UNLIMITED {
            counter.fetch_add(1, Ordering::Relaxed);
            return Ok(Slot(self.clone(), c));
        }
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| Slot(self.clone(), c))
            .map_err(|_| Overflow)
    }

    /// A TCP connection slot (`maxConnections`).
    pub fn connection(self: &Arc<Self>) -> Result<Slot, Overflow> {
        self.take(Counter::Connections, self.limits.max_connections)
    }

    /// A retry slot (`maxRetries`).
    pub fn retry(self: &Arc<Self>) -> Result<Slot, Overflow> {
        self.take(Counter::Retries, self.limits.max_retries)
    }

    /// Open TCP connections counted.
    pub fn connections(&self) -> u32 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Admits one HTTP request: a request slot (`http2MaxRequests`), and for HTTP/1 one of
    /// `maxConnections` connection slots, waiting for one in the pending queue
    /// (`http1MaxPendingRequests`) when all are busy.
    pub async fn request(self: &Arc<Self>, http1: bool) -> Result<RequestSlot, Overflow> {
        let request = self.take(Counter::Requests, self.limits.max_requests)?;
        let connection = match (&self.http1, http1) {
            (Some(sem), true) => match sem.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    let max = self.limits.max_pending;
                    let queued = self
                        .pending
                        .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                            (max == UNLIMITED || n < max).then_some(n + 1)
                        })
                        .is_ok();
                    if !queued {
                        return Err(Overflow);
                    }
                    let permit = sem.clone().acquire_owned().await;
                    self.pending.fetch_sub(1, Ordering::Relaxed);
                    Some(permit.map_err(|_| Overflow)?)
                }
            },
            _ => None,
        };
        Ok(RequestSlot {
            _request: request,
            _connection: connection,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::istio::destination_rule::{HttpSettings, TcpSettings};

    fn pool(tcp: TcpSettings, http: HttpSettings) -> Arc<Pool> {
        Pool::new(Limits::from_settings(Some(&ConnectionPoolSettings {
            tcp: Some(tcp),
            http: Some(http),
        })))
    }

    #[test]
    fn defaults_are_unlimited() {
        let l = Limits::from_settings(None);
        assert_eq!(l.max_connections, UNLIMITED);
        assert_eq!(l.max_requests, UNLIMITED);
        let p = Pool::new(l);
        let slots: Vec<_> = (0..1000).map(|_| p.connection()).collect();
        assert!(slots.iter().all(Result::is_ok));
        assert_eq!(p.connections(), 1000);
        drop(slots);
        assert_eq!(p.connections(), 0);
    }

    #[test]
    fn max_connections_overflow_and_release() {
        let p = pool(
            TcpSettings {
                max_connections: Some(2),
                ..Default::default()
            },
            HttpSettings::default(),
        );
        let a = p.connection().expect("first");
        let _b = p.connection().expect("second");
        assert_eq!(p.connection().err(), Some(Overflow));
        drop(a);
        assert!(p.connection().is_ok());
    }

    #[tokio::test]
    async fn http1_requests_queue_then_overflow() {
        let p = pool(
            TcpSettings {
                max_connections: Some(1),
                ..Default::default()
            },
            HttpSettings {
                http1_max_pending_requests: Some(1),
                ..Default::default()
            },
        );
        let first = p.request(true).await.expect("a connection");
        // The second waits in the pending queue; the third overflows.
        let p2 = p.clone();
        let waiter = tokio::spawn(async move { p2.request(true).await.map(|_| ()) });
        tokio::task::yield_now().await;
        while p.pending.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(p.request(true).await.err(), Some(Overflow));
        // HTTP/2 requests do not take connection slots.
        assert!(p.request(false).await.is_ok());
        drop(first);
        assert_eq!(waiter.await.ok(), Some(Ok(())));
    }

    #[tokio::test]
    async fn max_requests_and_retries() {
        let p = pool(
            TcpSettings::default(),
            HttpSettings {
                http2_max_requests: Some(1),
                max_retries: Some(1),
                ..Default::default()
            },
        );
        let r = p.request(false).await.expect("one");
        assert_eq!(p.request(false).await.err(), Some(Overflow));
        drop(r);
        let _retry = p.retry().expect("one retry");
        assert!(p.retry().is_err());
    }
}
