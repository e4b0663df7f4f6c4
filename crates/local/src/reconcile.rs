//! Which pods to create and delete to turn the running pods into the wanted ones, as the
//! workload controllers would (pure; the runtime calls it after every change):
//!
//! - a pod that is no longer wanted, or whose spec or address changed, is deleted; a wanted
//!   pod that does not run is created, once no pod holding its name or address is left;
//! - StatefulSet pods with `podManagementPolicy: OrderedReady` (the default) go one at a
//!   time: `redis-3` is created only when `redis-0..2` run and are ready, and on scale-down
//!   the highest ordinal goes first, the next only once it is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// (namespace, pod name).
pub type Key = (String, String);

/// A StatefulSet pod that must follow the ordered policy: its set and ordinal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ordered {
    /// The StatefulSet.
    pub set: String,
    /// The pod's ordinal.
    pub ordinal: u32,
}

/// A pod the manifests want.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Namespace and name.
    pub key: Key,
    /// Its spec and address fingerprint.
    pub fingerprint: u64,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Set when it belongs to an OrderedReady StatefulSet.
    pub ordered: Option<Ordered>,
}

/// A pod the runtime has (starting, running or terminating).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// Namespace and name.
    pub key: Key,
    /// The fingerprint it was created with.
    pub fingerprint: u64,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Ready.
    pub ready: bool,
    /// Being deleted.
    pub terminating: bool,
    /// Set when it belongs to an OrderedReady StatefulSet.
    pub ordered: Option<Ordered>,
}

/// What to do now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actions {
    /// Pods to delete.
    pub delete: Vec<Key>,
    /// Pods to create (in this order).
    pub create: Vec<Key>,
}

/// The ordinal of a StatefulSet pod name (`redis-3` of set `redis` -> 3).
pub fn ordinal(set: &str, pod: &str) -> Option<u32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

/// Decides the next creations and deletions.
pub fn plan(wanted: &[Wanted], running: &[Running]) -> Actions {
    let wanted_by_key: BTreeMap<&Key, &Wanted> = wanted.iter().map(|w| (&w.key, w)).collect();
    let set_of = |key: &Key, o: &Ordered| (key.0.clone(), o.set.clone());
    // Sets with a pod terminating or not ready yet: nothing else of them moves.
    let mut busy: BTreeSet<(String, String)> = BTreeSet::new();
    for r in running {
        if let Some(o) = &r.ordered
            && (r.terminating || !r.ready)
        {
            busy.insert(set_of(&r.key, o));
        }
    }
    let mut actions = Actions::default();
    // Deletions: unordered ones at once; per ordered set the highest ordinal, when idle.
    let mut ordered_candidates: BTreeMap<(String, String), &Running> = BTreeMap::new();
    for r in running.iter().filter(|r| !r.terminating) {
        let stale = match wanted_by_key.get(&r.key) {
            None => true,
            Some(w) => w.fingerprint != r.fingerprint,
        };
        if !stale {
            continue;
        }
        match &r.ordered {
            None => actions.delete.push(r.key.clone()),
            Some(o) => {
                let set = set_of(&r.key, o);
                // A set updates its pods only once every pod it wants exists.
                let missing = wanted.iter().any(|w| {
                    w.ordered
                        .as_ref()
                        .is_some_and(|wo| set_of(&w.key, wo) == set)
                        && !running.iter().any(|x| x.key == w.key)
                });
                if missing && wanted_by_key.contains_key(&r.key) {
                    continue;
                }
                let slot = ordered_candidates.entry(set).or_insert(r);
                if slot.ordered.as_ref().map_or(0, |s| s.ordinal) < o.ordinal {
                    *slot = r;
                }
            }
        }
    }
    for (set, r) in ordered_candidates {
        // A pod being replaced may be the one not ready: deleting it is how the set moves.
        let others_busy = running.iter().any(|o| {
            o.key != r.key
                && o.ordered.as_ref().is_some_and(|x| set_of(&o.key, x) == set)
                && (o.terminating || !o.ready)
        });
        if !others_busy {
            actions.delete.push(r.key.clone());
            busy.insert(set);
        }
    }
    // Creations.
    let held_names: BTreeSet<&Key> = running.iter().map(|r| &r.key).collect();
    let held_ips: BTreeSet<Ipv4Addr> = running.iter().map(|r| r.ip).collect();
    let mut started_sets: BTreeSet<(String, String)> = BTreeSet::new();
    let mut ordered_wanted: Vec<&Wanted> = wanted.iter().filter(|w| w.ordered.is_some()).collect();
    ordered_wanted.sort_by_key(|w| w.ordered.as_ref().map_or(0, |o| o.ordinal));
    for w in wanted.iter().filter(|w| w.ordered.is_none()) {
        if !held_names.contains(&w.key) && !held_ips.contains(&w.ip) {
            actions.create.push(w.key.clone());
        }
    }
    for w in ordered_wanted {
        let Some(o) = &w.ordered else { continue };
        let set = set_of(&w.key, o);
        if held_names.contains(&w.key) || busy.contains(&set) || started_sets.contains(&set) {
            continue;
        }
        // Every lower ordinal of the set must run and be ready.
        let lower_ready = wanted
            .iter()
            .filter(|x| {
                x.ordered
                    .as_ref()
                    .is_some_and(|xo| set_of(&x.key, xo) == set && xo.ordinal < o.ordinal)
            })
            .all(|x| {
                running
                    .iter()
                    .any(|r| r.key == x.key && r.ready && !r.terminating)
            });
        if lower_ready && !held_ips.contains(&w.ip) {
            actions.create.push(w.key.clone());
        }
        started_sets.insert(set);
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        ("default".into(), name.into())
    }

    fn ip_of(name: &str) -> Ipv4Addr {
        let n = name
            .bytes()
            .fold(0u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
        Ipv4Addr::new(198, 18, 1, n)
    }

    fn ordered(name: &str) -> Option<Ordered> {
        let set = name.rsplit_once('-')?.0;
        Some(Ordered {
            set: set.into(),
            ordinal: ordinal(set, name)?,
        })
    }

    fn wanted(names: &[&str]) -> Vec<Wanted> {
        names
            .iter()
            .map(|n| Wanted {
                key: key(n),
                fingerprint: if n.ends_with('*') { 2 } else { 1 },
                ip: ip_of(n.trim_end_matches('*')),
                ordered: if n.starts_with("redis") {
                    ordered(n.trim_end_matches('*'))
                } else {
                    None
                },
            })
            .map(|mut w| {
                w.key.1 = w.key.1.trim_end_matches('*').to_string();
                w
            })
            .collect()
    }

    /// `name` ready, `name?` not ready, `name~` terminating, `name*` with the new spec.
    fn running(names: &[&str]) -> Vec<Running> {
        names
            .iter()
            .map(|n| {
                let marked = n.trim_end_matches(['?', '~']);
                let name = marked.trim_end_matches('*');
                Running {
                    key: key(name),
                    fingerprint: if marked.ends_with('*') { 2 } else { 1 },
                    ip: ip_of(name),
                    ready: !n.ends_with('?'),
                    terminating: n.ends_with('~'),
                    ordered: if name.starts_with("redis") {
                        ordered(name)
                    } else {
                        None
                    },
                }
            })
            .collect()
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal("redis", "redis-10"), Some(10));
        assert_eq!(ordinal("redis", "redis-x"), None);
        assert_eq!(ordinal("redis", "rediss-1"), None);
    }

    #[test]
    fn plans() {
        // (wanted, running, deletions, creations)
        type Row<'a> = (&'a [&'a str], &'a [&'a str], &'a [&'a str], &'a [&'a str]);
        let rows: &[Row] = &[
            // Start-up: unordered pods at once, the set one by one.
            (
                &["client", "redis-0", "redis-1", "redis-2"],
                &[],
                &[],
                &["client", "redis-0"],
            ),
            (
                &["client", "redis-0", "redis-1", "redis-2"],
                &["client?", "redis-0?"],
                &[],
                &[],
            ),
            (
                &["client", "redis-0", "redis-1", "redis-2"],
                &["client?", "redis-0"],
                &[],
                &["redis-1"],
            ),
            // Scale up 3 -> 5.
            (
                &["redis-0", "redis-1", "redis-2", "redis-3", "redis-4"],
                &["redis-0", "redis-1", "redis-2"],
                &[],
                &["redis-3"],
            ),
            (
                &["redis-0", "redis-1", "redis-2", "redis-3", "redis-4"],
                &["redis-0", "redis-1", "redis-2", "redis-3"],
                &[],
                &["redis-4"],
            ),
            // Scale down 5 -> 2: highest first, one at a time.
            (
                &["redis-0", "redis-1"],
                &["redis-0", "redis-1", "redis-2", "redis-3", "redis-4"],
                &["redis-4"],
                &[],
            ),
            (
                &["redis-0", "redis-1"],
                &["redis-0", "redis-1", "redis-2", "redis-3", "redis-4~"],
                &[],
                &[],
            ),
            (
                &["redis-0", "redis-1"],
                &["redis-0", "redis-1", "redis-2", "redis-3"],
                &["redis-3"],
                &[],
            ),
            // A changed spec: replaced from the highest ordinal, recreated once gone.
            (
                &["redis-0*", "redis-1*"],
                &["redis-0", "redis-1"],
                &["redis-1"],
                &[],
            ),
            (
                &["redis-0*", "redis-1*"],
                &["redis-0", "redis-1~"],
                &[],
                &[],
            ),
            (&["redis-0*", "redis-1*"], &["redis-0"], &[], &["redis-1"]),
            (
                &["redis-0*", "redis-1*"],
                &["redis-0", "redis-1*?"],
                &[],
                &[],
            ),
            (
                &["redis-0*", "redis-1*"],
                &["redis-0", "redis-1*"],
                &["redis-0"],
                &[],
            ),
            // A stale pod that is not ready is replaced all the same.
            (
                &["redis-0*", "redis-1*"],
                &["redis-0", "redis-1?"],
                &["redis-1"],
                &[],
            ),
            // Unordered pods: removed at once, a replacement waits for its name.
            (&[], &["client", "plain?"], &["client", "plain"], &[]),
            (&["plain*"], &["plain"], &["plain"], &[]),
            (&["plain*"], &["plain~"], &[], &[]),
        ];
        for (i, (w, r, del, create)) in rows.iter().enumerate() {
            let got = plan(&wanted(w), &running(r));
            let names = |keys: &[Key]| keys.iter().map(|k| k.1.clone()).collect::<Vec<_>>();
            assert_eq!(names(&got.delete), *del, "row {i}: deletions");
            assert_eq!(names(&got.create), *create, "row {i}: creations");
        }
    }

    #[test]
    fn addresses_are_not_shared() {
        let mut w = wanted(&["new"]);
        w[0].ip = ip_of("old");
        let got = plan(&w, &running(&["old~"]));
        assert!(got.create.is_empty(), "{got:?}");
    }
}
