//! `ferry webhook`: runs the sidecar-injection admission webhook (HTTPS), and
//! `ferry webhook config`: prints the `MutatingWebhookConfiguration` that registers it.

use super::mesh::MeshArgs;
use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use ferry_control::webhook::settings::{DEFAULT_LISTEN, DEFAULT_METRICS_LISTEN};
use ferry_control::webhook::{Registration, WebhookServer, WebhookSettings};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `ferry webhook`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<WebhookCommand>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum WebhookCommand {
    /// Print the MutatingWebhookConfiguration that points the API server at the webhook.
    Config(ConfigArgs),
}

/// Flags of the server.
#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// HTTPS address for AdmissionReviews (`/inject`), `/healthz`, `/ready` and `/metrics`.
    #[arg(long, default_value = DEFAULT_LISTEN, env = "FERRY_WEBHOOK_LISTEN")]
    listen: SocketAddr,
    /// Plain-HTTP address that serves only `/metrics`; `off` to serve metrics on HTTPS only.
    #[arg(long, default_value = DEFAULT_METRICS_LISTEN, value_parser = parse_optional_addr)]
    metrics_listen: OptionalAddr,
    /// PEM certificate chain served to the API server; reloaded when the file changes.
    #[arg(long, required = true, env = "FERRY_WEBHOOK_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of that certificate; reloaded when the file changes.
    #[arg(long, required = true, env = "FERRY_WEBHOOK_TLS_KEY")]
    tls_key: Option<PathBuf>,
    #[command(flatten)]
    mesh: MeshArgs,
}

/// A listener address, or none.
#[derive(Debug, Clone, Copy)]
struct OptionalAddr(Option<SocketAddr>);

fn parse_optional_addr(s: &str) -> Result<OptionalAddr, String> {
    if s.is_empty() || s.eq_ignore_ascii_case("off") {
        return Ok(OptionalAddr(None));
    }
    s.parse()
        .map(|a| OptionalAddr(Some(a)))
        .map_err(|e| format!("{e} (expected host:port or `off`)"))
}

/// Output format of `ferry webhook config`.
#[derive(ValueEnum, Debug, Clone, Copy)]
enum Output {
    Yaml,
    Json,
}

/// Flags of `ferry webhook config`.
#[derive(clap::Args, Debug)]
struct ConfigArgs {
    /// PEM file of the CA that signed the webhook's serving certificate (becomes caBundle).
    #[arg(long)]
    ca_bundle: PathBuf,
    /// Namespace of the webhook's Service.
    #[arg(long, default_value = "ferry-system")]
    namespace: String,
    /// Name of the webhook's Service.
    #[arg(long, default_value = "ferry-control")]
    service: String,
    /// Request path on the Service.
    #[arg(long, default_value = "/inject")]
    path: String,
    /// Control-plane revision (non-default revisions register only the `rev.` entries).
    #[arg(long, default_value = "default")]
    revision: String,
    /// Also inject in namespaces that carry no injection label (Istio's `auto.` entry).
    #[arg(long)]
    enable_namespaces_by_default: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "yaml")]
    output: Output,
}

/// Runs `ferry webhook` or `ferry webhook config`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(WebhookCommand::Config(config)) => print_config(config),
        None => serve(args.serve),
    }
}

fn print_config(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let registration = Registration {
        namespace: args.namespace,
        service: args.service,
        path: args.path,
        revision: args.revision,
        enable_namespaces_by_default: args.enable_namespaces_by_default,
        ..Registration::default()
    };
    let config = registration.render_from_file(&args.ca_bundle)?;
    let text = match args.output {
        Output::Yaml => serde_yaml_ng::to_string(&config).context("rendering YAML")?,
        Output::Json => {
            let mut s = serde_json::to_string_pretty(&config).context("rendering JSON")?;
            s.push('\n');
            s
        }
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let (Some(tls_cert), Some(tls_key)) = (args.tls_cert, args.tls_key) else {
        anyhow::bail!("--tls-cert and --tls-key are required");
    };
    // Another subcommand may have set a subscriber already; keep it then.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();

    let mut settings = WebhookSettings::new(args.listen, tls_cert, tls_key);
    settings.metrics_listen = args.metrics_listen.0;
    settings.inject = args.mesh.to_config();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ferry-webhook")
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        let server = WebhookServer::bind(settings).await?;
        tracing::info!(
            https = %server.local_addr(),
            metrics = ?server.metrics_addr(),
            "webhook listening"
        );
        server.serve(shutdown).await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Registers for Ctrl-C and SIGTERM now (so a signal that arrives while the server is
/// still starting is not lost) and returns a future that resolves on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}
