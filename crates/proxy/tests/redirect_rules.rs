//! Table tests of the generated nat rules: for each set of flags, the exact rules per family.

use ferry_inject::annotations::InterceptionMode;
use ferry_proxy::redirect::settings::parse_cidr_list;
use ferry_proxy::redirect::{
    CaptureSettings, CidrSelection, Family, PortSelection, RulesError, dry_run, nat_rules,
};

/// The rules of one family as `-A CHAIN SPEC` lines.
fn render(settings: &CaptureSettings, family: Family) -> String {
    nat_rules(settings, family)
        .expect("REDIRECT rules")
        .iter()
        .map(|r| format!("-A {} {}\n", r.chain, r.spec))
        .collect()
}

/// The default chain heads and tails around the variable part, for one family.
const REDIRECTS: &str = "\
-A FERRY_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A FERRY_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
";
const DEFAULT_INBOUND: &str = "\
-A FERRY_INBOUND -p tcp --dport 15008 -j RETURN
-A FERRY_INBOUND -p tcp --dport 15090 -j RETURN
-A FERRY_INBOUND -p tcp --dport 15021 -j RETURN
-A FERRY_INBOUND -p tcp --dport 15020 -j RETURN
-A FERRY_INBOUND -p tcp -j FERRY_IN_REDIRECT
";
const OWNER_V4: &str = "\
-A FERRY_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A FERRY_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j FERRY_IN_REDIRECT
-A FERRY_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A FERRY_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A FERRY_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j FERRY_IN_REDIRECT
-A FERRY_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A FERRY_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A FERRY_OUTPUT -d 127.0.0.1/32 -j RETURN
";
const OWNER_V6: &str = "\
-A FERRY_OUTPUT -o lo -s ::6/128 -j RETURN
-A FERRY_OUTPUT -o lo ! -d ::1/128 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j FERRY_IN_REDIRECT
-A FERRY_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A FERRY_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A FERRY_OUTPUT -o lo ! -d ::1/128 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j FERRY_IN_REDIRECT
-A FERRY_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A FERRY_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A FERRY_OUTPUT -d ::1/128 -j RETURN
";
const JUMPS: &str = "\
-A PREROUTING -j FERRY_INBOUND
-A OUTPUT -j FERRY_OUTPUT
";

fn cidrs(list: &str) -> Vec<ferry_proxy::redirect::Cidr> {
    parse_cidr_list(list).expect("valid cidrs")
}

#[test]
fn defaults_print_one_atomic_script_per_family() {
    let text = dry_run(&CaptureSettings::default()).expect("rules");
    let v4 = format!(
        "# IPv4: iptables-restore --noflush\n*nat\n:FERRY_INBOUND - [0:0]\n:FERRY_IN_REDIRECT - [0:0]\n\
         :FERRY_OUTPUT - [0:0]\n:FERRY_REDIRECT - [0:0]\n{REDIRECTS}{DEFAULT_INBOUND}{OWNER_V4}\
         -A FERRY_OUTPUT -j FERRY_REDIRECT\n{JUMPS}COMMIT\n"
    );
    let v6 = format!(
        "# IPv6: ip6tables-restore --noflush\n*nat\n:FERRY_INBOUND - [0:0]\n:FERRY_IN_REDIRECT - [0:0]\n\
         :FERRY_OUTPUT - [0:0]\n:FERRY_REDIRECT - [0:0]\n{REDIRECTS}{DEFAULT_INBOUND}{OWNER_V6}\
         -A FERRY_OUTPUT -j FERRY_REDIRECT\n{JUMPS}COMMIT\n"
    );
    assert_eq!(text, format!("{v4}{v6}"));
}

/// One case: settings, then the variable parts (inbound, before-owner, after-owner) per family.
struct Case {
    name: &'static str,
    settings: CaptureSettings,
    inbound: &'static str,
    output_head: &'static str,
    output_tail_v4: &'static str,
    output_tail_v6: &'static str,
}

#[test]
fn rule_table() {
    let d = CaptureSettings::default;
    let cases = vec![
        Case {
            name: "excluded inbound and outbound ports",
            settings: CaptureSettings {
                exclude_inbound_ports: vec![6379, 22],
                exclude_outbound_ports: vec![16379, 3306],
                ..d()
            },
            inbound: "\
-A FERRY_INBOUND -p tcp --dport 15008 -j RETURN
-A FERRY_INBOUND -p tcp --dport 6379 -j RETURN
-A FERRY_INBOUND -p tcp --dport 22 -j RETURN
-A FERRY_INBOUND -p tcp -j FERRY_IN_REDIRECT
",
            output_head: "\
-A FERRY_OUTPUT -p tcp --dport 16379 -j RETURN
-A FERRY_OUTPUT -p tcp --dport 3306 -j RETURN
",
            output_tail_v4: "-A FERRY_OUTPUT -j FERRY_REDIRECT\n",
            output_tail_v6: "-A FERRY_OUTPUT -j FERRY_REDIRECT\n",
        },
        Case {
            name: "included and excluded CIDRs split by family",
            settings: CaptureSettings {
                include_outbound_cidrs: CidrSelection::Only(cidrs(
                    "10.0.0.0/8,fd00::/8,172.16.0.0/12",
                )),
                exclude_outbound_cidrs: cidrs("10.1.0.0/16,fd00:1::/32"),
                ..d()
            },
            inbound: DEFAULT_INBOUND,
            output_head: "",
            output_tail_v4: "\
-A FERRY_OUTPUT -d 10.1.0.0/16 -j RETURN
-A FERRY_OUTPUT -d 10.0.0.0/8 -j FERRY_REDIRECT
-A FERRY_OUTPUT -d 172.16.0.0/12 -j FERRY_REDIRECT
",
            output_tail_v6: "\
-A FERRY_OUTPUT -d fd00:1::/32 -j RETURN
-A FERRY_OUTPUT -d fd00::/8 -j FERRY_REDIRECT
",
        },
        Case {
            name: "only IPv4 CIDRs included: IPv6 captures nothing by destination",
            settings: CaptureSettings {
                include_outbound_cidrs: CidrSelection::Only(cidrs("10.0.0.0/8")),
                ..d()
            },
            inbound: DEFAULT_INBOUND,
            output_head: "",
            output_tail_v4: "-A FERRY_OUTPUT -d 10.0.0.0/8 -j FERRY_REDIRECT\n",
            output_tail_v6: "",
        },
        Case {
            name: "inbound port list (-b): excluded ports do not apply",
            settings: CaptureSettings {
                inbound_ports: PortSelection::Only(vec![6379, 26379]),
                ..d()
            },
            inbound: "\
-A FERRY_INBOUND -p tcp --dport 15008 -j RETURN
-A FERRY_INBOUND -p tcp --dport 6379 -j FERRY_IN_REDIRECT
-A FERRY_INBOUND -p tcp --dport 26379 -j FERRY_IN_REDIRECT
",
            output_head: "",
            output_tail_v4: "-A FERRY_OUTPUT -j FERRY_REDIRECT\n",
            output_tail_v6: "-A FERRY_OUTPUT -j FERRY_REDIRECT\n",
        },
        Case {
            name: "empty inbound port list: no inbound capture",
            settings: CaptureSettings {
                inbound_ports: PortSelection::Only(vec![]),
                ..d()
            },
            inbound: "-A FERRY_INBOUND -p tcp --dport 15008 -j RETURN\n",
            output_head: "",
            output_tail_v4: "-A FERRY_OUTPUT -j FERRY_REDIRECT\n",
            output_tail_v6: "-A FERRY_OUTPUT -j FERRY_REDIRECT\n",
        },
        Case {
            name: "included outbound ports (-q) with no CIDR captured",
            settings: CaptureSettings {
                include_outbound_ports: vec![443, 6379],
                include_outbound_cidrs: CidrSelection::Only(vec![]),
                ..d()
            },
            inbound: DEFAULT_INBOUND,
            output_head: "",
            output_tail_v4: "\
-A FERRY_OUTPUT -p tcp --dport 443 -j FERRY_REDIRECT
-A FERRY_OUTPUT -p tcp --dport 6379 -j FERRY_REDIRECT
",
            output_tail_v6: "\
-A FERRY_OUTPUT -p tcp --dport 443 -j FERRY_REDIRECT
-A FERRY_OUTPUT -p tcp --dport 6379 -j FERRY_REDIRECT
",
        },
        Case {
            name: "excluded (-c) and rerouted (-k) interfaces",
            settings: CaptureSettings {
                exclude_interfaces: vec!["net1".into()],
                reroute_interfaces: vec!["tap0".into(), "tap1".into()],
                ..d()
            },
            inbound: "\
-A FERRY_INBOUND -i tap0 -p tcp -j FERRY_REDIRECT
-A FERRY_INBOUND -i tap0 -j RETURN
-A FERRY_INBOUND -i tap1 -p tcp -j FERRY_REDIRECT
-A FERRY_INBOUND -i tap1 -j RETURN
-A FERRY_INBOUND -i net1 -j RETURN
-A FERRY_INBOUND -p tcp --dport 15008 -j RETURN
-A FERRY_INBOUND -p tcp --dport 15090 -j RETURN
-A FERRY_INBOUND -p tcp --dport 15021 -j RETURN
-A FERRY_INBOUND -p tcp --dport 15020 -j RETURN
-A FERRY_INBOUND -p tcp -j FERRY_IN_REDIRECT
",
            output_head: "-A FERRY_OUTPUT -o net1 -j RETURN\n",
            output_tail_v4: "-A FERRY_OUTPUT -j FERRY_REDIRECT\n",
            output_tail_v6: "-A FERRY_OUTPUT -j FERRY_REDIRECT\n",
        },
        Case {
            name: "rerouted interface with included CIDRs",
            settings: CaptureSettings {
                reroute_interfaces: vec!["tap0".into()],
                include_outbound_cidrs: CidrSelection::Only(cidrs("10.0.0.0/8,fd00::/8")),
                exclude_inbound_ports: vec![],
                ..d()
            },
            inbound: "\
-A FERRY_INBOUND -i tap0 -d {CIDR} -p tcp -j FERRY_REDIRECT
-A FERRY_INBOUND -i tap0 -j RETURN
-A FERRY_INBOUND -p tcp --dport 15008 -j RETURN
-A FERRY_INBOUND -p tcp -j FERRY_IN_REDIRECT
",
            output_head: "",
            output_tail_v4: "-A FERRY_OUTPUT -d 10.0.0.0/8 -j FERRY_REDIRECT\n",
            output_tail_v6: "-A FERRY_OUTPUT -d fd00::/8 -j FERRY_REDIRECT\n",
        },
    ];
    for case in cases {
        for (family, owner, tail, cidr) in [
            (Family::V4, OWNER_V4, case.output_tail_v4, "10.0.0.0/8"),
            (Family::V6, OWNER_V6, case.output_tail_v6, "fd00::/8"),
        ] {
            let inbound = case.inbound.replace("{CIDR}", cidr);
            let want = format!(
                "{REDIRECTS}{inbound}{}{owner}{tail}{JUMPS}",
                case.output_head
            );
            assert_eq!(
                render(&case.settings, family),
                want,
                "{} ({family:?})",
                case.name
            );
        }
    }
}

#[test]
fn proxy_uid_and_gid_and_ports_are_used() {
    let settings = CaptureSettings {
        proxy_uid: 2000,
        proxy_gid: 3000,
        outbound_port: 16001,
        inbound_port: 16006,
        tunnel_port: 16008,
        ..Default::default()
    };
    let v4 = render(&settings, Family::V4);
    assert!(v4.contains("-A FERRY_REDIRECT -p tcp -j REDIRECT --to-ports 16001\n"));
    assert!(v4.contains("-A FERRY_IN_REDIRECT -p tcp -j REDIRECT --to-ports 16006\n"));
    assert!(v4.contains("-A FERRY_INBOUND -p tcp --dport 16008 -j RETURN\n"));
    assert!(v4.contains("! --dport 16008 -m owner --uid-owner 2000 -j FERRY_IN_REDIRECT\n"));
    assert!(v4.contains("-A FERRY_OUTPUT -m owner --gid-owner 3000 -j RETURN\n"));
    assert!(!v4.contains("1337"));
}

#[test]
fn loopback_included_explicitly_keeps_loopback_captured() {
    let settings = CaptureSettings {
        include_outbound_cidrs: CidrSelection::Only(cidrs("127.0.0.1/32,10.0.0.0/8")),
        ..Default::default()
    };
    for family in [Family::V4, Family::V6] {
        let rules = render(&settings, family);
        assert!(!rules.contains("-o lo -m owner !"), "{family:?}: {rules}");
        assert!(rules.contains("-m owner --uid-owner 1337 -j RETURN"));
    }
}

#[test]
fn none_gives_no_rules_and_tproxy_is_refused() {
    let none = CaptureSettings {
        mode: InterceptionMode::None,
        ..Default::default()
    };
    for family in [Family::V4, Family::V6] {
        assert_eq!(nat_rules(&none, family), Ok(vec![]));
    }
    assert_eq!(
        dry_run(&none).expect("none"),
        "# IPv4: iptables-restore --noflush\n# IPv6: ip6tables-restore --noflush\n"
    );
    let tproxy = CaptureSettings {
        mode: InterceptionMode::Tproxy,
        ..Default::default()
    };
    assert_eq!(
        nat_rules(&tproxy, Family::V4),
        Err(RulesError::TproxyUnsupported)
    );
}
