//! The renewal loop: make a key, send a CSR, check and publish the answer, sleep until the
//! next renewal (about half the lifetime), retry with backoff on failure while the current
//! certificate stays in force. Metrics: `ferry_identity_cert_expiry_timestamp_seconds`,
//! `ferry_identity_cert_next_renewal_timestamp_seconds`, `ferry_identity_cert_renewals_total`.

use super::rotation::{refresh_at, retry_delay, wait_until};
use super::source::{CertificateSource, read_roots};
use super::{Certified, IdentityState};
use crate::telemetry::metrics::IdentityMetrics;
use ferry_proto::config::SpiffeId;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PublicKeyData, SanType};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing::{info, warn};

/// The time, behind a trait so tests can move it.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A uniform number in [0, 1) for the renewal jitter.
fn jitter() -> f64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 4];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_be_bytes(b)) / f64::from(u32::MAX) * 0.999_999
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Keeps a proxy's certificate current.
pub struct Manager {
    /// The identity asked for.
    pub id: SpiffeId,
    /// Lifetime asked for.
    pub ttl: Option<Duration>,
    /// PEM file of extra roots trusted for peers (the configured mesh root), re-read at
    /// every renewal and with every trust bundle the control plane pushes; optional.
    pub root_cert: Option<PathBuf>,
    /// Where certificates come from.
    pub source: Arc<dyn CertificateSource>,
    /// Where the certificate in force is published.
    pub state: Arc<IdentityState>,
    /// Metrics.
    pub metrics: IdentityMetrics,
    /// The time.
    pub clock: Arc<dyn Clock>,
}

impl Manager {
    /// Gets one new certificate (not yet published).
    pub async fn renew_once(&self) -> Result<Arc<Certified>, String> {
        let key = KeyPair::generate().map_err(|e| format!("key generation: {e}"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let uri = self
            .id
            .uri()
            .try_into()
            .map_err(|e: rcgen::Error| format!("{}: {e}", self.id))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        let csr = params
            .serialize_request(&key)
            .and_then(|c| c.pem())
            .map_err(|e| format!("certificate request: {e}"))?;
        let signed = self
            .source
            .sign(csr, self.ttl, self.state.current())
            .await?;
        let extra = match &self.root_cert {
            Some(path) => read_roots(path)?,
            None => Vec::new(),
        };
        Certified::new(
            self.id.clone(),
            key.serialize_der(),
            &key.subject_public_key_info(),
            signed.chain,
            signed.trust_bundle,
            &extra,
            self.clock.now(),
        )
        .map(Arc::new)
        .map_err(|e| e.to_string())
    }

    /// One step of the loop: renew, publish, and say how long to wait before the next step.
    pub async fn step(&self, failures: &mut u32) -> Duration {
        let wait = match self.renew_once().await {
            Ok(cert) => {
                *failures = 0;
                self.metrics.renewal(true);
                self.metrics.cert_expiry.set(unix_secs(cert.not_after));
                // From when it arrived: a CA backdates certificates for clock skew.
                let from = cert.not_before.max(self.clock.now()).min(cert.not_after);
                let at = refresh_at(from, cert.not_after, jitter());
                info!(
                    identity = %cert.id,
                    serial = %cert.serial,
                    "new workload certificate, valid until {}",
                    unix_secs(cert.not_after)
                );
                self.state.publish(cert);
                wait_until(at, self.clock.now())
            }
            Err(e) => {
                *failures += 1;
                self.metrics.renewal(false);
                let current = self.state.current();
                let delay = retry_delay(
                    *failures,
                    self.clock.now(),
                    current.as_ref().map(|c| c.not_after),
                );
                warn!(
                    "certificate renewal failed ({e}); {} retry in {delay:?}",
                    if current.is_some() {
                        "keeping the current certificate,"
                    } else {
                        "no certificate yet,"
                    }
                );
                delay
            }
        };
        let next = self.clock.now() + wait;
        self.metrics.next_renewal.set(unix_secs(next));
        if let Ok(mut n) = self.state.next_renewal.lock() {
            *n = Some(next);
        }
        wait
    }

    /// Shows how many roots the certificate in force trusts.
    fn count_roots(&self) {
        let roots = self.state.current().map_or(0, |c| c.roots_pem.len());
        self.metrics
            .trusted_roots
            .set(i64::try_from(roots).unwrap_or(i64::MAX));
    }

    /// Runs until `stop` completes.
    /// A renewal request from the control plane (a root rollover) cuts the wait short.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        self.state.set_root_file(self.root_cert.clone());
        let mut renewals = self.state.renewals();
        let mut changes = self.state.changes();
        let mut failures = 0;
        loop {
            let wait = self.step(&mut failures).await;
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                self.count_roots();
                tokio::select! {
                    _ = &mut sleep => break,
                    changed = renewals.changed() => {
                        if changed.is_ok() {
                            info!("renewing the workload certificate now, as the control plane asked");
                        }
                        break;
                    }
                    changed = changes.changed() => {
                        if changed.is_err() {
                            // The state outlives the loop; without it, only the timer is left.
                            sleep.as_mut().await;
                            break;
                        }
                    }
                    _ = &mut stop => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::source::Signed;
    use rcgen::{
        BasicConstraints, CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa, Issuer,
    };
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Time that moves with tokio's (paused) clock.
    struct FakeClock {
        base: SystemTime,
        start: tokio::time::Instant,
    }

    impl Clock for FakeClock {
        fn now(&self) -> SystemTime {
            self.base + self.start.elapsed()
        }
    }

    /// An in-process CA: certificates valid from the (fake) now for `lifetime`.
    struct TestCa {
        issuer: Issuer<'static, KeyPair>,
        root_pem: String,
        lifetime: Duration,
        clock: Arc<FakeClock>,
        fail: AtomicBool,
        signed_at: Mutex<Vec<Duration>>,
    }

    impl TestCa {
        fn new(clock: Arc<FakeClock>, lifetime: Duration) -> Self {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::default();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.not_before = (clock.now() - Duration::from_secs(3600)).into();
            params.not_after = (clock.now() + Duration::from_secs(10 * 24 * 3600)).into();
            let root = params.self_signed(&key).expect("root");
            Self {
                issuer: Issuer::new(params, key),
                root_pem: root.pem(),
                lifetime,
                clock,
                fail: AtomicBool::new(false),
                signed_at: Mutex::new(Vec::new()),
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
            let mut req =
                CertificateSigningRequestParams::from_pem(&csr).map_err(|e| e.to_string())?;
            let now = self.clock.now();
            req.params.not_before = now.into();
            req.params.not_after = (now + self.lifetime).into();
            req.params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = req.signed_by(&self.issuer).map_err(|e| e.to_string())?;
            if let Ok(mut at) = self.signed_at.lock() {
                at.push(self.clock.start.elapsed());
            }
            Ok(Signed {
                chain: vec![cert.pem(), self.root_pem.clone()],
                trust_bundle: vec![self.root_pem.clone()],
            })
        }
    }

    fn manager(lifetime: Duration) -> (Manager, Arc<TestCa>) {
        let clock = Arc::new(FakeClock {
            base: SystemTime::now(),
            start: tokio::time::Instant::now(),
        });
        let ca = Arc::new(TestCa::new(clock.clone(), lifetime));
        let m = Manager {
            id: SpiffeId::new("cluster.local", "default", "redis").expect("id"),
            ttl: None,
            root_cert: None,
            source: ca.clone(),
            state: Arc::new(IdentityState::new()),
            metrics: IdentityMetrics::default(),
            clock,
        };
        (m, ca)
    }

    fn renewals(m: &Manager, ok: bool) -> u64 {
        use crate::telemetry::metrics::OutcomeLabels;
        let outcome = if ok { "success" } else { "failure" };
        m.metrics
            .renewals
            .get_or_create(&OutcomeLabels { outcome })
            .get()
    }

    #[tokio::test(start_paused = true)]
    async fn renews_at_half_life_and_keeps_the_certificate_on_failure() {
        let (m, ca) = manager(Duration::from_secs(100));
        let mut failures = 0;
        let wait = m.step(&mut failures).await;
        // Half of 100 s +-5 %, minus what X.509's whole seconds take off the validity.
        let about_half = |w: Duration| (43.9..=55.1).contains(&w.as_secs_f64());
        assert!(
            about_half(wait),
            "renewal planned at about half of 100 s, got {wait:?}"
        );
        let first = m.state.current().expect("published");
        assert_eq!(first.id.uri(), "spiffe://cluster.local/ns/default/sa/redis");

        // The CA goes away: the certificate stays, retries back off 1, 2, 4 s...
        ca.fail.store(true, Ordering::Relaxed);
        tokio::time::advance(wait).await;
        let mut waits = Vec::new();
        for _ in 0..4 {
            let w = m.step(&mut failures).await;
            waits.push(w.as_secs());
            tokio::time::advance(w).await;
        }
        assert_eq!(waits, vec![1, 2, 4, 8]);
        assert_eq!(renewals(&m, false), 4);
        let still = m.state.current().expect("kept");
        assert_eq!(
            still.serial, first.serial,
            "the current certificate stays in force"
        );
        // Near the end of the certificate, retries shrink to half of what is left.
        let w = m.step(&mut failures).await;
        let left = first
            .not_after
            .duration_since(m.clock.now())
            .expect("still valid");
        assert!(
            w <= left / 2 + Duration::from_millis(1),
            "{w:?} vs {left:?} left"
        );

        // Back: a new certificate, the schedule restarts.
        ca.fail.store(false, Ordering::Relaxed);
        let w = m.step(&mut failures).await;
        assert_eq!(failures, 0);
        assert!(about_half(w), "{w:?}");
        assert_ne!(m.state.current().expect("new").serial, first.serial);
        assert_eq!(renewals(&m, true), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_renews_every_half_lifetime() {
        let (m, ca) = manager(Duration::from_secs(100));
        let state = m.state.clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(m.run(async {
            let _ = stop_rx.await;
        }));
        state.ready().await;
        tokio::time::sleep(Duration::from_secs(1000)).await;
        let _ = stop_tx.send(());
        let _ = task.await;
        let at = ca.signed_at.lock().expect("lock").clone();
        // Renewals 45..55 s apart: 19 to 23 of them in 1000 s.
        assert!(
            (19..=23).contains(&at.len()),
            "{} renewals: {at:?}",
            at.len()
        );
        for pair in at.windows(2) {
            let gap = (pair[1] - pair[0]).as_secs_f64();
            assert!((43.9..=56.1).contains(&gap), "gap {gap} in {at:?}");
        }
    }

    fn other_root() -> String {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.self_signed(&key).expect("root").pem()
    }

    #[tokio::test(start_paused = true)]
    async fn pushed_roots_apply_to_the_certificate_in_force_and_renewal_requests_wake_the_loop() {
        let (m, ca) = manager(Duration::from_secs(100));
        let mut failures = 0;
        // Before any certificate: recorded, nothing to re-publish.
        assert_eq!(
            m.state
                .apply_trust(1, std::slice::from_ref(&ca.root_pem), 0),
            Ok(false)
        );
        m.step(&mut failures).await;
        let first = m.state.current().expect("published");
        let own = first.chain_root();
        assert_eq!(first.root_fingerprints(), vec![own.clone()]);
        let new_root = other_root();
        let new_fp = ferry_proto::discovery::root_fingerprint(
            super::super::ders(std::slice::from_ref(&new_root)).expect("der")[0].as_ref(),
        );
        let mut renewals = m.state.renewals();
        let mut changes = m.state.changes();
        // (what, roots pushed, renew counter, Ok(changed) or Err, trusted after, renewal asked)
        type Row = (
            &'static str,
            Vec<String>,
            u64,
            Result<bool, ()>,
            Vec<String>,
            bool,
        );
        let rows: Vec<Row> = vec![
            (
                "same roots",
                vec![ca.root_pem.clone()],
                0,
                Ok(false),
                vec![own.clone()],
                false,
            ),
            (
                "old + new",
                vec![ca.root_pem.clone(), new_root.clone()],
                0,
                Ok(true),
                vec![own.clone(), new_fp.clone()],
                false,
            ),
            (
                "renew asked",
                vec![new_root.clone(), ca.root_pem.clone()],
                1,
                Ok(true),
                vec![new_fp.clone(), own.clone()],
                true,
            ),
            (
                "same counter again",
                vec![new_root.clone()],
                1,
                Ok(true),
                vec![new_fp.clone()],
                false,
            ),
            (
                "empty bundle refused",
                vec![],
                1,
                Err(()),
                vec![new_fp.clone()],
                false,
            ),
            (
                "garbage refused",
                vec!["-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n".into()],
                1,
                Err(()),
                vec![new_fp.clone()],
                false,
            ),
        ];
        for (generation, (what, roots, renew, want, trusted, asked)) in rows.into_iter().enumerate()
        {
            let got = m.state.apply_trust(generation as u64 + 2, &roots, renew);
            assert_eq!(got.map_err(|_| ()), want, "{what}");
            let now = m.state.current().expect("still a certificate");
            assert_eq!(now.serial, first.serial, "{what}: the certificate stays");
            assert_eq!(now.root_fingerprints(), trusted, "{what}");
            assert_eq!(renewals.has_changed().expect("open"), asked, "{what}");
            renewals.borrow_and_update();
            assert!(
                changes.has_changed().expect("open"),
                "{what}: a report is due"
            );
            changes.borrow_and_update();
            let status = m.state.trust_status();
            assert_eq!(status.generation, generation as u64 + 2, "{what}");
            assert_eq!(
                status.error.is_empty(),
                want.is_ok(),
                "{what}: {}",
                status.error
            );
            assert_eq!(status.cert_root, own, "{what}");
        }
    }
}
