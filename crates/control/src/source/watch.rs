//! Watching a manifest directory: it is polled (every 250 ms by default) for a fingerprint
//! of every manifest file (path, size, modification time, content hash), so creation, edits,
//! deletion and renames, including editors that write a temporary file and rename it over
//! the original, are all seen the same way and no platform notification API is needed.
//! A change is delivered once the directory has been quiet for the debounce interval
//! (100 ms by default), so a burst of writes yields one reload. Errors reading the directory
//! (a directory that cannot be listed, a file that cannot be read) are logged with their
//! path and counted in [`FilesMetrics::read_errors`] on every reload that meets them.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ferry_model::Diagnostic;
use prometheus_client::metrics::counter::Counter;

use crate::source::files::{FileSource, Loaded, manifest_files};

/// Metrics of the manifest-directory watcher; clones share their values.
#[derive(Debug, Clone, Default)]
pub struct FilesMetrics {
    /// Errors reading the directory (a directory that cannot be listed, a file that cannot
    /// be read), counted on every reload that meets them.
    pub read_errors: Counter,
}

impl FilesMetrics {
    /// Registers the metrics (`ferry_control_files_read_errors`).
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "ferry_control_files_read_errors",
            "Errors reading the manifest directory (--config-dir), counted on every reload that meets them; the resources of what cannot be read keep their last valid versions",
            self.read_errors.clone(),
        );
    }
}

/// How the directory is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchOptions {
    /// How often the directory is scanned.
    pub poll: Duration,
    /// How long the directory must stay unchanged before a reload.
    pub debounce: Duration,
    /// The longest a reload waits for writes to settle.
    pub max_settle: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            poll: Duration::from_millis(250),
            debounce: Duration::from_millis(100),
            max_settle: Duration::from_secs(2),
        }
    }
}

/// What one file looked like: size, modification time, content hash.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileState {
    size: u64,
    modified: Option<SystemTime>,
    hash: u64,
}

/// The state of every manifest file below a directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprint {
    files: BTreeMap<PathBuf, Option<FileState>>,
    listing_errors: usize,
}

impl Fingerprint {
    /// Scans `dir` now.
    pub fn of(dir: &Path) -> Fingerprint {
        let (paths, errors) = manifest_files(dir);
        let files = paths
            .into_iter()
            .map(|path| {
                let state = std::fs::metadata(&path).ok().and_then(|meta| {
                    let bytes = std::fs::read(&path).ok()?;
                    let mut hasher = DefaultHasher::new();
                    bytes.hash(&mut hasher);
                    Some(FileState {
                        size: meta.len(),
                        modified: meta.modified().ok(),
                        hash: hasher.finish(),
                    })
                });
                (path, state)
            })
            .collect();
        Fingerprint {
            files,
            listing_errors: errors.len(),
        }
    }

    /// How many manifest files were seen.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no manifest file was seen.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// Watches `dir` with the default options: calls `on_change` with the directory's contents
/// at once, then after every change. Runs until the future is dropped (or its task aborted).
pub async fn watch(dir: impl Into<PathBuf>, on_change: impl FnMut(Loaded)) {
    watch_with(dir, WatchOptions::default(), on_change).await
}

/// [`watch`] with explicit options.
pub async fn watch_with(
    dir: impl Into<PathBuf>,
    options: WatchOptions,
    on_change: impl FnMut(Loaded),
) {
    watch_counted(dir, options, FilesMetrics::default(), on_change).await
}

/// [`watch_with`], counting the errors of reading the directory in `metrics`.
pub async fn watch_counted(
    dir: impl Into<PathBuf>,
    options: WatchOptions,
    metrics: FilesMetrics,
    mut on_change: impl FnMut(Loaded),
) {
    let source = FileSource::new(dir);
    let mut last = scan(&source).await;
    on_change(load(&source, &metrics).await);
    loop {
        tokio::time::sleep(options.poll).await;
        let mut now = scan(&source).await;
        if now == last {
            continue;
        }
        // Wait until the directory has been quiet for the debounce interval.
        let started = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(options.debounce).await;
            let again = scan(&source).await;
            let settled = again == now;
            now = again;
            if settled || started.elapsed() >= options.max_settle {
                break;
            }
        }
        last = now;
        let loaded = load(&source, &metrics).await;
        tracing::debug!(
            dir = %source.dir().display(),
            files = last.len(),
            "manifest directory changed"
        );
        on_change(loaded);
    }
}

async fn scan(source: &FileSource) -> Fingerprint {
    let dir = source.dir().to_path_buf();
    tokio::task::spawn_blocking(move || Fingerprint::of(&dir))
        .await
        .unwrap_or_default()
}

/// Reads the directory; logs and counts the errors of reading it.
async fn load(source: &FileSource, metrics: &FilesMetrics) -> Loaded {
    let reader = source.clone();
    let (loaded, errors) = match tokio::task::spawn_blocking(move || reader.read_reporting()).await
    {
        Ok(read) => read,
        // The reader panicked (it should not): report the directory as broken so that
        // nothing is deleted.
        Err(e) => {
            let name = source.dir().display().to_string();
            let mut loaded = Loaded::default();
            loaded.update.source = source.source_name();
            loaded.update.broken_origins.insert(name.clone());
            loaded.diagnostics.push(ferry_model::Diagnostic {
                source: name,
                line: 0,
                resource: String::new(),
                field: String::new(),
                message: format!("reading the directory failed: {e}"),
                severity: ferry_model::Severity::Error,
            });
            let errors = loaded.diagnostics.clone();
            (loaded, errors)
        }
    };
    report_read_errors(&errors, metrics);
    loaded
}

/// Logs each error of reading the directory with its path, and counts it.
fn report_read_errors(errors: &[Diagnostic], metrics: &FilesMetrics) {
    for error in errors {
        metrics.read_errors.inc();
        tracing::warn!(
            path = %error.source,
            "cannot read the manifest directory: {}",
            error.message
        );
    }
}
