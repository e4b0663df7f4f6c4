//! The one-machine mesh (`ferry up DIR`): the control plane in process, a bridge, one
//! network namespace per pod, the injected pod spec executed (redirect rules, the proxy as
//! UID 1337, then the application), cluster DNS, service rules for sidecar-less pods,
//! live reconciliation with the manifest directory, restarts and probes, and a state file
//! so that `ferry status`, `exec`, `logs` and `down` work from another terminal.
//!
//! - [`bridge`], [`netns`]: links, addresses and namespaces (through `ip`).
//! - [`pod`]: what to run for a pod, from its injected spec; [`images`]: image -> program.
//! - [`lifecycle`]: one pod's life (create, start in order, restart, probe, terminate);
//!   [`probe`]: probes; [`process`]: processes inside a namespace.
//! - [`reconcile`]: which pods to create and delete (StatefulSet ordering).
//! - [`dns`]: the cluster DNS server and the pods' name files.
//! - [`service_rules`]: cluster IPs for sidecar-less pods (what kube-proxy does).
//! - [`state`]: what a run made, on disk, and its teardown; [`progress`]: the output.
//! - [`up`]: the whole run; [`admin`]: its control socket (`ferry ca rollover`).

pub mod admin;
pub mod bridge;
pub mod dns;
pub mod images;
pub mod lifecycle;
pub mod netns;
pub mod pod;
pub mod probe;
pub mod process;
pub mod progress;
pub mod reconcile;
pub mod service_rules;
pub mod state;
pub mod up;

pub use up::{Options, run};

/// Whether this process runs as root (needed for namespaces, links and iptables).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
