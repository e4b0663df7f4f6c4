//! Tracing as the data path sees it: a switch that is one relaxed load and one branch when
//! tracing is off ([`TraceSwitch`]), the tracer in force with the proxy's identity
//! ([`Active`], with the span kinds it reports and its custom tags), and an HTTP request's
//! span from its start (context extracted, a child created, headers rewritten, header tags
//! read) to its end ([`PendingHttp::finish`]).

use super::context::ensure_request_id;
use super::context::{Extracted, TraceContext, X_REQUEST_ID, extract, propagate};
use super::export::{TraceConfig, TraceMetrics, TraceResource, Tracer};
use super::span::{HttpSpan, ProxyIdentity, SpanKind};
use super::tags::{CustomTags, SpanModes};
use crate::config::{Snapshot, Tracing};
use arc_swap::ArcSwap;
use arc_swap::ArcSwapOption;
use hyper::http::{Method, Request, Version, header};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

/// The tracer in force, who this proxy is (the identity tags of its spans), which span kinds
/// it reports and its custom tags.
#[derive(Debug)]
pub struct Active {
    /// The tracer (queue and sampler).
    pub tracer: Tracer,
    /// Identity tags.
    pub me: ProxyIdentity,
    /// The span kinds reported (Istio's `match.mode`).
    pub modes: SpanModes,
    /// Custom tags per span kind (Istio's `customTags`).
    pub tags: CustomTags,
}

impl Active {
    /// The tracer in force for `me`, reporting every span kind, without custom tags.
    pub fn new(tracer: Tracer, me: ProxyIdentity) -> Self {
        Active {
            tracer,
            me,
            modes: SpanModes::default(),
            tags: CustomTags::default(),
        }
    }
}

/// Whether tracing is on, and with which tracer; replaced when the configuration changes.
#[derive(Debug, Default)]
pub struct TraceSwitch {
    on: AtomicBool,
    active: ArcSwapOption<Active>,
}

impl TraceSwitch {
    /// The tracer in force; `None` (one relaxed load) when tracing is off.
    #[inline]
    pub fn current(&self) -> Option<Arc<Active>> {
        if !self.on.load(Ordering::Relaxed) {
            return None;
        }
        self.active.load_full()
    }

    /// Runs `f` with the tracer in force, without taking a reference on it (what a request
    /// that ends unsampled needs); `None` (one relaxed load) when tracing is off.
    #[inline]
    pub fn with_current<R>(&self, f: impl FnOnce(&Arc<Active>) -> R) -> Option<R> {
        if !self.on.load(Ordering::Relaxed) {
            return None;
        }
        self.active.load().as_ref().map(f)
    }

    /// Whether tracing is on (one relaxed load).
    #[inline]
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Turns tracing on with `active`, or off with `None`.
    pub fn set(&self, active: Option<Arc<Active>>) {
        match active {
            Some(a) => {
                self.active.store(Some(a));
                self.on.store(true, Ordering::Release);
            }
            None => {
                self.on.store(false, Ordering::Release);
                self.active.store(None);
            }
        }
    }
}

/// A sampled HTTP request whose span is recorded when it ends.
#[derive(Debug)]
pub struct PendingHttp {
    active: Arc<Active>,
    ctx: TraceContext,
    kind: SpanKind,
    start: SystemTime,
    host: String,
    port: u16,
    path: String,
    method: Method,
    version: Version,
    peer: String,
    request_id: String,
    user_agent: String,
    /// Custom tag values read from the request's headers.
    captured: Vec<(Cow<'static, str>, String)>,
    /// Envoy's upstream cluster (`outbound|80||back.default.svc.cluster.local`).
    pub upstream_cluster: String,
    /// The endpoint the request was sent to, when one was picked.
    pub upstream_address: Option<SocketAddr>,
}

/// Starts a request's span: reads the incoming context (W3C, then B3), makes this proxy's
/// span its child (or a new root, sampled at the configured rate when the caller decided
/// nothing), adds an `x-request-id` when absent, and writes the new context into the
/// request's headers (W3C and B3) so that the next hop joins the trace. Returns the span to
/// finish when the trace is sampled (`target` names it from the request's authority: host
/// and port, only called then). An unsampled request costs the header lookups, two random
/// ids and one buffer for the values written: nothing else is built for it.
///
/// When this proxy does not report `kind` (Istio's `match.mode`), no span is made and the
/// trace headers pass through unchanged (only an `x-request-id` is added when absent), as an
/// Envoy without tracing on that side does: the next span this trace gets is a child of the
/// caller's, so the tree has no hole.
pub fn start_http<B>(
    active: &Arc<Active>,
    kind: SpanKind,
    peer: Option<SocketAddr>,
    req: &mut Request<B>,
    target: impl FnOnce(&str) -> (String, u16),
) -> Option<PendingHttp> {
    let headers = req.headers_mut();
    if !active.modes.reports(kind) {
        ensure_request_id(headers);
        return None;
    }
    let incoming: Extracted = extract(headers);
    let ctx = active.tracer.sampler().child_of(&incoming);
    let sampled = ctx.sampled || ctx.debug;
    // Header tags read the request as it came in (before the context is rewritten).
    let captured = if sampled {
        active.tags.of(kind).capture(headers)
    } else {
        Vec::new()
    };
    propagate(&ctx, headers);
    if !sampled {
        return None;
    }
    let text = |v: Option<&hyper::http::HeaderValue>| {
        v.and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
    };
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    let (host, port) = target(authority);
    Some(PendingHttp {
        active: active.clone(),
        kind,
        start: SystemTime::now(),
        host,
        port,
        path: req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string(),
        method: req.method().clone(),
        version: req.version(),
        peer: peer.map(|p| p.to_string()).unwrap_or_default(),
        request_id: text(req.headers().get(X_REQUEST_ID)),
        user_agent: text(req.headers().get(header::USER_AGENT)),
        captured,
        upstream_cluster: String::new(),
        upstream_address: None,
        ctx,
    })
}

fn protocol_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

impl PendingHttp {
    /// The span's trace context (what was injected downstream).
    pub fn context(&self) -> &TraceContext {
        &self.ctx
    }

    /// Sets the upstream cluster and endpoint.
    pub fn upstream(&mut self, cluster: &str, address: Option<SocketAddr>) {
        if self.upstream_cluster != cluster {
            self.upstream_cluster.clear();
            self.upstream_cluster.push_str(cluster);
        }
        self.upstream_address = address;
    }

    /// Records the span: the response's status (0 when none), Envoy's response flags, and
    /// the body sizes. Never waits (the tracer's queue drops when full); the span's attributes
    /// are built on the exporter's thread, off the data path.
    pub fn finish(self, status: u16, flags: &str, request_size: u64, response_size: u64) {
        let end = SystemTime::now();
        let flags = flags.to_string();
        let tracer = self.active.tracer.clone();
        tracer.record_later(move || self.build(status, &flags, request_size, response_size, end));
    }

    /// The span's record, with the tags [`PendingHttp::finish`] was given.
    fn build(
        self,
        status: u16,
        flags: &str,
        request_size: u64,
        response_size: u64,
        end: SystemTime,
    ) -> super::span::Span {
        let url = format!("http://{}:{}{}", self.host, self.port, self.path);
        let upstream_cluster = if self.upstream_cluster.is_empty() {
            "-"
        } else {
            &self.upstream_cluster
        };
        let facts = HttpSpan {
            host: &self.host,
            port: self.port,
            path: &self.path,
            url: &url,
            method: self.method.as_str(),
            protocol: protocol_name(self.version),
            status,
            response_flags: flags,
            peer_address: &self.peer,
            upstream_cluster,
            downstream_cluster: "-",
            request_id: &self.request_id,
            user_agent: &self.user_agent,
            request_size,
            response_size,
        };
        let me = &self.active.me;
        let mut span = facts.to_span(&self.ctx, self.kind, me, self.start, end);
        if let Some(addr) = self.upstream_address {
            span.attr("upstream_address", addr.to_string());
        }
        span.attr("k8s.pod.name", me.pod.clone())
            .attr("k8s.namespace.name", me.namespace.clone())
            .attr("ferry.workload", me.workload.clone());
        self.active
            .tags
            .of(self.kind)
            .apply(&mut span, self.captured);
        span
    }
}

/// The identity tags of `snapshot`'s proxy, as Istio's sidecars report them.
pub fn identity_of(snapshot: &Snapshot) -> ProxyIdentity {
    let id = &snapshot.config.identity;
    let me = &snapshot.me;
    let domain = &snapshot.config.settings.cluster_domain;
    let ip = id.ip.map(|ip| ip.to_string()).unwrap_or_default();
    ProxyIdentity {
        node_id: format!(
            "sidecar~{ip}~{}.{}~{}.svc.{domain}",
            id.pod, id.namespace, id.namespace
        ),
        mesh_id: domain.clone(),
        cluster_id: if id.cluster.is_empty() {
            "Kubernetes".into()
        } else {
            id.cluster.clone()
        },
        namespace: id.namespace.clone(),
        canonical_service: me.canonical_service.clone(),
        canonical_revision: me.canonical_revision.clone(),
        workload: id.workload.clone(),
        pod: id.pod.clone(),
    }
}

/// The OTLP resource of a proxy: `service.name` is `<canonical service>.<namespace>`, as
/// Istio names it.
pub fn resource_of(me: &ProxyIdentity) -> TraceResource {
    let service_name = if me.namespace.is_empty() {
        me.canonical_service.clone()
    } else {
        format!("{}.{}", me.canonical_service, me.namespace)
    };
    let mut attributes = vec![
        ("k8s.pod.name".to_string(), me.pod.clone()),
        ("k8s.namespace.name".to_string(), me.namespace.clone()),
        ("ferry.workload".to_string(), me.workload.clone()),
        ("istio.mesh_id".to_string(), me.mesh_id.clone()),
        ("istio.cluster_id".to_string(), me.cluster_id.clone()),
        (
            "istio.canonical_revision".to_string(),
            me.canonical_revision.clone(),
        ),
    ];
    attributes.retain(|(_, v)| !v.is_empty());
    TraceResource {
        service_name,
        attributes,
    }
}

impl From<&Tracing> for TraceConfig {
    fn from(t: &Tracing) -> Self {
        use crate::config::TracingProvider as P;
        TraceConfig {
            provider: match t.provider {
                P::OtlpGrpc => super::Provider::OtlpGrpc,
                P::OtlpHttp => super::Provider::OtlpHttp,
                P::Zipkin => super::Provider::Zipkin,
            },
            endpoint: t.endpoint.clone(),
            sampling_percentage: t.sampling_percentage,
            redis_spans: t.redis_spans,
            max_queue: super::export::DEFAULT_MAX_QUEUE,
        }
    }
}

/// How often [`follow`] looks at the configuration when nothing tells it of a change.
pub const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

/// Keeps `switch` in step with the configuration: the tracing settings the configuration
/// carries (pushed by the control plane, or in the static file), else `local` (the command
/// line). A new tracer is started (on the current runtime, which runs its exporter) only
/// when the settings or the proxy's identity change; the old one drains and stops once the
/// requests that hold it end. Looks at the configuration every [`POLL_INTERVAL`]; prefer
/// [`follow_changes`] where the code that stores snapshots can say so. Runs until `stop`
/// completes.
pub async fn follow(
    switch: Arc<TraceSwitch>,
    config: Arc<ArcSwap<Snapshot>>,
    local: Option<Tracing>,
    metrics: TraceMetrics,
    stop: impl std::future::Future<Output = ()>,
) {
    follow_with(switch, config, local, metrics, stop, Wake::Poll).await
}

/// [`follow`], woken by `changed` instead of polling: whoever stores a new snapshot into
/// `config` then calls `send_replace(())` on the sender (storing first, so the snapshot is
/// there when this wakes). No CPU is spent while the configuration stays the same. If the
/// sender goes away, the tracer in force stays until `stop`.
pub async fn follow_changes(
    switch: Arc<TraceSwitch>,
    config: Arc<ArcSwap<Snapshot>>,
    changed: tokio::sync::watch::Receiver<()>,
    local: Option<Tracing>,
    metrics: TraceMetrics,
    stop: impl std::future::Future<Output = ()>,
) {
    follow_with(switch, config, local, metrics, stop, Wake::Changed(changed)).await
}

/// What makes [`follow_with`] look at the configuration again.
enum Wake {
    /// Every [`POLL_INTERVAL`].
    Poll,
    /// When the configuration's owner says it stored a new snapshot.
    Changed(tokio::sync::watch::Receiver<()>),
}

impl Wake {
    async fn next(&mut self) {
        match self {
            Wake::Poll => tokio::time::sleep(POLL_INTERVAL).await,
            Wake::Changed(rx) => {
                if rx.changed().await.is_err() {
                    // No one will store a snapshot any more: nothing to follow.
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

async fn follow_with(
    switch: Arc<TraceSwitch>,
    config: Arc<ArcSwap<Snapshot>>,
    local: Option<Tracing>,
    metrics: TraceMetrics,
    stop: impl std::future::Future<Output = ()>,
    mut wake: Wake,
) {
    tokio::pin!(stop);
    let mut last: Option<(Option<Tracing>, ProxyIdentity)> = None;
    let mut seen: Option<Arc<Snapshot>> = None;
    loop {
        let snapshot = config.load_full();
        // The same snapshot (a poll with no change): nothing to compare.
        if !seen.as_ref().is_some_and(|s| Arc::ptr_eq(s, &snapshot)) {
            let now = {
                let want = snapshot.config.tracing.clone().or_else(|| local.clone());
                (want, identity_of(&snapshot))
            };
            seen = Some(snapshot);
            if last.as_ref() != Some(&now) {
                let active = now.0.as_ref().filter(|t| !t.endpoint.is_empty()).map(|t| {
                    let (tracer, _task) = Tracer::start_limited(
                        &t.into(),
                        t.max_tag_length(),
                        resource_of(&now.1),
                        metrics.clone(),
                    );
                    Arc::new(Active {
                        tracer,
                        me: now.1.clone(),
                        modes: t.spans.into(),
                        // Environment tags read the proxy's own environment, once per
                        // change of settings.
                        tags: CustomTags::resolve(&t.custom_tags, |name| std::env::var(name).ok()),
                    })
                });
                match &now.0 {
                    Some(t) => tracing::info!(
                        provider = ?t.provider,
                        endpoint = %t.endpoint,
                        sampling = t.sampling_percentage,
                        redis_spans = t.redis_spans,
                        spans = ?t.spans,
                        custom_tags = t.custom_tags.len(),
                        "tracing on"
                    ),
                    None if last.is_some() => tracing::info!("tracing off"),
                    None => {}
                }
                switch.set(active);
                last = Some(now);
            }
        }
        tokio::select! {
            _ = &mut stop => break,
            _ = wake.next() => {}
        }
    }
    switch.set(None);
}
