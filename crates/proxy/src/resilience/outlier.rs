//! Outlier detection (passive health checking), as a DestinationRule's `outlierDetection`
//! configures Envoy's: an endpoint is ejected when it returns `consecutive5xxErrors` 5xx in a
//! row (default 5), `consecutiveGatewayErrors` 502/503/504 in a row (off by default), or, with
//! `splitExternalLocalOriginErrors`, `consecutiveLocalOriginFailures` connect failures in a
//! row (otherwise connect failures count as 503s). An ejection lasts `baseEjectionTime` (30 s)
//! times the number of times the endpoint was ejected (at most 300 s, Envoy's
//! `max_ejection_time`); ejected endpoints come back at the first sweep (every `interval`,
//! 10 s) after their time is up, and a healthy endpoint's multiplier decays by one per sweep.
//! At most `maxEjectionPercent` (10%) of a cluster is ejected at once, but always at least one
//! endpoint may be; below `minHealthPercent` healthy endpoints ejections are ignored (Envoy's
//! panic threshold; 0, the default, disables it).
//!
//! Pure state machine over atomics: the caller passes the time in milliseconds.

use ferry_model::istio::destination_rule::OutlierDetection;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// Envoy's `max_ejection_time` default.
const MAX_EJECTION_MS: u64 = 300_000;

/// Milliseconds since the first call (a monotonic clock for ejection times).
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = EPOCH.get_or_init(Instant::now);
    // Offset by one so that 0 never means "now".
    u64::try_from(epoch.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

/// Outlier detection settings with Istio's defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierConfig {
    /// 5xx in a row before ejection; 0 disables.
    pub consecutive_5xx: u32,
    /// 502/503/504 in a row before ejection; 0 disables.
    pub consecutive_gateway: u32,
    /// Count connect failures on their own (`splitExternalLocalOriginErrors`).
    pub split_local_origin: bool,
    /// Local-origin failures in a row before ejection (with `split_local_origin`).
    pub consecutive_local_origin: u32,
    /// Sweep interval, ms.
    pub interval_ms: u64,
    /// Base ejection time, ms.
    pub base_ejection_ms: u64,
    /// Most endpoints ejected at once, percent.
    pub max_ejection_percent: u32,
    /// Below this share of healthy endpoints, ejections are ignored (percent; 0 = never).
    pub min_health_percent: u32,
}

impl OutlierConfig {
    /// The settings of a DestinationRule's `outlierDetection`, with Istio's defaults.
    pub fn from_settings(od: &OutlierDetection) -> OutlierConfig {
        let ms = |d: &Option<ferry_model::Duration>, default: u64| {
            d.as_ref().map_or(default, |d| {
                u64::try_from(d.get().as_millis()).unwrap_or(default)
            })
        };
        let pct = |v: Option<i32>, default: u32| {
            v.and_then(|v| u32::try_from(v).ok())
                .unwrap_or(default)
                .min(100)
        };
        OutlierConfig {
            consecutive_5xx: od.consecutive_5xx_errors.unwrap_or(5),
            consecutive_gateway: od
                .consecutive_gateway_errors
                .or(od.consecutive_errors.and_then(|v| u32::try_from(v).ok()))
                .unwrap_or(0),
            split_local_origin: od.split_external_local_origin_errors == Some(true),
            consecutive_local_origin: od.consecutive_local_origin_failures.unwrap_or(5),
            interval_ms: ms(&od.interval, 10_000).max(1),
            base_ejection_ms: ms(&od.base_ejection_time, 30_000),
            max_ejection_percent: pct(od.max_ejection_percent, 10),
            min_health_percent: pct(od.min_health_percent, 0),
        }
    }
}

/// What happened on one request or connection to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A TCP connection was established (resets local-origin failures; on TCP clusters,
    /// the only success there is).
    Connected,
    /// The connection could not be established, or failed before a response (timeout,
    /// reset): a local-origin failure.
    LocalFailure,
    /// An HTTP response with this status.
    Status(u16),
}

/// One endpoint's health.
#[derive(Debug, Default)]
pub struct HostHealth {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    /// 0 when not ejected, else when the ejection ends (ms, [`now_ms`] clock).
    ejected_until: AtomicU64,
    /// Ejection multiplier.
    ejections: AtomicU32,
}

impl HostHealth {
    /// Whether the endpoint is ejected now.
    pub fn is_ejected(&self) -> bool {
        self.ejected_until.load(Ordering::Relaxed) != 0
    }

    /// How many times in a row the endpoint has been ejected (the ejection multiplier).
    pub fn ejection_count(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }
}

/// The detector of one cluster: its settings and the cluster-wide counts.
#[derive(Debug)]
pub struct Detector {
    /// The settings.
    pub config: OutlierConfig,
    ejected: AtomicU32,
    last_sweep: AtomicU64,
}

impl Detector {
    /// A detector with no endpoint ejected.
    pub fn new(config: OutlierConfig) -> Detector {
        Detector::with_ejected(config, 0)
    }

    /// A detector over endpoints of which `ejected` are ejected already (carried over from
    /// an earlier configuration).
    pub fn with_ejected(config: OutlierConfig, ejected: u32) -> Detector {
        Detector {
            config,
            ejected: AtomicU32::new(ejected),
            last_sweep: AtomicU64::new(0),
        }
    }

    /// Endpoints ejected now.
    pub fn ejected(&self) -> u32 {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Whether ejections are ignored because too few endpoints are healthy.
    pub fn panicking(&self, total: usize) -> bool {
        let min = u64::from(self.config.min_health_percent);
        let healthy = (total as u64).saturating_sub(u64::from(self.ejected()));
        min > 0 && healthy * 100 < total as u64 * min
    }

    /// Records `event` on endpoint `h`, one of a cluster of `total`, at `now`; returns true
    /// when it ejected the endpoint.
    pub fn record(&self, total: usize, h: &HostHealth, event: Event, now: u64) -> bool {
        let c = &self.config;
        let bump = |counter: &AtomicU32, limit: u32| {
            limit > 0 && counter.fetch_add(1, Ordering::Relaxed) + 1 >= limit
        };
        let trip = match event {
            Event::Connected => {
                h.consecutive_local.store(0, Ordering::Relaxed);
                false
            }
            Event::LocalFailure if c.split_local_origin => {
                bump(&h.consecutive_local, c.consecutive_local_origin)
            }
            // Without the split, a failed connection is a 503 from the endpoint.
            Event::LocalFailure => self.status(h, 503),
            Event::Status(code) => self.status(h, code),
        };
        trip && self.eject(total, h, now)
    }

    /// Counts a status; returns whether a threshold was reached.
    fn status(&self, h: &HostHealth, code: u16) -> bool {
        let c = &self.config;
        if !(500..600).contains(&code) {
            h.consecutive_5xx.store(0, Ordering::Relaxed);
            h.consecutive_gateway.store(0, Ordering::Relaxed);
            return false;
        }
        let five = c.consecutive_5xx > 0
            && h.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1 >= c.consecutive_5xx;
        let gateway = if (502..=504).contains(&code) {
            c.consecutive_gateway > 0
                && h.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1
                    >= c.consecutive_gateway
        } else {
            h.consecutive_gateway.store(0, Ordering::Relaxed);
            false
        };
        five || gateway
    }

    fn eject(&self, total: usize, h: &HostHealth, now: u64) -> bool {
        if h.is_ejected() {
            return false;
        }
        let total = total as u64;
        let ejected = u64::from(self.ejected());
        let allowed = ejected == 0
            || (ejected + 1) * 100 <= total * u64::from(self.config.max_ejection_percent);
        if !allowed {
            return false;
        }
        let times = h.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let cap = MAX_EJECTION_MS.max(self.config.base_ejection_ms);
        let duration = self
            .config
            .base_ejection_ms
            .saturating_mul(u64::from(times))
            .min(cap);
        if h.ejected_until
            .compare_exchange(
                0,
                now.saturating_add(duration).max(1),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return false;
        }
        self.ejected.fetch_add(1, Ordering::Relaxed);
        h.consecutive_5xx.store(0, Ordering::Relaxed);
        h.consecutive_gateway.store(0, Ordering::Relaxed);
        h.consecutive_local.store(0, Ordering::Relaxed);
        true
    }

    /// Runs the periodic sweep if an interval has passed since the last one: endpoints
    /// whose ejection is over come back, healthy ones' multipliers decay. Cheap when it is
    /// not time yet (one load).
    pub fn sweep<'a>(&self, hosts: impl IntoIterator<Item = &'a HostHealth>, now: u64) {
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) < self.config.interval_ms
            || self
                .last_sweep
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        for h in hosts {
            let until = h.ejected_until.load(Ordering::Relaxed);
            if until != 0 {
                if now >= until
                    && h.ejected_until
                        .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    self.ejected.fetch_sub(1, Ordering::Relaxed);
                }
            } else if last != 0 {
                let _ = h
                    .ejections
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| m.checked_sub(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::Duration;

    fn detector(od: OutlierDetection) -> Detector {
        Detector::new(OutlierConfig::from_settings(&od))
    }

    fn hosts(n: usize) -> Vec<HostHealth> {
        (0..n).map(|_| HostHealth::default()).collect()
    }

    fn d(s: &str) -> Option<Duration> {
        Duration::parse(s).ok()
    }

    #[test]
    fn defaults_follow_istio() {
        let c = OutlierConfig::from_settings(&OutlierDetection::default());
        assert_eq!(
            c,
            OutlierConfig {
                consecutive_5xx: 5,
                consecutive_gateway: 0,
                split_local_origin: false,
                consecutive_local_origin: 5,
                interval_ms: 10_000,
                base_ejection_ms: 30_000,
                max_ejection_percent: 10,
                min_health_percent: 0,
            }
        );
    }

    #[test]
    fn consecutive_5xx_eject_and_a_success_resets() {
        let det = detector(OutlierDetection {
            consecutive_5xx_errors: Some(3),
            max_ejection_percent: Some(100),
            ..Default::default()
        });
        let h = hosts(2);
        assert!(!det.record(h.len(), &h[0], Event::Status(500), 1));
        assert!(!det.record(h.len(), &h[0], Event::Status(503), 1));
        assert!(!det.record(h.len(), &h[0], Event::Status(200), 1));
        assert!(!det.record(h.len(), &h[0], Event::Status(500), 1));
        assert!(!det.record(h.len(), &h[0], Event::Status(500), 1));
        assert!(det.record(h.len(), &h[0], Event::Status(500), 1));
        assert!(h[0].is_ejected() && !h[1].is_ejected());
        assert_eq!(det.ejected(), 1);
    }

    #[test]
    fn gateway_errors_only_count_502_to_504() {
        let det = detector(OutlierDetection {
            consecutive_5xx_errors: Some(0),
            consecutive_gateway_errors: Some(2),
            max_ejection_percent: Some(100),
            ..Default::default()
        });
        let h = hosts(1);
        assert!(!det.record(h.len(), &h[0], Event::Status(502), 1));
        assert!(!det.record(h.len(), &h[0], Event::Status(500), 1));
        assert!(!det.record(h.len(), &h[0], Event::Status(504), 1));
        assert!(det.record(h.len(), &h[0], Event::Status(503), 1));
    }

    #[test]
    fn connect_failures_count_as_503_unless_split() {
        let plain = detector(OutlierDetection {
            consecutive_5xx_errors: Some(2),
            max_ejection_percent: Some(100),
            ..Default::default()
        });
        let h = hosts(1);
        assert!(!plain.record(h.len(), &h[0], Event::LocalFailure, 1));
        assert!(plain.record(h.len(), &h[0], Event::LocalFailure, 1));

        let split = detector(OutlierDetection {
            split_external_local_origin_errors: Some(true),
            consecutive_local_origin_failures: Some(3),
            max_ejection_percent: Some(100),
            ..Default::default()
        });
        let h = hosts(1);
        assert!(!split.record(h.len(), &h[0], Event::LocalFailure, 1));
        assert!(!split.record(h.len(), &h[0], Event::LocalFailure, 1));
        assert!(!split.record(h.len(), &h[0], Event::Connected, 1));
        assert!(!split.record(h.len(), &h[0], Event::LocalFailure, 1));
        assert!(!split.record(h.len(), &h[0], Event::LocalFailure, 1));
        assert!(split.record(h.len(), &h[0], Event::LocalFailure, 1));
    }

    #[test]
    fn ejection_time_grows_and_hosts_come_back_at_a_sweep() {
        let det = detector(OutlierDetection {
            consecutive_5xx_errors: Some(1),
            interval: d("1s"),
            base_ejection_time: d("10s"),
            max_ejection_percent: Some(100),
            ..Default::default()
        });
        let h = hosts(1);
        let mut now = 1_000;
        det.sweep(&h, now);
        assert!(det.record(h.len(), &h[0], Event::Status(500), now));
        // Back after 10 s, at the first sweep past it.
        now += 9_999;
        det.sweep(&h, now);
        assert!(h[0].is_ejected());
        now += 1_000;
        det.sweep(&h, now);
        assert!(!h[0].is_ejected());
        assert_eq!(det.ejected(), 0);
        // The second ejection lasts twice as long.
        assert!(det.record(h.len(), &h[0], Event::Status(500), now));
        assert_eq!(h[0].ejection_count(), 2);
        let ejected_at = now;
        while h[0].is_ejected() {
            now += 1_000;
            det.sweep(&h, now);
        }
        assert_eq!(now - ejected_at, 20_000);
        // Healthy sweeps decay the multiplier.
        now += 1_000;
        det.sweep(&h, now);
        now += 1_000;
        det.sweep(&h, now);
        assert_eq!(h[0].ejection_count(), 0);
    }

    #[test]
    fn max_ejection_percent_allows_at_least_one() {
        let det = detector(OutlierDetection {
            consecutive_5xx_errors: Some(1),
            max_ejection_percent: Some(10),
            ..Default::default()
        });
        let h = hosts(4);
        assert!(det.record(h.len(), &h[0], Event::Status(500), 1));
        assert!(!det.record(h.len(), &h[1], Event::Status(500), 1));
        assert_eq!(det.ejected(), 1);

        let det = detector(OutlierDetection {
            consecutive_5xx_errors: Some(1),
            max_ejection_percent: Some(50),
            ..Default::default()
        });
        let h = hosts(4);
        assert!(det.record(h.len(), &h[1], Event::Status(500), 1));
        assert!(det.record(h.len(), &h[2], Event::Status(500), 1));
        assert!(!det.record(h.len(), &h[3], Event::Status(500), 1));
    }

    #[test]
    fn min_health_percent_panics() {
        let det = detector(OutlierDetection {
            consecutive_5xx_errors: Some(1),
            max_ejection_percent: Some(100),
            min_health_percent: Some(50),
            ..Default::default()
        });
        let h = hosts(4);
        assert!(det.record(h.len(), &h[0], Event::Status(500), 1));
        assert!(!det.panicking(4));
        assert!(det.record(h.len(), &h[1], Event::Status(500), 1));
        assert!(!det.panicking(4));
        assert!(det.record(h.len(), &h[2], Event::Status(500), 1));
        assert!(det.panicking(4));
    }
}
