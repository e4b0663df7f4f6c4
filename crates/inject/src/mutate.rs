//! The pod mutation: what injection adds to a pod (the `ferry-init` redirect container, the
//! `ferry-proxy` sidecar, its volumes, labels and annotations, rewritten probes) and how an
//! earlier injection, Ferry's or Istio's, is taken away first so that injecting twice never
//! doubles anything.
//!
//! The pod is edited as JSON, not through typed structs, so fields this crate does not know
//! (newer Kubernetes versions, extensions) pass through untouched.

use crate::InjectConfig;
use crate::annotations::{self, InterceptionMode, InvalidAnnotation, PodSettings};
use crate::probes;
use crate::redirect::{DEFAULT_STATUS_PORT, HEALTH_PORT, METRICS_PORT, PROXY_UID, RedirectConfig};
use crate::status::{FERRY_STATUS, ISTIO_STATUS, SidecarStatus};
use crate::workload::Workload;
use serde_json::{Map, Value, json};
use std::fmt;

/// Name of the init container that installs the redirect rules.
pub const INIT_CONTAINER: &str = "ferry-init";
/// Name of the sidecar proxy container.
pub const PROXY_CONTAINER: &str = "ferry-proxy";
/// Where the injected proxy keeps its last applied configuration (`--config-cache`): in the
/// `ferry-data` emptyDir, which survives a restart of the container but not the pod (as
/// Istio's `istio-envoy`/`istio-data` volumes do), so a proxy that restarts while the
/// control plane is unreachable starts with the configuration it had.
pub const CONFIG_CACHE_PATH: &str = "/var/lib/ferry/data/config-cache";
/// Annotation that keeps a user-written `ferry-proxy` container's overrides across injections.
pub const PROXY_OVERRIDES: &str = "ferry.dev/proxy-overrides";
/// Environment variable holding the application's own Prometheus scrape settings.
pub const PROMETHEUS_ENV: &str = "ISTIO_PROMETHEUS_ANNOTATIONS";
/// Label that tells clients the pod accepts mesh mTLS.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// Canonical service label.
pub const CANONICAL_NAME_LABEL: &str = "service.istio.io/canonical-name";
/// Canonical revision label.
pub const CANONICAL_REVISION_LABEL: &str = "service.istio.io/canonical-revision";
/// The container `kubectl exec/logs` picks by default.
pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";
/// The container `kubectl logs` picks by default.
pub const DEFAULT_LOGS_CONTAINER: &str = "kubectl.kubernetes.io/default-logs-container";

const ISTIO_PROXY: &str = "istio-proxy";
const ISTIO_INIT_CONTAINERS: [&str; 2] = ["istio-init", "istio-validation"];
const PROMETHEUS_KEYS: [(&str, &str); 3] = [
    ("scrape", "prometheus.io/scrape"),
    ("path", "prometheus.io/path"),
    ("port", "prometheus.io/port"),
];
const PROXY_VOLUMES: [&str; 5] = [
    "ferry-runtime",
    "ferry-data",
    "ferry-podinfo",
    "ferry-token",
    "ferry-ca-root-cert",
];

/// Why a pod cannot be injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InjectError {
    /// One or more `sidecar.istio.io/*` / `traffic.sidecar.istio.io/*` values are invalid.
    InvalidAnnotations(Vec<InvalidAnnotation>),
    /// The pod is not shaped like a pod (e.g. no `spec.containers`).
    InvalidPod {
        /// Field path, e.g. `spec.containers[1].name`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl fmt::Display for InjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InjectError::InvalidAnnotations(errors) => {
                let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
                f.write_str(&all.join("; "))
            }
            InjectError::InvalidPod { field, message } => write!(f, "{field}: {message}"),
        }
    }
}

impl std::error::Error for InjectError {}

fn invalid(field: &str, message: &str) -> InjectError {
    InjectError::InvalidPod {
        field: field.to_string(),
        message: message.to_string(),
    }
}

/// Where a pod lives and what it belongs to.
#[derive(Debug, Clone)]
pub struct PodContext {
    /// The pod's namespace.
    pub namespace: String,
    /// The workload that owns the pod.
    pub workload: Workload,
    /// Cluster id override (from the webhook path), else the mesh's.
    pub cluster_id: Option<String>,
    /// Network override (from the webhook path), else the mesh's.
    pub network: Option<String>,
}

/// A JSON object field, created empty when absent; an error when it holds something else.
fn object_at<'a>(
    parent: &'a mut Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a mut Map<String, Value>, InjectError> {
    let slot = parent.entry(key).or_insert_with(|| json!({}));
    if slot.is_null() {
        *slot = json!({});
    }
    slot.as_object_mut()
        .ok_or_else(|| invalid(path, "must be an object"))
}

/// A JSON array field, created empty when absent; an error when it holds something else.
fn array_at<'a>(
    parent: &'a mut Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a mut Vec<Value>, InjectError> {
    let slot = parent.entry(key).or_insert_with(|| json!([]));
    if slot.is_null() {
        *slot = json!([]);
    }
    slot.as_array_mut()
        .ok_or_else(|| invalid(path, "must be a list"))
}

fn container_name(c: &Value) -> Option<&str> {
    c.get("name").and_then(Value::as_str)
}

/// Checks the parts of the pod that injection relies on.
fn check_shape(pod: &Value) -> Result<(), InjectError> {
    let obj = pod
        .as_object()
        .ok_or_else(|| invalid("pod", "must be an object"))?;
    if let Some(meta) = obj.get("metadata") {
        if !meta.is_object() && !meta.is_null() {
            return Err(invalid("metadata", "must be an object"));
        }
        for key in ["labels", "annotations"] {
            if let Some(map) = meta.get(key).and_then(Value::as_object) {
                for (k, v) in map {
                    // Known annotations get a precise error from `annotations::read`.
                    let known = key == "annotations" && annotations::KNOWN.contains(&k.as_str());
                    if !(v.is_string() || known) {
                        return Err(invalid(&format!("metadata.{key}.{k}"), "must be a string"));
                    }
                }
            } else if meta.get(key).is_some_and(|v| !v.is_null()) {
                return Err(invalid(
                    &format!("metadata.{key}"),
                    "must be a map of strings",
                ));
            }
        }
    }
    let spec = obj
        .get("spec")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("spec", "is required and must be an object"))?;
    let containers = spec
        .get("containers")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("spec.containers", "is required and must be a list"))?;
    if containers.is_empty() {
        return Err(invalid(
            "spec.containers",
            "must list at least one container",
        ));
    }
    for field in ["containers", "initContainers"] {
        let Some(list) = spec.get(field) else {
            continue;
        };
        if list.is_null() {
            continue;
        }
        let list = list
            .as_array()
            .ok_or_else(|| invalid(&format!("spec.{field}"), "must be a list"))?;
        for (i, c) in list.iter().enumerate() {
            if container_name(c).is_none_or(str::is_empty) {
                return Err(invalid(&format!("spec.{field}[{i}].name"), "is required"));
            }
        }
    }
    for field in ["volumes", "imagePullSecrets"] {
        if spec
            .get(field)
            .is_some_and(|v| !v.is_array() && !v.is_null())
        {
            return Err(invalid(&format!("spec.{field}"), "must be a list"));
        }
    }
    Ok(())
}

/// The env value named `name` of a container, if it is a plain value.
fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"].as_str() == Some(name))?["value"]
        .as_str()
}

/// Takes an earlier injection (Ferry's or Istio's) off the pod: the containers and volumes its
/// status annotation lists, the rewritten probes and merged-metrics annotations. A
/// user-written `ferry-proxy` (or `istio-proxy`) container without a status is returned as
/// overrides for the new sidecar.
pub fn strip(pod: &mut Value) -> Result<Option<Value>, InjectError> {
    check_shape(pod)?;
    let Some(obj) = pod.as_object_mut() else {
        return Err(invalid("pod", "must be an object"));
    };
    let meta = object_at(obj, "metadata", "metadata")?;
    let annotations = object_at(meta, "annotations", "metadata.annotations")?;
    let mut overrides = annotations.remove(PROXY_OVERRIDES).and_then(|v| {
        v.as_str()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
    });
    let mut removed_containers: Vec<String> = Vec::new();
    let mut removed_volumes: Vec<String> = Vec::new();
    let mut removed_secrets: Vec<String> = Vec::new();
    let mut was_injected = false;
    for key in [FERRY_STATUS, ISTIO_STATUS] {
        let Some(raw) = annotations.remove(key) else {
            continue;
        };
        was_injected = true;
        let status = raw.as_str().and_then(SidecarStatus::parse);
        let default_status = || SidecarStatus {
            init_containers: Some(
                [INIT_CONTAINER, PROXY_CONTAINER, ISTIO_PROXY]
                    .into_iter()
                    .chain(ISTIO_INIT_CONTAINERS)
                    .map(String::from)
                    .collect(),
            ),
            containers: Some(vec![PROXY_CONTAINER.into(), ISTIO_PROXY.into()]),
            volumes: Some(PROXY_VOLUMES.iter().map(|v| v.to_string()).collect()),
            ..Default::default()
        };
        let status = status.unwrap_or_else(default_status);
        removed_containers.extend(status.all_containers().cloned());
        removed_volumes.extend(status.volumes.iter().flatten().cloned());
        removed_secrets.extend(status.image_pull_secrets.iter().flatten().cloned());
    }
    if was_injected {
        annotations.remove("istio.io/rev");
    }
    let spec = object_at(obj, "spec", "spec")?;
    // The old proxy holds the original probes and scrape settings.
    let old_proxy = ["initContainers", "containers"]
        .iter()
        .filter_map(|f| spec.get(*f).and_then(Value::as_array))
        .flatten()
        .find(|c| {
            let name = container_name(c).unwrap_or_default();
            removed_containers.iter().any(|r| r == name)
                && (name == PROXY_CONTAINER || name == ISTIO_PROXY)
        })
        .cloned();
    let mut saved_prometheus: Option<Map<String, Value>> = None;
    if let Some(proxy) = &old_proxy {
        if let Some(map) = env_value(proxy, probes::PROBERS_ENV)
            .and_then(|s| serde_json::from_str::<Map<String, Value>>(s).ok())
            && let Some(containers) = spec.get_mut("containers").and_then(Value::as_array_mut)
        {
            probes::restore(containers, &map);
        }
        saved_prometheus = env_value(proxy, PROMETHEUS_ENV)
            .and_then(|s| serde_json::from_str::<Map<String, Value>>(s).ok());
    }
    for field in ["initContainers", "containers"] {
        let Some(list) = spec.get_mut(field).and_then(Value::as_array_mut) else {
            continue;
        };
        list.retain(|c| {
            let name = container_name(c).unwrap_or_default();
            if removed_containers.iter().any(|r| r == name) {
                return false;
            }
            // A sidecar container written by the user: its fields override the template.
            if !was_injected && (name == PROXY_CONTAINER || name == ISTIO_PROXY) {
                if overrides.is_none() {
                    overrides = Some(c.clone());
                }
                return false;
            }
            was_injected || name != INIT_CONTAINER
        });
    }
    for (field, removed) in [
        ("volumes", &removed_volumes),
        ("imagePullSecrets", &removed_secrets),
    ] {
        let now_empty = match spec.get_mut(field).and_then(Value::as_array_mut) {
            Some(list) => {
                list.retain(|v| {
                    !v["name"]
                        .as_str()
                        .is_some_and(|n| removed.iter().any(|r| r == n))
                });
                list.is_empty()
            }
            None => false,
        };
        if now_empty && !removed.is_empty() {
            spec.remove(field);
        }
    }
    if was_injected {
        let meta = object_at(obj, "metadata", "metadata")?;
        let annotations = object_at(meta, "annotations", "metadata.annotations")?;
        let points_at_proxy = annotations
            .get("prometheus.io/path")
            .and_then(Value::as_str)
            == Some("/stats/prometheus");
        if points_at_proxy {
            for (_, key) in PROMETHEUS_KEYS {
                annotations.remove(key);
            }
            for (short, key) in PROMETHEUS_KEYS {
                if let Some(v) = saved_prometheus.as_ref().and_then(|m| m.get(short)) {
                    annotations.insert(key.to_string(), v.clone());
                }
            }
        }
        if annotations.is_empty() {
            meta.remove("annotations");
        }
    }
    Ok(overrides)
}

fn env(name: &str, value: impl Into<String>) -> Value {
    json!({ "name": name, "value": value.into() })
}

fn field_env(name: &str, path: &str) -> Value {
    json!({ "name": name, "valueFrom": { "fieldRef": { "fieldPath": path } } })
}

/// Resources of the injected containers: the annotations when any is set (they replace the
/// defaults, as in Istio), else the mesh defaults.
fn resources(settings: &PodSettings, cfg: &InjectConfig) -> Value {
    let any_annotation = settings.proxy_cpu.is_some()
        || settings.proxy_memory.is_some()
        || settings.proxy_cpu_limit.is_some()
        || settings.proxy_memory_limit.is_some();
    let d = &cfg.proxy_resources;
    let (cpu, mem, cpu_limit, mem_limit) = if any_annotation {
        (
            &settings.proxy_cpu,
            &settings.proxy_memory,
            &settings.proxy_cpu_limit,
            &settings.proxy_memory_limit,
        )
    } else {
        (
            &d.cpu_request,
            &d.memory_request,
            &d.cpu_limit,
            &d.memory_limit,
        )
    };
    let mut out = Map::new();
    for (section, cpu, mem) in [("requests", cpu, mem), ("limits", cpu_limit, mem_limit)] {
        let mut m = Map::new();
        if let Some(cpu) = cpu {
            m.insert("cpu".into(), json!(cpu));
        }
        if let Some(mem) = mem {
            m.insert("memory".into(), json!(mem));
        }
        if !m.is_empty() {
            out.insert(section.into(), Value::Object(m));
        }
    }
    Value::Object(out)
}

fn image(settings: &PodSettings, cfg: &InjectConfig) -> String {
    settings
        .proxy_image
        .clone()
        .unwrap_or_else(|| cfg.proxy_image.clone())
}

fn init_container(redirect: &RedirectConfig, settings: &PodSettings, cfg: &InjectConfig) -> Value {
    let mut c = json!({
        "name": INIT_CONTAINER,
        "image": image(settings, cfg),
        "args": redirect.to_args(),
        "resources": resources(settings, cfg),
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": { "add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"] },
            "privileged": false,
            "readOnlyRootFilesystem": false,
            "runAsGroup": 0,
            "runAsNonRoot": false,
            "runAsUser": 0
        }
    });
    if let Some(policy) = &cfg.image_pull_policy {
        c["imagePullPolicy"] = json!(policy);
    }
    c
}

/// What the proxy needs to know of the application containers.
struct AppSummary {
    /// Their ports, as `ISTIO_META_POD_PORTS` lists them (JSON).
    ports: String,
    /// Their names.
    names: Vec<String>,
}

impl AppSummary {
    fn of(app: &[Value]) -> Self {
        let ports: Vec<&Value> = app
            .iter()
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .collect();
        Self {
            ports: serde_json::to_string(&ports).unwrap_or_else(|_| "[]".into()),
            names: app
                .iter()
                .filter_map(container_name)
                .map(String::from)
                .collect(),
        }
    }
}

struct ProxyInputs<'a> {
    settings: &'a PodSettings,
    ctx: &'a PodContext,
    app: &'a AppSummary,
    probers: &'a Map<String, Value>,
    prometheus: Option<&'a Map<String, Value>>,
    status_port: u16,
    native: bool,
    hold: bool,
}

fn proxy_container(p: &ProxyInputs, cfg: &InjectConfig) -> Value {
    let s = p.settings;
    let mode = s.interception_mode.unwrap_or(InterceptionMode::Redirect);
    let control_plane = control_plane_address(s, cfg);
    let mut envs = vec![
        // Istio's name for the CA, kept for tools that read it. `ferry proxy` reads
        // FERRY_DISCOVERY_ADDRESS: it follows the configuration stream and gets its
        // certificate on that one TLS port (15012), proving the pod's service account with
        // the projected token.
        env("CA_ADDR", control_plane.clone()),
        env("FERRY_DISCOVERY_ADDRESS", control_plane),
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("INSTANCE_IP", "status.podIP"),
        field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        field_env("HOST_IP", "status.hostIP"),
        field_env("ISTIO_META_NODE_NAME", "spec.nodeName"),
        json!({ "name": "ISTIO_CPU_LIMIT", "valueFrom": { "resourceFieldRef": { "resource": "limits.cpu" } } }),
        env("TRUST_DOMAIN", cfg.trust_domain.clone()),
        env(
            "PROXY_CONFIG",
            s.proxy_config
                .as_ref()
                .map_or_else(|| "{}".to_string(), Value::to_string),
        ),
        env("ISTIO_META_POD_PORTS", p.app.ports.clone()),
        env("ISTIO_META_APP_CONTAINERS", p.app.names.join(",")),
        env(
            "ISTIO_META_CLUSTER_ID",
            p.ctx
                .cluster_id
                .clone()
                .unwrap_or_else(|| cfg.cluster_id.clone()),
        ),
        env("ISTIO_META_INTERCEPTION_MODE", mode.as_str()),
    ];
    if let Some(network) = p.ctx.network.as_ref().or(cfg.network.as_ref()) {
        envs.push(env("ISTIO_META_NETWORK", network.clone()));
    }
    envs.push(env("ISTIO_META_WORKLOAD_NAME", p.ctx.workload.name.clone()));
    envs.push(env(
        "ISTIO_META_OWNER",
        p.ctx.workload.owner(&p.ctx.namespace),
    ));
    envs.push(env("ISTIO_META_MESH_ID", cfg.effective_mesh_id()));
    if !p.probers.is_empty() {
        envs.push(env(
            probes::PROBERS_ENV,
            Value::Object(p.probers.clone()).to_string(),
        ));
    }
    if let Some(prom) = p.prometheus {
        envs.push(env(PROMETHEUS_ENV, Value::Object(prom.clone()).to_string()));
    }
    for (k, v) in &s.proxy_metadata {
        envs.push(env(k, v.clone()));
    }
    let mut c = json!({
        "name": PROXY_CONTAINER,
        "image": image(s, cfg),
        "args": [
            "proxy", "sidecar",
            "--log-level", s.log_level.clone().unwrap_or_else(|| "warning".into()),
            "--config-cache", CONFIG_CACHE_PATH
        ],
        "env": envs,
        "ports": [{ "containerPort": METRICS_PORT, "name": "http-envoy-prom", "protocol": "TCP" }],
        "resources": resources(s, cfg),
        "securityContext": proxy_security_context(mode),
        "volumeMounts": [
            { "mountPath": "/var/run/ferry", "name": "ferry-runtime" },
            { "mountPath": "/var/lib/ferry/data", "name": "ferry-data" },
            { "mountPath": "/etc/ferry/pod", "name": "ferry-podinfo" },
            { "mountPath": "/var/run/secrets/tokens", "name": "ferry-token" },
            { "mountPath": "/var/run/secrets/ferry", "name": "ferry-ca-root-cert" }
        ]
    });
    if let Some(policy) = &cfg.image_pull_policy {
        c["imagePullPolicy"] = json!(policy);
    }
    if p.status_port != 0 {
        let ready = json!({ "path": "/healthz/ready", "port": HEALTH_PORT });
        c["readinessProbe"] = json!({
            "httpGet": ready,
            "initialDelaySeconds": s.readiness_initial_delay.unwrap_or(0),
            "periodSeconds": s.readiness_period.unwrap_or(15),
            "timeoutSeconds": 3,
            "failureThreshold": s.readiness_failure_threshold.unwrap_or(4)
        });
        c["startupProbe"] = json!({
            "httpGet": ready,
            "initialDelaySeconds": 0,
            "periodSeconds": 1,
            "timeoutSeconds": 3,
            "failureThreshold": 600
        });
    }
    if p.native {
        c["restartPolicy"] = json!("Always");
        c["lifecycle"] =
            json!({ "preStop": { "exec": { "command": ["ferry", "proxy", "drain"] } } });
    } else if p.hold {
        c["lifecycle"] =
            json!({ "postStart": { "exec": { "command": ["ferry", "proxy", "wait"] } } });
    }
    c
}

/// Where the injected proxy reaches the control plane (its configuration stream and its CA,
/// both on the TLS port): the pod's `proxy.istio.io/config` `discoveryAddress` when set, as
/// in Istio, else the mesh's `controlPlaneAddress`.
fn control_plane_address(settings: &PodSettings, cfg: &InjectConfig) -> String {
    settings
        .proxy_config
        .as_ref()
        .and_then(|c| c.get("discoveryAddress"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .unwrap_or(&cfg.control_plane_address)
        .to_string()
}

fn proxy_security_context(mode: InterceptionMode) -> Value {
    if mode == InterceptionMode::Tproxy {
        // TPROXY needs to bind to foreign addresses: root with NET_ADMIN, as in Istio.
        return json!({
            "allowPrivilegeEscalation": false,
            "capabilities": { "add": ["NET_ADMIN"], "drop": ["ALL"] },
            "privileged": false,
            "readOnlyRootFilesystem": true,
            "runAsGroup": PROXY_UID,
            "runAsNonRoot": false,
            "runAsUser": 0
        });
    }
    json!({
        "allowPrivilegeEscalation": false,
        "capabilities": { "drop": ["ALL"] },
        "privileged": false,
        "readOnlyRootFilesystem": true,
        "runAsGroup": PROXY_UID,
        "runAsNonRoot": true,
        "runAsUser": PROXY_UID
    })
}

fn volumes() -> Vec<Value> {
    vec![
        json!({ "name": "ferry-runtime", "emptyDir": { "medium": "Memory" } }),
        json!({ "name": "ferry-data", "emptyDir": {} }),
        json!({ "name": "ferry-podinfo", "downwardAPI": { "items": [
            { "path": "labels", "fieldRef": { "fieldPath": "metadata.labels" } },
            { "path": "annotations", "fieldRef": { "fieldPath": "metadata.annotations" } }
        ] } }),
        json!({ "name": "ferry-token", "projected": { "sources": [
            { "serviceAccountToken": { "audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token" } }
        ] } }),
        json!({ "name": "ferry-ca-root-cert", "configMap": { "name": "ferry-ca-root-cert" } }),
    ]
}

/// Applies a user-written sidecar container's fields over the generated one: `env` and
/// `volumeMounts` merge by name/path, `image: auto` keeps the injected image, every other
/// field replaces the template's.
fn apply_overrides(proxy: &mut Value, overrides: &Value) {
    let (Some(target), Some(over)) = (proxy.as_object_mut(), overrides.as_object()) else {
        return;
    };
    for (key, value) in over {
        match key.as_str() {
            "name" => {}
            "image" if value.as_str() == Some("auto") => {}
            "env" | "volumeMounts" => {
                let id = if key == "env" { "name" } else { "mountPath" };
                let list = target.entry(key.clone()).or_insert_with(|| json!([]));
                let (Some(list), Some(extra)) = (list.as_array_mut(), value.as_array()) else {
                    continue;
                };
                for item in extra {
                    match list.iter_mut().find(|e| e[id] == item[id]) {
                        Some(existing) => *existing = item.clone(),
                        None => list.push(item.clone()),
                    }
                }
            }
            _ => {
                target.insert(key.clone(), value.clone());
            }
        }
    }
}

/// The canonical service name: the label if set, else `app.kubernetes.io/name`, `app`, the
/// workload name; at most 63 characters.
fn canonical_name(labels: &Map<String, Value>, workload: &Workload) -> String {
    let name = [CANONICAL_NAME_LABEL, "app.kubernetes.io/name", "app"]
        .iter()
        .find_map(|k| {
            labels
                .get(*k)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
        })
        .unwrap_or(&workload.name);
    name.chars().take(63).collect()
}

fn canonical_revision(labels: &Map<String, Value>) -> String {
    [
        CANONICAL_REVISION_LABEL,
        "app.kubernetes.io/version",
        "version",
    ]
    .iter()
    .find_map(|k| {
        labels
            .get(*k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    })
    .unwrap_or("latest")
    .to_string()
}

/// Injects the sidecar: returns the pod as it should be created. Pure; the input is not
/// changed. Injecting the output again returns it unchanged.
pub fn inject(pod: &Value, ctx: &PodContext, cfg: &InjectConfig) -> Result<Value, InjectError> {
    let mut pod = pod.clone();
    let overrides = strip(&mut pod)?;
    let Some(obj) = pod.as_object_mut() else {
        return Err(invalid("pod", "must be an object"));
    };
    let meta = object_at(obj, "metadata", "metadata")?;
    let annotations_map = meta
        .get("annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let settings = annotations::read(&annotations_map).map_err(InjectError::InvalidAnnotations)?;
    let status_port = settings.status_port.unwrap_or(DEFAULT_STATUS_PORT);
    let native = settings.native_sidecar.unwrap_or(cfg.native_sidecars);
    let hold = !native
        && settings
            .hold_application
            .unwrap_or(cfg.hold_application_until_proxy_starts);

    // Labels.
    let labels = object_at(meta, "labels", "metadata.labels")?;
    labels.insert(TLS_MODE_LABEL.into(), json!("istio"));
    let name = canonical_name(labels, &ctx.workload);
    let revision = canonical_revision(labels);
    labels.insert(CANONICAL_NAME_LABEL.into(), json!(name));
    labels.insert(CANONICAL_REVISION_LABEL.into(), json!(revision));

    // Probes and metrics of the application.
    let spec = object_at(obj, "spec", "spec")?;
    let app = array_at(spec, "containers", "spec.containers")?;
    let rewrite = settings
        .rewrite_app_probes
        .unwrap_or(cfg.rewrite_app_probes)
        && status_port != 0;
    let probers = if rewrite {
        probes::rewrite(app, status_port)
    } else {
        Map::new()
    };
    let app = AppSummary::of(app);
    let first_app = app.names.first().cloned().unwrap_or_default();

    let meta = object_at(obj, "metadata", "metadata")?;
    let annotations = object_at(meta, "annotations", "metadata.annotations")?;
    let merge = cfg.prometheus_merge
        && settings.merge_metrics != Some(false)
        && status_port != 0
        && annotations
            .get("prometheus.io/scrape")
            .and_then(Value::as_str)
            != Some("false");
    let prometheus = merge.then(|| {
        let mut saved = Map::new();
        for (short, key) in PROMETHEUS_KEYS {
            if let Some(v) = annotations.get(key) {
                saved.insert(short.to_string(), v.clone());
            }
        }
        annotations.insert("prometheus.io/scrape".into(), json!("true"));
        annotations.insert("prometheus.io/port".into(), json!(status_port.to_string()));
        annotations.insert("prometheus.io/path".into(), json!("/stats/prometheus"));
        saved
    });
    for key in [DEFAULT_CONTAINER, DEFAULT_LOGS_CONTAINER] {
        if !annotations.contains_key(key) && !first_app.is_empty() {
            annotations.insert(key.into(), json!(first_app));
        }
    }
    if let Some(o) = &overrides {
        annotations.insert(PROXY_OVERRIDES.into(), json!(o.to_string()));
    }

    // Containers.
    let redirect = RedirectConfig::for_pod(&settings, status_port);
    let init = redirect.as_ref().map(|r| init_container(r, &settings, cfg));
    let mut proxy = proxy_container(
        &ProxyInputs {
            settings: &settings,
            ctx,
            app: &app,
            probers: &probers,
            prometheus: prometheus.as_ref().filter(|m| !m.is_empty()),
            status_port,
            native,
            hold,
        },
        cfg,
    );
    if let Some(o) = &overrides {
        apply_overrides(&mut proxy, o);
    }
    let spec = object_at(obj, "spec", "spec")?;
    let init_containers = array_at(spec, "initContainers", "spec.initContainers")?;
    let mut status = SidecarStatus {
        volumes: Some(PROXY_VOLUMES.iter().map(|v| v.to_string()).collect()),
        revision: cfg.revision.clone(),
        ..Default::default()
    };
    let mut init_names = Vec::new();
    if native {
        let mut front: Vec<Value> = init.into_iter().collect();
        front.push(proxy);
        init_names.extend(front.iter().filter_map(container_name).map(String::from));
        init_containers.splice(0..0, front);
    } else {
        if let Some(init) = init {
            init_names.push(INIT_CONTAINER.to_string());
            init_containers.push(init);
        }
        let containers = array_at(spec, "containers", "spec.containers")?;
        if hold {
            containers.insert(0, proxy);
        } else {
            containers.push(proxy);
        }
        status.containers = Some(vec![PROXY_CONTAINER.to_string()]);
    }
    if init_names.is_empty() {
        spec.remove("initContainers");
    } else {
        status.init_containers = Some(init_names);
    }
    let pod_volumes = array_at(spec, "volumes", "spec.volumes")?;
    pod_volumes.retain(|v| {
        !v["name"]
            .as_str()
            .is_some_and(|n| PROXY_VOLUMES.contains(&n))
    });
    pod_volumes.extend(volumes());

    let meta = object_at(obj, "metadata", "metadata")?;
    let annotations = object_at(meta, "annotations", "metadata.annotations")?;
    annotations.insert(FERRY_STATUS.into(), json!(status.to_annotation()));
    Ok(pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_plane_address_table() {
        let cfg = InjectConfig {
            control_plane_address: "ferry-control.mesh.svc:15012".into(),
            ..Default::default()
        };
        let cases: [(&str, Option<Value>, &str); 4] = [
            ("no proxy config", None, "ferry-control.mesh.svc:15012"),
            (
                "proxy config without the field",
                Some(json!({ "concurrency": 2 })),
                "ferry-control.mesh.svc:15012",
            ),
            (
                "blank discoveryAddress",
                Some(json!({ "discoveryAddress": " " })),
                "ferry-control.mesh.svc:15012",
            ),
            (
                "the pod's discoveryAddress",
                Some(json!({ "discoveryAddress": "cp.other.svc:15012" })),
                "cp.other.svc:15012",
            ),
        ];
        for (what, proxy_config, want) in cases {
            let settings = PodSettings {
                proxy_config,
                ..Default::default()
            };
            assert_eq!(control_plane_address(&settings, &cfg), want, "{what}");
        }
    }
}
