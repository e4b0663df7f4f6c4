//! The proxy's copy of its last applied snapshot on disk (`ferry proxy --config-cache
//! FILE`), so that a proxy that restarts while the control plane is unreachable starts with
//! the configuration it had instead of none.
//!
//! The file is one JSON header line, then the snapshot's JSON exactly as the control plane
//! sent it:
//!
//! ```text
//! {"format":"ferry-config-cache/1","pod":"web-1","namespace":"shop","version":"7-9f2c…","bytes":5120,"sha256":"…"}
//! {"version":"…","identity":{…},"services":[…],…}
//! ```
//!
//! The header names the proxy it belongs to (a file of another pod is ignored), and the
//! length and SHA-256 of the snapshot (a truncated or damaged file is ignored). What is
//! restored goes through the same checks as a snapshot from the stream
//! ([`super::client::validate`]). Only snapshots the proxy applied (and ACKed) are written,
//! never a rejected one; each write goes to a temporary file of mode 0600 in the same
//! directory, flushed to disk, then renamed over the old one, so a crash leaves either the
//! old file or the new one.
//!
//! [`encode`], [`decode`] and [`check_identity`] are pure; [`read`], [`restore`] and
//! [`write`] do the I/O.

use super::client::{DiscoveryState, MAX_SNAPSHOT_BYTES, ProxyInfo, validate};
use crate::config::{ProxyConfig, Snapshot};
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::{info, warn};

/// The format tag of the header line.
pub const FORMAT: &str = "ferry-config-cache/1";

/// Largest header line accepted (names and a version: far below this).
const MAX_HEADER_BYTES: usize = 16 << 10;

/// Largest cache file read: the snapshot limit of the stream plus the header.
pub const MAX_FILE_BYTES: usize = MAX_SNAPSHOT_BYTES + MAX_HEADER_BYTES;

/// The header line: whose snapshot this is, which version, and how to check its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// The pod of the proxy that applied it.
    pub pod: String,
    /// That pod's namespace.
    pub namespace: String,
    /// The snapshot's version label, as the control plane sent it.
    pub version: String,
    /// Length of the snapshot's JSON.
    pub bytes: u64,
    /// SHA-256 of the snapshot's JSON, lower-case hex.
    pub sha256: String,
}

/// A snapshot read back from a cache file, checked and ready to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Cached {
    /// Its version label.
    pub version: String,
    /// The configuration.
    pub config: ProxyConfig,
}

/// Why a cache file was not used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The file exists but cannot be read.
    #[error("cannot read the configuration cache {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file is not a whole, intact cache file, or its snapshot fails validation.
    #[error("the configuration cache {path} is not usable: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file was written by the proxy of another pod.
    #[error("the configuration cache {path} belongs to pod {other}, not to this proxy ({this})")]
    OtherProxy {
        /// The file.
        path: PathBuf,
        /// `namespace/pod` of the file.
        other: String,
        /// `namespace/pod` of this proxy.
        this: String,
    },
}

/// The cache file for the snapshot `version` (its JSON `json`) applied by the proxy `info`.
pub fn encode(info: &ProxyInfo, version: &str, json: &[u8]) -> Vec<u8> {
    let header = Header {
        format: FORMAT.to_string(),
        pod: info.pod.clone(),
        namespace: info.namespace.clone(),
        version: version.to_string(),
        bytes: json.len() as u64,
        sha256: ferry_proto::discovery::sha256_hex(json),
    };
    // A struct of strings and a number always serializes.
    let mut out = serde_json::to_vec(&header).unwrap_or_default();
    out.push(b'\n');
    out.extend_from_slice(json);
    out
}

/// Splits a cache file into its header and the snapshot's JSON, checking the format, the
/// length and the checksum (not the identity: [`check_identity`]; not the configuration:
/// [`super::client::validate`]).
pub fn decode(file: &[u8]) -> Result<(Header, &[u8]), String> {
    let Some(newline) = file.iter().take(MAX_HEADER_BYTES).position(|&b| b == b'\n') else {
        return Err(if file.is_empty() {
            "the file is empty".to_string()
        } else {
            "no header line".to_string()
        });
    };
    let header: Header =
        serde_json::from_slice(&file[..newline]).map_err(|e| format!("header line: {e}"))?;
    if header.format != FORMAT {
        return Err(format!(
            "header line: format {:?}, expected {FORMAT:?}",
            header.format
        ));
    }
    let json = &file[newline + 1..];
    if json.len() as u64 != header.bytes {
        return Err(format!(
            "the snapshot has {} bytes, the header says {} (truncated?)",
            json.len(),
            header.bytes
        ));
    }
    if json.len() > MAX_SNAPSHOT_BYTES {
        return Err(format!(
            "the snapshot has {} bytes, above the limit of {MAX_SNAPSHOT_BYTES}",
            json.len()
        ));
    }
    let sum = ferry_proto::discovery::sha256_hex(json);
    if sum != header.sha256 {
        return Err(format!(
            "the snapshot's SHA-256 is {sum}, the header says {}",
            header.sha256
        ));
    }
    Ok((header, json))
}

/// Whether the file of `header` was written by the proxy `info` (same pod and namespace);
/// else `(file's namespace/pod, this proxy's namespace/pod)`.
pub fn check_identity(header: &Header, info: &ProxyInfo) -> Result<(), (String, String)> {
    if header.pod == info.pod && header.namespace == info.namespace {
        Ok(())
    } else {
        Err((
            format!("{}/{}", header.namespace, header.pod),
            format!("{}/{}", info.namespace, info.pod),
        ))
    }
}

/// Reads the cache file `path` for the proxy `info`: `Ok(None)` when there is none,
/// `Err` when it is unreadable, damaged, of another pod or invalid.
pub fn read(path: &Path, info: &ProxyInfo) -> Result<Option<Cached>, CacheError> {
    let unreadable = |source| CacheError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let corrupt = |reason: String| CacheError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(corrupt(format!(
            "larger than the limit of {MAX_FILE_BYTES} bytes"
        )));
    }
    let (header, json) = decode(&bytes).map_err(corrupt)?;
    check_identity(&header, info).map_err(|(other, this)| CacheError::OtherProxy {
        path: path.to_path_buf(),
        other,
        this,
    })?;
    let mut config = validate(&header.version, json).map_err(corrupt)?;
    if config.version.is_empty() {
        config.version = header.version.clone();
    }
    Ok(Some(Cached {
        version: header.version,
        config,
    }))
}

/// Applies the snapshot cached in `path` for the proxy `info`, if there is a usable one,
/// before the control plane answers: it goes into `config` and `state` reports it (the
/// proxy is ready on it, [`DiscoveryState::from_cache`] says where it came from). A missing
/// file is normal (first start); any other problem is logged with the path and the file
/// ignored. Returns whether a snapshot was applied.
pub fn restore(
    path: &Path,
    info: &ProxyInfo,
    config: &ArcSwap<Snapshot>,
    state: &DiscoveryState,
) -> bool {
    match read(path, info) {
        Ok(Some(cached)) => {
            config.store(Arc::new(Snapshot::compile(cached.config)));
            state.restored_version(&cached.version);
            info!(
                version = %cached.version,
                "configuration restored from the cache {} until the control plane answers",
                path.display()
            );
            true
        }
        Ok(None) => {
            info!(
                "no configuration cache at {} yet: waiting for the control plane",
                path.display()
            );
            false
        }
        Err(e) => {
            warn!("{e}; ignoring it and waiting for the control plane");
            false
        }
    }
}

/// Replaces `path` with `contents` atomically: a temporary file of mode 0600 in the same
/// directory (made if missing), flushed to disk, renamed over `path`, and the directory
/// flushed.
pub fn write(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a file name", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        // A leftover of a crashed write of this process id would fail `create_new`.
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    // The rename is durable once the directory is.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes the latest snapshot handed to it, one write at a time, off the async threads;
/// snapshots that arrive during a write are coalesced into the newest.
#[derive(Debug, Clone)]
pub struct Writer {
    latest: Arc<tokio::sync::watch::Sender<Option<Arc<Vec<u8>>>>>,
}

impl Writer {
    /// A writer of the cache file `path`; its task runs until every clone of the writer is
    /// dropped (and the last snapshot is written).
    pub fn spawn(path: PathBuf) -> (Writer, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = tokio::sync::watch::channel::<Option<Arc<Vec<u8>>>>(None);
        let task = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let Some(contents) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let target = path.clone();
                let done = tokio::task::spawn_blocking(move || write(&target, &contents)).await;
                match done {
                    Ok(Ok(())) => tracing::debug!("configuration cache {} written", path.display()),
                    Ok(Err(e)) => warn!(
                        "cannot write the configuration cache {}: {e}; the proxy keeps serving, but a restart while the control plane is unreachable will start without configuration",
                        path.display()
                    ),
                    Err(e) => warn!("configuration cache {}: {e}", path.display()),
                }
            }
        });
        (
            Writer {
                latest: Arc::new(tx),
            },
            task,
        )
    }

    /// Queues the file contents of an applied snapshot ([`encode`]).
    pub fn store(&self, contents: Vec<u8>) {
        self.latest.send_replace(Some(Arc::new(contents)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(pod: &str, namespace: &str) -> ProxyInfo {
        ProxyInfo {
            pod: pod.into(),
            namespace: namespace.into(),
            ..ProxyInfo::default()
        }
    }

    fn snapshot_json(pod: &str) -> Vec<u8> {
        let mut config = ProxyConfig::default();
        config.identity.pod = pod.into();
        config.identity.namespace = "shop".into();
        serde_json::to_vec(&config).unwrap()
    }

    #[test]
    fn encode_then_decode_gives_back_the_header_and_the_bytes() {
        let json = snapshot_json("web-1");
        let file = encode(&info("web-1", "shop"), "7-abc", &json);
        let (header, back) = decode(&file).unwrap();
        assert_eq!(back, json.as_slice());
        assert_eq!(header.format, FORMAT);
        assert_eq!(
            (header.pod.as_str(), header.namespace.as_str()),
            ("web-1", "shop")
        );
        assert_eq!(header.version, "7-abc");
        assert_eq!(header.bytes, json.len() as u64);
        assert_eq!(header.sha256.len(), 64);
    }

    #[test]
    fn damaged_files_are_refused_with_a_reason() {
        let json = snapshot_json("web-1");
        let good = encode(&info("web-1", "shop"), "7-abc", &json);
        let newline = good.iter().position(|&b| b == b'\n').unwrap();
        let mut flipped = good.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x20;
        let other_format = String::from_utf8(good.clone())
            .unwrap()
            .replace(FORMAT, "ferry-config-cache/9");
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", Vec::new(), "empty"),
            ("no newline", b"{\"format\":".to_vec(), "no header line"),
            ("truncated", good[..good.len() - 3].to_vec(), "truncated"),
            ("header only", good[..=newline].to_vec(), "truncated"),
            (
                "one more byte",
                [good.as_slice(), b" "].concat(),
                "header says",
            ),
            ("bit flip", flipped, "SHA-256"),
            ("not json", b"garbage\n{}".to_vec(), "header line"),
            (
                "unknown field",
                b"{\"format\":\"ferry-config-cache/1\",\"x\":1}\n".to_vec(),
                "header line",
            ),
            ("other format", other_format.into_bytes(), "format"),
        ];
        for (name, file, want) in cases {
            let err = decode(&file).expect_err(name);
            assert!(err.contains(want), "{name}: {err}");
        }
    }

    #[test]
    fn identity_is_pod_and_namespace() {
        let header = decode(&encode(&info("web-1", "shop"), "1-a", b"{}"))
            .unwrap()
            .0;
        let cases = [
            (info("web-1", "shop"), true),
            (info("web-2", "shop"), false),
            (info("web-1", "other"), false),
            (info("", "shop"), false),
        ];
        for (who, same) in cases {
            assert_eq!(check_identity(&header, &who).is_ok(), same, "{who:?}");
        }
        let mut with_more = info("web-1", "shop");
        with_more.workload = "web".into();
        with_more.service_account = "web-sa".into();
        assert!(check_identity(&header, &with_more).is_ok());
        assert_eq!(
            check_identity(&header, &info("db-0", "data")).unwrap_err(),
            ("shop/web-1".to_string(), "data/db-0".to_string())
        );
    }

    #[test]
    fn read_restores_only_a_whole_valid_file_of_this_proxy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config-cache");
        let me = info("web-1", "shop");
        assert!(read(&path, &me).unwrap().is_none(), "no file yet");

        write(&path, &encode(&me, "7-abc", &snapshot_json("web-1"))).unwrap();
        let cached = read(&path, &me).unwrap().unwrap();
        assert_eq!(cached.version, "7-abc");
        assert_eq!(cached.config.identity.pod, "web-1");
        assert_eq!(cached.config.version, "7-abc", "the version label fills in");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("config-cache")]);

        let err = read(&path, &info("web-2", "shop")).unwrap_err();
        assert!(
            matches!(&err, CacheError::OtherProxy { other, this, .. } if other == "shop/web-1" && this == "shop/web-2"),
            "{err}"
        );
        assert!(err.to_string().contains(&path.display().to_string()));

        let invalid = br#"{"services":[{"name":"a","ports":[{"port":0}]}]}"#;
        write(&path, &encode(&me, "8-bad", invalid)).unwrap();
        let err = read(&path, &me).unwrap_err();
        assert!(
            matches!(&err, CacheError::Corrupt { reason, .. } if reason.contains("services.0.ports.0.port")),
            "{err}"
        );

        std::fs::write(&path, b"\0\0\0garbage").unwrap();
        let err = read(&path, &me).unwrap_err();
        assert!(matches!(err, CacheError::Corrupt { .. }), "{err}");

        // A directory where the file should be: unreadable, not a panic.
        let not_a_file = dir.path().join("dir");
        std::fs::create_dir(&not_a_file).unwrap();
        let err = read(&not_a_file, &me).unwrap_err();
        assert!(matches!(err, CacheError::Unreadable { .. }), "{err}");
    }

    #[test]
    fn restore_applies_a_good_file_and_ignores_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config-cache");
        let me = info("web-1", "shop");
        let fresh = || {
            (
                ArcSwap::from_pointee(Snapshot::compile(ProxyConfig::default())),
                DiscoveryState::new(),
            )
        };

        let (config, state) = fresh();
        assert!(!restore(&path, &me, &config, &state));
        assert!(!state.has_config());

        write(&path, &encode(&me, "7-abc", &snapshot_json("web-1"))).unwrap();
        let (config, state) = fresh();
        assert!(restore(&path, &me, &config, &state));
        assert!(state.has_config() && state.from_cache());
        assert_eq!(state.held_version().as_deref(), Some("7-abc"));
        assert_eq!(state.applied(), 0, "nothing came from the control plane");
        assert_eq!(config.load().config.identity.pod, "web-1");

        let (config, state) = fresh();
        assert!(!restore(&path, &info("web-2", "shop"), &config, &state));
        assert!(!state.has_config() && state.held_version().is_none());
        assert_eq!(config.load().config.identity.pod, "");

        std::fs::write(&path, b"{\"format\":\"ferry-config-cache/1\"").unwrap();
        let (config, state) = fresh();
        assert!(!restore(&path, &me, &config, &state));
        assert!(!state.has_config());
    }

    #[tokio::test]
    async fn the_writer_leaves_the_newest_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config-cache");
        let me = info("web-1", "shop");
        let (writer, task) = Writer::spawn(path.clone());
        for n in 1..=5 {
            writer.store(encode(&me, &format!("{n}-a"), &snapshot_json("web-1")));
        }
        drop(writer);
        task.await.unwrap();
        assert_eq!(read(&path, &me).unwrap().unwrap().version, "5-a");
    }
}
