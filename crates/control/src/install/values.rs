//! The installation's settings (`ferry install -f values.yaml --set key=value`, and the Helm
//! chart's `values.yaml`): one typed tree with defaults. Sources merge in order (defaults, then
//! each file, then each `--set`), and every source is checked on its own first, so an error
//! names the file and line, or the `--set` argument, and the key.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Ferry's version; the default image tag (the chart's `appVersion`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Every installation setting. `Default` is the chart's `values.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
#[schemars(title = "Ferry installation values")]
pub struct Values {
    /// The one image that runs the control plane and the injected proxy and init containers.
    pub image: ImageValues,
    /// The control-plane Deployment.
    pub control_plane: ControlPlaneValues,
    /// The sidecar-injection webhook registration.
    pub webhook: WebhookValues,
    /// Mesh settings the control plane reads from the `ferry-mesh` ConfigMap.
    pub mesh: MeshValues,
    /// Which CustomResourceDefinitions to install.
    pub crds: CrdValues,
}

/// Where the image comes from.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ImageValues {
    /// Image repository, without the tag.
    #[schemars(length(min = 1))]
    pub repository: String,
    /// Image tag; empty means Ferry's version.
    pub tag: String,
    /// `imagePullPolicy` of the control plane and the injected containers.
    pub pull_policy: PullPolicy,
}

/// Kubernetes' image pull policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum PullPolicy {
    /// Always pull.
    Always,
    /// Pull when the node does not have the image.
    IfNotPresent,
    /// Never pull.
    Never,
}

/// The control-plane Deployment.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ControlPlaneValues {
    /// Replicas; two keep the webhook answering while one restarts. The parts that must run
    /// once (caBundle patching, root-certificate ConfigMaps) follow a Lease.
    #[schemars(range(min = 1, max = 10))]
    pub replicas: i32,
    /// CPU and memory requests and limits (Kubernetes quantities).
    pub resources: ResourceValues,
    /// `RUST_LOG`-style log filter.
    #[schemars(length(min = 1))]
    pub log_level: String,
    /// Minimum replicas kept through voluntary disruptions (PodDisruptionBudget).
    #[schemars(range(min = 0, max = 10))]
    pub min_available: i32,
    /// Node labels the pods must match.
    pub node_selector: BTreeMap<String, String>,
    /// Pod tolerations, as Kubernetes writes them.
    pub tolerations: Vec<Toleration>,
    /// Priority class of the pods; empty for none.
    pub priority_class_name: String,
}

/// A pod toleration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Toleration {
    /// Taint key; empty matches every key (with `Exists`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Exists` or `Equal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<TolerationOperator>,
    /// Taint value (with `Equal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`; empty matches all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
    /// How long a `NoExecute` taint is tolerated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

/// Toleration operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum TolerationOperator {
    /// The taint exists, whatever its value.
    Exists,
    /// The taint has this value.
    Equal,
}

/// Taint effects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum TaintEffect {
    /// Do not schedule.
    NoSchedule,
    /// Avoid scheduling.
    PreferNoSchedule,
    /// Evict.
    NoExecute,
}

/// Requests and limits.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ResourceValues {
    /// Requests (`cpu`, `memory`).
    pub requests: BTreeMap<ResourceName, Quantity>,
    /// Limits (`cpu`, `memory`).
    pub limits: BTreeMap<ResourceName, Quantity>,
}

/// A resource the control plane asks for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceName {
    /// CPU.
    Cpu,
    /// Memory.
    Memory,
    /// Local ephemeral storage.
    EphemeralStorage,
}

/// A Kubernetes quantity such as `100m`, `128Mi` or `2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quantity(pub String);

impl JsonSchema for Quantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A Kubernetes quantity such as 100m, 0.5, 128Mi or 1G.",
            "type": ["string", "number"],
            "pattern": r"^[+]?([0-9]+[.]?[0-9]*|[.][0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][-+]?[0-9]+)?$"
        })
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // YAML writes `cpu: 1` as a number; Kubernetes accepts both.
        let value = Value::deserialize(d)?;
        let text = match &value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(serde::de::Error::custom(format!(
                    "expected a quantity such as 100m or 128Mi, found {other}"
                )));
            }
        };
        if quantity_ok(&text) {
            Ok(Quantity(text))
        } else {
            Err(serde::de::Error::custom(format!(
                "`{text}` is not a Kubernetes quantity (e.g. 100m, 0.5, 128Mi, 1G)"
            )))
        }
    }
}

/// Kubernetes' quantity grammar: a decimal number and an optional suffix (binary `Ki`..`Ei`,
/// decimal `n u m k M G T P E`, or an exponent `e3`/`E-2`).
fn quantity_ok(text: &str) -> bool {
    let body = text.strip_prefix('+').unwrap_or(text);
    let digits = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(digits);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return false;
    }
    const SUFFIXES: [&str; 15] = [
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P",
    ];
    if SUFFIXES.contains(&suffix) || suffix == "E" {
        return true;
    }
    let exponent = suffix
        .strip_prefix('e')
        .or_else(|| suffix.strip_prefix('E'));
    exponent.is_some_and(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
    })
}

/// The webhook registration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WebhookValues {
    /// How long the API server waits for the webhook; pod creation is refused after it
    /// (`failurePolicy: Fail`), so keep it short.
    #[schemars(range(min = 1, max = 30))]
    pub timeout_seconds: i32,
    /// Also inject pods in namespaces without any injection label (Istio's `auto.` entry).
    pub enable_namespaces_by_default: bool,
}

/// Mesh settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MeshValues {
    /// SPIFFE trust domain of the workload certificates.
    #[schemars(length(min = 1))]
    pub trust_domain: String,
    /// Image of the injected containers; empty means the control plane's image.
    pub proxy_image: String,
    /// Inject the proxy as a Kubernetes native sidecar (Kubernetes 1.29 and later).
    pub native_sidecars: bool,
    /// mTLS mode of workloads that no PeerAuthentication covers.
    pub default_peer_authentication_mode: PeerAuthenticationMode,
}

/// Server-side mTLS modes a mesh default can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PeerAuthenticationMode {
    /// Plaintext and mTLS (Istio's default).
    Permissive,
    /// mTLS only.
    Strict,
    /// Plaintext only.
    Disable,
}

impl fmt::Display for PeerAuthenticationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PeerAuthenticationMode::Permissive => "PERMISSIVE",
            PeerAuthenticationMode::Strict => "STRICT",
            PeerAuthenticationMode::Disable => "DISABLE",
        })
    }
}

/// Which CustomResourceDefinitions to install.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CrdValues {
    /// VirtualService, DestinationRule and PeerAuthentication (skipped at install time when
    /// the cluster already has Istio's own).
    pub istio: bool,
    /// Ferry's RedisPolicy.
    pub redis_policy: bool,
}

impl Default for ImageValues {
    fn default() -> Self {
        ImageValues {
            repository: "ghcr.io/ferry-mesh/ferry".into(),
            tag: String::new(),
            pull_policy: PullPolicy::IfNotPresent,
        }
    }
}

impl Default for ControlPlaneValues {
    fn default() -> Self {
        let q = |s: &str| Quantity(s.to_string());
        ControlPlaneValues {
            replicas: 2,
            resources: ResourceValues {
                requests: BTreeMap::from([
                    (ResourceName::Cpu, q("100m")),
                    (ResourceName::Memory, q("128Mi")),
                ]),
                limits: BTreeMap::from([(ResourceName::Memory, q("512Mi"))]),
            },
            log_level: "info".into(),
            min_available: 1,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            priority_class_name: String::new(),
        }
    }
}

impl Default for ResourceValues {
    fn default() -> Self {
        ControlPlaneValues::default().resources
    }
}

impl Default for WebhookValues {
    fn default() -> Self {
        WebhookValues {
            timeout_seconds: 5,
            enable_namespaces_by_default: false,
        }
    }
}

impl Default for MeshValues {
    fn default() -> Self {
        MeshValues {
            trust_domain: "cluster.local".into(),
            proxy_image: String::new(),
            native_sidecars: true,
            default_peer_authentication_mode: PeerAuthenticationMode::Permissive,
        }
    }
}

impl Default for CrdValues {
    fn default() -> Self {
        CrdValues {
            istio: true,
            redis_policy: true,
        }
    }
}

impl Values {
    /// `repository:tag`, the tag defaulting to Ferry's version.
    pub fn image(&self) -> String {
        let tag = if self.image.tag.is_empty() {
            VERSION
        } else {
            &self.image.tag
        };
        format!("{}:{tag}", self.image.repository)
    }

    /// The injected containers' image.
    pub fn proxy_image(&self) -> String {
        if self.mesh.proxy_image.is_empty() {
            self.image()
        } else {
            self.mesh.proxy_image.clone()
        }
    }

    /// Checks what the types cannot: ranges and non-empty strings. The error is the key
    /// path (`controlPlane.replicas`) and a message.
    pub fn check(&self) -> Result<(), (String, String)> {
        let cp = &self.control_plane;
        let fail = |key: &str, message: String| Err((key.to_string(), message));
        if !(1..=10).contains(&cp.replicas) {
            return fail(
                "controlPlane.replicas",
                format!("{} is out of range 1..10", cp.replicas),
            );
        }
        if !(0..=cp.replicas).contains(&cp.min_available) {
            return fail(
                "controlPlane.minAvailable",
                format!(
                    "{} must be between 0 and controlPlane.replicas ({})",
                    cp.min_available, cp.replicas
                ),
            );
        }
        if !(1..=30).contains(&self.webhook.timeout_seconds) {
            return fail(
                "webhook.timeoutSeconds",
                format!(
                    "{} is out of range 1..30 (the API server's limit)",
                    self.webhook.timeout_seconds
                ),
            );
        }
        for (key, value) in [
            ("image.repository", &self.image.repository),
            ("controlPlane.logLevel", &cp.log_level),
            ("mesh.trustDomain", &self.mesh.trust_domain),
        ] {
            if value.trim().is_empty() {
                return fail(key, "must not be empty".into());
            }
        }
        Ok(())
    }
}

/// The JSON schema (draft 7) of the values, which the Helm chart ships as
/// `values.schema.json`: Helm then refuses the same unknown keys and wrong types.
pub fn json_schema() -> Value {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let mut schema = generator.into_root_schema_for::<Values>().to_value();
    if let Some(map) = schema.as_object_mut() {
        map.insert(
            "$comment".into(),
            "Generated from crates/control/src/install/values.rs; do not edit.".into(),
        );
    }
    schema
}

/// Values that cannot be used, with where they came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct ValuesError {
    /// `values.yaml:12`, or `--set image.tag=x`.
    pub origin: String,
    /// What is wrong, starting with the key.
    pub message: String,
}

/// Builds [`Values`] from sources applied in order over the defaults.
#[derive(Debug, Default)]
pub struct ValuesBuilder {
    merged: Value,
}

impl ValuesBuilder {
    /// Starts from the defaults.
    pub fn new() -> Self {
        ValuesBuilder {
            merged: serde_json::to_value(Values::default()).unwrap_or_default(),
        }
    }

    /// Merges `overlay`, then checks the result; a failure is `overlay`'s (the key path of
    /// the offending value and the message), and leaves the builder unchanged.
    fn apply(&mut self, overlay: Value) -> Result<(), (String, String)> {
        typed(&without_nulls(&overlay)).map_err(|e| (e.pointer, e.message))?;
        let mut merged = self.merged.clone();
        merge(&mut merged, overlay);
        let values = typed(&merged).map_err(|e| (e.pointer, e.message))?;
        values.check().map_err(|(key, message)| {
            let pointer = key.split('.').map(|k| format!("/{k}")).collect();
            (pointer, format!("{key}: {message}"))
        })?;
        self.merged = merged;
        Ok(())
    }

    /// Merges a values file's text (YAML or JSON); `name` is used in errors.
    pub fn file(&mut self, name: &str, text: &str) -> Result<&mut Self, ValuesError> {
        let documents = ferry_model::parse_documents(name, text).map_err(|e| ValuesError {
            origin: match e.line {
                Some(line) => format!("{name}:{line}"),
                None => name.to_string(),
            },
            message: e.message,
        })?;
        let Some(document) = documents.into_iter().next() else {
            return Ok(self); // an empty file sets nothing
        };
        if !document.value.is_object() {
            return Err(ValuesError {
                origin: name.to_string(),
                message: "expected a mapping of values at the top level".into(),
            });
        }
        let lines = document.clone();
        self.apply(document.value)
            .map_err(|(pointer, message)| ValuesError {
                origin: format!("{name}:{}", lines.line_of(&pointer)),
                message,
            })?;
        Ok(self)
    }

    /// Applies one `--set key.path=value` (the value read as a YAML scalar, as Helm does:
    /// `true`, `3`, `"3"`, `null`; lists in braces `{a,b}`).
    pub fn set(&mut self, assignment: &str) -> Result<&mut Self, ValuesError> {
        let origin = format!("--set {assignment}");
        let err = |message: String| ValuesError {
            origin: origin.clone(),
            message,
        };
        let (path, raw) = assignment
            .split_once('=')
            .ok_or_else(|| err("expected key=value, e.g. controlPlane.replicas=3".into()))?;
        let keys: Vec<&str> = path.split('.').collect();
        if keys.iter().any(|k| k.trim().is_empty()) {
            return Err(err(format!("`{path}` is not a key path like image.tag")));
        }
        let value = scalar(raw);
        let mut tree = value;
        for key in keys.iter().rev() {
            tree = Value::Object([(key.to_string(), tree)].into_iter().collect());
        }
        self.apply(tree).map_err(|(_, message)| err(message))?;
        Ok(self)
    }

    /// The values: defaults overridden by every source, checked.
    pub fn build(&self) -> Result<Values, ValuesError> {
        // Every source was checked as it was applied.
        typed(&self.merged).map_err(|e| ValuesError {
            origin: "values".into(),
            message: e.message,
        })
    }
}

/// A typing error: the JSON pointer of the offending node and a message naming its key.
struct TypeError {
    pointer: String,
    message: String,
}

fn typed(value: &Value) -> Result<Values, TypeError> {
    serde_path_to_error::deserialize::<_, Values>(value).map_err(|e| {
        let mut keys: Vec<String> = e
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        let inner = e.inner().to_string();
        // An unknown field's name is in the message, not the path.
        if let Some(field) = inner
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
            && keys.last().map(String::as_str) != Some(field)
        {
            keys.push(field.to_string());
        }
        let pointer: String = keys
            .iter()
            .map(|k| format!("/{}", ferry_model::load::escape_pointer_segment(k)))
            .collect();
        let key = if keys.is_empty() {
            "(top level)".to_string()
        } else {
            keys.join(".")
        };
        TypeError {
            pointer,
            message: format!("{key}: {inner}"),
        }
    })
}

/// Reads a `--set` value as Helm does: booleans, null, integers and `{a,b}` lists are typed,
/// anything else is a string.
fn scalar(raw: &str) -> Value {
    match raw {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" => Value::Null,
        _ => {
            if let Some(inner) = raw.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                return Value::Array(
                    inner
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(scalar)
                        .collect(),
                );
            }
            if let Ok(n) = raw.parse::<i64>()
                && !(raw.len() > 1 && raw.starts_with('0'))
            {
                return Value::from(n);
            }
            Value::String(raw.to_string())
        }
    }
}

/// `value` without the mapping entries whose value is `null` (which only reset a default).
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Deep-merges `overlay` into `base`: mappings merge key by key, anything else replaces;
/// `null` removes the key (back to the default), as in Helm.
fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                if value.is_null() {
                    base.remove(&key);
                    continue;
                }
                match base.get_mut(&key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        merge(existing, value)
                    }
                    _ => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(files: &[(&str, &str)], sets: &[&str]) -> Result<Values, ValuesError> {
        let mut b = ValuesBuilder::new();
        for (name, text) in files {
            b.file(name, text)?;
        }
        for s in sets {
            b.set(s)?;
        }
        b.build()
    }

    #[test]
    fn defaults_and_overrides_in_order() {
        assert_eq!(build(&[], &[]).unwrap(), Values::default());
        let v = build(
            &[(
                "a.yaml",
                "controlPlane:\n  replicas: 3\nimage:\n  tag: v1\n",
            )],
            &["controlPlane.replicas=4", "mesh.nativeSidecars=false"],
        )
        .unwrap();
        assert_eq!(v.control_plane.replicas, 4);
        assert_eq!(v.image(), "ghcr.io/ferry-mesh/ferry:v1");
        assert!(!v.mesh.native_sidecars);
        assert_eq!(v.control_plane.log_level, "info");
        assert_eq!(v.proxy_image(), v.image());
    }

    #[test]
    fn errors_name_the_file_line_and_key() {
        let err = build(&[("my.yaml", "image:\n  tag: v1\n  repo: x\n")], &[]).unwrap_err();
        assert_eq!(err.origin, "my.yaml:3");
        assert!(
            err.message.starts_with("image.repo: unknown field"),
            "{err}"
        );

        let err = build(&[("my.yaml", "controlPlane:\n  replicas: many\n")], &[]).unwrap_err();
        assert_eq!(err.origin, "my.yaml:2");
        assert!(err.message.starts_with("controlPlane.replicas:"), "{err}");

        let err = build(&[], &["webhook.timeoutSecond=3"]).unwrap_err();
        assert_eq!(err.origin, "--set webhook.timeoutSecond=3");
        assert!(err.message.contains("webhook.timeoutSecond"), "{err}");

        let err = build(&[], &["webhook.timeoutSeconds=60"]).unwrap_err();
        assert!(err.to_string().contains("webhook.timeoutSeconds"), "{err}");

        let err = build(&[], &["noequals"]).unwrap_err();
        assert!(err.to_string().contains("key=value"), "{err}");
        let err = build(&[], &["a..b=1"]).unwrap_err();
        assert!(err.to_string().contains("a..b"), "{err}");

        let err = build(
            &[(
                "q.yaml",
                "controlPlane:\n  resources:\n    limits:\n      memory: lots\n",
            )],
            &[],
        )
        .unwrap_err();
        assert!(err.origin.starts_with("q.yaml:"), "{err}");
        assert!(
            err.message.contains("controlPlane.resources.limits") && err.message.contains("lots"),
            "{err}"
        );

        let err = build(&[("bad.yaml", "image: [\n")], &[]).unwrap_err();
        assert!(err.origin.starts_with("bad.yaml"), "{err}");
        let err = build(&[("list.yaml", "- a\n")], &[]).unwrap_err();
        assert!(err.to_string().contains("mapping"), "{err}");
    }

    #[test]
    fn set_values_are_typed_like_helm() {
        assert_eq!(scalar("3"), Value::from(3));
        assert_eq!(scalar("007"), Value::from("007"));
        assert_eq!(scalar("true"), Value::Bool(true));
        assert_eq!(scalar("v1.2"), Value::from("v1.2"));
        assert_eq!(scalar("{a,b}"), serde_json::json!(["a", "b"]));
        // A quantity given as a number is accepted.
        let v = build(&[], &["controlPlane.resources.requests.cpu=1"]).unwrap();
        assert_eq!(
            v.control_plane.resources.requests[&ResourceName::Cpu],
            Quantity("1".into())
        );
        // null restores the default.
        let v = build(&[("a.yaml", "image:\n  tag: x\n")], &["image.tag=null"]).unwrap();
        assert_eq!(v.image.tag, "");
    }

    #[test]
    fn quantities() {
        for ok in ["100m", "1", "0.5", "128Mi", "1G", "1e3", "2E-2", "+1Ki"] {
            assert!(quantity_ok(ok), "{ok}");
        }
        for bad in ["", "m", "1.2.3", "lots", "1 Mi", "1Xi", "1e"] {
            assert!(!quantity_ok(bad), "{bad}");
        }
    }
}
