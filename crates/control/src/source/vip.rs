//! Virtual IPs for Services that declare no `clusterIP` (what the API server would allocate).
//! One machine has no API server, so Ferry hands them out from a range (198.19.0.0/16 by
//! default): deterministically by sorted (namespace, name), and sticky, so that a service
//! keeps its address while others come and go.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use serde_json::Value;

/// An IPv4 range: base address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipRange {
    /// First address of the range (host bits are ignored).
    pub base: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

impl Default for VipRange {
    fn default() -> Self {
        VipRange {
            base: Ipv4Addr::new(198, 19, 0, 0),
            prefix: 16,
        }
    }
}

impl VipRange {
    /// The usable addresses: the network and broadcast addresses are skipped when the range
    /// has more than two.
    fn hosts(self) -> impl Iterator<Item = Ipv4Addr> {
        let prefix = u32::from(self.prefix.min(32));
        let size: u64 = 1u64 << (32 - prefix);
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        let network = u64::from(u32::from(self.base) & mask);
        let (first, last) = if size > 2 {
            (network + 1, network + size - 2)
        } else {
            (network, network + size - 1)
        };
        (first..=last).filter_map(|n| u32::try_from(n).ok().map(Ipv4Addr::from))
    }
}

/// What a Service manifest says about its cluster IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterIp {
    /// `clusterIP: None`: headless.
    Headless,
    /// An explicit address.
    Address(IpAddr),
    /// Absent or empty: the API server would allocate one.
    Unset,
}

/// Reads `spec.clusterIP` of a Service (an unparsable value counts as unset).
pub fn declared_cluster_ip(service: &Value) -> ClusterIp {
    match service["spec"]["clusterIP"].as_str().map(str::trim) {
        Some("None") => ClusterIp::Headless,
        Some(text) => text.parse().map_or(ClusterIp::Unset, ClusterIp::Address),
        None => ClusterIp::Unset,
    }
}

/// Gives every service of `wanted` an address from `range`: its `previous` one when it had
/// one in range, else the lowest free address, in sorted (namespace, name) order. Addresses
/// in `taken` (explicit cluster IPs) are never handed out. Services left over when the range
/// is full get none.
pub fn allocate_vips(
    range: VipRange,
    wanted: &[(String, String)],
    previous: &BTreeMap<(String, String), Ipv4Addr>,
    taken: &BTreeSet<Ipv4Addr>,
) -> BTreeMap<(String, String), Ipv4Addr> {
    let mut sorted: Vec<&(String, String)> = wanted.iter().collect();
    sorted.sort();
    sorted.dedup();
    let in_range: BTreeSet<Ipv4Addr> = previous
        .values()
        .copied()
        .filter(|ip| contains(range, *ip))
        .collect();
    let mut used: BTreeSet<Ipv4Addr> = taken.clone();
    let mut out = BTreeMap::new();
    for key in &sorted {
        if let Some(ip) = previous.get(*key)
            && in_range.contains(ip)
            && !used.contains(ip)
        {
            used.insert(*ip);
            out.insert((*key).clone(), *ip);
        }
    }
    let mut free = range.hosts().filter(|ip| !used.contains(ip));
    for key in sorted {
        if out.contains_key(key) {
            continue;
        }
        match free.next() {
            Some(ip) => {
                out.insert(key.clone(), ip);
            }
            None => break,
        }
    }
    out
}

fn contains(range: VipRange, ip: Ipv4Addr) -> bool {
    let prefix = u32::from(range.prefix.min(32));
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    u32::from(ip) & mask == u32::from(range.base) & mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(ns: &str, name: &str) -> (String, String) {
        (ns.to_string(), name.to_string())
    }

    #[test]
    fn sorted_then_sticky() {
        let range = VipRange::default();
        let wanted = vec![key("b", "x"), key("a", "y")];
        let first = allocate_vips(range, &wanted, &BTreeMap::new(), &BTreeSet::new());
        assert_eq!(first[&key("a", "y")], Ipv4Addr::new(198, 19, 0, 1));
        assert_eq!(first[&key("b", "x")], Ipv4Addr::new(198, 19, 0, 2));
        // A new service sorting first does not move the others.
        let wanted = vec![key("b", "x"), key("a", "y"), key("a", "a")];
        let second = allocate_vips(range, &wanted, &first, &BTreeSet::new());
        assert_eq!(second[&key("a", "y")], Ipv4Addr::new(198, 19, 0, 1));
        assert_eq!(second[&key("a", "a")], Ipv4Addr::new(198, 19, 0, 3));
    }

    #[test]
    fn taken_and_full_ranges() {
        let range = VipRange {
            base: Ipv4Addr::new(10, 0, 0, 0),
            prefix: 30,
        };
        let taken = BTreeSet::from([Ipv4Addr::new(10, 0, 0, 1)]);
        let wanted = vec![key("a", "1"), key("a", "2")];
        let out = allocate_vips(range, &wanted, &BTreeMap::new(), &taken);
        assert_eq!(out.len(), 1);
        assert_eq!(out[&key("a", "1")], Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn cluster_ip_forms() {
        assert_eq!(
            declared_cluster_ip(&json!({"spec": {"clusterIP": "None"}})),
            ClusterIp::Headless
        );
        assert_eq!(
            declared_cluster_ip(&json!({"spec": {"clusterIP": "10.0.0.5"}})),
            ClusterIp::Address("10.0.0.5".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])))
        );
        assert_eq!(declared_cluster_ip(&json!({"spec": {}})), ClusterIp::Unset);
        assert_eq!(
            declared_cluster_ip(&json!({"spec": {"clusterIP": ""}})),
            ClusterIp::Unset
        );
    }
}
