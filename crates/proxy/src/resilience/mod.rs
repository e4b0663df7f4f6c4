//! Resilience policies as pure state machines: [`pool`] (connection pool limits, overflow),
//! [`outlier`] (ejection of failing endpoints), [`retry`] (retry conditions and back-off), and
//! percentage sampling for faults and mirrors.

pub mod outlier;
pub mod pool;
pub mod retry;

/// Whether an event with a `percent` chance (0-100) happens this time.
pub fn sample(percent: f64) -> bool {
    if percent >= 100.0 {
        return true;
    }
    percent > 0.0 && fastrand::f64() * 100.0 < percent
}

#[cfg(test)]
mod tests {
    use super::sample;

    #[test]
    fn sampling_rates() {
        assert!((0..1000).all(|_| sample(100.0)));
        assert!((0..1000).all(|_| !sample(0.0)));
        assert!((0..1000).all(|_| !sample(-3.0)));
        let hits = (0..100_000).filter(|_| sample(25.0)).count();
        // Binomial(100000, 0.25): sd ~137; 5 sd.
        assert!((24_315..25_685).contains(&hits), "{hits}");
    }
}
