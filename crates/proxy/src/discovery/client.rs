//! The proxy's configuration stream: connect, say who we are (and which version we hold),
//! then put each snapshot together from its chunks ([`Reassembly`]), validate it the way a
//! configuration file is validated (typed checks first; [`crate::config::file::parse`] for
//! a precise reason when it is not well-typed; JSON is YAML) and either swap it in
//! atomically and ACK, or NACK with the reason and keep the last good one. Reconnects with
//! [`Backoff`] and serves with what it holds meanwhile.
//!
//! The stream runs over plaintext HTTP/2 (15010) or over TLS (15012, the CA's port), the
//! control plane's certificate verified against the mesh root and its expected name
//! ([`ControlPlaneTls`], which [`run_with`] takes). On 15012 the proxy proves who it is, as
//! the control plane requires there: with its workload certificate as the TLS client
//! certificate once it holds one, else with the token it also shows the CA
//! (`authorization: Bearer`). [`run`] is the plaintext stream.
//!
//! On 15012 the control plane also pushes its trust bundle (a message that is not part of
//! a snapshot): the proxy trusts those roots for new handshakes at once
//! ([`IdentityState::apply_trust`]), renews its certificate when asked (a root rollover),
//! and reports what it trusts and holds ([`TrustReport`]) after each push and each change of
//! its certificate. Roots are never taken from the plaintext stream.

use super::backoff::Backoff;
use super::cache;
use crate::config::{ProxyConfig, Snapshot, file};
use crate::identity::IdentityState;
use crate::identity::source::{CaClient, authorize};
use arc_swap::ArcSwap;
use ferry_proto::discovery::v1::config_discovery_client::ConfigDiscoveryClient;
use ferry_proto::discovery::v1::{Ack, Hello, Nack, ProxyMessage, TrustReport, proxy_message};
use ferry_proto::discovery::{Assembled, Completed, Reassembly};
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};

/// Largest snapshot accepted (a big mesh's configuration is several megabytes).
pub const MAX_SNAPSHOT_BYTES: usize = 64 << 20;

/// Largest gRPC message accepted or sent: snapshots arrive in chunks of a few KiB.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// Who this proxy is, as it tells the control plane.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyInfo {
    /// Pod name.
    pub pod: String,
    /// Namespace.
    pub namespace: String,
    /// Workload name.
    pub workload: String,
    /// Service account.
    pub service_account: String,
    /// Pod IP, when known.
    pub ip: Option<IpAddr>,
}

/// What the stream has done so far: readiness ("has received at least one configuration"),
/// the version held, counters. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct DiscoveryState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ready: watch::Sender<bool>,
    held: Mutex<Option<String>>,
    applied: AtomicU64,
    rejected: AtomicU64,
    streams: AtomicU64,
    /// The configuration held was restored from the cache file and nothing from the control
    /// plane has replaced it yet.
    from_cache: AtomicBool,
    /// Told after each configuration applied (the tracer follows it).
    changed: Option<Arc<watch::Sender<()>>>,
}

impl Default for DiscoveryState {
    fn default() -> Self {
        Self::new()
    }
}

impl DiscoveryState {
    /// No configuration received yet.
    pub fn new() -> Self {
        Self::with_changed(None)
    }

    /// No configuration received yet; `changed` is told after each configuration is
    /// applied (after it is in force).
    pub fn with_changed(changed: Option<Arc<watch::Sender<()>>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                ready: watch::channel(false).0,
                held: Mutex::new(None),
                applied: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                streams: AtomicU64::new(0),
                from_cache: AtomicBool::new(false),
                changed,
            }),
        }
    }

    /// Whether a configuration from the control plane has been applied (or one it sent
    /// earlier was restored from the cache file, see [`Self::from_cache`]).
    pub fn has_config(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// Waits until a configuration from the control plane has been applied.
    pub async fn ready(&self) {
        let mut rx = self.inner.ready.subscribe();
        // The sender lives in `self`, so this only ends once ready.
        let _ = rx.wait_for(|ready| *ready).await;
    }

    /// Follows readiness.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.inner.ready.subscribe()
    }

    /// The version of the configuration applied last.
    pub fn held_version(&self) -> Option<String> {
        self.inner
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Snapshots applied (ACKed).
    pub fn applied(&self) -> u64 {
        self.inner.applied.load(Ordering::Relaxed)
    }

    /// Snapshots rejected (NACKed).
    pub fn rejected(&self) -> u64 {
        self.inner.rejected.load(Ordering::Relaxed)
    }

    /// Streams opened with the control plane (1 + reconnections).
    pub fn streams(&self) -> u64 {
        self.inner.streams.load(Ordering::Relaxed)
    }

    /// Whether the configuration held was restored from the cache file
    /// ([`super::cache::restore`]) and the control plane has not sent one since (it sends
    /// none when the version held is still its latest).
    pub fn from_cache(&self) -> bool {
        self.inner.from_cache.load(Ordering::Relaxed)
    }

    fn applied_version(&self, version: &str) {
        self.inner.applied.fetch_add(1, Ordering::Relaxed);
        self.inner.from_cache.store(false, Ordering::Relaxed);
        self.hold(version);
    }

    /// Records the snapshot `version` restored from the cache file: held and ready, not
    /// counted as applied from the stream.
    pub(crate) fn restored_version(&self, version: &str) {
        self.inner.from_cache.store(true, Ordering::Relaxed);
        self.hold(version);
    }

    fn hold(&self, version: &str) {
        *self.inner.held.lock().unwrap_or_else(|e| e.into_inner()) = Some(version.to_string());
        self.inner.ready.send_replace(true);
        if let Some(changed) = &self.inner.changed {
            changed.send_replace(());
        }
    }
}

/// How to reach the control plane over TLS (its port 15012), and how to prove who we are
/// there.
#[derive(Debug, Clone)]
pub struct ControlPlaneTls {
    /// The name the control plane's certificate must carry (`istiod.istio-system.svc`).
    pub server_name: String,
    /// PEM file of the mesh root(s) the control plane's certificate chains to; re-read at
    /// every connection, so a root rollover is followed.
    pub root_cert: PathBuf,
    /// File with the bearer token the proxy also shows the CA (re-read at every
    /// connection), sent while the proxy holds no workload certificate.
    pub token_file: Option<PathBuf>,
    /// The proxy's workload certificate, presented as the TLS client certificate once there
    /// is one (the control plane then needs no token).
    pub identity: Option<Arc<IdentityState>>,
}

/// How long the first connection waits for the proxy's first certificate (the stronger
/// proof, and no token review) before it falls back to the token.
pub const FIRST_CERTIFICATE_WAIT: Duration = Duration::from_secs(1);

/// Keeps the configuration in `config` current from the control plane at `addr`
/// (`host:port` or `http://host:port`) over plaintext until `shutdown` completes. See
/// [`run_with`].
pub async fn run(
    addr: &str,
    info: ProxyInfo,
    config: Arc<ArcSwap<Snapshot>>,
    state: DiscoveryState,
    shutdown: impl Future<Output = ()>,
) {
    run_with(addr, None, info, config, state, shutdown).await;
}

/// How each session connects.
enum Connector {
    Plain(Box<Endpoint>),
    Tls {
        ca: CaClient,
        identity: Option<Arc<IdentityState>>,
    },
}

impl Connector {
    /// A channel, and the token to send when the proxy proves itself with one.
    async fn connect(&self) -> Result<(Channel, Option<String>), String> {
        match self {
            Connector::Plain(endpoint) => endpoint
                .connect()
                .await
                .map(|c| (c, None))
                .map_err(|e| e.to_string()),
            Connector::Tls { ca, identity } => {
                // An expired certificate would fail the handshake: the token then.
                let current = identity
                    .as_ref()
                    .and_then(|i| i.current())
                    .filter(|c| c.not_after > std::time::SystemTime::now());
                let token = match &current {
                    Some(_) => None,
                    None => ca.token()?,
                };
                if current.is_none() && token.is_none() {
                    debug!(
                        "no certificate and no token yet: the control plane will refuse the stream"
                    );
                }
                let channel = ca.channel(current.as_deref()).await?;
                Ok((channel, token))
            }
        }
    }
}

/// Keeps the configuration in `config` current from the control plane at `addr`
/// (`host:port` or `http://host:port`; over TLS when `tls` says how) until `shutdown`
/// completes. Never gives up: while the control plane is unreachable the proxy serves with
/// what it holds (the static or empty configuration until the first snapshot) and retries
/// with backoff.
pub async fn run_with(
    addr: &str,
    tls: Option<ControlPlaneTls>,
    info: ProxyInfo,
    config: Arc<ArcSwap<Snapshot>>,
    state: DiscoveryState,
    shutdown: impl Future<Output = ()>,
) {
    run_cached(addr, tls, info, None, config, state, shutdown).await;
}

/// [`run_with`], keeping each snapshot applied in the file `cache_file` as well (see
/// [`cache`]); restoring it at start-up is [`cache::restore`], which the caller runs first
/// (before the traffic listeners serve) so that no connection meets an empty
/// configuration.
pub async fn run_cached(
    addr: &str,
    tls: Option<ControlPlaneTls>,
    info: ProxyInfo,
    cache_file: Option<PathBuf>,
    config: Arc<ArcSwap<Snapshot>>,
    state: DiscoveryState,
    shutdown: impl Future<Output = ()>,
) {
    let writer = cache_file.map(|path| cache::Writer::spawn(path).0);
    let connector = match tls {
        Some(tls) => {
            let host_port = addr
                .split_once("://")
                .map_or(addr, |(_, rest)| rest)
                .trim_end_matches('/');
            Connector::Tls {
                ca: CaClient {
                    addr: host_port.to_string(),
                    server_name: tls.server_name,
                    root_cert: tls.root_cert,
                    token_file: tls.token_file,
                },
                identity: tls.identity,
            }
        }
        None => {
            let uri = if addr.contains("://") {
                addr.to_string()
            } else {
                format!("http://{addr}")
            };
            match Endpoint::from_shared(uri) {
                Ok(endpoint) => Connector::Plain(Box::new(
                    endpoint
                        .connect_timeout(Duration::from_secs(5))
                        .http2_keep_alive_interval(Duration::from_secs(10))
                        .keep_alive_timeout(Duration::from_secs(5))
                        .keep_alive_while_idle(true),
                )),
                Err(e) => {
                    warn!(
                        "control plane address `{addr}` is not usable: {e}; staying on the configuration held"
                    );
                    shutdown.await;
                    return;
                }
            }
        }
    };
    let mut backoff = Backoff::default();
    tokio::pin!(shutdown);
    if let Connector::Tls {
        identity: Some(identity),
        ..
    } = &connector
    {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tokio::time::timeout(FIRST_CERTIFICATE_WAIT, identity.ready()) => {}
        }
    }
    loop {
        let outcome = tokio::select! {
            () = &mut shutdown => return,
            outcome = session(&connector, &info, &config, &state, writer.as_ref()) => outcome,
        };
        match outcome {
            Ok(opened) => {
                if opened {
                    backoff.reset();
                }
                info!("control plane closed the configuration stream; reconnecting");
            }
            Err(SessionError { opened, message }) => {
                if opened {
                    backoff.reset();
                }
                warn!("configuration stream: {message}; keeping the configuration held");
            }
        }
        let delay = backoff.next_delay();
        debug!("reconnecting to the control plane in {delay:?}");
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

struct SessionError {
    /// The stream was open (the control plane accepted our Hello) before it failed.
    opened: bool,
    message: String,
}

/// One stream, until it ends; `Ok(opened)` when the control plane ended it cleanly.
async fn session(
    connector: &Connector,
    info: &ProxyInfo,
    config: &ArcSwap<Snapshot>,
    state: &DiscoveryState,
    writer: Option<&cache::Writer>,
) -> Result<bool, SessionError> {
    let fail = |opened: bool| {
        move |e: &dyn std::fmt::Display| SessionError {
            opened,
            message: e.to_string(),
        }
    };
    let (channel, token) = connector.connect().await.map_err(|e| fail(false)(&e))?;
    let mut client = ConfigDiscoveryClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (tx, rx) = mpsc::channel(4);
    let hello = ProxyMessage {
        kind: Some(proxy_message::Kind::Hello(Hello {
            pod: info.pod.clone(),
            namespace: info.namespace.clone(),
            workload: info.workload.clone(),
            service_account: info.service_account.clone(),
            ip: info.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            proxy_version: env!("CARGO_PKG_VERSION").to_string(),
            held_version: state.held_version().unwrap_or_default(),
        })),
    };
    // The receiver is alive: it is handed to the call below.
    let _ = tx.send(hello).await;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = token {
        authorize(&mut request, &token).map_err(|e| fail(false)(&e))?;
    }
    let mut inbound = client
        .stream(request)
        .await
        .map_err(|e| fail(false)(&e))?
        .into_inner();
    state.inner.streams.fetch_add(1, Ordering::Relaxed);
    info!("configuration stream open");
    let mut reassembly = Reassembly::new(MAX_SNAPSHOT_BYTES);
    // Trust travels over the authenticated stream only.
    let identity = match connector {
        Connector::Tls {
            identity: Some(identity),
            ..
        } => Some(identity.clone()),
        _ => None,
    };
    let mut changes = identity.as_ref().map(|i| i.changes());
    loop {
        let changed = async {
            match changes.as_mut() {
                Some(rx) => rx.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        let chunk = tokio::select! {
            message = inbound.message() => match message.map_err(|e| fail(true)(&e))? {
                Some(chunk) => chunk,
                None => break,
            },
            alive = changed => {
                if !alive {
                    changes = None;
                    continue;
                }
                if let Some(identity) = &identity
                    && tx.send(trust_report(identity)).await.is_err()
                {
                    break;
                }
                continue;
            }
        };
        if let Some(update) = chunk.trust {
            let Some(identity) = &identity else {
                debug!("ignoring a trust bundle on a plaintext stream");
                continue;
            };
            if let Err(e) = identity.apply_trust(update.generation, &update.roots, update.renew) {
                warn!("cannot apply the control plane's trust bundle: {e}");
            }
            // `apply_trust` marks a change: the report goes out from the branch above.
            continue;
        }
        let reply = match reassembly.push(chunk) {
            None => continue,
            Some(Completed::Snapshot(snapshot)) => {
                apply_and_keep(&snapshot, config, state, info, writer)
            }
            Some(Completed::Broken { version, reason }) => reject(version, reason, state),
        };
        if tx.send(reply).await.is_err() {
            break;
        }
    }
    Ok(true)
}

/// What the proxy trusts and holds, for the control plane.
fn trust_report(identity: &IdentityState) -> ProxyMessage {
    let status = identity.trust_status();
    ProxyMessage {
        kind: Some(proxy_message::Kind::Trust(TrustReport {
            generation: status.generation,
            roots: status.roots,
            cert_root: status.cert_root,
            cert_serial: status.cert_serial,
            error: status.error,
        })),
    }
}

/// Validates a complete snapshot and swaps it in; the answer to send back.
fn apply(snapshot: &Assembled, config: &ArcSwap<Snapshot>, state: &DiscoveryState) -> ProxyMessage {
    let version = snapshot.version.clone();
    match validate(&version, &snapshot.json) {
        Ok(mut parsed) => {
            if parsed.version.is_empty() {
                parsed.version = version.clone();
            }
            config.store(Arc::new(Snapshot::compile(parsed)));
            state.applied_version(&version);
            info!(%version, "configuration applied");
            ProxyMessage {
                kind: Some(proxy_message::Kind::Ack(Ack { version })),
            }
        }
        Err(reason) => reject(version, reason, state),
    }
}

/// [`apply`], then, when the snapshot was accepted (and only then), hands it to the cache
/// `writer`.
fn apply_and_keep(
    snapshot: &Assembled,
    config: &ArcSwap<Snapshot>,
    state: &DiscoveryState,
    info: &ProxyInfo,
    writer: Option<&cache::Writer>,
) -> ProxyMessage {
    let reply = apply(snapshot, config, state);
    if let (Some(writer), Some(proxy_message::Kind::Ack(_))) = (writer, &reply.kind) {
        writer.store(cache::encode(info, &snapshot.version, &snapshot.json));
    }
    reply
}

/// Rejects the snapshot `version`, keeping the configuration held; the answer to send back.
fn reject(version: String, reason: String, state: &DiscoveryState) -> ProxyMessage {
    state.inner.rejected.fetch_add(1, Ordering::Relaxed);
    warn!(%version, "configuration rejected, keeping the last good one: {reason}");
    ProxyMessage {
        kind: Some(proxy_message::Kind::Nack(Nack { version, reason })),
    }
}

/// Parses the JSON of the snapshot `version` with the file loader's checks. When it is not
/// a well-typed configuration it is pretty-printed and parsed as a file, so that every
/// problem names a useful line and field.
pub fn validate(version: &str, json: &[u8]) -> Result<ProxyConfig, String> {
    let source = format!("snapshot {version}");
    // Fast path: a well-typed snapshot needs only the semantic checks.
    if let Ok(config) = serde_json::from_slice::<ProxyConfig>(json) {
        return file::check_typed(&source, &config)
            .map(|()| config)
            .map_err(|e| e.to_string());
    }
    // Slow path, for a precise reason: every problem with its line and field.
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("{source}: not JSON: {e}"))?;
    let text = serde_json::to_string_pretty(&value).map_err(|e| format!("{source}: {e}"))?;
    file::parse(&source, &text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate_text(json: &str) -> Result<ProxyConfig, String> {
        validate("3-abc", json.as_bytes())
    }

    #[test]
    fn valid_json_passes_the_file_checks() {
        let config = ProxyConfig::default();
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(validate_text(&json).unwrap(), config);
    }

    #[test]
    fn invalid_json_is_rejected_with_a_reason() {
        let err = validate_text("{\"services\":[{\"name\":\"a\",\"ports\":[{\"port\":0}]}]}")
            .unwrap_err();
        assert!(
            err.contains("snapshot 3-abc:") && err.contains("services.0.ports.0.port"),
            "{err}"
        );
        let err = validate_text("{\"bogus\": 1}").unwrap_err();
        assert!(err.contains("bogus"), "{err}");
        assert!(validate_text("not json").unwrap_err().contains("not JSON"));
        assert!(validate_text("").is_err());
    }

    #[tokio::test]
    async fn only_accepted_snapshots_reach_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config-cache");
        let info = ProxyInfo {
            pod: "web-1".into(),
            namespace: "shop".into(),
            ..ProxyInfo::default()
        };
        let config = ArcSwap::from_pointee(Snapshot::compile(ProxyConfig::default()));
        let state = DiscoveryState::new();
        let (writer, task) = cache::Writer::spawn(path.clone());
        let mut good = ProxyConfig::default();
        good.identity.pod = "web-1".into();
        let snapshot = |version: &str, json: Vec<u8>| Assembled {
            version: version.into(),
            hash: "h".into(),
            json,
        };
        let good = snapshot("1-aa", serde_json::to_vec(&good).unwrap());
        let bad = snapshot(
            "2-bb",
            br#"{"services":[{"name":"a","ports":[{"port":0}]}]}"#.to_vec(),
        );
        let reply = apply_and_keep(&good, &config, &state, &info, Some(&writer));
        assert!(matches!(reply.kind, Some(proxy_message::Kind::Ack(_))));
        let reply = apply_and_keep(&bad, &config, &state, &info, Some(&writer));
        assert!(matches!(reply.kind, Some(proxy_message::Kind::Nack(_))));
        drop(writer);
        task.await.unwrap();
        let cached = cache::read(&path, &info).unwrap().unwrap();
        assert_eq!(cached.version, "1-aa");
        assert_eq!(cached.config.identity.pod, "web-1");
        assert!(!state.from_cache(), "applied from the stream");
    }

    #[test]
    fn chunked_snapshots_are_applied_once_complete_and_broken_ones_rejected() {
        use bytes::Bytes;
        use ferry_proto::discovery::chunks;
        let mut good = ProxyConfig::default();
        good.identity.pod = "p".into();
        let json = Bytes::from(serde_json::to_vec(&good).unwrap());
        let config = ArcSwap::from_pointee(Snapshot::compile(ProxyConfig::default()));
        let state = DiscoveryState::new();
        let mut reassembly = Reassembly::new(1 << 20);
        let mut replies = Vec::new();
        for chunk in chunks("1-aa", "aa", &[json], 8) {
            if let Some(Completed::Snapshot(s)) = reassembly.push(chunk) {
                replies.push(apply(&s, &config, &state));
            }
        }
        assert_eq!(replies.len(), 1);
        assert!(
            matches!(&replies[0].kind, Some(proxy_message::Kind::Ack(a)) if a.version == "1-aa")
        );
        assert_eq!(config.load().config.identity.pod, "p");
        assert_eq!(state.held_version().as_deref(), Some("1-aa"));
        let mut small = Reassembly::new(4);
        let Some(first) = chunks("2-bb", "bb", &[Bytes::from_static(b"{\"x\":1}")], 2)
            .into_iter()
            .next()
        else {
            panic!("chunks")
        };
        let Some(Completed::Broken { version, reason }) = small.push(first) else {
            panic!("too large")
        };
        let reply = reject(version, reason, &state);
        assert!(
            matches!(&reply.kind, Some(proxy_message::Kind::Nack(n)) if n.version == "2-bb" && n.reason.contains("limit"))
        );
        assert_eq!(state.rejected(), 1);
        assert_eq!(config.load().config.identity.pod, "p");
    }
}
