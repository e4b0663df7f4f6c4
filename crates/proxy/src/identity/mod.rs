//! The proxy's workload identity: a key made here (it never leaves the proxy), a certificate
//! for `spiffe://<trust-domain>/ns/<ns>/sa/<sa>` from the control plane's CA, and the mesh
//! roots, held in an [`IdentityState`] the data path reads once per handshake. Renewal runs
//! off the traffic thread at about half the lifetime ([`rotation`]); a new certificate only
//! affects new handshakes, so open connections are never dropped, and a failed renewal keeps
//! the current certificate until it expires while retrying with backoff.
//!
//! - [`source`]: where certificates come from ([`source::CertificateSource`]; the gRPC
//!   [`source::CaClient`] over TLS to port 15012, or anything a test provides).
//! - [`manager`]: the renewal loop and its metrics.
//! - [`rotation`]: the schedule, as pure functions.
//!
//! The roots trusted for peers change without a new certificate too: the control plane
//! pushes its trust bundle on the configuration stream (a root rollover), and
//! [`IdentityState::apply_trust`] puts the same certificate in force with the new roots, for
//! new handshakes only; a renewal request on that stream makes the renewal loop renew at
//! once ([`IdentityState::renewals`]).

pub mod manager;
pub mod rotation;
pub mod source;

use crate::tls::{self, TlsError};
use arc_swap::ArcSwapOption;
use ferry_proto::config::SpiffeId;
use ferry_proto::discovery::root_fingerprint;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Default TLS name of the CA (Istio's control plane Service).
pub const DEFAULT_CA_SERVER_NAME: &str = "istiod.istio-system.svc";

/// How the proxy gets its identity.
#[derive(Debug, Clone)]
pub struct IdentityOptions {
    /// The CA's address (`host:port`, 15012).
    pub ca_addr: String,
    /// The name the CA's serving certificate must carry.
    pub ca_server_name: String,
    /// PEM file of the mesh root(s): verifies the CA, and is trusted for peers beside the
    /// CA's trust bundle.
    pub root_cert: PathBuf,
    /// File holding the bearer token proving the service account (re-read at every renewal;
    /// without it the proxy renews with its current certificate).
    pub token_file: Option<PathBuf>,
    /// Trust domain.
    pub trust_domain: String,
    /// The proxy's namespace.
    pub namespace: String,
    /// The proxy's service account.
    pub service_account: String,
    /// Lifetime to ask for; `None` for the CA's default.
    pub ttl: Option<Duration>,
}

impl IdentityOptions {
    /// The identity these options ask for.
    pub fn spiffe(&self) -> Result<SpiffeId, ferry_proto::config::spiffe::NotSpiffe> {
        let sa = if self.service_account.is_empty() {
            "default"
        } else {
            &self.service_account
        };
        SpiffeId::new(&self.trust_domain, &self.namespace, sa)
    }
}

/// A certificate in force, with everything a handshake needs prepared.
pub struct Certified {
    /// The identity it proves.
    pub id: SpiffeId,
    /// The chain sent to peers (workload certificate and intermediates) and the key.
    pub key: Arc<CertifiedKey>,
    /// Roots peers must chain to: the CA's trust bundle plus the configured roots.
    pub roots: Arc<RootCertStore>,
    /// Inbound TLS configuration.
    pub server: Arc<ServerConfig>,
    /// PEM chain as issued (workload certificate first, root last).
    pub chain_pem: Vec<String>,
    /// PEM roots trusted.
    pub roots_pem: Vec<String>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// Serial number, hex.
    pub serial: String,
}

impl std::fmt::Debug for Certified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certified")
            .field("id", &self.id.uri())
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn material(e: impl std::fmt::Display) -> TlsError {
    TlsError::Material(e.to_string())
}

/// The DER certificates of PEM texts.
pub fn ders(pems: &[String]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let mut out = Vec::new();
    for pem in pems {
        for c in rustls_pemfile::certs(&mut pem.as_bytes()) {
            out.push(c.map_err(material)?);
        }
    }
    Ok(out)
}

fn unix(t: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0))
}

impl Certified {
    /// Checks what the CA sent for the key `key_pkcs8` and identity `id` at `now`: the
    /// workload certificate is for that key and that identity only, is valid, and chains to
    /// the roots (`trust_bundle` plus `extra_roots`); then prepares the TLS configurations.
    pub fn new(
        id: SpiffeId,
        key_pkcs8: Vec<u8>,
        key_spki: &[u8],
        chain_pem: Vec<String>,
        trust_bundle: Vec<String>,
        extra_roots: &[CertificateDer<'static>],
        now: SystemTime,
    ) -> Result<Self, TlsError> {
        let chain = ders(&chain_pem)?;
        let Some(leaf) = chain.first().cloned() else {
            return Err(material("the CA sent no certificate"));
        };
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
            .map_err(|e| material(format!("the CA's certificate: {e}")))?;
        if cert.tbs_certificate.subject_pki.raw != key_spki {
            return Err(material("the CA's certificate is not for this proxy's key"));
        }
        let found = tls::verify::spiffe_of(&leaf);
        if found.as_ref() != Some(&id) {
            return Err(material(format!(
                "the CA's certificate is for {found:?}, not {id}"
            )));
        }
        let not_before = unix(cert.validity().not_before.timestamp());
        let not_after = unix(cert.validity().not_after.timestamp());
        let serial = cert.raw_serial_as_string().replace(':', "");
        let (roots, roots_pem) = root_store(&trust_bundle, extra_roots)?;
        // The root itself is not sent to peers.
        let sent: Vec<CertificateDer<'static>> = chain
            .iter()
            .filter(|c| {
                !x509_parser::parse_x509_certificate(c.as_ref())
                    .map(|(_, p)| p.subject() == p.issuer() && p.is_ca())
                    .unwrap_or(false)
            })
            .cloned()
            .collect();
        let parsed = rustls::server::ParsedCertificate::try_from(&leaf)?;
        let at = UnixTime::since_unix_epoch(
            now.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            sent.get(1..).unwrap_or_default(),
            at,
            tls::provider().signature_verification_algorithms.all,
        )?;
        let signing = tls::provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8)))?;
        let key = Arc::new(CertifiedKey::new(sent, signing));
        let roots = Arc::new(roots);
        let server = tls::server_config(key.clone(), roots.clone())?;
        Ok(Self {
            id,
            key,
            roots,
            server,
            chain_pem,
            roots_pem,
            not_before,
            not_after,
            serial,
        })
    }
}

impl Certified {
    /// The same certificate and key trusting `trust_bundle` plus `extra_roots` for peers
    /// (a root rollover): new TLS configurations, the same chain.
    pub fn with_roots(
        &self,
        trust_bundle: &[String],
        extra_roots: &[CertificateDer<'static>],
    ) -> Result<Self, TlsError> {
        let (roots, roots_pem) = root_store(trust_bundle, extra_roots)?;
        let roots = Arc::new(roots);
        let server = tls::server_config(self.key.clone(), roots.clone())?;
        Ok(Self {
            id: self.id.clone(),
            key: self.key.clone(),
            roots,
            server,
            chain_pem: self.chain_pem.clone(),
            roots_pem,
            not_before: self.not_before,
            not_after: self.not_after,
            serial: self.serial.clone(),
        })
    }

    /// Fingerprint of the root the chain ends with (the CA sends it last).
    pub fn chain_root(&self) -> String {
        ders(&self.chain_pem)
            .ok()
            .and_then(|d| d.last().map(|c| root_fingerprint(c.as_ref())))
            .unwrap_or_default()
    }

    /// Fingerprints of the roots trusted for peers.
    pub fn root_fingerprints(&self) -> Vec<String> {
        self.roots_pem
            .iter()
            .filter_map(|p| ders(std::slice::from_ref(p)).ok())
            .flatten()
            .map(|d| root_fingerprint(d.as_ref()))
            .collect()
    }
}

/// The roots of `trust_bundle` and `extra_roots`, each once, in order, as a store and as
/// PEM texts (a bundle entry holding one certificate keeps its text as sent).
pub fn root_store(
    trust_bundle: &[String],
    extra_roots: &[CertificateDer<'static>],
) -> Result<(RootCertStore, Vec<String>), TlsError> {
    let mut roots = RootCertStore::empty();
    let mut seen = std::collections::BTreeSet::new();
    let mut roots_pem = Vec::new();
    let mut add = |der: CertificateDer<'static>, text: Option<&String>| -> Result<(), TlsError> {
        if seen.insert(der.as_ref().to_vec()) {
            roots_pem.push(text.cloned().unwrap_or_else(|| der_to_pem(der.as_ref())));
            roots.add(der).map_err(material)?;
        }
        Ok(())
    };
    for pem in trust_bundle {
        let certs = ders(std::slice::from_ref(pem))?;
        let single = certs.len() == 1;
        for der in certs {
            add(der, single.then_some(pem))?;
        }
    }
    for der in extra_roots {
        add(der.clone(), None)?;
    }
    Ok((roots, roots_pem))
}

/// PEM text of one DER certificate.
pub fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The proxy's identity as the data path and the admin side see it.
pub struct IdentityState {
    current: ArcSwapOption<Certified>,
    ready: watch::Sender<bool>,
    /// When the next renewal is planned.
    pub next_renewal: std::sync::Mutex<Option<SystemTime>>,
    /// Counts every change of the certificate or roots in force.
    changes: watch::Sender<u64>,
    /// Counts renewal requests (the renewal loop renews at once on a change).
    renewals: watch::Sender<u64>,
    /// What the control plane last pushed about trust.
    trust: std::sync::Mutex<PushedTrust>,
}

/// What the control plane last pushed about trust, and how applying it went.
#[derive(Debug, Default, Clone)]
struct PushedTrust {
    /// The configured root file, re-read with every push (the renewal loop sets it).
    root_file: Option<PathBuf>,
    /// The generation of the last push.
    generation: u64,
    /// The last renewal counter seen; `None` before the first push.
    renew_seen: Option<u64>,
    /// Why the last push could not be applied.
    error: String,
}

/// What a proxy reports about its trust (see `TrustReport` of the configuration stream).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustStatus {
    /// The generation of the last push applied.
    pub generation: u64,
    /// Fingerprints of the roots trusted.
    pub roots: Vec<String>,
    /// Fingerprint of the root the certificate chains to.
    pub cert_root: String,
    /// Serial of the certificate.
    pub cert_serial: String,
    /// Why the last push could not be applied.
    pub error: String,
}

impl std::fmt::Debug for IdentityState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityState")
            .field("current", &self.current.load_full())
            .finish_non_exhaustive()
    }
}

impl Default for IdentityState {
    fn default() -> Self {
        Self::new()
    }
}

impl IdentityState {
    /// No certificate yet.
    pub fn new() -> Self {
        Self {
            current: ArcSwapOption::empty(),
            ready: watch::channel(false).0,
            next_renewal: std::sync::Mutex::new(None),
            changes: watch::channel(0).0,
            renewals: watch::channel(0).0,
            trust: std::sync::Mutex::new(PushedTrust::default()),
        }
    }

    fn pushed(&self) -> std::sync::MutexGuard<'_, PushedTrust> {
        self.trust.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the configured root file, re-read with every pushed trust bundle.
    pub fn set_root_file(&self, path: Option<PathBuf>) {
        self.pushed().root_file = path;
    }

    /// Follows changes of the certificate or the roots in force.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Follows renewal requests (the renewal loop renews at once on each).
    pub fn renewals(&self) -> watch::Receiver<u64> {
        self.renewals.subscribe()
    }

    /// Applies what the control plane pushed: trust `roots` (plus the configured root file,
    /// re-read now) for new handshakes, keeping the certificate; and when `renew` differs
    /// from the last counter seen, asks the renewal loop to renew now. Open connections are
    /// not touched. Says whether the roots changed.
    pub fn apply_trust(
        &self,
        generation: u64,
        roots: &[String],
        renew: u64,
    ) -> Result<bool, String> {
        let mut pushed = self.pushed();
        pushed.generation = generation;
        if pushed.renew_seen.is_some_and(|seen| seen != renew) {
            tracing::info!("the control plane asks for a new certificate now (root rollover)");
            self.renewals.send_modify(|n| *n += 1);
        }
        pushed.renew_seen = Some(renew);
        let result = self.apply_roots(pushed.root_file.as_deref(), roots);
        pushed.error = result.as_ref().err().cloned().unwrap_or_default();
        drop(pushed);
        self.changes.send_modify(|n| *n += 1);
        result
    }

    fn apply_roots(
        &self,
        root_file: Option<&std::path::Path>,
        roots: &[String],
    ) -> Result<bool, String> {
        if roots.is_empty() {
            return Err(
                "the control plane sent an empty trust bundle; keeping the roots in force".into(),
            );
        }
        let Some(cert) = self.current() else {
            // The first certificate comes with the same bundle.
            return Ok(false);
        };
        let extra = match root_file {
            Some(path) => source::read_roots(path)?,
            None => Vec::new(),
        };
        let next = cert.with_roots(roots, &extra).map_err(|e| e.to_string())?;
        if next.roots_pem == cert.roots_pem {
            return Ok(false);
        }
        let names = |c: &Certified| -> String {
            c.root_fingerprints()
                .iter()
                .map(|f| f.get(..12).unwrap_or(f))
                .collect::<Vec<_>>()
                .join(", ")
        };
        tracing::info!(
            before = %names(&cert),
            after = %names(&next),
            "trusted roots changed (new handshakes use them; open connections stay)"
        );
        self.current.store(Some(Arc::new(next)));
        Ok(true)
    }

    /// What to report to the control plane about trust.
    pub fn trust_status(&self) -> TrustStatus {
        let pushed = self.pushed().clone();
        let cert = self.current();
        TrustStatus {
            generation: pushed.generation,
            roots: cert
                .as_ref()
                .map(|c| c.root_fingerprints())
                .unwrap_or_default(),
            cert_root: cert.as_ref().map(|c| c.chain_root()).unwrap_or_default(),
            cert_serial: cert.as_ref().map(|c| c.serial.clone()).unwrap_or_default(),
            error: pushed.error,
        }
    }

    /// The certificate in force, if any (one atomic load).
    pub fn current(&self) -> Option<Arc<Certified>> {
        self.current.load_full()
    }

    /// Puts a new certificate in force for new handshakes.
    pub fn publish(&self, cert: Arc<Certified>) {
        // Serialized with `apply_trust`, which re-publishes the certificate in force.
        let pushed = self.pushed();
        self.current.store(Some(cert));
        drop(pushed);
        self.ready.send_replace(true);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Waits until a first certificate is in force.
    pub async fn ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }
}
