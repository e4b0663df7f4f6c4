//! The generated installation (`ferry_control::install`): the CRDs accept Istio's sample
//! manifests and reject unknown fields and wrong types (checked with each CRD's
//! `openAPIV3Schema` as the API server does under strict field validation, using the
//! `jsonschema` crate); the RBAC rules are minimal; the Deployment, PodDisruptionBudget and
//! webhook registration keep pod creation available through a rollout.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ferry_control::install::{self, Manifest, Values, ValuesBuilder};
use serde_json::{Value, json};

fn render(sets: &[&str]) -> Vec<Manifest> {
    let mut b = ValuesBuilder::new();
    for s in sets {
        b.set(s).expect("valid --set");
    }
    install::render(
        &b.build().expect("valid values"),
        install::DEFAULT_NAMESPACE,
    )
}

fn find<'a>(objects: &'a [Manifest], kind: &str, name: &str) -> &'a Value {
    &objects
        .iter()
        .find(|m| m.kind() == kind && m.name() == name)
        .unwrap_or_else(|| panic!("{kind}/{name} is rendered"))
        .0
}

/// The CRD's schema as the API server applies it with `fieldValidation=Strict`: unknown
/// fields are errors wherever the schema lists properties.
fn strict(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out: serde_json::Map<String, Value> = map
                .iter()
                .filter(|(k, _)| !k.starts_with("x-kubernetes-"))
                .map(|(k, v)| {
                    let v = match k.as_str() {
                        "properties" => Value::Object(
                            v.as_object()
                                .into_iter()
                                .flatten()
                                .map(|(name, s)| (name.clone(), strict(s)))
                                .collect(),
                        ),
                        "items" | "additionalProperties" => strict(v),
                        _ => v.clone(),
                    };
                    (k.clone(), v)
                })
                .collect();
            let free = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            if map.contains_key("properties") && !free && !map.contains_key("additionalProperties")
            {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

struct Crds {
    /// (group, version, kind) -> strict validator.
    validators: Vec<((String, String, String), jsonschema::Validator)>,
}

impl Crds {
    fn new() -> Crds {
        let mut validators = Vec::new();
        for m in render(&[]) {
            if m.kind() != "CustomResourceDefinition" {
                continue;
            }
            let group = m.0["spec"]["group"].as_str().unwrap().to_string();
            let kind = m.0["spec"]["names"]["kind"].as_str().unwrap().to_string();
            for version in m.0["spec"]["versions"].as_array().unwrap() {
                let schema = strict(&version["schema"]["openAPIV3Schema"]);
                let validator = jsonschema::draft4::new(&schema).expect("a valid JSON schema");
                let name = version["name"].as_str().unwrap().to_string();
                validators.push(((group.clone(), name, kind.clone()), validator));
            }
        }
        Crds { validators }
    }

    /// `Ok` when the API server would accept `object`, else its errors; `None` when no CRD
    /// serves its apiVersion and kind.
    fn check(&self, object: &Value) -> Option<Result<(), Vec<String>>> {
        let api_version = object["apiVersion"].as_str()?;
        let (group, version) = api_version.split_once('/')?;
        let kind = object["kind"].as_str()?;
        let (_, validator) = self
            .validators
            .iter()
            .find(|((g, v, k), _)| g == group && v == version && k == kind)?;
        let errors: Vec<String> = validator
            .iter_errors(object)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        Some(if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        })
    }
}

fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures/istio-samples")
}

#[test]
fn crds_accept_istios_samples() {
    let crds = Crds::new();
    let mut checked = BTreeSet::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(samples_dir())
        .expect("istio samples")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in ferry_model::parse_documents(&file.display().to_string(), &text).unwrap() {
            match crds.check(&doc.value) {
                None => {} // Gateway, Service, Deployment, ...
                Some(Ok(())) => {
                    checked.insert(doc.value["kind"].as_str().unwrap().to_string());
                }
                Some(Err(errors)) => panic!("{}: {:#?}", file.display(), errors),
            }
        }
    }
    assert!(
        checked.contains("VirtualService") && checked.contains("DestinationRule"),
        "{checked:?}"
    );
    // PeerAuthentication examples from Istio's documentation, every served version.
    for version in ["v1", "v1beta1"] {
        for spec in [
            json!({"mtls": {"mode": "STRICT"}}),
            json!({"selector": {"matchLabels": {"app": "finance"}}, "mtls": {"mode": "STRICT"},
                   "portLevelMtls": {"8080": {"mode": "DISABLE"}}}),
            json!({"mtls": {"mode": "PERMISSIVE"}}),
        ] {
            let pa = json!({"apiVersion": format!("security.istio.io/{version}"),
                            "kind": "PeerAuthentication",
                            "metadata": {"name": "default", "namespace": "foo"}, "spec": spec});
            assert_eq!(crds.check(&pa), Some(Ok(())), "{pa}");
        }
    }
    for version in ["v1beta1", "v1alpha3"] {
        let vs = json!({"apiVersion": format!("networking.istio.io/{version}"),
                        "kind": "VirtualService", "metadata": {"name": "reviews"},
                        "spec": {"hosts": ["reviews"], "http": [{"timeout": "0.5s",
                                 "route": [{"destination": {"host": "reviews", "subset": "v2"}, "weight": 100}]}]}});
        assert_eq!(crds.check(&vs), Some(Ok(())), "{vs}");
    }
}

#[test]
fn crds_reject_unknown_fields_and_wrong_types() {
    let crds = Crds::new();
    let vs = |spec: Value| {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
               "metadata": {"name": "r"}, "spec": spec})
    };
    let bad = [
        vs(
            json!({"hosts": ["r"], "http": [{"route": [{"destination": {"host": "r", "subet": "v1"}}]}]}),
        ),
        vs(json!({"hosts": "r"})),
        vs(
            json!({"hosts": ["r"], "tcp": [{"route": [{"destination": {"host": "r"}, "weight": "heavy"}]}]}),
        ),
        vs(json!({"hostz": ["r"]})),
        json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
               "metadata": {"name": "p"}, "spec": {"mtls": {"mode": "MAYBE"}}}),
        json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
               "metadata": {"name": "d"},
               "spec": {"host": "d", "trafficPolicy": {"loadBalancer": {"simple": "FASTEST"}}}}),
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "RedisPolicy",
               "metadata": {"name": "r"},
               "spec": {"host": "redis", "faults": [{"delay": {"fixedDelay": "1s", "percentage": "lots"}}]}}),
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "RedisPolicy",
               "metadata": {"name": "r"}, "spec": {"hots": "redis"}}),
    ];
    for object in bad {
        assert!(
            matches!(crds.check(&object), Some(Err(_))),
            "accepted: {object}"
        );
    }
    // The status subresource and metadata stay free-form; RedisPolicy's documented example
    // (crates/model/src/ferry/redis_policy.rs) is accepted.
    let ok = json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "RedisPolicy",
                    "metadata": {"name": "redis-faults", "namespace": "default", "labels": {"a": "b"}},
                    "spec": {"host": "redis", "port": 6379, "subset": "v1",
                             "faults": [{"commands": ["GET"], "abort": {"error": "ERR injected by Ferry", "percentage": 20}},
                                        {"commands": ["SET", "HSET"], "delay": {"fixedDelay": "50ms", "percentage": 10}}],
                             "timeouts": [{"commands": ["GET", "MGET"], "timeout": "100ms"}],
                             "mirror": {"subset": "v2", "percentage": 100}},
                    "status": {"anything": [1, 2]}});
    assert_eq!(crds.check(&ok), Some(Ok(())));
}

#[test]
fn crd_schemas_agree_with_the_model() {
    // Every sample the model accepts, the CRD accepts, and vice versa for the bad cases
    // above; here: the documented spec fields of each kind are all in the schema.
    let objects = render(&[]);
    let vs = find(
        &objects,
        "CustomResourceDefinition",
        "virtualservices.networking.istio.io",
    );
    let spec = &vs["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let fields: BTreeSet<&str> = spec["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from(["hosts", "gateways", "http", "tls", "tcp", "exportTo"])
    );
    let versions: Vec<(&str, bool)> = vs["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v["storage"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        versions,
        [("v1", true), ("v1beta1", false), ("v1alpha3", false)]
    );
    assert!(spec["description"].as_str().is_some_and(|d| !d.is_empty()));
}

/// (apiGroups, resources, verbs, resourceNames) of a rule.
type Rule = (Vec<String>, Vec<String>, Vec<String>, Vec<String>);

fn rules(role: &Value) -> Vec<Rule> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                strings(&r["apiGroups"]),
                strings(&r["resources"]),
                strings(&r["verbs"]),
                strings(&r["resourceNames"]),
            )
        })
        .collect()
}

#[test]
fn rbac_is_least_privilege() {
    let objects = render(&[]);
    let cluster = rules(find(&objects, "ClusterRole", "ferry-control"));
    let namespaced = rules(find(&objects, "Role", "ferry-control"));
    for (groups, resources, verbs, _) in cluster.iter().chain(&namespaced) {
        for item in groups.iter().chain(resources).chain(verbs) {
            assert!(
                !item.contains('*'),
                "wildcard in {groups:?} {resources:?} {verbs:?}"
            );
        }
        for verb in verbs {
            assert!(
                ["get", "list", "watch", "create", "update", "patch"].contains(&verb.as_str()),
                "verb {verb} on {resources:?}"
            );
        }
    }
    // Nothing cluster-wide on Secrets.
    assert!(
        cluster
            .iter()
            .all(|(_, resources, _, _)| !resources.iter().any(|r| r == "secrets")),
        "{cluster:?}"
    );
    // Writes are limited to named objects, except `create` (which the API server cannot
    // authorize by name) and TokenReviews.
    for (groups, resources, verbs, names) in cluster.iter().chain(&namespaced) {
        let writes = verbs.iter().any(|v| v == "update" || v == "patch");
        if writes {
            assert_eq!(names.len(), 1, "{groups:?} {resources:?} {verbs:?}");
        }
        if verbs.iter().any(|v| v == "create") {
            assert_eq!(verbs, &["create"], "create stands alone: {resources:?}");
        }
    }
    // Exactly these reads and writes.
    let summary: BTreeSet<String> = cluster
        .iter()
        .flat_map(|(g, r, v, n)| {
            r.iter().flat_map(move |r| {
                v.iter().map(move |v| {
                    format!(
                        "{}/{r}:{v}{}",
                        g.join(","),
                        if n.is_empty() {
                            String::new()
                        } else {
                            format!("@{}", n.join(","))
                        }
                    )
                })
            })
        })
        .collect();
    let expected: BTreeSet<String> = [
        "/namespaces:get",
        "/namespaces:list",
        "/namespaces:watch",
        "/pods:get",
        "/pods:list",
        "/pods:watch",
        "/services:get",
        "/services:list",
        "/services:watch",
        "discovery.k8s.io/endpointslices:get",
        "discovery.k8s.io/endpointslices:list",
        "discovery.k8s.io/endpointslices:watch",
        "networking.istio.io/virtualservices:get",
        "networking.istio.io/virtualservices:list",
        "networking.istio.io/virtualservices:watch",
        "networking.istio.io/destinationrules:get",
        "networking.istio.io/destinationrules:list",
        "networking.istio.io/destinationrules:watch",
        "security.istio.io/peerauthentications:get",
        "security.istio.io/peerauthentications:list",
        "security.istio.io/peerauthentications:watch",
        "ferry.dev/redispolicies:get",
        "ferry.dev/redispolicies:list",
        "ferry.dev/redispolicies:watch",
        "telemetry.istio.io/telemetries:get",
        "telemetry.istio.io/telemetries:list",
        "telemetry.istio.io/telemetries:watch",
        "/configmaps:get@istio",
        "/configmaps:list@istio",
        "/configmaps:watch@istio",
        "authentication.k8s.io/tokenreviews:create",
        "/configmaps:create",
        "/configmaps:get@ferry-ca-root-cert",
        "/configmaps:update@ferry-ca-root-cert",
        "admissionregistration.k8s.io/mutatingwebhookconfigurations:get@ferry-sidecar-injector",
        "admissionregistration.k8s.io/mutatingwebhookconfigurations:patch@ferry-sidecar-injector",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    assert_eq!(summary, expected);
    // In its namespace: its own Secret, ConfigMap and Lease.
    let secret_rules: Vec<&Rule> = namespaced
        .iter()
        .filter(|(_, r, _, _)| r.iter().any(|r| r == "secrets"))
        .collect();
    for (_, _, verbs, names) in secret_rules {
        assert!(
            verbs == &["create"] || names == &["ferry-ca"],
            "{verbs:?} {names:?}"
        );
    }
    // The bindings name the ServiceAccount in the install namespace.
    for kind in ["ClusterRoleBinding", "RoleBinding"] {
        let b = find(&objects, kind, "ferry-control");
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": "ferry-control", "namespace": "ferry-system"}])
        );
    }
}

#[test]
fn rollouts_keep_the_webhook_available() {
    let objects = render(&[]);
    let d = find(&objects, "Deployment", "ferry-control");
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], 15014);
    assert_eq!(c["securityContext"]["runAsUser"], 1337);
    assert_eq!(
        c["image"],
        format!("ghcr.io/ferry-mesh/ferry:{}", install::values::VERSION)
    );
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"],
        "false"
    );
    let spread = d["spec"]["template"]["spec"]["topologySpreadConstraints"]
        .as_array()
        .unwrap();
    assert_eq!(spread.len(), 2);
    let pdb = find(&objects, "PodDisruptionBudget", "ferry-control");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let svc = find(&objects, "Service", "ferry-control");
    let ports: Vec<(i64, i64)> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["port"].as_i64().unwrap(),
                p["targetPort"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [(15010, 15010), (15012, 15012), (15014, 15014), (443, 15017)]
    );

    let mwc = find(
        &objects,
        "MutatingWebhookConfiguration",
        "ferry-sidecar-injector",
    );
    let hooks = mwc["webhooks"].as_array().unwrap();
    let entries = ferry_inject::webhooks::entries("default", false);
    assert_eq!(hooks.len(), entries.len());
    for (hook, entry) in hooks.iter().zip(&entries) {
        assert_eq!(hook["name"], entry.name.as_str());
        assert_eq!(hook["failurePolicy"], "Fail");
        assert_eq!(hook["timeoutSeconds"], 5);
        assert_eq!(
            hook["namespaceSelector"],
            serde_json::to_value(&entry.namespace_selector).unwrap()
        );
        assert_eq!(
            hook["objectSelector"],
            serde_json::to_value(&entry.object_selector).unwrap()
        );
        assert!(hook["clientConfig"].get("caBundle").is_none());
        assert_eq!(hook["clientConfig"]["service"]["name"], "ferry-control");
        assert_eq!(hook["clientConfig"]["service"]["port"], 443);
    }
    // The mesh ConfigMap carries the settings the control plane reads.
    let mesh = find(
        &render(&[
            "mesh.proxyImage=registry.local/ferry:dev",
            "mesh.nativeSidecars=false",
        ]),
        "ConfigMap",
        "ferry-mesh",
    )
    .clone();
    assert_eq!(mesh["data"]["proxyImage"], "registry.local/ferry:dev");
    assert_eq!(mesh["data"]["nativeSidecars"], "false");
    assert_eq!(mesh["data"]["defaultPeerAuthenticationMode"], "PERMISSIVE");
    assert_eq!(mesh["data"]["trustDomain"], "cluster.local");
}

#[test]
fn every_object_is_labelled_and_values_change_what_they_should() {
    for m in render(&[]) {
        assert_eq!(
            m.0["metadata"]["labels"]["app.kubernetes.io/part-of"],
            "ferry",
            "{}",
            m.describe()
        );
    }
    let v: Values = ValuesBuilder::new()
        .set("controlPlane.replicas=3")
        .unwrap()
        .set("controlPlane.minAvailable=2")
        .unwrap()
        .set("webhook.timeoutSeconds=3")
        .unwrap()
        .set("image.tag=v9")
        .unwrap()
        .build()
        .unwrap();
    let objects = install::render(&v, "mesh-system");
    assert_eq!(
        find(&objects, "Deployment", "ferry-control")["spec"]["replicas"],
        3
    );
    assert_eq!(
        find(&objects, "PodDisruptionBudget", "ferry-control")["spec"]["minAvailable"],
        2
    );
    assert_eq!(
        find(
            &objects,
            "MutatingWebhookConfiguration",
            "ferry-sidecar-injector"
        )["webhooks"][0]["timeoutSeconds"],
        3
    );
    assert_eq!(
        find(
            &objects,
            "MutatingWebhookConfiguration",
            "ferry-sidecar-injector"
        )["webhooks"][0]["clientConfig"]["service"]["namespace"],
        "mesh-system"
    );
    assert_eq!(
        find(&objects, "ConfigMap", "ferry-mesh")["data"]["proxyImage"],
        "ghcr.io/ferry-mesh/ferry:v9"
    );
}
