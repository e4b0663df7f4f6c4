//! `ferry`: the command-line entry point that wires Ferry's crates together.

mod cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// mimalloc instead of glibc's allocator: the control plane rebuilds and frees a mesh's worth
/// of small objects on every change, which glibc's malloc spent about half its time on
/// (see bench/control-plane). Built to commit memory lazily (`.cargo/config.toml`), so a
/// sidecar's idle RSS is lower than with glibc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Run the whole mesh on this machine (root): pods as network namespaces, until Ctrl-C.
    Up(cmd::up::UpArgs),
    /// Show the pods of the mesh `ferry up` runs.
    Status(cmd::up::StatusArgs),
    /// Run a command inside a pod's network namespace (`ferry exec POD -- CMD`).
    Exec(cmd::up::ExecArgs),
    /// Print a pod's container log.
    Logs(cmd::up::LogsArgs),
    /// Stop the mesh `ferry up` runs and remove everything it made (or a crashed run left).
    Down(cmd::up::DownArgs),
    /// Print Ferry's Kubernetes installation (or apply it with `--apply`).
    Install(cmd::install::InstallArgs),
    /// Print what removing Ferry from a cluster deletes (or delete it with `--apply`).
    Uninstall(cmd::install::UninstallArgs),
    /// The mesh's certificate authority: show the root, issue a workload certificate (debugging).
    Ca(cmd::ca::Args),
    /// Show the client's and the control plane's versions.
    Version(cmd::version::Args),
    /// Receive OTLP/gRPC traces and print them (a collector for trying tracing locally).
    TraceCollector(cmd::trace_collector::Args),
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
        Command::Up(args) => cmd::up::up(args),
        Command::Status(args) => cmd::up::status(args),
        Command::Exec(args) => cmd::up::exec(args),
        Command::Logs(args) => cmd::up::logs(args),
        Command::Down(args) => cmd::up::down(args),
        Command::Install(args) => cmd::install::install(args),
        Command::Uninstall(args) => cmd::install::uninstall(args),
        Command::Ca(args) => cmd::ca::run(args),
        Command::Version(args) => cmd::version::run(args),
        Command::TraceCollector(args) => cmd::trace_collector::run(args),
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
