//! Cluster names for pods. This slice has no DNS server: each pod gets a `hosts` file and a
//! `resolv.conf` under `/etc/netns/<netns>/`, which `ip netns exec` bind-mounts over `/etc`,
//! so every process of the pod (and `ferry exec`) resolves `<svc>` (same namespace),
//! `<svc>.<ns>`, `<svc>.<ns>.svc.<domain>` (the cluster IP, or every pod IP of a headless
//! service) and the StatefulSet names `<pod>.<svc>[.<ns>[.svc.<domain>]]`. The resolver
//! points at loopback so nothing is asked of the outside network.

use ferry_control::registry::Registry;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Where `ip netns exec` looks for a namespace's `/etc` overrides.
pub fn etc_dir(netns: &str) -> PathBuf {
    Path::new("/etc/netns").join(netns)
}

/// The `hosts` file of a pod in namespace `namespace` named `pod` at `ip`.
pub fn hosts(registry: &Registry, namespace: &str, pod: &str, ip: IpAddr) -> String {
    let domain = &registry.cluster_domain;
    let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let _ = writeln!(out, "{ip}\t{pod}");
    for svc in &registry.services {
        let (name, ns) = (&svc.name, &svc.namespace);
        let mut names = vec![format!("{name}.{ns}"), format!("{name}.{ns}.svc.{domain}")];
        if ns == namespace {
            names.insert(0, name.clone());
        }
        match svc.cluster_ip {
            Some(vip) => {
                let _ = writeln!(out, "{vip}\t{}", names.join(" "));
            }
            None => {
                for ep in &svc.endpoints {
                    let _ = writeln!(out, "{}\t{}", ep.ip, names.join(" "));
                }
            }
        }
        for ep in &svc.endpoints {
            let Some(p) = registry
                .pods
                .iter()
                .find(|p| p.namespace == ep.namespace && p.name == ep.pod)
            else {
                continue;
            };
            let (Some(host), Some(sub)) = (&p.hostname, &p.subdomain) else {
                continue;
            };
            if sub != name {
                continue;
            }
            let mut per_pod = vec![
                format!("{host}.{name}.{ns}"),
                format!("{host}.{name}.{ns}.svc.{domain}"),
            ];
            if ns == namespace {
                per_pod.insert(0, format!("{host}.{name}"));
            }
            let _ = writeln!(out, "{}\t{}", ep.ip, per_pod.join(" "));
        }
    }
    out
}

/// The `resolv.conf` of a pod in `namespace`.
pub fn resolv_conf(namespace: &str, domain: &str) -> String {
    format!(
        "nameserver 127.0.0.1\nsearch {namespace}.svc.{domain} svc.{domain} {domain}\noptions ndots:5\n"
    )
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
