//! When to renew a certificate, as pure functions of its validity and the time: at about
//! half its lifetime, with jitter so a fleet of proxies started together does not renew
//! together; after a failure, again with exponential backoff, never waiting past the
//! certificate's end (the current certificate stays in use until then).

use std::time::{Duration, SystemTime};

/// Renewal happens at this fraction of the lifetime...
pub const REFRESH_FRACTION: f64 = 0.5;
/// ...plus or minus this fraction of the lifetime.
pub const JITTER_FRACTION: f64 = 0.05;
/// First retry delay after a failure.
pub const RETRY_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// Shortest wait of any kind (a certificate about to expire does not spin).
pub const MIN_WAIT: Duration = Duration::from_millis(100);

/// When to renew a certificate valid from `not_before` to `not_after`; `unit` in [0, 1)
/// picks the point within the jitter window.
pub fn refresh_at(not_before: SystemTime, not_after: SystemTime, unit: f64) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let unit = unit.clamp(0.0, 1.0);
    let fraction = REFRESH_FRACTION - JITTER_FRACTION + 2.0 * JITTER_FRACTION * unit;
    not_before + lifetime.mul_f64(fraction)
}

/// How long to wait from `now` until `at` (at least [`MIN_WAIT`]).
pub fn wait_until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now).unwrap_or_default().max(MIN_WAIT)
}

/// The wait before retry number `failures` (1 after the first failure): doubling from
/// [`RETRY_BASE`] up to [`RETRY_MAX`], and, while a certificate is still valid, at most half
/// of what is left of it, so several retries fit before it expires.
pub fn retry_delay(failures: u32, now: SystemTime, not_after: Option<SystemTime>) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let mut delay = RETRY_BASE.saturating_mul(1 << exp).min(RETRY_MAX);
    if let Some(left) = not_after
        .and_then(|end| end.duration_since(now).ok())
        .filter(|left| !left.is_zero())
    {
        delay = delay.min(left / 2);
    }
    delay.max(MIN_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn refresh_table() {
        let day = 24 * 3600;
        let cases = [
            // (not_before, not_after, unit, expected seconds after not_before)
            (0, day, 0.5, day as f64 * 0.5),
            (0, day, 0.0, day as f64 * 0.45),
            (0, day, 0.999_999, day as f64 * 0.55),
            (0, 4, 0.5, 2.0),
            (100, 100, 0.5, 0.0),
            // Nonsense jitter is clamped.
            (0, 100, 7.0, 55.0),
            (0, 100, -1.0, 45.0),
        ];
        for (nb, na, unit, want) in cases {
            let got = refresh_at(t(nb), t(na), unit)
                .duration_since(t(nb))
                .expect("after")
                .as_secs_f64();
            assert!(
                (got - want).abs() < 0.01,
                "{nb}..{na} at {unit}: {got} != {want}"
            );
        }
    }

    #[test]
    fn retry_table() {
        let s = Duration::from_secs;
        let cases = [
            (1, None, s(1)),
            (2, None, s(2)),
            (3, None, s(4)),
            (6, None, s(30)),
            (60, None, s(30)),
            // Half of what is left of the certificate.
            (6, Some(t(10)), s(5)),
            (1, Some(t(1)), Duration::from_millis(500)),
            // Expired: the plain backoff.
            (3, Some(t(0)), s(4)),
        ];
        for (failures, end, want) in cases {
            assert_eq!(retry_delay(failures, t(0), end), want, "{failures} {end:?}");
        }
        assert_eq!(
            retry_delay(1, t(0), Some(t(0) + Duration::from_millis(10))),
            MIN_WAIT
        );
    }

    #[test]
    fn waits() {
        assert_eq!(wait_until(t(5), t(0)), Duration::from_secs(5));
        assert_eq!(wait_until(t(0), t(5)), MIN_WAIT);
    }
}
