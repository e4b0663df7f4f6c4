//! Distribution: the gRPC stream (`ferry.discovery.v1.ConfigDiscovery`, plaintext, port
//! 15010 by default, and over TLS on the CA's port 15012) that keeps every connected proxy's
//! configuration current.
//!
//! A proxy opens one stream and says who it is. On the TLS port it must also prove it (its
//! workload certificate, or the token it shows the CA: see [`crate::ca::caller`]) and it
//! gets only the configuration of the namespace and service account it proved; anything
//! else is refused (`Unauthenticated`, `PermissionDenied`) and logged. The plaintext port,
//! for local debugging, takes the proxy's word. The server asks a [`ConfigSource`] for that
//! proxy's configuration and sends it as a versioned snapshot, cut into chunks of a few KiB
//! (so that no stream keeps a snapshot-sized buffer), which the proxy ACKs or NACKs with a
//! reason. When the source's generation changes, each stream waits until about 100 ms after
//! the source received the change (so a burst of changes yields one push, and the source's
//! own work on it counts toward the wait), recomputes its proxy's configuration and pushes
//! it only if its hash changed.
//!
//! On the TLS port of a control plane that is the CA, each stream also carries the CA's
//! trust bundle ([`crate::ca::rollover::SharedCa`]): sent when the stream opens and on each
//! change (a root rollover, with its renewal requests), between snapshots; the proxy's trust
//! reports go back to the `SharedCa`, which the rollover waits on.
//!
//! - [`server`]: the tonic service and the listener ([`Distribution`]).
//! - [`push`]: stable hashing, version labels and the debounce window.
//! - [`status`]: what each connected proxy has been sent, ACKed and rejected, and metrics.

pub mod push;
pub mod server;
pub mod status;

pub use push::{Fingerprint, Prepared, Rendered};
pub use server::{DEFAULT_PORT, Distribution};
pub use status::{DistributionMetrics, Nacked, ProxyStatus};

use crate::registry::ProxyIdentity;
use ferry_proto::config::ProxyConfig;
use std::time::Instant;
use tokio::sync::watch;

/// Where proxies' configurations come from; the control plane's compiler implements it.
pub trait ConfigSource: Send + Sync + 'static {
    /// The configuration of `proxy`, or `None` while the control plane does not know it
    /// (the proxy then gets nothing until a later change makes it known).
    fn config_for(&self, proxy: &ProxyIdentity) -> Option<ProxyConfig>;

    /// The service account the source knows for `proxy`'s pod, which a proxy authenticated
    /// on the TLS port must have proven. The default reads it from the compiled
    /// configuration (its identity, the pod's own service account when the pod is known);
    /// sources that can look the pod up cheaply override it. `None`: unknown, no check.
    fn service_account_of(&self, proxy: &ProxyIdentity) -> Option<String> {
        self.config_for(proxy)
            .map(|c| c.identity.service_account)
            .filter(|sa| !sa.is_empty())
    }

    /// A generation counter that changes whenever any configuration may have changed.
    fn changes(&self) -> watch::Receiver<u64>;

    /// When the change behind the current generation reached the source, if it knows: the
    /// debounce window is counted from then, so that the source's own work on a change
    /// (rebuilding its registry) runs inside the window instead of before it. `None` (the
    /// default): from when a stream sees the new generation.
    fn change_received(&self) -> Option<Instant> {
        None
    }

    /// The configuration of `proxy` ready to send — unless the source can tell that it is
    /// still the one whose [`Fingerprint`] the stream holds (`held`), which spares compiling
    /// and serializing it for every proxy a change does not concern. The default renders
    /// [`ConfigSource::config_for`] and computes no fingerprint; sources that share work
    /// between proxies (see [`crate::compiler::cache::Cache`]) override it.
    fn prepare(
        &self,
        proxy: &ProxyIdentity,
        held: Option<&Fingerprint>,
    ) -> Result<Prepared, serde_json::Error> {
        let _ = held;
        Ok(match self.config_for(proxy) {
            None => Prepared::Unknown,
            Some(config) => Prepared::Rendered {
                rendered: push::render(&config)?,
                fingerprint: None,
            },
        })
    }
}
