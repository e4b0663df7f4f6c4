//! Validation of loaded documents: the resource envelope (apiVersion, kind, metadata), typed
//! Istio specs with Istio's rules, Ferry's own kinds (`ferry.dev`: RedisPolicy), type checks
//! of Kubernetes kinds, and diagnostics that name file, line, resource and field.

mod checks;
mod destination_rule;
mod kubernetes;
mod path;
mod peer_authentication;
mod redis_policy;
mod structural;
mod telemetry;
mod virtual_service;

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use path::{FieldPath, Segment};
pub use structural::{Problem, deserialize_all, did_you_mean};

use crate::ferry::RedisPolicySpec;
use crate::load::{Document, LoadError, expand_lists};
use crate::names;
use crate::resource::{IstioResource, Resource, ResourceId};
use checks::Checker;

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The resource is invalid.
    Error,
    /// Worth a look, but not invalid.
    Warning,
}

/// One finding about one field of one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// File path as given, or `<stdin>`.
    pub source: String,
    /// 1-based line, or 0 when unknown.
    pub line: usize,
    /// `Kind/namespace/name`, or empty when the document is not a resource.
    pub resource: String,
    /// Field path such as `spec.http[0].route[1].destination.subset`; empty for the whole resource.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// Error or warning.
    pub severity: Severity,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        f.write_str(": ")?;
        if !self.resource.is_empty() {
            write!(f, "{}: ", self.resource)?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl From<&LoadError> for Diagnostic {
    fn from(e: &LoadError) -> Self {
        Diagnostic {
            source: e.source.clone(),
            line: e.line.unwrap_or(0),
            resource: String::new(),
            field: String::new(),
            message: e.message.clone(),
            severity: Severity::Error,
        }
    }
}

/// Settings of validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The cluster's DNS domain, for short host names (default `cluster.local`).
    pub cluster_domain: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cluster_domain: "cluster.local".to_string(),
        }
    }
}

/// Everything validation found, and the resources that passed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Errors, in document order.
    pub errors: Vec<Diagnostic>,
    /// Warnings, in document order.
    pub warnings: Vec<Diagnostic>,
    /// Resources without errors, typed.
    pub resources: Vec<Resource>,
    /// RedisPolicies (`ferry.dev/v1alpha1`) without errors, typed; kept apart from
    /// `resources` (Istio's kinds), the store takes them from here.
    pub redis_policies: Vec<IstioResource<RedisPolicySpec>>,
    /// Telemetry resources (`telemetry.istio.io`) without errors, typed; kept apart like
    /// RedisPolicies until the store holds them.
    pub telemetries: Vec<IstioResource<crate::istio::TelemetrySpec>>,
}

/// Validates `docs` with default options.
pub fn validate_documents(docs: &[Document]) -> Report {
    validate_documents_with(docs, &Options::default())
}

/// Validates every resource of `docs` (items of `List` kinds included).
pub fn validate_documents_with(docs: &[Document], options: &Options) -> Report {
    let mut report = Report::default();
    for doc in docs {
        for (prefix, value) in expand_lists(doc) {
            validate_resource(doc, &prefix, &value, options, &mut report);
        }
    }
    report
}

/// Problems about one resource before they get lines.
struct Findings {
    errors: Vec<(FieldPath, String)>,
    warnings: Vec<(FieldPath, String)>,
}

impl Findings {
    fn error(&mut self, path: FieldPath, message: impl Into<String>) {
        self.errors.push((path, message.into()));
    }
    fn warn(&mut self, path: FieldPath, message: impl Into<String>) {
        self.warnings.push((path, message.into()));
    }
    fn problems(&mut self, base: &FieldPath, problems: Vec<structural::Problem>, error: bool) {
        for p in problems {
            let mut full = base.clone();
            for s in p.path.segments() {
                full = match s {
                    Segment::Key(k) => full.key(k.clone()),
                    Segment::Index(i) => full.index(*i),
                };
            }
            if error {
                self.error(full, p.message);
            } else {
                self.warn(full, p.message);
            }
        }
    }
}

/// Istio kinds Ferry reads but does not check yet, by API group.
const UNCHECKED_ISTIO: &[(&str, &[&str])] = &[
    (
        "networking.istio.io",
        &[
            "Gateway",
            "ServiceEntry",
            "Sidecar",
            "WorkloadEntry",
            "WorkloadGroup",
            "EnvoyFilter",
            "ProxyConfig",
        ],
    ),
    (
        "security.istio.io",
        &["AuthorizationPolicy", "RequestAuthentication"],
    ),
    ("extensions.istio.io", &["WasmPlugin"]),
];

const NETWORKING_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];
const SECURITY_VERSIONS: &[&str] = &["v1", "v1beta1"];
const TELEMETRY_VERSIONS: &[&str] = &["v1", "v1alpha1"];

fn validate_resource(
    doc: &Document,
    prefix: &str,
    value: &Value,
    options: &Options,
    report: &mut Report,
) {
    let mut f = Findings {
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let root = FieldPath::root();
    let Some(obj) = value.as_object() else {
        f.error(
            root,
            "a resource must be a mapping with apiVersion, kind and metadata",
        );
        finish(doc, prefix, "", f, None, report);
        return;
    };
    let text = |key: &str, f: &mut Findings| -> Option<String> {
        match obj.get(key) {
            None | Some(Value::Null) => {
                f.error(FieldPath::root().key(key), format!("`{key}` is required"));
                None
            }
            Some(Value::String(s)) if s.is_empty() => {
                f.error(
                    FieldPath::root().key(key),
                    format!("`{key}` must not be empty"),
                );
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                f.error(
                    FieldPath::root().key(key),
                    format!("`{key}` must be a string"),
                );
                None
            }
        }
    };
    let api_version = text("apiVersion", &mut f);
    let kind = text("kind", &mut f);
    let meta_value = obj.get("metadata").cloned().unwrap_or(Value::Null);
    let metadata = match &meta_value {
        Value::Null => {
            f.error(root.key("metadata"), "`metadata` with a `name` is required");
            None
        }
        v => {
            let (meta, problems) = deserialize_all::<ObjectMeta>(v);
            f.problems(&root.key("metadata"), problems, true);
            meta
        }
    };
    let name = metadata.as_ref().and_then(|m| m.name.clone());
    let namespace = metadata
        .as_ref()
        .and_then(|m| m.namespace.clone())
        .unwrap_or_else(|| "default".to_string());
    if let Some(m) = &metadata {
        match &m.name {
            None if m.generate_name.is_none() => f.error(root.key("metadata").key("name"), "`metadata.name` is required"),
            Some(n) if !names::is_dns1123_subdomain(n) => f.error(
                root.key("metadata").key("name"),
                format!("name `{n}` must be lowercase letters, digits, `-` and `.` (a DNS-1123 subdomain)"),
            ),
            _ => {}
        }
        if let Some(ns) = &m.namespace
            && !names::is_dns1123_label(ns)
        {
            f.error(
                root.key("metadata").key("namespace"),
                format!("`{ns}` is not a valid namespace name"),
            );
        }
    }
    let id = ResourceId {
        kind: kind.clone().unwrap_or_else(|| "<no kind>".to_string()),
        namespace: namespace.clone(),
        name: name.clone().unwrap_or_else(|| "<unnamed>".to_string()),
    };
    let (Some(api_version), Some(kind)) = (api_version, kind) else {
        finish(doc, prefix, &id.to_string(), f, None, report);
        return;
    };
    let (group, _version) = api_version
        .rsplit_once('/')
        .unwrap_or(("", api_version.as_str()));
    let version = api_version.rsplit('/').next().unwrap_or_default();
    let mut checker = Checker::new(&namespace, &options.cluster_domain);
    let meta = metadata.clone().unwrap_or_default();
    let mut redis = None;
    let mut telemetry_resource = None;
    let resource = match (group, kind.as_str()) {
        ("networking.istio.io", "VirtualService") => istio(
            obj,
            &mut f,
            &mut checker,
            &api_version,
            version,
            NETWORKING_VERSIONS,
            meta,
            virtual_service::check,
        )
        .map(|r| Resource::VirtualService(Box::new(r))),
        ("networking.istio.io", "DestinationRule") => istio(
            obj,
            &mut f,
            &mut checker,
            &api_version,
            version,
            NETWORKING_VERSIONS,
            meta,
            destination_rule::check,
        )
        .map(|r| Resource::DestinationRule(Box::new(r))),
        ("security.istio.io", "PeerAuthentication") => istio(
            obj,
            &mut f,
            &mut checker,
            &api_version,
            version,
            SECURITY_VERSIONS,
            meta,
            peer_authentication::check,
        )
        .map(|r| Resource::PeerAuthentication(Box::new(r))),
        (crate::ferry::GROUP, "RedisPolicy") => {
            redis = istio(
                obj,
                &mut f,
                &mut checker,
                &api_version,
                version,
                crate::ferry::VERSIONS,
                meta,
                redis_policy::check,
            );
            None
        }
        ("telemetry.istio.io", "Telemetry") => {
            telemetry_resource = istio(
                obj,
                &mut f,
                &mut checker,
                &api_version,
                version,
                TELEMETRY_VERSIONS,
                meta,
                telemetry::check,
            );
            None
        }
        _ => other_kind(value, &mut f, &api_version, group, &kind, &id),
    };
    f.errors.append(&mut checker.errors);
    f.warnings.append(&mut checker.warnings);
    let valid = f.errors.is_empty();
    finish(doc, prefix, &id.to_string(), f, resource, report);
    if let Some(r) = redis.filter(|_| valid) {
        report.redis_policies.push(r);
    }
    if let Some(r) = telemetry_resource.filter(|_| valid) {
        report.telemetries.push(r);
    }
}

#[allow(clippy::too_many_arguments)]
fn istio<S: DeserializeOwned>(
    obj: &serde_json::Map<String, Value>,
    f: &mut Findings,
    checker: &mut Checker<'_>,
    api_version: &str,
    version: &str,
    versions: &[&str],
    metadata: ObjectMeta,
    check: fn(&mut Checker<'_>, &S, &FieldPath),
) -> Option<IstioResource<S>> {
    let root = FieldPath::root();
    if !versions.contains(&version) {
        f.error(
            root.key("apiVersion"),
            format!(
                "unsupported version `{api_version}`; supported versions: {}",
                versions.join(", ")
            ),
        );
    }
    const TOP: [&str; 5] = ["apiVersion", "kind", "metadata", "spec", "status"];
    for key in obj.keys() {
        if !TOP.contains(&key.as_str()) {
            let message = match did_you_mean(key, TOP) {
                Some(best) => format!("unknown field `{key}`, did you mean `{best}`?"),
                None => format!("unknown field `{key}`"),
            };
            f.error(root.key(key.clone()), message);
        }
    }
    let mut spec_value = match obj.get("spec") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(v) => v.clone(),
    };
    strip_nulls(&mut spec_value);
    let (spec, problems) = deserialize_all::<S>(&spec_value);
    f.problems(&root.key("spec"), problems, true);
    let spec = spec?;
    check(checker, &spec, &root.key("spec"));
    Some(IstioResource {
        api_version: api_version.to_string(),
        metadata,
        spec,
    })
}

fn other_kind(
    value: &Value,
    f: &mut Findings,
    api_version: &str,
    group: &str,
    kind: &str,
    id: &ResourceId,
) -> Option<Resource> {
    let root = FieldPath::root();
    let unsupported = || Resource::Unsupported {
        id: id.clone(),
        api_version: api_version.to_string(),
    };
    if group.ends_with(".istio.io") {
        let known = UNCHECKED_ISTIO
            .iter()
            .any(|(g, kinds)| *g == group && kinds.contains(&kind));
        if known {
            f.warn(root, format!("{kind} is not checked by Ferry yet"));
        } else {
            f.warn(
                root.key("kind"),
                format!("unknown Istio kind `{kind}` in `{group}`; not checked"),
            );
        }
        return Some(unsupported());
    }
    if let Some(check) = kubernetes::lookup(api_version, kind) {
        let checked = check(value);
        f.problems(&root, checked.errors, true);
        f.problems(&root, checked.warnings, false);
        return checked.typed.then(|| Resource::Kubernetes {
            id: id.clone(),
            api_version: api_version.to_string(),
            value: Box::new(value.clone()),
        });
    }
    match kubernetes::known_version(kind) {
        Some(v) if group.is_empty() || !group.contains('.') || group.ends_with(".k8s.io") => {
            f.warn(
                root.key("apiVersion"),
                format!("{kind} is checked as `{v}`; `{api_version}` is not checked"),
            );
        }
        _ => f.warn(
            root,
            format!("{kind} ({api_version}) is not a kind Ferry knows; not checked"),
        ),
    }
    Some(unsupported())
}

/// Removes `null` mapping entries: Istio treats a null field as absent.
fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn finish(
    doc: &Document,
    prefix: &str,
    resource: &str,
    f: Findings,
    typed: Option<Resource>,
    report: &mut Report,
) {
    let make = |(path, message): (FieldPath, String), severity| Diagnostic {
        source: doc.source.to_string(),
        line: doc.line_of(&format!("{prefix}{}", path.pointer())),
        resource: resource.to_string(),
        field: if path.segments().is_empty() {
            String::new()
        } else {
            path.to_string()
        },
        message,
        severity,
    };
    let mut errors: Vec<Diagnostic> = f
        .errors
        .into_iter()
        .map(|e| make(e, Severity::Error))
        .collect();
    let mut warnings: Vec<Diagnostic> = f
        .warnings
        .into_iter()
        .map(|w| make(w, Severity::Warning))
        .collect();
    errors.sort_by_key(|d| d.line);
    warnings.sort_by_key(|d| d.line);
    if errors.is_empty()
        && let Some(r) = typed
    {
        report.resources.push(r);
    }
    report.errors.extend(errors);
    report.warnings.extend(warnings);
}

#[cfg(test)]
mod tests;
