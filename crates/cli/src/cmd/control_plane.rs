//! `ferry control-plane`: watches a directory of manifests (workloads, Services, Istio
//! resources), or with `--kube` a Kubernetes API server, compiles each proxy's configuration
//! and streams it to the proxies.

use anyhow::Context;
use ferry_control::plane::{self, PlaneOptions};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `ferry control-plane`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory of multi-document YAML/JSON manifests, watched for changes.
    #[arg(long, value_name = "DIR", required_unless_present = "kube")]
    config_dir: Option<PathBuf>,
    /// Watch the Kubernetes API instead (in-cluster configuration, or the kubeconfig of
    /// `KUBECONFIG` / `~/.kube/config`).
    #[arg(long, conflicts_with = "config_dir")]
    kube: bool,
    /// Address of the configuration stream (gRPC).
    #[arg(long, default_value = "0.0.0.0:15010")]
    grpc_addr: SocketAddr,
    /// Monitoring address (`/healthz`, `/ready`, `/metrics`, `/debug/proxy-status`,
    /// `/debug/config_dump?proxy=ns/pod`); `off` to disable.
    #[arg(long, default_value = "0.0.0.0:15014")]
    monitoring_addr: String,
    /// DNS domain of the cluster.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Namespace whose policies apply mesh-wide.
    #[arg(long, default_value = "istio-system")]
    root_namespace: String,
    /// Network pod addresses come from when manifests do not give them.
    #[arg(long, default_value = "198.18.0.0/16")]
    pod_cidr: String,
}

fn cidr(text: &str) -> anyhow::Result<(Ipv4Addr, u8)> {
    let (ip, bits) = text
        .split_once('/')
        .with_context(|| format!("{text}: expected an IPv4 CIDR like 198.18.0.0/16"))?;
    let ip: Ipv4Addr = ip.parse().with_context(|| format!("{text}: bad address"))?;
    let bits: u8 = bits
        .parse()
        .ok()
        .filter(|b| *b <= 30)
        .with_context(|| format!("{text}: prefix must be 0..30"))?;
    Ok((ip, bits))
}

/// Runs `ferry control-plane`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let config_dir = args.config_dir.unwrap_or_default();
    anyhow::ensure!(
        args.kube || config_dir.is_dir(),
        "{} is not a directory",
        config_dir.display()
    );
    let monitoring = match args.monitoring_addr.as_str() {
        "off" => None,
        addr => Some(
            addr.parse()
                .with_context(|| format!("--monitoring-addr {addr}"))?,
        ),
    };
    let options = PlaneOptions {
        config_dir,
        kube: args.kube,
        grpc: args.grpc_addr,
        monitoring,
        cluster_domain: args.cluster_domain,
        root_namespace: args.root_namespace,
        pod_network: cidr(&args.pod_cidr)?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("ferry-control")
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        plane::run(options, shutdown, |bound| {
            tracing::info!(grpc = %bound.grpc, monitoring = ?bound.monitoring, "control plane listening");
        })
        .await
    })?;
    Ok(ExitCode::SUCCESS)
}
