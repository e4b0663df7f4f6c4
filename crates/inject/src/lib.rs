//! Ferry's sidecar injection engine. Pure functions, no I/O: the admission webhook,
//! `ferry inject` and the local runtime all call the same code, so they agree.
//!
//! - [`webhooks`]: which webhook entries the API server calls (stage A, label selectors).
//! - [`decision`]: whether a pod that reached the injector gets a sidecar (stage B).
//! - [`mutate`]: what injection adds to a pod, and how an earlier injection is removed.
//! - [`manifest`]: injection into workload manifests (`ferry inject -f`).
//! - [`admission`]: AdmissionReview in, AdmissionReview with a JSON patch out.

pub mod admission;
pub mod annotations;
pub mod config;
pub mod decision;
pub mod manifest;
pub mod mutate;
pub mod probes;
pub mod redirect;
pub mod selector;
pub mod status;
pub mod webhooks;
pub mod workload;

pub use config::{InjectConfig, InjectionPolicy};
pub use decision::{Decision, SkipReason};
