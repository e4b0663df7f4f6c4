//! A pod's name files, under `/etc/netns/<netns>/`, which `ip netns exec` bind-mounts over
//! `/etc` for every process of the pod (and `ferry exec`): `resolv.conf` pointing at the
//! runtime's DNS server with the namespace's search list (as the kubelet writes it), and
//! `hosts` with localhost and the pod's own names.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Where `ip netns exec` looks for a namespace's `/etc` overrides.
pub fn etc_dir(netns: &str) -> PathBuf {
    Path::new("/etc/netns").join(netns)
}

/// The `resolv.conf` of every pod in `namespace`.
pub fn resolv_conf(nameserver: IpAddr, namespace: &str, domain: &str) -> String {
    let search = super::answer::search_list(namespace, domain).join(" ");
    format!("nameserver {nameserver}\nsearch {search}\noptions ndots:5\n")
}

/// The `hosts` file of a pod: localhost, and its address under its own names
/// (`<hostname>.<subdomain>.<ns>.svc.<domain> <hostname>` for a StatefulSet pod, else its
/// name), as the kubelet writes it.
pub fn hosts(
    ip: IpAddr,
    pod: &str,
    namespace: &str,
    hostname: Option<(&str, &str)>,
    domain: &str,
) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file (ferry up).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    let _ = match hostname {
        Some((host, sub)) => writeln!(out, "{ip}\t{host}.{sub}.{namespace}.svc.{domain}\t{host}"),
        None => writeln!(out, "{ip}\t{pod}"),
    };
    out
}

/// Writes a pod's `/etc/netns/<netns>/{hosts,resolv.conf}`.
pub fn write(netns: &str, hosts: &str, resolv: &str) -> std::io::Result<()> {
    let dir = etc_dir(netns);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("hosts"), hosts)?;
    std::fs::write(dir.join("resolv.conf"), resolv)
}

/// Removes a pod's `/etc/netns/<netns>` directory.
pub fn remove(netns: &str) {
    let _ = std::fs::remove_dir_all(etc_dir(netns));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn files() {
        let ns = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(
            resolv_conf(ns, "shop", "cluster.local"),
            "nameserver 198.18.0.1\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
        );
        let ip = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 3));
        let sts = hosts(
            ip,
            "redis-0",
            "default",
            Some(("redis-0", "redis")),
            "cluster.local",
        );
        assert!(
            sts.ends_with("198.18.0.3\tredis-0.redis.default.svc.cluster.local\tredis-0\n"),
            "{sts}"
        );
        let plain = hosts(ip, "client-abc", "default", None, "cluster.local");
        assert!(plain.ends_with("198.18.0.3\tclient-abc\n"), "{plain}");
    }
}
