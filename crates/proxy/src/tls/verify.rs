//! Checking a peer's certificate: it chains to the mesh roots (webpki, through rustls) and
//! its SPIFFE identity is one the configuration expects. SPIFFE certificates carry no DNS
//! name, so the server name a client sends (SNI) plays no part in the check.

use ferry_proto::config::SpiffeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// The SPIFFE identity in a certificate's URI SAN, when it has exactly one URI SAN.
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

/// Whether `found` is acceptable given the `expected` URIs (empty accepts any).
pub fn identity_allowed(found: &SpiffeId, expected: &[String]) -> bool {
    expected.is_empty() || {
        let uri = found.uri();
        expected.contains(&uri)
    }
}

/// Verifies a server sidecar's certificate: chain to the roots, then SPIFFE identity.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: Arc<[String]>,
}

impl SpiffeServerVerifier {
    /// Accepts certificates chaining to `roots` whose identity is in `expected` (any when
    /// empty).
    pub fn new(roots: Arc<RootCertStore>, expected: Arc<[String]>) -> Self {
        Self { roots, expected }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            super::provider().signature_verification_algorithms.all,
        )?;
        let id = spiffe_of(end_entity).ok_or_else(|| {
            Error::General("the peer certificate holds no SPIFFE identity".into())
        })?;
        if !identity_allowed(&id, &self.expected) {
            return Err(Error::General(format!(
                "the peer is {id}, expected one of {:?}",
                &*self.expected
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &super::provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &super::provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        super::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_identities() {
        let redis = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/redis").expect("id");
        let cases: Vec<(Vec<&str>, bool)> = vec![
            (vec![], true),
            (vec!["spiffe://cluster.local/ns/default/sa/redis"], true),
            (
                vec![
                    "spiffe://cluster.local/ns/default/sa/other",
                    "spiffe://cluster.local/ns/default/sa/redis",
                ],
                true,
            ),
            (vec!["spiffe://cluster.local/ns/default/sa/other"], false),
            (vec!["spiffe://other.domain/ns/default/sa/redis"], false),
        ];
        for (expected, ok) in cases {
            let expected: Vec<String> = expected.into_iter().map(String::from).collect();
            assert_eq!(identity_allowed(&redis, &expected), ok, "{expected:?}");
        }
    }
}
