//! Which upstream connections get TLS, decided per configuration snapshot and cached until the
//! next one: the compiled cluster's TLS mode (`ISTIO_MUTUAL` per endpoint under automatic
//! mTLS, or for all under an explicit DestinationRule; `DISABLE`; `SIMPLE`/`MUTUAL` with the
//! rule's files), the SPIFFE identities the server may present (the service accounts of the
//! service's endpoints, or the rule's `subjectAltNames`), and Istio's SNI
//! (`outbound_.<port>_.<subset>_.<host>`). A configuration without clusters (a static file)
//! falls back to automatic mTLS toward endpoints that have a sidecar.

use crate::config::snapshot::{Target, Workload};
use crate::config::{ClusterTls, Resolution, Snapshot};
use crate::identity::IdentityState;
use arc_swap::ArcSwapOption;
use ferry_model::istio::destination_rule::{ClientTlsSettings, TlsMode};
use rustls::pki_types::ServerName;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Weak};
use tracing::warn;

/// How to connect to one upstream.
#[derive(Clone)]
pub enum Decision {
    /// Plaintext.
    Plain,
    /// Istio mutual TLS with the mesh certificate; the server must be one of `identities`.
    Mesh {
        /// Accepted SPIFFE URIs (empty: any identity of the mesh roots).
        identities: Arc<[String]>,
        /// Server name sent.
        sni: Arc<str>,
    },
    /// TLS with the DestinationRule's own settings (`SIMPLE`, `MUTUAL`).
    User(Arc<UserTls>),
    /// TLS the rule asks for but that cannot be set up (a missing file...): refuse.
    Broken(Arc<str>),
}

impl std::fmt::Debug for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decision::Plain => f.write_str("Plain"),
            Decision::Mesh { identities, sni } => {
                write!(f, "Mesh {{ identities: {identities:?}, sni: {sni} }}")
            }
            Decision::User(u) => write!(f, "User({:?})", u.name),
            Decision::Broken(why) => write!(f, "Broken({why})"),
        }
    }
}

/// A DestinationRule's `SIMPLE`/`MUTUAL` client TLS, ready to use.
pub struct UserTls {
    /// rustls configuration (roots, optional client certificate).
    pub config: Arc<rustls::ClientConfig>,
    /// Server name sent and verified.
    pub name: ServerName<'static>,
}

struct ClusterEntry {
    mode: TlsMode,
    auto: bool,
    all_endpoints: bool,
    endpoints: HashMap<IpAddr, bool>,
    identities: Arc<[String]>,
    sni: Arc<str>,
    user: Option<Result<Arc<UserTls>, Arc<str>>>,
}

/// The TLS decisions of one snapshot.
pub struct Policy {
    /// Service port clusters by host, then port.
    by_host: HashMap<String, Vec<(u16, ClusterEntry)>>,
    /// Identities of each service's endpoints, by FQDN.
    identities: HashMap<String, Arc<[String]>>,
    /// The configuration lists clusters (compiled by the control plane).
    has_clusters: bool,
    /// Our metadata exchange frame.
    pub metadata_frame: Arc<[u8]>,
}

/// Istio's SNI for a mesh cluster.
pub fn istio_sni(port: u16, subset: Option<&str>, host: &str) -> String {
    format!("outbound_.{port}_.{}_.{host}", subset.unwrap_or_default())
}

fn user_tls(settings: &ClientTlsSettings, mode: TlsMode, host: &str) -> Result<UserTls, String> {
    let name_text = settings.sni.clone().unwrap_or_else(|| host.to_string());
    let name = ServerName::try_from(name_text.clone())
        .map_err(|e| format!("server name {name_text}: {e}"))?;
    let Some(ca) = &settings.ca_certificates else {
        return Err("caCertificates is required (the proxy has no system roots)".into());
    };
    let mut roots = rustls::RootCertStore::empty();
    for r in crate::identity::source::read_roots(std::path::Path::new(ca))? {
        roots.add(r).map_err(|e| format!("{ca}: {e}"))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = if mode == TlsMode::Mutual {
        let (Some(cert), Some(key)) = (&settings.client_certificate, &settings.private_key) else {
            return Err("MUTUAL needs clientCertificate and privateKey".into());
        };
        let chain = crate::identity::source::read_roots(std::path::Path::new(cert))?;
        let key_text = std::fs::read_to_string(key).map_err(|e| format!("{key}: {e}"))?;
        let key = rustls_pemfile::private_key(&mut key_text.as_bytes())
            .ok()
            .flatten()
            .ok_or_else(|| format!("{key}: no private key"))?;
        builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| e.to_string())?
    } else {
        builder.with_no_client_auth()
    };
    Ok(UserTls {
        config: Arc::new(config),
        name,
    })
}

impl Policy {
    /// The decisions of `snapshot`.
    pub fn build(snapshot: &Snapshot) -> Policy {
        let config = &snapshot.config;
        let td = match config.identity.trust_domain.as_str() {
            "" => "cluster.local",
            td => td,
        };
        let domain = &config.settings.cluster_domain;
        let mut identities: HashMap<String, Arc<[String]>> = HashMap::new();
        for svc in &config.services {
            let fqdn = format!("{}.{}.svc.{domain}", svc.name, svc.namespace);
            let set: BTreeSet<String> = svc
                .endpoints
                .iter()
                .filter(|ep| !ep.service_account.is_empty())
                .map(|ep| {
                    let ns = ep.namespace.as_deref().unwrap_or(&svc.namespace);
                    format!("spiffe://{td}/ns/{ns}/sa/{}", ep.service_account)
                })
                .collect();
            identities.insert(fqdn, set.into_iter().collect::<Vec<_>>().into());
        }
        let mut by_host: HashMap<String, Vec<(u16, ClusterEntry)>> = HashMap::new();
        for c in config.clusters.iter().filter(|c| c.subset.is_none()) {
            let ClusterTls {
                mode,
                auto,
                settings,
            } = &c.tls;
            let explicit_sans = settings
                .as_ref()
                .map(|s| s.subject_alt_names.clone())
                .filter(|s| !s.is_empty());
            let ids = match explicit_sans {
                Some(s) => s.into(),
                None => identities
                    .get(&c.host)
                    .cloned()
                    .unwrap_or_else(|| Arc::from([])),
            };
            let user = match (mode, settings) {
                (TlsMode::Simple | TlsMode::Mutual, Some(s)) => {
                    Some(user_tls(s, *mode, &c.host).map(Arc::new).map_err(|e| {
                        warn!("cluster {}: TLS origination is not possible: {e}", c.name);
                        Arc::from(e.as_str())
                    }))
                }
                (TlsMode::Simple | TlsMode::Mutual, None) => {
                    Some(Err(Arc::from("TLS settings missing")))
                }
                _ => None,
            };
            let entry = ClusterEntry {
                mode: *mode,
                auto: *auto,
                all_endpoints: c.resolution == Resolution::OriginalDst
                    && c.endpoints.iter().all(|e| e.mtls)
                    && !c.endpoints.is_empty(),
                endpoints: c.endpoints.iter().map(|e| (e.ip, e.mtls)).collect(),
                identities: ids,
                sni: istio_sni(c.port, None, &c.host).into(),
                user,
            };
            by_host
                .entry(c.host.clone())
                .or_default()
                .push((c.port, entry));
        }
        Policy {
            by_host,
            identities,
            has_clusters: !config.clusters.is_empty(),
            metadata_frame: super::peer::encode(&snapshot.me, &config.identity.cluster).into(),
        }
    }

    fn entry(&self, host: &str, port: u16) -> Option<&ClusterEntry> {
        self.by_host
            .get(host)?
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, e)| e)
    }

    /// How to connect to endpoint `ip` of `target` (whose workload is `workload`, if known).
    pub fn decide(&self, target: &Target, ip: IpAddr, workload: Option<&Workload>) -> Decision {
        self.decide_at(&target.service.fqdn, target.port, ip, workload)
    }

    /// How to connect to endpoint `ip` of the service `host:port`.
    pub fn decide_at(
        &self,
        host: &str,
        port: u16,
        ip: IpAddr,
        workload: Option<&Workload>,
    ) -> Decision {
        let Some(e) = self.entry(host, port) else {
            if !self.has_clusters && workload.is_some_and(|w| w.has_sidecar) {
                return Decision::Mesh {
                    identities: self
                        .identities
                        .get(host)
                        .cloned()
                        .unwrap_or_else(|| Arc::from([])),
                    sni: istio_sni(port, None, host).into(),
                };
            }
            return Decision::Plain;
        };
        match e.mode {
            TlsMode::Disable => Decision::Plain,
            TlsMode::IstioMutual => {
                let on =
                    !e.auto || e.all_endpoints || e.endpoints.get(&ip).copied().unwrap_or(false);
                if on {
                    Decision::Mesh {
                        identities: e.identities.clone(),
                        sni: e.sni.clone(),
                    }
                } else {
                    Decision::Plain
                }
            }
            TlsMode::Simple | TlsMode::Mutual => match &e.user {
                Some(Ok(u)) => Decision::User(u.clone()),
                Some(Err(why)) => Decision::Broken(why.clone()),
                None => Decision::Broken(Arc::from("TLS settings missing")),
            },
        }
    }
}

struct Cached {
    snapshot: Weak<Snapshot>,
    policy: Arc<Policy>,
}

/// What the data path needs for mutual TLS: the identity in force and the decisions of the
/// configuration in force (built on first use after each configuration change).
pub struct MeshTls {
    /// The proxy's certificate.
    pub identity: Arc<IdentityState>,
    cache: ArcSwapOption<Cached>,
}

impl MeshTls {
    /// Mutual TLS with the certificates of `identity`.
    pub fn new(identity: Arc<IdentityState>) -> Self {
        Self {
            identity,
            cache: ArcSwapOption::empty(),
        }
    }

    /// The decisions of `snapshot`.
    pub fn policy(&self, snapshot: &Arc<Snapshot>) -> Arc<Policy> {
        if let Some(c) = self.cache.load().as_ref()
            && std::ptr::eq(c.snapshot.as_ptr(), Arc::as_ptr(snapshot))
        {
            return c.policy.clone();
        }
        let policy = Arc::new(Policy::build(snapshot));
        self.cache.store(Some(Arc::new(Cached {
            snapshot: Arc::downgrade(snapshot),
            policy: policy.clone(),
        })));
        policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::snapshot::Outbound;
    use crate::config::{Cluster, ClusterEndpoint, Endpoint, ProxyConfig, Service, ServicePort};

    fn ep(ip: &str, sa: &str, sidecar: bool) -> Endpoint {
        Endpoint {
            ip: ip.parse().expect("ip"),
            pod: format!("pod-{ip}"),
            workload: "w".into(),
            namespace: None,
            service_account: sa.into(),
            labels: Default::default(),
            has_sidecar: sidecar,
            ready: true,
        }
    }

    fn config(clusters: Vec<Cluster>) -> ProxyConfig {
        ProxyConfig {
            services: vec![Service {
                name: "redis".into(),
                namespace: "default".into(),
                cluster_ip: Some("198.19.0.10".parse().expect("ip")),
                ports: vec![ServicePort {
                    name: "tcp-redis".into(),
                    port: 6379,
                    ..Default::default()
                }],
                endpoints: vec![
                    ep("198.18.0.2", "redis", true),
                    ep("198.18.0.3", "redis-old", false),
                ],
            }],
            clusters,
            ..Default::default()
        }
    }

    fn cluster(mode: TlsMode, auto: bool, mtls: [bool; 2]) -> Cluster {
        Cluster {
            name: "outbound|6379||redis.default.svc.cluster.local".into(),
            host: "redis.default.svc.cluster.local".into(),
            port: 6379,
            subset: None,
            subset_labels: Default::default(),
            resolution: Resolution::Eds,
            endpoints: ["198.18.0.2", "198.18.0.3"]
                .iter()
                .zip(mtls)
                .map(|(ip, mtls)| ClusterEndpoint {
                    ip: ip.parse().expect("ip"),
                    port: 6379,
                    pod: String::new(),
                    ready: true,
                    mtls,
                })
                .collect(),
            destination_rule: None,
            load_balancer: Default::default(),
            connection_pool: None,
            outlier_detection: None,
            tls: ClusterTls {
                mode,
                auto,
                settings: None,
            },
        }
    }

    /// (what, clusters, mTLS to the first endpoint, to the second)
    #[test]
    fn decisions_table() {
        let cases = vec![
            ("static file: sidecar only", vec![], true, false),
            (
                "auto mTLS per endpoint",
                vec![cluster(TlsMode::IstioMutual, true, [true, false])],
                true,
                false,
            ),
            (
                "explicit ISTIO_MUTUAL: all",
                vec![cluster(TlsMode::IstioMutual, false, [true, true])],
                true,
                true,
            ),
            (
                "DISABLE",
                vec![cluster(TlsMode::Disable, false, [false, false])],
                false,
                false,
            ),
            (
                "auto, server disables",
                vec![cluster(TlsMode::Disable, true, [false, false])],
                false,
                false,
            ),
        ];
        for (what, clusters, first, second) in cases {
            let snap = Snapshot::compile(config(clusters));
            let Outbound::Service(t) = snap.outbound("198.19.0.10:6379".parse().expect("a")) else {
                panic!("{what}: not routed");
            };
            let policy = Policy::build(&snap);
            let got: Vec<bool> = t
                .endpoints
                .iter()
                .map(|u| {
                    matches!(
                        policy.decide(&t, u.ip, Some(&u.workload)),
                        Decision::Mesh { .. }
                    )
                })
                .collect();
            assert_eq!(got, vec![first, second], "{what}");
            if let Decision::Mesh { identities, sni } =
                policy.decide(&t, t.endpoints[0].ip, Some(&t.endpoints[0].workload))
            {
                assert_eq!(
                    &*identities,
                    &[
                        "spiffe://cluster.local/ns/default/sa/redis".to_string(),
                        "spiffe://cluster.local/ns/default/sa/redis-old".to_string()
                    ],
                    "{what}"
                );
                assert_eq!(&*sni, "outbound_.6379_._.redis.default.svc.cluster.local");
            }
        }
    }

    #[test]
    fn user_tls_without_files_is_refused_not_sent_in_clear() {
        let mut c = cluster(TlsMode::Simple, false, [false, false]);
        c.tls.settings = Some(ClientTlsSettings {
            mode: Some(TlsMode::Simple),
            ..Default::default()
        });
        let snap = Snapshot::compile(config(vec![c]));
        let Outbound::Service(t) = snap.outbound("198.19.0.10:6379".parse().expect("a")) else {
            panic!("not routed");
        };
        let policy = Policy::build(&snap);
        assert!(matches!(
            policy.decide(&t, t.endpoints[0].ip, None),
            Decision::Broken(_)
        ));
    }
}
