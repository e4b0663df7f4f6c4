//! The one-machine mesh (`ferry up DIR`): the control plane in process, a bridge, one
//! network namespace per pod, the injected pod spec executed (redirect rules, the proxy as
//! UID 1337, then the application), names through per-pod `hosts` files, and a state file
//! so that `ferry status`, `exec`, `logs` and `down` work from another terminal.
//!
//! - [`bridge`], [`netns`]: links, addresses and namespaces (through `ip`).
//! - [`pod`]: what to run for a pod, from its injected spec; [`images`]: image -> program.
//! - [`process`]: processes inside a namespace, their logs, and killing them.
//! - [`dns`]: the names a pod resolves.
//! - [`state`]: what a run made, on disk, and its teardown.
//! - [`up`]: the whole run.

pub mod bridge;
pub mod dns;
pub mod images;
pub mod netns;
pub mod pod;
pub mod process;
pub mod state;
pub mod up;

pub use up::{Options, run};

/// Whether this process runs as root (needed for namespaces, links and iptables).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
