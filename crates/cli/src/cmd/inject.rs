//! `ferry inject`: injects the sidecar into workload manifests offline, like
//! `istioctl kube-inject`. Namespace labels are unknown offline, so every pod is injected
//! unless it opts out (`sidecar.istio.io/inject: "false"`) or cannot be (hostNetwork,
//! system namespaces); each skip is explained on stderr.

use super::mesh::MeshArgs;
use anyhow::Context;
use ferry_inject::manifest::{self, Note};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `ferry inject`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Manifest to inject: a YAML/JSON file (multi-document) or `-` for stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE|-")]
    pub filename: PathBuf,
    /// Write the result to FILE instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print nothing on stderr about injected or skipped workloads.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub mesh: MeshArgs,
}

/// Runs `ferry inject`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = args.mesh.to_config();
    let (documents, load_errors) = ferry_model::load_paths(std::slice::from_ref(&args.filename));
    if !load_errors.is_empty() {
        for err in &load_errors {
            eprintln!("error: {err}");
        }
        return Ok(ExitCode::FAILURE);
    }
    let mut out = String::new();
    let mut failed = false;
    for doc in &documents {
        match manifest::inject_document(&doc.value, &cfg) {
            Ok((value, notes)) => {
                if !args.quiet {
                    for note in notes {
                        match note {
                            Note::Injected(id) => eprintln!("injected: {id}"),
                            Note::Skipped(msg) => eprintln!("{msg}"),
                            Note::Warning(msg) => eprintln!("warning: {msg}"),
                        }
                    }
                }
                let yaml = serde_yaml_ng::to_string(&value).with_context(|| {
                    format!("{}: cannot write document {}", doc.source, doc.index)
                })?;
                out.push_str(&yaml);
                out.push_str("---\n");
            }
            Err(err) => {
                failed = true;
                eprintln!("error: {}:{}: {err}", doc.source, doc.line);
            }
        }
    }
    if failed {
        return Ok(ExitCode::FAILURE);
    }
    match &args.output {
        Some(path) => {
            std::fs::write(path, out).with_context(|| format!("cannot write {}", path.display()))?
        }
        None => std::io::stdout()
            .lock()
            .write_all(out.as_bytes())
            .context("cannot write to stdout")?,
    }
    Ok(ExitCode::SUCCESS)
}
