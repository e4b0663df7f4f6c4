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

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::istio::peer_authentication::MutualTls;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const ROOT: &str = "istio-system";

    fn pa(
        ns: &str,
        name: &str,
        selector: Option<(&str, &str)>,
        mode: Option<IstioMode>,
        ports: &[(u32, IstioMode)],
    ) -> IstioResource<PeerAuthenticationSpec> {
        IstioResource {
            api_version: "security.istio.io/v1".into(),
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: PeerAuthenticationSpec {
                selector: selector.map(|(k, v)| ferry_model::istio::WorkloadSelector {
                    match_labels: [(k.to_string(), v.to_string())].into(),
                }),
                mtls: mode.map(|m| MutualTls { mode: Some(m) }),
                port_level_mtls: ports
                    .iter()
                    .map(|(p, m)| (*p, MutualTls { mode: Some(*m) }))
                    .collect(),
            },
        }
    }

    /// Workload > namespace > mesh; UNSET inherits; port-level modes only from a workload
    /// policy; a selector in the root namespace is ignored; PERMISSIVE by default.
    #[test]
    fn scope_table() {
        use IstioMode::*;
        let labels: BTreeMap<String, String> = [("app".to_string(), "redis".to_string())].into();
        type Case = (
            &'static str,
            Vec<IstioResource<PeerAuthenticationSpec>>,
            MtlsMode,
            Vec<(u16, MtlsMode)>,
        );
        let cases: Vec<Case> = vec![
            (
                "no policy",
                vec![],
                MtlsMode::Permissive,
                vec![(6379, MtlsMode::Permissive)],
            ),
            (
                "mesh STRICT",
                vec![pa(ROOT, "mesh", None, Some(Strict), &[])],
                MtlsMode::Strict,
                vec![],
            ),
            (
                "namespace beats mesh",
                vec![
                    pa(ROOT, "mesh", None, Some(Strict), &[]),
                    pa("default", "ns", None, Some(Disable), &[]),
                ],
                MtlsMode::Disable,
                vec![],
            ),
            (
                "workload beats namespace",
                vec![
                    pa("default", "ns", None, Some(Disable), &[]),
                    pa("default", "w", Some(("app", "redis")), Some(Strict), &[]),
                ],
                MtlsMode::Strict,
                vec![],
            ),
            (
                "UNSET workload inherits the namespace",
                vec![
                    pa("default", "ns", None, Some(Strict), &[]),
                    pa("default", "w", Some(("app", "redis")), Some(Unset), &[]),
                ],
                MtlsMode::Strict,
                vec![],
            ),
            (
                "a selector that does not match",
                vec![pa(
                    "default",
                    "w",
                    Some(("app", "other")),
                    Some(Disable),
                    &[],
                )],
                MtlsMode::Permissive,
                vec![],
            ),
            (
                "another namespace's policy",
                vec![pa("prod", "ns", None, Some(Strict), &[])],
                MtlsMode::Permissive,
                vec![],
            ),
            (
                "a selector in the root namespace is ignored (mesh-wide)",
                vec![pa(ROOT, "m", Some(("app", "other")), Some(Strict), &[])],
                MtlsMode::Strict,
                vec![],
            ),
            (
                "portLevelMtls from a workload policy",
                vec![pa(
                    "default",
                    "w",
                    Some(("app", "redis")),
                    Some(Strict),
                    &[(6379, Disable), (16379, Unset)],
                )],
                MtlsMode::Strict,
                vec![
                    (6379, MtlsMode::Disable),
                    (16379, MtlsMode::Strict),
                    (26379, MtlsMode::Strict),
                ],
            ),
            (
                "portLevelMtls without a selector does nothing",
                vec![pa("default", "ns", None, Some(Strict), &[(6379, Disable)])],
                MtlsMode::Strict,
                vec![(6379, MtlsMode::Strict)],
            ),
        ];
        for (what, policies, mode, ports) in cases {
            let refs: Vec<_> = policies.iter().collect();
            let p = policies_for(&refs, ROOT, "default", &labels);
            assert_eq!(p.mode().0, mode, "{what}");
            for (port, want) in ports {
                assert_eq!(p.port_mode(port), want, "{what}: port {port}");
            }
        }
    }

    #[test]
    fn the_oldest_policy_of_a_scope_wins_and_the_other_is_reported() {
        let a = pa("default", "a", None, Some(IstioMode::Strict), &[]);
        let b = pa("default", "b", None, Some(IstioMode::Disable), &[]);
        let refs = vec![&a, &b];
        let p = policies_for(&refs, ROOT, "default", &BTreeMap::new());
        assert_eq!(p.mode(), (MtlsMode::Strict, Some("default/a".into())));
        assert_eq!(p.shadowed.len(), 1);
    }
}
