//! Ring hash (Ketama-style consistent hashing): every endpoint owns many points on a 64-bit
//! ring; a key goes to the owner of the first point at or after its hash. Adding or removing
//! one of `n` endpoints moves about `1/n` of the keys. Istio's `consistentHash.ringHash`
//! (`minimumRingSize`, default 1024).

use super::hash::hash_with;

/// Istio's default minimum ring size.
pub const DEFAULT_MIN_RING_SIZE: u64 = 1024;
/// Envoy's largest ring.
const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;

/// A built ring: points sorted by hash, each naming an endpoint index.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// Builds a ring over endpoints named by `keys` (their `ip:port`), with at least
    /// `min_size` points in total (each endpoint gets the same share).
    pub fn build(keys: &[String], min_size: u64) -> Ring {
        if keys.is_empty() {
            return Ring::default();
        }
        let n = keys.len() as u64;
        let size = min_size.clamp(1, MAX_RING_SIZE).max(n);
        let per = size.div_ceil(n);
        let mut points = Vec::with_capacity((per * n) as usize);
        for (i, key) in keys.iter().enumerate() {
            for j in 0..per {
                points.push((hash_with(key.as_bytes(), j), i as u32));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether the ring has no points.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The endpoint for hash `h`: the owner of the first point at or after `h`, walking on
    /// past endpoints that `usable` rejects (ejected ones).
    pub fn lookup(&self, h: u64, usable: impl Fn(usize) -> bool) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let start = self.points.partition_point(|(p, _)| *p < h);
        let len = self.points.len();
        for step in 0..len {
            let (_, owner) = self.points[(start + step) % len];
            if usable(owner as usize) {
                return Some(owner as usize);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::hash::hash;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:6379")).collect()
    }

    #[test]
    fn keys_spread_evenly_and_stick() {
        let ring = Ring::build(&keys(4), DEFAULT_MIN_RING_SIZE);
        assert_eq!(ring.len(), 1024);
        let mut counts = [0usize; 4];
        for k in 0..40_000u32 {
            let i = ring
                .lookup(hash(&k.to_le_bytes()), |_| true)
                .expect("owner");
            counts[i] += 1;
        }
        for c in counts {
            // 10,000 expected each; a 1024-point ring keeps every share within 20%.
            assert!((8_000..12_000).contains(&c), "{counts:?}");
        }
        let h = hash(b"user-42");
        assert_eq!(ring.lookup(h, |_| true), ring.lookup(h, |_| true));
    }

    #[test]
    fn removing_one_endpoint_moves_few_other_keys() {
        let five = Ring::build(&keys(5), 4096);
        let four = Ring::build(&keys(4), 4096);
        let mut moved = 0;
        let mut survivors = 0;
        for k in 0..20_000u32 {
            let h = hash(&k.to_le_bytes());
            let before = five.lookup(h, |_| true).expect("owner");
            let after = four.lookup(h, |_| true).expect("owner");
            if before != 4 {
                survivors += 1;
                moved += usize::from(before != after);
            }
        }
        // The ring keeps its size, so the survivors gain points (a fifth more each) and take
        // a few of each other's keys; a modulo hash would move three quarters.
        assert!(moved * 100 < survivors * 20, "{moved}/{survivors}");
    }

    #[test]
    fn unusable_endpoints_are_skipped() {
        let ring = Ring::build(&keys(3), 64);
        for k in 0..1_000u32 {
            let i = ring
                .lookup(hash(&k.to_le_bytes()), |i| i != 1)
                .expect("owner");
            assert_ne!(i, 1);
        }
        assert_eq!(ring.lookup(7, |_| false), None);
        assert_eq!(Ring::build(&[], 1024).lookup(7, |_| true), None);
    }
}
