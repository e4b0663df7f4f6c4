//! What kube-proxy does, for the pods without a sidecar: a connection to a service's cluster
//! IP and port is sent (DNAT) to one of its ready endpoints, picked at random with
//! iptables' `statistic` match as kube-proxy does, and refused (TCP reset) when the service
//! has none. Pods with a sidecar do not need this: their proxy routes cluster IPs itself.
//!
//! The rules live in the pod's own network namespace (chain `FERRY-SERVICES` of the `nat`
//! and `filter` tables, jumped to from `OUTPUT`), so that replies are translated back by the
//! pod's own connection tracking without touching the host's bridge settings, and so that
//! deleting the pod's namespace removes them. [`render`] is pure; [`apply`] runs
//! `iptables-restore --noflush` inside the namespace, replacing the chain atomically.

use ferry_control::registry::Registry;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use tokio::io::AsyncWriteExt;

/// The chain holding the service rules (in `nat` and `filter`).
pub const CHAIN: &str = "FERRY-SERVICES";

/// The `iptables-restore --noflush` input that sets the chains to the registry's services.
/// `first` also adds the jumps from `OUTPUT` (once per namespace).
pub fn render(registry: &Registry, first: bool) -> String {
    let mut nat = String::new();
    let mut filter = String::new();
    for svc in &registry.services {
        let Some(IpAddr::V4(vip)) = svc.cluster_ip else {
            continue;
        };
        for port in &svc.ports {
            let endpoints: BTreeSet<Ipv4Addr> = svc
                .endpoints
                .iter()
                .filter(|e| e.ready)
                .filter_map(|e| match e.ip {
                    IpAddr::V4(ip) => Some(ip),
                    IpAddr::V6(_) => None,
                })
                .collect();
            let matcher = format!(
                "-A {CHAIN} -d {vip}/32 -p tcp -m tcp --dport {} -m comment --comment \"{}/{}:{}\"",
                port.port, svc.namespace, svc.name, port.name
            );
            if endpoints.is_empty() {
                let _ = writeln!(filter, "{matcher} -j REJECT --reject-with tcp-reset");
                continue;
            }
            let n = endpoints.len();
            for (i, ip) in endpoints.iter().enumerate() {
                let left = n - i;
                let pick = if left > 1 {
                    format!(
                        " -m statistic --mode random --probability {:.10}",
                        1.0 / left as f64
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(
                    nat,
                    "{matcher}{pick} -j DNAT --to-destination {ip}:{}",
                    port.target_port
                );
            }
        }
    }
    let mut out = String::new();
    for (table, rules) in [("nat", nat), ("filter", filter)] {
        let _ = writeln!(out, "*{table}\n:{CHAIN} - [0:0]\n-F {CHAIN}");
        if first {
            let _ = writeln!(out, "-A OUTPUT -j {CHAIN}");
        }
        out.push_str(&rules);
        out.push_str("COMMIT\n");
    }
    out
}

/// Loads `rules` (from [`render`]) into the namespace `netns`.
pub async fn apply(netns: &str, rules: &str) -> anyhow::Result<()> {
    let mut child = tokio::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "iptables-restore",
            "--noflush",
            "--wait",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("running iptables-restore (install iptables): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(rules.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        anyhow::bail!(
            "iptables-restore in {netns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_control::registry::{EndpointEntry, PortEntry, ServiceEntry};

    fn ep(last: u8, ready: bool) -> EndpointEntry {
        EndpointEntry {
            ip: IpAddr::V4(Ipv4Addr::new(198, 18, 0, last)),
            pod: format!("p{last}"),
            namespace: "default".into(),
            workload: String::new(),
            service_account: String::new(),
            labels: Default::default(),
            has_sidecar: false,
            ready,
            hostname: None,
        }
    }

    fn svc(name: &str, vip: Option<[u8; 4]>, eps: Vec<EndpointEntry>) -> ServiceEntry {
        ServiceEntry {
            name: name.into(),
            namespace: "default".into(),
            fqdn: format!("{name}.default.svc.cluster.local"),
            cluster_ip: vip.map(|v| IpAddr::V4(Ipv4Addr::from(v))),
            ports: vec![PortEntry {
                name: "tcp-redis".into(),
                port: 6379,
                target_port: 7000,
                app_protocol: None,
            }],
            endpoints: eps,
            labels: Default::default(),
            export_to: vec!["*".into()],
        }
    }

    #[test]
    fn rules() {
        let registry = Registry {
            services: vec![
                svc(
                    "three",
                    Some([198, 19, 0, 1]),
                    vec![ep(2, true), ep(3, true), ep(4, true), ep(5, false)],
                ),
                svc("one", Some([198, 19, 0, 2]), vec![ep(6, true)]),
                svc("empty", Some([198, 19, 0, 3]), vec![ep(7, false)]),
                svc("headless", None, vec![ep(8, true)]),
            ],
            ..Registry::default()
        };
        let m = |vip: &str, svc: &str| {
            format!(
                "-A FERRY-SERVICES -d {vip}/32 -p tcp -m tcp --dport 6379 -m comment --comment \"default/{svc}:tcp-redis\""
            )
        };
        let three = m("198.19.0.1", "three");
        let want = format!(
            "*nat\n:FERRY-SERVICES - [0:0]\n-F FERRY-SERVICES\n-A OUTPUT -j FERRY-SERVICES\n\
             {three} -m statistic --mode random --probability 0.3333333333 -j DNAT --to-destination 198.18.0.2:7000\n\
             {three} -m statistic --mode random --probability 0.5000000000 -j DNAT --to-destination 198.18.0.3:7000\n\
             {three} -j DNAT --to-destination 198.18.0.4:7000\n\
             {} -j DNAT --to-destination 198.18.0.6:7000\n\
             COMMIT\n\
             *filter\n:FERRY-SERVICES - [0:0]\n-F FERRY-SERVICES\n-A OUTPUT -j FERRY-SERVICES\n\
             {} -j REJECT --reject-with tcp-reset\n\
             COMMIT\n",
            m("198.19.0.2", "one"),
            m("198.19.0.3", "empty"),
        );
        assert_eq!(render(&registry, true), want);
        let again = render(&registry, false);
        assert!(!again.contains("-A OUTPUT"), "{again}");
        assert_eq!(
            render(&Registry::default(), false),
            "*nat\n:FERRY-SERVICES - [0:0]\n-F FERRY-SERVICES\nCOMMIT\n*filter\n:FERRY-SERVICES - [0:0]\n-F FERRY-SERVICES\nCOMMIT\n"
        );
    }
}
