//! The certificate API on 15012: `ferry.ca.v1.CertificateService` over gRPC with TLS. The
//! control plane serves with a certificate its own CA signs (DNS names such as
//! `istiod.istio-system.svc` and `localhost`), renewed at half its lifetime, so proxies
//! verify it with the mesh root alone. Client certificates are optional: a proxy renewing
//! with a mesh certificate still valid may prove its identity with it instead of a token.
//!
//! [`SecureServer::serve`] takes [`tonic::service::Routes`], so the configuration stream
//! (`Distribution::service()`) can be served on the same TLS port; every request carries the
//! port's [`CallerAuth`] in its extensions, with which that stream authenticates proxies
//! (client certificates always, bearer tokens once [`SecureServer::with_authenticator`]
//! gives the authenticator). The service keeps the
//! latest certificate it issued to each pod ([`IssuedLog`]), which the control plane's
//! monitoring endpoint shows (`ferry proxy-config secret`).

use super::CaError;
use super::authn::{AuthError, Authenticator};
use super::authority::{CertificateAuthority, pem_to_ders};
use super::caller::{CallerAuth, bearer, peer_certs};
use super::rollover::SharedCa;
use ferry_proto::ca::v1::certificate_service_server::{
    CertificateService, CertificateServiceServer,
};
use ferry_proto::ca::v1::{CertificateRequest, CertificateResponse};
use ferry_proto::config::SpiffeId;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rustls::pki_types::CertificateDer;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

/// Lifetime of the control plane's own serving certificate.
pub const SERVING_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// TLS handshakes that take longer are dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The crypto provider of every TLS endpoint of the CA.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Labels of refused requests.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Refusal {
    reason: String,
}

/// The CA's metrics.
#[derive(Debug, Clone, Default)]
pub struct CaMetrics {
    issued: Counter,
    refused: Family<Refusal, Counter>,
}

impl CaMetrics {
    /// Registers the metrics (`ferry_ca_certificates_issued_total`,
    /// `ferry_ca_requests_refused_total{reason}`) into `registry`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "ferry_ca_certificates_issued",
            "Workload certificates signed",
            self.issued.clone(),
        );
        registry.register(
            "ferry_ca_requests_refused",
            "Certificate requests refused, by reason",
            self.refused.clone(),
        );
    }

    /// Certificates signed so far.
    pub fn issued(&self) -> u64 {
        self.issued.get()
    }

    fn refuse(&self, reason: &str) {
        self.refused
            .get_or_create(&Refusal {
                reason: reason.to_string(),
            })
            .inc();
    }
}

/// A workload certificate the CA signed, as `ferry proxy-config secret` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedRecord {
    /// The SPIFFE identity.
    pub identity: String,
    /// The pod the proof of identity named, if it named one.
    pub pod: Option<String>,
    /// The namespace of the identity.
    pub namespace: String,
    /// Serial number, hex.
    pub serial: String,
    /// Start of validity (Unix seconds; backdated a little for clock skew).
    pub not_before: u64,
    /// End of validity (Unix seconds).
    pub not_after: u64,
    /// Start of validity, as the certificate says it.
    pub valid_from: String,
    /// End of validity, as the certificate says it.
    pub valid_until: String,
    /// When it was signed (Unix seconds).
    pub issued_at: u64,
    /// The chain sent to the proxy, PEM: the workload certificate first, the root last.
    pub chain: Vec<String>,
}

/// The latest certificate issued to each pod (by namespace and pod; by namespace and
/// service account when the proof named no pod). Cheap to clone; clones share the log.
#[derive(Debug, Clone, Default)]
pub struct IssuedLog {
    latest: Arc<Mutex<std::collections::BTreeMap<(String, String), IssuedRecord>>>,
}

impl IssuedLog {
    fn record(&self, key: (String, String), record: IssuedRecord) {
        if let Ok(mut latest) = self.latest.lock() {
            latest.insert(key, record);
        }
    }

    /// The latest certificate issued to pod `pod` of `namespace`.
    pub fn for_pod(&self, namespace: &str, pod: &str) -> Option<IssuedRecord> {
        let latest = self.latest.lock().ok()?;
        latest
            .get(&(namespace.to_string(), pod.to_string()))
            .cloned()
    }

    /// Every latest certificate, by namespace and pod (or service account).
    pub fn all(&self) -> Vec<IssuedRecord> {
        self.latest
            .lock()
            .map(|l| l.values().cloned().collect())
            .unwrap_or_default()
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The certificate service: authenticates the caller, then signs.
#[derive(Clone)]
pub struct CaService {
    ca: SharedCa,
    authn: Arc<dyn Authenticator>,
    metrics: CaMetrics,
    issued: IssuedLog,
}

impl CaService {
    /// A service signing with `ca` for callers `authn` accepts.
    pub fn new(ca: Arc<CertificateAuthority>, authn: Arc<dyn Authenticator>) -> Self {
        Self::shared(SharedCa::new(ca), authn)
    }

    /// A service signing with the CA in force in `ca` (which a root rollover swaps).
    pub fn shared(ca: SharedCa, authn: Arc<dyn Authenticator>) -> Self {
        Self {
            ca,
            authn,
            metrics: CaMetrics::default(),
            issued: IssuedLog::default(),
        }
    }

    /// The latest certificate issued to each pod.
    pub fn issued(&self) -> &IssuedLog {
        &self.issued
    }

    /// The service's metrics.
    pub fn metrics(&self) -> &CaMetrics {
        &self.metrics
    }

    /// The gRPC service, to mount on a tonic server.
    pub fn service(&self) -> CertificateServiceServer<Self> {
        CertificateServiceServer::new(self.clone())
    }

    /// Routes with the certificate service; add the configuration stream with
    /// `.add_service(distribution.service())`.
    pub fn routes(&self) -> tonic::service::Routes {
        tonic::service::Routes::new(self.service())
    }

    /// The identity proven by a bearer token (with the pod it names, if any), or else by a
    /// verified mesh client certificate.
    async fn caller<T>(&self, request: &Request<T>) -> Result<(SpiffeId, Option<String>), Status> {
        let ca = self.ca.current();
        let td = ca.trust_domain();
        if let Some(token) = bearer(request.metadata()) {
            return match self.authn.authenticate(token).await {
                Ok(c) => SpiffeId::new(td, &c.namespace, &c.service_account)
                    .map(|id| (id, c.pod))
                    .map_err(|e| Status::permission_denied(e.to_string())),
                Err(AuthError::Unavailable(e)) => {
                    self.metrics.refuse("authenticator-unavailable");
                    Err(Status::unavailable(e))
                }
                Err(e) => {
                    self.metrics.refuse("token");
                    Err(Status::unauthenticated(e.to_string()))
                }
            };
        }
        let certs = peer_certs(request.extensions());
        if let Some(leaf) = certs.as_ref().and_then(|c| c.first()) {
            // The TLS layer verified the chain against the mesh roots.
            return match spiffe_of(leaf) {
                Some(id) if id.trust_domain == td => Ok((id, None)),
                _ => {
                    self.metrics.refuse("client-certificate");
                    Err(Status::unauthenticated(
                        "the client certificate holds no identity of this trust domain",
                    ))
                }
            };
        }
        self.metrics.refuse("no-credential");
        Err(Status::unauthenticated(
            "no credential: send `authorization: Bearer <token>` or a mesh client certificate",
        ))
    }
}

/// The SPIFFE identity in a certificate's URI SAN, if it has exactly one.
pub fn spiffe_of(der: &CertificateDer<'_>) -> Option<SpiffeId> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => Some(*u),
        _ => None,
    });
    let (Some(uri), None) = (uris.next(), uris.next()) else {
        return None;
    };
    SpiffeId::parse(uri).ok()
}

#[tonic::async_trait]
impl CertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<CertificateRequest>,
    ) -> Result<Response<CertificateResponse>, Status> {
        let (identity, pod) = self.caller(&request).await?;
        let req = request.into_inner();
        let requested = u64::try_from(req.validity_duration)
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        let now = SystemTime::now();
        match self.ca.current().issue(&req.csr, &identity, requested, now) {
            Ok(issued) => {
                self.metrics.issued.inc();
                info!(identity = %identity, serial = %issued.serial, pod = pod.as_deref().unwrap_or("-"), "issued a workload certificate");
                let validity = issued
                    .chain
                    .first()
                    .and_then(|pem| pem_to_ders("issued", pem).ok())
                    .and_then(|ders| ders.into_iter().next())
                    .and_then(|der| {
                        x509_parser::parse_x509_certificate(&der)
                            .ok()
                            .map(|(_, c)| {
                                let v = c.validity();
                                (
                                    u64::try_from(v.not_before.timestamp()).unwrap_or(0),
                                    v.not_before.to_string(),
                                    v.not_after.to_string(),
                                )
                            })
                    });
                let (not_before, valid_from, valid_until) =
                    validity.unwrap_or_else(|| (unix_secs(now), String::new(), String::new()));
                let key = (
                    identity.namespace.clone(),
                    pod.clone()
                        .unwrap_or_else(|| format!("sa/{}", identity.service_account)),
                );
                self.issued.record(
                    key,
                    IssuedRecord {
                        identity: identity.uri(),
                        pod,
                        namespace: identity.namespace.clone(),
                        serial: issued.serial.clone(),
                        not_before,
                        not_after: unix_secs(issued.not_after),
                        valid_from,
                        valid_until,
                        issued_at: unix_secs(now),
                        chain: issued.chain.clone(),
                    },
                );
                Ok(Response::new(CertificateResponse {
                    cert_chain: issued.chain,
                    trust_bundle: issued.trust_bundle,
                }))
            }
            Err(e @ CaError::IdentityMismatch { .. }) => {
                self.metrics.refuse("identity-mismatch");
                warn!("refused a certificate request: {e}");
                Err(Status::permission_denied(e.to_string()))
            }
            Err(e @ CaError::BadCsr(_)) => {
                self.metrics.refuse("bad-csr");
                Err(Status::invalid_argument(e.to_string()))
            }
            Err(e) => {
                self.metrics.refuse("signing");
                Err(Status::internal(e.to_string()))
            }
        }
    }
}

/// The control plane's serving certificate, re-signed by the CA in force at half its
/// lifetime, and at once when another CA is put in force (a root rollover).
struct ServingCert {
    ca: SharedCa,
    dns_names: Vec<String>,
    ips: Vec<IpAddr>,
    /// The certified key, when to renew it, and the CA that signed it.
    current: Mutex<(Arc<CertifiedKey>, SystemTime, Arc<CertificateAuthority>)>,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert")
            .field("dns_names", &self.dns_names)
            .field("ips", &self.ips)
            .finish_non_exhaustive()
    }
}

impl ServingCert {
    fn new(ca: SharedCa, dns_names: Vec<String>, ips: Vec<IpAddr>) -> Result<Self, CaError> {
        let signer = ca.current();
        let (key, renew) = Self::make(&signer, &dns_names, &ips)?;
        Ok(Self {
            ca,
            dns_names,
            ips,
            current: Mutex::new((key, renew, signer)),
        })
    }

    /// A new certified key and when to renew it.
    fn make(
        ca: &CertificateAuthority,
        dns_names: &[String],
        ips: &[IpAddr],
    ) -> Result<(Arc<CertifiedKey>, SystemTime), CaError> {
        let now = SystemTime::now();
        let (issued, key_pem) = ca.issue_serving(dns_names, ips, SERVING_TTL, now)?;
        let mut chain = Vec::new();
        // The root stays out of the chain the server sends.
        let n = issued.chain.len().saturating_sub(1).max(1);
        for pem in issued.chain.iter().take(n) {
            chain.extend(pem_to_ders("serving chain", pem)?);
        }
        let chain: Vec<CertificateDer<'static>> = chain.into_iter().map(Into::into).collect();
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .ok()
            .flatten()
            .ok_or_else(|| CaError::Signing("serving key".into()))?;
        let signing = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        let lifetime = issued.not_after.duration_since(now).unwrap_or_default();
        Ok((
            Arc::new(CertifiedKey::new(chain, signing)),
            now + lifetime / 2,
        ))
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().ok()?;
        let signer = self.ca.current();
        if SystemTime::now() >= current.1 || !Arc::ptr_eq(&signer, &current.2) {
            match Self::make(&signer, &self.dns_names, &self.ips) {
                Ok((key, renew)) => *current = (key, renew, signer),
                Err(e) => warn!("renewing the control plane's serving certificate: {e}"),
            }
        }
        Some(current.0.clone())
    }
}

/// Verifies client certificates against the trust bundle of the CA in force (rebuilt when
/// another CA is put in force); clients without a certificate are let through, to prove
/// themselves with a token.
struct BundleVerifier {
    ca: SharedCa,
    current: Mutex<(Arc<CertificateAuthority>, Arc<dyn ClientCertVerifier>)>,
}

impl std::fmt::Debug for BundleVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleVerifier").finish_non_exhaustive()
    }
}

fn client_verifier(ca: &CertificateAuthority) -> Result<Arc<dyn ClientCertVerifier>, CaError> {
    let mut roots = rustls::RootCertStore::empty();
    for pem in ca.trust_bundle() {
        for der in pem_to_ders("trust bundle", pem)? {
            roots
                .add(der.into())
                .map_err(|e| CaError::Material(format!("trust bundle: {e}")))?;
        }
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| CaError::Material(format!("client verifier: {e}")))
}

impl BundleVerifier {
    fn new(ca: SharedCa) -> Result<Self, CaError> {
        let signer = ca.current();
        let verifier = client_verifier(&signer)?;
        Ok(Self {
            ca,
            current: Mutex::new((signer, verifier)),
        })
    }

    fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let signer = self.ca.current();
        if !Arc::ptr_eq(&signer, &current.0) {
            match client_verifier(&signer) {
                Ok(v) => *current = (signer, v),
                Err(e) => warn!("the new trust bundle cannot verify clients: {e}"),
            }
        }
        current.1.clone()
    }
}

impl ClientCertVerifier for BundleVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.verifier()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.verifier().supported_verify_schemes()
    }
}

/// The TLS server of 15012. Every request it serves carries its [`CallerAuth`] in its
/// extensions: the configuration stream requires a proof of identity there (a mesh client
/// certificate, or a bearer token once [`SecureServer::with_authenticator`] says how to
/// check them).
pub struct SecureServer {
    tls: Arc<rustls::ServerConfig>,
    auth: CallerAuth,
    ca: SharedCa,
}

/// The names the serving certificate carries by default: Istio's and Ferry's service names
/// for the control plane, and `localhost`.
pub fn default_serving_names() -> Vec<String> {
    vec![
        "istiod.istio-system.svc".into(),
        "ferry-control.istio-system.svc".into(),
        "ferry-control.ferry-system.svc".into(),
        "localhost".into(),
    ]
}

impl SecureServer {
    /// A server whose certificate `ca` signs for `dns_names` and `ips`.
    pub fn new(
        ca: Arc<CertificateAuthority>,
        dns_names: Vec<String>,
        ips: Vec<IpAddr>,
    ) -> Result<Self, CaError> {
        Self::shared(SharedCa::new(ca), dns_names, ips)
    }

    /// A server whose certificate the CA in force in `ca` signs for `dns_names` and `ips`,
    /// accepting client certificates of its trust bundle; both follow a root rollover.
    pub fn shared(ca: SharedCa, dns_names: Vec<String>, ips: Vec<IpAddr>) -> Result<Self, CaError> {
        let verifier = Arc::new(BundleVerifier::new(ca.clone())?);
        let auth = CallerAuth::new(ca.current().trust_domain(), None);
        let resolver = ServingCert::new(ca.clone(), dns_names, ips)?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| CaError::Material(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(resolver));
        tls.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            tls: Arc::new(tls),
            auth,
            ca,
        })
    }

    /// The CA in force, which the configuration stream served on this port follows (the
    /// roots it pushes to proxies).
    pub fn ca(&self) -> &SharedCa {
        &self.ca
    }

    /// Checks bearer tokens with `tokens` too (the authenticator the certificate API uses:
    /// per-pod tokens, TokenReview), so that a proxy without a certificate yet can follow
    /// the configuration stream. Without it only mesh client certificates prove anything.
    pub fn with_authenticator(mut self, tokens: Arc<dyn Authenticator>) -> Self {
        self.auth = CallerAuth::new(self.auth.trust_domain(), Some(tokens));
        self
    }

    /// How callers of this port prove who they are.
    pub fn caller_auth(&self) -> &CallerAuth {
        &self.auth
    }

    /// The TLS configuration (for tests and for callers with their own accept loop).
    pub fn tls_config(&self) -> Arc<rustls::ServerConfig> {
        self.tls.clone()
    }

    /// Serves `routes` over TLS on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        routes: tonic::service::Routes,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<TlsStream<TcpStream>>>(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls);
        let accept_loop = tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        warn!("15012 accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok(tls)).await;
                        }
                        Ok(Err(e)) => debug!("TLS handshake from {peer}: {e}"),
                        Err(_) => debug!("TLS handshake from {peer} timed out"),
                    }
                });
            }
        });
        let auth = self.auth;
        let result = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .layer(tonic::service::InterceptorLayer::new(
                move |mut request: Request<()>| {
                    request.extensions_mut().insert(auth.clone());
                    Ok(request)
                },
            ))
            .add_routes(routes)
            .serve_with_incoming_shutdown(tokio_stream::wrappers::ReceiverStream::new(rx), shutdown)
            .await;
        accept_loop.abort();
        result
    }
}
