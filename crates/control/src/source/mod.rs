//! Sources of the mesh and the pure logic that turns manifests into the registry.
//!
//! - [`files`]: the manifest directory (`--config-dir`), read into a store update.
//! - [`kube`]: a Kubernetes API server's objects, watched into a store update.
//! - [`watch`]: polling that directory and reloading it on change (debounced).
//! - [`expand`]: workloads into pods as Kubernetes' controllers would, and injection.
//! - [`endpoints`]: a Service's ports and endpoints from its selector or EndpointSlices.
//! - [`vip`]: addresses for services that declare no cluster IP.
//! - [`build`]: the registry assembled from the store's objects.

pub mod build;
pub mod endpoints;
pub mod expand;
pub mod files;
pub mod kube;
pub mod vip;
pub mod watch;

pub use build::MeshPod;
pub use files::{FileSource, Loaded};
pub use vip::{VipRange, allocate_vips};
pub use watch::{FilesMetrics, WatchOptions, watch, watch_counted, watch_with};
