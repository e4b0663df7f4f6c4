//! Root tests of `ferry proxy-init` inside network namespaces the tests create: the rules it
//! installs (nft and legacy backends), that a second run changes nothing, that `--cleanup`
//! restores the exact earlier rule set, and that traffic really is redirected (and the
//! proxy's own traffic is not). Everything created is removed by drop guards, even when an
//! assertion fails. Without root the tests print a notice and pass.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use support::netns::{Netns, assert_gone, can_run, describe, python, run};

use ferry_inject::annotations::PodSettings;
use ferry_inject::redirect::RedirectConfig;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

impl Netns {
    /// Runs `ferry proxy-init ARGS` inside the namespace; must succeed.
    fn proxy_init(&self, args: &[String]) -> String {
        let mut full: Vec<&str> = vec![FERRY];
        full.extend(args.iter().map(String::as_str));
        self.ok(&full)
    }

    /// The namespace's rules for one iptables variant (`iptables-nft`, `ip6tables-legacy`,
    /// ...), every table, without comments and counters.
    fn save(&self, variant: &str) -> String {
        let raw = self.ok(&[&format!("{variant}-save")]);
        raw.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| match l.find(" [") {
                Some(at) if l.starts_with(':') => format!("{} [0:0]", &l[..at]),
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Starts a tagging TCP server inside the namespace and waits until it listens.
    fn serve(&mut self, tag: &str, ports: &[u16]) {
        let mut args: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            self.name.clone(),
            python().into(),
            "-c".into(),
            SERVER.into(),
            tag.into(),
        ];
        args.extend(ports.iter().map(u16::to_string));
        let mut child = Command::new("ip")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the test server");
        let stdout = child.stdout.take();
        self.children.push(child);
        let mut line = String::new();
        if let Some(stdout) = stdout {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        assert_eq!(line.trim(), "ready", "test server {tag} did not start");
    }

    /// Connects from inside the namespace as `uid`/`gid`; returns what the server said.
    fn connect(&self, uid: u32, gid: u32, addr: &str, port: u16) -> String {
        let (uid, gid, port) = (uid.to_string(), gid.to_string(), port.to_string());
        let out = self.ok(&[
            "setpriv",
            "--reuid",
            &uid,
            "--regid",
            &gid,
            "--clear-groups",
            python(),
            "-c",
            CLIENT,
            addr,
            &port,
        ]);
        out.trim().to_string()
    }
}

/// Listens on the given ports (all addresses); answers each connection with
/// `TAG:PORT:ORIGINAL_DESTINATION` and closes it. Exits when its stdin closes.
const SERVER: &str = r#"
import socket, struct, sys, threading
tag, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
def original(c):
    try:
        raw = c.getsockopt(socket.SOL_IP, 80, 16)
        return '%s:%d' % (socket.inet_ntoa(raw[4:8]), struct.unpack('!H', raw[2:4])[0])
    except OSError:
        return 'none'
def serve(s, port):
    while True:
        c, _ = s.accept()
        try:
            c.sendall(('%s:%d:%s\n' % (tag, port, original(c))).encode())
        finally:
            c.close()
for port in ports:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', port))
    s.listen(16)
    threading.Thread(target=serve, args=(s, port), daemon=True).start()
print('ready', flush=True)
sys.stdin.read()
"#;

/// Connects to ADDR PORT and prints the server's line (or the error).
const CLIENT: &str = r#"
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    s.settimeout(3)
    print(s.recv(200).decode().strip())
except OSError as e:
    print('error: %s' % e)
"#;

/// The `ferry-init` arguments `ferry inject` writes for a pod without annotations.
fn injector_args() -> Vec<String> {
    RedirectConfig::for_pod(&PodSettings::default(), 15020)
        .expect("redirect by default")
        .to_args()
}

/// Rules unrelated to Ferry that must survive install and cleanup untouched.
const OTHER_RULES: &str = "\
*nat
:OTHER - [0:0]
-A PREROUTING -p udp --dport 5353 -j OTHER
-A OUTPUT -p udp --dport 5353 -j RETURN
-A OTHER -j RETURN
COMMIT
*filter
-A INPUT -p tcp --dport 9 -j ACCEPT
COMMIT
";

fn lifecycle(backend: &str) {
    let (v4, v6) = (
        format!("iptables-{backend}"),
        format!("ip6tables-{backend}"),
    );
    if !can_run(&["ip", "setpriv", &v4, &v6]) {
        return;
    }
    let name;
    {
        let ns = Netns::new(backend);
        name = ns.name.clone();
        for variant in [&v4, &v6] {
            ns.ok_with_input(
                &[&format!("{variant}-restore"), "--noflush", "--wait=30"],
                Some(OTHER_RULES),
            );
        }
        let before = (ns.save(&v4), ns.save(&v6));

        let mut args = injector_args();
        args.extend(["--iptables-backend".to_string(), backend.to_string()]);
        let report = ns.proxy_init(&args);
        assert!(
            report.contains(&format!("IPv4: rules installed with {v4}-restore")),
            "{report}"
        );
        let installed = (ns.save(&v4), ns.save(&v6));
        for (save, loopback, source) in [
            (&installed.0, "127.0.0.1/32", "127.0.0.6/32"),
            (&installed.1, "::1/128", "::6/128"),
        ] {
            for line in [
                "-A PREROUTING -p udp -m udp --dport 5353 -j OTHER\n-A PREROUTING -j FERRY_INBOUND"
                    .to_string(),
                "-A OUTPUT -p udp -m udp --dport 5353 -j RETURN\n-A OUTPUT -j FERRY_OUTPUT"
                    .to_string(),
                "-A FERRY_INBOUND -p tcp -m tcp --dport 15008 -j RETURN".to_string(),
                "-A FERRY_INBOUND -p tcp -m tcp --dport 15090 -j RETURN".to_string(),
                "-A FERRY_INBOUND -p tcp -m tcp --dport 15021 -j RETURN".to_string(),
                "-A FERRY_INBOUND -p tcp -m tcp --dport 15020 -j RETURN".to_string(),
                "-A FERRY_INBOUND -p tcp -j FERRY_IN_REDIRECT".to_string(),
                "-A FERRY_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006".to_string(),
                format!("-A FERRY_OUTPUT -s {source} -o lo -j RETURN"),
                format!(
                    "-A FERRY_OUTPUT ! -d {loopback} -o lo -p tcp -m tcp ! --dport 15008 \
                     -m owner --uid-owner 1337 -j FERRY_IN_REDIRECT"
                ),
                "-A FERRY_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN".to_string(),
                "-A FERRY_OUTPUT -m owner --gid-owner 1337 -j RETURN".to_string(),
                format!("-A FERRY_OUTPUT -d {loopback} -j RETURN"),
                "-A FERRY_OUTPUT -j FERRY_REDIRECT".to_string(),
                "-A FERRY_REDIRECT -p tcp -j REDIRECT --to-ports 15001".to_string(),
            ] {
                assert!(save.contains(&line), "missing {line:?} in\n{save}");
            }
        }

        ns.proxy_init(&args);
        assert_eq!(
            (ns.save(&v4), ns.save(&v6)),
            installed,
            "a second run changed the rules"
        );

        let removed = ns.proxy_init(&[
            "proxy-init".into(),
            "--cleanup".into(),
            "--iptables-backend".into(),
            backend.into(),
        ]);
        assert!(removed.contains("IPv4: rules removed"), "{removed}");
        assert_eq!(
            (ns.save(&v4), ns.save(&v6)),
            before,
            "cleanup left a difference"
        );
        let again = ns.proxy_init(&[
            "proxy-init".into(),
            "--cleanup".into(),
            "--iptables-backend".into(),
            backend.into(),
        ]);
        assert!(again.contains("IPv4: no Ferry rules to remove"), "{again}");
        assert_eq!((ns.save(&v4), ns.save(&v6)), before);
    }
    assert_gone(&[name]);
}

#[test]
fn nft_install_is_idempotent_and_cleanup_restores_the_rules() {
    lifecycle("nft");
}

#[test]
fn legacy_install_is_idempotent_and_cleanup_restores_the_rules() {
    lifecycle("legacy");
}

#[test]
fn auto_detection_follows_existing_legacy_rules() {
    if !can_run(&["ip", "iptables-nft", "iptables-legacy"]) {
        return;
    }
    let name;
    {
        let ns = Netns::new("auto");
        name = ns.name.clone();
        ns.ok_with_input(
            &["iptables-legacy-restore", "--noflush", "--wait=30"],
            Some(OTHER_RULES),
        );
        let report = ns.proxy_init(&injector_args());
        assert!(report.contains("(legacy backend)"), "{report}");
        assert!(
            ns.save("iptables-legacy")
                .contains("-A OUTPUT -j FERRY_OUTPUT")
        );
        assert!(!ns.save("iptables-nft").contains("FERRY"));
        ns.proxy_init(&["proxy-init".into(), "--cleanup".into()]);
        assert!(!ns.save("iptables-legacy").contains("FERRY"));
    }
    assert_gone(&[name]);
}

#[test]
fn traffic_is_redirected_except_the_proxys_own() {
    if !can_run(&["ip", "setpriv", "iptables-nft", python()]) {
        return;
    }
    let names;
    {
        let mut pod = Netns::new("pod");
        let mut peer = Netns::new("peer");
        names = [pod.name.clone(), peer.name.clone()];
        // A veth pair created inside the pod namespace, its peer end moved to the peer one:
        // nothing is ever created in the host's namespace.
        pod.ok(&[
            "ip", "link", "add", "ferry0", "type", "veth", "peer", "name", "ferry1", "netns",
            &peer.name,
        ]);
        pod.ok(&["ip", "addr", "add", "198.18.0.1/24", "dev", "ferry0"]);
        pod.ok(&["ip", "link", "set", "ferry0", "up"]);
        peer.ok(&["ip", "addr", "add", "198.18.0.2/24", "dev", "ferry1"]);
        peer.ok(&["ip", "link", "set", "ferry1", "up"]);

        pod.serve("pod", &[15001, 15006, 15021, 8080]);
        peer.serve("peer", &[80]);
        // Before the rules: direct.
        assert!(
            pod.connect(1000, 1000, "198.18.0.2", 80)
                .starts_with("peer:80:")
        );

        let mut args = injector_args();
        args.extend(["--iptables-backend".to_string(), "nft".to_string()]);
        pod.proxy_init(&args);

        // The application's outbound connection lands on the outbound port, with its
        // original destination readable.
        assert_eq!(
            pod.connect(1000, 1000, "198.18.0.2", 80),
            "pod:15001:198.18.0.2:80"
        );
        // The proxy's own connections (uid 1337, or gid 1337) go out untouched.
        assert!(
            pod.connect(1337, 1337, "198.18.0.2", 80)
                .starts_with("peer:80:")
        );
        assert!(
            pod.connect(1000, 1337, "198.18.0.2", 80)
                .starts_with("peer:80:")
        );
        // Loopback traffic of the application is not captured.
        assert!(
            pod.connect(1000, 1000, "127.0.0.1", 8080)
                .starts_with("pod:8080:")
        );
        // Inbound connections land on the inbound port, except to excluded ports.
        assert_eq!(
            peer.connect(0, 0, "198.18.0.1", 8080),
            "pod:15006:198.18.0.1:8080"
        );
        assert!(
            peer.connect(0, 0, "198.18.0.1", 15021)
                .starts_with("pod:15021:")
        );

        pod.proxy_init(&["proxy-init".into(), "--cleanup".into()]);
        assert!(
            pod.connect(1000, 1000, "198.18.0.2", 80)
                .starts_with("peer:80:")
        );
        assert!(
            peer.connect(0, 0, "198.18.0.1", 8080)
                .starts_with("pod:8080:")
        );
    }
    assert_gone(&names);
}

#[test]
fn dry_run_prints_both_families_and_needs_no_privileges() {
    let mut args = injector_args();
    args.push("--dry-run".into());
    let out = run(
        FERRY,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        None,
    );
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("# IPv4: iptables-restore --noflush\n*nat\n"),
        "{text}"
    );
    assert!(text.contains("# IPv6: ip6tables-restore --noflush\n*nat\n"));
    assert!(text.contains("-A FERRY_OUTPUT -o lo -s ::6/128 -j RETURN\n"));
    assert_eq!(text.matches("COMMIT\n").count(), 2);

    let out = run(FERRY, &["proxy-init", "-m", "TPROXY", "--dry-run"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TPROXY is not supported yet"));
    let out = run(
        FERRY,
        &["proxy-init", "-x", "", "-d", "15020,nope", "--dry-run"],
        None,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("invalid -d/--istio-local-exclude-ports: failed parsing port 'nope'")
    );
}
