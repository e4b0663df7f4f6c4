//! Where certificates come from. [`CertificateSource`] is the seam (tests sign in process);
//! [`CaClient`] is the real one: `ferry.ca.v1.CertificateService/CreateCertificate` over gRPC
//! with TLS, the CA's certificate verified against the configured mesh root and server name,
//! the proof of identity a bearer token read from a file (re-read every time: kubelet
//! rotates projected tokens), or else the proxy's current certificate as a client
//! certificate.

use super::Certified;
use crate::tls;
use ferry_proto::ca::v1::CertificateRequest;
use ferry_proto::ca::v1::certificate_service_client::CertificateServiceClient;
use rustls::pki_types::{CertificateDer, ServerName};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

/// A signed chain and the roots to trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// PEM certificates, the workload certificate first.
    pub chain: Vec<String>,
    /// PEM roots.
    pub trust_bundle: Vec<String>,
}

/// Signs certificate requests.
#[tonic::async_trait]
pub trait CertificateSource: Send + Sync {
    /// Signs the PEM request `csr`, asking for `ttl`; `current` is the certificate in force,
    /// if any (a proof of identity of its own).
    async fn sign(
        &self,
        csr: String,
        ttl: Option<Duration>,
        current: Option<Arc<Certified>>,
    ) -> Result<Signed, String>;
}

/// The control plane's CA over gRPC and TLS.
#[derive(Debug, Clone)]
pub struct CaClient {
    /// `host:port`.
    pub addr: String,
    /// The name the CA's certificate must carry.
    pub server_name: String,
    /// PEM root(s) the CA's certificate chains to.
    pub root_cert: PathBuf,
    /// File with the bearer token, if any.
    pub token_file: Option<PathBuf>,
}

/// The PEM certificates of a file.
pub fn read_roots(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let roots: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut text.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if roots.is_empty() {
        return Err(format!("{}: no certificate", path.display()));
    }
    Ok(roots)
}

/// Connects TCP then TLS for tonic.
#[derive(Clone)]
struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
    addr: String,
}

type Io = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tonic::codegen::Service<tonic::codegen::http::Uri> for TlsConnector {
    type Response = Io;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Io, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::codegen::http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(&this.addr).await?;
            let _ = tcp.set_nodelay(true);
            let tls = tokio_rustls::TlsConnector::from(this.config)
                .connect(this.name, tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

impl CaClient {
    /// The bearer token in the token file, read now; `None` without a file, or when it is
    /// missing or empty.
    pub fn token(&self) -> Result<Option<String>, String> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        match std::fs::read_to_string(path) {
            Ok(t) => Ok(Some(t.trim().to_string()).filter(|t| !t.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    fn tls(&self, current: Option<&Certified>) -> Result<Arc<rustls::ClientConfig>, String> {
        let mut roots = rustls::RootCertStore::empty();
        for r in read_roots(&self.root_cert)? {
            roots.add(r).map_err(|e| e.to_string())?;
        }
        if let Some(c) = current {
            roots.extend(c.roots.roots.iter().cloned());
        }
        let builder = rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let mut config = match current {
            Some(c) => builder.with_client_cert_resolver(Arc::new(tls::FixedCert(c.key.clone()))),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

impl CaClient {
    /// A gRPC channel to the control plane over TLS (its certificate verified against the
    /// mesh root and `server_name`; `current`, if any, as the client certificate). The
    /// configuration stream on 15012 can use it as well as the certificate API.
    pub async fn channel(
        &self,
        current: Option<&Certified>,
    ) -> Result<tonic::transport::Channel, String> {
        let name = ServerName::try_from(self.server_name.clone())
            .map_err(|e| format!("CA server name {}: {e}", self.server_name))?;
        let connector = TlsConnector {
            config: self.tls(current)?,
            name,
            addr: self.addr.clone(),
        };
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .map_err(|e| format!("CA address {}: {e}", self.addr))?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .connect_with_connector(connector)
            .await
            .map_err(|e| format!("connecting to {}: {e:?}", self.addr))
    }
}

/// Sends `token` with `request` as the proof of the proxy's service account
/// (`authorization: Bearer <token>`), as the CA and the configuration stream on 15012 take it.
pub fn authorize<T>(request: &mut tonic::Request<T>, token: &str) -> Result<(), String> {
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| "the token holds characters a header cannot".to_string())?;
    request.metadata_mut().insert("authorization", value);
    Ok(())
}

impl CaClient {
    /// One certificate request, presenting `cert` as the TLS client certificate and `token`
    /// as the bearer token (either may be absent).
    async fn request(
        &self,
        csr: String,
        ttl: Option<Duration>,
        cert: Option<&Certified>,
        token: Option<&str>,
    ) -> Result<Signed, String> {
        let channel = self.channel(cert).await?;
        let mut request = tonic::Request::new(CertificateRequest {
            csr,
            validity_duration: ttl.map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        });
        request.set_timeout(Duration::from_secs(15));
        if let Some(t) = token {
            authorize(&mut request, t)?;
        }
        let answer = CertificateServiceClient::new(channel)
            .create_certificate(request)
            .await
            .map_err(|s| format!("the CA refused: {:?}: {}", s.code(), s.message()))?
            .into_inner();
        Ok(Signed {
            chain: answer.cert_chain,
            trust_bundle: answer.trust_bundle,
        })
    }
}

#[tonic::async_trait]
impl CertificateSource for CaClient {
    async fn sign(
        &self,
        csr: String,
        ttl: Option<Duration>,
        current: Option<Arc<Certified>>,
    ) -> Result<Signed, String> {
        let token = self.token()?;
        if token.is_none() && current.is_none() {
            return Err(match &self.token_file {
                Some(p) => format!("no token in {} and no certificate yet", p.display()),
                None => "no token file and no certificate yet".into(),
            });
        }
        let first = self
            .request(csr.clone(), ttl, current.as_deref(), token.as_deref())
            .await;
        match (first, token.as_deref()) {
            // A certificate the CA no longer trusts (its root was rolled while this proxy
            // was away) must not lock the proxy out: its token still proves who it is.
            (Err(e), Some(t)) if current.is_some() => {
                tracing::warn!(
                    "certificate request with the current certificate failed ({e}); retrying with the token alone"
                );
                self.request(csr, ttl, None, Some(t))
                    .await
                    .map_err(|again| format!("{e}; with the token alone: {again}"))
            }
            (result, _) => result,
        }
    }
}
