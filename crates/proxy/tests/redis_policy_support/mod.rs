//! A real `redis-server` per pod (on its own loopback address, as pods have their own IPs)
//! and a small RESP2 client that reads replies one by one.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A `redis-server` process, killed on drop.
pub struct RedisServer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `redis-server` can run here (CI must have it).
pub fn have_redis() -> bool {
    let ok = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is not installed"
        );
        eprintln!("skipping: redis-server is not installed (apt-get install redis-server)");
    }
    ok
}

/// Starts `redis-server` on `ip:port`.
pub fn redis_on(ip: IpAddr, port: u16) -> RedisServer {
    crate::routing_support::release(SocketAddr::new(ip, port));
    let child = Command::new("redis-server")
        .args([
            "--bind",
            &ip.to_string(),
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let server = RedisServer {
        child,
        addr: SocketAddr::new(ip, port),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(server.addr).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        thread::sleep(Duration::from_millis(20));
    }
    server
}

/// A RESP reply, simplified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+...`
    Simple(String),
    /// `-...`
    Error(String),
    /// `:...`
    Int(i64),
    /// `$...`
    Bulk(Option<String>),
    /// `*...`
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// Whether it is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }
}

/// A client connection.
pub struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

/// The RESP encoding of a command.
pub fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

impl Client {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let _ = s.set_nodelay(true);
        Client {
            r: BufReader::new(s.try_clone().expect("clone")),
            w: s,
        }
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).expect("send");
    }

    /// Sends commands back to back (a pipeline).
    pub fn send(&mut self, commands: &[&[&str]]) {
        let mut out = Vec::new();
        for c in commands {
            out.extend(resp(c));
        }
        self.send_raw(&out);
    }

    /// Reads one reply.
    pub fn read(&mut self) -> Reply {
        let mut line = String::new();
        self.r.read_line(&mut line).expect("reply");
        let line = line.trim_end_matches("\r\n").to_string();
        let (kind, rest) = line.split_at(1.min(line.len()));
        match kind {
            "+" => Reply::Simple(rest.into()),
            "-" => Reply::Error(rest.into()),
            ":" => Reply::Int(rest.parse().expect("int")),
            "$" => {
                let n: i64 = rest.parse().expect("len");
                if n < 0 {
                    return Reply::Bulk(None);
                }
                let mut buf = vec![0u8; n as usize + 2];
                self.r.read_exact(&mut buf).expect("bulk");
                buf.truncate(n as usize);
                Reply::Bulk(Some(String::from_utf8_lossy(&buf).into()))
            }
            "*" => {
                let n: i64 = rest.parse().expect("count");
                if n < 0 {
                    return Reply::Array(None);
                }
                Reply::Array(Some((0..n).map(|_| self.read()).collect()))
            }
            other => panic!("unexpected reply type {other:?} in {line:?}"),
        }
    }

    /// Sends one command and reads its reply.
    pub fn call(&mut self, args: &[&str]) -> Reply {
        self.send(&[args]);
        self.read()
    }
}

/// Pods of the headless `redis` service, each a real `redis-server` on its own loopback
/// address, and proxies whose outbound port for it carries RedisPolicies. (Uses the routing
/// tests' helpers: every test binary with this module has `routing_support` too.)
pub struct RedisMesh {
    _servers: Vec<RedisServer>,
    /// The pods, in the order given.
    pub pods: Vec<crate::routing_support::Pod>,
    /// The port every server listens on.
    pub port: u16,
}

impl RedisMesh {
    /// Pods `(name, version label)` on the addresses from `base` on.
    pub fn new(base: u8, pods: &[(&str, &str)]) -> Self {
        use crate::routing_support::{pod, shared_port};
        let pods: Vec<_> = pods
            .iter()
            .zip(base..)
            .map(|((name, version), at)| pod(at, name, version))
            .collect();
        let ips: Vec<IpAddr> = pods.iter().map(|p| p.ip).collect();
        let port = shared_port(&ips);
        let servers = pods.iter().map(|p| redis_on(p.ip, port)).collect();
        Self {
            _servers: servers,
            pods,
            port,
        }
    }

    /// A proxy whose connections are dialled to pod `dst_pod` of the `redis` service, under
    /// `policies`.
    pub fn proxy(
        &self,
        dst_pod: usize,
        policies: Vec<ferry_proxy::config::RedisPortPolicy>,
    ) -> ferry_proxy::server::Running {
        use crate::routing_support::{
            client_identity, clusters_by_version, fqdn, outbound, service, start_proxy,
        };
        let host = fqdn("redis");
        let mut out = outbound(
            &host,
            self.port,
            ferry_proxy::config::Protocol::Redis,
            &[],
            Vec::new(),
        );
        out.redis_policies = policies;
        let config = ferry_proxy::config::ProxyConfig {
            identity: client_identity(&[("app", "client")]),
            services: vec![service("redis", None, "redis", self.port, &self.pods)],
            clusters: clusters_by_version(&host, self.port, &self.pods, true),
            outbound: vec![out],
            ..Default::default()
        };
        start_proxy(SocketAddr::new(self.pods[dst_pod].ip, self.port), config)
    }

    /// A client straight to pod `pod`'s server.
    pub fn direct(&self, pod: usize) -> Client {
        Client::connect(SocketAddr::new(self.pods[pod].ip, self.port))
    }
}

/// A fault answering `commands` with [`injected`] (at `pct` percent, else always).
pub fn abort(commands: &[&str], pct: Option<f64>) -> ferry_model::ferry::redis_policy::RedisFault {
    use ferry_model::ferry::redis_policy::{RedisAbort, RedisFault};
    RedisFault {
        commands: commands.iter().map(|c| c.to_string()).collect(),
        abort: Some(RedisAbort {
            error: Some("ERR injected by Ferry".into()),
            percentage: pct,
        }),
        delay: None,
    }
}

/// The error reply [`abort`] faults inject.
pub fn injected() -> Reply {
    Reply::Error("ERR injected by Ferry".into())
}

/// `ferry_redis_faults_total` for `command` and `outcome` on `proxy`'s metrics.
pub fn faults(proxy: &ferry_proxy::server::Running, command: &str, outcome: &str) -> f64 {
    crate::routing_support::metric(
        proxy,
        "ferry_redis_faults_total",
        &[
            &format!("command=\"{command}\""),
            &format!("outcome=\"{outcome}\""),
        ],
    )
}
