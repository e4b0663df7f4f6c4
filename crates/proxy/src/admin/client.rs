//! A small HTTP client for the side doors: one request on a fresh connection to the
//! application (probes, the metrics scrape), over plain TCP or TLS without certificate
//! checks, in HTTP/1.1 or HTTP/2 with prior knowledge (gRPC). Callers bound the whole
//! exchange with a timeout; dropping the future closes the connection.

use super::insecure_tls;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Which HTTP version to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge (h2c, or h2 over TLS).
    Http2,
}

/// Where to send a request.
#[derive(Debug, Clone)]
pub struct Dest {
    /// Address to connect to.
    pub addr: SocketAddr,
    /// TLS server name (SNI) when the connection is HTTPS; `None` for plain TCP.
    pub tls_name: Option<String>,
    /// HTTP version.
    pub version: Version,
}

/// A response: status, headers, the body (when asked for) and trailers.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body, when the caller asked for it.
    pub body: Bytes,
    /// Trailers, if the server sent any.
    pub trailers: Option<HeaderMap>,
}

/// Sends one request and returns the reply. With `read_body` the body is read up to that
/// many bytes (more is an error); without it the body is left unread.
pub async fn send(
    dest: &Dest,
    request: Request<Full<Bytes>>,
    read_body: Option<usize>,
) -> Result<Reply, String> {
    let tcp = TcpStream::connect(dest.addr)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", dest.addr))?;
    let _ = tcp.set_nodelay(true);
    match &dest.tls_name {
        None => exchange(tcp, dest.version, request, read_body).await,
        Some(name) => {
            let connector = insecure_tls::connector(dest.version)?;
            let server_name = rustls::pki_types::ServerName::try_from(name.clone())
                .map_err(|e| format!("invalid TLS server name {name:?}: {e}"))?;
            let tls = connector
                .connect(server_name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {} failed: {e}", dest.addr))?;
            exchange(tls, dest.version, request, read_body).await
        }
    }
}

async fn exchange<T>(
    io: T,
    version: Version,
    request: Request<Full<Bytes>>,
    read_body: Option<usize>,
) -> Result<Reply, String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    match version {
        Version::Http1 => {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
            let work = async move {
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| format!("HTTP request failed: {e}"))?;
                read(response, read_body).await
            };
            drive(work, conn).await
        }
        Version::Http2 => {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
            let work = async move {
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| format!("HTTP/2 request failed: {e}"))?;
                read(response, read_body).await
            };
            drive(work, conn).await
        }
    }
}

/// Runs the request while driving its connection, so both end when the caller gives up.
async fn drive<W, C>(work: W, conn: C) -> Result<Reply, String>
where
    W: Future<Output = Result<Reply, String>>,
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(work);
    tokio::pin!(conn);
    tokio::select! {
        biased;
        reply = &mut work => reply,
        ended = &mut conn => match ended {
            // The server closed after answering: what it sent is still buffered.
            Ok(()) => work.await,
            Err(e) => Err(format!("connection failed: {e}")),
        },
    }
}

async fn read(response: Response<Incoming>, read_body: Option<usize>) -> Result<Reply, String> {
    let (parts, body) = response.into_parts();
    let (body, trailers) = match read_body {
        None => (Bytes::new(), None),
        Some(limit) => {
            let collected = Limited::new(body, limit)
                .collect()
                .await
                .map_err(|e| format!("reading the response body: {e}"))?;
            let trailers = collected.trailers().cloned();
            (collected.to_bytes(), trailers)
        }
    };
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
        trailers,
    })
}
