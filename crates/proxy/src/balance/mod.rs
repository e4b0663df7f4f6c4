//! Load balancing over a cluster's endpoints, as a DestinationRule's `loadBalancer` says:
//! `ROUND_ROBIN`, `LEAST_REQUEST` (power of two choices, Istio's default), `RANDOM`, and
//! `consistentHash` with a ring hash ([`ring`]) or Maglev ([`maglev`]). Pure: the caller
//! says which endpoints may be used (not ejected) and how busy each one is.
//!
//! `PASSTHROUGH` is not a balancer: such clusters connect to the address the client dialled
//! (see `cluster`).

pub mod hash;
pub mod maglev;
pub mod ring;

use ferry_model::istio::destination_rule::{LoadBalancerSettings, SimpleLb};
use std::sync::atomic::{AtomicUsize, Ordering};

/// What the balancer knows about the endpoints of one pick.
pub trait Hosts {
    /// Number of endpoints.
    fn count(&self) -> usize;
    /// Whether endpoint `i` may be used (ready and not ejected).
    fn usable(&self, i: usize) -> bool;
    /// Outstanding requests (HTTP) or open connections (TCP) on endpoint `i`.
    fn active(&self, i: usize) -> u32;
    /// Whether every endpoint is usable (lets the balancer skip the per-endpoint checks).
    fn all_usable(&self) -> bool {
        (0..self.count()).all(|i| self.usable(i))
    }
}

/// A balancing algorithm, built for one cluster's endpoint list.
#[derive(Debug, Clone)]
pub enum Algorithm {
    /// In turn.
    RoundRobin,
    /// Power of two choices: the less busy of two random endpoints.
    LeastRequest,
    /// Uniformly at random.
    Random,
    /// Consistent hashing on a ring.
    RingHash(ring::Ring),
    /// Consistent hashing with a Maglev table.
    Maglev(maglev::Maglev),
    /// Forward to the original destination (no balancing).
    Passthrough,
}

/// What a consistent-hash balancer hashes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// A request header.
    Header(String),
    /// A cookie (with a TTL, created when absent).
    Cookie {
        /// Cookie name.
        name: String,
        /// Cookie path.
        path: Option<String>,
        /// Lifetime; `None` means the cookie is never created by the proxy.
        ttl: Option<std::time::Duration>,
    },
    /// The client's IP address.
    SourceIp,
    /// A query parameter.
    QueryParameter(String),
}

impl Algorithm {
    /// The algorithm a DestinationRule asks for, built over endpoints named by `keys`
    /// (`ip:port`), and what a consistent hash hashes on. Istio's default is `LEAST_REQUEST`.
    pub fn from_settings(
        lb: &LoadBalancerSettings,
        keys: &[String],
    ) -> (Algorithm, Option<HashOn>) {
        if let Some(ch) = &lb.consistent_hash {
            let on = if let Some(h) = &ch.http_header_name {
                Some(HashOn::Header(h.to_ascii_lowercase()))
            } else if let Some(c) = &ch.http_cookie {
                Some(HashOn::Cookie {
                    name: c.name.clone().unwrap_or_default(),
                    path: c.path.clone(),
                    ttl: c.ttl.as_ref().map(|d| d.get()),
                })
            } else if ch.use_source_ip == Some(true) {
                Some(HashOn::SourceIp)
            } else {
                ch.http_query_parameter_name
                    .clone()
                    .map(HashOn::QueryParameter)
            };
            let algorithm = match &ch.maglev {
                Some(m) => Algorithm::Maglev(maglev::Maglev::build(
                    keys,
                    m.table_size.unwrap_or(maglev::DEFAULT_TABLE_SIZE),
                )),
                None => {
                    let min = ch
                        .ring_hash
                        .as_ref()
                        .and_then(|r| r.minimum_ring_size)
                        .or(ch.minimum_ring_size)
                        .unwrap_or(ring::DEFAULT_MIN_RING_SIZE);
                    Algorithm::RingHash(ring::Ring::build(keys, min))
                }
            };
            return (algorithm, on);
        }
        let algorithm = match lb.simple {
            Some(SimpleLb::RoundRobin) => Algorithm::RoundRobin,
            Some(SimpleLb::Random) => Algorithm::Random,
            Some(SimpleLb::Passthrough) => Algorithm::Passthrough,
            _ => Algorithm::LeastRequest,
        };
        (algorithm, None)
    }

    /// Picks an endpoint; `key` is the request's hash (consistent hashing only; without one
    /// a random endpoint is picked, as Envoy does), `turn` the round-robin counter.
    pub fn pick(&self, hosts: &impl Hosts, key: Option<u64>, turn: &AtomicUsize) -> Option<usize> {
        let n = hosts.count();
        if n == 0 {
            return None;
        }
        match self {
            Algorithm::RoundRobin => {
                let t = turn.fetch_add(1, Ordering::Relaxed);
                if hosts.all_usable() {
                    return Some(t % n);
                }
                // In turn over the usable ones only, as Envoy rotates over its healthy
                // hosts: skipping an ejected endpoint must not double its successor's share.
                let usable = (0..n).filter(|&i| hosts.usable(i)).count();
                if usable == 0 {
                    return None;
                }
                (0..n).filter(|&i| hosts.usable(i)).nth(t % usable)
            }
            Algorithm::Random | Algorithm::Passthrough => random_usable(hosts),
            Algorithm::LeastRequest => least_request(hosts),
            Algorithm::RingHash(r) => match key {
                Some(h) => r.lookup(h, |i| hosts.usable(i)),
                None => random_usable(hosts),
            },
            Algorithm::Maglev(m) => match key {
                Some(h) => m
                    .lookup(h, |i| hosts.usable(i))
                    .or_else(|| random_usable(hosts)),
                None => random_usable(hosts),
            },
        }
    }
}

/// A uniformly random usable endpoint.
fn random_usable(hosts: &impl Hosts) -> Option<usize> {
    let n = hosts.count();
    if hosts.all_usable() {
        return Some(fastrand::usize(..n));
    }
    let usable = (0..n).filter(|&i| hosts.usable(i)).count();
    if usable == 0 {
        return None;
    }
    let k = fastrand::usize(..usable);
    (0..n).filter(|&i| hosts.usable(i)).nth(k)
}

/// Power of two choices: two distinct random usable endpoints, the one with fewer active
/// requests wins (the first on a tie).
fn least_request(hosts: &impl Hosts) -> Option<usize> {
    let n = hosts.count();
    let (a, b) = if hosts.all_usable() {
        if n == 1 {
            return Some(0);
        }
        let a = fastrand::usize(..n);
        let b = (a + 1 + fastrand::usize(..n - 1)) % n;
        (a, b)
    } else {
        let usable = (0..n).filter(|&i| hosts.usable(i)).count();
        match usable {
            0 => return None,
            1 => return (0..n).find(|&i| hosts.usable(i)),
            _ => {}
        }
        let ka = fastrand::usize(..usable);
        let kb = (ka + 1 + fastrand::usize(..usable - 1)) % usable;
        let mut it = (0..n).filter(|&i| hosts.usable(i));
        let mut a = None;
        let mut b = None;
        for (k, i) in it.by_ref().enumerate() {
            if k == ka {
                a = Some(i);
            }
            if k == kb {
                b = Some(i);
            }
        }
        (a?, b?)
    };
    Some(if hosts.active(b) < hosts.active(a) {
        b
    } else {
        a
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        usable: Vec<bool>,
        active: Vec<u32>,
    }

    impl Hosts for Fake {
        fn count(&self) -> usize {
            self.usable.len()
        }
        fn usable(&self, i: usize) -> bool {
            self.usable[i]
        }
        fn active(&self, i: usize) -> u32 {
            self.active[i]
        }
    }

    fn fake(n: usize) -> Fake {
        Fake {
            usable: vec![true; n],
            active: vec![0; n],
        }
    }

    fn counts(a: &Algorithm, hosts: &Fake, rounds: usize) -> Vec<usize> {
        let turn = AtomicUsize::new(0);
        let mut c = vec![0; hosts.count()];
        for _ in 0..rounds {
            c[a.pick(hosts, None, &turn).expect("endpoint")] += 1;
        }
        c
    }

    #[test]
    fn round_robin_takes_turns_and_skips_ejected() {
        let mut h = fake(3);
        assert_eq!(counts(&Algorithm::RoundRobin, &h, 300), [100, 100, 100]);
        h.usable[1] = false;
        let c = counts(&Algorithm::RoundRobin, &h, 300);
        // The others share evenly (not 2:1 for the one after the ejected endpoint).
        assert_eq!(c, [150, 0, 150]);
        let mut h = fake(4);
        h.usable[2] = false;
        assert_eq!(counts(&Algorithm::RoundRobin, &h, 300), [100, 100, 0, 100]);
        h.usable = vec![false; 4];
        assert_eq!(
            Algorithm::RoundRobin.pick(&h, None, &AtomicUsize::new(0)),
            None
        );
    }

    #[test]
    fn random_is_uniform() {
        let c = counts(&Algorithm::Random, &fake(4), 40_000);
        for x in &c {
            // Binomial(40000, 1/4): sd ~87; 5 sd.
            assert!((9_565..10_435).contains(x), "{c:?}");
        }
    }

    #[test]
    fn least_request_prefers_idle_endpoints() {
        let mut h = fake(4);
        h.active = vec![10, 0, 10, 10];
        let c = counts(&Algorithm::LeastRequest, &h, 12_000);
        // Endpoint 1 wins whenever it is one of the two choices: P = 1 - C(3,2)/C(4,2) = 1/2.
        assert!((5_600..6_400).contains(&c[1]), "{c:?}");
        // Equal load: uniform.
        let c = counts(&Algorithm::LeastRequest, &fake(3), 30_000);
        for x in &c {
            assert!((9_500..10_500).contains(x), "{c:?}");
        }
        // Never an unusable one; a single usable endpoint always wins.
        h.usable = vec![false, false, true, false];
        assert_eq!(counts(&Algorithm::LeastRequest, &h, 100)[2], 100);
        h.usable = vec![false; 4];
        assert_eq!(
            Algorithm::LeastRequest.pick(&h, None, &AtomicUsize::new(0)),
            None
        );
    }

    #[test]
    fn consistent_hash_sticks_to_a_key() {
        let keys: Vec<String> = (0..5).map(|i| format!("10.0.0.{i}:80")).collect();
        let h = fake(5);
        let turn = AtomicUsize::new(0);
        for a in [
            Algorithm::RingHash(ring::Ring::build(&keys, 1024)),
            Algorithm::Maglev(maglev::Maglev::build(&keys, 65_537)),
        ] {
            for user in 0..100u32 {
                let k = hash::hash(format!("user-{user}").as_bytes());
                let first = a.pick(&h, Some(k), &turn);
                assert!((0..10).all(|_| a.pick(&h, Some(k), &turn) == first));
            }
        }
    }

    #[test]
    fn consistent_hash_spreads_keys_and_moves_few_when_an_endpoint_leaves() {
        let five: Vec<String> = (0..5).map(|i| format!("10.0.0.{i}:80")).collect();
        let four: Vec<String> = five
            .iter()
            .filter(|k| !k.starts_with("10.0.0.2:"))
            .cloned()
            .collect();
        let users: Vec<u64> = (0..5_000u32)
            .map(|u| hash::hash(format!("user-{u}").as_bytes()))
            .collect();
        let turn = AtomicUsize::new(0);
        type Build = fn(&[String]) -> Algorithm;
        let builds: [(&str, Build); 2] = [
            ("ring", |k| Algorithm::RingHash(ring::Ring::build(k, 1024))),
            ("maglev", |k| {
                Algorithm::Maglev(maglev::Maglev::build(k, 65_537))
            }),
        ];
        for (name, build) in builds {
            let (before, after) = (build(&five), build(&four));
            let owner = |a: &Algorithm, keys: &[String], h: u64, hosts: &Fake| {
                a.pick(hosts, Some(h), &turn).map(|i| keys[i].clone())
            };
            let mut share = std::collections::BTreeMap::<String, usize>::new();
            let mut moved = 0;
            for &h in &users {
                let was = owner(&before, &five, h, &fake(5)).expect("owner");
                let now = owner(&after, &four, h, &fake(4)).expect("owner");
                *share.entry(was.clone()).or_default() += 1;
                if was != "10.0.0.2:80" && was != now {
                    moved += 1;
                }
            }
            // Each endpoint owns a fair part of the keys (1,000 expected each).
            assert!(
                share.values().all(|n| (700..=1_300).contains(n)),
                "{name}: {share:?}"
            );
            // Keys of the endpoints that stay mostly stay (a modulo hash would move 80% of
            // them; the ring moves some, as Envoy's does, since each endpoint's share of
            // the points grows).
            assert!(moved * 5 < users.len(), "{name}: {moved} keys moved");
        }
    }

    #[test]
    fn settings_map_to_algorithms() {
        use ferry_model::istio::destination_rule::{ConsistentHashLb, MagLev};
        let keys = vec!["a:1".to_string(), "b:1".to_string()];
        let simple = |s| LoadBalancerSettings {
            simple: Some(s),
            ..Default::default()
        };
        let cases = [
            (simple(SimpleLb::RoundRobin), "RoundRobin"),
            (simple(SimpleLb::Random), "Random"),
            (simple(SimpleLb::LeastConn), "LeastRequest"),
            (simple(SimpleLb::Passthrough), "Passthrough"),
            (LoadBalancerSettings::default(), "LeastRequest"),
        ];
        for (lb, want) in cases {
            let (a, on) = Algorithm::from_settings(&lb, &keys);
            assert!(format!("{a:?}").starts_with(want), "{a:?}");
            assert_eq!(on, None);
        }
        let lb = LoadBalancerSettings {
            consistent_hash: Some(ConsistentHashLb {
                http_header_name: Some("X-User".into()),
                maglev: Some(MagLev {
                    table_size: Some(101),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (a, on) = Algorithm::from_settings(&lb, &keys);
        assert!(matches!(a, Algorithm::Maglev(ref m) if m.len() == 101));
        assert_eq!(on, Some(HashOn::Header("x-user".into())));
        let lb = LoadBalancerSettings {
            consistent_hash: Some(ConsistentHashLb {
                use_source_ip: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (a, on) = Algorithm::from_settings(&lb, &keys);
        assert!(matches!(a, Algorithm::RingHash(ref r) if r.len() == 1024));
        assert_eq!(on, Some(HashOn::SourceIp));
    }
}
