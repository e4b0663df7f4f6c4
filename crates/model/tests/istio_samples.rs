//! Istio's own sample manifests must validate without errors.

use std::path::PathBuf;

use ferry_model::{Resource, load_paths, validate_documents};

#[test]
fn istio_samples_validate_cleanly() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/istio-samples");
    let (docs, load_errors) = load_paths(&[dir]);
    assert!(load_errors.is_empty(), "{load_errors:?}");
    assert!(docs.len() >= 25, "{} documents", docs.len());
    let report = validate_documents(&docs);
    let errors: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // Only the Gateways are unchecked.
    for w in &report.warnings {
        assert!(
            w.resource.starts_with("Gateway/"),
            "unexpected warning: {w}"
        );
    }
    let virtual_services = report
        .resources
        .iter()
        .filter(|r| matches!(r, Resource::VirtualService(_)))
        .count();
    assert_eq!(virtual_services, 14);
}
