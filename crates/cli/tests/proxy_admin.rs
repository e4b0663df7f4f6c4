//! `ferry proxy forward` as a process: its admin API and status port come up on the flags'
//! addresses, the probes come from `ISTIO_KUBE_APP_PROBERS`, and `POST /quitquitquit` makes
//! it exit 0 at once.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Kills the child when the test ends early.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback address that was free a moment ago.
fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn http(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: test\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

#[test]
fn forward_serves_admin_and_status_and_quits() {
    let app = TcpListener::bind("127.0.0.1:0").expect("bind");
    let app_addr = app.local_addr().expect("addr");
    let closed = free_addr();
    let [listen, metrics, health, admin, status] = [(); 5].map(|_| free_addr());
    let probers = serde_json::json!({
        "/app-health/app/readyz": {"tcpSocket": {"port": app_addr.port()}},
        "/app-health/app/livez": {"tcpSocket": {"port": closed.port()}},
    });
    let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "proxy",
            "forward",
            &listen.to_string(),
            &app_addr.to_string(),
        ])
        .args(["--metrics-addr", &metrics.to_string()])
        .args(["--health-addr", &health.to_string()])
        .args(["--admin-addr", &admin.to_string()])
        .args(["--status-addr", &status.to_string()])
        .env("ISTIO_KUBE_APP_PROBERS", probers.to_string())
        .env("ISTIO_PROMETHEUS_ANNOTATIONS", r#"{"scrape":"true"}"#)
        .env("INSTANCE_IP", "127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ferry starts");
    let mut guard = Guard(child);

    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(http(health, "GET", "/healthz/ready"), Ok((200, _))) {
        assert!(
            Instant::now() < deadline,
            "the proxy was not ready within 20s"
        );
        assert!(
            guard.0.try_wait().expect("wait").is_none(),
            "the proxy exited early"
        );
        thread::sleep(Duration::from_millis(50));
    }

    let (code, dump) = http(admin, "GET", "/config_dump").expect("admin");
    assert_eq!(code, 200);
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("JSON");
    assert_eq!(dump["phase"], "running");
    assert!(dump["config"]["settings"].is_object(), "{dump}");
    let (code, level) = http(admin, "GET", "/logging").expect("admin");
    assert_eq!((code, level.lines().next()), (200, Some("level: warning")));
    assert_eq!(
        http(admin, "POST", "/logging?level=nonsense")
            .expect("admin")
            .0,
        400
    );

    let (code, text) = http(status, "GET", "/app-health/app/readyz").expect("status");
    assert_eq!(code, 200, "{text}");
    let (code, text) = http(status, "GET", "/app-health/app/livez").expect("status");
    assert_eq!(code, 503, "{text}");
    let (code, merged) = http(status, "GET", "/stats/prometheus").expect("status");
    assert_eq!(code, 200);
    assert!(merged.contains("process_resident_memory_bytes"), "{merged}");
    assert_eq!(
        http(status, "GET", "/healthz/ready").expect("status").0,
        200
    );

    let (code, body) = http(admin, "POST", "/quitquitquit").expect("admin");
    assert_eq!((code, body.as_str()), (200, "OK\n"));
    let deadline = Instant::now() + Duration::from_secs(3);
    let exit = loop {
        if let Some(exit) = guard.0.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not exit within 3s of /quitquitquit"
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
    drop(app);
}
