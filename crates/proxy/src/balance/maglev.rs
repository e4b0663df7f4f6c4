//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of a prime size
//! `M` filled from each endpoint's permutation of the slots, so every endpoint owns nearly
//! `M/n` slots and a key is one modulo and one load away from its endpoint. Istio's
//! `consistentHash.maglev` (`tableSize`, default 65537).

use super::hash::{hash_with, mix};

/// Istio's (and Envoy's) default table size.
pub const DEFAULT_TABLE_SIZE: u64 = 65_537;
/// Largest table accepted.
const MAX_TABLE_SIZE: u64 = 5_000_011;

/// A built Maglev table.
#[derive(Debug, Clone, Default)]
pub struct Maglev {
    table: Vec<u32>,
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// The smallest prime at or above `n`.
pub fn prime_at_least(n: u64) -> u64 {
    let mut p = n.max(2);
    while !is_prime(p) {
        p += 1;
    }
    p
}

impl Maglev {
    /// Builds the table for endpoints named by `keys`; `size` is rounded up to a prime.
    pub fn build(keys: &[String], size: u64) -> Maglev {
        if keys.is_empty() {
            return Maglev::default();
        }
        let m = prime_at_least(size.clamp(keys.len() as u64, MAX_TABLE_SIZE));
        let perms: Vec<(u64, u64)> = keys
            .iter()
            .map(|k| {
                let offset = hash_with(k.as_bytes(), 0) % m;
                let skip = hash_with(k.as_bytes(), 1) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0u64; keys.len()];
        let mut table = vec![u32::MAX; m as usize];
        let mut filled = 0u64;
        'fill: loop {
            for (i, (offset, skip)) in perms.iter().enumerate() {
                let mut slot = (offset + next[i] * skip) % m;
                while table[slot as usize] != u32::MAX {
                    next[i] += 1;
                    slot = (offset + next[i] * skip) % m;
                }
                table[slot as usize] = i as u32;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
        Maglev { table }
    }

    /// Size of the table.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The endpoint for hash `h`; when it is not usable, the key is re-hashed a few times
    /// (a different slot each time), so keys of an ejected endpoint spread over the others
    /// while every other key keeps its endpoint.
    pub fn lookup(&self, h: u64, usable: impl Fn(usize) -> bool) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let m = self.table.len() as u64;
        let mut key = h;
        for _ in 0..16 {
            let owner = self.table[(key % m) as usize] as usize;
            if usable(owner) {
                return Some(owner);
            }
            key = mix(key.wrapping_add(0x9e37_79b9_7f4a_7c15));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::hash::hash;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.1.{i}:80")).collect()
    }

    #[test]
    fn primes() {
        assert_eq!(prime_at_least(65_537), 65_537);
        assert_eq!(prime_at_least(100), 101);
        assert_eq!(prime_at_least(0), 2);
    }

    #[test]
    fn slots_are_shared_almost_equally() {
        let t = Maglev::build(&keys(3), DEFAULT_TABLE_SIZE);
        assert_eq!(t.len(), 65_537);
        let mut counts = [0usize; 3];
        for owner in &t.table {
            counts[*owner as usize] += 1;
        }
        // Maglev's guarantee: shares differ by at most a few slots.
        let (min, max) = (counts.iter().min(), counts.iter().max());
        assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 3), "{counts:?}");
    }

    #[test]
    fn most_keys_stay_when_an_endpoint_goes() {
        let before = Maglev::build(&keys(5), 65_537);
        let after = Maglev::build(&keys(4), 65_537);
        let total = 20_000u32;
        let mut kept = 0;
        let mut survivors = 0;
        for k in 0..total {
            let h = hash(&k.to_le_bytes());
            let a = before.lookup(h, |_| true).expect("owner");
            if a == 4 {
                continue;
            }
            survivors += 1;
            if after.lookup(h, |_| true) == Some(a) {
                kept += 1;
            }
        }
        // Maglev trades a little disruption for balance: well over 90% stay.
        assert!(kept * 100 >= survivors * 90, "{kept}/{survivors}");
    }

    #[test]
    fn unusable_endpoints_are_avoided() {
        let t = Maglev::build(&keys(4), 1009);
        for k in 0..2_000u32 {
            let got = t.lookup(hash(&k.to_le_bytes()), |i| i != 2);
            assert!(got.is_some_and(|i| i != 2));
        }
        assert_eq!(Maglev::default().lookup(1, |_| true), None);
    }
}
