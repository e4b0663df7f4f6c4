//! The one-machine mesh commands: `ferry up DIR` (runs until Ctrl-C), and, from any
//! terminal, `ferry status`, `ferry exec POD -- CMD`, `ferry logs POD` and `ferry down`.

use anyhow::{Context, bail};
use ferry_local::probe::{ProbeResult, Prober};
use ferry_local::state::{self, State};
use std::future::Future;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the state file and logs are.
#[derive(clap::Args, Debug, Clone)]
pub struct StateDir {
    /// Directory of the state file and the pods' logs.
    #[arg(long, env = "FERRY_STATE_DIR", default_value = state::DEFAULT_DIR)]
    state_dir: PathBuf,
}

/// Arguments of `ferry up`.
#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Directory of manifests (workloads, Services, Namespaces, Istio resources).
    dir: PathBuf,
    /// Network of pod addresses; the bridge takes the first address.
    #[arg(long, default_value = "198.18.0.0/16")]
    pod_cidr: String,
    /// Network of service addresses (for Services that declare no `clusterIP`).
    #[arg(long, default_value = "198.19.0.0/16")]
    service_cidr: String,
    /// Port of the cluster DNS server on the bridge address.
    #[arg(long, default_value_t = 53)]
    dns_port: u16,
    /// Name of the bridge.
    #[arg(long, default_value = "ferry0")]
    bridge: String,
    /// Run without workload identity: no CA, no certificates, every connection plaintext
    /// (by default the control plane is the mesh's CA and sidecars use mutual TLS).
    #[arg(long)]
    no_mtls: bool,
    /// Lifetime of the workload certificates, in seconds (0: the CA's default, 24 h);
    /// proxies renew at about half of it.
    #[arg(long, default_value_t = 0)]
    cert_ttl_secs: u64,
    #[command(flatten)]
    state: StateDir,
}

fn cidr(text: &str) -> anyhow::Result<(Ipv4Addr, u8)> {
    let (ip, bits) = text
        .split_once('/')
        .with_context(|| format!("{text}: expected an IPv4 CIDR like 198.18.0.0/16"))?;
    let ip: Ipv4Addr = ip.parse().with_context(|| format!("{text}: bad address"))?;
    let bits: u8 = bits
        .parse()
        .ok()
        .filter(|b| (8..=30).contains(b))
        .with_context(|| format!("{text}: prefix length must be 8..=30"))?;
    Ok((ip, bits))
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// The proxy's prober (httpGet with HTTPS and headers, tcpSocket, grpc health), for the
/// probes of sidecar-less pods and the rewritten ones of injected pods.
struct ProxyProber;

impl Prober for ProxyProber {
    fn run(
        &self,
        probe: serde_json::Value,
        pod_ip: IpAddr,
    ) -> Pin<Box<dyn Future<Output = ProbeResult> + Send>> {
        Box::pin(async move {
            let probe = ferry_proxy::admin::probes::parse_probe(&probe)?;
            ferry_proxy::admin::probes::run(&probe, pod_ip).await
        })
    }
}

/// Runs `ferry up`.
pub fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    if !ferry_local::is_root() {
        bail!(
            "`ferry up` needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces, a bridge and iptables rules: run it with sudo"
        );
    }
    let ferry = std::env::current_exe().context("cannot find the ferry binary")?;
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let mut options = ferry_local::Options::new(args.dir, ferry);
    options.pod_network = cidr(&args.pod_cidr).context("--pod-cidr")?;
    options.service_network = cidr(&args.service_cidr).context("--service-cidr")?;
    options.bridge = args.bridge;
    options.state_dir = args.state.state_dir;
    options.dns_port = args.dns_port;
    options.prober = Arc::new(ProxyProber);
    options.mtls = !args.no_mtls;
    options.cert_ttl = Some(Duration::from_secs(args.cert_ttl_secs)).filter(|d| !d.is_zero());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(ferry_local::run(options, shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `ferry status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Output format: `table` or `json`.
    #[arg(short, long, default_value = "table")]
    output: String,
    #[command(flatten)]
    state: StateDir,
}

fn load(dir: &Path) -> anyhow::Result<State> {
    State::load(dir)?.context("no mesh is up (no state file; start one with `ferry up DIR`)")
}

/// Runs `ferry status`.
pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let state = load(&args.state.state_dir)?;
    match args.output.as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(&state)?),
        "table" => {
            print!("{}", state::table(&state));
            if !state::owner_alive(&state) && state.pid != std::process::id() {
                println!(
                    "ferry up (pid {}) is not running: this is what it left; `ferry down` removes it",
                    state.pid
                );
            }
        }
        other => bail!("unknown output format {other:?}: use table or json"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `ferry exec`.
#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// The pod (`name`, `namespace/name`, or a unique prefix before `-`, as `client`).
    pod: String,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
    #[command(flatten)]
    state: StateDir,
}

/// Runs `ferry exec`: the command inside the pod's network namespace, with its names.
pub fn exec(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let state = load(&args.state.state_dir)?;
    let pod = state
        .find_pod(&args.pod)
        .with_context(|| format!("no pod {:?} in the mesh (see `ferry status`)", args.pod))?;
    let mut command = std::process::Command::new("ip");
    ferry_local::process::set_hostname(&mut command, &pod.name);
    let status = command
        .args(["netns", "exec", &pod.netns])
        .args(&args.command)
        .status()
        .context("running `ip netns exec`")?;
    Ok(ExitCode::from(
        status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(1),
    ))
}

/// Arguments of `ferry logs`.
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// The pod.
    pod: String,
    /// The container (default: the first application container).
    #[arg(short, long)]
    container: Option<String>,
    /// Keep printing what is appended.
    #[arg(short, long)]
    follow: bool,
    #[command(flatten)]
    state: StateDir,
}

/// Runs `ferry logs`.
pub fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let state = load(&args.state.state_dir)?;
    let pod = state
        .find_pod(&args.pod)
        .with_context(|| format!("no pod {:?} in the mesh (see `ferry status`)", args.pod))?;
    let container = match &args.container {
        Some(name) => pod.containers.iter().find(|c| &c.name == name),
        None => pod
            .containers
            .iter()
            .rev()
            .find(|c| !c.name.starts_with("ferry-")),
    };
    let Some(container) = container else {
        let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
        bail!("pod {} has containers: {}", pod.name, names.join(", "));
    };
    let mut file = std::fs::File::open(&container.log)
        .with_context(|| format!("opening {}", container.log.display()))?;
    let mut out = std::io::stdout();
    loop {
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        out.write_all(&buf)?;
        out.flush()?;
        if !args.follow || State::load(&args.state.state_dir)?.is_none() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `ferry down`.
#[derive(clap::Args, Debug)]
pub struct DownArgs {
    #[command(flatten)]
    state: StateDir,
}

/// Runs `ferry down`: stops a running `ferry up` (which tears down), or removes what a
/// crashed one left.
pub fn down(args: DownArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.state.state_dir;
    let Some(current) = State::load(dir)? else {
        println!("no mesh is up");
        return Ok(ExitCode::SUCCESS);
    };
    if state::owner_alive(&current) {
        if let Ok(pid) = i32::try_from(current.pid) {
            // SAFETY: kill(2) on the recorded pid, just checked to be alive.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while state::owner_alive(&current) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    if let Some(left) = State::load(dir)? {
        ferry_local::state::teardown(&left, dir);
    }
    println!("mesh removed");
    Ok(ExitCode::SUCCESS)
}
