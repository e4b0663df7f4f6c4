//! The control socket of a running `ferry up`: `<state-dir>/admin.sock`, a Unix socket that
//! only its owner (root, who runs `ferry up`) may open (mode 0600), so that local commands
//! act on the running mesh without any network port. One request per connection, one line
//! (`ca-rollover <phase-timeout-secs>`); the answer is lines `progress: ...` as the work goes,
//! then one `ok: ...` or `error: ...`.
//!
//! - `ca-rollover`: rolls the mesh root ([`ferry_control::ca::rollover::rollover`]) and keeps
//!   the new one in `<state-dir>/ca`.
//!
//! [`request`] is the client side (`ferry ca rollover`).

use anyhow::{Context, bail};
use ferry_control::ca::rollover::{RolloverOptions, SharedCa, rollover};
use ferry_control::ca::{FileStore, RootStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::warn;

/// File name of the socket in the state directory.
pub const SOCKET: &str = "admin.sock";

/// Longest request line accepted.
const MAX_REQUEST: usize = 256;

/// The socket of the state directory `state_dir`.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET)
}

/// What the socket acts on.
#[derive(Clone)]
pub struct Targets {
    /// The mesh's CA.
    pub ca: SharedCa,
    /// Where its material is kept.
    pub store: Arc<FileStore>,
}

/// Binds the socket at `path` (replacing a stale one), mode 0600.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(listener)
}

/// Serves requests on `listener` until the task is dropped.
pub async fn serve(listener: UnixListener, targets: Targets) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(handle(stream, targets.clone()));
            }
            Err(e) => {
                warn!("control socket: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A parsed request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Roll the root, waiting at most this long per phase.
    CaRollover(Duration),
}

/// Parses one request line.
pub fn parse(line: &str) -> Result<Request, String> {
    let mut words = line.split_whitespace();
    match words.next() {
        Some("ca-rollover") => {
            let secs = match words.next() {
                None => RolloverOptions::default().phase_timeout.as_secs(),
                Some(w) => w
                    .parse::<u64>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("ca-rollover: `{w}` is not a number of seconds"))?,
            };
            if let Some(extra) = words.next() {
                return Err(format!("ca-rollover: unexpected `{extra}`"));
            }
            Ok(Request::CaRollover(Duration::from_secs(secs)))
        }
        Some(other) => Err(format!("unknown request `{other}`")),
        None => Err("empty request".into()),
    }
}

async fn handle(stream: UnixStream, targets: Targets) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64));
    if reader.read_line(&mut line).await.is_err() {
        return;
    }
    let answer = match parse(&line) {
        Err(e) => format!("error: {e}\n"),
        Ok(Request::CaRollover(timeout)) => {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
            // The rollover goes on if the client goes away.
            let job = tokio::spawn(async move {
                let options = RolloverOptions {
                    phase_timeout: timeout,
                    ..RolloverOptions::default()
                };
                let mut progress = move |l: String| {
                    tracing::info!("root rollover: {l}");
                    let _ = tx.send(l);
                };
                let store: &dyn RootStore = targets.store.as_ref();
                rollover(&targets.ca, store, options, &mut progress).await
            });
            let mut client_gone = false;
            while let Some(l) = rx.recv().await {
                if !client_gone
                    && write
                        .write_all(format!("progress: {l}\n").as_bytes())
                        .await
                        .is_err()
                {
                    client_gone = true;
                }
            }
            match job.await {
                Ok(Ok(())) => "ok: root rolled\n".to_string(),
                Ok(Err(e)) => {
                    warn!("root rollover: {e}");
                    format!("error: {e}\n")
                }
                Err(e) => format!("error: the rollover task failed: {e}\n"),
            }
        }
    };
    let _ = write.write_all(answer.as_bytes()).await;
    let _ = write.shutdown().await;
}

/// Sends `line` to the `ferry up` of `state_dir` and calls `progress` with each progress
/// line; the final `ok:` text, or an error with the `error:` text.
pub fn request(
    state_dir: &Path,
    line: &str,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<String> {
    use std::io::{BufRead, Write};
    let path = socket_path(state_dir);
    let mut stream = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no running `ferry up` with mutual TLS in {} ({} is missing); start one, or give --state-dir",
            state_dir.display(),
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "{}: permission denied (the socket is root's: run with sudo)",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => bail!(
            "{}: nobody listens (the `ferry up` that made it is gone)",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("connecting to {}", path.display())),
    };
    writeln!(stream, "{line}").with_context(|| format!("writing to {}", path.display()))?;
    for l in std::io::BufReader::new(stream).lines() {
        let l = l.with_context(|| format!("reading from {}", path.display()))?;
        if let Some(p) = l.strip_prefix("progress: ") {
            progress(p);
        } else if let Some(ok) = l.strip_prefix("ok: ") {
            return Ok(ok.to_string());
        } else if let Some(e) = l.strip_prefix("error: ") {
            bail!("{e}");
        }
    }
    bail!(
        "`ferry up` closed {} without an answer (did it stop?)",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        let rows: Vec<(&str, Result<Request, &str>)> = vec![
            (
                "ca-rollover",
                Ok(Request::CaRollover(Duration::from_secs(60))),
            ),
            (
                "ca-rollover 5\n",
                Ok(Request::CaRollover(Duration::from_secs(5))),
            ),
            ("ca-rollover 0", Err("`0` is not a number of seconds")),
            ("ca-rollover soon", Err("`soon` is not a number")),
            ("ca-rollover 5 6", Err("unexpected `6`")),
            ("reboot", Err("unknown request `reboot`")),
            ("", Err("empty request")),
        ];
        for (line, want) in rows {
            match (parse(line), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{line}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{line}: {got}"),
                (got, want) => panic!("{line}: got {got:?}, want {want:?}"),
            }
        }
    }
}
