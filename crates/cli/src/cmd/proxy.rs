//! `ferry proxy`: the sidecar proxy (what the injected `ferry-proxy` container runs), its
//! explicit `forward` mode, and the `drain`/`wait` helpers of the container's lifecycle hooks.

use anyhow::Context;
use clap::Subcommand;
use ferry_proxy::admin::status::{StatusConfig, StatusEnv};
use ferry_proxy::identity::IdentityOptions;
use ferry_proxy::listener::Direction;
use ferry_proxy::listener::orig_dst::{FixedDst, OriginalDst, SocketOriginalDst};
use ferry_proxy::server::{self, Options};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// Arguments of `ferry proxy`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<ProxyCommand>,
    #[command(flatten)]
    sidecar: SidecarArgs,
}

#[derive(Subcommand, Debug)]
enum ProxyCommand {
    /// Run as a pod's sidecar: capture listeners on 15001/15006 (the default).
    Sidecar(SidecarArgs),
    /// Forward LISTEN to UPSTREAM on the same data path, without transparent capture.
    Forward(ForwardArgs),
    /// Ask the local proxy to drain (the native sidecar's preStop hook).
    Drain(AdminArgs),
    /// Wait until the local proxy is ready (the classic sidecar's postStart hook).
    Wait(WaitArgs),
}

/// Settings shared by the proxy modes.
#[derive(clap::Args, Debug, Clone)]
struct CommonArgs {
    /// Static configuration file (services, endpoints, identity), reloaded when it changes.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Prometheus metrics address (`/stats/prometheus`); `off` to disable.
    #[arg(long, default_value = "0.0.0.0:15090", value_parser = optional_addr)]
    metrics_addr: OptionalAddr,
    /// Readiness address (`/healthz/ready`); `off` to disable.
    #[arg(long, default_value = "0.0.0.0:15021", value_parser = optional_addr)]
    health_addr: OptionalAddr,
    /// Admin API address (`/config_dump`, `/clusters`, `/stats`, `/logging`, `/drain`,
    /// `/quitquitquit`); keep it on loopback; `off` to disable.
    #[arg(long, default_value = "127.0.0.1:15000", value_parser = optional_addr)]
    admin_addr: OptionalAddr,
    /// Status address: merged metrics (`/stats/prometheus`), `/healthz/ready` and the
    /// application probes (`/app-health/...`) read from `ISTIO_KUBE_APP_PROBERS`; `off` to
    /// disable.
    #[arg(long, default_value = "0.0.0.0:15020", value_parser = optional_addr)]
    status_addr: OptionalAddr,
    /// Traffic worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Log level or filter (`warning`, `info`, `ferry_proxy=debug`).
    #[arg(long, default_value = "warning")]
    log_level: String,
    /// Follow this control plane's configuration stream (`host:port`, gRPC: 15010 in
    /// plaintext, or 15012 over TLS) instead of (or after) a static file. It runs over TLS
    /// when it is the `--ca-addr` or with `--control-plane-tls`, the control plane's
    /// certificate verified against `--ca-root-cert` and `--ca-server-name`.
    #[arg(long, value_name = "ADDR", env = "FERRY_CONTROL_PLANE")]
    control_plane: Option<String>,
    /// Where the mesh's control plane is (`host:port`, its TLS port 15012), as injection sets
    /// it from the mesh's `controlPlaneAddress` (Istio's `discoveryAddress`): the proxy
    /// follows the configuration stream and gets its certificate there, over TLS, as if
    /// `--control-plane` and `--ca-addr` both named it. Ignored when either of them is given
    /// (`ferry up` gives them), so an explicit setting is never half overridden.
    #[arg(long, value_name = "ADDR", env = "FERRY_DISCOVERY_ADDRESS")]
    discovery_address: Option<String>,
    /// With `--control-plane`: keep the last configuration the proxy applied (validated and
    /// ACKed, never a rejected one) in FILE, written atomically (mode 0600), and apply it at
    /// start-up before the control plane answers, so a proxy that restarts while the control
    /// plane is down keeps serving, and is ready, with the configuration it had. A file of
    /// another pod, or a damaged one, is logged and ignored. Put it on a volume that
    /// survives a container restart but not the pod (the injected sidecar uses the
    /// `ferry-data` emptyDir). Ignored without `--control-plane`.
    #[arg(long, value_name = "FILE", env = "FERRY_CONFIG_CACHE")]
    config_cache: Option<PathBuf>,
    /// Follow the configuration stream over TLS even when `--control-plane` is not the
    /// `--ca-addr`.
    #[arg(long, env = "FERRY_CONTROL_PLANE_TLS")]
    control_plane_tls: bool,
    /// This proxy's pod, as the injected Downward-API environment says.
    #[arg(long, env = "POD_NAME", default_value = "")]
    pod: String,
    /// This proxy's namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// This proxy's workload.
    #[arg(long, env = "ISTIO_META_WORKLOAD_NAME", default_value = "")]
    workload: String,
    /// This proxy's service account.
    #[arg(long, env = "SERVICE_ACCOUNT", default_value = "")]
    service_account: String,
    /// This proxy's pod IP.
    #[arg(long, env = "INSTANCE_IP")]
    pod_ip: Option<std::net::IpAddr>,
    #[command(flatten)]
    identity: IdentityArgs,
    #[command(flatten)]
    tracing: super::proxy_tracing::TracingArgs,
}

/// Workload identity and mutual TLS.
#[derive(clap::Args, Debug, Clone)]
struct IdentityArgs {
    /// The CA's certificate API (`host:port`, gRPC over TLS, 15012). With it the proxy gets a
    /// certificate for `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`, renews
    /// it at half its lifetime, originates mutual TLS toward sidecars and enforces
    /// PeerAuthentication on inbound ports; without it everything stays plaintext. Injected
    /// sidecars get it (and `--control-plane`) from `--discovery-address` (Istio's
    /// `CA_ADDR`, which injection also sets, is not read).
    #[arg(long, value_name = "ADDR", env = "FERRY_CA_ADDR")]
    ca_addr: Option<String>,
    /// File with the token proving the service account (a projected token with audience
    /// `istio-ca`, or the per-pod token `ferry up` writes); re-read at every renewal, and
    /// sent on the configuration stream over TLS while the proxy has no certificate yet.
    #[arg(
        long,
        value_name = "FILE",
        env = "FERRY_CA_TOKEN_FILE",
        default_value = "/var/run/secrets/tokens/istio-token"
    )]
    ca_token_file: PathBuf,
    /// PEM file of the mesh root(s): verifies the CA and is trusted for peers.
    #[arg(
        long,
        value_name = "FILE",
        env = "FERRY_CA_ROOT_CERT",
        default_value = "/var/run/secrets/ferry/root-cert.pem"
    )]
    ca_root_cert: PathBuf,
    /// The name the CA's serving certificate must carry; default: the host of `--ca-addr`
    /// (`istiod.istio-system.svc` when that is an IP address).
    #[arg(long, default_value = "")]
    ca_server_name: String,
    /// Trust domain of the mesh.
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// Certificate lifetime to ask for, in seconds (0: the CA's default, 24 h).
    #[arg(long, default_value_t = 0)]
    cert_ttl_secs: u64,
}

#[derive(clap::Args, Debug, Clone)]
struct SidecarArgs {
    /// Outbound capture listener.
    #[arg(long, default_value = "0.0.0.0:15001")]
    outbound: SocketAddr,
    /// Inbound capture listener.
    #[arg(long, default_value = "0.0.0.0:15006")]
    inbound: SocketAddr,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(clap::Args, Debug)]
struct ForwardArgs {
    /// Address to accept connections on.
    listen: SocketAddr,
    /// Address every connection is forwarded to.
    upstream: SocketAddr,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(clap::Args, Debug)]
struct AdminArgs {
    /// The proxy's admin address.
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: SocketAddr,
}

#[derive(clap::Args, Debug)]
struct WaitArgs {
    /// The proxy's readiness address.
    #[arg(long, default_value = "127.0.0.1:15021")]
    health: SocketAddr,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

#[derive(Debug, Clone, Copy)]
struct OptionalAddr(Option<SocketAddr>);

fn optional_addr(s: &str) -> Result<OptionalAddr, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(OptionalAddr(None));
    }
    s.parse()
        .map(|a| OptionalAddr(Some(a)))
        .map_err(|e| format!("{e} (expected host:port or `off`)"))
}

/// Runs `ferry proxy`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        None => sidecar(args.sidecar),
        Some(ProxyCommand::Sidecar(s)) => sidecar(s),
        Some(ProxyCommand::Forward(f)) => {
            let listeners = vec![(f.listen, Direction::Outbound)];
            serve(f.common, listeners, Arc::new(FixedDst(f.upstream)))
        }
        Some(ProxyCommand::Drain(a)) => {
            let status = http_request(a.admin, "POST", "/drain")?;
            anyhow::ensure!(
                status == 200,
                "the proxy at {} answered {status} to /drain",
                a.admin
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(ProxyCommand::Wait(w)) => wait(w),
    }
}

fn sidecar(s: SidecarArgs) -> anyhow::Result<ExitCode> {
    let listeners = vec![
        (s.outbound, Direction::Outbound),
        (s.inbound, Direction::Inbound),
    ];
    serve(s.common, listeners, Arc::new(SocketOriginalDst))
}

/// Maps Istio's level names onto tracing's.
fn filter(level: &str) -> Result<EnvFilter, String> {
    let level = match level {
        "warning" => "warn",
        "critical" => "error",
        other => other,
    };
    EnvFilter::try_new(level).map_err(|e| format!("invalid log level {level:?}: {e}"))
}

/// `--discovery-address` in place of `--control-plane` and `--ca-addr` when neither is
/// given (blank values count as not given).
fn resolve_discovery(common: &mut CommonArgs) {
    let given = |a: &Option<String>| a.as_deref().is_some_and(|a| !a.trim().is_empty());
    let Some(addr) = common
        .discovery_address
        .clone()
        .filter(|a| !a.trim().is_empty())
    else {
        return;
    };
    if given(&common.control_plane) || given(&common.identity.ca_addr) {
        tracing::info!(
            "--discovery-address {addr} is not used: --control-plane or --ca-addr is given"
        );
        return;
    }
    common.control_plane = Some(addr.clone());
    common.identity.ca_addr = Some(addr);
}

fn serve(
    mut common: CommonArgs,
    listeners: Vec<(SocketAddr, Direction)>,
    orig_dst: Arc<dyn OriginalDst>,
) -> anyhow::Result<ExitCode> {
    let (layer, handle) = tracing_subscriber::reload::Layer::new(
        filter(&common.log_level).map_err(anyhow::Error::msg)?,
    );
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .try_init();
    let set_log_level: ferry_proxy::admin::LogLevelSetter =
        Box::new(move |level| handle.reload(filter(level)?).map_err(|e| e.to_string()));
    // The injected environment: original probes, the app's scrape settings, the pod IP.
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let env = StatusEnv {
        probers: var(ferry_inject::probes::PROBERS_ENV),
        prometheus: var(ferry_inject::mutate::PROMETHEUS_ENV),
        instance_ip: var("INSTANCE_IP"),
    };
    let (status_config, warnings) = StatusConfig::from_env(&env);
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    resolve_discovery(&mut common);
    let identity = identity_options(&common);
    let stream_tls = common
        .control_plane
        .as_deref()
        .and_then(|addr| control_plane_tls(&common, addr));
    if let (None, Some(path)) = (&common.control_plane, &common.config_cache) {
        tracing::info!(
            "--config-cache {} is not used: there is no --control-plane",
            path.display()
        );
    }
    if let (Some(addr), Some(tls)) = (&common.control_plane, &stream_tls) {
        tracing::info!(
            "configuration stream over TLS to {addr} (expecting {}; proving this proxy's identity with its certificate, or its token until it has one)",
            tls.server_name
        );
    }
    let options = Options {
        listeners,
        metrics: common.metrics_addr.0,
        health: common.health_addr.0,
        admin: common.admin_addr.0,
        status: common.status_addr.0,
        status_config,
        config_file: common.config.clone(),
        worker_threads: common.workers.max(1),
        set_log_level: Some(set_log_level),
        log_level: Some(common.log_level.clone()),
        control_plane: common.control_plane.clone().map(|addr| {
            let info = ferry_proxy::discovery::ProxyInfo {
                pod: common.pod.clone(),
                namespace: common.namespace.clone(),
                workload: common.workload.clone(),
                service_account: common.service_account.clone(),
                ip: common.pod_ip,
            };
            (addr, info)
        }),
        control_plane_tls: stream_tls,
        config_cache: common.config_cache.clone(),
        identity,
        certificate_source: None,
        tracing: common
            .tracing
            .settings(var("PROXY_CONFIG").as_deref())
            .context("tracing flags")?,
    };
    let running = server::start(options, orig_dst).context("cannot start the proxy")?;
    if let Some(id) = &running.identity {
        tracing::info!(
            "workload identity on; mutual TLS once the first certificate arrives ({id:?})"
        );
    }
    for addr in &running.listeners {
        tracing::info!("listening on {addr}");
    }
    for (door, addr) in [
        ("metrics", running.metrics),
        ("readiness", running.health),
        ("admin", running.admin),
        ("status", running.status),
    ] {
        if let Some(addr) = addr {
            tracing::info!("{door} on {addr}");
        }
    }
    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal runtime")?;
    let lifecycle = running.lifecycle.clone();
    signals.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = lifecycle.reached(ferry_proxy::lifecycle::Phase::Draining) => {}
        }
        Ok::<_, std::io::Error>(())
    })?;
    let period = running.drain_period();
    tracing::info!("draining for up to {period:?}");
    running.drain(period);
    Ok(ExitCode::SUCCESS)
}

/// The name the certificate of the control plane at `addr` must carry: `--ca-server-name`,
/// else the host of `addr` (`istiod.istio-system.svc` when that is an IP address).
fn server_name(id: &IdentityArgs, addr: &str) -> String {
    let addr = addr.split_once("://").map_or(addr, |(_, rest)| rest);
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_matches(['[', ']']);
    if !id.ca_server_name.is_empty() {
        id.ca_server_name.clone()
    } else if host.parse::<std::net::IpAddr>().is_ok() || host.is_empty() {
        ferry_proxy::identity::DEFAULT_CA_SERVER_NAME.to_string()
    } else {
        host.to_string()
    }
}

/// How the configuration stream to `addr` runs over TLS: when `--control-plane-tls` says
/// so, or when `addr` is the CA's address (15012 carries both). The proxy proves its
/// identity there with its workload certificate (the proxy's server adds it) or, until it
/// has one, with the token of `--ca-token-file`.
fn control_plane_tls(
    common: &CommonArgs,
    addr: &str,
) -> Option<ferry_proxy::discovery::ControlPlaneTls> {
    let id = &common.identity;
    let same_as_ca = id.ca_addr.as_deref().is_some_and(|ca| ca == addr);
    (common.control_plane_tls || same_as_ca).then(|| ferry_proxy::discovery::ControlPlaneTls {
        server_name: server_name(id, addr),
        root_cert: id.ca_root_cert.clone(),
        token_file: Some(id.ca_token_file.clone()),
        identity: None,
    })
}

/// The identity options of `--ca-addr`, if given.
fn identity_options(common: &CommonArgs) -> Option<IdentityOptions> {
    let id = &common.identity;
    let ca_addr = id.ca_addr.clone().filter(|a| !a.is_empty())?;
    let ca_server_name = server_name(id, &ca_addr);
    Some(IdentityOptions {
        ca_server_name,
        ca_addr,
        root_cert: id.ca_root_cert.clone(),
        token_file: Some(id.ca_token_file.clone()),
        trust_domain: id.trust_domain.clone(),
        namespace: common.namespace.clone(),
        service_account: common.service_account.clone(),
        ttl: Some(std::time::Duration::from_secs(id.cert_ttl_secs)).filter(|d| !d.is_zero()),
    })
}

/// A request to a local endpoint; returns the status code.
fn http_request(addr: SocketAddr, method: &str, path: &str) -> anyhow::Result<u16> {
    super::local_http::request(addr, method, path).map(|(code, _)| code)
}

fn wait(w: WaitArgs) -> anyhow::Result<ExitCode> {
    let deadline = Instant::now() + Duration::from_secs(w.timeout);
    loop {
        if matches!(http_request(w.health, "GET", "/healthz/ready"), Ok(200)) {
            return Ok(ExitCode::SUCCESS);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the proxy at {} was not ready within {}s",
            w.health,
            w.timeout
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }

    /// What a case is, its arguments, and the `--control-plane` and `--ca-addr` in force.
    type Case<'a> = (&'a str, Vec<&'a str>, Option<&'a str>, Option<&'a str>);

    #[test]
    fn discovery_address_table() {
        let d = ["--discovery-address", "cp.mesh.svc:15012"];
        let cases: [Case; 6] = [
            ("nothing", vec![], None, None),
            (
                "the injected address: both",
                d.to_vec(),
                Some("cp.mesh.svc:15012"),
                Some("cp.mesh.svc:15012"),
            ),
            (
                "blank: nothing",
                vec!["--discovery-address", " "],
                None,
                None,
            ),
            (
                "--control-plane given (ferry up without mTLS): not used",
                [&d[..], &["--control-plane", "198.18.0.1:15010"]].concat(),
                Some("198.18.0.1:15010"),
                None,
            ),
            (
                "--ca-addr given: not used",
                [&d[..], &["--ca-addr", "ca:15012"]].concat(),
                None,
                Some("ca:15012"),
            ),
            (
                "blank --control-plane: used",
                [&d[..], &["--control-plane", ""]].concat(),
                Some("cp.mesh.svc:15012"),
                Some("cp.mesh.svc:15012"),
            ),
        ];
        for (what, args, control_plane, ca_addr) in cases {
            let cli = Cli::try_parse_from(std::iter::once("proxy").chain(args)).expect(what);
            let mut common = cli.common;
            resolve_discovery(&mut common);
            assert_eq!(common.control_plane.as_deref(), control_plane, "{what}");
            assert_eq!(common.identity.ca_addr.as_deref(), ca_addr, "{what}");
        }
    }
}
