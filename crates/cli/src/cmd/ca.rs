//! `ferry ca`: the mesh's certificate authority, for debugging. `ferry ca root` prints the
//! root certificate (and its subject and validity on stderr); `ferry ca issue` signs a
//! workload certificate for a namespace and service account with a key made here, as a
//! proxy would get (the key is written next to it, mode 0600). Both read the CA's directory
//! (Istio's `cacerts` names): by default the one of the mesh `ferry up` runs
//! (`<state-dir>/ca`). `ferry ca rollover` rolls the root of the running `ferry up` mesh
//! (through its control socket, `<state-dir>/admin.sock`) in three phases without breaking
//! trust, printing each phase.

use anyhow::Context;
use clap::Subcommand;
use ferry_control::ca::{CertificateAuthority, FileStore, RootStore, SpiffeId};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

/// Arguments of `ferry ca`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: CaCommand,
}

#[derive(Subcommand, Debug)]
enum CaCommand {
    /// Print the mesh's root certificate (PEM).
    Root(DirArgs),
    /// Issue a workload certificate (`spiffe://<trust-domain>/ns/<ns>/sa/<sa>`) and its key.
    Issue(IssueArgs),
    /// Replace the root of the running `ferry up` mesh: trust old + new everywhere, sign
    /// with the new root and renew every proxy, then drop the old root (no request fails).
    Rollover(RolloverArgs),
}

#[derive(clap::Args, Debug)]
struct RolloverArgs {
    /// The state directory of `ferry up`.
    #[arg(long, env = "FERRY_STATE_DIR", default_value = ferry_local::state::DEFAULT_DIR)]
    state_dir: PathBuf,
    /// Longest wait, in seconds, for every proxy to reach each phase; on a timeout the mesh
    /// stays trusting both roots and the command can be run again to resume.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    phase_timeout_secs: u64,
}

/// Where the CA's files are.
#[derive(clap::Args, Debug)]
struct DirArgs {
    /// The CA's directory (`ca-cert.pem`, `ca-key.pem`, `cert-chain.pem`, `root-cert.pem`);
    /// default: `<state-dir>/ca` of `ferry up`.
    #[arg(long, value_name = "DIR")]
    ca_dir: Option<PathBuf>,
    /// The state directory of `ferry up`.
    #[arg(long, env = "FERRY_STATE_DIR", default_value = ferry_local::state::DEFAULT_DIR)]
    state_dir: PathBuf,
    /// Trust domain of the identities.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
}

impl DirArgs {
    fn dir(&self) -> PathBuf {
        self.ca_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join(ferry_local::up::CA_DIR))
    }
}

#[derive(clap::Args, Debug)]
struct IssueArgs {
    /// Namespace of the workload.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Service account of the workload.
    #[arg(long, default_value = "default")]
    service_account: String,
    /// Lifetime, in seconds (0: the CA's default, 24 h).
    #[arg(long, default_value_t = 0)]
    ttl_secs: u64,
    /// Directory to write `cert-chain.pem`, `key.pem` (0600) and `root-cert.pem` into;
    /// without it the chain and the key are printed.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    #[command(flatten)]
    ca: DirArgs,
}

/// Runs `ferry ca`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    match args.command {
        CaCommand::Rollover(r) => {
            let line = format!("ca-rollover {}", r.phase_timeout_secs);
            let done = ferry_local::admin::request(&r.state_dir, &line, |p| println!("{p}"))
                .context("root rollover")?;
            println!("{done}");
        }
        CaCommand::Root(dir) => {
            let ca = runtime.block_on(load(&dir))?;
            let root = ca.root_pem();
            if let Some(summary) = ferry_control::ca::authority::describe_pem(root) {
                eprintln!("# {summary}");
            }
            print!("{root}");
        }
        CaCommand::Issue(issue) => {
            let ca = runtime.block_on(load(&issue.ca))?;
            let id = SpiffeId::new(
                &issue.ca.trust_domain,
                &issue.namespace,
                &issue.service_account,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let ttl = Some(Duration::from_secs(issue.ttl_secs)).filter(|d| !d.is_zero());
            let (issued, key) = ca.issue_workload(&id, ttl, SystemTime::now())?;
            let chain = issued.chain.concat();
            eprintln!("issued {} (serial {})", id.uri(), issued.serial);
            match &issue.out_dir {
                Some(dir) => {
                    write(dir, "key.pem", &key, 0o600)?;
                    write(dir, "cert-chain.pem", &chain, 0o644)?;
                    write(dir, "root-cert.pem", ca.root_pem(), 0o644)?;
                    eprintln!("wrote {}/{{cert-chain,key,root-cert}}.pem", dir.display());
                }
                None => print!("{chain}{key}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The CA of a directory that exists (never made here).
async fn load(dir: &DirArgs) -> anyhow::Result<CertificateAuthority> {
    let path = dir.dir();
    let store = FileStore::new(&path);
    let material = store.load().await?.with_context(|| {
        format!(
            "no CA in {} (start a mesh with `ferry up`, or give --ca-dir)",
            path.display()
        )
    })?;
    Ok(CertificateAuthority::from_material(
        &material,
        &dir.trust_domain,
        SystemTime::now(),
    )?)
}

fn write(dir: &Path, name: &str, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
