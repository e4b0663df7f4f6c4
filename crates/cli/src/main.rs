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
    Webhook(Box<cmd::webhook::Args>),
    /// Run the sidecar proxy, or forward one address to another on the same data path.
    Proxy(Box<cmd::proxy::Args>),
    /// Run the control plane: watch a manifest directory and stream each proxy's configuration.
    ControlPlane(cmd::control_plane::Args),
    /// List the proxies connected to the control plane and whether they are in sync.
    ProxyStatus(cmd::proxy_status::StatusArgs),
    /// Show one proxy's configuration (compiled by the control plane, or held by the proxy).
    ProxyConfig(cmd::proxy_status::ConfigArgs),
    /// Install the pod's traffic redirect rules (what the injected `ferry-init` runs).
    ProxyInit(cmd::proxy_init::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => cmd::validate::run(args),
        Command::Inject(args) => cmd::inject::run(args),
        Command::Webhook(args) => cmd::webhook::run(*args),
        Command::ProxyInit(args) => cmd::proxy_init::run(args),
        Command::Proxy(args) => cmd::proxy::run(*args),
        Command::ControlPlane(args) => cmd::control_plane::run(args),
        Command::ProxyStatus(args) => cmd::proxy_status::status(args),
        Command::ProxyConfig(args) => cmd::proxy_status::config(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
