//! Ferry's resource model: manifest loading with file/line positions, Istio traffic and security
//! resource types, Ferry's own resource types ([`ferry`], `ferry.dev`), host resolution, and
//! validation with Istio's rules.

pub mod duration;
pub mod ferry;
pub mod host;
pub mod istio;
pub mod load;
pub mod names;
pub mod resource;
pub mod validate;

pub use duration::Duration;
pub use host::resolve_host;
pub use load::{Document, LineMap, LoadError, expand_lists, load_paths, parse_documents};
pub use resource::{IstioResource, Resource, ResourceId};
pub use validate::{
    Diagnostic, Options, Report, Severity, validate_documents, validate_documents_with,
};
