//! `ferry proxy-init`: installs (or removes, or prints) the pod's traffic-capture rules in the
//! current network namespace. Its flags are istio-iptables' own, so the arguments `ferry inject`
//! writes into the `ferry-init` container (and Istio's `istio-init` ones) parse unchanged.

use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use ferry_inject::annotations::InterceptionMode;
use ferry_proxy::redirect::settings::{
    DEFAULT_TUNNEL_PORT, parse_cidr_list, parse_interfaces, parse_mode, parse_port_list,
};
use ferry_proxy::redirect::{
    BackendChoice, CaptureSettings, CidrSelection, FamilyReport, HostSystem, Outcome,
    PortSelection, apply,
};

/// Arguments of `ferry proxy-init` (istio-iptables flags plus Ferry's own).
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Port the proxy accepts captured outbound connections on.
    #[arg(
        short = 'p',
        long = "proxy-port",
        visible_alias = "envoy-port",
        default_value_t = 15001
    )]
    pub proxy_port: u16,
    /// Port the proxy accepts captured inbound connections on.
    #[arg(short = 'z', long = "inbound-capture-port", default_value_t = 15006)]
    pub inbound_capture_port: u16,
    /// HBONE tunnel port, never captured inbound.
    #[arg(short = 'e', long = "inbound-tunnel-port", default_value_t = DEFAULT_TUNNEL_PORT)]
    pub inbound_tunnel_port: u16,
    /// UID of the proxy: its traffic is never captured.
    #[arg(short = 'u', long = "proxy-uid", default_value_t = 1337)]
    pub proxy_uid: u32,
    /// GID of the proxy: its traffic is never captured (default: the UID).
    #[arg(short = 'g', long = "proxy-gid")]
    pub proxy_gid: Option<u32>,
    /// Interception mode: REDIRECT, TPROXY (not supported yet) or NONE (install nothing).
    #[arg(
        short = 'm',
        long = "istio-inbound-interception-mode",
        visible_alias = "mode",
        default_value = "REDIRECT"
    )]
    pub mode: String,
    /// Outbound CIDRs to capture: `*` or a comma list (IPv4 and IPv6 mixed).
    #[arg(short = 'i', long = "istio-service-cidr", default_value = "*")]
    pub include_outbound_cidrs: String,
    /// Outbound CIDRs never captured (comma list, may be empty).
    #[arg(short = 'x', long = "istio-service-exclude-cidr", default_value = "")]
    pub exclude_outbound_cidrs: String,
    /// Inbound ports to capture: `*` or a comma list (empty: no inbound capture).
    #[arg(short = 'b', long = "istio-inbound-ports", default_value = "*")]
    pub include_inbound_ports: String,
    /// Inbound ports never captured when `-b` is `*` (comma list).
    #[arg(short = 'd', long = "istio-local-exclude-ports", default_value = "")]
    pub exclude_inbound_ports: String,
    /// Outbound ports always captured, whatever the destination (comma list).
    #[arg(short = 'q', long = "istio-outbound-ports", default_value = "")]
    pub include_outbound_ports: String,
    /// Outbound ports never captured (comma list).
    #[arg(
        short = 'o',
        long = "istio-local-outbound-ports-exclude",
        default_value = ""
    )]
    pub exclude_outbound_ports: String,
    /// Virtual interfaces whose incoming traffic is captured as outbound (comma list).
    #[arg(short = 'k', long = "kube-virt-interfaces", default_value = "")]
    pub reroute_interfaces: String,
    /// Interfaces whose traffic is never captured (comma list).
    #[arg(short = 'c', long = "istio-exclude-interfaces", default_value = "")]
    pub exclude_interfaces: String,
    /// Print the iptables-restore input for IPv4 and IPv6 and apply nothing.
    #[arg(long, conflicts_with = "cleanup")]
    pub dry_run: bool,
    /// Remove Ferry's chains and the jumps to them, and nothing else.
    #[arg(long, visible_alias = "clean")]
    pub cleanup: bool,
    /// Which iptables to use: auto (legacy if it already holds rules, else nft), nft or legacy.
    #[arg(long, default_value = "auto")]
    pub iptables_backend: String,
}

impl Args {
    /// The capture settings these flags describe, or an error naming the bad flag.
    pub fn settings(&self) -> Result<CaptureSettings> {
        fn flag<T>(name: &str, parsed: Result<T, String>) -> Result<T> {
            parsed.map_err(|err| anyhow!("invalid {name}: {err}"))
        }
        Ok(CaptureSettings {
            mode: flag(
                "-m/--istio-inbound-interception-mode",
                parse_mode(&self.mode),
            )?,
            outbound_port: self.proxy_port,
            inbound_port: self.inbound_capture_port,
            tunnel_port: self.inbound_tunnel_port,
            proxy_uid: self.proxy_uid,
            proxy_gid: self.proxy_gid.unwrap_or(self.proxy_uid),
            inbound_ports: flag(
                "-b/--istio-inbound-ports",
                PortSelection::parse(&self.include_inbound_ports),
            )?,
            exclude_inbound_ports: flag(
                "-d/--istio-local-exclude-ports",
                parse_port_list(&self.exclude_inbound_ports),
            )?,
            include_outbound_cidrs: flag(
                "-i/--istio-service-cidr",
                CidrSelection::parse(&self.include_outbound_cidrs),
            )?,
            exclude_outbound_cidrs: flag(
                "-x/--istio-service-exclude-cidr",
                parse_cidr_list(&self.exclude_outbound_cidrs),
            )?,
            include_outbound_ports: flag(
                "-q/--istio-outbound-ports",
                parse_port_list(&self.include_outbound_ports),
            )?,
            exclude_outbound_ports: flag(
                "-o/--istio-local-outbound-ports-exclude",
                parse_port_list(&self.exclude_outbound_ports),
            )?,
            exclude_interfaces: flag(
                "-c/--istio-exclude-interfaces",
                parse_interfaces(&self.exclude_interfaces),
            )?,
            reroute_interfaces: flag(
                "-k/--kube-virt-interfaces",
                parse_interfaces(&self.reroute_interfaces),
            )?,
        })
    }

    /// The backend choice (`--iptables-backend`).
    pub fn backend(&self) -> Result<BackendChoice> {
        self.iptables_backend
            .parse()
            .map_err(|err: String| anyhow!(err))
    }
}

/// Runs `ferry proxy-init`.
pub fn run(args: Args) -> Result<ExitCode> {
    let choice = args.backend()?;
    if args.cleanup {
        let reports = apply::cleanup(choice, &HostSystem).context("removing redirect rules")?;
        print_reports(&reports);
        return Ok(ExitCode::SUCCESS);
    }
    let settings = args.settings()?;
    if args.dry_run {
        print!("{}", apply::dry_run(&settings)?);
        return Ok(ExitCode::SUCCESS);
    }
    if settings.mode == InterceptionMode::None {
        println!("interception mode NONE: no redirect rules installed");
        return Ok(ExitCode::SUCCESS);
    }
    let reports =
        apply::install(&settings, choice, &HostSystem).context("installing redirect rules")?;
    print_reports(&reports);
    Ok(ExitCode::SUCCESS)
}

fn print_reports(reports: &[FamilyReport]) {
    for report in reports {
        let backend = report
            .backend
            .map(|b| format!(" ({b} backend)"))
            .unwrap_or_default();
        let what = match &report.outcome {
            Outcome::Installed { command } => format!("rules installed with {command}{backend}"),
            Outcome::Removed { command } => format!("rules removed with {command}{backend}"),
            Outcome::NothingToRemove => format!("no Ferry rules to remove{backend}"),
            Outcome::NothingToInstall => "no rules to install".to_string(),
            Outcome::Skipped { reason } => format!("skipped: {reason}"),
        };
        println!("{}: {what}", report.family.name());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use ferry_inject::annotations::PodSettings;
    use ferry_inject::redirect::RedirectConfig;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Sub {
        ProxyInit(Args),
    }

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        let argv = std::iter::once("ferry").chain(argv.iter().copied());
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Sub::ProxyInit(args) => args,
        })
    }

    #[test]
    fn the_injectors_default_arguments_parse() {
        let config = RedirectConfig::for_pod(&PodSettings::default(), 15020).expect("redirect");
        let argv = config.to_args();
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let args = parse(&argv).expect("parses");
        assert_eq!(args.exclude_outbound_cidrs, "");
        let settings = args.settings().expect("valid");
        assert_eq!(settings, CaptureSettings::default());
    }

    #[test]
    fn the_injectors_full_arguments_parse() {
        let pod = PodSettings {
            exclude_inbound_ports: vec![6379],
            exclude_outbound_ports: vec![16379],
            include_outbound_ports: vec![443],
            include_outbound_ip_ranges: Some("10.0.0.0/8,fd00::/8".into()),
            exclude_outbound_ip_ranges: vec!["10.1.0.0/16".into()],
            exclude_interfaces: vec!["net1".into()],
            reroute_virtual_interfaces: vec!["tap0".into()],
            ..Default::default()
        };
        let argv = RedirectConfig::for_pod(&pod, 15020)
            .expect("redirect")
            .to_args();
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let settings = parse(&argv).expect("parses").settings().expect("valid");
        assert_eq!(
            settings.exclude_inbound_ports,
            vec![15090, 15021, 15020, 6379]
        );
        assert_eq!(settings.exclude_outbound_ports, vec![16379]);
        assert_eq!(settings.include_outbound_ports, vec![443]);
        assert_eq!(
            settings.include_outbound_cidrs,
            CidrSelection::parse("10.0.0.0/8,fd00::/8").expect("valid")
        );
        assert_eq!(settings.exclude_interfaces, vec!["net1"]);
        assert_eq!(settings.reroute_interfaces, vec!["tap0"]);
        assert_eq!(settings.proxy_gid, 1337);
    }

    #[test]
    fn long_names_and_ferry_flags() {
        let args = parse(&[
            "proxy-init",
            "--proxy-port",
            "16001",
            "--inbound-capture-port=16006",
            "--proxy-uid",
            "2000",
            "--proxy-gid",
            "3000",
            "--mode",
            "NONE",
            "--istio-service-cidr",
            "10.0.0.0/8",
            "--istio-service-exclude-cidr",
            "10.1.0.0/16",
            "--istio-inbound-ports",
            "80,443",
            "--istio-local-exclude-ports",
            "15020",
            "--iptables-backend",
            "legacy",
            "--dry-run",
        ])
        .expect("parses");
        assert!(args.dry_run);
        assert_eq!(args.backend().expect("valid"), BackendChoice::Legacy);
        let s = args.settings().expect("valid");
        assert_eq!(
            (s.outbound_port, s.inbound_port, s.proxy_uid, s.proxy_gid),
            (16001, 16006, 2000, 3000)
        );
        assert_eq!(s.mode, InterceptionMode::None);
        assert_eq!(s.inbound_ports, PortSelection::Only(vec![80, 443]));
        let istio = parse(&[
            "proxy-init",
            "--istio-inbound-interception-mode",
            "REDIRECT",
        ]);
        assert!(istio.is_ok());
        assert!(parse(&["proxy-init", "--clean"]).expect("alias").cleanup);
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let table: &[(&[&str], &str)] = &[
            (
                &["-d", "15020,x"],
                "invalid -d/--istio-local-exclude-ports: failed parsing port 'x'",
            ),
            (
                &["-x", "10.0.0.0/40"],
                "invalid -x/--istio-service-exclude-cidr: failed parsing cidr '10.0.0.0/40'",
            ),
            (
                &["-x", "*"],
                "invalid -x/--istio-service-exclude-cidr: '*' is not allowed here",
            ),
            (
                &["-m", "DNAT"],
                "invalid -m/--istio-inbound-interception-mode: invalid interception mode 'DNAT'",
            ),
            (
                &["-c", "eth0 -j ACCEPT"],
                "invalid -c/--istio-exclude-interfaces: invalid interface name",
            ),
            (
                &["-b", "80;443"],
                "invalid -b/--istio-inbound-ports: failed parsing port '80;443'",
            ),
        ];
        for (extra, want) in table {
            let argv: Vec<&str> = std::iter::once("proxy-init")
                .chain(extra.iter().copied())
                .collect();
            let err = parse(&argv)
                .expect("parses")
                .settings()
                .expect_err("invalid");
            assert!(err.to_string().starts_with(want), "{extra:?}: {err}");
        }
        assert!(parse(&["proxy-init", "-p", "70000"]).is_err());
        assert!(parse(&["proxy-init", "--dry-run", "--cleanup"]).is_err());
        let bad_backend = parse(&["proxy-init", "--iptables-backend", "bpf"]).expect("parses");
        assert!(bad_backend.backend().is_err());
    }
}
