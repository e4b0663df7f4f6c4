//! The manifest-directory source (`--config-dir DIR`): every `*.yaml`, `*.yml` and `*.json`
//! file below DIR (recursively; names starting with `.` are skipped, which covers editor
//! swap files and the `..data` links of a mounted ConfigMap), multi-document, `List` kinds
//! expanded, each resource validated exactly as `ferry validate` does.
//!
//! Reading is I/O ([`FileSource::load`]); turning one file's text into store entries is pure
//! ([`parse_file`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferry_model::ferry::RedisPolicySpec;
use ferry_model::istio::{MeshConfig, TelemetrySpec};
use ferry_model::{
    Diagnostic, Document, IstioResource, Resource, Severity, expand_lists, parse_documents,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::store::{
    Entry, Kind, MESH_CONFIG_KEY, MESH_CONFIG_MAP, Object, ObjectKey, Rejection, SourceUpdate,
};

/// File extensions read.
pub const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// How deep directories are followed (against symlink loops).
const MAX_DEPTH: usize = 32;

/// The result of reading a source: the update for the store and every diagnostic (errors of
/// rejected resources and broken files, and warnings), for logs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    /// What to apply to the store.
    pub update: SourceUpdate,
    /// Errors and warnings, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }
}

/// The manifest directory source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSource {
    dir: PathBuf,
}

impl FileSource {
    /// A source reading `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileSource { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The name this source gives the store (`files:<dir>`).
    pub fn source_name(&self) -> String {
        format!("files:{}", self.dir.display())
    }

    /// Reads every manifest file below `dir` now.
    pub fn load(dir: impl Into<PathBuf>) -> Loaded {
        FileSource::new(dir).read()
    }

    /// Reads every manifest file below the directory now.
    pub fn read(&self) -> Loaded {
        self.read_reporting().0
    }

    /// Reads every manifest file below the directory now, like [`FileSource::read`]; also
    /// returns the errors of reading it (directories that could not be listed, files that
    /// could not be read, each naming its path), which are among the diagnostics too. A file
    /// deleted between listing and reading (or a dangling symlink, as a mounted ConfigMap
    /// has for a moment when a key is removed) is gone, not an error.
    pub fn read_reporting(&self) -> (Loaded, Vec<Diagnostic>) {
        let source = self.source_name();
        let mut loaded = Loaded {
            update: SourceUpdate {
                source: source.clone(),
                ..SourceUpdate::default()
            },
            diagnostics: Vec::new(),
        };
        let (files, walk_errors) = manifest_files(&self.dir);
        if !walk_errors.is_empty() {
            // A directory we could not list may hold files we had: keep everything of this
            // source rather than delete what we cannot see.
            for d in &walk_errors {
                loaded.update.broken_origins.insert(d.source.clone());
            }
        }
        let mut read_errors = walk_errors.clone();
        loaded.diagnostics.extend(walk_errors);
        let mut seen: BTreeMap<ObjectKey, String> = BTreeMap::new();
        for file in files {
            let name = file.display().to_string();
            let parsed = match std::fs::read(&file) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => parse_file(&source, &name, &text),
                    Err(_) => broken(&source, &name, None, "not valid UTF-8"),
                },
                // Deleted between listing and reading: it is gone.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    let unreadable = broken(&source, &name, None, &format!("cannot read: {e}"));
                    read_errors.extend(unreadable.diagnostics.iter().cloned());
                    unreadable
                }
            };
            for entry in &parsed.update.entries {
                if let Some(first) = seen.insert(entry.key.clone(), name.clone()) {
                    loaded.diagnostics.push(Diagnostic {
                        source: name.clone(),
                        line: entry.line,
                        resource: entry.key.to_string(),
                        field: String::new(),
                        message: format!("also defined in {first}; this definition wins"),
                        severity: Severity::Warning,
                    });
                }
            }
            let update = &mut loaded.update;
            update.entries.extend(parsed.update.entries);
            update.rejections.extend(parsed.update.rejections);
            update.broken_origins.extend(parsed.update.broken_origins);
            loaded.diagnostics.extend(parsed.diagnostics);
        }
        // A later file's definition replaces an earlier one.
        let mut by_key: BTreeMap<ObjectKey, Entry> = BTreeMap::new();
        for entry in std::mem::take(&mut loaded.update.entries) {
            by_key.insert(entry.key.clone(), entry);
        }
        loaded.update.entries = by_key.into_values().collect();
        (loaded, read_errors)
    }
}

/// Turns one file's text into store entries, rejections and diagnostics. A file that does
/// not parse is broken as a whole: all its resources keep their last valid versions.
pub fn parse_file(source: &str, name: &str, text: &str) -> Loaded {
    let docs = match parse_documents(name, text) {
        Ok(docs) => docs,
        Err(e) => return broken(source, name, e.line, &e.message),
    };
    let mut loaded = Loaded {
        update: SourceUpdate {
            source: source.to_string(),
            ..SourceUpdate::default()
        },
        diagnostics: Vec::new(),
    };
    for doc in &docs {
        let report = ferry_model::validate_documents(std::slice::from_ref(doc));
        let lines = item_lines(doc);
        // Ferry's RedisPolicies and Istio's Telemetries come apart from the other resources
        // (`Report::redis_policies`, `Report::telemetries`).
        let policies = report.redis_policies.into_iter().filter_map(redis_policy);
        let telemetries = report.telemetries.into_iter().filter_map(telemetry);
        for (key, object) in report
            .resources
            .into_iter()
            .filter_map(stored)
            .chain(policies)
            .chain(telemetries)
        {
            let line = lines.get(&key).copied().unwrap_or(doc.line);
            if let Some(message) = mesh_config_error(&key, &object) {
                let diagnostic = Diagnostic {
                    source: name.to_string(),
                    line,
                    resource: key.to_string(),
                    field: format!("data.{MESH_CONFIG_KEY}"),
                    message,
                    severity: Severity::Error,
                };
                loaded.update.rejections.push(Rejection {
                    source: source.to_string(),
                    key: Some(key),
                    diagnostic: diagnostic.clone(),
                });
                loaded.diagnostics.push(diagnostic);
                continue;
            }
            loaded.update.entries.push(Entry {
                key,
                origin: name.to_string(),
                line,
                object,
            });
        }
        for d in &report.errors {
            let key = ObjectKey::from_resource_id(&d.resource);
            if key.is_none() && unidentified(&d.resource) {
                // We cannot tell which resource this was: keep all of the file's.
                loaded.update.broken_origins.insert(name.to_string());
            }
            loaded.update.rejections.push(Rejection {
                source: source.to_string(),
                key,
                diagnostic: d.clone(),
            });
        }
        loaded.diagnostics.extend(report.errors);
        loaded.diagnostics.extend(report.warnings);
    }
    loaded
}

/// A file that could not be read or parsed.
fn broken(source: &str, name: &str, line: Option<usize>, message: &str) -> Loaded {
    let diagnostic = Diagnostic {
        source: name.to_string(),
        line: line.unwrap_or(0),
        resource: String::new(),
        field: String::new(),
        message: format!("{message} (the file's resources keep their last valid versions)"),
        severity: Severity::Error,
    };
    let mut update = SourceUpdate {
        source: source.to_string(),
        ..SourceUpdate::default()
    };
    update.broken_origins.insert(name.to_string());
    update.rejections.push(Rejection {
        source: source.to_string(),
        key: None,
        diagnostic: diagnostic.clone(),
    });
    Loaded {
        update,
        diagnostics: vec![diagnostic],
    }
}

/// Whether a diagnostic's resource id fails to name a resource (no kind or no name).
fn unidentified(resource: &str) -> bool {
    resource.is_empty() || resource.contains("<no kind>") || resource.contains("<unnamed>")
}

/// The line of every resource of `doc` (items of a `List` get their own).
fn item_lines(doc: &Document) -> BTreeMap<ObjectKey, usize> {
    expand_lists(doc)
        .into_iter()
        .filter_map(|(prefix, value)| Some((key_of_value(&value)?, doc.line_of(&prefix))))
        .collect()
}

/// The store key of a manifest, from its kind and metadata.
fn key_of_value(value: &Value) -> Option<ObjectKey> {
    let kind = Kind::from_name(value["kind"].as_str()?)?;
    let meta = &value["metadata"];
    let name = meta["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .or_else(|| meta["generateName"].as_str())?;
    let namespace = meta["namespace"].as_str().unwrap_or("default");
    Some(ObjectKey::new(kind, namespace, name))
}

/// The store key of an Istio-style resource (a name is required; the namespace defaults to
/// `default`).
fn istio_key(kind: Kind, meta: &ObjectMeta) -> Option<ObjectKey> {
    let name = meta.name.as_deref()?;
    let ns = meta.namespace.as_deref().unwrap_or("default");
    Some(ObjectKey::new(kind, ns, name))
}

/// A validated RedisPolicy as a store entry.
fn redis_policy(policy: IstioResource<RedisPolicySpec>) -> Option<(ObjectKey, Object)> {
    let key = istio_key(Kind::RedisPolicy, &policy.metadata)?;
    Some((key, Object::RedisPolicy(Box::new(policy))))
}

/// A validated Telemetry as a store entry.
fn telemetry(telemetry: IstioResource<TelemetrySpec>) -> Option<(ObjectKey, Object)> {
    let key = istio_key(Kind::Telemetry, &telemetry.metadata)?;
    Some((key, Object::Telemetry(Box::new(telemetry))))
}

/// Why an `istio` ConfigMap's mesh config does not parse (any namespace's: the source does
/// not know which one is the root namespace), `None` for every other object.
fn mesh_config_error(key: &ObjectKey, object: &Object) -> Option<String> {
    if key.kind != Kind::ConfigMap || key.name != MESH_CONFIG_MAP {
        return None;
    }
    let mesh = object.as_value()?.get("data")?.get(MESH_CONFIG_KEY)?;
    let Some(text) = mesh.as_str() else {
        return Some("must be a string".to_string());
    };
    MeshConfig::parse(text)
        .err()
        .map(|e| format!("invalid mesh config: {e}"))
}

/// A validated resource as a store entry, when it is a kind the store holds.
fn stored(resource: Resource) -> Option<(ObjectKey, Object)> {
    match resource {
        Resource::VirtualService(r) => Some((
            istio_key(Kind::VirtualService, &r.metadata)?,
            Object::VirtualService(r),
        )),
        Resource::DestinationRule(r) => Some((
            istio_key(Kind::DestinationRule, &r.metadata)?,
            Object::DestinationRule(r),
        )),
        Resource::PeerAuthentication(r) => Some((
            istio_key(Kind::PeerAuthentication, &r.metadata)?,
            Object::PeerAuthentication(r),
        )),
        Resource::Kubernetes { value, .. } => {
            let key = key_of_value(&value)?;
            Some((key, Object::Kubernetes(value)))
        }
        Resource::Unsupported { .. } => None,
    }
}

/// Every manifest file below `dir`, sorted, and the directories that could not be listed.
pub fn manifest_files(dir: &Path) -> (Vec<PathBuf>, Vec<Diagnostic>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    walk(dir, 0, &mut files, &mut errors);
    files.sort();
    (files, errors)
}

fn walk(dir: &Path, depth: usize, files: &mut Vec<PathBuf>, errors: &mut Vec<Diagnostic>) {
    let error = |message: String| Diagnostic {
        source: dir.display().to_string(),
        line: 0,
        resource: String::new(),
        field: String::new(),
        message,
        severity: Severity::Error,
    };
    if depth > MAX_DEPTH {
        errors.push(error(
            "directories nested too deeply (a symlink loop?)".into(),
        ));
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push(error(format!("cannot list directory: {e}")));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, depth + 1, files, errors);
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e))
        {
            files.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: vs\nspec:\n  hosts: [redis]\n  tcp:\n  - route:\n    - destination:\n        host: redis\n";

    #[test]
    fn valid_file_gives_entries_with_lines() {
        let text = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: app\n---\n{VS}");
        let loaded = parse_file("files:x", "a.yaml", &text);
        assert_eq!(loaded.errors().count(), 0, "{:?}", loaded.diagnostics);
        let keys: Vec<_> = loaded
            .update
            .entries
            .iter()
            .map(|e| (e.key.to_string(), e.line))
            .collect();
        assert_eq!(
            keys,
            [
                ("Namespace/app".to_string(), 1),
                ("VirtualService/default/vs".to_string(), 6)
            ]
        );
    }

    #[test]
    fn invalid_resource_is_a_keyed_rejection() {
        let text = VS.replace("host: redis\n", "host: redis\n      weight: nope\n");
        let loaded = parse_file("files:x", "a.yaml", &text);
        assert!(loaded.update.entries.is_empty());
        assert!(loaded.update.broken_origins.is_empty());
        let r = &loaded.update.rejections[0];
        assert_eq!(
            r.key,
            Some(ObjectKey::new(Kind::VirtualService, "default", "vs"))
        );
        assert!(r.to_string().starts_with("a.yaml:"), "{r}");
    }

    const POLICY: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: app\n---\napiVersion: ferry.dev/v1alpha1\nkind: RedisPolicy\nmetadata:\n  name: faults\n  namespace: app\nspec:\n  host: redis\n  faults:\n  - commands: [GET]\n    abort: {percentage: 20}\n";

    #[test]
    fn redis_policies_are_entries_and_invalid_ones_keyed_rejections() {
        let loaded = parse_file("files:x", "p.yaml", POLICY);
        assert_eq!(loaded.errors().count(), 0, "{:?}", loaded.diagnostics);
        let entries: Vec<_> = (loaded.update.entries.iter())
            .map(|e| (e.key.to_string(), e.line))
            .collect();
        assert_eq!(
            entries,
            [
                ("Namespace/app".to_string(), 1),
                ("RedisPolicy/app/faults".to_string(), 6)
            ]
        );
        let Object::RedisPolicy(policy) = &loaded.update.entries[1].object else {
            panic!("not a RedisPolicy: {:?}", loaded.update.entries[1]);
        };
        assert_eq!(policy.spec.host.as_deref(), Some("redis"));

        let invalid = POLICY.replace("percentage: 20", "percentage: 200");
        let loaded = parse_file("files:x", "p.yaml", &invalid);
        assert_eq!(loaded.update.entries.len(), 1, "the Namespace stays valid");
        assert!(loaded.update.broken_origins.is_empty());
        let r = &loaded.update.rejections[0];
        assert_eq!(
            r.key,
            Some(ObjectKey::new(Kind::RedisPolicy, "app", "faults"))
        );
        let message = r.to_string();
        assert!(
            message.starts_with("p.yaml:")
                && message.contains("RedisPolicy/app/faults: spec.faults[0].abort.percentage: "),
            "{message}"
        );
    }

    const TRACING: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |\n    extensionProviders:\n    - name: otel\n      opentelemetry: {service: otel.obs, port: 4317}\n---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: tracing\n  namespace: app\nspec:\n  tracing:\n  - providers: [{name: otel}]\n    randomSamplingPercentage: 25\n";

    #[test]
    fn telemetries_and_the_mesh_config_map_are_entries_and_invalid_ones_keyed_rejections() {
        let loaded = parse_file("files:x", "t.yaml", TRACING);
        assert_eq!(loaded.errors().count(), 0, "{:?}", loaded.diagnostics);
        let entries: Vec<_> = (loaded.update.entries.iter())
            .map(|e| (e.key.to_string(), e.line))
            .collect();
        assert_eq!(
            entries,
            [
                ("ConfigMap/istio-system/istio".to_string(), 1),
                ("Telemetry/app/tracing".to_string(), 12)
            ]
        );
        let Object::Telemetry(telemetry) = &loaded.update.entries[1].object else {
            panic!("not a Telemetry: {:?}", loaded.update.entries[1]);
        };
        assert_eq!(
            telemetry.spec.tracing[0].random_sampling_percentage,
            Some(25.0)
        );

        let invalid = TRACING.replace("Percentage: 25", "Percentage: 250");
        let loaded = parse_file("files:x", "t.yaml", &invalid);
        assert_eq!(loaded.update.entries.len(), 1, "the ConfigMap stays valid");
        assert!(loaded.update.broken_origins.is_empty());
        let r = &loaded.update.rejections[0];
        assert_eq!(
            r.key,
            Some(ObjectKey::new(Kind::Telemetry, "app", "tracing"))
        );
        let message = r.to_string();
        assert!(
            message.starts_with("t.yaml:")
                && message
                    .contains("Telemetry/app/tracing: spec.tracing[0].randomSamplingPercentage"),
            "{message}"
        );

        // A mesh config that does not parse rejects the ConfigMap, keyed.
        let invalid = TRACING.replace("- name: otel\n", "- name: [otel]\n");
        let loaded = parse_file("files:x", "t.yaml", &invalid);
        let keys: Vec<_> = (loaded.update.entries.iter())
            .map(|e| e.key.to_string())
            .collect();
        assert_eq!(keys, ["Telemetry/app/tracing"]);
        let r = &loaded.update.rejections[0];
        assert_eq!(
            r.key,
            Some(ObjectKey::new(Kind::ConfigMap, "istio-system", "istio"))
        );
        let message = r.to_string();
        assert!(
            message.starts_with("t.yaml:1")
                && message.contains("ConfigMap/istio-system/istio: data.mesh: invalid mesh config"),
            "{message}"
        );
        assert_eq!(loaded.errors().count(), 1, "{:?}", loaded.diagnostics);
    }

    #[test]
    fn the_tracing_example_loads_whole() {
        let text = include_str!("../../../../examples/tracing/kubernetes/telemetry.yaml");
        let loaded = parse_file("files:x", "telemetry.yaml", text);
        assert_eq!(loaded.errors().count(), 0, "{:?}", loaded.diagnostics);
        let kinds: Vec<Kind> = (loaded.update.entries.iter()).map(|e| e.key.kind).collect();
        assert_eq!(kinds[0], Kind::ConfigMap);
        assert!(
            kinds[1..].iter().all(|k| *k == Kind::Telemetry),
            "{kinds:?}"
        );
    }

    #[test]
    fn syntax_error_breaks_the_file() {
        let loaded = parse_file("files:x", "a.yaml", "kind: [unclosed\n");
        assert!(loaded.update.broken_origins.contains("a.yaml"));
        assert_eq!(loaded.update.rejections.len(), 1);
    }

    #[test]
    fn lists_are_expanded() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: b}\n";
        let loaded = parse_file("files:x", "l.yaml", text);
        let lines: Vec<_> = loaded.update.entries.iter().map(|e| e.line).collect();
        assert_eq!(lines, [4, 7]);
    }
}
