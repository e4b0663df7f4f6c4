//! Traffic capture for a pod: the nat rules `ferry proxy-init` installs in the pod's network
//! namespace so its TCP traffic goes through the proxy (outbound to 15001, inbound to 15006),
//! following istio-iptables' REDIRECT mode with Ferry's own chain names.
//!
//! - [`settings`]: the capture settings and the parsing of istio-iptables style flag values.
//! - [`rules`]: pure rule generation, one list per IP family.
//! - [`script`]: pure `iptables-restore` input for installing (idempotently) and removing.
//! - [`backend`]: nft vs legacy iptables selection.
//! - [`apply`]: running the save/restore commands in the current network namespace.

pub mod apply;
pub mod backend;
pub mod rules;
pub mod script;
pub mod settings;

pub use apply::{ApplyError, FamilyReport, HostSystem, Outcome, System, cleanup, dry_run, install};
pub use backend::{Backend, BackendChoice};
pub use rules::{RulesError, nat_rules};
pub use settings::{CaptureSettings, Cidr, CidrSelection, Family, PortSelection};
