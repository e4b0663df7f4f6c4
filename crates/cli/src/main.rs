//! `ferry`: the command-line entry point that wires Ferry's crates together.

mod cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Ferry: a sidecar service mesh that reads Istio's APIs.
#[derive(Parser, Debug)]
#[command(name = "ferry", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate Istio traffic manifests (VirtualService, DestinationRule, PeerAuthentication) offline.
    Validate(cmd::validate::Args),
    /// Inject the Ferry sidecar into workload manifests (like `istioctl kube-inject`).
    Inject(cmd::inject::Args),
    /// Run the sidecar-injection admission webhook, or print its configuration.
    Webhook(cmd::webhook::Args),
    /// Run the sidecar proxy, or forward one address to another on the same data path.
    Proxy(cmd::proxy::Args),
    /// Install the pod's traffic redirect rules (what the injected `ferry-init` runs).
    ProxyInit(cmd::proxy_init::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => cmd::validate::run(args),
        Command::Inject(args) => cmd::inject::run(args),
        Command::Webhook(args) => cmd::webhook::run(args),
        Command::ProxyInit(args) => cmd::proxy_init::run(args),
        Command::Proxy(args) => cmd::proxy::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
