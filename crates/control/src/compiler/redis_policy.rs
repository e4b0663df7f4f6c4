//! RedisPolicies (`ferry.dev/v1alpha1`) compiled into the outbound host:ports they select: a
//! service's ports (or the one `port`), restricted to a subset's connections when the policy
//! names one, or — for a StatefulSet pod's own name — to that pod, both on the pod's name and
//! on its headless service. A mirror subset becomes a cluster the configuration carries.
//!
//! Precedence follows DestinationRules': a policy in the client's namespace, then the
//! service's, then the root namespace; the oldest first among equals. Every policy that
//! applies to a port is listed, most specific first (a pod, then a subset, then the rest),
//! and the proxy uses the first one that matches a connection.

use ferry_model::IstioResource;
use ferry_model::ferry::RedisPolicySpec;
use ferry_model::resolve_host;
use ferry_proto::config::{OutboundPort, RedisMirrorTarget, RedisPortPolicy, cluster_name};

use super::Context;
use super::scope::{id, namespace, order_key};
use crate::registry::Registry;

/// A RedisPolicy.
pub type Policy<'a> = &'a IstioResource<RedisPolicySpec>;

/// The RedisPolicies in force, as the registry holds them ([`attach`] puts them in
/// precedence order).
pub(crate) fn of(registry: &Registry) -> Vec<Policy<'_>> {
    registry.policies.redis_policies.iter().collect()
}

/// Attaches `policies` to the outbound ports they select, and asks for their mirror
/// clusters.
pub(crate) fn attach(cx: &mut Context<'_>, policies: &[Policy<'_>], outbound: &mut [OutboundPort]) {
    let mut ordered: Vec<Policy<'_>> = policies.to_vec();
    ordered.sort_by(|a, b| order_key(a).cmp(&order_key(b)));
    // (outbound index, rank, entry)
    let mut found: Vec<(usize, (u8, u8, usize), RedisPortPolicy)> = Vec::new();
    for (age, p) in ordered.iter().enumerate() {
        let ns = namespace(&p.metadata);
        let Some(raw) = p.spec.host.as_deref() else {
            continue;
        };
        // `redis`, `redis.ns`, `redis-0.redis` (in the policy's namespace), or a full name.
        let candidates = [
            resolve_host(raw, ns, &cx.domain),
            format!("{raw}.svc.{}", cx.domain),
            format!("{raw}.{ns}.svc.{}", cx.domain),
        ];
        let Some((host, target)) = candidates
            .iter()
            .find_map(|h| cx.hosts.get(h).map(|t| (h.clone(), *t)))
        else {
            cx.warn(format!(
                "RedisPolicy {}: host {raw} is not a known service or StatefulSet pod; it applies to nothing",
                id(p)
            ));
            continue;
        };
        let scope_rank = if ns == cx.client_ns {
            0
        } else if ns == target.service.namespace {
            1
        } else if ns == cx.root_ns {
            2
        } else {
            3
        };
        let pods: Vec<String> = target.pod.map(|e| vec![e.pod.clone()]).unwrap_or_default();
        let service_host = target.service.fqdn.clone();
        let port = p.spec.port.and_then(|n| u16::try_from(n).ok());
        let mut matched = false;
        for (i, out) in outbound.iter().enumerate() {
            let on_host = out.host == host || (target.pod.is_some() && out.host == service_host);
            if !on_host || port.is_some_and(|n| n != out.port) {
                continue;
            }
            if out.protocol.is_http() {
                cx.warn(format!(
                    "RedisPolicy {}: port {} of {} is HTTP; the policy does not apply there",
                    id(p),
                    out.port,
                    out.host
                ));
                continue;
            }
            matched = true;
            let mirror = p.spec.mirror.as_ref().and_then(|m| {
                let subset = m.subset.as_deref()?;
                let mirror_host = m
                    .host
                    .as_deref()
                    .map_or_else(|| service_host.clone(), |h| resolve_host(h, ns, &cx.domain));
                cx.need(&mirror_host, out.port, Some(subset));
                Some(RedisMirrorTarget {
                    cluster: cluster_name(out.port, Some(subset), &mirror_host),
                    percentage: m.percentage.unwrap_or(100.0),
                })
            });
            let subset_cluster = p.spec.subset.as_deref().map(|subset| {
                cx.need(&service_host, out.port, Some(subset));
                cluster_name(out.port, Some(subset), &service_host)
            });
            let specificity = match (pods.is_empty(), p.spec.subset.is_some()) {
                (false, _) => 0,
                (true, true) => 1,
                (true, false) => 2,
            };
            found.push((
                i,
                (specificity, scope_rank, age),
                RedisPortPolicy {
                    policy: id(p),
                    subset: p.spec.subset.clone(),
                    subset_cluster,
                    pods: pods.clone(),
                    faults: p.spec.faults.clone(),
                    timeouts: p.spec.timeouts.clone(),
                    mirror,
                },
            ));
        }
        if !matched {
            cx.warn(format!(
                "RedisPolicy {}: {host} has no matching Redis port; it applies to nothing",
                id(p)
            ));
        }
    }
    found.sort_by_key(|f| (f.0, f.1));
    for (i, _, entry) in found {
        if let Some(out) = outbound.get_mut(i) {
            out.redis_policies.push(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compiler::clusters::Target;
    use crate::compiler::context;
    use crate::registry::{EndpointEntry, PortEntry, ServiceEntry};
    use ferry_model::ferry::redis_policy::{RedisAbort, RedisFault, RedisMirror};
    use ferry_proto::protocol::Protocol;

    fn service() -> ServiceEntry {
        let ep = |n: u8| EndpointEntry {
            ip: std::net::IpAddr::from([198, 18, 0, n]),
            pod: format!("redis-{n}"),
            namespace: "default".into(),
            workload: "redis".into(),
            service_account: "redis".into(),
            labels: Default::default(),
            has_sidecar: true,
            ready: true,
            hostname: Some(format!("redis-{n}.redis.default.svc.cluster.local")),
        };
        ServiceEntry {
            name: "redis".into(),
            namespace: "default".into(),
            fqdn: "redis.default.svc.cluster.local".into(),
            cluster_ip: None,
            ports: vec![PortEntry {
                name: "tcp-redis".into(),
                port: 6379,
                target_port: 6379,
                app_protocol: None,
            }],
            endpoints: vec![ep(0), ep(1)],
            labels: Default::default(),
            export_to: Vec::new(),
        }
    }

    fn port(host: &str) -> OutboundPort {
        OutboundPort {
            host: host.into(),
            port: 6379,
            protocol: Protocol::Tcp,
            addresses: Vec::new(),
            passthrough: true,
            virtual_service: None,
            http: Vec::new(),
            tcp: Vec::new(),
            tls: Vec::new(),
            default_cluster: cluster_name(6379, None, host),
            redis_policies: Vec::new(),
        }
    }

    fn policy(name: &str, ns: &str, spec: RedisPolicySpec) -> IstioResource<RedisPolicySpec> {
        IstioResource {
            api_version: "ferry.dev/v1alpha1".into(),
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec,
        }
    }

    fn abort() -> Vec<RedisFault> {
        vec![RedisFault {
            commands: vec!["GET".into()],
            abort: Some(RedisAbort {
                error: None,
                percentage: Some(20.0),
            }),
            delay: None,
        }]
    }

    const MESH: &str = r#"apiVersion: v1
kind: Service
metadata: {name: redis}
spec:
  clusterIP: None
  selector: {app: redis}
  ports: [{name: tcp-redis, port: 6379}]
---
apiVersion: v1
kind: Pod
metadata: {name: redis-0, labels: {app: redis}}
spec: {containers: [{name: redis, image: redis}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec: {containers: [{name: shell, image: busybox}]}
status: {podIP: 10.0.0.2}
"#;

    const POLICY: &str = r#"apiVersion: ferry.dev/v1alpha1
kind: RedisPolicy
metadata: {name: faults}
spec:
  host: redis
  faults:
  - commands: [GET]
    abort: {error: ERR injected, percentage: 20}
"#;

    /// The registry of a store fed `text` as one file of the file source.
    fn stored(store: &mut crate::store::Store, text: &str) -> std::sync::Arc<Registry> {
        let loaded = crate::source::files::parse_file("files:x", "mesh.yaml", text);
        assert_eq!(loaded.errors().count(), 0, "{:?}", loaded.diagnostics);
        store.apply(loaded.update);
        std::sync::Arc::new(store.registry("cluster.local", "istio-system"))
    }

    /// The policies on the client's outbound port of redis, compiled and through the cache.
    fn compiled(
        cache: &crate::compiler::cache::Cache,
        registry: &std::sync::Arc<Registry>,
    ) -> Vec<String> {
        let client = crate::registry::testing::proxy("default", "client");
        let config = crate::compiler::compile(registry, &client).config;
        let port = config
            .outbound
            .iter()
            .find(|p| p.host == "redis.default.svc.cluster.local" && p.port == 6379);
        let names: Vec<String> = port
            .map(|p| p.redis_policies.iter().map(|r| r.policy.clone()).collect())
            .unwrap_or_default();
        let rendered = match cache.prepare(registry, &client, None) {
            Ok(crate::distribution::push::Prepared::Rendered { rendered, .. }) => rendered,
            other => panic!("expected a rendered configuration, got {other:?}"),
        };
        let json = String::from_utf8(rendered.to_vec()).unwrap_or_default();
        for name in &names {
            assert!(json.contains(&format!("\"{name}\"")), "{json}");
        }
        assert_eq!(
            names.is_empty(),
            !json.contains("\"redisPolicies\""),
            "{json}"
        );
        names
    }

    #[test]
    fn stored_policies_reach_the_compiled_configuration_and_leave_it() {
        let mut store = crate::store::Store::default();
        let cache = crate::compiler::cache::Cache::new();
        let without = stored(&mut store, MESH);
        assert!(of(&without).is_empty());
        assert!(compiled(&cache, &without).is_empty());
        let with = stored(&mut store, &format!("{MESH}---\n{POLICY}"));
        assert_eq!(of(&with).len(), 1);
        assert_eq!(compiled(&cache, &with), ["default/faults"]);
        let port =
            crate::compiler::compile(&with, &crate::registry::testing::proxy("default", "client"))
                .config
                .outbound
                .into_iter()
                .find(|p| p.port == 6379)
                .map(|p| p.redis_policies);
        let faults = port
            .as_ref()
            .and_then(|p| p.first())
            .map(|p| p.faults.clone());
        assert_eq!(
            faults
                .as_ref()
                .and_then(|f| f.first())
                .and_then(|f| f.abort.clone()),
            Some(RedisAbort {
                error: Some("ERR injected".into()),
                percentage: Some(20.0),
            })
        );
        // Deleted: gone from the registry, the compiled configuration and the cache's.
        let again = stored(&mut store, MESH);
        assert!(of(&again).is_empty());
        assert!(compiled(&cache, &again).is_empty());
    }

    #[test]
    fn policies_attach_by_host_subset_and_pod_with_mirror_clusters() {
        let registry = Registry::default();
        let svc = service();
        let mut cx = context(&registry, "default", &Default::default());
        cx.hosts.insert(
            svc.fqdn.clone(),
            Target {
                service: &svc,
                pod: None,
            },
        );
        cx.hosts.insert(
            "redis-0.redis.default.svc.cluster.local".into(),
            Target {
                service: &svc,
                pod: Some(&svc.endpoints[0]),
            },
        );
        let all = policy(
            "all",
            "default",
            RedisPolicySpec {
                host: Some("redis".into()),
                faults: abort(),
                mirror: Some(RedisMirror {
                    subset: Some("v2".into()),
                    host: None,
                    percentage: None,
                }),
                ..Default::default()
            },
        );
        let pod0 = policy(
            "pod0",
            "default",
            RedisPolicySpec {
                host: Some("redis-0.redis".into()),
                faults: abort(),
                ..Default::default()
            },
        );
        let subset = policy(
            "canary",
            "default",
            RedisPolicySpec {
                host: Some("redis.default.svc.cluster.local".into()),
                subset: Some("v2".into()),
                faults: abort(),
                ..Default::default()
            },
        );
        let missing = policy(
            "missing",
            "default",
            RedisPolicySpec {
                host: Some("nope".into()),
                faults: abort(),
                ..Default::default()
            },
        );
        let mut outbound = vec![port("redis.default.svc.cluster.local")];
        attach(&mut cx, &[&all, &pod0, &subset, &missing], &mut outbound);
        let names: Vec<&str> = outbound[0]
            .redis_policies
            .iter()
            .map(|p| p.policy.as_str())
            .collect();
        assert_eq!(names, ["default/pod0", "default/canary", "default/all"]);
        assert_eq!(outbound[0].redis_policies[0].pods, ["redis-0"]);
        assert_eq!(
            outbound[0].redis_policies[2].mirror,
            Some(RedisMirrorTarget {
                cluster: "outbound|6379|v2|redis.default.svc.cluster.local".into(),
                percentage: 100.0,
            })
        );
        assert!(cx.needed.contains(&(
            "redis.default.svc.cluster.local".to_string(),
            6379,
            Some("v2".to_string())
        )));
        assert_eq!(cx.warnings.len(), 1, "{:?}", cx.warnings);
        assert!(cx.warnings[0].contains("default/missing"));
    }
}
