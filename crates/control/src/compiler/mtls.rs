//! PeerAuthentication: the server-side mTLS mode of a workload and of each of its container
//! ports. Scope, most specific first: workload (a selector in the workload's namespace) >
//! namespace (no selector) > mesh (root namespace, selector ignored); the oldest policy wins
//! within a scope; `UNSET` inherits; `portLevelMtls` (keyed by container port) applies only
//! from a workload policy; the default is PERMISSIVE.
//!
//! The client side follows from it (in `clusters`): automatic mTLS goes to an endpoint that
//! has a sidecar and whose mode on the target port is not DISABLE; for a headless service
//! (Istio's ORIGINAL_DST clusters, issue #27376) to all endpoints only if every one
//! qualifies, else plaintext to all with a warning naming the pods that do not. The tests
//! below hold that table for the whole compiler.

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

/// The headless services that automatic mTLS falls back to plaintext for because some of
/// their pods have no sidecar (while others do): one line each, naming the pods, for the
/// control plane's log. (A PeerAuthentication `DISABLE` on a pod has the same effect; the
/// compiler's per-proxy warnings name those too.)
pub fn headless_fallbacks(
    registry: &crate::registry::Registry,
) -> std::collections::BTreeSet<String> {
    registry
        .services
        .iter()
        .filter(|svc| svc.cluster_ip.is_none())
        .filter(|svc| svc.endpoints.iter().any(|ep| ep.has_sidecar))
        .filter_map(|svc| {
            let mut without: Vec<&str> = svc
                .endpoints
                .iter()
                .filter(|ep| !ep.has_sidecar)
                .map(|ep| ep.pod.as_str())
                .collect();
            without.sort_unstable();
            without.dedup();
            (!without.is_empty()).then(|| {
                format!(
                    "headless service {}: pod(s) {} without a sidecar, so automatic mTLS sends \
                     plaintext to every endpoint (as Istio does)",
                    svc.fqdn,
                    without.join(", ")
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::istio::peer_authentication::MutualTls;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn headless_fallbacks_name_the_services_and_pods() {
        use crate::registry::Registry;
        use crate::registry::testing::{endpoint, service};
        let ep = |pod: &str, ip: &str, sidecar| endpoint("db", pod, ip, &[], sidecar);
        type Case<'a> = (&'a str, Option<&'a str>, Vec<bool>, Option<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "one pod without",
                None,
                vec![true, false, true],
                Some("r-1"),
            ),
            (
                "two without",
                None,
                vec![false, true, false],
                Some("r-0, r-2"),
            ),
            ("all with", None, vec![true, true], None),
            (
                "none with (plaintext anyway)",
                None,
                vec![false, false],
                None,
            ),
            (
                "cluster IP: per endpoint",
                Some("10.0.0.9"),
                vec![true, false],
                None,
            ),
        ];
        for (what, vip, sidecars, want) in cases {
            let endpoints = sidecars
                .iter()
                .enumerate()
                .map(|(i, s)| ep(&format!("r-{i}"), &format!("10.1.0.{i}"), *s))
                .collect();
            let registry = Registry {
                services: vec![service("db", "r", vip, &[("tcp", 6379)], endpoints)],
                ..Registry::default()
            };
            let got = headless_fallbacks(&registry);
            match want {
                Some(pods) => {
                    assert_eq!(got.len(), 1, "{what}: {got:?}");
                    let line = got.iter().next().map(String::as_str).unwrap_or_default();
                    assert!(
                        line.starts_with(&format!(
                            "headless service r.db.svc.cluster.local: pod(s) {pods} "
                        )),
                        "{what}: {line}"
                    );
                }
                None => assert!(got.is_empty(), "{what}: {got:?}"),
            }
        }
    }

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

    /// The client side of automatic mTLS, through the whole compiler: a headless service gets
    /// mTLS to all its endpoints only if every one has a sidecar whose mode on the port is
    /// not DISABLE, else plaintext to all (as Istio since 1.8, issue #27376) with a warning
    /// naming the pods; a service with a cluster IP decides per endpoint; a pod's own name
    /// (`redis-0.redis`) has no cluster of its own, so the service's decision covers it.
    #[test]
    fn automatic_mtls_table() {
        use crate::registry::{EndpointEntry, PortEntry, ProxyIdentity, Registry, ServiceEntry};
        use IstioMode::*;
        use std::net::{IpAddr, Ipv4Addr};

        const FQDN: &str = "redis.default.svc.cluster.local";
        /// (pod, has a sidecar)
        type Pods = &'static [(&'static str, bool)];
        struct Row {
            what: &'static str,
            headless: bool,
            pods: Pods,
            policies: Vec<IstioResource<PeerAuthenticationSpec>>,
            /// mTLS toward each pod, in `pods` order.
            mtls: &'static [bool],
            /// Pods the warning names; empty for no warning.
            warned: &'static [&'static str],
        }
        let both: Pods = &[("redis-0", true), ("redis-1", true)];
        let mixed: Pods = &[("redis-0", true), ("redis-1", true), ("redis-plain", false)];
        let rows = vec![
            Row {
                what: "headless, every pod has a sidecar",
                headless: true,
                pods: both,
                policies: vec![],
                mtls: &[true, true],
                warned: &[],
            },
            Row {
                what: "headless, one pod without a sidecar: plaintext to all",
                headless: true,
                pods: mixed,
                policies: vec![],
                mtls: &[false, false, false],
                warned: &["redis-plain"],
            },
            Row {
                what: "headless, one pod without a sidecar, even under a STRICT namespace",
                headless: true,
                pods: mixed,
                policies: vec![pa("default", "ns", None, Some(Strict), &[])],
                mtls: &[false, false, false],
                warned: &["redis-plain"],
            },
            Row {
                what: "headless, one pod's workload policy DISABLEs mTLS",
                headless: true,
                pods: both,
                policies: vec![pa(
                    "default",
                    "w",
                    Some(("pod", "redis-1")),
                    Some(Disable),
                    &[],
                )],
                mtls: &[false, false],
                warned: &["redis-1"],
            },
            Row {
                what: "headless, one pod DISABLEs mTLS on the target port only",
                headless: true,
                pods: both,
                policies: vec![pa(
                    "default",
                    "w",
                    Some(("pod", "redis-0")),
                    Some(Strict),
                    &[(6379, Disable)],
                )],
                mtls: &[false, false],
                warned: &["redis-0"],
            },
            Row {
                what: "headless, DISABLE on another port changes nothing",
                headless: true,
                pods: both,
                policies: vec![pa(
                    "default",
                    "w",
                    Some(("pod", "redis-0")),
                    None,
                    &[(16379, Disable)],
                )],
                mtls: &[true, true],
                warned: &[],
            },
            Row {
                what: "headless, no pod has a sidecar: plaintext, nothing to warn about",
                headless: true,
                pods: &[("redis-0", false), ("redis-1", false)],
                policies: vec![],
                mtls: &[false, false],
                warned: &[],
            },
            Row {
                what: "cluster IP, one pod without a sidecar: decided per endpoint",
                headless: false,
                pods: mixed,
                policies: vec![],
                mtls: &[true, true, false],
                warned: &[],
            },
        ];
        for row in rows {
            let endpoints: Vec<EndpointEntry> = row
                .pods
                .iter()
                .enumerate()
                .map(|(i, (pod, sidecar))| EndpointEntry {
                    ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10 + i as u8)),
                    pod: (*pod).into(),
                    namespace: "default".into(),
                    workload: "redis".into(),
                    service_account: "redis".into(),
                    labels: [
                        ("app".to_string(), "redis".to_string()),
                        ("pod".to_string(), (*pod).to_string()),
                    ]
                    .into(),
                    has_sidecar: *sidecar,
                    ready: true,
                    hostname: Some(format!("{pod}.{FQDN}")),
                })
                .collect();
            let registry = Registry {
                services: vec![ServiceEntry {
                    name: "redis".into(),
                    namespace: "default".into(),
                    fqdn: FQDN.into(),
                    cluster_ip: (!row.headless).then_some(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1))),
                    ports: vec![PortEntry {
                        name: "tcp-redis".into(),
                        port: 6379,
                        target_port: 6379,
                        app_protocol: None,
                    }],
                    endpoints,
                    labels: Default::default(),
                    export_to: vec!["*".into()],
                }],
                policies: crate::registry::Policies {
                    peer_authentications: row.policies,
                    ..Default::default()
                },
                cluster_domain: "cluster.local".into(),
                root_namespace: ROOT.into(),
                ..Default::default()
            };
            let client = ProxyIdentity {
                pod: "client".into(),
                namespace: "default".into(),
                service_account: "client".into(),
                ..Default::default()
            };
            let compiled = super::super::compile(&registry, &client);
            let what = row.what;
            let cluster = compiled
                .config
                .clusters
                .iter()
                .find(|c| c.name == format!("outbound|6379||{FQDN}"))
                .unwrap_or_else(|| panic!("{what}: no cluster for the service"));
            let got: Vec<bool> = row
                .pods
                .iter()
                .map(|(pod, _)| {
                    cluster
                        .endpoints
                        .iter()
                        .find(|e| e.pod == *pod)
                        .unwrap_or_else(|| panic!("{what}: no endpoint {pod}"))
                        .mtls
                })
                .collect();
            assert_eq!(got, row.mtls, "{what}");
            assert!(cluster.tls.auto, "{what}");
            // No pod name has a cluster of its own (no VirtualService binds one).
            assert!(
                compiled
                    .config
                    .clusters
                    .iter()
                    .all(|c| !c.host.starts_with("redis-")),
                "{what}: {:?}",
                compiled
                    .config
                    .clusters
                    .iter()
                    .map(|c| &c.name)
                    .collect::<Vec<_>>()
            );
            let warning = compiled
                .warnings
                .iter()
                .find(|w| w.starts_with(&format!("headless service {FQDN}")));
            match (row.warned, warning) {
                ([], None) => {}
                ([], Some(w)) => panic!("{what}: unexpected warning {w}"),
                (pods, Some(w)) => {
                    assert!(w.contains("plaintext to every endpoint"), "{what}: {w}");
                    for pod in pods {
                        assert!(w.contains(pod), "{what}: {w} does not name {pod}");
                    }
                    for (pod, _) in row.pods.iter().filter(|(p, _)| !pods.contains(p)) {
                        assert!(!w.contains(&format!(" {pod}")), "{what}: {w} names {pod}");
                    }
                }
                (_, None) => panic!("{what}: no warning in {:?}", compiled.warnings),
            }
        }
    }
}
