//! Processes inside a pod's namespace (`ip netns exec`, which also bind-mounts the pod's
//! `/etc/netns/<name>/` files), each in its own process group with output to a log file,
//! and killing them: by group, or every process left in a namespace.

use crate::pod::ContainerPlan;
use anyhow::{Context, bail};
use std::path::Path;
use std::process::Stdio;
use tokio::process::{Child, Command};

/// A running container process.
#[derive(Debug)]
pub struct Proc {
    /// Container name.
    pub name: String,
    /// The child (`ip netns exec` execs into the program, so this is the program).
    pub child: Child,
    /// Its pid, which is also its process group.
    pub pid: i32,
}

fn command(netns: &str, c: &ContainerPlan, log: &Path) -> anyhow::Result<Command> {
    let Some((program, args)) = c.argv.split_first() else {
        bail!("container {} has no program", c.name);
    };
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, program])
        .args(args)
        .envs(c.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone()?))
        .stderr(Stdio::from(file))
        .process_group(0)
        .kill_on_drop(true);
    Ok(cmd)
}

/// Starts a container's process in the namespace, its output appended to `log`.
pub fn spawn(netns: &str, c: &ContainerPlan, log: &Path) -> anyhow::Result<Proc> {
    let child = command(netns, c, log)?
        .spawn()
        .with_context(|| format!("starting {}", c.name))?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .unwrap_or_default();
    Ok(Proc {
        name: c.name.clone(),
        child,
        pid,
    })
}

/// Runs an init container to completion; fails with the end of its log.
pub async fn run_to_end(netns: &str, c: &ContainerPlan, log: &Path) -> anyhow::Result<()> {
    let status = command(netns, c, log)?
        .status()
        .await
        .with_context(|| format!("running init container {}", c.name))?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        bail!(
            "init container {} failed ({status}): {}",
            c.name,
            text.trim()
        );
    }
    Ok(())
}

/// Sends a signal to a process group.
pub fn signal_group(pgid: i32, signal: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory involved.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// Kills (SIGKILL) every process inside a namespace.
pub fn kill_netns(netns: &str) {
    for pid in crate::netns::pids(netns) {
        if pid > 1 {
            // SAFETY: as above, for one process.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Whether a process listens on a TCP port in its network namespace (`/proc/PID/net/tcp`).
pub fn listens(pid: i32, port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["tcp", "tcp6"].iter().any(|f| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{f}"))
            .map(|text| {
                text.lines().skip(1).any(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    cols.len() > 3 && cols[1].ends_with(&want) && cols[3] == "0A"
                })
            })
            .unwrap_or(false)
    })
}
