//! The tonic service: one task per proxy stream that sends the proxy its configuration
//! (in chunks of [`CHUNK_BYTES`], fed to gRPC as it drains them, so a stream never holds
//! more than a few chunks in its buffers), follows the source's changes (debounced, pushed
//! only when the hash changed) and records ACKs and NACKs; and the plaintext listener with
//! a graceful shutdown that ends every stream first.
//!
//! On the TLS port (a request carrying the port's [`CallerAuth`]) a stream must prove an
//! identity before anything is read: the proxy's workload certificate or its token. Its
//! `Hello` must then name that identity's namespace and service account (and the pod a
//! per-pod token names), and the pod's service account as the source knows it must be the
//! proven one ([`authorize`]); a refusal is a gRPC status and a log line. The plaintext
//! port takes the `Hello` as it is.

use super::ConfigSource;
use super::push::{self, DEBOUNCE, Prepared, Versions};
use super::status::{Connection, DistributionMetrics, ProxyStatus, Table};
use crate::ca::caller::{self, CallerAuth, Proven};
use crate::ca::rollover::{SharedCa, TrustPush, TrustReport, TrustSlot};
use crate::registry::ProxyIdentity;
use ferry_proto::discovery::v1::config_discovery_server::{ConfigDiscovery, ConfigDiscoveryServer};
use ferry_proto::discovery::v1::{ConfigChunk, Hello, ProxyMessage, TrustUpdate, proxy_message};
use ferry_proto::discovery::{CHUNK_BYTES, chunks, trust_chunk};
use prometheus_client::registry::Registry;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

/// The port proxies connect to (plaintext), as Istio's 15010.
pub const DEFAULT_PORT: u16 = 15010;

/// Largest message accepted or sent. Snapshots travel in chunks of [`CHUNK_BYTES`]; this
/// bounds what a misbehaving peer can make us buffer.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// Chunks queued per stream ahead of what gRPC has taken.
const QUEUED_CHUNKS: usize = 2;

/// Bytes of snapshots sent and not yet answered (ACK or NACK), over all proxies, beyond
/// which further pushes wait: pushes to a thousand proxies at once must not hold a
/// thousand configurations in send buffers.
pub const INFLIGHT_BUDGET_BYTES: usize = 64 << 20;

/// How long a pushed snapshot counts against the budget when its proxy does not answer.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// How long a new stream may take to say `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

struct Shared {
    source: Arc<dyn ConfigSource>,
    table: Arc<Table>,
    versions: Versions,
    debounce: Duration,
    /// [`INFLIGHT_BUDGET_BYTES`], in KiB.
    inflight: Arc<Semaphore>,
    /// Becomes true when the server shuts down; every stream then ends.
    shutdown: watch::Sender<bool>,
    /// The source's generation that a stream last prepared at once (see
    /// [`ProxyStream::run`]).
    warmed: AtomicU64,
    /// The CA whose roots authenticated streams are told to trust, if any.
    trust: Option<SharedCa>,
}

/// The distribution service: cheap to clone, all clones share the proxies' table.
#[derive(Clone)]
pub struct Distribution {
    shared: Arc<Shared>,
}

impl Distribution {
    /// A service fed by `source`, whose metrics are registered into `registry`.
    pub fn new(source: Arc<dyn ConfigSource>, registry: &mut Registry) -> Self {
        Self::with_debounce(source, registry, DEBOUNCE)
    }

    /// Like [`Distribution::new`] with another debounce window.
    pub fn with_debounce(
        source: Arc<dyn ConfigSource>,
        registry: &mut Registry,
        debounce: Duration,
    ) -> Self {
        Self::with_trust(source, registry, debounce, None)
    }

    /// Like [`Distribution::with_debounce`]; with `trust`, every stream authenticated on the
    /// TLS port is also sent the CA's roots (when it opens and on every change: a root
    /// rollover), and its proxy's answers are recorded in `trust`. Plaintext streams never
    /// are: roots must come over an authenticated channel.
    pub fn with_trust(
        source: Arc<dyn ConfigSource>,
        registry: &mut Registry,
        debounce: Duration,
        trust: Option<SharedCa>,
    ) -> Self {
        let metrics = DistributionMetrics::register(registry);
        Self {
            shared: Arc::new(Shared {
                source,
                table: Arc::new(Table::new(metrics)),
                versions: Versions::default(),
                debounce,
                inflight: Arc::new(Semaphore::new(INFLIGHT_BUDGET_BYTES >> 10)),
                shutdown: watch::channel(false).0,
                warmed: AtomicU64::new(0),
                trust,
            }),
        }
    }

    /// The distribution's metrics (also registered into the registry given to `new`).
    pub fn metrics(&self) -> &DistributionMetrics {
        &self.shared.table.metrics
    }

    /// Every connected proxy: identity, versions sent and ACKed, last NACK.
    pub fn status(&self) -> Vec<ProxyStatus> {
        self.shared.table.all()
    }

    /// The gRPC service, to mount on a tonic server of one's own.
    pub fn service(&self) -> ConfigDiscoveryServer<Self> {
        ConfigDiscoveryServer::new(self.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Ends every open stream (their proxies keep their configuration and reconnect).
    pub fn close_streams(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// Serves on `listener` (plaintext HTTP/2) until `shutdown` completes, then ends every
    /// stream and returns once the connections are closed.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let this = self.clone();
        let signal = async move {
            shutdown.await;
            this.close_streams();
        };
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .add_service(self.service())
            .serve_with_incoming_shutdown(incoming(listener), signal)
            .await
    }
}

#[tonic::async_trait]
impl ConfigDiscovery for Distribution {
    type StreamStream = Chunks;

    async fn stream(
        &self,
        request: Request<Streaming<ProxyMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let peer = request.remote_addr();
        let proven = self.authenticate(&request).await?;
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(ProxyMessage {
                kind: Some(proxy_message::Kind::Hello(hello)),
            }))) => hello,
            Ok(Ok(Some(_))) => {
                return Err(Status::invalid_argument("the first message must be Hello"));
            }
            Ok(Ok(None)) => return Err(Status::cancelled("the stream ended before Hello")),
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(Status::deadline_exceeded("no Hello in time")),
        };
        let mut identity = identity_of(&hello)?;
        let authenticated = match &proven {
            Some(proven) => {
                // The `Hello` first; then the pod's service account as the source knows it.
                let checked = authorize(proven, &mut identity, None).and_then(|()| {
                    let known = self.shared.source.service_account_of(&identity);
                    authorize(proven, &mut identity, known.as_deref())
                });
                if let Err(status) = checked {
                    self.metrics().refuse("identity-mismatch");
                    warn!(
                        peer = ?peer,
                        pod = %identity.pod,
                        namespace = %identity.namespace,
                        proven = %proven.id,
                        proof = %proven.proof,
                        "refused a configuration stream: {}",
                        status.message()
                    );
                    return Err(status);
                }
                Some(format!("{} ({})", proven.id, proven.proof))
            }
            None => None,
        };
        info!(
            pod = %identity.pod,
            namespace = %identity.namespace,
            peer = ?peer,
            authenticated = authenticated.as_deref().unwrap_or("no (plaintext port)"),
            "proxy connected"
        );
        let (tx, rx) = mpsc::channel(QUEUED_CHUNKS);
        let connection =
            self.shared
                .table
                .connect(identity.clone(), hello.proxy_version.clone(), authenticated);
        // Roots only over an authenticated (TLS) stream.
        let (trust_rx, trust) = match (&self.shared.trust, &proven) {
            (Some(ca), Some(_)) => (
                Some(ca.subscribe()),
                Some(ca.register(&identity.namespace, &identity.pod)),
            ),
            _ => (None, None),
        };
        let stream = ProxyStream {
            trust,
            shared: self.shared.clone(),
            identity,
            connection,
            tx,
            last_hash: None,
            last_fingerprint: None,
            unanswered: None,
        };
        tokio::spawn(stream.run(inbound, hello.held_version, trust_rx));
        Ok(Response::new(Chunks(rx)))
    }
}

impl Distribution {
    /// The identity the caller proves, when the request came through the TLS port (which
    /// puts its [`CallerAuth`] into the request); `None` on the plaintext port. A caller of
    /// the TLS port that proves nothing is refused here, before its `Hello` is read.
    async fn authenticate<T>(&self, request: &Request<T>) -> Result<Option<Proven>, Status> {
        let peer = request.remote_addr();
        let Some(auth) = request.extensions().get::<CallerAuth>().cloned() else {
            if caller::over_tls(request.extensions()) {
                // TLS from somewhere other than the CA's port: nothing says how to check.
                self.metrics().refuse("no-authentication");
                warn!(peer = ?peer, "refused a configuration stream over TLS: this listener authenticates no proxies");
                return Err(Status::unauthenticated(
                    "this TLS listener authenticates no proxies",
                ));
            }
            return Ok(None);
        };
        let certs = caller::peer_certs(request.extensions());
        match auth
            .prove(request.metadata(), certs.as_deref().map(Vec::as_slice))
            .await
        {
            Ok(proven) => Ok(Some(proven)),
            Err(refused) => {
                self.metrics().refuse(refused.reason);
                warn!(
                    peer = ?peer,
                    reason = refused.reason,
                    "refused a configuration stream: {}",
                    refused.status.message()
                );
                Err(refused.status)
            }
        }
    }
}

/// Whether a proxy that proved `proven` may follow the configuration of `identity` (what
/// its `Hello` says): the same namespace, the same service account (an empty one in the
/// `Hello` becomes the proven one), the pod a per-pod token names, and `known`, the service
/// account the source knows for that pod, if any, is the proven one too. `PermissionDenied`
/// otherwise, naming both sides.
pub fn authorize(
    proven: &Proven,
    identity: &mut ProxyIdentity,
    known: Option<&str>,
) -> Result<(), Status> {
    let who = format!("{}/{}", identity.namespace, identity.pod);
    let id = &proven.id;
    if identity.namespace != id.namespace {
        return Err(Status::permission_denied(format!(
            "proxy {who} asks for namespace {}, but proved {id}",
            identity.namespace
        )));
    }
    if identity.service_account.is_empty() {
        identity.service_account = id.service_account.clone();
    } else if identity.service_account != id.service_account {
        return Err(Status::permission_denied(format!(
            "proxy {who} asks for service account {}, but proved {id}",
            identity.service_account
        )));
    }
    if let Some(pod) = proven.pod.as_deref().filter(|p| *p != identity.pod) {
        return Err(Status::permission_denied(format!(
            "proxy {who} proved {id} for pod {pod}, not for {}",
            identity.pod
        )));
    }
    if let Some(known) = known.filter(|k| *k != id.service_account) {
        return Err(Status::permission_denied(format!(
            "pod {who} runs as service account {known}, but the proxy proved {id}"
        )));
    }
    Ok(())
}

/// A stream's outgoing chunks, as gRPC takes them. The channel holds boxes: tokio's channels
/// allocate their slots in blocks of 32, which for a thousand streams of chunks (with the
/// room of a gRPC status each) would be several MiB.
pub struct Chunks(mpsc::Receiver<Box<ConfigChunk>>);

impl tokio_stream::Stream for Chunks {
    type Item = Result<ConfigChunk, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|c| Ok(*c)))
    }
}

fn identity_of(hello: &Hello) -> Result<ProxyIdentity, Status> {
    if hello.pod.is_empty() || hello.namespace.is_empty() {
        return Err(Status::invalid_argument(
            "Hello needs the pod name and namespace",
        ));
    }
    let ip = match hello.ip.as_str() {
        "" => None,
        text => Some(text.parse().map_err(|_| {
            Status::invalid_argument(format!("Hello: `{text}` is not an IP address"))
        })?),
    };
    Ok(ProxyIdentity {
        pod: hello.pod.clone(),
        namespace: hello.namespace.clone(),
        workload: hello.workload.clone(),
        service_account: hello.service_account.clone(),
        ip,
    })
}

/// One proxy's stream.
struct ProxyStream {
    /// Where the proxy's trust reports go (authenticated streams of a control plane that is
    /// the CA).
    trust: Option<TrustSlot>,
    shared: Arc<Shared>,
    identity: ProxyIdentity,
    connection: Connection,
    tx: mpsc::Sender<Box<ConfigChunk>>,
    /// Hash of the configuration the proxy was last sent (or held when it connected).
    last_hash: Option<String>,
    /// The source's fingerprint of that configuration, when it gives them.
    last_fingerprint: Option<push::Fingerprint>,
    /// The last push while unanswered: its version, its share of the in-flight budget, and
    /// when that share is given back anyway.
    unanswered: Option<(String, OwnedSemaphorePermit, Instant)>,
}

impl ProxyStream {
    async fn run(
        mut self,
        mut inbound: Streaming<ProxyMessage>,
        held_version: String,
        mut trust: Option<watch::Receiver<TrustPush>>,
    ) {
        let mut changes = self.shared.source.changes();
        changes.borrow_and_update();
        let mut shutdown = self.shared.shutdown.subscribe();
        let mut source_alive = true;
        if !self.sync(Instant::now(), Some(&held_version)).await {
            return;
        }
        if let Some(rx) = trust.as_mut() {
            let push = rx.borrow_and_update().clone();
            if !self.send_trust(push).await {
                return;
            }
        }
        loop {
            let trust_changed = async {
                match trust.as_mut() {
                    Some(rx) => rx
                        .changed()
                        .await
                        .is_ok()
                        .then(|| rx.borrow_and_update().clone()),
                    None => std::future::pending().await,
                }
            };
            let changed = async {
                if source_alive {
                    changes.changed().await.is_ok()
                } else {
                    std::future::pending().await
                }
            };
            let closed = async {
                let _ = shutdown.wait_for(|closed| *closed).await;
            };
            let give_back = self.unanswered.as_ref().map(|u| u.2);
            let unanswered = async {
                match give_back {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = closed => break,
                () = unanswered => self.unanswered = None,
                push = trust_changed => match push {
                    Some(push) => {
                        if !self.send_trust(push).await {
                            break;
                        }
                    }
                    None => trust = None,
                },
                alive = changed => {
                    if !alive {
                        source_alive = false;
                        continue;
                    }
                    let since = Instant::now();
                    // The first stream to see a generation prepares its configuration at
                    // once, so that what the source shares between proxies (the compile
                    // cache's indexes of a new registry) is built while the debounce runs,
                    // not after it. Its result is not used: the look below decides.
                    let generation = *changes.borrow();
                    if self.shared.warmed.swap(generation, Ordering::AcqRel) != generation {
                        let _ = self
                            .shared
                            .source
                            .prepare(&self.identity, self.last_fingerprint.as_ref());
                    }
                    // Let the rest of a burst arrive, then look once.
                    let received = (self.shared.source.change_received())
                        .filter(|at| *at <= since)
                        .unwrap_or(since);
                    tokio::time::sleep_until((received + self.shared.debounce).into()).await;
                    changes.borrow_and_update();
                    if !self.sync(since, None).await {
                        break;
                    }
                }
                message = inbound.message() => match message {
                    Ok(Some(message)) => self.answer(message),
                    Ok(None) => break,
                    Err(status) => {
                        debug!(pod = %self.identity.pod, "stream error: {status}");
                        break;
                    }
                },
            }
        }
        info!(pod = %self.identity.pod, namespace = %self.identity.namespace, "proxy disconnected");
    }

    /// Sends the roots to trust (and the renewal counter). Between snapshots: `sync` sends a snapshot's chunks all at once. False once the
    /// stream is gone.
    async fn send_trust(&mut self, push: TrustPush) -> bool {
        let chunk = trust_chunk(TrustUpdate {
            generation: push.generation,
            roots: push.roots,
            renew: push.renew,
        });
        let mut shutdown = self.shared.shutdown.subscribe();
        let sent = tokio::select! {
            sent = self.tx.send(Box::new(chunk)) => sent.is_ok(),
            _ = shutdown.wait_for(|closed| *closed) => false,
        };
        if sent {
            debug!(pod = %self.identity.pod, generation = push.generation, "sent the trust bundle");
        }
        sent
    }

    /// Recomputes the proxy's configuration and pushes it if its hash changed (or, on
    /// connection, if it differs from what the proxy holds). False once the stream is gone.
    async fn sync(&mut self, since: Instant, held_version: Option<&str>) -> bool {
        // On connection the proxy's own version decides; afterwards an unchanged
        // fingerprint means an unchanged configuration.
        let held = match held_version {
            Some(_) => None,
            None => self.last_fingerprint.as_ref(),
        };
        let (rendered, fingerprint) = match self.shared.source.prepare(&self.identity, held) {
            Ok(Prepared::Rendered {
                rendered,
                fingerprint,
            }) => (rendered, fingerprint),
            Ok(Prepared::Unchanged) => return true,
            Ok(Prepared::Unknown) => {
                debug!(pod = %self.identity.pod, "no configuration for this proxy yet");
                return true;
            }
            Err(e) => {
                warn!(pod = %self.identity.pod, "cannot serialize the configuration: {e}");
                return true;
            }
        };
        // From here on, `fingerprint` names what the proxy holds once this returns true.
        self.last_fingerprint = None;
        if self.last_hash.as_deref() == Some(rendered.hash.as_str()) {
            self.last_fingerprint = fingerprint;
            return true;
        }
        if let Some(held) = held_version.filter(|v| push::version_matches(v, &rendered.hash)) {
            debug!(pod = %self.identity.pod, version = held, "proxy already holds the configuration");
            self.connection.held(held);
            self.last_hash = Some(rendered.hash);
            self.last_fingerprint = fingerprint;
            return true;
        }
        // Wait for room in the in-flight budget (giving back this stream's own share first).
        self.unanswered = None;
        let kib = u32::try_from(rendered.len() >> 10)
            .unwrap_or(u32::MAX)
            .saturating_add(1)
            .min(u32::try_from(INFLIGHT_BUDGET_BYTES >> 10).unwrap_or(u32::MAX));
        let mut shutdown = self.shared.shutdown.subscribe();
        let permit = tokio::select! {
            permit = self.shared.inflight.clone().acquire_many_owned(kib) => match permit {
                Ok(permit) => permit,
                Err(_) => return false,
            },
            _ = shutdown.wait_for(|closed| *closed) => return false,
        };
        let version = self.shared.versions.next(&rendered.hash);
        for chunk in chunks(&version, &rendered.hash, &rendered.json, CHUNK_BYTES) {
            let sent = tokio::select! {
                sent = self.tx.send(Box::new(chunk)) => sent.is_ok(),
                _ = shutdown.wait_for(|closed| *closed) => false,
            };
            if !sent {
                return false;
            }
        }
        debug!(pod = %self.identity.pod, %version, "pushed");
        self.connection.pushed(&version, since.elapsed());
        self.last_hash = Some(rendered.hash);
        self.last_fingerprint = fingerprint;
        self.unanswered = Some((version, permit, Instant::now() + ANSWER_WAIT));
        true
    }

    fn answer(&mut self, message: ProxyMessage) {
        let answered = match &message.kind {
            Some(proxy_message::Kind::Ack(a)) => Some(&a.version),
            Some(proxy_message::Kind::Nack(n)) => Some(&n.version),
            _ => None,
        };
        if answered.is_some() && answered == self.unanswered.as_ref().map(|u| &u.0) {
            self.unanswered = None;
        }
        match message.kind {
            Some(proxy_message::Kind::Ack(ack)) => self.connection.acked(ack.version),
            Some(proxy_message::Kind::Nack(nack)) => {
                warn!(
                    pod = %self.identity.pod,
                    namespace = %self.identity.namespace,
                    version = %nack.version,
                    "proxy rejected its configuration: {}",
                    nack.reason
                );
                self.connection.nacked(nack.version, nack.reason);
            }
            Some(proxy_message::Kind::Trust(report)) => {
                if let Some(slot) = &self.trust {
                    if !report.error.is_empty() {
                        warn!(pod = %self.identity.pod, namespace = %self.identity.namespace, "proxy could not apply the trust bundle: {}", report.error);
                    }
                    slot.report(TrustReport {
                        generation: report.generation,
                        roots: report.roots,
                        cert_root: report.cert_root,
                        cert_serial: report.cert_serial,
                        error: report.error,
                    });
                }
            }
            Some(proxy_message::Kind::Hello(_)) | None => {
                debug!(pod = %self.identity.pod, "ignoring an unexpected message");
            }
        }
    }
}

/// The accepted connections, with Nagle's algorithm off: a snapshot's last segment must
/// not wait for the proxy's delayed ACK of the previous one (~40 ms per push otherwise).
fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        if let Err(e) = stream.set_nodelay(true) {
            debug!("cannot set TCP_NODELAY: {e}");
        }
        Ok(stream)
    })
}

/// Binds `addr` for [`Distribution::serve`].
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{Proof, SpiffeId};

    fn proven(ns: &str, sa: &str, pod: Option<&str>) -> Proven {
        Proven {
            id: SpiffeId::new("cluster.local", ns, sa).expect("id"),
            pod: pod.map(str::to_string),
            proof: Proof::Certificate,
        }
    }

    fn hello(ns: &str, pod: &str, sa: &str) -> ProxyIdentity {
        ProxyIdentity {
            pod: pod.into(),
            namespace: ns.into(),
            service_account: sa.into(),
            ..Default::default()
        }
    }

    /// A proxy gets its own identity's configuration only.
    #[test]
    fn authorization_table() {
        // (what, proven, hello, service account the source knows, Ok(sa after) or Err(text))
        type Row = (
            &'static str,
            Proven,
            ProxyIdentity,
            Option<&'static str>,
            Result<&'static str, &'static str>,
        );
        let rows: Vec<Row> = vec![
            (
                "its own identity",
                proven("default", "redis", None),
                hello("default", "redis-0", "redis"),
                Some("redis"),
                Ok("redis"),
            ),
            (
                "no service account in Hello takes the proven one",
                proven("default", "redis", None),
                hello("default", "redis-0", ""),
                None,
                Ok("redis"),
            ),
            (
                "another namespace",
                proven("default", "redis", None),
                hello("prod", "redis-0", "redis"),
                None,
                Err(
                    "asks for namespace prod, but proved spiffe://cluster.local/ns/default/sa/redis",
                ),
            ),
            (
                "another service account",
                proven("default", "client", None),
                hello("default", "redis-0", "redis"),
                None,
                Err("asks for service account redis"),
            ),
            (
                "a pod of another service account, claimed under the proven one",
                proven("default", "client", None),
                hello("default", "redis-0", "client"),
                Some("redis"),
                Err("pod default/redis-0 runs as service account redis"),
            ),
            (
                "a per-pod token names another pod",
                proven("default", "redis", Some("redis-1")),
                hello("default", "redis-0", "redis"),
                Some("redis"),
                Err("for pod redis-1, not for redis-0"),
            ),
            (
                "a per-pod token for this pod",
                proven("default", "redis", Some("redis-0")),
                hello("default", "redis-0", "redis"),
                Some("redis"),
                Ok("redis"),
            ),
        ];
        for (what, proven, mut identity, known, want) in rows {
            match (authorize(&proven, &mut identity, known), want) {
                (Ok(()), Ok(sa)) => assert_eq!(identity.service_account, sa, "{what}"),
                (Err(status), Err(text)) => {
                    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{what}");
                    assert!(
                        status.message().contains(text),
                        "{what}: {}",
                        status.message()
                    );
                }
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
    }
}
