//! Ferry's control plane. For now it holds the sidecar-injection admission webhook:
//! the HTTPS server that answers the API server's AdmissionReviews with the injection
//! engine of `ferry-inject`, and the `MutatingWebhookConfiguration` that registers it.

pub mod webhook;
