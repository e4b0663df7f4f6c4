//! Waiting for a client's first bytes to detect its protocol, without ever stalling a
//! server-first protocol: after the detection timeout the connection is opaque TCP. For the
//! server side of mutual TLS, [`mesh_tls`] tells a mesh client's ClientHello (Istio ALPN)
//! from anything else.

use crate::config::Protocol;
use crate::detect::{Detected, TlsHello, detect, tls_hello};
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, Interest};
use tokio::net::TcpStream;

/// Largest prefix looked at; a TLS ClientHello longer than this is still detected as TLS,
/// without its server name.
const MAX_PEEK: usize = 4096;

/// The protocol of a new connection: the declared one, or detected from its first bytes.
pub async fn protocol(
    stream: &TcpStream,
    declared: Protocol,
    timeout: Duration,
) -> (Protocol, Option<String>) {
    if declared != Protocol::Unknown {
        return (declared, None);
    }
    match tokio::time::timeout(timeout, sniff(stream)).await {
        Ok(Ok(found)) => found,
        _ => (Protocol::Tcp, None),
    }
}

async fn sniff(stream: &TcpStream) -> io::Result<(Protocol, Option<String>)> {
    let mut buf = vec![0u8; MAX_PEEK];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok((Protocol::Tcp, None));
        }
        match detect(&buf[..n]) {
            Detected::Protocol(p, sni) => return Ok((p, sni)),
            Detected::NeedMore if n == buf.len() => return Ok((Protocol::Tcp, None)),
            Detected::NeedMore => {
                wait_for_more(stream, n);
            }
        }
    }
}

/// After a peek saw `seen` bytes that are not enough: drops the read readiness, so that the
/// next peek waits for more bytes instead of returning the same ones, unless more bytes are
/// already there. The check runs inside `try_io`, so a byte arriving after it still wakes
/// the next peek (dropping the readiness after the fact could lose that wake-up, and the
/// peek would wait out its whole timeout: a ClientHello in two TCP segments did).
pub fn wait_for_more(stream: &TcpStream, seen: usize) {
    let _ = stream.try_io(Interest::READABLE, || {
        let mut available: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int, the number of bytes waiting, into `available`.
        let r = unsafe { libc::ioctl(stream.as_raw_fd(), libc::FIONREAD, &mut available) };
        if r == 0 && usize::try_from(available).is_ok_and(|a| a > seen) {
            Ok(())
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    });
}

/// The ClientHello a new connection starts with, waiting at most `timeout` for it: `None`
/// for anything else (not TLS, closed, incomplete in time). Peeking leaves the bytes in place
/// for whoever reads next.
pub async fn client_hello(stream: &TcpStream, timeout: Duration) -> Option<TlsHello> {
    let look = async {
        let mut buf = vec![0u8; MAX_PEEK];
        loop {
            let n = stream.peek(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            match tls_hello(&buf[..n]) {
                hello @ TlsHello::Hello { .. } => return Some(hello),
                TlsHello::NotTls => return None,
                TlsHello::Partial if n == buf.len() => return None,
                TlsHello::Partial => wait_for_more(stream, n),
            }
        }
    };
    tokio::time::timeout(timeout, look).await.ok().flatten()
}

/// Whether a new inbound connection starts with a mesh client's TLS ClientHello (an Istio
/// ALPN value offered), waiting at most `timeout` for its first bytes.
pub async fn mesh_tls(stream: &TcpStream, timeout: Duration) -> bool {
    matches!(
        client_hello(stream, timeout).await,
        Some(TlsHello::Hello { mesh: true, .. })
    )
}

/// The protocol of a stream that cannot be peeked (the plaintext inside TLS): reads its
/// first bytes, at most until `timeout`, and returns them with what they show (opaque TCP
/// when they show nothing known in time). The caller replays the bytes
/// ([`super::prefixed::Prefixed`]).
pub async fn read_protocol<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> io::Result<(Vec<u8>, Protocol)> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = Vec::with_capacity(MAX_PEEK);
    loop {
        let read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await;
        match read {
            Err(_) => return Ok((buf, Protocol::Tcp)),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(0)) => return Ok((buf, Protocol::Tcp)),
            Ok(Ok(_)) => {}
        }
        match detect(&buf) {
            Detected::Protocol(p, _) => return Ok((buf, p)),
            Detected::NeedMore if buf.len() >= MAX_PEEK => return Ok((buf, Protocol::Tcp)),
            Detected::NeedMore => {}
        }
    }
}
