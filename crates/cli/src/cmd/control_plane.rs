//! `ferry control-plane`: watches a directory of manifests (workloads, Services, Istio
//! resources), or with `--kube` a Kubernetes API server, compiles each proxy's configuration
//! and streams it to the proxies; with `--ca-dir`, `--ca-cert` or `--ca-secret` it is also the
//! mesh's CA (certificate API on 15012, gRPC over TLS, which carries the configuration stream
//! too, for proxies that prove their identity with their certificate or their token); in a
//! cluster (`--kube` with the CA) it also serves the injection webhook (15017)
//! and, as the elected leader, keeps the webhook's `caBundle` and the root-certificate
//! ConfigMaps current.

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
    /// With `--kube` and the CA on: address of the injection webhook (HTTPS, certificate from
    /// the mesh CA); `off` to disable.
    #[arg(long, default_value = "0.0.0.0:15017")]
    webhook_addr: String,
    #[command(flatten)]
    ca: CaArgs,
}

/// The certificate authority (off unless `--ca-dir`, `--ca-cert` or `--ca-secret` is given).
#[derive(clap::Args, Debug)]
struct CaArgs {
    /// Directory of the CA's files (Istio's `cacerts` names: `ca-cert.pem`, `ca-key.pem`,
    /// `cert-chain.pem`, `root-cert.pem`): read if present, else a self-signed root is made
    /// there on first start. Also holds `token.key`, the key of local per-pod tokens.
    #[arg(long, value_name = "DIR")]
    ca_dir: Option<PathBuf>,
    /// A user-provided signing certificate (root or intermediate, PEM) instead of `--ca-dir`'s.
    #[arg(long, value_name = "FILE", requires = "ca_key")]
    ca_cert: Option<PathBuf>,
    /// The key of `--ca-cert` (PEM, PKCS#8).
    #[arg(long, value_name = "FILE", requires = "ca_cert")]
    ca_key: Option<PathBuf>,
    /// Certificates from `--ca-cert` up to the root (PEM, root last).
    #[arg(long, value_name = "FILE", requires = "ca_cert")]
    ca_chain: Option<PathBuf>,
    /// With `--kube`: keep the CA in this Secret (`namespace/name`, Istio's
    /// `istio-system/istio-ca-secret`), made on first start.
    #[arg(long, value_name = "NS/NAME")]
    ca_secret: Option<String>,
    /// Extra roots published to proxies beside the CA's own (PEM): the other root of a
    /// rollover in progress.
    #[arg(long, value_name = "FILE")]
    ca_trust_bundle: Option<PathBuf>,
    /// Address of the certificate API and of the configuration stream over TLS (gRPC).
    #[arg(long, default_value = "0.0.0.0:15012")]
    ca_addr: SocketAddr,
    /// Trust domain of the identities issued.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// Default workload certificate lifetime, in seconds.
    #[arg(long, default_value_t = 24 * 3600)]
    cert_ttl_secs: u64,
    /// Longest lifetime a workload may ask for, in seconds.
    #[arg(long, default_value_t = 90 * 24 * 3600)]
    max_cert_ttl_secs: u64,
    /// Extra DNS names of the control plane's serving certificate (beside
    /// `istiod.istio-system.svc`, `ferry-control.ferry-system.svc`, `localhost` and, with
    /// `--kube`, `ferry-control.<POD_NAMESPACE>.svc[.<cluster-domain>]`).
    #[arg(long, value_name = "NAME")]
    ca_serving_name: Vec<String>,
    /// Key file of local per-pod tokens (default: `<ca-dir>/token.key`), made if missing.
    #[arg(long, value_name = "FILE")]
    token_key: Option<PathBuf>,
}

fn read(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// The running CA: the authority, the API client it was made with (`--kube`), and its TLS
/// port (the certificate API, to which the control plane adds the configuration stream).
struct RunningCa {
    ca: std::sync::Arc<ferry_control::ca::CertificateAuthority>,
    client: Option<kube::Client>,
    port: Option<plane::SecurePort>,
}

/// In a cluster, the names of the control plane's Service in its own namespace
/// (`ferry-control.<ns>.svc` and `ferry-control.<ns>.svc.<cluster-domain>`): what injected
/// sidecars dial (the mesh's `controlPlaneAddress`) and the webhook's registration names, so
/// the serving certificates must carry them wherever the control plane is installed.
fn own_service_names(namespace: &str, cluster_domain: &str) -> Vec<String> {
    let service = ferry_control::bootstrap::CONTROL_PLANE;
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.{cluster_domain}"),
    ]
}

/// Loads (or creates) the CA and binds its TLS port, whose serving certificate carries
/// `own_names` beside the defaults and `--ca-serving-name`; `None` when off.
async fn start_ca(
    args: &CaArgs,
    kube: bool,
    own_names: &[String],
) -> anyhow::Result<Option<RunningCa>> {
    use ferry_control::ca::authn::{AnyOf, Authenticator};
    use ferry_control::ca::store::SecretStore;
    use ferry_control::ca::token_review::TokenReviewAuthenticator;
    use ferry_control::ca::{
        CaMaterial, CaService, CertificateAuthority, FileStore, LocalTokens, RootStore,
        SecureServer,
    };
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    if args.ca_dir.is_none() && args.ca_cert.is_none() && args.ca_secret.is_none() {
        return Ok(None);
    }
    let now = SystemTime::now();
    let td = &args.trust_domain;
    let client = if kube {
        Some(ferry_control::ca::kube_client().await?)
    } else {
        None
    };
    let ca = if let (Some(cert), Some(key)) = (&args.ca_cert, &args.ca_key) {
        let cert_pem = read(cert)?;
        let chain_pem = args
            .ca_chain
            .as_deref()
            .map(read)
            .transpose()?
            .unwrap_or_default();
        // The root: the chain's last certificate, or the signing certificate itself.
        let root_pem = chain_pem
            .split_inclusive("-----END CERTIFICATE-----")
            .filter(|b| b.contains("BEGIN CERTIFICATE"))
            .last()
            .map(|b| format!("{}\n", b.trim_start()))
            .unwrap_or_else(|| cert_pem.clone());
        let material = CaMaterial {
            cert_pem,
            key_pem: read(key)?,
            chain_pem,
            root_pem,
        };
        tracing::info!("CA: signing with {}", cert.display());
        CertificateAuthority::from_material(&material, td, now)?
    } else {
        let store: Box<dyn RootStore> = match (&args.ca_secret, &client, &args.ca_dir) {
            (Some(secret), Some(client), _) => {
                let (ns, name) = secret
                    .split_once('/')
                    .with_context(|| format!("--ca-secret {secret}: expected namespace/name"))?;
                Box::new(SecretStore::new(client.clone(), ns, name))
            }
            (Some(_), None, _) => anyhow::bail!("--ca-secret needs --kube"),
            (None, _, Some(dir)) => Box::new(FileStore::new(dir)),
            (None, _, None) => anyhow::bail!("the CA needs --ca-dir, --ca-cert or --ca-secret"),
        };
        let (ca, created) = CertificateAuthority::load_or_create(store.as_ref(), td, now).await?;
        tracing::info!(
            "CA: {} root in {}",
            if created {
                "new self-signed"
            } else {
                "existing"
            },
            store.describe()
        );
        ca
    };
    let mut ca = ca.with_ttl(
        Duration::from_secs(args.cert_ttl_secs),
        Duration::from_secs(args.max_cert_ttl_secs),
    );
    if let Some(bundle) = &args.ca_trust_bundle {
        ca = ca.with_extra_roots(&read(bundle)?)?;
    }
    let ca = Arc::new(ca);
    let mut authenticators: Vec<Arc<dyn Authenticator>> = Vec::new();
    let key_path = args
        .token_key
        .clone()
        .or_else(|| args.ca_dir.as_ref().map(|d| d.join("token.key")));
    if let Some(path) = key_path {
        let tokens = LocalTokens::load_or_create(&path)
            .with_context(|| format!("token key {}", path.display()))?;
        authenticators.push(Arc::new(tokens));
    }
    if let Some(client) = &client {
        authenticators.push(Arc::new(TokenReviewAuthenticator::new(client.clone())));
    }
    let authn: Arc<dyn Authenticator> = Arc::new(AnyOf(authenticators));
    // One CA in force for the certificate API, the TLS port and the roots the configuration
    // stream pushes to proxies (the signing root plus --ca-trust-bundle).
    let shared = ferry_control::ca::SharedCa::new(ca.clone());
    let service = CaService::shared(shared.clone(), authn.clone());
    let mut names = own_names.to_vec();
    for name in ferry_control::ca::server::default_serving_names()
        .into_iter()
        .chain(args.ca_serving_name.iter().cloned())
    {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let ips = vec![std::net::IpAddr::from([127, 0, 0, 1])];
    // The configuration stream on this port takes the same proofs as the certificate API.
    let server = SecureServer::shared(shared, names, ips)?.with_authenticator(authn);
    let listener = tokio::net::TcpListener::bind(args.ca_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.ca_addr))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        "certificate API and configuration stream (gRPC over TLS) listening"
    );
    let port = plane::SecurePort {
        server,
        listener,
        routes: service.routes(),
        issued: Some(service.issued().clone()),
    };
    Ok(Some(RunningCa {
        ca,
        client,
        port: Some(port),
    }))
}

/// Resolves when `stop` turns true (or its sender is gone).
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// In a cluster (`--kube` with the CA on): the injection webhook on `webhook_addr`, served with
/// a certificate from the mesh CA (renewed at half-life), the injector settings read from the
/// `ferry-mesh` ConfigMap, and the leader-only duties (the webhook's `caBundle`, the root
/// certificate ConfigMaps).
async fn start_cluster_duties(
    running: &RunningCa,
    client: kube::Client,
    webhook_addr: SocketAddr,
    work_dir: PathBuf,
    cluster_domain: &str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    use ferry_control::bootstrap::{self, duties, leader::LeaseConfig, mesh};
    use ferry_control::webhook::{WebhookServer, WebhookSettings, registration};
    use std::time::Duration;

    let ns = bootstrap::own_namespace();
    let settings = mesh::load(&client, &ns, bootstrap::MESH_CONFIGMAP)
        .await
        .context("mesh settings")?;
    let mut names = own_service_names(&ns, cluster_domain);
    names.extend(ferry_control::ca::server::default_serving_names());
    let dir = work_dir.join("webhook");
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let ttl = Duration::from_secs(24 * 3600);
    let lifetime = write_serving_cert(&running.ca, &names, &dir, ttl)?;
    let mut webhook = WebhookSettings::new(webhook_addr, &cert, &key);
    webhook.inject = settings.inject_config(webhook.inject);
    let server = WebhookServer::bind(webhook)
        .await
        .with_context(|| format!("webhook on {webhook_addr}"))?;
    tracing::info!(addr = %server.local_addr(), "injection webhook (HTTPS) listening");
    let mut tasks = vec![tokio::spawn(server.serve(stopped(stop.clone())))];

    // Renew the serving certificate at half-life; the server reloads the files.
    let (ca, renew_stop) = (running.ca.clone(), stop.clone());
    tasks.push(tokio::spawn(async move {
        let mut wait = lifetime / 2;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopped(renew_stop.clone()) => return,
            }
            wait = match write_serving_cert(&ca, &names, &dir, ttl) {
                Ok(lifetime) => lifetime / 2,
                Err(e) => {
                    tracing::warn!("renewing the webhook certificate: {e:#}");
                    Duration::from_secs(30)
                }
            };
        }
    }));

    let root = running.ca.root_pem().to_string();
    let work = duties::Duties {
        client,
        lease: LeaseConfig::new(&ns, &bootstrap::own_identity()),
        webhook_config: registration::DEFAULT_CONFIG_NAME.to_string(),
        ca_bundle_pem: root.clone(),
        root_pem: root,
        resync: Duration::from_secs(60),
    };
    let (leading, _) = tokio::sync::watch::channel(false);
    tasks.push(tokio::spawn(duties::run(work, leading, stopped(stop))));
    Ok(tasks)
}

/// Issues a serving certificate for `names` and writes `tls.crt` (chain) and `tls.key`
/// (mode 0600) into `dir` atomically; returns its lifetime.
fn write_serving_cert(
    ca: &ferry_control::ca::CertificateAuthority,
    names: &[String],
    dir: &std::path::Path,
    ttl: std::time::Duration,
) -> anyhow::Result<std::time::Duration> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let now = std::time::SystemTime::now();
    let (issued, key_pem) = ca.issue_serving(names, &[], ttl, now)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let put = |name: &str, text: &str, mode: u32| -> anyhow::Result<()> {
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        std::fs::rename(&tmp, dir.join(name))
            .with_context(|| format!("writing {}", dir.join(name).display()))
    };
    // Key first: the server reloads when the certificate changes.
    put("tls.key", &key_pem, 0o600)?;
    put("tls.crt", &issued.chain.concat(), 0o644)?;
    Ok(issued
        .not_after
        .duration_since(now)
        .unwrap_or(std::time::Duration::from_secs(60)))
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
    let webhook_addr = match args.webhook_addr.as_str() {
        "off" => None,
        addr => Some(
            addr.parse::<SocketAddr>()
                .with_context(|| format!("--webhook-addr {addr}"))?,
        ),
    };
    let monitoring = match args.monitoring_addr.as_str() {
        "off" => None,
        addr => Some(
            addr.parse()
                .with_context(|| format!("--monitoring-addr {addr}"))?,
        ),
    };
    let cluster_domain = args.cluster_domain.clone();
    let own_names = if args.kube {
        own_service_names(&ferry_control::bootstrap::own_namespace(), &cluster_domain)
    } else {
        Vec::new()
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
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut ca = start_ca(&args.ca, args.kube, &own_names).await?;
        let mut tasks = Vec::new();
        if let (Some(running), Some(addr)) = (&ca, webhook_addr)
            && let Some(client) = running.client.clone()
        {
            let work_dir = args
                .ca
                .ca_dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("ferry-control"));
            tasks =
                start_cluster_duties(running, client, addr, work_dir, &cluster_domain, stop_rx)
                    .await?;
        }
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            stop_tx.send_replace(true);
        };
        let on_bound = |bound: plane::Bound| {
            tracing::info!(grpc = %bound.grpc, secure = ?bound.secure, monitoring = ?bound.monitoring, "control plane listening");
        };
        match ca.as_mut().and_then(|c| c.port.take()) {
            Some(port) => plane::run_secure(options, port, shutdown, on_bound).await?,
            None => plane::run(options, shutdown, on_bound).await?,
        }
        let grace = std::time::Duration::from_secs(5);
        for task in tasks {
            let _ = tokio::time::timeout(grace, task).await;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_service_names_table() {
        let cases = [
            (
                "ferry-system",
                "cluster.local",
                [
                    "ferry-control.ferry-system.svc",
                    "ferry-control.ferry-system.svc.cluster.local",
                ],
            ),
            (
                "mesh",
                "corp.example",
                [
                    "ferry-control.mesh.svc",
                    "ferry-control.mesh.svc.corp.example",
                ],
            ),
        ];
        for (ns, domain, want) in cases {
            assert_eq!(own_service_names(ns, domain), want, "{ns} {domain}");
        }
    }
}
