//! The traffic-capture settings of one pod, and the `ferry-init` arguments that carry them
//! to `ferry proxy-init`. The flags are istio-iptables' own, so a reader who knows Istio's
//! init container reads Ferry's at a glance.

use crate::annotations::{InterceptionMode, PodSettings};

/// Outbound capture port.
pub const OUTBOUND_CAPTURE_PORT: u16 = 15001;
/// Inbound capture port.
pub const INBOUND_CAPTURE_PORT: u16 = 15006;
/// UID and GID the proxy runs as; its own traffic is never captured.
pub const PROXY_UID: u32 = 1337;
/// Prometheus port of the proxy.
pub const METRICS_PORT: u16 = 15090;
/// Health port of the proxy (`/healthz/ready`).
pub const HEALTH_PORT: u16 = 15021;
/// Default status port (merged metrics, application probes).
pub const DEFAULT_STATUS_PORT: u16 = 15020;

/// What `ferry proxy-init` installs in the pod's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectConfig {
    /// REDIRECT or TPROXY.
    pub mode: InterceptionMode,
    /// Outbound capture port (`-p`).
    pub outbound_port: u16,
    /// Inbound capture port (`-z`).
    pub inbound_port: u16,
    /// UID exempt from capture (`-u`).
    pub proxy_uid: u32,
    /// Outbound CIDRs to capture (`-i`): `*` or a comma list.
    pub include_outbound_ip_ranges: String,
    /// Outbound CIDRs to leave alone (`-x`).
    pub exclude_outbound_ip_ranges: Vec<String>,
    /// Inbound ports to capture (`-b`): `*` or a comma list.
    pub include_inbound_ports: String,
    /// Inbound ports to leave alone (`-d`).
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound ports to capture regardless of destination (`-q`).
    pub include_outbound_ports: Vec<u16>,
    /// Outbound ports to leave alone (`-o`).
    pub exclude_outbound_ports: Vec<u16>,
    /// Interfaces never captured (`-c`).
    pub exclude_interfaces: Vec<String>,
    /// Virtual interfaces rerouted to the outbound path (`-k`).
    pub reroute_virtual_interfaces: Vec<String>,
}

fn join<T: ToString>(items: &[T]) -> String {
    items.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

impl RedirectConfig {
    /// The capture settings for a pod: Istio's defaults overlaid with its annotations.
    /// `None` when the pod asked for no interception.
    pub fn for_pod(settings: &PodSettings, status_port: u16) -> Option<Self> {
        let mode = settings
            .interception_mode
            .unwrap_or(InterceptionMode::Redirect);
        if mode == InterceptionMode::None {
            return None;
        }
        let mut exclude_inbound = vec![METRICS_PORT, HEALTH_PORT];
        if status_port != 0 {
            exclude_inbound.push(status_port);
        }
        for port in &settings.exclude_inbound_ports {
            if !exclude_inbound.contains(port) {
                exclude_inbound.push(*port);
            }
        }
        Some(Self {
            mode,
            outbound_port: OUTBOUND_CAPTURE_PORT,
            inbound_port: INBOUND_CAPTURE_PORT,
            proxy_uid: PROXY_UID,
            include_outbound_ip_ranges: settings
                .include_outbound_ip_ranges
                .clone()
                .unwrap_or_else(|| "*".into()),
            exclude_outbound_ip_ranges: settings.exclude_outbound_ip_ranges.clone(),
            include_inbound_ports: settings
                .include_inbound_ports
                .clone()
                .unwrap_or_else(|| "*".into()),
            exclude_inbound_ports: exclude_inbound,
            include_outbound_ports: settings.include_outbound_ports.clone(),
            exclude_outbound_ports: settings.exclude_outbound_ports.clone(),
            exclude_interfaces: settings.exclude_interfaces.clone(),
            reroute_virtual_interfaces: settings.reroute_virtual_interfaces.clone(),
        })
    }

    /// The `ferry-init` container arguments (`proxy-init -p 15001 -z 15006 ...`).
    pub fn to_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "proxy-init".into(),
            "-p".into(),
            self.outbound_port.to_string(),
            "-z".into(),
            self.inbound_port.to_string(),
            "-u".into(),
            self.proxy_uid.to_string(),
            "-m".into(),
            self.mode.as_str().into(),
            "-i".into(),
            self.include_outbound_ip_ranges.clone(),
            "-x".into(),
            join(&self.exclude_outbound_ip_ranges),
            "-b".into(),
            self.include_inbound_ports.clone(),
            "-d".into(),
            join(&self.exclude_inbound_ports),
        ];
        let optional = [
            ("-q", join(&self.include_outbound_ports)),
            ("-o", join(&self.exclude_outbound_ports)),
            ("-k", self.reroute_virtual_interfaces.join(",")),
            ("-c", self.exclude_interfaces.join(",")),
        ];
        for (flag, value) in optional {
            if !value.is_empty() {
                args.push(flag.into());
                args.push(value);
            }
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_istio() {
        let cfg = RedirectConfig::for_pod(&PodSettings::default(), DEFAULT_STATUS_PORT)
            .expect("redirect by default");
        assert_eq!(
            cfg.to_args().join(" "),
            "proxy-init -p 15001 -z 15006 -u 1337 -m REDIRECT -i * -x  -b * -d 15090,15021,15020"
        );
    }

    #[test]
    fn annotations_extend_the_defaults() {
        let settings = PodSettings {
            exclude_inbound_ports: vec![6379, 15020],
            exclude_outbound_ports: vec![16379],
            include_outbound_ports: vec![443],
            include_outbound_ip_ranges: Some("10.0.0.0/8".into()),
            exclude_outbound_ip_ranges: vec!["10.1.0.0/16".into()],
            exclude_interfaces: vec!["net1".into()],
            reroute_virtual_interfaces: vec!["tap0".into()],
            interception_mode: Some(InterceptionMode::Tproxy),
            ..Default::default()
        };
        let args = RedirectConfig::for_pod(&settings, 15020)
            .expect("tproxy")
            .to_args()
            .join(" ");
        assert_eq!(
            args,
            "proxy-init -p 15001 -z 15006 -u 1337 -m TPROXY -i 10.0.0.0/8 -x 10.1.0.0/16 -b * \
             -d 15090,15021,15020,6379 -q 443 -o 16379 -k tap0 -c net1"
        );
    }

    #[test]
    fn none_mode_and_status_port_zero() {
        let none = PodSettings {
            interception_mode: Some(InterceptionMode::None),
            ..Default::default()
        };
        assert_eq!(RedirectConfig::for_pod(&none, 15020), None);
        let cfg = RedirectConfig::for_pod(&PodSettings::default(), 0).expect("redirect");
        assert_eq!(cfg.exclude_inbound_ports, vec![15090, 15021]);
    }
}
