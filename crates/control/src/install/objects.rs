//! The installation's Kubernetes objects, built as typed k8s-openapi values from [`Values`].

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    ExecAction, HTTPGetAction, Lifecycle, LifecycleHandler, Namespace, ObjectFieldSelector,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, Toleration,
    TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::values::{PullPolicy, ResourceValues, Values};
use super::{CA_SECRET, CONTROL_PLANE, LEADER_LEASE, MESH_CONFIGMAP, ROOT_CERT_CONFIGMAP, crds};
use crate::webhook::Registration;

/// Labels of every object.
pub fn common_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (crds::PART_OF.0.to_string(), crds::PART_OF.1.to_string()),
        (
            "app.kubernetes.io/version".to_string(),
            super::values::VERSION.to_string(),
        ),
    ])
}

/// Labels of the control plane's objects (and its pods).
fn control_labels() -> BTreeMap<String, String> {
    let mut labels = common_labels();
    labels.insert("app".into(), CONTROL_PLANE.into());
    labels.insert("app.kubernetes.io/name".into(), CONTROL_PLANE.into());
    labels.insert("app.kubernetes.io/component".into(), "control-plane".into());
    labels
}

fn selector_labels() -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), CONTROL_PLANE.to_string())])
}

fn meta(name: &str, namespace: Option<&str>, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_string),
        labels: Some(labels),
        ..Default::default()
    }
}

/// The namespace Ferry runs in.
pub fn namespace(ns: &str) -> Namespace {
    Namespace {
        metadata: meta(ns, None, common_labels()),
        ..Default::default()
    }
}

/// The control plane's ServiceAccount.
pub fn service_account(ns: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(CONTROL_PLANE, Some(ns), control_labels()),
        ..Default::default()
    }
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str], names: &[&str]) -> PolicyRule {
    let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        resource_names: (!names.is_empty()).then(|| strings(names)),
        non_resource_urls: None,
    }
}

/// Cluster-wide permissions: read what the sources watch, review tokens, publish the root
/// certificate ConfigMap in workload namespaces, and patch only Ferry's own webhook
/// configuration. No wildcard, no Secret.
pub fn cluster_role(webhook_config: &str) -> ClusterRole {
    ClusterRole {
        metadata: meta(CONTROL_PLANE, None, control_labels()),
        rules: Some(vec![
            rule(
                &[""],
                &["namespaces", "pods", "services"],
                &["get", "list", "watch"],
                &[],
            ),
            rule(
                &["discovery.k8s.io"],
                &["endpointslices"],
                &["get", "list", "watch"],
                &[],
            ),
            rule(
                &["networking.istio.io"],
                &["virtualservices", "destinationrules"],
                &["get", "list", "watch"],
                &[],
            ),
            rule(
                &["security.istio.io"],
                &["peerauthentications"],
                &["get", "list", "watch"],
                &[],
            ),
            rule(
                &["ferry.dev"],
                &["redispolicies"],
                &["get", "list", "watch"],
                &[],
            ),
            rule(
                &["telemetry.istio.io"],
                &["telemetries"],
                &["get", "list", "watch"],
                &[],
            ),
            // The mesh config: the `istio` ConfigMap, watched by name in every namespace (the
            // watcher's requests carry `fieldSelector=metadata.name=istio`).
            rule(
                &[""],
                &["configmaps"],
                &["get", "list", "watch"],
                &["istio"],
            ),
            rule(
                &["authentication.k8s.io"],
                &["tokenreviews"],
                &["create"],
                &[],
            ),
            // The root certificate in every namespace with injected pods. `create` cannot be
            // limited by name (the object does not exist yet when it is authorized).
            rule(&[""], &["configmaps"], &["create"], &[]),
            rule(
                &[""],
                &["configmaps"],
                &["get", "update"],
                &[ROOT_CERT_CONFIGMAP],
            ),
            rule(
                &["admissionregistration.k8s.io"],
                &["mutatingwebhookconfigurations"],
                &["get", "patch"],
                &[webhook_config],
            ),
        ]),
        aggregation_rule: None,
    }
}

/// Permissions in Ferry's namespace: its CA Secret, its mesh ConfigMap and its leader Lease.
pub fn role(ns: &str) -> Role {
    Role {
        metadata: meta(CONTROL_PLANE, Some(ns), control_labels()),
        rules: Some(vec![
            rule(&[""], &["secrets"], &["create"], &[]),
            rule(&[""], &["secrets"], &["get", "update"], &[CA_SECRET]),
            rule(
                &[""],
                &["configmaps"],
                &["get", "list", "watch"],
                &[MESH_CONFIGMAP],
            ),
            rule(&["coordination.k8s.io"], &["leases"], &["create"], &[]),
            rule(
                &["coordination.k8s.io"],
                &["leases"],
                &["get", "update"],
                &[LEADER_LEASE],
            ),
        ]),
    }
}

fn subjects(ns: &str) -> Option<Vec<Subject>> {
    Some(vec![Subject {
        kind: "ServiceAccount".into(),
        name: CONTROL_PLANE.into(),
        namespace: Some(ns.into()),
        api_group: None,
    }])
}

/// Binds the ClusterRole to the ServiceAccount.
pub fn cluster_role_binding(ns: &str) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta(CONTROL_PLANE, None, control_labels()),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: CONTROL_PLANE.into(),
        },
        subjects: subjects(ns),
    }
}

/// Binds the Role to the ServiceAccount.
pub fn role_binding(ns: &str) -> RoleBinding {
    RoleBinding {
        metadata: meta(CONTROL_PLANE, Some(ns), control_labels()),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: CONTROL_PLANE.into(),
        },
        subjects: subjects(ns),
    }
}

fn pull_policy(p: PullPolicy) -> String {
    match p {
        PullPolicy::Always => "Always",
        PullPolicy::IfNotPresent => "IfNotPresent",
        PullPolicy::Never => "Never",
    }
    .into()
}

/// The mesh settings the control plane reads (one key per setting).
pub fn mesh_config(ns: &str, values: &Values) -> ConfigMap {
    let data = BTreeMap::from([
        ("trustDomain".to_string(), values.mesh.trust_domain.clone()),
        ("proxyImage".to_string(), values.proxy_image()),
        (
            "imagePullPolicy".to_string(),
            pull_policy(values.image.pull_policy),
        ),
        (
            "nativeSidecars".to_string(),
            values.mesh.native_sidecars.to_string(),
        ),
        (
            "defaultPeerAuthenticationMode".to_string(),
            values.mesh.default_peer_authentication_mode.to_string(),
        ),
        (
            "controlPlaneAddress".to_string(),
            format!("{CONTROL_PLANE}.{ns}.svc:15012"),
        ),
    ]);
    ConfigMap {
        metadata: meta(MESH_CONFIGMAP, Some(ns), control_labels()),
        data: Some(data),
        ..Default::default()
    }
}

/// The control plane's Service: configuration stream, CA, monitoring and the webhook.
pub fn service(ns: &str) -> Service {
    let port = |name: &str, port: i32, target: i32| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(target)),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    Service {
        metadata: meta(CONTROL_PLANE, Some(ns), control_labels()),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels()),
            ports: Some(vec![
                port("grpc", 15010, 15010),
                port("grpc-tls", 15012, 15012),
                port("http-monitoring", 15014, 15014),
                port("https-webhook", 443, 15017),
            ]),
            ..Default::default()
        }),
        status: None,
    }
}

fn resources(r: &ResourceValues) -> ResourceRequirements {
    let map = |m: &BTreeMap<super::values::ResourceName, super::values::Quantity>| {
        (!m.is_empty()).then(|| {
            m.iter()
                .map(|(k, v)| {
                    let key = serde_json::to_value(k)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    (key, Quantity(v.0.clone()))
                })
                .collect()
        })
    };
    ResourceRequirements {
        requests: map(&r.requests),
        limits: map(&r.limits),
        claims: None,
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(15014),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..Default::default()
        }),
        value: None,
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// Writable directory of the control plane (an emptyDir: the root file system is read-only).
const DATA_DIR: &str = "/var/run/ferry";

/// `ferry control-plane` arguments: the Kubernetes source, the CA kept in the Secret
/// [`CA_SECRET`] (its scratch files in the emptyDir), the mesh's trust domain.
pub fn control_plane_args(ns: &str, values: &Values) -> Vec<String> {
    vec![
        "control-plane".into(),
        "--kube".into(),
        format!("--ca-secret={ns}/{CA_SECRET}"),
        format!("--ca-dir={DATA_DIR}/ca"),
        format!("--trust-domain={}", values.mesh.trust_domain),
    ]
}

/// The control-plane Deployment: replicas spread over zones and nodes, never fewer ready
/// than asked during a rollout (`maxUnavailable: 0`), probed on 15014.
pub fn deployment(ns: &str, values: &Values) -> Deployment {
    let cp = &values.control_plane;
    let port = |name: &str, port: i32| ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let container = Container {
        name: "control-plane".into(),
        image: Some(values.image()),
        image_pull_policy: Some(pull_policy(values.image.pull_policy)),
        args: Some(control_plane_args(ns, values)),
        env: Some(vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
            env("FERRY_MESH_CONFIG", MESH_CONFIGMAP),
            env("RUST_LOG", &cp.log_level),
        ]),
        ports: Some(vec![
            port("grpc", 15010),
            port("grpc-tls", 15012),
            port("http-monitoring", 15014),
            port("https-webhook", 15017),
        ]),
        readiness_probe: Some(http_probe("/ready", 5, 3)),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(5),
            ..http_probe("/healthz", 10, 3)
        }),
        // Keep serving while the endpoint is being removed from the Service, so the API
        // server never sends an admission request to a replica that stopped listening.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec!["sleep".into(), "5".into()]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        resources: Some(resources(&cp.resources)),
        volume_mounts: Some(vec![VolumeMount {
            name: "ferry-data".into(),
            mount_path: DATA_DIR.into(),
            ..Default::default()
        }]),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(1337),
            run_as_group: Some(1337),
            ..Default::default()
        }),
        ..Default::default()
    };
    let spread = |key: &str| TopologySpreadConstraint {
        max_skew: 1,
        topology_key: key.into(),
        when_unsatisfiable: "ScheduleAnyway".into(),
        label_selector: Some(LabelSelector {
            match_labels: Some(selector_labels()),
            match_expressions: None,
        }),
        match_label_keys: Some(vec!["pod-template-hash".into()]),
        ..Default::default()
    };
    let mut pod_labels = control_labels();
    // The control plane never gets a sidecar.
    pod_labels.insert("sidecar.istio.io/inject".into(), "false".into());
    let annotations = BTreeMap::from([
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".to_string(), "15014".to_string()),
        ("prometheus.io/path".to_string(), "/metrics".to_string()),
    ]);
    let tolerations: Vec<Toleration> = cp
        .tolerations
        .iter()
        .filter_map(|t| serde_json::to_value(t).ok())
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect();
    Deployment {
        metadata: meta(CONTROL_PLANE, Some(ns), control_labels()),
        spec: Some(DeploymentSpec {
            replicas: Some(cp.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels()),
                match_expressions: None,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(CONTROL_PLANE.into()),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "ferry-data".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Default::default()
                    }]),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    topology_spread_constraints: Some(vec![
                        spread("topology.kubernetes.io/zone"),
                        spread("kubernetes.io/hostname"),
                    ]),
                    node_selector: (!cp.node_selector.is_empty()).then(|| cp.node_selector.clone()),
                    tolerations: (!tolerations.is_empty()).then_some(tolerations),
                    priority_class_name: (!cp.priority_class_name.is_empty())
                        .then(|| cp.priority_class_name.clone()),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// Keeps `minAvailable` control-plane pods through node drains.
pub fn pod_disruption_budget(ns: &str, values: &Values) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(CONTROL_PLANE, Some(ns), control_labels()),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(values.control_plane.min_available)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels()),
                match_expressions: None,
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// The webhook registration: Istio's selector pairs, `failurePolicy: Fail`, a short timeout,
/// and no `caBundle` (the control plane patches it in).
pub fn registration(ns: &str, values: &Values) -> Registration {
    Registration {
        namespace: ns.into(),
        service: CONTROL_PLANE.into(),
        timeout_seconds: values.webhook.timeout_seconds,
        enable_namespaces_by_default: values.webhook.enable_namespaces_by_default,
        ..Registration::default()
    }
}
