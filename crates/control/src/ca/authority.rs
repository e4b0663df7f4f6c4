//! Issuing certificates: the CA's signing key and certificate chain, and the checks a
//! request passes before it is signed. The request's key is the proxy's (it never leaves
//! the proxy); everything else in the certificate is the CA's choice: one URI SAN with the
//! proven identity, client and server authentication, no CA rights, a bounded lifetime.

use super::store::{CaMaterial, RootStore};
use super::{CaError, DEFAULT_CERT_TTL, MAX_CERT_TTL, ROOT_TTL};
use base64::Engine;
use ferry_proto::config::SpiffeId;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};
use time::OffsetDateTime;

/// Clock skew allowance: certificates are valid from a minute before they are issued.
const BACKDATE: Duration = Duration::from_secs(60);

/// A signed certificate and what goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// PEM certificates: the new one first, then intermediates, then the root.
    pub chain: Vec<String>,
    /// PEM roots to trust.
    pub trust_bundle: Vec<String>,
    /// End of validity.
    pub not_after: SystemTime,
    /// Serial number, hex.
    pub serial: String,
}

/// `<subject>, valid from <not before> until <not after>` of the first certificate of a PEM
/// text, for messages.
pub fn describe_pem(pem: &str) -> Option<String> {
    let der = pem_to_ders("certificate", pem).ok()?.into_iter().next()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let v = cert.validity();
    Some(format!(
        "{}, valid from {} until {}",
        cert.subject(),
        v.not_before,
        v.not_after
    ))
}

/// The CA: signing key, certificate chain, trust bundle and lifetimes.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    trust_domain: String,
    /// PEM certificates that follow a workload certificate: the signing certificate (unless
    /// it is the root), intermediates, the root.
    tail: Vec<String>,
    trust_bundle: Vec<String>,
    signing_not_after: SystemTime,
    default_ttl: Duration,
    max_ttl: Duration,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("chain_len", &self.tail.len())
            .field("roots", &self.trust_bundle.len())
            .finish_non_exhaustive()
    }
}

/// PEM text of one DER certificate.
pub fn der_to_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The DER certificates of a PEM text (other blocks are skipped).
pub fn pem_to_ders(what: &str, pem: &str) -> Result<Vec<Vec<u8>>, CaError> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaError::Material(format!("{what}: {e}")))
}

/// What the CA needs to know about one of its certificates.
struct CertFacts {
    is_ca: bool,
    not_after: SystemTime,
    spki: Vec<u8>,
    subject: String,
}

fn facts(what: &str, der: &[u8]) -> Result<CertFacts, CaError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CaError::Material(format!("{what}: not an X.509 certificate: {e}")))?;
    let secs = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
    Ok(CertFacts {
        is_ca: cert.is_ca(),
        not_after: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        spki: cert.tbs_certificate.subject_pki.raw.to_vec(),
        subject: cert.subject().to_string(),
    })
}

fn random_serial() -> Result<SerialNumber, CaError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Signing("no randomness for a serial number".into()))?;
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // and 16 bytes long
    Ok(SerialNumber::from(bytes.to_vec()))
}

fn signing(e: rcgen::Error) -> CaError {
    CaError::Signing(e.to_string())
}

impl CertificateAuthority {
    /// A new self-signed root for `trust_domain` (ECDSA P-256, 10 years).
    pub fn generate_root(trust_domain: &str, now: SystemTime) -> Result<CaMaterial, CaError> {
        let key = KeyPair::generate().map_err(signing)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, trust_domain);
        dn.push(DnType::CommonName, "Ferry root CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = OffsetDateTime::from(now - BACKDATE);
        params.not_after = OffsetDateTime::from(now + ROOT_TTL);
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key).map_err(signing)?;
        let pem = cert.pem();
        Ok(CaMaterial {
            cert_pem: pem.clone(),
            key_pem: key.serialize_pem(),
            chain_pem: String::new(),
            root_pem: pem,
        })
    }

    /// The CA of `material`, after checking that the signing certificate is a CA
    /// certificate matching the key and still valid at `now`.
    pub fn from_material(
        material: &CaMaterial,
        trust_domain: &str,
        now: SystemTime,
    ) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(&material.key_pem)
            .map_err(|e| CaError::Material(format!("CA key: {e}")))?;
        let cert_ders = pem_to_ders("CA certificate", &material.cert_pem)?;
        let Some(cert_der) = cert_ders.first() else {
            return Err(CaError::Material(
                "no certificate in the CA certificate".into(),
            ));
        };
        let cert = facts("CA certificate", cert_der)?;
        if !cert.is_ca {
            return Err(CaError::Material(format!(
                "{} is not a CA certificate (basicConstraints CA:TRUE)",
                cert.subject
            )));
        }
        if cert.spki != rcgen::PublicKeyData::subject_public_key_info(&key) {
            return Err(CaError::Material(
                "the CA key does not match the CA certificate".into(),
            ));
        }
        if cert.not_after <= now {
            return Err(CaError::Material(format!(
                "the CA certificate {} has expired",
                cert.subject
            )));
        }
        let root_ders = pem_to_ders("root certificate", &material.root_pem)?;
        let Some(root_der) = root_ders.first().cloned() else {
            return Err(CaError::Material("no root certificate".into()));
        };
        facts("root certificate", &root_der)?;
        let mut tail: Vec<Vec<u8>> = Vec::new();
        if *cert_der != root_der {
            tail.push(cert_der.clone());
        }
        for der in pem_to_ders("certificate chain", &material.chain_pem)? {
            if der != *cert_der && der != root_der && !tail.contains(&der) {
                facts("certificate chain", &der)?;
                tail.push(der);
            }
        }
        tail.push(root_der.clone());
        let issuer = Issuer::from_ca_cert_der(&cert_der.clone().into(), key)
            .map_err(|e| CaError::Material(format!("CA certificate: {e}")))?;
        Ok(Self {
            issuer,
            trust_domain: trust_domain.to_string(),
            tail: tail.iter().map(|d| der_to_pem(d)).collect(),
            trust_bundle: vec![der_to_pem(&root_der)],
            signing_not_after: cert.not_after,
            default_ttl: DEFAULT_CERT_TTL,
            max_ttl: MAX_CERT_TTL,
        })
    }

    /// The CA stored in `store`, or a new self-signed root saved there first; also says
    /// whether it was created.
    pub async fn load_or_create(
        store: &dyn RootStore,
        trust_domain: &str,
        now: SystemTime,
    ) -> Result<(Self, bool), CaError> {
        if let Some(m) = store.load().await? {
            return Ok((Self::from_material(&m, trust_domain, now)?, false));
        }
        let m = Self::generate_root(trust_domain, now)?;
        if let Err(e) = store.save(&m).await {
            // Someone else may have saved one meanwhile (a Secret created concurrently).
            if let Some(theirs) = store.load().await? {
                return Ok((Self::from_material(&theirs, trust_domain, now)?, false));
            }
            return Err(e);
        }
        Ok((Self::from_material(&m, trust_domain, now)?, true))
    }

    /// Sets the default and the longest workload certificate lifetime.
    pub fn with_ttl(mut self, default: Duration, max: Duration) -> Self {
        self.max_ttl = max.max(Duration::from_secs(1));
        self.default_ttl = default.clamp(Duration::from_secs(1), self.max_ttl);
        self
    }

    /// Adds roots to the published trust bundle (the other root of a rollover in progress).
    pub fn with_extra_roots(mut self, pem: &str) -> Result<Self, CaError> {
        for der in pem_to_ders("extra roots", pem)? {
            facts("extra roots", &der)?;
            let pem = der_to_pem(&der);
            if !self.trust_bundle.contains(&pem) {
                self.trust_bundle.push(pem);
            }
        }
        Ok(self)
    }

    /// The trust domain identities are issued in.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// PEM roots proxies must trust.
    pub fn trust_bundle(&self) -> &[String] {
        &self.trust_bundle
    }

    /// The root certificate (PEM) that signs this CA's chain.
    pub fn root_pem(&self) -> &str {
        self.tail.last().map_or("", String::as_str)
    }

    /// The default workload certificate lifetime.
    pub fn default_ttl(&self) -> Duration {
        self.default_ttl
    }

    /// The longest workload certificate lifetime.
    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }

    /// The lifetime of a certificate asked for `requested` at `now`: the default when not
    /// given, at most the maximum, and never past the signing certificate's own end.
    pub fn lifetime(&self, requested: Option<Duration>, now: SystemTime) -> Duration {
        let ttl = requested
            .filter(|d| !d.is_zero())
            .unwrap_or(self.default_ttl)
            .min(self.max_ttl);
        let left = self
            .signing_not_after
            .duration_since(now)
            .unwrap_or_default();
        ttl.min(left)
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        public_key: &impl rcgen::PublicKeyData,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Issued, CaError> {
        params.not_before = OffsetDateTime::from(now - BACKDATE);
        params.not_after = OffsetDateTime::from(now + ttl);
        params.serial_number = Some(random_serial()?);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let serial = params
            .serial_number
            .as_ref()
            .map(|s| s.as_ref().iter().map(|b| format!("{b:02x}")).collect())
            .unwrap_or_default();
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(signing)?;
        let mut chain = vec![cert.pem()];
        chain.extend(self.tail.iter().cloned());
        Ok(Issued {
            chain,
            trust_bundle: self.trust_bundle.clone(),
            not_after: now + ttl,
            serial,
        })
    }

    /// Signs the PEM request `csr_pem` for `identity`, which the caller has proven. The
    /// request's signature must be valid, and its subject alternative names, if any, must be
    /// exactly that identity; whatever else it asks for is ignored.
    pub fn issue(
        &self,
        csr_pem: &str,
        identity: &SpiffeId,
        requested: Option<Duration>,
        now: SystemTime,
    ) -> Result<Issued, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::BadCsr(e.to_string()))?;
        let want = identity.uri();
        let asked: Vec<String> = csr
            .params
            .subject_alt_names
            .iter()
            .map(|san| match san {
                SanType::URI(uri) => uri.as_str().to_string(),
                SanType::DnsName(n) => format!("DNS:{}", n.as_str()),
                SanType::IpAddress(ip) => format!("IP:{ip}"),
                SanType::Rfc822Name(n) => format!("email:{}", n.as_str()),
                other => format!("{other:?}"),
            })
            .collect();
        if asked.iter().any(|a| *a != want) {
            return Err(CaError::IdentityMismatch {
                asked: asked.join(", "),
                proven: want,
            });
        }
        if identity.trust_domain != self.trust_domain {
            return Err(CaError::IdentityMismatch {
                asked: want,
                proven: format!("an identity in trust domain {}", self.trust_domain),
            });
        }
        let uri = want
            .clone()
            .try_into()
            .map_err(|e: rcgen::Error| CaError::BadCsr(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(uri)];
        self.sign(params, &csr.public_key, self.lifetime(requested, now), now)
    }

    /// A workload certificate for `identity` with a key made here (for debugging: `ferry ca
    /// issue`; proxies make their own keys and send requests); returns the chain and the
    /// key (PEM).
    pub fn issue_workload(
        &self,
        identity: &SpiffeId,
        requested: Option<Duration>,
        now: SystemTime,
    ) -> Result<(Issued, String), CaError> {
        let key = KeyPair::generate().map_err(signing)?;
        let uri = identity.uri();
        let san = uri
            .clone()
            .try_into()
            .map_err(|e: rcgen::Error| CaError::Signing(format!("{uri}: {e}")))?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(san)];
        let csr = params
            .serialize_request(&key)
            .and_then(|r| r.pem())
            .map_err(signing)?;
        let issued = self.issue(&csr, identity, requested, now)?;
        Ok((issued, key.serialize_pem()))
    }

    /// A serving certificate for the control plane itself (DNS names and IP addresses),
    /// with a key made here; returns the chain and the key (PEM).
    pub fn issue_serving(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<(Issued, String), CaError> {
        let key = KeyPair::generate().map_err(signing)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, self.trust_domain.as_str());
        params.distinguished_name = dn;
        for name in dns_names {
            let n = name
                .clone()
                .try_into()
                .map_err(|e: rcgen::Error| CaError::Signing(format!("{name}: {e}")))?;
            params.subject_alt_names.push(SanType::DnsName(n));
        }
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let ttl = ttl.min(
            self.signing_not_after
                .duration_since(now)
                .unwrap_or_default(),
        );
        let issued = self.sign(params, &key, ttl, now)?;
        Ok((issued, key.serialize_pem()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000)
    }

    fn ca() -> CertificateAuthority {
        let m = CertificateAuthority::generate_root("cluster.local", now()).expect("root");
        CertificateAuthority::from_material(&m, "cluster.local", now()).expect("ca")
    }

    fn csr(sans: Vec<SanType>) -> String {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem")
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(s.to_string().try_into().expect("uri"))
    }

    fn id(ns: &str, sa: &str) -> SpiffeId {
        SpiffeId::new("cluster.local", ns, sa).expect("id")
    }

    fn leaf(issued: &Issued) -> Vec<u8> {
        pem_to_ders("leaf", &issued.chain[0])
            .expect("pem")
            .remove(0)
    }

    #[test]
    fn a_debugging_certificate_carries_the_identity_and_its_key() {
        let ca = ca();
        let id = id("default", "redis");
        let ttl = Duration::from_secs(600);
        let (issued, key_pem) = ca.issue_workload(&id, Some(ttl), now()).expect("issued");
        let der = leaf(&issued);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
        let san = cert
            .subject_alternative_name()
            .expect("SAN")
            .expect("SAN present");
        let uris: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| match n {
                x509_parser::extensions::GeneralName::URI(u) => u.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(uris, [id.uri()]);
        let key = KeyPair::from_pem(&key_pem).expect("key");
        use rcgen::PublicKeyData;
        assert_eq!(
            cert.tbs_certificate.subject_pki.raw,
            key.subject_public_key_info().as_slice(),
            "the certificate is for the key returned"
        );
        assert_eq!(issued.not_after, now() + ttl);
    }

    #[test]
    fn issues_the_proven_identity_only() {
        let ca = ca();
        let redis = "spiffe://cluster.local/ns/default/sa/redis";
        let cases: Vec<(&str, Vec<SanType>, bool)> = vec![
            ("exact identity", vec![uri(redis)], true),
            ("no SAN: the CA fills it in", vec![], true),
            (
                "another service account",
                vec![uri("spiffe://cluster.local/ns/default/sa/admin")],
                false,
            ),
            (
                "another namespace",
                vec![uri("spiffe://cluster.local/ns/kube-system/sa/redis")],
                false,
            ),
            (
                "its own plus another",
                vec![
                    uri(redis),
                    uri("spiffe://cluster.local/ns/default/sa/admin"),
                ],
                false,
            ),
            (
                "a DNS name",
                vec![SanType::DnsName(
                    "redis".to_string().try_into().expect("dns"),
                )],
                false,
            ),
            (
                "an IP address",
                vec![SanType::IpAddress("10.0.0.1".parse().expect("ip"))],
                false,
            ),
        ];
        for (what, sans, ok) in cases {
            let result = ca.issue(&csr(sans), &id("default", "redis"), None, now());
            assert_eq!(result.is_ok(), ok, "{what}: {result:?}");
            if let Err(e) = result {
                assert!(matches!(e, CaError::IdentityMismatch { .. }), "{what}: {e}");
            }
        }
    }

    #[test]
    fn certificate_contents() {
        let ca = ca();
        let issued = ca
            .issue(&csr(vec![]), &id("default", "redis"), None, now())
            .expect("issued");
        assert_eq!(issued.chain.len(), 2, "leaf and root");
        assert_eq!(issued.chain[1], ca.root_pem());
        assert_eq!(issued.trust_bundle, vec![ca.root_pem().to_string()]);
        let der = leaf(&issued);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
        let sans: Vec<String> = cert
            .subject_alternative_name()
            .expect("ext")
            .expect("san")
            .value
            .general_names
            .iter()
            .map(|n| format!("{n}"))
            .collect();
        assert_eq!(
            sans,
            vec!["URI(spiffe://cluster.local/ns/default/sa/redis)".to_string()]
        );
        assert!(!cert.is_ca());
        let lifetime =
            cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(lifetime, 24 * 3600 + 60, "24 h plus the backdating");
        let eku = cert.extended_key_usage().expect("ext").expect("eku").value;
        assert!(eku.client_auth && eku.server_auth);
        assert_eq!(issued.not_after, now() + DEFAULT_CERT_TTL);
    }

    #[test]
    fn lifetimes() {
        let ca = ca().with_ttl(Duration::from_secs(3600), Duration::from_secs(7200));
        let h = |s| Duration::from_secs(s);
        let cases = [
            (None, h(3600)),
            (Some(h(0)), h(3600)),
            (Some(h(10)), h(10)),
            (Some(h(7200)), h(7200)),
            (Some(h(100_000)), h(7200)),
        ];
        for (asked, want) in cases {
            assert_eq!(ca.lifetime(asked, now()), want, "{asked:?}");
        }
        // Never past the CA's own end.
        let late = now() + ROOT_TTL - h(5);
        assert!(ca.lifetime(None, late) <= h(5));
    }

    #[test]
    fn refuses_garbage_and_forged_requests() {
        let ca = ca();
        let who = id("default", "redis");
        assert!(matches!(
            ca.issue("not a csr", &who, None, now()),
            Err(CaError::BadCsr(_))
        ));
        // Flip a byte inside the signed part: the signature no longer verifies.
        let good = csr(vec![]);
        let der = rustls_pemfile::csr(&mut good.as_bytes())
            .expect("pem")
            .expect("one");
        let mut bytes = der.as_ref().to_vec();
        let mid = bytes.len() / 3;
        bytes[mid] ^= 0x01;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let forged = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n"
        );
        assert!(ca.issue(&forged, &who, None, now()).is_err());
        // Another trust domain.
        let other = SpiffeId::new("evil.org", "default", "redis").expect("id");
        assert!(ca.issue(&csr(vec![]), &other, None, now()).is_err());
    }

    #[test]
    fn user_provided_intermediate() {
        // A root, and an intermediate it signs that becomes the CA.
        let root_key = KeyPair::generate().expect("key");
        let mut root_params = CertificateParams::default();
        root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root_params
            .distinguished_name
            .push(DnType::CommonName, "corp root");
        let root = root_params.self_signed(&root_key).expect("root");
        let root_issuer = Issuer::new(root_params, root_key);
        let int_key = KeyPair::generate().expect("key");
        let mut int_params = CertificateParams::default();
        int_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        int_params
            .distinguished_name
            .push(DnType::CommonName, "mesh intermediate");
        let int = int_params
            .signed_by(&int_key, &root_issuer)
            .expect("intermediate");
        let material = CaMaterial {
            cert_pem: int.pem(),
            key_pem: int_key.serialize_pem(),
            chain_pem: format!("{}{}", int.pem(), root.pem()),
            root_pem: root.pem(),
        };
        let ca =
            CertificateAuthority::from_material(&material, "cluster.local", now()).expect("ca");
        let issued = ca
            .issue(&csr(vec![]), &id("default", "redis"), None, now())
            .expect("issued");
        assert_eq!(issued.chain.len(), 3, "leaf, intermediate, root");
        assert_eq!(issued.chain[1], der_to_pem(int.der()));
        assert_eq!(issued.chain[2], der_to_pem(root.der()));
        // A key that does not match is refused.
        let wrong = CaMaterial {
            key_pem: KeyPair::generate().expect("key").serialize_pem(),
            ..material.clone()
        };
        assert!(CertificateAuthority::from_material(&wrong, "cluster.local", now()).is_err());
        // A leaf certificate cannot be a CA.
        let leaf_key = KeyPair::generate().expect("key");
        let leaf = CertificateParams::new(vec!["x.example".to_string()])
            .expect("params")
            .self_signed(&leaf_key)
            .expect("leaf");
        let not_ca = CaMaterial {
            cert_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
            chain_pem: String::new(),
            root_pem: leaf.pem(),
        };
        assert!(CertificateAuthority::from_material(&not_ca, "cluster.local", now()).is_err());
    }
}
