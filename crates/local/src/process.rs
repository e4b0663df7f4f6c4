//! Processes inside a pod's namespace (`ip netns exec`, which also bind-mounts the pod's
//! `/etc/netns/<name>/` files), each in its own process group with output appended to a
//! log file (kept across restarts), and killing them: by group, or every process left in a
//! namespace.

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

/// Runs the child in a UTS namespace of its own named `hostname` (as a pod's containers
/// see the pod's hostname), then `ip netns exec` puts it in the pod's network namespace.
pub fn set_hostname(cmd: &mut std::process::Command, hostname: &str) {
    use std::os::unix::process::CommandExt;
    let name: Vec<u8> = hostname.bytes().take(63).collect();
    // SAFETY: the closure runs in the forked child before exec and only makes two system
    // calls (unshare, sethostname) on memory it owns; both are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWUTS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::sethostname(name.as_ptr().cast(), name.len()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn command(netns: &str, hostname: &str, c: &ContainerPlan, log: &Path) -> anyhow::Result<Command> {
    let Some((program, args)) = c.argv.split_first() else {
        bail!("container {} has no program", c.name);
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut std_cmd = std::process::Command::new("ip");
    set_hostname(&mut std_cmd, hostname);
    let mut cmd = Command::from(std_cmd);
    cmd.args(["netns", "exec", netns, program])
        .args(args)
        .env("HOSTNAME", hostname)
        .envs(c.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone()?))
        .stderr(Stdio::from(file))
        .process_group(0)
        .kill_on_drop(true);
    Ok(cmd)
}

/// Starts a container's process in the namespace with the pod's hostname, its output
/// appended to `log`.
pub fn spawn(netns: &str, hostname: &str, c: &ContainerPlan, log: &Path) -> anyhow::Result<Proc> {
    let child = command(netns, hostname, c, log)?
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
pub async fn run_to_end(
    netns: &str,
    hostname: &str,
    c: &ContainerPlan,
    log: &Path,
) -> anyhow::Result<()> {
    let status = command(netns, hostname, c, log)?
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
