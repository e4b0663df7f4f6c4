//! The listeners: HTTPS (HTTP/1.1 and HTTP/2 by ALPN) for the API server and the probes,
//! and optionally plain HTTP for `/metrics`. Binding is separate from serving, so callers
//! (and tests) can bind port 0 and learn the address before the first request.
//! Shutdown stops accepting, tells open connections to finish (HTTP/2 GOAWAY, HTTP/1.1
//! close after the response in flight) and waits for them up to a grace period.

use crate::webhook::metrics::WebhookMetrics;
use crate::webhook::routes::{Webhook, WebhookResponse};
use crate::webhook::settings::WebhookSettings;
use crate::webhook::tls::{self, CertReloader, ReloadOutcome, TlsError};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The serving certificate could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A bound, not yet serving, webhook server.
pub struct WebhookServer {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    acceptor: TlsAcceptor,
    reloader: Arc<CertReloader>,
    handler: Arc<Webhook>,
    settings: WebhookSettings,
}

impl std::fmt::Debug for WebhookServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookServer")
            .field("listener", &self.listener)
            .field("metrics_listener", &self.metrics_listener)
            .field("reloader", &self.reloader)
            .finish_non_exhaustive()
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

impl WebhookServer {
    /// Loads the certificate and binds the listeners. Nothing is served until [`Self::serve`].
    pub async fn bind(settings: WebhookSettings) -> Result<Self, ServerError> {
        let provider = tls::provider();
        let reloader = Arc::new(CertReloader::load(
            &settings.tls_cert,
            &settings.tls_key,
            provider.clone(),
        )?);
        let config = tls::server_config(reloader.clone(), provider)?;
        let listener = bind(settings.listen).await?;
        let metrics_listener = match settings.metrics_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let handler = Arc::new(Webhook::new(
            settings.inject.clone(),
            Arc::new(WebhookMetrics::new()),
        ));
        Ok(Self {
            listener,
            metrics_listener,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            reloader,
            handler,
            settings,
        })
    }

    /// The bound HTTPS address (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.settings.listen)
    }

    /// The bound plain-HTTP metrics address, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The request handler, e.g. to read its metrics.
    pub fn handler(&self) -> Arc<Webhook> {
        self.handler.clone()
    }

    /// Serves until `shutdown` completes, then drains open connections.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let Self {
            listener,
            metrics_listener,
            acceptor,
            reloader,
            handler,
            settings,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let poller = tokio::spawn(poll_certificate(
            reloader,
            settings.cert_poll_interval,
            handler.metrics().clone(),
        ));
        let metrics_server = metrics_listener
            .map(|l| tokio::spawn(serve_metrics(l, handler.clone(), stop_rx.clone())));
        handler.set_ready(true);
        tracing::info!(addr = %listener.local_addr().unwrap_or(settings.listen), "webhook serving");

        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _peer)) => {
                        connections.spawn(connection(
                            tcp,
                            acceptor.clone(),
                            handler.clone(),
                            settings.handshake_timeout,
                            stop_rx.clone(),
                        ));
                    }
                    Err(e) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        handler.metrics().error("accept");
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
            while connections.try_join_next().is_some() {}
        }

        tracing::info!(open = connections.len(), "webhook shutting down");
        handler.set_ready(false);
        drop(listener);
        // Receivers that are gone do not matter: their connections have ended.
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(settings.shutdown_grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                open = connections.len(),
                "connections still open after the grace period; closing them"
            );
            connections.abort_all();
        }
        poller.abort();
        if let Some(task) = metrics_server {
            let _ = task.await;
        }
    }
}

/// Resolves when shutdown was asked for (or the sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn connection(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    handler: Arc<Webhook>,
    handshake_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    // Small requests and responses: do not wait to coalesce segments.
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            handler.metrics().error("tls_handshake");
            tracing::debug!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            handler.metrics().error("tls_handshake");
            tracing::debug!("TLS handshake timed out");
            return;
        }
    };
    let service = service_fn(move |req: Request<Incoming>| {
        let handler = handler.clone();
        async move { Ok::<WebhookResponse, Infallible>(handler.handle(req).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error during shutdown");
            }
        }
    }
}

fn metrics_route(handler: &Webhook, req: &Request<Incoming>) -> WebhookResponse {
    if req.method() == Method::GET && req.uri().path() == "/metrics" {
        return handler.metrics_response();
    }
    let mut resp = Response::new(Full::new(Bytes::from_static(b"only GET /metrics here\n")));
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp
}

async fn serve_metrics(
    listener: TcpListener,
    handler: Arc<Webhook>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (tcp, _) = tokio::select! {
            () = stopped(&mut stop) => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let resp = metrics_route(&handler, &req);
                async move { Ok::<WebhookResponse, Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

async fn poll_certificate(
    reloader: Arc<CertReloader>,
    interval: Duration,
    metrics: Arc<WebhookMetrics>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick.tick().await;
    loop {
        tick.tick().await;
        let r = reloader.clone();
        match tokio::task::spawn_blocking(move || r.reload_if_changed()).await {
            Ok(ReloadOutcome::Unchanged) => {}
            Ok(ReloadOutcome::Reloaded) => tracing::info!("serving certificate reloaded"),
            Ok(ReloadOutcome::Rejected(e)) => {
                metrics.error("certificate_reload");
                tracing::warn!(error = %e, "new serving certificate refused; keeping the old one");
            }
            Err(e) => tracing::warn!(error = %e, "certificate check failed"),
        }
    }
}
