//! Exponential backoff with jitter for reconnecting to the control plane: each delay is
//! drawn between half and all of a ceiling that doubles from `base` up to `max`, so
//! proxies that lost the same control plane do not come back in lockstep.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// First reconnection delay ceiling.
pub const BASE: Duration = Duration::from_millis(100);
/// Largest reconnection delay.
pub const MAX: Duration = Duration::from_secs(15);

/// Reconnection delays.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    ceiling: Duration,
    rng: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(BASE, MAX)
    }
}

impl Backoff {
    /// Delays doubling from `base` to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ (std::process::id() as u64).rotate_left(32)
            ^ (&base as *const Duration as u64);
        Self {
            base,
            max: max.max(base),
            ceiling: base,
            rng: seed | 1,
        }
    }

    /// The next delay (in `[ceiling/2, ceiling]`); the ceiling then doubles.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(self.max);
        let half = ceiling / 2;
        let spread = (ceiling - half).as_nanos() as u64;
        let jitter = if spread == 0 {
            0
        } else {
            self.random() % (spread + 1)
        };
        half + Duration::from_nanos(jitter)
    }

    /// Back to the first delay, after a successful connection.
    pub fn reset(&mut self) {
        self.ceiling = self.base;
    }

    /// xorshift64: plenty for jitter.
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_up_to_the_max_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(15));
        let mut ceiling = Duration::from_millis(100);
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d >= ceiling / 2 && d <= ceiling, "{d:?} vs {ceiling:?}");
            ceiling = (ceiling * 2).min(Duration::from_secs(15));
        }
        assert!(b.next_delay() >= Duration::from_millis(7500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
