//! The bridge every pod's veth is attached to, holding the gateway address in the root
//! namespace. No NAT: the mesh stays off the outside network.

use crate::netns::{ip, ip_quiet};
use std::net::Ipv4Addr;

/// Default bridge name.
pub const DEFAULT_NAME: &str = "ferry0";

/// Creates the bridge with `gateway/prefix` and brings it up.
pub async fn create(name: &str, gateway: Ipv4Addr, prefix: u8) -> anyhow::Result<()> {
    ip(&["link", "add", name, "type", "bridge"]).await?;
    let addr = format!("{gateway}/{prefix}");
    ip(&["addr", "add", &addr, "dev", name]).await?;
    ip(&["link", "set", name, "up"]).await?;
    Ok(())
}

/// Whether a link of that name exists.
pub fn exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// Deletes the bridge (quietly when it is gone).
pub fn delete(name: &str) {
    ip_quiet(&["link", "del", name]);
}
