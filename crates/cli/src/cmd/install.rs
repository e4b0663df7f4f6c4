//! `ferry install` and `ferry uninstall`: the Kubernetes installation generated from code
//! (`ferry_control::install`), printed as YAML or, with `--apply`, applied through the API
//! (server-side apply, so a second install is an idempotent upgrade).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ferry_control::install::{self, Manifest, Values, ValuesBuilder, apply};

/// The values flags shared by `install` and `uninstall`.
#[derive(clap::Args, Debug)]
pub struct ValuesArgs {
    /// A values file (YAML), like Helm's `-f`; repeatable, later files win.
    #[arg(short = 'f', long = "values", value_name = "FILE")]
    files: Vec<PathBuf>,
    /// One value, like Helm's `--set` (`controlPlane.replicas=3`); repeatable, applied after
    /// the files.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Namespace of the control plane.
    #[arg(short, long, default_value = install::DEFAULT_NAMESPACE)]
    namespace: String,
}

impl ValuesArgs {
    fn values(&self) -> anyhow::Result<Values> {
        let mut builder = ValuesBuilder::new();
        for file in &self.files {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            builder.file(&file.display().to_string(), &text)?;
        }
        for set in &self.sets {
            builder.set(set)?;
        }
        Ok(builder.build()?)
    }

    fn manifests(&self) -> anyhow::Result<Vec<Manifest>> {
        anyhow::ensure!(
            is_dns_label(&self.namespace),
            "--namespace {}: not a valid namespace name (lower-case letters, digits and '-')",
            self.namespace
        );
        Ok(install::render(&self.values()?, &self.namespace))
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Arguments of `ferry install`.
#[derive(clap::Args, Debug)]
pub struct InstallArgs {
    #[command(flatten)]
    values: ValuesArgs,
    /// Apply the objects to the cluster of the current kubeconfig context instead of
    /// printing them.
    #[arg(long)]
    apply: bool,
}

/// Arguments of `ferry uninstall`.
#[derive(clap::Args, Debug)]
pub struct UninstallArgs {
    #[command(flatten)]
    values: ValuesArgs,
    /// Also delete Ferry's CRDs (and with them every VirtualService, DestinationRule,
    /// PeerAuthentication and RedisPolicy, unless Istio's own CRDs are installed) and the
    /// root-certificate ConfigMaps in workload namespaces.
    #[arg(long)]
    purge: bool,
    /// Delete through the API instead of only printing what would be deleted.
    #[arg(long)]
    apply: bool,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

/// Runs `ferry install`.
pub fn install(args: InstallArgs) -> anyhow::Result<ExitCode> {
    let manifests = args.values.manifests()?;
    if !args.apply {
        print!("{}", install::to_yaml(&manifests));
        return Ok(ExitCode::SUCCESS);
    }
    runtime()?.block_on(async {
        let client = apply::default_client().await?;
        apply::apply_all(&client, &manifests, |m, outcome| {
            println!("{}: {outcome}", m.describe());
        })
        .await?;
        println!(
            "Ferry {} installed in {}; label a namespace with istio-injection=enabled to inject its pods.",
            install::values::VERSION,
            args.values.namespace
        );
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `ferry uninstall`.
pub fn uninstall(args: UninstallArgs) -> anyhow::Result<ExitCode> {
    let plan = apply::uninstall_plan(&args.values.manifests()?, args.purge);
    if !args.apply {
        println!("ferry uninstall --apply would delete, in this order:");
        for m in &plan {
            let note = match m.kind() {
                "CustomResourceDefinition" => {
                    "  (only if Ferry installed it; deletes every resource of its kind)"
                }
                "Namespace" => "  (and everything left in it: the CA Secret, the leader Lease)",
                _ => "",
            };
            println!("  {}{note}", m.describe());
        }
        if args.purge {
            println!(
                "  ConfigMap/*/{} labelled {}={} (in every namespace)",
                install::ROOT_CERT_CONFIGMAP,
                install::crds::PART_OF.0,
                install::crds::PART_OF.1
            );
        }
        println!(
            "Running pods keep their sidecars, configuration and certificates until they restart; new pods get no sidecar."
        );
        return Ok(ExitCode::SUCCESS);
    }
    runtime()?.block_on(async {
        let client = apply::default_client().await?;
        apply::delete_all(&client, &plan, args.purge, |what, outcome| {
            println!("{what}: {outcome}");
        })
        .await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
