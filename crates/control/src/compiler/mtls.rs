//! PeerAuthentication: the server-side mTLS mode of a workload and of each of its container
//! ports. Scope, most specific first: workload (a selector in the workload's namespace) >
//! namespace (no selector) > mesh (root namespace, selector ignored); the oldest policy wins
//! within a scope; `UNSET` inherits; `portLevelMtls` (keyed by container port) applies only
//! from a workload policy; the default is PERMISSIVE.

use ferry_model::IstioResource;
use ferry_model::istio::PeerAuthenticationSpec;
use ferry_model::istio::peer_authentication::{MtlsMode as IstioMode, MutualTls};
use ferry_proto::config::MtlsMode;
use std::collections::BTreeMap;

use super::scope::{id, namespace, selects};

/// The policies deciding one workload's modes.
#[derive(Debug, Default)]
pub struct PeerPolicy<'a> {
    /// Mesh-wide policy (root namespace).
    pub mesh: Option<&'a IstioResource<PeerAuthenticationSpec>>,
    /// Namespace-wide policy.
    pub namespace: Option<&'a IstioResource<PeerAuthenticationSpec>>,
    /// Workload policy (with a selector).
    pub workload: Option<&'a IstioResource<PeerAuthenticationSpec>>,
    /// Policies that lost to an older one in the same scope (for warnings).
    pub shadowed: Vec<(
        &'a IstioResource<PeerAuthenticationSpec>,
        &'a IstioResource<PeerAuthenticationSpec>,
    )>,
}

fn has_selector(pa: &PeerAuthenticationSpec) -> bool {
    pa.selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty())
}

/// Finds the policies in force for a workload in `ns` with `labels`; `all` is oldest first.
pub fn policies_for<'a>(
    all: &[&'a IstioResource<PeerAuthenticationSpec>],
    root: &str,
    ns: &str,
    labels: &BTreeMap<String, String>,
) -> PeerPolicy<'a> {
    let mut out = PeerPolicy::default();
    for pa in all.iter().copied() {
        let pa_ns = namespace(&pa.metadata);
        let slot = if pa_ns == root {
            // In the root namespace a policy is mesh-wide; its selector is ignored.
            &mut out.mesh
        } else if pa_ns != ns {
            continue;
        } else if has_selector(&pa.spec) {
            let sel = pa.spec.selector.as_ref().map(|s| &s.match_labels);
            if !sel.is_some_and(|s| selects(s, labels)) {
                continue;
            }
            &mut out.workload
        } else {
            &mut out.namespace
        };
        match slot {
            Some(winner) => out.shadowed.push((winner, pa)),
            None => *slot = Some(pa),
        }
    }
    out
}

fn mode_of(m: Option<&MutualTls>) -> Option<MtlsMode> {
    match m.and_then(|m| m.mode) {
        Some(IstioMode::Strict) => Some(MtlsMode::Strict),
        Some(IstioMode::Permissive) => Some(MtlsMode::Permissive),
        Some(IstioMode::Disable) => Some(MtlsMode::Disable),
        Some(IstioMode::Unset) | None => None,
    }
}

impl PeerPolicy<'_> {
    /// The workload-wide mode and the policy that set it.
    pub fn mode(&self) -> (MtlsMode, Option<String>) {
        [self.workload, self.namespace, self.mesh]
            .into_iter()
            .flatten()
            .find_map(|pa| mode_of(pa.spec.mtls.as_ref()).map(|m| (m, Some(id(pa)))))
            .unwrap_or((MtlsMode::Permissive, None))
    }

    /// The modes set per container port by the workload policy (`UNSET` entries inherit and
    /// are left out).
    pub fn port_modes(&self) -> BTreeMap<u16, MtlsMode> {
        let Some(pa) = self.workload else {
            return BTreeMap::new();
        };
        pa.spec
            .port_level_mtls
            .iter()
            .filter_map(|(port, m)| Some((u16::try_from(*port).ok()?, mode_of(Some(m))?)))
            .collect()
    }

    /// The mode of one container port.
    pub fn port_mode(&self, port: u16) -> MtlsMode {
        self.port_modes()
            .get(&port)
            .copied()
            .unwrap_or_else(|| self.mode().0)
    }
}
