//! The admin API's `/certs` on a whole in-process proxy with a workload identity: the
//! certificate in force as `ferry proxy-config secret` shows it (identity, serial,
//! validity, next rotation, the chain and the roots), following a renewal; a proxy without
//! an identity, or without a certificate yet, says so. An in-process CA (rcgen) signs.

mod support;

use ferry_proxy::identity::source::{CertificateSource, Signed};
use ferry_proxy::identity::{Certified, IdentityOptions};
use ferry_proxy::listener::Direction;
use ferry_proxy::listener::orig_dst::FixedDst;
use ferry_proxy::server::{self, Options, Running};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair,
};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::{any_port, http_get, wait_for_within};

/// A CA in the test: certificates valid from now for `lifetime`.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    root_pem: String,
    lifetime: Duration,
    fail: AtomicBool,
}

impl TestCa {
    fn new(lifetime: Duration) -> Self {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.not_before = (SystemTime::now() - Duration::from_secs(3600)).into();
        params.not_after = (SystemTime::now() + Duration::from_secs(24 * 3600)).into();
        let root = params.self_signed(&key).expect("root");
        Self {
            issuer: Issuer::new(params, key),
            root_pem: root.pem(),
            lifetime,
            fail: AtomicBool::new(false),
        }
    }
}

#[tonic::async_trait]
impl CertificateSource for TestCa {
    async fn sign(
        &self,
        csr: String,
        _: Option<Duration>,
        _: Option<Arc<Certified>>,
    ) -> Result<Signed, String> {
        if self.fail.load(Ordering::Relaxed) {
            return Err("CA unavailable".into());
        }
        let mut req = CertificateSigningRequestParams::from_pem(&csr).map_err(|e| e.to_string())?;
        let now = SystemTime::now();
        req.params.not_before = now.into();
        req.params.not_after = (now + self.lifetime).into();
        req.params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = req.signed_by(&self.issuer).map_err(|e| e.to_string())?;
        Ok(Signed {
            chain: vec![cert.pem(), self.root_pem.clone()],
            trust_bundle: vec![self.root_pem.clone()],
        })
    }
}

/// A running proxy, stopped when the test ends, even when it fails.
struct Proxy(Option<Running>);

impl Proxy {
    fn start(ca: Option<Arc<TestCa>>) -> Self {
        let identity = ca.as_ref().map(|_| IdentityOptions {
            ca_addr: "127.0.0.1:1".into(),
            ca_server_name: "localhost".into(),
            root_cert: Default::default(),
            token_file: None,
            trust_domain: "cluster.local".into(),
            namespace: "default".into(),
            service_account: "redis".into(),
            ttl: None,
        });
        let options = Options {
            listeners: vec![(any_port(), Direction::Inbound)],
            admin: Some(any_port()),
            metrics: Some(any_port()),
            identity,
            certificate_source: ca.map(|c| c as Arc<dyn CertificateSource>),
            ..Default::default()
        };
        let upstream: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        Proxy(Some(
            server::start(options, Arc::new(FixedDst(upstream))).expect("proxy starts"),
        ))
    }

    fn running(&self) -> &Running {
        self.0.as_ref().expect("running")
    }

    fn certs(&self) -> (u16, String) {
        http_get(self.running().admin.expect("admin"), "/certs")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(r) = self.0.take() {
            r.stop();
        }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The URI SANs of a PEM certificate.
fn uris(pem: &str) -> Vec<String> {
    let der = rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("PEM");
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).expect("X.509");
    let san = cert
        .subject_alternative_name()
        .expect("SAN extension")
        .expect("SANs");
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn certs_shows_the_workload_certificate_and_follows_renewals() {
    let ca = Arc::new(TestCa::new(Duration::from_secs(6)));
    let proxy = Proxy::start(Some(ca.clone()));
    let state = proxy.running().identity.clone().expect("identity on");
    wait_for_within(10, "the first certificate", || state.current().is_some());
    let first = state.current().expect("certificate");

    let (code, body) = proxy.certs();
    assert_eq!(code, 200, "{body}");
    let view: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        view["identity"],
        "spiffe://cluster.local/ns/default/sa/redis"
    );
    assert_eq!(view["serial"], first.serial.as_str());
    assert_eq!(view["notBefore"], unix(first.not_before));
    assert_eq!(view["notAfter"], unix(first.not_after));
    assert_eq!(
        view["validUntil"],
        ferry_proxy::admin::api::rfc3339(first.not_after)
    );
    assert_eq!(view["expired"], false);
    assert!(
        view["expiresIn"].as_str().is_some_and(|s| s.ends_with('s')),
        "{view}"
    );
    // The chain as issued: the workload certificate (with exactly the identity), then the
    // root, which the roots trusted for peers hold too.
    let chain: Vec<&str> = view["chain"]
        .as_array()
        .expect("chain")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(chain.len(), 2, "{view}");
    assert_eq!(
        uris(chain[0]),
        vec!["spiffe://cluster.local/ns/default/sa/redis".to_string()]
    );
    assert_eq!(chain[1], ca.root_pem);
    assert!(
        view["roots"]
            .as_array()
            .expect("roots")
            .iter()
            .any(|r| r == ca.root_pem.as_str()),
        "{view}"
    );
    // The next rotation is the renewal loop's: about half of the 6 s lifetime.
    let next = view["nextRotation"]["at"].as_u64().expect("planned");
    let (from, to) = (unix(first.not_before), unix(first.not_after));
    assert!(
        (from + 2..=from + 4).contains(&next) && next < to,
        "next rotation {next} for a certificate valid {from}..{to}"
    );
    assert_eq!(
        view["nextRotation"]["source"],
        "the proxy's renewal schedule"
    );

    // After the renewal, /certs shows the new certificate and the next rotation.
    wait_for_within(10, "a renewal", || {
        state.current().is_some_and(|c| c.serial != first.serial)
    });
    let renewed = state.current().expect("renewed");
    let (code, body) = proxy.certs();
    assert_eq!(code, 200, "{body}");
    let view: Value = serde_json::from_str(&body).expect("JSON");
    // It may have renewed once more between the two reads.
    let serial = view["serial"].as_str().expect("serial");
    assert_ne!(serial, first.serial, "{view}");
    assert!(
        view["nextRotation"]["at"].as_u64().expect("planned") > next,
        "{view}"
    );
    assert!(view["notAfter"].as_u64() >= Some(unix(renewed.not_after)));

    // The method is checked; the index lists the endpoint.
    let admin = proxy.running().admin.expect("admin");
    let (code, _) = support::http(admin, "POST", "/certs");
    assert_eq!(code, 405);
    let (_, index) = http_get(admin, "/");
    assert!(index.contains("/certs"), "{index}");
}

#[test]
fn certs_says_when_there_is_no_certificate() {
    // No identity at all.
    let proxy = Proxy::start(None);
    let (code, body) = proxy.certs();
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("no workload identity"), "{body}");
    drop(proxy);

    // An identity whose CA refuses: no certificate yet.
    let ca = Arc::new(TestCa::new(Duration::from_secs(3600)));
    ca.fail.store(true, Ordering::Relaxed);
    let proxy = Proxy::start(Some(ca));
    let (code, body) = proxy.certs();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no certificate yet"), "{body}");
}
