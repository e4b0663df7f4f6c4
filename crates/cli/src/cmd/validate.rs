//! `ferry validate`: checks Istio traffic manifests (VirtualService, DestinationRule,
//! PeerAuthentication) and Kubernetes workloads offline, listing every error with file, line,
//! resource and field.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use ferry_model::validate::{Diagnostic, Options};

/// Output formats of `ferry validate`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One line per finding, then a summary.
    Text,
    /// A JSON object with `errors`, `warnings` and `resources`.
    Json,
}

/// Arguments of `ferry validate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Manifests to check: files, directories (*.yaml, *.yml, *.json, recursively) or `-` for stdin.
    #[arg(short = 'f', long = "filename", value_name = "PATH|-", required = true)]
    pub filenames: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// Cluster DNS domain used to resolve short host names.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
}

/// Runs `ferry validate`: exit 0 without errors (warnings go to stderr), 1 with errors.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (docs, load_errors) = ferry_model::load_paths(&args.filenames);
    let options = Options {
        cluster_domain: args.cluster_domain,
    };
    let report = ferry_model::validate_documents_with(&docs, &options);
    let mut errors: Vec<Diagnostic> = load_errors.iter().map(Diagnostic::from).collect();
    errors.extend(report.errors);
    let warnings = report.warnings;
    let resources = report.resources.len();
    let summary = format!(
        "{} resource{} checked in {} document{}: {} error{}, {} warning{}",
        resources + count_failed(&errors),
        plural(resources + count_failed(&errors)),
        docs.len(),
        plural(docs.len()),
        errors.len(),
        plural(errors.len()),
        warnings.len(),
        plural(warnings.len()),
    );
    match args.output {
        Format::Text => {
            let mut err = std::io::stderr().lock();
            for w in &warnings {
                writeln!(err, "warning: {w}")?;
            }
            let mut out = std::io::stdout().lock();
            for e in &errors {
                writeln!(out, "error: {e}")?;
            }
            writeln!(out, "{summary}")?;
        }
        Format::Json => {
            let body = serde_json::json!({
                "errors": errors,
                "warnings": warnings,
                "resources": resources,
                "summary": summary,
            });
            println!("{}", serde_json::to_string_pretty(&body)?);
        }
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Resources that had errors (counted once each).
fn count_failed(errors: &[Diagnostic]) -> usize {
    let mut seen = std::collections::HashSet::new();
    errors
        .iter()
        .filter(|e| !e.resource.is_empty())
        .filter(|e| seen.insert((e.source.as_str(), e.resource.as_str())))
        .count()
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
