//! Network namespaces and the `ip` commands that build them: one namespace per pod with a
//! veth pair to the bridge, the pod address, loopback up and a default route via the bridge.

use anyhow::{Context, bail};
use std::net::Ipv4Addr;
use tokio::process::Command;

/// Runs `ip ARGS`, failing with its stderr.
pub async fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .await
        .context("running `ip` (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip ARGS` synchronously, ignoring failure (teardown of things that may be gone;
/// synchronous so that drop guards can call it).
pub fn ip_quiet(args: &[&str]) -> Option<String> {
    std::process::Command::new("ip")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Where one pod is plugged in.
#[derive(Debug, Clone)]
pub struct Attachment<'a> {
    /// Namespace name (`ferry-default-redis-0`).
    pub netns: &'a str,
    /// Host-side veth name (≤ 15 characters).
    pub veth: &'a str,
    /// The bridge.
    pub bridge: &'a str,
    /// Pod address.
    pub ip: Ipv4Addr,
    /// Prefix length of the pod network.
    pub prefix: u8,
    /// The bridge address, the pod's default gateway.
    pub gateway: Ipv4Addr,
}

/// Creates the namespace and plugs it into the bridge.
pub async fn create(a: &Attachment<'_>) -> anyhow::Result<()> {
    let peer = format!("{}p", a.veth);
    ip(&["netns", "add", a.netns]).await?;
    ip(&["-n", a.netns, "link", "set", "lo", "up"]).await?;
    ip(&[
        "link", "add", a.veth, "type", "veth", "peer", "name", &peer, "netns", a.netns,
    ])
    .await?;
    ip(&["link", "set", a.veth, "master", a.bridge]).await?;
    ip(&["link", "set", a.veth, "up"]).await?;
    ip(&["-n", a.netns, "link", "set", &peer, "name", "eth0"]).await?;
    let addr = format!("{}/{}", a.ip, a.prefix);
    ip(&["-n", a.netns, "addr", "add", &addr, "dev", "eth0"]).await?;
    ip(&["-n", a.netns, "link", "set", "eth0", "up"]).await?;
    let gw = a.gateway.to_string();
    ip(&["-n", a.netns, "route", "add", "default", "via", &gw]).await?;
    Ok(())
}

/// The processes inside a namespace (`ip netns pids`).
pub fn pids(netns: &str) -> Vec<i32> {
    ip_quiet(&["netns", "pids", netns])
        .map(|out| out.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Whether a namespace of that name exists.
pub fn exists(netns: &str) -> bool {
    std::path::Path::new("/run/netns").join(netns).exists()
}

/// Deletes a namespace and the host side of its veth pair.
pub fn delete(netns: &str, veth: &str) {
    ip_quiet(&["netns", "del", netns]);
    ip_quiet(&["link", "del", veth]);
}
