//! Weighted choice among a rule's destinations: each gets weight / (sum of weights) of the
//! picks (Istio's relative weights; weight 0 gets nothing). One random number per pick.

/// Destinations with relative weights.
#[derive(Debug, Clone)]
pub struct Weighted<T> {
    /// (cumulative weight up to and including this entry, entry).
    entries: Vec<(u64, T)>,
    total: u64,
}

impl<T> Default for Weighted<T> {
    fn default() -> Self {
        Weighted {
            entries: Vec::new(),
            total: 0,
        }
    }
}

impl<T> Weighted<T> {
    /// Builds from (weight, entry) pairs, in order.
    pub fn new(items: impl IntoIterator<Item = (u32, T)>) -> Self {
        let mut total = 0u64;
        let entries = items
            .into_iter()
            .map(|(w, t)| {
                total += u64::from(w);
                (total, t)
            })
            .collect();
        Weighted { entries, total }
    }

    /// Whether there is no destination at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|(_, t)| t)
    }

    /// The destination for a draw `r` in `[0, total)`.
    pub fn at(&self, r: u64) -> Option<&T> {
        let i = self.entries.partition_point(|(cum, _)| *cum <= r);
        self.entries.get(i).map(|(_, t)| t)
    }

    /// A random destination by weight; with a single destination, that one whatever its
    /// weight; `None` when all weights are 0.
    pub fn pick(&self) -> Option<&T> {
        match self.entries.as_slice() {
            [] => None,
            [(_, only)] => Some(only),
            _ if self.total == 0 => None,
            _ => self.at(fastrand::u64(..self.total)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_map_to_their_share() {
        let w = Weighted::new([(90, "v1"), (10, "v2")]);
        assert_eq!(w.at(0), Some(&"v1"));
        assert_eq!(w.at(89), Some(&"v1"));
        assert_eq!(w.at(90), Some(&"v2"));
        assert_eq!(w.at(99), Some(&"v2"));
        assert_eq!(w.at(100), None);
        let zero = Weighted::new([(0, "a"), (5, "b"), (0, "c")]);
        assert!((0..5).all(|r| zero.at(r) == Some(&"b")));
    }

    #[test]
    fn relative_weights_split_picks() {
        // Weights need not sum to 100.
        let w = Weighted::new([(3, 0usize), (1, 1usize)]);
        let mut c = [0usize; 2];
        for _ in 0..40_000 {
            c[*w.pick().expect("pick")] += 1;
        }
        // 30,000 expected; binomial sd ~87.
        assert!((29_560..30_440).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn single_and_empty() {
        assert_eq!(Weighted::new([(0, 'x')]).pick(), Some(&'x'));
        assert_eq!(Weighted::new([(0, 'x'), (0, 'y')]).pick(), None);
        assert_eq!(Weighted::<char>::default().pick(), None);
    }
}
