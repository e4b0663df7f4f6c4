//! Pure generation of the nat-table rules that send a pod's TCP traffic through the proxy
//! (REDIRECT mode), one rule list per IP family, in the order istio-iptables uses.
//!
//! Every rule lives in one of Ferry's own chains; the built-in chains only get one jump each
//! (`PREROUTING -> FERRY_INBOUND`, `OUTPUT -> FERRY_OUTPUT`), so cleanup can remove exactly
//! what was added. A `RETURN` in a Ferry chain hands the packet back to the built-in chain.

use ferry_inject::annotations::InterceptionMode;

use super::settings::{CaptureSettings, Cidr, CidrSelection, Family, PortSelection};

/// Chain holding the inbound capture decisions (jumped to from `PREROUTING`).
pub const INBOUND_CHAIN: &str = "FERRY_INBOUND";
/// Chain redirecting to the inbound capture port.
pub const IN_REDIRECT_CHAIN: &str = "FERRY_IN_REDIRECT";
/// Chain holding the outbound capture decisions (jumped to from `OUTPUT`).
pub const OUTPUT_CHAIN: &str = "FERRY_OUTPUT";
/// Chain redirecting to the outbound capture port.
pub const REDIRECT_CHAIN: &str = "FERRY_REDIRECT";

/// Every chain Ferry creates in the nat table, in the order they are declared.
pub const FERRY_CHAINS: [&str; 4] = [
    INBOUND_CHAIN,
    IN_REDIRECT_CHAIN,
    OUTPUT_CHAIN,
    REDIRECT_CHAIN,
];

/// One nat-table rule: the chain it is appended to and its match/target arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Chain the rule is appended to.
    pub chain: &'static str,
    /// Everything after `-A CHAIN`, e.g. `-p tcp -j REDIRECT --to-ports 15001`.
    pub spec: String,
}

impl Rule {
    fn new(chain: &'static str, spec: impl Into<String>) -> Self {
        Rule {
            chain,
            spec: spec.into(),
        }
    }
}

/// Why rules could not be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// TPROXY interception is not implemented by Ferry yet.
    #[error(
        "interception mode TPROXY is not supported yet: use REDIRECT (the default) or NONE \
         (annotation sidecar.istio.io/interceptionMode)"
    )]
    TproxyUnsupported,
}

/// The loopback network and the inbound-passthrough source address of a family.
fn local_addresses(family: Family) -> (&'static str, &'static str) {
    match family {
        Family::V4 => ("127.0.0.1/32", "127.0.0.6/32"),
        Family::V6 => ("::1/128", "::6/128"),
    }
}

fn of_family(cidrs: &[Cidr], family: Family) -> impl Iterator<Item = &Cidr> {
    cidrs.iter().filter(move |c| c.family() == family)
}

/// The nat rules for one family, the jumps from the built-in chains last.
/// Mode NONE gives no rules; TPROXY is an error.
pub fn nat_rules(settings: &CaptureSettings, family: Family) -> Result<Vec<Rule>, RulesError> {
    match settings.mode {
        InterceptionMode::None => return Ok(Vec::new()),
        InterceptionMode::Tproxy => return Err(RulesError::TproxyUnsupported),
        InterceptionMode::Redirect => {}
    }
    let (loopback, passthrough_source) = local_addresses(family);
    let mut rules = vec![
        Rule::new(
            REDIRECT_CHAIN,
            format!("-p tcp -j REDIRECT --to-ports {}", settings.outbound_port),
        ),
        Rule::new(
            IN_REDIRECT_CHAIN,
            format!("-p tcp -j REDIRECT --to-ports {}", settings.inbound_port),
        ),
    ];
    inbound_rules(settings, family, &mut rules);
    outbound_rules(settings, family, loopback, passthrough_source, &mut rules);
    rules.push(Rule::new("PREROUTING", format!("-j {INBOUND_CHAIN}")));
    rules.push(Rule::new("OUTPUT", format!("-j {OUTPUT_CHAIN}")));
    Ok(rules)
}

/// `FERRY_INBOUND`: what arrives from outside the pod.
fn inbound_rules(settings: &CaptureSettings, family: Family, rules: &mut Vec<Rule>) {
    let add = |rules: &mut Vec<Rule>, spec: String| rules.push(Rule::new(INBOUND_CHAIN, spec));
    // Virtual interfaces (-k): their traffic is really outbound traffic of the pod.
    for iface in &settings.reroute_interfaces {
        match &settings.include_outbound_cidrs {
            CidrSelection::All => add(rules, format!("-i {iface} -p tcp -j {REDIRECT_CHAIN}")),
            CidrSelection::Only(cidrs) => {
                for cidr in of_family(cidrs, family) {
                    add(
                        rules,
                        format!("-i {iface} -d {cidr} -p tcp -j {REDIRECT_CHAIN}"),
                    );
                }
            }
        }
        add(rules, format!("-i {iface} -j RETURN"));
    }
    for iface in &settings.exclude_interfaces {
        add(rules, format!("-i {iface} -j RETURN"));
    }
    add(
        rules,
        format!("-p tcp --dport {} -j RETURN", settings.tunnel_port),
    );
    match &settings.inbound_ports {
        PortSelection::All => {
            for port in &settings.exclude_inbound_ports {
                add(rules, format!("-p tcp --dport {port} -j RETURN"));
            }
            add(rules, format!("-p tcp -j {IN_REDIRECT_CHAIN}"));
        }
        PortSelection::Only(ports) => {
            for port in ports {
                add(
                    rules,
                    format!("-p tcp --dport {port} -j {IN_REDIRECT_CHAIN}"),
                );
            }
        }
    }
}

/// `FERRY_OUTPUT`: what processes in the pod send.
fn outbound_rules(
    settings: &CaptureSettings,
    family: Family,
    loopback: &str,
    passthrough_source: &str,
    rules: &mut Vec<Rule>,
) {
    let add = |rules: &mut Vec<Rule>, spec: String| rules.push(Rule::new(OUTPUT_CHAIN, spec));
    for iface in &settings.exclude_interfaces {
        add(rules, format!("-o {iface} -j RETURN"));
    }
    // (1) Excluded ports, and the proxy's inbound passthrough connections to the app.
    for port in &settings.exclude_outbound_ports {
        add(rules, format!("-p tcp --dport {port} -j RETURN"));
    }
    add(rules, format!("-o lo -s {passthrough_source} -j RETURN"));
    let keep_loopback = !settings.include_outbound_cidrs.has_loopback();
    for owner in [
        format!("--uid-owner {}", settings.proxy_uid),
        format!("--gid-owner {}", settings.proxy_gid),
    ] {
        // (2) The proxy connecting to this pod through a service IP: treat as inbound.
        add(
            rules,
            format!(
                "-o lo ! -d {loopback} -p tcp ! --dport {} -m owner {owner} -j {IN_REDIRECT_CHAIN}",
                settings.tunnel_port
            ),
        );
        // (3) The app talking to itself over loopback, and all other traffic of the proxy.
        if keep_loopback {
            add(rules, format!("-o lo -m owner ! {owner} -j RETURN"));
        }
        add(rules, format!("-m owner {owner} -j RETURN"));
    }
    // (4) Loopback destination, excluded networks, included ports.
    add(rules, format!("-d {loopback} -j RETURN"));
    for cidr in of_family(&settings.exclude_outbound_cidrs, family) {
        add(rules, format!("-d {cidr} -j RETURN"));
    }
    for port in &settings.include_outbound_ports {
        add(rules, format!("-p tcp --dport {port} -j {REDIRECT_CHAIN}"));
    }
    // (5) Everything else (or the included networks) to the outbound port.
    match &settings.include_outbound_cidrs {
        CidrSelection::All => add(rules, format!("-j {REDIRECT_CHAIN}")),
        CidrSelection::Only(cidrs) => {
            for cidr in of_family(cidrs, family) {
                add(rules, format!("-d {cidr} -j {REDIRECT_CHAIN}"));
            }
        }
    }
}
