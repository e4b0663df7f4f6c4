//! The capture settings `ferry proxy-init` works from, and the parsing of the istio-iptables
//! style flag values (`*`, comma lists of ports, CIDRs and interfaces) into them. Pure: no I/O.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ferry_inject::annotations::{InterceptionMode, parse_cidrs, parse_ports};

/// HBONE tunnel port: inbound traffic to it is never captured (istio-iptables `-e`).
pub const DEFAULT_TUNNEL_PORT: u16 = 15008;

/// An IP family: iptables rules and ip6tables rules are generated and applied separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 (`iptables`).
    V4,
    /// IPv6 (`ip6tables`).
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// A short human name (`IPv4`, `IPv6`).
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// An IP network written `address/prefix-length`, as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The family of the network's address.
    pub fn family(&self) -> Family {
        match self.addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Whether the network's address is a loopback address (`127.0.0.0/8`, `::1`).
    pub fn is_loopback(&self) -> bool {
        self.addr.is_loopback()
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("failed parsing cidr '{s}'");
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Inbound ports to capture (`-b`): every port, or only the listed ones (none when empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSelection {
    /// `*`: every port except the excluded ones.
    All,
    /// Only these ports; an empty list captures nothing inbound.
    Only(Vec<u16>),
}

impl PortSelection {
    /// Parses `*` or a comma-separated port list.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.trim() == "*" {
            return Ok(PortSelection::All);
        }
        parse_ports(value).map(PortSelection::Only)
    }
}

/// Outbound destinations to capture (`-i`): everything, or only the listed networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CidrSelection {
    /// `*`: every destination except the excluded networks.
    All,
    /// Only these networks; an empty list captures nothing by destination.
    Only(Vec<Cidr>),
}

impl CidrSelection {
    /// Parses `*` or a comma-separated CIDR list.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.trim() == "*" {
            return Ok(CidrSelection::All);
        }
        parse_cidr_list(value).map(CidrSelection::Only)
    }

    /// Whether a loopback network is listed explicitly (then loopback traffic is captured).
    pub fn has_loopback(&self) -> bool {
        match self {
            CidrSelection::All => false,
            CidrSelection::Only(cidrs) => cidrs.iter().any(Cidr::is_loopback),
        }
    }
}

/// Parses a comma-separated CIDR list (no wildcard); an empty value is an empty list.
pub fn parse_cidr_list(value: &str) -> Result<Vec<Cidr>, String> {
    let value = value.trim();
    if value == "*" {
        return Err("'*' is not allowed here: list the networks to exclude".into());
    }
    parse_cidrs(value)?
        .iter()
        .map(|cidr| cidr.parse())
        .collect()
}

/// Parses a comma-separated port list; an empty value is an empty list.
pub fn parse_port_list(value: &str) -> Result<Vec<u16>, String> {
    parse_ports(value)
}

/// Parses a comma-separated list of network interface names (`+` as a trailing wildcard is
/// allowed, as iptables does); an empty value is an empty list.
pub fn parse_interfaces(value: &str) -> Result<Vec<String>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.@+".contains(c);
            if name.len() > 15 || !name.chars().all(allowed) {
                Err(format!(
                    "invalid interface name '{name}' (at most 15 characters: letters, digits, '-', '_', '.', '@', '+')"
                ))
            } else {
                Ok(name.to_string())
            }
        })
        .collect()
}

/// Parses an interception mode: `REDIRECT`, `TPROXY` or `NONE` (any case).
pub fn parse_mode(value: &str) -> Result<InterceptionMode, String> {
    match value.trim().to_ascii_uppercase().as_str() {
        "REDIRECT" => Ok(InterceptionMode::Redirect),
        "TPROXY" => Ok(InterceptionMode::Tproxy),
        "NONE" => Ok(InterceptionMode::None),
        _ => Err(format!(
            "invalid interception mode '{value}': use REDIRECT, TPROXY or NONE"
        )),
    }
}

/// Everything the redirect rules of one pod depend on (the istio-iptables flags, parsed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureSettings {
    /// REDIRECT, TPROXY or NONE (`-m`).
    pub mode: InterceptionMode,
    /// Port the proxy accepts captured outbound connections on (`-p`).
    pub outbound_port: u16,
    /// Port the proxy accepts captured inbound connections on (`-z`).
    pub inbound_port: u16,
    /// HBONE tunnel port, never captured inbound (`-e`).
    pub tunnel_port: u16,
    /// UID whose traffic is never captured: the proxy's (`-u`).
    pub proxy_uid: u32,
    /// GID whose traffic is never captured (`-g`).
    pub proxy_gid: u32,
    /// Inbound ports to capture (`-b`).
    pub inbound_ports: PortSelection,
    /// Inbound ports to leave alone when every port is captured (`-d`).
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destinations to capture (`-i`).
    pub include_outbound_cidrs: CidrSelection,
    /// Outbound destinations to leave alone (`-x`).
    pub exclude_outbound_cidrs: Vec<Cidr>,
    /// Outbound ports captured whatever the destination (`-q`).
    pub include_outbound_ports: Vec<u16>,
    /// Outbound ports to leave alone (`-o`).
    pub exclude_outbound_ports: Vec<u16>,
    /// Interfaces whose traffic is never captured (`-c`).
    pub exclude_interfaces: Vec<String>,
    /// Virtual interfaces whose incoming traffic is treated as outbound (`-k`).
    pub reroute_interfaces: Vec<String>,
}

impl Default for CaptureSettings {
    /// Istio's defaults: what `ferry inject` writes for a pod without annotations.
    fn default() -> Self {
        CaptureSettings {
            mode: InterceptionMode::Redirect,
            outbound_port: 15001,
            inbound_port: 15006,
            tunnel_port: DEFAULT_TUNNEL_PORT,
            proxy_uid: 1337,
            proxy_gid: 1337,
            inbound_ports: PortSelection::All,
            exclude_inbound_ports: vec![15090, 15021, 15020],
            include_outbound_cidrs: CidrSelection::All,
            exclude_outbound_cidrs: Vec::new(),
            include_outbound_ports: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            exclude_interfaces: Vec::new(),
            reroute_interfaces: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_print() {
        let table: &[(&str, Result<&str, ()>)] = &[
            ("10.0.0.0/8", Ok("10.0.0.0/8")),
            ("fd00::/8", Ok("fd00::/8")),
            ("::1/128", Ok("::1/128")),
            ("10.0.0.0/33", Err(())),
            ("10.0.0.0", Err(())),
            ("fd00::/129", Err(())),
            ("x/8", Err(())),
        ];
        for (input, want) in table {
            let got = input.parse::<Cidr>().map(|c| c.to_string()).map_err(|_| ());
            assert_eq!(got, want.map(String::from), "{input}");
        }
    }

    #[test]
    fn selections() {
        assert_eq!(PortSelection::parse("*"), Ok(PortSelection::All));
        assert_eq!(PortSelection::parse(""), Ok(PortSelection::Only(vec![])));
        assert_eq!(
            PortSelection::parse("80, 443"),
            Ok(PortSelection::Only(vec![80, 443]))
        );
        assert!(PortSelection::parse("80,x").is_err());
        assert_eq!(CidrSelection::parse(" * "), Ok(CidrSelection::All));
        let only = CidrSelection::parse("10.0.0.0/8,127.0.0.1/32").expect("valid");
        assert!(only.has_loopback());
        assert!(!CidrSelection::All.has_loopback());
        assert!(CidrSelection::parse("10.0.0.0/8,bad").is_err());
    }

    #[test]
    fn cidr_lists_split_by_family() {
        let list = parse_cidr_list("10.0.0.0/8,fd00::/8").expect("valid");
        let families: Vec<Family> = list.iter().map(Cidr::family).collect();
        assert_eq!(families, vec![Family::V4, Family::V6]);
        assert_eq!(parse_cidr_list(""), Ok(vec![]));
        assert!(parse_cidr_list("*").is_err());
    }

    #[test]
    fn interfaces_and_modes() {
        assert_eq!(
            parse_interfaces("eth1, net+ ,"),
            Ok(vec!["eth1".to_string(), "net+".to_string()])
        );
        assert_eq!(parse_interfaces(""), Ok(vec![]));
        assert!(parse_interfaces("eth0\n-A OUTPUT").is_err());
        assert!(parse_interfaces("averyveryverylongname").is_err());
        assert_eq!(parse_mode("redirect"), Ok(InterceptionMode::Redirect));
        assert_eq!(parse_mode("TPROXY"), Ok(InterceptionMode::Tproxy));
        assert_eq!(parse_mode("NONE"), Ok(InterceptionMode::None));
        assert!(parse_mode("DNAT").is_err());
    }
}
