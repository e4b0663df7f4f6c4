//! The sidecar-injection admission webhook.
//!
//! - [`settings`]: what the server is told at start (addresses, certificate files, injection settings).
//! - [`tls`]: the serving certificate, loaded from PEM files and reloaded when they change.
//! - [`routes`]: one HTTP request in, one response out (`/inject`, `/healthz`, `/ready`, `/metrics`).
//! - [`metrics`]: the webhook's Prometheus metrics.
//! - [`server`]: listeners, TLS handshakes, HTTP/1.1 and HTTP/2 connections, graceful shutdown.
//! - [`registration`]: the `MutatingWebhookConfiguration` that points the API server at the webhook.
//!
//! Ports: HTTPS (default 15017) serves `POST /inject` and `/inject/cluster/<id>/net/<network>`,
//! `GET /healthz`, `GET /ready` and `GET /metrics`; the optional plain-HTTP listener (default
//! 15014 in `ferry webhook`) serves only `GET /metrics`, for scrapers without the CA.
//! Bad requests: wrong or missing `Content-Type` → 415, body over
//! [`ferry_inject::admission::MAX_BODY_BYTES`] → 413, anything else unreadable → 400, each with
//! a plain-text message; an engine panic is caught and answered with 500.

pub mod metrics;
pub mod registration;
pub mod routes;
pub mod server;
pub mod settings;
pub mod tls;

pub use metrics::WebhookMetrics;
pub use registration::{Registration, RegistrationError};
pub use routes::Webhook;
pub use server::{ServerError, WebhookServer};
pub use settings::WebhookSettings;
pub use tls::{CertReloader, ReloadOutcome, TlsError};
