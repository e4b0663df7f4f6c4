//! A mesh fed the changes a source knows about (updates scoped to the objects that changed,
//! as the `--kube` source hands them), whose registry is brought up to date in place and
//! whose compile cache keeps what still holds, prepares exactly the configurations of a
//! mesh built from scratch from the same objects, after every change.

use ferry_control::distribution::{ConfigSource, Prepared};
use ferry_control::plane::{Mesh, PlaneOptions};
use ferry_control::registry::ProxyIdentity;
use ferry_control::registry::testing::resource;
use ferry_control::source::Loaded;
use ferry_control::store::{Entry, Kind, Object, ObjectKey, SourceUpdate};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

fn entry(kind: Kind, ns: &str, name: &str, object: Object) -> Entry {
    let key = ObjectKey::new(kind, ns, name);
    Entry {
        origin: format!("kube:{key}"),
        key,
        line: 0,
        object,
    }
}

fn kube(kind: Kind, ns: &str, name: &str, value: Value) -> Entry {
    entry(kind, ns, name, Object::Kubernetes(Box::new(value)))
}

fn namespace(name: &str, injected: bool) -> Entry {
    let labels = if injected {
        json!({"istio-injection": "enabled"})
    } else {
        json!({})
    };
    kube(
        Kind::Namespace,
        "",
        name,
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": name, "labels": labels}}),
    )
}

fn pod(ns: &str, name: &str, app: &str, ip: &str) -> Entry {
    kube(
        Kind::Pod,
        ns,
        name,
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": ns, "labels": {"app": app, "version": "v1"}},
               "spec": {"serviceAccountName": app,
                   "containers": [{"name": "app", "image": "x",
                       "ports": [{"name": "http", "containerPort": 8080}]}]},
               "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}}),
    )
}

/// A service with a selector and a cluster IP of its own (an address the store allocated
/// would depend on the order the services arrived in, which the fresh mesh does not share).
fn service(ns: &str, name: &str, export_to: &str) -> Entry {
    let octet = |s: &str| {
        s.bytes()
            .fold(0u8, |a, b| a.wrapping_mul(31).wrapping_add(b))
    };
    let cluster_ip = format!("10.96.{}.{}", octet(ns), octet(name));
    kube(
        Kind::Service,
        ns,
        name,
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": name, "namespace": ns,
                   "annotations": {"networking.istio.io/exportTo": export_to}},
               "spec": {"selector": {"app": name}, "clusterIP": cluster_ip,
                   "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
    )
}

fn destination_rule(ns: &str, host: &str, lb: &str) -> Entry {
    let spec = json!({"host": host, "trafficPolicy": {"loadBalancer": {"simple": lb}},
                      "subsets": [{"name": "v1", "labels": {"version": "v1"}}]});
    entry(
        Kind::DestinationRule,
        ns,
        host,
        Object::DestinationRule(Box::new(resource(ns, host, 1, spec))),
    )
}

/// The source's update for `upserts` and the deletion of `gone`: scoped to their origins.
fn scoped(upserts: &[Entry], gone: &[ObjectKey]) -> Loaded {
    let mut scope: BTreeSet<String> = upserts.iter().map(|e| e.origin.clone()).collect();
    scope.extend(gone.iter().map(|k| format!("kube:{k}")));
    Loaded {
        update: SourceUpdate {
            source: "kube".into(),
            scope: Some(scope),
            entries: upserts.to_vec(),
            ..SourceUpdate::default()
        },
        diagnostics: Vec::new(),
    }
}

fn kube_mesh() -> Mesh {
    Mesh::new(PlaneOptions {
        kube: true,
        monitoring: None,
        ..PlaneOptions::default()
    })
}

/// Every proxy's configuration (its JSON) and fingerprint, as `mesh` prepares them.
fn configurations(mesh: &Mesh, proxies: &[ProxyIdentity]) -> Vec<(String, Vec<u8>)> {
    proxies
        .iter()
        .map(|proxy| match mesh.prepare(proxy, None) {
            Ok(Prepared::Rendered {
                rendered,
                fingerprint,
            }) => {
                let fingerprint = fingerprint.map(|f| f.to_vec()).unwrap_or_default();
                (
                    String::from_utf8_lossy(&rendered.json.concat()).into(),
                    fingerprint,
                )
            }
            other => panic!("{}/{}: {:?}", proxy.namespace, proxy.pod, other.is_ok()),
        })
        .collect()
}

#[test]
fn a_mesh_updated_in_place_prepares_what_a_fresh_one_does() {
    let key = |kind: Kind, ns: &str, name: &str| ObjectKey::new(kind, ns, name);
    // (what happens, objects added or changed, objects deleted)
    let steps: Vec<(&str, Vec<Entry>, Vec<ObjectKey>)> = vec![
        (
            "the first list",
            vec![
                namespace("a", true),
                namespace("b", true),
                pod("a", "web-0", "web", "10.0.0.1"),
                pod("a", "web-1", "web", "10.0.0.2"),
                pod("a", "api-0", "api", "10.0.0.3"),
                pod("b", "web-0", "web", "10.0.1.1"),
                pod("b", "db-0", "db", "10.0.1.2"),
                service("a", "web", "*"),
                service("a", "api", "."),
                service("b", "web", "*"),
                service("b", "db", "."),
                destination_rule("a", "web", "ROUND_ROBIN"),
            ],
            vec![],
        ),
        (
            "an endpoint moved",
            vec![pod("a", "web-1", "web", "10.0.0.9")],
            vec![],
        ),
        ("a pod deleted", vec![], vec![key(Kind::Pod, "a", "api-0")]),
        (
            "a service no longer exported",
            vec![service("b", "web", ".")],
            vec![],
        ),
        (
            "a policy changed",
            vec![destination_rule("a", "web", "LEAST_REQUEST")],
            vec![],
        ),
        (
            "a namespace no longer injected",
            vec![namespace("b", false)],
            vec![],
        ),
        (
            "the pod back at another address, a service deleted",
            vec![pod("a", "api-0", "api", "10.0.0.7")],
            vec![key(Kind::Service, "b", "db")],
        ),
    ];
    let proxies: Vec<ProxyIdentity> = [
        ("a", "web-0"),
        ("a", "web-1"),
        ("a", "api-0"),
        ("b", "web-0"),
        ("b", "db-0"),
    ]
    .iter()
    .map(|(ns, pod)| ProxyIdentity {
        pod: pod.to_string(),
        namespace: ns.to_string(),
        ..ProxyIdentity::default()
    })
    .collect();
    let incremental = kube_mesh();
    let mut objects: BTreeMap<ObjectKey, Entry> = BTreeMap::new();
    let mut previous: Option<Vec<(String, Vec<u8>)>> = None;
    for (what, upserts, gone) in steps {
        for e in &upserts {
            objects.insert(e.key.clone(), e.clone());
        }
        for k in &gone {
            objects.remove(k);
        }
        let generation = *incremental.subscribe().borrow();
        assert!(incremental.apply(scoped(&upserts, &gone)), "{what}");
        let fresh = kube_mesh();
        let all: Vec<Entry> = objects.values().cloned().collect();
        fresh.apply(scoped(&all, &[]));
        let got = configurations(&incremental, &proxies);
        let want = configurations(&fresh, &proxies);
        for ((g, w), p) in got.iter().zip(&want).zip(&proxies) {
            assert_eq!(g, w, "{what}: {}/{}", p.namespace, p.pod);
        }
        // The configurations did change (each step changes some), and the generation with them.
        assert_ne!(previous.as_ref(), Some(&got), "{what}");
        assert!(*incremental.subscribe().borrow() > generation, "{what}");
        previous = Some(got);
    }
}
